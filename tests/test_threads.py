"""Threads for large arrays (issue 14, item 3; fastape/_threads.pxi, _fused.pxi).

Every result with 2 threads must equal the one with 1 thread bit for bit: values,
gradients, vjp, jvp, hvp, eager and compiled, fused and unfused, grad_batch. Lowered
thresholds (blocks of 128 elements, fused runs chunked from 2,048 elements in chunks
of at least 256; unfused kernels threaded from 2 x 1,024 elements) make every case
here threaded at sizes the tests can afford, and each test checks that it was (the
chunk table of the run), so a test cannot pass by running serially. Independent
checks: the unfused sweeps (to rounding), the hand-written Rosenbrock gradient,
central differences.

The thread count follows OpenMP's convention: OMP_NUM_THREADS (a subprocess) and
threadpoolctl's user_api="openmp" when it is installed.
"""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import central_diff

import fastape as ft
from fastape import _compiled, _tape
from fastape._bench import rosen_array, rosen_hand, rosen_x0

pytestmark = pytest.mark.skipif(not _compiled._openmp(), reason="built without OpenMP")

N = 6007          # odd: a short last block and chunk


@contextlib.contextmanager
def threads(n):
    old = _compiled._threads()
    _compiled._threads(n)
    try:
        yield
    finally:
        _compiled._threads(old)


@pytest.fixture(autouse=True)
def low_thresholds():
    old_block = _compiled._set_fuse_block(128, 4096)     # blocks of 128 elements
    old_chunks = _compiled._set_fuse_chunks(2048, 256)
    old_min = _tape._set_par_min(1024)
    yield
    _compiled._set_fuse_block(*old_block)
    _compiled._set_fuse_chunks(*old_chunks)
    _tape._set_par_min(old_min)


def same(a, b):
    np.testing.assert_array_equal(np.asarray(a, float), np.asarray(b, float))


def close(a, b, rtol=1e-13):
    a, b = np.asarray(a, float), np.asarray(b, float)
    same(np.isnan(a), np.isnan(b))
    a, b = a[~np.isnan(b)], b[~np.isnan(b)]
    assert np.max(np.abs(a - b), initial=0.0) <= rtol * max(np.max(np.abs(b), initial=0), 1e-300)


def chain_k(x):               # broadcasting immediates, no slices: chunks in any order
    y = 3.0 * x - 1.5
    return np.sum(np.exp(-y * y) / (1.0 + x ** 2) + np.tanh(y) * 0.25)


def chain_slices(x):          # slices two apart: even chunks, then odd
    a = x[2:] - 2.0 * x[1:-1] + x[:-2]
    return np.sum(a ** 2 + 0.1 * x[1:-1] ** 4)


def chain_const(x):           # a broadcast constant (its multipliers: the sink)
    return np.sum(np.sin(x * np.array([1.5])) + np.array([0.5]) * x ** 2)


def chain_scalar(x, s):       # a broadcast scalar input: its reverse step stays serial
    y = x * s + s
    return np.sum(np.sin(y) * x)


def chain_zero_partials(x):   # inf partials (sqrt', log' at 0) times zero multipliers
    return np.sum(0.0 * np.sqrt(x) + x * 0.0 * np.log(x) + x * x)


def chain_exported(x):        # a fused node read after its run (exported)
    y = np.tanh(x * 0.5)
    return np.sum(y * y + x) + y @ x


def zeros_and_ones(r, n):
    x = np.abs(r.standard_normal(n))
    x[::3] = 0.0
    return (x,)


CASES = [
    ("rosenbrock", rosen_array, lambda r, n: (rosen_x0(n) + 0.1 * r.standard_normal(n),), 2),
    ("chain_k", chain_k, lambda r, n: (r.standard_normal(n),), 1),
    ("chain_slices", chain_slices, lambda r, n: (r.standard_normal(n),), 2),
    ("chain_const", chain_const, lambda r, n: (r.standard_normal(n),), 1),
    ("chain_scalar", chain_scalar, lambda r, n: (r.standard_normal(n), 0.7), 0),
    ("chain_zero_partials", chain_zero_partials, zeros_and_ones, 1),
    ("chain_exported", chain_exported, lambda r, n: (r.standard_normal(n),), 1),
]


