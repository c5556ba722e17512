"""Forward mode: the tangent sweep, eager (Tape.forward_tangents / Tape.tangent) and
compiled (Function.jvp / Function.jacobian).

Every tangent is checked against two independent numbers: central finite
differences of the same expression evaluated with plain numpy along the seeded
direction, and the reverse sweep through ⟨u, J v⟩ = ⟨Jᵀu, v⟩. The elementwise rows
are derived from the registry (tests/test_ops.py's rows, each op's domain); the
structural rows cover every structural and linear-algebra op, including the
singular and zero cases whose tangents follow a convention.
"""

import math

import numpy as np
import pytest
from test_ops import ELEMENTWISE_ROWS, NP, STRUCTURAL_ROWS, X23

import fastape as ft
from fastape import ShapeError, TapeError


def _directional_fd(f, args, dirs, h=1e-6):
    """(f(x + h v) - f(x - h v)) / 2h with every argument moved along its direction
    (steps scaled by the arguments' magnitude, as helpers.central_diff does)."""
    scale = h * max([1.0] + [float(np.max(np.abs(a))) for a in args])
    plus = [np.asarray(a) + scale * np.asarray(v) for a, v in zip(args, dirs, strict=True)]
    minus = [np.asarray(a) - scale * np.asarray(v) for a, v in zip(args, dirs, strict=True)]
    plus = [float(a) if a.ndim == 0 else a for a in plus]
    minus = [float(a) if a.ndim == 0 else a for a in minus]
    return (np.asarray(f(*plus)) - np.asarray(f(*minus))) / (2 * scale)


def _record(fn, args):
    with ft.Tape() as t:
        xs = [t.var(a) for a in args]
        out = fn(ft, *xs)
    return t, xs, out


def _tangent_and_adjoint_check(fn, t, xs, out, dirs, rng):
    """The tangent of `out` = fn(ft, *xs) along dirs, checked against the reverse sweep:
    with a random weight u, ⟨u, J v⟩ from the tangent must equal Σ_j ⟨(Jᵀu)_j, v_j⟩
    from the adjoints."""
    t.forward_tangents(xs, dirs)
    tan = np.asarray(t.tangent(out))
    assert tan.shape == out.shape
    u = rng.uniform(0.5, 1.5, size=out.shape)
    with ft.Tape() as t2:       # the same expression, reduced with u, on a new tape
        xs2 = [t2.var(np.asarray(x.value)) for x in xs]
        loss = ft.sum(t2.constant(u) * fn(ft, *xs2))
    grads = t2.gradient(loss, xs2)
    lhs = float(np.sum(u * tan))
    rhs = sum(float(np.sum(np.asarray(g) * np.asarray(v))) for g, v in zip(grads, dirs,
                                                                         strict=True))
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-12)
    return tan


# -- (a) every elementwise op of the registry ------------------------------------------

@pytest.mark.parametrize("row", ELEMENTWISE_ROWS, ids=repr)
@pytest.mark.parametrize("layout", ["scalar", "array"])
def test_elementwise_tangent_vs_fd_and_reverse(row, layout, rng):
    shapes = [()] * row.arity if layout == "scalar" else (
        [(3, 1), (4,)] if row.arity == 2 else [(2, 3)])
    if layout == "array" and "reshape" in row.expr:
        shapes = [(2, 3)]
    for _ in range(3):
        args = [rng.uniform(lo, hi, size=s) if s else float(rng.uniform(lo, hi))
                for (lo, hi), s in zip(row.dom, shapes)]
        dirs = [rng.standard_normal(s) if s else float(rng.standard_normal()) for s in shapes]
        t, xs, out = _record(row.fn, args)
        if layout == "scalar" and "reshape" not in row.expr:
            assert t.scalar_layout
        tan = _tangent_and_adjoint_check(row.fn, t, xs, out, dirs, rng)
        fd = _directional_fd(lambda *a: row.fn(NP, *a), args, dirs)
        np.testing.assert_allclose(tan, fd, rtol=1e-6, atol=1e-7, err_msg=repr(row))


def test_rows_cover_every_elementwise_op():
    # the rows come from the registry; a new op gets a row here without an edit
    from fastape import registry
    assert {r.name.split("_")[0] for r in ELEMENTWISE_ROWS} >= {
        e.name.lower().split("_")[0] for e in registry.ELEMENTWISE}


