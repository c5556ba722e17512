"""Matrix decompositions and the linear algebra built on them (issue 13, item 4):
``cholesky``, ``eigh``, ``eigvalsh``, ``svd``, and compositions (``solve_triangular``,
``cho_factor``, ``cho_solve``, ``expm``, ``matrix_power``, ``pinv``, ``lstsq``,
``cond``, stacked ``solve``/``inv``/``det``/``slogdet``, every ``norm`` order).

The decompositions run LAPACK through numpy/scipy on the numbers and carry their
derivatives as forward-mode rules (``fastape.custom_jvp``) written with fastape ops,
so reverse mode is the transposed rule and derivatives nest to any order; in a
compiled function each is one callback node (a Python call per sweep, negligible
against the O(n³) factorisation). The rules, for a symmetric dA where it applies:

    cholesky   A = L Lᵀ       dL = L Φ(L⁻¹ dA L⁻ᵀ),  Φ = lower triangle, diagonal halved
    eigh       A = V diag(w) Vᵀ    dw = diag(Vᵀ dA V),  dV = V (F ∘ Vᵀ dA V),
                                   F_ij = 1 / (w_j - w_i) off the diagonal
    svd        A = U diag(s) Vᵀ    ds = diag(Uᵀ dA V), and dU, dV (Townsend 2016)

Like LAPACK, ``cholesky`` and ``eigh`` read one triangle (the lower, numpy's default):
the other does not influence the result, so its derivative there is zero. Where a
derivative does not exist — repeated eigenvalues for the eigenvectors, repeated or
zero singular values for the singular vectors — the rule raises
``numpy.linalg.LinAlgError`` rather than return infinities.
"""

import functools
from collections import namedtuple

import numpy as np
from scipy.linalg import lapack as _lapack

from fastape import _arrays, _tape
from fastape import _functions as F
from fastape._tape import Var
from fastape.custom import custom_jvp
from fastape.errors import ShapeError

LinAlgError = np.linalg.LinAlgError


def _result_type(fn, name, fields):
    """numpy's own result namedtuple (numpy >= 2), so that results and the cotangents
    a user builds from numpy's results have one structure; else one of ours."""
    t = type(fn(np.eye(1)))
    return t if hasattr(t, "_fields") else namedtuple(name, fields)


EighResult = _result_type(np.linalg.eigh, "EighResult", ["eigenvalues", "eigenvectors"])
SVDResult = _result_type(np.linalg.svd, "SVDResult", ["U", "S", "Vh"])

__all__ = ["cholesky", "eigh", "eigvalsh", "svd", "svdvals", "qr", "eig", "matrix_power", "pinv",
           "lstsq", "cond", "solve_triangular", "cho_factor", "cho_solve", "expm",
           "EighResult", "SVDResult", "QRResult", "EigResult"]


def _T(x):
    return F.transpose(x) if type(x) is Var else np.transpose(x)


def _sym_lower(a):
    """The symmetric matrix whose lower triangle is a's (one gather on values)."""
    if type(a) is not Var:
        return np.tril(a) + np.tril(a, -1).T
    return _tape.gather(a, _sym_lower_index(a.shape[0]), a.shape)


@functools.lru_cache(maxsize=64)
def _sym_lower_index(n):
    p = np.arange(n * n).reshape(n, n)
    idx = np.where(np.tri(n, dtype=bool), p, p.T).reshape(-1)
    idx.flags.writeable = False
    return idx


def _square(a, name):
    shape = np.shape(a.value if type(a) is Var else a)
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise ShapeError(f"{name}: expected a square matrix (or a stack of them), got shape "
                         f"{shape}")
    return shape


def _stacked(fn, name):
    """fn of one matrix applied over leading axes (numpy's stacking): a Python loop of
    gathers, one fn call each, stacked back (tuples of results are stacked field by
    field)."""
    @functools.wraps(fn)
    def f(a, *args, **kwargs):
        if type(a) is not Var or a.ndim <= 2:
            return fn(a, *args, **kwargs)
        lead = a.shape[:-2]
        flat = F.reshape(a, (-1,) + a.shape[-2:])
        outs = [fn(flat[k], *args, **kwargs) for k in range(flat.shape[0])]
        if isinstance(outs[0], tuple):
            parts = [_stack_back([o[i] for o in outs], lead) for i in range(len(outs[0]))]
            return type(outs[0])(*parts) if hasattr(outs[0], "_fields") else tuple(parts)
        return _stack_back(outs, lead)
    f.__name__ = name
    return f


