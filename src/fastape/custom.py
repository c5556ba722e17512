"""Functions with their own derivative rules: ``custom_vjp`` and ``custom_jvp`` (JAX's
names and semantics).

A user gives a function its own derivative to use a numerically stable formula, to
call code fastape cannot record (a C library, ``scipy.integrate``), or for implicit
functions::

    @fastape.custom_vjp
    def f(x):
        return np.log1p(np.exp(x))

    def f_fwd(x):                   # (output, residuals for the backward rule)
        return f(x), x

    def f_bwd(x, g):                # residuals, output cotangent -> one entry per argument
        return (g * fastape.sigmoid(x),)

    f.defvjp(f_fwd, f_bwd)

    @fastape.custom_jvp
    def h(x):
        return np.sin(x)

    @h.defjvp
    def h_jvp(primals, tangents):   # -> (output, output tangent)
        (x,), (t,) = primals, tangents
        return np.sin(x), np.cos(x) * t

Called on plain numbers or arrays the function simply runs. Called on fastape
values it becomes one CALLBACK node whose parents are its fastape-valued arguments:
its value is ``fwd`` (custom_vjp) or the function itself (custom_jvp) run on the
numbers, the reverse sweep calls ``bwd`` (custom_vjp) or the transpose of the jvp
rule (custom_jvp, transposed by a vjp of the rule over a small tape of its own),
and the tangent sweep calls the jvp rule (a custom_vjp function has no tangent rule:
forward mode through it raises, as in JAX). Compiled functions replay the node by
calling the rule: **each such node costs a Python call per sweep**, where every
other node costs nanoseconds.

Under nesting (``grad`` of a ``grad``, Hessians) the recorded reverse sweep runs
the rules on fastape values instead: ``fwd`` then ``bwd`` (custom_vjp), or a
recorded vjp of the jvp rule (custom_jvp), so ``fwd``, ``bwd`` and the jvp rule
must then be written with numpy or fastape operations (not ``float()`` or
``math``); if they are not, the error says so rather than drop a term.

Rules take and return pytrees: ``bwd`` returns a tuple with one entry per
argument of the function, in that argument's structure (``None`` for an argument
it does not differentiate: a zero); the tangents of the jvp rule have the
structure of the arguments, and its output tangent that of the output.
"""

import functools

import numpy as np

from fastape import _nesting, _tape
from fastape._tape import Var
from fastape._tree import flatten, unflatten
from fastape.errors import NoTangentRule, ShapeError, TapeError

__all__ = ["custom_vjp", "custom_jvp"]


