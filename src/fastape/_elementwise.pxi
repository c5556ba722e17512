# Elementwise kernels (included into _tape.pyx): the op table applied over arrays
# and over runs of scalar nodes, forward, tangent and reverse side by side. Every loop calls
# value_and_partials (the generated op table, _ops.pxd) with the opcode; the
# instantiation list in _hot turns that into one specialised loop per cheap op.
#
# Names: x, y the operands' values; z the node's own values; lam the node's
# adjoints (λ); x_bar, y_bar the parents' adjoints, accumulated into; tx, ty, tz the
# operands' and the node's tangents (ẋ, ẏ, ż); tlam the adjoints' tangents (λ̇, forward
# over reverse).

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


# The node's own values, passed to the op table as `known` (z + j), are never NULL in
# the loops that pass them, but the compiler cannot see it: each element tested
# `known != NULL` (a branch to tanh, exp, ... that kept TANH's and the other
# value-partial ops' tangent loops from vectorising). fastape_nonnull(z) tells it, and
# z + j is then known non-NULL as well.
cdef extern from *:
    """
    static inline const double* fastape_nonnull(const double* p)
    {
    #if defined(__GNUC__)
        if (p == NULL) __builtin_unreachable();
    #endif
        return p;
    }
    """
    const double* _nonnull "fastape_nonnull"(const double* p) noexcept nogil


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
    static inline void fastape_ew_loop_tan(int, const double *, int64_t, const double *,
        int64_t, const double *, const double *, const double *, double *, int64_t,
        int64_t, int64_t) FASTAPE_KERNEL_INLINE;
    typedef struct {
        const double *x; int64_t sx; const double *y; int64_t sy; const double *z;
        const double *lam; double *x_bar; double *y_bar; double *out; int64_t n;
        const double *tx; const double *ty; double *tz; int64_t p; int64_t ld;
    } fastape_ew_args;
    typedef struct {
        double *val; double *adj; const double *pool; const int32_t *pa;
        const int32_t *pb; int64_t lo; int64_t hi; double *tan; double *tlam; int64_t p;
    } fastape_run_args;
    static inline void fastape_kernel(int, int, fastape_ew_args *, fastape_run_args *)
        FASTAPE_KERNEL_INLINE;
    static inline void fastape_hot(int, int, fastape_ew_args *, fastape_run_args *, int)
        FASTAPE_KERNEL_INLINE;
    static inline void fastape_pick(int, int, fastape_ew_args *, fastape_run_args *, int)
        FASTAPE_KERNEL_INLINE;
    #if defined(__GNUC__)
    static void fastape_cold(int, int, fastape_ew_args *, fastape_run_args *)
        __attribute__((noinline));
    static void fastape_ew_tan_directions(int, fastape_ew_args *) __attribute__((noinline));
    #else
    static void fastape_ew_tan_directions(int, fastape_ew_args *);
    static void fastape_cold(int, int, fastape_ew_args *, fastape_run_args *);
    #endif
    static inline void fastape_ew_ops(int, const double *, int64_t, const double *,
        int64_t, double *, int64_t, int) FASTAPE_KERNEL_INLINE;
    static inline void fastape_ew_ops_rev(int, const double *, int64_t, const double *,
        int64_t, const double *, const double *, double *, double *,
        int64_t, int) FASTAPE_KERNEL_INLINE;
    static inline void fastape_ew_ops_tan(int, const double *, int64_t, const double *,
        int64_t, const double *, const double *, const double *, double *, int64_t,
        int64_t, int64_t, int) FASTAPE_KERNEL_INLINE;
    static inline void fastape_run_loop(int, double *, const double *, const int32_t *,
        const int32_t *, int64_t, int64_t) FASTAPE_KERNEL_INLINE;
    static inline void fastape_run_loop_rev(int, const double *, double *, const double *,
        const int32_t *, const int32_t *, int64_t, int64_t) FASTAPE_KERNEL_INLINE;
    static inline void fastape_run_loop_tan(int, double *, double *, const double *,
        const int32_t *, const int32_t *, int64_t, int64_t) FASTAPE_KERNEL_INLINE;
    static inline void fastape_run_loop_tan_chain(int, double *, double *, const double *,
        const int32_t *, const int32_t *, int64_t, int64_t) FASTAPE_KERNEL_INLINE;
    static inline void fastape_run_loop_tanp(int, const double *, double *, const double *,
        const int32_t *, const int32_t *, int64_t, int64_t, int64_t) FASTAPE_KERNEL_INLINE;
    static inline void fastape_run_loop_hvp(int, const double *, double *, const double *,
        double *, const double *, const int32_t *, const int32_t *, int64_t,
        int64_t) FASTAPE_KERNEL_INLINE;
    """
    # the arguments of an array loop (EW_*) and of a run loop (RUN_*): see _hot
    ctypedef struct _EwArgs "fastape_ew_args":
        const double* x          # first operand, stride sx (0: a broadcast scalar)
        i64 sx
        const double* y          # second operand (or the immediate), stride sy
        i64 sy
        const double* z          # EW_REV: the node's values
        const double* lam        # EW_REV: the node's adjoints
        double* x_bar            # EW_REV: x's adjoints
        double* y_bar            # EW_REV: y's adjoints (NULL: unary op)
        double* out              # EW_FWD: the node's values
        i64 n                    # elements
        const double* tx         # EW_TAN: x's tangents (direction k at tx + k·ld)
        const double* ty         # EW_TAN: y's tangents (ignored for a unary op)
        double* tz               # EW_TAN: the node's tangents
        i64 p                    # EW_TAN: directions
        i64 ld                   # EW_TAN: distance between two directions' arenas
    ctypedef struct _RunArgs "fastape_run_args":
        double* val              # the value arena (scalar layout)
        double* adj              # RUN_REV: the adjoint arena
        const double* pool       # the immediates
        const i32* pa            # parents
        const i32* pb
        i64 lo                   # the run: nodes lo..hi-1
        i64 hi
        double* tan              # RUN_TAN, RUN_HVP: the tangent arena (one direction),
        #                          RUN_TANP: p directions, node-major
        double* tlam             # RUN_HVP: the adjoints' tangents (one direction)
        i64 p                    # RUN_TANP: directions


cdef inline void _ew_loop "fastape_ew_loop"(
        int o, const double* x, i64 sx, const double* y, i64 sy, double* out,
        i64 n) noexcept nogil:
    """out[j] = f_o(x[j·sx], y[j·sy])."""
    cdef i64 j
    cdef double d0, d1
    for j in range(n):
        out[j] = vp_loop(o, x[j * sx], y[j * sy], &d0, &d1, NULL)


cdef inline void _ew_loop_rev "fastape_ew_loop_rev"(
        int o, const double* x, i64 sx, const double* y, i64 sy, const double* z,
        const double* lam, double* x_bar, double* y_bar, i64 n) noexcept nogil:
    """x̄[j·sx] += ∂f/∂x λ[j];  ȳ[j·sy] += ∂f/∂y λ[j] (y_bar NULL: unary op).
    A zero λ[j] contributes nothing, whatever the partial (a select, not a branch,
    so the loop still vectorises)."""
    cdef i64 j
    cdef double d0, d1, w
    z = _nonnull(z)
    for j in range(n):
        w = lam[j]
        vp_loop(o, x[j * sx], y[j * sy], &d0, &d1, z + j)
        x_bar[j * sx] += d0 * w if w != 0.0 else 0.0
        if y_bar != NULL:
            y_bar[j * sy] += d1 * w if w != 0.0 else 0.0


cdef inline void _ew_loop_tan "fastape_ew_loop_tan"(
        int o, const double* x, i64 sx, const double* y, i64 sy, const double* z,
        const double* tx, const double* ty, double* tz, i64 n, i64 p, i64 ld) noexcept nogil:
    """ż[k·ld + j] = ∂f/∂x ẋ[k·ld + j·sx] + ∂f/∂y ẏ[k·ld + j·sy] for directions
    k < p, the partials computed once per element. A zero ẋ (ẏ) contributes nothing,
    whatever the partial (selects, so the loop still vectorises)."""
    cdef i64 j, k
    cdef double d0, d1, a, b, s
    z = _nonnull(z)
    for j in range(n):
        vp_loop(o, x[j * sx], y[j * sy], &d0, &d1, z + j)
        for k in range(p):
            a = tx[k * ld + j * sx]
            s = d0 * a if a != 0.0 else 0.0
            if is_binary(o):
                b = ty[k * ld + j * sy]
                s = s + (d1 * b if b != 0.0 else 0.0)
            tz[k * ld + j] = s


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
        last = vp_loop(o, x, y, &d0, &d1, NULL)
        v[i] = last


cdef inline void _run_loop_rev "fastape_run_loop_rev"(
        int o, const double* v, double* lam, const double* pool, const i32* pa,
        const i32* pb, i64 lo, i64 hi) noexcept nogil:
    """lam is the adjoint arena: λ[a[i]] += ∂f/∂x λ[i], λ[b[i]] += ∂f/∂y λ[i] for
    i = hi-1 down to lo (a run of opcode o, scalar layout), then λ[i] = 0. A zero λ[i]
    contributes nothing.

    What a node sends to the node just before it (a chain) is carried in a register
    and added when that node is reached, instead of a read-modify-write of the arena
    that the next iteration would have to wait for."""
    cdef i64 i = hi - 1
    cdef double d0, d1, w, gx, gy
    cdef double carry = 0.0        # owed to λ[i] by node i + 1
    cdef const double* src = pool if has_k(o) else v
    v = _nonnull(v)
    while i >= lo:
        w = lam[i] + carry
        lam[i] = 0.0        # consumed: the arena is left zeroed for the next sweep
        carry = 0.0
        if w != 0.0:        # a branch, not a select: a select puts a compare and
            # moves through integer registers on the chain's critical path
            vp_loop(o, v[pa[i]], src[pb[i]], &d0, &d1, v + i)
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


cdef inline void _run_loop_tan "fastape_run_loop_tan"(
        int o, double* v, double* tan, const double* pool, const i32* pa, const i32* pb,
        i64 lo, i64 hi) noexcept nogil:
    """Scalar layout, one direction (tan indexed like v), a run lo..hi-1 of opcode o:
    the values, exactly as _run_loop computes them, and in the same pass the tangents
    ż[i] = ∂f/∂x ż[a[i]] + ∂f/∂y ż[b[i]]. Fused, so that a chain (s = s + t) carries its
    value and its tangent as two independent register chains at the cost of one.

    A zero tangent contributes nothing: the products are summed plainly and only a
    NaN sum (an inf or NaN partial times a zero tangent, or a NaN operand) is redone
    with the zero terms dropped. A branch, not selects: selects would put a compare
    and a blend on the chain's critical path."""
    cdef i64 i
    cdef double d0, d1, x, y, tx, ty = 0.0
    cdef double last = v[lo - 1] if lo > 0 else 0.0
    cdef double tlast = tan[lo - 1] if lo > 0 else 0.0
    cdef const double* src = pool if has_k(o) else v
    for i in range(lo, hi):
        if pa[i] == i - 1:
            x = last
            tx = tlast
        else:
            x = v[pa[i]]
            tx = tan[pa[i]]
        if not has_k(o) and pb[i] == i - 1:
            y = last
            ty = tlast
        else:
            y = src[pb[i]]
            if is_binary(o):
                ty = tan[pb[i]]
        last = vp_loop(o, x, y, &d0, &d1, NULL)
        v[i] = last
        tlast = _tangent_sum(o, d0, d1, tx, ty)
        tan[i] = tlast


