"""numpy's shape and assembly functions on fastape values (issue 13, item 1).

Most of them only move elements: ``flip``, ``roll``, ``tile``, ``pad``, ``diag``,
``tril``, ``split``, ``take``... Each is computed by applying numpy's own function to
the array of ``x``'s flat positions, ``np.arange(x.size).reshape(x.shape)``, which
gives, for every element of the result, the position of ``x`` it comes from; the
result is then one GATHER node (a reshape when the order is unchanged). So their
semantics are numpy's by construction (axis handling, negative axes, errors), and
their derivatives are GATHER's: exact in reverse and forward mode and at every order
(the adjoint scatter-adds, so repeated positions accumulate). Functions that also
write new elements (``pad`` with constants, ``diag`` of a vector, ``tril``) gather
from ``x`` with one constant prepended, at position 0, where numpy wrote the fill.

The value-dependent ones (``sort``, ``partition`` and what is built on them) choose a
permutation from the values; the choice is recorded as comparisons of neighbouring
results, which compiled functions check as guards, so a replay at inputs that sort
differently re-records instead of applying a stale permutation.
"""

import builtins
import operator

import numpy as np
from numpy.lib.array_utils import normalize_axis_index, normalize_axis_tuple

from fastape import _tape
from fastape._functions import _first_var, _prod, concatenate, reshape, stack, transpose
from fastape._ops import Cmp
from fastape._tape import Var
from fastape.errors import ShapeError

__all__ = [
    "squeeze", "expand_dims", "swapaxes", "moveaxis", "broadcast_to", "atleast_1d",
    "atleast_2d", "atleast_3d", "ravel", "flip", "fliplr", "flipud", "rot90", "roll",
    "tile", "repeat", "kron", "pad", "diag", "diagonal", "diagflat", "tril", "triu",
    "hstack", "vstack", "dstack", "column_stack", "split", "array_split", "hsplit",
    "vsplit", "dsplit", "append", "take", "take_along_axis", "select", "clip", "sort",
    "partition", "diff", "gradient", "trapezoid", "linspace", "cross", "copy",
]


def _positions(shape, first=0):
    return np.arange(first, first + _prod(shape), dtype=np.int64).reshape(shape)


def _gathered(x, idx, source=None):
    """The value whose elements are ``source.flat[idx]`` (``source`` defaults to x)."""
    src = x if source is None else source
    idx = np.asarray(idx)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"internal: positions of dtype {idx.dtype}")
    flat = np.ascontiguousarray(idx, dtype=np.int64).reshape(-1)
    if src.size == flat.size and np.array_equal(flat, np.arange(flat.size)):
        return src if src.shape == idx.shape else reshape(src, idx.shape)
    if idx.shape == ():
        return _tape.item(src, int(flat[0]))
    return _tape.gather(src, flat, idx.shape)


def _moved(x, fn, *args, **kwargs):
    """fn (a numpy function that only moves elements) applied to x's positions, as one
    gather of x."""
    return _gathered(x, fn(_positions(x.shape), *args, **kwargs))


def _filled(x, fill, fn, *args, **kwargs):
    """fn applied to x's positions counted from 1, where fn writes 0 for new elements:
    a gather from [fill, x.flat...]."""
    idx = fn(_positions(x.shape, 1), *args, **kwargs)
    ext = concatenate([_tape.constant_like(x, np.array([float(fill)])), reshape(x, (-1,))])
    return _gathered(x, idx, ext)


def _var_of(*values):
    return _first_var(values, "")


# -- shapes ---------------------------------------------------------------------------

def squeeze(a, axis=None):
    """numpy.squeeze: remove axes of length one."""
    if type(a) is not Var:
        return np.squeeze(a, axis)
    if axis is None:
        return reshape(a, tuple(d for d in a.shape if d != 1))
    axes = normalize_axis_tuple(axis, a.ndim)
    if any(a.shape[q] != 1 for q in axes):
        raise ValueError("cannot select an axis to squeeze out which has size not equal "
                         "to one")                      # numpy's words
    return reshape(a, tuple(d for q, d in enumerate(a.shape) if q not in axes))


