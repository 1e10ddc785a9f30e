"""RedisStore against real Redis: the shared server (``redis_url``) for the conformance
suite, and a private ``redis-server`` of each test's own for what must not touch the shared
one: counting commands, killing Redis and starting it again."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio

from brownout.errors import InvalidConfig
from brownout.events import Event
from brownout.guard._ratelimit import Decision, MemoryStore, RateLimit, RateStore
from brownout.stores import RedisStore, StoreRecovered, StoreUnavailable
from brownout.stores._redis import GCRA, INSTALL_HINT
from brownout.testing import MockClock
from brownout.testing._stores import RATE_STORE_CHECKS, acheck_rate_store, check_rate_store

pytestmark = pytest.mark.redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
WAIT_S = 5.0  # bound on any wait for a server; never reached when things work
RETRY_S = 0.2  # the stores' retry interval in the tests with a real clock
TOLERANCE_S = 0.25  # decisions' reported times vs exact ones, with Redis keeping time


# -- helpers -----------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released: connecting is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A ``redis-server`` on ``port`` without persistence; ``start`` waits until it answers."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.proc is None
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--loglevel", "warning"]
        self.proc = subprocess.Popen(
            [REDIS_SERVER, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + WAIT_S
        while not _answers(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.01)

    def stop(self) -> None:
        """Kill it (SIGKILL: a crash, not a shutdown) and wait until it is gone."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.wait(timeout=WAIT_S)

    def commands(self, admin: redis.Redis) -> dict[str, int]:
        """Calls per command since the server started (``INFO commandstats``), commands run
        by scripts included."""
        stats = admin.info("commandstats")
        return {name.removeprefix("cmdstat_"): row["calls"] for name, row in stats.items()}


