"""Dense linear algebra: matrix products (BLAS), solves and determinants (LAPACK),
norms, traces, and the seeds' two-layer network.

Every number is checked against an independent source: numpy's values, closed-form
adjoints written out here (Λ Bᵀ, Aᵀ Λ, −A⁻ᵀ Λ Xᵀ, det(A) A⁻ᵀ, …) and central finite
differences of the same function evaluated with plain numpy.
"""

import numpy as np
import pytest
from helpers import central_diff

import fastape as ft
from fastape import Op


def _weights(rng, shape):
    return rng.uniform(0.5, 1.5, size=shape)


# -- matrix products -------------------------------------------------------------------

PRODUCT_SHAPES = [
    ((3, 4), (4, 5)),           # matrix @ matrix
    ((3, 4), (4,)),             # matrix @ vector
    ((4,), (4, 5)),             # vector @ matrix
    ((4,), (4,)),               # vector @ vector: the inner product
    ((1, 4), (4, 1)),           # degenerate rows/columns (the gemv/dot paths)
    ((5, 1), (1, 3)),           # inner dimension 1 (the rank-1 path of the adjoint)
    ((2, 3, 4), (4, 5)),        # a stack times one matrix
    ((3, 4), (2, 4, 5)),        # one matrix times a stack
    ((2, 3, 4), (2, 4, 5)),     # stack times stack
    ((2, 1, 3, 4), (3, 4, 2)),  # broadcast stack axes
    ((2, 3, 4), (4,)),          # a stack times a vector
]


@pytest.mark.parametrize("sa,sb", PRODUCT_SHAPES, ids=str)
def test_matmul_value_and_gradient(sa, sb, rng):
    A, B = rng.standard_normal(sa), rng.standard_normal(sb)
    W = _weights(rng, np.matmul(A, B).shape)

    def loss(m):
        return lambda a, b: m.sum(m.sin(m.matmul(a, b)) * W)

    value, (ga, gb) = ft.value_and_grad(loss(ft), (0, 1))(A, B)
    assert value == pytest.approx(float(loss(np)(A, B)), rel=1e-13)
    assert ga.shape == sa and gb.shape == sb
    np.testing.assert_allclose(ga, central_diff(loss(np), [A, B], 0), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gb, central_diff(loss(np), [A, B], 1), rtol=1e-6, atol=1e-8)


def test_matmul_adjoints_are_the_closed_forms(rng):
    """C = A B with multipliers Λ: Ā = Λ Bᵀ and B̄ = Aᵀ Λ (the seeds' formulas)."""
    A, B = rng.standard_normal((6, 4)), rng.standard_normal((4, 3))
    Lam = rng.standard_normal((6, 3))
    ga, gb = ft.grad(lambda a, b: ft.sum((a @ b) * Lam), (0, 1))(A, B)
    np.testing.assert_allclose(ga, Lam @ B.T, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(gb, A.T @ Lam, rtol=1e-14, atol=1e-14)


def test_matmul_with_a_constant_operand_and_every_spelling(rng):
    A, B = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    Lam = rng.standard_normal((3, 2))
    want_b = A.T @ Lam
    spellings = [
        lambda b: ft.sum((A @ b) * Lam),             # ndarray @ value: numpy's ufunc
        lambda b: np.sum(np.matmul(A, b) * Lam),
        lambda b: np.sum(np.dot(A, b) * Lam),
        lambda b: ft.sum(ft.matmul(A, b) * Lam),
        lambda b: ft.sum(ft.linalg.matmul(A, b) * Lam),
        lambda b: np.sum(np.inner(A, b.T) * Lam),
    ]
    for f in spellings:
        np.testing.assert_allclose(ft.grad(f)(B), want_b, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(ft.grad(lambda a: np.sum(np.matmul(a, B) * Lam))(A),
                               Lam @ B.T, rtol=1e-14, atol=1e-14)


def test_inner_and_outer(rng):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))
    W = _weights(rng, (3, 5))
    f = lambda m: lambda x, y: m.sum(m.inner(x, y) * W)   # noqa: E731
    ga, gb = ft.grad(f(np), (0, 1))(a, b)
    np.testing.assert_allclose(ga, W @ b, rtol=1e-14)          # ∂/∂a Σ W ∘ (a bᵀ) = W b
    np.testing.assert_allclose(gb, W.T @ a, rtol=1e-14)
    u, v = rng.standard_normal(3), rng.standard_normal(4)
    W = _weights(rng, (3, 4))
    gu, gv = ft.grad(lambda x, y: np.sum(np.outer(x, y) * W), (0, 1))(u, v)
    np.testing.assert_allclose(gu, W @ v, rtol=1e-14)
    np.testing.assert_allclose(gv, W.T @ u, rtol=1e-14)
    assert ft.value_and_grad(lambda x: np.inner(x, x))(u)[0] == pytest.approx(u @ u)


