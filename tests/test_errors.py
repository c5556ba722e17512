"""Bad input gets a clear exception naming the op, the argument and the shapes."""

import math

import numpy as np
import pytest

import fastape as ft


def test_shape_mismatch_names_op_and_shapes():
    with pytest.raises(ft.ShapeError, match=r"add.*\(3,\).*\(4,\)"):
        ft.grad(lambda x: np.sum(x + np.ones(4)))(np.ones(3))
    assert issubclass(ft.ShapeError, ValueError)


def test_non_scalar_output_names_its_shape():
    with pytest.raises(ft.ShapeError, match=r"scalar.*\(3,\)"):
        ft.grad(lambda x: x * 2)(np.ones(3))
    with ft.Tape() as t:
        x = t.var(np.ones(2))
    with pytest.raises(ft.ShapeError, match=r"\(2,\)"):
        t.gradient(x, x)


@pytest.mark.parametrize("bad", ["1.0", None, object(), 1 + 2j, np.array(["a"])])
def test_non_numeric_input_is_a_type_error(bad):
    with pytest.raises(TypeError):
        ft.grad(lambda x: x * 2)(bad)
    with ft.Tape() as t:
        with pytest.raises(TypeError, match="Tape.var"):
            t.var(bad)


def test_non_numeric_operand_is_a_type_error():
    with ft.Tape() as t:
        x = t.var(1.0)
        with pytest.raises(TypeError):
            x + "a"
        with pytest.raises(TypeError):
            x * None


def test_mixing_tapes():
    with ft.Tape() as t1, ft.Tape() as t2:
        x, y = t1.var(1.0), t2.var(2.0)
        with pytest.raises(ft.TapeError, match="another tape"):
            x + y
        with pytest.raises(ft.TapeError):
            ft.maximum(np.ones(2) * x, y)
    with pytest.raises(ft.TapeError):
        t1.gradient(y, x)


def test_finished_tape():
    with ft.Tape() as t:
        x = t.var(1.0)
    with pytest.raises(ft.TapeError, match="closed"):
        x * 2
    with pytest.raises(ft.TapeError):
        t.var(1.0)
    leaked = []
    ft.grad(lambda v: leaked.append(v) or v * 2)(1.0)
    with pytest.raises(ft.TapeError, match="released"):
        leaked[0] + 1
    with pytest.raises(ft.TapeError):
        _ = leaked[0].value


def test_adjoint_before_gradient():
    with ft.Tape() as t:
        x = t.var(1.0)
    with pytest.raises(ft.TapeError, match="no gradient"):
        t.adjoint(x)


def test_numpy_conversions_never_drop_the_tape():
    with ft.Tape() as t:
        x = t.var(np.ones(3))
        s = t.var(2.0)
        with pytest.raises(TypeError, match="drop it from the tape"):
            np.asarray(x)
        with pytest.raises(TypeError, match="drop it from the tape"):
            float(s)
        with pytest.raises(TypeError, match="drop it from the tape"):
            math.sin(s)
        with pytest.raises(TypeError, match="not supported"):
            np.cumsum(x)
        with pytest.raises(TypeError, match="out="):
            np.sin(x, out=np.empty(3))
        with pytest.raises(TypeError, match="immutable"):
            x[0] = 1.0


def test_index_errors():
    with ft.Tape() as t:
        x = t.var(np.ones((2, 3)))
        with pytest.raises(IndexError):
            x[5]
        with pytest.raises(IndexError):
            x[1, 3]
        with pytest.raises(TypeError, match="index"):
            x[t.var(1.0)]


def test_reduction_and_structure_errors():
    with ft.Tape() as t:
        x = t.var(np.ones((2, 3)))
        with pytest.raises(ft.ShapeError, match=r"axis 2.*\(2, 3\)"):
            ft.sum(x, axis=2)
        with pytest.raises(ft.ShapeError, match="reshape"):
            x.reshape(4, 2)
        with pytest.raises(ft.ShapeError, match="concatenate"):
            ft.concatenate([x, t.var(np.ones((2, 2)))], axis=0)
        with pytest.raises(ft.ShapeError, match="stack"):
            ft.stack([x, x[0]])
        with pytest.raises(ft.ShapeError, match="dot"):
            ft.dot(x[0], x[0, :2])
        with pytest.raises(ft.ShapeError, match="max"):
            ft.max(t.var(np.ones((0, 2))), axis=0)


def test_argnums_out_of_range():
    with pytest.raises(ValueError, match="argnums"):
        ft.grad(lambda x: x, argnums=2)(1.0)


def test_function_returning_non_number():
    with pytest.raises(TypeError, match="real scalar"):
        ft.grad(lambda x: "nope")(1.0)


def test_var_cannot_be_constructed_directly():
    with pytest.raises(TypeError):
        ft.Var()
