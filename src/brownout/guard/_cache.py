"""Cache: remember answers for a while, load each missing one once, and serve stale on trouble.

Layout, as for every policy: :class:`Cache` is the validated configuration; ``_CacheState``
holds what changes and takes every decision as plain code given ``now`` (``decide``,
``can_fall_back``, ``entry_for_value``, ``entry_for_error``); the adapters below run loaders,
start background refreshes and make concurrent callers wait.

Where entries live is a seam: :class:`CacheStore` (get / set / delete of a
:class:`CacheEntry`). :class:`MemoryCacheStore` is the in-process LRU twin; a shared store
(Redis) plugs in at the same place and implements :class:`SharedCacheStore` on top: async
access for the async paths, and a lock with a lease so one process loads a key while the
others wait for its value (single-flight across processes). In-flight loads are never
stored: they are process-local bookkeeping, and they do not count as entries.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import random
import threading
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Protocol, TypeVar, cast, runtime_checkable

from .. import _validate as v
from .._clock import Clock, monotonic_clock
from ..errors import InvalidConfig
from ..events import CacheHit, CacheLoaded, CacheMiss, Events, StaleServed
from ._deadline import _current
from ._policy import AsyncNext, Call, Policy, SyncNext

__all__ = [
    "BUSY",
    "Cache",
    "CacheEntry",
    "CacheStore",
    "Lease",
    "MemoryCacheStore",
    "SharedCacheStore",
    "default_key",
]

T = TypeVar("T")
A = TypeVar("A")

KeyFunction = Callable[[tuple[Any, ...], dict[str, Any]], str]

# What ``_CacheState.decide`` answers (plain ints: compared on the hot path).
FRESH = 0  # serve the value
EARLY = 1  # serve the value; XFetch says: refresh it now, before it expires
STALE = 2  # expired but within stale_s: serve it and refresh in the background
MISS = 3  # nothing servable: load (or wait for the load already running)
NEGATIVE = 4  # a cached error: raise it again without loading

# What a finished load hands to the callers that waited for it.
_VALUE = 0  # the loader returned ``value``
_ERROR = 1  # the loader raised ``error`` (cached or not) and no stale value may replace it
_FALLBACK = 2  # the loader failed; the previous value is served instead
_RETRY = 3  # the load ended without an answer (cancelled, interrupted): look again

_MAX_NAMES = 1024


class CacheEntry:
    """What a store keeps for one key: a value, or a cached error (negative entry).

    ``expires_at`` is when the entry stops being fresh, in seconds on the cache's clock
    (for a negative entry: when the error stops being re-raised). ``load_s`` is how long the
    load that produced it took, in seconds (the ``delta`` of early refresh). ``error`` and
    ``traceback`` are set only on negative entries.
    """

    __slots__ = ("error", "expires_at", "load_s", "traceback", "value")

    def __init__(
        self,
        value: Any,
        *,
        expires_at: float,
        load_s: float,
        error: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self.value = value
        self.expires_at = expires_at
        self.load_s = load_s
        self.error = error
        self.traceback = traceback

    def __repr__(self) -> str:
        what = f"error={self.error!r}" if self.error is not None else f"value={self.value!r}"
        return f"CacheEntry({what}, expires_at={self.expires_at!r}, load_s={self.load_s!r})"


@runtime_checkable
class CacheStore(Protocol):
    """Where a :class:`Cache` keeps its entries, by string key.

    ``get`` returns the entry or None (and may count as a use for eviction); ``set`` stores
    or replaces one, evicting others when the store is full; ``delete`` and ``clear`` forget.
    Expiry is decided by the cache, not the store: a store may drop entries early (to bound
    memory) but never needs to read a clock. Implementations must be safe to call from
    several threads.
    """

    def get(self, key: str) -> CacheEntry | None: ...

    def set(self, key: str, entry: CacheEntry) -> None: ...

    def delete(self, key: str) -> None: ...

    def clear(self) -> None: ...

    def __len__(self) -> int: ...


class Lease(Protocol):
    """A cross-process load lock this process holds (see :meth:`SharedCacheStore.claim`).
    Releasing it twice, or after its lease ran out, does nothing."""

    def release(self) -> None: ...

    async def arelease(self) -> None: ...


class _Busy:
    __slots__ = ()

    def __repr__(self) -> str:
        return "BUSY"


BUSY: Final = _Busy()
"""What :meth:`SharedCacheStore.claim` answers, when told not to wait, while another
process holds the key's load lock."""


