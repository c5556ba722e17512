"""Checkpointing (rematerialisation): ``fastape.checkpoint(f)``, as ``jax.checkpoint``
and ``torch.utils.checkpoint``.

A checkpointed function, called on fastape values, becomes ONE node of the tape
that keeps only its inputs and its output; its interior is recomputed when the
reverse sweep reaches it. Applied to each segment of a long time-stepping loop,
the tape holds one node per segment instead of every operation of every step::

    seg = fastape.checkpoint(lambda s, theta: run_k_steps(s, theta))
    for _ in range(steps // k):
        s = seg(s, theta)

With segments of k steps the tape grows by O(steps / k) nodes, and the reverse
sweep holds one segment's interior at a time (O(k)): k ≈ √steps bounds the memory
by O(√steps). The interior is *compiled* (:func:`fastape.compile`, once per
argument structure): the forward pass runs it as a replay, and the reverse step
of a segment is one forward and one reverse sweep of that compiled tape (the
recompute), so the recompute costs about one extra compiled forward sweep per
segment and no Python per operation: the documented setting (k ≈ √steps) is
measured in ``benchmarks/bench_format.py``. Branches inside a segment are guarded
as in any compiled function (a new branch re-records it).

Rules:

* The segment's differentiable inputs must be its arguments: a fastape value it
  closes over (from the enclosing recording) raises ``TapeError``, since the
  interior is recorded on a tape of its own.
* Its arguments and output are pytrees of numbers and arrays (as for ``compile``).
* Under nested differentiation (``hessian``, ``grad`` of ``grad``) the segment is
  recorded on the outer tape as it is: correct derivatives of every order, without
  the memory saving.
* Forward mode (``jvp``, ``jacfwd``) runs the compiled segment's tangent sweep.
"""

import numpy as np

from fastape._tape import Var
from fastape._tree import flatten, unflatten
from fastape.custom import custom_vjp
from fastape.errors import TapeError

__all__ = ["checkpoint"]


def _has_var(tree):
    return any(type(x) is Var for x in flatten(tree, "args", "checkpoint")[0])


class _Checkpointed(custom_vjp):
    """A custom_vjp whose rules are the compiled segment: forward a replay, backward
    a replay with its reverse sweep, tangent a replay with its tangent sweep."""

    def __init__(self, fun):
        super().__init__(fun)
        self.defvjp(self._fwd, self._bwd)
        self._compiled = {}             # argument treedef -> (Function, output treedef)

    def _flat(self, args):
        """The compiled segment for these arguments' structure: f with its output's
        leaves flattened and joined into one vector (compile records one array), and
        the output's treedef to rebuild it."""
        leaves, td = flatten(args, "args", self.__name__)
        hit = self._compiled.get(td)
        if hit is not None:
            return hit
        from fastape import _functions
        from fastape.api import compile
        out_def = {}

        def flat(*a):
            out = self.fun(*a)
            ls, otd = flatten(out, "the output", self.__name__)
            out_def["td"] = otd
            parts = [_functions.reshape(x, (-1,)) if type(x) is Var
                     else np.reshape(np.asarray(x, dtype=np.float64), (-1,)) for x in ls]
            return parts[0] if len(parts) == 1 else _functions.concatenate(parts)
        flat.__name__ = f"checkpointed {self.__name__}"
        try:
            F = compile(flat, *args, argnums=tuple(range(len(args))))
        except TapeError as e:
            raise TapeError(f"checkpoint({self.__name__}): the segment is recorded on a tape "
                            f"of its own, so the fastape values it differentiates must be "
                            f"its arguments, not closed over ({e})") from e
        hit = self._compiled[td] = (F, out_def["td"])
        return hit

    def _unflat(self, otd, flat):
        parts, start = [], 0
        for s in otd.leaf_shapes:
            n = int(np.prod(s))
            x = np.asarray(flat[start:start + n]).reshape(s)
            parts.append(float(x) if s == () else x)
            start += n
        return unflatten(otd, parts)

    def _fwd(self, *args):
        if _has_var(args):              # nested: record the segment on the outer tape
            return self.fun(*args), args
        F, otd = self._flat(args)
        return self._unflat(otd, F(*args)), args

    def _bwd(self, res, cot):
        from fastape import api
        if _has_var(res) or _has_var(cot):
            return api.vjp(self.fun, *res)[1](cot)
        F, _ = self._flat(res)
        leaves = flatten(cot, "cotangent", self.__name__)[0]
        flat_cot = np.concatenate([np.asarray(c, dtype=np.float64).reshape(-1)
                                   for c in leaves]) if leaves else np.zeros(0)
        return tuple(F.vjp(res, flat_cot)[1])

    def _tangent(self, rule, parents, tangents):
        args = rule.args(parents)
        F, otd = self._flat(args)
        tans = rule.args(tangents, fill=np.zeros)
        _, tout = F.jvp(args, tuple(tans))
        return np.asarray(tout, dtype=np.float64).reshape(-1)


def checkpoint(fun):
    """``fun`` checkpointed: on fastape values one tape node keeping only its inputs
    and output, its interior recomputed (compiled) in the reverse sweep; on numbers
    ``fun`` itself. See :mod:`fastape.checkpoint` for the segment rule of thumb
    (k ≈ √steps steps per segment bounds the tape by O(√steps)).

    >>> import numpy as np, fastape as ft
    >>> def ten_steps(s, theta):
    ...     for _ in range(10):
    ...         s = s + 0.01 * np.sin(s * theta)
    ...     return s
    >>> seg = ft.checkpoint(ten_steps)
    >>> def loss(theta):
    ...     s = 1.0
    ...     for _ in range(100):
    ...         s = seg(s, theta)
    ...     return s
    >>> g = ft.grad(loss)(0.5)
    >>> def plain(theta):
    ...     s = 1.0
    ...     for _ in range(100):
    ...         s = ten_steps(s, theta)
    ...     return s
    >>> bool(abs(g - ft.grad(plain)(0.5)) < 1e-12)
    True
    """
    return _Checkpointed(fun)
