# Dense linear algebra on the tape (included into _tape.pyx): MATMUL, LU, SOLVE,
# DET, LOGDET and NORM, one block each (parameter struct, forward kernel, tangent
# kernel, reverse kernel, recorder), after the BLAS/LAPACK helpers they share. BLAS and LAPACK are
# called straight from nogil code through
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
# node's reverse step passes it on to A.
#
# Zero multipliers. A product's adjoint Ā += Λ Bᵀ must give 0, not NaN, for the
# entries of Λ that are 0 even where B holds an inf or a NaN (the convention of
# every op). BLAS cannot skip terms, so the adjoint products go through
# _adjoint_gemm, which uses BLAS when the partial operand is finite (then 0·b = 0
# exactly) and a loop that skips zero multipliers otherwise.
#
# Scratch memory (pivots, the adjoint solves' right-hand sides) is the tape's work
# buffer, sized by the recorders: no sweep allocates.
#
#   X = A⁻¹ B      ⇔  Xᵀ = Bᵀ U⁻¹ L⁻¹ Pᵀ            (right-side dtrsm on Xᵀ, the
#   Z = A⁻ᵀ X̄      ⇔  Zᵀ = X̄ᵀ P L⁻ᵀ U⁻ᵀ              column-major view of X)
#   B̄ += Z,  Ā -= Z Xᵀ;   log|det A|: Ā += λ A⁻ᵀ;   det A: Ā += λ det(A) A⁻ᵀ
#
# Tangents (one direction; see _structural.pxi): dC = op(dA) op(B) + op(A) op(dB);
# the LU node's tangent slot holds dA (then zeros for the pivots), read by
#   dX = A⁻¹ (dB - dA X),   d log|det A| = tr(A⁻¹ dA),   d det A = Σ cof(A)_ij dA_ij.
# The products with a tangent go through _adjoint_gemm too (the tangent operand in
# the multiplier's place), so a zero tangent contributes nothing.
#
# A singular A raises numpy.linalg.LinAlgError when SOLVE is recorded; a replay
# cannot raise, so it writes NaN.

from libc.math cimport exp, log, fabs
from scipy.linalg.cython_blas cimport dgemm, dgemv, dger, dtrsm, dnrm2, daxpy
from scipy.linalg.cython_lapack cimport dgetrf

import numpy.linalg as _nplinalg

cdef inline bint _gets_adjoint(Tape t, i64 j) noexcept nogil:
    """Do node j's children add into its multipliers? Every node's, but a constant's on
    a lean_constants tape (whose owner reads no constant's multipliers): there a
    product, solve or determinant skips the constant's adjoint product."""
    return t.op[j] != CONSTANT or not t.lean_constants


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


cdef bint _lu_lower_identity(const double* lu, i64 n) noexcept nogil:
    """True when the unit lower factor is the identity and the pivots are too (P L = I):
    so it is for every lower triangular row-major A (dgetrf sees the upper triangular
    Aᵀ = U), as in np.linalg.solve(cholesky(S), b)."""
    cdef const double* piv = lu + n * n
    cdef i64 i, j
    for j in range(n):
        if <i64>piv[j] != j + 1:
            return False
        for i in range(j + 1, n):           # column j of L, below the diagonal
            if lu[j * n + i] != 0.0:
                return False
    return True


cdef void _lu_solve(const double* lu, i64 n, i64 r, double* W, bint transposed) noexcept nogil:
    """In place on W, the row-major n×r right-hand side (column-major: its r×n transpose):
    W := A⁻¹ W, or A⁻ᵀ W when `transposed`, from the factors of an LU node.
    A triangular A gives P L = I: then only the solve with U runs (half the work of a
    triangular solve through LU; for finite W the same numbers, as the skipped solve
    with I subtracts products with exact zeros).
    # IN: lu (n·n factors, then n pivots)  # IN/OUT: W"""
    cdef const double* piv = lu + n * n
    cdef int m = <int>r, nn = <int>n, ld = <int>r
    cdef double one = 1.0
    cdef i64 j
    if n == 0 or r == 0:
        return
    if _lu_lower_identity(lu, n):
        dtrsm(_R, _U, _T if transposed else _N, _N, &m, &nn, &one, <double*>lu, &nn, W, &ld)
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


cdef void _lu_factor(const double* A, double* out, i64 n, int* ipiv) noexcept nogil:
    """out = the LU factors of A (n·n) followed by its pivots as doubles.
    # IN: A  # OUT: out  # SCRATCH: ipiv (n ints)"""
    cdef int nn = <int>n, info = 0
    cdef i64 j
    memcpy(out, A, n * n * sizeof(double))
    if n == 0:
        return
    dgetrf(&nn, &nn, out, &nn, ipiv, &info)
    for j in range(n):
        out[n * n + j] = ipiv[j]


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


