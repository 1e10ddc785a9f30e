"""Limit algorithms: their update rules one by one, and their behaviour against a simulated
service of known capacity (a discrete-event simulation in virtual time, no clock at all)."""

from __future__ import annotations

import heapq
import itertools
import math
import random
import re
import statistics
from collections import deque
from dataclasses import dataclass
from typing import Any

import pytest

from brownout.errors import InvalidConfig
from brownout.guard._limit import (
    MIN_RTT_S,
    AIMDLimit,
    FixedLimit,
    Gradient2Limit,
    LimitAlgorithm,
    LimitEstimator,
    VegasLimit,
    _Window,
)


def start(algorithm: LimitAlgorithm, initial: int = 20, seed: int = 0, **bounds: int) -> Any:
    return algorithm.new_estimator(
        initial_limit=initial,
        min_limit=bounds.get("min_limit", 1),
        max_limit=bounds.get("max_limit", 1000),
        rng=random.Random(seed),
    )


class Feeder:
    """Feeds samples to an estimator with a clock that moves by each sample's rtt (and a
    hair more, against rounding), so a one-sample window always spans its round trip."""

    def __init__(self, estimator: LimitEstimator) -> None:
        self.est = estimator
        self.now = 0.0

    def feed(self, rtt_s: float, in_flight: int, dropped: bool = False, times: int = 1) -> int:
        for _ in range(times):
            self.now += rtt_s * 1.001
            self.est.update(rtt_s, in_flight, dropped, self.now)
        return self.est.limit


# -- the window -----------------------------------------------------------------------


def test_window_closes_after_enough_samples_spanning_its_own_round_trip() -> None:
    w = _Window(3)
    w.reset(0.0)
    assert not w.add(0.010, 4, False, 0.011)
    assert not w.add(0.010, 6, False, 0.012)
    # three samples, but only 9 ms elapsed of a 10 ms average round trip
    assert not w.add(0.010, 5, False, 0.009)
    assert w.add(0.010, 5, False, 0.010)
    assert (w.count, w.max_in_flight, w.dropped) == (4, 6, False)
    assert w.avg_rtt == pytest.approx(0.010)


def test_window_keeps_tiny_round_trips_out_of_the_average_but_counts_them() -> None:
    w = _Window(2)
    w.reset(0.0)
    w.add(MIN_RTT_S / 2, 1, True, 1.0)
    assert w.add(0.02, 1, False, 1.0)
    assert (w.count, w.rtt_n, w.dropped) == (2, 1, True)
    assert w.avg_rtt == pytest.approx(0.02)
    w.reset(1.0)
    assert (w.count, w.avg_rtt, w.dropped) == (0, 0.0, False)


# -- fixed -----------------------------------------------------------------------------


def test_fixed_never_moves() -> None:
    f = Feeder(start(FixedLimit(), initial=7))
    assert f.feed(0.01, 7, times=50) == 7
    assert f.feed(9.0, 7, dropped=True, times=50) == 7


# -- AIMD ------------------------------------------------------------------------------


def test_aimd_adds_about_one_per_round_of_samples_while_in_use() -> None:
    f = Feeder(start(AIMDLimit(), initial=10))
    assert f.feed(0.01, 10, times=9) == 10
    assert f.feed(0.01, 10) == 11  # 10 samples of +1/10
    assert f.feed(0.01, 6, times=11) == 12  # in_flight * 2 >= limit still counts


def test_aimd_holds_while_less_than_half_is_in_use() -> None:
    f = Feeder(start(AIMDLimit(), initial=10))
    assert f.feed(0.01, 4, times=100) == 10


@pytest.mark.parametrize(("limit", "after"), [(100, 90), (10, 9), (5, 4), (3, 2), (2, 1), (1, 1)])
def test_aimd_backs_off_by_the_ratio_and_at_least_one(limit: int, after: int) -> None:
    f = Feeder(start(AIMDLimit(), initial=limit))
    assert f.feed(0.01, limit, dropped=True) == after


