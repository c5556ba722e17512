"""scipy's functions for fastape values, as ``jax.scipy``: ``fastape.scipy.special``."""

from fastape.scipy import special

__all__ = ["special"]
