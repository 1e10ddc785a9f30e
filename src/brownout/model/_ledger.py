"""From a probe ledger to a capacity model: the resources a service has, what each request
of each endpoint uses of them, and the traffic mix.

The ledger is read as JSON data (``docs/ledger.md``); the model never imports the probe.
Resources, each with the demand one request of endpoint ``e`` puts on it (the ledger's
per-request means):

=================  ===========  ============================  ================================
resource           kind         servers                       demand (visits)
=================  ===========  ============================  ================================
``loop``           cpu          ``workers`` (default 1)       loop busy time when the loop
                                                              monitor ran, else CPU time
``<db>``           db_pool      pool size + max overflow      connection hold time
                                                              (checkouts per request)
``threads``        threads      the thread limiter's tokens   thread run time
``<host>``         client_pool  ``http_connections`` (100,    time in calls to the host
                                httpx's default)              (calls per request)
=================  ===========  ============================  ================================

The loop's demand also carries the CPU the process spent outside the requests' own loop
steps (the server's HTTP parsing and writing, a database driver's threads): with the GIL
that work takes the loop's turn too. When the ledger has ``capacity.process_cpu`` (the
process's CPU time over its requests), that CPU per request minus the steps' CPU per
request is added to every endpoint's loop demand.

A resource with no demand from any endpoint is left out. Each resource's service-time
variability (``service_cv2``, used by the Allen-Cunneen correction) comes from the
ledger's histograms: the visit-weighted mixture of the endpoints' distributions,
``cv2 = E[S^2] / E[S]^2 - 1``; 1 (exponential) when there is no histogram.

Demands measured under light load are what the model wants; a ledger recorded under
overload carries queueing inside its hold times.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidConfig
from ..results import Histogram
from ._capacity import CapacityModel, Resource
from ._topology import Call, Endpoint, ServiceTime, Station, Topology, Work

__all__ = ["LedgerModel", "capacity_from_ledger"]

_US = 1e-6


@dataclass(frozen=True, slots=True)
class LedgerModel:
    """What :func:`capacity_from_ledger` builds: the inputs of :class:`CapacityModel`
    (and of the simulator), plus ``notes`` on what the ledger could not tell."""

    resources: tuple[Resource, ...]
    demands_s: dict[str, dict[str, float]]
    visits: dict[str, dict[str, float]]
    mix: dict[str, float]
    notes: tuple[str, ...]
    #: Per endpoint and resource, the per-request demand's distribution as 100 evenly
    #: spaced quantiles (seconds) when the ledger kept its histogram; the simulator's
    #: empirical service times.
    samples: dict[str, dict[str, tuple[float, ...]]] = field(default_factory=dict)

    def model(self, *, arrival_cv2: float = 1.0) -> CapacityModel:
        return CapacityModel(
            self.resources, self.demands_s, self.mix, visits=self.visits, arrival_cv2=arrival_cv2
        )

    def with_capacity(self, topology: Topology) -> tuple[LedgerModel, dict[str, int]]:
        """This model with the servers ``topology`` gives its resources in place of what the
        probe recorded, and which it changed (resource name -> servers).

        A resource takes the server count of the topology's station or pool named after it
        as :meth:`topology` names them: ``loop`` (worker processes), ``db-pool`` (or the
        database's own name, or ``db``) for the connection pool, ``threads``, and
        ``<host>-pool`` for an HTTP client pool (``127-0-0-1-9001-pool``). Stations with
        no such counterpart, or with unlimited servers, change nothing."""
        by_name = {st.name: st.servers for st in topology.stations}
        changed: dict[str, int] = {}
        resources = []
        for res in self.resources:
            name = _station_name(res, {})
            candidates = {
                "db_pool": [f"{name}-pool", _slug(res.name), name],
                "client_pool": [f"{name}-pool", name],
            }.get(res.kind, [name])
            servers = next((by_name[c] for c in candidates if by_name.get(c) is not None), None)
            if servers is not None and servers != res.servers:
                changed[res.name] = servers
                resources.append(dataclasses.replace(res, servers=servers))
            else:
                resources.append(res)
        return dataclasses.replace(self, resources=tuple(resources)), changed

    def topology(
        self,
        routes: Mapping[str, str] | None = None,
        *,
        names: Mapping[str, str] | None = None,
    ) -> Topology:
        """The same service as a simulator :class:`Topology`, for cascades no formula gives.

        An async service: a request is a visit to station ``app`` (unbounded: one task per
        request) whose endpoint, named after the ledger's (``GET /products/{id}`` ->
        ``get-products-id``), calls in turn: ``loop`` (``workers`` servers; the loop demand,
        one visit, as the capacity model counts it), ``db`` through ``db-pool`` (each
        checkout holds a connection for the mean hold time), ``threads``, and each HTTP
        dependency through its client pool (each call takes the mean time per call). Service
        times follow the endpoint's measured distribution (empirical, scaled to the mean
        demand) when the ledger kept its histogram, else a lognormal with the resource's
        variability (exponential when that is unknown); calls have no timeout and no retry,
        as the ledger cannot tell them.

        ``routes`` maps the traffic class or request names of a scenario to ledger endpoints
        (default: each endpoint's own station name); ``names`` renames resources (a host
        ``"127.0.0.1:9001"`` -> ``"payments"``, so a scenario's faults on the proxy named
        ``payments`` hit it)."""
        return _ledger_topology(self, routes or {}, names or {})


def _demand(ep: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = (ep.get("demands") or {}).get(key) or {}
    return value if isinstance(value, Mapping) else {}


def _mean(ep: Mapping[str, Any], key: str) -> float:
    value = _demand(ep, key).get("mean")
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else 0.0


def _total(value: object) -> float:
    """A dependency figure's total over the endpoint's requests: the ledger keeps a
    distribution (``{"total": ...}``) per dependency; a plain number is taken as the total."""
    if isinstance(value, Mapping):
        value = value.get("total")
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return 0.0


def _histogram(ep: Mapping[str, Any], key: str) -> Histogram | None:
    """A demand's histogram (microseconds), or None when the ledger kept none."""
    text = _demand(ep, key).get("hist")
    if not isinstance(text, str):
        return None
    try:
        hist = Histogram.decode(text)
    except ValueError:
        return None
    return hist if hist.count else None