# -- (b) structural and linear-algebra ops ------------------------------------------------

W23 = np.array([[0.7, -1.1, 0.4], [1.3, 0.2, -0.9]])
XZ = np.array([[2.0, 0.0, 3.0], [0.0, 0.0, 1.5]])          # zeros for prod / cumprod
MASK = np.array([[0.0], [1.0]])                           # zeroes row 0 (a zero norm)

EXTRA_ROWS = [
    ("matmul_transposed", lambda m, x: m.sum(m.matmul(x.T, x) * np.arange(9.0).reshape(3, 3)),
     X23),
    ("matmul_batched", lambda m, x: m.sum(m.sin(m.matmul(m.reshape(x, (2, 3, 1)),
                                                        m.reshape(x, (2, 1, 3))))), X23),
    ("matmul_broadcast_batch", lambda m, x: m.sum(m.cos(m.matmul(
        m.reshape(x, (2, 1, 3)), x.T))), X23),
    ("matvec", lambda m, x: m.sum(m.matmul(x, x[0] * 2.0) ** 2), X23),
    ("inv", lambda m, x: m.sum(m.linalg.inv(m.matmul(x, x.T) + np.eye(2)) * W23[:, :2]), X23),
    ("solve_matrix_rhs", lambda m, x: m.sum(m.linalg.solve(m.matmul(x, x.T) + np.eye(2), x)
                                            * W23), X23),
    ("logdet", lambda m, x: m.linalg.slogdet(m.matmul(x.T, x) + np.eye(3))[1], X23),
    ("det3", lambda m, x: m.linalg.det(m.matmul(x.T, x) + 0.5 * np.eye(3)), X23),
    ("prod_one_zero", lambda m, x: m.sum(m.prod(x, axis=1) * np.array([1.0, 2.0])),
     np.array([[2.0, 0.0, 3.0], [1.0, -2.0, 1.5]])),
    ("prod_two_zeros", lambda m, x: m.prod(x[1]) + m.prod(x), XZ),
    ("cumprod_zeros", lambda m, x: m.sum(m.cumprod(x, axis=1) * W23)
     + m.sum(m.cumprod(x) ** 2), XZ),
    ("cumsum_axis0", lambda m, x: m.sum(m.cumsum(x, axis=0) * W23), X23),
    ("max_axis0", lambda m, x: m.sum(m.max(x, axis=0) * np.array([1.0, 2.0, 3.0])), X23),
    ("min_axis1", lambda m, x: m.sum(m.min(x, axis=1) ** 3), X23),
    ("where_broadcast", lambda m, x: m.sum(m.where(W23 > 0, x ** 2, 3.0 * x[0, 0])), X23),
    ("norm_axis_zero_row", lambda m, x: m.sum(m.linalg.norm(x * MASK, axis=1) * 3.0)
     + m.linalg.norm(x[:, 0]), X23),
    ("broadcast_rows", lambda m, x: m.sum((x[0] + np.zeros((4, 3))) * np.arange(12.0)
                                          .reshape(4, 3)), X23),
    ("concatenate_axis0", lambda m, x: m.sum(m.concatenate([x, x[:1] * 2.0]) ** 2), X23),
]
# a custom_vjp function has no tangent rule (tests/test_custom.py checks that it raises)
ALL_STRUCTURAL = [(n, f, X23) for n, f in STRUCTURAL_ROWS if n != "custom_vjp"] + EXTRA_ROWS


