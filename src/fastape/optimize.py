"""Constrained optimisation on compiled fastape functions (``fastape.optimize``).

:func:`minimize` records the objective, the stacked constraint functions and the
Lagrangian once each with :func:`fastape.compile` and hands a solver their compiled
values, gradient, sparse constraint Jacobian and sparse Lagrangian Hessian
(``F.sparse_jacobian``, ``F.sparse_hessian``): IPOPT through ``cyipopt`` (the optional
extra ``fastape[ipopt]``), or any method of :func:`scipy.optimize.minimize`.
``IPOPT_STATUS`` maps IPOPT's return codes to their names and to success.
"""

import math
import time

import numpy as np
import scipy.optimize
import scipy.sparse

from fastape.api import compile as _compile
from fastape.errors import ShapeError
from fastape.sparse import SparsityChanged

__all__ = ["minimize", "IPOPT_STATUS"]

# scipy.optimize.minimize's methods by what they take (lower-case names)
_USES_GRADIENT = {"cg", "bfgs", "newton-cg", "l-bfgs-b", "tnc", "slsqp", "dogleg", "trust-ncg",
                  "trust-krylov", "trust-exact", "trust-constr"}
_USES_HESSP = {"newton-cg", "trust-ncg", "trust-krylov"}
_USES_HESS = {"dogleg", "trust-exact"}              # dense Hessians only
_TAKES_CONSTRAINTS = {"cobyla", "cobyqa", "slsqp", "trust-constr"}
_TAKES_BOUNDS = {"nelder-mead", "l-bfgs-b", "tnc", "slsqp", "powell", "trust-constr", "cobyla",
                 "cobyqa"}

# IPOPT's ApplicationReturnStatus: (name, is it a success?)
IPOPT_STATUS = {
    0: ("Solve_Succeeded", True), 1: ("Solved_To_Acceptable_Level", True),
    2: ("Infeasible_Problem_Detected", False), 3: ("Search_Direction_Becomes_Too_Small", False),
    4: ("Diverging_Iterates", False), 5: ("User_Requested_Stop", False),
    6: ("Feasible_Point_Found", True), -1: ("Maximum_Iterations_Exceeded", False),
    -2: ("Restoration_Failed", False), -3: ("Error_In_Step_Computation", False),
    -4: ("Maximum_CpuTime_Exceeded", False), -5: ("Maximum_WallTime_Exceeded", False),
    -10: ("Not_Enough_Degrees_Of_Freedom", False), -11: ("Invalid_Problem_Definition", False),
    -12: ("Invalid_Option", False), -13: ("Invalid_Number_Detected", False),
    -100: ("Unrecoverable_Exception", False), -101: ("NonIpopt_Exception_Thrown", False),
    -102: ("Insufficient_Memory", False), -199: ("Internal_Error", False),
}


DIVERGING = 1e20     # |x| beyond which iterates diverge (IPOPT's diverging_iterates_tol)


def _import_cyipopt():
    try:
        import cyipopt
    except ImportError as e:
        raise ImportError("minimize(method='ipopt') needs cyipopt: install the optional "
                          "extra, pip install 'fastape[ipopt]' (it brings cyipopt-wheels, "
                          "IPOPT as a wheel)") from e
    return cyipopt


# ---------------------------------------------------------------------------------------
# IPOPT's fixed structures


class _Fixed:
    """The entries of a compiled sparse derivative's pattern that IPOPT gets (all, or
    the lower triangle of a symmetric one), and their values in each matrix the
    compiled method returns, whose structure is the pattern's at every call."""

    def __init__(self, pattern, what, lower=False):
        pattern = scipy.sparse.csr_array(pattern)
        self.shape, self.what = pattern.shape, what
        self.indptr, self.indices = pattern.indptr.copy(), pattern.indices.copy()
        rows = np.repeat(np.arange(pattern.shape[0]), np.diff(self.indptr))
        keep = rows >= self.indices if lower else np.ones(len(rows), bool)
        self.rows, self.cols = rows[keep], self.indices[keep]
        self.take = np.flatnonzero(keep)

    def values(self, M):
        """M's values at the fixed entries, in their order."""
        if not (M.shape == self.shape and np.array_equal(M.indptr, self.indptr)
                and np.array_equal(M.indices, self.indices)):
            raise SparsityChanged(f"minimize: the {self.what} has another structure than "
                                  "the one IPOPT was given at the start")
        return M.data[self.take]


