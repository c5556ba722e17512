"""Benchmark: sparse Hessians and Jacobians of compiled functions (fastape.sparse)
against one gradient of the same function, in the same run.

    banded       a scalar-loop objective whose Hessian has half-bandwidth b (b = 1:
                 the chained Rosenbrock, tridiagonal; b = 2: each x_i coupled to
                 x_{i+1} and x_{i+2}), n = 1,000 and 10,000: F.sparse_hessian(x)
                 against F.value_and_grad(x) (and F.hessian(x), dense, at n = 1,000)
    control      the dynamics of a discretised double integrator with drag and a
                 sin(x) force (x_{k+1} = x_k + h v_k, v_{k+1} = v_k + h (u_k - 0.1 v_k²
                 + sin x_k)) as 2N equality constraints on 3N + 2 variables, a Python
                 loop of scalar ops returned by ft.stack, N = 1,000 and 10,000:
                 F.sparse_jacobian(z) and F.sparse_hessian(z, v=λ) (the constraints'
                 Lagrangian Hessian) against one vjp (the gradient of λᵀc)
    objective    Σ u_k² + 0.1 cos(x_k) u_k over slices x = z[:N+1], u = z[2N+2:], N =
                 10,000 (slices read element by element: pruned to scalar inputs, the
                 scalar layout, the Hessian by the direct sweep)
    scale        the control dynamics with N = 33,000 (660,005 nodes, 99,002 inputs):
                 set-up times and the peak memory of the index sets

Every sparse result is checked before timing: against the dense Hessian or Jacobian
at n = 1,000, against F.hvp / F.jvp along a random direction at 10,000. Set-up times
(record, pattern, coloring, the first call) are one-shot; the per-call figures are
medians over rounds (the tools interleaved) and each ratio the median of per-round
ratios (bench_forward.measure). BLAS on one thread.

    PYTHONPATH=src python benchmarks/bench_sparse.py [--rounds 9] [--json PATH]
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_forward import measure, rosen_loop, threadpool_limits, write_json  # noqa: E402

import fastape as ft  # noqa: E402
from fastape import sparse as fs  # noqa: E402


def banded2(x):
    """Each x_i coupled to x_{i+1} and x_{i+2}: a pentadiagonal Hessian."""
    s = 0.0
    for i in range(len(x) - 2):
        s = s + (x[i] - x[i + 1] ** 2) ** 2 + 0.5 * (x[i] * x[i + 2] - 1.0) ** 2
    return s


def control(N):
    h = 1.0 / N

    def dynamics(z):
        x, v, u = z[: N + 1], z[N + 1: 2 * (N + 1)], z[2 * (N + 1):]
        out = []
        for k in range(N):
            out.append(x[k + 1] - x[k] - h * v[k])
            out.append(v[k + 1] - v[k] - h * (u[k] - 0.1 * v[k] * v[k] + ft.sin(x[k])))
        return ft.stack(out)
    return dynamics


def _once(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def case_banded(rounds, n, b):
    rng = np.random.default_rng(n + b)
    x = rng.uniform(-1.0, 1.0, n)
    f = rosen_loop if b == 1 else banded2
    F, t_record = _once(lambda: ft.compile(f, x))
    P, t_pattern = _once(F.hessian_sparsity)
    colors, t_color = _once(lambda: fs.color_symmetric(P))
    _, t_first = _once(lambda: F.sparse_hessian(x))
    H = F.sparse_hessian(x)
    if n <= 2000:
        np.testing.assert_allclose(H.toarray(), F.hessian(x), rtol=1e-12, atol=1e-10)
    d = rng.standard_normal(n)
    np.testing.assert_allclose(H @ d, F.hvp(x, d), rtol=1e-10, atol=1e-8)
    tools = {"value+grad": lambda: F.value_and_grad(x),
             "sparse_hessian": lambda: F.sparse_hessian(x)}
    if n <= 2000:
        tools["dense hessian"] = lambda: F.hessian(x)
    med, ratio = measure(tools, rounds)
    ratios = {"sparse_hessian / value+grad": ratio("sparse_hessian", "value+grad")}
    if "dense hessian" in tools:
        ratios["dense hessian / sparse_hessian"] = ratio("dense hessian", "sparse_hessian")
    return {"key": f"banded{b}_{n}", "title": f"banded scalar loop, half-bandwidth {b}, "
            f"n = {n}", "nodes": F.nodes, "nnz": int(P.nnz), "colors": int(colors.max() + 1),
            "setup_seconds": {"record": t_record, "hessian_sparsity": t_pattern,
                              "color_symmetric": t_color, "first sparse_hessian": t_first},
            "seconds": med, "ratios": ratios}


def case_control(rounds, N):
    rng = np.random.default_rng(N)
    n = 3 * N + 2
    z = rng.uniform(-1.0, 1.0, n)
    lam = rng.standard_normal(2 * N)
    C, t_record = _once(lambda: ft.compile(control(N), z))
    PJ, t_jpat = _once(C.jacobian_sparsity)
    PH, t_hpat = _once(C.hessian_sparsity)
    _, t_first_j = _once(lambda: C.sparse_jacobian(z))
    _, t_first_h = _once(lambda: C.sparse_hessian(z, v=lam))
    J = C.sparse_jacobian(z)
    H = C.sparse_hessian(z, v=lam)
    d = rng.standard_normal(n)
    np.testing.assert_allclose(J @ d, C.jvp(z, d)[1], rtol=1e-12, atol=1e-12)
    if N <= 2000:
        np.testing.assert_allclose(J.toarray(), C.jacobian(z), rtol=1e-13, atol=1e-14)
    L = ft.compile(lambda w: ft.sum(control(N)(w) * lam), z)
    np.testing.assert_allclose(H @ d, L.hvp(z, d), rtol=1e-10, atol=1e-10)
    st = fs._state(C)
    tools = {"vjp": lambda: C.vjp(z, lam), "sparse_jacobian": lambda: C.sparse_jacobian(z),
             "sparse_hessian(v)": lambda: C.sparse_hessian(z, v=lam)}
    med, ratio = measure(tools, rounds)
    return {"key": f"control_{N}", "title": f"control dynamics, N = {N} ({2 * N} "
            f"constraints, {n} variables)", "nodes": C.nodes,
            "jacobian_nnz": int(PJ.nnz), "jacobian_colors": st.jac.ncolors,
            "hessian_nnz": int(PH.nnz), "hessian_colors": st.hess.ncolors,
            "setup_seconds": {"record": t_record, "jacobian_sparsity": t_jpat,
                              "hessian_sparsity": t_hpat,
                              "first sparse_jacobian": t_first_j,
                              "first sparse_hessian (compiles the scalar replay)":
                              t_first_h},
            "seconds": med,
            "ratios": {"sparse_jacobian / vjp": ratio("sparse_jacobian", "vjp"),
                       "sparse_hessian(v) / vjp": ratio("sparse_hessian(v)", "vjp")}}


def objective(N):
    def f(z):
        x, u = z[: N + 1], z[2 * (N + 1):]
        s = 0.0
        for k in range(N):
            s = s + u[k] ** 2 + 0.1 * ft.cos(x[k]) * u[k]
        return s
    return f


def case_objective(rounds, N):
    """A scalar objective over slices of z read element by element (pruned to scalar
    inputs: the scalar layout, its Hessian by the direct sweep)."""
    rng = np.random.default_rng(N + 7)
    n = 3 * N + 2
    z = rng.uniform(-1.0, 1.0, n)
    F, t_record = _once(lambda: ft.compile(objective(N), z))
    P, t_pattern = _once(F.hessian_sparsity)
    _, t_first = _once(lambda: F.sparse_hessian(z))
    H = F.sparse_hessian(z)
    d = rng.standard_normal(n)
    np.testing.assert_allclose(H @ d, F.hvp(z, d), rtol=1e-10, atol=1e-10)
    tools = {"value+grad": lambda: F.value_and_grad(z),
             "sparse_hessian": lambda: F.sparse_hessian(z)}
    med, ratio = measure(tools, rounds)
    return {"key": f"objective_{N}", "title": f"objective over slices, N = {N}",
            "nodes": F.nodes, "nnz": int(P.nnz),
            "colors": int(fs._state(F).hess.ncolors),
            "setup_seconds": {"record": t_record, "hessian_sparsity": t_pattern,
                              "first sparse_hessian": t_first},
            "seconds": med,
            "ratios": {"sparse_hessian / value+grad": ratio("sparse_hessian", "value+grad")}}


def case_scale(N):
    """Set-up at scale: the control dynamics with N steps (≈ 20 N nodes, 3 N inputs):
    record, patterns and the peak bytes of index sets the propagation held at once,
    against the nodes × inputs / 8 bytes that bit vectors per node would take."""
    from fastape import _sparsity
    n = 3 * N + 2
    z = np.random.default_rng(N).uniform(-1.0, 1.0, n)
    C, t_record = _once(lambda: ft.compile(control(N), z))
    PJ, t_jpat = _once(C.jacobian_sparsity)
    peak_j = _sparsity.peak_set_bytes()
    PH, t_hpat = _once(C.hessian_sparsity)
    peak_h = _sparsity.peak_set_bytes()
    return {"key": f"scale_{N}", "title": f"set-up at scale: control dynamics, N = {N}",
            "nodes": C.nodes, "inputs": n, "jacobian_nnz": int(PJ.nnz),
            "hessian_nnz": int(PH.nnz),
            "setup_seconds": {"record": t_record, "jacobian_sparsity": t_jpat,
                              "hessian_sparsity": t_hpat},
            "peak_set_bytes": {"jacobian_sparsity": peak_j, "hessian_sparsity": peak_h,
                               "bit vectors (nodes x inputs / 8)": C.nodes * n // 8},
            "tape_bytes": C.nbytes, "seconds": {}, "ratios": {}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--scale", type=int, default=33_000,
                    help="steps of the set-up-at-scale case (default 33,000: 660,005 nodes)")
    args = ap.parse_args(argv)
    if args.rounds < 7:
        ap.error("--rounds must be at least 7 (the medians need them)")
    limit = threadpool_limits(1) if threadpool_limits else None
    try:
        results = [case_banded(args.rounds, n, b) for n in (1_000, 10_000) for b in (1, 2)]
        results += [case_control(args.rounds, N) for N in (1_000, 10_000)]
        results.append(case_objective(args.rounds, 10_000))
        results.append(case_scale(args.scale))
    finally:
        if limit is not None:
            limit.unregister()
    print(f"fastape sparse derivatives, median of {args.rounds} rounds, BLAS on 1 thread")
    for r in results:
        info = {k: v for k, v in r.items() if k.endswith(("nnz", "colors"))}
        print(f"\n{r['title']} ({r['nodes']} nodes; {info})")
        for k, s in r["setup_seconds"].items():
            print(f"  set-up {k:<50} {s * 1e3:10.2f} ms")
        for k, b in r.get("peak_set_bytes", {}).items():
            print(f"  peak index sets, {k:<41} {b / 1e6:10.2f} MB")
        for k, s in r["seconds"].items():
            print(f"  {k:<57} {s * 1e6:10.1f} µs")
        for k, q in r["ratios"].items():
            print(f"  {k:<57} {q:10.2f}x")
    if args.json:
        write_json(args.json, args.rounds, results)
    return results


if __name__ == "__main__":
    main()
