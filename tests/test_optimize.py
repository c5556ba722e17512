"""fastape.optimize.minimize: IPOPT and scipy's methods on problems whose optimum is
known (closed form, or published for Hock-Schittkowski 71), the derivatives handed
to IPOPT against dense ones, and the bad inputs of issue 16 item 4."""

import sys

import numpy as np
import pytest
import scipy.optimize
import scipy.sparse

import fastape as ft
from fastape import optimize
from fastape.optimize import minimize
from fastape.sparse import SparsityChanged


def _have_cyipopt():
    try:
        import cyipopt  # noqa: F401
    except ImportError:
        return False
    return True


needs_ipopt = pytest.mark.skipif(not _have_cyipopt(),
                                 reason="cyipopt not installed (pip install 'fastape[ipopt]')")
CONSTRAINED = [pytest.param("ipopt", marks=needs_ipopt), "trust-constr", "SLSQP"]


def tight(method):
    """Tolerances that make each method converge to 1e-6 (trust-constr's interior point
    stops 1e-5 away with its default barrier parameter, whatever `tol` says)."""
    if method == "trust-constr":
        return {"options": {"gtol": 1e-10, "xtol": 1e-10, "barrier_tol": 1e-10,
                            "initial_barrier_parameter": 1e-3}}
    return {"tol": 1e-10}


# --- Hock-Schittkowski 71: published optimum -----------------------------------------

HS71_X = np.array([1.0, 4.74299963, 3.82114998, 1.37940829])
HS71_F = 17.0140173


def hs71_f(x):
    return x[0] * x[3] * (x[0] + x[1] + x[2]) + x[2]


HS71_CONS = [{"type": "ineq", "fun": lambda x: x[0] * x[1] * x[2] * x[3] - 25.0},
             {"type": "eq", "fun": lambda x: x[0] ** 2 + x[1] ** 2 + x[2] ** 2 + x[3] ** 2
              - 40.0}]


@pytest.mark.parametrize("method", CONSTRAINED)
def test_hs71_reaches_the_published_optimum(method):
    x0 = np.array([1.0, 5.0, 5.0, 1.0])
    keep = x0.copy()
    res = minimize(hs71_f, x0, constraints=HS71_CONS, bounds=[(1, 5)] * 4, method=method,
                   **tight(method))
    assert res.success, res.message
    assert np.array_equal(x0, keep)                       # never mutated
    assert abs(res.fun - HS71_F) < 1e-6
    np.testing.assert_allclose(res.x, HS71_X, atol=1e-6)
    assert res.constr_violation < 1e-6


# --- an equality-constrained quadratic: the KKT system's solution --------------------

def _quadratic(n=6, m=2, seed=0):
    rng = np.random.default_rng(seed)
    B = rng.normal(size=(n, n))
    Q = B @ B.T + n * np.eye(n)
    c = rng.normal(size=n)
    A = rng.normal(size=(m, n))
    b = rng.normal(size=m)
    kkt = np.block([[Q, A.T], [A, np.zeros((m, m))]])
    x_star = np.linalg.solve(kkt, np.concatenate([-c, b]))[:n]
    return Q, c, A, b, x_star


@pytest.mark.parametrize("method", CONSTRAINED)
def test_equality_constrained_quadratic_matches_its_kkt_solution(method):
    Q, c, A, b, x_star = _quadratic()

    def f(x):                               # a scalar loop: x'Qx / 2 + c'x
        s = 0.0
        for i in range(len(c)):
            s = s + c[i] * x[i]
            for j in range(len(c)):
                s = s + 0.5 * Q[i, j] * x[i] * x[j]
        return s
    cons = {"type": "eq", "fun": lambda x, A, b: A @ x - b, "args": (A, b)}
    res = minimize(f, np.zeros(len(c)), constraints=cons, method=method, **tight(method))
    assert res.success, res.message
    np.testing.assert_allclose(res.x, x_star, atol=1e-6)


@pytest.mark.parametrize("method", [pytest.param("ipopt", marks=needs_ipopt), "trust-constr",
                                    "SLSQP"])
def test_linear_and_range_constraints(method):
    # min x² + y² s.t. x + y >= 1 (LinearConstraint) and 0.3 <= x <= 2 (range): (0.5, 0.5)
    lin = scipy.optimize.LinearConstraint(np.array([[1.0, 1.0]]), 1.0, np.inf)
    rng = scipy.optimize.NonlinearConstraint(lambda x: x[0], 0.3, 2.0)
    res = minimize(lambda x: x[0] ** 2 + x[1] ** 2, np.array([2.0, 0.0]),
                   constraints=[lin, rng], method=method, **tight(method))
    assert res.success, res.message
    np.testing.assert_allclose(res.x, [0.5, 0.5], atol=1e-6)
    # the range becomes active when it excludes 0.5: x = 0.7, y = 0.3
    rng = scipy.optimize.NonlinearConstraint(lambda x: x[0], 0.7, 2.0)
    res = minimize(lambda x: x[0] ** 2 + x[1] ** 2, np.array([2.0, 0.0]),
                   constraints=[lin, rng], method=method, **tight(method))
    # (trust-constr's interior point stops 2e-6 from this vertex even so)
    np.testing.assert_allclose(res.x, [0.7, 0.3], atol=1e-5 if method == "trust-constr"
                               else 1e-6)


