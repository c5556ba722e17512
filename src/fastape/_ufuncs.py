"""The elementwise functions of fastape, one per public block of the op registry.

``fastape.exp``, ``fastape.erf``, ``fastape.hypot`` … are made here from
``registry.py`` (the block's public name, arity and doc), not written out: on a
fastape value they record the op (``_tape.unary``/``binary``); on plain numbers and
arrays they evaluate it with the tape's own compiled kernel. Their signatures for
type checkers are in ``_ufuncs.pyi``, generated from the registry too
(``python src/fastape/_codegen.py --stub``; a test fails when it is stale).
"""

from fastape import _tape, registry
from fastape._ops import Op
from fastape._tape import Var


def _plain(op, *args):
    """Evaluate an op on plain numbers/arrays with the tape's own kernel."""
    t = _tape.Tape()
    with t:
        vs = [t.constant(a) for a in args]
        r = _tape.unary(op, vs[0]) if len(vs) == 1 else _tape.binary(op, vs[0], vs[1])
        return r.value


def _make_unary(op, name, doc):
    def f(x):
        if type(x) is Var:
            return _tape.unary(op, x)
        return _plain(op, x)
    f.__name__ = f.__qualname__ = name
    f.__doc__ = doc
    return f


def _make_binary(op, name, doc):
    def f(x1, x2):
        if type(x1) is Var or type(x2) is Var:
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
            make = _make_unary if e.arity == 1 else _make_binary
            out[e.public] = make(int(getattr(Op, e.name)), e.public, e.doc)
    return out


#: public name -> function
ELEMENTWISE = _public_functions()
#: aliases: numpy's abs, scipy.special's expit and digamma
ALIASES = {"abs": "absolute", "expit": "sigmoid", "digamma": "psi"}
globals().update(ELEMENTWISE)
globals().update({alias: ELEMENTWISE[name] for alias, name in ALIASES.items()})

__all__ = [*ELEMENTWISE, *ALIASES]  # noqa: PLE0604
