from __future__ import annotations

import copy
import math
import re
from html.parser import HTMLParser
from typing import Any

import pytest
import svgread
from report_docs import FAULT_END_S, FAULT_START_S, make_run

from brownout.errors import InvalidConfig, ResultsError
from brownout.report import SECTIONS, render_report
from brownout.results import Histogram

LABELS = ["naive", "guarded", "predicted"]


@pytest.fixture(scope="module")
def page(
    runs: list[dict[str, Any]], ledger_doc: dict[str, Any], summary_doc: dict[str, Any]
) -> str:
    return render_report(runs, labels=LABELS, ledgers=[ledger_doc], summary=summary_doc)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> _Tags:
    p = _Tags()
    p.feed(page)
    p.close()
    return p


# -- one file, nothing from outside ------------------------------------------------------


def test_page_has_no_external_references(page: str) -> None:
    assert not re.search(r"""\b(src|href|action|poster|data)\s*=\s*["']?\s*(https?:|//)""", page)
    assert "@import" not in page
    assert "url(" not in page
    tags = parse(page).tags
    names = {t for t, _ in tags}
    assert not names & {"link", "img", "iframe", "object", "embed", "base", "form"}
    scripts = [attrs for t, attrs in tags if t == "script"]
    assert scripts == [{}]  # one inline script, no src
    hrefs = [attrs["href"] for t, attrs in tags if t == "a"]
    assert hrefs
    assert all(h and h.startswith("#") for h in hrefs)


def test_content_security_policy_forbids_every_fetch_and_foreign_script(page: str) -> None:
    metas = [a for t, a in parse(page).tags if t == "meta" and a.get("http-equiv")]
    csp = metas[0]["content"] or ""
    assert "default-src 'none'" in csp
    assert "script-src 'sha256-" in csp
    assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]


def test_every_section_is_present_in_order(page: str) -> None:
    positions = [page.index(f'<section id="{sid}"') for sid, _ in SECTIONS]
    assert positions == sorted(positions)
    for _, heading in SECTIONS:
        assert f"<h2>{heading}</h2>" in page
    kinds = {c.attrib["data-chart"] for c in svgread.charts(page)}
    assert kinds == {
        "throughput",
        "goodput-compare",
        "latency",
        "p99-compare",
        "classes",
        "predicted-goodput",
        "predicted-p99",
        "spectrum",
    }


def test_rendering_is_deterministic(
    runs: list[dict[str, Any]], ledger_doc: dict[str, Any], summary_doc: dict[str, Any], page: str
) -> None:
    again = render_report(runs, labels=LABELS, ledgers=[ledger_doc], summary=summary_doc)
    assert again == page


# -- escaping ----------------------------------------------------------------------------

SCRIPT = "<script>alert(1)</script>"
IMG = '<img src=x onerror="alert(2)">'


def test_strings_from_the_documents_are_escaped(
    runs: list[dict[str, Any]], ledger_doc: dict[str, Any], summary_doc: dict[str, Any]
) -> None:
    doc = copy.deepcopy(runs[0])
    doc["scenario"]["name"] = SCRIPT
    doc["faults"][0]["name"] = IMG
    doc["faults"][0]["target"] = "a&b"
    led = copy.deepcopy(ledger_doc)
    led["findings"][0]["title"] = "</td></tr></table>" + SCRIPT
    led["findings"][0]["evidence"] = {IMG: SCRIPT}
    summ = dict(summary_doc, **{"<i>x</i>": {"p99_ms": 1.0, IMG: "y"}})
    page = render_report(
        [doc, runs[1]], ledgers=[led], ledger_labels=[IMG], summary=summ, title=SCRIPT
    )
    assert SCRIPT not in page
    assert IMG not in page
    assert "<i>x</i>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in page
    parsed = parse(page)
    assert [t for t, _ in parsed.tags].count("script") == 1
    assert "img" not in {t for t, _ in parsed.tags}
    assert "i" not in {t for t, _ in parsed.tags}
    text = "".join(parsed.text)
    assert SCRIPT in text  # shown to the reader as text
    svgread.charts(page)  # every chart is still well-formed XML


# -- several runs ------------------------------------------------------------------------


def test_several_runs_give_one_series_per_run_with_distinct_colours(page: str) -> None:
    for kind in ("goodput-compare", "p99-compare", "spectrum", "predicted-goodput"):
        (svg,) = svgread.charts_of(page, kind)
        paths = svgread.elements(svg, "path", "series")
        assert [p.attrib["data-key"] for p in paths] == LABELS, kind
        assert len({p.attrib["stroke"] for p in paths}) == 3
    per_run = svgread.charts_of(page, "throughput")
    assert [c.attrib["data-run"] for c in per_run] == LABELS
    assert [c.attrib["data-run"] for c in svgread.charts_of(page, "latency")] == LABELS
    (bars,) = svgread.charts_of(page, "classes")
    labels = {b.attrib["data-bar"] for b in svgread.elements(bars, "rect", "bar")}
    assert labels == {
        f"{run} \u00b7 {cls}" for run in LABELS for cls in ("shoppers (people)", "scraper (bots)")
    }


