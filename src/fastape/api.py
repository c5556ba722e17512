"""Function transforms: ``grad`` and ``value_and_grad`` in the style of autograd and JAX."""

import functools
import numbers

import numpy as np

from fastape import _nesting, _rules, _tape
from fastape._compiled import Function
from fastape._complex import Complex
from fastape._complex import is_complex as _is_complex
from fastape._tape import Tape, Var
from fastape._tree import conjugate, describe, flatten, normalize_argnums, unflatten
from fastape.errors import NoTangentRule, ShapeError, TapeError


def _gradient_like(leaf, g):
    """A leaf's multiplier in the leaf's kind: an array of its shape for an ndarray
    (a 0-d one too), a float for a number."""
    if isinstance(leaf, np.ndarray):
        return np.asarray(g, dtype=np.float64).reshape(leaf.shape)
    return g


def value_and_grad(fun, argnums=0, holomorphic=False):
    """Return a function computing ``(fun(*args), ∂fun/∂args[argnums])``.

    ``fun`` must return a scalar. Differentiated arguments are pytrees (see
    ``fastape._tree``): numbers and numpy arrays in (nested) lists, tuples,
    namedtuples and dicts, with None as an empty container. The gradient has the
    argument's structure: namedtuples as namedtuples, dicts as dicts of the same type
    and key order, floats for numbers and arrays of the argument's shape. With a
    tuple ``argnums`` the gradient is a tuple, one entry per argument. The arguments
    are copied onto the tape and never modified.

    Called while another transform's function is being recorded (``grad(grad(f))``,
    ``grad`` inside a compiled function, ``hessian``), or on fastape values, the
    gradient is itself recorded on that tape (``fastape._rules``), so it can be
    differentiated again; value and gradient are then fastape values.

    Complex arguments follow JAX: for a real ``fun`` of ``z = x + iy`` the gradient is
    ``∂fun/∂x − i ∂fun/∂y`` (so ``grad(lambda z: abs(z) ** 2)(z) = 2 conj(z)``). With
    ``holomorphic=True``, ``fun`` returns a complex scalar, its differentiated
    arguments are complex, and the gradient is the complex derivative ``fun'(z)``;
    the Cauchy–Riemann equations are checked at the point, and a function that fails
    them raises ValueError.
    """
    where = f"grad of {getattr(fun, '__name__', 'function')}"

    positions = {}                          # len(args) -> normalize_argnums(...)

    @functools.wraps(fun)
    def value_and_grad_fun(*args, **kwargs):
        got = positions.get(len(args))
        if got is None:
            got = positions[len(args)] = normalize_argnums(argnums, len(args), where)
        single, nums = got
        # plain float/ndarray arguments and no enclosing transform: compiled, without
        # the pytree bookkeeping below (None: not applicable)
        fast = _tape.eager_value_and_grad(fun, args, kwargs, nums, single, where,
                                          _nesting.tapes(), _eager_constant)
        if fast is not None:
            return fast
        flat = {}                           # argument position -> (leaves, treedef)
        for i in nums:
            if i not in flat:
                flat[i] = flatten(args[i], f"args[{i}]", where)
        outer = _outer_tape(flat, where)
        if outer is not None:
            return _nested_value_and_grad(fun, args, kwargs, flat, nums, single, outer, where)
        tape = Tape()
        tape.lean_constants = True      # only the inputs' multipliers are read
        try:
            with tape:
                out, inputs = _record(fun, args, kwargs, flat, tape, where)
            if isinstance(out, Var):
                _tape.check_scalar_output(out, tape, where)
                value = out.value
                value = float(value) if np.ndim(value) == 0 else value
                adjoints = iter(tape.gradient(out, [v for vs in inputs.values() for v in vs]))
                leaf_grads = {i: [_gradient_like(x, next(adjoints)) for x in leaves]
                              for i, (leaves, _) in flat.items()}
            else:
                value = _constant_scalar(out, where)
                leaf_grads = {i: [_zeros_like(x) for x in leaves]
                              for i, (leaves, _) in flat.items()}
        finally:
            tape.release()
        grads = [unflatten(flat[i][1], conjugate(flat[i][1], leaf_grads[i])) for i in nums]
        return value, (grads[0] if single else tuple(grads))

    if holomorphic:
        return _holomorphic(fun, argnums, where)
    return value_and_grad_fun


