"""THE op registry of fastape: one block per op, every other layer derived from it.

An elementwise op is one call below that holds, side by side, its name and arity,
its value formula, its first partials, its second partials, its test domain and
the numpy/scipy callables it answers to::

    unary("EXP", public="exp", numpy=("numpy.exp",),
          value="exp(x)", d0="v", d00="v", domain=(-2.0, 2.0), doc="e**x")

From these blocks the build generates the Cython op table (``_codegen.py`` writes
``build/gen/_opgen.pxi`` and ``_dispatch.pxi``: the opcode enum, the arity classes,
``value_and_partials``, ``second_partials`` and the structural dispatch), and at
import time fastape derives the Python ``Op`` enum, the ``__array_ufunc__`` table,
the public ``fastape.<name>`` functions, the reference's opcode table (keyed by
name) and the rows of the table-driven gradient tests. Nothing here is compiled
or imported by the sweeps, so this module imports nothing but the standard library.

The formula language: each of ``value``, ``d0``, ``d1``, ``d00``, ``d01``, ``d11``
is one expression that is both Cython and Python: arithmetic, comparisons,
``a if c else b``, float literals, and the names

* ``x`` (first operand), ``y`` (second operand), ``k`` (the immediate of a
  ``unary_k`` op), ``v`` (the op's value: usable in every partial), ``d0``, ``d1``
  (the first partials: usable in the second partials);
* libc.math functions (``exp``, ``log1p``, ``fmod``, ``hypot``, ...), ``INFINITY``,
  ``NAN``, scipy's compiled special functions as ``sp.<name>``
  (``scipy.special.cython_special``, called from nogil code), and the helpers
  of ``_opmath.pxi`` (``_sigmoid`` ...).

Conventions shared with ``fastape.reference`` (the pure-Python oracle):

* A zero multiplier contributes nothing, even through an infinite or NaN partial
  (the sweeps, not the formulas, enforce it).
* Ties of ``maximum``/``minimum`` split the multiplier half and half.
* ``abs``, ``sign`` and ``relu`` have partial 0 at 0; ``sign``, ``floor`` and
  ``round`` (half to even, as numpy) have partial 0 everywhere.

Structural and linear-algebra ops move or combine whole arrays; their kernels
and typed parameter structs are blocks of ``_structural.pxi`` and
``_linalg.pxi``. Here each is one line naming its kernel and saying which of its
fields are node ids (``b``: the second parent, an immediate's pool index, or
unused; ``node_params``: positions in its parameter struct that hold node ids),
so that pruning and grouping remap them without knowing the op.

Adding an elementwise op: one block here (and, for the tests' oracle, its
formula in ``fastape.reference``); rebuild. Adding a structural op: one line
here and one block (parameter struct, forward, reverse and tangent kernels --
``<kernel>_tangent(Tape t, i64 i, double* T)``, T one direction's tangent arena --
and recorder) in ``_structural.pxi``.
"""

import re
from dataclasses import dataclass

#: kinds of comparison a guard re-checks (the ``Cmp`` enum of the compiled core): x
#: against y, then predicates of x alone (numpy.isnan, ...; y is x again)
COMPARISONS = ("LT", "LE", "GT", "GE", "EQ", "NE", "ISNAN", "ISINF", "ISFINITE", "SIGNBIT")


@dataclass(frozen=True)
class Elementwise:
    name: str
    arity: int                   # 1 or 2 operands
    has_k: bool                  # the second operand is an immediate constant k
    value: str
    d0: str
    d1: str
    d00: str
    d01: str
    d11: str
    public: str | None = None    # the fastape.<public> function (None: internal op)
    numpy: tuple = ()            # dotted names of the numpy/scipy callables
    domain: tuple = ((-2.0, 2.0), (-2.0, 2.0))    # where tests sample each operand
    test: tuple = ()             # extra test expressions in m, x, y (m: a namespace)
    doc: str = ""
    nested: tuple = ()           # the partials written with fastape ops (see below)
    partial_of: tuple = ()       # derived ops: (base op name, operand j) for ∂base/∂x_j
    fixed: str = ""              # the first operand's name when the op is not
                                 # differentiated in it (see binary)


@dataclass(frozen=True)
class Structural:
    name: str
    kernel: str                  # kernels <kernel>_forward/_reverse/_tangent
    b: str = "none"              # "node", "pool" (an immediate's index) or "none"
    node_params: tuple = ()      # (first, count, stride): count < 0 means P[-count]
    doc: str = ""


LEAVES = ("INPUT", "CONSTANT")
ELEMENTWISE: list = []
STRUCTURAL: list = []


def _domain(d, arity):
    if arity == 1 or isinstance(d[0], (int, float)):
        d = (tuple(d), tuple(d)) if isinstance(d[0], (int, float)) else tuple(d)
    return tuple(tuple(map(float, p)) for p in d)


def unary(name, *, value, d0, d00, public=None, numpy=(), domain=(-2.0, 2.0), test=(),
          nested=(), doc=""):
    ELEMENTWISE.append(Elementwise(name, 1, False, value, d0, "0.0", d00, "0.0", "0.0",
                                   public, tuple(numpy), _domain(domain, 1), tuple(test),
                                   doc, tuple(nested)))


def unary_k(name, *, value, d0, d00, test, domain=(-2.0, 2.0), nested=(), doc=""):
    """An op f(x; k) with an immediate k: no public function or numpy callable of its
    own (arithmetic with a number, or a hand-written function such as polygamma,
    records it); not differentiated in k."""
    ELEMENTWISE.append(Elementwise(name, 1, True, value, d0, "0.0", d00, "0.0", "0.0",
                                   None, (), _domain(domain, 1), tuple(test), doc,
                                   tuple(nested)))


def binary(name, *, value, d1, d11, d0=None, d00=None, d01=None, public=None, numpy=(),
           domain=((-2.0, 2.0), (-2.0, 2.0)), test=(), nested=(), fixed="", doc=""):
    """A binary block. ``fixed="a"``: the op has no derivative in its first operand, a
    (a shape parameter, a Bessel order): fastape.<public> and the numpy/scipy dispatch
    raise NotImplementedError naming it when it is a fastape value, so it is always a
    constant, and its partials d0, d00, d01 are 0.0 here (never 0 for a value: the
    recorder refuses one; not NaN: a constant's zero tangent times d01 must stay 0)."""
    if fixed:
        if d0 is not None or d00 is not None or d01 is not None:
            raise ValueError(f"fastape registry: {name}: fixed= takes no d0, d00, d01")
        d0 = d00 = d01 = "0.0"
    elif d0 is None or d00 is None or d01 is None:
        raise ValueError(f"fastape registry: {name}: d0, d00 and d01 are required")
    ELEMENTWISE.append(Elementwise(name, 2, False, value, d0, d1, d00, d01, d11, public,
                                   tuple(numpy), _domain(domain, 2), tuple(test), doc,
                                   tuple(nested), fixed=fixed))


