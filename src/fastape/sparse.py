"""Sparse Jacobians and Hessians of compiled functions (``fastape.sparse``).

A compiled :class:`fastape.Function` knows its sparsity exactly: its tape is the
computation. ``F.jacobian_sparsity()`` and ``F.hessian_sparsity()`` propagate index sets
forward over the recorded tape (compiled: ``fastape._sparsity``); ``F.sparse_jacobian``
and ``F.sparse_hessian`` color the pattern, evaluate the compressed derivative by
vector-mode sweeps (forward for J S, forward over reverse for ∇²f S, at most 64
directions a sweep) and scatter it into a ``scipy.sparse.csr_array`` whose structure is
fixed by the first call and shared by every later one.

Layout: rows are the flattened output, columns the flattened differentiated arguments
``args[argnums]`` in order, the layout of ``F.jacobian`` flattened to two dimensions.

What the patterns are:

* exact for the path the tape recorded, up to cancellation (``x - x`` depends on x), with
  these conservative rules: ``where`` and the NaN-ignoring or tie-splitting extrema
  (``maximum``, ``max`` reductions, ...) depend on both sides, so that no value flips
  their pattern; ``solve``, ``inv``, ``det`` and ``slogdet`` depend on the whole matrix;
  custom rules (``custom_vjp``/``custom_jvp``) on all their inputs, nonlinearly; a
  product's Hessian entries are those of every pair of its factors.
* a product (``*``, ``@``, ``dot``) with an exact zero of a *constant* drops that term
  (a constant banded matrix times x is banded); other constants' values are not looked at.
* whether an op is linear in an argument is read from the registry: its second partials
  identically zero or not.
* a Python branch (``if x > 0``) is not on the tape: each recorded branch has its own
  pattern. The structure is fixed by the first call; a call whose inputs take another
  branch is evaluated on that branch's trace, whose pattern is computed and must lie
  inside the fixed one (its entries are then explicit zeros elsewhere), else
  :class:`SparsityChanged` is raised: never a wrong matrix.

Colorings: :func:`color_columns` (distance-2, for J S) and :func:`color_symmetric` (star
coloring, for the symmetric Hessian, with direct recovery: each entry is read from one
entry of the compressed product, no substitution), both greedy in two orders (natural and
largest first), the one with fewer colors kept.
"""

import time

import numpy as np

from fastape import _sparsity, registry
from fastape.errors import BranchChanged, NoTangentRule, ShapeError

__all__ = ["jacobian_sparsity", "hessian_sparsity", "sparse_jacobian", "sparse_hessian",
           "color_columns", "color_symmetric", "SparsityChanged"]


class SparsityChanged(BranchChanged):
    """A compiled function's inputs take a branch whose sparsity pattern has entries
    outside the pattern fixed by the first call."""


# ---------------------------------------------------------------------------
# the op table the propagation reads, derived from the registry
# ---------------------------------------------------------------------------

#: structural op -> its pattern rule in _sparsity (every registry op must have one)
_STRUCTURAL = {"GATHER1": "GATHER1", "GATHER": "GATHER", "STRIDED": "STRIDED",
               "BROADCAST": "BROADCAST", "SUM": "REDUCE", "AMAX": "REDUCE",
               "AMIN": "REDUCE", "PROD": "PROD", "CUMSUM": "CUMSUM", "CUMPROD": "CUMPROD",
               "DOT": "DOT", "WHERE": "WHERE", "CONCAT": "CONCAT", "MATMUL": "MATMUL",
               "LU": "LU", "SOLVE": "SOLVE", "DET": "DET", "LOGDET": "DET", "NORM": "NORM",
               "CALLBACK": "CALLBACK"}


def _is_zero(expr):
    """Is a registry formula identically zero?"""
    return registry.is_constant(expr) and expr.strip() != "k" and float(expr) == 0.0


