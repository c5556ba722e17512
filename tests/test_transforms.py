"""The JAX-style transforms: jvp, vjp, linearize, jacobian (fwd, rev), hessian, hvp,
eager, nested and compiled, against closed forms, finite differences and each other;
check_grads itself (it must catch a wrong derivative)."""

import numpy as np
import pytest
from helpers import central_diff, rosenbrock

import fastape as ft


def two_layer(params, x):
    """tanh network: W2 tanh(W1 x + b1)."""
    W1, b1, W2 = params["W1"], params["b1"], params["W2"]
    return W2 @ np.tanh(W1 @ x + b1)


def two_layer_jvp(params, x, dparams):
    """Its forward derivative by hand: dh = (1 - h²)(dW1 x + db1), dy = dW2 h + W2 dh."""
    W1, b1, W2 = params["W1"], params["b1"], params["W2"]
    h = np.tanh(W1 @ x + b1)
    dh = (1 - h ** 2) * (dparams["W1"] @ x + dparams["b1"])
    return dparams["W2"] @ h + W2 @ dh


def rosen_hessian(x):
    n = x.size
    H = np.zeros((n, n))
    for i in range(n - 1):
        H[i, i] += 1200 * x[i] ** 2 - 400 * x[i + 1] + 2
        H[i, i + 1] += -400 * x[i]
        H[i + 1, i] += -400 * x[i]
        H[i + 1, i + 1] += 200
    return H


@pytest.fixture
def net(rng):
    params = {"W1": rng.standard_normal((5, 3)), "b1": rng.standard_normal(5),
              "W2": rng.standard_normal((2, 5))}
    dparams = {k: rng.standard_normal(v.shape) for k, v in params.items()}
    return params, rng.standard_normal(3), dparams


def test_jvp_of_the_two_layer_network_against_the_hand_derivative(net):
    params, x, dparams = net
    out, tangent = ft.jvp(lambda p: two_layer(p, x), (params,), (dparams,))
    np.testing.assert_allclose(out, two_layer(params, x), rtol=1e-14)
    np.testing.assert_allclose(tangent, two_layer_jvp(params, x, dparams), rtol=1e-13)
    F = ft.compile(lambda p: two_layer(p, x), params)
    out_c, tangent_c = F.jvp((params,), dparams)
    np.testing.assert_allclose(tangent_c, tangent, rtol=1e-13)


def test_vjp_returns_one_cotangent_per_primal_and_agrees_with_jvp(net, rng):
    params, x, dparams = net
    out, f_vjp = ft.vjp(two_layer, params, x)
    u = rng.standard_normal(out.shape)
    gp, gx = f_vjp(u)
    assert set(gp) == set(params) and gx.shape == x.shape
    lhs = sum(np.sum(gp[k] * dparams[k]) for k in params)
    np.testing.assert_allclose(lhs, u @ two_layer_jvp(params, x, dparams), rtol=1e-12)
    # several calls of one recording, with other cotangents
    np.testing.assert_allclose(f_vjp(2 * u)[1], 2 * gx, rtol=1e-14)


def test_vjp_and_jvp_of_pytree_outputs():
    def f(x):
        return {"s": ft.sum(x ** 2), "v": ft.sin(x)}, 3.0

    x = np.array([0.2, -0.7])
    out, tangent = ft.jvp(f, (x,), (np.array([1.0, 2.0]),))
    assert out[1] == 3.0 and tangent[1] == 0.0
    assert tangent[0]["s"] == pytest.approx(2 * x @ [1.0, 2.0])
    np.testing.assert_allclose(tangent[0]["v"], np.cos(x) * [1.0, 2.0])
    out, f_vjp = ft.vjp(f, x)
    (g,) = f_vjp(({"s": 1.0, "v": np.array([1.0, 0.0])}, 1.0))
    np.testing.assert_allclose(g, 2 * x + [np.cos(x[0]), 0.0])


def test_linearize_reuses_one_recording():
    x = np.array([0.3, 1.1])
    out, f_jvp = ft.linearize(lambda v: ft.exp(v) * v[0], x)
    np.testing.assert_allclose(out, np.exp(x) * x[0])
    for t in (np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([2.0, -1.0])):
        want = np.exp(x) * t * x[0] + np.exp(x) * t[0]
        np.testing.assert_allclose(f_jvp(t), want, rtol=1e-14)


