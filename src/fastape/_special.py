"""The scipy.special functions that are not one registry block each.

* ``polygamma(n, x)``: n is an integer constant, recorded as the immediate of the
  op ``POLYGAMMA_K`` (n = 0 records ``psi``); its derivative is polygamma(n + 1, x),
  again the op, so every order is exact.
* ``multigammaln(a, d)``: log of the multivariate gamma function, a sum of ``gammaln``
  (d a positive integer constant), as scipy computes it.
* ``betainc(a, b, x)``: the regularized incomplete beta function I_x(a, b),
  differentiable in x (∂I/∂x = x^(a-1) (1-x)^(b-1) / B(a, b)); the op table holds
  ops of one or two operands, so it is a ``custom_jvp`` function whose tangent rule
  is written with recorded ops (exact at every order; a compiled replay calls its
  rule from Python, ~µs per node).

scipy's ``polygamma`` and ``multigammaln`` are Python functions that call
``np.asarray`` on their arguments, which a fastape value refuses (they cannot be
reached through numpy's protocols): call these, from ``fastape`` or
``fastape.scipy.special``. ``scipy.special.betainc`` is a ufunc and reaches
``betainc`` here through ``__array_ufunc__``. Derivatives in a, b (betainc) or n, d
are not provided: a fastape value there raises NotImplementedError.
"""

import math

import numpy as np

from fastape import _arrays, _functions, _tape, _ufuncs
from fastape._ops import Op
from fastape._tape import Var
from fastape.custom import custom_jvp

__all__ = ["polygamma", "multigammaln", "betainc"]

_POLYGAMMA_K = int(Op.POLYGAMMA_K)


def _order(name, arg, n):
    """n as an array of non-negative integers (refusing a fastape value)."""
    if type(n) is Var:
        raise _ufuncs.not_differentiated(name, arg, n, "pass it as an integer")
    a = np.asarray(n, dtype=np.float64)
    if not np.all(np.isfinite(a)) or np.any(a < 0) or np.any(a != np.floor(a)):
        raise ValueError(f"{name}: the order {arg} must be a non-negative integer, got {n!r}")
    return a


def polygamma(n, x):
    """scipy.special.polygamma: the n-th derivative of the digamma function psi at x
    (n a non-negative integer, or an array of them broadcast against x)."""
    a = _order("polygamma", "n", n)
    if type(x) is not Var:
        import scipy.special
        return scipy.special.polygamma(a, x)
    if a.ndim == 0:
        k = float(a)
        return _ufuncs.psi(x) if k == 0.0 else _tape.unary_k(_POLYGAMMA_K, x, k)
    # an array of orders: one recorded op per distinct order, chosen elementwise
    shape = np.broadcast_shapes(a.shape, x.shape)
    xb = x if x.shape == shape else _arrays.broadcast_to(x, shape)
    ab = np.broadcast_to(a, shape)
    out = None
    for k in np.unique(ab):
        part = polygamma(float(k), xb)
        out = part if out is None else _functions.where(ab == k, part, out)
    return out


def multigammaln(a, d):
    """scipy.special.multigammaln: log Gamma_d(a) = d(d-1)/4 log(pi) +
    sum_{j<d} gammaln(a - j/2), for a > (d - 1)/2 (d a positive integer constant)."""
    if type(d) is Var:
        raise _ufuncs.not_differentiated("multigammaln", "d", d, "pass it as an integer")
    if type(a) is not Var:
        import scipy.special
        return scipy.special.multigammaln(a, d)
    dv = np.asarray(d)[()]
    if not np.isscalar(dv) or math.floor(dv) != dv or dv < 1:
        raise ValueError(f"multigammaln: d must be a positive integer (dimension), got {d!r}")
    d = int(dv)
    # the comparison is recorded (a guard): a compiled replay re-checks it
    if np.any(a <= 0.5 * (d - 1)):
        raise ValueError(f"multigammaln: condition a > 0.5 * (d-1) = {0.5 * (d - 1)} not "
                         f"met (a = {a.value})")
    out = _ufuncs.gammaln(a)
    for j in range(1, d):
        out = out + _ufuncs.gammaln(a - 0.5 * j)
    return out + d * (d - 1) * 0.25 * math.log(math.pi)


@custom_jvp
def _betainc_x(x, a, b):
    import scipy.special
    return scipy.special.betainc(a, b, x)


@_betainc_x.defjvp
def _betainc_x_jvp(primals, tangents):
    x, a, b = primals
    tx = tangents[0]
    # the density of Beta(a, b) at x, with xlogy/xlog1py so that a = 1 (b = 1) at the
    # end points gives the finite limit e^0 instead of 0 · log 0
    density = _ufuncs.exp(_ufuncs.xlogy(a - 1.0, x) + _ufuncs.xlog1py(b - 1.0, -x)
                          - _ufuncs.betaln(a, b))
    return _betainc_x(x, a, b), density * tx


def betainc(a, b, x):
    """scipy.special.betainc: the regularized incomplete beta function I_x(a, b),
    differentiable in x (a, b constants)."""
    for arg, v in (("a", a), ("b", b)):
        if type(v) is Var:
            raise _ufuncs.not_differentiated("betainc", arg, v)
    if type(x) is not Var:
        import scipy.special
        return scipy.special.betainc(a, b, x)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    shape = np.broadcast_shapes(a.shape, b.shape, x.shape)
    if x.shape != shape:
        x = _arrays.broadcast_to(x, shape)
    a = np.broadcast_to(a, shape)
    b = np.broadcast_to(b, shape)
    return _betainc_x(x, float(a) if a.ndim == 0 else np.ascontiguousarray(a),
                      float(b) if b.ndim == 0 else np.ascontiguousarray(b))
