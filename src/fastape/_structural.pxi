# Structural ops (included into _tape.pyx): ops that move, select or combine the
# elements of arrays. Each op is one block: its parameter struct (a view of the
# node's slice of the parameter arena P; the first field is always the size), its
# forward kernel, its tangent kernel, its reverse kernel and its recorder. The
# registry line of each op (registry.py) names the kernels and says which fields are
# node ids; the generated _dispatch.pxi sends nodes here.
#
# Tangent kernels: <kernel>_tangent(Tape t, i64 i, double* T) computes node i's
# tangent in ONE direction, T that direction's arena in the value layout (a parent's
# tangent at T + t.off[parent], the node's at T + t.off[i]; values from t.val). An
# op linear in its parents has one body for both: its forward kernel is its tangent
# kernel applied to the values, <kernel>_tangent(t, i, t.val). A nonlinear kernel
# lets a zero tangent contribute nothing even through an infinite or NaN partial,
# element by element (selects) or term by term (a parent whose tangents are all zero
# is skipped): a zero-tangent parent, a constant for instance, must give 0, not NaN.
#
# The reverse kernels may assume the node's adjoints are not all zero: the sweep
# skips such nodes (a zero multiplier contributes nothing, for every op).
#
# Names: x the first parent's values, z the node's values, lam the node's adjoints,
# x_bar (y_bar) the first (second) parent's adjoints, tx (ty, tz) the first (second)
# parent's (the node's) tangents in one direction.


cdef inline const double* _x(Tape t, i64 i) noexcept nogil:
    return t.val + t.off[t.a[i]]


cdef inline double* _x_bar(Tape t, i64 i) noexcept nogil:
    return t.adj + t.off[t.a[i]]


cdef inline Var _recorded(Tape t, i64 i, tuple shape, i64 size):
    """Compute node i (just pushed, parameters filled) and return its Var."""
    t.forward_node(i)
    return _new(t, i, shape, size)


# -- GATHER1: z = x.flat[k], k an immediate (pool[b]) ----------------------------

cdef void gather1_tangent(Tape t, i64 i, double* T) noexcept nogil:
    """ż = ẋ.flat[k]; on the values, the forward kernel."""
    T[t.off[i]] = T[t.off[t.a[i]] + <i64>t.pool[t.b[i]]]


cdef void gather1_forward(Tape t, i64 i) noexcept nogil:
    gather1_tangent(t, i, t.val)


cdef void gather1_reverse(Tape t, i64 i) noexcept nogil:
    _x_bar(t, i)[<i64>t.pool[t.b[i]]] += t.adj[t.off[i]]


def item(Var x not None, i64 flat):
    """Scalar x.flat[flat] (bounds already checked): an element of an element block is
    a node already, anything else records a gather."""
    cdef Tape t = x.tape
    if t.blk_n and x.node == t.blk_base and x.size == t.blk_n:
        t._materialize_block()
        t.blk_touched = True
        return _new(t, x.node + 1 + flat, SCALAR, 1)
    cdef i64 i = t.push(GATHER1, x.node, t.pool_add(<double>flat), 1, 1)
    return _recorded(t, i, SCALAR, 1)


# -- GATHER: z[j] = x.flat[idx[j]] ------------------------------------------------

ctypedef struct GatherP:
    i64 size
    i64 idx[1]          # size entries


cdef void gather_tangent(Tape t, i64 i, double* T) noexcept nogil:
    """ż[j] = ẋ[idx[j]]; on the values, the forward kernel."""
    cdef const GatherP* p = <const GatherP*>t.params(i)
    cdef const double* tx = T + t.off[t.a[i]]
    cdef double* tz = T + t.off[i]
    cdef i64 j
    for j in range(p.size):
        tz[j] = tx[p.idx[j]]


cdef void gather_forward(Tape t, i64 i) noexcept nogil:
    gather_tangent(t, i, t.val)


cdef void gather_reverse(Tape t, i64 i) noexcept nogil:
    """x̄[idx[j]] += λ[j] (repeated indices accumulate)."""
    cdef const GatherP* p = <const GatherP*>t.params(i)
    cdef double* x_bar = _x_bar(t, i)
    cdef const double* lam = t.adj + t.off[i]
    cdef i64 j
    for j in range(p.size):
        x_bar[p.idx[j]] += lam[j]


def gather(Var x not None, idx, tuple shape):
    """x.flat[idx] with result shape `shape` (idx: flat int64 indices, already checked);
    recorded as STRIDED when the indices form an arithmetic progression."""
    cdef Tape t = x.tape
    cdef i64 i, j, n, step
    cdef const i64[::1] ix
    cdef GatherP* p
    if shape == SCALAR:
        return item(x, int(idx))
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
    i = t.push(GATHER, x.node, -1, n, 1 + n)
    p = <GatherP*>t.params(i)
    for j in range(n):
        p.idx[j] = ix[j]
    return _recorded(t, i, shape, n)


# -- STRIDED: z[j] = x.flat[start + j·step] ---------------------------------------

