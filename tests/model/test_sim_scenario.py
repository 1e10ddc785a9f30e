"""A load scenario in the simulator: the mapping, and a results document that agrees with the
simulator's own figures and with queueing theory."""

from __future__ import annotations

import json
import math

import pytest

from brownout.errors import ScenarioError
from brownout.model import Fault, ServiceTime, Simulation, Station, Topology, parse_topology
from brownout.model._scenario_sim import (
    results_document,
    sim_clients,
    sim_faults,
    simulate_scenario,
)
from brownout.results import validate_results
from brownout.scenario import parse_scenario

TOPOLOGY = """
[stations.web]
servers = 1
[stations.web.endpoints.fast]
steps = [{ work = { dist = "exponential", mean = "10ms" } }]

[stations.api]
servers = 8
[stations.api.endpoints.pay]
steps = [{ work = "1ms" }, { call = "payments", timeout = "300ms" }]

[dependencies.payments]
latency = "20ms"

[routes]
fast = "web.fast"
"/pay" = "api.pay"
bots = "web.fast"
"""


def scenario(body: str, duration: str = "200s") -> str:
    return f'name = "t"\nduration = "{duration}"\nseed = 7\n' + body


ONE_CLASS = scenario(
    """
[[classes]]
name = "people"
arrival = "poisson"
rate = 50
timeout = "2s"
  [[classes.requests]]
  name = "fast"
  path = "/fast"
"""
)


def test_an_m_m_1_scenario_matches_theory_and_the_simulators_own_figures() -> None:
    # web.fast is M/M/1 with mu = 100/s at lambda = 50/s: mean response 1/(mu - lambda) = 20 ms,
    # p99 = ln(100) / (mu - lambda) = 92 ms.
    topo = parse_topology(TOPOLOGY)
    doc = simulate_scenario(parse_scenario(ONE_CLASS.replace("200s", "400s")), topo)
    validate_results(doc)
    assert doc["kind"] == "sim"
    s = doc["summary"]
    assert s["offered_rps"] == pytest.approx(50, rel=0.03)
    assert s["ok"] == s["offered"] - doc["timeline"][-1]["in_flight"]
    assert s["latency_ms"]["mean"] == pytest.approx(20.0, rel=0.1)
    assert s["latency_ms"]["p99"] == pytest.approx(1e3 * math.log(100) / 50, rel=0.12)
    assert doc["sim"]["stations"]["web"]["utilization"] == pytest.approx(0.5, rel=0.05)
    assert list(doc["by_endpoint"]) == ["people/fast"]
    # The timeline adds up to the summary, interval by interval.
    assert sum(r["ok"] for r in doc["timeline"]) == s["ok"]
    assert sum(r["offered"] for r in doc["timeline"]) == s["offered"]
    assert len(doc["timeline"]) == 400


def test_the_document_counts_what_the_simulation_counted() -> None:
    topo = parse_topology(TOPOLOGY)
    sc = parse_scenario(ONE_CLASS)
    clients, names = sim_clients(sc, topo)
    sim = Simulation(topo, clients, seed=3, trace=True)
    result = sim.run(60.0)
    doc = results_document(sim, names=names)
    people = result.classes["people"]
    s = doc["summary"]
    assert (s["offered"], s["ok"], s["timeouts"]) == (people.offered, people.ok, people.timeouts)
    assert s["goodput"] == people.goodput
    # Percentiles from the HdrHistogram (3 significant digits) vs the exact ones.
    assert s["latency_ms"]["p99"] == pytest.approx(people.latency.p99_s * 1e3, rel=2e-3)
    with pytest.raises(ValueError, match="trace=True"):
        results_document(Simulation(topo, clients, seed=3))


def test_same_seed_same_document_and_a_new_seed_changes_it() -> None:
    topo = parse_topology(TOPOLOGY)
    sc = parse_scenario(ONE_CLASS)
    a = simulate_scenario(sc, topo, duration_s=30.0)
    b = simulate_scenario(sc, topo, duration_s=30.0)
    c = simulate_scenario(sc, topo, duration_s=30.0, seed=8)
    assert json.dumps(a["summary"]) == json.dumps(b["summary"])
    assert a["summary"]["offered"] != c["summary"]["offered"]


def test_replications_give_an_interval_around_theory() -> None:
    topo = parse_topology(TOPOLOGY)
    doc = simulate_scenario(parse_scenario(ONE_CLASS), topo, duration_s=100.0, replications=8)
    est = doc["sim"]["replications"]["estimates"]["overall.mean_response_s"]
    assert est["low"] < est["mean"] < est["high"]
    assert est["low"] - 0.002 <= 0.020 <= est["high"] + 0.002  # 20 ms, CI widened by noise
    assert doc["sim"]["replications"]["n"] == 8


