"""The report in a real browser: headless Chromium (Debian's ``chromium``; ``python3 dev.py
test`` installs it when it can).

One page load, through the DevTools protocol on a pipe (see headless.py): no console error,
no uncaught exception, no browser error log, no request but the file itself, every chart
laid out with something drawn (the page's script counts them on <body>), a legend button
hides its series, and markup smuggled into a document stays text. The full-page screenshot
is kept in ``.artifacts/report/report.png`` at the repository root (gitignored); the test
prints where.

Without Chromium the test is skipped with a message, and fails when ``CI`` is set.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
from headless import find_chromium, load_page, save_artifact

from brownout.report import render_report

ROOT = Path(__file__).resolve().parents[2]

PROBES = {
    "charts": "Number(document.body.getAttribute('data-charts'))",
    "drawn": "Number(document.body.getAttribute('data-charts-drawn'))",
    "sizes": (
        "Array.from(document.querySelectorAll('svg.chart')).map(function (s) {"
        " var r = s.getBoundingClientRect(); return [r.width, r.height,"
        " s.querySelectorAll('.mark').length]; })"
    ),
    "sections": "Array.from(document.querySelectorAll('section')).map(function (s) { return s.id; })",
    "toggle": (
        "(function () {"
        " var fig = document.querySelector('svg[data-chart=\"goodput-compare\"]').closest('figure');"
        " var button = fig.querySelector('.legend button[data-key=\"naive\"]');"
        " var path = fig.querySelector('path.series[data-key=\"naive\"]');"
        " var before = getComputedStyle(path).display;"
        " button.click();"
        " var after = getComputedStyle(path).display;"
        " button.click();"
        " return [before, after, getComputedStyle(path).display, button.getAttribute('aria-pressed')];"
        "})()"
    ),
    "pwned": "typeof window.__pwned",
    "smuggled": "document.querySelectorAll('img, iframe, section script').length",
}


def _chromium() -> str:
    path = find_chromium()
    if path is None:
        message = "chromium is not installed (python3 dev.py test installs it with apt-get as root)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}, and CI is set: the browser test must run in CI")
        pytest.skip(f"{message}; install Debian's chromium package to run this test")
    return path


def test_report_renders_in_headless_chromium(
    tmp_path: Path,
    runs: list[dict[str, Any]],
    ledger_doc: dict[str, Any],
    summary_doc: dict[str, Any],
) -> None:
    chromium = _chromium()
    led = copy.deepcopy(ledger_doc)
    led["findings"][1]["evidence"]["example"] = (
        '<img src="x" onerror="window.__pwned=1"><script>window.__pwned=2</script>'
    )
    page = render_report(
        runs, labels=["naive", "guarded", "predicted"], ledgers=[led], summary=summary_doc
    )
    html_path = tmp_path / "report.html"
    html_path.write_text(page, encoding="utf-8")
    url = html_path.as_uri()

    run = load_page(chromium, url, expressions=PROBES, width=1400, height=2400)

    assert run.console_errors == []
    assert run.exceptions == []
    assert run.log_errors == []
    assert run.requests == [url]  # the file itself, nothing else
    charts = page.count('<svg class="chart"')
    assert run.values["charts"] == charts == 12
    assert run.values["drawn"] == charts
    for width, height, marks in run.values["sizes"]:
        assert width > 300
        assert height > 100
        assert marks > 0
    assert run.values["sections"] == [
        "runs",
        "throughput",
        "latency",
        "classes",
        "predicted",
        "spectrum",
        "findings",
    ]
    assert run.values["toggle"] == ["inline", "none", "inline", "true"]
    assert run.values["pwned"] == "undefined"
    assert run.values["smuggled"] == 0

    assert run.screenshot.startswith(b"\x89PNG\r\n\x1a\n")
    width = int.from_bytes(run.screenshot[16:20], "big")
    height = int.from_bytes(run.screenshot[20:24], "big")
    assert width == 1400
    assert height >= 2400
    (tmp_path / "report.png").write_bytes(run.screenshot)
    shot = save_artifact("report.png", run.screenshot, ROOT)
    save_artifact("report.html", page.encode("utf-8"), ROOT)
    print(f"report screenshot ({width}x{height}, {run.elapsed_s:.1f} s in chromium): {shot}")
