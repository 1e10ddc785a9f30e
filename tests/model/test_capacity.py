"""Capacity prediction: saturation, latency, timeouts, knees and warnings of a service."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brownout.errors import InvalidConfig
from brownout.model._capacity import CapacityModel, Resource, predict_capacity
from brownout.model._queueing import MMcQueue

POOL = [Resource("pool", "db_pool", 10)]
PRODUCTS = {"/products": {"pool": 0.05}}
ONLY_PRODUCTS = {"/products": 1.0}


def test_pool_of_ten_at_50ms_saturates_at_200_rps() -> None:
    # lambda_max = c / D = 10 / 0.05 = 200 req/s.
    prediction = predict_capacity(POOL, PRODUCTS, ONLY_PRODUCTS, [100, 250])
    assert prediction.bottleneck == "pool"
    assert prediction.saturation_rps == pytest.approx(200)
    assert prediction.utilization_knee_rps == pytest.approx(180)  # 0.9 x 200
    assert prediction.warnings == (
        "DB pool 'pool' exhausted at 200 req/s on /products "
        "(first to saturate; 100% of its demand; 10 connections)",
    )
    low, high = prediction.points
    assert low.stable
    assert low.warnings == ()
    assert low.resource("pool").utilization == pytest.approx(0.5)
    assert not high.stable
    assert high.resource("pool").utilization == pytest.approx(1.25)
    (warning,) = high.warnings
    assert warning.startswith("DB pool 'pool' exhausted at 200 req/s on /products")
    assert "125%" in warning


def test_the_issue_example_warning() -> None:
    # 10 connections; /products holds one 40 ms, /health 5 ms; 110/(0.8*0.05+...) -> 212 req/s.
    resources = [Resource("workers", "cpu", 4), Resource("db_pool", "db_pool", 10)]
    demands = {
        "/products": {"workers": 0.004, "db_pool": 0.0575},
        "/health": {"workers": 0.001, "db_pool": 0.005},
    }
    model = CapacityModel(resources, demands, {"/products": 0.8, "/health": 0.2})
    # per request: 0.8 * 0.0575 + 0.2 * 0.005 = 0.047 s -> 10 / 0.047 = 212.8 req/s
    assert model.saturation_rps == pytest.approx(10 / 0.047)
    (line,) = model.saturation_warnings(300)
    assert line.startswith("DB pool 'db_pool' exhausted at 213 req/s on /products")


def _integrate(f: Callable[[float], float], upper: float, steps: int = 4000) -> float:
    """Composite Simpson's rule of f over [0, upper]."""
    h = upper / steps
    total = f(0.0) + f(upper)
    for i in range(1, steps):
        total += (4 if i % 2 else 2) * f(i * h)
    return total * h / 3


def test_single_station_matches_mmc() -> None:
    model = CapacityModel(POOL, PRODUCTS, ONLY_PRODUCTS)
    point = model.at(150)
    queue = MMcQueue(150, 20, 10)
    load = point.resource("pool")
    assert point.latency_mean_s == pytest.approx(queue.response_mean_s)
    assert load.wait_mean_s == pytest.approx(queue.wait_mean_s)
    assert load.prob_wait == pytest.approx(queue.prob_wait)
    # Little's law: busy connections 150 x 0.05 = 7.5, plus the waiting count Lq.
    assert load.in_service == pytest.approx(7.5)
    assert load.waiting == pytest.approx(queue.queue_length_mean)
    assert load.in_flight == pytest.approx(queue.in_system_mean)


def test_mm1_timeout_probability_and_p99_are_exact() -> None:
    # One server, 10 ms: M/M/1 with mu = 100; P(W > t) = exp(-(mu - lambda) t).
    model = CapacityModel([Resource("loop", "cpu", 1)], {"/": {"loop": 0.01}}, {"/": 1})
    point = model.at(95, timeout_s=0.5)
    assert point.timeout_probability == pytest.approx(math.exp(-5 * 0.5))
    assert point.latency_p99_s == pytest.approx(math.log(100) / 5, rel=1e-9)
    assert point.endpoint("/").latency_p99_s == pytest.approx(math.log(100) / 5, rel=1e-9)
    assert point.warnings[-1] == (
        "8.2% of requests predicted to exceed the 500 ms client timeout at 95 req/s"
    )
    assert "at 95% utilization" in point.warnings[0]