def _eager_constant(out, args, nums, single, where):
    """The eager fast path's result for a function whose output is not on the tape."""
    grads = [_zeros_like(args[i]) for i in nums]
    return _constant_scalar(out, where), (grads[0] if single else tuple(grads))


def _constant_scalar(out, where):
    """The value of a function output that is not on the tape (its gradient is 0)."""
    if type(out) is Complex or isinstance(out, (complex, np.complexfloating)) or (
            isinstance(out, np.ndarray) and out.dtype.kind == "c"):
        raise TypeError(f"{where}: the function returns a complex value; grad needs a real "
                        "scalar: differentiate np.real(f), np.abs(f) ** 2 or another real "
                        "function of it, or use grad(f, holomorphic=True) for a holomorphic "
                        "f of a complex argument")
    if isinstance(out, numbers.Real) or (isinstance(out, np.ndarray) and out.size == 1
                                         and out.dtype.kind in "biuf"):
        return float(np.asarray(out).reshape(()))
    if isinstance(out, np.ndarray) and out.dtype.kind in "biuf":
        raise ShapeError(f"{where}: the function must return a scalar to be "
                         f"differentiated, got an array of shape {out.shape}")
    raise TypeError(f"{where}: the function must return a real scalar, got "
                    f"{type(out).__name__}")


def _zeros_like(x):
    shape = x.shape if isinstance(x, (np.ndarray, Var)) else ()
    return np.zeros(shape) if isinstance(x, np.ndarray) or shape else 0.0


def _outer_tape(flat, where):
    """The tape a transform must record on: that of the fastape values among the
    differentiated leaves, else the tape of an enclosing transform (None: neither,
    the transform runs its own tape and the compiled sweeps)."""
    tape = None
    for leaves, _ in flat.values():
        for x in leaves:
            if type(x) is Var:
                if tape is None:
                    tape = x.tape
                elif x.tape is not tape:
                    raise TapeError(f"{where}: the arguments hold values of several tapes")
    if tape is None:
        return _nesting.active()
    if tape.closed:
        raise TapeError(f"{where}: the arguments are values of a tape whose recording "
                        "has ended; a nested transform records on the enclosing tape")
    return tape


def _record(fun, args, kwargs, flat, tape, where, nested=False):
    """Call fun on the differentiated leaves made values of `tape`: inputs of a fresh
    tape, or, nested, copies of the caller's values (a fresh node each, so that the
    inner derivative is with respect to this argument only) and constants for plain
    numbers. Returns (output, {argument position: [input values]})."""
    call_args = list(args)
    inputs = {}
    for i, (leaves, treedef) in flat.items():
        inputs[i] = _inputs(leaves, tape, where, f"args[{i}]", fresh=not nested)
        call_args[i] = unflatten(treedef, _handles(inputs[i]))
    with _nesting.recording(tape):
        out = fun(*call_args, **kwargs)
    return out, inputs


def _handles(vs):
    """Other Vars of the same input values, for the function to hold: an update inside
    it (``x[i] = v`` rebinds x to a new node) must not move the input whose derivative
    is taken."""
    return [v.copy() for v in vs]


def _inputs(leaves, tape, where, what, fresh):
    """The differentiated leaves as values of `tape`: inputs of a fresh tape; on an
    enclosing one, a copy of each of the caller's values (a node of its own, so that
    the inner derivative is with respect to this argument only) and constants."""
    vs = []
    for x in leaves:
        if type(x) is Var:
            if x.tape is not tape:
                raise TapeError(f"{where}: {what} holds a value of another tape")
            vs.append(_tape.copy_as(x, x.shape))
        else:
            vs.append(tape.var(x) if fresh else tape.constant(x))
    return vs