def expand_dims(a, axis):
    """numpy.expand_dims: insert axes of length one."""
    if type(a) is not Var:
        return np.expand_dims(a, axis)
    # numpy's construction, as a reshape (_moved's positions array cost 11 µs a call)
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    nd = a.ndim + len(axes)
    axes = normalize_axis_tuple(axes, nd)
    dims = iter(a.shape)
    return reshape(a, tuple(1 if q in axes else next(dims) for q in range(nd)))


def swapaxes(a, axis1, axis2):
    """numpy.swapaxes: interchange two axes."""
    if type(a) is not Var:
        return np.swapaxes(a, axis1, axis2)
    axes = list(range(a.ndim))
    i, j = normalize_axis_index(axis1, a.ndim), normalize_axis_index(axis2, a.ndim)
    axes[i], axes[j] = j, i
    return transpose(a, axes)                   # a strided view, as every transpose


def moveaxis(a, source, destination):
    """numpy.moveaxis: move axes to new positions."""
    if type(a) is not Var:
        return np.moveaxis(a, source, destination)
    src = normalize_axis_tuple(source, a.ndim, "source")
    dst = normalize_axis_tuple(destination, a.ndim, "destination")
    if len(src) != len(dst):
        raise ValueError("`source` and `destination` arguments must have the same number "
                         "of elements")
    order = [q for q in range(a.ndim) if q not in src]      # numpy's own construction
    for d, q in sorted(zip(dst, src)):
        order.insert(d, q)
    return transpose(a, order)


def broadcast_to(array, shape):
    """numpy.broadcast_to: a value repeated to ``shape`` (one BROADCAST node; its
    adjoint sums back)."""
    if type(array) is not Var:
        return np.broadcast_to(array, shape)
    shape = (operator.index(shape),) if np.ndim(shape) == 0 else \
        tuple(operator.index(s) for s in shape)
    if shape == array.shape:
        return array
    try:
        ok = np.broadcast_shapes(array.shape, shape) == shape
    except ValueError:
        ok = False
    if not ok:
        raise ShapeError(f"broadcast_to: a value of shape {array.shape} cannot be broadcast "
                         f"to shape {shape}")
    return _tape.broadcast_to(array, shape, "broadcast_to", "array")


def _atleast(fn, arys):
    out = [_moved(a, fn) if type(a) is Var else fn(a) for a in arys]
    return out[0] if len(out) == 1 else tuple(out)


def atleast_1d(*arys):
    """numpy.atleast_1d."""
    return _atleast(np.atleast_1d, arys)


def atleast_2d(*arys):
    """numpy.atleast_2d."""
    return _atleast(np.atleast_2d, arys)


def atleast_3d(*arys):
    """numpy.atleast_3d."""
    return _atleast(np.atleast_3d, arys)


def ravel(a, order="C"):
    """numpy.ravel (order 'C', 'A' or 'K' of a C-ordered value; 'F' reads columns)."""
    if type(a) is not Var:
        return np.ravel(a, order)
    return _moved(a, np.ravel, order)


def copy(a, order="K", subok=False):
    """numpy.copy: another Var of the same value (an update of one through ``[...] =``
    leaves the other as it was)."""
    if type(a) is not Var:
        return np.copy(a, order=order, subok=subok)
    return a.copy()


