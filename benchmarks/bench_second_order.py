"""Benchmark: compiled second order (Function.hvp, Function.hessian) against the compiled
value, value-and-gradient and jvp of the same function, in the same run, and against
CasADi's SX Functions (and JAX's jit) for the same derivatives where installed.

    rosen_loop   the scalar-loop Rosenbrock, n = 10 000
                 sum(100 (x[i+1] - x[i]²)² + (1 - x[i])² for i < n - 1) over x[i] of
                 a numpy input: a grouped scalar tape, the direct forward-over-reverse
                 sweep
    two_layer    the seeds' network ||tanh(X W1) W2 - y||² (bench_two_layer.py),
                 (n, d, h) = (256, 64, 64), differentiated in the pair (W1, W2) (one
                 pytree argument): array ops, the sweep over the compiled gradient
    hess_rosen   the dense Hessian of the scalar-loop Rosenbrock, n = 100:
                 F.hessian (vector mode, 64 + 36 directions) against 100 F.hvp calls
    hess_tanh    the same for sum(tanh(A x)), A a fixed 100 x 100 matrix, written with
                 numpy ops (a dense Hessian Aᵀ diag(-2 tanh sech²) A)

CasADi: an SX Function of the same Rosenbrock built from casadi.SX.sym('x', n) with a
Python loop; casadi.gradient for value+grad, casadi.jtimes(f, x, v) for the jvp,
casadi.jtimes(grad, x, v) for the HVP, casadi.hessian for the dense Hessian, each
wrapped as a casadi.Function and called with numpy arrays (its result converted to
numpy: fastape returns numpy arrays too); the construction of the expressions and
Functions is timed separately. JAX (CPU): jax.jit of the vectorised jnp form of each
function (a 10 000-iteration Python loop takes minutes to compile), jax.grad,
jax.jvp(jax.grad(f), ...) for the HVP and jax.hessian; compile time reported
separately.

Each figure is the median over rounds (each round times a batch of calls, the tools
interleaved), and each ratio the median of the per-round ratios, so a slow moment of
the shared machine affects both sides of a ratio alike. BLAS runs on one thread
(threadpoolctl when installed, and OPENBLAS_NUM_THREADS=1 before numpy is imported).

    PYTHONPATH=src python benchmarks/bench_second_order.py [--rounds 9] [--json PATH]
        [--no-casadi] [--no-jax]
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                      "intra_op_parallelism_threads=1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import fastape as ft  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# the workloads and the timing of bench_forward.py, shared
from bench_forward import measure, rosen_loop, write_json  # noqa: E402
from bench_forward import two_layer_problem as _two_layer  # noqa: E402


def two_layer_problem(n=256, d=64, h=64, seed=0):
    """bench_forward's network with its weights as one argument, the tuple (W1, W2)."""
    f, W1, W2 = _two_layer(n, d, h, seed)

    def f_tuple(W):
        return f(*W)

    f_tuple.data = f.data
    return f_tuple, (W1, W2)

try:
    from threadpoolctl import threadpool_limits  # noqa: E402
except ImportError:          # the environment variables above still pin OpenBLAS
    threadpool_limits = None




def rosen_hessian(x):
    """The closed form (a check before timing)."""
    n = len(x)
    H = np.zeros((n, n))
    for i in range(n - 1):
        H[i, i] += 1200 * x[i] ** 2 - 400 * x[i + 1] + 2
        H[i + 1, i + 1] += 200
        H[i, i + 1] = H[i + 1, i] = -400 * x[i]
    return H








def _timed(build):
    t0 = time.perf_counter()
    out = build()
    return out, time.perf_counter() - t0


# -- CasADi and JAX builders ------------------------------------------------------------

def casadi_rosen(n):
    """SX Functions of the loop Rosenbrock: f, (f, ∇f), jvp, hvp (and the Hessian)."""
    import casadi as ca
    x = ca.SX.sym("x", n)
    v = ca.SX.sym("v", n)
    s = 0
    for i in range(n - 1):
        s = s + 100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2
    g = ca.gradient(s, x)
    out = {"value": ca.Function("f", [x], [s]),
           "value+grad": ca.Function("vg", [x], [s, g]),
           "jvp": ca.Function("jvp", [x, v], [s, ca.jtimes(s, x, v)]),
           "hvp": ca.Function("hvp", [x, v], [ca.jtimes(g, x, v)])}
    if n <= 1000:
        out["hessian"] = ca.Function("H", [x], [ca.hessian(s, x)[0]])
    return out


