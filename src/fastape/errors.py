"""The exception types of fastape. All are exported at the top level."""


class FastapeError(Exception):
    """Base class of fastape's own errors."""


class ShapeError(FastapeError, ValueError):
    """Operand shapes do not fit the op (the message names op, argument and shapes)."""


class TapeError(FastapeError, RuntimeError):
    """Values of two tapes were mixed, or a closed or released tape was used."""


class BranchChanged(FastapeError, RuntimeError):
    """A compiled function was called on inputs that take another branch than the
    recorded one, and re-recording was not allowed (``retrace=False``)."""


class NoTangentRule(TapeError):
    """Forward mode met a function that has a reverse rule only (``custom_vjp``).
    ``hessian`` and ``hvp`` then fall back to reverse over reverse."""


class ConvergenceError(FastapeError, RuntimeError):
    """An implicit node's solve (``fastape.fixed_point``, ``root``, ``linear_solve``,
    or the linear solve of its adjoint or tangent) did not reach its tolerance: no
    derivative of an unconverged point is returned. ``name`` is the node,
    ``residual`` the residual reached, ``iterations`` the count spent."""

    def __init__(self, name, residual, iterations, tol, detail=""):
        self.name, self.residual, self.iterations, self.tol = name, residual, iterations, tol
        super().__init__(f"{name}: did not converge: residual {residual:.3g} after "
                         f"{iterations} iterations (tol {tol:g})"
                         + (f"; {detail}" if detail else ""))


class TapeFormatError(FastapeError, ValueError):
    """A tape or compiled-function file (or pickle) is corrupt, truncated, of a newer
    format version or of another op registry; the message names the first bad field."""