cdef void _inverse_transpose(const double* lu, i64 n, double* W) noexcept nogil:
    """W = A⁻ᵀ (row-major, n·n), from the factors of an LU node. # OUT: W"""
    cdef i64 j
    memset(W, 0, n * n * sizeof(double))
    for j in range(n):
        W[j * n + j] = 1.0
    # the solve turns the column-major Iᵀ into A⁻¹ column-major, i.e. A⁻ᵀ row-major
    _lu_solve(lu, n, n, W, True)


cdef void _add_inverse_transpose(const double* lu, i64 n, double scale,
                                 double* abar, double* W) noexcept nogil:
    """abar += scale A⁻ᵀ (row-major), from the factors of an LU node.
    # SCRATCH: W (n·n doubles)"""
    cdef int nn2 = <int>(n * n), one = 1
    if n == 0 or scale == 0.0:
        return
    _inverse_transpose(lu, n, W)
    daxpy(&nn2, &scale, W, &one, abar, &one)


cdef bint _all_finite(const double* x, i64 rows, i64 cols, i64 ld) noexcept nogil:
    # x - x is 0 for a finite x and NaN for inf and NaN, so a sum of them is NaN iff
    # an entry is not finite. Four sums, so that GCC packs them into SSE2 vectors
    # (subpd/addpd) and no add waits for the last: 2.7x faster over 8 MB than an AND
    # of compares, which it left scalar (6 % of an eager two-layer gradient)
    cdef i64 r, c
    cdef const double* row
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
    for r in range(rows):
        row = x + r * ld
        c = 0
        while c + 4 <= cols:
            s0 += row[c] - row[c]
            s1 += row[c + 1] - row[c + 1]
            s2 += row[c + 2] - row[c + 2]
            s3 += row[c + 3] - row[c + 3]
            c += 4
        while c < cols:
            s0 += row[c] - row[c]
            c += 1
    s0 = (s0 + s1) + (s2 + s3)
    return s0 == s0


cdef inline void _adjoint_gemm_f(bint finite, bint ta, bint tb, i64 M, i64 N, i64 K,
                                 double alpha, const double* A, i64 lda, const double* B,
                                 i64 ldb, double* C, i64 ldc, bint a_is_lam) noexcept nogil:
    """_adjoint_gemm whose partial is known to be finite when `finite` (no scan)."""
    if finite:
        _gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, 1.0, C, ldc)
    else:
        _adjoint_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, C, ldc, a_is_lam)


cdef void _adjoint_gemm(bint ta, bint tb, i64 M, i64 N, i64 K, double alpha,
                        const double* A, i64 lda, const double* B, i64 ldb,
                        double* C, i64 ldc, bint a_is_lam) noexcept nogil:
    """C += alpha op(A) op(B) where one operand is a node's adjoints (A when
    `a_is_lam`, else B) and the other a partial: a zero adjoint contributes nothing,
    even where the partial is inf or NaN. # IN: A, B  # IN/OUT: C"""
    cdef const double* part = B if a_is_lam else A
    cdef i64 pr = (N if tb else K) if a_is_lam else (K if ta else M)
    cdef i64 pc = (K if tb else N) if a_is_lam else (M if ta else K)
    cdef i64 r, c, q
    cdef double w, acc, a, b
    if _all_finite(part, pr, pc, ldb if a_is_lam else lda):
        _gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, 1.0, C, ldc)
        return
    # a non-finite partial: sum the terms one by one, skipping zero adjoints
    for r in range(M):
        for c in range(N):
            acc = 0.0
            for q in range(K):
                a = A[q * lda + r] if ta else A[r * lda + q]
                b = B[c * ldb + q] if tb else B[q * ldb + c]
                w = a if a_is_lam else b
                if w != 0.0:
                    acc += a * b
            C[r * ldc + c] += alpha * acc


# ---------------------------------------------------------------------------
# MATMUL: C[bt] = op(A[bt]) op(B[bt])
# ---------------------------------------------------------------------------

ctypedef struct MatmulP:
    i64 size            # batch · rows · cols
    i64 rows            # op(A) is rows × k, op(B) is k × cols
    i64 k
    i64 cols
    i64 batch
    i64 sA              # A[bt] starts at bt·sA (0: one A for the whole batch)
    i64 sB
    # 1: A stored transposed, 2: B stored transposed; 4 (8): A (B) is a constant whose
    # values are all finite, found when recorded (a constant never changes), so no
    # sweep scans it again
    i64 flags


cdef void matmul_forward(Tape t, i64 i) noexcept nogil:
    cdef const MatmulP* p = <const MatmulP*>t.params(i)
    cdef const double* A = t.val + t.off[t.a[i]]
    cdef const double* B = t.val + t.off[t.b[i]]
    cdef double* out = t.val + t.off[i]
    cdef i64 bt
    cdef bint ta = p.flags & 1, tb = p.flags & 2
    for bt in range(p.batch):
        _gemm(ta, tb, p.rows, p.cols, p.k, 1.0, A + bt * p.sA, p.rows if ta else p.k,
              B + bt * p.sB, p.k if tb else p.cols, 0.0, out + bt * p.rows * p.cols, p.cols)


