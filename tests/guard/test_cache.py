from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brownout.errors import InvalidConfig
from brownout.events import CacheHit, CacheLoaded, CacheMiss, Event, StaleServed
from brownout.guard._cache import Cache, CacheEntry, CacheStore, MemoryCacheStore, default_key
from brownout.guard._deadline import current_deadline, deadline
from brownout.guard._policy import Call, run_async_call, run_sync_call
from brownout.testing import MockClock

WAIT_S = 5.0  # upper bound on real waits between threads; never reached when things work


async def _settle(rounds: int = 10) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


def _cache(clock: MockClock, **kwargs: Any) -> Cache:
    kwargs.setdefault("ttl_s", 10.0)
    kwargs.setdefault("max_entries", 100)
    return Cache(clock=clock, **kwargs)


class Counter:
    """A sync loader returning ``prefix-n`` for its n-th call (1-based)."""

    def __init__(self, prefix: str = "v") -> None:
        self.prefix = prefix
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return f"{self.prefix}{self.calls}"


class Gate:
    """An async loader that blocks until released, then returns ``value`` or raises ``error``."""

    def __init__(self, value: object = "loaded", error: BaseException | None = None) -> None:
        self.value = value
        self.error = error
        self.calls = 0
        self.release = asyncio.Event()

    async def __call__(self) -> object:
        self.calls += 1
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return self.value


def _record(cache: Cache) -> list[Event]:
    seen: list[Event] = []
    cache.events.subscribe(seen.append)
    return seen


# -- TTL and LRU -------------------------------------------------------------------------


def test_fresh_value_is_served_without_calling_the_loader() -> None:
    cache = _cache(MockClock())
    loader = Counter()
    assert cache.get_or_load("k", loader) == "v1"
    assert cache.get_or_load("k", loader) == "v1"
    assert loader.calls == 1


def test_value_expires_exactly_at_ttl() -> None:
    clock = MockClock()
    cache = _cache(clock, ttl_s=10.0)
    loader = Counter()
    cache.get_or_load("k", loader)
    clock.advance(9.999)
    assert cache.get_or_load("k", loader) == "v1"
    clock.advance(0.001)
    assert cache.get_or_load("k", loader) == "v2"
    assert loader.calls == 2


def test_ttl_counts_from_the_end_of_the_load() -> None:
    clock = MockClock()
    cache = _cache(clock, ttl_s=10.0)

    def slow() -> str:
        clock.advance(4.0)
        return "v"

    cache.get_or_load("k", slow)  # loaded at t=4, fresh until t=14
    clock.jump_to(13.9)
    assert cache.get_or_load("k", Counter("other")) == "v"


def test_lru_evicts_the_least_recently_used_key() -> None:
    cache = _cache(MockClock(), max_entries=2)
    cache.get_or_load("a", lambda: "A")
    cache.get_or_load("b", lambda: "B")
    cache.get_or_load("a", lambda: "unused")  # a is now the most recently used
    cache.get_or_load("c", lambda: "C")
    assert len(cache) == 2
    loader = Counter()
    assert cache.get_or_load("a", loader) == "A"
    assert cache.get_or_load("c", loader) == "C"
    assert cache.get_or_load("b", loader) == "v1"  # b was evicted


def test_memory_store_keeps_recency_order() -> None:
    store = MemoryCacheStore(3)
    for key in "abc":
        store.set(key, CacheEntry(key, expires_at=1.0, load_s=0.0))
    store.get("a")
    store.set("d", CacheEntry("d", expires_at=1.0, load_s=0.0))
    assert store.keys() == ["c", "a", "d"]
    store.delete("c")
    store.delete("missing")
    assert store.keys() == ["a", "d"]
    assert isinstance(store, CacheStore)


def test_memory_store_replacing_an_entry_makes_it_most_recent() -> None:
    store = MemoryCacheStore(2)
    store.set("a", CacheEntry(1, expires_at=1.0, load_s=0.0))
    store.set("b", CacheEntry(2, expires_at=1.0, load_s=0.0))
    store.set("a", CacheEntry(3, expires_at=2.0, load_s=0.0))
    store.set("c", CacheEntry(4, expires_at=1.0, load_s=0.0))
    assert store.keys() == ["a", "c"]
    entry = store.get("a")
    assert entry is not None
    assert entry.value == 3


