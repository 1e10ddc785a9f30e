"""RedisStore: GCRA rate-limit state shared by every replica, one Redis round trip a decision.

Each decision is one ``EVALSHA`` of a small Lua script (``EVAL`` once when Redis answers
``NOSCRIPT``, after a restart or a ``SCRIPT FLUSH``). The script reads the key, decides and
writes back atomically, using the Redis server's ``TIME`` so replicas with skewed clocks
still share one timeline. Keys and values travel as ``KEYS`` and ``ARGV``; nothing is ever
formatted into the script. Each key holds its theoretical arrival time (seconds since
:data:`EPOCH_BASE`) and expires when that time passes, so idle keys cost no memory. The
reply is a single integer (how far the key ran ahead, in nanoseconds, its sign saying
admitted or refused) from which the client computes the :class:`Decision`. Needs Redis 5 or
later: those replicate a script's effects, not the script, so reading ``TIME`` before
writing is safe.

When Redis cannot answer (refused, timed out, any error) no exception reaches the caller:
with ``fail="open"`` (the default) the decision is taken by a per-process
:class:`~brownout.guard.MemoryStore` at ``local_share`` of the rate; with ``fail="closed"``
the request is refused. The store then leaves Redis alone for ``retry_interval_s`` seconds
before one request tries it again (never one attempt per request), emits
:class:`StoreUnavailable` once when it goes down and :class:`StoreRecovered` when Redis
answers again.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .. import _validate as v
from .._clock import Clock, monotonic_clock
from ..errors import InvalidConfig
from ..events import Event, Events
from ..guard._ratelimit import SLACK, Decision, MemoryStore

if TYPE_CHECKING:
    from redis import Redis
    from redis.asyncio import Redis as AsyncRedis

__all__ = ["EPOCH_BASE", "RedisStore", "StoreRecovered", "StoreUnavailable"]

# Times in the scripts are seconds since this Unix time (2023-11-14), not since 1970: a
# smaller magnitude leaves more of a double's 53 bits for the fraction (about 15 ns of
# resolution in 2026 instead of 240 ns).
EPOCH_BASE: Final = 1_700_000_000

INSTALL_HINT = "RedisStore needs redis-py: pip install 'brownout[redis]'"

# GCRA for KEYS[1] (see brownout.guard._ratelimit). ARGV[1]: the increment ``cost * T``;
# ARGV[2]: the admission limit ``tau + T`` plus the slack ``T * 1e-6``, both in seconds,
# computed by the client exactly as ``gcra_decide`` computes them so both sides reach the
# same verdict. The key holds the TAT (seconds since EPOCH_BASE; Redis writes a Lua number
# with enough digits to read the same double back) and expires at it. The reply is one
# integer, the cheapest reply to send and to parse: ``floor(ahead * 1e9)`` when admitted and
# ``-1 - floor(ahead * 1e9)`` when refused, ``ahead`` being how far the TAT ran ahead of the
# server's now before this request, in seconds; the client derives the decision from it.
_GCRA_SCRIPT = f"""
local t = redis.call('TIME')
local now = (t[1] - {EPOCH_BASE}) + t[2] / 1000000
local tat = redis.call('GET', KEYS[1])
local ahead = 0
if tat then
  ahead = tat - now
  if ahead < 0 then ahead = 0 end
end
local increment = ARGV[1] + 0
local after = ahead + increment
if after <= ARGV[2] + 0 then
  if increment > 0 then
    redis.call('SET', KEYS[1], now + after, 'PX', math.ceil(after * 1000))
  end
  return math.floor(ahead * 1e9)
