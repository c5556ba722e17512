"""fastape's numpy-style functions, recorded on the tape of their fastape arguments.

Elementwise math (one function per registry block) comes from ``_ufuncs``;
indexing, reshaping and transposing are gathers whose index lists numpy computes
once, at recording time; reductions, ``where``, ``concatenate`` and ``stack``
are structural nodes. Every function also accepts plain numbers and arrays, and
then returns what numpy returns.
"""

import builtins
import operator
from math import prod as _prod

import numpy as np

from fastape import _tape, _ufuncs
from fastape._ops import Cmp, Op
from fastape._tape import Var
from fastape._ufuncs import *  # noqa: F403 - the elementwise functions
from fastape.errors import ShapeError, TapeError

__all__ = [  # noqa: F822 - the elementwise functions come from the registry (_ufuncs)
    *_ufuncs.__all__,
    "sum", "mean", "prod", "max", "min", "cumsum", "cumprod", "dot", "matmul", "where",
    "reshape", "transpose", "concatenate", "stack",
]


# -- shapes and axes -----------------------------------------------------------

def _axes(x, axis, name):
    nd = len(x.shape)
    if axis is None:
        return tuple(range(nd))
    if not isinstance(axis, (tuple, list)):
        axis = (axis,)
    out = []
    for a in axis:
        try:
            a = operator.index(a)
        except TypeError:
            raise TypeError(f"{name}: axis must be an integer or a tuple of them, "
                            f"got {type(a).__name__}") from None
        if not -nd <= a < nd:
            raise ShapeError(f"{name}: axis {a} is out of bounds for a value of shape {x.shape}")
        out.append(a % nd)
    if len(set(out)) != len(out):
        raise ValueError(f"{name}: repeated axis in {tuple(axis)}")
    return tuple(sorted(out))


def _shape_arg(shape, name):
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        return tuple(operator.index(d) for d in shape)
    except TypeError:
        raise TypeError(f"{name}: shape must be a tuple of integers, got {shape!r}") from None


