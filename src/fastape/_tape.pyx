# cython: language_level=3
"""The compiled Wengert tape: storage, recording primitives, the sweeps, and ``Var``.

Storage is a struct of arrays (see ``_tape.pxd``); appending a node is amortised
O(1) and creates no Python object. Node values are computed when the node is
recorded, by the same ``forward_node`` the forward sweep runs, so recording and
replay cannot disagree. The sweeps never touch a Python object and run without
the GIL; all checks happen when a node is recorded.

Two layouts share one tape. While every node is a scalar, node i's value is
``val[i]`` and the sweeps run a specialised scalar loop. The first array or
structural node switches the tape to the general layout (``off``/``meta``),
where node i's value occupies ``val[off[i] : off[i] + size]``.
"""
cimport cython
from cpython.mem cimport PyMem_Realloc, PyMem_Free
from cpython.float cimport PyFloat_Check
from cpython.long cimport PyLong_Check
from libc.string cimport memcpy, memset
from libc.math cimport NAN

from fastape._ops cimport (
    INPUT, CONSTANT, COPY, NEG, ABS, ROUND, SQUARE, RELU, TANH, EXP, SIGMOID, SQRT,
    ADD_K, MUL_K, RSUB_K, DIV_K, RDIV_K, POW_K, RPOW_K,
    ADD, SUB, MUL, DIV, POW, MAXIMUM, MINIMUM,
    GATHER1, GATHER, STRIDED, BROADCAST, SUM, PROD, AMAX, AMIN, DOT, WHERE, CONCAT, MATMUL,
    value_and_partials, is_binary, has_k, is_elementwise,
)

import numpy as np
from fastape._ops import Op as PyOp
from fastape.errors import ShapeError, TapeError

cdef tuple SCALAR = ()
cdef i64 MAX_NODES = 2147483646


# ---------------------------------------------------------------------------
# growable buffers
# ---------------------------------------------------------------------------

cdef void* _resize(void* p, i64 count, size_t item) except? NULL:
    cdef void* q = PyMem_Realloc(p, <size_t>(count if count > 0 else 1) * item)
    if q == NULL:
        raise MemoryError(f"fastape: cannot allocate {count * item} bytes for the tape")
    return q


cdef inline i64 _grown(i64 cap, i64 need):
    cdef i64 c = cap if cap > 0 else 256
    while c < need:
        c *= 2
    return c


# ---------------------------------------------------------------------------
# elementwise kernels over arrays (forward and reverse side by side)
# ---------------------------------------------------------------------------

# tanh of a contiguous array: TANH's forward loop in the elementwise kernels below.
# Branch-free so the compiler vectorises it (glibc's scalar tanh costs ~20 ns an
# element, numpy's SIMD one ~2 ns); target_clones picks the widest instruction set at load time.
#   |x| < 0.625: Cephes' rational x + x z P(z)/Q(z), z = x² (relative error < 3e-16);
#   otherwise:   1 - 2/(e^{2|x|} + 1), e^y = 2^k p(r), y = k ln2 + r, |r| ≤ ln2/2, p the
#                degree-13 Taylor polynomial (truncation < 1e-17); |x| is capped at 40,
#                where tanh is 1 in double precision. Within 1 ulp of tanhl.
cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #include <math.h>
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
    __attribute__((target_clones("avx512f", "avx2", "default")))
    #endif
    static void fastape_tanh_array(const double* restrict x, double* restrict out, int64_t n)
    {
        const double P0 = -9.64399179425052238628E-1, P1 = -9.92877231001918586564E1,
                     P2 = -1.61468768441708447952E3;
        const double Q1 = 1.12811678491632931402E2, Q2 = 2.23548839060100448583E3,
                     Q3 = 4.84406305325125486048E3;
        const double LN2_HI = 6.93147180369123816490e-01, LN2_LO = 1.90821492927058770002e-10;
        const double INV_LN2 = 1.44269504088896338700e+00, SHIFT = 6755399441055744.0;
        for (int64_t j = 0; j < n; j++) {
            double v = x[j], a = fabs(v), z = v * v;
            double small = v + v * z * (((P0 * z + P1) * z + P2) /
                                        (((z + Q1) * z + Q2) * z + Q3));
            double y = 2.0 * (a > 40.0 ? 40.0 : a);      /* NaN stays NaN */
            double t = y * INV_LN2 + SHIFT;               /* k in t's low mantissa bits */
            double kn = t - SHIFT;
            double r = (y - kn * LN2_HI) - kn * LN2_LO;
            double p = 1.0 + r * (1.0 + r * (1.0/2 + r * (1.0/6 + r * (1.0/24
                       + r * (1.0/120 + r * (1.0/720 + r * (1.0/5040 + r * (1.0/40320
                       + r * (1.0/362880 + r * (1.0/3628800 + r * (1.0/39916800
                       + r * (1.0/479001600 + r * (1.0/6227020800.0)))))))))))));
            int64_t bits;
            double scale;
            memcpy(&bits, &t, 8);
            bits = (int64_t)((uint64_t)bits << 52) + ((int64_t)1023 << 52);   /* 2^k */
            memcpy(&scale, &bits, 8);
            double big = 1.0 - 2.0 / (p * scale + 1.0);
            out[j] = copysign(a < 0.625 ? small : big, v);
        }
    }
    """
    void fastape_tanh_array(const double* x, double* out, i64 n) noexcept nogil


cdef extern from *:
    """
    /* Forced inline, so that a call with a constant opcode and constant strides
       folds the op table's branch away and the loop vectorises. */
    #if defined(__GNUC__)
    #define FASTAPE_KERNEL_INLINE __attribute__((always_inline))
    #else
    #define FASTAPE_KERNEL_INLINE
    #endif
    static inline void fastape_ew_loop(int, const double *, int64_t, const double *,
        int64_t, double *, int64_t) FASTAPE_KERNEL_INLINE;
    static inline void fastape_ew_loop_rev(int, const double *, int64_t, const double *,
        int64_t, const double *, const double *, double *, double *,
        int64_t) FASTAPE_KERNEL_INLINE;
    typedef struct {
        const double *x; int64_t sx; const double *y; int64_t sy; const double *c;
        const double *obar; double *xbar; double *ybar; double *out; int64_t n;
        int64_t lo; const int32_t *pa; const int32_t *pb;
    } fastape_kargs;
    static inline void fastape_kernel(int, int, fastape_kargs *) FASTAPE_KERNEL_INLINE;
    static inline void fastape_hot(int, int, fastape_kargs *) FASTAPE_KERNEL_INLINE;
    static inline void fastape_ew_ops(int, const double *, int64_t, const double *,
        int64_t, double *, int64_t) FASTAPE_KERNEL_INLINE;
    static inline void fastape_ew_ops_rev(int, const double *, int64_t, const double *,
        int64_t, const double *, const double *, double *, double *,
        int64_t) FASTAPE_KERNEL_INLINE;
    static inline void fastape_run_loop(int, double *, const double *, const int32_t *,
        const int32_t *, int64_t, int64_t) FASTAPE_KERNEL_INLINE;
    static inline void fastape_run_loop_rev(int, const double *, double *, const double *,
        const int32_t *, const int32_t *, int64_t, int64_t) FASTAPE_KERNEL_INLINE;
    """
    # the kernels' arguments (see _hot)
    ctypedef struct _KArgs "fastape_kargs":
        const double* x          # EW: first operand; RUN: the value arena
        i64 sx
        const double* y          # EW: second operand; RUN: the pool of immediates
        i64 sy
        const double* c          # EW_REV: the node's values
        const double* obar       # EW_REV: the node's multipliers
        double* xbar             # EW_REV: x's multipliers; RUN_REV: the multiplier arena
        double* ybar             # EW_REV: y's multipliers (NULL: unary op)
        double* out              # EW_FWD: the node's values; RUN_FWD: the value arena
        i64 n                    # EW: elements; RUN: one past the run's last node
        i64 lo                   # RUN: the run's first node
        const i32* pa            # RUN: parents
        const i32* pb


cdef inline void _ew_loop "fastape_ew_loop"(
        int o, const double* x, i64 sx, const double* y, i64 sy, double* out,
        i64 n) noexcept nogil:
    """out[j] = f_o(x[j·sx], y[j·sy])."""
    cdef i64 j
    cdef double d0, d1
    for j in range(n):
        out[j] = value_and_partials(o, x[j * sx], y[j * sy], &d0, &d1, NULL)


cdef inline void _ew_loop_rev "fastape_ew_loop_rev"(
        int o, const double* x, i64 sx, const double* y, i64 sy, const double* c,
        const double* obar, double* xbar, double* ybar, i64 n) noexcept nogil:
    """x̄[j·sx] += ∂f/∂x λ[j];  ȳ[j·sy] += ∂f/∂y λ[j] (ybar NULL: unary op).
    A zero λ[j] contributes nothing, whatever the partial (a select, not a branch,
    so the loop still vectorises)."""
    cdef i64 j
    cdef double d0, d1, w
    for j in range(n):
        w = obar[j]
        value_and_partials(o, x[j * sx], y[j * sy], &d0, &d1, c + j)
        xbar[j * sx] += d0 * w if w != 0.0 else 0.0
        if ybar != NULL:
            ybar[j * sy] += d1 * w if w != 0.0 else 0.0


cdef inline void _run_loop "fastape_run_loop"(
        int o, double* v, const double* pool, const i32* pa, const i32* pb, i64 lo,
        i64 hi) noexcept nogil:
    """Scalar layout, a run of nodes lo..hi-1 that all have opcode o, in tape order:
    v[i] = f_o(v[a[i]], v[b[i]]), or f_o(v[a[i]], k) with k = pool[b[i]].

    A node's parent may be the node just before it (a chain s = s + t): that value
    is taken from a register, not reloaded from the arena, so the chain costs the
    op's latency rather than a store-to-load round trip per node."""
    cdef i64 i
    cdef double d0, d1, x, y
    cdef double last = v[lo - 1] if lo > 0 else 0.0
    cdef const double* src = pool if has_k(o) else v
    for i in range(lo, hi):
        if pa[i] == i - 1:
            x = last
        else:
            x = v[pa[i]]
        if not has_k(o) and pb[i] == i - 1:
            y = last
        else:
            y = src[pb[i]]
        last = value_and_partials(o, x, y, &d0, &d1, NULL)
        v[i] = last


