from __future__ import annotations

import asyncio
import math
import re
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brownout.errors import BulkheadFull, DeadlineExceeded, InvalidConfig, Overloaded
from brownout.events import BulkheadQueued, CallRejected, DeadlineExpired, Event
from brownout.guard._bulkhead import (
    ADMITTED,
    NO_WAIT,
    QUEUE_FULL,
    QUEUED,
    Bulkhead,
    _BulkheadState,
    _Waiter,
)
from brownout.guard._deadline import deadline
from brownout.guard._policy import Call, run_async_call, run_sync_call
from brownout.testing import MockClock

T = TypeVar("T")

# Generous bound for a thread test to notice it hangs; a passing test never waits for it.
HANG_S = 10.0


async def noop() -> str:
    return "ok"


async def settle(rounds: int = 10) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


async def queue_one(bh: Bulkhead, fn: Callable[..., Awaitable[T]], *args: Any) -> asyncio.Task[T]:
    """Start ``bh.acall(fn, *args)`` in a task and let it reach the line."""
    before = bh.queued
    task = asyncio.create_task(bh.acall(fn, *args))
    await asyncio.sleep(0)
    assert bh.queued == before + 1
    return task


def recorder(bh: Bulkhead) -> list[Event]:
    seen: list[Event] = []
    bh.events.subscribe(seen.append)
    return seen


# -- configuration ---------------------------------------------------------------------


INT1 = "an integer >= 1"
INT0 = "an integer >= 0"
SECONDS = "a finite number >= 0"


@pytest.mark.parametrize(
    ("kwargs", "name", "value", "allowed"),
    [
        ({"max_concurrent": 0}, "max_concurrent", "0", INT1),
        ({"max_concurrent": 2.0}, "max_concurrent", "2.0", INT1),
        ({"max_concurrent": True}, "max_concurrent", "True", INT1),
        ({"max_concurrent": 1, "max_queue": -1}, "max_queue", "-1", INT0),
        ({"max_concurrent": 1, "max_queue": "5"}, "max_queue", "'5'", INT0),
        ({"max_concurrent": 1, "max_wait_s": -0.5}, "max_wait_s", "-0.5", SECONDS),
        ({"max_concurrent": 1, "max_wait_s": math.inf}, "max_wait_s", "inf", SECONDS),
        ({"max_concurrent": 1, "max_wait_s": math.nan}, "max_wait_s", "nan", SECONDS),
    ],
)
def test_invalid_config_names_argument_value_and_range(
    kwargs: dict[str, Any], name: str, value: str, allowed: str
) -> None:
    message = f"Bulkhead: {name}={value} is not allowed; {name} must be {allowed}"
    with pytest.raises(InvalidConfig, match=f"^{re.escape(message)}$") as info:
        Bulkhead(**kwargs)
    assert isinstance(info.value, ValueError)
    assert (info.value.owner, info.value.name) == ("Bulkhead", name)


def test_repr_shows_the_config_only() -> None:
    bh = Bulkhead(4, max_queue=8, max_wait_s=0.25, name="db", clock=MockClock())
    assert repr(bh) == "Bulkhead(max_concurrent=4, max_queue=8, max_wait_s=0.25, name='db')"


def test_bulkhead_full_is_an_overload_rejection() -> None:
    bh = Bulkhead(1)
    with bh, pytest.raises(Overloaded):
        bh.call(lambda: None)


# -- async -----------------------------------------------------------------------------


def test_async_limit_holds_under_many_tasks() -> None:
    bh = Bulkhead(5, max_queue=200)
    inside = peak = 0

    async def work() -> None:
        nonlocal inside, peak
        inside += 1
        peak = max(peak, inside)
        await settle(3)
        inside -= 1

    async def main() -> None:
        await asyncio.gather(*(bh.acall(work) for _ in range(200)))

    asyncio.run(main())
    assert peak == 5
    assert (bh.active, bh.queued) == (0, 0)


def test_acall_returns_the_result_and_frees_the_slot() -> None:
    bh = Bulkhead(2)

    async def add(a: int, *, b: int) -> int:
        assert bh.active == 1
        return a + b

    assert asyncio.run(bh.acall(add, 1, b=2)) == 3
    assert bh.active == 0


