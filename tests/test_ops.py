"""Table-driven gradient tests: every op of the registry has rows here, derived
from its block (its test expressions, or its public function, over its domain).

Each row is one expression written once as ``fn(m, x[, y])`` over a namespace
``m``: it is recorded with ``m = fastape``, evaluated for finite differences with
plain numpy (``m = NP``, independent of the tape), and differentiated by the
pure-Python oracle (``m = fastape.reference``). Completeness is checked from
the opcodes the rows actually record, so an op without a row fails the suite.
"""

import importlib
import types

import numpy as np
import pytest
import scipy.special
from helpers import central_diff

import fastape as ft
from fastape import _ops, registry
from fastape import reference as R
from fastape._ops import Op


def _np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


NP = types.SimpleNamespace(**{n: getattr(np, n) for n in dir(np) if not n.startswith("_")})
# the numpy/scipy callable each public op answers to (the registry names it), and
# independent numpy spellings of the ops numpy has no ufunc for
for _e in registry.ELEMENTWISE:
    if _e.public and _e.numpy:
        _module, _, _name = _e.numpy[0].rpartition(".")
        setattr(NP, _e.public, getattr(importlib.import_module(_module), _name))
NP.sigmoid = _np_sigmoid
NP.polygamma = scipy.special.polygamma         # a Python function in scipy, not a ufunc
NP.softplus = lambda x: np.logaddexp(0.0, x)
NP.relu = lambda x: np.maximum(x, 0.0)
NP.reciprocal = lambda x: 1.0 / np.asarray(x, dtype=float)


class Row:
    def __init__(self, name, arity, expr, domain, ref=True, oracle=False):
        self.name, self.arity, self.expr, self.dom = name, arity, expr, domain
        # a reference by another route (mpmath): scipy's accuracy, not the last ulp
        self.ref_rel = 1e-11 if oracle else 1e-13
        self.ref = ref and "reshape" not in expr        # the reference has scalars only
        args = "m, x" if arity == 1 else "m, x, y"
        self.fn = eval(f"lambda {args}: {expr}")  # noqa: S307 - the registry's own test text

    def __repr__(self):
        return self.name


def _rows():
    """One row per test expression of each registry block (default: the public
    function applied to the operands)."""
    rows = []
    for e in registry.ELEMENTWISE:
        exprs = e.test or (f"m.{e.public}(x)" if e.arity == 1 else f"m.{e.public}(x, y)",)
        for j, expr in enumerate(exprs):
            rows.append(Row(e.name.lower() + (f"_{j}" if j else ""), e.arity, expr, e.domain,
                            oracle=e.name in R.ORACLE_OPS))
    return rows


ELEMENTWISE_ROWS = _rows()


def _points(row, rng, shape=()):
    return [rng.uniform(lo, hi, size=shape) if shape else float(rng.uniform(lo, hi))
            for lo, hi in row.dom[: row.arity]]


@pytest.mark.parametrize("row", ELEMENTWISE_ROWS, ids=repr)
def test_scalar_gradient_vs_finite_differences_and_reference(row, rng):
    argnums = tuple(range(row.arity))
    for _ in range(4):
        args = _points(row, rng)
        value, grads = ft.value_and_grad(lambda *a: row.fn(ft, *a), argnums)(*args)
        assert value == pytest.approx(float(row.fn(NP, *args)), rel=1e-13, abs=1e-300)
        for j in argnums:
            fd = central_diff(lambda *a: row.fn(NP, *a), args, j)
            assert grads[j] == pytest.approx(fd, rel=1e-6, abs=1e-7), (row, args, j)
        if row.ref:
            ref_value, ref_grads = R.value_and_grad(lambda *a: row.fn(R, *a), argnums)(*args)
            assert value == pytest.approx(ref_value, rel=row.ref_rel / 10, abs=1e-300)
            assert list(grads) == pytest.approx(list(ref_grads), rel=row.ref_rel, abs=1e-300)


@pytest.mark.parametrize("row", ELEMENTWISE_ROWS, ids=repr)
def test_broadcast_array_gradient(row, rng):
    """f on arrays that broadcast: (3, 1) with (4,); the weighted sum makes every
    element's partial visible, and the broadcast operand's adjoint must sum back."""
    if "reshape" in row.expr:
        pytest.skip("reshapes its operand: no broadcasting to test")
    shapes = [(3, 1), (4,)] if row.arity == 2 else [(2, 3)]
    args = [rng.uniform(lo, hi, size=s) for (lo, hi), s in zip(row.dom, shapes)]
    w = rng.uniform(0.5, 1.5, size=np.broadcast_shapes(*[a.shape for a in args]))

    def loss(m):
        return lambda *a: m.sum(row.fn(m, *a) * w)

    argnums = tuple(range(row.arity))
    grads = ft.grad(loss(ft), argnums)(*args)
    for j in argnums:
        fd = central_diff(loss(NP), args, j)
        assert grads[j].shape == args[j].shape
        np.testing.assert_allclose(grads[j], fd, rtol=1e-6, atol=1e-6)


