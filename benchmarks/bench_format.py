"""Benchmark of persistence, checkpointing and Dask (issue 15).

(a) save / load of a large scalar tape (``--nodes``, 10⁷ by default): Tape.save
    beside numpy.savez of the same arrays, Tape.load (read into the tape, checksum,
    validate every field), Tape.load with mmap=True (O(1): the header only) and that
    tape's first use (the deferred read and checks), beside numpy.load of the same
    file (the container's own read speed), in GB/s of file size and as same-round
    ratios;
(b) checkpointing a 10⁶-step scalar recurrence ``s ← s + 10⁻⁶ sin(s) θ``: the
    gradient by ft.grad of the plain loop beside the loop checkpointed in segments
    of k = 1000 = √steps steps; time ratio (same round), peak traced memory
    (tracemalloc, in a separate run: it slows allocation) and the difference of the
    gradients;
(c) Dask (``--dask``, needs fastape[dask]): value and gradient of the logistic loss
    of examples/dask_logistic_regression.py over ``--rows`` rows in 10 shards on a
    LocalCluster of 1, then 2 worker processes (one thread each): time per
    evaluation and the throughput ratio; per cluster the sum of the tasks' compiled
    calls (timed on the workers), the shards per worker and the evaluation's time
    beyond its compute shared out over the workers; the per-task overhead (100 tiny
    shards, cluster time per task minus the compiled call's own time); and, before
    and after the clusters, the machine's own ratio: two plain processes calling
    the shard loss over one (what the second core gives in this run, which the
    cluster's ratio cannot beat on a shared machine);
(d) ``--large N``: a scalar tape of N nodes (10⁸ on a 24 GiB machine): recording,
    bytes held per node (after a gradient), forward and reverse sweeps, save, load
    (6 rounds: as it is, two threads, and by one thread, taking turns), then the
    same loop compiled and replayed (value and gradient);
(e) fastape.load of a compiled function of ``--function-nodes`` nodes (10⁶): eager,
    with mmap=True (O(1)) and that function's first use.

Medians over ``--rounds`` rounds, ratios within a round. BLAS pinned to 1 thread.

    PYTHONPATH=src python benchmarks/bench_format.py [--nodes N] [--rounds R] [--dask]
        [--rows N] [--large N] [--function-nodes N] [--skip files function checkpoint]
        [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import fastape as ft  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))


def med(xs):
    return statistics.median(xs)


def scalar_tape(n):
    """A closed scalar tape of about n nodes: s ← s·0.999999 + x, twice per step."""
    with ft.Tape() as t:
        x = t.var(0.5)
        s = x
        for _ in range(max(1, (n - 1) // 2)):
            s = s * 0.999999 + x
    return t, s, x


# -- (a) save / load -------------------------------------------------------------

def bench_files(n, rounds, folder):
    """Each round: Tape.save (the previous file removed first, untimed: the file
    system freeing an old file's blocks is not the save's cost), numpy.savez of the
    same arrays, Tape.load, Tape.load(mmap=True) and its first use (the deferred read
    and checks), and numpy.load of the file."""
    t, _, _ = scalar_tape(n)
    arrays = t.export()
    path = os.path.join(folder, "tape.npz")
    npz = os.path.join(folder, "numpy.npz")
    keys = ("save", "numpy_savez", "load", "load_mmap", "load_mmap_first_use",
            "numpy_load")
    rows = {k: [] for k in keys}

    def timed(key, f):
        gc.collect()
        t0 = time.perf_counter()
        out = f()
        rows[key].append(time.perf_counter() - t0)
        return out
    for _ in range(rounds):
        for p in (path, npz):
            if os.path.exists(p):
                os.remove(p)
        timed("save", lambda: t.save(path))
        timed("numpy_savez", lambda: np.savez(npz, **arrays))
        size = os.path.getsize(path)
        timed("load", lambda: ft.Tape.load(path))             # (dropped at once)
        u = timed("load_mmap", lambda: ft.Tape.load(path, mmap=True))
        timed("load_mmap_first_use", u.opcodes)
        del u
        timed("numpy_load", lambda: dict(np.load(path)))
    u = ft.Tape.load(path)
    assert all(np.array_equal(a, b) for a, b in zip(u.export().values(), t.export().values()))
    out = {"nodes": len(t), "file_bytes": size}
    for key, ts in rows.items():
        out[key] = {"median_s": med(ts), "GB_per_s": size / med(ts) / 1e9}
    out["load_over_numpy_load"] = med([a / b for a, b in zip(rows["load"], rows["numpy_load"])])
    out["save_over_numpy_savez"] = med([a / b for a, b in zip(rows["save"],
                                                              rows["numpy_savez"])])
    out["mmap_first_use_over_load"] = med([a / b for a, b in zip(rows["load_mmap_first_use"],
                                                                 rows["load"])])
    return out


def _loop(n):
    def loop(x):
        s = x
        for _ in range(max(1, (n - 1) // 2)):
            s = s * 0.999999 + x
        return s
    return loop


def bench_function_files(n, rounds, folder):
    """A compiled function of about n nodes (the scalar loop): fastape.load eagerly,
    with mmap=True (O(1): the directory and the header) and that function's first use
    (a call: every member read, checksummed, validated and the traces built)."""
    F = ft.compile(_loop(n), 0.5)
    path = os.path.join(folder, "function.npz")
    F.save(path)
    size = os.path.getsize(path)
    rows = {k: [] for k in ("load", "load_mmap", "load_mmap_first_use")}
    for _ in range(rounds):
        gc.collect()
        t0 = time.perf_counter()
        ft.load(path)
        rows["load"].append(time.perf_counter() - t0)
        gc.collect()
        t0 = time.perf_counter()
        G = ft.load(path, mmap=True)
        rows["load_mmap"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        v = G(0.5)
        rows["load_mmap_first_use"].append(time.perf_counter() - t0)
        assert v == F(0.5)
        del G
    out = {"nodes": F.nodes, "file_bytes": size}
    for key, ts in rows.items():
        out[key] = {"median_s": med(ts), "GB_per_s": size / med(ts) / 1e9}
    os.remove(path)
    return out


# -- (b) checkpointing -------------------------------------------------------------

STEPS, K = 10**6, 1000


def _steps(s, theta, n):
    for _ in range(n):
        s = s + 1e-6 * ft.sin(s) * theta
    return s


def _segment(s, theta):
    return _steps(s, theta, K)


_CHECKPOINTED = ft.checkpoint(_segment)


def _plain(theta):
    return _steps(1.0, theta, STEPS)


def _checkpointed(theta):
    s = 1.0
    for _ in range(STEPS // K):
        s = _CHECKPOINTED(s, theta)
    return s


def _peak(f):
    gc.collect()
    tracemalloc.start()
    try:
        r = f()
        return r, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def bench_checkpoint(rounds):
    ft.grad(_checkpointed)(0.5)                  # compiles the segment once
    times = {"plain": [], "checkpoint": []}
    ratios = []
    for _ in range(rounds):
        got = {}
        for key, f in (("plain", _plain), ("checkpoint", _checkpointed)):
            gc.collect()
            t0 = time.perf_counter()
            got[key] = ft.value_and_grad(f)(0.5)
            times[key].append(time.perf_counter() - t0)
        ratios.append(times["checkpoint"][-1] / times["plain"][-1])
    (_, gp), mem_plain = _peak(lambda: ft.value_and_grad(_plain)(0.5))
    (_, gc_), mem_ck = _peak(lambda: ft.value_and_grad(_checkpointed)(0.5))
    return {"steps": STEPS, "segment": K,
            "plain_s": med(times["plain"]), "checkpoint_s": med(times["checkpoint"]),
            "checkpoint_over_plain": med(ratios),
            "ratio_range": [min(ratios), max(ratios)],
            "peak_traced_bytes_plain": mem_plain, "peak_traced_bytes_checkpoint": mem_ck,
            "gradient_plain": gp, "gradient_checkpoint": gc_,
            "gradient_abs_difference": abs(gp - gc_)}


# -- (c) Dask ------------------------------------------------------------------------

def _shard_loop(n, seconds, out):
    """Calls of the compiled shard loss (n rows) for `seconds`; their count into out."""
    from dask_logistic_regression import D, shard_nll
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(n, D)), (rng.uniform(size=n) < 0.5).astype(float)
    F = ft.compile(shard_nll, np.zeros(D), X, y, retrace=False)
    w = np.linspace(-0.5, 0.5, D)
    F.value_and_grad(w, X, y)
    calls, t_end = 0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        F.value_and_grad(w, X, y)
        calls += 1
    out.put(calls)


def machine_scaling(n, seconds=6.0):
    """Throughput of two plain processes, each calling the compiled shard loss on its
    own data, over one such process: what the machine's second core gives right now
    (1.0 when other work takes it, ~2 on an idle 2-core machine). No Dask: the bound
    for the cluster's ratio measured beside it."""
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    out = {}
    for procs in (1, 2):
        q = ctx.Queue()
        ps = [ctx.Process(target=_shard_loop, args=(n, seconds, q)) for _ in range(procs)]
        for p in ps:
            p.start()
        calls = sum(q.get() for _ in ps)
        for p in ps:
            p.join()
        out[procs] = calls / seconds
    return out[2] / out[1]


