# cython: language_level=3
"""Compiled functions: a recorded tape replayed on new inputs.

A trace is a tape pruned to the nodes that reach the output (plus the inputs and
the operands of branch guards), with its input and output node ids. A call
writes the new inputs into the value arena and runs the compiled sweeps; nothing
is re-recorded and no user Python runs. Branch guards (comparisons made on tape
values while recording) are re-checked after each forward sweep: a violated guard
re-records the function on the new inputs (bounded) or raises BranchChanged.

A tape of scalars whose nodes can be reordered into long runs of one opcode is
grouped (see _grouped), so that the sweeps dispatch once per run, not per node. An
output stacked from scalars (``ft.stack`` of a loop's results, concatenations of
such) does not take the tape out of the scalar layout: the trace holds the output as
its elements' scalar nodes (Trace.outs), not as the one array node that assembles
them (see _make_trace).

Forward mode: ``jvp`` runs the tangent sweep after the forward sweep (and the guard
check) on the same clone; ``jacobian`` runs it in vector mode, up to 64 directions
a sweep, or one reverse sweep per output element.

Second order: on a trace in the scalar layout whose ops all have second partials,
``hvp`` runs the tangent sweep, then one reverse sweep that carries the adjoints'
tangents with the ops' second partials (Schedule.hvp_reverse run by run, or
Tape.hvp_sweep), and ``hessian`` the same in vector mode; any other trace goes
through the compiled gradient (f's tape with its reverse sweep recorded after it).

Concurrency: every trace keeps a pool of tape clones. A call takes a clone (or
makes one), runs the sweeps on it without the GIL, and puts it back, so calls
from several Python threads never share a value arena. Batched calls run one
clone per worker thread.
"""
cimport cython
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.float cimport PyFloat_Check, PyFloat_AS_DOUBLE
from libc.string cimport memcpy, memset
from libc.stdint cimport uint8_t

from libc.math cimport fabs, signbit, INFINITY
from fastape._ops cimport (INPUT, CONSTANT, GATHER1, GATHER, STRIDED, BROADCAST, CONCAT, COPY,
                           SUM, TANH, LT, LE, GT, GE, EQ,
                           ISNAN, ISINF, ISFINITE, SIGNBIT, has_k, has_second_partials,
                           is_binary, is_elementwise, is_leaf, b_kind, B_NODE,
                           node_param_count, node_param_pos)
from fastape._tape cimport (Tape, Var, i64, i32, read_slot, elementwise_forward,
                            elementwise_reverse, elementwise_tangent, run_forward,
                            run_reverse, run_forward_tangent, run_forward_tangent_chain,
                            run_tangents, run_hvp_reverse, _pairwise_sum)

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastape import _nesting
from fastape._tree import (complex_mismatch, conjugate, describe, difference, flatten,
                           normalize_argnums, unflatten)
from fastape.errors import BranchChanged, NoTangentRule, ShapeError, TapeError


# ---------------------------------------------------------------------------
# pruning: the nodes that reach the output
# ---------------------------------------------------------------------------

cdef inline bint _element_slice(Tape src, const uint8_t* whole, i64 j) noexcept:
    """Is node j a slice (STRIDED) of an array input, both read only element by element
    (whole: _prune's marks)? Pruning then drops it, its readers' elements becoming the
    input's own scalar inputs."""
    return (src.op[j] == STRIDED and not whole[j] and src.op[src.a[j]] == INPUT and
            not whole[src.a[j]] and src.size_of(src.a[j]) > 1)


cdef Tape _prune(Tape src, list roots, set inputs, i64[::1] remap):
    """A new tape holding the nodes of `src` that reach `roots`, in tape order;
    remap[i] is node i's id in it (-1 if dropped).

    An array input read only element by element (``x[i]``: GATHER1 nodes) becomes
    consecutive scalar inputs and its GATHER1 nodes disappear, so a scalar loop
    over an array replays on the scalar layout; its values stay contiguous, so
    writing the input remains one copy. So does an input read through slices
    (STRIDED nodes) that are themselves read only element by element
    (``u = z[2*N:]`` then ``u[k]``): the slice disappears too, its elements' GATHER1
    nodes becoming the input's own elements."""
    cdef i64 n = src.n, i, j, k, q, base, parent, blk
    cdef int o
    cdef i64* P
    cdef uint8_t* live = <uint8_t*>PyMem_Malloc(n if n else 1)
    cdef uint8_t* whole = <uint8_t*>PyMem_Malloc(n if n else 1)   # used as an array
    cdef Tape dst = Tape()
    if live == NULL or whole == NULL:
        PyMem_Free(live)
        PyMem_Free(whole)
        raise MemoryError()
    try:
        memset(live, 0, n)
        memset(whole, 0, n)
        for r in roots:
            live[<i64>r] = 1
            if <i64>r not in inputs:
                whole[<i64>r] = 1
        # every node id a node holds, generically: a, b when it is a node, and the
        # node-id fields of its parameters (registry.py declares them)
        for i in range(n - 1, -1, -1):
            o = src.op[i]
            if not live[i] or is_leaf(o):
                continue
            live[src.a[i]] = 1
            # a slice of an input read only element by element (its readers, all
            # later, are known by now) leaves the input to be read element by element
            if o != GATHER1 and not (o == STRIDED and not whole[i] and
                                     src.op[src.a[i]] == INPUT):
                whole[src.a[i]] = 1
            if b_kind(o) == B_NODE and src.b[i] >= 0:
                live[src.b[i]] = 1
                whole[src.b[i]] = 1
            if src.off != NULL and src.poff[i] >= 0:
                # (poff, not nparams_of: that scans ahead for the next struct)
                P = src.params(i)
                for q in range(node_param_count(o, P)):
                    parent = P[node_param_pos(o, P, q)]
                    live[parent] = 1
                    whole[parent] = 1
        dst.need_work(src.work_len)
        blk = src.blk_base if src.blk_n and src.off == NULL and live[src.blk_base] else -1
        for i in range(n):
            if blk >= 0 and blk < i <= blk + src.blk_n:
                # an element of the block: the scalar inputs pushed for its head
                remap[i] = remap[blk] + (i - blk - 1)
                continue
            if not live[i]:
                remap[i] = -1
                continue
            o = src.op[i]
            if i == blk:
                # an element block (an array input whose x[i] are its element nodes):
                # one scalar input per element, consecutive, as below
                base = dst.n
                for k in range(src.blk_n):
                    j = dst.push(INPUT, -1, -1, 1, 0)
                    dst.value_ptr(j)[0] = src.val[blk + 1 + k]
                remap[i] = base
            elif o == INPUT and not whole[i] and src.size_of(i) > 1:
                # scalarise: one scalar input per element, consecutive
                base = dst.n
                for k in range(src.size_of(i)):
                    j = dst.push(INPUT, -1, -1, 1, 0)
                    dst.value_ptr(j)[0] = src.value_ptr(i)[k]
                remap[i] = base
            elif o == GATHER1 and src.op[src.a[i]] == INPUT and not whole[src.a[i]] and \
                    src.size_of(src.a[i]) > 1:
                remap[i] = remap[src.a[i]] + <i64>src.pool[src.b[i]]
            elif _element_slice(src, whole, i):
                remap[i] = -1               # read through its elements only (below)
            elif o == GATHER1 and _element_slice(src, whole, src.a[i]):
                P = src.params(src.a[i])        # StridedP: size, start, step
                remap[i] = remap[src.a[src.a[i]]] + P[1] + P[2] * <i64>src.pool[src.b[i]]
            else:
                remap[i] = dst.copy_node(src, i, &remap[0])
    finally:
        PyMem_Free(live)
        PyMem_Free(whole)
    dst.close()
    return dst


# ---------------------------------------------------------------------------
# the schedule of a grouped tape: runs of one opcode
# ---------------------------------------------------------------------------

# Grouping: a scalar tape recorded from a loop interleaves its ops (square, sub,
# square, mul, add, ... once per iteration), so the sweep dispatches on every node.
# Nodes at the same depth never depend on each other, so ordering the nodes by
# (depth, opcode) is still a valid tape order, and it gathers each iteration's k-th
# op into one long run that the sweeps take through that op's own loop. Every node
# computes exactly what it did; only the order in which the reverse sweep adds a
# node's contributions into its parents' adjoints changes (rounding only).
cdef i64 MIN_MEAN_RUN = 8       # group only when runs average at least this many nodes

cdef enum:
    RUN_AFFINE = 1
    RUN_SX = 2
    RUN_SY = 4
    RUN_CHAIN = 8       # not affine; every node after the first reads the one before it


cdef i64 _stride(const i32* p, i64 lo, i64 hi) noexcept:
    """s in {0, 1} if p[i] = p[lo] + s·(i - lo) for i in lo..hi-1, else -1."""
    cdef i64 i, s = 1 if hi - lo < 2 else p[lo + 1] - p[lo]
    if s != 0 and s != 1:
        return -1
    for i in range(lo + 1, hi):
        if p[i] != p[lo] + s * (i - lo):
            return -1
    return s


