"""The cost ledger: what each endpoint costs per request, and what the probe found.

One :class:`EndpointStats` per endpoint (``"METHOD /route/template"``) holds the request
count, the status counts and the distribution of every demand a request puts on the
system (:data:`DEMANDS`: wall time, event-loop busy time, CPU, thread-pool wait and run,
database time and statement count, pool wait and hold, dependency time and calls,
response bytes), per dependency host and per database. Each distribution
(:class:`Demand`) keeps the exact count, sum and maximum, and an HdrHistogram
(``brownout.results.Histogram``, 2 significant digits: every percentile is within 1/128
above the exact nearest-rank value) of integer microseconds, counts or bytes; the
histogram is only allocated once a non-zero value arrives, so demands an endpoint never
has cost nothing. Recording a request only appends its demands to a per-endpoint buffer;
the distributions take them in batches of 512 requests (vectorized with numpy when it is
installed) and whenever they are read, so the hot path stays a few microseconds. Per request a demand is recorded even when zero: the mean is the
demand per request, which is what a capacity model multiplies by the arrival rate.

Dependencies and databases are different: a dependency's ``calls`` and ``time_s``
distributions are over the requests that called it (``requests`` says how many), so its
demand per endpoint request is ``calls.total / endpoint.requests``.

The number of endpoints is bounded (``max_endpoints``, default 200): past it, requests are
booked under ``"METHOD (other)"``; requests no route matched (404 without a route) are
booked under ``"METHOD (unmatched)"`` by the middleware, so scanners cannot grow the
ledger. Findings are merged by (endpoint, kind, key), at most ``max_findings`` of them.

``to_dict()`` gives the JSON document described in ``docs/ledger.md`` (schema
``brownout.ledger`` version 1); :meth:`Ledger.from_dict` reads it back exactly (the
histograms are stored in their V2 encoding), :meth:`Ledger.merge` adds another ledger
(several worker processes) and :meth:`Ledger.write` writes it atomically.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import threading
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

from .. import _validate as v
from .._clock import Clock, monotonic_clock, wall_time
from ..errors import ResultsError
from ..results import Histogram
from ..results._hdr import optional_numpy
from ._cost import Finding, ProbeThresholds, RequestCost
from ._findings import CacheWindow, MergedFinding, severity_rank

__all__ = [
    "DEMANDS",
    "LEDGER_SCHEMA",
    "LEDGER_VERSION",
    "Demand",
    "DependencyStats",
    "EndpointStats",
    "Ledger",
]

LEDGER_SCHEMA = "brownout.ledger"
LEDGER_VERSION = 1
DIGITS = 2

#: Every per-request demand the ledger keeps, with its unit: ``s`` (seconds, kept as
#: integer microseconds), ``count`` or ``bytes``.
DEMANDS: tuple[tuple[str, str], ...] = (
    ("wall_s", "s"),
    ("loop_busy_s", "s"),
    ("cpu_s", "s"),
    ("longest_step_s", "s"),
    ("loop_steps", "count"),
    ("thread_wait_s", "s"),
    ("thread_run_s", "s"),
    ("db_s", "s"),
    ("db_calls", "count"),
    ("pool_wait_s", "s"),
    ("pool_hold_s", "s"),
    ("pool_checkouts", "count"),
    ("http_s", "s"),
    ("http_calls", "count"),
    ("response_bytes", "bytes"),
)
_UNITS = {"s": (1e6, 3_600_000_000), "count": (1.0, 1 << 24), "bytes": (1.0, 1 << 40)}
_MAX_DEPENDENCIES = 64
_WIDTH = len(DEMANDS)
_BATCH = 512  # requests buffered per endpoint before the distributions are updated
_OTHER = "(other)"
#: The ledger reads the process CPU clock (a system call) with a request at most this
#: often, in seconds of its clock.
CPU_READ_EVERY_S = 0.05


class Demand:
    """The distribution of one demand over requests: exact ``count``, ``total`` and
    ``max`` (in the demand's unit), percentiles from a lazily allocated histogram.

    ``unit`` is ``"s"`` (recorded as integer microseconds: values under 0.5 us count as
    0), ``"count"`` or ``"bytes"``.
    """

    __slots__ = ("count", "hist", "max", "scale", "total", "unit", "zeros")

    def __init__(self, unit: str) -> None:
        self.unit = unit
        self.scale = _UNITS[unit][0]
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self.zeros = 0  # zeros recorded before the histogram existed
        self.hist: Histogram | None = None

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        if value > self.max:  # noqa: PLR1730 - no call per value
            self.max = value
        iv = int(value * self.scale + 0.5)
        hist = self.hist
        if hist is None:
            if iv <= 0:
                self.zeros += 1
                return
            hist = self.hist = Histogram(_UNITS[self.unit][1], DIGITS)
            if self.zeros:
                hist.record(0, self.zeros)
        hist.record(iv if iv > 0 else 0)

    def add_array(self, np: ModuleType, values: Any) -> None:
        """:meth:`add` for every value of a float64 numpy array (vectorized)."""
        n = len(values)
        if n == 0:
            return
        self.count += n
        top = float(values.max())
        if top > 0:
            self.total += float(values.sum())
            self.max = max(self.max, top)
        if top * self.scale < 0.5:  # all zero (the common case for unused resources)
            if self.hist is None:
                self.zeros += n
            else:
                self.hist.record(0, n)
            return
        ints = np.maximum((values * self.scale + 0.5).astype(np.int64), 0)
        if self.hist is None:
            self.hist = Histogram(_UNITS[self.unit][1], DIGITS)
            if self.zeros:
                self.hist.record(0, self.zeros)
        self.hist.record_array(ints)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def percentile(self, p: float) -> float:
        """The value at percentile ``p`` (0..100), in the demand's unit: the highest value
        equivalent (to 2 significant digits) to the nearest-rank sample."""
        if self.hist is None:
            return 0.0
        return self.hist.value_at_percentile(p) / self.scale

    def merge(self, other: Demand) -> None:
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)
        if other.hist is None:
            if self.hist is None:
                self.zeros += other.zeros
            elif other.zeros:
                self.hist.record(0, other.zeros)
            return
        if self.hist is None:
            self.hist = Histogram(_UNITS[self.unit][1], DIGITS)
            if self.zeros:
                self.hist.record(0, self.zeros)
        self.hist.merge(other.hist)

    def to_dict(self) -> dict[str, object]:
        if self.hist is not None:
            p50, p95, p99 = self.hist.percentiles([50, 95, 99])
            ps = [p50 / self.scale, p95 / self.scale, p99 / self.scale]
        else:
            ps = [0.0, 0.0, 0.0]
        digits = 6 if self.unit == "s" else 3
        return {
            "mean": round(self.mean, digits),
            "p50": round(ps[0], digits),
            "p95": round(ps[1], digits),
            "p99": round(ps[2], digits),
            "max": round(float(self.max), digits),
            "total": round(float(self.total), digits),
            "hist": self.hist.encode() if self.hist is not None else None,
        }

    @classmethod
    def from_dict(cls, unit: str, count: int, data: object, field: str) -> Demand:
        if not isinstance(data, Mapping):
            raise ResultsError(field, data, "an object with mean, total, max and hist")
        demand = cls(unit)
        demand.count = count
        demand.total = _number(data.get("total", 0.0), f"{field}.total")
        demand.max = _number(data.get("max", 0.0), f"{field}.max")
        encoded = data.get("hist")
        if encoded is None:
            demand.zeros = count
        elif isinstance(encoded, str):
            try:
                demand.hist = Histogram.decode(encoded)
            except ResultsError as exc:
                raise ResultsError(f"{field}.hist", encoded, exc.allowed) from None
            if demand.hist.count != count:
                raise ResultsError(
                    f"{field}.hist", encoded, f"a histogram of {count} values (the count)"
                )
        else:
            raise ResultsError(f"{field}.hist", encoded, "an encoded histogram or null")
        return demand


def _number(value: object, field: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise ResultsError(field, value, "a finite number")


def _count(value: object, field: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ResultsError(field, value, "an integer >= 0")


class DependencyStats:
    """One dependency host of one endpoint: ``requests`` that called it, the distribution
    of ``calls`` and ``time_s`` over those requests, failed calls (``errors``: no response
    or status >= 500) and calls made without a timeout (``no_timeout_calls``)."""

    __slots__ = ("calls", "errors", "no_timeout_calls", "requests", "time_s")

    def __init__(self) -> None:
        self.requests = 0
        self.calls = Demand("count")
        self.time_s = Demand("s")
        self.errors = 0
        self.no_timeout_calls = 0

    def merge(self, other: DependencyStats) -> None:
        self.requests += other.requests
        self.calls.merge(other.calls)
        self.time_s.merge(other.time_s)
        self.errors += other.errors
        self.no_timeout_calls += other.no_timeout_calls

    def to_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "calls": self.calls.to_dict(),
            "time_s": self.time_s.to_dict(),
            "errors": self.errors,
            "no_timeout_calls": self.no_timeout_calls,
        }

    @classmethod
    def from_dict(cls, data: object, field: str) -> DependencyStats:
        if not isinstance(data, Mapping):
            raise ResultsError(field, data, "an object")
        dep = cls()
        dep.requests = _count(data.get("requests"), f"{field}.requests")
        dep.calls = Demand.from_dict("count", dep.requests, data.get("calls"), f"{field}.calls")
        dep.time_s = Demand.from_dict("s", dep.requests, data.get("time_s"), f"{field}.time_s")
        dep.errors = _count(data.get("errors", 0), f"{field}.errors")
        dep.no_timeout_calls = _count(data.get("no_timeout_calls", 0), f"{field}.no_timeout_calls")
        return dep


class EndpointStats:
    """Everything the ledger knows about one endpoint (see the module docstring).

    ``demands`` maps each name of :data:`DEMANDS` to its :class:`Demand`;
    ``dependencies`` maps ``"host:port"`` to :class:`DependencyStats`; ``databases`` maps
    a database label to ``{"requests", "calls", "time_s", "errors"}`` totals.
    """

    __slots__ = (
        "_demands",
        "_lock",
        "_pending",
        "databases",
        "dependencies",
        "endpoint",
        "first_s",
        "last_s",
        "method",
        "requests",
        "route",
        "statuses",
        "window",
    )

    def __init__(self, endpoint: str, now_s: float, lock: threading.RLock | None = None) -> None:
        self.endpoint = endpoint
        self.method, _, self.route = endpoint.partition(" ")
        self.requests = 0
        self.statuses: dict[int, int] = {}
        self.first_s = now_s
        self.last_s = now_s
        self._demands = {name: Demand(unit) for name, unit in DEMANDS}
        # the demands of the last requests, one row of len(DEMANDS) floats per request,
        # folded into the distributions in batches (vectorized when numpy is there)
        self._pending = array("d")
        self._lock = lock if lock is not None else threading.RLock()
        self.dependencies: dict[str, DependencyStats] = {}
        self.databases: dict[str, dict[str, float]] = {}
        self.window = CacheWindow(now_s)

    @property
    def demands(self) -> dict[str, Demand]:
        """Every demand's distribution, up to date."""
        self.flush()
        return self._demands

    def flush(self) -> None:
        """Fold the buffered requests into the distributions."""
        with self._lock:
            pending = self._pending
            if not pending:
                return
            self._pending = array("d")
            demands = tuple(self._demands.values())
            width = len(demands)
            np = optional_numpy()
            if np is not None and len(pending) >= 16 * width:
                rows = np.frombuffer(pending, dtype=np.float64).reshape(-1, width)
                for j, demand in enumerate(demands):
                    demand.add_array(np, np.ascontiguousarray(rows[:, j]))
                return
            for i in range(0, len(pending), width):
                for j, demand in enumerate(demands):
                    demand.add(pending[i + j])

    @property
    def errors(self) -> int:
        """Requests answered with a status >= 500 (or that raised: status 500)."""
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def demand(self, name: str) -> Demand:
        return self.demands[name]

    def record(self, cost: RequestCost, now_s: float) -> None:
        """Book one request: O(1) appends; the distributions are updated in batches of
        :data:`_BATCH` requests (and whenever they are read)."""
        self.requests += 1
        self.last_s = now_s
        status = cost.status
        self.statuses[status] = self.statuses.get(status, 0) + 1
        db = cost.db
        db_s = 0.0
        if db:
            for call in db:
                db_s += call.duration_s
            self._record_databases(db)
        http = cost.http
        http_s = 0.0
        if http:
            for hcall in http:
                http_s += hcall.duration_s
            self._record_dependencies(http)
        pending = self._pending
        pending.extend(
            (
                cost.wall_s,
                cost.loop_busy_s,
                cost.cpu_s,
                cost.longest_step_s,
                cost.steps,
                cost.thread_wait_s,
                cost.thread_run_s,
                db_s,
                len(db),
                cost.pool_wait_s,
                cost.pool_hold_s,
                cost.pool_checkouts,
                http_s,
                len(http),
                cost.response_bytes,
            )
        )
        if len(pending) >= _BATCH * _WIDTH:
            self.flush()

    def _record_databases(self, calls: Iterable[Any]) -> None:
        stamp = self.requests  # marks the databases this request already counted
        last = ""
        entry: dict[str, float] = {}
        for call in calls:
            if call.database != last or not entry:
                last = call.database
                entry = self.databases.get(last) or self._new_database(last)
                if entry["stamp"] != stamp:
                    entry["stamp"] = stamp
                    entry["requests"] += 1
            entry["calls"] += 1
            entry["time_s"] += call.duration_s
            if call.error is not None:
                entry["errors"] += 1

    def _new_database(self, label: str) -> dict[str, float]:
        entry: dict[str, float] = {
            "requests": 0,
            "calls": 0,
            "time_s": 0.0,
            "errors": 0,
            "stamp": -1,
        }
        self.databases[label] = entry
        return entry

    def _record_dependencies(self, calls: Sequence[Any]) -> None:
        if len(calls) == 1:  # the usual case, without the per-host tally
            call = calls[0]
            failed = call.error is not None or (call.status is not None and call.status >= 500)
            self._book_dependency(
                call.host, 1, call.duration_s, int(failed), int(math.isinf(call.timeout_s))
            )
            return
        per: dict[str, list[float]] = {}
        for call in calls:
            entry = per.get(call.host)
            if entry is None:
                entry = per[call.host] = [0, 0.0, 0, 0]
            entry[0] += 1
            entry[1] += call.duration_s
            if call.error is not None or (call.status is not None and call.status >= 500):
                entry[2] += 1
            if math.isinf(call.timeout_s):
                entry[3] += 1
        for host, (n, total_s, errors, unbounded) in per.items():
            self._book_dependency(host, n, total_s, int(errors), int(unbounded))

    def _book_dependency(
        self, host: str, calls: float, time_s: float, errors: int, unbounded: int
    ) -> None:
        dep = self.dependencies.get(host)
        if dep is None:
            name = host if len(self.dependencies) < _MAX_DEPENDENCIES else _OTHER
            dep = self.dependencies.get(name)
            if dep is None:
                dep = self.dependencies[name] = DependencyStats()
        dep.requests += 1
        dep.calls.add(calls)
        dep.time_s.add(time_s)
        dep.errors += errors
        dep.no_timeout_calls += unbounded

    def merge(self, other: EndpointStats) -> None:
        self.requests += other.requests
        for status, n in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + n
        self.first_s = min(self.first_s, other.first_s)
        self.last_s = max(self.last_s, other.last_s)
        mine = self.demands
        for name, demand in other.demands.items():
            mine[name].merge(demand)
        for host, dep in other.dependencies.items():
            known = self.dependencies.get(host)
            if known is None:
                self.dependencies[host] = known = DependencyStats()
            known.merge(dep)
        for label, totals in other.databases.items():
            entry = self.databases.get(label) or self._new_database(label)
            for k in ("requests", "calls", "time_s", "errors"):
                entry[k] += totals[k]

    def to_dict(self) -> dict[str, object]:
        return {
            "method": self.method,
            "route": self.route,
            "requests": self.requests,
            "errors": self.errors,
            "statuses": {str(k): n for k, n in sorted(self.statuses.items())},
            "first_s": round(self.first_s, 6),
            "last_s": round(self.last_s, 6),
            "demands": {name: demand.to_dict() for name, demand in self.demands.items()},
            "dependencies": {
                host: dep.to_dict() for host, dep in sorted(self.dependencies.items())
            },
            "databases": {
                label: {
                    "requests": int(e["requests"]),
                    "calls": int(e["calls"]),
                    "time_s": round(e["time_s"], 6),
                    "errors": int(e["errors"]),
                }
                for label, e in sorted(self.databases.items())
            },
        }

    @classmethod
    def from_dict(
        cls, endpoint: str, data: object, field: str, lock: threading.RLock | None = None
    ) -> EndpointStats:
        if not isinstance(data, Mapping):
            raise ResultsError(field, data, "an object")
        first_s = _number(data.get("first_s", 0.0), f"{field}.first_s")
        stats = cls(endpoint, first_s, lock)
        stats.last_s = _number(data.get("last_s", first_s), f"{field}.last_s")
        stats.requests = _count(data.get("requests"), f"{field}.requests")
        statuses = data.get("statuses", {})
        if not isinstance(statuses, Mapping):
            raise ResultsError(f"{field}.statuses", statuses, "an object of status: count")
        for key, n in statuses.items():
            try:
                status = int(key)
            except (TypeError, ValueError):
                raise ResultsError(f"{field}.statuses", key, "HTTP status codes") from None
            stats.statuses[status] = _count(n, f"{field}.statuses.{key}")
        demands = data.get("demands")
        if not isinstance(demands, Mapping):
            raise ResultsError(f"{field}.demands", demands, "an object of demands")
        for name, unit in DEMANDS:
            if name in demands:
                stats._demands[name] = Demand.from_dict(
                    unit, stats.requests, demands[name], f"{field}.demands.{name}"
                )
            else:  # a demand added after this document was written: all zeros
                stats._demands[name].count = stats.requests
                stats._demands[name].zeros = stats.requests
        deps = data.get("dependencies", {})
        if not isinstance(deps, Mapping):
            raise ResultsError(f"{field}.dependencies", deps, "an object of host: stats")
        for host, dep in deps.items():
            stats.dependencies[str(host)] = DependencyStats.from_dict(
                dep, f"{field}.dependencies.{host}"
            )
        dbs = data.get("databases", {})
        if not isinstance(dbs, Mapping):
            raise ResultsError(f"{field}.databases", dbs, "an object of label: totals")
        for label, totals in dbs.items():
            where = f"{field}.databases.{label}"
            if not isinstance(totals, Mapping):
                raise ResultsError(where, totals, "an object")
            stats.databases[str(label)] = {
                "requests": _count(totals.get("requests", 0), f"{where}.requests"),
                "calls": _count(totals.get("calls", 0), f"{where}.calls"),
                "time_s": _number(totals.get("time_s", 0.0), f"{where}.time_s"),
                "errors": _count(totals.get("errors", 0), f"{where}.errors"),
                "stamp": -1,
            }
        return stats


class Ledger:
    """Per-endpoint costs and merged findings (see the module docstring).

    ``thresholds`` set the cache-candidate rule; ``clock`` (monotonic seconds) times the
    windows and the ``first_s``/``last_s`` marks, relative to when the ledger started;
    ``wall`` gives the start as a calendar time (``started_at``). ``capacity_source`` is
    called by :meth:`to_dict` for the capacity settings the hooks saw (pool sizes, thread
    limiter, processes); they are merged over :attr:`capacity`. Thread-safe.
    """

    def __init__(
        self,
        thresholds: ProbeThresholds | None = None,
        *,
        clock: Clock = monotonic_clock,
        wall: Callable[[], float] = wall_time,
        max_endpoints: int = 200,
        max_findings: int = 1000,
        capacity_source: Callable[[], Mapping[str, object]] | None = None,
        cpu_clock: Callable[[], float] | None = None,
    ) -> None:
        self.thresholds = thresholds if thresholds is not None else ProbeThresholds()
        self.max_endpoints = v.int_at_least("Ledger", "max_endpoints", max_endpoints, 1)
        self.max_findings = v.int_at_least("Ledger", "max_findings", max_findings, 1)
        v.callable_or_none("Ledger", "capacity_source", capacity_source)
        self._clock = clock
        self._start = clock.now()
        self.started_at = wall()
        self.capacity: dict[str, object] = {}
        self.capacity_source = capacity_source
        self.endpoints: dict[str, EndpointStats] = {}
        self._findings: dict[tuple[str, str, str], MergedFinding] = {}
        self.dropped_findings = 0
        self._lock = threading.RLock()
        #: The share of requests measured (set by the probe) and the requests sampling left
        #: out (only counted).
        self.sample = 1.0
        self.unsampled = 0
        # The process's CPU time from the first request booked to the latest reading (taken
        # with a request, at most every CPU_READ_EVERY_S), and the requests booked in
        # between: with the GIL, CPU spent outside the requests' own loop steps (the
        # server's HTTP work, a driver's threads) still takes the loop's turn; the capacity
        # model spreads it over the requests. None: not measured (a ledger read from a file).
        self._cpu_clock = cpu_clock
        self._cpu_first: float | None = None
        self._cpu_last = 0.0
        self._cpu_requests = 0  # requests booked after the first, up to the latest reading
        self._cpu_booked = 0  # requests booked after the first
        self._cpu_read_s = 0.0  # when the latest reading was taken (the ledger's clock)
        # numpy (when installed) updates the distributions in batches: import it now, not
        # in the request that fills the first batch (its import stalls the loop ~0.1 s)
        optional_numpy()

    def __repr__(self) -> str:
        return (
            f"Ledger(endpoints={len(self.endpoints)}, requests={self.requests}, "
            f"findings={len(self._findings)})"
        )

    @property
    def requests(self) -> int:
        return sum(e.requests for e in self.endpoints.values())

    def elapsed_s(self) -> float:
        """Seconds since the ledger started, on its clock."""
        return self._clock.now() - self._start

    def record(self, cost: RequestCost, findings: Iterable[Finding] = ()) -> Sequence[Finding]:
        """Book one finished request and the findings of its detectors; returns the
        cross-request findings (``cache_candidate``) this request completed."""
        now = self._clock.now() - self._start
        endpoint = cost.endpoint
        with self._lock:
            if self._cpu_clock is not None:
                self._book_cpu(now)
            stats = self.endpoints.get(endpoint)
            if stats is None:
                if len(self.endpoints) >= self.max_endpoints:
                    endpoint = f"{cost.method} {_OTHER}"
                    stats = self.endpoints.get(endpoint)
                if stats is None:
                    stats = EndpointStats(endpoint, now, self._lock)
                    self.endpoints[endpoint] = stats
            stats.record(cost, now)
            cross = stats.window.observe(cost, now, self.thresholds)
            for finding in findings:
                self._add_finding(finding, now)
            for finding in cross:
                self._add_finding(finding, now)
        return cross

    def skip(self) -> None:
        """Count a request that sampling left unmeasured: it still spent the process's CPU,
        so it counts in the process CPU per request."""
        with self._lock:
            self.unsampled += 1
            if self._cpu_clock is not None:
                self._book_cpu(self._clock.now() - self._start)

    def _book_cpu(self, now: float) -> None:
        cpu_clock = self._cpu_clock
        assert cpu_clock is not None
        if self._cpu_first is None:
            self._cpu_first = cpu_clock()
            self._cpu_read_s = now
        else:
            self._cpu_booked += 1
            if now - self._cpu_read_s >= CPU_READ_EVERY_S:
                self._cpu_last = cpu_clock()
                self._cpu_requests = self._cpu_booked
                self._cpu_read_s = now

    def _add_finding(self, finding: Finding, now: float) -> None:
        key = (finding.endpoint, finding.kind, finding.key)
        merged = self._findings.get(key)
        if merged is not None:
            merged.add(finding, now)
        elif len(self._findings) < self.max_findings:
            self._findings[key] = MergedFinding.first(finding, now)
        else:
            self.dropped_findings += 1

    def findings(self) -> list[MergedFinding]:
        """The merged findings, worst first (severity, then occurrences)."""
        with self._lock:
            items = list(self._findings.values())
        items.sort(key=lambda f: (-severity_rank(f.severity), -f.occurrences, f.endpoint, f.kind))
        return items

    def merge(self, other: Ledger) -> None:
        """Add ``other`` (e.g. another worker's ledger) into this one: counts and
        histograms add exactly; findings merge by (endpoint, kind, key)."""
        with other._lock:
            endpoints = list(other.endpoints.items())
            findings = list(other._findings.items())
            capacity = dict(other.capacity)
        with self._lock:
            for name, stats in endpoints:
                mine = self.endpoints.get(name)
                if mine is None:
                    mine = EndpointStats(name, stats.first_s, self._lock)
                    self.endpoints[name] = mine
                mine.merge(stats)
            for key, finding in findings:
                merged = self._findings.get(key)
                if merged is None:
                    if len(self._findings) < self.max_findings:
                        self._findings[key] = finding.copy()
                    else:
                        self.dropped_findings += 1
                else:
                    merged.merge(finding)
            for name, value in capacity.items():
                self.capacity.setdefault(name, value)
            self.unsampled += other.unsampled
            # the measured share of the merged requests (each ledger's own share weighted
            # by its requests), so unsampled / (measured + unsampled) stays consistent
            measured = sum(e.requests for e in self.endpoints.values())
            total = measured + self.unsampled
            self.sample = measured / total if total else 1.0

    def to_dict(self) -> dict[str, Any]:
        """The ledger as a JSON-ready document (format: ``docs/ledger.md``)."""
        capacity: dict[str, object] = dict(self.capacity)
        if self.capacity_source is not None:
            capacity.update(self.capacity_source())
        if self._cpu_first is not None and self._cpu_requests:
            capacity["process_cpu"] = {
                "cpu_s": round(self._cpu_last - self._cpu_first, 6),
                "requests": self._cpu_requests,
            }
        findings = [f.to_dict() for f in self.findings()]
        with self._lock:
            endpoints = {name: s.to_dict() for name, s in sorted(self.endpoints.items())}
            dropped = self.dropped_findings
        return {
            "schema": LEDGER_SCHEMA,
            "version": LEDGER_VERSION,
            "started_at": datetime.fromtimestamp(self.started_at, UTC).isoformat(),
            "duration_s": round(self.elapsed_s(), 6),
            "pid": os.getpid(),
            "histograms": {"significant_digits": DIGITS, "time_unit": "us"},
            "capacity": capacity,
            "sample": self.sample,
            "unsampled": self.unsampled,
            "endpoints": endpoints,
            "findings": findings,
            "dropped_findings": dropped,
        }

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_dict` as JSON to ``path`` atomically (a temporary file in the
        same directory, then a rename): readers see the old file or the new one."""
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        target = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(target))
        fd, tmp = tempfile.mkstemp(prefix=".ledger-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @classmethod
    def from_dict(
        cls,
        data: object,
        *,
        source: str | None = None,
        thresholds: ProbeThresholds | None = None,
        clock: Clock = monotonic_clock,
    ) -> Ledger:
        """Read a document written by :meth:`to_dict`; raises
        :class:`~brownout.errors.ResultsError` naming the offending field."""
        try:
            return cls._from_dict(data, thresholds, clock)
        except ResultsError as exc:
            if source is None:
                raise
            raise ResultsError(exc.field, exc.value, exc.allowed, source) from None

    @classmethod
    def _from_dict(cls, data: object, thresholds: ProbeThresholds | None, clock: Clock) -> Ledger:
        if not isinstance(data, Mapping):
            raise ResultsError("(document)", data, "a JSON object")
        if data.get("schema") != LEDGER_SCHEMA:
            raise ResultsError("schema", data.get("schema"), repr(LEDGER_SCHEMA))
        if data.get("version") != LEDGER_VERSION:
            raise ResultsError("version", data.get("version"), str(LEDGER_VERSION))
        started = data.get("started_at")
        try:
            started_at = datetime.fromisoformat(str(started)).timestamp()
        except ValueError:
            raise ResultsError("started_at", started, "an ISO 8601 time") from None
        hist = data.get("histograms", {})
        if not isinstance(hist, Mapping) or hist.get("significant_digits", DIGITS) != DIGITS:
            raise ResultsError("histograms", hist, f"significant_digits {DIGITS}")
        duration_s = _number(data.get("duration_s", 0.0), "duration_s")
        ledger = cls(thresholds, clock=clock, wall=lambda: started_at)
        ledger._start = clock.now() - duration_s
        capacity = data.get("capacity", {})
        if not isinstance(capacity, Mapping):
            raise ResultsError("capacity", capacity, "an object")
        ledger.capacity = dict(capacity)
        endpoints = data.get("endpoints")
        if not isinstance(endpoints, Mapping):
            raise ResultsError("endpoints", endpoints, "an object of endpoint: stats")
        ledger.max_endpoints = max(ledger.max_endpoints, len(endpoints))
        for name, stats in endpoints.items():
            ledger.endpoints[str(name)] = EndpointStats.from_dict(
                str(name), stats, f"endpoints.{name}", ledger._lock
            )
        findings = data.get("findings", [])
        if not isinstance(findings, list):
            raise ResultsError("findings", findings, "a list")
        ledger.max_findings = max(ledger.max_findings, len(findings))
        for i, item in enumerate(findings):
            merged = _finding_from_dict(item, f"findings[{i}]")
            ledger._findings[(merged.endpoint, merged.kind, merged.key)] = merged
        ledger.dropped_findings = _count(data.get("dropped_findings", 0), "dropped_findings")
        sample = _number(data.get("sample", 1.0), "sample")
        if not 0.0 < sample <= 1.0:
            raise ResultsError("sample", data.get("sample"), "a share of requests in (0, 1]")
        ledger.sample = sample
        ledger.unsampled = _count(data.get("unsampled", 0), "unsampled")
        return ledger


def _finding_from_dict(item: object, field: str) -> MergedFinding:
    if not isinstance(item, Mapping):
        raise ResultsError(field, item, "an object")
    text = {}
    for name in ("kind", "key", "endpoint", "severity", "title", "fix"):
        value = item.get(name)
        if not isinstance(value, str):
            raise ResultsError(f"{field}.{name}", value, "a string")
        text[name] = value
    evidence = item.get("evidence", {})
    if not isinstance(evidence, Mapping):
        raise ResultsError(f"{field}.evidence", evidence, "an object")
    return MergedFinding(
        text["kind"],
        text["key"],
        text["endpoint"],
        text["severity"],
        text["title"],
        text["fix"],
        dict(evidence),
        _count(item.get("occurrences", 1), f"{field}.occurrences"),
        _number(item.get("first_s", 0.0), f"{field}.first_s"),
        _number(item.get("last_s", 0.0), f"{field}.last_s"),
    )
