"""Complex values on the tape: a complex number or array is the pair of its real and
imaginary parts, each a real value of the tape.

fastape's tape holds float64 nodes; a complex intermediate is two of them (two doubles
per element in the same value and multiplier arenas), and every complex op is written
with real ops of the registry: ``(a+ib)(c+id) = (ac−bd) + i(ad+bc)``,
``exp(x+iy) = eˣ(cos y + i sin y)``, a complex matrix product is four real ``dgemm``s,
a complex solve one real solve of the block system ``[[A, −B], [B, A]]``. The sweeps,
forward mode, nesting, compiled replay and save/load are therefore those of real
nodes, unchanged. The FFT family is one linear node each (``fastape._fft``).

A part that is exactly zero (the imaginary part of a real value mixed into complex
code) is ``None`` and records nothing: ``x * (1 + 2j)`` for a real ``x`` costs two
multiplications, not four.

Conventions are JAX's (``fastape.api`` applies them at the boundary): for a real
``f`` of complex ``z = x + iy``, ``grad(f)(z) = ∂f/∂x − i ∂f/∂y``; ``vjp`` of a
cotangent ``c`` is ``conj(Jᵀ conj(c))`` with ``J`` the real Jacobian of the pairs;
``jvp`` is ``J`` applied to the tangent pair.
"""

import math
import numbers

import numpy as np

from fastape import _tape
from fastape._tape import Var

__all__ = ["Complex", "is_complex", "parts", "make"]


def _zeros(shape):
    return np.zeros(shape) if shape else 0.0


def is_complex(x):
    """Is x a complex operand (a Complex value, a complex number or array)?"""
    return (type(x) is Complex or isinstance(x, (complex, np.complexfloating))
            or (isinstance(x, np.ndarray) and x.dtype.kind == "c"))


def parts(x, where="complex"):
    """(real, imaginary) of an operand: Vars, float64 arrays or floats; the imaginary
    part None when it is exactly zero (a real operand)."""
    if type(x) is Complex:
        return x._re, x._im
    if type(x) is Var:
        return x, None
    if isinstance(x, (complex, np.complexfloating)):
        return float(x.real), (float(x.imag) if x.imag != 0 else None)
    if isinstance(x, numbers.Real):
        return float(x), None
    try:
        a = np.asarray(x)
    except Exception as e:
        raise TypeError(f"{where}: operand of type {type(x).__name__} is not numeric ({e})") \
            from None
    if a.dtype.kind == "c":
        return np.ascontiguousarray(a.real, dtype=np.float64), \
            np.ascontiguousarray(a.imag, dtype=np.float64)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{where}: operand must be numeric, got dtype {a.dtype}")
    return np.asarray(a, dtype=np.float64), None


def _shape(p):
    return p.shape if isinstance(p, (Var, np.ndarray)) else ()


def _full(p, shape):
    """A part at the value's full shape (broadcast: a read-only view of a constant, a
    BROADCAST node of a fastape value, only where the shapes differ)."""
    return p if _shape(p) == tuple(shape) else np.broadcast_to(p, shape)


def make(re, im, shape=None):
    """The complex value of these parts: a Complex when either is a fastape value, else
    a complex number (shape ()) or array."""
    if type(re) is Var or type(im) is Var:
        return Complex(re, im, shape)
    if shape is None:
        shape = np.broadcast_shapes(_shape(re), _shape(im) if im is not None else ())
    r = np.broadcast_to(np.asarray(re, dtype=np.float64), shape)
    out = r + 1j * (np.asarray(im, dtype=np.float64) if im is not None else 0.0)
    if out.shape == () and not isinstance(re, np.ndarray):
        return complex(out)
    return out


# -- arithmetic on parts (None: exactly zero) ---------------------------------------

def _add(a, b):
    if a is None:
        return b
    return a if b is None else a + b


def _sub(a, b):
    if b is None:
        return a
    return -b if a is None else a - b


def _mul(a, b):
    return None if a is None or b is None else a * b


def _neg(a):
    return None if a is None else -a


def _div(a, b):
    return None if a is None else a / b


def _real_of(z):
    """A part for use where a value is needed (an exact zero as 0.0)."""
    return 0.0 if z is None else z


def _shared(parts, like):
    """Constant array parts as constants of like's tape, each once: every part of a
    complex product is read twice, and a plain array would be copied for each."""
    if type(like) is not Var:
        return parts
    return tuple(_tape.constant_like(like, p) if type(p) is np.ndarray and p.ndim else p
                 for p in parts)


def _cmul(ar, ai, br, bi):
    ar, ai = _shared((ar, ai), br if type(br) is Var else bi)
    br, bi = _shared((br, bi), ar if type(ar) is Var else ai)
    return _sub(_mul(ar, br), _mul(ai, bi)), _add(_mul(ar, bi), _mul(ai, br))


