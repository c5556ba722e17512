# generated from fastape/registry.py by fastape/_codegen.py: do not edit

from typing import Any

from numpy.typing import ArrayLike

from fastape._tape import Var

_X = Var | ArrayLike

def negative(x: _X) -> Any:
    """-x"""
def absolute(x: _X) -> Any:
    """|x| (partial sign(x), 0 at 0)"""
def exp(x: _X) -> Any:
    """e**x"""
def log(x: _X) -> Any:
    """natural logarithm"""
def log1p(x: _X) -> Any:
    """log(1 + x), accurate near 0"""
def expm1(x: _X) -> Any:
    """e**x - 1, accurate near 0"""
def sqrt(x: _X) -> Any:
    """square root"""
def square(x: _X) -> Any:
    """x**2"""
def reciprocal(x: _X) -> Any:
    """1/x"""
def sin(x: _X) -> Any:
    """sine"""
def cos(x: _X) -> Any:
    """cosine"""
def tan(x: _X) -> Any:
    """tangent"""
def arcsin(x: _X) -> Any:
    """inverse sine"""
def arccos(x: _X) -> Any:
    """inverse cosine"""
def arctan(x: _X) -> Any:
    """inverse tangent"""
def sinh(x: _X) -> Any:
    """hyperbolic sine"""
def cosh(x: _X) -> Any:
    """hyperbolic cosine"""
def tanh(x: _X) -> Any:
    """hyperbolic tangent"""
def sigmoid(x: _X) -> Any:
    """logistic function 1/(1 + e**-x), computed without overflow"""
def softplus(x: _X) -> Any:
    """log(1 + e**x), computed without overflow"""
def relu(x: _X) -> Any:
    """max(x, 0) (partial 0 at 0)"""
def sign(x: _X) -> Any:
    """sign of x (partial 0)"""
def floor(x: _X) -> Any:
    """floor (partial 0)"""
def round(x: _X) -> Any:
    """round half to even, as numpy.round (partial 0)"""
def add(x1: _X, x2: _X) -> Any:
    """x1 + x2"""
def subtract(x1: _X, x2: _X) -> Any:
    """x1 - x2"""
def multiply(x1: _X, x2: _X) -> Any:
    """x1 * x2"""
def divide(x1: _X, x2: _X) -> Any:
    """x1 / x2"""
def power(x1: _X, x2: _X) -> Any:
    """x1 ** x2"""
def arctan2(x1: _X, x2: _X) -> Any:
    """angle of the point (x2, x1)"""
def logaddexp(x1: _X, x2: _X) -> Any:
    """log(e**x1 + e**x2), computed without overflow"""
def maximum(x1: _X, x2: _X) -> Any:
    """elementwise maximum (a tie splits the multiplier)"""
def minimum(x1: _X, x2: _X) -> Any:
    """elementwise minimum (a tie splits the multiplier)"""
def log2(x: _X) -> Any:
    """base-2 logarithm"""
def log10(x: _X) -> Any:
    """base-10 logarithm"""
def exp2(x: _X) -> Any:
    """2**x"""
def cbrt(x: _X) -> Any:
    """real cube root, also of negative x (partial +inf at 0)"""
def arcsinh(x: _X) -> Any:
    """inverse hyperbolic sine"""
def arccosh(x: _X) -> Any:
    """inverse hyperbolic cosine (partial +inf at 1, NaN below 1)"""
def arctanh(x: _X) -> Any:
    """inverse hyperbolic tangent (partial +inf at ±1)"""
def hypot(x1: _X, x2: _X) -> Any:
    """sqrt(x1**2 + x2**2) without overflow (partials 0 at (0, 0))"""
def fmod(x1: _X, x2: _X) -> Any:
    """C remainder x1 - trunc(x1/x2) x2, sign of x1 (partials 1, -trunc(x1/x2))"""
def remainder(x1: _X, x2: _X) -> Any:
    """Python's x1 % x2 = x1 - floor(x1/x2) x2, sign of x2 (partials 1, -floor(x1/x2))"""
def ceil(x: _X) -> Any:
    """ceiling (partial 0)"""
def trunc(x: _X) -> Any:
    """round toward zero (partial 0)"""
def deg2rad(x: _X) -> Any:
    """degrees to radians"""
def rad2deg(x: _X) -> Any:
    """radians to degrees"""
def sinc(x: _X) -> Any:
    """normalized sinc sin(pi x)/(pi x), 1 at 0"""
def logaddexp2(x1: _X, x2: _X) -> Any:
    """log2(2**x1 + 2**x2), computed without overflow"""
def fmax(x1: _X, x2: _X) -> Any:
    """maximum ignoring NaN (a tie splits the multiplier, a NaN operand gets 0)"""
def fmin(x1: _X, x2: _X) -> Any:
    """minimum ignoring NaN (a tie splits the multiplier, a NaN operand gets 0)"""
def heaviside(x1: _X, x2: _X) -> Any:
    """step function: 0, x2 at x1 == 0, 1 (partial 0 in x1; 1 in x2 at x1 == 0)"""
