"""RedisCacheStore: a :class:`~brownout.guard.Cache` whose entries every replica shares, and
whose loads run once across processes.

Layout in Redis (``prefix`` defaults to ``brownout:cache:``):

- ``{prefix}v:{key}``: the entry, one string: a short ASCII header
  ``bc1|<v or e>|<keep_ms>|<load_s>|`` and the codec's bytes of the value (``v``) or of the
  cached error (``e``). It expires (``PX``) ``keep_ms`` after it stops being fresh, where
  ``keep_ms`` is the cache's stale window (``max(stale_s, stale_if_error_s)``; 0 for a
  cached error), so Redis drops entries of no further use by itself.
- ``{prefix}l:{key}``: the load lock, a random token set with ``SET NX PX lease``.

Time: freshness is kept by Redis, not by any process's clock. A read returns the entry with
its remaining ``PTTL`` (one Lua script, one round trip), and the entry is fresh for
``PTTL - keep_ms`` more milliseconds from the reader's ``now``. Replicas therefore agree on
expiry whatever their clocks say; a ``MockClock`` on the cache cannot age a shared entry.

Single-flight across processes (:meth:`RedisCacheStore.claim`): before loading, a process
runs one script that returns the stored entry if it is fresh, else takes the lock if it is
free (atomically, so two processes cannot both miss and both win). The winner loads,
stores, and releases the lock with a compare-and-delete script (only the token's owner
deletes it). The others poll the same script, backing off from 5 ms to 50 ms with jitter,
until the value appears (served to them), the lock comes free (they take it and load:
this is how a loader that died stops blocking the rest, after at most ``lease_s``), or
``max_wait_s`` (default ``2 * lease_s``) or the caller's deadline passes (they load without
the lock). A load slower than ``lease_s`` loses its lock to another loader: both load, the
last write wins; set ``lease_s`` above the slowest load. A failed load (an error that is
not cached) leaves no value: the waiters then take the lock and load in turn. Polling was
chosen over pub/sub: it needs no dedicated connection per process, and only processes that
miss the same key at the same moment poll.

Failures: no Redis error reaches the cache. A failed read is a miss, a failed write is
skipped, a failed claim loads without the lock; after a failure the store leaves Redis
alone for ``retry_interval_s`` (then the next operation tries it), and emits
:class:`~brownout.stores.StoreUnavailable` once when Redis goes away and
:class:`~brownout.stores.StoreRecovered` when it answers again. While Redis is away every
process loads for itself (single-flight still holds within each process), and an
``invalidate`` cannot reach Redis: the old entry comes back with it until it expires.

Serialization: a :class:`Codec` turns values into bytes. :class:`JsonCodec` (the default)
is safe with any Redis but loses Python types: tuples come back as lists, dict keys as
strings, and a value it cannot encode (a ``datetime``, a dataclass, a cached exception) is
not shared, with a :class:`CacheNotShared` event; the caller still gets it. :class:`PickleCodec`
keeps any picklable value and cached errors, **but unpickling runs code chosen by whoever
can write to that Redis**: use it only with a Redis that only trusted processes can reach
(authentication, a private network, TLS).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import math
import pickle
import random
import secrets
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from .. import _validate as v
from .._clock import Clock, monotonic_clock
from ..errors import InvalidConfig
from ..events import Event, Events
from ..guard import current_deadline
from ..guard._cache import BUSY, CacheEntry, _Busy
from ._redis import RedisClients, StoreRecovered, StoreUnavailable

if TYPE_CHECKING:
    from redis import Redis
    from redis.asyncio import Redis as AsyncRedis

__all__ = [
    "CacheLoadWaited",
    "CacheNotShared",
    "Codec",
    "JsonCodec",
    "PickleCodec",
    "RedisCacheStore",
]

INSTALL_HINT = "RedisCacheStore needs redis-py: pip install 'brownout[redis]'"

_MAGIC: Final = b"bc1"
_POLL_FIRST_S: Final = 0.005
_POLL_MAX_S: Final = 0.05

# KEYS[1] entry. Returns nil, or {entry, PTTL in ms}.
_GET_SCRIPT = """
local v = redis.call('GET', KEYS[1])
if not v then return false end
return {v, redis.call('PTTL', KEYS[1])}
"""

# KEYS[1] entry, KEYS[2] lock; ARGV[1] token, ARGV[2] lease in ms, ARGV[3] '1' to ignore a
# fresh entry (early refresh). Returns {1, entry, PTTL} for a fresh entry, {2} when the lock
# is now ours, {0} when another token holds it.
_CLAIM_SCRIPT = """
local v = redis.call('GET', KEYS[1])
if v and ARGV[3] ~= '1' then
  local ttl = redis.call('PTTL', KEYS[1])
  local keep = tonumber(string.match(v, '^bc1|[ve]|(%d+)|'))
  if keep and (ttl == -1 or ttl > keep) then return {1, v, ttl} end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
