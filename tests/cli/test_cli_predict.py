"""``brownout predict LEDGER.json``: the capacity table from a ledger, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from brownout.cli import main


def _ledger(tmp_path: Path) -> Path:
    def ep(requests: int, loop_s: float, hold_s: float) -> dict[str, Any]:
        def d(mean: float) -> dict[str, Any]:
            return {"mean": mean, "p50": mean, "p95": mean, "max": mean, "total": 0, "hist": None}

        return {
            "requests": requests,
            "demands": {
                "loop_busy_s": d(loop_s),
                "loop_steps": d(3.0),
                "pool_hold_s": d(hold_s),
                "pool_checkouts": d(1.0),
            },
        }

    doc = {
        "endpoints": {
            "GET /products": ep(300, 0.004, 0.010),
            "POST /checkout": ep(100, 0.002, 0.2),
        },
        "capacity": {"pools": {"sqlalchemy": {"shop": {"pool_size": 5, "max_overflow": 5}}}},
    }
    path = tmp_path / "ledger.json"
    path.write_text(json.dumps(doc))
    return path


def test_predict_names_the_first_resource_to_saturate_and_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "prediction.json"
    assert main(["predict", str(_ledger(tmp_path)), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    # The pool: 0.25 * 0.2 s + 0.75 * 0.01 s = 57.5 ms per request over 10 connections
    # -> 173.9 req/s; the loop: 3.5 ms per request -> 285.7 req/s. The pool goes first.
    assert "first to saturate: shop at 173.9 req/s" in text
    assert "285.7 req/s" in text
    assert "exhausted at 174 req/s on POST /checkout" in text
    data = json.loads(out.read_text())
    assert data["prediction"]["bottleneck"] == "shop"
    assert data["prediction"]["saturation_rps"] == pytest.approx(10 / 0.0575)


def test_a_mix_changes_the_answer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger = str(_ledger(tmp_path))
    assert main(["predict", ledger, "--mix", "GET /products=1", "--rate", "50"]) == 0
    # Only the product page: the loop (4 ms) saturates at 250 req/s, the pool (10 ms / 10) at 1000.
    assert "first to saturate: loop at 250.0 req/s" in capsys.readouterr().out


def test_a_topology_sets_the_capacity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Twice the connections and two workers: the pool saturates at 20 / 57.5 ms = 347.8/s,
    # the loops at 2 / 3.5 ms = 571.4/s. Stations the ledger has no resource for are ignored.
    topo = tmp_path / "t.toml"
    topo.write_text(
        "[stations.loop]\nservers = 2\nservice = '1ms'\n"
        "[stations.web]\nservers = 64\nservice = '1ms'\n"
        "[pools.db-pool]\nsize = 20\n"
    )
    assert main(["predict", str(_ledger(tmp_path)), "--topology", str(topo)]) == 0
    text = capsys.readouterr().out
    assert "shop has 20 servers" in text
    assert "loop has 2 servers" in text
    assert "first to saturate: shop at 347.8 req/s" in text
    assert "571.4 req/s" in text


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["predict", "missing.json"], "no such file"),
        (["predict", "{ledger}", "--mix", "GET /products"], "--mix"),
        (["predict", "{ledger}", "--mix", "GET /nope=1"], "mix"),
        (["predict", "{ledger}", "--rate", "-5"], "--rate"),
        (["predict", "{ledger}", "--slo", "soon"], "--slo"),
        (["predict", "{ledger}", "--topology", "missing.toml"], "missing.toml"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    ledger = str(_ledger(tmp_path))
    code = main([a.replace("{ledger}", ledger) for a in args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert needle in err


def test_not_json_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    assert main(["predict", str(bad)]) == 2
    assert "not JSON" in capsys.readouterr().err
