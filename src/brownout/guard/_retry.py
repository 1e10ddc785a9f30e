from __future__ import annotations

import email.utils
import math
import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import _validate as v
from .._clock import Clock, monotonic_clock, wall_time
from ..errors import InvalidConfig, Rejected
from ..events import Events, RetryAbandoned, RetryScheduled
from ._budget import RetryBudget
from ._deadline import _current
from ._outcome import DurationEstimate, Selector
from ._policy import AsyncNext, Call, Policy, SyncNext

__all__ = ["Attempt", "Retry"]

JITTERS = ("full", "equal", "decorrelated", "none")
_NO_RETRY_AFTER = -1.0


def retry_after_of(obj: object) -> float:
    """Seconds a ``Retry-After`` on an error or response asks to wait, or -1 when absent.

    Looks at ``retry_after_s`` (brownout's ``RateLimited``), then at the ``Retry-After``
    header of ``obj.headers`` or ``obj.response.headers`` (httpx, requests, aiohttp). The
    header is either delta-seconds or an HTTP date.
    """
    seconds = getattr(obj, "retry_after_s", None)
    if isinstance(seconds, int | float) and not isinstance(seconds, bool):
        return max(0.0, float(seconds))
    headers = getattr(obj, "headers", None)
    if headers is None:
        headers = getattr(getattr(obj, "response", None), "headers", None)
    getter = getattr(headers, "get", None)
    if getter is None:
        return _NO_RETRY_AFTER
    value = getter("Retry-After") or getter("retry-after")
    if not isinstance(value, str):
        return _NO_RETRY_AFTER
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return _NO_RETRY_AFTER
    return max(0.0, when.timestamp() - wall_time())