# ---------------------------------------------------------------------------------------
# The problem: objective, stacked constraints cl <= c(x) <= cu, bounds lb <= x <= ub


class _Timer:
    """Seconds and calls per callback name."""

    def __init__(self):
        self.seconds, self.calls = {}, {}

    def wrap(self, name, fun):
        self.seconds[name], self.calls[name] = 0.0, 0

        def timed(*a):
            t0 = time.perf_counter()
            try:
                return fun(*a)
            finally:
                self.seconds[name] += time.perf_counter() - t0
                self.calls[name] += 1
        return timed


def _as_vector(y, what):
    """y (a number, 1-D array, list of numbers or fastape values) as one 1-D value."""
    from fastape import _functions
    if isinstance(y, (list, tuple)):
        y = _functions.stack(list(y)) if len(y) else np.zeros(0)
    shape = np.shape(y) if not hasattr(y, "shape") else tuple(y.shape)
    if len(shape) > 1:
        raise ShapeError(f"minimize: {what} must return a number or a 1-D array, got shape "
                         f"{shape}")
    return _functions.reshape(y, (-1,))


def _constraint_list(constraints):
    if constraints is None:
        return []
    if isinstance(constraints, (dict, scipy.optimize.NonlinearConstraint,
                                scipy.optimize.LinearConstraint)):
        return [constraints]
    return list(constraints)


def _parse_constraint(c, i):
    """(fun(x), lb, ub) of constraints[i]; lb and ub are broadcast later."""
    what = f"constraints[{i}]"
    if isinstance(c, dict):
        unknown = set(c) - {"type", "fun", "args", "jac"}
        if unknown:
            raise ValueError(f"minimize: {what} has unknown keys {sorted(unknown)}")
        if c.get("jac") is not None:
            raise ValueError(f"minimize: {what} gives 'jac': fastape computes it from the "
                             "recorded function; remove it")
        kind, fun, args = c.get("type"), c.get("fun"), tuple(c.get("args", ()))
        if kind not in ("eq", "ineq"):
            raise ValueError(f"minimize: {what}['type'] must be 'eq' or 'ineq', got {kind!r}")
        if not callable(fun):
            raise TypeError(f"minimize: {what}['fun'] must be callable, got {type(fun)}")
        return (lambda x: fun(x, *args)), 0.0, (0.0 if kind == "eq" else np.inf), what
    if isinstance(c, scipy.optimize.NonlinearConstraint):
        for name in ("jac", "hess"):
            if callable(getattr(c, name)):
                raise ValueError(f"minimize: {what} gives a callable {name}: fastape "
                                 "computes it from the recorded function; leave it out")
        return c.fun, c.lb, c.ub, what
    if isinstance(c, scipy.optimize.LinearConstraint):
        A = c.A.toarray() if scipy.sparse.issparse(c.A) else np.atleast_2d(
            np.asarray(c.A, dtype=np.float64))
        return (lambda x: A @ x), c.lb, c.ub, what
    raise TypeError(f"minimize: {what} must be a dict ('type', 'fun', 'args'), a "
                    f"NonlinearConstraint or a LinearConstraint, got {type(c).__name__}")


