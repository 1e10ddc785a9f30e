from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from report_docs import ledger, make_run

from brownout.errors import ResultsError
from brownout.report import load_ledger, load_summary, render_report, run_labels
from brownout.report._inputs import check_ledger, check_summary

# -- ledgers -------------------------------------------------------------------------------


def test_load_ledger_reads_the_probe_format(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    path.write_text(json.dumps(ledger()))
    doc = load_ledger(path)
    assert [f["kind"] for f in doc["findings"]] == ["no_timeout", "n_plus_one_db"]


def test_a_ledger_missing_fields_is_accepted_and_shown_blank() -> None:
    doc = check_ledger({"findings": [{"kind": "slow_query"}, {}]})
    assert len(doc["findings"]) == 2


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([], "ledger"),
        ({"schema": "something.else"}, "schema"),
        ({"schema": "brownout.ledger", "version": 2}, "version"),
        ({"schema_version": 3}, "schema_version"),
        ({"findings": {}}, "findings"),
        ({"findings": [1]}, "findings[0]"),
        ({"endpoints": []}, "endpoints"),
    ],
)
def test_bad_ledgers_name_the_field(doc: object, field: str) -> None:
    with pytest.raises(ResultsError) as info:
        check_ledger(doc, source="l.json")
    assert info.value.field == field
    assert info.value.source == "l.json"
    assert "\n" not in str(info.value)


def test_load_ledger_names_a_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="readable ledger file") as info:
        load_ledger(tmp_path / "nope.json")
    assert info.value.source == str(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ResultsError, match=r"line 1 column 2.*JSON"):
        load_ledger(broken)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ResultsError, match="UTF-8"):
        load_ledger(binary)


# -- summaries -----------------------------------------------------------------------------


def test_summary_figures_must_be_numbers_or_null(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"naive": {"p99_ms": None, "knee_rps": 3}, "plan": {"x": "y"}}))
    assert load_summary(path)["naive"]["knee_rps"] == 3
    with pytest.raises(ResultsError) as info:
        check_summary({"guarded": {"recovery_s": "soon"}})
    assert info.value.field == "guarded.recovery_s"
    with pytest.raises(ResultsError, match="schema_version"):
        check_summary({"schema_version": 2})
    with pytest.raises(ResultsError, match="summary"):
        check_summary([1, 2])


def test_summary_rows_are_the_entries_holding_figures() -> None:
    page = render_report(
        [_doc()],
        summary={
            "schema_version": 1,
            "plan": {"ramp_to_rps": 80},
            "predicted": {"knee_rps": 90.0, "scraper_goodput_ratio": 0.25},
            "naive": {"people_goodput_ratio": 0.5},
        },
    )
    table = page.split('id="summary-table"')[1].split("</table>")[0]
    assert table.count("<tr data-row=") == 2
    assert table.index('data-row="naive"') < table.index('data-row="predicted"')
    assert "plan" not in table
    assert '<td class="num" data-field="scraper_goodput_ratio">25.0%</td>' in table


# -- labels --------------------------------------------------------------------------------


def _named(name: str) -> dict[str, Any]:
    return {"scenario": {"name": name}}


def test_labels_are_scenario_names_or_file_stems() -> None:
    assert run_labels([_named("a"), _named("b")], ["x/1.json", "y/2.json"]) == ["a", "b"]
    shared = [_named("shop"), _named("shop")]
    assert run_labels(shared, ["out/naive.json", "out/guarded.json"]) == ["naive", "guarded"]
    assert run_labels([_named(""), _named("b")], ["out/r.json", None]) == ["r", "b"]
    assert run_labels(shared, ["a/r.json", "b/r.json"]) == ["r #1", "r #2"]
    assert run_labels(shared, [None, None]) == ["shop #1", "shop #2"]


# -- fuzzing -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _error_of(check: Callable[[object], object], doc: object) -> ResultsError | None:
    """The ResultsError ``check`` raises on ``doc``, or None; any other error propagates."""
    try:
        check(doc)
    except ResultsError as exc:
        return exc
    return None


@given(json_values)
def test_check_ledger_accepts_or_names_the_field(doc: object) -> None:
    error = _error_of(check_ledger, doc)
    if error is not None:
        assert error.field
        assert "\n" not in str(error)


@given(json_values)
def test_check_summary_accepts_or_names_the_field(doc: object) -> None:
    error = _error_of(check_summary, doc)
    if error is not None:
        assert error.field
        assert "\n" not in str(error)


@functools.cache
def _doc() -> dict[str, Any]:
    return make_run("naive", seed=5, duration_s=6.0, rate=(20.0, 5.0))


ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "p", "nav",
    "a", "main", "section", "div", "table", "thead", "tbody", "tr", "th", "td", "span", "ul",
    "li", "button", "code", "figure", "figcaption", "footer", "script", "svg", "path", "line",
    "text", "rect", "g", "circle",
}  # fmt: skip


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.scripts = 0
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.scripts += tag == "script"
        assert not any(name.startswith("on") for name, _ in attrs), attrs

    def handle_data(self, data: str) -> None:
        self.text.append(data)


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=text,
    fault=text,
    finding=st.dictionaries(
        st.sampled_from(["kind", "endpoint", "severity", "title", "fix", "occurrences"]),
        json_values,
    ),
    evidence=json_values,
    summary_key=text,
)
def test_any_strings_render_as_text_never_as_markup(
    name: str, fault: str, finding: dict[str, Any], evidence: Any, summary_key: str
) -> None:
    doc = copy.deepcopy(_doc())
    doc["scenario"]["name"] = name
    doc["faults"][0]["name"] = fault
    finding = dict(finding, evidence=evidence)
    page = render_report(
        [doc],
        labels=[name],
        ledgers=[{"findings": [finding]}],
        summary={summary_key: {"knee_rps": 1.0}},
        title=name,
    )
    parsed = _Collect()
    parsed.feed(page)
    parsed.close()
    assert parsed.tags <= ALLOWED_TAGS
    assert parsed.scripts == 1
    shown = "".join(parsed.text)
    assert name.strip() in shown or not name.strip()
