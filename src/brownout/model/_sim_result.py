"""What a simulation run reports, and confidence intervals over replications.

All durations are seconds (``*_s``), rates per second (``*_rps``). A run reports over its
measurement window: from the end of the warm-up to the end of the run, ``window_s`` long.
Counts are events inside the window; time averages (``mean_in_system``,
``mean_queue_length``, ``utilization``) integrate over it.

Little's law holds on every output: ``mean_in_system = arrival_rate_rps *
mean_stay_s`` exactly (the stays clipped to the window), and approximately with the mean
response time of the requests that completed (``mean_response_s``), the closer the longer
the run. The same holds per station for the queue (``mean_queue_length`` and
``mean_queue_time_s``) and for the servers (``mean_busy`` and ``mean_hold_s``).
"""

from __future__ import annotations

import math
import statistics
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .. import _validate as v
from ..errors import InvalidConfig

__all__ = [
    "CallStats",
    "ClassStats",
    "Estimate",
    "LatencySummary",
    "Replications",
    "SimResult",
    "StationStats",
    "TimelineRow",
    "t_critical",
]

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def _sorted(values: Sequence[float]) -> Any:
    """``values`` in ascending order (a numpy array when numpy is installed)."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is installed where the tests run
        return sorted(values)
    data = np.frombuffer(values, dtype=np.float64) if isinstance(values, array) else values
    return np.sort(np.asarray(data, dtype=np.float64))


def _rank(ordered: Any, percentile: float) -> float:
    """The nearest-rank percentile: the value at rank ``ceil(p/100 * n)`` (1-based)."""
    n = len(ordered)
    k = max(1, math.ceil(percentile / 100.0 * n))
    return float(ordered[min(k, n) - 1])


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Mean and nearest-rank percentiles of a set of durations, in seconds (0 when empty)."""

    count: int
    mean_s: float
    p50_s: float
    p90_s: float
    p99_s: float
    p999_s: float
    max_s: float

    @classmethod
    def of(cls, values: Sequence[float]) -> LatencySummary:
        n = len(values)
        if n == 0:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        ordered = _sorted(values)
        p50, p90, p99, p999 = (_rank(ordered, p) for p in PERCENTILES)
        return cls(n, math.fsum(values) / n, p50, p90, p99, p999, float(ordered[-1]))


def histogram_of(values: Sequence[float]) -> Any:
    """A ``brownout.results.Histogram`` (integer microseconds) of durations in seconds."""
    from ..results import Histogram

    hist = Histogram()
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        for x in values:
            hist.record(round(x * 1e6))
        return hist
    data = (
        np.frombuffer(values, dtype=np.float64) if isinstance(values, array) else np.asarray(values)
    )
    hist.record_array(np.rint(data * 1e6).astype(np.int64))
    return hist