def _parse_bounds(bounds, n):
    if bounds is None:
        return np.full(n, -np.inf), np.full(n, np.inf)
    if isinstance(bounds, scipy.optimize.Bounds):
        lb, ub = bounds.lb, bounds.ub
    else:
        pairs = list(bounds)
        if len(pairs) != n or any(np.size(p) != 2 for p in pairs):
            raise ShapeError(f"minimize: bounds must be {n} (min, max) pairs (one per "
                             f"variable of x0, shape ({n},)), got {len(pairs)} entries")
        lb = [-np.inf if p[0] is None else p[0] for p in pairs]
        ub = [np.inf if p[1] is None else p[1] for p in pairs]
    try:
        lb, ub = (np.broadcast_to(np.asarray(b, dtype=np.float64), (n,)).copy()
                  for b in (lb, ub))
    except ValueError:
        raise ShapeError(f"minimize: bounds of shapes {np.shape(lb)} and {np.shape(ub)} do "
                         f"not fit x0 of shape ({n},)") from None
    if np.isnan(lb).any() or np.isnan(ub).any() or (lb > ub).any():
        i = int(np.flatnonzero(np.isnan(lb) | np.isnan(ub) | (lb > ub))[0])
        raise ValueError(f"minimize: bounds[{i}] = ({lb[i]}, {ub[i]}) is empty or NaN")
    return lb, ub


class _Problem:
    """The objective f, the stacked constraints C and the Lagrangian L, each recorded
    once, with their sizes and bounds."""

    def __init__(self, fun, x0, args, constraints):
        t0 = time.perf_counter()
        self.n = x0.size
        self.x0 = x0

        def objective(x):
            return fun(x, *args)
        objective.__name__ = getattr(fun, "__name__", "objective")
        self.F = _compile(objective, x0)
        f0 = self.F(x0)
        if np.ndim(f0) != 0:
            raise ShapeError(f"minimize: fun must return a number, got shape {np.shape(f0)}")
        parsed = [_parse_constraint(c, i) for i, c in enumerate(_constraint_list(constraints))]
        self.m = 0
        self.C = None
        self.cl = self.cu = np.zeros(0)
        if parsed:
            self._record_constraints(objective, parsed, x0)
        self.setup_seconds = time.perf_counter() - t0   # patterns are timed in _patterns

    def _record_constraints(self, fun_x, parsed, x0):
        from fastape import _functions
        sizes = []

        def constraints(x):
            parts = [_as_vector(fn(x), what) for fn, _, _, what in parsed]
            got = [int(np.prod(p.shape)) for p in parts]
            if sizes and got != sizes:
                raise ShapeError(f"minimize: the constraints changed size from {sizes} to "
                                 f"{got} on another branch; they must keep their shapes")
            sizes[:] = got
            return parts[0] if len(parts) == 1 else _functions.concatenate(parts)
        self.C = _compile(constraints, x0)
        self.m = sum(sizes)
        cl, cu = [], []
        for (_, lb, ub, what), k in zip(parsed, sizes):
            try:
                cl.append(np.broadcast_to(np.asarray(lb, dtype=np.float64), (k,)))
                cu.append(np.broadcast_to(np.asarray(ub, dtype=np.float64), (k,)))
            except ValueError:
                raise ShapeError(f"minimize: {what} returns shape ({k},) but its bounds have "
                                 f"shapes {np.shape(lb)} and {np.shape(ub)}") from None
        self.cl, self.cu = np.concatenate(cl), np.concatenate(cu)
        if np.isnan(self.cl).any() or np.isnan(self.cu).any() or (self.cl > self.cu).any():
            raise ValueError("minimize: a constraint's lower bound exceeds its upper one or "
                             "is NaN")

        self._record_lagrangian(fun_x, parsed, x0)

    def _record_lagrangian(self, objective, parsed, x0):
        """L(x, w) = w₀ f(x) + Σᵢ wᵢ₊₁ cᵢ(x), compiled: the Lagrangian Hessian in one
        sparse Hessian. A constraint's list of scalars is summed scalar by scalar, so a
        tape of scalar operations stays on the scalar layout (a stack of them would move
        the whole tape to the array layout, several times slower to sweep)."""
        from fastape import _functions

        def lagrangian(x, w):
            s = w[0] * objective(x)
            k = 1
            for fn, _, _, what in parsed:
                y = fn(x)
                if isinstance(y, (list, tuple)):
                    for yi in y:
                        s = s + w[k] * yi
                        k += 1
                else:
                    y = _as_vector(y, what)
                    size = int(np.prod(y.shape))
                    s = s + _functions.dot(w[k:k + size], y)
                    k += size
            return s
        w0 = np.ones(1 + self.m)
        self.L = _compile(lagrangian, x0, w0, argnums=0)

    def lagrangian_hessian(self, x, obj_factor, v):
        """σ∇²f(x) + Σ vᵢ∇²cᵢ(x) as a csr_array."""
        return self.L.sparse_hessian(x, np.concatenate([[obj_factor], v]))

    def check_start(self):
        """Non-finite values at the start are an error, before any solver runs."""
        f0 = float(self.F(self.x0))
        if not math.isfinite(f0):
            raise ValueError(f"minimize: fun(x0) = {f0} is not finite")
        g0 = self.F.grad(self.x0)
        if not np.isfinite(g0).all():
            raise ValueError(f"minimize: the gradient of fun at x0 is not finite at index "
                             f"{int(np.flatnonzero(~np.isfinite(g0))[0])}")
        if self.m:
            c0 = np.asarray(self.C(self.x0))
            if not np.isfinite(c0).all():
                i = int(np.flatnonzero(~np.isfinite(c0))[0])
                raise ValueError(f"minimize: constraint value {i} (of the stacked "
                                 "constraints) is not finite at x0")

    def constraint_residual(self, x):
        """max violation of cl <= c(x) <= cu (0 without constraints)."""
        if not self.m:
            return 0.0
        c = np.asarray(self.C(x))
        return float(max(np.max(self.cl - c, initial=0.0), np.max(c - self.cu, initial=0.0)))


