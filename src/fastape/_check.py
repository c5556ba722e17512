"""``fastape.check_grads``: derivatives against central differences and each other."""

import numpy as np

from fastape._tree import flatten, unflatten

__all__ = ["check_grads"]


def _leaves(tree, what):
    leaves, td = flatten(tree, what, "check_grads")
    return [np.asarray(getattr(x, "value", x), dtype=np.float64) for x in leaves], td


def _random_like(tree, rng, what):
    leaves, td = _leaves(tree, what)
    return unflatten(td, [rng.standard_normal(x.shape) if x.shape else
                          float(rng.standard_normal()) for x in leaves])


def _combine(a, x, b, y):
    """a·x + b·y over two pytrees of one structure (numbers and arrays)."""
    xs, td = _leaves(x, "args")
    ys, _ = _leaves(y, "direction")
    return unflatten(td, [a * xi + b * yi if xi.shape else float(a * xi + b * yi)
                          for xi, yi in zip(xs, ys)])


def _inner(x, y):
    xs, _ = _leaves(x, "x")
    ys, _ = _leaves(y, "y")
    return float(sum(np.sum(a * b) for a, b in zip(xs, ys)))


def _compare(got, want, what, rtol, atol):
    g, _ = _leaves(got, what)
    w, _ = _leaves(want, what)
    g = np.concatenate([a.reshape(-1) for a in g]) if g else np.zeros(0)
    w = np.concatenate([a.reshape(-1) for a in w]) if w else np.zeros(0)
    if g.shape != w.shape:
        raise AssertionError(f"check_grads: {what}: {g.size} numbers against {w.size}")
    err = np.abs(g - w) - (atol + rtol * np.abs(w))
    if g.size and (not np.all(np.isfinite(g) == np.isfinite(w)) or np.nanmax(err) > 0):
        k = int(np.nanargmax(np.where(np.isfinite(err), err, np.inf)))
        raise AssertionError(f"check_grads: {what}: worst element {k}: {g[k]!r} against "
                             f"{w[k]!r} (|difference| {abs(g[k] - w[k]):.3g}, rtol {rtol}, "
                             f"atol {atol})")


def check_grads(f, args, order=2, modes=("fwd", "rev"), eps=1e-5, rtol=1e-5, atol=1e-6,
                seed=0):
    """Check the derivatives of ``f`` at ``args`` (a tuple of arguments) up to ``order``,
    in the modes given (``"fwd"``: :func:`fastape.jvp`, ``"rev"``: :func:`fastape.vjp`),
    in the style of JAX's ``check_grads``:

    * ``jvp`` along a random direction against central differences of ``f`` with step
      ``eps``;
    * ``vjp`` of a random cotangent u against central differences (⟨u, (f(x+εv) −
      f(x−εv))/2ε⟩ = ⟨vjp(u), v⟩), and against ``jvp`` (the identity ⟨u, J v⟩ =
      ⟨Jᵀu, v⟩);
    * then the same, one order down, for the functions x ↦ jvp(f, x, v) and
      x ↦ vjp(f, x)(u), to reach ``order``.

    Raises ``AssertionError`` naming the mode, the order and the worst element;
    returns None when every check passes.
    """
    if not isinstance(args, (tuple, list)):
        raise TypeError(f"check_grads: args must be a tuple of arguments, got "
                        f"{type(args).__name__}")
    bad = set(modes) - {"fwd", "rev"}
    if bad or not modes:
        raise ValueError(f"check_grads: modes must be a subset of ('fwd', 'rev'), got {modes!r}")
    if not isinstance(order, int) or order < 1:
        raise ValueError(f"check_grads: order must be a positive integer, got {order!r}")
    _check(f, tuple(args), order, 1, tuple(modes), eps, rtol, atol,
           np.random.default_rng(seed))


def _check(f, args, order, level, modes, eps, rtol, atol, rng):
    from fastape import api

    v = _random_like(args, rng, "args")
    fp = _plain(f(*_combine(1.0, args, eps, v)))
    fm = _plain(f(*_combine(1.0, args, -eps, v)))
    fd = _combine(0.5 / eps, fp, -0.5 / eps, fm)           # (f(x+εv) − f(x−εv)) / 2ε
    out = _plain(f(*args))
    u = _random_like(out, rng, "output")
    tangent = None
    if "fwd" in modes:
        _, tangent = api.jvp(f, args, v)
        _compare(tangent, fd, f"mode fwd, order {level}: jvp against central differences",
                 rtol, atol)
    if "rev" in modes:
        _, f_vjp = api.vjp(f, *args)
        ct = f_vjp(u)
        want = _inner(u, fd)
        _compare(_inner(ct, v), want, f"mode rev, order {level}: ⟨vjp(u), v⟩ against "
                 "⟨u, central differences⟩", rtol, atol * max(1.0, abs(want)))
        if tangent is not None:
            _compare(_inner(ct, v), _inner(u, tangent), f"modes fwd and rev, order {level}: "
                     "⟨vjp(u), v⟩ against ⟨u, jvp(v)⟩", rtol, atol)
    if order > level:
        if "fwd" in modes:
            _check(lambda *a: api.jvp(f, a, v)[1], args, order, level + 1, modes, eps, rtol,
                   atol, rng)
        if "rev" in modes:
            _check(lambda *a: api.vjp(f, *a)[1](u), args, order, level + 1, modes, eps, rtol,
                   atol, rng)


def _plain(x):
    """A function's result as numbers (fastape values read)."""
    leaves, td = flatten(x, "output", "check_grads")
    return unflatten(td, [x.value if hasattr(x, "value") else x for x in leaves])
