"""The real guard policies, driven by the simulator in virtual time.

Each test builds the policy from a ``PolicySpec`` (or from a configured policy object with
``PolicySpec.of``), runs a model, and checks both the simulated effect and the state of the
real object afterwards.
"""

from __future__ import annotations

import pytest

from brownout import AdaptiveThrottle, CircuitBreaker, Retry, RetryBudget
from brownout.errors import InvalidConfig
from brownout.events import CircuitStateChanged
from brownout.guard import Bulkhead, ConcurrencyLimit, RateLimit
from brownout.model import (
    Call,
    Client,
    Endpoint,
    Fault,
    PolicySpec,
    ServiceTime,
    Simulation,
    Station,
    Topology,
    Work,
    simulate,
)

det = ServiceTime.deterministic


def web_calling_dep(
    *,
    call: dict[str, object],
    policies: dict[str, PolicySpec],
    dep: Station | None = None,
) -> Topology:
    web = Station(
        name="web",
        servers=None,
        endpoints={
            "page": Endpoint(steps=(Work(det(0.001)), Call(target="dep", **call)))  # type: ignore[arg-type]
        },
    )
    dep = dep or Station.simple("dep", None, det(0.01))
    return Topology(stations=(web, dep), policies=policies)


def clients(rate: float = 100.0, **kwargs: object) -> Client:
    return Client(name="c", rate=rate, arrival="constant", target="web.page", **kwargs)  # type: ignore[arg-type]


def test_the_circuit_breaker_opens_probes_and_closes_in_virtual_time() -> None:
    breaker = PolicySpec(
        "circuit_breaker",
        {"minimum_calls": 20, "window_size": 20, "open_s": 2.0, "half_open_calls": 5},
    )
    topology = web_calling_dep(call={"policies": ("breaker",)}, policies={"breaker": breaker})
    outage = Fault(station="dep", at_s=10.0, duration_s=5.0, error_rate=1.0)
    sim = Simulation(topology, [clients()], faults=(outage,), record_events=True)
    result = sim.run(30.0)
    changes = [e for e in result.events if isinstance(e, CircuitStateChanged)]
    opened = [e.at for e in changes if e.new == "open"]
    closed = [e.at for e in changes if e.new == "closed"]
    # It trips within the first tenth of a second of the outage (10+ failures of 20) ...
    assert 10.0 < opened[0] < 10.2
    # ... re-opens after each failed half-open round during the outage, closes after it.
    assert all(10.0 < t < 15.1 for t in opened)
    assert len(opened) >= 2
    assert len(closed) == 1
    assert 15.0 < closed[0] < 17.5
    assert sim.policies["breaker"].state == "closed"
    call = result.call("dep")
    assert call.refused_by["circuit_open"] > 300
    # While open nothing reaches dep: its arrivals fall by the refusals.
    assert result.stations["dep"].arrivals == call.attempts - call.refused_by["circuit_open"]


def test_a_ratio_budget_caps_retries_at_its_share_of_requests() -> None:
    budget = PolicySpec("retry_budget", {"retry_ratio": 0.1, "min_per_s": 0.0, "window_s": 10.0})
    retry = PolicySpec("retry", {"attempts": 5, "base_s": 0.0, "budget": "budget"})
    dep = Station.simple("dep", None, det(0.01), error_rate=1.0)
    topology = web_calling_dep(
        call={"retry": "retry", "retry_on": frozenset({"error"})},
        policies={"budget": budget, "retry": retry},
        dep=dep,
    )
    result = simulate(topology, clients(), 60.0)
    call = result.call("dep")
    requests = call.attempts - call.retries
    assert call.retries <= 0.1 * requests * 1.02
    assert call.retries >= 0.09 * requests
    assert call.abandoned["budget"] > 0.8 * requests
    assert result.stations["dep"].arrivals == pytest.approx(1.1 * requests, rel=0.02)


def test_the_retry_policy_and_its_budget_can_come_from_application_objects() -> None:
    app_retry = Retry(attempts=3, base_s=0.0, budget=RetryBudget.token_bucket(10))
    spec = PolicySpec.of(app_retry)
    assert spec.kind == "retry"
    assert spec.params["attempts"] == 3
    assert spec.params["budget"] == PolicySpec.of(app_retry.budget)
    dep = Station.simple("dep", None, det(0.01), error_rate=1.0)
    topology = web_calling_dep(
        call={"retry": "retry", "retry_on": frozenset({"error"})},
        policies={"retry": spec},
        dep=dep,
    )
    result = simulate(topology, clients(), 10.0)
    # gRPC throttling: a retry only while tokens > 5 after its failure took one, and with
    # every attempt failing none come back: at most ceil(10 / 2) = 5 retries ever start.
    call = result.call("dep")
    assert 1 <= call.retries <= 5
    assert call.abandoned["budget"] >= 990


def test_adaptive_throttling_sends_about_k_times_what_the_backend_accepts() -> None:
    throttle = PolicySpec("adaptive_throttle", {"k": 2.0, "window_s": 10.0})
    dep = Station.simple("dep", 1, det(0.02), max_queue=5)  # accepts 50/s, sheds the rest
    topology = web_calling_dep(
        call={"policies": ("throttle",)}, policies={"throttle": throttle}, dep=dep
    )
    sim = Simulation(topology, [clients(rate=500.0)], warmup_s=20.0)
    result = sim.run(60.0)
    call = result.call("dep")
    assert call.refused_by["throttled"] > 0
    dep_stats = result.stations["dep"]
    sent, accepted = dep_stats.arrivals, dep_stats.served
    assert accepted == pytest.approx(50 * 40, rel=0.05)
    assert sent == pytest.approx(2 * accepted, rel=0.1)
    assert isinstance(sim.policies["throttle"], AdaptiveThrottle)


