"""The simulator against queueing theory: M/M/1, M/M/c, M/D/1, wait tails, Little's law.

Theory is computed here (Erlang C by the Erlang B recursion, Pollaczek-Khinchine for M/D/1)
so these tests do not depend on ``brownout.model._queueing``. Each figure is the mean of
independent replications with its 95% Student t interval, which must contain the theory
and be narrow enough (a few percent) for the check to mean something.
"""

from __future__ import annotations

import math

import pytest

from brownout.model import (
    Client,
    Estimate,
    Replications,
    ServiceTime,
    Simulation,
    Station,
    Topology,
    replicate,
    simulate,
)
from brownout.model._sim_result import t_critical


def erlang_c(servers: int, offered: float) -> float:
    """P(wait) in M/M/c with ``offered = lambda / mu`` erlangs."""
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    rho = offered / servers
    return b / (1 - rho * (1 - b))


def mmc(servers: int, rate: float, mu: float) -> tuple[Topology, Client]:
    station = Station.simple("s", servers, ServiceTime.exponential(1 / mu))
    return Topology(stations=(station,)), Client(name="c", rate=rate, target="s")


_RUNS: dict[tuple[int, float, float], Replications] = {}


def replications(servers: int, rate: float, mu: float) -> Replications:
    """10 replications of 120 s (10 s warm-up) of M/M/c, made once per module run."""
    key = (servers, rate, mu)
    if key not in _RUNS:
        topology, client = mmc(servers, rate, mu)
        _RUNS[key] = replicate(topology, client, 120.0, n=10, seed=100, warmup_s=10.0)
    return _RUNS[key]


@pytest.mark.parametrize(
    ("servers", "rate", "mu"),
    [(1, 80.0, 100.0), (2, 150.0, 100.0), (4, 320.0, 100.0)],
    ids=["M/M/1 rho=0.8", "M/M/2 rho=0.75", "M/M/4 rho=0.8"],
)
def test_mean_wait_matches_erlang_c(servers: int, rate: float, mu: float) -> None:
    runs = replications(servers, rate, mu)
    c = erlang_c(servers, rate / mu)
    wq = c / (servers * mu - rate)
    wait = runs["station.s.mean_wait_s"]
    assert wait.contains(wq), (wq, wait)
    assert wait.half_width < 0.1 * wq
    utilization = runs["station.s.utilization"]
    assert utilization.contains(rate / mu / servers)


def test_wait_tail_matches_theory() -> None:
    """P(Wq > t) = C * exp(-(c*mu - lambda) * t), per replication, at t = Wq and 3 Wq."""
    servers, rate, mu = 4, 320.0, 100.0
    runs = replications(servers, rate, mu)
    c = erlang_c(servers, rate / mu)
    wq = c / (servers * mu - rate)
    for t in (wq, 3 * wq):
        theory = c * math.exp(-(servers * mu - rate) * t)
        shares = []
        for run in runs.runs:
            st = run.stations["s"]
            shares.append(sum(1 for w in st.waits_s if w > t) / st.served)
        estimate = Estimate.of(shares)
        assert estimate.contains(theory), (t, theory, estimate)
        # The percentile reading agrees: the (1 - theory) quantile of the waits is near t.
        st = runs.runs[0].stations["s"]
        assert st.wait_percentile(100 * (1 - theory)) == pytest.approx(t, rel=0.15)


def test_md1_mean_wait_matches_pollaczek_khinchine() -> None:
    """Deterministic service: Wq = rho * S / (2 * (1 - rho))."""
    station = Station.simple("s", 1, ServiceTime.deterministic(0.01))
    topology = Topology(stations=(station,))
    client = Client(name="c", rate=80.0, target="s")
    runs = replicate(topology, client, 150.0, n=10, seed=3, warmup_s=10.0)
    theory = 0.8 * 0.01 / (2 * (1 - 0.8))
    wait = runs["station.s.mean_wait_s"]
    assert wait.contains(theory), (theory, wait)
    assert wait.half_width < 0.05 * theory


def test_littles_law_holds_on_every_output() -> None:
    """L = lambda * W: exactly with the stays clipped to the window (the bookkeeping), and
    within 2% with the completed requests' mean response time (the physics)."""
    topology, client = mmc(4, 320.0, 100.0)
    result = simulate(topology, client, 200.0, seed=5, warmup_s=5.0)
    c = result.overall
    assert c.mean_in_system == pytest.approx(c.offered_rps * c.mean_stay_s, rel=1e-9)
    assert c.mean_in_system == pytest.approx(c.offered_rps * c.mean_response_s, rel=0.02)
    st = result.stations["s"]
    # Queue: L_q = (entries / T) * mean time queued; servers: busy = (served / T) * hold.
    assert st.mean_queue_length == pytest.approx(
        st.queue_entries / st.window_s * st.mean_queue_time_s, rel=1e-9
    )
    assert st.mean_busy == pytest.approx(st.served / st.window_s * st.mean_hold_s, rel=1e-9)
    assert st.mean_queue_length == pytest.approx(st.throughput_rps * st.mean_wait_s, rel=0.02)
    assert st.mean_busy == pytest.approx(st.throughput_rps * 0.01, rel=0.02)
    # Everything that arrived either ended or is still inside.
    assert c.offered + c.in_flight_start == c.completed + c.in_flight_end
    assert st.arrivals + st.queued_start == (
        st.served + st.queued_end + st.rejected + st.expired + st.dropped
    )


