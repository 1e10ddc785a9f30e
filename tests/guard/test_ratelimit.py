from __future__ import annotations

import asyncio
import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brownout.errors import InvalidConfig, RateLimited
from brownout.events import CallRejected, Event
from brownout.guard._pipeline import Pipeline
from brownout.guard._ratelimit import (
    SLACK,
    Decision,
    MemoryStore,
    RateLimit,
    RateLimitEnded,
    RateLimitStarted,
    RateStore,
    gcra_decide,
)
from brownout.guard._retry import Retry
from brownout.testing import MockClock


def _limit(clock: MockClock, **kwargs: Any) -> RateLimit:
    kwargs.setdefault("rate", 10.0)
    return RateLimit(clock=clock, **kwargs)


def _recorder(limit: RateLimit) -> list[Event]:
    seen: list[Event] = []
    limit.events.subscribe(seen.append)
    return seen


# -- configuration -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_rate", "per_s"),
    [(100, 100.0), (0.5, 0.5), ("100/s", 100.0), ("30/m", 0.5), ("5/100ms", 50.0), ("7", 7.0)],
)
def test_rate_accepts_numbers_and_strings(given_rate: float | str, per_s: float) -> None:
    limit = RateLimit(rate=given_rate)
    assert limit.rate == per_s
    assert limit.interval_s == pytest.approx(1 / per_s)


@pytest.mark.parametrize("bad", [0, -1, "0/s", "fast", math.inf, math.nan, True, None, "-3/s"])
def test_bad_rate_names_the_field(bad: object) -> None:
    with pytest.raises(InvalidConfig) as info:
        RateLimit(rate=bad)  # type: ignore[arg-type]
    assert info.value.name == "rate"
    assert info.value.owner == "RateLimit"


@pytest.mark.parametrize(
    ("field", "value"),
    [("burst", 0), ("burst", 1.5), ("burst", True), ("key", 42), ("store", object()), ("name", "")],
)
def test_bad_settings_name_the_field(field: str, value: object) -> None:
    with pytest.raises(InvalidConfig) as info:
        RateLimit(rate=1, **{field: value})
    assert info.value.name == field


def test_repr_shows_the_configuration() -> None:
    text = repr(RateLimit(rate="2/s", burst=5, name="api"))
    assert "rate=2.0" in text
    assert "burst=5" in text
    assert "name='api'" in text


def test_tolerance_is_burst_minus_one_intervals() -> None:
    limit = RateLimit(rate=4, burst=3)
    assert limit.interval_s == 0.25
    assert limit.tolerance_s == 0.5


def test_default_store_is_a_memory_store_of_its_own() -> None:
    a, b = RateLimit(rate=1), RateLimit(rate=1)
    assert isinstance(a.store, MemoryStore)
    assert a.store is not b.store
    assert isinstance(a.store, RateStore)


# -- the algorithm -------------------------------------------------------------------


def test_gcra_decide_admits_up_to_the_limit_exactly() -> None:
    # T = 1, tau = 2 (burst 3): admitted while ahead + cost <= 3.
    assert gcra_decide(0.0, 1.0, 2.0, 1) == (Decision(True, 2, 0.0, 1.0), 1.0)
    assert gcra_decide(2.0, 1.0, 2.0, 1) == (Decision(True, 0, 0.0, 3.0), 3.0)
    assert gcra_decide(2.5, 1.0, 2.0, 1) == (Decision(False, 0, 0.5, 2.5), 2.5)
    assert gcra_decide(1.0, 1.0, 2.0, 3) == (Decision(False, 2, 1.0, 1.0), 1.0)
    assert gcra_decide(1.0, 1.0, 2.0, 0) == (Decision(True, 2, 0.0, 1.0), 1.0)


def test_gcra_decide_forgives_float_rounding_only() -> None:
    # A hair over the limit (rounding) is admitted; a millionth of an interval more is not.
    assert gcra_decide(2.0 + 1e-12, 1.0, 2.0, 1)[0].allowed
    assert not gcra_decide(2.0 + 2 * SLACK, 1.0, 2.0, 1)[0].allowed