def _view(g, shape):
    """A recorded multiplier (a flat value or None for 0) as a leaf gradient of `shape`."""
    if g is None:
        return np.zeros(shape) if shape else 0.0
    return _tape.node_var(g.tape, g.node, tuple(shape))


def _nested_value_and_grad(fun, args, kwargs, flat, nums, single, tape, where):
    out, inputs = _record(fun, args, kwargs, flat, tape, where, nested=True)
    every = [v for vs in inputs.values() for v in vs]
    if isinstance(out, Var):
        _tape.check_scalar_output(out, tape, where)
        gs = iter(_rules.vjp(tape, [(out, None)], every))
        value = out
    else:
        value = _constant_scalar(out, where)
        gs = iter([None] * len(every))
    leaf_grads = {i: [_view(next(gs), v.shape) for v in vs] for i, vs in inputs.items()}
    grads = [unflatten(flat[i][1], conjugate(flat[i][1], leaf_grads[i])) for i in nums]
    return value, (grads[0] if single else tuple(grads))


def _holomorphic(fun, argnums, where):
    """value_and_grad(fun, holomorphic=True): the complex derivative by two reverse
    sweeps of one recording, vjp(1) and vjp(i); a holomorphic fun has vjp(i) = i·vjp(1)
    (Cauchy–Riemann), checked where the numbers are at hand."""

    @functools.wraps(fun)
    def holomorphic_fun(*args, **kwargs):
        single, nums = normalize_argnums(argnums, len(args), where)
        for i in nums:
            _, td = flatten(args[i], f"args[{i}]", where)
            if 2 * len(td.imag_leaves) != td.num_leaves:
                raise TypeError(f"{where}: holomorphic=True needs complex arguments; "
                                f"args[{i}] is {describe(td)} (pass x + 0j)")

        def at(*diff):
            a = list(args)
            for i, d in zip(nums, diff):
                a[i] = d
            return fun(*a, **kwargs)

        out, f_vjp = vjp(at, *[args[i] for i in nums])
        if not (type(out) is Complex or isinstance(out, (complex, np.complexfloating))) \
                or np.shape(out) != ():
            raise TypeError(f"{where}: holomorphic=True needs a complex scalar output, got "
                            f"{type(out).__name__} of shape {np.shape(out)}")
        g1 = f_vjp(1.0 + 0.0j)
        gi = f_vjp(1.0j)
        l1, li = flatten(g1, "gradient", where)[0], flatten(gi, "gradient", where)[0]
        if not any(type(x) is Var for x in l1 + li):     # nested: no numbers at hand
            for k in range(0, len(l1), 2):              # (real, imaginary) leaf pairs
                d1 = np.asarray(l1[k]) + 1j * np.asarray(l1[k + 1])
                di = np.asarray(li[k]) + 1j * np.asarray(li[k + 1])
                scale = max(1.0, float(np.max(np.abs(d1), initial=0.0)))
                if not np.allclose(di, 1j * d1, rtol=1e-7, atol=1e-9 * scale):
                    raise ValueError(f"{where}: the function is not holomorphic at this "
                                     "point (the Cauchy–Riemann equations fail); take grad "
                                     "of a real function of it (np.real, np.abs) instead")
        return out, (g1[0] if single else tuple(g1))

    return holomorphic_fun


def grad(fun, argnums=0, holomorphic=False):
    """Return a function computing the gradient of scalar ``fun`` with respect to
    ``args[argnums]`` (see :func:`value_and_grad`; ``holomorphic=True`` gives the
    complex derivative of a holomorphic ``fun``).

    >>> import fastape as ft, numpy as np
    >>> ft.grad(lambda x: np.sum(x ** 2))(np.array([1.0, 2.0]))
    array([2., 4.])
    """
    vg = value_and_grad(fun, argnums, holomorphic)

    @functools.wraps(fun)
    def grad_fun(*args, **kwargs):
        return vg(*args, **kwargs)[1]

    return grad_fun


# ---------------------------------------------------------------------------
# forward mode, vector-Jacobian products, Jacobians and Hessians
# ---------------------------------------------------------------------------

