"""Run a scenario: one worker in this process, or several worker processes.

Several workers split one global schedule exactly: worker ``j`` of ``N`` inside execution
segment ``k/n`` keeps the arrivals with global index ``i % (n*N) == (k-1) + n*j``. All
workers start at one instant agreed through the wall clock, so their sends interleave as
one schedule, and the parent merges their results exactly (histograms, never percentiles).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import queue as queue_mod
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._clock import monotonic_clock, wall_time
from ..results import Threshold, merge_results
from ..scenario import Scenario
from ._engine import Worker

if TYPE_CHECKING:
    from ..faults import FaultTimeline

__all__ = ["run_load", "worker_segment"]

_START_DELAY_S = 0.3  # time for worker processes to be ready before the common start


def worker_segment(segment: tuple[int, int], worker: int, workers: int) -> tuple[int, int]:
    """The global segment of worker ``worker`` (0-based) of ``workers`` inside ``segment``."""
    k, n = segment
    return (k - 1) + n * worker + 1, n * workers


def _event_loop_runner() -> Callable[[Any], Any]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


async def _run_worker(  # noqa: PLR0917 - internal, called in two places
    scenario: Scenario,
    segment: tuple[int, int],
    start_wall: float | None,
    on_interval: Callable[[list[dict[str, Any]]], object] | None,
    stop: Callable[[], bool],
    abort_on: tuple[Threshold, ...] = (),
) -> dict[str, Any]:
    clock = monotonic_clock.now
    worker = Worker(
        scenario,
        segment=segment,
        clock=clock,
        start_at=clock(),
        on_interval=on_interval,
        abort_on=abort_on,
    )
    # The start is fixed only once the worker is built (imports, CDFs, buffers), so set-up
    # time never shows up as send lag. Alone, start at once; with others, at the common time.
    worker.t0 = clock() + (0.01 if start_wall is None else start_wall - wall_time())

    async def watch() -> None:
        while not stop():  # noqa: ASYNC110 - polls a flag set by a signal handler
            await asyncio.sleep(0.05)
        worker.stop()

    watcher = asyncio.ensure_future(watch())
    try:
        return await worker.run()
    finally:
        watcher.cancel()


def _child(  # noqa: PLR0917 - the arguments of a process target
    scenario: Scenario,
    segment: tuple[int, int],
    start_wall: float | None,
    out: Any,
    stop_event: Any,
    abort_on: tuple[Threshold, ...] = (),
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop

    def on_interval(rows: list[dict[str, Any]]) -> None:
        out.put(("rows", rows))

    try:
        doc = _event_loop_runner()(
            _run_worker(scenario, segment, start_wall, on_interval, stop_event.is_set, abort_on)
        )
        out.put(("done", doc))
    except BaseException as exc:  # reported to the parent, which decides what to print
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def run_load(
    scenario: Scenario,
    *,
    workers: int = 1,
    segment: tuple[int, int] = (1, 1),
    start_wall: float | None = None,
    on_interval: Callable[[list[dict[str, Any]]], object] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    abort_on: tuple[Threshold, ...] = (),
    faults: FaultTimeline | None = None,
) -> dict[str, Any]:
    """Run ``scenario`` (its segment ``segment``) with ``workers`` processes; returns the
    merged results document. ``on_interval`` receives timeline rows as intervals close
    (from every worker; rows of one interval arrive once per worker). A threshold in
    ``abort_on`` that fails on the data so far stops the run early (each worker judges its
    own share); the document then lists them under ``aborted``. ``faults`` (see
    :func:`brownout.faults.fault_session`) runs the fault timeline from the common start;
    what it did is the document's ``faults``."""
    start = start_wall
    if start is None and (workers > 1 or faults is not None):
        start = wall_time() + _START_DELAY_S
    if faults is None:
        return _run(scenario, workers, segment, start, on_interval, should_stop, abort_on)
    assert start is not None
    faults.start(monotonic_clock.now() + (start - wall_time()))
    try:
        doc = _run(scenario, workers, segment, start, on_interval, should_stop, abort_on)
    finally:
        records = faults.stop()
    doc["faults"] = records
    return doc


def _run(  # noqa: PLR0917 - internal
    scenario: Scenario,
    workers: int,
    segment: tuple[int, int],
    start: float | None,
    on_interval: Callable[[list[dict[str, Any]]], object] | None,
    should_stop: Callable[[], bool],
    abort_on: tuple[Threshold, ...],
) -> dict[str, Any]:
    if workers == 1:
        return _event_loop_runner()(  # type: ignore[no-any-return]
            _run_worker(scenario, segment, start, on_interval, should_stop, abort_on)
        )
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    stop_event = ctx.Event()
    procs = [
        ctx.Process(
            target=_child,
            args=(scenario, worker_segment(segment, j, workers), start, out, stop_event, abort_on),
            daemon=True,
        )
        for j in range(workers)
    ]
    for p in procs:
        p.start()
    docs: list[dict[str, Any]] = []
    errors: list[str] = []
    try:
        while len(docs) + len(errors) < workers:
            if should_stop():
                stop_event.set()
            try:
                kind, payload = out.get(timeout=0.1)
            except queue_mod.Empty:
                if not any(p.is_alive() for p in procs) and out.empty():
                    errors.append("a worker process exited without reporting")
                    break
                continue
            if kind == "rows" and on_interval is not None:
                on_interval(payload)
            elif kind == "done":
                docs.append(payload)
            elif kind == "error":
                errors.append(payload)
    except KeyboardInterrupt:  # without the CLI's handler: still collect partial results
        stop_event.set()
        deadline = monotonic_clock.now() + 10
        while len(docs) + len(errors) < workers and monotonic_clock.now() < deadline:
            with contextlib.suppress(queue_mod.Empty):
                kind, payload = out.get(timeout=0.5)
                if kind == "done":
                    docs.append(payload)
                elif kind == "error":
                    errors.append(payload)
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
    if errors:
        raise RuntimeError("load worker failed: " + "; ".join(errors))
    merged = merge_results(docs)
    aborted = [a for d in docs for a in d.get("aborted", [])]
    if aborted:
        merged["aborted"] = aborted
    return merged