def _moments(hist: Histogram | None) -> tuple[float, float] | None:
    """(mean, second moment) in seconds of a demand's histogram."""
    if hist is None:
        return None
    mean = hist.mean * _US
    std = hist.stddev * _US
    return mean, std * std + mean * mean


def _quantiles(hist: Histogram, n: int = 100) -> tuple[float, ...]:
    """``n`` evenly spaced quantiles (seconds) of a demand's histogram."""
    points = hist.percentiles([100.0 * (i + 0.5) / n for i in range(n)])
    return tuple(p * _US for p in points)


def _cv2(parts: list[tuple[float, tuple[float, float] | None]]) -> float:
    """The squared coefficient of variation of a mixture: ``parts`` are (weight, moments)."""
    total = sum(w for w, m in parts if m is not None)
    if not total > 0:
        return 1.0
    m1 = sum(w * m[0] for w, m in parts if m is not None) / total
    m2 = sum(w * m[1] for w, m in parts if m is not None) / total
    if not m1 > 0:
        return 1.0
    return max(m2 / (m1 * m1) - 1.0, 0.0)


def _overhead_s(
    endpoints: Mapping[str, Any], capacity: Mapping[str, Any], notes: list[str]
) -> float:
    """Process CPU per request not seen in the requests' own steps (see the module doc)."""
    process = capacity.get("process_cpu")
    if not isinstance(process, Mapping):
        return 0.0
    cpu_s, n = process.get("cpu_s"), process.get("requests")
    if not isinstance(cpu_s, int | float) or not isinstance(n, int) or n <= 0:
        return 0.0
    total = sum(float(ep.get("requests") or 0) for ep in endpoints.values())
    steps = sum(_total(_demand(ep, "cpu_s")) for ep in endpoints.values())
    if not total > 0:
        return 0.0
    extra = float(cpu_s) / n - steps / total
    if extra > 0:
        notes.append(
            f"loop demand includes {1000 * extra:.2f} ms per request of process CPU outside "
            "the requests' own steps"
        )
    return max(extra, 0.0)


