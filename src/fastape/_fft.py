"""The FFT family on the tape: ``np.fft.fft`` … ``ihfft`` of fastape values.

Each transform is real-linear in the (real, imaginary) parts of its input, so each is
one node (``fastape.custom.linear_map``): its value and its tangent are the transform
itself, computed by ``scipy.fft`` (pocketfft) on whole arrays, and its reverse is the
transpose, again one transform:

* complex ``fftn`` with norm ``m`` has the adjoint ``ifftn`` with the swapped norm
  (backward ↔ forward, ortho ↔ ortho): ``DFTᴴ = n · IDFT``; ``ifftn`` likewise;
* ``rfft`` keeps the first ``n//2 + 1`` bins of the full spectrum of a real signal,
  so its transpose is the real part of the full adjoint of the zero-extended
  cotangent: ``irfft`` (swapped norm) of the cotangent with its interior bins
  halved (``irfft`` counts each of them twice, for ``k`` and ``n − k``);
* ``irfft`` reads the interior bins twice and only the real parts of bin 0 and of
  the Nyquist bin, so its transpose is ``rfft`` (swapped norm) of the cotangent with
  the interior bins doubled and those two imaginary parts zero;
* the ``n``/``s`` arguments crop or zero-pad the input first: their transposes pad
  or crop the cotangent back;
* ``rfftn`` is ``rfft`` along the last axis, then ``fftn`` along the others;
  ``irfftn`` the reverse; ``hfft(a) = irfft(conj(a))`` and ``ihfft(a) =
  conj(rfft(a))`` with the swapped norm, as numpy defines them.

The transposes nest (a linear map's transpose is a linear map whose transpose is the
first), so Hessians through FFTs and compiled replay need nothing more. In a compiled
function each transform is one Python call per sweep (its cost is the FFT's).
"""

import functools
import operator

import numpy as np

from fastape._complex import Complex, make, parts
from fastape.custom import linear_map
from fastape.errors import ShapeError

__all__ = ["fft", "ifft", "fft2", "ifft2", "fftn", "ifftn", "rfft", "irfft", "rfft2",
           "irfft2", "rfftn", "irfftn", "hfft", "ihfft", "fftshift", "ifftshift"]

_SWAP = {None: "forward", "backward": "forward", "ortho": "ortho", "forward": "backward"}


def _sfft():
    import scipy.fft
    return scipy.fft


def _fit(x, axes, sizes):
    """x cropped or zero-padded at the end of each axis to `sizes` (numpy's n/s)."""
    for ax, n in zip(axes, sizes):
        m = x.shape[ax]
        if m > n:
            x = x[(slice(None),) * ax + (slice(0, n),)]
        elif m < n:
            widths = [(0, 0)] * x.ndim
            widths[ax] = (0, n - m)
            x = np.pad(x, widths)
    return x


def _join(re, im):
    """re + i·im as one new complex array, in one pass (re + 1j * im takes three)."""
    if im is None:
        return re
    out = np.empty(np.broadcast_shapes(np.shape(re), np.shape(im)), dtype=np.complex128)
    out.real = re
    out.imag = im
    return out


def _index(ndim, axis, sl):
    idx = [slice(None)] * ndim
    idx[axis] = sl
    return tuple(idx)


# -- the linear maps, one per transform and shape (cached: a loop reuses them) -------

@functools.lru_cache(maxsize=512)
def _c2c(in_shape, axes, s, norm, inverse, real_input):
    """fftn (ifftn when inverse) along axes, sizes s, of a complex (or, real_input,
    real) array of in_shape: (re, im) -> (re, im)."""
    name = "numpy.fft." + ("ifftn" if inverse else "fftn")

    def fun(re, im):
        sf = _sfft()
        y = (sf.ifftn if inverse else sf.fftn)(_join(re, im), s=s, axes=axes, norm=norm)
        return y.real, y.imag

    def transpose(cr, ci):
        sf = _sfft()
        g = (sf.fftn if inverse else sf.ifftn)(_join(cr, ci), axes=axes, norm=_SWAP[norm],
                                               overwrite_x=True)
        g = _fit(g, axes, [in_shape[a] for a in axes])
        return g.real, (None if real_input else g.imag)

    return linear_map(fun, transpose, name,
                      recipe=(_c2c, (in_shape, axes, s, norm, inverse, real_input)))