def casadi_tanh(A):
    import casadi as ca
    n = A.shape[1]
    x = ca.SX.sym("x", n)
    v = ca.SX.sym("v", n)
    s = ca.sum1(ca.tanh(ca.mtimes(ca.DM(A), x)))
    g = ca.gradient(s, x)
    return {"hvp": ca.Function("hvp", [x, v], [ca.jtimes(g, x, v)]),
            "hessian": ca.Function("H", [x], [ca.hessian(s, x)[0]])}


def casadi_two_layer(X, y, d, h):
    """The two-layer network as a CasADi SX Function of w = [vec(W1) (column-major),
    W2]: value, value + gradient, jvp (jtimes of f) and hvp (jtimes of the gradient)."""
    import casadi as ca
    W1 = ca.SX.sym("W1", d, h)
    W2 = ca.SX.sym("W2", h)
    w = ca.vertcat(ca.vec(W1), W2)
    v = ca.SX.sym("v", w.shape[0])
    f = ca.sumsqr(ca.mtimes(ca.tanh(ca.mtimes(ca.DM(X), W1)), W2) - ca.DM(y))
    g = ca.gradient(f, w)
    return {"value": ca.Function("f", [w], [f]), "value+grad": ca.Function("fg", [w], [f, g]),
            "jvp": ca.Function("jvp", [w, v], [f, ca.jtimes(f, w, v)]),
            "hvp": ca.Function("hvp", [w, v], [ca.jtimes(g, w, v)])}


def _np(dm):
    return np.asarray(dm.full()).reshape(-1) if dm.shape[1] == 1 else np.asarray(dm.full())


def jax_fns(f):
    import jax
    jax.config.update("jax_enable_x64", True)
    return {"value": jax.jit(f), "value+grad": jax.jit(jax.value_and_grad(f)),
            "jvp": jax.jit(lambda x, v: jax.jvp(f, (x,), (v,))),
            "hvp": jax.jit(lambda x, v: jax.jvp(jax.grad(f), (x,), (v,))[1]),
            "hessian": jax.jit(jax.hessian(f))}


def _jax_ready(fn, *a):
    import jax
    return lambda: jax.block_until_ready(fn(*a))


def _jax_rosen(x):
    import jax.numpy as jnp
    return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


# -- cases ------------------------------------------------------------------------------

def case_rosen(rounds, use_casadi, use_jax, n=10_000):
    rng = np.random.default_rng(1)
    x = rng.uniform(-1.0, 1.0, n)
    v = rng.standard_normal(n)
    F, t_compile = _timed(lambda: ft.compile(rosen_loop, x))
    hv = F.hvp(x, v)
    H = rosen_hessian(x) if n <= 2000 else None
    want = H @ v if H is not None else _rosen_hvp(x, v)
    assert np.allclose(hv, want, rtol=1e-10, atol=1e-8), "hvp disagrees with the closed form"
    tools = {"value": lambda: F(x), "value+grad": lambda: F.value_and_grad(x),
             "jvp": lambda: F.jvp(x, v), "hvp": lambda: F.hvp(x, v)}
    build = {"fastape compile": t_compile}
    other = {}
    if use_casadi:
        C, build["casadi build"] = _timed(lambda: casadi_rosen(n))
        assert np.allclose(_np(C["hvp"](x, v)), want, rtol=1e-10, atol=1e-8)
        for k in ("value", "value+grad", "jvp", "hvp"):
            fn = C[k]
            tools[f"casadi {k}"] = ((lambda fn=fn: fn(x)) if k in ("value", "value+grad")
                                    else (lambda fn=fn: fn(x, v)))
            other[k] = f"casadi {k}"
    if use_jax:
        import jax.numpy as jnp
        J = jax_fns(_jax_rosen)
        xj, vj = jnp.asarray(x), jnp.asarray(v)
        t0 = time.perf_counter()
        for k in ("value", "value+grad"):
            _jax_ready(J[k], xj)()
        for k in ("jvp", "hvp"):
            _jax_ready(J[k], xj, vj)()
        build["jax jit compile (4 fns)"] = time.perf_counter() - t0
        assert np.allclose(np.asarray(J["hvp"](xj, vj)), want, rtol=1e-10, atol=1e-8)
        for k in ("value", "value+grad"):
            tools[f"jax {k}"] = _jax_ready(J[k], xj)
        for k in ("jvp", "hvp"):
            tools[f"jax {k}"] = _jax_ready(J[k], xj, vj)
    med, ratio = measure(tools, rounds)
    ratios = {"jvp / value": ratio("jvp", "value"),
              "hvp / value+grad": ratio("hvp", "value+grad")}
    for k in ("value+grad", "jvp", "hvp"):
        if f"casadi {k}" in tools:
            ratios[f"fastape / casadi, {k}"] = ratio(k, f"casadi {k}")
    for k in ("value+grad", "hvp"):
        if f"jax {k}" in tools:
            ratios[f"fastape / jax, {k}"] = ratio(k, f"jax {k}")
    return {"key": "rosen_loop", "title": f"scalar-loop Rosenbrock, n = {n}",
            "nodes": F.nodes, "runs": F.traces[-1].run_count, "direct": True,
            "seconds": med, "build_seconds": build, "ratios": ratios}


