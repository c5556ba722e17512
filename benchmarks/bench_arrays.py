"""The targets of "array code at memory speed" in one interleaved run.

    PYTHONPATH=src python benchmarks/bench_arrays.py [--rounds 7] [--json FILE] [--threads N]

Measured, each as a median over rounds of ratios taken within a round (tools run in
an order rotated from round to round, so a noisy machine slows them alike):

* whole-array Rosenbrock, n = 10⁴, 10⁵, 10⁶: fastape eager ``value_and_grad`` and
  compiled ``Function.value_and_grad`` against the hand-written numpy gradient;
* the seeds' scalar function, eager ``value_and_grad`` per call, with ``ft.exp`` and
  with ``np.exp`` (and compiled, for scale);
* the scalar-loop Rosenbrock (n = 10⁴) on a numpy-array input: eager record +
  gradient per op, and the tape's bytes per node;
* ``fastape.compile`` against one eager record + gradient of the same function
  (the scalar loop and the whole-array Rosenbrock at n = 10⁵).

The two-layer network has its own script (``benchmarks/bench_two_layer.py``). BLAS
threads are pinned to 1. fastape's own threads (large arrays) follow OpenMP's
convention: ``OMP_NUM_THREADS``, or ``--threads N`` (threadpoolctl's user_api="openmp"
when it is installed); the count used is recorded as ``threads`` in the JSON.
"""

import argparse
import gc
import json
import os
import sys
import time

import numpy as np

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import fastape as ft  # noqa: E402
from fastape._bench import rosen_array, rosen_hand, rosen_loop, rosen_x0, seeds_f, seeds_hand  # noqa: E402


def _pin(threads=None):
    """BLAS on one thread; fastape's OpenMP threads as given (None: as the environment
    says). Returns fastape's thread count."""
    from fastape import _compiled
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        _pin.ctl = [threadpool_limits(1, user_api="blas")]
        if threads is not None:
            _pin.ctl.append(threadpool_limits(threads, user_api="openmp"))
    elif threads is not None:
        _compiled._threads(threads)
    return _compiled._threads() if hasattr(_compiled, "_threads") else 1


def seeds_ft(x):
    return seeds_f(x, ft.exp, ft.sin)


def seeds_np(x):
    return seeds_f(x, np.exp, np.sin)


def _batch(fn, target_s):
    """Calls per measurement so that one lasts about target_s."""
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    return max(1, int(target_s / max(dt, 1e-7)))


