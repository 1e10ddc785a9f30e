"""The numbers the report draws, read from validated results documents.

- People and bots: a class is a bot when the scenario says ``kind = "bot"``; when the
  document carries no kind for it (a synthetic or older document), when its name contains
  ``bot``, ``scraper``, ``crawl`` or ``spider``. Every other class is people.
- ``people_goodput_ratio = sum(goodput) / sum(offered)`` over the people classes: successful
  people requests within their client timeout per request offered (``None`` when nothing was
  offered).
- Timeline rates are ``count / dt_s`` of each row, placed at the middle of the row's
  interval, ``t_s + dt_s / 2`` (seconds from the run's start).
- The latency spectrum is read from the exact merge of the run's per-endpoint response-time
  histograms: at percentile ``p`` (0..100) its x is ``1 / (1 - p/100)`` and its y the
  histogram's value at ``p`` in ms (HdrHistogram's definition).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..results import HOUR_US, Histogram

__all__ = [
    "OUTCOME_FIELDS",
    "SPECTRUM_MARKS",
    "FaultWindow",
    "RunFigures",
    "class_kinds",
    "fault_windows",
    "is_bot",
    "people_classes",
    "response_histogram",
    "response_histograms",
    "run_figures",
    "spectrum_points",
    "timeline",
]

OUTCOME_FIELDS = ("ok", "errors", "shed", "timeouts", "dropped")
SPECTRUM_MARKS = (50.0, 90.0, 99.0, 99.9, 99.99, 99.999)
"""Percentiles marked (and labelled on the x axis) on the latency spectrum."""
_BOT_WORDS = ("bot", "scraper", "crawl", "spider")


def class_kinds(doc: Mapping[str, Any]) -> dict[str, str]:
    """Class name -> ``kind`` (``"human"`` or ``"bot"``) as the document's scenario spec says."""
    spec = doc.get("scenario", {}).get("spec")
    classes = spec.get("classes") if isinstance(spec, Mapping) else None
    kinds: dict[str, str] = {}
    if isinstance(classes, list):
        for c in classes:
            if isinstance(c, Mapping) and isinstance(c.get("name"), str):
                kind = c.get("kind")
                if isinstance(kind, str):
                    kinds[c["name"]] = kind
    return kinds


def is_bot(name: str, kinds: Mapping[str, str]) -> bool:
    """Whether class ``name`` is bot traffic (see the module docstring for the rule)."""
    if name in kinds:
        return kinds[name] == "bot"
    lowered = name.lower()
    return any(word in lowered for word in _BOT_WORDS)


def people_classes(doc: Mapping[str, Any]) -> list[str]:
    """The names of the people (non-bot) classes of ``doc``, in document order."""
    kinds = class_kinds(doc)
    return [name for name in doc["by_class"] if not is_bot(name, kinds)]


def response_histograms(doc: Mapping[str, Any]) -> dict[str, Histogram]:
    """The per-endpoint response-time histograms of ``doc``, decoded, keyed
    ``"class/endpoint"`` (the document's keys without their ``response/`` family)."""
    return {
        key.partition("/")[2]: Histogram.decode(text)
        for key, text in doc["histograms"].items()
        if key.partition("/")[0] == "response"
    }


def response_histogram(
    hists: Mapping[str, Histogram], classes: Sequence[str] | None = None
) -> Histogram:
    """The exact merge of the per-endpoint response-time histograms of ``classes`` (every
    class when ``None``); empty (one hour, 3 digits) when there is none."""
    merged: Histogram | None = None
    for key, hist in hists.items():
        if classes is not None and key.partition("/")[0] not in classes:
            continue
        if merged is None:
            merged = hist.copy()
        else:
            merged.merge(hist)
    return merged if merged is not None else Histogram(HOUR_US, 3)


def _p99_ms(hist: Histogram) -> float | None:
    return hist.value_at_percentile(99) / 1000 if hist.count else None


@dataclass(frozen=True, slots=True)
class RunFigures:
    """The headline figures of one run (counts are logical requests; times in ms)."""

    offered: int
    offered_rps: float
    goodput_rps: float
    ok: int
    shed: int
    errors: int
    timeouts: int
    retries: int
    dropped: int
    sent: int
    people: tuple[str, ...]
    people_offered: int
    people_goodput: int
    people_goodput_ratio: float | None
    p99_ms: float | None
    people_p99_ms: float | None
    thresholds_passed: int
    thresholds_total: int


def run_figures(doc: Mapping[str, Any], hists: Mapping[str, Histogram]) -> RunFigures:
    """The figures of the report's run table, from a validated document."""
    s = doc["summary"]
    people = people_classes(doc)
    offered = sum(int(doc["by_class"][c]["offered"]) for c in people)
    goodput = sum(int(doc["by_class"][c]["goodput"]) for c in people)
    thresholds = [t for t in doc.get("thresholds", []) if isinstance(t, Mapping)]
    return RunFigures(
        offered=int(s["offered"]),
        offered_rps=float(s["offered_rps"]),
        goodput_rps=float(s["goodput_rps"]),
        ok=int(s["ok"]),
        shed=int(s["shed"]),
        errors=int(s["errors"]),
        timeouts=int(s["timeouts"]),
        retries=int(s["retries"]),
        dropped=int(s["dropped"]),
        sent=int(s["sent"]),
        people=tuple(people),
        people_offered=offered,
        people_goodput=goodput,
        people_goodput_ratio=goodput / offered if offered else None,
        p99_ms=s["latency_ms"]["p99"],
        people_p99_ms=_p99_ms(response_histogram(hists, people)) if people else None,
        thresholds_passed=sum(1 for t in thresholds if t.get("passed") is True),
        thresholds_total=len(thresholds),
    )