@cython.final
cdef class Schedule:
    """The run table of a grouped tape (closed, scalar layout): nodes
    runs[r]..runs[r+1]-1 share one opcode and the sweeps take each run through that
    op's own loop. kind[r] is RUN_AFFINE when the run's parents are contiguous (or
    one node) and lie before the run: an elementwise array op in disguise.

    The grouped reverse sweep zeroes each adjoint it consumes, so after a sweep only
    the leaves' (nodes 0..nleaf-1) can be nonzero: that is all a clear needs."""
    cdef i32* runs
    cdef uint8_t* kind
    cdef i64 nruns
    cdef i64 nleaf

    def __dealloc__(self):
        PyMem_Free(self.runs)
        PyMem_Free(self.kind)

    cdef uint8_t _run_kind(self, Tape t, i64 lo, i64 hi) noexcept:
        """RUN_AFFINE (with RUN_SX, RUN_SY for strides 1) when the run lo..hi-1 reads
        its parents at a[i] = a[lo] + sx·(i - lo), b[i] = b[lo] + sy·(i - lo) with
        strides 0 or 1, and every node parent lies before the run: then it is the
        elementwise op on two arena slices, run by the vectorised array loops. Else
        RUN_CHAIN when every node after the first reads its first operand from the node
        just before it (s = s + t), which the tangent sweep runs by a loop of its own."""
        cdef int o = t.op[lo]
        cdef i64 sx = _stride(t.a, lo, hi), sy = _stride(t.b, lo, hi)
        # TANH stays a gather run: its array loop is not libm's tanh, and a grouped
        # tape must reproduce the recorded values bit for bit
        cdef i64 i
        if is_leaf(o):
            return 0
        if o == TANH or sx < 0 or sy < 0 or t.a[lo] + sx * (hi - 1 - lo) >= lo or \
                (not has_k(o) and t.b[lo] + sy * (hi - 1 - lo) >= lo):
            for i in range(lo + 1, hi):
                if t.a[i] != i - 1:
                    return 0
            return RUN_CHAIN if hi - lo > 1 else 0
        return RUN_AFFINE | (RUN_SX if sx else 0) | (RUN_SY if sy else 0)

    cdef void forward(self, Tape t) noexcept nogil:
        """The forward sweep, run by run."""
        self._forward(t, False)

    cdef void reverse(self, Tape t, i64 top) noexcept nogil:
        """The reverse sweep from node `top` down to node 0, run by run; each non-leaf
        adjoint is zeroed once it has been passed on."""
        cdef i64 r = self.nruns - 1, lo, hi
        cdef int o
        cdef uint8_t kd
        while r >= 0:
            lo = self.runs[r]
            hi = min(self.runs[r + 1], top + 1)
            o = t.op[lo]
            r -= 1
            if lo >= hi or is_leaf(o):
                continue
            kd = self.kind[r + 1]
            if kd & RUN_AFFINE and hi == self.runs[r + 2]:
                elementwise_reverse(o, t.val + t.a[lo], kd & RUN_SX != 0,
                                    (t.pool if has_k(o) else t.val) + t.b[lo],
                                    kd & RUN_SY != 0, t.val + lo, t.adj + lo,
                                    t.adj + t.a[lo],
                                    t.adj + t.b[lo] if is_binary(o) else NULL, hi - lo)
                memset(t.adj + lo, 0, (hi - lo) * sizeof(double))   # consumed
            else:
                run_reverse(o, t.val, t.adj, t.pool, t.a, t.b, lo, hi)

    cdef void forward_tangent(self, Tape t) noexcept nogil:
        """The forward and tangent sweeps (one direction: t.tan indexed like t.val) in
        one pass, run by run: an affine run is the elementwise forward, then tangent,
        kernel on arena slices (cache-hot); any other run the fused run loop, which
        carries a chain's value and tangent side by side. The values come out bit for
        bit as forward's. (One array kernel computing value and tangent in one pass was
        measured on the loop Rosenbrock, n = 10 000: no gain, jvp/value 2.53-2.60x
        either way; these runs move twice the memory of the value's and are bound by it.)"""
        self._forward(t, True)

    cdef void _forward(self, Tape t, bint tangent) noexcept nogil:
        """forward (tangent False) or forward_tangent (True)."""
        cdef i64 r, lo, hi
        cdef int o
        cdef uint8_t kd
        for r in range(self.nruns):
            lo = self.runs[r]
            hi = self.runs[r + 1]
            o = t.op[lo]
            if is_leaf(o):
                continue
            kd = self.kind[r]
            if kd & RUN_AFFINE:
                elementwise_forward(o, t.val + t.a[lo], kd & RUN_SX != 0,
                                    (t.pool if has_k(o) else t.val) + t.b[lo],
                                    kd & RUN_SY != 0, t.val + lo, hi - lo)
                if tangent:
                    elementwise_tangent(o, t.val + t.a[lo], kd & RUN_SX != 0,
                                        (t.pool if has_k(o) else t.val) + t.b[lo],
                                        kd & RUN_SY != 0, t.val + lo, t.tan + t.a[lo],
                                        t.tan + t.b[lo] if is_binary(o) else NULL,
                                        t.tan + lo, hi - lo, 1, 0)
            elif tangent and kd & RUN_CHAIN:
                run_forward_tangent_chain(o, t.val, t.tan, t.pool, t.a, t.b, lo, hi)
            elif tangent:
                run_forward_tangent(o, t.val, t.tan, t.pool, t.a, t.b, lo, hi)
            else:
                run_forward(o, t.val, t.pool, t.a, t.b, lo, hi)

    cdef void tangents(self, Tape t, i64 p) noexcept nogil:
        """The tangent sweep in p > 1 directions after the forward sweep, run by run
        (run_tangents: partials once a node, every direction written). Every node's
        support is then all p directions (Tape.tspan stays valid for the node-by-node
        sweeps)."""
        cdef i64 r, lo, i
        cdef int o
        for r in range(self.nruns):
            lo = self.runs[r]
            o = t.op[lo]
            if not is_leaf(o):
                run_tangents(o, t.val, t.tan, t.pool, t.a, t.b, lo, self.runs[r + 1], p)
        for i in range(t.n):
            t.tspan[2 * i] = 0
            t.tspan[2 * i + 1] = <i32>p

    cdef void hvp_reverse(self, Tape t, i64 top) noexcept nogil:
        """Forward over reverse (one direction, after forward_tangent) from node `top`
        down to node 0, run by run: λ and λ̇ together, each run through its op's own
        loop (run_hvp_reverse), each non-leaf λ and λ̇ zeroed once passed on."""
        cdef i64 r = self.nruns - 1, lo, hi
        cdef int o
        while r >= 0:
            lo = self.runs[r]
            hi = min(self.runs[r + 1], top + 1)
            o = t.op[lo]
            r -= 1
            if lo < hi and not is_leaf(o):
                run_hvp_reverse(o, t.val, t.adj, t.tan, t.tan_adj, t.pool, t.a, t.b, lo, hi)

    cdef void clear(self, Tape t) noexcept nogil:
        memset(t.adj, 0, self.nleaf * sizeof(double))

    cdef void clear_adjoint_tangents(self, Tape t) noexcept nogil:
        memset(t.tan_adj, 0, self.nleaf * t.ntan_adj * sizeof(double))


cdef Schedule _schedule(Tape t):
    """The run table of closed scalar-layout tape t: each maximal run of consecutive
    nodes with one opcode."""
    cdef Schedule s = Schedule.__new__(Schedule)
    cdef i64 i, r = 0, n = t.n
    for i in range(n):
        r += i == 0 or t.op[i] != t.op[i - 1]
    s.runs = <i32*>PyMem_Malloc((r + 1) * sizeof(i32))
    s.kind = <uint8_t*>PyMem_Malloc(r if r else 1)
    if s.runs == NULL or s.kind == NULL:
        raise MemoryError()
    r = 0
    for i in range(n):
        if i == 0 or t.op[i] != t.op[i - 1]:
            s.runs[r] = <i32>i
            r += 1
    s.runs[r] = <i32>n
    s.nruns = r
    for r in range(s.nruns):
        s.kind[r] = s._run_kind(t, s.runs[r], s.runs[r + 1])
    s.nleaf = 0
    for i in range(n):
        if is_leaf(t.op[i]):
            s.nleaf = i + 1
    return s


cdef Tape _grouped(Tape src, i64[::1] newid):
    """src (closed, scalar layout) reordered by (depth, opcode, position), newid[i]
    the new id of node i; or None when the runs would stay short."""
    cdef i64 n = src.n, i, j, lv, runs = 0
    cdef int o
    if not src.scalar_layout or n == 0:
        return None
    depth = np.zeros(n, dtype=np.int64)
    cdef i64[::1] dv = depth
    for i in range(n):
        o = src.op[i]
        if o == GATHER1:
            return None
        if not is_leaf(o):
            lv = dv[src.a[i]]
            if b_kind(o) == B_NODE and dv[src.b[i]] > lv:
                lv = dv[src.b[i]]
            dv[i] = lv + 1
    key = depth * 256 + np.frombuffer(<uint8_t[:n]>src.op, dtype=np.uint8)
    order = np.argsort(key, kind="stable")
    cdef i64[::1] ov = order
    for j in range(n):
        runs += j == 0 or src.op[ov[j]] != src.op[ov[j - 1]]
    if runs * MIN_MEAN_RUN > n:
        return None
    for j in range(n):
        newid[ov[j]] = j
    # immediates are shared by value (bit for bit), so that a run of `100 * t` reads
    # one k: with contiguous parents the run is then an array op (see _run_kind). Each
    # source pool entry is looked up once (recording already dedupes them), so most
    # nodes touch no Python object: a dict lookup per node was most of this pass.
    cdef Tape dst = Tape()
    dst._grow_nodes(n)
    cdef dict slot = {}
    cdef double k
    # (slots are made in the grouped order, at a pool entry's first use, so that a run
    # whose immediates change per node, x * (i + 1), reads them at stride 1)
    pool_map = np.full(max(src.npool, 1), -1, dtype=np.int64)
    cdef i64[::1] pm = pool_map
    for j in range(n):
        i = ov[j]
        o = src.op[i]
        if is_leaf(o):
            dst.push(o, -1, -1, 1, 0)
        elif has_k(o):
            if pm[src.b[i]] < 0:
                k = src.pool[src.b[i]]
                bits = np.float64(k).tobytes()
                p = slot.get(bits)
                if p is None:
                    p = slot[bits] = dst.pool_add(k)
                pm[src.b[i]] = p
            dst.push(o, newid[src.a[i]], pm[src.b[i]], 1, 0)
        else:
            dst.push(o, newid[src.a[i]], newid[src.b[i]], 1, 0)
        dst.value_ptr(j)[0] = src.value_ptr(i)[0]
    dst.close()
    return dst


include "_fused.pxi"


# ---------------------------------------------------------------------------
# guards
# ---------------------------------------------------------------------------

cdef inline bint _cmp(int how, double x, double y) noexcept nogil:
    """The comparison (or predicate of x) a guard re-checks, as numpy computes it."""
    if how == ISNAN:
        return x != x
    if how == ISINF:
        return fabs(x) == INFINITY
    if how == ISFINITE:
        return fabs(x) < INFINITY
    if how == SIGNBIT:
        return signbit(x)
    if how == LT:
        return x < y
    if how == LE:
        return x <= y
    if how == GT:
        return x > y
    if how == GE:
        return x >= y
    if how == EQ:
        return x == y
    return x != y