def structural(name, kernel, *, b="none", node_params=(), doc=""):
    STRUCTURAL.append(Structural(name, kernel, b, tuple(node_params), doc))


# ---------------------------------------------------------------------------
# unary elementwise ops: f(x)
# ---------------------------------------------------------------------------

unary("NEG", public="negative", numpy=("numpy.negative",),
      value="-x", d0="-1.0", d00="0.0", test=("-x",), nested=("-1.0",), doc="-x")
unary("ABS", public="absolute", numpy=("numpy.absolute", "numpy.fabs"),
      value="fabs(x)", d0="(x > 0) - (x < 0) + 0.0", d00="0.0", domain=(0.1, 2.0),
      test=("abs(x) * (x - 3.0)",), doc="|x| (partial sign(x), 0 at 0)")
unary("EXP", public="exp", numpy=("numpy.exp",),
      value="exp(x)", d0="v", d00="v", nested=("z",), doc="e**x")
unary("LOG", public="log", numpy=("numpy.log",),
      value="log(x)", d0="1.0 / x", d00="-d0 * d0", domain=(0.1, 3.0),
      nested=("reciprocal(x)",),
      doc="natural logarithm")
unary("LOG1P", public="log1p", numpy=("numpy.log1p",),
      value="log1p(x)", d0="1.0 / (1.0 + x)", d00="-d0 * d0", domain=(-0.9, 3.0),
      nested=("reciprocal(x + 1.0)",),
      doc="log(1 + x), accurate near 0")
unary("EXPM1", public="expm1", numpy=("numpy.expm1",),
      value="expm1(x)", d0="v + 1.0", d00="v + 1.0",
      nested=("z + 1.0",), doc="e**x - 1, accurate near 0")
unary("SQRT", public="sqrt", numpy=("numpy.sqrt",),
      value="sqrt(x)", d0="0.5 / v", d00="-0.25 / (v * v * v)", domain=(0.1, 3.0),
      nested=("0.5 / z",),
      doc="square root")
unary("SQUARE", public="square", numpy=("numpy.square",),
      value="x * x", d0="2.0 * x", d00="2.0", test=("x ** 2",),
      nested=("2.0 * x",), doc="x**2")
unary("RECIPROCAL", public="reciprocal", numpy=("numpy.reciprocal",),
      value="1.0 / x", d0="-v * v", d00="2.0 * v * v * v", domain=(0.2, 3.0),
      nested=("-square(z)",), doc="1/x")
unary("SIN", public="sin", numpy=("numpy.sin",),
      value="sin(x)", d0="cos(x)", d00="-v", domain=(-3.0, 3.0),
      nested=("cos(x)",), doc="sine")
unary("COS", public="cos", numpy=("numpy.cos",),
      value="cos(x)", d0="-sin(x)", d00="-v", domain=(-3.0, 3.0),
      nested=("-sin(x)",), doc="cosine")
unary("TAN", public="tan", numpy=("numpy.tan",),
      value="tan(x)", d0="1.0 + v * v", d00="2.0 * v * d0", domain=(-1.2, 1.2),
      nested=("1.0 + square(z)",),
      doc="tangent")
unary("ARCSIN", public="arcsin", numpy=("numpy.arcsin",),
      value="asin(x)", d0="1.0 / sqrt(1.0 - x * x)", d00="x * d0 * d0 * d0",
      domain=(-0.9, 0.9), doc="inverse sine")
unary("ARCCOS", public="arccos", numpy=("numpy.arccos",),
      value="acos(x)", d0="-1.0 / sqrt(1.0 - x * x)", d00="x * d0 * d0 * d0",
      domain=(-0.9, 0.9), doc="inverse cosine")
unary("ARCTAN", public="arctan", numpy=("numpy.arctan",),
      value="atan(x)", d0="1.0 / (1.0 + x * x)", d00="-2.0 * x * d0 * d0",
      domain=(-3.0, 3.0), nested=("reciprocal(1.0 + square(x))",), doc="inverse tangent")
unary("SINH", public="sinh", numpy=("numpy.sinh",),
      value="sinh(x)", d0="cosh(x)", d00="v", nested=("cosh(x)",), doc="hyperbolic sine")
unary("COSH", public="cosh", numpy=("numpy.cosh",),
      value="cosh(x)", d0="sinh(x)", d00="v", nested=("sinh(x)",), doc="hyperbolic cosine")
unary("TANH", public="tanh", numpy=("numpy.tanh",),
      value="tanh(x)", d0="1.0 - v * v", d00="-2.0 * v * d0",
      nested=("1.0 - square(z)",), doc="hyperbolic tangent")
unary("SIGMOID", public="sigmoid", numpy=("scipy.special.expit",),
      value="_sigmoid(x)", d0="v * (1.0 - v)", d00="d0 * (1.0 - 2.0 * v)",
      domain=(-30.0, 30.0),
      nested=("z * (1.0 - z)",),
      doc="logistic function 1/(1 + e**-x), computed without overflow")
unary("SOFTPLUS", public="softplus",
      # log(1 + e^x) without overflow
      value="(x if x > 0 else 0.0) + log1p(exp(-fabs(x)))", d0="_sigmoid(x)",
      d00="d0 * (1.0 - d0)", domain=(-30.0, 30.0),
      nested=("sigmoid(x)",),
      doc="log(1 + e**x), computed without overflow")
unary("RELU", public="relu",
      # nan stays nan, as numpy.maximum(x, 0)
      value="x if x > 0 or x != x else 0.0", d0="1.0 if x > 0 else 0.0", d00="0.0",
      doc="max(x, 0) (partial 0 at 0)")
unary("SIGN", public="sign", numpy=("numpy.sign",),
      value="x if x != x else (x > 0) - (x < 0) + 0.0", d0="0.0", d00="0.0",
      test=("m.sign(x) * x",), doc="sign of x (partial 0)")
unary("FLOOR", public="floor", numpy=("numpy.floor",),
      value="floor(x)", d0="0.0", d00="0.0", test=("m.floor(x) + x * 0.5",),
      doc="floor (partial 0)")
unary("ROUND", public="round", numpy=("numpy.rint",),
      value="nearbyint(x)", d0="0.0", d00="0.0", test=("m.round(x) + x * 0.5",),
      doc="round half to even, as numpy.round (partial 0)")
unary("COPY",
      value="x", d0="1.0", d00="0.0", test=("m.sum(m.reshape(x, (-1,))) * 2.0",),
      doc="identity (reshape records it)")

# ---------------------------------------------------------------------------
# unary ops with an immediate constant k: f(x; k), so that x * 2.0 needs no node
# ---------------------------------------------------------------------------

unary_k("ADD_K", value="x + k", d0="1.0", d00="0.0", test=("x + 2.5", "2.5 + x", "x - 2.5"),
        doc="x + k")
