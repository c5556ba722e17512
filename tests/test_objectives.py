"""The three objectives of benchmarks/objectives.py (ADBench GMM, diagonal LSTM,
multivariate normal with a Cholesky factor), written in plain numpy, differentiate
with fastape unchanged (issue 13): gradients against central differences at small
sizes, and against autograd and JAX where installed."""

import os
import sys

import numpy as np
import pytest
from helpers import central_diff

import fastape as ft

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
import objectives as obj  # noqa: E402

SMALL = {"gmm": dict(d=3, k=2, n=6), "lstm": dict(layers=2, chars=4, seq=4),
         "mvn": dict(d=4, n=5)}


def _setup(key):
    params, data = getattr(obj, f"{key}_problem")(**SMALL[key])
    f = getattr(obj, f"{key}_objective")
    return params, data, f


@pytest.mark.parametrize("key", sorted(SMALL))
def test_gradient_against_central_differences(key):
    params, data, f = _setup(key)
    nums = tuple(range(len(params)))
    v, g = ft.value_and_grad(lambda *p: f(*p, *data), argnums=nums)(*params)
    assert np.isclose(v, f(*params, *data), rtol=1e-13)
    for i in nums:
        want = central_diff(lambda *p: f(*p, *data), list(params), i)
        np.testing.assert_allclose(g[i], want, rtol=1e-6, atol=1e-7)
    F = ft.compile(lambda *p: f(*p, *data), *params, argnums=nums)
    for a, b in zip(F.value_and_grad(*params)[1], g):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    ft.check_grads(lambda *p: f(*p, *data), params, order=2, modes=("rev",))


@pytest.mark.parametrize("peer", ["autograd", "jax"])
@pytest.mark.parametrize("key", sorted(SMALL))
def test_gradient_against_peers(key, peer):
    params, data, f = _setup(key)
    nums = tuple(range(len(params)))
    g = ft.grad(lambda *p: f(*p, *data), argnums=nums)(*params)
    if peer == "autograd":
        autograd = pytest.importorskip("autograd")
        import autograd.numpy as anp
        want = autograd.grad(lambda p: f(*p, *data, xp=anp))(params)
    else:
        jax = pytest.importorskip("jax")
        import jax.numpy as jnp
        jax.config.update("jax_enable_x64", True)
        want = jax.grad(lambda *p: f(*p, *data, xp=jnp), argnums=nums)(*params)
    for a, b in zip(g, want):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("size", ["small", "benchmark"])
@pytest.mark.parametrize("key", sorted(SMALL))
def test_hand_written_numpy_gradients(key, size):
    """objectives.<key>_value_and_grad, the gradients derived by hand in plain numpy
    (the benchmark's baseline), agree with fastape's gradient of the unchanged numpy
    objective, at the small sizes and at the benchmark's, and with central differences
    at the small ones; the LSTM's at several layers and steps (its reverse loop carries
    every layer's state multipliers back through time)."""
    kws = [SMALL[key]] if size == "small" else [{}]
    if key == "lstm" and size == "small":
        kws += [dict(layers=1, chars=3, seq=2), dict(layers=3, chars=5, seq=6, seed=4)]
    for kw in kws:
        params, data = getattr(obj, f"{key}_problem")(**kw)
        f = getattr(obj, f"{key}_objective")
        nums = tuple(range(len(params)))
        fixed = lambda *p, f=f, data=data: f(*p, *data)      # noqa: E731
        v, g = ft.value_and_grad(fixed, argnums=nums)(*params)
        hv, hg = getattr(obj, f"{key}_value_and_grad")(*params, *data)
        assert hv == pytest.approx(v, rel=1e-12)
        assert len(hg) == len(params)
        for i in nums:
            assert hg[i].shape == params[i].shape
            np.testing.assert_allclose(hg[i], g[i], rtol=1e-10,
                                       atol=1e-12 * max(1.0, np.max(np.abs(g[i]))))
            if size == "small":
                want = central_diff(fixed, list(params), i)
                np.testing.assert_allclose(hg[i], want, rtol=1e-6, atol=1e-7)