@pytest.mark.parametrize("method", [pytest.param("ipopt", marks=needs_ipopt), "L-BFGS-B",
                                    "TNC", "trust-constr", "SLSQP"])
def test_bounds_clip_the_unconstrained_optimum(method):
    a = np.array([-0.5, 0.3, 1.7, 0.9])
    res = minimize(lambda x, a: np.sum((x - a) ** 2), np.full(4, 0.5), args=(a,),
                   bounds=scipy.optimize.Bounds(0.0, 1.0), method=method, **tight(method))
    np.testing.assert_allclose(res.x, np.clip(a, 0.0, 1.0), atol=1e-6)


def _rosenbrock(x):
    s = 0.0
    for i in range(len(x) - 1):
        s = s + 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2
    return s


@pytest.mark.parametrize("method", [None, "BFGS", "CG", "Newton-CG", "trust-ncg", "trust-krylov",
                                    "trust-exact", pytest.param("ipopt",
                                                                          marks=needs_ipopt)])
def test_unconstrained_methods_get_derivatives(method):
    x0 = np.array([-1.2, 1.0, -1.2, 1.0])
    res = minimize(_rosenbrock, x0, method=method, **tight(method))
    assert res.success, res.message
    np.testing.assert_allclose(res.x, np.ones(4), atol=1e-5)


def test_nelder_mead_gets_no_derivatives_and_still_works():
    res = minimize(lambda x: (x[0] - 1.0) ** 2 + (x[1] + 2.0) ** 2, np.zeros(2),
                   method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-12})
    np.testing.assert_allclose(res.x, [1.0, -2.0], atol=1e-6)


# --- what IPOPT is handed: against dense derivatives ---------------------------------

@needs_ipopt
def test_ipopt_callbacks_equal_dense_derivatives():
    rng = np.random.default_rng(3)
    n = 7

    def f(x):
        s = 0.0
        for i in range(n - 1):
            s = s + np.sin(x[i]) * x[i + 1] ** 2
        return s + x[0] * x[n - 1]

    def c(x):                                     # banded constraints and one arrow row
        return [x[i] * x[i + 1] - np.exp(x[i + 2]) for i in range(n - 2)] + \
               [np.sum(x * x)]
    x0 = rng.normal(size=n)
    P = optimize._Problem(f, x0, (), {"type": "eq", "fun": c})
    cb = optimize._Ipopt(P, optimize._Timer(), True, None)
    x = rng.normal(size=n)
    lam = rng.normal(size=P.m)
    sigma = 0.7
    J = np.zeros((P.m, n))
    J[cb.jacobianstructure()] = cb.jacobian(x)
    np.testing.assert_allclose(J, ft.jacobian(lambda v: ft.stack(c(v)))(x), rtol=1e-12,
                               atol=1e-12)
    rows, cols = cb.hessianstructure()
    assert (rows >= cols).all()                    # IPOPT takes the lower triangle
    H = np.zeros((n, n))
    H[rows, cols] = cb.hessian(x, lam, sigma)
    H = np.tril(H) + np.tril(H, -1).T
    dense = ft.hessian(lambda v: sigma * f(v) + ft.dot(lam, ft.stack(c(v))))(x)
    np.testing.assert_allclose(H, dense, rtol=1e-10, atol=1e-12)
    # ... and the dense Hessian against central differences of the gradient
    g = ft.grad(lambda v: sigma * f(v) + ft.dot(lam, ft.stack(c(v))))
    h = 1e-6
    fd = np.column_stack([(g(x + h * e) - g(x - h * e)) / (2 * h) for e in np.eye(n)])
    np.testing.assert_allclose(H, fd, atol=1e-6)
    assert cb.gradient(x) == pytest.approx(ft.grad(f)(x), rel=1e-12)