@cython.final
cdef class Trace:
    """One recorded path through the function: a pruned tape, its schedule (None:
    not grouped) and the guards its inputs must satisfy."""
    cdef readonly Tape tape
    cdef readonly Schedule schedule
    cdef readonly Fusion fusion      # the fused runs of an array tape (None: scalar layout)
    cdef readonly list inputs        # node ids of the input leaves, flattened
    # the output: node `output`, or (outs not None) element e is scalar node outs[e] and
    # `output` is max(outs), the top of the reverse sweep. Read and seed the output only
    # through the methods below, which know both.
    cdef readonly i64 output
    cdef readonly object outs        # int64 array of out_size node ids, or None
    cdef const i64* outp             # outs' data (nouts entries; 0: no outs)
    cdef i64 nouts
    cdef readonly tuple out_shape
    cdef i64 out_size
    cdef i64 nguards
    cdef i64[::1] g_how, g_x, g_y, g_off, g_size    # g_how: a Cmp
    cdef i64[::1] g_sx, g_sy         # strides 0 (a broadcast scalar) or 1, as recorded
    cdef double[::1] g_expect
    cdef list spares                 # free working copies (the first is `tape` itself)
    cdef readonly i64 nclones
    # the tape is in the scalar layout and every node is a leaf or an elementwise op with
    # second partials: hvp and hessian run the direct forward-over-reverse sweep on it
    cdef readonly bint direct_hvp

    @property
    def run_count(self):
        """Number of runs of the grouped tape (0: not grouped)."""
        return 0 if self.schedule is None else int(self.schedule.nruns)

    @property
    def array_run_count(self):
        """How many of those runs the sweeps take as elementwise array ops."""
        cdef i64 r, c = 0
        if self.schedule is not None:
            for r in range(self.schedule.nruns):
                c += self.schedule.kind[r] & RUN_AFFINE != 0
        return int(c)

    @property
    def chain_run_count(self):
        """How many runs are chains (s = s + t: every node after the first reads the one
        before it), whose tangents the jvp sweep runs by their own loop."""
        cdef i64 r, c = 0
        if self.schedule is not None:
            for r in range(self.schedule.nruns):
                c += self.schedule.kind[r] & RUN_CHAIN != 0
        return int(c)

    cdef void forward(self, Tape t) noexcept nogil:
        if self.schedule is not None:
            self.schedule.forward(t)
        else:
            t.forward_sweep(0, t.n)

    cdef void tangent(self, Tape t, i64 p) noexcept nogil:
        """The tangent sweep in p directions (the arena prepared for them) after a forward
        sweep: the grouped order is a tape order, so the plain sweep serves every p;
        p = 1 goes run by run (recomputing the values on the way, the same bits)."""
        if self.schedule is not None and p == 1:
            self.schedule.forward_tangent(t)
        else:
            t.tangent_sweep(0, t.n, p)

    cdef void clear_adjoints(self, Tape t) noexcept nogil:
        if self.schedule is not None:
            self.schedule.clear(t)
        elif self.fusion is not None:
            self.fusion.clear(t, False, NULL)
        else:
            t.clear_adjoints()

    cdef bint lean(self, int mode) noexcept nogil:
        """Does a sweep in this mode take the fused runs (see _forward)?"""
        return mode != MODE_FULL and self.fusion is not None and self.fusion.ngroups > 0

    cdef void reverse(self, Tape t) noexcept nogil:
        self.reverse_from(t, self.output)

    cdef void reverse_from(self, Tape t, i64 top) noexcept nogil:
        """The reverse sweep from node `top` down (the multipliers above it all zero)."""
        if self.schedule is not None:
            self.schedule.reverse(t, top)
        else:
            t.reverse_sweep(top)

    # -- the output: one node, or scalar nodes outs[e] ---------------------------------

    cdef int set_outs(self, object outs) except -1:
        """Hold the output as scalar nodes outs (an int64 array, length out_size), or as
        node `output` (outs None); `output` becomes max(outs)."""
        cdef const i64[::1] ov
        self.outs = None
        self.outp = NULL
        self.nouts = 0
        if outs is not None:
            self.outs = np.array(outs, dtype=np.int64)     # (a copy: it is read-only)
            self.outs.flags.writeable = False
            ov = self.outs
            self.nouts = ov.shape[0]
            self.outp = &ov[0]
            self.output = int(self.outs.max())
        return 0

    cdef i64 element_node(self, i64 e) noexcept nogil:
        """The node holding output element e (its slot in the scalar layout)."""
        return self.outp[e] if self.nouts else self.output

    cdef object read_output(self, Tape t, double* buf):
        """The output read from `buf`, an arena indexed like the values (t.val, or t.tan
        of one direction): a float, or a new array of out_shape."""
        cdef i64 e
        cdef double[::1] dst
        if self.nouts == 0:
            return read_slot(t, buf, self.output, self.out_shape)
        arr = np.empty(self.out_shape)
        dst = arr.reshape(-1)
        for e in range(self.nouts):
            dst[e] = buf[self.outp[e]]
        return arr

    cdef void read_output_tangents(self, Tape t, double* B, i64 ldb, i64 c0,
                                   i64 nd) noexcept:
        """B[e·ldb + c0 + d] = the tangent of output element e in direction d < nd, after a
        tangent sweep in t.ntan directions (vector mode: one row of B per element)."""
        cdef i64 e, d, p = t.ntan
        cdef const double* src
        if self.nouts == 0 and t.tld != 0:     # general layout: direction-major
            for d in range(nd):
                src = t.tangent_ptr(self.output, d)
                for e in range(self.out_size):
                    B[e * ldb + c0 + d] = src[e]
            return
        for e in range(self.out_size):          # scalar layout: node-major
            src = t.tan + self.element_node(e) * p + (0 if self.nouts else e * p)
            for d in range(nd):
                B[e * ldb + c0 + d] = src[d]

    cdef void seed_output(self, Tape t, const double* ct) noexcept nogil:
        """The output's multipliers after a clear: the cotangent ct (out_size values). An
        element held by one node twice (outs repeating it) gets the sum of its seeds."""
        cdef i64 e
        if self.nouts == 0:
            if self.out_size:
                memcpy(t.adjoint_ptr(self.output), ct, self.out_size * sizeof(double))
            return
        for e in range(self.nouts):
            t.adj[self.outp[e]] += ct[e]

    cdef void seed_element(self, Tape t, i64 e, double w) noexcept nogil:
        """The multiplier of output element e after a clear: w (added to what it has
        with outs, where two elements may be one node)."""
        if self.nouts == 0:
            t.adjoint_ptr(self.output)[e] = w
        else:
            t.adj[self.outp[e]] += w

    cdef int prepare_hvp(self, Tape t, i64 p) except -1:
        """Seed the forward-over-reverse sweep (p directions): λ = 1 at the output and 0
        elsewhere, λ̇ = 0 (the arena made for p if need be)."""
        t.prepare_adjoint_tangents(p)
        self.clear_adjoints(t)
        if self.schedule is not None:
            self.schedule.clear_adjoint_tangents(t)
        else:
            memset(t.tan_adj, 0, t.nval * p * sizeof(double))
        t.adj[self.output] = 1.0
        return 0

    cdef void hvp(self, Tape t, i64 p) noexcept nogil:
        """Forward over reverse after the forward and tangent sweeps in p directions (and
        prepare_hvp): λ̇ of the inputs is then ∇²f times the tangents. A grouped tape
        in one direction goes run by run; otherwise the node-by-node sweep (the grouped
        order is a tape order)."""
        if self.schedule is not None and p == 1:
            self.schedule.hvp_reverse(t, self.output)
        else:
            t.hvp_sweep(self.output, p)

    cdef bint guards_hold(self, Tape t) noexcept nogil:
        """Do all comparisons give, on t's values, the results they gave when recorded?"""
        cdef i64 g, j, n, sx, sy
        cdef double* x
        cdef double* y
        for g in range(self.nguards):
            x = t.value_ptr(self.g_x[g])
            y = t.value_ptr(self.g_y[g])
            n = self.g_size[g]
            sx = self.g_sx[g]
            sy = self.g_sy[g]
            for j in range(n):
                if _cmp(<int>self.g_how[g], x[j * sx], y[j * sy]) != \
                        (self.g_expect[self.g_off[g] + j] != 0.0):
                    return False
        return True

    cdef Tape acquire(self):
        try:
            return self.spares.pop()
        except IndexError:
            self.nclones += 1
            return self.tape.clone()

    cdef void release(self, Tape t):
        self.spares.append(t)


cdef tuple _ASSEMBLY = (CONCAT, STRIDED, GATHER, BROADCAST, COPY, GATHER1)


cdef object _elements(Tape rec, i64 i, dict memo):
    """The scalar node of rec (size 1) behind each element of node i, an int64 array,
    when node i is assembled from scalar nodes by structural ops only (_ASSEMBLY: a stack
    or concatenation of scalars, slices and copies of those); else None. x.flat[k] of
    anything else, an input for instance, is a scalar node of its own."""
    cdef int o = rec.op[i]
    cdef i64 m = rec.size_of(i), q, j, nd, start, ln, outer, inner, total
    cdef i64* P
    cdef i64[::1] rv
    if i in memo:
        return memo[i]
    res = None
    if m == 0:
        res = np.empty(0, dtype=np.int64)
    elif o in _ASSEMBLY:
        P = rec.params(i) if rec.off != NULL and rec.poff[i] >= 0 else NULL
        if o == CONCAT:
            outer, inner, total = P[1], P[2], P[3]
            res = np.empty(m, dtype=np.int64)
            rv = res
            for q in range(P[4]):
                j = P[5 + 3 * q]
                start, ln = P[6 + 3 * q], P[7 + 3 * q]
                if m == total and rec.size_of(j) == 1 and rec.op[j] not in _ASSEMBLY:
                    rv[start] = j       # a stack of scalars: most parts, no array each
                    continue
                part = _elements(rec, j, memo)
                if part is None:
                    res = None
                    break
                res.reshape(outer, total * inner)[:, start * inner:(start + ln) * inner] = \
                    part.reshape(outer, ln * inner)
        else:
            src = _elements(rec, rec.a[i], memo)
            if src is not None:
                if o == GATHER1:
                    res = src[[<i64>rec.pool[rec.b[i]]]]
                elif o == COPY:
                    res = src if src.shape[0] == m else np.repeat(src, m)
                elif o == STRIDED:
                    res = src[P[1] + P[2] * np.arange(m, dtype=np.int64)]
                elif o == GATHER:
                    res = src[np.asarray(<i64[:m]>(P + 1))]
                else:                               # BROADCAST: x[Σ j_d stride_d]
                    nd = P[1]
                    strides = np.asarray(<i64[:nd]>(P + 2 + nd)) if nd else None
                    res = src[strides @ np.indices(tuple(np.asarray(<i64[:nd]>(P + 2))))
                              .reshape(nd, -1)] if nd else src[[0] * m]
    if res is None and m == 1:
        res = np.array([i], dtype=np.int64)     # a scalar node of its own
    memo[i] = res
    return res


cdef Trace _make_trace(Tape rec, list input_nodes, Var out, list guards):
    """The trace of recording `rec` (closed): pruned to what reaches the output and the
    guards, grouped when that makes long runs.

    An output assembled from scalar nodes (ft.stack of a loop's results, concatenations
    of such) keeps the tape in the scalar layout: it is pruned with its elements' nodes
    as roots and held as those nodes (Trace.outs), when nothing else left on the tape
    reads the assembly (a guard on the whole vector, an array op); else it stays one
    array node, and the whole tape in the general layout."""
    cdef Trace tr = Trace.__new__(Trace)
    cdef i64 i
    cdef i64[::1] remap = np.empty(max(rec.n, 1), dtype=np.int64)
    roots = list(input_nodes)
    for _how, xn, yn, _r in guards:
        roots += [xn, yn]
    elements = None
    if rec.off != NULL and out.size and rec.op[out.node] in _ASSEMBLY:
        elements = _elements(rec, out.node, {})
    tr.tape = None
    if elements is not None:
        tr.tape = _prune(rec, roots + np.unique(elements).tolist(), set(input_nodes), remap)
        if not tr.tape.scalar_layout:
            tr.tape = None
            elements = None
    if tr.tape is None:
        tr.tape = _prune(rec, roots + [out.node], set(input_nodes), remap)
    tr.schedule = None
    cdef i64[::1] newid = np.empty(max(tr.tape.n, 1), dtype=np.int64)
    grouped = _grouped(tr.tape, newid)
    if grouped is not None:
        tr.tape = grouped
        tr.schedule = _schedule(grouped)
        for i in range(rec.n):
            if remap[i] >= 0:
                remap[i] = newid[remap[i]]
    tr.tape.lean_constants = True       # no caller reads a constant's multipliers
    tr.tape.prepare_adjoints()
    tr.inputs = [remap[i] for i in input_nodes]
    tr.out_shape = out.shape
    tr.out_size = out.size
    if elements is None:
        tr.output = remap[out.node]
        tr.set_outs(None)
    elif out.size == 1:         # that node is the output
        tr.output = remap[elements[0]]
        tr.set_outs(None)
    else:
        tr.set_outs(np.asarray(remap)[elements])
    ng = len(guards)
    tr.nguards = ng
    how = np.empty(ng, np.int64)
    gx = np.empty(ng, np.int64)
    gy = np.empty(ng, np.int64)
    goff = np.empty(ng, np.int64)
    gsize = np.empty(ng, np.int64)
    # strides from the sizes when recorded: an array input read element by element
    # is scalarised by _prune into consecutive scalar inputs (one after another in the
    # value arena), which a guard on the whole array must still read element by element
    gsx = np.empty(ng, np.int64)
    gsy = np.empty(ng, np.int64)
    expect = []
    total = 0
    for k, (h, xn, yn, r) in enumerate(guards):
        r = np.asarray(r, dtype=np.float64).reshape(-1)
        sx, sy = rec.size_of(xn), rec.size_of(yn)
        if not (r.size == max(sx, sy) and sx in (1, r.size) and sy in (1, r.size)):
            raise ShapeError(f"compile: a comparison of values of sizes {sx} and {sy} "
                             "(broadcast on both sides) cannot be guarded; broadcast one "
                             "operand explicitly before comparing")
        how[k], gx[k], gy[k], goff[k], gsize[k] = h, remap[xn], remap[yn], total, r.size
        gsx[k], gsy[k] = sx != 1, sy != 1
        expect.append(r)
        total += r.size
    tr.g_how, tr.g_x, tr.g_y, tr.g_off, tr.g_size = how, gx, gy, goff, gsize
    tr.g_sx, tr.g_sy = gsx, gsy
    tr.g_expect = np.concatenate(expect) if expect else np.zeros(1)
    _finish_trace(tr)
    return tr


