"""Function transforms: ``grad`` and ``value_and_grad`` in the style of autograd and JAX."""

import functools
import numbers

import numpy as np

from fastape._compiled import Function
from fastape._tape import Tape, Var
from fastape._tree import flatten, normalize_argnums, unflatten
from fastape.errors import ShapeError, TapeError


def _gradient_like(leaf, g):
    """A leaf's multiplier in the leaf's kind: an array of its shape for an ndarray
    (a 0-d one too), a float for a number."""
    if isinstance(leaf, np.ndarray):
        return np.asarray(g, dtype=np.float64).reshape(leaf.shape)
    return g


def value_and_grad(fun, argnums=0):
    """Return a function computing ``(fun(*args), ∂fun/∂args[argnums])``.

    ``fun`` must return a scalar. Differentiated arguments are pytrees (see
    ``fastape._tree``): numbers and numpy arrays in (nested) lists, tuples,
    namedtuples and dicts, with None as an empty container. The gradient has the
    argument's structure: namedtuples as namedtuples, dicts as dicts of the same type
    and key order, floats for numbers and arrays of the argument's shape. With a
    tuple ``argnums`` the gradient is a tuple, one entry per argument. The arguments
    are copied onto the tape and never modified.
    """
    where = f"grad of {getattr(fun, '__name__', 'function')}"

    @functools.wraps(fun)
    def value_and_grad_fun(*args, **kwargs):
        single, nums = normalize_argnums(argnums, len(args), where)
        flat = {}                           # argument position -> (leaves, treedef)
        for i in nums:
            if i not in flat:
                if isinstance(args[i], Var):
                    raise TapeError(f"{where}: args[{i}] is already a fastape value (nested "
                                    "differentiation is not supported)")
                flat[i] = flatten(args[i], f"args[{i}]", where)
        tape = Tape()
        try:
            with tape:
                call_args = list(args)
                inputs = {}
                for i, (leaves, treedef) in flat.items():
                    inputs[i] = [tape.var(x) for x in leaves]
                    call_args[i] = unflatten(treedef, inputs[i])
                out = fun(*call_args, **kwargs)
            if isinstance(out, Var):
                if out.tape is not tape:
                    raise TapeError(f"{where}: the function returned a value of another tape")
                if out.size != 1:
                    raise ShapeError(f"{where}: the function must return a scalar to be "
                                     f"differentiated, got shape {out.shape}; sum the "
                                     "output, or use Function.vjp "
                                     "(fastape.compile(f, *args).vjp(args, cotangent))")
                value = out.value
                value = float(value) if np.ndim(value) == 0 else value
                adjoints = iter(tape.gradient(out, [v for vs in inputs.values() for v in vs]))
                leaf_grads = {i: [_gradient_like(x, next(adjoints)) for x in leaves]
                              for i, (leaves, _) in flat.items()}
            elif isinstance(out, numbers.Real) or (isinstance(out, np.ndarray) and out.size == 1):
                value = float(np.asarray(out).reshape(()))
                leaf_grads = {i: [np.zeros(x.shape) if isinstance(x, np.ndarray) else 0.0
                                  for x in leaves] for i, (leaves, _) in flat.items()}
            elif isinstance(out, np.ndarray) and out.dtype.kind in "biuf":
                raise ShapeError(f"{where}: the function must return a scalar to be "
                                 f"differentiated, got an array of shape {out.shape}")
            else:
                raise TypeError(f"{where}: the function must return a real scalar, got "
                                f"{type(out).__name__}")
        finally:
            tape.release()
        grads = [unflatten(flat[i][1], leaf_grads[i]) for i in nums]
        return value, (grads[0] if single else tuple(grads))

    return value_and_grad_fun


def grad(fun, argnums=0):
    """Return a function computing the gradient of scalar ``fun`` with respect to
    ``args[argnums]`` (see :func:`value_and_grad`).

    >>> import fastape as ft, numpy as np
    >>> ft.grad(lambda x: np.sum(x ** 2))(np.array([1.0, 2.0]))
    array([2., 4.])
    """
    vg = value_and_grad(fun, argnums)

    @functools.wraps(fun)
    def grad_fun(*args, **kwargs):
        return vg(*args, **kwargs)[1]

    return grad_fun


def compile(fun, *example_args, argnums=0, retrace=True, max_traces=8):  # noqa: A001
    """Record ``fun`` once on ``example_args`` and return a :class:`Function` that
    replays the tape on new arguments of the same shapes at C speed.

    ``F(*args)`` is the value, ``F.grad(*args)`` / ``F.value_and_grad(*args)`` the
    gradient with respect to ``args[argnums]``, ``F.vjp(args, cotangent)`` a
    vector-Jacobian product, ``F.grad_batch(X)`` gradients at the rows of X on
    several threads. All arguments are inputs of the tape (they may change from
    call to call); close over anything that must stay fixed.

    The tape is pruned to the nodes that reach the output; an array read only as
    ``x[i]`` becomes scalar inputs, and a tape of scalars recorded from a loop is
    grouped into runs of one opcode (nodes ordered by depth, then opcode) that the
    sweeps run through each op's own loop, as array ops where the operands are
    contiguous.

    Control flow is frozen into the tape. Comparisons made on tape values while
    recording (``if x > 0``, ``np.where(x > 0, …)``, ``max`` written with ``if``)
    become guards: a call whose inputs would take another branch re-records
    ``fun`` and keeps that trace beside the others (at most ``max_traces``), or,
    with ``retrace=False``, raises :class:`fastape.BranchChanged`. Reading
    ``x.value`` while recording escapes the guards: avoid branching on it.

    >>> import fastape as ft, numpy as np
    >>> F = ft.compile(lambda x: np.sum(x ** 2), np.zeros(3))
    >>> F.value_and_grad(np.array([1.0, 2.0, 3.0]))
    (14.0, array([2., 4., 6.]))
    """
    return Function(fun, example_args, argnums=argnums, retrace=retrace,
                    max_traces=max_traces)
