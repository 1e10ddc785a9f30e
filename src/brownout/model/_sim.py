"""The discrete-event simulator: a topology, its clients and the real guard policies, in
virtual time.

``simulate(topology, clients, duration_s, seed)`` runs one model and returns a
:class:`~brownout.model._sim_result.SimResult`; ``replicate(..., n=10)`` runs independent
replications and gives 95% confidence intervals; :class:`Simulation` is the same in steps
(build, look at the policies, run).

Clients are open-model: each :class:`Client` sends requests at the times of its arrival
process (Poisson or evenly spaced, at a constant rate or piecewise-constant ``stages``;
or any iterable of times, such as ``brownout.scenario.arrivals``) whatever happens to the
earlier ones. Each request is a call to an endpoint with the client's per-attempt timeout
and retry policy. Inside the system, a visit holds a server of its station for all its
steps, calls included (see :mod:`brownout.model._topology`).

The guard policies are the real objects of ``brownout.guard``, built from the topology's
:class:`PolicySpec` s on the simulation's :class:`VirtualClock` and driven through their
sans-IO entry points, so what is simulated is what is deployed:

- ``Retry``: ``plan(attempt, now, previous, failure)`` decides each retry (backoff with
  its jitter, attempts, ``Retry-After``, and its ``RetryBudget``, which is also told of
  every request, success and failure as ``Retry`` itself does);
- ``CircuitBreaker``: its ``machine`` (``try_acquire(now)`` / ``record(permit, now,
  duration, failed)``); a timeout, an error and a shed (503) count as failures, as the
  breaker's ``failure_on`` / ``ignore_on`` / ``failure_if`` classify ``DeadlineExceeded``
  and an HTTP 500/503 error;
- ``AdaptiveThrottle``: ``allow(now)`` / ``record(accepted, now)``, outcomes classified by
  its own ``is_rejection`` (a 503 is a rejection; a timeout only when ``rejected_on``
  includes ``TimeoutError``);
- ``RateLimit``: ``check()``; ``ConcurrencyLimit``: ``try_acquire()`` and
  ``Permit.release(dropped=...)`` (it never queues in the simulator: its wait queue needs
  asyncio; put the queue on a station instead); ``Bulkhead``: ``__enter__`` / ``__exit__``
  with ``max_queue=0`` only (a waiting bulkhead blocks a thread; a station with
  ``max_queue`` is the queued form);
- ``Cache``: its store (LRU) and TTL decide hits; concurrent misses of a key share one
  load. Stale-while-revalidate, early refresh and negative caching are not simulated.

Determinism: every random stream (arrivals per class, service times and errors per
station, keys per cached call, jitter per policy) is a ``random.Random`` seeded from the
run's ``seed`` and the stream's name, so a run is repeatable and adding a class does not
change the draws of another.
"""

from __future__ import annotations

import gc
import itertools
import math
import random
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .. import _validate as v
from ..errors import InvalidConfig
from ._sim_engine import (
    ERROR,
    OK,
    OUTCOME_NAMES,
    REFUSED,
    REJECTED,
    TIMEOUT,
    VirtualClock,
    _CallRT,
    _ClassRT,
    _EndpointRT,
    _Engine,
    _StationRT,
)
from ._sim_result import (
    CallStats,
    ClassStats,
    LatencySummary,
    Replications,
    SimResult,
    StationStats,
    TimelineRow,
)
from ._topology import CALL_OUTCOMES, Call, PolicySpec, Topology, Work

__all__ = ["ARRIVAL_PROCESSES", "Client", "Fault", "Simulation", "replicate", "simulate"]

ARRIVAL_PROCESSES = ("poisson", "constant")
FAULT_ANSWERS = ("error", "rejected")
_CLIENT_POLICY_KINDS = (
    "circuit_breaker",
    "adaptive_throttle",
    "rate_limit",
    "bulkhead",
    "concurrency_limit",
)


def derive_seed(seed: int, stream: str) -> int:
    """The seed of one named random stream of a run (stable across Python processes)."""
    return random.Random(f"{seed}/{stream}").getrandbits(63)