def capacity_from_ledger(
    ledger: Mapping[str, Any],
    *,
    mix: Mapping[str, float] | None = None,
    workers: int = 1,
    http_connections: int = 100,
) -> LedgerModel:
    """The capacity model of the service a ledger describes (see the module doc).

    ``mix``: endpoint (``"GET /products/{id}"``) -> weight; default the ledger's request
    counts. ``workers``: worker processes, each with its own event loop. Raises
    InvalidConfig naming the field when the ledger has no endpoints or the mix names an
    endpoint the ledger does not have."""
    owner = "capacity_from_ledger"
    endpoints = ledger.get("endpoints") if isinstance(ledger, Mapping) else None
    if not isinstance(endpoints, Mapping) or not endpoints:
        raise InvalidConfig(owner, "ledger.endpoints", endpoints, "a ledger with endpoints")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidConfig(owner, "workers", workers, "an integer >= 1")
    if mix is None:
        weights = {e: float(ep.get("requests") or 0) for e, ep in endpoints.items()}
    else:
        for e in mix:
            if e not in endpoints:
                raise InvalidConfig(
                    owner, "mix", e, "an endpoint of the ledger: " + ", ".join(endpoints)
                )
        weights = {e: float(w) for e, w in mix.items()}
    weights = {e: w for e, w in weights.items() if w > 0}
    if not weights:
        raise InvalidConfig(owner, "mix", mix, "at least one endpoint with a weight > 0")
    notes: list[str] = []
    capacity = ledger.get("capacity") or {}
    resources: list[Resource] = []
    demands: dict[str, dict[str, float]] = {e: {} for e in weights}
    samples: dict[str, dict[str, tuple[float, ...]]] = {}
    visits: dict[str, dict[str, float]] = {e: {} for e in weights}
    total_w = sum(weights.values())

    def add(
        name: str, kind: str, servers: int, key: str, visit_key: str | None, *, extra: float = 0.0
    ) -> None:
        parts: list[tuple[float, tuple[float, float] | None]] = []
        any_demand = False
        for e, w in weights.items():
            ep = endpoints[e]
            d = _mean(ep, key)
            if d <= 0:
                continue
            d += extra
            any_demand = True
            demands[e][name] = d
            n = _mean(ep, visit_key) if visit_key else 1.0
            visits[e][name] = n if n > 0 else 1.0
            hist = _histogram(ep, key)
            parts.append((w / total_w * visits[e][name], _moments(hist)))
            if hist is not None:
                samples.setdefault(e, {})[name] = _quantiles(hist)
        if any_demand:
            resources.append(Resource(name, kind, servers, service_cv2=_cv2(parts)))

    # The event loop: the loop monitor's busy time; CPU time when it did not run.
    loop_key = "loop_busy_s"
    if not any(_mean(endpoints[e], "loop_steps") > 0 for e in weights):
        loop_key = "cpu_s"
        notes.append("no event-loop measurements in the ledger: CPU time stands for loop time")
    add("loop", "cpu", workers, loop_key, None, extra=_overhead_s(endpoints, capacity, notes))

    pools: list[tuple[str, int]] = []
    for library, by_db in (capacity.get("pools") or {}).items():
        if not isinstance(by_db, Mapping):
            continue
        for db, settings in by_db.items():
            if not isinstance(settings, Mapping):
                continue
            size = settings.get("pool_size", settings.get("max_size"))
            if isinstance(size, int) and size > 0:
                overflow = settings.get("max_overflow") or 0
                overflow = overflow if isinstance(overflow, int) and overflow > 0 else 0
                pools.append((str(db), size + overflow))
            else:
                notes.append(f"{library} pool {db}: no size in the ledger; left out")
    if pools:
        if len(pools) > 1:
            notes.append(
                f"{len(pools)} pools: the ledger keeps one hold time per request, "
                f"charged to {pools[0][0]!r}"
            )
        add(pools[0][0], "db_pool", pools[0][1], "pool_hold_s", "pool_checkouts")
    elif any(_mean(endpoints[e], "pool_hold_s") > 0 for e in weights):
        notes.append("connections were held but the pool size is unknown; pool left out")

    limiter = capacity.get("thread_limiter") or {}
    tokens = limiter.get("total_tokens") if isinstance(limiter, Mapping) else None
    add(
        "threads",
        "threads",
        int(tokens) if isinstance(tokens, int | float) and tokens >= 1 else 40,
        "thread_run_s",
        None,
    )

    hosts: set[str] = set()
    for e in weights:
        deps = endpoints[e].get("dependencies") or {}
        if isinstance(deps, Mapping):
            hosts.update(str(h) for h in deps)
    for host in sorted(hosts):
        name = host
        parts: list[tuple[float, tuple[float, float] | None]] = []
        for e, w in weights.items():
            ep = endpoints[e]
            dep = (ep.get("dependencies") or {}).get(host)
            requests = float(ep.get("requests") or 0)
            if not isinstance(dep, Mapping) or not requests:
                continue
            time_s = _total(dep.get("time_s")) / requests
            calls = _total(dep.get("calls")) / requests
            if time_s > 0:
                demands[e][name] = time_s
                visits[e][name] = calls if calls > 0 else 1.0
                parts.append((w / total_w, None))
        if parts:
            resources.append(Resource(name, "client_pool", http_connections, service_cv2=1.0))

    if not resources:
        raise InvalidConfig(owner, "ledger", "no demands", "a ledger with measured demands")
    return LedgerModel(
        resources=tuple(resources),
        demands_s=demands,
        visits=visits,
        mix=dict(weights),
        notes=tuple(notes),
        samples=samples,
    )