cdef inline bint _unit_partials(int o) noexcept nogil:
    # ops whose partials are the constants ±1: their tangent d0·ẋ + d1·ẏ is NaN only when
    # ẋ or ẏ is NaN or they are opposite infinities, and dropping the zero terms gives
    # that NaN again, so the tangent run loops need no redo for them
    return o == ADD or o == SUB or o == NEG or o == COPY or o == ADD_K or o == RSUB_K


cdef inline double _tangent_sum(int o, double d0, double d1, double tx,
                                double ty) noexcept nogil:
    """d0·ẋ + d1·ẏ (ẏ ignored for a unary op) for the tangent run loops, a zero tangent
    contributing nothing: summed plainly, and only a NaN sum (an inf or NaN partial
    times a zero tangent, or a NaN operand) redone with the zero terms dropped."""
    cdef double s = d0 * tx
    if is_binary(o):
        s = s + d1 * ty
    if not _unit_partials(o) and s != s:
        s = d0 * tx if tx != 0.0 else 0.0
        if is_binary(o):
            s = s + (d1 * ty if ty != 0.0 else 0.0)
    return s


cdef inline void _run_loop_tan_chain "fastape_run_loop_tan_chain"(
        int o, double* v, double* tan, const double* pool, const i32* pa, const i32* pb,
        i64 lo, i64 hi) noexcept nogil:
    """_run_loop_tan for a chain: a run whose every node after the first reads its first
    operand from the node just before it (s = s + t; RUN_CHAIN). That operand is the
    register carried from the last node, so the loop loads no first parent and tests
    none: it keeps a chain's two register chains (value and tangent) as short as the
    value's alone, which the general loop's compares and branches did not."""
    cdef i64 i
    cdef double d0, d1, x, y, tx, ty = 0.0
    cdef const double* src = pool if has_k(o) else v
    cdef double last = v[pa[lo]]
    cdef double tlast = tan[pa[lo]]
    for i in range(lo, hi):
        x = last
        tx = tlast
        y = src[pb[i]]
        if is_binary(o):
            ty = tan[pb[i]]
        last = vp_loop(o, x, y, &d0, &d1, NULL)
        v[i] = last
        tlast = _tangent_sum(o, d0, d1, tx, ty)
        tan[i] = tlast


