"""Event-loop monitor: how long each request held the loop, and which steps blocked it.

A task *step* is one resumption of a task's coroutine by the event loop: from the moment
the loop calls into the coroutine until it next awaits something that is not ready (or
returns). While a step runs, nothing else on that loop runs; a step of 100 ms is 100 ms
during which every other request on the process waits.

How steps are timed
-------------------
:class:`LoopMonitor` installs a task factory on the loop (``loop.set_task_factory``;
the factory that was there before is chained, and asyncio's and uvloop's loops both call
it). Each new task's coroutine is wrapped in a small coroutine that awaits a generator
relaying ``send()``/``throw()``/``close()`` to the original coroutine and timing each
relayed call, so a step costs two ``perf_counter()`` reads, one or two ``thread_time()``
reads and two context-variable reads::

    wall_s = perf_counter() after - before          (the step, in seconds)
    cpu_s  = thread_time() after - before           (CPU time of the loop thread)

and adds ``wall_s`` to the request's ``loop_busy_s``, ``cpu_s`` to ``cpu_s``, one to
``steps`` and keeps ``longest_step_s``. The request is the one whose
:class:`~brownout.probe._cost.RequestCost` is current in the task's context after the
step (before it when the step ended the request), so tasks a request spawns are
attributed to it. A step of at least ``loop_warn_s`` is kept as a :class:`LoopStep`
(wall, CPU and, when the watchdog caught it, the stack) in ``cost.blocking``, at most
:data:`MAX_BLOCKING` per request.

The wrapper is a real coroutine that awaits a generator (not a class with ``send()``),
because the C task resumes real coroutines and generators without a method lookup.
``thread_time()`` (``CLOCK_THREAD_CPUTIME_ID``) is a system call, not vDSO: ~0.6-0.9 us
on a 2 vCPU VM, the larger part of a step's cost. CPU time is still read on every step
(a step cannot know in advance that it will be long, and the per-request ``cpu_s`` is a
demand the capacity model needs exactly), but a step that starts within :data:`CHAIN_S`
(5 us) of the loop thread's previous reading (the end of the step before, on a busy
loop) takes that reading plus the wall time since as its start instead of reading again::

    cpu_start = cpu_read + (perf_counter() now - when cpu_read was taken)

exact when the thread stayed on the CPU in between (a gap that short leaves no room to
sleep); otherwise the step's CPU is undercounted by the time off the CPU in that gap, at
most 5 us (and never below zero). Measured on CPython 3.11 (2 vCPU VM, uvloop,
``benchmarks/bench_probe.py --steps``), per step: ~0.6 us with ``perf_counter`` alone,
~1.6 us with the CPU time (two reads each step: ~2.3 us).
``LoopMonitor(..., cpu=False)`` drops it (``cpu_s`` then stays 0 for loop steps and
blocking steps are not classified).

Stacks
------
A daemon watchdog thread sleeps on a :class:`threading.Event` and, when the loop's
current step has run for ``loop_stack_after_s``, snapshots the loop
thread's stack (``sys._current_frames()``) once for that step: the application frames,
innermost last, as ``"path/file.py:42 in func"`` (the innermost frames of any code when
none is the application's). It never touches a request's record: the step's own
wrapper takes the snapshot when the step ends. It wakes when the running step would be
``loop_stack_after_s`` old, and ``loop_stack_after_s`` after a look that found no step
to watch (never sooner than ``tick_s``, 10 ms, apart), so a step is caught between
``loop_stack_after_s`` and ``loop_stack_after_s + tick_s`` old, with a few wake-ups a
second: each one takes the GIL from the loop thread. It stops when
:meth:`LoopMonitor.uninstall` sets its event or when the loop is closed, and never keeps
the process alive.

Limits: only tasks created after :meth:`~LoopMonitor.install` are timed (the probe
attaches the monitor on the first request, whose own task is therefore not measured);
work done in plain loop callbacks (protocol ``data_received``, ``call_soon``) is not a
task step and is not counted; the task's coroutine is the wrapper
(``task.get_coro()`` returns it, named like the original) and tracebacks through a task
show two extra frames of this module; a coroutine type other than Python's (Cython)
is left unwrapped. A step nested in another (an eager task's first step, a nested
``run_until_complete``) is excluded from the enclosing step. A request that sampling
leaves out (``install(sample=...)``) is timed for its task's first step only
(:meth:`LoopMonitor.release_step`), and the tasks it spawns are not wrapped.

The request's last step is the one in which the middleware runs the detectors and books
the request; :func:`detect_loop` (and :meth:`LoopMonitor.settle`) first books the part of
that step elapsed so far, so the ledger sees it.
"""

