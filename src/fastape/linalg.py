"""Dense linear algebra on the tape: ``fastape.linalg``.

Matrix products are MATMUL nodes whose forward and reverse steps call BLAS
(``dgemm``/``dgemv``/``dger``) from compiled code; ``solve``, ``inv``, ``det`` and
``slogdet`` share a hidden LU node (LAPACK ``dgetrf``) whose factors the adjoint
solves reuse with ``Aᵀ`` (``dtrsm`` with transpose flags); ``norm`` is one NORM
node (``dnrm2``); ``trace`` is a gather and a sum. Every function also accepts
plain arrays and then returns what numpy returns; on fastape values the same
calls are reached through numpy (``np.linalg.solve(A, b)``, ``A @ B``).

Adjoints, with Λ the multipliers of the result (kernels in ``_linalg.pxi``)::

    C = A B        Ā += Λ Bᵀ,          B̄ += Aᵀ Λ
    X = A⁻¹ B      B̄ += A⁻ᵀ Λ,         Ā -= (A⁻ᵀ Λ) Xᵀ
    d = det A      Ā += λ d A⁻ᵀ;       log|det A|:  Ā += λ A⁻ᵀ
    s = ‖x‖₂       x̄ += λ x / s        (0 at x = 0, a subgradient)
"""

import operator
from math import prod as _prod

import numpy as np

from fastape import _complex, _decomp, _tape
from fastape import _functions as F
from fastape._complex import is_complex
from fastape._decomp import (
    EighResult,
    EigResult,
    QRResult,
    SVDResult,
    cholesky,
    cond,
    eig,
    eigh,
    eigvalsh,
    lstsq,
    matrix_power,
    pinv,
    qr,
    svd,
    svdvals,
)
from fastape._tape import Var
from fastape.errors import ShapeError

__all__ = ["matmul", "inner", "outer", "solve", "inv", "det", "slogdet", "norm", "trace",
           "cholesky", "eigh", "eigvalsh", "svd", "svdvals", "matrix_power", "pinv", "lstsq",
           "cond", "qr", "eig", "LinAlgError", "SlogdetResult", "EighResult", "SVDResult",
           "QRResult", "EigResult"]

LinAlgError = np.linalg.LinAlgError
SlogdetResult = _decomp._result_type(np.linalg.slogdet, "SlogdetResult", ["sign", "logabsdet"])


def _vars(a, b, name):
    """Both operands as values of one tape, or None when neither is a fastape value."""
    like = F._first_var((a, b), name)
    if like is None:
        return None
    return F._as_var(like, a, name, "a"), F._as_var(like, b, name, "b")


def _batch_operand(v, vbatch, batch, mat_shape, name, arg):
    """v's batch stride for a batch of shape `batch`: 0 when v has one matrix for all,
    else its matrix size (after broadcasting v's batch axes, when they differ)."""
    size = _prod(mat_shape)
    if _prod(vbatch) == 1:
        return v, 0
    if tuple(vbatch) != tuple(batch):
        v = _tape.broadcast_to(v, tuple(batch) + tuple(mat_shape), name, arg)
    return v, size


