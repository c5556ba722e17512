"""numpy functions of complex fastape values (``Complex.__array_function__``).

Three kinds, each by one rule rather than one implementation per function:

* *structural and real-linear* functions (reshape, transpose, concatenate, sum, mean,
  cumsum, diff, flip, roll, pad, take, tril, fftshift …) act on the real and the
  imaginary part alike: ``f(x + iy) = f(x) + i f(y)``. The data are the first argument
  (or the arrays of a sequence there); every other argument passes unchanged;
* *multilinear* functions (dot, einsum, tensordot, inner, outer, kron) expand over
  the parts: ``f(a + ib, c + id) = f(a, c) − f(b, d) + i(f(a, d) + f(b, c))``;
* the rest one by one: real, imag, angle, real_if_close, where, prod, the linear
  algebra (solve and inv through the real block system ``[[A, −B], [B, A]]``, det by
  its own rule) and the FFT family (``fastape._fft``).
"""

import itertools

import numpy as np

from fastape import _fft
from fastape._complex import Complex, _cmul, _real_of, _shape, _zeros, is_complex, make, parts

__all__ = ["array_function"]


def _linear(func, args, kwargs):
    """func applied to the real parts and to the imaginary parts of its data."""
    first, rest = args[0], args[1:]
    seq = isinstance(first, (list, tuple))
    items = list(first) if seq else [first]
    split = [parts(x, _display(func)) for x in items]
    res = [r for r, _ in split]
    re = func(res if seq else res[0], *rest, **kwargs)
    if all(i is None for _, i in split):
        im = None
    else:
        ims = [i if i is not None else _zeros(_shape(r)) for r, i in split]
        im = func(ims if seq else ims[0], *rest, **kwargs)
    if isinstance(re, (list, tuple)):           # split, array_split …
        ims = im if im is not None else [None] * len(re)
        return [make(r, i, _shape(r)) for r, i in zip(re, ims)]
    return make(re, im, _shape(re))


def _multilinear(func, operands, *rest, **kwargs):
    """func(*operands, *rest) expanded over the real and imaginary parts of the
    operands: Σ over choices, iᵏ for k imaginary parts chosen."""
    split = [parts(x, _display(func)) for x in operands]
    re = im = None
    for choice in itertools.product((0, 1), repeat=len(split)):
        ps = [p[c] for p, c in zip(split, choice)]
        if any(p is None for p in ps):
            continue
        term = func(*ps, *rest, **kwargs)
        k = sum(choice) % 4
        if k == 0:
            re = term if re is None else re + term
        elif k == 1:
            im = term if im is None else im + term
        elif k == 2:
            re = -term if re is None else re - term
        else:
            im = -term if im is None else im - term
    if re is None:
        re = np.zeros(_shape(im))
    return make(re, im, _shape(re))


def _einsum(*operands, **kwargs):
    if not isinstance(operands[0], str):
        raise TypeError("numpy.einsum of complex fastape values: use the subscripts "
                        "string form")
    return _multilinear(lambda *ops: np.einsum(operands[0], *ops, **kwargs), operands[1:])


def _bilinear(func):
    def f(a, b, *rest, **kwargs):
        return _multilinear(func, (a, b), *rest, **kwargs)
    return f


def _real_vdot(a, b):
    return np.dot(np.ravel(a), np.ravel(b))


def _vdot(a, b):
    """numpy.vdot: the first operand conjugated, both flattened."""
    return _multilinear(_real_vdot, (np.conjugate(a) if is_complex(a) else a, b))


def _real(z):
    return parts(z, "numpy.real")[0] if type(z) is not Complex else z.real


def _imag(z):
    if type(z) is Complex:
        return z.imag
    im = parts(z, "numpy.imag")[1]
    return im if im is not None else np.zeros(np.shape(z))


def _angle(z, deg=False):
    re, im = parts(z, "numpy.angle")
    a = np.arctan2(_real_of(im), re)
    return a * (180.0 / np.pi) if deg else a


def _real_if_close(z, tol=100):
    """The real part when every imaginary part is within tol machine epsilons of 0
    (numpy's rule), else z. The test is recorded (guards): a compiled function whose
    imaginary parts grow re-records rather than drop them."""
    re, im = parts(z, "numpy.real_if_close")
    if im is None:
        return re
    eps = np.finfo(np.float64).eps
    limit = tol * eps if tol > 1 else tol
    return re if bool(np.all(np.abs(im) < limit)) else z


def _iscomplex(z):
    im = parts(z, "numpy.iscomplex")[1]
    return np.zeros(np.shape(z), dtype=bool) if im is None else im != 0


def _isreal(z):
    return ~np.asarray(_iscomplex(z))