def _stack_back(outs, lead):
    if type(outs[0]) is not Var and not any(type(o) is Var for o in outs):
        a = np.stack([np.asarray(o) for o in outs])
        return a.reshape(lead + a.shape[1:])
    s = F.stack(outs)
    return F.reshape(s, lead + s.shape[1:])


# -- Cholesky ----------------------------------------------------------------------

@custom_jvp
def _cholesky_sym(a):
    return np.linalg.cholesky(a)


@_cholesky_sym.defjvp
def _cholesky_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    L = _cholesky_sym(a)
    X = solve_triangular(L, _T(solve_triangular(L, da, lower=True)), lower=True)  # L⁻¹ dA L⁻ᵀ
    phi = _arrays.tril(X) - 0.5 * (X * np.eye(X.shape[0]))
    return L, L @ phi


def _cholesky_vjp(primals, L, Lbar):
    """The rule's transpose in closed form: with dL = L Φ(L⁻¹ dA L⁻ᵀ) (Φ: the lower
    triangle, the diagonal halved; self-adjoint), ⟨L̄, dL⟩ = ⟨L⁻ᵀ Φ(Lᵀ L̄) L⁻¹, dA⟩:
    Ā = L⁻ᵀ Φ(Lᵀ L̄) L⁻¹ (Murray 2016), through the triangular inverse (LAPACK dtrtri)
    and two products: scipy's solve_triangular spent most of its time validating its
    arguments, and two f2py dtrsm calls cost twice the inverse (an eager MVN gradient
    calls this once)."""
    n = L.shape[0]
    Linv, info = _lapack.dtrtri(L, lower=1)
    if info:
        raise LinAlgError(f"cholesky: the factor is singular (diagonal entry {info} is 0)")
    return (Linv.T @ ((L.T @ Lbar) * _phi_mask(n)) @ Linv,)


@functools.lru_cache(maxsize=64)
def _phi_mask(n):
    """Φ as a mask: 1 below the diagonal, 1/2 on it, 0 above."""
    m = np.tri(n) - 0.5 * np.eye(n)
    m.flags.writeable = False
    return m


_cholesky_sym.numeric_vjp = _cholesky_vjp
_cholesky_sym._array_rule = True


def _cholesky(a, upper=False):
    _square(a, "cholesky")
    if upper:                                # numpy reads the upper triangle then
        return _T(_cholesky_sym(_sym_lower(_T(a))))
    return _cholesky_sym(_sym_lower(a))


def cholesky(a, /, *, upper=False):
    """numpy.linalg.cholesky: the lower factor L of a = L Lᵀ from a's lower triangle
    (upper=True: the upper factor from the upper triangle); a matrix that is not
    positive definite raises LinAlgError."""
    if type(a) is not Var:
        return np.linalg.cholesky(a, upper=upper) if upper else np.linalg.cholesky(a)
    if a.ndim == 2:
        return _cholesky(a, upper)
    return _stacked(_cholesky, "cholesky")(a, upper)


# -- symmetric eigenproblem ------------------------------------------------------------

def _gap_matrix(w, name, what):
    """F with F_ij = 1 / (w_j - w_i) off the diagonal and 0 on it: the coefficients of
    the eigenvector (singular vector) rules, built from w's values on its tape when w
    is a fastape value (exact at every order). Raises LinAlgError where values
    repeat: the vectors' derivative does not exist there."""
    wv = np.asarray(w.value if type(w) is Var else w)
    n = wv.size
    eye = np.eye(n)
    d = wv[None, :] - wv[:, None]
    scale = max(1.0, float(np.max(np.abs(wv)))) if n else 1.0
    if n > 1 and np.min(np.abs(d[eye == 0])) <= 1e-12 * scale:
        raise LinAlgError(f"{name}: the derivative of the {what} does not exist where "
                          "eigenvalues (or singular values) repeat; differentiate a "
                          "function of them that is symmetric in the repeated ones "
                          "(eigvalsh, a trace, a sum) instead")
    if type(w) is Var:
        return (1.0 - eye) / (F.reshape(w, (1, -1)) - F.reshape(w, (-1, 1)) + eye)
    return (1.0 - eye) / (d + eye)


