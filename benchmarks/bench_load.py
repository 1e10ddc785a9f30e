#!/usr/bin/env python3
"""Requests per second on one core: brownout's load engine beside wrk and Locust.

Everything runs in one invocation on one machine. nginx (Debian package, installed with
apt-get when missing) serves a tiny static 200 on 127.0.0.1, pinned to core 1; each load
generator is pinned to core 0 (``taskset -c 0``):

1. wrk (Debian package) at its maximum rate: 1 thread, 64 keep-alive connections.
2. brownout: an open-model tool must not be driven far above what it can send (it would
   only report its own send lag), so the figure is the maximum *sustainable* rate: the
   engine runs ``quick_scenario(url, rate=R)`` at increasing rates R (3 s each, all the
   bookkeeping on: intended-time schedule, histograms, timeline) and the highest R with
   ok/offered >= 0.99 and send lag p99 <= 10 ms is kept. CPU time per request there is
   (user + system CPU seconds of the child during the run) / requests sent.
3. Locust ``FastHttpUser`` headless: 64 users, no wait time, req/s from its ``--csv``.
4. Peak memory (``ru_maxrss`` of the child) of a brownout run of >= 1,000,000 requests at
   the sustainable rate: it must stay bounded (histograms, never raw samples).

Targets (issue 3): brownout >= 0.4x wrk and >= 8x Locust FastHttpUser on one core.

    python benchmarks/bench_load.py            # full run (about two minutes)
    python benchmarks/bench_load.py --quick    # shorter runs, 200k-request memory run
    python benchmarks/bench_load.py --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TARGET_VS_WRK = 0.4
TARGET_VS_LOCUST = 8.0
MAX_LAG_P99_MS = 10.0
MIN_OK_FRACTION = 0.99
GENERATOR_CORE = "0"
SERVER_CORE = "1"

NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "hello\\n"; }}
        location = /big {{ default_type application/octet-stream; alias {tmp}/big.bin; }}
    }}
}}
"""

LOCUSTFILE = """\
from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser


class Hello(FastHttpUser):
    wait_time = constant(0)

    @task
    def hello(self) -> None:
        self.client.get("/")
"""


@dataclass
class Settings:
    wrk_s: int
    locust_s: int
    locust_users: int
    step_s: float
    rates: list[int]
    memory_requests: int


FULL = Settings(
    wrk_s=10,
    locust_s=10,
    locust_users=64,
    step_s=3.0,
    rates=list(range(20_000, 150_001, 10_000)),
    memory_requests=1_000_000,
)
QUICK = Settings(
    wrk_s=4,
    locust_s=5,
    locust_users=64,
    step_s=2.0,
    rates=list(range(20_000, 150_001, 10_000)),
    memory_requests=200_000,
)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- tools -------------------------------------------------------------------------------


def ensure_debian_tools() -> None:
    """Install wrk and nginx with apt-get when missing (says so)."""
    missing = []
    if shutil.which("wrk") is None:
        missing.append("wrk")
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        missing.append("nginx-light")
    if not missing:
        return
    say(f"installing {' '.join(missing)} with apt-get (needs root)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    result = subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=False, env=env)
    if result.returncode != 0 and "nginx-light" in missing:
        say("nginx-light not available, installing nginx")
        packages = [p for p in missing if p != "nginx-light"] + ["nginx"]
        subprocess.run(["apt-get", "install", "-y", "-q", *packages], check=True, env=env)


def ensure_locust() -> None:
    """Install locust into this interpreter's environment with pip when missing."""
    try:
        import locust  # noqa: F401
    except ImportError:
        say("installing locust with pip")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "locust"], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nginx did not listen on 127.0.0.1:{port}")


