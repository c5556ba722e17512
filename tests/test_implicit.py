"""Implicit functions (issue 12): fixed_point, root and linear_solve against closed forms,
central differences through the whole solve, the unrolled iteration, forward against
reverse mode, nested and compiled derivatives, and their errors."""

import functools

import numpy as np
import pytest
from helpers import central_diff

import fastape as ft


def cos_fixed_point(t):
    """z = cos(t z), the params passed."""
    return ft.fixed_point(lambda z, t: np.cos(t * z), 0.5, t, tol=1e-14)


def cos_closed(t):
    """The same fixed point with t closed over (closure conversion)."""
    return ft.fixed_point(lambda z: np.cos(t * z), 0.5, tol=1e-14)


def _cos_exact(t):
    """z*(t) and its first two derivatives by the implicit function theorem:
    H(z, t) = cos(t z) − z = 0, z' = −H_t / H_z, z'' from differentiating again."""
    z = cos_fixed_point(t)
    s, c = np.sin(t * z), np.cos(t * z)
    d1 = -z * s / (1 + t * s)
    # z'' = −(H_tt + 2 H_tz z' + H_zz z'^2) / H_z
    h_z, h_tt, h_tz, h_zz = -t * s - 1, -z * z * c, -s - t * z * c, -t * t * c
    d2 = -(h_tt + 2 * h_tz * d1 + h_zz * d1 * d1) / h_z
    return z, d1, d2


def _contraction(rng, n, norm=0.5):
    A = rng.standard_normal((n, n))
    return A * (norm / np.linalg.norm(A, 2))


# ---------------------------------------------------------------------------
# closed forms
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("fun", [cos_fixed_point, cos_closed], ids=["passed", "closed"])
def test_scalar_fixed_point_by_the_implicit_function_theorem(fun):
    for t in (0.3, 1.0, 1.7):
        z, d1, d2 = _cos_exact(t)
        assert np.cos(t * z) == pytest.approx(z, abs=1e-14)
        assert fun(t) == pytest.approx(z, abs=1e-14)
        assert ft.grad(fun)(t) == pytest.approx(d1, rel=1e-12)
        assert ft.jvp(fun, (t,), (1.0,))[1] == pytest.approx(d1, rel=1e-12)
        assert ft.grad(ft.grad(fun))(t) == pytest.approx(d2, rel=1e-10)
        assert ft.hessian(fun)(t) == pytest.approx(d2, rel=1e-10)
        # central differences through the whole solve
        assert ft.grad(fun)(t) == pytest.approx(central_diff(fun, [t], 0), rel=1e-8)


def test_linear_fixed_point_exact_gradients_dense_and_krylov(rng):
    n = 6
    A, b = _contraction(rng, n), rng.standard_normal(n)
    w = rng.standard_normal(n)
    M = np.linalg.inv(np.eye(n) - A)
    z = M @ b

    for dense_max in (ft.implicit.DENSE_MAX, 0):      # LAPACK, then GMRES
        def loss(A, b, dense_max=dense_max):
            zs = ft.fixed_point(lambda z, A, b: A @ z + b, np.zeros(n), A, b,
                                dense_max=dense_max)
            return np.sum(w * zs)
        gA, gb = ft.grad(loss, argnums=(0, 1))(A, b)
        mu = M.T @ w                                  # (I − A)ᵀ μ = w
        np.testing.assert_allclose(gb, mu, rtol=1e-10)
        np.testing.assert_allclose(gA, np.outer(mu, z), rtol=1e-9, atol=1e-12)
        assert loss(A, b) == pytest.approx(w @ z, rel=1e-10)


def test_root_of_cube_is_the_cube_root_scalar_and_array():
    for t in (0.5, 8.0, 30.0):
        def cbrt(t):
            return ft.root(lambda z, t: z ** 3 - t, 1.0, t, tol=1e-13)
        assert cbrt(t) == pytest.approx(t ** (1 / 3), rel=1e-12)
        assert ft.grad(cbrt)(t) == pytest.approx(t ** (-2 / 3) / 3, rel=1e-12)
        assert ft.grad(ft.grad(cbrt))(t) == pytest.approx(-2 / 9 * t ** (-5 / 3), rel=1e-10)
    t = np.array([0.5, 2.0, 8.0, 27.0])
    for dense_max in (ft.implicit.DENSE_MAX, 0):
        def s(t, dense_max=dense_max):
            return np.sum(ft.root(lambda z, t: z ** 3 - t, np.ones(4), t, dense_max=dense_max))
        np.testing.assert_allclose(ft.grad(s)(t), t ** (-2 / 3) / 3, rtol=1e-10)
        np.testing.assert_allclose(ft.hessian(s)(t), np.diag(-2 / 9 * t ** (-5 / 3)),
                                   rtol=1e-8, atol=1e-14)


