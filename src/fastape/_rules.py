"""The reverse sweep recorded on the tape: every op's vector-Jacobian product written
with fastape ops.

``fastape.grad`` of a function called with values of a tape that is recording
(``grad(grad(f))``, a ``grad`` inside ``compile``, ``hessian``) cannot run the
compiled reverse sweep: its result must itself be differentiable. It runs this
sweep instead, which walks the same nodes in the same reverse order and adds the
same multipliers λ_j = Σ_children λ_i ∂f_i/∂z_j, but *records* each product on the
tape: the multipliers are values of the tape, so derivatives of derivatives are
derivatives of recorded programs, to any order, and compiled functions replay them.

The rules, one per op, use the node's recorded values (``x``, ``y``, the node's own
value ``z``) and its multiplier ``g``, all as flat values (size 1: a scalar):

* elementwise ops: ``g · ∂f/∂x_j``. A constant partial is a number; the blocks
  with ``nested`` expressions write their partials with ops (every order is exact); every
  other op records its derived partial op ``<OP>_D<j>`` (``registry.DERIVED``), whose
  own partials are the registry's second partials. A derived op has no partials of
  its own: a third derivative through one raises rather than guess.
* structural ops: the transposed op (a broadcast sums back, a sum broadcasts, a
  gather scatters, a slice of a concatenation...); matrix products are matrix
  products, solves are solves with Aᵀ.

Choices that depend on values (the maximum's position, ‖x‖ = 0) are comparisons,
which compiled functions record as guards: a replay at inputs that choose
otherwise re-records instead of reusing a stale choice.
"""

import numpy as np

from fastape import _tape, _ufuncs, registry
from fastape._ops import Cmp, Op
from fastape._tape import Var, node_record, node_size, node_var
from fastape.errors import TapeError

_BLOCK = {int(getattr(Op, e.name)): e for e in registry.ELEMENTWISE + registry.DERIVED}
_PARTIAL_OP = {int(getattr(Op, name)): tuple(None if d is None else int(getattr(Op, d))
                                             for d in ds)
               for name, ds in registry.PARTIAL_OPS.items()}


def _op_name(e):
    """The name errors use for a block: its public name, else the opcode's."""
    return e.public or (registry.BY_NAME[e.partial_of[0]].public if e.partial_of else None) \
        or e.name.lower()


def _nested_rule(e):
    """The block's partials written with ops (its ``nested`` expressions) as a function
    of (x, y, k, z), or None."""
    if not e.nested:
        return None
    exprs = ", ".join(e.nested) + ("," if len(e.nested) == 1 else "")
    from fastape._special import polygamma
    return eval(f"lambda x, y, k, z: ({exprs})",  # noqa: S307
                dict(vars(_ufuncs), polygamma=polygamma))


#: opcode -> its partials written with fastape ops (registry ``nested``): their
#: derivatives are again recorded ops, so every order is exact
EXACT = {o: r for o, e in _BLOCK.items() if (r := _nested_rule(e)) is not None}


def _flat(t, node):
    n = node_size(t, node)
    return node_var(t, node, () if n == 1 else (n,))


class _Sweep:
    """Multipliers of one recorded reverse sweep: dense (a flat value per node) and
    sparse (scalar contributions of GATHER1 nodes by position, joined once)."""

    def __init__(self, t, dep):
        self.t = t
        self.dep = dep
        self.dense = {}
        self.sparse = {}

    def add(self, node, g):
        if g is None or node not in self.dep:
            return
        old = self.dense.get(node)
        self.dense[node] = g if old is None else old + g

    def add_at(self, node, pos, g):
        if node not in self.dep:
            return
        d = self.sparse.setdefault(node, {})
        d[pos] = g if pos not in d else d[pos] + g

    def pop(self, node, size):
        """The multiplier of `node` (a flat value of `size`), or None when it is 0."""
        g = self.dense.pop(node, None)
        pts = self.sparse.pop(node, None)
        if pts:
            s = _joined(self.t, pts, size)
            g = s if g is None else g + s
        return g