def op_tables():
    """(kinds, flags): per opcode, its pattern rule and which of its partials are not
    identically zero (``_sparsity.KINDS``, ``_sparsity.FLAGS``), from the registry."""
    codes = registry.opcodes()
    K, Fl = _sparsity.KINDS, _sparsity.FLAGS
    kinds = np.full(256, 255, dtype=np.uint8)
    flags = np.zeros(256, dtype=np.uint8)
    kinds[codes["INPUT"]] = K["INPUT"]
    kinds[codes["CONSTANT"]] = K["CONSTANT"]
    for e in registry.ELEMENTWISE + registry.DERIVED:
        o = codes[e.name]
        kinds[o] = K["UNARY_K"] if e.has_k else K["UNARY"] if e.arity == 1 else K["BINARY"]
        f = 0
        parts = (("D0", e.d0), ("D00", e.d00)) if e.arity == 1 else (
            ("D0", e.d0), ("D1", e.d1), ("D00", e.d00), ("D01", e.d01), ("D11", e.d11))
        for name, expr in parts:
            if not _is_zero(expr):
                f |= Fl[name]
        # a partial that is the other factor (x * y) or the immediate (x * k) vanishes
        # where that factor is an exact constant zero
        if (e.arity == 2 and e.d0.strip() == "y" and e.d1.strip() == "x") or \
                (e.has_k and e.d0.strip() == "k"):
            f |= Fl["PROD"]
        flags[o] = f
    for s in registry.STRUCTURAL:
        if s.name not in _STRUCTURAL:
            raise NotImplementedError(f"fastape.sparse: structural op {s.name} has no "
                                      "sparsity rule")
        kinds[codes[s.name]] = K[_STRUCTURAL[s.name]]
    return kinds, flags


_TABLES = []


def _tables():
    if not _TABLES:
        _TABLES.append(op_tables())
    return _TABLES[0]


# ---------------------------------------------------------------------------
# patterns and colorings
# ---------------------------------------------------------------------------

def _csr(indptr, indices, shape):
    """A read-only structure as a csr_array of bools (its arrays shared, not copied)."""
    from scipy.sparse import csr_array
    data = np.ones(len(indices), dtype=bool)
    return csr_array((data, indices, indptr), shape=shape, copy=False)


def _trace_patterns(trace, layout, hessian):
    """(jacobian (indptr, indices), hessian (indptr, indices) or None, ncols) of one
    trace; layout: (input node, size) per differentiated leaf."""
    kinds, flags = _tables()
    rows = np.zeros((len(layout), 3), dtype=np.int64)
    ncols = 0
    for q, (node, m) in enumerate(layout):
        rows[q] = (node, m, ncols)
        ncols += m
    jac, hess = _sparsity.patterns(trace.tape, kinds, flags, rows, ncols, trace.output,
                                   hessian, trace.outs)
    return jac, hess, ncols


def _pattern_arrays(pattern, square=False, name="pattern"):
    """(indptr int64, indices int32, shape) of a sparse or dense pattern, canonical."""
    import scipy.sparse as sp
    if sp.issparse(pattern):
        P = sp.csr_array(pattern)
    else:
        a = np.asarray(pattern)
        if a.ndim != 2:
            raise ShapeError(f"{name}: the pattern must be 2-D, got shape {a.shape}")
        P = sp.csr_array(a != 0)
    if square and P.shape[0] != P.shape[1]:
        raise ShapeError(f"{name}: a symmetric pattern must be square, got shape {P.shape}")
    P = P.copy()
    P.sum_duplicates()
    P.eliminate_zeros()         # an explicit zero (False) is no entry of a pattern
    P.sort_indices()
    return (np.ascontiguousarray(P.indptr, dtype=np.int64),
            np.ascontiguousarray(P.indices, dtype=np.int32), P.shape)


#: above this estimate of a greedy coloring's work, the trivial coloring is used
_GREEDY_BUDGET = 1e8


def _best(colorings):
    return min(colorings, key=lambda c: (c.max() + 1) if len(c) else 0)