# ---------------------------------------------------------------------------------------
# IPOPT


class _Ipopt:
    """cyipopt's problem interface over a _Problem: fixed sparsity structures (the
    constraint Jacobian's pattern, the lower triangle of the union of the objective's
    and the constraints' Hessian patterns), timed callbacks."""

    def __init__(self, P, timer, exact_hessian, callback):
        cyipopt = _import_cyipopt()
        self.error = cyipopt.CyIpoptEvaluationError
        self.P, self.timer, self.user_callback = P, timer, callback
        t0 = time.perf_counter()
        if P.m:
            self.jac = _Fixed(P.C.jacobian_sparsity(), "constraint Jacobian")
            if not len(self.jac.rows):
                raise ValueError("minimize: the constraints do not depend on x")
            self.j_rows, self.j_cols = self.jac.rows, self.jac.cols
        else:
            self.j_rows = self.j_cols = np.zeros(0, np.int64)
        self.exact_hessian = exact_hessian
        if exact_hessian:
            self.hess = _Fixed((P.L if P.m else P.F).hessian_sparsity(), "Lagrangian Hessian",
                               lower=True)
            self.h_rows, self.h_cols = self.hess.rows, self.hess.cols
        self.pattern_seconds = time.perf_counter() - t0
        self.exception = None
        for name in ("objective", "gradient", "constraints", "jacobian", "hessian"):
            setattr(self, name, timer.wrap(name, self._keep_exception(
                getattr(self, "_" + name))))
        self.nit = 0
        self.nonfinite = dict.fromkeys(self.timer.seconds, 0)

    def _keep_exception(self, fun):
        """fun, whose exceptions are kept for the caller of solve() (cyipopt loses those
        of the Hessian callback) while IPOPT is told of an evaluation error and stops at
        its next iteration (intermediate)."""
        def kept(*a):
            try:
                return fun(*a)
            except self.error:
                raise
            except BaseException as e:
                if self.exception is None:
                    self.exception = e
                raise self.error(str(e)) from e
        return kept

    def _finite(self, y, what):
        if not np.all(np.isfinite(y)):
            self.nonfinite[what] += 1
            raise self.error(f"{what} is not finite")
        return y

    def _objective(self, x):
        return self._finite(float(self.P.F(x)), "objective")

    def _gradient(self, x):
        return self._finite(self.P.F.grad(x), "gradient")

    def _constraints(self, x):
        return self._finite(np.asarray(self.P.C(x), dtype=np.float64), "constraints")

    def _jacobian(self, x):
        return self._finite(self.jac.values(self.P.C.sparse_jacobian(x)), "jacobian")

    def jacobianstructure(self):
        return self.j_rows, self.j_cols

    def _hessian(self, x, lagrange, obj_factor):
        if self.P.m:
            h = self.hess.values(self.P.lagrangian_hessian(x, obj_factor, lagrange))
        else:
            h = obj_factor * self.hess.values(self.P.F.sparse_hessian(x))
        return self._finite(h, "hessian")

    def hessianstructure(self):
        if not self.exact_hessian:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return self.h_rows, self.h_cols

    def intermediate(self, alg_mod, iter_count, obj_value, inf_pr, inf_du, mu, d_norm,
                     regularization_size, alpha_du, alpha_pr, ls_trials):
        self.nit = iter_count
        if self.exception is not None:
            return False
        if self.user_callback is not None:
            return self.user_callback(iter_count, obj_value, inf_pr, inf_du) is not True
        return True


