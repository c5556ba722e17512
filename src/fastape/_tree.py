"""Argument structure: pytrees in the style of JAX's ``tree_util``.

A *pytree* is a nested container whose ends are *leaves*. The containers:

* ``list`` and ``tuple`` and their subclasses, rebuilt as ``type(x)(children)``;
* namedtuples (tuple subclasses with ``_fields``), rebuilt as ``type(x)(*children)``;
* ``dict`` and its subclasses (``OrderedDict``, ``defaultdict`` keeps its
  ``default_factory``). The children are taken in *sorted key order*, as in JAX, so
  two dicts with the same keys have the same structure whatever order they were
  built in (the keys must be mutually comparable). A dict is rebuilt as a dict of
  the same type in the *key order of the dict that was flattened*: the gradient of
  ``{'w': …, 'b': …}`` lists ``'w'`` first, like its argument. That order is kept
  beside the structure and is not part of it;
* ``None``: a container with no children (an optional argument left out), as in
  JAX;
* complex numbers and complex arrays (and complex fastape values): two children,
  the real and the imaginary part, leaves of the same shape; rebuilt as a complex
  number or array, or as a complex fastape value when a part is one. A complex128
  array's parts are float64 arrays (a complex64 one is widened);
* dataclass instances (``@dataclasses.dataclass``, frozen or not): the children are
  the fields, in declaration order. A dataclass is rebuilt field by field without
  calling ``__init__`` or ``__post_init__`` (a gradient is no longer a valid
  argument for validation code, and ``init=False`` fields are kept too); attributes
  that are not fields are not carried.

Everything else is a leaf, and a leaf must be a fastape value (a ``Var``: nested
transforms pass them), a real number or an array of real
numbers (numpy bool, integer or float dtype; anything ``np.asarray`` turns into
one). ``str``, ``bytes`` and objects numpy can only hold as ``dtype=object`` raise a
``TypeError`` that names the leaf's path (``args[0]['w'][1]``, ``args[1].bias`` for a
namedtuple field).

:func:`flatten` returns the leaves depth first (children in order, dict children
by sorted key) and a :class:`TreeDef`. Numbers (``int``, ``bool``, numpy scalars,
0-d array-likes that are not ndarrays) become Python floats; ndarrays are
returned as they are, never copied or converted, so nothing the caller passed is
modified or aliased by a later write. Two treedefs are equal when the containers
(type, length, dict keys) and the leaves' shapes agree: a number and a 0-d array
are both scalar leaves of shape ``()``.

Speed: a compiled :class:`fastape.Function` flattens its arguments on every
call, so the usual cases (one float, one ndarray, a tuple of one of them, which is
what a one-argument call passes, and a tuple of floats and arrays) return before
any recursion, with a treedef shared between calls (compare with ``is`` first).
For arguments that are plain floats and float64 arrays, Function does the same
check in C before calling here (see ``Function._leaves``).
"""

import collections
import dataclasses
import numbers
import operator
import sys

import numpy as np

from fastape._complex import Complex
from fastape._complex import make as _make_complex
from fastape._tape import Var

__all__ = ["TreeDef", "flatten", "unflatten", "describe", "difference",
           "normalize_argnums", "conjugate", "complex_mismatch"]

# A structure is held as a nested key of plain tuples, so that comparing and hashing
# two of them runs in C:
#   a leaf       its shape, a tuple of ints: () for a number or a 0-d array
#   None         None
#   a container  (cls, keys, children): keys the sorted dict keys (None for
#                sequences), children a tuple of the children's keys. The first item
#                is a type, never an int: that tells a container from a shape.
# Beside it, an aux tree carries what rebuilding needs but equality must ignore (the
# insertion order of a dict's keys, a defaultdict's factory): None for a subtree
# without dicts, else (extra, children's auxes).
_LEAF, _NONE, _SEQ, _NAMEDTUPLE, _DICT, _DATACLASS, _COMPLEX = range(7)
_F64 = np.dtype(np.float64)
_REAL_KINDS = "biuf"

