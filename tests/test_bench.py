"""The benchmark suite's correctness checks on tiny sizes (no timing assertions).

The suite (``fastape._bench``, shipped in the package; ``benchmarks/suite.py`` is its
thin entry in the checkout) compares every tool's gradient with a hand-written one
before it times anything; here that check runs for every workload of the suite at tiny
sizes, for fastape, the reference and whichever peers are installed.
"""

import math

import numpy as np
import pytest

from fastape import _bench as bench


@pytest.fixture(scope="module")
def tiny():
    return bench.run_suite(tiny=True, check_only=True, quiet=True)


def test_every_tool_passes_or_is_skipped(tiny):
    assert tiny["workloads"], "the tiny suite ran no workload"
    for w in tiny["workloads"]:
        for name, e in w["tools"].items():
            assert e["status"] in ("ok", "skipped"), f"{w['key']}/{name}: {e['note']}"
            if e["status"] == "ok":
                assert e["rel_err"] <= bench.TOL, (w["key"], name, e["rel_err"])


def test_fastape_and_reference_are_checked(tiny):
    checked = {(w["key"].split("_")[0], n) for w in tiny["workloads"]
               for n, e in w["tools"].items() if e["status"] == "ok"}
    for kind in ("seeds", "rosen", "chain", "lbfgs"):
        assert (kind, "fastape eager") in checked or (kind, "fastape Tape sweeps") in checked
        assert (kind, bench.HAND) in checked
    assert ("seeds", bench.PURE) in checked


def test_hand_written_gradients_against_finite_differences():
    """The oracle of the suite is itself checked, against central differences."""
    x = bench.rosen_x0(6) + np.linspace(0.0, 0.3, 6)
    f0, g = bench.rosen_hand(x)
    assert f0 == pytest.approx(bench.rosen_loop(x), rel=1e-12)
    h = 1e-6
    fd = [(bench.rosen_hand(x + h * e)[0] - bench.rosen_hand(x - h * e)[0]) / (2 * h)
          for e in np.eye(6)]
    np.testing.assert_allclose(g, fd, rtol=1e-6)
    for x0 in (-0.5, 0.5):
        v, d = bench.seeds_hand(x0)
        fd = (bench.seeds_hand(x0 + h)[0] - bench.seeds_hand(x0 - h)[0]) / (2 * h)
        assert d == pytest.approx(fd, rel=1e-7)
        assert v == pytest.approx(bench.seeds_f(x0, math.exp, math.sin), rel=1e-15)
    v, d = bench.chain_hand(0.7, 50)
    fd = (bench.chain_hand(0.7 + h, 50)[0] - bench.chain_hand(0.7 - h, 50)[0]) / (2 * h)
    assert d == pytest.approx(fd, rel=1e-6)


def test_a_wrong_gradient_is_reported_and_not_timed():
    wrong = bench.Case(lambda: (0.0, np.array([1.0, 2.0])))
    w = bench.Workload("w", "a workload", np.array([1.0, 2.5]), [("bad", lambda: wrong)])
    res = bench.run_workload(w, rounds=2, target_s=1e-4, max_call_s=1.0, quiet=True)
    e = res["tools"]["bad"]
    assert e["status"] == "FAILED" and "median" not in e


def test_markdown_renders(tiny):
    text = bench.markdown(tiny)
    assert "Seeds' scalar function" in text and "| tool |" in text


def test_header_and_table_say_the_same_about_thread_pinning(tiny):
    sentence = tiny["environment"]["threads"]["pinning"]
    assert sentence == bench.pinning(1)
    assert sentence in bench.markdown(tiny)
    try:
        import threadpoolctl  # noqa: F401
        assert "pinned to 1 by threadpoolctl" in sentence
    except ImportError:
        assert "threadpoolctl not installed" in sentence


def test_pinning_without_threadpoolctl_says_what_holds(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_threadpoolctl(name, *args, **kwargs):
        if name == "threadpoolctl":
            raise ImportError("hidden by the test")
        return real(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_threadpoolctl)
    for v in bench._PIN_VARS:
        monkeypatch.delenv(v, raising=False)
    assert "NOT pinned" in bench.pinning(1)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert bench.pinning(1).startswith("BLAS threads 1 through OPENBLAS_NUM_THREADS=1")
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert "NOT pinned" in bench.pinning(1)


def test_the_checkout_entry_runs_the_packaged_suite():
    import runpy
    from pathlib import Path

    entry = Path(__file__).resolve().parents[1] / "benchmarks" / "suite.py"
    ns = runpy.run_path(str(entry), run_name="not_main")
    assert ns["main"] is bench.main