def _rosen_hvp(x, v):
    """H v of the closed form without forming H."""
    out = np.zeros_like(x)
    a, b = x[:-1], x[1:]
    out[:-1] += (1200 * a * a - 400 * b + 2) * v[:-1] - 400 * a * v[1:]
    out[1:] += 200 * v[1:] - 400 * a * v[:-1]
    return out


def case_two_layer(rounds, use_casadi=False):
    f, W = two_layer_problem()
    rng = np.random.default_rng(2)
    dW = (rng.standard_normal(W[0].shape), rng.standard_normal(W[1].shape))
    F = ft.compile(f, W)
    hv = F.hvp((W,), dW)        # (W,): the tuple of the call's arguments
    # check: central differences of the gradient along dW
    h = 1e-6
    gp = F.grad((W[0] + h * dW[0], W[1] + h * dW[1]))
    gm = F.grad((W[0] - h * dW[0], W[1] - h * dW[1]))
    for a, p, m in zip(hv, gp, gm, strict=True):
        assert np.allclose(a, (p - m) / (2 * h), rtol=1e-5, atol=1e-5)
    tools = {"value": lambda: F(W), "value+grad": lambda: F.value_and_grad(W),
             "jvp": lambda: F.jvp((W,), dW), "hvp": lambda: F.hvp((W,), dW)}
    build = {}
    ratios = {}
    if use_casadi:
        X, y = f.data
        d, h = W[0].shape
        cas, build["casadi build"] = _timed(lambda: casadi_two_layer(X, y, d, h))
        w = np.concatenate([W[0].ravel(order="F"), W[1]])
        dw = np.concatenate([dW[0].ravel(order="F"), dW[1]])
        # check: CasADi's value and hvp are fastape's (in CasADi's column-major order)
        assert np.isclose(float(cas["value"](w)), F(W), rtol=1e-12)
        chv = _np(cas["hvp"](w, dw))
        assert np.allclose(chv, np.concatenate([hv[0].ravel(order="F"), hv[1]]),
                           rtol=1e-9, atol=1e-9)
        tools.update({"casadi value": lambda: cas["value"](w),
                      "casadi value+grad": lambda: cas["value+grad"](w),
                      "casadi jvp": lambda: cas["jvp"](w, dw),
                      "casadi hvp": lambda: cas["hvp"](w, dw)})
    med, ratio = measure(tools, rounds)
    ratios["jvp / value"] = ratio("jvp", "value")
    ratios["hvp / value+grad"] = ratio("hvp", "value+grad")
    if use_casadi:
        for k in ("value+grad", "jvp", "hvp"):
            ratios[f"fastape / casadi, {k}"] = ratio(k, f"casadi {k}")
    return {"key": "two_layer", "title": "two-layer network ||tanh(X W1) W2 - y||², "
            "(n, d, h) = (256, 64, 64), in (W1, W2)", "nodes": F.nodes,
            "direct": F.traces[-1].direct_hvp, "seconds": med, "build_seconds": build,
            "ratios": ratios}