@pytest.mark.parametrize("burst", [1, 2, 7, 100])
def test_a_fresh_key_admits_exactly_burst_at_once(burst: int) -> None:
    clock = MockClock()
    limit = _limit(clock, rate=2.0, burst=burst)
    decisions = [limit.check("k") for _ in range(burst + 1)]
    assert [d.allowed for d in decisions] == [True] * burst + [False]
    assert [d.remaining for d in decisions] == [*range(burst - 1, -1, -1), 0]
    assert decisions[-1].retry_after_s == pytest.approx(0.5)
    assert decisions[-1].reset_after_s == pytest.approx(burst * 0.5)


def test_then_one_request_per_interval() -> None:
    clock = MockClock()
    limit = _limit(clock, rate=4.0, burst=2)
    assert limit.check().allowed
    assert limit.check().allowed
    for _ in range(5):
        refused = limit.check()
        assert not refused.allowed
        assert refused.retry_after_s == pytest.approx(0.25)
        clock.advance(0.25)
        assert limit.check().allowed


def test_idle_time_refills_up_to_the_burst_only() -> None:
    clock = MockClock()
    limit = _limit(clock, rate=1.0, burst=3)
    for _ in range(3):
        limit.check()
    clock.advance(3600)
    assert [limit.check().allowed for _ in range(4)] == [True, True, True, False]


def test_cost_takes_that_many_units() -> None:
    clock = MockClock()
    limit = _limit(clock, rate=1.0, burst=5)
    assert limit.check(cost=3) == Decision(True, 2, 0.0, 3.0)
    refused = limit.check(cost=3)
    assert (refused.allowed, refused.remaining, refused.retry_after_s) == (False, 2, 1.0)
    assert limit.check(cost=2).allowed


def test_cost_zero_asks_without_consuming() -> None:
    clock = MockClock()
    limit = _limit(clock, rate=1.0, burst=2)
    assert limit.check(cost=0) == Decision(True, 2, 0.0, 0.0)
    assert len(limit.store) == 0  # type: ignore[arg-type]
    limit.check()
    assert limit.check(cost=0).remaining == 1
    assert limit.check(cost=0).remaining == 1


@pytest.mark.parametrize("cost", [-1, 4, 1.5, "1", None])
def test_a_cost_that_could_never_pass_is_a_config_error(cost: object) -> None:
    limit = RateLimit(rate=1.0, burst=3)
    with pytest.raises(InvalidConfig) as info:
        limit.check(cost=cost)  # type: ignore[arg-type]
    assert info.value.name == "cost"
    with pytest.raises(InvalidConfig):
        asyncio.run(limit.acheck(cost=cost))  # type: ignore[arg-type]


def test_keys_are_independent() -> None:
    clock = MockClock()
    limit = _limit(clock, rate=1.0)
    assert limit.check("a").allowed
    assert not limit.check("a").allowed
    assert limit.check("b").allowed


def test_limits_sharing_a_store_are_separated_by_name() -> None:
    clock = MockClock()
    store = MemoryStore()
    api = _limit(clock, rate=1.0, store=store, name="api")
    login = _limit(clock, rate=1.0, store=store, name="login")
    api_again = _limit(clock, rate=1.0, store=store, name="api")
    assert api.check("u").allowed
    assert login.check("u").allowed
    assert not api_again.check("u").allowed  # same name, same bucket


def test_acheck_decides_like_check() -> None:
    clock = MockClock()
    limit = _limit(clock, rate=1.0, burst=2)

    async def main() -> list[Decision]:
        return [await limit.acheck("k") for _ in range(3)]

    decisions = asyncio.run(main())
    assert [d.allowed for d in decisions] == [True, True, False]


# -- property tests ------------------------------------------------------------------

