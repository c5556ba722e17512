"""Sparsity patterns, colorings, sparse Jacobians and Hessians (fastape.sparse).

Every sparse derivative is compared with the dense one of the same compiled function
(``F.jacobian``, ``F.hessian`` or the Lagrangian's eager ``ft.hessian``) and with
central differences; every pattern with the nonzeros of dense derivatives at random
points (it must hold all of them, and on functions without cancellation exactly
them); every coloring with a validity check written here from the definitions.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from helpers import fd_jacobian
from scipy.sparse.csgraph import connected_components

import fastape as ft
from fastape import registry
from fastape import sparse as fs
from fastape.errors import ShapeError

# -- independent checks --------------------------------------------------------------


def assert_columns_valid(P, colors):
    """Distance-2: the columns of one row all have different colors."""
    P = sp.csr_array(P)
    for r in range(P.shape[0]):
        c = colors[P.indices[P.indptr[r]:P.indptr[r + 1]]]
        assert len(np.unique(c)) == len(c), f"row {r}: columns share a color"


def assert_star_valid(P, colors):
    """Star coloring: adjacent vertices differ, and the subgraph of any two colors is a
    forest of stars (every component a tree with at most one vertex of degree > 1),
    i.e. no path on four vertices has two colors."""
    A = sp.csr_array(P, dtype=bool)
    A = sp.csr_array(A + A.T)
    A.setdiag(False)
    A.eliminate_zeros()
    r, c = A.nonzero()
    assert np.all(colors[r] != colors[c]), "adjacent vertices share a color"
    ncol = colors.max() + 1 if len(colors) else 0
    for c1 in range(ncol):
        for c2 in range(c1 + 1, ncol):
            keep = np.flatnonzero((colors == c1) | (colors == c2))
            sub = A[keep][:, keep]
            k, labels = connected_components(sub, directed=False)
            deg = np.asarray(sub.sum(axis=1)).ravel()
            for comp in range(k):
                members = labels == comp
                edges = deg[members].sum() // 2
                assert edges == members.sum() - 1, "a two-colored cycle"
                assert (deg[members] > 1).sum() <= 1, f"colors {c1}, {c2}: a two-colored P4"


def nonzeros(M, tol=0.0):
    return np.abs(np.asarray(M)) > tol


def assert_covers(P, dense_list, exact=True):
    """The pattern holds every nonzero of the dense derivatives (and, exact, only them)."""
    got = P.toarray().astype(bool)
    union = np.zeros_like(got)
    for D in dense_list:
        # rounding leaves ~1e-16 where a rule's formula cancels (cumprod divides)
        D = np.asarray(D).reshape(got.shape)
        D = nonzeros(D, 1e-12 * np.abs(D).max(initial=0.0))
        assert not np.any(D & ~got), f"pattern misses {np.argwhere(D & ~got)[:5]}"
        union |= D
    if exact:
        assert np.array_equal(got, union), f"extra entries {np.argwhere(got & ~union)[:5]}"


# -- functions with sparse structure ----------------------------------------------------

def banded_loop(lower, upper):
    """A scalar loop whose Jacobian has bandwidth lower + upper."""
    def f(x):
        n = len(x)
        out = []
        for i in range(n):
            s = ft.sin(x[i])
            for j in range(max(0, i - lower), min(n, i + upper + 1)):
                if j != i:
                    s = s + x[j] * x[i] * (1.0 + 0.1 * j)
            out.append(s)
        return ft.stack(out)
    return f


def rosen_loop(x):
    s = 0.0
    for i in range(len(x) - 1):
        s = s + 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2
    return s


def arrow(x):
    """The first variable couples with every other: an arrow-shaped Hessian."""
    s = 0.0
    for i in range(1, len(x)):
        s = s + ft.exp(0.1 * x[0] * x[i]) + x[i] ** 4
    return s


def block_diagonal(x):
    """Array code: blocks of 4 variables, each a small dense nonlinear map."""
    X = ft.reshape(x, (-1, 4))
    W = np.arange(16.0).reshape(4, 4) / 10 + np.eye(4)
    return ft.reshape(np.tanh(X @ W) * X, (-1,))


def random_graph(n, m, seed):
    rng = np.random.default_rng(seed)
    edges = [tuple(sorted(rng.choice(n, 2, replace=False))) for _ in range(m)]
    weights = rng.uniform(0.5, 1.5, m)

    def f(x):
        s = 0.0
        for (i, j), w in zip(edges, weights):
            s = s + w * ft.cos(x[i] - 0.5 * x[j]) * x[i]
        return s
    return f, edges


# -- Jacobians -----------------------------------------------------------------------

@pytest.mark.parametrize("lower,upper", [(1, 1), (0, 2), (2, 1), (3, 3)])
def test_banded_jacobian(lower, upper, rng):
    n = 17
    f = banded_loop(lower, upper)
    x = rng.uniform(-1, 1, n)
    F = ft.compile(f, x)
    P = F.jacobian_sparsity()
    assert P.shape == (n, n) and P.dtype == bool
    i, j = np.indices((n, n))
    assert np.array_equal(P.toarray(), (j - i <= upper) & (i - j <= lower))
    colors = fs.color_columns(P)
    assert_columns_valid(P, colors)
    assert colors.max() + 1 <= lower + upper + 1
    for _ in range(3):
        x = rng.uniform(-1, 1, n)
        J = F.sparse_jacobian(x)
        assert isinstance(J, sp.csr_array) and J.shape == (n, n)
        np.testing.assert_allclose(J.toarray(), F.jacobian(x), rtol=1e-14, atol=1e-14)
        np.testing.assert_allclose(J.toarray(), fd_jacobian(F, x), rtol=1e-6, atol=1e-7)


def test_structure_is_fixed_and_shared(rng):
    x = rng.uniform(-1, 1, 9)
    F = ft.compile(banded_loop(1, 1), x)
    A = F.sparse_jacobian(x)
    B = F.sparse_jacobian(2 * x)
    # one structure in memory (scipy hands out views of it)
    assert np.shares_memory(A.indices, B.indices) and np.shares_memory(A.indptr, B.indptr)
    assert A.data is not B.data
    assert np.array_equal(A.indices, F.jacobian_sparsity().indices)
    np.testing.assert_allclose(B.toarray(), F.jacobian(2 * x), rtol=1e-14)
    H1, H2 = F.sparse_hessian(x, v=np.ones(9)), F.sparse_hessian(x, v=np.arange(9.0))
    assert np.shares_memory(H1.indices, H2.indices)


def test_explicit_zeros_are_kept():
    """x * y at y = 0: the entry ∂/∂x is 0 there but in the pattern."""
    F = ft.compile(lambda x: ft.stack([x[0] * x[1], x[1] ** 2]), np.array([1.0, 2.0]))
    J = F.sparse_jacobian(np.array([3.0, 0.0]))
    assert J.nnz == 3
    np.testing.assert_array_equal(J.toarray(), [[0.0, 3.0], [0.0, 0.0]])


def test_block_diagonal_array_code(rng):
    n = 16
    x = rng.uniform(-1, 1, n)
    F = ft.compile(block_diagonal, x)
    P = F.jacobian_sparsity()
    blocks = np.kron(np.eye(n // 4), np.ones((4, 4))).astype(bool)
    assert np.array_equal(P.toarray(), blocks)
    colors = fs.color_columns(P)
    assert_columns_valid(P, colors)
    assert colors.max() + 1 == 4
    np.testing.assert_allclose(F.sparse_jacobian(x).toarray(), F.jacobian(x), rtol=1e-13,
                               atol=1e-15)
    v = rng.normal(size=n)
    H = F.sparse_hessian(x, v=v)
    Hd = ft.hessian(lambda y: ft.sum(block_diagonal(y) * v))(x)
    np.testing.assert_allclose(H.toarray(), Hd, rtol=1e-12, atol=1e-13)
    assert_covers(F.hessian_sparsity(), [Hd])
    c = fs.color_symmetric(F.hessian_sparsity())
    assert_star_valid(F.hessian_sparsity(), c)
    assert c.max() + 1 <= 4


def test_random_sparse_jacobian_equals_dense(rng):
    """Rows that read random columns, with every elementwise flavour."""
    n, m = 30, 25
    cols = [rng.choice(n, rng.integers(1, 4), replace=False) for _ in range(m)]

    def f(x):
        out = []
        for c in cols:
            s = ft.exp(0.3 * x[c[0]])
            for j in c[1:]:
                s = s * ft.tanh(x[j]) + x[j] / (2.0 + x[c[0]] ** 2)
            out.append(s)
        return ft.stack(out)
    x = rng.uniform(-1, 1, n)
    F = ft.compile(f, x)
    P = F.jacobian_sparsity()
    expect = np.zeros((m, n), bool)
    for r, c in enumerate(cols):
        expect[r, c] = True
    assert np.array_equal(P.toarray(), expect)
    colors = fs.color_columns(P)
    assert_columns_valid(P, colors)
    J = F.sparse_jacobian(x)
    np.testing.assert_allclose(J.toarray(), F.jacobian(x), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(J.toarray(), fd_jacobian(F, x), rtol=1e-6, atol=1e-8)


# -- Hessians ------------------------------------------------------------------------

def test_tridiagonal_hessian_three_colors(rng):
    n = 40
    x = rng.uniform(-1, 1, n)
    F = ft.compile(rosen_loop, x)
    P = F.hessian_sparsity()
    i, j = np.indices((n, n))
    assert np.array_equal(P.toarray(), np.abs(i - j) <= 1)
    colors = fs.color_symmetric(P)
    assert_star_valid(P, colors)
    assert colors.max() + 1 <= 3
    for _ in range(3):
        x = rng.uniform(-1.5, 1.5, n)
        H = F.sparse_hessian(x)
        assert (abs(H - H.T)).max() == 0
        np.testing.assert_allclose(H.toarray(), F.hessian(x), rtol=1e-14, atol=1e-12)
        np.testing.assert_allclose(H.toarray(), fd_jacobian(F.grad, x), rtol=1e-6, atol=1e-4)
        np.testing.assert_allclose(F.sparse_hessian(x, v=[2.5]).toarray(),
                                   2.5 * F.hessian(x), rtol=1e-14, atol=1e-12)


def test_arrow_hessian_two_colors(rng):
    n = 25
    x = rng.uniform(-1, 1, n)
    F = ft.compile(arrow, x)
    P = F.hessian_sparsity()
    expect = np.eye(n, dtype=bool)
    expect[0, :] = expect[:, 0] = True
    assert np.array_equal(P.toarray(), expect)
    colors = fs.color_symmetric(P)
    assert_star_valid(P, colors)
    assert colors.max() + 1 == 2
    H = F.sparse_hessian(x)
    np.testing.assert_allclose(H.toarray(), F.hessian(x), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("seed", range(4))
def test_random_graph_hessian(seed, rng):
    n = 30
    f, edges = random_graph(n, 45, seed)
    x = rng.uniform(-1, 1, n)
    F = ft.compile(f, x)
    P = F.hessian_sparsity()
    expect = np.eye(n, dtype=bool)
    for i, j in edges:
        expect[i, j] = expect[j, i] = True
    used = {k for e in edges for k in e}
    expect[np.arange(n), np.arange(n)] = [k in used for k in range(n)]
    assert np.array_equal(P.toarray(), expect)
    colors = fs.color_symmetric(P)
    assert_star_valid(P, colors)
    for _ in range(2):
        x = rng.uniform(-1, 1, n)
        H = F.sparse_hessian(x)
        np.testing.assert_allclose(H.toarray(), F.hessian(x), rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(H.toarray(), fd_jacobian(F.grad, x), rtol=1e-6, atol=1e-6)


def test_lagrangian_hessian_of_constraints(rng):
    n = 12
    f = banded_loop(1, 2)
    x = rng.uniform(-1, 1, n)
    F = ft.compile(f, x)
    for _ in range(2):
        v = rng.normal(size=n)
        H = F.sparse_hessian(x, v=v)
        Hd = ft.hessian(lambda y, v=v: ft.sum(f(y) * v))(x)
        np.testing.assert_allclose(H.toarray(), Hd, rtol=1e-12, atol=1e-13)
        assert_covers(F.hessian_sparsity(), [Hd])
        x = rng.uniform(-1, 1, n)


# -- coloring on patterns alone ---------------------------------------------------------

@pytest.mark.parametrize("lower,upper", [(0, 0), (1, 0), (2, 3), (5, 1)])
def test_banded_column_coloring(lower, upper):
    n = 50
    i, j = np.indices((n, n))
    P = (j - i <= upper) & (i - j <= lower)
    colors = fs.color_columns(P)
    assert_columns_valid(P, colors)
    assert colors.max() + 1 == lower + upper + 1


def test_random_colorings_are_valid(rng):
    for _ in range(10):
        n = int(rng.integers(5, 60))
        P = rng.random((n, n)) < rng.uniform(0.02, 0.3)
        assert_columns_valid(P, fs.color_columns(P))
        S = P | P.T
        c = fs.color_symmetric(S)
        assert_star_valid(S, c)
        # direct recovery from the star coloring reproduces a random symmetric H
        H = np.where(S | np.eye(n, dtype=bool), rng.normal(size=(n, n)), 0.0)
        H = H + H.T
        Sp = sp.csr_array(H != 0)
        Sp.sort_indices()
        nc = c.max() + 1
        B = H @ np.eye(nc)[c]
        from fastape import _sparsity
        src = _sparsity.star_sources(Sp.indptr.astype(np.int64), Sp.indices.astype(np.int32),
                                     c, nc)
        rec = sp.csr_array((B.reshape(-1)[src], Sp.indices, Sp.indptr), shape=(n, n))
        np.testing.assert_array_equal(rec.toarray(), H)


def test_explicit_zeros_of_a_pattern_are_not_entries():
    P = sp.csr_array(np.array([[1, 1], [0, 0]]))
    P.data[1] = 0                           # (0, 1) stored but zero
    assert np.array_equal(fs.color_columns(P), [0, 0])     # no row shared
    S = sp.csr_array(np.ones((3, 3)))
    S.data[[1, 3]] = 0                      # (0, 1) and (1, 0): a path 1-2-0
    c = fs.color_symmetric(S)
    assert c[0] == c[1] and c.max() + 1 == 2


def test_coloring_bad_input():
    with pytest.raises(ShapeError, match="square"):
        fs.color_symmetric(np.ones((2, 3)))
    with pytest.raises(ShapeError, match="2-D"):
        fs.color_columns(np.ones(3))


# -- structural and linear-algebra ops ---------------------------------------------------

A_BAND = np.diag(np.full(8, 2.0)) + np.diag(np.ones(7), 1) + np.diag(np.ones(7), -1)
STRUCTURAL = {
    "index_slice": (lambda x: ft.concatenate([x[2:5] ** 2, x[::3] * x[0]]), True),
    "fancy_index": (lambda x: ft.sin(x[np.array([3, 1, 1, 7])]) * x[0], True),
    "reshape_transpose": (lambda x: ft.reshape(ft.transpose(ft.reshape(x, (2, 4))) ** 2,
                                               (-1,)), True),
    "broadcast": (lambda x: ft.reshape(ft.reshape(x[:4], (4, 1)) * x[4:], (-1,)), True),
    "sum_axis": (lambda x: ft.sum(ft.reshape(x, (2, 4)) ** 2, axis=1), True),
    "mean_keepdims": (lambda x: ft.reshape(ft.mean(ft.reshape(x, (4, 2)), axis=0,
                                                   keepdims=True), (-1,)) ** 3, True),
    "prod": (lambda x: ft.prod(ft.reshape(x, (4, 2)), axis=1), True),
    "max": (lambda x: ft.max(ft.reshape(x, (2, 4)), axis=1), False),
    "cumsum": (lambda x: ft.cumsum(x ** 2), True),
    "cumprod": (lambda x: ft.cumprod(x[:4]), True),
    "where": (lambda x: ft.where(x > 0.0, x ** 2, ft.sin(x[::-1])), False),
    "dot": (lambda x: ft.dot(x[:4], x[4:]) * x[0], True),
    "stack": (lambda x: ft.stack([x[0] * x[1], x[5], ft.exp(x[7])]), True),
    "matmul_constant_banded": (lambda x: ft.tanh(A_BAND @ x), True),
    "matmul_variable": (lambda x: ft.reshape(ft.reshape(x[:4], (2, 2)) @
                                             ft.reshape(x[4:], (2, 2)), (-1,)), True),
    "solve": (lambda x: ft.linalg.solve(ft.reshape(x[:4], (2, 2)) + 3 * np.eye(2), x[4:6]),
              True),
    "inv": (lambda x: ft.reshape(ft.linalg.inv(ft.reshape(x[4:], (2, 2)) + 3 * np.eye(2)),
                                 (-1,)), True),
    "det": (lambda x: ft.linalg.det(ft.reshape(x[:4], (2, 2))) * x[7], True),
    "norm": (lambda x: ft.linalg.norm(ft.reshape(x, (2, 4)), axis=1), True),
}


@pytest.mark.parametrize("name", sorted(STRUCTURAL))
def test_structural_patterns(name, rng):
    f, exact = STRUCTURAL[name]
    x = rng.uniform(0.2, 1.0, 8) * rng.choice([-1.0, 1.0], 8)
    F = ft.compile(f, x)
    P = F.jacobian_sparsity()
    m = P.shape[0]
    pts = [x * rng.uniform(0.5, 1.5, 8) for _ in range(3)]
    jacs = [np.asarray(F.jacobian(p)).reshape(m, 8) for p in pts]
    assert_covers(P, jacs, exact)
    for p, Jd in zip(pts, jacs):
        np.testing.assert_allclose(F.sparse_jacobian(p).toarray(), Jd, rtol=1e-12, atol=1e-14)
    v = rng.normal(size=m)
    HP = F.hessian_sparsity()
    hess = [ft.hessian(lambda y: ft.sum(ft.reshape(f(y), (-1,)) * v))(p) for p in pts]
    assert_covers(HP, hess, exact=exact and name not in ("dot", "stack", "det"))
    for p, Hd in zip(pts, hess):
        np.testing.assert_allclose(F.sparse_hessian(p, v=v).toarray(), Hd, rtol=1e-10,
                                   atol=1e-12)


def test_hessian_counts_only_elements_that_reach_the_output():
    """Liveness element by element: the unused elements of an array op add nothing."""
    F = ft.compile(lambda x: (x ** 3)[1] + ft.sum(x * 2.0) + ft.prod(x[2:]), np.ones(5))
    expect = np.zeros((5, 5), bool)
    expect[1, 1] = True
    expect[2:, 2:] = ~np.eye(3, dtype=bool)        # a product: no squares
    assert np.array_equal(F.hessian_sparsity().toarray(), expect)
    x = np.array([0.3, -0.5, 0.7, 1.1, -0.9])
    np.testing.assert_allclose(F.sparse_hessian(x).toarray(), F.hessian(x), atol=1e-14)
    G = ft.compile(lambda x: ft.cumprod(x)[2], np.ones(5))    # x0 x1 x2
    expect = np.zeros((5, 5), bool)
    expect[:3, :3] = ~np.eye(3, dtype=bool)
    assert np.array_equal(G.hessian_sparsity().toarray(), expect)


def test_constant_banded_matmul_stays_banded():
    F = ft.compile(lambda x: ft.tanh(A_BAND @ x), np.ones(8))
    i, j = np.indices((8, 8))
    assert np.array_equal(F.jacobian_sparsity().toarray(), np.abs(i - j) <= 1)
    assert np.array_equal(F.hessian_sparsity().toarray(), np.abs(i - j) <= 2)


# -- every elementwise op: linear or not, from its registry block ------------------------

UNARY = [e for e in registry.ELEMENTWISE if e.public and e.arity == 1]
BINARY = [e for e in registry.ELEMENTWISE if e.public and e.arity == 2]


def _is_zero(expr):
    try:
        return float(expr) == 0.0
    except ValueError:
        return False


@pytest.mark.parametrize("op", UNARY + BINARY, ids=lambda e: e.name)
def test_every_elementwise_op(op, rng):
    fn = getattr(ft, op.public)
    lo0, hi0 = op.domain[0]
    lo1, hi1 = op.domain[1]
    if op.arity == 1:
        x = rng.uniform(lo0, hi0, 4)

        def f(z):
            return fn(z) * np.array([1.0, 2.0, 3.0, 4.0])
    elif op.fixed:
        # not differentiated in its first operand (a shape, an order): a constant there
        a = np.round(rng.uniform(lo0, hi0, 2))
        x = rng.uniform(lo1, hi1, 2)

        def f(z):
            return fn(a, z)
    else:
        x = np.concatenate([rng.uniform(lo0, hi0, 2), rng.uniform(lo1, hi1, 2)])

        def f(z):
            return fn(z[:2], z[2:])
    F = ft.compile(f, x)
    P = F.jacobian_sparsity().toarray()
    J = np.asarray(F.jacobian(x))
    assert not np.any(nonzeros(J) & ~P)
    linear0 = _is_zero(op.d0) and (op.arity == 1 or _is_zero(op.d1))
    assert P.any() != linear0
    H = F.hessian_sparsity().toarray()
    v = np.ones(P.shape[0])
    Hd = ft.hessian(lambda y: ft.sum(f(y) * v))(x)
    assert not np.any(nonzeros(Hd) & ~H), op.name
    flat = all(_is_zero(d) for d in (op.d00, op.d01, op.d11))
    assert H.any() != flat, op.name
    np.testing.assert_allclose(F.sparse_hessian(x, v=v).toarray(), Hd, rtol=1e-10,
                               atol=1e-12)


def test_every_structural_op_has_a_rule():
    kinds, _ = fs.op_tables()
    codes = registry.opcodes()
    for name in codes:
        assert kinds[codes[name]] != 255, name


# -- branches and guards ----------------------------------------------------------------

def branchy(x):
    if x[0] > 0:
        return ft.stack([x[0] * x[1], x[2]])
    return ft.stack([x[0] * x[2], x[1] ** 2])


def test_branch_with_another_pattern_is_refused():
    x = np.array([1.0, 2.0, 3.0])
    F = ft.compile(branchy, x)
    P = F.jacobian_sparsity().toarray()
    np.testing.assert_array_equal(P, [[1, 1, 0], [0, 0, 1]])
    with pytest.raises(fs.SparsityChanged, match="another branch"):
        F.sparse_jacobian(np.array([-1.0, 2.0, 3.0]))
    # the recorded branch still works afterwards
    np.testing.assert_allclose(F.sparse_jacobian(x).toarray(), F.jacobian(x))


def test_branch_inside_the_pattern_is_evaluated():
    def f(x):
        if x[0] > 0:
            return ft.stack([x[0] * x[1], x[1] + x[2]])
        return ft.stack([x[1] * 2.0, x[2] * 3.0])       # a sub-pattern
    x = np.array([1.0, 2.0, 3.0])
    F = ft.compile(f, x)
    y = np.array([-1.0, 2.0, 3.0])
    J = F.sparse_jacobian(y)
    assert J.nnz == F.jacobian_sparsity().nnz
    np.testing.assert_allclose(J.toarray(), F.jacobian(y))


def test_where_pattern_covers_both_sides(rng):
    def f(x):
        return ft.where(x > 0, x[::-1] ** 2, x * 3.0)
    x = np.array([1.0, -2.0, 3.0, -4.0])
    F = ft.compile(f, x)
    P = F.jacobian_sparsity().toarray()
    np.testing.assert_array_equal(P, np.eye(4, dtype=bool) | np.eye(4, dtype=bool)[::-1])
    for _ in range(3):
        y = rng.uniform(-1, 1, 4)
        np.testing.assert_allclose(F.sparse_jacobian(y).toarray(), F.jacobian(y))
        np.testing.assert_allclose(F.sparse_hessian(y, v=np.ones(4)).toarray(),
                                   ft.hessian(lambda z: ft.sum(f(z)))(y), atol=1e-14)


def test_hessian_branch_refused():
    def f(x):
        if x[0] > 0:
            return x[0] * x[1]
        return x[0] * x[2]
    F = ft.compile(f, np.array([1.0, 2.0, 3.0]))
    F.sparse_hessian(np.array([1.0, 2.0, 3.0]))
    with pytest.raises(fs.SparsityChanged, match="Hessian"):
        F.sparse_hessian(np.array([-1.0, 2.0, 3.0]))


# -- bad input ---------------------------------------------------------------------------

def test_bad_input():
    x = np.ones(5)
    F = ft.compile(banded_loop(1, 1), x)
    with pytest.raises(ShapeError, match="v"):
        F.sparse_hessian(x)
    with pytest.raises(ShapeError, match=r"shape \(4,\)"):
        F.sparse_hessian(x, v=np.ones(4))
    with pytest.raises(TypeError, match="real"):
        F.sparse_hessian(x, v=np.ones(5) * 1j)
    with pytest.raises(ShapeError):
        F.sparse_jacobian(np.ones(6))
    with pytest.raises(ShapeError):
        F.sparse_hessian(np.ones((5, 1)), v=np.ones(5))
    with pytest.raises(TypeError):
        F.sparse_jacobian(x, x)
    G = ft.compile(rosen_loop, x)
    with pytest.raises(ShapeError, match="v"):
        G.sparse_hessian(x, v=np.ones(2))


def test_arguments_not_mutated(rng):
    x = rng.uniform(-1, 1, 6)
    keep = x.copy()
    v = rng.normal(size=6)
    vkeep = v.copy()
    F = ft.compile(banded_loop(1, 1), x)
    F.sparse_jacobian(x)
    F.sparse_hessian(x, v=v)
    np.testing.assert_array_equal(x, keep)
    np.testing.assert_array_equal(v, vkeep)


def test_several_arguments_and_argnums(rng):
    """Columns are the differentiated arguments' elements, in argnums order."""
    def f(a, b, c):
        return ft.stack([a[0] * c, b[1] ** 2, a[1] * b[0] * c])
    a, b, c = rng.uniform(-1, 1, 2), rng.uniform(-1, 1, 2), 0.7
    F = ft.compile(f, a, b, c, argnums=(1, 0))
    J = F.sparse_jacobian(a, b, c)
    Jb, Ja = F.jacobian(a, b, c)
    np.testing.assert_allclose(J.toarray(), np.hstack([Jb, Ja]))


