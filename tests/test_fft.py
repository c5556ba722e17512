"""The FFT family on the tape (issue 18, fastape._fft): numpy's values, gradients against
central differences in the real and imaginary directions, Parseval's identity, second
order, compiled replay, JAX where installed, and clear errors."""

import numpy as np
import pytest

import fastape as ft
from fastape import _fft

RNG = np.random.default_rng(2026)
X1 = RNG.normal(size=12)
Z1 = RNG.normal(size=12) + 1j * RNG.normal(size=12)
X2 = RNG.normal(size=(5, 6))
Z2 = RNG.normal(size=(5, 6)) + 1j * RNG.normal(size=(5, 6))
H1 = Z1[:7]                                            # a half spectrum (irfft input)
H2 = np.fft.rfft2(X2)


def fd_grad(f, z, h=1e-6):
    """∂f/∂x (− i ∂f/∂y for a complex z) by central differences."""
    z = np.asarray(z)
    cplx = np.iscomplexobj(z)
    g = np.zeros(z.shape, dtype=complex if cplx else float)
    for i in np.ndindex(z.shape):
        e = np.zeros(z.shape)
        e[i] = h
        g[i] = (f(z + e) - f(z - e)) / (2 * h)
        if cplx:
            g[i] -= 1j * (f(z + 1j * e) - f(z - 1j * e)) / (2 * h)
    return g


# (name, input, keyword arguments): every transform with n/s, axes and norm variants
CASES = []
for norm in (None, "ortho", "forward", "backward"):
    for n in (None, 8, 17):
        CASES += [("fft", X1, {"n": n, "norm": norm}), ("fft", Z1, {"n": n, "norm": norm}),
                  ("ifft", Z1, {"n": n, "norm": norm}), ("rfft", X1, {"n": n, "norm": norm}),
                  ("irfft", H1, {"n": n, "norm": norm}), ("hfft", H1, {"n": n, "norm": norm}),
                  ("ihfft", X1, {"n": n, "norm": norm})]
    for s in (None, (4, 8), (6, 5)):
        # numpy 2 deprecates s without axes in the n-dimensional transforms
        nd = {"s": s, "norm": norm, "axes": None if s is None else (0, 1)}
        CASES += [("fft2", Z2, {"s": s, "norm": norm}), ("ifft2", Z2, {"s": s, "norm": norm}),
                  ("fftn", Z2, nd), ("ifftn", X2, nd), ("rfft2", X2, {"s": s, "norm": norm}),
                  ("rfftn", X2, nd), ("irfft2", H2, {"s": s, "norm": norm}),
                  ("irfftn", H2, nd)]
CASES += [("fft", Z2, {"axis": 0}), ("rfft", X2, {"axis": 0, "n": 7}),
          ("irfft", H2, {"axis": 0}), ("fftn", Z2, {"axes": (1,)}),
          ("rfftn", X2, {"axes": (0,)}), ("irfftn", H2, {"axes": (-1,), "s": (9,)}),
          ("fftn", Z2[None], {"axes": (0, 2)}), ("fftshift", Z2, {}),
          ("ifftshift", X2, {"axes": 0}), ("fftshift", X1, {})]


def _ids(case):
    name, x, kw = case
    return f"{name}-{'c' if np.iscomplexobj(x) else 'r'}{x.ndim}-" + \
        ",".join(f"{k}={v}" for k, v in kw.items() if v is not None)