def test_a_given_store_is_used_and_bounds_itself() -> None:
    store = MemoryCacheStore(1)
    cache = Cache(ttl_s=10.0, store=store, clock=MockClock())
    cache.get_or_load("a", lambda: 1)
    cache.get_or_load("b", lambda: 2)
    assert store.keys() == ["b"]
    assert len(cache) == 1


def test_invalidate_and_clear_forget_entries() -> None:
    cache = _cache(MockClock())
    for key in "abc":
        cache.get_or_load(key, lambda: 0)
    cache.invalidate("a")
    cache.invalidate("never-there")
    assert len(cache) == 2
    loader = Counter()
    assert cache.get_or_load("a", loader) == "v1"
    cache.clear()
    assert len(cache) == 0
    assert cache.get_or_load("b", loader) == "v2"


def test_an_empty_cache_is_still_truthy() -> None:
    cache = _cache(MockClock())
    assert len(cache) == 0
    assert bool(cache) is True


# -- single-flight, async -------------------------------------------------------------------


def test_async_concurrent_misses_run_the_loader_once() -> None:
    async def main() -> None:
        cache = _cache(MockClock())
        loader = Gate("shared")
        tasks = [asyncio.create_task(cache.aget_or_load("k", loader)) for _ in range(200)]
        await _settle()
        assert loader.calls == 1
        assert len(cache) == 0  # a load in flight is not an entry
        loader.release.set()
        assert await asyncio.gather(*tasks) == ["shared"] * 200
        assert loader.calls == 1
        assert len(cache) == 1

    asyncio.run(main())


def test_async_loader_exception_reaches_every_waiter_and_is_not_cached() -> None:
    async def main() -> None:
        cache = _cache(MockClock())
        boom = ConnectionError("down")
        loader = Gate(error=boom)
        tasks = [asyncio.create_task(cache.aget_or_load("k", loader)) for _ in range(50)]
        await _settle()
        loader.release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(r is boom for r in results)
        assert loader.calls == 1
        assert len(cache) == 0

        async def ok() -> str:
            return "recovered"

        assert await cache.aget_or_load("k", ok) == "recovered"

    asyncio.run(main())


def test_async_loader_exception_is_cached_when_negative_caching_selects_it() -> None:
    async def main() -> None:
        clock = MockClock()
        cache = _cache(clock, negative_ttl_s=5.0, negative_on=LookupError)
        loader = Gate(error=KeyError("missing"))
        tasks = [asyncio.create_task(cache.aget_or_load("k", loader)) for _ in range(20)]
        await _settle()
        loader.release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, KeyError) for r in results)
        with pytest.raises(KeyError):
            await cache.aget_or_load("k", loader)
        assert loader.calls == 1

    asyncio.run(main())


def test_async_cancelled_first_caller_does_not_strand_the_waiters() -> None:
    async def main() -> None:
        cache = _cache(MockClock())
        loader = Gate("v")
        first = asyncio.create_task(cache.aget_or_load("k", loader))
        await _settle()
        others = [asyncio.create_task(cache.aget_or_load("k", loader)) for _ in range(5)]
        await _settle()
        first.cancel()
        await _settle()
        assert first.cancelled()
        loader.release.set()
        assert await asyncio.gather(*others) == ["v"] * 5
        assert loader.calls == 1
        assert len(cache) == 1  # the load went on and filled the cache

    asyncio.run(main())


def test_async_load_that_raises_cancelled_error_is_passed_on_and_not_cached() -> None:
    async def main() -> None:
        cache = _cache(MockClock(), negative_ttl_s=5.0, negative_on=Exception)
        calls = 0

        async def cancelled() -> str:
            nonlocal calls
            calls += 1
            raise asyncio.CancelledError

        with pytest.raises(asyncio.CancelledError):
            await cache.aget_or_load("k", cancelled)
        with pytest.raises(asyncio.CancelledError):
            await cache.aget_or_load("k", cancelled)
        assert calls == 2
        assert len(cache) == 0

    asyncio.run(main())


def test_async_loader_asking_for_its_own_key_fails_instead_of_deadlocking() -> None:
    async def main() -> None:
        cache = _cache(MockClock())

        async def recursive() -> str:
            return await cache.aget_or_load("k", recursive)

        with pytest.raises(RuntimeError, match="same key"):
            await cache.aget_or_load("k", recursive)

    asyncio.run(main())


