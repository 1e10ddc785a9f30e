"""RedisCacheStore against real Redis: values shared by several Cache instances ("replicas"),
expiry kept by Redis, single-flight across spawned processes (and after a loader is killed),
and a Redis that is unreachable, or stops and comes back."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from brownout.errors import InvalidConfig
from brownout.events import CacheHit, Event, StaleServed
from brownout.guard import deadline
from brownout.guard._cache import BUSY, Cache, SharedCacheStore
from brownout.stores import StoreRecovered, StoreUnavailable
from brownout.stores._cache import (
    CacheLoadWaited,
    CacheNotShared,
    JsonCodec,
    PickleCodec,
    RedisCacheStore,
    _RedisLease,
)
from brownout.testing import MockClock

pytestmark = pytest.mark.redis

WAIT_S = 10.0  # bound on any wait; never reached when things work
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of the test's own; every key under it is deleted afterwards."""
    name = f"test:cache:{uuid.uuid4().hex}:"
    yield name
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=name + "*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


class Stores:
    """Makes stores and closes them at the end of the test."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.made: list[RedisCacheStore] = []

    def __call__(self, **kwargs: Any) -> RedisCacheStore:
        kwargs.setdefault("prefix", self.prefix)
        store = RedisCacheStore(url=self.url, **kwargs)
        self.made.append(store)
        return store


@pytest.fixture
def stores(redis_url: str, prefix: str) -> Iterator[Stores]:
    made = Stores(redis_url, prefix)
    yield made
    for store in made.made:
        store.close()


class Counter:
    def __init__(self, value: object = "v") -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> object:
        self.calls += 1
        return self.value


def _take(store: RedisCacheStore, key: str) -> _RedisLease:
    """Take the load lock of ``key`` as another process's loader would."""
    got = store.claim(key, wait=False, early=False)
    assert isinstance(got, _RedisLease), got
    return got


def _record(cache: Cache) -> list[Event]:
    seen: list[Event] = []
    cache.events.subscribe(seen.append)
    return seen


# -- sharing -----------------------------------------------------------------------------


def test_it_is_a_shared_cache_store(stores: Stores) -> None:
    store = stores()
    assert isinstance(store, SharedCacheStore)


def test_two_replicas_share_a_value(stores: Stores) -> None:
    a = Cache(ttl_s=60, store=stores())
    b = Cache(ttl_s=60, store=stores())
    first, second = Counter({"id": 1, "tags": ["x"]}), Counter("other")
    assert a.get_or_load("user:1", first) == {"id": 1, "tags": ["x"]}
    seen = _record(b)
    assert b.get_or_load("user:1", second) == {"id": 1, "tags": ["x"]}
    assert (first.calls, second.calls) == (1, 0)
    assert [type(e) for e in seen] == [CacheHit]


def test_async_replicas_share_values_with_sync_ones(stores: Stores) -> None:
    sync_side = Cache(ttl_s=60, store=stores())
    sync_side.get_or_load("k", Counter("from sync"))
    store = stores()
    async_side = Cache(ttl_s=60, store=store)

    async def never() -> str:
        raise AssertionError("must not load")

    async def loads() -> str:
        return "from async"

    async def main() -> tuple[object, object]:
        try:
            got = await async_side.aget_or_load("k", never)
            put = await async_side.aget_or_load("k2", loads)
            return got, put
        finally:
            await store.aclose()

    assert asyncio.run(main()) == ("from sync", "from async")
    assert sync_side.get_or_load("k2", Counter("no")) == "from async"


def test_invalidate_reaches_every_replica(stores: Stores) -> None:
    a = Cache(ttl_s=60, store=stores())
    b = Cache(ttl_s=60, store=stores())
    a.get_or_load("k", Counter("old"))
    b.invalidate("k")
    fresh = Counter("new")
    assert a.get_or_load("k", fresh) == "new"
    assert fresh.calls == 1


def test_len_and_clear_cover_every_replica(stores: Stores, raw: redis.Redis) -> None:
    a = Cache(ttl_s=60, store=stores())
    b = Cache(ttl_s=60, store=stores())
    for i in range(5):
        a.get_or_load(f"k{i}", Counter(i))
    assert len(b) == 5
    b.clear()
    assert len(a) == 0
    assert list(raw.scan_iter(match=stores.prefix + "*")) == []


