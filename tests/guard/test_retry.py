from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brownout import Retry, RetryBudget, deadline
from brownout.errors import BulkheadFull, CircuitOpen, InvalidConfig, RateLimited
from brownout.events import Event, RetryAbandoned, RetryScheduled
from brownout.testing import MockClock


class Flaky:
    """Fails ``failures`` times with ``exc``, then returns ``value``; records call times."""

    def __init__(self, clock: MockClock, failures: int, exc: BaseException | None = None) -> None:
        self.clock = clock
        self.failures = failures
        self.exc = exc or ConnectionError("down")
        self.calls: list[float] = []

    def __call__(self) -> str:
        self.calls.append(self.clock.now())
        if len(self.calls) <= self.failures:
            raise self.exc
        return "ok"

    async def acall(self) -> str:
        return self()


def test_retries_until_success_and_waits_between_attempts() -> None:
    clock = MockClock()
    flaky = Flaky(clock, failures=2)
    retry = Retry(attempts=3, base_s=1.0, jitter="none", clock=clock)
    assert retry.call(flaky) == "ok"
    assert flaky.calls == [0.0, 1.0, 3.0]  # waits 1, then 2


def test_gives_up_after_attempts_and_raises_the_last_failure() -> None:
    clock = MockClock()
    flaky = Flaky(clock, failures=10)
    with pytest.raises(ConnectionError, match="down"):
        Retry(attempts=4, base_s=0.1, clock=clock).call(flaky)
    assert len(flaky.calls) == 4


def test_async_retry_uses_the_clock_for_backoff() -> None:
    clock = MockClock(autojump=True)
    flaky = Flaky(clock, failures=2)
    retry = Retry(attempts=5, base_s=0.5, multiplier=3, jitter="none", clock=clock)
    assert asyncio.run(retry.acall(flaky.acall)) == "ok"
    assert flaky.calls == [0.0, 0.5, 2.0]


def test_non_retryable_exceptions_propagate_at_once() -> None:
    clock = MockClock()
    flaky = Flaky(clock, failures=5, exc=KeyError("k"))
    with pytest.raises(KeyError):
        Retry(retry_on=ConnectionError, clock=clock).call(flaky)
    assert len(flaky.calls) == 1


def test_predicate_selects_exceptions() -> None:
    clock = MockClock()
    flaky = Flaky(clock, failures=1, exc=OSError(111, "refused"))
    retry = Retry(retry_if=lambda e: getattr(e, "errno", None) == 111, clock=clock)
    assert retry.call(flaky) == "ok"
    other = Flaky(clock, failures=1, exc=OSError(2, "missing"))
    with pytest.raises(OSError):
        retry.call(other)


@pytest.mark.parametrize(
    "rejection",
    [
        CircuitOpen(policy="b", until=1.0, state="open"),
        BulkheadFull(policy="bh", max_concurrent=1, max_queue=0, waited_s=0.0),
        RateLimited(policy="rl", retry_after_s=0.1),
    ],
)
def test_brownout_rejections_are_not_retried_unless_told(rejection: Exception) -> None:
    clock = MockClock()
    flaky = Flaky(clock, failures=1, exc=rejection)
    with pytest.raises(type(rejection)):
        Retry(clock=clock).call(flaky)
    assert len(flaky.calls) == 1
    flaky2 = Flaky(clock, failures=1, exc=rejection)
    assert Retry(retry_rejected=True, clock=clock).call(flaky2) == "ok"


def test_cancellation_is_never_retried() -> None:
    async def main() -> int:
        calls = 0

        async def cancelled() -> None:
            nonlocal calls
            calls += 1
            raise asyncio.CancelledError

        with pytest.raises(asyncio.CancelledError):
            await Retry(retry_on=BaseException, clock=MockClock(autojump=True)).acall(cancelled)
        return calls

    assert asyncio.run(main()) == 1


@dataclass
class Response:
    status_code: int
    headers: dict[str, str] = field(default_factory=dict)


def test_http_status_results_are_retried_and_the_last_returned() -> None:
    clock = MockClock()
    answers = iter([Response(503), Response(502), Response(200)])
    retry = Retry(retry_statuses={502, 503}, clock=clock)
    assert retry.call(lambda: next(answers)).status_code == 200
    always = Retry(attempts=2, retry_statuses={503}, clock=clock)
    assert always.call(lambda: Response(503)).status_code == 503


