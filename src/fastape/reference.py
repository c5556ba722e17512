"""Pure-Python reference implementation of fastape: the oracle.

This module runs the same algorithm as the compiled core over plain Python
lists: a Wengert tape of parallel lists (opcode, first parent, second parent,
immediate constant, value), a forward sweep that evaluates it in tape order and
a reverse sweep that accumulates adjoints ("multipliers") in reverse tape order.
It is the oracle of the test suite and the "pure Python" baseline of the
benchmarks, so it favours plain, readable code over cleverness.

The op table ``OPS`` holds, keyed by name, one formula for every elementwise op
of fastape's op registry (``fastape/registry.py``), written independently of the
registry's formulas with the same value and local partials and the same
conventions:

* ties of ``maximum``/``minimum`` split the multiplier 0.5/0.5;
* ``abs``, ``sign`` and ``relu`` have partial 0 at 0; ``sign``, ``floor`` and
  ``round`` (half to even, as ``np.round``) have partial 0 everywhere;
* ``POW_K`` with k = 0 has partial 0; the partial of ``RPOW_K``/``POW`` with
  respect to the exponent is 0 where the value is 0;
* math follows C's libm and IEEE 754 rather than Python's ``math`` module:
  ``log(0) = -inf``, ``log(-1) = nan``, ``exp(1000) = inf``, ``1/0 = inf``, …
  instead of ``ValueError``/``OverflowError``/``ZeroDivisionError``.

The zero-multiplier rule: in the reverse sweep a node whose adjoint is exactly
0.0 is skipped entirely, so it contributes nothing to its parents even through
an infinite or NaN partial (no ``0 * inf = nan``). This is what keeps, e.g.,
``sqrt(x) * 0.0`` differentiable at x = 0.

Example::

    from fastape import reference as R

    with R.Tape() as t:
        x = t.var(0.5)
        y = R.exp(x) * R.sin(x) + x**2
        dy_dx = t.gradient(y, x)

    R.grad(lambda x, y: R.logaddexp(x, y) * y, argnums=(0, 1))(1.0, 2.0)
"""

import builtins
import functools
import math
import numbers

try:  # the package is optional: this file is also loaded standalone
    from fastape.errors import TapeError
except ImportError:  # pragma: no cover - depends on the environment

    class TapeError(RuntimeError):
        """Misuse of a tape, e.g. mixing variables of two different tapes."""


try:
    import numpy as _np
except ImportError:  # pragma: no cover - numpy is a dependency of fastape
    _np = None

__all__ = [  # noqa: F822 - the elementwise functions are made from the registry
    "OPS", "OP_NAMES", "OPCODES", "Tape", "Var", "TapeError", "grad", "value_and_grad",
    "abs_", "copy",
    "exp", "log", "log1p", "expm1", "sqrt", "square", "reciprocal", "sin", "cos", "tan",
    "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "sigmoid", "softplus", "relu",
    "sign", "floor", "round", "absolute", "negative", "arctan2",
    "logaddexp", "maximum", "minimum", "power", "add", "subtract", "multiply", "divide",
]

INF = math.inf
NAN = math.nan
LN2 = 0.6931471805599453
_builtin_round = builtins.round


# --------------------------------------------------------------------------
# libm semantics: IEEE results instead of Python exceptions
# --------------------------------------------------------------------------

def _div(a, b):
    """``a / b`` as in C: ±inf or nan on division by zero."""
    try:
        return a / b
    except ZeroDivisionError:
        if a != a or a == 0.0:
            return NAN
        return math.copysign(INF, a) * math.copysign(1.0, b)


def _exp(x):
    try:
        return math.exp(x)
    except OverflowError:
        return INF


def _expm1(x):
    try:
        return math.expm1(x)
    except OverflowError:
        return INF


def _log(x):
    try:
        return math.log(x)
    except ValueError:  # x <= 0
        return -INF if x == 0.0 else NAN


