# cython: language_level=3
"""Python view of the compiled op table (``_ops.pxd``, generated from ``registry.py``):
the ``Op`` and ``Cmp`` enums and scalar evaluators of the formulas, used by the
tests to check each op against its reference and against finite differences."""
from fastape._ops cimport (Op, value_and_partials, second_partials, is_elementwise,
                           b_kind as _b_kind)

#: the elementwise ops and the structural ops, as ``Op`` members
ELEMENTWISE = tuple(o for o in Op if is_elementwise(o))
STRUCTURAL = tuple(o for o in Op if o > max(ELEMENTWISE) and o != Op.NUM_OPS)


def eval_op(int o, double x, double y=0.0):
    """Return ``(value, d0, d1)`` of elementwise op ``o`` at ``(x, y)``; for the
    ``*_K`` ops ``y`` is the immediate ``k``."""
    cdef double d0 = 0.0, d1 = 0.0
    if not is_elementwise(o):
        raise ValueError(f"eval_op: {Op(o).name} is not an elementwise op")
    cdef double v = value_and_partials(o, x, y, &d0, &d1, NULL)
    return v, d0, d1


def eval_second(int o, double x, double y=0.0):
    """Return ``(d00, d01, d11)``, the second partials of elementwise op ``o`` at (x, y)."""
    cdef double d00 = 0.0, d01 = 0.0, d11 = 0.0
    if not is_elementwise(o):
        raise ValueError(f"eval_second: {Op(o).name} is not an elementwise op")
    second_partials(o, x, y, &d00, &d01, &d11)
    return d00, d01, d11


def b_kind(int o):
    """What node field b holds for opcode o: 0 unused, 1 a node, 2 a pool index."""
    return _b_kind(o)