def test_waiters_are_served_in_fifo_order() -> None:
    bh = Bulkhead(1, max_queue=10)
    order: list[int] = []

    async def work(i: int) -> None:
        order.append(i)
        await asyncio.sleep(0)

    async def main() -> None:
        async with bh:
            tasks = [await queue_one(bh, work, i) for i in range(6)]
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert order == [0, 1, 2, 3, 4, 5]


def test_newcomer_does_not_overtake_a_waiter_handed_the_slot() -> None:
    bh = Bulkhead(1, max_queue=1)
    order: list[str] = []

    async def work(tag: str) -> None:
        order.append(tag)

    async def main() -> None:
        async with bh:
            waiter = await queue_one(bh, work, "waiter")
        # The release handed the slot to the waiter, which has not run yet.
        assert (bh.active, bh.queued) == (1, 0)
        await bh.acall(work, "newcomer")
        await waiter

    asyncio.run(main())
    assert order == ["waiter", "newcomer"]


def test_default_queue_rejects_at_once_without_suspending() -> None:
    bh = Bulkhead(1, clock=MockClock())
    called = []

    async def work() -> None:
        called.append(1)

    async def main() -> BulkheadFull:
        async with bh:
            coro = bh.acall(work)
            with pytest.raises(BulkheadFull) as info:
                coro.send(None)  # raises on the first step: it never waits
            return info.value

    err = asyncio.run(main())
    assert (err.waited_s, err.max_queue, called) == (0.0, 0, [])


def test_full_queue_rejects_at_once_with_waited_zero() -> None:
    clock = MockClock()
    bh = Bulkhead(1, max_queue=1, clock=clock, name="db")
    seen = recorder(bh)

    async def main() -> BulkheadFull:
        async with bh:
            waiter = await queue_one(bh, noop)
            with pytest.raises(BulkheadFull) as info:
                await bh.acall(noop)
        await waiter
        return info.value

    err = asyncio.run(main())
    assert (err.policy, err.max_concurrent, err.max_queue, err.waited_s) == ("db", 1, 1, 0.0)
    assert seen == [BulkheadQueued(0.0, "db", 1), CallRejected(0.0, "db", "bulkhead_full")]


def test_wait_times_out_after_max_wait_s() -> None:
    clock = MockClock()
    bh = Bulkhead(1, max_queue=1, max_wait_s=0.5, clock=clock)

    async def main() -> BulkheadFull:
        async with bh:
            waiter = await queue_one(bh, noop)
            clock.advance(0.499)
            await settle()
            assert not waiter.done()
            clock.advance(0.001)
            with pytest.raises(BulkheadFull) as info:
                await waiter
            assert (bh.active, bh.queued) == (1, 0)
        assert bh.active == 0
        return info.value

    err = asyncio.run(main())
    assert err.waited_s == pytest.approx(0.5)
    assert clock.pending_timers == 0


def test_waiters_served_or_cancelled_leave_no_timer_behind() -> None:
    clock = MockClock()
    bh = Bulkhead(1, max_queue=2, max_wait_s=5.0, clock=clock)

    async def main() -> None:
        async with bh:
            served = await queue_one(bh, noop)
            cancelled = await queue_one(bh, noop)
            assert clock.pending_timers == 2
            cancelled.cancel()
            await settle()
        assert await served == "ok"
        assert cancelled.cancelled()

    asyncio.run(main())
    assert clock.pending_timers == 0


def test_max_wait_zero_refuses_instead_of_queueing() -> None:
    bh = Bulkhead(1, max_queue=5, max_wait_s=0, clock=MockClock())

    async def main() -> None:
        async with bh:
            with pytest.raises(BulkheadFull) as info:
                await bh.acall(noop)
            assert (info.value.waited_s, bh.queued) == (0.0, 0)

    asyncio.run(main())


def test_waiter_granted_a_slot_ignores_its_timer() -> None:
    clock = MockClock()
    bh = Bulkhead(1, max_queue=1, max_wait_s=0.5, clock=clock)

    async def main() -> str:
        async with bh:
            waiter = await queue_one(bh, noop)
        clock.advance(1.0)  # the timer fires after the hand-off, before the waiter runs
        return await waiter

    assert asyncio.run(main()) == "ok"
    assert bh.active == 0