def updated(x, key, value):
    """The value of ``x`` after ``x[key] = value`` (numpy's indexing and broadcasting;
    the last write wins where an index repeats): one gather of x's and value's
    elements. Used by ``Var.__setitem__``; it records O(x.size) work, so a loop that
    fills an array element by element is quadratic: build a list and ``np.stack`` it
    instead."""
    keys = key if isinstance(key, tuple) else (key,)
    if builtins.any(type(k) is Var for k in keys):
        raise TypeError("x[key] = value: indexing with a fastape value is not "
                        "differentiable; index with k.value (a plain number or array)")
    target = np.asarray(_positions(x.shape)[key])
    if type(value) is Var:
        if value.tape is not x.tape:
            from fastape.errors import TapeError
            raise TapeError("x[key] = value: value belongs to another tape")
        v = value
    else:
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"x[key] = value: value must be real numbers, got dtype "
                            f"{arr.dtype}")
        v = _tape.constant_like(x, arr.astype(np.float64))
    vshape = v.shape
    while len(vshape) > target.ndim and vshape[0] == 1:     # numpy drops leading 1s
        vshape = vshape[1:]
    try:
        ok = np.broadcast_shapes(vshape, target.shape) == target.shape
    except ValueError:
        ok = False
    if not ok:
        raise ShapeError(f"x[key] = value: could not broadcast a value of shape {v.shape} "
                         f"into the indexed shape {target.shape} (x has shape {x.shape})")
    if vshape != v.shape:
        v = reshape(v, vshape)
    if target.size == 0:
        return x.copy()
    v = broadcast_to(v, target.shape)
    idx = np.arange(x.size, dtype=np.int64)
    idx[target.reshape(-1)] = x.size + np.arange(target.size, dtype=np.int64)
    ext = concatenate([reshape(x, (-1,)), reshape(v, (-1,))])
    return _gathered(x, idx.reshape(x.shape), ext)


def flip(m, axis=None):
    """numpy.flip: reverse the order of elements along the given axes."""
    if type(m) is not Var:
        return np.flip(m, axis)
    return _moved(m, np.flip, axis)


def fliplr(m):
    """numpy.fliplr."""
    return np.fliplr(m) if type(m) is not Var else _moved(m, np.fliplr)


def flipud(m):
    """numpy.flipud."""
    return np.flipud(m) if type(m) is not Var else _moved(m, np.flipud)


def rot90(m, k=1, axes=(0, 1)):
    """numpy.rot90: rotate by 90 degrees k times in the plane of ``axes``."""
    if type(m) is not Var:
        return np.rot90(m, k, axes)
    return _moved(m, np.rot90, k, axes)


def roll(a, shift, axis=None):
    """numpy.roll: shift elements cyclically."""
    if type(a) is not Var:
        return np.roll(a, shift, axis)
    return _moved(a, np.roll, shift, axis)


def tile(A, reps):
    """numpy.tile: repeat the whole value ``reps`` times."""
    if type(A) is not Var:
        return np.tile(A, reps)
    return _moved(A, np.tile, reps)


def repeat(a, repeats, axis=None):
    """numpy.repeat: repeat each element (``repeats`` plain integers)."""
    if type(a) is not Var:
        return np.repeat(a, repeats, axis)
    if type(repeats) is Var:
        raise TypeError("repeat: repeats must be plain integers, not a fastape value")
    return _moved(a, np.repeat, repeats, axis)


def kron(a, b):
    """numpy.kron: the Kronecker product (blocks a[i] * b)."""
    like = _var_of(a, b)
    if like is None:
        return np.kron(a, b)
    a = a if type(a) is Var else _tape.constant_like(like, np.asarray(a, dtype=np.float64))
    b = b if type(b) is Var else _tape.constant_like(like, np.asarray(b, dtype=np.float64))
    nd = builtins.max(a.ndim, b.ndim)
    sa = (1,) * (nd - a.ndim) + a.shape
    sb = (1,) * (nd - b.ndim) + b.shape
    # a[i0, i1, ...] * b[j0, j1, ...] at (i0 * nb0 + j0, i1 * nb1 + j1, ...)
    ea = reshape(a, tuple(v for s in sa for v in (s, 1)))
    eb = reshape(b, tuple(v for s in sb for v in (1, s)))
    return reshape(ea * eb, tuple(x * y for x, y in zip(sa, sb)))


_PAD_MODES = ("constant", "edge", "reflect", "symmetric", "wrap")


