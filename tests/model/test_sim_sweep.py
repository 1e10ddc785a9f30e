"""The metastability sweep (``phase_diagram``): cells classified from the timeline.

Two models. A fluid one: one server of capacity mu = 100/s with a deterministic service
time, evenly spaced arrivals and a 1 s client timeout; its response to a trigger follows
by hand. And the retrying client of ``test_sim_metastable``: Poisson arrivals,
exponential service, R = 3 immediate retries on timeout, bistable above lambda* = mu /
(R + 1) = 25/s.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import pytest

from brownout.errors import InvalidConfig
from brownout.model import (
    Client,
    PhaseDiagram,
    PolicySpec,
    ServiceTime,
    Station,
    Topology,
    phase_diagram,
)

MU = 100.0
TIMEOUT_S = 1.0
R = 3
LAMBDA_STAR = MU / (R + 1)


def plain(load: float) -> tuple[Client, ...]:
    """Evenly spaced requests, ``load`` per second, 1 s timeout, no retries."""
    return (Client(name="c", rate=load, arrival="constant", target="srv", timeout_s=TIMEOUT_S),)


def retrying(load: float, *, arrival: str = "poisson") -> tuple[Client, ...]:
    """``load`` requests per second, each attempt timing out after 1 s and retried at once,
    up to R times."""
    retry = PolicySpec("retry", {"attempts": R + 1, "base_s": 0.0})
    client = Client(
        name="c",
        rate=load,
        arrival=arrival,
        target="srv",
        timeout_s=TIMEOUT_S,
        retry=retry,
        retry_on=frozenset({"timeout"}),
    )
    return (client,)


def server(service: ServiceTime, servers: int | None = 1) -> Topology:
    return Topology(stations=(Station.simple("srv", servers, service),))


FLUID = server(ServiceTime.deterministic(1 / MU))
STOCHASTIC = server(ServiceTime.exponential(1 / MU))


def sweep(topology: Topology, make_clients: Any, **kwargs: Any) -> PhaseDiagram:
    """``phase_diagram`` with the trigger at 10 s on ``srv``, 40 s runs, in-process."""
    settings: dict[str, Any] = {
        "trigger_station": "srv",
        "trigger_at_s": 10.0,
        "duration_s": 40.0,
        "workers": 1,
        **kwargs,
    }
    return phase_diagram(topology, make_clients, **settings)


RETRY_SWEEP: dict[str, Any] = {
    "loads": [0.7 * LAMBDA_STAR, 1.3 * LAMBDA_STAR],
    "trigger_factors": [10.0],
    "trigger_durations": [5.0],
    "interval_s": 2.0,  # ~50 requests an interval: one late response is not a 10% dip
    "seed": 1,
}


@pytest.fixture(scope="module")
def retry_diagram() -> PhaseDiagram:
    return sweep(STOCHASTIC, retrying, workers=2, **RETRY_SWEEP)


def test_without_retries_below_capacity_a_small_trigger_is_stable() -> None:
    # 1.5x slower: capacity 66.7/s, still above the 50/s offered.
    diagram = sweep(FLUID, plain, loads=[50.0], trigger_factors=[1.5], trigger_durations=[10.0])
    cell = diagram.cell(50.0, 1.5, 10.0)
    assert cell.regime == "stable"
    assert cell.recovery_s == 0.0
    assert cell.goodput_during is not None
    assert cell.goodput_during > 0.99
    assert cell.amplification_end == 1.0


def test_a_temporary_overload_recovers_once_the_backlog_is_young_enough() -> None:
    """4x slower for D = 10 s: capacity mu/4 < lambda, so B = (lambda - mu/4) * D requests
    are queued when the trigger ends; they drain at mu - lambda. The request finishing tau
    seconds later arrived B/lambda - mu*tau/lambda before it, so its response time is
    (B - (mu - lambda) * tau) / lambda, within the timeout T from tau = (B - lambda*T) /
    (mu - lambda), before the queue is empty (B / (mu - lambda))."""
    duration_s = 10.0
    diagram = sweep(
        FLUID, plain, loads=[50.0, 60.0], trigger_factors=[4.0], trigger_durations=[duration_s]
    )
    for load in (50.0, 60.0):
        backlog = (load - MU / 4) * duration_s
        healthy_from_s = (backlog - load * TIMEOUT_S) / (MU - load)
        cell = diagram.cell(load, 4.0, duration_s)
        assert cell.regime == "recovers"
        assert cell.recovery_s == pytest.approx(healthy_from_s, abs=diagram.interval_s)
        assert cell.recovery_s < backlog / (MU - load)
        assert cell.goodput_end == 1.0


def test_a_capacity_trigger_keeps_servers_over_factor_servers() -> None:
    """Four servers of 40 ms (mu = 100/s) at 60/s: factor 1.25 leaves round(3.2) = 3
    servers (75/s, enough); factor 2 leaves 2 (50/s): a backlog of 10/s for 10 s, healthy
    again (100 - 60 * T) / (100 - 60) = 1 s after the trigger."""
    topology = server(ServiceTime.deterministic(4 / MU), servers=4)
    diagram = sweep(
        topology,
        plain,
        loads=[60.0],
        trigger_factors=[1.25, 2.0],
        trigger_durations=[10.0],
        trigger_kind="capacity",
    )
    assert diagram.cell(60.0, 1.25, 10.0).regime == "stable"
    halved = diagram.cell(60.0, 2.0, 10.0)
    assert halved.regime == "recovers"
    assert halved.recovery_s == pytest.approx(1.0, abs=diagram.interval_s)


def test_retrying_clients_stay_stuck_above_lambda_star_and_recover_below(
    retry_diagram: PhaseDiagram,
) -> None:
    below = retry_diagram.cell(0.7 * LAMBDA_STAR, 10.0, 5.0)
    assert below.regime == "recovers"
    assert below.goodput_end is not None
    assert below.goodput_end > 0.95
    assert below.amplification_end < 1.05
    above = retry_diagram.cell(1.3 * LAMBDA_STAR, 10.0, 5.0)
    assert above.regime == "metastable"
    assert above.recovery_s is None
    assert above.goodput_before is not None
    assert above.goodput_before > 0.95  # the same load was served well before the trigger
    assert above.goodput_end is not None
    assert above.goodput_end < 0.05
    assert above.amplification_end == pytest.approx(R + 1, rel=0.1)


def test_boundary_is_mu_over_r_plus_1_within_the_grid_spacing() -> None:
    spacing = 5.0
    loads = [12.5 + spacing * i for i in range(6)]  # 12.5 .. 37.5
    diagram = sweep(
        FLUID,
        partial(retrying, arrival="constant"),
        loads=loads,
        trigger_factors=[2.0, 10.0],
        trigger_durations=[5.0],
    )
    boundary = diagram.boundary(10.0, 5.0)
    assert boundary is not None
    assert LAMBDA_STAR <= boundary <= LAMBDA_STAR + spacing
    assert diagram.cell(boundary - spacing, 10.0, 5.0).regime == "recovers"
    # Twice slower never pushes the queue past the timeout: no load of the grid sticks.
    assert diagram.boundary(2.0, 5.0) is None


def test_results_do_not_depend_on_the_number_of_workers(retry_diagram: PhaseDiagram) -> None:
    in_process = sweep(STOCHASTIC, retrying, workers=1, **RETRY_SWEEP)
    assert in_process == retry_diagram
    assert in_process.cells == retry_diagram.cells


def test_k_is_the_length_of_the_healthy_tail_a_recovery_needs() -> None:
    """Healthy again 7 s after a trigger ending at 20 s: the last 13 intervals of 40 are
    healthy, enough for K = 3, not for K = 15."""
    kwargs: dict[str, Any] = {
        "loads": [60.0],
        "trigger_factors": [4.0],
        "trigger_durations": [10.0],
    }
    assert sweep(FLUID, plain, **kwargs).cells[0].regime == "recovers"
    late = sweep(FLUID, plain, healthy_intervals=15, **kwargs).cells[0]
    assert late.regime == "metastable"
    assert late.recovery_s is None


def test_a_trigger_at_0_has_no_goodput_before() -> None:
    diagram = sweep(
        FLUID,
        plain,
        loads=[50.0],
        trigger_factors=[4.0],
        trigger_durations=[5.0],
        trigger_at_s=0.0,
        duration_s=20.0,
    )
    assert diagram.cells[0].goodput_before is None
    assert diagram.to_dict()["cells"][0]["goodput_before"] is None


def test_to_dict_round_trips_through_json(retry_diagram: PhaseDiagram) -> None:
    document = retry_diagram.to_dict()
    assert json.loads(json.dumps(document, allow_nan=False)) == document
    assert document["trigger"] == {
        "station": "srv",
        "kind": "latency",
        "at_s": 10.0,
        "factors": [10.0],
        "durations_s": [5.0],
    }
    assert document["loads"] == [0.7 * LAMBDA_STAR, 1.3 * LAMBDA_STAR]
    assert [c["regime"] for c in document["cells"]] == ["recovers", "metastable"]
    assert document["cells"][1]["recovery_s"] is None


def test_format_table_draws_one_grid_per_trigger_duration() -> None:
    diagram = sweep(
        FLUID,
        plain,
        loads=[60.0, 50.0],
        trigger_factors=[4.0, 1.5],
        trigger_durations=[10.0, 2.0],
    )
    lines = diagram.format_table().splitlines()
    assert lines[0] == "trigger: latency x factor at station 'srv' from 10 s"
    assert lines[1].startswith("S stable, R <t>s recovers <t> s after the trigger ends, ")
    assert "M metastable" in lines[1]
    two = lines.index("trigger duration 2 s")
    ten = lines.index("trigger duration 10 s")
    assert two < ten  # durations ascending, as loads and factors
    assert lines[ten + 1 : ten + 4] == [
        "load \\ factor  1.5     4",
        "50               S  R 4s",
        "60               S  R 7s",
    ]


def test_format_table_marks_metastable_cells(retry_diagram: PhaseDiagram) -> None:
    below = retry_diagram.cell(0.7 * LAMBDA_STAR, 10.0, 5.0)
    rows = retry_diagram.format_table().splitlines()[-2:]
    assert rows[0].split() == ["17.5", "R", f"{below.recovery_s:g}s"]
    assert rows[1].split() == ["32.5", "M"]


def test_cell_refuses_a_value_off_the_axes(retry_diagram: PhaseDiagram) -> None:
    assert retry_diagram.cell(1.3 * LAMBDA_STAR, 10, 5).load == 1.3 * LAMBDA_STAR
    with pytest.raises(InvalidConfig) as info:
        retry_diagram.cell(20.0, 10.0, 5.0)
    assert info.value.name == "load"
    assert "17.5, 32.5" in str(info.value)


def _unlimited() -> Topology:
    return server(ServiceTime.deterministic(0.01), servers=None)


GOOD: dict[str, Any] = {
    "loads": [10.0],
    "trigger_station": "srv",
    "trigger_factors": [2.0],
    "trigger_durations": [5.0],
    "trigger_at_s": 10.0,
    "duration_s": 30.0,
    "workers": 1,
}


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"topology": "srv"}, "topology"),
        ({"make_clients": "plain"}, "make_clients"),
        ({"loads": []}, "loads"),
        ({"loads": 10.0}, "loads"),
        ({"loads": [10.0, 10.0]}, "loads"),
        ({"loads": [10.0, -1.0]}, "loads[1]"),
        ({"trigger_factors": [0.0]}, "trigger_factors[0]"),
        ({"trigger_factors": [2.0, float("nan")]}, "trigger_factors[1]"),
        ({"trigger_durations": []}, "trigger_durations"),
        ({"trigger_durations": [-5.0]}, "trigger_durations[0]"),
        ({"trigger_station": "db"}, "trigger_station"),
        ({"trigger_kind": "disk"}, "trigger_kind"),
        ({"trigger_kind": "capacity", "topology": _unlimited()}, "trigger_station"),
        ({"trigger_at_s": -1.0}, "trigger_at_s"),
        ({"trigger_durations": [25.0]}, "duration_s"),  # ends after the run
        ({"duration_s": 24.0}, "duration_s"),  # 10 + 5 + 10 s to settle: 25
        ({"trigger_durations": [8.0]}, "duration_s"),  # settling 2 x 8 s: 10 + 8 + 16 > 30
        ({"interval_s": 10.0}, "duration_s"),  # K = 3 intervals of 10 s to settle
        ({"interval_s": 0.0}, "interval_s"),
        ({"healthy_ratio": 0.0}, "healthy_ratio"),
        ({"healthy_ratio": 1.5}, "healthy_ratio"),
        ({"healthy_intervals": 0}, "healthy_intervals"),
        ({"workers": 0}, "workers"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_each_bad_argument_is_named(changes: dict[str, Any], name: str) -> None:
    kwargs = {**GOOD, **changes}
    topology = kwargs.pop("topology", FLUID)
    make_clients = kwargs.pop("make_clients", plain)
    with pytest.raises(InvalidConfig) as info:
        phase_diagram(topology, make_clients, **kwargs)
    assert info.value.name == name
    assert info.value.owner == "phase_diagram"
    assert f"{name} must be" in str(info.value)


def test_several_workers_need_picklable_clients() -> None:
    def local(load: float) -> tuple[Client, ...]:  # pickle cannot name a local function
        return plain(load)

    with pytest.raises(InvalidConfig) as info:
        phase_diagram(FLUID, local, **{**GOOD, "workers": 2, "loads": [5, 10]})
    assert info.value.name == "make_clients"
    assert "functools.partial" in str(info.value)
