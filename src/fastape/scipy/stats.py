"""``scipy.stats`` distributions for fastape values (as ``jax.scipy.stats``).

scipy's distribution objects convert their arguments with ``np.asarray``, which a
fastape value refuses (it would drop the tape), so these namespaces take their place:
``fastape.scipy.stats.norm.logpdf(x, loc, scale)`` is called as scipy's is, and every
argument (data and parameters alike) may be a fastape value. The densities are
written with recorded ops (``gammaln``, ``log_ndtr``, ``xlogy``, a Cholesky factor),
so they differentiate in every argument, to any order. On plain numbers and arrays
each function calls scipy's.

Provided: ``norm``, ``t``, ``gamma``, ``chi2``, ``beta`` (logpdf, pdf, cdf, logcdf, sf,
logsf), ``poisson`` (logpmf, pmf, cdf, logcdf, sf, logsf), ``dirichlet`` and
``multivariate_normal`` (logpdf, pdf). The cdfs are the regularized incomplete gamma
(gamma, chi2, poisson) and beta (beta) functions and scipy's stdtr (t, with its
density as the derivative): differentiable in x (poisson: in mu), loc and scale; a
fastape value for a shape parameter (a, b, df; poisson's k) raises
NotImplementedError.
"""

import math
import types

import numpy as np

from fastape import _functions as F
from fastape import _ufuncs
from fastape._tape import Var
from fastape.custom import custom_jvp

__all__ = ["norm", "t", "gamma", "beta", "chi2", "poisson", "dirichlet",
           "multivariate_normal"]

_LOG_2PI = math.log(2 * math.pi)
_U = _ufuncs.ELEMENTWISE


def _any_var(*xs):
    for x in xs:
        if type(x) is Var:
            return True
        if isinstance(x, (list, tuple)) and _any_var(*x):
            return True
    return False


def _scipy(dist, method):
    import scipy.stats
    return getattr(getattr(scipy.stats, dist), method)


def _namespace(dist, methods):
    """A namespace of scipy-like functions: each calls scipy's on plain arguments."""
    ns = types.SimpleNamespace()
    for name, fn in methods.items():
        def wrapped(*args, _fn=fn, _name=name, **kwargs):
            if not _any_var(*args, *kwargs.values()):
                return _scipy(dist, _name)(*args, **kwargs)
            return _fn(*args, **kwargs)
        wrapped.__name__ = name
        wrapped.__doc__ = f"scipy.stats.{dist}.{name} on fastape values. {fn.__doc__ or ''}"
        setattr(ns, name, wrapped)
    ns.__doc__ = f"scipy.stats.{dist} for fastape values"
    return ns


def _exp_of(logf):
    def f(*args, **kwargs):
        return np.exp(logf(*args, **kwargs))
    return f


def _log_of(cdf):
    def f(*args, **kwargs):
        return np.log(cdf(*args, **kwargs))
    return f


def _constant(dist, method, **params):
    """The shape parameters of a cdf are not differentiated: refuse fastape values."""
    for name, v in params.items():
        if type(v) is Var:
            raise NotImplementedError(
                f"fastape.scipy.stats.{dist}.{method}: the derivative in the shape parameter "
                f"{name!r} is not implemented, and {name} is a fastape value (shape "
                f"{v.shape}); pass plain numbers ({name}.value) or use logpdf, which "
                "differentiates in every parameter")


def _plain(v):
    return np.asarray(v, dtype=np.float64) if np.ndim(v) else float(v)


# -- normal ----------------------------------------------------------------------------

def _norm_logpdf(x, loc=0.0, scale=1.0):
    z = (x - loc) / scale
    return -0.5 * z * z - np.log(scale) - 0.5 * _LOG_2PI


def _norm_cdf(x, loc=0.0, scale=1.0):
    return _U["ndtr"]((x - loc) / scale)


def _norm_logcdf(x, loc=0.0, scale=1.0):
    return _U["log_ndtr"]((x - loc) / scale)


def _norm_sf(x, loc=0.0, scale=1.0):
    return _U["ndtr"]((loc - x) / scale)


def _norm_logsf(x, loc=0.0, scale=1.0):
    return _U["log_ndtr"]((loc - x) / scale)


norm = _namespace("norm", {"logpdf": _norm_logpdf, "pdf": _exp_of(_norm_logpdf),
                           "cdf": _norm_cdf, "logcdf": _norm_logcdf, "sf": _norm_sf,
                           "logsf": _norm_logsf})


