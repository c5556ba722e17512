"""The eager fast paths (one plain argument; registry ufuncs through numpy) behave as
the general ones: same values, same errors, nothing left behind."""

import numpy as np
import pytest
from helpers import central_diff, rosenbrock, rosenbrock_grad

import fastape as ft
from fastape import _nesting
from fastape._bench import seeds_f, seeds_hand


def f(x):
    return seeds_f(x, np.exp, np.sin)


def f_grad(x):
    return np.vectorize(lambda v: seeds_hand(v)[1])(x)


@pytest.mark.parametrize("x", [0.3, np.array(0.3), np.array([0.3])])
def test_plain_argument_matches_closed_form_and_pytree_path(x):
    v, g = ft.value_and_grad(f)(x)
    v2, g2 = ft.value_and_grad(lambda d: f(d["x"]))({"x": x})   # the general path
    assert type(v) is type(v2) and np.array_equal(v, v2)
    assert type(g) is type(g2["x"]) and np.array_equal(g, g2["x"])
    np.testing.assert_allclose(g, f_grad(np.asarray(x)), rtol=1e-13)
    assert np.shape(g) == np.shape(x)


def test_other_arguments_pass_through_and_argnums_counts_from_the_end():
    def h(a, x, *, scale):
        return scale * ft.sin(a * x)
    g = ft.grad(h, argnums=-1)
    np.testing.assert_allclose(g(2.0, 0.5, scale=3.0), 3.0 * 2.0 * np.cos(1.0), rtol=1e-15)


def test_an_exception_in_the_function_leaves_no_recording_tape():
    def bad(x):
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        ft.grad(bad)(1.0)
    assert _nesting.active() is None
    assert ft.grad(ft.sin)(0.0) == 1.0


def test_errors_of_the_fast_path():
    with pytest.raises(ft.ShapeError, match="must return a scalar"):
        ft.grad(lambda x: x * np.ones(3))(1.0)
    with ft.Tape() as other:
        w = other.var(1.0)
    with pytest.raises(ft.TapeError, match="another tape"):
        ft.grad(lambda x: w)(1.0)
    assert ft.value_and_grad(lambda x: 2.0)(1.0) == (2.0, 0.0)
    assert np.array_equal(ft.grad(lambda x: 2.0)(np.ones(2)), np.zeros(2))
    with pytest.raises(TypeError, match="must return a real scalar"):
        ft.grad(lambda x: "a")(1.0)


def test_ufunc_fast_path_and_keyword_arguments():
    with ft.Tape() as t:
        x = t.var(np.array([0.5, 2.0]))
        y = np.multiply(x, 3.0)
        z = np.log(x)
        with pytest.raises(TypeError, match="out="):
            np.exp(x, out=np.empty(2))
        with pytest.raises(TypeError, match="where="):
            np.exp(x, where=np.array([True, False]))
        s = ft.sum(y + z)
    np.testing.assert_allclose(t.gradient(s, x), 3.0 + 1.0 / np.array([0.5, 2.0]))


# -- element blocks: an eager array input whose elements are nodes already ----------

def test_indexing_an_element_block_records_no_node_and_keeps_the_scalar_layout():
    x0 = np.linspace(-1.0, 1.5, 50)
    t = ft.Tape()
    x = t._var_elements(x0)
    assert len(t) == 1 and t.scalar_layout      # the element nodes come with the first x[i]
    assert np.array_equal(x.value, x0)                  # the head reads its elements
    xi = x[3]
    assert len(t) == 51 and xi.value == x0[3] and x[-1].value == x0[-1]
    y = rosenbrock(x)
    assert t.scalar_layout
    g = t.gradient(y, x)
    np.testing.assert_allclose(g, rosenbrock_grad(x0), rtol=1e-12, atol=1e-12)
    assert ft.grad(rosenbrock)(x0).shape == (50,)
    np.testing.assert_allclose(ft.grad(rosenbrock)(x0), rosenbrock_grad(x0), rtol=1e-12)
    t.release()