def test_async_invalidate_during_a_load_detaches_it() -> None:
    async def main() -> None:
        cache = _cache(MockClock())
        loader = Gate("old")
        waiter = asyncio.create_task(cache.aget_or_load("k", loader))
        await _settle()
        cache.invalidate("k")
        loader.release.set()
        assert await waiter == "old"  # the caller that asked before still gets its answer
        assert len(cache) == 0  # ... but it is not stored

        async def new() -> str:
            return "new"

        assert await cache.aget_or_load("k", new) == "new"

    asyncio.run(main())


def test_async_loads_of_different_keys_run_concurrently() -> None:
    async def main() -> None:
        cache = _cache(MockClock())
        a, b = Gate("A"), Gate("B")
        ta = asyncio.create_task(cache.aget_or_load("a", a))
        tb = asyncio.create_task(cache.aget_or_load("b", b))
        await _settle()
        assert (a.calls, b.calls) == (1, 1)
        b.release.set()
        assert await tb == "B"
        assert not ta.done()
        a.release.set()
        assert await ta == "A"

    asyncio.run(main())


# -- single-flight, threads -------------------------------------------------------------------


def _start_threads(n: int, target: Callable[[], None]) -> list[threading.Thread]:
    threads = [threading.Thread(target=target) for _ in range(n)]
    for thread in threads:
        thread.start()
    return threads


def _wait_for_misses(cache: Cache, n: int) -> threading.Event:
    reached = threading.Event()
    lock = threading.Lock()
    misses = 0

    def on_event(event: Event) -> None:
        nonlocal misses
        if isinstance(event, CacheMiss):
            with lock:
                misses += 1
                if misses >= n:
                    reached.set()

    cache.events.subscribe(on_event)
    return reached


def test_threads_concurrent_misses_run_the_loader_once() -> None:
    cache = _cache(MockClock())
    n = 16
    all_missed = _wait_for_misses(cache, n)
    release = threading.Event()
    calls = 0
    results: list[object] = []
    lock = threading.Lock()

    def loader() -> str:
        nonlocal calls
        calls += 1
        release.wait(WAIT_S)
        return "shared"

    def worker() -> None:
        value = cache.get_or_load("k", loader)
        with lock:
            results.append(value)

    threads = _start_threads(n, worker)
    assert all_missed.wait(WAIT_S)
    release.set()
    for thread in threads:
        thread.join(WAIT_S)
    assert results == ["shared"] * n
    assert calls == 1


def test_threads_loader_exception_reaches_every_waiter_and_is_not_cached() -> None:
    cache = _cache(MockClock())
    n = 8
    all_missed = _wait_for_misses(cache, n)
    release = threading.Event()
    boom = ConnectionError("down")
    calls = 0
    errors: list[BaseException] = []
    lock = threading.Lock()

    def loader() -> str:
        nonlocal calls
        calls += 1
        release.wait(WAIT_S)
        raise boom

    def worker() -> None:
        try:
            cache.get_or_load("k", loader)
        except ConnectionError as exc:
            with lock:
                errors.append(exc)

    threads = _start_threads(n, worker)
    assert all_missed.wait(WAIT_S)
    release.set()
    for thread in threads:
        thread.join(WAIT_S)
    assert errors == [boom] * n
    assert calls == 1
    assert cache.get_or_load("k", lambda: "later") == "later"


def test_sync_loader_asking_for_its_own_key_fails_instead_of_deadlocking() -> None:
    cache = _cache(MockClock())

    def recursive() -> str:
        return cache.get_or_load("k", recursive)

    with pytest.raises(RuntimeError, match="same key"):
        cache.get_or_load("k", recursive)


def test_sync_leader_interrupted_releases_the_waiters_who_load_again() -> None:
    cache = _cache(MockClock())
    all_missed = _wait_for_misses(cache, 2)
    release = threading.Event()
    outcome: list[object] = []

    def interrupted() -> str:
        release.wait(WAIT_S)
        raise KeyboardInterrupt

    def leader() -> None:
        try:
            cache.get_or_load("k", interrupted)
        except KeyboardInterrupt:
            outcome.append("interrupted")

    def waiter() -> None:
        outcome.append(cache.get_or_load("k", lambda: "reloaded"))

    first = threading.Thread(target=leader)
    first.start()
    second = threading.Thread(target=waiter)
    second.start()
    assert all_missed.wait(WAIT_S)
    release.set()
    first.join(WAIT_S)
    second.join(WAIT_S)
    assert sorted(map(str, outcome)) == ["interrupted", "reloaded"]


