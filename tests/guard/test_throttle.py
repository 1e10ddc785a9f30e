from __future__ import annotations

import asyncio
from typing import Any

import pytest

from brownout.errors import (
    CircuitOpen,
    InvalidConfig,
    Overloaded,
    RateLimited,
    Rejected,
    Throttled,
)
from brownout.events import CallRejected, Event
from brownout.guard._budget import RetryBudget
from brownout.guard._pipeline import Pipeline
from brownout.guard._retry import Retry
from brownout.guard._throttle import AdaptiveThrottle
from brownout.testing import MockClock

TICK_S = 0.1


class Unavailable(Exception):
    """What an HTTP client raises for a 503: the status on the error's response."""

    def __init__(self, status: int = 503) -> None:
        super().__init__(f"HTTP {status}")
        self.response = type("Response", (), {"status_code": status})()


class Backend:
    """Accepts at most ``capacity`` calls per second (per tick, pro rata); rejects the rest
    with ``Unavailable`` (503), the cheap rejection an overloaded server answers with."""

    def __init__(self, clock: MockClock, capacity: float) -> None:
        self.clock = clock
        self.capacity = capacity
        self.tick = -1
        self.left = 0.0
        self.received = 0
        self.accepted = 0

    def __call__(self) -> str:
        tick = int(self.clock.now() / TICK_S + 1e-9)
        if tick != self.tick:
            self.tick = tick
            self.left = self.capacity * TICK_S
        self.received += 1
        if self.left >= 1:
            self.left -= 1
            self.accepted += 1
            return "ok"
        raise Unavailable()


def _offer(
    policy: Any, backend: Backend, clock: MockClock, rate: float, seconds: float
) -> dict[str, int]:
    """Offer ``rate`` calls per second through ``policy`` for ``seconds``; count outcomes."""
    counts = {"ok": 0, "throttled": 0, "rejected": 0}
    received = backend.received
    per_tick = round(rate * TICK_S)
    for _ in range(round(seconds / TICK_S)):
        for _ in range(per_tick):
            try:
                policy.call(backend)
            except Throttled:
                counts["throttled"] += 1
            except Unavailable:
                counts["rejected"] += 1
            else:
                counts["ok"] += 1
        clock.advance(TICK_S)
    counts["sent"] = backend.received - received
    return counts


# -- the formula ---------------------------------------------------------------------------


def test_probability_follows_the_sre_formula() -> None:
    clock = MockClock()
    throttle = AdaptiveThrottle(k=2.0, max_reject_ratio=1.0, clock=clock)
    for _ in range(100):
        throttle.record(True, 0.0)
    assert throttle.reject_probability(0.0) == 0.0  # 100 - 2 * 100 < 0
    for _ in range(200):
        throttle.record(False, 0.0)
    # requests 300, accepts 100: (300 - 200) / 301
    assert throttle.reject_probability(0.0) == pytest.approx(100 / 301)
    assert throttle.requests == 300
    assert throttle.accepts == 100


def test_k_scales_what_is_let_through() -> None:
    clock = MockClock()
    strict = AdaptiveThrottle(k=1.1, max_reject_ratio=1.0, clock=clock)
    for _ in range(50):
        strict.record(True, 0.0)
    for _ in range(50):
        strict.record(False, 0.0)
    assert strict.reject_probability(0.0) == pytest.approx((100 - 1.1 * 50) / 101)


def test_probability_is_capped() -> None:
    clock = MockClock()
    throttle = AdaptiveThrottle(clock=clock)  # cap 0.9
    for _ in range(1000):
        throttle.record(False, 0.0)
    assert throttle.reject_probability(0.0) == 0.9
    uncapped = AdaptiveThrottle(max_reject_ratio=1.0, clock=clock)
    for _ in range(1000):
        uncapped.record(False, 0.0)
    assert uncapped.reject_probability(0.0) == pytest.approx(1000 / 1001)


