# cython: language_level=3
"""Sparsity patterns of a recorded tape and the colorings that compress them.

``patterns`` propagates index sets forward over a tape, as ADOL-C's ``jac_pat`` and
``hess_pat`` do: X(z) is the set of differentiated input scalars (columns) element z
depends on, and for the Hessian the nonlinear interactions N(j) ∋ k of column j are
collected at every op whose second partials are not identically zero,

    z = f(x, y):   ∂²f/∂x² ≢ 0 → X(x) × X(x),  ∂²f/∂x∂y ≢ 0 → X(x) × X(y) (both ways),

so that ∪_j {j} × N(j) is the pattern of Σ_i λ_i ∇²f_i, the Lagrangian Hessian, for
ops whose multiplier λ_i can be nonzero. Which partials vanish identically is derived
from the op registry by fastape.sparse and handed over as a table (``flags``).

Memory: a set is a sorted int32 array shared by reference count (a copy, a gather or
a broadcast shares its parent's sets; a union makes a new one, or merges in place
into a parent's set that dies at this node: the running sum of a loop grows one set,
not one per iteration), and a node's sets are released after its last use, so what is
held is the sets of the live nodes, not nodes × inputs.

The colorings are greedy, each in two orders (natural and largest first) of which the
one with fewer colors is kept.
"""
cimport cython
from libc.stdlib cimport malloc, realloc, free, qsort
from libc.string cimport memcpy, memset
from libc.stdint cimport uint8_t, int32_t, int64_t
from fastape._tape cimport Tape

import numpy as np

ctypedef int64_t i64
ctypedef int32_t i32

# per-opcode flags (fastape.sparse builds the table from the registry)
cdef enum:
    F_D0 = 1            # ∂f/∂x is not identically zero
    F_D1 = 2            # ∂f/∂y is not identically zero
    F_D00 = 4           # second partials not identically zero
    F_D01 = 8
    F_D11 = 16
    # ∂f/∂x = y and ∂f/∂y = x (or ∂f/∂x = k): zero where the other factor is an exact
    # constant zero
    F_PROD = 32

# kinds of op (fastape.sparse maps every registry op to one; see sparse._KINDS)
cdef enum:
    K_INPUT = 0
    K_CONSTANT = 1
    K_UNARY = 2
    K_UNARY_K = 3
    K_BINARY = 4
    K_GATHER1 = 10
    K_GATHER = 11
    K_STRIDED = 12
    K_BROADCAST = 13
    K_REDUCE = 14       # SUM, AMAX, AMIN, NORM (linear or selection: union of the group)
    K_PROD = 15
    K_CUMSUM = 16
    K_CUMPROD = 17
    K_DOT = 18
    K_WHERE = 19
    K_CONCAT = 20
    K_MATMUL = 21
    K_LU = 22
    K_SOLVE = 23
    K_DET = 24
    K_NORM = 25
    K_CALLBACK = 26

KINDS = {"INPUT": K_INPUT, "CONSTANT": K_CONSTANT, "UNARY": K_UNARY,
         "UNARY_K": K_UNARY_K, "BINARY": K_BINARY, "GATHER1": K_GATHER1,
         "GATHER": K_GATHER, "STRIDED": K_STRIDED, "BROADCAST": K_BROADCAST,
         "REDUCE": K_REDUCE, "PROD": K_PROD, "CUMSUM": K_CUMSUM, "CUMPROD": K_CUMPROD,
         "DOT": K_DOT, "WHERE": K_WHERE, "CONCAT": K_CONCAT, "MATMUL": K_MATMUL,
         "LU": K_LU, "SOLVE": K_SOLVE, "DET": K_DET, "NORM": K_NORM,
         "CALLBACK": K_CALLBACK}
FLAGS = {"D0": F_D0, "D1": F_D1, "D00": F_D00, "D01": F_D01, "D11": F_D11, "PROD": F_PROD}


# ---------------------------------------------------------------------------
# index sets: sorted int32 arrays with a reference count (NULL: the empty set)
# ---------------------------------------------------------------------------

ctypedef struct ISet:
    i64 refs
    i64 n
    i64 cap             # the entries follow the header


# bytes held by index sets now and at most since the last pass began (a measure of the
# propagation's memory: fastape.sparse reports it, the tests bound it)
cdef i64 _held = 0, _peak = 0


cdef inline void _count(i64 nbytes) noexcept nogil:
    global _held, _peak
    _held += nbytes
    if _held > _peak:
        _peak = _held


def peak_set_bytes():
    """Peak bytes of index sets held during the last propagation."""
    return int(_peak)


cdef inline i32* _d(const ISet* s) noexcept nogil:
    return <i32*>(<char*>s + sizeof(ISet))


cdef ISet* _alloc(i64 cap) except NULL:
    cdef ISet* s = <ISet*>malloc(sizeof(ISet) + (cap if cap > 0 else 1) * sizeof(i32))
    if s == NULL:
        raise MemoryError("sparsity: out of memory for the index sets")
    s.refs = 1
    s.n = 0
    s.cap = cap
    _count(sizeof(ISet) + cap * sizeof(i32))
    return s


cdef inline ISet* _ref(ISet* s) noexcept nogil:
    if s != NULL:
        s.refs += 1
    return s


cdef inline void _unref(ISet* s) noexcept nogil:
    if s != NULL:
        s.refs -= 1
        if s.refs == 0:
            _count(-<i64>(sizeof(ISet) + s.cap * sizeof(i32)))
            free(s)


