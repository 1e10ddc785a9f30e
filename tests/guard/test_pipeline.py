from __future__ import annotations

import asyncio
import inspect
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from brownout import Bulkhead, Fallback, Hedge, Pipeline, Retry, RetryBudget, Timeout
from brownout._clock import Clock, monotonic_clock
from brownout.errors import DeadlineExceeded, InvalidConfig
from brownout.events import (
    DeadlineExpired,
    Event,
    Events,
    FallbackUsed,
    RetryAbandoned,
    RetryScheduled,
)
from brownout.guard import RECOMMENDED_ORDER, AdaptiveThrottle, Policy
from brownout.guard._policy import AsyncNext, Call, SyncNext
from brownout.testing import MockClock

# -- recording policies ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Recorder(Policy):
    """Logs ``name>`` on the way in and ``<name`` on the way out; ``kind`` is set per subclass
    so the order check can be exercised without the real breaker, bulkhead or cache."""

    name: str
    log: list[str] = field(default_factory=list, compare=False, repr=False)
    clock: Clock = field(default=monotonic_clock, repr=False, compare=False)
    events: Events = field(default_factory=Events, repr=False, compare=False)

    kind = "recorder"

    def _run(self, nxt: SyncNext, call: Call) -> Any:
        self.log.append(f"{self.name}>")
        try:
            return nxt(call)
        finally:
            self.log.append(f"<{self.name}")

    async def _arun(self, nxt: AsyncNext, call: Call) -> Any:
        self.log.append(f"{self.name}>")
        try:
            return await nxt(call)
        finally:
            self.log.append(f"<{self.name}")


class FakeBreaker(Recorder):
    __slots__ = ()
    kind = "circuit_breaker"


class FakeBulkhead(Recorder):
    __slots__ = ()
    kind = "bulkhead"


class FakeCache(Recorder):
    __slots__ = ()
    kind = "cache"


class Flaky:
    """Attempt ``i`` takes ``durations[i]`` seconds (0 when missing), then fails with
    ``ConnectionError`` while ``i < failures``, else returns ``"ok"``."""

    def __init__(self, clock: MockClock, failures: int, durations: list[float] = ()) -> None:  # type: ignore[assignment]
        self.clock = clock
        self.failures = failures
        self.durations = list(durations)
        self.calls: list[float] = []

    def _outcome(self, i: int) -> str:
        if i < self.failures:
            raise ConnectionError(f"attempt {i + 1} failed")
        return "ok"

    def _duration(self, i: int) -> float:
        return self.durations[i] if i < len(self.durations) else 0.0

    def __call__(self) -> str:
        i = len(self.calls)
        self.calls.append(self.clock.now())
        self.clock.sleep(self._duration(i))
        return self._outcome(i)

    async def acall(self) -> str:
        i = len(self.calls)
        self.calls.append(self.clock.now())
        await self.clock.asleep(self._duration(i))
        return self._outcome(i)


def collect(pipeline: Pipeline) -> list[Event]:
    events: list[Event] = []
    pipeline.subscribe(events.append)
    return events


# -- wrapping order --------------------------------------------------------------------------


def test_the_first_policy_is_outermost_in_sync_calls() -> None:
    log: list[str] = []
    pipeline = Pipeline([Recorder(name=n, log=log) for n in "abc"])

    def fn(x: int) -> int:
        log.append(f"fn({x})")
        return x * 2

    assert pipeline.call(fn, 21) == 42
    assert log == ["a>", "b>", "c>", "fn(21)", "<c", "<b", "<a"]


def test_the_first_policy_is_outermost_in_async_calls() -> None:
    log: list[str] = []
    pipeline = Pipeline([Recorder(name=n, log=log) for n in "abc"])

    async def fn(x: int) -> int:
        log.append(f"fn({x})")
        await asyncio.sleep(0)
        return x * 2

    assert asyncio.run(pipeline.acall(fn, 21)) == 42
    assert log == ["a>", "b>", "c>", "fn(21)", "<c", "<b", "<a"]


def test_a_retry_reruns_only_the_policies_inside_it() -> None:
    log: list[str] = []
    clock = MockClock()
    flaky = Flaky(clock, failures=1)
    pipeline = Pipeline(
        [Recorder(name="out", log=log), Retry(base_s=0, clock=clock), Recorder(name="in", log=log)]
    )
    assert pipeline.call(flaky) == "ok"
    assert log == ["out>", "in>", "<in", "in>", "<in", "<out"]


