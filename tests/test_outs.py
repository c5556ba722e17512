"""An output stacked from scalar nodes keeps the compiled trace in the scalar layout.

``ft.stack`` of a loop's results (and concatenations, slices, transposes and copies of
such) is held by the trace as the elements' scalar nodes (``Trace.outs``) instead of one
array node that would put the whole tape in the general layout. Every derivative of such
a trace is compared with the same function kept on the general layout (its output times
1.0: an array op, so the old path) and with central differences of the plain numpy
function; the layout itself is asserted, and so are save/load and pickle round trips.
"""

import pickle

import numpy as np
import pytest
from helpers import fd_jacobian

import fastape as ft
from fastape.errors import ShapeError, TapeFormatError


def stacked(x):
    return ft.stack([x[0] * x[1], np.sin(x[2]), x[3] ** 2 - x[4]])


def concatenated(x):
    a = ft.stack([x[0] * x[1], np.exp(x[2])])
    b = ft.stack([x[3] / x[4], np.cos(x[0] * x[4]), x[1] - x[2]])
    return ft.concatenate([a, b])


def repeated(x):
    y = x[0] * x[1] + np.sin(x[2])
    return ft.stack([y, x[3] * x[4], y, y])


def with_constant(x):
    return ft.stack([x[0] * x[1], 2.5, np.tanh(x[2] + x[3])])


def input_element(x):
    return ft.stack([x[0], x[1] * x[2], x[4]])


def reused(x):
    a = x[0] * x[1]
    b = np.sin(a) + x[2]
    return ft.stack([a, b, a * b * x[3], x[4] ** 3])


def matrix(x):
    rows = ft.stack([ft.stack([x[0] * x[1], x[2] ** 2]),
                     ft.stack([np.sin(x[3]), x[4] * x[0]]),
                     ft.stack([x[1] + x[2], np.log(x[3] ** 2 + 1.0)])])
    return rows.T


def sliced(x):
    return ft.stack([x[0] * x[1], x[2] ** 2, np.exp(x[3]), x[4] * x[0], x[1] - x[3]])[1::2]


def broadcast(x):
    return ft.broadcast_to(x[0] * x[1] + x[2], (3,))


def loop(x):
    out = []
    for k in range(len(x) - 1):
        out.append(x[k + 1] - x[k] - 0.1 * np.sin(x[k]) * x[k + 1])
        out.append(x[k] ** 2 * x[k + 1])
    return ft.stack(out)


FUNCTIONS = [stacked, concatenated, repeated, with_constant, input_element, reused, matrix,
             sliced, broadcast, loop]


def general(f):
    """f kept on the general layout: its output times 1.0 is an array node."""
    def g(x):
        return f(x) * 1.0
    g.__name__ = f"{f.__name__} * 1.0"
    return g


def point(rng, n=5):
    return rng.uniform(0.5, 1.5, n)


def assert_scalar_trace(F):
    tr = F.traces[-1]
    assert tr.tape.scalar_layout
    assert tr.outs is not None and len(tr.outs) == int(np.prod(tr.out_shape))
    assert tr.output == tr.outs.max()


