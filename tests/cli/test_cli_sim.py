"""``brownout sim SCENARIO --topology FILE``: the bundled example, results JSON, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from brownout.cli import main
from brownout.results import load_results

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_bundled_example_runs_and_writes_a_sim_results_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sim.json"
    code = main(
        [
            "sim",
            str(EXAMPLES / "scenario.toml"),
            "--topology",
            str(EXAMPLES / "topology.toml"),
            "--replications",
            "3",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    doc = load_results(out)
    assert doc["kind"] == "sim"
    assert doc["scenario"]["name"] == "evening-peak"
    assert set(doc["by_class"]) == {"shoppers", "scraper"}
    assert doc["duration_s"] == 180.0
    assert {f["kind"] for f in doc["faults"]} == {"latency", "http_abort", "http_delay"}
    # The exit status says whether every threshold passed, as for brownout load.
    failed = [t for t in doc["thresholds"] if not t["passed"]]
    assert code == (1 if failed else 0)
    assert "class shoppers" in printed
    assert "3 replications" in printed
    assert "send lag" not in printed  # a simulated client is never late
    reps = doc["sim"]["replications"]["estimates"]["overall.goodput_rps"]
    assert reps["low"] <= doc["summary"]["goodput_rps"] <= reps["high"] or reps["half_width"] == 0


SMALL = """
name = "small"
duration = "60s"
seed = 5
[[classes]]
name = "shoppers"
arrival = "poisson"
rate = 100
  [[classes.requests]]
  name = "product"
  path = "/products/{id}"
  keys.id = 100
"""


def test_same_seed_same_file_other_seed_other_figures(tmp_path: Path) -> None:
    scenario = tmp_path / "small.toml"
    scenario.write_text(SMALL)

    def run(name: str, *extra: str) -> dict[str, object]:
        out = tmp_path / name
        args = ["sim", str(scenario), "--topology", str(EXAMPLES / "topology.toml")]
        assert main([*args, "--quiet", "--out", str(out), *extra]) == 0
        return json.loads(out.read_text())

    a, b, c = run("a.json"), run("b.json"), run("c.json", "--seed", "99")
    assert a["summary"] == b["summary"]
    assert a["timeline"] == b["timeline"]
    assert a["summary"] != c["summary"]
    short = run("d.json", "--duration", "30s")
    assert short["duration_s"] == 30.0
    assert len(short["timeline"]) == 30


def test_sweep_draws_a_phase_diagram(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "small.toml"
    scenario.write_text(SMALL)
    out = tmp_path / "phase.json"
    args = ["sim", str(scenario), "--topology", str(EXAMPLES / "topology.toml")]
    sweep = ["--sweep-loads", "0.5,40", "--sweep-station", "web", "--sweep-factors", "20"]
    code = main([*args, *sweep, "--sweep-durations", "5s", "--workers", "2", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "trigger duration 5 s" in printed
    doc = json.loads(out.read_text())
    assert doc["kind"] == "sim_sweep"
    assert doc["loads"] == [0.5, 40.0]
    light, heavy = doc["cells"]
    # 50 req/s on 16 workers: a 20x slowdown for 5 s passes; 4,000 req/s never was healthy.
    assert light["regime"] in ("stable", "recovers")
    assert heavy["regime"] == "metastable"
    assert heavy["goodput_before"] < 0.9


def test_duration_that_cuts_a_fault_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["sim", str(EXAMPLES / "scenario.toml"), "--topology", str(EXAMPLES / "topology.toml")]
    assert main([*args, "--duration", "95s"]) == 2
    err = capsys.readouterr().err.strip()
    assert "faults[0].at_s" in err
    assert "\n" not in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--topology", "missing.toml"], "missing.toml"),
        (["--topology", "{topo}", "--scale", "0"], "--scale"),
        (["--topology", "{topo}", "--replications", "0"], "--replications"),
        (["--topology", "{topo}", "--duration", "0s"], "--duration"),
        (["--topology", "{topo}", "--out", "/nonexistent/dir/x.json"], "--out"),
        (["--topology", "{topo}", "--sweep-loads", "0.5"], "--sweep-station"),
        (
            ["--topology", "{topo}", "--sweep-loads", "x", "--sweep-station", "web"],
            "--sweep-loads",
        ),
        (
            ["--topology", "{topo}", "--sweep-loads", "1", "--sweep-station", "nope"],
            "--sweep-station='nope' is not allowed",
        ),
        (
            [
                *("--topology", "{topo}", "--sweep-loads", "1", "--sweep-station", "db"),
                *("--sweep-durations", "200s"),
            ],
            "--duration=180s is too short for this sweep: it must be at least 645s",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    topo = str(EXAMPLES / "topology.toml")
    args = [a.replace("{topo}", topo) for a in extra]
    assert main(["sim", str(EXAMPLES / "scenario.toml"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert "\n" not in err


def test_a_bad_topology_names_its_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    topo = tmp_path / "t.toml"
    topo.write_text("[stations.web]\nservers = -1\n")
    assert main(["sim", str(EXAMPLES / "scenario.toml"), "--topology", str(topo)]) == 2
    err = capsys.readouterr().err.strip()
    assert "stations.web.servers" in err
    assert "\n" not in err
