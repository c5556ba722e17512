# Fused, cache-blocked elementwise sweeps for compiled array tapes (included into
# _compiled.pyx; issue 14, item 2).
#
# A tape of whole-array code (general layout) materialises every intermediate: the
# Rosenbrock sum(100*(x[1:] - x[:-1]**2)**2 + (1 - x[:-1])**2) at n = 10⁶ writes ten
# arrays of 8 MB forward and reads and writes them again in reverse. A *fused run* is a
# range of consecutive nodes lo..hi-1 of one element count s that are all
#   * elementwise ops whose operands are nodes of the run, nodes before it (read at
#     the same element, or broadcast scalars) or immediates,
#   * contiguous slices (STRIDED, step 1) of a node before the run: read in place, an
#     offset into their parent's values, never copied,
#   * and, last, a full SUM of a node of the run,
# and the sweeps take it in blocks of at most `block` elements: for elements j..j+m-1
# every node of the run is computed into a block buffer (t.work, cache-resident), the
# SUM adds the block's pairwise leaves, and the reverse step runs the same block
# backwards, node by node, with the same elementwise kernels (elementwise_forward and
# elementwise_reverse take pointers and a length: a block is an offset and a length).
# A node of the run read after the run (or by a guard, or the output) is *exported*:
# its values and multipliers live in the arena as before; the others never touch it.
#
# Sweeps:
#   * forward (lean): values of the exported nodes only; the reverse step then
#     recomputes the block's values before running it backwards (one more pass of
#     arithmetic over data in cache, instead of a write and a read of memory).
#   * one pass (value_and_grad): when the run's only exported node is its SUM and that
#     is the output, the SUM's multiplier is the seed, known before the forward sweep, so
#     each block runs forward and straight back: the intermediates never leave the cache.
#
# What is exact: every value is computed by the same kernel on the same operands, and a
# SUM adds the leaves of numpy's pairwise recursion (blocks are whole leaves) and then
# combines them as that recursion does: values and sums are the unfused ones to the bit.
# Multipliers: a node of the run gets its contributions in the unfused order (readers in
# decreasing id). A parent outside the run that is reached through several slices
# with different offsets (x[1:] and x[:-1]), or a broadcast scalar read by several
# nodes of the run, receives its contributions element by element in another order
# (slices in place, blocks interleaved): rounding only, a few ulps.
#
# The zero-multiplier convention is the kernels' own (elementwise_reverse selects 0 for
# a zero multiplier whatever the partial; a SUM with a zero multiplier is skipped).
#
# Threads (issue 14, item 3; the count: _threads.pxi). A run of at least FUSE_PAR_MIN
# elements is cut into chunks of whole blocks, their number a function of its size
# alone (at most FUSE_MAX_CHUNKS, at least FUSE_CHUNK_MIN elements each), never of the
# thread count; the threads take chunks, each with its own block buffers. A block
# computes what it computes without threads, a SUM's leaves are summed per leaf and
# combined in the one pairwise order after, so values and sums are those of one thread
# to the bit, and so are the multipliers of a run whose blocks write disjoint element
# ranges. Two cases are not disjoint:
#   * a parent read through slices at different offsets (x[1:] and x[:-1]): chunk c
#     then writes `margin` elements of chunk c + 1's range. Such a reverse step runs the
#     even chunks, then the odd ones (each phase's chunks disjoint), with one thread as
#     with many: every count adds the contributions in the same order (at a chunk's
#     first `margin` elements, not the unthreaded order: rounding only, as above);
#   * a broadcast scalar operand (one multiplier for every element): its reverse step
#     stays serial, unless it is a constant, whose multipliers nobody reads: each
#     thread's kernels then add into a scratch double of its own (the sink).

include "_threads.pxi"


# Elements per block: a block's buffers (values and multipliers of the run's unexported
# nodes) should stay in L1 (48 KiB here), FUSE_CACHE bytes of them, within
# [FUSE_BLOCK / 2, 8·FUSE_BLOCK] and whole SUM leaves (at most 128). Measured on the
# whole-array Rosenbrock (7 unexported nodes: 14 buffers), n = 10⁴ to 10⁶, blocks of 256
# were the fastest; 1024 took 1.2-1.6x as long, 128 1.1-1.3x (call overhead per block).
cdef i64 FUSE_BLOCK = 256
cdef i64 FUSE_CACHE = 32768


def _set_fuse_block(i64 block, cache=None):
    """FUSE_BLOCK (at least 128, a SUM's leaf) and, if given, FUSE_CACHE for the traces
    made from now on; returns the previous pair. For measurements and tests."""
    global FUSE_BLOCK, FUSE_CACHE
    old = (FUSE_BLOCK, FUSE_CACHE)
    FUSE_BLOCK = max(128, block)
    if cache is not None:
        FUSE_CACHE = cache
    return old