@functools.lru_cache(maxsize=512)
def _r2c(in_shape, axis, n, norm):
    """rfft along axis with n points of a real array of in_shape: x -> (re, im)."""

    def fun(x):
        y = _sfft().rfft(x, n=n, axis=axis, norm=norm)
        return y.real, y.imag

    def transpose(cr, ci):
        c = _join(cr, ci)
        c[_index(c.ndim, axis, slice(1, (n + 1) // 2))] *= 0.5
        g = _sfft().irfft(c, n=n, axis=axis, norm=_SWAP[norm])
        return (_fit(g, (axis,), (in_shape[axis],)),)

    return linear_map(fun, transpose, "numpy.fft.rfft", recipe=(_r2c, (in_shape, axis, n, norm)))


@functools.lru_cache(maxsize=512)
def _c2r(in_shape, axis, n, norm, real_input):
    """irfft along axis to n points of a complex (or real) array: (re, im) -> (x,)."""

    def fun(re, im):
        return (_sfft().irfft(_join(re, im), n=n, axis=axis, norm=norm),)

    def transpose(g):
        h = _sfft().rfft(g, n=n, axis=axis, norm=_SWAP[norm])
        h[_index(h.ndim, axis, slice(1, (n + 1) // 2))] *= 2.0
        h.imag[_index(h.ndim, axis, 0)] = 0.0
        if n % 2 == 0:
            h.imag[_index(h.ndim, axis, n // 2)] = 0.0
        h = _fit(h, (axis,), (in_shape[axis],))
        return h.real, (None if real_input else h.imag)

    return linear_map(fun, transpose, "numpy.fft.irfft",
                      recipe=(_c2r, (in_shape, axis, n, norm, real_input)))


# -- arguments as numpy takes them ---------------------------------------------------

def _check(name, norm, out):
    if out is not None:
        raise TypeError(f"numpy.fft.{name}: out= cannot write into a fastape value; use "
                        "the returned value")
    if norm not in _SWAP:
        raise ValueError(f"numpy.fft.{name}: invalid norm value {norm!r}; should be "
                         "'backward', 'ortho' or 'forward'")


def _full_parts(a, name):
    """(re, im) of a at a's full shape (im None for a real a)."""
    if type(a) is Complex:
        return a.real, (None if a._im is None else a.imag)
    re, im = parts(a, f"numpy.fft.{name}")
    if im is not None and np.shape(re) != np.shape(im):
        re, im = np.broadcast_arrays(re, im)
    return re, im


def _normalize(shape, s, axes, name, last_default=None):
    """numpy's (s, axes): axes (non-negative, distinct) and their sizes."""
    nd = len(shape)
    if nd == 0:
        raise ShapeError(f"numpy.fft.{name}: the input is 0-d; a transform needs an axis")
    if axes is None:
        axes = range(nd) if s is None else range(nd - len(s), nd)
    try:
        axes = tuple(operator.index(a) for a in axes)
    except TypeError:
        raise TypeError(f"numpy.fft.{name}: axes must be integers, got {axes!r}") from None
    for a in axes:
        if not -nd <= a < nd:
            raise np.exceptions.AxisError(f"numpy.fft.{name}: axis {a} is out of bounds "
                                          f"for an input of shape {tuple(shape)}")
    axes = tuple(a % nd for a in axes)
    if len(set(axes)) != len(axes):
        raise ValueError(f"numpy.fft.{name}: repeated axes {axes} are not supported on "
                         "fastape values")
    if s is None:
        s = [shape[a] for a in axes]
        if last_default is not None:
            s[-1] = last_default(shape[axes[-1]])
    try:
        s = tuple(operator.index(n) for n in s)
    except TypeError:
        raise TypeError(f"numpy.fft.{name}: s must be integers, got {s!r}") from None
    if len(s) != len(axes):
        raise ValueError(f"numpy.fft.{name}: s {s} and axes {axes} differ in length")
    for n in s:
        if n < 1:
            raise ValueError(f"numpy.fft.{name}: invalid number of data points ({n}) "
                             "specified")
    return s, axes


def _one(n, axis):
    return None if n is None else (n,), (axis,)


def _irfft_default(m):
    return 2 * (m - 1)


# -- the transforms ----------------------------------------------------------------

def _cfft(a, s, axes, norm, inverse, name):
    re, im = _full_parts(a, name)
    s, axes = _normalize(np.shape(re), s, axes, name)
    yr, yi = _c2c(tuple(np.shape(re)), axes, s, norm, inverse, im is None)(re, im)
    return make(yr, yi)


def _rfftn(a, s, axes, norm, name):
    re, im = _full_parts(a, name)
    if im is not None:
        raise TypeError(f"numpy.fft.{name}: the input is complex; a real transform would "
                        "drop its imaginary part (numpy warns and drops it): use fft, or "
                        "np.real(a) first")
    s, axes = _normalize(np.shape(re), s, axes, name)
    yr, yi = _r2c(tuple(np.shape(re)), axes[-1], s[-1], norm)(re)
    if len(axes) == 1:
        return make(yr, yi)
    return _cfft(make(yr, yi), s[:-1], axes[:-1], norm, False, name)


def _irfftn(a, s, axes, norm, name):
    re, im = _full_parts(a, name)
    s, axes = _normalize(np.shape(re), s, axes, name, last_default=_irfft_default)
    if len(axes) > 1:
        re, im = _full_parts(_cfft(make(re, im), s[:-1], axes[:-1], norm, True, name), name)
    (y,) = _c2r(tuple(np.shape(re)), axes[-1], s[-1], norm, im is None)(re, im)
    return y


def fft(a, n=None, axis=-1, norm=None, out=None):
    _check("fft", norm, out)
    return _cfft(a, *_one(n, axis), norm, False, "fft")


def ifft(a, n=None, axis=-1, norm=None, out=None):
    _check("ifft", norm, out)
    return _cfft(a, *_one(n, axis), norm, True, "ifft")


def fftn(a, s=None, axes=None, norm=None, out=None):
    _check("fftn", norm, out)
    return _cfft(a, s, axes, norm, False, "fftn")


def ifftn(a, s=None, axes=None, norm=None, out=None):
    _check("ifftn", norm, out)
    return _cfft(a, s, axes, norm, True, "ifftn")


def fft2(a, s=None, axes=(-2, -1), norm=None, out=None):
    _check("fft2", norm, out)
    return _cfft(a, s, axes, norm, False, "fft2")


def ifft2(a, s=None, axes=(-2, -1), norm=None, out=None):
    _check("ifft2", norm, out)
    return _cfft(a, s, axes, norm, True, "ifft2")


def rfft(a, n=None, axis=-1, norm=None, out=None):
    _check("rfft", norm, out)
    return _rfftn(a, *_one(n, axis), norm, "rfft")


def irfft(a, n=None, axis=-1, norm=None, out=None):
    _check("irfft", norm, out)
    return _irfftn(a, *_one(n, axis), norm, "irfft")


def rfftn(a, s=None, axes=None, norm=None, out=None):
    _check("rfftn", norm, out)
    return _rfftn(a, s, axes, norm, "rfftn")


def irfftn(a, s=None, axes=None, norm=None, out=None):
    _check("irfftn", norm, out)
    return _irfftn(a, s, axes, norm, "irfftn")


def rfft2(a, s=None, axes=(-2, -1), norm=None, out=None):
    _check("rfft2", norm, out)
    return _rfftn(a, s, axes, norm, "rfft2")


def irfft2(a, s=None, axes=(-2, -1), norm=None, out=None):
    _check("irfft2", norm, out)
    return _irfftn(a, s, axes, norm, "irfft2")


def hfft(a, n=None, axis=-1, norm=None, out=None):
    """numpy's definition: irfft of the conjugate, with the swapped norm."""
    _check("hfft", norm, out)
    return _irfftn(np.conjugate(a), *_one(n, axis), _SWAP[norm], "hfft")


def ihfft(a, n=None, axis=-1, norm=None, out=None):
    """numpy's definition: the conjugate of rfft, with the swapped norm."""
    _check("ihfft", norm, out)
    return np.conjugate(_rfftn(a, *_one(n, axis), _SWAP[norm], "ihfft"))


def _shift(x, axes, sign):
    shape = np.shape(x) if type(x) is not Complex else x.shape
    if axes is None:
        axes = tuple(range(len(shape)))
    elif isinstance(axes, (int, np.integer)):
        axes = (int(axes),)
    shifts = [sign * (shape[a] // 2) for a in axes]
    return np.roll(x, shifts, tuple(axes))


def fftshift(x, axes=None):
    return _shift(x, axes, 1)


def ifftshift(x, axes=None):
    return _shift(x, axes, -1)


#: numpy.fft function -> its implementation here (for Var and Complex alike)
NUMPY_FUNCTIONS = {getattr(np.fft, name): globals()[name] for name in __all__}
