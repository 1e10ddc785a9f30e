"""Detectors for database work, repeated reads across requests and responses; merging.

Per request (run by the probe when a request ends, on its :class:`RequestCost`):

- ``n_plus_one_db``: one fingerprint run ``>= n_plus_one_min_calls`` times with
  ``>= n_plus_one_min_params`` parameter sets, taking ``>= n_plus_one_min_total_s`` in
  total (Sentry's 5 calls / 50 ms), or run ``>= n_plus_one_always_calls`` times with as
  many parameter sets whatever it took: on a fast local database a loop of 20 queries
  costs little, but its cost grows with the number of items, and on a networked database
  each one is a round trip. Warning (info for the count-only case below the time
  threshold); error when the total reaches ``slow_query_s``. Key: the fingerprint.
- ``duplicate_query``: the same fingerprint and parameters ``>= duplicate_min_calls``
  times in one request (not reported for a fingerprint already reported as N+1, whose fix
  removes it). Info; warning when the repeats (all but the first) took
  ``>= n_plus_one_min_total_s``. Key: ``fingerprint|params_key``.
- ``slow_query``: a statement ``>= slow_query_s``; one finding per fingerprint per
  request (the slowest). Warning; error at ``5 * slow_query_s``. Key: the fingerprint.
- ``large_response``: a body ``>= large_response_bytes`` (key ``large``, warning), or a
  compressible content type sent without ``content-encoding`` and
  ``>= uncompressed_min_bytes`` (key ``uncompressed``, info).

Transaction control (``begin``, ``commit``, ``rollback``, ``savepoint``, ``set``, ...) is
never a repeated-query finding: it repeats by design.

Across requests, :class:`CacheWindow` (one per endpoint in the ledger) finds
``cache_candidate``: the same read (a ``select``/``with`` fingerprint and the same
parameters) in ``>= cache_candidate_share`` of an endpoint's requests within a tumbling
window of ``cache_candidate_window_s``, once the window has
``>= cache_candidate_min_requests`` requests. It counts, per key, the requests of the
window that ran it, for at most ``max_keys`` keys (later new keys are not tracked until
the window rolls). Reported once per key per window.

:class:`MergedFinding` is what the ledger keeps per (endpoint, kind, key): occurrences,
first and last seen, the highest severity, and the evidence of the worst occurrence
(higher severity first, then the larger of its main figure: ``total_ms``,
``duration_ms``, ``step_ms``, ``bytes``, ``share``, ``calls``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

from ._cost import DbCall, Finding, ProbeThresholds, RequestCost

__all__ = [
    "SEVERITIES",
    "CacheWindow",
    "MergedFinding",
    "detect_db",
    "detect_response",
    "severity_rank",
]

SEVERITIES = ("info", "warning", "error")
_RANK = {name: i for i, name in enumerate(SEVERITIES)}
_CONTROL = frozenset(
    [
        "begin",
        "commit",
        "rollback",
        "savepoint",
        "release",
        "start",
        "end",
        "set",
        "reset",
        "show",
        "pragma",
        "discard",
        "listen",
        "unlisten",
        "notify",
        "deallocate",
        "prepare",
        "analyze",
        "vacuum",
        "lock",
    ]
)
_READS = ("select", "with")
_SCORE_KEYS = ("total_ms", "duration_ms", "step_ms", "bytes", "share", "calls")
_NOTHING: tuple[Finding, ...] = ()
_NO_FINDINGS: tuple[Finding, ...] = ()


def severity_rank(severity: str) -> int:
    """0 for info, 1 for warning, 2 for error (unknown: 0)."""
    return _RANK.get(severity, 0)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _control(fp: str) -> bool:
    return fp.split(" ", 1)[0].rstrip(";") in _CONTROL


def _example_site(calls: Iterable[DbCall]) -> str | None:
    for call in calls:
        if call.site is not None:
            return call.site
    return None


def detect_db(cost: RequestCost, th: ProbeThresholds) -> tuple[Finding, ...] | list[Finding]:
    """``n_plus_one_db``, ``duplicate_query`` and ``slow_query`` findings of one request."""
    calls = cost.db
    if not calls:
        return _NOTHING
    found: list[Finding] | None = None
    endpoint = cost.endpoint

    # slow statements: cheap scan, rarely anything
    slow_s = th.slow_query_s
    worst: dict[str, DbCall] | None = None
    for call in calls:
        if call.duration_s >= slow_s:
            if worst is None:
                worst = {}
            prev = worst.get(call.fingerprint)
            if prev is None or call.duration_s > prev.duration_s:
                worst[call.fingerprint] = call
    if worst:
        found = []
        for fp, call in worst.items():
            slow_count = sum(1 for c in calls if c.fingerprint == fp and c.duration_s >= slow_s)
            found.append(
                Finding(
                    kind="slow_query",
                    key=fp,
                    endpoint=endpoint,
                    severity="error" if call.duration_s >= 5 * slow_s else "warning",
                    title=f"slow query: {_ms(call.duration_s):g} ms",
                    evidence={
                        "fingerprint": fp,
                        "duration_ms": _ms(call.duration_s),
                        "slow_calls": slow_count,
                        "rows": call.rows,
                        "database": call.database,
                        "site": call.site,
                    },
                    fix=(
                        "Make the statement cheaper: EXPLAIN it and add an index, select "
                        "fewer columns or rows, paginate; if its result changes rarely, cache "
                        "it with brownout.Cache and bound it with brownout.Timeout."
                    ),
                )
            )

    seen = cost.db_seen
    repeats = min(th.duplicate_min_calls, th.n_plus_one_min_calls)
    if seen is None or max(seen.values(), default=0) < repeats:
        return found if found else _NOTHING
    if found is None:
        found = []

    for fp, n in seen.items():
        if n < repeats or _control(fp):
            continue
        group = [c for c in calls if c.fingerprint == fp]
        total_s = sum(c.duration_s for c in group)
        by_params: dict[str | None, list[DbCall]] = {}
        for c in group:
            by_params.setdefault(c.params_key, []).append(c)
        site = _example_site(group)
        costly = total_s >= th.n_plus_one_min_total_s
        many = (
            len(group) >= th.n_plus_one_always_calls
            and len(by_params) >= th.n_plus_one_always_calls
        )
        if (
            len(group) >= th.n_plus_one_min_calls
            and len(by_params) >= th.n_plus_one_min_params
            and (costly or many)
        ):
            severity = "error" if total_s >= th.slow_query_s else "warning" if costly else "info"
            found.append(
                Finding(
                    kind="n_plus_one_db",
                    key=fp,
                    endpoint=endpoint,
                    severity=severity,
                    title=f"N+1 queries: {len(group)} x the same statement, {_ms(total_s):g} ms",
                    evidence={
                        "fingerprint": fp,
                        "calls": len(group),
                        "distinct_params": len(by_params),
                        "total_ms": _ms(total_s),
                        "mean_ms": _ms(total_s / len(group)),
                        "database": group[0].database,
                        "site": site,
                    },
                    fix=(
                        "Load them with one query: WHERE id IN (...) or a join (SQLAlchemy "
                        "selectinload()/joinedload() on the relationship) instead of one "
                        "query per item in a loop."
                    ),
                )
            )
            continue
        for pkey, same in by_params.items():
            if len(same) < th.duplicate_min_calls:
                continue
            wasted_s = sum(c.duration_s for c in same[1:])
            total = sum(c.duration_s for c in same)
            found.append(
                Finding(
                    kind="duplicate_query",
                    key=f"{fp}|{pkey}",
                    endpoint=endpoint,
                    severity="warning" if wasted_s >= th.n_plus_one_min_total_s else "info",
                    title=f"the same query ran {len(same)} times in one request",
                    evidence={
                        "fingerprint": fp,
                        "params_key": pkey,
                        "calls": len(same),
                        "total_ms": _ms(total),
                        "wasted_ms": _ms(wasted_s),
                        "database": same[0].database,
                        "site": _example_site(same) or site,
                    },
                    fix=(
                        "Run it once per request and reuse the result (a local variable or "
                        "a request-scoped cache); if it repeats across requests too, cache "
                        "it with brownout.Cache (single-flight)."
                    ),
                )
            )
    return found if found else _NOTHING


_COMPRESSIBLE_PREFIXES = ("text/",)
_COMPRESSIBLE = frozenset(
    {
        "application/json",
        "application/javascript",
        "application/xml",
        "application/x-ndjson",
        "application/graphql-response+json",
        "application/ld+json",
        "application/x-www-form-urlencoded",
        "image/svg+xml",
    }
)


def compressible(content_type: str) -> bool:
    """Whether a body of this content type compresses well (text, JSON, XML, JS, SVG)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return (
        media.startswith(_COMPRESSIBLE_PREFIXES)
        or media in _COMPRESSIBLE
        or media.endswith(("+json", "+xml"))
    )


