"""A probe ledger as a simulator topology: the same service the capacity formulas see."""

from __future__ import annotations

import pytest
from test_capacity_from_ledger import demand, endpoint, ledger

from brownout.errors import InvalidConfig
from brownout.model import Client, LedgerModel, Simulation, capacity_from_ledger


def _model() -> LedgerModel:
    a = endpoint(
        300,
        loop_busy_s=demand(0.010),
        loop_steps=demand(4.0),
        pool_hold_s=demand(0.020),
        pool_checkouts=demand(2.0),
    )
    b = endpoint(100, loop_busy_s=demand(0.002), loop_steps=demand(2.0))
    b["dependencies"] = {
        "127.0.0.1:9001": {"requests": 100, "calls": {"total": 300}, "time_s": {"total": 6.0}}
    }
    return capacity_from_ledger(ledger(GET_a=a, GET_b=b))


def test_stations_pools_calls_and_routes() -> None:
    lm = _model()
    topo = lm.topology({"shoppers": "GET a"}, names={"127.0.0.1:9001": "payments"})
    st = {s.name: s for s in topo.stations}
    assert set(st) == {
        "app",
        "loop",
        "db-pool",
        "db",
        "payments-pool",
        "payments",
    }
    assert st["app"].servers is None
    assert st["loop"].servers == 1
    assert st["db-pool"].servers == 10  # pool size + overflow
    assert st["payments-pool"].servers == 100
    steps = st["app"].endpoints["get-a"].steps
    # loop once, then two checkouts of 10 ms each (20 ms held per request over 2 checkouts)
    assert [s.target for s in steps] == [
        "loop.get-a",
        "db.get-a",
        "db.get-a",
    ]
    assert all(s.pool == "db-pool" for s in steps[1:])
    assert st["db"].endpoints["get-a"].steps[0].service.mean_s == pytest.approx(0.010)
    # three payments calls of 20 ms each per request of GET b
    calls = [s for s in st["app"].endpoints["get-b"].steps if s.target.startswith("payments")]
    assert len(calls) == 3
    assert st["payments"].endpoints["get-b"].steps[0].service.mean_s == pytest.approx(0.02)
    assert topo.routes["shoppers"] == "app.get-a"
    assert topo.routes["get-b"] == "app.get-b"
    with pytest.raises(InvalidConfig, match="routes"):
        lm.topology({"x": "GET nowhere"})


def test_the_simulated_service_saturates_where_the_formulas_say() -> None:
    lm = _model()
    topo = lm.topology()
    model = lm.model()
    sat = model.saturation_rps  # the loop: 1 / (0.75 * 10 ms + 0.25 * 2 ms) = 125/s
    assert sat == pytest.approx(125.0)
    mix = (("app.get-a", 3.0), ("app.get-b", 1.0))

    def throughput(rate: float) -> float:
        client = Client(name="c", rate=rate, mix=mix)
        r = Simulation(topo, [client], seed=2, warmup_s=20.0).run(220.0)
        return r.overall.throughput_rps

    assert throughput(0.5 * sat) == pytest.approx(0.5 * sat, rel=0.03)
    assert throughput(1.5 * sat) == pytest.approx(sat, rel=0.03)  # the loop is the bottleneck
    # Light load: a request's response time is the sum of its demands (no queueing).
    light = Simulation(topo, [Client(name="c", rate=5.0, mix=mix)], seed=2).run(400.0)
    expected = 0.75 * (0.010 + 0.020) + 0.25 * (0.002 + 0.060)
    assert light.overall.mean_response_s == pytest.approx(expected, rel=0.1)


def test_measured_distributions_become_empirical_service_times() -> None:
    # Loop time per request: 90% at 2 ms, 10% at 20 ms (mean 3.8 ms), from the histogram.
    values = [0.002] * 90 + [0.020] * 10
    a = endpoint(100, loop_busy_s=demand(0.0038, values), loop_steps=demand(2.0))
    lm = capacity_from_ledger(ledger(GET_a=a))
    service = lm.topology().station("loop").endpoints["get-a"].steps[0].service
    assert service.kind == "empirical"
    assert sum(service.values_s) / len(service.values_s) == pytest.approx(0.0038, rel=1e-9)
    assert min(service.values_s) == pytest.approx(0.002, rel=0.01)
    assert max(service.values_s) == pytest.approx(0.020, rel=0.01)
    # Without a histogram: the resource's lognormal (or exponential) fit.
    b = endpoint(100, loop_busy_s=demand(0.004), loop_steps=demand(2.0))
    plain = capacity_from_ledger(ledger(GET_b=b)).topology().station("loop")
    assert plain.endpoints["get-b"].steps[0].service.kind in ("exponential", "lognormal")
