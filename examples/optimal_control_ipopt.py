"""A race car's minimum-time lap, discretised into N steps, solved by IPOPT.

The car (position p, speed s, throttle u in [0, 1]) obeys p' = s, s' = u - s and
must stay under the speed limit s <= 1 - sin(2 pi p) / 2; it starts at rest at
p = 0 and must reach p = 1 in the least time T (CasADi's race-car example). Direct
multiple shooting: one RK4 step per interval as a Python loop of scalar operations,
the dynamics as N x 2 equality constraints, the speed limit as N + 1 inequality
constraints, the throttle and the end points as bounds. ``fastape.optimize.minimize``
records the objective and the constraints once and gives IPOPT the compiled
gradient, the sparse constraint Jacobian and the sparse Lagrangian Hessian.

The same problem is then solved by CasADi's ``nlpsol('ipopt')`` (its SX expression
graph, built from the same Python functions) when casadi is installed, and the two
optimal times and trajectories are compared.

    python examples/optimal_control_ipopt.py [N]

(N steps, default 1000; needs cyipopt: ``pip install 'fastape[ipopt]'``.)
"""

import sys
import time

import numpy as np

from fastape.optimize import minimize


def layout(N):
    """Slices of the variable vector z = (p_0..p_N, s_0..s_N, u_0..u_{N-1}, T)."""
    return slice(0, N + 1), slice(N + 1, 2 * N + 2), slice(2 * N + 2, 3 * N + 2), 3 * N + 2


def lap_time(z):
    return z[len(z) - 1]


def _ode(p, s, u):
    return s, u - s


def dynamics(z, N, sin=np.sin):
    """RK4 defects: for each step k, the state after one RK4 step minus (p_{k+1}, s_{k+1})."""
    dt = z[3 * N + 2] / N
    out = []
    for k in range(N):
        p, s, u = z[k], z[N + 1 + k], z[2 * N + 2 + k]
        k1p, k1s = _ode(p, s, u)
        k2p, k2s = _ode(p + 0.5 * dt * k1p, s + 0.5 * dt * k1s, u)
        k3p, k3s = _ode(p + 0.5 * dt * k2p, s + 0.5 * dt * k2s, u)
        k4p, k4s = _ode(p + dt * k3p, s + dt * k3s, u)
        out.append(p + dt / 6.0 * (k1p + 2.0 * k2p + 2.0 * k3p + k4p) - z[k + 1])
        out.append(s + dt / 6.0 * (k1s + 2.0 * k2s + 2.0 * k3s + k4s) - z[N + 2 + k])
    return out


def speed_limit(z, N, sin=np.sin):
    """1 - sin(2 pi p_k) / 2 - s_k >= 0 at every node."""
    return [1.0 - 0.5 * sin(2.0 * np.pi * z[k]) - z[N + 1 + k] for k in range(N + 1)]


def start_and_bounds(N):
    """The initial guess (speed 1, T = 1, p linear) and the bounds (lb, ub)."""
    P, S, U, T = layout(N)
    z0 = np.zeros(3 * N + 3)
    z0[P] = np.linspace(0.0, 1.0, N + 1)
    z0[S] = 1.0
    z0[U] = 0.5
    z0[T] = 1.0
    lb = np.full(z0.size, -np.inf)
    ub = np.full(z0.size, np.inf)
    lb[U], ub[U] = 0.0, 1.0
    lb[T] = 0.0
    lb[0] = ub[0] = 0.0                  # p_0 = 0
    lb[N] = ub[N] = 1.0                  # p_N = 1
    lb[N + 1] = ub[N + 1] = 0.0          # s_0 = 0
    return z0, lb, ub


def solve_fastape(N, options=None):
    z0, lb, ub = start_and_bounds(N)
    constraints = [{"type": "eq", "fun": dynamics, "args": (N,)},
                   {"type": "ineq", "fun": speed_limit, "args": (N,)}]
    return minimize(lap_time, z0, constraints=constraints, bounds=list(zip(lb, ub)),
                    method="ipopt", options=options)


def casadi_nlp(N):
    """The same NLP as CasADi SX expressions (the same Python functions, CasADi's sin)."""
    import casadi as ca
    z = ca.SX.sym("z", 3 * N + 3)
    zs = [z[i] for i in range(3 * N + 3)]
    g = ca.vertcat(*dynamics(zs, N, sin=ca.sin), *speed_limit(zs, N, sin=ca.sin))
    z0, lb, ub = start_and_bounds(N)
    cl = np.concatenate([np.zeros(2 * N), np.zeros(N + 1)])
    cu = np.concatenate([np.zeros(2 * N), np.full(N + 1, np.inf)])
    return {"x": z, "f": zs[-1], "g": g}, dict(x0=z0, lbx=lb, ubx=ub, lbg=cl, ubg=cu)


def solve_casadi(N, options=None):
    import casadi as ca
    nlp, bounds = casadi_nlp(N)
    solver = ca.nlpsol("solver", "ipopt", nlp, {"print_time": False,
                                                "ipopt": {"print_level": 0, "sb": "yes",
                                                          **(options or {})}})
    sol = solver(**bounds)
    return np.asarray(sol["x"]).ravel(), solver.stats()


def main(N):
    t0 = time.perf_counter()
    res = solve_fastape(N)
    elapsed = time.perf_counter() - t0
    P, S, U, T = layout(N)
    deriv = sum(res.callback_seconds[k] for k in ("gradient", "jacobian", "hessian"))
    print(f"race car, N = {N} steps ({res.x.size} variables, {res.constr.size} constraints)")
    print(f"fastape + IPOPT: {res.message}")
    print(f"  lap time T = {res.x[T]:.6f}, {res.nit} iterations, max constraint violation "
          f"{res.constr_violation:.1e}")
    print(f"  {elapsed:.2f} s in all: set-up (record + patterns) {res.setup_seconds:.3f} s, "
          f"solve {res.solve_seconds:.2f} s, of which derivatives {deriv:.3f} s "
          f"({100 * deriv / res.solve_seconds:.0f} %)")
    if not res.success:
        sys.exit("IPOPT did not converge")
    try:
        import casadi  # noqa: F401
    except ImportError:
        print("casadi not installed: no comparison")
        return
    t0 = time.perf_counter()
    zc, stats = solve_casadi(N)
    print(f"CasADi nlpsol('ipopt'): {stats['return_status']}, T = {zc[T]:.6f}, "
          f"{stats['iter_count']} iterations, {time.perf_counter() - t0:.2f} s")
    dT = abs(zc[T] - res.x[T])
    print(f"  |T_fastape - T_casadi| = {dT:.1e}, max |speed difference| = "
          f"{np.abs(zc[S] - res.x[S]).max():.1e}")
    if dT > 1e-6 * max(1.0, abs(zc[T])):
        sys.exit("the two solutions differ")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