cdef void matmul_reverse(Tape t, i64 i) noexcept nogil:
    """Ā += Λ op(B)ᵀ, B̄ += op(A)ᵀ Λ (in the stored orientation of A and B)."""
    cdef const MatmulP* p = <const MatmulP*>t.params(i)
    cdef i64 pa = t.a[i], pb = t.b[i], bt, rows = p.rows, k = p.k, cols = p.cols
    cdef const double* A = t.val + t.off[pa]
    cdef const double* B = t.val + t.off[pb]
    cdef double* abar = t.adj + t.off[pa]
    cdef double* bbar = t.adj + t.off[pb]
    cdef const double* lam
    cdef bint ta = p.flags & 1, tb = p.flags & 2, fa = p.flags & 4, fb = p.flags & 8
    for bt in range(p.batch):
        lam = t.adj + t.off[i] + bt * rows * cols
        if _gets_adjoint(t, pa):
            if not ta:      # Ā (rows×k) += Λ op(B)ᵀ
                _adjoint_gemm_f(fb, False, not tb, rows, k, cols, 1.0, lam, cols,
                                B + bt * p.sB, k if tb else cols, abar + bt * p.sA, k, True)
            else:           # stored A is k×rows: Ā += op(B) Λᵀ
                _adjoint_gemm_f(fb, tb, True, k, rows, cols, 1.0, B + bt * p.sB,
                                k if tb else cols, lam, cols, abar + bt * p.sA, rows, False)
        if _gets_adjoint(t, pb):
            if not tb:      # B̄ (k×cols) += op(A)ᵀ Λ
                _adjoint_gemm_f(fa, not ta, False, k, cols, rows, 1.0, A + bt * p.sA,
                                rows if ta else k, lam, cols, bbar + bt * p.sB, cols, False)
            else:           # stored B is cols×k: B̄ += Λᵀ op(A)
                _adjoint_gemm_f(fa, True, ta, cols, k, rows, 1.0, lam, cols, A + bt * p.sA,
                                rows if ta else k, bbar + bt * p.sB, k, True)


cdef void matmul_tangent(Tape t, i64 i, double* T) noexcept nogil:
    """dC = op(dA) op(B) + op(A) op(dB); a factor whose tangents are all zero (a
    constant) is skipped."""
    cdef const MatmulP* p = <const MatmulP*>t.params(i)
    cdef i64 pa = t.a[i], pb = t.b[i], rows = p.rows, k = p.k, cols = p.cols
    cdef const double* A = t.val + t.off[pa]
    cdef const double* B = t.val + t.off[pb]
    cdef const double* dA = T + t.off[pa]
    cdef const double* dB = T + t.off[pb]
    cdef double* dC = T + t.off[i]
    cdef bint za = _zero_tangent(t, pa, dA), zb = _zero_tangent(t, pb, dB)
    # A partial factor larger than dC (B when k > rows, A when k > cols) is not scanned
    # for infinities first: its product goes straight to BLAS, and only if dC then holds
    # a non-finite entry (where a zero tangent may have met an inf or NaN) is dC computed
    # again term by term. dC is this node's own, so it can be recomputed.
    cdef bint late_b = not (p.flags & 8) and not za and k > rows
    cdef bint late_a = not (p.flags & 4) and not zb and k > cols
    _tangent_terms(p, A, B, dA, dB, dC, za, zb, p.flags & 4 or late_a, p.flags & 8 or late_b)
    if (late_a or late_b) and not _all_finite(dC, p.batch * rows, cols, cols):
        _tangent_terms(p, A, B, dA, dB, dC, za, zb, p.flags & 4, p.flags & 8)


cdef void _tangent_terms(const MatmulP* p, const double* A, const double* B,
                         const double* dA, const double* dB, double* dC, bint za, bint zb,
                         bint fa, bint fb) noexcept nogil:
    """dC = op(dA) op(B) + op(A) op(dB) over the batches, a term skipped when its tangent
    is zero (za, zb); fa, fb: take A, B as finite (no scan, straight BLAS). One term
    whose partial is taken as finite is written straight into dC (beta = 0, nothing
    to clear first)."""
    cdef i64 bt, rows = p.rows, k = p.k, cols = p.cols
    cdef bint ta = p.flags & 1, tb = p.flags & 2
    cdef i64 lda = rows if ta else k, ldb = k if tb else cols
    if za != zb and (fb if zb else fa):
        for bt in range(p.batch):
            if zb:
                _gemm(ta, tb, rows, cols, k, 1.0, dA + bt * p.sA, lda, B + bt * p.sB, ldb,
                      0.0, dC + bt * rows * cols, cols)
            else:
                _gemm(ta, tb, rows, cols, k, 1.0, A + bt * p.sA, lda, dB + bt * p.sB, ldb,
                      0.0, dC + bt * rows * cols, cols)
        return
    memset(dC, 0, p.size * sizeof(double))
    for bt in range(p.batch):
        if not za:
            _adjoint_gemm_f(fb, ta, tb, rows, cols, k, 1.0, dA + bt * p.sA, lda,
                            B + bt * p.sB, ldb, dC + bt * rows * cols, cols, True)
        if not zb:
            _adjoint_gemm_f(fa, ta, tb, rows, cols, k, 1.0, A + bt * p.sA, lda,
                            dB + bt * p.sB, ldb, dC + bt * rows * cols, cols, False)