def test_slo_knee_of_mm1_by_hand() -> None:
    # p99 of M/M/1 = ln(100) / (mu - lambda) <= 0.1 s  <=>  lambda <= 100 - 10 ln(100) = 53.95.
    prediction = predict_capacity(
        [Resource("loop", "cpu", 1)], {"/": {"loop": 0.01}}, {"/": 1}, [], slo_s=0.1
    )
    assert prediction.slo_knee_rps == pytest.approx(100 - 10 * math.log(100), rel=1e-6)
    assert prediction.utilization_knee_rps == pytest.approx(90)


def test_no_rate_meets_an_impossible_slo() -> None:
    prediction = predict_capacity(
        [Resource("dep", "dependency", 50)], {"/": {"dep": 0.5}}, {"/": 1}, [10], slo_s=0.1
    )
    assert prediction.slo_knee_rps is None
    assert prediction.warnings[-1].startswith("no rate meets the SLO")
    assert prediction.to_dict()["slo_knee_rps"] is None


def test_tandem_latency_is_the_sum_of_station_response_times() -> None:
    resources = [Resource("cpu", "cpu", 2), Resource("db", "db", 4)]
    model = CapacityModel(resources, {"/": {"cpu": 0.01, "db": 0.03}}, {"/": 1})
    point = model.at(80)
    expected = MMcQueue(80, 100, 2).response_mean_s + MMcQueue(80, 1 / 0.03, 4).response_mean_s
    assert point.latency_mean_s == pytest.approx(expected)
    assert point.endpoint("/").bottleneck == "db"
    assert model.saturation_by_resource_rps == pytest.approx({"cpu": 200, "db": 4 / 0.03})


def test_mix_is_normalized_and_weights_saturation() -> None:
    demands = {"/a": {"pool": 0.02}, "/b": {"pool": 0.08}}
    model = CapacityModel([Resource("pool", "db_pool", 7)], demands, {"/a": 3, "/b": 1})
    assert model.mix == pytest.approx({"/a": 0.75, "/b": 0.25})
    # per request: 0.75 * 0.02 + 0.25 * 0.08 = 0.035 s; 7 / 0.035 = 200 req/s.
    assert model.saturation_rps == pytest.approx(200)
    load = model.at(100).resource("pool")
    assert load.top_endpoint == "/b"
    assert load.top_endpoint_share == pytest.approx(0.02 / 0.035)
    # Both endpoints wait the same; each adds its own hold time.
    point = model.at(100)
    wait = load.wait_mean_s
    assert point.endpoint("/a").latency_mean_s == pytest.approx(wait + 0.02)
    assert point.endpoint("/b").latency_mean_s == pytest.approx(wait + 0.08)
    assert point.endpoint("/a").rate_rps == pytest.approx(75)


def test_visits_multiply_waits_not_demand() -> None:
    # Five 1 ms queries per request on one DB server at 100 req/s: 500 visits/s, rho 0.5,
    # Wq = rho / (mu - lambda) = 0.5 / 500 = 1 ms per visit; latency 5 x 1 ms + 5 ms = 10 ms.
    model = CapacityModel(
        [Resource("db", "db", 1)], {"/n1": {"db": 0.005}}, {"/n1": 1}, visits={"/n1": {"db": 5}}
    )
    point = model.at(100)
    load = point.resource("db")
    assert load.visit_rate_rps == pytest.approx(500)
    assert load.service_time_mean_s == pytest.approx(0.001)
    assert load.wait_mean_s == pytest.approx(0.001)
    assert point.latency_mean_s == pytest.approx(0.010)
    assert model.saturation_rps == pytest.approx(200)