@custom_jvp
def _eigh_sym(a):
    w, v = np.linalg.eigh(a)
    return w, v


@_eigh_sym.defjvp
def _eigh_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    w, V = _eigh_sym(a)
    M = _T(V) @ da @ V
    dw = _arrays.diagonal(M)
    Fm = _gap_matrix(w, "eigh", "eigenvectors")
    return (w, V), (dw, V @ (Fm * M))


@custom_jvp
def _eigvalsh_sym(a):
    return np.linalg.eigvalsh(a)


@_eigvalsh_sym.defjvp
def _eigvalsh_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    w, V = _eigh_sym(a)
    return w, _arrays.diagonal(_T(V) @ da @ V)


def _eigh_vjp(primals, out, cot):
    """The rule's transpose: with M = Vᵀ dA V, dw = diag M and dV = V (F ∘ M),
    ⟨w̄, dw⟩ + ⟨V̄, dV⟩ = ⟨V (diag w̄ + F ∘ Vᵀ V̄) Vᵀ, dA⟩."""
    (w, V), (wbar, Vbar) = out, cot
    Fm = _gap_matrix(w, "eigh", "eigenvectors")
    return (V @ (np.diag(wbar) + Fm * (V.T @ Vbar)) @ V.T,)


def _eigvalsh_vjp(primals, w, wbar):
    """dw_i = v_iᵀ dA v_i: Ā = V diag(w̄) Vᵀ."""
    _, V = np.linalg.eigh(primals[0])
    return ((V * wbar) @ V.T,)


_eigh_sym.numeric_vjp = _eigh_vjp
_eigvalsh_sym.numeric_vjp = _eigvalsh_vjp


def _eigh(a, UPLO="L"):
    if UPLO not in ("L", "U"):
        raise ValueError(f"eigh: UPLO must be 'L' or 'U', got {UPLO!r}")
    _square(a, "eigh")
    s = _sym_lower(a if UPLO == "L" else _T(a))
    return EighResult(*_eigh_sym(s))


def eigh(a, UPLO="L"):
    """numpy.linalg.eigh: eigenvalues (ascending) and eigenvectors of the symmetric
    matrix given by a's lower (UPLO='L') or upper triangle. The eigenvectors'
    derivative needs distinct eigenvalues (else LinAlgError)."""
    if type(a) is not Var:
        return np.linalg.eigh(a, UPLO)
    return _stacked(_eigh, "eigh")(a, UPLO)


def _eigvalsh(a, UPLO="L"):
    _square(a, "eigvalsh")
    return _eigvalsh_sym(_sym_lower(a if UPLO == "L" else _T(a)))


def eigvalsh(a, UPLO="L"):
    """numpy.linalg.eigvalsh: the eigenvalues of a symmetric matrix (ascending); their
    first derivative dw_i = v_iᵀ dA v_i exists also where eigenvalues repeat."""
    if type(a) is not Var:
        return np.linalg.eigvalsh(a, UPLO)
    return _stacked(_eigvalsh, "eigvalsh")(a, UPLO)


# -- singular value decomposition ----------------------------------------------------

@custom_jvp
def _svd_thin(a):
    u, s, vh = np.linalg.svd(a, full_matrices=False)
    return u, s, vh


def _check_singular(s, name):
    sv = np.asarray(s.value if type(s) is Var else s)
    if sv.size and sv[-1] <= 1e-13 * max(sv[0], 1.0):
        raise LinAlgError(f"{name}: the derivative of the singular vectors does not exist "
                          "at a zero singular value (a rank-deficient matrix); use "
                          "svd(a, compute_uv=False) for the values")


