# CALLBACK (included into _tape.pyx): a node computed by Python code, for the
# functions given their own derivative rules (fastape.custom_vjp, custom_jvp). The
# node's parents are its fastape-valued arguments; its value, its reverse step and
# its tangent are calls of a rule object kept in the tape's `pyobjs` list, with the
# forward call's residuals in `pyres`. The sweeps run without the GIL and take it
# for this node only: each such node costs a Python call (documented in
# fastape.custom). A rule that raises stores its exception on the tape (the first
# one wins; later callback nodes of the sweep do nothing) and the Python caller of
# the sweep raises it when the sweep returns (Tape.raise_pending), so the error
# reaches the user with its traceback and no sweep result is read.

ctypedef struct CallbackP:
    i64 size
    i64 slot            # the rule object: pyobjs[slot], its residuals pyres[slot]
    i64 nparents
    i64 parents[1]      # nparents node ids (the first is also the node's a)


cdef list _callback_inputs(Tape t, const CallbackP* p, double* arena):
    """The parents' slots of `arena` (values or tangents) as new flat arrays."""
    cdef i64 q, n, node
    out = []
    for q in range(p.nparents):
        node = p.parents[q]
        n = t.size_of(node)
        a = np.empty(n)
        if n:
            memcpy(<double*><size_t>a.ctypes.data, arena + t.off[node], n * sizeof(double))
        out.append(a)
    return out


cdef int _write_slot(double* dst, object values, i64 n, str what) except -1:
    cdef const double[::1] src = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
    if src.shape[0] != n:
        raise ShapeError(f"{what}: the rule returned {src.shape[0]} numbers where {n} are "
                         "expected")
    if n:
        memcpy(dst, &src[0], n * sizeof(double))
    return 0


cdef void _callback(Tape t, i64 i, int which, double* T) noexcept with gil:
    """which 0: forward (value, residuals), 1: reverse (parents' adjoints += the rule's
    cotangents), 2: tangent (T: one direction's tangent arena)."""
    cdef const CallbackP* p = <const CallbackP*>t.params(i)
    cdef i64 q, j, n, node
    cdef double* dst
    cdef const double[::1] g
    if t.py_error is not None:
        return
    try:
        rule = t.pyobjs[p.slot]
        if which == 0:
            value, res = rule.forward(_callback_inputs(t, p, t.val))
            _write_slot(t.val + t.off[i], value, p.size, rule.name)
            t.pyres[p.slot] = res
        elif which == 1:
            lam = np.empty(p.size)
            if p.size:
                memcpy(<double*><size_t>lam.ctypes.data, t.adj + t.off[i],
                       p.size * sizeof(double))
            bars = rule.backward(t.pyres[p.slot], lam)
            for q in range(p.nparents):
                node = p.parents[q]
                if bars[q] is None:
                    continue
                n = t.size_of(node)
                g = np.ascontiguousarray(bars[q], dtype=np.float64).reshape(-1)
                if g.shape[0] != n:
                    raise ShapeError(f"{rule.name}: the backward rule returned {g.shape[0]} "
                                     f"numbers for an argument of {n}")
                dst = t.adj + t.off[node]
                for j in range(n):
                    dst[j] += g[j]
        else:
            tout = rule.tangent(_callback_inputs(t, p, t.val), _callback_inputs(t, p, T))
            _write_slot(T + t.off[i], tout, p.size, rule.name)
    except BaseException as e:
        t.py_error = e


cdef void callback_forward(Tape t, i64 i) noexcept nogil:
    """z = rule.forward(parents' values) (a Python call, with the GIL)."""
    _callback(t, i, 0, NULL)


cdef void callback_reverse(Tape t, i64 i) noexcept nogil:
    """parents' adjoints += rule.backward(residuals, λ) (a Python call, with the GIL)."""
    _callback(t, i, 1, NULL)


cdef void callback_tangent(Tape t, i64 i, double* T) noexcept nogil:
    """ż = rule.tangent(parents' values, parents' tangents) (a Python call)."""
    _callback(t, i, 2, T)


def callback_node(list parents not None, object rule, object value, object res,
                  tuple shape):
    """Record a CALLBACK node of these parents (Vars of one tape) whose value `value`
    (of `shape`) and residuals `res` the caller computed with rule.forward."""
    cdef Var first = parents[0]
    cdef Tape t = first.tape
    cdef i64 size = _prod(shape), i, q, nparents = len(parents)
    cdef CallbackP* p
    for v in parents:
        _own(t, v, rule.name, "args")
    t._check_open()
    if t.pyobjs is None:
        t.pyobjs = []
        t.pyres = []
    i = t.push(CALLBACK, first.node, -1, size, 3 + nparents)
    p = <CallbackP*>t.params(i)
    p.slot = len(t.pyobjs)
    p.nparents = nparents
    for q in range(nparents):
        p.parents[q] = (<Var>parents[q]).node
    t.pyobjs.append(rule)
    t.pyres.append(res)
    _write_slot(t.val + t.off[i], value, size, rule.name)
    return _new(t, i, shape, size)