def matmul(a, b):
    """Matrix product with numpy's ``matmul`` rules: matrix-matrix, matrix-vector,
    vector-matrix, vector-vector (the inner product) and stacks of matrices (the
    leading axes broadcast). Inner dimensions that differ raise ShapeError."""
    if type(a) is not Var or type(b) is not Var:
        if is_complex(a) or is_complex(b):
            return _complex.matmul(a, b)
        vs = _vars(a, b, "matmul")
        if vs is None:
            return np.matmul(a, b)
        a, b = vs
    # the common case (matrices, or one a vector), without the stack-axis machinery
    r = _tape.matmul_2d(a, b)
    if r is not None:
        return r
    if b.tape is not a.tape:
        F._as_var(a, b, "matmul", "b")      # raises TapeError
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"matmul: operands must have at least one dimension, got shapes "
                         f"{a.shape} and {b.shape}; use * to multiply by a scalar")
    ash = (1,) + a.shape if a.ndim == 1 else a.shape
    bsh = b.shape + (1,) if b.ndim == 1 else b.shape
    rows, k = ash[-2:]
    k2, cols = bsh[-2:]
    if k != k2:
        raise ShapeError(f"matmul: inner dimensions do not match: a has shape {a.shape}, "
                         f"b has shape {b.shape} ({k} != {k2})")
    if a.ndim == 1 and b.ndim == 1:
        return _tape.dot1(a, b)
    try:
        batch = tuple(np.broadcast_shapes(ash[:-2], bsh[:-2]))
    except ValueError:
        raise ShapeError(f"matmul: the stack axes of shapes {a.shape} and {b.shape} cannot "
                         "be broadcast together") from None
    a, sA = _batch_operand(a, ash[:-2], batch, (rows, k), "matmul", "a")
    b, sB = _batch_operand(b, bsh[:-2], batch, (k, cols), "matmul", "b")
    shape = batch + (() if a.ndim == 1 else (rows,)) + (() if b.ndim == 1 else (cols,))
    return _tape.matmul_node(a, b, rows, k, cols, _prod(batch), sA, sB, False, False, shape)


def inner(a, b):
    """Inner product over the last axes: ``a @ b.T`` for matrices (the transpose is a
    BLAS flag, not a copy); the result has shape ``a.shape[:-1] + b.shape[:-1]``."""
    vs = _vars(a, b, "inner")
    if vs is None:
        return np.inner(a, b)
    a, b = vs
    if a.ndim == 0 or b.ndim == 0:
        return a * b
    if a.shape[-1] != b.shape[-1]:
        raise ShapeError(f"inner: last dimensions do not match: a has shape {a.shape}, "
                         f"b has shape {b.shape}")
    if a.ndim == 1 and b.ndim == 1:
        return _tape.dot1(a, b)
    k = a.shape[-1]
    return _tape.matmul_node(a, b, _prod(a.shape[:-1]), k, _prod(b.shape[:-1]), 1, 0, 0,
                             False, True, a.shape[:-1] + b.shape[:-1])


def outer(a, b):
    """Outer product of the flattened a and b: shape ``(a.size, b.size)``."""
    vs = _vars(a, b, "outer")
    if vs is None:
        return np.outer(a, b)
    a, b = vs
    return _tape.matmul_node(a, b, a.size, 1, b.size, 1, 0, 0, False, False,
                             (a.size, b.size))


def _square(a, name):
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ShapeError(f"{name}: expected a square matrix, got shape {a.shape}"
                         + ("; stacks of matrices are not supported" if a.ndim > 2 else ""))
    return a.shape[0]


def _lu(a, name, need_regular):
    n = _square(a, name)
    lu, singular = _tape.lu_node(a, n)
    if singular and need_regular:
        raise _tape.singular_error(name)
    return lu, n


def solve(a, b):
    """x with ``a @ x = b`` (LU with partial pivoting); b is a vector (n,) or a matrix
    (n, r), and stacks of both (leading axes, numpy's rules: one solve each). A
    singular ``a`` raises numpy.linalg.LinAlgError."""
    vs = _vars(a, b, "solve")
    if vs is None:
        return np.linalg.solve(a, b)
    a, b = vs
    if a.ndim > 2:
        return _solve_stacked(a, b)
    n = _square(a, "solve")
    if b.ndim not in (1, 2) or b.shape[0] != n:
        raise ShapeError(f"solve: a has shape {a.shape} but b has shape {b.shape}; "
                         f"b must have shape ({n},) or ({n}, r)")
    lu, n = _lu(a, "solve", True)
    r = 1 if b.ndim == 1 else b.shape[1]
    return _tape.solve_node(lu, b, n, r, b.shape)