@dataclass(frozen=True, slots=True, kw_only=True)
class Client:
    """A traffic class: who sends, when, to which endpoint, how patiently.

    - Arrivals: ``rate`` requests per second, or ``stages`` of ``(duration_s, rate)``
      one after the other (no arrivals after the last); ``arrival="poisson"`` (exponential
      gaps) or ``"constant"`` (request ``i`` at ``Lambda^-1(i + 1/2)``, evenly spaced).
      ``arrivals``, when given, replaces both: a function of a seed returning the arrival
      times (seconds, non-decreasing), for instance ``lambda seed:
      brownout.scenario.arrivals(cls, seed=seed, duration_s=d)``.
    - Target: ``target`` (``"station.endpoint"``), else the topology's route for
      ``name``; or ``mix``, ``(endpoint, weight)`` pairs drawn per request.
    - ``timeout_s``: each attempt's client timeout (None: none). ``retry``: a ``retry``
      :class:`PolicySpec` (or None); attempts that end in an outcome of ``retry_on`` are
      retried. ``policies``: client-side policy specs (circuit breaker, adaptive throttle,
      rate limit, bulkhead, concurrency limit), built once for this client.
    """

    name: str
    rate: float = 0.0
    stages: tuple[tuple[float, float], ...] = ()
    arrival: str = "poisson"
    target: str | None = None
    mix: tuple[tuple[str, float], ...] = ()
    timeout_s: float | None = None
    retry: PolicySpec | None = None
    retry_on: frozenset[str] = frozenset(CALL_OUTCOMES)
    policies: tuple[PolicySpec, ...] = ()
    arrivals: Callable[[int], Iterable[float]] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        owner = "Client"
        if not isinstance(self.name, str) or not self.name:
            raise InvalidConfig(owner, "name", self.name, "a non-empty string")
        v.non_negative(owner, "rate", self.rate)
        if not isinstance(self.stages, tuple | list):
            raise InvalidConfig(owner, "stages", self.stages, "a tuple of (duration_s, rate)")
        stages = []
        for i, stage in enumerate(self.stages):
            if not isinstance(stage, tuple | list) or len(stage) != 2:
                raise InvalidConfig(owner, f"stages[{i}]", stage, "a pair (duration_s, rate)")
            stages.append(
                (
                    v.positive(owner, f"stages[{i}][0]", stage[0], finite=False),
                    v.non_negative(owner, f"stages[{i}][1]", stage[1]),
                )
            )
        object.__setattr__(self, "stages", tuple(stages))
        if stages and self.rate:
            raise InvalidConfig(owner, "rate", self.rate, "0 when stages are given")
        v.one_of(owner, "arrival", self.arrival, ARRIVAL_PROCESSES)
        if self.target is not None and self.mix:
            raise InvalidConfig(owner, "mix", self.mix, "empty when target is given")
        mix = []
        for i, item in enumerate(self.mix):
            if not isinstance(item, tuple | list) or len(item) != 2 or not isinstance(item[0], str):
                raise InvalidConfig(owner, f"mix[{i}]", item, "a pair (endpoint, weight)")
            mix.append((item[0], v.positive(owner, f"mix[{i}][1]", item[1])))
        object.__setattr__(self, "mix", tuple(mix))
        if self.timeout_s is not None:
            object.__setattr__(self, "timeout_s", v.positive(owner, "timeout_s", self.timeout_s))
        if self.retry is not None and (
            not isinstance(self.retry, PolicySpec) or self.retry.kind != "retry"
        ):
            raise InvalidConfig(owner, "retry", self.retry, "a PolicySpec of kind 'retry' or None")
        raw: object = self.retry_on
        outcomes = frozenset(self.retry_on) if not isinstance(raw, str) else frozenset({raw})
        if not outcomes <= frozenset(CALL_OUTCOMES) or isinstance(raw, str):
            raise InvalidConfig(
                owner, "retry_on", self.retry_on, "a set of 'timeout', 'error', 'rejected'"
            )
        object.__setattr__(self, "retry_on", outcomes)
        kinds = []
        for spec in self.policies:
            if not isinstance(spec, PolicySpec) or spec.kind not in _CLIENT_POLICY_KINDS:
                raise InvalidConfig(
                    owner,
                    "policies",
                    self.policies,
                    "PolicySpecs of kinds " + ", ".join(_CLIENT_POLICY_KINDS),
                )
            if spec.kind in kinds:
                raise InvalidConfig(owner, "policies", self.policies, f"at most one {spec.kind}")
            kinds.append(spec.kind)
        object.__setattr__(self, "policies", tuple(self.policies))
        if self.arrivals is not None and not callable(self.arrivals):
            raise InvalidConfig(owner, "arrivals", self.arrivals, "a function of a seed, or None")


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """From ``at_s`` for ``duration_s`` seconds, station ``station`` works
    ``latency_factor`` times slower and ``added_s`` seconds longer (every work step takes
    ``factor * s + added_s``; a factor of 0 skips the work, as when a proxy answers for it), fails visits with probability ``error_rate`` (when above its
    endpoints' own; a failed visit answers ``answer``: ``"error"``, a 500, or
    ``"rejected"``, a 503), and runs ``servers`` servers when given (a capacity drop:
    running visits finish, no new ones start beyond the new count). ``added_s`` may be
    ``math.inf``: the station never answers (a black hole; callers time out)."""

    station: str
    at_s: float
    duration_s: float
    latency_factor: float = 1.0
    error_rate: float = 0.0
    servers: int | None = None
    added_s: float = 0.0
    answer: str = "error"

    def __post_init__(self) -> None:
        owner = "Fault"
        v.non_negative(owner, "at_s", self.at_s)
        v.positive(owner, "duration_s", self.duration_s, finite=False)
        v.non_negative(owner, "latency_factor", self.latency_factor)
        v.ratio(owner, "error_rate", self.error_rate)
        if self.servers is not None:
            v.int_at_least(owner, "servers", self.servers, 1)
        v.non_negative(owner, "added_s", self.added_s, finite=False)
        v.one_of(owner, "answer", self.answer, FAULT_ANSWERS)


