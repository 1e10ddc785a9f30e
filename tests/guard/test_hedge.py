from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brownout import Hedge, Retry, RetryBudget, Timeout, deadline
from brownout.errors import DeadlineExceeded, InvalidConfig
from brownout.events import Event, HedgeStarted
from brownout.guard import Pipeline
from brownout.testing import MockClock

T = TypeVar("T")


@dataclass
class Response:
    status_code: int


class Dependency:
    """Attempt ``i`` takes ``plan[i][0]`` seconds of clock time, then returns ``plan[i][1]``
    (or raises it when it is an exception). Records when each attempt started, which were
    cancelled, and which ran their ``finally`` block to the end."""

    def __init__(self, clock: MockClock, plan: list[tuple[float, object]]) -> None:
        self.clock = clock
        self.plan = plan
        self.started: list[float] = []
        self.cancelled: list[int] = []
        self.cleaned: list[int] = []

    async def __call__(self) -> object:
        i = len(self.started)
        self.started.append(self.clock.now())
        seconds, outcome = self.plan[i]
        try:
            await self.clock.asleep(seconds)
        except asyncio.CancelledError:
            self.cancelled.append(i)
            raise
        finally:
            # Clean-up that itself takes a few loop steps: acall must wait for it.
            for _ in range(3):
                await asyncio.sleep(0)
            self.cleaned.append(i)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


async def settle(steps: int = 20) -> None:
    """Let every ready task run (no time passes)."""
    for _ in range(steps):
        await asyncio.sleep(0)


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(main())


def record(hedge: Hedge) -> list[Event]:
    seen: list[Event] = []
    hedge.events.subscribe(seen.append)
    return seen


# -- when hedges start -------------------------------------------------------------------


def test_a_fast_first_attempt_starts_no_hedge_and_leaves_no_timer() -> None:
    async def main() -> None:
        clock = MockClock()
        dep = Dependency(clock, [(0.5, "first")])
        task = asyncio.create_task(Hedge(delay_s=1.0, clock=clock).acall(dep))
        await settle()
        clock.advance(0.5)
        await settle()
        assert task.result() == "first"
        assert dep.started == [0.0]
        assert clock.pending_timers == 0

    run(main)


def test_a_hedge_starts_after_delay_and_the_first_result_wins() -> None:
    async def main() -> None:
        clock = MockClock()
        dep = Dependency(clock, [(10.0, "slow"), (1.0, "fast")])
        task = asyncio.create_task(Hedge(delay_s=2.0, clock=clock).acall(dep))
        await settle()
        clock.advance(1.99)
        await settle()
        assert dep.started == [0.0]
        clock.advance(0.01)
        await settle()
        assert dep.started == [0.0, 2.0]
        assert not task.done()
        clock.advance(1.0)
        await settle()
        assert task.result() == "fast"
        assert dep.cancelled == [0]

    run(main)


def test_no_more_than_max_hedges_start() -> None:
    async def main() -> None:
        clock = MockClock()
        dep = Dependency(clock, [(100.0, f"a{i}") for i in range(5)])
        task = asyncio.create_task(Hedge(delay_s=1.0, max_hedges=2, clock=clock).acall(dep))
        for _ in range(10):
            await settle()
            clock.advance(1.0)
        await settle()
        assert dep.started == [0.0, 1.0, 2.0]
        clock.advance(100.0)
        await settle()
        assert task.result() == "a0"  # the first to finish (started at 0, done at 100)

    run(main)


def test_losers_are_cancelled_and_their_cleanup_finished_before_acall_returns() -> None:
    async def main() -> None:
        clock = MockClock()
        dep = Dependency(clock, [(50.0, "slow"), (50.0, "slower"), (0.5, "fast")])
        hedge = Hedge(delay_s=1.0, max_hedges=2, clock=clock)
        seen_at_return: list[list[int]] = []

        async def caller() -> object:
            result = await hedge.acall(dep)
            seen_at_return.append(sorted(dep.cleaned))
            return result

        task = asyncio.create_task(caller())
        await settle()
        clock.advance(1.0)
        await settle()
        clock.advance(1.0)
        await settle()
        clock.advance(0.5)
        await settle()
        assert task.result() == "fast"
        assert sorted(dep.cancelled) == [0, 1]
        assert seen_at_return == [[0, 1, 2]]

    run(main)


