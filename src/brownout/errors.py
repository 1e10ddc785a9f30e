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
        ├── Throttled                     client-side adaptive throttling refused the call
        │                                 locally, with rejection ``probability``
        └── Overloaded                    local overload: shed instead of queued
            ├── BulkheadFull              no slot and no room (or time) in the wait queue
            ├── ConcurrencyLimited        shed by a concurrency limit; ``reason`` is limit,
            │                             queue_full, queue_timeout or deadline; retry
            │                             after ``retry_after_s``
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
    "ConcurrencyLimited",
    "DeadlineExceeded",
    "InvalidConfig",
    "Overloaded",
    "RateLimited",
    "Rejected",
    "ResultsError",
    "ScenarioError",
    "ThresholdError",
    "Throttled",
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


class Throttled(Rejected):
    """Client-side adaptive throttling refused the call before sending it.

    The throttle saw the backend accept too few of the recent requests and rejects locally
    with ``probability`` (the rejection probability in force, in [0, 1]) so the backend is
    not sent work it would refuse anyway.
    """

    def __init__(self, *, policy: str, probability: float) -> None:
        self.probability = probability
        super().__init__(
            f"adaptive throttle {policy!r} refused the call locally "
            f"(rejection probability {probability:.2f})",
            policy=policy,
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (Throttled, {"policy": self.policy, "probability": self.probability}))


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


class ConcurrencyLimited(Overloaded):
    """A concurrency limit shed the call before any work started.

    ``reason`` says why, one of :attr:`REASONS`:

    - ``"limit"``: every slot was taken and the call could not wait (a sync call, or
      ``max_queue=0``);
    - ``"queue_full"``: the wait queue was full of calls at least as critical (or a more
      critical arrival took this call's place in it);
    - ``"queue_timeout"``: it waited in the queue for as long as the queue allows;
    - ``"deadline"``: its deadline had passed, or would pass before a slot came free.

    ``retry_after_s`` is a hint for the caller (at least 1 s, so an HTTP ``Retry-After``
    never rounds it to zero). ``criticality`` is the refused call's criticality (a
    ``brownout.Criticality``, an ``int``), ``limit``, ``in_flight`` and ``queued`` the state
    of the limit when it refused, ``waited_s`` how long the call waited first.
    """

    REASONS = ("limit", "queue_full", "queue_timeout", "deadline")

    def __init__(
        self,
        *,
        policy: str,
        reason: str,
        retry_after_s: float,
        criticality: int | None = None,
        limit: int = 0,
        in_flight: int = 0,
        queued: int = 0,
        waited_s: float = 0.0,
    ) -> None:
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.criticality = criticality
        self.limit = limit
        self.in_flight = in_flight
        self.queued = queued
        self.waited_s = waited_s
        what = {
            "limit": "every slot taken",
            "queue_full": "wait queue full",
            "queue_timeout": f"queued {waited_s * 1000:.1f} ms without a slot",
            "deadline": "its deadline cannot be met",
        }.get(reason, reason)
        level = getattr(criticality, "name", criticality)
        tag = "" if level is None else f" {str(level).lower()}"
        super().__init__(
            f"concurrency limit {policy!r} shed a{tag} call: {what} "
            f"(limit {limit}, {in_flight} in flight, {queued} queued); "
            f"retry after {retry_after_s:.3f} s",
            policy=policy,
        )

    def __reduce__(self) -> tuple[object, ...]:
        state = {
            "policy": self.policy,
            "reason": self.reason,
            "retry_after_s": self.retry_after_s,
            "criticality": self.criticality,
            "limit": self.limit,
            "in_flight": self.in_flight,
            "queued": self.queued,
            "waited_s": self.waited_s,
        }
        return (_rebuild, (ConcurrencyLimited, state))


def _rebuild(cls: type[BaseException], kwargs: dict[str, object]) -> BaseException:
    """Unpickle an error whose constructor takes keyword arguments only."""
    return cls(**kwargs)
