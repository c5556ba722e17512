"""numpy's dispatch protocols for fastape values.

``np.sin(x)``, ``x + ndarray``, ``np.sum(x)``, ``np.where(c, x, y)`` … on a
fastape value arrive here through ``Var.__array_ufunc__`` and
``Var.__array_function__`` and are recorded on the value's tape. Anything numpy
would do that cannot be recorded raises a TypeError that says what to write
instead; nothing silently drops the tape.
"""

import importlib
import sys
import threading

import numpy as np

from fastape import (
    _arrays,
    _complex,
    _complex_functions,
    _einsum,
    _fft,
    _special,
    _stats,
    _tape,
    _ufuncs,
    registry,
)
from fastape import _functions as F
from fastape import linalg as _linalg
from fastape._complex import Complex, is_complex
from fastape._ops import Cmp, Op
from fastape._tape import Var

OPCODE = {name: int(getattr(Op, name)) for name in registry.opcodes()}


def _resolve(dotted):
    """The object a dotted name such as ``numpy.sin`` or ``scipy.special.erf`` names."""
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


#: ufunc -> registry block, for every numpy callable the registry names. scipy's
#: ufuncs join the table the first time a scipy ufunc reaches a fastape value
#: (importing scipy.special on every fastape import would cost ~0.1 s).
UFUNCS = {}
NAMES = {}          # callable -> its dotted name, for error messages
_SCIPY_PENDING = []
for _e in registry.ELEMENTWISE:
    for _dotted in _e.numpy:
        if _dotted.startswith("numpy."):
            UFUNCS[_resolve(_dotted)] = _e
            NAMES[_resolve(_dotted)] = _dotted
        else:
            _SCIPY_PENDING.append((_dotted, _e))
#: the same table by opcode, read by Var.__array_ufunc__ before it calls array_ufunc;
#: without the ops that refuse a value for an operand (registry ``fixed``): their
#: check is here
_FAST = _tape.ufunc_ops()


def _publish():
    _FAST.update({u: OPCODE[b.name] for u, b in UFUNCS.items() if not b.fixed})


_publish()


def _lookup(ufunc):
    e = UFUNCS.get(ufunc)
    if e is None and _SCIPY_PENDING and "scipy.special" in sys.modules:
        for dotted, block in _SCIPY_PENDING:
            UFUNCS[_resolve(dotted)] = block
            NAMES[_resolve(dotted)] = dotted
        _SCIPY_PENDING.clear()
        _publish()
        e = UFUNCS.get(ufunc)
    return e


def display_name(func):
    """``numpy.linalg.svd``, ``scipy.special.gammaln``: the module path and the name."""
    name = NAMES.get(func)
    if name is not None:
        return name
    module = getattr(func, "__module__", None)
    fname = getattr(func, "__name__", repr(func))
    if module is None and isinstance(func, np.ufunc):
        special = sys.modules.get("scipy.special")
        module = "scipy.special" if getattr(special, fname, None) is func else "numpy"
    return f"{module}.{fname}" if module else fname


# scipy.special ufuncs that are no single registry op (by name; checked to be scipy's)
_SPECIAL_UFUNCS = {"betainc": _special.betainc}

# ufuncs whose result is not differentiable: computed on the values
COMPARE = {np.less: Cmp.LT, np.less_equal: Cmp.LE, np.greater: Cmp.GT,
           np.greater_equal: Cmp.GE, np.equal: Cmp.EQ, np.not_equal: Cmp.NE}
SWAPPED = {Cmp.LT: Cmp.GT, Cmp.LE: Cmp.GE, Cmp.GT: Cmp.LT, Cmp.GE: Cmp.LE,
           Cmp.EQ: Cmp.EQ, Cmp.NE: Cmp.NE}
# predicates of the values: not differentiable, but a compiled function must re-check
# them (a guard), or it would replay the branch they chose when recorded
PREDICATES = {np.isnan: Cmp.ISNAN, np.isinf: Cmp.ISINF, np.isfinite: Cmp.ISFINITE,
              np.signbit: Cmp.SIGNBIT}
REDUCE = {np.add: F.sum, np.multiply: F.prod, np.maximum: F.max, np.minimum: F.min}