def _arrival_times(client: Client, rng: random.Random) -> Iterator[float]:
    """``t_i = Lambda^-1(S_i)``: ``S_i`` a unit-rate Poisson process (sums of exponential
    draws) or ``i + 1/2``; ``Lambda`` the integral of the piecewise-constant rate."""
    poisson = client.arrival == "poisson"
    rand, log = rng.random, math.log
    if not client.stages and poisson and client.rate > 0:  # the common case, leaner
        mean_gap = 1.0 / client.rate
        t = 0.0
        while True:
            t += -log(1.0 - rand()) * mean_gap
            yield t
    stages = client.stages or ((math.inf, client.rate),)
    s = -log(1.0 - rand()) if poisson else 0.5
    start, cum = 0.0, 0.0
    for duration, rate in stages:
        mass = duration * rate if rate > 0 else 0.0
        if rate > 0:
            inv = 1.0 / rate
            while s < cum + mass:
                yield start + (s - cum) * inv
                s += -log(1.0 - rand()) if poisson else 1.0
        cum += mass
        start += duration


def _zipf_sampler(n: int, s: float, rng: random.Random) -> Callable[[], str]:
    """Keys ``k0..k{n-1}``: uniform when ``s == 0``, else rank ``r`` with weight ``r**-s``."""
    rand = rng.random
    if s == 0:

        def uniform() -> str:
            return f"k{int(rand() * n)}"

        return uniform
    from bisect import bisect_right
    from itertools import accumulate

    weights = [r**-s for r in range(1, n + 1)]
    total = math.fsum(weights)
    cdf = [x / total for x in accumulate(weights)]

    def zipf() -> str:
        return f"k{min(bisect_right(cdf, rand()), n - 1)}"

    return zipf


def _breaker_counts(breaker: Any, exc: BaseException) -> bool | None:
    """Whether ``breaker`` counts ``exc`` as a failure (None: not at all), from its public
    configuration: ``ignore_on``, then ``failure_on`` and ``failure_if``."""
    if breaker.ignore_on and isinstance(exc, breaker.ignore_on):
        return None
    if not isinstance(exc, breaker.failure_on):
        return False
    return breaker.failure_if is None or bool(breaker.failure_if(exc))