def erf(x: _X) -> Any:
    """error function"""
def erfc(x: _X) -> Any:
    """complementary error function 1 - erf(x), accurate for large x"""
def erfinv(x: _X) -> Any:
    """inverse of erf on (-1, 1) (partial +inf at ±1)"""
def erfcinv(x: _X) -> Any:
    """inverse of erfc on (0, 2) (partial -inf at 0 and 2)"""
def logit(x: _X) -> Any:
    """log(x/(1 - x)), the inverse of sigmoid (partial +inf at 0 and 1)"""
def gammaln(x: _X) -> Any:
    """log|Gamma(x)| (partial digamma, also for negative x)"""
def psi(x: _X) -> Any:
    """digamma function Gamma'/Gamma (partial trigamma)"""
def ndtr(x: _X) -> Any:
    """standard normal CDF Phi(x)"""
def log_ndtr(x: _X) -> Any:
    """log of the standard normal CDF, accurate for x -> -inf"""
def xlogy(x1: _X, x2: _X) -> Any:
    """x1 log(x2), 0 where x1 == 0 (partial in x2 then 0)"""
def xlog1py(x1: _X, x2: _X) -> Any:
    """x1 log1p(x2), 0 where x1 == 0 (partial in x2 then 0)"""
def gamma(x: _X) -> Any:
    """the gamma function"""
def rgamma(x: _X) -> Any:
    """1/Gamma(x), entire (its zeros at 0, -1, ...)"""
def gammasgn(x: _X) -> Any:
    """the sign of Gamma(x) (partial 0)"""
def beta(x1: _X, x2: _X) -> Any:
    """the beta function Gamma(a) Gamma(b) / Gamma(a + b)"""
def betaln(x1: _X, x2: _X) -> Any:
    """log|B(a, b)|"""
def gammainc(x1: _X, x2: _X) -> Any:
    """regularized lower incomplete gamma P(a, x) (differentiable in x only)"""
def gammaincc(x1: _X, x2: _X) -> Any:
    """regularized upper incomplete gamma Q(a, x) = 1 - P(a, x) (in x only)"""
def j0(x: _X) -> Any:
    """Bessel function of the first kind of order 0 (partial -j1)"""
def j1(x: _X) -> Any:
    """Bessel function of the first kind of order 1"""
def y0(x: _X) -> Any:
    """Bessel function of the second kind of order 0 (partial -y1)"""
def y1(x: _X) -> Any:
    """Bessel function of the second kind of order 1"""
def i0(x: _X) -> Any:
    """modified Bessel function of the first kind of order 0 (partial i1)"""
def i1(x: _X) -> Any:
    """modified Bessel function of the first kind of order 1"""
def jv(x1: _X, x2: _X) -> Any:
    """Bessel function of the first kind of real order v (differentiable in x only)"""
def yn(x1: _X, x2: _X) -> Any:
    """Bessel function of the second kind of integer order n (in x only)"""
def iv(x1: _X, x2: _X) -> Any:
    """modified Bessel function of the first kind of real order v (in x only)"""
def ive(x1: _X, x2: _X) -> Any:
    """exponentially scaled iv(v, x) e^-|x| (in x only)"""
def entr(x: _X) -> Any:
    """-x log x (0 at 0, -inf below; partial -log x - 1)"""
def ndtri(x: _X) -> Any:
    """inverse of the standard normal CDF ndtr on (0, 1)"""
def abs(x: _X) -> Any: ...
def expit(x: _X) -> Any: ...
def digamma(x: _X) -> Any: ...

ELEMENTWISE: dict[str, Any]
ALIASES: dict[str, str]
__all__ = ['negative', 'absolute', 'exp', 'log', 'log1p', 'expm1', 'sqrt', 'square', 'reciprocal', 'sin', 'cos', 'tan', 'arcsin', 'arccos', 'arctan', 'sinh', 'cosh', 'tanh', 'sigmoid', 'softplus', 'relu', 'sign', 'floor', 'round', 'add', 'subtract', 'multiply', 'divide', 'power', 'arctan2', 'logaddexp', 'maximum', 'minimum', 'log2', 'log10', 'exp2', 'cbrt', 'arcsinh', 'arccosh', 'arctanh', 'hypot', 'fmod', 'remainder', 'ceil', 'trunc', 'deg2rad', 'rad2deg', 'sinc', 'logaddexp2', 'fmax', 'fmin', 'heaviside', 'erf', 'erfc', 'erfinv', 'erfcinv', 'logit', 'gammaln', 'psi', 'ndtr', 'log_ndtr', 'xlogy', 'xlog1py', 'gamma', 'rgamma', 'gammasgn', 'beta', 'betaln', 'gammainc', 'gammaincc', 'j0', 'j1', 'y0', 'y1', 'i0', 'i1', 'jv', 'yn', 'iv', 'ive', 'entr', 'ndtri', 'abs', 'expit', 'digamma']
