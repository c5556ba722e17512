"""The op registry against every layer derived from it.

Walks each block of ``fastape/registry.py`` and fails when a layer lacks the op:
the compiled enum and its Python view, the committed ``.pyi`` stub, the public
``fastape.<name>`` function (and ``__all__``), numpy/scipy dispatch (the callable
named in the block records that op), the reference's formula (keyed by name), the
structural dispatch, and the second partials (checked against central differences
of the compiled first partials).
"""

import importlib
import math
from pathlib import Path

import numpy as np
import pytest

import fastape as ft
from fastape import _codegen, _ops, registry
from fastape import reference as R

ROOT = Path(__file__).parents[1]
CODES = registry.opcodes()
EW = registry.ELEMENTWISE


def test_enum_and_python_view_follow_the_registry():
    for name, code in CODES.items():
        assert int(getattr(ft.Op, name)) == code, name
    assert int(ft.Op.NUM_OPS) == len(CODES)
    assert {o.name for o in _ops.ELEMENTWISE} == {e.name for e in EW + registry.DERIVED}
    assert {o.name for o in _ops.STRUCTURAL} == {s.name for s in registry.STRUCTURAL}
    assert [c.name for c in ft.Cmp] == list(registry.COMPARISONS)


def test_arity_classes_and_b_fields():
    for e in EW:
        o = getattr(ft.Op, e.name)
        assert _ops.b_kind(o) == (2 if e.has_k else 1), e.name
    for s in registry.STRUCTURAL:
        assert _ops.b_kind(getattr(ft.Op, s.name)) == {"none": 0, "node": 1, "pool": 2}[s.b]


@pytest.mark.parametrize("name", sorted(_codegen.STUBS))
def test_committed_stubs_are_fresh(name):
    want = _codegen.STUBS[name](_codegen.load_registry())
    have = (ROOT / "src/fastape" / name).read_text()
    assert have == want, f"src/fastape/{name} is stale: run python src/fastape/_codegen.py --stub"


@pytest.mark.parametrize("e", [e for e in EW if e.public], ids=lambda e: e.name)
def test_public_function_and_reference(e):
    f = getattr(ft, e.public)
    assert e.public in ft.__all__
    assert f.__name__ == e.public
    assert e.name in R.OPS
    assert callable(getattr(R, e.public))
    # on plain numbers the public function evaluates the op with the tape's kernel
    x = [0.5 * (lo + hi) for lo, hi in e.domain[: e.arity]]
    want = _ops.eval_op(getattr(ft.Op, e.name), *x)[0]
    assert f(*x) == pytest.approx(want, rel=1e-15, nan_ok=True)


@pytest.mark.parametrize("e", [e for e in EW if e.numpy], ids=lambda e: e.name)
def test_numpy_and_scipy_callables_record_the_op(e):
    for dotted in e.numpy:
        module, _, name = dotted.rpartition(".")
        fn = getattr(importlib.import_module(module), name)
        with ft.Tape() as t:
            args = [t.var(np.full(3, 0.5 * (lo + hi))) for lo, hi in e.domain[: e.arity]]
            if e.fixed:
                # not differentiated in its first operand: a value there raises, a
                # constant records the op
                with pytest.raises(NotImplementedError, match=f"argument '{e.fixed}'"):
                    fn(*args)
                args[0] = np.full(3, float(round(0.5 * sum(e.domain[0]))))
            fn(*args)
        assert t.opcodes()[-1] == getattr(ft.Op, e.name), dotted


def _points(e, rng, count=6):
    for _ in range(count):
        yield [float(rng.uniform(lo + 0.05 * (hi - lo), hi - 0.05 * (hi - lo)))
               for lo, hi in e.domain[: 1 if e.has_k else e.arity]]


K_VALUES = {"POW_K": 3.5, "RPOW_K": 2.0, "RDIV_K": 3.0, "POLYGAMMA_K": 2.0}


@pytest.mark.parametrize("e", EW, ids=lambda e: e.name)
def test_second_partials_against_differences_of_the_first(e, rng):
    """d00, d01, d11 against central differences of the compiled d0 and d1."""
    o = getattr(ft.Op, e.name)

    def first(x, y):
        return np.array(_ops.eval_op(o, x, y)[1:])

    for pt in _points(e, rng):
        x = pt[0]
        y = pt[1] if e.arity == 2 else K_VALUES.get(e.name, 2.5 if e.has_k else 0.0)
        d00, d01, d11 = _ops.eval_second(o, x, y)
        hx = 1e-5 * max(1.0, abs(x))
        gx = (first(x + hx, y) - first(x - hx, y)) / (2 * hx)
        assert d00 == pytest.approx(gx[0], rel=1e-5, abs=1e-6), (e.name, x, y)
        if e.arity == 2 and e.fixed:
            # no partials in the first operand (a constant): d0 = d00 = d01 = 0
            assert first(x, y)[0] == d00 == d01 == 0.0
            hy = 1e-5 * max(1.0, abs(y))
            gy = (first(x, y + hy) - first(x, y - hy)) / (2 * hy)
            assert d11 == pytest.approx(gy[1], rel=1e-5, abs=1e-6), (e.name, x, y)
        elif e.arity == 2:
            hy = 1e-5 * max(1.0, abs(y))
            gy = (first(x, y + hy) - first(x, y - hy)) / (2 * hy)
            assert d01 == pytest.approx(gx[1], rel=1e-5, abs=1e-6), (e.name, x, y)
            assert d01 == pytest.approx(gy[0], rel=1e-5, abs=1e-6), (e.name, x, y)
            assert d11 == pytest.approx(gy[1], rel=1e-5, abs=1e-6), (e.name, x, y)
        else:
            assert d01 == 0.0 and d11 == 0.0


