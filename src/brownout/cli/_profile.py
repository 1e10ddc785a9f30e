"""``brownout profile APP``: what every endpoint of an ASGI app costs, and what it wastes.

Starts the app (``module:attribute``) under uvicorn in a child process with the probe on,
on a free loopback port; drives it with the load generator at ``--rate`` for
``--duration`` over ``--paths`` (by default every GET route the app declares, path
parameters filled with 1), or, with ``--manual``, waits while you drive it yourself until
Ctrl-C; then stops it, writes the ledger (``--out``) and prints the findings and the
per-endpoint costs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from ..units import parse_duration
from ._load import CommandError

DESCRIPTION = __doc__


def add_profile_command(sub: Any) -> None:
    p = sub.add_parser(
        "profile",
        help="profile an ASGI app: per-endpoint costs and findings (a ledger)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("app", metavar="APP", help="the app's import string, module:attribute")
    p.add_argument("--rate", type=float, default=20.0, help="requests per second (20)")
    p.add_argument("--duration", default="10s", help="how long to drive it (10s)")
    p.add_argument("--paths", default=None, help="comma-separated paths (default: GET routes)")
    p.add_argument("--out", default="ledger.json", help="where to write the ledger")
    p.add_argument(
        "--manual", action="store_true", help="do not drive it: serve until Ctrl-C, then report"
    )
    p.set_defaults(handler=run_profile_command)


_PARAM = re.compile(r"\{[^}]*\}")


def discover_paths(app: Any) -> list[str]:
    """The GET routes an app declares (Starlette, FastAPI and anything with ``routes`` of
    objects with ``path`` and ``methods``), path parameters filled with ``1``."""
    paths: list[str] = []
    target = app
    for _ in range(10):  # through middleware wrappers to the routed app
        if hasattr(target, "routes"):
            break
        target = getattr(target, "app", None)
        if target is None:
            return paths
    for route in getattr(target, "routes", ()):
        path = getattr(route, "path", None)
        methods = getattr(route, "methods", None) or set()
        if isinstance(path, str) and "GET" in methods and not path.startswith("/_brownout"):
            filled = _PARAM.sub("1", path)
            if filled not in paths:
                paths.append(filled)
    return paths


def _scenario(target: str, paths: list[str], rate: float, duration_s: float) -> str:
    requests = "\n".join(
        f"  [[classes.requests]]\n  path = {json.dumps(p)}\n  name = {json.dumps(p)}\n"
        for p in paths
    )
    return f"""
name = "profile"
target = "{target}"
duration = "{duration_s:g}s"
[[classes]]
name = "profile"
kind = "human"
rate = {rate:g}
{requests}
"""


def _ms(value: Any) -> str:
    return "-" if value is None else f"{1000 * float(value):.1f}"


def print_ledger(ledger: dict[str, Any]) -> None:
    """The per-endpoint table and the findings, for people."""
    endpoints = ledger.get("endpoints", {})
    print(
        f"{'endpoint':44s}{'requests':>9s}{'wall p50':>10s}{'loop':>8s}{'db':>8s}{'queries':>9s}{'http':>8s}"
    )
    for name, ep in endpoints.items():
        d = ep.get("demands", {})

        def mean(key: str, d: dict[str, Any] = d) -> Any:
            return (d.get(key) or {}).get("mean")

        queries = mean("db_calls")
        print(
            f"{name[:43]:44s}{ep.get('requests', 0):>9d}{_ms((d.get('wall_s') or {}).get('p50')):>10s}"
            f"{_ms(mean('loop_busy_s')):>8s}{_ms(mean('db_s')):>8s}"
            f"{'-' if queries is None else f'{queries:.1f}':>9s}{_ms(mean('http_s')):>8s}"
        )
    print("(times in ms: wall p50, and per-request means of loop busy, DB and HTTP time)")
    findings = ledger.get("findings", [])
    print()
    if not findings:
        print("No findings.")
        return
    print(f"{len(findings)} finding(s):")
    for f in findings:
        print(f"  [{f.get('severity', '')}] {f.get('kind', '')} on {f.get('endpoint', '')}")
        print(f"      {f.get('title', '')}")
        if f.get("fix"):
            print(f"      fix: {f['fix']}")


def run_profile_command(args: argparse.Namespace) -> int:
    from .._child import ChildProcess
    from ..load import run_load
    from ..scenario import parse_scenario
    from ._serve import import_app

    if not args.rate > 0:
        raise CommandError(f"--rate={args.rate!r} is not allowed; use a rate > 0")
    try:
        duration_s = parse_duration(args.duration, field="--duration")
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if not duration_s > 0:
        raise CommandError(f"--duration={args.duration!r} is not allowed; use a duration > 0")
    out = Path(args.out)
    if out.is_dir():
        raise CommandError(f"--out={args.out!r} is a directory; use a file name")
    if args.paths:
        paths = [p.strip() for p in args.paths.split(",") if p.strip()]
        bad = [p for p in paths if not p.startswith("/")]
        if bad:
            raise CommandError(f"--paths: {bad[0]!r} is not allowed; paths start with /")
    elif not args.manual:
        paths = discover_paths(import_app(args.app))
        if not paths:
            raise CommandError(f"{args.app} declares no GET routes; give --paths /a,/b")
    child = ChildProcess(
        [sys.executable, "-m", "brownout.cli._serve", "app", args.app, "--ledger", str(out)],
        ready_prefix="serving on ",
        what=f"the app {args.app}",
        ready_timeout_s=60.0,
    )
    with child as url:
        print(f"probing {args.app} on {url}", file=sys.stderr, flush=True)
        if args.manual:
            print("drive it yourself; Ctrl-C when done", file=sys.stderr, flush=True)
            try:
                while child.running:
                    time.sleep(0.2)
            except KeyboardInterrupt:
                pass
        else:
            print(
                f"driving {len(paths)} path(s) at {args.rate:g} req/s for {duration_s:g} s",
                file=sys.stderr,
                flush=True,
            )
            run_load(parse_scenario(_scenario(url, paths, args.rate, duration_s)))
    if not out.exists():
        raise CommandError(f"the probe wrote no ledger at {out} (did the app start and stop?)")
    ledger = json.loads(out.read_text(encoding="utf-8"))
    print_ledger(ledger)
    print(f"\nledger: {out}")
    return 0
