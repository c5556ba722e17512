"""Compiled Hessian-vector products and Hessians.

``Function.hvp`` and ``Function.hessian`` run a direct forward-over-reverse sweep on
a trace in the scalar layout (a tangent sweep, then one reverse sweep carrying the
adjoints' tangents λ̇ with the ops' second partials), and otherwise a tangent sweep
over the compiled gradient (``_hvp_by_gradient``, ``_hessian_by_gradient``). Both are
checked here against each other, against closed forms, and against central
differences of the compiled gradient; every elementwise op of the registry goes
through the direct sweep (rows derived from its block, as in test_ops.py).
"""

import numpy as np
import pytest
from helpers import rosenbrock
from test_ops import ELEMENTWISE_ROWS, Row, _points

import fastape as ft
from fastape import registry
from fastape._ops import Op
from fastape.errors import BranchChanged, ShapeError


def rosenbrock_hessian(x):
    """The closed form: H_ii = 1200 x_i² - 400 x_{i+1} + 2 (+ 200 for i > 0), H_{n-1,n-1}
    = 200, H_{i,i+1} = H_{i+1,i} = -400 x_i."""
    n = len(x)
    H = np.zeros((n, n))
    for i in range(n - 1):
        H[i, i] += 1200 * x[i] ** 2 - 400 * x[i + 1] + 2
        H[i + 1, i + 1] += 200
        H[i, i + 1] = H[i + 1, i] = -400 * x[i]
    return H


def fd_hessian(grad, x, h=1e-5):
    """Central differences of a gradient: column j is (∇f(x + h e_j) - ∇f(x - h e_j))/2h."""
    x = np.asarray(x, dtype=float)
    cols = []
    for j in range(x.size):
        step = h * max(1.0, abs(x[j]))
        xp, xm = x.copy(), x.copy()
        xp[j] += step
        xm[j] -= step
        cols.append((np.asarray(grad(xp)) - np.asarray(grad(xm))) / (2 * step))
    return np.stack(cols, axis=1)


def _trace(F):
    return F.traces[-1]


# -- the scalar-loop Rosenbrock: closed form, grouped and ungrouped -------------------

