"""Complex values on the tape (issue 18): the ops of fastape._complex against numpy's
values, central finite differences in the real and the imaginary direction separately,
the Cauchy–Riemann equations, closed forms, jvp/vjp duality, and JAX where installed."""

import numpy as np
import pytest

import fastape as ft
from fastape import _complex

RNG = np.random.default_rng(18)
# away from the branch cut of log/sqrt/power (the negative real axis) and from poles
Z = np.array([0.7 + 0.4j, -0.3 + 1.1j, 1.3 - 0.8j, 0.2 + 0.5j])
W = np.array([0.9 - 0.3j, 0.4 + 0.6j, -1.2 + 0.7j, 0.5 + 0.25j])
A_RE, A_IM = RNG.normal(size=4), RNG.normal(size=4)


def fd_grad(f, z, h=1e-6):
    """∂f/∂x − i ∂f/∂y by central differences (JAX's convention for real f)."""
    z = np.asarray(z, dtype=complex)
    g = np.zeros(z.shape, dtype=complex)
    for i in np.ndindex(z.shape):
        e = np.zeros(z.shape)
        e[i] = h
        dx = (f(z + e) - f(z - e)) / (2 * h)
        dy = (f(z + 1j * e) - f(z - 1j * e)) / (2 * h)
        g[i] = dx - 1j * dy
    return g


def real_loss(op):
    """A real function of op's complex result that weighs the real and imaginary parts
    differently, so either part's derivative being wrong shows."""
    return lambda z: np.sum(np.real(op(z)) * A_RE + np.imag(op(z)) * A_IM)


# rows derived from the tables of fastape._complex: a new complex op gets tested
UNARY = sorted(_complex.UNARY, key=lambda u: u.__name__)
BINARY = sorted(_complex.BINARY, key=lambda u: u.__name__)
HOLOMORPHIC_DERIVATIVE = {
    np.exp: np.exp, np.log: lambda z: 1 / z, np.sqrt: lambda z: 0.5 / np.sqrt(z),
    np.square: lambda z: 2 * z, np.reciprocal: lambda z: -1 / z ** 2, np.sin: np.cos,
    np.cos: lambda z: -np.sin(z), np.tan: lambda z: 1 / np.cos(z) ** 2, np.sinh: np.cosh,
    np.cosh: np.sinh, np.tanh: lambda z: 1 - np.tanh(z) ** 2,
    np.log10: lambda z: 1 / (z * np.log(10)), np.log2: lambda z: 1 / (z * np.log(2)),
    np.negative: lambda z: -np.ones_like(z), np.positive: np.ones_like,
}