def _cdiv(ar, ai, br, bi):
    if bi is None:
        return _div(ar, br), _div(ai, br)
    d = br * br + bi * bi
    return _div(_add(_mul(ar, br), _mul(ai, bi)), d), _div(_sub(_mul(ai, br), _mul(ar, bi)), d)


def _abs(re, im):
    return np.abs(re) if im is None else np.hypot(re, im)


def _angle(re, im):
    return np.arctan2(_real_of(im), re)


def _cpow_int(re, im, p):
    """z**p for an integer p by repeated squaring (numpy's exact small powers)."""
    if p == 0:
        return np.ones(_shape(re)) if _shape(re) else 1.0, None
    if p < 0:
        r, i = _cpow_int(re, im, -p)
        return _cdiv(1.0, None, r, i)
    rr, ri = None, None
    br, bi = re, im
    while p:
        if p & 1:
            rr, ri = (br, bi) if rr is None else _cmul(rr, ri, br, bi)
        p >>= 1
        if p:
            br, bi = _cmul(br, bi, br, bi)
    return rr, ri


def _exp(re, im):
    e = np.exp(re)
    if im is None:
        return e, None
    return e * np.cos(im), e * np.sin(im)


def _log(re, im):
    return np.log(_abs(re, im)), _angle(re, im)


def _pow(zr, zi, wr, wi):
    if wi is None and not isinstance(wr, (Var, np.ndarray)):
        p = float(wr)
        if p == int(p) and abs(p) <= 64:
            return _cpow_int(zr, zi, int(p))
        # polar form: |z|^p (cos pθ + i sin pθ), exact on the positive real axis
        r, t = _abs(zr, zi) ** p, _angle(zr, zi) * p
        return r * np.cos(t), r * np.sin(t)
    lr, li = _log(zr, zi)
    return _exp(*_cmul(lr, li, wr, wi))


def _sqrt(re, im):
    r, t = np.sqrt(_abs(re, im)), _angle(re, im) * 0.5
    return r * np.cos(t), r * np.sin(t)


def _sin(x, y):
    if y is None:
        return np.sin(x), None
    return np.sin(x) * np.cosh(y), np.cos(x) * np.sinh(y)


def _cos(x, y):
    if y is None:
        return np.cos(x), None
    return np.cos(x) * np.cosh(y), -(np.sin(x) * np.sinh(y))


def _sinh(x, y):
    if y is None:
        return np.sinh(x), None
    return np.sinh(x) * np.cos(y), np.cosh(x) * np.sin(y)


def _cosh(x, y):
    if y is None:
        return np.cosh(x), None
    return np.cosh(x) * np.cos(y), np.sinh(x) * np.sin(y)


def _tan(x, y):
    if y is None:
        return np.tan(x), None
    d = np.cos(2 * x) + np.cosh(2 * y)
    return np.sin(2 * x) / d, np.sinh(2 * y) / d


def _tanh(x, y):
    if y is None:
        return np.tanh(x), None
    d = np.cosh(2 * x) + np.cos(2 * y)
    return np.sinh(2 * x) / d, np.sin(2 * y) / d


def _square(x, y):
    return _cmul(x, y, x, y)


def _reciprocal(x, y):
    return _cdiv(1.0, None, x, y)


_LN10, _LN2 = math.log(10.0), math.log(2.0)

#: numpy ufunc -> the rule on parts, for one operand
UNARY = {
    np.negative: lambda x, y: (-x, _neg(y)),
    np.positive: lambda x, y: (x, y),
    np.conjugate: lambda x, y: (x, _neg(y)),
    np.exp: _exp, np.log: _log, np.sqrt: _sqrt, np.square: _square,
    np.reciprocal: _reciprocal, np.sin: _sin, np.cos: _cos, np.tan: _tan,
    np.sinh: _sinh, np.cosh: _cosh, np.tanh: _tanh,
    np.log10: lambda x, y: tuple(_div(p, _LN10) for p in _log(x, y)),
    np.log2: lambda x, y: tuple(_div(p, _LN2) for p in _log(x, y)),
}
#: numpy ufunc -> the rule on parts, for two operands
BINARY = {
    np.add: lambda a, b, c, d: (_add(a, c), _add(b, d)),
    np.subtract: lambda a, b, c, d: (_sub(a, c), _sub(b, d)),
    np.multiply: _cmul, np.true_divide: _cdiv, np.power: _pow,
}
#: ufuncs whose result is real
REAL_UNARY = {np.absolute: _abs}