def test_a_failed_attempt_starts_the_next_hedge_at_once() -> None:
    async def main() -> None:
        clock = MockClock()
        dep = Dependency(clock, [(0.5, ConnectionError("down")), (0.5, "ok")])
        hedge = Hedge(delay_s=5.0, clock=clock)
        events = record(hedge)
        task = asyncio.create_task(hedge.acall(dep))
        await settle()
        clock.advance(0.5)
        await settle()
        assert dep.started == [0.0, 0.5]
        clock.advance(0.5)
        await settle()
        assert task.result() == "ok"
        assert events == [HedgeStarted(0.5, "hedge", 2, 0.5)]

    run(main)


def test_after_a_failure_the_next_delay_counts_from_the_new_hedge() -> None:
    async def main() -> None:
        clock = MockClock()
        dep = Dependency(clock, [(0.5, OSError("x")), (10.0, "b"), (10.0, "c")])
        task = asyncio.create_task(Hedge(delay_s=2.0, max_hedges=2, clock=clock).acall(dep))
        for _ in range(6):
            await settle()
            clock.advance(0.5)
        await settle()
        assert dep.started == [0.0, 0.5, 2.5]
        task.cancel()
        await settle()

    run(main)


def test_when_every_attempt_fails_the_last_failure_is_raised() -> None:
    async def main() -> None:
        clock = MockClock()
        dep = Dependency(clock, [(1.0, ConnectionError("first")), (1.0, ConnectionError("last"))])
        task = asyncio.create_task(Hedge(delay_s=5.0, clock=clock).acall(dep))
        await settle()
        clock.advance(1.0)
        await settle()
        clock.advance(1.0)
        await settle()
        with pytest.raises(ConnectionError, match="last"):
            task.result()
        assert dep.started == [0.0, 1.0]

    run(main)


def test_an_exception_not_selected_is_raised_at_once_and_the_others_cancelled() -> None:
    async def main() -> None:
        clock = MockClock()
        dep = Dependency(clock, [(10.0, "slow"), (1.0, KeyError("bug"))])
        hedge = Hedge(delay_s=1.0, hedge_on=ConnectionError, clock=clock)
        task = asyncio.create_task(hedge.acall(dep))
        await settle()
        clock.advance(1.0)
        await settle()
        clock.advance(1.0)
        await settle()
        with pytest.raises(KeyError):
            task.result()
        assert dep.cancelled == [0]
        assert sorted(dep.cleaned) == [0, 1]

    run(main)


def test_hedge_if_selects_which_exceptions_start_a_hedge() -> None:
    async def main() -> tuple[object, object]:
        clock = MockClock()
        hedge = Hedge(delay_s=5.0, hedge_if=lambda e: "retryable" in str(e), clock=clock)
        outcomes = []
        for message in ("retryable", "fatal"):
            dep = Dependency(clock, [(1.0, RuntimeError(message)), (1.0, "ok")])
            task = asyncio.create_task(hedge.acall(dep))
            for _ in range(3):
                await settle()
                clock.advance(1.0)
            await settle()
            outcomes.append(task.exception() or task.result())
        return outcomes[0], outcomes[1]

    hedged, fatal = run(main)
    assert hedged == "ok"
    assert isinstance(fatal, RuntimeError)
    assert str(fatal) == "fatal"


def test_a_result_with_a_hedge_status_is_not_acceptable() -> None:
    async def main() -> None:
        clock = MockClock()
        dep = Dependency(clock, [(1.0, Response(503)), (1.0, Response(200))])
        task = asyncio.create_task(Hedge(delay_s=5.0, hedge_statuses={503}, clock=clock).acall(dep))
        for _ in range(3):
            await settle()
            clock.advance(1.0)
        await settle()
        assert task.result() == Response(200)

    run(main)


def test_when_every_result_is_unacceptable_the_last_one_is_returned() -> None:
    async def main() -> None:
        clock = MockClock()
        dep = Dependency(clock, [(1.0, Response(503)), (1.0, Response(502))])
        hedge = Hedge(delay_s=5.0, hedge_statuses=[502, 503], clock=clock)
        task = asyncio.create_task(hedge.acall(dep))
        for _ in range(3):
            await settle()
            clock.advance(1.0)
        await settle()
        assert task.result() == Response(502)

    run(main)


def test_hedge_if_result_selects_unacceptable_results() -> None:
    async def main() -> None:
        clock = MockClock()
        dep = Dependency(clock, [(1.0, None), (1.0, "value")])
        hedge = Hedge(delay_s=5.0, hedge_if_result=lambda r: r is None, clock=clock)
        task = asyncio.create_task(hedge.acall(dep))
        for _ in range(3):
            await settle()
            clock.advance(1.0)
        await settle()
        assert task.result() == "value"
        assert dep.started == [0.0, 1.0]

    run(main)