@runtime_checkable
class SharedCacheStore(CacheStore, Protocol):
    """A :class:`CacheStore` that several processes share (Redis). A :class:`Cache` given one
    uses, on top of the plain store methods:

    - ``bind(clock=, keep_s=, events=, name=)``, once, when the cache is built: the cache's
      clock (a shared store keeps time on the server and converts ``expires_at`` with it),
      how long past ``expires_at`` a value may still be served (``keep_s``: stale-while-
      revalidate and stale-if-error), and where to report store events, under which name.
    - ``aget`` / ``aset`` / ``adelete`` on the async paths, instead of blocking the loop.
    - ``claim(key, wait=, early=)`` (``aclaim`` in async) before it runs a loader. The
      answer is a fresh :class:`CacheEntry` another process stored (serve it, load nothing);
      a :class:`Lease` (the lock is ours: load, store, release); :data:`BUSY` (only with
      ``wait=False``: another process is loading now); or None (no lock to be had: the store
      is unreachable, or the wait ran out; load without it). ``wait=True`` waits, up to a
      bound the store documents, for the lock or for another process's value. ``early=True``
      (an early refresh of a fresh entry) asks for the lock even though the stored entry is
      fresh. ``aclaim`` takes the same arguments.

    Store failures never raise: a failed read is a miss, a failed write is skipped.
    """

    def bind(self, *, clock: Clock, keep_s: float, events: Events, name: str) -> None: ...

    async def aget(self, key: str) -> CacheEntry | None: ...

    async def aset(self, key: str, entry: CacheEntry) -> None: ...

    async def adelete(self, key: str) -> None: ...

    def claim(self, key: str, *, wait: bool, early: bool) -> CacheEntry | Lease | _Busy | None: ...

    async def aclaim(
        self, key: str, *, wait: bool, early: bool
    ) -> CacheEntry | Lease | _Busy | None: ...


