"""A load scenario run against a modelled topology: ``brownout sim``'s engine.

The scenario format is the one ``brownout load`` runs (:mod:`brownout.scenario`); this
module turns it into the simulator's inputs and the simulator's run into the results
document ``brownout load`` writes (``kind: "sim"``), so a prediction and a measurement
read, merge and compare alike.

How the scenario maps (what the simulator cannot model is refused with a one-line error):

- a traffic class becomes a :class:`~brownout.model.Client`: its send times are the
  scenario's own (:func:`brownout.scenario.arrivals`: stages, ramps, spikes, constant,
  Poisson or bursty arrivals, same seed), its timeout and retries are the class's
  (``immediate``: no wait; ``backoff``: full jitter, ``U(0, min(cap, base * 2**(k-1)))``,
  as the load generator waits). A retried outcome is a ``timeout`` when ``on_timeout``,
  an ``error`` when ``on_error`` or ``on_status`` holds 500, 502 or 504, and a
  ``rejected`` (a 503 or 429 shed) when ``on_status`` holds 503 or 429;
- each request of the class's mix enters the endpoint the topology's ``[routes]`` give for
  its name (``"products"``), else for its path (``"/products/{id}"``), else for the class;
  a class without requests (a crawl) enters its class's route;
- sessions: each session start sends its requests (between ``min_requests`` and
  ``max_requests``) at the start and then after exponential think times. The simulator's
  clients are open-model, so a session's next request does not wait for the previous
  response (the think time usually dwarfs it; under overload the real user waits, and
  sends less, which the model does not);
- ``max_in_flight``, headers, keys, cookies and client addresses are not modelled;
- a fault's ``target`` names a station (usually a ``[dependencies.*]`` entry named like the
  proxy). ``latency`` and ``http_delay`` add their (mean) delay to every work step of the
  station, for ``probability`` = 1; ``timeout`` = 0 (a black hole) makes it never answer;
  ``timeout`` > 0, ``reset_peer``, ``down`` and ``http_reset`` make it fail (an error, after
  the timeout's delay for ``timeout``) with the fault's probability: at once when it is 1
  (the proxy answers, the station does no work), after the station's work otherwise; ``http_abort`` answers
  its status, a 503 or 429 as a shed (``rejected``), others as errors. An HTTP fault's
  ``match`` is not modelled: the fault acts on every visit of its station, so name the
  station that receives the matched requests; ``jitter`` is left out (its mean is 0).
  The byte-level kinds
  (``bandwidth``, ``slicer``, ``slow_close``, ``limit_data``, ``http_slow_body``) are not
  modelled.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from typing import Any

from .. import _validate as v
from ..errors import ScenarioError
from ..scenario import Scenario, TrafficClass, arrivals
from ._sim import Client, Fault, Simulation, derive_seed
from ._sim_engine import ERROR as SIM_ERROR
from ._sim_engine import OK as SIM_OK
from ._sim_engine import REFUSED as SIM_REFUSED
from ._sim_engine import REJECTED as SIM_REJECTED
from ._sim_engine import TIMEOUT as SIM_TIMEOUT
from ._topology import PolicySpec, Topology

__all__ = [
    "SIM_FAULT_KINDS",
    "fault_records",
    "results_document",
    "sim_clients",
    "sim_faults",
    "simulate_scenario",
]

SIM_FAULT_KINDS = (
    "latency",
    "http_delay",
    "timeout",
    "reset_peer",
    "down",
    "http_reset",
    "http_abort",
)
_SHED_STATUSES = frozenset({429, 503})
_ERROR_STATUSES = frozenset({500, 502, 504})


# -- clients -------------------------------------------------------------------------------


def _scaled(cls: TrafficClass, scale: float) -> TrafficClass:
    if scale == 1.0:
        return cls
    stages = tuple(
        dataclasses.replace(
            st,
            rate=None if st.rate is None else st.rate * scale,
            target=None if st.target is None else st.target * scale,
        )
        for st in cls.stages
    )
    spikes = tuple(dataclasses.replace(sp, rate=sp.rate * scale) for sp in cls.spikes)
    return dataclasses.replace(cls, stages=stages, spikes=spikes)


def _send_times(cls: TrafficClass, duration_s: float, seed: int) -> Iterator[float]:
    """The class's send times: the scenario's arrivals, sessions expanded into requests."""
    starts = arrivals(cls, seed=seed, duration_s=duration_s)
    session = cls.session
    if session is None:
        yield from starts
        return
    rng = random.Random(derive_seed(seed, "sessions"))
    pending: list[float] = []
    for t in starts:
        while pending and pending[0] <= t:
            yield heapq.heappop(pending)
        yield t
        at = t
        for _ in range(rng.randint(session.min_requests, session.max_requests) - 1):
            at += rng.expovariate(1.0 / session.think_time_s) if session.think_time_s else 0.0
            if at < duration_s:
                heapq.heappush(pending, at)
    while pending:
        yield heapq.heappop(pending)


def _route(topology: Topology, cls: TrafficClass, names: Sequence[str]) -> str:
    for name in names:
        ref = topology.routes.get(name)
        if ref is not None:
            return ref
    tried = ", ".join(repr(n) for n in names)
    raise ScenarioError(
        "routes",
        names[0],
        f"a [routes] entry of the topology for {tried}",
        problem=f"has no endpoint for class {cls.name!r}",
    )


def _retry(cls: TrafficClass) -> tuple[PolicySpec | None, frozenset[str]]:
    spec = cls.retry
    if spec.max_attempts <= 1:
        return None, frozenset()
    on: set[str] = set()
    if spec.on_timeout:
        on.add("timeout")
    if spec.on_error or spec.on_status & _ERROR_STATUSES:
        on.add("error")
    if spec.on_status & _SHED_STATUSES:
        on.add("rejected")
    if not on:
        return None, frozenset()
    backoff = spec.mode == "backoff"
    params = {
        "attempts": spec.attempts,
        "base_s": spec.base_s if backoff else 0.0,
        "cap_s": spec.cap_s if backoff else 0.0,
        "multiplier": 2.0,
        "jitter": "full" if backoff else "none",
        "respect_retry_after": False,  # the load generator does not read Retry-After
    }
    return PolicySpec("retry", params), frozenset(on)


def sim_clients(
    scenario: Scenario, topology: Topology, scale: float = 1.0
) -> tuple[tuple[Client, ...], dict[str, tuple[str, ...]]]:
    """The simulator's clients for ``scenario``'s traffic classes (rates times ``scale``),
    and per class the names of its endpoints in the order of the client's mix (what the
    results document calls them: the request names, as ``brownout load`` does)."""
    v.positive("sim_clients", "scale", scale)
    clients = []
    names: dict[str, tuple[str, ...]] = {}
    duration = scenario.duration_s
    for raw in scenario.classes:
        cls = _scaled(raw, scale)
        retry, retry_on = _retry(cls)
        if cls.requests:
            mix = tuple(
                (_route(topology, cls, (r.name, r.path, cls.name)), r.weight) for r in cls.requests
            )
            names[cls.name] = tuple(r.name for r in cls.requests)
        else:
            mix = ((_route(topology, cls, (cls.name,)), 1.0),)
            names[cls.name] = (cls.name,)
        extra: dict[str, Any] = {"retry": retry, "retry_on": retry_on} if retry else {}
        clients.append(
            Client(
                name=cls.name,
                mix=mix,
                timeout_s=cls.timeout_s,
                arrivals=partial(_send_times, cls, duration),
                **extra,
            )
        )
    return tuple(clients), names


# -- faults --------------------------------------------------------------------------------


def sim_faults(scenario: Scenario, topology: Topology) -> tuple[Fault, ...]:
    """The simulator's faults for ``scenario``'s fault timeline (see the module doc)."""
    out = []
    stations = {st.name for st in topology.stations}
    for i, spec in enumerate(scenario.faults):
        where = f"faults[{i}]"
        if spec.target not in stations:
            raise ScenarioError(
                f"{where}.target",
                spec.target,
                "a station of the topology (" + ", ".join(sorted(stations)) + ")",
            )
        if spec.kind not in SIM_FAULT_KINDS:
            raise ScenarioError(
                f"{where}.kind",
                spec.kind,
                "a kind the simulator models: " + ", ".join(SIM_FAULT_KINDS),
            )
        p = spec.params
        probability = float(p.get("probability", 1.0))
        kw: dict[str, Any] = {}
        if spec.kind in ("latency", "http_delay"):
            if probability < 1.0:
                raise ScenarioError(
                    f"{where}.probability",
                    probability,
                    "1 for a delay in the simulator (it delays every visit)",
                )
            if spec.kind == "latency":
                kw["added_s"] = float(p["latency_s"])
            else:  # a ramp's mean delay
                delay = float(p["delay_s"])
                kw["added_s"] = (delay + float(p.get("ramp_to_s", delay))) / 2
        elif spec.kind == "timeout" and float(p.get("timeout_s", 0.0)) == 0.0:
            if probability < 1.0:
                raise ScenarioError(
                    f"{where}.probability", probability, "1 for a black hole in the simulator"
                )
            kw["added_s"] = math.inf
        else:
            kw["error_rate"] = probability
            if probability >= 1.0:  # the proxy answers in place of the station: no work
                kw["latency_factor"] = 0.0
            if spec.kind in ("timeout", "reset_peer"):  # the failure comes after the delay
                kw["added_s"] = float(p.get("timeout_s", 0.0))
            if spec.kind == "http_abort" and int(p.get("status", 503)) in _SHED_STATUSES:
                kw["answer"] = "rejected"
        out.append(Fault(station=spec.target, at_s=spec.at_s, duration_s=spec.duration_s, **kw))
    return tuple(out)


def fault_records(scenario: Scenario) -> list[dict[str, Any]]:
    """The results document's ``faults``: each planned fault, applied on time."""
    records = []
    for i, spec in enumerate(scenario.faults):
        record = spec.record(i)
        record["started_s"], record["ended_s"] = spec.at_s, spec.end_s
        records.append(record)
    return records