def test_deadline_earlier_than_max_wait_raises_deadline_exceeded() -> None:
    clock = MockClock()
    bh = Bulkhead(1, max_queue=1, max_wait_s=1.0, clock=clock)
    seen = recorder(bh)

    async def under_deadline() -> str:
        with deadline(0.2, clock=clock):
            return await bh.acall(noop)

    async def main() -> DeadlineExceeded:
        async with bh:
            waiter = asyncio.create_task(under_deadline())
            await settle()
            clock.advance(0.2)
            with pytest.raises(DeadlineExceeded) as info:
                await waiter
            assert bh.queued == 0
        return info.value

    err = asyncio.run(main())
    assert (err.started, err.deadline) == (False, 0.2)
    assert seen[-1] == DeadlineExpired(0.2, "bulkhead", None, False)


def test_max_wait_earlier_than_deadline_raises_bulkhead_full() -> None:
    clock = MockClock()
    bh = Bulkhead(1, max_queue=1, max_wait_s=0.1, clock=clock)

    async def under_deadline() -> str:
        with deadline(5.0, clock=clock):
            return await bh.acall(noop)

    async def main() -> None:
        async with bh:
            waiter = asyncio.create_task(under_deadline())
            await settle()
            clock.advance(0.1)
            with pytest.raises(BulkheadFull):
                await waiter

    asyncio.run(main())


def test_deadline_bounds_a_wait_without_max_wait() -> None:
    clock = MockClock()
    bh = Bulkhead(1, max_queue=1, clock=clock)

    async def under_deadline() -> str:
        with deadline(3.0, clock=clock):
            return await bh.acall(noop)

    async def main() -> None:
        async with bh:
            waiter = asyncio.create_task(under_deadline())
            await settle()
            clock.advance(3.0)
            with pytest.raises(DeadlineExceeded):
                await waiter

    asyncio.run(main())


def test_passed_deadline_refuses_a_call_that_would_wait_at_once() -> None:
    clock = MockClock()
    bh = Bulkhead(1, max_queue=1, clock=clock)

    async def main() -> None:
        async with bh:
            with deadline(0.0, clock=clock), pytest.raises(DeadlineExceeded) as info:
                await bh.acall(noop)
            assert (info.value.started, bh.queued) == (False, 0)

    asyncio.run(main())


def test_passed_deadline_does_not_refuse_a_call_with_a_free_slot() -> None:
    clock = MockClock()
    bh = Bulkhead(1, clock=clock)

    async def main() -> str:
        with deadline(0.0, clock=clock):
            return await bh.acall(noop)

    assert asyncio.run(main()) == "ok"


def test_cancelled_waiter_leaves_the_line_without_a_slot() -> None:
    bh = Bulkhead(1, max_queue=2)

    async def main() -> None:
        async with bh:
            waiter = await queue_one(bh, noop)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert (bh.active, bh.queued) == (1, 0)
        assert bh.active == 0

    asyncio.run(main())


def test_waiter_cancelled_as_it_is_handed_a_slot_passes_it_on() -> None:
    bh = Bulkhead(1, max_queue=2)
    ran: list[str] = []

    async def work(tag: str) -> None:
        ran.append(tag)

    async def main() -> None:
        async with bh:
            first = await queue_one(bh, work, "first")
            second = await queue_one(bh, work, "second")
        first.cancel()  # the slot is already first's: its future holds a result
        with pytest.raises(asyncio.CancelledError):
            await first
        await second

    asyncio.run(main())
    assert ran == ["second"]
    assert (bh.active, bh.queued) == (0, 0)


def test_waiter_cancelled_as_it_is_handed_a_slot_frees_it_when_nobody_waits() -> None:
    bh = Bulkhead(1, max_queue=1)

    async def main() -> None:
        async with bh:
            waiter = await queue_one(bh, noop)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert bh.active == 0
        assert await bh.acall(noop) == "ok"

    asyncio.run(main())


def test_exception_in_async_call_releases_the_slot() -> None:
    bh = Bulkhead(1)

    async def boom() -> None:
        raise KeyError("x")

    async def main() -> None:
        with pytest.raises(KeyError):
            await bh.acall(boom)
        assert bh.active == 0
        with pytest.raises(KeyError):
            async with bh:
                raise KeyError("y")
        assert bh.active == 0

    asyncio.run(main())