cdef inline bint _zero_tangent(Tape t, i64 j, const double* dj) noexcept nogil:
    """Is node j's tangent dj (one direction) all zero? A constant's is, without a
    scan, unless constants were seeded."""
    if t.op[j] == CONSTANT and not t._tconst:
        return True
    return _all_zero(dj, t.size_of(j))


cdef bint _zero_tangents(Tape t, i64 j, i64 p, i64 ld) noexcept nogil:
    """Are node j's tangents zero in all p directions (direction d's arena at
    t.tan + d·ld)? A constant's are, without a scan, unless constants were seeded."""
    cdef i64 d
    for d in range(p):
        if not _zero_tangent(t, j, t.tan + d * ld + t.off[j]):
            return False
    return True


cdef void matmul_tangents(Tape t, i64 i, i64 np_, i64 ld) noexcept nogil:
    """dC_d = op(dA_d) op(B) + op(A) op(dB_d) for np_ directions d at once (direction
    d's tangent arena at t.tan + d·ld). What matmul_tangent checks per direction is
    checked once: a factor whose tangents are zero in every direction is skipped (a
    constant's without a scan), the finiteness of A and B is tested once; and for a
    matrix-vector product (one batch, one column) the op(A) op(dB_d) of all directions
    are one gemm, the directions being the rows of a matrix of row stride ld:
    dCᵀ = dBᵀ op(A)ᵀ."""
    cdef const MatmulP* p = <const MatmulP*>t.params(i)
    cdef i64 pa = t.a[i], pb = t.b[i], bt, d, rows = p.rows, k = p.k, cols = p.cols
    cdef const double* A = t.val + t.off[pa]
    cdef const double* B = t.val + t.off[pb]
    cdef bint ta = p.flags & 1, tb = p.flags & 2
    cdef i64 lda = rows if ta else k, ldb = k if tb else cols
    cdef bint za = _zero_tangents(t, pa, np_, ld), zb = _zero_tangents(t, pb, np_, ld)
    cdef bint fa = True, fb = True
    cdef const double* dA
    cdef const double* dB
    cdef double* dC
    for bt in range(p.batch):
        if not zb and not p.flags & 4:
            fa = fa and _all_finite(A + bt * p.sA, k if ta else rows, rows if ta else k, lda)
        if not za and not p.flags & 8:
            fb = fb and _all_finite(B + bt * p.sB, cols if tb else k, k if tb else cols, ldb)
    for d in range(np_):
        memset(t.tan + d * ld + t.off[i], 0, p.size * sizeof(double))
    if not zb and fa and p.batch == 1 and cols == 1:
        _gemm(False, not ta, np_, rows, k, 1.0, t.tan + t.off[pb], ld, A, lda, 1.0,
              t.tan + t.off[i], ld)
        zb = True
    for d in range(np_):
        dA = t.tan + d * ld + t.off[pa]
        dB = t.tan + d * ld + t.off[pb]
        dC = t.tan + d * ld + t.off[i]
        for bt in range(p.batch):
            if not za:
                if fb:
                    _gemm(ta, tb, rows, cols, k, 1.0, dA + bt * p.sA, lda, B + bt * p.sB,
                          ldb, 1.0, dC + bt * rows * cols, cols)
                else:
                    _adjoint_gemm(ta, tb, rows, cols, k, 1.0, dA + bt * p.sA, lda,
                                  B + bt * p.sB, ldb, dC + bt * rows * cols, cols, True)
            if not zb:
                if fa:
                    _gemm(ta, tb, rows, cols, k, 1.0, A + bt * p.sA, lda, dB + bt * p.sB,
                          ldb, 1.0, dC + bt * rows * cols, cols)
                else:
                    _adjoint_gemm(ta, tb, rows, cols, k, 1.0, A + bt * p.sA, lda,
                                  dB + bt * p.sB, ldb, dC + bt * rows * cols, cols, False)