@pytest.mark.parametrize("ufunc", UNARY, ids=lambda u: u.__name__)
def test_unary_values_and_gradients(ufunc):
    expected = ufunc(Z)
    got = ft.jvp(ufunc, (Z,), (np.zeros_like(Z),))[0]
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-15)
    f = real_loss(ufunc)
    np.testing.assert_allclose(ft.grad(f)(Z), fd_grad(f, Z), rtol=1e-6, atol=1e-8)
    F = ft.compile(f, Z)
    Z2 = Z * (1.1 - 0.05j)
    np.testing.assert_allclose(F(Z2), f(Z2), rtol=1e-13)
    np.testing.assert_allclose(F.grad(Z2), fd_grad(f, Z2), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("ufunc", UNARY, ids=lambda u: u.__name__)
def test_unary_cauchy_riemann(ufunc):
    """A holomorphic op's complex derivative, and conjugation refused as not holomorphic."""
    z = complex(Z[0])
    if ufunc is np.conjugate:
        with pytest.raises(ValueError, match="not holomorphic"):
            ft.grad(ufunc, holomorphic=True)(z)
        return
    d = ft.grad(ufunc, holomorphic=True)(z)
    assert d == pytest.approx(HOLOMORPHIC_DERIVATIVE[ufunc](z), rel=1e-12)


@pytest.mark.parametrize("ufunc", BINARY, ids=lambda u: u.__name__)
@pytest.mark.parametrize("kind", ["complex-complex", "real-complex", "complex-real",
                                  "complex-constant"])
def test_binary_values_and_gradients(ufunc, kind):
    x_re = np.abs(Z.real) + 0.5            # a positive real base for power
    if kind == "complex-complex":
        def f(z, w):
            return ufunc(z, w)
        args = (Z, W)
    elif kind == "real-complex":
        def f(z, w):
            return ufunc(z, w)
        args = (x_re, W)
    elif kind == "complex-real":
        def f(z, w):
            return ufunc(z, w)
        args = (Z, x_re)
    else:
        def f(z, w):
            return ufunc(z, W)
        args = (Z, W)
    np.testing.assert_allclose(ft.jvp(f, args, tuple(np.zeros_like(a) for a in args))[0],
                               ufunc(*((args[0], W) if kind == "complex-constant" else args)),
                               rtol=1e-13)
    loss = real_loss(lambda p: f(*p))
    g = ft.grad(lambda *p: loss(p), argnums=(0, 1))(*args)
    for k in range(2):
        def part(v, k=k):
            p = list(args)
            p[k] = v
            return loss(tuple(p))
        expected = fd_grad(part, args[k])
        if not np.iscomplexobj(args[k]):
            expected = expected.real
        np.testing.assert_allclose(g[k], expected, rtol=1e-6, atol=1e-8)


def test_integer_and_real_powers():
    for p in (0, 1, 2, 3, -2, 0.5, 2.5, -1.5):
        f = real_loss(lambda z, p=p: z ** p)
        np.testing.assert_allclose(ft.jvp(lambda z, p=p: z ** p, (Z,), (0 * Z,))[0], Z ** p,
                                   rtol=1e-13)
        np.testing.assert_allclose(ft.grad(f)(Z), fd_grad(f, Z), rtol=1e-6, atol=1e-8)
    # a real negative base with a fractional power is complex, as in numpy
    assert ft.jvp(lambda x: (x + 0j) ** 0.5, (-4.0,), (1.0,))[0] == pytest.approx(2j)


def test_closed_forms():
    z = 3.0 + 4.0j
    assert ft.grad(lambda z: abs(z) ** 2)(z) == pytest.approx(2 * np.conj(z))   # 6 − 8i
    theta = 0.7
    # Re(e^{iθ} z): gradient e^{iθ} in z, −Im(e^{iθ} z) in θ
    g_z, g_t = ft.grad(lambda z, t: np.real(np.exp(1j * t) * z), argnums=(0, 1))(z, theta)
    assert g_z == pytest.approx(np.exp(1j * theta))
    assert g_t == pytest.approx(-np.imag(np.exp(1j * theta) * z))
    # |z| = r: (x − iy)/r; angle θ = atan2(y, x): ∂θ/∂x − i ∂θ/∂y = (−y − ix)/r²
    assert ft.grad(np.abs)(z) == pytest.approx(np.conj(z) / abs(z))
    assert ft.grad(np.angle)(z) == pytest.approx((-z.imag - 1j * z.real) / abs(z) ** 2)


def test_jvp_vjp_duality():
    """Re Σ vjp(c)·t = Re Σ c·jvp(t), the pairing JAX's convention keeps."""
    def f(z, x):
        return np.exp(z) * x + np.conj(z) * z ** 2 / (1 + x)
    x = np.array([0.3, 1.2, -0.4, 2.0])
    t = (RNG.normal(size=4) + 1j * RNG.normal(size=4), RNG.normal(size=4))
    c = RNG.normal(size=4) + 1j * RNG.normal(size=4)
    out, tan = ft.jvp(f, (Z, x), t)
    _, f_vjp = ft.vjp(f, Z, x)
    bz, bx = f_vjp(c)
    lhs = np.real(np.sum(bz * t[0]) + np.sum(bx * t[1]))
    rhs = np.real(np.sum(c * tan))
    assert lhs == pytest.approx(rhs, rel=1e-12)
    np.testing.assert_allclose(out, f(Z, x), rtol=1e-14)


def test_mixed_real_and_complex_and_back():
    """A real input through complex intermediates to a real output: a plain gradient."""
    def f(x):
        z = x * (1 + 2j) + np.exp(1j * x)
        return np.sum(np.abs(z) ** 2) + np.sum(np.angle(z)) + np.sum(np.real(z) * np.imag(z))
    x = np.array([0.3, -0.8, 1.5])
    h = 1e-6
    fd = np.array([(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(3)])
    g = ft.grad(f)(x)
    assert g.dtype == np.float64
    np.testing.assert_allclose(g, fd, rtol=1e-7)
    # second order through complex intermediates, against differences of the gradient
    H = ft.hessian(f)(x)
    Hfd = np.array([(ft.grad(f)(x + h * e) - ft.grad(f)(x - h * e)) / (2 * h) for e in np.eye(3)])
    np.testing.assert_allclose(H, Hfd, rtol=1e-6, atol=1e-7)


def test_structural_and_reductions_act_on_both_parts():
    M = RNG.normal(size=(3, 4)) + 1j * RNG.normal(size=(3, 4))
    fns = [lambda m: m.T, lambda m: m.reshape(4, 3), lambda m: m[1:, ::2],
           lambda m: np.concatenate([m, 2 * m], axis=1), lambda m: np.stack([m, m * 1j]),
           lambda m: np.sum(m, axis=0), lambda m: np.mean(m, axis=1, keepdims=True),
           lambda m: np.cumsum(m, axis=1), lambda m: np.flip(m, 0), lambda m: np.roll(m, 1, 1),
           lambda m: np.diff(m, axis=1), lambda m: np.tril(m[:, :3]),
           lambda m: np.pad(m, 1), lambda m: np.prod(m, axis=1), lambda m: np.prod(m[0]),
           lambda m: np.trace(m[:, :3]), lambda m: np.where(np.eye(3, 4) > 0, m, 1j),
           lambda m: np.split(m, 2, axis=1)[1], lambda m: np.vstack([m, m[:1]]),
           lambda m: np.fft.fftshift(m), lambda m: m.conj(), lambda m: np.real_if_close(m)]
    for k, fn in enumerate(fns):
        np.testing.assert_allclose(ft.jvp(fn, (M,), (0 * M,))[0], fn(M), rtol=1e-13,
                                   err_msg=f"function {k}")
        loss = lambda m, fn=fn: np.sum(np.abs(fn(m) + 0.3) ** 2)   # noqa: E731
        np.testing.assert_allclose(ft.grad(loss)(M), fd_grad(loss, M), rtol=1e-6, atol=1e-7,
                                   err_msg=f"function {k}")


def test_linear_algebra():
    A = RNG.normal(size=(3, 3)) + 1j * RNG.normal(size=(3, 3)) + 2 * np.eye(3)
    B = RNG.normal(size=(3, 2)) + 1j * RNG.normal(size=(3, 2))
    b = RNG.normal(size=3) + 1j * RNG.normal(size=3)
    Ar = A.real
    cases = [
        (lambda A, B: A @ B, (A, B)), (lambda A, B: np.dot(A, B), (A, B)),
        (lambda A, B: np.einsum("ij,jk->ik", A, B), (A, B)),
        (lambda A, B: np.linalg.solve(A, B), (A, B)), (lambda A, B: np.linalg.inv(A), (A, B)),
        (lambda A, B: np.linalg.det(A), (A, B)), (lambda A, B: Ar @ B, (A, B)),
        (lambda A, B: np.linalg.solve(Ar, B), (A, B)),
        (lambda A, b: np.linalg.solve(A, b), (A, b)), (lambda A, b: np.vdot(b, A @ b), (A, b)),
        (lambda A, b: np.outer(b, b) + np.kron(A, A)[:3, :3], (A, b)),
    ]
    for k, (fn, args) in enumerate(cases):
        np.testing.assert_allclose(ft.jvp(fn, args, tuple(0 * a for a in args))[0], fn(*args),
                                   rtol=1e-12, err_msg=f"case {k}")
        for arg in range(2):
            def loss(v, arg=arg, fn=fn, args=args):
                p = list(args)
                p[arg] = v
                return np.sum(np.abs(fn(*p)) ** 2)
            g = ft.grad(loss)(args[arg])
            np.testing.assert_allclose(g, fd_grad(loss, args[arg]), rtol=1e-5, atol=1e-6,
                                       err_msg=f"case {k}, argument {arg}")


def test_compiled_replay_and_nesting():
    def f(z, x):
        return np.sum(np.abs(np.sin(z) * x) ** 2) + np.real(np.sum(z ** 3))
    x = np.array([0.5, 1.5, -1.0, 2.0])
    F = ft.compile(f, Z, x)
    Z2, x2 = Z * 0.9 + 0.1j, x * 1.1
    assert F(Z2, x2) == pytest.approx(f(Z2, x2), rel=1e-13)
    np.testing.assert_allclose(F.grad(Z2, x2), ft.grad(f)(Z2, x2), rtol=1e-13)
    np.testing.assert_allclose(F.grad(Z2, x2), fd_grad(lambda z: f(z, x2), Z2), rtol=1e-6)
    # the gradient of a gradient's norm (nested through complex values)
    def outer(z):
        return np.sum(np.abs(ft.grad(f)(z, x)) ** 2)
    np.testing.assert_allclose(ft.grad(outer)(Z), fd_grad(outer, Z), rtol=1e-5, atol=1e-6)


def test_holomorphic_grad_of_a_composite():
    f = lambda z: np.exp(np.sin(z) * z) / (1 + z ** 2)           # noqa: E731
    z = 0.4 + 0.3j
    h = 1e-6
    d = ft.grad(f, holomorphic=True)(z)
    assert d == pytest.approx((f(z + h) - f(z - h)) / (2 * h), rel=1e-8)
    assert d == pytest.approx((f(z + 1j * h) - f(z - 1j * h)) / (2j * h), rel=1e-8)
    v, d2 = ft.value_and_grad(f, holomorphic=True)(z)
    assert v == pytest.approx(f(z)) and d2 == d


def test_peers_agree():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy

    def ours(z):
        return np.sum(np.abs(np.exp(z) * np.conj(z) - np.sqrt(z)) ** 2 + np.angle(z ** 3))

    def theirs(z):
        return jnp.sum(jnp.abs(jnp.exp(z) * jnp.conj(z) - jnp.sqrt(z)) ** 2
                       + jnp.angle(z ** 3))
    np.testing.assert_allclose(ft.grad(ours)(Z), np.asarray(jax.grad(theirs)(Z)), rtol=1e-12)
    c = W
    _, fv = ft.vjp(lambda z: np.conj(z) * np.tan(z), Z)
    _, jv = jax.vjp(lambda z: jnp.conj(z) * jnp.tan(z), Z)
    np.testing.assert_allclose(fv(c)[0], np.asarray(jv(c)[0]), rtol=1e-12)


def test_bad_input_is_refused_clearly():
    z = 1.0 + 2.0j
    with pytest.raises(TypeError, match="maximum.*complex operands"):
        ft.grad(lambda z: np.abs(np.maximum(z, 1.0)))(z)
    with pytest.raises(TypeError, match="no ordering"):
        ft.grad(lambda z: np.abs(z) if z > 0 else 0.0)(z)
    with pytest.raises(TypeError, match="arctan2"):
        ft.grad(lambda x: np.abs(np.arctan2(x, 1j)))(1.0)
    with pytest.raises(TypeError, match="complex value.*holomorphic=True"):
        ft.grad(lambda z: z * z)(z)
    with pytest.raises(TypeError, match="needs complex arguments"):
        ft.grad(lambda x: x * 1j, holomorphic=True)(1.0)
    with pytest.raises(TypeError, match="complex scalar output"):
        ft.grad(lambda z: np.abs(z), holomorphic=True)(z)
    with pytest.raises(TypeError, match="Jacobians and Hessians of complex"):
        ft.jacobian(lambda z: z * 2)(np.array([z]))
    with pytest.raises(TypeError, match="drop it from the tape"):
        ft.grad(lambda z: abs(complex(z)))(z)
    with pytest.raises(TypeError, match="dtypes must agree"):
        ft.jvp(np.sin, (1.0,), (1j,))
    with pytest.raises(TypeError, match="is complex"):
        ft.Tape().var(np.ones(2) + 1j)
    F = ft.compile(lambda z: np.sum(np.abs(z) ** 2), np.ones(2) + 0j)
    with pytest.raises(TypeError, match="complex array"):
        F(np.ones(2))
    with pytest.raises(TypeError, match="not supported"):
        F.jacobian(np.ones(2) + 0j)
    # nothing the user passed is mutated
    a = np.array([1 + 1j, 2 - 1j])
    keep = a.copy()
    ft.grad(lambda z: np.sum(np.abs(z) ** 2))(a)
    np.testing.assert_array_equal(a, keep)


def test_stacked_linear_algebra():
    A = RNG.normal(size=(2, 3, 3)) + 1j * RNG.normal(size=(2, 3, 3)) + 2 * np.eye(3)
    B = RNG.normal(size=(2, 3, 2)) + 1j * RNG.normal(size=(2, 3, 2))
    v = RNG.normal(size=3) + 1j * RNG.normal(size=3)
    for k, fn in enumerate([lambda A: np.linalg.solve(A, B), lambda A: np.linalg.solve(A, v),
                            np.linalg.inv, np.linalg.det]):
        np.testing.assert_allclose(ft.jvp(fn, (A,), (0 * A,))[0], fn(A), rtol=1e-12,
                                   err_msg=f"case {k}")
        loss = lambda a, fn=fn: np.sum(np.abs(fn(a)) ** 2)      # noqa: E731
        np.testing.assert_allclose(ft.grad(loss)(A), fd_grad(loss, A), rtol=1e-5, atol=1e-6,
                                   err_msg=f"case {k}")


def test_statistics_and_norms():
    M = RNG.normal(size=(3, 4)) + 1j * RNG.normal(size=(3, 4))
    fns = [np.var, np.std, lambda m: np.var(m, axis=0, ddof=1), lambda m: np.std(m, axis=1),
           np.linalg.norm, lambda m: np.linalg.norm(m, axis=1),
           lambda m: np.linalg.norm(m, 1), lambda m: np.linalg.norm(m[0], 3),
           lambda m: np.linalg.norm(m, np.inf), lambda m: np.linalg.norm(m, "fro")]
    for k, fn in enumerate(fns):
        np.testing.assert_allclose(ft.jvp(fn, (M,), (0 * M,))[0], fn(M), rtol=1e-13,
                                   err_msg=f"function {k}")
        loss = lambda m, fn=fn: np.sum(fn(m) ** 2)              # noqa: E731
        np.testing.assert_allclose(ft.grad(loss)(M), fd_grad(loss, M), rtol=1e-6, atol=1e-7,
                                   err_msg=f"function {k}")
    with pytest.raises(TypeError, match="singular values"):
        ft.grad(lambda m: np.linalg.norm(m, 2))(M)
