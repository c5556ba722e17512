"""Benchmark: value and gradient of the seeds' two-layer network (issue 3).

    f(W1, W2) = ||tanh(X W1) W2 − y||²,   X: (n, d), W1: (d, h), W2: (h,), y: (n,)

measured beside a hand-written numpy forward + backprop of the same function (the
practical limit), in the same process:

    numpy (hand)        H = tanh(X W1); r = H W2 − y; f = r·r;
                        W2̄ = Hᵀ(2r); W1̄ = Xᵀ[(2r) W2ᵀ ∘ (1 − H²)]
    fastape eager       ft.value_and_grad(f, (0, 1)): records the tape on every call
    fastape compiled    ft.compile(f, W1, W2, argnums=(0, 1)).value_and_grad: replays
    PyTorch / JAX jit / autograd    when importable (skipped with a note otherwise)

at (n, d, h) = (4096, 256, 256) ("large") and (64, 16, 16) ("small"), with 1 and 2
threads for BLAS and fastape's kernels over large arrays (threadpoolctl, which limits
OpenMP too; recorded as openmp_threads; PyTorch via torch.set_num_threads; JAX's XLA thread
pool cannot be resized in-process, so its rows say so). Tools are interleaved
round by round; each time is the median over rounds, and each ratio the median of
the per-round ratios to numpy. Peak memory of one value-and-gradient call is
measured with tracemalloc (numpy and fastape allocate through it; PyTorch and JAX
do not, so they have no figure). Every tool's gradient is checked against the
hand-written one before timing.

    PYTHONPATH=src python benchmarks/bench_two_layer.py [--rounds 9] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

import fastape as ft

SIZES = {"large": (4096, 256, 256), "small": (64, 16, 16)}
HAND = "numpy (hand-written)"


def problem(n, d, h, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.sin(X[:, 0]) + 0.1 * rng.standard_normal(n)
    W1 = rng.standard_normal((d, h)) / np.sqrt(d)
    W2 = rng.standard_normal(h) / np.sqrt(h)
    return X, y, W1, W2


def numpy_hand(X, y):
    def vg(W1, W2):
        H = np.tanh(X @ W1)
        r = H @ W2 - y
        g = 2.0 * r
        return float(r @ r), (X.T @ (np.outer(g, W2) * (1.0 - H * H)), H.T @ g)
    return vg


def loss_np(X, y):
    def f(W1, W2):     # plain numpy: fastape records it through numpy's protocols
        return np.sum((np.tanh(X @ W1) @ W2 - y) ** 2)
    return f


def fastape_eager(X, y):
    return ft.value_and_grad(loss_np(X, y), (0, 1))


def fastape_compiled(X, y, W1, W2):
    F = ft.compile(loss_np(X, y), W1, W2, argnums=(0, 1))
    return F.value_and_grad


def torch_vg(X, y):
    import torch
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def vg(W1, W2):
        w1 = torch.from_numpy(W1).requires_grad_()
        w2 = torch.from_numpy(W2).requires_grad_()
        loss = ((torch.tanh(Xt @ w1) @ w2 - yt) ** 2).sum()
        loss.backward()
        return loss.item(), (w1.grad.numpy(), w2.grad.numpy())
    return vg


def jax_vg(X, y):
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    Xj, yj = jnp.asarray(X), jnp.asarray(y)
    f = jax.jit(jax.value_and_grad(
        lambda w1, w2: jnp.sum((jnp.tanh(Xj @ w1) @ w2 - yj) ** 2), (0, 1)))

    def vg(W1, W2):
        v, (g1, g2) = f(W1, W2)
        return float(v), (np.asarray(g1), np.asarray(g2))
    return vg


def autograd_vg(X, y):
    import autograd
    import autograd.numpy as anp
    return autograd.value_and_grad(
        lambda w: anp.sum((anp.tanh(X @ w[0]) @ w[1] - y) ** 2))


def _tools(X, y, W1, W2):
    yield HAND, lambda: numpy_hand(X, y)
    yield "fastape eager", lambda: fastape_eager(X, y)
    yield "fastape compiled", lambda: fastape_compiled(X, y, W1, W2)
    yield "PyTorch eager", lambda: torch_vg(X, y)
    yield "JAX jit", lambda: jax_vg(X, y)
    yield "autograd", lambda: _autograd_adapter(autograd_vg(X, y))


def _autograd_adapter(vg):
    def f(W1, W2):
        v, g = vg((W1, W2))
        return v, tuple(g)
    return f


class _Threads:
    """Limit BLAS, fastape's OpenMP threads (large arrays) and PyTorch to `n` threads
    inside the block."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        from threadpoolctl import threadpool_limits
        self._ctl = threadpool_limits(limits=self.n)      # BLAS and OpenMP
        try:
            import torch
            self._torch = torch.get_num_threads()
            torch.set_num_threads(self.n)
        except ImportError:
            self._torch = None
        return self

    def __exit__(self, *exc):
        self._ctl.restore_original_limits()
        if self._torch is not None:
            import torch
            torch.set_num_threads(self._torch)


def _time(fn, args, reps):
    t0 = time.perf_counter()
    for _ in range(reps):
        fn(*args)
    return (time.perf_counter() - t0) / reps


