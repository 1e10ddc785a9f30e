"""GuardMiddleware: the front door of an ASGI app.

``GuardMiddleware(app)`` alone puts an adaptive concurrency limit with a bounded wait queue
in front of the app (``ConcurrencyLimit(algorithm="gradient2")``): past what the app can
serve, requests wait a little or are refused at once with a cheap 503, instead of piling
up until every one of them times out. It changes nothing else. Everything else is opt-in.

Each HTTP request goes through, in this order:

1. the traffic shield (``shield=``) and the rate limits (``rate_limits=``, each with a key
   function over the ASGI scope; the default key is the shield's client id, else the peer
   address);
2. its criticality: the ``brownout-criticality`` request header when the peer is trusted
   (``trust_criticality_from=``; by default loopback and the shield's trusted proxies),
   otherwise the route rules (``routes=`` then ``criticality=``, globs on the path, first
   match). It is set in the context variable the app reads with
   :func:`brownout.guard.current_criticality`;
3. the concurrency limit and its queue, acquired with that criticality and the deadline;
   the permit is released when the app returns, ``dropped=True`` when it raised, answered
   503 or 504, or finished past the deadline (so the limit backs off);
4. the deadline carried by the request headers (``brownout-timeout-ms``, ``grpc-timeout``,
   ``x-envoy-expected-rq-timeout-ms``): set for the app, so calls it makes pass the budget
   left on (:func:`brownout.deadline_headers`); a request whose budget is already spent is
   refused before any work;

then the app. With a ``dimmer=``, the response time of every admitted request is fed to
``dimmer.observe`` (the app asks ``dimmer.serve_optional(...)`` itself).

Rejections are cheap and explicit: a fixed small JSON body ``{"error": ..., "reason": ...}``,
the header ``brownout-rejected: <reason>`` and ``Retry-After`` in whole seconds (>= 1):
429 for rate limits, 503 for shedding, 403 when the shield blocks; a shield challenge
sends what the shield's callback returns. Lifespan and WebSocket scopes pass through
untouched, as do routes configured with ``bypass=True``.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from .._clock import Clock, monotonic_clock
from ..errors import DeadlineExceeded, InvalidConfig, Overloaded
from ..events import Events
from ..guard._criticality import CRITICALITY_HEADER, Criticality, criticality
from ..guard._deadline import deadline, deadline_from_headers
from ..guard._limit import ConcurrencyLimit
from ..guard._ratelimit import MemoryStore
from ._metrics import (
    PROMETHEUS_CONTENT_TYPE,
    Gauge,
    OpenTelemetryMetrics,
    PrometheusMetrics,
    RequestCompleted,
    RequestRejected,
)

if TYPE_CHECKING:
    from ..guard._dimmer import Dimmer
    from ..guard._ratelimit import Decision, RateLimit
    from ._shield import TrafficShield

__all__ = [
    "ASGIApp",
    "GuardMiddleware",
    "KeyFunction",
    "Message",
    "Receive",
    "RouteConfig",
    "Scope",
    "Send",
    "client_key",
    "header_key",
]

_log = logging.getLogger("brownout.asgi")

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]
KeyFunction: TypeAlias = Callable[[Scope], str]
RateLimitRule: TypeAlias = "tuple[RateLimit, KeyFunction | None]"
CriticalityRules: TypeAlias = "Mapping[str, Criticality] | Callable[[Scope], Criticality | None]"

# The deadline headers deadline_from_headers reads, as ASGI spells header names.
_DEADLINE_NAMES = frozenset(
    {b"brownout-timeout-ms", b"grpc-timeout", b"x-envoy-expected-rq-timeout-ms"}
)
_CRITICALITY_NAME = CRITICALITY_HEADER.encode("latin-1")
_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
_ERROR_BY_STATUS = {429: "rate_limited", 503: "overloaded", 403: "forbidden"}


def client_key(scope: Scope) -> str:
    """The peer address of the connection (``scope["client"][0]``), ``""`` when unknown."""
    client = scope.get("client")
    return str(client[0]) if client else ""


def header_key(name: str) -> KeyFunction:
    """A key function: the value of request header ``name`` (an API key, a user id), or the
    peer address when the request has no such header."""
    if not isinstance(name, str) or not name:
        raise InvalidConfig("header_key", "name", name, "a non-empty header name")
    wanted = name.lower().encode("latin-1")

    def key(scope: Scope) -> str:
        for k, value in scope["headers"]:
            if k == wanted:
                return str(value.decode("latin-1"))
        return client_key(scope)

    return key


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteConfig:
    """Settings for the requests whose path matches one pattern of ``routes=``.

    - ``criticality``: the criticality of these requests (a trusted header still wins);
    - ``limit``: ``None`` shares the middleware's concurrency limit; a
      :class:`~brownout.guard.ConcurrencyLimit` gives these requests a limit of their own
      instead; ``False`` runs them without any;
    - ``rate_limits``: ``None`` applies the middleware's rate limits; a sequence of
      ``(RateLimit, key_function)`` pairs applies these instead (``()``: none);
    - ``bypass``: True passes the requests straight to the app, untouched and uncounted
      (health checks, the readiness probe).
    """

    criticality: Criticality | None = None
    limit: ConcurrencyLimit | Literal[False] | None = None
    rate_limits: Sequence[RateLimitRule] | None = None
    bypass: bool = False

    def __post_init__(self) -> None:
        if self.criticality is not None and not isinstance(self.criticality, Criticality):
            raise InvalidConfig(
                "RouteConfig", "criticality", self.criticality, "a Criticality or None"
            )
        _check_limit("RouteConfig", self.limit)
        if self.rate_limits is not None:
            object.__setattr__(
                self, "rate_limits", _check_rate_limits("RouteConfig", self.rate_limits)
            )
        if not isinstance(self.bypass, bool):
            raise InvalidConfig("RouteConfig", "bypass", self.bypass, "True or False")


def _check_limit(owner: str, limit: object) -> None:
    if limit is None or limit is False:
        return
    if not (
        callable(getattr(limit, "try_acquire", None)) and callable(getattr(limit, "acquire", None))
    ):
        raise InvalidConfig(owner, "limit", limit, "a ConcurrencyLimit, None or False")


def _check_rate_limits(owner: str, rules: object) -> tuple[RateLimitRule, ...]:
    allowed = "a sequence of (RateLimit, key function or None) pairs"
    if isinstance(rules, str | bytes) or not isinstance(rules, Iterable):
        raise InvalidConfig(owner, "rate_limits", rules, allowed)
    out: list[RateLimitRule] = []
    for rule in rules:
        if not (
            isinstance(rule, tuple)
            and len(rule) == 2
            and callable(getattr(rule[0], "acheck", None))
            and (rule[1] is None or callable(rule[1]))
        ):
            raise InvalidConfig(owner, "rate_limits", rules, allowed)
        out.append(rule)
    return tuple(out)


def _glob_matcher(pattern: str) -> Callable[[str], bool]:
    """``fnmatch``-style glob on the whole path (``*`` also crosses ``/``), case-sensitive."""
    if not any(c in pattern for c in "*?["):
        return pattern.__eq__
    regex = re.compile(fnmatch.translate(pattern))
    return lambda path: regex.match(path) is not None


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the middleware does for the requests of one route (resolved at construction).

    ``checks`` are the rate limits as ``(limit, key function, in_memory)``: a limit whose
    store is a :class:`MemoryStore` is asked with its sync ``check`` (the same decision
    without the coroutine layers), any other with ``await acheck``."""

    pattern: str | None
    bypass: bool
    limit: ConcurrencyLimit | None
    rate_limits: tuple[RateLimitRule, ...]
    criticality: Criticality | None
    checks: tuple[tuple[RateLimit, KeyFunction | None, bool], ...] = ()

    @classmethod
    def build(
        cls,
        pattern: str | None,
        bypass: bool,
        limit: ConcurrencyLimit | None,
        rate_limits: tuple[RateLimitRule, ...],
        crit: Criticality | None,
    ) -> _Plan:
        checks = tuple((rl, key, _in_memory(rl)) for rl, key in rate_limits)
        return cls(pattern, bypass, limit, rate_limits, crit, checks)


