"""Universal Scalability Law: the model and the fit from (concurrency, throughput) points."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brownout.errors import InvalidConfig
from brownout.model._usl import fit_usl, usl_throughput_rps

LEVELS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128)


def _points(gamma: float, alpha: float, beta: float) -> list[tuple[float, float]]:
    return [(n, usl_throughput_rps(n, gamma_rps=gamma, alpha=alpha, beta=beta)) for n in LEVELS]


def test_model_by_hand() -> None:
    # gamma 100, alpha 0.1, beta 0.01 at N = 10: 1000 / (1 + 0.9 + 0.9) = 357.14...
    assert usl_throughput_rps(10, gamma_rps=100, alpha=0.1, beta=0.01) == pytest.approx(1000 / 2.8)
    assert usl_throughput_rps(1, gamma_rps=100, alpha=0.5, beta=0.5) == pytest.approx(100)


def test_fit_recovers_exact_parameters() -> None:
    fit = fit_usl(_points(100.0, 0.05, 0.001))
    assert fit.gamma_rps == pytest.approx(100.0, rel=1e-6)
    assert fit.alpha == pytest.approx(0.05, rel=1e-5)
    assert fit.beta == pytest.approx(0.001, rel=1e-5)
    assert fit.r_squared == pytest.approx(1.0)
    assert fit.peak_concurrency == pytest.approx(math.sqrt(0.95 / 0.001), rel=1e-5)
    assert fit.peak_throughput_rps == pytest.approx(fit.throughput_rps(fit.peak_concurrency))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fit_recovers_parameters_from_noisy_points(seed: int) -> None:
    rng = random.Random(seed)
    truth = (250.0, 0.03, 0.0004)  # peak at sqrt(0.97 / 0.0004) = 49.2
    points = [(n, x * (1 + rng.gauss(0, 0.02))) for n, x in _points(*truth)]
    fit = fit_usl(points)
    assert fit.gamma_rps == pytest.approx(truth[0], rel=0.05)
    assert fit.alpha == pytest.approx(truth[1], abs=0.01)
    assert fit.beta == pytest.approx(truth[2], rel=0.2)
    assert fit.peak_concurrency == pytest.approx(math.sqrt(0.97 / 0.0004), rel=0.1)
    assert fit.r_squared > 0.99


def test_fit_without_coherency_cost_has_no_peak() -> None:
    fit = fit_usl(_points(50.0, 0.1, 0.0))  # Amdahl: tends to gamma / alpha = 500
    assert fit.beta == pytest.approx(0.0, abs=1e-9)
    assert fit.alpha == pytest.approx(0.1, rel=1e-5)
    assert math.isinf(fit.peak_concurrency)
    assert fit.peak_throughput_rps == pytest.approx(500.0, rel=1e-4)
    doc = fit.to_dict()
    assert doc["peak_concurrency"] is None
    json.dumps(doc, allow_nan=False)


def test_fit_keeps_parameters_non_negative_on_superlinear_data() -> None:
    # Throughput growing faster than linearly would need alpha < 0: the fit clamps it to 0.
    fit = fit_usl([(n, 10.0 * n**1.1) for n in (1, 2, 4, 8, 16)])
    assert fit.alpha == 0.0
    assert fit.beta == 0.0
    assert fit.gamma_rps > 0


def test_fit_needs_three_distinct_concurrency_values() -> None:
    with pytest.raises(InvalidConfig, match="at least 3 points") as info:
        fit_usl([(1, 10.0), (2, 19.0)])
    assert info.value.name == "points"
    with pytest.raises(InvalidConfig, match="3 distinct"):
        fit_usl([(1, 10.0), (2, 19.0), (2, 19.5)])


@pytest.mark.parametrize(
    ("points", "name"),
    [
        ([(1, 10.0), (2, 0.0), (4, 30.0)], "points[1].throughput_rps"),
        ([(0, 10.0), (2, 10.0), (4, 30.0)], "points[0].concurrency"),
        ([(1, 10.0), (2, float("nan")), (4, 30.0)], "points[1].throughput_rps"),
        ([(1, 10.0), (2,), (4, 30.0)], "points[1]"),
    ],
)
def test_fit_rejects_bad_points(points: list[tuple[float, ...]], name: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        fit_usl(points)  # type: ignore[arg-type]
    assert info.value.name == name


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 200), st.floats(0.1, 1e4)), min_size=3, max_size=12).filter(
        lambda ps: len({n for n, _ in ps}) >= 3
    )
)
def test_fit_always_returns_a_valid_model(points: list[tuple[int, float]]) -> None:
    fit = fit_usl(points)
    assert fit.gamma_rps > 0
    assert fit.alpha >= 0
    assert fit.beta >= 0
    assert fit.r_squared <= 1 + 1e-12
    assert fit.peak_concurrency >= 1
    # Least squares: no worse than the constant-free linear model through the best gamma.
    linear = sum(x * n for n, x in points) / sum(n * n for n, _ in points)
    sse_fit = sum((x - fit.throughput_rps(n)) ** 2 for n, x in points)
    sse_linear = sum((x - linear * n) ** 2 for n, x in points)
    assert sse_fit <= sse_linear * (1 + 1e-6) + 1e-9
