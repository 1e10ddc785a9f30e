"""Circuit breaker: stop calling a dependency that fails or crawls, and probe it before trusting it again.

States (plain strings, as the events carry them)::

    closed ──(failure or slow-call rate >= threshold, once minimum_calls are in)──> open
    open ──(first call at or after `until`)──> half_open            (lazy: no timer)
    half_open ──(all probes finished, rates < thresholds)──> closed (window cleared)
    half_open ──(probe rates >= a threshold, or half_open_max_s passed)──> open (longer)
    any ──force_open()──> forced_open     any ──force_close()──> forced_closed
    any ──reset()──> closed

Outcomes go into a sliding window kept with running totals, so recording one outcome and
reading a rate are O(1):

- ``window="count"``: the last ``window_size`` outcomes (a ring buffer).
- ``window="time"``: the outcomes of the last ``window_size`` seconds, in 1 s buckets; the
  window therefore spans between ``window_size - 1`` and ``window_size`` seconds.

With ``n`` outcomes in the window, ``f`` of them failures and ``s`` slow (a call is slow
when it took longer than ``slow_call_s``, measured on the breaker's clock from admission to
completion; a slow call may also be a failure and then counts in both)::

    failure_rate   = f / n        slow_call_rate = s / n        (only once n >= minimum_calls)

The breaker opens when ``failure_rate >= failure_rate threshold`` or ``slow_call_rate >=
slow_call_rate threshold``. The k-th consecutive open (k = 0 when it opens from closed, k
counting re-opens from half-open since it last closed) lasts::

    open duration = min(open_s * open_growth ** k, max_open_s)

Half-open admits ``half_open_calls`` probes; further calls are refused while they run.
Once all of them have finished, their failure and slow-call rates (over ``half_open_calls``)
decide: re-open if either reaches its threshold, close otherwise.

Every transition starts a new *generation*. A permit carries the generation it was issued
in, and an outcome whose permit is from an earlier generation is dropped: a slow call
admitted while closed cannot land in the half-open tally, nor in the fresh window after the
breaker closes.

Events: ``CircuitStateChanged(old, new, until, failure_rate, slow_call_rate)`` on every
transition, carrying the rates that decided it (the window's when tripping from closed, the
probes' when half-open decides or times out, the window's as they stand for the others;
-1.0 where fewer than ``minimum_calls`` outcomes are in), and
``CallRejected(reason="circuit_open")`` for every refused call.

Threads and cost: admitting a call while closed takes no lock. Recording an outcome takes
one lock, except for the commonest one: a success that is not slow, while closed with a full
count window, cannot change any decision and is only counted, lock-free; the next holder of
the lock moves that count into the window first, so the window keeps outcomes in order.

Defaults follow resilience4j (window of 100 calls, minimum 100 calls, failure rate 0.5,
slow-call rate 1.0, slow calls over 60 s, 10 half-open probes) except ``open_s``: 30 s
instead of 60 s. A minute of refused calls after a short blip costs more than one round of
probes that find the dependency still down, and the probes are few and bounded; Polly's 5 s,
at the other end, re-probes a restarting service several times per restart. Set
``open_growth`` (with ``max_open_s``) to back off further during long outages.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import threading
from collections.abc import Awaitable, Callable, Collection, Coroutine
from dataclasses import dataclass, field
from math import floor
from typing import Any, ParamSpec, TypeVar, cast, overload

from .. import _validate as v
from .._clock import Clock, monotonic_clock
from ..errors import CircuitOpen, InvalidConfig, Rejected
from ..events import CallRejected, CircuitStateChanged, Events
from . import _scope
from ._outcome import Selector, status_of
from ._policy import AsyncNext, Call, Policy, SyncNext

__all__ = [
    "CLOSED",
    "FORCED_CLOSED",
    "FORCED_OPEN",
    "HALF_OPEN",
    "OPEN",
    "BreakerMachine",
    "CircuitBreaker",
]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
FORCED_OPEN = "forced_open"
FORCED_CLOSED = "forced_closed"

# An outcome in the window: bit 0 = failure, bit 1 = slow.
_FAILED = 1
_SLOW = 2

_OWNER = "CircuitBreaker"
_NO_KWARGS: dict[str, Any] = {}
# Results of these exact types never carry an HTTP status (no instance attributes).
_PLAIN = frozenset({int, float, str, bytes, bool, type(None), tuple, list, dict, set, frozenset})

P = ParamSpec("P")
T = TypeVar("T")


# -- sliding windows -------------------------------------------------------------------


class _CountWindow:
    """The last ``size`` outcomes in a ring, with running totals."""

    __slots__ = ("failures", "outcomes", "pos", "size", "slow", "total")

    def __init__(self, size: int) -> None:
        self.size = size
        self.outcomes = bytearray(size)
        self.pos = 0
        self.total = 0
        self.failures = 0
        self.slow = 0

    def add(self, now: float, code: int) -> bool:
        """Add one outcome. Returns False: nothing ages out of a count window."""
        pos = self.pos
        outcomes = self.outcomes
        if self.total < self.size:
            self.total += 1
        else:
            old = outcomes[pos]
            if old:
                self.failures -= old & _FAILED
                self.slow -= old >> 1
        if code:
            outcomes[pos] = code
            self.failures += code & _FAILED
            self.slow += code >> 1
        else:
            outcomes[pos] = 0
        pos += 1
        self.pos = 0 if pos == self.size else pos
        return False

    def add_successes(self, n: int) -> None:
        """Add ``n`` successes to a full window: O(min(n, size))."""
        size = self.size
        if n >= size:
            self.outcomes = bytearray(size)
            self.failures = self.slow = 0
            self.pos = (self.pos + n) % size
            return
        outcomes = self.outcomes
        pos = self.pos
        for _ in range(n):
            old = outcomes[pos]
            if old:
                self.failures -= old & _FAILED
                self.slow -= old >> 1
                outcomes[pos] = 0
            pos += 1
            if pos == size:
                pos = 0
        self.pos = pos

    def roll(self, now: float) -> None:
        """Nothing ages out of a count window."""

    def clear(self) -> None:
        self.outcomes = bytearray(self.size)
        self.pos = self.total = self.failures = self.slow = 0


class _TimeWindow:
    """Outcomes of the last ``size`` seconds in 1 s buckets, with running totals.

    Bucket ``floor(now) % size`` holds second ``floor(now)``. Moving to a later second
    subtracts every bucket that falls out of the window from the totals and empties it:
    O(seconds elapsed), at most O(size) after a long gap, so O(1) amortized per second.
    An outcome stamped before the newest second (threads racing) goes into the newest bucket.
    """

    __slots__ = ("calls", "failed", "failures", "head", "size", "slow", "slowed", "total")

    def __init__(self, size: int) -> None:
        self.size = size
        self.calls = [0] * size
        self.failed = [0] * size
        self.slowed = [0] * size
        self.head = 0  # the second the newest bucket holds
        self.total = 0
        self.failures = 0
        self.slow = 0

    def roll(self, now: float) -> None:
        second = floor(now)
        head = self.head
        if second <= head:
            return
        size = self.size
        if second - head >= size:
            self.calls = [0] * size
            self.failed = [0] * size
            self.slowed = [0] * size
            self.total = self.failures = self.slow = 0
        else:
            calls, failed, slowed = self.calls, self.failed, self.slowed
            for s in range(head + 1, second + 1):
                i = s % size
                if calls[i]:
                    self.total -= calls[i]
                    self.failures -= failed[i]
                    self.slow -= slowed[i]
                    calls[i] = failed[i] = slowed[i] = 0
        self.head = second

    def add(self, now: float, code: int) -> bool:
        """Add one outcome. Returns True when the window moved on to a later second: old
        outcomes aged out, and the rates may have risen without a new failure."""
        moved = now >= self.head + 1
        if moved:
            self.roll(now)
        i = self.head % self.size
        self.calls[i] += 1
        self.total += 1
        if code:
            if code & _FAILED:
                self.failed[i] += 1
                self.failures += 1
            if code & _SLOW:
                self.slowed[i] += 1
                self.slow += 1
        return moved

    def clear(self) -> None:
        size = self.size
        self.calls = [0] * size
        self.failed = [0] * size
        self.slowed = [0] * size
        self.total = self.failures = self.slow = 0


# -- the sans-IO state machine ---------------------------------------------------------


class BreakerMachine:
    """The breaker's decisions, as plain synchronous code that is handed ``now``.

    It never reads a clock: ``now`` (seconds) and ``duration_s`` come from the caller, so
    the simulator drives the same object in virtual time. Protocol, for one call::

        permit = machine.try_acquire(now)        # None: refused (see ``refused``)
        ... run the call ...
        machine.record(permit, now, duration_s, failed)   # failed=None: not counted

    ``failed=None`` releases the permit without counting the call (a cancellation, an
    ignored exception); in half-open that frees the probe slot for another call.

    Thread-safe: admissions in ``closed`` and ``forced_closed`` take no lock; recording an
    outcome and every transition happen under one re-entrant lock, and events are emitted
    under it too, so subscribers see transitions in order (keep subscribers quick).
    """

    __slots__ = (
        "_lock",
        "events",
        "failure_threshold",
        "fast",
        "fold_base",
        "generation",
        "half_open_calls",
        "half_open_max_s",
        "half_open_since",
        "max_open_s",
        "minimum_calls",
        "name",
        "open_duration_s",
        "open_growth",
        "open_s",
        "probe_failures",
        "probe_slow",
        "probes_done",
        "probes_running",
        "refused",
        "ring",
        "slow_call_s",
        "slow_threshold",
        "state",
        "until",
        "window",
    )

    def __init__(
        self,
        *,
        name: str,
        events: Events,
        window: str,
        window_size: int,
        minimum_calls: int,
        failure_rate: float,
        slow_call_rate: float,
        slow_call_s: float,
        open_s: float,
        open_growth: float,
        max_open_s: float,
        half_open_calls: int,
        half_open_max_s: float | None,
    ) -> None:
        self.name = name
        self.events = events
        self.window: _CountWindow | _TimeWindow
        self.ring: _CountWindow | None = None
        if window == "count":
            self.window = self.ring = _CountWindow(window_size)
            # A count window never holds more than window_size outcomes.
            minimum_calls = min(minimum_calls, window_size)
        else:
            self.window = _TimeWindow(window_size)
        self.minimum_calls = minimum_calls
        self.failure_threshold = failure_rate
        self.slow_threshold = slow_call_rate
        self.slow_call_s = slow_call_s
        self.open_s = open_s
        self.open_growth = open_growth
        self.max_open_s = max_open_s
        self.half_open_calls = half_open_calls
        self.half_open_max_s = half_open_max_s
        self._lock = threading.RLock()
        self.state = CLOSED
        self.generation = 0
        self.until: float | None = None
        self.open_duration_s = open_s
        self.half_open_since = 0.0
        self.probes_running = 0
        self.probes_done = 0
        self.probe_failures = 0
        self.probe_slow = 0
        # What the last refusal saw: (state, until), for the error the adapter raises.
        self.refused: tuple[str, float | None] = (CLOSED, None)
        # Lock-free successes (see _fold): a counter while allowed, else None.
        self.fast: itertools.count[int] | None = None
        self.fold_base = 0

    # -- readings -----------------------------------------------------------------------

    @property
    def failure_rate(self) -> float:
        """Failures / outcomes in the window as of the last recorded outcome, in [0, 1];
        -1.0 while fewer than ``minimum_calls`` outcomes are in the window."""
        return self._window_rates()[0]

    @property
    def slow_call_rate(self) -> float:
        """Slow calls / outcomes in the window as of the last recorded outcome; -1.0 while
        fewer than ``minimum_calls`` outcomes are in the window."""
        return self._window_rates()[1]

    @property
    def calls(self) -> int:
        """Outcomes in the window as of the last recorded outcome."""
        with self._lock:
            self._fold()
            return self.window.total

    @property
    def failures(self) -> int:
        """Failures among the outcomes in the window."""
        with self._lock:
            self._fold()
            return self.window.failures

    @property
    def slow_calls(self) -> int:
        """Slow calls among the outcomes in the window."""
        with self._lock:
            self._fold()
            return self.window.slow

    def rates(self, now: float) -> tuple[float, float]:
        """``(failure_rate, slow_call_rate)`` at ``now``: a time window first drops what aged out."""
        with self._lock:
            self.window.roll(now)
            return self._window_rates()

    # -- admission ----------------------------------------------------------------------

    def try_acquire(self, now: float) -> int | None:
        """A permit for a call starting at ``now``, or None when the breaker refuses it.

        On refusal, ``refused`` holds the ``(state, until)`` that refused it.
        """
        gen = self.generation
        state = self.state
        if state is CLOSED or state is FORCED_CLOSED:
            return gen
        with self._lock:
            return self._acquire_locked(now)

    def _acquire_locked(self, now: float) -> int | None:
        state = self.state
        if state is OPEN:
            until = self.until
            if until is not None and now < until:
                self.refused = (OPEN, until)
                return None
            self._enter_half_open(now)
            if self.state is not HALF_OPEN:  # a subscriber changed it from the event
                return self._acquire_locked(now)
        elif state is HALF_OPEN:
            if self._half_open_expired(now):
                self._reopen(now, *self._probe_rates())
                self.refused = (OPEN, self.until)
                return None
        elif state is FORCED_OPEN:
            self.refused = (FORCED_OPEN, None)
            return None
        else:  # closed or forced_closed since the unlocked read
            return self.generation
        if self.probes_running + self.probes_done >= self.half_open_calls:
            self.refused = (HALF_OPEN, None)
            return None
        self.probes_running += 1
        return self.generation

    # -- outcomes -----------------------------------------------------------------------

    def record(self, permit: int, now: float, duration_s: float, failed: bool | None) -> None:
        """Record the outcome of the call admitted with ``permit``, finished at ``now``.

        ``duration_s`` is how long it ran (slow when ``> slow_call_s``); ``failed`` is
        whether it counts as a failure, or None to release the permit without counting.
        Outcomes of permits from an earlier generation are dropped.
        """
        counter = self.fast
        if (
            counter is not None
            and failed is False
            and duration_s <= self.slow_call_s
            and permit == self.generation
        ):
            # A plain success into a full count window, closed: it cannot change a decision,
            # so it is only counted (lock-free); the lock holder folds the count in.
            next(counter)
            return
        if permit != self.generation:
            return
        lock = self._lock
        lock.acquire()
        try:
            if permit != self.generation:
                return
            state = self.state
            if state is HALF_OPEN:
                self._record_probe(now, duration_s, failed)
                return
            if failed is None:
                return
            if self.fast is not None:
                self._fold()
            code = _FAILED if failed else 0
            if duration_s > self.slow_call_s:
                code |= _SLOW
            w = self.window
            # A rate can rise only by a failure or slow call, by old outcomes ageing out,
            # or by the window reaching minimum_calls.
            moved = w.add(now, code)
            total = w.total
            if (
                (moved or code or total == self.minimum_calls)
                and total >= self.minimum_calls
                and state is CLOSED
                and (
                    w.failures / total >= self.failure_threshold
                    or w.slow / total >= self.slow_threshold
                )
            ):
                self._trip(now)
            elif self.fast is None:
                self._refresh_fast()
        finally:
            lock.release()

    def _record_probe(self, now: float, duration_s: float, failed: bool | None) -> None:
        self.probes_running -= 1
        if self._half_open_expired(now):
            self._reopen(now, *self._probe_rates())
            return
        if failed is None:
            return
        self.probes_done += 1
        if failed:
            self.probe_failures += 1
        if duration_s > self.slow_call_s:
            self.probe_slow += 1
        if self.probes_done >= self.half_open_calls:
            failure_rate, slow_rate = self._probe_rates()
            if failure_rate >= self.failure_threshold or slow_rate >= self.slow_threshold:
                self._reopen(now, failure_rate, slow_rate)
            else:
                self._close(now, failure_rate, slow_rate)

    # -- time-driven transitions --------------------------------------------------------

    def tick(self, now: float) -> str:
        """Apply the transitions due at ``now`` without admitting a call, and return the state.

        ``open`` becomes ``half_open`` once ``until`` has passed; ``half_open`` re-opens once
        it has lasted ``half_open_max_s``. A call arriving does the same, so calling this is
        only needed to observe the state (a simulator, a health endpoint).
        """
        state = self.state
        if state is OPEN or state is HALF_OPEN:
            with self._lock:
                state = self.state
                if state is OPEN and self.until is not None and now >= self.until:
                    self._enter_half_open(now)
                elif state is HALF_OPEN and self._half_open_expired(now):
                    self._reopen(now, *self._probe_rates())
                return self.state
        return state

    # -- manual control -----------------------------------------------------------------

    def force_open(self, now: float) -> None:
        """Refuse every call until ``force_close`` or ``reset``."""
        with self._lock:
            if self.state is not FORCED_OPEN:
                self._transition(now, FORCED_OPEN, None, *self._window_rates())

    def force_close(self, now: float) -> None:
        """Admit every call until ``force_open`` or ``reset``; outcomes still fill the window
        (rates stay readable) but never open the breaker."""
        with self._lock:
            if self.state is not FORCED_CLOSED:
                self._transition(now, FORCED_CLOSED, None, *self._window_rates())

    def reset(self, now: float) -> None:
        """Back to ``closed`` with an empty window and the initial open duration.

        Outcomes of calls admitted before the reset are dropped.
        """
        with self._lock:
            self._clear_window()
            self.open_duration_s = self.open_s
            if self.state is not CLOSED:
                self._transition(now, CLOSED, None, -1.0, -1.0)
            else:
                self.generation += 1

    # -- transitions (lock held) --------------------------------------------------------

    def _window_rates(self) -> tuple[float, float]:
        with self._lock:
            self._fold()
            w = self.window
            total = w.total
            if total < self.minimum_calls:
                return -1.0, -1.0
            return w.failures / total, w.slow / total

    # Lock-free successes. Once a count window is full and the breaker is closed (or forced
    # closed), a success that is not slow cannot change any decision: it only pushes the
    # oldest outcome out. record() then just counts it with next() on an itertools.count
    # (atomic under the GIL), and whoever holds the lock next moves the count into the ring
    # before touching the window (_fold), so the ring sees outcomes in order. The counter is
    # dropped at every transition and clear (which also start a new generation: a success
    # racing with them belongs to the old generation and may be dropped).

    def _fold(self) -> None:
        counter = self.fast
        if counter is None:
            return
        mark = next(counter)  # successes + the folds' own next() calls so far
        successes = mark - self.fold_base
        self.fold_base = mark + 1
        if successes and self.ring is not None:
            self.ring.add_successes(successes)

    def _refresh_fast(self) -> None:
        ring = self.ring
        state = self.state
        if (
            ring is not None
            and ring.total == ring.size
            and (state is CLOSED or state is FORCED_CLOSED)
        ):
            if self.fast is None:
                self.fast = itertools.count()
                self.fold_base = 0
        else:
            self.fast = None

    def _clear_window(self) -> None:
        self.fast = None
        self.window.clear()

    def _probe_rates(self) -> tuple[float, float]:
        """Rates over the probes finished so far (all ``half_open_calls`` when deciding)."""
        done = self.probes_done
        if not done:
            return -1.0, -1.0
        return self.probe_failures / done, self.probe_slow / done

    def _half_open_expired(self, now: float) -> bool:
        limit = self.half_open_max_s
        return limit is not None and now - self.half_open_since >= limit

    def _transition(
        self, now: float, new: str, until: float | None, failure_rate: float, slow_rate: float
    ) -> None:
        old = self.state
        self._fold()
        self.generation += 1
        self.state = new
        self.until = until
        self._refresh_fast()
        # Probe counters describe the current half-open only.
        self.probes_running = self.probes_done = self.probe_failures = self.probe_slow = 0
        if self.events:
            self.events.emit(
                CircuitStateChanged(now, self.name, old, new, until, failure_rate, slow_rate)
            )

    def _trip(self, now: float) -> None:
        self.open_duration_s = self.open_s
        self._transition(now, OPEN, now + self.open_s, *self._window_rates())

    def _reopen(self, now: float, failure_rate: float, slow_rate: float) -> None:
        duration = min(self.open_duration_s * self.open_growth, self.max_open_s)
        self.open_duration_s = duration
        self._transition(now, OPEN, now + duration, failure_rate, slow_rate)

    def _enter_half_open(self, now: float) -> None:
        self.half_open_since = now
        self._transition(now, HALF_OPEN, None, *self._window_rates())

    def _close(self, now: float, failure_rate: float, slow_rate: float) -> None:
        self._clear_window()
        self.open_duration_s = self.open_s
        self._transition(now, CLOSED, None, failure_rate, slow_rate)

    def __repr__(self) -> str:
        return (
            f"BreakerMachine(name={self.name!r}, state={self.state!r}, until={self.until!r}, "
            f"calls={self.calls}, failure_rate={self.failure_rate:.3f}, "
            f"slow_call_rate={self.slow_call_rate:.3f})"
        )


# -- the policy ------------------------------------------------------------------------


def _unit_rate(name: str, value: object) -> float:
    rate = v.ratio(_OWNER, name, value)
    if rate == 0:
        raise InvalidConfig(_OWNER, name, value, "a number in (0, 1]")
    return rate


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitBreaker(Policy):
    """Refuse calls to a dependency whose recent calls fail or crawl; probe before trusting it.

    See the module documentation for the states and formulas. Configuration (all
    keyword-only; durations in seconds, rates in [0, 1]):

    - ``window``: ``"count"`` (the last ``window_size`` calls) or ``"time"`` (the calls of the
      last ``window_size`` seconds, 1 s buckets).
    - ``minimum_calls``: outcomes the window must hold before any rate is computed (for a
      count window, at most ``window_size`` is used).
    - ``failure_rate`` / ``slow_call_rate``: thresholds in (0, 1], compared with ``>=``.
    - ``slow_call_s``: a call running longer than this is slow (``inf`` turns it off).
    - ``open_s``: how long the breaker stays open the first time; each consecutive re-open
      multiplies the previous duration by ``open_growth`` (>= 1), capped at ``max_open_s``
      (default ``10 * open_s``).
    - ``half_open_calls``: probes admitted in half-open; their outcome decides.
    - ``half_open_max_s``: re-open when half-open has lasted this long without a decision
      (probes that hang); None waits for the probes forever.
    - Failures: an exception that is an instance of ``failure_on`` (and for which
      ``failure_if(exc)``, when given, is true), or a result whose HTTP status
      (``status_code`` / ``status``) is in ``failure_statuses`` or for which
      ``failure_if_result(result)`` is true. Any other exception counts as a success.
    - ``ignore_on``: exceptions that are neither success nor failure (by default brownout's
      own ``Rejected``: a ``BulkheadFull`` raised inside says nothing about the dependency).
      Cancellation and other ``BaseException`` are never counted either.

    A refused call raises :class:`brownout.errors.CircuitOpen` with ``state`` and ``until``
    and emits ``CallRejected(reason="circuit_open")``; transitions emit
    ``CircuitStateChanged``. Used as ``breaker.call(fn)``, ``await breaker.acall(fn)``,
    ``@breaker`` or ``with`` / ``async with breaker:`` (a ``with`` block that raises counts
    like a call that raised). The sans-IO core is :attr:`machine`.
    """

    window: str = "count"
    window_size: int = 100
    minimum_calls: int = 100
    failure_rate: float = 0.5
    slow_call_rate: float = 1.0
    slow_call_s: float = 60.0
    open_s: float = 30.0
    open_growth: float = 1.0
    max_open_s: float | None = None
    half_open_calls: int = 10
    half_open_max_s: float | None = None
    failure_on: type[BaseException] | tuple[type[BaseException], ...] = Exception
    failure_if: Callable[[BaseException], bool] | None = None
    failure_if_result: Callable[[Any], bool] | None = None
    failure_statuses: Collection[int] = range(500, 600)
    ignore_on: type[BaseException] | tuple[type[BaseException], ...] = Rejected
    name: str = "breaker"
    clock: Clock = field(default=monotonic_clock, repr=False, compare=False)
    events: Events = field(default_factory=Events, repr=False, compare=False)
    _state: _BreakerState = field(init=False, repr=False, compare=False)

    kind = "circuit_breaker"

    def __post_init__(self) -> None:
        v.one_of(_OWNER, "window", self.window, ("count", "time"))
        size = v.int_at_least(_OWNER, "window_size", self.window_size, 1)
        minimum = v.int_at_least(_OWNER, "minimum_calls", self.minimum_calls, 1)
        failure_rate = _unit_rate("failure_rate", self.failure_rate)
        slow_rate = _unit_rate("slow_call_rate", self.slow_call_rate)
        slow_s = v.positive(_OWNER, "slow_call_s", self.slow_call_s, finite=False)
        open_s = v.positive(_OWNER, "open_s", self.open_s)
        growth = v.at_least(_OWNER, "open_growth", self.open_growth, 1)
        if self.max_open_s is None:
            max_open_s = 10 * open_s
        else:
            max_open_s = v.positive(_OWNER, "max_open_s", self.max_open_s)
            if max_open_s < open_s:
                raise InvalidConfig(
                    _OWNER, "max_open_s", self.max_open_s, f"None or >= open_s ({open_s:g})"
                )
        probes = v.int_at_least(_OWNER, "half_open_calls", self.half_open_calls, 1)
        half_open_max_s = None
        if self.half_open_max_s is not None:
            half_open_max_s = v.positive(_OWNER, "half_open_max_s", self.half_open_max_s)
        ignore = v.exception_types(_OWNER, "ignore_on", self.ignore_on) if self.ignore_on else ()
        selector = Selector(
            _OWNER,
            "failure",
            types=self.failure_on,
            exc_pred=self.failure_if,
            statuses=self.failure_statuses,
            result_pred=self.failure_if_result,
        )
        machine = BreakerMachine(
            name=self.name,
            events=self.events,
            window=self.window,
            window_size=size,
            minimum_calls=minimum,
            failure_rate=failure_rate,
            slow_call_rate=slow_rate,
            slow_call_s=slow_s,
            open_s=open_s,
            open_growth=growth,
            max_open_s=max_open_s,
            half_open_calls=probes,
            half_open_max_s=half_open_max_s,
        )
        object.__setattr__(self, "_state", _BreakerState(machine, selector, ignore))

    # -- readings and manual control ----------------------------------------------------

    @property
    def machine(self) -> BreakerMachine:
        """The sans-IO state machine (``try_acquire`` / ``record`` / ``tick``), for simulators."""
        return self._state.machine

    @property
    def state(self) -> str:
        """``closed``, ``open``, ``half_open``, ``forced_open`` or ``forced_closed``.

        ``open`` turns ``half_open`` lazily: this reads ``open`` past ``until`` until a call
        arrives (or ``machine.tick(now)`` runs).
        """
        return self._state.machine.state

    @property
    def until(self) -> float | None:
        """When the current ``open`` state ends (clock seconds), else None."""
        return self._state.machine.until

    def force_open(self) -> None:
        """Refuse every call until :meth:`force_close` or :meth:`reset`."""
        self._state.machine.force_open(self.clock.now())

    def force_close(self) -> None:
        """Admit every call (outcomes are still counted) until :meth:`force_open` or :meth:`reset`."""
        self._state.machine.force_close(self.clock.now())

    def reset(self) -> None:
        """Back to ``closed`` with an empty window and the initial open duration."""
        self._state.machine.reset(self.clock.now())

    # -- classification -----------------------------------------------------------------

    def _failed_exception(self, exc: BaseException) -> bool | None:
        """Whether ``exc`` counts as a failure; None when it is not counted at all."""
        if not isinstance(exc, Exception):
            return None
        st = self._state
        if st.ignore and isinstance(exc, st.ignore):
            return None
        return st.selector.exception(exc)

    def _refuse(self, now: float) -> CircuitOpen:
        state, until = self._state.machine.refused
        if self.events:
            self.events.emit(CallRejected(now, self.name, "circuit_open"))
        return CircuitOpen(policy=self.name, until=until, state=state)

    def _settle_exception(self, permit: int, start: float, end: float, exc: BaseException) -> None:
        """Record a call that raised ``exc``. Should a ``failure_if`` predicate raise, the
        permit is released uncounted (a probe slot is never lost) and its error propagates."""
        machine = self._state.machine
        try:
            failed = self._failed_exception(exc)
        except BaseException:
            machine.record(permit, end, end - start, None)
            raise
        machine.record(permit, end, end - start, failed)

    def _settle_result(self, permit: int, start: float, end: float, result: object) -> None:
        """Record a call that returned ``result`` that may count as a failure."""
        machine = self._state.machine
        try:
            failed = self._failed_result(result)
        except BaseException:
            machine.record(permit, end, end - start, None)
            raise
        machine.record(permit, end, end - start, failed)

    def _failed_result(self, result: object) -> bool:
        st = self._state
        statuses = st.statuses
        # Instances of the plain builtin types carry no status: skip two attribute look-ups.
        failed = bool(statuses) and type(result) not in _PLAIN and status_of(result) in statuses
        if not failed and st.result_pred is not None:
            failed = bool(st.result_pred(result))
        return failed

    # -- sync ---------------------------------------------------------------------------

    def _guard(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run ``fn(*args, **kwargs)`` under the breaker (the one sync code path)."""
        st = self._state
        machine = st.machine
        now = self.clock.now
        start = now()
        # The closed fast path of machine.try_acquire, inlined: generation first, then state.
        permit = machine.generation
        state = machine.state
        if state is not CLOSED and state is not FORCED_CLOSED:
            acquired = machine.try_acquire(start)
            if acquired is None:
                raise self._refuse(start)
            permit = acquired
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._settle_exception(permit, start, now(), exc)
            raise
        end = now()
        if st.check_results and (type(result) not in _PLAIN or st.result_pred is not None):
            self._settle_result(permit, start, end, result)
        else:
            machine.record(permit, end, end - start, False)
        return result

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run the plain function ``fn(*args, **kwargs)`` under the breaker."""
        return self._guard(fn, args, kwargs)  # type: ignore[no-any-return]

    def _run(self, nxt: SyncNext, call: Call) -> Any:
        return self._guard(nxt, (call,), _NO_KWARGS)

    # -- async --------------------------------------------------------------------------

    async def _aguard(
        self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Await ``fn(*args, **kwargs)`` under the breaker (the one async code path)."""
        st = self._state
        machine = st.machine
        now = self.clock.now
        start = now()
        permit = machine.generation
        state = machine.state
        if state is not CLOSED and state is not FORCED_CLOSED:
            acquired = machine.try_acquire(start)
            if acquired is None:
                raise self._refuse(start)
            permit = acquired
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            # CancelledError is a BaseException: the permit (a half-open probe slot) is
            # released without counting the call.
            self._settle_exception(permit, start, now(), exc)
            raise
        end = now()
        if st.check_results and (type(result) not in _PLAIN or st.result_pred is not None):
            self._settle_result(permit, start, end, result)
        else:
            machine.record(permit, end, end - start, False)
        return result

    # acall and _arun hand back _aguard's coroutine instead of awaiting it in a coroutine
    # of their own: one coroutine frame less per call.

    def acall(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, T]:
        """Await ``fn(*args, **kwargs)`` under the breaker."""
        return self._aguard(fn, args, kwargs)

    def _arun(self, nxt: AsyncNext, call: Call) -> Coroutine[Any, Any, Any]:
        return self._aguard(nxt, (call,), _NO_KWARGS)

    # -- decorator ----------------------------------------------------------------------

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...

    @overload
    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Use the breaker as a decorator, on an ``async def`` or a plain function."""
        if not callable(fn):
            raise TypeError(f"a policy decorates a function, not {fn!r}")
        if inspect.iscoroutinefunction(fn):
            return self._wrap_async(fn)
        guard = self._guard

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            return guard(fn, args, kwargs)

        return wrapper

    def _wrap_async(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """The decorator for an ``async def``: the steps of :meth:`_aguard`, inlined in the
        wrapper so that a decorated call costs one coroutine frame, not two."""
        st = self._state
        machine = st.machine
        clock = self.clock
        refuse = self._refuse
        settle_exception = self._settle_exception
        settle_result = self._settle_result

        @functools.wraps(fn)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            now = clock.now
            start = now()
            permit = machine.generation
            state = machine.state
            if state is not CLOSED and state is not FORCED_CLOSED:
                acquired = machine.try_acquire(start)
                if acquired is None:
                    raise refuse(start)
                permit = acquired
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                settle_exception(permit, start, now(), exc)
                raise
            end = now()
            if st.check_results and (type(result) not in _PLAIN or st.result_pred is not None):
                settle_result(permit, start, end, result)
            else:
                machine.record(permit, end, end - start, False)
            return result

        return guarded

    # -- context manager ----------------------------------------------------------------

    def _enter(self) -> None:
        start = self.clock.now()
        permit = self._state.machine.try_acquire(start)
        if permit is None:
            raise self._refuse(start)
        _scope.push(self, (permit, start))

    def _exit(self, exc: BaseException | None) -> None:
        permit, start = cast("tuple[int, float]", _scope.pop(self))
        end = self.clock.now()
        if exc is None:
            self._state.machine.record(permit, end, end - start, False)
        else:
            self._settle_exception(permit, start, end, exc)

    def __enter__(self) -> CircuitBreaker:
        self._enter()
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self._exit(exc)

    async def __aenter__(self) -> CircuitBreaker:
        self._enter()
        return self

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self._exit(exc)


class _BreakerState:
    """What a CircuitBreaker holds besides its config: the machine and the derived classifiers."""

    __slots__ = ("check_results", "ignore", "machine", "result_pred", "selector", "statuses")

    def __init__(
        self,
        machine: BreakerMachine,
        selector: Selector,
        ignore: tuple[type[BaseException], ...],
    ) -> None:
        self.machine = machine
        self.selector = selector
        self.ignore = ignore
        self.statuses = selector.statuses
        self.result_pred = selector.result_pred
        self.check_results = selector.selects_results