def _log1p(x):
    try:
        return math.log1p(x)
    except ValueError:  # x <= -1
        return -INF if x == -1.0 else NAN


def _sqrt(x):
    try:
        return math.sqrt(x)
    except ValueError:  # x < 0
        return NAN


def _sin(x):
    try:
        return math.sin(x)
    except ValueError:  # ±inf
        return NAN


def _cos(x):
    try:
        return math.cos(x)
    except ValueError:
        return NAN


def _tan(x):
    try:
        return math.tan(x)
    except ValueError:
        return NAN


def _asin(x):
    try:
        return math.asin(x)
    except ValueError:  # |x| > 1
        return NAN


def _acos(x):
    try:
        return math.acos(x)
    except ValueError:
        return NAN


def _sinh(x):
    try:
        return math.sinh(x)
    except OverflowError:
        return math.copysign(INF, x)


def _cosh(x):
    try:
        return math.cosh(x)
    except OverflowError:
        return INF


def _is_odd_integer(y):
    return math.isfinite(y) and y == math.floor(y) and math.fmod(y, 2.0) != 0.0


def _pow(x, y):
    """C's ``pow(x, y)``: overflow gives ±inf, a pole ±inf, a domain error nan."""
    try:
        return math.pow(x, y)
    except OverflowError:
        return -INF if x < 0.0 and _is_odd_integer(y) else INF
    except ValueError:
        if x == 0.0:  # 0 ** negative: pole
            return math.copysign(INF, x) if _is_odd_integer(y) else INF
        return NAN  # negative base, non-integer exponent


def _floor(x):
    if x == 0.0 or not math.isfinite(x):
        return x  # keeps -0.0, ±inf and nan, as C's floor does
    return float(math.floor(x))


def _sigmoid(x):
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


# --------------------------------------------------------------------------
# the op table: f(x, y, k) -> (value, d0, d1), d0 = ∂f/∂x, d1 = ∂f/∂y
# (same order and formulas as ``value_and_partials`` in _ops.pxd)
# --------------------------------------------------------------------------

# unary: f(x)

def _op_neg(x, y, k):
    return -x, -1.0, 0.0


def _op_abs(x, y, k):
    return (math.fabs(x),
            1.0 if x > 0 else (-1.0 if x < 0 else 0.0), 0.0)


def _op_exp(x, y, k):
    v = _exp(x)
    return v, v, 0.0


def _op_log(x, y, k):
    return _log(x), _div(1.0, x), 0.0


def _op_log1p(x, y, k):
    return _log1p(x), _div(1.0, 1.0 + x), 0.0


def _op_expm1(x, y, k):
    v = _expm1(x)
    return v, v + 1.0, 0.0


def _op_sqrt(x, y, k):
    v = _sqrt(x)
    return v, _div(0.5, v), 0.0


def _op_square(x, y, k):
    return x * x, 2.0 * x, 0.0


def _op_reciprocal(x, y, k):
    v = _div(1.0, x)
    return v, -v * v, 0.0


def _op_sin(x, y, k):
    return _sin(x), _cos(x), 0.0


def _op_cos(x, y, k):
    return _cos(x), -_sin(x), 0.0


def _op_tan(x, y, k):
    v = _tan(x)
    return v, 1.0 + v * v, 0.0


def _op_arcsin(x, y, k):
    return _asin(x), _div(1.0, _sqrt(1.0 - x * x)), 0.0


def _op_arccos(x, y, k):
    return _acos(x), _div(-1.0, _sqrt(1.0 - x * x)), 0.0


def _op_arctan(x, y, k):
    return math.atan(x), 1.0 / (1.0 + x * x), 0.0


def _op_sinh(x, y, k):
    return _sinh(x), _cosh(x), 0.0


def _op_cosh(x, y, k):
    return _cosh(x), _sinh(x), 0.0


def _op_tanh(x, y, k):
    v = math.tanh(x)
    return v, 1.0 - v * v, 0.0


