"""What the front door did, as events and as metrics.

:class:`GuardMiddleware` emits two events of its own on its ``events`` hook:
:class:`RequestRejected` (it answered in place of the app) and :class:`RequestCompleted`
(an admitted request finished). Two subscribers turn that stream into metrics:

- :class:`PrometheusMetrics` keeps counters and a latency histogram in plain integers and
  renders the Prometheus text exposition format (version 0.0.4) itself, together with
  gauges read from the policies at scrape time (limit, in flight, queued). No
  ``prometheus_client`` is needed; the middleware serves the text at ``metrics_path``.
- :class:`OpenTelemetryMetrics` records the same figures through the OpenTelemetry
  metrics API when the ``opentelemetry-api`` package is installed (imported lazily, on
  construction); without it every method is a no-op and ``enabled`` is False.

Histogram buckets are fixed (:data:`LATENCY_BUCKETS_S`, seconds), so a scrape is cheap and
series from several replicas add up bucket by bucket.
"""

from __future__ import annotations

import bisect
import importlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..events import CallRejected, Event

__all__ = [
    "LATENCY_BUCKETS_S",
    "Gauge",
    "OpenTelemetryMetrics",
    "PrometheusMetrics",
    "RequestCompleted",
    "RequestRejected",
]

# Upper bounds (seconds) of the latency histogram buckets; +Inf is implied.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class RequestRejected(CallRejected):
    """The middleware answered a request itself instead of passing it to the app.

    ``reason`` is one of ``rate_limit``, ``shield_limit``, ``shield_block``,
    ``shield_challenge``, ``limit``, ``queue_full``, ``queue_timeout``, ``deadline`` (or a
    reason a concurrency limit names); ``status`` the HTTP status sent (429, 503, 403 or what
    a challenge answered); ``retry_after_s`` the ``Retry-After`` sent (0 when none);
    ``route`` the pattern of the matching route configuration, or None.
    """

    status: int
    retry_after_s: float
    route: str | None


@dataclass(frozen=True, slots=True)
class RequestCompleted(Event):
    """An admitted request finished.

    ``status`` is the response status (0 when the app raised before starting a response),
    ``duration_s`` the time from its arrival at the middleware (queueing included) to the
    last byte of its response, in seconds; ``dropped`` is True when it failed from overload
    (the app raised, answered 503 or 504, or it finished past its deadline): the signal that
    makes a concurrency limit back off. ``criticality`` is the name of the criticality set
    for it (``"critical"``), or None when neither a header nor a rule set one.
    """

    status: int
    duration_s: float
    dropped: bool
    route: str | None
    criticality: str | None


@dataclass(frozen=True, slots=True)
class Gauge:
    """One gauge sample read at scrape time: ``name`` without the ``brownout_guard_``
    prefix, its ``labels`` and its ``value``."""

    name: str
    help: str
    labels: Mapping[str, str]
    value: float


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class PrometheusMetrics:
    """Counters and a latency histogram fed by the middleware's events (a subscriber).

    Metric names (all prefixed ``brownout_guard_``):

    - ``requests_total{outcome="admitted"|"rejected"}``: admitted requests are counted
      when they complete;
    - ``rejected_total{reason=...}``: rejections by reason;
    - ``dropped_total``: admitted requests that failed from overload (see
      :class:`RequestCompleted`);
    - ``request_duration_seconds``: histogram of admitted requests' response time, from
      arrival (queueing included) to the last byte, over :data:`LATENCY_BUCKETS_S`;
    - the gauges the middleware reads at scrape time (``concurrency_limit``, ``in_flight``,
      ``queued`` per limit, ``dimmer`` when there is a dimmer).

    Counts are plain integers changed on the event loop thread; ``render`` reads them there
    too, so no lock is needed.
    """

    __slots__ = ("_buckets", "_count", "_dropped", "_rejected", "_sum")

    def __init__(self) -> None:
        self._buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)  # the last one is +Inf
        self._count = 0
        self._sum = 0.0
        self._dropped = 0
        self._rejected: dict[str, int] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, RequestCompleted):
            self.observe(event.duration_s, dropped=event.dropped)
        elif isinstance(event, RequestRejected):
            self._rejected[event.reason] = self._rejected.get(event.reason, 0) + 1

    def observe(self, duration_s: float, *, dropped: bool = False) -> None:
        """Count one completed request that took ``duration_s`` seconds."""
        self._buckets[bisect.bisect_left(LATENCY_BUCKETS_S, duration_s)] += 1
        self._count += 1
        self._sum += duration_s
        if dropped:
            self._dropped += 1

    @property
    def admitted(self) -> int:
        return self._count

    @property
    def rejected(self) -> Mapping[str, int]:
        return dict(self._rejected)

    def render(self, gauges: Iterable[Gauge] = ()) -> str:
        """The Prometheus text exposition (format 0.0.4) of every metric and ``gauges``."""
        p = "brownout_guard_"
        lines: list[str] = []
        rejected_total = sum(self._rejected.values())
        lines += [
            f"# HELP {p}requests_total Requests seen, admitted (counted on completion) or rejected.",
            f"# TYPE {p}requests_total counter",
            f'{p}requests_total{{outcome="admitted"}} {self._count}',
            f'{p}requests_total{{outcome="rejected"}} {rejected_total}',
            f"# HELP {p}rejected_total Requests the middleware answered itself, by reason.",
            f"# TYPE {p}rejected_total counter",
        ]
        lines += [
            f"{p}rejected_total{_labels({'reason': reason})} {n}"
            for reason, n in sorted(self._rejected.items())
        ]
        lines += [
            f"# HELP {p}dropped_total Admitted requests that failed from overload "
            "(error, 503/504 or past their deadline).",
            f"# TYPE {p}dropped_total counter",
            f"{p}dropped_total {self._dropped}",
            f"# HELP {p}request_duration_seconds Response time of admitted requests "
            "(arrival to last byte, queueing included).",
            f"# TYPE {p}request_duration_seconds histogram",
        ]
        cumulative = 0
        for bound, n in zip(LATENCY_BUCKETS_S, self._buckets, strict=False):
            cumulative += n
            lines.append(
                f'{p}request_duration_seconds_bucket{{le="{_number(bound)}"}} {cumulative}'
            )
        lines += [
            f'{p}request_duration_seconds_bucket{{le="+Inf"}} {self._count}',
            f"{p}request_duration_seconds_sum {_number(self._sum)}",
            f"{p}request_duration_seconds_count {self._count}",
        ]
        by_name: dict[str, list[Gauge]] = {}
        for gauge in gauges:
            by_name.setdefault(gauge.name, []).append(gauge)
        for name, samples in by_name.items():
            lines += [f"# HELP {p}{name} {samples[0].help}", f"# TYPE {p}{name} gauge"]
            lines += [f"{p}{name}{_labels(g.labels)} {_number(g.value)}" for g in samples]
        return "\n".join(lines) + "\n"