def pad(array, pad_width, mode="constant", **kwargs):
    """numpy.pad for the modes 'constant' (one number as ``constant_values``), 'edge',
    'reflect', 'symmetric' and 'wrap' (``reflect_type='even'``)."""
    if type(array) is not Var:
        return np.pad(array, pad_width, mode, **kwargs)
    if not isinstance(mode, str) or mode not in _PAD_MODES:
        raise TypeError(f"pad: mode={mode!r} is not supported on fastape values; use one of "
                        + ", ".join(repr(m) for m in _PAD_MODES))
    if mode == "constant":
        c = kwargs.pop("constant_values", 0)
        if kwargs:
            raise TypeError(f"pad: argument(s) {', '.join(kwargs)} not supported with "
                            "mode='constant'")
        if type(c) is Var or np.ndim(c) != 0:
            raise TypeError("pad: constant_values must be one plain number on fastape values "
                            f"(got {type(c).__name__} of shape {np.shape(c)}); pad with 0 "
                            "and add the constants instead")
        return _filled(array, c, np.pad, pad_width, "constant", constant_values=0)
    if kwargs.get("reflect_type", "even") != "even" or set(kwargs) - {"reflect_type"}:
        raise TypeError(f"pad: {kwargs} not supported on fastape values with mode={mode!r}")
    return _moved(array, np.pad, pad_width, mode)


def diag(v, k=0):
    """numpy.diag: the k-th diagonal of a 2-D value, or a 2-D value with a 1-D one on its
    k-th diagonal (zeros elsewhere)."""
    if type(v) is not Var:
        return np.diag(v, k)
    return _filled(v, 0.0, np.diag, k)


def diagonal(a, offset=0, axis1=0, axis2=1):
    """numpy.diagonal."""
    if type(a) is not Var:
        return np.diagonal(a, offset, axis1, axis2)
    return _moved(a, np.diagonal, offset, axis1, axis2)


def diagflat(v, k=0):
    """numpy.diagflat: the flattened value on the k-th diagonal of a 2-D value."""
    if type(v) is not Var:
        return np.diagflat(v, k)
    return _filled(v, 0.0, np.diagflat, k)


def tril(m, k=0):
    """numpy.tril: zeros above the k-th diagonal."""
    if type(m) is not Var:
        return np.tril(m, k)
    return _filled(m, 0.0, np.tril, k)


def triu(m, k=0):
    """numpy.triu: zeros below the k-th diagonal."""
    if type(m) is not Var:
        return np.triu(m, k)
    return _filled(m, 0.0, np.triu, k)


# -- assembly ---------------------------------------------------------------------

def _sequence(tup, name):
    if type(tup) is Var or isinstance(tup, np.ndarray):
        raise TypeError(f"{name}: give a sequence of arrays (a list or tuple), not one array")
    return list(tup)


def vstack(tup, *, dtype=None, casting="same_kind"):
    """numpy.vstack: join along the first axis (1-D values as rows)."""
    arrays = _sequence(tup, "vstack")
    if _var_of(*arrays) is None:
        return np.vstack(arrays)
    return concatenate([atleast_2d(a) for a in arrays], axis=0)


def hstack(tup, *, dtype=None, casting="same_kind"):
    """numpy.hstack: join along the second axis (the first for 1-D values)."""
    arrays = _sequence(tup, "hstack")
    if _var_of(*arrays) is None:
        return np.hstack(arrays)
    arrays = [atleast_1d(a) for a in arrays]
    return concatenate(arrays, axis=0 if arrays and np.ndim(arrays[0]) == 1 else 1)


def dstack(tup):
    """numpy.dstack: join along the third axis."""
    arrays = _sequence(tup, "dstack")
    if _var_of(*arrays) is None:
        return np.dstack(arrays)
    return concatenate([atleast_3d(a) for a in arrays], axis=2)


def column_stack(tup):
    """numpy.column_stack: 1-D values as columns, 2-D values as they are."""
    arrays = _sequence(tup, "column_stack")
    if _var_of(*arrays) is None:
        return np.column_stack(arrays)
    cols = []
    for a in arrays:
        if np.ndim(a) < 2:
            a = reshape(a, (-1, 1)) if type(a) is Var else np.asarray(a).reshape(-1, 1)
        cols.append(a)
    return concatenate(cols, axis=1)


def append(arr, values, axis=None):
    """numpy.append: values joined after arr (both flattened when axis is None)."""
    if _var_of(arr, values) is None:
        return np.append(arr, values, axis)
    if axis is None:
        return concatenate([ravel(arr), ravel(values)], axis=0)
    return concatenate([arr, values], axis=axis)