def _ridge_data(rng):
    X, Xv = rng.standard_normal((30, 5)), rng.standard_normal((20, 5))
    w_true = rng.standard_normal(5)
    y = X @ w_true + 0.3 * rng.standard_normal(30)
    yv = Xv @ w_true + 0.3 * rng.standard_normal(20)
    return X, y, Xv, yv


def test_ridge_through_its_normal_equations_against_the_closed_form(rng):
    X, y, Xv, yv = _ridge_data(rng)

    def val_loss(lam, dense_max=ft.implicit.DENSE_MAX):
        w = ft.linear_solve(lambda w: X.T @ (X @ w) + lam * w, X.T @ y, dense_max=dense_max)
        r = Xv @ w - yv
        return np.sum(r * r)

    for lam in (0.1, 3.0):
        K = X.T @ X + lam * np.eye(5)
        w = np.linalg.solve(K, X.T @ y)
        dw = -np.linalg.solve(K, w)                   # d/dλ (K⁻¹ Xᵀy)
        d2w = 2 * np.linalg.solve(K, np.linalg.solve(K, w))
        r = Xv @ w - yv
        g = 2 * r @ (Xv @ dw)
        g2 = 2 * (Xv @ dw) @ (Xv @ dw) + 2 * r @ (Xv @ d2w)
        assert val_loss(lam) == pytest.approx(r @ r, rel=1e-12)
        assert ft.grad(val_loss)(lam) == pytest.approx(g, rel=1e-10)
        assert ft.grad(lambda a: val_loss(a, 0))(lam) == pytest.approx(g, rel=1e-8)
        assert ft.hessian(val_loss)(lam) == pytest.approx(g2, rel=1e-8)
        assert ft.grad(val_loss)(lam) == pytest.approx(central_diff(val_loss, [lam], 0),
                                                       rel=1e-6)


def test_linear_solve_in_b_and_in_the_closed_over_matrix(rng):
    n = 7
    A = rng.standard_normal((n, n)) + n * np.eye(n)
    b, w = rng.standard_normal(n), rng.standard_normal(n)
    Ai = np.linalg.inv(A)
    for dense_max in (ft.implicit.DENSE_MAX, 0):
        def f(A, b, dense_max=dense_max):
            return w @ ft.linear_solve(lambda x: A @ x, b, dense_max=dense_max, tol=1e-13)
        gA, gb = ft.grad(f, argnums=(0, 1))(A, b)
        np.testing.assert_allclose(gb, Ai.T @ w, rtol=1e-9)
        np.testing.assert_allclose(gA, -np.outer(Ai.T @ w, Ai @ b), rtol=1e-8, atol=1e-13)


# ---------------------------------------------------------------------------
# differences, the unrolled iteration, forward against reverse
# ---------------------------------------------------------------------------

def _deq(W, U, x, b, z):
    return np.tanh(W @ z + U @ x + b)


def test_deq_layer_against_differences_and_the_unrolled_iteration(rng):
    n, m = 8, 3
    W, U = _contraction(rng, n, 0.6), rng.standard_normal((n, m))
    x, b, c = rng.standard_normal(m), rng.standard_normal(n), rng.standard_normal(n)

    def implicit(W):
        z = ft.fixed_point(lambda z, W: _deq(W, U, x, b, z), np.zeros(n), W, tol=1e-14)
        return np.sum(c * z)

    def unrolled(W, k):
        z = np.zeros(n)
        for _ in range(k):
            z = _deq(W, U, x, b, z)
        return np.sum(c * z)

    g = ft.grad(implicit)(W)
    np.testing.assert_allclose(g, central_diff(implicit, [W], 0), rtol=1e-6, atol=1e-9)
    errors = [np.max(np.abs(ft.grad(unrolled)(W, k) - g)) for k in (5, 10, 20, 40, 80)]
    # the unrolled gradient tends to the implicit one as ρ^k (ρ ≤ 0.6), to rounding
    assert errors[0] > 1e-4 and errors[1] < 1e-3 * errors[0] and errors[2] < 1e-6 * errors[1]
    assert max(errors[3:]) < 1e-14, errors


