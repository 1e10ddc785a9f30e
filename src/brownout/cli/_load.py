"""``brownout load``, ``brownout knee`` and ``brownout merge``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._clock import wall_time
from ..errors import BrownoutError, ThresholdError
from ..units import parse_duration, parse_rate

EXIT_OK, EXIT_THRESHOLDS, EXIT_USAGE = 0, 1, 2


class CommandError(Exception):
    """A bad flag value found after parsing: reported in one line, exit 2."""


def _segment(text: str) -> tuple[int, int]:
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise CommandError(f"--segment={text!r} must look like K/N, for example 2/4") from None
    if not (n >= 1 and 1 <= k <= n):
        raise CommandError(f"--segment={text!r} needs 1 <= K <= N")
    return k, n


def add_load_commands(sub: Any) -> None:
    load = sub.add_parser(
        "load",
        help="open-model load against a URL or a scenario file",
        description=(
            "Send open-model load (arrivals never wait for responses) and measure response "
            "time from each request's intended start. TARGET is an http:// URL on loopback "
            "(quick form: --rate, --duration, --timeout) or a scenario .toml file."
        ),
    )
    load.add_argument(
        "target", metavar="TARGET", help="http://127.0.0.1:PORT/path or scenario.toml"
    )
    load.add_argument("--rate", help="requests per second, quick form (default 100)")
    load.add_argument("--duration", help="how long, quick form: 30s, 2m (default 10s)")
    load.add_argument("--timeout", help="client timeout, quick form (default 2s)")
    load.add_argument(
        "--arrival",
        choices=["constant", "poisson"],
        help="arrival process, quick form (default constant)",
    )
    _common_run_flags(load)
    load.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="EXPR",
        help="k6-style threshold, e.g. 'p(99) < 300ms' (repeatable)",
    )
    load.add_argument("--hdr-log", metavar="PATH", help="also write an HdrHistogram interval log")
    load.add_argument(
        "--proxy-api",
        metavar="URL",
        help="control API of a running brownout proxy (or Toxiproxy) for the fault timeline; "
        "without it, the scenario's [[proxies]] are started for the run",
    )
    load.set_defaults(handler=cmd_load)

    knee = sub.add_parser(
        "knee",
        help="find the highest sustainable rate",
        description=(
            "Raise an open-model rate geometrically, then bisect, holding each step long "
            "enough and discarding its warm-up. A step passes when achieved/offered >= 0.98, "
            "the SLO holds on corrected latency, errors stay within budget, in-flight is not "
            "growing and the generator's send lag stays small."
        ),
    )
    knee.add_argument("target", metavar="TARGET", help="http:// URL on loopback or scenario.toml")
    knee.add_argument(
        "--slo", required=True, metavar="EXPR", help="latency SLO, e.g. 'p(99) < 300ms'"
    )
    knee.add_argument("--start-rate", default="50", help="first step's rate (default 50/s)")
    knee.add_argument(
        "--max-rate", default="20000", help="never go above this rate (default 20000/s)"
    )
    knee.add_argument("--step", default="5s", help="measured time per step (default 5s)")
    knee.add_argument(
        "--warmup", default="1s", help="discarded time at the start of each step (default 1s)"
    )
    knee.add_argument(
        "--error-budget", default="1%", help="allowed error+shed+timeout rate (default 1%%)"
    )
    knee.add_argument(
        "--precision",
        default="5%",
        help="stop bisecting when the bracket is this narrow (default 5%%)",
    )
    knee.add_argument("--timeout", help="client timeout for URL targets (default 2s)")
    _common_run_flags(knee)
    knee.set_defaults(handler=cmd_knee)

    merge = sub.add_parser(
        "merge",
        help="combine results files exactly",
        description="Combine results from several workers or machines: histograms are merged, never percentiles averaged.",
    )
    merge.add_argument("inputs", nargs="+", metavar="RESULTS.json")
    merge.add_argument("-o", "--out", required=True, metavar="PATH")
    merge.set_defaults(handler=cmd_merge)


def _common_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument(
        "--segment",
        default="1/1",
        help="this process's execution segment K/N of the global schedule",
    )
    p.add_argument(
        "--start-at",
        type=float,
        metavar="EPOCH",
        help="common start (Unix time) for segments on several machines",
    )
    p.add_argument("--seed", type=int, help="override the scenario's seed")
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST",
        help="allow a non-loopback target host",
    )
    p.add_argument("--out", "-o", metavar="PATH", help="write the results JSON here")
    p.add_argument("--quiet", "-q", action="store_true", help="no live view (for CI)")


def _scenario_from(
    args: argparse.Namespace, *, rate: float | None = None, duration_s: float | None = None
) -> Any:
    from ..scenario import load_scenario, quick_scenario

    target: str = args.target
    if target.startswith(("http://", "https://")):
        if rate is None:
            rate = parse_rate(getattr(args, "rate", None) or 100, field="--rate")
        if duration_s is None:
            text = getattr(args, "duration", None) or "10s"
            duration_s = parse_duration(text, field="--duration")
            if duration_s <= 0:
                raise CommandError(f"--duration={text!r} must be > 0, for example 30s")
        timeout_s = parse_duration(args.timeout or "2s", field="--timeout")
        if timeout_s <= 0:
            raise CommandError(f"--timeout={args.timeout!r} must be > 0, for example 2s")
        scenario = quick_scenario(
            target,
            rate=rate,
            duration_s=duration_s,
            timeout_s=timeout_s,
            arrival=getattr(args, "arrival", None) or "constant",
        )
    else:
        for flag in ("rate", "duration", "timeout", "arrival"):
            if getattr(args, flag, None) is not None:
                raise CommandError(
                    f"--{flag} applies to the URL form; set it in the scenario file {target}"
                )
        if not Path(target).is_file():
            raise CommandError(
                f"TARGET={target!r} is neither an http:// URL nor a scenario file that exists"
            )
        scenario = load_scenario(target)
    changes: dict[str, Any] = {}
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.allow_host:
        changes["allow_hosts"] = tuple(scenario.allow_hosts) + tuple(args.allow_host)
    return dataclasses.replace(scenario, **changes) if changes else scenario


@contextlib.contextmanager
def _ctrl_c() -> Iterator[list[bool]]:
    """Ctrl-C asks the run to stop; a second Ctrl-C interrupts at once."""
    flag = [False]
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: object) -> None:
        if flag[0]:
            raise KeyboardInterrupt
        flag[0] = True
        print(
            "\nbrownout: stopping (Ctrl-C again to abort); partial results follow", file=sys.stderr
        )

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _check_workers(args: argparse.Namespace) -> None:
    if not 1 <= args.workers <= 64:
        raise CommandError(f"--workers={args.workers} must be between 1 and 64")


def run_scenario(
    scenario: Any,
    args: argparse.Namespace,
    *,
    quiet: bool,
    thresholds: list[Any],
    faults: Any = None,
) -> dict[str, Any]:
    """Run one scenario with the process/segment flags; returns the results document."""
    from ..load import run_load
    from ..results import evaluate_all
    from ._live import LiveView

    _check_workers(args)
    segment = _segment(args.segment)
    live: LiveView
    view: contextlib.AbstractContextManager[Any]
    if not quiet and sys.stderr.isatty():
        from ._live_rich import RichLiveView

        live = view = RichLiveView(workers=args.workers, duration_s=scenario.duration_s)
    else:
        live = LiveView(workers=args.workers, duration_s=scenario.duration_s, quiet=quiet)
        view = contextlib.nullcontext()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    with _ctrl_c() as stop, view:
        doc = run_load(
            scenario,
            workers=args.workers,
            segment=segment,
            start_wall=args.start_at,
            on_interval=live,
            should_stop=lambda: stop[0],
            abort_on=tuple(t for t in thresholds if getattr(t, "abort_on_fail", False)),
            faults=faults,
        )
        if stop[0]:
            doc["interrupted"] = True
    doc["started_at"] = doc.get("started_at") or started
    doc["scenario"] = {"name": scenario.name, "spec": scenario.to_dict()}
    specs = list(thresholds)
    if specs:
        evaluate_all(specs, doc)
    return doc


def _check_writable(flag: str, path: str | None) -> None:
    """Refuse an output path that cannot be written *before* the run, so no run is lost."""
    if path is None:
        return
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise CommandError(f"{flag}={path!r}: the folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise CommandError(f"{flag}={path!r}: the folder {str(parent)!r} is not writable")
    if Path(path).is_dir():
        raise CommandError(f"{flag}={path!r} is a folder; give a file name")


def cmd_load(args: argparse.Namespace) -> int:
    from ..faults import fault_session
    from ..results import parse_threshold, write_results, write_timeline_log
    from ._live import summary_table

    _check_writable("--out", args.out)
    _check_writable("--hdr-log", args.hdr_log)

    scenario = _scenario_from(args)
    thresholds = [_flag_threshold("--threshold", t) for t in args.threshold]
    thresholds += [
        parse_threshold(
            t.expr, class_name=t.class_name, endpoint=t.endpoint, abort_on_fail=t.abort_on_fail
        )
        for t in scenario.all_thresholds()
    ]
    if args.proxy_api is not None:
        _loopback_api(args.proxy_api, scenario)
    # Only the first execution segment drives the faults: with segments on several
    # machines, one timeline acts on the proxies.
    runs_faults = _segment(args.segment)[0] == 1
    with (
        fault_session(scenario, proxy_api=args.proxy_api)
        if runs_faults
        else contextlib.nullcontext()
    ) as timeline:
        doc = run_scenario(scenario, args, quiet=args.quiet, thresholds=thresholds, faults=timeline)
    print(summary_table(doc))
    if args.out:
        write_results(args.out, doc)
        print(f"results: {args.out}")
    if args.hdr_log:
        with open(args.hdr_log, "w") as fh:
            write_timeline_log(fh, doc)
        print(f"hdr interval log: {args.hdr_log}")
    failed = [t for t in doc.get("thresholds", []) if not t.get("passed")]
    return EXIT_THRESHOLDS if failed else EXIT_OK


def _loopback_api(url: str, scenario: Any) -> None:
    """The control API follows the target's rule: loopback unless the host is allowed."""
    from urllib.parse import urlsplit

    from .._net import is_loopback

    try:
        host = urlsplit(url).hostname
    except ValueError:
        host = None
    if not url.startswith("http://") or not host:
        raise CommandError(
            f"--proxy-api={url!r} must be an http:// URL such as http://127.0.0.1:8474"
        )
    if not is_loopback(host) and host not in scenario.allow_hosts:
        raise CommandError(
            f"--proxy-api={url!r} is not on loopback; name {host} with --allow-host to use it"
        )