def _pieces(ary, fn, *args):
    if type(ary) is not Var:
        return fn(ary, *args)
    return [_gathered(ary, p) for p in fn(_positions(ary.shape), *args)]


def split(ary, indices_or_sections, axis=0):
    """numpy.split: a list of values (equal sections or at the given indices)."""
    return _pieces(ary, np.split, indices_or_sections, axis)


def array_split(ary, indices_or_sections, axis=0):
    """numpy.array_split: like split, sections may be unequal."""
    return _pieces(ary, np.array_split, indices_or_sections, axis)


def hsplit(ary, indices_or_sections):
    """numpy.hsplit."""
    return _pieces(ary, np.hsplit, indices_or_sections)


def vsplit(ary, indices_or_sections):
    """numpy.vsplit."""
    return _pieces(ary, np.vsplit, indices_or_sections)


def dsplit(ary, indices_or_sections):
    """numpy.dsplit."""
    return _pieces(ary, np.dsplit, indices_or_sections)


def _plain_indices(indices, name):
    if type(indices) is Var:
        raise TypeError(f"{name}: indices must be plain integers, not a fastape value "
                        "(indexing is not differentiable)")
    idx = np.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{name}: indices must be integers, got dtype {idx.dtype}")
    return idx


def take(a, indices, axis=None, out=None, mode="raise"):
    """numpy.take: elements at plain integer indices."""
    if type(a) is not Var:
        return np.take(a, indices, axis, out, mode)
    if out is not None:
        raise TypeError("take: out= cannot write into a fastape value")
    idx = _plain_indices(indices, "take")
    return _moved(a, np.take, idx, axis, None, mode)


def take_along_axis(arr, indices, axis):
    """numpy.take_along_axis."""
    if type(arr) is not Var:
        return np.take_along_axis(arr, indices, axis)
    idx = _plain_indices(indices, "take_along_axis")
    return _moved(arr, np.take_along_axis, idx, axis)


def select(condlist, choicelist, default=0):
    """numpy.select: the first choice whose condition holds, else default."""
    from fastape._functions import where
    condlist, choicelist = list(condlist), list(choicelist)
    if len(condlist) != len(choicelist):
        raise ValueError(f"select: list of cases must be same length as list of conditions "
                         f"({len(condlist)} conditions, {len(choicelist)} choices)")
    if _var_of(*choicelist, default) is None and _var_of(*condlist) is None:
        return np.select(condlist, choicelist, default)
    out = default
    for c, v in zip(reversed(condlist), reversed(choicelist)):
        out = where(c, v, out)
    if type(out) is not Var:     # no value on the tape was chosen anywhere
        out = np.asarray(out, dtype=np.float64)
    return out


def clip(a, a_min=None, a_max=None, out=None, **kwargs):
    """numpy.clip: ``minimum(maximum(a, a_min), a_max)`` (numpy's order: a_max wins
    where a_min > a_max). At a bound the derivative is that of maximum/minimum."""
    if "min" in kwargs or "max" in kwargs:
        a_min = kwargs.pop("min", a_min)
        a_max = kwargs.pop("max", a_max)
    if out is not None:
        raise TypeError("clip: out= cannot write into a fastape value")
    if kwargs:
        raise TypeError(f"clip: argument(s) {', '.join(kwargs)} not supported on fastape values")
    if _var_of(a, a_min, a_max) is None:
        return np.clip(a, a_min, a_max)
    if a_min is None and a_max is None:
        raise ValueError("clip: at least one of a_min and a_max must be given")
    if a_min is not None:
        a = np.maximum(a, a_min)
    if a_max is not None:
        a = np.minimum(a, a_max)
    return a


# -- sorting ------------------------------------------------------------------------

def _guard_sorted(s, axis):
    """Record that s is sorted along axis (comparisons of neighbours: compiled
    functions check them as guards)."""
    n = s.shape[axis]
    if n > 1 and s.tape.on_compare is not None:
        lo = _moved(s, lambda p: np.take(p, np.arange(n - 1), axis))
        hi = _moved(s, lambda p: np.take(p, np.arange(1, n), axis))
        _tape.compare(lo, hi, Cmp.LE)


