"""Compiled functions: replay against eager gradients, closed forms and finite differences."""

import math
import pickle
import threading

import numpy as np
import pytest
import scipy.optimize
from helpers import central_diff, rosenbrock, rosenbrock_grad

import fastape as ft


def seeds(x):
    a = np.exp(x)
    b = a + a ** 2
    return np.exp(b) + np.sin(b)


def test_replay_seeds_closed_form():
    F = ft.compile(seeds, 0.1)
    for x in (-1.0, 0.0, 0.5, 0.8):
        b = math.exp(x) + math.exp(2 * x)
        v, g = F.value_and_grad(x)
        assert v == pytest.approx(math.exp(b) + math.sin(b), rel=1e-14)
        assert g == pytest.approx((math.exp(b) + math.cos(b)) *
                                  (math.exp(x) + 2 * math.exp(2 * x)), rel=1e-13)
        assert F(x) == v and F.grad(x) == g


@pytest.mark.parametrize("kind", ["list", "array"])
def test_replay_rosenbrock_on_new_inputs(kind, rng):
    x0 = rng.normal(size=30)
    F = ft.compile(rosenbrock, list(x0) if kind == "list" else x0)
    for _ in range(3):
        x = rng.normal(size=30)
        v, g = F.value_and_grad(list(x) if kind == "list" else x)
        assert v == pytest.approx(rosenbrock(x), rel=1e-13)
        np.testing.assert_allclose(g, rosenbrock_grad(x), rtol=1e-12)


def test_pruning_drops_nodes_that_do_not_reach_the_output():
    def f(x):
        unused = np.exp(x) * 3.0 + np.sin(x)     # never reaches the output
        del unused
        return x * x

    F = ft.compile(f, 1.0)
    assert F.nodes == 2                          # the input and x * x
    assert F.grad(3.0) == 6.0