cdef inline void _run_loop_tanp "fastape_run_loop_tanp"(
        int o, const double* v, double* tan, const double* pool, const i32* pa,
        const i32* pb, i64 lo, i64 hi, i64 p) noexcept nogil:
    """Scalar layout, p directions node-major (node i's direction k at tan[i·p + k]), a
    run lo..hi-1 of opcode o after the forward sweep: ż_i = ∂f/∂x ż_a + ∂f/∂y ż_b in
    every direction, the partials once a node from its stored value. The numbers of
    Tape.tangent_sweep's vector loop (a zero tangent contributes nothing, by selects, so
    the direction loop vectorises), without its supports: for a few dense directions
    (a compressed Jacobian's colors) tracking them cost more than it saved."""
    cdef i64 i, k
    cdef double d0, d1
    cdef const double* src = pool if has_k(o) else v
    cdef const double* ta
    cdef const double* tb
    cdef double* tz
    for i in range(lo, hi):
        vp_loop(o, v[pa[i]], src[pb[i]], &d0, &d1, v + i)
        ta = tan + pa[i] * p
        tz = tan + i * p
        if is_binary(o):
            tb = tan + pb[i] * p
            for k in range(p):
                tz[k] = ((d0 * ta[k] if ta[k] != 0.0 else 0.0)
                         + (d1 * tb[k] if tb[k] != 0.0 else 0.0))
        else:
            for k in range(p):
                tz[k] = d0 * ta[k] if ta[k] != 0.0 else 0.0


