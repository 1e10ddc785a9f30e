"""The fault kinds a scenario may schedule, and their parameters.

TCP faults keep Toxiproxy's names and semantics (its toxics); HTTP faults act per request.
Parameters are stored in :attr:`FaultSpec.params` under the keys below (durations in
seconds, with an ``_s`` suffix); the scenario file spells them without the suffix.

============== ===================================================================
kind           parameters (file names; * = required)
============== ===================================================================
latency        latency* (duration added to each chunk), jitter (duration, +-)
bandwidth      rate* (KB/s)
slow_close     delay* (duration before the close is passed on)
timeout        timeout (duration, then close; 0 = black hole: data is dropped)
reset_peer     timeout (duration, then a TCP RST)
slicer         average_size* (bytes), size_variation (bytes), delay (between slices)
limit_data     bytes* (close after this many bytes)
down           (the proxy refuses connections)
http_delay     delay* (duration), jitter (duration, +-), ramp_to (the delay grows
               linearly from ``delay`` to ``ramp_to`` over the fault's duration)
http_abort     status (500, 502, 503, 504 or 429; default 503), retry_after
               (duration; only with 429 or 503)
http_reset     (the connection is reset mid-response)
http_slow_body rate* (KB/s > 0: the response body trickles)
============== ===================================================================

Every fault takes ``probability`` in [0, 1] (default 1): per request for HTTP faults, the
toxicity per connection for TCP faults (rolled once per connection). TCP faults take
``direction`` (``"downstream"``, the default, or ``"upstream"``); HTTP faults take
``match = {method, path (a glob such as "/api/*"), header = {name = value}}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import units
from ..errors import ScenarioError
from . import _check as check

__all__ = [
    "ABORT_STATUSES",
    "FAULT_KINDS",
    "HTTP_FAULTS",
    "TCP_FAULTS",
    "Param",
    "normalize_params",
    "params_from_file",
    "params_of",
]

TCP_FAULTS = (
    "latency",
    "bandwidth",
    "slow_close",
    "timeout",
    "reset_peer",
    "slicer",
    "limit_data",
    "down",
)
HTTP_FAULTS = ("http_delay", "http_abort", "http_reset", "http_slow_body")
FAULT_KINDS = TCP_FAULTS + HTTP_FAULTS
ABORT_STATUSES = (429, 500, 502, 503, 504)
DIRECTIONS = ("downstream", "upstream")
MATCH_KEYS = ("header", "method", "path")

_HINTS = {
    "duration": "a duration such as 200ms",
    "kb_rate": "a rate in KB/s such as 100",
    "size": "a size in bytes such as 1024 or 4KB",
}
REQUIRED: Any = object()  # the parameter must be given
OPTIONAL: Any = object()  # absent from params unless given


@dataclass(frozen=True, slots=True)
class Param:
    """One fault parameter: its key in ``params``, its name in the file, its unit
    (``duration``, ``kb_rate``, ``size``, ``status``, ``probability``, ``direction``,
    ``match``) and its default (REQUIRED, OPTIONAL or a value)."""

    key: str
    toml: str
    unit: str
    default: Any


_PROBABILITY = Param("probability", "probability", "probability", 1.0)
_DIRECTION = Param("direction", "direction", "direction", "downstream")
_MATCH = Param("match", "match", "match", OPTIONAL)

_SPECIFIC: dict[str, tuple[Param, ...]] = {
    "latency": (
        Param("latency_s", "latency", "duration", REQUIRED),
        Param("jitter_s", "jitter", "duration", 0.0),
    ),
    "bandwidth": (Param("rate_kb_s", "rate", "kb_rate", REQUIRED),),
    "slow_close": (Param("delay_s", "delay", "duration", REQUIRED),),
    "timeout": (Param("timeout_s", "timeout", "duration", 0.0),),
    "reset_peer": (Param("timeout_s", "timeout", "duration", 0.0),),
    "slicer": (
        Param("average_size", "average_size", "size", REQUIRED),
        Param("size_variation", "size_variation", "size", 0),
        Param("delay_s", "delay", "duration", 0.0),
    ),
    "limit_data": (Param("bytes", "bytes", "size", REQUIRED),),
    "down": (),
    "http_delay": (
        Param("delay_s", "delay", "duration", REQUIRED),
        Param("jitter_s", "jitter", "duration", 0.0),
        Param("ramp_to_s", "ramp_to", "duration", OPTIONAL),
    ),
    "http_abort": (
        Param("status", "status", "status", 503),
        Param("retry_after_s", "retry_after", "duration", OPTIONAL),
    ),
    "http_reset": (),
    "http_slow_body": (Param("rate_kb_s", "rate", "kb_rate", REQUIRED),),
}


def params_of(kind: str) -> tuple[Param, ...]:
    """Every parameter fault ``kind`` takes, its own first, then the common ones."""
    common = (_PROBABILITY, _MATCH) if kind in HTTP_FAULTS else (_PROBABILITY, _DIRECTION)
    return _SPECIFIC[kind] + common


def _match(field: str, value: object) -> dict[str, Any]:
    allowed = 'a table such as {method = "POST", path = "/api/*", header = {X-Canary = "1"}}'
    if not isinstance(value, dict):
        raise ScenarioError(field, value, allowed)
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key not in MATCH_KEYS:
            raise ScenarioError(f"{field}.{key}", item, allowed, problem="is not a match key")
        if key == "method":
            out["method"] = check.http_token(f"{field}.method", item).upper()
        elif key == "path":
            glob = check.text(f"{field}.path", item, allowed="a path glob such as '/api/*' or '*'")
            if not glob.startswith(("/", "*")) or " " in glob:
                raise ScenarioError(f"{field}.path", item, "a path glob such as '/api/*' or '*'")
            out["path"] = glob
        else:
            out["header"] = check.headers(f"{field}.header", item)
    return out


def _value(param: Param, field: str, value: object, kind: str) -> object:
    unit = param.unit
    if unit == "duration":
        return check.duration(field, value)
    if unit == "kb_rate":
        positive = kind == "http_slow_body"
        return check.number(
            field,
            value,
            minimum=1e-9 if positive else 0.0,
            maximum=1e9,
            allowed=("a number > 0" if positive else "a number >= 0") + " of KB/s such as 100",
        )
    if unit == "size":
        minimum = 1 if param.key == "average_size" else 0
        return check.integer(field, value, minimum=minimum, maximum=2**53)
    if unit == "status":
        if isinstance(value, bool) or value not in ABORT_STATUSES:
            raise ScenarioError(field, value, "one of 500, 502, 503, 504, 429")
        return value
    if unit == "probability":
        return check.number(field, value, minimum=0.0, maximum=1.0, allowed="a number in [0, 1]")
    if unit == "direction":
        return check.choice(field, value, DIRECTIONS)
    return _match(field, value)


def normalize_params(kind: str, params: object) -> dict[str, Any]:
    """Check ``params`` for fault ``kind`` (model keys, base units) and fill in defaults.

    Raises ScenarioError naming ``params.<key>``."""
    if not isinstance(params, dict):
        raise ScenarioError("params", params, "a dict of the fault's parameters")
    known = {p.key: p for p in params_of(kind)}
    for key in params:
        if key not in known:
            allowed = ", ".join(sorted(known)) or "no parameters"
            raise ScenarioError(
                f"params.{key}",
                params[key],
                f"the parameters of a {kind} fault: {allowed}",
                problem="is not a parameter of this fault",
            )
    out: dict[str, Any] = {}
    for key, param in known.items():
        if key in params:
            out[key] = _value(param, f"params.{key}", params[key], kind)
        elif param.default is REQUIRED:
            raise check.missing(f"params.{key}", f"{_HINTS[param.unit]}: a {kind} fault needs it")
        elif param.default is not OPTIONAL:
            out[key] = param.default
    if kind == "slicer" and out["size_variation"] > out["average_size"]:
        raise ScenarioError(
            "params.size_variation", out["size_variation"], "a size <= average_size"
        )
    if "retry_after_s" in out and out["status"] not in (429, 503):
        raise ScenarioError(
            "params.retry_after_s",
            out["retry_after_s"],
            "retry_after only with status 429 or 503",
            problem=f"is not allowed with status {out['status']}",
        )
    return out


def _file_value(unit: str, value: object, field: str) -> object:
    """A parameter as a file spells it (``"300ms"``, ``"4KB"``, ``"30%"``) in base units."""
    if unit == "duration":
        return units.parse_duration(value, field=field)
    if unit == "size":
        return units.parse_size(value, field=field)
    if unit == "probability":
        return units.parse_percent(value, field=field)
    if unit == "match" and isinstance(value, dict) and "method" in value:
        method = value["method"]
        return {**value, "method": method.upper() if isinstance(method, str) else method}
    return value


def params_from_file(
    kind: str,
    values: Mapping[str, object],
    *,
    where: Callable[[str], str] = str,
) -> dict[str, Any]:
    """The parameters of fault ``kind`` from their file form (names without ``_s``, values
    with units, as in a scenario file or a control-API request) to :attr:`FaultSpec.params`
    form. ``values`` holds only parameters; ``where(name)`` spells a field for errors.

    Raises ScenarioError naming the field."""
    params = {p.toml: p for p in params_of(kind)}
    for name, value in values.items():
        if name not in params:
            raise ScenarioError(
                where(name),
                value,
                f"the parameters of a {kind} fault: " + (", ".join(params) or "none"),
                problem=f"is not a parameter of a {kind} fault",
            )
    converted = {
        params[name].key: _file_value(params[name].unit, value, where(name))
        for name, value in values.items()
    }
    try:
        return normalize_params(kind, converted)
    except ScenarioError as exc:  # name the field as the file spells it
        key = exc.field.removeprefix("params.")
        name = next((p.toml for p in params.values() if p.key == key), key)
        if exc.problem == "is missing":
            raise check.missing(where(name), exc.allowed) from None
        raise ScenarioError(where(name), exc.value, exc.allowed, problem=exc.problem) from None