def test_littles_law_holds_through_a_call_chain() -> None:
    """A visit holds its server while it calls: web's hold is its work plus db's response."""
    from brownout.model import Call, Endpoint, Work

    web = Station(
        name="web",
        servers=50,
        endpoints={
            "page": Endpoint(steps=(Work(ServiceTime.exponential(0.002)), Call(target="db")))
        },
    )
    db = Station.simple("db", 2, ServiceTime.exponential(0.005))
    topology = Topology(stations=(web, db))
    result = simulate(topology, Client(name="c", rate=200.0, target="web.page"), 100.0, 2)
    w, d = result.stations["web"], result.stations["db"]
    db_response = d.mean_hold_s + d.mean_wait_s
    assert w.mean_hold_s == pytest.approx(0.002 + db_response, rel=0.03)
    assert w.mean_busy == pytest.approx(w.throughput_rps * w.mean_hold_s, rel=0.01)
    assert result.overall.mean_in_system == pytest.approx(
        result.overall.offered_rps * result.overall.mean_response_s, rel=0.02
    )


def test_a_run_is_deterministic_for_its_seed() -> None:
    topology, client = mmc(2, 150.0, 100.0)
    a = simulate(topology, client, 30.0, seed=11)
    b = simulate(topology, client, 30.0, seed=11)
    c = simulate(topology, client, 30.0, seed=12)
    assert a.metrics() == b.metrics()
    assert list(a.overall.latencies_s) == list(b.overall.latencies_s)
    assert a.metrics() != c.metrics()


def test_timeline_rows_add_up_to_the_totals() -> None:
    topology, client = mmc(2, 150.0, 100.0)
    result = simulate(topology, client, 20.5, seed=1, interval_s=2.0)
    rows = result.timeline
    assert [r.t_s for r in rows] == [2.0 * k for k in range(1, 11)] + [20.5]
    assert sum(r.offered for r in rows) == result.overall.offered
    assert sum(r.ok for r in rows) == result.overall.ok
    assert sum(r.attempts for r in rows) == result.overall.attempts
    assert rows[-1].in_system == result.overall.in_flight_end
    assert all(0 <= r.stations["s"][0] <= 2 for r in rows)


def test_warmup_restarts_the_counts() -> None:
    topology, client = mmc(1, 50.0, 100.0)
    full = simulate(topology, client, 40.0, seed=4)
    late = simulate(topology, client, 40.0, seed=4, warmup_s=10.0)
    assert late.window_s == 30.0
    assert late.overall.offered == pytest.approx(0.75 * full.overall.offered, rel=0.05)
    assert late.timeline[0].t_s == 11.0
    assert late.overall.mean_in_system == pytest.approx(
        late.overall.offered_rps * late.overall.mean_stay_s, rel=1e-9
    )


def test_replications_report_student_t_intervals() -> None:
    assert t_critical(1) == pytest.approx(12.7062, rel=1e-5)
    assert t_critical(9) == pytest.approx(2.2622, rel=1e-4)
    assert t_critical(60) == pytest.approx(2.0003, rel=1e-4)
    assert t_critical(1000) == pytest.approx(1.9623, rel=1e-4)
    e = Estimate.of([1.0, 2.0, 3.0, 4.0])
    assert e.mean == 2.5
    assert e.half_width == pytest.approx(3.182446 * 1.290994 / 2, rel=1e-5)


def test_simulation_runs_once_and_rejects_bad_arguments() -> None:
    from brownout.errors import InvalidConfig

    topology, client = mmc(1, 10.0, 100.0)
    sim = Simulation(topology, [client], seed=0)
    sim.run(1.0)
    with pytest.raises(InvalidConfig, match="has not run yet"):
        sim.run(1.0)
    with pytest.raises(InvalidConfig, match="warmup_s"):
        Simulation(topology, [client], warmup_s=5.0).run(2.0)
    with pytest.raises(InvalidConfig, match="distinct names"):
        Simulation(topology, [client, client])
    with pytest.raises(InvalidConfig, match="route"):
        Simulation(topology, [Client(name="nobody", rate=1.0)])
