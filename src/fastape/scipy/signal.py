"""``scipy.signal`` convolutions for fastape values (as ``jax.scipy.signal``).

scipy's own functions convert their arguments with ``np.asarray``, which a fastape
value refuses; these take fastape values (real or complex) and plain arrays, and are
written with the recorded FFTs of ``fastape._fft`` (one transform node each), so their
gradients are convolutions again and they nest. On plain arrays they call scipy.
"""

import numpy as np

from fastape._complex import Complex, is_complex
from fastape._tape import Var

__all__ = ["fftconvolve", "convolve"]


def _traced(*xs):
    return any(type(x) in (Var, Complex) for x in xs)


def _centered(x, axes, shape):
    idx = [slice(None)] * len(np.shape(x) if type(x) is not Complex else x.shape)
    full = np.shape(x) if type(x) is not Complex else x.shape
    for ax, n in zip(axes, shape):
        start = (full[ax] - n) // 2
        idx[ax] = slice(start, start + n)
    return x[tuple(idx)]


def fftconvolve(in1, in2, mode="full", axes=None):
    """scipy.signal.fftconvolve: the convolution of in1 and in2 along `axes` (all by
    default) by FFTs; mode 'full', 'same' (in1's shape, centred) or 'valid'."""
    if not _traced(in1, in2):
        import scipy.signal
        return scipy.signal.fftconvolve(in1, in2, mode=mode, axes=axes)
    s1 = np.shape(in1) if type(in1) is not Complex else in1.shape
    s2 = np.shape(in2) if type(in2) is not Complex else in2.shape
    if len(s1) != len(s2):
        raise ValueError(f"fftconvolve: in1 and in2 should have the same dimensionality, got "
                         f"shapes {s1} and {s2}")
    if mode not in ("full", "same", "valid"):
        raise ValueError(f"fftconvolve: acceptable mode flags are 'valid', 'same', or 'full', "
                         f"got {mode!r}")
    nd = len(s1)
    axes = tuple(range(nd)) if axes is None else tuple(
        a % nd for a in ((axes,) if isinstance(axes, (int, np.integer)) else axes))
    if any(s1[a] == 0 or s2[a] == 0 for a in axes):
        raise ValueError(f"fftconvolve: empty input along the convolved axes {axes}")
    full = [s1[a] + s2[a] - 1 for a in axes]
    if is_complex(in1) or is_complex(in2):
        out = np.fft.ifftn(np.fft.fftn(in1, full, axes) * np.fft.fftn(in2, full, axes),
                           full, axes)
    else:
        out = np.fft.irfftn(np.fft.rfftn(in1, full, axes) * np.fft.rfftn(in2, full, axes),
                            full, axes)
    if mode == "full":
        return out
    if mode == "same":
        return _centered(out, axes, [s1[a] for a in axes])
    if not (all(s1[a] >= s2[a] for a in axes) or all(s2[a] >= s1[a] for a in axes)):
        raise ValueError(f"fftconvolve: for 'valid' mode one input must be at least as large "
                         f"as the other in every convolved axis, got {s1} and {s2}")
    return _centered(out, axes, [abs(s1[a] - s2[a]) + 1 for a in axes])


def convolve(in1, in2, mode="full", method="auto"):
    """scipy.signal.convolve. On fastape values it is computed by FFTs whatever
    `method` says (the values agree with the direct sum to rounding)."""
    if not _traced(in1, in2):
        import scipy.signal
        return scipy.signal.convolve(in1, in2, mode=mode, method=method)
    if method not in ("auto", "direct", "fft"):
        raise ValueError(f"convolve: acceptable method flags are 'auto', 'direct', or 'fft', "
                         f"got {method!r}")
    return fftconvolve(in1, in2, mode=mode)
