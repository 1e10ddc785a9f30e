#!/usr/bin/env python3
"""Requests per second through GuardMiddleware, as a ratio to the bare app and beside slowapi.

A hello-world Starlette app runs under uvicorn (1 worker, uvloop + httptools, access log
off) pinned to core 1; wrk (Debian package, installed with apt-get when missing) drives it
from core 0 (``taskset``): 1 thread, 64 keep-alive connections. Variants, each in a fresh
server process:

1. ``bare``: the app alone.
2. ``guard``: ``GuardMiddleware`` with a ``TrafficShield`` (its scores never act: wrk is
   a bot by every measure), a memory ``RateLimit`` per client set far above what wrk can
   send (so it never refuses: every request pays the full decision) and the default
   adaptive ``ConcurrencyLimit``.
3. What each part costs: ``guard_no_shield`` (the same without the shield),
   ``guard_default`` (``GuardMiddleware(app)``: the concurrency limit alone) and
   ``guard_plumbing`` (``GuardMiddleware(app, limit=False)``: the middleware itself).
4. ``slowapi``: slowapi's ``Limiter`` keyed by the remote address with the same limit as
   its default limit, through its middleware (the pure-ASGI one when the installed slowapi
   has it). slowapi is installed with pip when missing.

Each variant runs ``--rounds`` times (default 3) in interleaved order after a warm-up; the
figure is the median. Then each variant runs side by side with bare (``--pairs`` fresh
pairs, both servers on core 1 at once, each under its own wrk; the method and why are in
``bench_probe.py`` and ``_wrkbench.side_by_side``), which this shared VM's drift disturbs
far less. Targets (issue 5): guard >= 0.9x bare, and above slowapi.

    python benchmarks/bench_middleware.py            # 3 rounds of 8 s each
    python benchmarks/bench_middleware.py --quick    # 3 rounds of 4 s
    python benchmarks/bench_middleware.py --json out.json
    python benchmarks/bench_middleware.py --work-us 200   # against 200 us of app CPU

Besides req/s the script reads the server process's CPU time over each run: ``us/req`` is
server CPU per request, and bare's figure divided by a variant's is the throughput ratio
on a saturated server core, which other load on the machine disturbs much less than req/s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _wrkbench import (
    SERVER_CORE,
    Pair,
    Run,
    ensure_packages,
    ensure_wrk,
    free_port,
    pinned,
    print_side_by_side,
    run_wrk,
    say,
    side_by_side,
)

TARGET_VS_BARE = 0.9
CONNECTIONS = 64
HIGH_RATE = 1_000_000_000  # requests per second per client: never reached
VARIANTS = ("bare", "guard", "guard_no_shield", "guard_default", "guard_plumbing", "slowapi")


# -- the apps (built in the server process) -------------------------------------------------


def hello_app(work_us: float = 0.0) -> Any:
    """The hello-world app; ``work_us`` > 0 makes each request burn that much CPU first
    (a stand-in for a real handler, to show the overhead against real work)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Request) -> PlainTextResponse:
        if work_us:
            end = time.perf_counter() + work_us / 1e6
            while time.perf_counter() < end:
                pass
        return PlainTextResponse("hello")

    return Starlette(routes=[Route("/", hello)])


def guard_parts() -> tuple[list[str], dict[str, Any]]:
    """The GuardMiddleware settings of the ``guard`` variant, and what was available."""
    included = ["concurrency limit (gradient2)"]
    kwargs: dict[str, Any] = {}
    try:
        from brownout.asgi import TrafficShield

        # wrk is a bot by every measure (no user agent, one address, a clockwork rate):
        # scores of 1.0 are never reached, so the shield scores every request and lets it go.
        kwargs["shield"] = TrafficShield(limit_score=1.0, block_score=1.0)
        included.append("TrafficShield(limit_score=1.0, block_score=1.0)")
    except ImportError:
        pass
    try:
        from brownout.guard._ratelimit import RateLimit

        kwargs["rate_limits"] = [(RateLimit(rate=HIGH_RATE, burst=HIGH_RATE), None)]
        included.append(f"memory RateLimit(rate={HIGH_RATE:.0e}/s) per client")
    except ImportError:
        pass
    return included, kwargs


def build(variant: str, work_us: float = 0.0) -> Any:
    app = hello_app(work_us)
    if variant == "bare":
        return app
    if variant.startswith("guard"):
        from brownout.asgi import GuardMiddleware

        kwargs = guard_parts()[1]
        if variant == "guard_default":
            kwargs = {}
        elif variant == "guard_plumbing":
            kwargs = {"limit": False}
        elif variant == "guard_no_shield":
            kwargs.pop("shield", None)
        return GuardMiddleware(app, **kwargs)
    if variant == "slowapi":
        from slowapi import Limiter
        from slowapi.util import get_remote_address

        limiter = Limiter(key_func=get_remote_address, default_limits=[f"{HIGH_RATE}/second"])
        app.state.limiter = limiter
        try:
            from slowapi.middleware import SlowAPIASGIMiddleware as Middleware
        except ImportError:
            from slowapi.middleware import SlowAPIMiddleware as Middleware
        app.add_middleware(Middleware)
        return app
    raise SystemExit(f"unknown variant {variant!r}")


def slowapi_flavour() -> str:
    try:
        from slowapi.middleware import SlowAPIASGIMiddleware  # noqa: F401
    except ImportError:
        return "SlowAPIMiddleware (BaseHTTPMiddleware)"
    return "SlowAPIASGIMiddleware (pure ASGI)"