end
return -1 - math.floor(ahead * 1e9)
"""


class Script:
    """A Lua script and its SHA1, as ``EVALSHA`` names it (bytes: sent as they are)."""

    __slots__ = ("sha", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest().encode()


GCRA = Script(_GCRA_SCRIPT)


@dataclass(frozen=True, slots=True)
class StoreUnavailable(Event):
    """The store named ``policy`` lost Redis (``error`` says how); decisions are now local
    (``fail="open"``) or refused (``fail="closed"``) until it recovers."""

    error: str


@dataclass(frozen=True, slots=True)
class StoreRecovered(Event):
    """The store named ``policy`` reached Redis again after ``down_s`` seconds."""

    down_s: float


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


class RedisClients:
    """The Redis clients of a store: given ones, or created lazily from ``url`` (the sync
    one once, the asyncio one per event loop) with short timeouts and one retry. Shared by
    :class:`RedisStore` and the Redis cache store. Subclasses set ``url``, ``timeout_s``,
    ``_redis`` (the module), ``_sync``, ``_async``, ``_async_loop`` and ``_lock``."""

    __slots__ = ()
    _sync_needed: str = "a sync redis.Redis (or url=...)"
    url: str | None
    timeout_s: float
    _redis: Any
    _sync: Any
    _async: Any
    _async_loop: Any
    _lock: threading.Lock

    def _client_kwargs(self, retry_class: Any) -> dict[str, Any]:
        r = self._redis
        return {
            "socket_timeout": self.timeout_s,
            "socket_connect_timeout": self.timeout_s,
            "retry": retry_class(
                r.backoff.NoBackoff(), 1, supported_errors=(r.exceptions.ConnectionError,)
            ),
        }

    def _sync_client(self) -> Any:
        client = self._sync
        if client is None:
            if self.url is None:
                raise InvalidConfig(type(self).__name__, "client", self._async, self._sync_needed)
            with self._lock:
                if self._sync is None:
                    r = self._redis
                    self._sync = r.Redis.from_url(self.url, **self._client_kwargs(r.retry.Retry))
                client = self._sync
        return client

    def _async_client(self) -> Any:
        """The asyncio client to await, or None to run the sync client inline."""
        if self.url is None:
            return self._async
        loop = asyncio.get_running_loop()
        if self._async is None or self._async_loop is not loop:
            r = self._redis
            self._async = r.asyncio.Redis.from_url(
                self.url, **self._client_kwargs(r.asyncio.retry.Retry)
            )
            self._async_loop = loop
        return self._async

    def close(self) -> None:
        """Close the sync client this store created from its ``url`` (not a client given)."""
        if self.url is not None and self._sync is not None:
            self._sync.close()
            self._sync = None


class RedisStore(RedisClients):
    """A :class:`~brownout.guard.RateStore` in Redis, shared by every process using it.

    Give it a redis-py client, ``redis.Redis`` or ``redis.asyncio.Redis``, or a ``url``:

    - ``RedisStore(url="redis://host:6379/0")`` creates a sync client on the first
      :meth:`gcra` and an asyncio client on the first :meth:`agcra` (one per event loop:
      call :meth:`aclose` before a loop ends), both with ``timeout_s`` as connect and read
      timeouts and at most one immediate reconnection (a pooled connection dropped by a
      Redis restart is replaced at once). :meth:`close` closes the sync one.
    - ``RedisStore(client)`` uses that client as it is; ``agcra`` awaits an asyncio client,
      and with a sync client it runs the command inline (one short blocking round trip).
      A sync decision needs a sync client (or a ``url``). Configure the client the way the
      store configures its own: small ``socket_timeout`` / ``socket_connect_timeout`` and
      few retries (redis-py retries a failed command several times by default, with
      backoff, which keeps a request waiting while Redis is down).

    Keys are ``prefix + key``. ``now`` passed to :meth:`gcra` is ignored while Redis
    answers (the script uses the server's ``TIME``) and used by the local fallback.

    Failure handling: ``fail="open"`` decides locally in a :class:`MemoryStore` (``local``,
    default one of ``max_local_keys`` keys) at ``local_share`` of the rate (the burst is
    kept): with N replicas, ``local_share=1/N`` keeps the total near the shared limit.
    ``fail="closed"`` refuses, with ``retry_after_s`` = the time until Redis is tried
    again. Either way, after a failure Redis is left alone for ``retry_interval_s``
    seconds of ``clock`` time; then the next decision tries it again (one decision, not
    all of those in flight). ``events`` receives :class:`StoreUnavailable` and
    :class:`StoreRecovered`, with ``name`` as their ``policy``.
    """

    _sync_needed = "a sync redis.Redis (or url=...) for sync decisions"

    def __init__(
        self,
        client: Redis | AsyncRedis | None = None,
        *,
        url: str | None = None,
        prefix: str = "brownout:rate:",
        fail: str = "open",
        local: MemoryStore | None = None,
        local_share: float = 1.0,
        retry_interval_s: float = 1.0,
        timeout_s: float = 0.1,
        max_local_keys: int = 100_000,
        name: str = "redis",
        clock: Clock = monotonic_clock,
        events: Events | None = None,
    ) -> None:
        if (client is None) == (url is None):
            raise InvalidConfig("RedisStore", "client", client, "given, or url=... (not both)")
        if url is not None and (
            not isinstance(url, str) or url.partition("://")[0] not in ("redis", "rediss", "unix")
        ):
            raise InvalidConfig("RedisStore", "url", url, "a redis://, rediss:// or unix:// URL")
        if not isinstance(prefix, str):
            raise InvalidConfig("RedisStore", "prefix", prefix, "a string")
        self._redis = _import_redis()
        self.url = url
        self.prefix = prefix
        self.fail = v.one_of("RedisStore", "fail", fail, ("open", "closed"))
        share = v.positive("RedisStore", "local_share", local_share)
        if share > 1:
            raise InvalidConfig("RedisStore", "local_share", local_share, "a number in (0, 1]")
        self.local_share = share
        self.retry_interval_s = v.positive("RedisStore", "retry_interval_s", retry_interval_s)
        self.timeout_s = v.positive("RedisStore", "timeout_s", timeout_s)
        self.local = local if local is not None else MemoryStore(max_local_keys)
        self.name = name
        self.clock = clock
        self.events = events if events is not None else Events()
        self._sync: Any = None
        self._async: Any = None
        self._async_loop: asyncio.AbstractEventLoop | None = None
        if client is not None:
            if inspect.iscoroutinefunction(getattr(client, "execute_command", None)):
                self._async = client
            elif callable(getattr(client, "execute_command", None)):
                self._sync = client
            else:
                raise InvalidConfig(
                    "RedisStore", "client", client, "a redis.Redis or redis.asyncio.Redis"
                )
        self._noscript: type[Exception] = self._redis.exceptions.NoScriptError
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._retry_at = 0.0

    def __repr__(self) -> str:
        where = f"url={self.url!r}" if self.url else f"client={self._sync or self._async!r}"
        return (
            f"RedisStore({where}, prefix={self.prefix!r}, fail={self.fail!r}, "
            f"retry_interval_s={self.retry_interval_s!r}, down={self.down})"
        )

    @property
    def down(self) -> bool:
        """True from a failure until Redis answers again."""
        return self._down_since is not None

    # -- clients -----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the asyncio client this store created for the running event loop, and the
        sync one (not a client given)."""
        if self.url is not None:
            loop = asyncio.get_running_loop()
            if self._async is not None and self._async_loop is loop:
                client = self._async
                self._async = None
                self._async_loop = None
                await client.aclose()
        self.close()

    # -- health ------------------------------------------------------------------------

    def _may_try(self) -> bool:
        """While down: True for the one caller allowed to try Redis again now."""
        now = self.clock.now()
        with self._lock:
            if now < self._retry_at:
                return False
            self._retry_at = now + self.retry_interval_s
            return True

    def _failed(self, error: BaseException) -> None:
        now = self.clock.now()
        with self._lock:
            self._retry_at = now + self.retry_interval_s
            if self._down_since is not None:
                return
            self._down_since = now
        if self.events:
            self.events.emit(StoreUnavailable(now, self.name, f"{type(error).__name__}: {error}"))

    def _recovered(self) -> None:
        now = self.clock.now()
        with self._lock:
            since = self._down_since
            if since is None:
                return
            self._down_since = None
        if self.events:
            self.events.emit(StoreRecovered(now, self.name, now - since))

    # -- one script call, failures absorbed --------------------------------------------

    def eval(self, script: Script, key: str, *args: Any) -> Any:
        """Run ``script`` on ``prefix + key`` with ``args`` as ARGV; one round trip (two
        after ``NOSCRIPT``). Returns the reply, or None when Redis failed or is being left
        alone after a failure (the caller falls back)."""
        if self._down_since is not None and not self._may_try():
            return None
        return self._eval_sync(script, key, args)

    def _eval_sync(self, script: Script, key: str, args: tuple[Any, ...]) -> Any:
        try:
            client = self._sync or self._sync_client()
            name = (self.prefix + key).encode()
            try:
                reply = client.execute_command("EVALSHA", script.sha, b"1", name, *args)
            except self._noscript:
                reply = client.execute_command("EVAL", script.text, b"1", name, *args)
        except InvalidConfig:
            raise
        except Exception as exc:
            self._failed(exc)
            return None
        if self._down_since is not None:
            self._recovered()
        return reply

    async def aeval(self, script: Script, key: str, *args: Any) -> Any:
        """:meth:`eval` on the asyncio client (inline on a sync client when given one)."""
        if self._down_since is not None and not self._may_try():
            return None
        try:
            client = self._async_client()
            if client is None:
                return self._eval_sync(script, key, args)
            name = (self.prefix + key).encode()
            try:
                reply = await client.execute_command("EVALSHA", script.sha, b"1", name, *args)
            except self._noscript:
                reply = await client.execute_command("EVAL", script.text, b"1", name, *args)
        except Exception as exc:
            self._failed(exc)
            return None
        if self._down_since is not None:
            self._recovered()
        return reply

    # -- RateStore ---------------------------------------------------------------------

    def _closed_decision(self) -> Decision:
        """A refusal while Redis is away (``fail="closed"``): retry when it is tried again."""
        wait = self._retry_at - self.clock.now()
        return Decision(False, 0, wait if wait > 0 else 0.0, 0.0)

    def _fallback(
        self, key: str, interval_s: float, tolerance_s: float, cost: int, now: float
    ) -> Decision:
        if self.fail == "closed":
            return self._closed_decision()
        share = self.local_share
        return self.local.gcra(
            key,
            interval_s=interval_s / share,
            tolerance_s=tolerance_s / share,
            cost=cost,
            now=now,
        )

    def gcra(
        self, key: str, *, interval_s: float, tolerance_s: float, cost: int, now: float
    ) -> Decision:
        """One GCRA decision in Redis (``now`` is used only by the fallback)."""
        limit = tolerance_s + interval_s
        # ARGV as bytes (the client sends bytes as they are): the increment and the limit
        # with its slack, as repr writes them (the shortest text of the same double).
        if self._down_since is None or self._may_try():
            reply = self._eval_sync(
                GCRA, key, (b"%r" % (cost * interval_s), b"%r" % (limit + interval_s * SLACK))
            )
            if type(reply) is int:
                return _decision(reply, interval_s, limit, cost)
            if reply is not None:  # not our script's reply: treat it as a failure
                self._failed(TypeError(f"unexpected reply {reply!r}"))
        return self._fallback(key, interval_s, tolerance_s, cost, now)

    async def agcra(
        self, key: str, *, interval_s: float, tolerance_s: float, cost: int, now: float
    ) -> Decision:
        """:meth:`gcra` for asyncio."""
        limit = tolerance_s + interval_s
        reply = await self.aeval(
            GCRA, key, b"%r" % (cost * interval_s), b"%r" % (limit + interval_s * SLACK)
        )
        if type(reply) is int:
            return _decision(reply, interval_s, limit, cost)
        if reply is not None:
            self._failed(TypeError(f"unexpected reply {reply!r}"))
        return self._fallback(key, interval_s, tolerance_s, cost, now)


def _decision(reply: int, interval_s: float, limit: float, cost: int) -> Decision:
    """The decision the GCRA script's reply stands for (``limit = tau + T``)."""
    if reply >= 0:
        after = reply / 1e9 + cost * interval_s
        remaining = int((limit - after) / interval_s + SLACK)
        return Decision(True, remaining if remaining > 0 else 0, 0.0, after)
    ahead = (-1 - reply) / 1e9
    retry_after = ahead + cost * interval_s - limit
    remaining = int((limit - ahead) / interval_s + SLACK)
    return Decision(
        False,
        remaining if remaining > 0 else 0,
        retry_after if retry_after > 1e-9 else 1e-9,
        ahead,
    )
