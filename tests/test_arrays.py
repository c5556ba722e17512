"""numpy's shape, assembly and statistics functions on fastape values (issue 13, items
1 and 2), table-driven.

Each row is a function written with plain numpy (``np.flip``, ``np.var``, a method such
as ``x.squeeze()``) and its arguments. For every row:

* numpy computes the value on plain arrays (the independent source) and fastape's
  eager value, compiled value and ``fastape.<name>`` agree with it;
* ``check_grads`` (order 2, forward and reverse) checks the derivatives against
  central differences of numpy's own evaluation and against each other;
* a compiled function replays at a second point and its Jacobian equals the eager one.
"""

import numpy as np
import pytest
import scipy.special
from helpers import assert_refused

import fastape as ft
from fastape.errors import ShapeError

rng = np.random.default_rng(7)


def spaced(*shape):
    """Values at least 0.1 apart in random order (sorting stays put under the finite
    differences' steps)."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * 0.37 - 0.3 * n + 0.05).reshape(shape)


A23 = rng.standard_normal((2, 3))
A34 = rng.standard_normal((3, 4))
A44 = rng.standard_normal((4, 4))
V5 = rng.standard_normal(5)
V3 = rng.standard_normal(3)
B234 = rng.standard_normal((2, 3, 4))
S7 = spaced(7)
S34 = spaced(3, 4)
W4 = np.array([0.5, 1.0, 2.0, 0.25])
P3 = rng.standard_normal((4, 3))
Q3 = rng.standard_normal((4, 3))

# (id, function, args): the function sees fastape values or plain arrays alike
ROWS = [
    ("squeeze", lambda x: np.squeeze(x), (A23.reshape(1, 2, 1, 3),)),
    ("squeeze_axis", lambda x: np.squeeze(x, axis=2), (A23.reshape(1, 2, 1, 3),)),
    ("squeeze_method", lambda x: x.squeeze(0), (A23.reshape(1, 2, 3),)),
    ("expand_dims", lambda x: np.expand_dims(x, (0, -1)), (A23,)),
    ("swapaxes", lambda x: np.swapaxes(x, 0, 2), (B234,)),
    ("swapaxes_method", lambda x: x.swapaxes(-1, 0), (B234,)),
    ("moveaxis", lambda x: np.moveaxis(x, [0, 1], [-1, 0]), (B234,)),
    ("broadcast_to", lambda x: np.broadcast_to(x, (4, 2, 3)), (A23,)),
    ("atleast_1d", lambda x: np.atleast_1d(x), (np.float64(1.5),)),
    ("atleast_2d", lambda x, y: np.atleast_2d(x, y), (V3, A23)),
    ("atleast_3d", lambda x: np.atleast_3d(x), (A23,)),
    ("ravel", lambda x: np.ravel(x), (B234,)),
    ("ravel_F", lambda x: np.ravel(x, order="F"), (A23,)),
    ("flatten", lambda x: x.flatten(), (A23,)),
    ("flip", lambda x: np.flip(x), (B234,)),
    ("flip_axis", lambda x: np.flip(x, axis=(0, 2)), (B234,)),
    ("fliplr", lambda x: np.fliplr(x), (A34,)),
    ("flipud", lambda x: np.flipud(x), (A34,)),
    ("rot90", lambda x: np.rot90(x), (A34,)),
    ("rot90_k3", lambda x: np.rot90(x, 3, axes=(1, 2)), (B234,)),
    ("roll", lambda x: np.roll(x, 2), (A34,)),
    ("roll_axes", lambda x: np.roll(x, (1, -1), axis=(0, 1)), (A34,)),
    ("tile", lambda x: np.tile(x, (2, 1, 2)), (A23,)),
    ("repeat", lambda x: np.repeat(x, 2), (A23,)),
    ("repeat_axis", lambda x: np.repeat(x, [1, 0, 3], axis=1), (A23,)),
    ("repeat_method", lambda x: x.repeat(3, axis=0), (A23,)),
    ("kron", lambda x, y: np.kron(x, y), (A23, A34)),
    ("kron_1d_2d", lambda x, y: np.kron(x, y), (V3, A23)),
    ("pad_constant", lambda x: np.pad(x, ((1, 2), (0, 1)), constant_values=1.5), (A23,)),
    ("pad_edge", lambda x: np.pad(x, 2, mode="edge"), (A23,)),
    ("pad_reflect", lambda x: np.pad(x, ((1, 1), (2, 2)), mode="reflect"), (A34,)),
    ("pad_symmetric", lambda x: np.pad(x, 3, mode="symmetric"), (V5,)),
    ("pad_wrap", lambda x: np.pad(x, (2, 4), mode="wrap"), (V5,)),
    ("diag_of_matrix", lambda x: np.diag(x, 1), (A34,)),
    ("diag_of_vector", lambda x: np.diag(x, -1), (V3,)),
    ("diagonal", lambda x: np.diagonal(x, 1, 0, 2), (B234,)),
    ("diagonal_method", lambda x: x.diagonal(), (A44,)),
    ("diagflat", lambda x: np.diagflat(x, 1), (A23,)),
    ("tril", lambda x: np.tril(x), (A44,)),
    ("tril_k", lambda x: np.tril(x, -1), (A34,)),
    ("triu", lambda x: np.triu(x, 1), (B234,)),
    ("hstack", lambda x, y: np.hstack([x, y, x]), (A23, A23[:, :2])),
    ("hstack_1d", lambda x, y: np.hstack((x, y)), (V3, V5)),
    ("vstack", lambda x, y: np.vstack([x, y]), (V3, A23)),
    ("dstack", lambda x, y: np.dstack([x, y]), (A23, A23 * 2)),
    ("column_stack", lambda x, y: np.column_stack([x, y]), (V3, A23.T)),
    ("mixed_stack", lambda x: np.vstack([x, np.ones(3)]), (V3,)),
    ("split", lambda x: np.split(x, 2, axis=1), (A34,)),
    ("split_indices", lambda x: np.split(x, [1, 4]), (V5,)),
    ("array_split", lambda x: np.array_split(x, 3), (V5,)),
    ("hsplit", lambda x: np.hsplit(x, [1]), (A34,)),
    ("vsplit", lambda x: np.vsplit(x, 3), (A34,)),
    ("dsplit", lambda x: np.dsplit(x, 2), (B234,)),
    ("append", lambda x, y: np.append(x, y), (A23, V3)),
    ("append_axis", lambda x, y: np.append(x, y, axis=0), (A23, A23)),
    ("take", lambda x: np.take(x, [3, 0, 3, 5]), (A23,)),
    ("take_axis", lambda x: np.take(x, [[2, 0], [1, 1]], axis=1), (A34,)),
    ("take_method", lambda x: x.take([1, -1]), (V5,)),
    ("take_along_axis", lambda x: np.take_along_axis(x, np.array([[0, 2], [1, 1], [3, 0]]),
                                                     1), (A34,)),
    ("select", lambda x, y: np.select([x > 0.5, y < 0], [x, y * 2], default=x * y),
     (S34, spaced(3, 4) + 0.01)),
    ("clip", lambda x: np.clip(x, -1.3, 0.77), (S34,)),
    ("clip_one_side", lambda x: np.clip(x, None, 0.4), (S34,)),
    ("clip_method", lambda x: x.clip(min=0.0), (S34,)),
    ("clip_array_bounds", lambda x, lo: np.clip(x, lo, 2.0), (S34, spaced(4) * 0.5 + 0.01)),
    ("sort", lambda x: np.sort(x), (S34,)),
    ("sort_axis0", lambda x: np.sort(x, axis=0), (S34,)),
    ("sort_none", lambda x: np.sort(x, axis=None), (S34,)),
    ("partition", lambda x: np.partition(x, 3)[3], (S7,)),
    ("partition_axis", lambda x: np.partition(x, (0, 2), axis=1)[:, [0, 2]], (S34,)),
    ("cumsum_axis", lambda x: np.cumsum(x, axis=1), (A34,)),
    ("cumprod_axis", lambda x: np.cumprod(x, axis=0), (A34,)),
    ("diff", lambda x: np.diff(x), (S7,)),
    ("diff_n2_axis0", lambda x: np.diff(x, n=2, axis=0), (B234,)),
    ("diff_prepend", lambda x: np.diff(x, prepend=0.5, append=x[:1]), (V5,)),
    ("gradient", lambda x: np.gradient(x), (V5,)),
    ("gradient_2d", lambda x: np.gradient(x, 0.5, 2.0), (A34,)),
    ("gradient_order2", lambda x: np.gradient(x, 0.3, edge_order=2, axis=1), (A34,)),
    ("gradient_coordinates", lambda x: np.gradient(x, np.array([0.0, 0.3, 1.1, 1.5, 2.6])),
     (V5,)),
    ("gradient_coordinates_order2",
     lambda x: np.gradient(x, [0.0, 1.0, 3.0], np.array([0.0, 0.5, 0.7, 2.0]), edge_order=2),
     (A34,)),
    ("gradient_mixed", lambda x: np.gradient(x, 0.5, np.array([0.0, 0.5, 0.7, 2.0]),
                                             edge_order=1), (A34,)),
    ("gradient_even_coordinates", lambda x: np.gradient(x, np.linspace(0, 2, 4), axis=-1),
     (A34,)),
    ("trapezoid", lambda y: np.trapezoid(y, dx=0.25), (A34,)),
    ("trapezoid_x", lambda y, x: np.trapezoid(y, x), (V5, np.cumsum(np.abs(V5) + 0.1))),
    ("trapezoid_axis0", lambda y: np.trapezoid(y, np.linspace(0, 1, 3), axis=0), (A34,)),
    ("linspace", lambda a, b: np.linspace(a, b, 6), (np.float64(0.3), np.float64(2.5))),
    ("linspace_arrays", lambda a, b: np.linspace(a, b, 4, endpoint=False, axis=1), (V3, V3 * 2)),
    ("cross", lambda a, b: np.cross(a, b), (V3, V3[::-1] + 1.0)),
    ("cross_stacks", lambda a, b: np.cross(a, b), (P3, Q3)),
    ("cross_axis", lambda a, b: np.cross(a, b, axis=0), (P3.T, Q3.T)),
    ("copy", lambda x: np.copy(x) * x.copy(), (A23,)),
    ("astype", lambda x: x.astype(float) + x.astype(np.float64), (A23,)),
    ("var", lambda x: np.var(x), (A34,)),
    ("var_axis_ddof", lambda x: np.var(x, axis=1, ddof=1, keepdims=True), (A34,)),
    ("var_method", lambda x: x.var(axis=(0, 2)), (B234,)),
    ("std", lambda x: np.std(x, axis=0), (A34,)),
    ("std_method", lambda x: x.std(ddof=1), (A34,)),
    ("average", lambda x: np.average(x, axis=1, weights=W4), (A34,)),
    ("average_tape_weights", lambda x, w: np.average(x, weights=w), (A34, np.abs(A34) + 0.5)),
    ("average_returned", lambda x: np.average(x, axis=0, weights=A34 ** 2 + 1,
                                              returned=True), (A34,)),
    ("ptp", lambda x: np.ptp(x, axis=1), (S34,)),
    ("median_odd", lambda x: np.median(x), (S7,)),
    ("median_even", lambda x: np.median(x, axis=1), (S34,)),
    ("median_keepdims", lambda x: np.median(x, axis=0, keepdims=True), (S34,)),
    ("quantile", lambda x: np.quantile(x, [0.0, 0.25, 0.6, 1.0]), (S7,)),
    ("quantile_axis", lambda x: np.quantile(x, 0.3, axis=1), (S34,)),
    ("quantile_keepdims", lambda x: np.quantile(x, [0.5, 0.9], axis=0, keepdims=True), (S34,)),
    ("percentile", lambda x: np.percentile(x, [10, 75], axis=(0, 1)), (spaced(2, 3, 4),)),
    ("einsum_matmul", lambda a, b: np.einsum("ij,jk->ik", a, b), (A34, A34.T)),
    ("einsum_implicit", lambda a, b: np.einsum("ij,jk", a, b), (A23, A34)),
    ("einsum_trace", lambda a: np.einsum("ii", a), (A44,)),
    ("einsum_sublists", lambda a, b: np.einsum(a, [0, 1], b, [1, 2], [0, 2]), (A34, A34.T)),
    ("einsum_sublists_implicit", lambda a, b: np.einsum(a, [0, 1], b, [2, 1]), (A23, A34.T)),
    ("einsum_sublists_ellipsis", lambda a: np.einsum(a, [Ellipsis, 0, 0], [Ellipsis]),
     (rng.standard_normal((2, 3, 3)),)),
    ("einsum_batch_diagonal", lambda a: np.einsum("bii->bi", a), (rng.standard_normal((2, 3, 3)),)),
    ("einsum_ellipsis", lambda a, b: np.einsum("...ij,...jk->...ik", a, b),
     (rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 4, 2)))),
    ("einsum_broadcast_ellipsis", lambda a, b: np.einsum("...ij,jk->...ik", a, b), (B234, A44)),
    ("einsum_three", lambda a, b, c: np.einsum("ij,jk,kl->il", a, b, c), (A23, A34, A44)),
    ("einsum_batched_three", lambda a: np.einsum("bij,bjk,bkl->bil", a, a, a),
     (rng.standard_normal((2, 3, 3)),)),
    ("einsum_outer", lambda a, b: np.einsum("i,j->ij", a, b), (V3, V5)),
    ("einsum_sum_out", lambda a: np.einsum("ijk->j", a), (B234,)),
    ("einsum_transpose", lambda a: np.einsum("ijk->kij", a), (B234,)),
    ("einsum_quadratic_form", lambda x, a: np.einsum("i,ij,j", x, a, x), (V3, A44[:3, :3])),
    ("einsum_gmm_style", lambda q, d: np.einsum("kij,nkj->nki", q, d),
     (np.tril(rng.standard_normal((2, 3, 3))), rng.standard_normal((4, 2, 3)))),
    ("tensordot", lambda a, b: np.tensordot(a, b), (B234, rng.standard_normal((3, 4, 2)))),
    ("tensordot_axes", lambda a, b: np.tensordot(a, b, axes=([0, 2], [2, 0])),
     (B234, rng.standard_normal((4, 5, 2)))),
    ("tensordot_int1", lambda a, b: np.tensordot(a, b, 1), (A34, A44)),
    ("dot_nd", lambda a, b: np.dot(a, b), (B234, rng.standard_normal((2, 4, 3)))),
    ("setitem_scalar", lambda x: _updated(x, lambda y: y.__setitem__((1, 2), x[0, 0] ** 2)),
     (A34,)),
    ("setitem_slice_broadcast", lambda x: _updated(x, lambda y: y.__setitem__(
        (slice(None), slice(1, 3)), np.sin(x[:, :1]))), (A34,)),
    ("setitem_fancy_repeated", lambda x: _updated(x, lambda y: y.__setitem__(
        [0, 2, 0], np.array([[1.0], [2.0], [3.0]]) * x[1])), (A34,)),
    ("setitem_mask", lambda x: _updated(x, lambda y: y.__setitem__(A34 > 0, -y[A34 > 0])),
     (A34,)),
    ("setitem_chain", lambda x: _updated(x, lambda y: [y.__setitem__(i, y[i - 1] * y[i])
                                                       for i in range(1, 5)]), (V5,)),
    ("nansum", lambda x: np.nansum(x * np.where(np.arange(12).reshape(3, 4) % 5 == 1,
                                                np.nan, 1.0), axis=0), (A34,)),
    ("nanmean", lambda x: np.nanmean(x * np.where(np.arange(12).reshape(3, 4) % 5 == 1,
                                                  np.nan, 1.0), axis=1), (A34,)),
]

SPECIAL = [
    ("logsumexp", lambda x: scipy.special.logsumexp(x) if type(x) is np.ndarray else
     ft.scipy.special.logsumexp(x), (A34 * 3,)),
    ("logsumexp_axis_b", lambda x: (scipy.special.logsumexp if type(x) is np.ndarray else
                                    ft.scipy.special.logsumexp)(x, axis=0, b=W4, keepdims=True),
     (A34 * 3,)),
    ("softmax", lambda x: (scipy.special.softmax if type(x) is np.ndarray else
                           ft.scipy.special.softmax)(x, axis=1), (A34 * 3,)),
    ("log_softmax", lambda x: (scipy.special.log_softmax if type(x) is np.ndarray else
                               ft.scipy.special.log_softmax)(x, axis=-1), (B234,)),
]


def _updated(x, update):
    """y = a copy of x (numpy or fastape alike) after update(y)."""
    y = x.copy()
    update(y)
    return y


def _leaves(x):
    if isinstance(x, (list, tuple)):
        return [y for v in x for y in _leaves(v)]
    return [np.asarray(getattr(x, "value", x), dtype=np.float64)]


def _agree(got, want, what):
    g, w = _leaves(got), _leaves(want)
    assert len(g) == len(w), what
    for a, b in zip(g, w):
        assert a.shape == b.shape, f"{what}: shape {a.shape} against numpy's {b.shape}"
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13, err_msg=what)


def _flat(fn):
    """fn with its outputs (one array, or a list or tuple of them) joined into one flat
    array: what a compiled function returns."""
    def flat(*a):
        out = fn(*a)
        parts = out if isinstance(out, (list, tuple)) else [out]
        return ft.concatenate([ft.reshape(p, (-1,)) if type(p) is ft.Var else
                               np.reshape(p, -1) for p in parts])
    return flat


def _moved(args, scale=0.01):
    return tuple(np.asarray(a) + scale * (np.arange(np.size(a)).reshape(np.shape(a)) % 3)
                 for a in args)


@pytest.mark.parametrize("name, fn, args", ROWS + SPECIAL, ids=[r[0] for r in ROWS + SPECIAL])
def test_values_and_derivatives(name, fn, args):
    want = fn(*args)                                      # numpy on plain arrays
    out, _ = ft.vjp(fn, *args)
    _agree(out, want, f"{name}: eager value")
    ft.check_grads(fn, args, order=2, modes=("fwd", "rev"))
    F = ft.compile(_flat(fn), *args, argnums=tuple(range(len(args))))
    _agree(F(*args), _flat(fn)(*args), f"{name}: compiled value")
    other = _moved(args)
    _agree(F(*other), _flat(fn)(*other), f"{name}: compiled value at a second point")


@pytest.mark.parametrize("name, fn, args", [r for r in ROWS if len(r[2]) == 1],
                         ids=[r[0] for r in ROWS if len(r[2]) == 1])
def test_compiled_jacobian(name, fn, args):
    flat = _flat(fn)
    x = _moved(args)[0]
    F = ft.compile(flat, args[0])
    np.testing.assert_allclose(F.jacobian(x), ft.jacobian(flat)(x), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", ["flip", "roll", "tile", "pad", "diag", "tril", "sort",
                                  "clip", "diff", "cross", "linspace", "kron", "hstack"])
def test_plain_arrays_call_numpy(name):
    """fastape.<name> on plain arrays is numpy's result."""
    args = {"flip": (A34,), "roll": (A34, 1), "tile": (V3, 2), "pad": (A23, 1),
            "diag": (V3,), "tril": (A34,), "sort": (S34,), "clip": (S34, 0, 1),
            "diff": (S7,), "cross": (V3, V3 + 1), "linspace": (0.0, 1.0, 5),
            "kron": (A23, V3), "hstack": ([A23, A23],)}[name]
    np.testing.assert_array_equal(getattr(ft, name)(*args), getattr(np, name)(*args))


