"""The fault timeline: changes at their planned times, recorded, cleaned up."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import pytest

from brownout.errors import BrownoutError, ScenarioError
from brownout.faults import FaultTimeline, HttpFault, Toxic
from brownout.scenario import FaultSpec
from brownout.testing import MockClock


class FakeControl:
    """Records each call with the clock's time; fails on the proxies named in ``broken``."""

    def __init__(self, clock: Any, proxies: tuple[str, ...] = ("payments", "search")) -> None:
        self.clock = clock
        self.names = proxies
        self.calls: list[tuple[float, str, str, object]] = []
        self.broken: set[str] = set()

    def _call(self, what: str, proxy: str, arg: object) -> None:
        if proxy in self.broken:
            raise BrownoutError(f"proxy API: {proxy} is broken")
        self.calls.append((self.clock(), what, proxy, arg))

    def proxies(self) -> Mapping[str, Any]:
        return {n: {} for n in self.names}

    def add_toxic(self, proxy: str, toxic: Toxic) -> None:
        self._call("add_toxic", proxy, toxic)

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._call("remove_toxic", proxy, name)

    def add_http_fault(self, proxy: str, fault: HttpFault) -> None:
        self._call("add_http_fault", proxy, fault)

    def remove_http_fault(self, proxy: str, name: str) -> None:
        self._call("remove_http_fault", proxy, name)

    def set_enabled(self, proxy: str, enabled: bool) -> None:
        self._call("set_enabled", proxy, enabled)


FAULTS = (
    FaultSpec(
        at_s=1.0, duration_s=2.0, target="payments", kind="latency", params={"latency_s": 0.3}
    ),
    FaultSpec(
        at_s=2.0, duration_s=1.5, target="payments", kind="http_abort", params={"status": 429}
    ),
    FaultSpec(at_s=2.5, duration_s=0.5, target="search", kind="down"),
)


def _drive(timeline: FaultTimeline, clock: MockClock, until: float) -> None:
    """Step like the thread does: to each change's time, then apply what is due."""
    upcoming = timeline.poll(clock.now())
    while upcoming is not None and upcoming <= until:
        clock.jump_to(upcoming)
        upcoming = timeline.poll(clock.now())


def test_changes_happen_at_their_planned_times_in_order() -> None:
    clock = MockClock()
    control = FakeControl(clock.now)
    timeline = FaultTimeline(FAULTS, control, clock=clock.now)
    timeline.check()
    _drive(timeline, clock, until=10.0)
    got = [(t, what, proxy) for t, what, proxy, _ in control.calls]
    assert got == [
        (1.0, "add_toxic", "payments"),
        (2.0, "add_http_fault", "payments"),
        (2.5, "set_enabled", "search"),
        (3.0, "remove_toxic", "payments"),
        (3.0, "set_enabled", "search"),
        (3.5, "remove_http_fault", "payments"),
    ]
    toxic = control.calls[0][3]
    assert isinstance(toxic, Toxic)
    assert toxic.attributes["latency"] == 300  # Toxiproxy's milliseconds
    assert [c[3] for c in control.calls if c[1] == "set_enabled"] == [False, True]
    records = timeline.finish()
    assert [(r["started_s"], r["ended_s"]) for r in records] == [(1.0, 3.0), (2.0, 3.5), (2.5, 3.0)]
    assert records[0]["name"] == "brownout-0-latency"
    assert records[1]["layer"] == "http"
    assert all(r["errors"] == [] for r in records)


def test_finish_ends_what_is_still_active_and_skips_what_never_started() -> None:
    clock = MockClock()
    control = FakeControl(clock.now)
    timeline = FaultTimeline(FAULTS, control, clock=clock.now)
    _drive(timeline, clock, until=2.2)  # latency and abort active, down still planned
    clock.jump_to(2.3)
    records = timeline.finish()  # the run stopped early (Ctrl-C)
    assert [c[1] for c in control.calls[-2:]] == ["remove_toxic", "remove_http_fault"]
    assert [r["ended_s"] for r in records] == [2.3, 2.3, None]
    assert records[2]["started_s"] is None
    assert timeline.poll(5.0) is None  # nothing more happens after finish
    assert len(control.calls) == 4


def test_a_failing_change_is_recorded_and_the_run_goes_on() -> None:
    clock = MockClock()
    control = FakeControl(clock.now)
    control.broken.add("search")
    timeline = FaultTimeline(FAULTS, control, clock=clock.now)
    _drive(timeline, clock, until=10.0)
    records = timeline.finish()
    assert records[2]["started_s"] is None
    assert records[2]["ended_s"] is None
    assert records[2]["errors"] == ["proxy API: search is broken"]
    assert records[0]["ended_s"] == 3.0  # the others went ahead


def test_check_names_the_fault_whose_proxy_does_not_exist() -> None:
    control = FakeControl(time.monotonic, proxies=("payments",))
    timeline = FaultTimeline(FAULTS, control)
    with pytest.raises(ScenarioError, match=r"faults\[2\]\.target='search'.*'payments'"):
        timeline.check()


def test_the_thread_applies_changes_within_50ms_of_plan() -> None:
    faults = (
        FaultSpec(
            at_s=0.1, duration_s=0.2, target="payments", kind="latency", params={"latency_s": 0.1}
        ),
        FaultSpec(at_s=0.25, duration_s=0.1, target="search", kind="down"),
    )
    control = FakeControl(time.monotonic)
    timeline = FaultTimeline(faults, control)
    t0 = time.monotonic()
    timeline.start(t0)
    done = threading.Event()
    done.wait(0.5)
    records = timeline.stop()
    for record in records:
        assert abs(record["started_s"] - record["at_s"]) < 0.05
        assert abs(record["ended_s"] - (record["at_s"] + record["duration_s"])) < 0.05
    assert [c[1] for c in control.calls] == [
        "add_toxic",
        "set_enabled",
        "remove_toxic",
        "set_enabled",
    ]