def detect_response(cost: RequestCost, th: ProbeThresholds) -> tuple[Finding, ...] | list[Finding]:
    """``large_response`` findings of one request (size, missing compression)."""
    size = cost.response_bytes
    if size < th.uncompressed_min_bytes and size < th.large_response_bytes:
        return _NOTHING
    found: list[Finding] = []
    evidence: dict[str, object] = {
        "bytes": size,
        "content_type": cost.content_type,
        "content_encoding": cost.content_encoding,
        "status": cost.status,
    }
    if size >= th.large_response_bytes:
        found.append(
            Finding(
                kind="large_response",
                key="large",
                endpoint=cost.endpoint,
                severity="warning",
                title=f"large response: {size / 1024:.0f} KiB",
                evidence=dict(evidence),
                fix=(
                    "Send less: paginate (limit/cursor), select only the fields the client "
                    "uses, or stream it; large bodies hold workers and bandwidth under load."
                ),
            )
        )
    if (
        size >= th.uncompressed_min_bytes
        and not cost.content_encoding
        and compressible(cost.content_type)
    ):
        found.append(
            Finding(
                kind="large_response",
                key="uncompressed",
                endpoint=cost.endpoint,
                severity="info",
                title=f"uncompressed {cost.content_type.split(';', 1)[0]}: {size / 1024:.0f} KiB",
                evidence=dict(evidence),
                fix=(
                    "gzip it: add starlette.middleware.gzip.GZipMiddleware (minimum_size "
                    "~1 KB) or compress at the proxy; text and JSON shrink 5-10x."
                ),
            )
        )
    return found


