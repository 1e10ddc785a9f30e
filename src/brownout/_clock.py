"""Clocks: the only place in brownout that reads real time.

Policies never read time themselves: they are handed a :class:`Clock` and ask it. The
real clock is :class:`MonotonicClock`; tests use :class:`brownout.testing.MockClock` and the
simulator its own virtual clock, and the policies cannot tell the difference.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "MonotonicClock", "TimerHandle", "monotonic_clock", "wall_time"]


class TimerHandle(Protocol):
    """What :meth:`Clock.call_later` returns: something that can be cancelled."""

    def cancel(self) -> None: ...


@runtime_checkable
class Clock(Protocol):
    """A source of monotonic time in seconds, and ways to wait on it.

    ``now()`` never goes backwards. ``sleep`` blocks the calling thread; ``asleep`` suspends
    the calling task. ``call_later`` runs ``callback`` on the running event loop after
    ``delay`` seconds of this clock's time; it must be called from inside that loop.
    """

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    async def asleep(self, seconds: float) -> None: ...

    def call_later(self, delay: float, callback: Callable[[], object]) -> TimerHandle: ...


class MonotonicClock:
    """The real clock: ``time.monotonic`` for reading, the event loop for waiting.

    asyncio's default loop and uvloop both keep time with the same monotonic source, so
    ``call_later`` can hand its timers straight to the running loop.
    """

    __slots__ = ()

    # The bound C function itself: reading the clock is on every policy's hot path.
    now = staticmethod(time.monotonic)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds if seconds > 0 else 0)

    def call_later(self, delay: float, callback: Callable[[], object]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(max(delay, 0.0), callback)

    def __repr__(self) -> str:
        return "MonotonicClock()"


# The real clock is stateless, so every policy may share one instance.
monotonic_clock = MonotonicClock()


def wall_time() -> float:
    """Seconds since the epoch, for the rare value given as a calendar date (``Retry-After``)."""
    return time.time()
