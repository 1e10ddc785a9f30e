"""RateLimit: GCRA per key, with a burst, over a pluggable store.

The generic cell rate algorithm (GCRA) keeps one number per key, its *theoretical arrival
time* (TAT): the time at which the key would be back to a full burst if nothing else came.
With ``T = 1/rate`` (the emission interval, seconds per request) and ``burst = b``, a request
of ``cost`` c arriving at ``now`` is decided as follows (``tau = (b - 1) * T`` is the
tolerance, the "delay variation tolerance" of the ATM standard)::

    d   = max(TAT - now, 0)           # how far ahead of now the key runs
    d'  = d + c * T                   # where it would run after this request
    admit   if d' <= tau + T          # i.e. d' <= b * T
            then TAT = now + d'
    refuse  otherwise; retry_after = d' - (tau + T); TAT unchanged

So a fresh key (``d = 0``) admits exactly ``b`` requests of cost 1 at once, then one every
``T`` seconds; in *any* window of length ``t`` it admits at most ``b + rate * t`` (cost units).
``remaining`` is how many more cost-1 requests would be admitted right now,
``floor((b*T - d) / T)``; ``reset_after_s`` is how long until the key is back to a full
burst (``TAT - now``). Comparisons allow a slack of a millionth of an emission interval so
that float rounding never refuses a request that exact arithmetic admits; the bound above
therefore holds to within ``1e-6`` of a request.

This is the formulation of Brandur Leach's and redis-cell's GCRA, except that their
``max_burst`` counts requests *on top of* the first one; here ``burst`` is the number a
fresh key admits at once (``burst=1``: no burst, strictly one request per ``T``).

Where the TATs live is a seam, :class:`RateStore` (one method, ``gcra``, and its async twin).
:class:`MemoryStore` keeps them in the process; ``brownout.stores.RedisStore`` shares them
across replicas with one Redis round trip per decision.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

from .. import _validate as v
from .._clock import Clock, monotonic_clock
from ..errors import InvalidConfig, RateLimited, ScenarioError
from ..events import CallRejected, Event, Events
from ..units import parse_rate
from ._policy import AsyncNext, Call, Policy, SyncNext

__all__ = [
    "Decision",
    "MemoryStore",
    "RateLimit",
    "RateLimitEnded",
    "RateLimitStarted",
    "RateStore",
    "gcra_decide",
]

# Slack of every admission test, in emission intervals (see the module docstring).
SLACK = 1e-6

# At most this many keys are remembered as "limited" to pair RateLimitStarted with
# RateLimitEnded; beyond it the oldest is forgotten (and never gets its Ended event).
_MAX_LIMITED_KEYS = 10_000


class Decision(NamedTuple):
    """What a rate limit decided for one request (an immutable record; a named tuple since
    one is built per decision and costs a third of a frozen dataclass to build).

    ``allowed``: whether it may go. ``remaining``: how many more requests of cost 1 would be
    admitted right now (0 when refused or exhausted). ``retry_after_s``: when refused, how
    long until this same request (same cost) would be admitted, in seconds; 0 when allowed.
    ``reset_after_s``: how long until the key is back to its full burst, in seconds.
    """

    allowed: bool
    remaining: int
    retry_after_s: float
    reset_after_s: float


def gcra_decide(
    ahead_s: float, interval_s: float, tolerance_s: float, cost: int
) -> tuple[Decision, float]:
    """One GCRA decision, sans-IO and without storage.

    ``ahead_s`` is ``max(TAT - now, 0)`` for the key, in seconds. Returns the decision and the
    key's new ``TAT - now`` (unchanged when refused; a store writes ``now + ahead`` back only
    when the request was allowed and ``cost > 0``).
    """
    limit = tolerance_s + interval_s
    after = ahead_s + cost * interval_s
    if after <= limit + interval_s * SLACK:
        return Decision(True, int((limit - after) / interval_s + SLACK), 0.0, after), after
    remaining = int((limit - ahead_s) / interval_s + SLACK)
    return Decision(False, remaining if remaining > 0 else 0, after - limit, ahead_s), ahead_s


@runtime_checkable
class RateStore(Protocol):
    """Where a :class:`RateLimit` keeps its per-key state: one GCRA decision per call.

    ``interval_s`` is the emission interval ``T = 1/rate`` and ``tolerance_s`` the tolerance
    ``tau = (burst - 1) * T``, both in seconds; ``cost`` is the request's weight (0 asks
    without consuming). ``now`` is the caller's clock: an in-process store uses it; a shared
    store may use its own time instead (``RedisStore`` uses the Redis server's ``TIME``, so
    every replica agrees whatever its clock). The decision and the update of the key must be
    one atomic step. A store never raises for its own failures (a network store falls back
    or refuses instead); implementations must be safe to call from several threads.
    """

    def gcra(
        self, key: str, *, interval_s: float, tolerance_s: float, cost: int, now: float
    ) -> Decision: ...

    async def agcra(
        self, key: str, *, interval_s: float, tolerance_s: float, cost: int, now: float
    ) -> Decision: ...


class MemoryStore:
    """The in-process :class:`RateStore`: one TAT per key in a bounded map.

    At most ``max_keys`` keys are kept. Each decision is O(1): a key used (admitted or
    refused) is moved to the back of an ordered map; inserting a new key first drops the front (least recently used)
    key if its TAT has passed (it then means the same as no entry at all), and, when the map
    is full, drops the front key whatever its TAT (that key restarts with a full burst: the
    store forgets in the lenient direction). A lock makes each decision atomic across
    threads. ``agcra`` is ``gcra``: nothing here waits.
    """

    __slots__ = ("_lock", "_tats", "max_keys")

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = v.int_at_least("MemoryStore", "max_keys", max_keys, 1)
        self._tats: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def gcra(
        self, key: str, *, interval_s: float, tolerance_s: float, cost: int, now: float
    ) -> Decision:
        with self._lock:
            tats = self._tats
            tat = tats.get(key)
            ahead = tat - now if tat is not None and tat > now else 0.0
            decision, after = gcra_decide(ahead, interval_s, tolerance_s, cost)
            if tat is not None:
                tats.move_to_end(key)  # a use, refused or not: a flooding key stays known
                if cost and decision.allowed:
                    tats[key] = now + after
            elif cost and decision.allowed:
                tats[key] = now + after
                self._trim(now)
            return decision

    async def agcra(
        self, key: str, *, interval_s: float, tolerance_s: float, cost: int, now: float
    ) -> Decision:
        return self.gcra(key, interval_s=interval_s, tolerance_s=tolerance_s, cost=cost, now=now)

    def _trim(self, now: float) -> None:
        """A key was just added (at the back): bound the map. Called under the lock."""
        tats = self._tats
        if len(tats) > self.max_keys:
            tats.popitem(last=False)
            return
        oldest = next(iter(tats))
        if tats[oldest] <= now:
            del tats[oldest]

    def __len__(self) -> int:
        return len(self._tats)

    def clear(self) -> None:
        """Forget every key."""
        with self._lock:
            self._tats.clear()

    def __repr__(self) -> str:
        return f"MemoryStore(max_keys={self.max_keys}, keys={len(self._tats)})"


@dataclass(frozen=True, slots=True)
class RateLimitStarted(Event):
    """``key`` went from allowed to refused; the refusal said retry after ``retry_after_s``."""

    key: str
    retry_after_s: float


@dataclass(frozen=True, slots=True)
class RateLimitEnded(Event):
    """``key`` is allowed again after ``refused`` refusals over ``limited_s`` seconds."""

    key: str
    refused: int
    limited_s: float


class _Spells:
    """Which keys are refused at the moment, to emit one event when a key starts being
    refused and one when it is allowed again (instead of one per request)."""

    __slots__ = ("limited", "lock")

    def __init__(self) -> None:
        self.limited: OrderedDict[str, list[float]] = OrderedDict()  # key -> [since, refused]
        self.lock = threading.Lock()

    def observe(self, limit: RateLimit, key: str, decision: Decision, now: float) -> None:
        event: Event | None = None
        with self.lock:
            spell = self.limited.get(key)
            if decision.allowed:
                if spell is not None:
                    del self.limited[key]
                    event = RateLimitEnded(now, limit.name, key, int(spell[1]), now - spell[0])
            elif spell is None:
                self.limited[key] = [now, 1.0]
                if len(self.limited) > _MAX_LIMITED_KEYS:
                    self.limited.popitem(last=False)
                event = RateLimitStarted(now, limit.name, key, decision.retry_after_s)
            else:
                spell[1] += 1
        if event is not None:
            limit.events.emit(event)


KeyFunction = Callable[..., str]


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit(Policy):
    """Admit at most ``burst`` requests at once and ``rate`` per second after that, per key.

    ``rate`` is in requests per second: a number, or a string such as ``"100/s"``,
    ``"30/m"`` or ``"5/100ms"`` (:func:`brownout.units.parse_rate`); after construction it
    is always the float. ``burst`` is how many requests a fresh (or long idle) key admits at
    once; the algorithm is GCRA with ``T = 1/rate`` and ``tau = (burst - 1) * T`` (see the
    module docstring): in any window of ``t`` seconds a key admits at most
    ``burst + rate * t``.

    Two ways to use it:

    - Ask: ``limit.check(key, cost=1)`` (or ``await limit.acheck(...)``) returns a
      :class:`Decision` and never raises for a refusal; the caller answers 429 with
      ``Retry-After: decision.retry_after_s`` itself.
    - Guard: as a policy (``limit.call(fn, ...)``, ``await limit.acall(fn, ...)``,
      ``@limit`` or inside a ``Pipeline``) it raises :class:`brownout.errors.RateLimited`
      (``policy``, ``retry_after_s``, ``key``) when refused and runs the call otherwise. The
      key is ``key(*args, **kwargs)`` of the call when ``key`` is a callable, ``key`` itself
      when it is a string, and ``""`` (one bucket for every call) when it is ``None``.

    Keys are stored as ``"<name>:<key>"``: two limits with different names never share a
    bucket in one store, and replicas with the same name share theirs in a shared store.
    ``store`` is where the state lives (default: a :class:`MemoryStore` of this limit's own;
    ``brownout.stores.RedisStore`` shares it across processes). ``cost`` weighs a request
    (an integer from 0 to ``burst``; 0 asks without consuming).

    Events (when subscribed): ``RateLimitStarted`` when a key is first refused,
    ``RateLimitEnded`` when it is allowed again (with how many refusals and how long), and in
    the guard form ``CallRejected(reason="rate_limited")`` for every refused call.
    """

    rate: float | str
    burst: int = 1
    store: RateStore | None = field(default=None, compare=False)
    key: KeyFunction | str | None = field(default=None, compare=False)
    name: str = "ratelimit"
    clock: Clock = field(default=monotonic_clock, repr=False, compare=False)
    events: Events = field(default_factory=Events, repr=False, compare=False)
    _store: RateStore = field(init=False, repr=False, compare=False)
    _interval_s: float = field(init=False, repr=False, compare=False)
    _tolerance_s: float = field(init=False, repr=False, compare=False)
    _prefix: str = field(init=False, repr=False, compare=False)
    _spells: _Spells = field(init=False, repr=False, compare=False)

    kind = "rate_limit"

    def __post_init__(self) -> None:
        rate = self.rate
        try:
            rate = parse_rate(rate, field="rate")
        except ScenarioError:
            raise InvalidConfig(
                "RateLimit", "rate", self.rate, 'a rate > 0 such as 100, "100/s" or "30/m"'
            ) from None
        v.positive("RateLimit", "rate", rate)
        v.int_at_least("RateLimit", "burst", self.burst, 1)
        if not isinstance(self.name, str) or not self.name:
            raise InvalidConfig("RateLimit", "name", self.name, "a non-empty string")
        if not (self.key is None or isinstance(self.key, str) or callable(self.key)):
            raise InvalidConfig("RateLimit", "key", self.key, "a string, a callable or None")
        store = self.store
        if store is None:
            store = MemoryStore()
        elif not isinstance(store, RateStore):
            raise InvalidConfig(
                "RateLimit", "store", store, "a RateStore (MemoryStore, RedisStore, ...)"
            )
        interval = 1.0 / rate
        set_ = object.__setattr__
        set_(self, "rate", rate)
        set_(self, "store", store)
        set_(self, "_store", store)
        set_(self, "_interval_s", interval)
        set_(self, "_tolerance_s", (self.burst - 1) * interval)
        set_(self, "_prefix", self.name + ":")
        set_(self, "_spells", _Spells())

    @property
    def interval_s(self) -> float:
        """The emission interval ``T = 1/rate``, in seconds."""
        return self._interval_s

    @property
    def tolerance_s(self) -> float:
        """The GCRA tolerance ``tau = (burst - 1) * T``, in seconds."""
        return self._tolerance_s

    def _bad_cost(self, cost: object) -> InvalidConfig:
        return InvalidConfig(
            "RateLimit.check", "cost", cost, f"an integer from 0 to burst ({self.burst})"
        )

    def check(self, key: str = "", cost: int = 1) -> Decision:
        """Decide one request for ``key`` weighing ``cost`` and record it when allowed.

        Never raises for a refusal (nor for a store failure: stores fall back). Raises
        ``InvalidConfig`` for a ``cost`` that is not an integer in ``0..burst`` (more than
        the burst could never be admitted)."""
        if cost != 1 and not (type(cost) is int and 0 <= cost <= self.burst):
            raise self._bad_cost(cost)
        now = self.clock.now()
        decision = self._store.gcra(
            self._prefix + key,
            interval_s=self._interval_s,
            tolerance_s=self._tolerance_s,
            cost=cost,
            now=now,
        )
        if self.events:
            self._spells.observe(self, key, decision, now)
        return decision

    async def acheck(self, key: str = "", cost: int = 1) -> Decision:
        """:meth:`check` for asyncio: awaits the store (an async Redis client, say)."""
        if cost != 1 and not (type(cost) is int and 0 <= cost <= self.burst):
            raise self._bad_cost(cost)
        now = self.clock.now()
        decision = await self._store.agcra(
            self._prefix + key,
            interval_s=self._interval_s,
            tolerance_s=self._tolerance_s,
            cost=cost,
            now=now,
        )
        if self.events:
            self._spells.observe(self, key, decision, now)
        return decision

    # -- as a policy -------------------------------------------------------------------

    def _key_of(self, call: Call) -> str:
        key = self.key
        if key is None:
            return ""
        if isinstance(key, str):
            return key
        return key(*call.args, **call.kwargs)

    def _refused(self, key: str, decision: Decision) -> RateLimited:
        if self.events:
            self.events.emit(CallRejected(self.clock.now(), self.name, "rate_limited"))
        return RateLimited(policy=self.name, retry_after_s=decision.retry_after_s, key=key)

    def _run(self, nxt: SyncNext, call: Call) -> Any:
        key = self._key_of(call)
        decision = self.check(key)
        if not decision.allowed:
            raise self._refused(key, decision)
        return nxt(call)

    async def _arun(self, nxt: AsyncNext, call: Call) -> Any:
        key = self._key_of(call)
        decision = await self.acheck(key)
        if not decision.allowed:
            raise self._refused(key, decision)
        return await nxt(call)