@pytest.mark.parametrize("name,fn,x", ALL_STRUCTURAL, ids=[r[0] for r in ALL_STRUCTURAL])
def test_structural_tangent_vs_fd_and_reverse(name, fn, x, rng):
    for _ in range(2):
        v = rng.standard_normal(x.shape)
        t, xs, out = _record(fn, [x])
        tan = _tangent_and_adjoint_check(fn, t, xs, out, [v], rng)
        fd = _directional_fd(lambda a: fn(NP, a), [x], [v])
        np.testing.assert_allclose(tan, fd, rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("name,fn", [
    ("solve", lambda m, a, b: m.linalg.solve(a, b)),
    ("inv", lambda m, a, b: m.linalg.inv(a) @ b),
    ("matmul_batched", lambda m, a, b: m.matmul(m.stack([a, a.T]), b)),
    ("transpose_index", lambda m, a, b: m.transpose(a)[::-1] * b[:, 0]),
])
def test_array_valued_tangents_vs_fd(name, fn, rng):
    """Tangents of array outputs element by element, two seeded inputs."""
    a = rng.standard_normal((3, 3)) + 3.0 * np.eye(3)
    b = rng.standard_normal((3, 2))
    da, db = rng.standard_normal(a.shape), rng.standard_normal(b.shape)
    with ft.Tape() as t:
        A, B = t.var(a), t.var(b)
        out = fn(ft, A, B)
    t.forward_tangents([A, B], [da, db])
    fd = _directional_fd(lambda p, q: fn(NP, p, q), [a, b], [da, db])
    np.testing.assert_allclose(t.tangent(out), fd, rtol=1e-6, atol=1e-7)


def test_det_tangent_at_a_singular_matrix_is_the_cofactor_contraction():
    # d det A = Σ cof(A)_ij dA_ij, also where det A = 0 (no division by it)
    a = np.array([[1.0, 2.0], [2.0, 4.0]])
    da = np.array([[0.3, -0.7], [1.1, 0.5]])
    with ft.Tape() as t:
        A = t.var(a)
        d = ft.linalg.det(A)
    t.forward_tangents([A], [da])
    cof = np.array([[a[1, 1], -a[1, 0]], [-a[0, 1], a[0, 0]]])
    assert d.value == 0.0
    assert t.tangent(d) == pytest.approx(float(np.sum(cof * da)), rel=1e-14)
    # rank n - 2: every cofactor is 0
    with ft.Tape() as t:
        A = t.var(np.ones((3, 3)))
        d = ft.linalg.det(A)
    t.forward_tangents([A], [np.arange(9.0).reshape(3, 3)])
    assert t.tangent(d) == 0.0
    # a singular 3x3 of rank 2 against its cofactor matrix by minors
    a = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    da = np.array([[0.5, -1.0, 0.25], [2.0, 0.0, -0.5], [1.0, 1.5, -2.0]])
    cof = np.array([[(-1) ** (i + j) * np.linalg.det(np.delete(np.delete(a, i, 0), j, 1))
                     for j in range(3)] for i in range(3)])
    with ft.Tape() as t:
        A = t.var(a)
        d = ft.linalg.det(A)
    t.forward_tangents([A], [da])
    assert t.tangent(d) == pytest.approx(float(np.sum(cof * da)), rel=1e-9, abs=1e-12)


def test_cumprod_and_prod_tangents_with_zeros_closed_form():
    x = np.array([2.0, 0.0, 3.0, 0.0, 5.0])
    v = np.array([1.0, -2.0, 0.5, 3.0, -1.0])
    with ft.Tape() as t:
        X = t.var(x)
        c = ft.cumprod(X)
        p = ft.prod(X[:3])
    t.forward_tangents([X], [v])
    want = [sum(v[q] * np.prod([x[s] for s in range(r + 1) if s != q]) for q in range(r + 1))
            for r in range(5)]
    np.testing.assert_array_equal(t.tangent(c), want)
    assert t.tangent(p) == v[1] * x[0] * x[2]


def test_max_tangent_follows_the_first_maximum():
    with ft.Tape() as t:
        X = t.var(np.array([1.0, 3.0, 3.0, -1.0]))
        m = ft.max(X)
        n = ft.min(X)
    t.forward_tangents([X], [np.array([10.0, 20.0, 30.0, 40.0])])
    assert t.tangent(m) == 20.0           # the first of the tied maxima, as the reverse
    assert t.tangent(n) == 40.0


# -- (c) vector mode = p single-direction sweeps, both layouts ------------------------------

def _scalar_program(m, a, b):
    s = a
    for _ in range(5):
        s = m.sin(s) * b + m.exp(-s * s) - a / (b * b + 1.0)
    return s


def _array_program(m, a, b):
    return m.sum(m.tanh(m.matmul(a, b)) * m.cumsum(b, axis=0)[:2]) + m.linalg.norm(a)


@pytest.mark.parametrize("layout", ["scalar", "array"])
def test_vector_mode_equals_single_sweeps(layout, rng):
    if layout == "scalar":
        args, fn = [0.7, -1.3], _scalar_program
    else:
        args, fn = [rng.standard_normal((2, 3)), rng.standard_normal((3, 4))], _array_program
    p = 5
    dirs = [rng.standard_normal((p,) + np.shape(a)) for a in args]
    t, xs, out = _record(fn, args)
    assert t.scalar_layout == (layout == "scalar")
    t.forward_tangents(xs, dirs, p=p)
    vec = t.tangent(out)
    vec_in = t.tangent(xs[1])
    assert vec.shape == (p,) + out.shape
    np.testing.assert_array_equal(vec_in, dirs[1])
    for k in range(p):
        t.forward_tangents(xs, [d[k] for d in dirs])
        np.testing.assert_array_equal(vec[k], t.tangent(out))
        fd = _directional_fd(lambda *a: fn(NP, *a), args, [d[k] for d in dirs])
        assert vec[k] == pytest.approx(float(fd), rel=1e-6, abs=1e-7)


# vector-mode MATMUL (matmul_tangents): its checks hoisted out of the directions, and a
# matrix-vector product's directions taken as one gemm; against one sweep per direction
MATMUL_CASES = [
    ("matvec_constant_A", lambda A, x: A @ x, (4, 3), (3,), False),
    ("matvec_constant_A_seeded", lambda A, x: A @ x, (4, 3), (3,), True),
    ("vecmat", lambda A, x: x @ A, (3, 4), (3,), False),
    ("matvec_transposed", lambda A, x: A.T @ x, (3, 4), (3,), False),
    ("matmat", lambda A, x: A @ ft.reshape(x, (3, 2)), (4, 3), (6,), True),
    ("batched", lambda A, x: ft.matmul(ft.stack([A, 2.0 * A]), x), (4, 3), (3,), False),
    # one direction with a constant factor marked finite: one product a batch written
    # straight into the node's tangent (matmul_tangent's beta = 0 path), left and right
    ("batched_constant", lambda A, x: ft.matmul(A, ft.reshape(x, (3, 2))), (2, 4, 3), (6,),
     False),
    ("matmat_constant_right", lambda A, x: ft.reshape(x, (2, 3)) @ A, (3, 4), (6,), False),
]


@pytest.mark.parametrize("name,fn,sa,sx,seed_a", MATMUL_CASES, ids=[c[0] for c in MATMUL_CASES])
def test_vector_mode_matmul_equals_single_sweeps(name, fn, sa, sx, seed_a, rng):
    A0, x0 = rng.standard_normal(sa), rng.standard_normal(sx)
    p = 6
    dA, dx = rng.standard_normal((p,) + sa), rng.standard_normal((p,) + sx)
    dx[2] = 0.0                 # one direction without x's tangent
    with ft.Tape() as t:
        A = t.constant(A0)      # a constant: its tangents are zero unless seeded
        x = t.var(x0)
        out = fn(A, x)
    leaves, seeds = ([A, x], [dA, dx]) if seed_a else ([x], [dx])
    t.forward_tangents(leaves, seeds, p=p)
    vec = t.tangent(out)
    for k in range(p):
        t.forward_tangents(leaves, [s[k] for s in seeds])
        np.testing.assert_allclose(vec[k], t.tangent(out), rtol=1e-14, atol=1e-15)
        want = fn(dA[k], x0) + fn(A0, dx[k]) if seed_a else fn(A0, dx[k])
        np.testing.assert_allclose(vec[k], np.asarray(want), rtol=1e-13, atol=1e-14)


def test_vector_mode_matmul_infinite_entry():
    """An infinite entry of A meets a zero tangent of x in some directions: those terms
    contribute nothing (the per-entry path), in vector mode as in one direction."""
    A0 = np.array([[np.inf, 1.0], [2.0, 3.0]])
    with ft.Tape() as t:
        A = t.constant(A0)
        x = t.var(np.array([1.0, 2.0]))
        out = A @ x
    dirs = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, -2.0]])
    t.forward_tangents([x], [dirs], p=3)
    vec = t.tangent(out)
    np.testing.assert_array_equal(vec, [[1.0, 3.0], [np.inf, 5.0], [-2.0, -6.0]])
    for k in range(3):
        t.forward_tangents([x], [dirs[k]])
        np.testing.assert_array_equal(vec[k], t.tangent(out))


