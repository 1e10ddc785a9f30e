"""Thread-pool hooks: how long a request's work waited for a worker thread, and ran there.

Sync endpoints and dependencies of Starlette and FastAPI run in a thread pool through
``anyio.to_thread.run_sync`` (``starlette.concurrency.run_in_threadpool``), bounded by
anyio's default limiter (40 threads); ``asyncio.to_thread`` and plain asyncio code use
``loop.run_in_executor``. For work submitted while a request is current, each call adds::

    thread_wait_s += started - submitted    (queueing for a limiter token / a worker)
    thread_run_s  += ended - started        (the function, in the worker thread)
    cpu_s         += thread_time() of the worker over the function

to the request's :class:`~brownout.probe._cost.RequestCost` (``perf_counter`` seconds).
The worker only notes the three instants; they are added to the request on the event
loop's thread when the call completes (after ``await`` for anyio, in a done-callback of
the executor future for ``run_in_executor``, which runs before the awaiting task
resumes), so the loop and the worker never write the same record at once. A call
abandoned by cancellation is booked with what is known when the caller stops waiting.

anyio copies the context into the worker, so database hooks there see the request; a
function sent with ``loop.run_in_executor`` (which does not copy the context) runs with
the request's cost made current in the worker for its duration (only the probe's own
context variable is set, and reset after), so its database calls are attributed too.

Patched (each only when importable): ``anyio.to_thread.run_sync`` (the module attribute,
which Starlette looks up on each call; a ``from anyio.to_thread import run_sync`` bound
before :func:`install_threads` is not seen), ``asyncio.BaseEventLoop.run_in_executor``
and ``uvloop.Loop.run_in_executor`` (which also carries the loop's own executor work,
such as ``loop.getaddrinfo`` for a host name, when a request causes it). Return values, exceptions and cancellation are
unchanged; without a current request the originals run directly.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from time import perf_counter, thread_time
from typing import Any

from ._cost import RequestCost, _current

__all__ = ["install_threads"]

Undo = Callable[[], None]
_MARK = "__brownout_probe_wrapped__"


class _Timing:
    """The instants of one thread-pool call (``perf_counter`` seconds, worker CPU time)."""

    __slots__ = ("cpu_s", "ended", "started", "submitted")

    def __init__(self, submitted: float) -> None:
        self.submitted = submitted
        self.started = 0.0
        self.ended = 0.0
        self.cpu_s = 0.0

    def book(self, cost: RequestCost) -> None:
        """Add the call to ``cost`` (once; on the loop's thread)."""
        submitted = self.submitted
        if not submitted:
            return
        self.submitted = 0.0
        started = self.started
        if not started:
            # the caller stopped waiting before a worker took the call: all wait so far
            cost.thread_wait_s += perf_counter() - submitted
            return
        cost.thread_wait_s += started - submitted
        ended = self.ended
        if ended:
            cost.thread_run_s += ended - started
            cost.cpu_s += self.cpu_s
        else:  # abandoned while running: the run so far
            cost.thread_run_s += perf_counter() - started


def _timed(func: Callable[..., Any], timing: _Timing, *args: Any) -> Any:
    """Run ``func(*args)`` in the worker, noting when it started and ended."""
    timing.started = perf_counter()
    c0 = thread_time()
    try:
        return func(*args)
    finally:
        timing.cpu_s = thread_time() - c0
        timing.ended = perf_counter()


def _timed_with_cost(
    func: Callable[..., Any], timing: _Timing, cost: RequestCost, *args: Any
) -> Any:
    """As :func:`_timed`, with ``cost`` current in the worker (for executors, which do not
    copy the context)."""
    token = _current.set(cost)
    try:
        return _timed(func, timing, *args)
    finally:
        _current.reset(token)


class _Active:
    __slots__ = ("on",)

    def __init__(self) -> None:
        self.on = True


def _patch_anyio(active: _Active) -> Undo | None:
    try:
        from anyio import to_thread
    except ImportError:
        return None
    original = to_thread.run_sync
    if getattr(original, _MARK, False):
        return None

    @functools.wraps(original)
    async def run_sync(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        cost = _current.get()
        if cost is None or not active.on:
            return await original(func, *args, **kwargs)
        timing = _Timing(perf_counter())
        try:
            return await original(functools.partial(_timed, func, timing), *args, **kwargs)
        finally:
            timing.book(cost)

    setattr(run_sync, _MARK, True)
    to_thread.run_sync = run_sync  # type: ignore[assignment]

    def undo() -> None:
        if to_thread.run_sync is run_sync:
            to_thread.run_sync = original

    return undo


def _patch_executor(cls: type[Any], active: _Active) -> Undo | None:
    original = cls.__dict__.get("run_in_executor")
    inherited = original is None
    if inherited:
        original = getattr(cls, "run_in_executor", None)
    if original is None or getattr(original, _MARK, False):
        return None
    call = original

    @functools.wraps(call)
    def run_in_executor(
        self: asyncio.AbstractEventLoop, executor: Any, func: Callable[..., Any], *args: Any
    ) -> asyncio.Future[Any]:
        cost = _current.get()
        if cost is None or not active.on:
            return call(self, executor, func, *args)  # type: ignore[no-any-return]
        timing = _Timing(perf_counter())
        future: asyncio.Future[Any] = call(
            self, executor, functools.partial(_timed_with_cost, func, timing, cost), *args
        )

        def book(_: asyncio.Future[Any]) -> None:
            timing.book(cost)

        future.add_done_callback(book)
        return future

    setattr(run_in_executor, _MARK, True)
    cls.run_in_executor = run_in_executor

    def undo() -> None:
        if cls.__dict__.get("run_in_executor") is run_in_executor:
            if inherited:
                delattr(cls, "run_in_executor")
            else:
                cls.run_in_executor = original

    return undo


def install_threads() -> Undo:
    """Patch the thread-pool entry points that are importable (see the module docstring)
    and return the function that restores them. Idempotent: what is already patched is
    left alone (and left patched by this call's undo)."""
    active = _Active()
    undos: list[Undo] = []
    undo = _patch_anyio(active)
    if undo is not None:
        undos.append(undo)
    undo = _patch_executor(asyncio.BaseEventLoop, active)
    if undo is not None:
        undos.append(undo)
    try:
        import uvloop
    except ImportError:
        pass
    else:
        undo = _patch_executor(uvloop.Loop, active)
        if undo is not None:
            undos.append(undo)
    done = False

    def uninstall() -> None:
        nonlocal done
        if done:
            return
        done = True
        active.on = False  # a wrapper someone chained over stays, as a pass-through
        for undo in reversed(undos):
            undo()

    return uninstall