@dataclass(frozen=True, slots=True, kw_only=True)
class ClassStats:
    """A traffic class's requests (or all classes together, for ``SimResult.overall``).

    ``offered``: requests that arrived. Each ends (``completed``) as ``ok``, ``errors``,
    ``timeouts`` (the last attempt timed out), ``rejected`` (the system shed it: a queue
    was full or timed out, and the shed was passed up as a 503) or ``refused`` (a client
    policy refused it before sending); ``in_flight_end`` had not ended when the run did
    (``offered + in_flight_start = completed + in_flight_end``, ``in_flight_start`` being
    the requests inside when the warm-up ended).
    ``goodput``: ok requests whose response time (from arrival, all attempts included) is
    within the client timeout. ``attempts`` counts every attempt sent or refused,
    ``retries = attempts - requests that made one``; ``amplification = attempts /
    offered``. ``latency`` summarises the response time of completed requests, whatever
    their outcome; ``latencies_s`` holds them (read-only).
    """

    name: str
    window_s: float
    offered: int
    completed: int
    ok: int
    goodput: int
    errors: int
    timeouts: int
    rejected: int
    refused: int
    attempts: int
    retries: int
    in_flight_start: int
    in_flight_end: int
    area: float
    latency: LatencySummary
    latencies_s: Sequence[float] = field(repr=False, compare=False)

    @property
    def amplification(self) -> float:
        """Attempts per offered request (1.0 without retries; 0 when nothing arrived)."""
        return self.attempts / self.offered if self.offered else 0.0

    @property
    def offered_rps(self) -> float:
        return self.offered / self.window_s

    @property
    def throughput_rps(self) -> float:
        """Completed requests per second, whatever their outcome."""
        return self.completed / self.window_s

    @property
    def goodput_rps(self) -> float:
        """Requests per second that succeeded within the client timeout."""
        return self.goodput / self.window_s

    @property
    def mean_in_system(self) -> float:
        """Time-average number of this class's requests in the system (L)."""
        return self.area / self.window_s

    @property
    def mean_stay_s(self) -> float:
        """Mean time inside the window per arrival (W with L = offered_rps * W exactly)."""
        return self.area / self.offered if self.offered else 0.0

    @property
    def mean_response_s(self) -> float:
        """Mean response time of the completed requests."""
        return self.latency.mean_s

    def histogram(self) -> Any:
        """The response times as a ``brownout.results.Histogram`` (microseconds)."""
        return histogram_of(self.latencies_s)


@dataclass(frozen=True, slots=True, kw_only=True)
class StationStats:
    """One station over the window.

    ``arrivals``: visits that arrived; ``served``: visits that got a server (at once or
    from the queue); ``rejected``: refused at arrival (queue full); ``expired``: left the
    queue at its time limit; ``dropped``: discarded because their caller had given up
    (``abandoned="drop"``; ``dropped_running`` were stopped between steps);
    ``queue_entries``: visits that had to wait (those waiting at the warm-up end included).
    ``busy_start`` / ``queued_start``: held servers and waiting visits when the warm-up
    ended (``arrivals + queued_start = served + rejected + expired + dropped +
    queued_end``). ``busy_area`` and ``queue_area`` integrate the busy servers and the
    queue length over the window (seconds x count). ``waits_s`` holds the queue wait of
    every visit served from the queue, in seconds (read-only); the ``served -
    len(waits_s)`` visits served at once waited 0 (:meth:`wait_percentile` counts them).
    """

    name: str
    servers: int | None
    window_s: float
    arrivals: int
    served: int
    completed: int
    rejected: int
    expired: int
    dropped: int
    dropped_running: int
    busy_area: float
    queue_area: float
    queue_entries: int
    wait_sum_s: float
    busy_start: int
    queued_start: int
    busy_end: int
    queued_end: int
    waits_s: Sequence[float] = field(repr=False, compare=False)

    @property
    def utilization(self) -> float:
        """Mean fraction of the servers held (``mean_busy / servers``; for unlimited
        servers, the mean number held)."""
        if self.servers is None:
            return self.mean_busy
        return self.mean_busy / self.servers

    @property
    def mean_busy(self) -> float:
        """Time-average number of servers held."""
        return self.busy_area / self.window_s

    @property
    def mean_queue_length(self) -> float:
        return self.queue_area / self.window_s

    @property
    def mean_wait_s(self) -> float:
        """Mean queue wait of the served visits (those served at once wait 0)."""
        return self.wait_sum_s / self.served if self.served else 0.0

    @property
    def mean_queue_time_s(self) -> float:
        """Mean time in the queue per visit that entered it (with the clipped stays of those
        still waiting): ``mean_queue_length = queue_entry_rps * mean_queue_time_s``."""
        entered = self.queue_entries
        return self.queue_area / entered if entered else 0.0

    @property
    def mean_hold_s(self) -> float:
        """Mean time a server is held per visit that got one (work and calls included)."""
        return self.busy_area / self.served if self.served else 0.0

    @property
    def throughput_rps(self) -> float:
        """Visits per second that finished their stay on a server."""
        return self.completed / self.window_s

    def wait_percentile(self, percentile: float) -> float:
        """The nearest-rank percentile of the queue waits of served visits, in seconds."""
        if not 0 <= percentile <= 100:
            raise InvalidConfig("StationStats", "percentile", percentile, "a number in [0, 100]")
        n = self.served
        if n == 0:
            return 0.0
        zeros = n - len(self.waits_s)
        k = max(1, math.ceil(percentile / 100.0 * n))
        if k <= zeros:
            return 0.0
        return float(_sorted(self.waits_s)[min(k - zeros, len(self.waits_s)) - 1])