def matmul_node(Var a not None, Var b not None, i64 rows, i64 k, i64 cols, i64 batch,
                i64 sA, i64 sB,
                bint ta, bint tb, tuple shape):
    """C[bt] = op(A[bt]) op(B[bt]) for bt < batch; A[bt] starts at bt·sA (sA = 0: one
    A for all), op(A) is rows×k (transposed storage when ta), op(B) is k×cols."""
    return _matmul_node(a, b, rows, k, cols, batch, sA, sB, ta, tb, shape)


cpdef object matmul_2d(object a, object b):
    """a @ b when both are matrices or one a vector (not both), values of one tape or
    a value and a float64 array: recorded without fastape.linalg's Python (most of
    the cost of a small product). None: any other case, for the general path."""
    cdef Var va, vb
    cdef Tape t
    cdef tuple sa, sb
    if type(a) is Var:
        va = <Var>a
        t = va.tape
        sa = va.shape
        if type(b) is Var:
            if (<Var>b).tape is not t:
                return None
            sb = (<Var>b).shape
        elif type(b) is np.ndarray and b.dtype is _F64_DTYPE:
            sb = b.shape
        else:
            return None
    elif type(b) is Var and type(a) is np.ndarray and a.dtype is _F64_DTYPE:
        t = (<Var>b).tape
        sa = a.shape
        sb = (<Var>b).shape
    else:
        return None
    cdef Py_ssize_t na = len(sa), nb = len(sb)
    if na < 1 or na > 2 or nb < 1 or nb > 2 or na + nb == 2:
        return None
    cdef i64 k = sa[na - 1]
    if k != <i64>sb[0]:
        return None
    if type(a) is Var:
        va = <Var>a
    else:
        va = _leaf(t, CONSTANT, a, "matmul", "a")
    if type(b) is Var:
        vb = <Var>b
    else:
        vb = _leaf(t, CONSTANT, b, "matmul", "b")
    if na == 1:
        return _matmul_node(va, vb, 1, k, sb[1], 1, 0, 0, False, False, sb[1:])
    return _matmul_node(va, vb, sa[0], k, sb[1] if nb == 2 else 1, 1, 0, 0,
                        False, False, sa[:1] + sb[1:])


cdef object _matmul_node(Var a, Var b, i64 rows, i64 k, i64 cols, i64 batch, i64 sA,
                         i64 sB, bint ta, bint tb, tuple shape):
    cdef Tape t = a.tape
    cdef i64 size = batch * rows * cols, i
    cdef MatmulP* p
    if rows > INT_MAX_DIM or k > INT_MAX_DIM or cols > INT_MAX_DIM or (
            rows * k > INT_MAX_DIM or k * cols > INT_MAX_DIM or rows * cols > INT_MAX_DIM):
        _check_dims("matmul", rows, k, cols, rows * k, k * cols, rows * cols)
    i = t.push(MATMUL, a.node, b.node, size, 8)
    p = <MatmulP*>t.params(i)
    p.rows = rows
    p.k = k
    p.cols = cols
    p.batch = batch
    p.sA = sA
    p.sB = sB
    p.flags = (1 if ta else 0) | (2 if tb else 0) | (4 if _finite_constant(t, a.node) else 0) \
        | (8 if _finite_constant(t, b.node) else 0)
    return _recorded(t, i, shape, size)


cdef bint _finite_constant(Tape t, i64 j) noexcept:
    """Is node j a constant whose values are all finite? Then a product's adjoints and
    tangents read it as a partial without the scan _adjoint_gemm makes (the scan of a
    constant 2,000 x 2,000 W before every product of an implicit node's GMRES, of the
    data matrix X on every gradient of a layer X @ W)."""
    cdef i64 m = t.size_of(j)
    return t.op[j] == CONSTANT and _all_finite(t.val + t.off[j], 1, m, m)


# ---------------------------------------------------------------------------
# LU: the factors and pivots of a square A; its adjoint slot holds Ā
# ---------------------------------------------------------------------------

ctypedef struct SquareP:
    i64 size
    i64 n               # A is n × n


cdef void lu_forward(Tape t, i64 i) noexcept nogil:
    cdef const SquareP* p = <const SquareP*>t.params(i)
    _lu_factor(t.val + t.off[t.a[i]], t.val + t.off[i], p.n, <int*>t.work)


cdef void lu_tangent(Tape t, i64 i, double* T) noexcept nogil:
    """The slot holds dA (n·n entries), then zeros where the pivots are."""
    cdef const SquareP* p = <const SquareP*>t.params(i)
    cdef double* tz = T + t.off[i]
    memcpy(tz, T + t.off[t.a[i]], p.n * p.n * sizeof(double))
    memset(tz + p.n * p.n, 0, p.n * sizeof(double))