def test_past_saturation_everything_times_out() -> None:
    point = CapacityModel(POOL, PRODUCTS, ONLY_PRODUCTS).at(250, timeout_s=2.0)
    assert not point.stable
    assert point.timeout_probability == 1.0
    assert math.isinf(point.latency_p99_s)
    doc = point.to_dict()
    assert doc["latency_p99_s"] is None
    assert doc["resources"][0]["waiting"] is None
    json.dumps(doc, allow_nan=False)


def test_endpoint_with_no_share_still_gets_a_prediction() -> None:
    demands = {"/products": {"pool": 0.05}, "/health": {}}
    point = CapacityModel(POOL, demands, {"/products": 1, "/health": 0}).at(100, timeout_s=1)
    health = point.endpoint("/health")
    assert health.share == 0
    assert health.latency_mean_s == 0
    assert health.bottleneck is None
    assert health.timeout_probability == 0.0


def test_prediction_is_json_ready() -> None:
    resources = [
        Resource("w", "cpu", 4),
        Resource("pool", "db_pool", 10),
        Resource("pay", "dependency", 20, service_cv2=0.1),
    ]
    demands = {"/p": {"w": 0.004, "pool": 0.04}, "/c": {"w": 0.006, "pool": 0.02, "pay": 0.2}}
    prediction = predict_capacity(
        resources, demands, {"/p": 0.7, "/c": 0.3}, [50, 250, 400], timeout_s=1.0, slo_s=0.5
    )
    text = json.dumps(prediction.to_dict(), allow_nan=False)
    doc = json.loads(text)
    assert doc["bottleneck"] == "pool"
    assert [p["rate_rps"] for p in doc["points"]] == [50, 250, 400]
    assert doc["points"][2]["stable"] is False
    assert 0 < doc["slo_knee_rps"] < doc["saturation_rps"]


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: Resource("x", "gpu", 1), "kind"),
        (lambda: Resource("x", "cpu", 0), "servers"),
        (lambda: Resource("", "cpu", 1), "name"),
        (lambda: CapacityModel(POOL, {"/p": {"nope": 0.1}}, {"/p": 1}), "demands_s['/p']"),
        (lambda: CapacityModel(POOL, PRODUCTS, {"/other": 1}), "mix"),
        (lambda: CapacityModel(POOL, PRODUCTS, {"/products": 0}), "mix"),
        (lambda: CapacityModel(POOL, {"/p": {"pool": -1}}, {"/p": 1}), "demands_s['/p']['pool']"),
        (lambda: CapacityModel(POOL * 2, PRODUCTS, ONLY_PRODUCTS), "resources"),
        (lambda: CapacityModel([], PRODUCTS, ONLY_PRODUCTS), "resources"),
        (
            lambda: CapacityModel(POOL, PRODUCTS, ONLY_PRODUCTS, visits={"/products": {"pool": 0}}),
            "visits['/products']['pool']",
        ),
        (lambda: CapacityModel(POOL, PRODUCTS, ONLY_PRODUCTS).at(-1), "rate_rps"),
        (lambda: CapacityModel(POOL, PRODUCTS, ONLY_PRODUCTS).at(1, timeout_s=0), "timeout_s"),
        (
            lambda: predict_capacity(POOL, PRODUCTS, ONLY_PRODUCTS, [1], knee_utilization=0),
            "knee_utilization",
        ),
        (lambda: predict_capacity(POOL, PRODUCTS, ONLY_PRODUCTS, [1], slo_quantile=99), "q"),
    ],
)
def test_bad_arguments_name_the_field(call: object, name: str) -> None:
    assert callable(call)
    with pytest.raises(InvalidConfig) as info:
        call()
    assert info.value.name == name