def test_delay_zero_starts_every_attempt_at_once_without_a_timer() -> None:
    async def main() -> None:
        clock = MockClock()
        dep = Dependency(clock, [(3.0, "a"), (1.0, "b"), (2.0, "c")])
        hedge = Hedge(delay_s=0, max_hedges=2, clock=clock)
        events = record(hedge)
        task = asyncio.create_task(hedge.acall(dep))
        await settle()
        assert dep.started == [0.0, 0.0, 0.0]
        assert events == [HedgeStarted(0.0, "hedge", 2, 0.0), HedgeStarted(0.0, "hedge", 3, 0.0)]
        clock.advance(1.0)
        await settle()
        assert task.result() == "b"
        assert sorted(dep.cancelled) == [0, 2]
        assert clock.pending_timers == 0

    run(main)


def test_attempts_finishing_together_prefer_an_acceptable_result() -> None:
    # The first attempt fails with an error that is not hedged at the very moment the hedge
    # succeeds: the success wins, whatever order the loop reports them in.
    async def main() -> None:
        clock = MockClock()
        dep = Dependency(clock, [(3.0, KeyError("late bug")), (2.0, "ok")])
        hedge = Hedge(delay_s=1.0, hedge_on=ConnectionError, clock=clock)
        task = asyncio.create_task(hedge.acall(dep))
        await settle()
        clock.advance(1.0)
        await settle()
        clock.advance(2.0)
        await settle()
        assert task.result() == "ok"

    run(main)


def test_attempts_succeeding_together_return_the_earliest_launched() -> None:
    async def main() -> None:
        clock = MockClock()
        dep = Dependency(clock, [(3.0, "first"), (2.0, "second")])
        task = asyncio.create_task(Hedge(delay_s=1.0, clock=clock).acall(dep))
        await settle()
        clock.advance(1.0)
        await settle()
        clock.advance(2.0)
        await settle()
        assert task.result() == "first"

    run(main)


# -- budget and deadline -------------------------------------------------------------------


def test_no_hedge_when_the_token_bucket_refuses() -> None:
    async def main() -> None:
        clock = MockClock()
        budget = RetryBudget.token_bucket(max_tokens=4)
        for _ in range(2):
            budget.on_failure(0.0)  # 2 tokens left: not more than half, so no retry
        dep = Dependency(clock, [(10.0, "only"), (1.0, "hedge")])
        task = asyncio.create_task(Hedge(delay_s=1.0, budget=budget, clock=clock).acall(dep))
        await settle()
        clock.advance(5.0)
        await settle()
        assert dep.started == [0.0]
        clock.advance(5.0)
        await settle()
        assert task.result() == "only"

    run(main)


def test_a_failure_is_raised_without_a_hedge_when_the_budget_refuses() -> None:
    async def main() -> None:
        clock = MockClock()
        budget = RetryBudget.ratio(0.0, min_per_s=0.0)
        dep = Dependency(clock, [(1.0, ConnectionError("down")), (1.0, "never")])
        task = asyncio.create_task(Hedge(delay_s=5.0, budget=budget, clock=clock).acall(dep))
        await settle()
        clock.advance(1.0)
        await settle()
        with pytest.raises(ConnectionError):
            task.result()
        assert dep.started == [0.0]

    run(main)


def test_hedges_and_retries_draw_on_the_same_budget() -> None:
    # One retry per 10 s window in all: the Retry takes it, so the Hedge gets none.
    async def main() -> None:
        clock = MockClock()
        budget = RetryBudget.ratio(0.0, min_per_s=0.1, window_s=10.0)
        retry = Retry(attempts=2, base_s=0.0, budget=budget, clock=clock)
        failures = iter([ConnectionError("once")])

        async def flaky() -> str:
            for exc in failures:
                raise exc
            return "retried"

        assert await retry.acall(flaky) == "retried"
        dep = Dependency(clock, [(10.0, "only"), (1.0, "hedge")])
        task = asyncio.create_task(Hedge(delay_s=1.0, budget=budget, clock=clock).acall(dep))
        await settle()
        clock.advance(2.0)
        await settle()
        assert dep.started == [0.0]
        clock.advance(8.0)
        await settle()
        assert task.result() == "only"

    run(main)


def test_attempt_outcomes_feed_the_token_bucket() -> None:
    async def main() -> float:
        clock = MockClock()
        budget = RetryBudget.token_bucket(max_tokens=10, token_ratio=0.5)
        dep = Dependency(clock, [(1.0, ConnectionError("down")), (1.0, "ok")])
        task = asyncio.create_task(Hedge(delay_s=5.0, budget=budget, clock=clock).acall(dep))
        for _ in range(3):
            await settle()
            clock.advance(1.0)
        await settle()
        assert task.result() == "ok"
        return budget.tokens

    assert run(main) == 9.5  # one failure (-1), one success (+0.5)


