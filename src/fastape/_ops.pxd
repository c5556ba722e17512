# cython: language_level=3
"""THE op table of fastape.

Every elementwise op is one ``Op`` entry and one branch of ``value_and_partials``,
which returns the op's value and writes its local partials side by side:

    value = f(x, y)      d0 = ∂f/∂x      d1 = ∂f/∂y

``x`` is the value of the first parent; ``y`` is the value of the second parent
for binary ops, the node's immediate constant ``k`` for the ``*_K`` ops (so
``x * 2.0`` needs no constant node), and unused by the other unary ops. The sweeps are
op-agnostic: the forward sweep keeps ``value``; the reverse sweep calls the same
function and adds ``d0 * λ`` to the first parent's multiplier and ``d1 * λ`` to
the second's. Structural ops (indexing, reductions, broadcasting, …) move values
rather than compute them; their kernels live beside the sweeps in ``_tape.pyx``.

Conventions shared with ``fastape.reference`` (the pure-Python oracle):

* A zero multiplier contributes nothing, even through an infinite or NaN
  partial. This is what keeps ``where(x > 0, sqrt(x), 0)`` finite at x ≤ 0.
* Ties of ``maximum``/``minimum`` split the multiplier half and half; reductions
  ``max``/``min`` send it to the first extremal element.
* ``abs``, ``sign`` and ``relu`` have partial 0 at 0; ``sign``, ``floor`` and
  ``round`` (half to even, as numpy) have partial 0 everywhere.

Opcodes are ordered by kind so that arity is a range check (``is_unary`` …).
Adding an op: one enum entry, one branch below, one entry in
``fastape.reference.OPS`` and one row in ``tests/test_ops.py``.
"""
from libc.math cimport (exp, log, log1p, expm1, sqrt, sin, cos, tan, asin, acos,
                        atan, atan2, sinh, cosh, tanh, fabs, floor, nearbyint, pow,
                        INFINITY, NAN)


cpdef enum Op:
    # leaves: no parents
    INPUT = 0
    CONSTANT
    # unary elementwise: f(x)
    NEG
    ABS
    EXP
    LOG
    LOG1P
    EXPM1
    SQRT
    SQUARE
    RECIPROCAL
    SIN
    COS
    TAN
    ARCSIN
    ARCCOS
    ARCTAN
    SINH
    COSH
    TANH
    SIGMOID
    SOFTPLUS
    RELU
    SIGN
    FLOOR
    ROUND
    COPY
    # unary elementwise with an immediate constant k: f(x; k)
    ADD_K
    MUL_K
    RSUB_K
    DIV_K
    RDIV_K
    POW_K
    RPOW_K
    # binary elementwise: f(x, y)
    ADD
    SUB
    MUL
    DIV
    POW
    ARCTAN2
    LOGADDEXP
    MAXIMUM
    MINIMUM
    # structural ops: kernels in _tape.pyx
    GATHER1      # scalar x.flat[k]
    GATHER       # x.flat[idx] for an index array: indexing, transpose
    STRIDED      # x.flat[start + j*step]: indexing whose positions form a progression
    BROADCAST    # np.broadcast_to(x, shape)
    SUM          # reductions over (outer, n, inner) blocks
    PROD
    AMAX
    AMIN
    DOT          # Σ x_j y_j of two vectors
    WHERE        # cond ? x : y, cond a constant node
    CONCAT       # parts copied into place: concatenate, stack
    # dense linear algebra: kernels in _linalg.pxi (BLAS/LAPACK), parameters in M
    MATMUL       # C = op(A) op(B) per batch (dgemm/dgemv); M: m, k, n, batch, sA, sB, flags
    LU           # hidden: row-major A's LU factors and pivots; its multiplier slot holds Ā
    SOLVE        # X = A⁻¹ B from an LU node (dtrsm); M: n, r
    DET          # det A from an LU node
    LOGDET       # log |det A| from an LU node (the differentiable half of slogdet)
    NORM         # ‖x‖₂ of all elements (vector 2-norm, Frobenius norm; dnrm2)
    NUM_OPS


cdef inline bint is_unary(int o) noexcept nogil:
    return NEG <= o <= RPOW_K

cdef inline bint has_k(int o) noexcept nogil:
    return ADD_K <= o <= RPOW_K

cdef inline bint is_binary(int o) noexcept nogil:
    return ADD <= o <= MINIMUM

cdef inline bint is_elementwise(int o) noexcept nogil:
    return NEG <= o <= MINIMUM


cdef inline double _sigmoid(double x) noexcept nogil:
    cdef double e
    if x >= 0:
        return 1.0 / (1.0 + exp(-x))
    e = exp(x)
    return e / (1.0 + e)


cdef extern from *:
    """
    /* The sweeps are only fast when the op table is inlined into their loops (the
       call, spills and partials through memory cost ~2x otherwise); the function is
       too large for GCC's inlining heuristics, so force it. */
    #if defined(__GNUC__)
    #define FASTAPE_ALWAYS_INLINE __attribute__((always_inline))
    #else
    #define FASTAPE_ALWAYS_INLINE
    #endif
    static inline double fastape_value_and_partials(int, double, double, double *,
                                                    double *, const double *) FASTAPE_ALWAYS_INLINE;
    """