ctypedef struct StridedP:
    i64 size
    i64 start
    i64 step


cdef void strided_tangent(Tape t, i64 i, double* T) noexcept nogil:
    """ż[j] = ẋ[start + j·step]; on the values, the forward kernel."""
    cdef const StridedP* p = <const StridedP*>t.params(i)
    cdef const double* tx = T + t.off[t.a[i]] + p.start
    cdef double* tz = T + t.off[i]
    cdef i64 j
    if p.step == 1:         # a contiguous slice (x[1:]): one copy, not a strided loop
        memcpy(tz, tx, p.size * sizeof(double))
        return
    for j in range(p.size):
        tz[j] = tx[j * p.step]


cdef void strided_forward(Tape t, i64 i) noexcept nogil:
    strided_tangent(t, i, t.val)


cdef void strided_reverse(Tape t, i64 i) noexcept nogil:
    cdef const StridedP* p = <const StridedP*>t.params(i)
    cdef double* x_bar = _x_bar(t, i) + p.start
    cdef const double* lam = t.adj + t.off[i]
    cdef i64 j
    if p.step == 1:         # the loop with a constant stride vectorises
        for j in range(p.size):
            x_bar[j] += lam[j]
        return
    for j in range(p.size):
        x_bar[j * p.step] += lam[j]


def strided(Var x not None, i64 start, i64 step, tuple shape):
    """x.flat[start + j*step] for j < size(shape) (positions already checked)."""
    cdef Tape t = x.tape
    cdef i64 n = _prod(shape)
    cdef i64 i = t.push(STRIDED, x.node, -1, n, 3)
    cdef StridedP* p = <StridedP*>t.params(i)
    p.start = start
    p.step = step
    return _recorded(t, i, shape, n)


# -- BROADCAST: a strided view, z[j] = x[Σ_d j_d · stride_d] ---------------------
# numpy.broadcast_to (stride 0 on the repeated axes) and transposes (the strides
# permuted): the one kernel walks any non-negative strides, so a transpose is a copy
# along the output with a strided read, and its reverse the strided add back, with no
# index array to record, store and read (issue 13: GATHERs of 40,000 indices were a
# tenth of an eager GMM gradient).

ctypedef struct BroadcastP:
    i64 size
    i64 nd
    i64 dims[1]         # nd output dimensions, then nd input strides (0: broadcast)


cdef extern from *:
    """
    static void fastape_broadcast(const double *, double *, const int64_t *, const int64_t *,
        int, int64_t, int) FASTAPE_SIMD_CLONES;
    """


cdef inline void _transpose_tiles(double* x, double* out, i64 src, i64 j, i64 rows,
                                  i64 cols, i64 stride, i64 ostride,
                                  bint reverse) noexcept nogil:
    """forward: out[j + r·ostride + c] = x[src + r + c·stride];  reverse: x̄ += out̄ there.
    In 16 x 16 tiles: a row of out and a column of x each meet only 2 cache lines per
    tile, where the plain loop walked x (or x̄) with the whole stride for every element
    (a quarter of a compiled GMM gradient's sweeps in the reverse transposes)."""
    cdef i64 r0, c0, r, c, r1, c1
    cdef double* o
    cdef double* xs
    for r0 in range(0, rows, 16):
        r1 = min(r0 + 16, rows)
        for c0 in range(0, cols, 16):
            c1 = min(c0 + 16, cols)
            if reverse:         # the read-modify-write along x̄'s contiguous axis
                for c in range(c0, c1):
                    xs = x + src + c * stride
                    o = out + j + c
                    for r in range(r0, r1):
                        xs[r] += o[r * ostride]
            else:               # the writes along out's contiguous axis
                for r in range(r0, r1):
                    o = out + j + r * ostride
                    xs = x + src + r
                    for c in range(c0, c1):
                        o[c] = xs[c * stride]


