#!/usr/bin/env python3
"""Redis rate-limit decisions per second from one client, as a ratio to Redis PING/s.

One sync redis-py client, sequential calls (each waits for its reply), so every figure is
bounded by the round trip; PING, the cheapest command there is, measured in the same run
with the same kind of client, is the ceiling. The cases share ``--seconds`` per round,
over ``--rounds`` rounds; within a round the cases take turns in batches of 100
calls, so the machine's changing load falls on all of them alike. The figures are the
medians over the rounds (of the rate, and of its ratio to PING in the same round):

1. ``PING``: ``client.ping()``.
2. brownout ``RateLimit.check(key)`` on a ``RedisStore`` (one ``EVALSHA`` per decision,
   GCRA in Lua with the server's ``TIME``); the limit is high enough that every request
   is admitted, the path that also writes the key.
3. the ``limits`` library's Redis limiters, ``MovingWindowRateLimiter`` and
   ``FixedWindowRateLimiter``, ``hit()`` with a limit that admits every request
   (installed with pip when missing).
4. for context (no round trip per decision): brownout's ``LocalFirstStore``.

Redis: a private ``redis-server`` on a free loopback port (no persistence), started for the
run and stopped after, so other users of the machine's Redis add no noise; with two or more
cores it is pinned to one core and this process to another. ``--url`` uses a running Redis
instead.

Target (issue 5): brownout decisions/s >= 0.85x PING/s.

    python benchmarks/bench_ratelimit.py            # 3 rounds of 10 s (about 40 s)
    python benchmarks/bench_ratelimit.py --quick    # 3 rounds of 2 s
    python benchmarks/bench_ratelimit.py --url redis://127.0.0.1:6379/0 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

TARGET = 0.85


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ensure_limits() -> None:
    """Install the ``limits`` library into this interpreter's environment when missing."""
    try:
        import limits  # noqa: F401
    except ImportError:
        say("installing limits with pip")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "limits"], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of the benchmark's own; yields its URL."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    cmd += ["--appendonly", "no", "--loglevel", "warning"]
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= 2 and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(cores[-1]), *cmd]
        os.sched_setaffinity(0, {cores[0]})
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.01)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait()


def measure_round(cases: dict[str, Callable[[], Any]], seconds: float) -> dict[str, float]:
    """Calls per second of each case over one round of about ``seconds``: the cases take
    turns in batches of 100 calls, so a change in the machine's load (other processes,
    CPU frequency) falls on all of them alike instead of on whichever ran at that moment."""
    for call in cases.values():  # warm up: connections, scripts, caches
        for _ in range(200):
            call()
    spent = dict.fromkeys(cases, 0.0)
    counts = dict.fromkeys(cases, 0)
    clock = time.perf_counter
    end = clock() + seconds
    while clock() < end:
        for name, call in cases.items():
            start = clock()
            for _ in range(100):
                call()
            spent[name] += clock() - start
            counts[name] += 100
    return {name: counts[name] / spent[name] for name in cases}


def build_cases(url: str, prefix: str) -> tuple[dict[str, Callable[[], Any]], list[Any]]:
    import redis
    from limits import parse
    from limits.storage import RedisStorage
    from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

    from brownout.guard._ratelimit import RateLimit
    from brownout.stores import LocalFirstStore, RedisStore

    client = redis.Redis.from_url(url)
    store = RedisStore(url=url, prefix=prefix)
    limit = RateLimit(rate=1e7, burst=100_000, store=store, name="bench")
    local = RateLimit(
        rate=1e7,
        burst=100_000,
        name="bench-local",
        store=LocalFirstStore(RedisStore(url=url, prefix=prefix), sync_interval_s=0.1),
    )
    storage = RedisStorage(url)
    huge = parse("10000000/second")
    moving = MovingWindowRateLimiter(storage)
    fixed = FixedWindowRateLimiter(storage)

    def brownout_check() -> bool:
        return limit.check("k").allowed

    def moving_hit() -> bool:
        return moving.hit(huge, prefix, "moving")

    def fixed_hit() -> bool:
        return fixed.hit(huge, prefix, "fixed")

    def local_check() -> bool:
        return local.check("k").allowed

    cases = {
        "PING": client.ping,
        "brownout RedisStore": brownout_check,
        "limits moving window": moving_hit,
        "limits fixed window": fixed_hit,
        "brownout LocalFirstStore": local_check,
    }
    return cases, [client, store, local.store]


def cleanup(url: str, prefix: str, closers: list[Any]) -> None:
    import redis

    for thing in closers:
        close = getattr(thing, "close", None) or thing.redis.close
        close()
    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        if keys:
            client.delete(*keys)


def run(url: str, rounds: int, seconds: float) -> dict[str, Any]:
    prefix = f"bench-ratelimit:{uuid.uuid4().hex[:8]}:"
    cases, closers = build_cases(url, prefix)
    names = list(cases)
    rates: dict[str, list[float]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in names}
    try:
        for r in range(rounds):
            got = measure_round(cases, seconds)
            for name in names:
                rates[name].append(got[name])
                ratios[name].append(got[name] / got["PING"])
            say(f"round {r + 1}: " + ", ".join(f"{n} {got[n]:,.0f}/s" for n in names))
    finally:
        cleanup(url, prefix, closers)
    return {
        name: {
            "per_s": statistics.median(rates[name]),
            "ratio_to_ping": statistics.median(ratios[name]),
            "rounds_per_s": rates[name],
        }
        for name in names
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="rounds of 2 s instead of 10 s")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--url", help="use this Redis instead of a private redis-server")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (2.0 if args.quick else 10.0)
    ensure_limits()
    if args.url:
        results = run(args.url, args.rounds, seconds)
        where = args.url
    else:
        with private_redis() as url:
            results = run(url, args.rounds, seconds)
        where = "private redis-server"

    import limits
    import redis

    print(
        f"Redis decisions per second, one sync client, sequential "
        f"(median of {args.rounds} rounds of {seconds:g} s; {where})"
    )
    print(
        f"python {platform.python_version()}, redis-py {redis.__version__}, limits {limits.__version__}"
    )
    print(f"{'case':<28}{'per second':>14}{'x PING':>10}")
    for name, row in results.items():
        print(f"{name:<28}{row['per_s']:>14,.0f}{row['ratio_to_ping']:>10.3f}")
    ours = results["brownout RedisStore"]["ratio_to_ping"]
    verdict = "meets" if ours >= TARGET else "MISSES"
    print(f"brownout RedisStore: {ours:.3f}x PING ({verdict} the target >= {TARGET}x)")
    for peer in ("limits moving window", "limits fixed window"):
        mine = results["brownout RedisStore"]["ratio_to_ping"]
        print(f"brownout / {peer}: {mine / results[peer]['ratio_to_ping']:.2f}x")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"target": TARGET, "url": where, "results": results}, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
