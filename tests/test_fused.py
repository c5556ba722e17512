"""Fused, cache-blocked sweeps of compiled array tapes (fastape/_fused.pxi, issue 14).

Every function here is compiled twice, with fusion (the default) and without
(``fastape._compiled.FUSION = False`` when the trace is made: the plain node-by-node
sweeps), and the two are compared on every path a compiled function has: value,
value_and_grad, vjp, jvp, hvp, hessian, grad_batch, save/load. Values and sums must be
the unfused ones to the bit (blocks are whole leaves of numpy's pairwise sum);
gradients too, except where a parent is reached through overlapping slices or a
broadcast scalar is read by several fused nodes (contributions added in another
order: rounding, checked to 1e-13 relative). Independent checks: hand-written
gradients and central differences (tests/helpers.py).

Small blocks (``_set_fuse_block(128, 4096)``: 128 elements) make arrays of a few hundred
elements span several blocks, so block boundaries are exercised at sizes the tests can
afford.
"""

import contextlib
import math

import numpy as np
import pytest
from helpers import central_diff

import fastape as ft
from fastape import _compiled
from fastape._bench import rosen_array, rosen_hand, rosen_x0


@contextlib.contextmanager
def fusion(on):
    old = _compiled.FUSION
    _compiled.FUSION = on
    try:
        yield
    finally:
        _compiled.FUSION = old


@pytest.fixture(autouse=True)
def small_blocks():
    old = _compiled._set_fuse_block(128, 4096)     # blocks of 128 elements
    yield
    _compiled._set_fuse_block(*old)


def pair(fun, *args, **kw):
    """(fused, unfused) compiled functions of fun on args."""
    with fusion(True):
        F = ft.compile(fun, *args, **kw)
    with fusion(False):
        G = ft.compile(fun, *args, **kw)
    return F, G


def runs(F):
    return F.traces[-1].fusion.runs


def close(a, b, rtol=1e-13):
    a, b = np.asarray(a, float), np.asarray(b, float)
    scale = max(np.max(np.abs(b), initial=0.0), 1e-300)
    assert np.max(np.abs(a - b), initial=0.0) <= rtol * scale, (a, b)


def same(a, b):
    np.testing.assert_array_equal(np.asarray(a, float), np.asarray(b, float))


# -- functions: (name, f, args maker, exact gradient?) ---------------------------

def chain_k(x):           # broadcasting immediates, unary and binary ops, no slices
    y = 3.0 * x - 1.5
    return np.sum(np.exp(-y * y) / (1.0 + x ** 2) + np.tanh(y) * 0.25)


def chain_scalar(x, s):   # a broadcast scalar node read by two fused nodes
    y = x * s + s
    return np.sum(np.sin(y) * x)


def chain_arrays(x, w):   # two array inputs read at the same element
    return np.sum((x - w) ** 2 * np.sqrt(w) + x * w)


def chain_exported(x):    # a fused node read after its run (a matrix product)
    y = np.tanh(x * 0.5)
    z = y * y + x
    return np.sum(z) + y @ x


def chain_slices(x):      # three overlapping slices of one input
    a = x[2:] - 2.0 * x[1:-1] + x[:-2]
    return np.sum(a ** 2 + 0.1 * x[1:-1] ** 4)


def chain_no_sum(x):      # a run without SUM, its end read by a product
    y = np.exp(-x * x) * 2.0 + x
    return y @ y


CASES = [
    ("rosenbrock", rosen_array, lambda r, n: (rosen_x0(n) + 0.1 * r.standard_normal(n),), False),
    ("chain_k", chain_k, lambda r, n: (r.standard_normal(n),), True),
    ("chain_scalar", chain_scalar, lambda r, n: (r.standard_normal(n), 0.7), False),
    ("chain_arrays", chain_arrays, lambda r, n: (r.standard_normal(n),
                                                 r.uniform(0.5, 2.0, n)), True),
    ("chain_exported", chain_exported, lambda r, n: (r.standard_normal(n),), True),
    ("chain_slices", chain_slices, lambda r, n: (r.standard_normal(n),), False),
    ("chain_no_sum", chain_no_sum, lambda r, n: (r.standard_normal(n),), True),
]
SIZES = [7, 129, 640, 1283]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name,f,make,exact", CASES, ids=[c[0] for c in CASES])
def test_fused_matches_unfused(name, f, make, exact, n, rng):
    args = make(rng, n)
    F, G = pair(f, *args)
    assert runs(F), f"{name}: nothing fused"
    assert not runs(G)
    same(F(*args), G(*args))                # values: bit for bit
    v, g = F.value_and_grad(*args)
    v0, g0 = G.value_and_grad(*args)
    same(v, v0)
    (same if exact else close)(g, g0)
    same(F.vjp(args, 2.0)[1], 2.0 * np.asarray(g))     # a scaled seed: exact
    # new inputs, the arena reused (and the adjoint arena not cleared where unused)
    args2 = make(rng, n)
    for _ in range(2):
        v, g = F.value_and_grad(*args2)
        v0, g0 = G.value_and_grad(*args2)
        same(v, v0)
        (same if exact else close)(g, g0)
    close(g, central_diff(f, args2, 0), 1e-6)