def color_columns(pattern):
    """A distance-2 column coloring of an (m, n) pattern: columns that share a row get
    different colors, so J S with S[j, colors[j]] = 1 holds every entry of J once.
    Greedy (compiled) in natural and in largest-first order (by the rows' sizes),
    the fewer colors kept; a banded pattern of bandwidth b (lower + upper) gets b + 1.
    Returns an int64 array of n colors 0, 1, ..."""
    indptr, indices, (m, n) = _pattern_arrays(pattern, name="color_columns")
    lengths = np.diff(indptr)
    if np.sum(lengths.astype(np.float64) ** 2) > _GREEDY_BUDGET:
        # the greedy pass costs Σ (row length)²: long rows (a dense gradient row) need
        # as many colors as their length anyway; every column its own color is valid
        return np.arange(n, dtype=np.int64)
    cp, ci = _sparsity.transpose(indptr, indices, n)
    degree = np.zeros(n, dtype=np.int64)
    np.add.at(degree, indices, lengths[np.repeat(np.arange(m), lengths)])
    orders = (np.arange(n, dtype=np.int64),
              np.argsort(-degree, kind="stable").astype(np.int64))
    return _best([_sparsity.greedy_columns(indptr, indices, cp, ci, o) for o in orders])


def color_symmetric(pattern):
    """A star coloring of a symmetric (n, n) pattern (its off-diagonal entries the edges
    of a graph): adjacent vertices differ and every path on four vertices has at least
    three colors. H S with S[j, colors[j]] = 1 then gives every entry of the symmetric
    H directly (direct recovery: H[i, j] is B[i, c(j)] when j is i's only neighbor of
    color c(j), else B[j, c(i)]). Greedy (compiled) in natural and largest-first order,
    the fewer colors kept: a tridiagonal pattern gets 3, an arrow 2. The pattern is
    symmetrised (P | Pᵀ) first. Returns an int64 array of n colors."""
    import scipy.sparse as sp
    indptr, indices, shape = _pattern_arrays(pattern, square=True, name="color_symmetric")
    P = sp.csr_array((np.ones(len(indices), bool), indices, indptr), shape=shape)
    indptr, indices, _ = _pattern_arrays(P + P.T, square=True)
    n = shape[0]
    if len(indices) > n * n / 4 and len(indices) > _GREEDY_BUDGET ** 0.5:
        # a dense pattern: the greedy pass would cost about nnz × colors and find
        # about n colors; every vertex its own color is a star coloring
        return np.arange(n, dtype=np.int64)
    degree = np.diff(indptr)
    orders = (np.arange(n, dtype=np.int64),
              np.argsort(-degree, kind="stable").astype(np.int64))
    return _best([_sparsity.greedy_star(indptr, indices, o) for o in orders])


# ---------------------------------------------------------------------------
# the fixed structures of a compiled function
# ---------------------------------------------------------------------------

class _Fixed:
    """A pattern fixed at first use: its structure (read-only arrays shared by every
    result), coloring, where each entry is read in the compressed product, and which
    traces (recorded branches) are known to fit it."""

    def __init__(self, indptr, indices, shape, colors, src, trace):
        # shared by every result (scipy copies read-only index arrays, so they stay
        # writeable: the README asks not to modify a result's structure in place)
        self.indptr = np.asarray(indptr)
        self.indices = np.asarray(indices)
        self.shape = shape
        self.colors = np.ascontiguousarray(colors, dtype=np.int64)
        self.ncolors = int(self.colors.max()) + 1 if len(self.colors) else 0
        self.src = src
        self.fits = {trace: True}
        # one sweep per color (a grouped tape then runs run by run) or vector-mode sweeps
        # of up to 64 colors: chosen by timing both at the first evaluation
        self.single = True if self.ncolors <= 1 else None
        self.timed = (False, True)      # the ways `single` was chosen among
        # a custom_vjp rule has no tangents: reverse sweeps instead (NoTangentRule seen)
        self.reverse = False
        self.rows = None            # Jacobian by reverse sweeps: (row colors, sources)

    def evaluate(self, compressed, ways=(False, True)):
        """compressed(way) -> (B, trace), by the fastest of `ways` (timed at the first
        call, then kept; a way is `single`, or a (route, single) pair)."""
        if self.single is None or ways != self.timed:
            self.timed = ways
            # the min of up to three timings each, interleaved (the machine may be
            # shared; the first call of each way makes its arenas), fewer when an
            # evaluation is long
            best = dict.fromkeys(ways, np.inf)
            for r in range(3):
                for way in ways:
                    t0 = time.perf_counter()
                    out = compressed(way)
                    best[way] = min(best[way], time.perf_counter() - t0)
                if sum(best.values()) * (2 - r) > 0.2:
                    break
            self.single = min(ways, key=best.get)
            return out
        return compressed(self.single)

    def pattern(self):
        return _csr(self.indptr, self.indices, self.shape).copy()