class MemoryCacheStore:
    """An in-process store holding at most ``max_entries`` entries, evicting the least
    recently used (a ``get`` or a ``set`` counts as a use).

    Each operation is O(1). Thread safety without a lock: every step is one operation on an
    ``OrderedDict`` (atomic in CPython), and the steps tolerate a key vanishing in between
    because another thread deleted or evicted it.
    """

    __slots__ = ("_data", "max_entries")

    def __init__(self, max_entries: int) -> None:
        self.max_entries = v.int_at_least("MemoryCacheStore", "max_entries", max_entries, 1)
        self._data: OrderedDict[str, CacheEntry] = OrderedDict()

    def get(self, key: str) -> CacheEntry | None:
        entry = self._data.get(key)
        if entry is not None:
            try:  # noqa: SIM105 (contextlib.suppress costs a context manager per hit)
                self._data.move_to_end(key)
            except KeyError:  # deleted by another thread since the read
                pass
        return entry

    def set(self, key: str, entry: CacheEntry) -> None:
        data = self._data
        data[key] = entry
        try:
            data.move_to_end(key)
        except KeyError:
            return
        while len(data) > self.max_entries:
            try:
                data.popitem(last=False)
            except KeyError:  # another thread emptied it meanwhile
                break

    def delete(self, key: str) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def keys(self) -> list[str]:
        """The keys held, least recently used first."""
        return list(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"MemoryCacheStore(max_entries={self.max_entries}, entries={len(self._data)})"


def default_key(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The key a :class:`Cache` used as a decorator gives a call when it has no ``key``:
    ``module.qualname`` of the function, then ``repr(args)``, then the keyword arguments
    sorted by name (``"app.users.get_user(42,)"``, ``"app.f(1,)[('b', 2)]"``).

    Arguments must therefore have a repr that reflects their value: an object whose repr
    shows its ``id`` gets a key of its own per instance. ``f(1)`` and ``f(x=1)`` get
    different keys.
    """
    return _key_from(_qualified_name(fn), args, kwargs)


def _qualified_name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None) or repr(fn)
    return f"{module}.{qualname}" if module else qualname


def _key_from(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    if kwargs:
        return f"{name}{args!r}{sorted(kwargs.items())!r}"
    return f"{name}{args!r}"


def _invoke(loader: Callable[[], T]) -> T:
    return loader()


class _Outcome:
    """The result of one load, shared by every caller that waited for it."""

    __slots__ = ("error", "kind", "stale", "traceback", "value")

    def __init__(
        self,
        kind: int,
        value: Any = None,
        error: BaseException | None = None,
        traceback: TracebackType | None = None,
        *,
        stale: bool = False,
    ) -> None:
        self.kind = kind
        self.value = value
        self.error = error
        self.traceback = traceback
        self.stale = stale


_RETRY_OUTCOME = _Outcome(_RETRY)
# ``_sync_load`` is to claim the shared store's lock itself (the caller did not).
_UNCLAIMED: Final = object()


class _Flight:
    """A load in progress for one key. ``discarded`` is set when the key is invalidated while
    it runs: its answer still goes to the callers waiting for it but is not stored."""

    __slots__ = ("discarded",)

    def __init__(self) -> None:
        self.discarded = False


class _SyncFlight(_Flight):
    __slots__ = ("done", "outcome", "owner")

    def __init__(self) -> None:
        super().__init__()
        self.done = threading.Event()
        self.outcome: _Outcome | None = None
        self.owner = threading.get_ident()


class _AsyncFlight(_Flight):
    __slots__ = ("task",)

    task: asyncio.Task[_Outcome]


class _CacheState:
    """The cache's mutable state and its decisions (sans-IO: ``now`` is always given)."""

    __slots__ = (
        "async_flights",
        "beta",
        "fallback_s",
        "lock",
        "names",
        "negative_on",
        "negative_ttl_s",
        "rng",
        "shared",
        "stale_s",
        "store",
        "sync_flights",
        "ttl_s",
    )

    def __init__(
        self,
        store: CacheStore,
        *,
        ttl_s: float,
        stale_s: float,
        stale_if_error_s: float,
        negative_ttl_s: float,
        negative_on: tuple[type[BaseException], ...],
        beta: float,
        seed: int | None,
    ) -> None:
        self.store = store
        # The same store when several processes share it (see SharedCacheStore), else None.
        self.shared: SharedCacheStore | None = None
        self.ttl_s = ttl_s
        self.stale_s = stale_s
        # A failed load may be answered with the old value while it is within either window.
        self.fallback_s = max(stale_s, stale_if_error_s)
        self.negative_ttl_s = negative_ttl_s
        self.negative_on = negative_on
        self.beta = beta
        self.rng = random.Random(seed)
        # Qualified names of the functions seen by the default key, so a hit does not
        # rebuild them (bounded: cleared when full).
        self.names: dict[Callable[..., Any], str] = {}
        # Guards the sync flights and the per-loop flight tables (not the hit path).
        self.lock = threading.Lock()
        self.sync_flights: dict[str, _SyncFlight] = {}
        self.async_flights: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, _AsyncFlight]
        ] = weakref.WeakKeyDictionary()

    # -- decisions -----------------------------------------------------------------------

    def decide(self, entry: CacheEntry, now: float) -> int:
        """What to do with ``entry`` at ``now``: FRESH, EARLY, STALE, MISS or NEGATIVE.

        With ``e = entry.expires_at``: a negative entry is NEGATIVE while ``now < e``; a value
        is FRESH while ``now < e`` (EARLY when the XFetch draw fires, see :class:`Cache`),
        STALE while ``now < e + stale_s``, and a MISS after that.
        """
        expires_at = entry.expires_at
        if entry.error is not None:
            return NEGATIVE if now < expires_at else MISS
        if now < expires_at:
            beta = self.beta
            if (
                beta
                and entry.load_s > 0.0
                and now - entry.load_s * beta * math.log(1.0 - self.rng.random()) >= expires_at
            ):
                return EARLY
            return FRESH
        if now < expires_at + self.stale_s:
            return STALE
        return MISS

    def is_fresh(self, entry: CacheEntry, now: float) -> bool:
        """Is ``entry`` (a value or a cached error) still within its TTL at ``now``?"""
        return now < entry.expires_at

    def can_fall_back(self, entry: CacheEntry, now: float) -> bool:
        """May a failed load at ``now`` be answered with ``entry``'s value? Yes while
        ``now < expires_at + max(stale_s, stale_if_error_s)`` (and always before expiry)."""
        return entry.error is None and now < entry.expires_at + self.fallback_s

    def is_dead(self, entry: CacheEntry, now: float) -> bool:
        """Is ``entry`` of no further use at ``now`` (neither servable nor a fallback)?"""
        if entry.error is not None:
            return now >= entry.expires_at
        return now >= entry.expires_at + self.fallback_s

    def entry_for_value(self, value: Any, now: float, load_s: float) -> CacheEntry:
        """The entry for a value loaded at ``now``: fresh for ``ttl_s``."""
        return CacheEntry(value, expires_at=now + self.ttl_s, load_s=load_s)

    def entry_for_error(self, error: BaseException, now: float, load_s: float) -> CacheEntry | None:
        """The negative entry for ``error`` raised at ``now``, or None when it is not cached."""
        if self.negative_ttl_s <= 0.0 or not isinstance(error, self.negative_on):
            return None
        return CacheEntry(
            None,
            expires_at=now + self.negative_ttl_s,
            load_s=load_s,
            error=error,
            traceback=error.__traceback__,
        )

    # -- flight tables -------------------------------------------------------------------

    def loop_flights(self, loop: asyncio.AbstractEventLoop) -> dict[str, _AsyncFlight]:
        flights = self.async_flights.get(loop)
        if flights is None:
            with self.lock:
                flights = self.async_flights.setdefault(loop, {})
        return flights

    def discard(self, key: str | None) -> None:
        """Detach the in-flight loads of ``key`` (all keys when None); call with the lock."""
        tables: list[dict[str, Any]] = [self.sync_flights, *self.async_flights.values()]
        for table in tables:
            if key is None:
                for flight in table.values():
                    flight.discarded = True
                table.clear()
            else:
                flight = table.pop(key, None)
                if flight is not None:
                    flight.discarded = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Cache(Policy):
    """Serve a remembered answer while it is fresh; load a missing one once for all callers.

    Configuration (durations in seconds, on ``clock``):

    - ``ttl_s``: how long a loaded value is fresh (> 0; ``math.inf`` for never).
    - ``max_entries``: how many keys are kept; the least recently used is evicted past it.
      Required unless ``store`` is given (the store then bounds itself).
    - ``stale_s`` (stale-while-revalidate): for ``stale_s`` after expiry the old value is
      still served at once while one refresh runs (see *Refreshing* below).
    - ``stale_if_error_s``: when a load fails within ``stale_if_error_s`` after expiry (or
      within ``stale_s``), the old value is served instead of the error (``StaleServed``
      with reason ``"error"``).
    - ``negative_ttl_s``, ``negative_on``: an exception of a ``negative_on`` type is an
      *answer*: it is cached for ``negative_ttl_s`` and re-raised to later callers without
      calling the loader. It replaces the previous value, so stale-if-error does not apply
      to it; keep ``negative_on`` to not-found kinds of errors. Cancellation is never cached.
    - ``early_refresh_beta`` (probabilistic early refresh, XFetch by Vattani et al.): each
      fresh hit refreshes early when ``now - delta * beta * ln(U) >= expires_at``, where
      ``delta`` is how long the last load took and ``U`` is uniform in (0, 1] from a
      ``random.Random(seed)``. At ``g`` seconds before expiry that happens with probability
      ``exp(-g / (delta * beta))``: rarely at first, surely at expiry, so one caller
      refreshes a hot key before it expires instead of many missing at once. ``0`` is off,
      ``1`` is XFetch's default, larger refreshes earlier.
    - ``key``: ``key(args, kwargs) -> str`` gives the key of a decorated call (or of a call
      through a ``Pipeline``); default :func:`default_key` (the function's qualified name and
      the repr of the arguments). ``get_or_load`` is given its key directly.
    - ``store``: where entries live (a :class:`CacheStore`); default a
      :class:`MemoryCacheStore` of ``max_entries``. A :class:`SharedCacheStore` (such as
      ``brownout.stores.RedisCacheStore``) shares entries between processes: the cache binds
      its clock, stale window and events to it, uses its async methods on the async paths,
      and claims the key's lock before loading, so one process loads while the others wait
      for its value (single-flight across processes; see the store for its lease and waits).

    Use: ``cache.get_or_load(key, loader)``, ``await cache.aget_or_load(key, loader)``,
    ``@cache`` on a plain or ``async def`` function, ``cache.call(fn, ...)`` /
    ``await cache.acall(fn, ...)``, or inside a ``Pipeline`` (where it wraps what follows it).
    There is no context manager: a cache must be able to skip the work it guards.

    Single-flight: concurrent misses of one key run the loader once; the others wait for its
    value or its exception (an exception reaches all of them and is cached only as above).

    - async: the load runs as a task of its own, started by the first caller and awaited
      (shielded) by every caller. A caller that is cancelled stops waiting; the load goes on
      for the others and still fills the cache. It runs in a copy of the first caller's
      context (so under that caller's deadline). If the load itself ends cancelled (the
      loader raised ``CancelledError``, or the loop shuts down), its waiters get
      ``CancelledError``, as awaiting a cancelled future does; nothing is cached. One table
      of loads per event loop.
    - sync: the first thread runs the loader in its own thread; the others block until it
      finishes. A loader that asks the cache for its own key raises ``RuntimeError``
      instead of deadlocking. Sync and async callers do not share loads: a thread and a task
      missing the same key at the same moment may both load it.

    Refreshing (stale-while-revalidate and early refresh):

    - async: the caller is served at once and the refresh runs as a background task, one
      per key, without the triggering caller's deadline (that caller already has its
      answer). A failed refresh leaves the old entry in place (a ``negative_on`` error
      replaces it).
    - sync: no thread is spawned. The first caller that finds the value stale (or wins the
      early-refresh draw) refreshes it inline and gets the new value; while it does, every
      other caller is served the old value at once. If its refresh fails it gets the old
      value (within the windows above) and the entry stays as it was.

    ``invalidate(key)`` forgets the entry and detaches a load in flight for it, whose answer
    then still reaches the callers already waiting but is not stored. ``clear()`` does that
    for every key. ``len(cache)`` counts stored entries (expired ones included until they
    are replaced, evicted or found useless), never loads in flight.

    Events (only when subscribed): each call emits ``CacheHit`` (fresh value, early-refresh
    winner, or cached error), ``CacheMiss`` (it loads or waits for a load) or
    ``StaleServed(reason="revalidating")``; each load emits ``CacheLoaded`` with its duration
    and ``ok``; a call answered with an old value because its load failed also emits
    ``StaleServed(reason="error")``.
    """

    ttl_s: float
    max_entries: int | None = None
    stale_s: float = 0.0
    stale_if_error_s: float = 0.0
    negative_ttl_s: float = 0.0
    negative_on: type[Exception] | tuple[type[Exception], ...] = ()
    early_refresh_beta: float = 0.0
    key: KeyFunction | None = None
    seed: int | None = None
    store: CacheStore | None = field(default=None, repr=False, compare=False)
    name: str = "cache"
    clock: Clock = field(default=monotonic_clock, repr=False, compare=False)
    events: Events = field(default_factory=Events, repr=False, compare=False)
    _state: _CacheState = field(init=False, repr=False, compare=False)

    kind = "cache"

    def __post_init__(self) -> None:
        owner = "Cache"
        v.positive(owner, "ttl_s", self.ttl_s, finite=False)
        if self.store is None:
            if self.max_entries is None:
                raise InvalidConfig(
                    owner, "max_entries", None, "an integer >= 1 (required unless store is given)"
                )
            v.int_at_least(owner, "max_entries", self.max_entries, 1)
            store: CacheStore = MemoryCacheStore(self.max_entries)
        else:
            if not isinstance(self.store, CacheStore):
                raise InvalidConfig(owner, "store", self.store, "a CacheStore or None")
            if self.max_entries is not None:
                raise InvalidConfig(
                    owner, "max_entries", self.max_entries, "None when a store is given"
                )
            store = self.store
        v.non_negative(owner, "stale_s", self.stale_s)
        v.non_negative(owner, "stale_if_error_s", self.stale_if_error_s)
        v.non_negative(owner, "negative_ttl_s", self.negative_ttl_s)
        negative_on = v.exception_types(owner, "negative_on", self.negative_on)
        for exc_type in negative_on:
            if not issubclass(exc_type, Exception):
                raise InvalidConfig(
                    owner,
                    "negative_on",
                    self.negative_on,
                    "Exception subclasses (cancellation and exits are never cached)",
                )
        if self.negative_ttl_s > 0 and not negative_on:
            raise InvalidConfig(
                owner,
                "negative_on",
                self.negative_on,
                "at least one exception class when negative_ttl_s > 0",
            )
        if negative_on and self.negative_ttl_s == 0:
            raise InvalidConfig(
                owner, "negative_ttl_s", self.negative_ttl_s, "> 0 when negative_on is given"
            )
        v.non_negative(owner, "early_refresh_beta", self.early_refresh_beta)
        v.callable_or_none(owner, "key", self.key)
        if self.seed is not None and (
            not isinstance(self.seed, int) or isinstance(self.seed, bool)
        ):
            raise InvalidConfig(owner, "seed", self.seed, "an integer or None")
        if not isinstance(self.name, str) or not self.name:
            raise InvalidConfig(owner, "name", self.name, "a non-empty string")
        object.__setattr__(self, "negative_on", negative_on)
        object.__setattr__(
            self,
            "_state",
            _CacheState(
                store,
                ttl_s=float(self.ttl_s),
                stale_s=float(self.stale_s),
                stale_if_error_s=float(self.stale_if_error_s),
                negative_ttl_s=float(self.negative_ttl_s),
                negative_on=negative_on,
                beta=float(self.early_refresh_beta),
                seed=self.seed,
            ),
        )
        if isinstance(store, SharedCacheStore):
            state = self._state
            store.bind(
                clock=self.clock, keep_s=state.fallback_s, events=self.events, name=self.name
            )
            state.shared = store

    # -- public --------------------------------------------------------------------------

    def get_or_load(self, key: str, loader: Callable[[], T]) -> T:
        """The value for ``key``, calling ``loader()`` (in this thread) when it must be loaded."""
        state = self._state
        now = self.clock.now()
        entry = state.store.get(key)
        decision = MISS if entry is None else state.decide(entry, now)
        if decision == FRESH:
            if self.events:
                self.events.emit(CacheHit(now, self.name, key))
            return entry.value  # type: ignore[union-attr,no-any-return]
        return self._get_slow(key, _invoke, loader, (entry, decision, now))  # type: ignore[no-any-return]

    async def aget_or_load(self, key: str, loader: Callable[[], Awaitable[T]]) -> T:
        """The value for ``key``, awaiting ``loader()`` (a coroutine function) when it must be
        loaded."""
        state = self._state
        now = self.clock.now()
        shared = state.shared
        entry = state.store.get(key) if shared is None else await shared.aget(key)
        decision = MISS if entry is None else state.decide(entry, now)
        if decision == FRESH:
            if self.events:
                self.events.emit(CacheHit(now, self.name, key))
            return entry.value  # type: ignore[union-attr,no-any-return]
        return await self._aget_slow(key, _invoke, loader, (entry, decision, now))  # type: ignore[no-any-return]

    def key_for(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> str:
        """The key a call ``fn(*args, **kwargs)`` gets when decorated by this cache, to pass
        to :meth:`invalidate`."""
        if self.key is None:
            return default_key(fn, args, kwargs)
        return self._checked_key(self.key(args, kwargs))

    def invalidate(self, key: str) -> None:
        """Forget ``key``: drop its entry and detach any load in flight for it."""
        state = self._state
        with state.lock:
            state.store.delete(key)
            state.discard(key)

    def clear(self) -> None:
        """Forget every entry and detach every load in flight."""
        state = self._state
        with state.lock:
            state.store.clear()
            state.discard(None)

    def __len__(self) -> int:
        """How many entries are stored (loads in flight are not entries)."""
        return len(self._state.store)

    def __bool__(self) -> bool:
        # A policy is always truthy, even when its cache is empty.
        return True

    # -- Pipeline / decorator adapters ---------------------------------------------------

    def _key_of(self, call: Call) -> str:
        if self.key is not None:
            return self._checked_key(self.key(call.args, call.kwargs))
        names = self._state.names
        fn = call.fn
        name = names.get(fn)
        if name is None:
            name = _qualified_name(fn)
            if len(names) >= _MAX_NAMES:
                names.clear()
            names[fn] = name
        return _key_from(name, call.args, call.kwargs)

    def _checked_key(self, key: object) -> str:
        if type(key) is not str:
            raise TypeError(f"{self.name}: the key function returned {key!r}; it must return a str")
        return key

    def _run(self, nxt: SyncNext, call: Call) -> Any:
        key = self._key_of(call)
        state = self._state
        now = self.clock.now()
        entry = state.store.get(key)
        decision = MISS if entry is None else state.decide(entry, now)
        if decision == FRESH:
            if self.events:
                self.events.emit(CacheHit(now, self.name, key))
            return entry.value  # type: ignore[union-attr]
        return self._get_slow(key, nxt, call, (entry, decision, now))

    async def _arun(self, nxt: AsyncNext, call: Call) -> Any:
        key = self._key_of(call)
        state = self._state
        now = self.clock.now()
        shared = state.shared
        entry = state.store.get(key) if shared is None else await shared.aget(key)
        decision = MISS if entry is None else state.decide(entry, now)
        if decision == FRESH:
            if self.events:
                self.events.emit(CacheHit(now, self.name, key))
            return entry.value  # type: ignore[union-attr]
        return await self._aget_slow(key, nxt, call, (entry, decision, now))

    # -- shared by both paths ------------------------------------------------------------

    def _look(self, key: str) -> tuple[CacheEntry | None, int, float]:
        state = self._state
        now = self.clock.now()
        entry = state.store.get(key)
        return entry, (MISS if entry is None else state.decide(entry, now)), now

    def _served(self, key: str, entry: CacheEntry, decision: int, now: float) -> Any:
        """Answer from ``entry`` without loading (FRESH, NEGATIVE, or STALE/EARLY while a
        refresh already runs)."""
        events = self.events
        if decision == NEGATIVE:
            if events:
                events.emit(CacheHit(now, self.name, key))
            error = entry.error
            assert error is not None
            raise error.with_traceback(entry.traceback)
        if events:
            if decision == STALE:
                events.emit(StaleServed(now, self.name, key, "revalidating"))
            else:
                events.emit(CacheHit(now, self.name, key))
        return entry.value

    def _loaded(self, key: str, value: Any, started: float, flight: _Flight) -> _Outcome:
        now = self.clock.now()
        state = self._state
        if not flight.discarded:
            state.store.set(key, state.entry_for_value(value, now, now - started))
        if self.events:
            self.events.emit(CacheLoaded(now, self.name, key, now - started, True))
        return _Outcome(_VALUE, value)

    def _failed(
        self,
        key: str,
        error: Exception,
        started: float,
        flight: _Flight,
        seen: CacheEntry | None,
    ) -> _Outcome:
        now = self.clock.now()
        state = self._state
        if self.events:
            self.events.emit(CacheLoaded(now, self.name, key, now - started, False))
        negative = state.entry_for_error(error, now, now - started)
        if negative is not None:
            if not flight.discarded:
                state.store.set(key, negative)
            return _Outcome(_ERROR, None, error, negative.traceback)
        if not flight.discarded:
            current = state.store.get(key)
            old = current if current is not None else seen
            if old is not None and state.can_fall_back(old, now):
                return _Outcome(_FALLBACK, old.value, stale=now >= old.expires_at)
            if current is not None and state.is_dead(current, now):
                state.store.delete(key)
        return _Outcome(_ERROR, None, error, error.__traceback__)

    def _deliver(self, key: str, outcome: _Outcome) -> Any:
        kind = outcome.kind
        if kind == _VALUE:
            return outcome.value
        if kind == _FALLBACK:
            if outcome.stale and self.events:
                self.events.emit(StaleServed(self.clock.now(), self.name, key, "error"))
            return outcome.value
        error = outcome.error
        assert error is not None
        raise error.with_traceback(outcome.traceback)

    # -- sync ----------------------------------------------------------------------------

    def _get_slow(
        self,
        key: str,
        fn: Callable[[A], Any],
        arg: A,
        look: tuple[CacheEntry | None, int, float],
    ) -> Any:
        state = self._state
        entry, decision, now = look
        while True:
            if entry is not None and decision in (FRESH, NEGATIVE):
                return self._served(key, entry, decision, now)
            lead = False
            with state.lock:
                flight = state.sync_flights.get(key)
                if flight is None:
                    # (A shared store is not read under the lock: its claim looks again.)
                    current = (
                        state.store.get(key) if decision != EARLY and state.shared is None else None
                    )
                    if current is None or not state.is_fresh(current, now):
                        flight = state.sync_flights[key] = _SyncFlight()
                        lead = True
            if flight is None:  # a load finished between our look and the lock: look again
                entry, decision, now = self._look(key)
                continue
            if entry is not None and decision != MISS and not lead:
                return self._served(key, entry, decision, now)  # someone refreshes already
            if not lead and flight.owner == threading.get_ident():
                raise RuntimeError(
                    f"{self.name}: the loader of key {key!r} asked for the same key (recursion)"
                )
            claimed: object = _UNCLAIMED
            if lead and decision != MISS and state.shared is not None:
                # A stale or early refresh with other processes: refresh only if none of them
                # is refreshing already; otherwise serve what we have, as in-process callers
                # are while a refresh runs.
                assert entry is not None
                try:
                    claimed = state.shared.claim(key, wait=False, early=decision == EARLY)
                except BaseException:
                    self._land(key, flight, _RETRY_OUTCOME)
                    raise
                if isinstance(claimed, _Busy | CacheEntry):
                    self._land(key, flight, _RETRY_OUTCOME)
                    if isinstance(claimed, CacheEntry):  # just refreshed by another process
                        entry = claimed
                        decision = NEGATIVE if entry.error is not None else FRESH
                    return self._served(key, entry, decision, now)
            if self.events:
                if decision == EARLY:
                    self.events.emit(CacheHit(now, self.name, key))
                else:
                    self.events.emit(CacheMiss(now, self.name, key))
            if lead:
                return self._deliver(
                    key, self._sync_load(key, fn, arg, flight, entry, claimed=claimed)
                )
            flight.done.wait()
            outcome = flight.outcome
            if outcome is not None and outcome.kind != _RETRY:
                return self._deliver(key, outcome)
            entry, decision, now = self._look(key)

    def _sync_load(
        self,
        key: str,
        fn: Callable[[A], Any],
        arg: A,
        flight: _SyncFlight,
        seen: CacheEntry | None,
        *,
        claimed: object = _UNCLAIMED,
    ) -> _Outcome:
        """Run the load for ``key`` and hand its outcome to the flight's waiters. With a
        shared store the key's lock is claimed first, waiting for another process's load
        (``claimed``: the answer of a claim the caller made already)."""
        state = self._state
        outcome = _RETRY_OUTCOME
        lease: Lease | None = None
        try:
            shared = state.shared
            if shared is not None:
                if claimed is _UNCLAIMED:
                    claimed = shared.claim(key, wait=True, early=False)
                if isinstance(claimed, CacheEntry):
                    outcome = _from_peer(claimed)
                    return outcome
                if claimed is not None and not isinstance(claimed, _Busy):
                    lease = cast(Lease, claimed)
            started = self.clock.now()
            try:
                value = fn(arg)
            except Exception as exc:
                outcome = self._failed(key, exc, started, flight, seen)
            else:
                outcome = self._loaded(key, value, started, flight)
        finally:
            # Also on KeyboardInterrupt & co: the waiters are released and look again.
            if lease is not None:
                lease.release()
            self._land(key, flight, outcome)
        return outcome

    def _land(self, key: str, flight: _SyncFlight, outcome: _Outcome) -> None:
        """End ``flight``: forget it and wake its waiters with ``outcome``."""
        state = self._state
        with state.lock:
            if state.sync_flights.get(key) is flight:
                del state.sync_flights[key]
        flight.outcome = outcome
        flight.done.set()

    # -- async ---------------------------------------------------------------------------

    async def _aget_slow(
        self,
        key: str,
        fn: Callable[[A], Awaitable[Any]],
        arg: A,
        look: tuple[CacheEntry | None, int, float],
    ) -> Any:
        entry, decision, now = look
        if entry is not None and decision == NEGATIVE:
            return self._served(key, entry, decision, now)
        flights = self._state.loop_flights(asyncio.get_running_loop())
        flight = flights.get(key)
        if entry is not None and decision != MISS:  # STALE or EARLY: serve, refresh behind
            if flight is None:
                self._spawn(key, fn, arg, flights, entry, background=True, early=decision == EARLY)
            return self._served(key, entry, decision, now)
        if flight is None:
            flight = self._spawn(key, fn, arg, flights, entry, background=False)
        elif flight.task is asyncio.current_task():
            raise RuntimeError(
                f"{self.name}: the loader of key {key!r} asked for the same key (recursion)"
            )
        if self.events:
            self.events.emit(CacheMiss(now, self.name, key))
        # Shielded: a caller cancelled while waiting leaves the load running for the others.
        return self._deliver(key, await asyncio.shield(flight.task))

    def _spawn(
        self,
        key: str,
        fn: Callable[[A], Awaitable[Any]],
        arg: A,
        flights: dict[str, _AsyncFlight],
        seen: CacheEntry | None,
        *,
        background: bool,
        early: bool = False,
    ) -> _AsyncFlight:
        flight = _AsyncFlight()
        loop = asyncio.get_running_loop()
        coro = self._aload(key, fn, arg, flight, flights=flights, seen=seen, early=early)
        name = f"brownout-cache-load:{key}"
        if background:
            context = contextvars.copy_context()
            context.run(_current.set, None)
            flight.task = loop.create_task(coro, name=name, context=context)
        else:
            flight.task = loop.create_task(coro, name=name)
        flights[key] = flight
        return flight

    async def _aload(
        self,
        key: str,
        fn: Callable[[A], Awaitable[Any]],
        arg: A,
        flight: _AsyncFlight,
        *,
        flights: dict[str, _AsyncFlight],
        seen: CacheEntry | None,
        early: bool,
    ) -> _Outcome:
        shared = self._state.shared
        if shared is not None:
            return await self._aload_shared(
                key, fn, arg, flight, flights=flights, seen=seen, early=early, shared=shared
            )
        started = self.clock.now()
        try:
            value = await fn(arg)
        except Exception as exc:
            return self._failed(key, exc, started, flight, seen)
        else:
            return self._loaded(key, value, started, flight)
        finally:
            if flights.get(key) is flight:
                del flights[key]

    async def _aload_shared(
        self,
        key: str,
        fn: Callable[[A], Awaitable[Any]],
        arg: A,
        flight: _AsyncFlight,
        *,
        flights: dict[str, _AsyncFlight],
        seen: CacheEntry | None,
        early: bool,
        shared: SharedCacheStore,
    ) -> _Outcome:
        """``_aload`` with a store other processes share: claim the key's lock first (a miss
        or a stale refresh waits for another process's load; an early refresh does not), and
        store through the async methods."""
        lease: Lease | None = None
        state = self._state
        try:
            got = await shared.aclaim(key, wait=not early, early=early)
            if isinstance(got, _Busy):
                if seen is not None:  # another process refreshes this fresh entry already
                    return _Outcome(_VALUE, seen.value)
                got = None
            if isinstance(got, CacheEntry):
                return _from_peer(got)
            lease = got
            started = self.clock.now()
            try:
                value = await fn(arg)
            except Exception as exc:
                now = self.clock.now()
                if self.events:
                    self.events.emit(CacheLoaded(now, self.name, key, now - started, False))
                negative = state.entry_for_error(exc, now, now - started)
                if negative is not None:
                    if not flight.discarded:
                        await shared.aset(key, negative)
                    return _Outcome(_ERROR, None, exc, negative.traceback)
                # Entries past every window expire in the shared store by themselves.
                if not flight.discarded and seen is not None and state.can_fall_back(seen, now):
                    return _Outcome(_FALLBACK, seen.value, stale=now >= seen.expires_at)
                return _Outcome(_ERROR, None, exc, exc.__traceback__)
            now = self.clock.now()
            if not flight.discarded:
                await shared.aset(key, state.entry_for_value(value, now, now - started))
            if self.events:
                self.events.emit(CacheLoaded(now, self.name, key, now - started, True))
            return _Outcome(_VALUE, value)
        finally:
            if flights.get(key) is flight:
                del flights[key]
            if lease is not None:
                await lease.arelease()


def _from_peer(entry: CacheEntry) -> _Outcome:
    """The outcome for the callers of a load another process did: its value or its error."""
    if entry.error is not None:
        return _Outcome(_ERROR, None, entry.error, entry.traceback)
    return _Outcome(_VALUE, entry.value)
