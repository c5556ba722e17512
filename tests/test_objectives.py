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