# The kind of each type met so far: a dict lookup instead of isinstance checks (an
# isinstance against numbers.Real costs more than a whole fast-path flatten).
_BUILTIN_KINDS = {float: _LEAF, int: _LEAF, np.ndarray: _LEAF, type(None): _NONE,
                  list: _SEQ, tuple: _SEQ, dict: _DICT, complex: _COMPLEX,
                  np.complex64: _COMPLEX, np.complex128: _COMPLEX,
                  np.clongdouble: _COMPLEX, Complex: _COMPLEX}
_KINDS = dict(_BUILTIN_KINDS)


def _kind(cls):
    k = _KINDS.get(cls)
    if k is None:
        if issubclass(cls, tuple) and hasattr(cls, "_fields"):
            k = _NAMEDTUPLE
        elif issubclass(cls, (list, tuple)):
            k = _SEQ
        elif issubclass(cls, dict):
            k = _DICT
        elif dataclasses.is_dataclass(cls):
            k = _DATACLASS
        else:
            k = _LEAF
        if len(_KINDS) > 1024:       # classes made on the fly must not pile up
            _KINDS.clear()
            _KINDS.update(_BUILTIN_KINDS)
        _KINDS[cls] = k
    return k


_FIELDS = {}


def _fields(cls):
    """A dataclass's field names, in declaration order."""
    f = _FIELDS.get(cls)
    if f is None:
        if len(_FIELDS) > 1024:      # as _KINDS: classes made on the fly must not pile up
            _FIELDS.clear()
        f = _FIELDS[cls] = tuple(x.name for x in dataclasses.fields(cls))
    return f


def _is_leaf(key):
    return type(key) is tuple and (not key or type(key[0]) is int)


class TreeDef:
    """The structure of a pytree and the shape of each leaf (see the module doc).

    Made by :func:`flatten`; equal (and of equal hash) for equal structures and
    leaf shapes. ``num_leaves``, ``leaf_shapes``, ``is_leaf`` and ``children()``
    describe it; :func:`describe` writes it out. Treedefs are shared: flattening
    two trees of the same structure (and dict key order) usually returns the same
    object, so ``a is b`` is the cheap first test.
    """
    __slots__ = ("_key", "_aux", "num_leaves", "_children", "_imag")

    def __init__(self, key, aux, num_leaves):
        self._key = key
        self._aux = aux
        self.num_leaves = num_leaves
        self._children = None
        self._imag = None

    @property
    def imag_leaves(self):
        """The positions of the leaves that are imaginary parts of complex values."""
        if self._imag is None:
            out = []
            _imag_leaves(self._key, 0, out)
            self._imag = tuple(out)
        return self._imag

    def __eq__(self, other):
        if self is other:
            return True
        if type(other) is not TreeDef:
            return NotImplemented
        return self._key == other._key

    def __hash__(self):
        return hash(self._key)

    def __repr__(self):
        return f"TreeDef({describe(self)})"

    @property
    def is_leaf(self):
        """Is the whole tree one leaf (a number or an array)?"""
        return _is_leaf(self._key)

    @property
    def leaf_shapes(self):
        """The leaves' shapes in leaf order (``()`` for numbers)."""
        out = []
        _shapes(self._key, out)
        return tuple(out)

    def children(self):
        """The treedefs of a container's children, in order (dict children by sorted
        key); [] for a leaf or None."""
        if self._children is None:
            key, aux = self._key, self._aux
            if key is None or _is_leaf(key):
                self._children = []
            else:
                kids = key[2]
                auxes = aux[1] if aux is not None else (None,) * len(kids)
                self._children = [_make(k, a, None) for k, a in zip(kids, auxes)]
        return list(self._children)


def _imag_leaves(key, start, out):
    """Append the positions of key's imaginary leaves (from start); return the count
    of its leaves."""
    if _is_leaf(key):
        return 1
    if key is None:
        return 0
    if key[0] is complex:
        out.append(start + 1)
        return 2
    n = 0
    for k in key[2]:
        n += _imag_leaves(k, start + n, out)
    return n