class _State:
    def __init__(self):
        self.jac = None
        self.hess = None
        self.lagrangian = None      # the compiled Σ vᵢ fᵢ of a vector output
        self.scalar_lagrangians = {}    # trace -> Σ vᵢ fᵢ replayed on scalars, or None


def _state(F):
    if F._sparse is None:
        F._sparse = _State()
    return F._sparse


def _out_size(trace):
    return int(np.prod(trace.out_shape, dtype=np.int64))


def _fixed_jacobian(F):
    st = _state(F)
    if st.jac is None:
        trace, layout = F._sparse_layout()
        (indptr, indices), _, n = _trace_patterns(trace, layout, False)
        m = _out_size(trace)
        P = (indptr.astype(np.int64), indices)
        colors = color_columns(_csr(indptr, indices, (m, n)))
        nc = int(colors.max()) + 1 if n else 0
        rows = np.repeat(np.arange(m, dtype=np.int64), np.diff(P[0]))
        src = rows * nc + colors[indices]
        st.jac = _Fixed(indptr, indices, (m, n), colors, src, trace)
    return st.jac


def _fixed_hessian(F):
    st = _state(F)
    if st.hess is None:
        trace, layout = F._sparse_layout()
        _, (indptr, indices), n = _trace_patterns(trace, layout, True)
        colors = color_symmetric(_csr(indptr, indices, (n, n)))
        nc = int(colors.max()) + 1 if n else 0
        src = _sparsity.star_sources(indptr.astype(np.int64), indices, colors, nc)
        st.hess = _Fixed(indptr, indices, (n, n), colors, src, trace)
    return st.hess


def _check_fits(F, fixed, trace, hessian):
    """Refuse a trace whose pattern is not inside the fixed one (SparsityChanged)."""
    ok = fixed.fits.get(trace)
    if ok is None:
        import scipy.sparse as sp
        _, layout = F._sparse_layout(trace=trace)
        jac, hess, n = _trace_patterns(trace, layout, hessian)
        indptr, indices = hess if hessian else jac
        new = _csr(indptr, indices, fixed.shape)
        old = _csr(fixed.indptr, fixed.indices, fixed.shape)
        outside = sp.csr_array(new.astype(np.int8) - new.multiply(old).astype(np.int8))
        outside.eliminate_zeros()
        ok = True if outside.nnz == 0 else outside
        # known traces only: a trace dropped from F's cache can be collected
        fixed.fits = {t: v for t, v in fixed.fits.items() if t in F.traces}
        fixed.fits[trace] = ok
    if ok is not True:
        outside = ok
        r, c = outside.nonzero()
        what = "Hessian" if hessian else "Jacobian"
        raise SparsityChanged(
            f"compiled {getattr(F.fun, '__name__', 'function')}: these inputs take another "
            f"branch, whose {what} has {outside.nnz} entries outside the sparsity pattern "
            f"fixed by the first call (the first at ({r[0]}, {c[0]})); a sparse structure "
            "cannot change between calls: write the branch with numpy.where (both sides "
            "stay on the tape and the pattern covers them) or compile a new function")


