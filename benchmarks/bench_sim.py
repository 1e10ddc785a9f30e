#!/usr/bin/env python3
"""Simulator speed: customers/s on M/M/4 beside simpy and ciw, and requests/s through a
three-tier topology with retries, a retry budget and circuit breakers active.

1. M/M/4 at utilization 0.8 (Poisson arrivals at 320/s, exponential service of mean
   10 ms, 4 servers, FIFO, unbounded queue), the same number of customers in each tool:

   - ``brownout``: ``brownout.model.simulate`` with a one-station topology: the whole call,
     building the run and its report (latency percentiles, Little's-law areas, a 1 s
     timeline) included;
   - ``simpy``: a ``Resource(capacity=4)``, one process per customer (simpy's idiom);
   - ``ciw``: ``ciw.create_network`` with the same distributions, ``simulate_until_max_time``;
   - ``heap loop``, for context: a bare ``heapq`` loop with two event kinds and no
     statistics beyond the mean wait, the floor of any pure-Python simulator.

   simpy and ciw are installed with pip into the running interpreter when missing. Each
   round runs every tool once, in turns; figures are medians over the rounds of
   customers per CPU second of this process (``time.process_time``: other load on the
   machine disturbs it much less than wall time), after a ``gc.collect()`` so no tool pays
   for the garbage of the one before. Target (issue 7): brownout >= 5x simpy.

2. Three tiers: clients (Poisson, 2 000/s, 2 s timeout) call ``web`` (32 workers, 2 ms of
   work), which calls ``app`` (32 workers, 3 ms; 500 ms timeout, a circuit breaker), which
   calls ``db`` (8 servers, lognormal 1 ms cv 1.5) through a 16-connection pool (200 ms
   timeout, 3 attempts with a 10% retry budget, a breaker): retries at one layer, as the
   SRE book advises. ``db`` fails 2% of its visits, so retries, budget and breaker
   decisions all happen, with the real ``Retry``, ``RetryBudget`` and ``CircuitBreaker``.
   Figure: simulated requests per CPU second. Target (issue 7): >= 100k/s on one core.
   Also reported: the same with retries at every layer (clients 3 attempts with backoff,
   web -> app 3 attempts with its own budget), about a fifth more work per request.

    python benchmarks/bench_sim.py               # 5 rounds, 200k customers / 100k requests
    python benchmarks/bench_sim.py --quick       # 3 rounds, 50k / 30k
    python benchmarks/bench_sim.py --json out.json
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import platform
import random
import statistics
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

ARRIVAL_RPS = 320.0
SERVICE_S = 0.010
SERVERS = 4
TARGET_VS_SIMPY = 5.0
TARGET_THREE_TIER_RPS = 100_000.0
THREE_TIER_RPS = 2000.0


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ensure_python_packages() -> None:
    for module, package in (("simpy", "simpy"), ("ciw", "ciw")):
        try:
            __import__(module)
        except ImportError:
            say(f"installing {package} with pip")
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", package], check=True)


# -- M/M/4 in each tool: each returns (customers, mean wait in seconds) ----------------------


def run_brownout(customers: int, seed: int) -> tuple[int, float]:
    from brownout.model import Client, ServiceTime, Station, Topology, simulate

    topology = Topology(
        stations=(Station.simple("server", SERVERS, ServiceTime.exponential(SERVICE_S)),)
    )
    client = Client(name="customers", rate=ARRIVAL_RPS, target="server")
    result = simulate(topology, client, customers / ARRIVAL_RPS, seed)
    return result.overall.offered, result.stations["server"].mean_wait_s


def run_simpy(customers: int, seed: int) -> tuple[int, float]:
    import simpy

    env = simpy.Environment()
    servers = simpy.Resource(env, capacity=SERVERS)
    rng = random.Random(seed)
    waits: list[float] = []

    def customer(env: Any) -> Any:
        arrived = env.now
        with servers.request() as request:
            yield request
            waits.append(env.now - arrived)
            yield env.timeout(rng.expovariate(1 / SERVICE_S))

    def source(env: Any) -> Any:
        for _ in range(customers):
            yield env.timeout(rng.expovariate(ARRIVAL_RPS))
            env.process(customer(env))

    env.process(source(env))
    env.run()
    return len(waits), statistics.fmean(waits)


def run_ciw(customers: int, seed: int) -> tuple[int, float]:
    import ciw

    ciw.seed(seed)
    network = ciw.create_network(
        arrival_distributions=[ciw.dists.Exponential(rate=ARRIVAL_RPS)],
        service_distributions=[ciw.dists.Exponential(rate=1 / SERVICE_S)],
        number_of_servers=[SERVERS],
    )
    sim = ciw.Simulation(network)
    sim.simulate_until_max_time(customers / ARRIVAL_RPS)
    records = sim.get_all_records()
    return len(records), statistics.fmean(r.waiting_time for r in records)


def run_heap_loop(customers: int, seed: int) -> tuple[int, float]:
    rng = random.Random(seed)
    exp = rng.expovariate
    heap: list[tuple[float, int, float]] = [(exp(ARRIVAL_RPS), 0, 0.0)]
    queue: deque[float] = deque()
    busy, arrived, wait_sum = 0, 0, 0.0
    mu = 1 / SERVICE_S
    while heap:
        t, kind, _ = heapq.heappop(heap)
        if kind == 0:
            arrived += 1
            if arrived < customers:
                heapq.heappush(heap, (t + exp(ARRIVAL_RPS), 0, 0.0))
            if busy < SERVERS:
                busy += 1
                heapq.heappush(heap, (t + exp(mu), 1, 0.0))
            else:
                queue.append(t)
        elif queue:
            wait_sum += t - queue.popleft()
            heapq.heappush(heap, (t + exp(mu), 1, 0.0))
        else:
            busy -= 1
    return arrived, wait_sum / arrived


def erlang_c_wait_s() -> float:
    a = ARRIVAL_RPS * SERVICE_S
    b = 1.0
    for k in range(1, SERVERS + 1):
        b = a * b / (k + a * b)
    rho = a / SERVERS
    c = b / (1 - rho * (1 - b))
    return c / (SERVERS / SERVICE_S - ARRIVAL_RPS)


# -- three tiers ------------------------------------------------------------------------------


def three_tier(layered: bool = False) -> tuple[Any, Any]:
    """web -> app -> db (through a pool). By default retries sit at one layer, as the SRE
    book advises: app -> db retries (3 attempts, 10% budget); web -> app and app -> db have
    circuit breakers; clients only time out. ``layered=True`` also retries at the clients
    (3 attempts, backoff) and at web -> app (3 attempts, its own 10% budget)."""
    from brownout.model import (
        Call,
        Client,
        Endpoint,
        PolicySpec,
        ServiceTime,
        Station,
        Topology,
        Work,
    )

    exp = ServiceTime.exponential
    app_call: dict[str, Any] = {"retry": "app_retry"} if layered else {}
    web = Station(
        name="web",
        servers=32,
        endpoints={
            "page": Endpoint(
                steps=(
                    Work(exp(0.002)),
                    Call(target="app.render", timeout_s=0.5, policies=("app_breaker",), **app_call),
                )
            )
        },
    )
    app = Station(
        name="app",
        servers=32,
        endpoints={
            "render": Endpoint(
                steps=(
                    Work(exp(0.003)),
                    Call(
                        target="db",
                        pool="db_pool",
                        timeout_s=0.2,
                        retry="db_retry",
                        policies=("db_breaker",),
                    ),
                )
            )
        },
    )
    db = Station.simple("db", 8, ServiceTime.lognormal(0.001, 1.5), error_rate=0.02)
    pool = Station(name="db_pool", servers=16)
    policies = {
        "app_budget": PolicySpec("retry_budget", {"retry_ratio": 0.1}),
        "db_budget": PolicySpec("retry_budget", {"retry_ratio": 0.1}),
        "app_retry": PolicySpec("retry", {"attempts": 3, "base_s": 0.01, "budget": "app_budget"}),
        "db_retry": PolicySpec("retry", {"attempts": 3, "base_s": 0.005, "budget": "db_budget"}),
        "app_breaker": PolicySpec("circuit_breaker", {"minimum_calls": 20, "open_s": 5.0}),
        "db_breaker": PolicySpec("circuit_breaker", {"minimum_calls": 20, "open_s": 5.0}),
    }
    topology = Topology(stations=(web, app, db, pool), policies=policies)
    retry = PolicySpec("retry", {"attempts": 3, "base_s": 0.05}) if layered else None
    client = Client(
        name="users", rate=THREE_TIER_RPS, target="web.page", timeout_s=2.0, retry=retry
    )
    return topology, client


def run_three_tier(requests: int, seed: int, layered: bool = False) -> tuple[int, dict[str, float]]:
    from brownout.model import simulate

    topology, client = three_tier(layered)
    result = simulate(topology, client, requests / THREE_TIER_RPS, seed)
    db_call = result.call("db")
    figures = {
        "ok_ratio": result.overall.ok / max(1, result.overall.completed),
        "db_attempts": float(db_call.attempts),
        "db_retries": float(db_call.retries),
        "db_abandoned_budget": float(db_call.abandoned.get("budget", 0)),
        "db_utilization": result.stations["db"].utilization,
    }
    return result.overall.offered, figures


def run_three_tier_layered(requests: int, seed: int) -> tuple[int, dict[str, float]]:
    return run_three_tier(requests, seed, layered=True)


# -- driver -------------------------------------------------------------------------------


def cpu_rate(fn: Callable[[int, int], tuple[int, Any]], n: int, seed: int) -> tuple[float, Any]:
    gc.collect()  # no tool pays for the garbage the one before it left
    start = time.process_time()
    count, extra = fn(n, seed)
    return count / (time.process_time() - start), extra


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of fewer customers")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 5)
    customers = 50_000 if args.quick else 200_000
    requests = 30_000 if args.quick else 100_000
    ensure_python_packages()
    tools: dict[str, Callable[[int, int], tuple[int, float]]] = {
        "brownout": run_brownout,
        "simpy": run_simpy,
        "ciw": run_ciw,
        "heap loop": run_heap_loop,
    }
    rates: dict[str, list[float]] = {name: [] for name in tools}
    waits: dict[str, list[float]] = {name: [] for name in tools}
    tier_rates: list[float] = []
    layered_rates: list[float] = []
    tier_figures: dict[str, float] = {}
    run_brownout(2000, 0)  # warm-up: imports
    run_three_tier(2000, 0)
    for rnd in range(rounds):
        for name, fn in tools.items():
            rate, wait = cpu_rate(fn, customers, rnd + 1)
            rates[name].append(rate)
            waits[name].append(wait)
            say(
                f"round {rnd + 1}: {name:10s} {rate:12,.0f} customers/s  mean wait {wait * 1e3:.3f} ms"
            )
        rate, tier_figures = cpu_rate(run_three_tier, requests, rnd + 1)
        tier_rates.append(rate)
        say(f"round {rnd + 1}: three tiers  {rate:12,.0f} requests/s")
        rate, _ = cpu_rate(run_three_tier_layered, requests, rnd + 1)
        layered_rates.append(rate)
        say(f"round {rnd + 1}: layered      {rate:12,.0f} requests/s")
    median = {name: statistics.median(r) for name, r in rates.items()}
    theory = erlang_c_wait_s()
    print(
        f"\nM/M/{SERVERS} at utilization {ARRIVAL_RPS * SERVICE_S / SERVERS:.2f}, {customers:,} "
        f"customers per run, median of {rounds} rounds, customers per CPU second "
        f"(Erlang C mean wait {theory * 1e3:.3f} ms)"
    )
    print(f"{'tool':10s} {'customers/s':>12s} {'x simpy':>8s} {'mean wait ms':>13s}")
    for name in tools:
        print(
            f"{name:10s} {median[name]:12,.0f} {median[name] / median['simpy']:8.2f} "
            f"{statistics.fmean(waits[name]) * 1e3:13.3f}"
        )
    ratio = median["brownout"] / median["simpy"]
    tier = statistics.median(tier_rates)
    layered = statistics.median(layered_rates)
    print(
        f"brownout vs simpy: {ratio:.2f}x; target >= {TARGET_VS_SIMPY:g}x: "
        f"{'met' if ratio >= TARGET_VS_SIMPY else 'NOT met'}"
    )
    print(
        f"three tiers (retries, budgets, breakers), {requests:,} requests per run: "
        f"{tier:,.0f} requests/s; target >= {TARGET_THREE_TIER_RPS:,.0f}: "
        f"{'met' if tier >= TARGET_THREE_TIER_RPS else 'NOT met'} "
        f"(last run: ok {tier_figures['ok_ratio']:.3f}, db attempts "
        f"{tier_figures['db_attempts']:.0f}, retries {tier_figures['db_retries']:.0f}, "
        f"abandoned by budget {tier_figures['db_abandoned_budget']:.0f})"
    )
    print(
        f"three tiers with retries at every layer (clients, web -> app, app -> db): "
        f"{layered:,.0f} requests/s"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": platform.platform(),
                    "python": platform.python_version(),
                    "customers": customers,
                    "requests": requests,
                    "rounds": rounds,
                    "customers_per_cpu_s": rates,
                    "median_customers_per_cpu_s": median,
                    "ratio_vs_simpy": ratio,
                    "three_tier_requests_per_cpu_s": tier_rates,
                    "three_tier_median": tier,
                    "three_tier_layered_requests_per_cpu_s": layered_rates,
                    "three_tier_layered_median": layered,
                    "three_tier_last_figures": tier_figures,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