def _solve_stacked(a, b):
    """solve over the leading axes of a (b: one vector (n,), or a stack of matrices
    (..., n, r) broadcast against a's, as numpy >= 2 reads it)."""
    lead, n = a.shape[:-2], a.shape[-1]
    vec = b.ndim == 1            # numpy >= 2: only a 1-D b is a vector
    bshape = lead + ((n,) if vec else b.shape[-2:])
    try:
        if b.shape != bshape:
            b = _tape.broadcast_to(b, bshape, "solve", "b")
    except (ValueError, ShapeError):
        raise ShapeError(f"solve: a has shape {a.shape} but b has shape {b.shape}") from None
    A = F.reshape(a, (-1, n, n))
    B = F.reshape(b, (A.shape[0],) + bshape[len(lead):])
    xs = [solve(A[k], B[k]) for k in range(A.shape[0])]
    return F.reshape(F.stack(xs), bshape)


def inv(a):
    """The inverse of a square matrix (a solve with the identity), and of each of a
    stack of them. A singular ``a`` raises numpy.linalg.LinAlgError."""
    if type(a) is not Var:
        return np.linalg.inv(a)
    if a.ndim > 2:
        return _decomp._stacked(inv, "inv")(a)
    n = _square(a, "inv")
    lu, n = _lu(a, "inv", True)
    eye = _tape.constant_like(a, np.eye(n))
    return _tape.solve_node(lu, eye, n, n, (n, n))


def det(a):
    """The determinant of a square matrix (from its LU factors)."""
    if type(a) is not Var:
        return np.linalg.det(a)
    if a.ndim > 2:
        return _decomp._stacked(det, "det")(a)
    lu, n = _lu(a, "det", False)
    return _tape.det_node(lu, n, False)[0]


def slogdet(a):
    """``(sign, logabsdet)`` of a square matrix; ``sign`` is a plain float (its
    derivative is zero), ``logabsdet`` a value on the tape."""
    if type(a) is not Var:
        return np.linalg.slogdet(a)
    if a.ndim > 2:
        r = _decomp._stacked(lambda m: tuple(slogdet(m)), "slogdet")(a)
        return SlogdetResult(r[0], r[1])
    lu, n = _lu(a, "slogdet", False)
    v, sign = _tape.det_node(lu, n, True)
    return SlogdetResult(float(sign), v)


def norm(x, ord=None, axis=None, keepdims=False):  # noqa: A002
    """numpy.linalg.norm, every order numpy has: the vector 2-norm / Frobenius norm (the
    default) is one NORM node (``dnrm2``), over all elements or along ``axis``, whose
    gradient is 0 (a subgradient) wherever the norm is 0; vector p-norms
    (Σ|x|^p)^(1/p), ±inf and 0; matrix norms 1, -1, inf, -inf (column and row sums),
    2, -2 and 'nuc' (singular values; fastape._decomp)."""
    if type(x) is not Var:
        return np.linalg.norm(x, ord=ord, axis=axis, keepdims=keepdims)
    if axis is not None:
        axes = F._axes(x, axis, "norm")
        if (len(axes) == 1 and ord in (None, 2)) or (len(axes) == 2 and ord in (None, "fro")):
            if axes != tuple(range(axes[0], axes[-1] + 1)):     # bring the axes together
                rest = [d for d in range(x.ndim) if d not in axes]
                x = F.transpose(x, rest[:axes[0]] + list(axes) + rest[axes[0]:])
                axes = tuple(range(axes[0], axes[0] + len(axes)))
            lo, hi = axes[0], axes[-1] + 1
            s = x.shape
            r = _tape.norm_node(x, _prod(s[:lo]), _prod(s[lo:hi]), _prod(s[hi:]),
                                s[:lo] + s[hi:])
            if keepdims:
                r = F.reshape(r, tuple(1 if d in axes else n for d, n in enumerate(s)))
            return r
        if len(axes) == 1 and ord == 1:
            return F.sum(F.absolute(x), axis=axes, keepdims=keepdims)
        if len(axes) == 1 and ord == np.inf:
            return F.max(F.absolute(x), axis=axes, keepdims=keepdims)
        if len(axes) == 1 and ord == -np.inf:
            return F.min(F.absolute(x), axis=axes, keepdims=keepdims)
        if len(axes) == 1 and isinstance(ord, (int, float)) and not isinstance(ord, bool):
            return _decomp.vector_norm(x, ord, axes, keepdims)
        if len(axes) == 2:
            rest = [d for d in range(x.ndim) if d not in axes]
            m = F.transpose(x, rest + list(axes))
            r = _decomp._stacked(lambda a: _decomp.matrix_norm(a, ord), "norm")(m)
            if keepdims:
                r = F.reshape(r, tuple(1 if d in axes else n for d, n in enumerate(x.shape)))
            return r
        raise ValueError(f"norm: ord={ord!r} with axis={axis!r} is not supported on "
                         "fastape values")
    if ord is None or (ord == "fro" and x.ndim == 2) or (ord == 2 and x.ndim == 1):
        r = _tape.norm_node(x)
    elif x.ndim == 1 and ord == 1:
        r = F.sum(F.absolute(x))
    elif x.ndim == 1 and ord == np.inf:
        r = F.max(F.absolute(x))
    elif x.ndim == 1 and ord == -np.inf:
        r = F.min(F.absolute(x))
    elif x.ndim == 1 and isinstance(ord, (int, float)) and not isinstance(ord, bool):
        r = _decomp.vector_norm(x, ord, None, False)
    elif x.ndim == 2:
        r = _decomp.matrix_norm(x, ord)
    else:
        raise ValueError(f"norm: ord={ord!r} for a value of shape {x.shape} is not "
                         "supported (numpy: ord needs a vector or a matrix)")
    if keepdims:
        r = F.reshape(r, (1,) * x.ndim)
    return r