def _where(condition, x=None, y=None):
    if x is None and y is None:
        raise TypeError("numpy.where(condition) of a complex fastape value: pass x and y")
    (a, b), (c, d) = parts(x, "numpy.where"), parts(y, "numpy.where")
    re = np.where(condition, a, c)
    im = None if b is None and d is None else np.where(condition, _real_of(b), _real_of(d))
    return make(re, im, _shape(re))


def _prod(z, axis=None, keepdims=False, **kwargs):
    """The product along an axis as a pairwise tree of complex multiplications."""
    if kwargs:
        raise TypeError(f"numpy.prod of a complex fastape value: {sorted(kwargs)} not supported")
    if axis is None:
        z, axis = np.ravel(z), 0
    ax = axis % max(len(np.shape(z)), 1)
    z = np.moveaxis(z, ax, 0)
    re, im = parts(z, "numpy.prod")
    rest = _shape(re)[1:]

    def half(p, lo, hi):
        return None if p is None else p[lo:hi]
    while _shape(re)[0] > 1:
        if _shape(re)[0] % 2:           # an odd count: one more factor, 1 + 0i
            re = np.concatenate([re, np.ones((1,) + rest)])
            im = None if im is None else np.concatenate([im, np.zeros((1,) + rest)])
        h = _shape(re)[0] // 2
        re, im = _cmul(half(re, 0, h), half(im, 0, h), half(re, h, 2 * h), half(im, h, 2 * h))
    out = make(re[0], None if im is None else im[0], _shape(re)[1:])
    if keepdims:
        out = np.expand_dims(out, ax)
    return out


def _solve(a, b):
    """numpy.linalg.solve with complex operands (stacks too, numpy's rules): the real
    block system [[Ar, −Ai], [Ai, Ar]] [xr; xi] = [br; bi], one real LU of twice the
    order per matrix."""
    ar, ai = parts(a, "numpy.linalg.solve")
    br, bi = parts(b, "numpy.linalg.solve")
    shape = _shape(ar)
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise np.linalg.LinAlgError(f"numpy.linalg.solve: a has shape {shape}; a square "
                                    "matrix (or a stack of them) is needed")
    n = shape[-1]
    if ai is None:
        xr = np.linalg.solve(ar, br)
        return make(xr, None if bi is None else np.linalg.solve(ar, bi))
    big = np.concatenate([np.concatenate([ar, -ai], axis=-1),
                          np.concatenate([ai, ar], axis=-1)], axis=-2)
    vector = len(_shape(br)) == 1            # numpy >= 2: only a 1-D b is a vector
    axis = -1 if vector else -2
    rhs = np.concatenate([br, _real_of(bi) + np.zeros(_shape(br))], axis=axis)
    x = np.linalg.solve(big, rhs)
    if vector:
        return make(x[..., :n], x[..., n:])
    return make(x[..., :n, :], x[..., n:, :])


def _inv(a):
    shape = _shape_fn(a)
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise np.linalg.LinAlgError(f"numpy.linalg.inv: a has shape {shape}; a square "
                                    "matrix (or a stack of them) is needed")
    return _solve(a, np.broadcast_to(np.eye(shape[-1]), shape))


def _det(a):
    """numpy.linalg.det of a complex matrix: one node of its own rule (below)."""
    ar, ai = parts(a, "numpy.linalg.det")
    shape = _shape(ar)
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise np.linalg.LinAlgError(f"numpy.linalg.det: a has shape {shape}; a square "
                                    "matrix (or a stack of them) is needed")
    if ai is None:
        return np.linalg.det(ar)
    if len(shape) > 2:                      # a stack: one node per matrix
        flat = np.reshape(make(ar, ai), (-1,) + shape[-2:])
        return np.reshape(np.stack([_det(flat[k]) for k in range(flat.shape[0])]),
                          shape[:-2])
    return make(*_det_parts(ar, ai))


def _det_value(ar, ai):
    d = np.linalg.det(ar + 1j * ai)
    return float(d.real), float(d.imag)


def _det_rule(primals, tangents):
    """d det A = det A · tr(A⁻¹ dA) (Jacobi's formula), complex; written with numpy
    operations so that it runs on numbers and, nested, on fastape values."""
    a = make(*primals)
    d = np.linalg.det(a)
    dd = d * np.trace(np.linalg.inv(a) @ make(*tangents))
    return (np.real(d), np.imag(d)), (np.real(dd), np.imag(dd))


def _make_det():
    from fastape.custom import custom_jvp
    f = custom_jvp(_det_value)
    f.__name__ = "numpy.linalg.det (complex)"
    f.defjvp(_det_rule)
    return f


