"""Function transforms: ``grad`` and ``value_and_grad`` in the style of autograd and JAX."""

import functools
import numbers

import numpy as np

from fastape._compiled import Function
from fastape._tape import Tape, Var
from fastape.errors import ShapeError, TapeError


def _inputs(tape, arg, where):
    """Input values for one differentiated argument, in its structure."""
    if isinstance(arg, (list, tuple)):
        return type(arg)(_inputs(tape, a, where) for a in arg)
    if isinstance(arg, Var):
        raise TapeError(f"{where}: argument is already a fastape value (nested "
                        "differentiation is not supported)")
    return tape.var(arg)


def _gradient_like(arg, g):
    """A gradient in the structure and kind of the argument: float for numbers."""
    if isinstance(arg, (list, tuple)):
        return type(arg)(_gradient_like(a, gi) for a, gi in zip(arg, g))
    if isinstance(arg, np.ndarray):
        return np.asarray(g, dtype=np.float64).reshape(arg.shape)
    return float(g) if np.ndim(g) == 0 else g


def _zeros_like(arg):
    if isinstance(arg, (list, tuple)):
        return type(arg)(_zeros_like(a) for a in arg)
    return np.zeros(np.shape(arg)) if np.ndim(arg) else 0.0


def _argnums(argnums, nargs, where):
    single = isinstance(argnums, numbers.Integral)
    nums = (argnums,) if single else tuple(argnums)
    for i in nums:
        if not -nargs <= i < nargs:
            raise ValueError(f"{where}: argnums={argnums} but the function was called with "
                             f"{nargs} positional argument(s)")
    return single, tuple(i % nargs for i in nums)


def value_and_grad(fun, argnums=0):
    """Return a function computing ``(fun(*args), ∂fun/∂args[argnums])``.

    ``fun`` must return a scalar. Differentiated arguments may be numbers, numpy
    arrays, or (nested) lists/tuples of them; the gradient has the same
    structure, with floats for numbers and arrays of the argument's shape. With a
    tuple ``argnums`` the gradient is a tuple, one entry per argument. The
    arguments are copied onto the tape and never modified.
    """
    @functools.wraps(fun)
    def value_and_grad_fun(*args, **kwargs):
        where = f"grad of {getattr(fun, '__name__', 'function')}"
        single, nums = _argnums(argnums, len(args), where)
        tape = Tape()
        try:
            with tape:
                call_args = list(args)
                for i in nums:
                    call_args[i] = _inputs(tape, args[i], where)
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
                grads = tape.gradient(out, [call_args[i] for i in nums])
                grads = [_gradient_like(args[i], g) for i, g in zip(nums, grads)]
            elif isinstance(out, numbers.Real) or (isinstance(out, np.ndarray) and out.size == 1):
                value = float(np.asarray(out).reshape(()))
                grads = [_zeros_like(args[i]) for i in nums]
            else:
                raise TypeError(f"{where}: the function must return a real scalar, got "
                                f"{type(out).__name__}")
        finally:
            tape.release()
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
