from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Callable

import pytest

from brownout.errors import InvalidConfig
from brownout.events import Event
from brownout.guard._dimmer import Dimmer, DimmerChanged
from brownout.testing import MockClock

TICK_S = 0.1


class SimulatedApp:
    """A server whose latency rises with the optional work it serves.

    Each request costs ``mandatory_s`` of service, plus ``cost_s[f]`` for each optional
    feature ``f`` it is served. Over each tick the mean service time ``S`` follows from the
    features actually served; with ``rate`` requests per second the utilization is
    ``rho = rate * S`` and the mean response time that of an M/M/1 queue, ``S / (1 - rho)``
    (rho capped at 0.99: saturated). Each response time is drawn from the exponential
    distribution with that mean, as M/M/1 response times are, so the p95 is about 3x the mean.
    """

    def __init__(
        self,
        dimmer: Dimmer,
        clock: MockClock,
        *,
        mandatory_s: float = 0.001,
        cost_s: dict[str, float] | None = None,
        seed: int = 7,
    ) -> None:
        self.dimmer = dimmer
        self.clock = clock
        self.mandatory_s = mandatory_s
        self.cost_s = cost_s if cost_s is not None else {"default": 0.003}
        self.rng = random.Random(seed)
        self.history: list[tuple[float, float, float | None]] = []  # (t, theta, latency stat)
        self.served: dict[str, list[float]] = {f: [] for f in self.cost_s}

    def run(self, seconds: float, rate: Callable[[float], float] | float) -> None:
        for _ in range(round(seconds / TICK_S)):
            now = self.clock.now()
            lam = rate(now) if callable(rate) else rate
            n = max(1, round(lam * TICK_S))
            served = dict.fromkeys(self.cost_s, 0)
            for _ in range(n):
                for feature in self.cost_s:
                    if self.dimmer.serve_optional(feature):
                        served[feature] += 1
            service = self.mandatory_s + sum(self.cost_s[f] * served[f] / n for f in self.cost_s)
            rho = min(lam * service, 0.99)
            mean = service / (1 - rho)
            for i in range(n):
                latency = -mean * math.log(1.0 - self.rng.random())
                self.dimmer.observe(latency, now + i * TICK_S / n)
            for f in self.cost_s:
                self.served[f].append(served[f] / n)
            self.clock.advance(TICK_S)
            self.history.append((now, self.dimmer.value, self.dimmer.latency_s))

    def between(self, start: float, end: float) -> list[tuple[float, float, float | None]]:
        return [row for row in self.history if start <= row[0] < end]


def _dimmer(clock: MockClock, **kwargs: object) -> Dimmer:
    kwargs.setdefault("rng", random.Random(1))
    return Dimmer(clock=clock, **kwargs)  # type: ignore[arg-type]


# -- the controller on a simulated app ----------------------------------------------------


def test_theta_settles_where_latency_meets_the_setpoint() -> None:
    clock = MockClock()
    dimmer = _dimmer(clock, setpoint_s=0.2)
    app = SimulatedApp(dimmer, clock)
    # 400 req/s: at theta = 1 the server is saturated (S = 4 ms, rho >= 1). The p95 meets
    # 0.2 s where the mean is ~0.067 s: S = 0.067 / (1 + 400 * 0.067) = 2.4 ms, theta ~0.47
    # on average; the served fraction is noisy and latency convex in it, so a little less.
    app.run(60, 400)
    settled = app.between(30, 60)
    stats = [lat for _, _, lat in settled if lat is not None]
    thetas = [theta for _, theta, _ in settled]
    assert 0.15 <= statistics.median(stats) <= 0.25
    assert 0.30 <= statistics.mean(thetas) <= 0.50
    assert statistics.pstdev(thetas) < 0.05


def test_a_heavier_load_dims_further_and_still_meets_the_setpoint() -> None:
    clock = MockClock()
    dimmer = _dimmer(clock, setpoint_s=0.2)
    app = SimulatedApp(dimmer, clock)
    app.run(40, 400)
    app.run(60, 600)  # theta ~0.2 meets the setpoint at 600 req/s
    settled = app.between(70, 100)
    stats = [lat for _, _, lat in settled if lat is not None]
    assert 0.15 <= statistics.median(stats) <= 0.25
    assert 0.10 <= statistics.mean(theta for _, theta, _ in settled) <= 0.30


