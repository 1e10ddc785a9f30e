"""Queueing formulas: operational laws, bottleneck bounds, M/M/c, G/G/c and exact MVA.

Units: rates in requests (or visits) per second (``*_rps``), times in seconds (``*_s``),
counts (queue lengths, populations) without unit; a utilization is a fraction.

Operational laws (they hold for any system in steady state, whatever its distributions)::

    utilization law   U = X * D / c          (c servers; D seconds of demand per request)
    Little's law      N = X * R              (mean number inside = throughput x time inside)
    forced flow       X_k = V_k * X          (V_k visits to resource k per request)
    service demand    D_k = V_k * S_k

Asymptotic bounds (Lazowska et al., "Quantitative System Performance", ch. 5), with
``D = sum_k D_k`` over the queueing resources, ``D_max`` the largest and ``Z`` the think
time: ``N / (N*D + Z) <= X(N) <= min(N / (D + Z), 1 / D_max)``,
``max(D, N*D_max - Z) <= R(N) <= N*D``, knee at ``N* = (D + Z) / D_max``; an open system
saturates at ``X = 1 / D_max`` and never answers faster than ``D``.

M/M/c (Poisson arrivals at ``lambda``, ``c`` exponential servers of rate ``mu`` each):
``a = lambda/mu`` erlangs, ``rho = a/c``; the probability of waiting is Erlang C, computed
from the Erlang B recursion ``B(0) = 1, B(k) = a*B(k-1) / (k + a*B(k-1))`` and
``C = B / (1 - rho*(1 - B))`` (no factorial, no power: stable for thousands of servers);
``Wq = C / (c*mu - lambda)``, ``W = Wq + 1/mu``, ``Lq = lambda*Wq``, ``L = lambda*W``;
``P(Wq > t) = C * exp(-(c*mu - lambda)*t)``. The response time ``W = Wq + S`` is, with
probability ``1 - C``, the service time alone (exponential, rate ``mu``) and otherwise an
exponential wait of rate ``theta = c*mu - lambda`` plus the service (hypoexponential), so
``P(W > t) = (1 - C)*exp(-mu*t) + C*H(theta, mu, t)`` where ``H`` is the tail of the sum of
two independent exponentials (for ``c = 1`` this is ``exp(-(mu - lambda)*t)``).

An unstable queue (``lambda >= c*mu``) is not an error here: :class:`MMcQueue` flags it
``stable=False`` and reports infinite means, tails of 1 and infinite quantiles, so a
capacity sweep can run past saturation. JSON output writes infinities as ``null``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import _validate as v
from ..errors import InvalidConfig

__all__ = [
    "BottleneckBounds",
    "MMcQueue",
    "MvaPoint",
    "MvaResult",
    "ServiceCenter",
    "allen_cunneen_wait_s",
    "bottleneck_bounds",
    "erlang_b",
    "erlang_c",
    "forced_flow",
    "kingman_wait_s",
    "littles_law",
    "mva",
    "mva_schweitzer",
    "service_demand",
    "utilization_law",
]

_INF = math.inf


def _json_number(value: float) -> float | None:
    """``value`` for a JSON document: infinities and NaN become ``None`` (JSON has none)."""
    return value if math.isfinite(value) else None


def _quantile(owner: str, q: object) -> float:
    if isinstance(q, bool) or not isinstance(q, int | float) or not 0 < q < 1:
        raise InvalidConfig(owner, "q", q, "a number in (0, 1), such as 0.99 for p99")
    return float(q)


def _time(owner: str, t_s: object) -> float:
    return v.non_negative(owner, "t_s", t_s, finite=False)


# ---------------------------------------------------------------------------------------
# Operational laws


def utilization_law(throughput_rps: float, demand_s: float, servers: int = 1) -> float:
    """Utilization of a resource with ``servers`` servers: ``U = X * D / c``.

    ``throughput_rps`` is the request rate X, ``demand_s`` the seconds of this resource one
    request uses (D). A result >= 1 means the resource cannot keep up with X.
    """
    x = v.non_negative("utilization_law", "throughput_rps", throughput_rps)
    d = v.non_negative("utilization_law", "demand_s", demand_s)
    c = v.int_at_least("utilization_law", "servers", servers, 1)
    return x * d / c


def littles_law(throughput_rps: float, time_s: float) -> float:
    """Little's law, ``N = X * R``: the mean number in a system (in flight, queued, held)
    given its throughput X (per second) and the mean time R (seconds) each item spends in it.

    Rearrange for the other forms: ``R = N / X``, ``X = N / R``.
    """
    x = v.non_negative("littles_law", "throughput_rps", throughput_rps)
    r = v.non_negative("littles_law", "time_s", time_s)
    return x * r


def forced_flow(throughput_rps: float, visits: float) -> float:
    """The forced flow law, ``X_k = V_k * X``: visits per second to a resource that each
    request visits ``visits`` times (V_k), at system throughput X."""
    x = v.non_negative("forced_flow", "throughput_rps", throughput_rps)
    visits_ = v.non_negative("forced_flow", "visits", visits)
    return visits_ * x


def service_demand(visits: float, service_time_s: float) -> float:
    """Service demand ``D_k = V_k * S_k`` in seconds per request: ``visits`` visits of
    ``service_time_s`` seconds each."""
    visits_ = v.non_negative("service_demand", "visits", visits)
    s = v.non_negative("service_demand", "service_time_s", service_time_s)
    return visits_ * s


@dataclass(frozen=True, slots=True)
class BottleneckBounds:
    """Asymptotic (bottleneck) bounds of a network from its service demands alone.

    ``demand_total_s`` is ``D = sum D_k`` over the queueing resources, ``demand_max_s`` the
    largest ``D_max`` (at ``bottleneck``), ``think_time_s`` the think time ``Z`` of a closed
    system (0 for an open one). ``max_throughput_rps = 1 / D_max`` bounds every system's
    throughput; ``knee_population = (D + Z) / D_max`` is where the two throughput asymptotes
    of a closed system cross (below it, adding users adds throughput almost linearly; above
    it, they only add queueing).
    """

    demand_total_s: float
    demand_max_s: float
    bottleneck: str
    think_time_s: float
    max_throughput_rps: float
    knee_population: float

    def throughput_upper_rps(self, population: float) -> float:
        """Closed system of ``population`` users: ``X(N) <= min(N / (D + Z), 1 / D_max)``."""
        n = v.non_negative("BottleneckBounds", "population", population)
        total = self.demand_total_s + self.think_time_s
        light = n / total if total > 0 else _INF
        return min(light, self.max_throughput_rps)

    def throughput_lower_rps(self, population: float) -> float:
        """Closed system: ``X(N) >= N / (N*D + Z)`` (every other user queued ahead)."""
        n = v.non_negative("BottleneckBounds", "population", population)
        denominator = n * self.demand_total_s + self.think_time_s
        return n / denominator if denominator > 0 else _INF

    def response_time_lower_s(self, population: float) -> float:
        """Closed system: ``R(N) >= max(D, N*D_max - Z)``."""
        n = v.non_negative("BottleneckBounds", "population", population)
        return max(self.demand_total_s, n * self.demand_max_s - self.think_time_s)

    def response_time_upper_s(self, population: float) -> float:
        """Closed system: ``R(N) <= N*D``."""
        n = v.non_negative("BottleneckBounds", "population", population)
        return n * self.demand_total_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "demand_total_s": self.demand_total_s,
            "demand_max_s": self.demand_max_s,
            "bottleneck": self.bottleneck,
            "think_time_s": self.think_time_s,
            "max_throughput_rps": _json_number(self.max_throughput_rps),
            "knee_population": _json_number(self.knee_population),
        }


def bottleneck_bounds(
    demands_s: Mapping[str, float], think_time_s: float = 0.0
) -> BottleneckBounds:
    """The asymptotic bounds of a network whose queueing resources have the service demands
    ``demands_s`` (resource name -> seconds per request) and whose users think
    ``think_time_s`` seconds between requests (0 for an open system).

    With every demand 0 the bounds are infinite (``max_throughput_rps = inf``).
    """
    owner = "bottleneck_bounds"
    if not isinstance(demands_s, Mapping) or not demands_s:
        raise InvalidConfig(owner, "demands_s", demands_s, "a non-empty mapping name -> seconds")
    checked = {str(k): v.non_negative(owner, f"demands_s[{k!r}]", d) for k, d in demands_s.items()}
    z = v.non_negative(owner, "think_time_s", think_time_s)
    bottleneck = max(checked, key=lambda k: checked[k])
    d_max = checked[bottleneck]
    total = math.fsum(checked.values())
    return BottleneckBounds(
        demand_total_s=total,
        demand_max_s=d_max,
        bottleneck=bottleneck,
        think_time_s=z,
        max_throughput_rps=1.0 / d_max if d_max > 0 else _INF,
        knee_population=(total + z) / d_max if d_max > 0 else _INF,
    )


# ---------------------------------------------------------------------------------------
# Erlang B and C, M/M/c


def _erlang_b(servers: int, offered_load: float) -> float:
    b = 1.0
    for k in range(1, servers + 1):
        ab = offered_load * b
        b = ab / (k + ab)
    return b


def _erlang_c(servers: int, offered_load: float) -> float:
    if offered_load >= servers:
        return 1.0
    if offered_load == 0:
        return 0.0
    b = _erlang_b(servers, offered_load)
    rho = offered_load / servers
    return min(1.0, b / (1.0 - rho * (1.0 - b)))


def erlang_b(servers: int, offered_load: float) -> float:
    """Erlang B: the probability that an arrival finds all ``servers`` busy in a loss system
    (M/M/c/c) offered ``offered_load`` erlangs (``a = lambda / mu``).

    Computed by the recursion ``B(0) = 1``, ``B(k) = a*B(k-1) / (k + a*B(k-1))``: every
    intermediate value lies in [0, 1], so it neither overflows nor loses precision for
    thousands of servers.
    """
    c = v.int_at_least("erlang_b", "servers", servers, 1)
    a = v.non_negative("erlang_b", "offered_load", offered_load)
    return _erlang_b(c, a)


def erlang_c(servers: int, offered_load: float) -> float:
    """Erlang C: the probability that an arrival has to wait in an M/M/c queue with
    ``servers`` servers offered ``offered_load`` erlangs (``a = lambda / mu``)::

        C = [a^c/c! * c/(c-a)] / [sum_{k<c} a^k/k! + a^c/c! * c/(c-a)]
          = B / (1 - rho*(1 - B))        with B = Erlang B, rho = a/c

    The second form is the one computed. For ``a >= c`` (unstable) every arrival waits: 1.
    """
    c = v.int_at_least("erlang_c", "servers", servers, 1)
    a = v.non_negative("erlang_c", "offered_load", offered_load)
    return _erlang_c(c, a)


def _hypoexp_tail(rate_a: float, rate_b: float, t: float) -> float:
    """``P(X + Y > t)`` for independent exponentials of rates ``rate_a`` and ``rate_b``.

    ``(b*e^{-a t} - a*e^{-b t}) / (b - a)``, written with ``a <= b`` as
    ``e^{-a t} * (1 + a*(1 - e^{-(b-a) t}) / (b - a))`` so that nothing overflows and
    ``a == b`` (``e^{-a t} * (1 + a t)``) is the continuous limit.
    """
    a, b = (rate_a, rate_b) if rate_a <= rate_b else (rate_b, rate_a)
    delta = b - a
    spread = t if delta == 0 else -math.expm1(-delta * t) / delta
    return min(1.0, math.exp(-a * t) * (1.0 + a * spread))


def _invert_tail(tail: Callable[[float], float], target: float, scale: float) -> float:
    """The smallest ``t >= 0`` with ``tail(t) <= target`` for a continuous decreasing tail,
    by doubling then bisection (relative precision ~1e-12). ``scale`` is a first guess."""
    if tail(0.0) <= target:
        return 0.0
    hi = scale if scale > 0 else 1.0
    for _ in range(2000):
        if tail(hi) <= target:
            break
        hi *= 2.0
        if not math.isfinite(hi):
            return _INF
    else:
        return _INF
    lo = 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if tail(mid) <= target:
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-13 * hi:
            break
    return hi


@dataclass(frozen=True, slots=True)
class MMcQueue:
    """An M/M/c queue: Poisson arrivals at ``arrival_rate_rps``, ``servers`` servers each
    serving at ``service_rate_rps`` (mean service time ``1 / service_rate_rps`` seconds),
    first come first served, unlimited queue.

    Derived on construction: ``offered_load`` ``a = lambda/mu`` (erlangs), ``utilization``
    ``rho = a/c`` (the busy fraction of each server while stable; >= 1 means unstable),
    ``stable`` (``rho < 1``), ``prob_wait`` (Erlang C), ``wait_mean_s`` (Wq),
    ``response_mean_s`` (W = Wq + 1/mu), ``queue_length_mean`` (Lq = lambda*Wq),
    ``in_system_mean`` (L = lambda*W) and ``busy_servers_mean`` (``a``, capped at ``c``).
    An unstable queue reports ``prob_wait = 1`` and infinite means (see the module doc).
    """

    arrival_rate_rps: float
    service_rate_rps: float
    servers: int = 1
    offered_load: float = field(init=False)
    utilization: float = field(init=False)
    stable: bool = field(init=False)
    prob_wait: float = field(init=False)
    wait_mean_s: float = field(init=False)
    response_mean_s: float = field(init=False)
    queue_length_mean: float = field(init=False)
    in_system_mean: float = field(init=False)
    busy_servers_mean: float = field(init=False)

    def __post_init__(self) -> None:
        owner = "MMcQueue"
        lam = v.non_negative(owner, "arrival_rate_rps", self.arrival_rate_rps)
        mu = v.positive(owner, "service_rate_rps", self.service_rate_rps)
        c = v.int_at_least(owner, "servers", self.servers, 1)
        a = lam / mu
        rho = a / c
        stable = lam < c * mu
        if stable:
            prob_wait = _erlang_c(c, a)
            wq = prob_wait / (c * mu - lam) if prob_wait > 0 else 0.0
            w = wq + 1.0 / mu
            lq, big_l, busy = lam * wq, lam * w, a
        else:
            prob_wait, wq, w, lq, big_l, busy = 1.0, _INF, _INF, _INF, _INF, float(c)
        put = object.__setattr__
        put(self, "arrival_rate_rps", lam)
        put(self, "service_rate_rps", mu)
        put(self, "offered_load", a)
        put(self, "utilization", rho)
        put(self, "stable", stable)
        put(self, "prob_wait", prob_wait)
        put(self, "wait_mean_s", wq)
        put(self, "response_mean_s", w)
        put(self, "queue_length_mean", lq)
        put(self, "in_system_mean", big_l)
        put(self, "busy_servers_mean", busy)

    @property
    def _decay_rps(self) -> float:
        """``theta = c*mu - lambda``: the rate at which the wait tail decays."""
        return self.servers * self.service_rate_rps - self.arrival_rate_rps

    def wait_tail(self, t_s: float) -> float:
        """``P(Wq > t) = C * exp(-(c*mu - lambda) * t)``: the probability that a request waits
        longer than ``t_s`` seconds before service starts (1 when unstable)."""
        t = _time("MMcQueue.wait_tail", t_s)
        if not self.stable:
            return 1.0
        if t == 0:
            return self.prob_wait
        return self.prob_wait * math.exp(-self._decay_rps * t)

    def response_tail(self, t_s: float) -> float:
        """``P(W > t)``, the probability that a request spends more than ``t_s`` seconds in the
        system (wait + service): ``(1 - C)*exp(-mu t) + C*H(c*mu - lambda, mu, t)`` with
        ``H`` the hypoexponential tail (see the module doc). 1 when unstable."""
        t = _time("MMcQueue.response_tail", t_s)
        if not self.stable:
            return 1.0
        mu, c_wait = self.service_rate_rps, self.prob_wait
        alone = math.exp(-mu * t)
        if c_wait == 0:
            return alone
        return min(1.0, (1.0 - c_wait) * alone + c_wait * _hypoexp_tail(self._decay_rps, mu, t))

    def wait_quantile_s(self, q: float) -> float:
        """The ``q`` quantile of the wait in queue (``q=0.99`` is p99), in seconds: the
        inverse of :meth:`wait_tail`, ``ln(C / (1 - q)) / (c*mu - lambda)`` when
        ``C > 1 - q``, else 0 (at least a fraction q of requests do not wait)."""
        p = _quantile("MMcQueue.wait_quantile_s", q)
        if not self.stable:
            return _INF
        if self.prob_wait <= 1.0 - p:
            return 0.0
        return math.log(self.prob_wait / (1.0 - p)) / self._decay_rps

    def response_quantile_s(self, q: float) -> float:
        """The ``q`` quantile of the response time (wait + service), in seconds, found by
        inverting :meth:`response_tail` numerically (relative precision ~1e-12)."""
        p = _quantile("MMcQueue.response_quantile_s", q)
        if not self.stable:
            return _INF
        return _invert_tail(self.response_tail, 1.0 - p, self.response_mean_s)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures (infinite values as ``None``)."""
        return {
            "arrival_rate_rps": self.arrival_rate_rps,
            "service_rate_rps": self.service_rate_rps,
            "servers": self.servers,
            "offered_load": self.offered_load,
            "utilization": self.utilization,
            "stable": self.stable,
            "prob_wait": self.prob_wait,
            "wait_mean_s": _json_number(self.wait_mean_s),
            "response_mean_s": _json_number(self.response_mean_s),
            "queue_length_mean": _json_number(self.queue_length_mean),
            "in_system_mean": _json_number(self.in_system_mean),
            "busy_servers_mean": self.busy_servers_mean,
        }


