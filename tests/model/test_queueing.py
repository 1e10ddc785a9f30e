"""Queueing formulas against theory, hand-computed values and independent formulas."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brownout.errors import InvalidConfig
from brownout.model._queueing import (
    MMcQueue,
    ServiceCenter,
    allen_cunneen_wait_s,
    bottleneck_bounds,
    erlang_b,
    erlang_c,
    forced_flow,
    kingman_wait_s,
    littles_law,
    mva,
    mva_schweitzer,
    service_demand,
    utilization_law,
)


def _erlang_c_factorial(c: int, a: float) -> float:
    """The textbook formula, with factorials: only usable for small c."""
    top = a**c / math.factorial(c) * c / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


def _erlang_c_logspace(c: int, a: float) -> float:
    """The same formula in log space (lgamma + log-sum-exp), independent of the recursion."""
    logs = [k * math.log(a) - math.lgamma(k + 1) for k in range(c)]
    log_top = c * math.log(a) - math.lgamma(c + 1) + math.log(c / (c - a))
    peak = max([*logs, log_top])
    total = sum(math.exp(x - peak) for x in logs) + math.exp(log_top - peak)
    return math.exp(log_top - peak) / total


def _integrate(f: Callable[[float], float], upper: float, steps: int = 4000) -> float:
    """Composite Simpson's rule of f over [0, upper]."""
    h = upper / steps
    total = f(0.0) + f(upper)
    for i in range(1, steps):
        total += (4 if i % 2 else 2) * f(i * h)
    return total * h / 3


# --- operational laws ------------------------------------------------------------------


def test_utilization_law() -> None:
    # 200 req/s x 0.05 s on 10 servers: every server busy all the time.
    assert utilization_law(200, 0.05, 10) == pytest.approx(1.0)
    assert utilization_law(100, 0.004) == pytest.approx(0.4)


def test_littles_law_matches_the_dependency_example() -> None:
    # REFERENCES 5: at 200 req/s, 50 ms calls keep 10 in flight; 2 s calls keep 400.
    assert littles_law(200, 0.05) == pytest.approx(10)
    assert littles_law(200, 2.0) == pytest.approx(400)


def test_forced_flow_and_service_demand() -> None:
    assert forced_flow(50, 5) == pytest.approx(250)  # 5 queries per request at 50 req/s
    assert service_demand(5, 0.006) == pytest.approx(0.03)


def test_operational_laws_reject_negative_values() -> None:
    with pytest.raises(InvalidConfig, match="throughput_rps"):
        littles_law(-1, 1)
    with pytest.raises(InvalidConfig, match="servers"):
        utilization_law(1, 1, 0)


def test_bottleneck_bounds_by_hand() -> None:
    bounds = bottleneck_bounds({"cpu": 0.05, "db": 0.08}, think_time_s=1.0)
    assert bounds.bottleneck == "db"
    assert bounds.max_throughput_rps == pytest.approx(12.5)  # 1 / 0.08
    assert bounds.knee_population == pytest.approx(1.13 / 0.08)  # (D + Z) / D_max
    assert bounds.throughput_upper_rps(5) == pytest.approx(5 / 1.13)  # below the knee
    assert bounds.throughput_upper_rps(50) == pytest.approx(12.5)  # above it
    assert bounds.throughput_lower_rps(5) == pytest.approx(5 / (5 * 0.13 + 1.0))
    assert bounds.response_time_lower_s(50) == pytest.approx(50 * 0.08 - 1.0)
    assert bounds.response_time_lower_s(2) == pytest.approx(0.13)
    assert bounds.response_time_upper_s(3) == pytest.approx(0.39)
    assert json.dumps(bounds.to_dict(), allow_nan=False)


def test_bottleneck_bounds_rejects_empty_demands() -> None:
    with pytest.raises(InvalidConfig, match="demands_s"):
        bottleneck_bounds({})


# --- Erlang B and C --------------------------------------------------------------------