cdef inline void _run_loop_rev "fastape_run_loop_rev"(
        int o, const double* v, double* lam, const double* pool, const i32* pa,
        const i32* pb, i64 lo, i64 hi) noexcept nogil:
    """λ[a[i]] += ∂f/∂x λ[i], λ[b[i]] += ∂f/∂y λ[i] for i = hi-1 down to lo (a run of
    opcode o, scalar layout), then λ[i] = 0. A zero λ[i] contributes nothing.

    What a node sends to the node just before it (a chain) is carried in a register
    and added when that node is reached, instead of a read-modify-write of the arena
    that the next iteration would have to wait for."""
    cdef i64 i = hi - 1
    cdef double d0, d1, w, gx, gy
    cdef double carry = 0.0        # owed to λ[i] by node i + 1
    cdef const double* src = pool if has_k(o) else v
    while i >= lo:
        w = lam[i] + carry
        lam[i] = 0.0        # consumed: the arena is left zeroed for the next sweep
        carry = 0.0
        if w != 0.0:        # a branch, not a select: a select puts a compare and
            # moves through integer registers on the chain's critical path
            value_and_partials(o, v[pa[i]], src[pb[i]], &d0, &d1, v + i)
            gx = d0 * w
            if pa[i] == i - 1:
                carry = gx
            else:
                lam[pa[i]] += gx
            if is_binary(o):
                gy = d1 * w
                if pb[i] == i - 1:
                    carry += gy
                else:
                    lam[pb[i]] += gy
        i -= 1
    if carry != 0.0:
        lam[lo - 1] += carry


# The loops above, each instantiated with a constant opcode for the ops listed in
# _hot: once the op table's branch is folded away the array loops vectorise and the
# run loops lose their dispatch. `kind` picks the loop; the arguments travel in a
# struct that the forced inlining dissolves.
cdef enum:
    EW_FWD, EW_REV, RUN_FWD, RUN_REV


cdef inline void _kernel "fastape_kernel"(int kind, int o, _KArgs* k) noexcept nogil:
    if kind == EW_FWD:
        if o == TANH and k.sx == 1:
            fastape_tanh_array(k.x, k.out, k.n)    # x, out never alias
        else:
            _ew_loop(o, k.x, k.sx, k.y, k.sy, k.out, k.n)
    elif kind == EW_REV:
        _ew_loop_rev(o, k.x, k.sx, k.y, k.sy, k.c, k.obar, k.xbar, k.ybar, k.n)
    elif kind == RUN_FWD:
        _run_loop(o, k.out, k.y, k.pa, k.pb, k.lo, k.n)
    else:
        _run_loop_rev(o, k.x, k.xbar, k.y, k.pa, k.pb, k.lo, k.n)


cdef inline void _hot "fastape_hot"(int kind, int o, _KArgs* k) noexcept nogil:
    # the cheap ops, memory- or dispatch-bound; tanh, exp, sigmoid and sqrt too (their
    # reverse partials come from the node's value: 1 - v², v, v(1 - v), 0.5/v); the
    # rest share one loop
    if o == ADD: _kernel(kind, ADD, k)
    elif o == SUB: _kernel(kind, SUB, k)
    elif o == MUL: _kernel(kind, MUL, k)
    elif o == DIV: _kernel(kind, DIV, k)
    elif o == ADD_K: _kernel(kind, ADD_K, k)
    elif o == MUL_K: _kernel(kind, MUL_K, k)
    elif o == RSUB_K: _kernel(kind, RSUB_K, k)
    elif o == DIV_K: _kernel(kind, DIV_K, k)
    elif o == POW_K: _kernel(kind, POW_K, k)
    elif o == SQUARE: _kernel(kind, SQUARE, k)
    elif o == NEG: _kernel(kind, NEG, k)
    elif o == ABS: _kernel(kind, ABS, k)
    elif o == RELU: _kernel(kind, RELU, k)
    elif o == COPY: _kernel(kind, COPY, k)
    elif o == MAXIMUM: _kernel(kind, MAXIMUM, k)
    elif o == MINIMUM: _kernel(kind, MINIMUM, k)
    elif o == TANH: _kernel(kind, TANH, k)
    elif o == EXP: _kernel(kind, EXP, k)
    elif o == SIGMOID: _kernel(kind, SIGMOID, k)
    elif o == SQRT: _kernel(kind, SQRT, k)
    else: _kernel(kind, o, k)


cdef inline void _ew_ops "fastape_ew_ops"(
        int o, const double* x, i64 sx, const double* y, i64 sy, double* out,
        i64 n) noexcept nogil:
    cdef _KArgs k
    k.x = x; k.sx = sx; k.y = y; k.sy = sy; k.out = out; k.n = n
    _hot(EW_FWD, o, &k)


cdef inline void _ew_ops_rev "fastape_ew_ops_rev"(
        int o, const double* x, i64 sx, const double* y, i64 sy, const double* c,
        const double* obar, double* xbar, double* ybar, i64 n) noexcept nogil:
    cdef _KArgs k
    k.x = x; k.sx = sx; k.y = y; k.sy = sy; k.c = c; k.obar = obar; k.xbar = xbar
    k.ybar = ybar; k.n = n
    _hot(EW_REV, o, &k)


cdef void run_forward(int o, double* v, const double* pool, const i32* pa, const i32* pb,
                      i64 lo, i64 hi) noexcept nogil:
    """The forward sweep over a run of nodes lo..hi-1 of opcode o (scalar layout)."""
    cdef _KArgs k
    k.out = v; k.y = pool; k.pa = pa; k.pb = pb; k.lo = lo; k.n = hi
    _hot(RUN_FWD, o, &k)


cdef void run_reverse(int o, const double* v, double* lam, const double* pool,
                      const i32* pa, const i32* pb, i64 lo, i64 hi) noexcept nogil:
    """The reverse sweep over a run of nodes hi-1 down to lo of opcode o (scalar layout)."""
    cdef _KArgs k
    k.x = v; k.xbar = lam; k.y = pool; k.pa = pa; k.pb = pb; k.lo = lo; k.n = hi
    _hot(RUN_REV, o, &k)


cdef void elementwise_forward(int o, const double* x, i64 sx, const double* y, i64 sy,
                              double* out, i64 n) noexcept nogil:
    """out[j] = f_o(x[j·sx], y[j·sy]), strides 0 (a broadcast scalar) or 1."""
    if sx and sy:
        _ew_ops(o, x, 1, y, 1, out, n)
    elif sx:
        _ew_ops(o, x, 1, y, 0, out, n)
    elif sy:
        _ew_ops(o, x, 0, y, 1, out, n)
    else:
        _ew_ops(o, x, 0, y, 0, out, n)