# ---------------------------------------------------------------------------------------
# G/G/1 and G/G/c approximations


def _variability(owner: str, ca2: float, cs2: float) -> float:
    a = v.non_negative(owner, "ca2", ca2)
    s = v.non_negative(owner, "cs2", cs2)
    return (a + s) / 2.0


def kingman_wait_s(
    arrival_rate_rps: float, service_time_s: float, *, ca2: float = 1.0, cs2: float = 1.0
) -> float:
    """Kingman's approximation of the mean wait in a G/G/1 queue, in seconds::

        Wq ~ rho / (1 - rho) * (ca2 + cs2) / 2 * E[S]      rho = lambda * E[S]

    ``ca2`` and ``cs2`` are the squared coefficients of variation of the inter-arrival and
    service times (1 and 1 give M/M/1 exactly; 0 is deterministic). Accurate in heavy
    traffic; returns ``inf`` when ``rho >= 1``.
    """
    owner = "kingman_wait_s"
    lam = v.non_negative(owner, "arrival_rate_rps", arrival_rate_rps)
    s = v.positive(owner, "service_time_s", service_time_s)
    spread = _variability(owner, ca2, cs2)
    rho = lam * s
    if rho >= 1:
        return _INF
    return rho / (1.0 - rho) * spread * s


def allen_cunneen_wait_s(
    arrival_rate_rps: float,
    service_time_s: float,
    servers: int,
    *,
    ca2: float = 1.0,
    cs2: float = 1.0,
) -> float:
    """Allen-Cunneen approximation of the mean wait in a G/G/c queue, in seconds::

        Wq ~ Wq(M/M/c) * (ca2 + cs2) / 2

    with ``Wq(M/M/c)`` from Erlang C at the same arrival rate and mean service time. Exact
    for M/M/c, equal to Kingman for c = 1; its error grows with c and with variability, so
    use it to screen and simulate to decide. Returns ``inf`` when ``lambda >= c / E[S]``.
    """
    owner = "allen_cunneen_wait_s"
    lam = v.non_negative(owner, "arrival_rate_rps", arrival_rate_rps)
    s = v.positive(owner, "service_time_s", service_time_s)
    c = v.int_at_least(owner, "servers", servers, 1)
    spread = _variability(owner, ca2, cs2)
    queue = MMcQueue(lam, 1.0 / s, c)
    if not queue.stable:
        return _INF
    return queue.wait_mean_s * spread


