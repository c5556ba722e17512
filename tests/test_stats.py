"""fastape.scipy.stats against scipy.stats (values) and central differences
(check_grads, order 2, both modes) in the data and in every parameter."""

import numpy as np
import pytest
import scipy.stats

import fastape as ft
import fastape.scipy.stats as fst

rng = np.random.default_rng(2)
X = rng.standard_normal(5)
POS = np.abs(X) + 0.3
UNIT = 1.0 / (1.0 + np.exp(-X))
K = np.array([0.0, 1.0, 3.0, 2.0, 7.0])
SIMPLEX = np.array([0.2, 0.5, 0.3])
COV = np.array([[2.0, 0.3, 0.1], [0.3, 1.0, -0.2], [0.1, -0.2, 1.5]])
PTS = rng.standard_normal((4, 3))

ROWS = [
    ("norm", "logpdf", (X, 0.3, 1.7)), ("norm", "pdf", (X, -0.2, 0.8)),
    ("norm", "cdf", (X, 0.3, 1.7)), ("norm", "logcdf", (X * 4, 0.1, 0.9)),
    ("norm", "sf", (X, 0.3, 1.7)), ("norm", "logsf", (X * 4, 0.1, 0.9)),
    ("t", "logpdf", (X, 3.5, 0.2, 1.3)), ("t", "pdf", (X, 7.0)),
    ("gamma", "logpdf", (POS, 2.5, 0.0, 1.5)), ("gamma", "pdf", (POS, 1.7)),
    ("chi2", "logpdf", (POS, 3.0)), ("beta", "logpdf", (UNIT, 2.5, 1.5)),
    ("beta", "pdf", (UNIT, 0.7, 3.0)), ("poisson", "logpmf", (K, 2.5)),
    ("poisson", "pmf", (K, 0.8)), ("dirichlet", "logpdf", (SIMPLEX, np.array([1.5, 2.0, 3.0]))),
    ("multivariate_normal", "logpdf", (PTS, np.array([0.1, -0.2, 0.3]), COV)),
    ("multivariate_normal", "logpdf", (PTS[0], np.array([0.1, -0.2, 0.3]), COV)),
    ("multivariate_normal", "pdf", (PTS[1], np.zeros(3), COV)),
]
# the cdfs: incomplete gamma and beta functions, differentiable in x, loc and scale
CDF_ROWS = [
    ("t", "cdf", (X, 3.5, 0.2, 1.3)), ("t", "logcdf", (X * 3, 7.0)),
    ("t", "sf", (X, 2.5, -0.1, 0.7)), ("t", "logsf", (X * 3, 4.0)),
    ("gamma", "cdf", (POS, 2.5, 0.0, 1.5)), ("gamma", "logcdf", (POS, 0.7)),
    ("gamma", "sf", (POS, 1.7, 0.1, 0.9)), ("gamma", "logsf", (POS * 3, 3.2)),
    ("chi2", "cdf", (POS, 3.0)), ("chi2", "logcdf", (POS, 1.5, 0.05, 1.2)),
    ("chi2", "sf", (POS * 2, 4.0)), ("chi2", "logsf", (POS, 2.0)),
    ("beta", "cdf", (UNIT, 2.5, 1.5)), ("beta", "logcdf", (UNIT, 0.7, 3.0)),
    ("beta", "sf", (UNIT * 0.8, 1.5, 2.5, 0.05, 1.1)), ("beta", "logsf", (UNIT, 3.0, 0.8)),
    ("poisson", "cdf", (K, 2.5)), ("poisson", "logcdf", (K, 0.8)),
    ("poisson", "sf", (K, 2.5)), ("poisson", "logsf", (K, 4.0)),
]
ROWS += CDF_ROWS

# arguments not differentiated here: a Poisson's counts; a Dirichlet's point, which
# differences would move off the simplex (scipy refuses it there)
FIXED = {("poisson", "logpmf"): (0,), ("poisson", "pmf"): (0,), ("dirichlet", "logpdf"): (0,)}
# and the cdfs' shape parameters (not differentiated: a value there raises)
SHAPES = {"t": (1,), "gamma": (1,), "chi2": (1,), "beta": (1, 2), "poisson": (0,)}
FIXED.update({(d, m): SHAPES[d] for d, m, _ in CDF_ROWS})