return {0}
"""

# KEYS[1] lock; ARGV[1] token. Deletes the lock only while the token still owns it.
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class _Script:
    __slots__ = ("sha", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()


_GET = _Script(_GET_SCRIPT)
_CLAIM = _Script(_CLAIM_SCRIPT)
_RELEASE = _Script(_RELEASE_SCRIPT)


# -- codecs --------------------------------------------------------------------------------


@runtime_checkable
class Codec(Protocol):
    """Turns a cached value (or a cached exception) into bytes and back. ``dumps`` raises
    (any exception) for a value it cannot encode; the store then does not share it."""

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class JsonCodec:
    """JSON, UTF-8: ``None``, bools, numbers, strings, lists and dicts with string keys.

    Safe to read from any Redis. Tuples come back as lists; other types are refused (the
    value is then not shared). The default codec.
    """

    __slots__ = ()

    def dumps(self, value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)

    def __repr__(self) -> str:
        return "JsonCodec()"


class PickleCodec:
    """pickle: any picklable value, and cached exceptions (without their traceback).

    Warning: unpickling executes code chosen by whoever wrote the bytes. Use it only with a
    Redis that nobody but your own trusted processes can write to.
    """

    __slots__ = ("protocol",)

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        self.protocol = v.int_at_least("PickleCodec", "protocol", protocol, 2)

    def dumps(self, value: Any) -> bytes:
        return pickle.dumps(value, protocol=self.protocol)

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)  # documented: trusted Redis only

    def __repr__(self) -> str:
        return f"PickleCodec(protocol={self.protocol})"


# -- events --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CacheNotShared(Event):
    """The entry for ``key`` was not shared: the codec could not encode it (``reason``
    starts with ``encode``), or an entry read back could not be decoded (``decode``; it is
    then treated as a miss)."""

    key: str
    reason: str


@dataclass(frozen=True, slots=True)
class CacheLoadWaited(Event):
    """A miss on ``key`` found another process loading it and waited ``waited_s``.

    ``outcome``: ``"peer"`` (that process's value arrived and was served), ``"lock"`` (the
    lock came free without a value, for instance when a loader died and its lease ran out,
    and this process loads), ``"timeout"`` (``max_wait_s`` or the deadline passed; this
    process loads without the lock).
    """

    key: str
    waited_s: float
    outcome: str


# -- the store -----------------------------------------------------------------------------


def _import_redis() -> Any:
    try:
        import redis
        import redis.asyncio
        import redis.asyncio.retry
        import redis.backoff
        import redis.exceptions
        import redis.retry
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return redis


def _glob_escape(text: str) -> str:
    """``text`` with Redis glob metacharacters escaped, for ``SCAN MATCH``."""
    for ch in "\\*?[]":
        text = text.replace(ch, "\\" + ch)
    return text


class _RedisLease:
    """The load lock of one key, held by one token (see :meth:`RedisCacheStore.claim`)."""

    __slots__ = ("lock_key", "released", "store", "token")

    def __init__(self, store: RedisCacheStore, lock_key: str, token: str) -> None:
        self.store = store
        self.lock_key = lock_key
        self.token = token
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.store._eval(_RELEASE, (self.lock_key,), (self.token,))

    async def arelease(self) -> None:
        if not self.released:
            self.released = True
            await self.store._aeval(_RELEASE, (self.lock_key,), (self.token,))

    def __repr__(self) -> str:
        return f"<lease {self.lock_key!r} released={self.released}>"


class RedisCacheStore(RedisClients):
    """A :class:`~brownout.guard.SharedCacheStore` in Redis: give it to ``Cache(store=...)``
    in every replica (same ``url`` and ``prefix``) and they share values and loads.

    Give it a redis-py client or a ``url``:

    - ``RedisCacheStore(url="redis://host:6379/0")`` creates a sync client on first sync use
      and an asyncio client on first async use (one per event loop: call :meth:`aclose`
      before a loop ends; :meth:`close` closes the sync one), with ``timeout_s`` as connect
      and read timeouts and at most one immediate reconnection.
    - ``RedisCacheStore(client)`` uses that client as it is: a ``redis.Redis`` (the async
      paths then run it inline: one short blocking round trip each) or a
      ``redis.asyncio.Redis`` (async paths only: ``get_or_load``, ``invalidate``, ``clear``
      and ``len`` need a sync client). It must not decode responses
      (``decode_responses=False``, redis-py's default). Give it short timeouts and few
      retries: redis-py retries a failed command several times by default, with backoff,
      which keeps requests waiting while Redis is down.

    ``codec``: :class:`JsonCodec` (default) or :class:`PickleCodec` (read the warning), or
    your own :class:`Codec`. ``lease_s``: how long a load lock lives (default 5 s; a dead
    loader blocks the others at most this long). ``max_wait_s``: how long a miss waits for
    another process's load before loading itself (default ``2 * lease_s``; never past the
    caller's deadline). ``retry_interval_s``: how long Redis is left alone after a failure.

    A store serves one :class:`~brownout.guard.Cache` at a time: the cache binds its clock,
    stale window, events and name to it when built (the last cache built with it wins).
    Waits (the polls of a miss, the pause after a failure) run on that clock: with a
    ``MockClock`` they pass at once in real time. Its events (:class:`CacheLoadWaited`,
    :class:`CacheNotShared`, ``StoreUnavailable``, ``StoreRecovered``) go to the cache's
    ``events`` under the cache's name.
    """

    _sync_needed = "a sync redis.Redis (or url=...) for the cache's sync operations"

    def __init__(
        self,
        client: Redis | AsyncRedis | None = None,
        *,
        url: str | None = None,
        prefix: str = "brownout:cache:",
        codec: Codec | None = None,
        lease_s: float = 5.0,
        max_wait_s: float | None = None,
        retry_interval_s: float = 1.0,
        timeout_s: float = 0.25,
    ) -> None:
        owner = "RedisCacheStore"
        if (client is None) == (url is None):
            raise InvalidConfig(owner, "client", client, "given, or url=... (not both)")
        if url is not None and not isinstance(url, str):
            raise InvalidConfig(owner, "url", url, "a redis:// or rediss:// URL")
        if not isinstance(prefix, str):
            raise InvalidConfig(owner, "prefix", prefix, "a string")
        if codec is None:
            codec = JsonCodec()
        elif not isinstance(codec, Codec):
            raise InvalidConfig(owner, "codec", codec, "a Codec (dumps and loads), or None")
        self.lease_s = v.positive(owner, "lease_s", lease_s)
        if self.lease_s < 0.001:
            raise InvalidConfig(owner, "lease_s", lease_s, "at least 0.001 (1 ms)")
        self.max_wait_s = (
            2 * self.lease_s
            if max_wait_s is None
            else v.non_negative(owner, "max_wait_s", max_wait_s)
        )
        self.retry_interval_s = v.positive(owner, "retry_interval_s", retry_interval_s)
        self.timeout_s = v.positive(owner, "timeout_s", timeout_s)
        self._redis = _import_redis()
        self.url = url
        self.prefix = prefix
        self.codec = codec
        self._sync: Any = None
        self._async: Any = None
        self._async_loop: asyncio.AbstractEventLoop | None = None
        if client is not None:
            execute = getattr(client, "execute_command", None)
            if inspect.iscoroutinefunction(execute):
                self._async = client
            elif callable(execute):
                self._sync = client
            else:
                raise InvalidConfig(owner, "client", client, "a redis.Redis or redis.asyncio.Redis")
            pool = getattr(client, "connection_pool", None)
            if getattr(pool, "connection_kwargs", {}).get("decode_responses"):
                raise InvalidConfig(
                    owner, "client", client, "a client with decode_responses=False (bytes)"
                )
        self._noscript: type[Exception] = self._redis.exceptions.NoScriptError
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._rng = random.Random()  # jitter of the polls only
        # Set by the Cache that uses this store (bind).
        self._clock: Clock = monotonic_clock
        self._events = Events()
        self._name = "cache"
        self._keep_ms = 0

    def __repr__(self) -> str:
        where = f"url={self.url!r}" if self.url else f"client={self._sync or self._async!r}"
        return (
            f"RedisCacheStore({where}, prefix={self.prefix!r}, codec={self.codec!r}, "
            f"lease_s={self.lease_s!r}, max_wait_s={self.max_wait_s!r}, down={self.down})"
        )

    @property
    def down(self) -> bool:
        """True from a Redis failure until Redis answers again."""
        return self._down_since is not None

    def bind(self, *, clock: Clock, keep_s: float, events: Events, name: str) -> None:
        """Called by the :class:`~brownout.guard.Cache` given this store: its clock, how
        long past expiry its values stay useful (seconds), its events and its name."""
        self._clock = clock
        self._keep_ms = math.ceil(keep_s * 1000)
        self._events = events
        self._name = name

    # -- clients -------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the asyncio client created for the running loop, and the sync one (not a
        client given)."""
        if self.url is not None:
            loop = asyncio.get_running_loop()
            if self._async is not None and self._async_loop is loop:
                client = self._async
                self._async = None
                self._async_loop = None
                await client.aclose()
        self.close()

    # -- health --------------------------------------------------------------------------

    def _may_try(self) -> bool:
        """While down: True for the one caller allowed to try Redis again now."""
        now = self._clock.now()
        with self._lock:
            if now < self._retry_at:
                return False
            self._retry_at = now + self.retry_interval_s
            return True

    def _failed(self, error: BaseException) -> None:
        now = self._clock.now()
        with self._lock:
            self._retry_at = now + self.retry_interval_s
            if self._down_since is not None:
                return
            self._down_since = now
        if self._events:
            self._events.emit(StoreUnavailable(now, self._name, f"{type(error).__name__}: {error}"))

    def _recovered(self) -> None:
        now = self._clock.now()
        with self._lock:
            since = self._down_since
            if since is None:
                return
            self._down_since = None
        if self._events:
            self._events.emit(StoreRecovered(now, self._name, now - since))

    def _do(self, op: Callable[[Any], Any]) -> tuple[bool, Any]:
        """Run ``op(client)`` unless Redis is being left alone; (ok, reply)."""
        if self._down_since is not None and not self._may_try():
            return False, None
        client = self._sync_client()
        try:
            reply = op(client)
        except Exception as exc:
            self._failed(exc)
            return False, None
        if self._down_since is not None:
            self._recovered()
        return True, reply

    async def _ado(
        self, op: Callable[[Any], Awaitable[Any]], inline: Callable[[Any], Any]
    ) -> tuple[bool, Any]:
        """:meth:`_do` on the asyncio client (``inline`` on a sync client when given one)."""
        if self._down_since is not None and not self._may_try():
            return False, None
        client = self._async_client()
        try:
            reply = inline(self._sync_client()) if client is None else await op(client)
        except Exception as exc:
            self._failed(exc)
            return False, None
        if self._down_since is not None:
            self._recovered()
        return True, reply

    def _eval(self, script: _Script, keys: tuple[str, ...], args: tuple[Any, ...]) -> Any:
        """Run ``script``: one round trip (two after ``NOSCRIPT``). None when Redis failed."""

        def op(client: Any) -> Any:
            try:
                return client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            except self._noscript:
                return client.execute_command("EVAL", script.text, len(keys), *keys, *args)

        return self._do(op)[1]

    async def _aeval(self, script: _Script, keys: tuple[str, ...], args: tuple[Any, ...]) -> Any:
        async def op(client: Any) -> Any:
            try:
                return await client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            except self._noscript:
                return await client.execute_command("EVAL", script.text, len(keys), *keys, *args)

        def inline(client: Any) -> Any:
            try:
                return client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            except self._noscript:
                return client.execute_command("EVAL", script.text, len(keys), *keys, *args)

        return (await self._ado(op, inline))[1]

    # -- encoding ------------------------------------------------------------------------

    def _not_shared(self, key: str, reason: str) -> None:
        if self._events:
            self._events.emit(CacheNotShared(self._clock.now(), self._name, key, reason))

    def _encode(self, key: str, entry: CacheEntry) -> tuple[bytes, int | None] | None:
        """The stored bytes and the ``PX`` in ms (None: no expiry), or None when the entry
        cannot be or need not be stored."""
        now = self._clock.now()
        if entry.error is not None:
            kind, keep_ms, what = b"e", 0, entry.error
        else:
            kind, keep_ms, what = b"v", self._keep_ms, entry.value
        try:
            payload = self.codec.dumps(what)
        except Exception as exc:
            self._not_shared(key, f"encode: {type(exc).__name__}: {exc}")
            return None
        fresh_s = entry.expires_at - now
        if math.isinf(fresh_s):
            px = None
        else:
            px = math.ceil(fresh_s * 1000) + keep_ms
            if px <= 0:
                return None  # of no use any more
        header = b"%s|%s|%d|%r|" % (_MAGIC, kind, keep_ms, float(entry.load_s))
        return header + payload, px

    def _decode(self, key: str, data: Any, pttl: Any) -> CacheEntry | None:
        try:
            pttl = int(pttl)
            if pttl == -2:
                return None  # expired between the two reads
            magic, kind, keep, load_s, payload = bytes(data).split(b"|", 4)
            if magic != _MAGIC or kind not in (b"v", b"e"):
                raise ValueError("not an entry of this store")
            keep_ms = int(keep)
            load = float(load_s)
        except Exception as exc:
            self._not_shared(key, f"decode: {type(exc).__name__}: {exc}")
            return None
        try:
            value = self.codec.loads(payload)
        except Exception as exc:
            self._not_shared(key, f"decode: {type(exc).__name__}: {exc}")
            return None
        now = self._clock.now()
        expires_at = math.inf if pttl < 0 else now + (pttl - keep_ms) / 1000.0
        if kind == b"e":
            if not isinstance(value, BaseException):
                self._not_shared(key, "decode: a cached error that is not an exception")
                return None
            return CacheEntry(None, expires_at=expires_at, load_s=load, error=value)
        return CacheEntry(value, expires_at=expires_at, load_s=load)

    # -- CacheStore ----------------------------------------------------------------------

    def _value_key(self, key: str) -> str:
        return f"{self.prefix}v:{key}"

    def _lock_key(self, key: str) -> str:
        return f"{self.prefix}l:{key}"

    def get(self, key: str) -> CacheEntry | None:
        """The entry for ``key`` with its expiry converted to the cache's clock, or None
        (absent, expired, undecodable, or Redis unreachable)."""
        reply = self._eval(_GET, (self._value_key(key),), ())
        if not reply:
            return None
        return self._decode(key, reply[0], reply[1])

    async def aget(self, key: str) -> CacheEntry | None:
        reply = await self._aeval(_GET, (self._value_key(key),), ())
        if not reply:
            return None
        return self._decode(key, reply[0], reply[1])

    def set(self, key: str, entry: CacheEntry) -> None:
        """Store ``entry`` for every replica, expiring ``keep_ms`` after it stops being
        fresh (skipped, with an event, when the codec cannot encode it)."""
        encoded = self._encode(key, entry)
        if encoded is None:
            return
        data, px = encoded
        name = self._value_key(key)
        if px is None:
            self._do(lambda c: c.execute_command("SET", name, data))
        else:
            self._do(lambda c: c.execute_command("SET", name, data, "PX", px))

    async def aset(self, key: str, entry: CacheEntry) -> None:
        encoded = self._encode(key, entry)
        if encoded is None:
            return
        data, px = encoded
        name = self._value_key(key)
        args: tuple[Any, ...] = ("SET", name, data) if px is None else ("SET", name, data, "PX", px)
        await self._ado(lambda c: c.execute_command(*args), lambda c: c.execute_command(*args))

    def delete(self, key: str) -> None:
        name = self._value_key(key)
        self._do(lambda c: c.execute_command("DEL", name))

    async def adelete(self, key: str) -> None:
        name = self._value_key(key)
        await self._ado(
            lambda c: c.execute_command("DEL", name), lambda c: c.execute_command("DEL", name)
        )

    def clear(self) -> None:
        """Delete every entry and lock under ``prefix`` (``SCAN``, then ``DEL`` in batches)."""
        pattern = _glob_escape(self.prefix) + "*"

        def op(client: Any) -> None:
            batch: list[Any] = []
            for name in client.scan_iter(match=pattern, count=1000):
                batch.append(name)
                if len(batch) >= 1000:
                    client.delete(*batch)
                    batch.clear()
            if batch:
                client.delete(*batch)

        self._do(op)

    def __len__(self) -> int:
        """Entries under ``prefix`` in Redis, all replicas' (a ``SCAN``: O(keys)); 0 while
        Redis is unreachable."""
        pattern = _glob_escape(self.prefix + "v:") + "*"
        ok, count = self._do(lambda c: sum(1 for _ in c.scan_iter(match=pattern, count=1000)))
        return int(count) if ok else 0

    # -- single-flight across processes --------------------------------------------------

    def _wait_limit(self, start: float) -> float:
        limit = start + self.max_wait_s
        dl = current_deadline()
        if dl is not None:
            limit = min(limit, self._clock.now() + dl.remaining())
        return limit

    def _claimed(
        self, key: str, reply: Any, token: str, started: float, waited: bool
    ) -> CacheEntry | _RedisLease | _Busy | None:
        """What one claim script reply means; BUSY when the lock is someone else's."""
        code = int(reply[0])
        if code == 1:
            entry = self._decode(key, reply[1], reply[2])
            if entry is not None and waited:
                self._waited(key, started, "peer")
            return entry  # None (undecodable): load without the lock
        if code == 2:
            if waited:
                self._waited(key, started, "lock")
            return _RedisLease(self, self._lock_key(key), token)
        return BUSY

    def _waited(self, key: str, started: float, outcome: str) -> None:
        if self._events:
            now = self._clock.now()
            self._events.emit(CacheLoadWaited(now, self._name, key, now - started, outcome))

    def _claim_args(self, key: str, early: bool) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        token = secrets.token_hex(16)
        lease_ms = max(1, math.ceil(self.lease_s * 1000))
        return (self._value_key(key), self._lock_key(key)), (token, lease_ms, "1" if early else "0")

    def claim(
        self, key: str, *, wait: bool, early: bool
    ) -> CacheEntry | _RedisLease | _Busy | None:
        """Before loading ``key``: a fresh entry another process stored (not with
        ``early``), the lock (a lease: load, store, release), BUSY (``wait=False`` and
        another process holds the lock), or None (Redis unreachable, or the wait ran out:
        load without the lock). With ``wait=True`` polls, with backoff, while another process
        holds the lock (see the module docstring)."""
        keys, args = self._claim_args(key, early)
        clock = self._clock
        started = clock.now()
        limit: float | None = None
        delay = _POLL_FIRST_S
        waited = False
        while True:
            reply = self._eval(_CLAIM, keys, args)
            if reply is None:
                return None
            got = self._claimed(key, reply, args[0], started, waited)
            if not isinstance(got, _Busy) or not wait:
                return got
            now = clock.now()
            if limit is None:
                limit = self._wait_limit(started)
            if now >= limit:
                self._waited(key, started, "timeout")
                return None
            waited = True
            clock.sleep(min(delay * (0.5 + 0.5 * self._rng.random()), limit - now))
            delay = min(delay * 2, _POLL_MAX_S)

    async def aclaim(
        self, key: str, *, wait: bool, early: bool
    ) -> CacheEntry | _RedisLease | _Busy | None:
        """:meth:`claim` for asyncio (the polls sleep on the event loop)."""
        keys, args = self._claim_args(key, early)
        clock = self._clock
        started = clock.now()
        limit: float | None = None
        delay = _POLL_FIRST_S
        waited = False
        while True:
            reply = await self._aeval(_CLAIM, keys, args)
            if reply is None:
                return None
            got = self._claimed(key, reply, args[0], started, waited)
            if not isinstance(got, _Busy) or not wait:
                return got
            now = clock.now()
            if limit is None:
                limit = self._wait_limit(started)
            if now >= limit:
                self._waited(key, started, "timeout")
                return None
            waited = True
            await clock.asleep(min(delay * (0.5 + 0.5 * self._rng.random()), limit - now))
            delay = min(delay * 2, _POLL_MAX_S)
