from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from .. import _validate as v
from .._clock import Clock, TimerHandle, monotonic_clock
from ..errors import InvalidConfig
from ..events import Events, HedgeStarted
from ._budget import RetryBudget
from ._deadline import _current
from ._outcome import DurationEstimate, Selector
from ._policy import AsyncNext, Call, Policy, SyncNext

__all__ = ["Hedge"]


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _HedgeState:
    __slots__ = ("ok_duration",)

    def __init__(self) -> None:
        self.ok_duration = DurationEstimate()


@dataclass(frozen=True, slots=True, kw_only=True)
class Hedge(Policy):
    """Start another attempt when the first is slow; the first acceptable result wins.

    After ``delay_s`` without an acceptable result, one more attempt starts, up to
    ``max_hedges`` extra attempts (``delay_s=0`` starts them all at once, with no timer). An
    attempt that fails (an exception selected by ``hedge_on``/``hedge_if``, or a result
    selected by ``hedge_statuses``/``hedge_if_result``) starts the next hedge at once. The
    first acceptable result is returned; the other attempts are cancelled and awaited before
    ``acall`` returns, so nothing keeps running behind the caller's back. When every attempt
    fails, the last failure is raised (or the last unacceptable result returned). An
    exception that is not selected (or a cancellation of an attempt) is raised at once, after
    the others are cancelled; attempts that finish in the same loop step are examined in
    launch order, and an acceptable result among them wins.

    A hedge is extra load, so each one draws on ``budget`` like a retry does, and no hedge
    starts when the smoothed duration of recent successful attempts no longer fits before
    the current deadline. Hedging needs concurrent attempts that can be cancelled, so it
    runs ``async`` calls only.
    """

    delay_s: float = 2.0
    max_hedges: int = 1
    hedge_on: type[BaseException] | tuple[type[BaseException], ...] = Exception
    hedge_if: Callable[[BaseException], bool] | None = None
    hedge_statuses: Collection[int] = frozenset()
    hedge_if_result: Callable[[Any], bool] | None = None
    budget: RetryBudget | None = None
    name: str = "hedge"
    clock: Clock = field(default=monotonic_clock, repr=False, compare=False)
    events: Events = field(default_factory=Events, repr=False, compare=False)
    _select: Selector = field(init=False, repr=False, compare=False)
    _state: _HedgeState = field(default_factory=_HedgeState, init=False, repr=False, compare=False)

    kind = "hedge"

    def __post_init__(self) -> None:
        v.non_negative("Hedge", "delay_s", self.delay_s)
        v.int_at_least("Hedge", "max_hedges", self.max_hedges, 1)
        if self.budget is not None and not isinstance(self.budget, RetryBudget):
            raise InvalidConfig("Hedge", "budget", self.budget, "a RetryBudget or None")
        select = Selector(
            "Hedge",
            "hedge",
            types=self.hedge_on,
            exc_pred=self.hedge_if,
            statuses=self.hedge_statuses,
            result_pred=self.hedge_if_result,
        )
        object.__setattr__(self, "_select", select)
        object.__setattr__(self, "hedge_statuses", select.statuses)

    def may_hedge(self, now: float) -> bool:
        """Whether one more attempt may start at ``now``: it fits before the deadline and the
        budget allows it (the budget is charged when this returns True)."""
        dl = _current.get()
        if dl is not None and self._state.ok_duration.seconds >= dl.remaining():
            return False
        return self.budget is None or self.budget.try_spend(now)

    def _run(self, nxt: SyncNext, call: Call) -> Any:
        raise TypeError(
            f"Hedge {self.name!r} runs async calls only: hedged attempts must run concurrently "
            "and be cancellable, which threads are not"
        )

    async def _arun(self, nxt: AsyncNext, call: Call) -> Any:
        clock, select, budget, events = self.clock, self._select, self.budget, self.events
        start = clock.now()
        if budget is not None:
            budget.on_request(start)
        # Running attempts -> their start time, in launch order (dicts keep insertion order).
        running: dict[asyncio.Future[Any], float] = {}
        hedges = 0  # hedges started so far
        may_hedge = True  # False once the budget or the deadline refused one

        def launch() -> None:
            running[asyncio.ensure_future(nxt(call))] = clock.now()

        def hedge() -> None:
            nonlocal hedges, may_hedge
            now = clock.now()
            if not self.may_hedge(now):
                may_hedge = False
                return
            hedges += 1
            if events:
                events.emit(HedgeStarted(now, self.name, hedges + 1, now - start))
            launch()

        launch()
        if self.delay_s == 0:
            while may_hedge and hedges < self.max_hedges:
                hedge()
        loop = asyncio.get_running_loop()
        timer: asyncio.Future[None] | None = None
        handle: TimerHandle | None = None
        last: Any = None  # the last failure: an exception (last_raised) or a result
        last_raised = False
        try:
            while running:
                if timer is None and may_hedge and hedges < self.max_hedges:
                    timer = loop.create_future()
                    handle = clock.call_later(self.delay_s, functools.partial(_wake, timer))
                waiting: set[asyncio.Future[Any]] = set(running)
                if timer is not None:
                    waiting.add(timer)
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                hedge_now = timer is not None and timer in done
                fatal: BaseException | None = None
                # Attempts finished in the same step are taken in launch order; an acceptable
                # result among them wins over a simultaneous failure.
                for fut in [f for f in running if f in done]:
                    began = running.pop(fut)
                    if fut.cancelled():  # cancelled by someone else: pass the cancellation on
                        if fatal is None:
                            fatal = asyncio.CancelledError()
                        continue
                    exc = fut.exception()
                    now = clock.now()
                    if exc is not None:
                        if not isinstance(exc, Exception) or not select.exception(exc):
                            if fatal is None:
                                fatal = exc
                            continue
                        last_raised, last = True, exc
                    else:
                        result = fut.result()
                        if not (select.selects_results and select.result(result)):
                            self._state.ok_duration.observe(now - began)
                            if budget is not None:
                                budget.on_success(now)
                            return result
                        last_raised, last = False, result
                    if budget is not None:
                        budget.on_failure(now)
                    hedge_now = True  # a failed attempt starts the next hedge at once
                if fatal is not None:
                    raise fatal
                if hedge_now and may_hedge and hedges < self.max_hedges:
                    if handle is not None:
                        handle.cancel()
                    timer = handle = None
                    hedge()
        finally:
            if handle is not None:
                handle.cancel()
            if running:
                for fut in running:
                    fut.cancel()
                await asyncio.gather(*running, return_exceptions=True)
        if last_raised:
            raise last
        return last