def _name(fun):
    return getattr(fun, "__name__", "function")


def _primals(primals, where, what="primals"):
    if not isinstance(primals, (tuple, list)):
        raise TypeError(f"{where}: {what} must be a tuple (or list) of arguments, got "
                        f"{type(primals).__name__}")
    return flatten(tuple(primals), what, where)


def _as_value(tape, x, shape):
    """x (a tangent or cotangent leaf) as a value of `tape`, flat: itself, or a constant."""
    if type(x) is Var:
        if x.tape is not tape:
            raise TapeError("a tangent or cotangent belongs to another tape")
        v = x
    else:
        v = tape.constant(np.asarray(x, dtype=np.float64).reshape(shape))
    return _tape.node_var(tape, v.node, () if v.size == 1 else (v.size,))


def _outputs(out, where):
    """(leaves, treedef) of a function's output pytree: values, numbers and arrays."""
    return flatten(out, "output", where)


def _check_like(found, expected, where, what):
    from fastape._tree import complex_mismatch, difference
    if found is not expected and found != expected:
        if complex_mismatch(found, expected):
            raise TypeError(f"{where}: {difference(found, expected, what)}: complex where the "
                            "primal is real, or the reverse (the dtypes must agree, as in JAX)")
        raise ShapeError(f"{where}: {difference(found, expected, what)} ({what} has the "
                         f"structure {describe(found)}, expected {describe(expected)})")


def _value_of(o):
    if type(o) is Var:
        v = o.value
        return float(v) if np.ndim(v) == 0 else v
    return float(o) if np.ndim(o) == 0 else np.array(o, dtype=np.float64)


def _tangent_sweep(tape, inputs, tangent_leaves, outs):
    """Tangents of the outputs `outs` (values of `tape`, or constants) by one
    compiled tangent sweep seeded with tangent_leaves on `inputs`."""
    tape.forward_tangents(inputs, [np.asarray(v, dtype=np.float64) for v in tangent_leaves])
    return [tape.tangent(o) if type(o) is Var else _zeros_like(o) for o in outs]


def _nested_jvp(tape, inputs, tangent_leaves, outs):
    """Tangents of `outs` recorded on `tape` (so that they can be differentiated):
    J v = ∂/∂u ⟨Jᵀu, v⟩ by two recorded reverse sweeps, u a zero cotangent."""
    pairs = [(o, tape.constant(np.zeros(o.shape))) for o in outs if type(o) is Var]
    result = {}
    if pairs:
        g = _rules.vjp(tape, pairs, inputs)
        seeds = [(gj, _as_value(tape, v, x.shape)) for gj, v, x in zip(g, tangent_leaves, inputs)
                 if gj is not None]
        if seeds:
            tl = _rules.vjp(tape, seeds, [u for _, u in pairs])
            result = {id(o): t for (o, _), t in zip(pairs, tl)}
    return [_view(result.get(id(o)), o.shape) if type(o) is Var else _zeros_like(o)
            for o in outs]


def jvp(fun, primals, tangents):
    """Forward mode: ``(fun(*primals), J·tangents)``, the Jacobian-vector product (JAX's
    ``jax.jvp``). ``primals`` and ``tangents`` are tuples of the same structure (pytrees
    of numbers and arrays, one entry per argument of ``fun``); the output may be any
    pytree of values, and its tangent has its structure.

    One recording of ``fun`` and one tangent sweep (compiled, op-agnostic: each node's
    tangent is d0·ẋ + d1·ẏ, structural ops their own rule). Nested inside another
    transform, the tangent is recorded instead, so it can be differentiated.

    >>> import fastape as ft, numpy as np
    >>> ft.jvp(lambda x: np.sin(x) * x, (1.0,), (1.0,))   # (sin 1, cos 1 + sin 1)
    (0.8414709848078965, 1.3817732906760363)
    """
    where = f"jvp of {_name(fun)}"
    leaves, td = _primals(primals, where)
    tleaves, ttd = _primals(tangents, where, "tangents")
    _check_like(ttd, td, where, "tangents")
    for t in tleaves:
        if type(t) is not Var and np.asarray(t).dtype.kind == "c":
            raise TypeError(f"{where}: a tangent is complex; fastape differentiates real "
                            "functions")
    outer = _outer_tape({0: (leaves + [t for t in tleaves if type(t) is Var], td)}, where)
    if outer is not None:
        out, inputs = _record_args(fun, primals, td, leaves, outer, where)
        outs, otd = _outputs(out, where)
        return out, unflatten(otd, _nested_jvp(outer, inputs, tleaves, outs))
    tape = Tape()
    try:
        with tape:
            out, inputs = _record_args(fun, primals, td, leaves, tape, where, fresh=True)
        outs, otd = _outputs(out, where)
        tans = _tangent_sweep(tape, inputs, tleaves, outs)
        return unflatten(otd, [_value_of(o) for o in outs]), unflatten(otd, tans)
    finally:
        tape.release()


