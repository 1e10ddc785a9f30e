from __future__ import annotations

import asyncio
import itertools
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brownout.errors import BulkheadFull, CircuitOpen, InvalidConfig
from brownout.events import CallRejected, CircuitStateChanged, Event
from brownout.guard import Pipeline
from brownout.guard._breaker import BreakerMachine, CircuitBreaker
from brownout.guard._policy import Call, run_async_call, run_sync_call
from brownout.testing import MockClock


class Boom(Exception):
    pass


@dataclass
class Response:
    status_code: int


@dataclass
class AioResponse:
    status: int


def make(**kw: Any) -> tuple[CircuitBreaker, MockClock, list[Event]]:
    """A small breaker on a MockClock: 10-call window, trips at 50% over >= 4 calls."""
    clock = kw.pop("clock", None) or MockClock()
    config: dict[str, Any] = {
        "window_size": 10,
        "minimum_calls": 4,
        "failure_rate": 0.5,
        "open_s": 10.0,
        "half_open_calls": 2,
        **kw,
    }
    breaker = CircuitBreaker(clock=clock, **config)
    events: list[Event] = []
    breaker.events.subscribe(events.append)
    return breaker, clock, events


def ok(breaker: CircuitBreaker) -> str:
    return breaker.call(lambda: "ok")


def fail(breaker: CircuitBreaker) -> None:
    def boom() -> None:
        raise Boom

    with pytest.raises(Boom):
        breaker.call(boom)


def slow(
    breaker: CircuitBreaker, clock: MockClock, seconds: float, *, failed: bool = False
) -> None:
    def work() -> str:
        clock.advance(seconds)
        if failed:
            raise Boom
        return "ok"

    if failed:
        with pytest.raises(Boom):
            breaker.call(work)
    else:
        breaker.call(work)


def changes(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.old, e.new) for e in events if isinstance(e, CircuitStateChanged)]


def trip(breaker: CircuitBreaker) -> None:
    """Open a breaker made by make(): 4 failures."""
    for _ in range(4):
        fail(breaker)
    assert breaker.state == "open"


# -- configuration ---------------------------------------------------------------------


def test_defaults_follow_resilience4j_except_open_s() -> None:
    b = CircuitBreaker()
    assert (b.window, b.window_size, b.minimum_calls) == ("count", 100, 100)
    assert (b.failure_rate, b.slow_call_rate, b.slow_call_s) == (0.5, 1.0, 60.0)
    assert (b.half_open_calls, b.open_s, b.open_growth) == (10, 30.0, 1.0)
    assert b.half_open_max_s is None
    assert b.state == "closed"


def test_repr_shows_config_and_not_state() -> None:
    text = repr(CircuitBreaker(window="time", window_size=30, name="db"))
    assert text.startswith("CircuitBreaker(")
    assert "window='time'" in text
    assert "window_size=30" in text
    assert "failure_statuses=range(500, 600)" in text
    assert "name='db'" in text
    assert "_state" not in text
    assert "clock" not in text


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("window", "sliding"),
        ("window_size", 0),
        ("window_size", 2.5),
        ("minimum_calls", 0),
        ("failure_rate", 0),
        ("failure_rate", 1.5),
        ("failure_rate", float("nan")),
        ("slow_call_rate", -0.1),
        ("slow_call_s", 0),
        ("open_s", -1),
        ("open_s", float("inf")),
        ("open_growth", 0.5),
        ("max_open_s", 0),
        ("half_open_calls", 0),
        ("half_open_calls", True),
        ("half_open_max_s", -2),
        ("failure_on", "ValueError"),
        ("ignore_on", 3),
        ("failure_statuses", [200, 700]),
        ("failure_if", 5),
        ("failure_if_result", "yes"),
    ],
)
def test_invalid_config_names_the_argument_and_value(name: str, value: object) -> None:
    with pytest.raises(InvalidConfig) as info:
        CircuitBreaker(**{name: value})
    assert info.value.owner == "CircuitBreaker"
    assert info.value.name == name
    assert name in str(info.value)
    assert isinstance(info.value, ValueError)


def test_max_open_s_below_open_s_is_refused() -> None:
    with pytest.raises(InvalidConfig) as info:
        CircuitBreaker(open_s=60, max_open_s=30)
    assert info.value.name == "max_open_s"
    assert "open_s" in info.value.allowed


def test_slow_call_s_may_be_infinite_to_disable_slow_calls() -> None:
    b, clock, _ = make(slow_call_s=float("inf"), slow_call_rate=0.5)
    for _ in range(4):
        slow(b, clock, 1e9)
    assert b.state == "closed"
    assert b.machine.slow_call_rate == 0.0


# -- closed -> open --------------------------------------------------------------------