# -- stale-while-revalidate -------------------------------------------------------------------


def test_async_stale_value_is_served_at_once_and_refreshed_once_in_background() -> None:
    async def main() -> None:
        clock = MockClock()
        cache = _cache(clock, ttl_s=10.0, stale_s=5.0)
        events = _record(cache)

        async def first() -> str:
            return "old"

        await cache.aget_or_load("k", first)
        clock.advance(12.0)
        refresh = Gate("new")
        served = [await cache.aget_or_load("k", refresh) for _ in range(5)]
        assert served == ["old"] * 5
        await _settle()
        assert refresh.calls == 1
        refresh.release.set()
        await _settle()
        assert await cache.aget_or_load("k", refresh) == "new"
        assert refresh.calls == 1
        stale = [e for e in events if isinstance(e, StaleServed)]
        assert [e.reason for e in stale] == ["revalidating"] * 5

    asyncio.run(main())


def test_async_stale_window_ends_after_stale_s() -> None:
    async def main() -> None:
        clock = MockClock()
        cache = _cache(clock, ttl_s=10.0, stale_s=5.0)

        async def first() -> str:
            return "old"

        await cache.aget_or_load("k", first)
        clock.advance(15.0)
        loader = Gate("new")
        task = asyncio.create_task(cache.aget_or_load("k", loader))
        await _settle()
        assert not task.done()  # a miss: the caller waits for the load
        loader.release.set()
        assert await task == "new"

    asyncio.run(main())


def test_async_background_refresh_runs_without_the_callers_deadline() -> None:
    async def main() -> None:
        clock = MockClock()
        cache = _cache(clock, ttl_s=10.0, stale_s=5.0)
        seen: list[object] = []

        async def loader() -> str:
            seen.append(current_deadline())
            return "v"

        with deadline(1.0, clock=clock):
            await cache.aget_or_load("k", loader)  # a miss: loads under the caller's deadline
        clock.advance(12.0)
        with deadline(1.0, clock=clock):
            await cache.aget_or_load("k", loader)  # stale: refreshes in the background
        await _settle()
        assert seen[0] is not None
        assert seen[1] is None

    asyncio.run(main())


def test_async_failed_refresh_keeps_the_stale_value() -> None:
    async def main() -> None:
        clock = MockClock()
        cache = _cache(clock, ttl_s=10.0, stale_s=5.0)
        events = _record(cache)

        async def first() -> str:
            return "old"

        async def failing() -> str:
            raise ConnectionError("down")

        await cache.aget_or_load("k", first)
        clock.advance(12.0)
        assert await cache.aget_or_load("k", failing) == "old"
        await _settle()
        assert await cache.aget_or_load("k", failing) == "old"
        await _settle()
        loaded = [e for e in events if isinstance(e, CacheLoaded)]
        assert [e.ok for e in loaded] == [True, False, False]

    asyncio.run(main())


def test_sync_stale_value_is_refreshed_inline_by_one_caller_while_others_get_it_at_once() -> None:
    clock = MockClock()
    cache = _cache(clock, ttl_s=10.0, stale_s=5.0)
    cache.get_or_load("k", lambda: "old")
    clock.advance(12.0)
    started = threading.Event()
    release = threading.Event()
    calls = 0

    def refresh() -> str:
        nonlocal calls
        calls += 1
        started.set()
        release.wait(WAIT_S)
        return "new"

    refresher_got: list[str] = []
    refresher = threading.Thread(
        target=lambda: refresher_got.append(cache.get_or_load("k", refresh))
    )
    refresher.start()
    assert started.wait(WAIT_S)
    assert [cache.get_or_load("k", refresh) for _ in range(3)] == ["old"] * 3
    release.set()
    refresher.join(WAIT_S)
    assert refresher_got == ["new"]
    assert cache.get_or_load("k", refresh) == "new"
    assert calls == 1


def test_sync_failed_inline_refresh_falls_back_to_the_stale_value() -> None:
    clock = MockClock()
    cache = _cache(clock, ttl_s=10.0, stale_s=5.0)
    events = _record(cache)
    cache.get_or_load("k", lambda: "old")
    clock.advance(12.0)

    def failing() -> str:
        raise ConnectionError("down")

    assert cache.get_or_load("k", failing) == "old"
    assert [e.reason for e in events if isinstance(e, StaleServed)] == ["error"]