@_svd_thin.defjvp
def _svd_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    U, s, Vh = _svd_thin(a)
    V = _T(Vh)
    m, n = np.shape(a.value if type(a) is Var else a)
    k = min(m, n)
    dP = _T(U) @ da @ V                                     # k x k
    ds = _arrays.diagonal(dP)
    s2 = s * s
    Fm = _gap_matrix(s2, "svd", "singular vectors")
    if m != n:
        _check_singular(s, "svd")
    eye = np.eye(k)
    S = s * eye if type(s) is Var else np.diag(s)
    Sinv = (1.0 / s) * eye if type(s) is Var else np.diag(1.0 / s)
    dU = U @ (Fm * (dP @ S + S @ _T(dP)))
    dV = V @ (Fm * (S @ dP + _T(dP) @ S))
    if m > k:
        dU = dU + (da @ V - U @ (_T(U) @ da @ V)) @ Sinv
    if n > k:
        dV = dV + (_T(da) @ U - V @ (Vh @ _T(da) @ U)) @ Sinv
    return (U, s, Vh), (dU, ds, _T(dV))


@custom_jvp
def _svdvals(a):
    return np.linalg.svd(a, compute_uv=False)


@_svdvals.defjvp
def _svdvals_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    U, s, Vh = _svd_thin(a)
    return s, _arrays.diagonal(_T(U) @ da @ _T(Vh))


def _svdvals_vjp(primals, s, sbar):
    """ds_i = u_iᵀ dA v_i: Ā = U diag(s̄) Vᴴ."""
    U, _, Vh = np.linalg.svd(primals[0], full_matrices=False)
    return ((U * sbar) @ Vh,)


_svdvals.numeric_vjp = _svdvals_vjp


def _svd(a, full_matrices=True, compute_uv=True):
    if np.ndim(a.value if type(a) is Var else a) != 2:
        raise ShapeError(f"svd: expected a matrix, got shape {a.shape}")
    if not compute_uv:
        return _svdvals(a)
    m, n = a.shape
    if full_matrices and m != n:
        raise ValueError(f"svd: full_matrices=True of a {m} x {n} matrix adds singular "
                         "vectors that are not unique (not differentiable); use "
                         "full_matrices=False")
    return SVDResult(*_svd_thin(a))


def svd(a, full_matrices=True, compute_uv=True, hermitian=False):
    """numpy.linalg.svd. The singular values are differentiable wherever they are
    distinct from each other (svd(a, compute_uv=False)'s first derivative
    everywhere); the vectors need distinct, nonzero singular values, and a
    rectangular full_matrices=True decomposition is refused (its extra vectors are
    not unique)."""
    if type(a) is not Var:
        return np.linalg.svd(a, full_matrices, compute_uv, hermitian)
    if hermitian:
        raise TypeError("svd: hermitian=True is not supported on fastape values")
    return _stacked(_svd, "svd")(a, full_matrices, compute_uv)


def svdvals(x, /):
    """numpy.linalg.svdvals: the singular values (descending)."""
    return svd(x, compute_uv=False)


# -- QR and the general eigenproblem ----------------------------------------------

QRResult = _result_type(np.linalg.qr, "QRResult", ["Q", "R"])
EigResult = _result_type(np.linalg.eig, "EigResult", ["eigenvalues", "eigenvectors"])


@custom_jvp
def _qr_tall(a):
    q, r = np.linalg.qr(a)
    return q, r


@_qr_tall.defjvp
def _qr_jvp(primals, tangents):
    """M = Qᵀ dA R⁻¹, Ω = L - Lᵀ (L its strictly lower part): dQ = Q Ω + (I - Q Qᵀ) dA R⁻¹,
    dR = (M - Ω) R (upper triangular by construction)."""
    from fastape import linalg
    (a,), (da,) = primals, tangents
    Q, R = _qr_tall(a)
    rv = np.asarray(R.value if type(R) is Var else R)
    d = np.abs(np.diagonal(rv))
    if d.size and d.min() <= 1e-13 * max(d.max(), 1.0):
        raise LinAlgError("qr: the derivative of the factors needs a matrix of full column "
                          "rank (R has a zero on its diagonal)")
    daRi = _T(linalg.solve(_T(R), _T(da)))                 # dA R⁻¹
    M = _T(Q) @ daRi
    L = _arrays.tril(M, -1)
    omega = L - _T(L)
    dQ = Q @ omega + daRi - Q @ (_T(Q) @ daRi)
    dR = (M - omega) @ R
    return (Q, R), (dQ, dR)