def test_async_decorator_and_context_manager_hold_a_slot() -> None:
    bh = Bulkhead(2)

    @bh
    async def double(x: int) -> int:
        assert bh.active == 1
        return 2 * x

    async def main() -> int:
        async with bh as held:
            assert held is bh
            assert bh.active == 1
        return await double(21)

    assert asyncio.run(main()) == 42
    assert bh.active == 0


def test_arun_wraps_the_next_step_for_a_pipeline() -> None:
    bh = Bulkhead(1)

    async def work(x: int) -> int:
        assert bh.active == 1
        return x + 1

    assert asyncio.run(bh._arun(run_async_call, Call(work, (1,), {}))) == 2
    assert bh.active == 0


def test_sync_release_hands_a_slot_to_a_waiter_on_another_threads_loop() -> None:
    bh = Bulkhead(1, max_queue=1)
    queued = threading.Event()
    bh.events.subscribe(lambda e: queued.set())
    results: list[str] = []

    def other_loop() -> None:
        results.append(asyncio.run(bh.acall(noop)))

    with bh:
        thread = threading.Thread(target=other_loop)
        thread.start()
        assert queued.wait(HANG_S)
    thread.join(HANG_S)
    assert results == ["ok"]
    assert bh.active == 0


def test_slot_handed_to_a_waiter_whose_loop_closed_is_passed_on() -> None:
    bh = Bulkhead(1, max_queue=1)
    loop = asyncio.new_event_loop()

    async def start_waiter() -> asyncio.Task[str]:
        task = asyncio.create_task(bh.acall(noop))
        await asyncio.sleep(0)
        return task

    with bh:
        task = loop.run_until_complete(start_waiter())
        loop.close()  # the waiter will never run again
    assert (bh.active, bh.queued) == (0, 0)
    del task  # closing its coroutine must not release a slot a second time
    assert bh.active == 0
    assert bh.call(lambda: "ok") == "ok"


# -- sync ------------------------------------------------------------------------------


def test_call_returns_the_result_and_frees_the_slot() -> None:
    bh = Bulkhead(1)
    assert bh.call(lambda a, b: a * b, 6, b=7) == 42
    assert bh.active == 0


def test_sync_full_bulkhead_rejects_without_calling() -> None:
    bh = Bulkhead(1, name="pool", clock=MockClock())
    seen = recorder(bh)
    called: list[int] = []
    with bh, pytest.raises(BulkheadFull) as info:
        bh.call(called.append, 1)
    assert (info.value.waited_s, called, bh.active) == (0.0, [], 0)
    assert seen == [CallRejected(0.0, "pool", "bulkhead_full")]


def test_exception_in_sync_call_releases_the_slot() -> None:
    bh = Bulkhead(1)

    def boom() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        bh.call(boom)
    with pytest.raises(KeyError), bh:
        raise KeyError("y")
    assert bh.active == 0


def test_sync_decorator_and_run_hold_a_slot() -> None:
    bh = Bulkhead(1)

    @bh
    def inc(x: int) -> int:
        assert bh.active == 1
        return x + 1

    assert inc(1) == 2
    assert bh._run(run_sync_call, Call(inc.__wrapped__, (2,), {})) == 3  # type: ignore[attr-defined]
    assert bh.active == 0


def test_sync_max_wait_zero_refuses_at_once() -> None:
    bh = Bulkhead(1, max_queue=3, max_wait_s=0, clock=MockClock())
    with bh, pytest.raises(BulkheadFull) as info:
        bh.call(lambda: None)
    assert (info.value.waited_s, bh.queued) == (0.0, 0)


def test_sync_passed_deadline_refuses_a_call_that_would_wait() -> None:
    clock = MockClock()
    bh = Bulkhead(1, max_queue=3, clock=clock)
    with bh, deadline(0.0, clock=clock), pytest.raises(DeadlineExceeded) as info:
        bh.call(lambda: None)
    assert info.value.started is False


