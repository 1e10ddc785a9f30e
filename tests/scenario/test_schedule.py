"""Rate functions, their integrals and arrival times, checked against theory."""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scenario_stats import chi_square, ks_test

from brownout.errors import ScenarioError
from brownout.scenario import (
    RequestSpec,
    Spike,
    Stage,
    TrafficClass,
    arrivals,
    cumulative,
    expected_count,
    rate_at,
)


def klass(stages: list[Stage], spikes: tuple[Spike, ...] = (), **kw: object) -> TrafficClass:
    return TrafficClass(
        name="c",
        stages=tuple(stages),
        spikes=spikes,
        requests=(RequestSpec(path="/"),),
        **kw,  # type: ignore[arg-type]
    )


def count(times: list[float], a: float, b: float) -> int:
    """Arrivals in [a, b) of a sorted list."""
    return bisect_left(times, b) - bisect_left(times, a)


# ramp 0 -> 100 over 10 s, hold 100 for 10 s, ramp 100 -> 20 over 10 s; +50/s on [12, 15)
SHAPED = dict(
    stages=[
        Stage(duration_s=10, target=100),
        Stage(duration_s=10, rate=100),
        Stage(duration_s=10, target=20),
    ],
    spikes=(Spike(at_s=12, duration_s=3, rate=50),),
)


@pytest.mark.parametrize(
    ("t", "rate"),
    [
        (-1, 0),
        (0, 0),
        (5, 50),
        (10, 100),
        (12, 150),
        (14.999, 150),
        (15, 100),
        (25, 60),
        (29.5, 24),
        (30, 0),
        (99, 0),
    ],
)
def test_rate_at_follows_stages_ramps_and_spikes(t: float, rate: float) -> None:
    assert rate_at(klass(**SHAPED), t) == pytest.approx(rate)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        (0, 0),
        (5, 125),
        (10, 500),
        (12, 700),
        (15, 1150),
        (20, 1650),
        (25, 2050),
        (30, 2250),
        (40, 2250),
    ],
)
def test_cumulative_is_the_integral_of_the_rate(t: float, expected: float) -> None:
    # 0..10: 100 t^2 / 20; 10..20: +100/s, spike +150; 20..30: ramp 100 -> 20 (area 600)
    assert cumulative(klass(**SHAPED), t) == pytest.approx(expected)  # type: ignore[arg-type]


def test_expected_count_is_a_difference_and_zero_for_empty_intervals() -> None:
    cls = klass(**SHAPED)  # type: ignore[arg-type]
    assert expected_count(cls, 10, 20) == pytest.approx(1150)
    assert expected_count(cls, 20, 10) == 0.0


stage_st = st.builds(
    lambda d, r, ramp: Stage(duration_s=d, target=r) if ramp else Stage(duration_s=d, rate=r),
    st.floats(0.1, 5),
    st.floats(0, 200),
    st.booleans(),
)
spike_st = st.builds(
    lambda a, d, r: Spike(at_s=a, duration_s=d, rate=r),
    st.floats(0, 10),
    st.floats(0.1, 3),
    st.floats(1, 100),
)
schedule_st = st.tuples(st.lists(stage_st, min_size=1, max_size=4), st.lists(spike_st, max_size=2))


def reference_rate(cls: TrafficClass, t: float) -> float:
    """The schedule's rate written straight from its definition (no pieces)."""
    rate, start, previous = 0.0, 0.0, 0.0
    for stage in cls.stages:
        end = start + stage.duration_s
        goal = stage.rate if stage.rate is not None else stage.target
        assert goal is not None
        if start <= t < end:
            first = stage.rate if stage.rate is not None else previous
            rate = first + (goal - first) * (t - start) / stage.duration_s
        previous, start = goal, end
    return rate + sum(s.rate for s in cls.spikes if s.at_s <= t < s.at_s + s.duration_s)


