"""Bulkhead: at most ``max_concurrent`` calls run at once; a few more may wait in line.

A dependency that slows down holds every call it receives; without a bound those calls pile
up until they exhaust threads, connections and memory of the caller too (Little's law: at
200 req/s a dependency going from 50 ms to 2 s takes in-flight calls from 10 to 400). A
bulkhead caps that: ``max_concurrent`` slots, a FIFO wait queue of at most ``max_queue``
calls, each waiting at most ``max_wait_s`` seconds and never past the current deadline, and
a fast ``BulkheadFull`` for everything beyond.

The decision core (:class:`_BulkheadState`) is sans-IO: free-slot tokens, taken and given
back without a lock on the fast path, and a FIFO of opaque waiter tokens changed under a
lock; it never waits and never reads time. The adapters own the waiting: an asyncio waiter
is a future on its event loop, a thread waiter a lock it blocks on. Both kinds share one
line, so the limit and the FIFO order hold across threads and event loops.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from .. import _validate as v
from .._clock import Clock, TimerHandle, monotonic_clock
from ..errors import BulkheadFull, DeadlineExceeded
from ..events import BulkheadQueued, CallRejected, DeadlineExpired, Events
from ._deadline import _current
from ._policy import AsyncNext, Call, Policy, SyncNext

__all__ = ["Bulkhead"]

P = ParamSpec("P")
T = TypeVar("T")

_get_ident = threading.get_ident

# What _BulkheadState.enqueue decided.
ADMITTED = 0  # a slot was free after all: the caller holds it now
QUEUED = 1  # the waiter is in line; it will be granted a slot or withdrawn
QUEUE_FULL = 2  # no slot and no room in line
NO_WAIT = 3  # no slot, room in line, but the caller may not wait (budget <= 0)


class _Waiter:
    """One call waiting in line. ``granted`` is set (under the state lock) when a released slot
    is handed to it: from then on the slot is the waiter's, whatever happens to it."""

    __slots__ = ("granted",)

    def __init__(self) -> None:
        self.granted = False

    def wake(self) -> bool:
        """Tell the waiter it was granted a slot. False: it can never run (its event loop is
        closed), so the caller must take the slot back."""
        return True


class _AsyncWaiter(_Waiter):
    __slots__ = ("fut", "loop", "thread")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.granted = False
        self.loop = loop
        self.fut: asyncio.Future[None] = loop.create_future()
        self.thread = _get_ident()

    def wake(self) -> bool:
        try:
            if _get_ident() == self.thread:
                _resolve(self.fut)
            else:
                self.loop.call_soon_threadsafe(_resolve, self.fut)
        except RuntimeError:  # the loop is closed: nobody will ever await this future
            return False
        return True