def _op_sigmoid(x, y, k):
    v = _sigmoid(x)
    return v, v * (1.0 - v), 0.0


def _op_softplus(x, y, k):
    # log(1 + e^x) without overflow
    return ((x if x > 0 else 0.0) + math.log1p(math.exp(-math.fabs(x))),
            _sigmoid(x), 0.0)


def _op_relu(x, y, k):
    return (x if x > 0 or x != x else 0.0,  # nan stays nan, as numpy.maximum(x, 0)
            1.0 if x > 0 else 0.0, 0.0)


def _op_sign(x, y, k):
    return (x if x != x else (1.0 if x > 0 else (-1.0 if x < 0 else 0.0)),
            0.0, 0.0)


def _op_floor(x, y, k):
    return _floor(x), 0.0, 0.0


def _op_round(x, y, k):
    return _builtin_round(x, 0), 0.0, 0.0  # half to even, like nearbyint


def _op_copy(x, y, k):
    return x, 1.0, 0.0


# unary with an immediate constant: f(x; k)

def _op_add_k(x, y, k):
    return x + k, 1.0, 0.0


def _op_mul_k(x, y, k):
    return x * k, k, 0.0


def _op_rsub_k(x, y, k):
    return k - x, -1.0, 0.0


def _op_div_k(x, y, k):
    return _div(x, k), _div(1.0, k), 0.0


def _op_rdiv_k(x, y, k):
    v = _div(k, x)
    return v, _div(-v, x), 0.0


def _op_pow_k(x, y, k):
    return (_pow(x, k),
            0.0 if k == 0.0 else k * _pow(x, k - 1.0), 0.0)


def _op_rpow_k(x, y, k):
    v = _pow(k, x)
    # d/dx k^x = k^x log k, and 0 where k^x = 0 (k = 0, x > 0)
    return v, 0.0 if v == 0.0 else v * _log(k), 0.0


# binary: f(x, y)

def _op_add(x, y, k):
    return x + y, 1.0, 1.0


def _op_sub(x, y, k):
    return x - y, 1.0, -1.0


def _op_mul(x, y, k):
    return x * y, y, x


def _op_div(x, y, k):
    v = _div(x, y)
    return v, _div(1.0, y), _div(-v, y)


def _op_pow(x, y, k):
    v = _pow(x, y)
    return (v,
            0.0 if y == 0.0 else y * _pow(x, y - 1.0),
            0.0 if v == 0.0 else v * _log(x))


def _op_arctan2(x, y, k):
    r = x * x + y * y
    return math.atan2(x, y), _div(y, r), _div(-x, r)


def _op_logaddexp(x, y, k):
    if x == y:  # also covers x = y = ±inf
        return x + LN2, 0.5, 0.5
    v = (x if x > y else y) + math.log1p(math.exp(-math.fabs(x - y)))
    # partials sigmoid(x - y), sigmoid(y - x): finite even where v is infinite
    return v, _op_sigmoid(x - y, 0.0, 0.0)[0], _op_sigmoid(y - x, 0.0, 0.0)[0]


def _op_maximum(x, y, k):
    if x > y:
        return x, 1.0, 0.0
    if x < y:
        return y, 0.0, 1.0
    return (x if x == y else x + y), 0.5, 0.5  # x + y: nan if either is nan


def _op_minimum(x, y, k):
    if x < y:
        return x, 1.0, 0.0
    if x > y:
        return y, 0.0, 1.0
    return (x if x == y else x + y), 0.5, 0.5