def test_refusals_count_as_requests() -> None:
    clock = MockClock()
    throttle = AdaptiveThrottle(max_reject_ratio=1.0, seed=1, clock=clock)
    for _ in range(10):
        throttle.record(False, 0.0)
    refused = sum(not throttle.allow(0.0) for _ in range(100))
    assert refused > 0
    assert throttle.requests == 10 + refused  # allowed calls are counted when they end


def test_the_window_forgets_after_window_s() -> None:
    clock = MockClock()
    throttle = AdaptiveThrottle(window_s=60.0, clock=clock)
    for _ in range(100):
        throttle.record(False, 0.0)
    assert throttle.reject_probability(59.0) > 0.5
    assert throttle.reject_probability(60.0) == 0.0
    assert throttle.requests == 0


def test_buckets_age_out_one_by_one() -> None:
    clock = MockClock()
    throttle = AdaptiveThrottle(window_s=60.0, max_reject_ratio=1.0, clock=clock)
    for t in range(60):
        throttle.record(False, float(t))  # one rejection per second
    clock.jump_to(59.5)
    assert throttle.requests == 60
    clock.jump_to(60.0)  # the bucket of second 0 leaves the window
    assert throttle.requests == 59
    clock.jump_to(70.0)  # the window holds seconds 11..70
    assert throttle.requests == 49


# -- classification ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (Overloaded("busy", policy="backend"), True),
        (RateLimited(policy="backend", retry_after_s=1.0), True),
        (Unavailable(503), True),
        (Unavailable(429), True),
        (Unavailable(500), False),  # the backend took it and failed: an accept
        (ValueError("bad"), False),
        (TimeoutError(), False),
        (CircuitOpen(policy="breaker", until=1.0, state="open"), None),  # never sent
        (Throttled(policy="other", probability=0.5), None),
        (asyncio.CancelledError(), None),
    ],
)
def test_what_counts_as_a_rejection(exc: BaseException, expected: bool | None) -> None:
    assert AdaptiveThrottle().is_rejection(exc) is expected


def test_rejection_selectors_are_configurable() -> None:
    throttle = AdaptiveThrottle(
        rejected_on=(Overloaded, TimeoutError),
        rejected_if=lambda e: "ignore" not in str(e),
        rejected_statuses=frozenset({529}),
        rejected_if_result=lambda r: r == "shed",
    )
    assert throttle.is_rejection(TimeoutError("slow")) is True
    assert throttle.is_rejection(TimeoutError("ignore me")) is False
    assert throttle.is_rejection(Unavailable(503)) is False
    assert throttle.is_rejection(Unavailable(529)) is True
    clock = MockClock()
    throttle = AdaptiveThrottle(rejected_if_result=lambda r: r == "shed", clock=clock)
    for _ in range(10):
        throttle.record(True)  # so that p stays 0 and no call below is refused
    assert throttle.call(lambda: "shed") == "shed"  # results are returned, only counted
    assert throttle.call(lambda: "fine") == "fine"
    assert (throttle.requests, throttle.accepts) == (12, 11)


def test_results_with_an_overload_status_are_rejections() -> None:
    clock = MockClock()
    throttle = AdaptiveThrottle(clock=clock)
    response = type("Response", (), {"status_code": 503})()
    assert throttle.call(lambda: response) is response
    assert (throttle.requests, throttle.accepts) == (1, 0)


def test_uncounted_failures_leave_the_window_alone() -> None:
    clock = MockClock()
    throttle = AdaptiveThrottle(clock=clock)

    def open_circuit() -> None:
        raise CircuitOpen(policy="breaker", until=5.0, state="open")

    with pytest.raises(CircuitOpen):
        throttle.call(open_circuit)
    assert throttle.requests == 0


# -- against a backend -----------------------------------------------------------------------


