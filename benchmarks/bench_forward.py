"""Benchmark: compiled forward mode (Function.jvp, Function.jacobian) against the
compiled value and value-and-gradient of the same function, in the same run.

    rosen_loop   the scalar-loop Rosenbrock, n = 10 000 (x[i] of a numpy input: a
                 grouped scalar tape)
    two_layer    the seeds' network ||tanh(X W1) W2 - y||² (bench_two_layer.py),
                 (n, d, h) = (256, 64, 64), differentiated in (W1, W2)
    jacobian     a 100-input, 100-output function (tanh of a matrix-vector
                 product, then a running sum): F.jacobian(mode="fwd"), two
                 vector-mode sweeps of 64 and 36 directions, against 100 separate
                 F.jvp calls

Each figure is the median over rounds (each round times a batch of calls, the
tools interleaved), and each ratio the median of the per-round ratios, so a slow
moment of the shared machine affects both sides of a ratio alike. BLAS runs on one
thread (threadpoolctl when installed, and OPENBLAS_NUM_THREADS=1 before numpy is
imported).

    PYTHONPATH=src python benchmarks/bench_forward.py [--rounds 9] [--json PATH]
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import fastape as ft  # noqa: E402

try:
    from threadpoolctl import threadpool_limits  # noqa: E402
except ImportError:          # the environment variables above still pin OpenBLAS
    threadpool_limits = None


def rosen_loop(x):
    s = 0.0
    for i in range(len(x) - 1):
        s = s + 100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2
    return s


def two_layer_problem(n=256, d=64, h=64, seed=0):
    """The seeds' network of benchmarks/bench_two_layer.py at (n, d, h)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.sin(X[:, 0]) + 0.1 * rng.standard_normal(n)
    W1 = rng.standard_normal((d, h)) / np.sqrt(d)
    W2 = rng.standard_normal(h) / np.sqrt(h)

    def f(W1, W2):
        r = np.tanh(X @ W1) @ W2 - y
        return np.sum(r * r)

    f.data = (X, y)                 # for peers that build the same function
    return f, W1, W2


def _per_call(fn, reps):
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def _reps(fn, budget=0.05):
    """Calls per timed batch so that a batch lasts about `budget` seconds."""
    t = min(_per_call(fn, 1), _per_call(fn, 1))
    return max(1, int(budget / max(t, 1e-9)))


def measure(tools, rounds):
    """{name: median seconds per call}, and ratio(a, b): the median over rounds of
    a's time over b's in the same round."""
    reps = {k: _reps(f) for k, f in tools.items()}
    times = {k: [] for k in tools}
    for _ in range(rounds):
        for k, f in tools.items():
            times[k].append(_per_call(f, reps[k]))
    med = {k: statistics.median(v) for k, v in times.items()}

    def ratio(a, b):
        return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))
    return med, ratio


def case_rosen(rounds, n=10_000):
    rng = np.random.default_rng(1)
    x = rng.uniform(-1.0, 1.0, n)
    v = rng.standard_normal(n)
    F = ft.compile(rosen_loop, x)
    # check the jvp against the gradient before timing
    val, tan = F.jvp(x, v)
    g = F.grad(x)
    assert abs(tan - g @ v) <= 1e-9 * max(1.0, abs(g @ v)), (tan, g @ v)
    tools = {"value": lambda: F(x), "value+grad": lambda: F.value_and_grad(x),
             "jvp": lambda: F.jvp(x, v)}
    med, ratio = measure(tools, rounds)
    return {"key": "rosen_loop", "title": f"scalar-loop Rosenbrock, n = {n}",
            "nodes": F.nodes, "runs": F.traces[-1].run_count, "seconds": med,
            "ratios": {"jvp / value": ratio("jvp", "value"),
                       "jvp / value+grad": ratio("jvp", "value+grad")}}


def case_two_layer(rounds):
    f, W1, W2 = two_layer_problem()
    rng = np.random.default_rng(2)
    dW1, dW2 = rng.standard_normal(W1.shape), rng.standard_normal(W2.shape)
    F = ft.compile(f, W1, W2, argnums=(0, 1))
    val, tan = F.jvp((W1, W2), (dW1, dW2))
    g1, g2 = F.grad(W1, W2)
    want = np.sum(g1 * dW1) + g2 @ dW2
    assert abs(tan - want) <= 1e-9 * max(1.0, abs(want)), (tan, want)
    tools = {"value": lambda: F(W1, W2), "value+grad": lambda: F.value_and_grad(W1, W2),
             "jvp": lambda: F.jvp((W1, W2), (dW1, dW2))}
    med, ratio = measure(tools, rounds)
    return {"key": "two_layer", "title": "two-layer network ||tanh(X W1) W2 - y||², "
            "(n, d, h) = (256, 64, 64)", "nodes": F.nodes, "seconds": med,
            "ratios": {"jvp / value": ratio("jvp", "value"),
                       "jvp / value+grad": ratio("jvp", "value+grad")}}


def case_jacobian(rounds, n=100):
    rng = np.random.default_rng(3)
    A = rng.standard_normal((n, n)) / np.sqrt(n)
    x = rng.standard_normal(n)
    F = ft.compile(lambda x: np.cumsum(np.tanh(A @ x)), x)
    eye = np.eye(n)

    def by_jvp():
        return np.stack([F.jvp(x, eye[j])[1] for j in range(n)], axis=1)

    J = F.jacobian(x, mode="fwd")
    np.testing.assert_allclose(J, by_jvp(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(J, F.jacobian(x, mode="rev"), rtol=1e-12, atol=1e-14)
    tools = {f"{n} jvp calls": by_jvp, "jacobian(fwd)": lambda: F.jacobian(x, mode="fwd"),
             "jacobian(rev)": lambda: F.jacobian(x, mode="rev")}
    med, ratio = measure(tools, rounds)
    return {"key": "jacobian", "title": f"Jacobian of cumsum(tanh(A x)), {n} inputs, "
            f"{n} outputs", "nodes": F.nodes, "seconds": med,
            "ratios": {f"jacobian(fwd) / {n} jvp": ratio("jacobian(fwd)", f"{n} jvp calls"),
                       f"jacobian(rev) / {n} jvp": ratio("jacobian(rev)", f"{n} jvp calls")}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--n", type=int, default=10_000, help="Rosenbrock size")
    args = ap.parse_args(argv)
    if args.rounds < 7:
        ap.error("--rounds must be at least 7 (the medians need them)")
    limit = threadpool_limits(1) if threadpool_limits else None
    try:
        results = [case_rosen(args.rounds, args.n), case_two_layer(args.rounds),
                   case_jacobian(args.rounds)]
    finally:
        if limit is not None:
            limit.unregister()
    print(f"fastape forward mode, median of {args.rounds} rounds, BLAS on 1 thread "
          f"({'threadpoolctl' if threadpool_limits else 'OPENBLAS_NUM_THREADS=1'})")
    for r in results:
        print(f"\n{r['title']} ({r['nodes']} nodes)")
        for k, s in r["seconds"].items():
            print(f"  {k:<22} {s * 1e6:12.1f} µs")
        for k, q in r["ratios"].items():
            print(f"  {k:<22} {q:12.2f}x")
    if args.json:
        write_json(args.json, args.rounds, results)
    return results


def write_json(path, rounds, results, **extra):
    """The results of a run, with the Python, machine, numpy and round count (and any
    extra fields), as the benchmarks' JSON files hold them."""
    out = {"python": sys.version.split()[0], "machine": platform.machine(),
           "numpy": np.__version__, "rounds": rounds, **extra, "results": results}
    with open(path, "w") as fh:
        json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
