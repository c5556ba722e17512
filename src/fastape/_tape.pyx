# cython: language_level=3
"""The compiled Wengert tape: storage (a struct of arrays) and the sweeps: forward
(values), tangent (forward-mode derivatives) and reverse (adjoints).

Storage is described in ``_tape.pxd``; appending a node is amortised O(1) and
creates no Python object. Node values are computed when the node is recorded,
by the same ``forward_node`` the forward sweep runs, so recording and replay
cannot disagree. The sweeps never touch a Python object and run without the
GIL; every check happens when a node is recorded, and every buffer a sweep uses
(values, adjoints, scratch) exists before it starts.

Two layouts share one tape. While every node is a scalar (the scalar layout),
node i's value is ``val[i]`` and the sweeps run a specialised scalar loop. The
first array or structural node switches the tape to the general layout
(``off``/``poff``), where node i's value occupies ``val[off[i] : off[i] + size]``
and its parameters (a typed struct per op) start at ``P[poff[i]]``.

This module is assembled from one file per job:

    _elementwise.pxi   the op table applied over arrays and over runs of nodes
    _structural.pxi    indexing, broadcasting, reductions, where, concatenate
    _linalg.pxi        BLAS/LAPACK ops: matmul, LU, solve, det, norm
    _dispatch.pxi      (generated from registry.py) structural op -> its kernels
    _var.pxi           Var and the recording functions

Vocabulary, used everywhere: values ``val``/``z``; adjoints ``adj``/``λ``/``lam``
(the Lagrange multipliers: λ_j = ∂output/∂z_j); ``partials`` d0, d1 (first) and
d00, d01, d11 (second); ``parents`` a, b; ``x_bar``/``y_bar`` the parents'
adjoints being accumulated; tangents ``tan``/``ż`` (ż_j = Σ_k ∂z_j/∂z_k ż_k over the
seeded leaves k), ``T`` one direction's tangent arena.
"""
cimport cython
from cpython.mem cimport PyMem_Realloc, PyMem_Free
from cpython.float cimport PyFloat_Check, PyFloat_AS_DOUBLE
from cpython.long cimport PyLong_Check
from cpython.complex cimport PyComplex_Check
from libc.string cimport memcmp, memcpy, memset
from libc.math cimport NAN

# every opcode, the op table and the per-op facts (all generated from registry.py),
# so that the kernels of a new op need no import line here
from fastape._ops cimport *  # noqa

import importlib

import numpy as np
from fastape import registry as _registry
from fastape._ops import Op as PyOp
from fastape.errors import ShapeError, TapeError

cdef tuple SCALAR = ()
# numpy/scipy ufunc -> opcode of its registry op, filled by fastape._numpy: the fast
# path of Var.__array_ufunc__
cdef dict UFUNC_OPS = {}


def ufunc_ops():
    """The (mutable) table of ufuncs Var.__array_ufunc__ records directly."""
    return UFUNC_OPS


cdef i64 MAX_NODES = 2147483646


# ---------------------------------------------------------------------------
# growable buffers
# ---------------------------------------------------------------------------

cdef i64 MAX_BYTES = 1 << 62          # any larger request overflows size arithmetic


cdef void* _resize(void* p, i64 count, size_t item) except? NULL:
    cdef void* q
    if count < 0 or count > MAX_BYTES // <i64>item:
        raise MemoryError(f"fastape: a tape buffer of {count} items of {item} bytes is too "
                          "large to allocate")
    q = PyMem_Realloc(p, <size_t>(count if count > 0 else 1) * item)
    if q == NULL and _arena_bytes > 0:
        _arena_clear()          # memory pressure: the pooled arenas go first
        q = PyMem_Realloc(p, <size_t>(count if count > 0 else 1) * item)
    if q == NULL:
        raise MemoryError(f"fastape: cannot allocate {count * item} bytes for the tape")
    return q


cdef void* _shrunk(void* p, i64 count, size_t item) noexcept:
    """p trimmed to `count` items, or p itself when the allocator cannot (a realloc
    that shrinks may still move and fail): trimming is an economy, never an error."""
    cdef void* q = PyMem_Realloc(p, <size_t>(count if count > 0 else 1) * item)
    return q if q != NULL else p


cdef void* _dup(const void* p, i64 nbytes) except? NULL:
    cdef void* q = _resize(NULL, nbytes if nbytes > 0 else 1, 1)
    if nbytes > 0:
        memcpy(q, p, nbytes)
    return q


# ---------------------------------------------------------------------------
# the arena pool: value, adjoint and tangent arenas of released tapes, kept for the
# next tape (an eager transform records a fresh tape on every call; reusing its
# arenas spares it the page faults of fresh memory and the copies of growing)
# ---------------------------------------------------------------------------

cdef enum:
    ARENA_SLOTS = 6
cdef double* _arena_ptr[ARENA_SLOTS]
cdef i64 _arena_len[ARENA_SLOTS]          # capacity in doubles (0: slot empty)
cdef bint _arena_values[ARENA_SLOTS]      # it held a tape's values (else multipliers...)
cdef i64 _arena_bytes = 0
cdef i64 _arena_limit = 256 << 20       # bytes the pool may hold (arena_pool(limit))


