"""Exact merging of results documents from several workers or machines."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from ..errors import ResultsError
from ._document import (
    COUNT_FIELDS,
    FAMILIES,
    ROW_FAMILIES,
    build_section,
    document_histograms,
    histogram_key,
    load_results,
    make_document,
    make_row,
    scope_histograms,
    split_endpoint_key,
)
from ._hdr import Histogram, decode_histogram
from ._thresholds import evaluate_all

__all__ = ["merge_results"]


def _sum_counts(sections: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    total = dict.fromkeys(COUNT_FIELDS, 0)
    for sec in sections:
        for name in COUNT_FIELDS:
            total[name] += int(sec[name])
    return total


def _merge_into(target: dict[str, Histogram], key: str, hist: Histogram) -> None:
    if key in target:
        target[key].merge(hist)
    else:
        target[key] = hist.copy()


def merge_results(
    docs: Iterable[Mapping[str, Any] | str | os.PathLike[str]],
) -> dict[str, Any]:
    """Combine documents of one run (worker processes, segments, machines) exactly.

    Counts add; histograms merge bucket by bucket; every percentile is recomputed from the
    merged histograms (never averaged); timeline rows with the same ``t_s`` are summed (their
    histograms merged, ``in_flight`` summed). The documents are taken to share a common
    start (segments of one schedule): ``started_at`` is the earliest, ``duration_s`` the
    longest, and rates are recomputed over it. ``faults`` are the union, ``server`` the first
    non-empty one, the scenario the first document's; the thresholds of every document are
    re-evaluated on the merged figures.

    Documents of different ``kind`` or ``interval_s``, or whose classes have different
    timeouts, are refused with a :class:`~brownout.errors.ResultsError`.
    """
    loaded = [load_results(d) for d in docs]
    if not loaded:
        raise ResultsError("documents", [], "at least one results document")
    first = loaded[0]
    for i, doc in enumerate(loaded[1:], start=1):
        if doc["kind"] != first["kind"]:
            raise ResultsError(
                f"documents[{i}].kind", doc["kind"], f"{first['kind']!r} like documents[0]"
            )
        if doc["interval_s"] != first["interval_s"]:
            raise ResultsError(
                f"documents[{i}].interval_s",
                doc["interval_s"],
                f"{first['interval_s']!r} like documents[0] (timelines align by interval)",
            )
    interval_s = float(first["interval_s"])
    duration_s = max(float(d["duration_s"]) for d in loaded)
    starts = [d["started_at"] for d in loaded if d["started_at"]]
    started_at = min(starts, key=datetime.fromisoformat) if starts else None

    # Histograms: exact merge of every per-endpoint histogram.
    hists: dict[str, Histogram] = {}
    for doc in loaded:
        for key, hist in document_histograms(doc).items():
            _merge_into(hists, key, hist)

    timeouts: dict[str, Any] = {}
    for i, doc in enumerate(loaded):
        for name, sec in doc["by_class"].items():
            if name in timeouts and timeouts[name] != sec["timeout_s"]:
                raise ResultsError(
                    f"documents[{i}].by_class.{name}.timeout_s",
                    sec["timeout_s"],
                    f"{timeouts[name]!r} like the other documents (goodput depends on it)",
                )
            timeouts.setdefault(name, sec["timeout_s"])

    by_endpoint: dict[str, Any] = {}
    endpoint_keys = sorted({k for d in loaded for k in d["by_endpoint"]})
    for key in endpoint_keys:
        class_name, endpoint = split_endpoint_key(key)
        counts = _sum_counts(d["by_endpoint"][key] for d in loaded if key in d["by_endpoint"])
        own = {f: hists[histogram_key(f, class_name, endpoint)] for f in FAMILIES}
        by_endpoint[key] = build_section(counts, own, duration_s)
    template = next(iter(hists.values()), None)
    by_class: dict[str, Any] = {}
    for name in sorted(timeouts):
        counts = _sum_counts(d["by_class"][name] for d in loaded if name in d["by_class"])
        scoped = scope_histograms(hists, class_name=name, layout_from=template)
        by_class[name] = build_section(counts, scoped, duration_s, timeout_s=timeouts[name])
    summary = build_section(
        _sum_counts(d["summary"] for d in loaded),
        scope_histograms(hists, layout_from=template),
        duration_s,
    )

    timeline = _merge_timeline(loaded, interval_s)

    faults: list[Any] = []
    seen: set[str] = set()
    for doc in loaded:
        for fault in doc["faults"]:
            key = json.dumps(fault, sort_keys=True)
            if key not in seen:
                seen.add(key)
                faults.append(fault)
    server: Mapping[str, Any] = next((d["server"] for d in loaded if d["server"]), {})

    merged = make_document(
        kind=first["kind"],
        scenario_name=first["scenario"]["name"],
        scenario=first["scenario"]["spec"],
        started_at=started_at,
        duration_s=duration_s,
        interval_s=interval_s,
        summary=summary,
        by_class=by_class,
        by_endpoint=by_endpoint,
        timeline=timeline,
        thresholds=[],
        faults=faults,
        server=server,
        histograms={key: hists[key].encode() for key in sorted(hists)},
    )
    specs: list[dict[str, Any]] = []
    spec_keys: set[tuple[str, str | None, str | None]] = set()
    for doc in loaded:
        for item in doc["thresholds"]:
            spec_key = (item["expr"], item["class"], item["endpoint"])
            if spec_key not in spec_keys:
                spec_keys.add(spec_key)
                specs.append(
                    {"expr": item["expr"], "class": item["class"], "endpoint": item["endpoint"]}
                )
    if specs:
        evaluate_all(specs, merged)
    return merged


def _merge_timeline(loaded: list[dict[str, Any]], interval_s: float) -> list[dict[str, Any]]:
    rows: dict[int, dict[str, Any]] = {}
    for di, doc in enumerate(loaded):
        for ri, row in enumerate(doc["timeline"]):
            k = round(float(row["t_s"]) / interval_s)
            acc = rows.get(k)
            field = f"documents[{di}].timeline[{ri}].histograms"
            decoded = {
                f: decode_histogram(row["histograms"][f], field=f"{field}.{f}")
                for f in ROW_FAMILIES
            }
            if acc is None:
                rows[k] = {
                    "t_s": row["t_s"],
                    "dt_s": row["dt_s"],
                    "counts": {name: int(row[name]) for name in COUNT_FIELDS},
                    "in_flight": row["in_flight"],
                    "hists": decoded,
                }
                continue
            acc["dt_s"] = max(acc["dt_s"], row["dt_s"])
            for name in COUNT_FIELDS:
                acc["counts"][name] += int(row[name])
            if row["in_flight"] is not None:
                acc["in_flight"] = (acc["in_flight"] or 0) + row["in_flight"]
            for f in ROW_FAMILIES:
                acc["hists"][f].merge(decoded[f])
    return [
        make_row(
            rows[k]["t_s"],
            rows[k]["dt_s"],
            counts=rows[k]["counts"],
            response=rows[k]["hists"]["response"],
            send_lag=rows[k]["hists"]["send_lag"],
            in_flight=rows[k]["in_flight"],
        )
        for k in sorted(rows)
    ]