def compiled_results(f, args):
    F = ft.compile(f, *args)
    x = args[0]
    t = np.cos(np.arange(x.size, dtype=float))
    out = [F(*args), *F.value_and_grad(*args), F.vjp(args, 2.0)[1],
           F.jvp(args, t)[1]]
    if len(args) == 1:
        out.append(F.hvp(x, t))
    return F, out


@pytest.mark.parametrize("name,f,make,phases", CASES, ids=[c[0] for c in CASES])
def test_compiled_two_threads_equal_one(name, f, make, phases, rng):
    args = make(rng, N)
    with threads(1):
        F1, one = compiled_results(f, args)
    with threads(2):
        F2, two = compiled_results(f, args)
        again = compiled_results(f, args)[1]          # arenas reused: the same again
    chunks = F2.traces[-1].fusion.chunks
    assert chunks and chunks[0][0] >= 4, f"{name}: not chunked ({chunks})"
    assert chunks[0][1] == phases
    for a, b, c in zip(one, two, again):
        same(a, b)
        same(a, c)
    # independently: the unfused sweeps (rounding: chunk boundaries add in another order)
    old = _compiled.FUSION
    _compiled.FUSION = False
    try:
        G = ft.compile(f, *args)
    finally:
        _compiled.FUSION = old
    assert not G.traces[-1].fusion.runs
    v0, g0 = G.value_and_grad(*args)
    same(one[0], v0)
    close(one[2], g0)


@pytest.mark.parametrize("name,f,make,phases", CASES, ids=[c[0] for c in CASES])
def test_eager_two_threads_equal_one(name, f, make, phases, rng):
    args = make(rng, N)
    vg = ft.value_and_grad(f)
    t = np.sin(np.arange(N, dtype=float))
    with threads(1):
        v1, g1 = vg(*args)
        j1 = ft.jvp(lambda x: f(x, *args[1:]), (args[0],), (t,))
    with threads(2):
        v2, g2 = vg(*args)
        j2 = ft.jvp(lambda x: f(x, *args[1:]), (args[0],), (t,))
    same(v1, v2)
    same(g1, g2)
    same(j1[0], j2[0])
    same(j1[1], j2[1])


def test_unfused_kernels_two_threads_equal_one(rng):
    # every elementwise kernel threaded (forward, reverse, tangent), fusion off
    x = rng.standard_normal(3 * 4096 + 5)
    old = _compiled.FUSION
    _compiled.FUSION = False
    try:
        F = ft.compile(chain_k, x)
    finally:
        _compiled.FUSION = old
    assert not F.traces[-1].fusion.runs
    t = np.cos(np.arange(x.size, dtype=float))
    res = {}
    for n in (1, 2):
        with threads(n):
            res[n] = [F(x), *F.value_and_grad(x), F.jvp((x,), t)[1], F.hvp(x, t)]
    for a, b in zip(res[1], res[2]):
        same(a, b)
    close(res[2][2], central_diff(chain_k, (x,), 0), 1e-6)


def test_rosenbrock_against_the_hand_gradient():
    for n in (10_000, 100_003):
        x = rosen_x0(n)
        vh, gh = rosen_hand(x)
        F = ft.compile(rosen_array, x)
        with threads(2):
            v, g = F.value_and_grad(x)
            ve, ge = ft.value_and_grad(rosen_array)(x)
        assert F.traces[-1].fusion.chunks[0][0] >= 4
        close(v, vh, 1e-14)
        close(g, gh, 1e-14)
        close(ve, vh, 1e-14)
        close(ge, gh, 1e-14)


