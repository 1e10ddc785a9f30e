"""ConcurrencyLimit as a policy: permits, partitions, the wait queue, deadlines, events."""

from __future__ import annotations

import asyncio
import heapq
import pickle
import random
import re
import statistics
import threading
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import pytest

from brownout.errors import (
    ConcurrencyLimited,
    DeadlineExceeded,
    InvalidConfig,
    Overloaded,
    Rejected,
    Throttled,
)
from brownout.events import CallRejected, Event
from brownout.guard._criticality import Criticality, criticality
from brownout.guard._deadline import deadline
from brownout.guard._limit import (
    MIN_RETRY_AFTER_S,
    AIMDLimit,
    ConcurrencyAdmitted,
    ConcurrencyLimit,
    ConcurrencyLimitChanged,
    ConcurrencyShed,
    Gradient2Limit,
    Permit,
)
from brownout.guard._pipeline import Pipeline
from brownout.guard._retry import Retry
from brownout.guard._timeout import Timeout
from brownout.testing import MockClock

CP, C, SP, S = (
    Criticality.CRITICAL_PLUS,
    Criticality.CRITICAL,
    Criticality.SHEDDABLE_PLUS,
    Criticality.SHEDDABLE,
)


def fixed(limit: int = 1, clock: MockClock | None = None, **kwargs: Any) -> ConcurrencyLimit:
    return ConcurrencyLimit(
        algorithm="fixed", initial_limit=limit, clock=clock or MockClock(), **kwargs
    )


def aimd(limit: int = 10, clock: MockClock | None = None, **kwargs: Any) -> ConcurrencyLimit:
    return ConcurrencyLimit(
        algorithm="aimd", initial_limit=limit, clock=clock or MockClock(), **kwargs
    )


def recorder(lim: ConcurrencyLimit) -> list[Event]:
    seen: list[Event] = []
    lim.events.subscribe(seen.append)
    return seen


async def queue_one(lim: ConcurrencyLimit, **kwargs: Any) -> asyncio.Task[Permit]:
    """Start ``lim.acquire(**kwargs)`` in a task and let it join the line."""
    before = lim.queued
    task = asyncio.create_task(lim.acquire(**kwargs))
    await asyncio.sleep(0)
    assert lim.queued == before + 1
    return task


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def shed(task: asyncio.Task[Permit]) -> ConcurrencyLimited:
    assert task.done()
    exc = task.exception()
    assert isinstance(exc, ConcurrencyLimited), exc
    return exc


# -- configuration ---------------------------------------------------------------------

INT1 = "an integer >= 1"


@pytest.mark.parametrize(
    ("kwargs", "name", "value", "allowed"),
    [
        (
            {"algorithm": "cubic"},
            "algorithm",
            "'cubic'",
            "one of 'fixed', 'aimd', 'vegas', 'gradient2'",
        ),
        (
            {"algorithm": 3},
            "algorithm",
            "3",
            "one of 'fixed', 'aimd', 'vegas', 'gradient2' or a LimitAlgorithm",
        ),
        ({"min_limit": 0}, "min_limit", "0", INT1),
        (
            {"min_limit": 30},
            "initial_limit",
            "20",
            "an integer in [min_limit, max_limit] = [30, 1000]",
        ),
        (
            {"max_limit": 10},
            "initial_limit",
            "20",
            "an integer in [min_limit, max_limit] = [1, 10]",
        ),
        ({"min_limit": 5, "max_limit": 4}, "max_limit", "4", "an integer >= 5"),
        (
            {"initial_limit": 2.0},
            "initial_limit",
            "2.0",
            "an integer in [min_limit, max_limit] = [1, 1000]",
        ),
        ({"max_queue": -1}, "max_queue", "-1", "an integer >= 0"),
        ({"queue_target_s": 0}, "queue_target_s", "0", "a finite number > 0"),
        ({"queue_interval_s": float("nan")}, "queue_interval_s", "nan", "a finite number > 0"),
        ({"queue_target_s": 0.2}, "queue_target_s", "0.2", "<= queue_interval_s (0.1)"),
        ({"lifo": 1}, "lifo", "1", "True or False"),
        ({"seed": "x"}, "seed", "'x'", "an integer or None"),
        ({"shares": {C: 1.5}}, "shares[CRITICAL]", "1.5", "a number in [0, 1]"),
    ],
)
def test_invalid_config_names_argument_value_and_range(
    kwargs: dict[str, Any], name: str, value: str, allowed: str
) -> None:
    message = f"ConcurrencyLimit: {name}={value} is not allowed; {name} must be {allowed}"
    with pytest.raises(InvalidConfig, match=f"^{re.escape(message)}$") as info:
        ConcurrencyLimit(**kwargs)
    assert (info.value.owner, info.value.name) == ("ConcurrencyLimit", name)