def test_a_bulkhead_bounds_the_calls_in_flight() -> None:
    bulkhead = PolicySpec.of(Bulkhead(3))
    dep = Station.simple("dep", None, det(0.05))
    topology = web_calling_dep(
        call={"policies": ("bulkhead",)}, policies={"bulkhead": bulkhead}, dep=dep
    )
    sim = Simulation(topology, [clients(rate=100.0)])
    result = sim.run(10.0)
    assert max(r.stations["dep"][0] for r in result.timeline) <= 3
    assert result.stations["dep"].mean_busy <= 3.0
    # 100/s of 50 ms calls need 5 slots; 3 serve 60/s
    assert result.call("dep").refused_by["bulkhead_full"] == pytest.approx(400, rel=0.05)
    assert sim.policies["bulkhead"].active == result.stations["dep"].busy_end
    with pytest.raises(InvalidConfig, match="max_queue"):
        Topology(
            stations=(dep,),
            policies={"b": PolicySpec("bulkhead", {"max_concurrent": 1, "max_queue": 5})},
        )


def test_a_concurrency_limit_admits_up_to_its_limit_and_learns() -> None:
    fixed = PolicySpec("concurrency_limit", {"algorithm": "fixed", "initial_limit": 3})
    dep = Station.simple("dep", None, det(0.05))
    topology = web_calling_dep(call={"policies": ("limit",)}, policies={"limit": fixed}, dep=dep)
    result = simulate(topology, clients(rate=100.0), 10.0)
    assert max(r.stations["dep"][0] for r in result.timeline) <= 3
    assert result.call("dep").refused_by["concurrency_limited"] == pytest.approx(400, rel=0.05)
    # An adaptive one moves its limit from what it observes (AIMD backs off on drops).
    aimd = PolicySpec("concurrency_limit", {"algorithm": "aimd", "initial_limit": 50})
    slow = Station.simple("dep", 2, det(0.05), queue_timeout_s=0.05)
    topology = web_calling_dep(call={"policies": ("limit",)}, policies={"limit": aimd}, dep=slow)
    sim = Simulation(topology, [clients(rate=100.0)])
    sim.run(20.0)
    limit = sim.policies["limit"]
    assert isinstance(limit, ConcurrencyLimit)
    assert limit.limit < 50


def test_a_rate_limit_admits_its_rate() -> None:
    spec = PolicySpec("rate_limit", {"rate": "50/s", "burst": 5})
    topology = web_calling_dep(call={"policies": ("limit",)}, policies={"limit": spec})
    sim = Simulation(topology, [clients(rate=200.0)])
    result = sim.run(20.0)
    assert result.stations["dep"].arrivals == pytest.approx(5 + 50 * 20, abs=2)
    assert isinstance(sim.policies["limit"], RateLimit)


def test_a_cache_answers_hits_and_loads_each_missing_key_once() -> None:
    cache = PolicySpec("cache", {"ttl_s": 30.0, "keys": 100})
    dep = Station.simple("dep", None, det(0.5))
    topology = web_calling_dep(call={"cache": "cache"}, policies={"cache": cache}, dep=dep)
    result = simulate(topology, clients(rate=200.0), 20.0, seed=4)
    call = result.call("dep")
    # 100 keys, each loaded once (concurrent misses of a key wait for one load), no expiry
    assert result.stations["dep"].arrivals == 100
    assert call.cache_misses == 100
    assert call.cache_joined > 0
    assert call.cache_hits + call.cache_joined + call.cache_misses == 4000
    assert result.overall.ok == 4000 - result.overall.in_flight_end


def test_an_expired_cache_goes_back_to_the_dependency() -> None:
    cache = PolicySpec("cache", {"ttl_s": 2.0, "keys": 10})
    topology = web_calling_dep(call={"cache": "cache"}, policies={"cache": cache})
    result = simulate(topology, clients(rate=100.0), 20.0, seed=1)
    # each of 10 keys is reloaded about every 2 s
    assert result.stations["dep"].arrivals == pytest.approx(10 * 20 / 2, rel=0.15)


def test_client_side_policies_are_built_per_client() -> None:
    topology = Topology(stations=(Station.simple("dep", None, det(0.005), error_rate=1.0),))
    breaker = PolicySpec.of(CircuitBreaker(minimum_calls=10, window_size=10, open_s=100.0))
    client = Client(name="c", rate=100.0, arrival="constant", target="dep", policies=(breaker,))
    sim = Simulation(topology, [client])
    result = sim.run(5.0)
    assert sim.policies["c.circuit_breaker"].state == "open"
    assert result.overall.refused > 400
    assert result.stations["dep"].arrivals == 10


def test_policy_specs_reject_what_the_simulator_sets_itself() -> None:
    with pytest.raises(InvalidConfig, match="clock"):
        PolicySpec("retry", {"clock": object()})
    with pytest.raises(InvalidConfig, match="kind"):
        PolicySpec("hedge")
    with pytest.raises(InvalidConfig, match="budget"):
        Topology(
            stations=(Station.simple("s", 1, det(0.1)),),
            policies={"r": PolicySpec("retry", {"budget": "missing"})},
        )
    with pytest.raises(InvalidConfig, match="attempts"):
        Topology(
            stations=(Station.simple("s", 1, det(0.1)),),
            policies={"r": PolicySpec("retry", {"attempts": 0})},
        )