def test_theta_recovers_to_one_when_load_drops() -> None:
    clock = MockClock()
    dimmer = _dimmer(clock, setpoint_s=0.2)
    app = SimulatedApp(dimmer, clock)
    app.run(40, 600)
    assert dimmer.value < 0.35
    app.run(15, 100)  # at 100 req/s even full optional work is fast (p95 ~ 7 ms)
    assert dimmer.value == 1.0
    recovered = next(t for t, theta, _ in app.between(40, 55) if theta == 1.0)
    assert recovered - 40 <= 10


def test_theta_falls_to_zero_when_even_mandatory_work_overloads() -> None:
    clock = MockClock()
    dimmer = _dimmer(clock, setpoint_s=0.2)
    app = SimulatedApp(dimmer, clock, mandatory_s=0.004)
    app.run(60, 300)  # S >= 4 ms at 300 req/s: saturated whatever theta is
    assert dimmer.value == 0.0


def test_without_the_controller_the_same_load_misses_the_setpoint() -> None:
    """The check above can fail: the simulated app really is too slow at theta = 1."""
    clock = MockClock()
    dimmer = _dimmer(clock, setpoint_s=0.2, gain=1e-9)  # a controller that barely moves
    app = SimulatedApp(dimmer, clock)
    app.run(20, 400)
    stats = [lat for _, _, lat in app.between(5, 20) if lat is not None]
    assert statistics.median(stats) > 1.0


def test_features_are_dimmed_in_order_of_their_thresholds() -> None:
    clock = MockClock()
    dimmer = _dimmer(clock, setpoint_s=0.2, features={"recommendations": 0.5, "reviews": 0.2})
    app = SimulatedApp(
        dimmer, clock, cost_s={"recommendations": 0.003, "reviews": 0.0015}, mandatory_s=0.001
    )
    app.run(20, 150)  # light load: everything served
    assert dimmer.value == 1.0
    assert statistics.mean(app.served["recommendations"][-50:]) == 1.0
    # Heavy: theta settles near 0.38, so recommendations (off below 0.5) are gone while
    # reviews are still served to about (0.38 - 0.2) / 0.8 of requests.
    app.run(60, 700)
    rec = statistics.mean(app.served["recommendations"][-300:])
    rev = statistics.mean(app.served["reviews"][-300:])
    assert rec < 0.02
    assert 0.1 < rev < 0.5
    assert 0.25 < dimmer.value <= 0.5
    # At every step recommendations were served no more than reviews.
    for r, w in zip(app.served["recommendations"], app.served["reviews"], strict=True):
        assert r <= w + 0.15  # binomial noise of one tick


# -- the law, step by step ------------------------------------------------------------------


def test_one_step_follows_the_documented_law() -> None:
    clock = MockClock()
    dimmer = _dimmer(clock, setpoint_s=0.2, gain=0.1, percentile=100, min_samples=1)
    dimmer.observe(0.5, 0.0)  # starts the schedule: first step due at 1.0
    assert dimmer.value == 1.0
    dimmer.observe(0.4, 1.0)  # window [0, 1]: max 0.5
    # alpha = 0.5 / 1.0; theta = 1 + 0.1 * (0.2 - 0.5) / 0.5 = 0.94
    assert dimmer.value == pytest.approx(0.94)
    assert dimmer.latency_s == 0.5
    dimmer.observe(0.3, 2.0)  # window [1, 2]: 0.4 and 0.3 -> max 0.4
    ratio = 0.4 / 0.94
    alpha = 0.5 + 0.5 * (ratio - 0.5)
    assert dimmer.value == pytest.approx(0.94 + 0.1 * (0.2 - 0.4) / alpha)


def test_percentile_is_nearest_rank_over_the_window() -> None:
    clock = MockClock()
    dimmer = _dimmer(clock, percentile=50, min_samples=1)
    dimmer.observe(9.0, 0.0)
    for i, latency in enumerate([0.1, 0.2, 0.3, 0.4]):
        dimmer.observe(latency, 0.5 + i * 0.1)
    dimmer.update(1.2)  # window [0.2, 1.2]: 0.1..0.4 (9.0 at t=0 fell out)
    assert dimmer.latency_s == 0.2


def test_theta_holds_with_too_few_samples() -> None:
    clock = MockClock()
    dimmer = _dimmer(clock, min_samples=10)
    for i in range(9):
        dimmer.observe(5.0, i * 0.1)
    dimmer.update(1.0)
    assert dimmer.value == 1.0
    assert dimmer.latency_s is None


