"""scipy's functions for fastape values, as ``jax.scipy``: ``fastape.scipy.special``
and ``fastape.scipy.linalg``."""

from fastape.scipy import linalg, special

__all__ = ["linalg", "special"]