def test_a_lazy_block_takes_its_nodes_before_any_scalar_node():
    """Nothing may sit in a lazy block's element slots: a scalar node recorded before any
    x[i] (another argument, a constant) writes the element nodes first, and a sweep of a
    tape whose block was never touched reads the elements' multipliers (zeros)."""
    t = ft.Tape()
    x0 = np.arange(1.0, 6.0)
    x = t._var_elements(x0)
    c = t.var(2.0)
    assert len(t) == 7 and t.scalar_layout      # head, 5 elements, then c
    y = c * x[4] + x[0]
    np.testing.assert_array_equal(t.gradient(y, x), [1.0, 0.0, 0.0, 0.0, 2.0])
    assert t.gradient(y, c) == 5.0
    t.release()
    t = ft.Tape()
    x = t._var_elements(x0)
    c = t.var(3.0)
    y = c * c
    np.testing.assert_array_equal(t.gradient(y, x), np.zeros(5))
    t.release()
    assert ft.grad(lambda x: 3.0 * np.sum(x))(x0).tolist() == [3.0] * 5
    assert ft.grad(lambda x, s: s * s)(x0, 2.0).tolist() == [0.0] * 5


def test_a_block_no_element_was_taken_from_folds_into_one_array_node():
    t = ft.Tape()
    x = t._var_elements(np.arange(1.0, 1001.0))
    y = ft.sum(x * x)
    assert len(t) == 3 and not t.scalar_layout     # head, product, sum
    np.testing.assert_allclose(t.gradient(y, x), 2.0 * np.arange(1.0, 1001.0))
    t.release()


def _fd(f, x):
    return central_diff(f, (x,), 0)


@pytest.mark.parametrize("f", [
    lambda x: np.sum(x[0] * x),                         # an element broadcast on the array
    lambda x: x[0] * x[1] + np.sum(np.sin(x) * x[2]),   # elements before array ops
    lambda x: np.sum(x ** 2) * x[1] + x[-1],            # elements after them
    lambda x: np.sum(np.cumsum(x)[::2] * x[1:][0]),
    lambda x: x[0] + x[1] if x[0] > 0.0 else x[1],      # a comparison on an element
], ids=["broadcast", "before", "after", "slices", "branch"])
def test_blocks_mixing_elements_and_whole_array_ops(f):
    x0 = np.array([0.7, -1.3, 2.1, 0.4, 1.9])
    np.testing.assert_allclose(ft.grad(f)(x0), _fd(lambda z: float(f(z)), x0),
                               rtol=1e-7, atol=1e-8)


def test_block_of_a_matrix_and_updates_of_a_block():
    x0 = np.arange(1.0, 7.0).reshape(2, 3)
    g = ft.grad(lambda x: x[1, 2] * x[0, 1] + np.sum(x))(x0)
    want = np.ones((2, 3))
    want[1, 2] += x0[0, 1]
    want[0, 1] += x0[1, 2]
    np.testing.assert_allclose(g, want)

    def upd(x):
        a = x[0]
        x[1] = 3.0 * a              # a functional update of the input's Var
        return np.sum(x * x) + x[1]
    x1 = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(ft.grad(upd)(x1), _fd(upd, x1), rtol=1e-7)
    assert np.array_equal(x1, [1.0, 2.0, 3.0])         # the caller's array untouched


def test_repeated_immediates_share_a_pool_entry_bit_for_bit():
    with ft.Tape() as t:
        x = t.var(-1.0)
        ys = [x * 2.0 + 1.0 for _ in range(50)]
        a = x * 0.0
        b = x * -0.0
        z = ys[-1] + a + b
    assert t.export()["pool"].size == 4                 # 2.0, 1.0, 0.0, -0.0
    assert np.signbit(a.value) and not np.signbit(b.value)   # -1·0 = -0, -1·-0 = 0
    assert all(y.value == -1.0 for y in ys)
    t.gradient(z, x)
    assert t.adjoint(x) == 2.0


def test_the_ufunc_fast_path_keeps_the_checks_of_fixed_operands():
    import scipy.special as sc
    with ft.Tape() as t:
        a = t.var(2.0)
        x = t.var(1.5)
        sc.gammainc(2.0, x)                      # fills the scipy part of the table
        np.exp(x)
        with pytest.raises(NotImplementedError, match="gammainc"):
            sc.gammainc(a, x)
        with pytest.raises(NotImplementedError):
            sc.jv(a, x)


