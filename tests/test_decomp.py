"""Decompositions and linear algebra (issue 13, item 4): fastape._decomp and the
stacked and extended fastape.linalg, against numpy/scipy values, central differences
(check_grads, order 2, both modes), closed forms and scipy.linalg.expm_frechet."""

import numpy as np
import pytest
import scipy.linalg
from helpers import assert_refused

import fastape as ft
from fastape.errors import ShapeError

rng = np.random.default_rng(11)
B4 = rng.standard_normal((4, 4))
SPD = (B4 @ B4.T + 4 * np.eye(4)) * 0.3
G = rng.standard_normal((4, 4)) * 0.5
R43 = rng.standard_normal((4, 3))
_S = rng.standard_normal((4, 4)) + 3 * np.eye(4)
REAL_SPECTRUM = _S @ np.diag([0.5, -1.0, 2.0, 3.5]) @ np.linalg.inv(_S)   # not symmetric


def _sp(name):
    """scipy.linalg's function on plain arrays, fastape.scipy.linalg's on values."""
    return lambda *a, **k: getattr(scipy.linalg if all(isinstance(x, np.ndarray) for x in a)
                                   else ft.scipy.linalg, name)(*a, **k)


ROWS = [
    ("cholesky", lambda a: np.linalg.cholesky(a), (SPD,)),
    ("cholesky_upper", lambda a: np.linalg.cholesky(a, upper=True), (SPD,)),
    ("cholesky_stack", lambda a: np.linalg.cholesky(np.stack([a, a @ a])), (SPD,)),
    ("scipy_cholesky", lambda a: _sp("cholesky")(a), (SPD,)),
    ("scipy_cholesky_lower", lambda a: _sp("cholesky")(a, lower=True), (SPD,)),
    ("eigh_values", lambda a: np.linalg.eigh(a)[0], (SPD,)),
    ("eigh_vectors", lambda a: np.abs(np.linalg.eigh(a)[1]), (SPD,)),
    ("eigh_upper", lambda a: np.linalg.eigh(a, UPLO="U").eigenvalues, (G,)),
    ("eigvalsh", lambda a: np.linalg.eigvalsh(a), (G,)),
    ("scipy_eigh", lambda a: _sp("eigh")(a, eigvals_only=True), (SPD,)),
    ("svd_values", lambda a: np.linalg.svd(a, compute_uv=False), (R43,)),
    ("svdvals", lambda a: np.linalg.svdvals(a), (G,)),
    ("svd_square", lambda a: np.linalg.svd(a), (G,)),
    ("svd_tall", lambda a: np.linalg.svd(a, full_matrices=False), (R43,)),
    ("svd_wide", lambda a: np.linalg.svd(a, full_matrices=False), (R43.T,)),
    ("qr_tall", lambda a: np.linalg.qr(a), (R43,)),
    ("qr_square", lambda a: np.linalg.qr(a), (G,)),
    ("qr_wide", lambda a: np.linalg.qr(a), (R43.T,)),
    ("qr_r", lambda a: np.linalg.qr(a, mode="r"), (R43,)),
    ("qr_stack", lambda a: np.linalg.qr(np.stack([a, 2 * a])).Q, (R43,)),
    ("eig_values", lambda a: np.linalg.eig(a).eigenvalues, (REAL_SPECTRUM,)),
    ("eig_vectors", lambda a: np.linalg.eig(a).eigenvectors, (REAL_SPECTRUM,)),
    ("solve_triangular", lambda a, b: _sp("solve_triangular")(a, b, lower=True), (G, R43)),
    ("solve_triangular_T_unit", lambda a, b: _sp("solve_triangular")(
        a, b, trans=1, unit_diagonal=True), (G, R43[:, 0])),
    ("cho_solve", lambda a, b: _sp("cho_solve")(_sp("cho_factor")(a), b), (SPD, R43)),
    ("cho_solve_lower", lambda a, b: _sp("cho_solve")(_sp("cho_factor")(a, lower=True), b),
     (SPD, R43[:, 1])),
    ("expm", lambda a: _sp("expm")(a), (G,)),
    ("expm_scaled", lambda a: _sp("expm")(a), (G * 12,)),
    ("matrix_power", lambda a: np.linalg.matrix_power(a, 5), (G,)),
    ("matrix_power_neg", lambda a: np.linalg.matrix_power(a, -2), (SPD,)),
    ("pinv_tall", lambda a: np.linalg.pinv(a), (R43,)),
    ("pinv_wide", lambda a: np.linalg.pinv(a), (R43.T,)),
    ("lstsq", lambda a, b: np.linalg.lstsq(a, b, rcond=None)[0], (R43, R43[:, 0] + 1)),
    ("lstsq_residuals", lambda a, b: np.linalg.lstsq(a, b, rcond=None)[1], (R43, np.ones(4))),
    ("cond", lambda a: np.linalg.cond(a), (G,)),
    ("cond_fro", lambda a: np.linalg.cond(a, "fro"), (G,)),
    ("norm_2", lambda a: np.linalg.norm(a, 2), (G,)),
    ("norm_m2", lambda a: np.linalg.norm(a, -2), (G,)),
    ("norm_nuc", lambda a: np.linalg.norm(a, "nuc"), (R43,)),
    ("norm_1", lambda a: np.linalg.norm(a, 1), (G,)),
    ("norm_minf", lambda a: np.linalg.norm(a, -np.inf), (G,)),
    ("norm_p3", lambda a: np.linalg.norm(a, 3), (R43[:, 0],)),
    ("norm_p_half_axis", lambda a: np.linalg.norm(a, 0.5, axis=1), (R43 + 3.0,)),
    ("norm_matrix_axes", lambda a: np.linalg.norm(a, "nuc", axis=(0, 2)),
     (rng.standard_normal((3, 2, 4)),)),
    ("solve_stack", lambda a, b: np.linalg.solve(np.stack([a, a @ a]), b), (SPD, R43)),
    ("solve_stack_vector", lambda a, b: np.linalg.solve(np.stack([a, 2 * a]), b),
     (SPD, R43[:, 0])),
    ("inv_stack", lambda a: np.linalg.inv(np.stack([a, a.T])), (G,)),
    ("det_stack", lambda a: np.linalg.det(np.stack([a, a @ a])), (G,)),
    ("slogdet_stack", lambda a: np.linalg.slogdet(np.stack([a, a @ a])).logabsdet, (G,)),
]


