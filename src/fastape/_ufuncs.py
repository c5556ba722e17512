"""The elementwise functions of fastape, one per public block of the op registry.

``fastape.exp``, ``fastape.erf``, ``fastape.hypot`` … are made here from
``registry.py`` (the block's public name, arity and doc), not written out: on a
fastape value they record the op (``_tape.unary``/``binary``); on plain numbers and
arrays they evaluate it with the tape's own compiled kernel. Their signatures for
type checkers are in ``_ufuncs.pyi``, generated from the registry too
(``python src/fastape/_codegen.py --stub``; a test fails when it is stale).
"""

import numpy as np

from fastape import _tape, registry
from fastape._complex import is_complex
from fastape._ops import Op
from fastape._tape import Var


def _plain(op, *args):
    """Evaluate an op on plain numbers/arrays with the tape's own kernel."""
    t = _tape.Tape()
    with t:
        vs = [t.constant(a) for a in args]
        r = _tape.unary(op, vs[0]) if len(vs) == 1 else _tape.binary(op, vs[0], vs[1])
        return r.value


def _complex_call(npfunc, name, *args):
    """A complex argument: numpy's own callable, which dispatches to fastape._complex
    for complex fastape values (or computes a complex number); none: refused."""
    if npfunc is None:
        raise TypeError(f"{name}: an argument is complex, and {name} is defined for real "
                        "values only; apply it to np.real(z), np.imag(z) or abs(z)")
    import importlib
    module, _, attr = npfunc.rpartition(".")
    return getattr(importlib.import_module(module), attr)(*args)


def _make_unary(op, name, doc, npfunc=None):
    def f(x):
        if type(x) is Var:
            return _tape.unary(op, x)
        if is_complex(x):
            return _complex_call(npfunc, name, x)
        return _plain(op, x)
    f.__name__ = f.__qualname__ = name
    f.__doc__ = doc
    return f


def _make_binary(op, name, doc, npfunc=None):
    def f(x1, x2):
        if is_complex(x1) or is_complex(x2):
            return _complex_call(npfunc, name, x1, x2)
        if type(x1) is Var or type(x2) is Var:
            return _tape.binary(op, x1, x2)
        return _plain(op, x1, x2)
    f.__name__ = f.__qualname__ = name
    f.__doc__ = doc
    return f


def not_differentiated(name, arg, value, how="pass it as a number or a numpy array"):
    """The error for a fastape value where an op has no derivative (a shape parameter,
    a Bessel order): refusing it is the alternative to a silently wrong 0."""
    return NotImplementedError(
        f"{name}: the derivative in its argument {arg!r} is not implemented, and {arg} "
        f"is a fastape value (shape {value.shape}); {how} (read a value with "
        f"{arg}.value), or differentiate with respect to the other argument only")


def _integer_orders(name, arg, n):
    """yn's order: scipy truncates a fractional n (with a warning); fastape refuses it."""
    a = np.asarray(n, dtype=np.float64)
    finite = a[np.isfinite(a)]
    if finite.size and np.any(finite != np.floor(finite)):
        raise ValueError(f"{name}: the order {arg} must be an integer, got {n!r}")


def _make_fixed(op, name, doc, arg):
    """A binary op not differentiated in its first operand (registry ``fixed``)."""
    def f(x1, x2):
        if type(x1) is Var:
            raise not_differentiated(name, arg, x1)
        if name == "yn":
            _integer_orders(name, arg, x1)
        if type(x2) is Var:
            return _tape.binary(op, x1, x2)
        return _plain(op, x1, x2)
    f.__name__ = f.__qualname__ = name
    f.__doc__ = doc
    return f


def _public_functions():
    """One function per public elementwise op of the registry, by its public name."""
    out = {}
    for e in registry.ELEMENTWISE:
        if e.public:
            code = int(getattr(Op, e.name))
            if e.fixed:
                out[e.public] = _make_fixed(code, e.public, e.doc, e.fixed)
                continue
            make = _make_unary if e.arity == 1 else _make_binary
            npfunc = next((d for d in e.numpy if d.startswith("numpy.")), None)
            out[e.public] = make(code, e.public, e.doc, npfunc)
    return out


#: public name -> function
ELEMENTWISE = _public_functions()
#: aliases: numpy's abs, scipy.special's expit and digamma
ALIASES = {"abs": "absolute", "expit": "sigmoid", "digamma": "psi"}
globals().update(ELEMENTWISE)
globals().update({alias: ELEMENTWISE[name] for alias, name in ALIASES.items()})

__all__ = [*ELEMENTWISE, *ALIASES]  # noqa: PLE0604