def jacobian_sparsity(F):
    """The Jacobian pattern of compiled F as a ``csr_array`` of bools (m, n); see
    :meth:`fastape.Function.jacobian_sparsity`."""
    return _fixed_jacobian(F).pattern()


def hessian_sparsity(F):
    """The symmetric (Lagrangian) Hessian pattern of compiled F as a ``csr_array`` of
    bools (n, n); see :meth:`fastape.Function.hessian_sparsity`."""
    return _fixed_hessian(F).pattern()


def _scatter(fixed, B, src=None):
    from scipy.sparse import csr_array
    data = np.take(B.reshape(-1), fixed.src if src is None else src)
    out = csr_array((data, fixed.indices, fixed.indptr), shape=fixed.shape, copy=False)
    out.has_canonical_format = True     # sorted, no duplicates: nothing to redo in place
    return out


def sparse_jacobian(F, *args):
    """J(args) of compiled F as a ``csr_array`` with the fixed pattern; see
    :meth:`fastape.Function.sparse_jacobian`."""
    fixed = _fixed_jacobian(F)
    if not fixed.reverse:
        try:
            trace, _ = F._sparse_layout(args)
            _check_fits(F, fixed, trace, False)
            m = fixed.shape[0]
            # J S also as ∂²L/∂v∂x S of the scalar replay of L = Σ vᵢ fᵢ (its weights'
            # adjoints are the fᵢ, their tangents J S): the grouped direct sweep, often
            # faster than the tangent sweeps of a general-layout tape. Only a replay that
            # sparse_hessian compiled is used: compiling one costs a first call about
            # ten IPOPT iterations' worth of Jacobians
            L = _state(F).scalar_lagrangians.get(trace)
            if L is not None and not L.traces[-1].direct_hvp:
                L = None
            # a grouped tape also runs the vector-mode sweep run by run (way 2)
            ways = (False, True) + ((2,) if trace.run_count else ()) + \
                (() if L is None else ("L", "L1"))

            def compressed(way):
                if way in ("L", "L1"):
                    w = 1.0 if m == 1 else np.ones(m)
                    return L._compressed((w,) + tuple(args), fixed.colors, fixed.ncolors,
                                         True, way == "L1", 0)
                return F._compressed(args, fixed.colors, fixed.ncolors, False, way)
            return _scatter(fixed, fixed.evaluate(compressed, ways)[0])
        except NoTangentRule:
            fixed.reverse = True
    # no tangents (custom_vjp): Sᵀ J by one reverse sweep per color of the rows
    if fixed.rows is None:
        m, n = fixed.shape
        rows = color_columns(_csr(fixed.indptr, fixed.indices, fixed.shape).T)
        r = np.repeat(np.arange(m, dtype=np.int64), np.diff(fixed.indptr))
        fixed.rows = (rows, int(rows.max()) + 1 if m else 0,
                      rows[r] * n + fixed.indices.astype(np.int64))
    colors, nc, src = fixed.rows
    B, trace = F._compressed_reverse(args, colors, nc)
    _check_fits(F, fixed, trace, False)
    return _scatter(fixed, B, src)


def _compressed_hessian(G, args, fixed):
    """∇²g S at args for compiled scalar g: the direct sweep when its trace allows it,
    else forward mode over its compiled gradient."""
    def compressed(single):
        B, trace = G._compressed(args, fixed.colors, fixed.ncolors, True, single)
        if B is None:
            B, trace = G._gradient_function()._compressed(args, fixed.colors, fixed.ncolors,
                                                          False, single)
        return B, trace
    if not fixed.reverse:
        try:
            return fixed.evaluate(compressed)[0]
        except NoTangentRule:
            fixed.reverse = True
    # a custom_vjp rule has no tangents: H S = (Sᵀ H)ᵀ (H symmetric), one reverse sweep
    # of the compiled gradient per color
    return G._gradient_function()._compressed_reverse(args, fixed.colors, fixed.ncolors)[0].T