@pytest.mark.parametrize(
    "shares", [{"critical": 0.5}, {C: 0.6, S: 0.5}, [(C, 0.5)]], ids=["key", "sum", "type"]
)
def test_shares_must_map_criticalities_to_fractions_summing_to_one_at_most(
    shares: object,
) -> None:
    with pytest.raises(InvalidConfig, match=r"shares=.* must be a mapping of Criticality"):
        ConcurrencyLimit(shares=shares)  # type: ignore[arg-type]


def test_repr_shows_the_config_and_defaults_follow_the_agreed_interface() -> None:
    lim = ConcurrencyLimit()
    assert repr(lim) == (
        "ConcurrencyLimit(algorithm='gradient2', initial_limit=20, min_limit=1, "
        "max_limit=1000, max_queue=100, queue_target_s=0.005, queue_interval_s=0.1, "
        "lifo=True, shares=None, seed=None, name='concurrency')"
    )
    assert (lim.limit, lim.in_flight, lim.queued, lim.rtt_s) == (20, 0, 0, 0.0)
    assert lim.kind == "concurrency_limit"


def test_shares_are_copied_and_the_policy_stays_hashable() -> None:
    shares = {CP: 0.2, C: 0.5}
    lim = ConcurrencyLimit(shares=shares)
    shares[S] = 0.3
    assert lim.shares == {CP: 0.2, C: 0.5}
    assert isinstance(hash(lim), int)


def test_an_algorithm_configuration_is_accepted() -> None:
    lim = ConcurrencyLimit(algorithm=AIMDLimit(timeout_s=1.0), initial_limit=5, clock=MockClock())
    assert "algorithm=AIMDLimit(backoff_ratio=0.9, timeout_s=1.0)" in repr(lim)
    assert lim.limit == 5


# -- permits ---------------------------------------------------------------------------


def test_try_acquire_up_to_the_limit_then_none() -> None:
    lim = fixed(3)
    permits = [lim.try_acquire() for _ in range(3)]
    assert all(isinstance(p, Permit) for p in permits)
    assert [p.in_flight for p in permits if p] == [1, 2, 3]
    assert lim.try_acquire() is None
    assert lim.in_flight == 3
    permits[0].release()  # type: ignore[union-attr]
    assert lim.in_flight == 2
    assert lim.try_acquire() is not None


def test_releasing_twice_is_a_no_op() -> None:
    lim = aimd(10)
    permit = lim.try_acquire()
    other = lim.try_acquire()
    assert permit is not None
    assert other is not None
    permit.release(dropped=True)
    permit.release(dropped=True)
    permit.release()
    assert (lim.in_flight, lim.limit) == (1, 9)  # counted out once, one backoff
    assert permit.released


def test_permit_records_its_call() -> None:
    clock = MockClock(12.5)
    lim = fixed(2, clock)
    with criticality(SP):
        permit = lim.try_acquire()
    assert permit is not None
    assert (permit.criticality, permit.started, permit.in_flight) == (SP, 12.5, 1)
    assert repr(permit) == "Permit('concurrency', SHEDDABLE_PLUS, in_flight=1, held)"
    assert lim.try_acquire(criticality=CP).criticality is CP  # type: ignore[union-attr]


def test_permit_as_a_context_manager_reports_overload_as_a_drop() -> None:
    lim = aimd(10)
    with lim.try_acquire():  # type: ignore[union-attr]
        assert lim.in_flight == 1
    assert (lim.in_flight, lim.limit) == (0, 10)
    with pytest.raises(TimeoutError), lim.try_acquire():  # type: ignore[union-attr]
        raise TimeoutError
    assert (lim.in_flight, lim.limit) == (0, 9)
    with pytest.raises(ValueError), lim.try_acquire():  # type: ignore[union-attr]
        raise ValueError  # a failure, but not overload: no backoff
    assert (lim.in_flight, lim.limit) == (0, 9)

    async def main() -> None:
        async with lim.try_acquire():  # type: ignore[union-attr]
            raise Overloaded("shed below", policy="db")

    with pytest.raises(Overloaded):
        asyncio.run(main())
    assert (lim.in_flight, lim.limit) == (0, 8)


