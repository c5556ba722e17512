"""Every command in an example's docstring runs as written (issue 17).

The commands are read from the docstrings, not copied here, so a docstring that
changes its command is tested with the new one. Each runs from the checkout's root
in a fresh interpreter (``sys.executable``), with the fastape under test importable,
with small arguments where the example takes them.
"""

import ast
import importlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import fastape

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
COMMAND = re.compile(r"^ {4}(python examples/\S+\.py.*)$", re.M)

# small arguments for the optional ones a docstring shows in brackets ([n], [--steps N])
SMALL = {
    "rosenbrock_lbfgs.py": ["12"],
    "two_layer_net.py": ["--steps", "20", "--png", "{tmp}/loss.png"],
    "deq_layer.py": ["--steps", "20"],
    "optimal_control_ipopt.py": ["40"],
    "sparse_least_squares.py": ["8", "60"],
    "dask_logistic_regression.py": ["--rows", "40000", "--shards", "4"],
}
# optional extras an example needs (skipped without them: CI installs .[test] only)
# what each run must print: the example did its job, not merely exited 0
EXPECT = {
    "rosenbrock_lbfgs.py": ["BLAS threads: 1", "trust-krylov", "reached f within"],
    "logistic_regression.py": ["finite differences", "max |w_fastape - w_fd|"],
    "two_layer_net.py": ["20 steps in"],
    "deq_layer.py": ["max |implicit gradient - unrolled 50 gradient|", "trained 20 steps"],
    "ridge_hyperparameter.py": ["closed form", "grid search", "gradient descent: λ ="],
    "reaction_steady_state.py": ["normalised sensitivities",
                                 "max |implicit - finite differences of solve_ivp|"],
    "optimal_control_ipopt.py": ["fastape + IPOPT: Solve_Succeeded", "lap time T ="],
    "sparse_least_squares.py": ["Jacobian at the start", "final costs differ by"],
    "dask_logistic_regression.py": ["max |w_cluster - w_single| = 0.0e+00"],
}
# optional packages an example needs: skipped without them
REQUIRES = {"optimal_control_ipopt.py": "cyipopt", "dask_logistic_regression.py": "distributed"}


def _commands(path):
    doc = ast.get_docstring(ast.parse(path.read_text()), clean=False) or ""
    return COMMAND.findall(doc)


def _run(argv, tmp_path, extra_path=()):
    env = dict(os.environ)
    # the fastape these tests import, whether installed or built in place
    path = [*extra_path, str(Path(fastape.__file__).resolve().parents[1])]
    env["PYTHONPATH"] = os.pathsep.join(path + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_every_example_has_a_command_and_a_row_here():
    names = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert names, "no examples found"
    for name in names:
        assert _commands(EXAMPLES / name), f"{name}: no `python examples/...` in its docstring"
    assert set(EXPECT) == set(names)


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_the_docstring_command_runs(name, tmp_path):
    if name in REQUIRES:
        try:
            importlib.import_module(REQUIRES[name])
        except ImportError:
            pytest.skip(f"{name} needs {REQUIRES[name]}, which is not installed")
    (command,) = _commands(EXAMPLES / name)
    optional = re.findall(r"\[([^\]]+)\]", command)
    fixed = shlex.split(re.sub(r"\[[^\]]*\]", "", command))
    assert fixed == ["python", f"examples/{name}"], command
    small = [a.format(tmp=tmp_path) for a in SMALL.get(name, [])]
    for flag in (a for a in small if a.startswith("--")):
        assert any(o.split()[0] == flag for o in optional), (name, flag, command)
    if small and not small[0].startswith("--"):
        assert optional and not optional[0].startswith("--"), (name, command)
    r = _run(fixed[1:] + small, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    for text in EXPECT[name]:
        assert text in r.stdout, (name, text, r.stdout)


def test_rosenbrock_pins_blas_through_the_environment_without_threadpoolctl(tmp_path):
    (tmp_path / "threadpoolctl.py").write_text("raise ImportError('hidden by the test')\n")
    r = _run(["examples/rosenbrock_lbfgs.py", "4"], tmp_path, extra_path=[str(tmp_path)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=1 (threadpoolctl not installed)" in r.stdout


def test_rosenbrock_compares_speed_only_between_solves_that_converged():
    spec = importlib.util.spec_from_file_location("_ex_rosen", EXAMPLES / "rosenbrock_lbfgs.py")
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)

    def solve(name, f, t, success=True):
        res = SimpleNamespace(nit=10, success=success, message="a reason")
        return {"name": name, "res": res, "time": t, "evals": "10", "f": f, "gnorm": 0.0}

    lines = ex.report([solve("ad", 1e-10, 0.1), solve("fd", 186.2, 2.0, success=False),
                       solve("hvp", 5e-9, 0.5), solve("early", 2e-3, 0.01)])
    text = "\n".join(lines)
    assert "fd: stalled at f = 186.2" in text and "early: stopped early at f = 0.002" in text
    ratios = [ln for ln in lines if "as fast as" in ln]
    assert ratios == ["  ad: 5x as fast as hvp"], ratios