def _timed_task(F, w, shard):
    """The compiled call of one shard's task, timed on its worker."""
    t0 = time.perf_counter()
    F.value_and_grad(w, *shard)
    return time.perf_counter() - t0


def bench_dask(rows, rounds):
    import dask.array as da
    from dask.distributed import Client, LocalCluster, wait
    from dask_logistic_regression import D, shard_nll

    import fastape.distributed as fd
    shards = 10
    n = rows // shards
    F = ft.compile(shard_nll, np.zeros(D), np.zeros((n, D)), np.zeros(n), retrace=False)
    w = np.linspace(-0.5, 0.5, D)
    out = {"rows": rows, "shards": shards}
    results = {}
    before = machine_scaling(n)
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            rng = da.random.default_rng(0)
            X = rng.normal(size=(rows, D), chunks=(n, D))
            y = (rng.uniform(size=rows, chunks=n) < 0.5).astype(float)
            data = fd.shards(client, X, y)
            wait(data.items)
            fd.value_and_grad(F, w, data)        # ships F, warms the workers
            f = fd._ship(client, F)
            ts, compute = [], []
            for _ in range(rounds):
                t0 = time.perf_counter()
                results[workers] = fd.value_and_grad(F, w, data)
                ts.append(time.perf_counter() - t0)
                compute.append(sum(client.gather([client.submit(_timed_task, f, w, s,
                                                                pure=False)
                                                  for s in data.items])))
            homes = client.who_has(data.items)
            placed = sorted(sum(1 for s in data.items if w in homes[s.key])
                            for w in client.scheduler_info()["workers"])
            # the cluster's own cost: an evaluation's time beyond its tasks' compiled
            # calls shared out over the workers (tasks, transfers, the reduction)
            out[f"workers_{workers}"] = {
                "median_s": med(ts), "min_s": min(ts), "rows_per_s": rows / med(ts),
                "task_compute_sum_s": med(compute), "shards_per_worker": placed,
                "beyond_compute_s": med([t - c / workers for t, c in zip(ts, compute)])}
            if workers == 2:
                tiny = [(np.ones((10, D)), np.ones(10))] * 100
                G = ft.compile(shard_nll, np.zeros(D), *tiny[0], retrace=False)
                t_data = fd.shards(client, tiny)
                fd.value_and_grad(G, w, t_data)
                tt = []
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    fd.value_and_grad(G, w, t_data)
                    tt.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                for _ in range(100):
                    G.value_and_grad(w, *tiny[0])
                own = (time.perf_counter() - t0) / 100
                out["per_task_overhead_s"] = med(tt) / 100 - own
                out["tiny_round_s"] = med(tt)
    assert results[1][0] == results[2][0] and np.array_equal(results[1][1], results[2][1])
    out["throughput_2_over_1"] = out["workers_2"]["rows_per_s"] / out["workers_1"]["rows_per_s"]
    # the same shard loss in two plain processes over one, measured right after: the
    # second core the machine gave in this run (the cluster cannot beat it)
    out["machine_2_over_1"] = [before, machine_scaling(n)]
    out["throughput_over_machine"] = out["throughput_2_over_1"] / med(out["machine_2_over_1"])
    out["identical_results"] = True
    return out