def _record_args(fun, primals, td, leaves, tape, where, fresh=False):
    """fun called with every argument recorded on tape (inputs of a fresh tape, or
    copies and constants on an enclosing one). Returns (output, input values)."""
    vs = _inputs(leaves, tape, where, "the primals", fresh)
    with _nesting.recording(tape):
        out = fun(*unflatten(td, _handles(vs)))
    return out, vs


def linearize(fun, *primals):
    """``(fun(*primals), f_jvp)`` where ``f_jvp(*tangents)`` is the Jacobian-vector
    product at ``primals`` (JAX's ``jax.linearize``): ``fun`` is recorded once and each
    call runs one tangent sweep over the recording."""
    where = f"linearize of {_name(fun)}"
    leaves, td = _primals(primals, where)
    outer = _outer_tape({0: (leaves, td)}, where)
    if outer is not None:
        out = jvp(fun, primals, unflatten(td, [_zeros_like(x) for x in leaves]))[0]

        def f_jvp_nested(*tangents):
            return jvp(fun, primals, tangents)[1]
        return out, f_jvp_nested
    tape = Tape()
    with tape:
        out, inputs = _record_args(fun, primals, td, leaves, tape, where, fresh=True)
    outs, otd = _outputs(out, where)

    def f_jvp(*tangents):
        tleaves, ttd = _primals(tangents, where, "tangents")
        _check_like(ttd, td, where, "tangents")
        return unflatten(otd, _tangent_sweep(tape, inputs, tleaves, outs))

    return unflatten(otd, [_value_of(o) for o in outs]), f_jvp


def vjp(fun, *primals):
    """``(fun(*primals), f_vjp)`` where ``f_vjp(cotangent)`` returns the tuple of
    ``cotangentᵀ ∂fun/∂primals[i]``, one entry per primal in its structure (JAX's
    ``jax.vjp``). The cotangent has the output's structure. ``fun`` is recorded once;
    each call of ``f_vjp`` is one reverse sweep."""
    where = f"vjp of {_name(fun)}"
    leaves, td = _primals(primals, where)
    outer = _outer_tape({0: (leaves, td)}, where)
    tape = outer if outer is not None else Tape()
    if outer is None:
        tape.lean_constants = True      # f_vjp reads the inputs' multipliers only
    if outer is not None:
        out, inputs = _record_args(fun, primals, td, leaves, tape, where)
        outs, otd = _outputs(out, where)
        packed = None
    else:
        with tape:
            out, inputs = _record_args(fun, primals, td, leaves, tape, where, fresh=True)
            outs, otd = _outputs(out, where)
            packed = _pack(outs)

    def f_vjp(cotangent):
        if otd.imag_leaves and otd.num_leaves == 2 and not _is_complex(cotangent):
            # a real cotangent of a complex output: its imaginary part is 0
            cotangent = Complex(cotangent) if type(cotangent) is Var else \
                np.asarray(cotangent) + 0j if np.ndim(cotangent) else complex(cotangent)
        cleaves, ctd = flatten(cotangent, "cotangent", where)
        _check_like(ctd, otd, where, "cotangent")
        cleaves = conjugate(ctd, cleaves)       # JAX's convention: conj(Jᵀ conj(c))
        if outer is not None:
            seeds = [(o, _as_value(tape, c, o.shape)) for o, c in zip(outs, cleaves)
                     if type(o) is Var]
            gs = _rules.vjp(tape, seeds, inputs) if seeds else [None] * len(inputs)
            grads = [_view(g, x.shape) for g, x in zip(gs, inputs)]
        elif packed is None:
            grads = [_zeros_like(x) for x in leaves]
        else:
            for c in cleaves:
                if type(c) is not Var and np.asarray(c).dtype.kind == "c":
                    raise TypeError(f"{where}: the cotangent is complex; fastape "
                                    "differentiates real functions")
            var_cots = [np.asarray(c, dtype=np.float64).reshape(-1)
                        for o, c in zip(outs, cleaves) if type(o) is Var]
            tape.backward(packed, np.concatenate(var_cots).reshape(packed.shape)
                          if len(var_cots) > 1 or packed.shape != outs[0].shape
                          else var_cots[0].reshape(packed.shape))
            grads = [_gradient_like(x, tape.adjoint(v)) for x, v in zip(leaves, inputs)]
        return tuple(unflatten(td, conjugate(td, grads)))

    return unflatten(otd, [o if outer is not None else _value_of(o) for o in outs]), f_vjp