from __future__ import annotations

import asyncio
import math
import sys
import threading
import types
from collections.abc import Callable, Coroutine, Generator
from time import perf_counter, thread_time
from types import FrameType
from typing import Any, cast

from .. import _validate as v
from ..errors import InvalidConfig
from ._cost import (
    Finding,
    LoopStep,
    ProbeThresholds,
    RequestCost,
    _current,
    _foreign,
    _unsampled,
    shown_path,
)

__all__ = ["CHAIN_S", "MAX_BLOCKING", "MAX_STACK", "LoopMonitor", "detect_loop", "stack_of"]

#: At most this many blocking steps are kept per request.
MAX_BLOCKING = 100
#: At most this many frames are kept per stack (the innermost ones).
MAX_STACK = 12
#: A step starting at most this long (seconds) after the loop thread's last CPU-clock
#: reading starts its CPU time from that reading plus the wall time since, instead of
#: reading the clock again (a system call).
CHAIN_S = 5e-6

_FIX_CPU = (
    "CPU-bound work on the event loop: move it to a process pool "
    "(loop.run_in_executor with a ProcessPoolExecutor), precompute it or cache the result."
)
_FIX_IO = (
    "Synchronous I/O or sleep on the event loop: use the async client, or run the call in "
    "a thread: anyio.to_thread.run_sync(...)."
)
_FIX_MIXED = (
    "Blocking work on the event loop (part CPU, part waiting): run it in a thread "
    "(anyio.to_thread.run_sync) or, for the CPU part, a process pool; or cache the result."
)
_FIX_UNKNOWN = (
    "Blocking work on the event loop: run it in a thread (anyio.to_thread.run_sync) or a "
    "process pool, or cache the result."
)


def _frame_text(frame: FrameType) -> str:
    code = frame.f_code
    return f"{shown_path(code.co_filename)}:{frame.f_lineno} in {code.co_name}"


def stack_of(frame: FrameType | None, limit: int = MAX_STACK) -> tuple[str, ...]:
    """The application frames of the stack ending at ``frame``, innermost last, each
    ``"path/file.py:42 in func"``; at most ``limit`` of them (the innermost). When no frame
    is the application's (standard library, installed packages, brownout), the ``limit``
    innermost frames of any code, so a stack is never empty for a live frame."""
    app: list[str] = []
    anything: list[str] = []
    f = frame
    while f is not None and len(app) < limit:
        if not _foreign(f.f_code.co_filename):
            app.append(_frame_text(f))
        elif not app and len(anything) < limit:
            anything.append(_frame_text(f))
        f = f.f_back
    chosen = app or anything
    chosen.reverse()
    return tuple(chosen)


