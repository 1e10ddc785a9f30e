from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

from ..errors import InvalidConfig

__all__ = ["MockClock"]


class _MockTimer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class MockClock:
    """A clock that moves only when told to, for deterministic tests.

    ``advance(seconds)`` moves time forward and fires every timer and wakes every
    ``asleep`` whose time has come, in time order; ``jump_to(t)`` does the same to an
    absolute time. Neither goes backwards.

    ``sleep(seconds)`` (blocking) cannot wait for another thread to move time, so it
    advances the clock itself. ``asleep(seconds)`` waits until something else advances the
    clock far enough, unless ``autojump=True``, in which case it advances the clock itself
    (handy for tests with a single task).
    """

    def __init__(self, start: float = 0.0, *, autojump: bool = False) -> None:
        self._now = float(start)
        self.autojump = autojump
        self._timers: list[tuple[float, int, _MockTimer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (>= 0), firing what falls due on the way."""
        if not seconds >= 0:
            raise InvalidConfig(
                "MockClock.advance", "seconds", seconds, ">= 0 (time never goes back)"
            )
        self.jump_to(self._now + seconds)

    def jump_to(self, when: float) -> None:
        """Move time forward to ``when``, firing what falls due on the way."""
        if not when >= self._now:
            raise InvalidConfig(
                "MockClock.jump_to", "when", when, f">= now ({self._now}); time never goes back"
            )
        timers = self._timers
        while timers and timers[0][0] <= when:
            due, _, timer = heapq.heappop(timers)
            self._now = max(self._now, due)
            if not timer.cancelled:
                timer.callback()
        self._now = when

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.advance(seconds)

    async def asleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        if self.autojump:
            self.advance(seconds)
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        timer = self.call_later(seconds, wake)
        try:
            await fut
        finally:
            timer.cancel()

    def call_later(self, delay: float, callback: Callable[[], object]) -> _MockTimer:
        timer = _MockTimer(self._now + max(delay, 0.0), callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    @property
    def pending_timers(self) -> int:
        """How many timers (including sleeps) wait to fire."""
        return sum(1 for _, _, t in self._timers if not t.cancelled)

    def __repr__(self) -> str:
        return f"MockClock(now={self._now!r})"