def test_traffic_to_an_overloaded_backend_settles_near_k_times_its_capacity() -> None:
    clock = MockClock()
    throttle = AdaptiveThrottle(window_s=120.0, seed=3, clock=clock)
    backend = Backend(clock, capacity=20)
    _offer(throttle, backend, clock, rate=100, seconds=240)  # two windows to settle
    counts = _offer(throttle, backend, clock, rate=100, seconds=60)
    sent_rate = counts["sent"] / 60
    assert 40 * 0.85 <= sent_rate <= 40 * 1.15  # k * capacity = 40/s of the 100/s offered
    # The backend still runs near capacity (a tick that happens to send fewer than its
    # capacity wastes a little).
    assert counts["ok"] >= 0.9 * 20 * 60
    assert throttle.reject_probability() == pytest.approx(0.6, abs=0.07)


def test_a_backend_at_half_the_offer_sees_the_whole_offer_with_k_2() -> None:
    clock = MockClock()
    throttle = AdaptiveThrottle(seed=3, clock=clock)
    backend = Backend(clock, capacity=50)
    _offer(throttle, backend, clock, rate=100, seconds=240)
    counts = _offer(throttle, backend, clock, rate=100, seconds=60)
    # k * capacity = 100/s = the offer: (requests - 2 * accepts) hovers at 0, little is refused.
    assert counts["sent"] / 60 >= 90
    assert counts["ok"] == 50 * 60


def test_without_the_throttle_the_backend_sees_everything() -> None:
    """The checks above can fail: the throttle, not the backend model, cuts the traffic."""
    clock = MockClock()
    backend = Backend(clock, capacity=20)

    class Direct:
        @staticmethod
        def call(fn: Any) -> Any:
            return fn()

    counts = _offer(Direct, backend, clock, rate=100, seconds=60)
    assert counts["sent"] == 100 * 60


def test_traffic_recovers_when_the_backend_heals() -> None:
    clock = MockClock()
    throttle = AdaptiveThrottle(seed=5, clock=clock)
    backend = Backend(clock, capacity=20)
    _offer(throttle, backend, clock, rate=100, seconds=240)
    backend.capacity = 1000  # healed
    # Accepts now grow by e every window_s / k = 60 s from 40% of requests: the full offer
    # gets through after 60 * ln(4) = 83 s, within one window.
    _offer(throttle, backend, clock, rate=100, seconds=100)
    counts = _offer(throttle, backend, clock, rate=100, seconds=10)
    assert counts["throttled"] == 0
    assert counts["ok"] == 1000


def test_recovery_after_a_full_outage_is_quick_with_the_cap_and_slow_without() -> None:
    def recovered_after(max_reject_ratio: float) -> float:
        clock = MockClock()
        throttle = AdaptiveThrottle(max_reject_ratio=max_reject_ratio, seed=5, clock=clock)
        backend = Backend(clock, capacity=0)
        _offer(throttle, backend, clock, rate=100, seconds=240)
        backend.capacity = 1000
        start = clock.now()
        while throttle.reject_probability() > 0.0 and clock.now() - start < 900:
            _offer(throttle, backend, clock, rate=100, seconds=1)
        return clock.now() - start

    # Capped: 10/s probe until accepts reach 5% of requests (60 s), then grow by e per 60 s
    # up to half of them (60 * ln 10 = 138 s): ~200 s. Uncapped, accepts start from ~0 and
    # need 60 * ln(12000) = ~560 s.
    assert recovered_after(0.9) <= 240
    assert recovered_after(1.0) > 400


def test_throttled_calls_raise_and_emit() -> None:
    clock = MockClock()
    throttle = AdaptiveThrottle(seed=1, clock=clock)
    seen: list[Event] = []
    throttle.events.subscribe(seen.append)
    for _ in range(100):
        throttle.record(False, 0.0)
    calls = 0

    def fn() -> None:
        nonlocal calls
        calls += 1

    with pytest.raises(Throttled) as info:
        for _ in range(50):
            throttle.call(fn)
    assert isinstance(info.value, Rejected)
    assert info.value.policy == "adaptive_throttle"
    assert 0.5 < info.value.probability <= 0.9
    assert any(isinstance(e, CallRejected) and e.reason == "throttled" for e in seen)