@pytest.mark.parametrize("dx,want", [([0.0, 1.0, 1.0], [3.0, 9.0]),
                                     ([1.0, 1.0, 1.0], [np.inf, 12.0])])
def test_one_direction_matmul_unscanned_factor_meets_zero_tangent(dx, want):
    """A factor larger than the product (A here, k = 3 > 1 column) goes to BLAS unscanned;
    an inf in it meeting a zero tangent makes BLAS's product NaN, and the tangent is
    then computed term by term: the zero tangent contributes nothing, a nonzero one
    carries the inf."""
    with ft.Tape() as t:
        A = t.var(np.array([[np.inf, 1.0, 2.0], [3.0, 4.0, 5.0]]))
        x = t.var(np.array([1.0, 2.0, 3.0]))
        out = A @ x
    t.forward_tangents([x], [np.array(dx)])
    np.testing.assert_array_equal(t.tangent(out), want)


def test_vector_mode_supports_across_blocks_and_calls(rng):
    """Scalar layout, vector mode: each node's k-loop runs over the support of its
    tangents (Tape.tspan), and a kept arena's stale entries outside the new support are
    zeroed. jacobian(fwd) of a 128-input scalar loop (two blocks of 64 identity seeds,
    the arena kept between blocks and calls) against the gradient, at several points."""
    def f(x):
        s = 0.0
        for i in range(len(x) - 1):
            s = s + ft.sin(x[i]) * x[i + 1] + 0.1 * x[(5 * i) % len(x)] ** 2
        return s
    x = rng.standard_normal(128)
    F = ft.compile(f, x)
    assert F.traces[-1].tape.scalar_layout
    for _ in range(3):
        x = rng.standard_normal(128)
        np.testing.assert_allclose(F.jacobian(x, mode="fwd"), F.grad(x), rtol=1e-13,
                                   atol=1e-14)
    # sparse seeds of different supports, one tape: the same as one sweep a direction
    with ft.Tape() as t:
        xs = [t.var(float(v)) for v in x[:6]]
        out = ft.exp(xs[0] * xs[1]) + xs[2] * xs[3] - ft.sin(xs[4] + xs[5])
    for seed in (np.eye(6)[[0, 2, 4]], np.eye(6)[[5, 1, 3]]):
        t.forward_tangents(xs, list(seed.T), p=3)
        vec = t.tangent(out)
        for k in range(3):
            t.forward_tangents(xs, list(seed[k]))
            assert vec[k] == t.tangent(out)