def _joined(t, pts, size):
    """A flat value of `size` holding the scalars pts[p] at positions p, 0 elsewhere."""
    like = next(iter(pts.values()))
    if size == 1:
        return pts[0]
    parts, lengths, run = [], [], 0
    for p in range(size):
        if p in pts:
            if run:
                parts.append(_tape.constant_like(like, np.zeros(run)))
                lengths.append(run)
                run = 0
            parts.append(pts[p])
            lengths.append(1)
        else:
            run += 1
    if run:
        parts.append(_tape.constant_like(like, np.zeros(run)))
        lengths.append(run)
    return _tape.concat(parts, 1, 1, lengths, (size,))


def _view(v, shape):
    """v seen with another shape of its size (no node: a Var is a tape and a node)."""
    return node_var(v.tape, v.node, tuple(shape))


def _gather(v, idx):
    """v.flat[idx] as a flat value (a scalar for one index)."""
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    if idx.size == 1:
        return _tape.item(_view(v, (v.size,)), int(idx[0]))
    return _tape.gather(_view(v, (v.size,)), idx, (idx.size,))


def _sum_to(v, size):
    """v summed to a scalar when the parent was a broadcast scalar (size 1)."""
    if size == 1 and v.size != 1:
        return _tape.reduce(int(Op.SUM), v, 1, v.size, 1, ())
    return v


# -- elementwise ---------------------------------------------------------------

#: opcode -> its constant partials per operand: a float, "k" (the immediate) or None
_CONSTANTS = {o: tuple(("k" if expr.strip() == "k" else float(expr))
                       if registry.is_constant(expr) else None for expr in (e.d0, e.d1))
              for o, e in _BLOCK.items()}


def _partial(o, j, x, y, k, z):
    """∂f_o/∂x_j at the node, as a number (constant) or a recorded value."""
    rule = EXACT.get(o)
    if rule is not None:
        return rule(x, y, k, z)[j]
    c = _CONSTANTS[o][j]
    if c is not None:
        return k if c == "k" else c
    e = _BLOCK[o]
    if e.partial_of:
        base = e.partial_of[0].lower()
        raise TapeError(f"nested differentiation: a third derivative of {base} is not "
                        "available (fastape's registry gives the first and second partials "
                        f"of {base}); differentiate at most twice through it")
    d = _PARTIAL_OP[o][j]
    if e.has_k:
        return _tape.unary_k(d, x, k)
    if e.arity == 1:
        return _tape.unary(d, x)
    return _tape.binary(d, x, y)


def _elementwise(s, i, o, a, b, size, g):
    e = _BLOCK[o]
    t = s.t
    parents = [a] if e.arity == 1 else [a, b]
    if not any(p in s.dep for p in parents):
        return
    x = _flat(t, a)
    y = _flat(t, b) if e.arity == 2 else None
    k = b if e.has_k else None
    z = node_var(t, i, () if size == 1 else (size,))
    for j, p in enumerate(parents):
        if p not in s.dep:
            continue
        if j == 0 and e.fixed:
            # the recorders refuse a value there; a tape built otherwise must not get 0
            raise TapeError(f"nested differentiation: {_op_name(e)} is not differentiable "
                            f"in its argument {e.fixed!r}, which depends on the inputs")
        c = _partial(o, j, x, y, k, z)
        if isinstance(c, float):
            if c == 0.0:
                continue
            contrib = g if c == 1.0 else (-g if c == -1.0 else g * c)
        else:
            contrib = g * c
        s.add(p, contrib if size == 1 else _sum_to(contrib, node_size(t, p)))


# -- structural ----------------------------------------------------------------

def _scatter(s, x_node, g, idx):
    """x̄[idx[j]] += g[j]: one gather through the inverse index for the positions
    hit once, scalar sums for positions hit more than once."""
    t = s.t
    m = node_size(t, x_node)
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    n = idx.size
    if n == 0:
        return
    counts = np.bincount(idx, minlength=m)
    once = counts[idx] == 1
    if once.any():
        inv = np.full(m, n, dtype=np.int64)
        inv[idx[once]] = np.nonzero(once)[0]
        zero = _tape.constant_like(g, np.zeros(1))
        ext = _tape.concat([_view(g, (n,)), zero], 1, 1, [n, 1], (n + 1,))
        s.add(x_node, _gather(ext, inv))
    for p in np.nonzero(counts > 1)[0]:
        pos = np.nonzero(idx == p)[0]
        s.add_at(x_node, int(p), _tape.reduce(int(Op.SUM), _gather(g, pos), 1, pos.size,
                                              1, ()))


