"""Adaptive concurrency limit: admit as many calls at once as the service can take, no more.

A fixed bulkhead needs someone to know the right number; it changes with every deploy, with
the request mix and with the health of every dependency. A concurrency limit learns it from
the latency of the calls it lets through, the way TCP congestion control learns a network's
window from round-trip times: when latency rises at the same load, work is queueing inside
the service, and the limit comes down (Netflix concurrency-limits; Envoy adaptive
concurrency; ``../shared/REFERENCES.md`` section 3).

Pieces, each sans-IO (plain code that takes ``now`` and never waits):

- a *limit algorithm* (:class:`FixedLimit`, :class:`AIMDLimit`, :class:`VegasLimit`,
  :class:`Gradient2Limit`): an immutable configuration whose ``new_estimator()`` makes the
  running state, updated with one sample per finished call ``(rtt_s, in_flight, dropped,
  now)``;
- *partitions by criticality*: with ``shares`` each criticality is guaranteed a fraction of
  the limit and may borrow idle capacity beyond it (Netflix's partitioned limiter);
- a bounded *wait queue* with controlled-delay timeouts and adaptive LIFO (Facebook, "Fail
  at Scale"), ordered by criticality, that evicts the least critical waiter for a more
  critical arrival and refuses at once a call whose deadline it cannot meet.

:class:`ConcurrencyLimit` puts them together as a guard policy; :class:`Permit` is one
admitted call, released when the call ends.

Vegas and Gradient2 do not react to single samples: they gather *windows* (Netflix's
WindowedLimit) that close once they hold ``window_samples`` samples (10) and span at least
their own average round trip, so each update answers about one round of feedback, as TCP
updates once per round trip. A window keeps the average round trip (samples under 100 us
left out: they say nothing about queueing), the peak in-flight count and whether anything
dropped. Reacting per sample, a delay-based limit overshoots: the samples that would show
the effect of its last change are still in flight.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, ParamSpec, TypeVar, cast

from .. import _validate as v
from .._clock import Clock, TimerHandle, monotonic_clock
from ..errors import ConcurrencyLimited, InvalidConfig, Overloaded
from ..events import CallRejected, Event, Events
from . import _scope
from ._criticality import Criticality, current_criticality
from ._criticality import _current as _current_criticality
from ._deadline import _current as _current_deadline
from ._outcome import status_of
from ._policy import AsyncNext, Call, Policy, SyncNext

__all__ = [
    "AIMDLimit",
    "ConcurrencyAdmitted",
    "ConcurrencyLimit",
    "ConcurrencyLimitChanged",
    "ConcurrencyShed",
    "FixedLimit",
    "Gradient2Limit",
    "LimitAlgorithm",
    "LimitEstimator",
    "Permit",
    "VegasLimit",
]

P = ParamSpec("P")
T = TypeVar("T")

ALGORITHMS = ("fixed", "aimd", "vegas", "gradient2")

# Round trips shorter than this say nothing about queueing (a cache hit, an immediate error):
# they still close windows but stay out of the RTT statistics (Netflix WindowedLimit).
MIN_RTT_S = 100e-6
# A rejection's retry hint is at least this: HTTP Retry-After counts whole seconds, and a
# retry sooner than one round of the in-flight work would meet the same overload.
MIN_RETRY_AFTER_S = 1.0
# Gradient2's long RTT averages its first windows plainly before its EMA takes over.
_WARMUP_WINDOWS = 10
# Slack when comparing a sample's start time (now - rtt) with a mark set at the same instant.
_EPS = 1e-9
_INF = float("inf")
# HTTP statuses of a result that mean "the work below was shed": a congestion signal.
_DROP_STATUSES = frozenset({429, 503})


# -- limit algorithms ------------------------------------------------------------------


class LimitEstimator:
    """The running state of a limit algorithm: sans-IO, fed one sample per finished call.

    ``limit`` is the concurrency the algorithm allows now (an ``int`` >= 1).
    :meth:`update` takes the call's round trip ``rtt_s`` (seconds from admission to
    release, queueing in the limiter excluded), ``in_flight`` (calls in flight when it was
    admitted, itself included), ``dropped`` (it failed from overload: a timeout, a 503, a
    shed below) and ``now`` (the clock time of the release). It never reads a clock.
    """

    __slots__ = ("limit",)

    limit: int

    def update(self, rtt_s: float, in_flight: int, dropped: bool, now: float) -> None:
        raise NotImplementedError


class LimitAlgorithm:
    """Base of the limit algorithm configurations (immutable; each makes fresh estimators)."""

    __slots__ = ()
    name: ClassVar[str] = "custom"

    def new_estimator(
        self, *, initial_limit: int, min_limit: int, max_limit: int, rng: random.Random
    ) -> LimitEstimator:
        """A fresh running state starting at ``initial_limit``, kept in
        ``[min_limit, max_limit]``; ``rng`` is the seeded source for any jitter."""
        raise NotImplementedError


class _Window:
    """Samples gathered between two limit updates (Netflix's WindowedLimit, sans-IO).

    Updating on every sample reacts to feedback that does not yet reflect the previous
    change: the calls that would show it have not finished. A window closes once it holds
    ``min_samples`` samples *and* spans at least its own average round trip, so one update
    follows roughly one round of feedback, as in TCP. It keeps the RTT average (samples
    under ``MIN_RTT_S`` left out), the highest in-flight count and whether anything dropped.
    """

    __slots__ = ("count", "dropped", "max_in_flight", "min_samples", "opened", "rtt_n", "rtt_sum")

    def __init__(self, min_samples: int) -> None:
        self.min_samples = min_samples
        self.reset(-_INF)

    def reset(self, now: float) -> None:
        self.opened = now
        self.count = 0
        self.rtt_n = 0
        self.rtt_sum = 0.0
        self.max_in_flight = 0
        self.dropped = False

    def add(self, rtt_s: float, in_flight: int, dropped: bool, now: float) -> bool:
        """Add a sample; True when the window is complete (read it, then ``reset``)."""
        self.count += 1
        if dropped:
            self.dropped = True
        if rtt_s >= MIN_RTT_S:
            self.rtt_sum += rtt_s
            self.rtt_n += 1
        self.max_in_flight = max(self.max_in_flight, in_flight)
        return self.count >= self.min_samples and (
            self.rtt_n == 0 or (now - self.opened) * self.rtt_n >= self.rtt_sum
        )

    @property
    def avg_rtt(self) -> float:
        return self.rtt_sum / self.rtt_n if self.rtt_n else 0.0


def _log10_root(limit: float) -> int:
    """Netflix's Log10RootFunction: ``max(1, floor(log10(limit)))``, the Vegas step size."""
    return max(1, int(math.log10(limit))) if limit >= 1 else 1


@dataclass(frozen=True, slots=True)
class FixedLimit(LimitAlgorithm):
    """A limit that never moves: ``initial_limit`` calls at once, a plain bulkhead."""

    name: ClassVar[str] = "fixed"

    def new_estimator(
        self, *, initial_limit: int, min_limit: int, max_limit: int, rng: random.Random
    ) -> LimitEstimator:
        return _FixedEstimator(initial_limit)


class _FixedEstimator(LimitEstimator):
    __slots__ = ()

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def update(self, rtt_s: float, in_flight: int, dropped: bool, now: float) -> None:
        return


@dataclass(frozen=True, slots=True, kw_only=True)
class AIMDLimit(LimitAlgorithm):
    """Additive increase, multiplicative decrease: loss-based, like TCP Reno.

    On a drop, or a round trip over ``timeout_s``: ``limit = max(min_limit, min(limit - 1,
    floor(limit * backoff_ratio)))`` (Netflix AIMDLimit; ratio 0.9, timeout 5 s). A drop
    from a call admitted before the last decrease is not counted again: that decrease
    already answered it (TCP reduces once per window of loss, RFC 5681).

    On a success while the limit is in use (``in_flight * 2 >= limit``): ``limit += 1 /
    limit``, so about one more slot per round trip at full use (TCP congestion avoidance).
    Netflix adds 1 per sample, which doubles the limit every round trip. While less than
    half the limit is in use the limit holds: an idle service learns nothing about its
    capacity. The result is the saw-tooth below the point where the service drops.
    """

    backoff_ratio: float = 0.9
    timeout_s: float = 5.0

    name: ClassVar[str] = "aimd"

    def __post_init__(self) -> None:
        ratio = self.backoff_ratio
        if not (
            isinstance(ratio, int | float) and not isinstance(ratio, bool) and 0.5 <= ratio < 1
        ):
            raise InvalidConfig("AIMDLimit", "backoff_ratio", ratio, "a number in [0.5, 1)")
        v.positive("AIMDLimit", "timeout_s", self.timeout_s)

    def new_estimator(
        self, *, initial_limit: int, min_limit: int, max_limit: int, rng: random.Random
    ) -> LimitEstimator:
        return _AIMDEstimator(self, initial_limit, min_limit, max_limit)


class _AIMDEstimator(LimitEstimator):
    __slots__ = (
        "backoff_ratio",
        "estimate",
        "last_decrease",
        "max_limit",
        "min_limit",
        "timeout_s",
    )

    def __init__(self, config: AIMDLimit, initial: int, min_limit: int, max_limit: int) -> None:
        self.backoff_ratio = config.backoff_ratio
        self.timeout_s = config.timeout_s
        self.min_limit = min_limit
        self.max_limit = max_limit
        self.limit = initial
        self.estimate = float(initial)
        self.last_decrease = -_INF

    def update(self, rtt_s: float, in_flight: int, dropped: bool, now: float) -> None:
        if dropped or rtt_s > self.timeout_s:
            if now - rtt_s < self.last_decrease - _EPS:
                return  # admitted before the last decrease, which already answered it
            current = self.limit
            new = max(self.min_limit, min(current - 1, int(current * self.backoff_ratio)))
            self.last_decrease = now
            self.estimate = float(new)
            self.limit = new
        elif in_flight * 2 >= self.limit and self.limit < self.max_limit:
            self.estimate = min(float(self.max_limit), self.estimate + 1.0 / self.limit)
            self.limit = int(self.estimate + _EPS)  # ten steps of 1/10 make 1


@dataclass(frozen=True, slots=True, kw_only=True)
class VegasLimit(LimitAlgorithm):
    """Delay-based, after TCP Vegas as Netflix's VegasLimit adapts it.

    Per window of samples (see the module doc): with ``rtt_noload`` the lowest window
    average seen since the last probe, the calls queueing inside the service are estimated
    as ``queue = ceil(limit * (1 - rtt_noload / rtt))``. With ``lg = max(1,
    floor(log10(limit)))``, ``alpha = 3 * lg``, ``beta = 6 * lg``: ``queue <= lg`` grows the
    limit by ``beta``; ``queue < alpha`` by ``lg``; ``queue > beta`` shrinks it by ``lg``;
    otherwise it holds. A drop shrinks it by ``lg``. It holds while less than half of it is
    in use, and the change is smoothed: ``limit += smoothing * (new - limit)`` (Netflix
    default 1: none). On a service with ``C`` slots it settles at ``C + alpha .. C + beta``.

    ``rtt_noload`` must be able to rise (a slower deploy), so it is re-measured every
    ``U(0.5, 1) * probe_multiplier * limit`` samples (Netflix: 30). Netflix takes the next
    sample as the new no-load RTT, but under sustained load that sample is loaded and the
    limit ratchets up by about ``beta`` per probe. Here the probe briefly pins the limit to
    half and averages the calls admitted meanwhile (see ``_Prober``; Netflix's older
    GradientLimit and Envoy's adaptive concurrency filter probe by pinning too), so the RTT
    it measures is unloaded.
    """

    probe_multiplier: int = 30
    smoothing: float = 1.0
    window_samples: int = 10

    name: ClassVar[str] = "vegas"

    def __post_init__(self) -> None:
        v.int_at_least("VegasLimit", "probe_multiplier", self.probe_multiplier, 1)
        _fraction("VegasLimit", "smoothing", self.smoothing)
        v.int_at_least("VegasLimit", "window_samples", self.window_samples, 1)

    def new_estimator(
        self, *, initial_limit: int, min_limit: int, max_limit: int, rng: random.Random
    ) -> LimitEstimator:
        return _VegasEstimator(self, initial_limit, min_limit, max_limit, rng)


class _Prober(LimitEstimator):
    """What Vegas and Gradient2 share: windows, limit bounds and the no-load probe.

    A probe re-measures the round trip of an unloaded service while traffic keeps it
    saturated. It pins ``limit`` to half the estimate for two units of time (a unit is the
    last window's average round trip): the calls in flight drain to half, and the calls
    admitted meanwhile form the *cohort*, each started with the service at most half busy.
    The limit is then restored, and the probe waits two more units for the cohort's slower
    calls, then returns the cohort's average round trip. Averaging the first calls to
    finish instead would favour the short ones (survivorship); waiting for the cohort keeps
    every call up to twice the unit. A cohort smaller than ``min(window_samples, pin)``
    says too little and is discarded. Under overload the probe costs about one round trip
    of half the throughput per probe interval (Envoy's adaptive concurrency pins its
    concurrency the same way, to 3, for a few dozen requests; BBR's ProbeRTT to 4 packets).
    """

    __slots__ = (
        "cohort_n",
        "cohort_sum",
        "estimate",
        "jitter",
        "max_limit",
        "min_limit",
        "probe_level",
        "probe_multiplier",
        "probe_t0",
        "probe_unit",
        "probing",
        "rng",
        "window",
    )

    def __init__(  # noqa: PLR0917 - internal
        self,
        initial: int,
        min_limit: int,
        max_limit: int,
        rng: random.Random,
        probe_multiplier: int,
        window_samples: int,
    ) -> None:
        self.limit = initial
        self.estimate = float(initial)
        self.min_limit = min_limit
        self.max_limit = max_limit
        self.rng = rng
        self.probe_multiplier = probe_multiplier
        self.jitter = rng.uniform(0.5, 1.0)
        self.probing = False
        self.probe_level = 0
        self.probe_t0 = 0.0
        self.probe_unit = 0.0
        self.cohort_sum = 0.0
        self.cohort_n = 0
        self.window = _Window(window_samples)

    def _due(self, samples: int) -> bool:
        return samples >= self.jitter * self.probe_multiplier * self.estimate

    def _start_probe(self, now: float, unit_s: float) -> None:
        self.jitter = self.rng.uniform(0.5, 1.0)
        self.probing = True
        self.probe_t0 = now
        self.probe_unit = unit_s
        self.cohort_sum = 0.0
        self.cohort_n = 0
        self.probe_level = self.limit = max(self.min_limit, math.ceil(self.estimate / 2))

    def _probe(self, rtt_s: float, in_flight: int, now: float) -> float | None:
        """Feed the running probe one sample. None while it runs; when it ends, the
        cohort's average round trip, or 0.0 when the cohort was too small."""
        t0 = self.probe_t0
        unit = self.probe_unit
        if (
            in_flight <= self.probe_level
            and rtt_s >= MIN_RTT_S
            and t0 - _EPS <= now - rtt_s <= t0 + 2 * unit
        ):
            self.cohort_sum += rtt_s
            self.cohort_n += 1
        if now < t0 + 2 * unit:
            return None
        self.limit = max(self.min_limit, int(self.estimate))  # the cohort is complete
        if now < t0 + 4 * unit:
            return None
        self.probing = False
        self.window.reset(now)
        if self.cohort_n < min(self.window.min_samples, self.probe_level):
            return 0.0
        return self.cohort_sum / self.cohort_n

    def _set(self, new: float, smoothing: float) -> None:
        smoothed = self.estimate + smoothing * (new - self.estimate)
        self.estimate = max(float(self.min_limit), min(float(self.max_limit), smoothed))
        self.limit = int(self.estimate + _EPS)


class _VegasEstimator(_Prober):
    __slots__ = ("rtt_noload", "samples", "smoothing")

    def __init__(
        self, config: VegasLimit, initial: int, min_limit: int, max_limit: int, rng: random.Random
    ) -> None:
        super().__init__(
            initial, min_limit, max_limit, rng, config.probe_multiplier, config.window_samples
        )
        self.smoothing = config.smoothing
        self.rtt_noload = 0.0
        self.samples = 0

    def update(self, rtt_s: float, in_flight: int, dropped: bool, now: float) -> None:
        if self.probing:
            measured = self._probe(rtt_s, in_flight, now)
            if measured:
                self.rtt_noload = measured
            return
        window = self.window
        if not window.add(rtt_s, in_flight, dropped, now):
            return
        rtt, peak, drop = window.avg_rtt, window.max_in_flight, window.dropped
        self.samples += window.count
        window.reset(now)
        if rtt > 0 and self._due(self.samples):
            self.samples = 0
            self._start_probe(now, rtt)
            return
        limit = self.estimate
        lg = _log10_root(limit)
        if rtt <= 0 or (not drop and (self.rtt_noload <= 0 or rtt < self.rtt_noload)):
            if rtt > 0:
                self.rtt_noload = rtt  # a new minimum: nothing queues at this load
            elif drop:
                self._set(limit - lg, self.smoothing)
            return
        if drop:
            new = limit - lg
        elif peak * 2 < limit:
            return  # app-limited: too little in use to learn anything
        else:
            queue = math.ceil(limit * (1 - self.rtt_noload / rtt))
            if queue <= lg:
                new = limit + 6 * lg
            elif queue < 3 * lg:
                new = limit + lg
            elif queue > 6 * lg:
                new = limit - lg
            else:
                return
        self._set(new, self.smoothing)


@dataclass(frozen=True, slots=True, kw_only=True)
class Gradient2Limit(LimitAlgorithm):
    """Delay-gradient, after Netflix's Gradient2Limit (as its code runs, not its javadoc).

    Per window of samples (see the module doc): ``short`` is the window's average round
    trip and ``long`` a long-term average (an EMA with factor ``2 / (long_window + 1)``
    after a plain average of the first 10 windows)::

        gradient = max(0.5, min(1, tolerance * long / short))
        new      = limit * gradient + (queue_size if gradient == 1 else 0)
        limit    = limit * (1 - smoothing) + new * smoothing

    with ``tolerance`` 1.5, ``smoothing`` 0.2, ``long_window`` 600 and ``queue_size``
    ``sqrt(limit)`` by default. The limit holds while less than half of it is in use; when
    ``long > 2 * short`` (latency fell back after an overload), ``long *= 0.95`` to recover
    sooner (the drift reset). With a service of ``C`` slots the limit settles where the
    round trip is ``tolerance`` times the baseline: ``tolerance * C``, a standing queue of
    ``(tolerance - 1) * C`` inside the service, which the tolerance buys as headroom
    against noisy latency.

    Three departures from Netflix, each for a flaw its users reported:

    - Netflix feeds ``long`` every sample, so under sustained overload it learns the
      queueing it should detect: ``long`` catches up with ``short``, the gradient returns
      to 1 and the ``queue_size`` term grows the limit without bound (concurrency-limits
      issue #137; a steady latency reads as no congestion). Here ``long`` learns only from
      windows in which the limit held nothing back (peak in-flight below the limit); while
      the limit is saturated it keeps the baseline, and every ``U(0.5, 1) *
      probe_multiplier * limit`` saturated samples a probe (the limit briefly pinned to
      half, see ``_Prober``) re-measures it, so a service that really got slower is
      followed.
    - The ``queue_size`` allowance is added only while the gradient is 1: added always, a
      gradient a little under 1 under modest overload still lets the limit creep up
      (concurrency-limits pull request #134).
    - A window with a drop counts as a gradient of 0.5 (Netflix ignores drops): with the
      smoothing, a 10 % cut, as AIMD's.
    """

    tolerance: float = 1.5
    smoothing: float = 0.2
    long_window: int = 600
    queue_size: int | None = None
    probe_multiplier: int = 30
    window_samples: int = 10

    name: ClassVar[str] = "gradient2"

    def __post_init__(self) -> None:
        v.at_least("Gradient2Limit", "tolerance", self.tolerance, 1)
        _fraction("Gradient2Limit", "smoothing", self.smoothing)
        v.int_at_least("Gradient2Limit", "long_window", self.long_window, 1)
        if self.queue_size is not None:
            v.int_at_least("Gradient2Limit", "queue_size", self.queue_size, 0)
        v.int_at_least("Gradient2Limit", "probe_multiplier", self.probe_multiplier, 1)
        v.int_at_least("Gradient2Limit", "window_samples", self.window_samples, 1)

    def new_estimator(
        self, *, initial_limit: int, min_limit: int, max_limit: int, rng: random.Random
    ) -> LimitEstimator:
        return _Gradient2Estimator(self, initial_limit, min_limit, max_limit, rng)


class _Gradient2Estimator(_Prober):
    __slots__ = ("factor", "long_rtt", "queue_size", "smoothing", "stale", "tolerance", "warm")

    def __init__(
        self,
        config: Gradient2Limit,
        initial: int,
        min_limit: int,
        max_limit: int,
        rng: random.Random,
    ) -> None:
        super().__init__(
            initial, min_limit, max_limit, rng, config.probe_multiplier, config.window_samples
        )
        self.tolerance = config.tolerance
        self.smoothing = config.smoothing
        self.factor = 2.0 / (config.long_window + 1)
        self.queue_size = config.queue_size
        self.long_rtt = 0.0
        self.warm = 0
        self.stale = 0  # samples since the baseline last learned from unconstrained traffic

    def update(self, rtt_s: float, in_flight: int, dropped: bool, now: float) -> None:
        if self.probing:
            measured = self._probe(rtt_s, in_flight, now)
            if measured:
                self.long_rtt = measured
                self.warm = max(self.warm, _WARMUP_WINDOWS)
            return
        window = self.window
        if not window.add(rtt_s, in_flight, dropped, now):
            return
        short, peak, drop = window.avg_rtt, window.max_in_flight, window.dropped
        count = window.count
        window.reset(now)
        limit = self.estimate
        if short > 0:
            saturated = peak >= self.limit
            if self.warm < _WARMUP_WINDOWS:
                self.warm += 1
                self.long_rtt += (short - self.long_rtt) / self.warm
            elif not saturated:
                self.long_rtt += (short - self.long_rtt) * self.factor
            if not saturated:
                self.stale = 0
            else:
                self.stale += count
                if self._due(self.stale):
                    self.stale = 0
                    self._start_probe(now, short)
                    return
            if self.long_rtt > 2 * short:
                self.long_rtt *= 0.95
        elif not drop:
            return
        if drop:
            gradient = 0.5
        elif peak < limit / 2:
            return  # app-limited: too little in use to learn anything
        else:
            gradient = max(0.5, min(1.0, self.tolerance * self.long_rtt / short))
        new = limit * gradient
        if gradient >= 1.0:
            new += math.sqrt(limit) if self.queue_size is None else self.queue_size
        self._set(new, self.smoothing)


def _fraction(owner: str, name: str, value: object) -> None:
    if not (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and 0 < value <= 1  # NaN fails both comparisons
    ):
        raise InvalidConfig(owner, name, value, "a number in (0, 1]")


_BY_NAME: Mapping[str, LimitAlgorithm] = MappingProxyType(
    {
        "fixed": FixedLimit(),
        "aimd": AIMDLimit(),
        "vegas": VegasLimit(),
        "gradient2": Gradient2Limit(),
    }
)


# -- events ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConcurrencyAdmitted(Event):
    """A call got a slot after waiting ``waited_s`` (0 when it did not wait)."""

    criticality: Criticality
    waited_s: float
    in_flight: int
    limit: int


@dataclass(frozen=True, slots=True)
class ConcurrencyShed(CallRejected):
    """A concurrency limit refused a call; ``reason`` as in ``ConcurrencyLimited``."""

    criticality: Criticality
    waited_s: float
    in_flight: int
    limit: int
    queued: int


@dataclass(frozen=True, slots=True)
class ConcurrencyLimitChanged(Event):
    """The limit moved from ``old`` to ``new``; ``rtt_s`` is the smoothed round trip."""

    old: int
    new: int
    rtt_s: float


# -- the sans-IO core ------------------------------------------------------------------

WAITING, GRANTED, REJECTED = 0, 1, 2
_LIMIT, _QUEUE_FULL, _QUEUE_TIMEOUT, _DEADLINE = ConcurrencyLimited.REASONS
_CRITICALITIES = tuple(Criticality)
_HIGH_TO_LOW = tuple(sorted((int(c) for c in Criticality), reverse=True))


class _Waiter:
    """One call waiting in the queue, on an asyncio event loop.

    ``expiry`` is fixed when it joins (see ``_Core.enqueue``). ``state`` changes only under
    the core's lock: WAITING, then GRANTED (it holds a slot from ``started``) or REJECTED
    (with ``reason``, decided at ``started``).
    """

    __slots__ = (
        "by_deadline",
        "criticality",
        "deadline",
        "enqueued",
        "expiry",
        "fut",
        "in_flight",
        "loop",
        "reason",
        "started",
        "state",
        "thread",
    )

    def __init__(
        self,
        criticality: Criticality,
        enqueued: float,
        deadline: float | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.criticality = criticality
        self.enqueued = enqueued
        self.deadline = deadline
        self.expiry = _INF
        self.by_deadline = False
        self.state = WAITING
        self.reason = ""
        self.started = 0.0
        self.in_flight = 0
        self.loop = loop
        self.fut: asyncio.Future[None] = loop.create_future()
        self.thread = threading.get_ident()

    def wake(self) -> bool:
        """Resolve the future. False: its loop is closed, so it will never run."""
        try:
            if threading.get_ident() == self.thread:
                _resolve(self.fut)
            else:
                self.loop.call_soon_threadsafe(_resolve, self.fut)
        except RuntimeError:
            return False
        return True


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Core:
    """Slots, partitions and the wait queue: the decisions, no waiting, no clock.

    Every method is called with ``lock`` held. Invariants (after each public operation):

    - ``in_flight == sum(by_class)``; ``queued == sum(waiting) <= max_queue``;
    - no waiting call is admissible: a slot that frees goes to the waiters first
      (``grant``), so arrivals never overtake an admissible waiter;
    - ``queues[c]`` holds the class-``c`` waiters in arrival order (plus withdrawn entries
      not yet dropped, counted in ``dead``).

    Admission (Netflix's partitioned limiter): a call is admissible when fewer than
    ``limit`` calls are in flight (idle capacity is borrowed by anyone), or when its class
    holds fewer than its guaranteed part ``max(1, ceil(share * limit))`` (0 without a
    share). So a flood of one class cannot take another's share, and the limit may be
    exceeded by at most the unused guaranteed parts while borrowers drain.
    """

    __slots__ = (
        "by_class",
        "dead",
        "estimator",
        "in_flight",
        "interval_s",
        "lifo",
        "limit",
        "lock",
        "nonempty_since",
        "parts",
        "queued",
        "queues",
        "rtt_ema",
        "shares",
        "target_s",
        "timer",
        "waiting",
    )

    def __init__(
        self,
        estimator: LimitEstimator,
        shares: tuple[float, ...] | None,
        target_s: float,
        interval_s: float,
        lifo: bool,
    ) -> None:
        self.lock = threading.Lock()
        self.estimator = estimator
        self.shares = shares
        self.target_s = target_s
        self.interval_s = interval_s
        self.lifo = lifo
        self.in_flight = 0
        self.by_class = [0] * len(_CRITICALITIES)
        self.queues: tuple[deque[_Waiter], ...] = tuple(deque() for _ in _CRITICALITIES)
        self.waiting = [0] * len(_CRITICALITIES)
        self.queued = 0
        self.dead = 0
        self.nonempty_since = 0.0
        self.rtt_ema = 0.0
        self.timer: _QueueTimer | None = None
        self.limit = 0
        self.parts: tuple[int, ...] | None = None
        self.set_limit(estimator.limit)

    def set_limit(self, limit: int) -> None:
        self.limit = limit = max(1, limit)
        if self.shares is not None:
            self.parts = tuple(max(1, math.ceil(s * limit)) if s > 0 else 0 for s in self.shares)

    # -- admission ---------------------------------------------------------------------

    def admissible(self, c: int) -> bool:
        if self.in_flight < self.limit:
            return True
        parts = self.parts
        return parts is not None and self.by_class[c] < parts[c]

    def take(self, c: int) -> int:
        """Count a call of class ``c`` in; returns the in-flight count including it."""
        self.in_flight += 1
        self.by_class[c] += 1
        return self.in_flight

    def finish(  # noqa: PLR0917 - internal, on the hot path
        self, c: int, started: float, in_flight: int, dropped: bool, ignore: bool, now: float
    ) -> tuple[int, int] | None:
        """Count a call out and feed its sample to the algorithm (unless ``ignore``).
        Returns ``(old, new)`` when the limit changed."""
        self.in_flight -= 1
        self.by_class[c] -= 1
        if ignore:
            return None
        rtt = now - started
        ema = self.rtt_ema
        self.rtt_ema = rtt if ema == 0.0 else ema + 0.1 * (rtt - ema)
        estimator = self.estimator
        estimator.update(rtt, in_flight, dropped, now)
        new = estimator.limit
        old = self.limit
        if new != old:
            self.set_limit(new)
            return old, self.limit
        return None

    def retry_after(self) -> float:
        return max(MIN_RETRY_AFTER_S, self.rtt_ema)

    # -- the queue ---------------------------------------------------------------------

    def standing(self, now: float) -> bool:
        """A standing queue: not empty at any moment of the last ``interval_s``."""
        return self.queued > 0 and now - self.nonempty_since >= self.interval_s

    def expected_wait(self, c: int) -> float:
        """Seconds a class-``c`` arrival would wait: the waiters served before it and
        itself, each needing one slot to turn over (a slot frees every ``rtt / limit``)."""
        ahead = sum(self.waiting[c:])
        return (ahead + 1) * self.rtt_ema / self.limit

    def enqueue(self, w: _Waiter) -> None:
        """Put ``w`` in line and fix its expiry (controlled delay, Facebook "Fail at
        Scale"): a waiter may stay ``interval_s`` while the queue has been empty within the
        last ``interval_s``, but only ``target_s`` once it has not. With ``E`` the time the
        queue last became non-empty (fixed while ``w`` waits, since ``w`` keeps it
        non-empty) that is ``max(E + interval_s, enqueued + target_s)``, capped by the
        waiter's deadline."""
        if self.queued == 0:
            self.nonempty_since = w.enqueued
        expiry = max(self.nonempty_since + self.interval_s, w.enqueued + self.target_s)
        if w.deadline is not None and w.deadline < expiry:
            expiry = w.deadline
            w.by_deadline = True
        w.expiry = expiry
        c = w.criticality
        self.queues[c].append(w)
        self.waiting[c] += 1
        self.queued += 1

    def _pop(self, c: int, newest: bool) -> _Waiter:
        """The live class-``c`` waiter at one end of its line (the caller checked
        ``waiting[c] > 0``), dropping withdrawn entries on the way."""
        q = self.queues[c]
        while True:
            w = q.pop() if newest else q.popleft()
            if w.state == WAITING:
                self.waiting[c] -= 1
                self.queued -= 1
                return w
            self.dead -= 1

    def _emptied(self) -> None:
        if self.queued == 0 and self.dead:
            for q in self.queues:
                q.clear()
            self.dead = 0

    def withdraw(self, w: _Waiter, reason: str, now: float) -> None:
        """Take a WAITING ``w`` out of line (expired, cancelled): it becomes REJECTED."""
        w.state = REJECTED
        w.reason = reason
        w.started = now
        c = w.criticality
        self.waiting[c] -= 1
        self.queued -= 1
        q = self.queues[c]
        if q[0] is w:
            q.popleft()
        elif q[-1] is w:
            q.pop()
        else:
            self.dead += 1
            if self.dead > 32 and self.dead > self.queued:
                for line in self.queues:  # too many withdrawn entries: keep the live ones
                    live = [x for x in line if x.state == WAITING]
                    line.clear()
                    line.extend(live)
                self.dead = 0
        self._emptied()

    def evict_below(self, c: int, now: float) -> _Waiter | None:
        """Make room for a class-``c`` arrival in a full queue: the oldest waiter of the
        lowest class below ``c`` loses its place (it is the likeliest to miss its caller
        anyway). None when every waiter is at least as critical."""
        for low in range(c):
            if self.waiting[low]:
                w = self._pop(low, newest=False)
                w.state = REJECTED
                w.reason = _QUEUE_FULL
                w.started = now
                self._emptied()
                return w
        return None

    def grant(self, now: float) -> tuple[list[_Waiter], list[_Waiter]]:
        """Hand free slots to waiters, most critical class first; within a class the
        oldest first, or the newest while a standing queue exists and ``lifo`` is on
        (adaptive LIFO: under a standing queue the newest waiter is the one whose caller
        is still there). Waiters found past their expiry are rejected instead.
        Returns ``(granted, rejected)``."""
        granted: list[_Waiter] = []
        rejected: list[_Waiter] = []
        if not self.queued:
            return granted, rejected
        newest = self.lifo and self.standing(now)
        waiting = self.waiting
        for c in _HIGH_TO_LOW:
            while waiting[c] and self.admissible(c):
                w = self._pop(c, newest)
                if w.expiry <= now:
                    w.state = REJECTED
                    w.reason = _DEADLINE if w.by_deadline else _QUEUE_TIMEOUT
                    w.started = now
                    rejected.append(w)
                    continue
                w.state = GRANTED
                w.started = now
                w.in_flight = self.take(c)
                granted.append(w)
        self._emptied()
        return granted, rejected


class _QueueTimer:
    """The expiries of the waiters of one event loop, served by a single clock timer.

    Waiters push ``(expiry, seq, waiter)`` on a heap; one timer is armed for the earliest.
    Waiters served before their expiry stay on the heap and are dropped when they reach
    the top, so a busy queue re-arms the timer about once per expiry period, not twice per
    waiter. All of it runs under the core's lock, on its own loop's thread.
    """

    __slots__ = ("armed_at", "clock", "fire", "handle", "heap", "loop", "seq")

    def __init__(
        self,
        clock: Clock,
        loop: asyncio.AbstractEventLoop,
        fire: Callable[[_QueueTimer], None],
    ) -> None:
        self.clock = clock
        self.loop = loop
        self.fire = fire
        self.heap: list[tuple[float, int, _Waiter]] = []
        self.seq = itertools.count()
        self.handle: TimerHandle | None = None
        self.armed_at = _INF

    def add(self, w: _Waiter) -> None:
        heap = self.heap
        while heap and heap[0][2].state != WAITING:
            heapq.heappop(heap)
        heapq.heappush(heap, (w.expiry, next(self.seq), w))
        if w.expiry < self.armed_at:
            self.arm(w.expiry)

    def arm(self, when: float) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.armed_at = when
        self.handle = self.clock.call_later(when - self.clock.now(), self._fired)

    def _fired(self) -> None:
        self.handle = None
        self.armed_at = _INF
        self.fire(self)


# -- the policy ------------------------------------------------------------------------


def _is_drop(exc: BaseException) -> bool:
    """Whether a call's exception says the work was lost to overload (a congestion
    signal): a timeout (``DeadlineExceeded`` is a ``TimeoutError``) or a shed below."""
    return isinstance(exc, TimeoutError | Overloaded)


def _is_ignored(exc: BaseException) -> bool:
    """Whether an exception says nothing about the service's latency: a cancellation (the
    caller went away) or the interpreter stopping."""
    return not isinstance(exc, Exception)


class Permit:
    """One admitted call's slot. Release it exactly once when the call ends.

    ``release(dropped=True)`` when the work failed from overload (a timeout, a 503 from
    below): the algorithm backs off. ``release(ignore=True)`` keeps the call out of the
    algorithm's samples (it was cancelled, or its latency means nothing: a 4xx). Releasing
    again is a no-op. As a context manager (``with`` or ``async with``) it releases on
    exit, as dropped when a ``TimeoutError`` or ``Overloaded`` escapes and ignored on a
    cancellation. ``criticality`` is the call's, ``started`` the clock time it was admitted
    and ``in_flight`` the count it was admitted at, itself included.
    """

    __slots__ = ("_policy", "_released", "criticality", "in_flight", "started")

    def __init__(
        self, policy: ConcurrencyLimit, criticality: Criticality, started: float, in_flight: int
    ) -> None:
        self._policy = policy
        self.criticality = criticality
        self.started = started
        self.in_flight = in_flight
        self._released = False

    @property
    def released(self) -> bool:
        return self._released

    def release(self, *, dropped: bool = False, ignore: bool = False) -> None:
        """Give the slot back and teach the algorithm the call's round trip."""
        self._policy._release(self, dropped, ignore)

    def _close(self, exc: BaseException | None) -> None:
        if exc is None:
            self._policy._release(self, False, False)
        else:
            self._policy._release(self, _is_drop(exc), _is_ignored(exc))

    def __enter__(self) -> Permit:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self._close(exc)

    async def __aenter__(self) -> Permit:
        return self

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self._close(exc)

    def __repr__(self) -> str:
        state = "released" if self._released else "held"
        return (
            f"Permit({self._policy.name!r}, {self.criticality.name}, "
            f"in_flight={self.in_flight}, {state})"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ConcurrencyLimit(Policy):
    """Admit at most ``limit`` calls at once, a limit the ``algorithm`` learns from their
    round trips; queue a few more briefly, most critical first; shed the rest early.

    - ``algorithm``: ``"gradient2"`` (default), ``"vegas"``, ``"aimd"``, ``"fixed"`` or a
      :class:`LimitAlgorithm` configuration such as ``Gradient2Limit(tolerance=1.2)``. The
      limit starts at ``initial_limit`` and stays in ``[min_limit, max_limit]``.
    - ``shares``: guaranteed fractions of the limit per :class:`Criticality` (summing to at
      most 1). A class is always admitted below its part ``max(1, ceil(share * limit))``,
      and any class may borrow capacity nobody uses; a class without a share only borrows.
      Without ``shares`` all calls share one pool.
    - The queue: a call that finds no slot waits, if fewer than ``max_queue`` wait, in line
      by criticality (a full queue makes room for a more critical arrival by evicting the
      oldest of the least critical waiters). Controlled delay: a waiter may stay
      ``queue_interval_s`` (100 ms) while the queue has been empty within the last
      ``queue_interval_s``, and only ``queue_target_s`` (5 ms) once it has not (a standing
      queue). Under a standing queue the newest waiter is served first (adaptive LIFO,
      ``lifo=True``); otherwise the oldest.
    - Deadlines: a call whose deadline (the ``deadline`` argument, else the current
      :func:`brownout.deadline`) has passed, or would pass before the expected wait in line
      is over, is refused at once, before any work; a waiter leaves the line at its
      deadline.

    Refusals raise :class:`~brownout.errors.ConcurrencyLimited` (an ``Overloaded``) with
    ``reason`` ``"limit"``, ``"queue_full"``, ``"queue_timeout"`` or ``"deadline"`` and a
    ``retry_after_s`` hint (the smoothed round trip, at least 1 s).

    As a policy (``acall``, ``call``, ``@limit``, ``async with limit:``, a ``Pipeline``) a
    call is admitted at the current :func:`brownout.current_criticality` and deadline and
    released when it ends: as *dropped* (the algorithm backs off) when it raised a
    ``TimeoutError`` (``DeadlineExceeded`` included) or an ``Overloaded`` error, or returned
    a result with HTTP status 429 or 503; ignored when it was cancelled. Sync calls never
    wait: a thread blocked in line would hold the very resource the limit protects; they
    get a slot at once or ``reason="limit"``. Directly: ``try_acquire()`` (never waits) and
    ``await acquire()`` return a :class:`Permit` to release.

    The algorithm and the queue are sans-IO; async waiting uses one clock timer per event
    loop for all its waiters. ``seed`` seeds the probes' jitter. Events:
    :class:`ConcurrencyAdmitted`, :class:`ConcurrencyShed` (a ``CallRejected``),
    :class:`ConcurrencyLimitChanged`.
    """

    algorithm: str | LimitAlgorithm = "gradient2"
    initial_limit: int = 20
    min_limit: int = 1
    max_limit: int = 1000
    max_queue: int = 100
    queue_target_s: float = 0.005
    queue_interval_s: float = 0.100
    lifo: bool = True
    shares: Mapping[Criticality, float] | None = field(default=None, hash=False)
    seed: int | None = None
    name: str = "concurrency"
    clock: Clock = field(default=monotonic_clock, repr=False, compare=False)
    events: Events = field(default_factory=Events, repr=False, compare=False)
    _state: _Core = field(init=False, repr=False, compare=False)

    kind = "concurrency_limit"

    def __post_init__(self) -> None:
        owner = "ConcurrencyLimit"
        algorithm = self.algorithm
        config: LimitAlgorithm
        if isinstance(algorithm, str):
            v.one_of(owner, "algorithm", algorithm, ALGORITHMS)
            config = _BY_NAME[algorithm]
        elif isinstance(algorithm, LimitAlgorithm):
            config = algorithm
        else:
            raise InvalidConfig(
                owner,
                "algorithm",
                algorithm,
                "one of " + ", ".join(repr(a) for a in ALGORITHMS) + " or a LimitAlgorithm",
            )
        v.int_at_least(owner, "min_limit", self.min_limit, 1)
        v.int_at_least(owner, "max_limit", self.max_limit, self.min_limit)
        initial = self.initial_limit
        if (
            not isinstance(initial, int)
            or isinstance(initial, bool)
            or not self.min_limit <= initial <= self.max_limit
        ):
            raise InvalidConfig(
                owner,
                "initial_limit",
                initial,
                f"an integer in [min_limit, max_limit] = [{self.min_limit}, {self.max_limit}]",
            )
        v.int_at_least(owner, "max_queue", self.max_queue, 0)
        v.positive(owner, "queue_interval_s", self.queue_interval_s)
        v.positive(owner, "queue_target_s", self.queue_target_s)
        if self.queue_target_s > self.queue_interval_s:
            raise InvalidConfig(
                owner,
                "queue_target_s",
                self.queue_target_s,
                f"<= queue_interval_s ({self.queue_interval_s:g})",
            )
        if not isinstance(self.lifo, bool):
            raise InvalidConfig(owner, "lifo", self.lifo, "True or False")
        if self.seed is not None and (
            not isinstance(self.seed, int) or isinstance(self.seed, bool)
        ):
            raise InvalidConfig(owner, "seed", self.seed, "an integer or None")
        shares = self._check_shares()
        rng = random.Random(self.seed)
        estimator = config.new_estimator(
            initial_limit=initial, min_limit=self.min_limit, max_limit=self.max_limit, rng=rng
        )
        core = _Core(estimator, shares, self.queue_target_s, self.queue_interval_s, self.lifo)
        object.__setattr__(self, "_state", core)

    def _check_shares(self) -> tuple[float, ...] | None:
        shares = self.shares
        if shares is None:
            return None
        allowed = "a mapping of Criticality to fractions in [0, 1] that sum to at most 1"
        if not isinstance(shares, Mapping):
            raise InvalidConfig("ConcurrencyLimit", "shares", shares, allowed)
        parts = [0.0] * len(_CRITICALITIES)
        for key, value in shares.items():
            if not isinstance(key, Criticality):
                raise InvalidConfig("ConcurrencyLimit", "shares", shares, allowed)
            parts[key] = v.ratio("ConcurrencyLimit", f"shares[{key.name}]", value)
        if sum(parts) > 1 + 1e-9:
            raise InvalidConfig("ConcurrencyLimit", "shares", shares, allowed)
        copy = {key: float(value) for key, value in shares.items()}
        object.__setattr__(self, "shares", copy)  # a private copy: later edits change nothing
        return tuple(parts)

    # -- what it reads -----------------------------------------------------------------

    @property
    def limit(self) -> int:
        """The concurrency allowed now."""
        return self._state.limit

    @property
    def in_flight(self) -> int:
        """Calls holding a slot now."""
        return self._state.in_flight

    @property
    def queued(self) -> int:
        """Calls waiting in line now."""
        return self._state.queued

    @property
    def rtt_s(self) -> float:
        """The smoothed round trip of recent calls (seconds; 0 before the first)."""
        return self._state.rtt_ema

    # -- shared pieces -----------------------------------------------------------------

    def _criticality(self, value: Criticality | None) -> Criticality:
        if value is None:
            return current_criticality()
        if not isinstance(value, Criticality):
            raise InvalidConfig(
                "ConcurrencyLimit", "criticality", value, "a Criticality or None (the current)"
            )
        return value

    def _deadline_at(self, deadline: float | None, now: float) -> float | None:
        if deadline is not None:
            return deadline
        dl = _current_deadline.get()
        if dl is None:
            return None
        return dl.at if dl.clock is self.clock else now + dl.remaining()

    def _shed(self, c: Criticality, reason: str, waited_s: float) -> ConcurrencyLimited:
        core = self._state
        if self.events:
            self.events.emit(
                ConcurrencyShed(
                    self.clock.now(),
                    self.name,
                    reason,
                    c,
                    waited_s,
                    core.in_flight,
                    core.limit,
                    core.queued,
                )
            )
        return ConcurrencyLimited(
            policy=self.name,
            reason=reason,
            retry_after_s=core.retry_after(),
            criticality=c,
            limit=core.limit,
            in_flight=core.in_flight,
            queued=core.queued,
            waited_s=waited_s,
        )

    def _admit_now(self, c: Criticality, now: float, at: float | None) -> Permit | str:
        """The fast path: a Permit, or why there is none yet (``_DEADLINE``: refuse;
        ``_LIMIT``: no slot free now)."""
        if at is not None and at <= now:
            return _DEADLINE
        core = self._state
        with core.lock:
            if not core.admissible(c):
                return _LIMIT
            in_flight = core.take(c)
        if self.events:
            self.events.emit(ConcurrencyAdmitted(now, self.name, c, 0.0, in_flight, core.limit))
        return Permit(self, c, now, in_flight)

    def _fast(self) -> Permit | None:
        """The policy's hot path, written out: a Permit at the current criticality when a
        slot is free and the current deadline has not passed, else None (the caller then
        takes the full path, which decides what to do)."""
        clock = self.clock
        now = clock.now()
        dl = _current_deadline.get()
        if dl is not None and (dl.at <= now if dl.clock is clock else dl.remaining() <= 0):
            return None
        c = _current_criticality.get()
        core = self._state
        with core.lock:
            in_flight = core.in_flight
            if in_flight >= core.limit:
                parts = core.parts
                if parts is None or core.by_class[c] >= parts[c]:
                    return None
            core.in_flight = in_flight = in_flight + 1
            core.by_class[c] += 1
        if self.events:
            self.events.emit(ConcurrencyAdmitted(now, self.name, c, 0.0, in_flight, core.limit))
        return Permit(self, c, now, in_flight)

    def _release(self, permit: Permit, dropped: bool, ignore: bool) -> None:
        core = self._state
        now = self.clock.now()
        with core.lock:
            if permit._released:
                return
            permit._released = True
            changed = core.finish(
                permit.criticality, permit.started, permit.in_flight, dropped, ignore, now
            )
            if not core.queued:
                if changed is None:
                    return
                granted: Sequence[_Waiter] = ()
                rejected: Sequence[_Waiter] = ()
            else:
                granted, rejected = core.grant(now)
        if changed is not None and self.events:
            self.events.emit(ConcurrencyLimitChanged(now, self.name, *changed, core.rtt_ema))
        self._dispatch(granted, rejected)

    def _dispatch(self, granted: Sequence[_Waiter], rejected: Sequence[_Waiter]) -> None:
        """Wake the waiters the core decided about (outside the lock)."""
        for w in rejected:
            w.wake()
        for w in granted:
            if not w.wake():
                # Its loop is closed: it will never run, so its slot moves on.
                self._release(Permit(self, w.criticality, w.started, w.in_flight), False, True)

    # -- async -------------------------------------------------------------------------

    async def acquire(
        self, *, criticality: Criticality | None = None, deadline: float | None = None
    ) -> Permit:
        """A slot for one call, waiting in line if need be (see the class doc).

        ``criticality`` defaults to the current one, ``deadline`` (absolute, on this
        policy's clock) to the current deadline. Raises ``ConcurrencyLimited``.
        """
        c = self._criticality(criticality)
        now = self.clock.now()
        at = self._deadline_at(deadline, now)
        got = self._admit_now(c, now, at)
        if isinstance(got, Permit):
            return got
        if got == _DEADLINE or self.max_queue == 0:
            raise self._shed(c, got, 0.0)
        return await self._wait(c, now, at)

    async def _wait(self, c: Criticality, now: float, at: float | None) -> Permit:
        """The slow path: join the line (or be refused), then wait for a slot."""
        core = self._state
        loop = asyncio.get_running_loop()
        evicted: _Waiter | None = None
        waiter: _Waiter | None = None
        in_flight = 0
        with core.lock:
            if core.admissible(c):  # a slot came free since the fast path looked
                in_flight = core.take(c)
                reason = ""
            elif at is not None and at < now + core.expected_wait(c):
                reason = _DEADLINE
            elif core.queued >= self.max_queue and (evicted := core.evict_below(c, now)) is None:
                reason = _QUEUE_FULL
            else:
                reason = ""
                waiter = _Waiter(c, now, at, loop)
                core.enqueue(waiter)
                timer = core.timer
                if timer is None or timer.loop is not loop:
                    timer = core.timer = _QueueTimer(self.clock, loop, self._expire)
                timer.add(waiter)
        if evicted is not None:
            evicted.wake()
        if reason:
            raise self._shed(c, reason, 0.0)
        if waiter is None:
            if self.events:
                self.events.emit(ConcurrencyAdmitted(now, self.name, c, 0.0, in_flight, core.limit))
            return Permit(self, c, now, in_flight)
        try:
            await waiter.fut
        except BaseException:
            with core.lock:
                state = waiter.state
                if state == WAITING:
                    core.withdraw(waiter, "cancelled", self.clock.now())
            if state == GRANTED:  # handed a slot as it was cancelled: pass it on
                self._release(Permit(self, c, waiter.started, waiter.in_flight), False, True)
            raise
        waited = waiter.started - now
        if waiter.state == GRANTED:
            if self.events:
                self.events.emit(
                    ConcurrencyAdmitted(
                        waiter.started, self.name, c, waited, waiter.in_flight, core.limit
                    )
                )
            return Permit(self, c, waiter.started, waiter.in_flight)
        raise self._shed(c, waiter.reason, waited)

    def _expire(self, timer: _QueueTimer) -> None:
        """The queue timer fired: refuse every waiter of its loop whose time is up."""
        core = self._state
        now = self.clock.now()
        expired: list[_Waiter] = []
        with core.lock:
            heap = timer.heap
            while heap and (heap[0][0] <= now or heap[0][2].state != WAITING):
                w = heapq.heappop(heap)[2]
                if w.state == WAITING:
                    core.withdraw(w, _DEADLINE if w.by_deadline else _QUEUE_TIMEOUT, now)
                    expired.append(w)
            if heap:
                timer.arm(heap[0][0])
            elif core.timer is timer:
                core.timer = None
        for w in expired:
            w.wake()

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` holding a slot."""
        permit = self._fast() or await self.acquire()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            permit._close(exc)
            raise
        self._release(permit, status_of(result) in _DROP_STATUSES, False)
        return result

    async def _arun(self, nxt: AsyncNext, call: Call) -> Any:
        permit = self._fast() or await self.acquire()
        try:
            result = await nxt(call)
        except BaseException as exc:
            permit._close(exc)
            raise
        self._release(permit, status_of(result) in _DROP_STATUSES, False)
        return result

    async def __aenter__(self) -> ConcurrencyLimit:
        _scope.push(self, self._fast() or await self.acquire())
        return self

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        cast("Permit", _scope.pop(self))._close(exc)

    # -- sync --------------------------------------------------------------------------

    def try_acquire(
        self, *, criticality: Criticality | None = None, deadline: float | None = None
    ) -> Permit | None:
        """A slot now, or None: it never waits, never evicts and raises nothing (a call
        whose deadline has passed gets None too)."""
        c = self._criticality(criticality)
        now = self.clock.now()
        got = self._admit_now(c, now, self._deadline_at(deadline, now))
        return got if isinstance(got, Permit) else None

    def _acquire_sync(self) -> Permit:
        permit = self._fast()
        if permit is not None:
            return permit
        c = current_criticality()
        now = self.clock.now()
        got = self._admit_now(c, now, self._deadline_at(None, now))
        if isinstance(got, Permit):
            return got
        raise self._shed(c, got, 0.0)

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` holding a slot (refused at once when none is free)."""
        permit = self._acquire_sync()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            permit._close(exc)
            raise
        self._release(permit, status_of(result) in _DROP_STATUSES, False)
        return result

    def _run(self, nxt: SyncNext, call: Call) -> Any:
        permit = self._acquire_sync()
        try:
            result = nxt(call)
        except BaseException as exc:
            permit._close(exc)
            raise
        self._release(permit, status_of(result) in _DROP_STATUSES, False)
        return result

    def __enter__(self) -> ConcurrencyLimit:
        _scope.push(self, self._acquire_sync())
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        cast("Permit", _scope.pop(self))._close(exc)
