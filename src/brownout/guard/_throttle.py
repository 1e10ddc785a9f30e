"""Adaptive throttling: a client stops sending what its backend is going to reject anyway.

Google SRE book, "Handling Overload", client-side throttling. Each client counts, over the
trailing ``window_s`` seconds:

- ``requests``: calls the application attempted through the throttle, including the ones
  the throttle refused locally;
- ``accepts``: calls the backend accepted (answered with anything but an overload
  rejection).

and refuses a new call locally, before it is sent, with probability::

    p = min(max_reject_ratio, max(0, (requests - k * accepts) / (requests + 1)))

While the backend accepts everything, ``requests == accepts`` and ``p = 0``. Once it rejects,
the client sends about ``k * accepts`` per window and refuses the rest locally, so a
backend at capacity ``C`` sees about ``k * C`` instead of every client's full offer: the cost
of rejecting moves from the overloaded backend to the clients. ``k = 2`` (the default) wastes
up to half of what reaches the backend on rejections but reacts to recovery quickly; ``k``
closer to 1 is stricter and slower to notice a backend that heals (K=1 can stay stuck).

Recovery: once the backend accepts everything again, the accepts in the window grow by a
factor e every ``window_s / k`` seconds until they reach ``requests / k``. From a partial
overload that rejected 60% (``k = 2``) the full offer gets through again after about 0.7
window. ``max_reject_ratio`` (default 0.9) caps the local rejection for the worse case: a
backend that rejected everything pushes ``p`` toward ``requests / (requests + 1)``, nearly 1,
and the trickle still sent needs ~7 windows (14 minutes at the default window, measured in
the tests) to show that it healed. With the cap, at least 10% of the offer keeps probing
and recovery takes under 2 windows. ``max_reject_ratio=1`` gives the book's formula
unchanged. A shorter ``window_s`` reacts faster in both directions.

The window is kept in 60 buckets of ``window_s / 60`` seconds with running totals (O(1) per
call), so it spans between 59/60 and 1 times ``window_s``. Requests are counted when the call
ends (or is refused), so calls in flight never look like missing accepts.

What is a rejection: an exception that is an instance of ``rejected_on`` (default
brownout's ``Overloaded``: ``RateLimited``, ``BulkheadFull``...) and passes
``rejected_if``; an exception carrying an HTTP status in ``rejected_statuses`` (default 429
and 503; ``status_code``/``status`` on the exception or on its ``response``, as httpx and
requests raise them); a result whose HTTP status is in ``rejected_statuses`` or that passes
``rejected_if_result``. Any other outcome, errors included, is an accept: the backend took
the call. brownout's other rejections (``CircuitOpen``, ``Throttled`` of another throttle)
mean a local policy refused the call before it left, so they are not counted at all, nor
are cancellations.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import _validate as v
from .._clock import Clock, monotonic_clock
from ..errors import InvalidConfig, Overloaded, Rejected, Throttled
from ..events import CallRejected, Events
from ._outcome import Selector, status_of
from ._policy import AsyncNext, Call, Policy, SyncNext

__all__ = ["AdaptiveThrottle"]

_BUCKETS = 60


class _Window:
    """Requests and accepts of the trailing window, in buckets, with running totals."""

    __slots__ = (
        "accepts",
        "bucket_s",
        "lock",
        "requests",
        "slot",
        "total_accepts",
        "total_requests",
    )

    def __init__(self, window_s: float) -> None:
        self.bucket_s = window_s / _BUCKETS
        self.requests = [0] * _BUCKETS
        self.accepts = [0] * _BUCKETS
        self.slot = 0  # absolute index of the newest bucket
        self.total_requests = 0
        self.total_accepts = 0
        self.lock = threading.Lock()

    def roll(self, now: float) -> int:
        """Age out the buckets older than the window at ``now``; return the newest's index.
        Call with the lock held."""
        slot = math.floor(now / self.bucket_s)
        if slot > self.slot:
            if slot - self.slot >= _BUCKETS:
                self.requests = [0] * _BUCKETS
                self.accepts = [0] * _BUCKETS
                self.total_requests = self.total_accepts = 0
            else:
                requests, accepts = self.requests, self.accepts
                for s in range(self.slot + 1, slot + 1):
                    i = s % _BUCKETS
                    self.total_requests -= requests[i]
                    self.total_accepts -= accepts[i]
                    requests[i] = accepts[i] = 0
            self.slot = slot
        return self.slot % _BUCKETS  # a stamp older than the newest bucket goes into it


@dataclass(frozen=True, slots=True, kw_only=True)
class AdaptiveThrottle(Policy):
    """Refuse calls locally in proportion to how many the backend has been rejecting.

    ``p = min(max_reject_ratio, max(0, (requests - k * accepts) / (requests + 1)))`` over
    the last ``window_s`` seconds (see the module docstring for the counts and what counts
    as a rejection).

    Configuration: ``k`` (>= 1, default 2), ``window_s`` (default 120 s), ``max_reject_ratio``
    (in (0, 1], default 0.9), the ``rejected_on`` / ``rejected_if`` / ``rejected_statuses`` /
    ``rejected_if_result`` selectors, ``seed`` for the draws.

    A refused call raises :class:`Throttled` (a ``Rejected``, with nothing sent) and emits
    ``CallRejected(reason="throttled")``. ``Retry`` does not retry it, so place the throttle
    inside the retry: ``Pipeline([Retry(...), AdaptiveThrottle(), ...])`` counts every
    attempt, which is what reaches the backend, and a throttled attempt ends the retries.

    Use as a policy (``call``, ``acall``, decorator, ``Pipeline``) or by hand, sans-IO:
    ``allow(now)`` before sending (False: refused and counted) and ``record(accepted, now)``
    when the answer comes.
    """

    k: float = 2.0
    window_s: float = 120.0
    max_reject_ratio: float = 0.9
    rejected_on: type[BaseException] | tuple[type[BaseException], ...] = Overloaded
    rejected_if: Callable[[BaseException], bool] | None = None
    rejected_statuses: frozenset[int] = frozenset({429, 503})
    rejected_if_result: Callable[[Any], bool] | None = None
    seed: int | None = None
    name: str = "adaptive_throttle"
    clock: Clock = field(default=monotonic_clock, repr=False, compare=False)
    events: Events = field(default_factory=Events, repr=False, compare=False)
    _select: Selector = field(init=False, repr=False, compare=False)
    _window: _Window = field(init=False, repr=False, compare=False)
    _rng: random.Random = field(init=False, repr=False, compare=False)

    kind = "adaptive_throttle"

    def __post_init__(self) -> None:
        owner = "AdaptiveThrottle"
        v.at_least(owner, "k", self.k, 1)
        v.positive(owner, "window_s", self.window_s)
        v.positive(owner, "max_reject_ratio", self.max_reject_ratio)
        v.ratio(owner, "max_reject_ratio", self.max_reject_ratio)
        if self.seed is not None and (
            not isinstance(self.seed, int) or isinstance(self.seed, bool)
        ):
            raise InvalidConfig(owner, "seed", self.seed, "an integer or None")
        if not isinstance(self.name, str) or not self.name:
            raise InvalidConfig(owner, "name", self.name, "a non-empty string")
        select = Selector(
            owner,
            "rejected",
            types=self.rejected_on,
            exclude=(Throttled,),
            exc_pred=self.rejected_if,
            statuses=self.rejected_statuses,
            result_pred=self.rejected_if_result,
        )
        object.__setattr__(self, "rejected_statuses", select.statuses)
        object.__setattr__(self, "_select", select)
        object.__setattr__(self, "_window", _Window(float(self.window_s)))
        object.__setattr__(self, "_rng", random.Random(self.seed))

    # -- sans-IO core --------------------------------------------------------------------

    def _probability(self, window: _Window) -> float:
        requests = window.total_requests
        p = (requests - self.k * window.total_accepts) / (requests + 1)
        if p <= 0.0:
            return 0.0
        return min(p, self.max_reject_ratio)

    def reject_probability(self, now: float | None = None) -> float:
        """The probability that a call at ``now`` (default: the clock) is refused locally."""
        window = self._window
        with window.lock:
            window.roll(self.clock.now() if now is None else now)
            return self._probability(window)

    @property
    def requests(self) -> int:
        """Requests counted in the window now (refused ones included)."""
        window = self._window
        with window.lock:
            window.roll(self.clock.now())
            return window.total_requests

    @property
    def accepts(self) -> int:
        """Calls the backend accepted in the window now."""
        window = self._window
        with window.lock:
            window.roll(self.clock.now())
            return window.total_accepts

    def allow(self, now: float | None = None) -> bool:
        """May a call be sent at ``now`` (default: the clock)? A refusal is counted as a
        request at once; an allowed call is counted when :meth:`record` reports its end."""
        if now is None:
            now = self.clock.now()
        window = self._window
        with window.lock:
            i = window.roll(now)
            p = self._probability(window)
            if p == 0.0 or self._rng.random() >= p:
                return True
            window.requests[i] += 1
            window.total_requests += 1
        if self.events:
            self.events.emit(CallRejected(now, self.name, "throttled"))
        return False

    def record(self, accepted: bool, now: float | None = None) -> None:
        """Count an allowed call that ended at ``now``: a request, and an accept unless the
        backend rejected it for overload."""
        if now is None:
            now = self.clock.now()
        window = self._window
        with window.lock:
            i = window.roll(now)
            window.requests[i] += 1
            window.total_requests += 1
            if accepted:
                window.accepts[i] += 1
                window.total_accepts += 1

    def is_rejection(self, exc: BaseException) -> bool | None:
        """Classify a failure: True when the backend rejected the call for overload, False
        when it accepted it, None when it is not to be counted (a cancellation, or a
        brownout rejection: nothing was sent)."""
        if not isinstance(exc, Exception):
            return None
        select = self._select
        if select.exception(exc):
            return True
        statuses = select.statuses
        if statuses:
            status = status_of(exc)
            if status is None:
                status = status_of(getattr(exc, "response", None))
            if status in statuses:
                return True
        if isinstance(exc, Rejected):
            return None
        return False

    # -- adapters ------------------------------------------------------------------------

    def _refused(self) -> Throttled:
        window = self._window
        with window.lock:
            p = self._probability(window)
        return Throttled(policy=self.name, probability=p)

    def _ended(self, exc: BaseException) -> None:
        rejected = self.is_rejection(exc)
        if rejected is not None:
            self.record(not rejected)

    def _run(self, nxt: SyncNext, call: Call) -> Any:
        if not self.allow():
            raise self._refused()
        try:
            result = nxt(call)
        except BaseException as exc:
            self._ended(exc)
            raise
        select = self._select
        self.record(not (select.selects_results and select.result(result)))
        return result

    async def _arun(self, nxt: AsyncNext, call: Call) -> Any:
        if not self.allow():
            raise self._refused()
        try:
            result = await nxt(call)
        except BaseException as exc:
            self._ended(exc)
            raise
        select = self._select
        self.record(not (select.selects_results and select.result(result)))
        return result