class Simulation:
    """One run of ``topology`` driven by ``clients``, ready to :meth:`run`.

    ``seed`` seeds every random stream; ``interval_s`` is the timeline's interval;
    statistics count from ``warmup_s`` on; ``faults`` change stations for a while;
    ``record_events=True`` keeps every event the guard policies emit (breaker transitions,
    rejections...) in ``SimResult.events``; ``trace=True`` keeps every client request and
    attempt (end time, duration, outcome) for :func:`results_document`. ``policies`` holds the real policy objects by
    name (topology policies, and ``"<client>.<kind>"`` / ``"<client>.retry"`` for client
    ones) and ``clock`` the virtual clock they read.
    """

    def __init__(
        self,
        topology: Topology,
        clients: Sequence[Client],
        *,
        seed: int = 0,
        interval_s: float = 1.0,
        warmup_s: float = 0.0,
        faults: Sequence[Fault] = (),
        record_events: bool = False,
        trace: bool = False,
    ) -> None:
        owner = "Simulation"
        if not isinstance(topology, Topology):
            raise InvalidConfig(owner, "topology", topology, "a Topology")
        if isinstance(clients, Client):
            clients = (clients,)
        if not clients or not all(isinstance(c, Client) for c in clients):
            raise InvalidConfig(owner, "clients", clients, "a non-empty sequence of Client")
        names = [c.name for c in clients]
        if len(set(names)) != len(names):
            raise InvalidConfig(owner, "clients", names, "clients with distinct names")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InvalidConfig(owner, "seed", seed, "an integer")
        self.seed = seed
        self.interval_s = v.positive(owner, "interval_s", interval_s)
        self.warmup_s = v.non_negative(owner, "warmup_s", warmup_s)
        self.topology = topology
        self.clients = tuple(clients)
        self.faults = tuple(faults)
        for f in self.faults:
            if not isinstance(f, Fault):
                raise InvalidConfig(owner, "faults", faults, "a sequence of Fault")
            topology.station(f.station)
        self._check_fault_overlap()
        self._ran = False
        self.traced = bool(trace)
        self._events: list[Any] = []
        engine = self._engine = _Engine()
        engine.interval_s = self.interval_s
        self.clock = VirtualClock(engine)
        self.policies: Mapping[str, Any] = MappingProxyType(self._build_policies(record_events))
        self._stations: dict[str, _StationRT] = {}
        self._endpoints: dict[tuple[str, str], _EndpointRT] = {}
        self._compile()

    # -- building ------------------------------------------------------------------------

    def _check_fault_overlap(self) -> None:
        by_station: dict[str, list[Fault]] = {}
        for f in self.faults:
            by_station.setdefault(f.station, []).append(f)
        for name, faults in by_station.items():
            faults.sort(key=lambda f: f.at_s)
            for a, b in itertools.pairwise(faults):
                if b.at_s < a.at_s + a.duration_s:
                    raise InvalidConfig(
                        "Simulation",
                        "faults",
                        (a, b),
                        f"faults on station {name!r} that do not overlap",
                    )

    def _build_policies(self, record_events: bool) -> dict[str, Any]:
        built: dict[str, Any] = {}
        specs = dict(self.topology.policies)
        budgets: dict[str, Any] = {}
        for name, spec in specs.items():
            if spec.kind == "retry_budget":
                budgets[name] = built[name] = spec.build(
                    clock=self.clock, seed=derive_seed(self.seed, f"policy/{name}")
                )
        for name, spec in specs.items():
            if spec.kind != "retry_budget":
                built[name] = spec.build(
                    clock=self.clock, seed=derive_seed(self.seed, f"policy/{name}"), budgets=budgets
                )
        for client in self.clients:
            extra = list(client.policies)
            if client.retry is not None:
                extra.append(client.retry)
            for spec in extra:
                key = f"{client.name}.{spec.kind}"
                built[key] = spec.build(
                    clock=self.clock, seed=derive_seed(self.seed, f"policy/{key}"), budgets=budgets
                )
        if record_events:
            for obj in built.values():
                events = getattr(obj, "events", None)
                if events is not None:
                    events.subscribe(self._events.append)
        return built

    def _compile(self) -> None:
        engine = self._engine
        topo = self.topology
        for spec in topo.stations:
            rng = random.Random(derive_seed(self.seed, f"station/{spec.name}"))
            st = _StationRT(spec, rng.random)
            self._stations[spec.name] = st
            engine.stations.append(st)
            for ep_name, ep in spec.endpoints.items():
                self._endpoints[(spec.name, ep_name)] = _EndpointRT(
                    f"{spec.name}.{ep_name}", st, ep.error_rate
                )
        for spec in topo.stations:
            rng = random.Random(derive_seed(self.seed, f"service/{spec.name}"))
            for ep_name, ep in spec.endpoints.items():
                rt = self._endpoints[(spec.name, ep_name)]
                for i, step in enumerate(ep.steps):
                    if isinstance(step, Work):
                        rt.steps.append(step.service.sampler(rng))
                    else:
                        rt.steps.append(self._compile_call(f"{rt.name}[{i}]", step))
        for rt in self._endpoints.values():
            rt.seal()
        for index, client in enumerate(self.clients):
            targets: list[tuple[str, float]]
            if client.mix:
                targets = list(client.mix)
            else:
                ref = client.target or topo.routes.get(client.name)
                if ref is None:
                    raise InvalidConfig(
                        "Client",
                        "target",
                        None,
                        f"an endpoint, or a route for {client.name!r} in the topology",
                    )
                targets = [(ref, 1.0)]
            calls = []
            for slot, (ref, _) in enumerate(targets):
                st_spec, ep_name, _ep = topo.endpoint(ref, owner="Client", arg="target")
                call = _CallRT(
                    f"client {client.name} -> {st_spec.name}.{ep_name}",
                    self._endpoints[(st_spec.name, ep_name)],
                    client.timeout_s,
                )
                self._attach_retry(call, self.policies.get(f"{client.name}.retry"), client.retry_on)
                for policy_spec in client.policies:
                    kind = policy_spec.kind
                    self._attach(call, kind, self.policies[f"{client.name}.{kind}"])
                call.slot = slot
                if self.traced:
                    call.trace = array("d")
                calls.append(call)
                engine.calls.append(call)
            seed = derive_seed(self.seed, f"arrivals/{client.name}")
            if client.arrivals is not None:
                times = iter(client.arrivals(seed))
            else:
                times = _arrival_times(client, random.Random(seed))
            pick = random.Random(derive_seed(self.seed, f"mix/{client.name}")).random
            cls = _ClassRT(
                client.name, index, calls, [w for _, w in targets], times, client.timeout_s, pick
            )
            if self.traced:
                cls.trace = array("d")
            engine.classes.append(cls)

    def _compile_call(self, label: str, spec: Call) -> _CallRT:
        topo = self.topology
        st_spec, ep_name, _ = topo.endpoint(spec.target)
        target = self._endpoints[(st_spec.name, ep_name)]
        call = _CallRT(f"{label} -> {st_spec.name}.{ep_name}", target, spec.timeout_s)
        if spec.pool is not None:
            call.pool = self._stations[spec.pool]
        call.fail = spec.on_failure == "fail"
        if spec.retry is not None:
            self._attach_retry(call, self.policies[spec.retry], spec.retry_on)
        for name in spec.policies:
            self._attach(call, topo.policies[name].kind, self.policies[name])
        if spec.cache is not None:
            cache = self.policies[spec.cache]
            params = topo.policies[spec.cache].params
            keys = int(params.get("keys", 1000))
            zipf_s = float(params.get("zipf_s", 0.0))
            call.cache = cache.store
            call.ttl_s = float(cache.ttl_s)
            call.draw_key = _zipf_sampler(
                keys, zipf_s, random.Random(derive_seed(self.seed, f"keys/{label}"))
            )
        self._engine.calls.append(call)
        return call

    def _attach_retry(self, call: _CallRT, retry: Any, retry_on: frozenset[str]) -> None:
        if retry is None:
            return
        call.retry = retry
        call.budget = retry.budget
        call.retryable = (
            False,
            "error" in retry_on,
            "timeout" in retry_on,
            "rejected" in retry_on,
            False,
        )

    def _attach(self, call: _CallRT, kind: str, policy: Any) -> None:
        first = not call.guarded
        call.guarded = True
        call.breaker_only = first and kind == "circuit_breaker"
        if kind == "circuit_breaker":
            call.breaker = policy.machine
            call.breaker_failed = (
                False,
                *(_breaker_counts(policy, call.exc[o]) for o in (ERROR, TIMEOUT, REJECTED)),
                None,
            )
        elif kind == "adaptive_throttle":
            call.throttle = policy
            accepts: list[bool | None] = [True]
            for o in (ERROR, TIMEOUT, REJECTED):
                rejection = policy.is_rejection(call.exc[o])
                accepts.append(None if rejection is None else not rejection)
            call.throttle_accepts = (*accepts, None)
        elif kind == "rate_limit":
            call.ratelimit = policy
        elif kind == "bulkhead":
            call.bulkhead = policy
        elif kind == "concurrency_limit":
            call.limit = policy
        else:  # pragma: no cover - the topology checks the kinds
            raise InvalidConfig("Simulation", "policy kind", kind, "a call policy kind")

    # -- running -------------------------------------------------------------------------

    def run(self, duration_s: float) -> SimResult:
        """Run from time 0 to ``duration_s`` (seconds of virtual time) and report."""
        owner = "Simulation.run"
        duration_s = v.positive(owner, "duration_s", duration_s)
        if self._ran:
            raise InvalidConfig(owner, "self", self, "a Simulation that has not run yet")
        if self.warmup_s >= duration_s:
            raise InvalidConfig(owner, "duration_s", duration_s, f"> warmup_s ({self.warmup_s:g})")
        self._ran = True
        engine = self._engine
        engine.end = duration_s
        for cls in engine.classes:
            first = next(cls.times, None)
            if first is not None and first < duration_s:
                engine.at(max(first, 0.0), engine.client_arrival, cls)
        engine.at(min(self.interval_s, duration_s), engine.tick, None)
        if self.warmup_s > 0:
            engine.at(self.warmup_s, engine.reset_stats, None)
        for f in self.faults:
            st = self._stations[f.station]
            answer = ERROR if f.answer == "error" else REJECTED
            change = (st, f.latency_factor, f.error_rate, f.servers or -1, f.added_s, answer)
            engine.at(f.at_s, engine.set_fault, change)
            end = f.at_s + f.duration_s
            if end < duration_s:
                restore = (st, 1.0, 0.0, st.base_servers if f.servers else -1, 0.0, ERROR)
                engine.at(end, engine.set_fault, restore)
        # The run allocates a few objects per request, none in reference cycles; the cyclic
        # collector would only walk them (7% of the time on the three-tier benchmark), so it
        # pauses for the run and resumes after (collecting any cycle a policy made).
        collecting = gc.isenabled()
        gc.disable()
        try:
            engine.run(duration_s)
        finally:
            if collecting:
                gc.enable()
        return self._result(duration_s)

    # -- reporting -----------------------------------------------------------------------

    def _result(self, duration_s: float) -> SimResult:
        engine = self._engine
        end = duration_s
        window = duration_s - engine.clip if engine.clip else duration_s
        for cls in engine.classes:
            if cls.direct is not None:  # the fast path counts on the class only
                cls.calls[0].attempts = cls.offered
                cls.calls[0].outcomes = list(cls.done)
        classes: dict[str, ClassStats] = {}
        for cls in engine.classes:
            classes[cls.name] = self._class_stats(cls.name, [cls], window, end)
        overall = self._class_stats("overall", engine.classes, window, end)
        stations = {st.name: self._station_stats(st, window, end) for st in engine.stations}
        calls = tuple(
            CallStats(
                label=c.label,
                attempts=c.attempts,
                retries=c.retries,
                outcomes=MappingProxyType(dict(zip(OUTCOME_NAMES, c.outcomes, strict=True))),
                refused_by=MappingProxyType(dict(c.refused)),
                abandoned=MappingProxyType(dict(c.abandoned)),
                cache_hits=c.cache_hits,
                cache_misses=c.cache_misses,
                cache_joined=c.cache_joined,
            )
            for c in engine.calls
        )
        timeline = self._timeline()
        return SimResult(
            seed=self.seed,
            duration_s=duration_s,
            warmup_s=engine.clip,
            classes=MappingProxyType(classes),
            overall=overall,
            stations=MappingProxyType(stations),
            calls=calls,
            timeline=timeline,
            events=tuple(self._events),
        )

    @staticmethod
    def _station_stats(st: _StationRT, window: float, end: float) -> StationStats:
        waits = math.fsum(st.waits)
        waiting = len(st.queue)
        return StationStats(
            name=st.name,
            servers=None if st.unlimited else st.base_servers,
            window_s=window,
            arrivals=st.started + st.expired + st.dropped + waiting - st.q0 + st.rejected,
            served=st.started,
            completed=st.started + st.busy0 - st.busy,
            rejected=st.rejected,
            expired=st.expired,
            dropped=st.dropped,
            dropped_running=st.dropped_running,
            busy_area=st.sum_end + st.busy * end - st.sum_start,
            queue_area=waits + st.shed_q + math.fsum(end - v.enq for v in st.queue) - st.qcorr,
            queue_entries=len(st.waits) + st.expired + st.dropped + waiting,
            wait_sum_s=waits,
            busy_start=st.busy0,
            queued_start=st.q0,
            busy_end=st.busy,
            queued_end=waiting,
            waits_s=st.waits,
        )

    @staticmethod
    def _class_stats(name: str, group: Sequence[_ClassRT], window: float, end: float) -> ClassStats:

        offered = sum(c.offered for c in group)
        done = [sum(c.done[o] for c in group) for o in range(5)]
        attempts = sum(call.attempts for c in group for call in c.calls)
        retries = sum(call.retries for c in group for call in c.calls)
        if len(group) == 1:
            lat = group[0].lat
        else:
            lat = array("d")
            for c in group:
                lat.extend(c.lat)
        area = sum(c.sum_end + c.in_system * end - c.sum_start for c in group)
        return ClassStats(
            name=name,
            window_s=window,
            offered=offered,
            completed=sum(done),
            ok=done[OK],
            goodput=sum(c.goodput for c in group),
            errors=done[ERROR],
            timeouts=done[TIMEOUT],
            rejected=done[REJECTED],
            refused=done[REFUSED],
            attempts=attempts,
            retries=retries,
            in_flight_start=sum(c.in0 for c in group),
            in_flight_end=sum(c.in_system for c in group),
            area=area,
            latency=LatencySummary.of(lat),
            latencies_s=lat,
        )

    def _timeline(self) -> tuple[TimelineRow, ...]:
        rows = []
        previous: tuple[int, ...] = (0,) * 10
        names = [st.name for st in self._engine.stations]
        clip = self._engine.clip
        for t, counts, stations, _ in self._engine.ticks:
            if clip and t <= clip:
                previous = (0,) * 10  # the counters restart at the warm-up end
                continue
            d = [a - b for a, b in zip(counts, previous, strict=True)]
            rows.append(
                TimelineRow(
                    t_s=t,
                    offered=d[0],
                    ok=d[1],
                    goodput=d[2],
                    errors=d[3],
                    timeouts=d[4],
                    rejected=d[5],
                    refused=d[6],
                    attempts=d[7],
                    retries=d[8],
                    in_system=counts[9],
                    stations=MappingProxyType(dict(zip(names, stations, strict=True))),
                )
            )
            previous = counts
        return tuple(rows)


def simulate(
    topology: Topology,
    clients: Sequence[Client] | Client,
    duration_s: float,
    seed: int = 0,
    **kwargs: Any,
) -> SimResult:
    """Run ``topology`` with ``clients`` for ``duration_s`` seconds of virtual time.

    Keyword arguments go to :class:`Simulation` (``interval_s``, ``warmup_s``, ``faults``,
    ``record_events``). Deterministic: the same arguments give the same result."""
    if isinstance(clients, Client):
        clients = (clients,)
    return Simulation(topology, clients, seed=seed, **kwargs).run(duration_s)


def replicate(
    topology: Topology,
    clients: Sequence[Client] | Client,
    duration_s: float,
    n: int = 10,
    seed: int = 0,
    **kwargs: Any,
) -> Replications:
    """``n`` independent runs (seeds ``seed .. seed+n-1``) and the 95% confidence interval
    (Student t) of every figure of ``SimResult.metrics()``."""
    v.int_at_least("replicate", "n", n, 2)
    runs = [simulate(topology, clients, duration_s, seed + i, **kwargs) for i in range(n)]
    return Replications.of(runs)
