"""``brownout report``: results files (and ledgers, a summary) -> one self-contained HTML file."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ..errors import ResultsError
from ._load import EXIT_OK, CommandError, _check_writable

DESCRIPTION = """\
Write one self-contained HTML report (inline CSS, script and SVG charts; it loads nothing
from the network) from results files of `brownout load`, `brownout sim` or the demo:
offered vs goodput vs shed over time with the fault windows shaded, latency percentiles
over time, people vs bots outcomes, simulated vs measured runs, the latency spectrum and
the probe's findings. Several results files are laid side by side (naive vs guarded).

Each run is labelled with its scenario name, or with its file name when runs share one;
a --summary entry with that label (the demo writes naive, guarded and predicted) gives
the run's recovery time, and its figures are shown as a table.
"""


def add_report_command(sub: Any) -> None:
    report = sub.add_parser(
        "report",
        help="a self-contained HTML report from results files",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("results", nargs="+", metavar="RESULTS.json", help="results files")
    report.add_argument(
        "--ledger",
        action="append",
        default=[],
        metavar="LEDGER.json",
        help="a probe ledger whose findings to show (repeatable)",
    )
    report.add_argument(
        "--summary",
        metavar="SUMMARY.json",
        help="the demo's summary.json (naive, guarded, predicted figures)",
    )
    report.add_argument(
        "-o", "--out", default="report.html", metavar="PATH", help="where to write (report.html)"
    )
    report.add_argument("--title", help="the page's title (default: the runs' labels)")
    report.set_defaults(handler=cmd_report)


def _reworded(exc: ResultsError, what: str) -> CommandError:
    """A ledger or summary error in one line that names the file as a ledger or summary
    (ResultsError's own message says "results")."""
    shown = repr(exc.value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return CommandError(
        f"{what} {exc.source}: {exc.field}={shown} is not allowed; {exc.field} must be "
        f"{exc.allowed}"
    )


def _write_atomically(path: str, text: str) -> None:
    """Write to a temporary file beside ``path``, then rename it over ``path``: a reader sees
    the old report or the new one. The file gets the usual permissions (the umask applies),
    unlike a ``mkstemp`` file, since a report is meant to be shared."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def cmd_report(args: argparse.Namespace) -> int:
    from ..report import load_ledger, load_summary, render_report, run_labels
    from ..results import load_results

    _check_writable("--out", args.out)
    docs = [load_results(path) for path in args.results]
    ledgers = []
    for path in args.ledger:
        try:
            ledgers.append(load_ledger(path))
        except ResultsError as exc:
            raise _reworded(exc, "ledger") from None
    summary = None
    if args.summary is not None:
        try:
            summary = load_summary(args.summary)
        except ResultsError as exc:
            raise _reworded(exc, "summary") from None
    labels = run_labels(docs, args.results)
    page = render_report(
        docs,
        labels=labels,
        ledgers=ledgers,
        ledger_labels=[Path(p).name for p in args.ledger],
        summary=summary,
        title=args.title,
    )
    _write_atomically(args.out, page)
    print(f"report: {args.out} ({len(page) / 1024:.0f} KiB; runs: {', '.join(labels)})")
    return EXIT_OK