def test_opens_when_failure_rate_reaches_threshold() -> None:
    b, clock, events = make()
    clock.advance(5)
    ok(b)
    ok(b)
    fail(b)
    assert b.state == "closed"
    fail(b)  # 2 of 4 = 0.5 >= 0.5
    assert b.state == "open"
    assert b.until == 15.0
    [change] = [e for e in events if isinstance(e, CircuitStateChanged)]
    assert (change.old, change.new, change.until, change.at) == ("closed", "open", 15.0, 5.0)
    assert change.failure_rate == 0.5
    assert change.slow_call_rate == 0.0
    assert change.policy == "breaker"


def test_stays_closed_below_the_failure_threshold() -> None:
    b, _, _ = make()
    for _ in range(3):
        ok(b)
    fail(b)
    assert b.state == "closed"
    assert b.machine.failure_rate == 0.25


def test_does_not_open_before_minimum_calls() -> None:
    b, _, _ = make(minimum_calls=5)
    for _ in range(4):
        fail(b)
    assert b.state == "closed"
    assert b.machine.failure_rate == -1.0
    fail(b)
    assert b.state == "open"


def test_success_that_reaches_minimum_calls_opens_when_rate_already_high() -> None:
    b, _, _ = make()
    for _ in range(3):
        fail(b)
    ok(b)  # 3 of 4 failed, and the window now holds minimum_calls outcomes
    assert b.state == "open"


def test_minimum_calls_above_a_count_window_is_capped_at_its_size() -> None:
    b, _, _ = make(window_size=4, minimum_calls=100)
    for _ in range(4):
        fail(b)
    assert b.state == "open"


def test_opens_when_slow_call_rate_reaches_threshold() -> None:
    b, clock, events = make(slow_call_s=1.0, slow_call_rate=0.5)
    ok(b)
    ok(b)
    slow(b, clock, 2.0)
    assert b.state == "closed"
    slow(b, clock, 2.0)
    assert b.state == "open"
    [change] = [e for e in events if isinstance(e, CircuitStateChanged)]
    assert change.slow_call_rate == 0.5
    assert change.failure_rate == 0.0


def test_a_call_of_exactly_slow_call_s_is_not_slow() -> None:
    b, clock, _ = make(slow_call_s=1.0, slow_call_rate=0.5)
    for _ in range(4):
        slow(b, clock, 1.0)
    assert b.state == "closed"
    assert b.machine.slow_call_rate == 0.0


def test_a_slow_failure_counts_as_failure_and_as_slow() -> None:
    b, clock, _ = make(failure_rate=1.0, slow_call_s=1.0, minimum_calls=1, window_size=4)
    b.force_close()  # record without opening, to read both rates
    slow(b, clock, 5.0, failed=True)
    ok(b)
    assert b.machine.failure_rate == 0.5
    assert b.machine.slow_call_rate == 0.5


# -- open ------------------------------------------------------------------------------


def test_open_rejects_with_circuit_open_carrying_until_and_state() -> None:
    b, clock, events = make(name="payments")
    trip(b)
    calls: list[int] = []
    clock.advance(3)
    with pytest.raises(CircuitOpen) as info:
        b.call(calls.append, 1)
    assert calls == []
    assert info.value.until == 10.0
    assert info.value.state == "open"
    assert info.value.policy == "payments"
    rejected = [e for e in events if isinstance(e, CallRejected)]
    assert [(e.at, e.policy, e.reason) for e in rejected] == [(3.0, "payments", "circuit_open")]


def test_open_rejects_until_the_instant_until() -> None:
    b, clock, _ = make()
    trip(b)
    clock.advance(9.999)
    with pytest.raises(CircuitOpen):
        ok(b)
    clock.advance(0.001)
    assert ok(b) == "ok"


def test_open_turns_half_open_lazily_when_a_call_arrives() -> None:
    b, clock, events = make()
    trip(b)
    clock.advance(60)
    assert b.state == "open"  # nothing happened yet: no timer
    assert changes(events) == [("closed", "open")]
    ok(b)
    assert changes(events)[1] == ("open", "half_open")
    half = [e for e in events if isinstance(e, CircuitStateChanged)][1]
    assert half.at == 60.0
    assert half.until is None


def test_tick_applies_the_due_transition_without_admitting_a_call() -> None:
    b, clock, _ = make()
    trip(b)
    assert b.machine.tick(clock.now()) == "open"
    clock.advance(10)
    assert b.machine.tick(clock.now()) == "half_open"
    assert b.machine.probes_running == 0


# -- half-open -------------------------------------------------------------------------