def test_vector_mode_recovers_the_gradient():
    x0 = np.array([0.3, -0.4, 1.2])
    with ft.Tape() as t:
        x = t.var(x0)
        y = ft.sum(ft.sin(x) * x[::-1])
    g = t.gradient(y, x)
    t.forward_tangents([x], [np.eye(3)], p=3)
    np.testing.assert_allclose(t.tangent(y), g, rtol=1e-15)
    np.testing.assert_array_equal(t.tangent(x), np.eye(3))


# -- (d) a zero tangent contributes nothing, even through an infinite partial ---------------

def test_zero_tangent_through_an_infinite_partial():
    # ∂sqrt/∂x is inf at 0: an unseeded x must still give tangent 0, not NaN
    with ft.Tape() as t:
        x, y = t.var(0.0), t.var(2.0)
        r = ft.sqrt(x)
        z = r * y
    assert t.scalar_layout
    t.forward_tangents([y], [1.0])
    assert t.tangent(r) == 0.0 and t.tangent(z) == 0.0
    t.forward_tangents([x, y], [[0.0, 1.0], [1.0, 0.0]], p=2)
    np.testing.assert_array_equal(t.tangent(r), [0.0, np.inf])
    with ft.Tape() as t:                  # the array kernels, and a structural op
        x, y = t.var(np.zeros(3)), t.var(np.full(3, 2.0))
        r = ft.sqrt(x)
        z = ft.sum(r * y)
        d = ft.dot(r, y)
    t.forward_tangents([y], [np.ones(3)])
    np.testing.assert_array_equal(t.tangent(r), 0.0)
    assert t.tangent(z) == 0.0 and t.tangent(d) == 0.0
    # a matrix product with an inf in the constant factor: a zero tangent entry skips it
    with ft.Tape() as t:
        x = t.var(np.array([1.0, 2.0]))
        c = t.constant(np.array([[np.inf, 1.0], [2.0, 3.0]]))
        z = ft.matmul(c, x)
    t.forward_tangents([x], [np.array([0.0, 1.0])])
    np.testing.assert_array_equal(t.tangent(z), [1.0, 3.0])
    F = ft.compile(lambda a, b: np.sqrt(a) * b, 0.0, 2.0, argnums=(0, 1))
    assert F.jvp((0.0, 2.0), (0.0, 1.0)) == (0.0, 0.0)