# -- random programs: every op the generator writes -------------------------------------

def test_random_programs_patterns_cover_dense_derivatives():
    """The fuzz generator's programs (elementwise, indexing, reductions, where, joins,
    reshapes, matmul, Python branches, scalar loops): the patterns hold every nonzero
    of the dense gradient and Hessian at the recorded point and the sparse Hessian
    equals the dense one; at other points the same, or SparsityChanged."""
    from test_random_programs import FIRST_SEED, N_PROGRAMS, Generator
    checked = refused = 0
    for seed in range(FIRST_SEED, FIRST_SEED + max(30, N_PROGRAMS // 20)):
        prog = Generator(seed).program()
        f = prog.functions()[0]
        rng = np.random.default_rng([seed, 7])
        x0 = np.random.default_rng(seed).uniform(-2.0, 2.0, size=prog.shape)
        with np.errstate(all="ignore"):
            F = ft.compile(f, x0)
            H0 = np.asarray(F.hessian(x0)).reshape(x0.size, x0.size)
            g0 = np.asarray(F.grad(x0)).reshape(1, -1)
        if not (np.all(np.isfinite(H0)) and np.all(np.isfinite(g0))):
            continue
        assert_covers(F.jacobian_sparsity(), [g0], exact=False)
        assert_covers(F.hessian_sparsity(), [H0], exact=False)
        for x in (x0, x0 + rng.normal(scale=0.3, size=x0.shape)):
            with np.errstate(all="ignore"):
                try:
                    H = F.sparse_hessian(x).toarray()
                    J = F.sparse_jacobian(x).toarray()
                except fs.SparsityChanged:
                    refused += 1
                    continue
                Hd = np.asarray(F.hessian(x)).reshape(H.shape)
                gd = np.asarray(F.grad(x)).reshape(J.shape)
            scale = np.abs(Hd).max(initial=0.0)
            np.testing.assert_allclose(H, Hd, rtol=1e-9, atol=1e-10 * max(1.0, scale),
                                       err_msg=f"seed {seed}\n{prog.source()}")
            np.testing.assert_allclose(J, gd, rtol=1e-12, atol=1e-12,
                                       err_msg=f"seed {seed}\n{prog.source()}")
            checked += 1
    print(f"random programs: {checked} points checked, {refused} refused")
    assert checked > 20


@pytest.mark.parametrize("f", [rosen_loop, arrow, banded_loop(1, 2)], ids=lambda f: f.__name__)
def test_vector_and_single_direction_sweeps_agree(f, rng):
    """The compressed products by one vector-mode sweep and by one sweep per color
    (the first call times both and keeps the faster) are the same numbers."""
    x = rng.uniform(-1, 1, 14)
    F = ft.compile(f, x)
    scalar = np.ndim(F(x)) == 0
    fixed = fs._fixed_hessian(F) if scalar else fs._fixed_jacobian(F)
    assert fixed.ncolors > 1
    vec, _ = F._compressed((x,), fixed.colors, fixed.ncolors, scalar, False)
    one, _ = F._compressed((x,), fixed.colors, fixed.ncolors, scalar, True)
    np.testing.assert_allclose(vec, one, rtol=1e-13, atol=1e-13)
    dense = F.hessian(x) if scalar else F.jacobian(x)
    np.testing.assert_allclose(vec, dense @ np.eye(fixed.ncolors)[fixed.colors], rtol=1e-12,
                               atol=1e-12)


def test_memory_is_near_the_live_sets_not_nodes_times_inputs():
    """A 2,000-step scalar loop (40,005 nodes, 6,002 inputs): the index sets held at
    once stay within a few bytes per node (bit vectors: nodes × inputs / 8 = 30 MB)."""
    from fastape import _sparsity
    N = 2000

    def dynamics(z):
        x, v, u = z[: N + 1], z[N + 1: 2 * N + 2], z[2 * N + 2:]
        out = []
        for k in range(N):
            out.append(x[k + 1] - x[k] - 0.01 * v[k])
            out.append(v[k + 1] - v[k] - 0.01 * (u[k] - 0.1 * v[k] * v[k] + ft.sin(x[k])))
        return ft.stack(out)
    z = np.linspace(-1, 1, 3 * N + 2)
    C = ft.compile(dynamics, z)
    P = C.jacobian_sparsity()
    assert P.nnz == 7 * N
    assert _sparsity.peak_set_bytes() < 16 * C.nodes
    H = C.hessian_sparsity()
    assert H.nnz == 2 * N
    assert _sparsity.peak_set_bytes() < 16 * C.nodes
    F = ft.compile(rosen_loop, z)
    F.hessian_sparsity()
    assert _sparsity.peak_set_bytes() < 16 * F.nodes


def test_patterns_are_copies():
    F = ft.compile(rosen_loop, np.ones(5))
    P = F.hessian_sparsity()
    P.data[:] = False
    assert F.hessian_sparsity().toarray().sum() == 13


# -- custom rules, pytrees, numbers, data arguments --------------------------------------

@ft.custom_vjp
def _square_vjp(a):
    return a * a


_square_vjp.defvjp(lambda a: (a * a, a), lambda a, g: (2 * a * g,))


@ft.custom_jvp
def _cube_jvp(a):
    return a ** 3


_cube_jvp.defjvp(lambda p, t: (p[0] ** 3, 3 * p[0] ** 2 * t[0]))


@pytest.mark.parametrize("rule", [_square_vjp, _cube_jvp], ids=["custom_vjp", "custom_jvp"])
def test_custom_rules(rule, rng):
    """A custom rule depends on all its inputs (conservative); a custom_vjp one has no
    tangents, so its derivatives come from reverse sweeps over a row coloring."""
    def f(x):
        return ft.stack([rule(x[0]) * x[1], x[2] ** 2, x[3]])
    x = rng.uniform(0.5, 1.5, 4)
    F = ft.compile(f, x)
    np.testing.assert_array_equal(F.jacobian_sparsity().toarray(),
                                  [[1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    J = F.sparse_jacobian(x)
    np.testing.assert_allclose(J.toarray(), F.jacobian(x, mode="rev"), rtol=1e-14)
    np.testing.assert_allclose(J.toarray(), fd_jacobian(F, x), rtol=1e-7, atol=1e-8)
    v = np.array([1.5, -2.0, 0.5])
    H = F.sparse_hessian(x, v=v)
    Hd = fd_jacobian(lambda y: F.vjp(y, v)[1], x)
    np.testing.assert_allclose(H.toarray(), Hd, rtol=1e-6, atol=1e-6)
    G = ft.compile(lambda y: rule(y[0]) * y[1] + y[2] ** 2, x[:3])
    np.testing.assert_allclose(G.sparse_hessian(x[:3]).toarray(), G.hessian(x[:3]),
                               rtol=1e-13)


def test_pytree_and_number_arguments():
    F = ft.compile(lambda p: ft.stack([p["a"][0] * p["b"], p["a"][1] ** 2]),
                   {"a": np.ones(2), "b": 2.0})
    p = {"a": np.array([1.0, 2.0]), "b": 3.0}
    Jd = F.jacobian(p)
    np.testing.assert_allclose(F.sparse_jacobian(p).toarray(),
                               np.hstack([Jd["a"], Jd["b"][:, None]]))
    np.testing.assert_allclose(F.sparse_hessian(p, v=[1.0, 1.0]).toarray(),
                               [[0, 0, 1], [0, 2, 0], [1, 0, 0]])
    G = ft.compile(lambda x: ft.sin(x) * x, 0.5)
    assert G.sparse_hessian(0.7).toarray()[0, 0] == pytest.approx(G.hessian(0.7), rel=1e-15)


def test_zeros_of_a_data_argument_are_not_structural():
    """A product drops a term only for a constant's zero: an argument's zeros move."""
    F = ft.compile(lambda x, A: A @ x, np.ones(3), np.eye(3))
    assert F.jacobian_sparsity().nnz == 9
    A = np.arange(9.0).reshape(3, 3)
    np.testing.assert_allclose(F.sparse_jacobian(np.ones(3), A).toarray(), A)
    K = ft.compile(lambda x: np.eye(3) @ x, np.ones(3))
    assert K.jacobian_sparsity().nnz == 3


# -- the Lagrangian of a vector output, replayed on scalars --------------------------------

VECTOR_FUNCTIONS = {
    "control_loop": (lambda z: ft.stack(
        [z[k + 1] - z[k] * 0.3 - ft.sin(z[k + 7]) * z[k] for k in range(6)]
        + [z[k + 7] ** 3 / (1.5 + z[k]) for k in range(6)]), True),
    "slices_and_constants": (lambda z: ft.concatenate(
        [np.sin(z[::2]) * np.arange(7.0), z[1:5] * z[2:6] + 1.0, ft.exp(z[3]) * z[-2:]]),
        True),
    "gather_broadcast": (lambda z: ft.reshape(
        z[np.array([4, 0, 9, 9])] * ft.reshape(z[10:13] ** 2, (3, 1)), (-1,)), True),
    "matmul": (lambda z: ft.tanh(np.ones((3, 13)) @ z) * z[:3], False),
    # scalars reshaped to (1,) and joined (fastape.optimize stacks its constraints so)
    "joined_singletons": (lambda z: ft.concatenate(
        [ft.reshape(z[0] * z[1] * z[2] - 25.0, (1,)), ft.reshape(z[3] ** 2 + z[4], (1,)),
         np.exp(z[5:7])]), True),
}


@pytest.mark.parametrize("name", sorted(VECTOR_FUNCTIONS))
def test_vector_lagrangian(name, rng):
    """Σ vᵢ ∇²fᵢ: replayed on scalars (the direct sweep) where the trace holds only
    elementwise ops and element moves, else through the compiled gradient; both against
    the eager Hessian of Σ vᵢ fᵢ."""
    f, scalar = VECTOR_FUNCTIONS[name]
    z = rng.uniform(0.2, 1.0, 13)
    F = ft.compile(f, z)
    m = np.size(F(z))
    for _ in range(2):
        v = rng.normal(size=m)
        H = F.sparse_hessian(z, v=v)
        Hd = ft.hessian(lambda y, v=v: ft.sum(ft.reshape(f(y), (-1,)) * v))(z)
        np.testing.assert_allclose(H.toarray(), Hd, rtol=1e-12, atol=1e-13)
        assert_covers(F.hessian_sparsity(), [Hd], exact=False)
        z = rng.uniform(0.2, 1.0, 13)
    (L,) = fs._state(F).scalar_lagrangians.values()
    assert (L is not None) == scalar
    if scalar:
        assert L.traces[-1].direct_hvp


def test_vector_lagrangian_per_branch():
    def f(z):
        if z[0] > 0:
            return ft.stack([z[0] * z[1], z[2] ** 2])
        return ft.stack([z[0] * 2.0, z[2] ** 2])
    F = ft.compile(f, np.array([1.0, 2.0, 3.0]))
    v = np.array([1.5, -0.5])
    for z in (np.array([1.0, 2.0, 3.0]), np.array([-1.0, 2.0, 3.0])):
        Hd = ft.hessian(lambda y: ft.sum(f(y) * v))(z)
        np.testing.assert_allclose(F.sparse_hessian(z, v=v).toarray(), Hd, atol=1e-14)
    assert len(fs._state(F).scalar_lagrangians) == 2


def test_colorings_of_dense_and_hub_patterns_are_quick_and_valid():
    """A dense row needs a color per column and a dense matrix one per vertex (the
    greedy pass is skipped above its work budget); a hub of 20,000 neighbors (an
    arrow) is not scanned once per neighbor."""
    import time
    c = fs.color_columns(np.ones((1, 20000), bool))
    assert np.array_equal(c, np.arange(20000))
    D = np.ones((30, 30), bool)
    assert_star_valid(D, fs.color_symmetric(D))
    n = 20000
    A = sp.lil_array((n, n), dtype=bool)
    A[0, :] = True
    A[:, 0] = True
    A.setdiag(True)
    t0 = time.perf_counter()
    c = fs.color_symmetric(A)
    assert time.perf_counter() - t0 < 1.0
    assert c.max() + 1 == 2 and c[0] != c[1]


def test_free_final_time_constraints_arrow(rng):
    """A free final time T scales every step: the Lagrangian Hessian is an arrow
    (T against every state and control) plus the dynamics' own diagonal."""
    N = 40

    def dynamics(z):
        T, x, u = z[0], z[1:N + 2], z[N + 2:]
        h = T / N
        return ft.stack([x[k + 1] - x[k] - h * (u[k] - ft.sin(x[k])) for k in range(N)])
    z = rng.uniform(0.5, 1.5, 2 * N + 2)
    C = ft.compile(dynamics, z)
    v = rng.normal(size=N)
    H = C.sparse_hessian(z, v=v)
    Hd = ft.hessian(lambda y: ft.sum(dynamics(y) * v))(z)
    np.testing.assert_allclose(H.toarray(), Hd, rtol=1e-12, atol=1e-13)
    assert_covers(C.hessian_sparsity(), [Hd])
    assert fs._state(C).hess.ncolors <= 3
    J = C.sparse_jacobian(z)
    np.testing.assert_allclose(J.toarray(), C.jacobian(z), rtol=1e-13, atol=1e-14)


def test_hessian_with_tuple_argnums_on_the_direct_sweep(rng):
    def f(x, y):
        s = 0.0
        for i in range(3):
            s = s + x[i] ** 2 * y[i] + ft.sin(y[i] * y[(i + 1) % 3])
        return s
    x, y = rng.uniform(-1, 1, 3), rng.uniform(-1, 1, 3)
    F = ft.compile(f, x, y, argnums=(1, 0))
    H = F.sparse_hessian(x, y).toarray()
    Hd = ft.hessian(lambda w: f(w[3:], w[:3]))(np.concatenate([y, x]))
    np.testing.assert_allclose(H, Hd, rtol=1e-13, atol=1e-14)
    assert_covers(F.hessian_sparsity(), [Hd])


def test_slices_read_element_by_element_keep_the_scalar_layout(rng):
    """An objective over slices of its input read element by element (``u = z[N+1:]``
    then ``u[k]``) is pruned to scalar inputs, slices and their elements gone: its own
    trace takes the direct Hessian sweep (no replay); its gradient and Hessian are the
    closed forms, at the recorded point and at another."""
    N = 30

    def objective(z):
        x, u = z[:N + 1], z[N + 1:]
        s = 0.0
        for k in range(N):
            s = s + u[k] ** 2 + 0.1 * ft.cos(x[k]) * u[k] + x[k + 1] * x[k]
        return s

    def closed_forms(z):
        x, u = z[:N + 1], z[N + 1:]
        k = np.arange(N)
        g = np.zeros(2 * N + 1)
        g[k] += -0.1 * np.sin(x[:N]) * u + x[1:]
        g[k + 1] += x[:N]
        g[N + 1 + k] = 2 * u + 0.1 * np.cos(x[:N])
        H = np.zeros((2 * N + 1, 2 * N + 1))
        H[k, k] = -0.1 * np.cos(x[:N]) * u
        H[k, k + 1] = H[k + 1, k] = 1.0
        H[N + 1 + k, N + 1 + k] = 2.0
        H[k, N + 1 + k] = H[N + 1 + k, k] = -0.1 * np.sin(x[:N])
        return g, H
    z = rng.uniform(-1, 1, 2 * N + 1)
    F = ft.compile(objective, z)
    assert F.traces[-1].tape.scalar_layout and F.traces[-1].direct_hvp
    for at in (z, rng.uniform(-1, 1, 2 * N + 1)):
        g, H = closed_forms(at)
        np.testing.assert_allclose(F.grad(at), g, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(F.hessian(at), H, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(F.sparse_hessian(at).toarray(), H, rtol=1e-13,
                                   atol=1e-15)


def test_scalar_output_read_from_slices_takes_the_replay(rng):
    """An objective over slices of its input that are also read whole (an array
    product: STRIDED nodes, the general layout) is replayed on scalars, so its Hessian
    takes the direct sweep too."""
    N = 30

    def objective(z):
        x, u = z[:N + 1], z[N + 1:]
        w = x[1:] * x[:-1]
        s = 0.0
        for k in range(N):
            s = s + u[k] ** 2 + 0.1 * ft.cos(x[k]) * u[k] + w[k]
        return s
    z = rng.uniform(-1, 1, 2 * N + 1)
    F = ft.compile(objective, z)
    assert not F.traces[-1].direct_hvp
    for v in (None, 2.5):
        H = F.sparse_hessian(z) if v is None else F.sparse_hessian(z, v=[v])
        np.testing.assert_allclose(H.toarray(), (v or 1.0) * F.hessian(z), rtol=1e-13,
                                   atol=1e-14)
    (L,) = fs._state(F).scalar_lagrangians.values()
    assert L.traces[-1].direct_hvp


def test_scalar_replay_per_branch():
    """Each recorded branch of a general-layout scalar function gets its own replay."""
    def f(z):
        x, u = z[:3] * 1.0, z[3:]           # an array op: the general layout
        if x[0] > 0:
            return x[0] * u[0] + x[1] ** 2 * u[1]
        return x[0] * u[0] * 2.0 + x[1] ** 3        # inside the first pattern
    F = ft.compile(f, np.array([1.0, 2.0, 0.5, 0.3, 0.4]))
    for z in (np.array([1.0, 2.0, 0.5, 0.3, 0.4]), np.array([-1.0, 2.0, 0.5, 0.3, 0.4])):
        np.testing.assert_allclose(F.sparse_hessian(z).toarray(), F.hessian(z), atol=1e-14)
    assert len(fs._state(F).scalar_lagrangians) == 2


def test_jacobian_by_the_replayed_lagrangian(rng):
    """J S as the mixed second derivative ∂²L/∂v∂x S of the scalar replay of
    L = Σ vᵢ fᵢ equals J S by the constraints' own tangent sweeps; sparse_jacobian uses
    the replay once sparse_hessian has compiled it (timing the four ways again)."""
    f = VECTOR_FUNCTIONS["control_loop"][0]
    z = rng.uniform(0.2, 1.0, 13)
    F = ft.compile(f, z)
    F.sparse_jacobian(z)
    fixed = fs._state(F).jac
    assert fixed.single in (False, True) and not fs._state(F).scalar_lagrangians
    F.sparse_hessian(z, v=np.ones(12))          # compiles the replay
    J = F.sparse_jacobian(z)                    # now timed among four ways
    assert fixed.timed == (False, True, "L", "L1")
    (L,) = fs._state(F).scalar_lagrangians.values()
    own, _ = F._compressed((z,), fixed.colors, fixed.ncolors, False, False)
    w = np.ones(J.shape[0])
    for single in (False, True):
        mixed, _ = L._compressed((w, z), fixed.colors, fixed.ncolors, True, single, 0)
        np.testing.assert_allclose(mixed, own, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(J.toarray(), F.jacobian(z), rtol=1e-14, atol=1e-15)
    z2 = rng.uniform(0.2, 1.0, 13)
    np.testing.assert_allclose(F.sparse_jacobian(z2).toarray(), F.jacobian(z2), rtol=1e-14,
                               atol=1e-15)
