"""The simulator's mechanics: queue disciplines, time limits, calls, timeouts, pools,
abandoned work, faults, arrival processes and the virtual clock.

Most runs here are small and deterministic (constant arrivals, deterministic service), so
each test can state exactly when things happen.
"""

from __future__ import annotations

import pytest

from brownout.errors import InvalidConfig
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
    VirtualClock,
    Work,
    simulate,
)

det = ServiceTime.deterministic


def one_station(**kwargs: object) -> Topology:
    service = kwargs.pop("service", det(1.0))
    servers = kwargs.pop("servers", 1)
    return Topology(stations=(Station.simple("s", servers, service, **kwargs),))  # type: ignore[arg-type]


def burst(n: int, *, within_s: float = 0.4, **kwargs: object) -> Client:
    """``n`` evenly spaced requests in the first ``within_s`` seconds (at (i + 1/2) * gap)."""
    return Client(
        name="c",
        stages=((within_s, n / within_s),),
        arrival="constant",
        target=kwargs.pop("target", "s"),  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


# -- queue disciplines -----------------------------------------------------------------


def test_fifo_serves_the_oldest_first() -> None:
    result = simulate(one_station(), burst(4), 10.0)
    # arrivals 0.05, 0.15, 0.25, 0.35; 1 s each, one server
    assert list(result.overall.latencies_s) == pytest.approx([1.0, 1.9, 2.8, 3.7])


def test_lifo_serves_the_newest_first() -> None:
    result = simulate(one_station(discipline="lifo"), burst(4), 10.0)
    # in completion order: 0.05 (at once), then 0.35, 0.25, 0.15
    assert list(result.overall.latencies_s) == pytest.approx([1.0, 1.7, 2.8, 3.9])


def test_adaptive_lifo_is_fifo_until_the_queue_stands() -> None:
    """With a 1.5 s interval the queue of the first burst is not standing yet at t = 1.05
    (FIFO); by t = 2.05 it has been non-empty since 0.15 (LIFO)."""
    topology = one_station(discipline="adaptive_lifo", codel_interval_s=1.5)
    result = simulate(topology, burst(4), 10.0)
    # 0.05 at once; at 1.05 FIFO picks 0.15; at 2.05 LIFO picks 0.35; then 0.25
    assert list(result.overall.latencies_s) == pytest.approx([1.0, 1.9, 2.7, 3.8])


def test_a_full_queue_rejects_at_once() -> None:
    result = simulate(one_station(max_queue=1), burst(4), 10.0)
    st = result.stations["s"]
    assert (st.served, st.rejected) == (2, 2)
    assert result.overall.rejected == 2
    assert sorted(result.overall.latencies_s)[:2] == [0.0, 0.0]


def test_a_fixed_queue_timeout_fires_on_time() -> None:
    result = simulate(one_station(queue_timeout_s=1.2), burst(4), 10.0)
    st = result.stations["s"]
    assert (st.served, st.expired) == (2, 2)
    # 0.15 waits 0.9 and is served; 0.25 and 0.35 leave the queue after exactly 1.2 s
    lat = sorted(result.overall.latencies_s)
    assert lat == pytest.approx([1.0, 1.2, 1.2, 1.9])
    assert result.overall.rejected == 2


def test_controlled_delay_tightens_under_a_standing_queue() -> None:
    """CoDel as ConcurrencyLimit runs it: expiry = max(E + interval, t + target), E the time
    the queue last became non-empty (0.15 here)."""
    topology = one_station(codel=True, codel_target_s=0.08, codel_interval_s=0.52)
    result = simulate(topology, burst(8, within_s=0.8), 10.0)
    # Arrivals at 0.05, 0.15, ... 0.75; the server is busy with 0.05 until 1.05. The queue
    # turns non-empty at E = 0.15: 0.15 .. 0.55 may wait until E + 0.52 = 0.67. The queue
    # stands by then, so 0.65 gets only the target: it leaves at 0.73. That empties the
    # queue: 0.75 starts a new period (E = 0.75, expiry 1.27) and is served at 1.05.
    st = result.stations["s"]
    assert (st.served, st.expired) == (2, 6)
    assert sorted(result.overall.latencies_s) == pytest.approx(
        [0.08, 0.12, 0.22, 0.32, 0.42, 0.52, 1.0, 1.3]
    )


def test_unlimited_servers_never_queue() -> None:
    result = simulate(one_station(servers=None), burst(50), 10.0)
    st = result.stations["s"]
    assert st.queue_entries == 0
    assert st.servers is None
    assert list(result.overall.latencies_s) == pytest.approx([1.0] * 50)
    assert st.utilization == pytest.approx(50 * 1.0 / 10.0)


# -- calls, timeouts, abandoned work --------------------------------------------------


def chain(*, abandoned: str = "keep", timeout_s: float | None = 0.5, **call: object) -> Topology:
    web = Station(
        name="web",
        servers=10,
        abandoned=abandoned,
        endpoints={
            "page": Endpoint(
                steps=(
                    Work(det(0.1)),
                    Call(target="db", timeout_s=timeout_s, **call),  # type: ignore[arg-type]
                    Work(det(0.1)),
                )
            )
        },
    )
    db = Station.simple("db", 1, det(0.3), abandoned=abandoned)
    return Topology(stations=(web, db), policies={"retry": PolicySpec("retry", {"attempts": 2})})


def test_a_call_holds_the_callers_server() -> None:
    result = simulate(chain(), burst(1, target="web.page"), 5.0)
    assert list(result.overall.latencies_s) == pytest.approx([0.5])
    web = result.stations["web"]
    assert web.busy_area == pytest.approx(0.5)
    assert result.stations["db"].busy_area == pytest.approx(0.3)


def test_a_timeout_fails_the_visit_but_the_callee_keeps_working() -> None:
    result = simulate(chain(timeout_s=0.2), burst(1, target="web.page"), 5.0)
    assert result.overall.errors == 1  # the web visit failed: its call timed out
    assert list(result.overall.latencies_s) == pytest.approx([0.3])  # 0.1 + 0.2
    assert result.call("db.default").outcomes["timeout"] == 1
    assert result.call("db") is result.call("web.page[1] -> db.default")
    assert result.stations["db"].completed == 1  # keep: db finished the abandoned work
    assert result.stations["db"].busy_area == pytest.approx(0.3)


def test_drop_discards_work_whose_caller_gave_up() -> None:
    # Three calls reach db at 0.105, 0.115, 0.125; db serves one at a time (0.3 s); each
    # caller gives up 0.35 s after calling. With drop, the third is found expired at 0.705.
    client = burst(3, within_s=0.03, target="web.page")
    keep = simulate(chain(timeout_s=0.35), client, 5.0)
    drop = simulate(chain(timeout_s=0.35, abandoned="drop"), client, 5.0)
    assert keep.stations["db"].completed == 3
    assert drop.stations["db"].completed == 2
    assert drop.stations["db"].dropped == 1
    assert drop.stations["db"].busy_area < keep.stations["db"].busy_area


def test_on_failure_continue_is_a_fallback() -> None:
    result = simulate(chain(timeout_s=0.2, on_failure="continue"), burst(1, target="web.page"), 5)
    assert result.overall.ok == 1
    assert list(result.overall.latencies_s) == pytest.approx([0.4])  # 0.1 + 0.2 + 0.1


def test_retry_waits_the_backoff_the_retry_policy_plans() -> None:
    """Retry(jitter='none', base_s=0.1): attempts at 0, 0.1, 0.3, 0.7 after each failure."""
    dep = Station.simple("dep", None, det(0.0), error_rate=1.0)
    topology = Topology(
        stations=(dep,),
        policies={},
    )
    client = Client(
        name="c",
        stages=((1.0, 1.0),),
        arrival="constant",
        target="dep",
        retry=PolicySpec("retry", {"attempts": 4, "base_s": 0.1, "jitter": "none"}),
    )
    result = simulate(topology, client, 5.0)
    assert result.overall.attempts == 4
    assert list(result.overall.latencies_s) == pytest.approx([0.1 + 0.2 + 0.4])
    assert result.calls[0].abandoned == {"attempts": 1}


def test_a_pool_connection_is_held_until_the_callee_answers() -> None:
    app = Station(
        name="app",
        servers=None,
        endpoints={"q": Endpoint(steps=(Call(target="db", pool="pool", timeout_s=0.5),))},
    )
    db = Station.simple("db", None, det(1.0))
    pool = Station(name="pool", servers=2, queue_timeout_s=0.2)
    topology = Topology(stations=(app, db, pool))
    result = simulate(topology, burst(4, within_s=0.04, target="app.q"), 5.0)
    p = result.stations["pool"]
    # two take the connections; two wait 0.2 s and are shed
    assert (p.served, p.expired) == (2, 2)
    # the callers time out at 0.5 s but the connections stay held for db's full second
    assert p.busy_area == pytest.approx(2.0)
    assert result.overall.errors == 2
    assert result.overall.rejected == 2


def test_layered_deadlines_let_a_drop_station_skip_work_nobody_waits_for() -> None:
    """The client gives up after 0.25 s; db (drop) finds the deadline passed on dequeue."""
    client = burst(2, within_s=0.02, target="web.page", timeout_s=0.25)
    result = simulate(chain(timeout_s=None, abandoned="drop"), client, 5.0)
    assert result.overall.timeouts == 2
    assert result.stations["db"].dropped == 1


# -- faults ----------------------------------------------------------------------------


def test_faults_slow_fail_and_shrink_a_station() -> None:
    topology = one_station(servers=2, service=det(0.1))
    client = Client(name="c", rate=10.0, arrival="constant", target="s")
    faults = (
        Fault(station="s", at_s=2.0, duration_s=2.0, latency_factor=3.0),
        Fault(station="s", at_s=5.0, duration_s=1.0, error_rate=1.0),
        Fault(station="s", at_s=7.0, duration_s=2.0, servers=1, latency_factor=20.0),
    )
    result = simulate(topology, client, 10.0, faults=faults)
    rows = {round(r.t_s): r for r in result.timeline}
    assert rows[6].errors == 10
    assert rows[5].errors == 0
    assert rows[8].stations["s"][0] == 1  # one server during the capacity drop
    assert result.overall.latency.max_s > 1.0
    # 3x slower from 2 s to 4 s: 0.3 s of service, and a queue (2 servers, 15 erlangs)
    slow = [x for x in result.overall.latencies_s if x > 0.3 - 1e-9]
    assert len(slow) >= 20
    assert rows[2].ok == 10
    assert rows[3].ok < 10
    with pytest.raises(InvalidConfig, match="overlap"):
        Simulation(topology, [client], faults=(faults[0], faults[0]))


# -- arrivals --------------------------------------------------------------------------


def test_constant_arrivals_follow_the_stages() -> None:
    client = Client(
        name="c", stages=((2.0, 10.0), (1.0, 0.0), (2.0, 5.0)), arrival="constant", target="s"
    )
    result = simulate(one_station(servers=None, service=det(0.01)), client, 6.0)
    assert [r.offered for r in result.timeline] == [10, 10, 0, 5, 5, 0]


def test_poisson_arrivals_have_the_right_rate() -> None:
    client = Client(name="c", rate=200.0, target="s")
    result = simulate(one_station(servers=None, service=det(0.01)), client, 50.0, seed=3)
    assert result.overall.offered == pytest.approx(10_000, rel=0.03)


def test_arrivals_can_come_from_the_scenario_schedule() -> None:
    from brownout.scenario import RequestSpec, Stage, TrafficClass, arrivals

    cls = TrafficClass(
        name="shoppers",
        stages=(Stage(duration_s=2.0, target=100.0), Stage(duration_s=2.0, rate=100.0)),
        requests=(RequestSpec(path="/"),),
    )
    client = Client(
        name="shoppers",
        target="s",
        arrivals=lambda seed: arrivals(cls, seed=seed, duration_s=4.0),
    )
    result = simulate(one_station(servers=None, service=det(0.001)), client, 4.0)
    # a ramp to 100/s over 2 s (100 expected) then 2 s at 100/s
    assert [r.offered for r in result.timeline] == [25, 75, 100, 100]


def test_a_mix_draws_endpoints_by_weight() -> None:
    st = Station(
        name="s",
        servers=None,
        endpoints={
            "a": Endpoint(steps=(Work(det(0.01)),)),
            "b": Endpoint(steps=(Work(det(0.02)),)),
        },
    )
    client = Client(name="c", rate=500.0, mix=(("s.a", 3.0), ("s.b", 1.0)))
    result = simulate(Topology(stations=(st,)), client, 20.0, seed=2)
    a, b = (c.attempts for c in result.calls)
    assert a / (a + b) == pytest.approx(0.75, abs=0.02)


def test_routes_name_the_endpoint_of_a_class() -> None:
    topology = Topology(
        stations=(Station.simple("s", 1, det(0.01)),), routes={"shoppers": "s.default"}
    )
    result = simulate(topology, Client(name="shoppers", rate=5.0), 10.0)
    assert result.overall.ok > 0


# -- the virtual clock -----------------------------------------------------------------


def test_the_virtual_clock_reads_and_schedules_virtual_time() -> None:
    sim = Simulation(one_station(), [burst(1)], seed=0)
    clock = sim.clock
    assert isinstance(clock, VirtualClock)
    fired: list[float] = []
    clock.call_later(2.5, lambda: fired.append(clock.now()))
    handle = clock.call_later(3.0, lambda: fired.append(-1.0))
    handle.cancel()
    sim.run(5.0)
    assert fired == [2.5]
    assert clock.now() == 5.0
    with pytest.raises(RuntimeError, match="cannot block"):
        clock.sleep(1.0)


def test_policies_built_by_the_simulation_read_its_clock() -> None:
    topology = Topology(
        stations=(Station.simple("s", 1, det(0.1)),),
        policies={"limit": PolicySpec("rate_limit", {"rate": 5.0})},
    )
    sim = Simulation(topology, [burst(1)], seed=0)
    limit = sim.policies["limit"]
    assert limit.clock is sim.clock
    sim.run(3.0)
    assert sim.clock.now() == 3.0


def test_many_immediate_retries_do_not_nest_calls() -> None:
    """A full queue refuses at once and the retry comes at once, 1000 times in a row: each
    retry is an event of its own, so the recursion limit is never near."""
    topology = one_station(max_queue=0, service=det(10.0))
    client = Client(
        name="c",
        rate=10.0,
        arrival="constant",
        target="s",
        retry=PolicySpec("retry", {"attempts": 1000, "base_s": 0.0}),
        retry_on=frozenset({"rejected"}),
    )
    result = simulate(topology, client, 2.0)
    assert result.overall.rejected == 19
    assert result.overall.attempts == 1 + 19 * 1000


def test_the_cyclic_collector_is_paused_only_during_the_run() -> None:
    import gc

    assert gc.isenabled()
    seen: list[bool] = []
    sim = Simulation(one_station(), [burst(1)], seed=0)
    sim.clock.call_later(0.5, lambda: seen.append(gc.isenabled()))
    sim.run(1.0)
    assert seen == [False]
    assert gc.isenabled()
    gc.disable()
    try:
        simulate(one_station(), burst(1), 1.0)
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize("queue_timeout_s", [None, 1000.0])
def test_a_capacity_drop_below_the_busy_count_takes_effect(queue_timeout_s: float | None) -> None:
    # 4 servers, 40 ms each, 60 requests/s: about 2.4 busy. From 2 s, one server: as the
    # running visits end, no new one starts beyond 1 (the FIFO fast path must check too).
    kwargs = {} if queue_timeout_s is None else {"queue_timeout_s": queue_timeout_s}
    topo = one_station(servers=4, service=det(0.04), **kwargs)
    client = Client(name="c", rate=60.0, arrival="constant", target="s")
    fault = Fault(station="s", at_s=2.0, duration_s=10.0, servers=1)
    r = simulate(topo, client, 8.0, faults=[fault], interval_s=0.5)
    busy = [row.stations["s"][0] for row in r.timeline if row.t_s >= 2.5]
    assert busy
    assert max(busy) == 1
    # One server at 25/s against 60/s offered: the queue grows by 35/s.
    queued = [row.stations["s"][1] for row in r.timeline if row.t_s >= 2.5]
    assert queued[-1] - queued[0] == pytest.approx(35 * (len(queued) - 1) * 0.5, abs=3)
