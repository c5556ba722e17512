"""``scipy.linalg`` for fastape values (as ``jax.scipy.linalg``): triangular and
Cholesky solves, the matrix exponential, and scipy's spellings of the
decompositions (``cholesky`` returns the upper factor unless ``lower=True``, as
scipy's does). On plain arrays each calls scipy."""

from fastape import linalg as _la
from fastape._decomp import cho_factor, cho_solve, expm, solve_triangular
from fastape._tape import Var

__all__ = ["solve_triangular", "cho_factor", "cho_solve", "expm", "cholesky", "eigh", "solve",
           "inv", "det"]


def cholesky(a, lower=False, overwrite_a=False, check_finite=True):
    """scipy.linalg.cholesky: the upper factor U with a = Uᵀ U from a's upper triangle
    (lower=True: L from the lower one)."""
    if type(a) is not Var:
        import scipy.linalg
        return scipy.linalg.cholesky(a, lower=lower)
    if lower:
        return _la.cholesky(a)
    return _la.cholesky(a.T).T                  # scipy reads the upper triangle here


def eigh(a, b=None, *, lower=True, eigvals_only=False, **kwargs):
    """scipy.linalg.eigh of one symmetric matrix (``b=None``), read from its lower
    (``lower=True``) or upper triangle."""
    if type(a) is not Var:
        import scipy.linalg
        return scipy.linalg.eigh(a, b, lower=lower, eigvals_only=eigvals_only, **kwargs)
    if b is not None or kwargs:
        raise TypeError("scipy.linalg.eigh: only the standard problem (b=None) without "
                        "further options is supported on fastape values")
    uplo = "L" if lower else "U"
    return _la.eigvalsh(a, uplo) if eigvals_only else tuple(_la.eigh(a, uplo))


def solve(a, b, **kwargs):
    """scipy.linalg.solve (the general solver; options other than the defaults are not
    supported on fastape values)."""
    if type(a) is not Var and type(b) is not Var:
        import scipy.linalg
        return scipy.linalg.solve(a, b, **kwargs)
    if kwargs:
        raise TypeError(f"scipy.linalg.solve: options {sorted(kwargs)} are not supported "
                        "on fastape values")
    return _la.solve(a, b)


def inv(a, overwrite_a=False, check_finite=True):
    """scipy.linalg.inv."""
    return _la.inv(a)


def det(a, overwrite_a=False, check_finite=True):
    """scipy.linalg.det."""
    return _la.det(a)
