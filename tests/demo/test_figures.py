"""The demo's figures from results documents."""

from __future__ import annotations

from typing import Any

from brownout.demo._figures import (
    knee_from_ramp,
    people_goodput_ratio,
    people_p99_ms,
    recovery_s,
)


def row(t: float, offered: int, goodput: int, p99: float | None = 50.0) -> dict[str, Any]:
    return {"t_s": t, "dt_s": 1.0, "offered": offered, "goodput": goodput, "latency_p99_ms": p99}


def test_people_goodput_ratio_and_p99_read_the_people_class() -> None:
    doc = {
        "by_class": {
            "people": {"offered": 200, "goodput": 150, "latency_ms": {"p99": 812.5}},
            "scraper": {"offered": 1000, "goodput": 0, "latency_ms": {"p99": 5.0}},
        }
    }
    assert people_goodput_ratio(doc) == 0.75
    assert people_p99_ms(doc) == 812.5
    assert people_goodput_ratio({"by_class": {}}) is None
    assert people_goodput_ratio({"by_class": {"people": {"offered": 0, "goodput": 0}}}) is None


def test_recovery_is_the_first_of_three_healthy_intervals_after_the_fault() -> None:
    rows = [row(t, 100, 100) for t in range(10)]  # healthy before the fault
    rows += [row(10, 100, 10), row(11, 100, 95), row(12, 100, 20)]  # one good second: no
    rows += [row(13, 100, 91), row(14, 100, 99), row(15, 100, 100), row(16, 100, 100)]
    assert recovery_s({"timeline": rows}, fault_end_s=10.0) == 3.0


def test_recovery_is_none_when_goodput_never_comes_back() -> None:
    rows = [row(t, 100, 30) for t in range(10, 30)]
    assert recovery_s({"timeline": rows}, fault_end_s=10.0) is None


def test_recovery_is_zero_when_the_fault_did_no_lasting_harm() -> None:
    rows = [row(t, 60, 60) for t in range(0, 30)]
    assert recovery_s({"timeline": rows}, fault_end_s=12.5) == 0.0


def test_recovery_ignores_the_drain_after_the_schedule() -> None:
    rows = [row(10, 100, 100), row(11, 100, 100), row(12, 0, 0), row(13, 0, 0)]
    assert recovery_s({"timeline": rows}, fault_end_s=10.0) is None  # only two intervals
    rows.insert(2, row(11.5, 100, 100))
    assert recovery_s({"timeline": rows}, fault_end_s=10.0) == 0.0


def test_knee_is_the_scheduled_rate_where_two_intervals_in_a_row_fail() -> None:
    def rate_at(t: float) -> float:
        return 10.0 * t  # a ramp: 10 req/s more each second

    rows = [row(t, 10 * t, 10 * t) for t in range(1, 8)]
    rows[3] = row(4, 40, 30)  # a lone bad interval is noise
    rows += [row(8, 80, 60), row(9, 90, 55), row(10, 100, 40)]
    assert knee_from_ramp({"timeline": rows}, rate_at, ramp_end_s=11, slo_ms=1000) == 80.0


def test_knee_counts_latency_over_the_slo_as_failing() -> None:
    rows = [row(t, 10, 10, p99=100.0) for t in range(1, 6)]
    rows += [row(6, 10, 10, p99=1500.0), row(7, 10, 10, p99=2000.0)]
    assert knee_from_ramp({"timeline": rows}, lambda t: t, ramp_end_s=8, slo_ms=1000) == 6.0


def test_no_knee_when_the_ramp_holds() -> None:
    rows = [row(t, 10, 10) for t in range(1, 10)]
    assert knee_from_ramp({"timeline": rows}, lambda t: t, ramp_end_s=10, slo_ms=1000) is None