cdef void elementwise_reverse(int o, const double* x, i64 sx, const double* y, i64 sy,
                              const double* c, const double* obar, double* xbar,
                              double* ybar, i64 n) noexcept nogil:
    """x̄, ȳ += the partials of f_o times λ (see _ew_loop_rev); c: the node's values."""
    if sx and sy:
        _ew_ops_rev(o, x, 1, y, 1, c, obar, xbar, ybar, n)
    elif sx:
        _ew_ops_rev(o, x, 1, y, 0, c, obar, xbar, ybar, n)
    elif sy:
        _ew_ops_rev(o, x, 0, y, 1, c, obar, xbar, ybar, n)
    else:
        _ew_ops_rev(o, x, 0, y, 0, c, obar, xbar, ybar, n)


cdef enum:
    RUN_AFFINE = 1
    RUN_SX = 2
    RUN_SY = 4


cdef i64 _stride(const i32* p, i64 lo, i64 hi) noexcept:
    """s in {0, 1} if p[i] = p[lo] + s·(i - lo) for i in lo..hi-1, else -1."""
    cdef i64 i, s = 1 if hi - lo < 2 else p[lo + 1] - p[lo]
    if s != 0 and s != 1:
        return -1
    for i in range(lo + 1, hi):
        if p[i] != p[lo] + s * (i - lo):
            return -1
    return s


# ---------------------------------------------------------------------------
# structural kernels (forward and reverse side by side)
# ---------------------------------------------------------------------------

cdef void _broadcast(const double* x, double* out, const i64* shape, const i64* stride,
                     int nd, i64 size, bint reverse) noexcept nogil:
    """forward: out[j] = x[src(j)];  reverse: x̄[src(j)] += out̄[j].
    src(j) walks the output multi-index with the input's strides (0 on broadcast axes)."""
    cdef i64 idx[64]
    cdef i64 j, src = 0
    cdef int d
    memset(idx, 0, sizeof(idx))
    for j in range(size):
        if reverse:
            (<double*>x)[src] += out[j]
        else:
            out[j] = x[src]
        d = nd - 1
        while d >= 0:
            idx[d] += 1
            src += stride[d]
            if idx[d] < shape[d]:
                break
            src -= stride[d] * shape[d]
            idx[d] = 0
            d -= 1


cdef void _reduce_fwd(int o, const double* x, double* out, i64 outer, i64 n,
                      i64 inner) noexcept nogil:
    """out[p, t] = ⊕_q x[p, q, t] for ⊕ in (sum, prod, max, min)."""
    cdef i64 p, q, t, base
    cdef double v
    for p in range(outer):
        for t in range(inner):
            base = p * n * inner + t
            if o == SUM or o == PROD:
                v = 0.0 if o == SUM else 1.0
                for q in range(n):
                    if o == SUM:
                        v += x[base + q * inner]
                    else:
                        v *= x[base + q * inner]
                out[p * inner + t] = v
            else:
                out[p * inner + t] = x[base + _argbest(o, x + base, n, inner) * inner]


cdef i64 _argbest(int o, const double* x, i64 n, i64 stride) noexcept nogil:
    """First index of the max (AMAX) or min (AMIN) of x[0:n*stride:stride]; first NaN wins."""
    cdef i64 q, arg = 0
    cdef double v, best = x[0]
    if best != best:
        return 0
    for q in range(1, n):
        v = x[q * stride]
        if v != v:
            return q
        if (o == AMAX and v > best) or (o == AMIN and v < best):
            best = v
            arg = q
    return arg


cdef void _reduce_rev(int o, const double* x, double* xbar, const double* out,
                      const double* obar, i64 outer, i64 n, i64 inner) noexcept nogil:
    """x̄[p, q, t] += ∂out[p, t]/∂x[p, q, t] · out̄[p, t]."""
    cdef i64 p, q, t, base, zeros, zpos
    cdef double w, nz
    for p in range(outer):
        for t in range(inner):
            w = obar[p * inner + t]
            if w == 0.0:
                continue
            base = p * n * inner + t
            if o == SUM:
                for q in range(n):
                    xbar[base + q * inner] += w
            elif o == PROD:
                # ∂/∂x_l = Π_{m≠l} x_m, computed without dividing by a zero
                zeros = 0
                zpos = 0
                nz = 1.0
                for q in range(n):
                    if x[base + q * inner] == 0.0:
                        zeros += 1
                        zpos = q
                    else:
                        nz *= x[base + q * inner]
                if zeros == 0:
                    for q in range(n):
                        xbar[base + q * inner] += w * (nz / x[base + q * inner])
                elif zeros == 1:
                    xbar[base + zpos * inner] += w * nz
            else:
                xbar[base + _argbest(o, x + base, n, inner) * inner] += w


# dense linear algebra (MATMUL and later opcodes): BLAS/LAPACK kernels and their
# recording functions, compiled into this module
include "_linalg.pxi"


# ---------------------------------------------------------------------------
# the tape
# ---------------------------------------------------------------------------

