"""Benchmark: value and gradient of two spectral objectives (issue 18).

    spectral     f(x) = Σ |fft(x) · h|²,              x real (n), h complex (n)
    convolution  f(x) = Σ (irfft(rfft(x, 2n) · K, 2n)[:n] − y)²,   K = rfft(k, 2n)

at n = 2¹⁶ and 2²⁰, beside a hand-written numpy gradient of the same function, in the
same process:

    numpy (hand)      spectral: z = fft(x)·h; x̄ = n · Re ifft(2 conj(h) z)
                      convolution: r = c − y; x̄ = irfft(conj(K) · rfft(2r, 2n), 2n)[:n]
    fastape eager     ft.value_and_grad(f): records the tape on every call
    fastape compiled  ft.compile(f, x).value_and_grad: replays the tape
    autograd / PyTorch eager / jax.jit   when importable (skipped with a note otherwise)

Tools are interleaved round by round; each time is the median over rounds (a round
times a batch of calls), each ratio the median of the per-round ratios to numpy.
BLAS and the FFTs run on one thread. Every tool's gradient is checked against the
hand-written one before timing.

    PYTHONPATH=src python benchmarks/bench_fft.py [--rounds 7] [--sizes 65536 1048576]
                                                  [--json PATH]
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import fastape as ft  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_forward import write_json  # noqa: E402

HAND = "numpy (hand-written)"


def problem(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    h = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    k = np.exp(-np.arange(n) / 50.0)
    K = np.fft.rfft(k, 2 * n)
    y = rng.standard_normal(n)
    return x, h, K, y


def spectral(np_, h):
    def f(x):
        return np_.sum(np_.abs(np_.fft.fft(x) * h) ** 2)
    return f


def spectral_hand(h):
    def vg(x):
        z = np.fft.fft(x) * h
        value = float(np.sum(z.real ** 2 + z.imag ** 2))
        return value, x.size * np.fft.ifft(2.0 * np.conj(h) * z).real
    return vg


def convolution(np_, K, y):
    m = 2 * y.size

    def f(x):
        c = np_.fft.irfft(np_.fft.rfft(x, m) * K, m)[: y.size]
        return np_.sum((c - y) ** 2)
    return f


def convolution_hand(K, y):
    n, m = y.size, 2 * y.size

    def vg(x):
        r = np.fft.irfft(np.fft.rfft(x, m) * K, m)[:n] - y
        return float(r @ r), np.fft.irfft(np.conj(K) * np.fft.rfft(2.0 * r, m), m)[:n]
    return vg


def tools(case, x, h, K, y):
    """name -> value-and-gradient function of x (None: not installed, with a note)."""
    make = (lambda np_: spectral(np_, h)) if case == "spectral" else \
        (lambda np_: convolution(np_, K, y))
    out = {HAND: spectral_hand(h) if case == "spectral" else convolution_hand(K, y),
           "fastape eager": ft.value_and_grad(make(np))}
    F = ft.compile(make(np), x)
    out["fastape compiled"] = F.value_and_grad
    try:
        import autograd
        import autograd.numpy as anp
        out["autograd"] = autograd.value_and_grad(make(anp))
    except ImportError:
        out["autograd"] = None
    try:
        import torch
        torch.set_num_threads(1)
        th, tK, ty = (torch.from_numpy(np.ascontiguousarray(a)) for a in (h, K, y))

        def torch_vg(x, f=None):
            xt = torch.from_numpy(x).requires_grad_(True)
            if case == "spectral":
                v = torch.sum(torch.abs(torch.fft.fft(xt) * th) ** 2)
            else:
                m = 2 * x.size
                c = torch.fft.irfft(torch.fft.rfft(xt, m) * tK, m)[: x.size]
                v = torch.sum((c - ty) ** 2)
            v.backward()
            return float(v), xt.grad.numpy()
        out["PyTorch eager"] = torch_vg
    except ImportError:
        out["PyTorch eager"] = None
    try:
        import jax
        jax.config.update("jax_enable_x64", True)
        jf = jax.jit(jax.value_and_grad(make(jax.numpy)))

        def jax_vg(x):
            v, g = jf(x)
            return float(v), np.asarray(g)
        out["jax.jit"] = jax_vg
    except ImportError:
        out["jax.jit"] = None
    return out


def run(case, n, rounds):
    x, h, K, y = problem(n)
    ts = tools(case, x, h, K, y)
    v0, g0 = ts[HAND](x)
    for name, vg in ts.items():
        if vg is None:
            continue
        v, g = vg(x)
        np.testing.assert_allclose(v, v0, rtol=1e-9, err_msg=name)
        np.testing.assert_allclose(g, g0, rtol=1e-8, atol=1e-8 * np.max(np.abs(g0)),
                                   err_msg=name)
    t0 = time.perf_counter()
    ts[HAND](x)
    calls = max(1, int(0.05 / max(time.perf_counter() - t0, 1e-6)))
    times = {name: [] for name, vg in ts.items() if vg is not None}
    for _ in range(rounds):
        for name in times:
            vg = ts[name]
            t0 = time.perf_counter()
            for _ in range(calls):
                vg(x)
            times[name].append((time.perf_counter() - t0) / calls)
    seconds = {k: statistics.median(v) for k, v in times.items()}
    ratios = {k: statistics.median(a / b for a, b in zip(v, times[HAND]))
              for k, v in times.items()}
    missing = [k for k, v in ts.items() if v is None]
    return {"case": case, "n": n, "seconds": seconds, "ratio_to_numpy": ratios,
            "not_installed": missing}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2 ** 16, 2 ** 20])
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)
    if args.rounds < 7:
        ap.error("--rounds must be at least 7 (the medians need them)")
    results = []
    print(f"value + gradient, median of {args.rounds} rounds, 1 thread; ratio to {HAND}")
    for case in ("spectral", "convolution"):
        for n in args.sizes:
            r = run(case, n, args.rounds)
            results.append(r)
            print(f"\n{case}, n = {n}")
            for k, s in r["seconds"].items():
                print(f"  {k:<22} {s * 1e3:10.3f} ms  {r['ratio_to_numpy'][k]:6.2f}x")
            for k in r["not_installed"]:
                print(f"  {k:<22} (not installed)")
    if args.json:
        write_json(args.json, args.rounds, results)
    return results


if __name__ == "__main__":
    main()