def test_sync_wait_times_out_in_real_time() -> None:
    # Threads block on threading primitives, which count real seconds: this test waits 20 ms.
    bh = Bulkhead(1, max_queue=1, max_wait_s=0.02)
    with bh, pytest.raises(BulkheadFull) as info:
        bh.call(lambda: None)  # nobody will release: the same thread holds the slot
    assert 0.015 <= info.value.waited_s < HANG_S
    assert (bh.queued, bh.active) == (0, 0)


def test_sync_wait_stops_at_the_deadline_in_real_time() -> None:
    bh = Bulkhead(1, max_queue=1, max_wait_s=5.0)
    with bh, deadline(0.02), pytest.raises(DeadlineExceeded):
        bh.call(lambda: None)
    assert bh.queued == 0


def test_threads_are_served_in_fifo_order() -> None:
    bh = Bulkhead(1, max_queue=5)
    queued = threading.Semaphore(0)
    bh.events.subscribe(lambda e: queued.release() if isinstance(e, BulkheadQueued) else None)
    order: list[int] = []
    threads = [threading.Thread(target=bh.call, args=(order.append, i)) for i in range(5)]
    with bh:
        for thread in threads:  # start each only once the previous one is in line
            thread.start()
            assert queued.acquire(timeout=HANG_S)
        assert bh.queued == 5
    for thread in threads:
        thread.join(HANG_S)
    assert order == [0, 1, 2, 3, 4]
    assert (bh.active, bh.queued) == (0, 0)


def test_threads_never_exceed_the_limit() -> None:
    bh = Bulkhead(3, max_queue=8)
    guard = threading.Lock()
    inside = peak = 0
    gate = threading.Event()
    errors: list[BaseException] = []

    def work() -> None:
        nonlocal inside, peak
        with guard:
            inside += 1
            peak = max(peak, inside)
        gate.wait(HANG_S)  # the first three hold their slots until all others are in line
        with guard:
            inside -= 1

    def worker() -> None:
        try:
            for _ in range(50):
                bh.call(work)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    queued = threading.Semaphore(0)
    unsubscribe = bh.events.subscribe(
        lambda e: queued.release() if isinstance(e, BulkheadQueued) else None
    )
    threads = [threading.Thread(target=worker) for _ in range(11)]
    for thread in threads:
        thread.start()
    for _ in range(8):
        assert queued.acquire(timeout=HANG_S)
    assert (bh.active, bh.queued, peak) == (3, 8, 3)
    unsubscribe()
    gate.set()
    for thread in threads:
        thread.join(HANG_S)
    assert errors == []
    assert peak == 3
    assert (bh.active, bh.queued) == (0, 0)


# -- properties ------------------------------------------------------------------------

OPS = st.lists(
    st.tuples(st.sampled_from(["arrive", "finish", "wake", "cancel", "abort"]), st.integers(0, 50)),
    max_size=80,
)


@given(max_concurrent=st.integers(1, 4), max_queue=st.integers(0, 4), ops=OPS)
def test_state_conserves_slots_and_respects_both_limits(
    max_concurrent: int, max_queue: int, ops: list[tuple[str, int]]
) -> None:
    """Model: ``running`` calls hold slots; ``handed`` waiters were granted one but have not
    woken yet (they may still be cancelled: the hand-off race); ``line`` waits in order."""
    state = _BulkheadState(max_concurrent, max_queue)
    running = 0
    handed: list[_Waiter] = []
    line: list[_Waiter] = []

    def release() -> None:
        granted = state.release()
        if line:
            assert granted is line.pop(0)  # the oldest waiter, FIFO
            assert granted.granted
            handed.append(granted)
        else:
            assert granted is None

    for op, pick in ops:
        if op == "arrive":
            if state.try_acquire():
                assert not line
                running += 1
                continue
            waiter = _Waiter()
            outcome = state.enqueue(waiter)
            assert outcome in (QUEUED, QUEUE_FULL)
            assert (outcome == QUEUE_FULL) == (len(line) == max_queue)
            if outcome == QUEUED:
                line.append(waiter)
        elif op == "finish" and running:
            running -= 1
            release()
        elif op == "wake" and handed:
            handed.pop(pick % len(handed))
            running += 1
        elif op == "cancel" and line:  # timeout, deadline or cancellation while in line
            assert state.withdraw(line.pop(pick % len(line))) is False
        elif op == "abort" and handed:  # cancelled just as the slot was handed over
            assert state.withdraw(handed.pop(pick % len(handed))) is True
            release()
        assert state.active == running + len(handed) <= max_concurrent
        assert state.active + state.free == max_concurrent
        assert state.free >= 0
        assert state.queued == len(line) <= max_queue
        assert list(state.waiters) == line
        assert state.queued == 0 or state.free == 0


