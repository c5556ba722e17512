# Dense linear algebra on the tape (included into _tape.pyx): the kernels of MATMUL,
# LU, SOLVE, DET, LOGDET and NORM, forward and reverse side by side, and their
# recording functions. BLAS and LAPACK are called straight from nogil code through
# scipy.linalg.cython_blas / cython_lapack, as scikit-learn's _cython_blas does.
#
# Layout. Values are row-major; BLAS is column-major. A row-major M×N matrix with
# row length ld is, to BLAS, its N×M transpose with leading dimension ld, so a
# row-major C = op(A) op(B) is the column-major Cᵀ = op(B)ᵀ op(A)ᵀ: the operands swap
# and no data moves (_gemm). Transposes are BLAS flags, never copies.
#
# Adjoints (Λ = the node's multipliers): for C = A B, Ā += Λ Bᵀ and B̄ += Aᵀ Λ, two
# more products accumulated with beta = 1 straight into the multiplier arena.
#
# Solves. The LU node (hidden: matmul users never see it) factors the row-major A
# with dgetrf, which sees Aᵀ: Aᵀ = P L U, so A = Uᵀ Lᵀ Pᵀ. Its value slot is
# n·n factors followed by n pivots (stored as doubles); its multiplier slot is
# *defined* as Ā (the first n·n entries; the pivot part stays unused): the ops
# reading the factors (SOLVE, DET, LOGDET) add their ∂/∂A there, and the LU
# node's reverse step passes it on to A. Node ids never go into M, so a pruner
# that remaps a/b keeps these ops valid.
#
#   X = A⁻¹ B      ⇔  Xᵀ = Bᵀ U⁻¹ L⁻¹ Pᵀ            (right-side dtrsm on Xᵀ, the
#   Z = A⁻ᵀ X̄      ⇔  Zᵀ = X̄ᵀ P L⁻ᵀ U⁻ᵀ              column-major view of X)
#   B̄ += Z,  Ā -= Z Xᵀ;   log|det A|: Ā += λ A⁻ᵀ;   det A: Ā += λ det(A) A⁻ᵀ
#
# A singular A raises numpy.linalg.LinAlgError when SOLVE is recorded; a replay
# cannot raise, so it writes NaN.

from libc.stdlib cimport malloc, free
from libc.math cimport exp, log, fabs
from fastape._ops cimport LU, SOLVE, DET, LOGDET, NORM
from scipy.linalg.cython_blas cimport dgemm, dgemv, dger, dtrsm, dnrm2, daxpy
from scipy.linalg.cython_lapack cimport dgetrf

import numpy.linalg as _nplinalg

cdef char* _N = b"N"
cdef char* _T = b"T"
cdef char* _L = b"L"
cdef char* _U = b"U"
cdef char* _R = b"R"
cdef i64 INT_MAX_DIM = 2147483647


# ---------------------------------------------------------------------------
# BLAS in row-major terms
# ---------------------------------------------------------------------------

cdef void _gemm(bint ta, bint tb, i64 M, i64 N, i64 K, double alpha,
                const double* A, i64 lda, const double* B, i64 ldb,
                double beta, double* C, i64 ldc) noexcept nogil:
    """C := alpha op(A) op(B) + beta C, all row-major; op(A) is M×K, op(B) K×N, and
    lda/ldb/ldc are the row lengths of the stored A, B, C. # IN: A, B  # OUT: C"""
    cdef int m = <int>M, n = <int>N, k = <int>K, ia = <int>lda, ib = <int>ldb
    cdef int ic = <int>ldc, inc_a, inc_b, one = 1
    cdef i64 j
    if M == 0 or N == 0:
        return
    if K == 0:
        if beta == 0.0:
            for j in range(M):
                memset(C + j * ldc, 0, N * sizeof(double))
        return
    if N == 1:
        # C[:, 0] = alpha op(A) v + beta C[:, 0], v = op(B)[:, 0]
        inc_b = 1 if tb else ib
        if ta:      # stored A is K×M: column-major it is M×K = op(A)
            dgemv(_N, &m, &k, &alpha, <double*>A, &ia, <double*>B, &inc_b, &beta, C, &ic)
        else:       # stored A is M×K: column-major it is K×M = Aᵀ
            dgemv(_T, &k, &m, &alpha, <double*>A, &ia, <double*>B, &inc_b, &beta, C, &ic)
        return
    if M == 1:
        # C[0, :] = alpha u op(B) + beta C[0, :], u = op(A)[0, :]
        inc_a = ia if ta else 1
        if tb:      # stored B is N×K: column-major it is K×N
            dgemv(_T, &k, &n, &alpha, <double*>B, &ib, <double*>A, &inc_a, &beta, C, &one)
        else:       # stored B is K×N: column-major it is N×K = op(B)ᵀ
            dgemv(_N, &n, &k, &alpha, <double*>B, &ib, <double*>A, &inc_a, &beta, C, &one)
        return
    if K == 1 and beta == 1.0:
        # rank-1 update C += alpha a bᵀ; column-major Cᵀ += alpha b aᵀ
        inc_a = 1 if ta else ia
        inc_b = ib if tb else 1
        dger(&n, &m, &alpha, <double*>B, &inc_b, <double*>A, &inc_a, C, &ic)
        return
    dgemm(_T if tb else _N, _T if ta else _N, &n, &m, &k, &alpha, <double*>B, &ib,
          <double*>A, &ia, &beta, C, &ic)