def conjugate(treedef, leaves):
    """The leaves with the imaginary parts negated: a cotangent in JAX's convention
    (``grad`` of a real function of z = x + iy is ∂f/∂x − i ∂f/∂y) from the real
    pairs' multipliers, and back."""
    imag = treedef.imag_leaves
    if not imag:
        return leaves
    leaves = list(leaves)
    for i in imag:
        if leaves[i] is not None:
            leaves[i] = -leaves[i]
    return leaves


def _shapes(key, out):
    if _is_leaf(key):
        out.append(key)
    elif key is not None:
        for k in key[2]:
            _shapes(k, out)


def _count(key):
    if _is_leaf(key):
        return 1
    return 0 if key is None else sum(_count(k) for k in key[2])


# Treedefs are shared, so that a Function's check of its arguments' structure is an
# `is` and the fast paths of flatten make no object. A treedef of one leaf and of a
# tuple of one leaf (the arguments of a one-argument call) are found by shape; any
# other by its key, or (key, aux) when it has dicts. Bounded: a program that sees ever
# new structures only loses the sharing.
_LEAF_DEFS = {}
_ARGS1_DEFS = {}
_SHARED = {}
_MAX_SHARED = 512


def _make(key, aux, n):
    if _is_leaf(key):
        table, k = _LEAF_DEFS, key
    elif key is not None and key[0] is tuple and len(key[2]) == 1 and _is_leaf(key[2][0]):
        table, k = _ARGS1_DEFS, key[2][0]
    else:
        table, k = _SHARED, (key if aux is None else (key, aux))
    try:
        td = table.get(k)
    except TypeError:           # an unhashable defaultdict factory: not shared
        return TreeDef(key, aux, _count(key) if n is None else n)
    if td is None:
        if len(table) >= _MAX_SHARED:
            table.clear()
        td = table[k] = TreeDef(key, aux, _count(key) if n is None else n)
    return td


_SCALAR_DEF = _make((), None, 1)
_ARGS1_SCALAR_DEF = _make((tuple, None, ((),)), None, 1)


# ---------------------------------------------------------------------------
# flatten
# ---------------------------------------------------------------------------

