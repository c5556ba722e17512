"""Function transforms: ``grad`` and ``value_and_grad`` in the style of autograd and JAX."""

import functools
import numbers

import numpy as np

from fastape import _nesting, _rules, _tape
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

    Called while another transform's function is being recorded (``grad(grad(f))``,
    ``grad`` inside a compiled function, ``hessian``), or on fastape values, the
    gradient is itself recorded on that tape (``fastape._rules``), so it can be
    differentiated again; value and gradient are then fastape values.
    """
    where = f"grad of {getattr(fun, '__name__', 'function')}"

    @functools.wraps(fun)
    def value_and_grad_fun(*args, **kwargs):
        single, nums = normalize_argnums(argnums, len(args), where)
        flat = {}                           # argument position -> (leaves, treedef)
        for i in nums:
            if i not in flat:
                flat[i] = flatten(args[i], f"args[{i}]", where)
        outer = _outer_tape(flat, where)
        if outer is not None:
            return _nested_value_and_grad(fun, args, kwargs, flat, nums, single, outer, where)
        tape = Tape()
        try:
            with tape:
                out, inputs = _record(fun, args, kwargs, flat, tape, where)
            if isinstance(out, Var):
                if out.tape is not tape:
                    raise TapeError(f"{where}: the function returned a value of another tape")
                if out.size != 1:
                    raise ShapeError(f"{where}: the function must return a scalar to be "
                                     f"differentiated, got shape {out.shape}; sum the "
                                     "output, or use fastape.vjp or fastape.jacobian")
                value = out.value
                value = float(value) if np.ndim(value) == 0 else value
                adjoints = iter(tape.gradient(out, [v for vs in inputs.values() for v in vs]))
                leaf_grads = {i: [_gradient_like(x, next(adjoints)) for x in leaves]
                              for i, (leaves, _) in flat.items()}
            else:
                value = _constant_scalar(out, where)
                leaf_grads = {i: [_zeros_like(x) for x in leaves]
                              for i, (leaves, _) in flat.items()}
        finally:
            tape.release()
        grads = [unflatten(flat[i][1], leaf_grads[i]) for i in nums]
        return value, (grads[0] if single else tuple(grads))

    return value_and_grad_fun


def _constant_scalar(out, where):
    """The value of a function output that is not on the tape (its gradient is 0)."""
    if isinstance(out, numbers.Real) or (isinstance(out, np.ndarray) and out.size == 1
                                         and out.dtype.kind in "biuf"):
        return float(np.asarray(out).reshape(()))
    if isinstance(out, np.ndarray) and out.dtype.kind in "biuf":
        raise ShapeError(f"{where}: the function must return a scalar to be "
                         f"differentiated, got an array of shape {out.shape}")
    raise TypeError(f"{where}: the function must return a real scalar, got "
                    f"{type(out).__name__}")


def _zeros_like(x):
    shape = x.shape if isinstance(x, (np.ndarray, Var)) else ()
    return np.zeros(shape) if isinstance(x, np.ndarray) or shape else 0.0


def _outer_tape(flat, where):
    """The tape a transform must record on: that of the fastape values among the
    differentiated leaves, else the tape of an enclosing transform (None: neither,
    the transform runs its own tape and the compiled sweeps)."""
    tapes = {id(x.tape): x.tape for leaves, _ in flat.values() for x in leaves
             if type(x) is Var}
    if len(tapes) > 1:
        raise TapeError(f"{where}: the arguments hold values of several tapes")
    if tapes:
        (tape,) = tapes.values()
        if tape.closed:
            raise TapeError(f"{where}: the arguments are values of a tape whose recording "
                            "has ended; a nested transform records on the enclosing tape")
        return tape
    return _nesting.active()


def _record(fun, args, kwargs, flat, tape, where, nested=False):
    """Call fun on the differentiated leaves made values of `tape`: inputs of a fresh
    tape, or, nested, copies of the caller's values (a fresh node each, so that the
    inner derivative is with respect to this argument only) and constants for plain
    numbers. Returns (output, {argument position: [input values]})."""
    call_args = list(args)
    inputs = {}
    for i, (leaves, treedef) in flat.items():
        vs = []
        for x in leaves:
            if type(x) is Var:
                if x.tape is not tape:
                    raise TapeError(f"{where}: args[{i}] holds a value of another tape")
                vs.append(_tape.copy_as(x, x.shape))
            else:
                vs.append(tape.constant(x) if nested else tape.var(x))
        inputs[i] = vs
        call_args[i] = unflatten(treedef, vs)
    with _nesting.recording(tape):
        out = fun(*call_args, **kwargs)
    return out, inputs


def _view(g, shape):
    """A recorded multiplier (a flat value or None for 0) as a leaf gradient of `shape`."""
    if g is None:
        return np.zeros(shape) if shape else 0.0
    return _tape.node_var(g.tape, g.node, tuple(shape))


def _nested_value_and_grad(fun, args, kwargs, flat, nums, single, tape, where):
    out, inputs = _record(fun, args, kwargs, flat, tape, where, nested=True)
    every = [v for vs in inputs.values() for v in vs]
    if isinstance(out, Var):
        if out.tape is not tape:
            raise TapeError(f"{where}: the function returned a value of another tape")
        if out.size != 1:
            raise ShapeError(f"{where}: the function must return a scalar to be "
                             f"differentiated, got shape {out.shape}")
        gs = iter(_rules.vjp(tape, [(out, None)], every))
        value = out
    else:
        value = _constant_scalar(out, where)
        gs = iter([None] * len(every))
    leaf_grads = {i: [_view(next(gs), v.shape) for v in vs] for i, vs in inputs.items()}
    grads = [unflatten(flat[i][1], leaf_grads[i]) for i in nums]
    return value, (grads[0] if single else tuple(grads))


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