unary_k("MUL_K", value="x * k", d0="k", d00="0.0", test=("x * 3.0", "3 * x"), doc="x * k")
unary_k("RSUB_K", value="k - x", d0="-1.0", d00="0.0", test=("2.5 - x",), doc="k - x")
unary_k("DIV_K", value="x / k", d0="1.0 / k", d00="0.0", test=("x / 3.0",),
        nested=("1.0 / k",), doc="x / k")
unary_k("RDIV_K", value="k / x", d0="-v / x", d00="-2.0 * d0 / x", domain=(0.2, 3.0),
        test=("3.0 / x",), nested=("-z / x",), doc="k / x")
unary_k("POW_K", value="pow(x, k)", domain=(0.1, 3.0),
        d0="0.0 if k == 0.0 else k * pow(x, k - 1.0)",
        d00="0.0 if k == 0.0 or k == 1.0 else k * (k - 1.0) * pow(x, k - 2.0)",
        test=("x ** 3.5", "x ** 0 + x", "x ** 1.0 * x"),
        nested=("0.0 if k == 0.0 else k * x ** (k - 1.0)",),
        doc="x ** k (x ** 2 records SQUARE)")
unary_k("RPOW_K", value="pow(k, x)",
        # d/dx k^x = k^x log k, and 0 where k^x = 0 (k = 0, x > 0)
        d0="0.0 if v == 0.0 else v * log(k)", d00="0.0 if v == 0.0 else d0 * log(k)",
        test=("2.0 ** x",), doc="k ** x")

# ---------------------------------------------------------------------------
# binary elementwise ops: f(x, y)
# ---------------------------------------------------------------------------

binary("ADD", public="add", numpy=("numpy.add",),
       value="x + y", d0="1.0", d1="1.0", d00="0.0", d01="0.0", d11="0.0",
       test=("x + y",), doc="x1 + x2")
binary("SUB", public="subtract", numpy=("numpy.subtract",),
       value="x - y", d0="1.0", d1="-1.0", d00="0.0", d01="0.0", d11="0.0",
       test=("x - y",), doc="x1 - x2")
binary("MUL", public="multiply", numpy=("numpy.multiply",),
       value="x * y", d0="y", d1="x", d00="0.0", d01="1.0", d11="0.0",
       test=("x * y",), nested=("y", "x"), doc="x1 * x2")
binary("DIV", public="divide", numpy=("numpy.true_divide",),
       value="x / y", d0="1.0 / y", d1="-v / y", d00="0.0", d01="-d0 * d0",
       d11="-2.0 * d1 / y", domain=((-2.0, 2.0), (0.3, 3.0)), test=("x / y",),
       nested=("reciprocal(y)", "-z / y"),
       doc="x1 / x2")
binary("POW", public="power", numpy=("numpy.power", "numpy.float_power"),
       value="pow(x, y)",
       d0="0.0 if y == 0.0 else y * pow(x, y - 1.0)",
       d1="0.0 if v == 0.0 else v * log(x)",
       d00="0.0 if y == 0.0 or y == 1.0 else y * (y - 1.0) * pow(x, y - 2.0)",
       d01="pow(x, y - 1.0) * (1.0 + y * log(x))",
       d11="0.0 if v == 0.0 else d1 * log(x)",
       domain=((0.2, 3.0), (0.2, 3.0)), test=("x ** y",), doc="x1 ** x2")
binary("ARCTAN2", public="arctan2", numpy=("numpy.arctan2",),
       value="atan2(x, y)", d0="y / (x * x + y * y)", d1="-x / (x * x + y * y)",
       d00="-2.0 * x * y / ((x * x + y * y) * (x * x + y * y))",
       d01="(x * x - y * y) / ((x * x + y * y) * (x * x + y * y))",
       d11="2.0 * x * y / ((x * x + y * y) * (x * x + y * y))",
       domain=((0.2, 2.0), (-2.0, -0.2)), doc="angle of the point (x2, x1)")
binary("LOGADDEXP", public="logaddexp", numpy=("numpy.logaddexp",),
       # x == y also covers x = y = ±inf; the partials sigmoid(x - y), sigmoid(y - x)
       # stay finite even where the value is infinite
       value="x + 0.6931471805599453 if x == y else "
             "(x if x > y else y) + log1p(exp(-fabs(x - y)))",
       d0="0.5 if x == y else _sigmoid(x - y)", d1="0.5 if x == y else _sigmoid(y - x)",
       d00="d0 * d1", d01="-d0 * d1", d11="d0 * d1",
       domain=((-30.0, 30.0), (-30.0, 30.0)),
       doc="log(e**x1 + e**x2), computed without overflow")
binary("MAXIMUM", public="maximum", numpy=("numpy.maximum",),
       # a tie splits the multiplier; x + y: NaN if either is NaN
       value="x if x > y else (y if x < y else (x if x == y else x + y))",
       d0="1.0 if x > y else (0.0 if x < y else 0.5)",
       d1="0.0 if x > y else (1.0 if x < y else 0.5)", d00="0.0", d01="0.0", d11="0.0",
       doc="elementwise maximum (a tie splits the multiplier)")
binary("MINIMUM", public="minimum", numpy=("numpy.minimum",),
       value="x if x < y else (y if x > y else (x if x == y else x + y))",
       d0="1.0 if x < y else (0.0 if x > y else 0.5)",
       d1="0.0 if x < y else (1.0 if x > y else 0.5)", d00="0.0", d01="0.0", d11="0.0",
       doc="elementwise minimum (a tie splits the multiplier)")

# ---------------------------------------------------------------------------
# more elementwise ops: logarithms and roots, rounding, sinc, NaN-ignoring extrema,
# and scipy.special (its compiled cython_special functions, called from nogil code)
# ---------------------------------------------------------------------------

# -- logarithms, powers, roots -------------------------------------------------

# Constants are the correctly rounded 1/ln 2, 1/ln 10 and ln 2; a division by a
# constant would round twice.
unary("LOG2", public="log2", numpy=("numpy.log2",),
      value="log2(x)",
      d0="1.4426950408889634 / x",
      d00="-d0 / x",
      domain=(0.05, 20.0),
      nested=("1.4426950408889634 / x",),
      doc="base-2 logarithm")

unary("LOG10", public="log10", numpy=("numpy.log10",),
      value="log10(x)",
      d0="0.4342944819032518 / x",
      d00="-d0 / x",
      domain=(0.05, 20.0),
      nested=("0.4342944819032518 / x",),
      doc="base-10 logarithm")

unary("EXP2", public="exp2", numpy=("numpy.exp2",),
      value="exp2(x)",
      d0="0.6931471805599453 * v",
      d00="0.6931471805599453 * d0",
      domain=(-10.0, 10.0),
      nested=("0.6931471805599453 * z",),
      doc="2**x")

