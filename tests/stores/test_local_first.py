"""LocalFirstStore against real Redis: local decisions, one script call per key per sync
interval, reports that add up, the failure modes, and the overshoot bound across several
processes."""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from brownout.errors import InvalidConfig
from brownout.events import Event
from brownout.guard._ratelimit import RateLimit, RateStore
from brownout.stores import LocalFirstStore, RedisStore, StoreUnavailable
from brownout.stores._local import REPORT
from brownout.testing import MockClock
from brownout.testing._stores import RATE_STORE_CHECKS, acheck_rate_store, check_rate_store

pytestmark = pytest.mark.redis

TOLERANCE_S = 0.25


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own on the shared Redis; its keys are deleted after."""
    text = f"brownout-test:{uuid.uuid4().hex[:12]}:"
    yield text
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=text + "*", count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture
def shared(redis_url: str, prefix: str) -> Iterator[RedisStore]:
    store = RedisStore(url=redis_url, prefix=prefix)
    yield store
    store.close()


def _sent(store: RedisStore) -> list[tuple[Any, ...]]:
    """Record every command the store's sync client sends."""
    client = store._sync_client()
    sent: list[tuple[Any, ...]] = []
    original = client.execute_command

    def execute_command(*args: Any, **kwargs: Any) -> Any:
        sent.append(args)
        return original(*args, **kwargs)

    client.execute_command = execute_command
    return sent


def _closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{sock.getsockname()[1]}/0"


# -- conformance -------------------------------------------------------------------------


@pytest.mark.parametrize("check", RATE_STORE_CHECKS)
def test_conformance(shared: RedisStore, check: str) -> None:
    """One process alone decides exactly as GCRA, on a real or on a mock clock."""
    store = LocalFirstStore(shared, sync_interval_s=0.05)
    check_rate_store(
        store, now=time.monotonic, wait=time.sleep, tolerance_s=TOLERANCE_S, checks=(check,)
    )
    clock = MockClock(50.0)
    check_rate_store(
        LocalFirstStore(shared, sync_interval_s=0.05),
        now=clock.now,
        wait=clock.advance,
        prefix="mock:",
        tolerance_s=TOLERANCE_S,
        checks=(check,),
    )


@pytest.mark.parametrize("check", RATE_STORE_CHECKS)
def test_conformance_async(shared: RedisStore, check: str) -> None:
    store = LocalFirstStore(shared, sync_interval_s=0.05)

    async def main() -> None:
        try:
            await acheck_rate_store(
                store, now=time.monotonic, wait=time.sleep, tolerance_s=TOLERANCE_S, checks=(check,)
            )
        finally:
            await shared.aclose()

    asyncio.run(main())


# -- the protocol ---------------------------------------------------------------------------


def test_one_script_call_per_key_per_interval(shared: RedisStore) -> None:
    clock = MockClock()
    store = LocalFirstStore(shared, sync_interval_s=0.1)
    limit = RateLimit(rate=10_000, burst=100, store=store, clock=clock, name="api")
    sent = _sent(shared)
    for _ in range(500):
        limit.check("a")
        clock.advance(0.0001)
    assert [args[1] for args in sent] == [REPORT.sha]  # the first sync of "a"
    limit.check("b")
    assert len(sent) == 2  # a new key is synced before its first decision
    clock.advance(0.1)
    limit.check("a")
    assert len(sent) == 3
    used = sent[2][5]
    assert 100 < used <= 600  # the report carries what "a" admitted locally


def test_a_report_charges_the_shared_key(shared: RedisStore) -> None:
    """Admissions made locally reach the shared key at the next sync: a RedisStore (exact,
    one round trip a decision) on the same key then sees them."""
    clock = MockClock()
    local = RateLimit(
        rate=0.1, burst=5, name="api", clock=clock, store=LocalFirstStore(shared, sync_interval_s=1)
    )
    exact = RateLimit(rate=0.1, burst=5, name="api", store=shared)
    assert [local.check("u").allowed for _ in range(3)] == [True] * 3
    assert exact.check("u", cost=0).remaining == 5  # not reported yet
    clock.advance(1.0)
    assert local.check("u").allowed  # syncs first: reports the three
    assert exact.check("u", cost=0).remaining == 2
    assert exact.check("u").allowed
    clock.advance(1.0)
    refused = local.check("u", cost=2)  # syncs: sees the exact store's admission
    assert not refused.allowed
    assert refused.remaining == 0