# -- the results document ------------------------------------------------------------------


def _recorder_outcomes() -> tuple[int, ...]:
    from ..results import ERROR, OK, SHED, TIMEOUT

    table = [ERROR] * 5
    table[SIM_OK] = OK
    table[SIM_ERROR] = ERROR
    table[SIM_TIMEOUT] = TIMEOUT
    table[SIM_REJECTED] = SHED
    table[SIM_REFUSED] = ERROR  # a client-side policy refused: the caller sees an error
    return tuple(table)


def results_document(
    sim: Simulation,
    *,
    names: Mapping[str, Sequence[str]] | None = None,
    scenario: Mapping[str, Any] | None = None,
    faults: Sequence[Mapping[str, Any]] = (),
    thresholds: Sequence[Any] = (),
) -> dict[str, Any]:
    """The results document (``kind: "sim"``) of a traced simulation that has run.

    Built by the :class:`~brownout.results.RunRecorder` that ``brownout load`` uses, from
    every client request (its end, response time from its first attempt, outcome) and
    attempt (its duration, retry or not), interval by interval, so the figures mean the same
    as a measured run's: an outcome ``rejected`` (a 503 shed) is ``shed``, a refusal by a
    client-side policy is an ``error``; ``send_lag`` is 0. ``names`` gives per class the
    endpoint names of its mix (default: ``station.endpoint``); times count from the
    warm-up's end."""
    from ..results import RunRecorder

    engine = sim._engine
    if not sim.traced or not engine.ticks:
        raise ValueError("results_document needs a Simulation(trace=True) that has run")
    outcome_of = _recorder_outcomes()
    clip = engine.clip
    rec = RunRecorder(interval_s=sim.interval_s, kind="sim")
    ids: list[list[int]] = []
    for ci, (client, cls) in enumerate(zip(sim.clients, engine.classes, strict=True)):
        rec.add_class(client.name, client.timeout_s or 3600.0)
        labels = (names or {}).get(client.name) or [
            c.target.name for c in cls.calls
        ]  # station.endpoint
        ids.append([rec.endpoint(ci, label) for label in labels])
    # Cursors into each class's request trace and each client call's attempt trace.
    req_at = [0] * len(engine.classes)
    att_at = [[0] * len(cls.calls) for cls in engine.classes]
    previous = [0] * len(engine.classes)
    for t, counts, _stations, offered in engine.ticks:
        if clip and t <= clip:
            previous = [0] * len(engine.classes)  # the counters restart at the warm-up end
            continue
        for ci, cls in enumerate(engine.classes):
            trace = cls.trace
            assert trace is not None
            i, n = req_at[ci], len(trace)
            eids = ids[ci]
            direct = cls.direct is not None
            while i < n and trace[i] <= t:
                end, latency, outcome, slot = trace[i], trace[i + 1], trace[i + 2], trace[i + 3]
                ei = eids[int(slot)]
                us = round(latency * 1e6)
                rec.request(ci, ei, outcome_of[int(outcome)], us, end - latency - clip)
                if direct:  # one attempt per request
                    rec.attempt(ci, ei, us, 0, False)
                i += 4
            req_at[ci] = i
            if not direct:
                for k, call in enumerate(cls.calls):
                    at = call.trace
                    assert at is not None
                    j, m = att_at[ci][k], len(at)
                    while j < m and at[j] <= t:
                        rec.attempt(
                            ci, eids[int(at[j + 3])], round(at[j + 1] * 1e6), 0, bool(at[j + 2])
                        )
                        j += 4
                    att_at[ci][k] = j
            rec.offered(ci, offered[ci] - previous[ci])
        previous = list(offered)
        rec.flush(t - clip, in_flight=counts[9])
    doc = rec.finish(
        duration_s=engine.end - clip,
        scenario=scenario,
        faults=faults,
        thresholds=thresholds,
    )
    return doc