def _qr(a, mode="reduced"):
    if mode not in ("reduced", "r", "complete"):
        raise ValueError(f"qr: mode={mode!r} is not supported on fastape values (use "
                         "'reduced' or 'r')")
    m, n = a.shape
    if mode == "complete" and m > n:
        raise ValueError(f"qr: mode='complete' of a {m} x {n} matrix adds columns of Q that "
                         "are not unique (not differentiable); use mode='reduced'")
    if m >= n:
        Q, R = _qr_tall(a)
    else:                       # A = [X Y] with X square: Q R_X = X, R = [R_X, Qᵀ Y]
        Q, RX = _qr_tall(a[:, :m])
        R = F.concatenate([RX, _T(Q) @ a[:, m:]], axis=1)
    return R if mode == "r" else QRResult(Q, R)


def qr(a, mode="reduced"):
    """numpy.linalg.qr (modes 'reduced', 'r', and 'complete' for m <= n): Q with
    orthonormal columns and upper triangular R, A = Q R. Its derivative needs full
    rank (else LinAlgError)."""
    if type(a) is not Var:
        return np.linalg.qr(a, mode)
    if a.ndim < 2:
        raise ShapeError(f"qr: expected a matrix (or a stack of them), got shape {a.shape}")
    return _stacked(_qr, "qr")(a, mode)


@custom_jvp
def _eig_real(a):
    w, v = np.linalg.eig(a)
    if np.iscomplexobj(w):
        raise LinAlgError("eig: the matrix has complex eigenvalues; fastape differentiates "
                          "real functions (eig of matrices with a real spectrum only)")
    return w, v


@_eig_real.defjvp
def _eig_jvp(primals, tangents):
    """P = V⁻¹ dA V: dw = diag(P), dV = V (F ∘ P), then each column's component along
    itself removed (numpy's eigenvectors have unit length)."""
    from fastape import linalg
    (a,), (da,) = primals, tangents
    w, V = _eig_real(a)
    P = linalg.solve(V, da @ V)
    Fm = _gap_matrix(w, "eig", "eigenvectors")
    dV = V @ (Fm * P)
    dV = dV - V * np.sum(V * dV, axis=0, keepdims=True)
    return (w, V), (_arrays.diagonal(P), dV)


def _eig(a):
    _square(a, "eig")
    return EigResult(*_eig_real(a))


def eig(a):
    """numpy.linalg.eig of a real matrix with real, distinct eigenvalues (complex ones
    raise LinAlgError: fastape is real; repeated ones too, for the vectors): the
    eigenvalues and unit-length eigenvectors, as numpy orders them."""
    if type(a) is not Var:
        return np.linalg.eig(a)
    return _stacked(_eig, "eig")(a)


# -- triangular and Cholesky solves ------------------------------------------------

def solve_triangular(a, b, trans=0, lower=False, unit_diagonal=False, overwrite_b=False,
                     check_finite=True):
    """scipy.linalg.solve_triangular: x with op(a) x = b for a triangular a (only its
    ``lower`` or upper triangle is read; ``trans`` 0/'N', 1/'T'). On fastape values
    it is the tape's LU solve of that triangle: exact derivatives at every order, at
    an LU's O(n³) cost."""
    like = F._first_var((a, b), "solve_triangular")
    if like is None:
        import scipy.linalg
        return scipy.linalg.solve_triangular(a, b, trans=trans, lower=lower,
                                             unit_diagonal=unit_diagonal)
    trans = {0: 0, "N": 0, 1: 1, "T": 1, 2: 1, "C": 1}.get(trans)
    if trans is None:
        raise ValueError("solve_triangular: trans must be 0, 1, 2, 'N', 'T' or 'C'")
    a = F._as_var(like, a, "solve_triangular", "a")
    b = F._as_var(like, b, "solve_triangular", "b")
    n = _square(a, "solve_triangular")[-1]
    if a.ndim != 2 or b.ndim not in (1, 2) or b.shape[0] != n:
        raise ShapeError(f"solve_triangular: a has shape {a.shape} but b has shape "
                         f"{b.shape}; b must have shape ({n},) or ({n}, k)")
    from fastape import linalg
    # the triangle that is read (a gather with zeros), solved by the tape's LU solve:
    # exact derivatives at every order (O(n³) where a triangular solve is O(n²))
    t = _arrays.tril(a, -1 if unit_diagonal else 0) if lower else \
        _arrays.triu(a, 1 if unit_diagonal else 0)
    if unit_diagonal:
        t = t + np.eye(n)
    return linalg.solve(_T(t) if trans else t, b)