def test_sim_runs_are_dashed_and_load_runs_solid(page: str) -> None:
    (svg,) = svgread.charts_of(page, "predicted-goodput")
    dashes = {
        p.attrib["data-key"]: p.attrib.get("stroke-dasharray")
        for p in svg.iter(svgread.NS + "path")
        if "data-key" in p.attrib
    }
    assert dashes == {"naive": None, "guarded": None, "predicted": "7 4"}


def test_a_legend_entry_for_every_series(page: str) -> None:
    for figure in re.findall(r'<figure class="chart-box[^"]*">.*?</figure>', page, re.S):
        svg = svgread.charts(figure)[0]
        keys = {p.attrib["data-key"] for p in svgread.elements(svg, "path", "series")}
        keys |= {r.attrib["data-key"] for r in svgread.elements(svg, "rect", "bar")}
        legend = set(
            re.findall(r'<button type="button" class="legend-item" data-key="([^"]*)"', figure)
        )
        assert keys <= legend, svg.attrib["data-chart"]


# -- positions and values ----------------------------------------------------------------


def test_fault_windows_are_shaded_at_their_times(page: str) -> None:
    for svg in svgread.charts_of(page, "throughput") + svgread.charts_of(page, "latency"):
        x = svgread.Scale.of(svg, "x")
        (band,) = svgread.elements(svg, "rect", "fault")  # the fault never applied is not drawn
        left = float(band.attrib["x"])
        right = left + float(band.attrib["width"])
        tolerance = 0.11 * x.units_per_px  # coordinates are written to 0.1 px
        assert x.value(left) == pytest.approx(FAULT_START_S, abs=tolerance)
        assert x.value(right) == pytest.approx(FAULT_END_S, abs=tolerance)
        assert band.attrib["data-label"] == "payments-slow"


def test_a_fault_never_cleared_runs_to_the_end_of_the_run(runs: list[dict[str, Any]]) -> None:
    doc = copy.deepcopy(runs[0])
    doc["faults"][0]["ended_s"] = None
    page = render_report([doc])
    (svg,) = svgread.charts_of(page, "throughput")
    x = svgread.Scale.of(svg, "x")
    (band,) = svgread.elements(svg, "rect", "fault")
    right = float(band.attrib["x"]) + float(band.attrib["width"])
    assert x.value(right) == pytest.approx(doc["duration_s"], abs=0.11 * x.units_per_px)
    assert "not cleared" in page


def test_throughput_points_are_the_timeline_rates(page: str, runs: list[dict[str, Any]]) -> None:
    svg = svgread.charts_of(page, "throughput")[0]
    x, y = svgread.Scale.of(svg, "x"), svgread.Scale.of(svg, "y")
    points = svgread.series(svg)["goodput"]
    rows = [r for r in runs[0]["timeline"] if r["dt_s"] > 0]
    assert len(points) == len(rows)
    for (px, py), row in zip(points, rows, strict=True):
        assert x.value(px) == pytest.approx(row["t_s"] + row["dt_s"] / 2, abs=0.11 * x.units_per_px)
        assert y.value(py) == pytest.approx(row["goodput"] / row["dt_s"], abs=0.11 * y.units_per_px)


def _merged_response(doc: dict[str, Any]) -> Histogram:
    merged = Histogram()
    for key, text in doc["histograms"].items():
        if key.startswith("response/"):
            merged.merge(Histogram.decode(text))
    return merged


def test_spectrum_points_match_the_histogram_percentiles(
    page: str, runs: list[dict[str, Any]]
) -> None:
    (svg,) = svgread.charts_of(page, "spectrum")
    x, y = svgread.Scale.of(svg, "x"), svgread.Scale.of(svg, "y")
    assert x.log
    assert y.log
    drawn = svgread.series(svg)
    markers = svgread.elements(svg, "circle", "marker")
    for label, doc in zip(LABELS, runs, strict=True):
        hist = _merged_response(doc)
        # The documented grid: x = 1/(1-p) log-spaced from 1 to the count, plus the marks.
        top = math.log10(hist.count)
        ps = {round(100 * (1 - 1 / 10 ** (top * k / 159)), 9) for k in range(160)}
        ps |= {p for p in (50.0, 90.0, 99.0, 99.9) if 1 / (1 - p / 100) <= hist.count}
        expected = [
            (x.pixel(1 / (1 - p / 100)), y.pixel(v / 1000))
            for p, v in zip(sorted(ps), hist.percentiles(sorted(ps)), strict=True)
        ]
        assert len(drawn[label]) == len(expected)
        for (px, py), (ex, ey) in zip(drawn[label], expected, strict=True):
            assert px == pytest.approx(ex, abs=0.051)
            assert py == pytest.approx(ey, abs=0.051)
        mine = [m for m in markers if m.attrib["data-run"] == label]
        assert [m.attrib["data-p"] for m in mine] == ["50", "90", "99", "99.9"]
        for m in mine:
            p = float(m.attrib["data-p"])
            assert float(m.attrib["data-ms"]) == hist.value_at_percentile(p) / 1000
    ticks = [t.text for t in svgread.elements(svg, "text", "tick")]
    assert {"50%", "90%", "99%", "99.9%"} <= set(ticks)