def _pack(outs):
    """The output values as one value of the tape (for one sweep over all of them):
    the value itself when there is one, else their flattened concatenation."""
    from fastape import _functions
    vs = [o for o in outs if type(o) is Var]
    if not vs:
        return None
    if len(vs) == 1 and len(outs) == 1:
        return vs[0]
    return _functions.concatenate([_functions.reshape(v, (-1,)) for v in vs])


def jacobian(fun, argnums=0, mode="auto"):
    """Return a function computing the Jacobian of ``fun`` with respect to
    ``args[argnums]``: for an output of shape S and an argument leaf of shape T an
    array of shape S + T (JAX's layout); pytree arguments give their structure, tuple
    ``argnums`` a tuple, pytree outputs their structure of those.

    ``mode``: ``"fwd"`` (vector forward mode: tangent sweeps of up to 64 directions
    each, one pass per block of input elements), ``"rev"`` (one reverse sweep per
    output element), or ``"auto"``: forward when the inputs are fewer than the outputs.
    """
    if mode not in ("auto", "fwd", "rev"):
        raise ValueError(f"jacobian: mode must be 'auto', 'fwd' or 'rev', got {mode!r}")
    where = f"jacobian of {_name(fun)}"

    @functools.wraps(fun)
    def jac_fun(*args, **kwargs):
        single, nums = normalize_argnums(argnums, len(args), where)
        flat = {}
        for i in nums:
            if i not in flat:
                flat[i] = flatten(args[i], f"args[{i}]", where)
        outer = _outer_tape(flat, where)
        tape = outer if outer is not None else Tape()
        if outer is None:
            tape.lean_constants = True  # the rows read the inputs' multipliers only
        try:
            if outer is not None:
                out, inputs = _record(fun, args, kwargs, flat, tape, where, nested=True)
            else:
                with tape:
                    out, inputs = _record(fun, args, kwargs, flat, tape, where)
            outs, otd = _outputs(out, where)
            if otd.imag_leaves or any(flat[i][1].imag_leaves for i in flat):
                raise TypeError(f"{where}: a complex argument or output: Jacobians and "
                                "Hessians of complex functions are not supported; use "
                                "jvp/vjp, or grad of a real-valued function")
            every = [v for i in flat for v in inputs[i]]
            blocks = _jacobian_blocks(tape, outer is not None, outs, every, mode)
            result = []
            for j in range(len(outs)):
                per_leaf = iter(blocks[j])
                per_arg = {i: unflatten(flat[i][1], [next(per_leaf) for _ in inputs[i]])
                           for i in flat}
                ga = [per_arg[i] for i in nums]
                result.append(ga[0] if single else tuple(ga))
            return unflatten(otd, result)
        finally:
            if outer is None:
                tape.release()

    return jac_fun