def test_successful_probes_close_and_clear_the_window() -> None:
    b, clock, events = make()
    trip(b)
    clock.advance(10)
    ok(b)
    assert b.state == "half_open"
    ok(b)
    assert b.state == "closed"
    assert b.until is None
    assert b.machine.calls == 0
    last = [e for e in events if isinstance(e, CircuitStateChanged)][-1]
    assert (last.old, last.new, last.failure_rate) == ("half_open", "closed", 0.0)


def test_failing_probes_reopen() -> None:
    b, clock, events = make()
    trip(b)
    clock.advance(10)
    ok(b)
    fail(b)  # 1 of 2 probes failed: 0.5 >= 0.5
    assert b.state == "open"
    assert b.until == 20.0
    last = [e for e in events if isinstance(e, CircuitStateChanged)][-1]
    assert (last.old, last.new, last.failure_rate) == ("half_open", "open", 0.5)


def test_slow_probes_reopen() -> None:
    b, clock, _ = make(slow_call_s=1.0, slow_call_rate=0.5)
    trip(b)
    clock.advance(10)
    ok(b)
    slow(b, clock, 3.0)
    assert b.state == "open"


def test_half_open_refuses_calls_while_all_probes_run() -> None:
    b, clock, events = make()
    trip(b)
    clock.advance(10)
    with b, b, pytest.raises(CircuitOpen) as info:  # two probes in flight
        ok(b)
    assert info.value.state == "half_open"
    assert info.value.until is None
    assert b.state == "closed"
    assert sum(isinstance(e, CallRejected) for e in events) == 1


def test_open_duration_grows_on_consecutive_reopens_and_is_capped() -> None:
    b, clock, _ = make(
        minimum_calls=1, failure_rate=1.0, half_open_calls=1, open_growth=2.0, max_open_s=25.0
    )
    fail(b)
    durations = [b.until - clock.now()]  # type: ignore[operator]
    for _ in range(3):
        clock.jump_to(b.until)  # type: ignore[arg-type]
        fail(b)  # the single probe fails: re-open
        durations.append(b.until - clock.now())  # type: ignore[operator]
    assert durations == [10.0, 20.0, 25.0, 25.0]


def test_closing_resets_the_grown_open_duration() -> None:
    b, clock, _ = make(minimum_calls=1, failure_rate=1.0, half_open_calls=1, open_growth=3.0)
    fail(b)
    clock.jump_to(b.until)  # type: ignore[arg-type]
    fail(b)
    assert b.until == clock.now() + 30.0
    clock.jump_to(b.until)  # type: ignore[arg-type]
    ok(b)
    assert b.state == "closed"
    fail(b)
    assert b.until == clock.now() + 10.0


def test_default_cap_is_ten_times_open_s() -> None:
    b, clock, _ = make(minimum_calls=1, failure_rate=1.0, half_open_calls=1, open_growth=100.0)
    fail(b)
    clock.jump_to(b.until)  # type: ignore[arg-type]
    fail(b)
    assert b.until == clock.now() + 100.0


def test_half_open_max_s_reopens_a_breaker_stuck_on_hung_probes() -> None:
    b, clock, events = make(half_open_max_s=5.0)
    trip(b)
    clock.advance(10)
    m = b.machine
    hung = m.try_acquire(clock.now())
    assert hung is not None
    clock.advance(4.9)
    assert m.try_acquire(clock.now()) is not None  # second probe slot
    clock.advance(0.1)
    with pytest.raises(CircuitOpen) as info:
        ok(b)
    assert info.value.state == "open"
    assert changes(events)[-1] == ("half_open", "open")
    assert b.until == clock.now() + 10.0
    m.record(hung, clock.now(), 5.0, False)  # the hung probe ends late: dropped
    assert b.state == "open"


def test_tick_reopens_after_half_open_max_s() -> None:
    b, clock, _ = make(half_open_max_s=5.0)
    trip(b)
    clock.advance(10)
    assert b.machine.tick(clock.now()) == "half_open"
    clock.advance(5)
    assert b.machine.tick(clock.now()) == "open"


def test_outcome_admitted_while_closed_does_not_count_in_half_open() -> None:
    b, clock, _ = make()
    m = b.machine
    old = m.try_acquire(clock.now())  # admitted while closed, finishes much later
    assert old is not None
    trip(b)
    clock.advance(10)
    ok(b)  # first probe
    m.record(old, clock.now(), 10.0, True)  # a late failure from the closed era
    assert m.probes_done == 1
    assert m.probe_failures == 0
    ok(b)
    assert b.state == "closed"


def test_outcome_from_before_closing_does_not_enter_the_fresh_window() -> None:
    b, clock, _ = make()
    m = b.machine
    trip(b)
    clock.advance(10)
    probe = m.try_acquire(clock.now())
    assert probe is not None
    ok(b)
    m.record(probe, clock.now(), 0.0, False)
    assert b.state == "closed"
    m.record(probe, clock.now(), 0.0, True)  # replayed: stale
    assert m.calls == 0