cdef bint _all_zero(const double* x, i64 n) noexcept nogil:
    cdef i64 j
    for j in range(n):
        if x[j] != 0.0:
            return False
    return True


# ---------------------------------------------------------------------------
# LU factors of a row-major A (its Aᵀ = P L U to LAPACK) and the two solves
# ---------------------------------------------------------------------------

cdef bint _lu_singular(const double* lu, i64 n) noexcept nogil:
    """True when U has a zero (or NaN) on its diagonal: A is singular (or not finite)."""
    cdef i64 j
    for j in range(n):
        if not (lu[j * n + j] != 0.0):
            return True
    return False


cdef void _swap_cols(double* W, i64 r, i64 j, i64 p) noexcept nogil:
    """Swap columns j and p of the column-major r×n matrix W (contiguous blocks)."""
    cdef i64 q
    cdef double s
    if j == p:
        return
    for q in range(r):
        s = W[j * r + q]
        W[j * r + q] = W[p * r + q]
        W[p * r + q] = s


cdef void _lu_solve(const double* lu, i64 n, i64 r, double* W, bint transposed) noexcept nogil:
    """In place on W, the row-major n×r right-hand side (column-major: its r×n transpose):
    W := A⁻¹ W, or A⁻ᵀ W when `transposed`, from the factors of an LU node.
    # IN: lu (n·n factors, then n pivots)  # IN/OUT: W"""
    cdef const double* piv = lu + n * n
    cdef int m = <int>r, nn = <int>n, ld = <int>r
    cdef double one = 1.0
    cdef i64 j
    if n == 0 or r == 0:
        return
    if not transposed:
        # Wᵀ U⁻¹ L⁻¹ Pᵀ
        dtrsm(_R, _U, _N, _N, &m, &nn, &one, <double*>lu, &nn, W, &ld)
        dtrsm(_R, _L, _N, _U, &m, &nn, &one, <double*>lu, &nn, W, &ld)
        j = n - 1
        while j >= 0:
            _swap_cols(W, r, j, <i64>piv[j] - 1)
            j -= 1
    else:
        # Wᵀ P L⁻ᵀ U⁻ᵀ
        for j in range(n):
            _swap_cols(W, r, j, <i64>piv[j] - 1)
        dtrsm(_R, _L, _T, _U, &m, &nn, &one, <double*>lu, &nn, W, &ld)
        dtrsm(_R, _U, _T, _N, &m, &nn, &one, <double*>lu, &nn, W, &ld)


cdef void _lu_factor(const double* A, double* out, i64 n) noexcept nogil:
    """out = the LU factors of A (n·n) followed by its pivots as doubles."""
    cdef int nn = <int>n, info = 0
    cdef int* ipiv
    cdef i64 j
    memcpy(out, A, n * n * sizeof(double))
    if n == 0:
        return
    ipiv = <int*>malloc(n * sizeof(int))
    if ipiv == NULL:
        for j in range(n * n + n):
            out[j] = NAN
        return
    dgetrf(&nn, &nn, out, &nn, ipiv, &info)
    for j in range(n):
        out[n * n + j] = ipiv[j]
    free(ipiv)


cdef double _lu_logdet(const double* lu, i64 n, double* sign) noexcept nogil:
    """log|det A| from the factors; sign[0] = sign of det A (0 when singular)."""
    cdef double s = 1.0, acc = 0.0, u
    cdef i64 j
    for j in range(n):
        u = lu[j * n + j]
        if u < 0:
            s = -s
        elif u == 0.0:
            s = 0.0
        if <i64>lu[n * n + j] != j + 1:
            s = -s
        acc += log(fabs(u))
    sign[0] = s
    return acc


