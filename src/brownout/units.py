"""Units in scenario files and on the command line: durations, rates, sizes, percentages.

Each parser takes a number or a string and returns the value in base units: seconds,
events per second, bytes, or a fraction in [0, 1]. A bad value raises
:class:`~brownout.errors.ScenarioError` naming ``field`` (a path such as
``classes[0].stages[1].duration``), the value and what is allowed, in one line.

- durations: a number is seconds; a string is a number with a unit (``250us``, ``500ms``,
  ``2s``, ``1m``, ``1h``) or several (``1m30s``); units are ``us`` (also ``µs``), ``ms``,
  ``s``, ``m`` or ``min`` (minutes, never milliseconds), ``h``; a bare number is seconds.
- rates: a number is per second; a string is ``500``, ``500/s``, ``30/m``, ``2/h`` or
  ``10/100ms`` (per that duration): ``count / duration`` in events per second.
- sizes: a number is bytes; a string is a number with ``B``, ``KB`` (1000), ``MB``,
  ``GB``, ``KiB`` (1024), ``MiB`` or ``GiB``.
- percentages: a number is a fraction (``0.01``); a string is ``1%`` or a fraction.
"""

from __future__ import annotations

import math
import re

from .errors import ScenarioError

__all__ = [
    "format_duration",
    "parse_duration",
    "parse_percent",
    "parse_rate",
    "parse_size",
]

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_BARE = re.compile(rf"\s*({_NUMBER})\s*")
_DURATION_PART = re.compile(rf"\s*({_NUMBER})\s*(us|µs|μs|ms|s|sec|min|m|h)(?![a-zµμ])\s*", re.I)
_SECONDS_PER_UNIT = {
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
}
_RATE = re.compile(rf"\s*({_NUMBER})\s*(?:/\s*(\S(?:.*\S)?))?\s*")
_SIZE = re.compile(rf"\s*({_NUMBER})\s*([kmg]i?b|b)?\s*", re.I)
_BYTES_PER_UNIT = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}

DURATION_HINT = "a number with a unit such as 500ms, 2s, 1m (units: us, ms, s, m, h)"
RATE_HINT = "a number per second, or a count per duration such as 500/s, 30/m, 10/100ms"
SIZE_HINT = "a number of bytes, or a number with a unit such as 512B, 10KB, 1MiB"
PERCENT_HINT = "a fraction in [0, 1] such as 0.01, or a percentage such as 1%"


def _finite_number(value: object) -> float | None:
    """``value`` as a finite float when it is an int or float (not bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _duration_of_string(text: str) -> float | None:
    bare = _BARE.fullmatch(text)
    if bare:
        return float(bare.group(1))
    total, pos, seen = 0.0, 0, False
    while pos < len(text):
        part = _DURATION_PART.match(text, pos)
        if part is None or part.end() == pos:
            return None
        number = float(part.group(1))
        if seen and number < 0:
            return None  # a sign only in front: "1m-30s" is not a duration
        total += number * _SECONDS_PER_UNIT[part.group(2).lower()]
        pos, seen = part.end(), True
    return total if seen else None


def parse_duration(value: object, *, field: str = "duration") -> float:
    """A duration in seconds (>= 0, finite): a number of seconds, or a string such as
    ``"250us"``, ``"500ms"``, ``"2s"``, ``"1m"``, ``"1h"``, ``"1m30s"`` or ``"2.5"``."""
    seconds = _duration_of_string(value) if isinstance(value, str) else _finite_number(value)
    if seconds is None or not math.isfinite(seconds):
        raise ScenarioError(field, value, DURATION_HINT, problem="is not a duration")
    if seconds < 0:
        raise ScenarioError(field, value, "a duration >= 0 such as 0, 500ms, 2s")
    return seconds + 0.0  # -0.0 becomes 0.0


def parse_rate(value: object, *, field: str = "rate") -> float:
    """A rate in events per second (>= 0, finite): a number per second, or a string
    ``"N"``, ``"N/s"``, ``"N/m"``, ``"N/h"`` or ``"N/<duration>"`` (``"10/100ms"`` is 100/s):
    ``rate = N / duration_s``."""
    rate: float | None
    if isinstance(value, str):
        rate = None
        match = _RATE.fullmatch(value)
        if match is not None:
            count = float(match.group(1))
            per = match.group(2)
            if per is None:
                rate = count
            else:
                spelled = per if per[0].isdigit() or per[0] == "." else "1" + per
                seconds = _duration_of_string(spelled)
                if seconds is not None and seconds > 0:
                    rate = count / seconds
    else:
        rate = _finite_number(value)
    if rate is None or not math.isfinite(rate):
        raise ScenarioError(field, value, RATE_HINT, problem="is not a rate")
    if rate < 0:
        raise ScenarioError(field, value, "a rate >= 0 such as 0, 500, 30/m")
    return rate + 0.0


def parse_size(value: object, *, field: str = "size") -> int:
    """A size in bytes (an integer >= 0): a number of bytes, or a string such as
    ``"512B"``, ``"10KB"`` (10 000), ``"1MiB"`` (1 048 576). Fractions round to the nearest
    byte (``"1.5KB"`` is 1500)."""
    size: float | None
    if isinstance(value, str):
        size = None
        match = _SIZE.fullmatch(value)
        if match is not None:
            unit = (match.group(2) or "b").lower()
            size = float(match.group(1)) * _BYTES_PER_UNIT[unit]
    else:
        size = _finite_number(value)
    if size is None or not math.isfinite(size):
        raise ScenarioError(field, value, SIZE_HINT, problem="is not a size")
    if size < 0:
        raise ScenarioError(field, value, "a size >= 0 such as 0, 512B, 10KB")
    return round(size)


def parse_percent(value: object, *, field: str = "percent") -> float:
    """A fraction in [0, 1]: a number (``0.01``) or a string, either a percentage
    (``"1%"`` is 0.01) or a fraction (``"0.01"``)."""
    fraction: float | None
    if isinstance(value, str):
        text = value.strip()
        percent = text.endswith("%")
        bare = _BARE.fullmatch(text[:-1] if percent else text)
        fraction = None
        if bare is not None:
            fraction = float(bare.group(1)) / (100.0 if percent else 1.0)
    else:
        fraction = _finite_number(value)
    if fraction is None or not math.isfinite(fraction):
        raise ScenarioError(field, value, PERCENT_HINT, problem="is not a percentage")
    if not 0.0 <= fraction <= 1.0:
        raise ScenarioError(field, value, PERCENT_HINT, problem="is outside [0, 1]")
    return fraction + 0.0


def _g(number: float) -> str:
    return f"{number:.4g}"


def format_duration(seconds: float) -> str:
    """A duration for humans, which :func:`parse_duration` reads back (4 significant
    digits below a minute): ``0.00025 -> "250us"``, ``0.0125 -> "12.5ms"``,
    ``2 -> "2s"``, ``90.5 -> "1m30.5s"``, ``5400 -> "1h30m"``."""
    if math.isnan(seconds):
        return "nan"
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if math.isinf(seconds):
        return "inf"
    if seconds == 0:
        return "0s"
    if seconds < 1e-3:
        return _g(seconds * 1e6) + "us"
    if seconds < 1:
        text = _g(seconds * 1e3)
        return "1s" if text == "1000" else text + "ms"
    if seconds < 59.995:
        return _g(seconds) + "s"
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if millis:
        parts.append(f"{millis / 1000:g}s")
    return "".join(parts)