cdef ISet* _single(i32 c) except NULL:
    cdef ISet* s = _alloc(1)
    _d(s)[0] = c
    s.n = 1
    return s


cdef inline bint _has(const i32* a, i64 n, i32 x) noexcept nogil:
    """Binary search of x in sorted a[0:n]."""
    cdef i64 lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo < n and a[lo] == x


cdef bint _subset(const ISet* b, const ISet* a) noexcept nogil:
    """b ⊆ a (neither NULL)?"""
    cdef i64 j
    cdef const i32* ad = _d(a)
    cdef const i32* bd = _d(b)
    if b.n > a.n or bd[0] < ad[0] or bd[b.n - 1] > ad[a.n - 1]:
        return False
    for j in range(b.n):
        if not _has(ad, a.n, bd[j]):
            return False
    return True


cdef ISet* _merge(const ISet* a, const ISet* b) except NULL:
    """A new set a ∪ b (neither NULL)."""
    cdef ISet* s = _alloc(a.n + b.n)
    cdef const i32* x = _d(a)
    cdef const i32* y = _d(b)
    cdef i32* z = _d(s)
    cdef i64 i = 0, j = 0, k = 0
    while i < a.n and j < b.n:
        if x[i] < y[j]:
            z[k] = x[i]
            i += 1
        elif x[i] > y[j]:
            z[k] = y[j]
            j += 1
        else:
            z[k] = x[i]
            i += 1
            j += 1
        k += 1
    while i < a.n:
        z[k] = x[i]
        i += 1
        k += 1
    while j < b.n:
        z[k] = y[j]
        j += 1
        k += 1
    s.n = k
    return s


cdef ISet* _absorb(ISet* a, const ISet* b) except NULL:
    """a ∪= b in place (a owned: refs 1; b not NULL); returns a, perhaps moved. Only
    the entries of a above b's smallest new entry move: appending the next inputs of
    a loop to its running set costs their number, not the set's size."""
    cdef i64 new = 0, j, i, k, need
    cdef i32* x = _d(a)
    cdef const i32* y = _d(b)
    for j in range(b.n):
        if not _has(x, a.n, y[j]):
            new += 1
    if new == 0:
        return a
    need = a.n + new
    if need > a.cap:
        need = max(need, 2 * a.cap)
        _count((need - a.cap) * sizeof(i32))
        a = <ISet*>realloc(a, sizeof(ISet) + need * sizeof(i32))
        if a == NULL:
            raise MemoryError("sparsity: out of memory for the index sets")
        a.cap = need
        x = _d(a)
    # backward merge into the grown array
    i = a.n - 1
    j = b.n - 1
    k = a.n + new - 1
    while j >= 0:
        if i >= 0 and x[i] > y[j]:
            x[k] = x[i]
            i -= 1
        elif i >= 0 and x[i] == y[j]:
            x[k] = x[i]
            i -= 1
            j -= 1
        else:
            x[k] = y[j]
            j -= 1
        k -= 1
    a.n += new
    return a


cdef ISet* _union(ISet* a, ISet* b) except? NULL:
    """A new reference to a ∪ b (either may be NULL): a shared one when one contains
    the other."""
    if b == NULL or a == b:
        return _ref(a)
    if a == NULL:
        return _ref(b)
    if b.n <= a.n and _subset(b, a):
        return _ref(a)
    if a.n < b.n and _subset(a, b):
        return _ref(b)
    return _merge(a, b)


cdef int _union_into(ISet** slot, ISet* b) except -1:
    """*slot ∪= b, *slot holding one reference (replaced if shared)."""
    cdef ISet* s = slot[0]
    cdef ISet* u
    if b == NULL or s == b:
        return 0
    if s == NULL:
        slot[0] = _ref(b)
    elif s.refs == 1:
        slot[0] = _absorb(s, b)
    else:
        u = _union(s, b)
        _unref(s)
        slot[0] = u
    return 0


cdef int _cmp_i32(const void* p, const void* q) noexcept nogil:
    cdef i32 x = (<const i32*>p)[0], y = (<const i32*>q)[0]
    return (x > y) - (x < y)


@cython.final
cdef class _Builder:
    """The union of many sets (a reduction, a matrix product's row × column): entries
    marked in a column-sized stamp array, sorted once at the end."""
    cdef i32* mark
    cdef i32 stamp
    cdef i32* buf
    cdef i64 n, cap
    cdef ISet* only         # the one set added so far (NULL: none or several)
    cdef i64 nsets

    def __cinit__(self, i64 ncols):
        self.mark = <i32*>malloc((ncols if ncols > 0 else 1) * sizeof(i32))
        self.cap = 64
        self.buf = <i32*>malloc(self.cap * sizeof(i32))
        if self.mark == NULL or self.buf == NULL:
            raise MemoryError()
        memset(self.mark, 0, (ncols if ncols > 0 else 1) * sizeof(i32))
        self.stamp = 0

    def __dealloc__(self):
        free(self.mark)
        free(self.buf)

    cdef void begin(self) noexcept:
        self.stamp += 1
        self.n = 0
        self.only = NULL
        self.nsets = 0

    cdef int add(self, const ISet* s) except -1:
        cdef i64 j
        cdef i32 c
        cdef const i32* d
        if s == NULL or s == self.only:
            return 0
        self.nsets += 1
        self.only = <ISet*>s if self.nsets == 1 else NULL
        if self.n + s.n > self.cap:
            self.cap = max(2 * self.cap, self.n + s.n)
            self.buf = <i32*>realloc(self.buf, self.cap * sizeof(i32))
            if self.buf == NULL:
                raise MemoryError()
        d = _d(s)
        for j in range(s.n):
            c = d[j]
            if self.mark[c] != self.stamp:
                self.mark[c] = self.stamp
                self.buf[self.n] = c
                self.n += 1
        return 0

    cdef ISet* finish(self) except? NULL:
        """A new reference to the union (NULL if empty)."""
        cdef ISet* s
        if self.n == 0:
            return NULL
        if self.nsets == 1:
            return _ref(self.only)
        s = _alloc(self.n)
        qsort(self.buf, self.n, sizeof(i32), _cmp_i32)
        memcpy(_d(s), self.buf, self.n * sizeof(i32))
        s.n = self.n
        return s