# In terms of v, d0 stays finite for huge |x| and is +inf at 0 (the tangent is
# vertical); d00 = -2/(9 x^(5/3)) = -2 d0 / (3 x).
unary("CBRT", public="cbrt", numpy=("numpy.cbrt",),
      value="cbrt(x)",
      d0="1.0 / (3.0 * v * v)",
      d00="-2.0 * d0 / (3.0 * x)",
      domain=(0.05, 20.0),
      doc="real cube root, also of negative x (partial +inf at 0)")

# -- inverse hyperbolic functions ----------------------------------------------

# hypot(1, x) = sqrt(1 + x^2) without overflow for |x| > 1e154; d00 is
# -x (1 + x^2)^(-3/2), multiplied left to right so it stays in range.
unary("ARCSINH", public="arcsinh", numpy=("numpy.arcsinh",),
      value="asinh(x)",
      d0="1.0 / hypot(1.0, x)",
      d00="-x * d0 * d0 * d0",
      domain=(-10.0, 10.0),
      doc="inverse hyperbolic sine")

# sqrt(x - 1) sqrt(x + 1) instead of sqrt(x^2 - 1): exact near 1, no overflow.
unary("ARCCOSH", public="arccosh", numpy=("numpy.arccosh",),
      value="acosh(x)",
      d0="1.0 / (sqrt(x - 1.0) * sqrt(x + 1.0))",
      d00="-x * d0 * d0 * d0",
      domain=(1.05, 20.0),
      doc="inverse hyperbolic cosine (partial +inf at 1, NaN below 1)")

# (1 - x)(1 + x) instead of 1 - x^2: no cancellation near ±1.
unary("ARCTANH", public="arctanh", numpy=("numpy.arctanh",),
      value="atanh(x)",
      d0="1.0 / ((1.0 - x) * (1.0 + x))",
      d00="2.0 * x * d0 * d0",
      domain=(-0.95, 0.95),
      doc="inverse hyperbolic tangent (partial +inf at ±1)")

# -- hypot, fmod, remainder ----------------------------------------------------

# The partials are the unit vector (x, y)/v; at the apex (0, 0) of the cone every
# direction is a subgradient and 0 (the centre of the unit disc) is picked, as JAX
# does; the second partials y^2/v^3, -xy/v^3, x^2/v^3 are 0 there too.
binary("HYPOT", public="hypot", numpy=("numpy.hypot",),
       value="_hypot(x, y)",
       d0="0.0 if v == 0.0 else x / v",
       d1="0.0 if v == 0.0 else y / v",
       d00="0.0 if v == 0.0 else d1 * d1 / v",
       d01="0.0 if v == 0.0 else -d0 * d1 / v",
       d11="0.0 if v == 0.0 else d0 * d0 / v",
       domain=((-5.0, 5.0), (-5.0, 5.0)),
       doc="sqrt(x1**2 + x2**2) without overflow (partials 0 at (0, 0))")

# fmod(x, y) = x - n y with n = trunc(x/y) taken exactly; locally n is constant, so
# the partials are 1 and -n. n is recovered as (x - v)/y, which is an integer up to
# rounding, rather than as trunc(x/y), which is off by one where x/y rounds up to
# an integer: fmod(1.0, 0.1) = 0.0999... is x - 9 y, not x - 10 y.
binary("FMOD", public="fmod", numpy=("numpy.fmod",),
       value="fmod(x, y)",
       d0="1.0",
       d1="-nearbyint((x - v) / y)",
       d00="0.0", d01="0.0", d11="0.0",
       domain=((-10.0, 10.0), (0.5, 3.0)),
       doc="C remainder x1 - trunc(x1/x2) x2, sign of x1 (partials 1, -trunc(x1/x2))")

# numpy.remainder (numpy.mod, and Python's % on floats) is fmod adjusted to the sign
# of y, with a zero result carrying the sign of y; _remainder computes it exactly
# as numpy does, so it agrees bit for bit, -0.0 and the infinities included. Python's
# % on a fastape Var (__mod__/__rmod__) should record this op too.
binary("REMAINDER", public="remainder", numpy=("numpy.remainder", "numpy.mod"),
       value="_remainder(x, y)",
       d0="1.0",
       d1="-nearbyint((x - v) / y)",
       d00="0.0", d01="0.0", d11="0.0",
       domain=((-10.0, 10.0), (0.5, 3.0)), test=("m.remainder(x, y)", "x % y", "x % 1.5"),
       doc="Python's x1 % x2 = x1 - floor(x1/x2) x2, sign of x2 (partials 1, -floor(x1/x2))")

# -- rounding and angle conversion ---------------------------------------------

unary("CEIL", public="ceil", numpy=("numpy.ceil",),
      value="ceil(x)",
      d0="0.0",
      d00="0.0",
      domain=(-10.0, 10.0),
      doc="ceiling (partial 0)")

unary("TRUNC", public="trunc", numpy=("numpy.trunc",),
      value="trunc(x)",
      d0="0.0",
      d00="0.0",
      domain=(-10.0, 10.0),
      doc="round toward zero (partial 0)")

# numpy multiplies by the double nearest pi/180 (resp. 180/pi); so do these.
unary("DEG2RAD", public="deg2rad", numpy=("numpy.deg2rad", "numpy.radians"),
      value="x * 0.017453292519943295",
      d0="0.017453292519943295",
      d00="0.0",
      domain=(-720.0, 720.0),
      doc="degrees to radians")

unary("RAD2DEG", public="rad2deg", numpy=("numpy.rad2deg", "numpy.degrees"),
      value="x * 57.29577951308232",
      d0="57.29577951308232",
      d00="0.0",
      domain=(-10.0, 10.0),
      doc="radians to degrees")

# -- sinc, logaddexp2 ----------------------------------------------------------

# The value is numpy's own formula (sin(pi x)/(pi x), 1 at 0), accurate near 0 as
# it stands; the closed-form derivatives cancel there, so the helpers switch to
# Taylor series for |pi x| < 1.
unary("SINC", public="sinc", numpy=("numpy.sinc",),
      value="1.0 if x == 0.0 else sin(3.141592653589793 * x) / (3.141592653589793 * x)",
      d0="_sinc_d1(x)",
      d00="_sinc_d2(x)",
      domain=(-4.0, 4.0),
      doc="normalized sinc sin(pi x)/(pi x), 1 at 0")

