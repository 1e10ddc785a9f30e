"""The fault timeline during a real load run: a brownout proxy between the generator and a
loopback server, faults applied and removed on time, their effect visible in the timeline."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from brownout.errors import BrownoutError, ScenarioError
from brownout.faults import fault_session
from brownout.load import run_load
from brownout.scenario import parse_scenario

Server = Callable[..., str]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scenario(
    upstream: str, listen: str, faults: str, *, rate: int = 40, duration: str = "3s"
) -> str:
    return f"""
target = "http://{listen}"
duration = "{duration}"
interval = "500ms"
[[classes]]
name = "web"
rate = {rate}
timeout = "2s"
requests = [{{path = "/"}}]
[[proxies]]
name = "backend"
listen = "{listen}"
upstream = "{upstream}"
{faults}
"""


def test_a_latency_fault_shows_in_its_window_and_is_recorded_on_time(server: Server) -> None:
    upstream = server("fast").removeprefix("http://")
    listen = f"127.0.0.1:{_free_port()}"
    faults = """
[[faults]]
at = "1s"
duration = "1s"
target = "backend"
kind = "latency"
latency = "150ms"
"""
    scenario = parse_scenario(_scenario(upstream, listen, faults))
    with fault_session(scenario) as timeline:
        assert timeline is not None
        doc = run_load(scenario, faults=timeline)
    (record,) = doc["faults"]
    assert record["target"] == "backend"
    assert record["kind"] == "latency"
    assert abs(record["started_s"] - 1.0) < 0.05
    assert abs(record["ended_s"] - 2.0) < 0.05
    assert record["errors"] == []
    rows = {round(r["t_s"], 1): r for r in doc["timeline"]}
    # Requests completing inside the window waited for the toxic (it acts on the
    # keep-alive connections already open); well before and well after, they did not.
    assert rows[1.5]["latency_p50_ms"] >= 140
    assert rows[0.0]["latency_p99_ms"] < 50
    assert rows[2.5]["latency_p99_ms"] < 50
    assert doc["summary"]["errors"] == 0


def test_an_http_abort_fault_sheds_matching_requests_only_while_active(server: Server) -> None:
    upstream = server("fast").removeprefix("http://")
    listen = f"127.0.0.1:{_free_port()}"
    faults = """
[[faults]]
at = "1s"
duration = "1s"
target = "backend"
kind = "http_abort"
status = 503
retry_after = "1s"
"""
    scenario = parse_scenario(_scenario(upstream, listen, faults))
    with fault_session(scenario) as timeline:
        doc = run_load(scenario, faults=timeline)
    rows = doc["timeline"]
    shed_in = sum(r["shed"] for r in rows if 1.0 <= r["t_s"] < 2.0)
    shed_out = sum(r["shed"] for r in rows if r["t_s"] < 0.9 or r["t_s"] >= 2.1)
    assert shed_in >= 30  # ~40 requests were due inside the window
    assert shed_out == 0
    assert doc["summary"]["shed"] == shed_in
    assert doc["faults"][0]["layer"] == "http"


def test_a_fault_naming_a_proxy_the_api_lacks_stops_the_run_before_it_starts(
    server: Server,
) -> None:
    upstream = server("fast").removeprefix("http://")
    listen = f"127.0.0.1:{_free_port()}"
    with fault_session(
        parse_scenario(_scenario(upstream, listen, "", duration="1s"))
    ) as timeline:  # a proxy process with "backend" and its API
        assert timeline is not None
        api = timeline.control.api_url  # type: ignore[attr-defined]
        other = parse_scenario(
            f"""
target = "http://{listen}"
duration = "1s"
proxy_api = "{api}"
[[classes]]
name = "web"
rate = 1
requests = [{{path = "/"}}]
[[faults]]
at = "0s"
target = "payments"
kind = "down"
"""
        )
        with (
            pytest.raises(ScenarioError, match=r"faults\[0\]\.target='payments'.*'backend'"),
            fault_session(other),
        ):
            pass


def test_faults_without_any_proxy_are_refused() -> None:
    scenario = parse_scenario(
        """
target = "http://127.0.0.1:9"
duration = "1s"
[[classes]]
name = "web"
rate = 1
requests = [{path = "/"}]
[[faults]]
at = "0s"
target = "payments"
kind = "down"
"""
    )
    with (
        pytest.raises(ScenarioError, match=r"faults.*have no proxy to act on"),
        fault_session(scenario),
    ):
        pass


def test_an_unreachable_proxy_api_is_one_clear_error() -> None:
    scenario = parse_scenario(
        f"""
target = "http://127.0.0.1:9"
duration = "1s"
proxy_api = "http://127.0.0.1:{_free_port()}"
[[classes]]
name = "web"
rate = 1
requests = [{{path = "/"}}]
[[faults]]
at = "0s"
target = "payments"
kind = "down"
"""
    )
    with pytest.raises(BrownoutError, match=r"127\.0\.0\.1"), fault_session(scenario):
        pass


def test_the_cli_runs_the_timeline_and_writes_the_faults(server: Server, tmp_path: Path) -> None:
    upstream = server("fast").removeprefix("http://")
    listen = f"127.0.0.1:{_free_port()}"
    faults = """
[[faults]]
at = "500ms"
duration = "500ms"
target = "backend"
kind = "down"
"""
    path = tmp_path / "s.toml"
    path.write_text(_scenario(upstream, listen, faults, rate=20, duration="1500ms"))
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "brownout", "load", str(path), "--quiet", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    (record,) = doc["faults"]
    assert record["kind"] == "down"
    assert abs(record["started_s"] - 0.5) < 0.05
    assert abs(record["ended_s"] - 1.0) < 0.05
    # While the proxy was down, requests failed; before and after, they went through.
    rows = doc["timeline"]
    assert sum(r["errors"] for r in rows if 0.5 <= r["t_s"] < 1.0) > 0
    assert sum(r["ok"] for r in rows if r["t_s"] >= 1.0) > 0