# ---------------------------------------------------------------------------
# the propagation
# ---------------------------------------------------------------------------

cdef inline i64 _slot(Tape t, i64 i) noexcept nogil:
    return i if t.off == NULL else t.off[i]


cdef inline i64 _broadcast_next(i64* idx, i64 src, const i64* P) noexcept nogil:
    """The next element of a BROADCAST (parameters P: size, nd, nd dims, nd input
    strides, 0 on broadcast axes): advance the output multi-index idx and return the
    input element it reads, as _structural.pxi's _broadcast walks it."""
    cdef i64 nd = P[1], d = nd - 1
    while d >= 0:
        idx[d] += 1
        src += P[2 + nd + d]
        if idx[d] < P[2 + d]:
            break
        src -= P[2 + nd + d] * P[2 + d]
        idx[d] = 0
        d -= 1
    return src


cdef inline i64 _nparents(Tape t, i64 i, int kind) noexcept nogil:
    if kind <= K_CONSTANT:
        return 0
    if kind == K_CONCAT:
        return t.params(i)[4]
    if kind == K_CALLBACK:
        return t.params(i)[2]
    if kind == K_BINARY or kind == K_DOT or kind == K_WHERE or kind == K_MATMUL or \
            kind == K_SOLVE:
        return 2
    return 1


cdef inline i64 _parent(Tape t, i64 i, int kind, i64 q) noexcept nogil:
    if kind == K_CONCAT:
        return t.params(i)[5 + 3 * q]
    if kind == K_CALLBACK:
        return t.params(i)[3 + q]
    return t.a[i] if q == 0 else t.b[i]


