from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from .._version import __version__
from ._demo import add_demo_command
from ._load import add_load_commands, run_command
from ._predict import add_predict_command
from ._profile import add_profile_command
from ._proxy import add_proxy_command
from ._report import add_report_command
from ._sim import add_sim_command

DESCRIPTION = """\
brownout: measure what every request costs, predict where the service saturates,
prove it with honest open-model load, and protect it with policies that fail in a
controlled way.

The guard policies (Timeout, Retry, RetryBudget, CircuitBreaker, Bulkhead, Hedge,
Fallback, Cache, Pipeline) are a Python library: `import brownout`. Commands for load,
faults, profiling, prediction, simulation, reports and the demo arrive as subcommands.
"""


class UsageError(Exception):
    """A command-line mistake: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="brownout",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"brownout {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    add_demo_command(sub)
    add_load_commands(sub)
    add_profile_command(sub)
    add_predict_command(sub)
    add_sim_command(sub)
    add_report_command(sub)
    add_proxy_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(f"brownout: error: {exc} (see brownout --help)", file=sys.stderr)
        return 2
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return run_command(args)
    except KeyboardInterrupt:
        print("brownout: interrupted", file=sys.stderr)
        return 130


def run() -> NoReturn:
    sys.exit(main())