# ---------------------------------------------------------------------------------------
# Mean value analysis (closed networks)

CENTER_KINDS = ("queue", "delay")


@dataclass(frozen=True, slots=True)
class ServiceCenter:
    """A resource of a closed network, for :func:`mva`.

    ``demand_s`` is the total service demand of one request at this center (visits x
    service time, seconds). ``kind`` is ``"queue"`` (requests queue for its servers) or
    ``"delay"`` (infinite servers: a fixed delay, e.g. a remote call whose own queue is not
    modelled). ``servers`` > 1 on a queue center uses Seidmann's approximation: a queue with
    demand ``D/c`` followed by a delay of ``D*(c-1)/c`` (exact only for ``servers=1``).
    """

    name: str
    demand_s: float
    kind: str = "queue"
    servers: int = 1

    def __post_init__(self) -> None:
        owner = "ServiceCenter"
        if not isinstance(self.name, str) or not self.name:
            raise InvalidConfig(owner, "name", self.name, "a non-empty string")
        object.__setattr__(self, "demand_s", v.non_negative(owner, "demand_s", self.demand_s))
        v.one_of(owner, "kind", self.kind, CENTER_KINDS)
        v.int_at_least(owner, "servers", self.servers, 1)


@dataclass(frozen=True, slots=True)
class MvaPoint:
    """The state of a closed network with ``population`` users, from :func:`mva`.

    ``throughput_rps`` is X(n); ``response_time_s`` R(n), the time a request spends at the
    centers (think time excluded; ``n = X * (R + Z)``). Per center (by name):
    ``residence_time_s`` (R_k, waiting + service over all visits), ``queue_length`` (Q_k =
    X * R_k, requests at the center, in service or waiting) and ``utilization`` (U_k =
    X * D_k / c; for a delay center, the mean number of requests in it).
    """

    population: int
    throughput_rps: float
    response_time_s: float
    residence_time_s: dict[str, float]
    queue_length: dict[str, float]
    utilization: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "population": self.population,
            "throughput_rps": self.throughput_rps,
            "response_time_s": self.response_time_s,
            "residence_time_s": dict(self.residence_time_s),
            "queue_length": dict(self.queue_length),
            "utilization": dict(self.utilization),
        }