def _jacobian_blocks(tape, nested, outs, inputs, mode):
    """blocks[j][q]: ∂outs[j]/∂inputs[q], of shape outs[j].shape + inputs[q].shape."""
    shapes = [np.shape(o) if type(o) is not Var else o.shape for o in outs]
    n_out = sum(int(np.prod(s)) for s in shapes)
    n_in = sum(v.size for v in inputs)
    if nested:
        return _nested_jacobian(tape, outs, shapes, inputs)
    if mode == "auto":
        mode = "fwd" if n_in < n_out else "rev"
    J = np.zeros((n_out, n_in))
    packed = _pack(outs) if mode == "rev" else None
    var_rows = []               # packed row ranges of the outputs that are values
    r = 0
    for o, s in zip(outs, shapes):
        m = int(np.prod(s))
        if type(o) is Var:
            var_rows.append((r, m))
        r += m
    if mode == "fwd" and n_in:
        for lo in range(0, n_in, 64):
            p = min(64, n_in - lo)
            dirs, c = [], 0
            for v in inputs:
                d = np.zeros((p, v.size))
                for q in range(p):
                    if 0 <= lo + q - c < v.size:
                        d[q, lo + q - c] = 1.0
                dirs.append(d.reshape((p,) + v.shape))
                c += v.size
            tape.forward_tangents(inputs, dirs, p=p)
            for o, (r0, m) in zip([o for o in outs if type(o) is Var], var_rows):
                J[r0:r0 + m, lo:lo + p] = np.asarray(tape.tangent(o)).reshape(p, m).T
    elif mode == "rev" and packed is not None:
        rows = np.concatenate([np.arange(r0, r0 + m) for r0, m in var_rows])
        for e, row in enumerate(rows):
            cot = np.zeros(packed.size)
            cot[e] = 1.0
            tape.backward(packed, cot.reshape(packed.shape))
            J[row] = np.concatenate([np.asarray(tape.adjoint(v), dtype=np.float64).reshape(-1)
                                     for v in inputs]) if inputs else np.zeros(0)
    return _split(J, shapes, [v.shape for v in inputs])


def _split(J, out_shapes, in_shapes):
    blocks, r = [], 0
    for s in out_shapes:
        m = int(np.prod(s))
        row, c = [], 0
        for t in in_shapes:
            n = int(np.prod(t))
            row.append(J[r:r + m, c:c + n].reshape(tuple(s) + tuple(t)))
            c += n
        blocks.append(row)
        r += m
    return blocks


def _nested_jacobian(tape, outs, shapes, inputs):
    """Jacobian blocks recorded on tape (one recorded reverse sweep per output element)."""
    from fastape import _functions
    blocks = []
    for o, s in zip(outs, shapes):
        m = int(np.prod(s))
        if type(o) is not Var:
            blocks.append([np.zeros(tuple(s) + v.shape) for v in inputs])
            continue
        rows = [[] for _ in inputs]
        for e in range(m):
            cot = np.zeros(m)
            cot[e] = 1.0
            gs = _rules.vjp(tape, [(o, tape.constant(cot.reshape(s)))], inputs)
            for q, (g, v) in enumerate(zip(gs, inputs)):
                rows[q].append(_tape.node_var(tape, g.node, (v.size,)) if g is not None
                               else tape.constant(np.zeros(v.size)))
        blocks.append([_functions.reshape(_functions.stack(rq), tuple(s) + v.shape)
                       if rq else np.zeros(tuple(s) + v.shape)
                       for rq, v in zip(rows, inputs)])
    return blocks


def jacfwd(fun, argnums=0):
    """:func:`jacobian` in forward mode (JAX's ``jax.jacfwd``)."""
    return jacobian(fun, argnums, mode="fwd")


def jacrev(fun, argnums=0):
    """:func:`jacobian` in reverse mode (JAX's ``jax.jacrev``)."""
    return jacobian(fun, argnums, mode="rev")