# numpy's npy_logaddexp2, step for step (x + 1 on a tie, so inf + inf stays inf);
# the partials 2^x/(2^x + 2^y) are sigmoid((x - y) ln 2), finite where v overflows.
# The tie is a smooth point: 0.5/0.5 is the true gradient, not a convention.
binary("LOGADDEXP2", public="logaddexp2", numpy=("numpy.logaddexp2",),
       value="x + 1.0 if x == y else (x + 1.4426950408889634 * log1p(exp2(y - x)) if x > y"
             " else y + 1.4426950408889634 * log1p(exp2(x - y)))",
       d0="0.5 if x == y else _sigmoid(0.6931471805599453 * (x - y))",
       d1="0.5 if x == y else _sigmoid(0.6931471805599453 * (y - x))",
       d00="0.6931471805599453 * d0 * d1",
       d01="-0.6931471805599453 * d0 * d1",
       d11="0.6931471805599453 * d0 * d1",
       domain=((-5.0, 5.0), (-5.0, 5.0)),
       doc="log2(2**x1 + 2**x2), computed without overflow")

# -- fmax, fmin, heaviside -----------------------------------------------------

# The NaN-ignoring maximum: fmax(x, nan) = x sends the whole multiplier to x; a
# tie, ±0 included, splits it 0.5/0.5 as maximum does, and so does fmax(nan, nan).
# libm's fmax returns the second operand on a ±0 tie; numpy's loops return either
# one depending on the array length, so the sign of a zero result is unspecified.
binary("FMAX", public="fmax", numpy=("numpy.fmax",),
       value="fmax(x, y)",
       d0="0.5 if (x == y or (x != x and y != y)) else (1.0 if (x > y or y != y) else 0.0)",
       d1="0.5 if (x == y or (x != x and y != y)) else (1.0 if (y > x or x != x) else 0.0)",
       d00="0.0", d01="0.0", d11="0.0",
       domain=((-5.0, 5.0), (-5.0, 5.0)),
       doc="maximum ignoring NaN (a tie splits the multiplier, a NaN operand gets 0)")

binary("FMIN", public="fmin", numpy=("numpy.fmin",),
       value="fmin(x, y)",
       d0="0.5 if (x == y or (x != x and y != y)) else (1.0 if (x < y or y != y) else 0.0)",
       d1="0.5 if (x == y or (x != x and y != y)) else (1.0 if (y < x or x != x) else 0.0)",
       d00="0.0", d01="0.0", d11="0.0",
       domain=((-5.0, 5.0), (-5.0, 5.0)),
       doc="minimum ignoring NaN (a tie splits the multiplier, a NaN operand gets 0)")

# numpy.heaviside(x, h0) is 0, h0 or 1. The step has partial 0 in x everywhere (as
# floor); at x == 0 the value *is* h0, so its partial in h0 is 1 there, the true
# derivative (and JAX's), 0 elsewhere.
binary("HEAVISIDE", public="heaviside", numpy=("numpy.heaviside",),
       value="NAN if x != x else (y if x == 0.0 else (1.0 if x > 0.0 else 0.0))",
       d0="0.0",
       d1="1.0 if x == 0.0 else 0.0",
       d00="0.0", d01="0.0", d11="0.0",
       domain=((-5.0, 5.0), (-2.0, 2.0)),
       doc="step function: 0, x2 at x1 == 0, 1 (partial 0 in x1; 1 in x2 at x1 == 0)")

# -- scipy.special: error function family --------------------------------------

# 2/sqrt(pi) and sqrt(pi)/2, correctly rounded.
unary("ERF", public="erf", numpy=("scipy.special.erf",),
      value="sp.erf(x)",
      d0="1.1283791670955126 * exp(-x * x)",
      d00="-2.0 * x * d0",
      domain=(-3.0, 3.0),
      nested=("1.1283791670955126 * exp(-square(x))",),
      doc="error function")

unary("ERFC", public="erfc", numpy=("scipy.special.erfc",),
      value="sp.erfc(x)",
      d0="-1.1283791670955126 * exp(-x * x)",
      d00="-2.0 * x * d0",
      domain=(-3.0, 5.0),
      nested=("-1.1283791670955126 * exp(-square(x))",),
      doc="complementary error function 1 - erf(x), accurate for large x")

# The inverse-function rule: erf'(v) = 2/sqrt(pi) e^(-v^2), so v' = sqrt(pi)/2 e^(v^2)
# and v'' = 2 v v'^2; the same for erfcinv with the sign of erfc' (v' < 0).
unary("ERFINV", public="erfinv", numpy=("scipy.special.erfinv",),
      value="sp.erfinv(x)",
      d0="0.886226925452758 * exp(v * v)",
      d00="2.0 * v * d0 * d0",
      domain=(-0.95, 0.95),
      doc="inverse of erf on (-1, 1) (partial +inf at ±1)")

unary("ERFCINV", public="erfcinv", numpy=("scipy.special.erfcinv",),
      value="sp.erfcinv(x)",
      d0="-0.886226925452758 * exp(v * v)",
      d00="2.0 * v * d0 * d0",
      domain=(0.05, 1.95),
      doc="inverse of erfc on (0, 2) (partial -inf at 0 and 2)")

# -- scipy.special: logit, gamma family ----------------------------------------

unary("LOGIT", public="logit", numpy=("scipy.special.logit",),
      value="sp.logit(x)",
      d0="1.0 / (x * (1.0 - x))",
      d00="(2.0 * x - 1.0) * d0 * d0",
      domain=(0.02, 0.98),
      doc="log(x/(1 - x)), the inverse of sigmoid (partial +inf at 0 and 1)")

# gammaln is log|Gamma|, so its derivative is psi on both sides of 0 alike. The
# polygammas are helpers: cython_special has no polygamma.
unary("GAMMALN", public="gammaln", numpy=("scipy.special.gammaln",),
      value="sp.gammaln(x)",
      d0="sp.psi(x)",
      d00="_trigamma(x)",
      domain=(0.05, 15.0),
      doc="log|Gamma(x)| (partial digamma, also for negative x)")

unary("PSI", public="psi", numpy=("scipy.special.psi", "scipy.special.digamma"),
      value="sp.psi(x)",
      d0="_trigamma(x)",
      d00="_tetragamma(x)",
      domain=(0.05, 15.0),
      doc="digamma function Gamma'/Gamma (partial trigamma)")

# -- scipy.special: normal distribution ----------------------------------------

# 1/sqrt(2 pi), correctly rounded.
unary("NDTR", public="ndtr", numpy=("scipy.special.ndtr",),
      value="sp.ndtr(x)",
      d0="0.3989422804014327 * exp(-0.5 * x * x)",
      d00="-x * d0",
      domain=(-6.0, 6.0),
      nested=("0.3989422804014327 * exp(-0.5 * square(x))",),
      doc="standard normal CDF Phi(x)")

# d0 = phi/Phi = exp(-x^2/2 - v)/sqrt(2 pi) never overflows, but for x -> -inf both
# terms of the exponent grow like x^2/2 while their difference grows like log|x|,
# so it loses ~x^2 ulps; below -3 the Mills-ratio continued fraction gives
# phi/Phi + x directly, which also keeps d00 = -d0 (x + d0) free of cancellation.
unary("LOG_NDTR", public="log_ndtr", numpy=("scipy.special.log_ndtr",),
      value="sp.log_ndtr(x)",
      d0="0.3989422804014327 * exp(-0.5 * x * x - v) if x > -3.0 else _log_ndtr_k(x) - x",
      d00="-d0 * (x + d0) if x > -3.0 else -d0 * _log_ndtr_k(x)",
      domain=(-20.0, 8.0),
      doc="log of the standard normal CDF, accurate for x -> -inf")