def _has_complex(args):
    """Does a complex operand sit among args (or in a list or tuple there)? On every
    numpy call of a fastape value: the common types are ruled out first."""
    for a in args:
        t = type(a)
        if t is Var or t is float or t is int or t is str or a is None:
            continue
        if t is list or t is tuple:
            if _has_complex(a):
                return True
        elif t is np.ndarray:
            if a.dtype.kind == "c":
                return True
        elif t is Complex or is_complex(a):
            return True
    return False


def array_ufunc(ufunc, method, inputs, kwargs):
    if _has_complex(inputs):
        return _complex.array_ufunc(ufunc, method, inputs, kwargs)
    name = display_name(ufunc)
    if kwargs.get("out") is not None:
        raise TypeError(f"{name}: out= cannot write into or from a fastape value; "
                        "use the returned value")
    if kwargs.get("where", True) is not True:
        raise TypeError(f"{name}: where= is not supported on fastape values; "
                        "use fastape.where(condition, x, y)")
    dtype = kwargs.get("dtype")
    if dtype is not None and np.dtype(dtype) != np.float64:
        raise TypeError(f"{name}: fastape values are float64; dtype={dtype} is not supported")
    if method == "__call__":
        e = _lookup(ufunc)
        if e is not None:
            if e.fixed:         # refuses a value for the operand it does not differentiate
                return _ufuncs.ELEMENTWISE[e.public](*inputs)
            code = OPCODE[e.name]
            if e.arity == 2:
                return _tape.binary(code, inputs[0], inputs[1])
            return _tape.unary(code, inputs[0])
        if ufunc is np.positive or ufunc is np.conjugate:
            return inputs[0]
        if ufunc in COMPARE:
            x, y = inputs
            if type(x) is Var:
                return _tape.compare(x, y, COMPARE[ufunc])
            return _tape.compare(y, x, SWAPPED[COMPARE[ufunc]])
        if ufunc in PREDICATES and len(inputs) == 1:
            return _tape.compare(inputs[0], None, PREDICATES[ufunc])
        if ufunc is np.matmul:
            return F.matmul(inputs[0], inputs[1])
        special = _SPECIAL_UFUNCS.get(getattr(ufunc, "__name__", None))
        if special is not None and ufunc is getattr(sys.modules.get("scipy.special"),
                                                    ufunc.__name__, None):
            return special(*inputs)
    elif method == "reduce" and ufunc in REDUCE and len(inputs) == 1:
        if kwargs.get("initial", np._NoValue) is not np._NoValue:
            raise TypeError(f"{name}.reduce: initial= is not supported on fastape values")
        return REDUCE[ufunc](inputs[0], axis=kwargs.get("axis", 0),
                             keepdims=kwargs.get("keepdims", False))
    raise TypeError(f"{name}{'' if method == '__call__' else '.' + method} is not supported "
                    "on fastape values")


def _no(kwargs, name, **allowed):
    for k, v in kwargs.items():
        if k in allowed:
            continue
        if k == "out" and v is None or k == "dtype" and v in (None, float, np.float64):
            continue
        if k == "where" and v is True or k == "initial" and v is np._NoValue:
            continue
        if k == "order" and v in ("C", "A", "K"):
            continue
        raise TypeError(f"numpy.{name}: argument {k}={v!r} is not supported on fastape values")


def _reduction(fn, name):
    def f(a, axis=None, *args, keepdims=False, **kwargs):
        if args:
            raise TypeError(f"numpy.{name}: pass dtype/out as keywords")
        _no(kwargs, name)
        return fn(a, axis=axis, keepdims=keepdims)
    return f


def _cumulative(fn, name):
    def f(a, axis=None, dtype=None, out=None):
        _no({"dtype": dtype, "out": out}, name)
        return fn(a, axis=axis)
    return f


def _round(a, decimals=0, out=None):
    if decimals != 0 or out is not None:
        raise TypeError("numpy.round: only decimals=0 and out=None are supported on fastape values")
    return F.round(a)


def _reshape(a, *args, **kwargs):
    shape = args[0] if args else kwargs.pop("shape", kwargs.pop("newshape", None))
    _no(kwargs, "reshape")
    return F.reshape(a, shape)


def _concatenate(arrays, axis=0, **kwargs):
    _no(kwargs, "concatenate", casting=True)
    return F.concatenate(arrays, axis=axis)