def test_grad_batch_with_threads(rng):
    x = rng.standard_normal(N)
    F = ft.compile(chain_slices, x)
    X = rng.standard_normal((5, N))
    with threads(2):
        vals, grads = F.value_and_grad_batch(X, threads=2)
        assert _compiled._threads() == 2        # the caller's count put back
        rows = [F.value_and_grad(X[r]) for r in range(5)]
    with threads(1):
        vals1, grads1 = F.value_and_grad_batch(X, threads=1)
    for r in range(5):
        same(vals[r], rows[r][0])
        same(grads[r], rows[r][1])
    same(vals, vals1)
    same(grads, grads1)


def _child_threads(env_extra, code="print(_compiled._threads())", stderr=False):
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_extra)
    src = str(Path(_compiled.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", "from fastape import _compiled\n" + code],
                         env=env, capture_output=True, text=True, timeout=120, check=True)
    return out.stderr if stderr else out.stdout.split()


def test_libgomp_waits_passively_unless_told_otherwise():
    # fastape._openmp loads libgomp with OMP_WAIT_POLICY=PASSIVE (spinning threads take
    # the core a late thread needs on a loaded machine), then leaves the environment as
    # it was; the user's own setting wins. OMP_DISPLAY_ENV: libgomp prints what it read.
    shown = _child_threads({"OMP_DISPLAY_ENV": "TRUE"}, "", stderr=True)
    if "OMP_WAIT_POLICY" not in shown:
        pytest.skip("the OpenMP runtime does not display its settings (not libgomp)")
    assert "OMP_WAIT_POLICY = 'PASSIVE'" in shown
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in _child_threads(
        {"OMP_DISPLAY_ENV": "TRUE", "OMP_WAIT_POLICY": "active"}, "", stderr=True)
    code = "import os\nprint(os.environ.get('OMP_WAIT_POLICY'))"
    assert _child_threads({}, code) == ["None"]
    assert _child_threads({"OMP_WAIT_POLICY": "active"}, code) == ["active"]


def test_thread_count_follows_omp_num_threads():
    assert _child_threads({"OMP_NUM_THREADS": "1"}) == ["1"]
    assert _child_threads({"OMP_NUM_THREADS": "3"}) == ["3"]


def test_thread_count_follows_threadpoolctl():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = _compiled._threads()
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert _compiled._threads() == 1
    assert _compiled._threads() == before
    with threadpoolctl.threadpool_limits(1, user_api="blas"):     # BLAS only
        assert _compiled._threads() == before


def test_a_forked_child_runs_on_one_thread():
    # libgomp's threads do not survive fork: a child that started a team would hang
    mp = pytest.importorskip("multiprocessing")
    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork here")
    code = """
import multiprocessing as mp, numpy as np, fastape as ft
from fastape._bench import rosen_array, rosen_x0
x = rosen_x0(300_000)
F = ft.compile(rosen_array, x)
_compiled._threads(2)
v = F.value_and_grad(x)[0]          # the parent's team started
def child(q):
    q.put((_compiled._threads(), F.value_and_grad(x)[0]))
ctx = mp.get_context("fork")
q = ctx.Queue()
p = ctx.Process(target=child, args=(q,))
p.start()
n, w = q.get(timeout=60)
p.join(30)
print(n, w == v, p.exitcode)
"""
    assert _child_threads({}, code) == ["1", "True", "0"]


def test_sum_two_threads_equal_one_and_numpy(rng):
    # a SUM on its own (no run to fuse): its pairwise subtrees summed by threads and
    # joined in numpy's order; its reverse step (x̄ += λ) in pieces
    n = 100_003
    x = rng.standard_normal(n) * 10.0 ** rng.uniform(-8, 8, n)
    F = ft.compile(lambda v: np.sum(v), x)
    assert not F.traces[-1].fusion.runs
    vg = ft.value_and_grad(lambda v: 3.0 * np.sum(v))
    res = {}
    for nt in (1, 2):
        with threads(nt):
            res[nt] = [F(x), *F.value_and_grad(x), *vg(x), F.jvp((x,), x)[1]]
    for a, b in zip(res[1], res[2]):
        same(a, b)
    assert res[2][0] == np.sum(x)
    same(res[2][2], np.ones(n))
    same(res[2][4], np.full(n, 3.0))