def _minimize_ipopt(P, lb, ub, tol, options, callback):
    cyipopt = _import_cyipopt()
    options = dict(options or {})
    disp = options.pop("disp", False)
    if "maxiter" in options:
        options["max_iter"] = options.pop("maxiter")
    options.setdefault("print_level", 5 if disp else 0)
    options.setdefault("sb", "yes")                  # no banner
    if tol is not None:
        options.setdefault("tol", float(tol))
    exact = options.get("hessian_approximation", "exact") == "exact"
    timer = _Timer()
    I = _Ipopt(P, timer, exact, callback)
    nlp = cyipopt.Problem(n=P.n, m=P.m, problem_obj=I, lb=lb, ub=ub,
                          cl=P.cl if P.m else None, cu=P.cu if P.m else None)
    for k, v in options.items():
        nlp.add_option(k, v)
    t0 = time.perf_counter()
    x, info = nlp.solve(P.x0.copy())
    solve_seconds = time.perf_counter() - t0
    if I.exception is not None:
        raise I.exception
    status = int(info["status"])
    name, ok = IPOPT_STATUS.get(status, (f"status {status}", False))
    msg = info["status_msg"]
    msg = msg.decode() if isinstance(msg, bytes) else str(msg)
    return scipy.optimize.OptimizeResult(
        x=x, fun=float(info["obj_val"]), success=ok, status=status,
        message=f"{name}: {msg}", nit=I.nit, nfev=timer.calls["objective"],
        njev=timer.calls["gradient"], nhev=timer.calls["hessian"],
        constr=np.asarray(info["g"]), constr_violation=P.constraint_residual(x),
        mult_g=np.asarray(info["mult_g"]), mult_x_L=np.asarray(info["mult_x_L"]),
        mult_x_U=np.asarray(info["mult_x_U"]), method="ipopt",
        callback_seconds=dict(timer.seconds), callback_calls=dict(timer.calls),
        nonfinite_evaluations=dict(I.nonfinite),
        setup_seconds=P.setup_seconds + I.pattern_seconds, solve_seconds=solve_seconds)


# ---------------------------------------------------------------------------------------
# scipy.optimize.minimize


def _scipy_constraints(P, method):
    """The stacked constraints in the form the scipy method takes."""
    if not P.m:
        return ()
    if method == "trust-constr":
        return (scipy.optimize.NonlinearConstraint(
            P.C, P.cl, P.cu, jac=P.C.sparse_jacobian,
            hess=lambda x, v: P.lagrangian_hessian(x, 0.0, v)),)
    eq = np.flatnonzero(P.cl == P.cu)
    lo = np.flatnonzero((P.cl != P.cu) & np.isfinite(P.cl))
    up = np.flatnonzero((P.cl != P.cu) & np.isfinite(P.cu))
    cache = {}

    def values(x):                         # one forward sweep for both dicts
        if cache.get("x") is None or not np.array_equal(cache["x"], x):
            cache.clear()
            cache["x"], cache["c"] = x.copy(), np.asarray(P.C(x))
        return cache["c"]

    def jacobian(x):
        if cache.get("x") is None or not np.array_equal(cache["x"], x):
            values(x)
        if "J" not in cache:
            cache["J"] = P.C.sparse_jacobian(x).toarray()
        return cache["J"]
    out = []
    if eq.size:
        out.append({"type": "eq", "fun": lambda x: values(x)[eq] - P.cl[eq],
                    "jac": lambda x: jacobian(x)[eq]})
    if lo.size or up.size:
        out.append({"type": "ineq",
                    "fun": lambda x: np.concatenate([values(x)[lo] - P.cl[lo],
                                                     P.cu[up] - values(x)[up]]),
                    "jac": lambda x: np.concatenate([jacobian(x)[lo], -jacobian(x)[up]])})
    return out


