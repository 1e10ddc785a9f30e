#!/usr/bin/env python3
"""Per-call overhead of the guard policies, side by side with their Python peers.

For every case a loop of ``n`` calls of a trivial function is timed with and without the
policy, in the same process and in alternating rounds; the figure is the median over the
rounds of (policy loop - bare loop) / n: the nanoseconds the policy adds per call. The
ratio column divides the guarded call's time by the bare call's time.

    python benchmarks/bench_guard.py            # full run (about a minute)
    python benchmarks/bench_guard.py --quick    # shorter loops, fewer rounds
    python benchmarks/bench_guard.py --json out.json

Targets (issue 2): each brownout policy adds less than the fastest peer doing the same job;
the async Pipeline of Timeout, Retry, CircuitBreaker and Bulkhead adds <= 5,000 ns; the sync
Pipeline of Retry, CircuitBreaker and Bulkhead adds <= 2,000 ns.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import brownout
from brownout import Pipeline, Retry, Timeout
from brownout.guard import Bulkhead, Cache, CircuitBreaker, Fallback, Hedge

AsyncFn = Callable[[], Awaitable[Any]]
SyncFn = Callable[[], Any]


async def bare_async() -> int:
    return 1


def bare_sync() -> int:
    return 1


@dataclass
class Case:
    job: str  # what the case does: "timeout", "retry", "breaker", "bulkhead", ...
    name: str
    mode: str  # "async" | "sync"
    make: Callable[[], Any]  # returns the zero-argument callable to time
    ours: bool


def _async_cases() -> list[Case]:
    cases: list[Case] = []

    def add(job: str, name: str, make: Callable[[], AsyncFn], ours: bool = False) -> None:
        cases.append(Case(job, name, "async", make, ours))

    # -- timeout
    def asyncio_timeout() -> AsyncFn:
        async def run() -> int:
            async with asyncio.timeout(10):
                return await bare_async()

        return run

    add("timeout", "asyncio.timeout", asyncio_timeout)
    add("timeout", "brownout Timeout", lambda: _acall(Timeout(10.0)), True)

    # -- retry
    def tenacity_retry() -> AsyncFn:
        import tenacity

        return tenacity.retry(stop=tenacity.stop_after_attempt(3), reraise=True)(bare_async)  # type: ignore[no-any-return]

    def stamina_retry() -> AsyncFn:
        import stamina

        return stamina.retry(on=Exception, attempts=3)(bare_async)

    def backoff_retry() -> AsyncFn:
        import backoff

        return backoff.on_exception(backoff.expo, Exception, max_tries=3)(bare_async)  # type: ignore[no-any-return]

    add("retry", "tenacity", tenacity_retry)
    add("retry", "stamina", stamina_retry)
    add("retry", "backoff", backoff_retry)
    add("retry", "brownout Retry", lambda: _acall(Retry(attempts=3)), True)

    # -- breaker
    def aiobreaker_cb() -> AsyncFn:
        import aiobreaker

        breaker = aiobreaker.CircuitBreaker()
        return lambda: breaker.call_async(bare_async)

    def purgatory_cb() -> AsyncFn:
        from purgatory import AsyncCircuitBreakerFactory

        factory = AsyncCircuitBreakerFactory()
        return factory("bench")(bare_async)  # type: ignore[no-any-return]

    def circuitbreaker_cb() -> AsyncFn:
        import circuitbreaker

        return circuitbreaker.circuit(bare_async)  # type: ignore[no-any-return]

    add("breaker", "aiobreaker", aiobreaker_cb)
    add("breaker", "purgatory", purgatory_cb)
    add("breaker", "circuitbreaker", circuitbreaker_cb)
    add("breaker", "brownout CircuitBreaker", lambda: _acall(CircuitBreaker()), True)

    # -- bulkhead
    def semaphore() -> AsyncFn:
        sem = asyncio.Semaphore(10)

        async def run() -> int:
            async with sem:
                return await bare_async()

        return run

    add("bulkhead", "asyncio.Semaphore", semaphore)
    add("bulkhead", "brownout Bulkhead", lambda: _acall(Bulkhead(max_concurrent=10)), True)

    # -- brownout only (no peer does the same job in Python)
    add("fallback", "brownout Fallback", lambda: _acall(Fallback.value(0)), True)
    add("hedge", "brownout Hedge (first attempt wins)", lambda: _acall(Hedge(delay_s=1.0)), True)
    add(
        "cache hit",
        "brownout Cache (hit)",
        lambda: _acall(Cache(ttl_s=3600, max_entries=1000)),
        True,
    )
    add(
        "pipeline",
        "brownout Pipeline(Timeout, Retry, CircuitBreaker, Bulkhead)",
        lambda: _acall(
            Pipeline(
                [Timeout(10.0), Retry(attempts=3), CircuitBreaker(), Bulkhead(max_concurrent=10)]
            )
        ),
        True,
    )
    return cases


def _sync_cases() -> list[Case]:
    cases: list[Case] = []

    def add(job: str, name: str, make: Callable[[], SyncFn], ours: bool = False) -> None:
        cases.append(Case(job, name, "sync", make, ours))

    def tenacity_retry() -> SyncFn:
        import tenacity

        return tenacity.retry(stop=tenacity.stop_after_attempt(3), reraise=True)(bare_sync)  # type: ignore[no-any-return]

    def stamina_retry() -> SyncFn:
        import stamina

        return stamina.retry(on=Exception, attempts=3)(bare_sync)

    def backoff_retry() -> SyncFn:
        import backoff

        return backoff.on_exception(backoff.expo, Exception, max_tries=3)(bare_sync)  # type: ignore[no-any-return]

    add("retry", "tenacity", tenacity_retry)
    add("retry", "stamina", stamina_retry)
    add("retry", "backoff", backoff_retry)
    add("retry", "brownout Retry", lambda: _call(Retry(attempts=3)), True)

    def pybreaker_cb() -> SyncFn:
        import pybreaker

        breaker = pybreaker.CircuitBreaker()
        return lambda: breaker.call(bare_sync)

    def circuitbreaker_cb() -> SyncFn:
        import circuitbreaker

        return circuitbreaker.circuit(bare_sync)  # type: ignore[no-any-return]

    add("breaker", "pybreaker", pybreaker_cb)
    add("breaker", "circuitbreaker", circuitbreaker_cb)
    add("breaker", "brownout CircuitBreaker", lambda: _call(CircuitBreaker()), True)

    def threading_semaphore() -> SyncFn:
        import threading

        sem = threading.BoundedSemaphore(10)

        def run() -> int:
            with sem:
                return bare_sync()

        return run

    add("bulkhead", "threading.BoundedSemaphore", threading_semaphore)
    add("bulkhead", "brownout Bulkhead", lambda: _call(Bulkhead(max_concurrent=10)), True)
    add("timeout", "brownout Timeout", lambda: _call(Timeout(10.0)), True)
    add("fallback", "brownout Fallback", lambda: _call(Fallback.value(0)), True)
    add(
        "cache hit",
        "brownout Cache (hit)",
        lambda: _call(Cache(ttl_s=3600, max_entries=1000)),
        True,
    )
    add(
        "pipeline",
        "brownout Pipeline(Retry, CircuitBreaker, Bulkhead)",
        lambda: _call(Pipeline([Retry(attempts=3), CircuitBreaker(), Bulkhead(max_concurrent=10)])),
        True,
    )
    return cases


def _acall(policy: Any) -> AsyncFn:
    decorated = policy(bare_async)
    return decorated  # type: ignore[no-any-return]


def _call(policy: Any) -> SyncFn:
    return policy(bare_sync)  # type: ignore[no-any-return]


async def _time_async(fn: AsyncFn, n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        await fn()
    return (time.perf_counter_ns() - start) / n


def _time_sync(fn: SyncFn, n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - start) / n


def measure(cases: list[Case], n: int, rounds: int) -> list[dict[str, Any]]:
    fns = {id(c): c.make() for c in cases}
    added: dict[int, list[float]] = {id(c): [] for c in cases}
    bare: list[float] = []
    mode = cases[0].mode

    async def one_round_async() -> None:
        base = await _time_async(bare_async, n)
        bare.append(base)
        for c in cases:
            gc.collect()
            added[id(c)].append(await _time_async(fns[id(c)], n) - base)

    def one_round_sync() -> None:
        base = _time_sync(bare_sync, n)
        bare.append(base)
        for c in cases:
            gc.collect()
            added[id(c)].append(_time_sync(fns[id(c)], n) - base)

    # Warm up every path once, then measure.
    if mode == "async":

        async def run_all() -> None:
            for c in cases:
                await _time_async(fns[id(c)], min(n, 2000))
            for _ in range(rounds):
                await one_round_async()

        asyncio.run(run_all())
    else:
        for c in cases:
            _time_sync(fns[id(c)], min(n, 2000))
        for _ in range(rounds):
            one_round_sync()
    base_ns = statistics.median(bare)
    rows = []
    for c in cases:
        ns = statistics.median(added[id(c)])
        rows.append(
            {
                "mode": c.mode,
                "job": c.job,
                "name": c.name,
                "ours": c.ours,
                "added_ns": round(ns),
                "bare_ns": round(base_ns),
                "ratio_to_bare": round((base_ns + ns) / base_ns, 2),
            }
        )
    return rows


TARGETS = {("async", "pipeline"): 5000.0, ("sync", "pipeline"): 2000.0}


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for row in rows:
        if not row["ours"]:
            continue
        peers = [
            r for r in rows if not r["ours"] and r["job"] == row["job"] and r["mode"] == row["mode"]
        ]
        target = TARGETS.get((row["mode"], row["job"]))
        if peers:
            best = min(peers, key=lambda r: r["added_ns"])
            ok = row["added_ns"] < best["added_ns"]
            lines.append(
                f"{'PASS' if ok else 'FAIL'} {row['mode']} {row['job']}: {row['added_ns']} ns vs "
                f"fastest peer {best['name']} {best['added_ns']} ns "
                f"({row['added_ns'] / max(best['added_ns'], 1):.2f}x)"
            )
        if target is not None:
            ok = row["added_ns"] <= target
            lines.append(
                f"{'PASS' if ok else 'FAIL'} {row['mode']} {row['job']}: {row['added_ns']} ns "
                f"<= target {target:.0f} ns"
            )
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short loops, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = parser.parse_args(argv)
    n = 5_000 if args.quick else 40_000
    rounds = args.rounds or (3 if args.quick else 7)
    print(
        f"brownout {brownout.__version__} guard overhead: Python {platform.python_version()}, "
        f"{n} calls x {rounds} rounds, median ns added per call",
        flush=True,
    )
    rows = measure(_async_cases(), n, rounds) + measure(_sync_cases(), n, rounds)
    width = max(len(r["name"]) for r in rows)
    for mode in ("async", "sync"):
        print(f"\n{mode} (bare call {next(r['bare_ns'] for r in rows if r['mode'] == mode)} ns)")
        for r in rows:
            if r["mode"] == mode:
                print(
                    f"  {r['job']:<10} {r['name']:<{width}} {r['added_ns']:>8} ns  x{r['ratio_to_bare']}"
                )
    lines = verdicts(rows)
    print()
    for line in lines:
        print(line)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"n": n, "rounds": rounds, "rows": rows, "verdicts": lines}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