cdef inline void _hvp_share(bint binary, double w, double wd, double d, double dxx,
                            double dxy, double tx, double ty, double* g,
                            double* gd) noexcept nogil:
    """One parent's share of a node in the forward-over-reverse sweep, one direction:
    g = λ d and ġ = λ̇ d + (λ dxx) ẋ + (λ dxy) ẏ, where d is the node's partial with
    respect to this parent and dxx, dxy the second partials of that partial with respect
    to x and y (dxy, ẏ absent for a unary op).

    g keeps the reverse sweep's convention (a zero λ contributes nothing). In ġ a term
    with any zero factor contributes nothing, even through an infinite partial or
    tangent: the sums are plain and redone without the zero terms only when NaN, as the
    tangent run loop does (a select would lengthen a chain's critical path); the
    selects on a zero second partial fold away when the op's is a constant (linear
    ops), so those terms cost nothing."""
    g[0] = w * d
    gd[0] = wd * d + ((w * dxx) * tx if dxx != 0.0 else 0.0)
    if binary:
        gd[0] = gd[0] + ((w * dxy) * ty if dxy != 0.0 else 0.0)
    if g[0] != g[0]:
        g[0] = w * d if w != 0.0 else 0.0
    if gd[0] != gd[0]:
        gd[0] = ((wd * d if wd != 0.0 and d != 0.0 else 0.0)
                 + ((w * dxx) * tx if w != 0.0 and dxx != 0.0 and tx != 0.0 else 0.0))
        if binary:
            gd[0] = gd[0] + ((w * dxy) * ty if w != 0.0 and dxy != 0.0 and ty != 0.0
                             else 0.0)


cdef inline void _run_loop_hvp "fastape_run_loop_hvp"(
        int o, const double* v, double* lam, const double* tan, double* tlam,
        const double* pool, const i32* pa, const i32* pb, i64 lo, i64 hi) noexcept nogil:
    """Forward over reverse, one direction, a run hi-1 down to lo of opcode o (scalar
    layout): λ[a] += ∂f/∂x λ[i] and λ̇[a] += ∂f/∂x λ̇[i] + λ[i] (∂²f/∂x² ż[a] +
    ∂²f/∂x∂y ż[b]), the same for b, then λ[i] = λ̇[i] = 0 (consumed). A node with zero
    λ and λ̇ contributes nothing (see _hvp_share for the terms).

    As in _run_loop_rev, what a node sends to the node just before it (a chain) is
    carried in registers, its λ and λ̇ side by side, and skipping a zero node is a
    branch: both keep the chain's critical path to the multiply-adds."""
    cdef i64 i = hi - 1
    cdef double d0, d1, d00, d01, d11, w, wd, tx, ty = 0.0, g, gd
    cdef double carry = 0.0, tcarry = 0.0      # owed to λ[i], λ̇[i] by node i + 1
    cdef const double* src = pool if has_k(o) else v
    v = _nonnull(v)
    while i >= lo:
        w = lam[i] + carry
        wd = tlam[i] + tcarry
        lam[i] = 0.0
        tlam[i] = 0.0
        carry = 0.0
        tcarry = 0.0
        if w != 0.0 or wd != 0.0:
            vsp_loop(o, v[pa[i]], src[pb[i]], &d0, &d1, &d00, &d01, &d11, v + i)
            tx = tan[pa[i]]
            if is_binary(o):
                ty = tan[pb[i]]
            _hvp_share(is_binary(o), w, wd, d0, d00, d01, tx, ty, &g, &gd)
            if pa[i] == i - 1:
                carry = g
                tcarry = gd
            else:
                lam[pa[i]] += g
                tlam[pa[i]] += gd
            if is_binary(o):
                _hvp_share(True, w, wd, d1, d01, d11, tx, ty, &g, &gd)
                if pb[i] == i - 1:
                    carry += g
                    tcarry += gd
                else:
                    lam[pb[i]] += g
                    tlam[pb[i]] += gd
        i -= 1
    if carry != 0.0 or tcarry != 0.0:
        lam[lo - 1] += carry
        tlam[lo - 1] += tcarry


# The loops above, each instantiated with a constant opcode for the ops listed in
# _hot: once the op table's branch is folded away the array loops vectorise and the
# run loops lose their dispatch. `kind` picks the loop; the arguments travel in a
# struct that the forced inlining dissolves.
cdef enum:
    EW_FWD, EW_REV, EW_TAN, RUN_FWD, RUN_REV, RUN_TAN, RUN_HVP, RUN_TAN_CHAIN, RUN_TANP