def test_no_step_before_interval() -> None:
    clock = MockClock()
    dimmer = _dimmer(clock, window_s=1.0, interval_s=0.5, min_samples=1)
    dimmer.observe(5.0, 0.0)
    dimmer.observe(5.0, 0.4)
    assert dimmer.value == 1.0
    dimmer.observe(5.0, 0.5)
    first = dimmer.value
    assert first < 1.0
    dimmer.observe(5.0, 0.9)
    assert dimmer.value == first
    assert dimmer.update(1.0) < first


def test_observe_reads_the_clock_by_default() -> None:
    clock = MockClock(100.0)
    dimmer = _dimmer(clock, min_samples=1, percentile=100)
    dimmer.observe(1.0)
    clock.advance(1.0)
    dimmer.observe(1.0)
    assert dimmer.value < 1.0


# -- features ------------------------------------------------------------------------------


def test_feature_probability_ramps_from_its_threshold() -> None:
    clock = MockClock()
    dimmer = _dimmer(clock, features={"recommendations": 0.5, "reviews": 0.2})
    dimmer._publish(0.6)
    assert dimmer.probability("recommendations") == pytest.approx(0.2)
    assert dimmer.probability("reviews") == pytest.approx(0.5)
    assert dimmer.probability("default") == pytest.approx(0.6)
    assert dimmer.probability("anything else") == pytest.approx(0.6)
    dimmer._publish(0.5)
    assert dimmer.probability("recommendations") == 0.0
    assert dimmer.serve_optional("recommendations") is False
    dimmer._publish(1.0)
    assert all(dimmer.serve_optional(f) for f in ("recommendations", "reviews", "default"))


def test_serve_optional_draws_with_the_probability() -> None:
    clock = MockClock()
    dimmer = _dimmer(clock, rng=random.Random(3))
    dimmer._publish(0.3)
    served = sum(dimmer.serve_optional() for _ in range(20_000))
    assert abs(served / 20_000 - 0.3) < 0.02


# -- events --------------------------------------------------------------------------------


def test_events_when_theta_moves_notably() -> None:
    clock = MockClock()
    dimmer = _dimmer(clock, setpoint_s=0.2)
    seen: list[Event] = []
    dimmer.events.subscribe(seen.append)
    app = SimulatedApp(dimmer, clock)
    app.run(30, 600)
    changes = [e for e in seen if isinstance(e, DimmerChanged)]
    assert changes
    assert changes[0].old == 1.0
    for before, after in itertools.pairwise(changes):
        assert after.old == before.new
    for event in changes:
        assert abs(event.new - event.old) >= 0.05 or event.new in (0.0, 1.0)
        assert event.policy == "dimmer"
        assert event.setpoint_s == 0.2
    # Far fewer events than control steps (30 s of 1 s steps): only notable moves.
    assert len(changes) < 30


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"setpoint_s": 0}, "setpoint_s"),
        ({"gain": 0}, "gain"),
        ({"gain": 1.5}, "gain"),
        ({"window_s": -1}, "window_s"),
        ({"interval_s": 0}, "interval_s"),
        ({"percentile": 0}, "percentile"),
        ({"percentile": 101}, "percentile"),
        ({"features": {"a": 1.0}}, "features['a']"),
        ({"features": {"a": -0.1}}, "features['a']"),
        ({"features": {"": 0.5}}, "features"),
        ({"features": [("a", 0.5)]}, "features"),
        ({"min_samples": 0}, "min_samples"),
        ({"max_samples": 0}, "max_samples"),
        ({"rng": 42}, "rng"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_configuration_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        Dimmer(**kwargs)  # type: ignore[arg-type]
    assert info.value.name == field


def test_bad_latency_is_refused() -> None:
    dimmer = _dimmer(MockClock())
    with pytest.raises(InvalidConfig):
        dimmer.observe(float("nan"))
    with pytest.raises(InvalidConfig):
        dimmer.observe(-1.0)


def test_repr_shows_the_configuration() -> None:
    dimmer = Dimmer(setpoint_s=0.1, features={"reviews": 0.2})
    text = repr(dimmer)
    assert "setpoint_s=0.1" in text
    assert "reviews" in text
    assert dict(dimmer.features) == {"reviews": 0.2}