class LoopMonitor:
    """Times every task step of one event loop into the current request's cost (see the
    module docstring).

    ``thresholds``: ``loop_warn_s`` (a step this long is kept in ``cost.blocking``) and
    ``loop_stack_after_s`` (the watchdog snapshots the stack of a step this old).
    ``tick_s``: the least time between two looks of the watchdog, in seconds. ``cpu``:
    read the loop thread's CPU time on every step (default; ~1 us per step).

    ``install(loop)`` attaches it (idempotent for the same loop; attaching to another loop
    detaches it from the first), ``uninstall()`` restores the previous task factory (or,
    when another factory has been chained on top since, turns this one into a pass-through)
    and stops the watchdog. Tasks already wrapped keep being timed until they end.
    """

    __slots__ = (
        "_factory",
        "_loop",
        "_stop",
        "_thread_id",
        "_watchdog",
        "cpu",
        "read_c",
        "read_t",
        "release",
        "snap_stack",
        "snap_t0",
        "split",
        "stack_after_s",
        "step_c0",
        "step_t0",
        "tick_s",
        "warn_s",
    )

    def __init__(
        self, thresholds: ProbeThresholds | None = None, *, tick_s: float = 0.01, cpu: bool = True
    ) -> None:
        if thresholds is not None and not isinstance(thresholds, ProbeThresholds):
            raise InvalidConfig(
                "LoopMonitor", "thresholds", thresholds, "a ProbeThresholds or None"
            )
        th = thresholds if thresholds is not None else ProbeThresholds()
        self.warn_s = v.non_negative("LoopMonitor", "thresholds.loop_warn_s", th.loop_warn_s)
        self.stack_after_s = v.non_negative(
            "LoopMonitor", "thresholds.loop_stack_after_s", th.loop_stack_after_s
        )
        self.tick_s = v.positive("LoopMonitor", "tick_s", tick_s)
        if not isinstance(cpu, bool):
            raise InvalidConfig("LoopMonitor", "cpu", cpu, "True or False")
        self.cpu = cpu
        # the running step: its start marks (0.0 when no step runs), shared with the
        # watchdog thread (plain float reads and writes: atomic under the GIL)
        self.step_t0 = 0.0
        self.step_c0 = 0.0
        self.split = False  # settle() booked part of the running step (and counted it)
        self.release = False  # release_step(): stop timing the running step's task
        # the loop thread's last CPU-clock reading and when it was taken (perf_counter)
        self.read_t = -math.inf
        self.read_c = 0.0
        self.snap_t0 = 0.0  # the step the watchdog's last stack belongs to
        self.snap_stack: tuple[str, ...] = ()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._factory: _StepFactory | None = None
        self._thread_id: int | None = None
        self._stop: threading.Event | None = None
        self._watchdog: threading.Thread | None = None

    def __repr__(self) -> str:
        return (
            f"LoopMonitor(warn_s={self.warn_s!r}, stack_after_s={self.stack_after_s!r}, "
            f"tick_s={self.tick_s!r}, cpu={self.cpu!r}, installed={self._loop is not None!r})"
        )

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop this monitor is attached to, or None."""
        return self._loop

    # -- attach / detach ---------------------------------------------------------------

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Time the steps of every task created on ``loop`` from now on, and start the
        watchdog. Call from the loop's thread or before the loop runs."""
        if not isinstance(loop, asyncio.AbstractEventLoop):
            raise InvalidConfig("LoopMonitor.install", "loop", loop, "an asyncio event loop")
        if loop.is_closed():
            raise InvalidConfig("LoopMonitor.install", "loop", loop, "an open event loop")
        if loop is self._loop:
            return
        if self._loop is not None:
            self.uninstall()
        previous = loop.get_task_factory()
        factory = _StepFactory(self, cast("_Factory | None", previous))
        loop.set_task_factory(factory)
        self._loop = loop
        self._factory = factory
        self._thread_id = None
        self.read_t = -math.inf  # a reading of another thread is no start for this one
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._thread_id = threading.get_ident()
        else:
            loop.call_soon_threadsafe(self._note_thread)
        stop = threading.Event()
        self._stop = stop
        self._watchdog = threading.Thread(
            target=self._watch,
            args=(loop, stop),
            name="brownout-loop-watchdog",
            daemon=True,
        )
        self._watchdog.start()

    def _note_thread(self) -> None:
        self._thread_id = threading.get_ident()

    def uninstall(self) -> None:
        """Detach from the loop and stop the watchdog. Idempotent."""
        loop, factory = self._loop, self._factory
        self._loop = None
        self._factory = None
        if self._stop is not None:
            self._stop.set()
        watchdog = self._watchdog
        self._stop = None
        self._watchdog = None
        if watchdog is not None and watchdog is not threading.current_thread():
            watchdog.join(timeout=1.0)
        if loop is None or factory is None:
            return
        factory.active = False
        previous = factory.previous
        if not loop.is_closed() and loop.get_task_factory() is factory:
            loop.set_task_factory(previous)

    # -- the watchdog (its own thread) -------------------------------------------------

    def _watch(self, loop: asyncio.AbstractEventLoop, stop: threading.Event) -> None:
        tick = self.tick_s
        after = self.stack_after_s
        idle = max(after, tick)  # a step starting now is at most this old at the next look
        wait = tick
        while not stop.wait(wait):
            if loop.is_closed():
                return
            wait = idle
            t0 = self.step_t0
            if not t0 or self.snap_t0 == t0:
                continue
            age = perf_counter() - t0
            if age < after:  # look again when this step would be old enough
                wait = max(after - age, tick)
                continue
            tid = self._thread_id
            if tid is None:
                continue
            frame = sys._current_frames().get(tid)
            if frame is None:
                continue
            stack = stack_of(frame)
            del frame
            if self.step_t0 == t0:  # still the same step: the stack is its own
                self.snap_stack = stack
                self.snap_t0 = t0

    # -- booking -----------------------------------------------------------------------

    def _blocked(self, cost: RequestCost, t0: float, wall_s: float, cpu_s: float) -> None:
        if len(cost.blocking) >= MAX_BLOCKING:
            return
        stack = self.snap_stack if self.snap_t0 == t0 else ()
        cost.blocking.append(LoopStep(wall_s, cpu_s if self.cpu else math.nan, stack))

    def release_step(self) -> None:
        """Stop timing the task whose step is running (call it from inside the step, on
        the loop's thread): after this step, its coroutine runs with no wrapper work at
        all (the probe calls it for a request that sampling leaves out). No-op outside a
        timed step or on another thread."""
        if self.step_t0 and threading.get_ident() == self._thread_id:
            self.release = True

    def settle(self, cost: RequestCost) -> None:
        """Book into ``cost`` the part of the running step elapsed so far (call it from
        inside the step, on the loop's thread: the middleware's last step, before the
        request is recorded). The rest of the step is booked as usual when it ends, and the
        step is counted once. No-op outside a timed step or on another thread."""
        t0 = self.step_t0
        if not t0 or threading.get_ident() != self._thread_id:
            return
        if self.cpu:
            c1 = self.read_c = thread_time()
            t1 = self.read_t = perf_counter()
        else:
            c1 = 0.0
            t1 = perf_counter()
        wall = t1 - t0
        cpu = max(c1 - self.step_c0, 0.0)
        self.step_t0 = t1
        self.step_c0 = c1
        cost.loop_busy_s += wall
        cost.cpu_s += cpu
        if not self.split:
            self.split = True
            cost.steps += 1
        cost.longest_step_s = max(cost.longest_step_s, wall)
        if wall >= self.warn_s:
            self._blocked(cost, t0, wall, cpu)