#: elementwise op name (as ``fastape._ops.Op``) -> f(x, y, k) -> (value, d0, d1)
OPS = {
    # unary
    "NEG": _op_neg,
    "ABS": _op_abs,
    "EXP": _op_exp,
    "LOG": _op_log,
    "LOG1P": _op_log1p,
    "EXPM1": _op_expm1,
    "SQRT": _op_sqrt,
    "SQUARE": _op_square,
    "RECIPROCAL": _op_reciprocal,
    "SIN": _op_sin,
    "COS": _op_cos,
    "TAN": _op_tan,
    "ARCSIN": _op_arcsin,
    "ARCCOS": _op_arccos,
    "ARCTAN": _op_arctan,
    "SINH": _op_sinh,
    "COSH": _op_cosh,
    "TANH": _op_tanh,
    "SIGMOID": _op_sigmoid,
    "SOFTPLUS": _op_softplus,
    "RELU": _op_relu,
    "SIGN": _op_sign,
    "FLOOR": _op_floor,
    "ROUND": _op_round,
    "COPY": _op_copy,
    # unary with immediate k
    "ADD_K": _op_add_k,
    "MUL_K": _op_mul_k,
    "RSUB_K": _op_rsub_k,
    "DIV_K": _op_div_k,
    "RDIV_K": _op_rdiv_k,
    "POW_K": _op_pow_k,
    "RPOW_K": _op_rpow_k,
    # binary
    "ADD": _op_add,
    "SUB": _op_sub,
    "MUL": _op_mul,
    "DIV": _op_div,
    "POW": _op_pow,
    "ARCTAN2": _op_arctan2,
    "LOGADDEXP": _op_logaddexp,
    "MAXIMUM": _op_maximum,
    "MINIMUM": _op_minimum,
}