def hessian(fun, argnums=0):
    """Return a function computing the Hessian of scalar ``fun`` with respect to
    ``args[argnums]``: forward mode over the recorded reverse sweep (the gradient is
    recorded on the tape, then differentiated by vector tangent sweeps). For an
    argument of shape T the result has shape T + T.

    >>> import fastape as ft, numpy as np
    >>> ft.hessian(lambda x: x[0] ** 2 * x[1])(np.array([1.0, 2.0]))
    array([[4., 2.],
           [2., 0.]])

    A function with a reverse rule only (``custom_vjp``) has no tangents: its Hessian
    is then taken reverse over reverse (one recorded reverse sweep per gradient entry).
    """
    fwd = jacobian(grad(fun, argnums), argnums, mode="fwd")
    rev = jacobian(grad(fun, argnums), argnums, mode="rev")

    @functools.wraps(fun)
    def hessian_fun(*args, **kwargs):
        try:
            return fwd(*args, **kwargs)
        except NoTangentRule:
            return rev(*args, **kwargs)

    return hessian_fun


def hvp(fun, x, v):
    """The Hessian-vector product ∇²fun(x)·v of scalar ``fun`` of one argument ``x`` (a
    pytree; ``v`` of its structure): forward over reverse, one recording and one
    tangent sweep over the recorded gradient (reverse over reverse, the gradient of
    ⟨∇fun, v⟩, when fun has a reverse rule only: ``custom_vjp``)."""
    try:
        return jvp(grad(fun), (x,), (v,))[1]
    except NoTangentRule:
        vl = flatten(v, "v", "hvp")[0]
        return grad(lambda y: _vdot(grad(fun)(y), vl))(x)


def _vdot(tree, vleaves):
    """⟨tree, v⟩ over the leaves (fastape values stay on the tape)."""
    from fastape import _functions
    s = 0.0
    for a, b in zip(flatten(tree, "gradient", "hvp")[0], vleaves):
        s = s + (_functions.sum(a * b) if type(a) is Var else float(np.sum(a * b)))
    return s


def compile(fun, *example_args, argnums=0, retrace=True, max_traces=8):  # noqa: A001
    """Record ``fun`` once on ``example_args`` and return a :class:`Function` that
    replays the tape on new arguments of the same shapes at C speed.

    ``F(*args)`` is the value, ``F.grad(*args)`` / ``F.value_and_grad(*args)`` the
    gradient with respect to ``args[argnums]``, ``F.vjp(args, cotangent)`` a
    vector-Jacobian product, ``F.jvp(args, tangents)`` a Jacobian-vector product
    (forward mode), ``F.jacobian(*args, mode=)`` the Jacobian, ``F.hvp(args, v)``
    and ``F.hessian(*args)`` second derivatives (forward over reverse),
    ``F.grad_batch(X)`` gradients at the rows of X on several threads. All arguments
    are inputs of the tape (they may change from call to call); close over anything
    that must stay fixed.

    The tape is pruned to the nodes that reach the output; an array read only as
    ``x[i]`` becomes scalar inputs, and a tape of scalars recorded from a loop is
    grouped into runs of one opcode (nodes ordered by depth, then opcode) that the
    sweeps run through each op's own loop, as array ops where the operands are
    contiguous.

    Control flow is frozen into the tape. Comparisons made on tape values while
    recording (``if x > 0``, ``np.where(x > 0, …)``, ``max`` written with ``if``)
    become guards: a call whose inputs would take another branch re-records
    ``fun`` and keeps that trace beside the others (at most ``max_traces``), or,
    with ``retrace=False``, raises :class:`fastape.BranchChanged`. Reading
    ``x.value`` while recording escapes the guards: avoid branching on it.

    >>> import fastape as ft, numpy as np
    >>> F = ft.compile(lambda x: np.sum(x ** 2), np.zeros(3))
    >>> F.value_and_grad(np.array([1.0, 2.0, 3.0]))
    (14.0, array([2., 4., 6.]))
    """
    return Function(fun, example_args, argnums=argnums, retrace=retrace,
                    max_traces=max_traces)
