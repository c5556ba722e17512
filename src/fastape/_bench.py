"""fastape's benchmark suite: ``python -m fastape bench [--full] [--plot]``.

Shipped in the package (``fastape._bench``), so an installed fastape runs it from any
folder; ``python benchmarks/suite.py [...]`` in a checkout is a thin entry to the same
code. Two workloads delegate to scripts of the checkout's ``benchmarks/`` folder
(``bench_two_layer.py``, ``c_interp.py``): the suite finds that folder through
``FASTAPE_BENCHMARKS``, beside a checkout's ``src/fastape`` or in the current
directory's checkout, and without one skips those two with a note.

Every workload computes a value and a gradient. Before any tool is timed its
gradient is compared with a hand-written one (relative error, max-norm, at most
1e-8); a tool that disagrees is reported as FAILED and never timed. Timing
follows one protocol everywhere:

* one warm-up call after the check, then a batch size chosen so that one
  measurement lasts a few milliseconds (``number`` calls, time divided by it);
* several rounds; in each round every tool of the workload runs once, in an
  order rotated from round to round, so drift of a shared machine hits all
  tools alike;
* medians with min–max over rounds; ratios (against the hand-written code and
  the pure-Python reference) are computed *within* a round and then summarised;
* BLAS/OpenMP thread pools pinned (threadpoolctl; without it, only what
  ``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS`` set before start-up, and the header
  and the table say so), PyTorch and XLA pinned to the same count; versions, thread
  pools and the machine are recorded.

Peers (PyTorch, JAX, autograd, CasADi) are optional (``pip install
".[bench]"``); a missing one is skipped with a note. Results go to
``<out>/{quick,full}.json`` and a markdown table (``<out>``: the checkout's
``benchmarks/results``, else ``./fastape_bench_results``); ``--plot`` writes PNGs.

The workloads (see ``benchmarks/README.md``): the seeds' scalar function,
Rosenbrock as a Python loop of scalar ops (record + gradient, and replay),
Rosenbrock with whole-array numpy ops, the two-layer network (delegated to
``benchmarks/bench_two_layer.py`` when present), a chain of unary scalar ops,
and an L-BFGS-B solve.
"""

import argparse
import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import fastape as ft
from fastape import reference as R

TOL = 1e-8          # max |g - g_hand| / max |g_hand| before a tool may be timed
HAND = "hand-written"
PURE = "fastape.reference"


class Skip(Exception):
    """A tool that does not apply to a workload, or is not installed."""


# ---------------------------------------------------------------------------
# peers: imported lazily, pinned to the suite's thread count, skipped if absent
# ---------------------------------------------------------------------------

_PEERS = {}
_PEER_NOTES = {}


def _peer(name):
    """The peer module (torch, jax, autograd, casadi) or raise Skip with the reason."""
    if name not in _PEERS:
        try:
            if name == "jax":
                # XLA reads its thread settings once, at start-up
                os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                                      "intra_op_parallelism_threads=1")
                os.environ.setdefault("JAX_PLATFORMS", "cpu")
                import jax
                jax.config.update("jax_enable_x64", True)
                mod = jax
            elif name == "torch":
                import torch
                torch.set_num_threads(1)
                mod = torch
            else:
                mod = importlib.import_module(name)
            _PEERS[name] = mod
        except Exception as e:  # an absent or broken peer is a note, not a failure
            _PEERS[name] = None
            _PEER_NOTES[name] = f"not installed ({type(e).__name__}: {e})"[:200]
    if _PEERS[name] is None:
        raise Skip(f"{name}: {_PEER_NOTES[name]}")
    return _PEERS[name]


def _compile_fn():
    compile_ = getattr(ft, "compile", None)
    if compile_ is None:
        raise Skip("fastape.compile is not available in this build yet")
    return compile_


BENCH_ENV = "FASTAPE_BENCHMARKS"


def benchmarks_dir(environ=None, package_dir=None, cwd=None):
    """The checkout's benchmarks/ folder, where the scripts the suite delegates to
    live: ``$FASTAPE_BENCHMARKS``, else beside the checkout this package was imported
    from (``<checkout>/src/fastape``), else in the current directory's checkout;
    None for an installed package used outside a checkout."""
    environ = os.environ if environ is None else environ
    package_dir = Path(__file__).resolve().parent if package_dir is None else package_dir
    cwd = Path.cwd() if cwd is None else cwd
    if environ.get(BENCH_ENV):
        return Path(environ[BENCH_ENV]).expanduser()
    for root in (Path(package_dir).parent.parent, Path(cwd)):
        if (root / "src" / "fastape").is_dir() and (root / "benchmarks").is_dir():
            return root / "benchmarks"
    return None


def _bench_module(name):
    """Import benchmarks/<name>.py (owned by other engineers) or raise Skip."""
    d = benchmarks_dir()
    if d is None:
        raise Skip(f"benchmarks/{name}.py is in fastape's source checkout, not in the "
                   f"installed package (run from a checkout, or set {BENCH_ENV})")
    if not (d / f"{name}.py").is_file():
        raise Skip(f"{name}.py not found in {d}")
    key = f"_fastape_bench_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, d / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[key] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception as e:
        del sys.modules[key]
        raise Skip(f"benchmarks/{name}.py failed to import: {type(e).__name__}: {e}") from e
    return mod


# ---------------------------------------------------------------------------
# the functions, written once and run by every tool
# ---------------------------------------------------------------------------

def seeds_f(x, exp, sin):
    """The seeds' scalar function exp(exp(x) + exp(x)**2) + sin(exp(x) + exp(x)**2)."""
    a = exp(x)
    b = a + a**2
    return exp(b) + sin(b)