# -- expiry --------------------------------------------------------------------------------


def test_ttl_maps_to_px_plus_the_stale_window(stores: Stores, raw: redis.Redis) -> None:
    cache = Cache(ttl_s=30, stale_s=10, store=stores())
    cache.get_or_load("k", Counter())
    pttl = raw.pttl(stores.prefix + "v:k")
    assert 39_000 < pttl <= 40_000
    entry = cache._state.store.get("k")
    assert entry is not None
    # Fresh for ~30 s from now on the cache's clock, whatever that clock reads.
    assert 29.0 < entry.expires_at - cache.clock.now() <= 30.0


def test_infinite_ttl_never_expires_in_redis(stores: Stores, raw: redis.Redis) -> None:
    cache = Cache(ttl_s=float("inf"), store=stores())
    cache.get_or_load("k", Counter())
    assert raw.pttl(stores.prefix + "v:k") == -1
    entry = cache._state.store.get("k")
    assert entry is not None
    assert entry.expires_at == float("inf")


def test_value_expires_after_ttl(stores: Stores) -> None:
    a = Cache(ttl_s=0.15, store=stores())
    b = Cache(ttl_s=0.15, store=stores())
    loader = Counter()
    a.get_or_load("k", loader)
    b.get_or_load("k", loader)
    assert loader.calls == 1
    end = time.monotonic() + WAIT_S
    while b._state.store.get("k") is not None:  # Redis keeps the time: wait for it
        assert time.monotonic() < end, "the entry never expired"
        time.sleep(0.05)
    b.get_or_load("k", loader)
    assert loader.calls == 2


def test_a_stale_value_is_served_while_one_replica_refreshes(stores: Stores) -> None:
    """The expiry is Redis's: wait (for real, briefly) until the entry is stale."""
    a = Cache(ttl_s=0.1, stale_s=30, store=stores())
    b = Cache(ttl_s=0.1, stale_s=30, store=stores())
    a.get_or_load("k", Counter("old"))
    time.sleep(0.15)
    # Another process is refreshing: b holds no lock, so it serves the stale value at once.
    holder = stores()
    Cache(ttl_s=0.1, stale_s=30, store=holder)
    lease = _take(holder, "k")
    seen = _record(b)
    refresh = Counter("new")
    assert b.get_or_load("k", refresh) == "old"
    assert refresh.calls == 0
    assert any(isinstance(e, StaleServed) for e in seen)
    lease.release()
    # With the lock free, b refreshes inline and gets the new value.
    assert b.get_or_load("k", refresh) == "new"
    assert refresh.calls == 1
    assert a.get_or_load("k", Counter("unused")) == "new"


def test_claim_answers_busy_without_waiting(stores: Stores) -> None:
    store = stores(max_wait_s=0.05)
    Cache(ttl_s=60, store=store)
    lease = _take(store, "k")
    assert store.claim("k", wait=False, early=False) is BUSY
    assert store.claim("k", wait=True, early=False) is None  # waited max_wait_s in vain
    lease.release()
    _take(store, "k").release()


def test_only_the_owner_releases_the_lock(stores: Stores, raw: redis.Redis) -> None:
    store = stores(lease_s=0.05)
    Cache(ttl_s=60, store=store)
    first = _take(store, "k")
    time.sleep(0.1)  # its lease runs out
    second = _take(store, "k")
    first.release()  # must not delete the second owner's lock
    assert raw.exists(stores.prefix + "l:k") == 1
    second.release()
    assert raw.exists(stores.prefix + "l:k") == 0


# -- single-flight across processes ----------------------------------------------------------

PROCESSES = 4


def _replica(url: str, prefix: str, start: Any, results: Any) -> None:
    """One replica: waits for the others, then misses the same key at the same moment."""
    counter = redis.Redis.from_url(url)
    store = RedisCacheStore(url=url, prefix=prefix)
    try:
        cache = Cache(ttl_s=60, store=store)
        cache.get_or_load("warm", lambda: 0)  # connect and load the scripts first

        def load() -> int:
            n = int(counter.incr(prefix + "loads"))
            time.sleep(0.3)  # a slow query: the others arrive while it runs
            return 1000 + n

        start.wait()
        results.put(cache.get_or_load("hot", load))
    finally:
        store.close()
        counter.close()


