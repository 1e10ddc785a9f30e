"""``brownout load`` and ``brownout merge`` end to end, against loopback test servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from brownout.cli import main
from brownout.results import Histogram, load_results

Server = Callable[..., str]
DEAD_URL = "http://127.0.0.1:9/"  # never contacted: every case fails before sending


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("brownout: error:"), err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["load", DEAD_URL, "--rate", "fast"], "--rate"),
        (["load", DEAD_URL, "--duration", "3x"], "--duration"),
        (["load", DEAD_URL, "--duration", "0s"], "--duration"),
        (["load", DEAD_URL, "--timeout", "0s"], "--timeout"),
        (["load", DEAD_URL, "--segment", "5/4"], "--segment"),
        (["load", DEAD_URL, "--segment", "two"], "--segment"),
        (["load", DEAD_URL, "--workers", "0"], "--workers"),
        (["load", DEAD_URL, "--threshold", "p(99) << 3ms"], "--threshold"),
        (["load", "http://10.1.2.3:8080/", "--rate", "10"], "--allow-host"),
        (["load", "no-such-scenario.toml"], "no-such-scenario.toml"),
        (["knee", DEAD_URL, "--slo", "rate(errors) < 1%"], "--slo"),
        (["knee", DEAD_URL, "--slo", "p(99) < 1s", "--start-rate", "0"], "--start-rate"),
        (["knee", DEAD_URL, "--slo", "p(99) < 1s", "--step", "0s"], "--step"),
    ],
)
def test_bad_flag_gives_one_line_naming_it_and_exit_2(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert named in _one_error_line(capsys)


def test_rate_with_a_scenario_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text(_two_class_toml(DEAD_URL.rstrip("/"), human=1, bot=1))
    assert main(["load", str(scenario), "--rate", "10"]) == 2
    assert "--rate" in _one_error_line(capsys)


def test_scenario_file_with_an_error_names_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "broken.toml"
    scenario.write_text(
        _two_class_toml(DEAD_URL.rstrip("/"), human=1, bot=1).replace(
            'duration = "1s"', 'duration = "forever"'
        )
    )
    assert main(["load", str(scenario)]) == 2
    line = _one_error_line(capsys)
    assert "broken.toml" in line
    assert "duration" in line
    assert "forever" in line


def test_merge_of_a_non_results_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": "world"}))
    assert main(["merge", str(other), "-o", str(tmp_path / "m.json")]) == 2
    line = _one_error_line(capsys)
    assert "other.json" in line
    assert "schema_version" in line
    assert not (tmp_path / "m.json").exists()


def test_quick_form_writes_valid_results_and_prints_a_summary(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server("fast")
    out = tmp_path / "r.json"
    code = main(["load", url, "--rate", "200", "--duration", "1s", "--out", str(out), "--quiet"])
    assert code == 0
    doc = load_results(out)
    s = doc["summary"]
    assert s["offered"] == 200
    assert s["ok"] == s["sent"] == 200
    assert s["latency_ms"]["p99"] is not None
    stdout = capsys.readouterr().out
    all_line = next(ln for ln in stdout.splitlines() if ln.startswith("all "))
    assert all_line.split()[1:3] == ["200", "200"]  # offered, ok
    assert str(out) in stdout


def test_passing_threshold_exits_0(server: Server, tmp_path: Path) -> None:
    url = server("fast")
    out = tmp_path / "r.json"
    argv = ["load", url, "--rate", "50", "--duration", "1s", "--quiet", "--out", str(out)]
    assert main([*argv, "--threshold", "rate(errors) < 1%"]) == 0
    (t,) = load_results(out)["thresholds"]
    assert t["passed"] is True
    assert t["observed"] == 0


def test_failing_threshold_exits_1_and_records_what_was_observed(
    server: Server, tmp_path: Path
) -> None:
    url = server("delay", "--delay", "0.02")
    out = tmp_path / "r.json"
    argv = ["load", url, "--rate", "50", "--duration", "1s", "--quiet", "--out", str(out)]
    assert main([*argv, "--threshold", "p(99) < 1ms"]) == 1
    (t,) = load_results(out)["thresholds"]
    assert t["expr"] == "p(99) < 1ms"
    assert t["passed"] is False
    assert t["observed"] >= 20.0  # the server's 20 ms delay, in ms


def _two_class_toml(target: str, *, human: int, bot: int) -> str:
    return f"""
