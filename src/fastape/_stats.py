"""numpy's statistics on fastape values (issue 13, item 2): var, std, average, ptp,
median, quantile/percentile, nansum, nanmean; and the numerically stable log-sum-exp
family that ``fastape.scipy.special`` exports.

Each is written with recorded ops (reductions, elementwise ops, gathers), so it is
exact in reverse and forward mode and at every order. The order statistics (median,
quantiles) sort along the axis first: the permutation is chosen from the values and
guarded like ``fastape.sort``'s.
"""

import operator

import numpy as np

from fastape import _functions as F
from fastape import _tape
from fastape._arrays import _moved, moveaxis, sort
from fastape._tape import Var

__all__ = ["var", "std", "average", "ptp", "median", "quantile", "percentile", "nansum",
           "nanmean"]


def _no_out(out, name):
    if out is not None:
        raise TypeError(f"numpy.{name}: out= cannot write into a fastape value; use the "
                        "returned value")


def _no_dtype(dtype, name):
    if dtype is not None and np.dtype(dtype) != np.float64:
        raise TypeError(f"numpy.{name}: fastape values are float64; dtype={dtype} is not "
                        "supported")


def _count(a, axis):
    """How many elements a reduction over axis combines."""
    if axis is None:
        return a.size
    axes = (axis,) if np.ndim(axis) == 0 else tuple(axis)
    n = 1
    for ax in axes:
        ax = operator.index(ax)
        if not -a.ndim <= ax < a.ndim:
            raise np.exceptions.AxisError(ax, a.ndim)
        n *= a.shape[ax]
    return n


def var(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=True,
        mean=None, correction=None):
    """numpy.var: the mean squared deviation, divided by ``n - ddof`` instead of n."""
    if type(a) is not Var:
        kw = {} if correction is None else {"correction": correction}
        return np.var(a, axis=axis, dtype=dtype, out=out, ddof=ddof, keepdims=keepdims,
                      where=where, **kw) if mean is None else \
            np.var(a, axis=axis, dtype=dtype, out=out, ddof=ddof, keepdims=keepdims,
                   where=where, mean=mean, **kw)
    _no_out(out, "var")
    _no_dtype(dtype, "var")
    if where is not True or mean is not None:
        raise TypeError("numpy.var: where= and mean= are not supported on fastape values")
    if correction is not None:
        if ddof != 0:
            raise ValueError("numpy.var: give ddof or correction, not both")
        ddof = correction
    n = _count(a, axis)
    if n - ddof <= 0:
        raise ValueError(f"numpy.var: ddof={ddof} leaves no degrees of freedom for "
                         f"{n} element(s) per result (shape {a.shape}, axis={axis})")
    d = a - F.mean(a, axis=axis, keepdims=True)
    return F.sum(d * d, axis=axis, keepdims=keepdims) * (1.0 / (n - ddof))


def std(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=True,
        mean=None, correction=None):
    """numpy.std: the square root of var. (Its derivative is infinite where the
    deviation is zero, as the square root's is at 0.)"""
    if type(a) is not Var:
        kw = {} if correction is None else {"correction": correction}
        if mean is not None:
            kw["mean"] = mean
        return np.std(a, axis=axis, dtype=dtype, out=out, ddof=ddof, keepdims=keepdims,
                      where=where, **kw)
    return np.sqrt(var(a, axis, dtype, out, ddof, keepdims, where=where, mean=mean,
                       correction=correction))


def average(a, axis=None, weights=None, returned=False, *, keepdims=False):
    """numpy.average: the weighted mean (weights of a's shape, or 1-D along one axis)."""
    if type(a) is not Var and type(weights) is not Var:
        return np.average(a, axis=axis, weights=weights, returned=returned,
                          keepdims=keepdims)
    if weights is None:
        avg = F.mean(a, axis=axis, keepdims=keepdims)
        if not returned:
            return avg
        return avg, np.broadcast_to(np.float64(a.size / np.size(avg.value)), avg.shape)
    like = a if type(a) is Var else weights
    if type(a) is not Var:
        a = _tape.constant_like(like, np.asarray(a, dtype=np.float64))
    w = weights
    wshape = np.shape(w.value if type(w) is Var else w)
    if wshape != a.shape:
        if axis is None:
            raise TypeError("numpy.average: axis must be specified when shapes of a and "
                            f"weights differ (a {a.shape}, weights {wshape})")
        if len(wshape) != 1:
            raise TypeError(f"numpy.average: 1D weights expected when shapes of a and weights "
                            f"differ (a {a.shape}, weights {wshape})")
        ax = operator.index(axis) % a.ndim
        if wshape[0] != a.shape[ax]:
            raise ValueError(f"numpy.average: length of weights ({wshape[0]}) differs from "
                             f"that of a along axis {axis} ({a.shape[ax]})")
        shape = (1,) * ax + (wshape[0],) + (1,) * (a.ndim - 1 - ax)
        w = F.reshape(w, shape) if type(w) is Var else np.reshape(w, shape)
    if type(w) is Var:
        scl = F.sum(w * np.ones(a.shape), axis=axis, keepdims=keepdims)
    else:
        scl = np.sum(np.broadcast_to(np.asarray(w, dtype=np.float64), a.shape), axis=axis,
                     keepdims=keepdims)
    avg = F.sum(a * w, axis=axis, keepdims=keepdims) / scl
    if not returned:
        return avg
    if type(scl) is not Var:
        scl = np.broadcast_to(scl, avg.shape)
    return avg, scl