def test_retry_after_header_sets_the_wait() -> None:
    clock = MockClock()
    answers = iter([Response(429, {"Retry-After": "7"}), Response(200)])
    times: list[float] = []

    def call() -> Response:
        times.append(clock.now())
        return next(answers)

    Retry(retry_statuses={429}, base_s=0.01, clock=clock).call(call)
    assert times == [0.0, 7.0]


def test_retry_after_beyond_the_limit_ends_the_retries() -> None:
    clock = MockClock()
    calls = []

    def call() -> Response:
        calls.append(1)
        return Response(503, {"Retry-After": "3600"})

    assert Retry(retry_statuses={503}, clock=clock).call(call).status_code == 503
    assert len(calls) == 1


def test_rate_limited_retry_after_is_honoured_when_rejections_are_retried() -> None:
    clock = MockClock()
    flaky = Flaky(clock, failures=1, exc=RateLimited(policy="api", retry_after_s=2.5))
    Retry(retry_rejected=True, base_s=0.001, clock=clock).call(flaky)
    assert flaky.calls == [0.0, 2.5]


def test_never_sleeps_past_the_deadline() -> None:
    clock = MockClock()
    flaky = Flaky(clock, failures=10)
    seen: list[Event] = []
    retry = Retry(attempts=10, base_s=1.0, jitter="none", clock=clock)
    retry.events.subscribe(seen.append)
    with deadline(4.0, clock=clock), pytest.raises(ConnectionError):
        retry.call(flaky)
    # waits 1 (t=1), 2 (t=3); the next wait of 4 would end past the deadline at t=4
    assert flaky.calls == [0.0, 1.0, 3.0]
    assert isinstance(seen[-1], RetryAbandoned)
    assert seen[-1].reason == "deadline"


def test_a_retry_that_cannot_finish_before_the_deadline_does_not_start() -> None:
    clock = MockClock()
    retry = Retry(attempts=5, base_s=0.1, jitter="none", clock=clock)
    # Teach the policy that a successful attempt takes 2 s.
    retry.call(lambda: clock.advance(2.0))
    flaky = Flaky(clock, failures=10)
    with deadline(1.5, clock=clock), pytest.raises(ConnectionError):
        retry.call(flaky)
    assert len(flaky.calls) == 1


def test_budget_stops_retries_and_reports_why() -> None:
    clock = MockClock()
    budget = RetryBudget.token_bucket(max_tokens=4)
    retry = Retry(attempts=3, base_s=0.0, budget=budget, clock=clock)
    reasons: list[str] = []
    retry.events.subscribe(lambda e: isinstance(e, RetryAbandoned) and reasons.append(e.reason))
    flaky = Flaky(clock, failures=100)
    for _ in range(5):
        with pytest.raises(ConnectionError):
            retry.call(flaky)
    # tokens: 4 -> 3 (retry ok: 3 > 2) -> 2 (2 > 2 false: abandoned)
    assert "budget" in reasons
    assert len(flaky.calls) == 6  # 1 + 1 retry, then 4 single attempts


def test_events_describe_each_retry() -> None:
    clock = MockClock()
    retry = Retry(attempts=3, base_s=1.0, jitter="none", clock=clock, name="payments")
    seen: list[Event] = []
    retry.events.subscribe(seen.append)
    retry.call(Flaky(clock, failures=1))
    assert seen == [RetryScheduled(0.0, "payments", 1, 1.0, "ConnectionError")]


def test_attempt_state_is_per_call_under_concurrency() -> None:
    async def main() -> list[int]:
        clock = MockClock()
        retry = Retry(attempts=3, base_s=1.0, jitter="none", clock=clock)
        counts: dict[int, int] = {}

        async def work(i: int) -> int:
            counts[i] = counts.get(i, 0) + 1
            if counts[i] < 3:
                raise ConnectionError
            return counts[i]

        tasks = [asyncio.create_task(retry.acall(work, i)) for i in range(10)]
        for _ in range(5):
            for _ in range(10):
                await asyncio.sleep(0)
            clock.advance(2.0)
        return await asyncio.gather(*tasks)

    assert asyncio.run(main()) == [3] * 10