@cython.final
cdef class _Pass:
    """State of one propagation over a tape."""
    cdef Tape t
    cdef const uint8_t* kind
    cdef const uint8_t* flags
    cdef ISet** S           # per value slot
    cdef i64 nslots
    cdef ISet** N           # per column: its nonlinear interactions (hessian) or NULL
    cdef i64 ncols
    cdef uint8_t* varies    # per node: depends on an input (differentiated or not)
    # hessian: per value slot, can its multiplier be nonzero (it reaches the output
    # through partials that are not identically zero)? nlive: per node, any of them
    cdef uint8_t* live
    cdef uint8_t* nlive
    cdef i64* last          # per node: the last node that reads it
    cdef _Builder bld, bld2

    def __dealloc__(self):
        cdef i64 j
        if self.S != NULL:
            for j in range(self.nslots):
                _unref(self.S[j])
            free(self.S)
        if self.N != NULL:
            for j in range(self.ncols):
                _unref(self.N[j])
            free(self.N)
        free(self.varies)
        free(self.live)
        free(self.nlive)
        free(self.last)

    cdef inline ISet* X(self, i64 node, i64 e) noexcept nogil:
        return self.S[_slot(self.t, node) + e]

    cdef int pairs(self, ISet* a, ISet* b) except -1:
        """Nonlinear interactions a × b and b × a."""
        cdef i64 j
        if a == NULL or b == NULL:
            return 0
        for j in range(a.n):
            _union_into(&self.N[_d(a)[j]], b)
        if b != a:
            for j in range(b.n):
                _union_into(&self.N[_d(b)[j]], a)
        return 0

    cdef inline bint lv(self, i64 node, i64 e) noexcept nogil:
        return self.live[_slot(self.t, node) + e]

    cdef inline void setlv(self, i64 node, i64 e) noexcept nogil:
        self.live[_slot(self.t, node) + e] = 1
        self.nlive[node] = 1

    cdef int prod_pairs(self, i64 node, i64 first, i64 m, i64 stride) except -1:
        """Interactions of a product of m factors (elements first + q·stride of node):
        X_q × X_l for q ≠ l, through the unions of the factors before and after q."""
        cdef ISet** pre = <ISet**>malloc((m + 1) * sizeof(ISet*))
        cdef ISet* suf = NULL
        cdef ISet* u
        cdef ISet* o
        cdef i64 q, j
        if pre == NULL:
            raise MemoryError()
        try:
            pre[0] = NULL
            for q in range(m):
                pre[q + 1] = _union(pre[q], self.X(node, first + q * stride))
            for q in range(m - 1, -1, -1):
                u = self.X(node, first + q * stride)
                if u != NULL:
                    o = _union(pre[q], suf)
                    for j in range(u.n):
                        _union_into(&self.N[_d(u)[j]], o)
                    _unref(o)
                o = _union(suf, u)
                _unref(suf)
                suf = o
        finally:
            for q in range(m + 1):
                _unref(pre[q])
            free(pre)
            _unref(suf)
        return 0

    cdef inline bint zero_const(self, i64 node, i64 e) noexcept nogil:
        """Is element e of node an exact zero that no input changes?"""
        return not self.varies[node] and self.t.val[_slot(self.t, node) + e] == 0.0

    cdef int node(self, i64 i, bint hess) except -1:
        cdef Tape t = self.t
        cdef int kind = self.kind[t.op[i]], fl = self.flags[t.op[i]]
        cdef i64 n = t.size_of(i), base = _slot(t, i), e, a = t.a[i], b = t.b[i]
        cdef i64 sx, sy, sa, sb, j, q, r, c, p, s, ln, m, src
        cdef i64 idx[64]
        cdef ISet* xa
        cdef ISet* xb
        cdef ISet* u
        cdef ISet** out = self.S + base
        cdef const i64* P
        cdef bint live = hess and self.nlive[i], d0, d1, steal_a, steal_b
        if kind == K_CONSTANT or kind == K_INPUT:
            return 0            # inputs are seeded by the caller
        if kind == K_UNARY or kind == K_UNARY_K:
            sx = t.size_of(a) != 1
            d0 = (fl & F_D0) and not (kind == K_UNARY_K and fl & F_PROD and t.pool[b] == 0.0)
            for e in range(n):
                xa = self.X(a, e * sx)
                if d0:
                    out[e] = _ref(xa)
                if live and fl & F_D00 and d0 and self.lv(i, e):
                    self.pairs(xa, xa)
            return 0
        if kind == K_BINARY:
            sx = t.size_of(a) != 1
            sy = t.size_of(b) != 1
            sa = _slot(t, a)
            sb = _slot(t, b)
            # a parent read by this node last, element for element, gives its sets up
            steal_a = self.last[a] == i and a != b and t.size_of(a) == n
            steal_b = self.last[b] == i and a != b and t.size_of(b) == n
            for e in range(n):
                xa = self.S[sa + e * sx]
                xb = self.S[sb + e * sy]
                d0 = fl & F_D0 and not (fl & F_PROD and self.zero_const(b, e * sy))
                d1 = fl & F_D1 and not (fl & F_PROD and self.zero_const(a, e * sx))
                if live and self.lv(i, e):
                    if fl & F_D00:
                        self.pairs(xa, xa)
                    if fl & F_D11:
                        self.pairs(xb, xb)
                    if fl & F_D01:
                        self.pairs(xa, xb)
                if not d0:
                    xa = NULL
                if not d1:
                    xb = NULL
                if xa != NULL and xb != NULL and xa != xb:
                    if steal_a and xa.refs == 1:
                        self.S[sa + e] = NULL
                        out[e] = _absorb(xa, xb)
                        continue
                    if steal_b and xb.refs == 1:
                        self.S[sb + e] = NULL
                        out[e] = _absorb(xb, xa)
                        continue
                out[e] = _union(xa, xb)
            return 0
        P = t.params(i) if t.off != NULL and t.poff[i] >= 0 else NULL
        if kind == K_GATHER1:
            out[0] = _ref(self.X(a, <i64>t.pool[b]))
        elif kind == K_GATHER:
            for e in range(n):
                out[e] = _ref(self.X(a, P[1 + e]))
        elif kind == K_STRIDED:
            for e in range(n):
                out[e] = _ref(self.X(a, P[1] + e * P[2]))
        elif kind == K_BROADCAST:
            memset(idx, 0, sizeof(idx))
            src = 0
            for e in range(n):
                out[e] = _ref(self.X(a, src))
                src = _broadcast_next(idx, src, P)
        elif kind == K_REDUCE or kind == K_PROD or kind == K_NORM:
            m = P[2]
            for p in range(P[1]):
                for s in range(P[3]):
                    self.bld.begin()
                    for q in range(m):
                        self.bld.add(self.X(a, (p * m + q) * P[3] + s))
                    u = self.bld.finish()
                    out[p * P[3] + s] = u
                    if live and self.lv(i, p * P[3] + s):
                        if kind == K_NORM:
                            self.pairs(u, u)
                        elif kind == K_PROD:
                            self.prod_pairs(a, p * m * P[3] + s, m, P[3])
        elif kind == K_CUMSUM or kind == K_CUMPROD:
            m = P[2]
            for p in range(P[1]):
                for s in range(P[3]):
                    u = NULL
                    r = -1          # the last live element: its product has them all
                    for q in range(m):
                        j = (p * m + q) * P[3] + s
                        xb = _union(u, self.X(a, j))
                        out[j] = xb
                        u = xb
                        if live and self.lv(i, j):
                            r = q
                    if kind == K_CUMPROD and r > 0:
                        self.prod_pairs(a, p * m * P[3] + s, r + 1, P[3])
        elif kind == K_DOT:
            self.bld.begin()
            for j in range(P[1]):
                xa = self.X(a, j)
                xb = self.X(b, j)
                if not self.zero_const(b, j):
                    self.bld.add(xa)
                if not self.zero_const(a, j):
                    self.bld.add(xb)
                if live and self.lv(i, 0):
                    self.pairs(xa, xb)
            out[0] = self.bld.finish()
        elif kind == K_WHERE:
            # both branches: the pattern does not change when the condition flips
            sx = t.size_of(a) != 1
            sy = t.size_of(b) != 1
            for e in range(n):
                out[e] = _union(self.X(a, e * sx), self.X(b, e * sy))
        elif kind == K_CONCAT:
            for q in range(P[4]):
                j = P[5 + 3 * q]
                ln = P[7 + 3 * q] * P[2]
                for s in range(P[1]):
                    for e in range(ln):
                        out[(s * P[3] + P[6 + 3 * q]) * P[2] + e] = _ref(self.X(j, s * ln + e))
        elif kind == K_MATMUL:
            self.matmul(i, P, live)
        elif kind == K_LU:
            self.bld.begin()
            for e in range(t.size_of(a)):
                self.bld.add(self.X(a, e))
            u = self.bld.finish()
            for e in range(n):
                out[e] = _ref(u)
            _unref(u)
        elif kind == K_DET:
            u = self.X(a, 0)      # every slot of an LU node holds the same set
            out[0] = _ref(u)
            if live and self.lv(i, 0):
                self.pairs(u, u)
        elif kind == K_SOLVE:
            # X[:, c] = A⁻¹ B[:, c]: all of A (dense: what a solve must densify) and
            # column c of B; nonlinear in A × A and A × B
            u = self.X(a, 0)
            r = P[2]
            for c in range(r):
                self.bld.begin()
                self.bld.add(u)
                for j in range(P[1]):
                    self.bld.add(self.X(b, j * r + c))
                xb = self.bld.finish()
                for j in range(P[1]):
                    if live and self.lv(i, j * r + c):
                        self.pairs(u, xb)
                        break
                for j in range(P[1]):
                    out[j * r + c] = _ref(xb)
                _unref(xb)
        elif kind == K_CALLBACK:
            # a Python rule: every output element may depend on every input element,
            # nonlinearly
            self.bld.begin()
            for q in range(P[2]):
                j = P[3 + q]
                for e in range(t.size_of(j)):
                    self.bld.add(self.X(j, e))
            u = self.bld.finish()
            for e in range(n):
                out[e] = _ref(u)
            if live:
                self.pairs(u, u)
            _unref(u)
        else:
            raise ValueError(f"sparsity: opcode {t.op[i]} (node {i}) has no pattern rule")
        return 0

    cdef int matmul(self, i64 i, const i64* P, bint live) except -1:
        """C[r, c] = Σ_k op(A)[r, k] op(B)[k, c]: a term counts unless its other factor
        is an exact constant zero (a constant banded A keeps A @ x banded)."""
        cdef Tape t = self.t
        cdef i64 a = t.a[i], b = t.b[i], rows = P[1], K = P[2], cols = P[3]
        cdef i64 bt, r, c, kk, ia, ib
        cdef bint ta = P[7] & 1, tb = P[7] & 2
        cdef ISet** out = self.S + _slot(t, i)
        cdef ISet* xa
        cdef ISet* xb
        cdef bint lc
        for bt in range(P[4]):
            for r in range(rows):
                for c in range(cols):
                    lc = live and self.lv(i, (bt * rows + r) * cols + c)
                    self.bld.begin()
                    for kk in range(K):
                        ia = bt * P[5] + (kk * rows + r if ta else r * K + kk)
                        ib = bt * P[6] + (c * K + kk if tb else kk * cols + c)
                        xa = self.X(a, ia)
                        xb = self.X(b, ib)
                        if xa != NULL and not self.zero_const(b, ib):
                            self.bld.add(xa)
                        if xb != NULL and not self.zero_const(a, ia):
                            self.bld.add(xb)
                        if lc:
                            self.pairs(xa, xb)
                    out[(bt * rows + r) * cols + c] = self.bld.finish()
        return 0

    cdef int mark(self, i64 i) except -1:
        """Node i's live elements make live the parents' elements they read through a
        partial that is not identically zero (the reverse sweep's reach, element by
        element)."""
        cdef Tape t = self.t
        cdef int kind = self.kind[t.op[i]], fl = self.flags[t.op[i]]
        cdef i64 n = t.size_of(i), e, a = t.a[i], b = t.b[i], sx, sy, q, p, s, m, j, ln
        cdef i64 r, c, kk, src, rows, K, cols, bt
        cdef i64 idx[64]
        cdef const i64* P = t.params(i) if t.off != NULL and t.poff[i] >= 0 else NULL
        cdef bint any_, ta, tb
        if kind == K_UNARY or kind == K_UNARY_K or kind == K_BINARY:
            sx = t.size_of(a) != 1
            sy = t.size_of(b) != 1 if kind == K_BINARY else 0
            for e in range(n):
                if self.lv(i, e):
                    if fl & F_D0:
                        self.setlv(a, e * sx)
                    if kind == K_BINARY and fl & F_D1:
                        self.setlv(b, e * sy)
        elif kind == K_GATHER1:
            self.setlv(a, <i64>t.pool[b])
        elif kind == K_GATHER or kind == K_STRIDED:
            for e in range(n):
                if self.lv(i, e):
                    self.setlv(a, P[1 + e] if kind == K_GATHER else P[1] + e * P[2])
        elif kind == K_BROADCAST:
            memset(idx, 0, sizeof(idx))
            src = 0
            for e in range(n):
                if self.lv(i, e):
                    self.setlv(a, src)
                src = _broadcast_next(idx, src, P)
        elif kind == K_REDUCE or kind == K_PROD or kind == K_NORM or kind == K_CUMSUM or \
                kind == K_CUMPROD:
            m = P[2]
            for p in range(P[1]):
                for s in range(P[3]):
                    any_ = False
                    for q in range(m - 1, -1, -1):  # element q reaches outputs q' >= q
                        j = (p * m + q) * P[3] + s
                        if kind == K_CUMSUM or kind == K_CUMPROD:
                            any_ = any_ or self.lv(i, j)
                        else:
                            any_ = self.lv(i, p * P[3] + s)
                        if any_:
                            self.setlv(a, j)
        elif kind == K_WHERE:
            sx = t.size_of(a) != 1
            sy = t.size_of(b) != 1
            for e in range(n):
                if self.lv(i, e):
                    self.setlv(a, e * sx)
                    self.setlv(b, e * sy)
        elif kind == K_CONCAT:
            for q in range(P[4]):
                j = P[5 + 3 * q]
                ln = P[7 + 3 * q] * P[2]
                for s in range(P[1]):
                    for e in range(ln):
                        if self.lv(i, (s * P[3] + P[6 + 3 * q]) * P[2] + e):
                            self.setlv(j, s * ln + e)
        elif kind == K_MATMUL:
            rows, K, cols = P[1], P[2], P[3]
            ta, tb = P[7] & 1, P[7] & 2
            for bt in range(P[4]):
                for r in range(rows):
                    for c in range(cols):
                        if not self.lv(i, (bt * rows + r) * cols + c):
                            continue
                        for kk in range(K):
                            self.setlv(a, bt * P[5] + (kk * rows + r if ta else r * K + kk))
                            self.setlv(b, bt * P[6] + (c * K + kk if tb else kk * cols + c))
        elif kind == K_SOLVE:
            r = P[2]
            for c in range(r):
                for j in range(P[1]):
                    if self.lv(i, j * r + c):
                        for e in range(P[1]):
                            self.setlv(b, e * r + c)
                        break
            for e in range(t.size_of(a)):
                self.setlv(a, e)
        else:           # DOT, LU, DET, CALLBACK: every element of every parent
            for q in range(_nparents(t, i, kind)):
                j = _parent(t, i, kind, q)
                for e in range(t.size_of(j)):
                    self.setlv(j, e)
        return 0

    cdef int release(self, i64 node) noexcept:
        cdef i64 e, base = _slot(self.t, node)
        for e in range(self.t.size_of(node)):
            _unref(self.S[base + e])
            self.S[base + e] = NULL
        return 0