@pytest.mark.parametrize("n,grouped", [(4, False), (50, True), (70, True)])
def test_rosenbrock_direct_sweep_vs_closed_form(n, grouped, rng):
    x = rng.uniform(-1.2, 1.2, n)
    F = ft.compile(rosenbrock, x)
    tr = _trace(F)
    assert tr.direct_hvp
    assert (tr.run_count > 0) == grouped
    H = rosenbrock_hessian(x)
    for _ in range(3):
        v = rng.standard_normal(n)
        hv = F.hvp(x, v)
        np.testing.assert_allclose(hv, H @ v, rtol=1e-12, atol=1e-10 * np.abs(H).max())
        np.testing.assert_allclose(hv, F._hvp_by_gradient(x, v), rtol=1e-12, atol=1e-11)
    Hd = F.hessian(x)
    np.testing.assert_allclose(Hd, H, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(Hd, F._hessian_by_gradient((x,)), rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(Hd, fd_hessian(F.grad, x), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("n", [5, 70])
def test_vector_mode_equals_single_hvps(n, rng):
    """hessian (blocks of ≤ 64 directions, the node-by-node sweep) column by column
    against hvp (one direction: the run loops on a grouped tape)."""
    x = rng.uniform(-1.0, 1.0, n)

    def f(x):
        s = 0.0
        for i in range(len(x) - 1):
            s = s + ft.sin(x[i] * x[i + 1]) + ft.exp(0.3 * x[i]) / (2.0 + x[i + 1] ** 2)
        return s
    F = ft.compile(f, x)
    assert _trace(F).direct_hvp and (_trace(F).run_count > 0) == (n > 10)
    H = F.hessian(x)
    cols = np.stack([F.hvp(x, e) for e in np.eye(n)], axis=1)
    np.testing.assert_allclose(H, cols, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(H, H.T, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(H, fd_hessian(F.grad, x), rtol=1e-6, atol=1e-6)
    v = rng.standard_normal(n)
    np.testing.assert_allclose(F.hvp(x, v), H @ v, rtol=1e-12, atol=1e-12)


# -- direct sweep against the path through the compiled gradient ----------------------

def _mixed(x):
    s = 0.0
    for i in range(len(x) - 1):
        a, b = x[i], x[i + 1]
        s = s + ft.tanh(a * b) * ft.sigmoid(b) + ft.log1p(a ** 2) / (1.5 + ft.cos(b))
        s = s + np.maximum(a, 0.3 * b) * ft.arctan2(a, 2.0 + b) + ft.sqrt(2.0 + a) ** 1.5
    return s * s


def _products(x):
    p = 1.0
    for i in range(len(x)):
        p = p * (1.0 + 0.1 * x[i]) - 0.05 * x[i] * x[(i + 3) % len(x)]
    return ft.exp(0.2 * p) + p / (1.0 + p * p)


@pytest.mark.parametrize("f", [_mixed, _products, rosenbrock], ids=lambda f: f.__name__)
@pytest.mark.parametrize("n", [3, 40])
def test_direct_equals_the_gradient_path(f, n, rng):
    x = rng.uniform(-0.9, 0.9, n)
    F = ft.compile(f, x)
    assert _trace(F).direct_hvp
    for _ in range(2):
        x = rng.uniform(-0.9, 0.9, n)
        v = rng.standard_normal(n)
        want = F._hvp_by_gradient(x, v)
        np.testing.assert_allclose(F.hvp(x, v), want, rtol=1e-11,
                                   atol=1e-12 * max(1.0, np.abs(want).max()))
        H = F.hessian(x)
        np.testing.assert_allclose(H, F._hessian_by_gradient((x,)), rtol=1e-11,
                                   atol=1e-12 * max(1.0, np.abs(H).max()))
        np.testing.assert_allclose(H, fd_hessian(F.grad, x), rtol=1e-5,
                                   atol=1e-6 * max(1.0, np.abs(H).max()))


def test_pytree_argument_and_other_arguments(rng):
    """hvp of a dict argument (its leaves scalarised inputs), a second argument held
    fixed: the direct sweep, in the argument's structure."""
    def f(p, c):
        a, b = p["a"], p["b"]
        s = b ** 3 * c
        for i in range(len(a)):
            s = s + ft.sin(a[i] * b) + c * a[i] ** 2 * a[(i + 1) % len(a)]
        return s
    p = {"a": rng.standard_normal(4), "b": 0.7}
    F = ft.compile(f, p, 1.3)
    assert _trace(F).direct_hvp
    v = {"a": rng.standard_normal(4), "b": -0.4}
    hv = F.hvp((p, 1.3), v)
    want = F._hvp_by_gradient((p, 1.3), v)
    assert set(hv) == {"a", "b"} and isinstance(hv["b"], float)
    np.testing.assert_allclose(hv["a"], want["a"], rtol=1e-13, atol=1e-14)
    assert hv["b"] == pytest.approx(want["b"], rel=1e-13)

    # against central differences of ⟨∇f, ·⟩ along v
    def flat_grad(t):
        g = F.grad({"a": t[:4], "b": float(t[4])}, 1.3)
        return np.concatenate([g["a"], [g["b"]]])
    t0 = np.concatenate([p["a"], [p["b"]]])
    fd = fd_hessian(flat_grad, t0) @ np.concatenate([v["a"], [v["b"]]])
    np.testing.assert_allclose(np.concatenate([hv["a"], [hv["b"]]]), fd, rtol=1e-6,
                               atol=1e-6)
    with pytest.raises(ShapeError, match="hvp"):
        F.hvp((p, 1.3), [1.0, 2.0])


def test_scalar_argument(rng):
    F = ft.compile(lambda x, y: ft.sin(x) * y ** 2, 0.4, 1.5, argnums=0)
    assert _trace(F).direct_hvp
    assert F.hvp((0.4, 1.5), 2.0) == pytest.approx(-np.sin(0.4) * 1.5 ** 2 * 2.0, rel=1e-14)
    assert F.hessian(0.4, 1.5) == pytest.approx(-np.sin(0.4) * 1.5 ** 2, rel=1e-14)
    assert isinstance(F.hessian(0.4, 1.5), float)


def test_structural_op_takes_the_gradient_path(rng):
    """A trace in the general layout (array ops) keeps the sweep over the compiled
    gradient: the closed form of f = Σ sin(x) x + (Σ x)²."""
    f = lambda x: np.sum(np.sin(x) * x) + np.sum(x) ** 2     # noqa: E731
    x = rng.uniform(-1.0, 1.0, 6)
    F = ft.compile(f, x)
    assert not _trace(F).direct_hvp
    H = np.diag(2 * np.cos(x) - x * np.sin(x)) + 2.0
    v = rng.standard_normal(6)
    np.testing.assert_allclose(F.hvp(x, v), H @ v, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(F.hessian(x), H, rtol=1e-12, atol=1e-13)


def test_derived_partial_ops_take_the_gradient_path():
    """A grad inside the function records a derived partial op (no second partials of
    its own): the direct sweep is not used, and the gradient path raises as before."""
    f = lambda x: ft.grad(ft.arcsinh)(x[0]) * x[1]     # noqa: E731
    x = np.array([0.3, 2.0])
    F = ft.compile(f, x)
    ops = set(_trace(F).tape.opcodes().tolist())
    assert Op.ARCSINH_D0 in ops and not _trace(F).direct_hvp
    # its Hessian needs the derivative of ARCSINH_D0's partial: the gradient path
    # says so (instead of the NaN a sweep through its registry row would give)
    with pytest.raises(Exception, match="(?i)arcsinh"):
        F.hvp(x, np.array([1.0, 0.0]))


# -- guards ---------------------------------------------------------------------------

def _branchy(x):
    s = 0.0
    for i in range(len(x) - 1):
        if x[i] > 0:
            s = s + x[i] ** 3 * x[i + 1]
        else:
            s = s + ft.sin(x[i]) * x[i + 1] ** 2
    return s


def _branchy_hessian(x):
    n = len(x)
    H = np.zeros((n, n))
    for i in range(n - 1):
        a, b = x[i], x[i + 1]
        if a > 0:
            H[i, i] += 6 * a * b
            H[i, i + 1] += 3 * a * a
            H[i + 1, i] += 3 * a * a
        else:
            H[i, i] += -np.sin(a) * b * b
            H[i, i + 1] += 2 * np.cos(a) * b
            H[i + 1, i] += 2 * np.cos(a) * b
            H[i + 1, i + 1] += 2 * np.sin(a)
    return H


@pytest.mark.parametrize("n", [4, 30])
def test_guard_flip_retraces(n, rng):
    x1 = np.abs(rng.uniform(0.2, 1.0, n))
    F = ft.compile(_branchy, x1)
    v = rng.standard_normal(n)
    np.testing.assert_allclose(F.hvp(x1, v), _branchy_hessian(x1) @ v, rtol=1e-12,
                               atol=1e-12)
    x2 = x1.copy()
    x2[::2] *= -1.0             # other branches: a new trace
    np.testing.assert_allclose(F.hvp(x2, v), _branchy_hessian(x2) @ v, rtol=1e-12,
                               atol=1e-12)
    assert len(F.traces) == 2 and all(tr.direct_hvp for tr in F.traces)
    np.testing.assert_allclose(F.hessian(x1), _branchy_hessian(x1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(F.hessian(x2), _branchy_hessian(x2), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(F.hvp(x1, v), F._hvp_by_gradient(x1, v), rtol=1e-12,
                               atol=1e-12)
    assert len(F.traces) == 2
    G = ft.compile(_branchy, x1, retrace=False)
    with pytest.raises(BranchChanged):
        G.hvp(x2, v)
    with pytest.raises(BranchChanged):
        G.hessian(x2)


# -- the zero conventions -------------------------------------------------------------

def test_zero_adjoint_through_an_infinite_partial():
    """0·sqrt(x0) at x0 = 0: the sqrt node's λ and λ̇ are zero, its partials infinite;
    it contributes nothing (f = x0 x1, so H v = (v1, v0))."""
    F = ft.compile(lambda x: x[0] * x[1] + 0.0 * ft.sqrt(x[0]), np.array([0.5, 2.0]))
    assert _trace(F).direct_hvp
    x = np.array([0.0, 2.0])
    np.testing.assert_array_equal(F.hvp(x, np.array([1.0, 3.0])), [3.0, 1.0])
    np.testing.assert_array_equal(F.hessian(x), [[0.0, 1.0], [1.0, 0.0]])


def test_sqrt_at_zero():
    """f = sqrt(x0) + x1² at x0 = 0, along v = (0, 1): the zero tangent of x0 and the
    zero λ̇ of the sqrt node contribute nothing through its infinite partials."""
    F = ft.compile(lambda x: ft.sqrt(x[0]) + x[1] ** 2, np.array([1.0, 1.0]))
    x, v = np.array([0.0, 3.0]), np.array([0.0, 1.0])
    np.testing.assert_array_equal(F.hvp(x, v), [0.0, 2.0])
    np.testing.assert_array_equal(F.hvp(x, v), F._hvp_by_gradient(x, v))


def test_zero_partials_against_infinite_tangents():
    """g = x1 sqrt(x0) + x0 x1 at (0, 0). Along (1, 0) the tangent of sqrt(x0) is
    infinite; the multiplication's constant zero second partial ∂²/∂s² and the zero
    λ of the sqrt node (λ = x1 = 0) leave H_00 = x1·(-∞) at the convention's 0, while
    H_10 = 1/(2 sqrt x0) + 1 is a true infinity. Along (0, 1): H_01 = ∞, H_11 = 0."""
    F = ft.compile(lambda x: x[1] * ft.sqrt(x[0]) + x[0] * x[1], np.array([1.0, 1.0]))
    x = np.zeros(2)
    np.testing.assert_array_equal(F.hvp(x, np.array([1.0, 0.0])), [0.0, np.inf])
    np.testing.assert_array_equal(F.hvp(x, np.array([0.0, 1.0])), [np.inf, 0.0])
    np.testing.assert_array_equal(F.hessian(x), [[0.0, np.inf], [np.inf, 0.0]])


# -- every elementwise op through the direct sweep ------------------------------------

# scalar spellings of the ops whose registry rows record array nodes (the scalar
# layout is the direct sweep's): a nested grad copies its scalar argument (COPY)
SCALAR_ROWS = [Row("copy_scalar", 1, "m.grad(lambda y: y * y * y)(x)", ((-2.0, 2.0),))]
ROWS = ELEMENTWISE_ROWS + SCALAR_ROWS


def _row_function(row):
    """g(x0[, x1]) of the row composed so that its node has a nonconstant λ and a
    nonzero λ̇ (f = g² + g·u, u the last input): the op's first and second partials
    both enter the Hessian, and so do cross terms with u."""
    def f(x):
        g = row.fn(ft, *[x[j] for j in range(row.arity)])
        return g * g + g * x[row.arity]
    return f


def _row_point(row, rng):
    return np.array(_points(row, rng) + [float(rng.uniform(0.5, 1.5))])


@pytest.mark.parametrize("row", ROWS, ids=repr)
def test_every_elementwise_op_direct_vs_differences_of_the_gradient(row, rng):
    f = _row_function(row)
    x = _row_point(row, rng)
    F = ft.compile(f, x)
    if row.ref:                 # scalar expressions: the scalar layout
        assert _trace(F).direct_hvp, row
    for _ in range(3):
        x = _row_point(row, rng)
        H = F.hessian(x)
        fd = fd_hessian(F.grad, x)
        scale = max(1.0, np.abs(fd).max())
        np.testing.assert_allclose(H, fd, rtol=1e-5, atol=1e-6 * scale, err_msg=repr(row))
        v = rng.standard_normal(x.size)
        hv = F.hvp(x, v)
        np.testing.assert_allclose(hv, H @ v, rtol=1e-12, atol=1e-12 * scale,
                                   err_msg=repr(row))
        np.testing.assert_allclose(hv, F._hvp_by_gradient(x, v), rtol=1e-10,
                                   atol=1e-11 * scale, err_msg=repr(row))


def test_the_rows_cover_every_elementwise_op(rng):
    """Every elementwise op of the registry is recorded by some row's function on a
    trace the direct sweep runs."""
    seen = set()
    for row in ROWS:
        F = ft.compile(_row_function(row), _row_point(row, rng))
        if _trace(F).direct_hvp:
            seen.update(int(o) for o in _trace(F).tape.opcodes())
    missing = [e.name for e in registry.ELEMENTWISE if int(Op[e.name]) not in seen]
    assert not missing, missing


# -- storage --------------------------------------------------------------------------

def test_adjoint_tangent_arena_is_counted_and_made_on_demand(rng):
    x = rng.uniform(-1.0, 1.0, 30)
    F = ft.compile(rosenbrock, x)
    before = F.nbytes
    F.hvp(x, np.ones(30))
    grown = F.nbytes - before
    nval = F.nodes
    # the λ̇ arena of one direction (and the tangent arena of one direction)
    assert grown >= 8 * nval
    F.hessian(x)            # 30 directions: both arenas regrown to 30 per node
    assert F.nbytes - before >= 2 * 8 * 30 * nval
    np.testing.assert_allclose(F.hvp(x, np.ones(30)), rosenbrock_hessian(x).sum(axis=1),
                               rtol=1e-12, atol=1e-10)
