"""fastape: automatic differentiation on a compiled Wengert tape (reverse and forward
mode, Hessians, derivatives of derivatives).

Quick start::

    import numpy as np, fastape as ft
    f = lambda x: np.sum(np.sin(x) * x)
    ft.grad(f)(np.linspace(0, 1, 5))

Public API: the transforms :func:`grad`, :func:`value_and_grad`, :func:`jvp`,
:func:`vjp`, :func:`linearize`, :func:`jacobian` (:func:`jacfwd`, :func:`jacrev`),
:func:`hessian`, :func:`hvp` (JAX's names; they nest to any order), :func:`compile`,
the implicit functions :func:`fixed_point`, :func:`root`, :func:`linear_solve`,
:func:`load` (of a saved :class:`Tape` or :class:`Function`), :func:`checkpoint`,
:class:`Tape` (a context
manager; ``tape.var``, ``tape.gradient``, ``tape.adjoint``), :class:`Var` (and
:class:`Complex`, a complex value: its real and imaginary parts), the
numpy-style functions below, and the exceptions :class:`ShapeError`,
:class:`TapeError`, :class:`BranchChanged`, :class:`ConvergenceError`,
:class:`TapeFormatError`.
"""

from fastape import _openmp, linalg, scipy  # noqa: F401 - _openmp first: libgomp's policy
from fastape._arrays import *  # noqa: F403 - numpy's shape and assembly functions
from fastape._arrays import __all__ as _ARRAYS
from fastape._check import check_grads
from fastape._compiled import Function
from fastape._complex import Complex
from fastape._einsum import einsum, tensordot
from fastape._format import load
from fastape._functions import *  # noqa: F403 - the numpy-style functions, __all__ below
from fastape._functions import __all__ as _FUNCTIONS
from fastape._ops import Cmp, Op
from fastape._special import betainc, multigammaln, polygamma
from fastape._stats import *  # noqa: F403 - numpy's statistics
from fastape._stats import __all__ as _STATS
from fastape._tape import Tape, Var, arena_pool
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
                            ConvergenceError,
                            FastapeError,
                            NoTangentRule,
                            ShapeError,
                            TapeError,
                            TapeFormatError,
)
from fastape.implicit import fixed_point, linear_solve, root

__version__ = "0.1.0"

__all__ = [
    "Tape", "Var", "Complex", "Op", "Cmp", "Function", "compile", "grad", "value_and_grad",
    "linalg",
    "jvp", "vjp", "linearize", "jacobian", "jacfwd", "jacrev", "hessian", "hvp",
    "custom_vjp", "custom_jvp", "check_grads", "einsum", "tensordot",
    "polygamma", "multigammaln", "betainc",
    "fixed_point", "root", "linear_solve", "load", "checkpoint", "arena_pool",
    "ShapeError", "TapeError", "BranchChanged", "FastapeError", "NoTangentRule",
    "ConvergenceError", "TapeFormatError",
    "scipy", *_FUNCTIONS, *_ARRAYS, *_STATS,
]
