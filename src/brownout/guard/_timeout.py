from __future__ import annotations

import asyncio
import heapq
import itertools
import weakref
from contextvars import Token
from dataclasses import dataclass, field
from typing import Any, cast

from .. import _validate as v
from .._clock import Clock, TimerHandle, monotonic_clock
from ..errors import DeadlineExceeded
from ..events import DeadlineExpired, Events
from . import _scope
from ._deadline import Deadline, _current
from ._policy import AsyncNext, Call, Policy, SyncNext

__all__ = ["Timeout"]


class _Entry:
    """One guarded await: the task to cancel at ``when`` unless it finishes first."""

    __slots__ = ("fired", "seq", "task", "when")

    def __init__(self, when: float, seq: int, task: asyncio.Task[Any]) -> None:
        self.when = when
        self.seq = seq
        self.task: asyncio.Task[Any] | None = task
        self.fired = False

    def __lt__(self, other: _Entry) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)


class _TimerQueue:
    """Deadlines of one Timeout on one event loop, served by a single clock timer.

    ``asyncio.timeout`` schedules and cancels one loop timer per call. Here every guarded
    await only pushes an entry on a heap; one timer is armed for the earliest entry. A
    finished call just clears its entry's task; cleared entries are dropped when they reach
    the top. Timeouts of one fixed duration arrive in deadline order, so the timer is
    re-armed about once per timeout period instead of twice per call.
    """

    __slots__ = ("armed_at", "clock", "handle", "heap", "seq")

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.heap: list[_Entry] = []
        self.seq = itertools.count()
        self.handle: TimerHandle | None = None
        self.armed_at = float("inf")

    def add(self, when: float, task: asyncio.Task[Any]) -> _Entry:
        entry = _Entry(when, next(self.seq), task)
        heapq.heappush(self.heap, entry)
        if when < self.armed_at:
            self._arm(when)
        return entry

    def done(self, entry: _Entry) -> None:
        entry.task = None
        heap = self.heap
        while heap and heap[0].task is None:
            heapq.heappop(heap)

    def _arm(self, when: float) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.armed_at = when
        self.handle = self.clock.call_later(when - self.clock.now(), self._fire)

    def _fire(self) -> None:
        self.handle = None
        self.armed_at = float("inf")
        now = self.clock.now()
        heap = self.heap
        while heap and (heap[0].when <= now or heap[0].task is None):
            entry = heapq.heappop(heap)
            task = entry.task
            if task is not None and not task.done():
                entry.fired = True
                task.cancel()
        if heap:
            self._arm(heap[0].when)