@cython.final
cdef class Tape:
    """A Wengert tape. Use as a context manager; record inputs with :meth:`var`.

    Every operation on a :class:`Var` of the tape appends one node. After the
    ``with`` block the tape is finished: it can still be differentiated
    (:meth:`gradient`, :meth:`adjoint`) but records nothing more.

    >>> import fastape as ft
    >>> with ft.Tape() as t:
    ...     x = t.var(0.5)
    ...     y = ft.sin(x) * x
    >>> round(t.gradient(y, x), 6)   # cos(x)·x + sin(x)
    0.918217
    """

    def __cinit__(self):
        self.n = 0
        self.cap = 0
        self.nval = 0
        self.val_cap = 0
        self.adj_cap = 0
        self.npool = 0
        self.pool_cap = 0
        self.nM = 0
        self.M_cap = 0
        self.seed = -1
        self.guards = None
        self._closed = False
        self._freed = False

    def __dealloc__(self):
        self._free()

    cdef void _free(self) noexcept:
        PyMem_Free(self.op)
        PyMem_Free(self.a)
        PyMem_Free(self.b)
        PyMem_Free(self.val)
        PyMem_Free(self.adj)
        PyMem_Free(self.pool)
        PyMem_Free(self.off)
        PyMem_Free(self.meta)
        PyMem_Free(self.M)
        PyMem_Free(self.runs)
        PyMem_Free(self.run_kind)
        self.runs = NULL
        self.run_kind = NULL
        self.nruns = 0
        self.op = NULL
        self.a = NULL
        self.b = NULL
        self.val = NULL
        self.adj = NULL
        self.pool = NULL
        self.off = NULL
        self.meta = NULL
        self.M = NULL
        self.n = self.cap = self.nval = self.val_cap = self.adj_cap = 0
        self.npool = self.pool_cap = self.nM = self.M_cap = 0

    # -- context manager and life cycle ---------------------------------------

    def __enter__(self):
        self._check()
        return self

    def __exit__(self, *exc):
        self._closed = True
        if not self._freed:
            self.shrink_to_fit()
        return False

    def release(self):
        """Free the tape's memory. Any later use of it or its values raises TapeError."""
        self._free()
        self._closed = True
        self._freed = True

    cdef int _check(self) except -1:
        if self._freed:
            raise TapeError("this tape is finished: its memory was released "
                            "(values of a grad() call cannot be used after it returns)")
        return 0

    def shrink_to_fit(self):
        """Trim every buffer to its length (done automatically when the ``with`` block ends)."""
        self._check()
        cdef i64 n = self.n if self.n > 0 else 1
        self.op = <uint8_t*>_resize(self.op, n, sizeof(uint8_t))
        self.a = <i32*>_resize(self.a, n, sizeof(i32))
        self.b = <i32*>_resize(self.b, n, sizeof(i32))
        if self.off != NULL:
            self.off = <i64*>_resize(self.off, n, sizeof(i64))
            self.meta = <i64*>_resize(self.meta, n, sizeof(i64))
            self.M = <i64*>_resize(self.M, self.nM, sizeof(i64))
            self.M_cap = self.nM
        self.cap = n
        self.val = <double*>_resize(self.val, self.nval, sizeof(double))
        self.val_cap = self.nval
        self.pool = <double*>_resize(self.pool, self.npool, sizeof(double))
        self.pool_cap = self.npool

    @property
    def nbytes(self):
        """Bytes held by the tape's buffers (node records, values, multipliers, immediates)."""
        cdef i64 per_node = sizeof(uint8_t) + 2 * sizeof(i32)
        if self.off != NULL:
            per_node += 2 * sizeof(i64)
        return int(self.cap * per_node + (self.val_cap + self.adj_cap + self.pool_cap
                                          + self.M_cap) * 8
                   + ((self.nruns + 1) * sizeof(i32) + self.nruns * sizeof(uint8_t)
                      if self.runs != NULL else 0))

    @property
    def scalar_layout(self):
        """True while every node is a scalar (the tape runs the specialised scalar loop)."""
        return self.off == NULL

    @property
    def run_count(self):
        """Number of runs of a grouped tape (see ``fastape.compile``); 0 if not grouped."""
        return int(self.nruns) if self.runs != NULL else 0

    @property
    def array_run_count(self):
        """How many of those runs the sweeps take as elementwise array ops (their
        parents are contiguous slices of the arena, or one node)."""
        cdef i64 r, c = 0
        if self.runs != NULL:
            for r in range(self.nruns):
                c += self.run_kind[r] & RUN_AFFINE != 0
        return int(c)

    @property
    def closed(self):
        """True once the ``with`` block has ended (or the tape was released)."""
        return self._closed

    @property
    def finished(self):
        """True once the tape's memory was released."""
        return self._freed

    def __len__(self):
        return int(self.n)

    def export(self):
        """Copies of the tape's arrays, for tools and benchmarks: a dict with ``op``
        (uint8), ``a``, ``b`` (int32), ``val`` and ``pool`` (float64), and, for the
        general layout, ``off`` and ``meta`` (int64) and ``M`` (int64)."""
        self._check()
        cdef i64 n = self.n
        out = {"op": self.opcodes(),
               "a": np.asarray(<i32[:n]>self.a).copy() if n else np.empty(0, np.int32),
               "b": np.asarray(<i32[:n]>self.b).copy() if n else np.empty(0, np.int32),
               "val": np.asarray(<double[:self.nval]>self.val).copy()
               if self.nval else np.empty(0),
               "pool": np.asarray(<double[:self.npool]>self.pool).copy()
               if self.npool else np.empty(0)}
        if self.off != NULL:
            out["off"] = np.asarray(<i64[:n]>self.off).copy()
            out["meta"] = np.asarray(<i64[:n]>self.meta).copy()
            out["M"] = (np.asarray(<i64[:self.nM]>self.M).copy() if self.nM
                        else np.empty(0, np.int64))
        return out

    def opcodes(self):
        """The opcode of every node, in tape order (a new uint8 array)."""
        self._check()
        out = np.empty(self.n, dtype=np.uint8)
        cdef unsigned char[::1] dst = out
        if self.n:
            memcpy(&dst[0], self.op, self.n)
        return out

    # -- recording primitives --------------------------------------------------

    cdef int _grow_nodes(self, i64 need) except -1:
        cdef i64 c = _grown(self.cap, need)
        if need > MAX_NODES:
            raise MemoryError("fastape: a tape holds at most 2**31 - 2 nodes")
        self.op = <uint8_t*>_resize(self.op, c, sizeof(uint8_t))
        self.a = <i32*>_resize(self.a, c, sizeof(i32))
        self.b = <i32*>_resize(self.b, c, sizeof(i32))
        if self.off != NULL:
            self.off = <i64*>_resize(self.off, c, sizeof(i64))
            self.meta = <i64*>_resize(self.meta, c, sizeof(i64))
        else:
            self.val = <double*>_resize(self.val, c, sizeof(double))
            self.val_cap = c
        self.cap = c
        return 0

    cdef int _to_mixed(self) except -1:
        """Switch to the general layout: node i keeps its value at val[off[i]] = val[i]."""
        cdef i64 i
        if self.off != NULL:
            return 0
        self.off = <i64*>_resize(NULL, self.cap, sizeof(i64))
        self.meta = <i64*>_resize(NULL, self.cap, sizeof(i64))
        for i in range(self.n):
            self.off[i] = i
            self.meta[i] = -1
        return 0

    cdef i64 _pool_add(self, double k) except -1:
        if self.npool == self.pool_cap:
            self.pool_cap = _grown(self.pool_cap, self.npool + 1)
            self.pool = <double*>_resize(self.pool, self.pool_cap, sizeof(double))
        self.pool[self.npool] = k
        self.npool += 1
        return self.npool - 1

    cdef i64 _push(self, int o, i64 x, i64 y, i64 size, i64 nmeta) except -1:
        """Append node (o, x, y) with `size` values and `nmeta` parameters (the first is
        the size; the caller fills the rest, then calls forward_node). Returns its id."""
        cdef i64 i = self.n, m
        if self._closed:
            self._check()
            raise TapeError("this tape is finished (its with-block has ended): "
                            "record operations inside the block")
        if i == self.cap:
            self._grow_nodes(i + 1)
        if self.off == NULL and (size != 1 or nmeta > 0):
            self._to_mixed()
        self.op[i] = o
        self.a[i] = <i32>x
        self.b[i] = <i32>y
        if self.off == NULL:
            self.nval = i + 1
        else:
            if self.nval + size > self.val_cap:
                self.val_cap = _grown(self.val_cap, self.nval + size)
                self.val = <double*>_resize(self.val, self.val_cap, sizeof(double))
            self.off[i] = self.nval
            self.nval += size
            if nmeta > 0:
                if self.nM + nmeta > self.M_cap:
                    self.M_cap = _grown(self.M_cap, self.nM + nmeta)
                    self.M = <i64*>_resize(self.M, self.M_cap, sizeof(i64))
                m = self.nM
                self.meta[i] = m
                self.M[m] = size
                self.nM += nmeta
            else:
                self.meta[i] = -1
        self.n = i + 1
        return i

    cdef i64 _rec1(self, int o, i64 x, double k) except -1:
        """Record unary op o on node x (k: the immediate of a *_K op) and compute it."""
        cdef i64 y = self._pool_add(k) if has_k(o) else x
        cdef i64 i = self._push(o, x, y, 1, 0)
        self.forward_node(i)
        return i

    cdef i64 _rec2(self, int o, i64 x, i64 y) except -1:
        """Record binary op o on scalar nodes x, y and compute it."""
        cdef i64 i = self._push(o, x, y, 1, 0)
        self.forward_node(i)
        return i

    cdef i64 size_of(self, i64 i) noexcept nogil:
        if self.off == NULL or self.meta[i] < 0:
            return 1
        return self.M[self.meta[i]]

    cdef double* value_ptr(self, i64 i) noexcept nogil:
        return self.val + (i if self.off == NULL else self.off[i])

    # -- the sweeps ------------------------------------------------------------

    cdef void forward_node(self, i64 i) noexcept nogil:
        """Compute node i's value from its parents' values."""
        cdef int o = self.op[i]
        cdef i64 n, j, sx, sy, m, p, k, nparts, start, ln, outer, inner, T
        cdef double d0, d1
        cdef double* out
        cdef const double* x
        cdef const double* y
        cdef const double* c
        if o <= CONSTANT:
            return
        if self.off == NULL:        # scalar layout
            self.val[i] = value_and_partials(
                o, self.val[self.a[i]],
                (self.pool if has_k(o) else self.val)[self.b[i]], &d0, &d1, NULL)
            return
        out = self.val + self.off[i]
        n = self.size_of(i)
        m = self.meta[i]
        if is_elementwise(o):
            x = self.val + self.off[self.a[i]]
            sx = self.size_of(self.a[i]) != 1
            if has_k(o):
                y = self.pool + self.b[i]
                sy = 0
            else:
                y = self.val + self.off[self.b[i]]
                sy = self.size_of(self.b[i]) != 1
            elementwise_forward(o, x, sx, y, sy, out, n)
            return
        x = self.val + self.off[self.a[i]]
        if o == GATHER1:
            out[0] = x[<i64>self.pool[self.b[i]]]
        elif o == GATHER:
            for j in range(n):
                out[j] = x[self.M[m + 1 + j]]
        elif o == STRIDED:
            x += self.M[m + 1]
            k = self.M[m + 2]
            for j in range(n):
                out[j] = x[j * k]
        elif o == BROADCAST:
            k = self.M[m + 1]
            _broadcast(x, out, self.M + m + 2, self.M + m + 2 + k, <int>k, n, False)
        elif o == SUM or o == PROD or o == AMAX or o == AMIN:
            _reduce_fwd(o, x, out, self.M[m + 1], self.M[m + 2], self.M[m + 3])
        elif o == DOT:
            y = self.val + self.off[self.b[i]]
            d0 = 0.0
            for j in range(self.M[m + 1]):
                d0 += x[j] * y[j]
            out[0] = d0
        elif o == WHERE:
            y = self.val + self.off[self.b[i]]
            c = self.val + self.off[self.M[m + 1]]
            sx = self.size_of(self.a[i]) != 1
            sy = self.size_of(self.b[i]) != 1
            for j in range(n):
                out[j] = x[j * sx] if c[j] != 0.0 else y[j * sy]
        elif o == CONCAT:
            outer = self.M[m + 1]
            inner = self.M[m + 2]
            T = self.M[m + 3]
            nparts = self.M[m + 4]
            for p in range(nparts):
                x = self.val + self.off[self.M[m + 5 + 3 * p]]
                start = self.M[m + 6 + 3 * p]
                ln = self.M[m + 7 + 3 * p]
                for k in range(outer):
                    memcpy(out + (k * T + start) * inner, x + k * ln * inner,
                           ln * inner * sizeof(double))
        elif o >= MATMUL:
            linalg_forward(self, i)
        else:
            for j in range(n):
                out[j] = NAN

    cdef void reverse_node(self, i64 i) noexcept nogil:
        """Add node i's multipliers, times its local partials, into its parents' multipliers."""
        cdef int o = self.op[i]
        cdef i64 n, j, sx, sy, m, p, k, nparts, start, ln, outer, inner, T
        cdef double w
        cdef const double* obar
        cdef double* xbar
        cdef double* ybar
        cdef const double* x
        cdef const double* y
        cdef const double* c
        if o <= CONSTANT:
            return
        obar = self.adj + self.off[i]
        c = self.val + self.off[i]          # the node's own values: partials of exp, tanh…
        n = self.size_of(i)
        m = self.meta[i]
        xbar = self.adj + self.off[self.a[i]]
        x = self.val + self.off[self.a[i]]
        if is_elementwise(o):
            sx = self.size_of(self.a[i]) != 1
            if has_k(o):
                y = self.pool + self.b[i]
                sy = 0
            else:
                y = self.val + self.off[self.b[i]]
                sy = self.size_of(self.b[i]) != 1
            elementwise_reverse(o, x, sx, y, sy, c, obar, xbar,
                                self.adj + self.off[self.b[i]] if is_binary(o) else NULL, n)
            return
        if o == GATHER1:
            xbar[<i64>self.pool[self.b[i]]] += obar[0]
        elif o == GATHER:
            for j in range(n):
                xbar[self.M[m + 1 + j]] += obar[j]
        elif o == STRIDED:
            xbar += self.M[m + 1]
            k = self.M[m + 2]
            for j in range(n):
                xbar[j * k] += obar[j]
        elif o == BROADCAST:
            k = self.M[m + 1]
            _broadcast(xbar, <double*>obar, self.M + m + 2, self.M + m + 2 + k, <int>k, n,
                       True)
        elif o == SUM or o == PROD or o == AMAX or o == AMIN:
            _reduce_rev(o, x, xbar, self.val + self.off[i], obar,
                        self.M[m + 1], self.M[m + 2], self.M[m + 3])
        elif o == DOT:
            w = obar[0]
            if w != 0.0:
                y = self.val + self.off[self.b[i]]
                ybar = self.adj + self.off[self.b[i]]
                for j in range(self.M[m + 1]):
                    xbar[j] += w * y[j]
                    ybar[j] += w * x[j]
        elif o == WHERE:
            ybar = self.adj + self.off[self.b[i]]
            c = self.val + self.off[self.M[m + 1]]
            sx = self.size_of(self.a[i]) != 1
            sy = self.size_of(self.b[i]) != 1
            for j in range(n):
                if c[j] != 0.0:
                    xbar[j * sx] += obar[j]
                else:
                    ybar[j * sy] += obar[j]
        elif o == CONCAT:
            outer = self.M[m + 1]
            inner = self.M[m + 2]
            T = self.M[m + 3]
            nparts = self.M[m + 4]
            for p in range(nparts):
                xbar = self.adj + self.off[self.M[m + 5 + 3 * p]]
                start = self.M[m + 6 + 3 * p]
                ln = self.M[m + 7 + 3 * p]
                for k in range(outer):
                    for j in range(ln * inner):
                        xbar[k * ln * inner + j] += obar[(k * T + start) * inner + j]
        elif o >= MATMUL:
            linalg_reverse(self, i)

    cdef void forward_sweep(self, i64 lo, i64 hi) noexcept nogil:
        """Recompute the values of nodes lo..hi-1 in tape order."""
        cdef i64 i, j, k, r
        cdef int o
        cdef double d0, d1
        cdef double* v = self.val
        # locals, not self->…: a libm call in another branch could otherwise make the
        # compiler reload them for every node
        cdef const uint8_t* op = self.op
        cdef const i32* pa = self.a
        cdef const i32* pb = self.b
        cdef const double* pool = self.pool
        if self.off == NULL and self.runs != NULL:
            # grouped tape: each run of nodes with one opcode goes to that op's own
            # loop, its branch taken once
            for r in range(self.nruns):
                j = max(self.runs[r], lo)
                k = min(self.runs[r + 1], hi)
                o = op[j] if j < k else INPUT
                if o <= CONSTANT:
                    continue
                if self.run_kind[r] & RUN_AFFINE and j == self.runs[r] and \
                        k == self.runs[r + 1]:
                    elementwise_forward(o, v + pa[j], self.run_kind[r] & RUN_SX != 0,
                                        (pool if has_k(o) else v) + pb[j],
                                        self.run_kind[r] & RUN_SY != 0, v + j, k - j)
                else:
                    run_forward(o, v, pool, pa, pb, j, k)
        elif self.off == NULL:
            for i in range(lo, hi):
                o = op[i]
                if o > CONSTANT:
                    v[i] = value_and_partials(o, v[pa[i]], (pool if has_k(o) else v)[pb[i]],
                                              &d0, &d1, NULL)
        else:
            for i in range(lo, hi):
                self.forward_node(i)

    cdef void reverse_sweep(self, i64 top, i64 bottom) noexcept nogil:
        """λ_j += Σ_children λ_i ∂f_i/∂z_j for i = top down to bottom (λ seeded by caller).
        A grouped tape (compiled functions only) zeroes each non-leaf λ_i once it has
        been passed on: only the leaves' multipliers are read afterwards."""
        cdef i64 i, j, k, r
        cdef int o
        cdef double d0, d1, w
        cdef double* v = self.val
        cdef double* lam = self.adj
        cdef const uint8_t* op = self.op
        cdef const i32* pa = self.a
        cdef const i32* pb = self.b
        cdef const double* pool = self.pool
        if self.off == NULL and self.runs != NULL:
            r = self.nruns - 1                       # grouped tape, as in forward_sweep
            while r >= 0:
                j = max(self.runs[r], bottom)
                k = min(self.runs[r + 1] - 1, top)
                o = op[j] if j <= k else INPUT
                if o > CONSTANT:
                    if self.run_kind[r] & RUN_AFFINE and j == self.runs[r] and \
                            k + 1 == self.runs[r + 1]:
                        elementwise_reverse(o, v + pa[j], self.run_kind[r] & RUN_SX != 0,
                                            (pool if has_k(o) else v) + pb[j],
                                            self.run_kind[r] & RUN_SY != 0, v + j, lam + j,
                                            lam + pa[j],
                                            lam + pb[j] if is_binary(o) else NULL, k + 1 - j)
                        memset(lam + j, 0, (k + 1 - j) * sizeof(double))   # consumed
                    else:
                        run_reverse(o, v, lam, pool, pa, pb, j, k + 1)
                r -= 1
            if bottom != 0:
                self.adj_clean = False
        elif self.off == NULL:
            # the partials are recomputed from the values (the op table is inlined):
            # measured as fast as storing them in the forward sweep, at 20 fewer bytes
            # a node
            i = top
            while i >= bottom:
                w = lam[i]
                o = op[i]
                if w != 0.0 and o > CONSTANT:
                    value_and_partials(o, v[pa[i]], (pool if has_k(o) else v)[pb[i]],
                                       &d0, &d1, v + i)
                    lam[pa[i]] += d0 * w
                    if is_binary(o):
                        lam[pb[i]] += d1 * w
                i -= 1
        else:
            i = top
            while i >= bottom:
                self.reverse_node(i)
                i -= 1

    cdef int set_runs(self) except -1:
        """Build the run table of a closed scalar-layout tape: the sweeps then take
        each maximal run of consecutive nodes with one opcode through that op's own
        loop (worth it when runs are long: see the compiler's grouping pass)."""
        cdef i64 i, r = 0
        if self.off != NULL or not self._closed:
            raise TapeError("set_runs: only a closed tape of scalars can be grouped")
        PyMem_Free(self.runs)
        self.runs = NULL
        self.nruns = 0
        for i in range(self.n):
            r += i == 0 or self.op[i] != self.op[i - 1]
        self.runs = <i32*>_resize(NULL, r + 1, sizeof(i32))
        r = 0
        for i in range(self.n):
            if i == 0 or self.op[i] != self.op[i - 1]:
                self.runs[r] = <i32>i
                r += 1
        self.runs[r] = <i32>self.n
        self.nruns = r
        self.run_kind = <uint8_t*>_resize(NULL, r if r else 1, sizeof(uint8_t))
        for r in range(self.nruns):
            self.run_kind[r] = self._run_kind(self.runs[r], self.runs[r + 1])
        self.nleaf = 0
        for i in range(self.n):
            if self.op[i] <= CONSTANT:
                self.nleaf = i + 1
        self.adj_clean = False
        return 0

    cdef uint8_t _run_kind(self, i64 lo, i64 hi) noexcept:
        """RUN_AFFINE (with RUN_SX, RUN_SY for strides 1) when the run lo..hi-1 reads
        its parents at a[i] = a[lo] + sx·(i - lo), b[i] = b[lo] + sy·(i - lo) with
        strides 0 or 1, and every node parent lies before the run: then it is the
        elementwise op on two arena slices, run by the vectorised array loops."""
        cdef int o = self.op[lo]
        cdef i64 sx = _stride(self.a, lo, hi), sy = _stride(self.b, lo, hi)
        # TANH stays a gather run: its array loop is not libm's tanh, and a grouped
        # tape must reproduce the recorded values bit for bit
        if o <= CONSTANT or o == TANH or sx < 0 or sy < 0:
            return 0
        if self.a[lo] + sx * (hi - 1 - lo) >= lo:
            return 0
        if not has_k(o) and self.b[lo] + sy * (hi - 1 - lo) >= lo:
            return 0
        return RUN_AFFINE | (RUN_SX if sx else 0) | (RUN_SY if sy else 0)

    cdef int prepare_adjoints(self) except -1:
        """Zeroed multiplier arena of the value arena's layout."""
        if self.adj_cap < self.nval:
            PyMem_Free(self.adj)
            self.adj = NULL
            self.adj = <double*>_resize(NULL, self.nval, sizeof(double))
            self.adj_cap = self.nval
        memset(self.adj, 0, self.nval * sizeof(double))
        self.adj_clean = True
        return 0

    cdef void clear_adjoints(self) noexcept nogil:
        """Zero the multiplier arena (allocated) before seeding a reverse sweep. On a
        grouped tape whose last sweep went down to node 0, only the leaves' need it."""
        if self.runs != NULL and self.adj_clean:
            memset(self.adj, 0, self.nleaf * sizeof(double))
        else:
            memset(self.adj, 0, self.nval * sizeof(double))
        self.adj_clean = True

    # -- Python-facing methods -------------------------------------------------

    def var(self, value):
        """Record an input: a real number or an array of them (copied, never aliased)."""
        return _leaf(self, INPUT, value, "Tape.var", "value")

    def constant(self, value):
        """Record a constant (a leaf that receives no multiplier of interest)."""
        return _leaf(self, CONSTANT, value, "Tape.constant", "value")

    def gradient(self, output, inputs):
        """∂output/∂inputs by one reverse sweep.

        ``output`` must be a scalar value of this tape; ``inputs`` a value or a
        (nested) list/tuple of them. Returns floats for scalar inputs and arrays
        of the input's shape, in the structure of ``inputs``."""
        self.backward(output)
        return _map_structure(inputs, self._adjoint_of, "Tape.gradient")

    def backward(self, output):
        """Run the reverse sweep seeded with λ_output = 1; read multipliers with adjoint()."""
        self._check()
        cdef Var out = _own(self, output, "Tape.gradient", "output")
        if out.size != 1:
            raise ShapeError(f"Tape.gradient: the output must be a scalar, got shape {out.shape}"
                             "; use fastape.vjp for a vector output or sum it first")
        self.prepare_adjoints()
        self.adj[self.off[out.node] if self.off != NULL else out.node] = 1.0
        with nogil:
            self.reverse_sweep(out.node, 0)
        self.seed = out.node

    def adjoint(self, v):
        """The multiplier λ_v = ∂output/∂v of the last :meth:`gradient` call, for any
        recorded value v (inputs and intermediates alike)."""
        return self._adjoint_of(v)

    def _adjoint_of(self, v):
        self._check()
        cdef Var x = _own(self, v, "Tape.adjoint", "v")
        if self.seed < 0:
            raise TapeError("Tape.adjoint: no gradient has been computed on this tape yet")
        return _read(self, self.adj, x)

    def forward(self):
        """Recompute every value from the inputs (the forward sweep); for replay and timing."""
        self._check()
        with nogil:
            self.forward_sweep(0, self.n)

    def reverse(self, output):
        """Alias of :meth:`backward`."""
        self.backward(output)


