"""Data-parallel gradients on Dask (``pip install "fastape[dask]"``).

fastape does not schedule work across machines itself: given a compiled loss of
the parameters and one shard of data, ``F(params, shard)``, these functions sum its
value and gradient over the shards of a data set on a ``dask.distributed`` cluster::

    from dask.distributed import Client
    import fastape.distributed as fd

    client = Client("tcp://scheduler:8786")        # or Client(LocalCluster(...))
    F = fastape.compile(shard_loss, w0, X_shard, y_shard)   # argnums=0: the parameters
    data = fd.shards(client, X, y)                 # dask arrays chunked along rows
    value, grad = fd.value_and_grad(F, w, data)

How the work is laid out:

* the compiled function travels once to every worker (``client.scatter`` with
  ``broadcast=True``, by pickling: fastape's file format): tasks name it, they do
  not carry it;
* the data stay where they are: a list of numpy shards is scattered once by
  :func:`shards`, dask-array blocks are computed (and kept) on the workers, shard k
  on worker k mod W (in address order): as many shards on each worker, within one;
* one task per shard runs the compiled sweeps there and returns the value and the
  gradient's leaves; the partial sums are added in a tree (``split_every`` at a
  time, on the workers), and only the total comes back.

The order of the additions is fixed by the shards' order and ``split_every``, not
by the schedule, so a result is reproducible bit for bit, and ``client=None`` (or
a plain list of numpy shards) computes the same sums in this process: the
single-process reference, identical to the cluster's result.

``F`` must take the parameters first (``argnums=0``) and one shard as its other
argument(s); every shard must have the shapes ``F`` was compiled for (equal-sized
chunks). The source function of ``F`` travels by reference (it must be importable
on the workers, e.g. defined in a module), unless ``F`` was compiled with
``retrace=False``.
"""

import numpy as np

from fastape._tree import flatten, unflatten

__all__ = ["shards", "value_and_grad", "grad_batch", "Shards"]


class Shards:
    """Shards of a data set held on a cluster (futures, in order) or locally (a list),
    as :func:`shards` makes them."""

    def __init__(self, client, items):
        self.client = client
        self.items = list(items)

    def __len__(self):
        return len(self.items)


def _dask():
    try:
        import dask  # noqa: F401
        import distributed
    except ImportError as e:                    # pragma: no cover - the extra is missing
        raise ImportError("fastape.distributed needs Dask: pip install 'fastape[dask]' "
                          "(dask[distributed])") from e
    return distributed


def shards(client, *data):
    """The shards of ``data`` placed on ``client``'s workers: a list of shards (numpy
    arrays or tuples of them; scattered once), or one or more dask arrays chunked
    along their first axis (the blocks of one row range form a shard: ``(X_k, y_k)``
    for ``shards(client, X, y)``; computed on the workers and kept there), or a
    dask bag (one shard per partition: its items stacked, component-wise for tuple
    items). With ``client=None``
    the shards are materialised here (numpy), for the single-process reference."""
    if len(data) == 1 and isinstance(data[0], (list, tuple)):
        items = list(data[0])
        if client is None:
            return Shards(None, items)
        return Shards(client, client.scatter(items))
    blocks = _blocks(data)
    if client is None:
        import dask
        return Shards(None, list(dask.compute(*blocks)))
    # shard k made on worker k mod W (in address order): left to the scheduler, 10
    # shards landed 4 and 6 on two workers, and an evaluation, whose tasks run where
    # their shard is, then waits for the worker of 6 (at most 10/6 = 1.67x from the
    # second worker, however idle the machine)
    workers = sorted(client.scheduler_info()["workers"])
    if not workers:
        return Shards(client, client.compute(blocks))
    return Shards(client, [client.compute(b, workers=[workers[k % len(workers)]],
                                          allow_other_workers=False)
                           for k, b in enumerate(blocks)])


