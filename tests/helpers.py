"""Independent numerical checks shared by the tests."""

import numpy as np


def central_diff(f, args, argnum, h=1e-6):
    """Central finite differences of scalar f with respect to args[argnum] (a float or an
    array), evaluated with plain numpy values: an independent check of the tape."""
    x = np.array(args[argnum], dtype=float)
    g = np.zeros_like(x)
    flat, gf = x.reshape(-1), g.reshape(-1)
    for j in range(flat.size):
        step = h * max(1.0, abs(flat[j]))
        old = flat[j]
        flat[j] = old + step
        fp = f(*[x.copy() if i == argnum else a for i, a in enumerate(args)])
        flat[j] = old - step
        fm = f(*[x.copy() if i == argnum else a for i, a in enumerate(args)])
        flat[j] = old
        gf[j] = (fp - fm) / (2 * step)
    return g if g.ndim else float(g)


def fd_jacobian(f, x, h=1e-6):
    """Central differences of the plain numpy function f at x: the Jacobian of its
    flattened output, one column per element of x (an independent check)."""
    x = np.asarray(x, dtype=float)
    cols = []
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = h * max(1.0, abs(x[j]))
        cols.append((np.asarray(f(x + e)) - np.asarray(f(x - e))).reshape(-1) / (2 * e[j]))
    return np.stack(cols, axis=1)


def ridders_diff(f, x, h=0.1, steps=10):
    """Derivative of scalar f at float x by Ridders' extrapolation of central differences
    (Numerical Recipes §5.7): returns (estimate, error estimate). Far more accurate than
    one central difference where higher derivatives are large."""
    a = [[0.0] * steps for _ in range(steps)]
    a[0][0] = (f(x + h) - f(x - h)) / (2 * h)
    best, err = a[0][0], float("inf")
    for i in range(1, steps):
        h /= 1.4
        a[0][i] = (f(x + h) - f(x - h)) / (2 * h)
        fac = 1.4 ** 2
        for j in range(1, i + 1):
            a[j][i] = (a[j - 1][i] * fac - a[j - 1][i - 1]) / (fac - 1)
            fac *= 1.4 ** 2
            e = max(abs(a[j][i] - a[j - 1][i]), abs(a[j][i] - a[j - 1][i - 1]))
            if e <= err:
                err, best = e, a[j][i]
        if abs(a[i][i] - a[i - 1][i - 1]) >= 2 * err:
            break
    return best, err


def rosenbrock(x):
    """The chained Rosenbrock function as a Python loop of scalar operations."""
    s = 0.0
    for i in range(len(x) - 1):
        s = s + 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2
    return s


def rosenbrock_grad(x):
    """Its gradient, derived by hand."""
    x = np.asarray(x)
    g = np.zeros_like(x)
    g[:-1] = -400 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2 * (1 - x[:-1])
    g[1:] += 200 * (x[1:] - x[:-1] ** 2)
    return g


def assert_refused(call, x0, exc, words):
    """grad of sum(call(x)) at x0 raises exc whose message holds every one of words,
    and x0 is left as it was."""
    import pytest

    import fastape as ft
    keep = np.array(x0, copy=True)
    with pytest.raises(exc) as err:
        ft.grad(lambda x: np.sum(call(x)))(x0)
    for w in words:
        assert w in str(err.value), (w, str(err.value))
    np.testing.assert_array_equal(x0, keep)
