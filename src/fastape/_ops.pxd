# cython: language_level=3
"""The compiled op table, generated from ``registry.py`` (see ``_codegen.py``).

``value_and_partials(o, x, y, &d0, &d1, known)`` returns the value of
elementwise op ``o`` and writes its local partials side by side:

    value = f(x, y)      d0 = ∂f/∂x      d1 = ∂f/∂y

``x`` is the value of the first parent; ``y`` the value of the second parent for
binary ops, the node's immediate ``k`` for the ``*_K`` ops, and unused by the
other unary ops. The sweeps are op-agnostic: the forward sweep keeps ``value``;
the reverse sweep calls the same function and adds ``d0 λ`` to the first
parent's adjoint and ``d1 λ`` to the second's. ``second_partials`` gives
``d00, d01, d11``, and ``value_and_second_partials`` all five in one call, for
forward-over-reverse sweeps.

The formulas, domains and numpy names live in ``registry.py``, one block per op;
this file only holds what the generated code needs around it.
"""
from libc.stdint cimport int64_t
from libc.math cimport (exp, log, log1p, expm1, sqrt, sin, cos, tan, asin, acos,
                        atan, atan2, sinh, cosh, tanh, asinh, acosh, atanh, fabs, floor,
                        ceil, trunc, nearbyint, pow, fmod, hypot, cbrt, log2, log10, exp2,
                        copysign, fmax, fmin, INFINITY, NAN)
from scipy.special cimport cython_special as sp

cdef extern from *:
    """
    /* The sweeps are only fast when the op table is inlined into their loops (the
       call, spills and partials through memory cost ~2x otherwise); the function is
       too large for GCC's inlining heuristics, so force it. */
    #if defined(__GNUC__)
    #define FASTAPE_ALWAYS_INLINE __attribute__((always_inline))
    #define FASTAPE_NOINLINE __attribute__((noinline))
    #else
    #define FASTAPE_ALWAYS_INLINE
    #define FASTAPE_NOINLINE
    #endif
    static inline double fastape_value_and_partials(int, double, double, double *,
                                                    double *, const double *) FASTAPE_ALWAYS_INLINE;
    /* The derived partial ops (nested derivatives only) are one call from the
       inlined switch: their long formulas would otherwise be compiled into every
       sweep loop. */
    static inline double fastape_derived_value_and_partials(int, double, double, double *,
                                                            double *) FASTAPE_NOINLINE;
    static inline double fastape_value_and_second_partials(int, double, double, double *,
        double *, double *, double *, double *, const double *) FASTAPE_ALWAYS_INLINE;
    /* The array and run loops of _elementwise.pxi are instantiated once per hot op, the
       opcode a constant (the switch folds away), and once for every other op (the cold
       loops: the opcode a variable). There the op table is one call rather than an
       inlined switch: those ops call libm or cython_special per element anyway, and the
       inlined copies of the whole table (one per loop kind and stride variant) were
       most of _tape's compile time. */
    static inline double fastape_vp_call(int, double, double, double *, double *,
                                         const double *) FASTAPE_NOINLINE;
    static inline double fastape_vsp_call(int, double, double, double *, double *,
        double *, double *, double *, const double *) FASTAPE_NOINLINE;
    #if defined(__GNUC__)
    #define fastape_vp_loop(o, x, y, d0, d1, known) (__builtin_constant_p(o) ? \
        fastape_value_and_partials(o, x, y, d0, d1, known) : \
        fastape_vp_call(o, x, y, d0, d1, known))
    #define fastape_vsp_loop(o, x, y, d0, d1, d00, d01, d11, known) (__builtin_constant_p(o) ? \
        fastape_value_and_second_partials(o, x, y, d0, d1, d00, d01, d11, known) : \
        fastape_vsp_call(o, x, y, d0, d1, d00, d01, d11, known))
    #else
    #define fastape_vp_loop fastape_value_and_partials
    #define fastape_vsp_loop fastape_value_and_second_partials
    #endif
    """
    double vp_loop "fastape_vp_loop"(int o, double x, double y, double* d0, double* d1,
                                     const double* known) noexcept nogil
    double vsp_loop "fastape_vsp_loop"(int o, double x, double y, double* d0, double* d1,
                                       double* d00, double* d01, double* d11,
                                       const double* known) noexcept nogil

include "_opmath.pxi"
include "_opgen.pxi"


cdef inline double _vp_call "fastape_vp_call"(int o, double x, double y, double* d0,
                                              double* d1, const double* known) noexcept nogil:
    return value_and_partials(o, x, y, d0, d1, known)


cdef inline double _vsp_call "fastape_vsp_call"(
        int o, double x, double y, double* d0, double* d1, double* d00, double* d01,
        double* d11, const double* known) noexcept nogil:
    return value_and_second_partials(o, x, y, d0, d1, d00, d01, d11, known)