def _flip(v, outer, n, inner):
    """v viewed as (outer, n, inner), reversed along its middle axis (flat)."""
    return _gather(v, np.arange(outer * n * inner).reshape(outer, n, inner)[:, ::-1, :])


def _spread(g, outer, n, inner):
    """g of (outer, inner) broadcast along a new middle axis of length n (flat)."""
    b = _tape.broadcast_to(_view(g, (outer, 1, inner)), (outer, n, inner))
    return _view(b, (outer * n * inner,))


def _exclusive_products(x, outer, n, inner, reverse):
    """Π of the elements before (reverse: after) each one along the middle axis."""
    v = _flip(x, outer, n, inner) if reverse else _view(x, (x.size,))
    size = outer * n * inner
    one = _tape.constant_like(x, np.ones(outer * inner))
    if n == 1:
        out = _view(_spread(one, outer, 1, inner), (size,))
    else:
        cp = _tape.cumulative(int(Op.CUMPROD), v, outer, n, inner, (size,))
        head = np.arange(size).reshape(outer, n, inner)[:, :-1, :].reshape(-1)
        out = _tape.concat([_view(one, (outer * inner,)),
                            _view(_gather(cp, head), (head.size,))],
                           outer, inner, [1, n - 1], (size,))
    return _flip(out, outer, n, inner) if reverse else out


def _reduce(s, i, o, a, size, g, P):
    outer, n, inner = P
    t = s.t
    if n == 0:
        return
    gb = _spread(g, outer, n, inner)
    if o == Op.SUM:
        s.add(a, gb)
    elif o == Op.PROD:
        x = _flat(t, a)
        s.add(a, gb * _exclusive_products(x, outer, n, inner, False)
              * _exclusive_products(x, outer, n, inner, True))
    else:       # AMAX, AMIN: the first position holding the extremum (a guarded choice)
        x = _flat(t, a)
        z = _spread(node_var(t, i, (size,)), outer, n, inner)
        hit = np.asarray(_tape.compare(x, z, Cmp.EQ), dtype=bool).reshape(outer, n, inner)
        nan = np.isnan(np.asarray(x.value, dtype=np.float64)).reshape(outer, n, inner)
        hit = hit | (nan & np.isnan(np.asarray(z.value)).reshape(outer, n, inner))
        first = np.zeros_like(hit)
        np.put_along_axis(first, hit.argmax(axis=1)[:, None, :], True, axis=1)
        s.add(a, gb * _tape.constant_like(x, first.astype(np.float64).reshape(-1)))


def _cumulative(s, i, o, a, size, g, P):
    outer, n, inner = P
    t = s.t
    if size == 0:
        return
    if o == Op.CUMSUM:
        w = _view(g, (size,))
    else:
        x = _flat(t, a)
        nonzero = np.asarray(_tape.compare(x, 0.0, Cmp.NE), dtype=bool)
        if not nonzero.all():
            raise TapeError("nested differentiation: the derivative of cumprod is recorded "
                            "as Σ λ z / x, which needs an input without zeros")
        w = _view(g, (size,)) * node_var(t, i, (size,))
    back = _flip(_tape.cumulative(int(Op.CUMSUM), _flip(w, outer, n, inner), outer, n, inner,
                                  (size,)), outer, n, inner)
    s.add(a, back if o == Op.CUMSUM else back / _flat(t, a))


def _concat(s, i, a, size, g, P):
    outer, inner, total, nparts = P[:4]
    flat = np.arange(size).reshape(outer, total, inner)
    for q in range(nparts):
        node, start, length = P[4 + 3 * q: 7 + 3 * q]
        if node in s.dep and length:
            idx = flat[:, start:start + length, :].reshape(-1)
            s.add(node, _gather(g, idx))