class _Rule:
    """The object a CALLBACK node calls (kept in its tape's rule list): one call site
    of a custom function, with the structure of its arguments and output."""

    def __init__(self, owner, args, leaves, treedefs, var_pos):
        self.owner = owner
        self.name = f"custom rule of {owner.__name__}"
        self.template = [list(ls) for ls in leaves]      # argument leaves (Vars replaced)
        self.treedefs = treedefs
        self.var_pos = var_pos                           # [(argument, leaf)] of the parents
        self.shapes = [np.shape(leaves[i][j]) if type(leaves[i][j]) is not Var
                       else leaves[i][j].shape for i, j in var_pos]
        for i, j in var_pos:
            self.template[i][j] = None
        self.out_treedef = None
        self.out_shapes = None

    # -- arguments and outputs ----------------------------------------------------

    def args(self, parents, fill=None):
        """The function's arguments with the parents (flat arrays or values) put back
        at their leaves; `fill(shape)` gives the other leaves instead when given."""
        leaves = [[(fill(np.shape(x)) if fill is not None else x) for x in ls]
                  for ls in self.template]
        for (i, j), p, shape in zip(self.var_pos, parents, self.shapes):
            leaves[i][j] = _shaped(p, shape)
        return tuple(unflatten(td, ls) for td, ls in zip(self.treedefs, leaves))

    def pack(self, out, what):
        """An output pytree as one flat float64 array (its structure fixed at the first
        call: a later call of another structure is an error, not a silent reshape)."""
        leaves, td = flatten(out, what, self.name)
        shapes = [np.shape(x) if type(x) is not Var else x.shape for x in leaves]
        if self.out_treedef is None:
            self.out_treedef, self.out_shapes = td, shapes
        elif td != self.out_treedef:
            raise ShapeError(f"{self.name}: {what} changed structure from "
                             f"{self.out_shapes} to {shapes}")
        if any(type(x) is Var for x in leaves):
            raise TapeError(f"{self.name}: the rule returned a fastape value where numbers "
                            "are expected (it is called on numbers)")
        if not leaves:
            return np.zeros(0)
        return np.concatenate([np.asarray(x, dtype=np.float64).reshape(-1) for x in leaves])

    def unpack(self, flat):
        """A flat array or value of the output's size as the output pytree."""
        parts, start = [], 0
        for shape in self.out_shapes:
            n = int(np.prod(shape))
            if type(flat) is Var:
                part = _tape.strided(_tape.node_var(flat.tape, flat.node, (flat.size,)),
                                     start, 1, tuple(shape)) if flat.size != n or shape != \
                    flat.shape else flat
            else:
                part = np.asarray(flat[start:start + n]).reshape(shape)
                part = float(part) if shape == () else part
            parts.append(part)
            start += n
        return unflatten(self.out_treedef, parts)

    def parent_leaves(self, per_arg, what):
        """From one entry per argument (each in its argument's structure, or None),
        the leaves at the parents' positions (None: 0)."""
        if not isinstance(per_arg, (tuple, list)) or len(per_arg) != len(self.treedefs):
            raise TypeError(f"{self.name}: {what} must be a tuple with one entry per "
                            f"argument ({len(self.treedefs)}), got {per_arg!r:.80}")
        flat = []
        for k, (entry, td) in enumerate(zip(per_arg, self.treedefs)):
            if entry is None:
                flat.append(None)
                continue
            leaves, etd = flatten(entry, f"{what}[{k}]", self.name)
            if etd != td:
                raise ShapeError(f"{self.name}: {what}[{k}] does not have the structure "
                                 f"and shapes of argument {k}")
            flat.append(leaves)
        return [None if flat[i] is None else flat[i][j] for i, j in self.var_pos]

    # -- what the sweeps call (on numbers) ------------------------------------------

    def forward(self, parents):
        out, res = self.owner._forward(self.args(parents))
        return self.pack(out, "the output"), res

    def backward(self, res, lam):
        bars = self.owner._backward(self, res, self.unpack(lam))
        return [None if b is None else np.asarray(b, dtype=np.float64)
                for b in self.parent_leaves(bars, "the backward rule's result")]

    def tangent(self, parents, tangents):
        return self.owner._tangent(self, parents, tangents)

    # -- the recorded reverse sweep (fastape._rules): on values of the tape ---------

    def recorded_backward(self, tape, parents, g):
        with _nesting.recording(tape):
            return self.owner._recorded_backward(self, tape, parents, g)


class _ArrayRule(_Rule):
    """The rule of a call ``f(x)`` of a custom_jvp function with a closed-form
    ``numeric_vjp`` on one fastape array giving one array (the decompositions of
    fastape._decomp): its structure set without walking pytrees, and the sweeps' calls
    without packing and unpacking them. Under an eager gradient of a 30 x 30 Cholesky
    factor that walking was most of the cost of the node (issue 13's MVN objective)."""

    def __init__(self, owner, x, out_shape):
        self.owner = owner
        self.name = f"custom rule of {owner.__name__}"
        self.template = [[None]]
        self.treedefs = [_leaf_def(x.shape)]
        self.var_pos = [(0, 0)]
        self.shapes = [x.shape]
        self.out_treedef = _leaf_def(out_shape)
        self.out_shapes = [out_shape]

    def forward(self, parents):
        x = parents[0].reshape(self.shapes[0])
        out = np.asarray(self.owner.fun(x), dtype=np.float64)
        if out.shape != self.out_shapes[0]:
            raise ShapeError(f"{self.name}: the output changed shape from "
                             f"{self.out_shapes[0]} to {out.shape}")
        return out.reshape(-1), ((x,), out)

    def backward(self, res, lam):
        primals, out = res
        bar = self.owner.numeric_vjp(primals, out, lam.reshape(out.shape))[0]
        return [None if bar is None else np.asarray(bar, dtype=np.float64)]


@functools.lru_cache(maxsize=256)
def _leaf_def(shape):
    """The treedef of one array of this shape."""
    return flatten(np.empty(shape))[1]


def _shaped(p, shape):
    if type(p) is Var:
        return p if p.shape == tuple(shape) else _tape.node_var(p.tape, p.node, tuple(shape))
    a = np.asarray(p, dtype=np.float64).reshape(shape)
    return float(a) if shape == () else a