def test_aimd_counts_a_round_trip_over_the_timeout_as_a_drop() -> None:
    f = Feeder(start(AIMDLimit(timeout_s=0.5), initial=20))
    assert f.feed(0.4, 20) == 20
    assert f.feed(0.6, 20) == 18


def test_aimd_answers_drops_from_one_round_once() -> None:
    est = start(AIMDLimit(backoff_ratio=0.5), initial=40)
    est.update(0.1, 40, True, 10.0)  # started at 9.9: the first drop of the round
    assert est.limit == 20
    est.update(0.2, 40, True, 10.05)  # started at 9.85, before the decrease: ignored
    assert est.limit == 20
    est.update(0.02, 20, True, 10.04)  # started at 10.02, after it: a new signal
    assert est.limit == 10


def test_aimd_respects_the_bounds() -> None:
    f = Feeder(start(AIMDLimit(), initial=5, min_limit=4, max_limit=6))
    assert f.feed(0.01, 6, times=100) == 6
    assert f.feed(0.01, 6, dropped=True, times=5) == 4


# -- Vegas -----------------------------------------------------------------------------


def vegas(initial: int = 20, **kwargs: Any) -> Feeder:
    return Feeder(start(VegasLimit(window_samples=1, **kwargs), initial=initial))


@pytest.mark.parametrize(
    ("rtt_noload", "queue", "after"),
    [
        (0.02, 0, 26),  # queue <= lg (1): grow by beta = 6 * lg
        (0.0185, 2, 21),  # queue < alpha (3): grow by lg
        (0.0155, 5, 20),  # alpha <= queue <= beta (6): hold
        (0.0115, 9, 19),  # queue > beta: shrink by lg
    ],
)
def test_vegas_moves_by_the_estimated_queue(rtt_noload: float, queue: int, after: int) -> None:
    f = vegas(initial=20)
    f.feed(rtt_noload, 20)  # the first window only sets the no-load RTT
    assert f.est.limit == 20
    assert f.est.rtt_noload == rtt_noload
    assert math.ceil(20 * (1 - rtt_noload / 0.02)) == queue
    assert f.feed(0.02, 20) == after


def test_vegas_steps_grow_with_log10_of_the_limit() -> None:
    f = vegas(initial=150)
    f.feed(0.02, 150)
    assert f.feed(0.02, 150) == 162  # lg = 2: beta = 12
    f = vegas(initial=150)
    f.feed(0.005, 150)
    assert f.feed(0.02, 150) == 148  # queue 113 > beta: shrink by lg = 2


def test_vegas_shrinks_on_a_drop_and_holds_when_app_limited() -> None:
    f = vegas(initial=20)
    f.feed(0.02, 20)
    assert f.feed(0.02, 20, dropped=True) == 19
    assert f.feed(0.02, 9) == 19  # 9 * 2 < 19: app-limited


def test_vegas_smoothing_takes_part_of_the_step() -> None:
    f = vegas(initial=20, smoothing=0.5)
    f.feed(0.02, 20)
    f.feed(0.025, 20)  # higher than the no-load RTT: queue 4, hold
    assert f.feed(0.02, 20) == 23  # half of +6


def test_vegas_probe_pins_half_and_measures_the_cohort_admitted_under_it() -> None:
    rng_jitter = random.Random(0).uniform(0.5, 1.0)
    f = vegas(initial=20, probe_multiplier=1)
    f.feed(0.02, 20)
    est = f.est
    due = math.ceil(rng_jitter * 20)
    # app-limited samples keep the limit at 20 while they count toward the probe
    for _ in range(due - 2):
        f.feed(0.02, 5)
    assert (est.limit, est.probing) == (20, False)
    f.feed(0.02, 5)
    t0 = f.now
    assert (est.limit, est.probing) == (10, True)
    unit = 0.02
    est.update(0.05, 20, False, t0 + 0.01)  # admitted before the probe: not in the cohort
    est.update(0.005, 11, False, t0 + 0.015)  # admitted above the pin: not in the cohort
    est.update(0.004, 10, False, t0 + 0.02)  # in the cohort
    est.update(0.006, 8, False, t0 + 0.03)  # in the cohort
    assert est.limit == 10
    est.update(0.008, 9, False, t0 + 2 * unit + 0.001)  # the cohort is complete: restored
    assert (est.limit, est.probing) == (20, True)
    est.update(0.02, 20, False, t0 + 4 * unit + 0.001)  # started after the cohort: left out
    assert est.probing is False
    assert est.rtt_noload == pytest.approx((0.004 + 0.006 + 0.008) / 3)