cdef void lu_reverse(Tape t, i64 i) noexcept nogil:
    """Ā += the slot's first n·n entries (what SOLVE, DET and LOGDET added there)."""
    cdef const SquareP* p = <const SquareP*>t.params(i)
    cdef const double* lam = t.adj + t.off[i]
    cdef double* abar = t.adj + t.off[t.a[i]]
    cdef i64 j
    if _gets_adjoint(t, t.a[i]):
        for j in range(p.n * p.n):
            abar[j] += lam[j]


def lu_node(Var a not None, i64 n):
    """The hidden LU node of a square n×n A; returns (node as a Var, singular?)."""
    cdef Tape t = a.tape
    cdef i64 i
    _check_dims("lu", n, n * n)
    t.need_work(n)                  # the pivots (ints)
    i = t.push(LU, a.node, -1, n * n + n, 2)
    (<SquareP*>t.params(i)).n = n
    v = _recorded(t, i, (n * n + n,), n * n + n)
    return v, _lu_singular(t.val + t.off[i], n)


# ---------------------------------------------------------------------------
# SOLVE: X = A⁻¹ B from the LU node of A
# ---------------------------------------------------------------------------

ctypedef struct SolveP:
    i64 size            # n · r
    i64 n
    i64 r               # B is n × r


cdef void solve_forward(Tape t, i64 i) noexcept nogil:
    cdef const SolveP* p = <const SolveP*>t.params(i)
    cdef const double* lu = t.val + t.off[t.a[i]]
    cdef double* out = t.val + t.off[i]
    cdef i64 j
    if _lu_singular(lu, p.n):
        for j in range(p.n * p.r):
            out[j] = NAN
        return
    memcpy(out, t.val + t.off[t.b[i]], p.n * p.r * sizeof(double))
    _lu_solve(lu, p.n, p.r, out, False)


cdef void solve_tangent(Tape t, i64 i, double* T) noexcept nogil:
    """dX = A⁻¹ (dB - dA X), in place in the node's tangent slot (dA: the first n·n
    entries of the LU node's tangent); NaN where A is singular, as the value."""
    cdef const SolveP* p = <const SolveP*>t.params(i)
    cdef i64 pa = t.a[i], pb = t.b[i], j, n = p.n, r = p.r
    cdef const double* lu = t.val + t.off[pa]
    cdef const double* dA = T + t.off[pa]
    cdef const double* dB = T + t.off[pb]
    cdef double* W = T + t.off[i]
    cdef bint za = _all_zero(dA, n * n), zb = _all_zero(dB, n * r)
    if za and zb:
        memset(W, 0, n * r * sizeof(double))
        return
    if _lu_singular(lu, n):
        for j in range(n * r):
            W[j] = NAN
        return
    if zb:
        memset(W, 0, n * r * sizeof(double))
    else:
        memcpy(W, dB, n * r * sizeof(double))
    if not za:
        _adjoint_gemm(False, False, n, r, n, -1.0, dA, n, t.val + t.off[i], r, W, r, True)
    _lu_solve(lu, n, r, W, False)


cdef void solve_reverse(Tape t, i64 i) noexcept nogil:
    """Z = A⁻ᵀ X̄;  B̄ += Z;  Ā -= Z Xᵀ (into the LU node's slot)."""
    cdef const SolveP* p = <const SolveP*>t.params(i)
    cdef i64 pa = t.a[i], pb = t.b[i], j, n = p.n, r = p.r
    cdef double* Z = t.work
    cdef double* bbar
    memcpy(Z, t.adj + t.off[i], n * r * sizeof(double))
    _lu_solve(t.val + t.off[pa], n, r, Z, True)
    if _gets_adjoint(t, pb):
        bbar = t.adj + t.off[pb]
        for j in range(n * r):
            bbar[j] += Z[j]
    if _gets_adjoint(t, t.a[pa]):
        _adjoint_gemm(False, True, n, n, r, -1.0, Z, r, t.val + t.off[i], r,
                      t.adj + t.off[pa], n, True)


def solve_node(Var lu not None, Var b not None, i64 n, i64 r, tuple shape):
    """X = A⁻¹ B (B n×r, row-major) from the LU node of A."""
    cdef Tape t = lu.tape
    cdef i64 i
    cdef SolveP* p
    t.need_work(n * r)
    i = t.push(SOLVE, lu.node, b.node, n * r, 3)
    p = <SolveP*>t.params(i)
    p.n = n
    p.r = r
    return _recorded(t, i, shape, n * r)


# ---------------------------------------------------------------------------
# DET, LOGDET: det A and log |det A| from the LU node of A
# ---------------------------------------------------------------------------

cdef void det_forward(Tape t, i64 i) noexcept nogil:
    cdef const SquareP* p = <const SquareP*>t.params(i)
    cdef double s = 0.0
    cdef double* out = t.val + t.off[i]
    out[0] = _lu_logdet(t.val + t.off[t.a[i]], p.n, &s)
    if t.op[i] == DET:
        out[0] = 0.0 if s == 0.0 else s * exp(out[0])