def test_released_probe_frees_its_slot_without_counting() -> None:
    b, clock, _ = make()
    trip(b)
    clock.advance(10)
    m = b.machine
    p1 = m.try_acquire(clock.now())
    p2 = m.try_acquire(clock.now())
    assert p1 is not None
    assert p2 is not None
    assert m.try_acquire(clock.now()) is None
    m.record(p1, clock.now(), 0.0, None)
    assert m.probes_done == 0
    p3 = m.try_acquire(clock.now())
    assert p3 is not None
    m.record(p2, clock.now(), 0.0, False)
    m.record(p3, clock.now(), 0.0, False)
    assert b.state == "closed"


# -- manual control --------------------------------------------------------------------


def test_force_open_rejects_without_until_and_ignores_time() -> None:
    b, clock, events = make()
    b.force_open()
    clock.advance(1e6)
    with pytest.raises(CircuitOpen) as info:
        ok(b)
    assert info.value.state == "forced_open"
    assert info.value.until is None
    assert b.state == "forced_open"
    assert changes(events) == [("closed", "forced_open")]


def test_force_close_admits_everything_and_never_opens() -> None:
    b, _, events = make()
    b.force_close()
    for _ in range(10):
        fail(b)
    assert b.state == "forced_closed"
    assert b.machine.failure_rate == 1.0  # outcomes still counted for reading
    assert changes(events) == [("closed", "forced_closed")]


def test_force_close_admits_while_open() -> None:
    b, _, events = make()
    trip(b)
    b.force_close()
    assert ok(b) == "ok"
    assert changes(events)[-1] == ("open", "forced_closed")


def test_reset_returns_to_closed_with_an_empty_window() -> None:
    b, clock, events = make(minimum_calls=1, failure_rate=1.0, half_open_calls=1, open_growth=2.0)
    fail(b)
    clock.jump_to(b.until)  # type: ignore[arg-type]
    fail(b)  # re-opened for 20 s
    b.reset()
    assert b.state == "closed"
    assert b.until is None
    assert b.machine.calls == 0
    assert changes(events)[-1] == ("open", "closed")
    fail(b)
    assert b.until == clock.now() + 10.0  # growth forgotten


def test_reset_drops_outcomes_of_calls_admitted_before_it() -> None:
    b, clock, _ = make()
    m = b.machine
    permit = m.try_acquire(clock.now())
    assert permit is not None
    b.reset()
    m.record(permit, clock.now(), 0.0, True)
    assert m.calls == 0


def test_repeated_force_ops_emit_one_event_each() -> None:
    b, _, events = make()
    b.force_open()
    b.force_open()
    b.force_close()
    b.force_close()
    b.reset()
    b.reset()
    assert changes(events) == [
        ("closed", "forced_open"),
        ("forced_open", "forced_closed"),
        ("forced_closed", "closed"),
    ]


def test_subscribers_may_read_and_steer_the_breaker_from_an_event() -> None:
    b, clock, events = make()
    seen: list[tuple[str, tuple[float, float]]] = []

    def steer(event: Event) -> None:
        if isinstance(event, CircuitStateChanged):
            seen.append((b.state, b.machine.rates(clock.now())))
            if event.new == "half_open":
                b.force_open()

    b.events.subscribe(steer)
    trip(b)
    clock.advance(10)
    with pytest.raises(CircuitOpen) as info:
        ok(b)
    assert info.value.state == "forced_open"
    assert changes(events)[-2:] == [("open", "half_open"), ("half_open", "forced_open")]
    assert seen[0] == ("open", (1.0, 0.0))


# -- classification --------------------------------------------------------------------


def test_ignore_on_is_neither_success_nor_failure() -> None:
    b, _, _ = make()

    def full() -> None:
        raise BulkheadFull(policy="pool", max_concurrent=1, max_queue=0, waited_s=0)

    for _ in range(5):
        with pytest.raises(BulkheadFull):
            b.call(full)
    assert b.machine.calls == 0
    assert b.state == "closed"


def test_custom_ignore_on() -> None:
    b, _, _ = make(ignore_on=(KeyError,))
    with pytest.raises(KeyError):
        b.call({}.__getitem__, "x")
    assert b.machine.calls == 0


def test_ignored_exception_in_half_open_frees_the_probe_slot() -> None:
    b, clock, _ = make(ignore_on=(KeyError,), half_open_calls=1)
    trip(b)
    clock.advance(10)
    with pytest.raises(KeyError):
        b.call({}.__getitem__, "x")
    assert b.state == "half_open"
    ok(b)
    assert b.state == "closed"


