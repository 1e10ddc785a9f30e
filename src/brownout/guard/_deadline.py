"""Deadlines: the absolute time by which the caller stops caring.

The current deadline lives in a context variable, so it follows the request through
``await`` and into tasks it spawns (each task copies the context it was created in).
Nested deadlines take the earliest. Code below reads what is left with :func:`remaining`
and passes it on to outgoing calls as a header (:func:`deadline_headers`); a server reads
it back with :func:`deadline_from_headers`.

Headers carry a *relative* budget, never an absolute time, because two hosts' clocks do not
agree. brownout writes ``brownout-timeout-ms`` (an integer, milliseconds left) and reads it
along with gRPC's ``grpc-timeout`` and Envoy's ``x-envoy-expected-rq-timeout-ms``; when
several are present the smallest budget wins.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from .. import _validate as v
from .._clock import Clock, monotonic_clock

__all__ = [
    "DEADLINE_HEADER",
    "Deadline",
    "current_deadline",
    "deadline",
    "deadline_from_headers",
    "deadline_headers",
    "parse_grpc_timeout",
    "remaining",
]

DEADLINE_HEADER = "brownout-timeout-ms"
ENVOY_HEADER = "x-envoy-expected-rq-timeout-ms"
GRPC_HEADER = "grpc-timeout"


class Deadline:
    """An absolute deadline ``at`` on ``clock`` (seconds)."""

    __slots__ = ("at", "clock")

    def __init__(self, at: float, clock: Clock) -> None:
        self.at = at
        self.clock = clock

    def remaining(self) -> float:
        """Seconds left; negative once passed."""
        return self.at - self.clock.now()

    def earliest(self, other: Deadline | None) -> Deadline:
        if other is None:
            return self
        if other.clock is self.clock:
            return self if self.at <= other.at else other
        return self if self.remaining() <= other.remaining() else other

    def __repr__(self) -> str:
        return f"Deadline(at={self.at!r}, remaining_s={self.remaining():.6f})"


_current: ContextVar[Deadline | None] = ContextVar("brownout_deadline", default=None)


def current_deadline() -> Deadline | None:
    """The deadline in force here, or None when there is none."""
    return _current.get()


def remaining() -> float | None:
    """Seconds left before the current deadline (may be negative), or None without one."""
    current = _current.get()
    return None if current is None else current.remaining()


@contextmanager
def deadline(seconds: float, *, clock: Clock = monotonic_clock) -> Iterator[Deadline]:
    """Set a deadline ``seconds`` from now for the code in the ``with`` block.

    A deadline already in force that is earlier wins. This sets the budget that code below
    reads; it does not interrupt anything by itself. Wrap work in a ``Timeout`` to cancel
    async work at expiry and to refuse sync work that cannot finish in time.
    """
    v.non_negative("deadline", "seconds", seconds)
    new = Deadline(clock.now() + seconds, clock).earliest(_current.get())
    token = _current.set(new)
    try:
        yield new
    finally:
        _current.reset(token)


def deadline_headers(*, grpc: bool = False) -> dict[str, str]:
    """Headers that pass the current budget to an outgoing call (empty without a deadline).

    The budget is rounded down to whole milliseconds and never negative. With
    ``grpc=True`` a ``grpc-timeout`` header is added as well.
    """
    left = remaining()
    if left is None:
        return {}
    ms = max(0, math.floor(left * 1000))
    headers = {DEADLINE_HEADER: str(ms)}
    if grpc:
        headers[GRPC_HEADER] = f"{min(ms, 99_999_999)}m"
    return headers


_GRPC_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def parse_grpc_timeout(value: str) -> float:
    """Seconds from a ``grpc-timeout`` value: 1 to 8 digits and a unit (H M S m u n)."""
    digits, unit = value[:-1], value[-1:]
    if (
        not (1 <= len(digits) <= 8 and digits.isascii() and digits.isdigit())
        or unit not in _GRPC_UNITS
    ):
        raise ValueError(
            f"grpc-timeout={value!r} must be 1 to 8 digits followed by one of H, M, S, m, u, n"
        )
    return int(digits) * _GRPC_UNITS[unit]


def _parse_ms(name: str, value: str) -> float:
    text = value.strip()
    if not (0 < len(text) <= 12 and text.isascii() and text.isdigit()):
        raise ValueError(f"{name}={value!r} must be a whole number of milliseconds")
    return int(text) / 1000.0


def _header_items(
    headers: Mapping[str, str] | Iterable[tuple[bytes | str, bytes | str]],
) -> Iterator[tuple[str, str]]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    for key, value in items:
        k = key.decode("latin-1") if isinstance(key, bytes) else key
        val = value.decode("latin-1") if isinstance(value, bytes) else value
        yield k.lower(), val


def deadline_from_headers(
    headers: Mapping[str, str] | Iterable[tuple[bytes | str, bytes | str]],
    *,
    strict: bool = False,
) -> float | None:
    """The smallest budget (seconds) carried by incoming request headers, or None.

    Accepts a mapping or ASGI-style ``(name, value)`` pairs. A malformed value is ignored,
    unless ``strict=True``, in which case it raises ``ValueError`` naming the header.
    """
    budget: float | None = None
    for key, value in _header_items(headers):
        try:
            if key in (DEADLINE_HEADER, ENVOY_HEADER):
                seconds = _parse_ms(key, value)
            elif key == GRPC_HEADER:
                seconds = parse_grpc_timeout(value.strip())
            else:
                continue
        except ValueError:
            if strict:
                raise
            continue
        budget = seconds if budget is None else min(budget, seconds)
    return budget