def test_a_timeout_outside_the_retry_bounds_the_whole_retried_call() -> None:
    clock = MockClock()
    flaky = Flaky(clock, failures=10, durations=[0.4] * 10)
    pipeline = Pipeline(
        [
            Timeout(1.0, clock=clock),
            Retry(attempts=10, base_s=0.1, multiplier=1, jitter="none", clock=clock),
        ]
    )
    events = collect(pipeline)
    with pytest.raises(ConnectionError, match="attempt 2"):
        pipeline.call(flaky)
    # attempts at 0 and 0.5; at 0.9 a 0.1 s backoff no longer fits the 0.1 s left.
    assert flaky.calls == [0.0, 0.5]
    assert events[-1] == RetryAbandoned(0.9, "retry", 2, "deadline")


def test_a_timeout_inside_the_retry_bounds_each_attempt() -> None:
    clock = MockClock()
    flaky = Flaky(clock, failures=0, durations=[1.5, 1.5, 0.5])
    pipeline = Pipeline(
        [
            Retry(attempts=3, base_s=0.0, retry_on=TimeoutError, clock=clock),
            Timeout(1.0, clock=clock),
        ]
    )
    assert pipeline.call(flaky) == "ok"  # two overruns raised DeadlineExceeded and were retried
    assert flaky.calls == [0.0, 1.5, 3.0]


def test_async_total_timeout_cancels_the_retried_call_as_a_whole() -> None:
    async def main() -> None:
        clock = MockClock()
        flaky = Flaky(clock, failures=0, durations=[10.0, 10.0, 0.0])
        pipeline = Pipeline([Timeout(1.0, clock=clock), Retry(base_s=0.0, clock=clock)])
        task = asyncio.create_task(pipeline.acall(flaky.acall))
        await asyncio.sleep(0)
        clock.advance(1.0)
        with pytest.raises(DeadlineExceeded):
            await task
        assert flaky.calls == [0.0]

    asyncio.run(main())


def test_async_attempt_timeout_cuts_each_attempt_and_the_retry_goes_on() -> None:
    async def main() -> None:
        clock = MockClock()
        flaky = Flaky(clock, failures=0, durations=[10.0, 10.0, 0.0])
        pipeline = Pipeline([Retry(base_s=0.0, clock=clock), Timeout(1.0, clock=clock)])
        task = asyncio.create_task(pipeline.acall(flaky.acall))
        for _ in range(2):
            for _ in range(5):
                await asyncio.sleep(0)
            clock.advance(1.0)
        assert await task == "ok"
        assert flaky.calls == [0.0, 1.0, 2.0]

    asyncio.run(main())


# -- the recommended order -------------------------------------------------------------------


def _kinds() -> dict[str, Any]:
    return {
        "fallback": lambda: Fallback.value(None),
        "cache": lambda: FakeCache(name="cache"),
        "timeout": lambda: Timeout(1.0),
        "retry": Retry,
        "hedge": Hedge,
        "breaker": lambda: FakeBreaker(name="breaker"),
        "bulkhead": lambda: FakeBulkhead(name="bulkhead"),
        "throttle": AdaptiveThrottle,
    }


def build(*names: str) -> list[Policy]:
    kinds = _kinds()
    return [kinds[n]() for n in names]


@pytest.mark.parametrize(
    "names",
    [
        ("fallback", "cache", "timeout", "retry", "breaker", "bulkhead", "timeout"),
        ("fallback", "timeout", "hedge", "breaker", "bulkhead", "timeout"),
        ("fallback", "timeout", "retry", "throttle", "bulkhead", "timeout"),
        ("retry", "breaker", "throttle", "timeout"),
        ("timeout", "timeout", "retry"),
        ("retry", "timeout"),
        ("bulkhead", "timeout"),  # no retry: the timeout inside a bulkhead bounds each call
        ("breaker", "timeout"),
        ("fallback", "timeout"),
        ("cache",),
        (),
    ],
)
def test_recommended_orders_are_accepted(names: tuple[str, ...]) -> None:
    policies = build(*names)
    assert Pipeline(policies).policies == tuple(policies)