def _matmul(s, i, a, b, size, g, P):
    rows, k, cols, batch, sA, sB, flags = P
    t = s.t
    ta, tb = bool(flags & 1), bool(flags & 2)
    A, B = _flat(t, a), _flat(t, b)
    lam = _view(g, (size,))
    if a in s.dep:
        # stored A: rows×k (Λ op(B)ᵀ) or k×rows (op(B) Λᵀ)
        shape = (batch * rows * k,)
        if not ta:
            abar = _tape.matmul_node(lam, B, rows, cols, k, batch, rows * cols, sB, False,
                                     not tb, shape)
        else:
            abar = _tape.matmul_node(B, lam, k, cols, rows, batch, sB, rows * cols, tb, True,
                                     shape)
        if sA == 0 and batch > 1:
            abar = _tape.reduce(int(Op.SUM), abar, 1, batch, rows * k, (rows * k,))
        s.add(a, _sum_to(abar, A.size))
    if b in s.dep:
        shape = (batch * k * cols,)
        if not tb:
            bbar = _tape.matmul_node(A, lam, k, rows, cols, batch, sA, rows * cols, not ta,
                                     False, shape)
        else:
            bbar = _tape.matmul_node(lam, A, cols, rows, k, batch, rows * cols, sA, True, ta,
                                     shape)
        if sB == 0 and batch > 1:
            bbar = _tape.reduce(int(Op.SUM), bbar, 1, batch, k * cols, (k * cols,))
        s.add(b, _sum_to(bbar, B.size))


def _transposed_lu(t, lu_node, n, op):
    """The LU node of Aᵀ, A the matrix factored by `lu_node`."""
    a_node = node_record(t, lu_node)[1]
    At = _tape.gather(node_var(t, a_node, (n * n,)),
                      np.arange(n * n).reshape(n, n).T.reshape(-1), (n * n,))
    lu, singular = _tape.lu_node(At, n)
    if singular:
        from fastape import linalg
        raise linalg.LinAlgError(f"nested differentiation of {op}: the matrix is singular")
    return lu


def _solve(s, i, a, b, size, g, P):
    n, r = P
    t = s.t
    lu_t = _transposed_lu(t, a, n, "solve")
    Z = _tape.solve_node(lu_t, _view(g, (size,)), n, r, (size,))       # A⁻ᵀ X̄
    s.add(b, Z)
    if a in s.dep:
        X = node_var(t, i, (size,))
        s.add(a, -_tape.matmul_node(Z, X, n, r, n, 1, 0, 0, False, True, (n * n,)))


def _det(s, i, o, a, g, P):
    (n,) = P
    t = s.t
    lu_t = _transposed_lu(t, a, n, "det" if o == Op.DET else "slogdet")
    eye = _tape.constant_like(g, np.eye(n).reshape(-1))
    inv_t = _tape.solve_node(lu_t, eye, n, n, (n * n,))                 # A⁻ᵀ
    w = g * node_var(t, i, ()) if o == Op.DET else g
    s.add(a, inv_t * w)


def _norm(s, i, a, size, g, P):
    outer, n, inner = P
    t = s.t
    z = node_var(t, i, (size,))
    zero = np.asarray(_tape.compare(z, 0.0, Cmp.EQ), dtype=bool).reshape(-1)
    safe = z if not zero.any() else _tape.where(
        _tape.constant_like(z, zero.astype(np.float64)), _tape.constant_like(z, 1.0), z,
        (size,))
    w = _view(g, (size,)) / safe
    s.add(a, _flat(t, a) * _spread(w, outer, n, inner))


def _where(s, i, a, b, size, g, P):
    (cond,) = P
    t = s.t
    c = node_var(t, cond, (size,))
    zero = _tape.constant_like(g, 0.0)
    gv = _view(g, (size,))
    for p, pick in ((a, (gv, zero)), (b, (zero, gv))):
        if p in s.dep:
            s.add(p, _sum_to(_tape.where(c, pick[0], pick[1], (size,)),
                             node_size(t, p)))


