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

The figure is measured **side by side**: a server of the variant and a bare one, both
pinned to core 1 under SCHED_BATCH, each driven by its own wrk (1 thread, 16 connections)
at the same time; the kernel splits the core between them, and the ratio of their server
CPU per request (bare's / the variant's) is the variant's throughput on a saturated core as
a share of bare's. Both see the same machine at the same moment: on a shared VM a core's
speed drifts by tens of percent within seconds, and runs one after the other (kept below
for the absolute figures) cannot resolve a few percent. ``--pairs`` fresh pairs per variant
(start order alternating) x 2 rounds; the median is the figure. Target (issue 6): probe >=
0.95 x bare (at most 5% loss). A run in which a server answered nothing or used no CPU stops
the script with wrk's output. ``us/req`` is server CPU per request (all threads of the server
process, aiosqlite's included). After the side-by-side probe runs the script reads the
probe's ledger from the app (``/_brownout/ledger``) to show that the hooks saw the work.

    python benchmarks/bench_probe.py            # 4 pairs x 2 x 4 s; 3 rounds of 8 s each
    python benchmarks/bench_probe.py --quick    # 2 pairs x 2 x 2 s; 3 rounds of 4 s
    python benchmarks/bench_probe.py --json out.json
    python benchmarks/bench_probe.py --steps    # only the per-step cost of the loop monitor
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TARGET_VS_BARE = 0.95
SERVER_CORE = "1"
GENERATOR_CORE = "0"
VARIANTS = ("bare", "probe", "probe_no_loop", "probe_middleware", "probe_sampled")
SAMPLE = 0.1  # the probe_sampled variant's install(sample=...)
SIDE_BY_SIDE_CONNECTIONS = 16  # per server, in the side-by-side runs
LEDGER_PATH = "/_brownout/ledger"
ORDERS = 1000
PRODUCTS = 500
ITEMS_PER_ORDER = 5


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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


def build(variant: str, database: Path, dependency_port: int) -> Any:
    import httpx
    from sqlalchemy import bindparam, text
    from sqlalchemy.ext.asyncio import create_async_engine
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    probe = None
    if variant != "bare":
        from brownout.probe import install

        # hooks first: the engine and the client below are created patched
        if variant == "probe_middleware":  # the middleware and the ledger, no hook at all
            probe = install(
                sqlalchemy=False,
                sqlite3=False,
                asyncpg=False,
                psycopg=False,
                http=False,
                loop=False,
                threads=False,
            )
        elif variant == "probe_sampled":
            probe = install(sample=SAMPLE)
        else:
            probe = install(loop=variant == "probe")
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

    app = Starlette(routes=[Route("/orders/{id:int}", order)])
    if probe is None:
        return app
    from brownout.probe import ProbeMiddleware

    return ProbeMiddleware(app, probe=probe, ledger_path=LEDGER_PATH)


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


