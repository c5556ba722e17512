"""fastape.checkpoint: segments recorded as one node, their interior recomputed
(compiled) in the reverse sweep. Gradients are checked against the plain recording
and against closed forms of an affine recurrence."""

import numpy as np
import pytest
from helpers import central_diff

import fastape as ft

K = 25          # steps per segment


def affine_steps(s, a, b):
    for _ in range(K):
        s = a * s + b
    return s


seg = ft.checkpoint(affine_steps)


def run(n_segments, step):
    def loss(s0, a, b):
        s = s0
        for _ in range(n_segments):
            s = step(s, a, b)
        return s
    return loss


def closed_form(s0, a, b, n):
    """s_n = aⁿ s₀ + b (1 - aⁿ)/(1 - a) and its partials."""
    an = a ** n
    value = an * s0 + b * (1 - an) / (1 - a)
    d_s0 = an
    d_b = (1 - an) / (1 - a)
    d_a = n * a ** (n - 1) * s0 + b * (-(n * a ** (n - 1)) * (1 - a) + (1 - an)) / (1 - a) ** 2
    return value, (d_s0, d_a, d_b)


def test_gradients_equal_the_plain_recording_and_the_closed_form():
    args = (0.7, 0.999, 0.01)
    n = 40
    v_c, g_c = ft.value_and_grad(run(n, seg), (0, 1, 2))(*args)
    v_p, g_p = ft.value_and_grad(run(n, affine_steps), (0, 1, 2))(*args)
    v_f, g_f = closed_form(*args, n * K)
    assert v_c == pytest.approx(v_p, rel=1e-14) and v_c == pytest.approx(v_f, rel=1e-12)
    np.testing.assert_allclose(g_c, g_p, rtol=1e-13)
    np.testing.assert_allclose(g_c, g_f, rtol=1e-10)


def test_the_tape_holds_one_node_per_segment():
    n = 40
    with ft.Tape() as t:
        xs = [t.var(x) for x in (0.7, 0.999, 0.01)]
        y = run(n, seg)(*xs)
    with ft.Tape() as u:
        zs = [u.var(x) for x in (0.7, 0.999, 0.01)]
        z = run(n, affine_steps)(*zs)
    assert len(t) == 3 + n                          # the inputs and one node per segment
    assert len(u) == 3 + 2 * K * n
    np.testing.assert_allclose(t.gradient(y, xs), u.gradient(z, zs), rtol=1e-13)


def oscillator(state, omega):
    """A pytree state (position, velocity) through 10 semi-implicit Euler steps."""
    x, v = state
    for _ in range(10):
        v = v - 0.01 * omega ** 2 * np.sin(x)
        x = x + 0.01 * v
    return (x, v)


def test_pytree_arguments_and_outputs_and_finite_differences():
    step = ft.checkpoint(oscillator)

    def loss(x0, omega, f):
        state = (x0, np.zeros(3))
        for _ in range(20):
            state = f(state, omega)
        return np.sum(state[0] ** 2) + np.sum(state[1])

    x0 = np.array([0.1, 0.5, 1.0])
    g = ft.grad(lambda x, w: loss(x, w, step), (0, 1))(x0, 1.3)
    gp = ft.grad(lambda x, w: loss(x, w, oscillator), (0, 1))(x0, 1.3)
    np.testing.assert_allclose(g[0], gp[0], rtol=1e-12)
    assert g[1] == pytest.approx(gp[1], rel=1e-12)
    np.testing.assert_allclose(g[0], central_diff(lambda x: loss(x, 1.3, oscillator), [x0], 0),
                               rtol=1e-6)
    assert step((x0, np.zeros(3)), 1.3)[0] == pytest.approx(oscillator((x0, np.zeros(3)),
                                                                       1.3)[0])


def clipped_steps(s, a):
    for _ in range(5):
        s = s * a if s < 2.0 else s - 1.0          # a branch: guarded, re-recorded
    return s


def test_branches_inside_a_segment():
    f = ft.checkpoint(clipped_steps)
    for s0 in (0.5, 1.9, 3.5):
        g = ft.grad(lambda s, a: f(f(s, a), a), (0, 1))(s0, 1.5)
        gp = ft.grad(lambda s, a: clipped_steps(clipped_steps(s, a), a), (0, 1))(s0, 1.5)
        np.testing.assert_allclose(g, gp, rtol=1e-14)


def test_closing_over_a_traced_value_is_an_error():
    def loss(a):
        return ft.checkpoint(lambda s: s * a)(1.0 + a * 0.0)

    with pytest.raises(ft.TapeError, match="must be\\s+its arguments"):
        ft.grad(loss)(2.0)


def test_nested_and_forward_mode():
    loss_c = run(4, seg)
    loss_p = run(4, affine_steps)
    args = (0.7, 0.99, 0.01)
    Hc = ft.hessian(lambda v: loss_c(v[0], v[1], v[2]))(np.array(args))
    Hp = ft.hessian(lambda v: loss_p(v[0], v[1], v[2]))(np.array(args))
    np.testing.assert_allclose(Hc, Hp, rtol=1e-12)
    _, tc = ft.jvp(loss_c, args, (1.0, 0.5, 0.0))
    _, tp = ft.jvp(loss_p, args, (1.0, 0.5, 0.0))
    assert tc == pytest.approx(tp, rel=1e-13)


def test_inside_a_compiled_function():
    loss = run(30, seg)
    F = ft.compile(loss, 0.7, 0.999, 0.01, argnums=(0, 1, 2))
    for args in [(0.7, 0.999, 0.01), (1.5, 0.99, -0.2)]:
        np.testing.assert_allclose(F.grad(*args), closed_form(*args, 30 * K)[1], rtol=1e-10)
    assert F.nodes == 3 + 30


def test_plain_numbers_run_the_function():
    assert seg(0.7, 0.9, 0.1) == affine_steps(0.7, 0.9, 0.1)