@dataclass(frozen=True, slots=True, kw_only=True)
class CallStats:
    """A call step (``label`` ``"web.products[1] -> db.query"``; a client's is
    ``"client shoppers -> web.products"``).

    ``attempts`` and ``retries`` as sent (or refused); ``outcomes`` of the calls that ended
    (``ok``, ``error``, ``timeout``, ``rejected``, ``refused``; a cache hit is an ok call
    without attempts); ``refused_by`` counts refusals per reason (``circuit_open``,
    ``throttled``, ``rate_limited``, ``bulkhead_full``, ``concurrency_limited``);
    ``abandoned`` retries the Retry policy declined, per reason (``attempts``, ``budget``,
    ``deadline``, ``retry_after``).
    """

    label: str
    attempts: int
    retries: int
    outcomes: Mapping[str, int]
    refused_by: Mapping[str, int]
    abandoned: Mapping[str, int]
    cache_hits: int = 0
    cache_misses: int = 0
    cache_joined: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class TimelineRow:
    """One interval ``(t_s - interval, t_s]`` of the run, all classes together: requests
    that arrived (``offered``) and ended, attempts and retries sent; ``in_system`` requests
    and each station's ``(busy servers, queued visits)`` at ``t_s``."""

    t_s: float
    offered: int
    ok: int
    goodput: int
    errors: int
    timeouts: int
    rejected: int
    refused: int
    attempts: int
    retries: int
    in_system: int
    stations: Mapping[str, tuple[int, int]]

    @property
    def amplification(self) -> float:
        """Attempts sent in the interval per request that arrived in it."""
        return self.attempts / self.offered if self.offered else 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class SimResult:
    """One run: per class and overall, per station, per call step, the timeline, and the
    events of the guard policies when they were recorded."""

    seed: int
    duration_s: float
    warmup_s: float
    classes: Mapping[str, ClassStats]
    overall: ClassStats
    stations: Mapping[str, StationStats]
    calls: tuple[CallStats, ...]
    timeline: tuple[TimelineRow, ...]
    events: tuple[Any, ...] = ()

    @property
    def window_s(self) -> float:
        return self.duration_s - self.warmup_s

    def call(self, label: str) -> CallStats:
        """The call step labelled ``label``, or the only one calling ``label`` (an endpoint
        such as ``"db.query"``, or a station)."""
        for c in self.calls:
            if c.label == label:
                return c
        matches = [
            c
            for c in self.calls
            if c.label.endswith(f"-> {label}")
            or c.label.rpartition("-> ")[2].partition(".")[0] == label
        ]
        if len(matches) == 1:
            return matches[0]
        raise InvalidConfig(
            "SimResult.call",
            "label",
            label,
            "one of " + ", ".join(repr(c.label) for c in self.calls),
        )

    def metrics(self) -> dict[str, float]:
        """Flat scalar figures by name (``overall.goodput_rps``, ``class.<name>.p99_s``,
        ``station.<name>.utilization``...), the ones :func:`replicate` estimates."""
        out: dict[str, float] = {}
        scopes = [("overall", self.overall)] + [(f"class.{n}", c) for n, c in self.classes.items()]
        for scope, c in scopes:
            out[f"{scope}.offered_rps"] = c.offered_rps
            out[f"{scope}.throughput_rps"] = c.throughput_rps
            out[f"{scope}.goodput_rps"] = c.goodput_rps
            out[f"{scope}.amplification"] = c.amplification
            out[f"{scope}.mean_in_system"] = c.mean_in_system
            out[f"{scope}.mean_response_s"] = c.mean_response_s
            out[f"{scope}.p50_s"] = c.latency.p50_s
            out[f"{scope}.p99_s"] = c.latency.p99_s
            for what in ("errors", "timeouts", "rejected", "refused"):
                out[f"{scope}.{what}_rps"] = getattr(c, what) / c.window_s
        for name, st in self.stations.items():
            out[f"station.{name}.utilization"] = st.utilization
            out[f"station.{name}.mean_queue_length"] = st.mean_queue_length
            out[f"station.{name}.mean_wait_s"] = st.mean_wait_s
            out[f"station.{name}.throughput_rps"] = st.throughput_rps
        return out


