"""The modelled system the simulator runs: stations, their endpoints, calls and guard policies.

A :class:`Topology` is a small graph of frozen, validated dataclasses:

- a :class:`Station` has ``servers`` identical servers (``None``: as many as needed, a pure
  delay such as a remote dependency), a wait queue (``discipline`` fifo, lifo or
  adaptive_lifo; an optional ``max_queue``; an optional fixed ``queue_timeout_s`` or a
  controlled-delay timeout, ``codel``) and named :class:`Endpoint` s. A visit to an endpoint
  holds one server from the moment it leaves the queue until its last step ends;
- an :class:`Endpoint` is a sequence of steps: :class:`Work` (the server is busy for a time
  drawn from a :class:`ServiceTime`) and :class:`Call` (a synchronous call to another
  endpoint: the server stays held while the call runs, which is how a slow dependency
  exhausts its callers' workers); with probability ``error_rate`` it answers an error;
- a connection pool is a station too: ``Call(pool="db_pool")`` takes one of its servers
  (connections) before each attempt, waiting in its queue when none is free, and holds it
  until the callee answers (even when the caller gave up first);
- :class:`PolicySpec` s are named guard policy configurations (a ``Retry``, a
  ``RetryBudget``, a ``CircuitBreaker``, an ``AdaptiveThrottle``, a ``Bulkhead``, a
  ``ConcurrencyLimit``, a ``RateLimit``, a ``Cache``) that calls refer to by name; the
  simulator builds the real objects from them on its virtual clock, one per name and run,
  so calls naming the same policy share it;
- ``routes`` map traffic class names to the endpoint their requests enter.

:func:`parse_topology` and :func:`load_topology` read the TOML form::

    [stations.web]
    servers = 8
    discipline = "adaptive_lifo"          # fifo (default) | lifo | adaptive_lifo
    queue_timeout = "codel"               # none (default) | codel | a duration
    max_queue = 500
    abandoned = "drop"                    # keep (default) | drop

    [stations.web.endpoints.products]     # steps in order (an array of tables)
    error_rate = 0.0
    [[stations.web.endpoints.products.steps]]
    work = { dist = "exponential", mean = "2ms" }
    [[stations.web.endpoints.products.steps]]
    call = "db.query"
    pool = "db_pool"
    timeout = "500ms"
    retry = "db_retry"
    retry_on = ["timeout", "error", "rejected"]
    policies = ["db_breaker"]
    [[stations.web.endpoints.products.steps]]
    work = "1ms"                          # a bare duration is a deterministic time

    [stations.web.endpoints.health]       # or inline: steps = [{work = "50us"}]
    steps = [{ work = "50us" }]

    [pools.db_pool]
    size = 10
    timeout = "200ms"                     # how long a call waits for a connection

    [stations.db]
    servers = 4
    [stations.db.endpoints.query]
    steps = [{ work = { dist = "lognormal", mean = "4ms", cv = 1.5 } }]

    [stations.cache]
    servers = 2
    service = { dist = "exponential", mean = "200us" }   # one endpoint, "default"

    [dependencies.payments]               # servers = "inf" unless given
    latency = { dist = "empirical", values = ["80ms", "95ms", "240ms"] }
    error_rate = 0.01

    [policies.db_retry]
    kind = "retry"
    attempts = 3
    base = "10ms"
    budget = "db_budget"

    [policies.db_budget]
    kind = "retry_budget"                 # type = "ratio" (default) | "token_bucket"
    ratio = 0.1

    [policies.db_breaker]
    kind = "circuit_breaker"
    minimum_calls = 20
    open = "5s"

    [routes]
    shoppers = "web.products"

Every error is a one-line :class:`~brownout.errors.ScenarioError` naming the field as the
file spells it (``stations.web.endpoints.products.steps[1].timeout``), the value and what is
allowed. Built in Python, the dataclasses raise :class:`~brownout.errors.InvalidConfig`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import os
import random
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from types import MappingProxyType
from typing import Any

from .. import _validate as v
from .. import units
from ..errors import InvalidConfig, ScenarioError
from ..scenario._parse import parse_toml_document, read_text_file

__all__ = [
    "ABANDONED",
    "CALL_OUTCOMES",
    "DISCIPLINES",
    "DISTRIBUTIONS",
    "POLICY_KINDS",
    "Call",
    "Endpoint",
    "PolicySpec",
    "ServiceTime",
    "Station",
    "Topology",
    "Work",
    "load_topology",
    "parse_topology",
]

DISTRIBUTIONS = ("deterministic", "exponential", "lognormal", "empirical")
DISCIPLINES = ("fifo", "lifo", "adaptive_lifo")
ABANDONED = ("keep", "drop")
CALL_OUTCOMES = ("timeout", "error", "rejected")
ON_FAILURE = ("fail", "continue")
POLICY_KINDS = (
    "retry",
    "retry_budget",
    "circuit_breaker",
    "adaptive_throttle",
    "bulkhead",
    "concurrency_limit",
    "rate_limit",
    "cache",
)
# Kinds a call lists in ``policies`` (retry and cache have their own fields).
CALL_POLICY_KINDS = (
    "circuit_breaker",
    "adaptive_throttle",
    "bulkhead",
    "concurrency_limit",
    "rate_limit",
)
DEFAULT_ENDPOINT = "default"
MAX_SERVERS = 1_000_000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_NAME_ALLOWED = "a name of 1-64 letters, digits, '_' or '-' starting with a letter or digit"


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def _name(owner: str, arg: str, value: object) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidConfig(owner, arg, value, _NAME_ALLOWED)
    return value


def _optional_duration(owner: str, arg: str, value: object) -> float | None:
    if value is None:
        return None
    return v.positive(owner, arg, value)


# -- service times ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceTime:
    """A distribution of durations, in seconds.

    - ``deterministic``: always ``mean_s``;
    - ``exponential``: mean ``mean_s`` (cv 1), drawn as ``-ln(1 - U) * mean_s``;
    - ``lognormal``: mean ``mean_s`` and coefficient of variation ``cv`` (std / mean):
      ``exp(mu + sigma * Z)`` with ``sigma**2 = ln(1 + cv**2)``, ``mu = ln(mean_s) - sigma**2/2``;
    - ``empirical``: one of ``values_s`` uniformly at random (for instance the durations a
      probe ledger recorded); ``mean_s`` is their mean.

    Build one with :meth:`deterministic`, :meth:`exponential`, :meth:`lognormal` or
    :meth:`empirical`.
    """

    kind: str
    mean_s: float
    cv: float = 1.0
    values_s: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        owner = "ServiceTime"
        v.one_of(owner, "kind", self.kind, DISTRIBUTIONS)
        if self.kind == "empirical":
            values = self.values_s
            if not isinstance(values, tuple | list) or not values:
                raise InvalidConfig(owner, "values_s", values, "a non-empty list of durations >= 0")
            checked = tuple(v.non_negative(owner, "values_s", x) for x in values)
            _set(self, "values_s", checked)
            _set(self, "mean_s", math.fsum(checked) / len(checked))
        else:
            if self.values_s:
                raise InvalidConfig(
                    owner, "values_s", self.values_s, "empty unless kind='empirical'"
                )
            _set(self, "mean_s", v.non_negative(owner, "mean_s", self.mean_s))
        if self.kind == "lognormal":
            _set(self, "cv", v.non_negative(owner, "cv", self.cv))
        elif self.kind == "exponential":
            _set(self, "cv", 1.0)
        elif self.kind == "deterministic":
            _set(self, "cv", 0.0)
        else:
            mean = self.mean_s
            var = math.fsum((x - mean) ** 2 for x in self.values_s) / len(self.values_s)
            _set(self, "cv", math.sqrt(var) / mean if mean > 0 else 0.0)

    @classmethod
    def deterministic(cls, seconds: float) -> ServiceTime:
        return cls(kind="deterministic", mean_s=seconds)

    @classmethod
    def exponential(cls, mean_s: float) -> ServiceTime:
        return cls(kind="exponential", mean_s=mean_s)

    @classmethod
    def lognormal(cls, mean_s: float, cv: float) -> ServiceTime:
        return cls(kind="lognormal", mean_s=mean_s, cv=cv)

    @classmethod
    def empirical(cls, values_s: Sequence[float]) -> ServiceTime:
        return cls(kind="empirical", mean_s=0.0, values_s=tuple(values_s))

    def sampler(self, rng: random.Random) -> Callable[[], float]:
        """A function drawing one duration (seconds) per call from ``rng``."""
        mean = self.mean_s
        if self.kind == "deterministic" or mean == 0.0:
            return repeat(mean).__next__
        rand = rng.random
        log = math.log
        if self.kind == "exponential":

            def exponential() -> float:
                return -log(1.0 - rand()) * mean

            return exponential
        if self.kind == "lognormal":
            if self.cv == 0.0:
                return repeat(mean).__next__
            sigma2 = math.log1p(self.cv * self.cv)
            sigma = math.sqrt(sigma2)
            mu = math.log(mean) - sigma2 / 2
            exp, sqrt, cos, sin, tau = math.exp, math.sqrt, math.cos, math.sin, math.tau
            spare: list[float] = []

            def lognormal() -> float:
                # Box-Muller: two independent normals per pair of uniforms; keep one.
                if spare:
                    return spare.pop()
                angle = rand() * tau
                radius = sigma * sqrt(-2.0 * log(1.0 - rand()))
                spare.append(exp(mu + radius * sin(angle)))
                return exp(mu + radius * cos(angle))

            return lognormal
        values = self.values_s
        n = len(values)

        def empirical() -> float:
            return values[int(rand() * n)]

        return empirical


# -- steps and endpoints ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Work:
    """The server is busy for a duration drawn from ``service`` (seconds)."""

    service: ServiceTime

    def __post_init__(self) -> None:
        if not isinstance(self.service, ServiceTime):
            raise InvalidConfig("Work", "service", self.service, "a ServiceTime")


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """A synchronous call to the endpoint ``target`` (``"station.endpoint"``, or
    ``"station"`` for a station with one endpoint); the calling server waits for it.

    - ``timeout_s``: each attempt's timeout (None: wait for the answer however long);
    - ``retry``: the name of a ``retry`` policy (None: one attempt); an attempt that failed
      with an outcome in ``retry_on`` (``"timeout"``, ``"error"``, ``"rejected"``: shed by
      the callee) is retried as that policy plans (backoff, attempts, budget). Refusals by
      the caller's own policies (open breaker, throttle...) are never retried;
    - ``policies``: names of circuit_breaker, adaptive_throttle, bulkhead,
      concurrency_limit and rate_limit policies, asked before each attempt;
    - ``pool``: a station whose server (a connection) each attempt takes before it is sent
      (waiting in the pool's queue, within ``timeout_s``) and holds until the callee
      answers, even when the caller gave up first;
    - ``cache``: the name of a ``cache`` policy: a fresh entry for the drawn key answers
      the call without sending it;
    - ``on_failure``: ``"fail"`` (the visit fails: an error, or a rejection when the call
      was shed or refused) or ``"continue"`` (the failure is ignored: a fallback).
    """

    target: str
    timeout_s: float | None = None
    retry: str | None = None
    retry_on: frozenset[str] = frozenset(CALL_OUTCOMES)
    policies: tuple[str, ...] = ()
    pool: str | None = None
    cache: str | None = None
    on_failure: str = "fail"

    def __post_init__(self) -> None:
        owner = "Call"
        if not isinstance(self.target, str) or not self.target:
            raise InvalidConfig(owner, "target", self.target, "'station.endpoint' or 'station'")
        _set(self, "timeout_s", _optional_duration(owner, "timeout_s", self.timeout_s))
        for arg in ("retry", "pool", "cache"):
            value = getattr(self, arg)
            if value is not None:
                _name(owner, arg, value)
        raw: object = self.retry_on
        allowed = "a set of 'timeout', 'error', 'rejected'"
        if isinstance(raw, str) or not isinstance(raw, frozenset | set | tuple | list):
            raise InvalidConfig(owner, "retry_on", raw, allowed)
        outcomes = frozenset(raw)
        if not outcomes <= frozenset(CALL_OUTCOMES):
            raise InvalidConfig(owner, "retry_on", raw, allowed)
        _set(self, "retry_on", outcomes)
        if not isinstance(self.policies, tuple | list):
            raise InvalidConfig(owner, "policies", self.policies, "a tuple of policy names")
        _set(self, "policies", tuple(_name(owner, "policies", p) for p in self.policies))
        v.one_of(owner, "on_failure", self.on_failure, ON_FAILURE)


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """What a visit does while it holds a server: ``steps`` in order, then it answers OK,
    or an error with probability ``error_rate``."""

    steps: tuple[Work | Call, ...]
    error_rate: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.steps, tuple | list) or not all(
            isinstance(s, Work | Call) for s in self.steps
        ):
            raise InvalidConfig("Endpoint", "steps", self.steps, "a tuple of Work and Call steps")
        _set(self, "steps", tuple(self.steps))
        _set(self, "error_rate", v.ratio("Endpoint", "error_rate", self.error_rate))


@dataclass(frozen=True, slots=True, kw_only=True)
class Station:
    """``servers`` identical servers (None: unlimited) in front of one wait queue.

    Queue: a visit that finds every server busy waits, unless ``max_queue`` visits already
    wait (it is then rejected at once). Order: ``fifo``, ``lifo``, or ``adaptive_lifo``
    (FIFO, but LIFO while a *standing* queue exists: one that has not been empty for
    ``codel_interval_s``; Facebook, "Fail at Scale"). Time limit: ``queue_timeout_s``
    (fixed), or ``codel=True`` for the controlled-delay timeout of
    ``brownout.ConcurrencyLimit``: with ``E`` the time the queue last became non-empty, a
    visit enqueued at ``t`` is rejected at ``max(E + codel_interval_s, t + codel_target_s)``
    (100 ms while the queue keeps emptying, 5 ms under a standing queue). Expiries are
    enforced by a timer, not only when a server frees.

    ``abandoned``: what a server does with work whose caller gave up (its deadline, the
    earliest timeout of the callers above it, has passed): ``"keep"`` works on it anyway;
    ``"drop"`` discards it when it leaves the queue and stops it between steps, answering an
    error, and does not retry calls past the deadline.
    """

    name: str
    servers: int | None = 1
    endpoints: Mapping[str, Endpoint] = field(default_factory=dict)
    discipline: str = "fifo"
    max_queue: int | None = None
    queue_timeout_s: float | None = None
    codel: bool = False
    codel_target_s: float = 0.005
    codel_interval_s: float = 0.100
    abandoned: str = "keep"

    def __post_init__(self) -> None:
        owner = "Station"
        _name(owner, "name", self.name)
        if self.servers is not None:
            v.int_at_least(owner, "servers", self.servers, 1)
            if self.servers > MAX_SERVERS:
                raise InvalidConfig(
                    owner, "servers", self.servers, f"an integer in 1..{MAX_SERVERS} or None"
                )
        if not isinstance(self.endpoints, Mapping):
            raise InvalidConfig(owner, "endpoints", self.endpoints, "a mapping of name to Endpoint")
        endpoints = {}
        for key, ep in self.endpoints.items():
            _name(owner, "endpoints", key)
            if not isinstance(ep, Endpoint):
                raise InvalidConfig(owner, f"endpoints[{key!r}]", ep, "an Endpoint")
            endpoints[key] = ep
        _set(self, "endpoints", MappingProxyType(endpoints))
        v.one_of(owner, "discipline", self.discipline, DISCIPLINES)
        if self.max_queue is not None:
            v.int_at_least(owner, "max_queue", self.max_queue, 0)
        _set(
            self,
            "queue_timeout_s",
            _optional_duration(owner, "queue_timeout_s", self.queue_timeout_s),
        )
        if not isinstance(self.codel, bool):
            raise InvalidConfig(owner, "codel", self.codel, "True or False")
        if self.codel and self.queue_timeout_s is not None:
            raise InvalidConfig(
                owner, "queue_timeout_s", self.queue_timeout_s, "None when codel=True"
            )
        _set(self, "codel_target_s", v.positive(owner, "codel_target_s", self.codel_target_s))
        _set(self, "codel_interval_s", v.positive(owner, "codel_interval_s", self.codel_interval_s))
        if self.codel_target_s > self.codel_interval_s:
            raise InvalidConfig(
                owner,
                "codel_target_s",
                self.codel_target_s,
                f"<= codel_interval_s ({self.codel_interval_s:g})",
            )
        v.one_of(owner, "abandoned", self.abandoned, ABANDONED)

    @classmethod
    def simple(cls, name: str, servers: int | None, service: ServiceTime, **kwargs: Any) -> Station:
        """A station with one endpoint, ``"default"``, that works for ``service``."""
        endpoint = Endpoint(steps=(Work(service),), error_rate=kwargs.pop("error_rate", 0.0))
        return cls(name=name, servers=servers, endpoints={DEFAULT_ENDPOINT: endpoint}, **kwargs)


# -- policies --------------------------------------------------------------------------


def _policy_classes() -> dict[str, Any]:
    from ..guard._breaker import CircuitBreaker
    from ..guard._bulkhead import Bulkhead
    from ..guard._cache import Cache
    from ..guard._limit import ConcurrencyLimit
    from ..guard._ratelimit import RateLimit
    from ..guard._retry import Retry
    from ..guard._throttle import AdaptiveThrottle

    return {
        "retry": Retry,
        "circuit_breaker": CircuitBreaker,
        "adaptive_throttle": AdaptiveThrottle,
        "bulkhead": Bulkhead,
        "concurrency_limit": ConcurrencyLimit,
        "rate_limit": RateLimit,
        "cache": Cache,
    }


# Parameters the simulator sets itself (or that make no sense in virtual time).
_RESERVED = frozenset({"clock", "events", "seed", "store"})
# Cache parameters only the simulator reads: how keys are drawn.
CACHE_KEY_PARAMS = ("keys", "zipf_s")


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """A guard policy configuration: ``kind`` (one of :data:`POLICY_KINDS`) and the keyword
    arguments of its class (``Retry``, ``CircuitBreaker``...), Python names and units.

    The simulator builds the real object per run with ``clock`` set to its virtual clock
    and ``seed`` derived from the run's seed. Special parameters:

    - ``retry_budget``: ``type`` = ``"ratio"`` (``retry_ratio``, ``min_per_s``,
      ``window_s``) or ``"token_bucket"`` (``max_tokens``, ``token_ratio``);
    - ``retry``: ``budget`` is the name of a ``retry_budget`` policy (shared by every retry
      naming it), a nested ``PolicySpec`` (a budget of its own), or None;
    - ``cache``: ``keys`` (how many distinct keys calls draw from, default 1000) and
      ``zipf_s`` (0: uniform, else Zipf with that exponent) say which key a call looks up;
      ``max_entries`` defaults to ``keys``.

    :meth:`of` makes the spec of an existing policy object, so the configuration the
    application runs is the one simulated.
    """

    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        v.one_of("PolicySpec", "kind", self.kind, POLICY_KINDS)
        if not isinstance(self.params, Mapping) or not all(isinstance(k, str) for k in self.params):
            raise InvalidConfig("PolicySpec", "params", self.params, "a mapping of str to values")
        reserved = _RESERVED & set(self.params)
        if reserved:
            name = sorted(reserved)[0]
            raise InvalidConfig(
                "PolicySpec",
                f"params[{name!r}]",
                self.params[name],
                "absent: the simulator sets clock, events, seed and store itself",
            )
        _set(self, "params", MappingProxyType(dict(self.params)))

    @classmethod
    def of(cls, policy: object) -> PolicySpec:
        """The spec of a configured guard policy (its init arguments but clock, events,
        seed and store)."""
        from ..guard._budget import RatioBudget, TokenBucketBudget

        if isinstance(policy, RatioBudget):
            return cls(
                "retry_budget",
                {
                    "type": "ratio",
                    "retry_ratio": policy.retry_ratio,
                    "min_per_s": policy.min_per_s,
                    "window_s": policy.window_s,
                    "name": policy.name,
                },
            )
        if isinstance(policy, TokenBucketBudget):
            return cls(
                "retry_budget",
                {
                    "type": "token_bucket",
                    "max_tokens": policy.max_tokens,
                    "token_ratio": policy.token_ratio,
                    "name": policy.name,
                },
            )
        kind = getattr(policy, "kind", None)
        if kind not in _policy_classes() or not dataclasses.is_dataclass(policy):
            raise InvalidConfig(
                "PolicySpec.of",
                "policy",
                policy,
                "a Retry, RetryBudget, CircuitBreaker, AdaptiveThrottle, Bulkhead, "
                "ConcurrencyLimit, RateLimit or Cache",
            )
        params: dict[str, Any] = {}
        for f in dataclasses.fields(policy):
            if not f.init or f.name in _RESERVED:
                continue
            value = getattr(policy, f.name)
            if f.name == "budget" and value is not None:
                value = cls.of(value)
            params[f.name] = value
        if kind == "cache":
            params.setdefault("keys", params.get("max_entries") or 1000)
        return cls(kind, params)

    def build(
        self,
        *,
        clock: object,
        seed: int,
        budgets: Mapping[str, object] | None = None,
    ) -> Any:
        """The real policy object on ``clock`` (``budgets``: built retry budgets by name)."""
        from ..guard._budget import RetryBudget
        from ..guard._cache import MemoryCacheStore

        params = dict(self.params)
        if self.kind == "retry_budget":
            kind = params.pop("type", "ratio")
            v.one_of("RetryBudget", "type", kind, ("ratio", "token_bucket"))
            if kind == "ratio":
                ratio = params.pop("retry_ratio", params.pop("ratio", 0.1))
                return RetryBudget.ratio(ratio, **params)
            return RetryBudget.token_bucket(**params)
        cls = _policy_classes()[self.kind]
        if self.kind == "retry":
            budget = params.get("budget")
            if isinstance(budget, str):
                if budgets is None or budget not in budgets:
                    raise InvalidConfig(
                        "Retry", "budget", budget, "the name of a retry_budget policy"
                    )
                params["budget"] = budgets[budget]
            elif isinstance(budget, PolicySpec):
                if budget.kind != "retry_budget":
                    raise InvalidConfig("Retry", "budget", budget, "a retry_budget PolicySpec")
                params["budget"] = budget.build(clock=clock, seed=seed)
            params["seed"] = seed
        elif self.kind in ("adaptive_throttle", "concurrency_limit"):
            params["seed"] = seed
        elif self.kind == "cache":
            keys = params.pop("keys", 1000)
            params.pop("zipf_s", None)
            v.int_at_least("Cache", "keys", keys, 1)
            entries = params.pop("max_entries", None) or keys
            params["store"] = MemoryCacheStore(entries)
            params["seed"] = seed
        elif self.kind == "bulkhead" and params.get("max_queue", 0) != 0:
            raise InvalidConfig(
                "Bulkhead",
                "max_queue",
                params["max_queue"],
                "0 in the simulator (a waiting Bulkhead blocks a thread; model a bulkhead "
                "with a queue as a pool station)",
            )
        return cls(clock=clock, **params)


# -- topology --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Topology:
    """Stations, named policies and routes (traffic class name -> endpoint reference).

    Checked when built: unique station names, every call target, pool, retry, cache and
    policy name resolves to the right kind, every policy configuration builds, and no
    endpoint calls itself through any chain of calls.
    """

    stations: tuple[Station, ...]
    policies: Mapping[str, PolicySpec] = field(default_factory=dict)
    routes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        owner = "Topology"
        if not isinstance(self.stations, tuple | list) or not all(
            isinstance(s, Station) for s in self.stations
        ):
            raise InvalidConfig(owner, "stations", self.stations, "a tuple of Station")
        _set(self, "stations", tuple(self.stations))
        names = [s.name for s in self.stations]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise InvalidConfig(owner, "stations", name, "stations with distinct names")
        if not isinstance(self.policies, Mapping):
            raise InvalidConfig(owner, "policies", self.policies, "a mapping of name to PolicySpec")
        for key, spec in self.policies.items():
            _name(owner, "policies", key)
            if not isinstance(spec, PolicySpec):
                raise InvalidConfig(owner, f"policies[{key!r}]", spec, "a PolicySpec")
        _set(self, "policies", MappingProxyType(dict(self.policies)))
        if not isinstance(self.routes, Mapping):
            raise InvalidConfig(owner, "routes", self.routes, "a mapping of class name to endpoint")
        _set(self, "routes", MappingProxyType(dict(self.routes)))
        self._check_policies()
        for st in self.stations:
            for ep_name, ep in st.endpoints.items():
                for i, step in enumerate(ep.steps):
                    if isinstance(step, Call):
                        self._check_call(f"{st.name}.{ep_name}.steps[{i}]", step)
        for cls_name, ref in self.routes.items():
            self.endpoint(ref, owner=owner, arg=f"routes[{cls_name!r}]")
        self._check_cycles()

    # -- lookups -------------------------------------------------------------------------

    def station(self, name: str) -> Station:
        for st in self.stations:
            if st.name == name:
                return st
        raise InvalidConfig(
            "Topology", "station", name, "one of " + ", ".join(repr(s.name) for s in self.stations)
        )

    def endpoint(
        self, ref: str, *, owner: str = "Topology", arg: str = "target"
    ) -> tuple[Station, str, Endpoint]:
        """``(station, endpoint name, endpoint)`` of ``"station.endpoint"`` (or of
        ``"station"`` when it has exactly one endpoint)."""
        if not isinstance(ref, str):
            raise InvalidConfig(owner, arg, ref, "'station.endpoint' or 'station'")
        name, _, ep_name = ref.partition(".")
        st = next((s for s in self.stations if s.name == name), None)
        if st is None:
            known = ", ".join(repr(s.name) for s in self.stations) or "none defined"
            raise InvalidConfig(owner, arg, ref, f"an endpoint of a known station ({known})")
        if not ep_name:
            if len(st.endpoints) != 1:
                raise InvalidConfig(
                    owner,
                    arg,
                    ref,
                    f"'{name}.<endpoint>' (station {name!r} has "
                    f"{len(st.endpoints)} endpoints: name one)",
                )
            ep_name = next(iter(st.endpoints))
        ep = st.endpoints.get(ep_name)
        if ep is None:
            known = ", ".join(repr(f"{name}.{e}") for e in st.endpoints) or "none defined"
            raise InvalidConfig(owner, arg, ref, f"a known endpoint ({known})")
        return st, ep_name, ep

    def _policy(self, where: str, arg: str, name: str, kinds: tuple[str, ...]) -> PolicySpec:
        spec = self.policies.get(name)
        if spec is None or spec.kind not in kinds:
            known = [k for k, s in self.policies.items() if s.kind in kinds]
            allowed = f"the name of a {' or '.join(kinds)} policy"
            allowed += f" ({', '.join(map(repr, known))})" if known else " (none defined)"
            raise InvalidConfig(f"Call at {where}", arg, name, allowed)
        return spec

    # -- checks --------------------------------------------------------------------------

    def _check_policies(self) -> None:
        from .._clock import monotonic_clock

        budgets: dict[str, object] = {}
        for name, spec in self.policies.items():
            if spec.kind == "retry_budget":
                budgets[name] = spec.build(clock=monotonic_clock, seed=0)
        for name, spec in self.policies.items():
            if spec.kind == "retry":
                budget = spec.params.get("budget")
                if isinstance(budget, str) and budget not in budgets:
                    known = ", ".join(map(repr, budgets)) or "none defined"
                    raise InvalidConfig(
                        f"policy {name!r}", "budget", budget, f"a retry_budget policy ({known})"
                    )
            if spec.kind != "retry_budget":
                spec.build(clock=monotonic_clock, seed=0, budgets=budgets)
            if spec.kind == "cache":
                zipf = spec.params.get("zipf_s", 0.0)
                v.non_negative(f"policy {name!r}", "zipf_s", zipf)

    def _check_call(self, where: str, call: Call) -> None:
        target, _, _ = self.endpoint(call.target, owner=f"Call at {where}", arg="target")
        if call.pool is not None:
            known = ", ".join(repr(s.name) for s in self.stations if s is not target)
            if call.pool == target.name or all(s.name != call.pool for s in self.stations):
                raise InvalidConfig(
                    f"Call at {where}",
                    "pool",
                    call.pool,
                    f"the name of a station other than the target ({known})",
                )
        if call.retry is not None:
            self._policy(where, "retry", call.retry, ("retry",))
        if call.cache is not None:
            self._policy(where, "cache", call.cache, ("cache",))
        seen: set[str] = set()
        for name in call.policies:
            spec = self._policy(where, "policies", name, CALL_POLICY_KINDS)
            if spec.kind in seen:
                raise InvalidConfig(
                    f"Call at {where}", "policies", call.policies, f"at most one {spec.kind}"
                )
            seen.add(spec.kind)

    def _check_cycles(self) -> None:
        state: dict[tuple[str, str], int] = {}  # 1: on the path, 2: done

        def visit(st: Station, ep_name: str, path: list[str]) -> None:
            key = (st.name, ep_name)
            mark = state.get(key)
            if mark == 2:
                return
            here = f"{st.name}.{ep_name}"
            if mark == 1:
                cycle = " -> ".join([*path[path.index(here) :], here])
                raise InvalidConfig("Topology", "calls", cycle, "calls without a cycle")
            state[key] = 1
            for step in st.endpoints[ep_name].steps:
                if isinstance(step, Call):
                    target, target_ep, _ = self.endpoint(step.target)
                    visit(target, target_ep, [*path, here])
            state[key] = 2

        for st in self.stations:
            for ep_name in st.endpoints:
                visit(st, ep_name, [])


# -- the TOML form ---------------------------------------------------------------------

TOP_KEYS = ("name", "stations", "pools", "dependencies", "policies", "routes")
STATION_KEYS = (
    "servers",
    "discipline",
    "max_queue",
    "queue_timeout",
    "codel_target",
    "codel_interval",
    "abandoned",
    "service",
    "error_rate",
    "endpoints",
)
DEPENDENCY_KEYS = (*STATION_KEYS[:-3], "latency", "error_rate")
POOL_KEYS = ("size", "max_queue", "timeout", "discipline", "abandoned")
ENDPOINT_KEYS = ("steps", "error_rate")
WORK_KEYS = ("work",)
CALL_KEYS = ("call", "timeout", "retry", "retry_on", "policies", "pool", "cache", "on_failure")
SERVICE_KEYS = ("dist", "mean", "cv", "values")

_DURATION, _NUMBER, _INT, _STR, _BOOL, _RATE = "duration", "number", "int", "str", "bool", "rate"
# Per policy kind: TOML key -> (parameter, value type). A duration parameter is ``<key>_s``.
POLICY_KEYS: dict[str, dict[str, tuple[str, str]]] = {
    "retry": {
        "attempts": ("attempts", _INT),
        "base": ("base_s", _DURATION),
        "multiplier": ("multiplier", _NUMBER),
        "cap": ("cap_s", _DURATION),
        "jitter": ("jitter", _STR),
        "budget": ("budget", _STR),
    },
    "retry_budget": {
        "type": ("type", _STR),
        "ratio": ("retry_ratio", _NUMBER),
        "min_per_s": ("min_per_s", _NUMBER),
        "window": ("window_s", _DURATION),
        "max_tokens": ("max_tokens", _NUMBER),
        "token_ratio": ("token_ratio", _NUMBER),
    },
    "circuit_breaker": {
        "window": ("window", _STR),
        "window_size": ("window_size", _INT),
        "minimum_calls": ("minimum_calls", _INT),
        "failure_rate": ("failure_rate", _NUMBER),
        "slow_call_rate": ("slow_call_rate", _NUMBER),
        "slow_call": ("slow_call_s", _DURATION),
        "open": ("open_s", _DURATION),
        "open_growth": ("open_growth", _NUMBER),
        "max_open": ("max_open_s", _DURATION),
        "half_open_calls": ("half_open_calls", _INT),
        "half_open_max": ("half_open_max_s", _DURATION),
    },
    "adaptive_throttle": {
        "k": ("k", _NUMBER),
        "window": ("window_s", _DURATION),
        "max_reject_ratio": ("max_reject_ratio", _NUMBER),
        "timeouts_are_rejections": ("timeouts_are_rejections", _BOOL),
    },
    "bulkhead": {"max_concurrent": ("max_concurrent", _INT)},
    "concurrency_limit": {
        "algorithm": ("algorithm", _STR),
        "initial_limit": ("initial_limit", _INT),
        "min_limit": ("min_limit", _INT),
        "max_limit": ("max_limit", _INT),
    },
    "rate_limit": {"rate": ("rate", _RATE), "burst": ("burst", _INT)},
    "cache": {
        "ttl": ("ttl_s", _DURATION),
        "max_entries": ("max_entries", _INT),
        "keys": ("keys", _INT),
        "zipf_s": ("zipf_s", _NUMBER),
    },
}


def _unknown(path: str, key: str, value: object, known: Sequence[str]) -> ScenarioError:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.65)
    hint = f"did you mean {close[0]!r}?" if close else "allowed keys: " + ", ".join(known)
    shown = repr(key) if len(key) <= 40 else repr(key[:37] + "...")
    return ScenarioError(
        f"{path}.{key}" if path else key,
        value,
        "one of " + ", ".join(known),
        problem="is not a known key",
        message=f"{path or 'top level'}: unknown key {shown}; {hint}",
    )


def _table(value: object, path: str, known: Sequence[str], example: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ScenarioError(path, value, f"a table, such as {example}")
    for key, item in value.items():
        if key not in known:
            raise _unknown(path, key, item, known)
    return value


def _toml_name(path: str, value: object) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ScenarioError(path, value, _NAME_ALLOWED)
    return value


def _toml_int(path: str, value: object, minimum: int, maximum: int = 2**62) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ScenarioError(path, value, f"an integer in {minimum}..{maximum}")
    return value


def _toml_number(path: str, value: object, allowed: str = "a finite number") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(path, value, allowed)
    try:
        number = float(value)
    except OverflowError:
        raise ScenarioError(path, value, allowed) from None
    if not math.isfinite(number):
        raise ScenarioError(path, value, allowed)
    return number


def _toml_ratio(path: str, value: object) -> float:
    if isinstance(value, str):
        return units.parse_percent(value, field=path)
    number = _toml_number(path, value, "a fraction in [0, 1] such as 0.01, or '1%'")
    if not 0.0 <= number <= 1.0:
        raise ScenarioError(path, value, "a fraction in [0, 1] such as 0.01, or '1%'")
    return number


def _toml_choice(path: str, value: object, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ScenarioError(path, value, "one of " + ", ".join(repr(a) for a in allowed))
    return value


def _toml_duration(path: str, value: object, *, positive: bool = False) -> float:
    seconds = units.parse_duration(value, field=path)
    if positive and seconds <= 0:
        raise ScenarioError(path, value, "a duration > 0 such as 500ms or 2s")
    return seconds


@contextlib.contextmanager
def _model_errors(path: str, keys: Mapping[str, str] | None = None) -> Iterator[None]:
    """Turn a model's InvalidConfig into the ScenarioError of the key in the file (the
    argument's name without its ``_s`` suffix, or as ``keys`` renames it)."""
    try:
        yield
    except InvalidConfig as err:
        name = (keys or {}).get(err.name) or err.name.removesuffix("_s")
        raise ScenarioError(f"{path}.{name}", err.value, err.allowed) from None


def _service(path: str, value: object) -> ServiceTime:
    """A bare duration (deterministic) or ``{dist, mean, cv, values}``."""
    if not isinstance(value, dict):
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return ServiceTime.deterministic(_toml_duration(path, value))
        raise ScenarioError(
            path,
            value,
            "a duration such as '5ms' or a table such as {dist = 'exponential', mean = '5ms'}",
        )
    table = _table(value, path, SERVICE_KEYS, "{dist = 'exponential', mean = '5ms'}")
    dist = _toml_choice(f"{path}.dist", table.get("dist", "deterministic"), DISTRIBUTIONS)
    if dist == "empirical":
        for key in ("mean", "cv"):
            if key in table:
                raise ScenarioError(
                    f"{path}.{key}", table[key], "values only, for dist = 'empirical'"
                )
        raw = table.get("values")
        if not isinstance(raw, list) or not raw:
            raise ScenarioError(
                f"{path}.values", raw, "a non-empty list of durations such as ['3ms', '8ms']"
            )
        values = [_toml_duration(f"{path}.values[{i}]", x) for i, x in enumerate(raw)]
        return ServiceTime.empirical(values)
    if "values" in table:
        raise ScenarioError(
            f"{path}.values", table["values"], "values only with dist = 'empirical'"
        )
    if "mean" not in table:
        raise ScenarioError(
            f"{path}.mean",
            None,
            "a duration such as '5ms'",
            problem="is missing",
            message=f"{path}.mean is missing; use a duration such as '5ms'",
        )
    mean = _toml_duration(f"{path}.mean", table["mean"])
    if dist == "lognormal":
        cv = _toml_number(f"{path}.cv", table.get("cv", 1.0), "a number >= 0 such as 1.5")
        if cv < 0:
            raise ScenarioError(f"{path}.cv", table.get("cv"), "a number >= 0 such as 1.5")
        return ServiceTime.lognormal(mean, cv)
    if "cv" in table:
        raise ScenarioError(f"{path}.cv", table["cv"], "cv only with dist = 'lognormal'")
    return ServiceTime(kind=dist, mean_s=mean)


def _steps(path: str, value: object) -> tuple[Work | Call, ...]:
    if not isinstance(value, list):
        raise ScenarioError(
            path, value, "an array of steps such as [{work = '2ms'}, {call = 'db.query'}]"
        )
    steps: list[Work | Call] = []
    for i, raw in enumerate(value):
        where = f"{path}[{i}]"
        if not isinstance(raw, dict) or ("work" in raw) == ("call" in raw):
            raise ScenarioError(
                where,
                raw,
                "a table with either work (a service time) or call (an endpoint)",
            )
        if "work" in raw:
            table = _table(raw, where, WORK_KEYS, "{work = '2ms'}")
            steps.append(Work(_service(f"{where}.work", table["work"])))
        else:
            steps.append(_call(where, _table(raw, where, CALL_KEYS, "{call = 'db.query'}")))
    return tuple(steps)


def _names(path: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ScenarioError(path, value, "a list of policy names such as ['db_breaker']")
    return tuple(_toml_name(f"{path}[{i}]", x) for i, x in enumerate(value))


def _call(path: str, table: dict[str, Any]) -> Call:
    target = table["call"]
    if not isinstance(target, str) or not target:
        raise ScenarioError(f"{path}.call", target, "an endpoint such as 'db.query' or 'db'")
    kwargs: dict[str, Any] = {"target": target}
    if "timeout" in table:
        timeout = table["timeout"]
        if timeout != "none":
            kwargs["timeout_s"] = _toml_duration(f"{path}.timeout", timeout, positive=True)
    for key in ("retry", "pool", "cache"):
        if key in table:
            kwargs[key] = _toml_name(f"{path}.{key}", table[key])
    if "retry_on" in table:
        raw = table["retry_on"]
        allowed = "a list of 'timeout', 'error', 'rejected'"
        if not isinstance(raw, list):
            raise ScenarioError(f"{path}.retry_on", raw, allowed)
        kwargs["retry_on"] = frozenset(
            _toml_choice(f"{path}.retry_on[{i}]", x, CALL_OUTCOMES) for i, x in enumerate(raw)
        )
    if "policies" in table:
        kwargs["policies"] = _names(f"{path}.policies", table["policies"])
    if "on_failure" in table:
        kwargs["on_failure"] = _toml_choice(f"{path}.on_failure", table["on_failure"], ON_FAILURE)
    with _model_errors(path):
        return Call(**kwargs)


def _servers(path: str, value: object) -> int | None:
    if value == "inf":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SERVERS:
        raise ScenarioError(path, value, f"an integer in 1..{MAX_SERVERS}, or 'inf'")
    return value


def _queue_kwargs(path: str, table: dict[str, Any], kwargs: dict[str, Any]) -> None:
    if "discipline" in table:
        kwargs["discipline"] = _toml_choice(f"{path}.discipline", table["discipline"], DISCIPLINES)
    if "max_queue" in table:
        kwargs["max_queue"] = _toml_int(f"{path}.max_queue", table["max_queue"], 0)
    if "abandoned" in table:
        kwargs["abandoned"] = _toml_choice(f"{path}.abandoned", table["abandoned"], ABANDONED)


def _station(path: str, name: str, raw: object, *, dependency: bool) -> Station:
    known = DEPENDENCY_KEYS if dependency else STATION_KEYS
    table = _table(raw, path, known, "{servers = 4, service = '5ms'}")
    kwargs: dict[str, Any] = {"name": name, "servers": None if dependency else 1}
    if "servers" in table:
        kwargs["servers"] = _servers(f"{path}.servers", table["servers"])
    _queue_kwargs(path, table, kwargs)
    if "queue_timeout" in table:
        raw_timeout = table["queue_timeout"]
        if raw_timeout == "codel":
            kwargs["codel"] = True
        elif raw_timeout != "none":
            try:
                kwargs["queue_timeout_s"] = _toml_duration(
                    f"{path}.queue_timeout", raw_timeout, positive=True
                )
            except ScenarioError:
                raise ScenarioError(
                    f"{path}.queue_timeout",
                    raw_timeout,
                    "'none', 'codel' or a duration > 0 such as '200ms'",
                ) from None
    for key in ("codel_target", "codel_interval"):
        if key in table:
            kwargs[f"{key}_s"] = _toml_duration(f"{path}.{key}", table[key], positive=True)
    codel = kwargs.get("codel") is True
    if "codel_target" in table and not codel:
        raise ScenarioError(
            f"{path}.codel_target",
            table["codel_target"],
            "codel_target only with queue_timeout = 'codel'",
        )
    if "codel_interval" in table and not codel and kwargs.get("discipline") != "adaptive_lifo":
        raise ScenarioError(
            f"{path}.codel_interval",
            table["codel_interval"],
            "codel_interval only with queue_timeout = 'codel' or discipline = 'adaptive_lifo'",
        )
    error_rate = _toml_ratio(f"{path}.error_rate", table.get("error_rate", 0.0))
    endpoints: dict[str, Endpoint] = {}
    service_key = "latency" if dependency else "service"
    if service_key in table:
        service = _service(f"{path}.{service_key}", table[service_key])
        endpoints[DEFAULT_ENDPOINT] = Endpoint(steps=(Work(service),), error_rate=error_rate)
    elif "error_rate" in table:
        raise ScenarioError(
            f"{path}.error_rate",
            table["error_rate"],
            f"error_rate next to {service_key} (or in an endpoint table)",
        )
    raw_eps = table.get("endpoints", {})
    if not isinstance(raw_eps, dict):
        raise ScenarioError(f"{path}.endpoints", raw_eps, "a table of endpoint tables")
    for ep_name, ep_raw in raw_eps.items():
        where = f"{path}.endpoints.{ep_name}"
        _toml_name(where, ep_name)
        if ep_name in endpoints:
            raise ScenarioError(
                where, ep_name, f"an endpoint name other than {DEFAULT_ENDPOINT!r} with service"
            )
        ep_table = _table(ep_raw, where, ENDPOINT_KEYS, "{steps = [{work = '2ms'}]}")
        if "steps" not in ep_table:
            raise ScenarioError(
                f"{where}.steps",
                None,
                "an array of steps",
                problem="is missing",
                message=f"{where}.steps is missing; use an array of steps such as "
                "[{work = '2ms'}]",
            )
        endpoints[ep_name] = Endpoint(
            steps=_steps(f"{where}.steps", ep_table["steps"]),
            error_rate=_toml_ratio(f"{where}.error_rate", ep_table.get("error_rate", 0.0)),
        )
    if not endpoints:
        raise ScenarioError(
            path,
            name,
            f"a {service_key} or at least one endpoint",
            problem="has no endpoint",
        )
    with _model_errors(path):
        return Station(endpoints=endpoints, **kwargs)


def _pool(path: str, name: str, raw: object) -> Station:
    table = _table(raw, path, POOL_KEYS, "{size = 10, timeout = '200ms'}")
    if "size" not in table:
        raise ScenarioError(
            f"{path}.size",
            None,
            "an integer >= 1",
            problem="is missing",
            message=f"{path}.size is missing; use the pool size, an integer >= 1",
        )
    kwargs: dict[str, Any] = {"name": name}
    kwargs["servers"] = _toml_int(f"{path}.size", table["size"], 1, MAX_SERVERS)
    _queue_kwargs(path, table, kwargs)
    if "timeout" in table and table["timeout"] != "none":
        kwargs["queue_timeout_s"] = _toml_duration(
            f"{path}.timeout", table["timeout"], positive=True
        )
    with _model_errors(path, {"queue_timeout_s": "timeout", "servers": "size"}):
        return Station(**kwargs)


def _policy_value(path: str, kind: str, value: object) -> object:
    if kind == _DURATION:
        return _toml_duration(path, value)
    if kind == _RATE:
        return units.parse_rate(value, field=path)
    if kind == _INT:
        return _toml_int(path, value, 0)
    if kind == _NUMBER:
        return _toml_number(path, value)
    if kind == _BOOL:
        if not isinstance(value, bool):
            raise ScenarioError(path, value, "true or false")
        return value
    if not isinstance(value, str):
        raise ScenarioError(path, value, "a string")
    return value


def _policy(path: str, raw: object) -> PolicySpec:
    if not isinstance(raw, dict):
        raise ScenarioError(path, raw, "a table such as {kind = 'circuit_breaker'}")
    kind = _toml_choice(f"{path}.kind", raw.get("kind"), POLICY_KINDS)
    keys = POLICY_KEYS[kind]
    _table(raw, path, ("kind", *keys), "{kind = 'retry', attempts = 3}")
    params: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "kind":
            continue
        param, value_kind = keys[key]
        params[param] = _policy_value(f"{path}.{key}", value_kind, value)
    if kind == "adaptive_throttle" and params.pop("timeouts_are_rejections", False):
        from ..errors import Overloaded

        params["rejected_on"] = (Overloaded, TimeoutError)
    try:
        spec = PolicySpec(kind, params)
        if kind != "retry" or not isinstance(params.get("budget"), str):
            if kind != "retry_budget":
                from .._clock import monotonic_clock

                spec.build(clock=monotonic_clock, seed=0, budgets={})
            else:
                from .._clock import monotonic_clock

                spec.build(clock=monotonic_clock, seed=0)
    except InvalidConfig as err:
        raise _rebase(path, kind, err) from None
    return spec


def _rebase(path: str, kind: str, err: InvalidConfig) -> ScenarioError:
    """An InvalidConfig from a policy class, as the error of its key in the file."""
    toml_key = next(
        (key for key, (param, _) in POLICY_KEYS.get(kind, {}).items() if param == err.name),
        err.name,
    )
    return ScenarioError(f"{path}.{toml_key}", err.value, err.allowed)


def _topology(doc: dict[str, Any]) -> Topology:
    _table(doc, "", TOP_KEYS, "[stations.web]")
    stations: list[Station] = []
    seen: dict[str, str] = {}
    for section, dependency in (("stations", False), ("dependencies", True), ("pools", None)):
        raw = doc.get(section, {})
        if not isinstance(raw, dict):
            raise ScenarioError(section, raw, f"a table of {section}, such as [{section}.name]")
        for name, body in raw.items():
            path = f"{section}.{name}"
            _toml_name(path, name)
            if name in seen:
                raise ScenarioError(
                    path,
                    name,
                    f"a name not already used by {seen[name]}.{name}",
                    problem="is a duplicate",
                )
            seen[name] = section
            if dependency is None:
                stations.append(_pool(path, name, body))
            else:
                stations.append(_station(path, name, body, dependency=dependency))
    if not stations:
        raise ScenarioError(
            "stations",
            None,
            "at least one [stations.<name>] or [dependencies.<name>] table",
            problem="is missing",
            message="stations is missing; define at least one [stations.<name>] table",
        )
    raw_policies = doc.get("policies", {})
    if not isinstance(raw_policies, dict):
        raise ScenarioError("policies", raw_policies, "a table of policy tables")
    policies: dict[str, PolicySpec] = {}
    for name, body in raw_policies.items():
        path = f"policies.{name}"
        _toml_name(path, name)
        policies[name] = _policy(path, body)
    raw_routes = doc.get("routes", {})
    if not isinstance(raw_routes, dict):
        raise ScenarioError("routes", raw_routes, "a table of class name = 'station.endpoint'")
    routes: dict[str, str] = {}
    for cls_name, ref in raw_routes.items():
        if not isinstance(ref, str) or not ref:
            raise ScenarioError(f"routes.{cls_name}", ref, "an endpoint such as 'web.products'")
        routes[cls_name] = ref
    try:
        return Topology(stations=tuple(stations), policies=policies, routes=routes)
    except InvalidConfig as err:
        raise _topology_error(err, stations) from None


def _topology_error(err: InvalidConfig, stations: Sequence[Station]) -> ScenarioError:
    """A cross-reference error of the Topology, as the path of the offending key."""
    owner = err.owner
    if owner.startswith("Call at "):
        where = owner[len("Call at ") :]
        station, _, rest = where.partition(".")
        ep_name, _, step = rest.partition(".")
        section = "stations"
        key = {"target": "call"}.get(err.name, err.name)
        path = f"{section}.{station}.endpoints.{ep_name}.{step}.{key}"
        return ScenarioError(path, err.value, err.allowed)
    if owner.startswith("policy "):
        name = owner[len("policy ") :].strip("'\"")
        return ScenarioError(f"policies.{name}.{err.name}", err.value, err.allowed)
    if err.name.startswith("routes["):
        return ScenarioError(f"routes.{err.name[8:-2]}", err.value, err.allowed)
    return ScenarioError(err.name, err.value, err.allowed)


def _build(doc: dict[str, Any]) -> Topology:
    try:
        return _topology(doc)
    except InvalidConfig as err:  # a model check the parser did not anticipate
        raise ScenarioError(err.name, err.value, err.allowed) from None


def _parse(text: object, source: str | None) -> Topology:
    return parse_toml_document(text, source, _build)


def parse_topology(text: str, *, source: str | None = None) -> Topology:
    """The :class:`Topology` in the TOML ``text`` (see the module documentation)."""
    return _parse(text, source)


def load_topology(path: str | os.PathLike[str]) -> Topology:
    """Read and parse the topology file at ``path`` (UTF-8 TOML)."""
    where = os.fspath(path)
    return _parse(read_text_file(where, "topology"), where)