def patterns(Tape t not None, const uint8_t[::1] kinds, const uint8_t[::1] flags,
             const i64[:, ::1] inputs, i64 ncols, i64 output, bint hessian, outs=None):
    """Propagate the index sets over tape `t`.

    kinds, flags: per opcode (see KINDS, FLAGS); inputs: rows (node, count, first
    column) of the differentiated input leaves (an array input's values are
    contiguous: one node, or `count` consecutive scalar nodes); output: the output node,
    or outs (an int64 array): output element e is scalar node outs[e] (fastape's Trace).
    Returns (indptr, indices) of the output's Jacobian pattern (rows: its elements)
    and, if `hessian`, of the symmetric Lagrangian Hessian pattern (ncols × ncols),
    else None."""
    global _peak
    cdef _Pass ps = _Pass.__new__(_Pass)
    cdef i64 n = t.n, i, q, p, e, nout
    cdef int kd
    cdef const i64[::1] ov = np.asarray([output] if outs is None else outs, dtype=np.int64)
    cdef ISet** rows
    _peak = _held
    ps.t = t
    ps.kind = &kinds[0]
    ps.flags = &flags[0]
    ps.ncols = ncols
    ps.nslots = t.nval if t.off != NULL else n
    ps.S = <ISet**>malloc((ps.nslots + 1) * sizeof(ISet*))
    ps.varies = <uint8_t*>malloc(n + 1)
    ps.live = <uint8_t*>malloc(ps.nslots + 1)
    ps.nlive = <uint8_t*>malloc(n + 1)
    ps.last = <i64*>malloc((n + 1) * sizeof(i64))
    if ps.S == NULL or ps.varies == NULL or ps.live == NULL or ps.nlive == NULL or \
            ps.last == NULL:
        raise MemoryError("sparsity: out of memory")
    memset(ps.S, 0, (ps.nslots + 1) * sizeof(ISet*))
    memset(ps.live, 0, ps.nslots + 1)
    memset(ps.nlive, 0, n + 1)
    if hessian:
        ps.N = <ISet**>malloc((ncols + 1) * sizeof(ISet*))
        if ps.N == NULL:
            raise MemoryError("sparsity: out of memory")
        memset(ps.N, 0, (ncols + 1) * sizeof(ISet*))
    ps.bld = _Builder(ncols)
    # last use, whether a node varies, and (hessian) which multipliers can be nonzero
    for i in range(n):
        kd = kinds[t.op[i]]
        ps.last[i] = -1
        ps.varies[i] = kd == K_INPUT
        for q in range(_nparents(t, i, kd)):
            p = _parent(t, i, kd, q)
            if p >= 0:
                ps.last[p] = i
                ps.varies[i] |= ps.varies[p]
    for e in range(ov.shape[0]):
        ps.last[ov[e]] = n         # the output's sets are read at the end
    if hessian:
        if outs is None:
            for e in range(t.size_of(output)):
                ps.setlv(output, e)
        else:
            for e in range(ov.shape[0]):
                ps.setlv(ov[e], 0)
        for i in range(n - 1, -1, -1):
            if ps.nlive[i] and kinds[t.op[i]] > K_CONSTANT:
                ps.mark(i)
    for q in range(inputs.shape[0]):
        for e in range(inputs[q, 1]):
            ps.S[_slot(t, inputs[q, 0]) + e] = _single(<i32>(inputs[q, 2] + e))
    for i in range(n):
        ps.node(i, hessian)
        kd = kinds[t.op[i]]
        for q in range(_nparents(t, i, kd)):
            p = _parent(t, i, kd, q)
            if p >= 0 and ps.last[p] == i:
                ps.release(p)
        if ps.last[i] < 0:          # read by nothing (a guard's operand)
            ps.release(i)
    if outs is None:
        jac = _to_csr(ps.S + _slot(t, output), t.size_of(output))
    else:
        nout = ov.shape[0]
        rows = <ISet**>malloc((nout + 1) * sizeof(ISet*))
        if rows == NULL:
            raise MemoryError("sparsity: out of memory")
        for e in range(nout):
            rows[e] = ps.S[_slot(t, ov[e])]
        try:
            jac = _to_csr(rows, nout)
        finally:
            free(rows)
    hess = _to_csr(ps.N, ncols) if hessian else None
    return jac, hess


