"""Errors raised by brownout.

Every error brownout raises derives from :class:`BrownoutError` and carries the data a
caller needs to act on it (``CircuitOpen.until``, ``RateLimited.retry_after_s``)::

    BrownoutError
    ├── InvalidConfig (also ValueError)   a policy or setting got a value outside its range
    ├── ResultsError (also ValueError)    a results document or histogram is not valid
    ├── ScenarioError (also ValueError)   a scenario file, table or value is not valid
    ├── ThresholdError (also ValueError)  a threshold expression cannot be parsed or applied
    ├── DeadlineExceeded (also TimeoutError)
    │                                     the call's deadline passed, or the budget left
    │                                     cannot cover the work, so it was not started
    └── Rejected                          a policy refused the call; no work was done
        ├── CircuitOpen                   the breaker is open until ``until``
        └── Overloaded                    local overload: shed instead of queued
            ├── BulkheadFull              no slot and no room (or time) in the wait queue
            └── RateLimited               over a rate limit; retry after ``retry_after_s``

``Retry`` does not retry a :class:`Rejected` error unless told to
(``Retry(retry_rejected=True)``): a policy refusing work is a signal to back off, and
retrying it is how retry storms start.
"""

from __future__ import annotations

import functools

__all__ = [
    "BrownoutError",
    "BulkheadFull",
    "CircuitOpen",
    "DeadlineExceeded",
    "InvalidConfig",
    "Overloaded",
    "RateLimited",
    "Rejected",
    "ResultsError",
    "ScenarioError",
    "ThresholdError",
]


class BrownoutError(Exception):
    """Root of every error brownout raises."""


class InvalidConfig(BrownoutError, ValueError):
    """A configuration value is outside what is allowed.

    ``owner`` is what was being configured (``"Retry"``), ``name`` the argument, ``value``
    the value given and ``allowed`` a short description of the allowed values.
    """

    def __init__(self, owner: str, name: str, value: object, allowed: str) -> None:
        self.owner = owner
        self.name = name
        self.value = value
        self.allowed = allowed
        super().__init__(f"{owner}: {name}={value!r} is not allowed; {name} must be {allowed}")


class ResultsError(BrownoutError, ValueError):
    """A results document (or a histogram in it) is not valid.

    ``field`` is the path of the offending field (``summary.ok``, ``timeline[3].t_s``),
    ``value`` its value, ``allowed`` what it must be and ``source`` where the document came
    from (a file name) when known.
    """

    def __init__(self, field: str, value: object, allowed: str, source: str | None = None) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        self.source = source
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        where = f"results {source}: " if source else "results: "
        super().__init__(f"{where}{field}={shown} is not allowed; {field} must be {allowed}")

    def __reduce__(self) -> tuple[object, ...]:  # picklable across worker processes
        return (ResultsError, (self.field, self.value, self.allowed, self.source))


class ScenarioError(BrownoutError, ValueError):
    """A scenario (its file, one of its tables or a value in it) is not valid.

    ``field`` is the path of the offending field as the scenario file spells it
    (``classes[0].stages[1].duration``; the attribute name, such as ``timeout_s``, when the
    model is built in Python), ``value`` the value given, ``allowed`` what is allowed and
    ``source`` the file when known. ``problem`` says what is wrong (default
    ``"is not allowed"``); ``detail`` is the message without the source prefix. The message
    is always one line: ``classes[0].stages[1].duration='3x' is not a duration; use a
    number with a unit such as 500ms, 2s, 1m``.
    """

    def __init__(
        self,
        field: str,
        value: object,
        allowed: str,
        *,
        problem: str = "is not allowed",
        message: str | None = None,
        source: str | None = None,
    ) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        self.problem = problem
        self.source = source
        if message is None:
            shown = repr(value)
            if len(shown) > 60:
                shown = shown[:57] + "..."
            message = f"{field}={shown} {problem}; use {allowed}"
        self.detail = " ".join(message.splitlines())
        super().__init__(f"{source}: {self.detail}" if source else self.detail)

    def __reduce__(self) -> tuple[object, ...]:
        rebuild = functools.partial(
            ScenarioError, problem=self.problem, message=self.detail, source=self.source
        )
        return (rebuild, (self.field, self.value, self.allowed))


class ThresholdError(BrownoutError, ValueError):
    """A threshold expression cannot be parsed, or names a class or endpoint the run lacks.

    ``text`` is the expression and ``reason`` what is wrong with it.
    """

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason
        super().__init__(f"threshold {text!r}: {reason}")

    def __reduce__(self) -> tuple[object, ...]:  # picklable across worker processes
        return (ThresholdError, (self.text, self.reason))


class DeadlineExceeded(BrownoutError, TimeoutError):
    """The deadline passed before the work finished, or too little budget was left to start it.

    ``deadline`` is the absolute deadline on the policy's clock (seconds), ``timeout_s`` the
    per-call timeout that set it when there was one, and ``started`` whether the work had
    begun (``False`` means it was refused up front and nothing ran).
    """

    def __init__(
        self,
        message: str = "deadline exceeded",
        *,
        deadline: float | None = None,
        timeout_s: float | None = None,
        started: bool = True,
    ) -> None:
        self.deadline = deadline
        self.timeout_s = timeout_s
        self.started = started
        super().__init__(message)


class Rejected(BrownoutError):
    """A policy refused the call before any work was done. ``policy`` names the policy."""

    def __init__(self, message: str, *, policy: str) -> None:
        self.policy = policy
        super().__init__(message)


class CircuitOpen(Rejected):
    """The circuit breaker is open; calls are refused until ``until`` (clock seconds).

    ``until`` is ``None`` when the breaker was forced open by hand (it stays open until
    closed by hand) or when it is half-open with every probe slot taken.
    """

    def __init__(self, *, policy: str, until: float | None, state: str) -> None:
        self.until = until
        self.state = state
        when = "until closed by hand" if until is None else f"until t={until:.3f}"
        if state == "half_open":
            when = "while its half-open probes run"
        super().__init__(
            f"circuit breaker {policy!r} is {state}: calls refused {when}", policy=policy
        )


class Overloaded(Rejected):
    """Local overload: the call was shed rather than queued."""


class BulkheadFull(Overloaded):
    """The bulkhead has no free slot and its wait queue is full, or the wait timed out.

    ``max_concurrent`` and ``max_queue`` are the bulkhead's limits, ``waited_s`` how long
    the call waited before being refused (0 when the queue was full at once).
    """

    def __init__(
        self, *, policy: str, max_concurrent: int, max_queue: int, waited_s: float
    ) -> None:
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.waited_s = waited_s
        why = "queue full" if waited_s == 0 else f"waited {waited_s * 1000:.1f} ms"
        super().__init__(
            f"bulkhead {policy!r} is full ({max_concurrent} running, {why})", policy=policy
        )


class RateLimited(Overloaded):
    """Over a rate limit; the next call may succeed after ``retry_after_s`` seconds."""

    def __init__(self, *, policy: str, retry_after_s: float, key: str | None = None) -> None:
        self.retry_after_s = retry_after_s
        self.key = key
        super().__init__(
            f"rate limit {policy!r} exceeded; retry after {retry_after_s:.3f} s", policy=policy
        )
