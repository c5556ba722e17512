"""Bad input gets a clear exception naming the op, the argument and the shapes."""

import math
import os
import pathlib
import sys

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
            np.convolve(x, x)
        with pytest.raises(TypeError, match="out="):
            np.cumsum(x, out=np.empty(3))
        with pytest.raises(TypeError, match="out="):
            np.sin(x, out=np.empty(3))
        x[0] = 1.0              # a recorded functional update (tests/test_arrays.py)
        assert x.value.tolist() == [1.0, 1.0, 1.0]
        with pytest.raises(TypeError, match="not differentiable"):
            x[x[0]] = 1.0


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


# -- defects found in review (issue 10) ---------------------------------------------

def test_concatenate_and_stack_of_plain_arrays_are_numpy():
    # once a segfault: no fastape value among the parts
    a, b = np.ones(2), np.arange(3.0)
    np.testing.assert_array_equal(ft.concatenate([a, b]), np.concatenate([a, b]))
    np.testing.assert_array_equal(ft.stack([a, a + 1]), np.stack([a, a + 1]))


def test_recorders_refuse_none_instead_of_crashing():
    from fastape import _tape
    with pytest.raises(TypeError):
        _tape.constant_like(None, 1.0)
    with pytest.raises(TypeError):
        _tape.item(None, 0)


def test_messages_point_to_what_exists():
    with pytest.raises(ft.ShapeError, match="fastape.vjp or fastape.jacobian"):
        ft.grad(lambda x: x * 2)(np.ones(2))
    assert callable(ft.vjp) and callable(ft.jacobian)
    with ft.Tape() as t:
        x = t.var(np.ones(2))
        y = x * 2
    with pytest.raises(ft.ShapeError, match=r"Tape.backward\(output, cotangent\)"):
        t.gradient(y, x)
    t.backward(y, np.array([1.0, 3.0]))
    np.testing.assert_array_equal(t.adjoint(x), [2.0, 6.0])


def test_zero_multiplier_through_matmul_and_solve_is_the_mechanism():
    # a zero adjoint contributes nothing through an infinite partial, whatever the op:
    # the elementwise spelling and the BLAS product give the same gradient
    A = np.array([[np.inf, 1.0], [2.0, 3.0]])
    mask = np.array([False, True])
    g_mat = ft.grad(lambda b: ft.sum(ft.where(mask, A @ b, 0.0)))(np.array([1.0, 1.0]))
    g_ew = ft.grad(lambda b: ft.sum(ft.where(mask, A[:, 0] * b[0] + A[:, 1] * b[1], 0.0)))(
        np.array([1.0, 1.0]))
    np.testing.assert_array_equal(g_mat, [2.0, 3.0])
    np.testing.assert_array_equal(g_mat, g_ew)
    # the same through a matrix-matrix product and through Ā (a partial of inf in B)
    B = np.array([[1.0, np.inf], [2.0, 0.5]])
    gA = ft.grad(lambda a: ft.sum(ft.where(np.array([[True, False]] * 2), a @ B, 0.0)))(
        np.eye(2))
    np.testing.assert_array_equal(gA, [[1.0, 2.0], [1.0, 2.0]])


def test_sweeps_never_allocate():
    # scratch is sized by the recorders (Tape.need_work): a sweep that ran out of
    # memory could only return a wrong gradient, so no kernel may allocate
    import pathlib
    src = pathlib.Path(ft.__file__).parent
    for name in ("_elementwise.pxi", "_structural.pxi", "_linalg.pxi"):
        text = (src / name).read_text()
        for call in ("malloc(", "PyMem_Malloc(", "calloc(", "realloc("):
            assert call not in text, (name, call)


def test_errors_name_the_module_path():
    import scipy.special
    with ft.Tape() as t:
        x = t.var(np.ones((2, 2)))
        with pytest.raises(TypeError, match=r"numpy\.linalg\.eigvals\b"):
            np.linalg.eigvals(x)
        with pytest.raises(TypeError, match=r"scipy\.special\.kv\b"):
            scipy.special.kv(1.0, x)


def test_adjoint_of_a_value_recorded_after_the_sweep_raises():
    t = ft.Tape()
    with t:
        x = t.var(1.5)
        y = x * x
        t.gradient(y, x)
        z = ft.exp(x)
        big = t.var(np.ones(100_000))
    for late in (z, big):
        with pytest.raises(ft.TapeError, match="after the last gradient"):
            t.adjoint(late)
    assert t.adjoint(y) == 1.0


def test_ops_on_a_closed_tape_leave_it_unchanged():
    with ft.Tape() as t:
        x = t.var(np.ones(3))
    before = t.nbytes, len(t)
    for op in (lambda: x * 2.0, lambda: x + 1.0, lambda: x ** 3.0, lambda: ft.sin(x)):
        with pytest.raises(ft.TapeError, match="closed"):
            op()
    assert (t.nbytes, len(t)) == before


def test_compiled_entry_points_refuse_complex_alike():
    F = ft.compile(lambda x: ft.sum(x * x), np.ones(2))
    with pytest.raises(TypeError, match="complex|real"):
        F(np.ones(2) + 1j)
    with pytest.raises(TypeError, match="real"):
        F.grad_batch(np.ones((3, 2)) + 0j)
    G = ft.compile(lambda x: x * 2.0, np.ones(2))
    with pytest.raises(TypeError, match="real"):
        G.vjp((np.ones(2),), np.ones(2) + 1j)


def test_max_traces_must_be_positive():
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="max_traces"):
            ft.compile(lambda x: x * 2.0, 1.0, max_traces=bad)



def test_a_tape_swept_by_one_thread_refuses_another():
    # a Tape is single-threaded: recording into it, or sweeping it, while another thread
    # runs its reverse sweep without the GIL raises instead of corrupting it
    import threading
    with ft.Tape() as t:
        x = t.var(np.ones(100_000))
        s = t.var(1.0)
        y = x
        for _ in range(20):
            y = ft.sin(y)
        out = ft.sum(y)
        want = t.gradient(out, x)
        errors, done = [], threading.Event()

        def sweep():
            try:
                for _ in range(10):
                    t.gradient(out, x)
            finally:
                done.set()

        worker = threading.Thread(target=sweep)
        worker.start()
        while not done.is_set() and len(errors) < 20:
            for attempt in (lambda: s * 2.0, lambda: t.gradient(out, x)):
                try:
                    attempt()
                except ft.TapeError as e:
                    errors.append(str(e))
        worker.join()
    assert errors and all("another thread" in e for e in errors)
    np.testing.assert_array_equal(t.gradient(out, x), want)     # the tape is intact


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc")
def test_a_failed_gradient_allocation_leaves_the_tape_as_it_was():
    import subprocess
    child = pathlib.Path(__file__).with_name("_memory_child.py")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, str(child)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["MemoryError", "adjoint 6.0", "record 6.0"]
