"""Before/after comparison of fastape's hot paths: two source trees, fresh processes.

    python benchmarks/bench_compare.py --before /work/base/src --after src [--rounds 7]
        [--warmup 1] [--clock wall|cpu] [--json PATH] [--n 10000] [--target-ms 20]
        [--repeats 5]

Each round starts one fresh Python process per tree. A process imports fastape
from its tree only (``PYTHONPATH=<tree>``; it checks that ``fastape.__file__``
lies under it), pins BLAS/OpenMP to one thread (``OPENBLAS_NUM_THREADS=1`` and
friends, and threadpoolctl when installed) and checks every gradient against a
hand-written one. Once both are ready, they take turns, one timed batch at a
time (the other waits on a pipe, idle), in the order before, after, after,
before, ... within a workload, and with the other tree first in the next round,
so drift of a shared machine hits both trees alike even when it changes from
one second to the next. The workloads:

1. the scalar-loop Rosenbrock (``tests/helpers.py``'s ``rosenbrock``, n = 10,000)
   compiled, ``F = fastape.compile(rosenbrock, x0)``: ``F.value_and_grad(x)`` and
   the value alone ``F(x)``;
2. the same function eager, ``fastape.value_and_grad(rosenbrock)(x)``: record +
   gradient on every call;
3. bytes per node: ``F.nbytes / F.nodes``, and ``tape.nbytes / len(tape)`` of the
   function recorded on scalar inputs in ``with fastape.Tape()`` (after a gradient,
   so the multipliers are included, as in the README);
4. the seeds' scalar function of the README's quick start at x = 0.5, value +
   gradient per call, compiled and eager.

Time per op divides by 8(n - 1), the op count ``benchmarks/suite.py`` uses for
its Rosenbrock workloads (the tapes also hold the n inputs; their node counts
are printed). Each timing: two warm-up calls, a batch size so one batch lasts
about ``--target-ms``, the garbage collector off inside a batch, the median over
``--repeats`` batches, on the wall clock and in the thread's CPU time (which
leaves out the time other processes held the core; the report prints the CPU
share, CPU time / wall time, so a contended run shows). ``--warmup`` rounds run
first and are discarded (the first processes after the machine idled are slow).
The report gives, per tree, the median (min-max) over rounds of those medians on
the ``--clock`` (default wall), and the median (min-max) of the per-round ratios
after/before on both clocks. The workloads' source comes from this checkout, so
both trees run the same Python code. Comparing a tree with itself measures the
noise floor; a gradient that disagrees with the hand-written one, or an API a
tree lacks, is reported as FAILED for that workload (exit code 1), never timed.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HELPERS = HERE.parent / "tests" / "helpers.py"

# every thread pool a process may load, pinned before it starts
PINNED_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "BLIS_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1",
              "NUMEXPR_NUM_THREADS": "1"}

# key, label, kind, scaled by the op count
METRICS = [
    ("rosen_compiled_vg", "Rosenbrock loop, compiled `F.value_and_grad(x)`", "time", True),
    ("rosen_compiled_value", "Rosenbrock loop, compiled `F(x)` (value alone)", "time", True),
    ("rosen_eager_vg", "Rosenbrock loop, eager `value_and_grad(f)(x)` (record + gradient)",
     "time", True),
    ("seeds_compiled_vg", "seeds' f(0.5), compiled `value_and_grad`", "time", False),
    ("seeds_eager_vg", "seeds' f(0.5), eager `value_and_grad`", "time", False),
    ("compiled_bytes_per_node", "Rosenbrock, compiled `F.nbytes / F.nodes`", "bytes", False),
    ("tape_bytes_per_node", "Rosenbrock, eager `tape.nbytes / len(tape)`", "bytes", False),
]
TIMED = {key for key, _, kind, _ in METRICS if kind == "time"}
CLOCKS = {"wall": "wall clock", "cpu": "CPU time"}
TOL = 1e-8


# ---------------------------------------------------------------------------
# the worker: one tree, one process
# ---------------------------------------------------------------------------

def seeds(x):
    """The seeds' scalar function, as the README's quick start writes it."""
    import numpy as np

    a = np.exp(x)
    b = a + a**2
    return np.exp(b) + np.sin(b)


def seeds_hand(x):
    """Value and f'(x) = (exp(b) + cos(b)) (exp(x) + 2 exp(2x)), b = exp(x) + exp(2x)."""
    a = math.exp(x)
    b = a + a * a
    return math.exp(b) + math.sin(b), (math.exp(b) + math.cos(b)) * (a + 2.0 * a * a)