def test_async_calls_are_throttled_the_same_way() -> None:
    clock = MockClock()
    throttle = AdaptiveThrottle(seed=1, max_reject_ratio=1.0, clock=clock)

    async def rejected() -> None:
        raise Overloaded("busy", policy="backend")

    async def main() -> tuple[int, int]:
        refused = overloaded = 0
        for _ in range(200):
            try:
                await throttle.acall(rejected)
            except Throttled:
                refused += 1
            except Overloaded:
                overloaded += 1
        return refused, overloaded

    refused, overloaded = asyncio.run(main())
    assert refused + overloaded == 200
    assert refused > 150  # with no accepts p = r / (r + 1): nearly everything is refused
    assert throttle.requests == 200
    assert throttle.accepts == 0


# -- composition with Retry and a budget ----------------------------------------------------


def test_retry_does_not_retry_a_throttled_attempt() -> None:
    clock = MockClock()
    throttle = AdaptiveThrottle(seed=1, clock=clock)
    for _ in range(1000):
        throttle.record(False, 0.0)
    calls = 0

    def fn() -> str:
        nonlocal calls
        calls += 1
        return "ok"

    pipeline = Pipeline([Retry(attempts=5, base_s=0.0, clock=clock), throttle])
    outcomes = []
    for _ in range(50):
        try:
            outcomes.append(pipeline.call(fn))
        except Throttled:
            outcomes.append("throttled")
    assert outcomes.count("throttled") > 30
    assert calls == outcomes.count("ok")  # a refusal was never retried into a call


def test_retry_with_budget_and_throttle_bounds_the_load_on_an_overloaded_backend() -> None:
    def run(with_throttle: bool) -> dict[str, int]:
        clock = MockClock()
        backend = Backend(clock, capacity=20)
        retry = Retry(
            attempts=3,
            base_s=0.0,
            jitter="none",
            budget=RetryBudget.ratio(0.1, min_per_s=1.0, window_s=10.0),
            clock=clock,
        )
        policies: list[Any] = [retry]
        if with_throttle:
            policies.append(AdaptiveThrottle(seed=2, clock=clock))
        pipeline = Pipeline(policies)
        _offer(pipeline, backend, clock, rate=100, seconds=240)
        return _offer(pipeline, backend, clock, rate=100, seconds=60)

    plain = run(with_throttle=False)
    guarded = run(with_throttle=True)
    # The budget alone caps retries near 10% + 1/s, so the backend sees ~111/s of 100/s.
    assert plain["sent"] / 60 > 100
    # With the throttle inside the retry, attempts reaching the backend settle near k * 20.
    assert guarded["sent"] / 60 <= 40 * 1.2
    assert plain["ok"] == 20 * 60
    assert guarded["ok"] >= 0.9 * 20 * 60  # the backend's goodput is about unchanged


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"k": 0.5}, "k"),
        ({"window_s": 0}, "window_s"),
        ({"max_reject_ratio": 0}, "max_reject_ratio"),
        ({"max_reject_ratio": 1.5}, "max_reject_ratio"),
        ({"rejected_on": "Overloaded"}, "rejected_on"),
        ({"rejected_if": 3}, "rejected_if"),
        ({"rejected_statuses": {99}}, "rejected_statuses"),
        ({"rejected_if_result": 3}, "rejected_if_result"),
        ({"seed": 1.5}, "seed"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_configuration_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        AdaptiveThrottle(**kwargs)
    assert info.value.name == field


def test_repr_shows_the_configuration() -> None:
    text = repr(AdaptiveThrottle(k=1.5))
    assert "k=1.5" in text
    assert "window_s=120.0" in text
