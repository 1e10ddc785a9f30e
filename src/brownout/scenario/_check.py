"""Value checks for the scenario model. Each raises ScenarioError naming the field (the
model attribute, such as ``duration_s``; the TOML parser renames it to the file's path),
the value and what is allowed."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

from ..errors import ScenarioError

MAX_DURATION_S = 1e9  # about 31 years: keeps every sum of durations finite and exact enough
MAX_RATE = 1e9  # per second
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


def missing(field: str, allowed: str) -> ScenarioError:
    """The error for a required field that was not given: ``<field> is missing; use ...``."""
    return ScenarioError(
        field, None, allowed, problem="is missing", message=f"{field} is missing; use {allowed}"
    )


def is_number(value: object) -> bool:
    """An int or float (never a bool), finite."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def number(field: str, value: object, *, minimum: float, maximum: float, allowed: str) -> float:
    if not is_number(value) or not minimum <= float(value) <= maximum:  # type: ignore[arg-type]
        raise ScenarioError(field, value, allowed)
    return float(value)  # type: ignore[arg-type]


def duration(field: str, value: object, *, positive: bool = False) -> float:
    """Seconds: finite, >= 0 (> 0 when ``positive``), at most MAX_DURATION_S."""
    seconds = number(
        field,
        value,
        minimum=0.0,
        maximum=MAX_DURATION_S,
        allowed=("a duration > 0" if positive else "a duration >= 0")
        + " in seconds (at most 1e9), such as 0.5 or 30",
    )
    if positive and seconds <= 0:
        raise ScenarioError(field, value, "a duration > 0 in seconds, such as 0.5 or 30")
    return seconds


def rate(field: str, value: object, *, positive: bool = False) -> float:
    """Events per second: finite, >= 0 (> 0 when ``positive``), at most MAX_RATE."""
    allowed = ("a rate > 0" if positive else "a rate >= 0") + " per second (at most 1e9)"
    per_s = number(field, value, minimum=0.0, maximum=MAX_RATE, allowed=allowed)
    if positive and per_s <= 0:
        raise ScenarioError(field, value, allowed)
    return per_s


def integer(field: str, value: object, *, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ScenarioError(field, value, f"an integer in {minimum}..{maximum}")
    return value


def choice(field: str, value: object, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ScenarioError(field, value, "one of " + ", ".join(repr(a) for a in allowed))
    return value


def boolean(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ScenarioError(field, value, "true or false")
    return value


def text(field: str, value: object, *, allowed: str = "a non-empty one-line string") -> str:
    """A non-empty string without line breaks or control characters."""
    if (
        not isinstance(value, str)
        or not value.strip()
        or any(ord(c) < 32 or ord(c) == 127 for c in value)
        or len(value.splitlines()) != 1
    ):
        raise ScenarioError(field, value, allowed)
    return value


def name(field: str, value: object, *, example: str = "shoppers") -> str:
    """A short identifier: letters, digits, ``_ . : -``; starts with a letter or digit."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ScenarioError(
            field,
            value,
            "a name of 1-64 letters, digits, '_', '.', ':' or '-' starting with a letter "
            f"or digit, such as {example!r}",
        )
    return value


def http_token(field: str, value: object) -> str:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise ScenarioError(field, value, "an HTTP token such as GET or X-Request-Id")
    return value


def headers(field: str, value: object) -> dict[str, str]:
    """HTTP headers: token names, values without line breaks or NUL."""
    if not isinstance(value, dict):
        raise ScenarioError(
            field, value, 'a table of header names to strings, such as {Accept = "text/html"}'
        )
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _TOKEN.fullmatch(key):
            raise ScenarioError(
                f"{field}.{key}", key, "a header name (an HTTP token) such as X-Request-Id"
            )
        if not isinstance(item, str) or any(c in item for c in "\r\n\0"):
            raise ScenarioError(
                f"{field}.{key}", item, "a header value: a string without line breaks"
            )
        out[key] = item
    return out


def path(field: str, value: object) -> str:
    """A request path: starts with '/', printable ASCII without spaces."""
    if (
        not isinstance(value, str)
        or not value.startswith("/")
        or not all(33 <= ord(c) <= 126 for c in value)
    ):
        raise ScenarioError(
            field,
            value,
            "a path starting with '/', printable ASCII without spaces (percent-encode the rest), "
            "such as '/products/{id}?page=2'",
        )
    return value


def strings(
    field: str, value: object, *, each: str = "a non-empty one-line string"
) -> tuple[str, ...]:
    """A tuple or list of strings, each checked by :func:`text`."""
    if not isinstance(value, tuple | list):
        raise ScenarioError(field, value, f"a list of strings, each {each}")
    return tuple(text(f"{field}[{i}]", item, allowed=each) for i, item in enumerate(value))


def sequence(field: str, value: object, kind: type[Any]) -> tuple[Any, ...]:
    """A tuple (or list) whose items are all ``kind``; returned as a tuple."""
    if not isinstance(value, tuple | list):
        raise ScenarioError(field, value, f"a tuple of {kind.__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, kind):
            raise ScenarioError(f"{field}[{i}]", item, f"a {kind.__name__}")
    return tuple(value)


def statuses(field: str, value: object) -> frozenset[int]:
    """HTTP status codes 100..599."""
    allowed = "a list of HTTP status codes in 100..599, such as [502, 503, 504]"
    if isinstance(value, str | bytes | dict) or not isinstance(value, Iterable):
        raise ScenarioError(field, value, allowed)
    codes: list[int] = []
    for i, code in enumerate(value):
        if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
            raise ScenarioError(f"{field}[{i}]", code, allowed)
        codes.append(code)
    return frozenset(codes)