cdef inline void _kernel "fastape_kernel"(int kind, int o, _EwArgs* e,
                                          _RunArgs* r) noexcept nogil:
    if kind == EW_FWD:
        if o == TANH and e.sx == 1:
            fastape_tanh_array(e.x, e.out, e.n)    # x, out never alias
        else:
            _ew_loop(o, e.x, e.sx, e.y, e.sy, e.out, e.n)
    elif kind == EW_REV:
        _ew_loop_rev(o, e.x, e.sx, e.y, e.sy, e.z, e.lam, e.x_bar, e.y_bar, e.n)
    elif kind == EW_TAN:
        if e.p == 1:        # one direction: constant p, no inner loop, vectorises
            _ew_loop_tan(o, e.x, e.sx, e.y, e.sy, e.z, e.tx, e.ty, e.tz, e.n, 1, 0)
        else:
            _ew_tan_directions(o, e)
    elif kind == RUN_FWD:
        _run_loop(o, r.val, r.pool, r.pa, r.pb, r.lo, r.hi)
    elif kind == RUN_TAN:
        _run_loop_tan(o, r.val, r.tan, r.pool, r.pa, r.pb, r.lo, r.hi)
    elif kind == RUN_TAN_CHAIN:
        _run_loop_tan_chain(o, r.val, r.tan, r.pool, r.pa, r.pb, r.lo, r.hi)
    elif kind == RUN_TANP:
        _run_loop_tanp(o, r.val, r.tan, r.pool, r.pa, r.pb, r.lo, r.hi, r.p)
    elif kind == RUN_HVP:
        _run_loop_hvp(o, r.val, r.adj, r.tan, r.tlam, r.pool, r.pa, r.pb, r.lo, r.hi)
    else:
        _run_loop_rev(o, r.val, r.adj, r.pool, r.pa, r.pb, r.lo, r.hi)


cdef void _ew_tan_directions "fastape_ew_tan_directions"(int o, _EwArgs* e) noexcept nogil:
    # vector mode: the partials once an element are spread over p directions, so one
    # copy of this loop (the op a variable: one call of the op table an element) serves
    # every op and stride instead of one inlined copy per hot op and stride variant
    _ew_loop_tan(o, e.x, e.sx, e.y, e.sy, e.z, e.tx, e.ty, e.tz, e.n, e.p, e.ld)


# Which ops a call site of _hot can see: an array loop of a unary op reads no y, so its
# y stride is moot and the unary ops are instantiated for the x strides only (half the
# loops); the run loops see every op.
cdef enum:
    OPS_ALL, OPS_UNARY, OPS_WITH_Y


cdef inline void _pick "fastape_pick"(int kind, int o, _EwArgs* e, _RunArgs* r,
                                      int ops) noexcept nogil:
    # o and ops are constants wherever _hot calls this: the test folds away, and an op
    # the call site cannot see costs no loop (its branch, never taken, goes to _cold)
    if (ops == OPS_ALL or (ops == OPS_UNARY) == (not is_binary(o) and not has_k(o))) and \
            (kind != RUN_HVP and kind != RUN_TANP or _hvp_hot(o)) and \
            (kind != RUN_TAN_CHAIN or _chain_hot(o)):
        _kernel(kind, o, e, r)
    else:
        _cold(kind, o, e, r)


cdef inline bint _chain_hot(int o) noexcept nogil:
    # chains are sums and products (s = s + t, p = p * t): their loops instantiated for
    # these only, the others take the op table's loop (_cold)
    return o == ADD or o == SUB or o == MUL


cdef inline bint _hvp_hot(int o) noexcept nogil:
    # the forward-over-reverse run loops carry second partials: instantiated for the
    # polynomial ops only (a loop each costs compile time; the others' libm calls
    # dominate their runs anyway)
    return (o == ADD or o == SUB or o == MUL or o == ADD_K or o == MUL_K or o == RSUB_K
            or o == SQUARE or o == NEG or o == COPY or o == DIV_K)


cdef inline void _hot "fastape_hot"(int kind, int o, _EwArgs* e, _RunArgs* r,
                                    int ops) noexcept nogil:
    # the cheap ops, memory- or dispatch-bound; tanh, exp, sigmoid and sqrt too (their
    # reverse partials come from the node's value: 1 - v², v, v(1 - v), 0.5/v); the
    # rest share one loop per kind (_cold)
    if o == ADD: _pick(kind, ADD, e, r, ops)
    elif o == SUB: _pick(kind, SUB, e, r, ops)
    elif o == MUL: _pick(kind, MUL, e, r, ops)
    elif o == DIV: _pick(kind, DIV, e, r, ops)
    elif o == ADD_K: _pick(kind, ADD_K, e, r, ops)
    elif o == MUL_K: _pick(kind, MUL_K, e, r, ops)
    elif o == RSUB_K: _pick(kind, RSUB_K, e, r, ops)
    elif o == DIV_K: _pick(kind, DIV_K, e, r, ops)
    elif o == POW_K: _pick(kind, POW_K, e, r, ops)
    elif o == SQUARE: _pick(kind, SQUARE, e, r, ops)
    elif o == NEG: _pick(kind, NEG, e, r, ops)
    elif o == ABS: _pick(kind, ABS, e, r, ops)
    elif o == RELU: _pick(kind, RELU, e, r, ops)
    elif o == COPY: _pick(kind, COPY, e, r, ops)
    elif o == MAXIMUM: _pick(kind, MAXIMUM, e, r, ops)
    elif o == MINIMUM: _pick(kind, MINIMUM, e, r, ops)
    elif o == TANH: _pick(kind, TANH, e, r, ops)
    elif o == EXP: _pick(kind, EXP, e, r, ops)
    elif o == SIGMOID: _pick(kind, SIGMOID, e, r, ops)
    elif o == SQRT: _pick(kind, SQRT, e, r, ops)
    else: _cold(kind, o, e, r)