cdef tuple _to_csr(ISet** rows, i64 m):
    cdef i64 r, total = 0, k = 0
    for r in range(m):
        if rows[r] != NULL:
            total += rows[r].n
    indptr = np.empty(m + 1, dtype=np.int32 if total < 2**31 else np.int64)
    indices = np.empty(total, dtype=np.int32)
    cdef i32[::1] ix = indices
    indptr[0] = 0
    for r in range(m):
        if rows[r] != NULL:
            if rows[r].n:
                memcpy(&ix[k], _d(rows[r]), rows[r].n * sizeof(i32))
            k += rows[r].n
        indptr[r + 1] = k
    return indptr, indices


# ---------------------------------------------------------------------------
# colorings (greedy) and the recovery of entries from the compressed products
# ---------------------------------------------------------------------------

def transpose(const i64[::1] indptr, const i32[::1] indices, i64 ncols):
    """(indptr, indices) of the transpose of an (m, ncols) pattern, rows sorted."""
    cdef i64 m = indptr.shape[0] - 1, r, k, c
    tp = np.zeros(ncols + 1, dtype=np.int64)
    ti = np.empty(indices.shape[0], dtype=np.int32)
    cdef i64[::1] P = tp
    cdef i32[::1] T = ti
    for k in range(indices.shape[0]):
        P[indices[k] + 1] += 1
    for c in range(ncols):
        P[c + 1] += P[c]
    fill = np.array(tp[:ncols], dtype=np.int64)
    cdef i64[::1] F = fill
    for r in range(m):
        for k in range(indptr[r], indptr[r + 1]):
            c = indices[k]
            T[F[c]] = <i32>r
            F[c] += 1
    return tp, ti