TIMELINE_COUNTS = ("offered", "goodput", "ok", "shed", "errors", "timeouts", "dropped", "retries")
TIMELINE_LATENCY = ("latency_p50_ms", "latency_p90_ms", "latency_p99_ms")


def timeline(doc: Mapping[str, Any]) -> dict[str, list[tuple[float, float | None]]]:
    """Per-second rates of each count in :data:`TIMELINE_COUNTS` and the latency figures of
    :data:`TIMELINE_LATENCY` (ms, ``None`` for an interval without requests), as
    ``(x, y)`` points at the middle of each row's interval. Rows of zero length are skipped."""
    out: dict[str, list[tuple[float, float | None]]] = {
        name: [] for name in (*TIMELINE_COUNTS, *TIMELINE_LATENCY)
    }
    for row in doc["timeline"]:
        dt = float(row["dt_s"])
        if dt <= 0:
            continue
        x = float(row["t_s"]) + dt / 2
        for name in TIMELINE_COUNTS:
            out[name].append((x, int(row[name]) / dt))
        for name in TIMELINE_LATENCY:
            value = row[name]
            out[name].append((x, None if value is None else float(value)))
    return out


def time_span_s(doc: Mapping[str, Any]) -> float:
    """The end of the run in seconds: its duration or its last row's end, whichever is later."""
    end = float(doc["duration_s"])
    if doc["timeline"]:
        last = doc["timeline"][-1]
        end = max(end, float(last["t_s"]) + float(last["dt_s"]))
    return end


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """A fault as it happened: from ``start_s`` to ``end_s`` (seconds from the run's start)."""

    name: str
    kind: str
    target: str
    start_s: float
    end_s: float
    cleared: bool


def _time(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def fault_windows(doc: Mapping[str, Any]) -> list[FaultWindow]:
    """The document's faults that happened, as time windows.

    The start is ``started_s`` (when the control API confirmed the fault); a fault whose
    ``started_s`` is null never happened and is left out. The end is ``ended_s``, or the end
    of the run when it is null or missing (``cleared`` is then false). Records without
    ``started_s`` fall back to ``start_s`` / ``at_s`` and ``end_s`` / ``at_s + duration_s``.
    """
    end_of_run = time_span_s(doc)
    out = []
    for f in doc.get("faults", []):
        if not isinstance(f, Mapping):
            continue
        if "started_s" in f:
            start = _time(f["started_s"])
        else:
            start = _time(f.get("start_s", f.get("at_s")))
        if start is None:
            continue
        if "ended_s" in f:
            end = _time(f["ended_s"])
        elif "end_s" in f:
            end = _time(f["end_s"])
        else:
            at, length = _time(f.get("at_s")), _time(f.get("duration_s"))
            end = at + length if at is not None and length is not None else None
        cleared = end is not None
        out.append(
            FaultWindow(
                name=str(f.get("name") or f.get("kind") or "fault"),
                kind=str(f.get("kind") or ""),
                target=str(f.get("target") or ""),
                start_s=start,
                end_s=max(end if end is not None else end_of_run, start),
                cleared=cleared,
            )
        )
    return out


def spectrum_points(hist: Histogram, *, points: int = 160) -> list[tuple[float, float]]:
    """``(percentile, ms)`` pairs for the latency spectrum of ``hist``, by rising percentile.

    The percentiles are ``100 * (1 - 1/x)`` for ``x`` log-spaced from 1 to the number of
    recorded values (at most 10**6; beyond it a percentile is only the maximum), plus the
    :data:`SPECTRUM_MARKS` that fall in that range. Values are HdrHistogram's value at each
    percentile, in ms. Empty when the histogram is.
    """
    count = hist.count
    if count == 0:
        return []
    x_max = float(min(max(count, 2), 10**6))
    top = math.log10(x_max)
    grid = {round(100 * (1 - 1 / 10 ** (top * k / (points - 1))), 9) for k in range(points)}
    grid.update(p for p in SPECTRUM_MARKS if 1 / (1 - p / 100) <= x_max * (1 + 1e-9))
    ps = sorted(min(max(p, 0.0), 100.0) for p in grid)
    values = hist.percentiles(ps)
    return [(p, v / 1000) for p, v in zip(ps, values, strict=True)]


def spectrum_x(percentile: float) -> float:
    """The spectrum's x for a percentile (0..100): ``1 / (1 - p/100)``."""
    return 1 / (1 - percentile / 100) if percentile < 100 else math.inf