def test_run_table_figures(page: str, runs: list[dict[str, Any]]) -> None:
    for label, doc in zip(LABELS, runs, strict=True):
        row = re.search(rf'<tr data-run="{label}">(.*?)</tr>', page, re.S)
        assert row is not None
        shoppers = doc["by_class"]["shoppers"]
        ratio = shoppers["goodput"] / shoppers["offered"]
        assert f'data-field="people_goodput_ratio">{ratio * 100:.1f}%<' in row.group(1)
    recovery = re.findall(r'<tr data-run="(\w+)">.*?data-field="recovery_s">([^<]*)<', page, re.S)
    # guarded from its summary entry; the sim run from "predicted"; naive's is null.
    assert recovery == [("naive", "\u2014"), ("guarded", "1.5"), ("predicted", "2")]


def test_summary_table_holds_the_predictions(page: str) -> None:
    table = page.split('id="summary-table"')[1].split("</table>", maxsplit=1)[0]
    assert [r for r in re.findall(r'<tr data-row="(\w+)">', table)] == [
        "naive",
        "guarded",
        "predicted",
    ]
    assert '<td class="num" data-field="knee_rps">90</td>' in table
    assert '<td class="num" data-field="people_goodput_ratio">41.0%</td>' in table


def test_findings_are_listed_worst_first_with_their_evidence(page: str) -> None:
    findings = page.split('<section id="findings"')[1]
    severities = re.findall(r'<tr class="finding" data-severity="(\w+)">', findings)
    assert severities == ["error", "warning"]
    assert "selectinload" in findings
    assert "total_ms</span> 61.5" in findings
    assert "GET /products/{id}" in findings.split("What each endpoint costs")[1]


# -- fewer inputs --------------------------------------------------------------------------


def test_one_run_without_ledger_or_summary(runs: list[dict[str, Any]]) -> None:
    page = render_report([runs[0]])
    kinds = [c.attrib["data-chart"] for c in svgread.charts(page)]
    assert kinds == ["throughput", "latency", "classes", "spectrum"]
    assert "No ledger given" in page
    assert "No summary given" in page
    assert "Only measured runs were given" in page
    for sid, _ in SECTIONS:
        assert f'<section id="{sid}"' in page


def test_a_run_without_requests_renders() -> None:
    doc = make_run("naive", rate=(0.0001, 0.0001), duration_s=3.0)
    assert doc["summary"]["offered"] == 0
    page = render_report([doc])
    assert "No run recorded a response time" in page
    for sid, _ in SECTIONS:
        assert f'<section id="{sid}"' in page


def test_ledgers_are_labelled_when_there_are_several(
    runs: list[dict[str, Any]], ledger_doc: dict[str, Any]
) -> None:
    page = render_report(
        [runs[0]], ledgers=[ledger_doc, ledger_doc], ledger_labels=["a.json", "b.json"]
    )
    findings = page.split('<section id="findings"')[1]
    assert findings.count("<td>a.json</td>") == 3  # two findings and one endpoint
    assert "<th>ledger</th>" in findings


# -- bad arguments -------------------------------------------------------------------------


@pytest.mark.parametrize("docs", [[], {}, "x", None])
def test_docs_must_be_a_non_empty_list(docs: Any) -> None:
    with pytest.raises(InvalidConfig, match="docs"):
        render_report(docs)


@pytest.mark.parametrize("labels", [["one"], "abc", [1, 2, 3]])
def test_labels_must_match_the_documents(runs: list[dict[str, Any]], labels: Any) -> None:
    with pytest.raises(InvalidConfig, match="labels"):
        render_report(runs, labels=labels)


def test_an_invalid_document_is_refused(runs: list[dict[str, Any]]) -> None:
    doc = copy.deepcopy(runs[0])
    doc["schema_version"] = 2
    with pytest.raises(ResultsError, match="schema_version"):
        render_report([doc])


def test_an_invalid_ledger_or_summary_is_refused(runs: list[dict[str, Any]]) -> None:
    with pytest.raises(ResultsError, match="version"):
        render_report([runs[0]], ledgers=[{"schema": "brownout.ledger", "version": 9}])
    with pytest.raises(ResultsError, match="p99_ms"):
        render_report([runs[0]], summary={"naive": {"p99_ms": "fast"}})