def test_erlang_c_two_servers_one_erlang_is_one_third() -> None:
    # By hand: B(1) = 1/(1+1) = 1/2, B(2) = (1/2)/(2 + 1/2) = 1/5,
    # C = B / (1 - rho (1 - B)) = (1/5) / (1 - 1/2 * 4/5) = 1/3.
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3, rel=1e-12)


def test_erlang_c_three_servers_two_erlangs() -> None:
    # By hand: sum_{k<3} 2^k/k! = 1 + 2 + 2 = 5; 2^3/3! * 3/(3-2) = 4; C = 4/9.
    assert erlang_c(3, 2.0) == pytest.approx(4 / 9, rel=1e-12)


def test_erlang_published_table_values() -> None:
    # Erlang B table, 10 circuits at 5 erlangs: 0.0184; Erlang C table, 10 agents at 8 erlangs:
    # 0.4092 (four-digit tables).
    assert erlang_b(10, 5.0) == pytest.approx(0.018385, abs=5e-6)
    assert erlang_c(10, 8.0) == pytest.approx(0.40918, abs=5e-5)


def test_erlang_c_single_server_is_utilization() -> None:
    for a in (0.1, 0.5, 0.9, 0.99):
        assert erlang_c(1, a) == pytest.approx(a)


@pytest.mark.parametrize("c", [1, 2, 3, 5, 8, 13, 21, 30])
def test_erlang_c_matches_factorial_formula(c: int) -> None:
    for fraction in (0.05, 0.3, 0.7, 0.95, 0.999):
        a = c * fraction
        assert erlang_c(c, a) == pytest.approx(_erlang_c_factorial(c, a), rel=1e-9)


@pytest.mark.parametrize(("c", "fraction"), [(500, 0.9), (2000, 0.95), (4000, 0.99), (3000, 0.5)])
def test_erlang_c_is_stable_for_thousands_of_servers(c: int, fraction: float) -> None:
    a = c * fraction
    value = erlang_c(c, a)
    assert 0 <= value <= 1
    assert value == pytest.approx(_erlang_c_logspace(c, a), rel=1e-8, abs=1e-300)


def test_erlang_c_is_one_when_overloaded_and_zero_without_load() -> None:
    assert erlang_c(4, 4.0) == 1.0
    assert erlang_c(4, 10.0) == 1.0
    assert erlang_c(4, 0.0) == 0.0


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300), st.floats(0, 400, allow_nan=False))
def test_erlang_c_is_a_probability(c: int, a: float) -> None:
    assert 0.0 <= erlang_c(c, a) <= 1.0
    assert 0.0 <= erlang_b(c, a) <= 1.0


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 100), st.floats(0.01, 0.99))
def test_erlang_c_falls_as_servers_are_added_at_equal_load(c: int, fraction: float) -> None:
    a = c * fraction
    assert erlang_c(c + 1, a) <= erlang_c(c, a) + 1e-12


# --- M/M/1 and M/M/c -------------------------------------------------------------------


def test_mm1_closed_forms() -> None:
    lam, mu = 8.0, 10.0
    q = MMcQueue(lam, mu, 1)
    rho = lam / mu
    assert q.utilization == pytest.approx(rho)
    assert q.prob_wait == pytest.approx(rho)
    assert q.wait_mean_s == pytest.approx(rho / (mu - lam))
    assert q.response_mean_s == pytest.approx(1 / (mu - lam))
    assert q.in_system_mean == pytest.approx(rho / (1 - rho))
    assert q.queue_length_mean == pytest.approx(rho**2 / (1 - rho))
    for t in (0.0, 0.1, 0.5, 2.0):
        # The M/M/1 response time is exponential with rate mu - lambda.
        assert q.response_tail(t) == pytest.approx(math.exp(-(mu - lam) * t), rel=1e-12)
        assert q.wait_tail(t) == pytest.approx(rho * math.exp(-(mu - lam) * t), rel=1e-12)
    assert q.response_quantile_s(0.99) == pytest.approx(math.log(100) / (mu - lam), rel=1e-9)
    assert q.wait_quantile_s(0.99) == pytest.approx(math.log(rho / 0.01) / (mu - lam))