def seeds_hand(x):
    """Value and f'(x) = (exp(b) + cos(b)) (exp(x) + 2 exp(2x)), b = exp(x) + exp(2x)."""
    a = math.exp(x)
    b = a + a * a
    eb = math.exp(b)
    return eb + math.sin(b), (eb + math.cos(b)) * (a + 2.0 * a * a)


def rosen_loop(x):
    """Extended Rosenbrock as a Python loop of scalar ops: 8 ops per term."""
    s = 0.0
    for i in range(len(x) - 1):
        s = s + 100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2
    return s


def rosen_array(x, total=np.sum):
    """Extended Rosenbrock with whole-array ops."""
    return total(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def rosen_hand(x):
    """Value and gradient of extended Rosenbrock, derived by hand, in numpy."""
    a = x[1:] - x[:-1] ** 2
    b = 1.0 - x[:-1]
    g = np.zeros_like(x)
    g[:-1] = -400.0 * a * x[:-1] - 2.0 * b
    g[1:] += 200.0 * a
    return float(np.sum(100.0 * a * a + b * b)), g


def rosen_x0(n):
    """The standard start (-1.2, 1, -1.2, 1, ...)."""
    x = np.full(n, -1.2)
    x[1::2] = 1.0
    return x


def chain(x, sin, length):
    """``length`` unary ops in a row: sin(sin(...sin(x)))."""
    for _ in range(length):
        x = sin(x)
    return x


def chain_hand(x, length):
    """Value and derivative of the sin chain: the product of cos along the way."""
    d = 1.0
    for _ in range(length):
        d *= math.cos(x)
        x = math.sin(x)
    return x, d


# ---------------------------------------------------------------------------
# workloads: a hand-written gradient and a list of tools
# ---------------------------------------------------------------------------

class Case:
    """One tool on one workload: ``run()`` is timed; ``grad()`` returns the
    gradient to check (default: the second item of ``run()``)."""

    def __init__(self, run, grad=None, note="", info=None, estimate=None):
        self.run = run
        self.estimate = estimate    # () -> predicted seconds per run, checked before any run
        self.grad = grad if grad is not None else (lambda: run()[1])
        self.note = note
        self.info = info or {}


class Workload:
    def __init__(self, key, title, hand_grad, tools, ops=None, unit="call", notes=(),
                 max_rounds=None):
        self.key = key              # stable id in the json
        self.max_rounds = max_rounds
        self.title = title
        self.hand_grad = hand_grad  # the gradient every tool must reproduce
        self.tools = tools          # [(name, factory)], factory() -> Case or raise Skip
        self.ops = ops              # ops per call, for the time-per-op column
        self.unit = unit
        self.notes = list(notes)


def _vg_case(vg, x, note=""):
    """A Case calling ``vg(x)``, a value-and-gradient function."""
    return Case(lambda: vg(x), note=note)


def _torch_grad(f, x):
    torch = _peer("torch")

    def run():
        t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        y = f(t)
        (g,) = torch.autograd.grad(y, t)
        return y.item(), (g.item() if g.ndim == 0 else g.numpy())
    return Case(run)


def _jax_jit(f, x):
    jax = _peer("jax")
    vg = jax.jit(jax.value_and_grad(f))
    t0 = time.perf_counter()
    v, g = vg(x)
    float(v)
    compile_s = time.perf_counter() - t0

    def run():
        v, g = vg(x)
        return float(v), (float(g) if np.ndim(g) == 0 else np.asarray(g))
    return Case(run, note=f"jit (trace + compile {compile_s:.2f} s, not timed)",
                info={"compile_s": compile_s})


def _autograd(f, x):
    ag = _peer("autograd")
    vg = ag.value_and_grad(f)
    return Case(lambda: vg(x))


def _casadi_sx(build, x, n, dm_out=False):
    """An SX Function returning (value, gradient); ``build(symbol)`` writes f.
    Timed as a user gets it, the gradient converted to numpy; with ``dm_out`` the
    call alone, its results left as CasADi DM matrices (checked, not timed, after
    conversion)."""
    ca = _peer("casadi")
    t0 = time.perf_counter()
    s = ca.SX.sym("x", n)
    y = build(s)
    F = ca.Function("f", [s], [y, ca.gradient(y, s)])
    build_s = time.perf_counter() - t0
    scalar = np.ndim(x) == 0

    def run():
        v, g = F(x)
        return float(v), (float(g) if scalar else np.asarray(g).ravel())
    if dm_out:
        return Case(lambda: F(x), grad=lambda: run()[1],
                    note="F(x0) alone: DM results, no conversion to numpy")
    return Case(run, note=f"SX Function (build {build_s:.2f} s, not timed)",
                info={"build_s": build_s})


def _ft_compiled(f, x, value_only=False):
    F = _compile_fn()(f, x)
    info = {}
    if hasattr(F, "nbytes") and hasattr(F, "nodes"):
        info = {"nodes": int(F.nodes), "nbytes": int(F.nbytes)}
    if value_only:
        # the forward sweep alone; the check is of the same Function's gradient
        return Case(lambda: F(x), grad=lambda: F.value_and_grad(x)[1],
                    note="F(x0): forward sweep only (gradient checked via F.grad)")
    return Case(lambda: F.value_and_grad(x), note="ft.compile(f, x0).value_and_grad",
                info=info)


def w_seeds(full):
    x = 0.5

    def np_f(v):
        return seeds_f(v, np.exp, np.sin)

    def ft_f(v):
        return seeds_f(v, ft.exp, ft.sin)

    def tools():
        yield HAND, lambda: Case(lambda: seeds_hand(x), note="closed form, math module")
        yield "fastape eager", lambda: _vg_case(ft.value_and_grad(ft_f), x,
                                                note="ft.value_and_grad, records each call")
        yield "fastape eager (np.*)", lambda: _vg_case(
            ft.value_and_grad(np_f), x, note="same, written with np.exp/np.sin")
        yield "fastape compiled", lambda: _ft_compiled(ft_f, x)
        yield PURE, lambda: _vg_case(R.value_and_grad(lambda v: seeds_f(v, R.exp, R.sin)), x)
        yield "PyTorch eager", lambda: _torch_grad(
            lambda t: seeds_f(t, _peer("torch").exp, _peer("torch").sin), x)
        yield "JAX jit", lambda: _jax_jit(
            lambda v: seeds_f(v, _peer("jax").numpy.exp, _peer("jax").numpy.sin), x)
        yield "autograd", lambda: _autograd(
            lambda v: seeds_f(v, _peer("autograd").numpy.exp, _peer("autograd").numpy.sin), x)
        yield "CasADi SX", lambda: _casadi_sx(
            lambda s: seeds_f(s, _peer("casadi").exp, _peer("casadi").sin), x, 1)
    return Workload("seeds", "Seeds' scalar function, value + gradient per call",
                    seeds_hand(x)[1], list(tools()), ops=None)


def w_rosen_record(n, full):
    x0 = rosen_x0(n)

    def tools():
        yield HAND, lambda: Case(lambda: rosen_hand(x0), note="vectorised numpy")
        yield "fastape eager", lambda: _vg_case(ft.value_and_grad(rosen_loop), x0,
            note="ft.value_and_grad: record + reverse sweep")
        yield PURE, lambda: _vg_case(R.value_and_grad(rosen_loop), x0)
        yield "PyTorch eager", lambda: _torch_grad(rosen_loop, x0)
        yield "autograd", lambda: _autograd(rosen_loop, x0)
    return Workload(f"rosen_loop_record_{n}",
                    f"Rosenbrock, Python loop of scalar ops, n = {n:,}: record + gradient",
                    rosen_hand(x0)[1], list(tools()), ops=8 * (n - 1),
                    notes=["JAX: skipped; jit traces and compiles the unrolled loop (40 s at "
                           "n = 1,000 here) and eager JAX is slower than the others"])


def _tape_replay(f_record, x, read):
    """Record once on a Tape; time forward sweep + reverse sweep only."""
    tape = ft.Tape()
    with tape:
        inputs, y = f_record(tape, x)
    nodes = len(tape)

    def run():
        tape.forward()
        tape.backward(y)
        return None

    def grad():
        tape.forward()
        tape.backward(y)
        return read(tape, inputs)
    return Case(run, grad=grad, note="Tape.forward() + Tape.backward(y): the sweeps",
                info={"nodes": nodes, "nbytes": tape.nbytes,
                      "bytes_per_node": tape.nbytes / max(nodes, 1),
                      "scalar_layout": bool(tape.scalar_layout), "_tape": tape})


def _reference_replay(record, x):
    """The pure-Python replay: reference.Tape.forward() + reverse() over its lists."""
    tape = R.Tape()
    with tape:
        inputs, y = record(tape, x)
    ids = [v.id for v in inputs] if isinstance(inputs, list) else inputs.id

    def run():
        tape.forward()
        return tape.reverse(y.id)

    def grad():
        adj = run()
        return np.array([adj[i] for i in ids]) if isinstance(ids, list) else adj[ids]
    return Case(run, grad=grad, note="reference.Tape.forward() + reverse(): pure-Python sweeps")


def _c_interp(record, x):
    """benchmarks/c_interp.py (another owner): a C switch loop over Tape.export()."""
    mod = _bench_module("c_interp")
    tape = ft.Tape()
    with tape:
        inputs, y = record(tape, x)
    try:
        interp = mod.Interp(tape.export(), y.node)
        mod.verify(interp, tape, y, inputs)   # bit for bit against fastape's sweeps
    except Exception as e:
        raise Skip(f"C interpreter unavailable: {type(e).__name__}: {e}"[:200]) from e
    nodes = [v.node for v in inputs]

    def run():
        interp.forward()
        interp.reverse()

    def grad():
        run()
        return interp.adj[nodes].copy()
    return Case(run, grad=grad, note="benchmarks/c_interp.c: gcc -O3 switch loop, same tape")


def w_rosen_replay(n, full):
    x0 = rosen_x0(n)

    def record(tape, x):
        xs = [tape.var(v) for v in x]
        return xs, rosen_loop(xs)

    def tools():
        yield HAND, lambda: Case(lambda: rosen_hand(x0), note="vectorised numpy")
        yield "fastape compiled", lambda: _ft_compiled(rosen_loop, x0)
        yield "fastape compiled, value only", lambda: _ft_compiled(rosen_loop, x0,
                                                                   value_only=True)
        yield "fastape Tape sweeps", lambda: _tape_replay(
            record, x0, lambda t, xs: np.array([t.adjoint(v) for v in xs]))
        yield PURE, lambda: _reference_replay(record, x0)
        yield "C interpreter", lambda: _c_interp(record, x0)
        yield "CasADi SX", lambda: _casadi_sx(
            lambda s: rosen_loop([s[i] for i in range(n)]), x0, n)
        yield "CasADi SX, DM out", lambda: _casadi_sx(
            lambda s: rosen_loop([s[i] for i in range(n)]), x0, n, dm_out=True)
    return Workload(f"rosen_loop_replay_{n}",
                    f"Rosenbrock, Python loop of scalar ops, n = {n:,}: replay of a recorded "
                    "function", rosen_hand(x0)[1], list(tools()), ops=8 * (n - 1))


def w_rosen_array(n, full):
    x0 = rosen_x0(n)

    def tools():
        yield HAND, lambda: Case(lambda: rosen_hand(x0), note="vectorised numpy")
        yield "fastape eager", lambda: _vg_case(ft.value_and_grad(rosen_array), x0,
                                                note="plain numpy code")
        yield "fastape compiled", lambda: _ft_compiled(rosen_array, x0)
        yield "PyTorch eager", lambda: _torch_grad(
            lambda t: rosen_array(t, lambda z: z.sum()), x0)
        yield "JAX jit", lambda: _jax_jit(
            lambda v: rosen_array(v, _peer("jax").numpy.sum), x0)
        yield "autograd", lambda: _autograd(
            lambda v: rosen_array(v, _peer("autograd").numpy.sum), x0)
    return Workload(f"rosen_array_{n}",
                    f"Rosenbrock, whole-array numpy ops, n = {n:,}: value + gradient",
                    rosen_hand(x0)[1], list(tools()), ops=None,
                    notes=["fastape.reference: scalars only; CasADi: SX/MX are not array "
                           "tools at this size"])


def w_chain(length, full):
    x = 0.7

    def record(tape, x):
        v = tape.var(x)
        return v, chain(v, R.sin if isinstance(tape, R.Tape) else ft.sin, length)

    def tools():
        yield HAND, lambda: Case(lambda: chain_hand(x, length), note="Python, math module")
        yield "fastape eager", lambda: _vg_case(
            ft.value_and_grad(lambda v: chain(v, ft.sin, length)), x)
        yield "fastape compiled", lambda: _ft_compiled(lambda v: chain(v, ft.sin, length), x)
        yield "fastape Tape sweeps", lambda: _tape_replay(
            record, x, lambda t, v: t.adjoint(v))
        yield "fastape.reference sweeps", lambda: _reference_replay(record, x)
        yield PURE, lambda: _vg_case(R.value_and_grad(lambda v: chain(v, R.sin, length)), x)
        yield "PyTorch eager", lambda: _torch_grad(
            lambda t: chain(t, _peer("torch").sin, length), x)
        yield "autograd", lambda: _autograd(
            lambda v: chain(v, _peer("autograd").numpy.sin, length), x)
        if full:
            yield "CasADi SX", lambda: _casadi_sx(
                lambda s: chain(s, _peer("casadi").sin, length), x, 1)
    return Workload(f"chain_{length}", f"Chain of {length:,} unary scalar ops (sin)",
                    chain_hand(x, length)[1], list(tools()), ops=length,
                    notes=["JAX: skipped; eager dispatch costs microseconds per op and jit of "
                           "an unrolled 250,000-op chain does not compile in the time budget"])


def w_lbfgs(n, full):
    from scipy.optimize import minimize

    x0 = rosen_x0(n)

    hand_nfev = []

    def solve_with(vg):
        def fun(x):
            v, g = vg(x)
            return float(v), np.asarray(g, dtype=np.float64)

        def run():
            r = minimize(fun, x0, jac=True, method="L-BFGS-B")
            return r

        def estimate():
            # a whole solve of a slow tool can take minutes: predict it from one
            # evaluation and the number of evaluations the hand-written solve needed
            if not hand_nfev:
                t0 = time.perf_counter()
                r = minimize(rosen_hand, x0, jac=True, method="L-BFGS-B")
                hand_nfev.append((r.nfev, time.perf_counter() - t0))
            nfev, overhead = hand_nfev[0]
            return overhead + nfev * min(_time_batch(lambda: fun(x0), 1) for _ in range(3))
        return Case(run, grad=lambda: fun(x0)[1], estimate=estimate)

    def torch_vg():
        torch = _peer("torch")

        def vg(x):
            t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
            y = rosen_loop(t)
            (g,) = torch.autograd.grad(y, t)
            return y.item(), g.numpy()
        return vg

    def casadi_vg():
        ca = _peer("casadi")
        s = ca.SX.sym("x", n)
        y = rosen_loop([s[i] for i in range(n)])
        F = ca.Function("f", [s], [y, ca.gradient(y, s)])

        def vg(x):
            v, g = F(x)
            return float(v), np.asarray(g).ravel()
        return vg

    def jax_vg():
        jax = _peer("jax")
        f = jax.jit(jax.value_and_grad(rosen_loop))
        f(x0)

        def vg(x):
            v, g = f(x)
            return float(v), np.asarray(g)
        return vg

    def tools():
        yield HAND, lambda: solve_with(rosen_hand)
        yield "fastape eager", lambda: solve_with(ft.value_and_grad(rosen_loop))
        yield "fastape compiled", lambda: solve_with(
            _compile_fn()(rosen_loop, x0).value_and_grad)
        yield PURE, lambda: solve_with(R.value_and_grad(rosen_loop))
        yield "PyTorch eager", lambda: solve_with(torch_vg())
        yield "autograd", lambda: solve_with(_peer("autograd").value_and_grad(rosen_loop))
        yield "CasADi SX", lambda: solve_with(casadi_vg())
        if full:
            yield "JAX jit", lambda: solve_with(jax_vg())
    return Workload(f"lbfgs_{n}", f"L-BFGS-B on scalar-loop Rosenbrock, n = {n}: whole solve",
                    rosen_hand(x0)[1], list(tools()), unit="solve", max_rounds=3,
                    notes=["scipy.optimize.minimize(value_and_grad, x0, jac=True, "
                           "method='L-BFGS-B') from the standard start"])


def w_batch(n, rows, full):
    """Batched replay, 1 thread against 2 (compiled functions only)."""
    X = np.tile(rosen_x0(n), (rows, 1)) + np.linspace(0, 0.1, rows)[:, None]
    hand = np.stack([rosen_hand(x)[1] for x in X])

    def case(threads):
        F = _compile_fn()(rosen_loop, X[0])
        if not hasattr(F, "grad_batch"):
            raise Skip("Function.grad_batch is not available in this build yet")

        def run():
            return None, F.grad_batch(X, threads=threads)
        return Case(run)

    def tools():
        yield HAND, lambda: Case(lambda: (None, np.stack([rosen_hand(x)[1] for x in X])),
                                 note="numpy, row by row")
        yield "fastape grad_batch 1 thread", lambda: case(1)
        yield "fastape grad_batch 2 threads", lambda: case(2)
    return Workload(f"batch_{n}x{rows}",
                    f"Batched replay: gradient of Rosenbrock n = {n} at {rows:,} points",
                    hand, list(tools()), ops=8 * (n - 1) * rows,
                    notes=["threads are the replay's own; BLAS is not involved"])


# ---------------------------------------------------------------------------
# running: check, warm up, interleave rounds
# ---------------------------------------------------------------------------

def rel_err(g, ref):
    g = np.asarray(g, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if g.shape != ref.shape:
        return math.inf
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    diff = float(np.max(np.abs(g - ref))) if ref.size else 0.0
    return diff / scale if scale > 0 else diff


def _time_batch(run, number):
    # a full collection costs ~0.1 s once torch and jax are loaded: the young
    # generations here, a full one once per round (run_workload)
    gc.collect(1)
    was = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(number):
            run()
        return (time.perf_counter() - t0) / number
    finally:
        if was:
            gc.enable()


def _say(msg, quiet):
    if not quiet:
        print(msg, flush=True)


def run_workload(w, rounds, target_s, max_call_s, check_only=False, quiet=False):
    """Check every tool's gradient, then time the ones that passed, interleaved."""
    _say(f"\n== {w.title}", quiet)
    res = {"key": w.key, "title": w.title, "ops": w.ops, "unit": w.unit,
           "notes": list(w.notes), "tools": {}}
    cases = {}
    for name, factory in w.tools:
        entry = {"status": "ok", "note": ""}
        res["tools"][name] = entry
        try:
            case = factory()
            entry["note"] = case.note
            entry.update({k: v for k, v in case.info.items() if not k.startswith("_")})
            err = rel_err(case.grad(), w.hand_grad)
            entry["rel_err"] = err
            if not err <= TOL:
                entry["status"] = "FAILED"
                entry["note"] = (f"gradient disagrees with the hand-written one: rel. err "
                                 f"{err:.2e} > {TOL:.0e}; not timed")
                _say(f"  !! {name}: FAILED correctness check (rel. err {err:.2e})", quiet)
                continue
            if check_only:
                _say(f"  {name}: gradient ok (rel. err {err:.1e})", quiet)
                continue
            if case.estimate is not None:
                est = case.estimate()
                if est > max_call_s:
                    entry["status"] = "skipped"
                    entry["note"] = (f"estimated {est:.1f} s per {w.unit}, over this run's "
                                     f"budget of {max_call_s:.0f} s")
                    _say(f"  {name}: gradient ok, skipped: estimated {est:.1f} s per {w.unit}",
                         quiet)
                    continue
            t1 = _time_batch(case.run, 1)          # warm-up, and the batch size
            if t1 > max_call_s:
                entry["status"] = "skipped"
                entry["note"] = (f"one call takes {t1:.1f} s, over this run's budget of "
                                 f"{max_call_s:.0f} s per call")
                _say(f"  {name}: skipped, {t1:.1f} s per call", quiet)
                continue
            entry["number"] = max(1, min(100_000, int(target_s / max(t1, 1e-9))))
            cases[name] = case
            _say(f"  {name}: gradient ok (rel. err {err:.1e}), warm-up {_fmt_time(t1)}",
                 quiet)
        except Skip as e:
            entry["status"] = "skipped"
            entry["note"] = str(e)
            _say(f"  {name}: skipped ({e})", quiet)
        except Exception as e:  # a tool that crashes is reported loudly, not timed
            entry["status"] = "FAILED"
            entry["note"] = f"{type(e).__name__}: {e}"[:300]
            _say(f"  !! {name}: FAILED ({type(e).__name__}: {e})", quiet)
    if check_only or not cases:
        return res

    names = list(cases)
    rounds = min(rounds, w.max_rounds or rounds)
    res["rounds"] = rounds
    times = {name: [] for name in names}
    for r in range(rounds):
        gc.collect()
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            times[name].append(_time_batch(cases[name].run, res["tools"][name]["number"]))
        _say(f"  round {r + 1}/{rounds} done", quiet)

    for name in names:
        e = res["tools"][name]
        ts = times[name]
        e.update(times=ts, median=statistics.median(ts), min=min(ts), max=max(ts))
        if w.ops:
            e["ns_per_op"] = e["median"] / w.ops * 1e9
        for label, base, invert in (("vs_hand", HAND, False), ("speedup_vs_reference", PURE,
                                                               True)):
            if base in times and name != base:
                q = [(b / t) if invert else (t / b) for t, b in zip(ts, times[base])]
                e[label] = {"median": statistics.median(q), "min": min(q), "max": max(q)}
    return res


# ---------------------------------------------------------------------------
# the two-layer network lives in benchmarks/bench_two_layer.py (another owner)
# ---------------------------------------------------------------------------

def run_two_layer(full, rounds, quiet):
    """Delegate to ``run_case`` of benchmarks/bench_two_layer.py (which checks every
    tool's gradient against its hand-written backprop before timing, and sets its own
    BLAS thread counts) and convert its rows to this suite's format."""
    cases = ([("small", 1), ("small", 2), ("large", 1), ("large", 2)] if full
             else [("small", 1)])
    try:
        mod = _bench_module("bench_two_layer")
        run_case = mod.run_case
    except (Skip, AttributeError) as e:
        msg = str(e) if isinstance(e, Skip) else "bench_two_layer.py has no run_case()"
        _say(f"\n== Two-layer network: skipped ({msg})", quiet)
        return [{"key": "two_layer", "title": "Two-layer network", "skipped": msg,
                 "tools": {}, "notes": []}]
    results = []
    for size, threads in cases:
        n, d, h = mod.SIZES[size]
        title = (f"Two-layer network ||tanh(X W1) W2 - y||², {size} (n, d, h) = ({n}, {d}, "
                 f"{h}), {threads} BLAS thread{'s' if threads > 1 else ''}: value + gradient")
        _say(f"\n== {title} (benchmarks/bench_two_layer.py)", quiet)
        res = {"key": f"two_layer_{size}_{threads}t", "title": title, "ops": None,
               "unit": "call", "tools": {},
               "notes": ["delegated to benchmarks/bench_two_layer.py: gradients checked "
                         "against hand-written backprop (rtol 1e-8) before timing; peak "
                         "memory by tracemalloc (numpy and fastape only)"]}
        try:
            case = run_case(size, threads, rounds, 0.2 if full else 0.02)
        except Exception as e:  # includes its AssertionError for a wrong gradient
            msg = f"FAILED: {type(e).__name__}: {e}"[:300]
            _say(f"  !! {msg}", quiet)
            res["tools"]["(bench_two_layer)"] = {"status": "FAILED", "note": msg}
            results.append(res)
            continue
        res["rounds"] = case.get("rounds")
        for row in case["rows"]:
            name = HAND if row["tool"] == mod.HAND else row["tool"]
            if "time_ms" not in row:
                res["tools"][name] = {"status": "skipped", "note": row.get("note", "")}
                continue
            note = row.get("note", "")
            if row.get("peak_mb") is not None:
                note = f"peak {row['peak_mb']:.1f} MB" + (f"; {note}" if note else "")
            e = {"status": "ok", "note": note, "median": row["time_ms"] / 1e3,
                 "min": row["time_ms_min"] / 1e3, "max": row["time_ms_max"] / 1e3}
            if name != HAND:
                e["vs_hand"] = {"median": row["ratio_to_numpy"], "min": row["ratio_min"],
                                "max": row["ratio_max"]}
            if row.get("peak_mb") is not None:
                e["peak_mb"] = row["peak_mb"]
            res["tools"][name] = e
            _say(f"  {name}: {_fmt_time(e['median'])}", quiet)
        results.append(res)
    return results


# ---------------------------------------------------------------------------
# the suites
# ---------------------------------------------------------------------------

def workloads(full, tiny=False):
    """The workloads of one suite. ``tiny`` shrinks sizes for the test-suite check."""
    if tiny:
        return [w_seeds(False), w_rosen_record(20, False), w_rosen_replay(20, False),
                w_rosen_array(1000, False), w_chain(200, False), w_lbfgs(20, False)]
    if not full:
        return [w_seeds(False), w_rosen_record(1000, False), w_rosen_replay(1000, False),
                w_rosen_array(100_000, False), w_chain(10_000, False), w_lbfgs(200, False)]
    return [w_seeds(True),
            w_rosen_record(100, True), w_rosen_record(1000, True), w_rosen_record(10_000, True),
            w_rosen_replay(100, True), w_rosen_replay(1000, True),
            w_rosen_replay(10_000, True),
            w_rosen_array(1_000_000, True),
            w_chain(250_000, True),
            w_lbfgs(200, True),
            w_batch(100, 2000, True)]


def environment(threads):
    import scipy

    env = {"python": sys.version.split()[0], "platform": platform.platform(),
           "machine": platform.machine(), "cpu": _cpu_model(), "logical_cpus": os.cpu_count(),
           "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
           else os.cpu_count(),
           "versions": {"fastape": ft.__version__, "numpy": np.__version__,
                        "scipy": scipy.__version__},
           "threads": {"pinned_to": threads}, "peers_skipped": {}}
    for name in ("torch", "jax", "autograd", "casadi"):
        try:
            mod = _peer(name)
            env["versions"][name] = _version(name, mod)
        except Skip:
            env["peers_skipped"][name] = _PEER_NOTES.get(name, "not installed")
    if _PEERS.get("torch") is not None:
        env["threads"]["torch"] = _PEERS["torch"].get_num_threads()
    if _PEERS.get("jax") is not None:
        env["threads"]["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "")
    return env


def _version(dist, mod=None):
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:
        return getattr(mod, "__version__", "?")


_PIN_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def pinning(threads):
    """How BLAS/OpenMP threads are held to ``threads``: one sentence, the same in the
    header and in the table."""
    try:
        import threadpoolctl  # noqa: F401
        return f"BLAS/OpenMP thread pools pinned to {threads} by threadpoolctl"
    except ImportError:
        pass
    set_ = [f"{v}={os.environ[v]}" for v in _PIN_VARS if os.environ.get(v)]
    if set_ and all(os.environ[v] == str(threads) for v in _PIN_VARS if os.environ.get(v)):
        return (f"BLAS threads {threads} through {', '.join(set_)} (threadpoolctl not "
                "installed)")
    return ("BLAS threads NOT pinned: threadpoolctl not installed (pip install "
            "threadpoolctl, or start with OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1)")


def _threadpools():
    try:
        import threadpoolctl
    except ImportError:
        return "threadpoolctl not installed"
    return [{k: p.get(k) for k in ("user_api", "internal_api", "num_threads", "version",
                                   "filepath")}
            for p in threadpoolctl.threadpool_info()]


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class _Pinned:
    """Pin BLAS/OpenMP pools to ``threads`` (no-op without threadpoolctl)."""

    def __init__(self, threads):
        self.threads = threads
        self.ctl = None

    def __enter__(self):
        try:
            from threadpoolctl import threadpool_limits
            self.ctl = threadpool_limits(limits=self.threads)
        except ImportError:
            pass
        return self

    def __exit__(self, *exc):
        if self.ctl is not None:
            self.ctl.restore_original_limits()
        return False


def run_suite(full=False, rounds=None, quiet=False, check_only=False, tiny=False, only=None):
    """Run a suite; returns the results dict (``check_only``: gradients only, no timing)."""
    rounds = rounds or 5
    target_s = 0.05 if full else 0.01
    max_call_s = 25.0 if full else 2.0
    t0 = time.perf_counter()
    # Load every library that brings a thread pool (the peers' OpenMP/MKL, scipy's
    # own OpenBLAS) *before* pinning: threadpoolctl limits only the pools loaded.
    import scipy.linalg  # noqa: F401
    import scipy.optimize  # noqa: F401
    env = environment(1)
    env["threads"]["pinning"] = pinning(1)
    with _Pinned(1):
        env["threads"]["threadpools"] = _threadpools()
        out = {"suite": "full" if full else ("tiny" if tiny else "quick"),
               "rounds": rounds, "tolerance": TOL, "environment": env, "workloads": []}
        _say(f"fastape {ft.__version__} benchmark suite ({out['suite']}), {rounds} rounds; "
             f"{env['cpu']}, {env['usable_cpus']} CPUs; {env['threads']['pinning']}; PyTorch "
             f"and XLA pinned to 1 thread", quiet)
        for name, note in env["peers_skipped"].items():
            _say(f"  peer {name} skipped: {note}", quiet)
        for w in workloads(full, tiny):
            if only and not any(s in w.key for s in only):
                continue
            tw = time.perf_counter()
            out["workloads"].append(run_workload(w, rounds, target_s, max_call_s,
                                                 check_only=check_only, quiet=quiet))
            _say(f"  ({time.perf_counter() - tw:.1f} s)", quiet)
    # the network sets its own thread counts (1 and 2), so it runs outside the pin
    if not tiny and not check_only and (not only or any("two" in s for s in only)):
        out["workloads"].extend(run_two_layer(full, rounds, quiet))
    out["elapsed_s"] = time.perf_counter() - t0
    return out


# ---------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------

def _fmt_time(s):
    if s is None:
        return "—"
    for unit, f in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if s >= f or unit == "ns":
            v = s / f
            return f"{v:.3g} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{s} s"


def _fmt_x(v):
    return f"{v:.3g}" if v < 1000 else f"{v:,.0f}"


def _fmt_ratio(d):
    if not d:
        return "—"
    return f"{_fmt_x(d['median'])}× ({_fmt_x(d['min'])}–{_fmt_x(d['max'])})"


def _pools_summary(env):
    pools = env["threads"].get("threadpools")
    if not isinstance(pools, list):
        return str(pools)
    names = [f"{p.get('internal_api')} {p.get('version') or ''}".strip() for p in pools]
    return ", ".join(sorted(set(names))) or "none found"


def _pinning_of(env):
    # results written before the sentence was recorded said pinned, with threadpoolctl
    return env["threads"].get("pinning", f"BLAS/OpenMP thread pools pinned to "
                              f"{env['threads']['pinned_to']} by threadpoolctl")


def markdown(out):
    env = out["environment"]
    lines = [f"Suite: `{out['suite']}`, {out['rounds']} rounds after warm-up, tools "
             "interleaved; median (min–max) per call; ratios computed within each round. "
             f"Every timed gradient agrees with the hand-written one to ≤ {out['tolerance']:g} "
             "(relative, max-norm).",
             "",
             f"Machine: {env['cpu']}, {env['usable_cpus']} usable CPUs ({env['logical_cpus']} "
             f"logical), {env['platform']}; Python {env['python']}; "
             + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
             + f". {_pinning_of(env)} (thread pools: {_pools_summary(env)}); PyTorch and XLA "
             f"pinned to {env['threads']['pinned_to']} thread (the two-layer network sets "
             "its own).", ""]
    for name, note in env["peers_skipped"].items():
        lines.append(f"* {name} skipped: {note}")
    for w in out["workloads"]:
        lines += ["", f"### {w['title']}", ""]
        if w.get("skipped"):
            lines.append(f"Skipped: {w['skipped']}")
            continue
        if "table" in w:  # a delegated workload brings its own markdown
            lines.append(w["table"])
            continue
        per_op = bool(w.get("ops"))
        head = ["tool", f"time per {w.get('unit', 'call')}", "min–max"]
        head += ["per op"] if per_op else []
        head += ["× hand-written", "speed-up over fastape.reference", "note"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, e in w["tools"].items():
            if e.get("status") != "ok" or "median" not in e:
                status = e.get("status", "?")
                if status == "ok" and "rel_err" in e:
                    status = f"gradient ok (rel. err {e['rel_err']:.1e}), not timed"
                row = [name, status] + [""] * (len(head) - 3) + [e.get("note", "")]
                lines.append("| " + " | ".join(row) + " |")
                continue
            row = [name, _fmt_time(e["median"]), f"{_fmt_time(e['min'])} – {_fmt_time(e['max'])}"]
            if per_op:
                row.append(_fmt_time(e["ns_per_op"] * 1e-9))
            row.append("1" if name == HAND else _fmt_ratio(e.get("vs_hand")))
            row.append("1" if name == PURE else _fmt_ratio(e.get("speedup_vs_reference")))
            note = e.get("note", "")
            if "bytes_per_node" in e:
                note += f"; {e['nodes']:,} nodes, {e['bytes_per_node']:.1f} B/node"
            elif "nbytes" in e and "nodes" in e and e["nodes"]:
                per = e["nbytes"] / e["nodes"]
                note += (f"; {e['nodes']:,} nodes, {per:.1f} B/node" if per < 1000 else
                         f"; {e['nodes']:,} nodes, {e['nbytes'] / 2**20:.1f} MiB")
            row.append(note.strip("; "))
            lines.append("| " + " | ".join(row) + " |")
        for n in w.get("notes", []):
            lines.append(f"\n{n}")
    lines.append(f"\nTotal wall time of the suite: {out.get('elapsed_s', 0):.0f} s.")
    return "\n".join(lines) + "\n"


_RECORD_TOOLS = ("fastape eager", PURE, "PyTorch eager", "autograd")


def plots(out, directory):
    """time per op against graph size; speed-up over pure Python. Returns file paths."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    tools = list(dict.fromkeys(n for w in out["workloads"] for n in w.get("tools", {})))
    cmap = plt.get_cmap("tab20")
    color = {n: cmap(i % 20) for i, n in enumerate(tools)}
    paths = []

    # 1. time per op against graph size: the scalar-loop sizes as lines, the chain as
    #    a separate marker; tools that record every call left, replays right
    series = {}
    for w in out["workloads"]:
        key = w["key"]
        if not w.get("ops") or not key.startswith(("rosen_loop", "chain")):
            continue
        kind = "chain" if key.startswith("chain") else "rosen"
        for name, e in w["tools"].items():
            if "ns_per_op" in e and name != HAND:
                replay = "replay" in key or (kind == "chain" and name not in _RECORD_TOOLS)
                series.setdefault((int(replay), name, kind), []).append(
                    (w["ops"], e["ns_per_op"], e["min"] / w["ops"] * 1e9,
                     e["max"] / w["ops"] * 1e9))
    if series:
        fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
        for (replay, name, kind), pts in sorted(series.items()):
            pts.sort()
            ax = axes[replay]
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
            label = name if kind == "rosen" else None
            ax.errorbar(xs, ys, yerr=err, fmt="-o" if kind == "rosen" else "D",
                        color=color[name], label=label, capsize=2, ms=5)
        for ax, title in zip(axes, ("record + gradient on every call",
                                    "replay of a recorded graph (value + gradient)")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("ops in the graph (circles: Rosenbrock loop; diamonds: sin chain)")
            ax.set_title(title, fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.15), ncol=2)
        axes[0].set_ylabel("time per op (ns), median, min–max bars")
        fig.suptitle("Scalar graphs: time per op against graph size")
        fig.tight_layout()
        p = Path(directory) / f"time_per_op_{out['suite']}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(str(p))

    # 2. speed-up over pure Python (fastape.reference), per workload, present bars only
    rows = []
    for w in out["workloads"]:
        bars = [(n, e["speedup_vs_reference"]["median"]) for n, e in w.get("tools", {}).items()
                if "speedup_vs_reference" in e]
        if bars:
            rows.append((w["key"], bars))
    if rows:
        nbars = sum(len(b) for _, b in rows)
        fig, ax = plt.subplots(figsize=(9, 1.0 + 0.22 * (nbars + len(rows))))
        y, ticks, seen = 0.0, [], set()
        for key, bars in rows:
            start = y
            for name, v in bars:
                ax.barh(y, v, height=0.8, color=color[name],
                        label=None if name in seen else name)
                ax.text(v * 1.05, y, f"{v:.3g}×", va="center", fontsize=6)
                seen.add(name)
                y += 1
            ticks.append(((start + y - 1) / 2, key))
            y += 1
        ax.set_yticks([t[0] for t in ticks], [t[1] for t in ticks], fontsize=8)
        ax.set_xscale("log")
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_xlabel("speed-up over fastape.reference (pure Python): median of per-round "
                      "ratios")
        ax.invert_yaxis()
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        p = Path(directory) / f"speedup_{out['suite']}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(str(p))
    return paths


def _default_out():
    d = benchmarks_dir()
    return d / "results" if d is not None else Path.cwd() / "fastape_bench_results"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastape bench",
                                description="fastape's benchmark suite (see benchmarks/README.md)")
    p.add_argument("--full", action="store_true", help="the whole suite (about 10 minutes)")
    p.add_argument("--plot", action="store_true", help="write PNG plots (needs matplotlib)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5, full 7)")
    p.add_argument("--out", default=None, help="results folder (default: the checkout's "
                   "benchmarks/results, else ./fastape_bench_results)")
    p.add_argument("--only", nargs="*", default=None,
                   help="run only workloads whose key contains one of these strings")
    p.add_argument("--check", action="store_true",
                   help="check every tool's gradient, time nothing")
    p.add_argument("--from-json", default=None,
                   help="re-render the table and plots of an earlier run")
    args = p.parse_args(argv)

    if args.from_json:
        out = json.loads(Path(args.from_json).read_text())
        directory = Path(args.out) if args.out else Path(args.from_json).parent
    else:
        out = run_suite(full=args.full, rounds=args.rounds, check_only=args.check,
                        only=args.only)
        directory = Path(args.out) if args.out else _default_out()
    table = markdown(out)
    print("\n" + table)
    if not args.from_json and not args.check:
        directory.mkdir(parents=True, exist_ok=True)
        jpath = directory / f"{out['suite']}.json"
        jpath.write_text(json.dumps(_jsonable(out), indent=1, ensure_ascii=False))
        mpath = directory / ("RESULTS.md" if out["suite"] == "full" else "QUICK.md")
        mpath.write_text(f"# fastape benchmark results ({out['suite']})\n\nCommand: "
                         f"`python -m fastape bench{' --full' if args.full else ''}`\n\n"
                         + table)
        print(f"results: {jpath}, {mpath}")
    if args.plot:
        directory.mkdir(parents=True, exist_ok=True)
        paths = plots(out, directory)
        print("plots: " + (", ".join(paths) if paths else "none (matplotlib not installed)"))
    failed = [(w["key"], n) for w in out["workloads"] for n, e in w.get("tools", {}).items()
              if e.get("status") == "FAILED"]
    skipped = out["environment"].get("peers_skipped", {})
    if skipped:   # absent peers are never a failure: said, and the exit code stays 0
        print("peers skipped (not installed; pip install \".[bench]\" adds them): "
              + ", ".join(skipped))
    if failed:
        print("FAILED correctness checks: " + ", ".join(f"{k}/{n}" for k, n in failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
