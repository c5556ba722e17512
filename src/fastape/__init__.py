"""fastape: automatic differentiation on a compiled Wengert tape (reverse and forward
mode, Hessians, derivatives of derivatives).

Quick start::

    import numpy as np, fastape as ft
    f = lambda x: np.sum(np.sin(x) * x)
    ft.grad(f)(np.linspace(0, 1, 5))

Public API: the transforms :func:`grad`, :func:`value_and_grad`, :func:`jvp`,
:func:`vjp`, :func:`linearize`, :func:`jacobian` (:func:`jacfwd`, :func:`jacrev`),
:func:`hessian`, :func:`hvp` (JAX's names; they nest to any order), :func:`compile`,
:func:`load` (of a saved :class:`Tape` or :class:`Function`), :func:`checkpoint`,
:class:`Tape` (a context
manager; ``tape.var``, ``tape.gradient``, ``tape.adjoint``), :class:`Var`, the
numpy-style functions below, and the exceptions :class:`ShapeError`,
:class:`TapeError`, :class:`BranchChanged`, :class:`TapeFormatError`.
"""

from fastape import linalg
from fastape._check import check_grads
from fastape._compiled import Function
from fastape._format import load
from fastape._functions import *  # noqa: F403 - the numpy-style functions, __all__ below
from fastape._functions import __all__ as _FUNCTIONS
from fastape._ops import Cmp, Op
from fastape._tape import Tape, Var
from fastape.api import (
                         compile,
                         grad,
                         hessian,
                         hvp,
                         jacfwd,
                         jacobian,
                         jacrev,
                         jvp,
                         linearize,
                         value_and_grad,
                         vjp,
)
from fastape.checkpoint import checkpoint
from fastape.custom import custom_jvp, custom_vjp
from fastape.errors import (
                         BranchChanged,
                         FastapeError,
                         NoTangentRule,
                         ShapeError,
                         TapeError,
                         TapeFormatError,
)

__version__ = "0.1.0"

__all__ = [
    "Tape", "Var", "Op", "Cmp", "Function", "compile", "grad", "value_and_grad", "linalg",
    "jvp", "vjp", "linearize", "jacobian", "jacfwd", "jacrev", "hessian", "hvp",
    "custom_vjp", "custom_jvp", "check_grads", "load", "checkpoint",
    "ShapeError", "TapeError", "BranchChanged", "FastapeError", "NoTangentRule",
    "TapeFormatError",
    *_FUNCTIONS,
]