def _hessian_case(key, title, F, x, want, rounds, casadi=None, jax_fn=None):
    n = x.size
    eye = np.eye(n)

    def by_hvp():
        return np.stack([F.hvp(x, eye[j]) for j in range(n)], axis=1)

    H = F.hessian(x)
    assert np.allclose(H, want, rtol=1e-10, atol=1e-9), f"{key}: hessian disagrees"
    assert np.allclose(by_hvp(), want, rtol=1e-10, atol=1e-9), f"{key}: hvp disagrees"
    tools = {"value+grad": lambda: F.value_and_grad(x), "hessian": lambda: F.hessian(x),
             f"{n} hvp calls": by_hvp}
    build = {}
    if casadi is not None:
        C, build["casadi build"] = _timed(casadi)
        assert np.allclose(_np(C["hessian"](x)), want, rtol=1e-10, atol=1e-9)
        tools["casadi hessian"] = lambda: _np(C["hessian"](x))
        tools[f"casadi {n} hvp calls"] = lambda: np.stack(
            [_np(C["hvp"](x, eye[j])) for j in range(n)], axis=1)
    if jax_fn is not None:
        import jax.numpy as jnp
        J = jax_fns(jax_fn)
        xj = jnp.asarray(x)
        t0 = time.perf_counter()
        _jax_ready(J["hessian"], xj)()
        build["jax jit compile (hessian)"] = time.perf_counter() - t0
        assert np.allclose(np.asarray(J["hessian"](xj)), want, rtol=1e-10, atol=1e-9)
        tools["jax hessian"] = _jax_ready(J["hessian"], xj)
    med, ratio = measure(tools, rounds)
    ratios = {f"hessian / {n} hvp": ratio("hessian", f"{n} hvp calls"),
              "hessian / value+grad": ratio("hessian", "value+grad")}
    if casadi is not None:
        ratios["fastape / casadi, hessian"] = ratio("hessian", "casadi hessian")
    if jax_fn is not None:
        ratios["fastape / jax, hessian"] = ratio("hessian", "jax hessian")
    return {"key": key, "title": title, "nodes": F.nodes, "direct": F.traces[-1].direct_hvp,
            "seconds": med, "build_seconds": build, "ratios": ratios}


def case_hess_rosen(rounds, use_casadi, use_jax, n=100):
    x = np.random.default_rng(3).uniform(-1.0, 1.0, n)
    F = ft.compile(rosen_loop, x)
    return _hessian_case("hess_rosen", f"dense Hessian, scalar-loop Rosenbrock, n = {n}",
                         F, x, rosen_hessian(x), rounds,
                         (lambda: casadi_rosen(n)) if use_casadi else None,
                         _jax_rosen if use_jax else None)


def case_hess_tanh(rounds, use_casadi, use_jax, n=100):
    rng = np.random.default_rng(4)
    A = rng.standard_normal((n, n)) / np.sqrt(n)
    x = rng.standard_normal(n)
    F = ft.compile(lambda x: np.sum(np.tanh(A @ x)), x)
    t = np.tanh(A @ x)
    want = A.T @ np.diag(-2 * t * (1 - t * t)) @ A

    def jf(x):
        import jax.numpy as jnp
        return jnp.sum(jnp.tanh(jnp.asarray(A) @ x))
    return _hessian_case("hess_tanh", f"dense Hessian of sum(tanh(A x)), A {n} x {n}",
                         F, x, want, rounds,
                         (lambda: casadi_tanh(A)) if use_casadi else None,
                         jf if use_jax else None)


def _have(module):
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--n", type=int, default=10_000, help="Rosenbrock size")
    ap.add_argument("--no-casadi", action="store_true", help="skip CasADi")
    ap.add_argument("--no-jax", action="store_true", help="skip JAX")
    args = ap.parse_args(argv)
    if args.rounds < 7:
        ap.error("--rounds must be at least 7 (the medians need them)")
    use_casadi = not args.no_casadi and _have("casadi")
    use_jax = not args.no_jax and _have("jax")
    notes = []
    if not args.no_casadi and not use_casadi:
        notes.append("casadi is not installed: its rows are skipped")
    if not args.no_jax and not use_jax:
        notes.append("jax is not installed: its rows are skipped")
    if use_jax:
        notes.append("JAX's rows time the vectorised jnp form of each function")
    limit = threadpool_limits(1) if threadpool_limits else None
    try:
        results = [case_rosen(args.rounds, use_casadi, use_jax, args.n),
                   case_two_layer(args.rounds, use_casadi),
                   case_hess_rosen(args.rounds, use_casadi, use_jax),
                   case_hess_tanh(args.rounds, use_casadi, use_jax)]
    finally:
        if limit is not None:
            limit.unregister()
    print(f"fastape second order, median of {args.rounds} rounds, BLAS on 1 thread "
          f"({'threadpoolctl' if threadpool_limits else 'OPENBLAS_NUM_THREADS=1'})")
    for note in notes:
        print(f"  note: {note}")
    for r in results:
        path = "direct sweep" if r["direct"] else "sweep over the compiled gradient"
        print(f"\n{r['title']} ({r['nodes']} nodes; hvp/hessian: {path})")
        for k, s in r["seconds"].items():
            print(f"  {k:<28} {s * 1e6:12.1f} µs")
        for k, s in r["build_seconds"].items():
            print(f"  {k:<28} {s * 1e3:12.1f} ms   (once)")
        for k, q in r["ratios"].items():
            print(f"  {k:<28} {q:12.3f}x")
    if args.json:
        write_json(args.json, args.rounds, results, notes=notes)
    return results


if __name__ == "__main__":
    main()