def trace(a, offset=0, axis1=0, axis2=1):
    """Sum along a diagonal (numpy's ``trace``): a gather of the diagonal and a sum."""
    if type(a) is not Var:
        return np.trace(a, offset=offset, axis1=axis1, axis2=axis2)
    if a.ndim < 2:
        raise ShapeError(f"trace: expected at least 2 dimensions, got shape {a.shape}")
    offset = operator.index(offset)
    idx = np.arange(a.size, dtype=np.int64).reshape(a.shape).diagonal(offset, axis1, axis2)
    if idx.size == 0:       # an empty diagonal: zero, independent of a
        return _tape.constant_like(a, np.zeros(idx.shape[:-1]))
    d = _tape.gather(a, idx.reshape(-1), idx.shape)
    return F.sum(d, axis=-1)


def _linalg_trace(x, /, *, offset=0, dtype=None):
    if dtype is not None and np.dtype(dtype) != np.float64:
        raise TypeError(f"numpy.linalg.trace: dtype={dtype} is not supported on fastape values")
    return trace(x, offset=offset, axis1=-2, axis2=-1)


# numpy dispatch (merged into fastape._numpy.FUNCTIONS)
def _no_out(name, fn):
    def f(*args, out=None, **kwargs):
        if out is not None:
            raise TypeError(f"numpy.{name}: out= cannot write into a fastape value")
        return fn(*args, **kwargs)
    return f


def _np_trace(a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    if out is not None:
        raise TypeError("numpy.trace: out= cannot write into a fastape value")
    if dtype is not None and np.dtype(dtype) != np.float64:
        raise TypeError(f"numpy.trace: dtype={dtype} is not supported on fastape values")
    return trace(a, offset, axis1, axis2)


NUMPY_FUNCTIONS = {
    np.inner: inner, np.outer: _no_out("outer", outer),
    np.trace: _np_trace,
    np.linalg.solve: solve, np.linalg.inv: inv, np.linalg.det: det,
    np.linalg.slogdet: slogdet, np.linalg.norm: norm,
}
NUMPY_FUNCTIONS.update({np.linalg.cholesky: cholesky, np.linalg.eigh: eigh,
                        np.linalg.eigvalsh: eigvalsh, np.linalg.svd: svd,
                        np.linalg.matrix_power: matrix_power, np.linalg.pinv: pinv,
                        np.linalg.lstsq: lstsq, np.linalg.cond: cond, np.linalg.qr: qr,
                        np.linalg.eig: eig})
for _name, _fn in (("matmul", matmul), ("outer", outer), ("trace", _linalg_trace),
                   ("svdvals", svdvals)):
    if hasattr(np.linalg, _name):       # numpy >= 2
        NUMPY_FUNCTIONS[getattr(np.linalg, _name)] = _fn
del _name, _fn