def _peak_bytes(fn, args):
    """Bytes a call allocates at its peak (tracemalloc). fastape's arena pool is
    emptied first, so that the arenas a call reuses count as they would in a fresh
    process (held by the pool between calls, they are memory the call needs)."""
    gc.collect()
    limit = ft.arena_pool()["limit"] if hasattr(ft, "arena_pool") else None
    if limit is not None:
        ft.arena_pool(limit=0)
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        out = fn(*args)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
        if limit is not None:
            ft.arena_pool(limit=limit)
    del out
    return peak


def run_case(size, threads, rounds, min_time):
    n, d, h = SIZES[size]
    X, y, W1, W2 = problem(n, d, h)
    args = (W1, W2)
    want_v, (want_g1, want_g2) = numpy_hand(X, y)(W1, W2)
    tools, notes = {}, {}
    with _Threads(threads):
        try:
            from fastape import _compiled
            omp = _compiled._threads()
        except AttributeError:      # a build without threads
            omp = 1
        for name, make in _tools(X, y, W1, W2):
            try:
                fn = make()
                v, (g1, g2) = fn(*args)          # also the warm-up (jit compile, tracing)
            except ImportError as e:
                notes[name] = f"skipped: {e.name or e} not importable"
                continue
            ok = (np.isclose(v, want_v, rtol=1e-10)
                  and np.allclose(g1, want_g1, rtol=1e-8, atol=1e-10)
                  and np.allclose(g2, want_g2, rtol=1e-8, atol=1e-10))
            if not ok:
                raise AssertionError(f"{name}: value or gradient differs from numpy's")
            tools[name] = fn
        # repetitions per timing so that one timing lasts >= min_time for numpy
        t = _time(tools[HAND], args, 1)
        reps = max(1, int(min_time / max(t, 1e-9)))
        times = {name: [] for name in tools}
        ratios = {name: [] for name in tools}
        gc_was = gc.isenabled()
        gc.disable()
        try:
            for r in range(rounds):
                order = list(tools)
                if r % 2:
                    order.reverse()
                this = {}
                for name in order:
                    this[name] = _time(tools[name], args, reps)
                for name in tools:
                    times[name].append(this[name])
                    ratios[name].append(this[name] / this[HAND])
        finally:
            if gc_was:
                gc.enable()
        peaks = {}
        for name in (HAND, "fastape eager", "fastape compiled"):
            if name in tools:
                peaks[name] = _peak_bytes(tools[name], args)
    if "JAX jit" in tools:
        notes["JAX jit"] = "XLA's thread pool is not limited by threadpoolctl"
    rows = []
    for name in tools:
        rows.append({
            "tool": name,
            "time_ms": statistics.median(times[name]) * 1e3,
            "time_ms_min": min(times[name]) * 1e3,
            "time_ms_max": max(times[name]) * 1e3,
            "ratio_to_numpy": statistics.median(ratios[name]),
            "ratio_min": min(ratios[name]),
            "ratio_max": max(ratios[name]),
            "peak_mb": peaks[name] / 2**20 if name in peaks else None,
            "note": notes.get(name, ""),
        })
    for name, note in notes.items():
        if name not in tools:
            rows.append({"tool": name, "note": note})
    return {"size": size, "n_d_h": [n, d, h], "blas_threads": threads,
            "openmp_threads": omp, "rounds": rounds,
            "reps_per_round": reps, "rows": rows}


def print_case(case):
    n, d, h = case["n_d_h"]
    print(f"\n{case['size']} (n, d, h) = ({n}, {d}, {h}), {case['blas_threads']} BLAS "
          f"thread(s), fastape {case.get('openmp_threads', 1)}, {case['rounds']} rounds x "
          f"{case['reps_per_round']} calls")
    print(f"  {'tool':<22}{'median ms':>11}{'ratio':>8}{'ratio range':>16}{'peak MB':>9}  note")
    for r in case["rows"]:
        if "time_ms" not in r:
            print(f"  {r['tool']:<22}{'':>44}  {r['note']}")
            continue
        peak = f"{r['peak_mb']:.1f}" if r["peak_mb"] is not None else "-"
        rng = f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f}"
        print(f"  {r['tool']:<22}{r['time_ms']:>11.3f}{r['ratio_to_numpy']:>8.2f}"
              f"{rng:>16}{peak:>9}  {r['note']}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--min-time", type=float, default=0.2,
                   help="seconds per timing of the numpy baseline (sets the calls per round)")
    p.add_argument("--sizes", default="large,small")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--json", default=str(Path(__file__).resolve().parent / "results"
                                         / "two_layer.json"))
    a = p.parse_args(argv)
    cases = []
    for size in a.sizes.split(","):
        for threads in (int(t) for t in a.threads.split(",")):
            case = run_case(size, threads, a.rounds, a.min_time)
            print_case(case)
            cases.append(case)
    meta = {"python": sys.version.split()[0], "numpy": np.__version__,
            "fastape": ft.__version__, "machine": platform.machine(),
            "processor": platform.processor(), "cpus": os.cpu_count(),
            "command": "PYTHONPATH=src python benchmarks/bench_two_layer.py "
                       + " ".join(argv if argv is not None else sys.argv[1:])}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps({"meta": meta, "cases": cases}, indent=1))
    print(f"\nwrote {a.json}")


if __name__ == "__main__":
    main()