def test_block_form_retries_the_with_block() -> None:
    clock = MockClock()
    flaky = Flaky(clock, failures=2)
    results = []
    for attempt in Retry(attempts=3, base_s=0.0, clock=clock):
        with attempt:
            results.append((attempt.number,))
            flaky()
    assert results == [(1,), (2,), (3,)]


def test_block_form_reraises_when_attempts_run_out() -> None:
    clock = MockClock()
    flaky = Flaky(clock, failures=10)
    with pytest.raises(ConnectionError):
        for attempt in Retry(attempts=2, base_s=0.0, clock=clock):
            with attempt:
                flaky()
    assert len(flaky.calls) == 2


def test_async_block_form() -> None:
    async def main() -> int:
        clock = MockClock(autojump=True)
        flaky = Flaky(clock, failures=1)
        async for attempt in Retry(attempts=3, base_s=1.0, clock=clock):
            with attempt:
                flaky()
        return len(flaky.calls)

    assert asyncio.run(main()) == 2


@pytest.mark.parametrize("jitter", ["full", "equal", "decorrelated", "none"])
def test_backoff_stays_within_its_formula(jitter: str) -> None:
    retry = Retry(base_s=0.1, multiplier=2.0, cap_s=2.0, jitter=jitter, seed=1)
    previous = 0.0
    for k in range(1, 30):
        wait = retry.backoff_s(k, previous)
        exp = min(2.0, 0.1 * 2 ** (k - 1))
        if jitter == "full":
            assert 0 <= wait <= exp
        elif jitter == "equal":
            assert exp / 2 <= wait <= exp
        elif jitter == "none":
            assert wait == exp
        else:
            assert 0.1 <= wait <= min(2.0, max(0.1, 3 * (previous or 0.1)))
        previous = wait


@pytest.mark.parametrize("jitter", ["full", "equal", "none"])
def test_backoff_of_a_very_late_retry_is_the_cap(jitter: str) -> None:
    # 2.0 ** 1024 overflows a float: the wait must still be the cap, not an OverflowError.
    retry = Retry(base_s=0.1, multiplier=2.0, cap_s=3.0, jitter=jitter, seed=1)
    for k in (1025, 5000, 10**6):
        wait = retry.backoff_s(k, 3.0)
        assert (wait == 3.0) if jitter == "none" else (0.0 <= wait <= 3.0)


def test_full_jitter_is_uniform_over_its_range() -> None:
    retry = Retry(base_s=1.0, cap_s=100.0, jitter="full", seed=42)
    waits = [retry.backoff_s(3, 0.0) for _ in range(20000)]  # range [0, 4]
    mean = sum(waits) / len(waits)
    assert mean == pytest.approx(2.0, abs=0.05)  # U(0,4): mean 2, sd of mean ~0.008


def test_seeded_backoff_is_reproducible() -> None:
    a = Retry(seed=7)
    b = Retry(seed=7)
    assert [a.backoff_s(k, 0.0) for k in range(1, 6)] == [b.backoff_s(k, 0.0) for k in range(1, 6)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"attempts": 0}, "attempts=0"),
        ({"attempts": 2.5}, "attempts=2.5"),
        ({"base_s": -1}, "base_s=-1"),
        ({"multiplier": 0.5}, "multiplier=0.5"),
        ({"jitter": "random"}, "jitter='random'.*'full', 'equal', 'decorrelated', 'none'"),
        ({"retry_on": "ConnectionError"}, "retry_on="),
        ({"retry_statuses": {700}}, "retry_statuses="),
        ({"budget": 3}, "budget=3"),
    ],
)
def test_invalid_config_names_the_argument(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidConfig, match=match):
        Retry(**kwargs)  # type: ignore[arg-type]


@given(st.integers(1, 6), st.lists(st.booleans(), min_size=1, max_size=20), st.integers(0, 2**16))
def test_never_more_attempts_than_configured(
    attempts: int, outcomes: list[bool], seed: int
) -> None:
    clock = MockClock()
    it = iter(outcomes)
    calls = 0

    def call() -> str:
        nonlocal calls
        calls += 1
        if next(it, False):
            return "ok"
        raise ConnectionError

    retry = Retry(attempts=attempts, seed=seed, clock=clock)
    try:
        retry.call(call)
    except ConnectionError:
        assert calls == attempts
    assert 1 <= calls <= attempts
    rng = random.Random(seed)
    assert rng is not None