# -- Gradient2 -------------------------------------------------------------------------


def gradient2(initial: int = 20, rtt: float = 0.01, **kwargs: Any) -> Feeder:
    """A Gradient2 estimator past its warm-up, with a long RTT of ``rtt``."""
    kwargs.setdefault("queue_size", 0)
    f = Feeder(start(Gradient2Limit(window_samples=1, **kwargs), initial=initial))
    f.feed(rtt, initial - 1, times=10)  # ten unsaturated windows: the plain average
    assert f.est.long_rtt == pytest.approx(rtt)
    return f


def test_gradient2_applies_the_gradient_with_smoothing() -> None:
    f = gradient2(initial=20)
    # saturated (in_flight >= limit): gradient = 1.5 * 0.01 / 0.02 = 0.75; new = 15;
    # smoothed: 20 * 0.8 + 15 * 0.2 = 19
    assert f.feed(0.02, 20) == 19
    assert f.est.long_rtt == pytest.approx(0.01)  # a saturated window does not teach it


def test_gradient2_gradient_is_clamped_to_half() -> None:
    f = gradient2(initial=20)
    assert f.feed(0.1, 20) == 18  # 1.5 * 0.1 would be 0.15: clamped to 0.5
    assert f.est.estimate == pytest.approx(18.0)


def test_gradient2_adds_the_queue_allowance_only_at_gradient_one() -> None:
    f = gradient2(initial=100, queue_size=5)
    before = f.est.estimate
    f.feed(0.01, 200)  # saturated windows: the long RTT stays 0.01
    assert f.est.estimate == pytest.approx(before + 0.2 * 5)
    before = f.est.estimate
    f.feed(0.0165, 200)  # gradient 0.909 < 1: no allowance
    assert f.est.estimate == pytest.approx(before * 0.8 + before * (1.5 * 0.01 / 0.0165) * 0.2)


def test_gradient2_queue_allowance_defaults_to_the_square_root_of_the_limit() -> None:
    f = Feeder(start(Gradient2Limit(window_samples=1), initial=100))
    f.feed(0.01, 100)
    assert f.est.estimate == pytest.approx(100 + 0.2 * 10)


def test_gradient2_learns_its_baseline_only_from_unconstrained_windows() -> None:
    f = gradient2(initial=20)
    f.feed(0.012, 15)  # peak below the limit: learns, with factor 2 / 601
    assert f.est.long_rtt == pytest.approx(0.01 + 0.002 * 2 / 601)
    long = f.est.long_rtt
    f.feed(0.03, 20)  # saturated: keeps it
    assert f.est.long_rtt == long


def test_gradient2_drift_reset_pulls_the_baseline_down_after_overload() -> None:
    f = gradient2(initial=20)
    f.feed(0.004, 15)
    learned = 0.01 + (0.004 - 0.01) * 2 / 601
    assert f.est.long_rtt == pytest.approx(learned * 0.95)


def test_gradient2_holds_when_app_limited_and_backs_off_on_a_drop() -> None:
    f = gradient2(initial=20)
    assert f.feed(0.05, 9) == 20  # 9 < 20 / 2: app-limited, whatever the latency
    assert f.feed(0.01, 20, dropped=True) == 18  # gradient 0.5, smoothed: -10 %