def _callback(s, i, size, g, P):
    """A custom rule (fastape.custom): the rule object records its own VJP."""
    t = s.t
    slot, nparents = P[0], P[1]
    parents = P[2:2 + nparents]
    rule = t.pyobjs[slot]
    bars = rule.recorded_backward(t, [_flat(t, q) for q in parents],
                                  _view(g, tuple(rule.out_shapes[0])
                                        if len(rule.out_shapes) == 1 else (size,)))
    for q, bar in zip(parents, bars):
        if bar is None:
            continue
        if type(bar) is not Var:
            bar = _tape.constant_like(g, np.asarray(bar, dtype=np.float64).reshape(-1))
        s.add(q, _view(bar, () if bar.size == 1 else (bar.size,)))


def _node(s, i, g):
    """Record node i's contributions g · ∂z_i/∂parents into the parents' multipliers."""
    t = s.t
    o, a, b, size, P = node_record(t, i)
    if o in _BLOCK:
        _elementwise(s, i, o, a, b, size, g)
    elif o == Op.GATHER1:
        s.add_at(a, int(b), g)
    elif o == Op.GATHER:
        _scatter(s, a, g, P)
    elif o == Op.STRIDED:
        start, step = P
        _scatter(s, a, g, start + step * np.arange(size))
    elif o == Op.BROADCAST:
        nd = P[0]
        dims, strides = P[1:1 + nd], P[1 + nd:1 + 2 * nd]
        axes = tuple(d for d in range(nd) if strides[d] == 0)
        from fastape import _functions
        gx = _functions.sum(_view(g, dims), axis=axes) if axes else _view(g, dims)
        # the axes read with a stride, in x's order (the largest stride first): a
        # transpose recorded as a strided view is undone by the inverse transpose
        kept = [st for st in strides if st != 0]
        order = sorted(range(len(kept)), key=lambda q: -kept[q])
        if order != list(range(len(kept))):
            gx = _functions.transpose(gx, order)
        s.add(a, _view(gx, (gx.size,)) if gx.size != 1 else _view(gx, ()))
    elif o in (Op.SUM, Op.PROD, Op.AMAX, Op.AMIN):
        _reduce(s, i, o, a, size, g, P)
    elif o in (Op.CUMSUM, Op.CUMPROD):
        _cumulative(s, i, o, a, size, g, P)
    elif o == Op.DOT:
        x, y = _flat(t, a), _flat(t, b)
        s.add(a, g * y)
        s.add(b, g * x)
    elif o == Op.WHERE:
        _where(s, i, a, b, size, g, P)
    elif o == Op.CONCAT:
        _concat(s, i, a, size, g, P)
    elif o == Op.MATMUL:
        _matmul(s, i, a, b, size, g, P)
    elif o == Op.LU:
        s.add(a, g)
    elif o == Op.SOLVE:
        _solve(s, i, a, b, size, g, P)
    elif o in (Op.DET, Op.LOGDET):
        _det(s, i, o, a, g, P)
    elif o == Op.NORM:
        _norm(s, i, a, size, g, P)
    elif o == Op.CALLBACK:
        _callback(s, i, size, g, P)
    else:
        raise TapeError(f"nested differentiation: no recorded rule for op {Op(o).name}")


def vjp(t, seeds, leaves):
    """Record Σ_outputs cotangentᵀ ∂output/∂leaf for each leaf on tape t.

    ``seeds``: (output Var, cotangent) pairs, the cotangent a Var of the output's
    shape, or None for 1 (scalar outputs); ``leaves``: Vars (any nodes: the sweep
    stops at them). Returns one flat Var per leaf (None where the derivative is 0).
    """
    sources = {v.node for v in leaves}
    top = max(out.node for out, _ in seeds)
    dep = set(_tape.dependents(t, sorted(sources), top))
    s = _Sweep(t, dep)
    for out, cot in seeds:
        if cot is None:
            cot = _tape.constant_like(out, 1.0)
        s.add(out.node, _view(cot, () if out.size == 1 else (out.size,)))
    for i in sorted(dep, reverse=True):
        if i in sources:
            continue
        g = s.pop(i, node_size(t, i))
        if g is not None:
            _node(s, i, g)
    return [s.pop(v.node, v.size) for v in leaves]
