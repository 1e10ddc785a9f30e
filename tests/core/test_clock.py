from __future__ import annotations

import asyncio

import pytest

from brownout import MonotonicClock
from brownout.errors import InvalidConfig
from brownout.testing import MockClock


def test_mock_clock_starts_where_told_and_advances() -> None:
    clock = MockClock(5.0)
    clock.advance(1.5)
    assert clock.now() == 6.5


def test_mock_clock_refuses_to_go_backwards() -> None:
    clock = MockClock(10.0)
    with pytest.raises(InvalidConfig, match="seconds=-1"):
        clock.advance(-1)
    with pytest.raises(InvalidConfig, match="when=9"):
        clock.jump_to(9.0)
    assert clock.now() == 10.0


def test_timers_fire_in_time_order_with_the_clock_at_their_time() -> None:
    clock = MockClock()
    seen: list[tuple[str, float]] = []
    clock.call_later(2.0, lambda: seen.append(("b", clock.now())))
    clock.call_later(1.0, lambda: seen.append(("a", clock.now())))
    cancelled = clock.call_later(1.5, lambda: seen.append(("x", clock.now())))
    cancelled.cancel()
    clock.advance(0.5)
    assert seen == []
    clock.advance(5.0)
    assert seen == [("a", 1.0), ("b", 2.0)]
    assert clock.now() == 5.5


def test_sync_sleep_advances_the_mock_clock() -> None:
    clock = MockClock()
    clock.sleep(3.0)
    assert clock.now() == 3.0


def test_async_sleep_waits_for_advance() -> None:
    async def main() -> None:
        clock = MockClock()
        task = asyncio.create_task(clock.asleep(1.0))
        await asyncio.sleep(0)
        clock.advance(0.9)
        await asyncio.sleep(0)
        assert not task.done()
        clock.advance(0.1)
        await asyncio.sleep(0)
        assert task.done()

    asyncio.run(main())


def test_autojump_sleep_moves_time_itself() -> None:
    async def main() -> None:
        clock = MockClock(autojump=True)
        await clock.asleep(2.0)
        assert clock.now() == 2.0

    asyncio.run(main())


def test_monotonic_clock_never_goes_back_and_sleeps_on_the_loop() -> None:
    clock = MonotonicClock()
    a = clock.now()
    b = clock.now()
    assert b >= a

    async def main() -> list[int]:
        fired: list[int] = []
        clock.call_later(0.0, lambda: fired.append(1))
        await clock.asleep(0.001)
        return fired

    assert asyncio.run(main()) == [1]