@pytest.mark.parametrize("method", ["anderson", "iterate", "newton"])
def test_forward_and_reverse_agree_to_second_order(rng, method):
    n = 5
    W, b = _contraction(rng, n, 0.5), rng.standard_normal(n)

    def f(b, W):
        return ft.fixed_point(lambda z, b, W: np.tanh(W @ z + b), np.zeros(n), b, W,
                              method=method, tol=1e-13)

    ft.check_grads(f, (b, W), order=2, rtol=1e-5, atol=1e-7)
    ft.check_grads(lambda t: ft.root(lambda z, t: z ** 3 + z - t, 0.0, t), (0.7,),
                   order=2)


def test_pytree_params_and_a_partial():
    p = {"a": 0.5, "b": np.array([1.0, 2.0])}

    def f(p):
        return np.sum(ft.fixed_point(lambda z, p: p["a"] * np.sin(z) + p["b"], np.zeros(2),
                                     p, tol=1e-14))

    def step(a, z):
        return a * np.sin(z) + p["b"]

    def g(a):
        return np.sum(ft.fixed_point(functools.partial(step, a), np.zeros(2), tol=1e-14))

    gp = ft.grad(f)(p)
    assert set(gp) == {"a", "b"}
    assert gp["a"] == pytest.approx(central_diff(lambda a: f({**p, "a": a}), [0.5], 0),
                                    rel=1e-8)
    np.testing.assert_allclose(gp["b"], central_diff(lambda b: f({**p, "b": b}), [p["b"]], 0),
                               rtol=1e-8)
    assert ft.grad(g)(0.5) == pytest.approx(gp["a"], rel=1e-12)


def test_the_tape_does_not_grow_with_the_iteration_count():
    sizes = []
    for tol in (1e-3, 1e-14):
        with ft.Tape() as tape:
            t = tape.var(1.0)
            ft.fixed_point(lambda z, t: np.cos(t * z), 0.5, t, tol=tol, method="iterate")
        sizes.append(len(tape))
    assert sizes == [2, 2]           # the input and the one implicit node


# ---------------------------------------------------------------------------
# compiled replay
# ---------------------------------------------------------------------------