@settings(max_examples=150, deadline=None)
@given(schedule_st, st.floats(-1, 25))
def test_rate_at_matches_the_definition(
    schedule: tuple[list[Stage], list[Spike]], t: float
) -> None:
    cls = klass(schedule[0], tuple(schedule[1]))
    assert rate_at(cls, t) == pytest.approx(reference_rate(cls, t), rel=1e-9, abs=1e-9)


def trapezoid_cumulative(cls: TrafficClass, t: float) -> float:
    """Lambda(t) by the trapezoid rule on a grid holding every breakpoint: exact for a
    piecewise-linear rate, and built only from the reference rate."""
    edges = {0.0, t}
    clock = 0.0
    for stage in cls.stages:
        clock += stage.duration_s
        edges.add(clock)
    for spike in cls.spikes:
        edges.update((spike.at_s, spike.at_s + spike.duration_s))
    grid = sorted(e for e in edges if 0 <= e <= t)
    total = 0.0
    for a, b in pairwise(grid):
        eps = (b - a) * 1e-9  # one-sided values: the rate jumps at breakpoints
        total += (reference_rate(cls, a + eps) + reference_rate(cls, b - eps)) / 2 * (b - a)
    return total


@settings(max_examples=150, deadline=None)
@given(schedule_st, st.floats(0, 25))
def test_cumulative_matches_an_independent_integration(
    schedule: tuple[list[Stage], list[Spike]], t: float
) -> None:
    cls = klass(schedule[0], tuple(schedule[1]))
    assert cumulative(cls, t) == pytest.approx(trapezoid_cumulative(cls, t), rel=1e-6, abs=1e-6)