def _blocks(data):
    """Delayed shards of dask arrays (row blocks, zipped) or of a dask bag."""
    import dask
    import dask.array as da
    import dask.bag as db
    if len(data) == 1 and isinstance(data[0], db.Bag):
        return [dask.delayed(_stack)(p) for p in data[0].to_delayed()]
    if not all(isinstance(x, da.Array) for x in data):
        raise TypeError("fastape.distributed.shards: data must be a list of shards, dask "
                        f"arrays or a dask bag, got {[type(x).__name__ for x in data]}")
    rows = data[0].chunks[0]
    per = []
    for x in data:
        if x.chunks[0] != rows:
            raise ValueError(f"fastape.distributed.shards: the arrays' row chunks differ "
                             f"({rows} and {x.chunks[0]}); rechunk them alike")
        if any(len(c) != 1 for c in x.chunks[1:]):
            x = x.rechunk({d: -1 for d in range(1, x.ndim)})
        per.append(x.to_delayed().reshape(-1))
    if len(data) == 1:
        return list(per[0])
    return [dask.delayed(tuple)(list(blk)) for blk in zip(*per)]


def _stack(items):
    """A bag partition as one shard: its items stacked (a tuple of stacks when the
    items are tuples, such as (x_i, y_i))."""
    items = list(items)
    if items and isinstance(items[0], tuple):
        return tuple(np.asarray(c, dtype=np.float64) for c in zip(*items))
    return np.asarray(items, dtype=np.float64)


# -- what a worker runs ---------------------------------------------------------

def _shard_value_and_grad(F, params, shard):
    """(value, gradient leaves) of F(params, *shard) on one shard."""
    args = (params,) + (tuple(shard) if isinstance(shard, tuple) else (shard,))
    v, g = F.value_and_grad(*args)
    return float(v), [np.asarray(x, dtype=np.float64) for x in flatten(g, "grad")[0]]


def _add(*parts):
    """Sum of (value, leaves) pairs, left to right."""
    v, leaves = parts[0][0], [x.copy() for x in parts[0][1]]
    for pv, pl in parts[1:]:
        v += pv
        for a, b in zip(leaves, pl):
            a += b
    return v, leaves


def _shard_grad_batch(F, shard):
    return F.value_and_grad_batch(shard)


def _tree(items, split_every, add):
    """Pairwise-by-groups reduction in a fixed order: add(*group) over consecutive
    groups of `split_every`, level by level."""
    while len(items) > 1:
        items = [add(*items[i:i + split_every]) if len(items[i:i + split_every]) > 1
                 else items[i] for i in range(0, len(items), split_every)]
    return items[0]


def _ship(client, F):
    """F on every worker, once (a future the tasks name)."""
    cache = getattr(client, "_fastape_functions", None)
    if cache is None:
        cache = client._fastape_functions = {}
    fut = cache.get(id(F))
    if fut is None or fut[0] is not F:
        fut = cache[id(F)] = (F, client.scatter(F, broadcast=True, hash=False))
    return fut[1]


def value_and_grad(F, params, data, *, split_every=8):
    """``(Σ_k F(params, shard_k), Σ_k ∇_params F(params, shard_k))`` over the shards
    ``data`` (:func:`shards`, or a plain list of shards: computed here). The gradient
    has the structure of ``params``. See the module doc for where things run."""
    if not isinstance(data, Shards):
        data = Shards(None, data)
    if not len(data):
        raise ValueError("fastape.distributed.value_and_grad: no shards")
    td = flatten(params, "params", "fastape.distributed")[1]
    if data.client is None:
        parts = [_shard_value_and_grad(F, params, s) for s in data.items]
        v, leaves = _tree(parts, split_every, _add)
    else:
        client = data.client
        f = _ship(client, F)
        parts = [client.submit(_shard_value_and_grad, f, params, s, pure=False)
                 for s in data.items]
        total = _tree(parts, split_every,
                      lambda *p: client.submit(_add, *p, pure=False))
        v, leaves = total.result()
    return v, unflatten(td, [float(x) if x.shape == () else x for x in leaves])


def grad_batch(F, data):
    """``(values, gradients)`` of a one-argument compiled F at every row of every shard
    (``F.value_and_grad_batch`` on each shard, where it is), concatenated in order."""
    if not isinstance(data, Shards):
        data = Shards(None, data)
    if data.client is None:
        parts = [_shard_grad_batch(F, s) for s in data.items]
    else:
        f = _ship(data.client, F)
        parts = data.client.gather([data.client.submit(_shard_grad_batch, f, s, pure=False)
                                    for s in data.items])
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