def _minimize_scipy(P, method, lb, ub, tol, options, callback, name):
    key = method.lower()
    if P.m and key not in _TAKES_CONSTRAINTS:
        raise ValueError(f"minimize: method {name!r} takes no constraints; use 'ipopt', "
                         "'trust-constr', 'SLSQP', 'COBYLA' or 'COBYQA'")
    bounded = np.isfinite(lb).any() or np.isfinite(ub).any()
    if bounded and key not in _TAKES_BOUNDS:
        raise ValueError(f"minimize: method {name!r} takes no bounds; use 'ipopt', "
                         "'L-BFGS-B', 'TNC', 'SLSQP', 'trust-constr' or 'Powell'")
    kw = {}
    if key in _USES_GRADIENT:
        kw["jac"] = P.F.grad
    if key == "trust-constr":
        kw["hess"] = P.F.sparse_hessian
    elif key in _USES_HESSP:
        kw["hessp"] = P.F.hvp
    elif key in _USES_HESS:
        kw["hess"] = P.F.hessian
    if bounded:
        kw["bounds"] = scipy.optimize.Bounds(lb, ub)
    if P.m:
        kw["constraints"] = _scipy_constraints(P, key)
    t0 = time.perf_counter()
    res = scipy.optimize.minimize(P.F, P.x0.copy(), method=method, tol=tol, options=options,
                                  callback=callback, **kw)
    res.solve_seconds = time.perf_counter() - t0
    res.setup_seconds = P.setup_seconds
    res.method = name
    res.constr_violation = P.constraint_residual(res.x)
    if not np.isfinite(res.fun) or not np.isfinite(res.x).all():
        res.success = False
        res.message = f"non-finite result (fun = {res.fun}); scipy said: {res.message}"
    elif np.abs(res.x).max(initial=0.0) >= DIVERGING:
        res.success = False
        res.message = (f"the iterates diverged (max |x| >= {DIVERGING:g}): the problem looks "
                       f"unbounded; scipy said: {res.message}")
    return res


# ---------------------------------------------------------------------------------------