def reshape(x, shape):
    """x with a new shape of the same size (one entry may be -1)."""
    if type(x) is not Var:
        return np.reshape(x, shape)
    shape = _shape_arg(shape, "reshape")
    unknown = [i for i, d in enumerate(shape) if d == -1]
    known = _prod(d for d in shape if d != -1)
    if len(unknown) > 1 or builtins.any(d < -1 for d in shape):
        raise ShapeError(f"reshape: invalid new shape {shape} for a value of shape {x.shape}")
    if unknown:
        if known == 0 or x.size % known:
            raise ShapeError(f"reshape: cannot reshape a value of shape {x.shape} "
                             f"(size {x.size}) into shape {shape}")
        shape = shape[:unknown[0]] + (x.size // known,) + shape[unknown[0] + 1:]
    if _prod(shape) != x.size:
        raise ShapeError(f"reshape: cannot reshape a value of shape {x.shape} (size {x.size}) "
                         f"into shape {shape}")
    if shape == x.shape:
        return x
    return _tape.copy_as(x, shape)


def transpose(x, axes=None):
    """x with its axes permuted (reversed by default); ``x.T`` is ``transpose(x)``."""
    if type(x) is not Var:
        return np.transpose(x, axes)
    nd = len(x.shape)
    if axes is None:
        axes = tuple(range(nd))[::-1]
    else:
        axes = tuple(operator.index(a) for a in axes)
        if sorted(a % nd if -nd <= a < nd else -1 for a in axes) != list(range(nd)):
            raise ShapeError(f"transpose: axes {axes} are not a permutation of the axes of a "
                             f"value of shape {x.shape}")
        axes = tuple(a % nd for a in axes)
    if axes == tuple(range(nd)):
        return x
    return _tape.permuted(x, axes)          # a strided view (BROADCAST), no index array


def getitem(x, key):
    """x[key] for integers, slices, ellipsis, newaxis, integer and boolean arrays.
    The adjoint scatter-adds into x (repeated indices accumulate)."""
    keys = key if isinstance(key, tuple) else (key,)
    if builtins.any(type(k) is Var for k in keys):
        raise TypeError("indexing with a fastape value is not differentiable; "
                        "index with k.value (a plain number or array) instead")
    if type(key) is slice and len(x.shape) == 1:
        start, stop, step = key.indices(x.shape[0])
        return _tape.strided(x, start, step, (len(range(start, stop, step)),))
    if len(keys) == len(x.shape) and builtins.all(type(k) is int for k in keys):
        flat = 0
        for k, n in zip(keys, x.shape):
            if not -n <= k < n:
                raise IndexError(f"index {k} is out of bounds for a value of shape {x.shape}")
            flat = flat * n + (k % n)
        return _tape.item(x, flat)
    idx = np.arange(x.size, dtype=np.int64).reshape(x.shape)[key]
    if np.ndim(idx) == 0:
        return _tape.item(x, int(idx))
    return _tape.gather(x, idx.reshape(-1), idx.shape)


# -- reductions ----------------------------------------------------------------

def _reduce(op, name, x, axis, keepdims):
    axes = _axes(x, axis, name)
    shape = x.shape
    if not axes:
        return x
    if builtins.any(shape[a] == 0 for a in axes) and op in (Op.AMAX, Op.AMIN):
        raise ShapeError(f"{name}: zero-size reduction over axis {axis} of a value of shape "
                         f"{shape}, which has no identity")
    r = x
    if axes == tuple(range(axes[0], axes[-1] + 1)):
        lo, hi = axes[0], axes[-1] + 1
        r = _tape.reduce(op, x, _prod(shape[:lo]), _prod(shape[lo:hi]), _prod(shape[hi:]),
                         shape[:lo] + shape[hi:])
    else:
        for a in reversed(axes):
            s = r.shape
            r = _tape.reduce(op, r, _prod(s[:a]), s[a], _prod(s[a + 1:]), s[:a] + s[a + 1:])
    if keepdims:
        r = reshape(r, tuple(1 if i in axes else d for i, d in enumerate(shape)))
    return r


def sum(x, axis=None, keepdims=False):  # noqa: A001
    """Sum over all elements or the given axis/axes."""
    if type(x) is not Var:
        return np.sum(x, axis=axis, keepdims=keepdims)
    return _reduce(Op.SUM, "sum", x, axis, keepdims)


def prod(x, axis=None, keepdims=False):
    """Product over all elements or the given axis/axes (exact partials with zeros)."""
    if type(x) is not Var:
        return np.prod(x, axis=axis, keepdims=keepdims)
    return _reduce(Op.PROD, "prod", x, axis, keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001
    """Maximum; the multiplier goes to the first maximal element."""
    if type(x) is not Var:
        return np.max(x, axis=axis, keepdims=keepdims)
    return _reduce(Op.AMAX, "max", x, axis, keepdims)


def min(x, axis=None, keepdims=False):  # noqa: A001
    """Minimum; the multiplier goes to the first minimal element."""
    if type(x) is not Var:
        return np.min(x, axis=axis, keepdims=keepdims)
    return _reduce(Op.AMIN, "min", x, axis, keepdims)


def mean(x, axis=None, keepdims=False):
    """Arithmetic mean over all elements or the given axis/axes."""
    if type(x) is not Var:
        return np.mean(x, axis=axis, keepdims=keepdims)
    n = _prod(x.shape[a] for a in _axes(x, axis, "mean"))
    return _reduce(Op.SUM, "mean", x, axis, keepdims) / n


# -- running sums and products ---------------------------------------------------

def _cumulative(op, name, x, axis):
    if axis is None:            # numpy: over the flattened array
        x = reshape(x, (-1,)) if x.shape != (x.size,) else x
        axis = 0
    if not x.shape:
        raise ShapeError(f"{name}: a zero-dimensional value has no axis {axis}")
    (a,) = _axes(x, axis, name)
    s = x.shape
    return _tape.cumulative(op, x, _prod(s[:a]), s[a], _prod(s[a + 1:]), s)


def cumsum(x, axis=None):
    """Running sum along `axis` (over the flattened value when None), as numpy.cumsum."""
    if type(x) is not Var:
        return np.cumsum(x, axis=axis)
    return _cumulative(Op.CUMSUM, "cumsum", x, axis)


def cumprod(x, axis=None):
    """Running product along `axis` (flattened when None), as numpy.cumprod; exact
    partials where elements are zero."""
    if type(x) is not Var:
        return np.cumprod(x, axis=axis)
    return _cumulative(Op.CUMPROD, "cumprod", x, axis)


# -- combinations -------------------------------------------------------------------

def _first_var(values, name):
    for v in values:
        if type(v) is Var:
            return v
    return None


def _as_var(like, v, name, arg):
    if type(v) is Var:
        if v.tape is not like.tape:
            raise TapeError(f"{name}: argument '{arg}' belongs to another tape")
        return v
    return _tape.constant_like(like, v)


def dot(a, b):
    """numpy.dot: the inner product of vectors, matrix products, and for N-d operands
    the sum over a's last axis and b's second-to-last."""
    like = _first_var((a, b), "dot")
    if like is None:
        return np.dot(a, b)
    a, b = _as_var(like, a, "dot", "a"), _as_var(like, b, "dot", "b")
    if a.ndim == 0 or b.ndim == 0:
        return a * b
    if a.ndim == 1 and b.ndim == 1:
        if a.shape != b.shape:
            raise ShapeError(f"dot: shapes {a.shape} and {b.shape} not aligned")
        return _tape.dot1(a, b)
    if a.shape[-1] != b.shape[0 if b.ndim == 1 else -2]:
        raise ShapeError(f"dot: shapes {a.shape} and {b.shape} not aligned")
    if b.ndim > 2:
        # numpy.dot contracts a's last axis with b's second-to-last, unlike matmul
        from fastape._einsum import dot_nd
        return dot_nd(a, b)
    return matmul(a, b)


def matmul(a, b):
    """Matrix product with numpy's rules (BLAS on the tape; see ``fastape.linalg``)."""
    from fastape import linalg
    return linalg.matmul(a, b)


def where(condition, x=None, y=None):
    """Elementwise ``x if condition else y``. The multiplier reaches only the branch that
    was selected, so the other branch's infinities or NaNs never enter the gradient."""
    # a condition on the tape is compared with 0 (numpy's truth of a float), which
    # records a guard: a compiled function re-checks the choice on new inputs
    cond = _tape.compare(condition, 0.0, Cmp.NE) if type(condition) is Var else condition
    if x is None and y is None:
        return np.nonzero(cond)
    if x is None or y is None:
        raise TypeError("where: give both x and y, or neither")
    like = _first_var((x, y), "where")
    if like is None:
        return np.where(cond, x, y)
    cond = np.asarray(cond, dtype=bool)
    vx, vy = _as_var(like, x, "where", "x"), _as_var(like, y, "where", "y")
    try:
        shape = _tape.broadcast_shapes(cond.shape, vx.shape, vy.shape)
    except ValueError:
        raise ShapeError(f"where: condition of shape {cond.shape}, x of shape {vx.shape} and "
                         f"y of shape {vy.shape} cannot be broadcast together") from None
    size = _prod(shape)
    if vx.size not in (size, 1):
        vx = _tape.broadcast_to(vx, shape, "where", "x")
    if vy.size not in (size, 1):
        vy = _tape.broadcast_to(vy, shape, "where", "y")
    c = _tape.constant_like(like, np.broadcast_to(cond, shape).astype(np.float64))
    return _tape.where(c, vx, vy, shape)


def _parts(arrays, name):
    arrays = list(arrays)
    if not arrays:
        raise ValueError(f"{name}: need at least one array")
    like = _first_var(arrays, name)
    if like is None:            # plain arrays: numpy computes the result
        return None, arrays
    return like, [_as_var(like, v, name, f"arrays[{i}]") for i, v in enumerate(arrays)]


def concatenate(arrays, axis=0):
    """Join values along an existing axis."""
    like, parts = _parts(arrays, "concatenate")
    if like is None:
        return np.concatenate(arrays, axis=axis)
    if axis is None:            # numpy: the parts flattened, then joined
        parts = [reshape(p, (-1,)) for p in parts]
        axis = 0
    s0 = parts[0].shape
    if not s0:
        raise ShapeError("concatenate: zero-dimensional values cannot be concatenated")
    (axis,) = _axes(parts[0], axis, "concatenate")
    for i, p in enumerate(parts):
        if len(p.shape) != len(s0) or p.shape[:axis] + p.shape[axis + 1:] != \
                s0[:axis] + s0[axis + 1:]:
            raise ShapeError(f"concatenate: arrays[{i}] has shape {p.shape}, which does not "
                             f"match arrays[0] of shape {s0} off axis {axis}")
    lengths = [p.shape[axis] for p in parts]
    shape = s0[:axis] + (builtins.sum(lengths),) + s0[axis + 1:]
    return _tape.concat(parts, _prod(s0[:axis]), _prod(s0[axis + 1:]), lengths, shape)


def stack(arrays, axis=0):
    """Join values of one shape along a new axis."""
    like, parts = _parts(arrays, "stack")
    if like is None:
        return np.stack(arrays, axis=axis)
    s0 = parts[0].shape
    for i, p in enumerate(parts):
        if p.shape != s0:
            raise ShapeError(f"stack: arrays[{i}] has shape {p.shape}, arrays[0] has "
                             f"shape {s0}; all must have the same shape")
    nd = len(s0) + 1
    axis = operator.index(axis)
    if not -nd <= axis < nd:
        raise ShapeError(f"stack: axis {axis} is out of bounds for the result's {nd} dimensions")
    axis %= nd
    shape = s0[:axis] + (len(parts),) + s0[axis:]
    return _tape.concat(parts, _prod(s0[:axis]), _prod(s0[axis:]), [1] * len(parts), shape)
