"""What the server benchmarks driven by wrk share: installing the tools, starting pinned
server processes, running wrk and reading its output with the server's CPU time.

Used by ``bench_middleware.py`` and ``bench_probe.py`` (run as scripts from this folder,
so this module imports as ``_wrkbench``).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

GENERATOR_CORE = "0"  # wrk (and any helper process) runs here
SERVER_CORE = "1"  # the server under test runs here


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ensure_wrk() -> None:
    if shutil.which("wrk") is not None:
        return
    say("installing wrk with apt-get (needs root)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, env=env)


def ensure_packages(wanted: Iterable[tuple[str, str]]) -> None:
    """pip-install each ``(module, package)`` whose module does not import."""
    for module, package in wanted:
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
def pinned(
    script: str, args: list[str], core: str, port: int, *, batch: bool = False
) -> Iterator[int]:
    """``script`` with ``args`` in a process pinned to ``core``, once it listens on
    ``port``; yields its pid and stops it on exit. ``batch``: under ``SCHED_BATCH``
    (``chrt -b 0``), so that two servers sharing the core take turns in long slices instead
    of preempting each other on every wake-up."""
    cmd = ["taskset", "-c", core, sys.executable, script, *args]
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


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when the denominator is not positive."""
    return numerator / denominator if denominator > 0 else math.nan


@dataclass
class Run:
    """One wrk run: what wrk counted and the server's CPU time over it."""

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


def wrk_command(url: str, seconds: float, connections: int) -> list[str]:
    return [
        "taskset", "-c", GENERATOR_CORE, "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", url
    ]  # fmt: skip


def parse_wrk(out: str, cpu_s: float) -> Run:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rps is None or total is None:
        raise RuntimeError(f"could not read wrk output:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    if errors:
        say(f"  wrk: {errors.group(0)}")
    return Run(
        float(rps.group(1)), int(total.group(1)), int(bad.group(1)) if bad else 0, cpu_s, out
    )


def run_wrk(url: str, seconds: float, pid: int, connections: int) -> Run:
    """One wrk run from the generator core, with the server's CPU time over it."""
    before = cpu_seconds(pid)
    out = subprocess.run(
        wrk_command(url, seconds, connections), capture_output=True, text=True, check=True
    ).stdout
    return parse_wrk(out, cpu_seconds(pid) - before)


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
    script: str,
    variant: str,
    serve_args: Callable[[str, int], list[str]],
    path: str,
    *,
    pairs: int,
    rounds: int,
    seconds: float,
    connections: int,
    after_last: Callable[[int], None] | None = None,
) -> list[Pair]:
    """``pairs`` fresh pairs of servers (``"bare"`` and ``variant``, each started as
    ``script`` with ``serve_args(name, port)``), both pinned to the server core under
    SCHED_BATCH and loaded at the same time, ``path`` by a wrk each, for ``rounds`` x
    ``seconds`` after a 2-s warm-up. ``after_last(variant_port)`` runs before the last pair
    stops.

    Why: on a shared VM the speed of a core drifts by tens of percent within seconds (other
    tenants), so runs one after the other cannot resolve a few percent. Two servers loaded
    at once on one core see the same drift; the kernel splits the core between them, and
    each one's CPU per request (its CPU time over its requests) is measured under the same
    conditions. The pair's start order alternates (the second server started gets about 3%
    more, measured with two bare servers), and every pair is a fresh pair of processes (two
    processes of the same build differ by a few percent)."""
    found: list[Pair] = []
    for n in range(pairs):
        order = ("bare", variant) if n % 2 == 0 else (variant, "bare")
        with contextlib.ExitStack() as stack:
            servers: dict[str, tuple[int, int]] = {}
            for name in order:
                port = free_port()
                pid = stack.enter_context(
                    pinned(script, serve_args(name, port), SERVER_CORE, port, batch=True)
                )
                servers[name] = (port, pid)
            for rnd in range(rounds + 1):  # the first round warms both up
                length = 2.0 if rnd == 0 else seconds
                before = {name: cpu_seconds(pid) for name, (_, pid) in servers.items()}
                procs = {
                    name: subprocess.Popen(
                        wrk_command(f"http://127.0.0.1:{port}{path}", length, connections),
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
            if after_last is not None and n == pairs - 1:
                after_last(servers[variant][0])
    return found


def print_side_by_side(side: dict[str, list[Pair]], heading: str) -> dict[str, float]:
    """Print ``heading`` and one line per variant (median, min and max of its pair ratios);
    returns the medians."""
    medians = {v: statistics.median(p.ratio for p in found) for v, found in side.items()}
    if medians:
        print(heading)
        print(f"{'variant':16s} {'x bare':>8s} {'min':>7s} {'max':>7s}  pairs x rounds")
        for v, found in side.items():
            got = [p.ratio for p in found]
            print(f"{v:16s} {medians[v]:8.3f} {min(got):7.3f} {max(got):7.3f}  {len(got)}")
    return medians