def greedy_columns(const i64[::1] rp, const i32[::1] ri, const i64[::1] cp,
                   const i32[::1] ci, const i64[::1] order):
    """Distance-2 coloring of the columns (columns that share a row differ), greedy in
    `order`; (rp, ri) the rows of the pattern, (cp, ci) its columns."""
    cdef i64 n = cp.shape[0] - 1, q, v, k, kr, u, c, r
    colors = np.full(n, -1, dtype=np.int64)
    forbidden = np.full(n + 1, -1, dtype=np.int64)
    cdef i64[::1] C = colors
    cdef i64[::1] Fb = forbidden
    for q in range(n):
        v = order[q]
        for k in range(cp[v], cp[v + 1]):
            r = ci[k]
            for kr in range(rp[r], rp[r + 1]):
                u = ri[kr]
                if C[u] >= 0:
                    Fb[C[u]] = v
        c = 0
        while Fb[c] == v:
            c += 1
        C[v] = c
    return colors


cdef inline i64 _find(const i64* keys, i64 lo, i64 n, i64 key) noexcept nogil:
    """Position of key in keys[lo:lo + n] (a vertex's short list), or -1."""
    cdef i64 q
    for q in range(lo, lo + n):
        if keys[q] == key:
            return q
    return -1


cdef inline void _add_color(i64* lists, i64* counts, i64 lo, i64 w, i64 c) noexcept nogil:
    """Add color c to vertex w's list lists[lo:lo + counts[w]] unless it is there."""
    if _find(lists, lo, counts[w], c) < 0:
        lists[lo + counts[w]] = c
        counts[w] += 1


