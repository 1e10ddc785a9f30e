"""Metastable failures, retry amplification and their mitigations (REFERENCES section 4).

The model: one server of capacity mu = 100/s, Poisson clients at lambda, a 1 s client
timeout and R = 3 immediate retries on timeout; the server keeps working on requests whose
client gave up. It is bistable above lambda* = mu / (R + 1) = 25/s: a short trigger (the
server 10x slower for 5 s) leaves it stuck with goodput ~0 and every request sent R + 1
times, while below lambda* it recovers by itself.
"""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from brownout.errors import Overloaded
from brownout.model import (
    Call,
    Client,
    Endpoint,
    Fault,
    PolicySpec,
    ServiceTime,
    SimResult,
    Station,
    Topology,
    simulate,
)

MU = 100.0
R = 3
TIMEOUT_S = 1.0
LAMBDA_STAR = MU / (R + 1)
TRIGGER = Fault(station="srv", at_s=20.0, duration_s=5.0, latency_factor=10.0)


def run(
    rate: float,
    *,
    station: dict[str, Any] | None = None,
    retry: dict[str, Any] | None = None,
    policies: tuple[PolicySpec, ...] = (),
    stages: tuple[tuple[float, float], ...] = (),
    duration_s: float = 240.0,
    seed: int = 1,
) -> SimResult:
    srv = Station.simple("srv", 1, ServiceTime.exponential(1 / MU), **(station or {}))
    client = Client(
        name="clients",
        rate=0.0 if stages else rate,
        stages=stages,
        target="srv",
        timeout_s=TIMEOUT_S,
        retry=PolicySpec("retry", {"attempts": R + 1, "base_s": 0.0, **(retry or {})}),
        retry_on=frozenset({"timeout"}),
        policies=policies,
    )
    return simulate(Topology(stations=(srv,)), client, duration_s, seed, faults=(TRIGGER,))


def tail(result: SimResult, seconds: int = 40) -> tuple[float, float]:
    """(goodput / offered, attempts / offered) over the last ``seconds`` of the run."""
    rows = result.timeline[-seconds:]
    offered = sum(r.offered for r in rows)
    return sum(r.goodput for r in rows) / offered, sum(r.attempts for r in rows) / offered


def test_below_the_boundary_the_system_recovers() -> None:
    goodput, amplification = tail(run(0.95 * LAMBDA_STAR))
    assert goodput > 0.99
    assert amplification < 1.01


def test_above_the_boundary_it_stays_stuck_with_amplification_r_plus_1() -> None:
    result = run(1.05 * LAMBDA_STAR)
    goodput, amplification = tail(result)
    assert goodput < 0.01
    assert amplification == pytest.approx(R + 1, rel=0.02)
    # Before the trigger the same load was served well: the state is metastable.
    before = result.timeline[5:20]
    assert sum(r.goodput for r in before) / sum(r.offered for r in before) > 0.99


def test_the_boundary_is_mu_over_r_plus_1_within_5_percent() -> None:
    """Bisect the rate between recovering and stuck; it lands within 5% of mu / (R + 1)."""
    low, high = 0.5 * LAMBDA_STAR, 2.0 * LAMBDA_STAR
    for _ in range(6):
        mid = (low + high) / 2
        goodput, _ = tail(run(mid))
        if goodput > 0.5:
            low = mid
        else:
            high = mid
    assert (low + high) / 2 == pytest.approx(LAMBDA_STAR, rel=0.05)


def test_lowering_the_load_does_not_help_while_lambda_times_r_plus_1_exceeds_mu() -> None:
    stuck = ((40.0, 1.5 * LAMBDA_STAR), (200.0, 1.1 * LAMBDA_STAR))
    goodput, amplification = tail(run(0.0, stages=stuck))
    assert goodput < 0.01
    assert amplification == pytest.approx(R + 1, rel=0.02)
    cured = ((40.0, 1.5 * LAMBDA_STAR), (200.0, 0.8 * LAMBDA_STAR))
    goodput, _ = tail(run(0.0, stages=cured))
    assert goodput > 0.99


