from __future__ import annotations

import asyncio
import heapq
import itertools
from contextvars import Token
from dataclasses import dataclass, field
from typing import Any, TypeAlias, cast

from .. import _validate as v
from .._clock import Clock, TimerHandle, monotonic_clock
from ..errors import DeadlineExceeded
from ..events import DeadlineExpired, Events
from . import _scope
from ._deadline import Deadline, _current
from ._policy import AsyncNext, Call, Policy, SyncNext

__all__ = ["Timeout"]


# A heap entry is a list [when, seq, task or None, fired]: lists compare in C, element by
# element, and ``seq`` is unique, so the task is never compared.
_WHEN, _SEQ, _TASK, _FIRED = 0, 1, 2, 3
_Entry: TypeAlias = list[Any]  # [when, seq, task or None, fired]


class _TimerQueue:
    """Deadlines of one Timeout on one event loop, served by a single clock timer.

    ``asyncio.timeout`` schedules and cancels one loop timer per call. Here every guarded
    await only pushes an entry on a heap; one timer is armed for the earliest entry. A
    finished call just clears its entry's task; cleared entries are dropped when they reach
    the top. Timeouts of one fixed duration arrive in deadline order, so the timer is
    re-armed about once per timeout period instead of twice per call.
    """

    __slots__ = ("armed_at", "clock", "handle", "heap", "loop", "seq")

    def __init__(self, clock: Clock, loop: asyncio.AbstractEventLoop) -> None:
        self.clock = clock
        self.loop = loop
        self.heap: list[_Entry] = []
        self.seq = itertools.count()
        self.handle: TimerHandle | None = None
        self.armed_at = float("inf")

    def add(self, when: float, task: asyncio.Task[Any]) -> _Entry:
        entry = [when, next(self.seq), task, False]
        heapq.heappush(self.heap, entry)
        if when < self.armed_at:
            self._arm(when)
        return entry

    def done(self, entry: _Entry) -> None:
        entry[_TASK] = None
        heap = self.heap
        while heap and heap[0][_TASK] is None:
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
        while heap and (heap[0][_WHEN] <= now or heap[0][_TASK] is None):
            entry = heapq.heappop(heap)
            task = entry[_TASK]
            if task is not None and not task.done():
                entry[_FIRED] = True
                task.cancel()
        if heap:
            self._arm(heap[0][_WHEN])


class _TimeoutState:
    __slots__ = ("queue",)

    def __init__(self) -> None:
        # The queue of the loop this policy ran on last. A call on another loop starts a new
        # queue; the old one lives on only while its own timer is armed, so no loop is kept
        # alive by a policy beyond the one it last ran on.
        self.queue: _TimerQueue | None = None


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

    def _expired(self, *, started: bool, at: float | None = None) -> DeadlineExceeded:
        if self.events:
            self.events.emit(DeadlineExpired(self.clock.now(), self.name, self.seconds, started))
        what = "ran past" if started else "refused: no budget left before"
        limit = "the deadline in force" if self.seconds is None else f"{self.seconds:g} s"
        return DeadlineExceeded(
            f"{self.name}: call {what} its deadline ({limit})",
            deadline=at,
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
        if dl.remaining() <= 0:
            raise self._expired(started=False, at=dl.at)
        token = _current.set(dl)
        try:
            result = nxt(call)
        finally:
            _current.reset(token)
        if dl.remaining() < 0:
            raise self._expired(started=True, at=dl.at)
        return result

    # -- async -------------------------------------------------------------------------

    def _enter_async(self) -> tuple[_TimerQueue, _Entry, Any] | None:
        clock = self.clock
        now = clock.now()
        outer = _current.get()
        seconds = self.seconds
        if seconds is not None:
            at = now + seconds
            if outer is None or (outer.clock is clock and at <= outer.at):
                dl = Deadline(at, clock)
            elif outer.clock is clock:
                dl, at = outer, outer.at
            else:
                dl = Deadline(at, clock).earliest(outer)
                at = now + dl.remaining()
        elif outer is None:
            return None
        else:
            dl = outer
            at = outer.at if outer.clock is clock else now + outer.remaining()
        if at <= now:
            raise self._expired(started=False, at=at)
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Timeout needs to run inside an asyncio task")
        st = self._state
        queue = st.queue
        if queue is None or queue.loop is not task.get_loop():
            queue = st.queue = _TimerQueue(clock, task.get_loop())
        return queue, queue.add(at, task), _current.set(dl)

    def _exit_async(
        self, scope: tuple[_TimerQueue, _Entry, Any], exc: BaseException | None
    ) -> None:
        queue, entry, token = scope
        queue.done(entry)
        _current.reset(token)
        if entry[_FIRED]:
            task = asyncio.current_task()
            if (
                task is not None
                and task.uncancel() == 0
                and isinstance(exc, asyncio.CancelledError)
            ):
                raise self._expired(started=True, at=entry[_WHEN]) from None

    async def _arun(self, nxt: AsyncNext, call: Call) -> Any:
        # The same steps as _enter_async/_exit_async, written out: this is the hot path of
        # every async pipeline, and each helper call costs as much as the work it does.
        clock = self.clock
        now = clock.now()
        outer = _current.get()
        seconds = self.seconds
        if seconds is not None and (
            outer is None or (outer.clock is clock and now + seconds <= outer.at)
        ):
            at = now + seconds
            dl = Deadline(at, clock)
        else:
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
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Timeout needs to run inside an asyncio task")
        queue = self._state.queue
        loop = task.get_loop()
        if queue is None or queue.loop is not loop:
            queue = self._state.queue = _TimerQueue(clock, loop)
        entry = [at, next(queue.seq), task, False]
        heap = queue.heap
        heapq.heappush(heap, entry)
        if at < queue.armed_at:
            queue._arm(at)
        token = _current.set(dl)
        try:
            result = await nxt(call)
        except BaseException as exc:
            entry[_TASK] = None
            while heap and heap[0][_TASK] is None:
                heapq.heappop(heap)
            _current.reset(token)
            if entry[_FIRED] and task.uncancel() == 0 and isinstance(exc, asyncio.CancelledError):
                raise self._expired(started=True, at=at) from None
            raise
        entry[_TASK] = None
        while heap and heap[0][_TASK] is None:
            heapq.heappop(heap)
        _current.reset(token)
        if entry[_FIRED]:
            task.uncancel()
        return result

    # -- context manager ---------------------------------------------------------------

    def __enter__(self) -> Timeout:
        dl = self._deadline(self.clock.now())
        if dl is not None and dl.remaining() <= 0:
            raise self._expired(started=False, at=dl.at)
        _scope.push(self, (dl, None if dl is None else _current.set(dl)))
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        dl, token = cast("tuple[Deadline | None, Token[Deadline | None] | None]", _scope.pop(self))
        if token is not None:
            _current.reset(token)
        if dl is not None and exc is None and dl.remaining() < 0:
            raise self._expired(started=True, at=dl.at)

    async def __aenter__(self) -> Timeout:
        _scope.push(self, self._enter_async())
        return self

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        scope = _scope.pop(self)
        if scope is not None:
            self._exit_async(scope, exc)  # type: ignore[arg-type]