class Complex:
    """A complex fastape value: its real and imaginary parts (``z.real``, ``z.imag``),
    each a real fastape value or a constant. Made by fastape from complex arguments of
    a transform and by complex operations on fastape values; numpy's operators,
    ufuncs and functions apply to it as to a complex array (see
    ``fastape._complex``)."""

    __slots__ = ("_re", "_im", "shape")
    __array_priority__ = 2000          # above Var's: ndarray (op) Complex comes here
    _fastape_complex = True            # Var (op) Complex: the tape's binary() asks this

    def __init__(self, re, im=None, shape=None):
        if shape is None:
            shape = _shape(re) if im is None else np.broadcast_shapes(_shape(re), _shape(im))
        self._re = re
        self._im = im
        self.shape = tuple(shape)

    # -- what it is ---------------------------------------------------------------
    @property
    def real(self):
        """The real part: a fastape value (or a constant array)."""
        return _full(self._re, self.shape)

    @property
    def imag(self):
        """The imaginary part: a fastape value, or a constant array (zeros for a real
        value)."""
        return _zeros(self.shape) if self._im is None else _full(self._im, self.shape)

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def dtype(self):
        return np.dtype(np.complex128)

    @property
    def value(self):
        """The current value: a complex number or a new complex128 array."""
        re = self._re.value if type(self._re) is Var else self._re
        im = self._im.value if type(self._im) is Var else self._im
        return make(re, im, self.shape)

    @property
    def tape(self):
        for p in (self._re, self._im):
            if type(p) is Var:
                return p.tape
        return None

    def __repr__(self):
        return f"Complex({self.value!r})"

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d complex value")
        return self.shape[0]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __hash__(self):
        return id(self) >> 4

    # -- arithmetic ---------------------------------------------------------------
    def _binary(self, ufunc, a, b):
        ar, ai = parts(a, _name(ufunc))
        br, bi = parts(b, _name(ufunc))
        return _result(BINARY[ufunc](ar, ai, br, bi))

    def __add__(self, o):
        return self._binary(np.add, self, o)

    def __radd__(self, o):
        return self._binary(np.add, o, self)

    def __sub__(self, o):
        return self._binary(np.subtract, self, o)

    def __rsub__(self, o):
        return self._binary(np.subtract, o, self)

    def __mul__(self, o):
        return self._binary(np.multiply, self, o)

    def __rmul__(self, o):
        return self._binary(np.multiply, o, self)

    def __truediv__(self, o):
        return self._binary(np.true_divide, self, o)

    def __rtruediv__(self, o):
        return self._binary(np.true_divide, o, self)

    def __pow__(self, o, mod=None):
        if mod is not None:
            raise TypeError("pow() with a modulus is not defined for complex values")
        return self._binary(np.power, self, o)

    def __rpow__(self, o, mod=None):
        if mod is not None:
            raise TypeError("pow() with a modulus is not defined for complex values")
        return self._binary(np.power, o, self)

    def __neg__(self):
        return _result((-self._re, _neg(self._im)))

    def __pos__(self):
        return self

    def __abs__(self):
        return _abs(self._re, self._im)

    def __matmul__(self, o):
        return matmul(self, o)

    def __rmatmul__(self, o):
        return matmul(o, self)

    def conj(self):
        return _result((self._re, _neg(self._im)))

    conjugate = conj

    def _no_order(self, *args):
        raise TypeError("complex fastape values have no ordering (<, <=, >, >=); compare "
                        "their real parts, abs() or z.value")

    __lt__ = __le__ = __gt__ = __ge__ = _no_order

    def __eq__(self, o):
        raise TypeError("== on a complex fastape value: compare z.real and z.imag (recorded "
                        "as guards), or z.value")

    __ne__ = __eq__

    def __bool__(self):
        raise TypeError("the truth value of a complex fastape value would drop it from the "
                        "tape; test z.value or a real part")

    def __complex__(self):
        raise TypeError("complex() of a fastape value would drop it from the tape; read "
                        "z.value for the number")

    def __float__(self):
        raise TypeError("float() of a complex fastape value: take np.real(z) or abs(z) "
                        "(float() would also drop it from the tape)")

    __int__ = __float__

    # -- indexing and methods -----------------------------------------------------
    def __getitem__(self, key):
        return _on_parts(lambda p: p[key] if p is not None else None, self,
                         zero_shape=np.empty(self.shape)[key].shape)

    def __setitem__(self, key, value):
        vr, vi = parts(value, "complex item assignment")
        re, im = self.real, self._im
        if type(re) is not Var:
            re = np.array(re, dtype=np.float64)
        re[key] = vr
        if vi is not None or im is not None:
            im = self.imag
            if type(im) is not Var:
                im = np.array(im, dtype=np.float64)
            im[key] = _real_of(vi)
        self._re, self._im = re, im

    @property
    def T(self):
        return np.transpose(self)

    def transpose(self, *axes):
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))):
            axes = axes[0]
        return np.transpose(self, axes or None)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return np.reshape(self, shape)

    def ravel(self, order="C"):
        return np.ravel(self, order)

    flatten = ravel

    def squeeze(self, axis=None):
        return np.squeeze(self, axis)

    def swapaxes(self, a, b):
        return np.swapaxes(self, a, b)

    def sum(self, axis=None, keepdims=False):
        return np.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return np.mean(self, axis=axis, keepdims=keepdims)

    def copy(self):
        return Complex(self._re, self._im, self.shape)

    def astype(self, dtype, *args, **kwargs):
        dt = np.dtype(dtype)
        if dt == np.complex128:
            return self
        raise TypeError(f"astype({dtype!r}) of a complex fastape value: it is complex128; "
                        "take np.real(z) or abs(z) for a real value")

    def dot(self, o):
        return np.dot(self, o)

    # -- numpy protocols ----------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError("a complex fastape value cannot become a numpy array (that would "
                        "drop it from the tape); read z.value for the numbers")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return array_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        from fastape import _complex_functions
        return _complex_functions.array_function(func, args, kwargs)


