"""scipy's functions for fastape values, as ``jax.scipy``: ``fastape.scipy.special``,
``fastape.scipy.linalg`` and ``fastape.scipy.stats``."""

from fastape.scipy import linalg, special, stats

__all__ = ["linalg", "special", "stats"]