def simulate_scenario(
    scenario: Scenario,
    topology: Topology,
    *,
    seed: int | None = None,
    duration_s: float | None = None,
    scale: float = 1.0,
    replications: int = 1,
) -> dict[str, Any]:
    """Run ``scenario`` against ``topology`` and return its results document
    (``kind: "sim"``), deterministic for a seed (default: the scenario's).

    The document is the first run's (seed ``seed``); with ``replications`` = n > 1, n runs
    with seeds ``seed .. seed+n-1`` give ``doc["sim"]["replications"]``: the mean and 95%
    confidence interval of each figure of :meth:`SimResult.metrics`. ``doc["sim"]`` also
    holds the seed, the rate ``scale`` and per station its utilization, mean queue length
    and wait, throughput and what it shed, expired or dropped. The scenario's thresholds are
    evaluated as ``brownout load`` evaluates them."""
    from ..results import evaluate_all, parse_threshold
    from ._sim_result import Replications

    owner = "simulate_scenario"
    v.int_at_least(owner, "replications", replications, 1)
    if seed is None:
        seed = scenario.seed
    if duration_s is None:
        duration_s = scenario.duration_s
    v.positive(owner, "duration_s", duration_s)
    if duration_s != scenario.duration_s:
        scenario = dataclasses.replace(scenario, duration_s=duration_s)
    clients, names = sim_clients(scenario, topology, scale)
    faults = sim_faults(scenario, topology)

    def one(run_seed: int, trace: bool) -> tuple[Simulation, Any]:
        sim = Simulation(
            topology,
            clients,
            seed=run_seed,
            interval_s=scenario.interval_s,
            faults=faults,
            trace=trace,
        )
        return sim, sim.run(duration_s)

    sim, result = one(seed, True)
    thresholds = [
        parse_threshold(t.expr, class_name=t.class_name, endpoint=t.endpoint)
        for t in scenario.all_thresholds()
    ]
    doc = results_document(sim, names=names, faults=fault_records(scenario))
    doc["scenario"] = {"name": scenario.name, "spec": scenario.to_dict()}
    if thresholds:
        evaluate_all(thresholds, doc)
    section: dict[str, Any] = {
        "seed": seed,
        "scale": scale,
        "stations": {
            name: {
                "servers": st.servers,
                "utilization": st.utilization,
                "mean_queue_length": st.mean_queue_length,
                "mean_wait_ms": st.mean_wait_s * 1e3,
                "throughput_rps": st.throughput_rps,
                "rejected": st.rejected,
                "expired": st.expired,
                "dropped": st.dropped,
            }
            for name, st in result.stations.items()
        },
    }
    if replications > 1:
        runs = [result] + [one(seed + i, False)[1] for i in range(1, replications)]
        reps = Replications.of(runs)
        section["replications"] = {
            "n": replications,
            "seeds": [seed, seed + replications - 1],
            "estimates": {
                name: {"mean": e.mean, "low": e.low, "high": e.high, "half_width": e.half_width}
                for name, e in sorted(reps.estimates.items())
            },
        }
    doc["sim"] = section
    return doc
