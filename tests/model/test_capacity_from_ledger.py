"""From a probe ledger (JSON) to the capacity model."""

from __future__ import annotations

from typing import Any

import pytest

from brownout.errors import InvalidConfig
from brownout.model._ledger import capacity_from_ledger
from brownout.results import Histogram


def demand(mean: float, values_s: list[float] | None = None) -> dict[str, Any]:
    hist = None
    if values_s is not None:
        h = Histogram(3_600_000_000, 3)
        for x in values_s:
            h.record(round(x * 1e6))
        hist = h.encode()
    return {"mean": mean, "p50": mean, "p95": mean, "max": mean, "total": mean, "hist": hist}


def endpoint(requests: int, **demands: dict[str, Any]) -> dict[str, Any]:
    return {"requests": requests, "demands": demands, "dependencies": {}}


def ledger(**endpoints: dict[str, Any]) -> dict[str, Any]:
    return {
        "endpoints": {k.replace("_", " "): v for k, v in endpoints.items()},
        "capacity": {
            "pools": {"sqlalchemy": {"sqlite:shop.db": {"pool_size": 5, "max_overflow": 5}}},
            "thread_limiter": {"library": "anyio", "total_tokens": 40.0},
        },
    }


def test_loop_pool_and_dependency_demands_become_resources() -> None:
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
    lm = capacity_from_ledger(ledger(GET_a=a, GET_b=b))
    kinds = {r.name: (r.kind, r.servers) for r in lm.resources}
    assert kinds == {
        "loop": ("cpu", 1),
        "sqlite:shop.db": ("db_pool", 10),
        "127.0.0.1:9001": ("client_pool", 100),
    }
    assert lm.mix == {"GET a": 300.0, "GET b": 100.0}  # the request counts by default
    assert lm.demands_s["GET a"] == {"loop": 0.010, "sqlite:shop.db": 0.020}
    assert lm.visits["GET a"]["sqlite:shop.db"] == 2.0
    assert lm.demands_s["GET b"]["127.0.0.1:9001"] == pytest.approx(0.06)  # 6 s / 100 requests
    assert lm.visits["GET b"]["127.0.0.1:9001"] == pytest.approx(3.0)
    model = lm.model()
    # The loop: 0.75 * 10 ms + 0.25 * 2 ms = 8 ms per request -> 125 req/s; the pool:
    # 0.75 * 20 ms / 10 connections -> 666.7 req/s. The loop saturates first.
    assert model.bottleneck == "loop"
    assert model.saturation_rps == pytest.approx(125.0)
    assert model.saturation_by_resource_rps["sqlite:shop.db"] == pytest.approx(10 / 0.015)


def test_cpu_time_stands_in_when_the_loop_was_not_monitored() -> None:
    a = endpoint(10, cpu_s=demand(0.004))
    lm = capacity_from_ledger(ledger(GET_a=a))
    assert lm.demands_s["GET a"] == {"loop": 0.004}
    assert any("CPU time stands for loop time" in n for n in lm.notes)


def test_service_variability_comes_from_the_histograms() -> None:
    constant = endpoint(10, loop_busy_s=demand(0.01, [0.01] * 100), loop_steps=demand(1.0))
    lm = capacity_from_ledger(ledger(GET_a=constant))
    assert lm.resources[0].service_cv2 == pytest.approx(0.0, abs=1e-3)
    # Two values 1 ms and 19 ms equally often: mean 10 ms, variance 81 ms^2 -> cv2 0.81.
    spread = endpoint(10, loop_busy_s=demand(0.01, [0.001, 0.019] * 50), loop_steps=demand(1.0))
    lm = capacity_from_ledger(ledger(GET_a=spread))
    assert lm.resources[0].service_cv2 == pytest.approx(0.81, rel=0.01)


def test_an_explicit_mix_and_workers() -> None:
    a = endpoint(1, loop_busy_s=demand(0.01), loop_steps=demand(1.0))
    b = endpoint(1, loop_busy_s=demand(0.03), loop_steps=demand(1.0))
    lm = capacity_from_ledger(ledger(GET_a=a, GET_b=b), mix={"GET a": 3, "GET b": 1}, workers=4)
    model = lm.model()
    # 0.75 * 10 ms + 0.25 * 30 ms = 15 ms per request; 4 loops -> 266.7 req/s.
    assert model.saturation_rps == pytest.approx(4 / 0.015)


@pytest.mark.parametrize(
    ("data", "kwargs", "field"),
    [
        ({"endpoints": {}}, {}, "ledger.endpoints"),
        ("not a ledger", {}, "ledger.endpoints"),
        (None, {"mix": {"GET nope": 1}}, "mix"),
        (None, {"workers": 0}, "workers"),
        (None, {"mix": {"GET a": 0}}, "mix"),
    ],
)
def test_bad_input_names_the_field(data: Any, kwargs: dict[str, Any], field: str) -> None:
    if data is None:
        data = ledger(GET_a=endpoint(1, loop_busy_s=demand(0.01), loop_steps=demand(1.0)))
    with pytest.raises(InvalidConfig) as info:
        capacity_from_ledger(data, **kwargs)
    assert info.value.name == field


def test_a_ledger_with_no_demand_at_all_is_refused() -> None:
    with pytest.raises(InvalidConfig, match="measured demands"):
        capacity_from_ledger(ledger(GET_a=endpoint(5)))


def test_process_cpu_outside_the_steps_is_added_to_the_loop() -> None:
    a = endpoint(100, loop_busy_s=demand(0.010), loop_steps=demand(4.0), cpu_s=demand(0.008))
    a["demands"]["cpu_s"]["total"] = 0.8  # 100 requests x 8 ms
    doc = ledger(GET_a=a)
    doc["capacity"]["process_cpu"] = {"cpu_s": 1.188, "requests": 99}  # 12 ms per request
    lm = capacity_from_ledger(doc)
    # 12 ms of process CPU per request, 8 ms of it in the steps: 4 ms more on the loop.
    assert lm.demands_s["GET a"]["loop"] == pytest.approx(0.014)
    assert any("4.00 ms per request" in n for n in lm.notes)
    doc["capacity"]["process_cpu"] = {"cpu_s": 0.5, "requests": 99}  # less than the steps
    assert capacity_from_ledger(doc).demands_s["GET a"]["loop"] == pytest.approx(0.010)