cdef object read_slot(Tape t, double* buf, i64 node, tuple shape):
    """Copy node's slot of `buf` (values or multipliers) out as a float, or as a new
    array of `shape`."""
    cdef double* src = buf + (node if t.off == NULL else t.off[node])
    if shape == SCALAR:
        return src[0]
    arr = np.empty(shape, dtype=np.float64)
    cdef double[::1] dst = arr.reshape(-1)
    if dst.shape[0]:
        memcpy(&dst[0], src, dst.shape[0] * sizeof(double))
    return arr


cdef inline object _read(Tape t, double* buf, Var x):
    return read_slot(t, buf, x.node, x.shape)


def _map_structure(obj, fn, str where):
    if isinstance(obj, Var):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_structure(o, fn, where) for o in obj)
    raise TypeError(f"{where}: expected a fastape value or a list/tuple of them, "
                    f"got {type(obj).__name__}")


# ---------------------------------------------------------------------------
# Var: a node id on a tape, with numpy-style operators
# ---------------------------------------------------------------------------

cdef inline Var _new(Tape t, i64 node, tuple shape, i64 size):
    cdef Var v = Var.__new__(Var)
    v.tape = t
    v.node = node
    v.shape = shape
    v.size = size
    return v


cdef inline Var _own(Tape t, object v, str op, str arg):
    if type(v) is not Var:
        raise TypeError(f"{op}: argument '{arg}' must be a fastape value, "
                        f"got {type(v).__name__}")
    if (<Var>v).tape is not t:
        raise TapeError(f"{op}: argument '{arg}' belongs to another tape")
    return <Var>v