@pytest.mark.parametrize(
    ("names", "problem"),
    [
        (("retry", "retry"), "2 retries in one pipeline"),
        (("hedge", "hedge"), "2 hedges in one pipeline"),
        (("retry", "hedge"), "a retry and a hedge"),
        (("fallback", "fallback"), "2 fallbacks"),
        (("breaker", "breaker"), "2 circuit breakers"),
        (("retry", "fallback"), "fallback inside retry"),
        (("timeout", "fallback"), "fallback inside total timeout"),
        (("cache", "fallback"), "fallback inside cache"),
        (("retry", "cache"), "cache inside retry"),
        (("bulkhead", "retry"), "retry inside bulkhead"),
        (("bulkhead", "breaker"), "circuit breaker inside bulkhead"),
        (("retry", "timeout", "breaker"), "circuit breaker inside attempt timeout"),
        (("breaker", "timeout", "retry"), "retry inside attempt timeout"),
        (("throttle", "retry"), "retry inside adaptive throttle"),
        (("bulkhead", "throttle"), "adaptive throttle inside bulkhead"),
    ],
)
def test_wrong_orders_are_refused_naming_the_problem(names: tuple[str, ...], problem: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        Pipeline(build(*names))
    error = info.value
    assert isinstance(error, ValueError)
    assert (error.owner, error.name) == ("Pipeline", "policies")
    message = str(error)
    assert problem in message
    assert ", ".join(RECOMMENDED_ORDER) in message
    assert "check_order=False" in message


def test_check_order_false_accepts_a_deliberate_order_and_runs_it() -> None:
    log: list[str] = []
    clock = MockClock()
    inner_retry, outer_retry = Retry(base_s=0, clock=clock), Retry(base_s=0, clock=clock)
    pipeline = Pipeline(
        [FakeBulkhead(name="bulkhead", log=log), outer_retry, inner_retry], check_order=False
    )
    flaky = Flaky(clock, failures=100)
    with pytest.raises(ConnectionError):
        pipeline.call(flaky)
    assert len(flaky.calls) == 9  # 3 x 3: layered retries multiply, as the check warns
    assert log == ["bulkhead>", "<bulkhead"]


def test_duplicates_are_found_across_nested_pipelines() -> None:
    with pytest.raises(InvalidConfig, match="2 retries"):
        Pipeline([Retry(), Pipeline([Retry()])])
    with pytest.raises(InvalidConfig, match="fallback inside retry"):
        Pipeline([Pipeline([Retry()]), Fallback.value(None)])


def test_policies_must_be_brownout_policies() -> None:
    with pytest.raises(InvalidConfig, match="a sequence of brownout policies"):
        Pipeline([Retry(), lambda f: f])  # type: ignore[list-item]
    with pytest.raises(InvalidConfig, match="not one policy"):
        Pipeline(Retry())  # type: ignore[arg-type]


# -- nesting ---------------------------------------------------------------------------------


def test_a_nested_pipeline_runs_in_place_sync_and_async() -> None:
    log: list[str] = []
    inner = Pipeline([Recorder(name="b", log=log), Recorder(name="c", log=log)])
    outer = Pipeline([Recorder(name="a", log=log), inner, Recorder(name="d", log=log)])
    assert outer.call(lambda: "x") == "x"
    expected = ["a>", "b>", "c>", "d>", "<d", "<c", "<b", "<a"]
    assert log == expected
    log.clear()

    async def fn() -> str:
        return "y"

    assert asyncio.run(outer.acall(fn)) == "y"
    assert log == expected


def test_a_pipeline_composes_with_what_wraps_it() -> None:
    # Used as a policy by something that passes its own ``nxt`` (not a Pipeline).
    log: list[str] = []
    inner = Pipeline([Recorder(name="in", log=log)])

    def nxt(call: Call) -> Any:
        log.append("next")
        return call.fn(*call.args, **call.kwargs)

    assert inner._run(nxt, Call(lambda v: v + 1, (1,), {})) == 2
    assert log == ["in>", "next", "<in"]


# -- events ----------------------------------------------------------------------------------


def test_subscribe_receives_events_from_every_policy_including_nested_ones() -> None:
    clock = MockClock()
    flaky = Flaky(clock, failures=0, durations=[2.0] * 10)  # answers, but too late
    pipeline = Pipeline(
        [
            Fallback.value("fallback", clock=clock),
            Pipeline(
                [
                    Retry(attempts=2, base_s=0.5, jitter="none", clock=clock),
                    Timeout(1.0, clock=clock),
                ]
            ),
        ]
    )
    events = collect(pipeline)
    assert pipeline.call(flaky) == "fallback"
    assert [type(e) for e in events] == [
        DeadlineExpired,
        RetryScheduled,
        DeadlineExpired,
        RetryAbandoned,
        FallbackUsed,
    ]
    assert events[1] == RetryScheduled(2.0, "retry", 1, 0.5, "DeadlineExceeded")
    assert events[-1] == FallbackUsed(4.5, "fallback", "DeadlineExceeded")


def test_unsubscribe_stops_every_policy_from_reporting() -> None:
    clock = MockClock()
    fallback, retry = Fallback.value(0, clock=clock), Retry(base_s=0, clock=clock)
    pipeline = Pipeline([fallback, Pipeline([retry])])
    events: list[Event] = []
    unsubscribe = pipeline.subscribe(events.append)
    assert fallback.events
    assert retry.events
    unsubscribe()
    assert not fallback.events
    assert not retry.events
    pipeline.call(Flaky(clock, failures=5))
    assert events == []


# -- call forms ------------------------------------------------------------------------------


def test_as_a_decorator_on_a_plain_function() -> None:
    clock = MockClock()
    flaky = Flaky(clock, failures=2)
    pipeline = Pipeline([Fallback.value("fb"), Retry(base_s=0.1, clock=clock)])

    @pipeline
    def fetch(tag: str) -> str:
        """Fetch."""
        return f"{tag}:{flaky()}"

    assert fetch("a") == "a:ok"
    assert fetch.__name__ == "fetch"
    assert not inspect.iscoroutinefunction(fetch)


def test_as_a_decorator_on_an_async_def() -> None:
    clock = MockClock(autojump=True)
    flaky = Flaky(clock, failures=2)
    pipeline = Pipeline([Fallback.value("fb"), Retry(base_s=0.1, clock=clock)])

    @pipeline
    async def fetch(tag: str) -> str:
        return f"{tag}:{await flaky.acall()}"

    assert inspect.iscoroutinefunction(fetch)
    assert asyncio.run(fetch("a")) == "a:ok"


def test_a_hedge_in_a_pipeline_refuses_sync_calls() -> None:
    pipeline = Pipeline([Fallback.value("fb", fallback_on=ConnectionError), Hedge()])
    with pytest.raises(TypeError, match="async calls only"):
        pipeline.call(lambda: 1)


def test_repr_shows_the_policies() -> None:
    text = repr(Pipeline([Retry(attempts=2)], name="db"))
    assert text.startswith("Pipeline(policies=(Retry(attempts=2,")
    assert text.endswith("check_order=True, name='db')")


# -- a full pipeline against a flaky dependency ----------------------------------------------


def full_pipeline(clock: MockClock, budget: RetryBudget) -> Pipeline:
    return Pipeline(
        [
            Fallback.value("degraded", clock=clock),
            Timeout(5.0, clock=clock),
            Retry(attempts=4, base_s=0.1, jitter="none", budget=budget, clock=clock),
            Timeout(1.0, clock=clock),
        ]
    )


def test_full_pipeline_recovers_from_a_hang_and_an_error() -> None:
    clock = MockClock(autojump=True)
    pipeline = full_pipeline(clock, RetryBudget.token_bucket(max_tokens=10))
    events = collect(pipeline)

    attempt = 0

    async def dependency() -> str:
        nonlocal attempt
        attempt += 1
        if attempt == 1:
            # Hangs: the attempt timeout (1 s) cuts it off. autojump moves the clock by the
            # whole sleep at once, so keep it short of the total timeout (5 s).
            await clock.asleep(3.0)
        elif attempt == 2:
            raise ConnectionError("reset")
        return f"answer after {attempt} attempts"

    assert asyncio.run(pipeline.acall(dependency)) == "answer after 3 attempts"
    scheduled = [e for e in events if isinstance(e, RetryScheduled)]
    assert [e.cause for e in scheduled] == ["DeadlineExceeded", "ConnectionError"]
    assert not any(isinstance(e, FallbackUsed) for e in events)


def test_full_pipeline_serves_the_fallback_when_the_total_timeout_runs_out() -> None:
    clock = MockClock(autojump=True)
    pipeline = full_pipeline(clock, RetryBudget.token_bucket(max_tokens=100))
    events = collect(pipeline)
    calls = 0

    async def hangs() -> str:
        nonlocal calls
        calls += 1
        await clock.asleep(60.0)
        return "never"

    assert asyncio.run(pipeline.acall(hangs)) == "degraded"
    assert [e for e in events if isinstance(e, FallbackUsed)] == [
        FallbackUsed(clock.now(), "fallback", "DeadlineExceeded")
    ]
    assert 1 <= calls <= 4


def test_full_pipeline_under_total_failure_stays_within_the_budget() -> None:
    async def main() -> tuple[int, list[str]]:
        clock = MockClock(autojump=True)
        budget = RetryBudget.token_bucket(max_tokens=4, token_ratio=0.1)
        pipeline = full_pipeline(clock, budget)
        attempts = 0

        async def down() -> str:
            nonlocal attempts
            attempts += 1
            raise ConnectionError("down")

        results = [await pipeline.acall(down) for _ in range(20)]
        return attempts, results

    attempts, results = asyncio.run(main())
    assert results == ["degraded"] * 20
    # gRPC-style bucket of 4: retries stop once it holds no more than 2 tokens.
    assert attempts <= 20 + 2


def test_full_pipeline_sync_with_a_ratio_budget() -> None:
    clock = MockClock()
    budget = RetryBudget.ratio(0.1, min_per_s=0.0, window_s=100.0)
    pipeline = full_pipeline(clock, budget)
    attempts = 0

    def down() -> str:
        nonlocal attempts
        attempts += 1
        clock.sleep(0.01)
        raise ConnectionError("down")

    assert [pipeline.call(down) for _ in range(50)] == ["degraded"] * 50
    assert attempts <= 50 + 5  # retries <= 10% of requests


# -- concurrency -----------------------------------------------------------------------------


def test_concurrent_async_calls_keep_their_own_attempt_counts() -> None:
    async def main() -> list[str]:
        clock = MockClock()
        pipeline = Pipeline(
            [Timeout(100.0, clock=clock), Retry(attempts=5, base_s=0.0, clock=clock)]
        )
        counts: dict[int, int] = {}

        async def flaky(key: int) -> str:
            counts[key] = counts.get(key, 0) + 1
            await asyncio.sleep(0)
            if counts[key] <= key % 4:
                raise ConnectionError(key)
            return f"{key}:{counts[key]}"

        return await asyncio.gather(*(pipeline.acall(flaky, k) for k in range(40)))

    assert asyncio.run(main()) == [f"{k}:{k % 4 + 1}" for k in range(40)]


def test_concurrent_threads_keep_their_own_attempt_counts() -> None:
    clock = MockClock()
    pipeline = Pipeline([Fallback.value("fb"), Retry(attempts=3, base_s=0.0, clock=clock)])
    local = threading.local()

    def flaky(key: int) -> str:
        if getattr(local, "key", None) != key:
            local.key, local.count = key, 0
        local.count += 1
        if local.count <= key % 3:
            raise ConnectionError(key)
        return f"{key}:{local.count}"

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda k: pipeline.call(flaky, k), range(200)))
    assert results == [f"{k}:{k % 3 + 1}" for k in range(200)]


def test_full_pipeline_with_a_real_bulkhead_sheds_to_the_fallback() -> None:
    # The bulkhead's rejection is not retried (Retry leaves brownout's rejections alone) and
    # the fallback serves it; the call holding the slot goes through.
    async def main() -> list[str]:
        clock = MockClock()
        pipeline = Pipeline(
            [
                Fallback.value("busy", clock=clock),
                Timeout(10.0, clock=clock),
                Retry(attempts=3, base_s=0.0, clock=clock),
                Bulkhead(1, clock=clock),
                Timeout(5.0, clock=clock),
            ]
        )
        events = collect(pipeline)
        calls = 0

        async def slow() -> str:
            nonlocal calls
            calls += 1
            await clock.asleep(1.0)
            return "ok"

        tasks = [asyncio.create_task(pipeline.acall(slow)) for _ in range(3)]
        for _ in range(5):
            await asyncio.sleep(0)
        clock.advance(1.0)
        results = await asyncio.gather(*tasks)
        assert calls == 1
        assert not any(isinstance(e, RetryScheduled) for e in events)
        assert [e.cause for e in events if isinstance(e, FallbackUsed)] == ["BulkheadFull"] * 2
        return results

    assert asyncio.run(main()) == ["ok", "busy", "busy"]