def _load_helpers():
    spec = importlib.util.spec_from_file_location("_bench_compare_helpers", HELPERS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _batch(fn, number):
    """Seconds per call of ``number`` calls, wall clock and this thread's CPU time, the
    collector off (as timeit does)."""
    gc.collect()
    gc.disable()
    try:
        c0, t0 = time.thread_time(), time.perf_counter()
        for _ in range(number):
            fn()
        t1, c1 = time.perf_counter(), time.thread_time()
        return (t1 - t0) / number, (c1 - c0) / number
    finally:
        gc.enable()


def _stats(prefix, values):
    return {f"{prefix}median": statistics.median(values), f"{prefix}min": min(values),
            f"{prefix}max": max(values)}


def _check(label, got, want):
    import numpy as np

    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    scale = float(np.max(np.abs(want))) or 1.0
    err = float(np.max(np.abs(got - want))) / scale
    if not err <= TOL:
        raise AssertionError(f"{label}: relative error {err:.2e} > {TOL:g} against the "
                             "hand-written gradient; not timed")
    return err


class Worker:
    """One tree's workloads in this process: ``prepare(key)`` builds and checks one
    (a wrong gradient, or an API this tree lacks, is kept as its error), warms it up
    and sizes its batch; ``batch(key)`` times one batch; ``summary()`` gives the
    median over the batches of each workload."""

    def __init__(self, tree, n, target_s):
        import numpy as np

        import fastape as ft

        self.where = Path(ft.__file__).resolve()
        if not self.where.is_relative_to(Path(tree).resolve()):
            raise SystemExit(f"fastape was imported from {self.where}, not from the tree {tree}")
        import scipy.linalg  # noqa: F401  (threadpoolctl limits only the pools loaded)
        try:
            from threadpoolctl import threadpool_info, threadpool_limits
            threadpool_limits(limits=1)
            self.pools = [f"{p['internal_api']} {p.get('version') or ''} "
                          f"x{p['num_threads']}".strip() for p in threadpool_info()]
        except ImportError:
            self.pools = ["threadpoolctl not installed: environment variables only"]
        self.ft, self.n, self.target_s = ft, n, target_s
        self.h = _load_helpers()
        self.x = np.full(n, -1.2)
        self.x[1::2] = 1.0
        self.memo, self.errs, self.prepared, self.samples = {}, {}, {}, {}

    # -- the workloads, each built once and checked against a hand-written gradient --

    def _once(self, name, make):
        """Build an object once; a failure is raised again at each use."""
        if name not in self.memo:
            try:
                self.memo[name] = (make(), None)
            except Exception as e:
                self.memo[name] = (None, e)
        obj, err = self.memo[name]
        if err is not None:
            raise err
        return obj

    def _compiled_rosen(self):
        ft, h, x = self.ft, self.h, self.x
        F = ft.compile(h.rosenbrock, x)
        v, g = F.value_and_grad(x)
        self.errs["rosen_compiled"] = _check("compiled Rosenbrock gradient", g,
                                             h.rosenbrock_grad(x))
        _check("compiled Rosenbrock value", [v, F(x)], [h.rosenbrock(x)] * 2)
        return F

    def _eager_rosen(self):
        h, x = self.h, self.x
        vg = self.ft.value_and_grad(h.rosenbrock)
        v, g = vg(x)
        self.errs["rosen_eager"] = _check("eager Rosenbrock gradient", g, h.rosenbrock_grad(x))
        _check("eager Rosenbrock value", v, h.rosenbrock(x))
        return vg

    def _tape(self):
        h, x = self.h, self.x
        with self.ft.Tape() as tape:
            xs = [tape.var(float(v)) for v in x]
            y = h.rosenbrock(xs)
        self.errs["rosen_tape"] = _check("Tape gradient", tape.gradient(y, xs),
                                         h.rosenbrock_grad(x))
        return tape

    def _seeds(self, name, vg):
        self.errs[name] = _check(f"{name} value and gradient", vg(0.5), seeds_hand(0.5))
        return vg

    def F(self):
        return self._once("F", self._compiled_rosen)

    def make(self, key):
        """A workload: ("time", a callable of no arguments) or ("value", a number)."""
        ft, x, once = self.ft, self.x, self._once
        if key == "rosen_compiled_vg":
            F = self.F()
            return "time", lambda: F.value_and_grad(x)
        if key == "rosen_compiled_value":
            F = self.F()
            return "time", lambda: F(x)
        if key == "rosen_eager_vg":
            vg = once("eager", self._eager_rosen)
            return "time", lambda: vg(x)
        if key == "seeds_compiled_vg":
            vg = once("Fs", lambda: self._seeds("compiled seeds",
                                                ft.compile(seeds, 0.5).value_and_grad))
            return "time", lambda: vg(0.5)
        if key == "seeds_eager_vg":
            vg = once("seeds", lambda: self._seeds("eager seeds", ft.value_and_grad(seeds)))
            return "time", lambda: vg(0.5)
        if key == "compiled_bytes_per_node":
            return "value", self.F().nbytes / self.F().nodes
        if key == "tape_bytes_per_node":
            tape = once("tape", self._tape)
            return "value", tape.nbytes / len(tape)
        raise KeyError(key)

    # -- the protocol --

    def prepare(self, key):
        try:
            kind, obj = self.make(key)
            if kind == "time":
                obj()
                obj()
                number, t = 1, _batch(obj, 1)[0]
                while t * number < self.target_s / 10 and number < 10**6:  # too short to size
                    number *= 10
                    t = _batch(obj, number)[0]
                number = max(1, round(self.target_s / max(t, 1e-9)))
                self.prepared[key] = (obj, number)
                self.samples[key] = []
            else:
                self.prepared[key] = (None, obj)
            return {"ok": True}
        except Exception as e:
            self.prepared[key] = (None, {"error": f"{type(e).__name__}: {e}"[:300]})
            return {"error": self.prepared[key][1]["error"]}

    def batch(self, key):
        fn, number = self.prepared[key]
        if fn is None:
            return {}
        self.samples[key].append(_batch(fn, number))
        return {}

    def summary(self):
        metrics = {}
        for key, (fn, arg) in self.prepared.items():
            if fn is None:
                metrics[key] = arg if isinstance(arg, dict) else {"median": arg}
                continue
            wall = [w for w, _ in self.samples[key]]
            cpu = [c for _, c in self.samples[key]]
            metrics[key] = {**_stats("", wall), **_stats("cpu_", cpu), "number": arg,
                            "cpu_share": sum(cpu) / sum(wall)}

        def count(get):
            try:
                return int(get())
            except Exception:
                return None
        return {"fastape_file": str(self.where), "version": self.ft.__version__,
                "ops": 8 * (self.n - 1), "compiled_nodes": count(lambda: self.F().nodes),
                "tape_nodes": count(lambda: len(self._once("tape", self._tape))),
                "rel_err": self.errs, "threadpools": self.pools, "metrics": metrics}


def serve(tree, n, target_s):
    """The worker process: one JSON line per command read from stdin."""
    w = Worker(tree, n, target_s)
    out = sys.stdout
    print(json.dumps({"ready": str(w.where)}), file=out, flush=True)
    for line in sys.stdin:
        cmd, _, key = line.strip().partition(" ")
        if cmd == "quit":
            break
        reply = {"prepare": w.prepare, "batch": w.batch}[cmd](key) if key else w.summary()
        print(json.dumps(reply), file=out, flush=True)


# ---------------------------------------------------------------------------
# the driver: both trees' processes of a round take turns, batch by batch
# ---------------------------------------------------------------------------

class Proc:
    """A worker process of one tree, fastape importable from that tree only."""

    def __init__(self, tree, args):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(PINNED_ENV, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
        self.tree = tree
        self.err = tempfile.TemporaryFile(mode="w+")
        self.p = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", str(tree),
             "--n", str(args.n), "--target-ms", str(args.target_ms)],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
            text=True, bufsize=1)

    def read(self):
        line = self.p.stdout.readline()
        if not line:
            self.p.wait()
            self.err.seek(0)
            raise SystemExit(f"the worker for {self.tree} failed (exit {self.p.returncode}):"
                             f"\n{self.err.read()}")
        return json.loads(line)

    def ask(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return self.read()

    def close(self):
        if self.p.poll() is None:
            self.p.stdin.write("quit\n")
            self.p.stdin.close()
            self.p.wait()
        self.err.close()


def run_round(trees, order, args):
    """One round: a fresh process per tree, both started and ready before any timing;
    for each workload the two take turns, batch by batch, in the order ABBA..., so
    drift on the scale of a batch (~20 ms) hits both alike."""
    procs = {name: Proc(trees[name], args) for name in order}
    try:
        for name in order:
            procs[name].read()   # ready: imported and pinned
        for key, *_ in METRICS:
            for name in order:
                procs[name].ask(f"prepare {key}")
            for j in range(args.repeats):
                for name in (order if j % 2 == 0 else order[::-1]):
                    procs[name].ask(f"batch {key}")
        return {name: procs[name].ask("summary") for name in order}
    finally:
        for proc in procs.values():
            proc.close()


def _summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _tree_info(tree):
    """The git commit of a tree and whether it has uncommitted changes; stale builds."""
    info = {"path": str(tree)}
    try:
        info["commit"] = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                                        capture_output=True, text=True,
                                        check=True).stdout.strip()
        # --no-optional-locks: reading a tree must not refresh (write) its index
        dirty = subprocess.run(["git", "--no-optional-locks", "-C", str(tree), "status",
                                "--porcelain", "--untracked-files=no", "--", "."],
                               capture_output=True, text=True, check=True).stdout.strip()
        info["dirty"] = bool(dirty)
    except (OSError, subprocess.CalledProcessError):
        info["commit"] = "?"
    pkg = Path(tree) / "fastape"
    built = [p.stat().st_mtime for p in pkg.glob("*.so")]
    sources = [p.stat().st_mtime for ext in ("pyx", "pxd", "pxi") for p in pkg.glob(f"*.{ext}")]
    info["stale_build"] = bool(built and sources and max(sources) > min(built))
    return info