class _Custom:
    """What custom_vjp and custom_jvp share: recording a call on fastape values."""

    def __init__(self, fun):
        functools.update_wrapper(self, fun)
        self.fun = fun

    def __call__(self, *args):
        if self._array_rule and len(args) == 1 and type(args[0]) is Var:
            x = args[0]
            xv = x.value
            out = np.asarray(self.fun(xv), dtype=np.float64)
            return _tape.callback_node([x], _ArrayRule(self, x, out.shape), out,
                                       ((xv,), out), out.shape)
        per_arg = [flatten(a, f"args[{k}]", self.__name__) for k, a in enumerate(args)]
        leaves = [ls for ls, _ in per_arg]
        var_pos = [(i, j) for i, ls in enumerate(leaves) for j, x in enumerate(ls)
                   if type(x) is Var]
        if not var_pos:
            return self.fun(*args)
        self._check_defined()
        tapes = {id(leaves[i][j].tape): leaves[i][j].tape for i, j in var_pos}
        if len(tapes) > 1:
            raise TapeError(f"{self.__name__}: the arguments hold values of several tapes")
        rule = _Rule(self, args, leaves, [td for _, td in per_arg], var_pos)
        parents = [leaves[i][j] for i, j in var_pos]
        value, res = rule.forward([np.asarray(p.value, dtype=np.float64).reshape(-1)
                                   for p in parents])
        single = len(rule.out_shapes) == 1
        shape = tuple(rule.out_shapes[0]) if single else (value.size,)
        node = _tape.callback_node(parents, rule, value, res, shape)
        return rule.unpack(node)

    # internal (fastape._decomp): True for a custom_jvp function of one array giving
    # one array, with a numeric_vjp: its calls on a fastape array take _ArrayRule
    _array_rule = False

    def _check_defined(self):
        raise NotImplementedError


class custom_vjp(_Custom):
    """Decorator giving a function its own reverse-mode rule (JAX's
    ``jax.custom_vjp``): ``f.defvjp(fwd, bwd)`` with ``fwd(*args) -> (out, res)`` and
    ``bwd(res, cotangent) -> tuple`` (one entry per argument). See ``fastape.custom``."""

    def __init__(self, fun):
        super().__init__(fun)
        self.fwd = self.bwd = None

    def defvjp(self, fwd, bwd):
        """Set the forward rule ``fwd(*args) -> (output, residuals)`` and the backward
        rule ``bwd(residuals, output_cotangent) -> tuple``, one entry per argument."""
        self.fwd, self.bwd = fwd, bwd

    def _check_defined(self):
        if self.fwd is None:
            raise TypeError(f"{self.__name__}: a custom_vjp function needs its rules: call "
                            f"{self.__name__}.defvjp(fwd, bwd) first")

    def _forward(self, args):
        r = self.fwd(*args)
        if not (isinstance(r, tuple) and len(r) == 2):
            raise TypeError(f"{self.__name__}: fwd must return (output, residuals)")
        return r

    def _backward(self, rule, res, cot):
        return self.bwd(res, cot)

    def _tangent(self, rule, parents, tangents):
        raise NoTangentRule(f"{self.__name__} has a custom_vjp rule only: forward mode (jvp, "
                            "jacfwd) cannot differentiate it; give it a custom_jvp rule, "
                            "or use reverse mode (jacrev)")

    def _recorded_backward(self, rule, tape, parents, g):
        try:
            _, res = self._forward(rule.args(parents))
            bars = self.bwd(res, rule.unpack(g))
        except TypeError as e:
            raise TapeError(f"{self.__name__}: nested differentiation runs fwd and bwd on "
                            f"fastape values, and that failed ({e}); write fwd and bwd with "
                            "numpy or fastape operations") from e
        return rule.parent_leaves(bars, "the backward rule's result")