class _TimeoutState:
    __slots__ = ("queues",)

    def __init__(self) -> None:
        self.queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _TimerQueue] = (
            weakref.WeakKeyDictionary()
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeout(Policy):
    """Bound how long a call may take, and give the code below that budget as its deadline.

    ``seconds`` is the per-call timeout; ``None`` enforces only the deadline already in force
    (``brownout.deadline`` or an outer ``Timeout``). The effective deadline is the earlier of
    the two, and it becomes the current deadline inside the call, so retries, hedges and
    outgoing headers below respect it.

    - async: the task is cancelled at the deadline and ``DeadlineExceeded`` (a
      ``TimeoutError``) is raised in its place. A cancellation from elsewhere is passed on
      untouched.
    - sync: a thread cannot be interrupted safely, so work whose deadline has already passed
      is refused before it starts (``DeadlineExceeded(started=False)``), code below can read
      :func:`brownout.remaining` to bound its own I/O, and a call that returns after its
      deadline raises ``DeadlineExceeded``: its caller's budget is spent, and the result is
      counted as a timeout by the policies outside (retry, breaker).

    Used as ``await timeout.acall(fn)``, ``timeout.call(fn)``, ``@timeout`` or ``with`` /
    ``async with timeout:``.
    """

    seconds: float | None = field(kw_only=False)
    name: str = "timeout"
    clock: Clock = field(default=monotonic_clock, repr=False, compare=False)
    events: Events = field(default_factory=Events, repr=False, compare=False)
    _state: _TimeoutState = field(
        default_factory=_TimeoutState, init=False, repr=False, compare=False
    )

    kind = "timeout"

    def __post_init__(self) -> None:
        if self.seconds is not None:
            v.non_negative("Timeout", "seconds", self.seconds)

    # -- shared decision ---------------------------------------------------------------

    def _deadline(self, now: float) -> Deadline | None:
        outer = _current.get()
        if self.seconds is None:
            return outer
        own = Deadline(now + self.seconds, self.clock)
        return own if outer is None else own.earliest(outer)

    def _expired(self, *, started: bool) -> DeadlineExceeded:
        if self.events:
            self.events.emit(DeadlineExpired(self.clock.now(), self.name, self.seconds, started))
        what = "ran past" if started else "refused: no budget left before"
        limit = "the deadline in force" if self.seconds is None else f"{self.seconds:g} s"
        return DeadlineExceeded(
            f"{self.name}: call {what} its deadline ({limit})",
            deadline=None,
            timeout_s=self.seconds,
            started=started,
        )

    # -- sync --------------------------------------------------------------------------

    def _run(self, nxt: SyncNext, call: Call) -> Any:
        clock = self.clock
        now = clock.now()
        dl = self._deadline(now)
        if dl is None:
            return nxt(call)
        if dl.at - dl.clock.now() <= 0:
            raise self._expired(started=False)
        token = _current.set(dl)
        try:
            result = nxt(call)
        finally:
            _current.reset(token)
        if dl.remaining() < 0:
            raise self._expired(started=True)
        return result

    # -- async -------------------------------------------------------------------------

    def _queue(self) -> _TimerQueue:
        loop = asyncio.get_running_loop()
        queue = self._state.queues.get(loop)
        if queue is None:
            queue = self._state.queues[loop] = _TimerQueue(self.clock)
        return queue

    def _enter_async(self) -> tuple[_TimerQueue, _Entry, Any] | None:
        dl = self._deadline(self.clock.now())
        if dl is None:
            return None
        left = dl.remaining()
        if left <= 0:
            raise self._expired(started=False)
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Timeout needs to run inside an asyncio task")
        queue = self._queue()
        entry = queue.add(self.clock.now() + left, task)
        return queue, entry, _current.set(dl)

    def _exit_async(
        self, scope: tuple[_TimerQueue, _Entry, Any], exc: BaseException | None
    ) -> None:
        queue, entry, token = scope
        queue.done(entry)
        _current.reset(token)
        if entry.fired:
            task = asyncio.current_task()
            if (
                task is not None
                and task.uncancel() == 0
                and isinstance(exc, asyncio.CancelledError)
            ):
                raise self._expired(started=True) from None

    async def _arun(self, nxt: AsyncNext, call: Call) -> Any:
        scope = self._enter_async()
        if scope is None:
            return await nxt(call)
        try:
            result = await nxt(call)
        except BaseException as exc:
            self._exit_async(scope, exc)
            raise
        self._exit_async(scope, None)
        return result

    # -- context manager ---------------------------------------------------------------

    def __enter__(self) -> Timeout:
        dl = self._deadline(self.clock.now())
        if dl is not None and dl.remaining() <= 0:
            raise self._expired(started=False)
        _scope.push(self, (dl, None if dl is None else _current.set(dl)))
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        dl, token = cast("tuple[Deadline | None, Token[Deadline | None] | None]", _scope.pop(self))
        if token is not None:
            _current.reset(token)
        if dl is not None and exc is None and dl.remaining() < 0:
            raise self._expired(started=True)

    async def __aenter__(self) -> Timeout:
        _scope.push(self, self._enter_async())
        return self

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        scope = _scope.pop(self)
        if scope is not None:
            self._exit_async(scope, exc)  # type: ignore[arg-type]