@pytest.fixture
def private_redis(redis_url: str) -> Iterator[RedisServer]:
    """A redis-server of this test's own (``redis_url`` brings the skip / fail-in-CI rule)."""
    if not shutil.which(REDIS_SERVER):
        pytest.skip("redis-server is not installed")
    server = RedisServer(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


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
def store(redis_url: str, prefix: str) -> Iterator[RedisStore]:
    store = RedisStore(url=redis_url, prefix=prefix)
    yield store
    store.close()


def _gcra(store: RateStore, key: str, *, interval: float = 10.0, burst: int = 2) -> Decision:
    return store.gcra(
        key, interval_s=interval, tolerance_s=(burst - 1) * interval, cost=1, now=time.monotonic()
    )


def _recorder(store: RedisStore) -> list[Event]:
    seen: list[Event] = []
    store.events.subscribe(seen.append)
    return seen


def _counting(client: Any) -> list[tuple[Any, ...]]:
    """Record every command ``client`` sends (wraps its ``execute_command``)."""
    sent: list[tuple[Any, ...]] = []
    original = client.execute_command

    def execute_command(*args: Any, **kwargs: Any) -> Any:
        sent.append(args)
        return original(*args, **kwargs)

    client.execute_command = execute_command
    return sent


# -- conformance ---------------------------------------------------------------------------


@pytest.mark.parametrize("check", RATE_STORE_CHECKS)
def test_conformance(store: RedisStore, check: str) -> None:
    check_rate_store(
        store, now=time.monotonic, wait=time.sleep, tolerance_s=TOLERANCE_S, checks=(check,)
    )
    assert not store.down


@pytest.mark.parametrize("check", RATE_STORE_CHECKS)
def test_conformance_async(store: RedisStore, check: str) -> None:
    async def main() -> None:
        try:
            await acheck_rate_store(
                store, now=time.monotonic, wait=time.sleep, tolerance_s=TOLERANCE_S, checks=(check,)
            )
        finally:
            await store.aclose()

    asyncio.run(main())
    assert not store.down


def test_conformance_with_given_clients(redis_url: str, prefix: str) -> None:
    """A sync client (also used inline by agcra) and an asyncio one, RESP2 and RESP3, bytes
    and str replies."""
    with redis.Redis.from_url(redis_url, decode_responses=True, protocol=3) as client:
        store = RedisStore(client, prefix=prefix + "sync:")
        check_rate_store(store, now=time.monotonic, wait=time.sleep, tolerance_s=TOLERANCE_S)

        async def inline() -> None:
            await acheck_rate_store(
                store, now=time.monotonic, wait=time.sleep, tolerance_s=TOLERANCE_S, prefix="i:"
            )

        asyncio.run(inline())

    async def main() -> None:
        aclient = redis.asyncio.Redis.from_url(redis_url)
        try:
            astore = RedisStore(aclient, prefix=prefix + "async:")
            await acheck_rate_store(
                astore, now=time.monotonic, wait=time.sleep, tolerance_s=TOLERANCE_S
            )
            with pytest.raises(InvalidConfig, match="sync decisions"):
                _gcra(astore, "k")
        finally:
            await aclient.aclose()

    asyncio.run(main())


# -- what Redis does -----------------------------------------------------------------------


def test_redis_time_decides_not_the_callers_clock(store: RedisStore) -> None:
    """``now`` is ignored while Redis answers: wild values change nothing."""
    decide = store.gcra
    args: dict[str, Any] = {"interval_s": 10.0, "tolerance_s": 10.0, "cost": 1}
    assert decide("k", now=0.0, **args).allowed
    assert decide("k", now=1e9, **args).allowed
    refused = decide("k", now=-5.0, **args)
    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(10.0, abs=TOLERANCE_S)


def test_keys_expire_when_their_tat_passes(store: RedisStore, redis_url: str, prefix: str) -> None:
    decision = _gcra(store, "k", interval=7.0, burst=3)
    _gcra(store, "untouched", interval=7.0).remaining  # noqa: B018
    with redis.Redis.from_url(redis_url) as client:
        ttl_ms = client.pttl(prefix + "k")
        assert decision.reset_after_s * 1000 - 250 <= ttl_ms <= decision.reset_after_s * 1000 + 1
        store.gcra("peek", interval_s=1.0, tolerance_s=0.0, cost=0, now=0.0)
        assert client.exists(prefix + "peek") == 0  # cost 0 writes nothing


def test_replicas_share_one_bucket(redis_url: str, prefix: str) -> None:
    """Two processes' limits (two stores, two clients) with one name share their bucket."""
    first, second = (RedisStore(url=redis_url, prefix=prefix) for _ in range(2))
    try:
        a = RateLimit(rate=0.1, burst=3, store=first, name="api")
        b = RateLimit(rate=0.1, burst=3, store=second, name="api")
        other = RateLimit(rate=0.1, burst=3, store=second, name="login")
        assert [a.check("u").allowed, b.check("u").allowed, a.check("u").allowed] == [True] * 3
        assert not b.check("u").allowed
        assert other.check("u").allowed
    finally:
        first.close()
        second.close()


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {n: after[n] - before.get(n, 0) for n in after if after[n] != before.get(n, 0)}


def test_one_round_trip_per_decision(private_redis: RedisServer) -> None:
    """Redis sees one command from the client per decision (EVALSHA), sync and asyncio; every
    other command it counts ran inside that script (TIME, GET, and SET when admitted).
    After a SCRIPT FLUSH, one decision costs EVALSHA + EVAL, then one command again."""
    store = RedisStore(url=private_redis.url)
    limit = RateLimit(rate=0.001, burst=20, store=store)
    admin = redis.Redis(port=private_redis.port)
    try:
        limit.check("warm")  # connection handshake and first EVAL of the script
        admin.ping()
        before = private_redis.commands(admin)
        allowed = sum(limit.check(f"k{i % 2}").allowed for i in range(50))
        assert allowed == 40
        after = private_redis.commands(admin)
        assert _delta(before, after) == {"evalsha": 50, "time": 50, "get": 50, "set": 40, "info": 1}

        async def main() -> None:
            try:
                await limit.acheck("warm2")
                before = private_redis.commands(admin)
                for _ in range(30):
                    await limit.acheck("k2")
                after = private_redis.commands(admin)
                want = {"evalsha": 30, "time": 30, "get": 30, "set": 20, "info": 1}
                assert _delta(before, after) == want
            finally:
                await store.aclose()

        asyncio.run(main())

        limit.check("warm3")  # aclose closed the sync client too: connect again
        admin.script_flush()
        before = private_redis.commands(admin)
        limit.check("k3")
        limit.check("k3")
        after = private_redis.commands(admin)
        want = {"evalsha": 2, "eval": 1, "time": 2, "get": 2, "set": 2, "info": 1}
        assert _delta(before, after) == want
    finally:
        store.close()
        admin.close()


def test_the_script_takes_keys_as_keys_and_values_as_argv(store: RedisStore) -> None:
    """Nothing is formatted into the script: one script text whatever the key or values."""
    client = store._sync_client()
    sent = _counting(client)
    store.gcra("a'b\"c", interval_s=0.5, tolerance_s=1.5, cost=2, now=0.0)
    # ARGV: the increment cost * T, and the limit tau + T plus the slack T * 1e-6.
    key = (store.prefix + "a'b\"c").encode()
    assert sent == [("EVALSHA", GCRA.sha, b"1", key, b"1.0", b"2.0000005")]


# -- Redis unreachable ---------------------------------------------------------------------


def test_fail_open_decides_locally_without_raising() -> None:
    clock = MockClock()
    store = RedisStore(url=f"redis://127.0.0.1:{free_port()}/0", clock=clock)
    seen = _recorder(store)
    limit = RateLimit(rate=1.0, burst=2, store=store, clock=clock, name="api")
    try:
        assert [limit.check("u").allowed for _ in range(3)] == [True, True, False]
        assert limit.check("v").allowed  # keys stay independent in the local limit
        clock.advance(1.0)
        assert limit.check("u").allowed  # and the local limit refills at the rate
    finally:
        store.close()
    assert store.down
    assert len(seen) == 1
    assert isinstance(seen[0], StoreUnavailable)
    assert seen[0].policy == "redis"
    assert "ConnectionError" in seen[0].error


def test_a_redis_that_never_answers_times_out_into_the_fallback() -> None:
    """A peer that accepts connections and never replies (a hung Redis): the decision waits
    at most the store's timeout (plus one reconnection), then falls back."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        store = RedisStore(url=url, timeout_s=0.05)
        seen = _recorder(store)
        limit = RateLimit(rate=1.0, burst=1, store=store)
        try:
            start = time.monotonic()
            assert limit.check().allowed
            assert time.monotonic() - start < 1.0
            assert not limit.check().allowed  # the local limit, without waiting again
        finally:
            store.close()
    assert [type(e) for e in seen] == [StoreUnavailable]
    assert "Timeout" in seen[0].error  # type: ignore[attr-defined]


def test_fail_open_applies_the_local_share_of_the_rate() -> None:
    clock = MockClock()
    store = RedisStore(url=f"redis://127.0.0.1:{free_port()}/0", clock=clock, local_share=0.25)
    limit = RateLimit(rate=4.0, burst=1, store=store, clock=clock)
    try:
        assert limit.check().allowed
        clock.advance(0.5)
        assert not limit.check().allowed  # 1/s locally: not yet
        clock.advance(0.5)
        assert limit.check().allowed
    finally:
        store.close()


def test_fail_closed_refuses_until_redis_is_tried_again() -> None:
    clock = MockClock()
    store = RedisStore(url=f"redis://127.0.0.1:{free_port()}/0", clock=clock, fail="closed")
    limit = RateLimit(rate=100.0, burst=10, store=store, clock=clock)
    try:
        first = limit.check()
        assert (first.allowed, first.remaining) == (False, 0)
        assert first.retry_after_s == pytest.approx(1.0)
        clock.advance(0.25)
        assert limit.check().retry_after_s == pytest.approx(0.75)
    finally:
        store.close()


def test_redis_is_tried_at_most_once_per_retry_interval() -> None:
    """While Redis is away, requests do not each try it: one attempt per interval."""
    clock = MockClock()
    store = RedisStore(url=f"redis://127.0.0.1:{free_port()}/0", clock=clock)
    sent = _counting(store._sync_client())
    limit = RateLimit(rate=1000.0, store=store, clock=clock)
    try:
        for _ in range(200):
            limit.check()
        assert len(sent) == 1
        clock.advance(0.9)
        for _ in range(200):
            limit.check()
        assert len(sent) == 1
        clock.advance(0.1)
        for _ in range(200):
            limit.check()
        assert len(sent) == 2
    finally:
        store.close()


class FlakyClient:
    """A stand-in sync client: raises ConnectionError while ``up`` is False, else answers
    like the GCRA script for a fresh key (admitted, nothing ahead)."""

    def __init__(self) -> None:
        self.up = False
        self.calls = 0

    def execute_command(self, *args: Any) -> Any:
        self.calls += 1
        if not self.up:
            raise redis.ConnectionError("refused")
        return 0


def test_an_inline_sync_client_goes_down_and_recovers_in_async_code() -> None:
    """agcra on a store given a sync client: the same pacing, fallback and events."""
    clock = MockClock()
    client = FlakyClient()
    store = RedisStore(client, clock=clock, fail="closed")  # type: ignore[arg-type]
    seen = _recorder(store)
    limit = RateLimit(rate=1.0, store=store, clock=clock)

    async def main() -> list[bool]:
        got = [(await limit.acheck()).allowed for _ in range(3)]
        client.up = True
        got.append((await limit.acheck()).allowed)  # still left alone: refused
        clock.advance(1.0)
        got.append((await limit.acheck()).allowed)  # tried again: Redis answers
        return got

    assert asyncio.run(main()) == [False, False, False, False, True]
    assert client.calls == 2
    assert [type(e) for e in seen] == [StoreUnavailable, StoreRecovered]


def test_an_error_reply_is_absorbed_too(store: RedisStore, redis_url: str, prefix: str) -> None:
    """A key holding something else (WRONGTYPE) makes the script fail: the app sees a local
    decision, never the error."""
    with redis.Redis.from_url(redis_url) as client:
        client.rpush(prefix + "taken", "x")
    seen = _recorder(store)
    assert _gcra(store, "taken").allowed
    assert [type(e) for e in seen] == [StoreUnavailable]
    assert "WRONGTYPE" in seen[0].error  # type: ignore[attr-defined]


def test_async_fail_open_and_closed() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"

    async def main() -> tuple[list[bool], list[bool]]:
        opened = RedisStore(url=url)
        closed = RedisStore(url=url, fail="closed")
        seen = _recorder(opened)
        try:
            a = RateLimit(rate=1.0, burst=2, store=opened)
            b = RateLimit(rate=1.0, burst=2, store=closed)
            got_open = [(await a.acheck()).allowed for _ in range(3)]
            got_closed = [(await b.acheck()).allowed for _ in range(3)]
        finally:
            await opened.aclose()
            await closed.aclose()
        assert [type(e) for e in seen] == [StoreUnavailable]
        return got_open, got_closed

    assert asyncio.run(main()) == ([True, True, False], [False, False, False])


# -- Redis killed and restarted ------------------------------------------------------------


def _until(condition: Callable[[], bool], what: str) -> float:
    """Poll ``condition`` (every 10 ms) until true; the seconds it took. Fails after WAIT_S."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > WAIT_S:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - start


def test_redis_killed_and_restarted(private_redis: RedisServer) -> None:
    """Decisions go on through a crash of Redis (locally, with an event), and return to
    Redis after it restarts (with an event), trying it at most every RETRY_S."""
    store = RedisStore(url=private_redis.url, retry_interval_s=RETRY_S, timeout_s=0.2)
    seen = _recorder(store)
    limit = RateLimit(rate=0.5, burst=3, store=store, name="api")
    try:
        assert [limit.check("u").allowed for _ in range(2)] == [True, True]
        assert not store.down

        private_redis.stop()
        # The key had one unit left in Redis; the local limit starts afresh: three.
        assert [limit.check("u").allowed for _ in range(4)] == [True, True, True, False]
        assert store.down
        assert [type(e) for e in seen] == [StoreUnavailable]

        private_redis.start()  # empty: no keys, no scripts (the first call gets NOSCRIPT)
        took = _until(lambda: limit.check("w").allowed and not store.down, "recovery")
        assert took <= RETRY_S + 1.0
        assert [type(e) for e in seen] == [StoreUnavailable, StoreRecovered]
        recovered = seen[1]
        assert isinstance(recovered, StoreRecovered)
        assert recovered.down_s >= RETRY_S * 0.9
        # Decisions are Redis's again: the key lives there.
        limit.check("u")
        with redis.Redis(port=private_redis.port) as admin:
            assert admin.exists(store.prefix + "api:u") == 1
    finally:
        store.close()


def test_redis_killed_and_restarted_async(private_redis: RedisServer) -> None:
    async def main() -> list[Event]:
        store = RedisStore(url=private_redis.url, retry_interval_s=RETRY_S, timeout_s=0.2)
        seen = _recorder(store)
        limit = RateLimit(rate=0.5, burst=2, store=store)
        try:
            assert (await limit.acheck("u")).allowed
            private_redis.stop()
            assert [(await limit.acheck("u")).allowed for _ in range(3)] == [True, True, False]
            private_redis.start()
            deadline = time.monotonic() + WAIT_S
            while store.down or not seen[-1:] or not isinstance(seen[-1], StoreRecovered):
                assert time.monotonic() < deadline, "no recovery"
                await limit.acheck("w")
                await asyncio.sleep(0.01)
        finally:
            await store.aclose()
        return seen

    seen = asyncio.run(main())
    assert [type(e) for e in seen] == [StoreUnavailable, StoreRecovered]


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "client"),
        ({"client": object(), "url": "redis://x"}, "client"),
        ({"client": object()}, "client"),
        ({"url": 5}, "url"),
        ({"url": "http://x"}, "url"),
        ({"url": "redis://x", "fail": "maybe"}, "fail"),
        ({"url": "redis://x", "local_share": 0}, "local_share"),
        ({"url": "redis://x", "local_share": 1.5}, "local_share"),
        ({"url": "redis://x", "retry_interval_s": 0}, "retry_interval_s"),
        ({"url": "redis://x", "timeout_s": -1}, "timeout_s"),
        ({"url": "redis://x", "prefix": None}, "prefix"),
    ],
)
def test_bad_settings_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        RedisStore(**kwargs)
    assert info.value.name == field


def test_repr_and_a_given_local_store() -> None:
    local = MemoryStore(max_keys=5)
    store = RedisStore(url="redis://127.0.0.1:1/0", prefix="p:", local=local)
    assert store.local is local
    assert repr(store).startswith("RedisStore(url='redis://127.0.0.1:1/0', prefix='p:'")
    assert isinstance(store, RateStore)


def test_missing_redis_py_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ImportError, match=r"pip install 'brownout\[redis\]'"):
        RedisStore(url="redis://127.0.0.1:1/0")
    assert "brownout[redis]" in INSTALL_HINT