def cmd_merge(args: argparse.Namespace) -> int:
    from ..results import load_results, merge_results, write_results
    from ._live import summary_table

    _check_writable("--out", args.out)

    docs = [load_results(p) for p in args.inputs]
    merged = merge_results(docs)
    write_results(args.out, merged)
    print(summary_table(merged))
    print(f"merged {len(docs)} results into {args.out}")
    failed = [t for t in merged.get("thresholds", []) if not t.get("passed")]
    return EXIT_THRESHOLDS if failed else EXIT_OK


def cmd_knee(args: argparse.Namespace) -> int:
    from ..load import KneeSearch
    from ..results import write_results

    _check_writable("--out", args.out)

    slo = _flag_threshold("--slo", args.slo)
    try:
        search = KneeSearch(
            slo=slo,
            start_rate=parse_rate(args.start_rate, field="--start-rate"),
            max_rate=parse_rate(args.max_rate, field="--max-rate"),
            step_s=parse_duration(args.step, field="--step"),
            warmup_s=parse_duration(args.warmup, field="--warmup"),
            error_budget=_percent(args.error_budget, "--error-budget"),
            precision=_percent(args.precision, "--precision"),
        )
    except ThresholdError as exc:
        raise CommandError(f"--slo={args.slo!r}: {exc.reason}") from None
    except ValueError as exc:  # KneeSearch's own range checks name the flag
        if isinstance(exc, BrownoutError):
            raise
        raise CommandError(str(exc)) from None

    def run_step(rate: float, duration_s: float) -> dict[str, Any]:
        scenario = _scenario_from(args, rate=rate, duration_s=duration_s)
        return run_scenario(scenario, args, quiet=True, thresholds=[])

    with _ctrl_c() as stop:
        result = search.run(
            run_step, should_stop=lambda: stop[0], on_step=lambda s: print(s.describe(), flush=True)
        )
    print(result.describe())
    if args.out:
        write_results(args.out, result.to_document())
        print(f"results: {args.out}")
    return EXIT_OK


def _flag_threshold(flag: str, text: str) -> Any:
    """Parse a threshold given by ``flag``; a bad one is reported naming the flag."""
    from ..results import parse_threshold

    try:
        return parse_threshold(text)
    except ThresholdError as exc:
        raise CommandError(f"{flag}={text!r}: {exc.reason}") from None


def _percent(text: str, flag: str) -> float:
    from ..units import parse_percent

    return parse_percent(text, field=flag)


def run_command(args: argparse.Namespace) -> int:
    try:
        return int(args.handler(args))
    except (CommandError, BrownoutError, OSError) as exc:
        print(f"brownout: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


_ = wall_time