@settings(max_examples=25, deadline=None)
@given(calls=st.integers(1, 40), ratio=st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0]))
def test_concurrent_calls_never_hedge_more_than_the_ratio_budget_allows(
    calls: int, ratio: float
) -> None:
    async def main() -> int:
        clock = MockClock()
        budget = RetryBudget.ratio(ratio, min_per_s=0.0, window_s=100.0)
        hedge = Hedge(delay_s=1.0, max_hedges=3, budget=budget, clock=clock)
        started: list[HedgeStarted] = []
        hedge.events.subscribe(lambda e: started.append(e) if isinstance(e, HedgeStarted) else 0)

        async def slow() -> str:
            await clock.asleep(10.0)
            return "ok"

        tasks = [asyncio.create_task(hedge.acall(slow)) for _ in range(calls)]
        for _ in range(5):
            await settle(5)
            clock.advance(1.0)
        clock.advance(10.0)
        results = await asyncio.gather(*tasks)
        assert results == ["ok"] * calls
        return len(started)

    hedges = run(main)
    assert hedges <= ratio * calls + 1e-9
    assert hedges >= min(3 * calls, math.floor(ratio * calls + 1e-9)) - 1


def test_no_hedge_when_the_usual_duration_does_not_fit_the_deadline() -> None:
    async def main() -> tuple[list[float], list[float]]:
        clock = MockClock()
        hedge = Hedge(delay_s=2.0, clock=clock)
        # Teach the hedge that a successful attempt takes 3 s.
        warm = asyncio.create_task(hedge.acall(Dependency(clock, [(3.0, "warm")])))
        await settle()
        clock.advance(3.0)
        await settle()
        assert warm.result() == "warm"

        async def within(seconds: float, dep: Dependency) -> object:
            with deadline(seconds, clock=clock):
                return await hedge.acall(dep)

        tight = Dependency(clock, [(5.0, "slow"), (1.0, "hedge")])
        roomy = Dependency(clock, [(5.0, "slow"), (1.0, "hedge")])
        tasks = [
            asyncio.create_task(within(4.0, tight)),  # at the hedge: 2 s left < 3 s
            asyncio.create_task(within(10.0, roomy)),  # at the hedge: 8 s left >= 3 s
        ]
        for _ in range(6):
            await settle()
            clock.advance(1.0)
        await asyncio.gather(*tasks)
        start = 3.0
        return [t - start for t in tight.started], [t - start for t in roomy.started]

    tight, roomy = run(main)
    assert tight == [0.0]
    assert roomy == [0.0, 2.0]


def test_no_hedge_once_the_deadline_has_passed() -> None:
    async def main() -> None:
        clock = MockClock()
        dep = Dependency(clock, [(5.0, "slow"), (1.0, "hedge")])
        hedge = Hedge(delay_s=2.0, clock=clock)

        async def caller() -> object:
            with deadline(1.0, clock=clock):
                return await hedge.acall(dep)

        task = asyncio.create_task(caller())
        for _ in range(6):
            await settle()
            clock.advance(1.0)
        await settle()
        assert task.result() == "slow"
        assert dep.started == [0.0]

    run(main)


# -- cancellation and sync use -------------------------------------------------------------


def test_cancelling_the_caller_cancels_and_awaits_every_attempt() -> None:
    async def main() -> None:
        clock = MockClock()
        dep = Dependency(clock, [(10.0, "a"), (10.0, "b"), (10.0, "c")])
        task = asyncio.create_task(Hedge(delay_s=1.0, max_hedges=2, clock=clock).acall(dep))
        for _ in range(2):
            await settle()
            clock.advance(1.0)
        await settle()
        assert len(dep.started) == 3
        task.cancel()
        await settle()
        assert task.cancelled()
        assert sorted(dep.cancelled) == [0, 1, 2]
        assert sorted(dep.cleaned) == [0, 1, 2]
        assert clock.pending_timers == 0

    run(main)


def test_cancellation_raised_by_an_attempt_is_passed_on_not_hedged() -> None:
    async def main() -> None:
        clock = MockClock()
        calls = 0

        async def cancelled() -> None:
            nonlocal calls
            calls += 1
            raise asyncio.CancelledError

        hedge = Hedge(delay_s=0.0, max_hedges=1, hedge_on=BaseException, clock=clock)
        with pytest.raises(asyncio.CancelledError):
            await hedge.acall(cancelled)
        assert calls == 2  # both started at once; neither was retried as a failure

    run(main)