def _name(ufunc):
    return f"numpy.{getattr(ufunc, '__name__', ufunc)}"


def _result(pair, shape=None):
    return make(pair[0], pair[1], shape)


def _on_parts(fn, z, zero_shape=None):
    """fn applied to each part of z (a structural, real-linear map): the imaginary
    part stays None when it was."""
    re = fn(z._re if _shape(z._re) == z.shape else z.real)
    im = None if z._im is None else fn(z.imag)
    return make(re, im, _shape(re) if zero_shape is None else zero_shape)


def array_ufunc(ufunc, method, inputs, kwargs):
    name = _name(ufunc)
    if method != "__call__":
        if method == "reduce" and ufunc is np.add and len(inputs) == 1:
            return np.sum(inputs[0], axis=kwargs.get("axis", 0),
                          keepdims=kwargs.get("keepdims", False))
        raise TypeError(f"{name}.{method} is not supported on complex fastape values")
    if kwargs.get("out") is not None:
        raise TypeError(f"{name}: out= cannot write into or from a fastape value; use the "
                        "returned value")
    extra = {k for k, v in kwargs.items() if not (k == "out" and v is None)}
    if extra:
        raise TypeError(f"{name}: argument(s) {sorted(extra)} are not supported on complex "
                        "fastape values")
    if ufunc is np.matmul:
        return matmul(*inputs)
    if len(inputs) == 1:
        rule = UNARY.get(ufunc)
        x, y = parts(inputs[0], name)
        if rule is not None:
            return _result(rule(x, y))
        rule = REAL_UNARY.get(ufunc)
        if rule is not None:
            return rule(x, y)
        if ufunc in (np.isnan, np.isinf):
            return ufunc(x) | (ufunc(y) if y is not None else False)
        if ufunc is np.isfinite:
            return ufunc(x) & (ufunc(y) if y is not None else True)
    elif len(inputs) == 2:
        rule = BINARY.get(ufunc)
        if rule is not None:
            a, b = (parts(v, name) for v in inputs)
            return _result(rule(*a, *b))
        if ufunc in (np.equal, np.not_equal):
            (a, b), (c, d) = (parts(v, name) for v in inputs)
            eq = (a == c) & (_real_of(b) == _real_of(d))
            return eq if ufunc is np.equal else ~eq
    raise TypeError(f"{name} is not defined for complex operands (it needs real values: "
                    "an ordering, or a real-only function); apply it to np.real(z), "
                    "np.imag(z) or abs(z)")


def binary(code, x, y):
    """Var (op) complex, from the tape's binary(): the op by registry code."""
    from fastape._ops import Op
    op = Op(code).name
    ufunc = _BY_OP.get(op)
    if ufunc is None:
        raise TypeError(f"{op.lower()}: an operand is complex and the op is defined for "
                        "real values only; apply it to np.real(z), np.imag(z) or abs(z)")
    a, b = parts(x, _name(ufunc)), parts(y, _name(ufunc))
    return _result(BINARY[ufunc](*a, *b))


_BY_OP = {"ADD": np.add, "SUB": np.subtract, "MUL": np.multiply, "DIV": np.true_divide,
          "POW": np.power}


def matmul(a, b):
    """a @ b with complex operands: four real matrix products (two when one is real)."""
    ar, ai = parts(a, "numpy.matmul")
    br, bi = parts(b, "numpy.matmul")
    mm = np.matmul
    re = _sub(mm(ar, br), None if ai is None or bi is None else mm(ai, bi))
    im = _add(None if bi is None else mm(ar, bi), None if ai is None else mm(ai, br))
    return make(re, im)