cdef void _add_inverse_transpose(const double* lu, i64 n, double scale,
                                 double* abar) noexcept nogil:
    """abar += scale A⁻ᵀ (row-major), from the factors of an LU node."""
    cdef double* W
    cdef i64 j
    cdef int nn2 = <int>(n * n), one = 1
    if n == 0 or scale == 0.0:
        return
    W = <double*>malloc(n * n * sizeof(double))
    if W == NULL:
        return
    memset(W, 0, n * n * sizeof(double))
    for j in range(n):
        W[j * n + j] = 1.0
    # the solve turns the column-major Iᵀ into A⁻¹ column-major, i.e. A⁻ᵀ row-major
    _lu_solve(lu, n, n, W, True)
    daxpy(&nn2, &scale, W, &one, abar, &one)
    free(W)


# ---------------------------------------------------------------------------
# the sweeps' entry points
# ---------------------------------------------------------------------------

cdef void linalg_forward(Tape t, i64 i) noexcept nogil:
    """Compute node i's value (a linear-algebra op)."""
    cdef int o = t.op[i]
    cdef i64 m = t.meta[i], rows, k, cols, batch, sA, sB, flags, bt, n, r, j
    cdef double* out = t.val + t.off[i]
    cdef const double* A = t.val + t.off[t.a[i]]
    cdef const double* B
    cdef double s
    cdef int cnt, one = 1
    if o == MATMUL:
        rows = t.M[m + 1]
        k = t.M[m + 2]
        cols = t.M[m + 3]
        batch = t.M[m + 4]
        sA = t.M[m + 5]
        sB = t.M[m + 6]
        flags = t.M[m + 7]
        B = t.val + t.off[t.b[i]]
        for bt in range(batch):
            _gemm(flags & 1, flags & 2, rows, cols, k, 1.0,
                  A + bt * sA, rows if flags & 1 else k,
                  B + bt * sB, k if flags & 2 else cols,
                  0.0, out + bt * rows * cols, cols)
    elif o == LU:
        _lu_factor(A, out, t.M[m + 1])
    elif o == SOLVE:
        n = t.M[m + 1]
        r = t.M[m + 2]
        if _lu_singular(A, n):
            for j in range(n * r):
                out[j] = NAN
            return
        memcpy(out, t.val + t.off[t.b[i]], n * r * sizeof(double))
        _lu_solve(A, n, r, out, False)
    elif o == DET or o == LOGDET:
        s = 0.0
        out[0] = _lu_logdet(A, t.M[m + 1], &s)
        if o == DET:
            out[0] = 0.0 if s == 0.0 else s * exp(out[0])
    elif o == NORM:
        cnt = <int>t.M[m + 1]
        out[0] = dnrm2(&cnt, <double*>A, &one) if cnt > 0 else 0.0


cdef void linalg_reverse(Tape t, i64 i) noexcept nogil:
    """Add node i's multipliers through its local partials into its parents'."""
    cdef int o = t.op[i]
    cdef i64 m = t.meta[i], rows, k, cols, batch, sA, sB, flags, bt, n, r, j
    cdef const double* lam = t.adj + t.off[i]
    cdef i64 pa = t.a[i], pb = t.b[i]
    cdef const double* A = t.val + t.off[pa]
    cdef double* abar = t.adj + t.off[pa]
    cdef const double* B
    cdef double* bbar
    cdef const double* lamb
    cdef double* Z
    cdef double w
    cdef bint ta, tb
    if o == LU:
        # the slot holds Ā (see the top of this file)
        if t.op[pa] != CONSTANT:
            n = t.M[m + 1]
            for j in range(n * n):
                abar[j] += lam[j]
        return
    if _all_zero(lam, t.size_of(i)):
        return          # a zero multiplier contributes nothing, even through inf/NaN
    if o == MATMUL:
        rows = t.M[m + 1]
        k = t.M[m + 2]
        cols = t.M[m + 3]
        batch = t.M[m + 4]
        sA = t.M[m + 5]
        sB = t.M[m + 6]
        flags = t.M[m + 7]
        ta = flags & 1
        tb = flags & 2
        B = t.val + t.off[pb]
        bbar = t.adj + t.off[pb]
        for bt in range(batch):
            lamb = lam + bt * rows * cols
            if t.op[pa] != CONSTANT:
                if not ta:      # Ā (rows×k) += Λ op(B)ᵀ
                    _gemm(False, not tb, rows, k, cols, 1.0, lamb, cols,
                          B + bt * sB, k if tb else cols, 1.0, abar + bt * sA, k)
                else:           # stored A is k×rows: Ā += op(B) Λᵀ
                    _gemm(tb, True, k, rows, cols, 1.0, B + bt * sB, k if tb else cols,
                          lamb, cols, 1.0, abar + bt * sA, rows)
            if t.op[pb] != CONSTANT:
                if not tb:      # B̄ (k×cols) += op(A)ᵀ Λ
                    _gemm(not ta, False, k, cols, rows, 1.0, A + bt * sA,
                          rows if ta else k, lamb, cols, 1.0, bbar + bt * sB, cols)
                else:           # stored B is cols×k: B̄ += Λᵀ op(A)
                    _gemm(True, ta, cols, k, rows, 1.0, lamb, cols, A + bt * sA,
                          rows if ta else k, 1.0, bbar + bt * sB, k)
    elif o == SOLVE:
        n = t.M[m + 1]
        r = t.M[m + 2]
        Z = <double*>malloc((n * r if n * r > 0 else 1) * sizeof(double))
        if Z == NULL:
            return
        memcpy(Z, lam, n * r * sizeof(double))
        _lu_solve(A, n, r, Z, True)                       # Z = A⁻ᵀ X̄
        if t.op[pb] != CONSTANT:
            bbar = t.adj + t.off[pb]
            for j in range(n * r):
                bbar[j] += Z[j]
        if t.op[t.a[pa]] != CONSTANT:                     # Ā -= Z Xᵀ, into the LU slot
            _gemm(False, True, n, n, r, -1.0, Z, r, t.val + t.off[i], r, 1.0, abar, n)
        free(Z)
    elif o == DET or o == LOGDET:
        if t.op[t.a[pa]] != CONSTANT:
            w = lam[0]
            if o == DET:
                w *= t.val[t.off[i]]
            _add_inverse_transpose(A, t.M[m + 1], w, abar)
    elif o == NORM:
        w = t.val[t.off[i]]
        if w > 0.0:        # the subgradient 0 at x = 0
            w = lam[0] / w
            for j in range(t.M[m + 1]):
                abar[j] += w * A[j]


