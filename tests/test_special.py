"""scipy.special's functions on fastape values: closed forms from the literature, the
functions that are not one registry op (polygamma, multigammaln, betainc), and the
arguments that are not differentiated (shape parameters, Bessel orders), which must
raise rather than give a silent 0. The table-driven rows of every registry op are in
test_ops.py, test_forward.py and test_hvp.py."""

import math

import numpy as np
import pytest
import scipy.special as sc
from helpers import central_diff

import fastape as ft
from fastape import registry
from fastape.scipy import special as fsp

X = np.array([0.3, 0.9, 1.7, 2.6])


def test_closed_forms():
    a = 2.7
    g = ft.grad(lambda x: np.sum(sc.gammainc(a, x)))(X)
    np.testing.assert_allclose(g, X ** (a - 1) * np.exp(-X) / math.gamma(a), rtol=1e-14)
    g = ft.grad(lambda x: np.sum(sc.gammaincc(a, x)))(X)
    np.testing.assert_allclose(g, -X ** (a - 1) * np.exp(-X) / math.gamma(a), rtol=1e-14)
    np.testing.assert_allclose(ft.grad(lambda x: np.sum(sc.j0(x)))(X), -sc.j1(X), rtol=1e-15)
    np.testing.assert_allclose(ft.grad(lambda x: np.sum(sc.i0(x)))(X), sc.i1(X), rtol=1e-15)
    np.testing.assert_allclose(ft.grad(lambda x: np.sum(sc.y0(x)))(X), -sc.y1(X), rtol=1e-15)
    np.testing.assert_allclose(ft.grad(lambda x: np.sum(sc.entr(x)))(X), -np.log(X) - 1,
                               rtol=1e-15)
    p = np.array([0.01, 0.3, 0.5, 0.97])
    np.testing.assert_allclose(ft.grad(lambda x: np.sum(sc.ndtri(x)))(p),
                               np.sqrt(2 * np.pi) * np.exp(sc.ndtri(p) ** 2 / 2), rtol=1e-14)
    # Gamma' = Gamma psi; B(a, b) partials; d/dx polygamma(n, x) = polygamma(n + 1, x)
    np.testing.assert_allclose(ft.grad(lambda x: np.sum(sc.gamma(x)))(X),
                               sc.gamma(X) * sc.psi(X), rtol=1e-14)
    ga, gb = ft.grad(lambda a, b: sc.beta(a, b), (0, 1))(1.5, 2.5)
    assert ga == pytest.approx(sc.beta(1.5, 2.5) * (sc.psi(1.5) - sc.psi(4.0)), rel=1e-14)
    assert gb == pytest.approx(sc.beta(1.5, 2.5) * (sc.psi(2.5) - sc.psi(4.0)), rel=1e-14)
    for n in (0, 1, 3):
        assert ft.grad(lambda x, n=n: ft.polygamma(n, x))(1.3) == pytest.approx(
            sc.polygamma(n + 1, 1.3), rel=1e-14)
    # the Bessel second derivative from Bessel's equation x² y'' + x y' + (x² - v²) y = 0
    v, x = 2.5, 1.3
    y, dy = sc.jv(v, x), ft.grad(lambda t: sc.jv(v, t))(x)
    d2 = ft.hessian(lambda t: sc.jv(v, t))(x)
    assert x * x * d2 + x * dy + (x * x - v * v) * y == pytest.approx(0.0, abs=1e-14)
    y, dy = sc.iv(v, x), ft.grad(lambda t: sc.iv(v, t))(x)
    d2 = ft.hessian(lambda t: sc.iv(v, t))(x)
    assert x * x * d2 + x * dy - (x * x + v * v) * y == pytest.approx(0.0, abs=1e-14)


def test_rgamma_at_its_zeros():
    """1/Gamma is entire: at -n its derivative is (-1)^n n!, its second derivative
    -2 (-1)^n n! psi(n + 1) (not the NaN of -psi/Gamma there)."""
    for n in range(4):
        d1 = ft.grad(lambda x: ft.rgamma(x))(float(-n))
        d2 = ft.hessian(lambda x: ft.rgamma(x))(float(-n))
        assert d1 == pytest.approx((-1) ** n * math.factorial(n), rel=1e-14)
        assert d2 == pytest.approx(-2 * (-1) ** n * math.factorial(n) * sc.psi(n + 1.0),
                                   rel=1e-13)
        fd = central_diff(lambda x: sc.rgamma(x), [float(-n)], 0)
        assert d1 == pytest.approx(fd, rel=1e-7)