def test_compiled_function_re_solves_on_new_inputs(rng):
    n = 6
    A = _contraction(rng, n)
    w = rng.standard_normal(n)

    def loss(b):
        z = ft.fixed_point(lambda z, b: A @ z + np.sin(b), np.zeros(n), b)
        return np.sum(w * z * z)

    F = ft.compile(loss, np.zeros(n))
    M = np.linalg.inv(np.eye(n) - A)
    for b in (rng.standard_normal(n), rng.standard_normal(n) * 3):
        z = M @ np.sin(b)
        assert F(b) == pytest.approx(np.sum(w * z * z), rel=1e-10)
        np.testing.assert_allclose(F.grad(b), np.cos(b) * (M.T @ (2 * w * z)), rtol=1e-9)
        np.testing.assert_allclose(F.hessian(b), ft.hessian(loss)(b), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(F.hvp(b, w), ft.hessian(loss)(b) @ w, rtol=1e-9,
                                   atol=1e-12)
        v = rng.standard_normal(n)
        assert F.jvp(b, v)[1] == pytest.approx(F.grad(b) @ v, rel=1e-9)


def test_compiled_guards_still_hold_around_an_implicit_node():
    def f(t):
        z = ft.fixed_point(lambda z, t: np.cos(t * z), 0.5, t, tol=1e-14)
        return z * z if t > 1.0 else -z

    F = ft.compile(f, 1.5, retrace=False)
    z, d1, _ = _cos_exact(1.2)
    assert F.grad(1.2) == pytest.approx(2 * z * d1, rel=1e-10)
    with pytest.raises(ft.BranchChanged):
        F.grad(0.5)


# ---------------------------------------------------------------------------
# failures are loud
# ---------------------------------------------------------------------------

def test_non_convergence_raises_with_name_residual_and_iterations():
    with pytest.raises(ft.ConvergenceError, match=r"fixed_point of <lambda>: did not "
                       r"converge: residual .* after 3 iterations") as e:
        ft.grad(lambda t: ft.fixed_point(lambda z, t: np.cos(t * z), 0.5, t,
                                         max_iter=3, method="iterate"))(1.0)
    assert e.value.iterations == 3 and e.value.residual > 1e-10
    with pytest.raises(ft.ConvergenceError, match="root of"):    # z² + 1 has no real root
        ft.root(lambda z, t: z * z + t, 0.5, 1.0)
    with pytest.raises(ft.ConvergenceError, match="adjoint solve"):
        # the forward solve converges, the adjoint's GMRES is given one product
        ft.grad(lambda b: np.sum(ft.fixed_point(lambda z, b: 0.5 * np.sin(z) + b,
                                                np.zeros(5), b, dense_max=0,
                                                adjoint_max_iter=1)))(np.arange(5.0))


def test_singular_jacobian_raises():
    # every z is a fixed point of z ↦ z: I − ∂F/∂z = 0 at the solution
    with pytest.raises(np.linalg.LinAlgError, match="I − ∂F/∂z is singular at the solution"):
        ft.grad(lambda t: ft.fixed_point(lambda z, t: z + 0.0 * t, 1.0, t))(2.0)
    # a rank-one system: Newton cannot take a step
    with pytest.raises(np.linalg.LinAlgError, match="∂G/∂z is singular at Newton iterate 0"):
        ft.root(lambda z, t: np.stack([z[0] + z[1] - t, 2 * z[0] + 2 * z[1] - 2 * t]),
                np.zeros(2), 1.0)
    with pytest.raises(np.linalg.LinAlgError, match="the operator is singular"):
        ft.linear_solve(lambda x: np.stack([x[0] + x[1], x[0] + x[1]]), np.ones(2))


def test_bad_input_is_named():
    with pytest.raises(ft.ShapeError, match=r"returned shape \(3,\); it must return the "
                       r"shape of z, \(2,\)"):
        ft.fixed_point(lambda z: np.ones(3), np.zeros(2))
    with pytest.raises(ValueError, match="tol must be a number in"):
        ft.fixed_point(np.cos, 0.0, tol=0.0)
    with pytest.raises(ValueError, match="adjoint_max_iter must be a positive int"):
        ft.root(np.sin, 0.0, adjoint_max_iter=0)
    with pytest.raises(ValueError, match="method must be"):
        ft.fixed_point(np.cos, 0.0, method="bisect")
    with pytest.raises(TypeError, match="must be callable"):
        ft.fixed_point(3.0, 0.0)
    with pytest.raises(TypeError, match="z0 must be a real"):
        ft.fixed_point(np.cos, "a")


HIDDEN = {}


def test_a_fastape_value_reached_through_a_global_is_caught():
    def F(z):
        return np.cos(HIDDEN["t"] * z)

    def f(t):
        HIDDEN["t"] = t
        return ft.fixed_point(F, 0.5)

    with pytest.raises(ft.TapeError, match="pass that value in params"):
        ft.grad(f)(1.0)


def test_the_users_arrays_are_not_modified(rng):
    A, b, z0 = _contraction(rng, 4), rng.standard_normal(4), rng.standard_normal(4)
    copies = [A.copy(), b.copy(), z0.copy()]
    ft.grad(lambda b: np.sum(ft.fixed_point(lambda z, A, b: A @ z + b, z0, A, b)))(b)
    for a, c in zip((A, b, z0), copies):
        np.testing.assert_array_equal(a, c)


def test_plain_numbers_simply_solve():
    z = ft.fixed_point(np.cos, 0.5)
    assert isinstance(z, float) and z == pytest.approx(np.cos(z), abs=1e-10)
    x = ft.linear_solve(lambda x: 2.0 * x, np.array([1.0, 4.0]))
    np.testing.assert_allclose(x, [0.5, 2.0])


@pytest.mark.parametrize("dense_max", [ft.implicit.DENSE_MAX, 0])
def test_large_tapes_dropped_between_steps_are_recorded_again(rng, monkeypatch, dense_max):
    monkeypatch.setattr(ft.implicit, "_KEEP_BYTES", 0)      # every tape of H counts as large
    n = 5
    A, w = _contraction(rng, n), rng.standard_normal(n)
    M = np.linalg.inv(np.eye(n) - A)

    def loss(b):
        z = ft.fixed_point(lambda z, b: A @ z + b * b, np.zeros(n), b, dense_max=dense_max)
        return np.sum(w * np.sin(z))

    b = rng.standard_normal(n)
    z = M @ (b * b)
    np.testing.assert_allclose(ft.grad(loss)(b), 2 * b * (M.T @ (w * np.cos(z))), rtol=1e-9)
    H = 2 * np.diag(M.T @ (w * np.cos(z))) - 4 * np.diag(b) @ M.T @ np.diag(w * np.sin(z)) \
        @ M @ np.diag(b)
    np.testing.assert_allclose(ft.hessian(loss)(b), H, rtol=1e-8, atol=1e-12)
    F = ft.compile(loss, b)
    np.testing.assert_allclose(F.hessian(b), H, rtol=1e-8, atol=1e-12)


def test_compiled_closure_and_batches_re_solve_per_input():
    F = ft.compile(cos_closed, 1.0)            # t closed over: rebound at every replay
    ts = np.array([[0.3], [1.0], [1.7], [1.0]])
    for t in ts[:, 0]:
        z, d1, _ = _cos_exact(t)
        assert F(t) == pytest.approx(z, abs=1e-13)
        assert F.grad(t) == pytest.approx(d1, rel=1e-10)
    G = ft.compile(lambda x: cos_fixed_point(x[0]) * x[0], np.ones(1))
    values, grads = G.value_and_grad_batch(ts, threads=2)
    for t, v, g in zip(ts[:, 0], values, grads):
        z, d1, _ = _cos_exact(t)
        assert v == pytest.approx(z * t, rel=1e-12)
        assert g[0] == pytest.approx(d1 * t + z, rel=1e-10)


def test_perturbation_confusion_closed_over_and_passed_values_are_kept_apart():
    # g(x) = x · ∂/∂y z*(x, y) at y = x, z* = 0.5 cos z* + x + y: the inner derivative
    # is in y alone (x closed over), then the outer one in x through both
    def zstar(x, y):
        return ft.fixed_point(lambda z, y: 0.5 * np.cos(z) + x + y, 0.0, y, tol=1e-14)

    def g(x):
        return x * ft.grad(lambda y: zstar(x, y))(x)

    def plain_g(x, h=1e-6):
        return x * (zstar(x, x + h) - zstar(x, x - h)) / (2 * h)

    for x in (0.2, 0.9):
        z = zstar(x, x)
        dz = 1 / (1 + 0.5 * np.sin(z))              # ∂z/∂y = ∂z/∂x
        assert g(x) == pytest.approx(x * dz, rel=1e-12)
        # d/dx [x dz(z(x))]: dz depends on z, and z on x through both x and y
        d2 = dz + x * (-0.5 * np.cos(z) * dz ** 2) * (2 * dz)
        assert ft.grad(g)(x) == pytest.approx(d2, rel=1e-10)
        assert ft.grad(g)(x) == pytest.approx(central_diff(plain_g, [x], 0, h=1e-4),
                                              rel=1e-5)


def test_compiled_second_derivatives_of_a_scalar_implicit_node():
    F = ft.compile(cos_fixed_point, 1.0)                   # a tape of scalars
    G = ft.compile(lambda x: cos_fixed_point(x[0]) * x[1], np.ones(2))
    for t in (0.4, 1.2):
        z, d1, d2 = _cos_exact(t)
        assert F.hessian(t) == pytest.approx(d2, rel=1e-9)
        assert F.hvp(t, 2.0) == pytest.approx(2 * d2, rel=1e-9)
        np.testing.assert_allclose(G.hessian(np.array([t, 2.0])),
                                   [[2 * d2, d1], [d1, 0.0]], rtol=1e-9, atol=1e-14)