def test_late_reports_add_up(shared: RedisStore) -> None:
    """Two processes each admit part of a burst at t=0 and report only seconds later: the
    shared key still adds both up, charged from when the cells were admitted."""
    clocks = [MockClock(), MockClock()]
    a, b = (
        RateLimit(
            rate=10,
            burst=60,
            name="api",
            clock=clock,
            store=LocalFirstStore(shared, sync_interval_s=1.0),
        )
        for clock in clocks
    )
    a.check("u", cost=10)
    b.check("u", cost=50)  # b synced before a reported: it saw a fresh key
    for clock in clocks:
        clock.advance(5.0)
    a.check("u", cost=0)  # reports 10, admitted 5 s ago: a shared TAT 4 s in the past
    after = b.check("u")  # reports 50, 5 s ago too: the true TAT is 1 s ahead now
    assert after.allowed
    assert after.remaining == 49  # 60 cells at t=0 leave 10 back at t=5, minus this one


def test_decides_locally_while_redis_is_away_and_reports_after() -> None:
    clock = MockClock()
    shared = RedisStore(url=_closed_url(), clock=clock)
    seen: list[Event] = []
    shared.events.subscribe(seen.append)
    limit = RateLimit(
        rate=1.0, burst=2, clock=clock, store=LocalFirstStore(shared, sync_interval_s=0.1)
    )
    try:
        assert [limit.check("u").allowed for _ in range(3)] == [True, True, False]
        clock.advance(1.0)
        assert limit.check("u").allowed
    finally:
        shared.close()
    assert [type(e) for e in seen] == [StoreUnavailable]


def test_fail_closed_refuses_while_redis_is_away() -> None:
    clock = MockClock()
    shared = RedisStore(url=_closed_url(), clock=clock, fail="closed")
    limit = RateLimit(
        rate=100.0, burst=5, clock=clock, store=LocalFirstStore(shared, sync_interval_s=0.1)
    )

    async def main() -> list[bool]:
        try:
            return [(await limit.acheck("u")).allowed for _ in range(3)]
        finally:
            await shared.aclose()

    try:
        assert [limit.check("u").allowed for _ in range(3)] == [False] * 3
        assert limit.check("u").retry_after_s == pytest.approx(1.0)
        assert asyncio.run(main()) == [False] * 3
    finally:
        shared.close()


def test_async_reports_through_the_asyncio_client(shared: RedisStore) -> None:
    clock = MockClock()
    limit = RateLimit(
        rate=0.1,
        burst=4,
        name="api",
        clock=clock,
        store=LocalFirstStore(shared, sync_interval_s=1.0),
    )
    exact = RateLimit(rate=0.1, burst=4, name="api", store=shared)

    async def main() -> None:
        try:
            assert [(await limit.acheck("u")).allowed for _ in range(5)] == [True] * 4 + [False]
            clock.advance(1.0)
            await limit.acheck("u", cost=0)
        finally:
            await shared.aclose()

    asyncio.run(main())
    assert exact.check("u", cost=0).remaining == 0