cdef void _broadcast "fastape_broadcast"(const double* x, double* out, const i64* shape,
                                         const i64* stride, int nd, i64 size,
                                         bint reverse) noexcept nogil:
    """forward: out[j] = x[src(j)];  reverse: x̄[src(j)] += out̄[j].
    src(j) walks the output multi-index with the input's strides (0 on broadcast axes).

    Axes of length 1 are dropped and neighbours that step through x as one axis would
    are merged, then the innermost axis runs as one loop (a copy, a fill or a sum for
    strides 1 and 0) and only the outer ones walk an odometer: per element it was a
    compare and a branch, most of the time of small broadcasts (x[:, None] - m). A
    permutation whose innermost output axis is strided in x while another axis is
    x's contiguous one is a stack of 2-d transposes between those two axes, in tiles.
    Compiled for SSE2, AVX2 and AVX-512 (FASTAPE_SIMD_CLONES, as the elementwise
    kernels), the copies and adds element by element the same."""
    cdef i64 shp[64]
    cdef i64 st[64]
    cdef i64 idx[64]
    cdef i64 ost[64]
    cdef i64 j, q, src = 0, n_in, s_in, ostride
    cdef int d, m = 0, a
    cdef double acc
    cdef double* xb = <double*>x
    if size <= 0:
        return
    for d in range(nd):
        if shape[d] == 1:
            continue
        if m > 0 and st[m - 1] == stride[d] * shape[d]:
            shp[m - 1] *= shape[d]
            st[m - 1] = stride[d]
        else:
            shp[m] = shape[d]
            st[m] = stride[d]
            m += 1
    if m == 0:
        shp[0] = 1
        st[0] = 0
        m = 1
    n_in = shp[m - 1]
    s_in = st[m - 1]
    memset(idx, 0, sizeof(idx))
    j = 0
    a = -1
    if s_in > 1:
        for d in range(m - 2, -1, -1):
            if st[d] == 1:
                a = d
                break
    if a >= 0:
        # transposes between axis a (contiguous in x: the tiles' rows) and the innermost
        # output axis (the tiles' columns); an odometer over the other axes moves both
        # the source and the output offsets
        ost[m - 1] = 1
        for d in range(m - 2, -1, -1):
            ost[d] = ost[d + 1] * shp[d + 1]
        ostride = ost[a]
        while True:
            _transpose_tiles(xb, out, src, j, shp[a], n_in, s_in, ostride, reverse)
            d = m - 2
            while d >= 0:
                if d == a:
                    d -= 1
                    continue
                idx[d] += 1
                src += st[d]
                j += ost[d]
                if idx[d] < shp[d]:
                    break
                src -= st[d] * shp[d]
                j -= ost[d] * shp[d]
                idx[d] = 0
                d -= 1
            if d < 0:
                return
    while j < size:
        if reverse:
            if s_in == 0:
                acc = xb[src]
                for q in range(n_in):
                    acc += out[j + q]
                xb[src] = acc
            elif s_in == 1:
                for q in range(n_in):
                    xb[src + q] += out[j + q]
            else:
                for q in range(n_in):
                    xb[src + q * s_in] += out[j + q]
        else:
            if s_in == 0:
                for q in range(n_in):
                    out[j + q] = x[src]
            elif s_in == 1:
                if n_in >= 16:
                    memcpy(out + j, x + src, n_in * sizeof(double))
                else:           # short runs (x[:, None, :] of 5 columns): no call
                    for q in range(n_in):
                        out[j + q] = x[src + q]
            else:
                for q in range(n_in):
                    out[j + q] = x[src + q * s_in]
        j += n_in
        d = m - 2
        while d >= 0:
            idx[d] += 1
            src += st[d]
            if idx[d] < shp[d]:
                break
            src -= st[d] * shp[d]
            idx[d] = 0
            d -= 1


cdef void broadcast_tangent(Tape t, i64 i, double* T) noexcept nogil:
    """ż = broadcast_to(ẋ); on the values, the forward kernel."""
    cdef const BroadcastP* p = <const BroadcastP*>t.params(i)
    _broadcast(T + t.off[t.a[i]], T + t.off[i], p.dims, p.dims + p.nd, <int>p.nd, p.size,
               False)


cdef void broadcast_forward(Tape t, i64 i) noexcept nogil:
    broadcast_tangent(t, i, t.val)


cdef void broadcast_reverse(Tape t, i64 i) noexcept nogil:
    """x̄[src(j)] += λ[j]: the broadcast axes sum back."""
    cdef const BroadcastP* p = <const BroadcastP*>t.params(i)
    _broadcast(_x_bar(t, i), t.adj + t.off[i], p.dims, p.dims + p.nd, <int>p.nd,
               p.size, True)


cdef Var _broadcast_to(Var x, tuple shape, str op, str arg):
    """x broadcast to `shape` (a BROADCAST node), numpy's rules, checked here."""
    cdef Tape t = x.tape
    cdef int nd = len(shape), lead, d
    cdef i64 size = _prod(shape), i, stride
    cdef BroadcastP* p
    if x.shape == shape:
        return x
    lead = nd - len(x.shape)
    if lead < 0 or nd > 64:
        raise ShapeError(f"{op}: cannot broadcast argument '{arg}' of shape {x.shape} "
                         f"to shape {shape}")
    for d in range(len(x.shape)):
        if x.shape[d] != 1 and x.shape[d] != shape[lead + d]:
            raise ShapeError(f"{op}: cannot broadcast argument '{arg}' of shape {x.shape} "
                             f"to shape {shape}")
    i = t.push(BROADCAST, x.node, -1, size, 2 + 2 * nd)
    p = <BroadcastP*>t.params(i)
    p.nd = nd
    stride = 1
    for d in range(nd - 1, -1, -1):
        p.dims[d] = shape[d]
        if d < lead or x.shape[d - lead] == 1:
            p.dims[nd + d] = 0
        else:
            p.dims[nd + d] = stride
            stride *= x.shape[d - lead]
    return _recorded(t, i, shape, size)


def broadcast_to(Var x not None, tuple shape, str op="broadcast_to", str arg="x"):
    return _broadcast_to(x, shape, op, arg)