def test_rosenbrock_against_the_hand_gradient():
    for n in (3, 128, 129, 1000, 10_007):
        x = rosen_x0(n)
        F = ft.compile(rosen_array, x)
        assert runs(F) == [(1, 12, 1, True, runs(F)[0][4])]    # one run, one pass
        v, g = F.value_and_grad(x)
        vh, gh = rosen_hand(x)
        assert math.isclose(v, vh, rel_tol=1e-14)
        close(g, gh, 1e-14)


def test_pairwise_sum_is_numpys_to_the_bit(rng):
    # blocks are whole leaves of numpy's pairwise recursion, combined as it does
    for n in (8, 127, 128, 129, 1000, 4097, 100_003):
        x = rng.standard_normal(n) * 10.0 ** rng.uniform(-8, 8, n)
        F = ft.compile(lambda v: np.sum(v * 1.0 + 0.0), x)
        assert runs(F)
        assert F(x) == np.sum(x * 1.0 + 0.0)


def test_zero_multipliers_contribute_nothing_through_nan_and_inf_partials():
    # sqrt'(0) = inf and log'(0) = inf, but their multipliers are 0: gradient 0, not NaN
    def f(x):
        return np.sum(0.0 * np.sqrt(x) + x * 0.0 * np.log(x) + x)
    x = np.zeros(300)
    x[::2] = 1.0
    F, G = pair(f, x)
    assert runs(F)
    v, g = F.value_and_grad(x)
    v0, g0 = G.value_and_grad(x)
    same(g, g0)
    assert np.all(np.isfinite(g[1::2])) == np.all(np.isfinite(g0[1::2]))


def test_nan_and_inf_values_propagate_as_unfused():
    x = np.linspace(-2.0, 2.0, 401)
    F, G = pair(lambda v: np.sum(np.log(v) * v + np.sqrt(v)), x)
    assert runs(F)
    same(F(x), G(x))
    same(F.value_and_grad(x)[1], G.value_and_grad(x)[1])


def test_guards_on_fused_nodes(rng):
    def f(x):
        y = x * x - 1.0
        s = np.sum(y)
        if s > 0:                           # a guard on the run's SUM
            return s * 2.0
        return -s
    x = rng.standard_normal(500) * 2.0
    F, G = pair(f, x)
    assert runs(F)
    for scale in (2.0, 0.1, 3.0):           # both branches: guard failure, re-record
        z = x * scale
        same(F(z), G(z))
        same(F.value_and_grad(z)[1], G.value_and_grad(z)[1])
        close(F.value_and_grad(z)[1], central_diff(f, (z,), 0), 1e-6)


def test_array_output_vjp_and_jvp(rng):
    def f(x):
        return (x[1:] - x[:-1] ** 2) * 3.0 + 1.0
    x = rng.standard_normal(700)
    F, G = pair(f, x)
    assert runs(F)
    same(F(x), G(x))
    ct = rng.standard_normal(699)
    close(F.vjp(x, ct)[1], G.vjp(x, ct)[1])
    t = rng.standard_normal(700)
    same(F.jvp(x, t)[1], G.jvp(x, t)[1])
    same(F.jvp(x, t)[0], G(x))
    xs = x[:60].copy()
    Fs, Gs = pair(f, xs)
    same(Fs.jacobian(xs), Gs.jacobian(xs))