# -- stale-if-error ---------------------------------------------------------------------------


def test_stale_if_error_serves_the_old_value_when_the_load_fails() -> None:
    clock = MockClock()
    cache = _cache(clock, ttl_s=10.0, stale_if_error_s=30.0)
    events = _record(cache)
    cache.get_or_load("k", lambda: "old")
    clock.advance(25.0)

    def failing() -> str:
        raise ConnectionError("down")

    assert cache.get_or_load("k", failing) == "old"
    stale = [e for e in events if isinstance(e, StaleServed)]
    assert [(e.key, e.reason) for e in stale] == [("k", "error")]


def test_stale_if_error_window_ends_and_the_error_is_raised() -> None:
    clock = MockClock()
    cache = _cache(clock, ttl_s=10.0, stale_if_error_s=30.0)
    cache.get_or_load("k", lambda: "old")
    clock.advance(40.0)

    def failing() -> str:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        cache.get_or_load("k", failing)
    assert len(cache) == 0  # the useless old entry is dropped


def test_without_stale_if_error_a_failed_load_raises() -> None:
    clock = MockClock()
    cache = _cache(clock, ttl_s=10.0)
    cache.get_or_load("k", lambda: "old")
    clock.advance(10.0)

    def failing() -> str:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        cache.get_or_load("k", failing)


def test_async_stale_if_error_reaches_every_waiter() -> None:
    async def main() -> None:
        clock = MockClock()
        cache = _cache(clock, ttl_s=10.0, stale_if_error_s=30.0)
        events = _record(cache)

        async def first() -> str:
            return "old"

        await cache.aget_or_load("k", first)
        clock.advance(11.0)
        loader = Gate(error=ConnectionError("down"))
        tasks = [asyncio.create_task(cache.aget_or_load("k", loader)) for _ in range(4)]
        await _settle()
        loader.release.set()
        assert await asyncio.gather(*tasks) == ["old"] * 4
        assert loader.calls == 1
        assert sum(isinstance(e, StaleServed) for e in events) == 4

    asyncio.run(main())


# -- negative caching -------------------------------------------------------------------------


def test_negative_caching_reraises_without_loading_until_negative_ttl() -> None:
    clock = MockClock()
    cache = _cache(clock, negative_ttl_s=2.0, negative_on=KeyError)
    calls = 0

    def missing() -> str:
        nonlocal calls
        calls += 1
        raise KeyError("user 7")

    for _ in range(3):
        with pytest.raises(KeyError):
            cache.get_or_load("k", missing)
    assert calls == 1
    clock.advance(1.999)
    with pytest.raises(KeyError):
        cache.get_or_load("k", missing)
    assert calls == 1
    clock.advance(0.001)
    assert cache.get_or_load("k", lambda: "found") == "found"


def test_negative_caching_ignores_unselected_exceptions() -> None:
    cache = _cache(MockClock(), negative_ttl_s=2.0, negative_on=KeyError)

    def failing() -> str:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        cache.get_or_load("k", failing)
    assert cache.get_or_load("k", lambda: "ok") == "ok"


def test_negative_answer_replaces_the_old_value() -> None:
    clock = MockClock()
    cache = _cache(
        clock, ttl_s=10.0, stale_if_error_s=30.0, negative_ttl_s=5.0, negative_on=KeyError
    )
    cache.get_or_load("k", lambda: "old")
    clock.advance(11.0)

    def deleted() -> str:
        raise KeyError("gone")

    with pytest.raises(KeyError):
        cache.get_or_load("k", deleted)
    with pytest.raises(KeyError):
        cache.get_or_load("k", lambda: "unused")


def test_reraised_cached_error_does_not_grow_its_traceback() -> None:
    cache = _cache(MockClock(), negative_ttl_s=2.0, negative_on=KeyError)

    def missing() -> str:
        raise KeyError("x")

    depths = []
    for _ in range(5):
        with pytest.raises(KeyError) as info:
            cache.get_or_load("k", missing)
        tb, depth = info.value.__traceback__, 0
        while tb is not None:
            depth, tb = depth + 1, tb.tb_next
        depths.append(depth)
    assert len(set(depths[1:])) == 1