def ptp(a, axis=None, out=None, keepdims=False):
    """numpy.ptp: maximum minus minimum."""
    if type(a) is not Var:
        return np.ptp(a, axis=axis, out=out, keepdims=keepdims)
    _no_out(out, "ptp")
    return F.max(a, axis=axis, keepdims=keepdims) - F.min(a, axis=axis, keepdims=keepdims)


def _along_last(a, axis):
    """a with the reduced axes moved last and joined (a view of the same values), and
    the axes reduced, in order."""
    if axis is None:
        return F.reshape(a, (-1,)), tuple(range(a.ndim))
    axes = (axis,) if np.ndim(axis) == 0 else tuple(axis)
    axes = tuple(sorted({operator.index(x) % a.ndim if -a.ndim <= operator.index(x) < a.ndim
                         else _bad_axis(x, a.ndim) for x in axes}))
    b = moveaxis(a, axes, tuple(range(a.ndim - len(axes), a.ndim)))
    keep = b.shape[:a.ndim - len(axes)]
    return F.reshape(b, keep + (-1,)), axes


def _bad_axis(x, nd):
    raise np.exceptions.AxisError(x, nd)


def _kept(r, ndim, axes, nq):
    """Reinsert the reduced axes (length 1) after the q axes, as numpy's keepdims."""
    shape = list(r.shape[nq:])
    for ax in axes:
        shape.insert(ax, 1)
    return F.reshape(r, r.shape[:nq] + tuple(shape))


def _take_last(s, idx):
    """s[..., idx] for a plain integer array idx (gathers; the result has idx's axes
    first, numpy's layout for quantiles)."""
    g = _moved(s, lambda p: np.take(p, idx, axis=-1))        # s.shape[:-1] + idx.shape
    nd = s.ndim - 1
    return moveaxis(g, tuple(range(nd, nd + idx.ndim)), tuple(range(idx.ndim))) \
        if idx.ndim and nd else g


def quantile(a, q, axis=None, out=None, overwrite_input=False, method="linear",
             keepdims=False, *, weights=None, interpolation=None):
    """numpy.quantile with method 'linear' (numpy's default): q (plain numbers in [0, 1])
    selects values of the sorted data, interpolated linearly; q's axes come first."""
    if type(a) is not Var:
        return np.quantile(a, q, axis=axis, out=out, overwrite_input=overwrite_input,
                           method=method, keepdims=keepdims)
    _no_out(out, "quantile")
    if interpolation is not None:
        method = interpolation
    if method != "linear":
        raise TypeError(f"numpy.quantile: method={method!r} is not supported on fastape "
                        "values; use method='linear'")
    if weights is not None:
        raise TypeError("numpy.quantile: weights= is not supported on fastape values")
    if type(q) is Var:
        raise TypeError("numpy.quantile: q must be plain numbers, not a fastape value")
    q = np.asarray(q, dtype=np.float64)
    if not np.all((q >= 0) & (q <= 1)):
        raise ValueError("numpy.quantile: quantiles must be in the range [0, 1]")
    flat, axes = _along_last(a, axis)
    n = flat.shape[-1]
    if n == 0:
        raise ValueError(f"numpy.quantile: no elements to take quantiles of (shape {a.shape}, "
                         f"axis={axis})")
    s = sort(flat, axis=-1)
    v = q * (n - 1)
    lo = np.floor(v).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    t = v - lo
    x0, x1 = _take_last(s, lo), _take_last(s, hi)
    tb = t.reshape(t.shape + (1,) * (x0.ndim - t.ndim))
    d = x1 - x0
    # numpy's _lerp: a + (b - a) t, and b - (b - a)(1 - t) from t = 0.5 on
    r = F.where(tb >= 0.5, x1 - d * (1.0 - tb), x0 + d * tb)
    if keepdims:
        r = _kept(r, a.ndim, axes, q.ndim)
    return r


def percentile(a, q, axis=None, out=None, overwrite_input=False, method="linear",
               keepdims=False, *, weights=None, interpolation=None):
    """numpy.percentile: quantile(a, q / 100)."""
    if type(a) is not Var:
        return np.percentile(a, q, axis=axis, out=out, overwrite_input=overwrite_input,
                             method=method, keepdims=keepdims)
    if type(q) is Var:
        raise TypeError("numpy.percentile: q must be plain numbers, not a fastape value")
    q = np.asarray(q, dtype=np.float64)
    if not np.all((q >= 0) & (q <= 100)):
        raise ValueError("numpy.percentile: percentiles must be in the range [0, 100]")
    return quantile(a, q / 100.0, axis, out, overwrite_input, method, keepdims,
                    weights=weights, interpolation=interpolation)