# -- Student's t ---------------------------------------------------------------------

def _t_logpdf(x, df, loc=0.0, scale=1.0):
    g = _U["gammaln"]
    z = (x - loc) / scale
    return (g((df + 1.0) / 2.0) - g(df / 2.0) - 0.5 * np.log(df * math.pi) - np.log(scale)
            - (df + 1.0) / 2.0 * np.log1p(z * z / df))


@custom_jvp
def _stdtr(z, df):
    """The standard t CDF (scipy.special.stdtr, I_x of the incomplete beta function),
    with its density as the tangent rule: written with recorded ops, so the derivative
    is right also at z = 0, where the betainc form has 0 · inf."""
    import scipy.special
    return scipy.special.stdtr(df, z)


@_stdtr.defjvp
def _stdtr_jvp(primals, tangents):
    z, df = primals
    return _stdtr(z, df), np.exp(_t_logpdf(z, df)) * tangents[0]


def _t_cdf(x, df, loc=0.0, scale=1.0):
    _constant("t", "cdf", df=df)
    return _stdtr((x - loc) / scale, _plain(df))


def _t_sf(x, df, loc=0.0, scale=1.0):
    _constant("t", "sf", df=df)
    return _stdtr((loc - x) / scale, _plain(df))


t = _namespace("t", {"logpdf": _t_logpdf, "pdf": _exp_of(_t_logpdf), "cdf": _t_cdf,
                     "logcdf": _log_of(_t_cdf), "sf": _t_sf, "logsf": _log_of(_t_sf)})


# -- gamma and chi-squared -----------------------------------------------------------

def _gamma_logpdf(x, a, loc=0.0, scale=1.0):
    y = (x - loc) / scale
    return _U["xlogy"](a - 1.0, y) - y - _U["gammaln"](a) - np.log(scale)


def _gamma_cdf(x, a, loc=0.0, scale=1.0, _dist="gamma", _names=("a",), _upper=False):
    _constant(_dist, "sf" if _upper else "cdf", **dict(zip(_names, (a,))))
    y = (x - loc) / scale
    # below loc the cdf is 0 (sf 1); gammainc would be NaN there. The choice is a
    # comparison on the tape: compiled functions re-check it
    y0 = F.where(y > 0.0, y, 0.0)
    return _U["gammaincc" if _upper else "gammainc"](_plain(a), y0)


def _gamma_sf(x, a, loc=0.0, scale=1.0):
    return _gamma_cdf(x, a, loc, scale, _upper=True)


gamma = _namespace("gamma", {"logpdf": _gamma_logpdf, "pdf": _exp_of(_gamma_logpdf),
                             "cdf": _gamma_cdf, "logcdf": _log_of(_gamma_cdf),
                             "sf": _gamma_sf, "logsf": _log_of(_gamma_sf)})


def _chi2_logpdf(x, df, loc=0.0, scale=1.0):
    return _gamma_logpdf(x, df / 2.0, loc, 2.0 * scale)


def _chi2_cdf(x, df, loc=0.0, scale=1.0):
    _constant("chi2", "cdf", df=df)
    return _gamma_cdf(x, _plain(df) / 2.0, loc, 2.0 * scale, _dist="chi2")


def _chi2_sf(x, df, loc=0.0, scale=1.0):
    _constant("chi2", "sf", df=df)
    return _gamma_cdf(x, _plain(df) / 2.0, loc, 2.0 * scale, _dist="chi2", _upper=True)


chi2 = _namespace("chi2", {"logpdf": _chi2_logpdf, "pdf": _exp_of(_chi2_logpdf),
                           "cdf": _chi2_cdf, "logcdf": _log_of(_chi2_cdf),
                           "sf": _chi2_sf, "logsf": _log_of(_chi2_sf)})


# -- beta ------------------------------------------------------------------------------

def _beta_logpdf(x, a, b, loc=0.0, scale=1.0):
    g = _U["gammaln"]
    y = (x - loc) / scale
    return (_U["xlogy"](a - 1.0, y) + _U["xlog1py"](b - 1.0, -y)
            - (g(a) + g(b) - g(a + b)) - np.log(scale))