@contextlib.contextmanager
def nginx(tmp: Path) -> Iterator[str]:
    """nginx pinned to the server core, serving ``hello`` on a free port; always stopped."""
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port))
    (tmp / "big.bin").write_bytes(os.urandom(1 << 20))  # /big: 1 MiB, for byte throughput
    tmp.chmod(0o755)  # nginx's worker runs as another user: it must read big.bin
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    cmd = ["taskset", "-c", SERVER_CORE, binary, "-p", str(tmp), "-e", str(tmp / "error.log")]
    proc = subprocess.Popen([*cmd, "-c", str(conf)], stderr=subprocess.PIPE)
    try:
        wait_listening(port)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()  # SIGTERM: fast shutdown of master and worker
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pinned(cmd: list[str]) -> list[str]:
    return ["taskset", "-c", GENERATOR_CORE, *cmd]


# -- the three generators -----------------------------------------------------------------


def run_wrk(url: str, seconds: int) -> float:
    out = subprocess.run(
        pinned(["wrk", "-t1", "-c64", f"-d{seconds}s", url]),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"could not read wrk output:\n{out}")
    return float(match.group(1))


def run_locust(url: str, seconds: int, users: int, tmp: Path) -> float:
    locustfile = tmp / "locustfile.py"
    locustfile.write_text(LOCUSTFILE)
    prefix = tmp / "locust"
    locust_bin = Path(sys.executable).with_name("locust")
    cmd = [str(locust_bin)] if locust_bin.exists() else [sys.executable, "-m", "locust"]
    cmd += [
        "-f",
        str(locustfile),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{seconds}s",
        "-H",
        url.rstrip("/"),
        "--csv",
        str(prefix),
        "--only-summary",
        "--loglevel",
        "ERROR",
    ]
    subprocess.run(
        pinned(cmd), check=False, capture_output=True, text=True
    )  # exits 1 on any failure
    with open(f"{prefix}_stats.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["Name"] == "Aggregated":
                if int(row["Failure Count"]) > 0:
                    say(f"locust: {row['Failure Count']} failures")
                return float(row["Requests/s"])
    raise RuntimeError("no Aggregated row in the locust csv")


def bare_child(url: str, seconds: float) -> None:
    """Runs in the pinned child: the reference floor for Python, a closed-loop asyncio +
    uvloop keep-alive client over httptools with no bookkeeping at all (64 connections,
    each writes its next request when a response completes). Prints req/s as JSON."""
    import asyncio
    from urllib.parse import urlsplit

    import httptools
    import uvloop

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = f"GET / HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode()
    done = [0]

    class Bare(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpResponseParser(self)
            self.transport: Any = None

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            transport.write(request)

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            done[0] += 1
            self.transport.write(request)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        conns = [await loop.create_connection(Bare, host, port) for _ in range(64)]
        await asyncio.sleep(0.5)  # warm-up
        start_n, start_t = done[0], time.perf_counter()
        await asyncio.sleep(seconds)
        rps = (done[0] - start_n) / (time.perf_counter() - start_t)
        for transport, _ in conns:
            transport.close()
        return rps

    print(json.dumps({"rps": uvloop.run(main())}))


def run_bare(url: str, seconds: float) -> float:
    cmd = pinned([sys.executable, __file__, "--bare", url, str(seconds)])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["rps"])


def run_brownout(url: str, rate: float, duration_s: float) -> dict[str, Any]:
    """One brownout run in a child process pinned to the generator core."""
    cmd = pinned([sys.executable, __file__, "--child", url, str(rate), str(duration_s)])
    out = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"brownout child failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def child(url: str, rate: float, duration_s: float) -> None:
    """Runs in the pinned child: one load run, then its figures as one JSON line."""
    import resource

    from brownout.load import run_load
    from brownout.scenario import quick_scenario

    scenario = quick_scenario(url, rate=rate, duration_s=duration_s, timeout_s=2.0)
    before = os.times()
    doc = run_load(scenario)
    after = os.times()
    cpu_s = (after.user - before.user) + (after.system - before.system)
    summary = doc["summary"]
    print(
        json.dumps(
            {
                "rate": rate,
                "duration_s": duration_s,
                "offered": summary["offered"],
                "sent": summary["sent"],
                "ok": summary["ok"],
                "dropped": summary["dropped"],
                "timeouts": summary["timeouts"],
                "errors": summary["errors"],
                "throughput_rps": summary["throughput_rps"],
                "lag_p99_ms": summary["send_lag_ms"]["p99"],
                "latency_p99_ms": summary["latency_ms"]["p99"],
                "cpu_s": cpu_s,
                "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            }
        )
    )


def sustainable(step: dict[str, Any]) -> bool:
    offered = step["offered"] or 1
    return bool(step["ok"] / offered >= MIN_OK_FRACTION and step["lag_p99_ms"] <= MAX_LAG_P99_MS)


def sweep(url: str, settings: Settings) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Increasing rates until one is not sustainable, then one midpoint between the last
    pass and the first failure; returns the best passing step and all steps."""
    steps: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    failed_at: int | None = None
    for rate in settings.rates:
        step = run_brownout(url, rate, settings.step_s)
        step["pass"] = sustainable(step)
        if not step["pass"]:  # a shared VM has hiccups: a failing rate gets one more try
            say(
                f"  brownout {rate:>7,} req/s failed (lag p99 {step['lag_p99_ms']:.2f} ms), retrying"
            )
            step = run_brownout(url, rate, settings.step_s)
            step["pass"] = sustainable(step)
        steps.append(step)
        say(
            f"  brownout {rate:>7,} req/s: ok/offered {step['ok'] / max(step['offered'], 1):.4f}"
            f" lag p99 {step['lag_p99_ms']:.2f} ms -> {'pass' if step['pass'] else 'FAIL'}"
        )
        if not step["pass"]:
            failed_at = rate
            break
        best = step
    if best is not None and failed_at is not None:
        mid = (int(best["rate"]) + failed_at) // 2
        step = run_brownout(url, mid, settings.step_s)
        step["pass"] = sustainable(step)
        steps.append(step)
        say(
            f"  brownout {mid:>7,} req/s: ok/offered {step['ok'] / max(step['offered'], 1):.4f}"
            f" lag p99 {step['lag_p99_ms']:.2f} ms -> {'pass' if step['pass'] else 'FAIL'}"
        )
        if step["pass"]:
            best = step
    return best, steps


# -- report ------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--bare", nargs=2, metavar=("URL", "SECONDS"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--child", nargs=3, metavar=("URL", "RATE", "DURATION_S"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.bare:
        bare_child(args.bare[0], float(args.bare[1]))
        return 0
    if args.child:
        child(args.child[0], float(args.child[1]), float(args.child[2]))
        return 0

    settings = QUICK if args.quick else FULL
    if (os.cpu_count() or 1) < 2:
        say("warning: fewer than 2 cores; generator and server share a core")
    ensure_debian_tools()
    ensure_locust()
    with tempfile.TemporaryDirectory(prefix="bench_load_") as name:
        tmp = Path(name)
        with nginx(tmp) as url:
            say(f"nginx on {url} (core {SERVER_CORE}); generators on core {GENERATOR_CORE}")
            say(f"wrk {settings.wrk_s} s ...")
            wrk_rps = run_wrk(url, settings.wrk_s)
            say(f"  wrk {wrk_rps:,.0f} req/s")
            bare_rps = run_bare(url, settings.wrk_s)
            say(f"  bare asyncio+uvloop client (no bookkeeping) {bare_rps:,.0f} req/s")
            say("brownout sustainable-rate sweep ...")
            best, steps = sweep(url, settings)
            say(f"locust FastHttpUser {settings.locust_s} s, {settings.locust_users} users ...")
            locust_rps = run_locust(url, settings.locust_s, settings.locust_users, tmp)
            say(f"  locust {locust_rps:,.0f} req/s")
            # 80% of the sustainable rate, so the long run is not memory of a backlog
            best_rate = float(best["rate"]) if best is not None else 20_000.0
            mem_rate = max(5_000.0, round(0.8 * best_rate / 5_000) * 5_000)
            mem_s = math.ceil(settings.memory_requests / mem_rate)
            say(f"brownout memory run: {mem_rate:,.0f} req/s for {mem_s} s, and for 1 s ...")
            mem = run_brownout(url, mem_rate, mem_s)
            base = run_brownout(url, mem_rate, 1.0)

    ours = float(best["rate"]) if best is not None else 0.0
    cpu_us = best["cpu_s"] / max(best["sent"], 1) * 1e6 if best is not None else float("nan")
    vs_wrk = ours / wrk_rps if wrk_rps else 0.0
    vs_locust = ours / locust_rps if locust_rps else 0.0
    print(
        f"\nbench_load ({'quick' if args.quick else 'full'}) on {platform.node()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print("generator on core 0, nginx (1 worker, return 200) on core 1\n")
    print(f"{'tool':<44}{'req/s':>12}")
    print(f"{'wrk -t1 -c64 (max rate)':<44}{wrk_rps:>12,.0f}")
    print(f"{'bare asyncio+uvloop client, no bookkeeping':<44}{bare_rps:>12,.0f}")
    print(f"{'brownout (max sustainable open-model rate)':<44}{ours:>12,.0f}")
    if best is not None:
        print(f"{'  achieved throughput at that rate':<44}{best['throughput_rps']:>12,.0f}")
    print(
        f"{f'Locust FastHttpUser ({settings.locust_users} users, no wait)':<44}{locust_rps:>12,.0f}"
    )
    print()
    print(f"{'ratio':<26}{'value':>8}{'target':>10}{'':>4}verdict")
    ok_wrk = vs_wrk >= TARGET_VS_WRK
    ok_locust = vs_locust >= TARGET_VS_LOCUST
    print(f"{'brownout / wrk':<26}{vs_wrk:>7.2f}x{'>= 0.4x':>10}{'':>4}{verdict(ok_wrk)}")
    print(f"{'brownout / Locust':<26}{vs_locust:>7.1f}x{'>= 8x':>10}{'':>4}{verdict(ok_locust)}")
    print(
        f"{'brownout / bare client':<26}{ours / bare_rps if bare_rps else 0.0:>7.2f}x"
        f"{'(info)':>10}    Python's floor on this machine, for context"
    )
    print()
    print(
        f"brownout CPU per request at {ours:,.0f} req/s: {cpu_us:.1f} us "
        f"(user+sys {best['cpu_s'] if best else 0:.2f} s / {best['sent'] if best else 0:,} requests)"
    )
    print(
        f"brownout peak memory (ru_maxrss): {mem['maxrss_kib'] / 1024:.1f} MiB for "
        f"{mem['offered']:,} requests ({mem_rate:,.0f} req/s x {mem_s} s: ok {mem['ok']:,}, "
        f"lag p99 {mem['lag_p99_ms']:.2f} ms) vs {base['maxrss_kib'] / 1024:.1f} MiB for "
        f"{base['offered']:,} requests (1 s at the same rate)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "mode": "quick" if args.quick else "full",
                    "wrk_rps": wrk_rps,
                    "locust_rps": locust_rps,
                    "bare_rps": bare_rps,
                    "brownout_rps": ours,
                    "brownout_steps": steps,
                    "cpu_us_per_request": cpu_us,
                    "memory_run": mem,
                    "memory_baseline": base,
                    "vs_wrk": vs_wrk,
                    "vs_locust": vs_locust,
                    "pass": ok_wrk and ok_locust,
                },
                indent=2,
            )
        )
    return 0 if ok_wrk and ok_locust else 1


if __name__ == "__main__":
    sys.exit(main())
