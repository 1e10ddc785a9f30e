"""The demo's acceptance figures, read from results documents.

- ``people_goodput_ratio``: the people class's goodput (successful answers within its
  client timeout) over its offered requests, for the whole run.
- ``p99_ms``: the people class's p99 response time (coordinated-omission corrected).
- ``recovery_s``: seconds from the end of the payments fault until goodput is back: the
  first timeline interval from which ``hold`` consecutive intervals each have goodput >=
  ``ratio`` x offered; ``None`` when that never happens before the run ends. Only people
  send traffic after the fault (the scraper's burst is over), so the whole-run timeline
  is theirs.
- ``knee_rps``: from the ramp at the start of a run, the offered rate (from the schedule,
  not the noisy per-second count) at the first interval where two consecutive intervals
  fail: goodput below ``ratio`` x offered or p99 above the SLO. ``None`` when the ramp
  never fails (the service held the whole ramp).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["knee_from_ramp", "people_goodput_ratio", "people_p99_ms", "recovery_s"]

PEOPLE = "people"


def people_goodput_ratio(doc: Mapping[str, Any], cls: str = PEOPLE) -> float | None:
    section = doc.get("by_class", {}).get(cls)
    if not section or not section.get("offered"):
        return None
    return float(section["goodput"]) / float(section["offered"])


def people_p99_ms(doc: Mapping[str, Any], cls: str = PEOPLE) -> float | None:
    section = doc.get("by_class", {}).get(cls)
    if not section:
        return None
    value = (section.get("latency_ms") or {}).get("p99")
    return None if value is None else float(value)


def _healthy(row: Mapping[str, Any], ratio: float) -> bool:
    offered = row.get("offered") or 0
    return offered == 0 or (row.get("goodput") or 0) >= ratio * offered


def recovery_s(
    doc: Mapping[str, Any], fault_end_s: float, *, ratio: float = 0.9, hold: int = 3
) -> float | None:
    rows = [r for r in doc.get("timeline", ()) if r["t_s"] + r["dt_s"] > fault_end_s]
    rows = [r for r in rows if r.get("offered")]  # the drain after the schedule ends
    for i in range(len(rows) - hold + 1):
        if all(_healthy(r, ratio) for r in rows[i : i + hold]):
            return max(0.0, float(rows[i]["t_s"]) - fault_end_s)
    return None


def knee_from_ramp(
    doc: Mapping[str, Any],
    rate_at: Callable[[float], float],
    ramp_end_s: float,
    *,
    slo_ms: float,
    ratio: float = 0.9,
    start_s: float = 1.0,
) -> float | None:
    rows: Sequence[Mapping[str, Any]] = [
        r
        for r in doc.get("timeline", ())
        if r["t_s"] >= start_s and r["t_s"] + r["dt_s"] <= ramp_end_s
    ]

    def failing(row: Mapping[str, Any]) -> bool:
        p99 = row.get("latency_p99_ms")
        return not _healthy(row, ratio) or (p99 is not None and p99 > slo_ms)

    for a, b in itertools.pairwise(rows):
        if failing(a) and failing(b):
            return rate_at(float(a["t_s"]))
    return None
