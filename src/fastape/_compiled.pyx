# cython: language_level=3
"""Compiled functions: a recorded tape replayed on new inputs.

A trace is a tape pruned to the nodes that reach the output (plus the inputs and
the operands of branch guards), with its input and output node ids. A call
writes the new inputs into the value arena and runs the compiled sweeps; nothing
is re-recorded and no user Python runs. Branch guards (comparisons made on tape
values while recording) are re-checked after each forward sweep: a violated guard
re-records the function on the new inputs (bounded) or raises BranchChanged.

A tape of scalars whose nodes can be reordered into long runs of one opcode is
grouped (see _grouped), so that the sweeps dispatch once per run, not per node.

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

from fastape._ops cimport INPUT, CONSTANT, GATHER1, WHERE, CONCAT, has_k
from fastape._tape cimport Tape, Var, i64, i32, read_slot

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastape.errors import BranchChanged, ShapeError, TapeError


# ---------------------------------------------------------------------------
# tape surgery: pruning and cloning
# ---------------------------------------------------------------------------

cdef inline bint _b_is_node(int o) noexcept nogil:
    return not has_k(o) and o != GATHER1


cdef i64 _meta_len(Tape t, i64 i):
    """Number of M entries of node i (M is appended in node order)."""
    cdef i64 j
    for j in range(i + 1, t.n):
        if t.meta[j] >= 0:
            return t.meta[j] - t.meta[i]
    return t.nM - t.meta[i]


cdef Tape _prune(Tape src, list roots, set inputs, i64[::1] remap):
    """A new tape holding the nodes of `src` that reach `roots`, in tape order;
    remap[i] is node i's id in it (-1 if dropped).

    An array input read only element by element (``x[i]``: GATHER1 nodes) becomes
    consecutive scalar inputs and its GATHER1 nodes disappear, so a scalar loop
    over an array replays on the scalar layout; its values stay contiguous, so
    writing the input remains one copy."""
    cdef i64 n = src.n, i, j, m, mm, ln, p, k, base
    cdef int o
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
        for i in range(n - 1, -1, -1):
            if not live[i]:
                continue
            o = src.op[i]
            if o <= CONSTANT:
                continue
            live[src.a[i]] = 1
            if o != GATHER1:
                whole[src.a[i]] = 1
            if _b_is_node(o) and src.b[i] >= 0:
                live[src.b[i]] = 1
                whole[src.b[i]] = 1
            if src.off != NULL and src.meta[i] >= 0:
                m = src.meta[i]
                if o == WHERE:
                    live[src.M[m + 1]] = 1
                    whole[src.M[m + 1]] = 1
                elif o == CONCAT:
                    for p in range(src.M[m + 4]):
                        live[src.M[m + 5 + 3 * p]] = 1
                        whole[src.M[m + 5 + 3 * p]] = 1
        for j in range(src.npool):
            dst._pool_add(src.pool[j])
        for i in range(n):
            if not live[i]:
                remap[i] = -1
                continue
            o = src.op[i]
            if o == INPUT and not whole[i] and src.size_of(i) > 1:
                # scalarise: one scalar input per element, consecutive
                base = dst.n
                for k in range(src.size_of(i)):
                    j = dst._push(INPUT, -1, -1, 1, 0)
                    dst.value_ptr(j)[0] = src.value_ptr(i)[k]
                remap[i] = base
                continue
            if o == GATHER1 and src.op[src.a[i]] == INPUT and not whole[src.a[i]] and \
                    src.size_of(src.a[i]) > 1:
                remap[i] = remap[src.a[i]] + <i64>src.pool[src.b[i]]
                continue
            ln = _meta_len(src, i) if src.off != NULL and src.meta[i] >= 0 else 0
            j = dst._push(o, remap[src.a[i]] if src.a[i] >= 0 else -1,
                          (remap[src.b[i]] if src.b[i] >= 0 else -1) if _b_is_node(o)
                          else src.b[i], src.size_of(i), ln)
            remap[i] = j
            if ln:
                m = src.meta[i]
                mm = dst.meta[j]
                memcpy(dst.M + mm, src.M + m, ln * sizeof(i64))
                if o == WHERE:
                    dst.M[mm + 1] = remap[src.M[m + 1]]
                elif o == CONCAT:
                    for p in range(src.M[m + 4]):
                        dst.M[mm + 5 + 3 * p] = remap[src.M[m + 5 + 3 * p]]
            if o <= CONSTANT:
                memcpy(dst.value_ptr(j), src.value_ptr(i), src.size_of(i) * sizeof(double))
            else:
                dst.forward_node(j)
    finally:
        PyMem_Free(live)
        PyMem_Free(whole)
    dst._closed = True
    dst.shrink_to_fit()
    return dst


# Grouping: a scalar tape recorded from a loop interleaves its ops (square, sub,
# square, mul, add, ... once per iteration), so the sweep dispatches on every node.
# Nodes at the same depth never depend on each other, so ordering the nodes by
# (depth, opcode) is still a valid tape order, and it gathers each iteration's k-th
# op into one long run that the sweeps take through that op's own loop. Every node
# computes exactly what it did; only the order in which the reverse sweep adds a
# node's contributions into its parents' multipliers changes (rounding only).
cdef i64 MIN_MEAN_RUN = 8       # group only when runs average at least this many nodes


cdef Tape _grouped(Tape src, i64[::1] newid):
    """src (closed, scalar layout) reordered by (depth, opcode, position) with its run
    table built, newid[i] the new id of node i; or None when the runs would stay short."""
    cdef i64 n = src.n, i, j, lv, runs = 0
    cdef int o
    if src.off != NULL or n == 0:
        return None
    depth = np.zeros(n, dtype=np.int64)
    cdef i64[::1] dv = depth
    for i in range(n):
        o = src.op[i]
        if o == GATHER1:
            return None
        if o > CONSTANT:
            lv = dv[src.a[i]]
            if _b_is_node(o) and dv[src.b[i]] > lv:
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
    # one k: with contiguous parents the run is then an array op (see Tape._run_kind)
    cdef Tape dst = Tape()
    cdef dict slot = {}
    cdef double k
    for j in range(n):
        i = ov[j]
        o = src.op[i]
        if o <= CONSTANT:
            dst._push(o, -1, -1, 1, 0)
        elif has_k(o):
            k = src.pool[src.b[i]]
            bits = np.float64(k).tobytes()
            p = slot.get(bits)
            if p is None:
                p = slot[bits] = dst._pool_add(k)
            dst._push(o, newid[src.a[i]], p, 1, 0)
        else:
            dst._push(o, newid[src.a[i]], newid[src.b[i]], 1, 0)
        dst.val[j] = src.val[i]
    dst._closed = True
    dst.shrink_to_fit()
    dst.set_runs()
    return dst


cdef void* _dup(void* p, i64 nbytes) except? NULL:
    cdef void* q = PyMem_Malloc(nbytes if nbytes > 0 else 1)
    if q == NULL:
        raise MemoryError()
    if nbytes > 0:
        memcpy(q, p, nbytes)
    return q


cdef Tape _clone(Tape src):
    """An independent copy of a finished tape (its own value and multiplier arenas)."""
    cdef Tape t = Tape()
    t.op = <uint8_t*>_dup(src.op, src.n)
    t.a = <i32*>_dup(src.a, src.n * sizeof(i32))
    t.b = <i32*>_dup(src.b, src.n * sizeof(i32))
    t.n = t.cap = src.n
    t.val = <double*>_dup(src.val, src.nval * sizeof(double))
    t.nval = t.val_cap = src.nval
    t.pool = <double*>_dup(src.pool, src.npool * sizeof(double))
    t.npool = t.pool_cap = src.npool
    if src.off != NULL:
        t.off = <i64*>_dup(src.off, src.n * sizeof(i64))
        t.meta = <i64*>_dup(src.meta, src.n * sizeof(i64))
        t.M = <i64*>_dup(src.M, src.nM * sizeof(i64))
        t.nM = t.M_cap = src.nM
    if src.runs != NULL:
        t.runs = <i32*>_dup(src.runs, (src.nruns + 1) * sizeof(i32))
        t.run_kind = <uint8_t*>_dup(src.run_kind, src.nruns)
        t.nruns = src.nruns
        t.nleaf = src.nleaf
    t._closed = True
    t.prepare_adjoints()
    return t


# ---------------------------------------------------------------------------
# guards
# ---------------------------------------------------------------------------

cdef inline bint _cmp(int how, double x, double y) noexcept nogil:
    if how == 0:
        return x < y
    if how == 1:
        return x <= y
    if how == 2:
        return x > y
    if how == 3:
        return x >= y
    if how == 4:
        return x == y
    return x != y


@cython.final
cdef class Trace:
    """One recorded path through the function: a pruned tape and its guards."""
    cdef readonly Tape tape
    cdef readonly list inputs        # node ids of the input leaves, flattened
    cdef readonly i64 output
    cdef readonly tuple out_shape
    cdef i64 out_size
    cdef i64 nguards
    cdef i64[::1] g_how, g_x, g_y, g_off, g_size
    cdef double[::1] g_expect
    cdef list pool                   # free working copies (the first is `tape` itself)
    cdef readonly i64 nclones

    cdef bint guards_hold(self, Tape t) noexcept nogil:
        """Do all comparisons give, on t's values, the results they gave when recorded?"""
        cdef i64 g, j, n, sx, sy
        cdef double* x
        cdef double* y
        for g in range(self.nguards):
            x = t.value_ptr(self.g_x[g])
            y = t.value_ptr(self.g_y[g])
            n = self.g_size[g]
            sx = t.size_of(self.g_x[g]) != 1
            sy = t.size_of(self.g_y[g]) != 1
            for j in range(n):
                if _cmp(<int>self.g_how[g], x[j * sx], y[j * sy]) != \
                        (self.g_expect[self.g_off[g] + j] != 0.0):
                    return False
        return True

    cdef Tape acquire(self):
        try:
            return self.pool.pop()
        except IndexError:
            self.nclones += 1
            return _clone(self.tape)

    cdef void release(self, Tape t):
        self.pool.append(t)


