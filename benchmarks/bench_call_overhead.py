"""Per-call cost of a compiled Function, to compare the argument handling of two trees.

    python benchmarks/bench_call_overhead.py [--repeats 7] TREE [TREE …]
    python benchmarks/bench_call_overhead.py --instructions TREE [TREE …]

Each TREE is a built checkout (`python setup.py build_ext --inplace`).

Time (the default): every tree gets one long-lived worker process; for each case
the workers take turns running one `timeit` repeat (20000 calls) until each has
run `--repeats` (7), so that the trees' repeats sit next to each other in time and
share whatever else the machine is doing. A figure is the median of a tree's
repeats, per call, in µs; the columns after the first tree add, in brackets, the
median over the rounds of the ratio of that tree's repeat to the first tree's
repeat of the same round (robust to a load that changes during the run).

Instructions (`--instructions`, needs valgrind): each case runs under
`valgrind --tool=callgrind` with 10000 and with 30000 calls (PYTHONHASHSEED=0);
the difference over 20000 is the instructions per call, independent of the load
(a few percent of noise remain, from the garbage collector's timing).

A case a tree cannot run (a dict argument before pytrees) prints `-`.
"""

import os
import re
import subprocess
import sys
from statistics import median

NUMBER = 20000

CASES = {
    "seeds F(x)": ("x = 0.5; F = ft.compile(f, x)", "F(x)"),
    "seeds F.value_and_grad(x)": ("x = 0.5; F = ft.compile(f, x)", "F.value_and_grad(x)"),
    "array(16) F(x)": ("x = np.linspace(-1, 1, 16); F = ft.compile(g, x)", "F(x)"),
    "array(16) F.value_and_grad(x)": ("x = np.linspace(-1, 1, 16); F = ft.compile(g, x)",
                                      "F.value_and_grad(x)"),
    "(array(16), float) F(x, s)": (
        "x = np.linspace(-1, 1, 16); F = ft.compile(h, x, 2.0, argnums=(0, 1))", "F(x, 2.0)"),
    "(array(16), float) F.value_and_grad": (
        "x = np.linspace(-1, 1, 16); F = ft.compile(h, x, 2.0, argnums=(0, 1))",
        "F.value_and_grad(x, 2.0)"),
    "dict F.value_and_grad(p)": (
        "p = {'w': np.linspace(-1, 1, 16), 'b': 0.5}; F = ft.compile(d, p)",
        "F.value_and_grad(p)"),
}

PRELUDE = r"""
import sys, timeit
import numpy as np
import fastape as ft

def f(x):                       # the README's seeds function
    a = np.exp(x)
    b = a + a**2
    return np.exp(b) + np.sin(b)

g = lambda w: np.sum(np.tanh(w) ** 2)
h = lambda x, s: np.sum(np.tanh(x) ** 2) * s
d = lambda p: np.sum(np.tanh(p['w']) ** 2) + p['b']
"""

WORKER = PRELUDE + r"""
timer = None
for line in sys.stdin:
    cmd, _, rest = line.rstrip("\n").partition(" ")
    if cmd == "case":
        setup, stmt = rest.split("\t")
        try:
            exec(setup)
            exec(stmt)
            timer = timeit.Timer(stmt, globals=globals())
            timer.timeit(NUMBER)            # warm up
            print("ok", flush=True)
        except Exception as e:
            timer = None
            print("fail", type(e).__name__, flush=True)
    elif cmd == "time":
        print(timer.timeit(NUMBER) / NUMBER, flush=True)
""".replace("NUMBER", str(NUMBER))

# argv: setup, stmt, number of calls
CALLS = PRELUDE + r"""
exec(sys.argv[1])
exec(sys.argv[2])
timeit.Timer(sys.argv[2], globals=globals()).timeit(int(sys.argv[3]))
"""


def env_of(tree, **extra):
    return dict(os.environ, PYTHONPATH=os.path.join(tree, "src"), **extra)


def name_of(tree):
    return os.path.basename(tree.rstrip("/"))


def times(trees, repeats):
    workers = [subprocess.Popen([sys.executable, "-c", WORKER], env=env_of(t), text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE) for t in trees]
    print(f"per-call time, µs: median of {repeats} timeit repeats of {NUMBER} calls, the "
          "trees' repeats alternating; [median ratio to the first tree]")
    print(f"{'case':38s}" + "".join(f"{name_of(t):>22s}" for t in trees))
    try:
        for name, (setup, stmt) in CASES.items():
            ok = []
            for w in workers:
                w.stdin.write(f"case {setup}\t{stmt}\n")
                w.stdin.flush()
                ok.append(w.stdout.readline().startswith("ok"))
            ts = [[] for _ in workers]
            for r in range(repeats):
                order = range(len(workers)) if r % 2 == 0 else reversed(range(len(workers)))
                for k in order:
                    if ok[k]:
                        workers[k].stdin.write("time\n")
                        workers[k].stdin.flush()
                        ts[k].append(float(workers[k].stdout.readline()))
            cells = []
            for k, t in enumerate(ts):
                if not t:
                    cells.append("-")
                    continue
                cell = f"{median(t) * 1e6:.3f}"
                if k and ts[0]:
                    cell += f" [{median([a / b for a, b in zip(t, ts[0])]):.3f}]"
                cells.append(cell)
            print(f"{name:38s}" + "".join(f"{c:>22s}" for c in cells), flush=True)
    finally:
        for w in workers:
            w.stdin.close()
            w.wait()


def instructions_of(tree, setup, stmt, calls):
    # the interpreter itself, not a wrapper script (pyenv's shims are bash)
    python = os.path.realpath(sys.executable)
    r = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                        python, "-c", CALLS, setup, stmt, str(calls)],
                       env=env_of(tree, PYTHONHASHSEED="0"), capture_output=True, text=True)
    m = re.search(r"Collected : (\d+)", r.stderr)
    return int(m.group(1)) if r.returncode == 0 and m else None


def instructions(trees):
    print("instructions per call (callgrind: (Ir of 30000 calls - Ir of 10000 calls) / 20000)")
    print(f"{'case':38s}" + "".join(f"{name_of(t):>16s}" for t in trees))
    for name, (setup, stmt) in CASES.items():
        cells = []
        for t in trees:
            a = instructions_of(t, setup, stmt, 10000)
            b = instructions_of(t, setup, stmt, 30000) if a is not None else None
            cells.append("-" if b is None else f"{(b - a) / 20000:.0f}")
        print(f"{name:38s}" + "".join(f"{c:>16s}" for c in cells), flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    repeats, count = 7, False
    while args and args[0].startswith("--"):
        if args[0] == "--repeats":
            repeats, args = int(args[1]), args[2:]
        elif args[0] == "--instructions":
            count, args = True, args[1:]
        else:
            sys.exit(__doc__)
    trees = args or [os.getcwd()]
    instructions(trees) if count else times(trees, repeats)