def test_unknown_mix_endpoint_lists_the_known_ones() -> None:
    with pytest.raises(InvalidConfig, match="an endpoint of demands_s: '/products'"):
        CapacityModel(POOL, PRODUCTS, {"/other": 1})


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 64), st.floats(0.0005, 0.5)), min_size=1, max_size=4),
    st.floats(0.01, 0.99),
)
def test_capacity_invariants(stations: list[tuple[int, float]], fraction: float) -> None:
    resources = [Resource(f"r{i}", "threads", c) for i, (c, _) in enumerate(stations)]
    demands = {"/": {f"r{i}": d for i, (_, d) in enumerate(stations)}}
    model = CapacityModel(resources, demands, {"/": 1})
    sat = model.saturation_rps
    assert sat == pytest.approx(min(c / d for c, d in stations))
    low, high = model.at(fraction * sat * 0.5), model.at(fraction * sat)
    for point in (low, high):
        assert point.stable
        for load in point.resources:
            assert 0 <= load.utilization < 1
            assert load.utilization == pytest.approx(point.rate_rps / load.saturation_rps)
            # Little's law per resource: in flight = visit rate x (wait + service).
            assert load.in_flight == pytest.approx(
                load.visit_rate_rps * (load.wait_mean_s + load.service_time_mean_s)
            )
    assert high.latency_mean_s >= low.latency_mean_s
    assert high.latency_p99_s >= low.latency_p99_s * (1 - 1e-9)
    assert high.latency_p99_s >= high.latency_mean_s


def test_constant_service_follows_pollaczek_khinchine() -> None:
    # M/D/1 (Poisson arrivals, constant 10 ms): Wq = rho S / (2 (1 - rho)); at 80 req/s,
    # rho = 0.8: Wq = 0.8 * 0.01 / 0.4 = 20 ms (half the M/M/1 wait).
    model = CapacityModel(
        [Resource("loop", "cpu", 1, service_cv2=0.0)], {"/": {"loop": 0.01}}, {"/": 1}
    )
    point = model.at(80)
    assert point.resource("loop").wait_mean_s == pytest.approx(0.02)
    assert point.latency_mean_s == pytest.approx(0.03)
    # Under light load a constant service has p99 = its service time.
    assert model.latency_quantile_s(0.001, 0.99) == pytest.approx(0.01, rel=1e-6)


def test_constant_arrivals_and_service_never_queue() -> None:
    model = CapacityModel(
        [Resource("loop", "cpu", 1, service_cv2=0.0)],
        {"/": {"loop": 0.01}},
        {"/": 1},
        arrival_cv2=0,
    )
    point = model.at(99)
    assert point.resource("loop").wait_mean_s == 0.0
    assert point.latency_p99_s == pytest.approx(0.01)
    assert not model.at(100).stable


@pytest.mark.parametrize("cv2", [0.25, 1.0, 4.0])
@pytest.mark.parametrize("fraction", [0.0, 0.6, 0.95])
def test_latency_tail_integrates_to_the_mean(cv2: float, fraction: float) -> None:
    # Two stations, two endpoints, 3 visits: the approximate tail keeps every mean exact.
    # (cv2 = 0 has a jump that Simpson cannot integrate finely; tested by its quantiles.)
    resources = [
        Resource("cpu", "cpu", 2, service_cv2=cv2),
        Resource("db", "db", 4, service_cv2=cv2),
    ]
    demands = {"/a": {"cpu": 0.01, "db": 0.03}, "/b": {"cpu": 0.02}}
    model = CapacityModel(resources, demands, {"/a": 2, "/b": 1}, visits={"/a": {"db": 3}})
    rate = fraction * model.saturation_rps
    point = model.at(rate)
    upper = 50 * max(e.latency_mean_s for e in point.endpoints)
    integral = _integrate(lambda t: model.latency_tail(rate, t), upper, steps=1000)
    assert integral == pytest.approx(point.latency_mean_s, rel=1e-3)


def test_variability_raises_waits_and_tails() -> None:
    def p99(cv2: float) -> float:
        model = CapacityModel(
            [Resource("r", "threads", 4, service_cv2=cv2)], {"/": {"r": 0.1}}, {"/": 1}
        )
        return model.at(30).latency_p99_s

    assert p99(0.0) < p99(0.5) < p99(1.0) < p99(4.0)