@pytest.mark.parametrize("mode", ["fwd", "rev", "auto"])
def test_jacobian_modes_agree_with_differences(mode, rng):
    A = rng.standard_normal((4, 3))

    def f(x, y):
        return ft.tanh(A @ x) * y[0] + ft.sum(y ** 2)

    x, y = rng.standard_normal(3), rng.standard_normal(2)
    Jx, Jy = ft.jacobian(f, argnums=(0, 1), mode=mode)(x, y)
    assert Jx.shape == (4, 3) and Jy.shape == (4, 2)
    for i in range(4):
        fd = central_diff(lambda v, i=i: float(np.tanh(A @ v)[i] * y[0] + np.sum(y ** 2)),
                          [x], 0)
        np.testing.assert_allclose(Jx[i], fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(Jy[:, 0], np.tanh(A @ x) + 2 * y[0], rtol=1e-13)
    np.testing.assert_allclose(ft.jacfwd(f)(x, y), ft.jacrev(f)(x, y), rtol=1e-13)


def test_jacobian_layout_follows_jax():
    x = np.arange(6.0).reshape(2, 3) / 10
    J = ft.jacobian(lambda v: ft.sin(v).T)(x)           # out (3, 2), in (2, 3)
    assert J.shape == (3, 2, 2, 3)
    for i in range(3):
        for j in range(2):
            want = np.zeros((2, 3))
            want[j, i] = np.cos(x[j, i])
            np.testing.assert_allclose(J[i, j], want)
    assert ft.jacobian(ft.sin)(0.5).shape == ()         # scalar to scalar


def test_hessian_and_hvp_of_rosenbrock_against_the_closed_form(rng):
    x = rng.uniform(-1, 1, 6)
    H = ft.hessian(rosenbrock)(x)
    np.testing.assert_allclose(H, rosen_hessian(x), rtol=1e-13, atol=1e-11)
    v = rng.standard_normal(6)
    np.testing.assert_allclose(ft.hvp(rosenbrock, x, v), rosen_hessian(x) @ v, rtol=1e-12)
    F = ft.compile(rosenbrock, x)
    np.testing.assert_allclose(F.hessian(x + 0.1), rosen_hessian(x + 0.1), rtol=1e-13,
                               atol=1e-11)
    np.testing.assert_allclose(F.hvp(x + 0.1, v), rosen_hessian(x + 0.1) @ v, rtol=1e-12)


def test_compiled_hessian_whose_guard_flips():
    def f(x):
        return x[0] ** 3 * x[1] if x[0] > 0 else -x[0] ** 2 + x[1] ** 2

    F = ft.compile(f, np.array([1.0, 1.0]))
    np.testing.assert_allclose(F.hessian(np.array([2.0, 3.0])), [[36.0, 12.0], [12.0, 0.0]])
    np.testing.assert_allclose(F.hessian(np.array([-1.0, 3.0])), [[-2.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(F.hvp(np.array([2.0, 3.0]), np.array([1.0, 0.0])),
                               [36.0, 12.0])
    F_strict = ft.compile(f, np.array([1.0, 1.0]), retrace=False)
    with pytest.raises(ft.BranchChanged):
        F_strict.hessian(np.array([-1.0, 3.0]))


def test_hessian_of_matrix_functions_against_differences(rng):
    """Second order through linear algebra (the recorded VJPs of solve, det, matmul)."""
    B = rng.standard_normal((3, 3))

    def f(x):
        A = ft.reshape(x, (3, 3)) + 3 * np.eye(3)
        return ft.linalg.det(A) + ft.sum(ft.linalg.solve(A, B) ** 2) + ft.linalg.norm(A @ A)

    x = rng.standard_normal(9) * 0.3
    H = ft.hessian(f)(x)
    for k in range(9):
        fd = central_diff(lambda v, k=k: float(ft.grad(f)(v)[k]), [x], 0, h=1e-5)
        np.testing.assert_allclose(H[k], fd, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(H, H.T, rtol=1e-10, atol=1e-10)


def test_third_derivative_by_mixing_modes():
    f = lambda x: ft.sin(x) * x ** 2       # noqa: E731
    d3 = -np.cos(0.4) * 0.16 - 6 * 0.4 * np.sin(0.4) + 6 * np.cos(0.4)
    assert ft.jacobian(ft.grad(ft.grad(f)))(0.4) == pytest.approx(d3, rel=1e-12)
    assert ft.jvp(ft.grad(ft.grad(f)), (0.4,), (1.0,))[1] == pytest.approx(d3, rel=1e-12)
    assert ft.grad(lambda x: ft.hvp(f, x, 1.0))(0.4) == pytest.approx(d3, rel=1e-12)


def test_check_grads_passes_on_correct_and_catches_wrong_derivatives():
    ft.check_grads(lambda x, y: ft.sum(ft.exp(x) * y ** 2), (np.ones(3), np.arange(3.0)),
                   order=2)
    ft.check_grads(rosenbrock, (np.array([0.3, -0.2, 0.5]),), order=3, modes=("rev",))

    @ft.custom_vjp
    def wrong(x):
        return ft.sin(x) if isinstance(x, ft.Var) else np.sin(x)

    wrong.defvjp(lambda x: (np.sin(x), x), lambda x, g: (g * np.cos(x) * 1.001,))
    with pytest.raises(AssertionError, match="mode rev, order 1"):
        ft.check_grads(wrong, (0.3,), order=1, modes=("rev",))

    @ft.custom_jvp
    def wrong_fwd(x):
        return np.sin(x)

    wrong_fwd.defjvp(lambda p, t: (np.sin(p[0]), np.cos(p[0]) * t[0] * 0.999))
    with pytest.raises(AssertionError, match="mode fwd, order 1"):
        ft.check_grads(wrong_fwd, (0.3,), order=1)
    with pytest.raises(ValueError, match="modes"):
        ft.check_grads(np.sin, (0.3,), modes=("sideways",))


def test_transforms_refuse_bad_input_clearly():
    with pytest.raises(ft.ShapeError, match="tangents"):
        ft.jvp(ft.sin, (np.ones(2),), (np.ones(3),))
    with pytest.raises(TypeError, match="complex"):
        ft.jvp(ft.sin, (np.ones(2),), (np.ones(2) * 1j,))
    with pytest.raises(TypeError, match="tuple"):
        ft.jvp(ft.sin, np.ones(2), np.ones(2))
    _, f_vjp = ft.vjp(ft.sin, np.ones(2))
    with pytest.raises(ft.ShapeError, match="cotangent"):
        f_vjp(np.ones(3))
    with pytest.raises(ValueError, match="mode"):
        ft.jacobian(ft.sin, mode="sideways")
    F = ft.compile(lambda x: ft.sum(x ** 2), np.ones(2))
    with pytest.raises(ft.ShapeError):
        F.hvp(np.ones(2), np.ones(3))


def test_hessian_of_the_extended_rosenbrock(rng):
    """The extended Rosenbrock function Σ_i 100 (x_{2i+1} − x_{2i}²)² + (1 − x_{2i})²
    (Moré, Garbow and Hillstrom 1981, problem 21): a block-diagonal Hessian of 2×2
    blocks [[1200 a² − 400 b + 2, −400 a], [−400 a, 200]], (a, b) = (x_{2i}, x_{2i+1})."""
    def ext_rosenbrock(x):
        s = 0.0
        for i in range(0, len(x), 2):
            s = s + 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2
        return s

    x = rng.uniform(-1.5, 1.5, 8)
    H = np.zeros((8, 8))
    for i in range(0, 8, 2):
        a, b = x[i], x[i + 1]
        H[i:i + 2, i:i + 2] = [[1200 * a * a - 400 * b + 2, -400 * a], [-400 * a, 200]]
    np.testing.assert_allclose(ft.hessian(ext_rosenbrock)(x), H, rtol=1e-13, atol=1e-11)
    F = ft.compile(ext_rosenbrock, np.zeros(8))
    np.testing.assert_allclose(F.hessian(x), H, rtol=1e-13, atol=1e-11)


def test_nested_linearize_of_a_pytree_primal():
    """linearize inside another transform, on a dict of values: the directional
    derivative of Σ a·b along (da, db) = (1, 0) is Σ b = Σ x² for b = x², whose
    gradient is 2x."""
    def inner(x):
        _, f_jvp = ft.linearize(lambda p: ft.sum(p["a"] * p["b"]), {"a": x, "b": x ** 2})
        return f_jvp({"a": np.ones(2), "b": np.zeros(2)})

    x = np.array([0.5, -1.5])
    np.testing.assert_allclose(ft.grad(inner)(x), 2 * x, rtol=1e-14)