def test_exception_outside_failure_on_counts_as_success() -> None:
    b, _, _ = make(failure_on=ValueError)
    for _ in range(4):
        with pytest.raises(KeyError):
            b.call({}.__getitem__, "x")
    assert b.machine.failure_rate == 0.0
    for _ in range(4):
        with pytest.raises(ValueError):
            b.call(int, "x")
    assert b.state == "open"


def test_failure_if_predicate_selects_exceptions() -> None:
    b, _, _ = make(failure_if=lambda exc: "fatal" in str(exc))

    def raise_(message: str) -> None:
        raise Boom(message)

    for _ in range(4):
        with pytest.raises(Boom):
            b.call(raise_, "benign")
    assert b.machine.failure_rate == 0.0
    for _ in range(4):
        with pytest.raises(Boom):
            b.call(raise_, "fatal")
    assert b.state == "open"


def test_results_with_a_failure_status_count_as_failures() -> None:
    b, _, _ = make()
    assert b.call(Response, 404).status_code == 404
    b.call(Response, 200)
    b.call(AioResponse, 503)
    assert b.state == "closed"
    b.call(Response, 500)
    assert b.state == "open"


def test_custom_failure_statuses_and_result_predicate() -> None:
    b, _, _ = make(failure_statuses={429}, failure_if_result=lambda r: r == "bad")
    b.call(Response, 500)
    b.call(Response, 429)
    b.call(lambda: "bad")
    b.call(lambda: "good")
    assert b.machine.failure_rate == 0.5


def test_a_raising_classifier_propagates_and_frees_the_probe_slot() -> None:
    def broken(_: object) -> bool:
        raise RuntimeError("classifier bug")

    b, clock, _ = make(half_open_calls=1, failure_if=broken, failure_if_result=broken)
    m = b.machine
    for _ in range(4):  # trip it through the sans-IO core: the classifiers cannot
        permit = m.try_acquire(clock.now())
        assert permit is not None
        m.record(permit, clock.now(), 0.0, True)
    assert b.state == "open"
    clock.advance(10)
    with pytest.raises(RuntimeError, match="classifier bug"):
        b.call(_raise_boom)
    with pytest.raises(RuntimeError, match="classifier bug"):
        b.call(Response, 200)
    assert b.state == "half_open"
    assert m.probes_running == 0
    assert m.probes_done == 0


def test_base_exceptions_are_never_counted() -> None:
    b, _, _ = make()

    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        b.call(interrupt)
    assert b.machine.calls == 0


# -- windows ---------------------------------------------------------------------------


def test_count_window_evicts_the_oldest_outcome() -> None:
    b, _, _ = make(window_size=4, minimum_calls=4, failure_rate=0.75)
    fail(b)
    fail(b)
    ok(b)
    ok(b)
    assert b.machine.failure_rate == 0.5
    ok(b)  # evicts the first failure
    assert b.machine.failure_rate == 0.25
    ok(b)
    assert b.machine.failure_rate == 0.0
    assert b.machine.calls == 4


def test_time_window_forgets_outcomes_older_than_its_size() -> None:
    b, clock, _ = make(window="time", window_size=10, minimum_calls=2, failure_rate=1.0)
    fail(b)
    ok(b)
    assert b.machine.rates(clock.now()) == (0.5, 0.0)
    clock.advance(9.5)
    assert b.machine.rates(clock.now()) == (0.5, 0.0)
    clock.advance(0.5)  # second 0 left the window [1, 10]
    assert b.machine.rates(clock.now()) == (-1.0, -1.0)
    assert b.machine.calls == 0


def test_time_window_opens_when_successes_age_out() -> None:
    b, clock, _ = make(window="time", window_size=10, minimum_calls=2, failure_rate=0.5)
    for _ in range(3):
        ok(b)
    clock.advance(5)
    fail(b)
    assert b.state == "closed"  # 1 of 4
    clock.advance(5.5)  # the three successes age out
    ok(b)
    assert b.state == "open"  # 1 of 2 = 0.5


def test_time_window_after_a_long_gap_starts_empty() -> None:
    b, clock, _ = make(window="time", window_size=5, minimum_calls=1, failure_rate=1.0)
    ok(b)
    clock.advance(1e6)
    ok(b)
    assert b.machine.calls == 1


def test_time_window_counts_within_one_second_bucket() -> None:
    b, clock, _ = make(window="time", window_size=3, minimum_calls=4)
    clock.advance(100.2)
    ok(b)
    clock.advance(0.5)
    fail(b)
    clock.advance(1.0)
    ok(b)
    fail(b)
    assert b.machine.calls == 4
    assert b.state == "open"


# -- adapters --------------------------------------------------------------------------


