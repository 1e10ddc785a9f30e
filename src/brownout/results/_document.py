"""The results document: one JSON format for ``brownout load``, ``brownout sim`` and the demo.

See ``docs/results.md`` for the format. This module builds sections from counts and
histograms, validates documents (:func:`load_results`) and writes them atomically
(:func:`write_results`). Every latency figure is read from a histogram; class and global
histograms are exact merges of the per-endpoint ones, never averages of percentiles.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import ResultsError
from ._hdr import HOUR_US, Histogram, LogInterval, decode_histogram, write_interval_log

__all__ = [
    "COUNT_FIELDS",
    "FAMILIES",
    "FAMILY_FIELDS",
    "KINDS",
    "PERCENTILE_FIELDS",
    "ROW_FAMILIES",
    "SCHEMA_VERSION",
    "build_section",
    "document_histograms",
    "histogram_key",
    "latency_figures",
    "load_results",
    "make_document",
    "make_row",
    "row_figures",
    "scope_histograms",
    "split_endpoint_key",
    "timeline_intervals",
    "validate_results",
    "write_results",
    "write_timeline_log",
]

SCHEMA_VERSION = 1
KINDS = ("load", "sim")
COUNT_FIELDS = (
    "offered",
    "sent",
    "ok",
    "errors",
    "shed",
    "dropped",
    "timeouts",
    "retries",
    "goodput",
)
"""Counts kept in every section and timeline row; they add up when documents merge."""

FAMILIES = ("response", "service", "send_lag")
"""Histogram families: response time from the intended start (CO-corrected), service time
from the actual send, and send lag (actual send - intended start)."""

FAMILY_FIELDS = {"response": "latency_ms", "service": "service_ms", "send_lag": "send_lag_ms"}
PERCENTILE_FIELDS = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))
LATENCY_FIELDS = ("p50", "p90", "p99", "p999", "max", "mean")
ROW_FIGURES = (
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "send_lag_p99_ms",
)
ROW_FAMILIES = ("response", "send_lag")


def histogram_key(family: str, class_name: str, endpoint: str) -> str:
    """``"<family>/<class>/<endpoint>"``: class names hold no ``/``, endpoint names may."""
    return f"{family}/{class_name}/{endpoint}"


def split_endpoint_key(key: str) -> tuple[str, str]:
    """``"class/endpoint"`` -> ``(class, endpoint)``, split at the first ``/``."""
    class_name, _, endpoint = key.partition("/")
    return class_name, endpoint


def latency_figures(hist: Histogram) -> dict[str, float | None]:
    """p50, p90, p99, p999, max and mean of ``hist`` in milliseconds (``None`` when empty).

    Histogram values are microseconds; ``ms = us / 1000``; the mean is rounded to 1 us.
    """
    if hist.count == 0:
        return dict.fromkeys(LATENCY_FIELDS, None)
    values = hist.percentiles([p for _, p in PERCENTILE_FIELDS])
    out: dict[str, float | None] = {
        name: v / 1000 for (name, _), v in zip(PERCENTILE_FIELDS, values, strict=True)
    }
    out["max"] = hist.max / 1000
    out["mean"] = round(hist.mean) / 1000
    return out


def _rate(n: int, duration_s: float) -> float:
    return n / duration_s if duration_s > 0 else 0.0


def build_section(
    counts: Mapping[str, int],
    hists: Mapping[str, Histogram],
    duration_s: float,
    *,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """A summary-shaped section from its counts and its three histograms.

    ``offered_rps = offered / duration_s``; ``throughput_rps = (ok + errors + shed) /
    duration_s`` (logical requests answered, whatever the status); ``goodput_rps = goodput /
    duration_s`` with ``goodput`` the successes within the class's client timeout. Rates are
    0.0 for a zero duration.
    """
    c = {name: int(counts.get(name, 0)) for name in COUNT_FIELDS}
    section: dict[str, Any] = {
        "offered": c["offered"],
        "offered_rps": _rate(c["offered"], duration_s),
        "sent": c["sent"],
        "ok": c["ok"],
        "errors": c["errors"],
        "shed": c["shed"],
        "dropped": c["dropped"],
        "timeouts": c["timeouts"],
        "retries": c["retries"],
        "goodput": c["goodput"],
        "throughput_rps": _rate(c["ok"] + c["errors"] + c["shed"], duration_s),
        "goodput_rps": _rate(c["goodput"], duration_s),
    }
    for family in FAMILIES:
        section[FAMILY_FIELDS[family]] = latency_figures(hists[family])
    if timeout_s is not None:
        section["timeout_s"] = timeout_s
    return section


def row_figures(response: Histogram, send_lag: Histogram) -> dict[str, float | None]:
    """The latency figures of one timeline row, in milliseconds (``None`` when empty)."""
    if response.count:
        p50, p90, p99 = response.percentiles([50, 90, 99])
        latency: list[float | None] = [p50 / 1000, p90 / 1000, p99 / 1000, response.max / 1000]
    else:
        latency = [None, None, None, None]
    lag = send_lag.value_at_percentile(99) / 1000 if send_lag.count else None
    return dict(zip(ROW_FIGURES, [*latency, lag], strict=True))


def make_row(
    t_s: float,
    dt_s: float,
    *,
    counts: Mapping[str, int],
    response: Histogram,
    send_lag: Histogram,
    in_flight: int | None,
) -> dict[str, Any]:
    """One timeline row: its counts, figures, in-flight sample and encoded histograms."""
    return {
        "t_s": t_s,
        "dt_s": dt_s,
        **{name: int(counts.get(name, 0)) for name in COUNT_FIELDS},
        **row_figures(response, send_lag),
        "in_flight": in_flight,
        "histograms": {"response": response.encode(), "send_lag": send_lag.encode()},
    }


def document_histograms(doc: Mapping[str, Any]) -> dict[str, Histogram]:
    """Every histogram of ``doc["histograms"]``, decoded."""
    return {
        key: decode_histogram(text, field=f"histograms[{key!r}]")
        for key, text in doc["histograms"].items()
    }


def scope_histograms(
    hists: Mapping[str, Histogram],
    *,
    class_name: str | None = None,
    endpoint: str | None = None,
    layout_from: Histogram | None = None,
) -> dict[str, Histogram]:
    """Exact merge, per family, of the per-endpoint histograms in scope.

    No class and no endpoint: everything; a class: its endpoints; an endpoint without a
    class: that endpoint in every class.
    """
    out: dict[str, Histogram] = {}
    for family in FAMILIES:
        merged: Histogram | None = None
        for key, hist in hists.items():
            fam, _, rest = key.partition("/")
            if fam != family:
                continue
            cls, ep = split_endpoint_key(rest)
            if class_name is not None and cls != class_name:
                continue
            if endpoint is not None and ep != endpoint:
                continue
            if merged is None:
                merged = hist.copy()
            else:
                merged.merge(hist)
        if merged is None:
            template = layout_from
            merged = (
                Histogram(template.highest_trackable_value, template.significant_digits)
                if template is not None
                else Histogram(HOUR_US, 3)
            )
        out[family] = merged
    return out


def make_document(
    *,
    kind: str,
    scenario_name: str,
    scenario: Mapping[str, Any] | None,
    started_at: str | None,
    duration_s: float,
    interval_s: float,
    summary: dict[str, Any],
    by_class: dict[str, Any],
    by_endpoint: dict[str, Any],
    timeline: list[dict[str, Any]],
    thresholds: list[dict[str, Any]],
    faults: Iterable[Mapping[str, Any]],
    server: Mapping[str, Any] | None,
    histograms: dict[str, str],
) -> dict[str, Any]:
    """Assemble a schema-1 document; ``scenario`` is stored as a JSON copy."""
    try:
        spec = json.loads(json.dumps(dict(scenario or {}), allow_nan=False))
        fault_list = json.loads(json.dumps([dict(f) for f in faults], allow_nan=False))
        server_doc = json.loads(json.dumps(dict(server or {}), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ResultsError(
            "scenario/faults/server", str(exc), "JSON-serializable (no NaN or infinity)"
        ) from None
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "scenario": {"name": scenario_name, "spec": spec},
        "started_at": started_at,
        "duration_s": duration_s,
        "interval_s": interval_s,
        "summary": summary,
        "by_class": by_class,
        "by_endpoint": by_endpoint,
        "timeline": timeline,
        "thresholds": thresholds,
        "faults": fault_list,
        "server": server_doc,
        "histograms": histograms,
    }


# -- validation ------------------------------------------------------------------------------


class _Checker:
    """Type checks that raise one ResultsError naming the field's path."""

    def __init__(self, source: str | None) -> None:
        self.source = source

    def fail(self, path: str, value: object, allowed: str) -> ResultsError:
        return ResultsError(path, value, allowed, source=self.source)

    def get(self, obj: Mapping[str, Any], key: str, path: str) -> Any:
        if key not in obj:
            raise self.fail(f"{path}{key}", "<missing>", "present")
        return obj[key]

    def mapping(self, value: object, path: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(path, value, "an object")
        return value

    def list_(self, value: object, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(path, value, "a list")
        return value

    def count(self, value: object, path: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self.fail(path, value, "an integer >= 0")
        return value

    def number(self, value: object, path: str, *, nullable: bool = False) -> float | None:
        if value is None and nullable:
            return None
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
            or value < 0
        ):
            allowed = "a finite number >= 0" + (" or null" if nullable else "")
            raise self.fail(path, value, allowed)
        return float(value)

    def string(self, value: object, path: str, *, nullable: bool = False) -> str | None:
        if value is None and nullable:
            return None
        if not isinstance(value, str):
            raise self.fail(path, value, "a string" + (" or null" if nullable else ""))
        return value

    def section(self, sec: object, path: str, *, timeout: bool = False) -> None:
        sec = self.mapping(sec, path)
        for name in COUNT_FIELDS:
            self.count(self.get(sec, name, path + "."), f"{path}.{name}")
        for name in ("offered_rps", "throughput_rps", "goodput_rps"):
            self.number(self.get(sec, name, path + "."), f"{path}.{name}")
        for field in FAMILY_FIELDS.values():
            figures = self.mapping(self.get(sec, field, path + "."), f"{path}.{field}")
            for name in LATENCY_FIELDS:
                value = self.get(figures, name, f"{path}.{field}.")
                self.number(value, f"{path}.{field}.{name}", nullable=True)
        if timeout:
            self.number(self.get(sec, "timeout_s", path + "."), f"{path}.timeout_s")


def validate_results(doc: object, *, source: str | None = None) -> dict[str, Any]:
    """Check ``doc`` against schema 1; return it (as a dict) or raise one ResultsError.

    Every histogram is decoded, so a document that validates merges.
    """
    ck = _Checker(source)
    d = ck.mapping(doc, "document")
    version = ck.get(d, "schema_version", "")
    if version != SCHEMA_VERSION:
        raise ck.fail("schema_version", version, f"{SCHEMA_VERSION} (this brownout reads 1)")
    kind = ck.get(d, "kind", "")
    if kind not in KINDS:
        raise ck.fail("kind", kind, "one of " + ", ".join(repr(k) for k in KINDS))
    scenario = ck.mapping(ck.get(d, "scenario", ""), "scenario")
    ck.string(ck.get(scenario, "name", "scenario."), "scenario.name")
    ck.mapping(ck.get(scenario, "spec", "scenario."), "scenario.spec")
    started = ck.string(ck.get(d, "started_at", ""), "started_at", nullable=True)
    if started is not None:
        try:
            datetime.fromisoformat(started)
        except ValueError:
            raise ck.fail("started_at", started, "an ISO 8601 time or null") from None
    ck.number(ck.get(d, "duration_s", ""), "duration_s")
    interval = ck.number(ck.get(d, "interval_s", ""), "interval_s")
    if not interval:
        raise ck.fail("interval_s", d["interval_s"], "a number > 0")
    ck.section(ck.get(d, "summary", ""), "summary")
    by_class = ck.mapping(ck.get(d, "by_class", ""), "by_class")
    for name, sec in by_class.items():
        if not name or "/" in name:
            raise ck.fail(f"by_class[{name!r}]", name, "a class name without '/'")
        ck.section(sec, f"by_class.{name}", timeout=True)
    by_endpoint = ck.mapping(ck.get(d, "by_endpoint", ""), "by_endpoint")
    hists = ck.mapping(ck.get(d, "histograms", ""), "histograms")
    for key, sec in by_endpoint.items():
        class_name, endpoint = split_endpoint_key(key)
        if class_name not in by_class or not endpoint:
            raise ck.fail(
                f"by_endpoint[{key!r}]", key, "'<class>/<endpoint>' with a class in by_class"
            )
        ck.section(sec, f"by_endpoint.{key}")
        for family in FAMILIES:
            hkey = histogram_key(family, class_name, endpoint)
            if hkey not in hists:
                raise ck.fail(f"histograms[{hkey!r}]", "<missing>", "present for every endpoint")
    for key, text in hists.items():
        family, _, rest = key.partition("/")
        if family not in FAMILIES or rest not in by_endpoint:
            raise ck.fail(
                f"histograms[{key!r}]", key, "'<family>/<class>/<endpoint>' of a by_endpoint key"
            )
        decode_histogram(text, field=f"histograms[{key!r}]")
    timeline = ck.list_(ck.get(d, "timeline", ""), "timeline")
    previous = -math.inf
    for i, raw_row in enumerate(timeline):
        path = f"timeline[{i}]"
        row = ck.mapping(raw_row, path)
        t = float(ck.number(ck.get(row, "t_s", path + "."), f"{path}.t_s") or 0.0)
        if t <= previous:
            raise ck.fail(f"{path}.t_s", t, f"greater than the previous row's ({previous})")
        previous = t
        ck.number(ck.get(row, "dt_s", path + "."), f"{path}.dt_s")
        for name in COUNT_FIELDS:
            ck.count(ck.get(row, name, path + "."), f"{path}.{name}")
        for name in ROW_FIGURES:
            ck.number(ck.get(row, name, path + "."), f"{path}.{name}", nullable=True)
        in_flight = ck.get(row, "in_flight", path + ".")
        if in_flight is not None:
            ck.count(in_flight, f"{path}.in_flight")
        row_hists = ck.mapping(ck.get(row, "histograms", path + "."), f"{path}.histograms")
        for family in ROW_FAMILIES:
            text = ck.get(row_hists, family, f"{path}.histograms.")
            decode_histogram(text, field=f"{path}.histograms.{family}")
    for i, raw_item in enumerate(ck.list_(ck.get(d, "thresholds", ""), "thresholds")):
        path = f"thresholds[{i}]"
        item = ck.mapping(raw_item, path)
        ck.string(ck.get(item, "expr", path + "."), f"{path}.expr")
        ck.string(ck.get(item, "class", path + "."), f"{path}.class", nullable=True)
        ck.string(ck.get(item, "endpoint", path + "."), f"{path}.endpoint", nullable=True)
        observed = ck.get(item, "observed", path + ".")
        if observed is not None and (
            not isinstance(observed, int | float) or isinstance(observed, bool)
        ):
            raise ck.fail(f"{path}.observed", observed, "a number or null")
        if not isinstance(ck.get(item, "passed", path + "."), bool):
            raise ck.fail(f"{path}.passed", item["passed"], "true or false")
    for i, fault in enumerate(ck.list_(ck.get(d, "faults", ""), "faults")):
        ck.mapping(fault, f"faults[{i}]")
    ck.mapping(ck.get(d, "server", ""), "server")
    return dict(d)


def load_results(source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """Read and validate a results document from a path (or validate a dict).

    Raises :class:`~brownout.errors.ResultsError` with one line naming the field.
    """
    if isinstance(source, Mapping):
        return validate_results(source)
    name = os.fspath(source)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise ResultsError(
            "file", name, f"a readable file ({exc.strerror or exc})", source=name
        ) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsError(
            "document", f"line {exc.lineno} column {exc.colno}", f"JSON ({exc.msg})", source=name
        ) from None
    return validate_results(doc, source=name)


def write_results(path: str | os.PathLike[str], doc: Mapping[str, Any]) -> None:
    """Validate ``doc`` and write it as JSON, atomically: a temporary file in the same folder,
    flushed to disk, then renamed over ``path``. A reader never sees half a document."""
    validate_results(doc)
    target = Path(os.fspath(path))
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- interval logs -----------------------------------------------------------------------------


def timeline_intervals(doc: Mapping[str, Any], *, family: str = "response") -> list[LogInterval]:
    """The timeline of ``doc`` as interval-log entries of one family (``response`` or
    ``send_lag``), tagged with the family name."""
    if family not in ROW_FAMILIES:
        raise ResultsError("family", family, "'response' or 'send_lag'")
    return [
        LogInterval(
            float(row["t_s"]),
            float(row["dt_s"]),
            decode_histogram(row["histograms"][family], field=f"timeline[{i}].histograms"),
            family,
        )
        for i, row in enumerate(doc["timeline"])
    ]


def write_timeline_log(fh: Any, doc: Mapping[str, Any]) -> int:
    """Write the response-time and send-lag timeline of ``doc`` as an HdrHistogram interval log
    (tags ``response`` and ``send_lag``; values in microseconds, maxima shown in ms).
    Returns the number of lines written."""
    start = 0.0
    if doc.get("started_at"):
        start = datetime.fromisoformat(doc["started_at"]).timestamp()
    entries = [
        entry
        for pair in zip(
            timeline_intervals(doc, family="response"),
            timeline_intervals(doc, family="send_lag"),
            strict=True,
        )
        for entry in pair
    ]
    return write_interval_log(fh, entries, start_time_s=start)