# -- scipy.special: x log y ----------------------------------------------------

# xlogy is 0 on the whole line x == 0, so there its y-partial is exactly 0, also
# at y == 0 where x/y would be NaN; its x-partial is log(y) (-inf at y == 0).
binary("XLOGY", public="xlogy", numpy=("scipy.special.xlogy",),
       value="sp.xlogy(x, y)",
       d0="log(y)",
       d1="0.0 if x == 0.0 else x / y",
       d00="0.0",
       d01="1.0 / y",
       d11="0.0 if x == 0.0 else -d1 / y",
       domain=((-3.0, 3.0), (0.05, 10.0)),
       doc="x1 log(x2), 0 where x1 == 0 (partial in x2 then 0)")

binary("XLOG1PY", public="xlog1py", numpy=("scipy.special.xlog1py",),
       value="sp.xlog1py(x, y)",
       d0="log1p(y)",
       d1="0.0 if x == 0.0 else x / (1.0 + y)",
       d00="0.0",
       d01="1.0 / (1.0 + y)",
       d11="0.0 if x == 0.0 else -d1 / (1.0 + y)",
       domain=((-3.0, 3.0), (-0.9, 10.0)),
       doc="x1 log1p(x2), 0 where x1 == 0 (partial in x2 then 0)")


# -- scipy.special: the gamma function and its relatives -----------------------

# Gamma' = Gamma psi, so the partial written with ops (z psi(x)) is exact at every
# order. At the poles 0, -1, ... scipy's gamma is ±inf or NaN, and so are the partials.
unary("GAMMA", public="gamma", numpy=("scipy.special.gamma",),
      value="sp.gamma(x)",
      d0="v * sp.psi(x)",
      d00="d0 * sp.psi(x) + v * _trigamma(x)",
      domain=(0.2, 4.5),
      test=("m.gamma(x)", "m.gamma(x - 2.7)"),
      nested=("z * psi(x)",),
      doc="the gamma function")

# 1/Gamma is entire: at its zeros 0, -1, ... the partials -psi/Gamma (0 · inf there)
# are the limits the helpers take, (-1)^n n! and -2 (-1)^n n! psi(n + 1) at -n.
unary("RGAMMA", public="rgamma", numpy=("scipy.special.rgamma",),
      value="sp.rgamma(x)",
      d0="_rgamma_d1(x, v)",
      d00="_rgamma_d2(x, v)",
      domain=(0.2, 4.5),
      test=("m.rgamma(x)", "m.rgamma(x - 2.7)"),
      doc="1/Gamma(x), entire (its zeros at 0, -1, ...)")

unary("GAMMASGN", public="gammasgn", numpy=("scipy.special.gammasgn",),
      value="sp.gammasgn(x)",
      d0="0.0",
      d00="0.0",
      domain=(0.1, 3.0),
      test=("m.gammasgn(x) * x", "m.gammasgn(x - 2.45) * x"),
      doc="the sign of Gamma(x) (partial 0)")

# B(a, b) = Gamma(a) Gamma(b)/Gamma(a + b): ∂B/∂a = B (psi(a) - psi(a + b)).
binary("BETA", public="beta", numpy=("scipy.special.beta",),
       value="sp.beta(x, y)",
       d0="v * (sp.psi(x) - sp.psi(x + y))",
       d1="v * (sp.psi(y) - sp.psi(x + y))",
       d00="d0 * (sp.psi(x) - sp.psi(x + y)) + v * (_trigamma(x) - _trigamma(x + y))",
       d01="d0 * (sp.psi(y) - sp.psi(x + y)) - v * _trigamma(x + y)",
       d11="d1 * (sp.psi(y) - sp.psi(x + y)) + v * (_trigamma(y) - _trigamma(x + y))",
       domain=((0.2, 4.0), (0.2, 4.0)),
       nested=("z * (psi(x) - psi(x + y))", "z * (psi(y) - psi(x + y))"),
       doc="the beta function Gamma(a) Gamma(b) / Gamma(a + b)")

binary("BETALN", public="betaln", numpy=("scipy.special.betaln",),
       value="sp.betaln(x, y)",
       d0="sp.psi(x) - sp.psi(x + y)",
       d1="sp.psi(y) - sp.psi(x + y)",
       d00="_trigamma(x) - _trigamma(x + y)",
       d01="-_trigamma(x + y)",
       d11="_trigamma(y) - _trigamma(x + y)",
       domain=((0.2, 6.0), (0.2, 6.0)),
       nested=("psi(x) - psi(x + y)", "psi(y) - psi(x + y)"),
       doc="log|B(a, b)|")

# polygamma(n, x), n >= 0 an integer immediate (fastape.polygamma checks it; n = 0
# records PSI): cython_special has no polygamma, so _polygamma is scipy's own formula
# (-1)^(n+1) n! zeta(n + 1, x). Its derivative is polygamma(n + 1, x), written with
# the op itself: exact at every order.
unary_k("POLYGAMMA_K",
        value="_polygamma(k, x)",
        d0="_polygamma(k + 1.0, x)",
        d00="_polygamma(k + 2.0, x)",
        domain=(0.2, 8.0),
        test=("m.polygamma(1, x)", "m.polygamma(2, x)", "m.polygamma(4, x + 0.5)"),
        nested=("polygamma(k + 1.0, x)",),
        doc="polygamma(k, x), the k-th derivative of psi")

# -- scipy.special: incomplete gamma functions ---------------------------------

# Regularized: gammainc(a, x) = P(a, x), gammaincc = Q = 1 - P; ∂P/∂x = x^(a-1) e^-x /
# Gamma(a) (xlogy: a = 1 at x = 0 gives e^0 = 1, not NaN). The derivative in the shape
# a (a series of its own) is not provided: a fastape value for a raises.
binary("GAMMAINC", public="gammainc", numpy=("scipy.special.gammainc",),
       value="sp.gammainc(x, y)",
       d1="exp(sp.xlogy(x - 1.0, y) - y - sp.gammaln(x))",
       d11="0.0 if d1 == 0.0 else d1 * ((0.0 if x == 1.0 else (x - 1.0) / y) - 1.0)",
       fixed="a",
       domain=((0.3, 5.0), (0.05, 8.0)),
       test=("m.gammainc(0.6, y) * x", "m.gammainc(1.0, y)", "m.gammainc(3.5, y)"),
       nested=("0.0", "exp(xlogy(x - 1.0, y) - y - gammaln(x))"),
       doc="regularized lower incomplete gamma P(a, x) (differentiable in x only)")

