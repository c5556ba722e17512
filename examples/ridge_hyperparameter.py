"""Bilevel optimisation: the ridge regularisation strength that minimises the
validation loss, by gradient descent through the solution of the normal equations.

Inner problem: w(λ) = argmin ‖X w − y‖² + λ ‖w‖², i.e. (XᵀX + λ I) w = Xᵀy, solved by
``fastape.linear_solve`` with the operator ``w ↦ XᵀX w + λ w`` (it closes over λ).
Outer problem: minimise the validation loss ‖X_v w(λ) − y_v‖² over log λ. The
gradient goes through the solve by one adjoint solve with the transposed operator,
and is compared with the closed form dw/dλ = −(XᵀX + λI)⁻¹ w and with central
differences; the optimum is compared with a grid search.

    python examples/ridge_hyperparameter.py
"""

import numpy as np

import fastape as ft


def data(n=40, n_val=200, d=30, seed=0):
    """A regression with more features than the training set supports well."""
    rng = np.random.default_rng(seed)
    w_true = rng.standard_normal(d) * (rng.random(d) < 0.3)
    X, Xv = rng.standard_normal((n, d)), rng.standard_normal((n_val, d))
    return X, X @ w_true + 0.5 * rng.standard_normal(n), Xv, \
        Xv @ w_true + 0.5 * rng.standard_normal(n_val)


def validation_loss(log_lam, X, y, Xv, yv):
    lam = np.exp(log_lam)
    w = ft.linear_solve(lambda w: X.T @ (X @ w) + lam * w, X.T @ y)
    r = Xv @ w - yv
    return np.mean(r * r)


def closed_form_gradient(log_lam, X, y, Xv, yv):
    """d/d log λ of the validation loss by hand: dw/dλ = −K⁻¹ w, K = XᵀX + λI."""
    lam = np.exp(log_lam)
    K = X.T @ X + lam * np.eye(X.shape[1])
    w = np.linalg.solve(K, X.T @ y)
    r = Xv @ w - yv
    return 2 * np.mean(r * (Xv @ -np.linalg.solve(K, w))) * lam


def main():
    X, y, Xv, yv = data()
    args = (X, y, Xv, yv)
    vg = ft.value_and_grad(validation_loss)
    t = 3.0                                     # start at λ = e³ ≈ 20
    _, g = vg(t, *args)
    h = 1e-5
    fd = (validation_loss(t + h, *args) - validation_loss(t - h, *args)) / (2 * h)
    exact = closed_form_gradient(t, *args)
    assert abs(g - exact) <= 1e-10 * abs(exact) and abs(g - fd) <= 1e-6 * abs(exact)
    print(f"d loss / d log λ at log λ = {t}: fastape {g:.12f}, closed form "
          f"{exact:.12f}, finite differences {fd:.12f}")
    # gradient descent on log λ with a backtracking step
    step = 1.0
    value, g = vg(t, *args)
    steps = 0
    while steps < 100 and abs(g) >= 1e-7:
        steps += 1
        trial = t - step * g
        v_new, g_new = vg(trial, *args)
        if v_new < value:
            t, value, g = trial, v_new, g_new
            step *= 1.5
        else:
            step *= 0.5
    grid = np.linspace(-8, 8, 1601)
    losses = [validation_loss(s, *args) for s in grid]
    best = grid[int(np.argmin(losses))]
    print(f"gradient descent: λ = {np.exp(t):.6g} (log λ {t:.4f}), validation loss "
          f"{value:.6f}, |gradient| {abs(g):.1e} after {steps} steps")
    print(f"grid search (1601 points): λ = {np.exp(best):.6g} (log λ {best:.4f}), "
          f"validation loss {min(losses):.6f}")
    assert abs(t - best) <= 0.01 and value <= min(losses)
    print(f"|log λ (descent) - log λ (grid)| = {abs(t - best):.4f} (grid spacing 0.01)")


if __name__ == "__main__":
    main()
