"""The knee search: on synthetic targets of known capacity, and on a real serial server."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from brownout.cli import main
from brownout.load import KneeSearch
from brownout.results import OK, RunRecorder, load_results, parse_threshold

Server = Callable[..., str]


def synthetic_step(
    rate: float, duration_s: float, *, capacity: float, send_lag_us: int = 100
) -> dict[str, Any]:
    """The results document of a constant-rate step against a single-server FIFO queue with
    a deterministic service time ``1 / capacity`` (a D/D/1 queue, computed exactly): below
    capacity every request takes the service time; above it the backlog, and so latency and
    in-flight, grow linearly for the whole step and drain after it."""
    rec = RunRecorder([("load", 60.0)])
    ei = rec.endpoint(0, "/")
    service_s = 1.0 / capacity
    n = math.floor(rate * duration_s + 1e-9)
    arrivals = [i / rate for i in range(n)]
    ends: list[float] = []
    free_s = 0.0
    for t in arrivals:
        free_s = max(t, free_s) + service_s
        ends.append(free_s)
    i = 0
    for k in range(math.ceil(duration_s - 1e-9)):
        first = i
        while i < n and arrivals[i] < k + 1:
            t, end = arrivals[i], ends[i]
            rec.attempt(0, ei, round((end - max(t, end - service_s)) * 1e6), send_lag_us, False)
            rec.request(0, ei, OK, round((end - t) * 1e6), t)
            i += 1
        rec.offered(0, i - first)
        in_flight = sum(1 for j in range(i) if ends[j] > k + 1)
        rec.flush(k + 1, in_flight=in_flight)
    return rec.finish(duration_s=duration_s)


def search(**kw: Any) -> KneeSearch:
    args: dict[str, Any] = {
        "slo": parse_threshold("p(99) < 100ms"),
        "start_rate": 50.0,
        "max_rate": 20000.0,
        "step_s": 3.0,
        "warmup_s": 1.0,
    }
    return KneeSearch(**(args | kw))


CAPACITY = 730.0


def test_a_step_below_capacity_passes() -> None:
    ks = search()
    step = ks.judge(0.8 * CAPACITY, synthetic_step(0.8 * CAPACITY, 4.0, capacity=CAPACITY))
    assert step.passed, step.reasons
    assert step.achieved_ratio == pytest.approx(1.0, abs=0.01)
    assert step.slo_observed_ms == pytest.approx(1000 / CAPACITY, rel=0.05)
    assert step.error_ratio == 0


def test_an_overloaded_step_fails_on_achieved_rate_latency_and_growing_in_flight() -> None:
    ks = search()
    rate = 1.5 * CAPACITY
    step = ks.judge(rate, synthetic_step(rate, 4.0, capacity=CAPACITY))
    assert not step.passed
    # Completions inside the measured window run at capacity: achieved = C / rate.
    assert step.achieved_ratio == pytest.approx(CAPACITY / rate, abs=0.03)
    # The backlog grows by (rate - C) per second: in-flight rises ~ (rate - C) * step_s.
    assert step.in_flight_growth == pytest.approx((rate - CAPACITY) * 3.0, rel=0.1)
    text = " ".join(step.reasons)
    assert "achieved" in text
    assert "SLO" in text
    assert "in-flight growing" in text


def test_slight_overload_is_caught_by_growing_in_flight_alone() -> None:
    # 2% over capacity: latency stays under the SLO for the whole step and completions keep
    # up within 2%, but the backlog grows ~15 requests a second.
    ks = search()
    rate = 1.02 * CAPACITY
    step = ks.judge(rate, synthetic_step(rate, 4.0, capacity=CAPACITY))
    assert step.slo_observed_ms is not None
    assert step.slo_observed_ms < 100
    assert step.reasons == (f"in-flight growing (+{step.in_flight_growth:.0f})",)


def test_search_lands_within_10_percent_of_capacity() -> None:
    ks = search()
    rates: list[float] = []

    def run_step(rate: float, duration_s: float) -> dict[str, Any]:
        assert duration_s == pytest.approx(4.0)
        rates.append(rate)
        return synthetic_step(rate, duration_s, capacity=CAPACITY)

    result = ks.run(run_step)
    assert result.limited_by == "target"
    assert result.knee_rps is not None
    assert result.knee_rps == pytest.approx(CAPACITY, rel=0.10)
    assert result.knee_rps <= CAPACITY * 1.01
    # Geometric rise from 50 (x2) until the first failure, then bisection.
    assert rates[:5] == [50, 100, 200, 400, 800]
    assert [s.rate for s in result.steps] == rates
    doc = result.to_document()
    assert doc["knee"]["knee_rps"] == result.knee_rps
    assert doc["knee"]["limited_by"] == "target"
    assert len(doc["knee"]["steps"]) == len(rates)


def test_generator_limited_step_stops_the_search() -> None:
    generator_max = 300.0  # the generator falls behind above this rate, the target does not

    def run_step(rate: float, duration_s: float) -> dict[str, Any]:
        lag = 100 if rate <= generator_max else 50_000
        return synthetic_step(rate, duration_s, capacity=CAPACITY, send_lag_us=lag)

    result = search().run(run_step)
    assert result.limited_by == "generator"
    assert result.knee_rps == 200
    assert [s.rate for s in result.steps] == [50, 100, 200, 400]
    assert result.steps[-1].reasons[0].startswith("generator behind")


def test_max_rate_bounds_the_search() -> None:
    result = search(max_rate=300.0).run(lambda rate, d: synthetic_step(rate, d, capacity=CAPACITY))
    assert result.limited_by == "max_rate"
    assert result.knee_rps == 300
    assert [s.rate for s in result.steps] == [50, 100, 200, 300]


def test_stop_request_ends_the_search_with_what_passed() -> None:
    calls: list[float] = []

    def run_step(rate: float, duration_s: float) -> dict[str, Any]:
        calls.append(rate)
        return synthetic_step(rate, duration_s, capacity=CAPACITY)

    result = search().run(run_step, should_stop=lambda: len(calls) >= 2)
    assert result.limited_by == "interrupted"
    assert result.knee_rps == 100
    assert calls == [50, 100]


@pytest.mark.slow
def test_knee_of_a_serial_server_is_its_capacity(server: Server, tmp_path: Path) -> None:
    # One request at a time, 5 ms each: capacity exactly 200 requests per second.
    url = server("serial", "--service", "0.005")
    out = tmp_path / "knee.json"
    argv = ["knee", url, "--slo", "p(99) < 100ms", "--start-rate", "50", "--step", "2s"]
    assert main([*argv, "--warmup", "0.5s", "--out", str(out)]) == 0
    knee = load_results(out)["knee"]
    assert knee["limited_by"] == "target"
    assert knee["knee_rps"] == pytest.approx(200, rel=0.10)
