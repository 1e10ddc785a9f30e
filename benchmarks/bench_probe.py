#!/usr/bin/env python3
"""Requests per second of a realistic endpoint with and without the probe, same run.

The endpoint (``GET /orders/{id}``, Starlette under uvicorn: 1 worker, uvloop + httptools,
access log off, pinned to core 1) runs three SQLite queries through SQLAlchemy's async
engine (aiosqlite) and one httpx call to a loopback dependency (a minimal keep-alive HTTP
responder on uvloop, pinned to core 0), and returns JSON. wrk (Debian package, installed
with apt-get when missing) drives it from core 0. Variants, each in fresh server processes:

1. ``bare``: the app alone.
2. ``probe``: ``ProbeMiddleware(app, probe=install())``: every hook (SQLAlchemy, sqlite3,
   httpx/aiohttp/requests, thread pools, the event-loop monitor with CPU time per step).
3. ``probe_no_loop``: the same with ``install(loop=False)``: what the loop monitor costs.
4. ``probe_middleware``: ``install()`` with every hook off: the middleware and the ledger.
5. ``probe_sampled``: every hook, ``install(sample=0.1)``: one request in ten measured, the
   setting for a probe left on under production traffic.

On a shared VM a core's speed drifts by tens of percent within seconds (other tenants), so
runs one after the other cannot resolve a few percent. Two measurements cancel the drift:

- **Alternating** (the figure): one server, alone on core 1, serves bare and the variant in
  turns of 0.6 s (the probe installed, then uninstalled, with the same app, engine and
  client; the first 0.2 s of a turn lets the previous turn's requests finish) while wrk
  drives it (32 connections) for ``--alternate-seconds``. Each variant turn's server CPU per
  request is compared with its two bare neighbours'; the figure is the median over the
  turns. This is the same run, the same process, a server alone on its core.
- **Side by side** (harsher): a bare server and a variant server, both pinned to core 1
  under SCHED_BATCH, each under its own wrk (16 connections) at the same time; the kernel
  splits the core, and the ratio of their CPU per request is taken. ``--pairs`` fresh pairs
  (start order alternating) x 2 rounds. Two processes sharing a core also evict each
  other's caches, which makes extra code cost more than it does alone (the middleware-only
  variant reads ~0.95 here and ~0.99 alternating).

``x bare`` is bare's server CPU per request over the variant's: the variant's throughput on
a saturated core as a share of bare's. Target (issue 6): probe >= 0.95 x bare (at most 5%
loss). One-at-a-time runs (``--rounds``) give the absolute req/s and CPU per request. A run
in which a server answered nothing or used no CPU stops the script with wrk's output.
``us/req`` counts every thread of the server process (aiosqlite's included). After the
side-by-side probe runs the script reads the probe's ledger from the app
(``/_brownout/ledger``) to show that the hooks saw the work.

    python benchmarks/bench_probe.py            # 60 s alternating, 4 pairs, 3 x 8 s per variant
    python benchmarks/bench_probe.py --quick    # 30 s alternating, 2 pairs, 3 x 4 s per variant
    python benchmarks/bench_probe.py --json out.json
    python benchmarks/bench_probe.py --steps    # only the per-step cost of the loop monitor
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

from _wrkbench import (
    GENERATOR_CORE,
    SERVER_CORE,
    Pair,
    Run,
    ensure_packages,
    ensure_wrk,
    free_port,
    pinned,
    print_side_by_side,
    ratio,
    run_wrk,
    say,
    side_by_side,
)

TARGET_VS_BARE = 0.95
ONE_AT_A_TIME_CONNECTIONS = 32
VARIANTS = ("bare", "probe", "probe_no_loop", "probe_middleware", "probe_sampled")
SAMPLE = 0.1  # the probe_sampled variant's install(sample=...)
SIDE_BY_SIDE_CONNECTIONS = 16  # per server, in the side-by-side runs
ALTERNATE = "alternate:"  # a server variant that alternates bare and a probe variant
ALTERNATE_SLICE_S = 0.6
ALTERNATE_SETTLE_S = 0.2
LEDGER_PATH = "/_brownout/ledger"
ORDERS = 1000
PRODUCTS = 500
ITEMS_PER_ORDER = 5


# -- the database and the dependency --------------------------------------------------------


def make_database(path: Path) -> None:
    """Orders, their items and products; deterministic content."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(
            """
            create table products (id integer primary key, name text, price_cents integer);
            create table orders (id integer primary key, customer text, status text);
            create table order_items (order_id integer, product_id integer, qty integer);
            create index order_items_order on order_items (order_id);
            """
        )
        db.executemany(
            "insert into products values (?, ?, ?)",
            [(i, f"product {i}", 100 + (i * 37) % 9000) for i in range(1, PRODUCTS + 1)],
        )
        db.executemany(
            "insert into orders values (?, ?, ?)",
            [(i, f"customer {i % 97}", "paid") for i in range(1, ORDERS + 1)],
        )
        db.executemany(
            "insert into order_items values (?, ?, ?)",
            [
                (o, 1 + (o * 7 + k * 13) % PRODUCTS, 1 + k)
                for o in range(1, ORDERS + 1)
                for k in range(ITEMS_PER_ORDER)
            ],
        )
        db.commit()