@pytest.mark.parametrize("dist, method, args", ROWS,
                         ids=[f"{d}.{m}{i}" for i, (d, m, _) in enumerate(ROWS)])
def test_against_scipy(dist, method, args):
    ours = getattr(getattr(fst, dist), method)
    want = getattr(getattr(scipy.stats, dist), method)(*args)
    nums = tuple(i for i in range(len(args)) if i not in FIXED.get((dist, method), ()))

    def f(*diff):
        full = list(args)
        for i, v in zip(nums, diff):
            full[i] = v
        return ours(*full)
    got = ft.vjp(f, *(args[i] for i in nums))[0]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-300)
    ft.check_grads(f, tuple(args[i] for i in nums), order=2, modes=("fwd", "rev"))


def test_closed_forms():
    """d/dx norm.logpdf = -(x - loc)/scale²; d/dmu poisson.logpmf = k/mu - 1."""
    g = ft.grad(lambda x: np.sum(fst.norm.logpdf(x, 0.3, 2.0)))(X)
    np.testing.assert_allclose(g, -(X - 0.3) / 4.0, rtol=1e-14)
    g = ft.grad(lambda mu: np.sum(fst.poisson.logpmf(K, mu)))(2.5)
    assert np.isclose(g, np.sum(K / 2.5 - 1.0), rtol=1e-14)


def test_dirichlet_in_x_closed_form():
    a = np.array([1.5, 2.0, 3.0])
    np.testing.assert_allclose(ft.grad(lambda x: fst.dirichlet.logpdf(x, a))(SIMPLEX),
                               (a - 1.0) / SIMPLEX, rtol=1e-14)


@pytest.mark.parametrize("dist, method, args", CDF_ROWS,
                         ids=[f"{d}.{m}{i}" for i, (d, m, _) in enumerate(CDF_ROWS)])
def test_cdfs_refuse_a_shape_parameter_on_the_tape(dist, method, args):
    ours = getattr(getattr(fst, dist), method)
    j = SHAPES[dist][0]

    def f(v):
        full = list(args)
        full[j] = v
        return np.sum(ours(*full))
    with pytest.raises(NotImplementedError, match=f"stats.{dist}.{method.removeprefix('log')}"):
        ft.grad(f)(np.asarray(args[j], dtype=float))


def test_cdf_closed_forms():
    """The cdfs' x-derivatives are the densities (also where the betainc form of t's
    cdf has 0 · inf, at x = loc); below the support the cdf is 0 with derivative 0."""
    for dist, args in (("t", (3.0, 0.2, 1.3)), ("gamma", (2.5, 0.0, 1.5)),
                       ("chi2", (3.0,)), ("beta", (2.5, 1.5))):
        pts = UNIT if dist == "beta" else POS
        g = ft.grad(lambda x, d=dist, a=args: np.sum(getattr(fst, d).cdf(x, *a)))(pts)
        np.testing.assert_allclose(g, getattr(scipy.stats, dist).pdf(pts, *args), rtol=1e-12)
    assert ft.grad(lambda x: fst.t.cdf(x, 3.0, 0.2))(0.2) == pytest.approx(
        scipy.stats.t.pdf(0.0, 3.0), rel=1e-14)
    v, g = ft.value_and_grad(lambda x: fst.gamma.cdf(x, 2.0))(-1.0)
    assert (v, g) == (0.0, 0.0)
    # d/dmu P(K <= k) = -pmf(k; mu)
    g = ft.grad(lambda mu: np.sum(fst.poisson.cdf(K, mu)))(2.5)
    assert g == pytest.approx(-np.sum(scipy.stats.poisson.pmf(K, 2.5)), rel=1e-13)
    assert fst.t.cdf(0.0, 3.0) == scipy.stats.t.cdf(0.0, 3.0)      # plain: scipy's