def test_ignored_samples_teach_the_algorithm_nothing() -> None:
    lim = aimd(10)
    lim.try_acquire().release(dropped=True, ignore=True)  # type: ignore[union-attr]
    assert (lim.in_flight, lim.limit, lim.rtt_s) == (0, 10, 0.0)


def test_round_trips_are_measured_on_the_policy_clock() -> None:
    clock = MockClock()
    lim = aimd(10, clock)
    permit = lim.try_acquire()
    clock.advance(0.25)
    permit.release()  # type: ignore[union-attr]
    assert lim.rtt_s == pytest.approx(0.25)


def test_bad_criticality_argument() -> None:
    with pytest.raises(InvalidConfig, match="criticality="):
        fixed(1).try_acquire(criticality=2)  # type: ignore[arg-type]


def test_permits_from_many_threads_never_exceed_the_limit() -> None:
    lim = fixed(4)
    peak = 0
    inside = 0
    guard = threading.Lock()

    def worker() -> None:
        nonlocal peak, inside
        for _ in range(500):
            permit = lim.try_acquire()
            if permit is None:
                continue
            with guard:
                inside += 1
                peak = max(peak, inside)
            with guard:
                inside -= 1
            permit.release()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert peak <= 4
    assert (lim.in_flight, lim.queued) == (0, 0)


# -- partitions ------------------------------------------------------------------------


def test_a_flood_of_sheddable_does_not_take_the_critical_share() -> None:
    lim = fixed(10, shares={CP: 0.2, C: 0.5})
    flood = [lim.try_acquire(criticality=S) for _ in range(10)]
    assert all(flood)  # idle capacity is borrowed by anyone
    assert lim.try_acquire(criticality=S) is None  # the limit is reached
    assert lim.try_acquire(criticality=SP) is None  # no share: only borrows
    critical = [lim.try_acquire(criticality=C) for _ in range(6)]
    assert sum(p is not None for p in critical) == 5  # its guaranteed part: ceil(0.5 * 10)
    plus = [lim.try_acquire(criticality=CP) for _ in range(3)]
    assert sum(p is not None for p in plus) == 2
    assert lim.in_flight == 17  # over the limit by the guaranteed parts while borrowers drain
    for p in flood[:7]:
        p.release()  # type: ignore[union-attr]
    assert lim.try_acquire(criticality=S) is None  # still 10 in flight: no idle capacity
    flood[7].release()  # type: ignore[union-attr]
    assert lim.try_acquire(criticality=S) is not None


def test_critical_borrows_idle_capacity_beyond_its_share() -> None:
    lim = fixed(10, shares={C: 0.3, S: 0.2})
    taken = [lim.try_acquire(criticality=C) for _ in range(10)]
    assert all(taken)
    assert lim.try_acquire(criticality=C) is None  # over its part and nothing idle
    assert lim.try_acquire(criticality=S) is not None  # sheddable still gets its part: 2
    assert lim.try_acquire(criticality=S) is not None
    assert lim.try_acquire(criticality=S) is None


def test_a_small_share_still_guarantees_one_slot() -> None:
    lim = fixed(3, shares={CP: 0.05})
    assert all(lim.try_acquire(criticality=S) for _ in range(3))
    assert lim.try_acquire(criticality=CP) is not None  # max(1, ceil(0.05 * 3))
    assert lim.try_acquire(criticality=CP) is None


def test_a_freed_slot_goes_to_the_waiter_with_a_guaranteed_part() -> None:
    async def main() -> None:
        lim = fixed(4, shares={C: 0.5})  # CRITICAL's part: 2
        sheddable = [lim.try_acquire(criticality=S) for _ in range(4)]
        critical = [lim.try_acquire(criticality=C) for _ in range(2)]
        assert lim.in_flight == 6
        low = await queue_one(lim, criticality=S)
        high = await queue_one(lim, criticality=C)
        critical[0].release()  # type: ignore[union-attr]  # CRITICAL is below its part again
        await settle()
        assert high.done()
        assert not low.done()
        for p in sheddable[:2]:
            p.release()  # type: ignore[union-attr]  # 6 -> 4 in flight: nothing idle yet
            await settle()
        assert not low.done()
        sheddable[2].release()  # type: ignore[union-attr]  # 3 in flight: idle capacity
        await settle()
        assert low.done()
        assert lim.in_flight == 4

    asyncio.run(main())


# -- the queue -------------------------------------------------------------------------


