"""``python -m fastape``: the demonstration, and how ``bench`` finds the suite that
lives in the source checkout's benchmarks/ folder rather than in the package."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import fastape
from fastape import __main__ as cli

CHECKOUT = Path(__file__).resolve().parents[1]


def _fake_checkout(root):
    (root / "src" / "fastape").mkdir(parents=True)
    (root / "benchmarks").mkdir()
    suite = root / "benchmarks" / "suite.py"
    suite.write_text("def main(argv):\n    return 7 if argv == ['--check'] else 8\n")
    return suite


def test_demo_prints_the_closed_form_check(capsys):
    assert cli.main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "closed form" in out and "nodes in" in out


def test_the_suite_is_found_beside_the_package_of_a_checkout(tmp_path):
    suite = _fake_checkout(tmp_path / "co")
    path, msg = cli.find_suite(environ={}, package_dir=tmp_path / "co" / "src" / "fastape",
                               cwd=tmp_path)
    assert path == suite and msg is None


def test_an_installed_package_finds_the_suite_of_the_current_checkout(tmp_path):
    suite = _fake_checkout(tmp_path / "co")
    site = tmp_path / "lib" / "site-packages" / "fastape"
    path, _ = cli.find_suite(environ={}, package_dir=site, cwd=tmp_path / "co")
    assert path == suite


def test_the_environment_variable_wins_and_may_name_the_folder_or_the_file(tmp_path):
    suite = _fake_checkout(tmp_path / "co")
    other = _fake_checkout(tmp_path / "other")
    for given in (suite.parent, suite):
        path, _ = cli.find_suite(environ={cli.BENCH_ENV: str(given)},
                                 package_dir=other.parents[1] / "src" / "fastape",
                                 cwd=other.parents[1])
        assert path == suite


def test_outside_a_checkout_bench_explains_where_the_suite_lives(tmp_path, monkeypatch,
                                                                 capsys):
    monkeypatch.delenv(cli.BENCH_ENV, raising=False)
    monkeypatch.setattr(cli, "__file__", str(tmp_path / "site" / "fastape" / "__main__.py"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["bench", "--full"]) == 2
    err = capsys.readouterr().err
    assert "benchmarks/" in err and "source checkout" in err and cli.BENCH_ENV in err


def test_a_wrong_environment_variable_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(cli.BENCH_ENV, str(tmp_path / "nowhere"))
    assert cli.main(["bench"]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_bench_runs_the_located_suite_with_the_remaining_arguments(tmp_path, monkeypatch):
    suite = _fake_checkout(tmp_path / "co")
    monkeypatch.setenv(cli.BENCH_ENV, str(suite.parent))
    assert cli.main(["bench", "--check"]) == 7


def test_this_checkout_is_found_and_the_package_has_no_bench_module():
    path, _ = cli.find_suite(environ={}, package_dir=Path(fastape.__file__).resolve().parent,
                             cwd=CHECKOUT)
    assert path == CHECKOUT / "benchmarks" / "suite.py"
    assert not (Path(fastape.__file__).parent / "bench.py").exists()


def test_an_installed_copy_outside_a_checkout(tmp_path):
    """What a user of an installed package gets, in a folder that is no checkout: the
    demonstration runs, and ``bench`` explains itself with exit code 2, no traceback."""
    site = tmp_path / "site"
    shutil.copytree(Path(fastape.__file__).resolve().parent, site / "fastape",
                    ignore=shutil.ignore_patterns("__pycache__", "*.c", "*.html"))
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != cli.BENCH_ENV}
    env["PYTHONPATH"] = str(site)

    def run(*args):
        return subprocess.run([sys.executable, "-m", "fastape", *args], cwd=work, env=env,
                              capture_output=True, text=True, timeout=120)
    r = run()
    assert r.returncode == 0, r.stderr
    assert "closed form" in r.stdout
    r = run("bench", "--full")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "benchmarks/suite.py" in r.stderr
    assert r.stdout == ""