def test_mmc_by_hand_two_servers() -> None:
    # lambda = 1, mu = 1, c = 2: a = 1, C = 1/3, Wq = C / (c mu - lambda) = 1/3, W = 4/3.
    q = MMcQueue(1.0, 1.0, 2)
    assert q.prob_wait == pytest.approx(1 / 3)
    assert q.wait_mean_s == pytest.approx(1 / 3)
    assert q.response_mean_s == pytest.approx(4 / 3)
    assert q.in_system_mean == pytest.approx(4 / 3)  # Little: L = lambda W
    assert q.busy_servers_mean == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("lam", "mu", "c"), [(0.8, 1.0, 1), (3.0, 1.0, 4), (7.5, 1.0, 8), (30, 2, 16)]
)
def test_response_tail_integrates_to_the_mean(lam: float, mu: float, c: int) -> None:
    q = MMcQueue(lam, mu, c)
    upper = 60 * q.response_mean_s
    assert _integrate(q.response_tail, upper) == pytest.approx(q.response_mean_s, rel=1e-6)
    assert _integrate(q.wait_tail, upper) == pytest.approx(q.wait_mean_s, rel=1e-6)


def test_response_tail_when_wait_and_service_rates_coincide() -> None:
    # c mu - lambda == mu: the hypoexponential degenerates to Erlang-2; the tail stays continuous.
    q = MMcQueue(1.0, 1.0, 2)
    assert q.response_tail(1.0) == pytest.approx(
        (1 - 1 / 3) * math.exp(-1) + (1 / 3) * math.exp(-1) * 2, rel=1e-12
    )
    near = MMcQueue(1.0 + 1e-9, 1.0, 2)
    assert near.response_tail(1.0) == pytest.approx(q.response_tail(1.0), rel=1e-6)


@pytest.mark.parametrize("q_", [0.5, 0.9, 0.99, 0.999])
def test_quantiles_invert_the_tails(q_: float) -> None:
    q = MMcQueue(9.0, 1.0, 10)
    t = q.response_quantile_s(q_)
    assert q.response_tail(t) == pytest.approx(1 - q_, rel=1e-9)
    w = q.wait_quantile_s(q_)
    if q.prob_wait > 1 - q_:
        assert q.wait_tail(w) == pytest.approx(1 - q_, rel=1e-9)
    else:
        assert w == 0.0


def test_unstable_queue_is_flagged_not_raised() -> None:
    q = MMcQueue(10.0, 1.0, 10)
    assert not q.stable
    assert q.utilization == pytest.approx(1.0)
    assert q.prob_wait == 1.0
    assert math.isinf(q.wait_mean_s)
    assert math.isinf(q.response_mean_s)
    assert q.response_tail(100.0) == 1.0
    assert math.isinf(q.response_quantile_s(0.5))
    doc = q.to_dict()
    assert doc["stable"] is False
    assert doc["wait_mean_s"] is None
    json.dumps(doc, allow_nan=False)


def test_idle_queue_never_waits() -> None:
    q = MMcQueue(0.0, 2.0, 3)
    assert q.prob_wait == 0.0
    assert q.wait_mean_s == 0.0
    assert q.response_mean_s == pytest.approx(0.5)
    assert q.wait_quantile_s(0.99) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"arrival_rate_rps": -1, "service_rate_rps": 1}, "arrival_rate_rps"),
        ({"arrival_rate_rps": 1, "service_rate_rps": 0}, "service_rate_rps"),
        ({"arrival_rate_rps": 1, "service_rate_rps": 2, "servers": 0}, "servers"),
        ({"arrival_rate_rps": 1, "service_rate_rps": 2, "servers": 1.5}, "servers"),
        ({"arrival_rate_rps": float("nan"), "service_rate_rps": 2}, "arrival_rate_rps"),
    ],
)
def test_mmc_rejects_bad_arguments(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        MMcQueue(**kwargs)  # type: ignore[arg-type]
    assert info.value.name == name
    assert info.value.owner == "MMcQueue"


def test_quantile_must_be_inside_zero_one() -> None:
    q = MMcQueue(1.0, 2.0)
    for bad in (0, 1, 99, -0.5):
        with pytest.raises(InvalidConfig, match="q="):
            q.response_quantile_s(bad)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 64), st.floats(0.001, 0.999), st.floats(0.01, 100))
