"""Classifying outcomes: which exceptions and results count (as retryable, as failures...).

Policies take the same three knobs, named after what they select (``retry_on``,
``failure_on``...): exception types, an optional predicate on the exception, and HTTP
statuses for results that carry one (``status_code`` as httpx and requests have it, or
``status`` as aiohttp has it), plus an optional predicate on the result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import _validate as v


def status_of(result: object) -> int | None:
    """The HTTP status of a response-like result, or None."""
    status = getattr(result, "status_code", None)
    if status is None:
        status = getattr(result, "status", None)
    return status if isinstance(status, int) and not isinstance(status, bool) else None


class Selector:
    """Selects exceptions and results.

    An exception is selected when it is an instance of ``types``, not of ``exclude``, and
    ``exc_pred`` (when given) returns True. A result is selected when its HTTP status is in
    ``statuses`` or ``result_pred`` (when given) returns True.
    """

    __slots__ = ("exc_pred", "exclude", "result_pred", "statuses", "types")

    def __init__(
        self,
        owner: str,
        prefix: str,
        *,
        types: object,
        exclude: object = (),
        exc_pred: Callable[[BaseException], bool] | None = None,
        statuses: object = frozenset(),
        result_pred: Callable[[Any], bool] | None = None,
    ) -> None:
        self.types = v.exception_types(owner, f"{prefix}_on", types)
        self.exclude = v.exception_types(owner, f"{prefix}_exclude", exclude) if exclude else ()
        v.callable_or_none(owner, f"{prefix}_if", exc_pred)
        v.callable_or_none(owner, f"{prefix}_if_result", result_pred)
        self.exc_pred = exc_pred
        self.statuses = v.statuses(owner, f"{prefix}_statuses", statuses)
        self.result_pred = result_pred

    def exception(self, exc: BaseException) -> bool:
        if not isinstance(exc, self.types) or (self.exclude and isinstance(exc, self.exclude)):
            return False
        return self.exc_pred is None or bool(self.exc_pred(exc))

    @property
    def selects_results(self) -> bool:
        return bool(self.statuses) or self.result_pred is not None

    def result(self, result: object) -> bool:
        if self.statuses and status_of(result) in self.statuses:
            return True
        return self.result_pred is not None and bool(self.result_pred(result))


class DurationEstimate:
    """Smoothed duration of successful attempts (seconds): the first sample, then an EWMA
    with weight ``alpha`` for each new one. Zero until the first sample."""

    __slots__ = ("alpha", "seconds", "seen")

    def __init__(self, alpha: float = 0.2) -> None:
        self.alpha = alpha
        self.seconds = 0.0
        self.seen = False

    def observe(self, seconds: float) -> None:
        if self.seen:
            self.seconds += self.alpha * (seconds - self.seconds)
        else:
            self.seconds, self.seen = seconds, True
