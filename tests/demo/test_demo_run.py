"""``brownout demo`` end to end, shortened: real processes, real sockets, every file written,
every process stopped."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from brownout.demo._run import DemoOptions, run_demo

pytestmark = pytest.mark.slow


def _our_children() -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return [
        line for line in out.splitlines() if "brownout.cli._serve" in line or " proxy --api" in line
    ]


def test_a_short_demo_runs_both_builds_and_writes_everything(tmp_path: Path) -> None:
    before = _our_children()
    lines: list[str] = []
    options = DemoOptions(out_dir=tmp_path, run_length_s=10.0, profile_length_s=2.0)
    result = run_demo(options, lines.append)
    for name in ("ledger", "sim", "naive", "guarded", "summary", "report"):
        assert name in result.files, (name, result.notes)
        assert result.files[name].exists(), name
    summary = json.loads((tmp_path / "summary.json").read_text())
    for variant in ("naive", "guarded"):
        assert 0.0 <= summary[variant]["people_goodput_ratio"] <= 1.0
    # Even in 10 s the guarded shop serves its people better than the naive one.
    assert summary["guarded"]["people_goodput_ratio"] > summary["naive"]["people_goodput_ratio"]
    assert summary["predicted"]["knee_rps"] is None or summary["predicted"]["knee_rps"] > 0
    # The simulated run of the naive model: the same figures, from a kind-"sim" document.
    assert 0.0 <= summary["predicted"]["people_goodput_ratio"] <= 1.0
    sim = json.loads((tmp_path / "sim.json").read_text())
    assert sim["kind"] == "sim"
    assert set(sim["by_class"]) == {"people", "scraper"}
    assert "predicted" in (tmp_path / "report.html").read_text()
    html = (tmp_path / "report.html").read_text()
    assert "naive" in html
    assert "guarded" in html
    assert any("profiling the naive shop" in line for line in lines)
    assert _our_children() == before  # every process stopped