def cho_factor(a, lower=False, overwrite_a=False, check_finite=True):
    """scipy.linalg.cho_factor: ``(c, lower)`` from a's lower (``lower=True``) or upper
    triangle, as scipy; unlike scipy's, the other triangle of c is zero."""
    if type(a) is not Var:
        import scipy.linalg
        return scipy.linalg.cho_factor(a, lower=lower)
    if lower:
        return cholesky(a), lower
    return _T(cholesky(_T(a))), lower            # scipy reads the upper triangle here


def cho_solve(c_and_lower, b, overwrite_b=False, check_finite=True):
    """scipy.linalg.cho_solve: x with A x = b from A's Cholesky factor ``(c, lower)``
    (two triangular solves)."""
    c, lower = c_and_lower
    if type(c) is not Var and type(b) is not Var:
        import scipy.linalg
        return scipy.linalg.cho_solve((c, lower), b)
    if lower:
        return solve_triangular(c, solve_triangular(c, b, lower=True), trans=1, lower=True)
    return solve_triangular(c, solve_triangular(c, b, trans=1, lower=False), lower=False)


# -- matrix exponential ------------------------------------------------------------

# Padé 13 with scaling and squaring (Higham 2005), written with tape ops: the
# coefficients b_k and theta_13 of that paper
_PADE13 = (64764752532480000.0, 32382376266240000.0, 7771770303897600.0,
           1187353796428800.0, 129060195264000.0, 10559470521600.0, 670442572800.0,
           33522128640.0, 1323241920.0, 40840800.0, 960960.0, 16380.0, 182.0, 1.0)
_THETA13 = 5.371920351148152


def _expm(a):
    """expm of one matrix by Padé 13 after scaling by 2^-s. The choice of s depends on
    ‖a‖₁: it is recorded as comparisons (guards), so a compiled function re-records
    where another s is needed instead of replaying an inaccurate one."""
    from fastape import linalg
    n = a.shape[0]
    norm1 = F.max(F.sum(F.absolute(a), axis=0))
    v = float(norm1.value)
    s = max(0, int(np.ceil(np.log2(v / _THETA13)))) if v > _THETA13 else 0
    np.less_equal(norm1, _THETA13 * 2.0 ** s)                        # guards of the choice
    if s > 0:
        np.greater(norm1, _THETA13 * 2.0 ** (s - 1))
    A = a * (0.5 ** s)
    b = _PADE13
    eye = np.eye(n)
    A2 = A @ A
    A4 = A2 @ A2
    A6 = A4 @ A2
    U = A @ (A6 @ (b[13] * A6 + b[11] * A4 + b[9] * A2) + b[7] * A6 + b[5] * A4
             + b[3] * A2 + b[1] * eye)
    V = A6 @ (b[12] * A6 + b[10] * A4 + b[8] * A2) + b[6] * A6 + b[4] * A4 + b[2] * A2 \
        + b[0] * eye
    R = linalg.solve(V - U, V + U)
    for _ in range(s):
        R = R @ R
    return R


def expm(A):
    """scipy.linalg.expm: the matrix exponential, by Padé 13 with scaling and squaring
    (Higham 2005, as scipy) written with tape ops, so its derivatives are those of the
    approximation, exact at every order (the Fréchet derivative to its accuracy)."""
    if type(A) is not Var:
        import scipy.linalg
        return scipy.linalg.expm(A)
    _square(A, "expm")
    return _stacked(_expm, "expm")(A)


# -- compositions ---------------------------------------------------------------------

def matrix_power(a, n):
    """numpy.linalg.matrix_power: a**n by repeated squaring (matrix products); a
    negative n powers the inverse."""
    import operator
    if type(a) is not Var:
        return np.linalg.matrix_power(a, n)
    n = operator.index(n)
    shape = _square(a, "matrix_power")
    if n == 0:
        return np.broadcast_to(np.eye(shape[-1]), shape).copy()
    if n < 0:
        from fastape import linalg
        a, n = linalg.inv(a), -n
    result, base = None, a
    while n:
        if n & 1:
            result = base if result is None else result @ base
        n >>= 1
        if n:
            base = base @ base
    return result


