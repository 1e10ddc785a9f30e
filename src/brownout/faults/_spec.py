"""What a fault is, in the three places it is written: a scenario's fault timeline, the
control API (Toxiproxy's JSON for TCP toxics, ours for HTTP faults) and Python.

TCP faults are :class:`Toxic` s with Toxiproxy's names, units and JSON
(``{"name", "type", "stream", "toxicity", "attributes"}``; latency and jitter in ms,
bandwidth in KB/s, ``slicer.delay`` in microseconds). ``down`` is not a toxic: as in
Toxiproxy it is the proxy's ``enabled`` flag.

HTTP faults are :class:`HttpFault` s; their JSON uses the scenario file's names and units
(``{"name": "pay-503", "kind": "http_abort", "status": 503, "retry_after": "1s",
"probability": "50%", "match": {"method": "POST", "path": "/pay/*"}}``). The decision
logic is sans-IO: :meth:`HttpFaultSet.decide` takes a request's method, path and headers and
the time, and returns the :class:`Action` to apply (or ``None``); the proxy, the httpx
transport and the ASGI wrapper all apply the same actions.

Every parser raises :class:`~brownout.errors.ScenarioError` naming the field, which the
control API turns into a 400 with that field.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from ..errors import BrownoutError, ScenarioError
from ..scenario import HTTP_FAULTS, TCP_FAULTS, FaultSpec, normalize_params, params_from_file
from ..scenario._check import name as check_name
from ..units import parse_duration

__all__ = [
    "TOXIC_TYPES",
    "Action",
    "HttpFault",
    "HttpFaultSet",
    "ProxyConflict",
    "ProxyNotFound",
    "Toxic",
    "fault_from_spec",
]

TOXIC_TYPES = tuple(t for t in TCP_FAULTS if t != "down")
STREAMS = ("downstream", "upstream")

# Toxiproxy's attributes per toxic type: (attribute, scenario param key, factor from the
# scenario's base unit to Toxiproxy's, default). Durations are seconds in the scenario.
_ATTRIBUTES: dict[str, tuple[tuple[str, str, float, float], ...]] = {
    "latency": (("latency", "latency_s", 1e3, 0), ("jitter", "jitter_s", 1e3, 0)),
    "bandwidth": (("rate", "rate_kb_s", 1, 0),),
    "slow_close": (("delay", "delay_s", 1e3, 0),),
    "timeout": (("timeout", "timeout_s", 1e3, 0),),
    "reset_peer": (("timeout", "timeout_s", 1e3, 0),),
    "slicer": (
        ("average_size", "average_size", 1, 0),
        ("size_variation", "size_variation", 1, 0),
        ("delay", "delay_s", 1e6, 0),
    ),
    "limit_data": (("bytes", "bytes", 1, 0),),
}
_ATTRIBUTE_UNITS = {
    ("latency", "latency"): "milliseconds",
    ("latency", "jitter"): "milliseconds",
    ("bandwidth", "rate"): "KB/s",
    ("slow_close", "delay"): "milliseconds",
    ("timeout", "timeout"): "milliseconds (0 = never)",
    ("reset_peer", "timeout"): "milliseconds",
    ("slicer", "average_size"): "bytes",
    ("slicer", "size_variation"): "bytes",
    ("slicer", "delay"): "microseconds",
    ("limit_data", "bytes"): "bytes",
}


# The largest attribute accepted: Toxiproxy stores int64; past 2**31 ms (about 25 days)
# a delay means nothing in a test and would overflow timers.
_MAX_ATTRIBUTE = 2**31 - 1


def _number(
    field_name: str,
    value: object,
    allowed: str,
    *,
    minimum: float = 0.0,
    maximum: float = math.inf,
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(field_name, value, allowed)
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range
        raise ScenarioError(field_name, value, allowed) from None
    if not math.isfinite(number) or number < minimum or number > maximum:
        raise ScenarioError(field_name, value, allowed)
    return number


def _mapping(field_name: str, value: object, allowed: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ScenarioError(field_name, value, allowed)
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Toxic:
    """A TCP fault with Toxiproxy's semantics. ``toxicity`` is the probability, rolled once
    per connection, that the toxic acts on that connection; ``attributes`` are in
    Toxiproxy's units (see the module doc). Integers where Toxiproxy has integers."""

    name: str
    type: str
    stream: str = "downstream"
    toxicity: float = 1.0
    attributes: Mapping[str, int | float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # type and stream first: from_json derives the default name from them
        if self.type not in TOXIC_TYPES:
            raise ScenarioError("type", self.type, "one of " + ", ".join(TOXIC_TYPES))
        if self.stream not in STREAMS:
            raise ScenarioError("stream", self.stream, "downstream or upstream")
        check_name("name", self.name, example="latency_downstream")
        toxicity = _number("toxicity", self.toxicity, "a number in [0, 1]")
        if toxicity > 1:
            raise ScenarioError("toxicity", self.toxicity, "a number in [0, 1]")
        object.__setattr__(self, "toxicity", toxicity)
        object.__setattr__(self, "attributes", self._checked(self.attributes))

    def _checked(self, given: Mapping[str, object]) -> dict[str, int | float]:
        spec = _ATTRIBUTES[self.type]
        names = [a for a, _, _, _ in spec]
        given = _mapping("attributes", given, "an object of " + ", ".join(names))
        for key in given:
            if key not in names:
                raise ScenarioError(
                    f"attributes.{key}",
                    given[key],
                    f"the attributes of a {self.type} toxic: " + ", ".join(names),
                    problem="is not an attribute of this toxic",
                )
        out: dict[str, int | float] = {}
        for attr, _, _, default in spec:
            unit = _ATTRIBUTE_UNITS[(self.type, attr)]
            value = given.get(attr, default)
            minimum = 1.0 if (self.type, attr) == ("slicer", "average_size") else 0.0
            if self.type == "bandwidth":
                number = _number(
                    f"attributes.{attr}",
                    value,
                    f"a number from 0 to {_MAX_ATTRIBUTE} of {unit}",
                    maximum=_MAX_ATTRIBUTE,
                )
                out[attr] = int(number) if number.is_integer() else number
            else:
                number = _number(
                    f"attributes.{attr}",
                    value,
                    f"an integer from {minimum:g} to {_MAX_ATTRIBUTE} of {unit}",
                    minimum=minimum,
                    maximum=_MAX_ATTRIBUTE,
                )
                if not number.is_integer():
                    raise ScenarioError(f"attributes.{attr}", value, f"an integer of {unit}")
                out[attr] = int(number)
        if self.type == "slicer" and out["size_variation"] > out["average_size"]:
            raise ScenarioError(
                "attributes.size_variation", out["size_variation"], "a size <= average_size"
            )
        return out

    @classmethod
    def from_json(cls, doc: object, *, name: str | None = None) -> Toxic:
        """A toxic from Toxiproxy's JSON. ``name`` defaults to ``<type>_<stream>``."""
        allowed = 'a toxic such as {"type": "latency", "attributes": {"latency": 1000}}'
        doc = _mapping("toxic", doc, allowed)
        for key in doc:
            if key not in ("name", "type", "stream", "toxicity", "attributes"):
                raise ScenarioError(
                    key,
                    doc[key],
                    "name, type, stream, toxicity, attributes",
                    problem="is not a toxic field",
                )
        if "type" not in doc:
            raise ScenarioError(
                "type", None, "one of " + ", ".join(TOXIC_TYPES), problem="is missing"
            )
        stream = doc.get("stream", "downstream")
        toxic_name = doc.get("name")
        if toxic_name is None or toxic_name == "":  # Toxiproxy's default name
            toxic_name = name or f"{doc['type']}_{stream}"
        attributes = doc.get("attributes")
        return cls(
            name=toxic_name,
            type=doc["type"],
            stream=stream,
            toxicity=doc.get("toxicity", 1.0),
            attributes={} if attributes is None else attributes,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": dict(self.attributes),
        }

    def updated(self, doc: object) -> Toxic:
        """This toxic with the fields of a Toxiproxy update request (``attributes`` merge
        over the current ones; ``name`` and ``type`` cannot change)."""
        doc = _mapping("toxic", doc, 'an object such as {"attributes": {"latency": 500}}')
        for key in ("name", "type"):
            if key in doc and doc[key] != getattr(self, key):
                raise ScenarioError(key, doc[key], f"{getattr(self, key)} (it cannot change)")
        attributes = {
            **self.attributes,
            **_mapping(
                "attributes",
                {} if doc.get("attributes") is None else doc["attributes"],
                "an object of attributes",
            ),
        }
        return Toxic(
            name=self.name,
            type=self.type,
            stream=doc.get("stream", self.stream),
            toxicity=doc.get("toxicity", self.toxicity),
            attributes=attributes,
        )

    # -- in seconds, for the proxy ---------------------------------------------------------

    def seconds(self, attr: str) -> float:
        """A duration attribute in seconds (``slicer.delay`` is in microseconds)."""
        factor = 1e6 if (self.type, attr) == ("slicer", "delay") else 1e3
        return float(self.attributes[attr]) / factor


@dataclass(frozen=True, slots=True)
class Action:
    """What to do to one request: wait ``delay_s`` first, then ``kind`` (``"delay"`` only
    waits; ``"abort"`` answers ``status`` without reaching the upstream, with
    ``Retry-After`` when ``retry_after_s`` is set; ``"reset"`` passes the request on and
    resets the connection mid-response; ``"slow_body"`` trickles the response body at
    ``rate_kb_s``). ``faults`` names the faults that fired."""

    kind: str
    delay_s: float = 0.0
    status: int = 0
    retry_after_s: float | None = None
    rate_kb_s: float = 0.0
    faults: tuple[str, ...] = ()

    def abort_response(self) -> bytes:
        """The bytes of the HTTP/1.1 response an ``abort`` answers with."""
        reason = _REASONS.get(self.status, "Error")
        body = f'{{"error": "injected by brownout", "status": {self.status}}}'.encode()
        lines = [
            f"HTTP/1.1 {self.status} {reason}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        ]
        if self.retry_after_s is not None:
            lines.append(f"Retry-After: {max(math.ceil(self.retry_after_s), 0)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


_REASONS = {
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_HTTP_FAULT_KEYS = ("name", "kind", "duration")


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpFault:
    """One HTTP fault: ``kind`` (``http_delay``, ``http_abort``, ``http_reset``,
    ``http_slow_body``) and ``params`` in :attr:`~brownout.scenario.FaultSpec.params` form
    (seconds, defaults filled in, including ``probability`` and the optional ``match``).
    ``duration_s`` is how long the fault lasts, which ``ramp_to`` needs (the delay grows
    linearly from ``delay`` to ``ramp_to`` over it)."""

    name: str
    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)
    duration_s: float | None = None

    def __post_init__(self) -> None:
        check_name("name", self.name, example="pay-503")
        if self.kind not in HTTP_FAULTS:
            raise ScenarioError("kind", self.kind, "one of " + ", ".join(HTTP_FAULTS))
        if not isinstance(self.params, Mapping):
            raise ScenarioError("params", self.params, "a mapping of the fault's parameters")
        object.__setattr__(self, "params", normalize_params(self.kind, dict(self.params)))
        if self.duration_s is not None:
            _number("duration", self.duration_s, "a duration > 0", minimum=1e-9)
        if "ramp_to_s" in self.params and self.duration_s is None:
            raise ScenarioError(
                "duration",
                None,
                "a duration: ramp_to grows the delay over it",
                problem="is missing",
            )

    @classmethod
    def from_json(cls, doc: object) -> HttpFault:
        """A fault from the control API's JSON (the scenario file's names and units)."""
        allowed = '{"name": "slow-pay", "kind": "http_delay", "delay": "300ms"}'
        doc = _mapping("fault", doc, allowed)
        kind = doc.get("kind")
        if kind not in HTTP_FAULTS:
            raise ScenarioError("kind", kind, "one of " + ", ".join(HTTP_FAULTS))
        params = params_from_file(kind, {k: v for k, v in doc.items() if k not in _HTTP_FAULT_KEYS})
        duration_s = None
        if doc.get("duration") is not None:
            duration_s = parse_duration(doc["duration"], field="duration")
        name = doc.get("name")
        return cls(
            name=kind if name is None or name == "" else name,
            kind=kind,
            params=params,
            duration_s=duration_s,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        for key, value in self.params.items():
            out[key.removesuffix("_s").replace("rate_kb", "rate")] = value
        if self.duration_s is not None:
            out["duration"] = self.duration_s
        return out

    def matches(self, method: str, path: str, headers: Mapping[str, str]) -> bool:
        """Whether a request is in scope: ``method`` exact, ``path`` (without its query)
        a glob, each ``header`` present with that exact value (names case-insensitive;
        ``headers`` keyed by lower-case names)."""
        match = self.params.get("match")
        if not match:
            return True
        if "method" in match and match["method"] != method.upper():
            return False
        if "path" in match and not fnmatchcase(path.split("?", 1)[0], match["path"]):
            return False
        for name, value in match.get("header", {}).items():
            if headers.get(name.lower()) != value:
                return False
        return True

    def delay_at(self, elapsed_s: float, rng: random.Random) -> float:
        """The delay of ``http_delay`` ``elapsed_s`` after the fault began."""
        params = self.params
        base = float(params["delay_s"])
        ramp_to = params.get("ramp_to_s")
        if ramp_to is not None and self.duration_s:
            base += (float(ramp_to) - base) * min(max(elapsed_s / self.duration_s, 0.0), 1.0)
        jitter = float(params.get("jitter_s", 0.0))
        if jitter:
            base += rng.uniform(-jitter, jitter)
        return max(base, 0.0)


class HttpFaultSet:
    """The HTTP faults active on one proxy or wrapper, in the order they were added.

    Each matching fault rolls its own ``probability`` per request. Delays of the faults that
    fire add up; the first that fires among ``abort``, ``reset`` and ``slow_body`` decides
    what happens after the delay. ``rng`` makes the rolls reproducible."""

    def __init__(
        self,
        faults: Iterable[HttpFault] = (),
        *,
        rng: random.Random | None = None,
        now: float = 0.0,
    ) -> None:
        """``faults`` start at ``now`` (the origin of their ramps): pass the clock's time."""
        self.rng = rng if rng is not None else random.Random()
        self._faults: dict[str, tuple[HttpFault, float]] = {}
        for fault in faults:
            self.add(fault, now)

    def __len__(self) -> int:
        return len(self._faults)

    def __iter__(self) -> Any:
        return (fault for fault, _ in self._faults.values())

    def get(self, name: str) -> HttpFault | None:
        entry = self._faults.get(name)
        return entry[0] if entry is not None else None

    def add(self, fault: HttpFault, now: float) -> None:
        """Activate ``fault`` from ``now`` (the origin of its ramp); replaces one of the
        same name."""
        self._faults[fault.name] = (fault, now)

    def remove(self, name: str) -> bool:
        return self._faults.pop(name, None) is not None

    def clear(self) -> None:
        self._faults.clear()

    def decide(
        self, method: str, path: str, headers: Mapping[str, str], now: float
    ) -> Action | None:
        """The action for one request (``headers`` keyed by lower-case names), or ``None``."""
        if not self._faults:
            return None
        rng = self.rng
        delay = 0.0
        final: Action | None = None
        fired: list[str] = []
        for fault, since in self._faults.values():
            if not fault.matches(method, path, headers):
                continue
            if rng.random() >= fault.params["probability"]:
                continue
            kind = fault.kind
            if kind == "http_delay":
                delay += fault.delay_at(now - since, rng)
                fired.append(fault.name)
            elif final is None:
                fired.append(fault.name)
                params = fault.params
                if kind == "http_abort":
                    final = Action(
                        "abort", status=params["status"], retry_after_s=params.get("retry_after_s")
                    )
                elif kind == "http_reset":
                    final = Action("reset")
                else:
                    final = Action("slow_body", rate_kb_s=params["rate_kb_s"])
        if not fired:
            return None
        if final is None:
            return Action("delay", delay_s=delay, faults=tuple(fired))
        return Action(
            final.kind,
            delay_s=delay,
            status=final.status,
            retry_after_s=final.retry_after_s,
            rate_kb_s=final.rate_kb_s,
            faults=tuple(fired),
        )


def fault_from_spec(spec: FaultSpec, name: str) -> Toxic | HttpFault | None:
    """The runtime form of a scenario fault: a :class:`Toxic`, an :class:`HttpFault`, or
    ``None`` for ``down`` (the proxy is disabled instead)."""
    params = spec.params
    if spec.kind == "down":
        return None
    if spec.layer == "http":
        return HttpFault(name=name, kind=spec.kind, params=params, duration_s=spec.duration_s)
    attributes: dict[str, int | float] = {}
    for attr, key, factor, default in _ATTRIBUTES[spec.kind]:
        value = float(params.get(key, default)) * factor
        attributes[attr] = value if spec.kind == "bandwidth" else round(value)
    return Toxic(
        name=name,
        type=spec.kind,
        stream=params.get("direction", "downstream"),
        toxicity=params.get("probability", 1.0),
        attributes=attributes,
    )


class ProxyNotFound(BrownoutError, KeyError):
    """No proxy (or toxic, or HTTP fault) of that name: the control API answers 404."""

    def __init__(self, what: str, name: str) -> None:
        self.what = what
        self.name = name
        super().__init__(f"{what} not found: {name}")

    def __str__(self) -> str:  # KeyError would quote the message
        return f"{self.what} not found: {self.name}"


class ProxyConflict(BrownoutError):
    """A proxy (or toxic, or HTTP fault) of that name exists already, or the listen address
    is taken: the control API answers 409."""