cdef void _add_cofactors_singular(const double* lu, i64 n, double scale, double* abar,
                                  double* work) noexcept nogil:
    """abar += scale cof(A) for a singular A, from its LU factors, without dividing by
    det A = 0: cof(A) is 0 when two or more pivots are 0; with exactly one zero pivot
    u_kk (rank n-1) it is s·c·r uᵀ (row-major), where, with Aᵀ = P L U as LAPACK sees
    the buffer, U r = 0 and lᵀ U = 0 (r_k = l_k = 1), u = P L⁻ᵀ l, c = Π_{i≠k} u_ii and
    s = det P: adj(U) = c r lᵀ, adj(L) = L⁻¹, adj(P) = det(P) Pᵀ.
    # SCRATCH: work (2n doubles)"""
    cdef const double* piv = lu + n * n
    cdef double* r = work
    cdef double* u = work + n
    cdef i64 i, j, k = -1, zeros = 0
    cdef double c = 1.0, s = 1.0, acc
    for i in range(n):                       # U[i, j] = lu[j n + i] (column-major)
        if lu[i * n + i] == 0.0:
            zeros += 1
            k = i
        else:
            c *= lu[i * n + i]
        if <i64>piv[i] - 1 != i:
            s = -s
    if zeros != 1 or c != c:
        return                               # rank ≤ n - 2: the cofactors are all 0
    # r: U r = 0, r_k = 1, r_j = 0 for j > k; back-substitution in U[:k, :k]
    for j in range(n):
        r[j] = 0.0
    r[k] = 1.0
    i = k - 1
    while i >= 0:
        acc = 0.0
        for j in range(i + 1, k + 1):
            acc += lu[j * n + i] * r[j]
        r[i] = -acc / lu[i * n + i]
        i -= 1
    # l: lᵀ U = 0, l_k = 1, l_i = 0 for i < k; forward in U[k+1:, k+1:] (held in u)
    for j in range(n):
        u[j] = 0.0
    u[k] = 1.0
    for j in range(k + 1, n):
        acc = 0.0
        for i in range(k, j):
            acc += u[i] * lu[j * n + i]
        u[j] = -acc / lu[j * n + j]
    # u = L⁻ᵀ l (Lᵀ is unit upper triangular: back-substitution), then P u
    i = n - 1
    while i >= 0:
        acc = u[i]
        for j in range(i + 1, n):
            acc -= lu[i * n + j] * u[j]      # Lᵀ[i, j] = L[j, i] = lu[i n + j]
        u[i] = acc
        i -= 1
    i = n - 1
    while i >= 0:
        j = <i64>piv[i] - 1
        if j != i:
            acc = u[i]
            u[i] = u[j]
            u[j] = acc
        i -= 1
    scale *= s * c
    for i in range(n):
        for j in range(n):
            abar[i * n + j] += scale * r[i] * u[j]


cdef void det_tangent(Tape t, i64 i, double* T) noexcept nogil:
    """d log|det A| = tr(A⁻¹ dA) = Σ (A⁻ᵀ)_ij dA_ij;  d det A = det(A) tr(A⁻¹ dA) =
    Σ cof(A)_ij dA_ij, from the cofactors where A is singular. A zero dA_ij contributes
    nothing. # SCRATCH: t.work (n·n + 2n doubles)"""
    cdef const SquareP* p = <const SquareP*>t.params(i)
    cdef i64 pa = t.a[i], j, n = p.n
    cdef const double* lu = t.val + t.off[pa]
    cdef const double* dA = T + t.off[pa]
    cdef double* W = t.work
    cdef double acc = 0.0, scale = 1.0
    if _all_zero(dA, n * n):
        T[t.off[i]] = 0.0
        return
    if t.op[i] == DET and t.val[t.off[i]] == 0.0 and _lu_singular(lu, n):
        memset(W, 0, n * n * sizeof(double))
        _add_cofactors_singular(lu, n, 1.0, W, t.work + n * n)
    else:
        _inverse_transpose(lu, n, W)
        if t.op[i] == DET:
            scale = t.val[t.off[i]]
    for j in range(n * n):
        if dA[j] != 0.0:
            acc += W[j] * dA[j]
    T[t.off[i]] = scale * acc


cdef void det_reverse(Tape t, i64 i) noexcept nogil:
    """log|det A|: Ā += λ A⁻ᵀ;  det A: Ā += λ cof(A) = λ det(A) A⁻ᵀ, computed from the
    factors without the division where A is singular (into the LU node's slot)."""
    cdef const SquareP* p = <const SquareP*>t.params(i)
    cdef i64 pa = t.a[i]
    cdef double w = t.adj[t.off[i]]
    if _gets_adjoint(t, t.a[pa]):
        if t.op[i] == DET and t.val[t.off[i]] == 0.0 and \
                _lu_singular(t.val + t.off[pa], p.n):
            _add_cofactors_singular(t.val + t.off[pa], p.n, w, t.adj + t.off[pa], t.work)
            return
        if t.op[i] == DET:
            w *= t.val[t.off[i]]
        _add_inverse_transpose(t.val + t.off[pa], p.n, w, t.adj + t.off[pa], t.work)


