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


# The polygammas: the recurrence carries x up to z >= 12, where the 1/z expansion
# with eight terms (Bernoulli numbers B2 .. B16, resp. (2k + 1) B2k) is good to
# 1e-17 relative; small terms are added first.

cdef inline double _trigamma_pos(double x) noexcept nogil:
    """psi'(x) for finite x > 0."""
    cdef int n = 0, k
    cdef double r, w, p, acc
    while x + n < 12.0:
        n += 1
    r = 1.0 / (x + n)
    w = r * r
    p = -7.092156862745098
    p = 1.1666666666666667 + w * p
    p = -0.2531135531135531 + w * p
    p = 0.07575757575757576 + w * p
    p = -0.03333333333333333 + w * p
    p = 0.023809523809523808 + w * p
    p = -0.03333333333333333 + w * p
    p = 0.16666666666666666 + w * p
    acc = r + 0.5 * w + r * w * p
    # psi'(x) = psi'(x + 1) + 1/x^2
    for k in range(n - 1, -1, -1):
        r = 1.0 / (x + k)
        acc += r * r
    return acc


cdef inline double _trigamma(double x) noexcept nogil:
    """psi'(x) = sum 1/(x + n)^2: +inf at the poles 0, -1, ...; 0 at +inf; NaN at -inf."""
    cdef double r, t
    if not fabs(x) < INFINITY:
        return 0.0 if x == INFINITY else NAN
    if x <= 0.0:
        if x == floor(x):
            return INFINITY  # both one-sided limits are +inf
        # reflection psi'(x) + psi'(1 - x) = pi^2 / sin^2(pi x), pi x reduced exactly
        r = x - nearbyint(x)
        t = 3.141592653589793 / sin(3.141592653589793 * r)
        return t * t - _trigamma_pos(1.0 - x)
    return _trigamma_pos(x)


cdef inline double _tetragamma_pos(double x) noexcept nogil:
    """psi''(x) for finite x > 0."""
    cdef int n = 0, k
    cdef double r, w, p, acc
    while x + n < 12.0:
        n += 1
    r = 1.0 / (x + n)
    w = r * r
    p = -120.56666666666666
    p = 17.5 + w * p
    p = -3.2904761904761903 + w * p
    p = 0.8333333333333334 + w * p
    p = -0.3 + w * p
    p = 0.16666666666666666 + w * p
    p = -0.16666666666666666 + w * p
    p = 0.5 + w * p
    acc = -w * (1.0 + r + w * p)
    # psi''(x) = psi''(x + 1) - 2/x^3
    for k in range(n - 1, -1, -1):
        r = 1.0 / (x + k)
        acc -= 2.0 * r * r * r
    return acc


cdef inline double _tetragamma(double x) noexcept nogil:
    """psi''(x) = -2 sum 1/(x + n)^3: NaN at the poles (the sides disagree) and at -inf."""
    cdef double r, s, c
    if not fabs(x) < INFINITY:
        return 0.0 if x == INFINITY else NAN
    if x <= 0.0:
        if x == floor(x):
            return NAN
        # reflection psi''(x) = psi''(1 - x) - 2 pi^3 cos(pi x) / sin^3(pi x); with
        # r = x - round(x) the signs cancel, and cos(pi r) = sin(pi (1/2 - |r|)) stays
        # accurate near the half-integers, where it vanishes
        r = x - nearbyint(x)
        s = sin(3.141592653589793 * r)
        c = sin(3.141592653589793 * (0.5 - fabs(r)))
        return _tetragamma_pos(1.0 - x) - 62.01255336059964 * c / s / s / s
    return _tetragamma_pos(x)


# sinc's derivatives: the closed forms lose ~1/t^2 (d1) and ~1/t^3 (d2) digits as
# t = pi x -> 0, so for |t| < 1 the Taylor series in s = t^2 (ten terms, 1e-17).

cdef inline double _sinc_d1(double x) noexcept nogil:
    """d/dx sin(pi x)/(pi x)."""
    cdef double t = 3.141592653589793 * x, s, p
    if fabs(t) < 1.0:
        s = t * t
        p = 3.9145882126782523e-19
        p = 1.4797143443923793e-16 - s * p
        p = 4.498331606952833e-14 - s * p
        p = 1.0706029224547743e-11 - s * p
        p = 1.9270852604185937e-09 - s * p
        p = 2.505210838544172e-07 - s * p
        p = 2.2045855379188714e-05 - s * p
        p = 0.0011904761904761906 - s * p
        p = 0.03333333333333333 - s * p
        p = 0.3333333333333333 - s * p
        return -3.141592653589793 * t * p
    if not fabs(t) < INFINITY:
        return NAN
    return (cos(t) - sin(t) / t) / x


cdef inline double _sinc_d2(double x) noexcept nogil:
    """d2/dx2 sin(pi x)/(pi x)."""
    cdef double t = 3.141592653589793 * x, s, p
    if fabs(t) < 1.0:
        s = t * t
        p = 7.437717604088679e-18
        p = 2.515514385467045e-15 - s * p
        p = 6.74749741042925e-13 - s * p
        p = 1.3917837991912066e-10 - s * p
        p = 2.1197937864604532e-08 - s * p
        p = 2.2546897546897547e-06 - s * p
        p = 0.00015432098765432098 - s * p
        p = 0.005952380952380952 - s * p
        p = 0.1 - s * p
        p = 0.3333333333333333 - s * p
        return -9.869604401089358 * p
    if not fabs(t) < INFINITY:
        return NAN
    return -9.869604401089358 * (sin(t) + 2.0 * (cos(t) - sin(t) / t) / t) / t


