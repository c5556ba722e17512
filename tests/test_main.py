"""``python -m fastape``: the demonstration, and ``bench``, the suite shipped in the
package (``fastape._bench``), which finds the checkout's benchmarks/ folder (for the
scripts two workloads delegate to) when there is one, and runs without it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import fastape
from fastape import __main__ as cli
from fastape import _bench

CHECKOUT = Path(__file__).resolve().parents[1]


def _fake_checkout(root):
    (root / "src" / "fastape").mkdir(parents=True)
    (root / "benchmarks").mkdir()
    return root / "benchmarks"


def test_demo_prints_the_closed_form_check(capsys):
    assert cli.main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "closed form" in out and "nodes in" in out


def test_the_benchmarks_folder_is_found_beside_the_package_of_a_checkout(tmp_path):
    folder = _fake_checkout(tmp_path / "co")
    assert _bench.benchmarks_dir(environ={}, package_dir=tmp_path / "co" / "src" / "fastape",
                                 cwd=tmp_path) == folder


def test_an_installed_package_finds_the_folder_of_the_current_checkout(tmp_path):
    folder = _fake_checkout(tmp_path / "co")
    site = tmp_path / "lib" / "site-packages" / "fastape"
    assert _bench.benchmarks_dir(environ={}, package_dir=site, cwd=tmp_path / "co") == folder
    assert _bench.benchmarks_dir(environ={}, package_dir=site, cwd=tmp_path) is None


def test_the_environment_variable_wins(tmp_path):
    other = _fake_checkout(tmp_path / "other")
    given = tmp_path / "mine"
    assert _bench.benchmarks_dir(environ={_bench.BENCH_ENV: str(given)},
                                 package_dir=other.parent / "src" / "fastape",
                                 cwd=other.parent) == given


def test_bench_runs_the_packaged_suite_with_the_remaining_arguments(monkeypatch):
    seen = []
    monkeypatch.setattr(_bench, "main", lambda argv: seen.append(argv) or 7)
    assert cli.main(["bench", "--check"]) == 7
    assert seen == [["--check"]]


def test_this_checkout_is_found():
    assert _bench.benchmarks_dir(environ={}, package_dir=Path(_bench.__file__).resolve().parent,
                                 cwd=CHECKOUT) == CHECKOUT / "benchmarks"


def test_an_installed_copy_outside_a_checkout(tmp_path):
    """What a user of an installed package gets, in a folder that is no checkout: the
    demonstration runs, and ``bench`` runs the suite (its gradient checks here), skips
    what needs the checkout or an absent peer with the reason, and exits 0."""
    site = tmp_path / "site"
    shutil.copytree(Path(fastape.__file__).resolve().parent, site / "fastape",
                    ignore=shutil.ignore_patterns("__pycache__", "*.c", "*.html"))
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != _bench.BENCH_ENV}
    env["PYTHONPATH"] = str(site)

    def run(*args):
        return subprocess.run([sys.executable, "-m", "fastape", *args], cwd=work, env=env,
                              capture_output=True, text=True, timeout=300)
    r = run()
    assert r.returncode == 0, r.stderr
    assert "closed form" in r.stdout
    r = run("bench", "--check", "--only", "seeds", "rosen_loop_replay")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "fastape compiled: gradient ok" in r.stdout
    assert "C interpreter: skipped (benchmarks/c_interp.py is in fastape's source " \
        "checkout" in r.stdout
    assert list(work.iterdir()) == []       # --check writes no results