def sort(a, axis=-1, kind=None, order=None):
    """numpy.sort of the values; the derivative follows the permutation (ties keep
    their order: a stable sort)."""
    if type(a) is not Var:
        return np.sort(a, axis, kind, order)
    if order is not None:
        raise TypeError("sort: order= applies to structured arrays, not fastape values")
    if axis is None:
        a, axis = ravel(a), 0
    if a.ndim == 0:
        raise np.exceptions.AxisError(axis, 0)
    perm = np.argsort(a.value, axis=axis, kind="stable")
    s = _moved(a, np.take_along_axis, perm, axis)
    _guard_sorted(s, axis)
    return s


def partition(a, kth, axis=-1, kind="introselect", order=None):
    """numpy.partition: the kth elements in their sorted positions, smaller ones before
    and larger ones after (in an unspecified order, as numpy's)."""
    if type(a) is not Var:
        return np.partition(a, kth, axis, kind, order)
    if order is not None:
        raise TypeError("partition: order= applies to structured arrays, not fastape values")
    if axis is None:
        a, axis = ravel(a), 0
    perm = np.argpartition(a.value, kth, axis=axis)
    p = _moved(a, np.take_along_axis, perm, axis)
    n = p.shape[axis]
    if a.tape.on_compare is not None and n > 1:
        for k in np.atleast_1d(kth):
            k = int(k) % n
            mid = _moved(p, lambda q, k=k: np.take(q, [k], axis))
            if k > 0:
                _tape.compare(_moved(p, lambda q, k=k: np.take(q, np.arange(k), axis)),
                              broadcast_to(mid, _shape_with(p.shape, axis, k)), Cmp.LE)
            if k < n - 1:
                _tape.compare(broadcast_to(mid, _shape_with(p.shape, axis, n - 1 - k)),
                              _moved(p, lambda q, k=k: np.take(q, np.arange(k + 1, n), axis)),
                              Cmp.LE)
    return p


def _shape_with(shape, axis, n):
    axis %= len(shape)
    return shape[:axis] + (n,) + shape[axis + 1:]


# -- differences and integrals ------------------------------------------------------

def _slice(a, axis, start, stop):
    n = a.shape[axis]
    return _moved(a, lambda p: np.take(p, np.arange(n)[start:stop], axis))


def diff(a, n=1, axis=-1, prepend=np._NoValue, append=np._NoValue):
    """numpy.diff: the n-th discrete difference along axis."""
    if _var_of(a, None if prepend is np._NoValue else prepend,
               None if append is np._NoValue else append) is None:
        return np.diff(a, n, axis, prepend, append)
    n = operator.index(n)
    if n < 0:
        raise ValueError(f"diff: order must be non-negative but got {n}")
    if type(a) is not Var:
        like = _var_of(prepend, append)
        a = _tape.constant_like(like, np.asarray(a, dtype=np.float64))
    if a.ndim == 0:
        raise ValueError("diff requires input that is at least one dimensional")
    axis = operator.index(axis)
    if not -a.ndim <= axis < a.ndim:
        raise np.exceptions.AxisError(axis, a.ndim)
    axis %= a.ndim
    parts = []
    for extra in (prepend, append):
        if extra is np._NoValue:
            parts.append(None)
            continue
        if np.ndim(extra) == 0:
            shape = _shape_with(a.shape, axis, 1)
            extra = broadcast_to(extra, shape) if type(extra) is Var else \
                np.broadcast_to(np.float64(extra), shape)
        parts.append(extra)
    if parts[0] is not None or parts[1] is not None:
        a = concatenate([p for p in (parts[0], a, parts[1]) if p is not None], axis=axis)
    for _ in range(n):
        a = _slice(a, axis, 1, None) - _slice(a, axis, None, -1)
    return a