def test_retries_and_a_rejecting_fault_map_to_shed_and_retries() -> None:
    body = """
[[classes]]
name = "buyers"
rate = 20
timeout = "2s"
retry = { mode = "immediate", attempts = 3, on_status = [503] }
  [[classes.requests]]
  name = "pay"
  path = "/pay"

[[faults]]
at = "10s"
duration = "10s"
target = "payments"
kind = "http_abort"
status = 503
"""
    topo = parse_topology(TOPOLOGY)
    sc = parse_scenario(scenario(body, "30s"))
    (client,), names = sim_clients(sc, topo)
    assert client.retry is not None
    assert client.retry.params["attempts"] == 3
    assert client.retry_on == frozenset({"timeout", "error", "rejected"})
    assert names == {"buyers": ("pay",)}
    (fault,) = sim_faults(sc, topo)
    assert (fault.station, fault.error_rate, fault.answer) == ("payments", 1.0, "rejected")
    assert fault.latency_factor == 0.0  # the proxy answers: payments does no work
    doc = simulate_scenario(sc, topo)
    s = doc["summary"]
    # Every request during the fault is shed 3 times; outside it none is.
    during = [r for r in doc["timeline"] if 11 <= r["t_s"] <= 19]
    assert all(r["shed"] == r["offered"] for r in during if r["offered"])
    assert s["retries"] == pytest.approx(2 * s["shed"], abs=4)
    assert s["errors"] == 0


def test_a_latency_fault_adds_its_delay_and_a_black_hole_times_out() -> None:
    topo = parse_topology(TOPOLOGY)
    body = """
[[classes]]
name = "buyers"
rate = 10
arrival = "constant"
timeout = "1s"
  [[classes.requests]]
  name = "pay"
  path = "/pay"

[[faults]]
at = "0s"
duration = "10s"
target = "payments"
kind = "latency"
latency = "100ms"

[[faults]]
at = "20s"
duration = "10s"
target = "payments"
kind = "timeout"
"""
    doc = simulate_scenario(parse_scenario(scenario(body, "30s")), topo)
    rows = doc["timeline"]
    slow = [r["latency_p50_ms"] for r in rows[1:9]]
    normal = [r["latency_p50_ms"] for r in rows[11:19]]
    # 1 ms of work + 20 ms of payments (+ 100 ms during the fault); no queue at 8 servers.
    assert all(x == pytest.approx(121, abs=1) for x in slow)
    assert all(x == pytest.approx(21, abs=0.5) for x in normal)
    hole = [r for r in rows if 21 <= r["t_s"] <= 29]
    # payments never answers: every call times out at 300 ms, the request fails with an error.
    assert all(r["ok"] == 0 and r["errors"] == r["offered"] for r in hole)


def test_sessions_send_their_requests_after_think_times() -> None:
    topo = parse_topology(TOPOLOGY)
    body = """
[[classes]]
name = "people"
rate = 2
arrival = "constant"
  [classes.session]
  think_time = "1s"
  min_requests = 5
  max_requests = 5
  [[classes.requests]]
  name = "fast"
  path = "/fast"
"""
    doc = simulate_scenario(parse_scenario(scenario(body, "100s")), topo)
    # 200 sessions of 5 requests; those started near the end lose the ones past it.
    assert 900 <= doc["summary"]["offered"] <= 1000


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (
            '[[classes]]\nname = "x"\nrate = 1\n  [[classes.requests]]\n  path = "/nowhere"\n',
            "routes",
        ),
        (
            '[[classes]]\nname = "bots"\nkind = "bot"\nrate = 1\n[classes.crawl]\n[[faults]]\nat = "1s"\nduration = "1s"\n'
            'target = "nope"\nkind = "down"\n',
            r"faults\[0\]\.target",
        ),
        (
            '[[classes]]\nname = "bots"\nkind = "bot"\nrate = 1\n[classes.crawl]\n[[faults]]\nat = "1s"\nduration = "1s"\n'
            'target = "web"\nkind = "bandwidth"\nrate = 10\n',
            r"faults\[0\]\.kind",
        ),
    ],
)
def test_what_the_simulator_cannot_map_is_a_one_line_error(body: str, match: str) -> None:
    topo = parse_topology(TOPOLOGY)
    with pytest.raises(ScenarioError, match=match) as err:
        simulate_scenario(parse_scenario(scenario(body, "5s")), topo)
    assert "\n" not in str(err.value)


def test_fault_added_latency_and_answer_in_the_engine() -> None:
    det = ServiceTime.deterministic
    topo = Topology(stations=(Station.simple("s", 1, det(0.01)),))
    from brownout.model import Client

    client = Client(name="c", rate=10, arrival="constant", target="s.default", timeout_s=5.0)
    faults = [
        Fault(station="s", at_s=0.0, duration_s=5.0, added_s=0.05),
        Fault(station="s", at_s=5.0, duration_s=5.0, error_rate=1.0, answer="rejected"),
    ]
    r = Simulation(topo, [client], faults=faults, seed=1).run(10.0)
    c = r.classes["c"]
    # Arrivals at 0.05, 0.15, ...: the 50 of [5, 10) and the one sent at 4.95, which ends
    # at 5.01, in the fault (a visit's answer is drawn when it ends).
    assert c.rejected == 51
    assert c.errors == 0
    assert c.latency.max_s == pytest.approx(0.06)
    with pytest.raises(Exception, match="answer"):
        Fault(station="s", at_s=0.0, duration_s=1.0, answer="maybe")