# ---------------------------------------------------------------------------
# recording (shapes are checked by fastape.linalg before these are called)
# ---------------------------------------------------------------------------

def _check_dims(str op, *dims):
    for d in dims:
        if d > INT_MAX_DIM:
            raise ShapeError(f"{op}: dimension {d} exceeds BLAS's 32-bit limit")


def matmul_node(Var a, Var b, i64 rows, i64 k, i64 cols, i64 batch, i64 sA, i64 sB,
                bint ta, bint tb, tuple shape):
    """C[bt] = op(A[bt]) op(B[bt]) for bt < batch; A[bt] starts at bt·sA (sA = 0: one
    A for all), op(A) is rows×k (transposed storage when ta), op(B) is k×cols."""
    cdef Tape t = a.tape
    cdef i64 size = batch * rows * cols, i, m
    _check_dims("matmul", rows, k, cols, rows * k, k * cols, rows * cols)
    i = t._push(MATMUL, a.node, b.node, size, 8)
    m = t.meta[i]
    t.M[m + 1] = rows
    t.M[m + 2] = k
    t.M[m + 3] = cols
    t.M[m + 4] = batch
    t.M[m + 5] = sA
    t.M[m + 6] = sB
    t.M[m + 7] = (1 if ta else 0) | (2 if tb else 0)
    t.forward_node(i)
    return _new(t, i, shape, size)


def lu_node(Var a, i64 n):
    """The hidden LU node of a square n×n A; returns (node as a Var, singular?)."""
    cdef Tape t = a.tape
    cdef i64 i
    _check_dims("lu", n, n * n)
    i = t._push(LU, a.node, -1, n * n + n, 2)
    t.M[t.meta[i] + 1] = n
    t.forward_node(i)
    return _new(t, i, (n * n + n,), n * n + n), _lu_singular(t.val + t.off[i], n)


def solve_node(Var lu, Var b, i64 n, i64 r, tuple shape):
    """X = A⁻¹ B (B n×r, row-major) from the LU node of A."""
    cdef Tape t = lu.tape
    cdef i64 i = t._push(SOLVE, lu.node, b.node, n * r, 3), m = t.meta[i]
    t.M[m + 1] = n
    t.M[m + 2] = r
    t.forward_node(i)
    return _new(t, i, shape, n * r)


def det_node(Var lu, i64 n, bint log_abs):
    """det A (or log |det A|) from the LU node of A; returns (value, sign of det A)."""
    cdef Tape t = lu.tape
    cdef double s = 0.0
    cdef i64 i = t._push(LOGDET if log_abs else DET, lu.node, -1, 1, 2)
    t.M[t.meta[i] + 1] = n
    t.forward_node(i)
    _lu_logdet(t.val + t.off[lu.node], n, &s)
    return _new(t, i, SCALAR, 1), s


def norm_node(Var x):
    """‖x‖₂ over all elements."""
    cdef Tape t = x.tape
    cdef i64 i
    _check_dims("norm", x.size)
    i = t._push(NORM, x.node, -1, 1, 2)
    t.M[t.meta[i] + 1] = x.size
    t.forward_node(i)
    return _new(t, i, SCALAR, 1)


def singular_error(str op):
    return _nplinalg.LinAlgError(f"{op}: singular matrix")