cdef Trace _make_trace(Tape rec, list input_nodes, Var out, list guards):
    cdef Trace tr = Trace.__new__(Trace)
    cdef i64 i
    cdef i64[::1] remap = np.empty(max(rec.n, 1), dtype=np.int64)
    roots = list(input_nodes) + [out.node]
    for _how, xn, yn, _r in guards:
        roots += [xn, yn]
    tr.tape = _prune(rec, roots, set(input_nodes), remap)
    cdef i64[::1] newid = np.empty(max(tr.tape.n, 1), dtype=np.int64)
    grouped = _grouped(tr.tape, newid)
    if grouped is not None:
        tr.tape = grouped
        for i in range(rec.n):
            if remap[i] >= 0:
                remap[i] = newid[remap[i]]
    tr.tape.prepare_adjoints()
    tr.inputs = [remap[i] for i in input_nodes]
    tr.output = remap[out.node]
    tr.out_shape = out.shape
    tr.out_size = out.size
    ng = len(guards)
    tr.nguards = ng
    how = np.empty(ng, np.int64)
    gx = np.empty(ng, np.int64)
    gy = np.empty(ng, np.int64)
    goff = np.empty(ng, np.int64)
    gsize = np.empty(ng, np.int64)
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
        expect.append(r)
        total += r.size
    tr.g_how, tr.g_x, tr.g_y, tr.g_off, tr.g_size = how, gx, gy, goff, gsize
    tr.g_expect = np.concatenate(expect) if expect else np.zeros(1)
    tr.pool = [tr.tape]
    tr.nclones = 1
    return tr


