"""Typed events: every decision a policy takes, with its time and labels.

A policy owns an :class:`Events` hook. Subscribing is explicit and per hook (or per
``Pipeline``, which subscribes to every policy in it); there is no global bus. When nobody
subscribes, emitting costs one truth test: policies check ``if events:`` before they even
build the event object.

A subscriber that raises does not break the call it observes: the exception is logged on
the ``brownout.events`` logger with its traceback, and the other subscribers still run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "BulkheadQueued",
    "CacheHit",
    "CacheLoaded",
    "CacheMiss",
    "CallRejected",
    "CircuitStateChanged",
    "DeadlineExpired",
    "Event",
    "Events",
    "FallbackUsed",
    "HedgeStarted",
    "RetryAbandoned",
    "RetryScheduled",
    "StaleServed",
    "Subscriber",
]

_log = logging.getLogger("brownout.events")


@dataclass(frozen=True, slots=True)
class Event:
    """Base of all events. ``at`` is the policy clock's time, ``policy`` the policy's name."""

    at: float
    policy: str


@dataclass(frozen=True, slots=True)
class CallRejected(Event):
    """A policy refused a call. ``reason`` is short and stable (``"circuit_open"``)."""

    reason: str


@dataclass(frozen=True, slots=True)
class DeadlineExpired(Event):
    """A call ran past its deadline (async: it was cancelled) or was refused for lack of budget."""

    timeout_s: float | None
    started: bool


@dataclass(frozen=True, slots=True)
class RetryScheduled(Event):
    """Attempt ``attempt`` failed; the next starts after ``delay_s`` seconds."""

    attempt: int
    delay_s: float
    cause: str


@dataclass(frozen=True, slots=True)
class RetryAbandoned(Event):
    """A retryable failure was not retried. ``reason``: ``attempts``, ``budget`` or ``deadline``."""

    attempt: int
    reason: str


@dataclass(frozen=True, slots=True)
class CircuitStateChanged(Event):
    """The breaker moved from ``old`` to ``new`` (``closed``, ``open``, ``half_open``, ``forced_open``,
    ``forced_closed``). ``until`` is when an ``open`` state ends, else ``None``."""

    old: str
    new: str
    until: float | None
    failure_rate: float
    slow_call_rate: float


@dataclass(frozen=True, slots=True)
class BulkheadQueued(Event):
    """A call waits for a bulkhead slot; ``queued`` counts the waiters including it."""

    queued: int


@dataclass(frozen=True, slots=True)
class HedgeStarted(Event):
    """Hedged attempt number ``attempt`` (2 = the first hedge) started after ``after_s``."""

    attempt: int
    after_s: float


@dataclass(frozen=True, slots=True)
class FallbackUsed(Event):
    """The fallback produced the result instead of the call; ``cause`` names what it replaced."""

    cause: str


@dataclass(frozen=True, slots=True)
class CacheHit(Event):
    key: str


@dataclass(frozen=True, slots=True)
class CacheMiss(Event):
    key: str


@dataclass(frozen=True, slots=True)
class CacheLoaded(Event):
    """The loader ran for ``key`` and took ``duration_s``; ``ok`` is False when it raised."""

    key: str
    duration_s: float
    ok: bool


@dataclass(frozen=True, slots=True)
class StaleServed(Event):
    """A stale value was served for ``key``; ``reason`` is ``revalidating`` or ``error``."""

    key: str
    reason: str


Subscriber = Callable[[Event], object]


class Events:
    """A subscription hook. ``bool(events)`` is True only when someone listens."""

    __slots__ = ("_subscribers",)

    def __init__(self) -> None:
        self._subscribers: tuple[Subscriber, ...] = ()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber(event)`` for every event; returns a function that unsubscribes."""
        self._subscribers = (*self._subscribers, subscriber)

        def unsubscribe() -> None:
            subs = list(self._subscribers)
            if subscriber in subs:
                subs.remove(subscriber)
                self._subscribers = tuple(subs)

        return unsubscribe

    def __bool__(self) -> bool:
        return bool(self._subscribers)

    def emit(self, event: Event) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:
                _log.exception("event subscriber %r failed on %r", subscriber, event)

    def __repr__(self) -> str:
        return f"Events(subscribers={len(self._subscribers)})"
