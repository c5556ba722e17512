"""A deep-equilibrium layer z = tanh(W z + U x + b) trained by gradient descent, its
gradients taken implicitly (``fastape.fixed_point``) and compared with differentiating
50 unrolled iterations: time, tape memory and agreement.

The layer's output is the fixed point z*(x) of one tanh layer applied forever; a
linear readout V z* fits a target. ``W = 0.8 W_raw / ‖W_raw‖_F`` keeps the map a
contraction (‖W‖₂ ≤ 0.8, tanh' ≤ 1), so the fixed point exists and is unique. The
implicit gradient solves one linear system with (I − ∂F/∂z)ᵀ at z*; the unrolled one
records and reverses all 50 iterations.

    python examples/deq_layer.py [--steps N]
"""

import argparse
import time

import numpy as np

import fastape as ft


def problem(n=16, m=4, batch=8, seed=0):
    """Inputs X (m, batch), targets Y (batch,) and initial parameters (W_raw, U, b, V)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, batch))
    Y = np.sin(X[0]) * np.cos(X[1])
    params = (rng.standard_normal((n, n)), rng.standard_normal((n, m)) / np.sqrt(m),
              0.1 * rng.standard_normal(n), rng.standard_normal(n) / np.sqrt(n))
    return X, Y, params


def contractive(W_raw):
    """W = 0.8 W_raw / ‖W_raw‖_F: spectral norm at most 0.8."""
    return 0.8 * W_raw / np.sqrt(np.sum(W_raw * W_raw))


def layer(z, W, U, b, X):
    """One application of the layer to the batch of states z (n, batch)."""
    return np.tanh(W @ z + U @ X + b.reshape(-1, 1))


def equilibrium(W_raw, U, b, X, tol=1e-10):
    """z* = layer(z*) as one implicit node."""
    z0 = np.zeros((U.shape[0], X.shape[1]))
    return ft.fixed_point(layer, z0, contractive(W_raw), U, b, X, tol=tol)


def unrolled(W_raw, U, b, X, iterations):
    """The same layer iterated a fixed number of times from 0 (every step on the tape)."""
    W = contractive(W_raw)
    z = np.zeros((U.shape[0], X.shape[1]))
    for _ in range(iterations):
        z = layer(z, W, U, b, X)
    return z


def loss_of(states):
    """The mean squared error of the readout V z, for a function giving the states."""
    def loss(params, X, Y):
        W_raw, U, b, V = params
        r = V @ states(W_raw, U, b, X) - Y
        return np.mean(r * r)
    return loss


implicit_loss = loss_of(equilibrium)


def unrolled_loss(iterations):
    return loss_of(lambda W_raw, U, b, X: unrolled(W_raw, U, b, X, iterations))


def tape_bytes(loss, params, X, Y):
    """Bytes of the tape recording one loss evaluation (tape.nbytes)."""
    with ft.Tape() as tape:
        loss(tuple(tape.var(p) for p in params), X, Y)
    return tape.nbytes


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args(argv)
    X, Y, params = problem()
    unrolled50 = unrolled_loss(50)
    vg_implicit = ft.value_and_grad(implicit_loss)
    vg_unrolled = ft.value_and_grad(unrolled50)

    # the two gradients at the initial parameters: agreement, time, tape memory
    (v1, g1), (v2, g2) = vg_implicit(params, X, Y), vg_unrolled(params, X, Y)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(g1, g2))
    assert diff < 1e-8, f"the implicit and unrolled gradients differ by {diff}"
    times = {}
    for name, vg in (("implicit", vg_implicit), ("unrolled 50", vg_unrolled)):
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(10):
                vg(params, X, Y)
            runs.append((time.perf_counter() - t0) / 10)
        times[name] = float(np.median(runs))
    mem = {"implicit": tape_bytes(implicit_loss, params, X, Y),
           "unrolled 50": tape_bytes(unrolled50, params, X, Y)}
    print(f"z of shape {np.shape(equilibrium(*params[:3], X))}; loss {v1:.6f} "
          f"(unrolled 50: {v2:.6f})")
    print(f"max |implicit gradient - unrolled 50 gradient| = {diff:.2e}")
    for name in times:
        print(f"  {name:12s} gradient {times[name] * 1e3:7.2f} ms, tape {mem[name]:>9,d} "
              "bytes")
    print(f"  implicit / unrolled 50: time {times['implicit'] / times['unrolled 50']:.2f}x, "
          f"tape {mem['implicit'] / mem['unrolled 50']:.3f}x")

    # gradient descent with the implicit gradients
    lr = 0.05
    first = v1
    for step in range(args.steps):
        value, grads = vg_implicit(params, X, Y)
        params = tuple(p - lr * g for p, g in zip(params, grads))
        if step % max(1, args.steps // 5) == 0:
            print(f"  step {step:4d}: loss {value:.6f}")
    last = implicit_loss(params, X, Y)
    assert last < first, (first, last)
    print(f"trained {args.steps} steps: loss {first:.6f} -> {last:.6f}")


if __name__ == "__main__":
    main()