# -- probabilistic early refresh (XFetch) -----------------------------------------------------


@pytest.mark.parametrize("gap_over_delta_beta", [0.25, 1.0, 2.0])
def test_early_refresh_fraction_follows_the_xfetch_formula(gap_over_delta_beta: float) -> None:
    """At ``gap`` seconds before expiry a hit refreshes with probability exp(-gap/(delta*beta))."""
    clock = MockClock()
    delta, beta, ttl = 0.5, 2.0, 100.0
    cache = _cache(clock, ttl_s=ttl, early_refresh_beta=beta, seed=1234)
    gap = gap_over_delta_beta * delta * beta
    calls = 0

    def load() -> str:
        nonlocal calls
        calls += 1
        clock.advance(delta)  # every load takes delta seconds
        return "v"

    trials, refreshed = 3000, 0
    for _ in range(trials):
        cache.invalidate("k")
        cache.get_or_load("k", load)  # a miss: no draw; expires at now + ttl
        clock.advance(ttl - gap)
        before = calls
        cache.get_or_load("k", load)  # one draw, gap seconds before expiry
        refreshed += calls - before
        clock.advance(gap + delta)
    expected = math.exp(-gap_over_delta_beta)
    # binomial standard deviation is at most 0.0092 here: the tolerance is about 4 of them
    assert refreshed / trials == pytest.approx(expected, abs=0.035)


def test_early_refresh_is_off_with_beta_zero() -> None:
    clock = MockClock()
    cache = _cache(clock, ttl_s=10.0)

    def slow() -> str:
        clock.advance(5.0)
        return "v"

    cache.get_or_load("k", slow)
    clock.advance(9.999)
    loader = Counter()
    for _ in range(200):
        assert cache.get_or_load("k", loader) == "v"
    assert loader.calls == 0


def test_async_early_refresh_serves_the_current_value_and_refreshes_in_background() -> None:
    async def main() -> None:
        clock = MockClock()
        cache = _cache(clock, ttl_s=10.0, early_refresh_beta=1000.0, seed=1)

        async def slow() -> str:
            await clock.asleep(1.0)
            return "old"

        task = asyncio.create_task(cache.aget_or_load("k", slow))
        await _settle()
        clock.advance(1.0)
        assert await task == "old"
        # delta * beta = 1000 s >> ttl: the draw fires almost surely
        refresh = Gate("new")
        assert await cache.aget_or_load("k", refresh) == "old"
        await _settle()
        assert refresh.calls == 1
        refresh.release.set()
        await _settle()
        cache_entry_value = await cache.aget_or_load("k", Gate("unused"))
        assert cache_entry_value == "new"

    asyncio.run(main())


# -- decorator and Pipeline -------------------------------------------------------------------


def test_decorator_caches_sync_function_per_arguments() -> None:
    cache = _cache(MockClock())
    calls: list[tuple[int, int]] = []

    @cache
    def add(a: int, b: int = 0) -> int:
        calls.append((a, b))
        return a + b

    assert add(1, b=2) == 3
    assert add(1, b=2) == 3
    assert add(2, b=2) == 4
    assert calls == [(1, 2), (2, 2)]
    assert add.__name__ == "add"


def test_decorator_caches_async_function_and_key_for_invalidates() -> None:
    async def main() -> None:
        cache = _cache(MockClock())
        calls = 0

        @cache
        async def user(user_id: int, *, full: bool = False) -> str:
            nonlocal calls
            calls += 1
            return f"user{user_id}{'+' if full else ''}"

        assert await user(7, full=True) == "user7+"
        assert await user(7, full=True) == "user7+"
        assert calls == 1
        cache.invalidate(cache.key_for(user, 7, full=True))
        assert await user(7, full=True) == "user7+"
        assert calls == 2

    asyncio.run(main())


def test_default_key_names_the_function_and_sorts_keyword_arguments() -> None:
    def f(*args: Any, **kwargs: Any) -> None:
        return None

    key = default_key(f, (1, "a"), {"b": 2, "a": 1})
    assert key == default_key(f, (1, "a"), {"a": 1, "b": 2})
    assert key.startswith(f"{__name__}.")
    assert "f(1, 'a')" in key
    assert default_key(f, (1,), {}) != default_key(f, (2,), {})


