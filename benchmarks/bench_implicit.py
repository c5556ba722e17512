"""Benchmark (issue 12): the implicit gradient of a deep-equilibrium layer against
differentiating its unrolled iterations, in one run.

The layer is examples/deq_layer.py's ``z = tanh(W z + U x + b)`` with a readout loss,
one sample, z of size n = 100 and n = 2,000, W scaled to spectral norm 0.95 (so the
iteration is a contraction; 20 iterations reach 0.95^20 ≈ 0.36 at worst).
Gradients with respect to (W, U, b, V) by ``fastape.value_and_grad``:

    implicit      ``fastape.fixed_point`` (Anderson, tol = adjoint_tol = 1e-10; the
                  adjoint dense up to fastape.implicit.DENSE_MAX unknowns, GMRES above;
                  for z of size 100 GMRES is timed too, ``dense_max=0``)
    implicit tol 1e-6   the same with tol = adjoint_tol = 1e-6 (a usual DEQ tolerance)
    unrolled 20   the same layer applied 20 times from 0, every step on the tape

Times: medians over rounds (the tools interleaved), the ratio the median of per-round
ratios. Memory: tracemalloc's peak during one value-and-gradient call (the tape's
buffers are PyMem allocations, so it sees them, with numpy's arrays and the
solver's temporaries), above what was allocated before the call, for the implicit
node and for unrolled tapes of 20, 100 and 500 iterations; and ``Tape.nbytes`` of the
recorded forward pass. BLAS on one thread.

    PYTHONPATH=src python benchmarks/bench_implicit.py [--rounds 5] [--json PATH]
    PYTHONPATH=src python benchmarks/bench_implicit.py --crossover --sizes 25 50 100 150 200
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402

import fastape as ft  # noqa: E402

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.insert(0, os.path.join(_HERE, os.pardir, "examples"))

from bench_forward import measure, write_json  # noqa: E402
from deq_layer import layer, loss_of, tape_bytes  # noqa: E402

try:
    from threadpoolctl import threadpool_limits  # noqa: E402
except ImportError:
    threadpool_limits = None

ITERATIONS = (20, 100, 500)


def problem(n, m=10, seed=0):
    """One sample x (m, 1), its target, and (W, U, b, V) with ‖W‖₂ = 0.95."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((n, n))
    W *= 0.95 / np.linalg.norm(W, 2)
    params = (W, rng.standard_normal((n, m)) / np.sqrt(m), 0.1 * rng.standard_normal(n),
              rng.standard_normal(n) / np.sqrt(n))
    X = rng.standard_normal((m, 1))
    return params, X, np.array([0.5])


def implicit_states(tol=1e-10, dense_max=ft.implicit.DENSE_MAX):
    def states(W, U, b, X):
        return ft.fixed_point(layer, np.zeros((U.shape[0], X.shape[1])), W, U, b, X, tol=tol,
                              adjoint_tol=tol, dense_max=dense_max)
    return states


def unrolled_states(k):
    def states(W, U, b, X):
        z = np.zeros((U.shape[0], X.shape[1]))
        for _ in range(k):
            z = layer(z, W, U, b, X)
        return z
    return states