def test_waiters_are_served_most_critical_first() -> None:
    async def main() -> list[Criticality]:
        lim = fixed(1)
        holder = lim.try_acquire()
        tasks = [await queue_one(lim, criticality=c) for c in (S, C, SP, CP, C)]
        served: list[Criticality] = []
        permit = holder
        for _ in tasks:
            permit.release()  # type: ignore[union-attr]
            await settle()
            done = [t for t in tasks if t.done() and not t.result().released]
            assert len(done) == 1
            permit = done[0].result()
            served.append(permit.criticality)
        permit.release()  # type: ignore[union-attr]
        return served

    assert asyncio.run(main()) == [CP, C, C, SP, S]


def fifo_or_lifo(lifo: bool, *, standing: bool) -> list[int]:
    """Serve three waiters of one class, with or without a standing queue, and return the
    order they were served in (by arrival)."""

    async def main() -> list[int]:
        clock = MockClock()
        lim = fixed(1, clock, lifo=lifo, queue_target_s=0.05, queue_interval_s=0.1)
        holder = lim.try_acquire()
        if standing:
            first = await queue_one(lim)  # keeps the queue non-empty from t = 0
            clock.advance(0.09)
        tasks = [await queue_one(lim) for _ in range(3)]
        if standing:
            clock.advance(0.011)  # t = 0.101: standing; the first waiter timed out at 0.1
            await settle()
            assert shed(first).reason == "queue_timeout"
        else:
            clock.advance(0.01)
        order: list[int] = []
        permit = holder
        for _ in tasks:
            permit.release()  # type: ignore[union-attr]
            await settle()
            (i,) = [i for i, t in enumerate(tasks) if t.done() and i not in order]
            order.append(i)
            permit = tasks[i].result()
        permit.release()  # type: ignore[union-attr]
        return order

    return asyncio.run(main())


def test_fifo_while_the_queue_is_not_standing() -> None:
    assert fifo_or_lifo(True, standing=False) == [0, 1, 2]


def test_adaptive_lifo_serves_the_newest_first_under_a_standing_queue() -> None:
    assert fifo_or_lifo(True, standing=True) == [2, 1, 0]


def test_lifo_off_keeps_fifo_under_a_standing_queue() -> None:
    assert fifo_or_lifo(False, standing=True) == [0, 1, 2]


def test_queue_timeout_is_100_ms_then_5_ms_under_a_standing_queue() -> None:
    """Controlled delay: while the queue has been empty within the last 100 ms a waiter
    may wait 100 ms; once it has not, 5 ms; after it empties, 100 ms again."""

    async def main() -> dict[str, float]:
        clock = MockClock()
        lim = fixed(1, clock)
        lim.try_acquire()
        waited: dict[str, float] = {}
        a = await queue_one(lim)  # t = 0: the queue becomes non-empty
        clock.advance(0.099)
        b = await queue_one(lim)  # t = 0.099: expires at max(0.1, 0.104)
        clock.advance(0.0015)  # t = 0.1005
        await settle()
        waited["first"] = shed(a).waited_s
        assert not b.done()  # the queue never emptied: it is standing now
        c = await queue_one(lim)  # t = 0.1005: only 5 ms
        clock.advance(0.0036)  # t = 0.1041
        await settle()
        waited["standing"] = shed(b).waited_s
        clock.advance(0.002)  # t = 0.1061: c has waited 5.6 ms
        await settle()
        waited["newcomer"] = shed(c).waited_s
        assert lim.queued == 0
        clock.advance(1.0)
        d = await queue_one(lim)  # the queue emptied: 100 ms again
        clock.advance(0.0999)
        await settle()
        assert not d.done()
        clock.advance(0.0002)
        await settle()
        waited["after"] = shed(d).waited_s
        return waited

    waited = asyncio.run(main())
    assert waited["first"] == pytest.approx(0.1, abs=0.001)
    assert waited["standing"] == pytest.approx(0.005, abs=0.001)
    assert waited["newcomer"] == pytest.approx(0.005, abs=0.001)
    assert waited["after"] == pytest.approx(0.1, abs=0.001)


def test_all_waiters_share_one_timer() -> None:
    async def main() -> tuple[int, int]:
        clock = MockClock()
        lim = fixed(1, clock, max_queue=100)
        permit = lim.try_acquire()
        tasks = [await queue_one(lim) for _ in range(50)]
        timers = clock.pending_timers
        for task in tasks:
            clock.advance(0.001)
            permit.release()  # type: ignore[union-attr]
            await settle()
            permit = task.result()
        permit.release()  # type: ignore[union-attr]
        clock.advance(1.0)  # the one timer fires, finds nobody, and is not re-armed
        return timers, clock.pending_timers

    assert asyncio.run(main()) == (1, 0)


