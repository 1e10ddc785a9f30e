#!/usr/bin/env python3
"""What ``brownout proxy`` costs with no fault active: added latency and throughput.

Everything runs in one invocation, side by side. nginx (Debian package; installed by
bench_load's helper when missing) serves a tiny 200 at ``/`` and 1 MiB at ``/big``, pinned
to core 1; the proxy (``python -m brownout proxy``, uvloop) runs on core 1 too, as a
sidecar on the server's host would; the clients are pinned to core 0.

1. Added latency at 2k req/s: ``brownout load`` (open model, 10 s) straight to nginx and
   through the proxy; the service-time p50 and p99 of each, and their difference.
2. Maximum request rate: wrk -t1 -c64 on ``/``, direct and through the proxy.
3. Byte throughput: wrk -t1 -c8 on ``/big`` (1 MiB responses), direct and through the proxy.

Targets (issue 4): p50 added <= 100 us at 2k req/s, and >= 50% of the direct throughput.

    python benchmarks/bench_proxy.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_load import (
    GENERATOR_CORE,
    SERVER_CORE,
    ensure_debian_tools,
    nginx,
    pinned,
    say,
)

TARGET_ADDED_P50_US = 100.0
TARGET_THROUGHPUT = 0.5


def start_proxy(upstream: str) -> tuple[subprocess.Popen[bytes], str]:
    """``brownout proxy`` on core 1 with one proxy to ``upstream``; returns it and its
    ``host:port``."""
    cmd = [
        "taskset", "-c", SERVER_CORE, sys.executable, "-m", "brownout", "proxy",
        "--api", "127.0.0.1:0", "--name", "bench", "--listen", "127.0.0.1:0",
        "--upstream", upstream,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    listen = ""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        if not line:
            break
        match = re.match(r"proxy bench on (\S+) ->", line)
        if match:
            listen = match.group(1)
        if line.startswith("api on "):
            return proc, listen
    proc.kill()
    err = proc.stderr.read().decode() if proc.stderr is not None else ""
    raise RuntimeError("brownout proxy did not start: " + err[-500:])


def relay_child(upstream: str) -> None:
    """Runs pinned beside nginx: the floor for a Python relay, a bare uvloop byte relay with
    no toxics, parsing or bookkeeping. Prints ``relay on HOST:PORT`` when listening."""
    import asyncio

    import uvloop

    up_host, up_port = upstream.rsplit(":", 1)

    class Side(asyncio.Protocol):
        def __init__(self) -> None:
            self.peer: Side | None = None
            self.transport: Any = None
            self.pending: list[bytes] = []

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            if self.peer is not None and self.peer.transport is not None:
                self.peer.transport.write(data)
            else:
                self.pending.append(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.peer is not None and self.peer.transport is not None:
                self.peer.transport.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()

        tasks: set[Any] = set()

        def accept() -> Side:
            client = Side()

            async def connect() -> None:
                _, server = await loop.create_connection(Side, up_host, int(up_port))
                server.peer, client.peer = client, server
                for chunk in client.pending:
                    server.transport.write(chunk)

            task = loop.create_task(connect())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            return client

        srv = await loop.create_server(accept, "127.0.0.1", 0)
        print(f"relay on 127.0.0.1:{srv.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


def start_relay(upstream: str) -> tuple[subprocess.Popen[bytes], str]:
    cmd = ["taskset", "-c", SERVER_CORE, sys.executable, __file__, "--relay", upstream]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("relay on "):
        proc.kill()
        raise RuntimeError("the bare relay did not start")
    return proc, line.split()[-1]


def wrk(url: str, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        pinned(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url]),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    if rps is None or transfer is None:
        raise RuntimeError(f"could not read wrk output:\n{out}")
    scale = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}[transfer.group(2)]
    return {"rps": float(rps.group(1)), "bytes_s": float(transfer.group(1)) * scale}


def load_child(url: str, rate: float, seconds: float) -> None:
    from brownout.load import run_load
    from brownout.scenario import quick_scenario

    doc = run_load(quick_scenario(url, rate=rate, duration_s=seconds, timeout_s=2.0))
    s = doc["summary"]
    print(
        json.dumps(
            {
                "ok": s["ok"],
                "offered": s["offered"],
                "p50_ms": s["service_ms"]["p50"],
                "p99_ms": s["service_ms"]["p99"],
                "lag_p99_ms": s["send_lag_ms"]["p99"],
            }
        )
    )


def run_load_child(url: str, rate: float, seconds: float) -> dict[str, Any]:
    cmd = pinned([sys.executable, __file__, "--child", url, str(rate), str(seconds)])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--relay", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.relay:
        relay_child(args.relay)
        return 0
    if args.child:
        load_child(args.child[0], float(args.child[1]), float(args.child[2]))
        return 0
    seconds = 4 if args.quick else 10
    ensure_debian_tools()
    figures: dict[str, Any] = {"mode": "quick" if args.quick else "full"}
    with tempfile.TemporaryDirectory(prefix="bench_proxy_") as name, nginx(Path(name)) as url:
        upstream = url.removeprefix("http://").rstrip("/")
        proc, listen = start_proxy(upstream)
        proxied = f"http://{listen}/"
        try:
            say(f"nginx {url} (core {SERVER_CORE}), proxy {proxied} (core {SERVER_CORE}), "
                f"clients on core {GENERATOR_CORE}")  # fmt: skip
            say(f"latency at 2k req/s, {seconds} s each ...")
            figures["latency_direct"] = run_load_child(url, 2000, seconds)
            figures["latency_proxied"] = run_load_child(proxied, 2000, seconds)
            say("max request rate (wrk -c64 /) ...")
            figures["rate_direct"] = wrk(url, seconds, 64)
            figures["rate_proxied"] = wrk(proxied, seconds, 64)
            say("byte throughput (wrk -c8 /big, 1 MiB) ...")
            figures["bytes_direct"] = wrk(url + "big", seconds, 8)
            figures["bytes_proxied"] = wrk(proxied + "big", seconds, 8)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        relay, relay_listen = start_relay(upstream)
        try:
            say("the same through a bare uvloop relay (Python's floor) ...")
            figures["rate_relay"] = wrk(f"http://{relay_listen}/", seconds, 64)
            figures["bytes_relay"] = wrk(f"http://{relay_listen}/big", seconds, 8)
        finally:
            relay.kill()
            relay.wait(timeout=10)
            if relay.stdout is not None:
                relay.stdout.close()

    d, p = figures["latency_direct"], figures["latency_proxied"]
    added_p50 = (p["p50_ms"] - d["p50_ms"]) * 1000
    added_p99 = (p["p99_ms"] - d["p99_ms"]) * 1000
    rate_ratio = figures["rate_proxied"]["rps"] / figures["rate_direct"]["rps"]
    bytes_ratio = figures["bytes_proxied"]["bytes_s"] / figures["bytes_direct"]["bytes_s"]
    figures.update(
        added_p50_us=added_p50,
        added_p99_us=added_p99,
        rate_ratio=rate_ratio,
        bytes_ratio=bytes_ratio,
    )
    print(f"\nbench_proxy ({figures['mode']}), {os.cpu_count()} cores\n")
    print(f"{'':<34}{'direct':>14}{'proxied':>14}{'added/ratio':>14}{'bare relay':>14}")
    print(
        f"{'service p50 at 2k req/s':<34}{d['p50_ms'] * 1000:>11.0f} us{p['p50_ms'] * 1000:>11.0f} us"
        f"{added_p50:>11.0f} us"
    )
    print(
        f"{'service p99 at 2k req/s':<34}{d['p99_ms'] * 1000:>11.0f} us{p['p99_ms'] * 1000:>11.0f} us"
        f"{added_p99:>11.0f} us"
    )
    print(
        f"{'max rate, tiny responses (req/s)':<34}{figures['rate_direct']['rps']:>14,.0f}"
        f"{figures['rate_proxied']['rps']:>14,.0f}{rate_ratio:>13.2f}x"
        f"{figures['rate_relay']['rps']:>14,.0f}"
    )
    print(
        f"{'throughput, 1 MiB responses (MB/s)':<34}{figures['bytes_direct']['bytes_s'] / 1e6:>14,.0f}"
        f"{figures['bytes_proxied']['bytes_s'] / 1e6:>14,.0f}{bytes_ratio:>13.2f}x"
        f"{figures['bytes_relay']['bytes_s'] / 1e6:>14,.0f}"
    )
    print()
    ok_latency = added_p50 <= TARGET_ADDED_P50_US
    print(f"p50 added <= {TARGET_ADDED_P50_US:.0f} us: {'PASS' if ok_latency else 'FAIL'}")
    for label, ratio in (("request rate", rate_ratio), ("byte throughput", bytes_ratio)):
        verdict = "PASS" if ratio >= TARGET_THROUGHPUT else "FAIL"
        print(f"{label} >= {TARGET_THROUGHPUT:.0%} of direct: {verdict}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
