"""LocalFirstStore: decide in the process, reconcile with Redis every ``sync_interval_s``.

For rates where even one Redis round trip per request is too many, each process keeps a
local copy of every key's GCRA state and decides on it with no I/O. Once per
``sync_interval_s`` per key, the first request that finds the key due makes *one* script
call (:data:`REPORT`): it reports the cost this process admitted since its last report
(charged to the shared TAT from when the first of it was admitted, never refused) and reads
back the shared TAT, which then replaces the local one (plus whatever this process admitted
while the call was in flight). A key seen for the first time is synced before its first
decision, so a process starts from the shared state, not from a full burst. The keys are
the ones :class:`RedisStore` uses, with the same meaning.

Overshoot bound (N processes sharing a key, ``I = sync_interval_s``, ``T = 1/rate``). A
process decides against the shared state as of its last sync plus its own admissions since.
What it cannot see is what each other process admitted after that process's last report
before the sync: at most two of its local spans (the one not yet reported, and the one
after its next report), and its local GCRA admits at most ``burst + rate * I`` in a span.
Every admission therefore conforms to GCRA with the tolerance widened by at most
``2 * (N - 1) * (burst + rate * I)`` cells, and in any window of ``W`` seconds the
processes together admit at most::

    burst + rate * W + 2 * (N - 1) * (burst + rate * I)

One process alone gets exactly the GCRA bound ``burst + rate * W``. Add a sync's round
trip time to ``I`` when it is not small next to it. The overshoot is paid back: reports are
never refused, so after one the shared TAT runs ahead and every process waits; over long
windows the total tends to ``rate`` (measured: 4 processes at 2000/s, burst 20, I = 50 ms
admit about 2200 in a second, 2000 of them the rate).

When Redis fails, the store keeps deciding locally (``fail="open"`` on the
:class:`RedisStore`: each process applies the full rate on its own) or refuses
(``fail="closed"``); the consumption of a failed report is dropped, not replayed, so an
outage does not leave every key blocked afterwards. Events, retry pacing and clients are
the :class:`RedisStore`'s.

Memory: at most ``max_keys`` keys, the least recently used dropped first (with its
unreported consumption, at most one span's worth).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from .. import _validate as v
from ..errors import InvalidConfig
from ..guard._ratelimit import Decision, gcra_decide
from ._redis import EPOCH_BASE, RedisStore, Script

__all__ = ["LocalFirstStore"]

# Report ``used`` cost units admitted here since the last report, the first of them
# ``first_age`` seconds ago, with this process's own view of the key (its local TAT,
# ``local_ahead`` seconds ahead of now, negative when it has passed); return the shared TAT
# as seconds ahead of the server's now (text, 17 digits).
# ARGV: interval T, used, local_ahead, first_age, keep_s.
#
# The shared TAT becomes max(max(shared, now - first_age) + used * T, now + local_ahead):
# the reported cells are charged from when the first of them was admitted (not when the
# report arrives, which may be an interval or a descheduling later), on top of what the
# others reported; and never below the process's own chain, which placed each cell in
# time. The key is kept ``keep_s`` past that TAT (which may already be in the past) so that
# reports arriving late still add up instead of each one starting from nothing.
REPORT = Script(
    f"""
local t = redis.call('TIME')
local now = (tonumber(t[1]) - {EPOCH_BASE}) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local used = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if used > 0 then
  local start = now - tonumber(ARGV[4])
  if tat and tat > start then start = tat end
  local new = start + used * interval
  local own = now + tonumber(ARGV[3])
  if own > new then new = own end
  local ttl = tonumber(ARGV[5])
  if new > now then ttl = ttl + (new - now) end
  redis.call('SET', KEYS[1], string.format('%.17g', new), 'PX', math.ceil(ttl * 1000))
  tat = new
