"""``brownout demo [--quick] [--out DIR] [--db URL]``: the whole story in one command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._load import CommandError

DESCRIPTION = """\
Run the demo: a shop with a naive and a guarded build and a payments service behind
brownout proxy, all on free loopback ports. Profiles the naive shop (findings), predicts
its capacity and simulates the scenario, then runs one scenario against each build (a ramp
past the predicted capacity, a scraper burst, payments slowing down and then failing,
recovery), and writes results, the ledger, summary.json and report.html to --out.
Default about 3 minutes; --quick under a minute.
"""


def add_demo_command(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="the whole story on a bundled demo shop (about 3 minutes; --quick: 1)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--quick", action="store_true", help="the short version (under 60 s)")
    demo.add_argument(
        "--out", default="brownout-demo", metavar="DIR", help="output directory (brownout-demo)"
    )
    demo.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help="a PostgreSQL URL (postgresql://user@host:port/db); default SQLite in --out",
    )
    demo.set_defaults(handler=run_demo_command)


def _fmt(value: Any, unit: str = "", digits: int = 0) -> str:
    if value is None:
        return "-"
    if unit == "%":
        return f"{100 * value:.{digits}f}%"
    return f"{value:,.{digits}f}{unit}"


def run_demo_command(args: argparse.Namespace) -> int:
    from ..demo._run import DemoOptions, run_demo

    if args.db is not None and not args.db.startswith(("postgresql://", "postgres://")):
        raise CommandError(
            f"--db={args.db!r} is not allowed; use a PostgreSQL URL such as "
            "postgresql://postgres@127.0.0.1:5432/test (the default is SQLite in --out)"
        )
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out={args.out!r} is a file; use a directory")

    def say(message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)

    result = run_demo(DemoOptions(out_dir=out, quick=args.quick, db=args.db), say)
    s = result.summary
    rows = [
        ("people goodput", "people_goodput_ratio", "%", 1),
        ("people p99", "p99_ms", " ms", 0),
        ("shed (429/503)", "shed", "", 0),
        ("recovery after payments", "recovery_s", " s", 1),
        ("knee", "knee_rps", " req/s", 0),
    ]
    print()
    if result.findings:
        print("Findings on the naive shop (the probe):")
        for f in result.findings:
            print(f"  {f.get('severity', ''):8s} {f.get('kind', ''):18s} {f.get('endpoint', '')}")
            print(f"           {f.get('title', '')}")
        print()
    print(f"{'':26s}{'naive':>14s}{'guarded':>14s}{'predicted':>14s}")
    for label, key, unit, digits in rows:
        cells = [
            _fmt(s.get(v, {}).get(key), unit, digits) for v in ("naive", "guarded", "predicted")
        ]
        print(f"{label:26s}" + "".join(f"{c:>14s}" for c in cells))
    for note in result.notes:
        print(f"note: {note}")
    print()
    for name, path in result.files.items():
        print(f"{name:10s} {path}")
    return 0
