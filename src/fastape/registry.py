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
here and one block (parameter struct, forward and reverse kernels, recorder) in
``_structural.pxi``.
"""

from dataclasses import dataclass

#: kinds of comparison a guard re-checks (the ``Cmp`` enum of the compiled core)
COMPARISONS = ("LT", "LE", "GT", "GE", "EQ", "NE")


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


@dataclass(frozen=True)
class Structural:
    name: str
    kernel: str                  # forward/reverse kernels <kernel>_forward/_reverse
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
          doc=""):
    ELEMENTWISE.append(Elementwise(name, 1, False, value, d0, "0.0", d00, "0.0", "0.0",
                                   public, tuple(numpy), _domain(domain, 1), tuple(test),
                                   doc))


def unary_k(name, *, value, d0, d00, test, domain=(-2.0, 2.0), doc=""):
    ELEMENTWISE.append(Elementwise(name, 1, True, value, d0, "0.0", d00, "0.0", "0.0",
                                   None, (), _domain(domain, 1), tuple(test), doc))


def binary(name, *, value, d0, d1, d00, d01, d11, public=None, numpy=(),
           domain=((-2.0, 2.0), (-2.0, 2.0)), test=(), doc=""):
    ELEMENTWISE.append(Elementwise(name, 2, False, value, d0, d1, d00, d01, d11, public,
                                   tuple(numpy), _domain(domain, 2), tuple(test), doc))


def structural(name, kernel, *, b="none", node_params=(), doc=""):
    STRUCTURAL.append(Structural(name, kernel, b, tuple(node_params), doc))


# ---------------------------------------------------------------------------
# unary elementwise ops: f(x)
# ---------------------------------------------------------------------------

unary("NEG", public="negative", numpy=("numpy.negative",),
      value="-x", d0="-1.0", d00="0.0", test=("-x",), doc="-x")
unary("ABS", public="absolute", numpy=("numpy.absolute", "numpy.fabs"),
      value="fabs(x)", d0="(x > 0) - (x < 0) + 0.0", d00="0.0", domain=(0.1, 2.0),
      test=("abs(x) * (x - 3.0)",), doc="|x| (partial sign(x), 0 at 0)")
unary("EXP", public="exp", numpy=("numpy.exp",),
      value="exp(x)", d0="v", d00="v", doc="e**x")
unary("LOG", public="log", numpy=("numpy.log",),
      value="log(x)", d0="1.0 / x", d00="-d0 * d0", domain=(0.1, 3.0),
      doc="natural logarithm")
unary("LOG1P", public="log1p", numpy=("numpy.log1p",),
      value="log1p(x)", d0="1.0 / (1.0 + x)", d00="-d0 * d0", domain=(-0.9, 3.0),
      doc="log(1 + x), accurate near 0")
unary("EXPM1", public="expm1", numpy=("numpy.expm1",),
      value="expm1(x)", d0="v + 1.0", d00="v + 1.0", doc="e**x - 1, accurate near 0")
unary("SQRT", public="sqrt", numpy=("numpy.sqrt",),
      value="sqrt(x)", d0="0.5 / v", d00="-0.25 / (v * v * v)", domain=(0.1, 3.0),
      doc="square root")
unary("SQUARE", public="square", numpy=("numpy.square",),
      value="x * x", d0="2.0 * x", d00="2.0", test=("x ** 2",), doc="x**2")
unary("RECIPROCAL", public="reciprocal", numpy=("numpy.reciprocal",),
      value="1.0 / x", d0="-v * v", d00="2.0 * v * v * v", domain=(0.2, 3.0), doc="1/x")
unary("SIN", public="sin", numpy=("numpy.sin",),
      value="sin(x)", d0="cos(x)", d00="-v", domain=(-3.0, 3.0), doc="sine")
unary("COS", public="cos", numpy=("numpy.cos",),
      value="cos(x)", d0="-sin(x)", d00="-v", domain=(-3.0, 3.0), doc="cosine")
unary("TAN", public="tan", numpy=("numpy.tan",),
      value="tan(x)", d0="1.0 + v * v", d00="2.0 * v * d0", domain=(-1.2, 1.2),
      doc="tangent")
unary("ARCSIN", public="arcsin", numpy=("numpy.arcsin",),
      value="asin(x)", d0="1.0 / sqrt(1.0 - x * x)", d00="x * d0 * d0 * d0",
      domain=(-0.9, 0.9), doc="inverse sine")
unary("ARCCOS", public="arccos", numpy=("numpy.arccos",),
      value="acos(x)", d0="-1.0 / sqrt(1.0 - x * x)", d00="x * d0 * d0 * d0",
      domain=(-0.9, 0.9), doc="inverse cosine")
unary("ARCTAN", public="arctan", numpy=("numpy.arctan",),
      value="atan(x)", d0="1.0 / (1.0 + x * x)", d00="-2.0 * x * d0 * d0",
      domain=(-3.0, 3.0), doc="inverse tangent")
unary("SINH", public="sinh", numpy=("numpy.sinh",),
      value="sinh(x)", d0="cosh(x)", d00="v", doc="hyperbolic sine")
unary("COSH", public="cosh", numpy=("numpy.cosh",),
      value="cosh(x)", d0="sinh(x)", d00="v", doc="hyperbolic cosine")
unary("TANH", public="tanh", numpy=("numpy.tanh",),
      value="tanh(x)", d0="1.0 - v * v", d00="-2.0 * v * d0", doc="hyperbolic tangent")
unary("SIGMOID", public="sigmoid", numpy=("scipy.special.expit",),
      value="_sigmoid(x)", d0="v * (1.0 - v)", d00="d0 * (1.0 - 2.0 * v)",
      domain=(-30.0, 30.0), doc="logistic function 1/(1 + e**-x), computed without overflow")
unary("SOFTPLUS", public="softplus",
      # log(1 + e^x) without overflow
      value="(x if x > 0 else 0.0) + log1p(exp(-fabs(x)))", d0="_sigmoid(x)",
      d00="d0 * (1.0 - d0)", domain=(-30.0, 30.0),
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
unary_k("DIV_K", value="x / k", d0="1.0 / k", d00="0.0", test=("x / 3.0",), doc="x / k")
unary_k("RDIV_K", value="k / x", d0="-v / x", d00="-2.0 * d0 / x", domain=(0.2, 3.0),
        test=("3.0 / x",), doc="k / x")
unary_k("POW_K", value="pow(x, k)", domain=(0.1, 3.0),
        d0="0.0 if k == 0.0 else k * pow(x, k - 1.0)",
        d00="0.0 if k == 0.0 or k == 1.0 else k * (k - 1.0) * pow(x, k - 2.0)",
        test=("x ** 3.5", "x ** 0 + x", "x ** 1.0 * x"), doc="x ** k (x ** 2 records SQUARE)")
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
       test=("x * y",), doc="x1 * x2")
binary("DIV", public="divide", numpy=("numpy.true_divide",),
       value="x / y", d0="1.0 / y", d1="-v / y", d00="0.0", d01="-d0 * d0",
       d11="-2.0 * d1 / y", domain=((-2.0, 2.0), (0.3, 3.0)), test=("x / y",),
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
# structural ops (kernels in _structural.pxi) and dense linear algebra (_linalg.pxi)
# ---------------------------------------------------------------------------

structural("GATHER1", "gather1", b="pool", doc="scalar x.flat[k], k an immediate")
structural("GATHER", "gather", doc="x.flat[idx] for an index array: indexing, transpose")
structural("STRIDED", "strided", doc="x.flat[start + j*step]: indexing by a progression")
structural("BROADCAST", "broadcast", doc="numpy.broadcast_to(x, shape)")
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
structural("NORM", "norm", doc="‖x‖₂ of all elements (dnrm2)")


# ---------------------------------------------------------------------------
# derived views
# ---------------------------------------------------------------------------

def opcodes():
    """name -> opcode: leaves, unary, unary_k, binary, then structural ops. The
    grouping by kind makes each arity class a range of opcodes."""
    order = list(LEAVES)
    order += [e.name for e in ELEMENTWISE if e.arity == 1 and not e.has_k]
    order += [e.name for e in ELEMENTWISE if e.has_k]
    order += [e.name for e in ELEMENTWISE if e.arity == 2]
    order += [s.name for s in STRUCTURAL]
    if len(order) != len(set(order)):
        raise ValueError("fastape registry: duplicate op names")
    if len(order) > 255:
        raise ValueError("fastape registry: opcodes are stored in one byte")
    return {name: i for i, name in enumerate(order)}


BY_NAME = {e.name: e for e in ELEMENTWISE} | {s.name: s for s in STRUCTURAL}