@pytest.mark.parametrize("f", FUNCTIONS, ids=lambda f: f.__name__)
def test_scalar_layout_and_derivatives(f, rng):
    x = point(rng)
    F = ft.compile(f, x)
    G = ft.compile(general(f), x)
    assert_scalar_trace(F)
    assert not G.traces[-1].tape.scalar_layout
    y = point(rng)
    v = rng.standard_normal(y.size)
    value = np.asarray(f(y))
    np.testing.assert_allclose(F(y), value, rtol=1e-14)
    np.testing.assert_allclose(F(y), G(y), rtol=1e-15)
    J = fd_jacobian(f, y).reshape(value.shape + y.shape)
    for mode in ("fwd", "rev"):
        np.testing.assert_allclose(F.jacobian(y, mode=mode), G.jacobian(y, mode=mode),
                                   rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(F.jacobian(y, mode=mode), J, rtol=1e-6, atol=1e-8)
    val, tan = F.jvp(y, v)
    np.testing.assert_allclose(val, value, rtol=1e-14)
    np.testing.assert_allclose(tan, G.jvp(y, v)[1], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(tan, (J.reshape(-1, y.size) @ v).reshape(value.shape),
                               rtol=1e-6, atol=1e-8)
    ct = rng.standard_normal(value.shape)
    val, g = F.vjp(y, ct)
    np.testing.assert_allclose(val, value, rtol=1e-14)
    np.testing.assert_allclose(g, G.vjp(y, ct)[1], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(g, ct.reshape(-1) @ J.reshape(-1, y.size), rtol=1e-6,
                               atol=1e-8)
    S = F.sparse_jacobian(y)
    np.testing.assert_allclose(S.toarray(), G.sparse_jacobian(y).toarray(), rtol=1e-13,
                               atol=1e-15)
    np.testing.assert_allclose(S.toarray(), J.reshape(-1, y.size), rtol=1e-6, atol=1e-8)
    w = rng.standard_normal(value.size)
    H = F.sparse_hessian(y, v=w).toarray()
    np.testing.assert_allclose(H, G.sparse_hessian(y, v=w).toarray(), rtol=1e-12,
                               atol=1e-14)
    # the Lagrangian's Hessian: central differences of its gradient Jᵀw
    Hfd = fd_jacobian(lambda z: w @ F.jacobian(z).reshape(-1, z.size), y)
    np.testing.assert_allclose(H, Hfd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("f", [stacked, repeated, matrix, loop], ids=lambda f: f.__name__)
def test_save_load_and_pickle(f, rng, tmp_path):
    x = point(rng)
    F = ft.compile(f, x)
    y = point(rng)
    path = tmp_path / "f.npz"
    F.save(path)
    for H in (ft.load(path), pickle.loads(pickle.dumps(F))):
        assert_scalar_trace(H)
        np.testing.assert_array_equal(H.traces[-1].outs, F.traces[-1].outs)
        np.testing.assert_array_equal(H(y), F(y))
        np.testing.assert_array_equal(H.jacobian(y), F.jacobian(y))
        np.testing.assert_array_equal(H.sparse_jacobian(y).toarray(),
                                      F.sparse_jacobian(y).toarray())


def test_bad_outs_are_refused_on_load(rng):
    """r{k}.outs must hold one scalar node per output element, in range, its maximum the
    trace's output node, on a tape in the scalar layout."""
    from fastape import _format
    F = ft.compile(loop, point(rng))
    G = ft.compile(general(loop), point(rng))
    header, arrays, _ = _format._function_parts(F)
    outs = arrays["r0.outs"]
    top = header["function"]["traces"][0]["output"]
    assert outs.max() == top
    _format.from_parts((header, dict(arrays), "good"))      # as saved: accepted
    bad = [outs[:-1], np.r_[outs[:-1], len(F.traces[-1].tape)], np.r_[outs[:-1], -1],
           np.where(outs == top, 0, outs), outs.astype(np.int32)]
    for b in bad:
        with pytest.raises(TapeFormatError, match="outs"):
            _format.from_parts((header, dict(arrays, **{"r0.outs": b}), "bad"))
    header, arrays, _ = _format._function_parts(G)       # the general layout: one node
    m = int(np.prod(header["function"]["traces"][0]["out_shape"]))
    with pytest.raises(TapeFormatError, match="outs"):
        _format.from_parts((header, dict(arrays, **{"r0.outs": np.zeros(m, np.int64)}), "g"))


def test_a_guard_on_the_whole_vector_keeps_the_general_layout(rng):
    def f(x):
        y = ft.stack([x[0] * x[1], x[2] - x[3]])
        return y if np.all(y > 0) else -y
    x = point(rng)
    F = ft.compile(f, x)
    assert not F.traces[-1].tape.scalar_layout and F.traces[-1].outs is None
    np.testing.assert_allclose(F.jacobian(x), fd_jacobian(f, x), rtol=1e-6, atol=1e-8)


def test_an_array_op_on_the_vector_keeps_the_general_layout(rng):
    def f(x):
        y = ft.stack([x[0] * x[1], x[2] - x[3], np.sin(x[4])])
        return ft.stack([np.sum(y), y[0], y[2]])
    x = point(rng)
    F = ft.compile(f, x)
    assert not F.traces[-1].tape.scalar_layout and F.traces[-1].outs is None
    for mode in ("fwd", "rev"):
        np.testing.assert_allclose(F.jacobian(x, mode=mode), fd_jacobian(f, x), rtol=1e-6,
                                   atol=1e-8)


def test_a_branch_whose_guard_flips_retraces(rng):
    def f(x):
        a = x[0] * x[1]
        b = np.sin(x[2]) if x[3] > 1.0 else np.cos(x[2]) * x[4]
        return ft.stack([a, b, a + b])
    x = np.array([0.7, 1.1, 0.9, 1.2, 0.8])
    y = np.array([0.7, 1.1, 0.9, 0.8, 0.8])        # x[3] < 1: the other branch
    F = ft.compile(f, x)
    G = ft.compile(general(f), x)
    for z in (x, y, x):
        assert_scalar_trace(F)
        np.testing.assert_allclose(F(z), f(z), rtol=1e-14)
        np.testing.assert_allclose(F.jacobian(z, mode="rev"), G.jacobian(z, mode="rev"),
                                   rtol=1e-13)
        np.testing.assert_allclose(F.jacobian(z, mode="fwd"), fd_jacobian(f, z), rtol=1e-6,
                                   atol=1e-8)
        np.testing.assert_allclose(F.vjp(z, np.ones(3))[1], G.vjp(z, np.ones(3))[1],
                                   rtol=1e-13)
    assert len(F.traces) == 2
    # a branch with another pattern: refused by the sparse Jacobian, never wrong
    F = ft.compile(f, x)
    F.sparse_jacobian(x)
    with pytest.raises(ft.sparse.SparsityChanged):
        F.sparse_jacobian(y)


def test_size_one_output_is_its_scalar_node(rng):
    def f(x):
        return ft.stack([x[0] * x[1] + np.sin(x[2])])
    x = point(rng, 3)
    F = ft.compile(f, x)
    tr = F.traces[-1]
    assert tr.tape.scalar_layout and tr.outs is None and tr.direct_hvp
    assert F(x).shape == (1,)
    np.testing.assert_allclose(F.grad(x), fd_jacobian(f, x)[0], rtol=1e-7)
    np.testing.assert_allclose(F.hessian(x), fd_jacobian(lambda z: F.grad(z), x), rtol=1e-6,
                               atol=1e-8)


def test_second_order_and_batch_refuse_a_vector_output(rng):
    F = ft.compile(stacked, point(rng))
    x = point(rng)
    for call in (lambda: F.hvp(x, x), lambda: F.hessian(x), lambda: F.grad(x),
                 lambda: F.grad_batch(np.stack([x, x]))):
        with pytest.raises(ShapeError, match="scalar"):
            call()


def test_compressed_jacobian_ways_agree(rng):
    """J S by the vector-mode sweep node by node (way 0), one sweep per color (1) and the
    vector-mode sweep run by run on the grouped tape (2): the same numbers."""
    from fastape import sparse
    x = point(rng, 60)
    F = ft.compile(loop, x)
    assert F.traces[-1].run_count > 0
    F.sparse_jacobian(x)
    fixed = sparse._fixed_jacobian(F)
    assert fixed.ncolors > 1
    y = point(rng, 60)
    B = [F._compressed((y,), fixed.colors, fixed.ncolors, False, way)[0] for way in (0, 1, 2)]
    np.testing.assert_array_equal(B[2], B[0])
    np.testing.assert_allclose(B[1], B[0], rtol=1e-15, atol=0)
    np.testing.assert_allclose(F.sparse_jacobian(y).toarray(), fd_jacobian(loop, y),
                               rtol=1e-6, atol=1e-8)


def test_nodes_and_nbytes(rng):
    x = point(rng, 40)
    F = ft.compile(loop, x)
    G = ft.compile(general(loop), x)
    assert F.nodes < G.nodes            # no CONCAT (and no MUL_K) node
    assert F.nbytes > 0


def test_optimize_constraints_take_the_scalar_layout():
    from fastape.optimize import _Problem
    N = 20
    x0 = np.linspace(0.1, 1.0, N)
    cons = [{"type": "eq", "fun": lambda z: [z[k + 1] - z[k] ** 2 for k in range(N - 1)]},
            {"type": "ineq", "fun": lambda z: [1.0 - z[k] for k in range(N)]}]
    P = _Problem(lambda z: np.sum(z ** 2), x0, (), cons)
    assert_scalar_trace(P.C)
    J = P.C.sparse_jacobian(x0).toarray()
    np.testing.assert_allclose(J, fd_jacobian(lambda z: P.C(z), x0), rtol=1e-6, atol=1e-8)