class _ThreadWaiter(_Waiter):
    __slots__ = ("lock",)

    def __init__(self) -> None:
        self.granted = False
        self.lock = threading.Lock()
        self.lock.acquire()  # the waiting thread blocks on it until wake() releases it

    def wake(self) -> bool:
        self.lock.release()
        return True


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _BulkheadState:
    """The sans-IO core: slot and queue accounting, thread-safe, no waiting, no time.

    Free slots are tokens in ``slots`` (a deque: its ``pop`` and ``append`` are atomic), so
    the fast path, a free slot taken and given back with nobody waiting, takes no lock. The
    line (``waiters``) changes only under ``lock``. A waiter joins the line and then looks
    for a token again; a release puts its token back and then looks at the line again. Each
    side publishes before it checks, so at least one of them sees the other: a slot never
    sits free while a call waits for it.

    Invariants:

    - ``active + free == max_concurrent`` with ``free = len(slots) >= 0``;
    - ``queued == len(waiters) <= max_queue``;
    - ``queued > 0`` implies ``free == 0``: a slot released while calls wait is handed to
      the oldest waiter, never freed, so newcomers do not overtake the line. (Between threads
      a token given back can be taken by a newcomer in the few bytecodes before the releasing
      thread sees a waiter that joined meanwhile; the waiter then gets the next slot. Within
      one event loop the order is strictly FIFO.)
    """

    __slots__ = ("lock", "max_concurrent", "max_queue", "slots", "waiters")

    def __init__(self, max_concurrent: int, max_queue: int) -> None:
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.slots: deque[None] = deque([None] * max_concurrent)
        self.waiters: deque[_Waiter] = deque()
        self.lock = threading.Lock()

    @property
    def active(self) -> int:
        """Slots taken: running calls, and waiters just handed a slot."""
        return self.max_concurrent - len(self.slots)

    @property
    def free(self) -> int:
        return len(self.slots)

    @property
    def queued(self) -> int:
        return len(self.waiters)

    def try_acquire(self) -> bool:
        """Take a free slot if there is one. True when taken."""
        try:
            self.slots.pop()
        except IndexError:
            return False
        return True

    def enqueue(self, waiter: _Waiter | None) -> int:
        """No slot was free a moment ago: take one if it has come free, else put ``waiter`` in
        line if there is room. ``waiter=None`` means the caller may not wait at all.
        Returns ADMITTED, QUEUED, QUEUE_FULL or NO_WAIT."""
        with self.lock:
            if self.try_acquire():
                return ADMITTED
            if len(self.waiters) >= self.max_queue:
                return QUEUE_FULL
            if waiter is None:
                return NO_WAIT
            self.waiters.append(waiter)
            if self.try_acquire():  # a slot came back between the two looks
                self.waiters.pop()  # ours: only holders of the lock append
                return ADMITTED
            return QUEUED

    def release(self) -> _Waiter | None:
        """Give back a slot. When calls wait, the slot goes to the oldest of them, which is
        returned (marked ``granted``) for the caller to wake; otherwise it is freed."""
        if not self.waiters:
            self.slots.append(None)
            if not self.waiters:
                return None
            # Someone joined the line as the slot came back: hand it over, unless a
            # newcomer or that waiter itself has taken it already.
            if not self.try_acquire():
                return None
        with self.lock:
            if self.waiters:
                waiter = self.waiters.popleft()
                waiter.granted = True
                return waiter
            self.slots.append(None)  # the line emptied meanwhile (withdrawals)
            return None

    def withdraw(self, waiter: _Waiter) -> bool:
        """``waiter`` stops waiting (timeout, deadline, cancellation). Returns True when it was
        granted a slot first: the slot is then the caller's to use or to release."""
        with self.lock:
            if waiter.granted:
                return True
            with suppress(ValueError):  # already out: its timer and its cancellation raced
                self.waiters.remove(waiter)
            return False