def test_a_sync_call_raises_type_error_naming_the_reason() -> None:
    calls = 0

    def fn() -> int:
        nonlocal calls
        calls += 1
        return 1

    hedge = Hedge(name="search")
    with pytest.raises(TypeError, match=r"Hedge 'search' runs async calls only"):
        hedge.call(fn)
    wrapped = hedge(fn)
    with pytest.raises(TypeError, match="async calls only"):
        wrapped()
    assert calls == 0


def test_as_a_decorator_on_an_async_def() -> None:
    clock = MockClock()

    @Hedge(delay_s=1.0, clock=clock)
    async def answer(x: int, *, plus: int) -> int:
        """Docstring kept."""
        await asyncio.sleep(0)
        return x + plus

    async def main() -> int:
        return await answer(40, plus=2)

    assert asyncio.run(main()) == 42
    assert answer.__name__ == "answer"
    assert answer.__doc__ == "Docstring kept."


def test_attempt_timeouts_inside_a_hedge_start_the_next_hedge() -> None:
    # Hedge outside a per-attempt Timeout: each attempt runs in its own task with its own
    # deadline; the one that overruns is cut off and the hedge takes over.
    async def main() -> None:
        clock = MockClock()
        dep = Dependency(clock, [(100.0, "hung"), (0.5, "ok")])
        pipeline = Pipeline([Hedge(delay_s=5.0, clock=clock), Timeout(1.0, clock=clock)])
        task = asyncio.create_task(pipeline.acall(dep))
        await settle()
        clock.advance(1.0)
        await settle()
        assert dep.started == [0.0, 1.0]
        assert dep.cancelled == [0]
        clock.advance(0.5)
        await settle()
        assert task.result() == "ok"

    run(main)


def test_a_total_timeout_outside_a_hedge_cancels_every_attempt() -> None:
    async def main() -> None:
        clock = MockClock()
        dep = Dependency(clock, [(100.0, "a"), (100.0, "b")])
        pipeline = Pipeline([Timeout(3.0, clock=clock), Hedge(delay_s=1.0, clock=clock)])
        task = asyncio.create_task(pipeline.acall(dep))
        for _ in range(3):
            await settle()
            clock.advance(1.0)
        await settle()
        with pytest.raises(DeadlineExceeded):
            task.result()
        assert sorted(dep.cleaned) == [0, 1]

    run(main)


# -- events and configuration -----------------------------------------------------------


def test_hedge_started_events_number_attempts_and_time_them_from_the_call() -> None:
    async def main() -> list[Event]:
        clock = MockClock(start=100.0)
        hedge = Hedge(delay_s=1.5, max_hedges=2, name="search", clock=clock)
        events = record(hedge)
        dep = Dependency(clock, [(10.0, "a"), (10.0, "b"), (10.0, "c")])
        task = asyncio.create_task(hedge.acall(dep))
        for _ in range(4):
            await settle()
            clock.advance(1.5)
        task.cancel()
        await settle()
        return events

    assert run(main) == [
        HedgeStarted(101.5, "search", 2, 1.5),
        HedgeStarted(103.0, "search", 3, 3.0),
    ]


@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"delay_s": -1.0}, "delay_s"),
        ({"delay_s": float("nan")}, "delay_s"),
        ({"max_hedges": 0}, "max_hedges"),
        ({"max_hedges": 1.5}, "max_hedges"),
        ({"budget": "lots"}, "budget"),
        ({"hedge_on": "oops"}, "hedge_on"),
        ({"hedge_statuses": {99}}, "hedge_statuses"),
        ({"hedge_if": 3}, "hedge_if"),
        ({"hedge_if_result": "x"}, "hedge_if_result"),
    ],
)
def test_invalid_config_names_the_argument(options: dict[str, Any], argument: str) -> None:
    with pytest.raises(InvalidConfig, match=rf"Hedge: {argument}=") as info:
        Hedge(**options)
    assert info.value.name == argument
    assert isinstance(info.value, ValueError)


def test_repr_shows_the_config_only() -> None:
    text = repr(Hedge(delay_s=0.25, max_hedges=3, hedge_statuses=[503], clock=MockClock()))
    assert text.startswith("Hedge(delay_s=0.25, max_hedges=3, ")
    assert "hedge_statuses=frozenset({503})" in text
    assert "clock" not in text
    assert "_state" not in text