@pytest.mark.parametrize("fn, arg", [(lambda a: sc.gammainc(a, 1.2), "a"),
                                     (lambda a: sc.gammaincc(a, 1.2), "a"),
                                     (lambda a: ft.gammainc(a, 1.2), "a"),
                                     (lambda v: sc.jv(v, 1.2), "v"),
                                     (lambda v: sc.iv(v, 1.2), "v"),
                                     (lambda v: sc.ive(v, 1.2), "v"),
                                     (lambda n: sc.yn(n, 1.2), "n"),
                                     (lambda a: sc.betainc(a, 2.0, 0.4), "a"),
                                     (lambda b: ft.betainc(2.0, b, 0.4), "b"),
                                     (lambda n: ft.polygamma(n, 1.2), "n"),
                                     (lambda d: ft.multigammaln(3.0, d), "d")])
def test_arguments_not_differentiated_raise(fn, arg):
    with pytest.raises(NotImplementedError, match=f"argument '{arg}'"):
        ft.grad(fn)(2.0)


def test_bad_orders():
    with pytest.raises(ValueError, match="yn: the order n must be an integer"):
        ft.grad(lambda x: sc.yn(1.5, x))(1.0)
    with pytest.raises(ValueError, match="polygamma: the order n"):
        ft.grad(lambda x: ft.polygamma(-1, x))(1.0)
    with pytest.raises(ValueError, match="multigammaln: condition a"):
        ft.grad(lambda a: ft.multigammaln(a, 4))(1.2)


def test_polygamma_every_order_is_exact():
    """polygamma's derivative is the op again: a third derivative is polygamma(n + 3)."""
    f = ft.grad(ft.grad(ft.grad(lambda x: ft.polygamma(1, x))))
    assert f(1.7) == pytest.approx(sc.polygamma(4, 1.7), rel=1e-13)
    # an array of orders
    n = np.array([0, 1, 2, 1])
    g = ft.grad(lambda x: np.sum(ft.polygamma(n, x)))(X)
    np.testing.assert_allclose(g, sc.polygamma(n + 1, X), rtol=1e-14)
    assert ft.polygamma(2, 1.5) == sc.polygamma(2, 1.5)


def test_multigammaln():
    a = np.array([2.3, 4.1])
    v, g = ft.value_and_grad(lambda a: np.sum(ft.multigammaln(a, 3)))(a)
    assert v == pytest.approx(np.sum(sc.multigammaln(a, 3)), rel=1e-14)
    np.testing.assert_allclose(g, sum(sc.psi(a - j / 2) for j in range(3)), rtol=1e-14)
    h = ft.hessian(lambda a: ft.multigammaln(a, 2))(2.3)
    assert h == pytest.approx(sc.polygamma(1, 2.3) + sc.polygamma(1, 1.8), rel=1e-13)
    assert fsp.multigammaln(2.3, 2) == sc.multigammaln(2.3, 2)


def test_betainc():
    a, b = np.array([0.7, 2.0, 3.5]), 1.5
    x = np.array([0.2, 0.5, 0.9])
    v, g = ft.value_and_grad(lambda x: np.sum(sc.betainc(a, b, x)))(x)
    assert v == pytest.approx(np.sum(sc.betainc(a, b, x)), rel=1e-14)
    np.testing.assert_allclose(g, x ** (a - 1) * (1 - x) ** (b - 1) / sc.beta(a, b),
                               rtol=1e-13)
    fd = central_diff(lambda x: np.sum(sc.betainc(a, b, x)), [x], 0)
    np.testing.assert_allclose(g, fd, rtol=1e-7)
    # second order (the tangent rule is written with ops) and forward mode
    h = ft.hessian(lambda t: ft.betainc(2.0, 3.0, t))(0.3)
    assert h == pytest.approx(((0.7 ** 2) - 2 * 0.3 * 0.7) / sc.beta(2.0, 3.0), rel=1e-13)
    _, t = ft.jvp(lambda t: ft.betainc(2.0, 3.0, t), (0.3,), (1.0,))
    assert t == pytest.approx(0.3 * 0.7 ** 2 / sc.beta(2.0, 3.0), rel=1e-13)
    # a compiled function replays it
    F = ft.compile(lambda t: np.sum(sc.betainc(a, b, t)), x)
    np.testing.assert_allclose(F.grad(x * 0.9), ft.grad(
        lambda t: np.sum(sc.betainc(a, b, t)))(x * 0.9), rtol=1e-15)


def test_scipy_special_namespace_and_opcodes():
    for name in ("gamma", "rgamma", "gammasgn", "beta", "betaln", "polygamma", "multigammaln",
                 "gammainc", "gammaincc", "betainc", "i0", "i1", "iv", "ive", "j0", "j1",
                 "jv", "y0", "y1", "yn", "entr", "ndtri"):
        assert callable(getattr(fsp, name)) and callable(getattr(ft, name)), name
    # opcodes are one byte: room is left
    assert len(registry.opcodes()) <= 255