gaps = st.one_of(
    st.just(0.0),
    st.floats(min_value=0.0, max_value=0.01),
    st.floats(min_value=0.0, max_value=5.0),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rate=st.floats(min_value=0.05, max_value=5000.0),
    burst=st.integers(min_value=1, max_value=20),
    arrivals=st.lists(
        st.tuples(gaps, st.integers(min_value=0, max_value=3)), min_size=1, max_size=150
    ),
    start=st.floats(min_value=0.0, max_value=1e6),
)
def test_no_window_admits_more_than_burst_plus_rate_times_length(
    rate: float, burst: int, arrivals: list[tuple[float, int]], start: float
) -> None:
    """In ANY window [a, b], the cost admitted is <= burst + rate * (b - a) (+ the slack)."""
    clock = MockClock(start)
    limit = _limit(clock, rate=rate, burst=burst)
    admitted: list[tuple[float, int]] = []
    for gap, asked in arrivals:
        clock.advance(gap)
        cost = min(asked, burst)
        if limit.check("k", cost=cost).allowed and cost:
            admitted.append((clock.now(), cost))
    # The worst windows start and end at admissions: check every such pair.
    for i, (t_i, _) in enumerate(admitted):
        total = 0
        for t_j, cost in admitted[i:]:
            total += cost
            bound = burst + rate * (t_j - t_i) + SLACK + 1e-9 * burst
            assert total <= bound, (total, bound, t_i, t_j)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.1, max_value=2000.0),
    burst=st.integers(min_value=1, max_value=50),
    per_interval=st.integers(min_value=1, max_value=8),
    intervals=st.integers(min_value=0, max_value=60),
    start=st.floats(min_value=0.0, max_value=1e5),
)
def test_dense_arrivals_get_exactly_burst_plus_rate_times_length(
    rate: float, burst: int, per_interval: int, intervals: int, start: float
) -> None:
    """``burst + 1`` requests at every step of T/k, from a fresh key: admitted in [0, n*T] is
    exactly burst + n (the bound is reached, not just respected)."""
    clock = MockClock(start)
    limit = _limit(clock, rate=rate, burst=burst)
    interval = 1.0 / rate
    admitted = 0
    for step in range(intervals * per_interval + 1):
        clock.jump_to(start + step * interval / per_interval)
        for _ in range(burst + 1):
            admitted += limit.check("k").allowed
    assert admitted == burst + intervals


@settings(max_examples=200, deadline=None)
@given(
    rate=st.integers(min_value=1, max_value=1000),
    burst=st.integers(min_value=1, max_value=10),
    arrivals=st.lists(
        st.tuples(st.integers(min_value=0, max_value=3000), st.integers(min_value=0, max_value=3)),
        min_size=1,
        max_size=100,
    ),
)
def test_decisions_match_exact_arithmetic(
    rate: int, burst: int, arrivals: list[tuple[int, int]]
) -> None:
    """The float implementation decides exactly as GCRA in rational arithmetic (arrivals on
    a millisecond grid), including ``remaining``; reported times agree to 1e-9 s."""
    clock = MockClock()
    limit = _limit(clock, rate=float(rate), burst=burst)
    interval = Fraction(1, rate)
    limit_s = burst * interval
    tat = Fraction(0)
    now = Fraction(0)
    for gap_ms, asked in arrivals:
        now += Fraction(gap_ms, 1000)
        clock.jump_to(float(now))
        cost = min(asked, burst)
        got = limit.check("k", cost=cost)
        ahead = max(tat - now, Fraction(0))
        after = ahead + cost * interval
        if after <= limit_s:
            want = (True, math.floor((limit_s - after) / interval), 0, after)
            tat = now + after if cost else tat
        else:
            want = (False, max(0, math.floor((limit_s - ahead) / interval)), after - limit_s, ahead)
        assert (got.allowed, got.remaining) == want[:2]
        assert got.retry_after_s == pytest.approx(float(want[2]), abs=1e-9)
        assert got.reset_after_s == pytest.approx(float(want[3]), abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.1, max_value=1000.0),
    burst=st.integers(min_value=1, max_value=10),
    cost=st.integers(min_value=1, max_value=10),
    used=st.integers(min_value=0, max_value=30),
)
def test_retry_after_is_exactly_when_the_request_passes(
    rate: float, burst: int, cost: int, used: int
) -> None:
    """A refused request is refused a little before ``retry_after_s`` and admitted at it."""
    cost = min(cost, burst)
    clock = MockClock(100.0)
    limit = _limit(clock, rate=rate, burst=burst)
    for _ in range(used):
        limit.check("k")
    refused = limit.check("k", cost=cost)
    if refused.allowed:
        return
    early = refused.retry_after_s - 0.01 / rate
    if early > 0:
        clock.advance(early)
        assert not limit.check("k", cost=cost).allowed
        clock.advance(refused.retry_after_s - early)
    else:
        clock.advance(refused.retry_after_s)
    assert limit.check("k", cost=cost).allowed