def sparse_hessian(F, *args, v=None):
    """∇²f(args), or Σ vᵢ ∇²fᵢ(args) for a vector output, of compiled F as a symmetric
    ``csr_array`` with the fixed pattern; see :meth:`fastape.Function.sparse_hessian`."""
    fixed = _fixed_hessian(F)
    trace, _ = F._sparse_layout(args)       # checks the arguments; its branch's trace
    m = _out_size(trace)
    where = f"sparse_hessian of compiled {getattr(F.fun, '__name__', 'function')}"
    if v is None and m != 1:
        raise ShapeError(f"{where}: the output has {m} elements, so v (their weights, "
                         f"length {m}) is required for the Lagrangian Hessian")
    if v is not None:
        w = np.asarray(v)
        if w.dtype.kind not in "biuf":
            raise TypeError(f"{where}: v must be real numbers, got dtype {w.dtype}")
        w = np.asarray(w, dtype=np.float64)
        if w.size != m or (w.ndim > 1 and w.shape != tuple(trace.out_shape)):
            raise ShapeError(f"{where}: v must have one weight per output element "
                             f"(shape ({m},) or {tuple(trace.out_shape)}), got shape "
                             f"{w.shape}")
        w = np.ascontiguousarray(w).reshape(-1)
    _check_fits(F, fixed, trace, True)
    if v is None:
        w = np.ones(1)
    # the direct sweep on F itself, else on the scalar replay of Σ vᵢ fᵢ (a scalar
    # output read from slices is in the general layout too), else through a gradient
    # (one weight is a number: a length-1 array input would stay an array node)
    weights = float(w[0]) if m == 1 else w
    L = None if m == 1 and trace.direct_hvp else _scalar_lagrangian(F, trace, args, weights)
    if L is not None:
        B = _compressed_hessian(L, (weights,) + tuple(args), fixed)
    elif m == 1:
        B = _compressed_hessian(F, tuple(args), fixed)
        if v is not None:
            B = B * w[0]
    else:
        B = _compressed_hessian(_lagrangian(F, args, w), (w,) + tuple(args), fixed)
    return _scatter(fixed, B)


def _compile_lagrangian(F, lagrangian, w, args, what, **options):
    """Compile lagrangian(weights, *args) (Σ vᵢ fᵢ, `what` names its kind) with F's
    argnums moved past the weights (so the weights are an input, not recorded)."""
    from fastape import api
    lagrangian.__name__ = f"lagrangian of {getattr(F.fun, '__name__', 'f')}{what}"
    nums = F.argnums
    argnums = (nums + 1 if nums >= 0 else nums) if isinstance(nums, int) else \
        tuple(k + 1 if k >= 0 else k for k in nums)
    return api.compile(lagrangian, w, *args, argnums=argnums, **options)


def _lagrangian(F, args, w):
    """Σ vᵢ fᵢ(args) compiled, v its first argument."""
    st = _state(F)
    if st.lagrangian is None:
        from fastape import _functions
        fun = F.fun

        def lagrangian(weights, *a):
            return _functions.sum(_functions.reshape(fun(*a), (-1,)) * weights)
        st.lagrangian = _compile_lagrangian(F, lagrangian, w, args, "",
                                            retrace=F.retrace, max_traces=F.max_traces)
    return st.lagrangian


# ---------------------------------------------------------------------------
# the Lagrangian of a vector output replayed on scalars
# ---------------------------------------------------------------------------

# The direct forward-over-reverse sweep needs a scalar output on the scalar layout. A
# vector output has neither: even when its trace is in the scalar layout (ft.stack of a
# loop's results, held as the elements' nodes, Trace.outs), the Hessian of Σ vᵢ fᵢ is
# that of another function, and slices of the input that are also read whole (by an
# array op: STRIDED nodes that pruning keeps) put a trace in the general layout, where
# Hessians go through the compiled gradient (recorded in Python, then swept node by
# node). Replaying such a trace element by element, Σ vᵢ fᵢ becomes
# a tape of scalar ops, on which the direct sweep runs run by run. The replay
# records every elementwise node with its own opcode (the same value, bit for bit) and
# only moves elements for the structural ops below; a trace with any other op is not
# replayed. It holds one branch: it is made per trace, and used only after the call's
# trace has been found and checked (sparse_hessian).

