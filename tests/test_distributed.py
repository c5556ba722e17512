"""fastape.distributed on a dask.distributed LocalCluster of 2 worker processes,
against the single-process reference (bit for bit), the whole data set in one call
(to rounding) and the closed-form logistic-regression gradient."""

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")
db = pytest.importorskip("dask.bag")

import fastape as ft  # noqa: E402
import fastape.distributed as fd  # noqa: E402

ROWS, D, SHARDS = 4000, 5, 8


def shard_loss(w, X, y):
    """Logistic loss of one shard: Σ log(1 + exp(-y·Xw)), y in {-1, 1}."""
    return ft.sum(ft.logaddexp(0.0, -y * (X @ w)))


def closed_form(w, X, y):
    z = -y * (X @ w)
    value = np.sum(np.logaddexp(0.0, z))
    grad = X.T @ (-y / (1.0 + np.exp(-z)))
    return value, grad


def data():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(ROWS, D))
    y = np.sign(X @ np.arange(1.0, D + 1) + rng.normal(size=ROWS))
    return X, y


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def compiled():
    X, y = data()
    n = ROWS // SHARDS
    return ft.compile(shard_loss, np.zeros(D), X[:n], y[:n])


def test_list_of_shards_matches_the_reference(client):
    X, y = data()
    n = ROWS // SHARDS
    parts = [(X[k:k + n], y[k:k + n]) for k in range(0, ROWS, n)]
    F = compiled()
    w = np.linspace(-0.5, 0.5, D)
    v, g = fd.value_and_grad(F, w, fd.shards(client, parts))
    v0, g0 = fd.value_and_grad(F, w, parts)                 # this process, same order
    assert v == v0
    np.testing.assert_array_equal(g, g0)
    vc, gc = closed_form(w, X, y)
    assert v == pytest.approx(vc, rel=1e-12)
    np.testing.assert_allclose(g, gc, rtol=1e-11)
    full = ft.compile(shard_loss, w, X, y)
    assert v == pytest.approx(full(w, X, y), rel=1e-13)


def test_dask_arrays_and_bags(client):
    X, y = data()
    n = ROWS // SHARDS
    Xd, yd = da.from_array(X, chunks=(n, D)), da.from_array(y, chunks=n)
    F = compiled()
    w = np.full(D, 0.1)
    on_cluster = fd.shards(client, Xd, yd)
    assert len(on_cluster) == SHARDS
    v, g = fd.value_and_grad(F, w, on_cluster)
    v0, g0 = fd.value_and_grad(F, w, fd.shards(None, Xd, yd))
    assert v == v0
    np.testing.assert_array_equal(g, g0)
    bag = db.from_sequence(list(zip(X, y)), npartitions=SHARDS)
    vb, gb = fd.value_and_grad(F, w, fd.shards(client, bag))
    assert vb == v
    np.testing.assert_array_equal(gb, g)


def test_the_function_is_shipped_once_to_every_worker(client):
    F = compiled()
    f = fd._ship(client, F)
    assert fd._ship(client, F) is f
    holders = client.who_has([f])[f.key]
    assert len(holders) == 2


def test_shards_are_spread_evenly_over_the_workers(client):
    """Shard k of a dask array or bag is made on worker k mod 2 (in address order) and
    stays there, so an evaluation's tasks, which run where their shard is, split
    evenly (the scheduler alone put 10 shards as 4 and 6); scattered lists too."""
    X, y = data()
    n = ROWS // 10
    workers = sorted(client.scheduler_info()["workers"])
    for on_cluster in (fd.shards(client, da.from_array(X, chunks=(n, D)),
                                 da.from_array(y, chunks=n)),
                       fd.shards(client, db.from_sequence(list(zip(X, y)), npartitions=9)),
                       fd.shards(client, [(X[k:k + n], y[k:k + n]) for k in range(0, ROWS, n)])):
        distributed.wait(on_cluster.items)
        homes = client.who_has(on_cluster.items)
        counts = [sum(1 for s in on_cluster.items if w in homes[s.key]) for w in workers]
        assert sum(counts) == len(on_cluster) and max(counts) - min(counts) <= 1, counts


def row_loss(x):
    return ft.sum(ft.sin(x) * x)


def test_grad_batch_over_shards(client):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    F = ft.compile(row_loss, X[0])
    parts = [X[k:k + 50] for k in range(0, 400, 50)]
    v, g = fd.grad_batch(F, fd.shards(client, parts))
    v0, g0 = F.value_and_grad_batch(X)
    np.testing.assert_array_equal(v, v0)
    np.testing.assert_array_equal(g, g0)
    np.testing.assert_allclose(g, np.sin(X) + X * np.cos(X), rtol=1e-14)