cdef i64 _default_arena_limit():
    """1/16 of the machine's memory, between 256 MiB and 2 GiB: the arenas of one
    eager gradient over arrays of 10^6 elements take ~250 MB."""
    import os
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return 256 << 20
    return min(max(ram // 16, 256 << 20), 2 << 30)


_arena_limit = _default_arena_limit()
cdef i64 ARENA_MIN = 512                # doubles (4 KiB): smaller arenas come cheap from malloc
cdef i64 BIG_CONSTANT = 4096            # values: a large constant (Tape.big_constant)
# The pool is touched only with the GIL held (recording, prepare_*, release), so it
# needs no lock: the GIL makes it one pool per interpreter, safe across threads.


cdef double* _arena_take(i64 need, i64* cap, i64 most, bint values) noexcept:
    """The smallest pooled arena of `need` to `most` doubles that held what this one
    will (`values`: a tape's values; else multipliers or tangents), else of any kind,
    removed from the pool (its capacity in cap[0]); NULL when there is none. Keeping
    the kinds apart matters: values that took the multipliers' arena of the last
    call would outgrow it and grow into fresh memory every call."""
    global _arena_bytes
    cdef int s, best = -1, pass_
    cdef double* q
    if need < ARENA_MIN:
        return NULL
    for pass_ in range(2):
        for s in range(ARENA_SLOTS):
            if (need <= _arena_len[s] <= most and (pass_ or _arena_values[s] == values)
                    and (best < 0 or _arena_len[s] < _arena_len[best])):
                best = s
        if best >= 0:
            break
    if best < 0:
        return NULL
    q = _arena_ptr[best]
    cap[0] = _arena_len[best]
    _arena_bytes -= _arena_len[best] * 8
    _arena_ptr[best] = NULL
    _arena_len[best] = 0
    return q


cdef void _arena_drop(int s) noexcept:
    global _arena_bytes
    PyMem_Free(_arena_ptr[s])
    _arena_bytes -= _arena_len[s] * 8
    _arena_ptr[s] = NULL
    _arena_len[s] = 0


cdef void _arena_give(double* p, i64 cap, bint values) noexcept:
    """Keep arena p of `cap` doubles for a later tape, or free it: the pool keeps the
    largest arenas that fit its limit, evicting smaller ones."""
    global _arena_bytes
    cdef int s, small
    if p == NULL:
        return
    if cap < ARENA_MIN or cap * 8 > _arena_limit:
        PyMem_Free(p)
        return
    while True:
        small = -1
        for s in range(ARENA_SLOTS):
            if _arena_len[s] == 0:
                small = s
                break
            if small < 0 or _arena_len[s] < _arena_len[small]:
                small = s
        if _arena_len[small] == 0 and _arena_bytes + cap * 8 <= _arena_limit:
            _arena_ptr[small] = p
            _arena_len[small] = cap
            _arena_values[small] = values
            _arena_bytes += cap * 8
            return
        if _arena_len[small] == 0 or _arena_len[small] >= cap:
            # the pool is full of arenas at least as large: p is the one to let go
            PyMem_Free(p)
            return
        _arena_drop(small)


cdef void _arena_clear() noexcept:
    cdef int s
    for s in range(ARENA_SLOTS):
        if _arena_len[s]:
            _arena_drop(s)


cdef double* _arena(double* old, i64* cap, i64 keep, i64 need, bint growing) except? NULL:
    """An arena of at least `need` doubles holding the first `keep` doubles of `old`
    (of capacity cap[0], which it replaces: pooled or freed), from the pool when it
    has one, else grown from `old` by realloc (which leaves `old` as it was if it
    fails). The new capacity goes to cap[0]. A `growing` arena (the values while
    recording: their final size is unknown) takes any larger pooled arena and gives
    back what it does not use when the tape closes; the others (sized once) take
    one of at most twice `need`."""
    cdef i64 got
    cdef double* q = _arena_take(need, &got, MAX_BYTES if growing else 2 * need, growing)
    if q == NULL:
        q = <double*>_resize(old, need, sizeof(double))
        cap[0] = need
        return q
    if keep > 0:
        memcpy(q, old, keep * sizeof(double))
    _arena_give(old, cap[0], growing)
    cap[0] = got
    return q


def arena_pool(limit=None):
    """The pool of value and multiplier arenas kept from released tapes.

    An eager transform (``grad``, ``value_and_grad``, ``jvp``, ...) records a fresh
    tape on every call; the pool hands the arenas of the last one to the next, so
    repeated calls neither fault in fresh memory nor copy arenas as they grow. It
    holds at most ``limit`` bytes (by default 1/16 of the machine's memory, from 256 MiB
    to 2 GiB) in at most 6 arenas and is
    emptied when an allocation fails. ``arena_pool(limit=n)`` sets the limit (0
    empties and disables it). Returns ``{"bytes", "arenas", "limit"}`` after the
    change.
    """
    global _arena_limit
    cdef int s
    if limit is not None:
        if type(limit) is bool or not isinstance(limit, (int, np.integer)) or limit < 0:
            raise TypeError(f"arena_pool: limit must be a non-negative integer (bytes), "
                            f"got {limit!r}")
        _arena_limit = min(int(limit), MAX_BYTES)
        for s in range(ARENA_SLOTS):
            if _arena_len[s] and (_arena_len[s] * 8 > _arena_limit
                                  or _arena_bytes > _arena_limit):
                _arena_drop(s)
    return {"bytes": int(_arena_bytes),
            "arenas": sum(1 for s in range(ARENA_SLOTS) if _arena_len[s]),
            "limit": int(_arena_limit)}


cdef inline bint _same_bits(double x, double y) noexcept nogil:
    """x and y are the same float64, bit for bit (0.0 is not -0.0)."""
    return memcmp(&x, &y, sizeof(double)) == 0


cdef inline i64 _grown(i64 cap, i64 need) except -1:
    """The capacity, doubled from `cap`, that holds `need` items (no overflow)."""
    cdef i64 c = cap if cap > 0 else 256
    if need > MAX_BYTES:
        raise MemoryError(f"fastape: {need} items are too many for a tape buffer")
    while c < need:
        c *= 2
    return c


cdef inline void _widen(i32* span, i32 lo, i32 hi) noexcept nogil:
    """span (lo, hi pair; lo >= hi: empty) := the smallest range holding it and lo..hi-1."""
    if lo >= hi:
        return
    if span[0] >= span[1]:
        span[0] = lo
        span[1] = hi
        return
    if lo < span[0]:
        span[0] = lo
    if hi > span[1]:
        span[1] = hi


cdef inline const double* _operand_b(Tape t, i64 i, int o, i64* sx, i64* sy) noexcept nogil:
    """For elementwise node i (general layout): its second operand, the immediate in the
    pool for the *_K ops or parent b's values, and whether each operand is an array
    (sx, sy = 1) or a broadcast scalar (0), as the array kernels take them."""
    sx[0] = t.size_of(t.a[i]) != 1
    if has_k(o):
        sy[0] = 0
        return t.pool + t.b[i]
    sy[0] = t.size_of(t.b[i]) != 1
    return t.val + t.off[t.b[i]]


cdef inline void _hvp_parent(double* lpar, i32* apar, const double* li, i32 l0, i32 l1,
                             double d, const double* tx, const i32* sx, double cx,
                             const double* ty, const i32* sy, double cy) noexcept nogil:
    """One parent's share of a node's λ̇ in the vector-mode forward-over-reverse sweep:
    λ̇_parent[k] += λ̇[k] d + cx ẋ[k] + cy ẏ[k] (d the node's partial in this parent, cx
    and cy the multiplier times its second partials, ẋ, ẏ the parents' tangents), each
    term zero where a factor is, over the union of the supports of the nonzero terms,
    which widens the parent's λ̇ support apar."""
    cdef i32 sp[2]
    cdef i32 k
    cdef double e, x, y
    sp[0] = sp[1] = 0
    if d != 0.0:
        _widen(sp, l0, l1)
    if cx != 0.0:
        _widen(sp, sx[0], sx[1])
    if cy != 0.0:
        _widen(sp, sy[0], sy[1])
    for k in range(sp[0], sp[1]):
        e = li[k]
        x = tx[k]
        y = ty[k]
        lpar[k] += ((e * d if e != 0.0 and d != 0.0 else 0.0)
                    + (cx * x if x != 0.0 and cx != 0.0 else 0.0)
                    + (cy * y if y != 0.0 and cy != 0.0 else 0.0))
    _widen(apar, sp[0], sp[1])


cdef inline void _leaf_span(const double* x, i64 p, i32* span) noexcept nogil:
    """The range of x[0..p-1] outside which every entry is zero."""
    cdef i64 lo = 0, hi = p
    while lo < p and x[lo] == 0.0:
        lo += 1
    while hi > lo and x[hi - 1] == 0.0:
        hi -= 1
    span[0] = <i32>lo
    span[1] = <i32>hi


cdef bint _all_zero(const double* x, i64 n) noexcept nogil:
    # blocks of 16 without an exit inside, so that the compare loop vectorises (an exit
    # in the loop keeps GCC scalar): the tangent kernels scan whole arrays with it
    cdef i64 j = 0, q
    cdef int nz
    while j + 16 <= n:
        nz = 0
        for q in range(16):
            nz |= x[j + q] != 0.0
        if nz:
            return False
        j += 16
    while j < n:
        if x[j] != 0.0:
            return False
        j += 1
    return True


include "_elementwise.pxi"
include "_structural.pxi"
include "_linalg.pxi"
include "_callback.pxi"
include "_dispatch.pxi"
include "_format_check.pxi"     # loading a file (fastape._format)


# ---------------------------------------------------------------------------
# the tape
# ---------------------------------------------------------------------------

@cython.final
cdef class Tape:
    """A Wengert tape. Use as a context manager; record inputs with :meth:`var`.

    Every operation on a :class:`Var` of the tape appends one node. After the
    ``with`` block the tape is closed: it can still be differentiated
    (:meth:`gradient`, :meth:`adjoint`) but records nothing more.

    >>> import fastape as ft
    >>> with ft.Tape() as t:
    ...     x = t.var(0.5)
    ...     y = ft.sin(x) * x
    >>> round(t.gradient(y, x), 6)   # cos(x)·x + sin(x)
    0.918217
    """

    def __cinit__(self):
        self.n = 0
        self.cap = 0
        self.nval = 0
        self.val_cap = 0
        self.adj_cap = 0
        self.tan_cap = self.ntan = self.tld = self.tswept = 0
        self.tan_adj_cap = self.ntan_adj = self.tspan_cap = self.aspan_cap = 0
        self.npool = 0
        self.pool_cap = 0
        self.nP = 0
        self.P_cap = 0
        self.work_len = 0
        self.clr = NULL
        self.nclr = 0
        self.clr_n = -1
        self.lean_constants = False
        self.seed = -1
        self.swept = 0
        self.blk_base = self.blk_n = 0
        self.blk_touched = self.blk_lazy = False
        self.on_compare = None
        self.pyobjs = None
        self.pyres = None
        self.py_error = None
        self._closed = False
        self._released = False
        self._busy = False
        self._deferred = None

    def __dealloc__(self):
        self._free()

    cdef void _free(self) noexcept:
        PyMem_Free(self.op)
        PyMem_Free(self.a)
        PyMem_Free(self.b)
        _arena_give(self.val, self.val_cap, True)
        _arena_give(self.adj, self.adj_cap, False)
        _arena_give(self.tan, self.tan_cap, False)
        PyMem_Free(self.tan_adj)
        PyMem_Free(self.tspan)
        PyMem_Free(self.aspan)
        PyMem_Free(self.pool)
        PyMem_Free(self.off)
        PyMem_Free(self.poff)
        PyMem_Free(self.P)
        PyMem_Free(self.work)
        PyMem_Free(self.clr)
        self.clr = NULL
        self.nclr = 0
        self.clr_n = -1
        self.op = NULL
        self.a = NULL
        self.b = NULL
        self.val = NULL
        self.adj = NULL
        self.tan = NULL
        self.tan_adj = NULL
        self.tspan = NULL
        self.aspan = NULL
        self.pool = NULL
        self.off = NULL
        self.poff = NULL
        self.P = NULL
        self.work = NULL
        self.n = self.cap = self.nval = self.val_cap = self.adj_cap = 0
        self.tan_cap = self.ntan = self.tld = self.tswept = 0
        self.tan_adj_cap = self.ntan_adj = self.tspan_cap = self.aspan_cap = 0
        self.npool = self.pool_cap = self.nP = self.P_cap = self.work_len = 0
        self.blk_base = self.blk_n = 0
        self.blk_lazy = False

    # -- context manager and life cycle ---------------------------------------

    def __enter__(self):
        self._check()
        return self

    def __exit__(self, *exc):
        if not self._released:
            self.close()
        return False

    cdef int close(self) except -1:
        """Record nothing more; trim the buffers to their length."""
        self._materialize_block()
        self._closed = True
        self.shrink_to_fit()
        return 0

    def release(self):
        """Free the tape's memory. Any later use of it or its values raises TapeError."""
        if self._busy:
            raise TapeError("Tape.release: the tape is being swept by another thread")
        self._free()
        self._closed = True
        self._released = True
        self._deferred = None

    cdef int _check(self) except -1:
        if self._released and self._deferred is not None:
            # a deferred load (fastape._format._Deferred): it reads, validates and adopts
            # the records, or raises TapeFormatError, now and at every later use
            self._deferred(self)
            self._deferred = None
        if self._released:
            raise TapeError("this tape was released: its memory is freed "
                            "(values of a grad() call cannot be used after it returns)")
        return 0

    cdef int raise_pending(self) except -1:
        """Raise (once) the exception a Python rule raised during the last sweep."""
        e = self.py_error
        if e is not None:
            self.py_error = None
            raise e
        return 0

    cdef int _enter_sweep(self) except -1:
        """A Tape is single-threaded: a sweep runs without the GIL, so another thread
        recording into the tape (which may move its buffers) or sweeping it at the same
        time would corrupt it. Checked with the GIL held, so no atomics are needed."""
        if self._busy:
            raise TapeError("this tape is being swept by another thread: a Tape is "
                            "single-threaded (compiled functions may be called from "
                            "several threads; each call works on its own copy)")
        self._materialize_block()
        self._busy = True
        return 0

    cdef int _materialize_block(self) except -1:
        """Write the element nodes of a lazy element block (see _var_elements): INPUT
        nodes blk_base+1 .. blk_base+blk_n, whose values are in place already."""
        cdef i64 base = self.blk_base, m = self.blk_n
        if not self.blk_lazy:
            return 0
        if base + 1 + m > self.cap:
            self._grow_nodes(base + 1 + m)
        memset(self.op + base + 1, INPUT, m)
        memset(self.a + base + 1, 0xFF, m * sizeof(i32))       # every parent -1
        memset(self.b + base + 1, 0xFF, m * sizeof(i32))
        self.n = base + 1 + m
        self.blk_lazy = False
        return 0

    cdef int _check_open(self) except -1:
        if self._busy:
            raise TapeError("this tape is being swept by another thread: a Tape is "
                            "single-threaded; record on a tape of this thread's own")
        if self._closed:
            self._check()
            raise TapeError("this tape is closed (its with-block has ended): "
                            "record operations inside the block")
        return 0

    def shrink_to_fit(self):
        """Trim every buffer to its length (done automatically when the ``with`` block ends)."""
        self._check()
        cdef i64 n = self.n if self.n > 0 else 1
        self.op = <uint8_t*>_shrunk(self.op, n, sizeof(uint8_t))
        self.a = <i32*>_shrunk(self.a, n, sizeof(i32))
        self.b = <i32*>_shrunk(self.b, n, sizeof(i32))
        if self.off != NULL:
            self.off = <i64*>_shrunk(self.off, n, sizeof(i64))
            self.poff = <i64*>_shrunk(self.poff, n, sizeof(i64))
            self.P = <i64*>_shrunk(self.P, self.nP, sizeof(i64))
            self.P_cap = self.nP
        self.cap = n
        self.trim_values()
        self.pool = <double*>_shrunk(self.pool, self.npool, sizeof(double))
        self.pool_cap = self.npool

    cdef int trim_values(self) except -1:
        """The value arena trimmed to its length (the eager transforms trim it before
        the multipliers are allocated, so that the growth's spare capacity is not held
        beside them)."""
        cdef double* q
        if self.val_cap >= ARENA_MIN and self.val_cap > 2 * self.nval:
            # a pooled arena much larger than this tape: back to the pool, for the
            # tape it was kept for, and the values to a buffer of their size
            q = <double*>_resize(NULL, self.nval, sizeof(double))
            memcpy(q, self.val, self.nval * sizeof(double))
            _arena_give(self.val, self.val_cap, True)
            self.val = q
        else:
            self.val = <double*>_shrunk(self.val, self.nval, sizeof(double))
        self.val_cap = self.nval
        return 0

    @property
    def nbytes(self):
        """Bytes held by the tape's buffers (node records, values, adjoints, tangents,
        the adjoints' tangents, immediates, parameters, scratch)."""
        cdef i64 per_node = sizeof(uint8_t) + 2 * sizeof(i32)
        if self.off != NULL:
            per_node += 2 * sizeof(i64)
        return int(self.cap * per_node + (self.val_cap + self.adj_cap + self.tan_cap
                                          + self.tan_adj_cap + self.pool_cap + self.P_cap
                                          + self.work_len) * 8
                   + (self.tspan_cap + self.aspan_cap) * sizeof(i32))

    @property
    def scalar_layout(self):
        """True while every node is a scalar (the tape runs the specialised scalar loop)."""
        return self.off == NULL

    @property
    def closed(self):
        """True once the ``with`` block has ended (or the tape was released)."""
        return self._closed

    @property
    def released(self):
        """True once the tape's memory was released (not while a deferred load waits
        for its first use)."""
        return self._released and self._deferred is None

    def __len__(self):
        return int(self.n)

    def export(self):
        """Copies of the tape's arrays, for tools and benchmarks: a dict with ``op``
        (uint8), ``a``, ``b`` (int32), ``val`` and ``pool`` (float64), and, for the
        general layout, ``off`` and ``poff`` (int64, node offsets into ``val`` and
        into the parameter arena) and ``P`` (int64, the parameter arena)."""
        self._check()
        cdef i64 n = self.n
        out = {"op": self.opcodes(),
               "a": np.asarray(<i32[:n]>self.a).copy() if n else np.empty(0, np.int32),
               "b": np.asarray(<i32[:n]>self.b).copy() if n else np.empty(0, np.int32),
               "val": np.asarray(<double[:self.nval]>self.val).copy()
               if self.nval else np.empty(0),
               "pool": np.asarray(<double[:self.npool]>self.pool).copy()
               if self.npool else np.empty(0)}
        if self.off != NULL:
            out["off"] = np.asarray(<i64[:n]>self.off).copy()
            out["poff"] = np.asarray(<i64[:n]>self.poff).copy()
            out["P"] = (np.asarray(<i64[:self.nP]>self.P).copy() if self.nP
                        else np.empty(0, np.int64))
        return out

    def opcodes(self):
        """The opcode of every node, in tape order (a new uint8 array)."""
        self._check()
        out = np.empty(self.n, dtype=np.uint8)
        cdef unsigned char[::1] dst = out
        if self.n:
            memcpy(&dst[0], self.op, self.n)
        return out

    # -- recording primitives --------------------------------------------------

    cdef int _grow_nodes(self, i64 need) except -1:
        cdef i64 c = _grown(self.cap, need)
        if need > MAX_NODES:
            raise MemoryError(f"fastape: a tape holds at most 2**31 - 2 nodes (this one "
                              f"has {self.n}, {self.nbytes} bytes)")
        try:
            # each buffer keeps its contents if the next one cannot grow (cap unchanged)
            self.op = <uint8_t*>_resize(self.op, c, sizeof(uint8_t))
            self.a = <i32*>_resize(self.a, c, sizeof(i32))
            self.b = <i32*>_resize(self.b, c, sizeof(i32))
            if self.off != NULL:
                self.off = <i64*>_resize(self.off, c, sizeof(i64))
                self.poff = <i64*>_resize(self.poff, c, sizeof(i64))
            elif c > self.val_cap:
                self.val = _arena(self.val, &self.val_cap, self.nval, c, True)
        except MemoryError:
            raise MemoryError(f"fastape: out of memory growing a tape of {self.n} nodes "
                              f"({self.nbytes} bytes held) to {c} nodes") from None
        self.cap = c
        return 0

    cdef int _to_general_layout(self) except -1:
        """Switch to the general layout: node i keeps its value at val[off[i]] = val[i]."""
        cdef i64 i, base = self.blk_base
        if self.off != NULL:
            return 0
        if self.blk_n and not self.blk_touched and \
                (self.blk_lazy or base + 1 + self.blk_n == self.n):
            # no element was taken and nothing recorded after them: the block folds
            # into its head, one array node (its values stay where they are); a lazy
            # block's element nodes were never written
            self.n = base + 1
            self.blk_lazy = False
        self.off = <i64*>_resize(NULL, self.cap, sizeof(i64))
        self.poff = <i64*>_resize(NULL, self.cap, sizeof(i64))
        for i in range(self.n):
            self.off[i] = i
            self.poff[i] = -1
        if self.blk_n:
            # the head becomes an array node over its elements' slots
            self.off[base] = base + 1
            if self.P_cap < 1:
                self.P = <i64*>_resize(self.P, 256, sizeof(i64))
                self.P_cap = 256
            self.poff[base] = self.nP
            self.P[self.nP] = self.blk_n
            self.nP += 1
            if self.n == base + 1:
                self.blk_n = 0              # folded: its elements are no nodes
        return 0

    cdef i64 pool_add(self, double k) except -1:
        """Store the immediate k; returns its index in the pool. One of the last 8
        immediates with the same bits is shared (a loop records the same few
        constants over and over; nothing writes a pool entry after it is made)."""
        cdef i64 j
        self._check_open()
        for j in range(self.npool - 1, max(self.npool - 8, 0) - 1, -1):
            if _same_bits(self.pool[j], k):
                return j
        if self.npool == self.pool_cap:
            self.pool_cap = _grown(self.pool_cap, self.npool + 1)
            self.pool = <double*>_resize(self.pool, self.pool_cap, sizeof(double))
        self.pool[self.npool] = k
        self.npool += 1
        return self.npool - 1

    cdef int need_work(self, i64 ndoubles) except -1:
        """Make the sweeps' scratch buffer hold at least `ndoubles` doubles (called by
        the recorders of the ops that need scratch, so that no sweep allocates)."""
        if ndoubles > self.work_len:
            self.work = <double*>_resize(self.work, ndoubles, sizeof(double))
            self.work_len = ndoubles
        return 0

    cdef i64 push(self, int o, i64 x, i64 y, i64 size, i64 nparams) except -1:
        """Append node (o, x, y) with `size` values and a parameter struct of `nparams`
        i64 fields (the first, the size, is filled here; the caller fills the rest,
        then calls forward_node). Returns its id."""
        cdef i64 i, m
        self._check_open()
        if self.off == NULL and (size != 1 or nparams > 0):
            self._to_general_layout()       # may fold an element block: n changes
        elif self.blk_lazy:
            self._materialize_block()       # a scalar node goes after the elements
        i = self.n
        if i == self.cap:
            self._grow_nodes(i + 1)
        self.op[i] = o
        self.a[i] = <i32>x
        self.b[i] = <i32>y
        if self.off == NULL:
            self.nval = i + 1
        else:
            if self.nval + size > self.val_cap:
                self.val = _arena(self.val, &self.val_cap, self.nval,
                                  _grown(self.val_cap, self.nval + size), True)
            self.off[i] = self.nval
            self.nval += size
            if nparams > 0:
                if self.nP + nparams > self.P_cap:
                    self.P_cap = _grown(self.P_cap, self.nP + nparams)
                    self.P = <i64*>_resize(self.P, self.P_cap, sizeof(i64))
                m = self.nP
                self.poff[i] = m
                self.P[m] = size
                self.nP += nparams
            else:
                self.poff[i] = -1
        self.n = i + 1
        return i

    cdef i64 _rec1(self, int o, i64 x, double k) except -1:
        """Record unary op o on scalar node x (k: the immediate of a *_K op) and compute it."""
        cdef i64 y = self.pool_add(k) if has_k(o) else x
        cdef i64 i = self.push(o, x, y, 1, 0)
        self.forward_node(i)
        return i

    cdef i64 _rec2(self, int o, i64 x, i64 y) except -1:
        """Record binary op o on scalar nodes x, y and compute it."""
        cdef i64 i = self.push(o, x, y, 1, 0)
        self.forward_node(i)
        return i

    cdef i64 size_of(self, i64 i) noexcept nogil:
        if self.off == NULL or self.poff[i] < 0:
            return 1
        return self.P[self.poff[i]]

    cdef double* value_ptr(self, i64 i) noexcept nogil:
        return self.val + (i if self.off == NULL else self.off[i])

    cdef double* adjoint_ptr(self, i64 i) noexcept nogil:
        return self.adj + (i if self.off == NULL else self.off[i])

    cdef double* tangent_ptr(self, i64 i, i64 k) noexcept nogil:
        """Node i's tangent in direction k (layouts: _tape.pxd); a general-layout node's
        elements follow contiguously."""
        if self.tld == 0:
            return self.tan + i * self.ntan + k
        return self.tan + k * self.tld + self.off[i]

    cdef i64* params(self, i64 i) noexcept nogil:
        return self.P + self.poff[i]

    cdef i64 nparams_of(self, i64 i) noexcept nogil:
        """Number of parameter fields of node i (structs are appended in node order)."""
        cdef i64 j
        if self.off == NULL or self.poff[i] < 0:
            return 0
        for j in range(i + 1, self.n):
            if self.poff[j] >= 0:
                return self.poff[j] - self.poff[i]
        return self.nP - self.poff[i]

    # -- surgery, for compiled replay --------------------------------------------

    cdef Tape clone(self):
        """An independent copy of a closed tape: its own value, adjoint and scratch
        buffers, the records copied."""
        cdef Tape t = Tape()
        t.lean_constants = self.lean_constants
        t.op = <uint8_t*>_dup(self.op, self.n)
        t.a = <i32*>_dup(self.a, self.n * sizeof(i32))
        t.b = <i32*>_dup(self.b, self.n * sizeof(i32))
        t.n = t.cap = self.n
        t.val = _arena(NULL, &t.val_cap, 0, self.nval, False)
        if self.nval:
            memcpy(t.val, self.val, self.nval * sizeof(double))
        t.nval = self.nval
        t.pool = <double*>_dup(self.pool, self.npool * sizeof(double))
        t.npool = t.pool_cap = self.npool
        if self.off != NULL:
            t.off = <i64*>_dup(self.off, self.n * sizeof(i64))
            t.poff = <i64*>_dup(self.poff, self.n * sizeof(i64))
            t.P = <i64*>_dup(self.P, self.nP * sizeof(i64))
            t.nP = t.P_cap = self.nP
        t.need_work(self.work_len)
        if self.pyobjs is not None:         # the rules are shared, residuals per copy
            t.pyobjs = self.pyobjs
            t.pyres = [None] * len(self.pyobjs)
        t._closed = True
        t.prepare_adjoints()
        return t

    cdef i64 copy_node(self, Tape src, i64 i, const i64* remap) except -1:
        """Append a copy of node i of `src` whose node ids (parents and node-id
        parameters) are mapped through `remap`; leaves keep their values, other nodes
        are computed from their (already copied) parents. Returns the new id."""
        cdef int o = src.op[i]
        cdef i64 np_ = src.nparams_of(i), j, q, pos
        cdef i64 a = remap[src.a[i]] if src.a[i] >= 0 else -1
        cdef i64 b = src.b[i]
        cdef i64* P
        if b_kind(o) == B_NODE and b >= 0:
            b = remap[b]
        elif b_kind(o) == B_POOL:
            b = self.pool_add(src.pool[b])
        j = self.push(o, a, b, src.size_of(i), np_)
        if np_:
            P = self.params(j)
            memcpy(P, src.params(i), np_ * sizeof(i64))
            for q in range(node_param_count(o, P)):
                pos = node_param_pos(o, P, q)
                P[pos] = remap[P[pos]]
            if o == CALLBACK:               # its rule object moves to this tape's list
                if self.pyobjs is None:
                    self.pyobjs = []
                    self.pyres = []
                self.pyobjs.append(src.pyobjs[P[1]])
                self.pyres.append(src.pyres[P[1]])
                P[1] = len(self.pyobjs) - 1
        if is_leaf(o):
            memcpy(self.value_ptr(j), src.value_ptr(i), src.size_of(i) * sizeof(double))
        else:
            self.forward_node(j)
        return j

    # -- the sweeps ------------------------------------------------------------

    cdef void forward_node(self, i64 i) noexcept nogil:
        """Compute node i's value from its parents' values."""
        cdef int o = self.op[i]
        cdef i64 sx, sy
        cdef double d0, d1
        cdef const double* y
        if is_leaf(o):
            return
        if self.off == NULL:        # scalar layout
            self.val[i] = value_and_partials(
                o, self.val[self.a[i]],
                (self.pool if has_k(o) else self.val)[self.b[i]], &d0, &d1, NULL)
            return
        if is_elementwise(o):
            y = _operand_b(self, i, o, &sx, &sy)
            elementwise_forward(o, self.val + self.off[self.a[i]], sx, y, sy,
                                self.val + self.off[i], self.size_of(i))
            return
        structural_forward(self, i, o)

    cdef void reverse_node(self, i64 i) noexcept nogil:
        """Add node i's adjoints, times its local partials, into its parents' adjoints
        (general layout). A node whose adjoints are all zero contributes nothing, even
        through infinite or NaN partials: the convention of every op, kept here."""
        cdef int o = self.op[i]
        cdef i64 sx, sy, n
        cdef const double* y
        cdef const double* lam
        if is_leaf(o):
            return
        lam = self.adj + self.off[i]
        n = self.size_of(i)
        if is_elementwise(o):
            # the array loops skip zero adjoints element by element
            y = _operand_b(self, i, o, &sx, &sy)
            elementwise_reverse(o, self.val + self.off[self.a[i]], sx, y, sy,
                                self.val + self.off[i], lam, self.adj + self.off[self.a[i]],
                                self.adj + self.off[self.b[i]] if is_binary(o) else NULL, n)
            return
        if _all_zero(lam, n):
            return
        structural_reverse(self, i, o)

    cdef void tangent_node(self, i64 i, i64 p) noexcept nogil:
        """Node i's tangents in the p directions from its parents' (general layout):
        elementwise ops by one array kernel (partials once, all directions),
        structural ops by their tangent kernel, once per direction."""
        cdef int o = self.op[i]
        cdef i64 sx, sy, k, ld = self.tld
        cdef const double* y
        if is_leaf(o):
            return
        if is_elementwise(o):
            y = _operand_b(self, i, o, &sx, &sy)
            elementwise_tangent(o, self.val + self.off[self.a[i]], sx, y, sy,
                                self.val + self.off[i], self.tan + self.off[self.a[i]],
                                self.tan + self.off[self.b[i]] if is_binary(o) else NULL,
                                self.tan + self.off[i], self.size_of(i), p, ld)
            return
        if o == MATMUL and p > 1:   # vector mode: its checks once, a gemm over directions
            matmul_tangents(self, i, p, ld)
            return
        for k in range(p):
            structural_tangent(self, i, o, self.tan + k * ld)

    cdef void tangent_sweep(self, i64 lo, i64 hi, i64 p) noexcept nogil:
        """ż_i = Σ_parents ∂f_i/∂z_j ż_j for nodes lo..hi-1 in tape order, in the p
        directions the arena was prepared for (prepare_tangents); the leaves keep
        the tangents the caller wrote. A zero tangent contributes nothing, even
        through an infinite or NaN partial (the convention of the reverse sweep)."""
        cdef i64 i, k
        cdef int o
        cdef double d0, d1, s, w
        cdef const double* v = self.val
        cdef double* T = self.tan
        cdef const double* ta
        cdef const double* tb
        cdef double* tz
        cdef const uint8_t* op = self.op
        cdef const i32* pa = self.a
        cdef const i32* pb = self.b
        cdef const double* pool = self.pool
        cdef i32* S = self.tspan
        cdef i32 n0, n1, o0, o1
        cdef i32 sp[2]
        if self.off != NULL:
            for i in range(lo, hi):
                self.tangent_node(i, p)
            return
        # scalar layout: the partials from the stored value (as the reverse sweep), then
        # the node's contiguous block of p tangents
        if p == 1:
            # a plain sum, redone without the zero terms only when it is NaN: selects
            # would lengthen a chain's critical path (see _run_loop_tan)
            for i in range(lo, hi):
                o = op[i]
                if o > CONSTANT:
                    value_and_partials(o, v[pa[i]], (pool if has_k(o) else v)[pb[i]],
                                       &d0, &d1, v + i)
                    w = T[pa[i]]
                    s = d0 * w
                    if is_binary(o):
                        s = s + d1 * T[pb[i]]
                    if s != s:
                        s = d0 * w if w != 0.0 else 0.0
                        if is_binary(o):
                            w = T[pb[i]]
                            s = s + (d1 * w if w != 0.0 else 0.0)
                    T[i] = s
            return
        # p directions: each node's k-loop over the support of its parents' tangents
        # (tspan: outside it both are zero, so is the node's), the rest of its old support
        # zeroed; the same numbers as a loop over all p
        for i in range(lo, hi):
            o = op[i]
            tz = T + i * p
            if o <= CONSTANT:       # the seeds the caller wrote
                _leaf_span(tz, p, S + 2 * i)
                continue
            sp[0] = S[2 * pa[i]]
            sp[1] = S[2 * pa[i] + 1]
            if is_binary(o):
                _widen(sp, S[2 * pb[i]], S[2 * pb[i] + 1])
            n0 = sp[0]
            n1 = sp[1]
            o0 = S[2 * i]
            o1 = S[2 * i + 1]
            if o0 < o1:             # what the last sweep left outside the new support
                if n0 >= n1:
                    memset(tz + o0, 0, (o1 - o0) * sizeof(double))
                else:
                    if o0 < n0:
                        memset(tz + o0, 0, (min(o1, n0) - o0) * sizeof(double))
                    if o1 > n1:
                        o0 = max(o0, n1)
                        memset(tz + o0, 0, (o1 - o0) * sizeof(double))
            S[2 * i] = n0
            S[2 * i + 1] = n1
            if n0 >= n1:
                continue
            value_and_partials(o, v[pa[i]], (pool if has_k(o) else v)[pb[i]],
                               &d0, &d1, v + i)
            ta = T + pa[i] * p
            if is_binary(o):
                tb = T + pb[i] * p
                for k in range(n0, n1):
                    tz[k] = ((d0 * ta[k] if ta[k] != 0.0 else 0.0)
                             + (d1 * tb[k] if tb[k] != 0.0 else 0.0))
            else:
                for k in range(n0, n1):
                    tz[k] = d0 * ta[k] if ta[k] != 0.0 else 0.0

    cdef int prepare_tangents(self, i64 p, bint keep) except -1:
        """A tangent arena for p directions in the tape's current layout, zeroed; with
        `keep`, one already prepared for the same p and layout is left as it is (a
        compiled replay overwrites every seeded leaf, and a sweep every non-leaf, so
        the other leaves' zeros persist). If the allocation fails, the old arena (and
        the tangents of the last sweep) stay as they were."""
        cdef i64 ld = 0 if self.off == NULL else self.nval
        if p < 1 or self.nval > MAX_BYTES // 8 // p:
            raise MemoryError(f"fastape: {p} tangent directions of {self.nval} values are "
                              "too many to allocate")
        if keep and self.ntan == p and self.tld == ld and self.tan_cap >= p * self.nval:
            return 0
        if ld == 0 and p > 1 and self.tspan_cap < 2 * self.nval:
            self.tspan = <i32*>_resize(self.tspan, 2 * self.nval, sizeof(i32))
            self.tspan_cap = 2 * self.nval
        if self.tan_cap < p * self.nval:
            self.tan = _arena(self.tan, &self.tan_cap, 0, p * self.nval, False)
        memset(self.tan, 0, p * self.nval * sizeof(double))
        if ld == 0 and p > 1:       # all zero: every support empty
            memset(self.tspan, 0, 2 * self.nval * sizeof(i32))
        self.ntan = p
        self.tld = ld
        self.tswept = 0
        return 0

    cdef int prepare_adjoint_tangents(self, i64 p) except -1:
        """An arena for the adjoints' tangents λ̇ in p directions (scalar layout,
        node-major as the tangents). One already prepared for p is left as it is: the
        forward-over-reverse sweeps zero every non-leaf λ̇ they pass on, so the caller
        only clears the leaves'. Otherwise it is zeroed; if the allocation fails, the old
        arena stays as it was."""
        cdef double* fresh
        if p < 1 or self.nval > MAX_BYTES // 8 // p:
            raise MemoryError(f"fastape: {p} adjoint tangent directions of {self.nval} "
                              "values are too many to allocate")
        if p > 1 and self.aspan_cap < 2 * self.nval:
            self.aspan = <i32*>_resize(self.aspan, 2 * self.nval, sizeof(i32))
            self.aspan_cap = 2 * self.nval
        if self.ntan_adj == p and self.tan_adj_cap >= p * self.nval:
            return 0
        if self.tan_adj_cap < p * self.nval:
            fresh = <double*>_resize(NULL, p * self.nval, sizeof(double))
            PyMem_Free(self.tan_adj)
            self.tan_adj = fresh
            self.tan_adj_cap = p * self.nval
        memset(self.tan_adj, 0, p * self.nval * sizeof(double))
        self.ntan_adj = p
        return 0

    cdef void hvp_sweep(self, i64 top, i64 p) noexcept nogil:
        """Forward over reverse (scalar layout), nodes top down to 0: with node i's
        partials d0, d1 and second partials d00, d01, d11 at its parents a, b,
            λ_a += λ_i d0,   λ̇_a[k] += λ̇_i[k] d0 + λ_i (d00 ż_a[k] + d01 ż_b[k]),
            λ_b += λ_i d1,   λ̇_b[k] += λ̇_i[k] d1 + λ_i (d01 ż_a[k] + d11 ż_b[k]),
        for the p directions of the tangents ż of the last tangent sweep, λ seeded by
        the caller, and λ̇ too, at node top only, in the arena of
        prepare_adjoint_tangents(p) (zero elsewhere). Zero conventions:
        a node whose λ and λ̇ are all zero is skipped; λ follows the reverse sweep's (a
        zero λ contributes nothing); in λ̇ a term with a zero factor (λ, λ̇_k, ż_k, a
        partial) contributes nothing even through an infinite or NaN other factor (the
        recorded gradient has no such term when the partial is a constant 0). Every
        non-leaf λ and λ̇ is zeroed once passed on (as the grouped reverse sweep does), so
        only the leaves' need clearing before the next sweep."""
        cdef i64 i, ia, ib
        cdef int o
        cdef double d0, d1, d00, d01, d11, w, g, gd, c00, c01, c11, e, x, y
        cdef const double* v = self.val
        cdef double* lam = self.adj
        cdef const double* T = self.tan
        cdef double* L = self.tan_adj
        cdef const double* ta
        cdef const double* tb
        cdef double* li
        cdef const uint8_t* op = self.op
        cdef const i32* pa = self.a
        cdef const i32* pb = self.b
        cdef const double* pool = self.pool
        cdef const i32* S = self.tspan
        cdef i32* A = self.aspan
        cdef i32 l0, l1
        i = top
        if p == 1:
            while i >= 0:
                o = op[i]
                w = lam[i]
                e = L[i]
                if o > CONSTANT:
                    lam[i] = 0.0
                    L[i] = 0.0
                    if w != 0.0 or e != 0.0:
                        value_and_second_partials(o, v[pa[i]], (pool if has_k(o) else v)[pb[i]],
                                                  &d0, &d1, &d00, &d01, &d11, v + i)
                        ia = pa[i]
                        x = T[ia]
                        y = T[pb[i]] if is_binary(o) else 0.0
                        _hvp_share(is_binary(o), w, e, d0, d00, d01, x, y, &g, &gd)
                        lam[ia] += g
                        L[ia] += gd
                        if is_binary(o):
                            ib = pb[i]
                            _hvp_share(True, w, e, d1, d01, d11, x, y, &g, &gd)
                            lam[ib] += g
                            L[ib] += gd
                i -= 1
            return
        # p directions: the partials once a node, then loops over k that vectorise: the
        # zero conventions as selects, each coefficient (λ d00, ...) formed once a node
        # and 0 when a factor is zero (its condition is loop-invariant). Each loop runs
        # over the support of its nonzero terms only (tspan for ż, aspan for λ̇: outside
        # them the terms are zero), which widens the parent's λ̇ support.
        memset(A, 0, 2 * (top + 1) * sizeof(i32))
        if top >= 0:
            _leaf_span(L + top * p, p, A + 2 * top)
        while i >= 0:
            o = op[i]
            w = lam[i]
            li = L + i * p
            l0 = A[2 * i]
            l1 = A[2 * i + 1]
            if o > CONSTANT and (w != 0.0 or (l0 < l1 and not _all_zero(li + l0, l1 - l0))):
                value_and_second_partials(o, v[pa[i]], (pool if has_k(o) else v)[pb[i]],
                                          &d0, &d1, &d00, &d01, &d11, v + i)
                c00 = w * d00 if w != 0.0 and d00 != 0.0 else 0.0
                c01 = w * d01 if w != 0.0 and d01 != 0.0 else 0.0
                c11 = w * d11 if w != 0.0 and d11 != 0.0 else 0.0
                ia = pa[i]
                ta = T + ia * p
                if w != 0.0:
                    lam[ia] += w * d0
                if is_binary(o):
                    ib = pb[i]
                    if w != 0.0:
                        lam[ib] += w * d1
                    tb = T + ib * p
                    _hvp_parent(L + ia * p, A + 2 * ia, li, l0, l1, d0,
                                ta, S + 2 * ia, c00, tb, S + 2 * ib, c01)
                    _hvp_parent(L + ib * p, A + 2 * ib, li, l0, l1, d1,
                                ta, S + 2 * ia, c01, tb, S + 2 * ib, c11)
                else:               # no second parent: its coefficient is 0
                    _hvp_parent(L + ia * p, A + 2 * ia, li, l0, l1, d0,
                                ta, S + 2 * ia, c00, ta, S + 2 * ia, 0.0)
            if o > CONSTANT:
                lam[i] = 0.0
                if l0 < l1:
                    memset(li + l0, 0, (l1 - l0) * sizeof(double))
                A[2 * i] = A[2 * i + 1] = 0
            i -= 1

    cdef void forward_sweep(self, i64 lo, i64 hi) noexcept nogil:
        """Recompute the values of nodes lo..hi-1 in tape order."""
        cdef i64 i
        cdef int o
        cdef double d0, d1
        cdef double* v = self.val
        # locals, not self->…: a libm call in another branch could otherwise make the
        # compiler reload them for every node
        cdef const uint8_t* op = self.op
        cdef const i32* pa = self.a
        cdef const i32* pb = self.b
        cdef const double* pool = self.pool
        if self.off == NULL:
            for i in range(lo, hi):
                o = op[i]
                if o > CONSTANT:
                    v[i] = value_and_partials(o, v[pa[i]], (pool if has_k(o) else v)[pb[i]],
                                              &d0, &d1, NULL)
        else:
            for i in range(lo, hi):
                self.forward_node(i)

    cdef void reverse_sweep(self, i64 top) noexcept nogil:
        """λ_j += Σ_children λ_i ∂f_i/∂z_j for i = top down to 0 (λ seeded by the caller)."""
        cdef i64 i
        cdef int o
        cdef double d0, d1, w
        cdef double* v = self.val
        cdef double* lam = self.adj
        cdef const uint8_t* op = self.op
        cdef const i32* pa = self.a
        cdef const i32* pb = self.b
        cdef const double* pool = self.pool
        if self.off == NULL:
            # the partials are recomputed from the values (the op table is inlined):
            # measured as fast as storing them in the forward sweep, at 20 fewer bytes
            # a node
            i = top
            while i >= 0:
                w = lam[i]
                o = op[i]
                if w != 0.0 and o > CONSTANT:
                    value_and_partials(o, v[pa[i]], (pool if has_k(o) else v)[pb[i]],
                                       &d0, &d1, v + i)
                    lam[pa[i]] += d0 * w
                    if is_binary(o):
                        lam[pb[i]] += d1 * w
                i -= 1
        else:
            i = top
            while i >= 0:
                self.reverse_node(i)
                i -= 1

    cdef int prepare_adjoints(self) except -1:
        """Zeroed adjoint arena of the value arena's layout (but for large constants'
        slots, see clear_adjoints). If the allocation fails, the old arena (and the
        adjoints of the last sweep) stay as they were."""
        self.alloc_adjoints()
        self._plan_clear()
        self.clear_adjoints()
        return 0

    cdef bint big_constant(self, i64 i) noexcept nogil:
        """Is node i a constant of at least BIG_CONSTANT values (general layout) of a
        tape with lean_constants? Its multipliers are left out of a clear: no sweep
        reads a constant's multipliers (a leaf passes nothing on), so what the sweeps
        add there is never looked at."""
        return (self.lean_constants and self.off != NULL and self.op[i] == CONSTANT and
                self.size_of(i) >= BIG_CONSTANT)

    cdef int _plan_clear(self) except -1:
        """The ranges of the adjoint arena a clear zeroes: all of it but the slots of
        large constants (a 2,000 x 2,000 matrix of data is 32 MB zeroed for nothing on
        every sweep). No plan (clear everything) when there is no such constant or the
        slots are not in node order."""
        cdef i64 i, k = 0, at = 0, lo, hi, big = 0
        if self.clr_n == self.n:
            return 0
        PyMem_Free(self.clr)
        self.clr = NULL
        self.nclr = 0
        self.clr_n = self.n
        if self.off == NULL:
            return 0
        for i in range(self.n):
            big += self.big_constant(i)
        if big == 0:
            return 0
        self.clr = <i64*>_resize(NULL, 2 * (big + 1), sizeof(i64))
        for i in range(self.n):
            if not self.big_constant(i):
                continue
            lo = self.off[i]
            hi = lo + self.size_of(i)
            if lo < at:                 # slots out of order: clear everything
                PyMem_Free(self.clr)
                self.clr = NULL
                return 0
            self.clr[2 * k] = at
            self.clr[2 * k + 1] = lo - at
            k += 1
            at = hi
        self.clr[2 * k] = at
        self.clr[2 * k + 1] = -1        # to the end of the arena (nval at the clear)
        self.nclr = k + 1
        return 0

    cdef int alloc_adjoints(self) except -1:
        """An adjoint arena of the value arena's layout, not zeroed (for a sweep that
        zeroes what it reads itself: the fused runs' Fusion.clear)."""
        if self.adj_cap < self.nval:
            self.adj = _arena(self.adj, &self.adj_cap, 0, self.nval, False)
        return 0

    cdef void clear_adjoints(self) noexcept nogil:
        """Zero the (allocated) adjoint arena before seeding a reverse sweep: by the clear
        plan when it is the tape's (large constants' slots left as they are), else all
        of it."""
        cdef i64 q, start, m
        if self.clr == NULL or self.clr_n != self.n:
            memset(self.adj, 0, self.nval * sizeof(double))
            return
        for q in range(self.nclr):
            start = self.clr[2 * q]
            m = self.clr[2 * q + 1]
            if m < 0:
                m = self.nval - start
            if m > 0:
                memset(self.adj + start, 0, m * sizeof(double))

    # -- Python-facing methods -------------------------------------------------

    def var(self, value):
        """Record an input: a real number or an array of them (copied, never aliased)."""
        return _leaf(self, INPUT, value, "Tape.var", "value")

    def _var_elements(self, value):
        """Record an array input as an element block: one scalar INPUT node per element
        (contiguous, in the scalar layout) under a head node that stands for the
        array, so that ``x[i]`` is an element's node and records nothing, and a tape
        that only indexes its input keeps the scalar layout. The first whole-array
        op on a block no element was taken from folds it back into one array node.
        One block per tape (a second array is an ordinary input), on a tape still in
        the scalar layout, else this is :meth:`var`. For the eager transforms, whose
        tapes are never pruned, compiled or saved."""
        arr = _as_array(value, "Tape.var", "value")
        cdef i64 m = arr.size, base = self.n
        cdef const double[::1] src
        if (self.off != NULL or self.blk_n or arr.ndim == 0 or m < 2
                or base + 1 + m > MAX_NODES):
            return _leaf(self, INPUT, arr, "Tape.var", "value")
        self._check_open()
        # the head and the values now; the element nodes when the first is taken (a
        # whole-array op first folds the head: an array argument of whole-array code
        # costs no node per element)
        if base + 1 > self.cap:
            self._grow_nodes(base + 1)
        if base + 1 + m > self.val_cap:
            self.val = _arena(self.val, &self.val_cap, self.nval, base + 1 + m, True)
        self.op[base] = INPUT
        self.a[base] = -1
        self.b[base] = -1
        src = arr.reshape(-1)
        self.val[base] = 0.0
        memcpy(self.val + base + 1, &src[0], m * sizeof(double))
        self.n = base + 1
        self.nval = base + 1 + m
        self.blk_base = base
        self.blk_n = m
        self.blk_touched = False
        self.blk_lazy = True
        return _new(self, base, arr.shape, m)

    def constant(self, value):
        """Record a constant (a leaf that receives no multiplier of interest)."""
        return _leaf(self, CONSTANT, value, "Tape.constant", "value")

    def gradient(self, output, inputs):
        """∂output/∂inputs by one reverse sweep.

        ``output`` must be a scalar value of this tape; ``inputs`` a value or a
        (nested) list/tuple of them. Returns floats for scalar inputs and arrays
        of the input's shape, in the structure of ``inputs``."""
        self.backward(output)
        return _map_structure(inputs, self._adjoint_of, "Tape.gradient")

    def backward(self, output, cotangent=None):
        """Run the reverse sweep seeded with λ_output = 1 (a scalar output), or with
        λ_output = cotangent (an array of the output's shape: a vector-Jacobian
        product); read the multipliers with adjoint()."""
        self._check()
        cdef Var out = _own(self, output, "Tape.gradient", "output")
        cdef const double[::1] ct
        if cotangent is None:
            if out.size != 1:
                raise ShapeError(f"Tape.gradient: the output must be a scalar, got shape "
                                 f"{out.shape}; sum it first, or pass a cotangent of its "
                                 "shape to Tape.backward(output, cotangent)")
        else:
            c = _as_array(cotangent, "Tape.backward", "cotangent")
            if c.shape != out.shape:
                raise ShapeError(f"Tape.backward: the cotangent has shape {c.shape}, the "
                                 f"output has shape {out.shape}")
            ct = c.reshape(-1)
        self._enter_sweep()
        try:
            self.prepare_adjoints()
            if cotangent is None:
                self.adjoint_ptr(out.node)[0] = 1.0
            elif out.size:
                memcpy(self.adjoint_ptr(out.node), &ct[0], out.size * sizeof(double))
            with nogil:
                self.reverse_sweep(out.node)
        finally:
            self._busy = False
        self.raise_pending()
        self.seed = out.node
        self.swept = self.n

    def adjoint(self, v):
        """The multiplier λ_v = ∂output/∂v of the last :meth:`gradient` call, for any
        recorded value v (inputs, constants and intermediates alike). On a tape whose
        ``lean_constants`` is set (the tapes fastape's transforms and compiled functions
        record on, which read only their inputs' multipliers) constants keep none
        (large ones are not even cleared), and asking for one raises TapeError."""
        return self._adjoint_of(v)

    def _adjoint_of(self, v):
        self._check()
        cdef Var x = _own(self, v, "Tape.adjoint", "v")
        if self.seed < 0:
            raise TapeError("Tape.adjoint: no gradient has been computed on this tape yet")
        if self.lean_constants and self.op[x.node] == CONSTANT:
            raise TapeError("Tape.adjoint: this value is a constant of a lean_constants "
                            "tape, whose constants keep no multipliers: record it with "
                            "Tape.var to differentiate with respect to it")
        if x.node >= self.swept:
            raise TapeError(f"Tape.adjoint: this value (node {x.node}) was recorded after the "
                            "last gradient(); call gradient() again to get its adjoint")
        return _read(self, self.adj, x)

    def forward_tangents(self, inputs, tangents, p=None):
        """Run the tangent sweep (forward mode) seeded with these leaves' tangents; read
        the tangent of any recorded value with :meth:`tangent`.

        ``inputs`` is a list of leaves of this tape (made by :meth:`var` or
        :meth:`constant`), ``tangents`` a list of as many real numbers or arrays:
        with ``p=None`` each of its input's shape (one direction), with an int
        ``p >= 1`` each of shape ``(p,) + input.shape`` (vector mode: p directions in
        one sweep, the partials computed once). Every other leaf's tangent is 0.
        Nothing changes when an argument is refused.

        >>> import fastape as ft
        >>> with ft.Tape() as t:
        ...     x = t.var(2.0)
        ...     y = t.var(3.0)
        ...     z = x * y + ft.sin(x)
        >>> t.forward_tangents([x], [1.0])
        >>> round(t.tangent(z), 6)        # ∂z/∂x = y + cos(x)
        2.583853
        >>> t.forward_tangents([x, y], [[1.0, 0.0], [0.0, 1.0]], p=2)
        >>> t.tangent(z).round(6)         # the gradient, one direction per row
        array([2.583853, 2.      ])
        """
        self._check()
        cdef str op = "Tape.forward_tangents"
        cdef Var v
        cdef i64 q, k, size, pp
        cdef const double[::1] src
        if p is not None and (type(p) is bool or not isinstance(p, (int, np.integer))
                              or p < 1):
            raise TypeError(f"{op}: p must be None or an integer >= 1, got {p!r}")
        if not isinstance(inputs, (list, tuple)):
            raise TypeError(f"{op}: argument 'inputs' must be a list of fastape values, "
                            f"got {type(inputs).__name__}")
        if not isinstance(tangents, (list, tuple)):
            raise TypeError(f"{op}: argument 'tangents' must be a list of numbers or "
                            f"arrays, got {type(tangents).__name__}")
        if len(inputs) != len(tangents):
            raise ShapeError(f"{op}: {len(inputs)} inputs but {len(tangents)} tangents")
        pp = 1 if p is None else int(p)
        nodes = []
        seeds = []
        seeds_constant = False
        for q in range(len(inputs)):
            v = _own(self, inputs[q], op, f"inputs[{q}]")
            if not is_leaf(self.op[v.node]):
                raise TypeError(f"{op}: argument 'inputs[{q}]' (node {v.node}) is not a leaf: "
                                "seed inputs or constants (Tape.var, Tape.constant), not "
                                "the results of operations")
            arr = _as_array(tangents[q], op, f"tangents[{q}]")
            want = v.shape if p is None else (pp,) + v.shape
            if arr.shape != want:
                raise ShapeError(f"{op}: tangents[{q}] has shape {arr.shape}, input {q} "
                                 f"needs {want}" + ("" if p is None else
                                                    f" (p = {pp} directions, then the "
                                                    f"input's shape {v.shape})"))
            nodes.append(v)
            seeds.append(np.ascontiguousarray(arr).reshape(pp, v.size))
            seeds_constant |= self.op[v.node] == CONSTANT
        self._enter_sweep()
        try:
            self.prepare_tangents(pp, False)      # may raise; then nothing has changed
            self._tconst = seeds_constant
            for q in range(len(nodes)):
                v = nodes[q]
                size = v.size
                for k in range(pp):
                    if size:
                        src = seeds[q][k]
                        memcpy(self.tangent_ptr(v.node, k), &src[0], size * sizeof(double))
            with nogil:
                self.tangent_sweep(0, self.n, pp)
        finally:
            self._busy = False
        self.raise_pending()
        self.tswept = self.n
        self._tvector = p is not None
        self._tconst = seeds_constant

    def tangent(self, v):
        """The tangent ż_v of the last :meth:`forward_tangents` sweep, for any recorded
        value v: a float or an array of v's shape, or in vector mode an array of shape
        ``(p,) + v.shape`` (direction k first)."""
        self._check()
        cdef Var x = _own(self, v, "Tape.tangent", "v")
        cdef i64 k, p = self.ntan
        cdef double[:, ::1] dst
        if self.tswept == 0:
            raise TapeError("Tape.tangent: no tangent sweep has run on this tape yet "
                            "(call forward_tangents first)")
        if x.node >= self.tswept:
            raise TapeError(f"Tape.tangent: this value (node {x.node}) was recorded after "
                            "the last forward_tangents(); call it again to get its tangent")
        if not self._tvector:       # one direction: read like a value (tangent_ptr(i, 0))
            return read_slot(self, self.tan, x.node, x.shape)
        out = np.empty((p, x.size))
        dst = out
        if x.size:
            for k in range(p):
                memcpy(&dst[k, 0], self.tangent_ptr(x.node, k), x.size * sizeof(double))
        return out.reshape((p,) + x.shape)

    def forward(self):
        """Recompute every value from the inputs (the forward sweep); for replay and timing."""
        self._check()
        self._enter_sweep()
        try:
            with nogil:
                self.forward_sweep(0, self.n)
        finally:
            self._busy = False
        self.raise_pending()

    # -- persistence (fastape._format: the file layout and its validation) -------

    def _buffers(self):
        """Views (no copy) of the tape's record buffers, for writing a file: valid while
        the tape is neither released nor recorded into. The keys are those of
        :meth:`export`."""
        self._check()
        cdef i64 n = self.n
        out = {"op": np.asarray(<uint8_t[:n]>self.op) if n else np.empty(0, np.uint8),
               "a": np.asarray(<i32[:n]>self.a) if n else np.empty(0, np.int32),
               "b": np.asarray(<i32[:n]>self.b) if n else np.empty(0, np.int32),
               "val": np.asarray(<double[:self.nval]>self.val)
               if self.nval else np.empty(0),
               "pool": np.asarray(<double[:self.npool]>self.pool)
               if self.npool else np.empty(0)}
        if self.off != NULL:
            out["off"] = np.asarray(<i64[:n]>self.off) if n else np.empty(0, np.int64)
            out["poff"] = np.asarray(<i64[:n]>self.poff) if n else np.empty(0, np.int64)
            out["P"] = (np.asarray(<i64[:self.nP]>self.P) if self.nP
                        else np.empty(0, np.int64))
        return out

    @staticmethod
    def _from_buffers(dict arrays, i64 work_len, list rules):
        """A closed tape holding copies of these arrays (the keys of :meth:`export`),
        `work_len` doubles of scratch and the CALLBACK nodes' rule objects. The caller
        (fastape._format) has validated every field: nothing is checked here."""
        cdef Tape t = Tape()
        cdef const uint8_t[::1] op = arrays["op"]
        cdef const i32[::1] a = arrays["a"]
        cdef const i32[::1] b = arrays["b"]
        cdef const double[::1] val = arrays["val"]
        cdef const double[::1] pool = arrays["pool"]
        cdef const i64[::1] off, poff, P
        cdef i64 n = op.shape[0]
        try:
            t.op = <uint8_t*>_resize(NULL, n, sizeof(uint8_t))
            t.a = <i32*>_resize(NULL, n, sizeof(i32))
            t.b = <i32*>_resize(NULL, n, sizeof(i32))
            t.val = <double*>_resize(NULL, val.shape[0], sizeof(double))
            t.pool = <double*>_resize(NULL, pool.shape[0], sizeof(double))
            t.n = t.cap = n
            t.nval = t.val_cap = val.shape[0]
            t.npool = t.pool_cap = pool.shape[0]
            if n:
                memcpy(t.op, &op[0], n * sizeof(uint8_t))
                memcpy(t.a, &a[0], n * sizeof(i32))
                memcpy(t.b, &b[0], n * sizeof(i32))
            if t.nval:
                memcpy(t.val, &val[0], t.nval * sizeof(double))
            if t.npool:
                memcpy(t.pool, &pool[0], t.npool * sizeof(double))
            if "off" in arrays:
                off = arrays["off"]
                poff = arrays["poff"]
                P = arrays["P"]
                t.off = <i64*>_resize(NULL, n, sizeof(i64))
                t.poff = <i64*>_resize(NULL, n, sizeof(i64))
                t.P = <i64*>_resize(NULL, P.shape[0], sizeof(i64))
                t.nP = t.P_cap = P.shape[0]
                if n:
                    memcpy(t.off, &off[0], n * sizeof(i64))
                    memcpy(t.poff, &poff[0], n * sizeof(i64))
                if t.nP:
                    memcpy(t.P, &P[0], t.nP * sizeof(i64))
            t.need_work(work_len)
        except MemoryError as e:
            t._free()
            raise MemoryError(f"fastape: cannot load a tape of {n} nodes and "
                              f"{val.shape[0]} values ({e})") from None
        if rules:
            t.pyobjs = list(rules)
            t.pyres = [None] * len(rules)
        t._closed = True
        return t

    @staticmethod
    def _allocated(i64 n, i64 nval, i64 npool, i64 nP, bint general):
        """(tape, views): a tape whose record buffers have these lengths and are NOT
        initialised, and writable views of them (the keys of :meth:`export`), for a
        file to be read straight into them. The tape is unusable (released) until
        :meth:`_adopt`, which the caller (fastape._format) calls only once the views'
        contents are validated."""
        cdef Tape t = Tape()
        try:
            t.op = <uint8_t*>_resize(NULL, n, sizeof(uint8_t))
            t.a = <i32*>_resize(NULL, n, sizeof(i32))
            t.b = <i32*>_resize(NULL, n, sizeof(i32))
            t.val = <double*>_resize(NULL, nval, sizeof(double))
            t.pool = <double*>_resize(NULL, npool, sizeof(double))
            if general:
                t.off = <i64*>_resize(NULL, n, sizeof(i64))
                t.poff = <i64*>_resize(NULL, n, sizeof(i64))
                t.P = <i64*>_resize(NULL, nP, sizeof(i64))
        except MemoryError as e:
            t._free()
            raise MemoryError(f"fastape: cannot load a tape of {n} nodes and {nval} "
                              f"values ({e})") from None
        t.n = t.cap = n
        t.nval = t.val_cap = nval
        t.npool = t.pool_cap = npool
        if general:
            t.nP = t.P_cap = nP
        views = t._buffers()
        t._closed = True
        t._released = True
        return t, views

    def _defer(self, load):
        """A tape of :meth:`_allocated` loads at first use: any use first calls
        `load(tape)`, which reads and validates the records and calls :meth:`_adopt`
        (fastape._format, load with mmap=True)."""
        if not self._released or self.op == NULL:
            raise TapeError("Tape._defer: not a tape made by Tape._allocated")
        self._deferred = load

    def _adopt(self, i64 work_len, list rules):
        """Make a tape of :meth:`_allocated` usable, its records validated."""
        if not self._released or self.op == NULL:      # (release() frees the records)
            raise TapeError("Tape._adopt: not a tape made by Tape._allocated")
        self.need_work(work_len)
        if rules:
            self.pyobjs = list(rules)
            self.pyres = [None] * len(rules)
        self._released = False

    def save(self, path):
        """Write the tape to ``path`` in fastape's file format (a ``.npz`` of plain
        arrays, no pickle inside; see :func:`fastape.load`). The values of its last
        sweep are saved; adjoints and tangents are not. A tape with custom-rule
        (CALLBACK) nodes says so in the file: loading it needs the rules supplied."""
        from fastape import _format
        _format.save_tape(self, path)

    @staticmethod
    def load(path, callbacks=None, mmap=False):
        """The tape saved in ``path`` (by :meth:`save`), validated before it is
        returned (:class:`fastape.TapeFormatError` names the first bad field). The
        loaded tape is closed; ``callbacks`` supplies the rule objects of its CALLBACK
        nodes (see :func:`fastape.load`). ``mmap=True`` loads in O(1): the records are
        read and validated at the tape's first use (see ``fastape._format``)."""
        from fastape import _format
        return _format.load_tape(path, callbacks=callbacks, mmap=mmap)

    def node(self, i64 i, shape=None):
        """The value of node ``i`` as a :class:`Var` of this tape, viewed with ``shape``
        (by default ``()`` for one value, ``(size,)`` otherwise: a tape keeps sizes,
        not shapes); for reading a loaded tape."""
        self._check()
        if i < 0 or i >= self.n:
            raise IndexError(f"Tape.node: node {i} is out of range for a tape of "
                             f"{self.n} nodes")
        size = self.size_of(i)
        return node_var(self, i, (() if size == 1 else (size,)) if shape is None
                        else tuple(shape))

    def __reduce__(self):
        from fastape import _format
        return _format.tape_reduce(self)


include "_var.pxi"