def test_numpy_dispatch_records_the_same_ops(rng):
    """The same rows written against numpy (np.sin on a fastape value) give the same
    gradients as the fastape functions."""
    for row in ELEMENTWISE_ROWS:
        if row.name in ("sigmoid", "softplus", "relu", "reciprocal") or "reshape" in row.expr:
            continue
        if row.name.startswith("polygamma"):    # scipy's is a Python function (np.asarray)
            continue
        args = _points(row, rng, (5,))
        argnums = tuple(range(row.arity))
        fn = row.fn
        g_np = ft.grad(lambda *a, fn=fn: np.sum(fn(NP, *a)), argnums)(*args)
        g_ft = ft.grad(lambda *a, fn=fn: ft.sum(fn(ft, *a)), argnums)(*args)
        for a, b in zip(g_np, g_ft, strict=True):
            np.testing.assert_array_equal(a, b)


# -- structural ops: checked against finite differences and closed forms ----------

X23 = np.array([[0.3, -1.2, 2.0], [1.5, 0.7, -0.4]])


@ft.custom_vjp
def _softplus_vjp(x):
    """softplus with its own reverse rule (a CALLBACK node on fastape values)."""
    return np.log1p(np.exp(x))


_softplus_vjp.defvjp(lambda x: (_softplus_vjp(x), x), lambda x, g: (g / (1.0 + np.exp(-x)),))


@ft.custom_jvp
def _sin_jvp(x):
    return np.sin(x)


_sin_jvp.defjvp(lambda p, t: (np.sin(p[0]), np.cos(p[0]) * t[0]))

STRUCTURAL_ROWS = [
    ("item", lambda m, x: x[1, 2] * x[0, 0]),
    ("slice", lambda m, x: m.sum(x[:, ::-2] ** 2)),
    ("strided", lambda m, x: m.sum(x[1] * x[0, ::-1]) + m.sum(x.reshape(-1)[4:0:-3] ** 2)),
    ("fancy_index_repeats", lambda m, x: m.sum(x[np.array([1, 1, 0]), 1:] ** 2)),
    ("bool_index", lambda m, x: m.sum(x[x > 0.5] ** 3)),
    ("broadcast", lambda m, x: m.sum((x[:, :1] + x[0]) ** 2)),
    ("sum_all", lambda m, x: m.sum(x) ** 2),
    ("sum_axis0", lambda m, x: m.sum(m.sum(x, axis=0) ** 2)),
    ("sum_axis1_keepdims", lambda m, x: m.sum((x - m.sum(x, axis=1, keepdims=True)) ** 2)),
    ("mean_axis", lambda m, x: m.sum(m.mean(x, axis=-1) ** 2)),
    ("prod", lambda m, x: m.prod(x)),
    ("prod_axis", lambda m, x: m.sum(m.prod(x, axis=0))),
    ("max", lambda m, x: m.max(x) * 2.0),
    ("max_axis", lambda m, x: m.sum(m.max(x, axis=1) ** 2)),
    ("min", lambda m, x: m.min(x) ** 2),
    ("min_axis", lambda m, x: m.sum(m.min(x, axis=0))),
    ("dot", lambda m, x: m.dot(x[0], x[1])),
    ("cumsum", lambda m, x: m.sum(m.sin(m.cumsum(x))) + m.sum(m.cumsum(x, axis=0) ** 2)),
    ("cumsum_axis1", lambda m, x: m.sum(m.cumsum(x, axis=-1) ** 3)),
    ("cumprod", lambda m, x: m.sum(m.cumprod(x, axis=1)) + m.sum(m.cumprod(x) ** 2)),
    ("cumprod_axis0", lambda m, x: m.sum(m.sin(m.cumprod(x, axis=0)))),
    ("where", lambda m, x: m.sum(m.where(x > 0.5, x ** 2, -x))),
    ("concatenate", lambda m, x: m.sum(m.concatenate([x, x ** 2], axis=1) ** 2)),
    ("stack", lambda m, x: m.sum(m.stack([x[0], x[1] ** 2], axis=1) ** 3)),
    ("reshape", lambda m, x: m.sum(m.reshape(x, (3, 2))[0] ** 2)),
    ("transpose", lambda m, x: m.sum(m.transpose(x)[0] * x[0, :2])),
    ("matmul", lambda m, x: m.sum(m.sin(m.matmul(x, x.T)))),
    ("solve", lambda m, x: m.sum(m.linalg.solve(m.matmul(x, x.T) + 3 * np.eye(2), x) ** 2)),
    ("det", lambda m, x: m.linalg.det(m.matmul(x, x.T) + np.eye(2))),
    ("slogdet", lambda m, x: m.linalg.slogdet(m.matmul(x, x.T) + np.eye(2))[1]),
    ("norm", lambda m, x: m.linalg.norm(x)),
    ("custom_vjp", lambda m, x: m.sum(_softplus_vjp(x) * x)),
    ("custom_jvp", lambda m, x: m.sum(_sin_jvp(x * x[0, 1]))),
]


