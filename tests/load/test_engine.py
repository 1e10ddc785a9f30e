"""The load engine against purpose-built loopback servers whose behaviour is known."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from brownout.errors import ScenarioError
from brownout.load import parse_target, run_load
from brownout.scenario import RetrySpec, quick_scenario

pytestmark = pytest.mark.slow

Server = Callable[..., str]


def test_constant_delay_server_shows_its_delay_as_service_time(server: Server) -> None:
    url = server("delay", "--delay", "0.02")
    doc = run_load(quick_scenario(url, rate=100, duration_s=2.0, timeout_s=1.0))
    s = doc["summary"]
    assert s["ok"] == s["offered"] == 200
    assert 20.0 <= s["service_ms"]["p50"] <= 24.0
    assert s["latency_ms"]["p50"] == pytest.approx(s["service_ms"]["p50"], abs=2.0)
    assert s["send_lag_ms"]["p99"] < 10.0


def test_achieved_rate_matches_the_target_when_nothing_saturates(server: Server) -> None:
    url = server("fast")
    doc = run_load(quick_scenario(url, rate=500, duration_s=2.0, timeout_s=1.0))
    s = doc["summary"]
    assert abs(s["offered"] - 1000) <= 1
    assert s["sent"] == s["offered"]
    assert s["ok"] == s["offered"]
    assert s["throughput_rps"] == pytest.approx(500, rel=0.01)


def test_stalling_server_p99_matches_its_analytic_value(server: Server) -> None:
    # The server holds every response during [k*P, k*P + S). At a constant rate, requests
    # intended inside a stall wait until its end: P(latency > x) = (S - x) / P for x <= S,
    # so p99 = S - 0.01 * P. Over a whole number of periods the phase does not matter.
    stall, period = 0.25, 1.0
    url = server("stall", "--stall", str(stall), "--period", str(period))
    doc = run_load(quick_scenario(url, rate=200, duration_s=4.0, timeout_s=2.0))
    truth_ms = (stall - 0.01 * period) * 1000
    assert doc["summary"]["latency_ms"]["p99"] == pytest.approx(truth_ms, rel=0.10)
    # Service time hides the stall for most requests: only requests *sent* during a stall
    # see it, and CO-corrected response time is what users felt.
    assert doc["summary"]["latency_ms"]["p90"] > 100


def test_client_retries_are_real_requests_and_are_counted(server: Server) -> None:
    url = server("status", "--status", "503")
    base = quick_scenario(url, rate=50, duration_s=1.0, timeout_s=1.0)
    retry = RetrySpec(
        mode="immediate", attempts=3, base_s=0.0, cap_s=0.0, on_status=frozenset({503})
    )
    cls = dataclasses.replace(base.classes[0], retry=retry)
    doc = run_load(dataclasses.replace(base, classes=(cls,)))
    s = doc["summary"]
    assert s["offered"] == 50
    assert s["retries"] == 2 * s["offered"]
    assert s["sent"] == 3 * s["offered"]
    assert s["shed"] == s["offered"]


def test_timeouts_are_counted_at_the_client_timeout(server: Server) -> None:
    url = server("delay", "--delay", "1.0")
    doc = run_load(quick_scenario(url, rate=20, duration_s=1.0, timeout_s=0.1))
    s = doc["summary"]
    assert s["timeouts"] == s["offered"] == 20
    assert s["ok"] == 0
    assert 100 <= s["latency_ms"]["p50"] <= 130


def test_in_flight_cap_drops_instead_of_queueing(server: Server) -> None:
    url = server("delay", "--delay", "0.5")
    base = quick_scenario(url, rate=100, duration_s=1.0, timeout_s=2.0)
    cls = dataclasses.replace(base.classes[0], max_in_flight=10)
    doc = run_load(dataclasses.replace(base, classes=(cls,)))
    s = doc["summary"]
    assert s["offered"] == 100
    assert s["dropped"] + s["ok"] == s["offered"]
    assert 10 <= s["ok"] <= 25  # at most 10 in flight, each 0.5 s, over ~1.5 s
    assert s["dropped"] >= 70


def test_a_saturated_generator_reports_its_send_lag(server: Server) -> None:
    url = server("fast")
    doc = run_load(quick_scenario(url, rate=200_000, duration_s=0.5, timeout_s=5.0))
    assert doc["summary"]["send_lag_ms"]["p99"] > 20.0


def test_two_workers_split_one_schedule_exactly(server: Server) -> None:
    url = server("fast")
    scenario = quick_scenario(url, rate=300, duration_s=1.0, timeout_s=1.0)
    doc = run_load(scenario, workers=2)
    assert doc["summary"]["offered"] == 300
    assert doc["summary"]["ok"] == 300


@pytest.mark.parametrize("url", ["http://10.1.2.3:80/", "http://example.com/", "ftp://127.0.0.1/"])
def test_only_loopback_targets_unless_allowed(url: str) -> None:
    with pytest.raises(ScenarioError):
        parse_target(url)


def test_a_named_host_is_allowed() -> None:
    assert parse_target("http://10.1.2.3:8080/api", allow_hosts=("10.1.2.3",)).port == 8080


def test_an_abort_on_fail_threshold_stops_the_run_early(server: Server) -> None:
    from brownout.results import parse_threshold

    url = server("delay", "--delay", "0.05")
    abort = (parse_threshold("p(99) < 1ms", abort_on_fail=True),)
    doc = run_load(quick_scenario(url, rate=100, duration_s=10.0, timeout_s=1.0), abort_on=abort)
    assert doc["aborted"][0]["expr"] == "p(99) < 1ms"
    assert doc["summary"]["offered"] < 400  # stopped after the first interval or two, not 1000