def permuted(Var x not None, tuple axes):
    """numpy.transpose(x, axes) (axes: a permutation of x's axes, already checked) as a
    strided view: output axis d reads x's axis axes[d] with its stride (0 for a length
    1 axis, as broadcast_to writes it, so that every reader sees one convention)."""
    cdef Tape t = x.tape
    cdef int nd = len(axes), d
    cdef i64 i, stride
    cdef i64 strides[64]
    cdef BroadcastP* p
    if nd > 64:
        raise ShapeError(f"transpose: {nd} dimensions (at most 64)")
    stride = 1
    for d in range(nd - 1, -1, -1):
        strides[d] = stride
        stride *= <i64>x.shape[d]
    i = t.push(BROADCAST, x.node, -1, x.size, 2 + 2 * nd)
    p = <BroadcastP*>t.params(i)
    p.nd = nd
    for d in range(nd):
        p.dims[d] = x.shape[axes[d]]
        p.dims[nd + d] = strides[<int>axes[d]] if p.dims[d] != 1 else 0
    return _recorded(t, i, tuple([x.shape[a] for a in axes]), x.size)


# -- SUM, PROD, AMAX, AMIN: z[p, t] = ⊕_q x[p, q, t] ------------------------------

ctypedef struct ReduceP:
    i64 size            # outer · inner
    i64 outer
    i64 n               # the reduced axis
    i64 inner


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


cdef i64 _prod_zeros(const double* x, i64 n, i64 stride, i64* zpos,
                     double* nonzero) noexcept nogil:
    """How many of x[0:n*stride:stride] are 0; zpos[0] = the last zero's index and
    nonzero[0] = the product of the others, so that Π_{m≠l} x_m needs no division by
    a zero (PROD's partials, in its tangent and reverse kernels alike)."""
    cdef i64 q, zeros = 0
    cdef double nz = 1.0
    zpos[0] = 0
    for q in range(n):
        if x[q * stride] == 0.0:
            zeros += 1
            zpos[0] = q
        else:
            nz *= x[q * stride]
    nonzero[0] = nz
    return zeros


cdef double _pairwise_sum(const double* x, i64 n, i64 stride) noexcept nogil:
    """Σ x[q·stride] for q < n by pairwise summation, numpy's scheme (eight running
    sums over blocks of at most 128, halves above that): a rounding error that grows
    like log n where a running sum's grows like n."""
    cdef double r0, r1, r2, r3, r4, r5, r6, r7, res
    cdef i64 q, m
    if n < 8:
        res = 0.0
        for q in range(n):
            res += x[q * stride]
        return res
    if n <= 128:
        r0 = x[0]
        r1 = x[stride]
        r2 = x[2 * stride]
        r3 = x[3 * stride]
        r4 = x[4 * stride]
        r5 = x[5 * stride]
        r6 = x[6 * stride]
        r7 = x[7 * stride]
        m = n - n % 8
        q = 8
        while q < m:
            r0 += x[q * stride]
            r1 += x[(q + 1) * stride]
            r2 += x[(q + 2) * stride]
            r3 += x[(q + 3) * stride]
            r4 += x[(q + 4) * stride]
            r5 += x[(q + 5) * stride]
            r6 += x[(q + 6) * stride]
            r7 += x[(q + 7) * stride]
            q += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        for q in range(m, n):
            res += x[q * stride]
        return res
    m = n // 2
    m -= m % 8
    return _pairwise_sum(x, m, stride) + _pairwise_sum(x + m * stride, n - m, stride)


cdef enum:
    PAIRWISE_MAX_PARTS = 64         # subtrees of a threaded pairwise sum


cdef i64 _pairwise_parts(i64 n, int depth, i64* lens, i64 k) noexcept nogil:
    """The subtrees of _pairwise_sum's recursion over n elements `depth` levels down (or
    leaves, where it stops sooner): their lengths to lens[k..], in order; returns k +
    their number."""
    cdef i64 m
    if depth == 0 or n <= 128:
        lens[k] = n
        return k + 1
    m = n // 2
    m -= m % 8
    k = _pairwise_parts(m, depth - 1, lens, k)
    return _pairwise_parts(n - m, depth - 1, lens, k)


cdef double _pairwise_join(const double* sums, i64 n, int depth, i64* k) noexcept nogil:
    """_pairwise_sum over n elements given the sums of its subtrees `depth` levels down
    (sums[k[0]..], consumed): the same additions in the same order."""
    cdef i64 m
    cdef double left
    if depth == 0 or n <= 128:
        left = sums[k[0]]
        k[0] += 1
        return left
    m = n // 2
    m -= m % 8
    left = _pairwise_join(sums, m, depth - 1, k)
    return left + _pairwise_join(sums, n - m, depth - 1, k)