name = "two-classes"
target = "{target}"
duration = "1s"
seed = 7

[defaults]
timeout = "1s"

[[classes]]
name = "human"
kind = "human"
rate = {human}

  [[classes.requests]]
  path = "/page"

[[classes]]
name = "bot"
kind = "bot"
rate = {bot}

  [[classes.requests]]
  path = "/api"
"""


def test_scenario_form_counts_each_class(server: Server, tmp_path: Path) -> None:
    # examples/scenario.toml targets a fixed port for 3 minutes: not safe to run here.
    url = server("fast")
    scenario = tmp_path / "s.toml"
    scenario.write_text(_two_class_toml(url, human=30, bot=120))
    out = tmp_path / "r.json"
    assert main(["load", str(scenario), "--quiet", "--out", str(out)]) == 0
    doc = load_results(out)
    assert doc["by_class"]["human"]["offered"] == 30
    assert doc["by_class"]["bot"]["offered"] == 120
    assert doc["summary"]["offered"] == 150
    assert doc["by_endpoint"]["bot//api"]["ok"] == 120


def _brownout(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "brownout", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_segments_merge_into_the_whole_run(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server("fast")
    start = f"{time.time() + 1.5:.3f}"  # both processes import and wait for it
    a, b, merged = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "m.json"
    common = [url, "--rate", "200", "--duration", "1s", "--quiet", "--start-at", start]
    procs = [
        _brownout("load", *common, "--segment", f"{k}/2", "--out", str(path))
        for k, path in ((1, a), (2, b))
    ]
    for p in procs:
        _, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
    docs = [load_results(a), load_results(b)]
    assert [d["summary"]["offered"] for d in docs] == [100, 100]
    assert main(["merge", str(a), str(b), "-o", str(merged)]) == 0
    m = load_results(merged)
    assert m["summary"]["offered"] == 200
    assert m["summary"]["ok"] == 200
    # The merged p99 is that of the merged histograms (never an average of percentiles).
    key = next(k for k in m["histograms"] if k.startswith("response"))
    whole = Histogram.decode(docs[0]["histograms"][key])
    whole.merge(Histogram.decode(docs[1]["histograms"][key]))
    assert whole.count == 200
    assert m["summary"]["latency_ms"]["p99"] == pytest.approx(
        whole.value_at_percentile(99) / 1000, abs=0.002
    )
    assert "merged 2 results" in capsys.readouterr().out


def test_hdr_log_is_an_hdrhistogram_interval_log(server: Server, tmp_path: Path) -> None:
    url = server("fast")
    log = tmp_path / "r.hlog"
    argv = ["load", url, "--rate", "100", "--duration", "1s", "--quiet", "--hdr-log", str(log)]
    assert main(argv) == 0
    lines = log.read_text().splitlines()
    assert lines[0].startswith("#[Histogram log format version")
    data = [ln for ln in lines if not ln.startswith(("#", '"StartTimestamp"'))]
    assert data
    for ln in data:
        head = ln.split(",", 1)[0]
        assert head.startswith("Tag=") or head.replace(".", "", 1).isdigit(), ln
        assert "HISTFAAA" in ln
        assert Histogram.decode(ln.rsplit(",", 1)[1]).count >= 0


@pytest.mark.skipif(os.name != "posix", reason="SIGINT delivery to a child needs POSIX")
def test_ctrl_c_stops_cleanly_and_writes_partial_results(server: Server, tmp_path: Path) -> None:
    url = server("fast")
    out = tmp_path / "r.json"
    proc = _brownout("load", url, "--rate", "100", "--duration", "30s", "--out", str(out), "-q")
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("brownout load did not stop within 10 s of Ctrl-C")
    assert proc.returncode in (0, 1, 130), err
    doc = load_results(out)
    assert doc.get("interrupted") is True
    assert 0 < doc["summary"]["offered"] < 3000
    assert doc["summary"]["ok"] == doc["summary"]["offered"]


def test_an_unwritable_out_path_is_refused_before_any_load_is_sent(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from brownout.cli import main

    missing = tmp_path / "no" / "such" / "r.json"
    # Port 9 on loopback: nothing may be sent there at all; the check must come first.
    code = main(
        [
            "load",
            "http://127.0.0.1:9/",
            "--rate",
            "10",
            "--duration",
            "1s",
            "--out",
            str(missing),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "--out=" in err
    assert "does not exist" in err