def test_a_structure_other_than_ipopts_is_refused():
    pattern = scipy.sparse.csr_array(np.array([[1.0, 0, 1], [0, 1, 0], [1, 0, 1]]))
    fixed = optimize._Fixed(pattern, "test matrix", lower=True)
    assert list(zip(fixed.rows, fixed.cols)) == [(0, 0), (1, 1), (2, 0), (2, 2)]
    M = scipy.sparse.csr_array((np.arange(1.0, 6.0), pattern.indices, pattern.indptr))
    np.testing.assert_array_equal(fixed.values(M), [1.0, 3.0, 4.0, 5.0])
    with pytest.raises(SparsityChanged, match="test matrix has another structure"):
        fixed.values(scipy.sparse.csr_array(np.eye(3)))


@needs_ipopt
def test_ipopt_reports_its_callback_times_and_counts():
    res = minimize(hs71_f, np.array([1.0, 5.0, 5.0, 1.0]), constraints=HS71_CONS,
                   bounds=[(1, 5)] * 4, method="ipopt")
    assert set(res.callback_seconds) == {"objective", "gradient", "constraints", "jacobian",
                                         "hessian"}
    assert all(t > 0 for t in res.callback_seconds.values())
    assert res.nfev == res.callback_calls["objective"] >= res.nit
    assert res.solve_seconds > sum(res.callback_seconds.values())
    assert res.constr == pytest.approx([0.0, 0.0], abs=1e-6)     # both active at x*
    assert res.mult_g.shape == (2,)


@needs_ipopt
def test_ipopt_options_and_limited_memory_hessian():
    res = minimize(hs71_f, np.array([1.0, 5.0, 5.0, 1.0]), constraints=HS71_CONS,
                   bounds=[(1, 5)] * 4, method="ipopt",
                   options={"hessian_approximation": "limited-memory", "maxiter": 200})
    assert res.success and res.nhev == 0
    np.testing.assert_allclose(res.x, HS71_X, atol=1e-5)
    res = minimize(hs71_f, np.array([1.0, 5.0, 5.0, 1.0]), constraints=HS71_CONS,
                   bounds=[(1, 5)] * 4, method="ipopt", options={"max_iter": 2})
    assert not res.success and res.status == -1 and "Maximum_Iterations" in res.message
    seen = []
    res = minimize(hs71_f, np.array([1.0, 5.0, 5.0, 1.0]), constraints=HS71_CONS,
                   bounds=[(1, 5)] * 4, method="ipopt",
                   callback=lambda k, f, pr, du: seen.append(k) or k >= 3)
    assert res.status == 5 and seen == [0, 1, 2, 3]          # User_Requested_Stop


# --- bad input (issue 16 item 4) -----------------------------------------------------

def _sq(x):
    return np.sum(x * x)


@pytest.mark.parametrize("call, error, match", [
    (lambda: minimize(_sq, np.ones((2, 2))), ft.ShapeError, r"x0 must be 1-D.*\(2, 2\)"),
    (lambda: minimize(lambda x: x * 2.0, np.ones(3)), ft.ShapeError,
     r"fun must return a number, got shape \(3,\)"),
    (lambda: minimize(_sq, np.ones(4), constraints={"type": "eq",
                                                    "fun": lambda x: x.reshape(2, 2)}),
     ft.ShapeError, r"constraints\[0\] must return a number or a 1-D array, got shape \(2, 2\)"),
    (lambda: minimize(_sq, np.ones(3), constraints=scipy.optimize.NonlinearConstraint(
        lambda x: x[:2], [0.0, 0.0, 0.0], 1.0)), ft.ShapeError,
     r"constraints\[0\] returns shape \(2,\) but its bounds have shapes \(3,\)"),
    (lambda: minimize(_sq, np.ones(3), bounds=[(0, 1)] * 2), ft.ShapeError,
     r"bounds must be 3 \(min, max\) pairs.*got 2"),
    (lambda: minimize(_sq, np.ones(3), bounds=scipy.optimize.Bounds(np.zeros(2), 1.0)),
     ft.ShapeError, r"do not fit x0 of shape \(3,\)"),
    (lambda: minimize(_sq, np.ones(2), bounds=[(0, 1), (2, 1)]), ValueError,
     r"bounds\[1\] = \(2.0, 1.0\) is empty"),
    (lambda: minimize(_sq, np.ones(2), constraints={"type": "le", "fun": _sq}), ValueError,
     r"constraints\[0\]\['type'\] must be 'eq' or 'ineq'"),
    (lambda: minimize(_sq, np.ones(2), constraints=[{"type": "eq", "fun": _sq,
                                                     "jac": lambda x: 2 * x}]),
     ValueError, r"constraints\[0\] gives 'jac': fastape computes it"),
    (lambda: minimize(_sq, np.ones(2), constraints=[lambda x: x]), TypeError,
     r"constraints\[0\] must be a dict"),
    (lambda: minimize(_sq, np.array([1.0, np.nan])), ValueError, "x0 is not finite"),
    (lambda: minimize(lambda x: np.log(x[0]), np.array([-1.0, 1.0])), ValueError,
     r"fun\(x0\) = nan is not finite"),
    (lambda: minimize(_sq, np.ones(2), constraints={"type": "ineq",
                                                    "fun": lambda x: np.sqrt(x - 2.0)}),
     ValueError, r"constraint value 0 .* not finite at x0"),
    (lambda: minimize(_sq, np.ones(2), constraints={"type": "eq", "fun": _sq},
                      method="BFGS"), ValueError, "method 'BFGS' takes no constraints"),
    (lambda: minimize(_sq, np.ones(2), bounds=[(0, 1)] * 2, method="CG"), ValueError,
     "method 'CG' takes no bounds"),
])
def test_bad_input_is_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_ipopt_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cyipopt", None)      # import cyipopt now fails
    with pytest.raises(ImportError, match=r"pip install 'fastape\[ipopt\]'"):
        minimize(_sq, np.ones(2), method="ipopt")