@pytest.mark.parametrize("name, fn, args", ROWS, ids=[r[0] for r in ROWS])
def test_values_and_derivatives(name, fn, args):
    want = fn(*args)
    out, _ = ft.vjp(fn, *args)
    got = [np.asarray(getattr(o, "value", o)) for o in
           (out if isinstance(out, tuple) else (out,))]
    ref = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, ref):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-11, err_msg=name)
    ft.check_grads(fn, args, order=2, modes=("fwd", "rev"))


def test_closed_forms():
    """d log det A = A⁻¹ through 2 Σ log L_ii (Cholesky), dw_k = v_k v_kᵀ (eigh),
    ds_k = u_k v_kᵀ (svd), read from the lower triangle where LAPACK reads it."""
    A = SPD
    low = np.tri(4)
    sym_to_lower = low + np.tril(np.ones((4, 4)), -1)       # 2 off the diagonal, 1 on it
    g = ft.grad(lambda a: 2 * np.sum(np.log(np.diagonal(np.linalg.cholesky(a)))))(A)
    np.testing.assert_allclose(g, np.linalg.inv(A) * sym_to_lower, rtol=1e-10, atol=1e-13)
    w, V = np.linalg.eigh(A)
    for k in range(4):
        gk = ft.grad(lambda a, k=k: np.linalg.eigh(a)[0][k])(A)
        np.testing.assert_allclose(gk, np.outer(V[:, k], V[:, k]) * sym_to_lower,
                                   rtol=1e-9, atol=1e-12)
    U, s, Vh = np.linalg.svd(R43, full_matrices=False)
    for k in range(3):
        gk = ft.grad(lambda a, k=k: np.linalg.svd(a, compute_uv=False)[k])(R43)
        np.testing.assert_allclose(gk, np.outer(U[:, k], Vh[k]), rtol=1e-10, atol=1e-12)