def det_node(Var lu not None, i64 n, bint log_abs):
    """det A (or log |det A|) from the LU node of A; returns (value, sign of det A)."""
    cdef Tape t = lu.tape
    cdef double s = 0.0
    cdef i64 i
    t.need_work(n * n + 2 * n)      # A⁻ᵀ or the cofactors, and their solves' scratch
    i = t.push(LOGDET if log_abs else DET, lu.node, -1, 1, 2)
    (<SquareP*>t.params(i)).n = n
    v = _recorded(t, i, SCALAR, 1)
    _lu_logdet(t.val + t.off[lu.node], n, &s)
    return v, s


# ---------------------------------------------------------------------------
# NORM: z[p, s] = ‖x[p, :, s]‖₂ over the middle axis of (outer, n, inner)
# ---------------------------------------------------------------------------

ctypedef struct NormP:
    i64 size            # outer · inner
    i64 outer
    i64 n               # the axis the norm runs over
    i64 inner


cdef void norm_forward(Tape t, i64 i) noexcept nogil:
    cdef const NormP* p = <const NormP*>t.params(i)
    cdef const double* x = t.val + t.off[t.a[i]]
    cdef double* z = t.val + t.off[i]
    cdef int cnt = <int>p.n, inc = <int>p.inner
    cdef i64 q, s
    for q in range(p.outer):
        for s in range(p.inner):
            z[q * p.inner + s] = dnrm2(&cnt, <double*>(x + q * p.n * p.inner + s), &inc) \
                if cnt > 0 else 0.0


cdef void norm_reverse(Tape t, i64 i) noexcept nogil:
    """x̄ += λ x / ‖x‖ along the axis; the subgradient 0 where ‖x‖ = 0, for every
    slice alike."""
    cdef const NormP* p = <const NormP*>t.params(i)
    cdef const double* x = t.val + t.off[t.a[i]]
    cdef double* x_bar = t.adj + t.off[t.a[i]]
    cdef const double* z = t.val + t.off[i]
    cdef const double* lam = t.adj + t.off[i]
    cdef i64 q, s, j, base
    cdef double w
    for q in range(p.outer):
        for s in range(p.inner):
            w = z[q * p.inner + s]
            if w > 0.0 and lam[q * p.inner + s] != 0.0:
                w = lam[q * p.inner + s] / w
                base = q * p.n * p.inner + s
                for j in range(p.n):
                    x_bar[base + j * p.inner] += w * x[base + j * p.inner]


cdef void norm_tangent(Tape t, i64 i, double* T) noexcept nogil:
    """ż = Σ_j x_j ẋ_j / ‖x‖ along the axis; 0 where ‖x‖ = 0 (the reverse kernel's
    subgradient). A zero ẋ_j contributes nothing."""
    cdef const NormP* p = <const NormP*>t.params(i)
    cdef const double* x = t.val + t.off[t.a[i]]
    cdef const double* tx = T + t.off[t.a[i]]
    cdef const double* z = t.val + t.off[i]
    cdef double* tz = T + t.off[i]
    cdef i64 q, s, j, base
    cdef double w, acc
    for q in range(p.outer):
        for s in range(p.inner):
            w = z[q * p.inner + s]
            acc = 0.0
            if w > 0.0:
                base = q * p.n * p.inner + s
                for j in range(p.n):
                    if tx[base + j * p.inner] != 0.0:
                        acc += x[base + j * p.inner] * tx[base + j * p.inner]
                acc = acc / w
            tz[q * p.inner + s] = acc


def norm_node(Var x not None, i64 outer=1, i64 n=-1, i64 inner=1, tuple shape=()):
    """‖x‖₂ over the middle axis of x viewed as (outer, n, inner); by default over all
    elements (a scalar)."""
    cdef Tape t = x.tape
    cdef i64 i
    cdef NormP* p
    if n < 0:
        n = x.size
    _check_dims("norm", n, inner)
    i = t.push(NORM, x.node, -1, outer * inner, 4)
    p = <NormP*>t.params(i)
    p.outer = outer
    p.n = n
    p.inner = inner
    return _recorded(t, i, shape, outer * inner)


def _check_dims(str op, *dims):
    for d in dims:
        if d > INT_MAX_DIM:
            raise ShapeError(f"{op}: dimension {d} exceeds BLAS's 32-bit limit")


def singular_error(str op):
    return _nplinalg.LinAlgError(f"{op}: singular matrix")