class _RetryState:
    __slots__ = ("ok_duration", "rng")

    def __init__(self, seed: int | None) -> None:
        self.rng = random.Random(seed)
        self.ok_duration = DurationEstimate()


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry(Policy):
    """Retry a failed call with capped, jittered exponential backoff.

    ``attempts`` counts every attempt, the first included. Before retry ``k`` (1-based) the
    call waits, with ``exp = min(cap_s, base_s * multiplier ** (k - 1))``:

    - ``jitter="full"`` (default): ``U(0, exp)``
    - ``jitter="equal"``: ``exp / 2 + U(0, exp / 2)``
    - ``jitter="decorrelated"``: ``min(cap_s, U(base_s, 3 * previous))``, previous from ``base_s``
    - ``jitter="none"``: ``exp``

    A ``Retry-After`` on the failure (header or ``RateLimited.retry_after_s``) raises the wait
    to what the server asked, when ``respect_retry_after``; a wait beyond
    ``max_retry_after_s`` ends the retries.

    What is retried: exceptions that are instances of ``retry_on`` (default ``Exception``)
    and pass ``retry_if``; results whose HTTP status is in ``retry_statuses`` or that pass
    ``retry_if_result``. Never a cancellation, and never brownout's own rejections
    (``CircuitOpen``, ``BulkheadFull``, ``RateLimited``...) unless ``retry_rejected=True``.

    A retry is abandoned (and the last failure raised, or the last result returned) when the
    attempts are used up, when the ``budget`` refuses it, or when it could not finish before
    the current deadline: the wait plus the smoothed duration of recent successful attempts
    must fit in the time left. Every call keeps its own attempt count and backoff; only the
    seeded random source and that duration estimate are shared.
    """

    attempts: int = 3
    base_s: float = 0.1
    multiplier: float = 2.0
    cap_s: float = 10.0
    jitter: str = "full"
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception
    retry_if: Any = None
    retry_statuses: frozenset[int] = frozenset()
    retry_if_result: Any = None
    retry_rejected: bool = False
    respect_retry_after: bool = True
    max_retry_after_s: float = 60.0
    budget: RetryBudget | None = None
    seed: int | None = None
    name: str = "retry"
    clock: Clock = field(default=monotonic_clock, repr=False, compare=False)
    events: Events = field(default_factory=Events, repr=False, compare=False)
    _select: Selector = field(init=False, repr=False, compare=False)
    _state: _RetryState = field(init=False, repr=False, compare=False)

    kind = "retry"

    def __post_init__(self) -> None:
        v.int_at_least("Retry", "attempts", self.attempts, 1)
        v.non_negative("Retry", "base_s", self.base_s)
        v.at_least("Retry", "multiplier", self.multiplier, 1)
        v.non_negative("Retry", "cap_s", self.cap_s)
        v.one_of("Retry", "jitter", self.jitter, JITTERS)
        v.non_negative("Retry", "max_retry_after_s", self.max_retry_after_s)
        if self.budget is not None and not isinstance(self.budget, RetryBudget):
            raise InvalidConfig("Retry", "budget", self.budget, "a RetryBudget or None")
        exclude = () if self.retry_rejected else (Rejected,)
        object.__setattr__(
            self,
            "_select",
            Selector(
                "Retry",
                "retry",
                types=self.retry_on,
                exclude=exclude,
                exc_pred=self.retry_if,
                statuses=self.retry_statuses,
                result_pred=self.retry_if_result,
            ),
        )
        object.__setattr__(self, "retry_statuses", self._select.statuses)
        object.__setattr__(self, "_state", _RetryState(self.seed))

    # -- sans-IO decisions ---------------------------------------------------------------

    def backoff_s(self, retry: int, previous_s: float) -> float:
        """The wait before retry number ``retry`` (1-based); ``previous_s`` is the last wait."""
        base, cap = self.base_s, self.cap_s
        rng = self._state.rng
        if self.jitter == "decorrelated":
            upper = max(base, 3 * (previous_s if previous_s > 0 else base))
            return min(cap, rng.uniform(base, upper))
        try:
            grown = base * self.multiplier ** (retry - 1)
        except OverflowError:  # a float power past 1.8e308: far above any cap
            grown = math.inf
        exp = min(cap, grown)
        if self.jitter == "full":
            return rng.uniform(0, exp)
        if self.jitter == "equal":
            return exp / 2 + rng.uniform(0, exp / 2)
        return exp

    def plan(self, attempt: int, now: float, previous_s: float, failure: object) -> float | str:
        """After attempt ``attempt`` failed with ``failure`` at ``now``: the wait before the next
        attempt, or why there is none (``"attempts"``, ``"retry_after"``, ``"deadline"``,
        ``"budget"``). Takes the retry from the budget when it returns a wait."""
        if attempt >= self.attempts:
            return "attempts"
        delay = self.backoff_s(attempt, previous_s)
        if self.respect_retry_after:
            asked = retry_after_of(failure)
            if asked > self.max_retry_after_s:
                return "retry_after"
            delay = max(delay, asked)
        dl = _current.get()
        if dl is not None and delay + self._state.ok_duration.seconds >= dl.remaining():
            return "deadline"
        if self.budget is not None and not self.budget.try_spend(now):
            return "budget"
        return delay

    def _ok(self, started: float, now: float) -> None:
        self._state.ok_duration.observe(now - started)
        if self.budget is not None:
            self.budget.on_success(now)

    def _failed(self, attempt: int, previous_s: float, failure: object) -> float | None:
        """Record a retryable failure and decide; None means give up (already reported)."""
        now = self.clock.now()
        if self.budget is not None:
            self.budget.on_failure(now)
        decision = self.plan(attempt, now, previous_s, failure)
        if isinstance(decision, str):
            if self.events:
                self.events.emit(RetryAbandoned(now, self.name, attempt, decision))
            return None
        if self.events:
            cause = type(failure).__name__
            self.events.emit(RetryScheduled(now, self.name, attempt, decision, cause))
        return decision

    # -- adapters ------------------------------------------------------------------------

    def _run(self, nxt: SyncNext, call: Call) -> Any:
        clock, select, budget = self.clock, self._select, self.budget
        if budget is not None:
            budget.on_request(clock.now())
        attempt, previous = 1, 0.0
        while True:
            started = clock.now()
            try:
                result = nxt(call)
            except Exception as exc:
                if not select.exception(exc):
                    if budget is not None and not isinstance(exc, Rejected):
                        budget.on_success(clock.now())  # the dependency answered
                    raise
                delay = self._failed(attempt, previous, exc)
                if delay is None:
                    raise
            else:
                if not (select.selects_results and select.result(result)):
                    self._ok(started, clock.now())
                    return result
                delay = self._failed(attempt, previous, result)
                if delay is None:
                    return result
            clock.sleep(delay)
            attempt, previous = attempt + 1, delay

    async def _arun(self, nxt: AsyncNext, call: Call) -> Any:
        clock, select, budget = self.clock, self._select, self.budget
        if budget is not None:
            budget.on_request(clock.now())
        attempt, previous = 1, 0.0
        while True:
            started = clock.now()
            try:
                result = await nxt(call)
            except Exception as exc:
                if not select.exception(exc):
                    if budget is not None and not isinstance(exc, Rejected):
                        budget.on_success(clock.now())  # the dependency answered
                    raise
                delay = self._failed(attempt, previous, exc)
                if delay is None:
                    raise
            else:
                if not (select.selects_results and select.result(result)):
                    self._ok(started, clock.now())
                    return result
                delay = self._failed(attempt, previous, result)
                if delay is None:
                    return result
            await clock.asleep(delay)
            attempt, previous = attempt + 1, delay

    # -- context-manager form: for attempt in retry: with attempt: ... -------------------

    def __iter__(self) -> Iterator[Attempt]:
        """Retry a block of code: ``for attempt in retry: with attempt: ...``."""
        run = Attempt(self)
        while True:
            yield run
            if run.delay is None:
                return
            self.clock.sleep(run.delay)
            run.next()

    async def __aiter__(self) -> AsyncIterator[Attempt]:
        """Async form: ``async for attempt in retry: with attempt: ...``."""
        run = Attempt(self)
        while True:
            yield run
            if run.delay is None:
                return
            await self.clock.asleep(run.delay)
            run.next()


class Attempt:
    """One attempt of a retried block; ``number`` is 1 for the first.

    Leaving the ``with`` block with a retryable exception that the policy decides to retry
    suppresses it, and the loop runs the block again after the backoff; otherwise the
    exception propagates and the loop ends. A block that ends normally ends the loop.
    """

    __slots__ = ("delay", "number", "previous", "retry", "started")

    def __init__(self, retry: Retry) -> None:
        self.retry = retry
        self.number = 1
        self.previous = 0.0
        self.delay: float | None = None
        self.started = 0.0
        if retry.budget is not None:
            retry.budget.on_request(retry.clock.now())

    def next(self) -> None:
        self.previous = self.delay or 0.0
        self.number += 1
        self.delay = None

    def __enter__(self) -> Attempt:
        self.started = self.retry.clock.now()
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> bool:
        retry = self.retry
        if exc is None:
            retry._ok(self.started, retry.clock.now())
            return False
        if not isinstance(exc, Exception) or not retry._select.exception(exc):
            if (
                retry.budget is not None
                and isinstance(exc, Exception)
                and not isinstance(exc, Rejected)
            ):
                retry.budget.on_success(retry.clock.now())  # the dependency answered
            return False
        self.delay = retry._failed(self.number, self.previous, exc)
        return self.delay is not None

    def __repr__(self) -> str:
        return f"Attempt(number={self.number})"