def test_a_full_queue_refuses_or_evicts_a_less_critical_waiter() -> None:
    async def main() -> None:
        lim = fixed(1, max_queue=2)
        events = recorder(lim)
        lim.try_acquire()
        old_low = await queue_one(lim, criticality=S)
        new_low = await queue_one(lim, criticality=S)
        with pytest.raises(ConcurrencyLimited) as info:
            await lim.acquire(criticality=S)  # as critical as all waiters: refused
        assert info.value.reason == "queue_full"
        assert info.value.waited_s == 0
        high = asyncio.create_task(lim.acquire(criticality=C))
        await settle()
        assert shed(old_low).reason == "queue_full"  # the oldest of the least critical
        assert not new_low.done()
        assert not high.done()
        assert lim.queued == 2
        assert [e.reason for e in events if isinstance(e, ConcurrencyShed)] == [
            "queue_full",
            "queue_full",
        ]
        for t in (new_low, high):
            t.cancel()
        await settle()
        assert lim.queued == 0

    asyncio.run(main())


def test_no_queue_refuses_at_once_with_reason_limit() -> None:
    async def main() -> ConcurrencyLimited:
        lim = fixed(1, max_queue=0)
        lim.try_acquire()
        with pytest.raises(ConcurrencyLimited) as info:
            await lim.acquire()
        return info.value

    exc = asyncio.run(main())
    assert (exc.reason, exc.limit, exc.in_flight, exc.queued) == ("limit", 1, 1, 0)


def test_a_cancelled_waiter_leaves_the_line() -> None:
    async def main() -> None:
        lim = fixed(1)
        holder = lim.try_acquire()
        first = await queue_one(lim)
        second = await queue_one(lim)
        first.cancel()
        await settle()
        assert lim.queued == 1
        holder.release()  # type: ignore[union-attr]
        await settle()
        assert second.done()
        assert second.result().in_flight == 1

    asyncio.run(main())


def test_a_waiter_cancelled_as_it_is_granted_passes_the_slot_on() -> None:
    async def main() -> None:
        lim = fixed(1)
        holder = lim.try_acquire()
        first = await queue_one(lim)
        second = await queue_one(lim)
        holder.release()  # type: ignore[union-attr]  # grants first, not yet resumed
        first.cancel()
        await settle()
        assert first.cancelled()
        assert second.done()
        assert lim.in_flight == 1
        second.result().release()
        assert lim.in_flight == 0

    asyncio.run(main())


def test_many_withdrawals_from_the_middle_of_the_line_are_compacted() -> None:
    async def main() -> list[int]:
        lim = fixed(1, max_queue=200, lifo=False)
        permit = lim.try_acquire()
        tasks = [await queue_one(lim) for _ in range(100)]
        for task in tasks[1:-1]:
            task.cancel()
        await settle()
        assert lim.queued == 2
        served = []
        for i in (0, 99):
            permit.release()  # type: ignore[union-attr]
            await settle()
            assert tasks[i].done()
            served.append(i)
            permit = tasks[i].result()
        permit.release()  # type: ignore[union-attr]
        assert (lim.queued, lim.in_flight) == (0, 0)
        return served

    assert asyncio.run(main()) == [0, 99]


def test_a_release_from_another_thread_wakes_an_async_waiter() -> None:
    async def main() -> Permit:
        lim = ConcurrencyLimit(algorithm="fixed", initial_limit=1)  # the real clock
        permit = lim.try_acquire()
        task = await queue_one(lim)
        await asyncio.to_thread(permit.release)  # type: ignore[union-attr]
        return await asyncio.wait_for(task, 10)

    assert asyncio.run(main()).in_flight == 1


def test_as_a_policy_it_admits_at_the_current_criticality() -> None:
    lim = fixed(2, shares={C: 0.5}, max_queue=0)
    lim.try_acquire(criticality=S)
    lim.try_acquire(criticality=S)

    async def work() -> Criticality:
        return Criticality.CRITICAL

    with criticality(S), pytest.raises(ConcurrencyLimited) as info:
        asyncio.run(lim.acall(work))
    assert (info.value.reason, info.value.criticality) == ("limit", S)
    assert asyncio.run(lim.acall(work)) is C  # CRITICAL by default: within its part


# -- deadlines -------------------------------------------------------------------------