_Factory = Callable[..., "asyncio.Future[Any]"]


class _StepFactory:
    """The loop's task factory while a monitor is attached: wraps the coroutine, then
    builds the task as the previous factory (or ``asyncio.Task``) would."""

    __slots__ = ("active", "monitor", "previous")

    def __init__(self, monitor: LoopMonitor, previous: _Factory | None) -> None:
        self.monitor = monitor
        self.previous = previous
        self.active = True

    def __call__(
        self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any
    ) -> asyncio.Future[Any]:
        if self.active and type(coro) is types.CoroutineType and not _unsampled.get():
            coro = _wrap(coro, self.monitor)
        previous = self.previous
        if previous is None:
            return asyncio.Task(coro, loop=loop, **kwargs)
        return previous(loop, coro, **kwargs)


def _wrap(coro: Coroutine[Any, Any, Any], monitor: LoopMonitor) -> Coroutine[Any, Any, Any]:
    relay = cast("Generator[Any, Any, Any]", _relay(coro, monitor))
    # start the relay up to its first yield: if the task is cancelled before its first
    # step, the wrapper dies unstarted and the relay's close() closes the original, which
    # then never warns "was never awaited" (it would not have either, unwrapped)
    relay.send(None)
    wrapped = _run(relay)
    wrapped.__name__ = coro.__name__  # type: ignore[attr-defined]
    wrapped.__qualname__ = coro.__qualname__  # type: ignore[attr-defined]
    return wrapped


async def _run(relay: Generator[Any, Any, Any]) -> Any:
    return await cast("Coroutine[Any, Any, Any]", relay)


@types.coroutine
def _relay(coro: Coroutine[Any, Any, Any], mon: LoopMonitor) -> Generator[Any, Any, Any]:
    """Relay the task's resumptions to ``coro``, timing each (see the module docstring)."""
    send = coro.send
    throw = coro.throw
    try:
        value = yield  # primed by _wrap; the task's first step resumes from here
    except GeneratorExit:
        coro.close()
        raise
    except BaseException as exc:  # thrown in before the first step
        error: BaseException | None = exc
        value = None
    else:
        error = None
    cpu = mon.cpu
    warn_s = mon.warn_s
    released = False
    while True:
        outer_t0 = mon.step_t0  # non-zero: nested in another step
        outer_c0 = mon.step_c0
        before = _current.get()
        start_t = mon.step_t0 = perf_counter()
        if not cpu:
            start_c = 0.0
        elif not outer_t0 and start_t - mon.read_t <= CHAIN_S:
            # the loop thread ran without a pause since its last reading: no system call
            start_c = mon.read_c + (start_t - mon.read_t)
        else:
            start_c = thread_time()
        mon.step_c0 = start_c
        try:
            if error is None:
                out = send(value)
            else:
                thrown, error = error, None
                out = throw(thrown)
                del thrown
        except StopIteration as stop:
            return stop.value
        finally:
            if cpu:
                c1 = mon.read_c = thread_time()
                t1 = mon.read_t = perf_counter()
            else:
                c1 = 0.0
                t1 = perf_counter()
            t0 = mon.step_t0  # settle() may have booked the step up to a later mark
            wall = t1 - t0
            step_cpu = c1 - mon.step_c0
            if outer_t0:  # the enclosing step excludes this one
                mon.step_t0 = outer_t0 + (t1 - start_t)
                mon.step_c0 = outer_c0 + (c1 - start_c)
            else:
                mon.step_t0 = 0.0
            cost = _current.get()
            if cost is None:  # the step ended the request: it was still the request's
                cost = before
            if cost is not None:
                cost.loop_busy_s += wall
                if step_cpu > 0.0:
                    cost.cpu_s += step_cpu
                if mon.split:
                    mon.split = False
                else:
                    cost.steps += 1
                if wall > cost.longest_step_s:  # noqa: PLR1730 - no call per step
                    cost.longest_step_s = wall
                if wall >= warn_s:
                    mon._blocked(cost, t0, wall, step_cpu if step_cpu > 0.0 else 0.0)
            elif mon.split:
                mon.split = False
            if mon.release:
                mon.release = False
                released = True
        try:
            value = yield out
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            error = exc
            value = None
        else:
            if released and value is None:
                # untimed from here on: ``yield from`` resumes the coroutine with this
                # None (what asyncio always sends) and hands it every later resumption,
                # throw and close directly, with no Python work of ours per step
                return (yield from coro)