def minimize(fun, x0, args=(), constraints=(), bounds=None, method=None, tol=None,
             options=None, callback=None):
    """Minimise ``fun(x, *args)`` subject to constraints and bounds, with fastape's
    derivatives: ``fun`` and the constraint functions are recorded once (each with
    :func:`fastape.compile`, on ``x0``) and every evaluation the solver asks for replays
    the compiled tapes.

    * ``x0``: a 1-D array of n numbers. ``args``: extra arguments of ``fun``, fixed
      during the solve (recorded as constants).
    * ``constraints`` (scipy's conventions): dicts ``{"type": "eq" | "ineq", "fun": c,
      "args": ()}`` meaning ``c(x, *args) == 0`` or ``>= 0``, and
      :class:`scipy.optimize.NonlinearConstraint` (``lb <= c(x) <= ub``) or
      :class:`scipy.optimize.LinearConstraint` (recorded as a dense ``A @ x``) objects,
      one or a sequence. ``c`` returns a number, a 1-D array or a list of numbers
      (a Python loop's scalars are stacked). A ``jac`` or ``hess`` of the user's is
      refused: fastape computes them.
    * ``bounds``: :class:`scipy.optimize.Bounds` or n ``(min, max)`` pairs (None is
      unbounded).
    * ``method``: ``"ipopt"`` (cyipopt, ``pip install 'fastape[ipopt]'``), given the
      gradient, the sparse constraint Jacobian and the sparse Lagrangian Hessian, or
      any method of :func:`scipy.optimize.minimize`: ``"trust-constr"`` gets sparse
      Jacobians and Hessians (``csr_array``), ``"SLSQP"`` dense Jacobians, the
      Newton-type methods ``hessp`` (``F.hvp``) or ``hess``, the others the gradient
      if they use one. None chooses as scipy does (BFGS, L-BFGS-B with bounds, SLSQP
      with constraints).
    * ``options``: for IPOPT its options by name (``{"max_iter": 100, "tol": 1e-10,
      "hessian_approximation": "limited-memory"}``; ``disp=True`` prints IPOPT's log,
      ``maxiter`` is ``max_iter``); for scipy its method's options. ``callback``: for
      IPOPT called each iteration as ``callback(k, f, primal_infeasibility,
      dual_infeasibility)``, returning True stops it; for scipy, scipy's.

    Returns a :class:`scipy.optimize.OptimizeResult` with ``x``, ``fun``, ``success``,
    ``status``, ``message``, ``nit``, ``nfev``, ``constr_violation`` (max violation of
    the constraints at ``x``), ``setup_seconds`` (recording, and for IPOPT the
    sparsity patterns) and ``solve_seconds``; for IPOPT also ``constr`` (c(x)),
    ``mult_g``, ``mult_x_L``, ``mult_x_U`` (IPOPT's multipliers, of the Lagrangian
    ``f + mult_gᵀ c``), ``callback_seconds`` and ``callback_calls`` per callback
    (``objective``, ``gradient``, ``constraints``, ``jacobian``, ``hessian``) and
    ``nonfinite_evaluations`` (how many values of each were not finite).

    Errors and statuses: a shape that does not fit (x0 not 1-D, ``fun`` not scalar, a
    constraint not 1-D or of another size than its bounds, bounds not n) is a
    ``ShapeError``; a non-finite value or gradient at ``x0`` a ``ValueError``. During
    an IPOPT solve a non-finite objective or constraint value makes IPOPT shorten the
    step, a non-finite derivative ends it with status -13 (Invalid_Number_Detected);
    an unbounded problem ends with ``success=False`` (status 4, Diverging_Iterates, or
    -1, Maximum_Iterations_Exceeded); a scipy method's result is ``success=False``
    when it is not finite or when ``max |x| >= 1e20`` (IPOPT's test for diverging
    iterates; trust-constr reports success there). The sparsity structures are fixed
    by the first evaluation: when a recorded comparison flips (``if x[0] > 0``) and
    the other branch has derivative entries outside them,
    :class:`fastape.sparse.SparsityChanged` is raised, never a wrong matrix; write
    such a branch with ``numpy.where``, whose two sides both stay on the tape.

    >>> import numpy as np
    >>> from fastape.optimize import minimize
    >>> res = minimize(lambda x: x[0] ** 2 + x[1] ** 2, np.array([1.0, 2.0]),
    ...                constraints={"type": "eq", "fun": lambda x: x[0] + x[1] - 1.0},
    ...                method="trust-constr")
    >>> np.round(res.x, 6)
    array([0.5, 0.5])
    """
    x0 = np.asarray(x0, dtype=np.float64)
    if x0.ndim != 1:
        raise ShapeError(f"minimize: x0 must be 1-D (n variables), got shape {x0.shape}")
    if not np.isfinite(x0).all():
        raise ValueError("minimize: x0 is not finite")
    x0 = x0.copy()
    if method is None:
        method = "SLSQP" if _constraint_list(constraints) else (
            "L-BFGS-B" if bounds is not None else "BFGS")
    if not isinstance(method, str):
        raise TypeError(f"minimize: method must be a string, got {type(method).__name__}")
    lb, ub = _parse_bounds(bounds, x0.size)
    P = _Problem(fun, x0, tuple(args), constraints)
    P.check_start()
    if method.lower() == "ipopt":
        return _minimize_ipopt(P, lb, ub, tol, options, callback)
    return _minimize_scipy(P, method, lb, ub, tol, options, callback, method)