def _stack(arrays, axis=0, **kwargs):
    _no(kwargs, "stack", casting=True)
    return F.stack(arrays, axis=axis)


def _dot(a, b, out=None):
    if out is not None:
        raise TypeError("numpy.dot: out= cannot write into a fastape value")
    return F.dot(a, b)


def _transpose(a, axes=None):
    return F.transpose(a, axes)


def _like(fill):
    def f(a, dtype=None, *args, **kwargs):
        return np.full(np.shape(a), fill, dtype=dtype or np.float64)
    return f


FUNCTIONS = {
    np.sum: _reduction(F.sum, "sum"), np.mean: _reduction(F.mean, "mean"),
    np.prod: _reduction(F.prod, "prod"), np.max: _reduction(F.max, "max"),
    np.amax: _reduction(F.max, "amax"), np.min: _reduction(F.min, "min"),
    np.amin: _reduction(F.min, "amin"), np.dot: _dot, np.where: F.where,
    np.cumsum: _cumulative(F.cumsum, "cumsum"), np.cumprod: _cumulative(F.cumprod, "cumprod"),
    np.reshape: _reshape,
    np.transpose: _transpose, np.concatenate: _concatenate, np.stack: _stack,
    np.round: _round, np.around: _round,
    np.shape: lambda a: a.shape, np.ndim: lambda a: len(a.shape),
    np.size: lambda a, axis=None: a.size if axis is None else a.shape[axis],
    np.zeros_like: _like(0.0), np.ones_like: _like(1.0),
}
# shapes, assembly and statistics (issue 13): numpy's signatures, numpy's names
FUNCTIONS.update({getattr(np, name): getattr(module, name)
                  for module in (_arrays, _stats, _einsum)
                  for name in module.__all__ if hasattr(np, name)})
if hasattr(np, "trapz"):                    # numpy < 2.0's name of trapezoid
    FUNCTIONS[np.trapz] = _arrays.trapezoid
# np.matmul is a ufunc (array_ufunc above); np.inner, np.outer, np.trace, np.linalg.*
FUNCTIONS.update(_linalg.NUMPY_FUNCTIONS)
# registry callables that are plain functions, not ufuncs (numpy.sinc), arrive through
# __array_function__: they go to the op's public function
FUNCTIONS.update({fn: _ufuncs.ELEMENTWISE[e.public] for fn, e in UFUNCS.items()
                  if not isinstance(fn, np.ufunc)})


# the FFT family (fastape._fft) and the complex-number functions of a real value
FUNCTIONS.update(_fft.NUMPY_FUNCTIONS)
FUNCTIONS.update({
    np.real: lambda v: v, np.imag: lambda v: np.zeros(np.shape(v)),
    np.angle: _complex_functions.FUNCTIONS[np.angle], np.real_if_close: lambda v, tol=100: v,
    np.iscomplex: lambda v: np.zeros(np.shape(v), dtype=bool),
    np.isreal: lambda v: np.ones(np.shape(v), dtype=bool),
    np.vdot: _complex_functions._real_vdot,
})

_ACTIVE = threading.local()


def array_function(func, args, kwargs):
    if _has_complex(args) or _has_complex(kwargs.values()):
        return _complex_functions.array_function(func, args, kwargs)
    impl = FUNCTIONS.get(func)
    if impl is None:
        raise TypeError(
            f"{display_name(func)} is not supported on fastape values. Supported: ufuncs "
            "(np.sin, np.exp, np.maximum, …), "
            + ", ".join(sorted({f"np.{f.__name__}" for f in FUNCTIONS}))
            + "; or read numbers with x.value")
    # An implementation hands plain arguments back to numpy; if numpy comes back here
    # for the same function, a fastape value sits in an argument that is not
    # differentiated (np.take(a, indices=v), np.quantile(a, q=v)): say so, rather than
    # recurse.
    active = getattr(_ACTIVE, "funcs", None)
    if active is None:
        active = _ACTIVE.funcs = set()
    if func in active:
        raise TypeError(f"{display_name(func)}: a fastape value was given for an argument "
                        "that is not differentiated here (indices, counts, shapes, "
                        "quantiles…); pass plain numbers there (v.value)")
    active.add(func)
    try:
        return impl(*args, **kwargs)
    finally:
        active.discard(func)