# -- (d) a very large tape ---------------------------------------------------------------

def bench_large(n, folder, large_rounds=3):
    out = {"nodes_requested": n}
    t0 = time.perf_counter()
    t, s, x = scalar_tape(n)
    out["record_s"] = time.perf_counter() - t0
    out["nodes"] = len(t)
    t0 = time.perf_counter()
    g = t.gradient(s, x)
    out["gradient_s"] = time.perf_counter() - t0
    out["bytes_per_node_held"] = t.nbytes / len(t)
    t0 = time.perf_counter()
    t.forward()
    out["forward_sweep_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    t.backward(s)
    out["reverse_sweep_s"] = time.perf_counter() - t0
    out["gradient"] = g
    path = os.path.join(folder, "large.npz")
    # twice: the first write of a file this size also pays the kernel making room in
    # the page cache (numpy's own tofile/readinto of 1.7 GB: 0.6 GB/s, then 3 GB/s)
    from fastape import _format
    saves, loads, one_thread = [], [], []
    parallel_from = _format._PARALLEL_FROM
    for r in range(2 * large_rounds):
        if r < 2:
            if os.path.exists(path):
                os.remove(path)
            t0 = time.perf_counter()
            t.save(path)
            saves.append(time.perf_counter() - t0)
        # the load as it is (two threads), and read by one thread, taking turns
        for threads in ((2, 1) if r % 2 == 0 else (1, 2)):
            _format._PARALLEL_FROM = parallel_from if threads == 2 else 1 << 62
            gc.collect()
            t0 = time.perf_counter()
            u = ft.Tape.load(path)
            (loads if threads == 2 else one_thread).append(time.perf_counter() - t0)
            u.release()
            del u
    _format._PARALLEL_FROM = parallel_from
    out["file_bytes"] = os.path.getsize(path)
    out["save_s"], out["load_s"], out["load_one_thread_s"] = saves, loads, one_thread
    out["save_GB_per_s"] = [out["file_bytes"] / x / 1e9 for x in saves]
    out["load_GB_per_s"] = [out["file_bytes"] / x / 1e9 for x in loads]
    out["load_GB_per_s_median"] = out["file_bytes"] / med(loads) / 1e9
    out["load_one_thread_GB_per_s_median"] = out["file_bytes"] / med(one_thread) / 1e9
    del s, x
    t.release()
    t0 = time.perf_counter()
    u = ft.Tape.load(path, mmap=True)
    out["load_mmap_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    u.opcodes()
    out["load_mmap_first_use_s"] = time.perf_counter() - t0
    u.release()
    os.remove(path)
    gc.collect()

    t0 = time.perf_counter()
    F = ft.compile(_loop(n), 0.5)                   # records, prunes, tries grouping
    out["compile_s"] = time.perf_counter() - t0
    out["compiled_nodes"] = F.nodes
    out["compiled_nbytes"] = F.nbytes
    ts = []
    for _ in range(3):
        t0 = time.perf_counter()
        v, g2 = F.value_and_grad(0.5)
        ts.append(time.perf_counter() - t0)
    out["replay_value_and_grad_s"] = med(ts)
    out["replay_gradient_equals_tape"] = g2 == g
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=10**7)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dask", action="store_true")
    ap.add_argument("--rows", type=int, default=10**7)
    ap.add_argument("--large", type=float, default=0)
    ap.add_argument("--function-nodes", type=int, default=10**6)
    ap.add_argument("--skip", nargs="*", default=[], help="files function checkpoint")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    res = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                       "cores": len(os.sched_getaffinity(0)), "numpy": np.__version__,
                       "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS")},
           "command": " ".join(sys.argv)}
    with tempfile.TemporaryDirectory() as folder:
        if "files" not in a.skip:
            res["files"] = bench_files(a.nodes, a.rounds, folder)
            print(json.dumps(res["files"], indent=1), flush=True)
        if "function" not in a.skip:
            res["function_files"] = bench_function_files(a.function_nodes, a.rounds, folder)
            print(json.dumps(res["function_files"], indent=1), flush=True)
        if "checkpoint" not in a.skip:
            res["checkpoint"] = bench_checkpoint(max(3, a.rounds // 2))
            print(json.dumps(res["checkpoint"], indent=1), flush=True)
        if a.dask:
            res["dask"] = bench_dask(a.rows, a.rounds)
            print(json.dumps(res["dask"], indent=1), flush=True)
        if a.large:
            res["large"] = bench_large(int(a.large), folder)
            print(json.dumps(res["large"], indent=1), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