def _spawn(ctx: Any, target: Any, *args: Any) -> Any:
    proc = ctx.Process(target=target, args=args)
    proc.start()
    return proc


def _reap(procs: list[Any]) -> None:
    for proc in procs:
        proc.join(timeout=WAIT_S)
        if proc.is_alive():
            proc.kill()
            proc.join()


@pytest.mark.slow
def test_one_load_across_processes(redis_url: str, prefix: str, raw: redis.Redis) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    procs = [_spawn(ctx, _replica, redis_url, prefix, start, results) for _ in range(PROCESSES)]
    try:
        values = [results.get(timeout=30) for _ in procs]
    finally:
        _reap(procs)
    assert all(proc.exitcode == 0 for proc in procs)
    assert int(raw.get(prefix + "loads") or 0) == 1
    assert values == [1001] * PROCESSES
    results.close()
    results.join_thread()


def _dying_loader(url: str, prefix: str, lease_s: float, started: Any) -> None:
    """A replica that takes the lock, says so, and hangs in its loader until killed."""
    store = RedisCacheStore(url=url, prefix=prefix, lease_s=lease_s)
    cache = Cache(ttl_s=60, store=store)

    def hang() -> str:
        started.set()
        time.sleep(60)
        return "never"

    cache.get_or_load("hot", hang)


@pytest.mark.slow
def test_a_killed_loader_blocks_the_others_only_until_its_lease_runs_out(
    redis_url: str, prefix: str, stores: Stores
) -> None:
    lease_s = 0.5
    ctx = multiprocessing.get_context("spawn")
    started = ctx.Event()
    proc = _spawn(ctx, _dying_loader, redis_url, prefix, lease_s, started)
    try:
        assert started.wait(timeout=30)
        proc.kill()
        proc.join(timeout=WAIT_S)
        killed_at = time.monotonic()
        cache = Cache(ttl_s=60, store=stores(lease_s=lease_s))
        seen = _record(cache)
        loader = Counter("mine")
        assert cache.get_or_load("hot", loader) == "mine"
        waited = time.monotonic() - killed_at
    finally:
        _reap([proc])
    assert loader.calls == 1
    waits = [e for e in seen if isinstance(e, CacheLoadWaited)]
    assert [e.outcome for e in waits] == ["lock"]
    assert 0 < waits[0].waited_s <= lease_s + 0.2
    assert waited <= lease_s + 0.5