_MOVES = ("INPUT", "CONSTANT", "GATHER1", "GATHER", "STRIDED", "BROADCAST", "CONCAT", "COPY")


def _replay_plan(trace):
    """The trace's tape as lists, or None if it holds an op the replay does not move."""
    codes = registry.opcodes()
    names = {v: k for k, v in codes.items()}
    ex = trace.tape.export()
    ops = ex["op"].tolist()
    for o in set(ops):
        e = registry.BY_NAME.get(names[o])
        if names[o] not in _MOVES and not (isinstance(e, registry.Elementwise) and
                                          not e.partial_of):
            return None
    return ex, ops, names


def _scalar_lagrangian(F, trace, args, w):
    """Σ vᵢ fᵢ compiled from this trace replayed on scalars (v its first argument), or
    None when the trace cannot be replayed so."""
    st = _state(F)
    if trace in st.scalar_lagrangians:
        return st.scalar_lagrangians[trace]
    plan = _replay_plan(trace)
    L = None
    if plan is not None:
        replay = _replayer(plan, list(trace.inputs), trace.output, trace.outs)

        def lagrangian(weights, *a):
            return replay(weights, a)
        # one branch, without guards: retracing would record the same replay again
        L = _compile_lagrangian(F, lagrangian, w, args, " (scalars)", retrace=False)
    st.scalar_lagrangians = {t: v for t, v in st.scalar_lagrangians.items() if t in F.traces}
    st.scalar_lagrangians[trace] = L
    return L