cdef void _cold "fastape_cold"(int kind, int o, _EwArgs* e, _RunArgs* r) noexcept nogil:
    # The other ops: one copy of each loop over the whole op table, and for the arrays one
    # more with the strides of a unary op on a contiguous array (x stride 1, y unused)
    # made constant (without it np.sin's loops ran ~6% slower); other strides are read
    # at run time. These loops dispatch per element (a switch GCC does not hoist) and
    # call libm or cython_special; inlined into every stride variant of _hot they made
    # 19 copies of the op table's switch, a third of _tape's compile time.
    cdef _EwArgs c
    if e != NULL and e.sx == 1 and not is_binary(o) and not has_k(o):
        c = e[0]
        c.sx = 1
        c.sy = 0
        _kernel(kind, o, &c, r)
    else:
        _kernel(kind, o, e, r)


cdef inline void _ew_ops "fastape_ew_ops"(
        int o, const double* x, i64 sx, const double* y, i64 sy, double* out,
        i64 n, int ops) noexcept nogil:
    cdef _EwArgs e
    e.x = x; e.sx = sx; e.y = y; e.sy = sy; e.out = out; e.n = n
    _hot(EW_FWD, o, &e, NULL, ops)


cdef inline void _ew_ops_rev "fastape_ew_ops_rev"(
        int o, const double* x, i64 sx, const double* y, i64 sy, const double* z,
        const double* lam, double* x_bar, double* y_bar, i64 n, int ops) noexcept nogil:
    cdef _EwArgs e
    e.x = x; e.sx = sx; e.y = y; e.sy = sy; e.z = z; e.lam = lam; e.x_bar = x_bar
    e.y_bar = y_bar; e.n = n
    _hot(EW_REV, o, &e, NULL, ops)


cdef inline void _ew_ops_tan "fastape_ew_ops_tan"(
        int o, const double* x, i64 sx, const double* y, i64 sy, const double* z,
        const double* tx, const double* ty, double* tz, i64 n, i64 p, i64 ld,
        int ops) noexcept nogil:
    cdef _EwArgs e
    e.x = x; e.sx = sx; e.y = y; e.sy = sy; e.z = z; e.tx = tx; e.ty = ty; e.tz = tz
    e.n = n; e.p = p; e.ld = ld
    _hot(EW_TAN, o, &e, NULL, ops)


cdef void run_forward(int o, double* val, const double* pool, const i32* pa,
                      const i32* pb, i64 lo, i64 hi) noexcept nogil:
    """The forward sweep over a run of nodes lo..hi-1 of opcode o (scalar layout)."""
    cdef _RunArgs r
    r.val = val; r.pool = pool; r.pa = pa; r.pb = pb; r.lo = lo; r.hi = hi
    _hot(RUN_FWD, o, NULL, &r, OPS_ALL)


cdef void run_reverse(int o, double* val, double* adj, const double* pool,
                      const i32* pa, const i32* pb, i64 lo, i64 hi) noexcept nogil:
    """The reverse sweep over a run of nodes hi-1 down to lo of opcode o (scalar
    layout); each node's adjoint is zeroed once passed on."""
    cdef _RunArgs r
    r.val = val; r.adj = adj; r.pool = pool; r.pa = pa; r.pb = pb; r.lo = lo; r.hi = hi
    _hot(RUN_REV, o, NULL, &r, OPS_ALL)


cdef void run_forward_tangent(int o, double* val, double* tan, const double* pool,
                              const i32* pa, const i32* pb, i64 lo, i64 hi) noexcept nogil:
    """The forward and tangent sweeps fused over a run of nodes lo..hi-1 of opcode o
    (scalar layout, one direction: tan is indexed like val); see _run_loop_tan."""
    cdef _RunArgs r
    r.val = val; r.tan = tan; r.pool = pool; r.pa = pa; r.pb = pb; r.lo = lo; r.hi = hi
    _hot(RUN_TAN, o, NULL, &r, OPS_ALL)


cdef void run_forward_tangent_chain(int o, double* val, double* tan, const double* pool,
                                    const i32* pa, const i32* pb, i64 lo,
                                    i64 hi) noexcept nogil:
    """run_forward_tangent for a chain (every node after the first reads its first
    operand from the node before it); see _run_loop_tan_chain."""
    cdef _RunArgs r
    r.val = val; r.tan = tan; r.pool = pool; r.pa = pa; r.pb = pb; r.lo = lo; r.hi = hi
    _hot(RUN_TAN_CHAIN, o, NULL, &r, OPS_ALL)


