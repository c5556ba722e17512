"""Implicit functions: fixed points, roots and linear solves as single tape nodes.

When constraints are cyclic -- ``z = F(z, θ)`` (an equilibrium, a fixed point), ``G(z, θ)
= 0`` (a system of equations), ``A(θ) x = b`` -- the forward sweep is a solve and the
multipliers of the cycle solve one linear system with the transposed Jacobian. All
three are one problem here: a solution ``u*`` of ``H(u*, p) = 0`` (``H = F − z`` for a
fixed point, ``G`` for a root, ``A x − b`` for a linear solve), recorded as **one**
CALLBACK node (``fastape.custom``'s mechanism) whose parents ``p`` are the fastape
values the function is given in ``*params`` or closes over. With ``A = ∂H/∂u`` at ``u*``:

* forward: a solver on plain numbers (nothing of it is on the tape, so memory does not
  grow with the iteration count);
* reverse: ``Aᵀ ν = −λ̄`` then ``p̄ = (∂H/∂p)ᵀ ν``, one VJP (for a fixed point
  ``ν = μ`` solves ``(I − ∂F/∂z)ᵀ μ = λ̄`` and ``p̄ = (∂F/∂θ)ᵀ μ``);
* tangent: ``A u̇ = −(∂H/∂p) ṗ``, i.e. ``ż = (I − ∂F/∂z)⁻¹ (∂F/∂θ) θ̇``;
* nested (``grad`` of ``grad``, ``hessian``): the reverse step is recorded on the
  tape as fastape operations around a second implicit node, ``ν`` itself, the
  solution of the linear problem ``(∂H/∂u)ᵀ ν + λ̄ = 0``; so derivatives of any order
  are again solves, and compiled functions replay them (re-solving on new inputs).

The linear systems with ``A`` are dense when ``u`` has at most ``dense_max`` elements
(default :data:`DENSE_MAX`): ``A`` from vector-mode tangent sweeps of a tape of ``H``,
factored once per solution by LAPACK (``getrf``) and checked for singularity
(reciprocal condition number, ``gecon``, below :data:`RCOND_MIN`:
``numpy.linalg.LinAlgError``). Larger ones are matrix-free: restarted GMRES(50) whose
matvec is one reverse sweep (``w ↦ Aᵀ w``) or one tangent sweep (``w ↦ A w``) of a tape
of ``H`` recorded once per solution. GMRES is written here (``_gmres``) rather than
taken from ``scipy.sparse.linalg.gmres`` because scipy's per-iteration Python
bookkeeping cost more than the products for z of a few hundred elements. These
solves stop at a relative residual ``adjoint_tol`` within ``adjoint_max_iter``
matrix-vector products; otherwise :class:`ConvergenceError`.

Closed-over values: the parents are found in ``*params`` (pytrees) and in the
function's closure cells, its argument defaults and a ``functools.partial``'s
arguments (closure conversion: the function is rebuilt with the node's values in
those cells). A function that reaches a fastape value any other way (a global, an
attribute, another function's closure) is caught on its first call and the error says
to pass the value in ``params``.
"""

import functools
import math
import threading
import types

import numpy as np
import scipy.linalg

from fastape import _nesting, _tape
from fastape._tape import Var
from fastape._tree import flatten, unflatten
from fastape.custom import _shaped
from fastape.errors import ConvergenceError, ShapeError, TapeError

__all__ = ["fixed_point", "root", "linear_solve", "DENSE_MAX", "RCOND_MIN"]

#: the largest ``u`` (number of elements) whose linear systems are solved densely: the
#: crossover on the deep-equilibrium layer (``benchmarks/bench_implicit.py --crossover
#: --sizes 25 50 64 80 100 150 200 --rounds 9``, loaded machine): dense 0.97-1.68 ms
#: against GMRES 1.23-1.95 at 50 unknowns, even at 64-80, GMRES faster from 100 (2.4-2.7
#: against 2.8-3.2 ms) and 2.2x at 200, at equal accuracy (both within 1e-10 of 500
#: unrolled iterations)
DENSE_MAX = 64
#: a dense ``∂H/∂u`` whose reciprocal condition number (LAPACK ``gecon``) is below
#: this is singular
RCOND_MIN = 1e-13
#: solutions a node keeps (its forward, reverse and tangent steps at one point share one;
#: each holds tapes of H as large as H's constants, so few)
_CACHE = 2
#: fixed_point's Anderson acceleration is dropped when plain steps shrink the
#: residual by at least this factor each
_FAST = 0.5
#: a tape of H larger than this is not kept with its solution between steps
_KEEP_BYTES = 8 << 20


# ---------------------------------------------------------------------------
# the user's function with its fastape values made parents (closure conversion)
# ---------------------------------------------------------------------------