def test_expm_against_scipy_frechet():
    E = rng.standard_normal((4, 4))
    for A in (G, G * 12):
        _, t = ft.jvp(ft.scipy.linalg.expm, (A,), (E,))
        np.testing.assert_allclose(t, scipy.linalg.expm_frechet(A, E, compute_expm=False),
                                   rtol=1e-11, atol=1e-11)


def test_compiled_replay():
    """A compiled function with decompositions replays at new inputs (the Cholesky and
    eigh as callback nodes, expm's scaling guarded)."""
    def f(a):
        L = np.linalg.cholesky(a @ a.T + np.eye(4))
        return np.sum(L) + np.sum(np.linalg.eigvalsh(a) ** 2) + np.sum(ft.scipy.linalg.expm(a))
    F = ft.compile(f, G)
    for a in (G, G * 1.1 + 0.05, G * 9):
        v, g = F.value_and_grad(a)
        v0, g0 = ft.value_and_grad(f)(a)
        np.testing.assert_allclose(v, v0, rtol=1e-12)
        np.testing.assert_allclose(g, g0, rtol=1e-10, atol=1e-12)
    assert len(F.traces) >= 2                       # G * 9 needs another scaling


@pytest.mark.parametrize("call, exc, words", [
    (lambda a: np.linalg.eigh(np.eye(3) + 0 * a[:3, :3])[1], np.linalg.LinAlgError,
     ["repeat"]),
    (lambda a: np.linalg.cholesky(-a @ a.T), np.linalg.LinAlgError, []),
    (lambda a: np.linalg.pinv(a[:, :1] @ a[:1, :]), np.linalg.LinAlgError, ["rank-deficient"]),
    (lambda a: np.linalg.svd(a[:, :3]), ValueError, ["full_matrices=False"]),
    (lambda a: np.linalg.svd(a[:, :3] * 0 + 1.0, full_matrices=False).U,
     np.linalg.LinAlgError, ["repeat"]),
    (lambda a: np.linalg.cholesky(a[:, :3]), ShapeError, ["square", "(4, 3)"]),
    (lambda a: np.linalg.norm(a, "bogus"), ValueError, ["bogus"]),
    (lambda a: np.linalg.lstsq(a[:3], a[:3, 0], rcond=None), np.linalg.LinAlgError,
     ["underdetermined"]),
    (lambda a: ft.scipy.linalg.solve_triangular(a, a[:3, 0]), ShapeError, ["(3,)"]),
    (lambda a: np.linalg.eig(np.array([[0.0, -1.0], [1.0, 0.0]]) + 0 * a[:2, :2]).eigenvalues,
     np.linalg.LinAlgError, ["complex"]),
    (lambda a: np.linalg.qr(a[:, :1] @ a[:1, :3]).R, np.linalg.LinAlgError, ["full column"]),
    (lambda a: np.linalg.qr(a[:, :3], mode="complete").R, ValueError, ["complete"]),
])
def test_bad_input(call, exc, words):
    assert_refused(call, G.copy(), exc, words)