def test_gradient2_tolerance_sets_how_much_latency_counts_as_no_queue() -> None:
    f = gradient2(initial=100, tolerance=1.0)
    f.feed(0.0125, 100)  # gradient 0.8
    assert f.est.estimate == pytest.approx(100 * 0.8 + 100 * 0.8 * 0.2)
    f = gradient2(initial=100, tolerance=1.5)
    f.feed(0.0125, 100)  # 1.5 * 0.8 > 1: no queueing yet
    assert f.est.estimate == pytest.approx(100.0)


def test_gradient2_respects_the_bounds() -> None:
    f = Feeder(start(Gradient2Limit(window_samples=1, queue_size=50), initial=5, max_limit=8))
    assert f.feed(0.01, 8, times=20) == 8
    f = Feeder(start(Gradient2Limit(window_samples=1), initial=5, min_limit=4))
    f.feed(0.01, 5, times=10)
    assert f.feed(0.5, 5, dropped=True, times=20) == 4


def test_gradient2_probe_re_measures_the_baseline_when_saturated() -> None:
    est = start(Gradient2Limit(window_samples=1, queue_size=0, probe_multiplier=1), initial=20)
    f = Feeder(est)
    f.feed(0.01, 19, times=10)
    assert est.long_rtt == pytest.approx(0.01)
    # Saturated windows at the baseline latency: gradient 1, the limit holds (no
    # allowance), and the samples count toward a probe, due within 10..20 of them.
    for _ in range(20):
        f.feed(0.01, 20)
        if est.probing:
            break
    assert (est.probing, est.limit) == (True, 10)
    t0 = f.now  # a unit is the last window's round trip: 0.01
    est.update(0.03, 10, False, t0 + 0.031)  # admitted under the pin; the service got slower
    assert (est.probing, est.limit) == (True, 20)  # past t0 + 2 units: the limit is back
    est.update(0.025, 9, False, t0 + 0.035)
    est.update(0.01, 20, False, t0 + 0.039)  # admitted after the cohort: left out
    assert est.probing is True
    est.update(0.01, 20, False, t0 + 0.041)  # t0 + 4 units: done
    assert est.probing is False
    assert est.long_rtt == pytest.approx(0.0275)


# -- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "name", "allowed"),
    [
        (lambda: AIMDLimit(backoff_ratio=1.0), "backoff_ratio", "a number in [0.5, 1)"),
        (lambda: AIMDLimit(backoff_ratio=0.3), "backoff_ratio", "a number in [0.5, 1)"),
        (lambda: AIMDLimit(timeout_s=0), "timeout_s", "a finite number > 0"),
        (lambda: VegasLimit(probe_multiplier=0), "probe_multiplier", "an integer >= 1"),
        (lambda: VegasLimit(smoothing=0.0), "smoothing", "a number in (0, 1]"),
        (lambda: VegasLimit(smoothing=math.nan), "smoothing", "a number in (0, 1]"),
        (lambda: VegasLimit(window_samples=0), "window_samples", "an integer >= 1"),
        (lambda: Gradient2Limit(tolerance=0.9), "tolerance", "a finite number >= 1"),
        (lambda: Gradient2Limit(smoothing=1.5), "smoothing", "a number in (0, 1]"),
        (lambda: Gradient2Limit(long_window=0), "long_window", "an integer >= 1"),
        (lambda: Gradient2Limit(queue_size=-1), "queue_size", "an integer >= 0"),
        (lambda: Gradient2Limit(queue_size=2.5), "queue_size", "an integer >= 0"),  # type: ignore[arg-type]
    ],
)
def test_algorithm_settings_are_validated(make: Any, name: str, allowed: str) -> None:
    with pytest.raises(InvalidConfig, match=f"{name}=.* must be {re.escape(allowed)}$"):
        make()