# -- as a policy -----------------------------------------------------------------------


def test_call_runs_the_function_then_raises_rate_limited() -> None:
    clock = MockClock()
    limit = _limit(clock, rate=2.0, burst=1, name="api", key="fixed")
    assert limit.call(lambda x: x + 1, 1) == 2
    with pytest.raises(RateLimited) as info:
        limit.call(lambda: "never")
    assert info.value.policy == "api"
    assert info.value.key == "fixed"
    assert info.value.retry_after_s == pytest.approx(0.5)


def test_acall_and_async_decorator() -> None:
    clock = MockClock()
    limit = _limit(clock, rate=1.0, burst=2)
    ran: list[int] = []

    @limit
    async def work(n: int) -> int:
        ran.append(n)
        return n

    async def main() -> None:
        assert await work(1) == 1
        assert await limit.acall(work.__wrapped__, 2) == 2  # type: ignore[attr-defined]
        with pytest.raises(RateLimited):
            await work(3)

    asyncio.run(main())
    assert ran == [1, 2]


def test_key_function_gets_the_call_arguments() -> None:
    clock = MockClock()
    seen: list[tuple[Any, ...]] = []

    def by_user(user: str, *, action: str) -> str:
        seen.append((user, action))
        return user

    limit = _limit(clock, rate=1.0, key=by_user)

    @limit
    def act(user: str, *, action: str) -> str:
        return f"{user}:{action}"

    assert act("ann", action="read") == "ann:read"
    assert act("bob", action="read") == "bob:read"
    with pytest.raises(RateLimited) as info:
        act("ann", action="write")
    assert info.value.key == "ann"
    assert seen == [("ann", "read"), ("bob", "read"), ("ann", "write")]


def test_no_key_means_one_bucket_for_every_call() -> None:
    clock = MockClock()
    limit = _limit(clock, rate=1.0)
    limit.call(lambda _: None, "a")
    with pytest.raises(RateLimited) as info:
        limit.call(lambda _: None, "b")
    assert info.value.key == ""


def test_in_a_pipeline_a_refusal_is_not_retried() -> None:
    clock = MockClock()
    limit = _limit(clock, rate=1.0)
    calls: list[int] = []
    pipeline = Pipeline([Retry(attempts=3, clock=clock), limit])
    pipeline.call(calls.append, 1)
    with pytest.raises(RateLimited):
        pipeline.call(calls.append, 2)
    assert calls == [1]


# -- events ----------------------------------------------------------------------------


def test_one_event_when_a_key_starts_and_one_when_it_ends_being_limited() -> None:
    clock = MockClock()
    limit = _limit(clock, rate=1.0, burst=1, name="api")
    seen = _recorder(limit)
    limit.check("k")
    for _ in range(3):
        limit.check("k")
    assert seen == [RateLimitStarted(0.0, "api", "k", 1.0)]
    clock.advance(1.5)
    limit.check("k")
    limit.check("other")
    assert seen[1:] == [RateLimitEnded(1.5, "api", "k", 3, 1.5)]


def test_the_policy_form_emits_call_rejected_per_refusal() -> None:
    clock = MockClock()
    limit = _limit(clock, rate=1.0, name="api")
    seen = _recorder(limit)
    limit.call(lambda: None)
    for _ in range(2):
        with pytest.raises(RateLimited):
            limit.call(lambda: None)
    rejected = [e for e in seen if isinstance(e, CallRejected)]
    assert rejected == [CallRejected(0.0, "api", "rate_limited")] * 2
    assert sum(isinstance(e, RateLimitStarted) for e in seen) == 1


def test_without_subscribers_nothing_is_tracked() -> None:
    limit = RateLimit(rate=1.0)
    for _ in range(3):
        limit.check("k")
    assert len(limit._spells.limited) == 0


def test_async_check_emits_the_same_events() -> None:
    clock = MockClock()
    limit = _limit(clock, rate=1.0, name="api")
    seen = _recorder(limit)

    async def main() -> None:
        await limit.acheck("k")
        await limit.acheck("k")
        clock.advance(1.0)
        await limit.acheck("k")

    asyncio.run(main())
    assert [type(e) for e in seen] == [RateLimitStarted, RateLimitEnded]
