"""``scipy.stats`` distributions for fastape values (as ``jax.scipy.stats``).

scipy's distribution objects convert their arguments with ``np.asarray``, which a
fastape value refuses (it would drop the tape), so these namespaces take their place:
``fastape.scipy.stats.norm.logpdf(x, loc, scale)`` is called as scipy's is, and every
argument (data and parameters alike) may be a fastape value. The densities are
written with recorded ops (``gammaln``, ``log_ndtr``, ``xlogy``, a Cholesky factor),
so they differentiate in every argument, to any order. On plain numbers and arrays
each function calls scipy's.

Provided: ``norm`` (logpdf, pdf, cdf, logcdf, sf, logsf), ``t``, ``gamma``, ``beta``,
``chi2`` (logpdf, pdf), ``poisson`` (logpmf, pmf), ``dirichlet`` and
``multivariate_normal`` (logpdf, pdf). The cdfs of t, gamma, beta, chi2 and poisson
need the incomplete gamma and beta functions, which fastape does not have yet: they
raise ``NotImplementedError`` naming the function.
"""

import math
import types

import numpy as np

from fastape import _functions as F
from fastape import _ufuncs
from fastape._tape import Var

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


def _missing(dist, method):
    def f(*args, **kwargs):
        if not _any_var(*args, *kwargs.values()):
            return _scipy(dist, method)(*args, **kwargs)
        raise NotImplementedError(f"fastape.scipy.stats.{dist}.{method} needs the incomplete "
                                  "gamma or beta function, which fastape does not have yet; "
                                  "logpdf/pdf (logpmf/pmf) are supported")
    f.__name__ = method
    return f


def _namespace(dist, methods, missing=()):
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
    for name in missing:
        setattr(ns, name, _missing(dist, name))
    ns.__doc__ = f"scipy.stats.{dist} for fastape values"
    return ns


def _exp_of(logf):
    def f(*args, **kwargs):
        return np.exp(logf(*args, **kwargs))
    return f


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


t = _namespace("t", {"logpdf": _t_logpdf, "pdf": _exp_of(_t_logpdf)},
               missing=("cdf", "logcdf", "sf", "logsf"))


# -- gamma and chi-squared -----------------------------------------------------------

def _gamma_logpdf(x, a, loc=0.0, scale=1.0):
    y = (x - loc) / scale
    return _U["xlogy"](a - 1.0, y) - y - _U["gammaln"](a) - np.log(scale)


gamma = _namespace("gamma", {"logpdf": _gamma_logpdf, "pdf": _exp_of(_gamma_logpdf)},
                   missing=("cdf", "logcdf", "sf", "logsf"))


def _chi2_logpdf(x, df, loc=0.0, scale=1.0):
    return _gamma_logpdf(x, df / 2.0, loc, 2.0 * scale)


chi2 = _namespace("chi2", {"logpdf": _chi2_logpdf, "pdf": _exp_of(_chi2_logpdf)},
                  missing=("cdf", "logcdf", "sf", "logsf"))


# -- beta ------------------------------------------------------------------------------

def _beta_logpdf(x, a, b, loc=0.0, scale=1.0):
    g = _U["gammaln"]
    y = (x - loc) / scale
    return (_U["xlogy"](a - 1.0, y) + _U["xlog1py"](b - 1.0, -y)
            - (g(a) + g(b) - g(a + b)) - np.log(scale))


beta = _namespace("beta", {"logpdf": _beta_logpdf, "pdf": _exp_of(_beta_logpdf)},
                  missing=("cdf", "logcdf", "sf", "logsf"))


# -- Poisson -------------------------------------------------------------------------

def _poisson_logpmf(k, mu, loc=0):
    kk = k - loc
    return _U["xlogy"](kk, mu) - mu - _U["gammaln"](kk + 1.0)


poisson = _namespace("poisson", {"logpmf": _poisson_logpmf, "pmf": _exp_of(_poisson_logpmf)},
                     missing=("cdf", "logcdf", "sf", "logsf"))


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
