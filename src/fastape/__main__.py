"""``python -m fastape``: a demonstration of the seeds' example.

    python -m fastape          the demonstration (also: python -m fastape demo)
    python -m fastape bench [--full] [--plot]   the benchmark suite (fastape._bench)
"""

import math
import sys

import numpy as np


def demo():
    import fastape as ft

    print("fastape", ft.__version__, "- automatic differentiation on a compiled Wengert tape\n")
    print("f(x) = exp(exp(x) + exp(x)**2) + sin(exp(x) + exp(x)**2)")
    print("f'(x) = (exp(b) + cos(b)) * (exp(x) + 2 exp(2x)),  b = exp(x) + exp(2x)\n")

    def f(x):
        a = np.exp(x)
        b = a + a**2
        return np.exp(b) + np.sin(b)

    print(f"{'x':>6} {'fastape grad':>22} {'closed form':>22} {'rel. error':>10}")
    for x in (-1.0, -0.5, 0.0, 0.25, 0.5):
        g = ft.grad(f)(x)
        b = math.exp(x) + math.exp(2 * x)
        exact = (math.exp(b) + math.cos(b)) * (math.exp(x) + 2 * math.exp(2 * x))
        print(f"{x:6.2f} {g:22.15g} {exact:22.15g} {abs(g - exact) / abs(exact):10.1e}")

    print("\nThe multipliers of the intermediates (λ_j = ∂f/∂z_j) at x = 0.5:")
    with ft.Tape() as tape:
        x = tape.var(0.5)
        a = np.exp(x)
        b = a + a**2
        y = np.exp(b) + np.sin(b)
    tape.gradient(y, x)
    bv = b.value
    print(f"  λ_b = {tape.adjoint(b):.12g}   closed form exp(b) + cos(b)       = "
          f"{math.exp(bv) + math.cos(bv):.12g}")
    print(f"  λ_a = {tape.adjoint(a):.12g}   closed form (exp(b)+cos(b))(1+2a) = "
          f"{(math.exp(bv) + math.cos(bv)) * (1 + 2 * a.value):.12g}")
    print(f"  the tape holds {len(tape)} nodes in {tape.nbytes} bytes")

    print("\nPlain numpy code differentiates unchanged:")
    xs = np.linspace(-1.0, 1.0, 5)
    g = ft.grad(lambda v: np.sum(np.tanh(v) ** 2 + np.where(v > 0, v, 0.0)))(xs)
    print("  grad of sum(tanh(x)**2 + relu(x)) at", xs, "=", np.round(g, 6))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    cmd = argv[0] if argv else "demo"
    if cmd == "demo":
        demo()
        return 0
    if cmd == "bench":
        from fastape._bench import main as bench  # lazily: the demo needs none of it

        return bench(argv[1:])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