def test_threads_of_several_replicas_load_once(stores: Stores, raw: redis.Redis) -> None:
    """The same as across processes, with 4 caches (stores and connections of their own) x 4
    threads in this process: one load in all."""
    caches = [Cache(ttl_s=60, store=stores()) for _ in range(4)]
    key = stores.prefix + "loads"
    barrier = threading.Barrier(16)
    results: list[object] = []

    def load() -> int:
        n = int(raw.incr(key))
        time.sleep(0.2)
        return n

    def run(cache: Cache) -> None:
        barrier.wait()
        results.append(cache.get_or_load("hot", load))

    threads = [threading.Thread(target=run, args=(c,)) for c in caches for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert results == [1] * 16
    assert int(raw.get(key) or 0) == 1


def test_async_misses_of_several_replicas_load_once(stores: Stores, raw: redis.Redis) -> None:
    made = [stores() for _ in range(3)]
    caches = [Cache(ttl_s=60, store=s) for s in made]
    key = stores.prefix + "loads"

    async def load() -> int:
        n = int(raw.incr(key))
        await asyncio.sleep(0.2)
        return n

    async def main() -> list[object]:
        try:
            return await asyncio.gather(*(c.aget_or_load("hot", load) for c in caches * 3))
        finally:
            for s in made:
                await s.aclose()

    assert asyncio.run(main()) == [1] * 9
    assert int(raw.get(key) or 0) == 1


def test_a_waiting_miss_gives_up_at_its_deadline(stores: Stores) -> None:
    holder = stores()
    Cache(ttl_s=60, store=holder)
    lease = _take(holder, "k")  # a loader elsewhere, still running
    cache = Cache(ttl_s=60, store=stores(lease_s=5.0))
    seen = _record(cache)
    started = time.monotonic()
    with deadline(0.2):
        assert cache.get_or_load("k", Counter("mine")) == "mine"
    assert time.monotonic() - started < 1.0  # not max_wait_s (10 s)
    assert [e.outcome for e in seen if isinstance(e, CacheLoadWaited)] == ["timeout"]
    lease.release()


# -- codecs ----------------------------------------------------------------------------------


def test_json_cannot_share_every_value_but_the_caller_still_gets_it(stores: Stores) -> None:
    a = Cache(ttl_s=60, store=stores())
    b = Cache(ttl_s=60, store=stores())
    seen = _record(a)
    assert a.get_or_load("k", Counter({1, 2})) == {1, 2}
    assert any(isinstance(e, CacheNotShared) and e.reason.startswith("encode") for e in seen)
    again = Counter({3})
    assert b.get_or_load("k", again) == {3}
    assert again.calls == 1


def test_json_turns_tuples_into_lists(stores: Stores) -> None:
    a = Cache(ttl_s=60, store=stores())
    b = Cache(ttl_s=60, store=stores())
    a.get_or_load("k", Counter((1, 2)))
    assert b.get_or_load("k", Counter()) == [1, 2]


def test_pickle_shares_python_values_and_cached_errors(stores: Stores) -> None:
    a = Cache(
        ttl_s=60,
        negative_ttl_s=30,
        negative_on=KeyError,
        store=stores(codec=PickleCodec()),
    )
    b = Cache(
        ttl_s=60,
        negative_ttl_s=30,
        negative_on=KeyError,
        store=stores(codec=PickleCodec()),
    )
    a.get_or_load("t", Counter((1, frozenset({2}))))
    assert b.get_or_load("t", Counter()) == (1, frozenset({2}))

    def missing() -> None:
        raise KeyError("user 7")

    with pytest.raises(KeyError):
        a.get_or_load("u7", missing)
    loader = Counter()
    with pytest.raises(KeyError, match="user 7"):
        b.get_or_load("u7", loader)
    assert loader.calls == 0


def test_an_entry_another_codec_wrote_is_a_miss(stores: Stores) -> None:
    Cache(ttl_s=60, store=stores(codec=PickleCodec())).get_or_load("k", Counter({1}))
    b = Cache(ttl_s=60, store=stores(codec=JsonCodec()))
    seen = _record(b)
    loader = Counter("json")
    assert b.get_or_load("k", loader) == "json"
    assert loader.calls == 1
    assert any(isinstance(e, CacheNotShared) and e.reason.startswith("decode") for e in seen)


def test_foreign_bytes_are_a_miss(stores: Stores, raw: redis.Redis) -> None:
    raw.set(stores.prefix + "v:k", b"not an entry")
    cache = Cache(ttl_s=60, store=stores())
    assert cache.get_or_load("k", Counter("loaded")) == "loaded"


# -- Redis away ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_redis_falls_back_to_the_loader() -> None:
    clock = MockClock()
    store = RedisCacheStore(url=f"redis://127.0.0.1:{free_port()}/0", retry_interval_s=1.0)
    try:
        cache = Cache(ttl_s=60, store=store, clock=clock)
        seen = _record(cache)
        loader = Counter("loaded")
        assert cache.get_or_load("k", loader) == "loaded"
        assert cache.get_or_load("k", loader) == "loaded"  # nothing shared: loads again
        assert loader.calls == 2
        assert store.down
        assert len(cache) == 0
        cache.invalidate("k")
        cache.clear()
        down = [e for e in seen if isinstance(e, StoreUnavailable)]
        assert len(down) == 1
        assert down[0].policy == "cache"
        assert "ConnectionError" in down[0].error
    finally:
        store.close()


def test_unreachable_redis_in_async_code_falls_back_too() -> None:
    store = RedisCacheStore(url=f"redis://127.0.0.1:{free_port()}/0")
    cache = Cache(ttl_s=60, store=store)
    seen = _record(cache)

    async def load() -> str:
        return "loaded"

    async def main() -> object:
        try:
            return await cache.aget_or_load("k", load)
        finally:
            await store.aclose()

    assert asyncio.run(main()) == "loaded"
    assert any(isinstance(e, StoreUnavailable) for e in seen)


def test_redis_is_left_alone_for_the_retry_interval() -> None:
    clock = MockClock()
    store = RedisCacheStore(url=f"redis://127.0.0.1:{free_port()}/0", retry_interval_s=1.0)
    calls = 0
    try:
        cache = Cache(ttl_s=60, store=store, clock=clock)
        cache.get_or_load("k", Counter())
        real = store._sync_client().execute_command

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            return real(*args, **kwargs)

        store._sync.execute_command = counting
        for _ in range(10):
            cache.get_or_load("k", Counter())
        assert calls == 0
        clock.advance(1.0)
        cache.get_or_load("k", Counter())
        assert calls == 1  # one try, then left alone again
    finally:
        store.close()


class RedisServer:
    """A private ``redis-server`` on ``port`` (no persistence), to stop and start again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        self.proc = subprocess.Popen(
            [REDIS_SERVER, *args, "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        end = time.monotonic() + WAIT_S
        while True:
            try:
                client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
                try:
                    if client.ping():
                        return
                finally:
                    client.close()
            except redis.ConnectionError:
                pass
            if time.monotonic() > end or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.wait(WAIT_S)


@pytest.fixture
def server(redis_url: str) -> Iterator[RedisServer]:
    if not os.path.exists(REDIS_SERVER):
        pytest.skip("redis-server is not installed")
    srv = RedisServer(free_port())
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.slow
def test_sharing_resumes_when_redis_comes_back(server: RedisServer) -> None:
    clock = MockClock()
    a_store = RedisCacheStore(url=server.url, retry_interval_s=1.0)
    b_store = RedisCacheStore(url=server.url, retry_interval_s=1.0)
    try:
        a = Cache(ttl_s=60, store=a_store, clock=clock)
        b = Cache(ttl_s=60, store=b_store, clock=clock)
        seen = _record(a)
        a.get_or_load("k", Counter("before"))
        assert b.get_or_load("k", Counter()) == "before"
        server.stop()
        a.invalidate("k")  # cannot reach Redis: the old entry will come back
        fresh = Counter("during")
        assert a.get_or_load("k", fresh) == "during"
        assert a_store.down
        server.start()  # empty: no persistence
        clock.advance(1.0)
        assert a.get_or_load("k", Counter("after")) == "after"
        assert not a_store.down
        assert b.get_or_load("k", Counter("b")) in ("after", "b")
        kinds = [type(e) for e in seen if isinstance(e, StoreUnavailable | StoreRecovered)]
        assert kinds == [StoreUnavailable, StoreRecovered]
    finally:
        a_store.close()
        b_store.close()


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "client"),
        ({"url": 5}, "url"),
        ({"url": "redis://x", "prefix": 3}, "prefix"),
        ({"url": "redis://x", "codec": "json"}, "codec"),
        ({"url": "redis://x", "lease_s": 0}, "lease_s"),
        ({"url": "redis://x", "max_wait_s": -1}, "max_wait_s"),
        ({"url": "redis://x", "retry_interval_s": 0}, "retry_interval_s"),
        ({"url": "redis://x", "timeout_s": 0}, "timeout_s"),
    ],
)
def test_bad_configuration_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        RedisCacheStore(**kwargs)
    assert info.value.name == field


def test_a_decoding_client_is_refused(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        with pytest.raises(InvalidConfig) as info:
            RedisCacheStore(client)
        assert info.value.name == "client"
    finally:
        client.close()


def test_a_given_sync_client_serves_async_paths_inline(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        cache = Cache(ttl_s=60, store=RedisCacheStore(client, prefix=prefix))

        async def load() -> str:
            return "v"

        assert asyncio.run(cache.aget_or_load("k", load)) == "v"
        assert cache.get_or_load("k", Counter("no")) == "v"
    finally:
        client.close()


def test_max_wait_defaults_to_two_leases() -> None:
    store = RedisCacheStore(url="redis://127.0.0.1:6379/0", lease_s=3.0)
    assert store.max_wait_s == 6.0
    assert "lease_s=3.0" in repr(store)
