"""Rosenbrock written as a Python loop of scalar operations, minimised three ways.

The loop is recorded once by fastape.compile; every evaluation the optimiser asks
for replays the tape (compiled sweeps, no Python per operation) instead of running
the Python loop again. The solves, from the standard start (-1.2, 1, -1.2, 1, ...):

* L-BFGS-B with fastape's gradient (``F.value_and_grad``);
* L-BFGS-B with scipy's finite-difference gradient of the Python loop;
* trust-krylov with fastape's gradient and its compiled Hessian-vector product
  (``F.hvp(x, v)``, forward over reverse).

Each solve reports its final f, the max-norm of the exact gradient there, its
iterations, evaluations and time. Times are compared only between solves that
reached the same accuracy (final f within 1e-8 of the best); a solve that stalled
is reported as such, with no ratio. BLAS is pinned to one thread (threadpoolctl if
installed, else OPENBLAS_NUM_THREADS/OMP_NUM_THREADS=1, set before numpy loads).

    python examples/rosenbrock_lbfgs.py [n]

(n ≥ 2 variables, default 200; fastape installed, or ``PYTHONPATH=src`` in a checkout
built in place.)
"""

import os
import sys
import time

try:
    import threadpoolctl
except ImportError:   # pin through the environment, which BLAS reads once, when loaded
    threadpoolctl = None
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"

import numpy as np  # noqa: E402  (after the thread settings, on purpose)
from scipy.optimize import minimize  # noqa: E402

import fastape as ft  # noqa: E402

SAME_F = 1e-8       # solves whose final f is within this of the best one are comparable


def rosenbrock(x):
    s = 0.0
    for i in range(len(x) - 1):
        s = s + 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2
    return s


def _pin_blas():
    """Pin BLAS to one thread; returns (context manager or None, a sentence saying how)."""
    if threadpoolctl is None:
        return None, ("BLAS threads: 1, through OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=1 "
                      "(threadpoolctl not installed)")
    ctl = threadpoolctl.threadpool_limits(limits=1)
    pools = sorted({p["internal_api"] for p in threadpoolctl.threadpool_info()}) or ["none"]
    return ctl, f"BLAS threads: 1, pinned by threadpoolctl ({', '.join(pools)})"


def _solve(name, run, F):
    t0 = time.perf_counter()
    res = run()
    elapsed = time.perf_counter() - t0
    evals = f"{res.nfev}"
    if getattr(res, "nhev", 0):
        evals += f" (+{res.nhev} Hv)"
    return {"name": name, "res": res, "time": elapsed, "evals": evals,
            "f": float(res.fun), "gnorm": float(np.abs(F.grad(res.x)).max())}


def report(solves):
    """The table of solves, then which ones are comparable: a speed ratio only between
    solves whose final f is within SAME_F of the best; the others are named as stalled
    (or stopped early, when scipy called it a success) with their final f."""
    best = min(s["f"] for s in solves)
    lines = [f"{'solve':<38} {'final f':>10} {'|grad f|_inf':>12} {'iter.':>6} "
             f"{'f evals':>14} {'time':>9}  scipy's success"]
    for s in solves:
        s["converged"] = s["f"] <= best + SAME_F
        lines.append(f"{s['name']:<38} {s['f']:10.3e} {s['gnorm']:12.2e} {s['res'].nit:6d} "
                     f"{s['evals']:>14} {s['time']:8.3f}s  {bool(s['res'].success)}")
    lines.append("(|grad f|_inf: fastape's exact gradient at each solve's final x; Hv: "
                 "Hessian-vector products)")
    lines.append("")
    for s in solves:
        if not s["converged"]:
            how = "stopped early" if s["res"].success else "stalled"
            lines.append(f"{s['name']}: {how} at f = {s['f']:.6g} after {s['res'].nit} "
                         f"iterations (scipy: {s['res'].message}); no speed comparison")
    done = [s for s in solves if s["converged"]]
    fastest = min(done, key=lambda s: s["time"])
    lines.append(f"reached f within {SAME_F:g} of the best ({best:.3e}): "
                 + "; ".join(s["name"] for s in done))
    for s in done:
        if s is not fastest:
            lines.append(f"  {fastest['name']}: {s['time'] / fastest['time']:.2g}x as fast "
                         f"as {s['name']}")
    return lines


def main(n=200):
    if n < 2:
        raise SystemExit(f"rosenbrock_lbfgs.py: n = {n}; Rosenbrock needs n >= 2 variables")
    ctl, pinned = _pin_blas()
    print(pinned)
    x0 = np.ones(n)
    x0[0::2] = -1.2
    t0 = time.perf_counter()
    F = ft.compile(rosenbrock, x0)
    t_rec = time.perf_counter() - t0
    print(f"Rosenbrock, n = {n}: recorded {F.nodes} nodes in {t_rec * 1e3:.1f} ms\n")

    solves = [
        _solve("L-BFGS-B, fastape gradient", lambda: minimize(
            F.value_and_grad, x0, jac=True, method="L-BFGS-B"), F),
        _solve("L-BFGS-B, finite differences", lambda: minimize(
            rosenbrock, x0, method="L-BFGS-B"), F),
        _solve("trust-krylov, fastape gradient + F.hvp", lambda: minimize(
            F.value_and_grad, x0, jac=True, hessp=F.hvp, method="trust-krylov"), F),
    ]
    if ctl is not None:
        ctl.restore_original_limits()

    for line in report(solves):
        print(line)
    return solves


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