def _spacing(spacing, n, name):
    """A scalar step (a float) or the steps between coordinates (an array of n - 1), as
    numpy.gradient takes them: a coordinate array of length n, or a scalar."""
    if type(spacing) is Var:
        raise TypeError(f"{name}: the spacing must be plain numbers, not a fastape value "
                        "(the derivative in the coordinates is not provided)")
    if np.ndim(spacing) == 0:
        return float(spacing)
    x = np.asarray(spacing, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name}: distances must be either scalars or 1d (got shape "
                         f"{x.shape})")
    if len(x) != n:
        raise ValueError(f"{name}: when 1d, distances must match the length of the "
                         f"corresponding dimension ({len(x)} != {n})")
    h = np.diff(x)
    if np.all(h == h[0]):       # numpy treats evenly spaced coordinates as a scalar step
        return float(h[0])
    return h


def gradient(f, *varargs, axis=None, edge_order=1):
    """numpy.gradient: second-order central differences inside, one-sided differences of
    order ``edge_order`` (1 or 2) at the ends; the spacing a scalar per axis (or one for
    all) or the coordinates along each axis (non-uniform: numpy's weights)."""
    if type(f) is not Var:
        return np.gradient(f, *varargs, axis=axis, edge_order=edge_order)
    axes = tuple(range(f.ndim)) if axis is None else \
        tuple(a % f.ndim for a in np.atleast_1d(axis).tolist())
    if len(varargs) == 0:
        varargs = (1.0,) * len(axes)
    elif len(varargs) == 1 and np.ndim(varargs[0]) == 0:
        varargs = varargs * len(axes)
    elif len(varargs) != len(axes):
        raise TypeError(f"gradient: invalid number of arguments: {len(varargs)} spacings "
                        f"for {len(axes)} axes")
    if edge_order not in (1, 2):
        raise ValueError('gradient: "edge_order" must be 1 or 2')
    out = []
    for ax, spacing in zip(axes, varargs):
        n = f.shape[ax]
        if n < edge_order + 1:
            raise ValueError("gradient: shape of the array too small to calculate a "
                             "numerical gradient, at least (edge_order + 1) elements are "
                             "required")
        h = _spacing(spacing, n, "gradient")

        def at(i, _ax=ax):
            return _slice(f, _ax, i, i + 1 if i != -1 else None)

        def along(w, _ax=ax):
            """plain weights along the axis, broadcast against f's other axes"""
            return np.reshape(w, (1,) * _ax + (-1,) + (1,) * (f.ndim - 1 - _ax))

        if isinstance(h, float):
            if edge_order == 1:
                first = (at(1) - at(0)) / h
                last = (at(-1) - at(-2)) / h
            else:
                first = (-1.5 * at(0) + 2.0 * at(1) - 0.5 * at(2)) / h
                last = (0.5 * at(-3) - 2.0 * at(-2) + 1.5 * at(-1)) / h
            parts = [first, last]
            if n > 2:
                parts.insert(1, (_slice(f, ax, 2, None) - _slice(f, ax, None, -2)) / (2.0 * h))
        else:
            # numpy's weights for uneven steps (second order inside and, with
            # edge_order=2, at the ends)
            if edge_order == 1:
                first = (at(1) - at(0)) / h[0]
                last = (at(-1) - at(-2)) / h[-1]
            else:
                d1, d2 = h[0], h[1]
                first = (-(2.0 * d1 + d2) / (d1 * (d1 + d2)) * at(0)
                         + (d1 + d2) / (d1 * d2) * at(1) - d1 / (d2 * (d1 + d2)) * at(2))
                d1, d2 = h[-2], h[-1]
                last = (d2 / (d1 * (d1 + d2)) * at(-3) - (d2 + d1) / (d1 * d2) * at(-2)
                        + (2.0 * d2 + d1) / (d2 * (d1 + d2)) * at(-1))
            parts = [first, last]
            if n > 2:
                d1, d2 = h[:-1], h[1:]
                a = along(-d2 / (d1 * (d1 + d2)))
                b = along((d2 - d1) / (d1 * d2))
                c = along(d1 / (d2 * (d1 + d2)))
                parts.insert(1, a * _slice(f, ax, None, -2) + b * _slice(f, ax, 1, -1)
                             + c * _slice(f, ax, 2, None))
        out.append(concatenate(parts, axis=ax))
    return out[0] if len(out) == 1 else tuple(out)


