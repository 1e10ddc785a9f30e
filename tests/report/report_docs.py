"""Results documents, ledgers and summaries for the report tests, built with the real
RunRecorder from a seeded synthetic shop run: people ("shoppers") and a scraper, a payments
fault between FAULT_START_S and FAULT_END_S that hurts a naive build and barely touches a
guarded one."""

from __future__ import annotations

import random
from typing import Any

from brownout.results import DROPPED, ERROR, OK, SHED, TIMEOUT, RunRecorder

CLASSES = [("shoppers", 2.0), ("scraper", 1.0)]
ENDPOINTS = {0: ["GET /products/{id}", "POST /checkout"], 1: ["GET /search"]}
FAULT_START_S = 10.25
FAULT_END_S = 19.5
STARTED_AT = "2026-01-02T03:04:05+00:00"


def scenario_spec(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "classes": [
            {"name": "shoppers", "kind": "human", "timeout_s": 2.0},
            {"name": "scraper", "kind": "bot", "timeout_s": 1.0},
        ],
    }


def faults() -> list[dict[str, Any]]:
    return [
        {
            "index": 0,
            "name": "payments-slow",
            "target": "payments",
            "kind": "latency",
            "layer": "tcp",
            "params": {"latency_s": 1.5, "jitter_s": 0.1},
            "at_s": 10.0,
            "duration_s": 9.0,
            "started_s": FAULT_START_S,
            "ended_s": FAULT_END_S,
            "errors": [],
        },
        {
            "index": 1,
            "name": "never-applied",
            "target": "payments",
            "kind": "down",
            "layer": "tcp",
            "params": {},
            "at_s": 25.0,
            "duration_s": 1.0,
            "started_s": None,
            "ended_s": None,
            "errors": ["refused"],
        },
    ]


def _outcome(rng: random.Random, build: str, ci: int, t: float) -> tuple[int, int]:
    """(outcome, response_us) of one request of class ``ci`` intended at ``t``."""
    in_fault = FAULT_START_S <= t < FAULT_END_S
    base = rng.lognormvariate(10.0, 0.6)  # median ~22 ms
    if build == "naive" and in_fault:
        roll = rng.random()
        if roll < 0.45:
            return TIMEOUT, round(CLASSES[ci][1] * 1e6)
        if roll < 0.6:
            return ERROR, int(base * 20)
        return OK, int(base * 30)
    if build == "guarded" and in_fault:
        roll = rng.random()
        if ci == 1 and roll < 0.5:
            return SHED, int(base / 4)
        return OK, int(base * 2)
    roll = rng.random()
    if roll < 0.01:
        return ERROR, int(base)
    if roll < 0.015:
        return DROPPED, 0
    return OK, int(base)


def make_run(
    build: str,
    *,
    kind: str = "load",
    seed: int = 1,
    duration_s: float = 30.0,
    rate: tuple[float, float] = (40.0, 15.0),
    scenario_name: str = "shop",
) -> dict[str, Any]:
    """A results document of a ``build`` ("naive", "guarded" or anything else: healthy)."""
    rng = random.Random(seed)
    rec = RunRecorder(CLASSES, interval_s=1.0, kind=kind)
    ids = {(ci, ep): rec.endpoint(ci, ep) for ci, eps in ENDPOINTS.items() for ep in eps}
    events: list[tuple[float, int, tuple[Any, ...]]] = []
    for ci, lam in enumerate(rate):
        t = 0.0
        while True:
            t += rng.expovariate(lam)
            if t >= duration_s - 2.5:
                break
            ep = rng.choice(ENDPOINTS[ci])
            outcome, response_us = _outcome(rng, build, ci, t)
            events.append((t, 0, ("offered", ci)))
            if outcome != DROPPED:
                done = t + response_us / 1e6
                lag = rng.randint(0, 2000)
                events.append(
                    (done, 1, ("attempt", ci, ids[(ci, ep)], max(response_us - lag, 0), lag))
                )
            else:
                done = t
            events.append((done, 2, ("request", ci, ids[(ci, ep)], outcome, response_us, t)))
    events.sort(key=lambda e: (e[0], e[1]))
    k = 1
    for when, _, payload in events:
        while when >= k:
            rec.flush(float(k), in_flight=0)
            k += 1
        if payload[0] == "offered":
            rec.offered(payload[1])
        elif payload[0] == "attempt":
            _, ci, ei, service_us, lag = payload
            rec.attempt(ci, ei, service_us, lag, False)
        else:
            _, ci, ei, outcome, response_us, intended = payload
            rec.request(ci, ei, outcome, response_us, intended)
    while k <= duration_s:
        rec.flush(float(k), in_flight=0)
        k += 1
    return rec.finish(
        duration_s=duration_s,
        scenario=scenario_spec(scenario_name),
        scenario_name=scenario_name,
        started_at=STARTED_AT,
        faults=faults(),
        thresholds=["p(99) < 1s", {"expr": "goodput > 90%", "class": "shoppers"}],
    )


def ledger() -> dict[str, Any]:
    """A ledger in the probe's format (docs/ledger.md), two findings and one endpoint."""
    return {
        "schema": "brownout.ledger",
        "version": 1,
        "started_at": STARTED_AT,
        "duration_s": 12.0,
        "endpoints": {
            "GET /products/{id}": {
                "method": "GET",
                "route": "/products/{id}",
                "requests": 120,
                "errors": 0,
                "demands": {
                    "wall_s": {"mean": 0.05, "p50": 0.04, "p95": 0.09, "max": 0.2},
                    "db_calls": {"mean": 21.0, "p50": 21.0, "p95": 21.0, "max": 21.0},
                    "db_s": {"mean": 0.03, "p50": 0.03, "p95": 0.05, "max": 0.08},
                },
            }
        },
        "findings": [
            {
                "kind": "no_timeout",
                "key": "POST payments:8001/charge",
                "endpoint": "POST /checkout",
                "severity": "warning",
                "title": "payments called without a timeout",
                "occurrences": 7,
                "evidence": {"host": "payments:8001", "calls": 7},
                "fix": "set a timeout: brownout.Timeout(2.0)",
            },
            {
                "kind": "n_plus_one_db",
                "key": "select * from reviews where product_id = ?",
                "endpoint": "GET /products/{id}",
                "severity": "error",
                "title": "reviews loaded one query per product",
                "occurrences": 120,
                "evidence": {"calls": 20, "total_ms": 61.5, "site": "shop.py:42"},
                "fix": "load reviews with one IN query or a join (selectinload)",
            },
        ],
    }


def summary() -> dict[str, Any]:
    """The demo's summary.json shape."""
    return {
        "naive": {
            "people_goodput_ratio": 0.41,
            "p99_ms": 2000.0,
            "recovery_s": None,
            "knee_rps": 48.0,
        },
        "guarded": {
            "people_goodput_ratio": 0.97,
            "p99_ms": 180.5,
            "recovery_s": 1.5,
            "knee_rps": 95.0,
        },
        "predicted": {
            "people_goodput_ratio": 0.95,
            "p99_ms": 150.0,
            "recovery_s": 2.0,
            "knee_rps": 90.0,
        },
    }