def test_pipeline_arun_uses_the_key_function_on_call_arguments() -> None:
    async def main() -> None:
        cache = _cache(MockClock(), key=lambda args, kwargs: f"user:{args[0]}")
        ran: list[Call] = []

        async def fetch(user_id: int, trace: str) -> str:
            return f"user{user_id}"

        def nxt(call: Call) -> Awaitable[Any]:
            ran.append(call)
            return run_async_call(call)

        assert await cache._arun(nxt, Call(fetch, (1, "t1"), {})) == "user1"
        assert await cache._arun(nxt, Call(fetch, (1, "t2"), {})) == "user1"
        assert await cache._arun(nxt, Call(fetch, (2, "t3"), {})) == "user2"
        assert len(ran) == 2
        assert cache.key_for(fetch, 1, "anything") == "user:1"

    asyncio.run(main())


def test_pipeline_run_sync_and_call() -> None:
    cache = _cache(MockClock())
    loader = Counter()

    def fetch(x: int) -> str:
        return f"{loader()}:{x}"

    assert cache._run(run_sync_call, Call(fetch, (1,), {})) == "v1:1"
    assert cache.call(fetch, 1) == "v1:1"
    assert cache.call(fetch, 2) == "v2:2"


def test_key_function_must_return_a_string() -> None:
    cache = _cache(MockClock(), key=lambda args, kwargs: args[0])
    with pytest.raises(TypeError, match="must return a str"):
        cache.call(lambda x: x, 42)


def test_cache_is_not_a_context_manager() -> None:
    cache = _cache(MockClock())
    assert not hasattr(cache, "__enter__")
    assert not hasattr(cache, "__aenter__")


# -- events, repr, config ---------------------------------------------------------------------


def test_events_tell_hits_misses_and_loads() -> None:
    clock = MockClock()
    cache = _cache(clock)
    events = _record(cache)

    def load() -> str:
        clock.advance(0.25)
        return "v"

    cache.get_or_load("k", load)
    cache.get_or_load("k", load)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["CacheMiss", "CacheLoaded", "CacheHit"]
    loaded = events[1]
    assert isinstance(loaded, CacheLoaded)
    assert (loaded.key, loaded.duration_s, loaded.ok) == ("k", 0.25, True)
    assert isinstance(events[2], CacheHit)
    assert events[2].policy == "cache"


def test_repr_shows_the_configuration() -> None:
    cache = Cache(ttl_s=30, max_entries=500, stale_s=5, name="users")
    text = repr(cache)
    assert text.startswith("Cache(ttl_s=30, max_entries=500, stale_s=5")
    assert "name='users'" in text
    assert "clock" not in text


@pytest.mark.parametrize(
    ("kwargs", "argument", "allowed"),
    [
        ({"ttl_s": 0, "max_entries": 1}, "ttl_s", "> 0"),
        ({"ttl_s": -1, "max_entries": 1}, "ttl_s", "> 0"),
        ({"ttl_s": 1}, "max_entries", "required unless store is given"),
        ({"ttl_s": 1, "max_entries": 0}, "max_entries", ">= 1"),
        ({"ttl_s": 1, "max_entries": 2.5}, "max_entries", "an integer"),
        ({"ttl_s": 1, "max_entries": 1, "stale_s": -1}, "stale_s", ">= 0"),
        ({"ttl_s": 1, "max_entries": 1, "stale_if_error_s": math.nan}, "stale_if_error_s", ">= 0"),
        ({"ttl_s": 1, "max_entries": 1, "negative_ttl_s": 1}, "negative_on", "at least one"),
        ({"ttl_s": 1, "max_entries": 1, "negative_on": KeyError}, "negative_ttl_s", "> 0 when"),
        (
            {"ttl_s": 1, "max_entries": 1, "negative_ttl_s": 1, "negative_on": "KeyError"},
            "negative_on",
            "exception class",
        ),
        (
            {
                "ttl_s": 1,
                "max_entries": 1,
                "negative_ttl_s": 1,
                "negative_on": asyncio.CancelledError,
            },
            "negative_on",
            "never cached",
        ),
        ({"ttl_s": 1, "max_entries": 1, "early_refresh_beta": -0.5}, "early_refresh_beta", ">= 0"),
        ({"ttl_s": 1, "max_entries": 1, "key": "user"}, "key", "callable"),
        ({"ttl_s": 1, "max_entries": 1, "seed": 1.5}, "seed", "integer"),
        ({"ttl_s": 1, "max_entries": 1, "store": MemoryCacheStore(1)}, "max_entries", "None when"),
        ({"ttl_s": 1, "store": {}}, "store", "CacheStore"),
    ],
)
def test_invalid_config_names_the_argument_value_and_range(
    kwargs: dict[str, Any], argument: str, allowed: str
) -> None:
    with pytest.raises(InvalidConfig) as info:
        Cache(**kwargs)
    assert info.value.owner == "Cache"
    assert info.value.name == argument
    message = str(info.value)
    assert message.startswith(f"Cache: {argument}=")
    assert allowed in message