def test_a_constraint_that_changes_size_on_another_branch_is_refused():
    def c(x):
        return [x[0] + 1.0] if x[0] > 0 else [x[0] + 1.0, x[1] + 1.0]
    with pytest.raises(ft.ShapeError, match=r"changed size from \[1\] to \[2\]"):
        minimize(lambda x: (x[0] + 2.0) ** 2 + x[1] ** 2, np.array([0.5, 0.0]),
                 constraints={"type": "ineq", "fun": c}, method="SLSQP")


@needs_ipopt
@pytest.mark.parametrize("fun", [lambda x: x[0] + x[1] ** 2, lambda x: x[1] ** 2 - x[0] ** 2])
def test_ipopt_unbounded_problem_is_a_failed_status(fun):
    res = minimize(fun, np.array([1.0, 1.0]), method="ipopt")
    assert not res.success
    assert res.status in (4, -1), res.message              # Diverging_Iterates / max iter


@pytest.mark.parametrize("method", ["trust-constr", "L-BFGS-B", "BFGS"])
def test_scipy_unbounded_problem_is_not_a_success(method):
    res = minimize(lambda x: x[0] + x[1] ** 2, np.array([1.0, 1.0]), method=method)
    assert not res.success, (res.message, res.x)


@needs_ipopt
def test_ipopt_recovers_from_a_non_finite_objective_in_its_line_search():
    # Newton's first step from x = 3 on x - log x lands at x = -3, where log is NaN
    res = minimize(lambda x: x[0] - np.log(x[0]) + x[1] ** 2, np.array([3.0, 1.0]),
                   method="ipopt")
    assert res.success and res.nonfinite_evaluations["objective"] > 0
    np.testing.assert_allclose(res.x, [1.0, 0.0], atol=1e-8)


@needs_ipopt
def test_ipopt_stops_on_a_non_finite_gradient():
    @ft.custom_vjp
    def odd(x):                                  # value x², gradient NaN below x = 0.5
        return x * x

    odd.defvjp(lambda x: (x * x, x),
               lambda x, g: (g * (2.0 * x if x >= 0.5 else np.nan),))
    res = minimize(lambda x: odd(x[0]) + x[1] ** 2, np.array([2.0, 1.0]), method="ipopt")
    assert not res.success and res.status == -13, res.message   # Invalid_Number_Detected
    assert res.nonfinite_evaluations["gradient"] > 0


def _branchy(x):
    # continuous, with another Hessian pattern for x0 <= 0 (an x0 x1 term there)
    if x[0] > 0:
        return (x[0] + 1.0) ** 2 + x[1] ** 2
    return (x[0] + 1.0) ** 2 + x[1] ** 2 + 0.5 * x[0] * x[1]


def _branchless(x):
    # the same function with numpy.where: both sides on the tape, one pattern for both
    return (x[0] + 1.0) ** 2 + x[1] ** 2 + np.where(x[0] > 0, 0.0, 0.5 * x[0] * x[1])


BRANCHY_MIN = [-16.0 / 15.0, 4.0 / 15.0]      # the x0 <= 0 side's minimum


@pytest.mark.parametrize("method", [pytest.param("ipopt", marks=needs_ipopt), "trust-constr"])
def test_a_pattern_changed_by_a_guard_flip_is_refused(method):
    with pytest.raises(SparsityChanged, match="another branch"):
        minimize(_branchy, np.array([2.0, 0.5]), method=method)


@pytest.mark.parametrize("method", [pytest.param("ipopt", marks=needs_ipopt), "trust-constr"])
def test_the_branch_written_with_where_is_solved(method):
    res = minimize(_branchless, np.array([2.0, 0.5]), method=method, **tight(method))
    assert res.success, res.message
    np.testing.assert_allclose(res.x, BRANCHY_MIN, atol=1e-6)
