"""Benchmark of the compiled tape on a Python loop of scalar operations (issue 2).

The extended Rosenbrock function written as a scalar loop,

    for i in range(n - 1):
        s = s + 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2

with n = 10,000 (about 80,000 recorded ops), on a list of scalar inputs
(``xs = [t.var(v) for v in x0]``, the scalar layout), measures

(a) record + gradient cost per op, fastape beside ``fastape.reference``;
(b) forward and reverse sweep cost per node of the recorded tape (``t.forward()``,
    ``t.backward(y)``) beside the hand-written C interpreter of ``c_interp.c``
    over the same tape arrays (checked bit for bit against fastape first), and
    their ratio;
(c) tape memory in bytes per node (``t.nbytes / len(t)``, after a gradient, so
    multipliers included).

The same with one array input (``t.var(np.array(x0))``, indexed in the loop: the
general layout) is measured for information; the C interpreter runs the scalar
layout only.

Tools are interleaved round by round; each figure is the median over rounds with
the min-max range, and ratios are taken per round. The garbage collector is off
while timing (as ``timeit`` does); ``--gc`` keeps it on.

    PYTHONPATH=src python benchmarks/bench_tape.py [--n 10000] [--rounds 15] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import c_interp  # noqa: E402
from suite import rosen_hand, rosen_loop  # noqa: E402

import fastape as ft  # noqa: E402
from fastape import reference as R  # noqa: E402


def start(n):
    x0 = np.empty(n)
    x0[0::2] = -1.2
    x0[1::2] = 1.0
    return x0


# -- one measurement each ------------------------------------------------------

def fastape_scalar(x0):
    t0 = time.perf_counter()
    with ft.Tape() as t:
        xs = [t.var(v) for v in x0.tolist()]
        y = rosen_loop(xs)
    g = t.gradient(y, xs)
    return time.perf_counter() - t0, t, y, xs, g


def fastape_array(x0):
    t0 = time.perf_counter()
    with ft.Tape() as t:
        xa = t.var(x0)
        y = rosen_loop(xa)
    g = t.gradient(y, xa)
    return time.perf_counter() - t0, t, y, xa, g


def reference_scalar(x0):
    t0 = time.perf_counter()
    with R.Tape() as t:
        xs = [t.var(v) for v in x0.tolist()]
        y = rosen_loop(xs)
    g = t.gradient(y, xs)
    return time.perf_counter() - t0, t, y, xs, g


def per_call(fn, reps):
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def n_ops(ops):
    """Recorded operations: nodes that are not leaves (INPUT = 0, CONSTANT = 1)."""
    return int(np.count_nonzero(np.asarray(ops) > 1))


# -- statistics and printing ---------------------------------------------------

def summary(xs, scale=1.0):
    xs = [x * scale for x in xs]
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "rounds": xs}


def fmt(s, unit="", digits=1):
    return (f"{s['median']:.{digits}f}{unit} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]")


def machine():
    info = {"python": sys.version.split()[0], "numpy": np.__version__,
            "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(ln.split(":", 1)[1].strip() for ln in f
                               if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        info["cc"] = subprocess.run([c_interp.CC, "--version"], capture_output=True,
                                    text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        pass
    return info


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10_000, help="Rosenbrock dimension")
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    p.add_argument("--reps", type=int, default=40, help="sweeps per timing sample")
    p.add_argument("--no-reference", action="store_true", help="skip fastape.reference")
    p.add_argument("--no-array", action="store_true", help="skip the array-input variant")
    p.add_argument("--gc", action="store_true", help="keep the garbage collector on")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    wall = time.perf_counter()

    x0 = start(args.n)
    g_exact = rosen_hand(x0)[1]

    # correctness first: fastape, reference and the closed form agree; the C
    # interpreter reproduces fastape's values and gradient bit for bit
    _, t, y, xs, g = fastape_scalar(x0)
    assert t.scalar_layout
    np.testing.assert_allclose(g, g_exact, rtol=1e-12, atol=1e-9)
    if not args.no_reference:
        _, _, _, _, g_ref = reference_scalar(x0)
        np.testing.assert_allclose(g, g_ref, rtol=1e-14, atol=0)
    if not args.no_array:
        _, ta, ya, _, ga = fastape_array(x0)
        assert not ta.scalar_layout
        np.testing.assert_allclose(ga, g_exact, rtol=1e-12, atol=1e-9)
    interp = c_interp.Interp(t.export(), y.node)
    c_interp.verify(interp, t, y, xs)
    nodes, ops = len(t), n_ops(t.opcodes())

    raw = {k: [] for k in ("rec_fastape", "rec_reference", "fwd_fastape", "rev_fastape",
                           "fwd_c", "rev_c", "rec_array", "fwd_array", "rev_array")}
    reps = args.reps
    if not args.gc:
        gc.disable()
    try:
        for r in range(args.rounds):
            gc.collect()
            # (a) record + gradient, per op
            dt, t, y, xs, _ = fastape_scalar(x0)
            raw["rec_fastape"].append(dt / ops)
            if not args.no_reference:
                dt, tr, *_ = reference_scalar(x0)
                raw["rec_reference"].append(dt / n_ops(tr.op))
                del tr
            if not args.no_array:
                dt, ta, ya, _, _ = fastape_array(x0)
                raw["rec_array"].append(dt / n_ops(ta.opcodes()))
            gc.collect()
            # (b) the sweeps of the recorded tape, per node; order alternates by round
            sweeps = [("fwd_fastape", t.forward, nodes), ("fwd_c", interp.forward, nodes),
                      ("rev_fastape", partial(t.backward, y), nodes),
                      ("rev_c", interp.reverse, nodes)]
            if not args.no_array:
                sweeps += [("fwd_array", ta.forward, len(ta)),
                           ("rev_array", partial(ta.backward, ya), len(ta))]
            if r % 2:
                sweeps.reverse()
            for key, fn, count in sweeps:
                fn()                                  # warm the caches
                raw[key].append(per_call(fn, reps) / count)
    finally:
        gc.enable()

    ns = 1e9
    res = {"n": args.n, "nodes": nodes, "ops": ops, "rounds": args.rounds, "reps": reps,
           "gc": bool(args.gc), "machine": machine(), "command": " ".join(sys.argv)}
    S = {k: summary(v, ns) for k, v in raw.items() if v}
    per_round = lambda f: [f(i) for i in range(args.rounds)]  # noqa: E731
    ratio = {
        "fwd_fastape/c": per_round(lambda i: raw["fwd_fastape"][i] / raw["fwd_c"][i]),
        "rev_fastape/c": per_round(lambda i: raw["rev_fastape"][i] / raw["rev_c"][i]),
        "fwd+rev_fastape/c": per_round(lambda i: (raw["fwd_fastape"][i] + raw["rev_fastape"][i])
                                       / (raw["fwd_c"][i] + raw["rev_c"][i])),
        "grad/value_fastape": per_round(
            lambda i: (raw["fwd_fastape"][i] + raw["rev_fastape"][i]) / raw["fwd_fastape"][i]),
        "grad/value_c": per_round(lambda i: (raw["fwd_c"][i] + raw["rev_c"][i]) / raw["fwd_c"][i]),
    }
    if raw["rec_reference"]:
        ratio["rec_reference/fastape"] = per_round(
            lambda i: raw["rec_reference"][i] / raw["rec_fastape"][i])
    R_ = {k: summary(v) for k, v in ratio.items()}
    fr = [a + b for a, b in zip(raw["fwd_fastape"], raw["rev_fastape"], strict=True)]
    cr = [a + b for a, b in zip(raw["fwd_c"], raw["rev_c"], strict=True)]
    S["fwd+rev_fastape"] = summary(fr, ns)
    S["fwd+rev_c"] = summary(cr, ns)
    mem = {"scalar": t.nbytes / nodes}
    if not args.no_array:
        mem["array"] = ta.nbytes / len(ta)
        res["array_nodes"] = len(ta)
        res["array_ops"] = n_ops(ta.opcodes())
    res.update(ns=S, ratios=R_, bytes_per_node=mem)
    res["seconds"] = time.perf_counter() - wall

    print(f"Scalar-loop Rosenbrock, n = {args.n}: {nodes} nodes, {ops} ops "
          f"(+{nodes - ops} inputs); {args.rounds} interleaved rounds, median [min-max]")
    print(f"{'':44s}{'fastape':>24s}{'C interpreter':>24s}{'ratio':>20s}")
    row = "{:44s}{:>24s}{:>24s}{:>20s}"
    print(row.format("(a) record + gradient, ns/op", fmt(S["rec_fastape"]), "", ""))
    if raw["rec_reference"]:
        print(row.format("    fastape.reference, ns/op", fmt(S["rec_reference"], digits=0), "",
                         fmt(R_["rec_reference/fastape"], "x")))
    print(row.format("(b) forward sweep, ns/node", fmt(S["fwd_fastape"], digits=2),
                     fmt(S["fwd_c"], digits=2), fmt(R_["fwd_fastape/c"], "x", 2)))
    print(row.format("    reverse sweep, ns/node", fmt(S["rev_fastape"], digits=2),
                     fmt(S["rev_c"], digits=2), fmt(R_["rev_fastape/c"], "x", 2)))
    print(row.format("    forward + reverse, ns/node", fmt(S["fwd+rev_fastape"], digits=2),
                     fmt(S["fwd+rev_c"], digits=2), fmt(R_["fwd+rev_fastape/c"], "x", 2)))
    print(row.format("    gradient / value (fwd+rev)/fwd", fmt(R_["grad/value_fastape"], "x", 2),
                     fmt(R_["grad/value_c"], "x", 2), ""))
    print(row.format("(c) tape bytes per node", f"{mem['scalar']:.1f}", "", ""))
    print(f"    per op instead of per node: multiply the sweep figures by "
          f"{nodes / ops:.3f}")
    if not args.no_array:
        print(f"\nArray input t.var(np.array(x0)) (general layout, for information): "
              f"{len(ta)} nodes, {res['array_ops']} ops")
        print(row.format("    record + gradient, ns/op", fmt(S["rec_array"]), "", ""))
        print(row.format("    forward sweep, ns/node", fmt(S["fwd_array"], digits=2), "", ""))
        print(row.format("    reverse sweep, ns/node", fmt(S["rev_array"], digits=2), "", ""))
        print(row.format("    tape bytes per node", f"{mem['array']:.1f}", "", ""))
    print(f"\n({res['seconds']:.1f} s; C interpreter verified bit for bit against fastape; "
          f"gc {'on' if args.gc else 'off'} while timing)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {args.json}")
    return res


if __name__ == "__main__":
    main()