@pytest.mark.parametrize("sa, sb", [((4, 3), (3, 2)), ((3,), (3, 2)), ((4, 3), (3,)),
                                    ((3,), (3,)), ((2, 4, 3), (3, 2))])
@pytest.mark.parametrize("how", ["var@var", "arr@var", "var@arr", "np.matmul"])
def test_matrix_products_on_the_fast_path_and_off_it(sa, sb, how):
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal(sa), rng.standard_normal(sb)
    C = rng.standard_normal(np.shape(A @ B))

    def f(a, b):
        if how == "arr@var":
            a = A
        if how == "var@arr":
            b = B
        p = np.matmul(a, b) if how == "np.matmul" else a @ b
        return np.sum(p * C)

    ga, gb = ft.grad(f, argnums=(0, 1))(A, B)
    np.testing.assert_allclose(ga, _fd(lambda a: f(a, B), A) if how != "arr@var"
                               else np.zeros(sa), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gb, _fd(lambda b: f(A, b), B) if how != "var@arr"
                               else np.zeros(sb), rtol=1e-6, atol=1e-8)


def test_matrix_product_errors_keep_their_messages():
    with ft.Tape() as t:
        a = t.var(np.ones((2, 3)))
        with pytest.raises(ft.ShapeError, match="inner dimensions"):
            a @ np.ones((2, 2))
        with pytest.raises(ft.ShapeError, match="inner dimensions"):
            np.ones((3, 3)) @ a
        np.testing.assert_array_equal((a @ np.ones(3, dtype=int)).value, [3.0, 3.0])
    with ft.Tape() as u:
        b = u.var(np.ones((3, 2)))
    with pytest.raises(ft.TapeError):
        a @ b


# -- eager whole-array gradients through the fused runs -------------------------------

def _fused_and_not(monkeypatch, f, *args, argnums=0):
    from fastape import _compiled
    fused = ft.value_and_grad(f, argnums)(*args)
    monkeypatch.setattr(_compiled, "FUSION", False)
    plain = ft.value_and_grad(f, argnums)(*args)
    monkeypatch.setattr(_compiled, "FUSION", True)
    return fused, plain


@pytest.mark.parametrize("n", [7, 300, 5000, 40_000])
def test_eager_fused_rosenbrock_agrees_with_the_unfused_sweep(monkeypatch, n):
    def rosen(x):
        return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)
    x = np.linspace(-1.3, 1.7, n)
    (v, g), (v0, g0) = _fused_and_not(monkeypatch, rosen, x)
    assert v == v0
    np.testing.assert_allclose(g, g0, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(g, rosenbrock_grad(x), rtol=1e-12, atol=1e-12)


def test_eager_fused_runs_take_the_path_and_keep_its_conventions(monkeypatch):
    from fastape import _compiled
    x = np.linspace(-2.0, 2.0, 9000)
    c = np.cos(x)

    def f(x, c, w):
        u = np.sin(x) * c + w * x          # a broadcast scalar read by the run
        s = np.sum(u * u)
        return s + 0.0 * np.sum(np.sqrt(np.abs(x)))   # partial inf at 0, multiplier 0
    (v, g), (v0, g0) = _fused_and_not(monkeypatch, f, x, c, 0.5, argnums=(0, 2))
    assert v == v0 and np.all(np.isfinite(g[0]))
    np.testing.assert_allclose(g[0], g0[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g[1], g0[1], rtol=1e-12)
    u = np.sin(x) * c + 0.5 * x
    np.testing.assert_allclose(g[0], 2 * u * (np.cos(x) * c + 0.5), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g[1], np.sum(2 * u * x), rtol=1e-10)
    t = ft.Tape()
    xv = t.var(x)
    y = np.sum(np.exp(xv) * 2.0 - xv)
    assert _compiled._eager_backward(t, y)          # the fused reverse was taken
    np.testing.assert_allclose(t.adjoint(xv), 2.0 * np.exp(x) - 1.0, rtol=1e-13, atol=1e-15)
    t.release()