cdef Tape _forward(Trace tr, list leaves):
    """A working copy of tr with these inputs swept forward, or None (released) if a
    guard fails."""
    cdef Tape t = tr.acquire()
    cdef i64 k
    cdef bint ok
    for k in range(len(leaves)):
        _write(t, tr.inputs[k], leaves[k])
    with nogil:
        t.forward_sweep(0, t.n)
        ok = tr.nguards == 0 or tr.guards_hold(t)
    if ok:
        return t
    tr.release(t)
    return None


# ---------------------------------------------------------------------------
# argument handling
# ---------------------------------------------------------------------------

# The structure of the arguments (pytrees, argnums) is fastape._tree's; here the leaves
# are written into a trace's value arena. (Imported here, not at the top, to keep this
# section's dependencies in this section.)
from fastape._tree import describe, difference, flatten, normalize_argnums, unflatten

cdef object _ndarray = np.ndarray
cdef object _F64 = np.dtype(np.float64)

cdef inline int _write(Tape t, i64 node, object leaf) except -1:
    cdef double[::1] src
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

@cython.final
cdef class Function:
    """A function recorded once and replayed on new inputs by the compiled sweeps.

    Made by :func:`fastape.compile`. ``F(*args)`` is the value; ``F.grad``,
    ``F.value_and_grad`` the gradient with respect to ``args[argnums]``;
    ``F.vjp(args, cotangent)`` a vector-Jacobian product for vector outputs;
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

    def __init__(self, fun, example_args, argnums=0, retrace=True, max_traces=8):
        self.fun = fun
        self.argnums = argnums
        self.where = f"compiled {getattr(fun, '__name__', 'function')}"
        self.nargs = len(example_args)
        self.single, self.nums = normalize_argnums(argnums, self.nargs, "compile")
        self.retrace = retrace
        self.max_traces = max_traces
        self.traces = []
        leaves, self.treedef = flatten(tuple(example_args), "args", "compile")
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
        self.last = self._trace(leaves)

    @property
    def nbytes(self):
        """Bytes held by the traces' tapes and their working clones."""
        return sum(tr.tape.nbytes * max(tr.nclones, 1) for tr in self.traces)

    @property
    def nodes(self):
        """Number of nodes of the most recently used trace (after pruning)."""
        return len(self.last.tape)

    cdef Trace _trace(self, list leaves):
        """Record the function on these leaves and add the trace to the cache."""
        cdef Tape rec = Tape()
        cdef Var v
        rec.guards = []
        with rec:
            inputs = [rec.var(x) for x in leaves]
            input_nodes = [(<Var>x).node for x in inputs]
            out = self.fun(*unflatten(self.treedef, inputs))
            if type(out) is not Var:
                out = rec.constant(out)
            v = out
            if v.tape is not rec:
                raise TapeError("compile: the function returned a value of another tape")
        tr = _make_trace(rec, input_nodes, v, rec.guards)
        rec.release()
        if len(self.traces) >= self.max_traces:
            self.traces.pop(0)
        self.traces.append(tr)
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
            raise ShapeError(f"{self.where}: {difference(td, self.treedef, 'args')} (called "
                             f"with {describe(td)}, compiled for {describe(self.treedef)})")
        return leaves, td

    cdef tuple _run(self, list leaves):
        """Write the inputs and run the forward sweep on a clone of a trace whose guards
        hold, re-recording if none does. Returns (trace, clone); the caller releases it."""
        cdef Trace tr = self.last
        cdef Tape t = _forward(tr, leaves)
        if t is not None:
            return tr, t
        for tr in reversed(self.traces):
            if tr is not self.last:
                t = _forward(tr, leaves)
                if t is not None:
                    self.last = tr
                    return tr, t
        if not self.retrace:
            raise BranchChanged(
                f"compiled {getattr(self.fun, '__name__', 'function')}: these inputs take "
                "another branch than the recorded one(s); compile with retrace=True "
                "(the default) to re-record, or remove the data-dependent control flow")
        tr = self._trace(leaves)
        t = _forward(tr, leaves)
        if t is None:
            raise BranchChanged("compiled function: a fresh recording does not reproduce its "
                                "own branches (the function is not deterministic)")
        self.last = tr
        return tr, t

    cdef object _grads(self, Trace tr, Tape t, object td):
        """The multipliers of the differentiated arguments' leaves, in the structure of
        the call's arguments (treedef td)."""
        cdef i64 k
        if self.grad_leaf >= 0:
            k = self.grad_leaf
            return read_slot(t, t.adj, tr.inputs[k], self.leaf_shapes[k])
        cdef list out = []
        arg_defs = None
        for i in self.nums:
            k = self.arg_first[i]
            if self.arg_is_leaf[i]:
                out.append(read_slot(t, t.adj, tr.inputs[k], self.leaf_shapes[k]))
                continue
            if arg_defs is None:
                arg_defs = td.children()
            out.append(unflatten(arg_defs[i], [
                read_slot(t, t.adj, tr.inputs[k], self.leaf_shapes[k])
                for k in range(self.arg_first[i], self.arg_first[i + 1])]))
        return out[0] if self.single else tuple(out)

    cdef object _reverse(self, Trace tr, Tape t, object cotangent, object td):
        cdef double[::1] ct
        if cotangent is None:
            if tr.out_size != 1:
                raise ShapeError(f"compiled {getattr(self.fun, '__name__', 'function')}: the "
                                 f"gradient needs a scalar output, got shape {tr.out_shape}; "
                                 "use vjp(args, cotangent)")
            t.clear_adjoints()
            t.adj[tr.output if t.off == NULL else t.off[tr.output]] = 1.0
        else:
            c = np.asarray(cotangent, dtype=np.float64)
            if c.shape != tr.out_shape:
                raise ShapeError(f"vjp: the cotangent has shape {c.shape}, the output has "
                                 f"shape {tr.out_shape}")
            t.clear_adjoints()
            ct = np.ascontiguousarray(c).reshape(-1)
            if tr.out_size:
                memcpy(t.adj + (tr.output if t.off == NULL else t.off[tr.output]), &ct[0],
                       tr.out_size * sizeof(double))
        with nogil:
            t.reverse_sweep(tr.output, 0)
        return self._grads(tr, t, td)

    def __call__(self, *args):
        cdef Trace tr
        cdef Tape t
        tr, t = self._run(self._leaves(args)[0])
        try:
            return read_slot(t, t.val, tr.output, tr.out_shape)
        finally:
            tr.release(t)

    def value_and_grad(self, *args):
        """``(f(*args), ∂f/∂args[argnums])`` by one forward and one reverse sweep."""
        cdef Trace tr
        cdef Tape t
        leaves, td = self._leaves(args)
        tr, t = self._run(leaves)
        try:
            g = self._reverse(tr, t, None, td)
            return read_slot(t, t.val, tr.output, tr.out_shape), g
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
        tr, t = self._run(leaves)
        try:
            g = self._reverse(tr, t, cotangent, td)
            return read_slot(t, t.val, tr.output, tr.out_shape), g
        finally:
            tr.release(t)

    def value_and_grad_batch(self, X, threads=None):
        """Values and gradients at many points: row r of X is the (single) argument.
        Runs the compiled sweeps on `threads` threads (default: all cores), the GIL
        released, one tape clone per thread. Returns ``(values, gradients)``."""
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
        Xa = np.ascontiguousarray(X, dtype=np.float64)
        if Xa.ndim < 1 or Xa.shape[1:] != shape:
            raise ShapeError(f"grad_batch: X must have shape (m, *{shape}), got {Xa.shape}")
        if tr.out_size != 1:
            raise ShapeError(f"grad_batch: the output must be a scalar, got {tr.out_shape}")
        m = Xa.shape[0]
        d = 1
        for s in shape:
            d *= s
        nthreads = int(threads or os.cpu_count() or 1)
        nthreads = max(1, min(nthreads, m))
        values = np.empty(m)
        grads = np.empty((m,) + shape)
        bad = np.zeros(m, dtype=np.uint8)
        cdef double[:, ::1] Xv = Xa.reshape(m, d)
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
        for r in np.flatnonzero(bad):       # rows that take another branch
            v, g = self.value_and_grad(Xa[r] if shape else float(Xa[r]))
            values[r] = v
            grads[r] = g
        return values, grads


_EXECUTORS = {}


def _executor(int nthreads):
    """A pool of `nthreads` helper threads kept for the process (the calling thread
    is the other worker): starting threads per call cost more than a small batch."""
    ex = _EXECUTORS.get(nthreads)
    if ex is None:
        ex = _EXECUTORS.setdefault(nthreads, ThreadPoolExecutor(
            nthreads, thread_name_prefix="fastape-batch"))
    return ex


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
    cdef i64 oo = out if t.off == NULL else t.off[out]
    cdef long long* next_row = <long long*> &counter[0]
    with nogil:
        while True:
            r0 = fastape_next_chunk(next_row, chunk)
            if r0 >= m:
                break
            r1 = min(r0 + chunk, m)
            for r in range(r0, r1):
                memcpy(xin, &X[r, 0], d * sizeof(double))
                t.forward_sweep(0, t.n)
                if tr.nguards and not tr.guards_hold(t):
                    bad[r] = 1
                    continue
                V[r] = t.val[oo]
                t.clear_adjoints()
                t.adj[oo] = 1.0
                t.reverse_sweep(out, 0)
                gin = t.adj + (inp if t.off == NULL else t.off[inp])
                memcpy(&G[r, 0], gin, d * sizeof(double))