def test_constant_arrivals_are_evenly_spaced_at_midpoints() -> None:
    times = list(arrivals(klass([Stage(duration_s=2, rate=500)]), seed=0, duration_s=2))
    assert len(times) == 1000
    assert times[0] == pytest.approx(0.001)
    for i, t in enumerate(times):
        assert t == pytest.approx((i + 0.5) / 500, abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(schedule_st, st.floats(0, 20), st.floats(0, 6))
def test_constant_counts_match_expected_within_one(
    schedule: tuple[list[Stage], list[Spike]], a: float, width: float
) -> None:
    cls = klass(schedule[0], tuple(schedule[1]))
    times = list(arrivals(cls, seed=0, duration_s=1e6))
    assert abs(count(times, a, a + width) - expected_count(cls, a, a + width)) <= 1 + 1e-9
    # Arrival i sits where the integrated rate reaches i + 1/2, inside [0, end): one that
    # would land exactly on the end (a total of exactly k + 1/2) is not sent.
    assert len(times) == max(0, math.ceil(cumulative(cls, cls.end_s) - 0.5))


def test_constant_counts_per_second_are_exact_within_one_on_a_shaped_schedule() -> None:
    cls = klass(**SHAPED)  # type: ignore[arg-type]
    times = list(arrivals(cls, seed=0, duration_s=30))
    for second in range(30):
        assert abs(count(times, second, second + 1) - expected_count(cls, second, second + 1)) <= 1


@pytest.mark.parametrize("target", [0.0, 40.0, 300.0])
def test_ramp_arrivals_sit_where_the_integral_reaches_each_midpoint(target: float) -> None:
    cls = klass([Stage(duration_s=5, rate=100), Stage(duration_s=20, target=target)])
    times = list(arrivals(cls, seed=0, duration_s=25))
    for i, t in enumerate(times):
        assert cumulative(cls, t) == pytest.approx(i + 0.5, abs=1e-6)


def test_arrivals_stop_at_the_run_duration() -> None:
    cls = klass([Stage(duration_s=10, rate=100)])
    times = list(arrivals(cls, seed=0, duration_s=2.5))
    assert len(times) == 250
    assert max(times) < 2.5


def test_zero_rate_stages_send_nothing() -> None:
    cls = klass(
        [Stage(duration_s=1, rate=10), Stage(duration_s=5, rate=0), Stage(duration_s=1, rate=10)]
    )
    times = list(arrivals(cls, seed=0, duration_s=7))
    assert len(times) == 20
    assert count(times, 1, 6) == 0


# -- Poisson -------------------------------------------------------------------------------


def test_poisson_gaps_are_exponential() -> None:
    rate = 1000.0
    times = list(
        arrivals(klass([Stage(duration_s=20, rate=rate)], arrival="poisson"), seed=7, duration_s=20)
    )
    gaps = [b - a for a, b in pairwise(times)]
    d, p = ks_test(gaps, lambda x: 1 - math.exp(-rate * x))
    assert p > 0.001, (d, p)
    assert sum(gaps) / len(gaps) == pytest.approx(1 / rate, rel=0.03)


def test_the_ks_test_rejects_constant_gaps_as_exponential() -> None:
    times = list(arrivals(klass([Stage(duration_s=20, rate=1000)]), seed=7, duration_s=20))
    gaps = [b - a for a, b in pairwise(times)]
    _, p = ks_test(gaps, lambda x: 1 - math.exp(-1000 * x))
    assert p < 1e-6


def test_poisson_counts_per_second_have_poisson_dispersion() -> None:
    rate, seconds = 200.0, 400
    cls = klass([Stage(duration_s=seconds, rate=rate)], arrival="poisson")
    times = list(arrivals(cls, seed=11, duration_s=seconds))
    counts = [count(times, s, s + 1) for s in range(seconds)]
    # Poisson: variance = mean; sum (n - mean)^2 / mean ~ chi-square(seconds - 1)
    mean = sum(counts) / seconds
    _, _, p = chi_square(counts, [mean] * seconds)
    assert 0.001 < p < 0.999
    assert abs(len(times) - rate * seconds) < 4 * math.sqrt(rate * seconds)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_time_rescaled_poisson_arrivals_on_a_shaped_schedule_have_unit_exponential_gaps(
    seed: int,
) -> None:
    cls = klass(arrival="poisson", **SHAPED)  # type: ignore[arg-type]
    times = list(arrivals(cls, seed=seed, duration_s=30))
    rescaled = [cumulative(cls, t) for t in times]
    gaps = [b - a for a, b in pairwise([0.0, *rescaled])]
    _, p = ks_test(gaps, lambda x: 1 - math.exp(-x))
    assert p > 0.001


def test_poisson_counts_follow_the_ramp() -> None:
    cls = klass(
        [Stage(duration_s=60, target=400), Stage(duration_s=60, target=50)], arrival="poisson"
    )
    times = list(arrivals(cls, seed=5, duration_s=120))
    bins = [(s, s + 2) for s in range(0, 120, 2)]
    observed = [count(times, a, b) for a, b in bins]
    expected = [expected_count(cls, a, b) for a, b in bins]
    keep = [i for i, e in enumerate(expected) if e >= 5]
    stat = sum((observed[i] - expected[i]) ** 2 / expected[i] for i in keep)
    from scenario_stats import chi2_sf

    assert chi2_sf(stat, len(keep)) > 0.001  # df = bins: the expectation is not fitted


def test_poisson_depends_on_the_seed_only() -> None:
    cls = klass([Stage(duration_s=5, rate=100)], arrival="poisson")
    one = list(arrivals(cls, seed=3, duration_s=5))
    assert one == list(arrivals(cls, seed=3, duration_s=5))
    assert one != list(arrivals(cls, seed=4, duration_s=5))


# -- bursty --------------------------------------------------------------------------------


def test_bursty_rate_is_scaled_when_on_and_zero_when_off() -> None:
    cls = klass([Stage(duration_s=100, rate=20)], arrival="bursty", burst_on_s=2, burst_off_s=8)
    assert rate_at(cls, 1.0) == pytest.approx(100.0)
    assert rate_at(cls, 5.0) == 0.0
    assert rate_at(cls, 10.5) == pytest.approx(100.0)
    assert expected_count(cls, 0, 100) == pytest.approx(2000.0)  # the mean matches
    assert expected_count(cls, 0, 1) == pytest.approx(100.0)
    assert expected_count(cls, 3, 9) == 0.0


def test_bursty_arrivals_come_only_in_on_periods_at_the_scaled_rate() -> None:
    cls = klass([Stage(duration_s=200, rate=20)], arrival="bursty", burst_on_s=2, burst_off_s=8)
    times = list(arrivals(cls, seed=9, duration_s=200))
    assert all(t % 10 < 2 for t in times)
    assert abs(len(times) - 4000) < 4 * math.sqrt(4000)
    in_first_seconds = sum(1 for t in times if t % 10 < 1)
    assert abs(in_first_seconds - 2000) < 4 * math.sqrt(2000)


def test_bursty_with_a_ramp_matches_the_modulated_integral() -> None:
    cls = klass(
        [Stage(duration_s=50, target=100)], arrival="bursty", burst_on_s=0.5, burst_off_s=1.5
    )
    # on [0, 0.5) of each 2 s cycle, 4x the ramp's rate
    exact = sum(4 * ((2 * k + 0.5) ** 2 - (2 * k) ** 2) for k in range(25))  # 4 * integral of 2t
    assert cumulative(cls, 50) == pytest.approx(exact)
    times = list(arrivals(cls, seed=1, duration_s=50))
    assert abs(len(times) - exact) < 4 * math.sqrt(exact)


# -- segments ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    schedule_st,
    st.sampled_from(["constant", "poisson", "bursty"]),
    st.integers(1, 6),
    st.integers(0, 2**32),
)
def test_segments_partition_the_global_schedule_exactly(
    schedule: tuple[list[Stage], list[Spike]], arrival: str, n: int, seed: int
) -> None:
    cls = (
        klass(schedule[0], tuple(schedule[1]), arrival=arrival, burst_on_s=0.3, burst_off_s=0.2)
        if arrival == "bursty"
        else klass(schedule[0], tuple(schedule[1]), arrival=arrival)
    )
    whole = list(arrivals(cls, seed=seed, duration_s=12))
    parts = [list(arrivals(cls, seed=seed, duration_s=12, segment=(k, n))) for k in range(1, n + 1)]
    for k, part in enumerate(parts, start=1):
        assert part == whole[k - 1 :: n]
    assert sorted(t for part in parts for t in part) == whole


