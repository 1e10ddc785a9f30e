"""Synthetic request streams with known truth, fed to a RunRecorder as an engine would."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from brownout.results import DROPPED, ERROR, OK, SHED, TIMEOUT, RunRecorder

CLASSES = [("human", 2.0), ("bot", 0.5)]
ENDPOINTS = {0: ["home", "search", "GET /items/{id}"], 1: ["crawl", "home"]}
STARTED_AT = "2026-01-02T03:04:05+00:00"
SCENARIO = {"name": "synthetic", "classes": [{"name": n, "timeout_s": t} for n, t in CLASSES]}


@dataclass(frozen=True)
class Attempt:
    service_us: int
    lag_us: int
    done_s: float
    retry: bool


@dataclass(frozen=True)
class Req:
    ci: int
    endpoint: str
    intended_s: float
    outcome: int
    response_us: int
    attempts: tuple[Attempt, ...]

    @property
    def done_s(self) -> float:
        """Completion time exactly as the recorder computes it."""
        return self.intended_s + self.response_us / 1e6

    @property
    def goodput(self) -> bool:
        return self.outcome == OK and self.response_us <= round(CLASSES[self.ci][1] * 1e6)


def make_stream(seed: int, n: int, span_s: float = 10.0) -> list[Req]:
    """``n`` logical requests with intended starts in [0, span_s), every outcome, retries,
    responses up to ~4 s (some successes beyond the class timeout)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ci = 0 if rng.random() < 0.7 else 1
        endpoint = rng.choice(ENDPOINTS[ci])
        t = rng.uniform(0, span_s)
        outcome = rng.choices([OK, ERROR, SHED, TIMEOUT, DROPPED], weights=[70, 8, 7, 8, 7])[0]
        if outcome == DROPPED:
            out.append(Req(ci, endpoint, t, outcome, 0, ()))
            continue
        attempts = []
        now = t
        for a in range(rng.choice([1, 1, 1, 2, 3])):
            lag_us = rng.randint(0, 20_000)
            service_us = int(rng.lognormvariate(10.5, 1.0))  # median ~36 ms
            service_us = min(service_us, 1_200_000)
            done = now + (lag_us + service_us) / 1e6
            attempts.append(Attempt(service_us, lag_us, done, a > 0))
            now = done + rng.uniform(0, 0.2)  # backoff before the next attempt
        response_us = round((attempts[-1].done_s - t) * 1e6)
        out.append(Req(ci, endpoint, t, outcome, response_us, tuple(attempts)))
    return out


def in_flight_at(reqs: Iterable[Req], t: float) -> int:
    """Requests sent and not finished at time t."""
    return sum(1 for r in reqs if r.outcome != DROPPED and r.intended_s <= t < r.done_s)


def feed(
    reqs: Sequence[Req],
    *,
    duration_s: float,
    interval_s: float = 1.0,
    thresholds: Sequence[Any] = (),
    faults: Sequence[dict[str, Any]] = (),
    sample_in_flight: bool = True,
    kind: str = "load",
) -> dict[str, Any]:
    """Feed ``reqs`` to a fresh recorder in time order, flushing at each boundary."""
    rec = RunRecorder(CLASSES, interval_s=interval_s, kind=kind)
    ids = {(ci, ep): rec.endpoint(ci, ep) for ci, eps in ENDPOINTS.items() for ep in eps}
    events: list[tuple[float, int, Any]] = []
    for r in reqs:
        events.append((r.intended_s, 0, ("offered", r)))
        for a in r.attempts:
            events.append((a.done_s, 1, ("attempt", r, a)))
        events.append((r.done_s, 2, ("request", r)))
    events.sort(key=lambda e: (e[0], e[1]))
    k = 1
    for when, _, payload in events:
        while when >= k * interval_s:
            rec.flush(
                k * interval_s,
                in_flight=in_flight_at(reqs, k * interval_s) if sample_in_flight else None,
            )
            k += 1
        kind_of = payload[0]
        r = payload[1]
        ei = ids[(r.ci, r.endpoint)]
        if kind_of == "offered":
            rec.offered(r.ci)
        elif kind_of == "attempt":
            a = payload[2]
            rec.attempt(r.ci, ei, a.service_us, a.lag_us, a.retry)
        else:
            rec.request(r.ci, ei, r.outcome, r.response_us, r.intended_s)
    while k * interval_s <= duration_s:
        rec.flush(
            k * interval_s,
            in_flight=in_flight_at(reqs, k * interval_s) if sample_in_flight else None,
        )
        k += 1
    return rec.finish(
        duration_s=duration_s,
        scenario=SCENARIO,
        started_at=STARTED_AT,
        faults=faults,
        thresholds=thresholds,
    )


def row_of(t: float, interval_s: float) -> int:
    return math.floor(t / interval_s + 1e-9)
