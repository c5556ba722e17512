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


class TapeFormatError(FastapeError, ValueError):
    """A tape or compiled-function file (or pickle) is corrupt, truncated, of a newer
    format version or of another op registry; the message names the first bad field."""