def timed_group(tools, rounds, target_s=0.02):
    """tools: {name: fn}. Returns {name: [seconds per call per round]}."""
    names = list(tools)
    reps = {k: _batch(tools[k], target_s) for k in names}
    out = {k: [] for k in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            fn, m = tools[k], reps[k]
            gc.collect()
            gc.disable()
            t0 = time.perf_counter()
            for _ in range(m):
                fn()
            dt = (time.perf_counter() - t0) / m
            gc.enable()
            out[k].append(dt)
    return out


def ratio(times, a, b):
    """Median over rounds of times[a] / times[b] (same round)."""
    return float(np.median([x / y for x, y in zip(times[a], times[b])]))


def med(times, k):
    return float(np.median(times[k]))


def check(name, got, want, rtol=1e-8):
    g = np.asarray(got, dtype=float)
    w = np.asarray(want, dtype=float)
    err = np.max(np.abs(g - w)) / max(np.max(np.abs(w)), 1e-300)
    if not err <= rtol:
        raise SystemExit(f"{name}: gradient off by {err:.2e} (relative, max-norm)")


def bench_rosen_array(n, rounds, res):
    x0 = rosen_x0(n)
    want = rosen_hand(x0)[1]
    vg = ft.value_and_grad(rosen_array)
    F = ft.compile(rosen_array, x0)
    check(f"eager n={n}", vg(x0)[1], want)
    check(f"compiled n={n}", F.value_and_grad(x0)[1], want)
    t = timed_group({"hand": lambda: rosen_hand(x0), "eager": lambda: vg(x0),
                     "compiled": lambda: F.value_and_grad(x0)}, rounds)
    row = {"hand_s": med(t, "hand"), "eager_s": med(t, "eager"),
           "compiled_s": med(t, "compiled"), "eager_x_hand": ratio(t, "eager", "hand"),
           "compiled_x_hand": ratio(t, "compiled", "hand")}
    res[f"rosen_array_{n}"] = row
    print(f"whole-array Rosenbrock n = {n:>9,}: hand {row['hand_s'] * 1e3:8.3f} ms | "
          f"eager {row['eager_x_hand']:6.2f}x | compiled {row['compiled_x_hand']:6.2f}x")


def bench_seeds(rounds, res):
    x = 0.3
    want = seeds_hand(x)[1]
    vft = ft.value_and_grad(seeds_ft)
    vnp = ft.value_and_grad(seeds_np)
    F = ft.compile(seeds_ft, x)
    for name, fn in (("ft.exp", vft), ("np.exp", vnp), ("compiled", F.value_and_grad)):
        check(f"seeds {name}", fn(x)[1], want, 1e-12)
    t = timed_group({"hand": lambda: seeds_hand(x), "eager_ft": lambda: vft(x),
                     "eager_np": lambda: vnp(x), "compiled": lambda: F.value_and_grad(x)},
                    rounds)
    row = {k + "_s": med(t, k) for k in t}
    res["seeds"] = row
    print(f"seeds' scalar f per call: eager ft.exp {row['eager_ft_s'] * 1e6:.2f} µs, "
          f"np.exp {row['eager_np_s'] * 1e6:.2f} µs, compiled {row['compiled_s'] * 1e6:.2f} µs, "
          f"hand {row['hand_s'] * 1e6:.2f} µs")


def _tape_of(fun, x):
    """The tape value_and_grad records for fun at x (an array input is an element
    block there) and its output."""
    tape = ft.Tape()
    v = getattr(tape, "_var_elements", tape.var)(x)     # (var: builds before it)
    y = fun(v)
    tape.gradient(y, v)
    return tape, y


def bench_scalar_loop(n, rounds, res):
    x0 = rosen_x0(n)
    want = rosen_hand(x0)[1]
    vg = ft.value_and_grad(rosen_loop)
    check("scalar loop", vg(x0)[1], want)
    # without pooled arenas of the other workloads (a tape takes any larger one it
    # finds while it grows, and gives back what it does not use when it closes)
    limit = ft.arena_pool()["limit"] if hasattr(ft, "arena_pool") else None
    if limit is not None:
        ft.arena_pool(limit=0)
    tape, _ = _tape_of(rosen_loop, x0)
    if limit is not None:
        ft.arena_pool(limit=limit)
    nodes, held = len(tape), tape.nbytes      # capacities as grown, during the sweep
    tape.shrink_to_fit()
    nbytes = tape.nbytes                      # trimmed, as a with-block leaves a tape
    tape.release()
    ops = 8 * (n - 1)
    t = timed_group({"eager": lambda: vg(x0), "compile": lambda: ft.compile(rosen_loop, x0)},
                    rounds, 0.05)
    row = {"eager_s": med(t, "eager"), "ns_per_op": med(t, "eager") / ops * 1e9,
           "nodes": nodes, "bytes_per_node": nbytes / nodes,
           "bytes_per_node_held": held / nodes,
           "compile_s": med(t, "compile"), "compile_x_eager": ratio(t, "compile", "eager")}
    res[f"scalar_loop_{n}"] = row
    print(f"scalar-loop Rosenbrock n = {n:,} (numpy-array input): eager {row['ns_per_op']:.0f} "
          f"ns/op, {row['bytes_per_node']:.1f} B/node trimmed ({row['bytes_per_node_held']:.1f} "
          f"held while growing; {nodes:,} nodes for {ops:,} ops); "
          f"compile {row['compile_x_eager']:.2f}x eager record + gradient")


def bench_compile_array(n, rounds, res):
    x0 = rosen_x0(n)
    vg = ft.value_and_grad(rosen_array)
    t = timed_group({"eager": lambda: vg(x0), "compile": lambda: ft.compile(rosen_array, x0)},
                    rounds)
    row = {"eager_s": med(t, "eager"), "compile_s": med(t, "compile"),
           "compile_x_eager": ratio(t, "compile", "eager")}
    res[f"compile_rosen_array_{n}"] = row
    print(f"compile of whole-array Rosenbrock n = {n:,}: {row['compile_x_eager']:.2f}x eager "
          "record + gradient")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--threads", type=int, help="fastape's threads (default: OMP_NUM_THREADS, "
                    "else the usable cores)")
    args = ap.parse_args(argv)
    threads = _pin(args.threads)
    print(f"fastape threads: {threads}")
    # glibc raises its mmap threshold after a large block is freed: numpy's temporaries
    # then come from the heap, as in any long-running process; without this the
    # hand-written gradient's speed would depend on what ran before it
    # (glibc moves the threshold up to the size of a freed mmapped block of <= 32 MiB)
    warm = np.ones(24 << 20, np.uint8)
    del warm
    res = {"rounds": args.rounds, "numpy": np.__version__, "python": sys.version.split()[0],
           "threads": threads}
    for n in args.sizes:
        bench_rosen_array(n, args.rounds, res)
    bench_seeds(args.rounds, res)
    bench_scalar_loop(10_000, args.rounds, res)
    bench_compile_array(100_000, args.rounds, res)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
