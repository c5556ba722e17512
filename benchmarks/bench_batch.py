"""Batched replay: throughput of Function.grad_batch on 1 and on 2 threads (issue 4).

Scalar-loop Rosenbrock (n = 100 per point) at many points; the rounds alternate
1 and 2 threads, and the speed-up is computed within each round. Also reports the
bytes per node held by the compiled function and the small-call latency of the
seeds' function beside a hand-written Python formula.

    python benchmarks/bench_batch.py [--rounds 7] [--points 20000]
"""

import argparse
import json
import os
import time

import numpy as np

import fastape as ft
from fastape.bench import rosen_loop as rosenbrock
from fastape.bench import seeds_f
from fastape.bench import seeds_hand as seeds_by_hand


def seeds(x):
    return seeds_f(x, np.exp, np.sin)


def timeit(fn, number):
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--points", type=int, default=20000)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    X = np.random.default_rng(0).normal(size=(args.points, 100))
    F = ft.compile(rosenbrock, X[0])
    G = F.grad_batch(X[:50], threads=2)
    assert np.allclose(G, [F.grad(x) for x in X[:50]], rtol=1e-14)

    t1s, t2s, speedups = [], [], []
    for _ in range(args.rounds):
        t1 = timeit(lambda: F.grad_batch(X, threads=1), 1)
        t2 = timeit(lambda: F.grad_batch(X, threads=2), 1)
        t1s.append(t1)
        t2s.append(t2)
        speedups.append(t1 / t2)
    S = ft.compile(seeds, 0.5)
    assert abs(S.grad(0.5) - seeds_by_hand(0.5)[1]) < 1e-12 * abs(seeds_by_hand(0.5)[1])
    lat, lat_py = [], []
    for _ in range(args.rounds):
        lat.append(timeit(lambda: S.value_and_grad(0.5), 20000))
        lat_py.append(timeit(lambda: seeds_by_hand(0.5), 20000))

    med = float(np.median(speedups))
    res = {
        "cores": os.cpu_count(),
        "points": args.points, "nodes_per_point": F.nodes,
        "grad_batch_1_thread_s": float(np.median(t1s)),
        "grad_batch_2_threads_s": float(np.median(t2s)),
        "speedup_2_over_1": {"median": med, "min": min(speedups), "max": max(speedups)},
        "bytes_per_node": F.nbytes / F.nodes,
        "bytes_per_node_per_copy": F.traces[-1].tape.nbytes / F.nodes,
        "working_copies": F.traces[-1].nclones,
        "seeds_value_and_grad_us": float(np.median(lat)) * 1e6,
        "seeds_by_hand_us": float(np.median(lat_py)) * 1e6,
    }
    print(f"grad_batch, {args.points} points x {F.nodes} nodes, {args.rounds} rounds")
    print(f"  1 thread  {res['grad_batch_1_thread_s']:.4f} s   2 threads "
          f"{res['grad_batch_2_threads_s']:.4f} s   speed-up median {med:.2f} "
          f"(min {min(speedups):.2f}, max {max(speedups):.2f})")
    print(f"  compiled function: {res['bytes_per_node']:.1f} bytes per node in all, "
          f"{res['bytes_per_node_per_copy']:.1f} in each of its {res['working_copies']} "
          "working copies (one per thread that used it)")
    print(f"seeds' function, value and gradient per call: fastape compiled "
          f"{res['seeds_value_and_grad_us']:.2f} us, hand-written Python "
          f"{res['seeds_by_hand_us']:.2f} us")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)


if __name__ == "__main__":
    main()
