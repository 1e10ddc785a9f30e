"""Capacity of a service: per-request cost x traffic -> utilization, saturation, latency.

The inputs are what the probe measures, per endpoint: how many seconds of each resource one
request uses (its *demand*), and the traffic mix (the share of requests per endpoint).
Resources are the places where requests queue: worker processes (``cpu``), a thread pool
(``threads``), a DB connection pool (``db_pool``), the DB server (``db``), a downstream
service (``dependency``) and the HTTP client's connection pool (``client_pool``); each has
``servers`` c (workers, threads, connections).

At a total rate of ``lambda`` requests per second, with ``p_e`` the share of endpoint e,
``D_ek`` its demand at resource k (seconds) and ``V_ek`` its visits there (default 1)::

    utilization   U_k = lambda * sum_e p_e*D_ek / c_k                 (utilization law)
    saturation    lambda_max_k = c_k / sum_e p_e*D_ek                  (where U_k = 1)
    visit rate    lambda_k = lambda * sum_e p_e*V_ek                   (forced flow)
    service time  S_k = sum_e p_e*D_ek / sum_e p_e*V_ek
    wait          Wq_k = Wq(M/M/c: lambda_k, 1/S_k, c_k) * (ca2 + cs2_k) / 2
    latency       R_e = sum_k (V_ek*Wq_k + D_ek)                       (k with D_ek > 0)
    in flight     L_k = lambda*sum_e p_e*D_ek + lambda_k*Wq_k          (Little: busy + waiting)

The first resource to saturate (the bottleneck) is the one with the smallest
``lambda_max_k``. Latency treats the resources as an open network of independent M/M/c
stations visited in tandem (a Jackson-network approximation): each station's wait is the
M/M/c wait (Erlang C) at its total visit rate and mean service time, whatever the
endpoint, scaled by Allen-Cunneen's ``(ca2 + cs2)/2`` (``ca2`` the arrivals' squared
coefficient of variation, ``cs2`` the resource's ``service_cv2``; both 1 by default, which
is M/M/c exactly). Real resources are not independent: a pool connection or thread is
*held* while the request waits elsewhere, so a slow downstream raises the hold time (the
demand) of every resource held across it. Give demands as measured under light load; the
simulator models holding.

Tails (timeouts, percentiles) are an approximation. For endpoint e and one of its
stations b, take b as random and every other station at its mean ``R_ek``. At b the
request waits, with probability C (Erlang C), an exponential time of mean
``V_eb * Wq_b / C`` (``C*exp(-(c*mu - lambda)*t)`` for M/M/c and one visit; the waits of
one request's visits are taken as fully correlated), then is served for a time of mean
``D_eb`` and squared variation ``cs2``: a shifted exponential for ``cs2 <= 1``
(exponential at 1, constant at 0), a balanced two-phase hyperexponential above. So
``T_b(t) = P(V*Wq_b + S_eb > t - sum_{k != b} R_ek)``, in closed form. The endpoint's
tail mixes the ``T_b`` weighted by each station's share of the variance of its response
time, ``P(R_e > t) = sum_b w_b * T_b(t)``: near saturation the saturating station carries
nearly all the weight, under light load the slowest or most variable service; every mean
is kept exactly and the weights move continuously with the rate. The tail of the whole
traffic is ``sum_e p_e * P(R_e > t)``; its 0.99 quantile is the predicted p99. It grows
with the rate, except for dips of a few percent when stations of very different ``cs2``
trade weight (seen up to 2.3% in a random sweep; none with equal ``cs2``). With the
default ``cs2 = 1`` a near-constant service gets a pessimistic light-load p99 (``ln(100) *
D_eb`` above the other stations' means): give ``service_cv2`` when it is known.

Two knees: ``utilization_knee_rps = knee_utilization * lambda_max`` (default 0.9 of the
bottleneck's saturation: past it, waits at an M/M/1 bottleneck exceed 9 service times), and
``slo_knee_rps``, the highest rate whose predicted ``slo_quantile`` (p99) latency of the mix
stays within ``slo_s`` and that is below saturation. The second is the one comparable with
``brownout knee``, which passes a rate while achieved/offered >= 0.98 and p99 <= SLO.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .. import _validate as v
from ..errors import InvalidConfig
from ._queueing import MMcQueue, _hypoexp_tail, _invert_tail, _json_number, _quantile

__all__ = [
    "RESOURCE_KINDS",
    "CapacityModel",
    "CapacityPrediction",
    "EndpointLatency",
    "RatePrediction",
    "Resource",
    "ResourceLoad",
    "predict_capacity",
]

RESOURCE_KINDS = ("cpu", "threads", "db_pool", "db", "dependency", "client_pool")

# How a warning names each kind, what it says when it runs out, and what its servers are.
_LABEL = {
    "cpu": ("CPU", "saturated", "workers"),
    "threads": ("thread pool", "exhausted", "threads"),
    "db_pool": ("DB pool", "exhausted", "connections"),
    "db": ("database", "saturated", "servers"),
    "dependency": ("dependency", "saturated", "servers"),
    "client_pool": ("client pool", "exhausted", "connections"),
}

_INF = math.inf


def _fmt_rate(rate: float) -> str:
    if not math.isfinite(rate):
        return "inf"
    return f"{rate:.0f}" if rate >= 100 else f"{rate:.3g}"


def _fmt_s(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "inf"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.3g} s"


@dataclass(frozen=True, slots=True)
class Resource:
    """A place where requests queue: ``name``, ``kind`` (one of :data:`RESOURCE_KINDS`:
    ``cpu`` | ``threads`` | ``db_pool`` | ``db`` | ``dependency`` | ``client_pool``),
    ``servers`` (how many requests it serves at once: workers, threads, connections) and
    ``service_cv2``, the squared coefficient of variation of its service (hold) times:
    1 (the default) is exponential, the M/M/c assumption; 0 is constant; from a probe
    ledger it is ``variance / mean**2`` of the measured durations."""

    name: str
    kind: str
    servers: int = 1
    service_cv2: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidConfig("Resource", "name", self.name, "a non-empty string")
        v.one_of("Resource", "kind", self.kind, RESOURCE_KINDS)
        v.int_at_least("Resource", "servers", self.servers, 1)
        cv2 = v.non_negative("Resource", "service_cv2", self.service_cv2)
        object.__setattr__(self, "service_cv2", cv2)

    @property
    def label(self) -> str:
        """How warnings name it: ``DB pool 'orders'``."""
        return f"{_LABEL[self.kind][0]} {self.name!r}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "servers": self.servers,
            "service_cv2": self.service_cv2,
        }


@dataclass(frozen=True, slots=True)
class ResourceLoad:
    """One resource at one rate.

    ``visit_rate_rps`` is lambda_k (visits per second), ``service_time_mean_s`` S_k,
    ``utilization`` U_k (>= 1: it cannot keep up and ``stable`` is False),
    ``saturation_rps`` the total request rate at which U_k reaches 1, ``prob_wait`` the
    Erlang C probability that a visit waits, ``wait_mean_s`` Wq_k per visit, ``in_service``
    the mean busy servers (held connections, busy threads), ``waiting`` the mean number
    queued for a server and ``in_flight`` their sum (Little's law). ``top_endpoint`` is the
    endpoint that puts the most demand on it and ``top_endpoint_share`` its fraction of the
    demand. Infinite values (unstable) are ``None`` in :meth:`to_dict`.
    """

    name: str
    kind: str
    servers: int
    visit_rate_rps: float
    service_time_mean_s: float
    utilization: float
    stable: bool
    saturation_rps: float
    prob_wait: float
    wait_mean_s: float
    in_service: float
    waiting: float
    in_flight: float
    top_endpoint: str | None
    top_endpoint_share: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "servers": self.servers,
            "visit_rate_rps": self.visit_rate_rps,
            "service_time_mean_s": self.service_time_mean_s,
            "utilization": self.utilization,
            "stable": self.stable,
            "saturation_rps": _json_number(self.saturation_rps),
            "prob_wait": self.prob_wait,
            "wait_mean_s": _json_number(self.wait_mean_s),
            "in_service": self.in_service,
            "waiting": _json_number(self.waiting),
            "in_flight": _json_number(self.in_flight),
            "top_endpoint": self.top_endpoint,
            "top_endpoint_share": self.top_endpoint_share,
        }


@dataclass(frozen=True, slots=True)
class EndpointLatency:
    """One endpoint at one rate: ``share`` of the traffic (``rate_rps`` requests per
    second), predicted ``latency_mean_s`` (with ``time_by_resource_s``, seconds per request
    at each resource it uses, waits included), ``latency_p99_s`` from the approximate tail,
    ``timeout_probability`` (``None`` when no timeout was given) and ``bottleneck``, the
    resource that adds the most variance to its response time, the largest weight in its
    tail (``None`` if it uses none)."""

    endpoint: str
    share: float
    rate_rps: float
    latency_mean_s: float
    latency_p99_s: float
    timeout_probability: float | None
    bottleneck: str | None
    time_by_resource_s: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "share": self.share,
            "rate_rps": self.rate_rps,
            "latency_mean_s": _json_number(self.latency_mean_s),
            "latency_p99_s": _json_number(self.latency_p99_s),
            "timeout_probability": self.timeout_probability,
            "bottleneck": self.bottleneck,
            "time_by_resource_s": {k: _json_number(t) for k, t in self.time_by_resource_s.items()},
        }


@dataclass(frozen=True, slots=True)
class RatePrediction:
    """The whole service at ``rate_rps`` requests per second: every resource, every
    endpoint, the mix's mean and p99 latency, the probability that a request outlives the
    client's ``timeout_s`` (``None`` without one) and plain-language ``warnings``. ``stable``
    is False when some resource is at or past saturation."""

    rate_rps: float
    stable: bool
    resources: tuple[ResourceLoad, ...]
    endpoints: tuple[EndpointLatency, ...]
    latency_mean_s: float
    latency_p99_s: float
    timeout_s: float | None
    timeout_probability: float | None
    warnings: tuple[str, ...]

    def resource(self, name: str) -> ResourceLoad:
        """The load on the resource called ``name``."""
        for load in self.resources:
            if load.name == name:
                return load
        raise InvalidConfig(
            "RatePrediction.resource",
            "name",
            name,
            "one of " + ", ".join(r.name for r in self.resources),
        )

    def endpoint(self, name: str) -> EndpointLatency:
        """The prediction for the endpoint called ``name``."""
        for item in self.endpoints:
            if item.endpoint == name:
                return item
        raise InvalidConfig(
            "RatePrediction.endpoint",
            "name",
            name,
            "one of " + ", ".join(e.endpoint for e in self.endpoints),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate_rps": self.rate_rps,
            "stable": self.stable,
            "latency_mean_s": _json_number(self.latency_mean_s),
            "latency_p99_s": _json_number(self.latency_p99_s),
            "timeout_s": self.timeout_s,
            "timeout_probability": self.timeout_probability,
            "resources": [r.to_dict() for r in self.resources],
            "endpoints": [e.to_dict() for e in self.endpoints],
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True, slots=True)
class CapacityPrediction:
    """What :func:`predict_capacity` returns.

    ``bottleneck`` is the first resource to saturate (``None`` if no resource has demand)
    and ``saturation_rps`` the total rate at which it does; ``saturation_by_resource_rps``
    gives every resource's. ``utilization_knee_rps`` is ``knee_utilization *
    saturation_rps``; ``slo_knee_rps`` the highest rate whose predicted ``slo_quantile``
    latency stays within ``slo_s`` (``None`` when no SLO was given or no rate meets it).
    ``points`` holds one :class:`RatePrediction` per requested rate, in order.
    """

    resources: tuple[Resource, ...]
    mix: dict[str, float]
    bottleneck: str | None
    saturation_rps: float
    saturation_by_resource_rps: dict[str, float]
    knee_utilization: float
    utilization_knee_rps: float
    slo_s: float | None
    slo_quantile: float
    slo_knee_rps: float | None
    timeout_s: float | None
    points: tuple[RatePrediction, ...]
    warnings: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; infinite figures are ``None``."""
        return {
            "resources": [r.to_dict() for r in self.resources],
            "mix": dict(self.mix),
            "bottleneck": self.bottleneck,
            "saturation_rps": _json_number(self.saturation_rps),
            "saturation_by_resource_rps": {
                k: _json_number(x) for k, x in self.saturation_by_resource_rps.items()
            },
            "knee_utilization": self.knee_utilization,
            "utilization_knee_rps": _json_number(self.utilization_knee_rps),
            "slo_s": self.slo_s,
            "slo_quantile": self.slo_quantile,
            "slo_knee_rps": None if self.slo_knee_rps is None else _json_number(self.slo_knee_rps),
            "timeout_s": self.timeout_s,
            "points": [p.to_dict() for p in self.points],
            "warnings": list(self.warnings),
        }


def _service_phases(mean_s: float, cv2: float) -> tuple[tuple[float, float, float], ...]:
    """A service time of mean ``mean_s`` and squared coefficient of variation ``cv2`` as a
    mixture of shifted exponentials ``(probability, shift_s, rate_rps)`` (rate ``inf``:
    no exponential part). ``cv2 <= 1``: ``shift = D*(1 - cv)`` plus an exponential of mean
    ``D*cv`` (``cv2 = 0`` is constant, ``1`` exponential). ``cv2 > 1``: the balanced-means
    two-phase hyperexponential, ``p = (1 + sqrt((cv2 - 1)/(cv2 + 1)))/2``, rates
    ``2p/D`` and ``2(1 - p)/D``."""
    if cv2 <= 1:
        cv = math.sqrt(cv2)
        rate = 1.0 / (mean_s * cv) if cv > 0 else _INF
        return ((1.0, mean_s * (1.0 - cv), rate),)
    p = 0.5 * (1.0 + math.sqrt((cv2 - 1.0) / (cv2 + 1.0)))
    return ((p, 0.0, 2.0 * p / mean_s), (1.0 - p, 0.0, 2.0 * (1.0 - p) / mean_s))


def _variance(prob_wait: float, wait_s: float, demand_s: float, cv2: float) -> float:
    """Variance of the time at one station (s^2): a wait that is 0 with probability
    ``1 - C`` and else exponential of mean ``m = wait_s / C`` (variance ``C*m^2*(2 - C)``),
    plus an independent service of mean ``demand_s`` and squared variation ``cv2``."""
    if not math.isfinite(wait_s):
        return _INF
    spread = 0.0
    if prob_wait > 0 and wait_s > 0:
        m = wait_s / prob_wait
        spread = prob_wait * m * m * (2.0 - prob_wait)
    return spread + cv2 * demand_s * demand_s


_Phases = tuple[tuple[float, float, float], ...]


class _Part:
    """One station taken as random, the endpoint's other stations at their means: the
    others' mean time ``shift_s``, then with probability ``prob_wait`` an exponential wait
    of rate ``wait_rate_rps``, then the service ``phases`` (see :func:`_service_phases`)."""

    __slots__ = ("phases", "prob_wait", "shift_s", "wait_rate_rps", "weight")

    def __init__(
        self, weight: float, shift_s: float, prob_wait: float, wait_rate_rps: float, phases: _Phases
    ) -> None:
        self.weight = weight
        self.shift_s = shift_s
        self.prob_wait = prob_wait
        self.wait_rate_rps = wait_rate_rps
        self.phases = phases

    def __call__(self, t: float) -> float:
        c_wait, theta = self.prob_wait, self.wait_rate_rps
        total = 0.0
        for p, shift, rate in self.phases:
            y = t - self.shift_s - shift
            if y < 0:
                total += p
                continue
            alone = math.exp(-rate * y) if math.isfinite(rate) else 0.0
            if c_wait == 0:
                total += p * alone
                continue
            both = _hypoexp_tail(theta, rate, y) if math.isfinite(rate) else math.exp(-theta * y)
            total += p * ((1.0 - c_wait) * alone + c_wait * both)
        return min(1.0, total)


class _Tail:
    """``P(R_e > t)`` of one endpoint (see the module doc): the variance-weighted mix of its
    :class:`_Part` tails; 0 for an endpoint that uses no resource, 1 when one is unstable."""

    __slots__ = ("mean_s", "parts", "stable", "used")

    def __init__(
        self, *, used: bool, stable: bool, mean_s: float, parts: tuple[_Part, ...]
    ) -> None:
        self.used = used
        self.stable = stable
        self.mean_s = mean_s
        self.parts = parts

    def __call__(self, t: float) -> float:
        if not self.used:
            return 0.0
        if not self.stable:
            return 1.0
        return min(1.0, math.fsum(part.weight * part(t) for part in self.parts))

    def quantile(self, q: float) -> float:
        if not self.used:
            return 0.0
        if not self.stable:
            return _INF
        return _invert_tail(self, 1.0 - q, self.mean_s)


class _State:
    """Everything computed at one rate (shared by :meth:`CapacityModel.at` and the knees)."""

    __slots__ = ("bottlenecks", "loads", "means", "residences", "stable", "tails")

    def __init__(self) -> None:
        self.loads: list[ResourceLoad] = []
        self.means: list[float] = []
        self.residences: list[dict[str, float]] = []
        self.tails: list[_Tail] = []
        self.bottlenecks: list[str | None] = []
        self.stable = True


class CapacityModel:
    """A service's resources, per-endpoint demands and traffic mix, ready to evaluate at any
    rate (see the module doc for the formulas).

    ``resources``: the :class:`Resource` list (distinct names). ``demands_s``: endpoint ->
    resource name -> seconds of that resource one request of the endpoint uses (missing
    means 0). ``mix``: endpoint -> share of the traffic; shares are weights, normalized to
    sum to 1; every endpoint of the mix must have demands. ``visits``: optional, same shape
    as ``demands_s``: how many separate times a request queues for the resource (five
    queries each taking a pool connection: 5); default 1 wherever the demand is > 0.
    ``arrival_cv2`` is the squared coefficient of variation of the gaps between requests:
    1 (the default) for Poisson arrivals, 0 for a constant-rate open-model load test; it is
    applied at every resource (an approximation: downstream arrivals are smoother).
    """

    __slots__ = (
        "_cv2",
        "_demand",
        "_per_request_s",
        "_top",
        "_visit",
        "_visits_per_request",
        "arrival_cv2",
        "endpoints",
        "mix",
        "resources",
        "saturation_by_resource_rps",
    )

    def __init__(
        self,
        resources: Sequence[Resource],
        demands_s: Mapping[str, Mapping[str, float]],
        mix: Mapping[str, float],
        *,
        visits: Mapping[str, Mapping[str, float]] | None = None,
        arrival_cv2: float = 1.0,
    ) -> None:
        owner = "CapacityModel"
        items = tuple(resources) if isinstance(resources, Sequence) else ()
        if not items or not all(isinstance(r, Resource) for r in items):
            raise InvalidConfig(owner, "resources", resources, "a non-empty sequence of Resource")
        names = [r.name for r in items]
        if len(set(names)) != len(names):
            raise InvalidConfig(owner, "resources", names, "resources with distinct names")
        known = ", ".join(repr(n) for n in names)
        demand = self._table(owner, "demands_s", demands_s, names, known)
        if not isinstance(mix, Mapping) or not mix:
            raise InvalidConfig(owner, "mix", mix, "a non-empty mapping endpoint -> share")
        shares: dict[str, float] = {}
        for endpoint, share in mix.items():
            if endpoint not in demand:
                allowed = ", ".join(repr(e) for e in demand) or "(none)"
                raise InvalidConfig(owner, "mix", endpoint, f"an endpoint of demands_s: {allowed}")
            shares[endpoint] = v.non_negative(owner, f"mix[{endpoint!r}]", share)
        total = math.fsum(shares.values())
        if not total > 0:
            raise InvalidConfig(owner, "mix", dict(mix), "shares with a sum > 0")
        self.resources = items
        self.arrival_cv2 = v.non_negative(owner, "arrival_cv2", arrival_cv2)
        self._cv2 = {r.name: r.service_cv2 for r in items}
        self.mix: Mapping[str, float] = MappingProxyType({e: s / total for e, s in shares.items()})
        self.endpoints = tuple(self.mix)
        given = {} if visits is None else self._table(owner, "visits", visits, names, known)
        visit: dict[str, dict[str, float]] = {}
        for endpoint in self.endpoints:
            row: dict[str, float] = {}
            for name, d in demand[endpoint].items():
                if d <= 0:
                    continue
                count = given.get(endpoint, {}).get(name, 1.0)
                if count <= 0:
                    raise InvalidConfig(
                        owner,
                        f"visits[{endpoint!r}][{name!r}]",
                        count,
                        "a number > 0 where the demand is > 0",
                    )
                row[name] = count
            visit[endpoint] = row
        self._demand = {e: {k: d for k, d in demand[e].items() if d > 0} for e in self.endpoints}
        self._visit = visit
        self._per_request_s = {
            r.name: math.fsum(
                self.mix[e] * self._demand[e].get(r.name, 0.0) for e in self.endpoints
            )
            for r in items
        }
        self._visits_per_request = {
            r.name: math.fsum(self.mix[e] * visit[e].get(r.name, 0.0) for e in self.endpoints)
            for r in items
        }
        self.saturation_by_resource_rps: Mapping[str, float] = MappingProxyType(
            {
                r.name: r.servers / self._per_request_s[r.name]
                if self._per_request_s[r.name] > 0
                else _INF
                for r in items
            }
        )
        self._top: dict[str, tuple[str | None, float]] = {}
        for r in items:
            per = self._per_request_s[r.name]
            if per <= 0:
                self._top[r.name] = (None, 0.0)
                continue
            top = max(self.endpoints, key=lambda e: self.mix[e] * self._demand[e].get(r.name, 0.0))
            self._top[r.name] = (top, self.mix[top] * self._demand[top].get(r.name, 0.0) / per)

    @staticmethod
    def _table(
        owner: str,
        name: str,
        table: Mapping[str, Mapping[str, float]],
        resources: list[str],
        known: str,
    ) -> dict[str, dict[str, float]]:
        if not isinstance(table, Mapping):
            raise InvalidConfig(owner, name, table, "a mapping endpoint -> resource -> number")
        out: dict[str, dict[str, float]] = {}
        for endpoint, row in table.items():
            if not isinstance(endpoint, str) or not isinstance(row, Mapping):
                raise InvalidConfig(
                    owner, f"{name}[{endpoint!r}]", row, "a mapping resource name -> number"
                )
            checked: dict[str, float] = {}
            for resource, value in row.items():
                if resource not in resources:
                    raise InvalidConfig(
                        owner, f"{name}[{endpoint!r}]", resource, f"a resource name: {known}"
                    )
                checked[resource] = v.non_negative(
                    owner, f"{name}[{endpoint!r}][{resource!r}]", value
                )
            out[endpoint] = checked
        return out

    # -----------------------------------------------------------------------------------

    @property
    def bottleneck(self) -> str | None:
        """The first resource to saturate as the rate grows (``None``: no demand anywhere)."""
        name = min(
            self.saturation_by_resource_rps, key=lambda k: self.saturation_by_resource_rps[k]
        )
        return name if math.isfinite(self.saturation_by_resource_rps[name]) else None

    @property
    def saturation_rps(self) -> float:
        """``min_k c_k / sum_e p_e*D_ek``: the rate at which the bottleneck saturates."""
        return min(self.saturation_by_resource_rps.values())

    def utilization_knee_rps(self, knee_utilization: float = 0.9) -> float:
        """The rate at which the bottleneck reaches ``knee_utilization`` (in (0, 1])."""
        u = _knee_utilization("CapacityModel.utilization_knee_rps", knee_utilization)
        return u * self.saturation_rps

    def demand_per_request_s(self, resource: str) -> float:
        """``sum_e p_e*D_ek``: seconds of ``resource`` an average request uses."""
        if resource not in self._per_request_s:
            raise InvalidConfig(
                "CapacityModel", "resource", resource, "one of " + ", ".join(self._per_request_s)
            )
        return self._per_request_s[resource]

    def _evaluate(self, rate: float) -> _State:
        state = _State()
        # The resources with demand: their M/M/c queue and Allen-Cunneen mean wait.
        queues: dict[str, tuple[MMcQueue, float]] = {}
        for r in self.resources:
            per = self._per_request_s[r.name]
            visits = self._visits_per_request[r.name]
            top, top_share = self._top[r.name]
            sat = self.saturation_by_resource_rps[r.name]
            if per <= 0:
                state.loads.append(
                    ResourceLoad(r.name, r.kind, r.servers, 0.0, 0.0, 0.0, True, sat, 0.0, 0.0,
                                 0.0, 0.0, 0.0, None, 0.0)
                )  # fmt: skip
                continue
            service = per / visits
            queue = MMcQueue(rate * visits, 1.0 / service, r.servers)
            factor = (self.arrival_cv2 + r.service_cv2) / 2.0  # Allen-Cunneen
            wait = queue.wait_mean_s * factor if queue.stable else _INF
            queues[r.name] = (queue, wait)
            busy = min(float(r.servers), rate * per)
            waiting = rate * visits * wait if queue.stable else _INF
            state.stable = state.stable and queue.stable
            state.loads.append(
                ResourceLoad(
                    name=r.name,
                    kind=r.kind,
                    servers=r.servers,
                    visit_rate_rps=rate * visits,
                    service_time_mean_s=service,
                    utilization=rate * per / r.servers,
                    stable=queue.stable,
                    saturation_rps=sat,
                    prob_wait=queue.prob_wait,
                    wait_mean_s=wait,
                    in_service=busy,
                    waiting=waiting,
                    in_flight=busy + waiting,
                    top_endpoint=top,
                    top_endpoint_share=top_share,
                )
            )
        for endpoint in self.endpoints:
            residence: dict[str, float] = {}
            spread: dict[str, float] = {}
            stable = True
            for name, d in self._demand[endpoint].items():
                queue, wait = queues[name]
                count = self._visit[endpoint][name]
                residence[name] = count * wait + d
                spread[name] = _variance(queue.prob_wait, count * wait, d, self._cv2[name])
                stable = stable and queue.stable
            mean = math.fsum(residence.values())
            chosen = max(spread, key=lambda k: (spread[k], residence[k]), default=None)
            parts: list[_Part] = []
            total_spread = math.fsum(spread.values()) if stable else 0.0
            for name in residence if stable else ():
                weight = spread[name] / total_spread if total_spread > 0 else 1.0 / len(spread)
                if weight <= 0:
                    continue
                queue, wait = queues[name]
                count = self._visit[endpoint][name]
                waits = wait > 0
                parts.append(
                    _Part(
                        weight=weight,
                        shift_s=mean - residence[name],
                        prob_wait=queue.prob_wait if waits else 0.0,
                        # A visit that waits waits Wq/C on average; V visits of one request, V x.
                        wait_rate_rps=queue.prob_wait / (count * wait) if waits else 1.0,
                        phases=_service_phases(self._demand[endpoint][name], self._cv2[name]),
                    )
                )
            tail = _Tail(used=bool(residence), stable=stable, mean_s=mean, parts=tuple(parts))
            state.residences.append(residence)
            state.means.append(mean)
            state.tails.append(tail)
            state.bottlenecks.append(chosen)
        return state

    def _mix_tail(self, state: _State, t: float) -> float:
        return math.fsum(
            self.mix[e] * tail(t) for e, tail in zip(self.endpoints, state.tails, strict=True)
        )

    def _mix_quantile(self, state: _State, q: float) -> float:
        stuck = math.fsum(
            self.mix[e] for e, tail in zip(self.endpoints, state.tails, strict=True)
            if tail.used and not tail.stable
        )  # fmt: skip
        if stuck >= 1.0 - q:
            return _INF
        scale = max(state.means, default=0.0) or 1.0
        if not math.isfinite(scale):
            scale = 1.0
        return _invert_tail(lambda t: self._mix_tail(state, t), 1.0 - q, scale)

    def at(
        self, rate_rps: float, *, timeout_s: float | None = None, warn_utilization: float = 0.9
    ) -> RatePrediction:
        """Everything at a total rate of ``rate_rps`` requests per second.

        ``timeout_s`` (seconds) is the client's timeout: each endpoint's and the mix's
        probability of a response slower than it (the tail approximation of the module doc;
        1 when the bottleneck is unstable). Warnings name every resource at or above
        ``warn_utilization``, and the timeout probability when it is 1% or more.
        """
        owner = "CapacityModel.at"
        rate = v.non_negative(owner, "rate_rps", rate_rps)
        timeout = None if timeout_s is None else v.positive(owner, "timeout_s", timeout_s)
        warn_at = _knee_utilization(owner, warn_utilization, name="warn_utilization")
        state = self._evaluate(rate)
        endpoints = []
        for i, endpoint in enumerate(self.endpoints):
            tail = state.tails[i]
            share = self.mix[endpoint]
            endpoints.append(
                EndpointLatency(
                    endpoint=endpoint,
                    share=share,
                    rate_rps=rate * share,
                    latency_mean_s=state.means[i],
                    latency_p99_s=tail.quantile(0.99),
                    timeout_probability=None if timeout is None else tail(timeout),
                    bottleneck=state.bottlenecks[i],
                    time_by_resource_s=state.residences[i],
                )
            )
        mean = math.fsum(self.mix[e] * m for e, m in zip(self.endpoints, state.means, strict=True))
        timeout_probability = None if timeout is None else self._mix_tail(state, timeout)
        warnings = [
            _load_warning(load, resource, rate, warn_at)
            for load, resource in zip(state.loads, self.resources, strict=True)
            if load.utilization >= warn_at
        ]
        if timeout is not None and timeout_probability is not None and timeout_probability >= 0.01:
            warnings.append(
                f"{timeout_probability:.1%} of requests predicted to exceed the "
                f"{_fmt_s(timeout)} client timeout at {_fmt_rate(rate)} req/s"
            )
        return RatePrediction(
            rate_rps=rate,
            stable=state.stable,
            resources=tuple(state.loads),
            endpoints=tuple(endpoints),
            latency_mean_s=mean,
            latency_p99_s=self._mix_quantile(state, 0.99),
            timeout_s=timeout,
            timeout_probability=timeout_probability,
            warnings=tuple(warnings),
        )

    def latency_tail(self, rate_rps: float, t_s: float) -> float:
        """The predicted probability that a request of the mix takes longer than ``t_s``
        seconds at ``rate_rps``: ``sum_e p_e * P(R_e > t)`` (the timeout probability for a
        client timeout of ``t_s``)."""
        rate = v.non_negative("CapacityModel.latency_tail", "rate_rps", rate_rps)
        t = v.non_negative("CapacityModel.latency_tail", "t_s", t_s, finite=False)
        return self._mix_tail(self._evaluate(rate), t)

    def latency_quantile_s(self, rate_rps: float, q: float = 0.99) -> float:
        """The predicted ``q`` quantile of the whole mix's latency at ``rate_rps`` (seconds)."""
        rate = v.non_negative("CapacityModel.latency_quantile_s", "rate_rps", rate_rps)
        p = _quantile("CapacityModel.latency_quantile_s", q)
        return self._mix_quantile(self._evaluate(rate), p)

    def slo_knee_rps(self, slo_s: float, quantile: float = 0.99) -> float | None:
        """The highest rate (req/s) below saturation whose predicted ``quantile`` latency of
        the mix is within ``slo_s`` seconds, found by bisection to ~1e-9 relative (the
        predicted quantile grows with the rate). ``None`` when even an idle service misses
        the SLO; ``inf`` when no resource has any demand."""
        owner = "CapacityModel.slo_knee_rps"
        slo = v.positive(owner, "slo_s", slo_s)
        q = _quantile(owner, quantile)
        if self._mix_quantile(self._evaluate(0.0), q) > slo:
            return None
        lo, hi = 0.0, self.saturation_rps
        if not math.isfinite(hi):
            return _INF
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            if self._mix_quantile(self._evaluate(mid), q) <= slo:
                lo = mid
            else:
                hi = mid
            if hi - lo <= 1e-9 * hi:
                break
        return lo

    def saturation_warnings(self, up_to_rps: float | None = None) -> tuple[str, ...]:
        """One line per resource that saturates (at most ``up_to_rps`` when given), first to
        saturate first; the bottleneck is always named."""
        order = sorted(self.resources, key=lambda r: self.saturation_by_resource_rps[r.name])
        lines: list[str] = []
        for i, r in enumerate(order):
            sat = self.saturation_by_resource_rps[r.name]
            if not math.isfinite(sat) or (i > 0 and up_to_rps is not None and sat > up_to_rps):
                continue
            label, ran_out, unit = _LABEL[r.kind]
            top, share = self._top[r.name]
            first = "first to saturate; " if i == 0 else ""
            lines.append(
                f"{label} {r.name!r} {ran_out} at {_fmt_rate(sat)} req/s on {top} "
                f"({first}{share:.0%} of its demand; {r.servers} {unit})"
            )
        return tuple(lines)

    def __repr__(self) -> str:
        return (
            f"CapacityModel(resources={list(self.resources)!r}, mix={dict(self.mix)!r}, "
            f"bottleneck={self.bottleneck!r}, saturation_rps={self.saturation_rps:.6g})"
        )


def _knee_utilization(owner: str, value: object, *, name: str = "knee_utilization") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise InvalidConfig(owner, name, value, "a number in (0, 1], such as 0.9")
    return float(value)


def _load_warning(load: ResourceLoad, resource: Resource, rate: float, warn_at: float) -> str:
    label, ran_out, unit = _LABEL[resource.kind]
    where = f" on {load.top_endpoint}" if load.top_endpoint else ""
    if load.utilization >= 1:
        return (
            f"{label} {resource.name!r} {ran_out} at {_fmt_rate(load.saturation_rps)} req/s{where}: "
            f"{_fmt_rate(rate)} req/s needs {load.utilization:.0%} of its {resource.servers} "
            f"{unit}; its queue grows without bound"
        )
    return (
        f"{label} {resource.name!r} at {load.utilization:.0%} utilization at {_fmt_rate(rate)} "
        f"req/s (>= {warn_at:.0%}; {ran_out} at {_fmt_rate(load.saturation_rps)} req/s{where})"
    )


def predict_capacity(
    resources: Sequence[Resource],
    demands_s: Mapping[str, Mapping[str, float]],
    mix: Mapping[str, float],
    rates_rps: Iterable[float],
    *,
    visits: Mapping[str, Mapping[str, float]] | None = None,
    arrival_cv2: float = 1.0,
    timeout_s: float | None = None,
    knee_utilization: float = 0.9,
    slo_s: float | None = None,
    slo_quantile: float = 0.99,
) -> CapacityPrediction:
    """Predict the capacity of a service at each rate of ``rates_rps`` (requests per second).

    ``resources``, ``demands_s``, ``mix``, ``visits`` and ``arrival_cv2`` are as for
    :class:`CapacityModel`;
    ``timeout_s`` is the client timeout (seconds) for timeout probabilities;
    ``knee_utilization`` (default 0.9) defines ``utilization_knee_rps``; ``slo_s`` (seconds)
    with ``slo_quantile`` (default 0.99) defines ``slo_knee_rps``, the knee comparable with a
    measured ``brownout knee``. Each point warns about resources at or above
    ``knee_utilization``; the prediction's own warnings name the first resource to saturate
    and every other one that saturates within the rates asked.
    """
    owner = "predict_capacity"
    model = CapacityModel(resources, demands_s, mix, visits=visits, arrival_cv2=arrival_cv2)
    knee_u = _knee_utilization(owner, knee_utilization)
    q = _quantile(owner, slo_quantile)
    timeout = None if timeout_s is None else v.positive(owner, "timeout_s", timeout_s)
    slo = None if slo_s is None else v.positive(owner, "slo_s", slo_s)
    try:
        rate_list = [v.non_negative(owner, "rates_rps", r) for r in rates_rps]
    except TypeError:
        raise InvalidConfig(owner, "rates_rps", rates_rps, "an iterable of rates >= 0") from None
    points = tuple(model.at(r, timeout_s=timeout, warn_utilization=knee_u) for r in rate_list)
    warnings = list(model.saturation_warnings(max(rate_list, default=0.0)))
    slo_knee = None if slo is None else model.slo_knee_rps(slo, q)
    if slo is not None and slo_knee is None:
        idle = model.latency_quantile_s(0.0, q)
        warnings.append(
            f"no rate meets the SLO: even an idle service answers in {_fmt_s(idle)} at "
            f"p{q * 100:g}, over the {_fmt_s(slo)} SLO"
        )
    return CapacityPrediction(
        resources=model.resources,
        mix=dict(model.mix),
        bottleneck=model.bottleneck,
        saturation_rps=model.saturation_rps,
        saturation_by_resource_rps=dict(model.saturation_by_resource_rps),
        knee_utilization=knee_u,
        utilization_knee_rps=knee_u * model.saturation_rps,
        slo_s=slo,
        slo_quantile=q,
        slo_knee_rps=slo_knee,
        timeout_s=timeout,
        points=points,
        warnings=tuple(warnings),
    )