_DEPENDENCY_BODY = b'{"currency": "EUR", "rate": 1.0, "eta_days": 2}'
_DEPENDENCY_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(_DEPENDENCY_BODY)).encode()
    + b"\r\n\r\n"
    + _DEPENDENCY_BODY
)


class _Dependency(asyncio.Protocol):
    """Answers every GET with the same small JSON body; keep-alive, pipelining-safe."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.buffer = self.buffer[end + 4 :]
            self.transport.write(_DEPENDENCY_RESPONSE)


def serve_dependency(port: int) -> None:
    """Runs in the dependency process."""
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Dependency, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


# -- the app (built in the server process) --------------------------------------------------


def install_variant(variant: str) -> Any:
    """The probe of a probe variant (``install()`` with that variant's settings)."""
    from brownout.probe import install

    if variant == "probe_middleware":  # the middleware and the ledger, no hook at all
        return install(
            sqlalchemy=False,
            sqlite3=False,
            asyncpg=False,
            psycopg=False,
            http=False,
            loop=False,
            threads=False,
        )
    if variant == "probe_sampled":
        return install(sample=SAMPLE)
    return install(loop=variant == "probe")


def shop_app(database: Path, dependency_port: int) -> Any:
    """The endpoint under test, without any probe."""
    import httpx
    from sqlalchemy import bindparam, text
    from sqlalchemy.ext.asyncio import create_async_engine
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    engine = create_async_engine(f"sqlite+aiosqlite:///{database}")
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{dependency_port}", timeout=2.0)
    order_sql = text("select id, customer, status from orders where id = :id")
    items_sql = text("select product_id, qty from order_items where order_id = :id")
    products_sql = text("select id, name, price_cents from products where id in :ids").bindparams(
        bindparam("ids", expanding=True)
    )

    async def order(request: Request) -> JSONResponse:
        order_id = int(request.path_params["id"])
        async with engine.connect() as conn:
            head = (await conn.execute(order_sql, {"id": order_id})).one()
            items = (await conn.execute(items_sql, {"id": order_id})).all()
            products = {
                row.id: row
                for row in await conn.execute(products_sql, {"ids": [i.product_id for i in items]})
            }
        shipping = (await client.get(f"/shipping/{order_id}")).json()
        lines = [
            {
                "product": products[i.product_id].name,
                "qty": i.qty,
                "cents": products[i.product_id].price_cents * i.qty,
            }
            for i in items
        ]
        return JSONResponse(
            {
                "id": head.id,
                "customer": head.customer,
                "status": head.status,
                "lines": lines,
                "total_cents": sum(line["cents"] for line in lines),
                "shipping": shipping,
            }
        )

    return Starlette(routes=[Route("/orders/{id:int}", order)])


def build(variant: str, database: Path, dependency_port: int) -> Any:
    if variant.startswith(ALTERNATE):
        return Alternating(variant.removeprefix(ALTERNATE), database, dependency_port)
    # hooks first: the engine and the client are then created patched
    probe = None if variant == "bare" else install_variant(variant)
    app = shop_app(database, dependency_port)
    if probe is None:
        return app
    from brownout.probe import ProbeMiddleware

    return ProbeMiddleware(app, probe=probe, ledger_path=LEDGER_PATH)


class Alternating:
    """One server that serves bare and ``variant`` in turns of ``ALTERNATE_SLICE_S``: the
    probe installed, then uninstalled, and so on, with the same app, engine and client.
    Each turn's first ``ALTERNATE_SETTLE_S`` lets the requests of the previous turn finish;
    then its process CPU time and completed requests are counted. ``GET /_bench/slices``
    returns the turns as JSON. Solo on its core (nothing else shares it) and immune to the
    machine's drift between turns that are seconds apart, since the figure compares
    neighbouring turns."""

    def __init__(self, variant: str, database: Path, dependency_port: int) -> None:
        self.variant = variant
        self.bare = shop_app(database, dependency_port)
        self.target: Any = self.bare
        self.mode = "bare"
        self.probe: Any = None
        self.done = 0  # requests completed
        self.slices: list[dict[str, Any]] = []
        self.flipper: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/_bench/slices":
            body = json.dumps(self.slices).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        if self.flipper is None:
            self.flipper = asyncio.get_running_loop().create_task(self.flip())
        await self.target(scope, receive, send)
        self.done += 1

    async def flip(self) -> None:
        from brownout.probe import ProbeMiddleware

        while True:
            await asyncio.sleep(ALTERNATE_SETTLE_S)
            cpu0, done0 = time.process_time(), self.done
            await asyncio.sleep(ALTERNATE_SLICE_S - ALTERNATE_SETTLE_S)
            cpu = time.process_time() - cpu0
            self.slices.append({"mode": self.mode, "cpu_s": cpu, "requests": self.done - done0})
            if self.probe is None:
                self.probe = install_variant(self.variant)
                self.target = ProbeMiddleware(self.bare, probe=self.probe)
                self.mode = self.variant
            else:
                self.probe.uninstall()
                self.probe = None
                self.target = self.bare
                self.mode = "bare"


def serve(variant: str, port: int, database: Path, dependency_port: int) -> None:
    """Runs in the pinned server process."""
    import uvicorn

    uvicorn.run(
        build(variant, database, dependency_port),
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
    ensure_packages(
        (
            ("uvicorn", "uvicorn"),
            ("uvloop", "uvloop"),
            ("httptools", "httptools"),
            ("aiosqlite", "aiosqlite"),
            ("sqlalchemy", "sqlalchemy"),
            ("httpx", "httpx"),
            ("starlette", "starlette"),
            # without sniffio, httpcore retries a failing import on every call (a path scan
            # several times per request), which inflates bare's cost and flatters the probe
            ("sniffio", "sniffio"),
        )
    )


def serve_args(name: str, port: int, *, database: Path, dependency_port: int) -> list[str]:
    """The command-line arguments that make this script serve variant ``name``."""
    return ["--serve", name, str(port), str(database), str(dependency_port)]


def process(args: list[str], core: str, port: int, *, batch: bool = False) -> Any:
    """This script with ``args``, pinned to ``core``, listening on ``port``."""
    return pinned(__file__, args, core, port, batch=batch)


def _means(data: Any) -> Any:
    """The ledger without its histograms, each demand reduced to its mean."""
    if isinstance(data, dict):
        if "mean" in data and "hist" in data:
            return data["mean"]
        return {k: _means(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_means(v) for v in data]
    return data


def ledger_summary(port: int) -> dict[str, Any]:
    """What the probe booked (from the app's loopback ledger), demands as means."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{LEDGER_PATH}", timeout=5) as r:
        ledger = json.load(r)
    return {"endpoints": _means(ledger.get("endpoints", {})), "findings": ledger.get("findings")}


# -- alternating -------------------------------------------------------------------------------


def alternating(variant: str, database: Path, dependency_port: int, seconds: float) -> list[float]:
    """Drive one :class:`Alternating` server (bare and ``variant`` in turns) alone on the
    server core for ``seconds``; returns, for each of the variant's turns between two bare
    ones, the mean of the neighbours' server CPU per request over the turn's."""
    port = free_port()
    argv = serve_args(ALTERNATE + variant, port, database=database, dependency_port=dependency_port)
    with process(argv, SERVER_CORE, port) as pid:
        url = f"http://127.0.0.1:{port}/orders/17"
        run = run_wrk(url, seconds, pid, ONE_AT_A_TIME_CONNECTIONS)
        if not run.usable or run.non_2xx:
            raise SystemExit(f"alternating {variant}: no usable run; wrk said:\n{run.wrk_output}")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_bench/slices", timeout=5) as r:
            slices = json.load(r)[2:]  # the first turns include the warm-up
    per_request = [
        (s["mode"], ratio(s["cpu_s"], s["requests"])) for s in slices if s["requests"] > 0
    ]
    found = []
    for i in range(1, len(per_request) - 1):
        mode, cost = per_request[i]
        before, after = per_request[i - 1], per_request[i + 1]
        if mode == variant and before[0] == after[0] == "bare":
            found.append(ratio((before[1] + after[1]) / 2, cost))
    say(f"alternating {variant}: " + ", ".join(f"{x:.3f}" for x in found))
    return found


# -- the per-step micro-benchmark -------------------------------------------------------------


def step_costs(steps: int = 200_000, repeats: int = 5) -> dict[str, dict[str, float]]:
    """Microseconds per task step (``await asyncio.sleep(0)`` in one task), best of
    ``repeats``: no monitor, the monitor without CPU time, the monitor with it."""
    import uvloop

    from brownout.probe import RequestCost, activate, deactivate
    from brownout.probe._loop import LoopMonitor

    async def spin() -> None:
        for _ in range(steps):
            await asyncio.sleep(0)

    async def measure(mode: str) -> float:
        loop = asyncio.get_running_loop()
        monitor = None
        if mode != "none":
            monitor = LoopMonitor(cpu=mode == "cpu")
            monitor.install(loop)
        token = activate(RequestCost("GET", "/", time.perf_counter()))
        try:
            started = time.perf_counter()
            await loop.create_task(spin())
            return (time.perf_counter() - started) / steps * 1e6
        finally:
            deactivate(token)
            if monitor is not None:
                monitor.uninstall()

    results: dict[str, dict[str, float]] = {}
    for name, runner in (("asyncio", asyncio.run), ("uvloop", uvloop.run)):
        best: dict[str, float] = {}
        for _ in range(repeats):
            for mode in ("none", "wall", "cpu"):
                us = runner(measure(mode))
                best[mode] = min(best.get(mode, us), us)
        results[name] = best
    return results


def print_step_costs(results: dict[str, dict[str, float]]) -> None:
    print(
        "per task step, best of 5 x 200k steps (us): loop, bare, +monitor (wall), +monitor (wall+cpu)"
    )
    for name, best in results.items():
        print(
            f"{name:8s} {best['none']:6.2f}  +{best['wall'] - best['none']:5.2f}  "
            f"+{best['cpu'] - best['none']:5.2f}"
        )


# -- main -----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="4 s runs instead of 8 s")
    parser.add_argument("--rounds", type=int, default=3, help="one-at-a-time rounds")
    parser.add_argument(
        "--pairs", type=int, help="side-by-side pairs per variant (default 4, --quick 2)"
    )
    parser.add_argument(
        "--alternate-seconds",
        type=float,
        default=None,
        help="length of each variant's alternating run (default 60, --quick 30; 0: none)",
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS[1:]),
        help=f"comma-separated variants to compare with bare (default: all of {VARIANTS[1:]})",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--steps", action="store_true", help="only the per-step micro-benchmark")
    parser.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--serve-dependency", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 0:
        parser.error(f"--rounds={args.rounds!r} must be 0 (no one-at-a-time runs) or more")
    chosen = [v for v in args.variants.split(",") if v]
    unknown = [v for v in chosen if v not in VARIANTS[1:]]
    if unknown or not chosen:
        parser.error(f"--variants={args.variants!r}: choose from {', '.join(VARIANTS[1:])}")
    variants = ("bare", *chosen)
    if args.pairs is not None and args.pairs < 0:
        parser.error(f"--pairs={args.pairs!r} must be 0 (no side-by-side runs) or more")
    if args.alternate_seconds is not None and not (
        args.alternate_seconds == 0 or args.alternate_seconds >= 10
    ):
        parser.error(
            f"--alternate-seconds={args.alternate_seconds!r} must be 0 (none) or at least 10"
        )
    if args.serve:
        variant, port, database, dependency_port = args.serve
        serve(variant, int(port), Path(database), int(dependency_port))
        return 0
    if args.serve_dependency:
        serve_dependency(args.serve_dependency)
        return 0
    ensure_python_packages()
    if args.steps:
        print_step_costs(step_costs())
        return 0

    seconds = 4.0 if args.quick else 8.0
    pairs = args.pairs if args.pairs is not None else (2 if args.quick else 4)
    if (os.cpu_count() or 1) < 2:
        say("warning: fewer than 2 cores; wrk and the server share a core")
    ensure_wrk()
    runs: dict[str, list[Run]] = {v: [] for v in variants}
    side: dict[str, list[Pair]] = {}
    alternate: dict[str, list[float]] = {}
    alternate_s = (
        args.alternate_seconds
        if args.alternate_seconds is not None
        else (30.0 if args.quick else 60.0)
    )
    ledger: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as tmp:
        database = Path(tmp) / "shop.db"
        make_database(database)
        dependency_port = free_port()
        with process(["--serve-dependency", str(dependency_port)], GENERATOR_CORE, dependency_port):
            for variant in variants[1:] if alternate_s > 0 else ():
                alternate[variant] = alternating(variant, database, dependency_port, alternate_s)
            for variant in variants[1:] if pairs > 0 else ():
                side[variant] = side_by_side(
                    __file__,
                    variant,
                    partial(serve_args, database=database, dependency_port=dependency_port),
                    "/orders/17",
                    pairs=pairs,
                    rounds=2,
                    seconds=seconds / 2,
                    connections=SIDE_BY_SIDE_CONNECTIONS,
                    after_last=(lambda port: ledger.update(ledger_summary(port)))
                    if variant == "probe"
                    else None,
                )
            for rnd in range(args.rounds):
                for variant in variants:
                    port = free_port()
                    argv = serve_args(
                        variant, port, database=database, dependency_port=dependency_port
                    )
                    with process(argv, SERVER_CORE, port) as pid:
                        url = f"http://127.0.0.1:{port}/orders/17"
                        # warm-up: connections, imports, caches
                        run_wrk(url, 1.0, pid, ONE_AT_A_TIME_CONNECTIONS)
                        run = run_wrk(url, seconds, pid, ONE_AT_A_TIME_CONNECTIONS)
                    if not run.usable:
                        raise SystemExit(
                            f"{variant}, round {rnd + 1}: no usable figures ({run.requests} "
                            f"requests, {run.server_cpu_s:g} s of server CPU); wrk said:\n"
                            f"{run.wrk_output}"
                        )
                    if run.non_2xx:
                        raise SystemExit(f"{variant}: {run.non_2xx} non-2xx responses")
                    runs[variant].append(run)
                    say(
                        f"round {rnd + 1}: {variant:16s} {run.rps:9,.0f} req/s "
                        f"{run.cpu_us_per_request:8.1f} us server CPU/request"
                    )
    rps = {v: statistics.median(r.rps for r in rs) for v, rs in runs.items() if rs}
    cpu = {v: statistics.median(r.cpu_us_per_request for r in rs) for v, rs in runs.items() if rs}
    print(
        "\nGET /orders/{id}: 3 SQLAlchemy async (aiosqlite) queries + 1 httpx call to a "
        "loopback dependency, Starlette under uvicorn."
    )
    alternate_median = {v: statistics.median(found) for v, found in alternate.items() if found}
    if alternate_median:
        print(
            f"\nAlternating (the figure): one server alone on its core serving bare and the "
            f"variant in turns of {ALTERNATE_SLICE_S:g} s for {alternate_s:g} s (wrk -c"
            f"{ONE_AT_A_TIME_CONNECTIONS}); 'x bare' = the neighbouring bare turns' server CPU "
            "per request / the variant turn's (= its throughput on a saturated core, as a "
            "share of bare's); the median over the variant's turns, and its quartiles."
        )
        print(f"{'variant':16s} {'x bare':>8s} {'q1':>7s} {'q3':>7s}  turns")
        for v, found in alternate.items():
            if len(found) < 2:
                continue
            q1, _, q3 = statistics.quantiles(found, n=4)
            print(f"{v:16s} {alternate_median[v]:8.3f} {q1:7.3f} {q3:7.3f}  {len(found)}")
    side_median = print_side_by_side(
        side,
        f"\nSide by side (harsher: two servers share one core, so each one's extra code also "
        f"costs cache misses): bare and the variant at once, {pairs} fresh pairs x 2 rounds "
        f"of {seconds / 2:g} s, wrk -c{SIDE_BY_SIDE_CONNECTIONS} each; 'x bare' as above.",
    )
    if rps:
        print(
            f"\nOne at a time (absolute figures; the machine drifts between runs): wrk -t1 "
            f"-c{ONE_AT_A_TIME_CONNECTIONS}, median of {args.rounds} x {seconds:g} s."
        )
        print(f"{'variant':16s} {'req/s':>9s} {'x bare':>8s} {'us/req':>8s} {'x bare (cpu)':>13s}")
    for v, v_rps in rps.items():
        print(
            f"{v:16s} {v_rps:9,.0f} {ratio(v_rps, rps['bare']):8.3f} {cpu[v]:8.1f} "
            f"{ratio(cpu['bare'], cpu[v]):13.3f}"
        )
    for v, label in (("probe", "every request"), ("probe_sampled", f"sample={SAMPLE:g}")):
        for method, figures in (("alternating", alternate_median), ("side by side", side_median)):
            if v in figures:
                verdict = "met" if figures[v] >= TARGET_VS_BARE else "NOT met"
                print(
                    f"{v} ({label}) vs bare, {method}: {figures[v]:.3f}; target >= "
                    f"{TARGET_VS_BARE}: {verdict}"
                )
    endpoints = ledger.get("endpoints", {})
    items = endpoints.items() if isinstance(endpoints, dict) else enumerate(endpoints)
    for name, stats in items:
        print(f"ledger (means) {name}: {json.dumps(stats, default=str)}")
    kinds = sorted({f.get("kind") for f in ledger.get("findings") or ()})
    print(f"ledger findings (kinds): {kinds}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": platform.platform(),
                    "python": platform.python_version(),
                    "seconds": seconds,
                    "side_by_side": {
                        v: [
                            {"bare_us": p.bare.cpu_us_per_request,
                             "variant_us": p.variant.cpu_us_per_request, "ratio": p.ratio}
                            for p in found
                        ]
                        for v, found in side.items()
                    },
                    "side_by_side_median": side_median,
                    "alternating": alternate,
                    "alternating_median": alternate_median,
                    "runs": {
                        v: [{k: x for k, x in vars(r).items() if k != "wrk_output"} for r in rs]
                        for v, rs in runs.items()
                    },
                    "median_rps": rps,
                    "median_cpu_us_per_request": cpu,
                    "ledger": ledger,
                },
                indent=2,
                default=str,
            )
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
