"""Batched replay: throughput of Function.grad_batch on 1 and on 2 threads (issue 4).

Scalar-loop Rosenbrock (n = 100 per point) at many points; the rounds alternate
1 and 2 threads, and the speed-up is computed within each round. Also reports the
bytes per node held by the compiled function and the small-call latency of the
seeds' function beside a hand-written Python formula.

The machine's own ceiling is measured in the same rounds: the hand-written C
interpreter (c_interp.c) runs the same batch (the same function's tape, both
sweeps per row) on 1 and on 2 threads. On a shared virtual machine two threads
of pure C do not always get 2x either; compare the two speed-ups.

    python benchmarks/bench_batch.py [--rounds 7] [--points 20000] [--no-ceiling]
"""

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite import rosen_loop as rosenbrock  # noqa: E402
from suite import seeds_f  # noqa: E402
from suite import seeds_hand as seeds_by_hand  # noqa: E402

import fastape as ft  # noqa: E402


def seeds(x):
    return seeds_f(x, np.exp, np.sin)


def timeit(fn, number):
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def c_batch(X, threads):
    """The C interpreter's batch on `threads` threads, rows split in equal halves
    (a callable that runs it once, and the gradients it writes)."""
    import c_interp

    with ft.Tape() as t:
        xs = [t.var(v) for v in X[0]]
        y = rosenbrock(xs)
    in0 = xs[0].node
    assert [v.node for v in xs] == list(range(in0, in0 + X.shape[1]))
    interps = [c_interp.Interp(t.export(), y.node) for _ in range(threads)]
    G = np.empty_like(X)
    m = X.shape[0]
    bounds = [(k * m // threads, (k + 1) * m // threads) for k in range(threads)]

    def run():
        if threads == 1:
            interps[0].batch(in0, X, G, 0, m)
            return
        ts = [threading.Thread(target=ip.batch, args=(in0, X, G, r0, r1))
              for ip, (r0, r1) in zip(interps, bounds)]
        for th in ts:
            th.start()
        for th in ts:
            th.join()
    return run, G


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--points", type=int, default=20000)
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-ceiling", action="store_true",
                    help="skip the C interpreter's batch (needs a C compiler)")
    args = ap.parse_args()

    X = np.random.default_rng(0).normal(size=(args.points, 100))
    F = ft.compile(rosenbrock, X[0])
    G = F.grad_batch(X[:50], threads=2)
    assert np.allclose(G, [F.grad(x) for x in X[:50]], rtol=1e-14)

    c1 = c2 = None
    if not args.no_ceiling:
        c1, G1 = c_batch(X, 1)
        c2, G2 = c_batch(X, 2)
        c1()
        c2()
        assert np.array_equal(G1, G2) and np.allclose(G1, F.grad_batch(X), rtol=1e-12)
    t1s, t2s, speedups, c_speedups = [], [], [], []
    for _ in range(args.rounds):
        t1 = timeit(lambda: F.grad_batch(X, threads=1), 1)
        t2 = timeit(lambda: F.grad_batch(X, threads=2), 1)
        t1s.append(t1)
        t2s.append(t2)
        speedups.append(t1 / t2)
        if c1 is not None:
            c_speedups.append(timeit(c1, 1) / timeit(c2, 1))
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
        "c_interp_speedup_2_over_1": ({"median": float(np.median(c_speedups)),
                                       "min": min(c_speedups), "max": max(c_speedups)}
                                      if c_speedups else None),
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
    if c_speedups:
        print(f"  the machine's ceiling, same rounds: the C interpreter's batch on 2 threads "
              f"over 1: median {np.median(c_speedups):.2f} (min {min(c_speedups):.2f}, "
              f"max {max(c_speedups):.2f})")
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
