"""Overload: open-model arrivals at 3x a test app's known capacity, with and without the guard.

The app (``asgi_apps.py capacity``) has ``SLOTS`` worker slots and holds one for
``SERVICE_S`` per request: capacity ``SLOTS / SERVICE_S`` = 250 requests/s. It runs under
uvicorn in its own process, so the load generator (``brownout.load.run_load``, in this
process) and the server do not share a GIL. Clients give up after ``TIMEOUT_S``.

Without the middleware the server queues every request (FIFO) and keeps working on those
whose client already left: the wait grows by 2 s per second of overload, so after the
first fraction of a second every answer comes too late and goodput collapses. With
``GuardMiddleware(app)`` and its defaults, the adaptive limit keeps about the app's own
concurrency in flight, the short queue absorbs jitter and everything beyond is refused at
once with a 503: goodput stays at capacity, and admitted requests are answered well within
the client's patience.

The latency bound on admitted requests is proved through the client timeout: an admitted
request slower than ``TIMEOUT_S`` counts as a timeout, not as ok, so ``timeouts <= 1% of
(ok + timeouts)`` means their p99 is <= ``TIMEOUT_S`` (7.5 service times, i.e. a few
service times plus the queue's 100 ms interval), measured at the client from each
request's intended start (coordinated omission corrected).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from brownout.load import run_load
from brownout.scenario import quick_scenario

pytestmark = pytest.mark.slow

APPS = Path(__file__).with_name("asgi_apps.py")
SLOTS = 10
SERVICE_S = 0.04
CAPACITY_RPS = SLOTS / SERVICE_S  # 250 requests/s
RATE_RPS = 3 * CAPACITY_RPS
DURATION_S = 4.0
TIMEOUT_S = 0.3


@pytest.fixture
def capacity_server() -> Iterator[Callable[[bool], str]]:
    """Start the capacity app under uvicorn in a subprocess; returns its URL."""
    procs: list[subprocess.Popen[str]] = []

    def start(guard: bool) -> str:
        args = [sys.executable, str(APPS), "capacity", "--slots", str(SLOTS)]
        args += ["--service", str(SERVICE_S), "--max-seconds", "40"]
        if guard:
            args.append("--guard")
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("PORT "), line
        return f"http://127.0.0.1:{int(line.split()[1])}/"

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


def overload(url: str) -> dict[str, Any]:
    doc = run_load(quick_scenario(url, rate=RATE_RPS, duration_s=DURATION_S, timeout_s=TIMEOUT_S))
    summary: dict[str, Any] = doc["summary"]
    return summary


def test_without_the_guard_goodput_collapses(capacity_server: Callable[[bool], str]) -> None:
    s = overload(capacity_server(False))
    assert s["goodput_rps"] < 0.3 * CAPACITY_RPS, s
    assert s["timeouts"] > 0.5 * s["offered"], s  # most clients gave up waiting
    assert s["shed"] == 0


def test_with_the_guard_goodput_holds_and_admitted_latency_is_bounded(
    capacity_server: Callable[[bool], str],
) -> None:
    s = overload(capacity_server(True))
    assert s["goodput_rps"] >= 0.9 * CAPACITY_RPS, s
    assert s["shed"] >= 0.4 * s["offered"], s  # the excess was refused, cheaply
    assert s["errors"] == 0, s
    # p99 of admitted requests <= TIMEOUT_S: fewer than 1% of them ran past it.
    assert s["timeouts"] <= 0.01 * (s["ok"] + s["timeouts"]), s
    assert s["send_lag_ms"]["p99"] < 20, s  # the generator kept its schedule
