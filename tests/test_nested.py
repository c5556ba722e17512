"""Nested differentiation: derivatives of derivatives, against closed forms, central
differences of lower-order derivatives, and each other. The inner transform records
its reverse sweep on the outer tape (fastape._rules)."""

import math

import numpy as np
import pytest
from helpers import central_diff, rosenbrock

import fastape as ft


def _seeds(x):
    """The seeds' function exp(u) + sin(u), u = e^x + e^2x, and its derivatives 0..3."""
    e = math.exp(x)
    u = [e + e * e, e + 2 * e * e, e + 4 * e * e, e + 8 * e * e]   # u and u', u'', u'''
    g = [math.exp(u[0]) + math.sin(u[0]), math.exp(u[0]) + math.cos(u[0]),
         math.exp(u[0]) - math.sin(u[0]), math.exp(u[0]) - math.cos(u[0])]
    return [g[0], g[1] * u[1], g[2] * u[1] ** 2 + g[1] * u[2],
            g[3] * u[1] ** 3 + 3 * g[2] * u[1] * u[2] + g[1] * u[3]]


def seeds_f(x):
    return ft.exp(ft.exp(x) + ft.exp(x) ** 2) + ft.sin(ft.exp(x) + ft.exp(x) ** 2)


@pytest.mark.parametrize("fun,derivs", [
    (ft.sin, lambda x: [math.sin(x), math.cos(x), -math.sin(x), -math.cos(x)]),
    (ft.exp, lambda x: [math.exp(x)] * 4),
    (lambda x: 3 * x ** 4 - 2 * x ** 3 + x - 5,
     lambda x: [3 * x ** 4 - 2 * x ** 3 + x - 5, 12 * x ** 3 - 6 * x ** 2 + 1,
                36 * x ** 2 - 12 * x, 72 * x - 12]),
    (lambda x: x ** 3.5 / (1 + x), None),
    (seeds_f, _seeds),
    (lambda x: ft.tanh(x) * ft.log(x) + ft.sqrt(x) * ft.sigmoid(x), None),
], ids=["sin", "exp", "polynomial", "pow_div", "seeds", "tanh_log_sqrt_sigmoid"])
def test_up_to_third_order(fun, derivs):
    d1 = ft.grad(fun)
    d2 = ft.grad(d1)
    d3 = ft.grad(d2)
    for x in (0.3, 0.9):
        got = [float(fun(x)), d1(x), d2(x), d3(x)]
        if derivs is not None:
            assert got == pytest.approx(derivs(x), rel=1e-12)
        # each order against central differences of the one below
        for k, lower in enumerate((fun, d1, d2)):
            fd = central_diff(lambda t, lower=lower: float(lower(t)), [x], 0, h=1e-5)
            assert got[k + 1] == pytest.approx(fd, rel=1e-6, abs=1e-8)


def test_perturbation_confusion():
    # d/dx [x · d/dy (x + y)] = d/dx [x · 1] = 1 (a confused tag would give 2)
    assert ft.grad(lambda x: x * ft.grad(lambda y: x + y)(x))(2.0) == 1.0
    # the inner derivative closes over x: d/dx [x · d/dy (x y)] = d/dx x² = 2x
    assert ft.grad(lambda x: x * ft.grad(lambda y: x * y)(3.0))(2.0) == 4.0
    # same variable passed in: d/dx [d/dy (x y²)]|_{y=x} = d/dx 2x² = 4x
    assert ft.grad(lambda x: ft.grad(lambda y: x * y ** 2)(x))(1.5) == pytest.approx(6.0)
    # forward inside reverse: d/dx jvp(y -> x y, (x,), (1,)) = d/dx x = 1
    assert ft.grad(lambda x: ft.jvp(lambda y: x * y, (x,), (1.0,))[1])(2.0) == 1.0


def test_function_that_calls_grad_internally():
    def newton_step(x):          # x - f'(x)/f''(x) for f = cosh, differentiated again
        f1 = ft.grad(ft.cosh)
        return x - f1(x) / ft.grad(f1)(x)

    # newton_step(x) = x - tanh x; its derivative is tanh(x)²
    for x in (0.2, 1.1):
        assert ft.grad(newton_step)(x) == pytest.approx(math.tanh(x) ** 2, rel=1e-13)