# -- replications ----------------------------------------------------------------------

# Student t quantiles t(0.975, df) for df = 1..30.
_T975 = (
    12.706204736,
    4.302652730,
    3.182446305,
    2.776445105,
    2.570581836,
    2.446911851,
    2.364624252,
    2.306004135,
    2.262157163,
    2.228138852,
    2.200985160,
    2.178812830,
    2.160368656,
    2.144786688,
    2.131449546,
    2.119905299,
    2.109815578,
    2.100922040,
    2.093024054,
    2.085963447,
    2.079613845,
    2.073873068,
    2.068657610,
    2.063898562,
    2.059538553,
    2.055529439,
    2.051830516,
    2.048407142,
    2.045229642,
    2.042272456,
)
_Z975 = 1.959963984540054


def t_critical(df: int) -> float:
    """The two-sided 95% Student t quantile ``t(0.975, df)``: exact to 9 digits for
    ``df <= 30``, beyond that the Cornish-Fisher expansion (error below 1e-6)."""
    v.int_at_least("t_critical", "df", df, 1)
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    z3, z5, z7 = z**3, z**5, z**7
    return (
        z
        + (z3 + z) / (4 * df)
        + (5 * z5 + 16 * z3 + 3 * z) / (96 * df**2)
        + (3 * z7 + 19 * z5 + 17 * z3 - 15 * z) / (384 * df**3)
    )


@dataclass(frozen=True, slots=True)
class Estimate:
    """The mean of ``n`` independent replications and its 95% confidence interval
    ``mean +- half_width`` with ``half_width = t(0.975, n-1) * stdev / sqrt(n)``."""

    mean: float
    half_width: float
    n: int
    stdev: float

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    @classmethod
    def of(cls, values: Iterable[float]) -> Estimate:
        data = [float(x) for x in values]
        n = len(data)
        if n == 0:
            raise InvalidConfig("Estimate", "values", data, "at least one value")
        mean = math.fsum(data) / n
        if n == 1:
            return cls(mean, math.inf, 1, 0.0)
        stdev = statistics.stdev(data)
        return cls(mean, t_critical(n - 1) * stdev / math.sqrt(n), n, stdev)


@dataclass(frozen=True, slots=True)
class Replications:
    """Independent runs of one model (seeds ``seed, seed+1, ...``) and the 95% confidence
    interval of every figure of :meth:`SimResult.metrics`."""

    runs: tuple[SimResult, ...]
    estimates: Mapping[str, Estimate]

    @classmethod
    def of(cls, runs: Sequence[SimResult]) -> Replications:
        names: dict[str, list[float]] = {}
        for run in runs:
            for key, value in run.metrics().items():
                names.setdefault(key, []).append(value)
        estimates = {k: Estimate.of(vals) for k, vals in names.items() if len(vals) == len(runs)}
        return cls(tuple(runs), MappingProxyType(estimates))

    def __getitem__(self, metric: str) -> Estimate:
        try:
            return self.estimates[metric]
        except KeyError:
            raise InvalidConfig(
                "Replications", "metric", metric, "a name from SimResult.metrics()"
            ) from None