cdef int _finish_trace(Trace tr) except -1:
    """What a trace derives from its tape, output and guards (made or loaded): its
    fused runs, its working copies, whether hvp is direct."""
    tr.fusion = _fusion(tr.tape, tr.output, list(np.asarray(tr.g_x)[:tr.nguards]) +
                        list(np.asarray(tr.g_y)[:tr.nguards]))
    if tr.fusion is not None:
        tr.tape.need_work(tr.fusion.work)
    tr.spares = [tr.tape]
    tr.nclones = 1
    tr.direct_hvp = _direct_hvp(tr)
    return 0


cdef bint _direct_hvp(Trace tr):
    """Does hvp run the direct forward-over-reverse sweep on this trace (see Trace)?"""
    cdef i64 i
    if not (tr.tape.scalar_layout and tr.out_size == 1):
        return False
    for i in range(tr.tape.n):
        if not (is_leaf(tr.tape.op[i]) or has_second_partials(tr.tape.op[i])):
            return False
    return True


cdef i64 MAX_DIRECTIONS = 64       # directions of one vector-mode sweep


cdef inline i64 _block(i64 n) noexcept:
    """The directions per sweep for n in blocks of at most MAX_DIRECTIONS, the blocks as
    even as can be: every block then has the same p (the last one padded with zero
    seeds), so the arenas made for p are kept from block to block and call to call (a
    new p zeroes them again: a third of a 100-direction Jacobian's time with blocks of
    64 and 36)."""
    cdef i64 nblocks = (n + MAX_DIRECTIONS - 1) // MAX_DIRECTIONS
    return (n + nblocks - 1) // nblocks if n > 0 else 1


cdef i64 LEND_MIN = 4096       # elements of an input worth lending rather than copying


cdef bint _lend(Trace tr, list leaves, double** vover, double** aover, object gbuf,
                i64 grad_leaf) except -1:
    """Fill the lending tables of a lean call (see Fusion.over_of): the caller's own
    values for each lendable input given as a C-contiguous float64 array (at least
    LEND_MIN elements: below, a copy is as cheap), and gbuf (zeros, the gradient array
    the call returns) as the multipliers of input leaf grad_leaf when it is lendable.
    Returns whether gbuf was lent."""
    cdef Fusion f = tr.fusion
    cdef i64 k, q
    cdef const double[::1] cv
    cdef double[::1] mv
    for q in range(FUSE_MAX_OVER):
        vover[q] = NULL
        aover[q] = NULL
    for k in range(len(leaves)):
        q = f.over_of[<i64>tr.inputs[k]]
        if q < 0:
            continue
        x = leaves[k]
        if type(x) is _ndarray and x.dtype is _F64 and x.size >= LEND_MIN and \
                x.flags.c_contiguous:
            cv = x.reshape(-1)
            vover[q] = <double*>&cv[0]        # read only: the sweeps write no input
        if k == grad_leaf and gbuf is not None:
            mv = gbuf.reshape(-1)
            aover[q] = &mv[0]
    return grad_leaf >= 0 and gbuf is not None and f.over_of[<i64>tr.inputs[grad_leaf]] >= 0


cdef Tape _forward(Trace tr, list leaves, list diff=None, list seeds=None, int mode=MODE_FULL,
                   object gbuf=None, i64 grad_leaf=-1):
    """A working copy of tr with these inputs swept forward, and with `seeds` the
    tangents (one direction; seeds[q] for input leaf diff[q]) swept too, or None
    (released) if a guard fails. A grouped tape runs both sweeps in one pass before the
    guards are checked (on a failure the tangents are simply not used).

    mode (no tangents): MODE_FULL stores every value; MODE_LEAN takes the fused runs
    (tr.lean(mode): then only their exported values are stored, and the reverse sweep
    must be the fused one, Fusion.reverse, with the same leaves lent, _lend); MODE_VG
    also seeds the output's multiplier (a scalar output) before, so that one-pass runs
    run their reverse step in the same pass, the multipliers of input leaf grad_leaf
    accumulated in gbuf when it can be lent, and the caller finishes with
    Fusion.reverse(..., onepass_done=True)."""
    cdef Tape t = tr.acquire()
    cdef i64 k
    cdef bint ok
    cdef bint tangent = seeds is not None
    cdef bint lean = not tangent and tr.lean(mode)
    cdef bint seeded = lean and mode == MODE_VG and tr.out_size == 1
    cdef bint lent = False
    cdef int nt = 1
    cdef double* vover[FUSE_MAX_OVER]
    cdef double* aover[FUSE_MAX_OVER]
    try:
        if lean:
            lent = _lend(tr, leaves, vover, aover, gbuf if seeded else None, grad_leaf)
            nt = tr.fusion.threads(t)
        for k in range(len(leaves)):
            if not (lean and tr.fusion.over_of[<i64>tr.inputs[k]] >= 0 and
                    vover[tr.fusion.over_of[<i64>tr.inputs[k]]] != NULL):
                _write(t, tr.inputs[k], leaves[k])
        if tangent:
            _seed_tangents(tr, t, diff, seeds)
    except BaseException:
        tr.release(t)
        raise
    with nogil:
        if tangent and tr.schedule is not None:
            tr.schedule.forward_tangent(t)
        elif lean:
            if seeded:
                tr.fusion.clear(t, True, aover)
                t.adjoint_ptr(tr.output)[0] = 1.0
            tr.fusion.forward(t, seeded, vover, aover, nt)
        else:
            tr.forward(t)
        ok = tr.nguards == 0 or tr.guards_hold(t)
        if ok and tangent and tr.schedule is None:
            t.tangent_sweep(0, t.n, 1)
    if t.py_error is not None:          # a custom rule raised during the sweeps
        tr.release(t)
        t.raise_pending()
    if ok:
        return t
    if lent:        # a one-pass run of this trace added into the lent gradient
        gbuf.fill(0.0)
    tr.release(t)
    return None


# ---------------------------------------------------------------------------
# argument handling
# ---------------------------------------------------------------------------

# The structure of the arguments (pytrees, argnums) is fastape._tree's; here the leaves
# are written into a trace's value arena.

cdef object _ndarray = np.ndarray
cdef object _F64 = np.dtype(np.float64)


def _real_array(x, str op, str arg):
    """x as a float64 array, refusing what a cast would silently change (complex parts
    dropped, strings or objects parsed) as every other entry point does."""
    a = np.asarray(x)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{op}: argument '{arg}' must be real numbers, got dtype {a.dtype}"
                        + ("; fastape differentiates real float64 functions"
                           if a.dtype.kind == "c" else ""))
    return np.asarray(a, dtype=np.float64)


cdef void _tangent_io(Tape t, i64 node, i64 k, double* buf, i64 m, bint write) noexcept:
    """Copy the m tangents of a leaf (or output) node in direction k from buf (`write`)
    or to it. In the scalar layout an array input is m consecutive scalar nodes (see
    _prune), node-major with t.ntan directions; in the general layout one slot."""
    cdef i64 e, p = t.ntan
    cdef double* tz
    if t.tld == 0 and p == 1 and m:     # one direction: the m nodes' tangents are consecutive
        if write:
            memcpy(t.tan + node, buf, m * sizeof(double))
        else:
            memcpy(buf, t.tan + node, m * sizeof(double))
    elif t.tld == 0:
        for e in range(m):
            if write:
                t.tan[(node + e) * p + k] = buf[e]
            else:
                buf[e] = t.tan[(node + e) * p + k]
    elif m:
        tz = t.tangent_ptr(node, k)
        if write:
            memcpy(tz, buf, m * sizeof(double))
        else:
            memcpy(buf, tz, m * sizeof(double))


cdef int _seed_tangents(Trace tr, Tape t, list diff, list seeds) except -1:
    """One direction: input leaf diff[q] gets the tangents seeds[q] (flat float64)."""
    cdef const double[::1] src
    cdef i64 q
    t.prepare_tangents(1, True)
    for q in range(len(diff)):
        src = seeds[q]
        if src.shape[0]:
            _tangent_io(t, tr.inputs[diff[q]], 0, &src[0], src.shape[0], True)
    return 0


cdef inline int _write(Tape t, i64 node, object leaf) except -1:
    cdef const double[::1] src
    cdef i64 n
    if PyFloat_Check(leaf):
        t.value_ptr(node)[0] = PyFloat_AS_DOUBLE(leaf)
        return 0
    arr = np.ascontiguousarray(leaf, dtype=np.float64).reshape(-1)
    src = arr
    n = src.shape[0]
    if n:
        memcpy(t.value_ptr(node), &src[0], n * sizeof(double))
    return 0


# ---------------------------------------------------------------------------
# the compiled function
# ---------------------------------------------------------------------------

