"""custom_vjp and custom_jvp: eager, nested, compiled, forward mode, errors."""

import math

import numpy as np
import pytest
import scipy.integrate
from helpers import central_diff

import fastape as ft


@ft.custom_vjp
def logsumexp(x):
    """A stable log Σ exp with its own (stable) gradient, the softmax."""
    m = np.max(x.value if isinstance(x, ft.Var) else x)
    return m + np.log(np.sum(np.exp(x - m)))


def _lse_fwd(x):
    y = logsumexp(x)
    return y, (x, y)


def _lse_bwd(res, g):
    x, y = res
    return (g * np.exp(x - y),)


logsumexp.defvjp(_lse_fwd, _lse_bwd)


@ft.custom_vjp
def integral(a, b):
    """∫_0^1 sin(a t) e^(b t) dt by scipy's quad: code fastape cannot record."""
    return scipy.integrate.quad(lambda t: math.sin(a * t) * math.exp(b * t), 0, 1)[0]


def _int_fwd(a, b):
    return integral(a, b), (a, b)


def _int_bwd(res, g):
    a, b = res
    da = scipy.integrate.quad(lambda t: t * math.cos(a * t) * math.exp(b * t), 0, 1)[0]
    db = scipy.integrate.quad(lambda t: t * math.sin(a * t) * math.exp(b * t), 0, 1)[0]
    return g * da, g * db


integral.defvjp(_int_fwd, _int_bwd)


@ft.custom_jvp
def safe_sqrt_norm(x):
    """‖x‖ with the subgradient 0 at 0, as a forward rule."""
    return np.sqrt(np.sum(x * x))


@safe_sqrt_norm.defjvp
def _norm_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    n = np.sqrt(np.sum(x * x))
    if n > 0:
        return n, np.sum(x * t) / n
    return n, 0.0 * np.sum(t)


def test_custom_vjp_eager_against_differences(rng):
    x = rng.standard_normal(5) * 3
    g = ft.grad(lambda v: logsumexp(v) * 2.0)(x)
    np.testing.assert_allclose(g, 2 * np.exp(x) / np.sum(np.exp(x)), rtol=1e-14)
    v, g = ft.value_and_grad(lambda v: logsumexp(v * 1000.0))(x)   # no overflow
    assert np.isfinite(v) and np.all(np.isfinite(g))
    assert logsumexp(x) == pytest.approx(np.log(np.sum(np.exp(x))))   # plain call


def test_custom_vjp_around_external_code():
    a, b = 0.7, -0.3
    ga, gb = ft.grad(lambda a, b: integral(a, b) ** 2, argnums=(0, 1))(a, b)
    fa = central_diff(lambda a: integral(a, b) ** 2, [a], 0)
    fb = central_diff(lambda b: integral(a, b) ** 2, [b], 0)
    assert ga == pytest.approx(fa, rel=1e-7) and gb == pytest.approx(fb, rel=1e-7)
    F = ft.compile(lambda p: integral(p[0], p[1]) * p[0], np.array([a, b]))
    for p in (np.array([0.2, 0.4]), np.array([1.3, -1.0])):
        fd = central_diff(lambda q: integral(q[0], q[1]) * q[0], [p], 0)
        np.testing.assert_allclose(F.grad(p), fd, rtol=1e-7)
        assert F(p) == pytest.approx(integral(*p) * p[0], rel=1e-14)


def test_custom_vjp_nested_runs_the_rules_on_values(rng):
    x = rng.standard_normal(4)
    H = ft.hessian(logsumexp)(x)
    s = np.exp(x) / np.sum(np.exp(x))
    np.testing.assert_allclose(H, np.diag(s) - np.outer(s, s), rtol=1e-12, atol=1e-15)
    # compiled: the Hessian reverse over reverse (a custom_vjp rule has no tangents)
    F = ft.compile(logsumexp, x)
    y = x[::-1].copy()
    s = np.exp(y) / np.sum(np.exp(y))
    np.testing.assert_allclose(F.hessian(y), np.diag(s) - np.outer(s, s), rtol=1e-12,
                               atol=1e-15)
    v = np.arange(4.0)
    np.testing.assert_allclose(F.hvp(y, v), (np.diag(s) - np.outer(s, s)) @ v, rtol=1e-12,
                               atol=1e-15)
    np.testing.assert_allclose(ft.hvp(logsumexp, y, v), F.hvp(y, v), rtol=1e-13, atol=1e-15)
    # external code cannot run on fastape values: nested differentiation says so
    with pytest.raises(ft.TapeError, match="write fwd and bwd with numpy or fastape"):
        ft.grad(ft.grad(lambda a: integral(a, 0.5)))(0.3)