cdef object _as_array(object value, str op, str arg):
    """value as a C-contiguous float64 array, or a clear TypeError. Not a copy when
    value already is one: the caller copies it into the value arena."""
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{op}: argument '{arg}' must be a real number or an array of "
                        f"them, got {type(value).__name__}")
    try:
        arr = np.asarray(value)
    except TypeError:
        raise
    except Exception as e:
        raise TypeError(f"{op}: argument '{arg}' is not numeric ({e})") from None
    if arr.dtype.kind == "c":
        raise TypeError(f"{op}: argument '{arg}' is complex; fastape differentiates real "
                        "float64 functions")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{op}: argument '{arg}' must be a real number or an array of "
                        f"them, got dtype {arr.dtype}")
    return np.asarray(arr, dtype=np.float64, order="C")


cdef Var _leaf(Tape t, int o, object value, str op, str arg):
    cdef double[::1] src
    cdef i64 i
    if type(value) is Var:
        raise TypeError(f"{op}: argument '{arg}' is already a fastape value")
    if type(value) is float or type(value) is int:
        i = t._push(o, -1, -1, 1, 0)
        t.val[i if t.off == NULL else t.off[i]] = <double>value
        return _new(t, i, SCALAR, 1)
    arr = _as_array(value, op, arg)
    shape = arr.shape
    if shape == SCALAR:
        i = t._push(o, -1, -1, 1, 0)
        t.val[i if t.off == NULL else t.off[i]] = <double>arr[()]
        return _new(t, i, SCALAR, 1)
    i = t._push(o, -1, -1, arr.size, 1)
    src = arr.reshape(-1)
    if arr.size:
        memcpy(t.val + t.off[i], &src[0], arr.size * sizeof(double))
    return _new(t, i, shape, arr.size)


cdef Var _coerce(Tape t, object v, str op, str arg):
    """A Var of tape t for v: v itself, or a constant node holding v."""
    if type(v) is Var:
        if (<Var>v).tape is not t:
            raise TapeError(f"{op}: argument '{arg}' belongs to another tape than the "
                            "other operand; values of two tapes cannot be mixed")
        return <Var>v
    return _leaf(t, CONSTANT, v, op, arg)


cdef Var _tape_of(tuple args, str op):
    for v in args:
        if type(v) is Var:
            return <Var>v
    raise TypeError(f"{op}: no argument is a fastape value")