@settings(max_examples=100, deadline=None)
@given(schedule_st, st.sampled_from(["constant", "poisson", "bursty"]), st.integers(0, 1000))
def test_arrivals_never_go_backwards_and_stay_in_the_run(
    schedule: tuple[list[Stage], list[Spike]], arrival: str, seed: int
) -> None:
    cls = klass(schedule[0], tuple(schedule[1]), arrival=arrival)
    times = list(arrivals(cls, seed=seed, duration_s=8))
    assert all(a <= b for a, b in pairwise(times))
    assert all(0 <= t <= 8 for t in times)


@pytest.mark.parametrize("segment", [(0, 2), (3, 2), (1, 0), (True, 1), (1.0, 2), "1/2", (1, 2, 3)])
def test_bad_segments_are_refused(segment: object) -> None:
    with pytest.raises(ScenarioError) as info:
        arrivals(klass([Stage(duration_s=1, rate=1)]), seed=0, duration_s=1, segment=segment)  # type: ignore[arg-type]
    assert info.value.field == "segment"


def test_bad_seed_and_duration_are_refused() -> None:
    cls = klass([Stage(duration_s=1, rate=1)])
    with pytest.raises(ScenarioError, match="seed"):
        arrivals(cls, seed="x", duration_s=1)  # type: ignore[arg-type]
    with pytest.raises(ScenarioError, match="duration_s"):
        arrivals(cls, seed=0, duration_s=-1)


def test_constant_generation_runs_above_a_million_arrivals_per_second() -> None:
    cls = klass([Stage(duration_s=100, rate=2000)])
    best = math.inf
    for _ in range(3):
        started = time.perf_counter()
        n = sum(1 for _ in arrivals(cls, seed=0, duration_s=100))
        best = min(best, time.perf_counter() - started)
    assert n == 200_000
    assert n / best > 1_000_000