@pytest.mark.parametrize("name,fn", STRUCTURAL_ROWS, ids=[r[0] for r in STRUCTURAL_ROWS])
def test_structural_gradient_vs_finite_differences(name, fn):
    value, g = ft.value_and_grad(lambda x: fn(ft, x))(X23)
    assert value == pytest.approx(float(fn(NP, X23)), rel=1e-13)
    fd = central_diff(lambda x: fn(NP, x), [X23], 0)
    assert g.shape == X23.shape
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7)


def test_cumprod_with_zeros_closed_form():
    # ∂/∂x_q Σ_r w_r Π_{s≤r} x_s, with zeros among the x (no division by x)
    x = np.array([2.0, 0.0, 3.0, 0.0, 5.0])
    w = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    g = ft.grad(lambda v: ft.sum(ft.cumprod(v) * w))(x)
    want = [sum(w[r] * np.prod([x[s] for s in range(r + 1) if s != q])
                for r in range(q, 5)) for q in range(5)]
    np.testing.assert_array_equal(g, want)
    g = ft.grad(lambda v: np.sum(np.cumsum(v) * w))(x)     # through numpy, and methods
    np.testing.assert_array_equal(g, np.cumsum(w[::-1])[::-1])
    with ft.Tape() as t:
        v = t.var(x)
        np.testing.assert_array_equal(v.cumsum().value, np.cumsum(x))
        np.testing.assert_array_equal(v.reshape(5, 1).cumprod(axis=0).value,
                                      np.cumprod(x).reshape(5, 1))


def test_prod_with_zeros_closed_form():
    # ∂/∂x_j Π x = Π_{i≠j} x_i, also where some x_i are 0
    g = ft.grad(lambda x: ft.prod(x))(np.array([2.0, 0.0, 3.0, 4.0]))
    np.testing.assert_array_equal(g, [0.0, 24.0, 0.0, 0.0])
    g = ft.grad(lambda x: ft.prod(x))(np.array([0.0, 0.0, 3.0]))
    np.testing.assert_array_equal(g, [0.0, 0.0, 0.0])


# -- second order: nested gradients (the recorded reverse sweep) ------------------------

def _nested_hessian(fn, args):
    """The Hessian of fn at args by grad of grad (the inner gradient recorded on the
    outer tape), row i being ∂(∂f/∂x_i)/∂x."""
    k = len(args)
    return np.array([[np.asarray(ft.grad(lambda *a, i=i: ft.grad(fn, argnums=i)(*a),
                                          argnums=j)(*args)) for j in range(k)]
                     for i in range(k)], dtype=float)