class custom_jvp(_Custom):
    """Decorator giving a function its own forward-mode rule (JAX's
    ``jax.custom_jvp``): ``@f.defjvp`` on ``rule(primals, tangents) -> (out,
    tangent_out)``. Reverse mode transposes the rule (it must be linear in the
    tangents). See ``fastape.custom``."""

    def __init__(self, fun):
        super().__init__(fun)
        self.rule = None
        # internal (fastape._decomp): the transpose of the rule in closed form, on
        # numbers: numeric_vjp(primals, output, cotangent) -> one entry per argument.
        # The eager and compiled reverse sweeps call it instead of transposing the
        # rule over a tape recorded each time; nested sweeps still transpose the rule.
        self.numeric_vjp = None

    def defjvp(self, rule):
        """Set ``rule(primals, tangents) -> (output, output_tangent)`` (primals and
        tangents: tuples of the arguments); returns the rule (usable as a decorator)."""
        self.rule = rule
        return rule

    def _check_defined(self):
        if self.rule is None:
            raise TypeError(f"{self.__name__}: a custom_jvp function needs its rule: "
                            f"decorate it with @{self.__name__}.defjvp first")

    def _forward(self, args):
        out = self.fun(*args)
        return out, (args, out)

    def _apply(self, primals, tangents):
        r = self.rule(primals, tangents)
        if not (isinstance(r, tuple) and len(r) == 2):
            raise TypeError(f"{self.__name__}: the jvp rule must return (output, "
                            "output_tangent)")
        return r[1]

    def _backward(self, rule, res, cot):
        from fastape import api

        primals, out = res
        if self.numeric_vjp is not None:
            return self.numeric_vjp(primals, out, cot)
        zeros = rule.args([np.zeros(s) for s in rule.shapes], fill=np.zeros)
        _, f_vjp = api.vjp(lambda *ts: self._apply(primals, ts), *zeros)
        return f_vjp(cot)

    def _tangent(self, rule, parents, tangents):
        tout = self._apply(rule.args(parents), rule.args(tangents, fill=np.zeros))
        return rule.pack(tout, "the output tangent")

    def _recorded_backward(self, rule, tape, parents, g):
        from fastape import _rules

        us = [tape.constant(np.zeros(s)) for s in rule.shapes]
        tout = self._apply(rule.args(parents), rule.args(us, fill=np.zeros))
        touts, _ = flatten(tout, "the output tangent", self.__name__)
        cots, _ = flatten(rule.unpack(g), "the cotangent", self.__name__)
        seeds = [(o, c) for o, c in zip(touts, cots) if type(o) is Var]
        if not seeds:
            return [None] * len(us)
        return _rules.vjp(tape, seeds, us)


class linear_map(_Custom):
    """A function linear (affine, with constant arguments) in its fastape-valued
    arguments whose transpose is known in closed form (internal: the FFT family,
    ``fastape._fft``). ``fun(*args) -> tuple`` and ``transpose(*cotangents) -> tuple``
    (one entry per argument of fun, None for an argument that is None) run on numbers.

    One CALLBACK node: its tangent is ``fun`` of the tangents (the constant arguments
    zero), its reverse ``transpose`` of the cotangent, and under nesting the reverse is
    recorded as the transpose's own linear_map (whose transpose is ``fun``), so linear
    maps nest to any order without a rule of their own."""

    def __init__(self, fun, transpose, name, _transposed=None, recipe=None):
        super().__init__(fun)
        self.__name__ = name
        self.transpose = transpose
        self._transposed = _transposed
        self.recipe = recipe            # (builder, args): how pickle makes it again

    def __reduce__(self):
        # the functions are closures of their builder: a pickle names the builder (a
        # module-level function) and its arguments instead
        if self.recipe is not None:
            return _rebuild_linear, (*self.recipe, False)
        if self._transposed is not None and self._transposed.recipe is not None:
            return _rebuild_linear, (*self._transposed.recipe, True)
        raise TypeError(f"{self.__name__}: this linear map cannot be pickled (it has no "
                        "recipe)")

    @property
    def T(self):
        """The transpose as a linear_map (whose transpose is this one)."""
        if self._transposed is None:
            self._transposed = linear_map(self.transpose, self.fun, f"transpose of "
                                          f"{self.__name__}", _transposed=self)
        return self._transposed

    def _check_defined(self):
        pass

    def _forward(self, args):
        return self.fun(*args), None

    def _backward(self, rule, res, cot):
        return self.transpose(*cot)

    def _tangent(self, rule, parents, tangents):
        return rule.pack(self.fun(*rule.args(tangents, fill=np.zeros)), "the output tangent")

    def _recorded_backward(self, rule, tape, parents, g):
        return rule.parent_leaves(self.T(*rule.unpack(g)), "the transpose's result")


def _rebuild_linear(builder, args, transposed):
    op = builder(*args)
    return op.T if transposed else op