def test_constants_can_be_seeded():
    with ft.Tape() as t:
        x = t.var(2.0)
        c = t.constant(3.0)
        z = x * c
    t.forward_tangents([c], [1.0])
    assert t.tangent(z) == 2.0


# -- (e) compiled jvp and jacobian --------------------------------------------------------

def _loop50(x):
    s = 0.0
    for i in range(50):
        s = s + (x[i % 5] - 0.1 * i) ** 2 * np.sin(x[(i + 1) % 5])
    return s


def test_compiled_jvp_grouped_scalar_tape(rng):
    x0 = rng.standard_normal(5)
    F = ft.compile(_loop50, x0)
    assert F.traces[-1].run_count > 0          # grouped: the run-wise fused tangent sweep
    for _ in range(3):
        x, v = rng.standard_normal(5), rng.standard_normal(5)
        value, tan = F.jvp(x, v)
        assert value == pytest.approx(_loop50(x), rel=1e-13)
        assert tan == pytest.approx(float(F.grad(x) @ v), rel=1e-12, abs=1e-12)
        assert tan == pytest.approx(float(_directional_fd(_loop50, [x], [v])), rel=1e-6)
        J = F.jacobian(x, mode="fwd")
        np.testing.assert_allclose(J, F.jacobian(x, mode="rev"), rtol=1e-12, atol=1e-13)
        assert J.shape == (5,)


