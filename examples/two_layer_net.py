"""Train the seeds' two-layer network by full-batch gradient descent.

    f(W1, W2) = ||tanh(X W1) W2 − y||² / n

on data generated here: a smooth nonlinear target y = sin(2 x₀) + cos(x₁) / 2 of
d = 8 inputs, plus noise. The loss is plain numpy code; ``fastape.compile``
records it once, and every step replays the tape (two BLAS products forward,
three backward) on the new weights. Prints the loss as it goes and, when
matplotlib is installed, saves the loss curve to ``two_layer_loss.png``.

    python examples/two_layer_net.py [--steps 2000] [--png PATH]

(fastape installed, or ``PYTHONPATH=src`` in a checkout built in place.)
"""

import argparse
import time

import numpy as np

import fastape as ft


def make_data(n=2000, d=8, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1.5, 1.5, size=(n, d))
    y = np.sin(2.0 * X[:, 0]) + 0.5 * np.cos(X[:, 1]) + noise * rng.standard_normal(n)
    return X, y - y.mean()      # the network has no bias terms: centre the target


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--png", default="two_layer_loss.png")
    a = p.parse_args(argv)

    X, y = make_data()
    n, d = X.shape
    rng = np.random.default_rng(1)
    W1 = rng.standard_normal((d, a.hidden)) / np.sqrt(d)
    W2 = rng.standard_normal(a.hidden) / np.sqrt(a.hidden)

    def loss(W1, W2):
        return np.sum((np.tanh(X @ W1) @ W2 - y) ** 2) / n

    F = ft.compile(loss, W1, W2, argnums=(0, 1))
    history = []
    t0 = time.perf_counter()
    for step in range(a.steps + 1):
        value, (g1, g2) = F.value_and_grad(W1, W2)
        history.append(value)
        if step % (a.steps // 10 or 1) == 0:
            print(f"step {step:5d}   loss {value:.5f}")
        W1 -= a.lr * g1
        W2 -= a.lr * g2
    elapsed = time.perf_counter() - t0
    print(f"{a.steps} steps in {elapsed:.2f} s; loss {history[0]:.4f} -> {history[-1]:.4f} "
          f"(noise floor {0.05 ** 2:.4f}, variance of y {np.var(y):.4f})")

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return history
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogy(history)
    ax.set_xlabel("gradient-descent step")
    ax.set_ylabel("mean squared error")
    ax.set_title("two-layer network, full-batch gradient descent (fastape)")
    fig.tight_layout()
    fig.savefig(a.png, dpi=120)
    print(f"saved {a.png}")
    return history


if __name__ == "__main__":
    main()