@dataclass(frozen=True, slots=True)
class MvaResult:
    """Exact MVA of a closed network for populations 1..N: ``points[n - 1]`` is n users."""

    centers: tuple[ServiceCenter, ...]
    think_time_s: float
    points: tuple[MvaPoint, ...]

    def at(self, population: int) -> MvaPoint:
        """The network with ``population`` users (1..N)."""
        n = v.int_at_least("MvaResult.at", "population", population, 1)
        if n > len(self.points):
            raise InvalidConfig(
                "MvaResult.at", "population", population, f"an integer in 1..{len(self.points)}"
            )
        return self.points[n - 1]

    @property
    def bounds(self) -> BottleneckBounds:
        """The asymptotic bounds of the same network (queue centers; delays add to Z)."""
        queues = {c.name: c.demand_s / c.servers for c in self.centers if c.kind == "queue"}
        delays = math.fsum(
            c.demand_s if c.kind == "delay" else c.demand_s * (c.servers - 1) / c.servers
            for c in self.centers
        )
        if not queues:
            queues = {"(none)": 0.0}
        return bottleneck_bounds(queues, self.think_time_s + delays)

    def to_dict(self) -> dict[str, Any]:
        return {
            "centers": [
                {"name": c.name, "demand_s": c.demand_s, "kind": c.kind, "servers": c.servers}
                for c in self.centers
            ],
            "think_time_s": self.think_time_s,
            "points": [p.to_dict() for p in self.points],
        }