def test_algorithm_configs_are_immutable_values() -> None:
    assert Gradient2Limit() == Gradient2Limit()
    assert hash(VegasLimit(smoothing=0.5)) == hash(VegasLimit(smoothing=0.5))
    assert repr(AIMDLimit()) == "AIMDLimit(backoff_ratio=0.9, timeout_s=5.0)"
    with pytest.raises(AttributeError):
        AIMDLimit().timeout_s = 1.0  # type: ignore[misc]
    assert [a.name for a in (FixedLimit(), AIMDLimit(), VegasLimit(), Gradient2Limit())] == [
        "fixed",
        "aimd",
        "vegas",
        "gradient2",
    ]


# -- against a simulated service -------------------------------------------------------


@dataclass
class Phase:
    samples: int
    slots: int  # C: calls the service runs at once
    service_s: float  # S: the time each takes with a free slot


def simulate(
    estimator: LimitEstimator,
    phases: list[Phase],
    *,
    offered_x: float = 2.0,
    jitter: float = 0.1,
    seed: int = 1,
) -> list[list[int]]:
    """Open-model Poisson arrivals at ``offered_x`` times the first phase's capacity into a
    limiter (admit while in-flight < limit, shed otherwise) in front of a service with
    ``slots`` parallel slots and a FIFO line: a call's round trip is ``S`` (times a uniform
    ``1 +- jitter``) with a free slot, plus its wait in the service's line beyond that.
    Returns the limit after each finished call, one list per phase."""
    rng = random.Random(seed)
    first = phases[0]
    rate = offered_x * first.slots / first.service_s
    now = next_arrival = 0.0
    finishing: list[tuple[float, int, float, int]] = []  # (done at, seq, started, in flight)
    line: deque[tuple[float, int]] = deque()
    busy = in_flight = seq = 0
    history: list[list[int]] = []
    for phase in phases:
        limits: list[int] = []
        history.append(limits)
        while len(limits) < phase.samples:
            if finishing and finishing[0][0] <= next_arrival:
                now, _, started, admitted_at = heapq.heappop(finishing)
                in_flight -= 1
                busy -= 1
                estimator.update(now - started, admitted_at, False, now)
                limits.append(estimator.limit)
                while line and busy < phase.slots:
                    busy += 1
                    seq += 1
                    s, a = line.popleft()
                    work = phase.service_s * (1 + rng.uniform(-jitter, jitter))
                    heapq.heappush(finishing, (now + work, seq, s, a))
            else:
                now = next_arrival
                next_arrival += rng.expovariate(rate)
                if in_flight >= estimator.limit:
                    continue  # shed
                in_flight += 1
                if busy < phase.slots:
                    busy += 1
                    seq += 1
                    work = phase.service_s * (1 + rng.uniform(-jitter, jitter))
                    heapq.heappush(finishing, (now + work, seq, now, in_flight))
                else:
                    line.append((now, in_flight))
    return history


