"""scipy's functions for fastape values, as ``jax.scipy``: ``fastape.scipy.special``,
``fastape.scipy.linalg``, ``fastape.scipy.stats`` and ``fastape.scipy.signal``."""

from fastape.scipy import linalg, signal, special, stats

__all__ = ["linalg", "signal", "special", "stats"]
