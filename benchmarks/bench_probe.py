#!/usr/bin/env python3
"""Requests per second of a realistic endpoint with and without the probe, same run.

The endpoint (``GET /orders/{id}``, Starlette under uvicorn: 1 worker, uvloop + httptools,
access log off, pinned to core 1) runs three SQLite queries through SQLAlchemy's async
engine (aiosqlite) and one httpx call to a loopback dependency (a minimal keep-alive HTTP
responder on uvloop, pinned to core 0), and returns JSON. wrk (Debian package, installed
with apt-get when missing) drives it from core 0: 1 thread, 32 keep-alive connections.
Variants, each in a fresh server process:

1. ``bare``: the app alone.
2. ``probe``: ``ProbeMiddleware(app, probe=install())``: every hook (SQLAlchemy, sqlite3,
   httpx/aiohttp/requests, thread pools, the event-loop monitor with CPU time per step).
3. ``probe_no_loop``: the same with ``install(loop=False)``: what the loop monitor costs.

Each variant runs ``--rounds`` times (default 3) in interleaved order after a warm-up;
the figure is the median (and, less sensitive to the machine drifting between rounds, the
median of the per-round ratios, each round's variants running back to back). Target
(issue 6): probe >= 0.95 x bare (at most 5% loss). A run in which the server answered
nothing or used no CPU (a starved or stuck server) stops the script with wrk's output
instead of dividing by zero. As in ``bench_middleware.py``, ``us/req`` is server CPU per request (all threads of the server
process, aiosqlite's included), and bare's figure divided by a variant's is the
throughput ratio on a saturated server core, which other load on the machine disturbs
much less than req/s. After the probe's last run the script reads the probe's ledger from
the app (``/_brownout/ledger``) to show that the hooks saw the work.

    python benchmarks/bench_probe.py            # 3 rounds of 8 s each
    python benchmarks/bench_probe.py --quick    # 3 rounds of 4 s
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
VARIANTS = ("bare", "probe", "probe_no_loop")
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
def process(args: list[str], core: str, port: int) -> Iterator[int]:
    """This script with ``args``, pinned to ``core``, listening on ``port``; yields its pid."""
    cmd = ["taskset", "-c", core, sys.executable, __file__, *args]
    proc = subprocess.Popen(cmd)  # taskset execs the interpreter: the pid is the server's
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


def run_wrk(url: str, seconds: float, pid: int) -> Run:
    """One wrk run from the generator core, with the server's CPU time over it."""
    cmd = ["taskset", "-c", GENERATOR_CORE, "wrk", "-t1", "-c32", f"-d{seconds:g}s", url]
    before = cpu_seconds(pid)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pid) - before
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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--steps", action="store_true", help="only the per-step micro-benchmark")
    parser.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--serve-dependency", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds={args.rounds!r} must be at least 1")
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
    if (os.cpu_count() or 1) < 2:
        say("warning: fewer than 2 cores; wrk and the server share a core")
    ensure_wrk()
    runs: dict[str, list[Run]] = {v: [] for v in VARIANTS}
    ledger: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as tmp:
        database = Path(tmp) / "shop.db"
        make_database(database)
        dependency_port = free_port()
        with process(["--serve-dependency", str(dependency_port)], GENERATOR_CORE, dependency_port):
            for rnd in range(args.rounds):
                for variant in VARIANTS:
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
                        if variant == "probe" and rnd == args.rounds - 1:
                            ledger = ledger_summary(port)
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
                        f"round {rnd + 1}: {variant:14s} {run.rps:9,.0f} req/s "
                        f"{run.cpu_us_per_request:8.1f} us server CPU/request"
                    )
    rps = {v: statistics.median(r.rps for r in rs) for v, rs in runs.items()}
    cpu = {v: statistics.median(r.cpu_us_per_request for r in rs) for v, rs in runs.items()}
    print(
        f"\nGET /orders/{{id}}: 3 SQLAlchemy async (aiosqlite) queries + 1 httpx call to a "
        f"loopback dependency, Starlette under uvicorn, wrk -t1 -c32, median of "
        f"{args.rounds} x {seconds:g} s. 'x bare (cpu)' = bare's server CPU per request / the "
        "variant's."
    )
    print(f"{'variant':14s} {'req/s':>9s} {'x bare':>8s} {'us/req':>8s} {'x bare (cpu)':>13s}")
    for v in VARIANTS:
        print(
            f"{v:14s} {rps[v]:9,.0f} {ratio(rps[v], rps['bare']):8.3f} {cpu[v]:8.1f} "
            f"{ratio(cpu['bare'], cpu[v]):13.3f}"
        )
    by_rps = ratio(rps["probe"], rps["bare"])
    by_cpu = ratio(cpu["bare"], cpu["probe"])
    print(
        f"probe vs bare: {by_rps:.3f} (req/s), {by_cpu:.3f} (CPU per request); target >= "
        f"{TARGET_VS_BARE}: {'met' if min(by_rps, by_cpu) >= TARGET_VS_BARE else 'NOT met'}"
    )
    # the same comparison within each round (the variants of a round run back to back), so
    # that drift of the machine between rounds cancels out
    paired = [ratio(p.rps, b.rps) for b, p in zip(runs["bare"], runs["probe"], strict=True)]
    print(
        f"probe vs bare, per round (req/s): {', '.join(f'{r:.3f}' for r in paired)}; "
        f"median {statistics.median(paired):.3f}"
    )
    endpoints = ledger.get("endpoints", {})
    items = endpoints.items() if isinstance(endpoints, dict) else enumerate(endpoints)
    for name, stats in items:
        print(f"ledger (means) {name}: {json.dumps(stats, default=str)}")
    print(f"ledger findings: {json.dumps(ledger.get('findings'), default=str)}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": platform.platform(),
                    "python": platform.python_version(),
                    "seconds": seconds,
                    "runs": {
                        v: [{k: x for k, x in vars(r).items() if k != "wrk_output"} for r in rs]
                        for v, rs in runs.items()
                    },
                    "median_rps": rps,
                    "median_cpu_us_per_request": cpu,
                    "probe_vs_bare_per_round": paired,
                    "ledger": ledger,
                },
                indent=2,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
