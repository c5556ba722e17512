"""benchmarks/bench_compare.py on tiny sizes: a tree against itself, in subprocesses
(no timing assertions; bytes per node are exact, so their ratio is)."""

import importlib.util
import json
from pathlib import Path

import pytest

import fastape

COMPARE = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_compare.py"
_spec = importlib.util.spec_from_file_location("bench_compare", COMPARE)
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)
SRC = Path(fastape.__file__).resolve().parents[1]
TINY = ["--n", "20", "--target-ms", "0.5", "--repeats", "1"]


def test_a_tree_against_itself(tmp_path, capsys):
    out = tmp_path / "cmp.json"
    rc = compare.main(["--before", str(SRC), "--after", str(SRC), "--rounds", "1",
                       "--warmup", "0", "--json", str(out), *TINY])
    assert rc == 0
    res = json.loads(out.read_text())
    assert set(res["metrics"]) == {key for key, *_ in compare.METRICS}
    for key, m in res["metrics"].items():
        assert "error" not in m, (key, m)
        assert m["ratio"]["median"] > 0
    for key in ("compiled_bytes_per_node", "tape_bytes_per_node"):
        assert res["metrics"][key]["ratio"] == {"median": 1.0, "min": 1.0, "max": 1.0}
    for name in ("before", "after"):
        assert Path(res["trees"][name]["fastape_file"]).is_relative_to(SRC)
        assert len(res["samples"][name]) == 1
    assert res["trees"]["before"]["tape_nodes"] == res["trees"]["after"]["tape_nodes"] > 8 * 19
    table = capsys.readouterr().out
    assert "| workload | before | after |" in table and "FAILED" not in table


def test_the_worker_refuses_a_fastape_from_another_tree(tmp_path):
    with pytest.raises(SystemExit, match="not from the tree"):
        compare.Worker(str(tmp_path), 20, 1e-4)


def test_a_folder_without_fastape_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        compare.main(["--before", str(tmp_path), "--after", str(SRC), *TINY])


FAKE = '''"""A fastape that lacks compile and Tape and returns wrong gradients."""
__version__ = "0-wrong"


def value_and_grad(f):
    return lambda x: (f(x), 0.0 * x)
'''


def test_a_wrong_or_incomplete_tree_is_failed_not_timed(tmp_path, capsys):
    (tmp_path / "fastape").mkdir()
    (tmp_path / "fastape" / "__init__.py").write_text(FAKE)
    out = tmp_path / "cmp.json"
    rc = compare.main(["--before", str(SRC), "--after", str(tmp_path), "--rounds", "1",
                       "--warmup", "0", "--json", str(out), *TINY])
    assert rc == 1
    metrics = json.loads(out.read_text())["metrics"]
    for key in compare.TIMED | {"compiled_bytes_per_node", "tape_bytes_per_node"}:
        assert "error" in metrics[key] and "after:" in metrics[key]["error"], key
    assert "relative error" in metrics["rosen_eager_vg"]["error"]
    assert "compile" in metrics["rosen_compiled_vg"]["error"]
    assert "FAILED" in capsys.readouterr().out