def test_transposed_operands(rng):
    """x.T @ W and W @ x.T, through the transpose's gather and MATMUL's BLAS flags."""
    X, W = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    Lam = rng.standard_normal((3, 2))
    g = ft.grad(lambda x: ft.sum((x.T @ W) * Lam))(X)
    np.testing.assert_allclose(g, W @ Lam.T, rtol=1e-14, atol=1e-14)


def test_zero_sized_products():
    for sa, sb in [((0, 3), (3, 2)), ((2, 0), (0, 3)), ((2, 3), (3, 0))]:
        A, B = np.ones(sa), np.ones(sb)
        with ft.Tape() as t:
            a, b = t.var(A), t.var(B)
            c = a @ b
            s = ft.sum(c) + ft.sum(a) + ft.sum(b)
        np.testing.assert_array_equal(c.value, A @ B)
        ga, gb = t.gradient(s, [a, b])
        np.testing.assert_array_equal(ga, 1.0 + np.ones(sb[1:]).sum() * np.ones(sa))
        assert gb.shape == sb


def test_matmul_shape_errors_name_both_shapes():
    with ft.Tape() as t:
        a, b = t.var(np.ones((2, 3))), t.var(np.ones((4, 5)))
        with pytest.raises(ft.ShapeError, match=r"matmul.*\(2, 3\).*\(4, 5\)"):
            a @ b
        with pytest.raises(ft.ShapeError, match=r"\(2, 3\).*\(2,\)"):
            np.matmul(a, np.ones(2))
        with pytest.raises(ft.ShapeError, match=r"dot.*\(2, 3\).*\(4, 5\)"):
            np.dot(a, b)
        with pytest.raises(ft.ShapeError, match="inner"):
            np.inner(a, b)
        with pytest.raises(ft.ShapeError, match="at least one dimension"):
            ft.matmul(a, t.var(2.0))
        with pytest.raises(ft.ShapeError, match="broadcast"):
            ft.matmul(t.var(np.ones((2, 2, 3))), np.ones((3, 3, 4)))


def test_zero_multiplier_ignores_infinite_operands():
    """A product whose multipliers are all zero contributes nothing, even through inf."""
    A = np.array([[np.inf, 1.0], [2.0, 3.0]])
    g = ft.grad(lambda b, a=A: ft.sum(ft.where(np.zeros(2, bool), a @ b, 0.0)) + ft.sum(b))(
        np.ones(2))
    np.testing.assert_array_equal(g, [1.0, 1.0])


# -- the seeds' two-layer network ----------------------------------------------------------

