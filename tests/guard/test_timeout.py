from __future__ import annotations

import asyncio

import pytest

from brownout import Timeout, deadline, remaining
from brownout.errors import DeadlineExceeded, InvalidConfig
from brownout.events import DeadlineExpired, Event
from brownout.testing import MockClock


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_async_timeout_cancels_at_expiry_and_raises_deadline_exceeded() -> None:
    async def main() -> None:
        clock = MockClock()
        timeout = Timeout(1.0, clock=clock)
        finished: list[str] = []

        async def slow() -> None:
            try:
                await clock.asleep(10)
            finally:
                finished.append("cleanup")

        task = asyncio.create_task(timeout.acall(slow))
        await _settle()
        clock.advance(0.99)
        await _settle()
        assert not task.done()
        clock.advance(0.02)
        await _settle()
        with pytest.raises(DeadlineExceeded) as info:
            await task
        assert info.value.started is True
        assert info.value.timeout_s == 1.0
        assert finished == ["cleanup"]

    asyncio.run(main())


def test_async_result_within_the_timeout_is_returned_and_task_not_cancelled() -> None:
    async def main() -> None:
        clock = MockClock()
        timeout = Timeout(1.0, clock=clock)

        async def quick() -> int:
            await clock.asleep(0.5)
            return 7

        task = asyncio.create_task(timeout.acall(quick))
        await _settle()
        clock.advance(0.5)
        await _settle()
        assert await task == 7
        clock.advance(5)  # the timer must not cancel anything afterwards
        await _settle()
        current = asyncio.current_task()
        assert current is not None
        assert current.cancelling() == 0

    asyncio.run(main())


def test_outside_cancellation_is_passed_on_untouched() -> None:
    async def main() -> None:
        clock = MockClock()
        timeout = Timeout(1.0, clock=clock)
        task = asyncio.create_task(timeout.acall(clock.asleep, 10))
        await _settle()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_many_concurrent_timeouts_each_fire_at_their_own_deadline() -> None:
    async def main() -> None:
        clock = MockClock()
        timeout = Timeout(1.0, clock=clock)
        tasks = []
        for i in range(20):
            tasks.append(asyncio.create_task(timeout.acall(clock.asleep, 10)))
            await _settle()
            clock.advance(0.1 if i < 19 else 0.0)
        # Task i started at 0.1*i; at now=1.9 those started at <= 0.9 have expired.
        assert clock.now() == pytest.approx(1.9)
        clock.advance(0.0)
        await _settle()
        done = [t.done() for t in tasks]
        assert done == [i <= 9 for i in range(20)]
        clock.advance(1.0)
        await _settle()
        assert all(t.done() for t in tasks)
        for t in tasks:
            with pytest.raises(DeadlineExceeded):
                t.result()

    asyncio.run(main())


def test_inner_deadline_is_the_earlier_of_own_and_outer() -> None:
    clock = MockClock()
    seen: list[float | None] = []
    with deadline(0.5, clock=clock):
        Timeout(2.0, clock=clock).call(lambda: seen.append(remaining()))
    Timeout(2.0, clock=clock).call(lambda: seen.append(remaining()))
    assert seen == [0.5, 2.0]


def test_timeout_none_enforces_only_the_outer_deadline() -> None:
    async def main() -> None:
        clock = MockClock()
        timeout = Timeout(None, clock=clock)
        assert await timeout.acall(asyncio.sleep, 0, "free") == "free"  # no deadline, no limit
        with deadline(1.0, clock=clock):
            task = asyncio.create_task(timeout.acall(clock.asleep, 5))
            await _settle()
        clock.advance(1.0)
        await _settle()
        with pytest.raises(DeadlineExceeded):
            await task

    asyncio.run(main())


def test_sync_refuses_to_start_when_no_budget_is_left() -> None:
    clock = MockClock()
    ran: list[int] = []
    with deadline(1.0, clock=clock):
        clock.advance(1.0)
        with pytest.raises(DeadlineExceeded) as info:
            Timeout(5.0, clock=clock).call(lambda: ran.append(1))
    assert ran == []
    assert info.value.started is False


def test_sync_call_that_returns_late_counts_as_a_timeout() -> None:
    clock = MockClock()
    timeout = Timeout(1.0, clock=clock)
    assert timeout.call(lambda: clock.advance(0.5) or "ok") == "ok"
    with pytest.raises(DeadlineExceeded):
        timeout.call(lambda: clock.advance(1.5))


def test_sync_exception_from_the_call_is_not_masked() -> None:
    clock = MockClock()

    def boom() -> None:
        clock.advance(2)
        raise KeyError("x")

    with pytest.raises(KeyError):
        Timeout(1.0, clock=clock).call(boom)


def test_context_manager_forms() -> None:
    clock = MockClock()
    timeout = Timeout(1.0, clock=clock)
    with timeout:
        assert remaining() == 1.0
    assert remaining() is None
    with pytest.raises(DeadlineExceeded), timeout:
        clock.advance(2)

    async def main() -> None:
        task = asyncio.create_task(_guarded())
        await _settle()
        clock.advance(1.0)
        await _settle()
        with pytest.raises(DeadlineExceeded):
            await task

    async def _guarded() -> None:
        async with timeout:
            await clock.asleep(10)

    asyncio.run(main())


def test_decorator_on_async_and_sync_functions() -> None:
    clock = MockClock()
    timeout = Timeout(1.0, clock=clock)

    @timeout
    def add(a: int, b: int) -> int:
        return a + b

    @timeout
    async def aadd(a: int, b: int) -> int:
        return a + b

    assert add(1, 2) == 3
    assert asyncio.run(aadd(2, 3)) == 5
    assert add.__name__ == "add"


def test_expiry_emits_an_event() -> None:
    clock = MockClock()
    timeout = Timeout(1.0, clock=clock, name="db")
    seen: list[Event] = []
    timeout.events.subscribe(seen.append)
    with pytest.raises(DeadlineExceeded):
        timeout.call(lambda: clock.advance(2))
    assert seen == [DeadlineExpired(2.0, "db", 1.0, True)]


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "1s", True])
def test_invalid_seconds_are_refused(bad: object) -> None:
    with pytest.raises(InvalidConfig, match="Timeout: seconds="):
        Timeout(bad)  # type: ignore[arg-type]


def test_repr_shows_the_config() -> None:
    assert repr(Timeout(2.5, name="payments")) == "Timeout(seconds=2.5, name='payments')"