def ensure_wrk() -> None:
    if shutil.which("wrk") is not None:
        return
    say("installing wrk with apt-get (needs root)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, env=env)


def ensure_python_packages() -> None:
    for module, package in (
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
    ):
        try:
            __import__(module)
        except ImportError:
            say(f"installing {package} with pip")
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", package], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the process exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


@contextlib.contextmanager
def process(args: list[str], core: str, port: int, *, batch: bool = False) -> Iterator[int]:
    """This script with ``args``, pinned to ``core``, listening on ``port``; yields its pid.
    ``batch``: under ``SCHED_BATCH`` (``chrt -b 0``), so that two servers sharing the core
    take turns in long slices instead of preempting each other on every wake-up."""
    cmd = ["taskset", "-c", core, sys.executable, __file__, *args]
    if batch and shutil.which("chrt"):
        cmd = ["chrt", "-b", "0", *cmd]
    proc = subprocess.Popen(cmd)  # chrt and taskset exec: the pid is the server's
    try:
        wait_listening(port, proc)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far, all threads (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    rps: float
    requests: int
    non_2xx: int
    server_cpu_s: float
    wrk_output: str = ""

    @property
    def usable(self) -> bool:
        """Whether the figures can be divided by: the server answered and used CPU (a
        run starved by other load on the machine, or a stuck server, has neither)."""
        return self.requests > 0 and self.rps > 0 and self.server_cpu_s > 0

    @property
    def cpu_us_per_request(self) -> float:
        return ratio(self.server_cpu_s, self.requests) * 1e6


def wrk_command(url: str, seconds: float, connections: int = 32) -> list[str]:
    return [
        "taskset", "-c", GENERATOR_CORE, "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", url
    ]  # fmt: skip


def run_wrk(url: str, seconds: float, pid: int) -> Run:
    """One wrk run from the generator core, with the server's CPU time over it."""
    before = cpu_seconds(pid)
    out = subprocess.run(
        wrk_command(url, seconds), capture_output=True, text=True, check=True
    ).stdout
    return parse_wrk(out, cpu_seconds(pid) - before)


def parse_wrk(out: str, cpu: float) -> Run:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rps is None or total is None:
        raise RuntimeError(f"could not read wrk output:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    if errors:
        say(f"  wrk: {errors.group(0)}")
    return Run(float(rps.group(1)), int(total.group(1)), int(bad.group(1)) if bad else 0, cpu, out)


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when the denominator is not positive."""
    return numerator / denominator if denominator > 0 else math.nan


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


# -- side by side -----------------------------------------------------------------------------


@dataclass
class Pair:
    """One side-by-side round: both servers on the same core at once, each under its own
    wrk; ``ratio`` is bare's server CPU per request over the variant's."""

    bare: Run
    variant: Run

    @property
    def ratio(self) -> float:
        return ratio(self.bare.cpu_us_per_request, self.variant.cpu_us_per_request)


def side_by_side(
    variant: str,
    database: Path,
    dependency_port: int,
    *,
    pairs: int,
    rounds: int,
    seconds: float,
    keep_ledger: bool = False,
) -> tuple[list[Pair], dict[str, Any]]:
    """``pairs`` fresh pairs of servers (bare and ``variant``), both pinned to the server
    core under SCHED_BATCH and loaded at the same time for ``rounds`` x ``seconds``.

    Why: on a shared VM the speed of a core drifts by tens of percent within seconds (other
    tenants), so runs one after the other cannot resolve a few percent. Two servers loaded
    at once on one core see the same drift; the kernel splits the core between them, and
    each one's CPU per request (its CPU time over its requests) is measured under the same
    conditions. The pair's start order alternates (the second server started gets about 3%
    more, measured with two bare servers), and every pair is a fresh pair of processes (two
    processes of the same build differ by a few percent)."""
    found: list[Pair] = []
    ledger: dict[str, Any] = {}
    for n in range(pairs):
        order = ("bare", variant) if n % 2 == 0 else (variant, "bare")
        with contextlib.ExitStack() as stack:
            servers: dict[str, tuple[int, int]] = {}
            for name in order:
                port = free_port()
                serve_args = ["--serve", name, str(port), str(database), str(dependency_port)]
                pid = stack.enter_context(process(serve_args, SERVER_CORE, port, batch=True))
                servers[name] = (port, pid)
            for rnd in range(rounds + 1):  # the first round warms both up
                length = 2.0 if rnd == 0 else seconds
                before = {name: cpu_seconds(pid) for name, (_, pid) in servers.items()}
                procs = {
                    name: subprocess.Popen(
                        wrk_command(
                            f"http://127.0.0.1:{port}/orders/17", length, SIDE_BY_SIDE_CONNECTIONS
                        ),
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                    for name, (port, _) in servers.items()
                }
                outs = {name: proc.communicate()[0] for name, proc in procs.items()}
                if rnd == 0:
                    continue
                runs = {
                    name: parse_wrk(outs[name], cpu_seconds(pid) - before[name])
                    for name, (_, pid) in servers.items()
                }
                for name, run in runs.items():
                    if not run.usable or run.non_2xx:
                        raise SystemExit(
                            f"side by side, {name}: no usable figures ({run.requests} "
                            f"requests, {run.non_2xx} non-2xx, {run.server_cpu_s:g} s of "
                            f"server CPU); wrk said:\n{run.wrk_output}"
                        )
                pair = Pair(runs["bare"], runs[variant])
                found.append(pair)
                say(
                    f"pair {n + 1} round {rnd}: bare {pair.bare.cpu_us_per_request:7.1f} "
                    f"us/req ({pair.bare.server_cpu_s:.2f} s CPU), {variant} "
                    f"{pair.variant.cpu_us_per_request:7.1f} us/req "
                    f"({pair.variant.server_cpu_s:.2f} s CPU): {pair.ratio:.3f}"
                )
            if keep_ledger and n == pairs - 1:
                ledger = ledger_summary(servers[variant][0])
    return found, ledger


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
    if args.pairs is not None and args.pairs < 1:
        parser.error(f"--pairs={args.pairs!r} must be at least 1")
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
    ledger: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as tmp:
        database = Path(tmp) / "shop.db"
        make_database(database)
        dependency_port = free_port()
        with process(["--serve-dependency", str(dependency_port)], GENERATOR_CORE, dependency_port):
            for variant in variants[1:]:
                side[variant], got = side_by_side(
                    variant,
                    database,
                    dependency_port,
                    pairs=pairs,
                    rounds=2,
                    seconds=seconds / 2,
                    keep_ledger=variant == "probe",
                )
                ledger = got or ledger
            for rnd in range(args.rounds):
                for variant in variants:
                    port = free_port()
                    serve_args = [
                        "--serve",
                        variant,
                        str(port),
                        str(database),
                        str(dependency_port),
                    ]
                    with process(serve_args, SERVER_CORE, port) as pid:
                        url = f"http://127.0.0.1:{port}/orders/17"
                        run_wrk(url, 1.0, pid)  # warm-up: connections, imports, caches
                        run = run_wrk(url, seconds, pid)
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
    print(
        f"\nSide by side (the figure): bare and the variant on one core at once, "
        f"{pairs} fresh pairs x 2 rounds of {seconds / 2:g} s, wrk -c"
        f"{SIDE_BY_SIDE_CONNECTIONS} each; 'x bare' = bare's server CPU per request / "
        "the variant's (= the variant's throughput on a saturated core, as a share of bare's)."
    )
    print(f"{'variant':16s} {'x bare':>8s} {'min':>7s} {'max':>7s}  pairs x rounds")
    side_median = {}
    for v, found in side.items():
        ratios = [p.ratio for p in found]
        side_median[v] = statistics.median(ratios)
        print(f"{v:16s} {side_median[v]:8.3f} {min(ratios):7.3f} {max(ratios):7.3f}  {len(ratios)}")
    if rps:
        print(
            f"\nOne at a time (absolute figures; the machine drifts between runs): wrk -t1 "
            f"-c32, median of {args.rounds} x {seconds:g} s."
        )
        print(f"{'variant':16s} {'req/s':>9s} {'x bare':>8s} {'us/req':>8s} {'x bare (cpu)':>13s}")
    for v, v_rps in rps.items():
        print(
            f"{v:16s} {v_rps:9,.0f} {ratio(v_rps, rps['bare']):8.3f} {cpu[v]:8.1f} "
            f"{ratio(cpu['bare'], cpu[v]):13.3f}"
        )
    for v, label in (("probe", "every request"), ("probe_sampled", f"sample={SAMPLE:g}")):
        if v not in side_median:
            continue
        verdict = "met" if side_median[v] >= TARGET_VS_BARE else "NOT met"
        print(
            f"\n{v} ({label}) vs bare, side by side: {side_median[v]:.3f}; target >= "
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