class _PathError(Exception):
    """A bad leaf somewhere below; each container it passes adds its accessor."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message
        self.parts = []         # accessors, innermost first


def _accessor(cls, keys, i):
    if keys is not None:
        return f"[{keys[i]!r}]"
    if _kind(cls) == _NAMEDTUPLE:
        return f".{cls._fields[i]}"
    if _kind(cls) == _DATACLASS:
        return f".{_fields(cls)[i]}"
    return f"[{i}]"


def flatten(tree, root="tree", where=None):
    """``(leaves, treedef)`` of a pytree (see the module doc).

    ``root`` names the tree in error messages (a bad leaf is reported as
    ``root['w'][1]``), ``where`` names the caller (``"compiled f"``); a bad leaf
    raises ``TypeError``.

    >>> leaves, td = flatten({'w': [1, 2.5], 'b': None})
    >>> leaves, describe(td)
    ([1.0, 2.5], "{'b': None, 'w': [scalar, scalar]}")
    """
    t = type(tree)
    # fast paths, no recursion and no new object but the list: the usual calls of a
    # Function (a one-argument call passes a tuple of one leaf)
    if t is tuple and len(tree) == 1:
        x = tree[0]
        tx = type(x)
        if tx is float:
            return [x], _ARGS1_SCALAR_DEF
        if tx is np.ndarray:
            dt = x.dtype
            if dt is _F64 or dt.kind in _REAL_KINDS:
                td = _ARGS1_DEFS.get(x.shape)
                if td is not None:
                    return [x], td
    elif t is float:
        return [tree], _SCALAR_DEF
    elif t is np.ndarray:
        dt = tree.dtype
        if dt is _F64 or dt.kind in _REAL_KINDS:
            td = _LEAF_DEFS.get(tree.shape)
            if td is not None:
                return [tree], td
    if t is tuple:                  # the arguments of a call: often numbers and arrays only
        shapes = []
        for x in tree:
            tx = type(x)
            if tx is float:
                shapes.append(())
            elif tx is np.ndarray and (x.dtype is _F64 or x.dtype.kind in _REAL_KINDS):
                shapes.append(x.shape)
            else:
                break
        else:
            td = _SHARED.get((tuple, None, tuple(shapes)))
            if td is not None:
                return list(tree), td
    leaves = []
    try:
        key, aux = _flatten(tree, leaves)
    except _PathError as e:
        path = root + "".join(reversed(e.parts))
        raise TypeError(f"{where}: {path} {e.message}" if where else
                        f"{path} {e.message}") from None
    except RecursionError:
        # the containers are walked recursively (in Python, so the interpreter's limit
        # stops it long before the C stack): say what happened instead of where
        raise ValueError(f"{where + ': ' if where else ''}{root} is nested more deeply "
                         "than fastape walks (about the interpreter's recursion limit, "
                         f"{sys.getrecursionlimit()} levels)") from None
    return leaves, _make(key, aux, len(leaves))


def _flatten(x, leaves):
    """Append x's leaves to `leaves`; return (key, aux) of x."""
    cls = type(x)
    if cls is float:
        leaves.append(x)
        return (), None
    kind = _KINDS.get(cls)
    if kind is None:
        kind = _kind(cls)
    if kind == _LEAF and isinstance(x, np.ndarray) and x.dtype.kind == "c":
        kind = _COMPLEX
    if kind == _LEAF:
        leaf, shape = _leaf(x)
        leaves.append(leaf)
        return shape, None
    if kind == _COMPLEX:
        return _flatten_complex(x, leaves), None
    if kind == _NONE:
        return None, None
    if kind == _DICT:
        try:
            keys = tuple(sorted(x))
        except TypeError as e:
            raise _PathError(f"is a dict whose keys cannot be sorted ({e}); a pytree "
                             "dict needs mutually comparable keys") from None
        items = [x[k] for k in keys]
        extra = (tuple(x), x.default_factory if isinstance(x, collections.defaultdict)
                 else None)
    elif kind == _DATACLASS:
        items = [getattr(x, f) for f in _fields(cls)]
        keys = extra = None
    else:
        items = x
        keys = extra = None
    ckeys = []
    cauxes = []
    any_aux = extra is not None
    try:
        for c in items:
            tc = type(c)                # numbers and arrays need no call of their own
            if tc is float:
                leaves.append(c)
                ckeys.append(())
                cauxes.append(None)
                continue
            if tc is np.ndarray and (c.dtype is _F64 or c.dtype.kind in _REAL_KINDS):
                leaves.append(c)
                ckeys.append(c.shape)
                cauxes.append(None)
                continue
            k, a = _flatten(c, leaves)
            ckeys.append(k)
            cauxes.append(a)
            if a is not None:
                any_aux = True
    except _PathError as e:
        e.parts.append(_accessor(cls, keys, len(ckeys)))   # the child that failed
        raise
    return (cls, keys, tuple(ckeys)), ((extra, tuple(cauxes)) if any_aux else None)


def _flatten_complex(x, leaves):
    """A complex number or array is a container of two leaves, its real and imaginary
    parts (floats for a number, float64 arrays, Vars for a Complex value)."""
    if type(x) is Complex:
        re, im = x.real, x.imag
        shape = x.shape
    elif isinstance(x, np.ndarray):
        if x.dtype == np.clongdouble and x.dtype != np.complex128:
            raise _PathError(f"is of dtype {x.dtype}; fastape's complex values are complex128")
        re = np.asarray(x.real, dtype=np.float64)
        im = np.asarray(x.imag, dtype=np.float64)
        shape = x.shape
    else:
        re, im, shape = float(x.real), float(x.imag), ()
    leaves.append(re)
    leaves.append(im)
    return (complex, None, (shape, shape))


