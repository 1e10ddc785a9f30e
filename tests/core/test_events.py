from __future__ import annotations

import logging

import pytest

from brownout.events import CallRejected, Events


def test_events_are_falsy_without_subscribers_and_truthy_with() -> None:
    events = Events()
    assert not events
    undo = events.subscribe(lambda e: None)
    assert events
    undo()
    assert not events


def test_every_subscriber_receives_the_event() -> None:
    events = Events()
    a: list[object] = []
    b: list[object] = []
    events.subscribe(a.append)
    events.subscribe(b.append)
    ev = CallRejected(1.0, "breaker", "circuit_open")
    events.emit(ev)
    assert a == [ev]
    assert b == [ev]


def test_a_failing_subscriber_is_logged_and_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = Events()
    got: list[object] = []

    def broken(event: object) -> None:
        raise RuntimeError("exporter bug")

    events.subscribe(broken)
    events.subscribe(got.append)
    with caplog.at_level(logging.ERROR, logger="brownout.events"):
        events.emit(CallRejected(0.0, "p", "x"))
    assert len(got) == 1
    assert "exporter bug" in caplog.text


def test_events_are_immutable_and_typed() -> None:
    ev = CallRejected(1.0, "bulkhead", "bulkhead_full")
    with pytest.raises(AttributeError):
        ev.reason = "other"  # type: ignore[misc]
    assert ev.at == 1.0
    assert ev.policy == "bulkhead"