def test_hessian_vector_of_arrays_against_the_closed_form():
    def f(x):
        return ft.sum(ft.exp(x) * x) + ft.prod(x) + ft.max(x) ** 2

    x = np.array([1.0, 2.0, 0.5])
    w = np.array([1.0, 2.0, 3.0])
    H = np.diag(np.exp(x) * (x + 2))
    p = np.prod(x)
    for i in range(3):
        for j in range(3):
            if i != j:
                H[i, j] += p / (x[i] * x[j])
    H[1, 1] += 2.0
    hw = ft.grad(lambda v: ft.sum(ft.grad(f)(v) * w))(x)
    np.testing.assert_allclose(hw, H @ w, rtol=1e-13)


def test_rosenbrock_hessian_by_nested_reverse():
    x = np.array([0.3, -0.4, 1.2, 0.8])
    n = x.size
    H = np.zeros((n, n))
    for i in range(n - 1):      # the chained Rosenbrock's Hessian, term by term
        H[i, i] += 1200 * x[i] ** 2 - 400 * x[i + 1] + 2
        H[i, i + 1] += -400 * x[i]
        H[i + 1, i] += -400 * x[i]
        H[i + 1, i + 1] += 200
    for k in range(n):
        e = np.eye(n)[k]
        row = ft.grad(lambda v, e=e: ft.sum(ft.grad(rosenbrock)(v) * e))(x)
        np.testing.assert_allclose(row, H[k], rtol=1e-13, atol=1e-12)


def test_compiled_gradient_function_replays_the_recorded_reverse_sweep():
    f = lambda x: ft.sum(ft.sin(x) * x ** 2) + ft.max(x)      # noqa: E731
    G = ft.compile(ft.grad(f), np.array([0.1, 0.2, 0.3]))
    for x in (np.array([0.3, -1.0, 2.0]), np.array([2.5, 0.1, -0.7])):   # max moves
        np.testing.assert_allclose(G(x), ft.grad(f)(x), rtol=1e-14)
        want = np.sin(x) * 2 * x + np.cos(x) * x ** 2 + (x == x.max())
        np.testing.assert_allclose(G(x), want, rtol=1e-14)
    assert len(G.traces) == 2           # the maximum moved: a guard re-recorded
    # the gradient of a scalar made from the compiled gradient: the Hessian's row sums
    S = ft.compile(lambda x: ft.sum(ft.grad(f)(x)), np.zeros(3) + 0.1)
    x = np.array([0.3, -1.0, 2.0])
    np.testing.assert_allclose(S.grad(x), central_diff(lambda v: float(np.sum(ft.grad(f)(v))),
                                                       [x], 0, h=1e-5), rtol=1e-6, atol=1e-7)


def test_third_order_through_a_derived_partial_raises():
    # arctan2's partials are derived ops (no nested rule in its block): second order
    # is exact, a third derivative is refused rather than guessed
    f = lambda x: ft.arctan2(x, 2.0)        # noqa: E731
    d2 = ft.grad(ft.grad(f))(0.4)
    assert d2 == pytest.approx(-2 * 0.4 * 2.0 / (0.4 ** 2 + 4.0) ** 2, rel=1e-13)
    with pytest.raises(ft.TapeError, match="third derivative of arctan2"):
        ft.grad(ft.grad(ft.grad(f)))(0.4)


def test_nested_cumprod_with_a_zero_raises_not_guesses():
    f = lambda x: ft.sum(ft.cumprod(x))     # noqa: E731
    x = np.array([1.5, 0.0, 2.0])
    ft.grad(f)(x)                           # first order is exact with zeros
    with pytest.raises(ft.TapeError, match="cumprod"):
        ft.grad(lambda v: ft.sum(ft.grad(f)(v)))(x)


def test_nested_det_at_a_singular_matrix_raises():
    A = np.diag([1.0, 2.0, 0.0])
    np.testing.assert_array_equal(ft.grad(np.linalg.det)(A), np.diag([0.0, 0.0, 2.0]))
    with pytest.raises(np.linalg.LinAlgError, match="singular"):
        ft.grad(lambda a: ft.sum(ft.grad(np.linalg.det)(a)))(A)


def test_nested_values_are_values_of_the_outer_tape():
    with ft.Tape() as t:
        x = t.var(0.5)
        v, g = ft.value_and_grad(lambda y: ft.sin(y) * y)(x)
        assert isinstance(v, ft.Var) and isinstance(g, ft.Var) and g.tape is t
    assert t.gradient(g, x) == pytest.approx(2 * math.cos(0.5) - 0.5 * math.sin(0.5))
    with pytest.raises(ft.TapeError, match="recording has ended"):
        ft.grad(ft.sin)(x)