# not final: fastape._format subclasses it (in Python) for a function loaded with
# mmap=True, whose traces are read at its first use; the cdef methods stay direct
# calls on self, and the subclass's wrappers cost only that loaded function
cdef class Function:
    """A function recorded once and replayed on new inputs by the compiled sweeps.

    Made by :func:`fastape.compile`. ``F(*args)`` is the value; ``F.grad``,
    ``F.value_and_grad`` the gradient with respect to ``args[argnums]``;
    ``F.vjp(args, cotangent)`` a vector-Jacobian product for vector outputs;
    ``F.jvp(args, tangents)`` and ``F.jacobian`` forward mode; ``F.hvp`` and
    ``F.hessian`` second derivatives;
    ``F.grad_batch(X)`` / ``F.value_and_grad_batch(X)`` evaluate many input
    points on several threads. Arguments must have the shapes of the example
    arguments. Results never alias internal buffers.
    """
    cdef readonly object fun
    cdef readonly object argnums
    cdef bint single
    cdef tuple nums
    cdef object treedef              # of the tuple of arguments (fastape._tree)
    cdef tuple leaf_shapes           # per flattened leaf: () for numbers, else the shape
    cdef tuple arg_first             # leaves of argument i: arg_first[i] .. arg_first[i + 1]
    cdef tuple arg_is_leaf           # per argument: is it one number or array?
    cdef i64 grad_leaf               # the leaf that is the whole gradient, else -1
    cdef str where                   # "compiled <name>", for messages
    cdef bint args_are_leaves        # is every argument one number or array?
    cdef readonly list traces
    cdef readonly bint retrace
    cdef readonly int max_traces
    cdef Trace last
    cdef int nargs
    cdef object gradient_function    # compiled ∇f (flat), made by the first hvp/hessian
    cdef tuple example               # copies of the example arguments (recorded on them)
    cdef public object _sparse       # fastape.sparse's fixed patterns and colorings

    def __init__(self, fun, example_args, argnums=0, retrace=True, max_traces=8):
        leaves, treedef = flatten(tuple(example_args), "args", "compile")
        self._signature(fun, getattr(fun, '__name__', 'function'), len(example_args),
                        argnums, retrace, max_traces, treedef)
        self.last = self._trace(leaves)
        self.example = tuple(unflatten(self.treedef, [np.array(x) if type(x) is np.ndarray
                                                      else x for x in leaves]))

    cdef int _signature(self, fun, str name, int nargs, argnums, bint retrace,
                        max_traces, treedef) except -1:
        """Everything but the traces: what __init__ and a loaded file share."""
        self.fun = fun
        self.argnums = argnums
        self.where = f"compiled {name}"
        self.nargs = nargs
        self.single, self.nums = normalize_argnums(argnums, self.nargs, "compile")
        self.retrace = retrace
        if not isinstance(max_traces, int) or max_traces < 1:
            raise ValueError(f"compile: max_traces must be a positive integer, got {max_traces!r}")
        self.max_traces = max_traces
        self.traces = []
        self.treedef = treedef
        self.leaf_shapes = self.treedef.leaf_shapes
        arg_defs = self.treedef.children()
        first = [0]
        n = 0
        for d in arg_defs:      # (no first[-1]: indices do not wrap around in this build)
            n += d.num_leaves
            first.append(n)
        self.arg_first = tuple(first)
        self.arg_is_leaf = tuple(d.is_leaf for d in arg_defs)
        self.grad_leaf = first[self.nums[0]] if self.single and arg_defs[self.nums[0]].is_leaf \
            else -1
        self.args_are_leaves = all(self.arg_is_leaf)
        return 0

    @property
    def nbytes(self):
        """Bytes held by the compiled buffers: every trace's tapes (its working clones
        included, when no call is running), run tables and guards, the copy of the
        example arguments' arrays, and those of the compiled gradient once hvp or
        hessian made it. Python objects (the Function, its lists) are not counted."""
        cdef Trace tr
        cdef i64 total = 0
        for x in flatten(self.example, "args", self.where)[0]:
            if type(x) is np.ndarray:
                total += x.nbytes
        for tr in self.traces:
            for t in tr.spares:
                total += t.nbytes
            if tr.schedule is not None:
                total += (tr.schedule.nruns + 1) * sizeof(i32) + tr.schedule.nruns
            # seven int64 fields per guard, the expected results, the output's nodes
            total += 7 * tr.g_how.shape[0] * sizeof(i64) + tr.g_expect.shape[0] * sizeof(double)
            total += tr.nouts * sizeof(i64)
        if self.gradient_function is not None:
            total += self.gradient_function.nbytes
        return int(total)

    @property
    def nodes(self):
        """Number of nodes of the most recently used trace (after pruning)."""
        return len(self.last.tape)

    cdef Trace _trace(self, list leaves):
        """Record the function on these leaves and add the trace to the cache.

        One array argument is recorded as an element block (Tape._var_elements), as the
        eager transforms do: ``x[i]`` then records no node (a scalar loop's GATHER1
        nodes were a third of its tape and of the time to compile it), and _prune turns
        the block into consecutive scalar inputs. When the function also reads the array
        as a whole after an element (the head and its elements then alias one
        another's values) or guards it as a whole, it is recorded again without the
        block."""
        blocks = len(leaves) == 1 and type(leaves[0]) is np.ndarray and \
            (<object>leaves[0]).ndim >= 1
        while True:
            tr = self._record(leaves, blocks)
            if tr is not None:
                break
            blocks = False
        if len(self.traces) >= self.max_traces:
            self.traces.pop(0)
        self.traces.append(tr)
        return tr

    cdef Trace _record(self, list leaves, bint blocks):
        """One recording of the function (see _trace); None when the element block
        was read as a whole (by an op after an element, or by a guard)."""
        cdef Tape rec = Tape()
        cdef Var v
        guards = []
        rec.on_compare = lambda how, x, y, r: guards.append((how, x, y, r))
        with rec:
            inputs = [rec._var_elements(leaves[0])] if blocks else [rec.var(x) for x in leaves]
            input_nodes = [(<Var>x).node for x in inputs]
            with _nesting.recording(rec):   # transforms inside fun record on rec
                out = self.fun(*unflatten(self.treedef, inputs))
            if type(out) is not Var:
                if not (isinstance(out, (int, float, np.number)) and
                        np.asarray(out).dtype.kind in "biuf") and not (
                        isinstance(out, np.ndarray) and out.dtype.kind in "biuf"):
                    raise TypeError(f"compile: {getattr(self.fun, '__name__', 'the function')} "
                                    "must return a real scalar or array (a fastape value, "
                                    f"a number or an ndarray), got {type(out).__name__}"
                                    + ("; for a complex value return np.real(z), np.abs(z) "
                                       "or np.stack([z.real, z.imag])"
                                       if np.iscomplexobj(out) else ""))
                out = rec.constant(out)
            v = out
            if v.tape is not rec:
                raise TapeError("compile: the function returned a value of another tape")
        # the block must still be the tape's only view of the array: in the general
        # layout (a whole-array op after x[i]) the head and its elements alias one
        # another's values, and a guard on the head reads the array as a whole
        if rec.blk_n and (rec.off != NULL or any(xn == rec.blk_base or yn == rec.blk_base
                                                 for _h, xn, yn, _r in guards)):
            rec.release()
            return None
        tr = _make_trace(rec, input_nodes, v, guards)
        rec.release()
        return tr

    cdef tuple _leaves(self, tuple args):
        """(leaves, treedef) of a call's arguments, checked against the compiled ones."""
        cdef Py_ssize_t k
        # flatten's fast path (arguments that are floats and float64 arrays) taken here in
        # C first, for arguments compiled as such: the call into Python costs about 1600
        # instructions, more than a third of a compiled scalar call (4270 per F(x) without
        # this check, 2690 with it: bench_call_overhead.py --instructions). It returns
        # exactly what flatten would.
        if self.args_are_leaves and len(args) == self.nargs:
            for k in range(self.nargs):
                x = args[k]
                if type(x) is float:
                    if self.leaf_shapes[k]:
                        break
                elif not (type(x) is _ndarray and x.dtype is _F64 and
                          x.shape == self.leaf_shapes[k]):
                    break
            else:
                return list(args), self.treedef
        if len(args) != self.nargs:
            raise TypeError(f"{self.where}: expected {self.nargs} argument(s), got {len(args)}")
        leaves, td = flatten(args, "args", self.where)
        if td is not self.treedef and td != self.treedef:
            exc = TypeError if complex_mismatch(td, self.treedef) else ShapeError
            raise exc(f"{self.where}: {difference(td, self.treedef, 'args')} (called "
                      f"with {describe(td)}, compiled for {describe(self.treedef)})")
        return leaves, td

    cdef tuple _run(self, list leaves, int mode=MODE_FULL, object gbuf=None):
        """Write the inputs and run the forward sweep (in `mode`, see _forward) on a clone
        of a trace whose guards hold, re-recording if none does. Returns (trace, clone);
        the caller releases it."""
        cdef Trace tr = self.last
        cdef Tape t = _forward(tr, leaves, None, None, mode, gbuf, self.grad_leaf)
        if t is not None:
            return tr, t
        for tr in reversed(self.traces):
            if tr is not self.last:
                t = _forward(tr, leaves, None, None, mode, gbuf, self.grad_leaf)
                if t is not None:
                    self.last = tr
                    return tr, t
        if self.fun is None:
            raise BranchChanged(
                f"{self.where}: these inputs take another branch than the recorded one(s), "
                "and this function was loaded from a file without its source function: "
                "pass fun= to fastape.load to let it re-record")
        if not self.retrace:
            raise BranchChanged(
                f"compiled {getattr(self.fun, '__name__', 'function')}: these inputs take "
                "another branch than the recorded one(s); compile with retrace=True "
                "(the default) to re-record, or remove the data-dependent control flow")
        tr = self._trace(leaves)
        t = _forward(tr, leaves, None, None, mode, gbuf, self.grad_leaf)
        if t is None:
            raise BranchChanged("compiled function: a fresh recording does not reproduce its "
                                "own branches (the function is not deterministic)")
        self.last = tr
        return tr, t

    cdef object _grads(self, Trace tr, Tape t, object td):
        """The multipliers of the differentiated arguments' leaves, in the structure of
        the call's arguments (treedef td)."""
        return self._read_diff(tr, t, t.adj, td)

    cdef object _read_diff(self, Trace tr, Tape t, double* buf, object td):
        """Arena `buf` (indexed like the values) at the differentiated arguments' leaves,
        in the structure of the call's arguments (treedef td)."""
        cdef i64 k
        if self.grad_leaf >= 0:
            k = self.grad_leaf
            return read_slot(t, buf, tr.inputs[k], self.leaf_shapes[k])
        cdef list out = []
        arg_defs = None
        for i in self.nums:
            k = self.arg_first[i]
            if self.arg_is_leaf[i]:
                out.append(read_slot(t, buf, tr.inputs[k], self.leaf_shapes[k]))
                continue
            if arg_defs is None:
                arg_defs = td.children()
            # a complex argument's multipliers are ∂f/∂x, ∂f/∂y: the gradient is
            # ∂f/∂x − i ∂f/∂y (JAX's convention, fastape._complex)
            out.append(unflatten(arg_defs[i], conjugate(arg_defs[i], [
                read_slot(t, buf, tr.inputs[k], self.leaf_shapes[k])
                for k in range(self.arg_first[i], self.arg_first[i + 1])])))
        return out[0] if self.single else tuple(out)

    cdef object _reverse(self, Trace tr, Tape t, object cotangent, object td, int mode=MODE_FULL,
                         list leaves=None, object gbuf=None):
        """Seed the output's multipliers (1, or the cotangent) and run the reverse sweep
        after a forward sweep in `mode`: a lean one (tr.lean(mode)) is followed by the
        fused reverse sweep, the same leaves (and gbuf) lent; after MODE_VG the seed is
        in place and one-pass runs are done. Returns the gradient (gbuf when lent)."""
        cdef const double[::1] ct
        cdef bint lean = tr.lean(mode)
        cdef bint lent = False
        cdef double* vover[FUSE_MAX_OVER]
        cdef double* aover[FUSE_MAX_OVER]
        cdef int nt = 1
        if lean:
            lent = _lend(tr, leaves, vover, aover, gbuf if mode == MODE_VG else None,
                         self.grad_leaf)
            nt = tr.fusion.threads(t)
        if cotangent is None:
            if tr.out_size != 1:
                raise ShapeError(f"compiled {getattr(self.fun, '__name__', 'function')}: the "
                                 f"gradient needs a scalar output, got shape {tr.out_shape}; "
                                 "use F.vjp(args, cotangent)")
            if lean and mode == MODE_VG:
                with nogil:
                    tr.fusion.reverse(t, tr.output, True, vover, aover, nt)
                t.raise_pending()
                return gbuf if lent else self._grads(tr, t, td)
            if lean:
                tr.fusion.clear(t, True, NULL)
            else:
                tr.clear_adjoints(t)
            tr.seed_element(t, 0, 1.0)
        else:
            c = _real_array(cotangent, "vjp", "cotangent")
            if c.shape != tr.out_shape:
                raise ShapeError(f"vjp: the cotangent has shape {c.shape}, the output has "
                                 f"shape {tr.out_shape}")
            if lean:
                tr.fusion.clear(t, True, NULL)
            else:
                tr.clear_adjoints(t)
            ct = np.ascontiguousarray(c).reshape(-1)
            if tr.out_size:
                tr.seed_output(t, &ct[0])
        with nogil:
            if lean:
                tr.fusion.reverse(t, tr.output, False, vover, NULL, nt)
            else:
                tr.reverse(t)
        t.raise_pending()
        return self._grads(tr, t, td)

    def __call__(self, *args):
        cdef Trace tr
        cdef Tape t
        tr, t = self._run(self._leaves(args)[0], MODE_LEAN)
        try:
            return tr.read_output(t, t.val)
        finally:
            tr.release(t)

    def value_and_grad(self, *args):
        """``(f(*args), ∂f/∂args[argnums])`` by one forward and one reverse sweep (fused
        runs of an array tape by blocks, see _fused.pxi)."""
        cdef Trace tr
        cdef Tape t
        cdef Trace last = self.last
        leaves, td = self._leaves(args)
        # the gradient array, lent to the sweeps when the last trace can take it
        gbuf = None
        if self.grad_leaf >= 0 and last.lean(MODE_VG) and \
                last.fusion.over_of[<i64>last.inputs[self.grad_leaf]] >= 0:
            shape = self.leaf_shapes[self.grad_leaf]
            if shape and np.prod(shape) >= LEND_MIN:
                gbuf = np.zeros(shape)
        tr, t = self._run(leaves, MODE_VG, gbuf)
        try:
            g = self._reverse(tr, t, None, td, MODE_VG, leaves, gbuf)
            return tr.read_output(t, t.val), g
        finally:
            tr.release(t)

    def grad(self, *args):
        """∂f/∂args[argnums] (f must return a scalar)."""
        return self.value_and_grad(*args)[1]

    def vjp(self, args, cotangent):
        """``(f(*args), cotangentᵀ ∂f/∂args[argnums])`` for an output of any shape."""
        cdef Trace tr
        cdef Tape t
        if not isinstance(args, (tuple, list)):
            args = (args,)
        leaves, td = self._leaves(tuple(args))
        tr, t = self._run(leaves, MODE_LEAN)
        try:
            g = self._reverse(tr, t, cotangent, td, MODE_LEAN, leaves)
            return tr.read_output(t, t.val), g
        finally:
            tr.release(t)

    cdef int _real_arguments(self, object td, str op) except -1:
        """Refuse complex differentiated arguments where no complex convention is
        implemented (Jacobians and Hessians: use jvp/vjp, or grad of a real function)."""
        arg_defs = td.children()
        for i in self.nums:
            if arg_defs[i].imag_leaves:
                raise TypeError(f"{self.where}: {op} of a function of a complex argument "
                                f"(args[{i}]) is not supported; use jvp/vjp, or grad of a "
                                "real-valued function")
        return 0

    cdef list _diff_leaves(self):
        """The flattened leaves of args[argnums], in order."""
        return [k for i in self.nums for k in range(self.arg_first[i], self.arg_first[i + 1])]

    cdef list _tangent_leaves(self, object tangents, object td, str op="jvp"):
        """The tangents of args[argnums] (their structure: one argument's, or a tuple of
        them for tuple argnums) as flat float64 arrays, one per differentiated leaf;
        `op` names the caller in messages."""
        cdef list out = []
        cdef Py_ssize_t j
        if self.single:
            parts = (tangents,)
        else:
            if not isinstance(tangents, (tuple, list)) or len(tangents) != len(self.nums):
                raise TypeError(f"{op}: with argnums={self.argnums!r} the tangents must be a "
                                f"tuple of {len(self.nums)} (one per differentiated "
                                f"argument), got {type(tangents).__name__}")
            parts = tuple(tangents)
        if self.args_are_leaves:
            # the fast path of _leaves: float64 arrays of the arguments' shapes are taken
            # as they are (what the general path below returns for them)
            for j in range(len(self.nums)):
                x = parts[j]
                if not (type(x) is _ndarray and x.dtype is _F64 and
                        x.shape == self.leaf_shapes[self.nums[j]]):
                    out = []
                    break
                out.append(np.ascontiguousarray(x).reshape(-1))
            else:
                return out
        arg_defs = td.children()
        for j in range(len(self.nums)):
            i = self.nums[j]
            name = "tangents" if self.single else f"tangents[{j}]"
            lv, tdef = flatten(parts[j], name, op)
            if tdef != arg_defs[i]:
                exc = TypeError if complex_mismatch(tdef, arg_defs[i]) else ShapeError
                raise exc(f"{op}: {difference(tdef, arg_defs[i], name)} (the tangents "
                          f"are {describe(tdef)}, argument {i} is {describe(arg_defs[i])})")
            for leaf in lv:
                out.append(np.ascontiguousarray(_real_array(leaf, op, name)).reshape(-1))
        return out

    def jvp(self, args, tangents):
        """``(f(*args), J·tangents)``: the Jacobian-vector product by one forward and one
        tangent sweep (forward mode). ``args`` is the tuple of the call's arguments (or
        the single argument); ``tangents`` has the structure of ``args[argnums]`` (a
        tuple of such for tuple argnums). The tangent is a float or an array of the
        output's shape.

        >>> import numpy as np, fastape as ft
        >>> F = ft.compile(lambda x: np.sum(x ** 3), np.ones(2))
        >>> F.jvp(np.array([1.0, 2.0]), np.array([1.0, 0.5]))     # Σ 3 x² ẋ
        (9.0, 9.0)
        """
        cdef Trace tr
        cdef Tape t
        if not isinstance(args, (tuple, list)):
            args = (args,)
        leaves, td = self._leaves(tuple(args))
        seeds = self._tangent_leaves(tangents, td)
        diff = self._diff_leaves()
        tr = self.last
        t = _forward(tr, leaves, diff, seeds)
        if t is None:       # another branch: find or record its trace, then sweep
            tr, t = self._run(leaves)
            try:
                _seed_tangents(tr, t, diff, seeds)
                with nogil:
                    tr.tangent(t, 1)
                t.raise_pending()
            except BaseException:
                tr.release(t)
                raise
        try:
            return tr.read_output(t, t.val), tr.read_output(t, t.tan)
        finally:
            tr.release(t)

    def jacobian(self, *args, mode="auto"):
        """The Jacobian ∂f/∂args[argnums]: for an array (or number) argument an array of
        shape ``out_shape + arg_shape``, a tuple of such for tuple argnums, and for a
        pytree argument its structure with arrays of shape ``out_shape + leaf_shape``.

        ``mode="fwd"``: tangent sweeps in vector mode, one direction per differentiated
        input scalar, at most 64 directions a sweep; ``"rev"``: one reverse sweep per output
        element; ``"auto"``: fwd when the inputs are fewer than the outputs, else rev.

        >>> import numpy as np, fastape as ft
        >>> F = ft.compile(lambda x: x * x[0], np.ones(2))
        >>> F.jacobian(np.array([2.0, 3.0]))
        array([[4., 0.],
               [3., 2.]])
        """
        cdef Trace tr
        cdef Tape t
        cdef i64 nin = 0, nout, q, m, b0, d, p, g0, e, r, node
        cdef double[:, ::1] Jv
        cdef double[::1] col
        cdef double* tz
        if mode not in ("auto", "fwd", "rev"):
            raise ValueError(f"jacobian: mode must be 'auto', 'fwd' or 'rev', got {mode!r}")
        leaves, td = self._leaves(args)
        self._real_arguments(td, "jacobian")
        diff = self._diff_leaves()
        sizes = [int(np.prod(self.leaf_shapes[k], dtype=np.int64)) for k in diff]
        first = [0]
        for m in sizes:
            nin += m
            first.append(nin)
        tr, t = self._run(leaves)
        try:
            nout = tr.out_size
            if mode == "auto":
                mode = "fwd" if nin < nout else "rev"
            J = np.zeros((nout, nin))
            Jv = J
            if nin and nout and mode == "fwd":
                col = np.empty(max(nout, max(sizes)))
                p = _block(nin)
                for b0 in range(0, nin, p):
                    t.prepare_tangents(p, True)
                    for q in range(len(diff)):      # direction d seeds input scalar b0 + d
                        node = tr.inputs[diff[q]]
                        m = sizes[q]
                        g0 = first[q]
                        for d in range(p):
                            memset(&col[0], 0, m * sizeof(double))
                            if g0 <= b0 + d < g0 + m:
                                col[b0 + d - g0] = 1.0
                            _tangent_io(t, node, d, &col[0], m, True)
                    with nogil:
                        tr.tangent(t, p)
                    t.raise_pending()
                    tr.read_output_tangents(t, &Jv[0, 0], nin, b0, min(p, nin - b0))
            elif nin and nout:
                for r in range(nout):
                    tr.clear_adjoints(t)
                    tr.seed_element(t, r, 1.0)
                    with nogil:     # (the multipliers above element r's node are zero)
                        tr.reverse_from(t, tr.element_node(r))
                    t.raise_pending()
                    for q in range(len(diff)):
                        tz = t.adjoint_ptr(tr.inputs[diff[q]])
                        for e in range(sizes[q]):
                            Jv[r, first[q] + e] = tz[e]
        finally:
            tr.release(t)
        arg_defs = td.children()
        out = []
        q = 0
        for i in self.nums:
            blocks = []
            for k in range(self.arg_first[i], self.arg_first[i + 1]):
                blocks.append(J[:, first[q]:first[q + 1]].reshape(
                    tr.out_shape + self.leaf_shapes[k]).copy())
                q += 1
            out.append(blocks[0] if self.arg_is_leaf[i] else unflatten(arg_defs[i], blocks))
        return out[0] if self.single else tuple(out)

    cdef Function _gradient(self):
        """The compiled gradient of f (flattened into one vector): f's recording with
        its reverse sweep recorded after it (fastape._rules), the guards of both kept,
        recorded on the example arguments when first needed and replayed after."""
        if self.gradient_function is None:
            from fastape import _functions, api
            if self.fun is None:
                raise TapeError(f"{self.where}: this second-order path records the gradient "
                                "of the source function, and this function was loaded from "
                                "a file without it: pass fun= to fastape.load")
            self._one_argument()
            g = api.grad(self.fun, self.argnums)

            def flat_gradient(*a):
                leaves = flatten(g(*a), "gradient", self.where)[0]
                parts = [_functions.reshape(x, (-1,)) if type(x) is Var
                         else np.reshape(np.asarray(x, dtype=np.float64), (-1,))
                         for x in leaves]
                return parts[0] if len(parts) == 1 else _functions.concatenate(parts)
            flat_gradient.__name__ = f"gradient of {getattr(self.fun, '__name__', 'f')}"
            self.gradient_function = Function(flat_gradient, self.example, argnums=self.argnums,
                                              retrace=self.retrace,
                                              max_traces=self.max_traces)
        return self.gradient_function

    def hvp(self, args, v):
        """The Hessian-vector product ∇²f(args)·v (f scalar; ``v`` in the structure of
        ``args[argnums]``, ``args`` the tuple of the call's arguments or the single
        argument), forward over reverse with no Python per node. On a trace in the
        scalar layout (scalar ops only, e.g. a loop over ``x[i]``) one tangent sweep and
        one reverse sweep that carries the adjoints' tangents, with the ops' second
        partials; otherwise a tangent sweep over the compiled gradient (f's tape with its
        reverse sweep recorded after it, made on first use).

        >>> import numpy as np, fastape as ft
        >>> F = ft.compile(lambda x: x[0] ** 2 * x[1], np.ones(2))
        >>> F.hvp(np.array([1.0, 2.0]), np.array([1.0, 0.0]))    # first column of ∇²f
        array([4., 2.])
        """
        cdef Trace tr
        cdef Tape t
        if not isinstance(args, (tuple, list)):
            args = (args,)
        args = tuple(args)
        self._one_argument()
        self._real_arguments(self._leaves(args)[1], "hvp")
        if not self.last.direct_hvp:
            return self._hvp_by_gradient(args, v)
        leaves, td = self._leaves(args)
        seeds = self._tangent_leaves(v, td, "hvp")
        diff = self._diff_leaves()
        tr = self.last
        t = _forward(tr, leaves, diff, seeds)
        if t is None:       # another branch: find or record its trace
            tr, t = self._run(leaves)
            if not tr.direct_hvp:
                tr.release(t)
                return self._hvp_by_gradient(args, v)
            try:
                _seed_tangents(tr, t, diff, seeds)
                with nogil:
                    tr.tangent(t, 1)
            except BaseException:
                tr.release(t)
                raise
        try:
            tr.prepare_hvp(t, 1)
            with nogil:
                tr.hvp(t, 1)
            return self._read_diff(tr, t, t.tan_adj, td)
        finally:
            tr.release(t)

    def _hvp_by_gradient(self, args, v):
        """hvp as a tangent sweep over the compiled gradient (every op; the tests'
        reference for the direct sweep)."""
        if not isinstance(args, (tuple, list)):
            args = (args,)
        args = tuple(args)
        G = self._gradient()
        try:
            hv = G.jvp(args, v)[1]
        except NoTangentRule:
            # a custom_vjp rule has no tangents: ∇²f v = (∂∇f)ᵀ v (∇²f is symmetric),
            # one reverse sweep over the compiled gradient
            vl = flatten(v, "v", self.where)[0]
            flat = np.concatenate([np.asarray(x, dtype=np.float64).reshape(-1) for x in vl])
            return G.vjp(args, flat.reshape(G.last.out_shape))[1]
        k = self.nums[0]
        if self.arg_is_leaf[k]:
            return np.asarray(hv).reshape(self.leaf_shapes[self.arg_first[k]]) \
                if self.leaf_shapes[self.arg_first[k]] else float(np.asarray(hv).reshape(()))
        leaves, td = flatten(args[k], "args", self.where)
        out, start = [], 0
        for x in leaves:
            shape = np.shape(x)
            n = int(np.prod(shape))
            part = np.asarray(hv[start:start + n]).reshape(shape)
            out.append(part if shape else float(part))
            start += n
        return unflatten(td, out)

    cdef int _one_argument(self) except -1:
        if not self.single:
            raise NotImplementedError(f"{self.where}: hvp and hessian differentiate one "
                                      "argument: compile with an int argnums")
        return 0

    def hessian(self, *args):
        """The Hessian ∇²f of scalar f with respect to ``args[argnums]`` (a number or an
        array of shape T: an array of shape T + T): vector-mode forward over reverse, at
        most 64 directions (identity seeds) a sweep. On a trace in the scalar layout, the direct
        sweeps of :meth:`hvp` in vector mode; otherwise vector-mode tangent sweeps over
        the compiled gradient."""
        cdef Trace tr
        cdef Tape t
        cdef i64 nin, b0, p, d, r, node
        cdef double[:, ::1] Hv
        cdef double* L
        k = self.nums[0] if self.single else -1
        if k < 0 or not self.arg_is_leaf[k]:
            raise NotImplementedError(f"{self.where}: hessian is defined for one number or "
                                      "array argument; flatten a pytree argument, or use "
                                      "hvp, which takes pytrees")
        shape = self.leaf_shapes[self.arg_first[k]]
        if not self.last.direct_hvp:
            return self._hessian_by_gradient(args)
        tr, t = self._run(self._leaves(args)[0])
        if not tr.direct_hvp:
            tr.release(t)
            return self._hessian_by_gradient(args)
        nin = int(np.prod(shape, dtype=np.int64))
        H = np.empty((nin, nin))
        Hv = H
        # every block has p directions (see _block; a padding direction's support stays
        # empty, Tape.tspan, so it costs nothing)
        p = _block(nin)
        try:
            node = tr.inputs[self.arg_first[k]]       # nin consecutive scalar inputs
            for b0 in range(0, nin, p):
                t.prepare_tangents(p, True)
                for r in range(nin):    # seeds: direction d is input scalar b0 + d
                    for d in range(p):
                        t.tan[(node + r) * p + d] = 1.0 if r == b0 + d else 0.0
                tr.prepare_hvp(t, p)
                with nogil:
                    tr.tangent(t, p)
                    tr.hvp(t, p)
                L = t.tan_adj
                for r in range(nin):
                    for d in range(min(p, nin - b0)):
                        Hv[r, b0 + d] = L[(node + r) * p + d]
        finally:
            tr.release(t)
        return H.reshape(shape + shape) if shape else float(H.reshape(()))

    def _hessian_by_gradient(self, args):
        """hessian as vector-mode tangent sweeps over the compiled gradient (every op;
        the tests' reference for the direct sweeps)."""
        k = self.nums[0]
        G = self._gradient()
        shape = self.leaf_shapes[self.arg_first[k]]
        try:
            H = np.asarray(G.jacobian(*args, mode="fwd"))
        except NoTangentRule:           # a custom_vjp rule: reverse over reverse
            H = np.asarray(G.jacobian(*args, mode="rev"))
        return H.reshape(shape + shape) if shape else float(H.reshape(()))

    # -- sparse Jacobians and Hessians: fastape.sparse does the work -------------------

    def jacobian_sparsity(self):
        """The pattern of the Jacobian as a ``scipy.sparse.csr_array`` of bools, shape
        (m, n): rows the flattened output, columns the flattened ``args[argnums]`` in
        order (``F.jacobian``'s layout, flattened). Computed once from the tape by
        propagating index sets, then fixed; see :mod:`fastape.sparse`."""
        from fastape import sparse
        return sparse.jacobian_sparsity(self)

    def hessian_sparsity(self):
        """The symmetric (n, n) pattern of the Hessian (scalar output) or of the
        Lagrangian Hessian Σ vᵢ ∇²fᵢ (vector output), a ``csr_array`` of bools."""
        from fastape import sparse
        return sparse.hessian_sparsity(self)

    def sparse_jacobian(self, *args):
        """The Jacobian at ``args`` as a ``csr_array`` (m, n) with exactly the entries of
        :meth:`jacobian_sparsity` (explicit zeros kept), by vector-mode forward sweeps
        over a column coloring."""
        from fastape import sparse
        return sparse.sparse_jacobian(self, *args)

    def sparse_hessian(self, *args, v=None):
        """The (Lagrangian) Hessian at ``args`` as a symmetric ``csr_array`` (n, n), both
        triangles, with exactly the entries of :meth:`hessian_sparsity`; ``v`` weights
        the outputs (length m; required for a vector output). Vector-mode forward over
        reverse over a star coloring."""
        from fastape import sparse
        return sparse.sparse_hessian(self, *args, v=v)

    cdef list _diff_layout(self, Trace tr):
        """[(input node, size)] of the differentiated leaves on trace tr."""
        return [(tr.inputs[k], int(np.prod(self.leaf_shapes[k], dtype=np.int64)))
                for k in self._diff_leaves()]

    cdef tuple _sparse_run(self, args):
        """(trace, working copy swept forward, layout) for a call's arguments."""
        if not isinstance(args, tuple):
            args = (args,)
        tr, t = self._run(self._leaves(args)[0])
        return tr, t, self._diff_layout(tr)

    def _sparse_layout(self, args=None, Trace trace=None):
        """(trace, [(input node, size) per differentiated leaf]): of ``trace``, else of
        the trace whose guards hold for ``args`` (a tuple), else of the last one used."""
        cdef Trace tr = self.last if trace is None else trace
        cdef Tape t
        if trace is None and args is not None:
            if len(self.traces) == 1 and tr.nguards == 0:
                self._leaves(tuple(args))       # one path only: check the arguments
            else:
                tr, t, _ = self._sparse_run(tuple(args))
                tr.release(t)
        return tr, self._diff_layout(tr)

    def _compressed_reverse(self, args, colors, i64 ncolors):
        """(B, trace): B = Sᵀ J (ncolors × n), S[i, colors[i]] = 1 over the output's
        elements, by one reverse sweep per color (for functions without tangent rules:
        custom_vjp)."""
        cdef Trace tr
        cdef Tape t
        cdef i64 r, c, e, j, nout
        cdef const i64[::1] col = colors
        cdef double[:, ::1] Bv
        cdef double* lam
        tr, t, layout = self._sparse_run(args)
        try:
            nout = tr.out_size
            B = np.zeros((ncolors, sum(m for _, m in layout)))
            Bv = B
            for c in range(ncolors):
                tr.clear_adjoints(t)
                for r in range(nout):
                    if col[r] == c:
                        tr.seed_element(t, r, 1.0)
                with nogil:
                    tr.reverse(t)
                t.raise_pending()
                j = 0
                for node, m in layout:
                    lam = t.adjoint_ptr(node)
                    for e in range(m):
                        Bv[c, j + e] = lam[e]
                    j += m
            return B, tr
        finally:
            tr.release(t)

    def _gradient_function(self):
        """The compiled flat gradient of f (see _gradient)."""
        return self._gradient()

    def _compressed(self, args, colors, i64 ncolors, bint hessian, int single=False,
                    i64 read_leaf=-1):
        """(B, trace): B = J S (m × ncolors) or, hessian, ∇²f S (n × ncolors) on a trace with
        the direct forward-over-reverse sweep (None there otherwise), S the seed matrix
        S[j, colors[j]] = 1, by vector-mode sweeps of at most 64 directions, or (single)
        one sweep per color, which a grouped tape runs run by run; single == 2 (J S on a
        grouped tape): the vector-mode tangent sweep run by run (Schedule.tangents,
        without supports), else node by node. With read_leaf, the
        adjoints' tangents are read at that input leaf instead: ∂²f/∂leaf∂x S (a
        Lagrangian's weights: J S of its constraints)."""
        cdef Trace tr
        cdef Tape t
        cdef i64 nout, b0, p, d, e, node, j, c
        cdef const i64[::1] col = colors
        cdef double[:, ::1] Bv
        cdef double[::1] buf
        cdef double* tz
        tr, t, layout = self._sparse_run(args)
        try:
            if hessian and not tr.direct_hvp:
                return None, tr
            rows = layout if read_leaf < 0 else [
                (tr.inputs[read_leaf],
                 int(np.prod(self.leaf_shapes[read_leaf], dtype=np.int64)))]
            nout = sum(m for _, m in rows) if hessian else tr.out_size
            B = np.zeros((nout, ncolors))
            Bv = B
            buf = np.zeros(max(nout, max([m for _, m in layout], default=0), 1))
            p = 1 if single == 1 else _block(ncolors)
            for b0 in range(0, ncolors, p):
                t.prepare_tangents(p, True)
                j = 0
                for node, m in layout:      # direction d seeds the columns of color b0 + d
                    if t.tld == 0 and p > 1:
                        for e in range(m):  # node-major: an input's p seeds side by side
                            tz = t.tan + (node + e) * p
                            memset(tz, 0, p * sizeof(double))
                            if b0 <= col[j + e] < b0 + p:
                                tz[col[j + e] - b0] = 1.0
                    else:
                        for d in range(p):
                            for e in range(m):
                                buf[e] = 1.0 if col[j + e] == b0 + d else 0.0
                            _tangent_io(t, node, d, &buf[0], m, True)
                    j += m
                if hessian:
                    tr.prepare_hvp(t, p)
                with nogil:
                    if single == 2 and p > 1 and not hessian and tr.schedule is not None:
                        tr.schedule.tangents(t, p)
                    else:
                        tr.tangent(t, p)
                    if hessian:
                        tr.hvp(t, p)
                t.raise_pending()
                if not hessian:
                    if nout:
                        tr.read_output_tangents(t, &Bv[0, 0], ncolors, b0,
                                                min(p, ncolors - b0))
                    continue
                for d in range(min(p, ncolors - b0)):
                    c = b0 + d
                    j = 0           # scalar layout: node-major λ̇, p directions
                    for node, m in rows:
                        for e in range(m):
                            Bv[j + e, c] = t.tan_adj[(node + e) * p + d]
                        j += m
            return B, tr
        finally:
            tr.release(t)

    def value_and_grad_batch(self, X, threads=None):
        """Values and gradients at many points: row r of X is the (single) argument.
        Runs the compiled sweeps on `threads` threads (default, and at most, the usable
        cores), the GIL released, one tape clone per thread, from one pool of helper
        threads shared by the process. Returns ``(values, gradients)``."""
        return self._batch(X, threads)

    def grad_batch(self, X, threads=None):
        """Gradients at many points (rows of X); see :meth:`value_and_grad_batch`."""
        return self._batch(X, threads)[1]

    def _batch(self, X, threads):
        import os
        cdef Trace tr = self.last
        cdef i64 m, d, r
        if self.nargs != 1 or not self.arg_is_leaf[0]:
            raise TypeError("grad_batch: the function must take a single number or array "
                            "argument")
        shape = self.leaf_shapes[0]
        Xa = np.ascontiguousarray(_real_array(X, "grad_batch", "X"))
        if Xa.ndim < 1 or Xa.shape[1:] != shape:
            raise ShapeError(f"grad_batch: X must have shape (m, *{shape}), got {Xa.shape}")
        if tr.out_size != 1:
            raise ShapeError(f"grad_batch: the output must be a scalar, got {tr.out_shape}")
        m = Xa.shape[0]
        d = 1
        for s in shape:
            d *= s
        # more threads than usable cores only add working copies of the tape
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"grad_batch: threads must be a positive integer or None, got "
                             f"{threads!r}")
        nthreads = max(1, min(threads or _usable_cores(), _usable_cores(), m))
        values = np.empty(m)
        grads = np.empty((m,) + shape)
        bad = np.zeros(m, dtype=np.uint8)
        cdef const double[:, ::1] Xv = Xa.reshape(m, d)
        cdef double[:, ::1] Gv = grads.reshape(m, d)
        cdef double[::1] Vv = values
        cdef unsigned char[::1] Bv = bad
        clones = [tr.acquire() for _ in range(nthreads)]
        # Rows are handed out in small chunks from a shared counter rather than in
        # one fixed share per thread, so a thread that starts late or runs on a
        # slower (shared) core takes fewer rows instead of holding up the batch.
        # The calling thread is one of the workers.
        counter = np.zeros(8, dtype=np.int64)       # one cache line of its own
        cdef i64[::1] cv = counter
        cdef i64 chunk = max(1, min(64, m // (8 * nthreads)))
        try:
            futures = [_executor(nthreads - 1).submit(
                _batch_rows, tr, clones[k], Xv, Gv, Vv, Bv, cv, chunk)
                for k in range(1, nthreads)]
            try:
                _batch_rows(tr, clones[0], Xv, Gv, Vv, Bv, cv, chunk)
            finally:
                for fut in futures:
                    fut.result()
        finally:
            for c in clones:
                tr.release(c)
        for c in clones:
            (<Tape>c).raise_pending()
        for r in np.flatnonzero(bad):       # rows that take another branch
            v, g = self.value_and_grad(Xa[r] if shape else float(Xa[r]))
            values[r] = v
            grads[r] = g
        return values, grads

    # -- persistence (fastape._format: the file layout and its validation) ---------

    def _state(self):
        """What a file or a pickle of this function holds, for fastape._format: a dict of
        JSON-able facts, the treedef of the arguments, the example arguments' leaves and
        per trace (tape, dict of its input/output/guard fields)."""
        cdef Trace tr
        traces = []
        for tr in self.traces:
            traces.append((tr.tape, {
                "inputs": np.asarray(tr.inputs, dtype=np.int64).reshape(-1),
                "output": int(tr.output), "out_shape": list(tr.out_shape),
                "outs": None if tr.outs is None else np.array(tr.outs),
                "grouped": tr.schedule is not None,
                "g_how": np.asarray(tr.g_how), "g_x": np.asarray(tr.g_x),
                "g_y": np.asarray(tr.g_y), "g_off": np.asarray(tr.g_off),
                "g_size": np.asarray(tr.g_size), "g_sx": np.asarray(tr.g_sx),
                "g_sy": np.asarray(tr.g_sy),
                "g_expect": np.asarray(tr.g_expect)[:int(np.sum(np.asarray(tr.g_size)))]}))
        meta = {"name": self.where[len("compiled "):], "nargs": self.nargs,
                "argnums": self.argnums if isinstance(self.argnums, int)
                else list(self.argnums),
                "retrace": bool(self.retrace), "max_traces": self.max_traces,
                "last": self.traces.index(self.last)}
        return meta, self.treedef, flatten(self.example, "args", self.where)[0], traces

    @staticmethod
    def _from_state(dict meta, fun, treedef, example, list traces, Function into=None):
        """The function of :meth:`_state`'s parts (validated by fastape._format), made
        in `into` when given (a function loaded with mmap=True, at its first use)."""
        cdef Function F = Function.__new__(Function) if into is None else into
        cdef Trace tr
        argnums = meta["argnums"]
        F._signature(fun, meta["name"], meta["nargs"],
                     argnums if isinstance(argnums, int) else tuple(argnums),
                     meta["retrace"], meta["max_traces"], treedef)
        for tape, d in traces:
            tr = Trace.__new__(Trace)
            tr.tape = tape
            tr.schedule = _schedule(tape) if d["grouped"] else None
            tr.tape.lean_constants = True
            tr.tape.prepare_adjoints()
            tr.inputs = [int(x) for x in d["inputs"]]
            tr.output = d["output"]
            tr.out_shape = tuple(d["out_shape"])
            tr.set_outs(d.get("outs"))
            tr.out_size = tr.nouts if tr.nouts else tr.tape.size_of(tr.output)
            tr.nguards = d["g_how"].shape[0]
            tr.g_how, tr.g_x, tr.g_y = d["g_how"].copy(), d["g_x"].copy(), d["g_y"].copy()
            tr.g_off, tr.g_size = d["g_off"].copy(), d["g_size"].copy()
            tr.g_sx, tr.g_sy = d["g_sx"].copy(), d["g_sy"].copy()
            tr.g_expect = d["g_expect"].copy() if d["g_expect"].shape[0] else np.zeros(1)
            _finish_trace(tr)
            F.traces.append(tr)
        F.last = F.traces[meta["last"]]
        F.example = tuple(unflatten(treedef, list(example)))
        return F

    def save(self, path):
        """Write the compiled function to ``path`` (fastape's file format: a ``.npz`` of
        plain arrays, no pickle inside; read it back with :func:`fastape.load`). Every
        trace is saved with its guards and the arguments' structure; the source
        function is not (code is never saved): a loaded function re-records on a new
        branch only when it is given ``fun=``. Custom rules (custom_vjp, custom_jvp)
        are not saved either; the file names them and :func:`fastape.load` needs them
        supplied."""
        from fastape import _format
        _format.save_function(self, path)

    @property
    def rules(self):
        """The rule objects of the custom-rule (CALLBACK) nodes of every trace, in the
        order :func:`fastape.load` wants them as ``callbacks=``."""
        from fastape import _format
        return _format.function_rules(self)

    def __reduce__(self):
        from fastape import _format
        return _format.function_reduce(self)

    def __deepcopy__(self, memo):
        """An independent copy through the file format; the source function and the
        custom rules are shared (they are code), so they need not be picklable."""
        from fastape import _format
        return _format.deepcopy_function(self)

    def __copy__(self):
        return self.__deepcopy__(None)


_EXECUTOR = []


def _usable_cores():
    import os
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:          # not Linux
        return max(1, os.cpu_count() or 1)


def _executor(int nthreads):
    """The process's one pool of helper threads (the calling thread is the other
    worker), sized to the usable cores: starting threads per call cost more than a
    small batch, and one pool per thread count kept idle threads for ever."""
    if not _EXECUTOR:
        _EXECUTOR.append(ThreadPoolExecutor(max(1, _usable_cores() - 1),
                                            thread_name_prefix="fastape-batch"))
    return _EXECUTOR[0]


cdef extern from *:
    """
    static inline long long fastape_next_chunk(long long *counter, long long k) {
    #if defined(_MSC_VER)
        return _InterlockedExchangeAdd64(counter, k);
    #else
        return __atomic_fetch_add(counter, k, __ATOMIC_RELAXED);
    #endif
    }
    """
    long long fastape_next_chunk(long long* counter, long long k) noexcept nogil


def _batch_rows(Trace tr, Tape t, double[:, ::1] X, double[:, ::1] G, double[::1] V,
                unsigned char[::1] bad, i64[::1] counter, i64 chunk):
    """Take chunks of `chunk` rows from the shared counter until none are left; for
    each row write the input, forward sweep, check guards, reverse sweep. No GIL."""
    cdef i64 r, r0, r1, m = X.shape[0], d = X.shape[1], inp = tr.inputs[0]
    cdef i64 out = tr.output
    cdef double* xin = t.value_ptr(inp)
    cdef double* gin
    cdef long long* next_row = <long long*> &counter[0]
    cdef bint lean = tr.lean(MODE_VG)     # as value_and_grad: fused runs, one pass
    cdef int nthreads
    with nogil:
        # the batch is this call's parallelism: its workers' sweeps run on one thread
        # each (OpenMP's count is per thread: the caller's own is put back after)
        nthreads = fastape_max_threads()
        fastape_set_threads(1)
        while True:
            r0 = fastape_next_chunk(next_row, chunk)
            if r0 >= m:
                break
            r1 = min(r0 + chunk, m)
            for r in range(r0, r1):
                memcpy(xin, &X[r, 0], d * sizeof(double))
                if lean:
                    tr.fusion.clear(t, True, NULL)
                    t.adjoint_ptr(out)[0] = 1.0
                    tr.fusion.forward(t, True, NULL, NULL, 1)
                else:
                    tr.forward(t)
                if tr.nguards and not tr.guards_hold(t):
                    bad[r] = 1
                    continue
                V[r] = t.value_ptr(out)[0]
                if lean:
                    tr.fusion.reverse(t, out, True, NULL, NULL, 1)
                else:
                    tr.clear_adjoints(t)
                    t.adjoint_ptr(out)[0] = 1.0
                    tr.reverse(t)
                gin = t.adjoint_ptr(inp)
                memcpy(&G[r, 0], gin, d * sizeof(double))
        fastape_set_threads(nthreads)