def test_custom_vjp_has_no_forward_mode():
    with pytest.raises(ft.TapeError, match="custom_vjp rule only"):
        ft.jvp(logsumexp, (np.ones(3),), (np.ones(3),))
    F = ft.compile(logsumexp, np.ones(3))
    with pytest.raises(ft.TapeError, match="custom_vjp rule only"):
        F.jvp(np.ones(3), np.ones(3))
    np.testing.assert_allclose(ft.jacrev(logsumexp)(np.zeros(3)), np.full(3, 1 / 3))


def test_custom_jvp_forward_reverse_nested_compiled(rng):
    x = rng.standard_normal(3)
    t = rng.standard_normal(3)
    n = np.linalg.norm(x)
    out, tan = ft.jvp(safe_sqrt_norm, (x,), (t,))
    assert out == pytest.approx(n) and tan == pytest.approx(x @ t / n)
    np.testing.assert_allclose(ft.grad(safe_sqrt_norm)(x), x / n, rtol=1e-14)  # transposed
    H = ft.hessian(safe_sqrt_norm)(x)
    np.testing.assert_allclose(H, (np.eye(3) - np.outer(x, x) / n ** 2) / n, rtol=1e-12)
    F = ft.compile(lambda v: safe_sqrt_norm(v) * v[0], x)
    y = x + 0.5
    np.testing.assert_allclose(F.grad(y), central_diff(
        lambda v: np.linalg.norm(v) * v[0], [y], 0), rtol=1e-7)
    np.testing.assert_allclose(F.jvp(y, t)[1], F.grad(y) @ t, rtol=1e-12)
    ft.check_grads(safe_sqrt_norm, (x,), order=2)


def test_custom_rules_pytrees_and_several_outputs():
    @ft.custom_vjp
    def polar(p):
        r = np.sqrt(p["x"] ** 2 + p["y"] ** 2)
        return r, np.arctan2(p["y"], p["x"])

    def fwd(p):
        return polar(p), p

    def bwd(p, cot):
        gr, gt = cot
        r2 = p["x"] ** 2 + p["y"] ** 2
        r = np.sqrt(r2)
        return ({"x": gr * p["x"] / r - gt * p["y"] / r2,
                 "y": gr * p["y"] / r + gt * p["x"] / r2},)

    polar.defvjp(fwd, bwd)
    p = {"x": 0.6, "y": 0.8}
    g = ft.grad(lambda q: polar(q)[0] * 2 + polar(q)[1])(p)
    assert g["x"] == pytest.approx(2 * 0.6 - 0.8) and g["y"] == pytest.approx(2 * 0.8 + 0.6)


def test_custom_rule_errors_are_clear():
    @ft.custom_vjp
    def f(x):
        return x * 2

    with pytest.raises(TypeError, match="defvjp"):
        ft.grad(f)(1.0)
    f.defvjp(lambda x: (x * 2, None), lambda r, g: (np.ones(3),))   # wrong shape
    with pytest.raises(ft.ShapeError, match="structure and shapes of argument 0"):
        ft.grad(f)(1.0)
    f.defvjp(lambda x: (x * 2, None), lambda r, g: g * 2)            # not a tuple
    with pytest.raises(TypeError, match="one entry per argument"):
        ft.grad(f)(1.0)

    def boom(r, g):
        raise ZeroDivisionError("inside the rule")

    f.defvjp(lambda x: (x * 2, None), boom)
    F = ft.compile(lambda x: f(x) + 1.0, 1.0)
    with pytest.raises(ZeroDivisionError, match="inside the rule"):
        F.grad(2.0)
    assert F(2.0) == 5.0                    # the function is still usable