end
if tat and tat > now then return string.format('%.17g', tat - now) end
return '0'
"""
)


class _Entry:
    """One key's local view: its TAT on the caller's clock, the cost admitted here and not
    yet reported (the first of it at ``first``), when the next sync is due, and whether one
    is in flight."""

    __slots__ = ("first", "next_sync", "syncing", "tat", "unreported")

    def __init__(self, now: float) -> None:
        self.tat = now
        self.unreported = 0
        self.first = now
        self.next_sync = now
        self.syncing = False


class LocalFirstStore:
    """A :class:`~brownout.guard.RateStore` deciding locally and syncing with Redis at an
    interval (see the module docstring for the protocol and the overshoot bound).

    ``redis`` is the :class:`RedisStore` whose clients, key prefix, failure mode, retry
    pacing and events this store uses. ``sync_interval_s`` is the longest a key's local view
    may go without a sync while it is used; ``max_keys`` bounds the keys kept. ``now``
    passed to :meth:`gcra` drives the local decisions and the sync schedule.
    """

    __slots__ = ("_entries", "_keep_s", "_lock", "max_keys", "redis", "sync_interval_s")

    def __init__(
        self, redis: RedisStore, *, sync_interval_s: float = 0.1, max_keys: int = 100_000
    ) -> None:
        if not isinstance(redis, RedisStore):
            raise InvalidConfig("LocalFirstStore", "redis", redis, "a RedisStore")
        self.redis = redis
        self.sync_interval_s = v.positive("LocalFirstStore", "sync_interval_s", sync_interval_s)
        self.max_keys = v.int_at_least("LocalFirstStore", "max_keys", max_keys, 1)
        # How long a shared key outlives its TAT, for late reports to add up (see REPORT).
        self._keep_s = 1.0 + 4 * self.sync_interval_s
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"LocalFirstStore({self.redis!r}, sync_interval_s={self.sync_interval_s!r}, "
            f"max_keys={self.max_keys})"
        )

    def __len__(self) -> int:
        return len(self._entries)

    def _begin(self, key: str, now: float) -> tuple[_Entry, tuple[int, float, float] | None]:
        """The key's entry and, when this caller must sync it now, what to report: the cost
        admitted since the last report, the local TAT as seconds ahead of ``now`` (negative
        when it has passed), and the age of the first unreported admission."""
        entries = self._entries
        with self._lock:
            entry = entries.get(key)
            if entry is None:
                entry = entries[key] = _Entry(now)
                if len(entries) > self.max_keys:
                    entries.popitem(last=False)
            else:
                entries.move_to_end(key)
            if entry.syncing or now < entry.next_sync:
                return entry, None
            entry.syncing = True
            used = entry.unreported
            entry.unreported = 0
            age = now - entry.first if used and now > entry.first else 0.0
            return entry, (used, entry.tat - now, age)

    def _end(self, entry: _Entry, reply: object, interval_s: float, now: float) -> bool:
        """Apply a sync's reply. False when it failed."""
        with self._lock:
            entry.syncing = False
            entry.next_sync = now + self.sync_interval_s
            if reply is None:
                return False
            try:
                ahead = float(reply)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return False
            entry.tat = now + ahead + entry.unreported * interval_s
            return True

    def _abandon(self, entry: _Entry, used: int) -> None:
        """A sync was interrupted (cancelled, say) before any reply: undo ``_begin``."""
        with self._lock:
            entry.syncing = False
            entry.unreported += used

    def _refused(self) -> Decision:
        return self.redis._closed_decision()

    def _decide(
        self, entry: _Entry, interval_s: float, tolerance_s: float, cost: int, now: float
    ) -> Decision:
        with self._lock:
            tat = entry.tat
            decision, after = gcra_decide(
                tat - now if tat > now else 0.0, interval_s, tolerance_s, cost
            )
            if cost and decision.allowed:
                entry.tat = now + after
                if not entry.unreported:
                    entry.first = now
                entry.unreported += cost
            return decision

    def gcra(
        self, key: str, *, interval_s: float, tolerance_s: float, cost: int, now: float
    ) -> Decision:
        closed = self.redis.fail == "closed"
        entry, report = self._begin(key, now)
        if report is None and closed and self.redis.down:
            return self._refused()  # fail closed: no local decisions while Redis is away
        if report is not None:
            try:
                reply = self.redis.eval(REPORT, key, interval_s, *report, self._keep_s)
            except BaseException:
                self._abandon(entry, report[0])
                raise
            if not self._end(entry, reply, interval_s, now) and closed:
                return self._refused()
        return self._decide(entry, interval_s, tolerance_s, cost, now)

    async def agcra(
        self, key: str, *, interval_s: float, tolerance_s: float, cost: int, now: float
    ) -> Decision:
        closed = self.redis.fail == "closed"
        entry, report = self._begin(key, now)
        if report is None and closed and self.redis.down:
            return self._refused()  # fail closed: no local decisions while Redis is away
        if report is not None:
            try:
                reply = await self.redis.aeval(REPORT, key, interval_s, *report, self._keep_s)
            except BaseException:  # cancelled while waiting for Redis
                self._abandon(entry, report[0])
                raise
            if not self._end(entry, reply, interval_s, now) and closed:
                return self._refused()
        return self._decide(entry, interval_s, tolerance_s, cost, now)