cdef inline double _hypot(double x, double y) noexcept nogil:
    """sqrt(x² + y²) without overflow. Where the sum of squares is a normal double far
    from overflow (2⁻⁹⁶⁸ < s < 2¹⁰²³) it is sqrt(s), within 1.25 ulp (libm's hypot is
    correctly rounded but takes ~30 ns, and complex abs runs it on every element); on
    overflow, underflow, inf and NaN, libm's hypot."""
    cdef double s = x * x + y * y
    if s > 2.0041683600089728e-292 and s < 8.98846567431158e307:
        return sqrt(s)
    return hypot(x, y)


cdef inline double _remainder(double x, double y) noexcept nogil:
    """numpy.remainder, Python's %: x - floor(x/y) y with the sign of y, as numpy computes it."""
    cdef double m = fmod(x, y)
    if m != 0.0:  # also NaN, which stays NaN
        return m + y if (y < 0.0) != (m < 0.0) else m
    return copysign(0.0, y)


cdef inline double _log_ndtr_k(double x) noexcept nogil:
    """phi(x)/Phi(x) + x for x <= -3, by the continued fraction of the Mills ratio.

    With t = -x, Phi(-t)/phi(t) = 1/(t + 1/(t + 2/(t + 3/(t + ...)))); this returns
    1/(t + 2/(t + 3/(t + ...))), the small excess of phi/Phi over -x, without the
    cancellation of computing phi/Phi and adding x. 60 levels converge to 1e-16 for
    t >= 3, 24 for t >= 6 (checked against mpmath in check.py).
    """
    cdef double t = -x, acc = 0.0
    cdef int n
    for n in range(60 if t < 6.0 else 24, 1, -1):
        acc = n / (t + acc)
    return 1.0 / (t + acc)


# 1/Gamma at its zeros x = -n: with e = x + n, 1/Gamma(x) = (-1)^n n! e (1 - e psi(n + 1)
# + O(e^2)), which gives the limits of -psi/Gamma and (psi^2 - psi')/Gamma there.

cdef inline double _rgamma_d1(double x, double v) noexcept nogil:
    """d/dx 1/Gamma(x), v = 1/Gamma(x)."""
    cdef double n
    if x <= 0.0 and x == floor(x):
        n = -x
        return (1.0 if fmod(n, 2.0) == 0.0 else -1.0) * sp.gamma(n + 1.0)
    return -sp.psi(x) * v


cdef inline double _rgamma_d2(double x, double v) noexcept nogil:
    """d2/dx2 1/Gamma(x), v = 1/Gamma(x)."""
    cdef double n, p
    if x <= 0.0 and x == floor(x):
        n = -x
        return -2.0 * (1.0 if fmod(n, 2.0) == 0.0 else -1.0) * sp.gamma(n + 1.0) * \
            sp.psi(n + 1.0)
    p = sp.psi(x)
    return v * (p * p - _trigamma(x))


# The Hurwitz zeta function: cython_special only has zetac (q = 1). This is cephes'
# zeta (which scipy.special.zeta is), step for step: the sum up to q + i > 9, then
# Euler-Maclaurin with the Bernoulli terms (2j)!/B_2j.
cdef inline double _zeta(double x, double q) noexcept nogil:
    """Hurwitz zeta sum_k (k + q)^-x for x > 1."""
    cdef double s, a, b, w, t, kk
    cdef double A[12]
    cdef int i
    if x == 1.0:
        return INFINITY
    if x < 1.0 or x != x or q != q:
        return NAN
    if q <= 0.0:
        if q == floor(q):
            return INFINITY
        if x != floor(x):
            return NAN   # q^-x is not real
    if q > 1e8:
        return (1.0 / (x - 1.0) + 1.0 / (2.0 * q)) * pow(q, 1.0 - x)
    s = pow(q, -x)
    a = q
    i = 0
    b = 0.0
    while i < 9 or a <= 9.0:
        i += 1
        a += 1.0
        b = pow(a, -x)
        s += b
        if fabs(b / s) < 1.11022302462515654042e-16:
            return s
    A[:] = [12.0, -720.0, 30240.0, -1209600.0, 47900160.0, -1.8924375803183791606e9,
            7.47242496e10, -2.950130727918164224e12, 1.1646782814350067249e14,
            -4.5979787224074726105e15, 1.8152105401943546773e17, -7.1661652561756670113e18]
    w = a
    s += b * w / (x - 1.0)
    s -= 0.5 * b
    a = 1.0
    kk = 0.0
    for i in range(12):
        a *= x + kk
        b /= w
        t = a * b / A[i]
        s = s + t
        t = fabs(t / s)
        if t < 1.11022302462515654042e-16:
            return s
        kk += 1.0
        a *= x + kk
        b /= w
        kk += 1.0
    return s


cdef inline double _polygamma(double n, double x) noexcept nogil:
    """psi^(n)(x) = (-1)^(n+1) n! zeta(n + 1, x) (psi for n = 0), as scipy computes it:
    NaN for a negative or fractional n."""
    if n == 0.0:
        return sp.psi(x)
    if n < 0.0 or n != floor(n):
        return NAN
    return (1.0 if fmod(n, 2.0) == 1.0 else -1.0) * sp.gamma(n + 1.0) * _zeta(n + 1.0, x)


cdef inline double _yn(double n, double x) noexcept nogil:
    """yn(n, x) for an integer order n held as a double (fastape.yn checks it)."""
    return sp.yn(<long>n, x)