cdef i64 _block_of(i64 nslots) noexcept:
    """Elements per block of a run with nslots block buffers (see FUSE_BLOCK)."""
    cdef i64 b = FUSE_CACHE // (16 * nslots) if nslots else 8 * FUSE_BLOCK
    b -= b % 128
    return min(max(b, FUSE_BLOCK // 2, 128), 8 * FUSE_BLOCK)
cdef enum:
    FUSE_MAX_MEMBERS = 64           # nodes per fused run (pointer tables on the stack)
    FUSE_MAX_OVER = 8               # inputs a call may lend (see Fusion.over_of)
    FUSE_MAX_CHUNKS = 64            # chunks of a threaded run

# Threads: runs of at least FUSE_PAR_MIN elements are chunked, in chunks of at least
# FUSE_CHUNK_MIN (see the header)
cdef i64 FUSE_PAR_MIN = 32768
cdef i64 FUSE_CHUNK_MIN = 2048


def _threads(n=None):
    """The thread count a sweep started from this thread would use (OpenMP's
    omp_get_max_threads; 1 without OpenMP or in a forked child), and with n, set it
    first (omp_set_num_threads: this thread's, as threadpoolctl sets it). For tests."""
    if n is not None:
        fastape_set_threads(n)
    return fastape_max_threads()


def _openmp():
    """Were the kernels built with OpenMP?"""
    return bool(FASTAPE_OPENMP)


def _set_fuse_chunks(i64 par_min, i64 chunk_min):
    """FUSE_PAR_MIN and FUSE_CHUNK_MIN for the traces made from now on; returns the
    previous pair. For measurements and tests."""
    global FUSE_PAR_MIN, FUSE_CHUNK_MIN
    old = (FUSE_PAR_MIN, FUSE_CHUNK_MIN)
    FUSE_PAR_MIN = par_min
    FUSE_CHUNK_MIN = max(1, chunk_min)
    return old


# FUSION: False makes new traces unfused (the tests' reference; FASTAPE_FUSION=0 in the
# environment sets it at import)
import os as _os
FUSION = _os.environ.get("FASTAPE_FUSION", "1") not in ("0", "")


# how a compiled call sweeps forward (_forward): every value stored (the paths that
# read them all after: tangents, Jacobians, sparse); lean (fused runs, then a fused
# reverse sweep or none); value-and-gradient (lean, the multipliers seeded before, so
# that one-pass runs run their reverse step too)
cdef enum:
    MODE_FULL = 0
    MODE_LEAN = 1
    MODE_VG = 2

cdef enum:
    F_EW = 0            # an elementwise op
    F_VIEW = 1          # a contiguous slice of a node before the run
    F_SUM = 2           # the full sum that ends the run

cdef enum:
    AT_SCRATCH = 0      # values and multipliers in block buffers (t.work)
    AT_ARENA = 1        # exported: its own slots of the value and multiplier arenas
    AT_PARENT = 2       # a slice read by one node of the run: its parent's slots

cdef enum:
    OP_MEMBER = 0       # a node of the run (its index in the run)
    OP_ARENA = 1        # a node before the run, stride 0 (broadcast scalar) or 1
    OP_POOL = 2         # an immediate (pool index)


ctypedef struct FOperand:
    i64 ref             # member index, node id or pool index (see where)
    i64 stride          # OP_ARENA: 0 or 1
    int where
    i64 over            # OP_ARENA: an input a call may lend (Fusion.over_of), else -1
    bint sink           # OP_ARENA: a broadcast constant: its multipliers into the sink


ctypedef struct FMember:
    i64 node
    int op
    int kind            # F_EW, F_VIEW, F_SUM
    int at              # AT_SCRATCH, AT_ARENA, AT_PARENT (F_SUM: AT_ARENA)
    i64 slot            # AT_SCRATCH: its block buffers' index
    FOperand x          # F_VIEW: x.ref is the parent node; F_SUM: the summed member
    FOperand y          # F_EW only; a unary op's y is its x (as _operand_b gives it)
    i64 start           # F_VIEW: the slice's first element in its parent


ctypedef struct FGroup:
    i64 lo, hi          # nodes lo..hi-1
    i64 size            # elements of every node but the SUM
    i64 first, count    # its members: members[first .. first + count - 1]
    i64 nslots          # block buffers (each `block` values and `block` multipliers)
    i64 block           # elements per block
    i64 leaf0, nleaves  # its SUM's pairwise leaves (leaf_len[leaf0 ..]); 0: no SUM
    bint onepass        # only the SUM is exported, and it is the output
    i64 chunk0          # its chunks (threads): chunk_j/chunk_q[chunk0 .. + nchunks]
    i64 nchunks         # 0: not chunked
    int rev_phases      # the reverse step of its chunks: 1 in any order, 2 even then odd, 0 serial


# One pass over a fused run (_group_pass), what its blocks read: plain pointers, so
# that the threads share no Python object
ctypedef struct FPass:
    const FGroup* g
    const FMember* M
    const i32* leaf_len
    double* val
    double* adj
    const i64* off
    const double* pool
    double** vover
    double** aover
    double* sums        # the SUM's leaf sums (shared: one slot per leaf)
    bint fwd, rev


# The layouts of the parameter structs of STRIDED and SUM (StridedP and ReduceP in
# _structural.pxi; tests/test_fused.py checks them on a recorded tape)
ctypedef struct _StridedP:
    i64 size
    i64 start
    i64 step

ctypedef struct _ReduceP:
    i64 size
    i64 outer
    i64 n
    i64 inner


cdef i64 _pairwise_leaves(i64 n, i32* out, i64 k) noexcept:
    """Write the lengths of the leaves of _pairwise_sum's recursion over n elements (at
    most 128 each, in order) to out[k..] (out NULL: only count); return k + their number."""
    cdef i64 m
    if n <= 128:
        if out != NULL:
            out[k] = <i32>n
        return k + 1
    m = n // 2
    m -= m % 8
    k = _pairwise_leaves(m, out, k)
    return _pairwise_leaves(n - m, out, k)


cdef double _pairwise_combine(const double* sums, i64 n, i64* k) noexcept nogil:
    """_pairwise_sum over n elements given its leaves' sums (sums[k[0]..], consumed):
    the same additions in the same order, so the same bits."""
    cdef i64 m
    cdef double left, right
    if n <= 128:
        left = sums[k[0]]
        k[0] += 1
        return left
    m = n // 2
    m -= m % 8
    left = _pairwise_combine(sums, m, k)
    right = _pairwise_combine(sums, n - m, k)
    return left + right


@cython.final
cdef class Fusion:
    """The fused runs of a compiled array tape (general layout), and which multiplier
    slots a reverse sweep reads: derived from the tape, its output and its guards when a
    trace is made or loaded (never saved).

    clear_all / clear_lean: the spans of the multiplier arena to zero before an unfused
    / a fused reverse sweep. Neither holds a constant's slots: a constant is a leaf (no
    reverse step reads its multipliers) and no caller reads them, so what the reverse
    kernels add there is never read. The lean spans also leave out the nodes of a fused
    run that are not exported, whose multipliers live in block buffers."""
    cdef FGroup* groups
    cdef i64 ngroups
    cdef FMember* members
    cdef i32* leaf_len
    cdef i32* group_of          # per node: the index of its fused run, or -1
    cdef i64* clear_all         # (offset, length) pairs
    cdef i64 nclear_all
    cdef i64* clear_lean
    cdef i64 nclear_lean
    # Inputs read by fused runs only (no other node, guard or output reads them): a
    # lean call may lend their values (the caller's array, not copied into the arena)
    # and their multipliers (the gradient array it returns, accumulated in place), one
    # pointer per input in tables indexed by over_of[node] (-1: not such an input);
    # their arena slots are left out of clear_lean (over_node, over_size: to clear
    # them when a call lends no multipliers)
    cdef i32* over_of
    cdef i64 over_node[FUSE_MAX_OVER]
    cdef readonly i64 nover
    # t.work of a sweep on nt threads: work_shared doubles (the SUM's leaf sums), then
    # work_thread per thread (block buffers and the sink); work: on one thread
    cdef readonly i64 work
    cdef i64 work_shared, work_thread
    cdef i64* chunk_j           # chunk starts: element (of the run), and leaf
    cdef i32* chunk_q
    cdef readonly i64 maxchunks

    def __dealloc__(self):
        PyMem_Free(self.groups)
        PyMem_Free(self.members)
        PyMem_Free(self.leaf_len)
        PyMem_Free(self.group_of)
        PyMem_Free(self.clear_all)
        PyMem_Free(self.clear_lean)
        PyMem_Free(self.over_of)
        PyMem_Free(self.chunk_j)
        PyMem_Free(self.chunk_q)

    cdef int threads(self, Tape t) except -1:
        """The threads of the fused runs of a sweep of t from this thread (1 when no run
        is chunked), t.work made to hold their buffers (with the GIL: it may grow)."""
        cdef int nt = 1
        if self.maxchunks >= 2:
            nt = <int>min(<i64>fastape_max_threads(), self.maxchunks)
        t.need_work(self.work_shared + nt * self.work_thread)
        return nt

    @property
    def chunks(self):
        """[(chunks, reverse phases)] of the fused runs, for tests and tools."""
        return [(int(self.groups[g].nchunks), int(self.groups[g].rev_phases))
                for g in range(self.ngroups)]

    @property
    def runs(self):
        """[(lo, hi, nodes exported, one pass, block)] of the fused runs, for tests and tools."""
        cdef i64 g, k
        out = []
        for g in range(self.ngroups):
            k = 0
            for q in range(self.groups[g].first, self.groups[g].first + self.groups[g].count):
                k += self.members[q].at == AT_ARENA
            out.append((int(self.groups[g].lo), int(self.groups[g].hi), int(k),
                        bool(self.groups[g].onepass), int(self.groups[g].block)))
        return out

    cdef void clear(self, Tape t, bint lean, double** aover) noexcept nogil:
        """Zero the multipliers a (lean: fused) reverse sweep reads (lean: those of the
        lendable inputs too, unless aover lends them)."""
        cdef i64 k
        cdef const i64* s = self.clear_lean if lean else self.clear_all
        for k in range(self.nclear_lean if lean else self.nclear_all):
            memset(t.adj + s[2 * k], 0, s[2 * k + 1] * sizeof(double))
        if lean:
            for k in range(self.nover):
                if aover == NULL or aover[k] == NULL:
                    memset(t.adj + t.off[self.over_node[k]], 0,
                           t.size_of(self.over_node[k]) * sizeof(double))

    cdef void forward(self, Tape t, bint onepass, double** vover, double** aover,
                      int nthreads) noexcept nogil:
        """The lean forward sweep: fused runs by blocks (only their exported values
        stored), every other node as the tape's sweep computes it. onepass: the
        one-pass runs also run their reverse step (the multipliers seeded first).
        vover, aover: the values and multipliers lent for the lendable inputs (NULL
        tables or entries: the arena's). nthreads: at most (Fusion.threads)."""
        cdef i64 i = 0, g
        while i < t.n:
            g = self.group_of[i]
            if g >= 0:
                _group_pass(self, t, &self.groups[g], True, onepass and self.groups[g].onepass,
                            vover, aover, nthreads)
                i = self.groups[g].hi
            else:
                t.forward_node(i)
                i += 1

    cdef void reverse(self, Tape t, i64 top, bint onepass_done, double** vover,
                      double** aover, int nthreads) noexcept nogil:
        """The reverse sweep after a lean forward sweep, from node top down: a fused run
        recomputes each block's values and runs it backwards (a one-pass run is skipped
        when onepass_done: the forward sweep ran its reverse step)."""
        cdef i64 i = top, g
        while i >= 0:
            g = self.group_of[i]
            if g >= 0:
                if not (onepass_done and self.groups[g].onepass):
                    _group_pass(self, t, &self.groups[g], False, True, vover, aover, nthreads)
                i = self.groups[g].lo - 1
            else:
                t.reverse_node(i)
                i -= 1


cdef inline double* _vbase(const FPass* P, const FOperand* p) noexcept nogil:
    """The values of external operand p: lent, or the arena's."""
    if P.vover != NULL and p.over >= 0 and P.vover[p.over] != NULL:
        return P.vover[p.over]
    return P.val + P.off[p.ref]


cdef inline double* _abase(const FPass* P, const FOperand* p) noexcept nogil:
    """The multipliers of external operand p: lent, or the arena's."""
    if P.aover != NULL and p.over >= 0 and P.aover[p.over] != NULL:
        return P.aover[p.over]
    return P.adj + P.off[p.ref]


cdef inline const double* _fval(const FPass* P, const FOperand* p, double** vp,
                                i64 j) noexcept nogil:
    if p.where == OP_MEMBER:
        return vp[p.ref]
    if p.where == OP_POOL:
        return P.pool + p.ref
    return _vbase(P, p) + j * p.stride


cdef inline double* _fadj(const FPass* P, const FOperand* p, double** ap, i64 j,
                          double* sink) noexcept nogil:
    if p.where == OP_MEMBER:
        return ap[p.ref]
    if p.where == OP_POOL:
        return NULL
    if p.sink:
        return sink
    return _abase(P, p) + j * p.stride


cdef inline i64 _fstride(const FOperand* p) noexcept nogil:
    return 1 if p.where == OP_MEMBER else (p.stride if p.where == OP_ARENA else 0)


cdef extern from *:
    """
    /* _group_pass's own loops, at the width of the kernels it calls (see
       FASTAPE_SIMD_CLONES in _elementwise.pxi; no FMA either: -ffp-contract=off) */
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
    #define FASTAPE_FUSED_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
    #else
    #define FASTAPE_FUSED_CLONES
    #endif
    static void fastape_fused_fill(double *, double, int64_t) FASTAPE_FUSED_CLONES;
    static void fastape_fused_add(double *, const double *, int64_t) FASTAPE_FUSED_CLONES;
    static void fastape_fused_add_k(double *, double, int64_t) FASTAPE_FUSED_CLONES;
    """


cdef void _fill "fastape_fused_fill"(double* x, double w, i64 m) noexcept nogil:
    """x[e] = w."""
    cdef i64 e
    for e in range(m):
        x[e] = w


cdef void _add "fastape_fused_add"(double* x, const double* y, i64 m) noexcept nogil:
    """x[e] += y[e]."""
    cdef i64 e
    for e in range(m):
        x[e] += y[e]


cdef void _add_k "fastape_fused_add_k"(double* x, double w, i64 m) noexcept nogil:
    """x[e] += w."""
    cdef i64 e
    for e in range(m):
        x[e] += w


cdef void _group_pass(Fusion f, Tape t, const FGroup* g, bint fwd, bint rev, double** vover,
                      double** aover, int nthreads) noexcept nogil:
    """Run fused run g: fwd, its forward step (exported values into the arena, the
    SUM's leaves summed); rev, its reverse step (after recomputing the block's
    unexported values when not fwd). Chunked runs (g.nchunks >= 2) go to up to
    nthreads threads (see the header). t.work: the leaf sums, then each thread's block
    buffers (Fusion.threads)."""
    cdef FPass P
    cdef i64 phases = g.rev_phases if rev else 1, k, c, n0, n1, k0, wt
    cdef int team
    cdef const i64* cj
    cdef const i32* cq
    cdef double* base
    cdef double* work
    P.g = g
    P.M = f.members + g.first
    P.leaf_len = f.leaf_len
    P.val = t.val
    P.adj = t.adj
    P.off = t.off
    P.pool = t.pool
    P.vover = vover
    P.aover = aover
    P.sums = t.work
    P.fwd = fwd
    P.rev = rev
    if g.nchunks < 2 or phases == 0 or (phases == 1 and nthreads <= 1):
        # one pass over every block (a chunked run whose chunks may go in any order:
        # the same blocks in the same order as its chunks would)
        _group_blocks(&P, 0, g.size, g.leaf0, t.work + f.work_shared)
    else:
        # even chunks (all of them when phases == 1), then the odd ones: one team, a
        # barrier between the two loops
        n0 = (g.nchunks + phases - 1) // phases
        n1 = g.nchunks - n0
        team = <int>min(<i64>nthreads, n0)
        cj = f.chunk_j + g.chunk0
        cq = f.chunk_q + g.chunk0
        base = t.work + f.work_shared
        wt = f.work_thread
        if team <= 1:
            for k in range(n0):
                _group_blocks(&P, cj[k * phases], cj[k * phases + 1], cq[k * phases], base)
            for k in range(n1):
                _group_blocks(&P, cj[2 * k + 1], cj[2 * k + 2], cq[2 * k + 1], base)
        else:
            with parallel(num_threads=team):
                work = base + threadid() * wt
                for k in prange(n0, schedule="dynamic"):
                    c = k * phases
                    _group_blocks(&P, cj[c], cj[c + 1], cq[c], work)
                for k in prange(n1, schedule="dynamic"):
                    c = 2 * k + 1
                    _group_blocks(&P, cj[c], cj[c + 1], cq[c], work)
    if fwd and g.nleaves:
        k0 = 0
        t.val[t.off[P.M[g.count - 1].node]] = _pairwise_combine(P.sums, g.size, &k0)


cdef void _group_blocks(const FPass* P, i64 j, i64 jend, i64 q, double* work) noexcept nogil:
    """The blocks of fused run P.g from element j (SUM leaf q: the first of a block) to
    jend: value buffer s at work + s·block, its multipliers nslots·block further, the
    sink after them."""
    cdef double* vp[FUSE_MAX_MEMBERS]
    cdef double* ap[FUSE_MAX_MEMBERS]
    cdef const FGroup* g = P.g
    cdef const FMember* M = P.M
    cdef const FMember* mb
    cdef i64 B = g.block, ns = g.nslots, m, k, e, qb, r
    cdef i64 qend = g.leaf0 + g.nleaves
    cdef double* sink = work + 2 * ns * B
    cdef const double* src
    cdef bint fwd = P.fwd
    while j < jend:
        qb = q
        if g.nleaves:           # whole leaves of the SUM's pairwise recursion
            m = 0
            while q < qend and m + P.leaf_len[q] <= B:
                m += P.leaf_len[q]
                q += 1
        else:
            m = min(B, jend - j)
        for k in range(g.count):
            mb = &M[k]
            if mb.kind == F_SUM:
                vp[k] = P.val + P.off[mb.node]
                ap[k] = P.adj + P.off[mb.node]
            elif mb.kind == F_VIEW and mb.at != AT_ARENA:       # read in place
                vp[k] = _vbase(P, &mb.x) + mb.start + j
                ap[k] = work + (ns + mb.slot) * B if mb.at == AT_SCRATCH else \
                    _abase(P, &mb.x) + mb.start + j
            elif mb.at == AT_SCRATCH:
                vp[k] = work + mb.slot * B
                ap[k] = work + (ns + mb.slot) * B
            else:
                vp[k] = P.val + P.off[mb.node] + j
                ap[k] = P.adj + P.off[mb.node] + j
        for k in range(g.count):
            mb = &M[k]
            if mb.kind == F_EW:
                if fwd or mb.at == AT_SCRATCH:
                    elementwise_forward(mb.op, _fval(P, &mb.x, vp, j), _fstride(&mb.x),
                                        _fval(P, &mb.y, vp, j), _fstride(&mb.y), vp[k], m)
            elif mb.kind == F_VIEW:
                if fwd and mb.at == AT_ARENA:
                    memcpy(vp[k], _vbase(P, &mb.x) + mb.start + j, m * sizeof(double))
            elif fwd:
                src = vp[mb.x.ref]
                e = 0
                for r in range(qb, q):
                    P.sums[r - g.leaf0] = _pairwise_sum(src + e, P.leaf_len[r], 1)
                    e += P.leaf_len[r]
        if P.rev:
            # the multiplier buffers (adjacent, `B` apart) zeroed in one call, up to the
            # last one's m-th element: one call instead of one per buffer (blocks of a
            # SUM's leaves are rarely full). A SUM's summand in a buffer is zeroed for
            # nothing: the SUM stores its contribution (the first and only) in it.
            if ns:
                memset(work + ns * B, 0, ((ns - 1) * B + m) * sizeof(double))
            for k in range(g.count - 1, -1, -1):
                mb = &M[k]
                if mb.kind == F_SUM and M[mb.x.ref].at == AT_SCRATCH:
                    _fill(ap[mb.x.ref], ap[k][0], m)
                elif mb.kind == F_EW:
                    elementwise_reverse(mb.op, _fval(P, &mb.x, vp, j), _fstride(&mb.x),
                                        _fval(P, &mb.y, vp, j), _fstride(&mb.y),
                                        vp[k], ap[k],
                                        _fadj(P, &mb.x, ap, j, sink),
                                        _fadj(P, &mb.y, ap, j, sink)
                                        if is_binary(mb.op) else NULL, m)
                elif mb.kind == F_SUM:
                    if ap[k][0] != 0.0:     # a zero multiplier contributes nothing
                        _add_k(ap[mb.x.ref], ap[k][0], m)
                elif mb.at != AT_PARENT:    # a slice's multipliers into its parent's
                    _add(_abase(P, &mb.x) + mb.start + j, ap[k], m)
        j += m


cdef int _member_kind(Tape t, i64 i) noexcept:
    """F_EW, F_VIEW or F_SUM if node i may join a fused run (of its size; a SUM: of its
    parent's), else -1."""
    cdef int o = t.op[i]
    cdef i64 s = t.size_of(i), sa, sb
    cdef const _StridedP* sp
    cdef const _ReduceP* rp
    if is_elementwise(o):
        if s < 2:
            return -1
        sa = t.size_of(t.a[i])
        sb = s if has_k(o) else t.size_of(t.b[i])
        return F_EW if (sa == 1 or sa == s) and (sb == 1 or sb == s) else -1
    if o == STRIDED:
        sp = <const _StridedP*>t.params(i)
        return F_VIEW if sp.step == 1 and s >= 2 else -1
    if o == SUM:
        rp = <const _ReduceP*>t.params(i)
        return F_SUM if rp.outer == 1 and rp.inner == 1 else -1
    return -1


cdef FOperand _operand(Tape t, i64 node, i64 lo, i64 size) noexcept:
    cdef FOperand p
    p.over = -1
    p.sink = False
    if node >= lo:
        p.where = OP_MEMBER
        p.ref = node - lo
        p.stride = 1
    else:
        p.where = OP_ARENA
        p.ref = node
        p.stride = t.size_of(node) != 1
        p.sink = p.stride == 0 and t.op[node] == CONSTANT
    return p


# values below which an eager tape is swept back plainly: its arenas stay in cache
# anyway, and planning the runs (a few µs) cost the small two-layer network 20 %
cdef i64 EAGER_FUSE_MIN = 16384


def _eager_backward(Tape t not None, Var out not None):
    """The reverse sweep of an eager transform's tape through its fused runs, seeded
    with λ_out = 1 (a scalar output): the multipliers of a run's inner nodes live in
    block buffers and never reach the arena, which is zeroed only where the sweep reads
    it (Fusion.clear). The values are the recorded ones (each block recomputes its own,
    in cache, as a compiled vjp does). False, with nothing done, when it does not
    apply (fusion off, the scalar layout, an element block left, no fused run)."""
    cdef Fusion f
    if (not FUSION or t.off == NULL or t.blk_n or out.tape is not t or out.size != 1
            or t.nval < EAGER_FUSE_MIN):
        return False
    f = _fusion(t, out.node, [])
    if f is None or f.ngroups == 0:
        return False
    cdef int nt = f.threads(t)
    t._enter_sweep()
    try:
        t.alloc_adjoints()
        f.clear(t, True, NULL)
        t.adjoint_ptr(out.node)[0] = 1.0
        with nogil:
            f.reverse(t, out.node, False, NULL, NULL, nt)
    finally:
        t._busy = False
    t.raise_pending()
    t.seed = out.node
    t.swept = t.n
    return True


cdef Fusion _fusion(Tape t, i64 output, list guard_nodes):
    """The fused runs and clear spans of closed general-layout tape t (None for the
    scalar layout)."""
    cdef Fusion f
    cdef i64 n = t.n, i, q, lo, s, nmem = 0, ng = 0, nleaf = 0, par
    cdef int o, kind
    cdef i64* P
    cdef FGroup* G
    cdef FMember* mb
    if t.off == NULL or n == 0:
        return None
    f = Fusion.__new__(Fusion)
    f.group_of = <i32*>PyMem_Malloc(n * sizeof(i32))
    f.groups = <FGroup*>PyMem_Malloc(n * sizeof(FGroup))
    f.members = <FMember*>PyMem_Malloc(n * sizeof(FMember))
    f.clear_all = <i64*>PyMem_Malloc(2 * n * sizeof(i64))
    f.clear_lean = <i64*>PyMem_Malloc(2 * n * sizeof(i64))
    f.over_of = <i32*>PyMem_Malloc(n * sizeof(i32))
    if f.group_of == NULL or f.groups == NULL or f.members == NULL or f.clear_all == NULL \
            or f.clear_lean == NULL or f.over_of == NULL:
        raise MemoryError()
    # references to each node: how many, and the last reader
    refs_a = np.zeros(n, dtype=np.int64)
    last_a = np.full(n, -1, dtype=np.int64)
    cdef i64[::1] refs = refs_a, last = last_a
    for i in range(n):
        o = t.op[i]
        if is_leaf(o):
            continue
        refs[t.a[i]] += 1
        last[t.a[i]] = i
        if b_kind(o) == B_NODE and t.b[i] >= 0 and (is_binary(o) or not is_elementwise(o)):
            refs[t.b[i]] += 1
            last[t.b[i]] = i
        if t.poff[i] >= 0:
            P = t.params(i)
            for q in range(node_param_count(o, P)):
                par = P[node_param_pos(o, P, q)]
                refs[par] += 1
                last[par] = i
    for x in [output] + guard_nodes:
        last[<i64>x] = n         # read after every run
    for i in range(n):
        f.group_of[i] = -1
    # the runs: maximal ranges of consecutive members of one size
    if FUSION:
        lo = -1
        s = 0
        i = 0
        while i <= n:
            kind = _member_kind(t, i) if i < n else -1
            if lo >= 0 and i - lo < FUSE_MAX_MEMBERS:
                if kind == F_EW and t.size_of(i) == s:
                    i += 1
                    continue
                if kind == F_VIEW and t.size_of(i) == s and t.a[i] < lo:
                    i += 1
                    continue
                if kind == F_SUM and t.a[i] >= lo and t.size_of(t.a[i]) == s:
                    i += 1
                    ng = _close_run(f, t, ng, lo, i, s, output, &nmem, &nleaf, refs, last)
                    lo = -1
                    continue
            if lo >= 0:
                ng = _close_run(f, t, ng, lo, i, s, output, &nmem, &nleaf, refs, last)
                lo = -1
            if kind == F_EW or kind == F_VIEW:
                lo = i
                s = t.size_of(i)
            i += 1
    f.ngroups = ng
    # the SUMs' leaves
    f.leaf_len = <i32*>PyMem_Malloc((nleaf if nleaf else 1) * sizeof(i32))
    if f.leaf_len == NULL:
        raise MemoryError()
    nleaf = 0
    f.work_shared = f.work_thread = 0
    for q in range(ng):
        G = &f.groups[q]
        G.leaf0 = nleaf
        if G.nleaves:
            nleaf = _pairwise_leaves(G.size, f.leaf_len, nleaf)
        f.work_shared = max(f.work_shared, G.nleaves)
        f.work_thread = max(f.work_thread, 2 * G.nslots * G.block + 1)     # + the sink
    f.work = f.work_shared + f.work_thread
    # the chunks of the runs that threads may share
    f.chunk_j = <i64*>PyMem_Malloc((ng * (FUSE_MAX_CHUNKS + 1) + 1) * sizeof(i64))
    f.chunk_q = <i32*>PyMem_Malloc((ng * (FUSE_MAX_CHUNKS + 1) + 1) * sizeof(i32))
    if f.chunk_j == NULL or f.chunk_q == NULL:
        raise MemoryError()
    f.maxchunks = 0
    par = 0
    for q in range(ng):
        G = &f.groups[q]
        G.chunk0 = par
        _chunk_run(f, G)
        par += G.nchunks + 1
        f.maxchunks = max(f.maxchunks, G.nchunks)
    # the inputs a call may lend: every reference to them is a fused node's operand
    mrefs_a = np.zeros(n, dtype=np.int64)
    cdef i64[::1] mrefs = mrefs_a
    for q in range(nmem):
        mb = &f.members[q]
        if mb.kind != F_SUM and mb.x.where == OP_ARENA:
            mrefs[mb.x.ref] += 1
        if mb.kind == F_EW and is_binary(mb.op) and mb.y.where == OP_ARENA:
            mrefs[mb.y.ref] += 1
    f.nover = 0
    for i in range(n):
        f.over_of[i] = -1
        if t.op[i] == INPUT and refs[i] and refs[i] == mrefs[i] and last[i] < n and \
                f.nover < FUSE_MAX_OVER:
            f.over_of[i] = <i32>f.nover
            f.over_node[f.nover] = i
            f.nover += 1
    for q in range(nmem):
        mb = &f.members[q]
        if mb.x.where == OP_ARENA:
            mb.x.over = f.over_of[mb.x.ref]
        if mb.y.where == OP_ARENA:
            mb.y.over = f.over_of[mb.y.ref]
    # the clear spans
    f.nclear_all = f.nclear_lean = 0
    for i in range(n):
        if t.op[i] == CONSTANT:
            continue
        _add_span(f.clear_all, &f.nclear_all, t.off[i], t.size_of(i))
        if f.over_of[i] >= 0:
            continue
        if f.group_of[i] >= 0:
            mb = &f.members[f.groups[f.group_of[i]].first + i - f.groups[f.group_of[i]].lo]
            if mb.at != AT_ARENA:
                continue
        _add_span(f.clear_lean, &f.nclear_lean, t.off[i], t.size_of(i))
    return f


cdef void _chunk_run(Fusion f, FGroup* G) noexcept:
    """Cut run G into chunks of whole blocks (f.chunk_j/chunk_q from G.chunk0) and set
    G.nchunks (0: not chunked) and G.rev_phases (see the header): the blocks are the
    ones _group_blocks walks from element 0, so a chunk starts where one of them does."""
    cdef i64 want, target, j = 0, start = 0, q = G.leaf0, qend = G.leaf0 + G.nleaves
    cdef i64 m, nc = 0, c0 = G.chunk0, k, r, margin = 0, shortest
    cdef const FMember* M = f.members + G.first
    cdef const FOperand* w[2 * FUSE_MAX_MEMBERS]
    cdef i64 start_of[2 * FUSE_MAX_MEMBERS]
    cdef i64 nw = 0
    cdef const FOperand* p
    G.nchunks = 0
    G.rev_phases = 0
    want = min(<i64>FUSE_MAX_CHUNKS, G.size // FUSE_CHUNK_MIN) if G.size >= FUSE_PAR_MIN else 0
    if want < 2:
        return
    target = (G.size + want - 1) // want
    f.chunk_j[c0] = 0
    f.chunk_q[c0] = <i32>q
    while j < G.size:
        if G.nleaves:
            m = 0
            while q < qend and m + f.leaf_len[q] <= G.block:
                m += f.leaf_len[q]
                q += 1
        else:
            m = min(G.block, G.size - j)
        j += m
        if j - start >= target and j < G.size:
            nc += 1
            f.chunk_j[c0 + nc] = j
            f.chunk_q[c0 + nc] = <i32>q
            start = j
    nc += 1
    f.chunk_j[c0 + nc] = G.size
    f.chunk_q[c0 + nc] = <i32>q
    if nc < 2:
        return
    G.nchunks = nc
    # the reverse step: which external multipliers it writes, at which offsets
    for k in range(G.count):
        if M[k].kind == F_VIEW:
            w[nw] = &M[k].x
            start_of[nw] = M[k].start
            nw += 1
        elif M[k].kind == F_EW:
            for r in range(2 if is_binary(M[k].op) else 1):
                p = &M[k].x if r == 0 else &M[k].y
                if p.where != OP_ARENA or p.sink:
                    continue
                if p.stride == 0:
                    return          # one multiplier for every element: serial
                w[nw] = p
                start_of[nw] = 0
                nw += 1
    for k in range(nw):
        for r in range(k):
            if w[k].ref == w[r].ref:
                margin = max(margin, abs(start_of[k] - start_of[r]))
    if margin == 0:
        G.rev_phases = 1
        return
    shortest = G.size
    for k in range(1, nc - 1):
        shortest = min(shortest, f.chunk_j[c0 + k + 1] - f.chunk_j[c0 + k])
    G.rev_phases = 2 if margin <= shortest else 0


cdef inline void _add_span(i64* spans, i64* count, i64 off, i64 size) noexcept:
    """Append [off, off + size) to the spans, merged with the last when adjacent."""
    cdef i64 c = count[0]
    if size <= 0:
        return
    if c and spans[2 * c - 2] + spans[2 * c - 1] == off:
        spans[2 * c - 1] += size
        return
    spans[2 * c] = off
    spans[2 * c + 1] = size
    count[0] = c + 1


cdef i64 _close_run(Fusion f, Tape t, i64 ng, i64 lo, i64 hi, i64 size, i64 output,
                    i64* nmem, i64* nleaf, const i64[::1] refs, const i64[::1] last) noexcept:
    """Record nodes lo..hi-1 as fused run number ng (trailing slices dropped: nothing of
    the run reads them); returns the new number of runs (ng when they do not make one:
    fewer than two nodes, or no elementwise op)."""
    cdef i64 i, ew = 0, slots = 0
    cdef int kind
    cdef FGroup* G
    cdef FMember* mb
    while hi > lo and _member_kind(t, hi - 1) == F_VIEW:
        hi -= 1
    for i in range(lo, hi):
        ew += _member_kind(t, i) == F_EW
    if hi - lo < 2 or ew == 0:
        return ng
    G = &f.groups[ng]
    G.lo = lo
    G.hi = hi
    G.size = size
    G.first = nmem[0]
    G.count = hi - lo
    G.nleaves = 0
    G.onepass = True
    for i in range(lo, hi):
        f.group_of[i] = <i32>ng
        mb = &f.members[nmem[0] + i - lo]
        kind = _member_kind(t, i)
        mb.node = i
        mb.op = t.op[i]
        mb.kind = kind
        mb.slot = -1
        mb.start = 0
        mb.x = _operand(t, t.a[i], lo, size)
        if kind == F_EW:
            if has_k(mb.op):
                mb.y.where = OP_POOL
                mb.y.ref = t.b[i]
                mb.y.stride = 0
                mb.y.over = -1
                mb.y.sink = False
            else:
                mb.y = _operand(t, t.b[i], lo, size)
        else:
            mb.y = mb.x
        if kind == F_SUM:
            mb.at = AT_ARENA
            G.nleaves = _pairwise_leaves(size, NULL, 0)
            G.onepass = G.onepass and i == output
            continue
        if last[i] >= hi:           # read after the run: exported
            mb.at = AT_ARENA
            G.onepass = False
        elif kind == F_VIEW and refs[i] == 1:
            mb.at = AT_PARENT
        else:
            mb.at = AT_SCRATCH
            mb.slot = slots
            slots += 1
        if kind == F_VIEW:
            mb.start = (<const _StridedP*>t.params(i)).start
    G.onepass = G.onepass and G.nleaves > 0
    G.nslots = slots
    G.block = _block_of(slots)
    nmem[0] += hi - lo
    nleaf[0] += G.nleaves
    return ng + 1