def _ratio(r, digits=3):
    if r["min"] == r["max"]:
        return f"{r['median']:.{digits}f}"
    return f"{r['median']:.{digits}f} ({r['min']:.{digits}f} – {r['max']:.{digits}f})"


def _count(v):
    return "?" if v is None else f"{v:,}"


def _fmt(kind, v):
    if kind == "bytes":
        return f"{v:.2f} B"
    for unit, f in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if v >= f or unit == "ns":
            return f"{v / f:.3g} {unit}"


def _cell(kind, d):
    if d["min"] == d["max"]:
        return _fmt(kind, d["median"])
    return f"{_fmt(kind, d['median'])} ({_fmt(kind, d['min'])} – {_fmt(kind, d['max'])})"


def report(res):
    b, a = res["trees"]["before"], res["trees"]["after"]
    ops = res["ops"]

    def tree_line(name, t):
        flags = (" (uncommitted changes)" if t.get("dirty") else "") + \
                (" (a .pyx/.pxd is newer than a built .so: stale build?)"
                 if t.get("stale_build") else "")
        return f"* {name}: `{t['path']}` at {t.get('commit', '?')}{flags}"

    clock, other = res["clock"], "cpu" if res["clock"] == "wall" else "wall"
    def share(name):
        per_round = [[m["cpu_share"] for m in s["metrics"].values() if "cpu_share" in m]
                     for s in res["samples"][name]]
        if not all(per_round):
            return "—"
        return _ratio(_summary([statistics.median(v) for v in per_round]), 2)
    lines = [f"fastape before/after, {res['rounds']} rounds after {res['warmup_rounds']} "
             "discarded; in each, a fresh process per tree, the two taking turns batch by "
             "batch (ABBA…, the other first in the next round); per "
             f"tree the median (min – max) over rounds of in-process medians of "
             f"{res['repeats']} batches of ~{res['target_ms']:g} ms, {CLOCKS[clock]}; the "
             "ratio is after/before within a round, median (min – max) over rounds.",
             "", tree_line("before", b), tree_line("after", a),
             f"* machine: {res['machine']['cpu']}, {res['machine']['cpus']} usable CPUs, "
             f"Python {res['machine']['python']}; thread pools: "
             f"{', '.join(res['threadpools'])}",
             f"* Rosenbrock n = {res['n']:,}: per op = per call / {ops:,} ops (8(n − 1), as "
             f"benchmarks/suite.py); nodes before / after: compiled function "
             f"{_count(b['compiled_nodes'])} / {_count(a['compiled_nodes'])}, eager tape "
             f"{_count(b['tape_nodes'])} / {_count(a['tape_nodes'])}",
             "* CPU share while timing (CPU time / wall time; below 1 when other processes "
             f"held the core): before {share('before')}, after {share('after')}", "",
             f"| workload | before | after | per op before / after | after / before | "
             f"after / before, {CLOCKS[other]} |",
             "|---|---|---|---|---|---|"]
    for key, label, kind, scaled in METRICS:
        m = res["metrics"][key]
        if "error" in m:
            lines.append(f"| {label} | FAILED: {m['error']} | | | | |")
            continue
        per_op = (f"{m['before']['median'] / ops * 1e9:.3g} / "
                  f"{m['after']['median'] / ops * 1e9:.3g} ns") if scaled else ""
        lines.append(f"| {label} | {_cell(kind, m['before'])} | {_cell(kind, m['after'])} | "
                     f"{per_op} | {_ratio(m['ratio'])} | "
                     f"{_ratio(m['ratio_' + other]) if kind == 'time' else ''} |")
    return "\n".join(lines) + "\n"


