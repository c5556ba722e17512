"""L-BFGS-B on the Rosenbrock function written as a Python loop of scalar operations.

The loop is recorded once by fastape.compile; every iteration of the optimiser
replays the tape (forward + reverse sweep in compiled code) instead of running the
Python loop again. Compared with the same solve using finite-difference gradients.

    python examples/rosenbrock_lbfgs.py [n]
"""

import sys
import time

import numpy as np
from scipy.optimize import minimize

import fastape as ft


def rosenbrock(x):
    s = 0.0
    for i in range(len(x) - 1):
        s = s + 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2
    return s


def main(n=200):
    x0 = np.tile([-1.2, 1.0], n // 2)
    t0 = time.perf_counter()
    F = ft.compile(rosenbrock, x0)
    t_rec = time.perf_counter() - t0
    print(f"Rosenbrock, n = {n}: recorded {F.nodes} nodes in {t_rec * 1e3:.1f} ms")

    iters = []
    t0 = time.perf_counter()
    res = minimize(F.value_and_grad, x0, jac=True, method="L-BFGS-B",
                   callback=lambda xk: iters.append(F(xk)))
    t_ad = time.perf_counter() - t0
    for k in range(0, len(iters), max(1, len(iters) // 8)):
        print(f"  iteration {k + 1:4d}  f = {iters[k]:.6e}")
    print(f"fastape gradient:    {res.nit} iterations, f = {res.fun:.3e}, "
          f"{res.nfev} evaluations, {t_ad:.3f} s, |x - 1|_inf = {np.abs(res.x - 1).max():.1e}")

    t0 = time.perf_counter()
    res_fd = minimize(rosenbrock, x0, method="L-BFGS-B")        # finite differences
    t_fd = time.perf_counter() - t0
    print(f"finite differences:  {res_fd.nit} iterations, f = {res_fd.fun:.3e}, "
          f"{res_fd.nfev} evaluations, {t_fd:.3f} s, "
          f"|x - 1|_inf = {np.abs(res_fd.x - 1).max():.1e}")
    print(f"speed-up over finite differences: {t_fd / t_ad:.0f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