cdef double _pairwise_sum_threaded(const double* x, i64 n, i64 stride) noexcept nogil:
    """_pairwise_sum, the subtrees of its top levels summed by threads (from 2·PAR_MIN
    elements) and joined as its recursion joins them: the same bits with any count."""
    cdef i64 lens[PAIRWISE_MAX_PARTS]
    cdef i64 starts[PAIRWISE_MAX_PARTS]
    cdef double sums[PAIRWISE_MAX_PARTS]
    cdef i64 nparts, q, k = 0
    cdef int nt, depth = 0
    if n < 2 * PAR_MIN:
        return _pairwise_sum(x, n, stride)
    nt = <int>min(<i64>fastape_max_threads(), n // PAR_MIN)
    if nt <= 1:
        return _pairwise_sum(x, n, stride)
    while depth < 6 and (1 << depth) < 4 * nt:      # about 4 subtrees per thread
        depth += 1
    nparts = _pairwise_parts(n, depth, lens, 0)
    starts[0] = 0
    for q in range(1, nparts):
        starts[q] = starts[q - 1] + lens[q - 1]
    for q in prange(nparts, num_threads=nt, schedule="dynamic"):
        sums[q] = _pairwise_sum(x + starts[q] * stride, lens[q], stride)
    return _pairwise_join(sums, n, depth, &k)


# Short sums (n < 8 terms, where _pairwise_sum is one running sum: the GMM's sum of
# Q x_c squared over d = 5, its log-sum-exp over k = 8 components) run as loops over
# whole rows instead of one _pairwise_sum call per output, and their reverse adds each
# multiplier to its row in one loop: both vectorise along the inner axis, and the
# additions, element by element, are those of the general loops (the same bits).
cdef extern from *:
    """
    static void fastape_short_sums(const double *, double *, int64_t, int64_t, int64_t)
        FASTAPE_SIMD_CLONES;
    static void fastape_sum_rows_reverse(double *, const double *, int64_t, int64_t,
        int64_t) FASTAPE_SIMD_CLONES;
    """


cdef void _short_sums "fastape_short_sums"(const double* x, double* z, i64 outer, i64 n,
                                           i64 inner) noexcept nogil:
    """z[p, s] = Σ_q x[p, q, s] for n < 8, each a running sum from 0.0 in q order (as
    _pairwise_sum computes it below 8 terms)."""
    cdef i64 p, q, s
    cdef double acc
    cdef const double* xr
    cdef double* zp
    if inner == 1:
        for p in range(outer):
            xr = x + p * n
            acc = 0.0
            for q in range(n):
                acc = acc + xr[q]
            z[p] = acc
        return
    for p in range(outer):
        zp = z + p * inner
        for s in range(inner):
            zp[s] = 0.0
        for q in range(n):
            xr = x + (p * n + q) * inner
            for s in range(inner):
                zp[s] = zp[s] + xr[s]


cdef void _sum_rows_reverse "fastape_sum_rows_reverse"(double* x_bar, const double* lam,
                                                       i64 outer, i64 n,
                                                       i64 inner) noexcept nogil:
    """x̄[p, q, s] += λ[p, s] where λ[p, s] != 0 (SUM's reverse, skipping zero
    multipliers as every reverse kernel does)."""
    cdef i64 p, q, s
    cdef double w
    cdef double* xb
    cdef const double* lp
    if inner == 1:
        for p in range(outer):
            w = lam[p]
            if w != 0.0:
                xb = x_bar + p * n
                for q in range(n):
                    xb[q] = xb[q] + w
        return
    for p in range(outer):
        lp = lam + p * inner
        for q in range(n):
            xb = x_bar + (p * n + q) * inner
            for s in range(inner):
                if lp[s] != 0.0:
                    xb[s] = xb[s] + lp[s]


cdef void reduce_tangent(Tape t, i64 i, double* T) noexcept nogil:
    """SUM: ż = Σ_q ẋ_q, summed pairwise (on the values, SUM's forward kernel);  PROD: ż = Σ_l ẋ_l
    Π_{m≠l} x_m;  AMAX, AMIN: ż = ẋ of the selected element (the first maximum,
    minimum or NaN, as the reverse kernel). A zero ẋ_l contributes nothing."""
    cdef int o = t.op[i]
    cdef const ReduceP* P = <const ReduceP*>t.params(i)
    cdef const double* x = _x(t, i)
    cdef const double* tx = T + t.off[t.a[i]]
    cdef double* tz = T + t.off[i]
    cdef i64 p, q, s, base, zeros, zpos, n = P.n, inner = P.inner
    cdef double v, w, nz
    if o == SUM and n < 8 and P.outer * inner > 1:
        _short_sums(tx, tz, P.outer, n, inner)
        return
    for p in range(P.outer):
        for s in range(inner):
            base = p * n * inner + s
            v = 0.0
            if o == SUM:
                v = _pairwise_sum_threaded(tx + base, n, inner)
            elif o == PROD:
                zeros = _prod_zeros(x + base, n, inner, &zpos, &nz)
                if zeros == 0:
                    for q in range(n):
                        w = tx[base + q * inner]
                        if w != 0.0:
                            v += w * (nz / x[base + q * inner])
                elif zeros == 1 and tx[base + zpos * inner] != 0.0:
                    v = tx[base + zpos * inner] * nz
            else:
                v = tx[base + _argbest(o, x + base, n, inner) * inner]
            tz[p * inner + s] = v


cdef void reduce_forward(Tape t, i64 i) noexcept nogil:
    """z[p, t] = ⊕_q x[p, q, t] for ⊕ in (sum, prod, max, min)."""
    cdef int o = t.op[i]
    cdef const ReduceP* P = <const ReduceP*>t.params(i)
    cdef const double* x = _x(t, i)
    cdef double* z = t.val + t.off[i]
    cdef i64 p, q, s, base, n = P.n, inner = P.inner
    cdef double v
    if o == SUM:
        reduce_tangent(t, i, t.val)     # linear: its tangent kernel on the values
        return
    for p in range(P.outer):
        for s in range(inner):
            base = p * n * inner + s
            if o == PROD:
                v = 1.0
                for q in range(n):
                    v *= x[base + q * inner]
                z[p * inner + s] = v
            else:
                z[p * inner + s] = x[base + _argbest(o, x + base, n, inner) * inner]


cdef void _add_w(double* x, double w, i64 n) noexcept nogil:
    """x[q] += w for q < n, threaded from 2·PAR_MIN elements (each element alone)."""
    cdef i64 piece = _ew_piece(n), c, lo, q
    if piece == 0:
        for q in range(n):
            x[q] += w
        return
    for c in prange((n + piece - 1) // piece, num_threads=_ew_team(n, piece),
                    schedule="dynamic"):
        lo = c * piece
        for q in range(lo, min(lo + piece, n)):
            x[q] += w


cdef void reduce_reverse(Tape t, i64 i) noexcept nogil:
    """x̄[p, q, t] += ∂z[p, t]/∂x[p, q, t] · λ[p, t]."""
    cdef int o = t.op[i]
    cdef const ReduceP* P = <const ReduceP*>t.params(i)
    cdef const double* x = _x(t, i)
    cdef double* x_bar = _x_bar(t, i)
    cdef const double* lam = t.adj + t.off[i]
    cdef i64 p, q, s, base, zeros, zpos, n = P.n, inner = P.inner
    cdef double w, nz
    if o == SUM:        # ∂z/∂x = 1: each multiplier added to its row
        if P.outer * inner > 1:
            _sum_rows_reverse(x_bar, lam, P.outer, n, inner)
        elif P.outer * inner == 1 and lam[0] != 0.0:
            _add_w(x_bar, lam[0], n)        # one sum of all: threaded when long
        return
    for p in range(P.outer):
        for s in range(inner):
            w = lam[p * inner + s]
            if w == 0.0:
                continue
            base = p * n * inner + s
            if o == PROD:
                # ∂/∂x_l = Π_{m≠l} x_m, computed without dividing by a zero
                zeros = _prod_zeros(x + base, n, inner, &zpos, &nz)
                if zeros == 0:
                    for q in range(n):
                        x_bar[base + q * inner] += w * (nz / x[base + q * inner])
                elif zeros == 1:
                    x_bar[base + zpos * inner] += w * nz
            else:
                x_bar[base + _argbest(o, x + base, n, inner) * inner] += w


def reduce(int o, Var x not None, i64 outer, i64 n, i64 inner, tuple shape):
    """Reduce x viewed as (outer, n, inner) over its middle axis: SUM, PROD, AMAX, AMIN."""
    cdef Tape t = x.tape
    cdef i64 i = t.push(o, x.node, -1, outer * inner, 4)
    cdef ReduceP* p = <ReduceP*>t.params(i)
    p.outer = outer
    p.n = n
    p.inner = inner
    return _recorded(t, i, shape, outer * inner)


# -- DOT: z = Σ_j x_j y_j ---------------------------------------------------------

ctypedef struct DotP:
    i64 size            # 1
    i64 n               # the vectors' length


cdef void dot_forward(Tape t, i64 i) noexcept nogil:
    cdef const DotP* p = <const DotP*>t.params(i)
    cdef const double* x = _x(t, i)
    cdef const double* y = t.val + t.off[t.b[i]]
    cdef double s = 0.0
    cdef i64 j
    for j in range(p.n):
        s += x[j] * y[j]
    t.val[t.off[i]] = s


cdef void dot_reverse(Tape t, i64 i) noexcept nogil:
    """x̄ += λ y,  ȳ += λ x."""
    cdef const DotP* p = <const DotP*>t.params(i)
    cdef const double* x = _x(t, i)
    cdef const double* y = t.val + t.off[t.b[i]]
    cdef double* x_bar = _x_bar(t, i)
    cdef double* y_bar = t.adj + t.off[t.b[i]]
    cdef double w = t.adj[t.off[i]]
    cdef i64 j
    for j in range(p.n):
        x_bar[j] += w * y[j]
        y_bar[j] += w * x[j]


cdef void dot_tangent(Tape t, i64 i, double* T) noexcept nogil:
    """ż = ẋ·y + x·ẏ (a zero tangent contributes nothing)."""
    cdef const DotP* p = <const DotP*>t.params(i)
    cdef const double* x = _x(t, i)
    cdef const double* y = t.val + t.off[t.b[i]]
    cdef const double* tx = T + t.off[t.a[i]]
    cdef const double* ty = T + t.off[t.b[i]]
    cdef double s = 0.0
    cdef i64 j
    for j in range(p.n):
        s += (tx[j] * y[j] if tx[j] != 0.0 else 0.0) + (x[j] * ty[j] if ty[j] != 0.0 else 0.0)
    T[t.off[i]] = s


def dot1(Var x not None, Var y not None):
    """Σ_j x_j y_j of two vectors of equal length (checked by the caller)."""
    cdef Tape t = x.tape
    cdef i64 i = t.push(DOT, x.node, y.node, 1, 2)
    (<DotP*>t.params(i)).n = x.size
    return _recorded(t, i, SCALAR, 1)


# -- WHERE: z[j] = cond[j] ? x[j] : y[j] ------------------------------------------

ctypedef struct WhereP:
    i64 size
    i64 cond            # node id of the condition (a constant of the node's shape)


cdef void where_tangent(Tape t, i64 i, double* T) noexcept nogil:
    """ż[j] = cond[j] ? ẋ[j] : ẏ[j], selected by the cond node's values: linear in x
    and y, so on the values it is the forward kernel."""
    cdef const WhereP* p = <const WhereP*>t.params(i)
    cdef const double* tx = T + t.off[t.a[i]]
    cdef const double* ty = T + t.off[t.b[i]]
    cdef const double* cond = t.val + t.off[p.cond]
    cdef double* tz = T + t.off[i]
    cdef i64 j, sx = t.size_of(t.a[i]) != 1, sy = t.size_of(t.b[i]) != 1
    for j in range(p.size):
        tz[j] = tx[j * sx] if cond[j] != 0.0 else ty[j * sy]


cdef void where_forward(Tape t, i64 i) noexcept nogil:
    where_tangent(t, i, t.val)


cdef void where_reverse(Tape t, i64 i) noexcept nogil:
    """λ reaches only the branch that was selected."""
    cdef const WhereP* p = <const WhereP*>t.params(i)
    cdef double* x_bar = _x_bar(t, i)
    cdef double* y_bar = t.adj + t.off[t.b[i]]
    cdef const double* cond = t.val + t.off[p.cond]
    cdef const double* lam = t.adj + t.off[i]
    cdef i64 j, sx = t.size_of(t.a[i]) != 1, sy = t.size_of(t.b[i]) != 1
    for j in range(p.size):
        if cond[j] != 0.0:
            x_bar[j * sx] += lam[j]
        else:
            y_bar[j * sy] += lam[j]


def where(Var cond not None, Var x not None, Var y not None, tuple shape):
    """cond ? x : y elementwise; cond a constant node of `shape`, x and y of `shape` or
    size 1."""
    cdef Tape t = x.tape
    cdef i64 size = _prod(shape)
    cdef i64 i = t.push(WHERE, x.node, y.node, size, 2)
    (<WhereP*>t.params(i)).cond = cond.node
    return _recorded(t, i, shape, size)


# -- CONCAT: parts (each (outer, len_p, inner)) side by side along the middle axis -

ctypedef struct ConcatPart:
    i64 node            # node id of the part
    i64 start           # its first position on the joined axis
    i64 length          # its length on the joined axis

ctypedef struct ConcatP:
    i64 size
    i64 outer
    i64 inner
    i64 total           # the joined axis' length
    i64 nparts
    ConcatPart parts[1]     # nparts entries


cdef void concat_tangent(Tape t, i64 i, double* T) noexcept nogil:
    """Each part's tangent copied into place; on the values, the forward kernel."""
    cdef const ConcatP* p = <const ConcatP*>t.params(i)
    cdef double* z = T + t.off[i]
    cdef const double* x
    cdef i64 q, s, ln, inner = p.inner
    for q in range(p.nparts):
        x = T + t.off[p.parts[q].node]
        ln = p.parts[q].length
        for s in range(p.outer):
            memcpy(z + (s * p.total + p.parts[q].start) * inner, x + s * ln * inner,
                   ln * inner * sizeof(double))


cdef void concat_forward(Tape t, i64 i) noexcept nogil:
    concat_tangent(t, i, t.val)


cdef void concat_reverse(Tape t, i64 i) noexcept nogil:
    """Each part's adjoint += its slice of λ."""
    cdef const ConcatP* p = <const ConcatP*>t.params(i)
    cdef const double* lam = t.adj + t.off[i]
    cdef double* x_bar
    cdef i64 q, s, j, ln, inner = p.inner
    for q in range(p.nparts):
        x_bar = t.adj + t.off[p.parts[q].node]
        ln = p.parts[q].length
        for s in range(p.outer):
            for j in range(ln * inner):
                x_bar[s * ln * inner + j] += lam[(s * p.total + p.parts[q].start) * inner + j]


def concat(list parts, i64 outer, i64 inner, list lengths, tuple shape):
    """Parts (each viewed as (outer, len_p, inner)) laid side by side along the middle axis."""
    cdef Var first = parts[0]
    cdef Tape t = first.tape
    cdef i64 size = _prod(shape), q, start = 0
    cdef i64 nparts = len(parts)
    cdef i64 i = t.push(CONCAT, first.node, -1, size, 5 + 3 * nparts)
    cdef ConcatP* p = <ConcatP*>t.params(i)
    p.outer = outer
    p.inner = inner
    p.total = sum(lengths)
    p.nparts = nparts
    for q in range(nparts):
        p.parts[q].node = (<Var>parts[q]).node
        p.parts[q].start = start
        p.parts[q].length = lengths[q]
        start += lengths[q]
    return _recorded(t, i, shape, size)


# -- CUMSUM, CUMPROD: z[p, q, t] = ⊕_{r ≤ q} x[p, r, t] -----------------------------

ctypedef struct CumulativeP:
    i64 size            # outer · n · inner
    i64 outer
    i64 n               # the accumulated axis
    i64 inner


cdef void cumulative_tangent(Tape t, i64 i, double* T) noexcept nogil:
    """CUMSUM: ż[q] = ż[q-1] + ẋ[q] (on the values, CUMSUM's forward kernel).
    CUMPROD: ż[q] = ż[q-1] x[q] + z[q-1] ẋ[q], exact where x has zeros (no division);
    a zero tangent contributes nothing."""
    cdef const CumulativeP* P = <const CumulativeP*>t.params(i)
    cdef const double* x = _x(t, i)
    cdef const double* z = t.val + t.off[i]
    cdef const double* tx = T + t.off[t.a[i]]
    cdef double* tz = T + t.off[i]
    cdef bint prod = t.op[i] == CUMPROD
    cdef i64 p, q, s, j, n = P.n, inner = P.inner
    cdef double acc, w
    for p in range(P.outer):
        for s in range(inner):
            acc = 0.0
            for q in range(n):
                j = (p * n + q) * inner + s
                if prod:
                    w = tx[j]
                    acc = ((acc * x[j] if acc != 0.0 else 0.0)
                           + ((z[j - inner] if q > 0 else 1.0) * w if w != 0.0 else 0.0))
                else:
                    acc = acc + tx[j]
                tz[j] = acc


cdef void cumulative_forward(Tape t, i64 i) noexcept nogil:
    """z[q] = z[q-1] ⊕ x[q] along the axis, ⊕ = + (CUMSUM) or × (CUMPROD)."""
    cdef const CumulativeP* P = <const CumulativeP*>t.params(i)
    cdef const double* x = _x(t, i)
    cdef double* z = t.val + t.off[i]
    cdef i64 p, q, s, j, n = P.n, inner = P.inner
    cdef double acc
    if t.op[i] == CUMSUM:
        cumulative_tangent(t, i, t.val)     # linear: its tangent kernel on the values
        return
    for p in range(P.outer):
        for s in range(inner):
            acc = 1.0
            for q in range(n):
                j = (p * n + q) * inner + s
                acc = acc * x[j]
                z[j] = acc


cdef void cumulative_reverse(Tape t, i64 i) noexcept nogil:
    """CUMSUM: x̄[q] += Σ_{r≥q} λ[r].  CUMPROD: x̄[q] += z[q-1] S[q] with
    S[q] = λ[q] + x[q+1] S[q+1] (Horner from the end), i.e. Σ_{r≥q} λ[r] ∂z[r]/∂x[q]
    without dividing by x (exact where x has zeros); a zero S contributes nothing."""
    cdef const CumulativeP* P = <const CumulativeP*>t.params(i)
    cdef const double* x = _x(t, i)
    cdef const double* z = t.val + t.off[i]
    cdef const double* lam = t.adj + t.off[i]
    cdef double* x_bar = _x_bar(t, i)
    cdef bint prod = t.op[i] == CUMPROD
    cdef i64 p, q, s, j, n = P.n, inner = P.inner
    cdef double S
    for p in range(P.outer):
        for s in range(inner):
            S = 0.0
            q = n - 1
            while q >= 0:
                j = (p * n + q) * inner + s
                if prod:
                    S = lam[j] + (x[j + inner] * S if S != 0.0 else 0.0)
                    if S != 0.0:
                        x_bar[j] += (z[j - inner] if q > 0 else 1.0) * S
                else:
                    S += lam[j]
                    x_bar[j] += S
                q -= 1


def cumulative(int o, Var x not None, i64 outer, i64 n, i64 inner, tuple shape):
    """CUMSUM or CUMPROD of x viewed as (outer, n, inner) along its middle axis."""
    cdef Tape t = x.tape
    cdef i64 i = t.push(o, x.node, -1, outer * n * inner, 4)
    cdef CumulativeP* p = <CumulativeP*>t.params(i)
    p.outer = outer
    p.n = n
    p.inner = inner
    return _recorded(t, i, shape, outer * n * inner)