def test_sync_decorator_keeps_the_function_and_counts_outcomes() -> None:
    b, _, _ = make()

    @b
    def div(a: int, c: int) -> float:
        return a / c

    assert div.__name__ == "div"
    assert div(6, c=3) == 2.0
    for _ in range(3):
        with pytest.raises(ZeroDivisionError):
            div(1, 0)
    assert b.state == "open"  # 3 of 4 failed
    with pytest.raises(CircuitOpen):
        div(6, 3)


def test_with_block_that_raises_counts_as_failure() -> None:
    b, _, _ = make()
    for _ in range(4):
        with pytest.raises(Boom), b:
            raise Boom
    assert b.state == "open"
    entered = []
    with pytest.raises(CircuitOpen), b:
        entered.append(1)
    assert entered == []


def test_with_block_measures_slow_calls() -> None:
    b, clock, _ = make(slow_call_s=1.0, slow_call_rate=1.0)
    for _ in range(4):
        with b:
            clock.advance(2)
    assert b.state == "open"


def test_breaker_in_a_pipeline_counts_what_it_wraps() -> None:
    b, _, _ = make()
    pipeline = Pipeline([b])

    async def aboom() -> None:
        raise Boom

    assert pipeline.call(lambda: 1) == 1
    with pytest.raises(Boom):
        pipeline.call(_raise_boom)
    with pytest.raises(Boom):
        asyncio.run(pipeline.acall(aboom))
    assert b.machine.calls == 3
    assert b.machine.failures == 2
    with pytest.raises(Boom):
        pipeline.call(_raise_boom)
    assert b.state == "open"
    with pytest.raises(CircuitOpen):
        pipeline.call(lambda: 1)


def test_pipeline_hooks_run_the_next_step() -> None:
    b, _, _ = make()
    assert b._run(run_sync_call, Call(lambda x: x + 1, (1,), {})) == 2

    async def add(x: int) -> int:
        return x + 2

    assert asyncio.run(b._arun(run_async_call, Call(add, (1,), {}))) == 3
    assert b.machine.calls == 2


def test_async_call_decorator_and_async_with() -> None:
    async def main() -> None:
        b, _, _ = make()

        async def boom() -> None:
            raise Boom

        @b
        async def double(x: int) -> int:
            await asyncio.sleep(0)
            return 2 * x

        assert await b.acall(double.__wrapped__, 2) == 4  # type: ignore[attr-defined]
        assert await double(3) == 6
        with pytest.raises(Boom):
            await b.acall(boom)
        async with b:
            pass
        for _ in range(2):
            with pytest.raises(Boom):
                async with b:
                    raise Boom
        # 3 failures of 6 calls
        assert b.machine.failure_rate == 0.5
        assert b.state == "open"
        with pytest.raises(CircuitOpen):
            await double(1)

    asyncio.run(main())


def test_async_slow_calls_are_measured_on_the_breaker_clock() -> None:
    async def main() -> None:
        clock = MockClock(autojump=True)
        b, _, _ = make(clock=clock, slow_call_s=1.0, slow_call_rate=1.0)

        async def crawl() -> str:
            await clock.asleep(1.5)
            return "late"

        for _ in range(4):
            assert await b.acall(crawl) == "late"
        assert b.state == "open"

    asyncio.run(main())


def test_cancelled_probe_releases_its_slot_without_counting() -> None:
    async def main() -> None:
        b, clock, _ = make(half_open_calls=1)
        trip(b)
        clock.advance(10)
        started = asyncio.Event()

        async def hang() -> None:
            started.set()
            await asyncio.Event().wait()

        task = asyncio.create_task(b.acall(hang))
        await started.wait()
        with pytest.raises(CircuitOpen):
            await b.acall(asyncio.sleep, 0)  # the only probe slot is taken
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert b.state == "half_open"
        assert b.machine.probes_done == 0
        await b.acall(asyncio.sleep, 0)  # the slot is free again; this probe closes it
        assert b.state == "closed"

    asyncio.run(main())


# -- concurrency -----------------------------------------------------------------------


def test_half_open_admits_exactly_n_concurrent_probes_across_tasks() -> None:
    async def main() -> None:
        b, clock, _ = make(half_open_calls=3)
        trip(b)
        clock.advance(10)
        release = asyncio.Event()
        inside: list[int] = []

        async def probe(i: int) -> int:
            inside.append(i)
            await release.wait()
            return i

        tasks = [asyncio.create_task(b.acall(probe, i)) for i in range(10)]
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(inside) == 3
        release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        refused = [r for r in results if isinstance(r, CircuitOpen)]
        assert len(refused) == 7
        assert all(r.state == "half_open" for r in refused)
        assert sorted(r for r in results if isinstance(r, int)) == sorted(inside)
        assert b.state == "closed"

    asyncio.run(main())


