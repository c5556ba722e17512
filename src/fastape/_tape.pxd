# cython: language_level=3
from libc.stdint cimport int32_t, int64_t, uint8_t

ctypedef int64_t i64
ctypedef int32_t i32


cdef class Tape:
    # node records (struct of arrays, capacity `cap`, length `n`)
    cdef i64 n, cap
    cdef uint8_t* op          # opcode of node i
    cdef i32* a               # first parent (-1: none)
    cdef i32* b               # second parent, or pool index of an immediate (b_kind)
    # value arena; in the scalar layout node i's value is val[i]
    cdef double* val
    cdef i64 nval, val_cap
    # adjoints λ (the Lagrange multipliers), same layout as val (allocated by the
    # first reverse sweep)
    cdef double* adj
    cdef i64 adj_cap
    # the clear plan (see Tape._plan_clear): nclr (start, length) ranges of the adjoint
    # arena that a clear zeroes, valid while the tape has clr_n nodes; the ranges leave
    # out the slots of large constants, whose multipliers no sweep reads
    cdef i64* clr
    cdef i64 nclr
    cdef i64 clr_n
    # set by the owners of tapes whose constants' multipliers nobody reads (compiled
    # traces, the eager transforms, the implicit solvers' tapes of F): only then does
    # a clear leave large constants out, and Tape.adjoint refuses them
    cdef public bint lean_constants
    # tangents ż (forward mode) of p = ntan directions, allocated by the first tangent
    # sweep (a clone has none). Two layouts, fixed when the arena is prepared:
    #   scalar layout (tld == 0): node-major, node i direction k at tan[i*p + k], so the
    #     scalar loop reads each node's p directions as one contiguous block;
    #   general layout (tld == nval when prepared): direction-major, direction k is a
    #     whole arena of the value layout, node j's tangent at tan + k*tld + off[j].
    # tangent_ptr(i, k) hides the difference. tswept: the nodes the last sweep covers.
    cdef double* tan
    cdef i64 tan_cap, ntan, tld, tswept
    cdef bint _tvector        # the last sweep was in vector mode (p given)
    # the last sweep seeded a CONSTANT leaf (only forward_tangents can): else every
    # constant's tangents are zero, and the tangent kernels need not scan them
    cdef bint _tconst
    # tangents λ̇ of the adjoints (forward over reverse, scalar layout only), p = ntan_adj
    # directions node-major like tan: node i direction k at tan_adj[i*p + k]. Allocated
    # by prepare_adjoint_tangents (a clone has none).
    cdef double* tan_adj
    cdef i64 tan_adj_cap, ntan_adj
    # supports in vector mode (scalar layout, p > 1): directions lo <= k < hi of node i
    # may be nonzero, every other is zero in its arena (lo >= hi: none), with
    # lo, hi = span[2i], span[2i+1]. tspan describes tan between sweeps (kept with it);
    # aspan describes tan_adj during a forward-over-reverse sweep. With identity seeds
    # (a Hessian) most nodes reach a few inputs, so the k-loops run over a few
    # directions instead of p.
    cdef i32* tspan
    cdef i32* aspan
    cdef i64 tspan_cap, aspan_cap
    # immediates of the *_K ops and GATHER1 indices
    cdef double* pool
    cdef i64 npool, pool_cap
    # general layout, NULL until the first array or structural node is recorded
    cdef i64* off             # node i's value starts at val[off[i]]
    cdef i64* poff            # node i's parameter struct starts at P[poff[i]] (-1: none)
    cdef i64* P               # parameter arena: the first field of a struct is the size
    cdef i64 nP, P_cap
    # scratch memory of the sweeps (LU pivots, adjoint solves), sized when nodes are
    # recorded so that no sweep allocates
    cdef double* work
    cdef i64 work_len
    # state: closed once the with-block ends (records nothing more); released once
    # its memory is freed (unusable)
    cdef bint _closed, _released
    cdef object _deferred     # load(..., mmap=True): reads and validates at first use
    cdef bint _busy           # a sweep without the GIL is running on it
    cdef public i64 seed      # output node of the last reverse sweep (-1: none)
    cdef i64 swept            # nodes the last reverse sweep's adjoint arena covers
    cdef public object on_compare  # None, or called with (Cmp, x node, y node, result)
    # CALLBACK nodes (_callback.pxi): their rule objects, the residuals of their last
    # forward call (None until the first one), and an exception a rule raised in a sweep
    # an element block (Tape._var_elements): an array input recorded as blk_n scalar
    # INPUT nodes blk_base+1 .. blk_base+blk_n (its head node blk_base holds no value
    # of its own; in the general layout its slot is theirs), so that x[i] is a node
    # already; blk_touched once an element was taken. blk_n == 0: none.
    cdef i64 blk_base, blk_n
    cdef bint blk_touched
    # blk_lazy: the block's values are in place (val[blk_base+1 ..]) but its element
    # nodes are not yet written: nothing is recorded after the head until the first
    # element is taken (or a scalar node pushed, a sweep, close), which writes them, or
    # a whole-array op folds the head (Tape._materialize_block, _to_general_layout)
    cdef bint blk_lazy
    cdef public list pyobjs
    cdef public list pyres
    cdef public object py_error

    cdef void _free(self) noexcept
    cdef int _grow_nodes(self, i64 need) except -1
    cdef i64 _rec1(self, int o, i64 x, double k) except -1
    cdef i64 _rec2(self, int o, i64 x, i64 y) except -1
    cdef i64 push(self, int o, i64 x, i64 y, i64 size, i64 nparams) except -1
    cdef i64 pool_add(self, double k) except -1
    cdef int need_work(self, i64 ndoubles) except -1
    cdef int _to_general_layout(self) except -1
    cdef int _check(self) except -1
    cdef int _check_open(self) except -1
    cdef int _enter_sweep(self) except -1
    cdef int _materialize_block(self) except -1
    cdef int raise_pending(self) except -1
    cdef int close(self) except -1
    cdef Tape clone(self)
    cdef i64 copy_node(self, Tape src, i64 i, const i64* remap) except -1
    cdef i64 nparams_of(self, i64 i) noexcept nogil
    cdef i64 size_of(self, i64 i) noexcept nogil
    cdef double* value_ptr(self, i64 i) noexcept nogil
    cdef double* adjoint_ptr(self, i64 i) noexcept nogil
    cdef double* tangent_ptr(self, i64 i, i64 k) noexcept nogil
    cdef i64* params(self, i64 i) noexcept nogil
    cdef void forward_node(self, i64 i) noexcept nogil
    cdef void reverse_node(self, i64 i) noexcept nogil
    cdef void forward_sweep(self, i64 lo, i64 hi) noexcept nogil
    cdef void reverse_sweep(self, i64 top) noexcept nogil
    cdef int trim_values(self) except -1
    cdef int prepare_adjoints(self) except -1
    cdef int alloc_adjoints(self) except -1
    cdef int _plan_clear(self) except -1
    cdef bint big_constant(self, i64 i) noexcept nogil
    cdef void clear_adjoints(self) noexcept nogil
    cdef int prepare_tangents(self, i64 p, bint keep) except -1
    cdef void tangent_node(self, i64 i, i64 p) noexcept nogil
    cdef void tangent_sweep(self, i64 lo, i64 hi, i64 p) noexcept nogil
    cdef int prepare_adjoint_tangents(self, i64 p) except -1
    cdef void hvp_sweep(self, i64 top, i64 p) noexcept nogil


