"""The eager fast paths (one plain argument; registry ufuncs through numpy) behave as
the general ones: same values, same errors, nothing left behind."""

import numpy as np
import pytest

import fastape as ft
from fastape import _nesting


def f(x):
    e = np.exp(x)
    u = e + e ** 2
    return np.exp(u) + np.sin(u)


def f_grad(x):
    e = np.exp(x)
    u = e + e * e
    return (np.exp(u) + np.cos(u)) * (e + 2 * e * e)


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