class CacheWindow:
    """Counts, per read (fingerprint, parameters), the requests of one endpoint that ran
    it within a tumbling window; reports ``cache_candidate`` (rules in the module
    docstring). Not thread-safe: the ledger calls it under its lock."""

    __slots__ = ("counts", "flagged", "max_keys", "requests", "start_s")

    def __init__(self, start_s: float, max_keys: int = 256) -> None:
        self.start_s = start_s
        self.requests = 0
        self.counts: dict[tuple[str, str | None], int] = {}
        self.flagged: set[tuple[str, str | None]] = set()
        self.max_keys = max_keys

    def observe(
        self, cost: RequestCost, now_s: float, th: ProbeThresholds
    ) -> list[Finding] | tuple[Finding, ...]:
        if now_s - self.start_s >= th.cache_candidate_window_s:
            self.start_s = now_s
            self.requests = 0
            self.counts.clear()
            self.flagged.clear()
        self.requests += 1
        calls = cost.db
        if not calls:
            return _NO_FINDINGS
        counts = self.counts
        requests = self.requests
        enough = requests >= th.cache_candidate_min_requests
        done: set[tuple[str, str | None]] | None = None  # keys this request counted
        found: list[Finding] | None = None
        for call in calls:
            if call.error is not None or not call.fingerprint.startswith(_READS):
                continue
            key = (call.fingerprint, call.params_key)
            if done is None:
                done = {key}
            elif key in done:
                continue
            else:
                done.add(key)
            n = counts.get(key)
            if n is None:
                if len(counts) >= self.max_keys:
                    continue
                n = 0
            n += 1
            counts[key] = n
            if enough and n >= th.cache_candidate_share * requests and key not in self.flagged:
                self.flagged.add(key)
                if found is None:
                    found = []
                found.append(self._finding(cost, key, n, requests, th))
        return found if found is not None else _NO_FINDINGS

    @staticmethod
    def _finding(
        cost: RequestCost, key: tuple[str, str | None], n: int, requests: int, th: ProbeThresholds
    ) -> Finding:
        fp, pkey = key
        same = [c for c in cost.db if c.fingerprint == fp and c.params_key == pkey]
        mean_s = sum(c.duration_s for c in same) / len(same) if same else 0.0
        share = n / requests
        return Finding(
            kind="cache_candidate",
            key=f"{fp}|{pkey}",
            endpoint=cost.endpoint,
            severity="info",
            title=f"the same read in {share:.0%} of requests",
            evidence={
                "fingerprint": fp,
                "params_key": pkey,
                "share": round(share, 4),
                "requests": requests,
                "requests_with_it": n,
                "window_s": th.cache_candidate_window_s,
                "mean_ms": _ms(mean_s),
                "database": same[0].database if same else "",
                "site": _example_site(same),
            },
            fix=(
                "Cache it with brownout.Cache (single-flight, a TTL as long as the data may "
                "be stale): one query per TTL instead of one per request."
            ),
        )


