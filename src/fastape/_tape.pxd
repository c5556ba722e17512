# cython: language_level=3
from libc.stdint cimport int32_t, int64_t, uint8_t

ctypedef int64_t i64
ctypedef int32_t i32


cdef class Tape:
    # node records (struct of arrays, capacity `cap`, length `n`)
    cdef i64 n, cap
    cdef uint8_t* op          # opcode of node i
    cdef i32* a               # first parent (-1: none)
    cdef i32* b               # second parent, or pool index of the immediate k
    # value arena; while every node is a scalar, node i's value is val[i]
    cdef double* val
    cdef i64 nval, val_cap
    # multipliers λ, same layout as val (allocated by the first reverse sweep)
    cdef double* adj
    cdef i64 adj_cap
    # immediates of the *_K ops and GATHER1 indices
    cdef double* pool
    cdef i64 npool, pool_cap
    # array layout, NULL until the first array or structural node is recorded
    cdef i64* off             # node i's value starts at val[off[i]]
    cdef i64* meta            # node i's parameters start at M[meta[i]] (-1: scalar)
    cdef i64* M               # parameter arena: M[meta[i]] is always the size
    cdef i64 nM, M_cap
    # run table of a grouped tape (scalar layout, closed): nodes runs[r]..runs[r+1]-1
    # share one opcode and the sweeps run each run through that op's own loop;
    # run_kind[r]: RUN_AFFINE when its parents are contiguous (or one node) and lie
    # before the run, so that it is an elementwise array op in disguise
    cdef i32* runs
    cdef uint8_t* run_kind
    cdef i64 nruns
    # a grouped tape's reverse sweep zeroes each multiplier it consumes, so after a
    # sweep down to node 0 only the leaves' (nodes 0..nleaf-1) can be nonzero
    cdef i64 nleaf
    cdef bint adj_clean
    # state
    cdef bint _closed, _freed
    cdef public i64 seed      # output node of the last reverse sweep (-1: none)
    cdef public object guards  # None, or a list that comparisons append guards to

    cdef void _free(self) noexcept
    cdef int _grow_nodes(self, i64 need) except -1
    cdef i64 _rec1(self, int o, i64 x, double k) except -1
    cdef i64 _rec2(self, int o, i64 x, i64 y) except -1
    cdef i64 _push(self, int o, i64 x, i64 y, i64 size, i64 nmeta) except -1
    cdef i64 _pool_add(self, double k) except -1
    cdef int _to_mixed(self) except -1
    cdef int _check(self) except -1
    cdef i64 size_of(self, i64 i) noexcept nogil
    cdef double* value_ptr(self, i64 i) noexcept nogil
    cdef void forward_node(self, i64 i) noexcept nogil
    cdef void reverse_node(self, i64 i) noexcept nogil
    cdef void forward_sweep(self, i64 lo, i64 hi) noexcept nogil
    cdef void reverse_sweep(self, i64 top, i64 bottom) noexcept nogil
    cdef int prepare_adjoints(self) except -1
    cdef void clear_adjoints(self) noexcept nogil
    cdef int set_runs(self) except -1
    cdef uint8_t _run_kind(self, i64 lo, i64 hi) noexcept


cdef class Var:
    cdef readonly Tape tape
    cdef readonly i64 node
    cdef readonly tuple shape
    cdef readonly i64 size


cdef object read_slot(Tape t, double* buf, i64 node, tuple shape)