cdef inline i64 _prod(tuple shape):
    cdef i64 s = 1
    for d in shape:
        s *= <i64>d
    return s


cdef Var _broadcast_to(Var x, tuple shape, str op, str arg):
    """x broadcast to `shape` (a BROADCAST node), numpy's rules, checked here."""
    cdef Tape t = x.tape
    cdef int nd = len(shape), lead, d
    cdef i64 size = _prod(shape), i, m, stride
    if x.shape == shape:
        return x
    lead = nd - len(x.shape)
    if lead < 0:
        raise ShapeError(f"{op}: cannot broadcast argument '{arg}' of shape {x.shape} "
                         f"to shape {shape}")
    for d in range(len(x.shape)):
        if x.shape[d] != 1 and x.shape[d] != shape[lead + d]:
            raise ShapeError(f"{op}: cannot broadcast argument '{arg}' of shape {x.shape} "
                             f"to shape {shape}")
    i = t._push(BROADCAST, x.node, -1, size, 2 + 2 * nd)
    m = t.meta[i]
    t.M[m + 1] = nd
    stride = 1
    for d in range(nd - 1, -1, -1):
        t.M[m + 2 + d] = shape[d]
        if d < lead or x.shape[d - lead] == 1:
            t.M[m + 2 + nd + d] = 0
        else:
            t.M[m + 2 + nd + d] = stride
            stride *= x.shape[d - lead]
    t.forward_node(i)
    return _new(t, i, shape, size)


cdef dict OP_NAMES = {int(o): o.name.lower() for o in PyOp}


cdef inline int _k_variant(int o, bint number_first) noexcept:
    """The *_K op computing `x o k` (or `k o x` when the number comes first); -1: none.
    x - k is recorded as x + (-k) by the caller."""
    if o == ADD:
        return ADD_K
    if o == MUL:
        return MUL_K
    if o == SUB:
        return RSUB_K if number_first else -1
    if o == DIV:
        return RDIV_K if number_first else DIV_K
    if o == POW:
        return RPOW_K if number_first else POW_K
    return -1


cpdef object binary(int o, object x, object y):
    """Record the elementwise binary op ``o`` on x, y (numpy broadcasting)."""
    cdef Var vx, vy
    cdef Tape t
    cdef i64 i, size
    cdef int ko
    cdef str name
    # fast paths: scalar op scalar, and a value with a Python number (an immediate)
    if type(x) is Var:
        vx = <Var>x
        if type(y) is Var:
            vy = <Var>y
            if vx.tape is vy.tape and vx.size == 1 and vy.size == 1 and \
                    vx.shape == SCALAR and vy.shape == SCALAR:
                return _new(vx.tape, vx.tape._rec2(o, vx.node, vy.node), SCALAR, 1)
        elif PyFloat_Check(y) or PyLong_Check(y):
            if o == SUB:
                return _unary_k(vx, ADD_K, -<double>y)
            ko = _k_variant(o, False)
            if ko >= 0:
                return _unary_k(vx, ko, <double>y)
    elif type(y) is Var and (PyFloat_Check(x) or PyLong_Check(x)):
        ko = _k_variant(o, True)
        if ko >= 0:
            return _unary_k(<Var>y, ko, <double>x)
    # general path
    name = OP_NAMES[o]
    t = _tape_of((x, y), name).tape
    vx = _coerce(t, x, name, "x1")
    vy = _coerce(t, y, name, "x2")
    if vx.shape == vy.shape:
        shape = vx.shape
    else:
        try:
            shape = tuple(np.broadcast_shapes(vx.shape, vy.shape))
        except ValueError:
            raise ShapeError(f"{name}: operands could not be broadcast together: "
                             f"x1 has shape {vx.shape}, x2 has shape {vy.shape}") from None
    size = _prod(shape)
    if vx.size != size and vx.size != 1:
        vx = _broadcast_to(vx, shape, name, "x1")
    if vy.size != size and vy.size != 1:
        vy = _broadcast_to(vy, shape, name, "x2")
    i = t._push(o, vx.node, vy.node, size, 1 if shape != SCALAR else 0)
    t.forward_node(i)
    return _new(t, i, shape, size)


cdef Var _unary_k(Var x, int o, double k):
    cdef Tape t = x.tape
    cdef i64 i
    if o == POW_K and k == 2.0:
        # x ** 2 is SQUARE (the same x·x): no immediate to load and test per node
        return unary(SQUARE, x)
    if x.shape == SCALAR:
        return _new(t, t._rec1(o, x.node, k), SCALAR, 1)
    i = t._push(o, x.node, t._pool_add(k), x.size, 1)
    t.forward_node(i)
    return _new(t, i, x.shape, x.size)


cpdef object unary(int o, object x):
    """Record the elementwise unary op ``o`` on x."""
    cdef Var vx
    cdef Tape t
    cdef i64 i
    if type(x) is not Var:
        raise TypeError(f"{OP_NAMES[o]}: argument 'x' must be a fastape value, "
                        f"got {type(x).__name__}")
    vx = <Var>x
    t = vx.tape
    if vx.shape == SCALAR:
        return _new(t, t._rec1(o, vx.node, 0.0), SCALAR, 1)
    i = t._push(o, vx.node, vx.node, vx.size, 1)
    t.forward_node(i)
    return _new(t, i, vx.shape, vx.size)


cpdef object unary_k(int o, object x, double k):
    """Record the unary op ``o`` with immediate ``k`` on x (a *_K op)."""
    if type(x) is not Var:
        raise TypeError(f"{OP_NAMES[o]}: argument 'x' must be a fastape value")
    return _unary_k(<Var>x, o, k)


# -- structural ops ---------------------------------------------------------------

def gather(Var x, idx, tuple shape):
    """x.flat[idx] with result shape `shape` (idx: flat int64 indices, already checked);
    recorded as STRIDED when the indices form an arithmetic progression."""
    cdef Tape t = x.tape
    cdef i64 i, m, j, n, step
    cdef const i64[::1] ix
    if shape == SCALAR:
        i = t._push(GATHER1, x.node, t._pool_add(<double>int(idx)), 1, 1)
        t.forward_node(i)
        return _new(t, i, SCALAR, 1)
    ix = np.ascontiguousarray(idx, dtype=np.int64).reshape(-1)
    n = ix.shape[0]
    if n == 0:
        return strided(x, 0, 0, shape)
    step = ix[1] - ix[0] if n > 1 else 0
    for j in range(2, n):
        if ix[j] - ix[j - 1] != step:
            break
    else:
        return strided(x, ix[0], step, shape)      # no index list needed
    i = t._push(GATHER, x.node, -1, n, 1 + n)
    m = t.meta[i]
    for j in range(n):
        t.M[m + 1 + j] = ix[j]
    t.forward_node(i)
    return _new(t, i, shape, n)


def strided(Var x, i64 start, i64 step, tuple shape):
    """x.flat[start + j*step] for j < size(shape) (positions already checked)."""
    cdef Tape t = x.tape
    cdef i64 n = _prod(shape)
    cdef i64 i = t._push(STRIDED, x.node, -1, n, 3), m = t.meta[i]
    t.M[m + 1] = start
    t.M[m + 2] = step
    t.forward_node(i)
    return _new(t, i, shape, n)


def item(Var x, i64 flat):
    """Scalar x.flat[flat] (bounds already checked)."""
    cdef Tape t = x.tape
    cdef i64 i = t._push(GATHER1, x.node, t._pool_add(<double>flat), 1, 1)
    t.forward_node(i)
    return _new(t, i, SCALAR, 1)


def reduce(int o, Var x, i64 outer, i64 n, i64 inner, tuple shape):
    """Reduce x viewed as (outer, n, inner) over its middle axis: SUM, PROD, AMAX, AMIN."""
    cdef Tape t = x.tape
    cdef i64 i = t._push(o, x.node, -1, outer * inner, 4), m = t.meta[i]
    t.M[m + 1] = outer
    t.M[m + 2] = n
    t.M[m + 3] = inner
    t.forward_node(i)
    return _new(t, i, shape, outer * inner)


def dot1(Var x, Var y):
    """Σ_j x_j y_j of two vectors of equal length (checked by the caller)."""
    cdef Tape t = x.tape
    cdef i64 i = t._push(DOT, x.node, y.node, 1, 2)
    t.M[t.meta[i] + 1] = x.size
    t.forward_node(i)
    return _new(t, i, SCALAR, 1)


