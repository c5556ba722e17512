"""Logistic regression on 10⁷ generated rows in shards on a Dask cluster
(fastape.distributed), compared with the same training in this process.

The data are generated on the workers as dask arrays (row chunks: the shards) and
stay there, as many on each worker (shard k on worker k mod W); the per-shard
loss is compiled once and sent once to every worker; every L-BFGS-B evaluation
is one round of the cluster: one task per shard (its compiled value and
gradient) and a tree of additions. The single-process run
computes the same sums in the same order, so the two trainings take the same
steps and end at the same weights, bit for bit.

    python examples/dask_logistic_regression.py [--rows N] [--shards K] [--workers W]

A LocalCluster of W worker processes (one thread each) is started here; with
``--scheduler tcp://host:8786`` the same code runs on that cluster instead.
Needs ``pip install "fastape[dask]"``.
"""

import argparse
import os
import time

# one BLAS thread here, as Dask gives each worker (its nanny sets the same variables):
# the shards' products are small, and a pool per process would only contend
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy.optimize import minimize  # noqa: E402

import fastape as ft  # noqa: E402
import fastape.distributed as fd  # noqa: E402

D = 10
LAM = 1e-3


def shard_nll(w, X, y):
    """Σ over a shard's rows of log(1 + e^z) - y z, z = x·w (labels y in {0, 1})."""
    z = X @ w
    return ft.sum(ft.logaddexp(0.0, z) - y * z)


def objective(F, data, rows):
    def f(w):
        v, g = fd.value_and_grad(F, w, data)
        return v / rows + LAM * w @ w, g / rows + 2 * LAM * w
    return f


def train(F, data, rows):
    t0 = time.perf_counter()
    res = minimize(objective(F, data, rows), np.zeros(D), jac=True, method="L-BFGS-B")
    return res, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10**7)
    ap.add_argument("--shards", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scheduler", default=None)
    a = ap.parse_args()
    import dask.array as da
    from dask.distributed import Client, LocalCluster

    if a.rows % a.shards:
        raise SystemExit("--rows must be a multiple of --shards (shards of one shape)")
    n = a.rows // a.shards
    if a.scheduler:
        client = Client(a.scheduler)
    else:
        client = Client(LocalCluster(n_workers=a.workers, threads_per_worker=1,
                                     processes=True, dashboard_address=None))
    print(f"{a.rows} rows x {D} features in {a.shards} shards of {n} rows; "
          f"{len(client.scheduler_info()['workers'])} workers")
    rng = da.random.default_rng(0)
    X = rng.normal(size=(a.rows, D), chunks=(n, D))
    w_true = np.linspace(-1.0, 1.0, D)
    y = (rng.uniform(size=a.rows, chunks=n) < 1 / (1 + da.exp(-(X @ w_true)))).astype(float)

    # no branches in the loss: retrace=False ships the recorded tape alone, so the
    # workers need not import this script
    F = ft.compile(shard_nll, np.zeros(D), np.zeros((n, D)), np.zeros(n), retrace=False)
    t0 = time.perf_counter()
    on_cluster = fd.shards(client, X, y)          # generated on the workers, kept there
    from dask.distributed import wait
    wait(on_cluster.items)
    print(f"data generated on the workers in {time.perf_counter() - t0:.2f} s")

    res, t_cluster = train(F, on_cluster, a.rows)
    print(f"cluster:        {res.nit} iterations, {res.nfev} evaluations, loss = "
          f"{res.fun:.10f}, {t_cluster:.2f} s ({t_cluster / res.nfev * 1e3:.0f} ms per "
          "evaluation)")
    local = fd.shards(None, X, y)                 # the same shards, in this process
    res_local, t_local = train(F, local, a.rows)
    print(f"single process: {res_local.nit} iterations, {res_local.nfev} evaluations, "
          f"loss = {res_local.fun:.10f}, {t_local:.2f} s ({t_local / res_local.nfev * 1e3:.0f} "
          "ms per evaluation)")
    print(f"max |w_cluster - w_single| = {np.abs(res.x - res_local.x).max():.1e}, "
          f"max |w - w_true| = {np.abs(res.x - w_true).max():.3f}")
    print(f"per evaluation: single process / cluster = "
          f"{(t_local / res_local.nfev) / (t_cluster / res.nfev):.2f}")
    client.close()


if __name__ == "__main__":
    main()