def pinv(a, rcond=None, hermitian=False, *, rtol=None):
    """numpy.linalg.pinv of a matrix of full rank: (AᵀA)⁻¹Aᵀ or Aᵀ(AAᵀ)⁻¹, whose
    derivative exists; a rank-deficient matrix (a singular value below numpy's cutoff)
    raises LinAlgError, since the pseudo-inverse is not differentiable there."""
    from fastape import linalg
    if type(a) is not Var:
        kw = {} if rtol is None else {"rtol": rtol}
        return np.linalg.pinv(a, **({"rcond": rcond} if rcond is not None else kw),
                              hermitian=hermitian)
    if a.ndim != 2:
        raise ShapeError(f"pinv: expected a matrix, got shape {a.shape}")
    m, n = a.shape
    sv = np.linalg.svd(a.value, compute_uv=False)
    cut = rtol if rtol is not None else (rcond if rcond is not None else
                                         max(m, n) * np.finfo(np.float64).eps)
    if sv.size and sv[-1] <= cut * sv[0]:
        raise LinAlgError(f"pinv: the {m} x {n} matrix is rank-deficient (smallest singular "
                          f"value {sv[-1]:.3g} against {sv[0]:.3g}); its pseudo-inverse is "
                          "not differentiable there")
    at = _T(a)
    if m >= n:
        return linalg.solve(at @ a, at)
    return _T(linalg.solve(a @ at, a))


def lstsq(a, b, rcond=None):
    """numpy.linalg.lstsq for a matrix of full column rank: ``(x, residuals, rank, s)``
    with x = pinv(a) b (residuals: the squared residual norms when m > n)."""
    if type(a) is not Var and type(b) is not Var:
        return np.linalg.lstsq(a, b, rcond=rcond)
    like = F._first_var((a, b), "lstsq")
    a = F._as_var(like, a, "lstsq", "a")
    b = F._as_var(like, b, "lstsq", "b")
    m, n = a.shape
    if m < n:
        raise LinAlgError(f"lstsq: an underdetermined system ({m} x {n}) has no "
                          "differentiable least-squares solution; its minimum-norm one "
                          "is pinv(a) @ b")
    x = pinv(a) @ b
    if m > n:
        r = b - a @ x
        res = F.sum(r * r, axis=0)
        if res.ndim == 0:
            res = F.reshape(res, (1,))
    else:
        res = np.zeros((0,))
    return x, res, int(n), svdvals(a)


def cond(x, p=None):
    """numpy.linalg.cond: for p None, 2 or -2 the ratio of extreme singular values;
    otherwise norm(x, p) * norm(inv(x), p)."""
    from fastape import linalg
    if type(x) is not Var:
        return np.linalg.cond(x, p)
    if p in (None, 2, -2):
        s = svdvals(x)
        r = F.max(s) / F.min(s)
        return r if p != -2 else 1.0 / r
    return linalg.norm(x, p) * linalg.norm(linalg.inv(x), p)


def matrix_norm(x, ord):  # noqa: A002
    """The matrix norms numpy's norm computes for a 2-D value and an ord that is not
    'fro': 2, -2, 'nuc' (singular values), 1, -1 (column sums), inf, -inf (row sums)."""
    if ord == "nuc":
        return F.sum(svdvals(x))
    if ord == 2:
        return F.max(svdvals(x))
    if ord == -2:
        return F.min(svdvals(x))
    if ord in (1, -1):
        s = F.sum(F.absolute(x), axis=0)
        return F.max(s) if ord == 1 else F.min(s)
    if ord in (np.inf, -np.inf):
        s = F.sum(F.absolute(x), axis=1)
        return F.max(s) if ord == np.inf else F.min(s)
    raise ValueError(f"norm: invalid norm order {ord!r} for matrices")


def vector_norm(x, ord, axis, keepdims):  # noqa: A002
    """A vector p-norm, (Σ|x|^p)^(1/p), for a number p other than 0, 1, 2 and ±inf;
    ord=0 counts the nonzero elements (a plain number: its derivative is zero)."""
    if ord == 0:
        return np.sum(np.asarray(x.value) != 0, axis=axis, keepdims=keepdims).astype(float)
    p = float(ord)
    return F.sum(F.absolute(x) ** p, axis=axis, keepdims=keepdims) ** (1.0 / p)