def test_infinite_ttl_is_allowed() -> None:
    clock = MockClock()
    cache = _cache(clock, ttl_s=math.inf)
    cache.get_or_load("k", lambda: "v")
    clock.advance(1e9)
    assert cache.get_or_load("k", lambda: "other") == "v"


# -- property: one load per key per miss window -----------------------------------------------

KEYS = ("a", "b", "c")

operation = st.one_of(
    st.tuples(st.just("call"), st.sampled_from(KEYS)),
    st.tuples(st.just("finish"), st.sampled_from(KEYS)),
    st.tuples(st.just("fail"), st.sampled_from(KEYS)),
    st.tuples(st.just("advance"), st.sampled_from([1.0, 5.0, 10.0])),
    st.tuples(st.just("cancel"), st.sampled_from(KEYS)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, max_size=40))
def test_property_loader_runs_once_per_key_per_miss_window(
    ops: list[tuple[str, object]],
) -> None:
    """Concurrent misses of a key share one load; a new load starts only once the previous
    one has ended (with a value or an error) and no fresh value is left. Every caller that
    was not cancelled gets the answer of the window it arrived in."""

    async def main() -> None:
        clock = MockClock()
        cache = _cache(clock, ttl_s=10.0)
        loads = dict.fromkeys(KEYS, 0)
        pending: dict[str, list[asyncio.Future[str]]] = {k: [] for k in KEYS}

        def loader_for(key: str) -> Callable[[], Awaitable[str]]:
            async def load() -> str:
                loads[key] += 1
                fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
                pending[key].append(fut)
                return await fut

            return load

        # the model: per key, how many windows opened, whether one is open, the fresh value
        windows = dict.fromkeys(KEYS, 0)
        open_window = dict.fromkeys(KEYS, False)
        fresh: dict[str, tuple[float, str]] = {}
        outcome: dict[tuple[str, int], str] = {}  # (key, window) -> answer
        callers: list[tuple[asyncio.Task[str], str, int | str]] = []

        def close(key: str, answer: str, *, ok: bool) -> None:
            fut = pending[key].pop(0)
            if ok:
                fut.set_result(answer)
                fresh[key] = (clock.now() + 10.0, answer)
            else:
                fut.set_exception(ConnectionError(answer))
            outcome[(key, windows[key])] = answer if ok else f"error {answer}"
            open_window[key] = False

        for op, arg in ops:
            if op == "advance":
                clock.advance(float(arg))  # type: ignore[arg-type]
            elif op == "call":
                key = str(arg)
                expected: int | str
                if key in fresh and clock.now() < fresh[key][0]:
                    expected = fresh[key][1]  # a hit
                else:
                    if not open_window[key]:
                        windows[key] += 1
                        open_window[key] = True
                    expected = windows[key]
                task = asyncio.create_task(cache.aget_or_load(key, loader_for(key)))
                callers.append((task, key, expected))
            elif op == "cancel":
                waiting = [t for t, k, _ in callers if k == arg and not t.done()]
                if waiting:
                    waiting[0].cancel()  # a caller gives up; the load must go on
            elif pending[str(arg)]:
                key = str(arg)
                close(key, f"{key}#{windows[key]}", ok=op == "finish")
            await _settle()
            assert loads == windows

        for key in KEYS:
            if pending[key]:
                close(key, f"{key}#{windows[key]}", ok=True)
        await _settle()
        assert loads == windows
        for task, key, expected in callers:
            if task.cancelled():
                continue
            try:
                got = await task
            except ConnectionError as exc:
                got = f"error {exc}"
            assert got == (expected if isinstance(expected, str) else outcome[(key, expected)])

    asyncio.run(main())