def test_second_order_and_batch_paths(rng):
    def f(x):
        return np.sum(np.exp(0.1 * x) * x ** 2 - x[1:] @ x[:-1] * 0.0 + x)
    x = rng.standard_normal(300)
    F, G = pair(f, x)
    assert runs(F)
    v = rng.standard_normal(300)
    close(F.hvp(x, v), G.hvp(x, v))
    xs = rng.standard_normal(40)
    Fs, Gs = pair(f, xs)
    close(Fs.hessian(xs), Gs.hessian(xs))
    X = rng.standard_normal((9, 300))
    vals, grads = F.value_and_grad_batch(X, threads=2)
    for r in range(9):
        v0, g0 = G.value_and_grad(X[r])
        same(vals[r], v0)
        same(grads[r], g0)


def test_save_and_load_derive_the_runs(tmp_path, rng):
    x = rosen_x0(500)
    F = ft.compile(rosen_array, x)
    path = tmp_path / "rosen.fastape"
    F.save(path)
    H = ft.load(path)
    assert runs(H) == runs(F)
    same(H.value_and_grad(x)[1], F.value_and_grad(x)[1])
    import pickle
    P = pickle.loads(pickle.dumps(F))
    same(P.value_and_grad(x)[1], F.value_and_grad(x)[1])


def test_parameter_layouts_that_the_runs_read():
    # _fused.pxi reads STRIDED's (size, start, step) and SUM's (size, outer, n, inner)
    tape = ft.Tape()
    with tape:
        x = tape.var(np.ones(10))
        v = x[3:8]
        s = np.sum(v * 2.0)
    e = tape.export()
    P, poff = e["P"], e["poff"]
    from fastape._ops import Op
    view = int(np.flatnonzero(e["op"] == int(Op.STRIDED))[0])
    red = int(np.flatnonzero(e["op"] == int(Op.SUM))[0])
    assert list(P[poff[view]:poff[view] + 3]) == [5, 3, 1]
    assert list(P[poff[red]:poff[red] + 4]) == [1, 1, 5, 1]
    assert s.node == red


def test_two_layer_network_against_hand_backprop(rng):
    X = rng.standard_normal((200, 8))
    y = rng.standard_normal(200)
    W1 = rng.standard_normal((8, 6))
    W2 = rng.standard_normal(6)

    def f(W1, W2):
        return np.sum((np.tanh(X @ W1) @ W2 - y) ** 2)
    F, G = pair(f, W1, W2, argnums=(0, 1))
    assert runs(F)
    H = np.tanh(X @ W1)
    r = H @ W2 - y
    g = 2.0 * r
    gW1 = X.T @ (np.outer(g, W2) * (1.0 - H * H))
    gW2 = H.T @ g
    v, (a, b) = F.value_and_grad(W1, W2)
    v0, (a0, b0) = G.value_and_grad(W1, W2)
    same(v, v0)
    same(a, a0)
    same(b, b0)
    close(a, gW1, 1e-12)
    close(b, gW2, 1e-12)


@pytest.mark.parametrize("name,f,make,exact", CASES, ids=[c[0] for c in CASES])
def test_lent_inputs_and_gradients(name, f, make, exact, rng):
    # arrays of at least LEND_MIN elements are read in place and their gradient
    # accumulated in the returned array; read-only and strided arguments are copied
    n = 6000
    args = make(rng, n)
    F, G = pair(f, *args)
    v, g = F.value_and_grad(*args)
    v0, g0 = G.value_and_grad(*args)
    same(v, v0)
    (same if exact else close)(g, g0)
    g_again = F.value_and_grad(*args)[1]
    assert g_again is not g
    same(g_again, g)
    ro = tuple(np.array(a) for a in args)
    for a in ro:
        if isinstance(a, np.ndarray):
            a.flags.writeable = False
    same(F.value_and_grad(*ro)[1], g)
    wide = tuple(np.repeat(a, 2)[::2] if isinstance(a, np.ndarray) else a for a in args)
    same(F.value_and_grad(*wide)[1], g)
    same(F(*args), G(*args))
    close(F.vjp(args, 0.5)[1], G.vjp(args, 0.5)[1])


def test_a_failing_guard_leaves_no_trace_in_a_lent_gradient(rng):
    def f(x):
        y = x * x - 1.0
        s = np.sum(y)
        return s * 2.0 if s > 0 else -3.0 * s
    x = rng.standard_normal(6000) * 2.0
    F, G = pair(f, x)
    for scale in (2.0, 0.1, 2.0, 0.1):
        z = x * scale
        same(F.value_and_grad(z)[1], G.value_and_grad(z)[1])