def _loss(name, kw, shape_out):
    w_re = np.cos(np.arange(np.prod(shape_out))).reshape(shape_out)
    w_im = np.sin(np.arange(np.prod(shape_out)) * 0.7).reshape(shape_out)
    fn = getattr(np.fft, name)

    def f(x):
        y = fn(x, **kw)
        return np.sum(np.real(y) * w_re + np.imag(y) * w_im + np.abs(y) ** 2 * 0.1)
    return f


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_values_and_gradients(case):
    name, x, kw = case
    fn = getattr(np.fft, name)
    expected = fn(x, **kw)
    got = ft.jvp(lambda v: fn(v, **kw), (x,), (np.zeros_like(x),))[0]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    f = _loss(name, kw, expected.shape)
    g = ft.grad(f)(x)
    assert g.dtype == x.dtype and g.shape == x.shape
    np.testing.assert_allclose(g, fd_grad(f, x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", CASES[::7], ids=_ids)
def test_tangents_match_gradients(case):
    """jvp (the transform of the tangent) against vjp (its transpose): one pairing."""
    name, x, kw = case
    fn = getattr(np.fft, name)
    t = RNG.normal(size=x.shape) + (1j * RNG.normal(size=x.shape) if np.iscomplexobj(x) else 0)
    out, tan = ft.jvp(lambda v: fn(v, **kw), (x,), (t,))
    c = RNG.normal(size=out.shape) + (1j * RNG.normal(size=out.shape)
                                      if np.iscomplexobj(out) else 0)
    (bar,) = ft.vjp(lambda v: fn(v, **kw), x)[1](c)
    assert np.real(np.sum(bar * t)) == pytest.approx(np.real(np.sum(c * tan)), rel=1e-10)


def test_parseval():
    """Σ|fft(x)|² = n Σ|x|²: the value and its gradient 2n·x (2n·conj(z) in JAX's form)."""
    n = X1.size
    f = lambda x: np.sum(np.abs(np.fft.fft(x)) ** 2)         # noqa: E731
    v, g = ft.value_and_grad(f)(X1)
    assert v == pytest.approx(n * np.sum(X1 ** 2))
    np.testing.assert_allclose(g, 2 * n * X1, rtol=1e-12)
    np.testing.assert_allclose(ft.grad(f)(Z1), 2 * n * np.conj(Z1), rtol=1e-12)
    # the real transform: Σ|x|² = (|X₀|² + 2 Σ_interior |X_k|² + |X_{n/2}|²)/n, n even
    def r(x):
        y = np.abs(np.fft.rfft(x)) ** 2
        return (y[0] + 2 * np.sum(y[1:-1]) + y[-1]) / n
    np.testing.assert_allclose(ft.grad(r)(X1), 2 * X1, rtol=1e-12)
    np.testing.assert_allclose(ft.grad(lambda x: np.sum(np.abs(np.fft.fft(x, norm="ortho")) ** 2))
                               (Z2), 2 * np.conj(Z2), rtol=1e-12)


def test_second_order_and_compiled_replay():
    h = RNG.normal(size=12) + 1j * RNG.normal(size=12)

    def f(x):
        y = np.fft.fft(x) * h
        return np.sum(np.abs(y) ** 2) + np.sum(np.fft.irfft(np.fft.rfft(x) ** 2) ** 3)
    H = ft.hessian(f)(X1)
    eps = 1e-5
    Hfd = np.array([(ft.grad(f)(X1 + eps * e) - ft.grad(f)(X1 - eps * e)) / (2 * eps)
                    for e in np.eye(12)])
    np.testing.assert_allclose(H, Hfd, rtol=1e-6, atol=1e-6 * np.max(np.abs(H)))
    F = ft.compile(f, X1)
    x2 = RNG.normal(size=12)
    assert F(x2) == pytest.approx(f(x2), rel=1e-13)
    np.testing.assert_allclose(F.grad(x2), fd_grad(f, x2), rtol=1e-6)
    v = RNG.normal(size=12)
    assert F.jvp(x2, v)[1] == pytest.approx(F.grad(x2) @ v, rel=1e-12)
    np.testing.assert_allclose(F.hvp(x2, v), ft.hessian(f)(x2) @ v, rtol=1e-9)
    np.testing.assert_allclose(F.hessian(x2), ft.hessian(f)(x2), rtol=1e-9)


def test_spectral_convolution_against_scipy():
    import scipy.signal
    a, b = RNG.normal(size=11), RNG.normal(size=4)
    for mode in ("full", "same", "valid"):
        w = np.cos(np.arange(scipy.signal.fftconvolve(a, b, mode).size))
        def f(a, b, mode=mode, w=w):
            return np.sum(ft.scipy.signal.fftconvolve(a, b, mode) ** 2 * w)
        ga, gb = ft.grad(f, argnums=(0, 1))(a, b)
        np.testing.assert_allclose(ga, fd_grad(lambda v: f(v, b), a), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(gb, fd_grad(lambda v: f(a, v), b), rtol=1e-6, atol=1e-8)
        got = ft.jvp(lambda a, m=mode: ft.scipy.signal.convolve(a, b, m), (a,), (0 * a,))[0]
        np.testing.assert_allclose(got, scipy.signal.convolve(a, b, mode), atol=1e-12)
    z = RNG.normal(size=(4, 5)) + 1j * RNG.normal(size=(4, 5))
    k = RNG.normal(size=(2, 3))
    got = ft.jvp(lambda z: ft.scipy.signal.fftconvolve(z, k, "same"), (z,), (0 * z,))[0]
    np.testing.assert_allclose(got, scipy.signal.fftconvolve(z, k, "same"), atol=1e-12)
    # plain arrays: scipy's own function
    np.testing.assert_array_equal(ft.scipy.signal.fftconvolve(a, b),
                                  scipy.signal.fftconvolve(a, b))


def test_jax_agrees():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    h = RNG.normal(size=7) + 1j * RNG.normal(size=7)
    for name, x in (("rfft", X1), ("ihfft", X1)):
        fn, jfn = getattr(np.fft, name), getattr(jnp.fft, name)
        ours = ft.grad(lambda v, f=fn: np.sum(np.abs(f(v) * h) ** 2))(x)
        theirs = jax.grad(lambda v, f=jfn: jnp.sum(jnp.abs(f(v) * h) ** 2))(x)
        np.testing.assert_allclose(ours, np.asarray(theirs), rtol=1e-12)
    for norm in (None, "ortho", "forward"):
        ours = ft.grad(lambda v, m=norm: np.sum(np.fft.irfft(v, 13, norm=m) ** 3))(H1)
        theirs = jax.grad(lambda v, m=norm: jnp.sum(jnp.fft.irfft(v, 13, norm=m) ** 3))(H1)
        np.testing.assert_allclose(ours, np.asarray(theirs), rtol=1e-12)


def test_bad_input_is_refused_clearly():
    with pytest.raises(ValueError, match="numpy.fft.fft: invalid norm value 'sideways'"):
        ft.grad(lambda x: np.sum(np.abs(np.fft.fft(x, norm="sideways"))))(X1)
    with pytest.raises(TypeError, match="rfft: the input is complex"):
        ft.grad(lambda z: np.sum(np.fft.rfft(z).real))(Z1)
    with pytest.raises(TypeError, match="out="):
        ft.grad(lambda x: np.sum(np.fft.fft(x, out=np.empty(12, complex)).real))(X1)
    with pytest.raises(ValueError, match="invalid number of data points \\(0\\)"):
        ft.grad(lambda x: np.sum(np.fft.fft(x, n=0).real))(X1)
    with pytest.raises(np.exceptions.AxisError, match="axis 3 is out of bounds"):
        ft.grad(lambda x: np.sum(np.fft.fft(x, axis=3).real))(X1)
    with pytest.raises(ValueError, match="repeated axes"):
        ft.grad(lambda x: np.sum(np.fft.fftn(x, axes=(0, 0)).real))(X2)
    with pytest.raises(ft.ShapeError, match="0-d"):
        ft.grad(lambda x: np.sum(np.fft.fft(x).real))(1.0)
    with pytest.raises(ValueError, match="'valid' mode"):
        ft.grad(lambda a: np.sum(ft.scipy.signal.fftconvolve(
            a, np.ones((2, 9)), "valid")))(np.ones((3, 3)))


def test_every_numpy_fft_function_is_covered():
    """The table of fastape._fft names every transform numpy.fft has (the helpers aside)."""
    helpers = {"fftfreq", "rfftfreq", "helper", "test"}
    numpy_names = {n for n in dir(np.fft) if not n.startswith("_") and n not in helpers
                   and callable(getattr(np.fft, n))}
    assert numpy_names == set(_fft.__all__)
    tested = {name for name, _, _ in CASES}
    assert tested == set(_fft.__all__)