cdef inline double value_and_partials "fastape_value_and_partials"(
        int o, double x, double y, double* d0, double* d1, const double* known) noexcept nogil:
    """value = f_o(x, y); d0, d1 = ∂f/∂x, ∂f/∂y (y is k for the *_K ops)."""
    cdef double v, r
    cdef double k = y
    d1[0] = 0.0
    # unary
    if o == NEG:
        d0[0] = -1.0; return -x
    elif o == ABS:
        d0[0] = (x > 0) - (x < 0); return fabs(x)
    elif o == EXP:
        v = known[0] if known != NULL else exp(x); d0[0] = v; return v
    elif o == LOG:
        d0[0] = 1.0 / x; return log(x)
    elif o == LOG1P:
        d0[0] = 1.0 / (1.0 + x); return log1p(x)
    elif o == EXPM1:
        v = known[0] if known != NULL else expm1(x); d0[0] = v + 1.0; return v
    elif o == SQRT:
        v = known[0] if known != NULL else sqrt(x); d0[0] = 0.5 / v; return v
    elif o == SQUARE:
        d0[0] = 2.0 * x; return x * x
    elif o == RECIPROCAL:
        v = known[0] if known != NULL else 1.0 / x; d0[0] = -v * v; return v
    elif o == SIN:
        d0[0] = cos(x); return sin(x)
    elif o == COS:
        d0[0] = -sin(x); return cos(x)
    elif o == TAN:
        v = known[0] if known != NULL else tan(x); d0[0] = 1.0 + v * v; return v
    elif o == ARCSIN:
        d0[0] = 1.0 / sqrt(1.0 - x * x); return asin(x)
    elif o == ARCCOS:
        d0[0] = -1.0 / sqrt(1.0 - x * x); return acos(x)
    elif o == ARCTAN:
        d0[0] = 1.0 / (1.0 + x * x); return atan(x)
    elif o == SINH:
        d0[0] = cosh(x); return sinh(x)
    elif o == COSH:
        d0[0] = sinh(x); return cosh(x)
    elif o == TANH:
        v = known[0] if known != NULL else tanh(x); d0[0] = 1.0 - v * v; return v
    elif o == SIGMOID:
        v = known[0] if known != NULL else _sigmoid(x); d0[0] = v * (1.0 - v); return v
    elif o == SOFTPLUS:
        # log(1 + e^x) without overflow
        d0[0] = _sigmoid(x); return (x if x > 0 else 0.0) + log1p(exp(-fabs(x)))
    elif o == RELU:
        # nan stays nan, as numpy.maximum(x, 0)
        d0[0] = 1.0 if x > 0 else 0.0; return x if x > 0 or x != x else 0.0
    elif o == SIGN:
        d0[0] = 0.0
        if x != x:
            return x
        return (x > 0) - (x < 0)
    elif o == FLOOR:
        d0[0] = 0.0; return floor(x)
    elif o == ROUND:
        d0[0] = 0.0; return nearbyint(x)
    elif o == COPY:
        d0[0] = 1.0; return x
    # unary with immediate k
    elif o == ADD_K:
        d0[0] = 1.0; return x + k
    elif o == MUL_K:
        d0[0] = k; return x * k
    elif o == RSUB_K:
        d0[0] = -1.0; return k - x
    elif o == DIV_K:
        d0[0] = 1.0 / k; return x / k
    elif o == RDIV_K:
        v = k / x; d0[0] = -v / x; return v
    elif o == POW_K:
        if k == 2.0:
            d0[0] = 2.0 * x; return x * x
        d0[0] = 0.0 if k == 0.0 else k * pow(x, k - 1.0)
        return pow(x, k)
    elif o == RPOW_K:
        v = pow(k, x)
        # d/dx k^x = k^x log k, and 0 where k^x = 0 (k = 0, x > 0)
        d0[0] = 0.0 if v == 0.0 else v * log(k)
        return v
    # binary
    elif o == ADD:
        d0[0] = 1.0; d1[0] = 1.0; return x + y
    elif o == SUB:
        d0[0] = 1.0; d1[0] = -1.0; return x - y
    elif o == MUL:
        d0[0] = y; d1[0] = x; return x * y
    elif o == DIV:
        v = known[0] if known != NULL else x / y; d0[0] = 1.0 / y; d1[0] = -v / y; return v
    elif o == POW:
        v = pow(x, y)
        d0[0] = 0.0 if y == 0.0 else y * pow(x, y - 1.0)
        d1[0] = 0.0 if v == 0.0 else v * log(x)
        return v
    elif o == ARCTAN2:
        r = x * x + y * y
        d0[0] = y / r; d1[0] = -x / r; return atan2(x, y)
    elif o == LOGADDEXP:
        if x == y:      # also covers x = y = ±inf
            d0[0] = 0.5; d1[0] = 0.5; return x + 0.6931471805599453
        # partials sigmoid(x - y), sigmoid(y - x): finite even where the value is infinite
        d0[0] = _sigmoid(x - y); d1[0] = _sigmoid(y - x)
        return (x if x > y else y) + log1p(exp(-fabs(x - y)))
    elif o == MAXIMUM:
        if x > y:
            d0[0] = 1.0; return x
        elif x < y:
            d0[0] = 0.0; d1[0] = 1.0; return y
        d0[0] = 0.5; d1[0] = 0.5
        return x if x == y else x + y      # x + y: NaN if either is NaN
    elif o == MINIMUM:
        if x < y:
            d0[0] = 1.0; return x
        elif x > y:
            d0[0] = 0.0; d1[0] = 1.0; return y
        d0[0] = 0.5; d1[0] = 0.5
        return x if x == y else x + y
    d0[0] = NAN
    return NAN