def test_a_passed_deadline_is_refused_before_any_work_even_with_a_free_slot() -> None:
    clock = MockClock(5.0)
    lim = fixed(4, clock)
    calls = 0

    async def work() -> None:
        nonlocal calls
        calls += 1

    with pytest.raises(ConcurrencyLimited) as info:
        asyncio.run(lim.acquire(deadline=5.0))
    assert info.value.reason == "deadline"
    assert lim.try_acquire(deadline=4.0) is None
    with deadline(0.0, clock=clock), pytest.raises(ConcurrencyLimited, match="deadline"):
        asyncio.run(lim.acall(work))
    assert calls == 0
    assert lim.in_flight == 0


def test_a_deadline_before_the_expected_wait_is_refused_without_queueing() -> None:
    async def main() -> None:
        clock = MockClock()
        lim = fixed(1, clock)
        permit = lim.try_acquire()
        clock.advance(1.0)
        permit.release()  # type: ignore[union-attr]  # one call took 1 s: a slot turns over per 1 s
        lim.try_acquire()
        with pytest.raises(ConcurrencyLimited) as info:
            await lim.acquire(deadline=clock.now() + 0.5)  # it would wait about 1 s
        assert (info.value.reason, info.value.waited_s, lim.queued) == ("deadline", 0.0, 0)
        task = await queue_one(lim, deadline=clock.now() + 1.5)  # room enough: it queues
        # a second arrival would wait for the first waiter's slot too: about 2 s
        with pytest.raises(ConcurrencyLimited, match="deadline"):
            await lim.acquire(deadline=clock.now() + 1.5)
        # unless it is more critical, and so served first
        more = await queue_one(lim, deadline=clock.now() + 1.5, criticality=CP)
        for t in (task, more):
            t.cancel()
        await settle()
        assert lim.queued == 0

    asyncio.run(main())


def test_a_waiter_leaves_at_its_deadline() -> None:
    async def main() -> ConcurrencyLimited:
        clock = MockClock()
        lim = fixed(1, clock)
        lim.try_acquire()
        task = await queue_one(lim, deadline=0.03)
        clock.advance(0.029)
        await settle()
        assert not task.done()
        clock.advance(0.002)
        await settle()
        return shed(task)

    exc = asyncio.run(main())
    assert exc.reason == "deadline"
    assert exc.waited_s == pytest.approx(0.03)


def test_the_current_deadline_bounds_the_wait() -> None:
    async def main() -> ConcurrencyLimited:
        clock = MockClock()
        lim = fixed(1, clock)
        lim.try_acquire()
        with deadline(0.02, clock=clock):
            task = await queue_one(lim)
        clock.advance(0.021)
        await settle()
        return shed(task)

    assert asyncio.run(main()).reason == "deadline"


# -- as a policy -----------------------------------------------------------------------


def test_acall_holds_a_slot_for_the_call() -> None:
    lim = fixed(2)

    async def add(a: int, *, b: int) -> int:
        assert lim.in_flight == 1
        return a + b

    assert asyncio.run(lim.acall(add, 1, b=2)) == 3
    assert lim.in_flight == 0


def test_sync_calls_never_wait() -> None:
    lim = fixed(1)
    assert lim.call(lambda: 7) == 7
    with lim:
        assert lim.in_flight == 1
        with pytest.raises(ConcurrencyLimited) as info:
            lim.call(lambda: 7)
    assert info.value.reason == "limit"
    assert lim.in_flight == 0


def test_as_a_decorator_on_def_and_async_def() -> None:
    lim = fixed(1)

    @lim
    def double(x: int) -> int:
        return 2 * x

    @lim
    async def triple(x: int) -> int:
        return 3 * x

    assert double(2) == 4
    assert asyncio.run(triple(2)) == 6


def test_async_with_holds_a_slot_and_classifies_the_exit() -> None:
    lim = aimd(10)

    async def main() -> None:
        async with lim:
            assert lim.in_flight == 1
        with pytest.raises(DeadlineExceeded):
            async with lim:
                raise DeadlineExceeded()

    asyncio.run(main())
    assert (lim.in_flight, lim.limit) == (0, 9)


class Response:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


@pytest.mark.parametrize(
    ("outcome", "limit"),
    [
        (Response(200), 10),
        (Response(503), 9),
        (Response(429), 9),
        (Response(500), 10),
        (DeadlineExceeded(), 9),
        (Overloaded("shed", policy="db"), 9),
        (ConnectionError(), 10),
    ],
)
def test_overload_outcomes_make_the_algorithm_back_off(outcome: object, limit: int) -> None:
    def sync_call() -> object:
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def async_call() -> object:
        return sync_call()

    sync_lim, async_lim = aimd(10), aimd(10)
    with pytest.raises(Exception) if isinstance(outcome, BaseException) else nullcontext():
        sync_lim.call(sync_call)
    with pytest.raises(Exception) if isinstance(outcome, BaseException) else nullcontext():
        asyncio.run(async_lim.acall(async_call))
    for lim in (sync_lim, async_lim):
        assert (lim.in_flight, lim.limit) == (0, limit)