def _checked_centers(owner: str, centers: Sequence[ServiceCenter]) -> tuple[ServiceCenter, ...]:
    items = tuple(centers) if isinstance(centers, Sequence) else ()
    if not items or not all(isinstance(c, ServiceCenter) for c in items):
        raise InvalidConfig(owner, "centers", centers, "a non-empty sequence of ServiceCenter")
    names = [c.name for c in items]
    if len(set(names)) != len(names):
        raise InvalidConfig(owner, "centers", names, "centers with distinct names")
    return items


def _split(center: ServiceCenter) -> tuple[float, float]:
    """(queueing demand, pure delay) of a center, Seidmann's split for c servers."""
    if center.kind == "delay":
        return 0.0, center.demand_s
    c = center.servers
    return center.demand_s / c, center.demand_s * (c - 1) / c


def mva(centers: Sequence[ServiceCenter], population: int, think_time_s: float = 0.0) -> MvaResult:
    """Exact mean value analysis of a closed, single-class, product-form network.

    ``population`` users each cycle: think ``think_time_s`` seconds (Z), then send a request
    that visits every center. For n = 1..N, with Q_k(0) = 0::

        R_k(n) = D_k * (1 + Q_k(n-1))       queue center (D_k for a delay center)
        X(n)   = n / (Z + sum_k R_k(n))
        Q_k(n) = X(n) * R_k(n)

    Cost O(N * K) for K centers. Queue centers with several servers use Seidmann's
    approximation (see :class:`ServiceCenter`).
    """
    owner = "mva"
    items = _checked_centers(owner, centers)
    n_max = v.int_at_least(owner, "population", population, 1)
    z = v.non_negative(owner, "think_time_s", think_time_s)
    splits = [_split(c) for c in items]
    names = [c.name for c in items]
    queued = [0.0] * len(items)  # the queueing part of Q_k(n-1)
    points: list[MvaPoint] = []
    for n in range(1, n_max + 1):
        residence = [dq * (1.0 + q) + dd for (dq, dd), q in zip(splits, queued, strict=True)]
        total = math.fsum(residence)
        x = n / (z + total) if z + total > 0 else _INF
        queued = [x * dq * (1.0 + q) for (dq, _), q in zip(splits, queued, strict=True)]
        points.append(
            MvaPoint(
                population=n,
                throughput_rps=x,
                response_time_s=total,
                residence_time_s=dict(zip(names, residence, strict=True)),
                queue_length={k: x * r for k, r in zip(names, residence, strict=True)},
                utilization={c.name: x * c.demand_s / c.servers for c in items},
            )
        )
    return MvaResult(centers=items, think_time_s=z, points=tuple(points))


