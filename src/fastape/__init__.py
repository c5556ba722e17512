"""fastape: reverse-mode automatic differentiation on a compiled Wengert tape.

Quick start::

    import numpy as np, fastape as ft
    f = lambda x: np.sum(np.sin(x) * x)
    ft.grad(f)(np.linspace(0, 1, 5))

Public API: :func:`grad`, :func:`value_and_grad`, :class:`Tape` (a context
manager; ``tape.var``, ``tape.gradient``, ``tape.adjoint``), :class:`Var`, the
numpy-style functions below, and the exceptions :class:`ShapeError`,
:class:`TapeError`, :class:`BranchChanged`.
"""

from fastape import linalg
from fastape._compiled import Function
from fastape._functions import *  # noqa: F403 - the numpy-style functions, __all__ below
from fastape._functions import __all__ as _FUNCTIONS
from fastape._ops import Cmp, Op
from fastape._tape import Tape, Var
from fastape.api import compile, grad, value_and_grad
from fastape.errors import BranchChanged, FastapeError, ShapeError, TapeError

__version__ = "0.1.0"

__all__ = [
    "Tape", "Var", "Op", "Cmp", "Function", "compile", "grad", "value_and_grad", "linalg",
    "ShapeError", "TapeError", "BranchChanged", "FastapeError",
    *_FUNCTIONS,
]