def test_a_cancelled_call_is_ignored() -> None:
    lim = aimd(10)

    async def main() -> None:
        task = asyncio.create_task(lim.acall(asyncio.sleep, 10))
        await settle()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert (lim.in_flight, lim.limit, lim.rtt_s) == (0, 10, 0.0)


def test_in_a_pipeline_an_attempt_timeout_inside_counts_as_a_drop() -> None:
    clock = MockClock(autojump=True)
    lim = aimd(10, clock)
    pipeline = Pipeline([lim, Timeout(0.05, clock=clock)])

    async def hangs() -> None:
        await clock.asleep(1.0)

    with pytest.raises(DeadlineExceeded):
        asyncio.run(pipeline.acall(hangs))
    assert (lim.in_flight, lim.limit) == (0, 9)


def test_in_a_pipeline_a_total_timeout_outside_bounds_the_wait() -> None:
    async def main() -> BaseException | None:
        clock = MockClock()
        lim = fixed(1, clock)
        pipeline = Pipeline([Timeout(0.02, clock=clock), lim])
        lim.try_acquire()

        async def work() -> str:
            return "done"

        task = asyncio.create_task(pipeline.acall(work))
        await settle()
        assert lim.queued == 1
        clock.advance(0.0199)
        await settle()
        assert not task.done()  # the queue alone would allow 100 ms
        clock.advance(0.0002)
        await settle()
        assert (lim.queued, lim.in_flight) == (0, 1)
        return task.exception()

    # The Timeout's timer and the waiter's expiry fall due together: the Timeout cancels
    # the wait and reports its own DeadlineExceeded (else the limit's reason="deadline").
    exc = asyncio.run(main())
    assert isinstance(exc, DeadlineExceeded)


def test_retry_does_not_retry_a_shed_call() -> None:
    lim = fixed(1, max_queue=0)
    lim.try_acquire()
    retry = Retry(attempts=3, clock=MockClock(autojump=True))
    calls = 0

    async def work() -> None:
        nonlocal calls
        calls += 1

    with pytest.raises(ConcurrencyLimited):
        asyncio.run(Pipeline([retry, lim]).acall(work))
    assert calls == 0


def test_acquire_and_time_out_with_real_asyncio_and_an_autojump_clock() -> None:
    async def main() -> list[str]:
        clock = MockClock(autojump=True)
        lim = fixed(1, clock)
        log: list[str] = []

        async def job(name: str, hold_s: float) -> None:
            try:
                async with lim:
                    log.append(f"{name} in at {clock.now():.3f}")
                    await clock.asleep(hold_s)
            except ConcurrencyLimited as exc:
                log.append(f"{name} {exc.reason} at {clock.now():.3f} after {exc.waited_s:.3f}")

        # autojump: a's sleep moves the clock to 0.05 before b and c even start. b waits
        # for a's slot and gets it at 0.05; c, queued at 0.05 behind b, times out 100 ms
        # later, at 0.15, while b's half-second sleep moves the clock past it.
        await asyncio.gather(job("a", 0.05), job("b", 0.5), job("c", 0.01))
        assert (lim.in_flight, lim.queued) == (0, 0)
        return log

    assert asyncio.run(main()) == [
        "a in at 0.000",
        "b in at 0.050",
        "c queue_timeout at 0.550 after 0.100",
    ]


# -- events and errors -----------------------------------------------------------------


def test_events_for_admitted_shed_and_limit_changed() -> None:
    async def main() -> list[Event]:
        clock = MockClock()
        lim = aimd(2, clock, name="api", max_queue=1)
        events = recorder(lim)
        first = lim.try_acquire(criticality=CP)
        second = lim.try_acquire()
        waiter = await queue_one(lim, criticality=SP)
        with pytest.raises(ConcurrencyLimited):
            await lim.acquire(criticality=S)
        clock.advance(0.01)
        first.release(dropped=True)  # type: ignore[union-attr]  # limit 2 -> 1, 1 in flight
        await settle()
        assert not waiter.done()
        clock.advance(0.01)
        second.release()  # type: ignore[union-attr]  # in use: +1 / 1, and a slot frees
        await settle()
        waiter.result().release()
        return events

    events = asyncio.run(main())
    assert events[:6] == [
        ConcurrencyAdmitted(0.0, "api", CP, 0.0, 1, 2),
        ConcurrencyAdmitted(0.0, "api", C, 0.0, 2, 2),
        ConcurrencyShed(0.0, "api", "queue_full", S, 0.0, 2, 2, 1),
        ConcurrencyLimitChanged(0.01, "api", 2, 1, 0.01),
        ConcurrencyLimitChanged(0.02, "api", 1, 2, pytest.approx(0.011)),  # type: ignore[arg-type]
        ConcurrencyAdmitted(0.02, "api", SP, pytest.approx(0.02), 1, 2),  # type: ignore[arg-type]
    ]
    assert isinstance(events[2], CallRejected)