cdef void run_tangents(int o, const double* val, double* tan, const double* pool,
                       const i32* pa, const i32* pb, i64 lo, i64 hi, i64 p) noexcept nogil:
    """The tangent sweep over a run of nodes lo..hi-1 of opcode o in p directions
    (scalar layout, node-major), after the forward sweep; see _run_loop_tanp."""
    cdef _RunArgs r
    r.val = <double*>val; r.tan = tan; r.pool = pool; r.pa = pa; r.pb = pb; r.lo = lo
    r.hi = hi; r.p = p
    _hot(RUN_TANP, o, NULL, &r, OPS_ALL)


cdef void run_hvp_reverse(int o, const double* val, double* adj, const double* tan,
                          double* tan_adj, const double* pool, const i32* pa, const i32* pb,
                          i64 lo, i64 hi) noexcept nogil:
    """Forward over reverse over a run of nodes hi-1 down to lo of opcode o (scalar
    layout, one direction: tan, tan_adj indexed like val); see _run_loop_hvp."""
    cdef _RunArgs r
    r.val = val; r.adj = adj; r.tan = <double*>tan; r.tlam = tan_adj; r.pool = pool
    r.pa = pa; r.pb = pb; r.lo = lo; r.hi = hi
    _hot(RUN_HVP, o, NULL, &r, OPS_ALL)


# The array kernels' entry points are compiled three times, for the baseline x86-64
# (SSE2: two doubles a vector), AVX2 (four) and AVX-512 (eight), the widest the CPU has
# picked when the module loads (target_clones, as fastape_tanh_array). Their loops are
# bound by the loads and stores of arrays in cache (a fused sweep of _compiled runs them
# over blocks of a few hundred elements): on the whole-array Rosenbrock, n = 10⁴, the
# fused value_and_grad took 1.1x hand numpy's time with SSE2, 0.8x with AVX2 and
# 0.5-0.6x with AVX-512. No clone contracts a*b + c into an FMA (-ffp-contract=off,
# setup.py), so each computes every element by the baseline loop's IEEE operations.
cdef extern from *:
    """
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
    #define FASTAPE_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
    #else
    #define FASTAPE_SIMD_CLONES
    #endif
    static void fastape_elementwise_forward(int, const double *, int64_t, const double *,
        int64_t, double *, int64_t) FASTAPE_SIMD_CLONES;
    static void fastape_elementwise_reverse(int, const double *, int64_t, const double *,
        int64_t, const double *, const double *, double *, double *, int64_t)
        FASTAPE_SIMD_CLONES;
    static void fastape_elementwise_tangent(int, const double *, int64_t, const double *,
        int64_t, const double *, const double *, const double *, double *, int64_t,
        int64_t, int64_t) FASTAPE_SIMD_CLONES;
    """


include "_threads.pxi"