def serve(variant: str, port: int, work_us: float) -> None:
    """Runs in the pinned server process."""
    import uvicorn

    uvicorn.run(
        build(variant, work_us),
        host="127.0.0.1",
        port=port,
        workers=1,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
        backlog=2048,
    )


# -- tools ----------------------------------------------------------------------------------


def ensure_python_packages() -> None:
    ensure_packages((("uvicorn", "uvicorn"), ("slowapi", "slowapi"), ("uvloop", "uvloop")))


@contextlib.contextmanager
def server(variant: str, work_us: float = 0.0) -> Iterator[tuple[str, int]]:
    """The variant's server pinned to the server core; yields its URL and process id."""
    port = free_port()
    args = ["--serve", variant, str(port), "--work-us", str(work_us)]
    with pinned(__file__, args, SERVER_CORE, port) as pid:
        yield f"http://127.0.0.1:{port}/", pid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="4 s runs instead of 8 s")
    parser.add_argument("--rounds", type=int, default=3, help="one-at-a-time rounds")
    parser.add_argument(
        "--pairs",
        type=int,
        default=None,
        help="side-by-side pairs per variant (default 2, --quick 1; 0: none)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--work-us",
        type=float,
        default=0.0,
        help="CPU microseconds each request burns in the app (default 0: hello world)",
    )
    parser.add_argument("--serve", nargs=2, metavar=("VARIANT", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), args.work_us)
        return 0

    seconds = 4.0 if args.quick else 8.0
    if (os.cpu_count() or 1) < 2:
        say("warning: fewer than 2 cores; wrk and the server share a core")
    ensure_wrk()
    ensure_python_packages()
    included, _ = guard_parts()
    say(f"guard variant: GuardMiddleware with {', '.join(included)}")
    say(f"slowapi variant: {slowapi_flavour()}, limit {HIGH_RATE}/second per remote address")
    runs: dict[str, list[Run]] = {v: [] for v in VARIANTS}
    for rnd in range(args.rounds):
        for variant in VARIANTS:
            with server(variant, args.work_us) as (url, pid):
                run_wrk(url, 1.0, pid, CONNECTIONS)  # warm-up: connections, imports, caches
                run = run_wrk(url, seconds, pid, CONNECTIONS)
            if run.non_2xx:
                raise SystemExit(
                    f"{variant}: {run.non_2xx} non-2xx responses: a limit refused requests, so "
                    "the figure would measure rejections; fix the configuration"
                )
            runs[variant].append(run)
            say(
                f"round {rnd + 1}: {variant:16s} {run.rps:10,.0f} req/s "
                f"{run.cpu_us_per_request:7.1f} us server CPU/request"
            )
    pairs = args.pairs if args.pairs is not None else (1 if args.quick else 2)
    side: dict[str, list[Pair]] = {}
    for variant in VARIANTS[1:] if pairs > 0 else ():
        side[variant] = side_by_side(
            __file__,
            variant,
            lambda name, port: ["--serve", name, str(port), "--work-us", str(args.work_us)],
            "/",
            pairs=pairs,
            rounds=2,
            seconds=seconds / 2,
            connections=CONNECTIONS,
        )
    rps = {v: statistics.median(r.rps for r in rs) for v, rs in runs.items()}
    cpu = {v: statistics.median(r.cpu_us_per_request for r in rs) for v, rs in runs.items()}
    print(
        f"\nhello-world Starlette under uvicorn (app work {args.work_us:g} us/request), "
        f"wrk -t1 -c64, median of {args.rounds} x "
        f"{seconds:g} s. 'x bare (cpu)' = bare's server CPU per request / the variant's: the "
        "throughput ratio on a saturated server core, insensitive to other load on the machine."
    )
    print(f"{'variant':16s} {'req/s':>10s} {'x bare':>8s} {'us/req':>8s} {'x bare (cpu)':>13s}")
    for v in VARIANTS:
        print(
            f"{v:16s} {rps[v]:10,.0f} {rps[v] / rps['bare']:8.3f} {cpu[v]:8.1f} "
            f"{cpu['bare'] / cpu[v]:13.3f}"
        )
    print_side_by_side(
        side,
        f"\nSide by side (bare and the variant on one core at once, {pairs} fresh pairs x 2 "
        f"rounds of {seconds / 2:g} s, wrk -c{CONNECTIONS} each; see bench_probe.py): "
        "'x bare' = bare's server CPU per request / the variant's.",
    )
    by_rps = rps["guard"] / rps["bare"]
    by_cpu = cpu["bare"] / cpu["guard"]
    vs_slowapi = cpu["slowapi"] / cpu["guard"]
    print(
        f"guard vs bare: {by_rps:.3f} (req/s), {by_cpu:.3f} (CPU per request); target >= "
        f"{TARGET_VS_BARE}: {'met' if min(by_rps, by_cpu) >= TARGET_VS_BARE else 'NOT met'}. "
        f"guard vs slowapi: {rps['guard'] / rps['slowapi']:.2f} (req/s), {vs_slowapi:.2f} "
        f"(CPU per request); target > 1: {'met' if vs_slowapi > 1 else 'NOT met'}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": platform.platform(),
                    "python": platform.python_version(),
                    "seconds": seconds,
                    "work_us": args.work_us,
                    "runs": {
                        v: [{k: x for k, x in vars(r).items() if k != "wrk_output"} for r in rs]
                        for v, rs in runs.items()
                    },
                    "median_rps": rps,
                    "median_cpu_us_per_request": cpu,
                    "side_by_side": {v: [p.ratio for p in found] for v, found in side.items()},
                    "guard_included": included,
                    "slowapi": slowapi_flavour(),
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