class _Bound:
    """``fun(z, *params)`` with every fastape value among the params, the closure
    cells, the defaults and a partial's arguments replaced by given values: the
    node's parents, in the order of :attr:`parents`."""

    def __init__(self, fun, params, where):
        if not callable(fun):
            raise TypeError(f"{where}: the function must be callable, got "
                            f"{type(fun).__name__}")
        self.where = where
        self.fun = fun
        self.partial = None
        base = fun
        if isinstance(fun, functools.partial):
            base = fun.func
            self.partial = (list(fun.args), dict(fun.keywords))
        self.base = base
        # sources: [kind, key, treedef, leaves]; kinds: param, cell, default, parg, pkw
        self.sources = []
        self.bare = []                  # the source is one fastape value itself
        self.nparams = len(params)
        for k, p in enumerate(params):
            self._add("param", k, p, f"params[{k}]")
        if self.partial is not None:
            for k, a in enumerate(self.partial[0]):
                self._add("parg", k, a, f"the partial's args[{k}]", optional=True)
            for key, a in self.partial[1].items():
                self._add("pkw", key, a, f"the partial's {key}=", optional=True)
        if isinstance(base, types.FunctionType):
            for k, cell in enumerate(base.__closure__ or ()):
                try:
                    value = cell.cell_contents
                except ValueError:          # an empty cell (a name not yet bound)
                    continue
                self._add("cell", k, value, f"closure cell {base.__code__.co_freevars[k]}",
                          optional=True)
            for k, d in enumerate(base.__defaults__ or ()):
                self._add("default", k, d, f"default {k}", optional=True)
        self.var_pos = [(s, j) for s, src in enumerate(self.sources)
                        for j, x in enumerate(src[3]) if type(x) is Var]
        self.parents = [self.sources[s][3][j] for s, j in self.var_pos]
        self.shapes = [v.shape for v in self.parents]
        tapes = {id(v.tape): v.tape for v in self.parents}
        if len(tapes) > 1:
            raise TapeError(f"{where}: the parameters hold values of several tapes")
        self.rebind = any(self.sources[s][0] in ("cell", "default") for s, _ in self.var_pos)

    def _add(self, kind, key, value, what, optional=False):
        """One place the function keeps values; a param that is not a pytree of
        numbers, or holds no fastape value, is passed through as it is."""
        try:
            leaves, td = flatten(value, what, self.where)
        except TypeError:
            if optional:        # not a pytree of numbers: the function's own business
                return
            leaves, td = None, value
        if leaves is not None and not any(type(x) is Var for x in leaves):
            if optional:
                return
            leaves, td = None, value
        self.sources.append([kind, key, td, leaves or []])
        self.bare.append(type(value) is Var)

    def call(self, z, ps):
        """fun(z, *params) with the parents' values `ps` (flat: numbers or values)."""
        return self.bind(ps)(z)

    def bind(self, ps):
        """z ↦ fun(z, *params) with the parents' values `ps` (flat: numbers or values),
        the params (and a rebound closure) built once: a solver calls it on every
        iteration."""
        built = {}
        for src in self.sources:
            if not src[3]:
                built[(src[0], src[1])] = src[2]
        if self.parents:
            values = {}
            for (s, j), p, shape in zip(self.var_pos, ps, self.shapes):
                values.setdefault(s, list(self.sources[s][3]))[j] = _shaped(p, shape)
            for s, leaves in values.items():
                kind, key, td, template = self.sources[s]
                # a bare value (the common case) needs no unflatten
                built[(kind, key)] = leaves[0] if len(template) == 1 and \
                    type(template[0]) is Var and self.bare[s] else unflatten(td, leaves)
        params = [built[("param", k)] for k in range(self.nparams)]
        fun = self.base
        if self.rebind:
            cells = tuple(types.CellType(built[("cell", k)]) if ("cell", k) in built else c
                          for k, c in enumerate(fun.__closure__ or ()))
            defaults = tuple(built.get(("default", k), d)
                             for k, d in enumerate(fun.__defaults__ or ())) or None
            new = types.FunctionType(fun.__code__, fun.__globals__, fun.__name__, defaults,
                                     cells or None)
            new.__kwdefaults__ = fun.__kwdefaults__
            fun = new
        if self.partial is not None:
            pargs = [built.get(("parg", k), a) for k, a in enumerate(self.partial[0])]
            pkw = {key: built.get(("pkw", key), a) for key, a in self.partial[1].items()}
            return lambda z: fun(*pargs, z, *params, **pkw)
        return lambda z: fun(z, *params)


def _vec(x):
    """x as a flat (n,) value: a view of a fastape value, or a float64 array."""
    if type(x) is Var:
        return x if x.shape == (x.size,) else _tape.node_var(x.tape, x.node, (x.size,))
    return np.asarray(x, dtype=np.float64).reshape(-1)


def _plain():
    """No transform is recording while the block runs: the solvers' own uses of jvp,
    vjp and jacfwd take fresh tapes even while a user function is being recorded."""
    return _nesting.recording(None)


