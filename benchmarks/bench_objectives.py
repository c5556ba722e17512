"""Benchmark (issue 13): value and gradient of three objectives written in plain numpy
(benchmarks/objectives.py: the ADBench GMM log-likelihood, a diagonal LSTM, a
multivariate normal log-likelihood with a Cholesky factor), in one run:

    fastape eager      fastape.value_and_grad of the numpy code, unchanged
    fastape compiled   fastape.compile(...).value_and_grad (recorded once)
    numpy by hand      the gradient derived by hand in plain numpy
                       (objectives.<key>_value_and_grad): no AD tool at all
    autograd           autograd.value_and_grad of the same code with xp=autograd.numpy
    torch eager        the PyTorch versions (objectives.torch_*), loss.backward()
    jax.jit            jax.jit(jax.value_and_grad) of the same code with xp=jax.numpy
                       (float64; compile time reported separately)

Every tool's gradient is checked against fastape's before timing. Figures: medians
over rounds (tools interleaved) and each tool's median same-round ratio to fastape
eager. BLAS on one thread.

    PYTHONPATH=src python benchmarks/bench_objectives.py [--rounds 7] [--json PATH]
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                      "intra_op_parallelism_threads=1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import fastape as ft  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import objectives as obj  # noqa: E402
from bench_forward import measure, write_json  # noqa: E402

CASES = {"gmm": "GMM log-likelihood (ADBench), d = 5, k = 8, n = 1,000",
         "lstm": "diagonal LSTM (ADBench), 2 layers, 16 characters, sequence of 20",
         "mvn": "multivariate normal with a Cholesky factor, d = 30, n = 500"}


def _have(name):
    return importlib.util.find_spec(name) is not None


def _close(a, b, what):
    for x, y in zip(a, b):
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        scale = max(1.0, float(np.max(np.abs(y))))
        assert np.max(np.abs(x - y)) <= 1e-8 * scale, (what, float(np.max(np.abs(x - y))))


def case(key, rounds):
    params, data = getattr(obj, f"{key}_problem")()
    f = getattr(obj, f"{key}_objective")
    nums = tuple(range(len(params)))
    eager = ft.value_and_grad(lambda *p: f(*p, *data), argnums=nums)
    want_value, want = eager(*params)
    F = ft.compile(lambda *p: f(*p, *data), *params, argnums=nums)
    _close(F.value_and_grad(*params)[1], want, "compiled")
    by_hand = getattr(obj, f"{key}_value_and_grad")
    _close(by_hand(*params, *data)[1], want, "numpy by hand")
    tools = {"fastape eager": lambda: eager(*params),
             "fastape compiled": lambda: F.value_and_grad(*params),
             "numpy by hand": lambda: by_hand(*params, *data)}
    compile_seconds = {}
    if _have("autograd"):
        import autograd
        import autograd.numpy as anp
        ag = autograd.value_and_grad(lambda p: f(*p, *data, xp=anp))
        _close(ag(params)[1], want, "autograd")
        tools["autograd"] = lambda: ag(params)
    if _have("torch"):
        import torch
        torch.set_num_threads(1)
        tf = getattr(obj, f"torch_{key}")
        tdata = [torch.as_tensor(d) if isinstance(d, np.ndarray) else d for d in data]

        def torch_vg():
            tp = [torch.tensor(p, requires_grad=True) for p in params]
            loss = tf(*tp, *tdata)
            loss.backward()
            return loss.item(), [p.grad.numpy() for p in tp]
        tv, tg = torch_vg()
        _close(tg, want, "torch")
        _close([tv], [want_value], "torch value")      # the same function, constants too
        tools["torch eager"] = torch_vg
    if _have("jax"):
        import jax
        import jax.numpy as jnp
        jax.config.update("jax_enable_x64", True)
        jf = jax.jit(jax.value_and_grad(lambda *p: f(*p, *data, xp=jnp), argnums=nums))
        t0 = time.perf_counter()
        jax.block_until_ready(jf(*params))
        compile_seconds["jax.jit"] = time.perf_counter() - t0
        _close(jf(*params)[1], want, "jax")
        tools["jax.jit"] = lambda: jax.block_until_ready(jf(*params))
    t0 = time.perf_counter()
    ft.compile(lambda *p: f(*p, *data), *params, argnums=nums)
    compile_seconds["fastape compile"] = time.perf_counter() - t0
    med, ratio = measure(tools, rounds)
    return {"key": key, "title": CASES[key], "seconds": med,
            "ratio to fastape eager": {k: ratio(k, "fastape eager") for k in tools},
            "compile seconds": compile_seconds}


def report(results):
    lines = [f"fastape {ft.__version__}, numpy {np.__version__}, Python "
             f"{platform.python_version()}, BLAS threads 1"]
    for r in results:
        lines.append(f"\n{r['title']}: value and gradient per call")
        for k, v in r["seconds"].items():
            lines.append(f"  {k:18s} {v * 1e3:9.3f} ms   x{r['ratio to fastape eager'][k]:.2f}"
                         " of fastape eager (same-round median)")
        lines.append("  compile: " + ", ".join(f"{k} {v:.2f} s"
                                                for k, v in r["compile seconds"].items()))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
    except ImportError:
        pass
    results = [case(k, args.rounds) for k in CASES]
    print(report(results))
    if args.json:
        write_json(args.json, args.rounds, results,
                   command=f"PYTHONPATH=src python benchmarks/bench_objectives.py "
                           f"--rounds {args.rounds} --json {args.json}")


if __name__ == "__main__":
    main()
