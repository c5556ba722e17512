# Dense linear algebra on the tape (included into _tape.pyx): the kernels of
# MATMUL and the later linear-algebra opcodes, forward and reverse side by side.
# Placeholder until the BLAS/LAPACK ops land.


cdef void linalg_forward(Tape t, i64 i) noexcept nogil:
    """Compute node i's value (a linear-algebra op)."""
    pass


cdef void linalg_reverse(Tape t, i64 i) noexcept nogil:
    """Add node i's multipliers through its local partials into its parents'."""
    pass