def _leaf(x):
    """(leaf, shape) of a leaf value: a float for a number, an ndarray as it is."""
    cls = type(x)
    if cls is np.ndarray or isinstance(x, np.ndarray):
        return x, _real_shape(x, "an array")
    if cls is Var:          # a value of a tape (nested transforms take them as leaves)
        return x, x.shape
    if cls is int or cls is bool:
        try:
            return float(x), ()
        except OverflowError as e:
            raise _PathError(f"is an int too large for a float ({e})") from None
    if isinstance(x, (str, bytes)):
        raise _PathError(f"must be a real number or an array of them, got {cls.__name__}")
    if isinstance(x, numbers.Real):
        return float(x), ()
    try:
        a = np.asarray(x)
    except Exception as e:
        raise _PathError(f"must be a real number or an array of them, got "
                         f"{cls.__name__} ({e})") from None
    shape = _real_shape(a, cls.__name__)
    return (float(a) if shape == () else a), shape


def _real_shape(a, what):
    """The shape of array `a` (made from a `what`) if its dtype is real, else _PathError."""
    dt = a.dtype
    if dt is _F64 or dt.kind in _REAL_KINDS:
        return a.shape
    if dt.kind == "c":
        raise _PathError(f"is complex ({what} of dtype {dt}); fastape differentiates "
                         "real functions")
    if what == "an array":
        what = f"an array of dtype {dt}"
    raise _PathError(f"must be a real number or an array of them, got {what}")


# ---------------------------------------------------------------------------
# unflatten
# ---------------------------------------------------------------------------

def unflatten(treedef, leaves):
    """The pytree of structure ``treedef`` whose leaves are ``leaves`` (any values,
    in leaf order): the inverse of :func:`flatten`.

    >>> leaves, td = flatten({'w': [1.0, 2.0], 'b': 3.0})
    >>> leaves
    [3.0, 1.0, 2.0]
    >>> unflatten(td, [x * 10 for x in leaves])
    {'w': [10.0, 20.0], 'b': 30.0}
    """
    if not isinstance(leaves, (list, tuple)):
        leaves = list(leaves)
    if len(leaves) != treedef.num_leaves:
        raise ValueError(f"unflatten: the structure {describe(treedef)} has "
                         f"{treedef.num_leaves} leaves, got {len(leaves)}")
    key = treedef._key
    if _is_leaf(key):
        return leaves[0]
    return _build(key, treedef._aux, iter(leaves))


def _build(key, aux, it):
    if key is None:
        return None
    if _is_leaf(key):
        return next(it)
    cls, keys, children = key
    if cls is complex:
        re, im = next(it), next(it)
        return _make_complex(re, im, children[0])
    if aux is None:
        values = [_build(k, None, it) for k in children]
    else:
        values = [_build(k, a, it) for k, a in zip(children, aux[1])]
    if keys is None:
        if cls is list:
            return values
        if cls is tuple:
            return tuple(values)
        kind = _kind(cls)
        if kind == _NAMEDTUPLE:
            return cls(*values)
        if kind == _DATACLASS:
            obj = object.__new__(cls)
            for f, v in zip(_fields(cls), values):
                object.__setattr__(obj, f, v)       # frozen ones too
            return obj
        return cls(values)
    order, factory = aux[0]
    by_key = dict(zip(keys, values))
    pairs = [(k, by_key[k]) for k in order]
    if cls is dict:
        return dict(pairs)
    if issubclass(cls, collections.defaultdict):
        return cls(factory, pairs)
    return cls(pairs)


# ---------------------------------------------------------------------------
# describing structures and their differences
# ---------------------------------------------------------------------------

def describe(treedef):
    """A structure written like the Python value it stands for, leaves shown as
    ``scalar`` or ``array(3,)`` (their shape), dicts in sorted key order:
    ``{'b': scalar, 'w': [scalar, array(3,)]}``, ``P(x=scalar, y=array(2, 2))``."""
    return _describe(treedef._key)