def trapezoid(y, x=None, dx=1.0, axis=-1):
    """numpy.trapezoid: the trapezoidal rule along axis (x may be a fastape value)."""
    if _var_of(y, x, dx) is None:
        trap = getattr(np, "trapezoid", None) or np.trapz
        return trap(y, x, dx, axis)
    like = _var_of(y, x, dx)
    if type(y) is not Var:
        y = _tape.constant_like(like, np.asarray(y, dtype=np.float64))
    if y.ndim == 0:
        raise ValueError("trapezoid: y must be at least one dimensional")
    axis %= y.ndim
    if x is None:
        d = dx
    else:
        if type(x) is not Var:
            x = _tape.constant_like(like, np.asarray(x, dtype=np.float64))
        if x.ndim == 1:
            d = diff(x)
            if d.shape[0] != y.shape[axis] - 1:
                raise ShapeError(f"trapezoid: x of shape {x.shape} does not match y of "
                                 f"shape {y.shape} along axis {axis}")
            d = reshape(d, (-1,) + (1,) * (y.ndim - 1 - axis))
        else:
            d = diff(x, axis=axis)
    s = (_slice(y, axis, 1, None) + _slice(y, axis, None, -1)) * d / 2.0
    from fastape._functions import sum as _sum
    return _sum(s, axis=axis)


def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0):
    """numpy.linspace with fastape endpoints (numbers or arrays): ``start + step * i``,
    the last point ``stop`` itself when ``endpoint``."""
    if _var_of(start, stop) is None:
        return np.linspace(start, stop, num, endpoint, retstep, dtype, axis)
    if dtype is not None and np.dtype(dtype) != np.float64:
        raise TypeError(f"linspace: fastape values are float64; dtype={dtype} not supported")
    num = operator.index(num)
    if num < 0:
        raise ValueError(f"linspace: number of samples, {num}, must be non-negative")
    like = _var_of(start, stop)
    start = start if type(start) is Var else _tape.constant_like(
        like, np.asarray(start, dtype=np.float64))
    stop = stop if type(stop) is Var else _tape.constant_like(
        like, np.asarray(stop, dtype=np.float64))
    div = num - 1 if endpoint else num
    delta = stop - start
    bshape = np.broadcast_shapes(start.shape, stop.shape)
    t = np.arange(num, dtype=np.float64).reshape((-1,) + (1,) * len(bshape))
    step = delta / div if div > 0 else delta * np.nan
    if div > 0:
        y = start + t * step
    else:
        y = start + t * delta
    if endpoint and num > 1:
        y = concatenate([_slice(y, 0, None, -1), reshape(broadcast_to(stop, bshape),
                                                         (1,) + bshape)], axis=0)
    if axis != 0:
        y = moveaxis(y, 0, axis)
    return (y, step) if retstep else y


def cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    """numpy.cross of 3-vectors (and stacks of them, broadcast)."""
    like = _var_of(a, b)
    if like is None:
        return np.cross(a, b, axisa, axisb, axisc, axis)
    if axis is not None:
        axisa = axisb = axisc = axis
    a = a if type(a) is Var else _tape.constant_like(like, np.asarray(a, dtype=np.float64))
    b = b if type(b) is Var else _tape.constant_like(like, np.asarray(b, dtype=np.float64))
    a, b = moveaxis(a, axisa, -1), moveaxis(b, axisb, -1)
    if a.shape[-1] != 3 or b.shape[-1] != 3:
        raise ShapeError(f"cross: fastape supports 3-vectors; the vector axes have "
                         f"{a.shape[-1]} and {b.shape[-1]} components (shapes {a.shape}, "
                         f"{b.shape})")

    def c(v, i):
        return _moved(v, lambda p: p[..., i])

    a0, a1, a2 = c(a, 0), c(a, 1), c(a, 2)
    b0, b1, b2 = c(b, 0), c(b, 1), c(b, 2)
    out = stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis=-1)
    return moveaxis(out, -1, axisc)