def test_two_layer_network_matches_hand_derived_backprop(rng):
    """f(W1, W2) = ||tanh(X W1) W2 − y||². With H = tanh(X W1), r = H W2 − y:
        ∂f/∂W2 = Hᵀ (2r)
        ∂f/∂W1 = Xᵀ [((2r) W2ᵀ) ∘ (1 − H²)]
    """
    n, d, h, o = 20, 5, 7, 3
    X, y = rng.standard_normal((n, d)), rng.standard_normal((n, o))
    W1, W2 = rng.standard_normal((d, h)) * 0.5, rng.standard_normal((h, o)) * 0.5

    def loss(m):
        return lambda w1, w2: m.sum((m.tanh(X @ w1) @ w2 - y) ** 2)

    value, (g1, g2) = ft.value_and_grad(loss(np), (0, 1))(W1, W2)
    H = np.tanh(X @ W1)
    r = H @ W2 - y
    assert value == pytest.approx(float(np.sum(r ** 2)), rel=1e-13)
    np.testing.assert_allclose(g2, H.T @ (2 * r), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(g1, X.T @ (((2 * r) @ W2.T) * (1 - H ** 2)),
                               rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(g1, central_diff(loss(np), [W1, W2], 0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(g2, central_diff(loss(np), [W1, W2], 1), rtol=1e-6, atol=1e-7)
    # the same network with a vector output layer (W2 of shape (h,), y of shape (n,))
    w2, yv = W2[:, 0].copy(), y[:, 0].copy()
    g1v, g2v = ft.grad(lambda a, b: ft.sum((ft.tanh(X @ a) @ b - yv) ** 2), (0, 1))(W1, w2)
    rv = H @ w2 - yv
    np.testing.assert_allclose(g2v, H.T @ (2 * rv), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(g1v, X.T @ (np.outer(2 * rv, w2) * (1 - H ** 2)),
                               rtol=1e-12, atol=1e-13)


def test_array_tanh_kernel_matches_numpy():
    """The vectorised tanh of array nodes: within 2 ulp of numpy over the whole range,
    exact at the specials, and its adjoint is 1 − tanh²."""
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.uniform(-1, 1, 4000), rng.uniform(-25, 25, 4000),
                        np.geomspace(1e-300, 1e3, 2000), -np.geomspace(1e-300, 1e3, 2000),
                        [0.0, -0.0, 0.625, -0.625, 19.0, 40.0, 1e308, np.inf, -np.inf]])
    with ft.Tape() as t:
        v = t.var(x)
        y = ft.tanh(v)
    got, want = y.value, np.tanh(x)
    ulp = np.spacing(np.abs(want))
    assert np.all(np.abs(got - want) <= 2 * ulp)
    assert np.array_equal(np.signbit(got), np.signbit(want))
    with ft.Tape() as t:
        y = ft.tanh(t.var(np.array([np.nan, 1.0])))
    assert np.isnan(y.value[0]) and y.value[1] == np.tanh(1.0)
    g = ft.grad(lambda a: ft.sum(ft.tanh(a)))(x[:4000])
    np.testing.assert_allclose(g, 1 - np.tanh(x[:4000]) ** 2, rtol=1e-14, atol=1e-16)


# -- solves, inverses, determinants --------------------------------------------------------

def _well_conditioned(rng, n):
    return rng.standard_normal((n, n)) + n * np.eye(n)


@pytest.mark.parametrize("bshape", [(4,), (4, 3), (4, 1)], ids=str)
def test_solve_value_and_closed_form_adjoints(bshape, rng):
    """X = A⁻¹ B: B̄ = A⁻ᵀ Λ and Ā = −A⁻ᵀ Λ Xᵀ."""
    A, B = _well_conditioned(rng, 4), rng.standard_normal(bshape)
    Lam = rng.standard_normal(bshape)
    with ft.Tape() as t:
        a, b = t.var(A), t.var(B)
        x = np.linalg.solve(a, b)
        s = ft.sum(x * Lam)
    X = np.linalg.solve(A, B)
    np.testing.assert_allclose(x.value, X, rtol=1e-13)
    ga, gb = t.gradient(s, [a, b])
    Z = np.linalg.solve(A.T, Lam)
    np.testing.assert_allclose(gb, Z, rtol=1e-12)
    np.testing.assert_allclose(ga, -np.outer(Z, X) if B.ndim == 1 else -Z @ X.T, rtol=1e-12)


def test_solve_gradient_vs_finite_differences(rng):
    A, B = _well_conditioned(rng, 3), rng.standard_normal((3, 2))

    def loss(m):
        return lambda a, b: m.sum(m.sin(m.linalg.solve(a @ a.T + 3 * np.eye(3), b)))

    ga, gb = ft.grad(loss(ft), (0, 1))(A, B)
    np.testing.assert_allclose(ga, central_diff(loss(np), [A, B], 0), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gb, central_diff(loss(np), [A, B], 1), rtol=1e-6, atol=1e-8)


def test_solve_needs_pivoting(rng):
    """A zero leading entry forces a row interchange: the pivots must be applied."""
    A = np.array([[0.0, 2.0, 1.0], [1.0, 1.0, 0.0], [3.0, 0.0, 1.0]])
    B = rng.standard_normal((3, 2))
    Lam = rng.standard_normal((3, 2))
    ga, gb = ft.grad(lambda a, b: ft.sum(ft.linalg.solve(a, b) * Lam), (0, 1))(A, B)
    Z = np.linalg.solve(A.T, Lam)
    np.testing.assert_allclose(gb, Z, rtol=1e-13)
    np.testing.assert_allclose(ga, -Z @ np.linalg.solve(A, B).T, rtol=1e-13)


@pytest.mark.parametrize("n, r", [(1, 3), (5, 1), (6, 40)])
def test_solve_with_a_lower_triangular_matrix(n, r, rng):
    """A lower triangular A (np.linalg.solve(cholesky(S), b)) has the identity for its
    unit factor and pivots: the solves with them are skipped. Values against scipy's
    triangular solve, the adjoints B̄ = A⁻ᵀ Λ, Ā = −B̄ Xᵀ in closed form (all of A's
    entries, its zero upper part included), and the tangent against the adjoint; an
    A one tiny entry away from triangular still takes the general path, as correctly."""
    import scipy.linalg
    L = np.tril(rng.standard_normal((n, n))) + 3 * np.eye(n)
    B, Lam = rng.standard_normal((n, r)), rng.standard_normal((n, r))
    for A in (L, L + np.triu(np.full((n, n), 1e-3), 1) * (n > 1)):
        X = np.linalg.solve(A, B)
        if A is L:
            np.testing.assert_allclose(X, scipy.linalg.solve_triangular(L, B, lower=True),
                                       rtol=1e-14, atol=1e-15)
        f = lambda a, b: ft.sum(np.linalg.solve(a, b) * Lam)    # noqa: E731
        v, (ga, gb) = ft.value_and_grad(f, (0, 1))(A, B)
        assert v == pytest.approx(np.sum(X * Lam), rel=1e-13)
        Z = np.linalg.solve(A.T, Lam)
        np.testing.assert_allclose(gb, Z, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(ga, -Z @ X.T, rtol=1e-12, atol=1e-14)
        dA, dB = rng.standard_normal((n, n)), rng.standard_normal((n, r))
        _, tan = ft.jvp(lambda a, b: np.linalg.solve(a, b), (A, B), (dA, dB))
        assert np.sum(tan * Lam) == pytest.approx(np.sum(ga * dA) + np.sum(gb * dB),
                                                  rel=1e-11)
    # an upper triangular A (not the skipped case) and a singular lower one
    U = L.T
    np.testing.assert_allclose(ft.grad(lambda b: ft.sum(np.linalg.solve(U, b) * Lam))(B),
                               np.linalg.solve(U.T, Lam), rtol=1e-12)
    if n > 1:
        S = L.copy()
        S[1, 1] = 0.0
        with pytest.raises(np.linalg.LinAlgError):
            ft.grad(lambda a: ft.sum(np.linalg.solve(a, B)))(S)


def test_inv_det_slogdet(rng):
    A = _well_conditioned(rng, 4)
    A[0] *= -1                                 # a negative determinant
    Ainv = np.linalg.inv(A)
    W = _weights(rng, (4, 4))
    g = ft.grad(lambda a: np.sum(np.linalg.inv(a) * W))(A)
    np.testing.assert_allclose(g, -Ainv.T @ W @ Ainv.T, rtol=1e-12)   # d(A⁻¹) = −A⁻¹ dA A⁻¹
    d, gd = ft.value_and_grad(np.linalg.det)(A)
    assert d == pytest.approx(np.linalg.det(A), rel=1e-13) and d < 0
    np.testing.assert_allclose(gd, d * Ainv.T, rtol=1e-12)             # Jacobi's formula
    with ft.Tape() as t:
        a = t.var(A)
        sign, logabs = np.linalg.slogdet(a)
    want = np.linalg.slogdet(A)
    assert sign == want.sign == -1.0
    assert logabs.value == pytest.approx(want.logabsdet, rel=1e-14)
    np.testing.assert_allclose(t.gradient(logabs, a), Ainv.T, rtol=1e-12)
    np.testing.assert_allclose(
        ft.grad(lambda a: ft.linalg.det(a @ a))(A),
        central_diff(lambda a: np.linalg.det(a @ a), [A], 0), rtol=1e-6)


def test_singular_matrix_raises_linalgerror():
    S = np.array([[1.0, 2.0], [2.0, 4.0]])
    for f in (lambda a: np.linalg.solve(a, np.ones(2)), np.linalg.inv):
        with pytest.raises(np.linalg.LinAlgError, match="singular"):
            ft.grad(lambda a, f=f: ft.sum(f(a)))(S)
    # the determinant of a singular matrix is 0, not an error
    assert ft.value_and_grad(np.linalg.det)(S)[0] == 0.0
    with ft.Tape() as t:
        sign, logabs = ft.linalg.slogdet(t.var(S))
    assert sign == 0.0 and logabs.value == -np.inf


def test_solve_shape_errors():
    with ft.Tape() as t:
        a = t.var(np.eye(3))
        with pytest.raises(ft.ShapeError, match=r"square.*\(2, 3\)"):
            ft.linalg.solve(t.var(np.ones((2, 3))), np.ones(2))
        with pytest.raises(ft.ShapeError, match=r"\(3, 3\).*\(2,\)"):
            ft.linalg.solve(a, np.ones(2))
        with pytest.raises(ft.ShapeError, match="square"):
            ft.linalg.det(t.var(np.ones(3)))


# -- norms and traces ----------------------------------------------------------------------

def test_norm(rng):
    x, M = rng.standard_normal(5), rng.standard_normal((3, 4))
    v, g = ft.value_and_grad(np.linalg.norm)(x)
    assert v == pytest.approx(np.linalg.norm(x), rel=1e-14)
    np.testing.assert_allclose(g, x / np.linalg.norm(x), rtol=1e-14)
    v, g = ft.value_and_grad(lambda m: ft.linalg.norm(m, "fro"))(M)
    assert v == pytest.approx(np.linalg.norm(M), rel=1e-14)
    np.testing.assert_allclose(g, M / np.linalg.norm(M), rtol=1e-14)
    np.testing.assert_array_equal(ft.grad(np.linalg.norm)(np.zeros(3)), np.zeros(3))
    for ord_ in (1, np.inf, -np.inf):
        f = lambda a, o=ord_: np.linalg.norm(a, o)   # noqa: E731
        assert ft.value_and_grad(f)(x)[0] == pytest.approx(f(x))
        np.testing.assert_allclose(ft.grad(f)(x), central_diff(f, [x], 0), rtol=1e-6)
    f = lambda m: np.sum(np.linalg.norm(m, axis=1))     # noqa: E731
    np.testing.assert_allclose(ft.grad(f)(M), central_diff(f, [M], 0), rtol=1e-6)
    with pytest.raises(ValueError, match="ord"):       # (every order numpy has: test_decomp)
        ft.grad(lambda m: np.linalg.norm(m, "max"))(M)


def test_trace(rng):
    M = rng.standard_normal((4, 4))
    v, g = ft.value_and_grad(np.trace)(M)
    assert v == pytest.approx(np.trace(M), rel=1e-14)
    np.testing.assert_array_equal(g, np.eye(4))
    g = ft.grad(lambda m: ft.linalg.trace(m @ m, offset=0))(M)
    np.testing.assert_allclose(g, 2 * M.T, rtol=1e-14)                 # ∂ tr(M²)/∂M = 2Mᵀ
    g = ft.grad(lambda m: np.trace(m, offset=1))(M)
    np.testing.assert_array_equal(g, np.eye(4, k=1))


def test_linalg_functions_on_plain_arrays_return_numpy_results(rng):
    A, b = _well_conditioned(rng, 3), rng.standard_normal(3)
    np.testing.assert_array_equal(ft.linalg.solve(A, b), np.linalg.solve(A, b))
    assert ft.linalg.det(A) == np.linalg.det(A)
    np.testing.assert_array_equal(ft.matmul(A, b), A @ b)
    assert ft.linalg.norm(b) == np.linalg.norm(b)


def test_ops_recorded(rng):
    A = _well_conditioned(rng, 3)
    with ft.Tape() as t:
        a = t.var(A)
        ft.linalg.solve(a, a @ a)
        ft.linalg.slogdet(a)
        ft.linalg.det(a)
        ft.linalg.norm(a)
    ops = {ft.Op(o) for o in t.opcodes()}
    assert {Op.MATMUL, Op.LU, Op.SOLVE, Op.DET, Op.LOGDET, Op.NORM} <= ops


def test_norm_along_an_axis_is_the_norm_node_with_its_subgradient():
    # one convention: gradient 0 where a norm is 0, over all elements or along an axis
    # (sqrt(sum(x**2)) gave NaN at a zero row)
    x = np.array([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0], [1.0, -2.0, 2.0]])
    g = ft.grad(lambda v: ft.sum(ft.linalg.norm(v, axis=1)))(x)
    want = np.vstack([np.zeros(3), x[1] / 5.0, x[2] / 3.0])
    np.testing.assert_allclose(g, want, rtol=1e-15)
    np.testing.assert_array_equal(ft.grad(lambda v: ft.linalg.norm(v))(np.zeros(3)),
                                  np.zeros(3))
    rng = np.random.default_rng(3)
    A = rng.normal(size=(2, 3, 4))
    for axis, keep in [(0, False), (-1, True), ((0, 2), False), ((1, 2), True)]:
        def f(m, v, axis=axis, keep=keep):
            return m.sum(m.sin(m.linalg.norm(v, axis=axis, keepdims=keep)))
        value, g = ft.value_and_grad(lambda v: f(ft, v))(A)
        assert value == pytest.approx(f(np, A), rel=1e-14)
        np.testing.assert_allclose(g, central_diff(lambda v: f(np, v), [A], 0),
                                   rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("A", [
    np.diag([1.0, 2.0, 0.0]),
    np.array([[0.0]]),
    np.array([[1.0, 2.0], [2.0, 4.0]]),
    np.array([[2.0, 1.0, 3.0], [4.0, 2.0, 6.0], [1.0, -1.0, 0.5]]),     # rows 0, 1 parallel
    np.array([[0.0, 1.0, 2.0], [0.0, 3.0, 4.0], [0.0, 5.0, 7.0]]),      # a zero column
    np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]),
    np.zeros((3, 3)),                                                    # rank 0
    np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]),       # rank 1
])
def test_det_gradient_at_singular_matrices_is_the_cofactor_matrix(A):
    # ∂ det A / ∂A = cof(A), also where det A = 0 (it was 0 instead of the adjugate);
    # the closed form: cof(A)_ij = (-1)^(i+j) det(A without row i and column j)
    n = A.shape[0]
    cof = np.ones((n, n)) if n == 1 else np.array(
        [[(-1) ** (i + j) * np.linalg.det(np.delete(np.delete(A, i, 0), j, 1))
          for j in range(n)] for i in range(n)])
    g = ft.grad(lambda a: ft.linalg.det(a))(A)
    np.testing.assert_allclose(g, cof, rtol=1e-12, atol=1e-12)
    F = ft.compile(lambda a: np.linalg.det(a), A + np.eye(n))    # replayed at A too
    np.testing.assert_allclose(F.grad(A), cof, rtol=1e-12, atol=1e-12)