def _replayer(plan, inputs, output, outs=None):
    """fun(weights, args): Σ weights[i] · (element i of the output), the trace's nodes
    recorded again element by element. A node's elements are one scalar value (a Var,
    or a float for a constant) when it has one, else a list of them. The output is node
    `output`, or (outs) element i is scalar node outs[i]."""
    from fastape import _tape
    from fastape._tree import flatten
    ex, ops, names = plan
    n = len(ops)
    a, b = ex["a"].tolist(), ex["b"].tolist()
    pool, val = ex["pool"].tolist(), ex["val"]
    if "off" in ex:
        off, poff, P = ex["off"], ex["poff"], ex["P"]
        sizes = np.where(poff < 0, 1, P[np.maximum(poff, 0)] if len(P) else 1).tolist()
        off, poff, P = off.tolist(), poff.tolist(), P.tolist()
    else:
        off, poff, P, sizes = list(range(n)), [-1] * n, [], [1] * n
    vals = val.tolist()
    UNARY, UNARY_K, BINARY, COPY, INPUT, CONSTANT, GATHER1, GATHER, STRIDED, BROADCAST, \
        CONCAT = range(11)
    code = {"COPY": COPY, "INPUT": INPUT, "CONSTANT": CONSTANT, "GATHER1": GATHER1,
            "GATHER": GATHER, "STRIDED": STRIDED, "BROADCAST": BROADCAST, "CONCAT": CONCAT}
    kind = {}
    for o in set(ops):
        e = registry.BY_NAME.get(names[o])
        kind[o] = code[names[o]] if names[o] in code else \
            (UNARY_K if e.has_k else UNARY if e.arity == 1 else BINARY)
    kinds = [kind[o] for o in ops]
    first_input = dict(zip(inputs, range(len(inputs))))
    unary, unary_k, binary, item = _tape.unary, _tape.unary_k, _tape.binary, _tape.item

    def elements(x, m):
        return x if m > 1 else [x]

    def replay(weights, args):
        leaves = flatten(tuple(args), "args")[0]
        el = [None] * n
        scalarised = {}             # consecutive scalar inputs of one array leaf
        for node, k in first_input.items():
            leaf = leaves[k]
            if leaf.size > 1 and sizes[node] == 1:
                for e in range(leaf.size):
                    scalarised[node + e] = (leaf, e)
        for i in range(n):
            kd = kinds[i]
            m = sizes[i]
            if m == 1 and kd <= BINARY:         # the scalar ops: most nodes
                x = el[a[i]]
                if sizes[a[i]] > 1:
                    x = x[0]
                if kd == BINARY:
                    y = el[b[i]]
                    if sizes[b[i]] > 1:
                        y = y[0]
                    el[i] = vals[off[i]] if type(x) is float and type(y) is float \
                        else binary(ops[i], x, y)
                elif type(x) is float:
                    el[i] = vals[off[i]]
                else:
                    el[i] = unary_k(ops[i], x, pool[b[i]]) if kd == UNARY_K \
                        else unary(ops[i], x)
            elif kd == INPUT:
                if i in scalarised:
                    leaf, e = scalarised[i]
                    el[i] = item(leaf, e)
                else:
                    leaf = leaves[first_input[i]]
                    el[i] = leaf if leaf.shape == () or leaf.size == 1 and m == 1 \
                        else [item(leaf, j) for j in range(leaf.size)]
            elif kd == CONSTANT:
                el[i] = vals[off[i]] if m == 1 else vals[off[i]:off[i] + m]
            elif kd <= COPY:                    # elementwise on arrays
                xs = elements(el[a[i]], sizes[a[i]])
                sx = len(xs) != 1
                out = []
                if kd == BINARY:
                    ys = elements(el[b[i]], sizes[b[i]])
                    sy = len(ys) != 1
                    for e in range(m):
                        x, y = xs[e * sx], ys[e * sy]
                        out.append(vals[off[i] + e] if type(x) is float and type(y) is float
                                   else binary(ops[i], x, y))
                elif kd == COPY:
                    out = [xs[e * sx] for e in range(m)]
                else:
                    for e in range(m):
                        x = xs[e * sx]
                        out.append(vals[off[i] + e] if type(x) is float else
                                   unary_k(ops[i], x, pool[b[i]]) if kd == UNARY_K
                                   else unary(ops[i], x))
                el[i] = out[0] if m == 1 else out   # (a copy as shape (1,), say)
            else:
                xs = elements(el[a[i]], sizes[a[i]])
                q0 = poff[i]
                if kd == GATHER1:
                    out = [xs[int(pool[b[i]])]]
                elif kd == GATHER:
                    out = [xs[j] for j in P[q0 + 1:q0 + 1 + m]]
                elif kd == STRIDED:
                    out = [xs[P[q0 + 1] + j * P[q0 + 2]] for j in range(m)]
                elif kd == BROADCAST:
                    nd = P[q0 + 1]
                    dims = tuple(P[q0 + 2:q0 + 2 + nd])
                    strides = np.array(P[q0 + 2 + nd:q0 + 2 + 2 * nd], dtype=np.int64)
                    src = strides @ np.indices(dims).reshape(nd, -1) if nd else [0]
                    out = [xs[int(j)] for j in src]
                else:                           # CONCAT: parts side by side
                    outer, inner, total, nparts = P[q0 + 1:q0 + 5]
                    out = [None] * (outer * total * inner)
                    for q in range(nparts):
                        part, start, ln = P[q0 + 5 + 3 * q:q0 + 8 + 3 * q]
                        ys = elements(el[part], sizes[part])
                        ln *= inner
                        for s_ in range(outer):
                            out[(s_ * total + start) * inner:(s_ * total + start) * inner + ln] \
                                = ys[s_ * ln:(s_ + 1) * ln]
                el[i] = out[0] if m == 1 else out
        total = 0.0
        for e, z in enumerate(elements(el[output], sizes[output]) if outs is None
                              else [el[j] for j in outs]):
            if type(z) is not float:
                total = total + (weights if weights.shape == () else item(weights, e)) * z
        return total
    return replay