# Threads (_threads.pxi): an array of n >= 2·PAR_MIN elements is cut into pieces of at
# least PAR_MIN/4 elements (a multiple of 8: whole cache lines, whole SIMD loops), at
# most 4 per thread so that a thread slowed by another process on its core takes fewer
# of them; each element is computed by the same loop as without threads, so the bits do
# not depend on the count. A reverse kernel accumulating into a broadcast scalar (stride
# 0: one x̄ for every element) stays serial: its additions are one running sum.
cdef inline i64 _ew_piece(i64 n) noexcept nogil:
    """Elements per piece of a threaded elementwise kernel over n elements, or 0 when it
    runs on one thread (n below 2·PAR_MIN, or one thread)."""
    cdef i64 nt, piece
    if n < 2 * PAR_MIN:
        return 0
    nt = min(<i64>fastape_max_threads(), n // PAR_MIN)
    if nt <= 1:
        return 0
    piece = max(PAR_MIN // 4, (n + 4 * nt - 1) // (4 * nt))
    return piece + (-piece) % 8


def _set_par_min(i64 n):
    """PAR_MIN (elements per thread of an unfused kernel, at least); returns the previous
    value. For measurements and tests."""
    global PAR_MIN
    old = PAR_MIN
    PAR_MIN = max(8, n)
    return old


cdef inline int _ew_team(i64 n, i64 piece) noexcept nogil:
    return <int>min(<i64>fastape_max_threads(), (n + piece - 1) // piece)


cdef void elementwise_forward(int o, const double* x, i64 sx, const double* y, i64 sy,
                              double* out, i64 n) noexcept nogil:
    """out[j] = f_o(x[j·sx], y[j·sy]), strides 0 (a broadcast scalar) or 1."""
    cdef i64 piece = _ew_piece(n), c, lo
    if piece == 0:
        _elementwise_forward(o, x, sx, y, sy, out, n)
        return
    for c in prange((n + piece - 1) // piece, num_threads=_ew_team(n, piece),
                    schedule="dynamic"):
        lo = c * piece
        _elementwise_forward(o, x + lo * sx, sx, y + lo * sy, sy, out + lo,
                             min(piece, n - lo))


cdef void _elementwise_forward "fastape_elementwise_forward"(
        int o, const double* x, i64 sx, const double* y, i64 sy, double* out,
        i64 n) noexcept nogil:
    if not is_binary(o) and not has_k(o):
        if sx:
            _ew_ops(o, x, 1, y, 0, out, n, OPS_UNARY)
        else:
            _ew_ops(o, x, 0, y, 0, out, n, OPS_UNARY)
    elif sx and sy:
        _ew_ops(o, x, 1, y, 1, out, n, OPS_WITH_Y)
    elif sx:
        _ew_ops(o, x, 1, y, 0, out, n, OPS_WITH_Y)
    elif sy:
        _ew_ops(o, x, 0, y, 1, out, n, OPS_WITH_Y)
    else:
        _ew_ops(o, x, 0, y, 0, out, n, OPS_WITH_Y)


cdef void elementwise_reverse(int o, const double* x, i64 sx, const double* y, i64 sy,
                              const double* z, const double* lam, double* x_bar,
                              double* y_bar, i64 n) noexcept nogil:
    """x̄, ȳ += the partials of f_o times λ (see _ew_loop_rev); z: the node's values."""
    cdef i64 piece = _ew_piece(n) if sx and (y_bar == NULL or sy) else 0, c, lo
    if piece == 0:
        _elementwise_reverse(o, x, sx, y, sy, z, lam, x_bar, y_bar, n)
        return
    for c in prange((n + piece - 1) // piece, num_threads=_ew_team(n, piece),
                    schedule="dynamic"):
        lo = c * piece
        _elementwise_reverse(o, x + lo, sx, y + lo * sy, sy, z + lo, lam + lo, x_bar + lo,
                             y_bar + lo if y_bar != NULL else NULL, min(piece, n - lo))


cdef void _elementwise_reverse "fastape_elementwise_reverse"(
        int o, const double* x, i64 sx, const double* y, i64 sy, const double* z,
        const double* lam, double* x_bar, double* y_bar, i64 n) noexcept nogil:
    if not is_binary(o) and not has_k(o):
        if sx:
            _ew_ops_rev(o, x, 1, y, 0, z, lam, x_bar, y_bar, n, OPS_UNARY)
        else:
            _ew_ops_rev(o, x, 0, y, 0, z, lam, x_bar, y_bar, n, OPS_UNARY)
    elif sx and sy:
        _ew_ops_rev(o, x, 1, y, 1, z, lam, x_bar, y_bar, n, OPS_WITH_Y)
    elif sx:
        _ew_ops_rev(o, x, 1, y, 0, z, lam, x_bar, y_bar, n, OPS_WITH_Y)
    elif sy:
        _ew_ops_rev(o, x, 0, y, 1, z, lam, x_bar, y_bar, n, OPS_WITH_Y)
    else:
        _ew_ops_rev(o, x, 0, y, 0, z, lam, x_bar, y_bar, n, OPS_WITH_Y)


cdef void elementwise_tangent(int o, const double* x, i64 sx, const double* y, i64 sy,
                              const double* z, const double* tx, const double* ty,
                              double* tz, i64 n, i64 p, i64 ld) noexcept nogil:
    """ż = ∂f/∂x ẋ + ∂f/∂y ẏ for p directions (see _ew_loop_tan); direction k of an
    operand's (the node's) tangents starts ld after direction k - 1; z: the node's
    values. ty is ignored for a unary op."""
    cdef i64 piece = _ew_piece(n * p), c, lo
    if piece == 0:
        _elementwise_tangent(o, x, sx, y, sy, z, tx, ty, tz, n, p, ld)
        return
    piece = max(8, piece // p + (-(piece // p)) % 8)
    for c in prange((n + piece - 1) // piece, num_threads=_ew_team(n, piece),
                    schedule="dynamic"):
        lo = c * piece
        _elementwise_tangent(o, x + lo * sx, sx, y + lo * sy, sy, z + lo, tx + lo * sx,
                             ty + lo * sy if ty != NULL else NULL, tz + lo,
                             min(piece, n - lo), p, ld)


cdef void _elementwise_tangent "fastape_elementwise_tangent"(
        int o, const double* x, i64 sx, const double* y, i64 sy, const double* z,
        const double* tx, const double* ty, double* tz, i64 n, i64 p,
        i64 ld) noexcept nogil:
    if not is_binary(o) and not has_k(o):
        if sx:
            _ew_ops_tan(o, x, 1, y, 0, z, tx, ty, tz, n, p, ld, OPS_UNARY)
        else:
            _ew_ops_tan(o, x, 0, y, 0, z, tx, ty, tz, n, p, ld, OPS_UNARY)
    elif sx and sy:
        _ew_ops_tan(o, x, 1, y, 1, z, tx, ty, tz, n, p, ld, OPS_WITH_Y)
    elif sx:
        _ew_ops_tan(o, x, 1, y, 0, z, tx, ty, tz, n, p, ld, OPS_WITH_Y)
    elif sy:
        _ew_ops_tan(o, x, 0, y, 1, z, tx, ty, tz, n, p, ld, OPS_WITH_Y)
    else:
        _ew_ops_tan(o, x, 0, y, 0, z, tx, ty, tz, n, p, ld, OPS_WITH_Y)