def settled(limits: list[int]) -> float:
    """The limit a phase settled at: the median over its last third (probes included)."""
    return statistics.median(limits[-len(limits) // 3 :])


def test_simulated_service_queues_beyond_its_slots() -> None:
    # The yardstick itself: a fixed limit above the capacity makes round trips grow by
    # the queue (rtt = S * L / C), at or below it they stay at S.
    class Recorder(LimitEstimator):
        def __init__(self, limit: int) -> None:
            self.limit = limit
            self.rtts: list[float] = []

        def update(self, rtt_s: float, in_flight: int, dropped: bool, now: float) -> None:
            self.rtts.append(rtt_s)

    for limit, expected in [(20, 0.01), (50, 0.01), (100, 0.02)]:
        rec = Recorder(limit)
        simulate(rec, [Phase(4000, 50, 0.01)], jitter=0.0)
        assert statistics.median(rec.rtts[1000:]) == pytest.approx(expected, rel=0.05)


def test_vegas_converges_to_the_capacity_and_follows_it_down() -> None:
    est = start(VegasLimit())
    up, down = simulate(est, [Phase(30_000, 100, 0.01), Phase(30_000, 50, 0.01)])
    # Vegas keeps alpha..beta calls queueing in the service: C + 6 .. C + 12 at C = 100
    assert settled(up) == pytest.approx(100, rel=0.2)
    assert settled(up) >= 100
    assert settled(down) == pytest.approx(50, rel=0.2)


def test_gradient2_converges_where_latency_reaches_its_tolerance() -> None:
    est = start(Gradient2Limit())
    up, down = simulate(est, [Phase(30_000, 50, 0.01), Phase(30_000, 25, 0.01)])
    # rtt = S * L / C reaches tolerance * S at L = 1.5 * C
    assert settled(up) == pytest.approx(1.5 * 50, rel=0.2)
    assert settled(down) == pytest.approx(1.5 * 25, rel=0.2)
    assert max(down[len(down) // 3 :]) < 1.5 * 50  # backed off, and stayed off


def test_gradient2_with_tolerance_one_converges_to_the_capacity() -> None:
    est = start(Gradient2Limit(tolerance=1.0))
    up, down = simulate(est, [Phase(30_000, 50, 0.01), Phase(30_000, 25, 0.01)])
    assert settled(up) == pytest.approx(50, rel=0.2)
    assert settled(down) == pytest.approx(25, rel=0.2)


def test_gradient2_does_not_run_away_under_sustained_overload() -> None:
    # Netflix's Gradient2 learns the queueing into its long RTT and climbs to max_limit
    # on a service like this one (concurrency-limits issue #137); this one stays put.
    est = start(Gradient2Limit(), max_limit=1000)
    (limits,) = simulate(est, [Phase(60_000, 50, 0.01)], offered_x=3.0)
    assert max(limits[10_000:]) < 2 * 50


@pytest.mark.parametrize(("algorithm", "target"), [(VegasLimit(), 50), (Gradient2Limit(), 75)])
def test_a_slower_service_is_followed_not_starved(algorithm: LimitAlgorithm, target: int) -> None:
    # Same slots, each call now takes twice as long: the concurrency the service can take
    # is unchanged. Without probes the old no-load RTT makes every round trip look queued
    # and the limit sinks toward its floor; the probes re-measure it.
    est = start(algorithm)
    before, after = simulate(est, [Phase(30_000, 50, 0.01), Phase(40_000, 50, 0.02)])
    assert settled(before) == pytest.approx(target, rel=0.2)
    assert settled(after) == pytest.approx(target, rel=0.2)


def test_aimd_saw_tooth_below_the_point_where_the_service_drops() -> None:
    """A service with C slots that fails fast (a 503) any call beyond them: AIMD climbs
    about one slot per round trip, backs off 10 % on the first drop of a round, and climbs
    again, a saw-tooth between about 0.9 * C and C + 1."""
    capacity, service_s = 50, 0.01
    est = start(AIMDLimit(), initial=10)
    rng = random.Random(2)
    rate = 2 * capacity / service_s
    now = next_arrival = 0.0
    finishing: list[tuple[float, int, float, int, bool]] = []
    busy = in_flight = seq = 0
    limits: list[int] = []
    while len(limits) < 30_000:
        if finishing and finishing[0][0] <= next_arrival:
            now, _, started, admitted_at, dropped = heapq.heappop(finishing)
            in_flight -= 1
            busy -= not dropped
            est.update(now - started, admitted_at, dropped, now)
            limits.append(est.limit)
        else:
            now = next_arrival
            next_arrival += rng.expovariate(rate)
            if in_flight >= est.limit:
                continue
            in_flight += 1
            seq += 1
            if busy < capacity:
                busy += 1
                heapq.heappush(finishing, (now + service_s, seq, now, in_flight, False))
            else:
                heapq.heappush(finishing, (now + 0.001, seq, now, in_flight, True))
    steady = limits[5_000:]
    assert min(steady) >= int(0.9 * capacity) - 1
    assert max(steady) <= capacity + 1
    cuts = sum(1 for a, b in itertools.pairwise(steady) if b < a)
    climbs = sum(1 for a, b in itertools.pairwise(steady) if b > a)
    assert cuts >= 20
    assert climbs >= 4 * cuts  # each cut is followed by several single-slot climbs