MITIGATIONS: dict[str, dict[str, Any]] = {
    # A 10% retry budget (Google SRE), no floor.
    "retry budget": {
        "retry": {
            "budget": PolicySpec(
                "retry_budget", {"retry_ratio": 0.1, "min_per_s": 0.0, "window_s": 10.0}
            )
        }
    },
    # A token quota (gRPC retry throttling): failures take a token, successes give 0.1.
    "token quota": {
        "retry": {"budget": PolicySpec("retry_budget", {"type": "token_bucket", "max_tokens": 10})}
    },
    # Client-side adaptive throttling, K = 2, counting timeouts as rejections.
    "adaptive throttling": {
        "policies": (
            PolicySpec(
                "adaptive_throttle",
                {"k": 2.0, "window_s": 10.0, "rejected_on": (Overloaded, TimeoutError)},
            ),
        )
    },
    # The server drops work whose caller has given up.
    "drop expired work": {"station": {"abandoned": "drop"}},
    # LIFO while a standing queue exists.
    "adaptive LIFO": {"station": {"discipline": "adaptive_lifo"}},
}


@pytest.mark.parametrize("name", list(MITIGATIONS))
def test_each_mitigation_restores_goodput_with_amplification_at_most_1_1(name: str) -> None:
    without = tail(run(1.5 * LAMBDA_STAR))
    assert without[0] < 0.01  # the same trigger sticks without the mitigation
    goodput, amplification = tail(run(1.5 * LAMBDA_STAR, **MITIGATIONS[name]))
    assert goodput > 0.98
    assert amplification <= 1.1


def test_three_layers_of_four_attempts_send_64_calls_to_the_bottom() -> None:
    """Client -> a -> b -> c, every layer retrying 4 attempts, c failing every visit."""
    retry = PolicySpec("retry", {"attempts": 4, "base_s": 0.0})

    def layer(name: str, below: str) -> Station:
        step = Call(target=below, retry="retry", retry_on=frozenset({"error"}))
        return Station(name=name, servers=None, endpoints={"call": Endpoint(steps=(step,))})

    c = Station.simple("c", None, ServiceTime.deterministic(0.001), error_rate=1.0)
    topology = Topology(
        stations=(layer("a", "b.call"), layer("b", "c"), c), policies={"retry": retry}
    )
    client = Client(
        name="clients",
        stages=((10.0, 10.0),),
        arrival="constant",
        target="a.call",
        retry=retry,
        retry_on=frozenset({"error"}),
    )
    result = simulate(topology, client, 11.0, seed=0)
    assert result.overall.offered == 100
    assert result.overall.errors == 100
    assert result.overall.amplification == 4
    assert result.stations["b"].arrivals == 16 * 100
    assert result.stations["c"].arrivals == 64 * 100


def test_brookers_jitter_result() -> None:
    """100 writers contending on one record (one server, 10 ms, no queue: a write that finds
    it busy is refused and retried with capped exponential backoff, base 5 ms, cap 2 s).
    Exponential backoff without jitter is by far the slowest and costs the most calls; full
    jitter costs the fewest calls (within a few percent of equal jitter in this contention
    model) and finishes well before equal jitter (Brooker, "Exponential Backoff And Jitter")."""
    figures: dict[str, tuple[float, float]] = {}
    for jitter in ("none", "full", "equal", "decorrelated"):
        calls, times = [], []
        for seed in range(3):
            record = Station.simple("record", 1, ServiceTime.deterministic(0.01), max_queue=0)
            writers = Client(
                name="writers",
                stages=((0.001, 100_000.0),),
                arrival="constant",
                target="record",
                retry=PolicySpec(
                    "retry", {"attempts": 1000, "base_s": 0.005, "cap_s": 2.0, "jitter": jitter}
                ),
                retry_on=frozenset({"rejected"}),
            )
            result = simulate(Topology(stations=(record,)), writers, 600.0, seed)
            assert result.overall.ok == 100
            calls.append(result.overall.attempts)
            times.append(result.overall.latency.max_s)
        figures[jitter] = (statistics.fmean(calls), statistics.fmean(times))
    jittered = ("full", "equal", "decorrelated")
    for name in jittered:
        assert figures["none"][0] > 3 * figures[name][0]
        assert figures["none"][1] > 10 * figures[name][1]
    assert figures["full"][0] <= 1.05 * min(figures[name][0] for name in jittered)
    assert figures["full"][0] < figures["decorrelated"][0]
    assert figures["full"][1] < figures["equal"][1]