def _settle_running(cost: RequestCost) -> None:
    """Book the elapsed part of the running step when this thread runs a monitored loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    factory = loop.get_task_factory()
    if isinstance(factory, _StepFactory) and factory.active:
        factory.monitor.settle(cost)


def _blocking_kind(step: LoopStep, th: ProbeThresholds) -> str:
    if math.isnan(step.cpu_s) or step.wall_s <= 0:
        return "unknown"
    share = step.cpu_s / step.wall_s
    if share >= th.cpu_bound_ratio:
        return "cpu_bound"
    if share <= th.io_ratio:
        return "sync_io"
    return "mixed"


_FIXES = {"cpu_bound": _FIX_CPU, "sync_io": _FIX_IO, "mixed": _FIX_MIXED, "unknown": _FIX_UNKNOWN}
_WHAT = {
    "cpu_bound": "CPU-bound work",
    "sync_io": "synchronous I/O or sleep",
    "mixed": "blocking work",
    "unknown": "blocking work",
}


def detect_loop(cost: RequestCost, th: ProbeThresholds) -> list[Finding]:
    """``loop_blocking`` findings of one request: its steps of at least ``loop_warn_s``,
    one finding per innermost application frame (the key; steps whose stack was not
    caught, being shorter than ``loop_stack_after_s``, share the key
    ``"(no stack: <kind>)"``). Severity ``error`` when the longest of them reaches
    ``loop_error_s``, else ``warning``. The kind of blocking comes from the longest step's
    ``cpu/wall``: ``>= cpu_bound_ratio`` CPU-bound, ``<= io_ratio`` synchronous I/O or
    sleep, in between mixed. Evidence: ``step_ms``, ``cpu_ms``, ``cpu_share``, ``steps``
    (how many such steps), ``total_ms``, ``blocking`` (the kind), ``site`` and ``stack``.

    Called on the loop's thread inside the request's last step (as the probe does), it
    first books the elapsed part of that step (:meth:`LoopMonitor.settle`)."""
    _settle_running(cost)
    if not cost.blocking:
        return []
    groups: dict[str, list[LoopStep]] = {}
    for step in cost.blocking:
        if step.wall_s < th.loop_warn_s:
            continue
        key = step.stack[-1] if step.stack else f"(no stack: {_blocking_kind(step, th)})"
        groups.setdefault(key, []).append(step)
    found: list[Finding] = []
    for key, steps in groups.items():
        worst = max(steps, key=lambda s: s.wall_s)
        kind = _blocking_kind(worst, th)
        site = worst.stack[-1] if worst.stack else None
        cpu_known = not math.isnan(worst.cpu_s)
        evidence: dict[str, object] = {
            "step_ms": round(worst.wall_s * 1e3, 3),
            "cpu_ms": round(worst.cpu_s * 1e3, 3) if cpu_known else None,
            "cpu_share": round(worst.cpu_s / worst.wall_s, 3)
            if cpu_known and worst.wall_s > 0
            else None,
            "steps": len(steps),
            "total_ms": round(sum(s.wall_s for s in steps) * 1e3, 3),
            "blocking": kind,
            "site": site,
            "stack": list(worst.stack),
        }
        where = f" at {site}" if site else ""
        found.append(
            Finding(
                kind="loop_blocking",
                key=key,
                endpoint=cost.endpoint,
                severity="error" if worst.wall_s >= th.loop_error_s else "warning",
                title=f"Event loop blocked {worst.wall_s * 1e3:.0f} ms by {_WHAT[kind]}{where}",
                evidence=evidence,
                fix=_FIXES[kind],
            )
        )
    return found