@dataclass(frozen=True, slots=True, kw_only=True)
class Bulkhead(Policy):
    """Run at most ``max_concurrent`` calls at once; let at most ``max_queue`` more wait.

    - A call that finds a free slot runs at once. While calls wait no slot is free: a
      released slot goes straight to the oldest waiter, so the line is served in FIFO order
      and a newcomer does not overtake it (between threads, see ``_BulkheadState`` for the
      one narrow exception).
    - Otherwise, if fewer than ``max_queue`` calls wait, it waits in line for at most
      ``max_wait_s`` seconds (``None``: no limit of its own) and never past the current
      deadline (:func:`brownout.remaining`). Its wait budget is
      ``min(max_wait_s, remaining())``.
    - It is refused, with no work done, when the line is full (``BulkheadFull``,
      ``waited_s == 0``), when its ``max_wait_s`` runs out (``BulkheadFull`` with the time
      it waited), or when the deadline comes first (``DeadlineExceeded(started=False)``:
      the deadline is the binding limit, so the caller sees the same error a ``Timeout``
      would raise; with equal limits the bulkhead's own ``max_wait_s`` wins). A call that
      must wait when the deadline has already passed is refused at once the same way. A call
      that gets a slot is not bounded by the bulkhead any further: bounding the call itself is
      the ``Timeout``'s job.
    - A waiter that is cancelled (or whose thread is interrupted) leaves the line; if a slot
      was handed to it at that very moment, it passes the slot on to the next waiter.

    ``max_queue=0`` (the default) refuses at once whenever every slot is taken, as does
    ``max_wait_s=0``. Events: ``BulkheadQueued`` when a call starts waiting,
    ``CallRejected(reason="bulkhead_full")`` when one is refused, ``DeadlineExpired`` when
    the deadline refuses it.

    Waiting: in asyncio a waiter is a future on the running loop, its time limit a timer from
    ``clock.call_later`` (so a ``MockClock`` drives it). A thread blocks on a lock with a
    timeout computed from the clock and the deadline; threading primitives wait in real
    seconds, so with a ``MockClock`` a blocked thread is woken by a hand-off but its timeout
    runs in real time. Threads and tasks on any loops may share one bulkhead: they share one
    count and one line.

    Used as ``await bulkhead.acall(fn)``, ``bulkhead.call(fn)``, ``@bulkhead`` or ``with`` /
    ``async with bulkhead:``. ``active`` and ``queued`` read the current counts.
    """

    max_concurrent: int = field(kw_only=False)
    max_queue: int = 0
    max_wait_s: float | None = None
    name: str = "bulkhead"
    clock: Clock = field(default=monotonic_clock, repr=False, compare=False)
    events: Events = field(default_factory=Events, repr=False, compare=False)
    _state: _BulkheadState = field(init=False, repr=False, compare=False)

    kind = "bulkhead"

    def __post_init__(self) -> None:
        v.int_at_least("Bulkhead", "max_concurrent", self.max_concurrent, 1)
        v.int_at_least("Bulkhead", "max_queue", self.max_queue, 0)
        if self.max_wait_s is not None:
            v.non_negative("Bulkhead", "max_wait_s", self.max_wait_s)
        object.__setattr__(self, "_state", _BulkheadState(self.max_concurrent, self.max_queue))

    # -- what it reads -----------------------------------------------------------------

    @property
    def active(self) -> int:
        """Slots taken now (running calls, and waiters just handed a slot)."""
        return self.max_concurrent - len(self._state.slots)

    @property
    def queued(self) -> int:
        """Calls waiting in line now."""
        return len(self._state.waiters)

    # -- refusing ----------------------------------------------------------------------

    def _budget(self) -> tuple[float | None, bool]:
        """Seconds a call may wait (None: no limit) and whether the deadline sets it."""
        limit = self.max_wait_s
        dl = _current.get()
        if dl is not None:
            left = dl.remaining()
            if limit is None or left < limit:
                return left, True
        return limit, False

    def _full(self, waited_s: float) -> BulkheadFull:
        if self.events:
            self.events.emit(CallRejected(self.clock.now(), self.name, "bulkhead_full"))
        return BulkheadFull(
            policy=self.name,
            max_concurrent=self.max_concurrent,
            max_queue=self.max_queue,
            waited_s=waited_s,
        )

    def _deadline_passed(self, waited_s: float) -> DeadlineExceeded:
        if self.events:
            self.events.emit(DeadlineExpired(self.clock.now(), self.name, None, False))
        dl = _current.get()
        return DeadlineExceeded(
            f"bulkhead {self.name!r}: no slot before the deadline "
            f"(waited {waited_s * 1000:.1f} ms)",
            deadline=None if dl is None else dl.at,
            timeout_s=None,
            started=False,
        )

    def _refuse(self, outcome: int, by_deadline: bool, waited_s: float) -> BaseException:
        if outcome == NO_WAIT and by_deadline:
            return self._deadline_passed(waited_s)
        return self._full(waited_s)

    def _queued_event(self) -> None:
        self.events.emit(BulkheadQueued(self.clock.now(), self.name, len(self._state.waiters)))

    # -- releasing ---------------------------------------------------------------------

    def _release(self) -> None:
        state = self._state
        waiter = state.release()
        while waiter is not None and not waiter.wake():
            # That waiter can never run (its loop is closed): it does not own the slot after
            # all (so closing its coroutine later releases nothing), and the slot moves on.
            waiter.granted = False
            waiter = state.release()

    # -- async -------------------------------------------------------------------------

    async def _acquire_async(self) -> None:
        """The slow path: no slot was free. Returns holding a slot, or raises."""
        budget, by_deadline = self._budget()
        state = self._state
        if budget is not None and budget <= 0:
            outcome = state.enqueue(None)
            if outcome != ADMITTED:
                raise self._refuse(outcome, by_deadline, 0.0)
            return
        waiter = _AsyncWaiter(asyncio.get_running_loop())
        outcome = state.enqueue(waiter)
        if outcome == ADMITTED:
            return
        if outcome == QUEUE_FULL:
            raise self._full(0.0)
        if self.events:
            self._queued_event()
        clock = self.clock
        start = clock.now()
        timer: TimerHandle | None = None
        if budget is not None:
            timer = clock.call_later(budget, lambda: self._expire(waiter))
        try:
            await waiter.fut
        except BaseException:
            if timer is not None:
                timer.cancel()
            if state.withdraw(waiter):
                self._release()  # handed a slot as it was cancelled: pass it on
            raise
        if timer is not None:
            timer.cancel()
        if not waiter.granted:  # woken by its timer, already out of the line
            waited = clock.now() - start
            if by_deadline:
                raise self._deadline_passed(waited)
            raise self._full(waited)

    def _expire(self, waiter: _AsyncWaiter) -> None:
        """The waiter's time is up: take it out of line and wake it, unless it got a slot."""
        if not self._state.withdraw(waiter):
            waiter.wake()

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` holding a slot."""
        if not self._state.try_acquire():
            await self._acquire_async()
        try:
            return await fn(*args, **kwargs)
        finally:
            self._release()

    async def _arun(self, nxt: AsyncNext, call: Call) -> Any:
        if not self._state.try_acquire():
            await self._acquire_async()
        try:
            return await nxt(call)
        finally:
            self._release()

    async def __aenter__(self) -> Bulkhead:
        if not self._state.try_acquire():
            await self._acquire_async()
        return self

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self._release()

    # -- sync --------------------------------------------------------------------------

    def _acquire_sync(self) -> None:
        """The slow path for threads: block until granted a slot, or raise."""
        budget, by_deadline = self._budget()
        state = self._state
        if budget is not None and budget <= 0:
            outcome = state.enqueue(None)
            if outcome != ADMITTED:
                raise self._refuse(outcome, by_deadline, 0.0)
            return
        waiter = _ThreadWaiter()
        outcome = state.enqueue(waiter)
        if outcome == ADMITTED:
            return
        if outcome == QUEUE_FULL:
            raise self._full(0.0)
        if self.events:
            self._queued_event()
        clock = self.clock
        start = clock.now()
        timeout = -1.0 if budget is None else min(budget, threading.TIMEOUT_MAX)
        try:
            woken = waiter.lock.acquire(timeout=timeout)
        except BaseException:  # KeyboardInterrupt and the like
            if state.withdraw(waiter):
                self._release()
            raise
        if woken or state.withdraw(waiter):  # granted, possibly just as the wait timed out
            return
        waited = clock.now() - start
        if by_deadline:
            raise self._deadline_passed(waited)
        raise self._full(waited)

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` holding a slot."""
        if not self._state.try_acquire():
            self._acquire_sync()
        try:
            return fn(*args, **kwargs)
        finally:
            self._release()

    def _run(self, nxt: SyncNext, call: Call) -> Any:
        if not self._state.try_acquire():
            self._acquire_sync()
        try:
            return nxt(call)
        finally:
            self._release()

    def __enter__(self) -> Bulkhead:
        if not self._state.try_acquire():
            self._acquire_sync()
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self._release()