def test_stable_queue_properties(c: int, fraction: float, mu: float) -> None:
    lam = fraction * c * mu
    q = MMcQueue(lam, mu, c)
    assert q.stable
    assert 0 <= q.utilization < 1
    assert 0 <= q.prob_wait <= 1
    # Little's law on the queue and on the whole system.
    assert q.queue_length_mean == pytest.approx(lam * q.wait_mean_s)
    assert q.in_system_mean == pytest.approx(q.queue_length_mean + q.busy_servers_mean)
    # Tails are decreasing probabilities.
    t1, t2 = q.response_mean_s, 3 * q.response_mean_s
    assert 1 >= q.response_tail(t1) >= q.response_tail(t2) >= 0


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 64), st.floats(0.0, 0.98), st.floats(0.001, 0.01))
def test_wait_grows_with_arrival_rate(c: int, fraction: float, step: float) -> None:
    low = MMcQueue(fraction * c, 1.0, c)
    high = MMcQueue((fraction + step) * c, 1.0, c)
    assert high.wait_mean_s >= low.wait_mean_s
    assert high.response_quantile_s(0.99) >= low.response_quantile_s(0.99) - 1e-9


# --- G/G/1 and G/G/c -------------------------------------------------------------------


def test_kingman_is_exact_for_mm1_and_md1() -> None:
    lam, s = 8.0, 0.1
    assert kingman_wait_s(lam, s) == pytest.approx(MMcQueue(lam, 1 / s).wait_mean_s)
    # M/D/1 (ca2 = 1, cs2 = 0), Pollaczek-Khinchine: Wq = rho S / (2 (1 - rho)) = 0.2.
    assert kingman_wait_s(lam, s, cs2=0.0) == pytest.approx(0.8 * 0.1 / (2 * 0.2))


def test_allen_cunneen() -> None:
    lam, s, c = 35.0, 0.1, 4
    mmc = MMcQueue(lam, 1 / s, c).wait_mean_s
    assert allen_cunneen_wait_s(lam, s, c) == pytest.approx(mmc)
    assert allen_cunneen_wait_s(lam, s, c, ca2=0.5, cs2=0.25) == pytest.approx(mmc * 0.375)
    assert allen_cunneen_wait_s(8.0, 0.1, 1, cs2=0.0) == pytest.approx(
        kingman_wait_s(8.0, 0.1, cs2=0)
    )
    assert math.isinf(allen_cunneen_wait_s(40.0, 0.1, 4))
    assert math.isinf(kingman_wait_s(10.0, 0.1))
    with pytest.raises(InvalidConfig, match="ca2"):
        kingman_wait_s(1.0, 0.1, ca2=-1)


# --- MVA -------------------------------------------------------------------------------


def _machine_repairman(n: int, demand_s: float, think_s: float) -> tuple[float, float]:
    """M/M/1//N (N machines, think Z, one repairman of mean D): closed-form X and R.

    p0 = 1 / sum_{k=0..N} N!/(N-k)! (D/Z)^k; X = (1 - p0) / D; R = N / X - Z.
    """
    r = demand_s / think_s
    total, term = 1.0, 1.0
    for k in range(1, n + 1):
        term *= (n - k + 1) * r
        total += term
    x = (1 - 1 / total) / demand_s
    return x, n / x - think_s


@pytest.mark.parametrize(("demand", "think"), [(0.1, 1.0), (0.5, 2.0), (0.02, 0.5)])
def test_mva_matches_machine_repairman(demand: float, think: float) -> None:
    result = mva([ServiceCenter("repair", demand)], 40, think)
    for n in (1, 2, 5, 10, 25, 40):
        x, r = _machine_repairman(n, demand, think)
        point = result.at(n)
        assert point.throughput_rps == pytest.approx(x, rel=1e-9)
        assert point.response_time_s == pytest.approx(r, rel=1e-9)