binary("GAMMAINCC", public="gammaincc", numpy=("scipy.special.gammaincc",),
       value="sp.gammaincc(x, y)",
       d1="-exp(sp.xlogy(x - 1.0, y) - y - sp.gammaln(x))",
       d11="0.0 if d1 == 0.0 else d1 * ((0.0 if x == 1.0 else (x - 1.0) / y) - 1.0)",
       fixed="a",
       domain=((0.3, 5.0), (0.05, 8.0)),
       test=("m.gammaincc(0.6, y) * x", "m.gammaincc(2.0, y)", "m.gammaincc(4.5, y)"),
       nested=("0.0", "-exp(xlogy(x - 1.0, y) - y - gammaln(x))"),
       doc="regularized upper incomplete gamma Q(a, x) = 1 - P(a, x) (in x only)")

# -- scipy.special: Bessel functions -------------------------------------------

# The derivatives in x by the recurrences (for every real order v)
#   J_v' = (J_{v-1} - J_{v+1})/2,   J_v'' = (J_{v-2} - 2 J_v + J_{v+2})/4   (Y alike)
#   I_v' = (I_{v-1} + I_{v+1})/2,   I_v'' = (I_{v-2} + 2 I_v + I_{v+2})/4
# with J_{-1} = -J_1, Y_{-1} = -Y_1, I_{-1} = I_1 for the fixed orders 0 and 1. The
# derivative in the order v is not provided: a fastape value for v raises.
unary("J0", public="j0", numpy=("scipy.special.j0",),
      value="sp.j0(x)",
      d0="-sp.j1(x)",
      d00="0.5 * (sp.jv(2.0, x) - v)",
      domain=(0.1, 3.5),
      nested=("-j1(x)",),
      doc="Bessel function of the first kind of order 0 (partial -j1)")

unary("J1", public="j1", numpy=("scipy.special.j1",),
      value="sp.j1(x)",
      d0="0.5 * (sp.j0(x) - sp.jv(2.0, x))",
      d00="0.25 * (sp.jv(3.0, x) - 3.0 * v)",
      domain=(0.1, 1.7),
      doc="Bessel function of the first kind of order 1")

unary("Y0", public="y0", numpy=("scipy.special.y0",),
      value="sp.y0(x)",
      d0="-sp.y1(x)",
      d00="0.5 * (sp.yv(2.0, x) - v)",
      domain=(0.3, 2.1),
      nested=("-y1(x)",),
      doc="Bessel function of the second kind of order 0 (partial -y1)")

unary("Y1", public="y1", numpy=("scipy.special.y1",),
      value="sp.y1(x)",
      d0="0.5 * (sp.y0(x) - sp.yv(2.0, x))",
      d00="0.25 * (sp.yv(3.0, x) - 3.0 * v)",
      domain=(0.3, 2.1),
      doc="Bessel function of the second kind of order 1")

unary("I0", public="i0", numpy=("scipy.special.i0",),
      value="sp.i0(x)",
      d0="sp.i1(x)",
      d00="0.5 * (v + sp.iv(2.0, x))",
      domain=(-3.0, 3.0),
      nested=("i1(x)",),
      doc="modified Bessel function of the first kind of order 0 (partial i1)")

unary("I1", public="i1", numpy=("scipy.special.i1",),
      value="sp.i1(x)",
      d0="0.5 * (sp.i0(x) + sp.iv(2.0, x))",
      d00="0.25 * (3.0 * v + sp.iv(3.0, x))",
      domain=(-3.0, 3.0),
      doc="modified Bessel function of the first kind of order 1")

binary("JV", public="jv", numpy=("scipy.special.jv",),
       value="sp.jv(x, y)",
       d1="0.5 * (sp.jv(x - 1.0, y) - sp.jv(x + 1.0, y))",
       d11="0.25 * (sp.jv(x - 2.0, y) - 2.0 * v + sp.jv(x + 2.0, y))",
       fixed="v",
       domain=((0.0, 3.0), (0.1, 2.0)),
       test=("m.jv(2.5, y) * x", "m.jv(0.5, y)", "m.jv(-0.3, y + 1.0)", "m.jv(3.0, y)"),
       doc="Bessel function of the first kind of real order v (differentiable in x only)")

binary("YN", public="yn", numpy=("scipy.special.yn",),
       value="_yn(x, y)",
       # the kernel truncates a fractional n, as scipy's yn does (the recorder refuses it)
       d1="0.5 * (sp.yv(trunc(x) - 1.0, y) - sp.yv(trunc(x) + 1.0, y))",
       d11="0.25 * (sp.yv(trunc(x) - 2.0, y) - 2.0 * v + sp.yv(trunc(x) + 2.0, y))",
       fixed="n",
       domain=((0.0, 4.0), (0.5, 2.5)),
       test=("m.yn(2, y) * x", "m.yn(0, y)", "m.yn(3, y + 0.5)"),
       doc="Bessel function of the second kind of integer order n (in x only)")

binary("IV", public="iv", numpy=("scipy.special.iv",),
       value="sp.iv(x, y)",
       d1="0.5 * (sp.iv(x - 1.0, y) + sp.iv(x + 1.0, y))",
       d11="0.25 * (sp.iv(x - 2.0, y) + 2.0 * v + sp.iv(x + 2.0, y))",
       fixed="v",
       domain=((0.0, 3.0), (0.1, 3.0)),
       test=("m.iv(2.5, y) * x", "m.iv(0.0, y - 1.5)", "m.iv(-0.3, y)", "m.iv(3.0, y)"),
       doc="modified Bessel function of the first kind of real order v (in x only)")

# ive = iv e^-|x|: ive' = (ive_{v-1} + ive_{v+1})/2 - s ive with s = sign x, and
# ive'' = (ive_{v-2} + 2 ive + ive_{v+2})/4 - s (ive_{v-1} + ive_{v+1}) + ive (x != 0).
binary("IVE", public="ive", numpy=("scipy.special.ive",),
       value="sp.ive(x, y)",
       d1="0.5 * (sp.ive(x - 1.0, y) + sp.ive(x + 1.0, y)) - ((y > 0.0) - (y < 0.0)) * v",
       d11="0.25 * (sp.ive(x - 2.0, y) + 2.0 * v + sp.ive(x + 2.0, y))"
           " - ((y > 0.0) - (y < 0.0)) * (sp.ive(x - 1.0, y) + sp.ive(x + 1.0, y))"
           " + (0.0 if y == 0.0 else v)",
       fixed="v",
       domain=((0.0, 3.0), (0.1, 6.0)),
       test=("m.ive(2.5, y) * x", "m.ive(0.0, y - 3.0)", "m.ive(1.0, y)", "m.ive(0.7, y)"),
       doc="exponentially scaled iv(v, x) e^-|x| (in x only)")