def mva_schweitzer(
    centers: Sequence[ServiceCenter],
    population: int,
    think_time_s: float = 0.0,
    *,
    tolerance: float = 1e-9,
    max_iterations: int = 10_000,
) -> MvaPoint:
    """Approximate MVA (Bard-Schweitzer) for large populations, in O(K) per iteration.

    Replaces ``Q_k(N-1)`` with ``(N-1)/N * Q_k(N)`` and iterates the MVA equations to a
    fixed point (until no queue length moves by more than ``tolerance`` relative). Typically
    within a few percent of :func:`mva`; exact as N grows.
    """
    owner = "mva_schweitzer"
    items = _checked_centers(owner, centers)
    n = v.int_at_least(owner, "population", population, 1)
    z = v.non_negative(owner, "think_time_s", think_time_s)
    tol = v.positive(owner, "tolerance", tolerance)
    iterations = v.int_at_least(owner, "max_iterations", max_iterations, 1)
    splits = [_split(c) for c in items]
    names = [c.name for c in items]
    queueing = [dq for dq, _ in splits]
    share = math.fsum(queueing)
    queued = [n * dq / share if share > 0 else 0.0 for dq in queueing]
    x = 0.0
    residence = [0.0] * len(items)
    for _ in range(iterations):
        shrink = (n - 1) / n
        residence = [
            dq * (1.0 + shrink * q) + dd for (dq, dd), q in zip(splits, queued, strict=True)
        ]
        total = math.fsum(residence)
        x = n / (z + total) if z + total > 0 else _INF
        updated = [x * dq * (1.0 + shrink * q) for (dq, _), q in zip(splits, queued, strict=True)]
        moved = max(
            (abs(a - b) / max(abs(b), 1e-300) for a, b in zip(updated, queued, strict=True)),
            default=0.0,
        )
        queued = updated
        if moved <= tol:
            break
    total = math.fsum(residence)
    return MvaPoint(
        population=n,
        throughput_rps=x,
        response_time_s=total,
        residence_time_s=dict(zip(names, residence, strict=True)),
        queue_length={k: x * r for k, r in zip(names, residence, strict=True)},
        utilization={c.name: x * c.demand_s / c.servers for c in items},
    )
