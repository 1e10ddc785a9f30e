"""``brownout report``: the subcommand through the CLI's own parser and error handling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from brownout.cli._load import run_command
from brownout.cli._main import UsageError, _Parser
from brownout.cli._report import add_report_command
from brownout.results import write_results


def brownout(argv: list[str]) -> int:
    """``brownout report ...`` as the CLI runs it: its parser, then run_command (one line on
    stderr and exit 2 for bad input)."""
    parser = _Parser(prog="brownout")
    add_report_command(parser.add_subparsers(dest="command", parser_class=_Parser))
    try:
        args = parser.parse_args(argv)
    except UsageError:
        return 2
    return run_command(args)


@pytest.fixture
def files(
    tmp_path: Path,
    runs: list[dict[str, Any]],
    ledger_doc: dict[str, Any],
    summary_doc: dict[str, Any],
) -> dict[str, Path]:
    out = {}
    for name, doc in zip(("naive", "guarded", "sim"), runs, strict=True):
        out[name] = tmp_path / f"{name}.json"
        write_results(out[name], doc)
    out["ledger"] = tmp_path / "ledger.json"
    out["ledger"].write_text(json.dumps(ledger_doc))
    out["summary"] = tmp_path / "summary.json"
    out["summary"].write_text(json.dumps(summary_doc))
    return out


def test_report_writes_one_html_file(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "report.html"
    code = brownout(
        [
            "report",
            str(files["naive"]),
            str(files["guarded"]),
            str(files["sim"]),
            "--ledger",
            str(files["ledger"]),
            "--summary",
            str(files["summary"]),
            "-o",
            str(target),
            "--title",
            "Demo <run>",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert str(target) in out
    page = target.read_text()
    assert "<title>Demo &lt;run&gt;</title>" in page
    # runs of one scenario are labelled by file stem, so the summary's entries match them
    assert '<tr data-run="naive">' in page
    assert '<tr data-run="guarded">' in page
    assert 'data-field="recovery_s">1.5<' in page
    assert "reviews loaded one query per product" in page
    assert not list(tmp_path.glob(".report.html.*"))  # no temporary file left behind


def test_default_output_is_report_html_in_the_current_folder(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert brownout(["report", str(files["naive"])]) == 0
    assert (tmp_path / "report.html").read_text().startswith("<!DOCTYPE html>")


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("brownout: error: ")
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "readable file"),
        ("{oops", "JSON"),
        ('{"schema_version": 2}', "schema_version=2"),
        ("[]", "document"),
    ],
)
def test_bad_results_file_is_one_line_naming_it(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    expected: str,
) -> None:
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    code = brownout(["report", str(path), "-o", str(tmp_path / "r.html")])
    assert code == 2
    err = _one_error_line(capsys)
    assert str(path) in err
    assert expected in err
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize(
    "case",
    [
        ("--ledger", None, "ledger {path}: file="),
        ("--ledger", "nope", "ledger {path}: ledger="),
        ("--ledger", '{"schema": "brownout.ledger", "version": 7}', "ledger {path}: version=7"),
        ("--summary", "[1]", "summary {path}: summary="),
        ("--summary", '{"naive": {"knee_rps": "fast"}}', "summary {path}: naive.knee_rps="),
    ],
)
def test_bad_ledger_or_summary_is_one_line_naming_it(
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: tuple[str, str | None, str],
) -> None:
    flag, content, expected = case
    path = tmp_path / "extra.json"
    if content is not None:
        path.write_text(content)
    code = brownout(
        ["report", str(files["naive"]), flag, str(path), "-o", str(tmp_path / "r.html")]
    )
    assert code == 2
    assert expected.format(path=path) in _one_error_line(capsys)


def test_an_output_folder_that_does_not_exist_is_refused_before_reading(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = brownout(["report", str(files["naive"]), "-o", str(tmp_path / "no" / "r.html")])
    assert code == 2
    assert "does not exist" in _one_error_line(capsys)


def test_at_least_one_results_file_is_required() -> None:
    assert brownout(["report"]) == 2