def _score(evidence: dict[str, object]) -> float:
    for name in _SCORE_KEYS:
        value = evidence.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return 0.0


@dataclass(slots=True)
class MergedFinding:
    """One problem as the ledger keeps it: every :class:`Finding` with the same
    (endpoint, kind, key), counted. Times are seconds on the ledger's clock since it
    started."""

    kind: str
    key: str
    endpoint: str
    severity: str
    title: str
    fix: str
    evidence: dict[str, object]
    occurrences: int
    first_s: float
    last_s: float

    @classmethod
    def first(cls, finding: Finding, t_s: float) -> MergedFinding:
        return cls(
            finding.kind,
            finding.key,
            finding.endpoint,
            finding.severity,
            finding.title,
            finding.fix,
            dict(finding.evidence),
            1,
            t_s,
            t_s,
        )

    def add(self, finding: Finding, t_s: float) -> None:
        self.occurrences += 1
        self.last_s = max(self.last_s, t_s)
        new_rank = severity_rank(finding.severity)
        old_rank = severity_rank(self.severity)
        if new_rank > old_rank or (
            new_rank == old_rank and _score(finding.evidence) > _score(self.evidence)
        ):
            self.severity = finding.severity
            self.title = finding.title
            self.evidence = dict(finding.evidence)

    def copy(self) -> MergedFinding:
        return dataclasses.replace(self, evidence=dict(self.evidence))

    def merge(self, other: MergedFinding) -> None:
        """Fold ``other`` (the same problem, from another ledger) into this one."""
        self.occurrences += other.occurrences
        self.first_s = min(self.first_s, other.first_s)
        self.last_s = max(self.last_s, other.last_s)
        if (severity_rank(other.severity), _score(other.evidence)) > (
            severity_rank(self.severity),
            _score(self.evidence),
        ):
            self.severity = other.severity
            self.title = other.title
            self.evidence = dict(other.evidence)

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "key": self.key,
            "endpoint": self.endpoint,
            "severity": self.severity,
            "title": self.title,
            "occurrences": self.occurrences,
            "first_s": round(self.first_s, 6),
            "last_s": round(self.last_s, 6),
            "evidence": self.evidence,
            "fix": self.fix,
        }