def test_compiled_jvp_array_function_at_new_inputs(rng):
    def f(w, x):
        return np.tanh(w @ x) * x[:2]

    F = ft.compile(f, np.ones((2, 3)), np.ones(3), argnums=(0, 1))
    for _ in range(3):
        w, x = rng.standard_normal((2, 3)), rng.standard_normal(3)
        dw, dx = rng.standard_normal((2, 3)), rng.standard_normal(3)
        value, tan = F.jvp((w, x), (dw, dx))
        np.testing.assert_allclose(value, f(w, x), rtol=1e-14)
        np.testing.assert_allclose(tan, _directional_fd(f, [w, x], [dw, dx]), rtol=1e-6,
                                   atol=1e-8)
        Jw, Jx = F.jacobian(w, x, mode="fwd")
        Rw, Rx = F.jacobian(w, x, mode="rev")
        assert Jw.shape == (2, 2, 3) and Jx.shape == (2, 3)
        np.testing.assert_allclose(Jw, Rw, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(Jx, Rx, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(np.tensordot(Jw, dw, 2) + Jx @ dx, tan, rtol=1e-12)


def test_compiled_jvp_follows_a_flipped_guard(rng):
    def f(x):
        if x[0] > 0:
            return np.sum(x ** 3)
        return np.sum(np.sin(x))

    F = ft.compile(f, np.array([1.0, 2.0]))
    v = np.array([0.5, -1.0])
    for x in (np.array([1.5, -0.5]), np.array([-0.3, 0.8]), np.array([0.2, 0.1])):
        value, tan = F.jvp(x, v)
        assert value == pytest.approx(f(x), rel=1e-14)
        want = np.sum(3 * x ** 2 * v) if x[0] > 0 else np.sum(np.cos(x) * v)
        assert tan == pytest.approx(want, rel=1e-13)
        g = np.diag(3 * x ** 2) if x[0] > 0 else np.diag(np.cos(x))
        # the Jacobian of the sum is the gradient; both modes at the flipped point
        np.testing.assert_allclose(F.jacobian(x, mode="fwd"), g.sum(0), rtol=1e-13)
        np.testing.assert_allclose(F.jacobian(x, mode="rev"), g.sum(0), rtol=1e-13)
    assert len(F.traces) == 2


def test_compiled_jacobian_modes_agree_and_blocks_of_64(rng):
    A = rng.standard_normal((3, 70))

    def f(x):
        return np.cumsum(np.tanh(A @ x) ** 2)

    F = ft.compile(f, np.zeros(70))
    x = rng.standard_normal(70)
    Jf = F.jacobian(x, mode="fwd")     # 70 inputs: a block of 64 directions, then 6
    Jr = F.jacobian(x, mode="rev")
    Ja = F.jacobian(x)                 # auto: 3 outputs < 70 inputs -> rev
    assert Jf.shape == (3, 70)
    np.testing.assert_allclose(Jf, Jr, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(Ja, Jr)
    h = 1e-6
    fd = np.stack([(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(70)], axis=1)
    np.testing.assert_allclose(Jf, fd, rtol=1e-5, atol=1e-7)
    G = ft.compile(lambda s: ft.stack([s, s * s, np.sin(s)]) * 2.0, 0.5)
    np.testing.assert_allclose(G.jacobian(0.7), 2 * np.array([1.0, 1.4, math.cos(0.7)]))
    H = ft.compile(lambda s: s ** 3, 0.5)
    j = H.jacobian(2.0, mode="fwd")
    assert np.shape(j) == () and float(j) == 12.0 == float(H.jacobian(2.0, mode="rev"))


def test_compiled_pytree_arguments(rng):
    def f(params, x):
        return np.tanh(params["w"] @ x + params["b"]) * params["s"]

    params = {"w": rng.standard_normal((2, 3)), "b": rng.standard_normal(2), "s": 1.5}
    x = rng.standard_normal(3)
    F = ft.compile(f, params, x)
    dp = {"w": rng.standard_normal((2, 3)), "b": rng.standard_normal(2), "s": 0.5}
    value, tan = F.jvp((params, x), dp)
    np.testing.assert_allclose(value, f(params, x), rtol=1e-14)
    keys = sorted(params)
    flat = [np.asarray(params[k], float) for k in keys]

    def g(*leaves):
        return f(dict(zip(keys, [float(v) if np.ndim(v) == 0 else v for v in leaves],
                          strict=True)), x)

    fd = _directional_fd(g, flat, [np.asarray(dp[k], float) for k in keys])
    np.testing.assert_allclose(tan, fd, rtol=1e-6, atol=1e-8)
    Jf, Jr = F.jacobian(params, x, mode="fwd"), F.jacobian(params, x, mode="rev")
    assert set(Jf) == set(params) and Jf["w"].shape == (2, 2, 3) and Jf["s"].shape == (2,)
    for k in keys:
        np.testing.assert_allclose(Jf[k], Jr[k], rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(np.tensordot(Jf["w"], dp["w"], 2) + Jf["b"] @ dp["b"]
                               + Jf["s"] * dp["s"], tan, rtol=1e-12)


# -- (f) bad inputs ---------------------------------------------------------------------

def test_bad_inputs_are_refused_and_leave_the_last_sweep():
    with ft.Tape() as t:
        x = t.var(np.array([1.0, 2.0]))
        y = t.var(3.0)
        z = ft.sum(x) * y
    with pytest.raises(TapeError, match="no tangent sweep"):
        t.tangent(z)
    t.forward_tangents([x, y], [np.ones(2), 0.0])
    assert t.tangent(z) == 6.0
    with pytest.raises(ShapeError, match=r"tangents\[0\] has shape \(3,\).*\(2,\)"):
        t.forward_tangents([x], [np.ones(3)])
    with pytest.raises(ShapeError, match=r"tangents\[1\] has shape \(\).*\(2,\)"):
        t.forward_tangents([x, y], [np.ones((2, 2)), 1.0], p=2)
    with pytest.raises(TypeError, match="complex"):
        t.forward_tangents([x], [np.ones(2) * 1j])
    with pytest.raises(TypeError, match="inputs\\[0\\].*not a leaf"):
        t.forward_tangents([z], [1.0])
    with pytest.raises(TypeError, match="must be a fastape value"):
        t.forward_tangents([1.0], [1.0])
    with pytest.raises(TypeError, match="p must be"):
        t.forward_tangents([x], [np.ones((1, 2))], p=0)
    with pytest.raises(ShapeError, match="1 inputs but 2 tangents"):
        t.forward_tangents([x], [np.ones(2), 1.0])
    with pytest.raises(TypeError):
        t.forward_tangents([x], ["ab"])
    assert t.tangent(z) == 6.0 # the refused calls changed nothing
    with ft.Tape() as other:
        w = other.var(1.0)
    with pytest.raises(TapeError, match="another tape"):
        t.forward_tangents([w], [1.0])


def test_tangent_of_a_value_recorded_after_the_sweep():
    t = ft.Tape()
    with t:
        x = t.var(2.0)
        y = x * x
        t.forward_tangents([x], [1.0])
        assert t.tangent(y) == 4.0
        late = y + 1.0
        with pytest.raises(TapeError, match="recorded after"):
            t.tangent(late)
        t.forward_tangents([x], [1.0])
        assert t.tangent(late) == 4.0


def test_compiled_bad_tangents():
    F = ft.compile(lambda a, b: np.sum(a * b), np.ones(3), 2.0, argnums=(0, 1))
    with pytest.raises(ShapeError):
        F.jvp((np.ones(3), 2.0), (np.ones(4), 1.0))
    with pytest.raises(TypeError, match="tuple of 2"):
        F.jvp((np.ones(3), 2.0), np.ones(3))
    with pytest.raises(TypeError):
        F.jvp((np.ones(3), 2.0), (np.ones(3) * 1j, 1.0))
    with pytest.raises(ValueError, match="mode"):
        F.jacobian(np.ones(3), 2.0, mode="forward")
    assert F.jvp((np.ones(3), 2.0), (np.ones(3), 1.0)) == (6.0, 9.0)


# chains (RUN_CHAIN: s = s op t, every node after the first reading the one before it)
# take their own tangent loop in a grouped compiled jvp: sums, differences and products
# (instantiated loops) and a maximum (the op table's loop); against the eager jvp of the
# same function (ungrouped: the general tangent sweep) bit for bit, and ⟨∇f, v⟩
def _chain_sum(x):
    s = 0.0
    for i in range(len(x) - 1):
        s = s + x[i] * x[i + 1]
    return s


def _chain_sub(x):
    s = 1.0
    for i in range(len(x)):
        s = s - 0.5 * x[i] ** 2
    return s


def _chain_prod(x):
    p = 1.0
    for i in range(len(x)):
        p = p * ft.sin(x[i])
    return p


def _chain_max(x):
    m = -5.0
    for i in range(len(x)):
        m = ft.maximum(m, ft.sin(x[i]))
    return m


@pytest.mark.parametrize("f", [_chain_sum, _chain_sub, _chain_prod, _chain_max],
                         ids=["sum", "sub", "prod", "max"])
def test_chain_tangent_loop(f, rng):
    n = 200
    x0 = rng.uniform(0.5, 1.5, n)
    F = ft.compile(f, x0)
    assert F.traces[0].chain_run_count >= 1
    for _ in range(3):
        x, v = rng.uniform(0.5, 1.5, n), rng.standard_normal(n)
        v[::7] = 0.0
        val, tan = F.jvp(x, v)
        want_val, want_tan = ft.jvp(f, (x,), (v,))
        assert val == want_val
        assert tan == want_tan
        np.testing.assert_allclose(tan, F.grad(x) @ v, rtol=1e-12, atol=1e-14)


def test_chain_tangent_loop_zero_tangent_meets_inf():
    """A product chain through an inf: a zero tangent times the inf partial contributes
    nothing (the chain loop's NaN redo), a nonzero one carries it; as the eager jvp."""
    x0 = np.array([2.0, np.inf, 3.0, 0.5] * 20)
    F = ft.compile(lambda x: _chain_prod_plain(x), x0)
    assert F.traces[0].chain_run_count >= 1
    for v in (np.where(np.isinf(x0), 0.0, 1.0), np.ones_like(x0)):
        got = F.jvp(x0, v)
        want = ft.jvp(_chain_prod_plain, (x0,), (v,))
        np.testing.assert_array_equal(got, want)


def _chain_prod_plain(x):
    p = 1.0
    for i in range(len(x)):
        p = p * x[i]
    return p