def _beta_cdf(x, a, b, loc=0.0, scale=1.0, _upper=False):
    _constant("beta", "sf" if _upper else "cdf", a=a, b=b)
    from fastape._special import betainc
    y = (x - loc) / scale
    # outside [0, 1] the cdf is 0 or 1: clip (a recorded comparison) rather than NaN
    y = F.where(y < 0.0, 0.0, F.where(y > 1.0, 1.0, y))
    if _upper:          # I_{1-y}(b, a) = 1 - I_y(a, b), accurate in the upper tail
        return betainc(_plain(b), _plain(a), 1.0 - y)
    return betainc(_plain(a), _plain(b), y)


def _beta_sf(x, a, b, loc=0.0, scale=1.0):
    return _beta_cdf(x, a, b, loc, scale, _upper=True)


beta = _namespace("beta", {"logpdf": _beta_logpdf, "pdf": _exp_of(_beta_logpdf),
                           "cdf": _beta_cdf, "logcdf": _log_of(_beta_cdf), "sf": _beta_sf,
                           "logsf": _log_of(_beta_sf)})


# -- Poisson -------------------------------------------------------------------------

def _poisson_logpmf(k, mu, loc=0):
    kk = k - loc
    return _U["xlogy"](kk, mu) - mu - _U["gammaln"](kk + 1.0)


def _poisson_cdf(k, mu, loc=0, _upper=False):
    """P(K <= k) = Q(floor(k) + 1, mu) (sf: P(floor(k) + 1, mu)), differentiable in mu."""
    method = "sf" if _upper else "cdf"
    for name, v in (("k", k), ("loc", loc)):
        if type(v) is Var:
            raise NotImplementedError(
                f"fastape.scipy.stats.poisson.{method}: {name} is a fastape value; the cdf "
                f"is a step function of {name}: pass plain numbers ({name}.value)")
    kk = np.floor(np.asarray(k, dtype=np.float64) - loc)
    ok = kk >= 0.0
    a = np.where(ok, kk + 1.0, 1.0)
    p = _U["gammainc" if _upper else "gammaincc"](a, mu)
    return p if np.all(ok) else F.where(ok, p, 1.0 if _upper else 0.0)


def _poisson_sf(k, mu, loc=0):
    return _poisson_cdf(k, mu, loc, _upper=True)


poisson = _namespace("poisson", {"logpmf": _poisson_logpmf, "pmf": _exp_of(_poisson_logpmf),
                                 "cdf": _poisson_cdf, "logcdf": _log_of(_poisson_cdf),
                                 "sf": _poisson_sf, "logsf": _log_of(_poisson_sf)})


# -- Dirichlet and the multivariate normal ----------------------------------------------

def _dirichlet_logpdf(x, alpha):
    g = _U["gammaln"]
    return (F.sum(_U["xlogy"](alpha - 1.0, x), axis=0)
            - (F.sum(g(alpha)) - g(F.sum(alpha))))


dirichlet = _namespace("dirichlet", {"logpdf": _dirichlet_logpdf,
                                     "pdf": _exp_of(_dirichlet_logpdf)})


def _mvn_logpdf(x, mean=None, cov=1, allow_singular=False):
    """From the Cholesky factor of cov: one triangular solve, log det from its
    diagonal (x of shape (d,) or (n, d); the result a number or an array (n,))."""
    from fastape import linalg
    from fastape.scipy.linalg import solve_triangular
    if allow_singular:
        raise TypeError("multivariate_normal.logpdf: allow_singular=True is not supported on "
                        "fastape values")
    xv = x.value if type(x) is Var else np.asarray(x)
    d = xv.shape[-1] if xv.ndim else 1
    cov = cov * np.eye(d) if np.ndim(cov.value if type(cov) is Var else cov) == 0 else cov
    mean = np.zeros(d) if mean is None else mean
    L = linalg.cholesky(cov)
    r = x - mean
    z = solve_triangular(L, F.transpose(r) if np.ndim(xv) == 2 else r, lower=True)
    maha = F.sum(z * z, axis=0)
    logdet = 2.0 * F.sum(np.log(_diag(L)))
    return -0.5 * (maha + logdet + d * _LOG_2PI)


def _diag(L):
    from fastape._arrays import diagonal
    return diagonal(L)


multivariate_normal = _namespace("multivariate_normal",
                                 {"logpdf": _mvn_logpdf, "pdf": _exp_of(_mvn_logpdf)})