cdef class Var:
    cdef readonly Tape tape
    cdef readonly i64 node
    cdef readonly tuple shape
    cdef readonly i64 size


cdef object read_slot(Tape t, double* buf, i64 node, tuple shape)
cdef void run_forward(int o, double* val, const double* pool, const i32* pa,
                      const i32* pb, i64 lo, i64 hi) noexcept nogil
cdef void run_reverse(int o, double* val, double* adj, const double* pool,
                      const i32* pa, const i32* pb, i64 lo, i64 hi) noexcept nogil
cdef void elementwise_forward(int o, const double* x, i64 sx, const double* y, i64 sy,
                              double* out, i64 n) noexcept nogil
cdef void run_forward_tangent(int o, double* val, double* tan, const double* pool,
                              const i32* pa, const i32* pb, i64 lo, i64 hi) noexcept nogil
cdef void run_forward_tangent_chain(int o, double* val, double* tan, const double* pool,
                                    const i32* pa, const i32* pb, i64 lo,
                                    i64 hi) noexcept nogil
cdef void run_tangents(int o, const double* val, double* tan, const double* pool,
                       const i32* pa, const i32* pb, i64 lo, i64 hi, i64 p) noexcept nogil
cdef void run_hvp_reverse(int o, const double* val, double* adj, const double* tan,
                          double* tan_adj, const double* pool, const i32* pa, const i32* pb,
                          i64 lo, i64 hi) noexcept nogil
cdef void elementwise_tangent(int o, const double* x, i64 sx, const double* y, i64 sy,
                              const double* z, const double* tx, const double* ty,
                              double* tz, i64 n, i64 p, i64 ld) noexcept nogil
cdef void elementwise_reverse(int o, const double* x, i64 sx, const double* y, i64 sy,
                              const double* z, const double* lam, double* x_bar,
                              double* y_bar, i64 n) noexcept nogil
# numpy's pairwise summation (SUM's forward kernel, _structural.pxi): the fused sweeps of
# _compiled sum a reduction's leaves with it, so that their sum is SUM's to the bit
cdef double _pairwise_sum(const double* x, i64 n, i64 stride) noexcept nogil