def test_mva_single_user_sees_no_queue() -> None:
    centers = [
        ServiceCenter("cpu", 0.05),
        ServiceCenter("db", 0.08),
        ServiceCenter("net", 0.2, "delay"),
    ]
    point = mva(centers, 1, 1.0).at(1)
    assert point.response_time_s == pytest.approx(0.33)
    assert point.throughput_rps == pytest.approx(1 / 1.33)


def test_mva_littles_law_and_bounds_on_every_station() -> None:
    centers = [
        ServiceCenter("cpu", 0.05),
        ServiceCenter("db", 0.08),
        ServiceCenter("net", 0.2, "delay"),
    ]
    result = mva(centers, 60, think_time_s=1.0)
    bounds = result.bounds
    previous = 0.0
    for point in result.points:
        n, x = point.population, point.throughput_rps
        for name in ("cpu", "db", "net"):
            assert point.queue_length[name] == pytest.approx(x * point.residence_time_s[name])
        # Little's law on the whole cycle: n = X (R + Z).
        assert sum(point.queue_length.values()) + x * 1.0 == pytest.approx(n)
        assert bounds.throughput_lower_rps(n) - 1e-12 <= x <= bounds.throughput_upper_rps(n) + 1e-12
        assert x >= previous
        assert point.utilization["db"] <= 1.0
        assert point.residence_time_s["net"] == pytest.approx(0.2)
        previous = x
    assert result.at(60).throughput_rps == pytest.approx(12.5, rel=1e-3)  # 1 / D_max
    assert json.dumps(result.to_dict(), allow_nan=False)


def test_schweitzer_is_close_to_exact() -> None:
    centers = [
        ServiceCenter("cpu", 0.05),
        ServiceCenter("db", 0.08),
        ServiceCenter("net", 0.2, "delay"),
    ]
    exact = mva(centers, 100, 1.0)
    for n in (5, 15, 30, 100):
        approx = mva_schweitzer(centers, n, 1.0)
        assert approx.throughput_rps == pytest.approx(exact.at(n).throughput_rps, rel=0.05)


def test_multi_server_center_reaches_its_capacity() -> None:
    # Seidmann: 8 threads of 0.1 s each serve at most 80 req/s.
    result = mva([ServiceCenter("threads", 0.1, servers=8)], 200, 0.5)
    assert result.at(200).throughput_rps == pytest.approx(80, rel=1e-3)
    assert result.at(1).response_time_s == pytest.approx(0.1)
    assert all(p.utilization["threads"] <= 1 + 1e-12 for p in result.points)


def test_mva_rejects_bad_arguments() -> None:
    with pytest.raises(InvalidConfig, match="population"):
        mva([ServiceCenter("a", 1.0)], 0)
    with pytest.raises(InvalidConfig, match="centers"):
        mva([ServiceCenter("a", 1.0), ServiceCenter("a", 2.0)], 3)
    with pytest.raises(InvalidConfig, match="kind"):
        ServiceCenter("a", 1.0, kind="fifo")
    with pytest.raises(InvalidConfig, match="population"):
        mva([ServiceCenter("a", 1.0)], 3).at(4)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.001, 1.0), min_size=1, max_size=5),
    st.integers(1, 60),
    st.floats(0.0, 5.0),
)
def test_mva_invariants(demands: list[float], population: int, think: float) -> None:
    centers = [ServiceCenter(f"c{i}", d) for i, d in enumerate(demands)]
    result = mva(centers, population, think)
    bounds = result.bounds
    for point in result.points:
        n, x = point.population, point.throughput_rps
        assert x <= bounds.throughput_upper_rps(n) * (1 + 1e-9)
        assert x >= bounds.throughput_lower_rps(n) * (1 - 1e-9)
        assert sum(point.queue_length.values()) + x * think == pytest.approx(n)
        assert all(0 <= u <= 1 + 1e-9 for u in point.utilization.values())