def test_enqueue_reports_no_wait_and_admits_a_slot_that_came_free() -> None:
    state = _BulkheadState(1, 2)
    assert state.enqueue(None) == ADMITTED
    assert state.enqueue(None) == NO_WAIT
    assert state.queued == 0


class _HookedDeque(deque[Any]):
    """A deque that runs ``hook`` once, just before its first ``append``: it plays another
    thread's step at the racy moment of the state's lock-free protocol."""

    def __init__(self, items: list[Any], hook: Callable[[], object]) -> None:
        super().__init__(items)
        self.hook: Callable[[], object] | None = hook

    def append(self, item: Any) -> None:
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()
        super().append(item)


def test_slot_released_while_a_waiter_joins_the_line_is_not_lost() -> None:
    # The waiter saw no free slot; before it is in line, another thread releases one.
    state = _BulkheadState(1, 1)
    assert state.try_acquire()
    state.waiters = _HookedDeque([], state.release)
    assert state.enqueue(_Waiter()) == ADMITTED
    assert (state.active, state.free, state.queued) == (1, 0, 0)


def test_waiter_joining_while_a_slot_is_released_is_handed_it() -> None:
    # The releaser saw an empty line; before its slot is back, another thread joins the line.
    state = _BulkheadState(1, 1)
    assert state.try_acquire()
    waiter = _Waiter()
    joined: list[int] = []
    state.slots = _HookedDeque([], lambda: joined.append(state.enqueue(waiter)))
    assert state.release() is waiter
    assert joined == [QUEUED]
    assert (waiter.granted, state.active, state.free, state.queued) == (True, 1, 0, 0)


ASYNC_OPS = st.lists(
    st.tuples(
        st.sampled_from(["start", "start", "finish", "cancel", "advance", "settle"]),
        st.integers(0, 50),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    max_concurrent=st.integers(1, 3),
    max_queue=st.integers(0, 3),
    max_wait_s=st.sampled_from([None, 0.0, 0.5, 2.0]),
    ops=ASYNC_OPS,
)
def test_async_adapter_never_leaks_or_exceeds(
    max_concurrent: int, max_queue: int, max_wait_s: float | None, ops: list[tuple[str, int]]
) -> None:
    """Random starts, finishes, cancellations (at any moment, including right after a
    hand-off) and clock moves: the limits hold after every step, and once things settle the
    slots taken are exactly the calls running."""
    clock = MockClock()
    bh = Bulkhead(max_concurrent, max_queue=max_queue, max_wait_s=max_wait_s, clock=clock)
    inside: set[int] = set()

    async def work(i: int, gate: asyncio.Event) -> None:
        inside.add(i)
        try:
            await gate.wait()
        finally:
            inside.discard(i)

    async def main() -> None:
        calls: list[tuple[asyncio.Task[None], asyncio.Event]] = []
        for op, pick in ops:
            live = [c for c in calls if not c[0].done()]
            if op == "start":
                gate = asyncio.Event()
                calls.append((asyncio.create_task(bh.acall(work, len(calls), gate)), gate))
            elif op == "finish" and live:
                live[pick % len(live)][1].set()
            elif op == "cancel" and live:
                live[pick % len(live)][0].cancel()
            elif op == "advance":
                clock.advance(0.25 * (pick % 5))
            elif op == "settle":
                await settle()
            assert len(inside) <= bh.active <= max_concurrent
            assert bh.queued <= max_queue
            assert bh.queued == 0 or bh.active == max_concurrent
        await settle()
        assert bh.active == len(inside)
        for _, gate in calls:
            gate.set()
        await asyncio.gather(*(task for task, _ in calls), return_exceptions=True)
        assert (bh.active, bh.queued, inside) == (0, 0, set())

    asyncio.run(main())
