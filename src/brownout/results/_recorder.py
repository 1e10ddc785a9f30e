"""The recorder the load engine and the simulator write into on their hot path.

Per call it only appends to ``array.array`` buffers (a few hundred nanoseconds); about once
per interval ``flush`` folds the buffers into histograms with numpy, vectorized, and closes
the timeline rows that are over. ``finish`` closes the rest and returns the document.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping
from typing import Any

from .. import _validate as v
from ..errors import InvalidConfig
from ._document import (
    FAMILIES,
    KINDS,
    build_section,
    histogram_key,
    make_document,
    make_row,
)
from ._hdr import CHUNK, HOUR_US, Histogram, Layout, add_indices, check_layout, require_numpy
from ._thresholds import evaluate_all

__all__ = ["DROPPED", "ERROR", "OK", "OUTCOMES", "SHED", "TIMEOUT", "RunRecorder"]

OK = 0
"""The request succeeded (a status below 400)."""
ERROR = 1
"""It failed: a 4xx/5xx status other than 429 and 503, or a transport error."""
SHED = 2
"""The target shed it: status 429 or 503."""
TIMEOUT = 3
"""The client gave up on it (its timeout passed)."""
DROPPED = 4
"""The generator never sent it (in-flight cap reached, or too late to be useful)."""
OUTCOMES = ("ok", "errors", "shed", "timeouts", "dropped")
"""The count field of each outcome code, in code order."""

# Columns of the per-endpoint counter matrix.
_C_SENT, _C_RETRIES, _C_GOODPUT = 5, 6, 7
_EPSILON = 1e-6  # tolerance on interval boundaries (flush times accumulate float error)


class _Row:
    """Requests that completed in one timeline interval, before the row is closed."""

    __slots__ = ("goodput", "outcomes", "response")

    def __init__(self, np: Any, length: int) -> None:
        self.outcomes = np.zeros(5, dtype=np.int64)
        self.goodput = 0
        self.response = np.zeros(length, dtype=np.int64)


class RunRecorder:
    """Collects a run's figures and turns them into a results document.

    Register the traffic classes (``classes=[(name, timeout_s), ...]`` or :meth:`add_class`)
    and their endpoints (:meth:`endpoint`, which returns the endpoint id to pass back) once.
    Then, on the hot path:

    - ``offered(ci, n=1)`` when the schedule produces ``n`` requests of class ``ci``;
    - ``attempt(ci, ei, service_us, send_lag_us, retry)`` per attempt sent: service time
      (completion - actual send) and send lag (actual send - intended send), integer
      microseconds; ``retry`` is true for the second and later attempts;
    - ``request(ci, ei, outcome, response_us, intended_s)`` per finished logical request:
      ``outcome`` one of OK, ERROR, SHED, TIMEOUT, DROPPED; ``response_us`` the response time
      from the intended start of its first attempt (coordinated-omission corrected; 0 for
      DROPPED), ``intended_s`` that intended start in seconds from the run's start;
    - ``in_flight(n)`` to sample the requests in flight, and ``flush(now_s)`` at each
      interval boundary (about once per ``interval_s``).

    Each hot-path call is a few appends to ``array.array`` buffers; ``flush`` folds them.

    Timeline placement: a request goes to the interval holding its completion
    ``intended_s + response_us / 1e6`` (a DROPPED one to its intended start), exactly,
    however late ``flush`` runs; one whose interval was already closed goes to the first
    open one. Offered counts, attempts and in-flight samples carry no time: they go to the
    last interval closed by the next ``flush``. Latency figures cover every request that was
    sent (ok, errors, shed and timeouts; a timeout at the time the client gave up), never
    DROPPED ones. ``goodput`` counts OK requests whose response time is within the class's
    timeout. Negative durations (only a clock bug makes them) are recorded as 0; durations
    above ``highest_trackable_value`` as that value (counted in ``overflow``).
    """

    __slots__ = (
        "_at_code",
        "_at_lag",
        "_at_service",
        "_cap",
        "_class_names",
        "_counts",
        "_digits",
        "_fam",
        "_highest",
        "_in_flight_now",
        "_interval_s",
        "_kind",
        "_lag_now",
        "_layout",
        "_np",
        "_offered_now",
        "_offered_total",
        "_open_k",
        "_open_rows",
        "_retries_now",
        "_rq_code",
        "_rq_t",
        "_rq_us",
        "_sent_now",
        "_slot_class",
        "_slot_ids",
        "_slot_timeout_us",
        "_slots",
        "_timeline",
        "_timeout_s",
        "_tlayout",
        "overflow",
    )

    def __init__(
        self,
        classes: Iterable[tuple[str, float]] = (),
        *,
        interval_s: float = 1.0,
        kind: str = "load",
        significant_digits: int = 3,
        timeline_digits: int = 2,
        highest_trackable_value: int = HOUR_US,
    ) -> None:
        np = require_numpy()
        self._np = np
        self._interval_s = v.positive("RunRecorder", "interval_s", interval_s)
        self._kind = v.one_of("RunRecorder", "kind", kind, KINDS)
        highest, digits = check_layout("RunRecorder", highest_trackable_value, significant_digits)
        check_layout("RunRecorder", highest, timeline_digits)
        self._highest = highest
        self._digits = digits
        self._layout = Layout(highest, digits)
        self._tlayout = Layout(highest, timeline_digits)
        self._class_names: list[str] = []
        self._timeout_s: list[float] = []
        self._offered_total: list[int] = []
        self._offered_now: list[int] = []
        self._slots: list[tuple[int, str]] = []
        self._slot_ids: dict[tuple[int, str], int] = {}
        self._cap = 0
        self._slot_class = np.zeros(0, dtype=np.int64)
        self._slot_timeout_us = np.zeros(0, dtype=np.int64)
        self._counts = np.zeros((0, 8), dtype=np.int64)
        self._fam = [np.zeros((0, self._layout.length), dtype=np.int64) for _ in FAMILIES]
        self._rq_code = array("q")
        self._rq_us = array("q")
        self._rq_t = array("d")
        self._at_code = array("q")
        self._at_service = array("q")
        self._at_lag = array("q")
        self._sent_now = 0
        self._retries_now = 0
        self._lag_now = np.zeros(self._tlayout.length, dtype=np.int64)
        self._in_flight_now: int | None = None
        self._open_k = 0
        self._open_rows: dict[int, _Row] = {}
        self._timeline: list[dict[str, Any]] = []
        self.overflow = 0
        for item in classes:
            if not isinstance(item, tuple | list) or len(item) != 2:
                raise InvalidConfig("RunRecorder", "classes", item, "(name, timeout_s) pairs")
            self.add_class(item[0], item[1])

    @property
    def interval_s(self) -> float:
        return self._interval_s

    @property
    def kind(self) -> str:
        return self._kind

    # -- registration --------------------------------------------------------------------

    def add_class(self, name: str, timeout_s: float) -> int:
        """Register a traffic class with its client timeout (seconds); returns its index."""
        if not isinstance(name, str) or not name or "/" in name:
            raise InvalidConfig("RunRecorder", "class name", name, "a non-empty name without '/'")
        if name in self._class_names:
            raise InvalidConfig("RunRecorder", "class name", name, "a name not registered yet")
        timeout = v.positive("RunRecorder", f"timeout_s of class {name!r}", timeout_s)
        self._class_names.append(name)
        self._timeout_s.append(timeout)
        self._offered_total.append(0)
        self._offered_now.append(0)
        return len(self._class_names) - 1

    def endpoint(self, ci: int, name: str) -> int:
        """The id of endpoint ``name`` of class ``ci`` (registered on first use)."""
        key = (ci, name)
        ei = self._slot_ids.get(key)
        if ei is not None:
            return ei
        if not isinstance(ci, int) or not 0 <= ci < len(self._class_names):
            raise InvalidConfig(
                "RunRecorder",
                "ci",
                ci,
                f"a registered class index (0..{len(self._class_names) - 1})",
            )
        if not isinstance(name, str) or not name:
            raise InvalidConfig("RunRecorder", "endpoint name", name, "a non-empty string")
        ei = len(self._slots)
        if ei >= self._cap:
            self._grow(max(4, 2 * self._cap))
        self._slots.append(key)
        self._slot_ids[key] = ei
        self._slot_class[ei] = ci
        self._slot_timeout_us[ei] = round(self._timeout_s[ci] * 1e6)
        return ei

    def _grow(self, cap: int) -> None:
        np = self._np

        def grown(a: Any) -> Any:
            out = np.zeros((cap, *a.shape[1:]), dtype=a.dtype)
            out[: len(a)] = a
            return out

        self._slot_class = grown(self._slot_class)
        self._slot_timeout_us = grown(self._slot_timeout_us)
        self._counts = grown(self._counts)
        self._fam = [grown(a) for a in self._fam]
        self._cap = cap

    # -- hot path ------------------------------------------------------------------------

    def offered(self, ci: int, n: int = 1) -> None:
        """``n`` requests of class ``ci`` were due (the schedule offered them)."""
        self._offered_now[ci] += n

    def request(self, ci: int, ei: int, outcome: int, response_us: int, intended_s: float) -> None:
        """A logical request of endpoint ``ei`` finished with ``outcome`` (see the class doc)."""
        self._rq_code.append(ei << 3 | outcome)
        self._rq_us.append(response_us)
        self._rq_t.append(intended_s)

    def attempt(self, ci: int, ei: int, service_us: int, send_lag_us: int, retry: bool) -> None:
        """An attempt of endpoint ``ei`` was sent and ended (see the class doc)."""
        self._at_code.append(ei << 1 | retry)
        self._at_service.append(service_us)
        self._at_lag.append(send_lag_us)

    def in_flight(self, value: int) -> None:
        """Sample the number of requests in flight (the last sample of an interval counts)."""
        self._in_flight_now = value

    # -- folding -------------------------------------------------------------------------

    def _clip(self, values: Any) -> Any:
        np = self._np
        values = np.maximum(values, 0)
        over = int(np.count_nonzero(values > self._highest))
        if over:
            self.overflow += over
            values = np.minimum(values, self._highest)
        return values

    def _check_ids(self, slots: Any, what: str) -> None:
        if len(slots) and (int(slots.min()) < 0 or int(slots.max()) >= len(self._slots)):
            raise InvalidConfig(
                f"RunRecorder.{what}", "ei", int(slots.max()), "an id returned by endpoint()"
            )

    def _fold(self) -> None:
        """Fold the hot-path buffers into histograms and counters, in blocks of CHUNK."""
        np = self._np
        if len(self._rq_code):
            code = np.frombuffer(self._rq_code, dtype=np.int64)
            us = np.frombuffer(self._rq_us, dtype=np.int64)
            t = np.frombuffer(self._rq_t, dtype=np.float64)
            self._rq_code, self._rq_us, self._rq_t = array("q"), array("q"), array("d")
            for i in range(0, len(code), CHUNK):
                j = i + CHUNK
                self._fold_requests(code[i:j], us[i:j], t[i:j])
        if len(self._at_code):
            code = np.frombuffer(self._at_code, dtype=np.int64)
            service = np.frombuffer(self._at_service, dtype=np.int64)
            lag = np.frombuffer(self._at_lag, dtype=np.int64)
            self._at_code, self._at_service, self._at_lag = array("q"), array("q"), array("q")
            for i in range(0, len(code), CHUNK):
                j = i + CHUNK
                self._fold_attempts(code[i:j], service[i:j], lag[i:j])

    def _fold_requests(self, code: Any, us: Any, t: Any) -> None:
        np = self._np
        length = self._layout.length
        us = self._clip(us)
        slot, outcome = code >> 3, code & 7
        self._check_ids(slot, "request")
        if int(outcome.max()) > DROPPED or int(outcome.min()) < 0:
            raise InvalidConfig(
                "RunRecorder.request",
                "outcome",
                int(outcome.max()),
                "OK, ERROR, SHED, TIMEOUT or DROPPED",
            )
        cap = self._cap
        self._counts[:, :5] += np.bincount(slot * 5 + outcome, minlength=cap * 5).reshape(cap, 5)
        good = (outcome == OK) & (us <= self._slot_timeout_us[slot])
        self._counts[:, _C_GOODPUT] += np.bincount(slot[good], minlength=cap)
        sent = outcome != DROPPED
        idx = self._layout.index_array(np, us[sent])
        add_indices(np, self._fam[0].reshape(-1), slot[sent] * length + idx)
        # Timeline: by completion time, never into a closed interval.
        k = np.floor((t + us / 1e6) / self._interval_s + 1e-9).astype(np.int64)
        k = np.maximum(k, self._open_k)
        tidx = self._tlayout.index_array(np, us)
        low, high = int(k.min()), int(k.max())
        ks = range(low, high + 1) if high - low < 64 else np.unique(k).tolist()
        for kk in ks:
            sel = k == kk
            n = int(np.count_nonzero(sel))
            if not n:
                continue
            row = self._open_rows.get(kk)
            if row is None:
                row = self._open_rows[kk] = _Row(np, self._tlayout.length)
            if n == len(k):  # the usual case: the whole block is in one interval
                row.outcomes += np.bincount(outcome, minlength=5)
                row.goodput += int(np.count_nonzero(good))
                add_indices(np, row.response, tidx[sent])
            else:
                row.outcomes += np.bincount(outcome[sel], minlength=5)
                row.goodput += int(np.count_nonzero(good[sel]))
                add_indices(np, row.response, tidx[sel & sent])

    def _fold_attempts(self, code: Any, service: Any, lag: Any) -> None:
        np = self._np
        length = self._layout.length
        service, lag = self._clip(service), self._clip(lag)
        slot, retry = code >> 1, (code & 1).astype(bool)
        self._check_ids(slot, "attempt")
        cap = self._cap
        index = self._layout.index_array
        add_indices(np, self._fam[1].reshape(-1), slot * length + index(np, service))
        add_indices(np, self._fam[2].reshape(-1), slot * length + index(np, lag))
        self._counts[:, _C_SENT] += np.bincount(slot, minlength=cap)
        self._counts[:, _C_RETRIES] += np.bincount(slot[retry], minlength=cap)
        self._sent_now += len(code)
        self._retries_now += int(np.count_nonzero(retry))
        add_indices(np, self._lag_now, self._tlayout.index_array(np, lag))

    def _period_busy(self) -> bool:
        return bool(any(self._offered_now) or self._sent_now)

    def _close(self, k_end: int, duration_s: float | None = None) -> list[dict[str, Any]]:
        """Close the intervals ``open_k .. k_end - 1``; untimed counts go to the last one."""
        np = self._np
        rows: list[dict[str, Any]] = []
        interval = self._interval_s
        tl = self._tlayout
        for k in range(self._open_k, k_end):
            acc = self._open_rows.pop(k, None)
            last = k == k_end - 1
            counts = dict.fromkeys(("offered", "sent", "retries"), 0)
            if acc is not None:
                counts.update(zip(OUTCOMES, acc.outcomes.tolist(), strict=True))
                counts["goodput"] = acc.goodput
                response = Histogram.from_counts(
                    acc.response, highest_trackable_value=tl.highest, significant_digits=tl.digits
                )
            else:
                response = Histogram(tl.highest, tl.digits)
            in_flight = None
            if last:
                counts["offered"] = sum(self._offered_now)
                counts["sent"] = self._sent_now
                counts["retries"] = self._retries_now
                send_lag = Histogram.from_counts(
                    self._lag_now, highest_trackable_value=tl.highest, significant_digits=tl.digits
                )
                in_flight = self._in_flight_now
                for ci, n in enumerate(self._offered_now):
                    self._offered_total[ci] += n
                self._offered_now = [0] * len(self._offered_now)
                self._sent_now = self._retries_now = 0
                self._lag_now = np.zeros(tl.length, dtype=np.int64)
                self._in_flight_now = None
            else:
                send_lag = Histogram(tl.highest, tl.digits)
            t_s = round(k * interval, 9)
            dt_s = interval
            if duration_s is not None and t_s + interval > duration_s + _EPSILON:
                rest = round(duration_s - t_s, 9)
                dt_s = rest if rest > _EPSILON else interval
            row = make_row(
                t_s, dt_s, counts=counts, response=response, send_lag=send_lag, in_flight=in_flight
            )
            self._timeline.append(row)
            rows.append(row)
        self._open_k = max(self._open_k, k_end)
        return rows

    def flush(self, now_s: float, in_flight: int | None = None) -> list[dict[str, Any]]:
        """Fold the buffers and close every interval that ended by ``now_s`` (seconds from
        the run's start). Returns the timeline rows closed (often one; none between two
        boundaries). ``in_flight`` samples the requests in flight, as :meth:`in_flight`."""
        if in_flight is not None:
            self._in_flight_now = in_flight
        self._fold()
        return self._close(math.floor(now_s / self._interval_s + _EPSILON))

    # -- the document --------------------------------------------------------------------

    def snapshot(self, duration_s: float) -> dict[str, Any]:
        """The document so far (closed timeline rows only), without ending the run."""
        self._fold()
        return self._document(
            duration_s, scenario_name="", scenario=None, started_at=None, faults=(), server=None
        )

    def finish(
        self,
        *,
        duration_s: float,
        scenario: Mapping[str, Any] | None = None,
        scenario_name: str | None = None,
        started_at: str | None = None,
        faults: Iterable[Mapping[str, Any]] = (),
        server: Mapping[str, Any] | None = None,
        thresholds: Iterable[Any] = (),
    ) -> dict[str, Any]:
        """Close the run and return its results document (schema 1).

        ``duration_s`` is the run's length (rates are per second of it); ``scenario`` is the
        scenario as a dict (stored as JSON; its ``name`` names it unless ``scenario_name``
        does); ``started_at`` the ISO wall time of the start; ``faults`` what was injected;
        ``server`` what the target reported; ``thresholds`` are evaluated into
        ``doc["thresholds"]`` (see :func:`evaluate_all`).
        """
        duration = v.non_negative("RunRecorder.finish", "duration_s", duration_s)
        self._fold()
        k_end = math.ceil(duration / self._interval_s - _EPSILON)
        if self._open_rows:
            k_end = max(k_end, max(self._open_rows) + 1)
        if self._period_busy():
            k_end = max(k_end, self._open_k + 1)
        self._close(k_end, duration)
        name = scenario_name
        if name is None:
            name = str((scenario or {}).get("name", ""))
        doc = self._document(
            duration,
            scenario_name=name,
            scenario=scenario,
            started_at=started_at,
            faults=faults,
            server=server,
        )
        specs = list(thresholds)
        if specs:
            evaluate_all(specs, doc)
        return doc

    def _document(
        self,
        duration_s: float,
        *,
        scenario_name: str,
        scenario: Mapping[str, Any] | None,
        started_at: str | None,
        faults: Iterable[Mapping[str, Any]],
        server: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        np = self._np
        n = len(self._slots)
        counts = self._counts[:n]
        fams = [a[:n] for a in self._fam]
        layout = self._layout

        def hist(row: Any) -> Histogram:
            return Histogram.from_counts(
                row, highest_trackable_value=layout.highest, significant_digits=layout.digits
            )

        def counts_of(rows: Any, offered: int | None) -> dict[str, int]:
            total = rows.sum(axis=0).tolist() if len(rows) else [0] * 8
            out = dict(zip(OUTCOMES, total[:5], strict=True))
            out["offered"] = sum(total[:5]) if offered is None else offered
            out["sent"], out["retries"], out["goodput"] = total[5], total[6], total[7]
            return out

        by_endpoint: dict[str, Any] = {}
        histograms: dict[str, str] = {}
        for s, (ci, name) in enumerate(self._slots):
            class_name = self._class_names[ci]
            hists = {f: hist(fams[i][s]) for i, f in enumerate(FAMILIES)}
            by_endpoint[f"{class_name}/{name}"] = build_section(
                counts_of(counts[s : s + 1], None), hists, duration_s
            )
            for f in FAMILIES:
                histograms[histogram_key(f, class_name, name)] = hists[f].encode()
        by_class: dict[str, Any] = {}
        slot_class = self._slot_class[:n]
        for ci, class_name in enumerate(self._class_names):
            sel = slot_class == ci
            hists = {f: hist(fams[i][sel].sum(axis=0)) for i, f in enumerate(FAMILIES)}
            offered = self._offered_total[ci] + self._offered_now[ci]
            by_class[class_name] = build_section(
                counts_of(counts[sel], offered), hists, duration_s, timeout_s=self._timeout_s[ci]
            )
        total_offered = sum(self._offered_total) + sum(self._offered_now)
        summary = build_section(
            counts_of(counts, total_offered),
            {
                f: hist(fams[i].sum(axis=0)) if n else hist(np.zeros(0, np.int64))
                for i, f in enumerate(FAMILIES)
            },
            duration_s,
        )
        return make_document(
            kind=self._kind,
            scenario_name=scenario_name,
            scenario=scenario,
            started_at=started_at,
            duration_s=duration_s,
            interval_s=self._interval_s,
            summary=summary,
            by_class=by_class,
            by_endpoint=by_endpoint,
            timeline=list(self._timeline),
            thresholds=[],
            faults=faults,
            server=server,
            histograms=histograms,
        )
