"""The steady state of a small nonlinear reaction network and its sensitivity to the
rate constants, by ``fastape.root`` (Newton on the rate equations) and the implicit
function theorem; compared with integrating the rate equations to steady state
(scipy's solve_ivp) and finite differences of that.

A stirred tank fed with A (inflow rate q, feed concentration a_in), everything
leaving at rate q, with the reactions

    A -> B (k1),   B -> A (k2),   B + B -> C (k3)

    dA/dt = q (a_in − A) − k1 A + k2 B
    dB/dt = −q B + k1 A − k2 B − 2 k3 B²
    dC/dt = −q C + k3 B²

The steady state x*(k) solves G(x, k) = 0; its sensitivities ∂x*/∂k are
−(∂G/∂x)⁻¹ ∂G/∂k, here the Jacobian of ``root`` by forward mode (one tangent solve per
rate constant), printed as normalised coefficients (k_j / x_i) ∂x_i/∂k_j.

    python examples/reaction_steady_state.py
"""

import numpy as np
import scipy.integrate

import fastape as ft

Q, A_IN = 0.5, 2.0
NAMES = ("A", "B", "C")


def rates(x, k):
    """dx/dt at concentrations x for rate constants k = (k1, k2, k3)."""
    A, B, C = x[0], x[1], x[2]
    return np.stack([Q * (A_IN - A) - k[0] * A + k[1] * B,
                     -Q * B + k[0] * A - k[1] * B - 2 * k[2] * B * B,
                     -Q * C + k[2] * B * B])


def steady_state(k):
    return ft.root(rates, np.array([A_IN, 0.0, 0.0]), k, tol=1e-13)


def integrated_steady_state(k, t_end=400.0):
    """The alternative: integrate the rate equations from the feed to t_end."""
    sol = scipy.integrate.solve_ivp(lambda t, x: rates(x, k), (0.0, t_end),
                                    [A_IN, 0.0, 0.0], method="LSODA", rtol=1e-12,
                                    atol=1e-14)
    return sol.y[:, -1]


def main():
    k = np.array([1.0, 0.3, 0.8])
    x = steady_state(k)
    x_ode = integrated_steady_state(k)
    print("steady state  " + "  ".join(f"{n} = {v:.10f}" for n, v in zip(NAMES, x)))
    print(f"max |x (root) - x (solve_ivp to t = 400)| = {np.max(np.abs(x - x_ode)):.1e}, "
          f"max |G(x)| = {np.max(np.abs(rates(x, k))):.1e}")
    S = ft.jacfwd(steady_state)(k)                  # ∂x*/∂k, one tangent solve per k_j
    S_rev = ft.jacrev(steady_state)(k)              # one adjoint solve per x_i
    h = 1e-6
    S_fd = np.stack([(integrated_steady_state(k + h * e) - integrated_steady_state(k - h * e))
                     / (2 * h) for e in np.eye(3)], axis=1)
    print("normalised sensitivities (k_j / x_i) dx_i/dk_j:")
    print("        " + "".join(f"{'k' + str(j + 1):>12s}" for j in range(3)))
    for i, n in enumerate(NAMES):
        print(f"  {n}     " + "".join(f"{S[i, j] * k[j] / x[i]:12.6f}" for j in range(3)))
    assert np.max(np.abs(x - x_ode)) < 1e-9 and np.max(np.abs(S - S_fd)) < 1e-6
    assert np.max(np.abs(S - S_rev)) < 1e-12
    print(f"max |forward - reverse mode| = {np.max(np.abs(S - S_rev)):.1e}; "
          f"max |implicit - finite differences of solve_ivp| = {np.max(np.abs(S - S_fd)):.1e}")


if __name__ == "__main__":
    main()