class StalledClient:
    """A stand-in asyncio client whose replies wait until ``answer`` is set, then say the
    shared key is idle; it records the ARGV of every call."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.asked = asyncio.Event()
        self.argv: list[tuple[Any, ...]] = []

    async def execute_command(self, *args: Any) -> Any:
        self.argv.append(args[4:])
        self.asked.set()
        await self.answer.wait()
        return b"0"


def test_a_sync_cancelled_midway_is_tried_again_with_nothing_lost() -> None:
    """Cancelling a decision while its sync waits for Redis leaves the key free to sync
    again, its unreported consumption still to report."""
    clock = MockClock()

    async def main() -> list[tuple[Any, ...]]:
        client = StalledClient()
        store = LocalFirstStore(RedisStore(client), sync_interval_s=1.0)  # type: ignore[arg-type]
        limit = RateLimit(rate=0.1, burst=5, clock=clock, store=store)
        client.answer.set()
        await limit.acheck("u", cost=2)  # first sync, then 2 admitted locally
        client.answer.clear()
        client.asked.clear()
        clock.advance(1.0)
        task = asyncio.create_task(limit.acheck("u"))
        await client.asked.wait()  # the report of the 2 is in flight
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        client.answer.set()
        assert (await limit.acheck("u", cost=0)).allowed  # syncs again
        return client.argv

    argv = asyncio.run(main())
    used = [args[1] for args in argv]
    assert used == [0, 2, 2]  # the cancelled report's 2 units were reported after all


def test_max_keys_bounds_the_local_view(shared: RedisStore) -> None:
    store = LocalFirstStore(shared, sync_interval_s=10.0, max_keys=2)
    for key in "abc":
        store.gcra(key, interval_s=1.0, tolerance_s=0.0, cost=1, now=0.0)
    assert len(store) == 2
    assert isinstance(store, RateStore)
    assert repr(store).startswith("LocalFirstStore(RedisStore(")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"sync_interval_s": 0}, "sync_interval_s"),
        ({"sync_interval_s": float("inf")}, "sync_interval_s"),
        ({"max_keys": 0}, "max_keys"),
    ],
)
def test_bad_settings_name_the_field(
    shared: RedisStore, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidConfig) as info:
        LocalFirstStore(shared, **kwargs)
    assert info.value.name == field


def test_needs_a_redis_store() -> None:
    with pytest.raises(InvalidConfig) as info:
        LocalFirstStore(object())  # type: ignore[arg-type]
    assert info.value.name == "redis"


# -- several processes ------------------------------------------------------------------------

PROCESSES = 4
RATE = 2000.0
BURST = 20
SYNC_S = 0.05
RUN_S = 1.0


def _hammer(url: str, prefix: str, start: Any, results: Any) -> None:
    """One replica: as many decisions on one shared key as it can make for RUN_S seconds;
    sends back the (monotonic, machine-wide) times of its admissions."""
    shared = RedisStore(url=url, prefix=prefix)
    try:
        limit = RateLimit(
            rate=RATE,
            burst=BURST,
            name="shared",
            store=LocalFirstStore(shared, sync_interval_s=SYNC_S),
        )
        limit.check("warm")  # connect and load the script before the start
        start.wait()
        admitted: list[float] = []
        end = time.monotonic() + RUN_S
        while (now := time.monotonic()) < end:
            if limit.check("k").allowed:
                admitted.append(now)
        results.put(admitted)
    finally:
        shared.close()


def _worst_excess(times: list[float], rate: float) -> float:
    """max over windows [t_i, t_j] of (admissions in it) - rate * (t_j - t_i), in O(n)."""
    worst = float("-inf")
    lowest = float("inf")
    for j, t in enumerate(times):
        lowest = min(lowest, j - rate * t)
        worst = max(worst, (j + 1) - rate * t - lowest)
    return worst


@pytest.mark.slow
def test_overshoot_across_processes_stays_within_the_documented_bound(
    redis_url: str, prefix: str
) -> None:
    """PROCESSES replicas (spawned) hammer one key for RUN_S: in every window W they admit
    at most burst + rate*W + 2(N-1)(burst + rate*I), and at least most of the rate (the
    limit is not just refusing). Without reconciling they would admit N times the rate."""
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(PROCESSES + 1)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_hammer, args=(redis_url, prefix, start, results))
        for _ in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    try:
        start.wait(timeout=30)
        admitted = sorted(t for _ in procs for t in results.get(timeout=30))
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    assert all(proc.exitcode == 0 for proc in procs)
    window = admitted[-1] - admitted[0]
    overshoot = 2 * (PROCESSES - 1) * (BURST + RATE * SYNC_S)
    slack = 2 + 0.01 * RATE * window  # timestamps are taken beside the decisions
    assert len(admitted) <= BURST + RATE * window + overshoot + slack
    assert _worst_excess(admitted, RATE) <= BURST + overshoot + slack
    assert len(admitted) >= 0.8 * RATE * RUN_S
    results.close()
    results.join_thread()