def test_results_never_alias_internal_buffers():
    F = ft.compile(lambda x: np.sum(x ** 2), np.ones(3))
    g1 = F.grad(np.array([1.0, 2.0, 3.0]))
    g1[:] = -1
    g2 = F.grad(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(g2, [2.0, 4.0, 6.0])
    x = np.array([1.0, 2.0, 3.0])
    F.grad(x)
    np.testing.assert_array_equal(x, [1.0, 2.0, 3.0])


def test_argnums_and_data_arguments(rng):
    X = rng.normal(size=(40, 3))
    y = (rng.uniform(size=40) < 0.5).astype(float)

    def nll(w, X, y):
        z = np.sum(X * w, axis=1)
        return np.sum(np.logaddexp(0.0, z) - y * z)

    F = ft.compile(nll, np.zeros(3), X, y)
    w = rng.normal(size=3)
    np.testing.assert_allclose(F.grad(w, X, y), central_diff(nll, [w, X, y], 0), rtol=1e-6)
    X2 = rng.normal(size=(40, 3))                # new data, same shapes: no re-recording
    np.testing.assert_allclose(F.grad(w, X2, y), central_diff(nll, [w, X2, y], 0), rtol=1e-6)
    assert len(F.traces) == 1
    gw, gX = ft.compile(nll, w, X, y, argnums=(0, 1)).grad(w, X, y)
    np.testing.assert_allclose(gX, central_diff(nll, [w, X, y], 1), rtol=1e-5, atol=1e-8)


def test_vjp_of_a_vector_output(rng):
    A = rng.normal(size=(4, 3))

    def f(x):
        return np.tanh(np.sum(A * x, axis=1))

    F = ft.compile(f, np.zeros(3))
    x, c = rng.normal(size=3), rng.normal(size=4)
    v, g = F.vjp((x,), c)
    np.testing.assert_allclose(v, np.tanh(A @ x), rtol=1e-14)
    np.testing.assert_allclose(g, A.T @ (c * (1 - np.tanh(A @ x) ** 2)), rtol=1e-12)
    with pytest.raises(ft.ShapeError, match="scalar"):
        F.grad(x)
    with pytest.raises(ft.ShapeError, match="cotangent"):
        F.vjp((x,), np.ones(3))


def branchy(x):
    return x ** 2 if x > 0 else -x ** 3


def handmade_abs(x):
    return x if x >= 0 else -x


def test_guards_retrace_when_the_branch_flips():
    F = ft.compile(branchy, 1.0)
    assert F.grad(2.0) == 4.0
    assert F.grad(-2.0) == pytest.approx(-12.0)      # another branch: re-recorded
    assert len(F.traces) == 2
    assert F.grad(3.0) == 6.0 and len(F.traces) == 2  # both traces are kept
    A = ft.compile(handmade_abs, 1.0)
    assert [A.grad(v) for v in (2.0, -2.0, 0.5)] == [1.0, -1.0, 1.0]
    M = ft.compile(lambda a, b: max(a, b) * 2.0, 1.0, 2.0, argnums=(0, 1))
    assert M.grad(1.0, 2.0) == (0.0, 2.0) and M.grad(3.0, 2.0) == (2.0, 0.0)


def test_guards_raise_when_retrace_is_off():
    F = ft.compile(branchy, 1.0, retrace=False)
    assert F.grad(5.0) == 10.0
    with pytest.raises(ft.BranchChanged):
        F.grad(-1.0)


def test_where_conditions_are_guarded():
    F = ft.compile(lambda x: np.sum(np.where(x > 0, x ** 2, -x)), np.array([1.0, -1.0]))
    np.testing.assert_array_equal(F.grad(np.array([-1.0, 1.0])), [-1.0, 2.0])
    np.testing.assert_array_equal(F.grad(np.array([2.0, -3.0])), [4.0, -1.0])


def test_traces_are_bounded():
    F = ft.compile(lambda x: x * 1.0 if x > 0 else (x * 2.0 if x > -1 else x * 3.0), 1.0,
                   max_traces=2)
    assert [F.grad(v) for v in (1.0, -0.5, -5.0, 1.0)] == [1.0, 2.0, 3.0, 1.0]
    assert len(F.traces) <= 2


def test_bad_arguments():
    F = ft.compile(lambda x, s: np.sum(x) * s, np.ones(3), 2.0)
    with pytest.raises(ft.ShapeError, match=r"args\[0\] is .*\(4,\).*\(3,\)"):
        F(np.ones(4), 2.0)
    with pytest.raises(ft.ShapeError, match=r"args\[1\] is an array"):
        F(np.ones(3), np.ones(2))
    with pytest.raises(TypeError, match="expected 2"):
        F(np.ones(3))
    with pytest.raises(TypeError):
        F(np.array(["a", "b", "c"]), 2.0)


def test_batch_matches_single_calls(rng):
    X = rng.normal(size=(50, 6))
    F = ft.compile(rosenbrock, X[0])
    for threads in (1, 2, 3):
        values, G = F.value_and_grad_batch(X, threads=threads)
        np.testing.assert_allclose(G, [rosenbrock_grad(x) for x in X], rtol=1e-12)
        np.testing.assert_allclose(values, [rosenbrock(x) for x in X], rtol=1e-13)


def test_batch_every_row_once_with_uneven_chunks(rng):
    # 1001 rows on 2 and 3 threads: chunks of 62 and 41 rows that do not divide m;
    # a row skipped or done twice would show in the gradients (output is np.empty).
    X = rng.normal(size=(1001, 4))
    F = ft.compile(rosenbrock, X[0])
    want = np.array([rosenbrock_grad(x) for x in X])
    for threads in (2, 3):
        np.testing.assert_allclose(F.grad_batch(X, threads=threads), want, rtol=1e-12)
    np.testing.assert_allclose(F.grad_batch(X[:1], threads=4), want[:1], rtol=1e-12)


def test_batch_from_several_python_threads(rng):
    X = rng.normal(size=(300, 5))
    F = ft.compile(rosenbrock, X[0])
    want = np.array([rosenbrock_grad(x) for x in X])
    results = [None] * 4

    def work(k):
        results[k] = F.grad_batch(X, threads=2)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for G in results:
        np.testing.assert_allclose(G, want, rtol=1e-12)


def test_batch_rows_that_take_another_branch():
    F = ft.compile(lambda x: x[0] ** 2 if x[0] > 0 else -x[0] ** 3, np.array([1.0]))
    G = F.grad_batch(np.array([[2.0], [-2.0], [1.0]]), threads=2)
    np.testing.assert_allclose(G[:, 0], [4.0, -12.0, 2.0])


def test_concurrent_calls_from_python_threads(rng):
    F = ft.compile(rosenbrock, np.zeros(200))
    xs = [rng.normal(size=200) for _ in range(8)]
    want = [rosenbrock_grad(x) for x in xs]
    errors = []

    def work(k):
        for _ in range(30):
            if not np.allclose(F.grad(xs[k]), want[k], rtol=1e-12):
                errors.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_lbfgsb_converges_with_compiled_gradient():
    x0 = np.tile([-1.2, 1.0], 10)
    F = ft.compile(rosenbrock, x0)
    res = scipy.optimize.minimize(F.value_and_grad, x0, jac=True, method="L-BFGS-B")
    assert res.success
    np.testing.assert_allclose(res.x, np.ones(20), atol=1e-4)


# -- grouping: scalar tapes reordered into runs of one opcode -------------------

def _chain(step, length):
    def f(x):
        s = x[0]
        for i in range(1, length):
            s = step(s, x[i])
        return s
    return f


@pytest.mark.parametrize("step", [
    lambda s, x: s + x,                     # ADD run, first parent the node before
    lambda s, x: x - s,                     # SUB run, second parent the node before
    lambda s, x: s * 1.01,                  # a *_K run: the immediate, not a node
    lambda s, x: np.sin(s),                 # a unary run (partials of the node's parent)
    lambda s, x: x * s,                     # MUL: the partial needs the chained value
], ids=["add", "rsub", "mul_k", "sin", "mul"])
def test_grouped_chains_match_eager_and_differences(step, rng):
    f = _chain(step, 40)
    x = rng.uniform(0.5, 1.0, size=40)
    F = ft.compile(f, x)
    assert F.traces[-1].run_count > 0          # the chain is one long run
    y = rng.uniform(0.5, 1.0, size=40)
    v, g = F.value_and_grad(y)
    ve, ge = ft.value_and_grad(f)(y)
    assert v == ve                                   # every node computes the same
    np.testing.assert_allclose(g, ge, rtol=1e-13, atol=1e-300)
    np.testing.assert_allclose(g, central_diff(f, (y,), 0), rtol=1e-6, atol=1e-9)


def test_grouped_parallel_chains_and_self_products(rng):
    # 32 chains of s = s·s + x side by side: depth sorting puts the k-th square of
    # every chain in one MUL run whose nodes have both parents equal
    def f(x):
        s = [x[j] for j in range(32)]
        for _ in range(5):
            s = [sj * sj + 0.5 * x[j] for j, sj in enumerate(s)]
        return sum(s[j] * (j + 1) for j in range(32))
    x = rng.uniform(0.1, 0.6, size=32)
    F = ft.compile(f, x)
    assert F.traces[-1].run_count > 0
    v, g = F.value_and_grad(x)
    assert v == ft.value_and_grad(f)(x)[0]
    np.testing.assert_allclose(g, ft.grad(f)(x), rtol=1e-13)
    np.testing.assert_allclose(g, central_diff(f, (x,), 0), rtol=1e-6)


def test_grouping_keeps_interleaved_short_tapes_as_recorded(rng):
    # one chain of different ops: runs would stay of length 1, so no grouping
    def f(x):
        s = x[0]
        for i in range(1, len(x)):
            s = np.exp(-s * x[i]) + 1.0
        return s
    x = rng.uniform(0.1, 1.0, size=50)
    F = ft.compile(f, x)
    assert F.traces[-1].run_count == 0
    np.testing.assert_allclose(F.grad(x), ft.grad(f)(x), rtol=1e-14)
    np.testing.assert_allclose(F.grad(x), central_diff(f, (x,), 0), rtol=1e-6, atol=1e-10)


def test_grouped_tape_with_guards_retraces(rng):
    def f(x):
        s = rosenbrock(x)
        return s if x[0] > 0 else -2.0 * s
    x = rng.normal(size=30)
    x[0] = 1.0
    F = ft.compile(f, x)
    assert F.traces[-1].run_count > 0
    for sign in (1.0, -1.0, 1.0):
        x[0] = sign
        want = rosenbrock_grad(x) * (1.0 if sign > 0 else -2.0)
        np.testing.assert_allclose(F.grad(x), want, rtol=1e-12)
        np.testing.assert_allclose(F.grad_batch(x[None, :], threads=1)[0], want, rtol=1e-12)


def test_grouped_rosenbrock_against_closed_form(rng):
    x = rng.normal(size=500)
    F = ft.compile(rosenbrock, x)
    assert 0 < F.traces[-1].run_count <= 12                 # 8 ops a term become ~8 runs
    for _ in range(3):
        y = rng.normal(size=500)
        v, g = F.value_and_grad(y)
        assert v == rosenbrock(y) or v == pytest.approx(rosenbrock(y), rel=1e-14)
        np.testing.assert_allclose(g, rosenbrock_grad(y), rtol=1e-12)
        np.testing.assert_allclose(F.vjp((y,), 2.0)[1], 2 * rosenbrock_grad(y), rtol=1e-12)


def test_grouped_runs_taken_as_array_ops(rng):
    # each iteration's ops read x[i] (contiguous inputs), one shared node c, an
    # immediate shared by value, or an immediate that changes per iteration: the
    # runs are array ops on arena slices (strides 1 and 0), x*x with both operands
    # in one slice; tanh keeps libm's bits
    def f(x, c):
        s = 0.0
        for i in range(len(x)):
            s = s + (c * x[i] + x[i] * x[i] + 3.0 * np.tanh(x[i]) + x[i] * (i + 1.0)
                     + (2.0 - x[i]) ** 3)
        return s
    x = rng.normal(size=60)
    c = 0.7
    F = ft.compile(f, x, 1.5, argnums=(0, 1))
    trace = F.traces[-1]
    # array runs: x*(i+1) (stride-1 immediates), 2-x, 3*tanh(..), (..)**3 and the lone
    # first ADD_K; tanh's own run gathers, and c*x with x*x share one gather MUL run
    assert trace.run_count > 0 and trace.array_run_count >= 5
    for _ in range(3):
        x = rng.normal(size=60)
        v, (gx, gc) = F.value_and_grad(x, c)
        ve, (gxe, gce) = ft.value_and_grad(f, argnums=(0, 1))(x, c)
        assert v == ve
        want = c + 2 * x + 3.0 / np.cosh(x) ** 2 + np.arange(1.0, 61.0) - 3 * (2.0 - x) ** 2
        np.testing.assert_allclose(gx, want, rtol=1e-12)
        np.testing.assert_allclose(gx, gxe, rtol=1e-13)
        assert gc == pytest.approx(np.sum(x), rel=1e-12, abs=1e-12)


# -- value-dependent numpy calls are guarded (issue 17, items 1 and 2) -----------------

@pytest.mark.parametrize("pred, at, flip", [
    (np.isnan, [1.0, 2.0], [1.0, np.nan]),
    (np.isinf, [1.0, 2.0], [np.inf, 2.0]),
    (np.isfinite, [1.0, 2.0], [1.0, -np.inf]),
    (np.signbit, [1.0, 2.0], [-0.0, 2.0]),
])
def test_predicates_are_guarded(pred, at, flip):
    def f(x):
        return np.sum(np.where(pred(x), 0.0, x))

    eager = ft.value_and_grad(f)(np.array(flip))
    F = ft.compile(f, np.array(at))
    with np.errstate(invalid="ignore"):
        v, g = F.value_and_grad(np.array(flip))
    assert v == eager[0] or (np.isnan(v) and np.isnan(eager[0]))
    np.testing.assert_array_equal(g, eager[1])
    G = ft.compile(f, np.array(at), retrace=False)
    with pytest.raises(ft.BranchChanged):
        G(np.array(flip))


def test_where_with_a_tape_valued_condition_is_guarded():
    def f(x):
        return ft.sum(ft.where(x - 1.0, x * 2.0, x * 3.0))   # truth of the float x - 1
    F = ft.compile(f, np.array([2.0, 3.0]))
    for x in (np.array([2.0, 3.0]), np.array([1.0, 3.0])):
        assert F.value_and_grad(x)[0] == ft.value_and_grad(f)(x)[0]


def test_guard_on_a_whole_array_read_element_by_element():
    def f(x):
        if np.all(x > 0):
            return sum(x[i] ** 2 for i in range(len(x)))
        return -sum(x[i] for i in range(len(x)))

    F = ft.compile(f, np.array([1.0, 2.0, 3.0]))
    assert F(np.array([1.0, -2.0, 3.0])) == -2.0          # was 14.0: one element checked
    assert F(np.array([1.0, 2.0, 4.0])) == 21.0
    G = ft.compile(f, np.array([1.0, 2.0, 3.0]), retrace=False)
    with pytest.raises(ft.BranchChanged):
        G(np.array([1.0, -2.0, 3.0]))


def test_batches_share_one_pool_and_cap_threads_at_the_cores(rng):
    import threading

    from fastape import _compiled
    F = ft.compile(lambda x: ft.sum(x * x), np.ones(3))
    X = rng.normal(size=(64, 3))
    before = threading.active_count()
    for k in (2, 3, 8, 40):
        np.testing.assert_allclose(F.grad_batch(X, threads=k), 2 * X, rtol=1e-15)
    assert threading.active_count() - before <= max(1, _compiled._usable_cores() - 1)
    assert F.traces[-1].nclones <= _compiled._usable_cores()


def test_read_only_inputs():
    """Read-only arrays (np.broadcast_to, memory maps, frozen arrays) are inputs and
    constants like any other (they once failed with "buffer source array is read-only")."""
    x = np.array([1.0, 2.0, 3.0])
    x.flags.writeable = False
    c = np.broadcast_to(0.5, (1,))
    f = lambda x: np.sum(ft.concatenate([x, c]) ** 2)      # noqa: E731
    assert ft.grad(f)(x).tolist() == [2.0, 4.0, 6.0]
    F = ft.compile(f, x)
    assert F(x) == 14.25
    assert F.grad(x).tolist() == [2.0, 4.0, 6.0]
    assert F.jvp(x, np.broadcast_to(1.0, (3,)))[1] == 12.0
    assert F.vjp(x, np.broadcast_to(2.0, ()))[1].tolist() == [4.0, 8.0, 12.0]
    vals, grads = F.value_and_grad_batch(np.broadcast_to(x, (3, 3)))
    assert vals.tolist() == [14.25] * 3 and grads.tolist() == [[2.0, 4.0, 6.0]] * 3


# -- one array argument recorded as an element block (compile time, issue 14) ----------

def _elements_loss(x):
    s = 0.0
    for i in range(0, len(x) - 2, 2):           # every other element: some unused
        s = s + (x[i] - 1.0) ** 2 * x[i + 2] + np.sin(x[i])
    return s


def _elements_loss_grad(x):
    g = np.zeros_like(x)
    for i in range(0, len(x) - 2, 2):
        g[i] += 2 * (x[i] - 1.0) * x[i + 2] + np.cos(x[i])
        g[i + 2] += (x[i] - 1.0) ** 2
    return g


@pytest.mark.parametrize("case", ["elements", "element_then_whole", "guard_on_whole",
                                  "guard_on_element", "output_element"])
def test_element_block_recording_replays_exactly(case, rng):
    """compile records one array argument as an element block (x[i] records no node);
    every way a function can read the array must still replay at new inputs exactly:
    elements only (some unused), an element and then the whole array (recorded again
    without the block), a guard on the whole array, a guard on an element (retrace),
    an element as the output."""
    if case == "elements":
        f, grad = _elements_loss, _elements_loss_grad
    elif case == "element_then_whole":
        def f(x):
            return x[1] * np.sum(x ** 2)

        def grad(x):
            g = 2 * x[1] * x
            g[1] += np.sum(x ** 2)
            return g
    elif case == "guard_on_whole":
        def f(x):
            return x[0] * x[3] if np.all(x > -10.0) else -x[0]

        def grad(x):
            g = np.zeros_like(x)
            g[0], g[3] = x[3], x[0]
            return g
    elif case == "guard_on_element":
        def f(x):
            return x[0] ** 2 if x[1] > 0 else 3.0 * x[0]

        def grad(x):
            g = np.zeros_like(x)
            g[0] = 2 * x[0] if x[1] > 0 else 3.0
            return g
    else:
        def f(x):
            return x[2]

        def grad(x):
            g = np.zeros_like(x)
            g[2] = 1.0
            return g
    x0 = rng.normal(size=9)
    F = ft.compile(f, x0)
    for _ in range(4):
        x = rng.normal(size=9)
        v, g = F.value_and_grad(x)
        assert v == pytest.approx(f(x), rel=1e-13, abs=1e-13)
        np.testing.assert_allclose(g, grad(x), rtol=1e-12, atol=1e-13)
        t = rng.normal(size=9)
        assert F.jvp(x, t)[1] == pytest.approx(grad(x) @ t, rel=1e-12, abs=1e-12)
    G = pickle.loads(pickle.dumps(ft.compile(_elements_loss, x0)))
    x = rng.normal(size=9)
    np.testing.assert_allclose(G.grad(x), _elements_loss_grad(x), rtol=1e-12)
    H = ft.compile(_elements_loss, x0).hessian(x)
    np.testing.assert_allclose(H, ft.hessian(_elements_loss)(x), rtol=1e-12, atol=1e-13)