class _Recorded:
    """A function of flat arrays recorded once on a tape of its own at a point: its
    vector-Jacobian products (one reverse sweep each) and Jacobian-vector products
    (one tangent sweep each) with respect to its inputs, the Tape API called directly
    (the products are the inner loop of the Krylov solves)."""

    def __init__(self, fun, inputs):
        from fastape._tape import Tape
        self.tape = Tape()
        self.tape.lean_constants = True     # only the inputs' multipliers are read
        self.sizes = [x.size for x in inputs]
        with self.tape, _nesting.recording(self.tape):
            self.vars = [self.tape.var(x) for x in inputs]
            out = fun(*self.vars)
        self.out = out if type(out) is Var else None
        self.n_out = out.size if self.out is not None else np.size(out)

    def vjp(self, w, which):
        """[(∂fun/∂input_k)ᵀ w for k in which]."""
        if self.out is None:
            return [np.zeros(self.sizes[k]) for k in which]
        self.tape.backward(self.out, np.asarray(w, dtype=np.float64).reshape(self.out.shape))
        return [np.asarray(self.tape.adjoint(self.vars[k]), dtype=np.float64).reshape(-1)
                for k in which]

    def jvp(self, tangents, which, p=None):
        """Σ_{k in which} (∂fun/∂input_k) tangent_k (p: that many directions, each
        tangent of shape (p, size)); the other inputs' tangents are 0."""
        if self.out is None:
            return np.zeros(self.n_out if p is None else (p, self.n_out))
        self.tape.forward_tangents([self.vars[k] for k in which],
                                   [np.asarray(t, dtype=np.float64) for t in tangents], p=p)
        t = np.asarray(self.tape.tangent(self.out), dtype=np.float64)
        return t.reshape(-1) if p is None else t.reshape(p, -1)

    def jacobian(self):
        """The dense Jacobian with respect to the first input, by vector-mode tangent sweeps in
        blocks of directions. Each block's tangents span every value of the tape,
        constants too, so blocks are small (16 directions measured fastest per
        direction for a 100 x 100 layer: 6 µs against 9 µs at 64) and shrink as the
        tape grows (at most ~2 MB of tangents)."""
        n = self.sizes[0]
        J = np.empty((self.n_out, n))
        p = int(max(1, min(n, 16, (1 << 18) // max(1, self.tape.nbytes // 8))))
        for lo in range(0, n, p):
            q = min(p, n - lo)
            seeds = np.zeros((q, n))
            seeds[np.arange(q), lo + np.arange(q)] = 1.0
            J[:, lo:lo + q] = self.jvp([seeds], [0], p=q).T
        return J


# ---------------------------------------------------------------------------
# the node: u* with H(u*, p) = 0
# ---------------------------------------------------------------------------

class _Point:
    """One solution u*(p) and what its linear systems need, made on first use."""

    __slots__ = ("ps", "u", "lu", "rec_u", "rec_p")

    def __init__(self, ps, u):
        self.ps, self.u = ps, u
        self.lu = self.rec_u = self.rec_p = None


class _Implicit:
    """The rule of an implicit node (kept in its tape's rule list, called by the
    sweeps): u*(p) solving H(u*, p) = 0 with H = ``residual(u, ps)`` (flat u, parents
    ps; numbers or fastape values), found on numbers by ``solver(self, ps)``."""

    def __init__(self, name, residual, shape, solver, opts, a_name):
        self.name = name
        self.residual = residual
        self.shape = tuple(shape)
        self.n = int(np.prod(self.shape, dtype=np.int64))
        self.out_shapes = [self.shape]      # fastape._rules reads it (custom rules' field)
        self.solver = solver
        self.opts = opts
        self.a_name = a_name                # how errors call ∂H/∂u
        # compiled functions may sweep from several threads (grad_batch); the GIL is
        # released inside numpy, and a tape of H is swept by one thread at a time
        self.lock = threading.RLock()
        self.points = []                # the latest solutions, newest first
        self.adjoint_rule = None

    # -- solutions ------------------------------------------------------------------

    def point(self, ps):
        """The solution at parents' values ps (flat arrays, which the point keeps: the
        callers pass fresh copies), solved or, at the same values, remembered. The
        values are compared, not hashed: a key would copy every parent once more."""
        for pt in self.points:
            if len(pt.ps) == len(ps) and all(np.array_equal(a, b) for a, b in zip(pt.ps, ps)):
                return pt
        with _plain():
            u = self.solver(self, ps)
        # a solver may return its point (a linear solve's factors serve the adjoint)
        pt = u if type(u) is _Point else _Point(list(ps), np.asarray(u, dtype=np.float64)
                                                .reshape(-1))
        self.points.insert(0, pt)
        del self.points[_CACHE:]
        return pt

    def h(self, u, ps):
        """H(u, ps) flat; a fastape value where u or ps are."""
        return _vec(self.residual(u, ps))

    def record(self, parents):
        """This node on the parents' tape (Vars): its value u*, of the problem's shape."""
        pt = self.point([np.asarray(p.value, dtype=np.float64).reshape(-1) for p in parents])
        return _tape.callback_node(list(parents), self, pt.u, pt, self.shape)

    # -- linear systems with A = ∂H/∂u at a solution -----------------------------

    def _factor(self, pt):
        if pt.lu is None:
            A = self.at(pt, "u").jacobian()
            self.done(pt, "u")
            if not np.all(np.isfinite(A)):
                raise np.linalg.LinAlgError(f"{self.name}: {self.a_name} at the solution "
                                            "is not finite")
            lu, piv, info = scipy.linalg.lapack.dgetrf(A)
            rcond = 0.0
            if info == 0:
                rcond = scipy.linalg.lapack.dgecon(lu, np.linalg.norm(A, 1), norm="1")[0]
            if info != 0 or not rcond >= RCOND_MIN:
                raise np.linalg.LinAlgError(
                    f"{self.name}: {self.a_name} is singular at the solution (reciprocal "
                    f"condition number {rcond:.3g} < {RCOND_MIN:g}, {self.n}x{self.n}): "
                    "the implicit function theorem does not apply there")
            pt.lu = (lu, piv)
        return pt.lu

    def solve_a(self, pt, rhs, transpose):
        """x with A x = rhs (transpose: Aᵀ x = rhs), A = ∂H/∂u at pt."""
        rhs = np.asarray(rhs, dtype=np.float64).reshape(-1)
        if self.n <= self.opts["dense_max"]:
            lu, piv = self._factor(pt)
            return scipy.linalg.lu_solve((lu, piv), rhs, trans=1 if transpose else 0)
        rec = self.at(pt, "u")
        if transpose:
            def matvec(w):
                return rec.vjp(w, [0])[0]
        else:
            def matvec(w):
                return rec.jvp([w], [0])
        what = "the adjoint" if transpose else "the tangent"
        try:
            return krylov(matvec, rhs, self.opts["adjoint_tol"], self.opts["adjoint_max_iter"],
                          f"{self.name}: {what} solve",
                          self.a_name + ("ᵀ" if transpose else ""))
        finally:
            self.done(pt, "u")

    def at(self, pt, wrt):
        """H at the solution recorded as a function of u (``wrt="u"``, the parents
        constants: the products with A) or of the parents (``"p"``, u a constant),
        kept with the solution while small (see :meth:`done`)."""
        if wrt == "u":
            if pt.rec_u is None:
                pt.rec_u = _Recorded(lambda u: self.h(u, pt.ps), [pt.u])
            return pt.rec_u
        if pt.rec_p is None:
            pt.rec_p = _Recorded(lambda *ps: self.h(pt.u, list(ps)), pt.ps)
        return pt.rec_p

    @staticmethod
    def done(pt, wrt):
        """Drop a tape of H that holds large parents (a 2,000 x 2,000 W: 64 MB with
        its multipliers) once its step is over, so that the u-tape and the p-tape are
        never both alive: a later step at the same point records it again."""
        name = "rec_u" if wrt == "u" else "rec_p"
        rec = getattr(pt, name)
        if rec is not None and rec.tape.nbytes > _KEEP_BYTES:
            setattr(pt, name, None)

    # -- what the sweeps call (on numbers) ------------------------------------------

    def forward(self, parents):
        with self.lock:
            pt = self.point(parents)
        return pt.u, pt

    def backward(self, pt, lam):
        with self.lock:
            nu = self.solve_a(pt, -np.asarray(lam, dtype=np.float64).reshape(-1), True)
            try:
                return self.at(pt, "p").vjp(nu, range(len(pt.ps)))
            finally:
                self.done(pt, "p")

    def tangent(self, parents, tangents):
        with self.lock:
            pt = self.point(parents)
            rhs = self.at(pt, "p").jvp([np.asarray(t, dtype=np.float64).reshape(-1)
                                        for t in tangents], range(len(pt.ps)))
            self.done(pt, "p")
            return self.solve_a(pt, -rhs, False)

    # -- the recorded reverse sweep (fastape._rules): on values of the tape ---------

    def recorded_backward(self, tape, parents, g):
        from fastape import api
        with _nesting.recording(tape):
            parents = [_vec(p) for p in parents]
            u = _vec(self.record(parents))
            nu = _vec(self.adjoint().record([_vec(g), u, *parents]))
            _, pull = api.vjp(lambda *ps: self.h(u, list(ps)), *parents)
            return list(pull(nu))

    def adjoint(self):
        """The implicit node ν(λ̄, u, p) solving (∂H/∂u)ᵀ ν + λ̄ = 0 (linear in ν): the
        multipliers as a value of the tape, so that they can be differentiated."""
        if self.adjoint_rule is None:
            from fastape import api
            outer = self

            def residual(nu, qs):
                g, u, ps = qs[0], qs[1], list(qs[2:])
                at = api.vjp(lambda v: outer.h(v, ps), u)[1](nu)[0]
                return _vec(at) + g

            def solver(rule, qs):
                g, u, ps = qs[0], qs[1], list(qs[2:])
                pt = outer.point(ps)
                if not np.array_equal(pt.u, u):     # a solution given, not the one found
                    pt = _Point(ps, u)
                return outer.solve_a(pt, -g, True)

            self.adjoint_rule = _Implicit(f"adjoint of {self.name}", residual, (self.n,),
                                          solver, self.opts, f"({self.a_name})ᵀ")
        return self.adjoint_rule


# ---------------------------------------------------------------------------
# solvers on numbers
# ---------------------------------------------------------------------------

def krylov(matvec, rhs, tol, max_iter, name, a_name):
    """x with M x = rhs by restarted GMRES over ``matvec`` (w ↦ M w), to a relative
    residual ``tol`` within ``max_iter`` products; else :class:`ConvergenceError`."""
    x, residual, count = _gmres(matvec, np.asarray(rhs, dtype=np.float64).reshape(-1), tol,
                                max_iter)
    if not residual <= tol:
        raise ConvergenceError(name, residual, count, tol,
                               f"GMRES on {a_name} ({rhs.size} unknowns); {a_name} may be "
                               "singular or badly conditioned at the solution")
    return x


def _gmres(matvec, b, tol, max_iter, restart=50):
    """Restarted GMRES(restart) from x = 0: Arnoldi with classical Gram-Schmidt done
    twice (two matrix-vector products of the basis per step, where modified
    Gram-Schmidt would be k dot products: BLAS, not a Python loop) and Givens
    rotations. Returns (x, true relative residual, products used). scipy's gmres
    does the same but its Python bookkeeping costs more than the products here."""
    n = b.size
    x = np.zeros(n)
    bnorm = float(np.linalg.norm(b))
    if bnorm == 0.0 or n == 0:
        return x, 0.0, 0
    r, beta, count = b, bnorm, 0
    while beta > tol * bnorm and count < max_iter:
        m = max(1, min(restart, n, max_iter - count))
        V = np.empty((m + 1, n))
        V[0] = r / beta
        R = np.zeros((m + 1, m))          # the Hessenberg matrix, rotated to triangular
        cs, sn = [0.0] * m, [0.0] * m
        g = [beta] + [0.0] * m
        k_used = 0
        for k in range(m):
            w = np.asarray(matvec(V[k]), dtype=np.float64).reshape(-1)
            count += 1
            Vk = V[:k + 1]
            h = Vk @ w
            w = w - h @ Vk
            h2 = Vk @ w
            w -= h2 @ Vk
            h += h2
            hn = math.sqrt(float(w @ w))
            col = h.tolist()
            col.append(hn)
            for i in range(k):
                a, c = col[i], col[i + 1]
                col[i], col[i + 1] = cs[i] * a + sn[i] * c, -sn[i] * a + cs[i] * c
            d = math.hypot(col[k], col[k + 1])
            if d == 0.0:                  # breakdown: no new direction
                break
            cs[k], sn[k] = col[k] / d, col[k + 1] / d
            col[k], col[k + 1] = d, 0.0
            R[:k + 2, k] = col
            g[k + 1], g[k] = -sn[k] * g[k], cs[k] * g[k]
            k_used = k + 1
            if abs(g[k + 1]) <= tol * bnorm or hn == 0.0 or count >= max_iter:
                break
            V[k + 1] = w / hn
        if k_used == 0:
            break
        y = scipy.linalg.solve_triangular(R[:k_used, :k_used], np.array(g[:k_used]))
        x = x + y @ V[:k_used]
        r = b - np.asarray(matvec(x), dtype=np.float64).reshape(-1)
        count += 1
        beta = float(np.linalg.norm(r))
    return x, beta / bnorm, count


def _converged(r, u, tol, relative):
    """(max|r|, whether max|r| ≤ tol, times max(1, max|u|) when relative)."""
    size = float(np.abs(r).max()) if r.size else 0.0
    if size <= tol or not relative or not u.size:
        return size, size <= tol
    return size, size <= tol * float(np.abs(u).max())


def _iterate(rule, step, u0, tol, max_iter, anderson, memory=5):
    """The fixed point of u ↦ step(u) from u0: plain iteration, or Anderson
    acceleration (type II, the last `memory` differences; restarted when the residual
    grows tenfold). The first three steps are plain, and Anderson goes on only when
    the last two of them shrank the residual by less than a factor :data:`_FAST`
    a step (the first step, from z0, says little): for a fast contraction its
    extrapolation saves few evaluations and doubles the cost of each where F is
    cheap (the 100-unit layer of bench_implicit.py: 21 evaluations against 24, in
    0.78 ms against 0.52 ms). The small least-squares
    problem is solved by its normal equations (m ≤ 5 unknowns, regularised):
    lstsq's SVD costs more than the step itself for the sizes where step is cheap."""
    u = u0.copy()
    f = step(u)
    r = f - u
    n = u.size
    dF, dR = np.empty((memory, n)), np.empty((memory, n))
    m, slot, best, first = 0, 0, np.inf, None
    for it in range(max_iter):
        size, done = _converged(r, u, tol, True)
        if done:
            return f
        if not np.isfinite(size):
            break
        if it == 1:
            first = size
        elif it == 3 and anderson and size <= _FAST ** 2 * first:
            anderson = False            # two plain steps shrank it by _FAST each or more
        if anderson and size > 10 * best:
            m = slot = 0
        best = min(best, size)
        u_new = f
        if anderson and m and it >= 3:
            G = dR[:m] @ dR[:m].T
            G.flat[::m + 1] += 1e-14 * G.trace() + 1e-300
            _, gamma, info = scipy.linalg.lapack.dposv(G, dR[:m] @ r)
            if info == 0:
                u_new = f - gamma @ dF[:m]
            else:
                m = slot = 0
        f_new = step(u_new)
        r_new = f_new - u_new
        if anderson:                          # a ring: the least squares ignore order
            np.subtract(f_new, f, out=dF[slot])
            np.subtract(r_new, r, out=dR[slot])
            slot = (slot + 1) % memory
            m = min(m + 1, memory)
        u, f, r = u_new, f_new, r_new
    size, done = _converged(r, u, tol, True)
    if done:
        return f
    raise ConvergenceError(rule.name, size, max_iter, tol,
                           "max|F(z) − z| (relative to max(1, max|z|))")


def _newton(rule, ps, u0, tol, max_iter, g_of):
    """A root of g_of(u) from u0: Newton's method with the Jacobian from the tape
    (dense for at most dense_max unknowns, else GMRES over tangent sweeps), and a
    backtracking (Armijo) line search on ½‖G‖²."""
    u = u0.copy()
    g = g_of(u)
    dense = rule.n <= rule.opts["dense_max"]
    for it in range(max_iter + 1):
        size, done = _converged(g, u, tol, False)
        if done:
            return u
        if it == max_iter or not np.isfinite(size):
            break
        rec = _Recorded(lambda v: rule.h(v, ps), [u])
        if dense:
            J = rec.jacobian()
            lu, piv, info = scipy.linalg.lapack.dgetrf(J)
            rcond = scipy.linalg.lapack.dgecon(lu, np.linalg.norm(J, 1), norm="1")[0] \
                if info == 0 and np.all(np.isfinite(J)) else 0.0
            if not rcond >= RCOND_MIN:
                raise np.linalg.LinAlgError(
                    f"{rule.name}: {rule.a_name} is singular at Newton iterate {it} "
                    f"(reciprocal condition number {rcond:.3g}): Newton cannot continue; "
                    "try another z0")
            step = -scipy.linalg.lu_solve((lu, piv), g)
        else:
            step = -krylov(lambda w, rec=rec: rec.jvp([w], [0]), g, min(1e-3, max(tol, 1e-12)),
                           rule.opts["adjoint_max_iter"], f"{rule.name}: a Newton step",
                           rule.a_name)
        phi = 0.5 * float(g @ g)
        t = 1.0
        for _ in range(40):
            g_new = g_of(u + t * step)
            phi_new = 0.5 * float(g_new @ g_new)
            if np.isfinite(phi_new) and phi_new <= (1.0 - 1e-4 * t) * phi:
                break
            t *= 0.5
        else:
            raise ConvergenceError(rule.name, size, it, tol,
                                   "max|G(z)|; the line search found no decrease")
        u = u + t * step
        g = g_new
    raise ConvergenceError(rule.name, size, max_iter, tol, "max|G(z)|")


# ---------------------------------------------------------------------------
# the public functions
# ---------------------------------------------------------------------------

def _options(where, tol, max_iter, adjoint_tol, adjoint_max_iter, dense_max):
    for what, v in (("tol", tol), ("adjoint_tol", adjoint_tol)):
        if not (isinstance(v, (int, float, np.floating, np.integer)) and 0 < v < 1):
            raise ValueError(f"{where}: {what} must be a number in (0, 1), got {v!r}")
    for what, v in (("max_iter", max_iter), ("adjoint_max_iter", adjoint_max_iter),
                    ("dense_max", dense_max)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0 or \
                (v == 0 and what != "dense_max"):
            raise ValueError(f"{where}: {what} must be a positive int, got {v!r}")
    return {"tol": float(tol), "max_iter": int(max_iter), "adjoint_tol": float(adjoint_tol),
            "adjoint_max_iter": int(adjoint_max_iter), "dense_max": int(dense_max)}


def _start(z0, where, what="z0"):
    """The starting point's value (it is not differentiated) as a float64 array."""
    if type(z0) is Var:
        z0 = z0.value
    a = np.asarray(z0)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{where}: {what} must be a real number or array, got "
                        f"{type(z0).__name__} of dtype {a.dtype}")
    return np.array(a, dtype=np.float64)


def _output(out, shape, where, fname):
    """A function's output on numbers, checked: a float64 array of `shape`."""
    if type(out) is np.ndarray and out.dtype == np.float64 and out.shape == shape:
        return out.reshape(-1)
    if type(out) is Var:
        raise TapeError(f"{where}: {fname} returned a fastape value on plain numbers: it "
                        "uses a fastape value it reaches neither through its arguments "
                        "nor its closure cells (a global, an attribute, a function it "
                        "calls); pass that value in params")
    a = np.asarray(out)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{where}: {fname} must return a real number or array, got "
                        f"{type(out).__name__}")
    if a.shape != shape:
        raise ShapeError(f"{where}: {fname} returned shape {a.shape}; it must return "
                         f"the shape of z, {shape}")
    return np.asarray(a, dtype=np.float64).reshape(-1)


def _finish(rule, parents, z_shape):
    """Record the node (on the parents' tape) or, with no fastape values, solve."""
    if not parents:
        u = rule.point([]).u.reshape(z_shape)
        rule.points.clear()
        return float(u) if z_shape == () else u
    if parents[0].tape.closed:
        raise TapeError(f"{rule.name}: the parameters are values of a tape whose "
                        "recording has ended")
    return rule.record(parents)


def _name(fun):
    return getattr(fun, "__name__", type(fun).__name__)


def fixed_point(F, z0, *params, tol=1e-10, max_iter=500, method="anderson",
                adjoint_tol=1e-10, adjoint_max_iter=1000, dense_max=DENSE_MAX):
    """``z*`` with ``z* = F(z*, *params)``, differentiable in the params (and in the
    fastape values ``F`` closes over) by the implicit function theorem.

    ``z0`` (a number or an array of any shape, not a pytree; not differentiated)
    starts the solver; ``F(z, *params)`` returns a value of z's shape; the params are
    pytrees (objects that are not are passed through untouched). The forward solve
    runs on plain numbers, from ``z0`` on every call: ``method="anderson"`` (default:
    Anderson acceleration of ``z ← F(z)``, memory 5, restarted when the residual grows
    tenfold), ``"iterate"`` (plain iteration) or ``"newton"`` (Newton on ``F(z) − z``,
    see :func:`root`). It stops when ``max|F(z) − z| ≤ tol · max(1, max|z|)`` and
    raises :class:`fastape.ConvergenceError` after ``max_iter`` evaluations of F.

    On the tape the result is one node: reverse mode solves ``(I − ∂F/∂z)ᵀ μ = λ̄`` at
    ``z*`` (densely by LAPACK for at most ``dense_max`` elements, else GMRES over
    reverse sweeps of F, to the relative residual ``adjoint_tol`` within
    ``adjoint_max_iter`` products, default 1e-10 and 1000), then passes ``(∂F/∂θ)ᵀ μ``
    to the params; forward
    mode solves ``(I − ∂F/∂z) ż = (∂F/∂θ) θ̇``. A singular ``I − ∂F/∂z`` raises
    ``numpy.linalg.LinAlgError``. Nested derivatives, ``hessian`` and compiled
    functions (which re-solve on new inputs) work through it; see ``fastape.implicit``.

    >>> import numpy as np, fastape as ft
    >>> z = lambda t: ft.fixed_point(lambda z, t: np.cos(t * z), 0.5, t)
    >>> round(ft.grad(z)(1.0), 6)                  # −z sin z / (1 + sin z) at t = 1
    -0.297474
    """
    where = f"fixed_point of {_name(F)}"
    if method not in ("anderson", "iterate", "newton"):
        raise ValueError(f"{where}: method must be 'anderson', 'iterate' or 'newton', "
                         f"got {method!r}")
    opts = _options(where, tol, max_iter, adjoint_tol, adjoint_max_iter, dense_max)
    start = _start(z0, where)
    shape = start.shape
    bound = _Bound(F, params, where)

    def residual(u, ps):
        return _vec(bound.call(_shaped(u, shape), ps)) - u

    def solver(rule, ps):
        fun = bound.bind(ps)

        def step(u):
            return _output(fun(_shaped(u, shape)), shape, where, _name(F))
        if method == "newton":
            return _newton(rule, ps, start.reshape(-1), opts["tol"], opts["max_iter"],
                           lambda u: step(u) - u)
        return _iterate(rule, step, start.reshape(-1), opts["tol"], opts["max_iter"],
                        method == "anderson")

    rule = _Implicit(where, residual, shape, solver, opts, "I − ∂F/∂z")
    return _finish(rule, bound.parents, shape)


def root(G, z0, *params, tol=1e-10, max_iter=100, adjoint_tol=1e-10,
         adjoint_max_iter=1000, dense_max=DENSE_MAX):
    """``z*`` with ``G(z*, *params) = 0``, differentiable in the params (and in the
    fastape values ``G`` closes over): the adjoint solves ``(∂G/∂z)ᵀ μ = −λ̄``.

    Newton's method from ``z0`` (a number or an array, not differentiated) with the
    Jacobian ``∂G/∂z`` from the tape (a vector-mode tangent sweep and LAPACK for at
    most ``dense_max`` unknowns, else GMRES over tangent sweeps) and a backtracking
    line search on ``½‖G‖²``; it stops when ``max|G(z)| ≤ tol`` and raises
    :class:`fastape.ConvergenceError` after ``max_iter`` Newton steps (or when the
    line search finds no decrease), ``numpy.linalg.LinAlgError`` when ``∂G/∂z`` is
    singular at an iterate or at the root. ``adjoint_tol``/``adjoint_max_iter``/
    ``dense_max`` are as in :func:`fixed_point`.

    >>> import fastape as ft
    >>> cbrt = lambda t: ft.root(lambda z, t: z ** 3 - t, 1.0, t)
    >>> round(ft.grad(cbrt)(8.0), 12)              # d t^(1/3)/dt = 1/12 at t = 8
    0.083333333333
    """
    where = f"root of {_name(G)}"
    opts = _options(where, tol, max_iter, adjoint_tol, adjoint_max_iter, dense_max)
    start = _start(z0, where)
    shape = start.shape
    bound = _Bound(G, params, where)

    def residual(u, ps):
        return _vec(bound.call(_shaped(u, shape), ps))

    def solver(rule, ps):
        fun = bound.bind(ps)
        return _newton(rule, ps, start.reshape(-1), opts["tol"], opts["max_iter"],
                       lambda u: _output(fun(_shaped(u, shape)), shape, where, _name(G)))

    rule = _Implicit(where, residual, shape, solver, opts, "∂G/∂z")
    return _finish(rule, bound.parents, shape)


def linear_solve(matvec, b, *params, tol=1e-10, max_iter=1000, adjoint_tol=None,
                 adjoint_max_iter=None, dense_max=DENSE_MAX):
    """``x`` with ``matvec(x, *params) = b``, for a linear operator given as a function
    (linear in ``x``), differentiable in ``b`` and in the params and the fastape values
    the operator closes over: ``b̄ = A⁻ᵀ x̄`` and ``θ̄ = −(∂(A x)/∂θ)ᵀ A⁻ᵀ x̄``.

    For at most ``dense_max`` unknowns the matrix is built by a vector-mode tangent
    sweep of ``matvec`` and factored by LAPACK (singular: ``numpy.linalg.LinAlgError``);
    larger systems run GMRES over ``matvec`` on numbers to the relative residual
    ``tol`` within ``max_iter`` products (else :class:`fastape.ConvergenceError`).
    The adjoint solves use the transposed operator, a reverse sweep of ``matvec``
    recorded once per solution (never materialised unless small), with their own
    ``adjoint_tol``/``adjoint_max_iter`` (default: ``tol``/``max_iter``).

    >>> import numpy as np, fastape as ft
    >>> A = np.array([[3.0, 1.0], [1.0, 2.0]])
    >>> f = lambda b: np.sum(ft.linear_solve(lambda x: A @ x, b))
    >>> ft.grad(f)(np.array([1.0, 1.0]))           # A⁻ᵀ 1
    array([0.2, 0.4])
    """
    where = f"linear_solve of {_name(matvec)}"
    opts = _options(where, tol, max_iter, tol if adjoint_tol is None else adjoint_tol,
                    max_iter if adjoint_max_iter is None else adjoint_max_iter, dense_max)
    rhs = b
    b_leaf = type(b) is Var
    shape = b.shape if b_leaf else _start(b, where, "b").shape
    bound = _Bound(matvec, params, where)
    parents = ([b] if b_leaf else []) + bound.parents
    if b_leaf and bound.parents and bound.parents[0].tape is not b.tape:
        raise TapeError(f"{where}: b and the parameters are values of different tapes")

    def split(ps):
        return (ps[0], ps[1:]) if b_leaf else (_start(rhs, where, "b").reshape(-1), ps)

    def residual(u, ps):
        bb, rest = split(ps)
        return _vec(bound.call(_shaped(u, shape), rest)) - _vec(bb)

    def solver(rule, ps):
        bb, rest = split(ps)
        bb = np.asarray(bb, dtype=np.float64).reshape(-1)
        if rule.n <= opts["dense_max"]:
            # H is linear in x: ∂H/∂x at 0 is the one at the solution, so the factors
            # serve the adjoint (not the tape at 0: ∂H/∂θ depends on x)
            lu = rule._factor(_Point(list(ps), np.zeros(rule.n)))
            pt = _Point(list(ps), scipy.linalg.lu_solve(lu, bb))
            pt.lu = lu
            return pt

        fun = bound.bind(rest)

        def mv(x):
            return _output(fun(_shaped(x, shape)), shape, where, _name(matvec))
        return krylov(mv, bb, opts["tol"], opts["max_iter"], where, "the operator")

    rule = _Implicit(where, residual, shape, solver, opts, "the operator")
    return _finish(rule, parents, shape)
