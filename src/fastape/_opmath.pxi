# Helper functions of the op registry's formulas (included by _ops.pxd). Each is
# named in a formula of registry.py; keep them branch-light: they are inlined into
# the sweeps.


cdef inline double _sigmoid(double x) noexcept nogil:
    """1 / (1 + e^-x) without overflow for either sign of x."""
    cdef double e
    if x >= 0:
        return 1.0 / (1.0 + exp(-x))
    e = exp(x)
    return e / (1.0 + e)