def test_cholesky_closed_form_transpose_is_the_rules_transpose():
    """The eager/compiled reverse of cholesky uses Ā = L⁻ᵀ Φ(Lᵀ L̄) L⁻¹ in closed form
    (custom_jvp.numeric_vjp); it must be the transpose of the forward rule the nested
    sweeps use: ⟨vjp(C), T⟩ = ⟨C, jvp(T)⟩ for random C, T, and grad of grad agrees
    with central differences of the gradient."""
    rng = np.random.default_rng(5)
    B = rng.standard_normal((5, 5))
    A = B @ B.T + 5 * np.eye(5)
    for _ in range(3):
        C, T = rng.standard_normal((5, 5)), rng.standard_normal((5, 5))
        (bar,) = ft.vjp(np.linalg.cholesky, A)[1](C)
        tan = ft.jvp(np.linalg.cholesky, (A,), (T,))[1]
        assert np.sum(bar * T) == pytest.approx(np.sum(C * tan), rel=1e-12)
    W = rng.standard_normal((5, 5))
    f = lambda a: np.sum(np.linalg.cholesky(a @ a.T + np.eye(5)) * W)   # noqa: E731
    F = ft.compile(f, B)
    np.testing.assert_allclose(F.grad(B), ft.grad(f)(B), rtol=1e-12)
    H = ft.hessian(lambda b: f(b.reshape(5, 5)))(B.reshape(-1))
    h = 1e-5
    g = ft.grad(lambda b: f(b.reshape(5, 5)))
    Hfd = np.array([(g(B.reshape(-1) + h * e) - g(B.reshape(-1) - h * e)) / (2 * h)
                    for e in np.eye(25)])
    np.testing.assert_allclose(H, Hfd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fn", [lambda a: tuple(np.linalg.eigh(a)), np.linalg.eigvalsh,
                                lambda a: np.linalg.svd(a, compute_uv=False),
                                lambda a: np.linalg.svd(a[:, :3], compute_uv=False)],
                         ids=["eigh", "eigvalsh", "svdvals", "svdvals_rect"])
def test_closed_form_transposes_of_the_decompositions(fn):
    """eigh, eigvalsh and svdvals reverse in closed form too (Ā = V (diag w̄ + F ∘ VᵀV̄)
    Vᵀ, V diag(w̄) Vᵀ, U diag(s̄) Vᴴ): the transposes of their forward rules."""
    rng = np.random.default_rng(11)
    B = rng.standard_normal((5, 5))
    A = B + B.T
    out = fn(A)
    for _ in range(3):
        C = tuple(rng.standard_normal(np.shape(o)) for o in out) if isinstance(out, tuple) \
            else rng.standard_normal(np.shape(out))
        T = rng.standard_normal((5, 5))
        (bar,) = ft.vjp(fn, A)[1](C)
        tan = ft.jvp(fn, (A,), (T,))[1]
        rhs = sum(np.sum(c * t) for c, t in zip(C, tan)) if isinstance(out, tuple) \
            else np.sum(C * tan)
        assert np.sum(bar * T) == pytest.approx(rhs, rel=1e-10)


def test_cholesky_fast_rule_is_the_general_rule(tmp_path):
    """cholesky of one fastape matrix records its CALLBACK node with the lean rule
    (custom._ArrayRule: no pytree walking); it must give what the general rule gives:
    the same gradient, tangents and Hessian, eager and compiled, after pickling and
    after save/load."""
    import pickle

    from fastape import _decomp
    rng = np.random.default_rng(8)
    B = rng.standard_normal((4, 4))
    W = rng.standard_normal((4, 4))
    f = lambda b: np.sum(np.linalg.cholesky(b @ b.T + np.eye(4)) * W)     # noqa: E731
    fast = ft.value_and_grad(f)(B)
    fast_h = ft.hessian(lambda b: f(b.reshape(4, 4)))(B.reshape(-1))
    F = ft.compile(f, B)
    dB = rng.standard_normal((4, 4))
    fast_t = F.jvp(B, dB)
    try:
        _decomp._cholesky_sym._array_rule = False
        slow = ft.value_and_grad(f)(B)
        slow_h = ft.hessian(lambda b: f(b.reshape(4, 4)))(B.reshape(-1))
        slow_t = ft.compile(f, B).jvp(B, dB)
    finally:
        _decomp._cholesky_sym._array_rule = True
    assert fast[0] == slow[0]
    np.testing.assert_allclose(fast[1], slow[1], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(fast_h, slow_h, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(fast_t[1], slow_t[1], rtol=1e-13, atol=1e-15)
    P = ft.compile(f, B, retrace=False)
    for G in (pickle.loads(pickle.dumps(P)), None):
        if G is None:
            F.save(tmp_path / "chol.fastape")
            G = ft.load(tmp_path / "chol.fastape", callbacks=F.rules)
        B2 = B * 1.1 + 0.1
        v, g = G.value_and_grad(B2)
        v0, g0 = ft.value_and_grad(f)(B2)
        assert v == pytest.approx(v0, rel=1e-13)
        np.testing.assert_allclose(g, g0, rtol=1e-12, atol=1e-14)