# -- scipy.special: entropy, the normal quantile -------------------------------

unary("ENTR", public="entr", numpy=("scipy.special.entr",),
      value="sp.entr(x)",
      d0="-log(x) - 1.0",
      d00="-1.0 / x",
      domain=(0.05, 3.0),
      nested=("-log(x) - 1.0",),
      doc="-x log x (0 at 0, -inf below; partial -log x - 1)")

# the inverse-function rule: ndtr'(v) = phi(v), so v' = sqrt(2 pi) e^(v^2/2) and
# v'' = v v'^2.
unary("NDTRI", public="ndtri", numpy=("scipy.special.ndtri",),
      value="sp.ndtri(x)",
      d0="2.5066282746310002 * exp(0.5 * v * v)",
      d00="v * d0 * d0",
      domain=(0.02, 0.98),
      nested=("2.5066282746310002 * exp(0.5 * square(z))",),
      doc="inverse of the standard normal CDF ndtr on (0, 1)")


# ---------------------------------------------------------------------------
# structural ops (kernels in _structural.pxi) and dense linear algebra (_linalg.pxi)
# ---------------------------------------------------------------------------

structural("GATHER1", "gather1", b="pool", doc="scalar x.flat[k], k an immediate")
structural("GATHER", "gather", doc="x.flat[idx] for an index array: indexing, transpose")
structural("STRIDED", "strided", doc="x.flat[start + j*step]: indexing by a progression")
structural("BROADCAST", "broadcast",
           doc="a strided view x[Σ j_d stride_d]: numpy.broadcast_to, transposes")
structural("SUM", "reduce", doc="sum over the middle axis of (outer, n, inner)")
structural("PROD", "reduce", doc="product over the middle axis of (outer, n, inner)")
structural("AMAX", "reduce", doc="maximum over the middle axis; first maximum wins")
structural("AMIN", "reduce", doc="minimum over the middle axis; first minimum wins")
structural("CUMSUM", "cumulative", doc="running sum along the middle axis of (outer, n, inner)")
structural("CUMPROD", "cumulative",
           doc="running product along the middle axis of (outer, n, inner)")
structural("DOT", "dot", b="node", doc="Σ x_j y_j of two vectors")
structural("WHERE", "where", b="node", node_params=(1, 1, 1),
           doc="cond ? x : y, cond (a constant node) in the parameters")
structural("CONCAT", "concat", node_params=(5, -4, 3),
           doc="parts copied into place: concatenate, stack")
structural("MATMUL", "matmul", b="node", doc="C = op(A) op(B) per batch (dgemm/dgemv)")
structural("LU", "lu", doc="hidden: LU factors and pivots; its adjoint slot holds Ā")
structural("SOLVE", "solve", b="node", doc="X = A⁻¹ B from an LU node (dtrsm)")
structural("DET", "det", doc="det A from an LU node")
structural("LOGDET", "det", doc="log |det A| from an LU node")
structural("NORM", "norm", doc="‖x‖₂ along the middle axis of (outer, n, inner) (dnrm2)")
structural("CALLBACK", "callback", node_params=(3, -2, 1),
           doc="a Python rule (custom_vjp, custom_jvp): value, adjoints and tangents")


# ---------------------------------------------------------------------------
# derived partial ops: ∂f/∂x_j of each op as an op of its own
# ---------------------------------------------------------------------------
#
# Nested differentiation (grad of grad, Hessians) records the reverse sweep on the
# tape, so each local partial must itself be a node. A block's ``nested`` gives its
# partials written with fastape ops, one Python expression per operand in x, y, k and
# z (the op's value) over the public functions (``cos(x)``, ``reciprocal(y)``): then
# every order is exact, each derivative being again recorded ops. Elsewhere, where a
# partial is not a constant, the op <NAME>_D0 (and <NAME>_D1 for the second operand) computes it,
# from the same operands, with the block's second partials as its own first
# partials: the registry's second partials are what a Hessian of the op uses. A
# derived op has no partials of its own (d00 = NAN): a third derivative through
# one raises (fastape._rules), unless the op's rule there is written with ops.

_NAME = re.compile(r"\b(v|d0|d1)\b")


def _subst(expr, names):
    """expr with the names v, d0, d1 replaced by (their expressions)."""
    return _NAME.sub(lambda m: f"({names[m.group(1)]})" if m.group(1) in names
                     else m.group(1), expr)


def is_constant(expr):
    """Is a formula a constant (a literal, or the immediate k)?"""
    try:
        float(expr)
        return True
    except ValueError:
        return expr.strip() == "k"


def _derived(e):
    if e.nested:
        return []
    names = {"v": e.value}
    names["d0"] = _subst(e.d0, names)
    names["d1"] = _subst(e.d1, names)
    out = []
    seconds = ((e.d00, e.d01), (e.d01, e.d11))
    for j in range(1 if e.arity == 1 else 2):
        partial = (e.d0, e.d1)[j]
        if is_constant(partial):
            continue
        p0, p1 = (_subst(d, names) for d in seconds[j])
        out.append(Elementwise(f"{e.name}_D{j}", e.arity, e.has_k, names[f"d{j}"], p0,
                               p1 if e.arity == 2 else "0.0", "NAN", "NAN", "NAN",
                               domain=e.domain, fixed=e.fixed,
                               doc=f"∂{e.name.lower()}/∂{'xy'[j]} (derived: the nested rule)",
                               partial_of=(e.name, j)))
    return out


#: the derived partial ops, after every block (not public, no numpy callables)
DERIVED = [d for e in ELEMENTWISE for d in _derived(e)]

# ---------------------------------------------------------------------------
# derived views
# ---------------------------------------------------------------------------

def opcodes():
    """name -> opcode: leaves, unary, unary_k, binary, then structural ops. The
    grouping by kind makes each arity class a range of opcodes; the derived partial
    ops sit in their class after the blocks."""
    every = ELEMENTWISE + DERIVED
    order = list(LEAVES)
    order += [e.name for e in every if e.arity == 1 and not e.has_k]
    order += [e.name for e in every if e.has_k]
    order += [e.name for e in every if e.arity == 2]
    order += [s.name for s in STRUCTURAL]
    if len(order) != len(set(order)):
        raise ValueError("fastape registry: duplicate op names")
    if len(order) > 255:
        raise ValueError("fastape registry: opcodes are stored in one byte")
    return {name: i for i, name in enumerate(order)}


BY_NAME = {e.name: e for e in ELEMENTWISE + DERIVED} | {s.name: s for s in STRUCTURAL}
#: op name -> its derived partial op's name, per operand (None: the partial is constant)
PARTIAL_OPS = {e.name: tuple(f"{e.name}_D{j}" if f"{e.name}_D{j}" in BY_NAME else None
                             for j in range(e.arity)) for e in ELEMENTWISE}
