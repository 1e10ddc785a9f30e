"""The public surface of brownout.results, and its place in the layers."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import brownout.results
from brownout import results

CORE = {"_clock", "_validate", "errors", "events", "units", "scenario"}


def test_public_names_are_pinned_and_sorted() -> None:
    # constants first, as the project's export test accepts, each group sorted
    assert results.__all__ == sorted(results.__all__, key=lambda s: (not s.isupper(), s))
    assert set(results.__all__) == {
        "DROPPED",
        "ERROR",
        "HOUR_US",
        "OK",
        "OUTCOMES",
        "SCHEMA_VERSION",
        "SHED",
        "TIMEOUT",
        "Histogram",
        "LogInterval",
        "RunRecorder",
        "Threshold",
        "evaluate",
        "evaluate_all",
        "latency_figures",
        "load_results",
        "merge_results",
        "parse_threshold",
        "timeline_intervals",
        "validate_results",
        "write_interval_log",
        "write_results",
        "write_timeline_log",
    }
    for name in results.__all__:
        obj = getattr(results, name)
        if isinstance(obj, type) or callable(obj):
            assert obj.__module__.startswith("brownout.results._"), name


def test_results_is_core_it_imports_no_pillar() -> None:
    root = pathlib.Path(brownout.results.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 2:
                names = {a.name for a in node.names} if not node.module else {node.module}
                assert names <= CORE, f"{path.name} imports ..{node.module} {names}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] != "brownout", f"{path.name}: {alias.name}"


def test_importing_results_does_not_import_numpy() -> None:
    code = "import sys, brownout.results; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_errors_survive_pickling_across_processes() -> None:
    import pickle

    from brownout.errors import ResultsError, ThresholdError

    err = ResultsError("summary.ok", -1, "an integer >= 0", source="a.json")
    back = pickle.loads(pickle.dumps(err))
    assert (str(back), back.field, back.value, back.source) == (
        str(err),
        "summary.ok",
        -1,
        "a.json",
    )
    terr = ThresholdError("p(99) <", "it has no value")
    back_t = pickle.loads(pickle.dumps(terr))
    assert (str(back_t), back_t.text, back_t.reason) == (str(terr), terr.text, terr.reason)