def _slug(text: str) -> str:
    """A topology name for a ledger name: ``GET /products/{id}`` -> ``get-products-id``."""
    out = re.sub(r"[^A-Za-z0-9_]+", "-", text).strip("-").lower()[:64].strip("-")
    return out or "x"


def _station_name(res: Resource, names: Mapping[str, str]) -> str:
    """The topology's station for a resource: ``loop``, ``threads``, ``db`` (the one pool
    the model charges) or the host, renamed by ``names``; 58 characters at most, so that
    ``<name>-pool`` is a name too."""
    default = "db" if res.kind == "db_pool" else res.name
    return _slug(names.get(res.name, default))[:58].strip("-") or "x"


def _service(mean_s: float, cv2: float, quantiles: tuple[float, ...] | None) -> ServiceTime:
    """Per-visit service: the endpoint's measured distribution scaled to ``mean_s`` when
    the ledger kept it (empirical), else lognormal with the resource's variability."""
    if quantiles:
        total = math.fsum(quantiles)
        if total > 0:
            k = mean_s * len(quantiles) / total
            return ServiceTime.empirical([q * k for q in quantiles])
    if abs(cv2 - 1.0) < 1e-9:
        return ServiceTime.exponential(mean_s)
    return ServiceTime.lognormal(mean_s, math.sqrt(max(cv2, 0.0)))


def _ledger_topology(
    lm: LedgerModel, routes: Mapping[str, str], names: Mapping[str, str]
) -> Topology:
    slugs: dict[str, str] = {}
    for e in lm.demands_s:
        slug = _slug(e)
        while slug in slugs.values():
            slug = (slug[:60] + "-" + str(len(slugs)))[:64]
        slugs[e] = slug
    stations: list[Station] = []
    app_steps: dict[str, list[Work | Call]] = {e: [] for e in lm.demands_s}
    for res in lm.resources:
        name = _station_name(res, names)
        endpoints: dict[str, Endpoint] = {}
        pool: str | None = None
        if res.kind in ("db_pool", "client_pool"):
            pool = f"{name}-pool"
            stations.append(Station(name=pool, servers=res.servers))
        for e, by_res in lm.demands_s.items():
            demand = by_res.get(res.name, 0.0)
            if demand <= 0:
                continue
            n = lm.visits.get(e, {}).get(res.name, 1.0) if pool is not None else 1.0
            calls = max(1, round(n))
            work = _service(demand / calls, res.service_cv2, lm.samples.get(e, {}).get(res.name))
            endpoints[slugs[e]] = Endpoint(steps=(Work(work),))
            app_steps[e].extend(Call(target=f"{name}.{slugs[e]}", pool=pool) for _ in range(calls))
        servers = None if pool is not None else res.servers
        stations.append(Station(name=name, servers=servers, endpoints=endpoints))
    app = Station(
        name="app",
        servers=None,
        endpoints={slugs[e]: Endpoint(steps=tuple(steps)) for e, steps in app_steps.items()},
    )
    table = {slugs[e]: f"app.{slugs[e]}" for e in lm.demands_s}
    for key, e in routes.items():
        if e not in slugs:
            raise InvalidConfig(
                "LedgerModel.topology", f"routes[{key!r}]", e, "an endpoint of the ledger"
            )
        table[key] = f"app.{slugs[e]}"
    return Topology(stations=(app, *stations), routes=table)