class OpenTelemetryMetrics:
    """Record the middleware's events with the OpenTelemetry metrics API, when installed.

    Instruments (meter ``brownout``, or the ``meter`` given):

    - counter ``brownout.guard.requests`` (attribute ``outcome``: admitted, rejected);
    - counter ``brownout.guard.rejected`` (attribute ``reason``);
    - histogram ``brownout.guard.request.duration`` (unit ``s``; attribute ``status_class``
      such as ``2xx``), with :data:`LATENCY_BUCKETS_S` as the advised bucket boundaries;
    - counter ``brownout.guard.events`` for every other event a policy emits (attributes
      ``event``, the class name, ``policy`` and, when the event has one, ``reason``);
    - observable gauges ``brownout.guard.limit``, ``.in_flight``, ``.queued`` (and
      ``brownout.guard.dimmer``) read through ``gauges()`` at collection time, once
      :meth:`observe_gauges` was called (the middleware does that).

    Without ``opentelemetry-api`` installed (and no ``meter`` given) the object is inert:
    ``enabled`` is False and every call returns at once.
    """

    __slots__ = ("_duration", "_events", "_meter", "_rejected", "_requests", "enabled")

    def __init__(self, meter: Any = None) -> None:
        self.enabled = False
        self._meter: Any = None
        if meter is None:
            try:
                otel_metrics = importlib.import_module("opentelemetry.metrics")
            except ImportError:
                return
            meter = otel_metrics.get_meter("brownout")
        self._meter = meter
        self._requests = meter.create_counter(
            "brownout.guard.requests", unit="{request}", description="Requests by outcome."
        )
        self._rejected = meter.create_counter(
            "brownout.guard.rejected",
            unit="{request}",
            description="Requests the middleware answered itself, by reason.",
        )
        self._events = meter.create_counter(
            "brownout.guard.events", unit="{event}", description="Decisions of guard policies."
        )
        try:
            self._duration = meter.create_histogram(
                "brownout.guard.request.duration",
                unit="s",
                description="Response time of admitted requests, queueing included.",
                explicit_bucket_boundaries_advisory=list(LATENCY_BUCKETS_S),
            )
        except TypeError:  # an API older than 1.23 has no bucket advice
            self._duration = meter.create_histogram(
                "brownout.guard.request.duration",
                unit="s",
                description="Response time of admitted requests, queueing included.",
            )
        self.enabled = True

    def __call__(self, event: Event) -> None:
        if not self.enabled:
            return
        if isinstance(event, RequestCompleted):
            self._requests.add(1, {"outcome": "admitted"})
            self._duration.record(event.duration_s, {"status_class": f"{event.status // 100}xx"})
        elif isinstance(event, RequestRejected):
            self._requests.add(1, {"outcome": "rejected"})
            self._rejected.add(1, {"reason": event.reason})
        else:
            attributes = {"event": type(event).__name__, "policy": event.policy}
            reason = getattr(event, "reason", None)
            if isinstance(reason, str):
                attributes["reason"] = reason
            self._events.add(1, attributes)

    def observe_gauges(self, gauges: Callable[[], Iterable[Gauge]]) -> None:
        """Register observable gauges that read ``gauges()`` at each collection."""
        if not self.enabled:
            return
        observation = importlib.import_module("opentelemetry.metrics").Observation

        def reader(name: str) -> Callable[[Any], Iterable[Any]]:
            def observe(_options: Any) -> Iterable[Any]:
                return [observation(g.value, dict(g.labels)) for g in gauges() if g.name == name]

            return observe

        for name, otel_name, unit, description in (
            ("concurrency_limit", "brownout.guard.limit", "{request}", "Concurrency limit."),
            ("in_flight", "brownout.guard.in_flight", "{request}", "Requests holding a permit."),
            ("queued", "brownout.guard.queued", "{request}", "Requests waiting for a permit."),
            ("dimmer", "brownout.guard.dimmer", "1", "Share of optional work served."),
        ):
            self._meter.create_observable_gauge(
                otel_name, callbacks=[reader(name)], unit=unit, description=description
            )