_det_parts = _make_det()


def _var(z, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kwargs):
    """numpy.var of a complex array: real, var(Re z) + var(Im z) (|z − mean|² averaged)."""
    if out is not None or kwargs:
        raise TypeError("numpy.var of a complex fastape value: out=, where= and the like "
                        "are not supported")
    re, im = parts(z, "numpy.var")
    v = np.var(re, axis=axis, ddof=ddof, keepdims=keepdims)
    return v if im is None else v + np.var(im, axis=axis, ddof=ddof, keepdims=keepdims)


def _std(z, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kwargs):
    return np.sqrt(_var(z, axis, dtype, out, ddof, keepdims, **kwargs))


def _norm(x, ord=None, axis=None, keepdims=False):  # noqa: A002 - numpy's name
    """numpy.linalg.norm of a complex array: the norms that depend on the moduli only
    (vector norms, Frobenius, matrix 1/−1/inf/−inf) are those of |x|."""
    nd = len(_shape_fn(x)) if axis is None else (1 if isinstance(axis, (int, np.integer))
                                                 else len(axis))
    if nd == 2 and ord in (2, -2, "nuc"):
        raise TypeError(f"numpy.linalg.norm(ord={ord!r}) of a complex matrix needs its "
                        "singular values, which are not supported for complex values yet")
    return np.linalg.norm(np.abs(x), ord, axis, keepdims)


def _display(func):
    from fastape._numpy import display_name
    return display_name(func)


def _shape_fn(a):
    return np.shape(a) if type(a) is not Complex else a.shape


# functions that act on each part alike
_LINEAR = [np.reshape, np.transpose, np.concatenate, np.stack, np.sum, np.mean,
           np.cumsum, np.trace, np.diff, np.squeeze, np.expand_dims, np.swapaxes,
           np.moveaxis, np.broadcast_to, np.ravel, np.hstack, np.vstack, np.dstack,
           np.column_stack, np.flip, np.fliplr, np.flipud, np.rot90, np.roll, np.tile,
           np.repeat, np.diag, np.diagonal, np.diagflat, np.tril, np.triu, np.take,
           np.take_along_axis, np.atleast_1d, np.atleast_2d, np.atleast_3d, np.split,
           np.array_split, np.hsplit, np.vsplit, np.pad, np.copy, np.average, np.nansum]
if hasattr(np, "trapezoid"):
    _LINEAR.append(np.trapezoid)

FUNCTIONS = {
    np.dot: _bilinear(np.dot), np.inner: _bilinear(np.inner), np.outer: _bilinear(np.outer),
    np.tensordot: _bilinear(np.tensordot), np.kron: _bilinear(np.kron),
    np.matmul: _bilinear(np.matmul), np.vdot: _vdot, np.einsum: _einsum,
    np.real: _real, np.imag: _imag, np.angle: _angle, np.real_if_close: _real_if_close,
    np.iscomplex: _iscomplex, np.isreal: _isreal,
    np.iscomplexobj: lambda x: True, np.isrealobj: lambda x: False,
    np.shape: _shape_fn, np.ndim: lambda a: len(_shape_fn(a)),
    np.size: lambda a, axis=None: (int(np.prod(_shape_fn(a))) if axis is None
                                   else _shape_fn(a)[axis]),
    np.where: _where, np.prod: _prod, np.var: _var, np.std: _std, np.linalg.norm: _norm,
    np.linalg.solve: _solve, np.linalg.inv: _inv, np.linalg.det: _det,
    np.zeros_like: lambda a, dtype=None, *r, **k: np.zeros(_shape_fn(a), dtype or complex),
    np.ones_like: lambda a, dtype=None, *r, **k: np.ones(_shape_fn(a), dtype or complex),
    np.append: lambda arr, values, axis=None: (
        np.concatenate([np.ravel(arr), np.ravel(values)]) if axis is None
        else np.concatenate([arr, values], axis=axis)),
}
FUNCTIONS.update(_fft.NUMPY_FUNCTIONS)


def array_function(func, args, kwargs):
    impl = FUNCTIONS.get(func)
    if impl is not None:
        return impl(*args, **kwargs)
    if func in _LINEAR:
        return _linear(func, args, kwargs)
    raise TypeError(f"{_display(func)} is not supported on complex fastape values. "
                    "Supported: the structural and real-linear functions ("
                    + ", ".join(sorted(f"np.{f.__name__}" for f in _LINEAR))
                    + "), " + ", ".join(sorted(f"np.{getattr(f, '__name__', f)}"
                                               for f in FUNCTIONS))
                    + "; or apply it to np.real(z) and np.imag(z)")