def _describe(key):
    if key is None:
        return "None"
    if _is_leaf(key):
        return "scalar" if key == () else f"array{key}"
    cls, keys, children = key
    if cls is complex:
        return "complex" if children[0] == () else f"complex array{children[0]}"
    if keys is not None:
        body = "{" + ", ".join(f"{k!r}: {_describe(c)}" for k, c in zip(keys, children)) + "}"
        return body if cls is dict else f"{cls.__name__}({body})"
    if _kind(cls) in (_NAMEDTUPLE, _DATACLASS):
        names = cls._fields if _kind(cls) == _NAMEDTUPLE else _fields(cls)
        return f"{cls.__name__}(" + ", ".join(
            f"{f}={_describe(k)}" for f, k in zip(names, children)) + ")"
    parts = [_describe(c) for c in children]
    if len(parts) > 8:      # a long list of numbers (a Python loop's argument)
        parts = parts[:3] + [f"… {len(parts) - 4} more …"] + parts[-1:]
    body = ", ".join(parts)
    if issubclass(cls, list):
        body = f"[{body}]"
    else:
        body = f"({body},)" if len(children) == 1 else f"({body})"
    return body if cls in (list, tuple) else f"{cls.__name__}({body})"


def _what(key):
    """A short phrase for one node: 'a scalar', 'a list of 3', 'a dict with keys …'."""
    if key is None:
        return "None"
    if _is_leaf(key):
        return "a scalar" if key == () else f"an array of shape {key}"
    cls, keys, children = key
    if cls is complex:
        return "a complex number" if children[0] == () else \
            f"a complex array of shape {children[0]}"
    name = cls.__name__
    a = "an" if name[:1].lower() in "aeiou" else "a"
    if keys is not None:
        return f"{a} {name} with keys {list(keys)}"
    if _kind(cls) == _NAMEDTUPLE:
        return f"{a} {name} namedtuple"
    if _kind(cls) == _DATACLASS:
        return f"{a} {name} dataclass"
    return f"{a} {name} of {len(children)}"


def difference(found, expected, root="tree"):
    """Where two structures first differ, as a sentence naming the path:
    ``"args[0]['w'][1] is an array of shape (4,), expected an array of shape (3,)"``;
    None when they are equal."""
    if found == expected:
        return None
    return _difference(found._key, expected._key, root)


def complex_mismatch(found, expected):
    """Do two structures first differ where one has a complex value and the other a
    real leaf of the same shape (a dtype difference: a TypeError, as in JAX)?"""
    return found != expected and _complex_mismatch(found._key, expected._key)


def _complex_mismatch(a, b):
    if a == b:
        return False
    ca = type(a) is tuple and bool(a) and a[0] is complex
    cb = type(b) is tuple and bool(b) and b[0] is complex
    if ca != cb:
        other = b if ca else a
        return _is_leaf(other) and other == (a if ca else b)[2][0]
    if (a is None or b is None or _is_leaf(a) or _is_leaf(b) or a[0] is not b[0]
            or a[1] != b[1] or len(a[2]) != len(b[2])):
        return False
    for ca_, cb_ in zip(a[2], b[2]):
        if ca_ != cb_:
            return _complex_mismatch(ca_, cb_)
    return False


def _difference(a, b, path):
    if a == b:
        return None
    if (a is None or b is None or _is_leaf(a) or _is_leaf(b) or a[0] is not b[0]
            or a[1] != b[1] or len(a[2]) != len(b[2])):
        return f"{path} is {_what(a)}, expected {_what(b)}"
    for i, (ca, cb) in enumerate(zip(a[2], b[2])):
        d = _difference(ca, cb, path + _accessor(a[0], a[1], i))
        if d is not None:
            return d
    return None


# ---------------------------------------------------------------------------
# argnums
# ---------------------------------------------------------------------------

def normalize_argnums(argnums, nargs, where):
    """``(single, nums)``: whether ``argnums`` is one integer, and the argument
    positions as a tuple of non-negative ints (negative ones count from the end, as
    in Python indexing). Raises ``ValueError`` naming ``where`` for a position
    outside ``nargs`` arguments, ``TypeError`` for a non-integer."""
    try:
        nums = (operator.index(argnums),)
        single = True
    except TypeError:
        single = False
        try:
            nums = tuple(operator.index(i) for i in argnums)
        except TypeError:
            raise TypeError(f"{where}: argnums must be an int or a tuple of ints, got "
                            f"{argnums!r}") from None
    for i in nums:
        if not -nargs <= i < nargs:
            raise ValueError(f"{where}: argnums={argnums!r} is out of range for {nargs} "
                             "positional argument(s)")
    return single, tuple(i % nargs for i in nums)