def test_retry_after_is_at_least_a_second_and_follows_the_round_trip() -> None:
    clock = MockClock()
    lim = fixed(1, clock, max_queue=0)
    lim.try_acquire()
    with pytest.raises(ConcurrencyLimited) as info:
        lim.call(lambda: None)
    assert info.value.retry_after_s == MIN_RETRY_AFTER_S == 1.0
    lim = fixed(1, clock, max_queue=0)
    permit = lim.try_acquire()
    clock.advance(3.0)
    permit.release()  # type: ignore[union-attr]
    lim.try_acquire()
    with pytest.raises(ConcurrencyLimited) as info:
        lim.call(lambda: None)
    assert info.value.retry_after_s == pytest.approx(3.0)


def test_concurrency_limited_carries_its_data_and_pickles() -> None:
    exc = ConcurrencyLimited(
        policy="api",
        reason="queue_timeout",
        retry_after_s=1.5,
        criticality=SP,
        limit=8,
        in_flight=8,
        queued=3,
        waited_s=0.005,
    )
    assert isinstance(exc, Overloaded)
    assert isinstance(exc, Rejected)
    assert str(exc) == (
        "concurrency limit 'api' shed a sheddable_plus call: queued 5.0 ms without a slot "
        "(limit 8, 8 in flight, 3 queued); retry after 1.500 s"
    )
    back = pickle.loads(pickle.dumps(exc))
    assert (back.reason, back.criticality, back.waited_s, back.policy) == (
        "queue_timeout",
        SP,
        0.005,
        "api",
    )
    assert ConcurrencyLimited.REASONS == ("limit", "queue_full", "queue_timeout", "deadline")


def test_throttled_carries_its_probability_and_pickles() -> None:
    exc = Throttled(policy="client", probability=0.25)
    assert isinstance(exc, Rejected)
    assert not isinstance(exc, Overloaded)
    assert str(exc) == (
        "adaptive throttle 'client' refused the call locally (rejection probability 0.25)"
    )
    back = pickle.loads(pickle.dumps(exc))
    assert (back.policy, back.probability) == ("client", 0.25)


# -- the whole policy against a simulated service --------------------------------------


def test_the_policy_learns_a_simulated_services_capacity_on_its_clock() -> None:
    """Drive try_acquire/release on a MockClock (no event loop) against a service with 20
    slots of 10 ms at twice its capacity: round trips and in-flight counts come from the
    policy itself, and its limit settles where Gradient2 puts it (1.5 x 20)."""
    clock = MockClock()
    lim = ConcurrencyLimit(algorithm=Gradient2Limit(), clock=clock, max_queue=0, seed=3)
    rng = random.Random(4)
    slots, service_s = 20, 0.01
    rate = 2 * slots / service_s
    finishing: list[tuple[float, int, Permit]] = []
    line: list[Permit] = []
    busy = seq = shed_count = 0
    next_arrival = 0.0
    limits: list[int] = []
    release: Callable[[Permit], None] = Permit.release
    while len(limits) < 20_000:
        if finishing and finishing[0][0] <= next_arrival:
            at, _, permit = heapq.heappop(finishing)
            clock.jump_to(at)
            busy -= 1
            release(permit)
            limits.append(lim.limit)
            if line:
                busy += 1
                seq += 1
                heapq.heappush(finishing, (at + service_s, seq, line.pop(0)))
        else:
            clock.jump_to(next_arrival)
            next_arrival += rng.expovariate(rate)
            permit = lim.try_acquire()  # type: ignore[assignment]
            if permit is None:
                shed_count += 1
                continue
            if busy < slots:
                busy += 1
                seq += 1
                heapq.heappush(finishing, (clock.now() + service_s, seq, permit))
            else:
                line.append(permit)
    assert statistics.median(limits[-5000:]) == pytest.approx(30, rel=0.2)
    assert shed_count > 10_000  # the excess was shed at the door, not queued inside
