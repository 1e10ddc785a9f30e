"""``render_report``: one self-contained HTML page from results documents, ledgers and a
summary.

The page needs nothing from the network: CSS and a small script are inline, the charts are
inline SVG drawn here (see ``_svg``), and a Content-Security-Policy forbids every fetch
(``default-src 'none'``) and every script but the page's own (allowed by its SHA-256), so
even a string that slipped through escaping could neither load nor run anything. Every
string read from a document goes through ``html.escape``.

Sections, in order (each a ``<section id=...>``): ``runs`` (the headline table),
``throughput`` (offered, goodput, shed, errors, timeouts over time with fault windows),
``latency`` (p50/p90/p99 over time), ``classes`` (people and bots outcomes),
``predicted`` (simulated vs measured runs and the summary's predictions), ``spectrum``
(the percentile curve) and ``findings`` (the ledgers' findings and endpoint costs).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._version import __version__
from ..errors import InvalidConfig
from ..results import Histogram, validate_results
from ._figures import (
    SPECTRUM_MARKS,
    FaultWindow,
    RunFigures,
    class_kinds,
    fault_windows,
    is_bot,
    response_histogram,
    response_histograms,
    run_figures,
    spectrum_points,
    spectrum_x,
    time_span_s,
    timeline,
)
from ._inputs import SUMMARY_FIGURES, check_ledger, check_summary, run_labels
from ._svg import (
    HEIGHT,
    MARGIN_BOTTOM,
    MARGIN_LEFT,
    MARGIN_RIGHT,
    MARGIN_TOP,
    WIDTH,
    Axis,
    Band,
    Bar,
    Marker,
    Segment,
    Series,
    esc,
    legend,
    line_chart,
    nice_linear,
    nice_log,
    stacked_bars,
)

__all__ = ["SECTIONS", "render_report"]

SECTIONS = (
    ("runs", "Runs"),
    ("throughput", "Offered, goodput and shed over time"),
    ("latency", "Latency over time"),
    ("classes", "People and bots"),
    ("predicted", "Predicted vs measured"),
    ("spectrum", "Latency spectrum"),
    ("findings", "Findings"),
)
"""``(id, heading)`` of every section of the page, in order."""

# Colour-blind-safe (Okabe-Ito) run colours; past eight runs they repeat with a dash.
RUN_COLOURS = (
    "#0072b2",
    "#d55e00",
    "#009e73",
    "#cc79a7",
    "#e69f00",
    "#56b4e9",
    "#4d4d4d",
    "#b8860b",
)
SIM_DASH = "7 4"
# (key, label, colour, dash) of the throughput series; drawn in this order.
THROUGHPUT_SERIES = (
    ("offered", "offered", "#4d4d4d", "5 3"),
    ("goodput", "goodput", "#009e73", None),
    ("shed", "shed", "#e69f00", None),
    ("errors", "errors", "#d55e00", None),
    ("timeouts", "timeouts", "#cc79a7", None),
    ("dropped", "dropped", "#8c564b", None),
    ("retries", "retries", "#56b4e9", "2 3"),
)
ALWAYS_DRAWN = ("offered", "goodput", "shed", "errors", "timeouts")
LATENCY_SERIES = (
    ("latency_p50_ms", "p50", "#56b4e9", None),
    ("latency_p90_ms", "p90", "#0072b2", None),
    ("latency_p99_ms", "p99", "#d55e00", None),
)
# (key, label, colour) of the stacked outcome bars.
OUTCOME_SEGMENTS = (
    ("goodput", "goodput", "#009e73"),
    ("ok_late", "ok, too late", "#8fd1b9"),
    ("shed", "shed", "#e69f00"),
    ("errors", "errors", "#d55e00"),
    ("timeouts", "timeouts", "#cc79a7"),
    ("dropped", "dropped", "#8c564b"),
    ("unresolved", "unresolved", "#c8c8c8"),
)
SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
DASH = "\u2014"


@dataclass(frozen=True, slots=True)
class _Run:
    label: str
    doc: Mapping[str, Any]
    hists: Mapping[str, Histogram]
    figures: RunFigures
    colour: str
    dash: str | None
    faults: list[FaultWindow]
    series: dict[str, list[tuple[float, float | None]]]
    end_s: float

    @property
    def kind(self) -> str:
        return str(self.doc["kind"])


# -- formatting --------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    if value is None:
        return DASH
    if value < 1:
        return f"{value:.3f}"
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def _pct(ratio: float | None) -> str:
    return DASH if ratio is None else f"{ratio * 100:.1f}%"


def _count(n: int, of: int) -> str:
    return f"{n:,} ({n / of * 100:.1f}%)" if of else f"{n:,}"


def _number(value: object) -> str:
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 160 else text[:159] + "\u2026"


def _tick_seconds(v: float) -> str:
    return f"{v:g}"


def _tick_ms(v: float) -> str:
    if v >= 1000:
        return f"{v / 1000:g} s"
    return f"{v:g} ms"


def _tick_percentile(x: float) -> str:
    if x <= 1:
        return "0%"
    return f"{round(100 * (1 - 1 / x), 6):g}%"


# -- inputs -------------------------------------------------------------------------------


def _labels(docs: Sequence[Mapping[str, Any]], labels: Sequence[str] | None) -> list[str]:
    if labels is None:
        return run_labels(docs, [None] * len(docs))
    out = [] if isinstance(labels, str) else list(labels)
    if len(out) != len(docs) or not all(isinstance(x, str) for x in out):
        raise InvalidConfig(
            "render_report", "labels", labels, f"{len(docs)} strings, one per document"
        )
    return out


def _runs(docs: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> list[_Run]:
    hists = [response_histograms(d) for d in docs]
    runs = []
    for i, (doc, label, h) in enumerate(zip(docs, labels, hists, strict=True)):
        dash = SIM_DASH if doc["kind"] == "sim" else None
        if i >= len(RUN_COLOURS) and dash is None:
            dash = "2 3"
        runs.append(
            _Run(
                label=label,
                doc=doc,
                hists=h,
                figures=run_figures(doc, h),
                colour=RUN_COLOURS[i % len(RUN_COLOURS)],
                dash=dash,
                faults=fault_windows(doc),
                series=timeline(doc),
                end_s=time_span_s(doc),
            )
        )
    return runs


# -- charts -------------------------------------------------------------------------------


def _x_axis_time(end_s: float) -> Axis:
    """Seconds from 0 to the end of the longest run, with round ticks inside."""
    end = max(end_s, 1.0)
    _, ticks = nice_linear(end, target=8)
    inside = tuple(t for t in ticks if t <= end * (1 + 1e-9))
    return Axis(0.0, end, MARGIN_LEFT, WIDTH - MARGIN_RIGHT, ticks=inside, fmt=_tick_seconds)


def _y_linear(hi: float) -> Axis:
    top, ticks = nice_linear(hi)
    return Axis(0.0, top, HEIGHT - MARGIN_BOTTOM, MARGIN_TOP, ticks=ticks, fmt=lambda v: f"{v:g}")


def _y_log_ms(values: Sequence[float]) -> Axis:
    positive = [v for v in values if v > 0]
    lo, hi = (min(positive), max(positive)) if positive else (1.0, 1000.0)
    lo, hi, ticks = nice_log(lo, hi)
    return Axis(lo, hi, HEIGHT - MARGIN_BOTTOM, MARGIN_TOP, log=True, ticks=ticks, fmt=_tick_ms)


def _bands(faults: Sequence[FaultWindow]) -> list[Band]:
    out = []
    for f in faults:
        what = ", ".join(x for x in (f.kind, f"on {f.target}" if f.target else "") if x)
        until = f"{f.end_s:.1f} s" if f.cleared else "the end of the run (not cleared)"
        title = f"fault {f.name}" + (f" ({what})" if what else "")
        out.append(Band(f.start_s, f.end_s, f.name, f"{title}: from {f.start_s:.1f} s to {until}"))
    return out


def _union_faults(runs: Sequence[_Run]) -> list[FaultWindow]:
    seen: dict[tuple[str, str, float, float], FaultWindow] = {}
    for run in runs:
        for f in run.faults:
            seen.setdefault((f.name, f.kind, round(f.start_s, 1), round(f.end_s, 1)), f)
    return list(seen.values())


def _figure(chart: str, caption: str, legend_html: str = "", *, wide: bool = False) -> str:
    css = "chart-box wide" if wide else "chart-box"
    return f'<figure class="{css}">{chart}{legend_html}<figcaption>{esc(caption)}</figcaption></figure>'


def _table(head: str, rows: Sequence[str], *, css: str = "data", attrs: str = "") -> str:
    """A table in a box that scrolls sideways on narrow screens."""
    return (
        f'<div class="scroll"><table class="{css}"{attrs}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _run_legend(runs: Sequence[_Run]) -> str:
    return legend([(r.label, f"{r.label} ({r.kind})", r.colour, r.dash) for r in runs])


def _chart_grid(figures: Sequence[str]) -> str:
    return '<div class="charts">' + "".join(figures) + "</div>"


def _throughput_section(runs: Sequence[_Run]) -> str:
    end = max(r.end_s for r in runs)
    x = _x_axis_time(end)
    peak = max(
        (y for r in runs for key, *_ in THROUGHPUT_SERIES for _, y in r.series[key] if y),
        default=1.0,
    )
    y = _y_linear(peak)
    figures = []
    for r in runs:
        series, items = [], []
        for key, label, colour, dash in THROUGHPUT_SERIES:
            points = r.series[key]
            if key not in ALWAYS_DRAWN and not any(v for _, v in points):
                continue
            series.append(
                Series(key, label, colour, points, dash, 2.2 if key == "goodput" else 1.6)
            )
            items.append((key, label, colour, dash))
        chart = line_chart(
            chart="throughput",
            title=f"{r.label}: requests per second",
            series=series,
            x=x,
            y=y,
            x_label="time since start (s)",
            y_label="requests/s",
            bands=_bands(r.faults),
            run=r.label,
        )
        figures.append(
            _figure(
                chart,
                f"{r.label} ({r.kind}): offered, goodput and failures per second",
                legend(items),
            )
        )
    if len(runs) > 1:
        chart = line_chart(
            chart="goodput-compare",
            title="goodput per second, every run",
            series=[
                Series(r.label, r.label, r.colour, r.series["goodput"], r.dash, 2.0) for r in runs
            ],
            x=x,
            y=y,
            x_label="time since start (s)",
            y_label="goodput/s",
            bands=_bands(_union_faults(runs)),
        )
        figures.append(_figure(chart, "Goodput of every run on one axis", _run_legend(runs)))
    intro = (
        "<p>Per second of each run: requests offered by the schedule, goodput (successes "
        "within the client's timeout), and what failed: shed (429/503), errors, timeouts, "
        "dropped (never sent) and retries. Shaded: the fault windows, from when the fault "
        "was applied to when it was cleared. All charts share their axes.</p>"
    )
    return intro + _chart_grid(figures)


def _latency_section(runs: Sequence[_Run]) -> str:
    end = max(r.end_s for r in runs)
    x = _x_axis_time(end)
    values = [
        v for r in runs for key, *_ in LATENCY_SERIES for _, v in r.series[key] if v is not None
    ]
    y = _y_log_ms(values)
    figures = []
    for r in runs:
        series = [
            Series(key, label, colour, r.series[key], dash)
            for key, label, colour, dash in LATENCY_SERIES
        ]
        chart = line_chart(
            chart="latency",
            title=f"{r.label}: response time percentiles",
            series=series,
            x=x,
            y=y,
            x_label="time since start (s)",
            y_label="response time (log scale)",
            bands=_bands(r.faults),
            run=r.label,
        )
        figures.append(
            _figure(
                chart,
                f"{r.label} ({r.kind}): p50, p90 and p99 of the requests completed in each interval",
                legend([(k, lab, c, d) for k, lab, c, d in LATENCY_SERIES]),
            )
        )
    if len(runs) > 1:
        chart = line_chart(
            chart="p99-compare",
            title="p99 response time, every run",
            series=[
                Series(r.label, r.label, r.colour, r.series["latency_p99_ms"], r.dash, 2.0)
                for r in runs
            ],
            x=x,
            y=y,
            x_label="time since start (s)",
            y_label="p99 (log scale)",
            bands=_bands(_union_faults(runs)),
        )
        figures.append(_figure(chart, "p99 of every run on one axis", _run_legend(runs)))
    intro = (
        "<p>Response time is measured from each request's intended start (corrected for "
        "coordinated omission), per interval of completion; a timeout counts at the moment "
        "the client gave up.</p>"
    )
    return intro + _chart_grid(figures)


def _class_rows(run: _Run) -> list[tuple[str, bool, Mapping[str, Any]]]:
    kinds = class_kinds(run.doc)
    return [(name, is_bot(name, kinds), sec) for name, sec in run.doc["by_class"].items()]


def _classes_section(runs: Sequence[_Run]) -> str:
    bars = []
    rows = []
    for r in runs:
        for name, bot, sec in _class_rows(r):
            offered = int(sec["offered"])
            parts = {
                "goodput": int(sec["goodput"]),
                "ok_late": max(int(sec["ok"]) - int(sec["goodput"]), 0),
                "shed": int(sec["shed"]),
                "errors": int(sec["errors"]),
                "timeouts": int(sec["timeouts"]),
                "dropped": int(sec["dropped"]),
            }
            resolved = sum(parts.values())
            parts["unresolved"] = max(offered - resolved, 0)
            whole = max(offered, resolved)
            who = "bots" if bot else "people"
            label = f"{r.label} \u00b7 {name} ({who})"
            segments = [
                Segment(
                    key,
                    parts[key] / whole if whole else 0.0,
                    colour,
                    f"{label}: {seg_label} {_count(parts[key], whole)}",
                )
                for key, seg_label, colour in OUTCOME_SEGMENTS
            ]
            bars.append(Bar(label, r.colour, segments))
            latency = sec["latency_ms"]
            rows.append(
                "<tr>"
                f'<td><span class="dot" style="background:{r.colour}"></span>{esc(r.label)}</td>'
                f"<td>{esc(name)}</td><td>{who}</td>"
                f'<td class="num">{offered:,}</td>'
                f'<td class="num">{_pct(parts["goodput"] / offered if offered else None)}</td>'
                + "".join(
                    f'<td class="num">{_count(parts[k], offered)}</td>'
                    for k in ("shed", "errors", "timeouts", "dropped")
                )
                + f'<td class="num">{_ms(latency["p50"])}</td>'
                f'<td class="num">{_ms(latency["p99"])}</td>'
                f'<td class="num">{_number(sec.get("timeout_s"))}</td>'
                "</tr>"
            )
    chart = stacked_bars(
        chart="classes",
        title="outcomes by traffic class, share of offered requests",
        bars=bars,
        x_label="share of the class's offered requests",
    )
    items = [(k, lab, c, None) for k, lab, c in OUTCOME_SEGMENTS]
    table = _table(
        "<th>run</th><th>class</th><th>who</th><th>offered</th><th>goodput</th><th>shed</th>"
        "<th>errors</th><th>timeouts</th><th>dropped</th><th>p50 ms</th><th>p99 ms</th>"
        "<th>timeout s</th>",
        rows,
    )
    intro = (
        "<p>What happened to each traffic class's requests. A class is bots when the "
        'scenario says <code>kind = "bot"</code> (or, without a kind, when its name says '
        "bot, scraper, crawler or spider); every other class is people. Unresolved: offered "
        "but still in flight when the run ended.</p>"
    )
    return (
        intro
        + _figure(chart, "Outcomes of every class of every run", legend(items), wide=True)
        + table
    )


def _summary_table(summary: Mapping[str, Any]) -> str:
    keys = [k for k in ("naive", "guarded", "predicted") if isinstance(summary.get(k), Mapping)]
    keys += [
        k
        for k, v in summary.items()
        if isinstance(v, Mapping) and k not in keys and any(f in v for f in SUMMARY_FIGURES)
    ]
    if not keys:
        return '<p class="empty">The summary holds no runs (naive, guarded, predicted).</p>'
    columns = list(SUMMARY_FIGURES)
    for k in keys:
        for name, value in summary[k].items():
            if name not in columns and not isinstance(value, Mapping | list):
                columns.append(name)
    heads = {
        "people_goodput_ratio": "people goodput",
        "p99_ms": "p99 ms",
        "recovery_s": "recovery s",
        "knee_rps": "knee req/s",
    }
    head = "<th></th>" + "".join(f"<th>{esc(heads.get(c, c))}</th>" for c in columns)
    rows = []
    for k in keys:
        entry = summary[k]
        cells = []
        for c in columns:
            value = entry.get(c)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if c.endswith("_ratio") and number:
                text = _pct(float(value))
            elif c == "p99_ms" and number:
                text = _ms(float(value))
            else:
                text = _number(value)
            cells.append(f'<td class="num" data-field="{esc(c)}">{esc(text)}</td>')
        rows.append(f'<tr data-row="{esc(k)}"><th>{esc(k)}</th>{"".join(cells)}</tr>')
    return _table(head, rows, attrs=' id="summary-table"')


def _side_by_side(runs: Sequence[_Run]) -> str:
    metrics: list[tuple[str, Callable[[_Run], str]]] = [
        ("kind", lambda r: r.kind),
        ("people goodput", lambda r: _pct(r.figures.people_goodput_ratio)),
        ("goodput req/s", lambda r: f"{r.figures.goodput_rps:,.1f}"),
        ("p99 ms", lambda r: _ms(r.figures.p99_ms)),
        ("people p99 ms", lambda r: _ms(r.figures.people_p99_ms)),
        ("shed", lambda r: _pct(r.figures.shed / r.figures.offered if r.figures.offered else None)),
        (
            "timeouts",
            lambda r: _pct(r.figures.timeouts / r.figures.offered if r.figures.offered else None),
        ),
        (
            "errors",
            lambda r: _pct(r.figures.errors / r.figures.offered if r.figures.offered else None),
        ),
    ]
    head = "<th></th>" + "".join(
        f'<th class="name"><span class="dot" style="background:{r.colour}"></span>'
        f"{esc(r.label)}</th>"
        for r in runs
    )
    rows = [
        f"<tr><th>{esc(name)}</th>"
        + "".join(f'<td class="num">{esc(get(r))}</td>' for r in runs)
        + "</tr>"
        for name, get in metrics
    ]
    return _table(head, rows)


def _predicted_section(runs: Sequence[_Run], summary: Mapping[str, Any] | None) -> str:
    parts = []
    sims = [r for r in runs if r.kind == "sim"]
    loads = [r for r in runs if r.kind == "load"]
    if summary is not None:
        parts.append(
            "<h3>The summary's figures</h3><p>People goodput ratio (people requests that "
            "succeeded within their timeout per request offered), p99, time to recover "
            "after the fault cleared, and the knee (highest sustainable rate), as measured "
            "and as predicted.</p>" + _summary_table(summary)
        )
    if sims and loads:
        end = max(r.end_s for r in runs)
        x = _x_axis_time(end)
        peak = max((v for r in runs for _, v in r.series["goodput"] if v), default=1.0)
        y = _y_linear(peak)
        lat = [v for r in runs for _, v in r.series["latency_p99_ms"] if v is not None]
        goodput = line_chart(
            chart="predicted-goodput",
            title="goodput per second, simulated (dashed) and measured (solid)",
            series=[
                Series(r.label, f"{r.label} ({r.kind})", r.colour, r.series["goodput"], r.dash, 2.0)
                for r in runs
            ],
            x=x,
            y=y,
            x_label="time since start (s)",
            y_label="goodput/s",
            bands=_bands(_union_faults(runs)),
        )
        p99 = line_chart(
            chart="predicted-p99",
            title="p99 response time, simulated (dashed) and measured (solid)",
            series=[
                Series(
                    r.label,
                    f"{r.label} ({r.kind})",
                    r.colour,
                    r.series["latency_p99_ms"],
                    r.dash,
                    2.0,
                )
                for r in runs
            ],
            x=x,
            y=_y_log_ms(lat),
            x_label="time since start (s)",
            y_label="p99 (log scale)",
            bands=_bands(_union_faults(runs)),
        )
        parts.append(
            "<h3>Simulated beside measured</h3>"
            + _chart_grid(
                [
                    _figure(
                        goodput, "Goodput: sim runs dashed, load runs solid", _run_legend(runs)
                    ),
                    _figure(p99, "p99: sim runs dashed, load runs solid", _run_legend(runs)),
                ]
            )
            + _side_by_side(runs)
        )
    elif sims or loads:
        parts.append(
            '<p class="empty">Only '
            + ("simulated" if sims else "measured")
            + " runs were given. Add a <code>kind: sim</code> results document (brownout "
            "sim) beside a <code>kind: load</code> one to lay them side by side.</p>"
        )
    if summary is None:
        parts.append(
            '<p class="empty">No summary given (the demo writes summary.json with '
            "naive, guarded and predicted figures; pass it with --summary).</p>"
        )
    return "".join(parts)


def _spectrum_section(runs: Sequence[_Run]) -> str:
    curves = []
    for r in runs:
        hist = response_histogram(r.hists)
        curves.append((r, hist, spectrum_points(hist)))
    drawn = [c for c in curves if c[2]]
    if not drawn:
        return '<p class="empty">No run recorded a response time.</p>'
    x_hi = max(spectrum_x(p) for _, _, pts in drawn for p, _ in pts if p < 100)
    x_hi = max(x_hi, 10.0)
    decades = math.floor(math.log10(x_hi) + 1e-9)
    ticks = (1.0, 2.0, *(10.0**d for d in range(1, decades + 1)))
    x = Axis(
        1.0,
        x_hi,
        MARGIN_LEFT,
        WIDTH - MARGIN_RIGHT,
        log=True,
        ticks=ticks,
        fmt=_tick_percentile,
    )
    y = _y_log_ms([v for _, _, pts in drawn for _, v in pts])
    series, markers = [], []
    for r, _, pts in drawn:
        series.append(
            Series(r.label, r.label, r.colour, [(spectrum_x(p), v) for p, v in pts], r.dash, 2.0)
        )
        for p, v in pts:
            if p in SPECTRUM_MARKS:
                markers.append(
                    Marker(
                        spectrum_x(p),
                        v,
                        r.colour,
                        f"{r.label}: p{p:g} = {_ms(v)} ms",
                        (("run", r.label), ("p", f"{p:g}"), ("ms", repr(v))),
                    )
                )
    chart = line_chart(
        chart="spectrum",
        title="latency by percentile, every run",
        series=series,
        x=x,
        y=y,
        x_label="percentile (axis 1/(1-p), log scale)",
        y_label="response time (log scale)",
        markers=markers,
    )
    rows = []
    for r, hist, _ in curves:
        values = hist.percentiles([50, 90, 99, 99.9, 99.99]) if hist.count else []
        cells = (
            [_ms(v / 1000) for v in values] + [_ms(hist.max / 1000)] if hist.count else [DASH] * 6
        )
        rows.append(
            f'<tr><td><span class="dot" style="background:{r.colour}"></span>{esc(r.label)}</td>'
            f'<td class="num">{hist.count:,}</td>'
            + "".join(f'<td class="num">{c}</td>' for c in cells)
            + "</tr>"
        )
    table = _table(
        "<th>run</th><th>requests timed</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th>"
        "<th>p99.9 ms</th><th>p99.99 ms</th><th>max ms</th>",
        rows,
    )
    intro = (
        "<p>Response time at each percentile, from the exact merge of the run's "
        "HdrHistograms (every class and endpoint). The x axis is 1/(1-p) on a log scale, so "
        "each step right is ten times rarer: 90%, 99%, 99.9%. The curve stops where the "
        "run has too few requests for the percentile to differ from the maximum.</p>"
    )
    return (
        intro
        + _figure(chart, "Latency spectrum of every run", _run_legend(runs), wide=True)
        + table
    )


def _evidence(evidence: object) -> str:
    if not isinstance(evidence, Mapping):
        return esc(_number(evidence)) if evidence is not None else ""
    items = [
        f'<li><span class="ev-key">{esc(k)}</span> {esc(_number(v))}</li>'
        for k, v in evidence.items()
    ]
    return '<ul class="evidence">' + "".join(items) + "</ul>"


def _findings_section(ledgers: Sequence[Mapping[str, Any]], ledger_labels: Sequence[str]) -> str:
    if not ledgers:
        return (
            '<p class="empty">No ledger given: brownout profile (or the probe middleware) '
            "writes one; pass it with --ledger.</p>"
        )
    many = len(ledgers) > 1
    findings: list[tuple[str, Mapping[str, Any]]] = [
        (label, f)
        for label, led in zip(ledger_labels, ledgers, strict=True)
        for f in led.get("findings", [])
    ]

    def count_of(f: Mapping[str, Any]) -> int:
        n = f.get("occurrences", f.get("count"))
        return n if isinstance(n, int) and not isinstance(n, bool) else 0

    findings.sort(
        key=lambda lf: (
            SEVERITY_ORDER.get(str(lf[1].get("severity", "")), 3),
            -count_of(lf[1]),
            str(lf[1].get("endpoint", "")),
            str(lf[1].get("kind", "")),
        )
    )
    parts = []
    if findings:
        rows = []
        for label, f in findings:
            severity = str(f.get("severity", ""))
            sev_class = severity if severity in SEVERITY_ORDER else "other"
            n = f.get("occurrences", f.get("count"))
            rows.append(
                f'<tr class="finding" data-severity="{esc(severity)}">'
                + (f"<td>{esc(label)}</td>" if many else "")
                + f'<td><span class="sev sev-{sev_class}">{esc(severity)}</span></td>'
                f"<td><code>{esc(f.get('kind', ''))}</code></td>"
                f"<td class='name'>{esc(f.get('endpoint', ''))}</td>"
                f"<td>{esc(f.get('title', ''))}</td>"
                f"<td>{_evidence(f.get('evidence'))}</td>"
                f"<td>{esc(f.get('fix', ''))}</td>"
                f'<td class="num">{esc(_number(n))}</td>'
                "</tr>"
            )
        parts.append(
            _table(
                ("<th>ledger</th>" if many else "")
                + "<th>severity</th><th>kind</th><th>endpoint</th><th>title</th>"
                "<th>evidence</th><th>fix</th><th>seen</th>",
                rows,
                css="data findings",
            )
        )
    else:
        parts.append('<p class="empty">The ledgers hold no findings.</p>')
    parts.append(_endpoint_costs(ledgers, ledger_labels))
    return "".join(parts)


def _demand(stats: Mapping[str, Any], name: str, figure: str, scale: float) -> str:
    demands = stats.get("demands")
    entry = demands.get(name) if isinstance(demands, Mapping) else None
    value = entry.get(figure) if isinstance(entry, Mapping) else None
    if not isinstance(value, int | float) or isinstance(value, bool):
        return DASH
    return _ms(value * scale) if scale != 1 else f"{value:.2f}"


def _endpoint_costs(ledgers: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> str:
    many = len(ledgers) > 1
    rows = []
    for label, led in zip(labels, ledgers, strict=True):
        endpoints = led.get("endpoints", {})
        for name, stats in endpoints.items():
            if not isinstance(stats, Mapping):
                continue
            rows.append(
                "<tr>"
                + (f"<td>{esc(label)}</td>" if many else "")
                + f'<td class="name">{esc(name)}</td>'
                f'<td class="num">{esc(_number(stats.get("requests")))}</td>'
                f'<td class="num">{_demand(stats, "wall_s", "p50", 1000)}</td>'
                f'<td class="num">{_demand(stats, "wall_s", "p95", 1000)}</td>'
                f'<td class="num">{_demand(stats, "cpu_s", "mean", 1000)}</td>'
                f'<td class="num">{_demand(stats, "db_calls", "mean", 1)}</td>'
                f'<td class="num">{_demand(stats, "db_s", "mean", 1000)}</td>'
                f'<td class="num">{_demand(stats, "pool_wait_s", "p95", 1000)}</td>'
                f'<td class="num">{_demand(stats, "http_calls", "mean", 1)}</td>'
                f'<td class="num">{_demand(stats, "http_s", "mean", 1000)}</td>'
                f'<td class="num">{_demand(stats, "longest_step_s", "p95", 1000)}</td>'
                "</tr>"
            )
    if not rows:
        return ""
    return "<h3>What each endpoint costs per request</h3>" + _table(
        ("<th>ledger</th>" if many else "")
        + "<th>endpoint</th><th>requests</th><th>wall p50 ms</th><th>wall p95 ms</th>"
        "<th>CPU mean ms</th><th>DB calls mean</th><th>DB mean ms</th><th>pool wait p95 ms</th>"
        "<th>HTTP calls mean</th><th>HTTP mean ms</th><th>longest loop step p95 ms</th>",
        rows,
        css="data costs",
    )


def _runs_section(runs: Sequence[_Run], summary: Mapping[str, Any] | None) -> str:
    rows = []
    for r in runs:
        f = r.figures
        recovery = None
        if summary is not None:
            entry = summary.get(r.label)
            if not isinstance(entry, Mapping) and r.kind == "sim":
                entry = summary.get("predicted")
            if isinstance(entry, Mapping):
                recovery = entry.get("recovery_s")
        rows.append(
            f'<tr data-run="{esc(r.label)}">'
            f'<td class="name"><span class="dot" style="background:{r.colour}"></span>'
            f"{esc(r.label)}</td><td>{esc(r.kind)}</td>"
            f"<td>{esc(r.doc['scenario']['name'])}</td>"
            f'<td class="num">{float(r.doc["duration_s"]):,.1f}</td>'
            f'<td class="num">{f.offered_rps:,.1f}</td>'
            f'<td class="num" data-field="people_goodput_ratio">{_pct(f.people_goodput_ratio)}</td>'
            f'<td class="num">{f.goodput_rps:,.1f}</td>'
            f'<td class="num" data-field="p99_ms">{_ms(f.p99_ms)}</td>'
            f'<td class="num">{_ms(f.people_p99_ms)}</td>'
            f'<td class="num">{_count(f.shed, f.offered)}</td>'
            f'<td class="num">{_count(f.errors, f.offered)}</td>'
            f'<td class="num">{_count(f.timeouts, f.offered)}</td>'
            f'<td class="num">{_count(f.retries, f.sent)}</td>'
            f'<td class="num">{_count(f.dropped, f.offered)}</td>'
            f'<td class="num" data-field="recovery_s">{esc(_number(recovery))}</td>'
            f'<td class="num">{f.thresholds_passed}/{f.thresholds_total}</td>'
            "</tr>"
        )
    head = (
        "<th>run</th><th>kind</th><th>scenario</th><th>duration s</th><th>offered req/s</th>"
        "<th>people goodput</th><th>goodput req/s</th><th>p99 ms</th><th>people p99 ms</th>"
        "<th>shed</th><th>errors</th><th>timeouts</th><th>retries</th><th>dropped</th>"
        "<th>recovery s</th><th>thresholds passed</th>"
    )
    return (
        _table(head, rows, css="data runs")
        + '<p class="note">People goodput: requests of the people classes that succeeded within '
        "their client timeout, per request offered. p99 is the response time from the "
        "intended start. Retries are a share of the attempts sent, the other counts of the "
        "requests offered. Recovery comes from the summary, when given.</p>"
    )


# -- the page -----------------------------------------------------------------------------

_CSS = """
:root{--fg:#1d1d1f;--muted:#6b6b70;--line:#d9d9de;--bg:#fff;--panel:#f6f6f8}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);background:var(--bg)}
header{padding:20px 28px 8px;border-bottom:1px solid var(--line)}
header h1{margin:0 0 4px;font-size:22px}
nav a{margin-right:14px;color:#0b5cad;text-decoration:none}
main{padding:0 28px 28px}
section{margin-top:26px}
h2{font-size:18px;margin:0 0 8px;border-bottom:1px solid var(--line);padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}
p{max-width:1100px}
.scroll{overflow-x:auto;max-width:100%}
figure.wide{max-width:980px}
td.name,th.name{white-space:nowrap}
.muted,.note,figcaption{color:var(--muted);font-size:12px}
.empty{color:var(--muted);font-style:italic}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:14px}
figure.chart-box{margin:0;padding:8px;border:1px solid var(--line);border-radius:6px;background:var(--bg)}
svg.chart{display:block;width:100%;height:auto;font-size:11px}
svg.chart .grid{stroke:#ececf0;stroke-width:1}
svg.chart .axis{stroke:#8a8a90;fill:none;stroke-width:1}
svg.chart .tick,svg.chart .axis-label,svg.chart .bar-label{fill:#4a4a50}
svg.chart .axis-label{font-size:12px}
svg.chart .fault{fill-opacity:.12;stroke:#d55e00;stroke-opacity:.5;stroke-dasharray:3 2}
svg.chart .fault-label{fill:#a04000;font-size:10px}
svg.chart .off{display:none}
.legend{list-style:none;margin:6px 0 2px;padding:0;display:flex;flex-wrap:wrap;gap:4px 12px}
.legend button{font:inherit;font-size:12px;background:none;border:0;padding:2px 4px;cursor:pointer;color:var(--fg)}
.legend button[aria-pressed=false]{opacity:.4;text-decoration:line-through}
.swatch{display:inline-block;width:22px;height:0;border-top:3px solid;margin-right:6px;vertical-align:middle}
.swatch.dashed{border-top-style:dashed}
.dot{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:6px;vertical-align:baseline}
table.data{border-collapse:collapse;margin:10px 0;font-size:13px}
table.data th,table.data td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
table.data thead th{background:var(--panel);font-weight:600;white-space:nowrap}
table.runs thead th{white-space:normal;vertical-align:bottom}
table.data td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.findings td{max-width:360px}
ul.evidence{margin:0;padding-left:14px;font-size:12px}
.ev-key{color:var(--muted)}
.sev{display:inline-block;padding:1px 6px;border-radius:3px;font-size:12px;color:#fff;background:#777}
.sev-error{background:#c0392b}.sev-warning{background:#d68910}.sev-info{background:#2e86c1}
code{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px}
footer{padding:12px 28px;color:var(--muted);font-size:12px;border-top:1px solid var(--line)}
@media print{nav{display:none}.charts{display:block}figure.chart-box{break-inside:avoid;margin-bottom:10px}}
"""

# The page's only script. After layout it checks that every chart drew something (a mark
# with a non-empty box) and records the counts on <body> (data-charts, data-charts-drawn),
# so a headless browser can tell; then legend buttons hide or show their series.
_SCRIPT = """
(function () {
  "use strict";
  var charts = document.querySelectorAll("svg.chart");
  var drawn = 0;
  for (var i = 0; i < charts.length; i++) {
    var svg = charts[i];
    var box = svg.getBoundingClientRect();
    var marks = svg.querySelectorAll(".mark");
    var ok = false;
    for (var j = 0; j < marks.length && !ok; j++) {
      var b = marks[j].getBBox();
      ok = b.width > 0 || b.height > 0;
    }
    ok = ok && box.width > 0 && box.height > 0;
    svg.setAttribute("data-drawn", ok ? "yes" : "no");
    if (ok) { drawn += 1; }
  }
  document.body.setAttribute("data-charts", String(charts.length));
  document.body.setAttribute("data-charts-drawn", String(drawn));
  var buttons = document.querySelectorAll(".legend button[data-key]");
  for (var k = 0; k < buttons.length; k++) {
    buttons[k].addEventListener("click", function (event) {
      var button = event.currentTarget;
      var key = button.getAttribute("data-key");
      var shown = button.getAttribute("aria-pressed") !== "true";
      button.setAttribute("aria-pressed", shown ? "true" : "false");
      var figure = button.closest("figure");
      var items = figure ? figure.querySelectorAll("[data-key]") : [];
      for (var m = 0; m < items.length; m++) {
        var item = items[m];
        if (item.tagName.toLowerCase() !== "button" && item.getAttribute("data-key") === key) {
          item.classList.toggle("off", !shown);
        }
      }
    });
  }
})();
"""


def _csp(script: str) -> str:
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )


def render_report(
    docs: Sequence[Mapping[str, Any]],
    *,
    labels: Sequence[str] | None = None,
    ledgers: Sequence[Mapping[str, Any]] = (),
    ledger_labels: Sequence[str] | None = None,
    summary: Mapping[str, Any] | None = None,
    title: str | None = None,
) -> str:
    """One self-contained HTML page showing ``docs`` (results documents, schema 1) side by
    side, the findings of ``ledgers`` (probe ledgers) and the figures of ``summary`` (the
    demo's summary.json: ``naive``, ``guarded``, ``predicted``, each with
    ``people_goodput_ratio``, ``p99_ms``, ``recovery_s``, ``knee_rps``).

    ``labels`` name the runs (default: the scenario names, made unique); a summary entry
    whose key is a run's label gives that run's recovery time (for a ``sim`` run without
    one, the ``predicted`` entry). ``ledger_labels`` name the
    ledgers when there are several. The page is deterministic: the same inputs give the
    same bytes (no time of rendering is written).

    Raises :class:`~brownout.errors.ResultsError` for a document that is not valid and
    :class:`~brownout.errors.InvalidConfig` for arguments of the wrong shape.
    """
    if isinstance(docs, Mapping | str | bytes) or not isinstance(docs, Sequence) or not docs:
        raise InvalidConfig("render_report", "docs", docs, "a non-empty list of results documents")
    checked = [validate_results(d) for d in docs]
    names = _labels(checked, labels)
    if isinstance(ledgers, Mapping | str | bytes) or not isinstance(ledgers, Sequence):
        raise InvalidConfig("render_report", "ledgers", ledgers, "a list of ledger documents")
    ledger_docs = [check_ledger(led) for led in ledgers]
    if ledger_labels is None:
        led_names = [f"ledger {i + 1}" for i in range(len(ledger_docs))]
    else:
        led_names = [] if isinstance(ledger_labels, str) else list(ledger_labels)
        if len(led_names) != len(ledger_docs) or not all(isinstance(x, str) for x in led_names):
            raise InvalidConfig(
                "render_report", "ledger_labels", ledger_labels, f"{len(ledger_docs)} strings"
            )
    summary_doc = check_summary(summary) if summary is not None else None
    runs = _runs(checked, names)
    heading = title if title is not None else "brownout report: " + " vs ".join(names)
    bodies = {
        "runs": _runs_section(runs, summary_doc),
        "throughput": _throughput_section(runs),
        "latency": _latency_section(runs),
        "classes": _classes_section(runs),
        "predicted": _predicted_section(runs, summary_doc),
        "spectrum": _spectrum_section(runs),
        "findings": _findings_section(ledger_docs, led_names),
    }
    nav = "".join(f'<a href="#{sid}">{esc(h)}</a>' for sid, h in SECTIONS)
    sections = "".join(
        f'<section id="{sid}" data-section="{sid}"><h2>{esc(h)}</h2>{bodies[sid]}</section>'
        for sid, h in SECTIONS
    )
    runs_line = "; ".join(
        f"{r.label}: {r.kind}, {float(r.doc['duration_s']):g} s"
        + (f", started {r.doc['started_at']}" if r.doc.get("started_at") else "")
        for r in runs
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(_csp(_SCRIPT))}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="brownout {esc(__version__)}">\n'
        f"<title>{esc(heading)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<header><h1>{esc(heading)}</h1><p class="muted">{esc(runs_line)}</p>'
        f"<nav>{nav}</nav></header>\n<main>\n{sections}\n</main>\n"
        f"<footer>Written by brownout {esc(__version__)}. This page is self-contained: it "
        "loads nothing from the network.</footer>\n"
        f"<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )
