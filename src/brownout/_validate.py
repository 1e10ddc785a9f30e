"""Argument checks shared by every configurable object. Each raises InvalidConfig naming
the owner, the argument, its value and what is allowed."""

from __future__ import annotations

import math

from .errors import InvalidConfig


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def non_negative(owner: str, name: str, value: object, *, finite: bool = True) -> float:
    """A duration or amount >= 0 (seconds where it is a duration)."""
    if not _is_number(value) or value < 0 or (finite and math.isinf(value)):  # type: ignore[operator,arg-type]
        raise InvalidConfig(
            owner, name, value, "a finite number >= 0" if finite else "a number >= 0"
        )
    return float(value)  # type: ignore[arg-type]


def positive(owner: str, name: str, value: object, *, finite: bool = True) -> float:
    if not _is_number(value) or value <= 0 or (finite and math.isinf(value)):  # type: ignore[operator,arg-type]
        raise InvalidConfig(owner, name, value, "a finite number > 0" if finite else "a number > 0")
    return float(value)  # type: ignore[arg-type]


def ratio(owner: str, name: str, value: object) -> float:
    if not _is_number(value) or not 0 <= value <= 1:  # type: ignore[operator]
        raise InvalidConfig(owner, name, value, "a number in [0, 1]")
    return float(value)  # type: ignore[arg-type]


def at_least(owner: str, name: str, value: object, minimum: float) -> float:
    if not _is_number(value) or math.isinf(value) or value < minimum:  # type: ignore[operator,arg-type]
        raise InvalidConfig(owner, name, value, f"a finite number >= {minimum:g}")
    return float(value)  # type: ignore[arg-type]


def int_at_least(owner: str, name: str, value: object, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidConfig(owner, name, value, f"an integer >= {minimum}")
    return value


def one_of(owner: str, name: str, value: object, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise InvalidConfig(owner, name, value, "one of " + ", ".join(repr(a) for a in allowed))
    return value


def exception_types(owner: str, name: str, value: object) -> tuple[type[BaseException], ...]:
    """An exception class or a tuple of them."""
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise InvalidConfig(owner, name, value, "an exception class or a tuple of them")
    return items


def statuses(owner: str, name: str, value: object) -> frozenset[int]:
    """A collection of HTTP status codes (100..599)."""
    try:
        codes: frozenset[object] = frozenset(value)  # type: ignore[call-overload]
    except TypeError:
        raise InvalidConfig(owner, name, value, "a collection of HTTP status codes") from None
    for code in codes:
        if not isinstance(code, int) or isinstance(code, bool) or not 100 <= code <= 599:
            raise InvalidConfig(owner, name, value, "a collection of HTTP status codes in 100..599")
    return frozenset(c for c in codes if isinstance(c, int))


def callable_or_none(owner: str, name: str, value: object) -> None:
    if value is not None and not callable(value):
        raise InvalidConfig(owner, name, value, "a callable or None")