def peak_bytes(fn):
    """tracemalloc's peak during fn(), above the memory allocated before it."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def case(n, rounds):
    params, X, Y = problem(n)
    implicit = ft.value_and_grad(loss_of(implicit_states()))
    unrolled = {k: ft.value_and_grad(loss_of(unrolled_states(k))) for k in ITERATIONS}
    g_i, g_u = implicit(params, X, Y)[1], unrolled[20](params, X, Y)[1]
    g_500 = unrolled[500](params, X, Y)[1]           # converged to rounding

    def gap(a, b):
        return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))
    scale = max(float(np.max(np.abs(x))) for x in g_500)
    assert gap(g_i, g_500) <= 1e-8 * scale, gap(g_i, g_500)
    loose = ft.value_and_grad(loss_of(implicit_states(1e-6)))
    tools = {"implicit": lambda: implicit(params, X, Y),
             "implicit tol 1e-6": lambda: loose(params, X, Y),
             "unrolled 20": lambda: unrolled[20](params, X, Y)}
    krylov = None
    if n <= ft.implicit.DENSE_MAX:          # the other adjoint solver too, for the threshold
        krylov = ft.value_and_grad(loss_of(implicit_states(dense_max=0)))
        assert gap(krylov(params, X, Y)[1], g_500) <= 1e-8 * scale
        tools["implicit GMRES"] = lambda: krylov(params, X, Y)
    med, ratio = measure(tools, rounds)
    peaks = {"implicit": peak_bytes(lambda: implicit(params, X, Y))}
    tapes = {"implicit": tape_bytes(loss_of(implicit_states()), params, X, Y)}
    if krylov is not None:
        peaks["implicit GMRES"] = peak_bytes(lambda: krylov(params, X, Y))
        tapes["implicit GMRES"] = tapes["implicit"]
    for k in ITERATIONS:
        peaks[f"unrolled {k}"] = peak_bytes(lambda k=k: unrolled[k](params, X, Y))
        tapes[f"unrolled {k}"] = tape_bytes(loss_of(unrolled_states(k)), params, X, Y)
    # the implicit node's memory does not depend on how many iterations the solve takes
    peaks_tol = {tol: peak_bytes(lambda tol=tol: ft.value_and_grad(
        loss_of(implicit_states(tol)))(params, X, Y)) for tol in (1e-4, 1e-12)}
    ratios = {f"{k} / unrolled 20": ratio(k, "unrolled 20") for k in tools
              if k != "unrolled 20"}
    # what one product of the adjoint's GMRES costs: a reverse sweep of F recorded
    # at a point (W a constant of that tape), beside numpy's Wᵀ w
    W, U, b, _ = params
    w = np.random.default_rng(1).standard_normal(n)
    with ft.Tape() as tape:
        # lean, as the solver's own tape of F (W's multipliers unread); the test lets the
        # script measure builds from before the attribute, for before/after runs
        if hasattr(tape, "lean_constants"):
            tape.lean_constants = True
        u = tape.var(np.zeros(n))
        out = layer(u.reshape(n, 1), W, U, b, X).reshape(n)
    product, pratio = measure({"reverse sweep of F": lambda: tape.backward(out, w),
                               "numpy W.T @ w": lambda: W.T @ w}, rounds)
    return {"n": n, "seconds": med, "ratios": ratios,
            "product seconds": product,
            "product ratio": pratio("reverse sweep of F", "numpy W.T @ w"),
            "gradient gap": {"implicit vs unrolled 500": gap(g_i, g_500),
                             "unrolled 20 vs unrolled 500": gap(g_u, g_500),
                             "largest gradient entry": scale},
            "peak bytes": peaks, "tape bytes": tapes,
            "implicit peak bytes by tol": {f"{k:g}": v for k, v in peaks_tol.items()}}


def report(results):
    lines = [f"fastape {ft.__version__}, numpy {np.__version__}, Python "
             f"{platform.python_version()}, BLAS threads 1; DENSE_MAX = "
             f"{ft.implicit.DENSE_MAX}"]
    for r in results:
        s = r["seconds"]
        lines.append(f"\nz of size {r['n']}:")
        lines.append("  gradient time: " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in s.items()))
        lines.append("    " + ", ".join(f"{k} = {v:.2f}" for k, v in r["ratios"].items())
                     + " (same-round medians)")
        ps = r["product seconds"]
        lines.append(f"  one product (w ↦ (∂F/∂z)ᵀ w): reverse sweep of F "
                     f"{ps['reverse sweep of F'] * 1e3:.3f} ms, numpy W.T @ w "
                     f"{ps['numpy W.T @ w'] * 1e3:.3f} ms (ratio {r['product ratio']:.2f})")
        gp = r["gradient gap"]
        lines.append("  max |gradient - unrolled 500's|: implicit "
                     f"{gp['implicit vs unrolled 500']:.1e}, unrolled 20 "
                     f"{gp['unrolled 20 vs unrolled 500']:.1e} (largest entry "
                     f"{gp['largest gradient entry']:.2g})")
        lines.append("  peak bytes (tracemalloc, one value-and-gradient call) / tape bytes "
                     "(Tape.nbytes, forward recording):")
        for k, v in r["peak bytes"].items():
            lines.append(f"    {k:12s} {v:>13,d}  {r['tape bytes'][k]:>13,d}")
        lines.append("  implicit peak by tol: " + ", ".join(
            f"{k}: {v:,d}" for k, v in r["implicit peak bytes by tol"].items()))
    return "\n".join(lines)


def crossover(sizes, rounds):
    """The dense and the GMRES adjoint side by side (the choice DENSE_MAX makes): the
    implicit gradient's time with each and its largest difference from 500 unrolled
    iterations, per size."""
    import time
    for n in sizes:
        params, X, Y = problem(n)
        tools = {"dense": ft.value_and_grad(loss_of(implicit_states(dense_max=10 ** 9))),
                 "gmres": ft.value_and_grad(loss_of(implicit_states(dense_max=0)))}
        g500 = ft.value_and_grad(loss_of(unrolled_states(500)))(params, X, Y)[1]
        times = {k: [] for k in tools}
        for _ in range(rounds):
            for k, vg in tools.items():
                t0 = time.perf_counter()
                vg(params, X, Y)
                times[k].append(time.perf_counter() - t0)
        errs = {k: max(float(np.max(np.abs(a - b))) for a, b in zip(vg(params, X, Y)[1], g500))
                for k, vg in tools.items()}
        print(f"z of size {n}: " + ", ".join(
            f"{k} {np.median(times[k]) * 1e3:.2f} ms (error {errs[k]:.1e})" for k in tools))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 2000])
    ap.add_argument("--json", default=None)
    ap.add_argument("--crossover", action="store_true",
                    help="time the dense and the GMRES adjoint at --sizes (DENSE_MAX's choice)")
    args = ap.parse_args(argv)
    if threadpool_limits is not None:
        threadpool_limits(1)
    if args.crossover:
        crossover(args.sizes, args.rounds)
        return None
    results = [case(n, args.rounds) for n in args.sizes]
    print(report(results))
    if args.json:
        write_json(args.json, args.rounds, results,
                   command=f"PYTHONPATH=src python benchmarks/bench_implicit.py "
                           f"--rounds {args.rounds} --json {args.json}")


if __name__ == "__main__":
    main()
