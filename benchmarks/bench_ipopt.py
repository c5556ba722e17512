"""Benchmark: IPOPT on the race car of examples/optimal_control_ipopt.py with fastape's
derivatives (fastape.optimize.minimize), beside CasADi's nlpsol('ipopt') on the same
problem built from the same Python functions as SX expressions.

For each N (default 1,000 and 10,000 RK4 steps; 3N + 3 variables, 3N + 1 constraints):

    hessian / gradient  the sparse Lagrangian Hessian σ∇²f + Σλᵢ∇²cᵢ as IPOPT gets it
                        (the hessian callback: values on IPOPT's fixed structure) over
                        one gradient of the Lagrangian σ∇f + Jᵀλ (the recorded scalar
                        Lagrangian's L.grad; also F.grad + C.vjp through the stacked
                        constraints), at the optimum with IPOPT's multipliers; also over
                        the constraints' value C(x)
    derivative share    a whole IPOPT solve: the time in fastape's gradient, Jacobian
                        and Hessian callbacks (timed inside them) over IPOPT's total
                        wall time (solve_seconds); the function values' share besides,
                        and the rest (IPOPT's own work and cyipopt's)
    vs CasADi           the same three derivatives' time in the same solve, beside
                        CasADi's t_wall_nlp_grad_f + t_wall_nlp_jac_g + t_wall_nlp_hess_l
                        (solver.stats()), in total and per call
    set-up              fastape: record (compile of the objective and the constraints)
                        + sparsity patterns + the first Jacobian and Hessian calls'
                        extra time over a later call (colorings are made on first use);
                        CasADi: the SX expression build + nlpsol creation

Each figure is the median over rounds, each ratio the median of per-round ratios (the
two tools interleaved in every round). BLAS on one thread.

    PYTHONPATH=src python benchmarks/bench_ipopt.py [--rounds 5] [--n 1000 10000]
        [--json benchmarks/results/ipopt.json] [--no-casadi]
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from fastape import optimize  # noqa: E402

try:
    from threadpoolctl import threadpool_limits  # noqa: E402
except ImportError:
    threadpool_limits = None

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("optimal_control_ipopt",
                                               ROOT / "examples" / "optimal_control_ipopt.py")
car = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(car)

DERIVATIVES = ("gradient", "jacobian", "hessian")


def _best_of(fun, *a, repeat=5):
    """min over `repeat` calls (one call is milliseconds: the minimum is its cost)."""
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fun(*a)
        best = min(best, time.perf_counter() - t0)
    return best


def fastape_round(N):
    """One round: set-up timed by parts, one IPOPT solve, per-call derivative times."""
    z0, lb, ub = car.start_and_bounds(N)
    constraints = [{"type": "eq", "fun": car.dynamics, "args": (N,)},
                   {"type": "ineq", "fun": car.speed_limit, "args": (N,)}]
    t0 = time.perf_counter()
    P = optimize._Problem(car.lap_time, z0, (), constraints)
    record = time.perf_counter() - t0
    I = optimize._Ipopt(P, optimize._Timer(), True, None)
    patterns = I.pattern_seconds
    lam = np.random.default_rng(0).normal(size=P.m)
    first_j = _best_of(I.jacobian, z0, repeat=1)          # makes the coloring
    first_h = _best_of(I.hessian, z0, lam, 1.0, repeat=1)
    later_j = _best_of(I.jacobian, z0)
    later_h = _best_of(I.hessian, z0, lam, 1.0)
    setup = record + patterns + max(first_j - later_j, 0.0) + max(first_h - later_h, 0.0)

    res = optimize.minimize(car.lap_time, z0, constraints=constraints,
                            bounds=list(zip(lb, ub)), method="ipopt")
    assert res.success, res.message
    x, lam = res.x, res.mult_g

    w = np.concatenate([[1.0], lam])
    hess = _best_of(I.hessian, x, lam, 1.0)
    grad = _best_of(P.L.grad, x, w)
    grad_stacked = _best_of(lambda x: P.F.grad(x) + P.C.vjp((x,), lam)[1], x)
    hvp = _best_of(P.L.hvp, (x, w), np.ones(x.size))
    lagrangian_value = _best_of(P.L, x, w)
    value = _best_of(P.C, x)
    deriv = sum(res.callback_seconds[k] for k in DERIVATIVES)
    values = res.callback_seconds["objective"] + res.callback_seconds["constraints"]
    return {
        "T": float(x[-1]), "iterations": int(res.nit), "nodes": int(P.C.nodes),
        "jacobian_nnz": len(I.j_rows), "hessian_nnz_lower": len(I.h_rows),
        "setup_s": setup, "record_s": record, "patterns_s": patterns,
        "first_call_extra_s": max(first_j - later_j, 0.0) + max(first_h - later_h, 0.0),
        "hessian_s": hess, "lagrangian_gradient_s": grad, "constraints_value_s": value,
        "stacked_gradient_s": grad_stacked, "lagrangian_hvp_s": hvp,
        "lagrangian_value_s": lagrangian_value, "lagrangian_nodes": int(P.L.nodes),
        "ipopt_own_s": res.solve_seconds - sum(res.callback_seconds.values()),
        "hessian_over_gradient": hess / grad, "hessian_over_value": hess / value,
        "solve_s": res.solve_seconds, "derivative_s": deriv, "values_s": values,
        "derivative_share": deriv / res.solve_seconds, "values_share": values / res.solve_seconds,
        "calls": {k: res.callback_calls[k] for k in DERIVATIVES},
        "per_call_s": {k: res.callback_seconds[k] / max(res.callback_calls[k], 1)
                       for k in DERIVATIVES},
    }


def casadi_round(N):
    import casadi as ca
    t0 = time.perf_counter()
    nlp, bounds = car.casadi_nlp(N)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    solver = ca.nlpsol("solver", "ipopt", nlp, {"print_time": False,
                                                "ipopt": {"print_level": 0, "sb": "yes"}})
    create = time.perf_counter() - t0
    t0 = time.perf_counter()
    sol = solver(**bounds)
    solve = time.perf_counter() - t0
    st = solver.stats()
    assert st["success"], st["return_status"]
    names = {"gradient": "nlp_grad_f", "jacobian": "nlp_jac_g", "hessian": "nlp_hess_l"}
    deriv = sum(st[f"t_wall_{v}"] for v in names.values())
    evals = deriv + st["t_wall_nlp_f"] + st["t_wall_nlp_g"]
    return {
        "T": float(np.asarray(sol["x"]).ravel()[-1]), "iterations": int(st["iter_count"]),
        "setup_s": build + create, "build_s": build, "nlpsol_s": create, "solve_s": solve,
        "derivative_s": deriv, "derivative_share": deriv / solve,
        "ipopt_own_s": solve - evals,
        "calls": {k: int(st[f"n_call_{v}"]) for k, v in names.items()},
        "per_call_s": {k: st[f"t_wall_{v}"] / max(st[f"n_call_{v}"], 1)
                       for k, v in names.items()},
    }


def _median(rows, key):
    return float(np.median([r[key] for r in rows]))


def case(N, rounds, use_casadi):
    fa, ca_ = [], []
    for _ in range(rounds):
        fa.append(fastape_round(N))
        if use_casadi:
            ca_.append(casadi_round(N))
    out = {"N": N, "variables": 3 * N + 3, "constraints": 3 * N + 1, "rounds": rounds,
           "fastape": {k: _median(fa, k) for k in fa[0] if not isinstance(fa[0][k], dict)},
           "fastape_calls": fa[0]["calls"]}
    out["fastape"]["per_call_s"] = {k: float(np.median([r["per_call_s"][k] for r in fa]))
                                    for k in DERIVATIVES}
    if use_casadi:
        out["casadi"] = {k: _median(ca_, k) for k in ca_[0] if not isinstance(ca_[0][k], dict)}
        out["casadi_calls"] = ca_[0]["calls"]
        out["casadi"]["per_call_s"] = {k: float(np.median([r["per_call_s"][k] for r in ca_]))
                                       for k in DERIVATIVES}
        pair = list(zip(fa, ca_))
        out["ratios"] = {
            "casadi_derivative_over_fastape": float(np.median(
                [c["derivative_s"] / f["derivative_s"] for f, c in pair])),
            "casadi_setup_over_fastape": float(np.median(
                [c["setup_s"] / f["setup_s"] for f, c in pair])),
            "casadi_solve_over_fastape": float(np.median(
                [c["solve_s"] / f["solve_s"] for f, c in pair])),
            "casadi_ipopt_own_over_fastape": float(np.median(
                [c["ipopt_own_s"] / f["ipopt_own_s"] for f, c in pair])),
            **{f"casadi_{k}_per_call_over_fastape": float(np.median(
                [c["per_call_s"][k] / f["per_call_s"][k] for f, c in pair]))
               for k in DERIVATIVES},
        }
        out["T_difference"] = max(abs(f["T"] - c["T"]) for f, c in pair)
    return out


def report(r):
    f = r["fastape"]
    lines = [f"\nrace car N = {r['N']} ({r['variables']} variables, {r['constraints']} "
             f"constraints; {int(f['nodes'])} constraint nodes, Jacobian {int(f['jacobian_nnz'])}"
             f" nonzeros, Hessian {int(f['hessian_nnz_lower'])} in the lower triangle)",
             f"  T = {f['T']:.6f}, {int(f['iterations'])} IPOPT iterations",
             f"  Lagrangian Hessian {f['hessian_s'] * 1e3:.3f} ms = "
             f"{f['hessian_over_gradient']:.2f}x one Lagrangian gradient "
             f"({f['lagrangian_gradient_s'] * 1e3:.3f} ms; through the stacked constraints "
             f"{f['stacked_gradient_s'] * 1e3:.3f} ms), {f['hessian_over_value']:.1f}x the "
             f"constraints' value ({f['constraints_value_s'] * 1e3:.3f} ms); one L.hvp "
             f"{f['lagrangian_hvp_s'] * 1e3:.3f} ms; L's value {f['lagrangian_value_s'] * 1e3:.3f}"
             f" ms ({int(f['lagrangian_nodes'])} nodes)",
             f"  IPOPT solve {f['solve_s']:.3f} s: derivatives {f['derivative_s']:.3f} s "
             f"({100 * f['derivative_share']:.1f} %), values {f['values_s']:.3f} s "
             f"({100 * f['values_share']:.1f} %), IPOPT and cyipopt themselves "
             f"{f['ipopt_own_s']:.3f} s",
             f"  set-up {f['setup_s'] * 1e3:.1f} ms (record {f['record_s'] * 1e3:.1f}, "
             f"patterns {f['patterns_s'] * 1e3:.1f}, first-call colorings "
             f"{f['first_call_extra_s'] * 1e3:.1f})"]
    if "casadi" in r:
        c, q = r["casadi"], r["ratios"]
        lines += [
            f"  CasADi: T = {c['T']:.6f} ({int(c['iterations'])} iterations; |dT| "
            f"{r['T_difference']:.1e}), solve {c['solve_s']:.3f} s, derivatives "
            f"{c['derivative_s']:.3f} s ({100 * c['derivative_share']:.1f} %), IPOPT itself "
            f"{c['ipopt_own_s']:.3f} s ({q['casadi_ipopt_own_over_fastape']:.2f}x fastape's)",
            f"  derivatives: CasADi / fastape = {q['casadi_derivative_over_fastape']:.2f}x "
            "(per call: " + ", ".join(
                f"{k} {c['per_call_s'][k] * 1e3:.3f} / {f['per_call_s'][k] * 1e3:.3f} ms = "
                f"{q[f'casadi_{k}_per_call_over_fastape']:.2f}x" for k in DERIVATIVES) + ")",
            f"  set-up: CasADi {c['setup_s']:.3f} s (SX build {c['build_s']:.3f}, nlpsol "
            f"{c['nlpsol_s']:.3f}) = {q['casadi_setup_over_fastape']:.1f}x fastape's; whole "
            f"solve CasADi / fastape {q['casadi_solve_over_fastape']:.2f}x"]
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--no-casadi", action="store_true", help="skip CasADi")
    args = ap.parse_args(argv)
    optimize._import_cyipopt()
    use_casadi = not args.no_casadi and importlib.util.find_spec("casadi") is not None
    limit = threadpool_limits(1) if threadpool_limits else None
    try:
        results = [case(N, args.rounds, use_casadi) for N in args.n]
    finally:
        if limit is not None:
            limit.unregister()
    print(f"IPOPT with fastape's derivatives, median of {args.rounds} rounds, BLAS on 1 thread"
          + ("" if use_casadi else " (casadi not installed: no comparison)"))
    for r in results:
        print("\n".join(report(r)))
    if args.json:
        import cyipopt
        casadi = importlib.import_module("casadi") if use_casadi else None
        out = {"python": sys.version.split()[0], "machine": platform.machine(),
               "numpy": np.__version__, "cyipopt": cyipopt.__version__,
               "ipopt": ".".join(map(str, cyipopt.IPOPT_VERSION)),
               "casadi": casadi.__version__ if casadi else None,
               "command": "PYTHONPATH=src python benchmarks/bench_ipopt.py " + " ".join(
                   argv if argv is not None else sys.argv[1:]),
               "rounds": args.rounds, "results": results}
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return results


if __name__ == "__main__":
    main()