@pytest.mark.parametrize("row", ELEMENTWISE_ROWS, ids=repr)
def test_scalar_second_derivatives_vs_differences_of_the_gradient(row, rng):
    """Every op's second derivatives, through grad(grad(.)), against central differences
    of its (first-order, compiled-sweep) gradient."""
    f = lambda *a: row.fn(ft, *a)      # noqa: E731
    for _ in range(3):
        args = _points(row, rng)
        H = _nested_hessian(f, args)
        for i in range(row.arity):
            gi = lambda *a, i=i: ft.grad(f, argnums=i)(*a)     # noqa: E731
            for j in range(row.arity):
                fd = central_diff(gi, args, j, h=1e-5)
                assert H[i, j] == pytest.approx(fd, rel=1e-5, abs=1e-6), (row, args, i, j)
        assert H == pytest.approx(H.T, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("row", ELEMENTWISE_ROWS, ids=repr)
def test_array_hessian_vector_products(row, rng):
    """H·w for each operand of an array row, by the gradient of ⟨∇f, w⟩ recorded on
    the tape, against central differences of ⟨∇f, w⟩."""
    args = _points(row, rng, (3,))
    w = rng.uniform(0.5, 1.5, size=3)
    loss = lambda *a: ft.sum(row.fn(ft, *a))       # noqa: E731
    for i in range(row.arity):
        inner = lambda *a, i=i: ft.sum(ft.grad(loss, argnums=i)(*a) * w)      # noqa: E731
        for j in range(row.arity):
            hw = ft.grad(inner, argnums=j)(*args)
            fd = central_diff(lambda *a, i=i: float(np.sum(ft.grad(loss, argnums=i)(*a) * w)),
                              args, j, h=1e-5)
            np.testing.assert_allclose(hw, fd, rtol=1e-5, atol=1e-6, err_msg=repr(row))


@pytest.mark.parametrize("name,fn", STRUCTURAL_ROWS, ids=[r[0] for r in STRUCTURAL_ROWS])
def test_structural_hessian_vector_products(name, fn, rng):
    """Second order through every structural and linear-algebra op: H·w by grad of
    ⟨∇f, w⟩ against central differences of ⟨∇f, w⟩ (f's gradient by the compiled
    reverse sweep)."""
    w = rng.uniform(0.5, 1.5, size=X23.shape)
    f = lambda x: fn(ft, x)        # noqa: E731
    hw = ft.grad(lambda x: ft.sum(ft.grad(f)(x) * w))(X23)
    fd = central_diff(lambda x: float(np.sum(ft.grad(f)(x) * w)), [X23], 0, h=1e-5)
    assert hw.shape == X23.shape
    np.testing.assert_allclose(hw, fd, rtol=1e-5, atol=1e-6)


# -- completeness -----------------------------------------------------------------------

UNRECORDED = {Op.INPUT, Op.CONSTANT, Op.NUM_OPS}


def _recorded_ops():
    seen = set()
    rng = np.random.default_rng(0)
    for row in ELEMENTWISE_ROWS:
        for shape in ((), (3,)):
            with ft.Tape() as t:
                args = [t.var(a) for a in _points(row, rng, shape)]
                row.fn(ft, *args)
                # the gradient recorded on the tape: the derived partial ops
                ft.grad(lambda *a, fn=row.fn: ft.sum(fn(ft, *a)),
                        tuple(range(row.arity)))(*args)
            seen.update(int(o) for o in t.opcodes())
    for _, fn in STRUCTURAL_ROWS:
        with ft.Tape() as t:
            fn(ft, t.var(X23))
        seen.update(int(o) for o in t.opcodes())
    return seen


def test_every_op_has_a_row():
    missing = {o.name for o in Op if o not in UNRECORDED} - {
        Op(o).name for o in _recorded_ops()}
    assert not missing, f"ops without a row in tests/test_ops.py: {sorted(missing)}"


BASE_OPS = [o for o in _ops.ELEMENTWISE if not registry.BY_NAME[o.name].partial_of]


def test_every_elementwise_op_has_a_reference():
    """Every op of a block has a reference formula (the derived partial ops are
    checked against the blocks' second partials in tests/test_registry.py)."""
    names = {o.name for o in BASE_OPS}
    assert names == set(R.OPS), (names ^ set(R.OPS))


@pytest.mark.parametrize("op", BASE_OPS, ids=lambda o: o.name)
def test_op_table_matches_reference_formulas(op, rng):
    """The compiled table and the reference agree on value and partials, op by op,
    inside the op's domain (immediates of the *_K ops in [0.2, 2])."""
    e = registry.BY_NAME[op.name]
    for _ in range(5):
        x = float(rng.uniform(*e.domain[0]))
        y = float(rng.uniform(*e.domain[1])) if e.arity == 2 else float(rng.uniform(0.2, 2.0))
        if op.name == "POLYGAMMA_K":            # its immediate is an integer order
            y = float(rng.integers(0, 6))
        got = _ops.eval_op(op, x, y)
        want = R.OPS[op.name](x, y, y)
        rel = 1e-10 if op.name in R.ORACLE_OPS else 1e-12
        assert got == pytest.approx(tuple(want), rel=rel, abs=1e-300)


def test_hypot_is_accurate_and_safe_everywhere():
    """HYPOT takes sqrt(x² + y²) where the sum of squares is a normal double (fast: no
    libm call) and libm's hypot elsewhere: within 1.25 ulp of numpy's on random
    magnitudes over the whole range, exact at the edges (overflow, underflow, inf,
    NaN, zeros) where the naive formula fails."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal(20000) * 10.0 ** rng.uniform(-300, 300, 20000)
    y = rng.standard_normal(20000) * 10.0 ** rng.uniform(-300, 300, 20000)
    got, want = ft.hypot(x, y), np.hypot(x, y)
    ulp = np.spacing(want)
    assert np.max(np.abs(got - want) / ulp) <= 1.25
    edge = [(1e200, 1e200), (1e-200, 1e-200), (3e-310, 4e-310), (np.inf, np.nan),
            (np.nan, np.inf), (-np.inf, 1.0), (np.nan, 1.0), (0.0, 0.0), (-0.0, 5e-324),
            (1.7e308, 1.7e308)]
    a, b = np.array(edge).T
    with np.errstate(over="ignore"):         # hypot(1.7e308, 1.7e308) is inf
        np.testing.assert_array_equal(ft.hypot(a, b), np.hypot(a, b))
