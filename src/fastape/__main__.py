"""``python -m fastape``: a demonstration of the seeds' example.

    python -m fastape          the demonstration (also: python -m fastape demo)
    python -m fastape bench [--full] [--plot]   the benchmark suite (from a checkout)
"""

import importlib.util
import math
import os
import sys
from pathlib import Path

import numpy as np

BENCH_ENV = "FASTAPE_BENCHMARKS"
SUITE = "suite.py"


def demo():
    import fastape as ft

    print("fastape", ft.__version__, "- reverse-mode AD on a compiled Wengert tape\n")
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


# The benchmark suite is not installed with the package: it lives in the source
# checkout's benchmarks/ folder, beside the scripts it delegates to and the results
# it writes, and brings no code the library needs.

_NOT_FOUND = """\
python -m fastape bench: the benchmark suite is not part of the installed package.
It lives in a source checkout of fastape, in its benchmarks/ folder
(benchmarks/suite.py). From the checkout's root, time the checkout's own build:

    python setup.py build_ext --inplace && PYTHONPATH=src python -m fastape bench

or this installed fastape:

    python -m fastape bench

From any other folder: {env}=/path/to/fastape/benchmarks python -m fastape bench
"""


def _checkout_suite(root):
    """root/benchmarks/suite.py if ``root`` is a fastape source checkout, else None."""
    suite = root / "benchmarks" / SUITE
    if (root / "src" / "fastape").is_dir() and suite.is_file():
        return suite
    return None


def find_suite(environ=None, package_dir=None, cwd=None):
    """The benchmark suite's file: ``$FASTAPE_BENCHMARKS`` (a benchmarks folder or the
    suite file itself), else the checkout this package was imported from
    (``<checkout>/src/fastape``), else the checkout in the current directory.
    Returns ``(path, None)`` or ``(None, message)``."""
    environ = os.environ if environ is None else environ
    package_dir = Path(__file__).resolve().parent if package_dir is None else package_dir
    cwd = Path.cwd() if cwd is None else cwd
    given = environ.get(BENCH_ENV)
    if given:
        p = Path(given).expanduser()
        suite = p / SUITE if p.is_dir() else p
        if suite.is_file():
            return suite, None
        return None, (f"python -m fastape bench: {BENCH_ENV}={given} holds no {SUITE}; "
                      f"set it to a fastape checkout's benchmarks/ folder.\n")
    for root in (Path(package_dir).parent.parent, Path(cwd)):
        suite = _checkout_suite(root)
        if suite is not None:
            return suite, None
    return None, _NOT_FOUND.format(env=BENCH_ENV)


def load_suite(path):
    """Import the benchmark suite from its file (it is not a module of this package)."""
    name = "fastape_benchmarks_suite"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    cmd = argv[0] if argv else "demo"
    if cmd == "demo":
        demo()
        return 0
    if cmd == "bench":
        path, message = find_suite()
        if path is None:
            print(message, end="", file=sys.stderr)
            return 2
        return load_suite(path).main(argv[1:])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
