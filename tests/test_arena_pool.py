"""The arena pool: released tapes' value/multiplier arenas reused by the next tape."""

import numpy as np
import pytest
from helpers import rosenbrock_grad

import fastape as ft
from fastape import TapeError


@pytest.fixture
def pool():
    limit = ft.arena_pool()["limit"]
    ft.arena_pool(limit=0)
    ft.arena_pool(limit=limit)
    yield limit
    ft.arena_pool(limit=limit)


def rosen(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def test_repeated_eager_calls_reuse_arenas_and_agree(pool):
    x = np.linspace(-1.5, 1.5, 20_000)
    vg = ft.value_and_grad(rosen)
    v0, g0 = vg(x)
    held = ft.arena_pool()
    assert held["arenas"] >= 2 and 0 < held["bytes"] <= pool    # values and multipliers
    for _ in range(3):
        v, g = vg(x)
        assert v == v0 and np.array_equal(g, g0)
    np.testing.assert_allclose(g0, rosenbrock_grad(x), rtol=1e-12, atol=1e-9)
    assert ft.arena_pool()["bytes"] == held["bytes"]        # the same arenas, back again


def test_garbage_in_a_pooled_arena_never_reaches_a_result(pool):
    # a released tape leaves NaN values and huge multipliers in the pooled arenas
    with ft.Tape() as t:
        u = t.var(np.full(30_000, np.nan))
        w = ft.sum(u * 1e300)
    t.gradient(w, u)
    t.release()
    assert ft.arena_pool()["arenas"] >= 2

    def f(x, c):
        dead = ft.exp(x) * 3.0              # recorded, never reaches the output
        return ft.sum(ft.sin(x) * c) + 0.0 * ft.sum(dead[:0])

    x = np.linspace(0.0, 2.0, 25_000)
    c = np.cos(x)
    g = ft.grad(f)(x, c)
    np.testing.assert_allclose(g, np.cos(x) * c, rtol=1e-13)
    # and a tape read after its sweep: every adjoint is defined
    with ft.Tape() as t:
        xv = t.var(x)
        cv = t.constant(c)
        y = ft.sum(ft.sin(xv) * cv)
    t.gradient(y, xv)
    assert np.all(np.isfinite(t.adjoint(cv)))
    np.testing.assert_allclose(t.adjoint(cv), np.sin(x), rtol=1e-13)


def test_limit_zero_empties_and_disables(pool):
    ft.value_and_grad(rosen)(np.ones(20_000))
    assert ft.arena_pool()["bytes"] > 0
    assert ft.arena_pool(limit=0) == {"bytes": 0, "arenas": 0, "limit": 0}
    ft.value_and_grad(rosen)(np.ones(20_000))
    assert ft.arena_pool()["bytes"] == 0


def test_limit_bounds_the_pool(pool):
    ft.arena_pool(limit=1 << 20)                # 1 MiB: 131,072 doubles
    ft.value_and_grad(rosen)(np.ones(20_000))   # arenas of about 13 x 20,000 doubles
    info = ft.arena_pool()
    assert info["bytes"] <= 1 << 20 and info["limit"] == 1 << 20


def test_a_small_tape_does_not_keep_a_large_pooled_arena(pool):
    ft.value_and_grad(rosen)(np.ones(200_000))
    big = ft.arena_pool()["bytes"]
    with ft.Tape() as t:
        x = t.var(np.ones(5000))
        y = ft.sum(x * x)
    t.gradient(y, x)
    assert t.nbytes < 8 * 4 * 5000 + 4096            # values and multipliers of its size
    t.release()
    assert ft.arena_pool()["bytes"] >= big            # the large arenas stayed pooled


@pytest.mark.parametrize("bad", [-1, 1.5, "1", True])
def test_bad_limit(bad, pool):
    with pytest.raises(TypeError, match="arena_pool: limit"):
        ft.arena_pool(limit=bad)


def test_lean_constants_skip_large_constants_and_refuse_their_adjoints(pool):
    """A tape whose owner reads no constant's multipliers (compiled traces, the eager
    transforms, the implicit solvers) leaves large constants' slots out of a clear:
    the gradients stay exact although those slots hold garbage, and Tape.adjoint of
    such a constant raises instead of returning it. A plain Tape clears everything."""
    rng = np.random.default_rng(3)
    W = rng.standard_normal((80, 80))          # 6,400 values: a large constant
    z0 = rng.standard_normal(80)
    for _ in range(2):                         # the second sweep reuses a dirty arena
        with ft.Tape() as t:
            t.lean_constants = True
            z = t.var(z0)
            y = ft.sum(ft.tanh(W @ z) * ft.tanh(W @ z)) + ft.sum(z * W[0])
            c = t.constant(W)
        g = t.gradient(y, z)
        s = np.tanh(W @ z0)
        np.testing.assert_allclose(g, W.T @ (2 * s * (1 - s * s)) + W[0], rtol=1e-12)
        with pytest.raises(TapeError, match="constant of a lean_constants tape"):
            t.adjoint(c)
        t.release()
    x = np.linspace(0.0, 2.0, 6400)
    with ft.Tape() as t:                       # the default: every adjoint defined
        xv = t.var(x)
        c = t.constant(np.cos(x))
        y = ft.sum(ft.sin(xv) * c)
    t.gradient(y, xv)
    np.testing.assert_allclose(t.adjoint(c), np.sin(x), rtol=1e-13)
    # compiled and eager, both lean, against the closed form
    f = lambda z: ft.sum(ft.tanh(W @ z) ** 2)                              # noqa: E731
    s = np.tanh(W @ z0)
    want = W.T @ (2 * s * (1 - s * s))
    np.testing.assert_allclose(ft.grad(f)(z0), want, rtol=1e-12)
    F = ft.compile(f, z0)
    for _ in range(2):
        np.testing.assert_allclose(F.grad(z0), want, rtol=1e-12)


def test_a_plain_tape_gives_constants_their_multipliers_through_linear_algebra(rng):
    """On a plain Tape every recorded value has its multiplier, constants used in a
    matrix product, a solve or a determinant included (they used to get 0 there)."""
    A0 = rng.standard_normal((4, 4)) + 4 * np.eye(4)
    z0 = rng.standard_normal(4)
    with ft.Tape() as t:
        z = t.var(z0)
        A = t.constant(A0)
        y = ft.sum(A @ z) + ft.sum(ft.linalg.solve(A, z)) + ft.linalg.det(A)
    t.gradient(y, z)
    Ainv = np.linalg.inv(A0)
    x = Ainv @ z0
    want = (np.outer(np.ones(4), z0) - np.outer(Ainv.T @ np.ones(4), x)
            + np.linalg.det(A0) * Ainv.T)
    np.testing.assert_allclose(t.adjoint(A), want, rtol=1e-11)
    t.release()
