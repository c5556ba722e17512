# cython: language_level=3
"""Python view of the op table (``_ops.pxd``): the ``Op`` enum, arities and a
scalar evaluator used by the tests and the reference cross-check."""
from fastape._ops cimport (Op, value_and_partials, is_unary, is_binary, has_k,
                           is_elementwise)

#: names of the elementwise ops, as ``Op`` members
ELEMENTWISE = tuple(o for o in Op if is_elementwise(o))
UNARY = tuple(o for o in Op if is_unary(o) and not has_k(o))
UNARY_K = tuple(o for o in Op if has_k(o))
BINARY = tuple(o for o in Op if is_binary(o))


def eval_op(int o, double x, double y=0.0):
    """Return ``(value, d0, d1)`` of elementwise op ``o`` at ``(x, y)``; for the
    ``*_K`` ops ``y`` is the immediate ``k``."""
    cdef double d0 = 0.0, d1 = 0.0
    if not is_elementwise(o):
        raise ValueError(f"eval_op: {Op(o).name} is not an elementwise op")
    cdef double v = value_and_partials(o, x, y, &d0, &d1, NULL)
    return v, d0, d1