def greedy_star(const i64[::1] p, const i32[::1] ix, const i64[::1] order):
    """Star coloring of the symmetric pattern's adjacency graph (the diagonal ignored):
    a distance-1 coloring in which every path on four vertices has at least three
    colors, greedy in `order`. Each vertex is given the smallest color that creates
    no two-colored path on four vertices among the vertices colored so far, with the
    new vertex v at an end (v-w-x-y: c(v) = c(x), c(w) = c(y)) or inside (a-v-w-x:
    c(a) = c(w), c(v) = c(x)) of the path.

    Both conditions are kept per vertex as the colors are given, so that a vertex of
    high degree (an arrow's hub) is not scanned for each neighbor: for every vertex x
    the colors of its colored neighbors with their counts (cnt(x, c)), and for every
    vertex w the colors c(x) of its colored neighbors x with cnt(x, c(w)) >= 2 (a y ≠ w
    next to x has w's color: `bad` colors, which v next to w must avoid). Inside: if
    v has two colored neighbors of w's color, every color next to w is forbidden.
    Each list holds distinct colors, so it has at most deg entries: both live in
    arrays shaped like the pattern."""
    cdef i64 n = p.shape[0] - 1, q, v, k, h, w, x, c, cw, pos
    cdef i64 nnz = ix.shape[0]
    colors = np.full(n, -1, dtype=np.int64)
    forbidden = np.full(n + 1, -1, dtype=np.int64)
    # per vertex x (slots p[x] .. p[x + 1]): colors next to x and their counts; per
    # vertex w: its bad colors
    ccol = np.empty(max(nnz, 1), dtype=np.int64)
    ccnt = np.empty(max(nnz, 1), dtype=np.int64)
    bad = np.empty(max(nnz, 1), dtype=np.int64)
    nc = np.zeros(n + 1, dtype=np.int64)
    nb = np.zeros(n + 1, dtype=np.int64)
    cdef i64[::1] C = colors
    cdef i64[::1] Fb = forbidden
    cdef i64[::1] CC = ccol
    cdef i64[::1] CN = ccnt
    cdef i64[::1] BD = bad
    cdef i64[::1] NC = nc
    cdef i64[::1] NB = nb
    for q in range(n):
        v = order[q]
        for k in range(p[v], p[v + 1]):
            w = ix[k]
            if w == v or C[w] < 0:
                continue
            cw = C[w]
            Fb[cw] = v                                  # distance 1
            for h in range(p[w], p[w] + NB[w]):         # v-w-x-y
                Fb[BD[h]] = v
            pos = _find(&CC[0], p[v], NC[v], cw)
            if CN[pos] >= 2:                            # a-v-w-x
                for h in range(p[w], p[w] + NC[w]):
                    Fb[CC[h]] = v
        c = 0
        while Fb[c] == v:
            c += 1
        C[v] = c
        # v's color next to each neighbor x; v-x-(another of color c(x)) makes c(x)...
        for k in range(p[v], p[v + 1]):
            x = ix[k]
            if x == v:
                continue
            pos = _find(&CC[0], p[x], NC[x], c)
            if pos < 0:
                pos = p[x] + NC[x]
                CC[pos] = c
                CN[pos] = 0
                NC[x] += 1
            CN[pos] += 1
            if C[x] < 0 or CN[pos] < 2:
                continue
            # x is colored and has two or more neighbors of color c: each of them gets
            # c(x) as a bad color: v, and at the second one the first (found once)
            if CN[pos] == 2:
                for h in range(p[x], p[x + 1]):
                    w = ix[h]
                    if w != x and w != v and C[w] == c:
                        _add_color(&BD[0], &NB[0], p[w], w, C[x])
            _add_color(&BD[0], &NB[0], p[v], v, C[x])
        # and the colors that already occur twice next to v make c bad for their owners
        for k in range(p[v], p[v + 1]):
            w = ix[k]
            if w == v or C[w] < 0:
                continue
            pos = _find(&CC[0], p[v], NC[v], C[w])
            if CN[pos] >= 2:
                _add_color(&BD[0], &NB[0], p[w], w, c)
    return colors


def star_sources(const i64[::1] p, const i32[::1] ix, const i64[::1] colors, i64 ncolors):
    """For each entry (i, j) of the symmetric pattern, the flat index r·ncolors + c of
    the compressed product B = H S (S[k, colors[k]] = 1) that holds H[i, j] alone:
    (i, c(j)) when j is the only neighbor of i of its color, else (j, c(i)); a star
    coloring guarantees one of them (direct recovery, no substitution)."""
    cdef i64 n = p.shape[0] - 1, i, k, kj, j, c
    src = np.empty(ix.shape[0], dtype=np.int64)
    cnt = np.zeros(ncolors + 1, dtype=np.int64)
    cdef i64[::1] S = src
    cdef i64[::1] Ct = cnt
    # cnt2[k]: how many neighbors of j have the color of i, for entry k = (i, j)
    for i in range(n):
        for k in range(p[i], p[i + 1]):
            j = ix[k]
            if j != i:
                Ct[colors[j]] += 1
        for k in range(p[i], p[i + 1]):
            j = ix[k]
            if j == i or Ct[colors[j]] == 1:
                S[k] = i * ncolors + colors[j]
            else:
                S[k] = -1
        for k in range(p[i], p[i + 1]):
            j = ix[k]
            if j != i:
                Ct[colors[j]] -= 1
    for i in range(n):
        for k in range(p[i], p[i + 1]):
            if S[k] >= 0:
                continue
            j = ix[k]
            # (j, c(i)) holds H[j, i] = H[i, j] alone if i is j's only neighbor colored c(i)
            c = 0
            for kj in range(p[j], p[j + 1]):
                if ix[kj] != j and colors[ix[kj]] == colors[i]:
                    c += 1
            if c != 1:
                raise ValueError(f"star_sources: the coloring is not a star coloring "
                                 f"(entry ({i}, {j}))")
            S[k] = j * ncolors + colors[i]
    return src