def test_second_partials_closed_forms():
    ex = _ops.eval_second(ft.Op.EXP, 0.7)[0]
    assert ex == pytest.approx(math.exp(0.7), rel=1e-15)
    assert _ops.eval_second(ft.Op.LOG, 2.0)[0] == pytest.approx(-0.25, rel=1e-15)
    assert _ops.eval_second(ft.Op.MUL, 2.0, 3.0) == (0.0, 1.0, 0.0)
    t = math.tanh(0.3)
    assert _ops.eval_second(ft.Op.TANH, 0.3)[0] == pytest.approx(-2 * t * (1 - t * t))


def test_aliases_and_the_remainder_operator():
    assert ft.abs is ft.absolute and ft.expit is ft.sigmoid and ft.digamma is ft.psi
    g = ft.grad(lambda x: x % 1.5 + 7.0 % x)(2.0)      # d/dx: 1, and -floor(7/2)
    assert g == 1.0 - 3.0
    assert ft.value_and_grad(lambda x: x % 1.5)(-2.0)[0] == -2.0 % 1.5


@pytest.mark.parametrize("d", registry.DERIVED, ids=lambda d: d.name)
def test_derived_partial_ops_compute_the_partials(d, rng):
    """<OP>_D<j> computes ∂op/∂x_j, and its partials are the op's second partials
    (the substitution of v, d0, d1 into the block's formulas, checked numerically)."""
    base, j = d.partial_of
    e = registry.BY_NAME[base]
    o, od = getattr(ft.Op, base), getattr(ft.Op, d.name)
    assert registry.PARTIAL_OPS[base][j] == d.name
    for pt in _points(e, rng, count=3):
        x = pt[0]
        y = pt[1] if e.arity == 2 else K_VALUES.get(e.name, 2.5 if e.has_k else 0.0)
        want = _ops.eval_op(o, x, y)[1 + j]
        got, g0, g1 = _ops.eval_op(od, x, y)
        assert got == pytest.approx(want, rel=1e-14, abs=1e-300), (d.name, x, y)
        d00, d01, d11 = _ops.eval_second(o, x, y)
        assert g0 == pytest.approx((d00, d01)[j], rel=1e-14, abs=1e-300)
        if e.arity == 2:
            assert g1 == pytest.approx((d01, d11)[j], rel=1e-14, abs=1e-300)
    assert math.isnan(_ops.eval_second(od, 0.5, 0.5)[0])     # no third partials


def test_constant_partials_have_no_derived_op():
    assert registry.PARTIAL_OPS["ADD"] == (None, None)
    assert registry.PARTIAL_OPS["MUL_K"] == (None,)
    assert registry.PARTIAL_OPS["SIN"] == (None,)           # written with ops: cos(x)
    assert registry.PARTIAL_OPS["ARCTAN2"] == ("ARCTAN2_D0", "ARCTAN2_D1")
    assert registry.PARTIAL_OPS["GAMMALN"] == ("GAMMALN_D0",)
    assert registry.PARTIAL_OPS["SUB"] == (None, None)
    assert all(not registry.PARTIAL_OPS[e.name][0] for e in EW if e.nested)


@pytest.mark.parametrize("e", [e for e in EW if e.nested], ids=lambda e: e.name)
def test_nested_rules_are_the_first_partials(e, rng):
    """A block's partials written with ops (``nested``) agree with its d0/d1."""
    from fastape import _rules
    o = getattr(ft.Op, e.name)
    rule = _rules.EXACT[int(o)]
    for pt in _points(e, rng, count=3):
        x = pt[0]
        y = pt[1] if e.arity == 2 else K_VALUES.get(e.name, 2.5 if e.has_k else 0.0)
        v, d0, d1 = _ops.eval_op(o, x, y)
        with ft.Tape() as t:
            xv = t.var(x)
            yv = t.var(y) if e.arity == 2 else None
            got = rule(xv, yv, y, t.constant(v))
        for j, want in enumerate((d0, d1)[: e.arity]):
            g = got[j]
            g = g.value if isinstance(g, ft.Var) else g
            assert g == pytest.approx(want, rel=1e-13, abs=1e-300), (e.name, x, y, j)