def summarise(samples, key, clock):
    """Per tree the median (min–max) over rounds, and the per-round ratio after/before."""
    field = "cpu_median" if clock == "cpu" and key in TIMED else "median"
    per = {name: [s["metrics"][key][field] for s in samples[name]]
           for name in ("before", "after")}
    return {"before": _summary(per["before"]), "after": _summary(per["after"]),
            "ratio": _summary([a / b for a, b in zip(per["after"], per["before"])])}


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", help="the source folder of the 'before' tree (holds fastape/)")
    p.add_argument("--after", help="the source folder of the 'after' tree")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--warmup", type=int, default=1,
                   help="rounds run first and discarded (default 1)")
    p.add_argument("--n", type=int, default=10_000, help="Rosenbrock size (default 10,000)")
    p.add_argument("--target-ms", type=float, default=20.0, help="length of one batch")
    p.add_argument("--repeats", type=int, default=5, help="batches per timing, per process")
    p.add_argument("--clock", choices=list(CLOCKS), default="wall",
                   help="the clock of the before/after columns (both ratios are shown)")
    p.add_argument("--json", default=None, help="also write every sample to this file")
    p.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.serve:
        serve(args.serve, args.n, args.target_ms / 1e3)
        return 0
    if not args.before or not args.after:
        p.error("--before and --after are required")
    trees = {}
    for name in ("before", "after"):
        tree = Path(getattr(args, name)).resolve()
        if not (tree / "fastape" / "__init__.py").is_file():
            p.error(f"--{name} {tree}: no fastape/__init__.py there (give the src/ folder)")
        trees[name] = tree

    # The first processes after the machine idled run up to 2x (a small call 10x) slower
    # here, so unmeasured rounds go first; then who starts alternates round by round.
    for r in range(args.warmup):
        run_round(trees, ("before", "after"), args)
        print(f"warm-up round {r + 1}/{args.warmup} done", file=sys.stderr, flush=True)
    samples = {"before": [], "after": []}
    for r in range(args.rounds):
        order = ("before", "after") if r % 2 == 0 else ("after", "before")
        t0 = time.perf_counter()
        for name, out in run_round(trees, order, args).items():
            samples[name].append(out)
        print(f"round {r + 1}/{args.rounds} ({order[0]} first): "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    res = {"rounds": args.rounds, "warmup_rounds": args.warmup, "n": args.n,
           "repeats": args.repeats, "clock": args.clock,
           "target_ms": args.target_ms, "ops": samples["after"][0]["ops"],
           "machine": {"cpu": _cpu_model(), "python": platform.python_version(),
                       "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                       else os.cpu_count()},
           "threadpools": samples["after"][0]["threadpools"],
           "trees": {}, "metrics": {}, "samples": samples}
    for name in ("before", "after"):
        first = samples[name][0]
        res["trees"][name] = dict(_tree_info(trees[name]), fastape_file=first["fastape_file"],
                                  compiled_nodes=first["compiled_nodes"],
                                  tape_nodes=first["tape_nodes"])
    failed = []
    for key, *_ in METRICS:
        errors = [f"{name}: {s['metrics'][key]['error']}" for name in ("before", "after")
                  for s in samples[name] if "error" in s["metrics"][key]]
        if errors:
            res["metrics"][key] = {"error": "; ".join(dict.fromkeys(errors))}
            failed.append(key)
            continue
        res["metrics"][key] = summarise(samples, key, args.clock)
        for clock in CLOCKS:
            res["metrics"][key][f"ratio_{clock}"] = summarise(samples, key, clock)["ratio"]
    print(report(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, ensure_ascii=False))
        print(f"results: {args.json}", file=sys.stderr)
    if failed:
        print("FAILED: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