def median(a, axis=None, out=None, overwrite_input=False, keepdims=False):
    """numpy.median: the middle value of the sorted data (the mean of the two middle ones
    for an even count)."""
    if type(a) is not Var:
        return np.median(a, axis=axis, out=out, overwrite_input=overwrite_input,
                         keepdims=keepdims)
    _no_out(out, "median")
    flat, axes = _along_last(a, axis)
    n = flat.shape[-1]
    if n == 0:
        raise ValueError(f"numpy.median: no elements (shape {a.shape}, axis={axis})")
    s = sort(flat, axis=-1)
    k = n // 2
    mid = _take_last(s, np.array(k))
    r = mid if n % 2 else (_take_last(s, np.array(k - 1)) + mid) * 0.5
    if keepdims:
        r = _kept(r, a.ndim, axes, 0)
    return r


def nansum(a, axis=None, dtype=None, out=None, keepdims=False, initial=np._NoValue,
           where=np._NoValue):
    """numpy.nansum: the sum with NaNs counted as zero (the NaNs' positions are guarded
    in compiled functions)."""
    if type(a) is not Var:
        return np.nansum(a, axis=axis, dtype=dtype, out=out, keepdims=keepdims)
    _no_out(out, "nansum")
    _no_dtype(dtype, "nansum")
    if initial is not np._NoValue or where is not np._NoValue:
        raise TypeError("numpy.nansum: initial= and where= are not supported on fastape values")
    return F.sum(F.where(np.isnan(a), 0.0, a), axis=axis, keepdims=keepdims)


def nanmean(a, axis=None, dtype=None, out=None, keepdims=False, *, where=np._NoValue):
    """numpy.nanmean: the mean of the elements that are not NaN."""
    if type(a) is not Var:
        return np.nanmean(a, axis=axis, dtype=dtype, out=out, keepdims=keepdims)
    _no_out(out, "nanmean")
    _no_dtype(dtype, "nanmean")
    if where is not np._NoValue:
        raise TypeError("numpy.nanmean: where= is not supported on fastape values")
    nan = np.isnan(a)
    count = np.sum(~np.asarray(nan), axis=axis, keepdims=keepdims)
    return F.sum(F.where(nan, 0.0, a), axis=axis, keepdims=keepdims) / count


# -- fastape.scipy.special: log-sum-exp, softmax ------------------------------------

def _max_shift(a, axis):
    """max(a) along axis (kept), replaced by 0 where it is not finite (scipy's rule)."""
    m = F.max(a, axis=axis, keepdims=True)
    return F.where(np.isfinite(m), m, 0.0)


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False):
    """scipy.special.logsumexp: ``log(sum(b * exp(a)))`` along axis, computed stably
    (shifted by the maximum); with ``return_sign``, ``(log|s|, sign(s))``."""
    if type(a) is not Var and type(b) is not Var:
        import scipy.special
        return scipy.special.logsumexp(a, axis=axis, b=b, keepdims=keepdims,
                                       return_sign=return_sign)
    if type(a) is not Var:
        a = _tape.constant_like(b, np.asarray(a, dtype=np.float64))
    m = _max_shift(a, axis)
    e = np.exp(a - m)
    if b is not None:
        e = e * b
    s = F.sum(e, axis=axis, keepdims=True)
    if return_sign:
        sign = np.sign(s.value)
        np.greater(s, 0.0)             # the sign is a choice: guarded in compiled functions
        r = np.log(np.abs(s)) + m
    else:
        r = np.log(s) + m
    if not keepdims:
        r = _squeezed(r, a, axis)
        if return_sign:
            sign = np.squeeze(sign, axis=axis) if axis is not None else sign.reshape(())
    return (r, sign) if return_sign else r


def _squeezed(r, a, axis):
    if axis is None:
        return F.reshape(r, ())
    axes = (axis,) if np.ndim(axis) == 0 else tuple(axis)
    keep = [d for i, d in enumerate(a.shape)
            if i not in {operator.index(x) % a.ndim for x in axes}]
    return F.reshape(r, tuple(keep))


def softmax(x, axis=None):
    """scipy.special.softmax: ``exp(x) / sum(exp(x))`` along axis, computed stably."""
    if type(x) is not Var:
        import scipy.special
        return scipy.special.softmax(x, axis=axis)
    e = np.exp(x - _max_shift(x, axis))
    return e / F.sum(e, axis=axis, keepdims=True)


def log_softmax(x, axis=None):
    """scipy.special.log_softmax: ``x - logsumexp(x)`` along axis, computed stably."""
    if type(x) is not Var:
        import scipy.special
        return scipy.special.log_softmax(x, axis=axis)
    return x - logsumexp(x, axis=axis, keepdims=True)