@pytest.fixture
def busy_switching() -> Iterator[None]:
    """Switch threads as often as CPython allows, so that races show up."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


@pytest.mark.usefixtures("busy_switching")
def test_threads_lose_no_outcome() -> None:
    b, _, _ = make(window_size=10_000, minimum_calls=10_000, failure_rate=1.0)
    threads_n, per_thread = 8, 400
    start = threading.Barrier(threads_n)

    def worker() -> None:
        start.wait()
        for i in range(per_thread):
            if i % 2:
                ok(b)
            else:
                with pytest.raises(Boom):
                    b.call(_raise_boom)

    threads = [threading.Thread(target=worker) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert b.machine.calls == threads_n * per_thread
    assert b.machine.failures == threads_n * per_thread // 2
    assert b.state == "closed"


def _raise_boom() -> None:
    raise Boom


@pytest.mark.usefixtures("busy_switching")
def test_threads_lose_no_success_on_the_lock_free_path() -> None:
    b, _, _ = make(window_size=1000, minimum_calls=1000)
    b.force_close()
    for _ in range(1000):  # a full window of failures, kept from opening
        fail(b)
    threads_n, per_thread = 8, 50
    start = threading.Barrier(threads_n)

    def worker() -> None:
        start.wait()
        for _ in range(per_thread):
            ok(b)

    threads = [threading.Thread(target=worker) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert b.machine.calls == 1000
    assert b.machine.failures == 1000 - threads_n * per_thread


def test_lock_free_successes_keep_the_count_window_in_order() -> None:
    b, _, _ = make(window_size=4, minimum_calls=4)
    b.force_close()
    for _ in range(4):
        fail(b)  # [F F F F], full: later successes are counted lock-free
    for _ in range(3):
        ok(b)
    fail(b)  # the three successes come first: [ok ok ok F]
    ok(b)  # evicts the oldest success, not the failure: [ok ok F ok]
    assert b.machine.failures == 1
    assert b.machine.calls == 4


def test_probes_after_a_full_window_are_counted_as_probes() -> None:
    b, clock, _ = make(window_size=4, minimum_calls=4)
    for _ in range(4):
        fail(b)
    assert b.state == "open"
    clock.advance(10)
    ok(b)
    ok(b)
    assert b.state == "closed"


def test_slow_successes_into_a_full_window_are_slow() -> None:
    b, clock, _ = make(window_size=4, minimum_calls=4, slow_call_s=1.0, slow_call_rate=0.5)
    for _ in range(4):
        ok(b)
    slow(b, clock, 2.0)
    assert b.state == "closed"
    slow(b, clock, 2.0)
    assert b.state == "open"


def test_successes_after_reset_fill_the_new_window() -> None:
    b, _, _ = make(window_size=4, minimum_calls=4)
    for _ in range(6):
        ok(b)
    b.reset()
    ok(b)
    ok(b)
    assert b.machine.calls == 2


@pytest.mark.usefixtures("busy_switching")
def test_racing_failures_open_the_breaker_once() -> None:
    b, clock, events = make(minimum_calls=1, failure_rate=1.0)
    m = b.machine
    threads_n, rounds = 8, 200

    def slow_subscriber(event: Event) -> None:
        for _ in range(50):  # give other threads a chance to run mid-transition
            pass

    b.events.subscribe(slow_subscriber)
    for _ in range(rounds):
        b.reset()
        permits = [m.try_acquire(clock.now()) for _ in range(threads_n)]
        start = threading.Barrier(threads_n)

        def worker(permit: int | None, start: threading.Barrier) -> None:
            start.wait()
            assert permit is not None
            m.record(permit, clock.now(), 0.0, True)

        threads = [threading.Thread(target=worker, args=(p, start)) for p in permits]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
    opened = [e for e in events if isinstance(e, CircuitStateChanged) and e.new == "open"]
    assert len(opened) == rounds
    assert all(e.old == "closed" for e in opened)


@pytest.mark.usefixtures("busy_switching")
def test_half_open_admits_exactly_n_probes_across_threads() -> None:
    b, clock, _ = make(half_open_calls=3)
    trip(b)
    clock.advance(10)
    threads_n = 8
    gate = threading.Event()
    start = threading.Barrier(threads_n)
    admitted: list[int] = []
    refused: list[CircuitOpen] = []
    decided = threading.Condition()

    def probe(i: int) -> None:
        with decided:
            admitted.append(i)
            decided.notify_all()
        gate.wait(timeout=10)

    def worker(i: int) -> None:
        start.wait()
        try:
            b.call(probe, i)
        except CircuitOpen as exc:
            with decided:
                refused.append(exc)
                decided.notify_all()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    with decided:
        assert decided.wait_for(lambda: len(admitted) + len(refused) == threads_n, timeout=10)
    gate.set()
    for t in threads:
        t.join(timeout=10)
    assert len(admitted) == 3
    assert len(refused) == 5
    assert b.state == "closed"


# -- properties ------------------------------------------------------------------------

# Starts outnumber finishes so that probes pile up in half-open; manual ops are rare.
OP_NAMES = ["start"] * 8 + ["ok"] * 3 + ["fail"] * 4 + ["slow"] * 2 + ["advance"] * 4
OP_NAMES += ["ignore", "tick", "manual"]
OPS = st.lists(st.tuples(st.sampled_from(OP_NAMES), st.integers(0, 20)), min_size=30, max_size=150)
MANUAL = ("force_open", "force_close", "reset")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=OPS,
    half_open_calls=st.integers(1, 4),
    window=st.sampled_from(["count", "time"]),
    window_size=st.integers(3, 6),
    half_open_max_s=st.one_of(st.none(), st.floats(1, 20)),
    open_growth=st.floats(1, 3),
    manual_ops=st.booleans(),
)
def test_machine_never_skips_half_open_nor_over_admits_probes(
    *,
    ops: list[tuple[str, int]],
    half_open_calls: int,
    window: str,
    window_size: int,
    half_open_max_s: float | None,
    open_growth: float,
    manual_ops: bool,
) -> None:
    b = CircuitBreaker(
        window=window,
        window_size=window_size,
        minimum_calls=3,
        failure_rate=0.5,
        slow_call_rate=0.5,
        slow_call_s=1.0,
        open_s=5.0,
        open_growth=open_growth,
        max_open_s=40.0,
        half_open_calls=half_open_calls,
        half_open_max_s=half_open_max_s,
    )
    m: BreakerMachine = b.machine
    seen: list[CircuitStateChanged] = []
    manual = [False]
    bad: list[CircuitStateChanged] = []

    def watch(event: Event) -> None:
        assert isinstance(event, CircuitStateChanged)
        if seen:
            assert event.old == seen[-1].new
        if event.old == "open" and event.new == "closed" and not manual[0]:
            bad.append(event)
        if event.new == "open":
            assert event.until is not None
            assert event.until > event.at
        seen.append(event)

    b.events.subscribe(watch)
    now = 0.0
    running: list[tuple[int, float]] = []  # (permit, started at)
    for op, arg in ops:
        if op == "advance":
            now += arg / 2
        elif op == "start":
            permit = m.try_acquire(now)
            if permit is not None:
                running.append((permit, now))
        elif op in ("ok", "fail", "slow", "ignore"):
            if running:
                permit, started = running.pop(arg % len(running))
                duration = now - started + (2.0 if op == "slow" else 0.0)
                failed = None if op == "ignore" else op == "fail"
                m.record(permit, now, duration, failed)
        elif op == "tick":
            m.tick(now)
        elif manual_ops:
            manual[0] = True
            getattr(m, MANUAL[arg % 3])(now)
            manual[0] = False
        probes = sum(1 for p, _ in running if p == m.generation) if m.state == "half_open" else 0
        assert probes == m.probes_running
        assert m.probes_running + m.probes_done <= half_open_calls
        assert (m.until is not None) == (m.state == "open")
        assert 0 <= m.failures <= m.calls
        assert 0 <= m.slow_calls <= m.calls
    assert bad == []


@settings(max_examples=100, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("advance"), st.floats(0, 20)),
            st.tuples(st.sampled_from(["ok", "fail", "slow", "rejected"]), st.just(0.0)),
        ),
        min_size=20,
        max_size=150,
    ),
    window=st.sampled_from(["count", "time"]),
)
def test_breaker_calls_only_leave_open_through_half_open(
    ops: list[tuple[str, float]], window: str
) -> None:
    b, clock, events = make(window=window, slow_call_s=1.0, slow_call_rate=0.5, half_open_max_s=8)

    def rejected() -> None:
        raise BulkheadFull(policy="pool", max_concurrent=1, max_queue=0, waited_s=0)

    refusals: list[tuple[str, float | None, float]] = []
    for op, arg in ops:
        try:
            if op == "advance":
                clock.advance(arg)
            elif op == "ok":
                ok(b)
            elif op == "fail":
                fail(b)
            elif op == "slow":
                slow(b, clock, 2.0)
            else:
                with pytest.raises(BulkheadFull):
                    b.call(rejected)
        except CircuitOpen as exc:
            refusals.append((exc.state, exc.until, clock.now()))
    for state, until, at in refusals:
        assert state in ("open", "half_open")
        assert (until is None) == (state == "half_open")
        assert until is None or until > at
    pairs = changes(events)
    assert ("open", "closed") not in pairs
    for (_, new), (old, _) in itertools.pairwise(pairs):
        assert new == old
    for old, new in pairs:
        if new == "closed":
            assert old == "half_open"