def where(Var cond, Var x, Var y, tuple shape):
    """cond ? x : y elementwise; cond a constant node of `shape`, x and y of `shape` or
    size 1."""
    cdef Tape t = x.tape
    cdef i64 size = _prod(shape)
    cdef i64 i = t._push(WHERE, x.node, y.node, size, 2)
    t.M[t.meta[i] + 1] = cond.node
    t.forward_node(i)
    return _new(t, i, shape, size)


def concat(list parts, i64 outer, i64 inner, list lengths, tuple shape):
    """Parts (each viewed as (outer, len_p, inner)) laid side by side along the middle axis."""
    cdef Var first = parts[0]
    cdef Tape t = first.tape
    cdef i64 T = sum(lengths), size = _prod(shape), p, start = 0
    cdef i64 nparts = len(parts)
    cdef i64 i = t._push(CONCAT, first.node, -1, size, 5 + 3 * nparts), m = t.meta[i]
    t.M[m + 1] = outer
    t.M[m + 2] = inner
    t.M[m + 3] = T
    t.M[m + 4] = nparts
    for p in range(nparts):
        t.M[m + 5 + 3 * p] = (<Var>parts[p]).node
        t.M[m + 6 + 3 * p] = start
        t.M[m + 7 + 3 * p] = lengths[p]
        start += lengths[p]
    t.forward_node(i)
    return _new(t, i, shape, size)


def copy_as(Var x, tuple shape):
    """A copy of x with another shape of the same size (reshape)."""
    cdef Tape t = x.tape
    cdef i64 i
    if shape == SCALAR:
        if x.shape == SCALAR:
            return _new(t, t._rec1(COPY, x.node, 0.0), SCALAR, 1)
        return item(x, 0)
    i = t._push(COPY, x.node, x.node, x.size, 1)
    t.forward_node(i)
    return _new(t, i, shape, x.size)


def constant_like(Var x, value):
    """A constant node holding `value` on x's tape."""
    return _leaf(x.tape, CONSTANT, value, "constant", "value")


def broadcast_to(Var x, tuple shape, str op="broadcast_to", str arg="x"):
    return _broadcast_to(x, shape, op, arg)


# ---------------------------------------------------------------------------

@cython.freelist(1024)
@cython.final
cdef class Var:
    """A value recorded on a :class:`Tape`: the tape and a node id.

    Arithmetic, numpy ufuncs and numpy functions applied to a Var record nodes on
    its tape. ``v.value`` reads the current value (a float or a new array).
    """
    __array_priority__ = 1000

    def __init__(self):
        raise TypeError("Var cannot be created directly: use Tape.var(value)")

    @property
    def value(self):
        """The current value: a float for a scalar, else a new float64 array."""
        self.tape._check()
        return _read(self.tape, self.tape.val, self)

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def dtype(self):
        return np.dtype(np.float64)

    def __repr__(self):
        if self.tape._freed:
            return f"Var(<finished tape>, node={self.node})"
        return f"Var({self.value!r}, node={self.node})"

    def __hash__(self):
        return id(self) >> 4

    # arithmetic
    def __add__(self, other):
        return binary(ADD, self, other)

    def __radd__(self, other):
        return binary(ADD, other, self)

    def __sub__(self, other):
        return binary(SUB, self, other)

    def __rsub__(self, other):
        return binary(SUB, other, self)

    def __mul__(self, other):
        return binary(MUL, self, other)

    def __rmul__(self, other):
        return binary(MUL, other, self)

    def __truediv__(self, other):
        return binary(DIV, self, other)

    def __rtruediv__(self, other):
        return binary(DIV, other, self)

    def __pow__(self, other, mod):
        if mod is not None:
            raise TypeError("pow() with a modulus is not differentiable")
        return binary(POW, self, other)

    def __rpow__(self, other, mod):
        if mod is not None:
            raise TypeError("pow() with a modulus is not differentiable")
        return binary(POW, other, self)

    def __matmul__(self, other):
        from fastape import _functions
        return _functions.matmul(self, other)

    def __rmatmul__(self, other):
        from fastape import _functions
        return _functions.matmul(other, self)

    def __neg__(self):
        return unary(NEG, self)

    def __pos__(self):
        return self

    def __abs__(self):
        return unary(ABS, self)

    def __round__(self, ndigits=None):
        if ndigits is not None:
            raise TypeError("round(v, ndigits) is not supported; use round(v)")
        return unary(ROUND, self)

    # comparisons: plain booleans of the values (recorded as guards by compile())
    def __lt__(self, other):
        return _compare(self, other, 0)

    def __le__(self, other):
        return _compare(self, other, 1)

    def __gt__(self, other):
        return _compare(self, other, 2)

    def __ge__(self, other):
        return _compare(self, other, 3)

    def __eq__(self, other):
        return _compare(self, other, 4)

    def __ne__(self, other):
        return _compare(self, other, 5)

    def __bool__(self):
        if self.size != 1:
            raise ValueError(f"the truth value of a fastape value of shape {self.shape} is "
                             "ambiguous; use fastape.where for elementwise choices")
        return _compare(self, 0.0, 5)

    def __float__(self):
        raise TypeError(
            "float() of a fastape value would drop it from the tape (math.* functions "
            "do this too); use numpy or fastape functions (np.sqrt(x), fastape.exp(x)), "
            "or x.value to read the number")

    def __int__(self):
        raise TypeError("int() of a fastape value would drop it from the tape; "
                        "use x.value to read the number")

    def __index__(self):
        raise TypeError("a fastape value cannot be used as an index")

    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            "a fastape value cannot be converted to a numpy array (np.asarray, "
            "np.array, an ndarray slot): that would drop it from the tape. Use "
            "fastape.stack(list_of_values) to build an array value, numpy functions on the "
            "value itself (np.sum(x), np.exp(x)), or x.value to read the numbers")

    # containers
    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a scalar fastape value")
        return self.shape[0]

    def __iter__(self):
        if not self.shape:
            raise TypeError("iteration over a scalar fastape value")
        for j in range(self.shape[0]):
            yield self[j]

    def __getitem__(self, key):
        cdef i64 j, n
        if type(key) is int and len(self.shape) == 1:
            j = key
            n = self.shape[0]
            if j < 0:
                j += n
            if j < 0 or j >= n:
                raise IndexError(f"index {key} is out of bounds for axis 0 with size {n}")
            return item(self, j)
        from fastape import _functions
        return _functions.getitem(self, key)

    def __setitem__(self, key, value):
        raise TypeError("fastape values are immutable; build a new value with "
                        "fastape.where, fastape.concatenate or fastape.stack")

    # numpy protocols
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        from fastape import _numpy
        return _numpy.array_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        from fastape import _numpy
        return _numpy.array_function(func, args, kwargs)

    # numpy-style methods
    @property
    def T(self):
        from fastape import _functions
        return _functions.transpose(self)

    def transpose(self, *axes):
        from fastape import _functions
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))):
            axes = axes[0]
        return _functions.transpose(self, axes or None)

    def reshape(self, *shape):
        from fastape import _functions
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return _functions.reshape(self, shape)

    def ravel(self):
        from fastape import _functions
        return _functions.reshape(self, (-1,))

    flatten = ravel

    def sum(self, axis=None, keepdims=False):
        from fastape import _functions
        return _functions.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        from fastape import _functions
        return _functions.mean(self, axis=axis, keepdims=keepdims)

    def prod(self, axis=None, keepdims=False):
        from fastape import _functions
        return _functions.prod(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        from fastape import _functions
        return _functions.max(self, axis=axis, keepdims=keepdims)

    def min(self, axis=None, keepdims=False):
        from fastape import _functions
        return _functions.min(self, axis=axis, keepdims=keepdims)

    def dot(self, other):
        from fastape import _functions
        return _functions.dot(self, other)


cpdef object compare(Var x, object other, int how):
    """x (<, <=, >, >=, ==, !=)[how] other, on values."""
    return _compare(x, other, how)


cdef object _compare(Var x, object other, int how):
    """The comparison of values; recorded as a guard when the tape asks for guards."""
    xv = x.value
    ov = other.value if type(other) is Var else other
    if how == 0:
        r = xv < ov
    elif how == 1:
        r = xv <= ov
    elif how == 2:
        r = xv > ov
    elif how == 3:
        r = xv >= ov
    elif how == 4:
        r = xv == ov
    else:
        r = xv != ov
    if type(r) is np.bool_:
        r = bool(r)
    if x.tape.guards is not None and not x.tape._closed:
        # a guard: (how, x node, other node, result); a replay re-checks it
        if type(other) is not Var or (<Var>other).tape is not x.tape:
            other = _leaf(x.tape, CONSTANT, ov, "comparison", "other")
        x.tape.guards.append((how, x.node, (<Var>other).node, r))
    return r