def test_gradients_closed_form():
    """A few derivatives by hand: d var/dx = 2 (x - mean)/n, d median of an odd count is
    the indicator of the middle element, d logsumexp = softmax, d ptp = e_max - e_min."""
    x = S7
    n = x.size
    np.testing.assert_allclose(ft.grad(np.var)(x), 2 * (x - x.mean()) / n, rtol=1e-13,
                               atol=1e-16)
    e = np.zeros(n)
    e[np.argsort(x)[n // 2]] = 1.0
    np.testing.assert_array_equal(ft.grad(np.median)(x), e)
    np.testing.assert_allclose(ft.grad(ft.scipy.special.logsumexp)(x),
                               scipy.special.softmax(x), rtol=1e-14)
    want = np.zeros(n)
    want[np.argmax(x)] += 1
    want[np.argmin(x)] -= 1
    np.testing.assert_array_equal(ft.grad(np.ptp)(x), want)
    g = ft.grad(lambda x: np.sum(np.sort(x) * np.arange(n)))(x)
    np.testing.assert_array_equal(g, np.argsort(np.argsort(x)).astype(float))


def test_sort_guard_retraces():
    """A compiled sort replays only while the recorded order holds; elsewhere it
    re-records (never a stale permutation)."""
    f = lambda x: np.sum(np.sort(x) * np.arange(4.0))      # noqa: E731
    F = ft.compile(f, np.array([1.0, 2.0, 3.0, 4.0]))
    y = np.array([4.0, 1.0, 3.0, 2.0])
    assert F(y) == f(y)
    np.testing.assert_array_equal(F.grad(y), [3.0, 0.0, 2.0, 1.0])
    assert len(F.traces) == 2
    G = ft.compile(f, np.array([1.0, 2.0, 3.0, 4.0]), retrace=False)
    with pytest.raises(ft.BranchChanged):
        G(y)


def test_median_quantile_guard():
    F = ft.compile(lambda x: np.median(x) + np.quantile(x, 0.25), S7)
    y = S7[::-1] * 1.5 + 0.1
    np.testing.assert_allclose(F(y), np.median(y) + np.quantile(y, 0.25), rtol=1e-14)


def test_logsumexp_stable():
    """Large arguments neither overflow in the value nor in the gradient."""
    x = np.array([1000.0, 1001.0, 999.0])
    v, g = ft.value_and_grad(ft.scipy.special.logsumexp)(x)
    assert np.isclose(v, scipy.special.logsumexp(x), rtol=1e-15)
    np.testing.assert_allclose(g, scipy.special.softmax(x), rtol=1e-14)
    h = ft.hessian(ft.scipy.special.logsumexp)(x)
    p = scipy.special.softmax(x)
    np.testing.assert_allclose(h, np.diag(p) - np.outer(p, p), atol=1e-15)


def test_logsumexp_return_sign():
    x = np.array([0.5, 1.0, -0.3])
    b = np.array([1.0, -2.0, 0.5])
    r, sign = ft.scipy.special.logsumexp(x, b=b, return_sign=True)
    want = scipy.special.logsumexp(x, b=b, return_sign=True)
    v, g = ft.value_and_grad(lambda x: ft.scipy.special.logsumexp(x, b=b,
                                                                  return_sign=True)[0])(x)
    assert sign == want[1] == -1.0 and np.isclose(v, want[0], rtol=1e-15)
    w = b * np.exp(x)
    np.testing.assert_allclose(g, w / w.sum(), rtol=1e-14)       # d log|Σ b eˣ| / dx
    ft.check_grads(lambda x: ft.scipy.special.logsumexp(x, b=b, return_sign=True)[0], (x,))


def test_special_namespace_exports_registry_ufuncs():
    x = np.array([0.2, 0.7])
    np.testing.assert_allclose(ft.grad(lambda x: np.sum(ft.scipy.special.erf(x)))(x),
                               2 / np.sqrt(np.pi) * np.exp(-x ** 2), rtol=1e-14)
    assert ft.scipy.special.gammaln(3.0) == scipy.special.gammaln(3.0)


@pytest.mark.parametrize("call, exc, words", [
    (lambda x: np.pad(x, 1, mode="mean"), TypeError, ["pad", "mean"]),
    (lambda x: np.pad(x, 1, constant_values=((1, 2), (3, 4))), TypeError, ["constant_values"]),
    (lambda x: np.broadcast_to(x, (3, 3)), ShapeError, ["broadcast_to", "(2, 3)", "(3, 3)"]),
    (lambda x: np.var(x, ddof=6), ValueError, ["ddof=6", "6 element"]),
    (lambda x: np.quantile(x, 1.5), ValueError, ["range [0, 1]"]),
    (lambda x: np.quantile(x, 0.5, method="nearest"), TypeError, ["nearest"]),
    (lambda x: np.take(x, x), TypeError, ["take", "plain integers"]),
    (lambda x: np.clip(x, 0, 1, out=np.zeros((2, 3))), TypeError, ["out="]),
    (lambda x: x.sort(), TypeError, ["immutable", "numpy.sort"]),
    (lambda x: x.astype(np.float32), TypeError, ["float64"]),
    (lambda x: np.cross(x[:, :2], x[:, :2]), ShapeError, ["3-vectors"]),
    (lambda x: np.gradient(x, np.arange(3.0)), TypeError, ["invalid number of arguments"]),
    (lambda x: np.gradient(x, np.arange(4.0), 1.0), ValueError, ["match the length", "4 != 2"]),
    (lambda x: np.gradient(x, x, 1.0), TypeError, ["spacing", "fastape value"]),
    (lambda x: np.einsum(x, [0, "j"]), ValueError, ["einsum", "labels"]),
    (lambda x: np.einsum(x, "ij"), TypeError, ["einsum", "list of subscript labels"]),
    (lambda x: np.split(x, 2, axis=1), ValueError, []),
    (lambda x: np.hstack(x), TypeError, ["sequence"]),
    (lambda x: np.diff(x, n=-1), ValueError, ["non-negative"]),
    (lambda x: np.average(x, weights=np.ones(3)), TypeError, ["axis must be specified"]),
    (lambda x: np.einsum("ij,jk->ik", x, x), ShapeError, ["'j'", "size 3", "2"]),
    (lambda x: np.einsum("ijk", x), ShapeError, ["3 dimension", "(2, 3)"]),
    (lambda x: np.einsum("ij->iz", x), ValueError, ["'z'"]),
    (lambda x: np.tensordot(x, x, axes=([1], [1, 0])), ValueError, ["shape-mismatch"]),
    (lambda x: np.take(np.arange(6.0), x), TypeError, ["fastape value"]),
    (lambda x: np.quantile(np.arange(6.0), x[0, 0] ** 2 * 0), TypeError, ["numpy.quantile"]),
    (lambda x: np.roll(np.arange(6.0), x[0, 0]), TypeError, ["fastape value"]),
    (lambda x: np.pad(np.arange(6.0), x[0, 0]), TypeError, ["fastape value"]),
])
def test_bad_input(call, exc, words):
    assert_refused(call, A23.copy(), exc, words)


def test_update_of_an_argument_inside_grad():
    """x[0] = ... inside the function rebinds the function's own handle only: the
    derivative is still with respect to the argument, and the caller's array is
    unchanged (closed form: f = 25 x1² + x1² + x2²)."""
    def f(x):
        x[0] = 5.0 * x[1]
        return np.sum(x ** 2)
    x0 = np.array([1.0, 2.0, 3.0])
    want = np.array([0.0, 52.0 * 2.0, 6.0])
    np.testing.assert_array_equal(ft.grad(f)(x0), want)
    np.testing.assert_array_equal(x0, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(ft.compile(f, x0.copy()).grad(x0.copy()), want)
    np.testing.assert_array_equal(ft.hessian(f)(x0), np.diag([0.0, 52.0, 2.0]))
    np.testing.assert_array_equal(ft.jvp(f, (x0,), (np.ones(3),))[1], want.sum())


def test_update_leaves_other_handles_alone():
    with ft.Tape() as t:
        x = t.var(np.array([1.0, 2.0]))
        y = x.copy()
        y[0] = 7.0
        z = x[0:2]
        z[1] = 0.0
    assert x.value.tolist() == [1.0, 2.0] and y.value.tolist() == [7.0, 2.0]
    assert z.value.tolist() == [1.0, 0.0]


def test_filling_a_numpy_array_says_what_to_do():
    def f(x):
        out = np.zeros(3)
        out[0] = x[0]
        return np.sum(out)
    with pytest.raises(TypeError, match=r"np\.stack.*y = x\.copy\(\); y\[i\] = v"):
        ft.grad(f)(np.ones(3))


@pytest.mark.parametrize("key, value, exc, words", [
    (5, 1.0, IndexError, []),
    (slice(0, 2), np.ones(3), ShapeError, ["(3,)", "(2,)"]),
    (0, "a", TypeError, ["dtype"]),
])
def test_bad_update(key, value, exc, words):
    def f(x):
        y = x.copy()
        y[key] = value
        return np.sum(y)
    with pytest.raises(exc) as err:
        ft.grad(f)(np.ones(3))
    for w in words:
        assert w in str(err.value)


def test_sum_is_pairwise():
    """np.sum / np.mean of many elements are as accurate as numpy's (pairwise
    summation, issue 13): a running sum of these 640,000 numbers is off by ~1e-14
    relative; value, compiled value and the tangent (jvp) are within numpy's error of
    math.fsum, along the contiguous axis and a strided one."""
    import math
    x = np.random.default_rng(5).standard_normal(640_000) + 10.0
    exact = math.fsum(x)
    tol = max(abs(np.sum(x) - exact), 1e-16 * abs(exact))
    assert abs(ft.value_and_grad(np.sum)(x)[0] - exact) <= tol
    assert abs(ft.compile(np.sum, x)(x) - exact) <= tol
    assert abs(ft.jvp(np.sum, (np.zeros_like(x),), (x,))[1] - exact) <= tol
    assert abs(ft.value_and_grad(np.mean)(x)[0] - exact / x.size) <= 2 * tol / x.size
    A = x.reshape(800, 800)
    cols = ft.vjp(lambda a: np.sum(a, axis=0), A)[0]
    exact_cols = np.array([math.fsum(A[:, j]) for j in range(800)])
    assert np.max(np.abs(cols - exact_cols)) <= 4e-15 * np.max(np.abs(exact_cols))


@pytest.mark.parametrize("fn", [
    lambda x: x.T,
    lambda x: np.transpose(x, (1, 2, 0)),
    lambda x: np.swapaxes(x, 0, 2),
    lambda x: np.moveaxis(x, 0, -1),
    lambda x: np.transpose(x[:, :1], (2, 0, 1)),            # a length-1 axis moved
], ids=["T", "transpose_120", "swapaxes", "moveaxis", "length1"])
def test_transposes_are_strided_views(fn, tmp_path):
    """A transpose records one BROADCAST node (a strided view: no index array) whose
    value is numpy's, whose adjoint is the inverse transpose of the cotangent, and
    which differentiates to second order (the nested rule undoes the permutation),
    compiles, saves and loads, and has a permutation for its Jacobian pattern."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((2, 3, 4))
    with ft.Tape() as t:
        y = fn(t.var(X))
    assert ft.Op(t.opcodes()[-1]) == ft.Op.BROADCAST
    want = fn(X)
    np.testing.assert_array_equal(y.value, want)
    C = rng.standard_normal(want.shape)
    (bar,) = ft.vjp(fn, X)[1](C)
    positions = np.arange(X.size).reshape(X.shape)
    expect = np.zeros(X.size)
    np.add.at(expect, fn(positions).reshape(-1), C.reshape(-1))
    np.testing.assert_array_equal(bar, expect.reshape(X.shape))
    W = rng.standard_normal(want.shape)
    f = lambda x: np.sum(np.sin(fn(x)) * W * fn(x))         # noqa: E731
    ft.check_grads(f, (X,), order=2, modes=("fwd", "rev"))
    F = ft.compile(fn, X)
    np.testing.assert_array_equal(F(X + 1.0), fn(X + 1.0))
    J = F.jacobian_sparsity().toarray()
    np.testing.assert_array_equal(J, np.eye(X.size, dtype=bool)[fn(positions).reshape(-1)])
    F.save(tmp_path / "f.fastape")
    G = ft.load(tmp_path / "f.fastape")
    np.testing.assert_array_equal(G.vjp(X, C)[1] if isinstance(G.vjp(X, C), tuple)
                                  else G.vjp(X, C), bar)


def test_numpy_data_broadcast_against_a_value_is_one_constant():
    """x[:, None, :] - means with numpy data x: the data is broadcast by numpy into one
    constant (no BROADCAST node sweeping multipliers back into it); values and the
    gradient are numpy's and the closed form; shapes that do not broadcast still raise
    naming both."""
    rng = np.random.default_rng(4)
    X, M = rng.standard_normal((6, 1, 3)), rng.standard_normal((1, 4, 3))
    with ft.Tape() as t:
        m = t.var(M)
        d = X - m
        e = m * X
    assert d.shape == e.shape == (6, 4, 3)
    np.testing.assert_array_equal(d.value, X - M)
    np.testing.assert_array_equal(e.value, M * X)
    ops = [ft.Op(o) for o in t.opcodes()]
    assert ops.count(ft.Op.BROADCAST) == 2          # m's, twice; none of the data
    g = ft.grad(lambda m: np.sum((X - m) ** 2 * X))(M)
    np.testing.assert_allclose(g, np.sum(-2 * (X - M) * X, axis=0, keepdims=True),
                               rtol=1e-13)
    with pytest.raises(ShapeError, match=r"\(6, 1, 3\).*\(4, 2\)"):
        ft.grad(lambda v: np.sum(X - v))(np.ones((4, 2)))


# -- the short-sum and permutation kernels, against closed forms ---------------------

@pytest.mark.parametrize("shape", [(1000, 8, 5), (3, 7), (7, 3), (2, 5, 9), (4, 1, 6),
                                   (5, 4, 3, 2), (6,)])
def test_sums_over_each_axis_match_numpy_and_the_closed_form(shape):
    """sum over one axis (its short-row kernels for fewer than 8 terms, the pairwise one
    above): a sum of fewer than 8 terms is the running sum in order, bit for bit, and
    the gradient of Σ w · sum(x, axis) is w broadcast back, a
    zero weight included; compiled and forward mode agree."""
    x = rng.standard_normal(shape)
    for axis in range(len(shape)):
        s = np.sum(x, axis=axis)
        w = rng.standard_normal(s.shape)
        w.flat[::3] = 0.0
        f = lambda a, axis=axis, w=w: np.sum(np.sum(a, axis=axis) * w)  # noqa: E731
        v, g = ft.value_and_grad(f)(x)
        want = np.broadcast_to(np.expand_dims(w, axis), shape)
        np.testing.assert_array_equal(g, want)
        np.testing.assert_allclose(v, np.sum(s * w), rtol=1e-13)
        first = ft.value_and_grad(lambda a, axis=axis, k=(0,) * s.ndim:
                                  np.sum(a, axis=axis)[k])(x)[0]
        if shape[axis] < 8:         # a running sum, in order
            terms = [x.take(q, axis=axis)[(0,) * s.ndim] for q in range(shape[axis])]
            running = 0.0
            for term in terms:
                running += term
            assert first == running
        else:
            np.testing.assert_allclose(first, s[(0,) * s.ndim], rtol=1e-13)
        F = ft.compile(f, x)
        vc, gc = F.value_and_grad(x)
        np.testing.assert_array_equal(gc, want)
        t = rng.standard_normal(shape)
        np.testing.assert_allclose(F.jvp(x, t)[1], np.sum(np.sum(t, axis=axis) * w),
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(1000, 8, 5), (8, 5, 1000), (3, 4, 5), (2, 3, 4, 5),
                                   (17, 33), (1, 5, 7)])
def test_every_permutation_copies_and_scatters_back_exactly(shape):
    """np.transpose by every permutation (a strided BROADCAST view; tiled when the
    output's innermost axis is strided in x): the value equals numpy's, and the gradient
    of Σ W · transpose(x) is W transposed back, exactly, eager and compiled."""
    import itertools
    x = rng.standard_normal(shape)
    for axes in itertools.permutations(range(len(shape))):
        W = rng.standard_normal(tuple(shape[a] for a in axes))
        f = lambda a, axes=axes, W=W: np.sum(np.transpose(a, axes) * W)  # noqa: E731
        g = ft.grad(f)(x)
        np.testing.assert_array_equal(g, np.transpose(W, np.argsort(axes)))
        with ft.Tape() as tape:
            v = tape.var(x)
            np.testing.assert_array_equal(np.transpose(v, axes).value, np.transpose(x, axes))
        np.testing.assert_array_equal(ft.compile(f, x).grad(x),
                                      np.transpose(W, np.argsort(axes)))