def _in_memory(policy: object) -> bool:
    """Whether a rate limit keeps its state in this process (no I/O: ask it synchronously)."""
    return isinstance(getattr(policy, "store", None), MemoryStore) and callable(
        getattr(policy, "check", None)
    )


def _shield_in_memory(shield: object) -> bool:
    """Whether the shield's decision does no I/O (its rate limits, if any, are in memory),
    so its sync ``decide`` gives the same answer as ``adecide`` without a coroutine."""
    if shield is None or not callable(getattr(shield, "decide", None)):
        return False
    per_class = getattr(shield, "per_class", None) or {}
    limits = [getattr(shield, "per_client", None), *per_class.values()]
    return all(_in_memory(limit) for limit in limits if limit is not None)


@dataclass(frozen=True, slots=True)
class _Rejection:
    status: int
    reason: str
    retry_after_s: float


class GuardMiddleware:
    """Protect an ASGI app from overload; opt in to rate limits, shield, criticality rules.

    Arguments (all keyword-only but ``app``):

    - ``limit``: the concurrency limit and wait queue in front of the app. ``None`` (the
      default) creates ``ConcurrencyLimit(algorithm="gradient2", clock=clock)``; ``False``
      runs without one.
    - ``shield``: a :class:`~brownout.asgi.TrafficShield` asked first about every request;
      it is told the status of every admitted request and of every rate-limit refusal
      (never of a 503 from shedding: overload is not the client's doing).
    - ``rate_limits``: ``(RateLimit, key_function)`` pairs checked in order; a key function
      maps the ASGI scope to a string (:func:`client_key`, :func:`header_key`); ``None``
      uses the shield's client id, else the peer address. Refused: 429.
    - ``criticality``: route rules, a mapping from path glob to
      :class:`~brownout.guard.Criticality` (first match wins) or a function of the scope
      returning one (or None).
    - ``trust_criticality_from``: whose ``brownout-criticality`` header to believe. ``None``
      (default): peers on loopback and the shield's trusted proxies; a sequence of networks
      (``"10.0.0.0/8"``); ``True``: everyone; ``False``: nobody (rules only). An untrusted or
      malformed header is ignored.
    - ``routes``: path glob -> :class:`RouteConfig`, first match wins.
    - ``deadline_header``: read the request's deadline headers (default True).
    - ``dimmer``: a :class:`~brownout.guard.Dimmer` fed the response time of each request.
    - ``metrics_path``: serve the Prometheus text exposition at this path (e.g. ``"/metrics"``);
      that path bypasses every check.
    - ``opentelemetry``: record metrics with the OpenTelemetry API when it is installed
      (a no-op otherwise): ``True`` uses the global meter provider, an
      :class:`OpenTelemetryMetrics` your own meter. The recorder also subscribes to the
      events of the limits and rate limits used here.
    - ``events``: the hook the middleware emits :class:`RequestRejected` and
      :class:`RequestCompleted` on; ``clock``: the clock for deadlines and durations (give
      the same clock to the limits); ``name``: the ``policy`` of those events.
    """

    __slots__ = (
        "_bodies",
        "_crit_fn",
        "_default",
        "_limits",
        "_metrics_path",
        "_now",
        "_otel",
        "_prometheus",
        "_routes",
        "_scan_headers",
        "_shield_sync",
        "_trust_all",
        "_trusted_nets",
        "app",
        "clock",
        "deadline_header",
        "dimmer",
        "events",
        "limit",
        "name",
        "rate_limits",
        "shield",
    )

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: ConcurrencyLimit | Literal[False] | None = None,
        shield: TrafficShield | None = None,
        rate_limits: Sequence[RateLimitRule] = (),
        criticality: CriticalityRules | None = None,
        trust_criticality_from: Sequence[str] | bool | None = None,
        routes: Mapping[str, RouteConfig] | None = None,
        deadline_header: bool = True,
        dimmer: Dimmer | None = None,
        metrics_path: str | None = None,
        opentelemetry: bool | OpenTelemetryMetrics = False,
        events: Events | None = None,
        clock: Clock = monotonic_clock,
        name: str = "guard",
    ) -> None:
        owner = "GuardMiddleware"
        if not callable(app):
            raise InvalidConfig(owner, "app", app, "an ASGI application")
        _check_limit(owner, limit)
        if shield is not None and not callable(getattr(shield, "adecide", None)):
            raise InvalidConfig(owner, "shield", shield, "a TrafficShield or None")
        if dimmer is not None and not callable(getattr(dimmer, "observe", None)):
            raise InvalidConfig(owner, "dimmer", dimmer, "a Dimmer or None")
        if metrics_path is not None and not (
            isinstance(metrics_path, str) and metrics_path.startswith("/")
        ):
            raise InvalidConfig(owner, "metrics_path", metrics_path, "a path starting with '/'")
        if not isinstance(deadline_header, bool):
            raise InvalidConfig(owner, "deadline_header", deadline_header, "True or False")
        if not isinstance(name, str) or not name:
            raise InvalidConfig(owner, "name", name, "a non-empty string")
        self.app = app
        self.clock = clock
        self._now = clock.now
        self.name = name
        self.limit: ConcurrencyLimit | None = (
            ConcurrencyLimit(algorithm="gradient2", clock=clock)
            if limit is None
            else (limit or None)
        )
        self.shield = shield
        self.rate_limits = _check_rate_limits(owner, rate_limits)
        self.deadline_header = deadline_header
        self.dimmer = dimmer
        self.events = Events() if events is None else events
        self._metrics_path = metrics_path
        self._crit_fn = _criticality_rules(criticality)
        self._trust_all, self._trusted_nets = _trust(trust_criticality_from, shield)
        self._scan_headers = deadline_header or self._trust_all or bool(self._trusted_nets)
        self._bodies: dict[tuple[int, str], bytes] = {}

        self._default = _Plan.build(None, False, self.limit, self.rate_limits, None)
        self._shield_sync = _shield_in_memory(shield)
        self._routes: list[tuple[Callable[[str], bool], _Plan]] = []
        if routes is None:
            routes = {}
        if not isinstance(routes, Mapping):
            raise InvalidConfig(owner, "routes", routes, "a mapping of path glob to RouteConfig")
        for pattern, config in routes.items():
            if not isinstance(pattern, str) or not isinstance(config, RouteConfig):
                raise InvalidConfig(
                    owner, "routes", routes, "a mapping of path glob (str) to RouteConfig"
                )
            route_limit = self.limit if config.limit is None else (config.limit or None)
            route_rules = self.rate_limits if config.rate_limits is None else config.rate_limits
            plan = _Plan.build(
                pattern, config.bypass, route_limit, tuple(route_rules), config.criticality
            )
            self._routes.append((_glob_matcher(pattern), plan))

        self._limits = _distinct_limits([self.limit, *(p.limit for _, p in self._routes)])
        self._prometheus: PrometheusMetrics | None = None
        if metrics_path is not None:
            self._prometheus = PrometheusMetrics()
            self.events.subscribe(self._prometheus)
        self._otel: OpenTelemetryMetrics | None = None
        if opentelemetry is not False:
            if opentelemetry is True:
                otel = OpenTelemetryMetrics()
            elif isinstance(opentelemetry, OpenTelemetryMetrics):
                otel = opentelemetry
            else:
                raise InvalidConfig(
                    owner, "opentelemetry", opentelemetry, "True, False or an OpenTelemetryMetrics"
                )
            if otel.enabled:
                self._otel = otel
                self.events.subscribe(otel)
                for policy in self._policies():
                    hook = getattr(policy, "events", None)
                    if isinstance(hook, Events) and hook is not self.events:
                        hook.subscribe(otel)
                otel.observe_gauges(self.gauges)

    def _policies(self) -> list[object]:
        """Every policy the middleware consults, once each: limits, rate limits, the
        shield (and its rate limits) and the dimmer."""
        seen: dict[int, object] = {}
        candidates: list[object] = [self.shield, self.dimmer]
        if self.shield is not None:
            candidates.append(getattr(self.shield, "per_client", None))
            candidates.extend((getattr(self.shield, "per_class", None) or {}).values())
        for plan in [self._default, *(p for _, p in self._routes)]:
            candidates.append(plan.limit)
            candidates.extend(rl for rl, _ in plan.rate_limits)
        for policy in candidates:
            if policy is not None:
                seen.setdefault(id(policy), policy)
        return list(seen.values())

    def gauges(self) -> list[Gauge]:
        """The current gauge values: per limit its limit, in-flight and queued counts
        (label ``limit``: the limit's name), and the dimmer's value when there is one."""
        out: list[Gauge] = []
        for label, lim in self._limits:
            labels = {"limit": label}
            out.append(Gauge("concurrency_limit", "Current concurrency limit.", labels, lim.limit))
            out.append(Gauge("in_flight", "Requests holding a permit.", labels, lim.in_flight))
            out.append(Gauge("queued", "Requests waiting for a permit.", labels, lim.queued))
        if self.dimmer is not None:
            out.append(
                Gauge("dimmer", "Share of optional work served (0..1).", {}, self.dimmer.value)
            )
        return out

    def _plan_for(self, path: str) -> _Plan:
        for matches, plan in self._routes:
            if matches(path):
                return plan
        return self._default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == self._metrics_path:
            await self._serve_metrics(scope, send)
            return
        plan = self._plan_for(path) if self._routes else self._default
        if plan.bypass:
            await self.app(scope, receive, send)
            return
        now = self._now
        arrived = now()

        # 1. Shield and rate limits.
        client_id: str | None = None
        shield = self.shield
        if shield is not None:
            try:
                if self._shield_sync:
                    decision = shield.decide(scope)
                else:
                    decision = await shield.adecide(scope)
            except Exception:  # the shield must never take the app down: fail open
                _log.exception("%s: the traffic shield failed; request allowed", self.name)
            else:
                client_id = decision.client_id
                if decision.action != "allow":
                    await self._shield_action(decision, plan, scope, receive, send)
                    return
        for rate_limit, key_fn, in_memory in plan.checks:
            if key_fn is not None:
                key = key_fn(scope)
            else:
                key = client_id if client_id is not None else client_key(scope)
            try:
                verdict: Decision
                if in_memory:
                    verdict = rate_limit.check(key)
                else:
                    verdict = await rate_limit.acheck(key)
            except Exception:  # a store failure never reaches the app: fail open
                _log.exception("%s: rate limit %r failed; request allowed", self.name, rate_limit)
                continue
            if not verdict.allowed:
                await self._reject(send, _Rejection(429, "rate_limit", verdict.retry_after_s), plan)
                if shield is not None and client_id is not None:
                    shield.observe(client_id, path, 429)
                return

        # 2. Criticality, and the deadline budget from the same pass over the headers.
        crit: Criticality | None = None
        budget: float | None = None
        if self._scan_headers:
            raw_crit: bytes | None = None
            deadline_pairs: list[tuple[bytes, bytes]] | None = None
            for pair in scope["headers"]:
                header = pair[0]
                if header in _DEADLINE_NAMES:
                    if deadline_pairs is None:
                        deadline_pairs = []
                    deadline_pairs.append(pair)
                elif header == _CRITICALITY_NAME:
                    raw_crit = pair[1]
            if raw_crit is not None and self._header_trusted(scope):
                try:
                    crit = Criticality.parse(raw_crit.decode("latin-1"))
                except ValueError:  # InvalidConfig is a ValueError: ignore a bad header
                    crit = None
            if deadline_pairs is not None and self.deadline_header:
                budget = deadline_from_headers(deadline_pairs)
        if crit is None:
            crit = plan.criticality
            if crit is None and self._crit_fn is not None:
                crit = self._crit_fn(scope)

        deadline_at: float | None = None
        if budget is not None:
            if budget <= 0:
                await self._reject(send, _Rejection(503, "deadline", 1.0), plan)
                return
            deadline_at = arrived + budget

        # 3. Concurrency limit and queue.
        limit = plan.limit
        permit = None
        if limit is not None:
            permit = limit.try_acquire(criticality=crit, deadline=deadline_at)
            if permit is None:
                try:
                    permit = await limit.acquire(criticality=crit, deadline=deadline_at)
                except (Overloaded, DeadlineExceeded) as exc:
                    await self._reject(send, _shed(exc), plan)
                    return

        # 4. The app, with the criticality and the deadline set for it.
        status = 0
        ended = 0.0

        async def guarded_send(message: Message) -> None:
            nonlocal status, ended
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
            elif kind == "http.response.body" and not message.get("more_body", False):
                ended = now()
            await send(message)

        failed = True
        cancelled = False
        try:
            if deadline_at is None:
                if crit is None:
                    await self.app(scope, receive, guarded_send)
                else:
                    await self._run_with_context(crit, None, scope, receive, guarded_send)
            else:
                # What is left of the budget once admitted (the wait in line is spent).
                left = max(deadline_at - now(), 0.0)
                await self._run_with_context(crit, left, scope, receive, guarded_send)
            failed = False
        except Exception:
            raise
        except BaseException:  # cancelled: the caller went away; its latency means nothing
            cancelled = True
            raise
        finally:
            end = ended or now()
            dropped = (
                failed or status in (503, 504) or (deadline_at is not None and end > deadline_at)
            )
            if permit is not None:
                if cancelled:
                    permit.release(ignore=True)
                else:
                    permit.release(dropped=dropped)
            if self.dimmer is not None:
                self.dimmer.observe(end - arrived)
            if shield is not None and client_id is not None:
                shield.observe(client_id, path, status)
            if self.events:
                self.events.emit(
                    RequestCompleted(
                        end,
                        self.name,
                        status,
                        end - arrived,
                        dropped,
                        plan.pattern,
                        None if crit is None else crit.name.lower(),
                    )
                )

    async def _run_with_context(
        self,
        crit: Criticality | None,
        budget: float | None,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        if crit is None:
            assert budget is not None
            with deadline(budget, clock=self.clock):
                await self.app(scope, receive, send)
        elif budget is None:
            with criticality(crit):
                await self.app(scope, receive, send)
        else:
            with criticality(crit), deadline(budget, clock=self.clock):
                await self.app(scope, receive, send)

    def _header_trusted(self, scope: Scope) -> bool:
        if self._trust_all:
            return True
        if not self._trusted_nets:
            return False
        client = scope.get("client")
        if not client:
            return False
        try:
            address = ipaddress.ip_address(client[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in self._trusted_nets)

    async def _shield_action(
        self, decision: Any, plan: _Plan, scope: Scope, receive: Receive, send: Send
    ) -> None:
        action = decision.action
        retry_after_s = float(getattr(decision, "retry_after_s", 0.0) or 0.0)
        shield = self.shield
        assert shield is not None
        if action == "limit":
            await self._reject(send, _Rejection(429, "shield_limit", retry_after_s), plan)
            shield.observe(decision.client_id, scope["path"], 429)
            return
        if action == "challenge":
            status = await self._challenge(decision, scope, receive, send)
            if status is not None:
                if self.events:
                    self.events.emit(
                        RequestRejected(
                            self._now(),
                            self.name,
                            "shield_challenge",
                            status,
                            0.0,
                            plan.pattern,
                        )
                    )
                return
        # "block", an unknown action, or a challenge without a callback.
        await self._reject(send, _Rejection(403, "shield_block", retry_after_s), plan)

    async def _challenge(
        self, decision: Any, scope: Scope, receive: Receive, send: Send
    ) -> int | None:
        """Send what the shield's challenge callback returns: an ASGI app (a Starlette
        ``Response``) or a ``(status, headers, body)`` triple. Returns the status sent, or
        None when there is no callback (the request is then blocked)."""
        shield = self.shield
        callback = getattr(shield, "challenge", None)
        if callback is None:
            return None
        result = callback(scope, decision)
        if isinstance(result, Awaitable):
            result = await result
        if isinstance(result, tuple):
            status, headers, body = result
            raw = body.encode() if isinstance(body, str) else bytes(body)
            items = headers.items() if isinstance(headers, Mapping) else headers
            header_list = [(_b(k).lower(), _b(v)) for k, v in items]
            if not any(k == b"content-length" for k, _ in header_list):
                header_list.append((b"content-length", str(len(raw)).encode()))
            header_list.append((b"brownout-rejected", b"shield_challenge"))
            await send(
                {"type": "http.response.start", "status": int(status), "headers": header_list}
            )
            await send({"type": "http.response.body", "body": raw})
            return int(status)
        seen = 0

        async def recording_send(message: Message) -> None:
            nonlocal seen
            if message["type"] == "http.response.start":
                seen = message["status"]
            await send(message)

        await result(scope, receive, recording_send)
        return seen

    async def _reject(self, send: Send, rejection: _Rejection, plan: _Plan) -> None:
        status, reason = rejection.status, rejection.reason
        body = self._bodies.get((status, reason))
        if body is None:
            error = _ERROR_BY_STATUS.get(status, "rejected")
            body = f'{{"error": "{error}", "reason": "{_json_safe(reason)}"}}'.encode()
            if len(self._bodies) < 64:
                self._bodies[(status, reason)] = body
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"brownout-rejected", reason.encode("latin-1", "replace")),
        ]
        retry_after = 0
        if status != 403 or rejection.retry_after_s > 0:
            retry_after = _retry_after(rejection.retry_after_s)
            headers.append((b"retry-after", str(retry_after).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        if self.events:
            self.events.emit(
                RequestRejected(
                    self._now(), self.name, reason, status, float(retry_after), plan.pattern
                )
            )

    async def _serve_metrics(self, scope: Scope, send: Send) -> None:
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            await send(
                {
                    "type": "http.response.start",
                    "status": 405,
                    "headers": [(b"allow", b"GET, HEAD"), (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        assert self._prometheus is not None
        body = self._prometheus.render(self.gauges()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", PROMETHEUS_CONTENT_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    def __repr__(self) -> str:
        parts = [f"app={self.app!r}", f"limit={self.limit!r}"]
        if self.shield is not None:
            parts.append(f"shield={self.shield!r}")
        if self.rate_limits:
            parts.append(f"rate_limits={len(self.rate_limits)}")
        if self._routes:
            parts.append(f"routes={[p.pattern for _, p in self._routes]!r}")
        if self._metrics_path:
            parts.append(f"metrics_path={self._metrics_path!r}")
        return f"GuardMiddleware({', '.join(parts)})"


def _b(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("latin-1")


def _json_safe(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _retry_after(seconds: float) -> int:
    """``Retry-After`` in whole seconds, at least 1 (rounded up; 1 when unknown)."""
    if not math.isfinite(seconds) or seconds <= 1:
        return 1
    return math.ceil(seconds)


def _shed(exc: BaseException) -> _Rejection:
    """The rejection a concurrency limit's refusal becomes: its reason and its retry hint."""
    if isinstance(exc, DeadlineExceeded):
        return _Rejection(503, "deadline", 1.0)
    reason = getattr(exc, "reason", None)
    retry = getattr(exc, "retry_after_s", None)
    return _Rejection(
        503,
        reason if isinstance(reason, str) and reason else "limit",
        float(retry) if isinstance(retry, int | float) else 1.0,
    )


def _criticality_rules(
    rules: CriticalityRules | None,
) -> Callable[[Scope], Criticality | None] | None:
    owner = "GuardMiddleware"
    if rules is None:
        return None
    if isinstance(rules, Mapping):
        compiled: list[tuple[Callable[[str], bool], Criticality]] = []
        for pattern, crit in rules.items():
            if not isinstance(pattern, str) or not isinstance(crit, Criticality):
                raise InvalidConfig(
                    owner, "criticality", rules, "a mapping of path glob (str) to Criticality"
                )
            compiled.append((_glob_matcher(pattern), crit))

        def by_path(scope: Scope) -> Criticality | None:
            path = scope["path"]
            for matches, crit in compiled:
                if matches(path):
                    return crit
            return None

        return by_path
    if callable(rules):
        return rules
    raise InvalidConfig(
        owner, "criticality", rules, "a mapping of path glob to Criticality, a function or None"
    )


_Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


def _trust(trust: Sequence[str] | bool | None, shield: object) -> tuple[bool, tuple[_Network, ...]]:
    owner = "GuardMiddleware"
    if trust is True:
        return True, ()
    if trust is False:
        return False, ()
    nets: list[_Network] = []
    if trust is None:
        nets.extend(_LOOPBACK)
        for proxy in getattr(shield, "trusted_proxies", ()) or ():
            try:
                nets.append(ipaddress.ip_network(str(proxy), strict=False))
            except ValueError:
                continue  # the shield validates its own configuration
        return False, tuple(nets)
    if isinstance(trust, str | bytes) or not isinstance(trust, Iterable):
        raise InvalidConfig(
            owner, "trust_criticality_from", trust, "a sequence of networks, True, False or None"
        )
    for item in trust:
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except (TypeError, ValueError):
            raise InvalidConfig(
                owner,
                "trust_criticality_from",
                trust,
                "a sequence of networks such as '10.0.0.0/8' or '127.0.0.1'",
            ) from None
    return False, tuple(nets)


def _distinct_limits(
    limits: Iterable[ConcurrencyLimit | None],
) -> tuple[tuple[str, ConcurrencyLimit], ...]:
    """Each distinct limit once, labelled with its name (``name#2`` on a name clash)."""
    seen: set[int] = set()
    names: dict[str, int] = {}
    out: list[tuple[str, ConcurrencyLimit]] = []
    for lim in limits:
        if lim is None or id(lim) in seen:
            continue
        seen.add(id(lim))
        base = str(getattr(lim, "name", "concurrency"))
        names[base] = names.get(base, 0) + 1
        out.append((base if names[base] == 1 else f"{base}#{names[base]}", lim))
    return tuple(out)