def _load_registry():
    """fastape's op registry (pure Python), also when this file is loaded standalone."""
    try:
        from fastape import registry
        return registry
    except ImportError:  # pragma: no cover - depends on how this file is loaded
        import importlib.util
        import pathlib
        path = pathlib.Path(__file__).with_name("registry.py")
        spec = importlib.util.spec_from_file_location("_fastape_registry", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod


_REGISTRY = _load_registry()
#: op name -> opcode, the compiled core's numbering, taken from the registry by name
OPCODES = {name: code for name, code in _REGISTRY.opcodes().items()
           if name in OPS or name in _REGISTRY.LEAVES}
OP_NAMES = tuple(sorted(OPCODES, key=OPCODES.get))
_FUNCS = [None] * (max(OPCODES.values()) + 1)   # opcode -> op function (None: leaves)
for _name, _f in OPS.items():
    _FUNCS[OPCODES[_name]] = _f

# the opcodes this module records by name
INPUT, CONSTANT = OPCODES["INPUT"], OPCODES["CONSTANT"]
NEG, ABS, SQUARE = OPCODES["NEG"], OPCODES["ABS"], OPCODES["SQUARE"]
ADD_K, MUL_K, RSUB_K, DIV_K = (OPCODES[n] for n in ("ADD_K", "MUL_K", "RSUB_K", "DIV_K"))
RDIV_K, POW_K, RPOW_K = OPCODES["RDIV_K"], OPCODES["POW_K"], OPCODES["RPOW_K"]
ADD, SUB, MUL, DIV, POW = (OPCODES[n] for n in ("ADD", "SUB", "MUL", "DIV", "POW"))


# --------------------------------------------------------------------------
# the tape
# --------------------------------------------------------------------------

def _mixed_tapes():
    return TapeError("cannot combine variables of two different tapes")


class Tape:
    """A Wengert list: node i is ``op[i]`` applied to nodes ``a[i]``, ``b[i]``
    (-1: no such parent) with immediate ``k[i]``; its value is ``val[i]``.

    Nodes are recorded eagerly (values computed as the program runs), so they
    are in topological order: parents always precede their children.
    """

    def __init__(self):
        self.op = []
        self.a = []
        self.b = []
        self.k = []
        self.val = []
        self._adj = None

    def __len__(self):
        return len(self.op)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def __repr__(self):
        return f"<reference.Tape with {len(self.op)} nodes>"

    # recording ------------------------------------------------------------

    def _push(self, o, a, b, k, v):
        self.op.append(o)
        self.a.append(a)
        self.b.append(b)
        self.k.append(k)
        self.val.append(v)
        return Var(self, len(self.op) - 1)

    def _record(self, o, a, b=-1, k=0.0):
        """Append elementwise op ``o`` of nodes a (and b) and return its Var."""
        val = self.val
        v = _FUNCS[o](val[a], val[b] if b >= 0 else 0.0, k)[0]
        return self._push(o, a, b, k, v)

    def _check(self, v):
        if not isinstance(v, Var):
            raise TypeError(f"expected a Var, got {type(v).__name__}")
        if v.tape is not self:
            raise TapeError("this variable belongs to another tape")

    def var(self, x):
        """A new independent variable (INPUT leaf) with value ``x``."""
        return self._push(INPUT, -1, -1, 0.0, float(x))

    def constant(self, x):
        """A new CONSTANT leaf with value ``x``."""
        return self._push(CONSTANT, -1, -1, 0.0, float(x))

    def set_value(self, v, x):
        """Change the value of leaf ``v``; call ``forward()`` to propagate it."""
        self._check(v)
        if self.op[v.id] > CONSTANT:
            raise TapeError("only leaves (inputs and constants) can be set")
        self.val[v.id] = float(x)

    # sweeps ---------------------------------------------------------------

    def forward(self):
        """Recompute every value from the leaves, in tape order; return ``val``."""
        op, a, b, k, val = self.op, self.a, self.b, self.k, self.val
        funcs = _FUNCS
        for i in range(len(op)):
            o = op[i]
            if o <= CONSTANT:
                continue
            bi = b[i]
            val[i] = funcs[o](val[a[i]], val[bi] if bi >= 0 else 0.0, k[i])[0]
        return val

    def reverse(self, out_id):
        """Adjoints of all nodes for output node ``out_id`` (an int or a Var).

        adj[out] = 1; then for i descending, a node with adj[i] == 0 is skipped
        (the zero-multiplier rule), otherwise ``d0 * adj[i]`` is added to the
        first parent and ``d1 * adj[i]`` to the second.
        """
        if isinstance(out_id, Var):
            self._check(out_id)
            out_id = out_id.id
        op, a, b, k, val = self.op, self.a, self.b, self.k, self.val
        funcs = _FUNCS
        adj = [0.0] * len(op)
        adj[out_id] = 1.0
        for i in range(out_id, -1, -1):
            lam = adj[i]
            if lam == 0.0:
                continue  # a zero multiplier contributes nothing
            o = op[i]
            if o <= CONSTANT:
                continue
            ai, bi = a[i], b[i]
            if bi < 0:
                d0 = funcs[o](val[ai], 0.0, k[i])[1]
                adj[ai] += d0 * lam
            else:
                _, d0, d1 = funcs[o](val[ai], val[bi], k[i])
                adj[ai] += d0 * lam
                adj[bi] += d1 * lam
        return adj

    def gradient(self, out, inputs):
        """∂out/∂inputs as floats; ``inputs`` is a Var or a (nested) list/tuple
        of Vars and the result has the same structure. A plain-number ``out``
        does not depend on anything: its gradient is zero."""
        if isinstance(out, Var):
            self._check(out)
            self._adj = self.reverse(out.id)
        elif isinstance(out, numbers.Real):
            self._adj = [0.0] * len(self.op)
        else:
            raise TypeError(f"gradient: out must be a Var or a number, got {type(out).__name__}")
        return self._pick(inputs)

    def _pick(self, inputs):
        if isinstance(inputs, list | tuple):
            return type(inputs)(self._pick(v) for v in inputs)
        return self.adjoint(inputs)

    def adjoint(self, v):
        """Multiplier ∂out/∂v of any node ``v`` after the last ``gradient`` call."""
        self._check(v)
        if self._adj is None:
            raise TapeError("adjoint: call gradient() first")
        return self._adj[v.id] if v.id < len(self._adj) else 0.0


# --------------------------------------------------------------------------
# variables
# --------------------------------------------------------------------------

def _value_of(x):
    if isinstance(x, Var):
        return x.tape.val[x.id]
    if isinstance(x, numbers.Real):
        return float(x)
    return NotImplemented


class Var:
    """A node of a ``Tape``; arithmetic on it records new nodes."""

    __slots__ = ("tape", "id")
    __array_ufunc__ = None  # numpy defers to our reflected operators
    __hash__ = None  # == compares values

    def __init__(self, tape, id):
        self.tape = tape
        self.id = id

    @property
    def value(self):
        return self.tape.val[self.id]

    def __repr__(self):
        return f"Var(id={self.id}, value={self.value!r})"

    def _binary(self, o, other):
        if other.tape is not self.tape:
            raise _mixed_tapes()
        return self.tape._record(o, self.id, other.id)

    def _imm(self, o, k):
        return self.tape._record(o, self.id, -1, float(k))

    def __add__(self, other):
        if isinstance(other, Var):
            return self._binary(ADD, other)
        if isinstance(other, numbers.Real):
            return self._imm(ADD_K, other)
        return NotImplemented

    def __radd__(self, other):
        if isinstance(other, numbers.Real):
            return self._imm(ADD_K, other)
        return NotImplemented

    def __sub__(self, other):
        if isinstance(other, Var):
            return self._binary(SUB, other)
        if isinstance(other, numbers.Real):
            return self._imm(ADD_K, -float(other))
        return NotImplemented

    def __rsub__(self, other):
        if isinstance(other, numbers.Real):
            return self._imm(RSUB_K, other)
        return NotImplemented

    def __mul__(self, other):
        if isinstance(other, Var):
            return self._binary(MUL, other)
        if isinstance(other, numbers.Real):
            return self._imm(MUL_K, other)
        return NotImplemented

    def __rmul__(self, other):
        if isinstance(other, numbers.Real):
            return self._imm(MUL_K, other)
        return NotImplemented

    def __truediv__(self, other):
        if isinstance(other, Var):
            return self._binary(DIV, other)
        if isinstance(other, numbers.Real):
            return self._imm(DIV_K, other)
        return NotImplemented

    def __rtruediv__(self, other):
        if isinstance(other, numbers.Real):
            return self._imm(RDIV_K, other)
        return NotImplemented

    def __pow__(self, other, modulo=None):
        if modulo is not None:
            return NotImplemented
        if isinstance(other, Var):
            return self._binary(POW, other)
        if isinstance(other, numbers.Real):
            if other == 2:      # as the compiled core: x ** 2 is SQUARE (x · x)
                return self.tape._record(SQUARE, self.id)
            return self._imm(POW_K, other)
        return NotImplemented

    def __rpow__(self, other):
        if isinstance(other, numbers.Real):
            return self._imm(RPOW_K, other)
        return NotImplemented

    def __neg__(self):
        return self.tape._record(NEG, self.id)

    def __pos__(self):
        return self

    def __abs__(self):
        return self.tape._record(ABS, self.id)

    # comparisons: plain bools of the values (not recorded)

    def __lt__(self, other):
        y = _value_of(other)
        return NotImplemented if y is NotImplemented else self.value < y

    def __le__(self, other):
        y = _value_of(other)
        return NotImplemented if y is NotImplemented else self.value <= y

    def __gt__(self, other):
        y = _value_of(other)
        return NotImplemented if y is NotImplemented else self.value > y

    def __ge__(self, other):
        y = _value_of(other)
        return NotImplemented if y is NotImplemented else self.value >= y

    def __eq__(self, other):
        y = _value_of(other)
        return NotImplemented if y is NotImplemented else self.value == y

    def __ne__(self, other):
        y = _value_of(other)
        return NotImplemented if y is NotImplemented else self.value != y


# --------------------------------------------------------------------------
# numpy-style functions: a Var records a node, a plain number gives a float
# --------------------------------------------------------------------------

def _unary(o, x):
    if isinstance(x, Var):
        return x.tape._record(o, x.id)
    return _FUNCS[o](float(x), 0.0, 0.0)[0]


def _binary(o, x, y):
    if isinstance(x, Var):
        t = x.tape
        if isinstance(y, Var):
            if y.tape is not t:
                raise _mixed_tapes()
            return t._record(o, x.id, y.id)
        return t._record(o, x.id, t.constant(y).id)
    if isinstance(y, Var):
        t = y.tape
        return t._record(o, t.constant(x).id, y.id)
    return _FUNCS[o](float(x), float(y), 0.0)[0]


def _make(e):
    o = OPCODES[e.name]
    if e.arity == 1:
        def f(x):
            return _unary(o, x)
    else:
        def f(x, y):
            return _binary(o, x, y)
    f.__name__ = f.__qualname__ = e.public
    f.__doc__ = e.doc
    return f


# one function per public elementwise op of the registry (fastape.<name> has the same)
for _e in _REGISTRY.ELEMENTWISE:
    if _e.public and _e.name in OPS:
        globals()[_e.public] = _make(_e)
abs_ = absolute  # noqa: F821 - made by the loop above


def copy(x):
    """identity (a new node with the value of x)"""
    return _unary(OPCODES["COPY"], x)


# --------------------------------------------------------------------------
# function transformations
# --------------------------------------------------------------------------

def _is_ndarray(x):
    return _np is not None and isinstance(x, _np.ndarray)


def _lift(tape, x):
    """Input Var(s) for argument ``x``: a number, a list/tuple of numbers or a
    0-d/1-d numpy array. Returns (what f receives, what to differentiate)."""
    if _is_ndarray(x):
        if x.ndim == 0:
            v = tape.var(float(x))
            return v, v
        if x.ndim != 1:
            raise ValueError(f"grad: only 0-d and 1-d arrays are supported, got ndim={x.ndim}")
        vs = [tape.var(float(xi)) for xi in x]
        return vs, vs
    if isinstance(x, list | tuple):
        vs = [tape.var(xi) for xi in x]
        return (tuple(vs) if isinstance(x, tuple) else vs), vs
    if isinstance(x, numbers.Real):
        v = tape.var(x)
        return v, v
    raise TypeError(f"grad: cannot differentiate with respect to a {type(x).__name__}")


def value_and_grad(f, argnums=0):
    """Return a function computing ``(f(*args), ∂f/∂args[argnums])``.

    Differentiated arguments may be numbers (gradient: a float), lists or
    tuples of numbers (gradient: a list of floats) or 1-d numpy arrays
    (gradient: an array). ``argnums`` is an int or a tuple of ints; for a tuple
    the gradient is a tuple. ``f`` must return a scalar (a Var or a number).
    """
    single = isinstance(argnums, int)
    nums = (argnums,) if single else tuple(argnums)

    @functools.wraps(f)
    def wrapped(*args, **kwargs):
        tape = Tape()
        args = list(args)
        wrt = []
        for i in nums:
            if not -len(args) <= i < len(args):
                raise IndexError(f"argnums {i} out of range for {len(args)} positional arguments")
            original = args[i]
            args[i], vs = _lift(tape, original)
            wrt.append((original, vs))
        out = f(*args, **kwargs)
        if isinstance(out, Var):
            value = out.value
        elif isinstance(out, numbers.Real):
            value = float(out)
        else:
            raise TypeError(f"grad: f must return a scalar, got {type(out).__name__}")
        grads = []
        for original, vs in wrt:
            g = tape.gradient(out, vs)
            grads.append(_np.array(g, dtype=float) if _is_ndarray(original) and original.ndim
                         else g)
        return value, (grads[0] if single else tuple(grads))

    return wrapped


def grad(f, argnums=0):
    """Return a function computing ∂f/∂args[argnums] (see ``value_and_grad``)."""
    vg = value_and_grad(f, argnums)

    @functools.wraps(f)
    def wrapped(*args, **kwargs):
        return vg(*args, **kwargs)[1]

    return wrapped
