"""GuardMiddleware driven by a fake ASGI server: the middleware is called with a scope,
``receive`` and ``send`` directly, on a MockClock, with small fakes of the policies where
a test is about the plumbing and the real policies where it is about their behaviour."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from brownout.asgi import (
    LATENCY_BUCKETS_S,
    GuardMiddleware,
    OpenTelemetryMetrics,
    RequestCompleted,
    RequestRejected,
    RouteConfig,
    client_key,
    header_key,
)
from brownout.errors import InvalidConfig, Overloaded
from brownout.events import Event
from brownout.guard import deadline_headers, remaining
from brownout.testing import MockClock

Scope = dict[str, Any]
Message = dict[str, Any]


# -- a fake ASGI server ---------------------------------------------------------------------


def http_scope(
    path: str = "/",
    *,
    method: str = "GET",
    headers: Iterable[tuple[str, str]] = (),
    client: tuple[str, int] | None = ("127.0.0.1", 50000),
) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
        "client": client,
        "server": ("127.0.0.1", 8000),
    }


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    messages: list[Message]

    def json(self) -> Any:
        return json.loads(self.body)


async def request(app: Any, scope: Scope | None = None, **kwargs: Any) -> Response:
    """Call ``app`` like an ASGI server would and collect what it sends."""
    scope = scope if scope is not None else http_scope(**kwargs)
    messages: list[Message] = []
    sent_body = False

    async def receive() -> Message:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # a real server blocks until the client disconnects
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    headers = {k.decode(): v.decode() for k, v in start.get("headers", [])}
    return Response(start["status"], headers, body, messages)


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def make_app(
    status: int = 200,
    body: bytes = b"ok",
    *,
    seen: list[Scope] | None = None,
    during: Callable[[], object] | None = None,
    raises: BaseException | None = None,
) -> Callable[..., Awaitable[None]]:
    """A plain ASGI app answering ``status``; ``during()`` runs while it handles a request
    and its result is recorded in ``scope["seen"]``."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if seen is not None:
            seen.append(scope)
        if during is not None:
            scope["during"] = during()
        if raises is not None:
            raise raises
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


# -- fakes of the policies ------------------------------------------------------------------


class FakeOverloaded(Overloaded):
    def __init__(self, reason: str, retry_after_s: float) -> None:
        super().__init__(f"shed: {reason}", policy="fake")
        self.reason = reason
        self.retry_after_s = retry_after_s


class FakePermit:
    def __init__(self, limit: FakeLimit) -> None:
        self.limit = limit

    def release(self, *, dropped: bool = False, ignore: bool = False) -> None:
        self.limit.in_flight -= 1
        self.limit.released.append("ignored" if ignore else dropped)  # type: ignore[arg-type]


@dataclass
class FakeLimit:
    """A concurrency limit of ``limit`` slots that refuses with ``refuse`` when full."""

    limit: int = 10
    refuse: tuple[str, float] = ("queue_full", 2.3)
    name: str = "concurrency"
    in_flight: int = 0
    queued: int = 0
    acquired: list[tuple[Any, Any]] = field(default_factory=list)
    released: list[bool] = field(default_factory=list)

    def try_acquire(self, *, criticality: Any = None, deadline: Any = None) -> FakePermit | None:
        self.acquired.append((criticality, deadline))
        if self.in_flight >= self.limit:
            return None
        self.in_flight += 1
        return FakePermit(self)

    async def acquire(self, *, criticality: Any = None, deadline: Any = None) -> FakePermit:
        raise FakeOverloaded(*self.refuse)


@dataclass(frozen=True)
class FakeDecision:
    allowed: bool
    remaining: int = 0
    retry_after_s: float = 0.0
    reset_after_s: float = 0.0


@dataclass
class FakeRateLimit:
    """Allows the first ``allow`` requests per key, then refuses with ``retry_after_s``."""

    allow: int = 1
    retry_after_s: float = 1.5
    fail: bool = False
    keys: list[str] = field(default_factory=list)

    async def acheck(self, key: str = "", cost: int = 1) -> FakeDecision:
        if self.fail:
            raise ConnectionError("store down")
        self.keys.append(key)
        if self.keys.count(key) <= self.allow:
            return FakeDecision(True)
        return FakeDecision(False, retry_after_s=self.retry_after_s)


@dataclass(frozen=True)
class FakeShieldDecision:
    action: str
    client_id: str
    retry_after_s: float = 0.0


@dataclass
class FakeShield:
    action: str = "allow"
    client_id: str = "client-1"
    challenge: Any = None
    fail: bool = False
    trusted_proxies: tuple[str, ...] = ()
    observed: list[tuple[str, str, int]] = field(default_factory=list)

    async def adecide(self, scope: Scope) -> FakeShieldDecision:
        if self.fail:
            raise RuntimeError("shield bug")
        return FakeShieldDecision(self.action, self.client_id, 4.2)

    def observe(self, client_id: str, path: str, status: int) -> None:
        self.observed.append((client_id, path, status))


@dataclass
class FakeDimmer:
    value: float = 0.75
    latencies: list[float] = field(default_factory=list)

    def observe(self, latency_s: float) -> None:
        self.latencies.append(latency_s)


async def until(condition: Callable[[], bool]) -> None:
    """Let other tasks run until ``condition()`` holds (a bounded number of loop turns)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def recorder(mw: GuardMiddleware) -> list[Event]:
    events: list[Event] = []
    mw.events.subscribe(events.append)
    return events


# -- pass-through ---------------------------------------------------------------------------


def test_default_middleware_passes_the_request_and_response_through_unchanged() -> None:
    seen: list[Scope] = []
    mw = GuardMiddleware(make_app(201, b"made", seen=seen))
    scope = http_scope("/items")
    response = run(request(mw, scope))
    assert (response.status, response.body) == (201, b"made")
    assert response.headers == {"content-type": "text/plain"}  # nothing added
    assert seen == [scope]
    assert seen[0] is scope
    assert mw.limit is not None
    assert mw.limit.in_flight == 0


@pytest.mark.parametrize("kind", ["lifespan", "websocket"])
def test_lifespan_and_websocket_scopes_pass_through_with_the_same_objects(kind: str) -> None:
    calls: list[tuple[Any, Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append((scope, receive, send))

    limit = FakeLimit()
    mw = GuardMiddleware(app, limit=limit, rate_limits=[(FakeRateLimit(allow=0), None)])
    scope = {"type": kind, "path": "/ws"}

    async def receive() -> Message:
        return {}

    async def send(message: Message) -> None:
        return None

    run(mw(scope, receive, send))
    assert calls == [(scope, receive, send)]
    assert calls[0][0] is scope
    assert calls[0][1] is receive
    assert calls[0][2] is send
    assert limit.acquired == []


# -- concurrency limit ----------------------------------------------------------------------


def test_shedding_is_a_cheap_explicit_503_with_retry_after_and_reason() -> None:
    limit = FakeLimit(limit=0, refuse=("queue_full", 2.3))
    app_calls: list[Scope] = []
    mw = GuardMiddleware(make_app(seen=app_calls), limit=limit)
    response = run(request(mw))
    assert response.status == 503
    assert response.headers["retry-after"] == "3"  # whole seconds, rounded up
    assert response.headers["brownout-rejected"] == "queue_full"
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.body)
    assert response.json() == {"error": "overloaded", "reason": "queue_full"}
    assert app_calls == []


@pytest.mark.parametrize(
    ("retry_after_s", "header"), [(0.0, "1"), (0.2, "1"), (1.0, "1"), (1.01, "2"), (math.inf, "1")]
)
def test_retry_after_is_whole_seconds_at_least_one(retry_after_s: float, header: str) -> None:
    mw = GuardMiddleware(make_app(), limit=FakeLimit(limit=0, refuse=("limit", retry_after_s)))
    assert run(request(mw)).headers["retry-after"] == header


@pytest.mark.parametrize(
    ("status", "dropped"), [(200, False), (404, False), (500, False), (503, True), (504, True)]
)
def test_permit_is_released_dropped_only_on_overload_statuses(status: int, dropped: bool) -> None:
    limit = FakeLimit()
    run(request(GuardMiddleware(make_app(status), limit=limit)))
    assert limit.released == [dropped]
    assert limit.in_flight == 0


def test_permit_is_released_dropped_when_the_app_raises_and_the_error_propagates() -> None:
    limit = FakeLimit()
    mw = GuardMiddleware(make_app(raises=KeyError("boom")), limit=limit)
    with pytest.raises(KeyError):
        run(request(mw))
    assert limit.released == [True]


def test_permit_of_a_cancelled_request_is_released_as_ignored() -> None:
    limit = FakeLimit()

    async def main() -> None:
        started = asyncio.Event()

        async def hang(scope: Scope, receive: Any, send: Any) -> None:
            started.set()
            await asyncio.Event().wait()

        task = asyncio.create_task(request(GuardMiddleware(hang, limit=limit)))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())
    assert limit.released == ["ignored"]  # a cancellation says nothing about latency


def test_permit_is_released_dropped_when_the_response_ends_past_the_deadline() -> None:
    clock = MockClock(100.0)
    limit = FakeLimit()
    mw = GuardMiddleware(make_app(during=lambda: clock.advance(0.5)), limit=limit, clock=clock)
    run(request(mw, headers=[("brownout-timeout-ms", "400")]))
    assert limit.acquired == [(None, pytest.approx(100.4))]
    assert limit.released == [True]
    run(request(mw, headers=[("brownout-timeout-ms", "600")]))
    assert limit.released == [True, False]


def test_limit_false_runs_without_a_limit() -> None:
    mw = GuardMiddleware(make_app(), limit=False)
    assert mw.limit is None
    assert run(request(mw)).status == 200


# -- rate limits ----------------------------------------------------------------------------


def test_rate_limit_refuses_with_429_and_its_retry_after() -> None:
    rl = FakeRateLimit(allow=1, retry_after_s=2.5)
    limit = FakeLimit()
    mw = GuardMiddleware(make_app(), limit=limit, rate_limits=[(rl, None)])
    assert run(request(mw)).status == 200
    response = run(request(mw))
    assert response.status == 429
    assert response.headers["retry-after"] == "3"
    assert response.headers["brownout-rejected"] == "rate_limit"
    assert response.json() == {"error": "rate_limited", "reason": "rate_limit"}
    assert len(limit.acquired) == 1  # refused before the concurrency limit
    assert rl.keys == ["127.0.0.1", "127.0.0.1"]  # default key: the peer address


def test_rate_limit_keys_default_to_the_shield_client_id_or_use_the_key_function() -> None:
    by_client, by_key = FakeRateLimit(allow=5), FakeRateLimit(allow=5)
    mw = GuardMiddleware(
        make_app(),
        shield=FakeShield(client_id="shield-id"),  # type: ignore[arg-type]
        rate_limits=[(by_client, None), (by_key, header_key("X-API-Key"))],  # type: ignore[list-item]
    )
    run(request(mw, headers=[("x-api-key", "k1")]))
    run(request(mw))
    assert by_client.keys == ["shield-id", "shield-id"]
    assert by_key.keys == ["k1", "127.0.0.1"]  # no header: the peer address


def test_a_failing_rate_limit_store_fails_open_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    mw = GuardMiddleware(make_app(), rate_limits=[(FakeRateLimit(fail=True), None)])  # type: ignore[list-item]
    with caplog.at_level(logging.ERROR, logger="brownout.asgi"):
        assert run(request(mw)).status == 200
    assert "failed; request allowed" in caplog.text


def test_client_key_without_a_client_is_empty() -> None:
    assert client_key(http_scope(client=None)) == ""
    assert client_key(http_scope(client=("10.1.2.3", 1))) == "10.1.2.3"


# -- shield ---------------------------------------------------------------------------------


def test_shield_block_is_403_and_limit_is_429() -> None:
    shield = FakeShield(action="block")
    mw = GuardMiddleware(make_app(), shield=shield)  # type: ignore[arg-type]
    response = run(request(mw))
    assert response.status == 403
    assert response.headers["brownout-rejected"] == "shield_block"
    assert response.json() == {"error": "forbidden", "reason": "shield_block"}
    shield.action = "limit"
    response = run(request(mw))
    assert response.status == 429
    assert response.headers["retry-after"] == "5"
    assert response.headers["brownout-rejected"] == "shield_limit"


def test_shield_challenge_sends_the_callback_triple() -> None:
    def challenge(scope: Scope, decision: Any) -> tuple[int, dict[str, str], bytes]:
        return 401, {"Content-Type": "text/html"}, b"<p>prove it</p>"

    mw = GuardMiddleware(make_app(), shield=FakeShield(action="challenge", challenge=challenge))  # type: ignore[arg-type]
    events = recorder(mw)
    response = run(request(mw))
    assert response.status == 401
    assert response.body == b"<p>prove it</p>"
    assert response.headers["content-type"] == "text/html"
    assert response.headers["content-length"] == "15"
    assert response.headers["brownout-rejected"] == "shield_challenge"
    assert [(type(e), e.reason, e.status) for e in events] == [  # type: ignore[attr-defined]
        (RequestRejected, "shield_challenge", 401)
    ]


def test_shield_challenge_sends_an_asgi_response() -> None:
    from starlette.responses import HTMLResponse

    async def challenge(scope: Scope, decision: Any) -> HTMLResponse:
        return HTMLResponse("<form>captcha</form>", status_code=403)

    mw = GuardMiddleware(make_app(), shield=FakeShield(action="challenge", challenge=challenge))  # type: ignore[arg-type]
    response = run(request(mw))
    assert (response.status, response.body) == (403, b"<form>captcha</form>")


def test_shield_observes_the_status_of_admitted_requests() -> None:
    shield = FakeShield()
    mw = GuardMiddleware(make_app(404), shield=shield)  # type: ignore[arg-type]
    run(request(mw, path="/nope"))
    assert shield.observed == [("client-1", "/nope", 404)]


def test_a_failing_shield_fails_open(caplog: pytest.LogCaptureFixture) -> None:
    mw = GuardMiddleware(make_app(), shield=FakeShield(fail=True))  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="brownout.asgi"):
        assert run(request(mw)).status == 200
    assert "shield failed" in caplog.text


# -- criticality ----------------------------------------------------------------------------


def crit_app(seen: list[Any]) -> Callable[..., Awaitable[None]]:
    from brownout.guard._criticality import current_criticality

    return make_app(seen=seen, during=current_criticality)


def test_trusted_criticality_header_is_set_for_the_app_and_passed_to_the_limit() -> None:
    from brownout.guard._criticality import Criticality

    seen: list[Scope] = []
    limit = FakeLimit()
    mw = GuardMiddleware(crit_app(seen), limit=limit)
    run(request(mw, headers=[("brownout-criticality", "sheddable_plus")]))  # from loopback
    assert seen[-1]["during"] is Criticality.SHEDDABLE_PLUS
    assert limit.acquired[-1][0] is Criticality.SHEDDABLE_PLUS


def test_untrusted_or_malformed_criticality_header_falls_back_to_route_rules() -> None:
    from brownout.guard._criticality import Criticality

    seen: list[Scope] = []
    rules = {"/batch/*": Criticality.SHEDDABLE, "/pay*": Criticality.CRITICAL_PLUS}
    mw = GuardMiddleware(crit_app(seen), limit=FakeLimit(), criticality=rules)
    header = [("brownout-criticality", "critical_plus")]
    run(request(mw, path="/batch/run", headers=header, client=("203.0.113.9", 1)))
    assert seen[-1]["during"] is Criticality.SHEDDABLE  # outsiders cannot raise their priority
    run(request(mw, path="/batch/run", headers=[("brownout-criticality", "urgent!")]))
    assert seen[-1]["during"] is Criticality.SHEDDABLE
    run(request(mw, path="/payments"))
    assert seen[-1]["during"] is Criticality.CRITICAL_PLUS
    run(request(mw, path="/other"))
    assert seen[-1]["during"] is Criticality.CRITICAL  # the context default: nothing set


def test_criticality_trust_is_configurable() -> None:
    from brownout.guard._criticality import Criticality

    seen: list[Scope] = []
    header = [("brownout-criticality", "sheddable")]
    outsider = ("198.51.100.7", 1)
    for trust, peer, expected in [
        (True, outsider, Criticality.SHEDDABLE),
        (False, ("127.0.0.1", 1), Criticality.CRITICAL),
        (["198.51.100.0/24"], outsider, Criticality.SHEDDABLE),
        (["10.0.0.0/8"], ("127.0.0.1", 1), Criticality.CRITICAL),
        (None, ("::ffff:127.0.0.1", 1), Criticality.SHEDDABLE),  # IPv4-mapped loopback
        (None, None, Criticality.CRITICAL),  # a unix socket: no peer address
    ]:
        mw = GuardMiddleware(crit_app(seen), limit=FakeLimit(), trust_criticality_from=trust)
        run(request(mw, headers=header, client=peer))
        assert seen[-1]["during"] is expected, (trust, peer)


def test_the_shields_trusted_proxies_are_trusted_for_the_criticality_header() -> None:
    from brownout.guard._criticality import Criticality

    seen: list[Scope] = []
    shield = FakeShield(trusted_proxies=("192.0.2.0/24",))
    mw = GuardMiddleware(crit_app(seen), shield=shield)  # type: ignore[arg-type]
    run(request(mw, headers=[("brownout-criticality", "sheddable")], client=("192.0.2.10", 1)))
    assert seen[-1]["during"] is Criticality.SHEDDABLE


def test_criticality_rules_may_be_a_function_of_the_scope() -> None:
    from brownout.guard._criticality import Criticality

    seen: list[Scope] = []

    def rule(scope: Scope) -> Criticality | None:
        return Criticality.SHEDDABLE if scope["method"] == "GET" else None

    mw = GuardMiddleware(crit_app(seen), limit=FakeLimit(), criticality=rule)
    run(request(mw, method="GET"))
    assert seen[-1]["during"] is Criticality.SHEDDABLE
    run(request(mw, method="POST"))
    assert seen[-1]["during"] is Criticality.CRITICAL


# -- deadline -------------------------------------------------------------------------------


def test_deadline_header_sets_the_deadline_for_the_app_and_its_outgoing_calls() -> None:
    clock = MockClock(50.0)
    seen: list[Scope] = []

    def look() -> tuple[float | None, dict[str, str]]:
        clock.advance(0.25)  # the app worked for 250 ms
        return remaining(), deadline_headers()

    limit = FakeLimit()
    mw = GuardMiddleware(make_app(seen=seen, during=look), limit=limit, clock=clock)
    run(request(mw, headers=[("grpc-timeout", "2S"), ("brownout-timeout-ms", "750")]))
    left, outgoing = seen[-1]["during"]
    assert left == 0.5  # the smallest budget wins, less the time spent
    assert outgoing == {"brownout-timeout-ms": "500"}
    assert limit.acquired[-1] == (None, pytest.approx(50.75))
    assert remaining() is None  # reset after the request


def test_the_app_gets_the_budget_left_after_waiting_in_line() -> None:
    clock = MockClock(10.0)

    class SlowLine(FakeLimit):
        def try_acquire(self, *, criticality: Any = None, deadline: Any = None) -> None:
            return None

        async def acquire(self, *, criticality: Any = None, deadline: Any = None) -> FakePermit:
            clock.advance(0.3)  # waited in line
            self.in_flight += 1
            return FakePermit(self)

    seen: list[Scope] = []
    mw = GuardMiddleware(make_app(seen=seen, during=remaining), limit=SlowLine(), clock=clock)
    run(request(mw, headers=[("brownout-timeout-ms", "1000")]))
    assert seen[-1]["during"] == pytest.approx(0.7)


def test_spent_budget_is_refused_before_any_work() -> None:
    seen: list[Scope] = []
    limit = FakeLimit()
    mw = GuardMiddleware(make_app(seen=seen), limit=limit)
    response = run(request(mw, headers=[("brownout-timeout-ms", "0")]))
    assert response.status == 503
    assert response.headers["brownout-rejected"] == "deadline"
    assert seen == []
    assert limit.acquired == []


def test_deadline_header_can_be_ignored_and_a_bad_one_is_ignored() -> None:
    seen: list[Scope] = []
    mw = GuardMiddleware(
        make_app(seen=seen, during=remaining), limit=FakeLimit(), deadline_header=False
    )
    run(request(mw, headers=[("brownout-timeout-ms", "0")]))
    assert seen[-1]["during"] is None
    mw = GuardMiddleware(make_app(seen=seen, during=remaining), limit=FakeLimit())
    run(request(mw, headers=[("brownout-timeout-ms", "soon")]))
    assert seen[-1]["during"] is None


# -- routes ---------------------------------------------------------------------------------


def test_routes_bypass_own_limit_own_rate_limits_first_match_wins() -> None:
    from brownout.guard._criticality import Criticality

    shared, own = FakeLimit(), FakeLimit(name="checkout")
    strict = FakeRateLimit(allow=0)
    seen: list[Scope] = []
    mw = GuardMiddleware(
        crit_app(seen),
        limit=shared,
        rate_limits=[(strict, None)],  # type: ignore[list-item]
        routes={
            "/healthz": RouteConfig(bypass=True),
            "/checkout*": RouteConfig(
                criticality=Criticality.CRITICAL_PLUS,
                limit=own,
                rate_limits=(),  # type: ignore[arg-type]
            ),
            "/checkout/slow": RouteConfig(limit=False),  # shadowed by the rule above
            "/public/*": RouteConfig(limit=False, rate_limits=()),
        },
    )
    assert run(request(mw, path="/healthz")).status == 200
    assert shared.acquired == []
    assert strict.keys == []
    assert run(request(mw, path="/checkout/slow")).status == 200
    assert seen[-1]["during"] is Criticality.CRITICAL_PLUS
    assert len(own.acquired) == 1
    assert shared.acquired == []
    assert run(request(mw, path="/public/logo.png")).status == 200
    assert shared.acquired == []
    assert run(request(mw, path="/other")).status == 429  # the middleware's rate limit


def test_route_config_is_frozen_and_validated() -> None:
    config = RouteConfig(bypass=True)
    with pytest.raises(AttributeError):
        config.bypass = False  # type: ignore[misc]
    with pytest.raises(InvalidConfig, match="criticality"):
        RouteConfig(criticality="high")  # type: ignore[arg-type]
    with pytest.raises(InvalidConfig, match="rate_limits"):
        RouteConfig(rate_limits=[object()])  # type: ignore[list-item]
    with pytest.raises(InvalidConfig, match="limit"):
        RouteConfig(limit=5)  # type: ignore[arg-type]
    with pytest.raises(InvalidConfig, match="bypass"):
        RouteConfig(bypass="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"metrics_path": "metrics"}, "metrics_path"),
        ({"routes": {"/x": {"bypass": True}}}, "routes"),
        ({"limit": 10}, "limit"),
        ({"rate_limits": [object()]}, "rate_limits"),
        ({"trust_criticality_from": ["not-a-net"]}, "trust_criticality_from"),
        ({"trust_criticality_from": "10.0.0.0/8"}, "trust_criticality_from"),
        ({"criticality": {"/x": "high"}}, "criticality"),
        ({"criticality": 3}, "criticality"),
        ({"shield": object()}, "shield"),
        ({"dimmer": object()}, "dimmer"),
        ({"deadline_header": "yes"}, "deadline_header"),
    ],
)
def test_bad_configuration_names_the_field(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        GuardMiddleware(make_app(), **kwargs)
    assert info.value.name == name
    with pytest.raises(InvalidConfig):
        header_key("")


# -- dimmer and events ----------------------------------------------------------------------


def test_dimmer_observes_the_response_time_to_the_last_body_chunk() -> None:
    clock = MockClock()

    async def streaming(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        clock.advance(0.2)
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        clock.advance(0.1)
        await send({"type": "http.response.body", "body": b"b", "more_body": False})
        clock.advance(5.0)  # background work after the response: not the user's latency

    dimmer = FakeDimmer()
    mw = GuardMiddleware(streaming, limit=FakeLimit(), dimmer=dimmer, clock=clock)  # type: ignore[arg-type]
    events = recorder(mw)
    assert run(request(mw)).body == b"ab"
    assert dimmer.latencies == [pytest.approx(0.3)]
    (done,) = events
    assert isinstance(done, RequestCompleted)
    assert (done.status, done.duration_s, done.dropped) == (200, pytest.approx(0.3), False)


def test_events_name_the_route_reason_and_criticality() -> None:
    from brownout.guard._criticality import Criticality

    mw = GuardMiddleware(
        make_app(),
        limit=FakeLimit(limit=0, refuse=("queue_timeout", 0.5)),
        routes={"/api/*": RouteConfig(criticality=Criticality.SHEDDABLE)},
        name="front",
    )
    events = recorder(mw)
    run(request(mw, path="/api/x"))
    (rejected,) = events
    assert isinstance(rejected, RequestRejected)
    assert (rejected.policy, rejected.reason, rejected.status) == ("front", "queue_timeout", 503)
    assert (rejected.retry_after_s, rejected.route) == (1.0, "/api/*")
    mw = GuardMiddleware(make_app(), routes={"/api/*": RouteConfig(limit=False)})
    events = recorder(mw)
    run(request(mw, path="/api/x", headers=[("brownout-criticality", "critical-plus")]))
    (done,) = events
    assert isinstance(done, RequestCompleted)
    assert (done.route, done.criticality) == ("/api/*", "critical_plus")


# -- metrics --------------------------------------------------------------------------------

_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r"(?:\{(?P<labels>(?:[a-zA-Z_][a-zA-Z0-9_]*=\"(?:[^\"\\]|\\.)*\",?)*)\})?"
    r" (?P<value>[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|Inf|NaN))$"
)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> dict[str, dict[str, Any]]:
    """A tiny parser of the Prometheus text format 0.0.4: every sample line must parse,
    every sample must belong to a family declared by a preceding ``# TYPE``. Returns
    ``{family: {"type": ..., "help": ..., "samples": {(name, labels): value}}}``."""
    assert text.endswith("\n")
    families: dict[str, dict[str, Any]] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            families.setdefault(name, {"samples": {}})["help"] = help_text
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            families.setdefault(name, {"samples": {}})["type"] = kind
            current = name
        else:
            match = _SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            assert current is not None
            name = match["name"]
            suffixes = ("", "_bucket", "_sum", "_count")
            assert any(name == current + s for s in suffixes), (name, current)
            labels = tuple(_LABEL.findall(match["labels"] or ""))
            value = float(match["value"].replace("Inf", "inf"))
            families[current]["samples"][(name, labels)] = value
    for name, family in families.items():
        assert "type" in family, name
        assert "help" in family, name
    return families


def test_metrics_endpoint_serves_prometheus_text() -> None:
    clock = MockClock()
    durations = iter([0.003, 0.04, 0.3, 20.0])

    def work() -> None:
        clock.advance(next(durations))

    limit = FakeLimit(limit=4)
    app = make_app(during=work)
    mw = GuardMiddleware(
        app,
        limit=limit,
        rate_limits=[(FakeRateLimit(allow=4), None)],  # type: ignore[list-item]
        dimmer=FakeDimmer(value=0.5),  # type: ignore[arg-type]
        metrics_path="/metrics",
        clock=clock,
    )
    for i in range(5):
        run(request(mw, headers=[("brownout-timeout-ms", "10000")] if i == 3 else []))
    limit.limit = 0
    run(request(mw, client=("10.0.0.1", 1)))  # shed: queue_full
    response = run(request(mw, path="/metrics"))
    assert response.status == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = parse_prometheus(response.body.decode())
    p = "brownout_guard_"
    samples = {k: v for f in families.values() for k, v in f["samples"].items()}
    assert families[f"{p}requests_total"]["type"] == "counter"
    assert samples[(f"{p}requests_total", (("outcome", "admitted"),))] == 4
    assert samples[(f"{p}requests_total", (("outcome", "rejected"),))] == 2
    assert samples[(f"{p}rejected_total", (("reason", "rate_limit"),))] == 1
    assert samples[(f"{p}rejected_total", (("reason", "queue_full"),))] == 1
    assert samples[(f"{p}dropped_total", ())] == 1  # 20 s against a 10 s deadline
    hist = f"{p}request_duration_seconds"
    assert families[hist]["type"] == "histogram"
    buckets = [
        (float(labels[0][1].replace("Inf", "inf")), v)
        for (name, labels), v in samples.items()
        if name == f"{hist}_bucket"
    ]
    assert [b for b, _ in buckets] == [*LATENCY_BUCKETS_S, math.inf]
    counts = [v for _, v in buckets]
    assert counts == sorted(counts)  # cumulative
    assert counts[-1] == samples[(f"{hist}_count", ())] == 4
    assert dict(buckets)[0.005] == 1
    assert dict(buckets)[0.05] == 2
    assert dict(buckets)[10.0] == 3
    assert samples[(f"{hist}_sum", ())] == pytest.approx(20.343)
    labels = (("limit", "concurrency"),)
    assert families[f"{p}concurrency_limit"]["type"] == "gauge"
    assert samples[(f"{p}concurrency_limit", labels)] == 0
    assert samples[(f"{p}in_flight", labels)] == 0
    assert samples[(f"{p}queued", labels)] == 0
    assert samples[(f"{p}dimmer", ())] == 0.5
    assert len(limit.acquired) == 5  # the scrape itself took no permit


def test_metrics_endpoint_answers_head_and_refuses_other_methods() -> None:
    mw = GuardMiddleware(make_app(), limit=FakeLimit(), metrics_path="/metrics")
    head = run(request(mw, path="/metrics", method="HEAD"))
    assert (head.status, head.body) == (200, b"")
    post = run(request(mw, path="/metrics", method="POST"))
    assert (post.status, post.headers["allow"]) == (405, "GET, HEAD")


def test_metrics_label_distinct_limits_that_share_a_name() -> None:
    mw = GuardMiddleware(
        make_app(),
        limit=FakeLimit(),
        routes={"/a": RouteConfig(limit=FakeLimit())},  # type: ignore[arg-type]
        metrics_path="/metrics",
    )
    text = run(request(mw, path="/metrics")).body.decode()
    assert 'brownout_guard_in_flight{limit="concurrency"} 0' in text
    assert 'brownout_guard_in_flight{limit="concurrency#2"} 0' in text


def test_without_metrics_path_nothing_is_served_or_subscribed() -> None:
    mw = GuardMiddleware(make_app(404), limit=FakeLimit())
    assert not mw.events
    assert run(request(mw, path="/metrics")).status == 404  # the app's own answer


# -- OpenTelemetry --------------------------------------------------------------------------


def test_opentelemetry_is_a_no_op_without_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes the import fail as if the package were absent.
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.setitem(sys.modules, "opentelemetry.metrics", None)
    recorder_ = OpenTelemetryMetrics()
    assert recorder_.enabled is False
    recorder_(RequestCompleted(0.0, "guard", 200, 0.1, False, None, None))
    recorder_.observe_gauges(list)
    mw = GuardMiddleware(make_app(), limit=FakeLimit(), opentelemetry=True)
    assert not mw.events  # nothing subscribed
    assert run(request(mw)).status == 200


class FakeInstrument:
    def __init__(self, log: list[tuple[str, float, dict[str, str]]], name: str) -> None:
        self.log, self.name = log, name

    def add(self, amount: float, attributes: dict[str, str] | None = None) -> None:
        self.log.append((self.name, amount, dict(attributes or {})))

    record = add


class FakeMeter:
    """The shape of ``opentelemetry.metrics.Meter`` the recorder uses."""

    def __init__(self) -> None:
        self.log: list[tuple[str, float, dict[str, str]]] = []
        self.created: dict[str, dict[str, Any]] = {}

    def create_counter(self, name: str, unit: str = "", description: str = "") -> FakeInstrument:
        self.created[name] = {"unit": unit}
        return FakeInstrument(self.log, name)

    def create_histogram(
        self, name: str, unit: str = "", description: str = "", **kw: Any
    ) -> FakeInstrument:
        self.created[name] = {"unit": unit, **kw}
        return FakeInstrument(self.log, name)


def test_opentelemetry_recorder_maps_events_to_instruments() -> None:
    from brownout.events import CallRejected

    meter = FakeMeter()
    otel = OpenTelemetryMetrics(meter)
    assert otel.enabled
    assert meter.created["brownout.guard.request.duration"]["unit"] == "s"
    assert meter.created["brownout.guard.request.duration"][
        "explicit_bucket_boundaries_advisory"
    ] == list(LATENCY_BUCKETS_S)
    otel(RequestCompleted(1.0, "guard", 200, 0.25, False, None, None))
    otel(RequestRejected(1.0, "guard", "queue_full", 503, 1.0, None))
    otel(CallRejected(1.0, "concurrency", "limit"))
    assert meter.log == [
        ("brownout.guard.requests", 1, {"outcome": "admitted"}),
        ("brownout.guard.request.duration", 0.25, {"status_class": "2xx"}),
        ("brownout.guard.requests", 1, {"outcome": "rejected"}),
        ("brownout.guard.rejected", 1, {"reason": "queue_full"}),
        (
            "brownout.guard.events",
            1,
            {"event": "CallRejected", "policy": "concurrency", "reason": "limit"},
        ),
    ]


# -- with the real policies -----------------------------------------------------------------


def test_default_limit_is_gradient2_on_the_middleware_clock() -> None:
    from brownout.guard._limit import ConcurrencyLimit

    clock = MockClock()
    mw = GuardMiddleware(make_app(), clock=clock)
    assert isinstance(mw.limit, ConcurrencyLimit)
    assert mw.limit.algorithm == "gradient2"
    assert mw.limit.clock is clock
    assert mw.limit.max_queue > 0


def test_real_limit_queues_then_sheds_queue_full_and_queue_timeout() -> None:
    from brownout.guard._limit import ConcurrencyLimit

    clock = MockClock()
    limit = ConcurrencyLimit(algorithm="fixed", initial_limit=1, max_queue=1, clock=clock)

    async def main() -> None:
        gate = asyncio.Event()

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            if scope["path"] == "/hold":
                await gate.wait()
            await make_app()(scope, receive, send)

        mw = GuardMiddleware(app, limit=limit, clock=clock)
        first = asyncio.create_task(request(mw, path="/hold"))
        await until(lambda: limit.in_flight >= 1)
        second = asyncio.create_task(request(mw, path="/waits"))
        await until(lambda: limit.queued >= 1)
        third = await request(mw, path="/full")
        assert third.status == 503
        assert third.headers["brownout-rejected"] == "queue_full"
        assert int(third.headers["retry-after"]) >= 1
        clock.advance(0.2)  # past the queue's 100 ms interval
        timed_out = await second
        assert timed_out.status == 503
        assert timed_out.headers["brownout-rejected"] == "queue_timeout"
        gate.set()
        assert (await first).status == 200
        assert (limit.in_flight, limit.queued) == (0, 0)

    run(main())


def test_criticality_from_the_header_decides_who_is_shed_in_the_real_queue() -> None:
    from brownout.guard._limit import ConcurrencyLimit

    clock = MockClock()
    limit = ConcurrencyLimit(algorithm="fixed", initial_limit=1, max_queue=1, clock=clock)

    async def main() -> None:
        gate = asyncio.Event()

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            await gate.wait()
            await make_app()(scope, receive, send)

        mw = GuardMiddleware(app, limit=limit, clock=clock)
        holder = asyncio.create_task(request(mw))
        await until(lambda: limit.in_flight >= 1)
        batch = asyncio.create_task(request(mw, headers=[("brownout-criticality", "sheddable")]))
        await until(lambda: limit.queued >= 1)
        vip = asyncio.create_task(request(mw, headers=[("brownout-criticality", "critical_plus")]))
        evicted = await batch  # the full queue made room for the more critical arrival
        assert evicted.status == 503
        assert evicted.headers["brownout-rejected"] == "queue_full"
        gate.set()
        assert (await holder).status == 200
        assert (await vip).status == 200

    run(main())


def test_real_rate_limit_refuses_past_its_burst_and_recovers() -> None:
    from brownout.guard._ratelimit import RateLimit

    clock = MockClock()
    rl = RateLimit(rate="1/s", burst=2, clock=clock)
    mw = GuardMiddleware(make_app(), limit=False, rate_limits=[(rl, None)], clock=clock)
    codes = [run(request(mw)).status for _ in range(3)]
    assert codes == [200, 200, 429]
    refused = run(request(mw))
    assert refused.headers["retry-after"] == "1"
    assert run(request(mw, client=("10.0.0.2", 1))).status == 200  # another client, own bucket
    clock.advance(1.0)
    assert run(request(mw)).status == 200


def test_real_dimmer_is_fed_response_times() -> None:
    from brownout.guard._dimmer import Dimmer

    clock = MockClock()
    dimmer = Dimmer(setpoint_s=0.1, window_s=5.0, min_samples=2, clock=clock)
    mw = GuardMiddleware(
        make_app(during=lambda: clock.advance(0.5)), limit=False, dimmer=dimmer, clock=clock
    )
    for _ in range(20):
        run(request(mw))
    assert dimmer.latency_s is not None
    assert dimmer.value < 1.0  # 500 ms against a 100 ms setpoint: optional work is dimmed


def test_real_shield_limits_then_blocks_a_timer_driven_client_while_a_person_passes() -> None:
    from brownout.asgi import TrafficShield

    clock = MockClock()
    mw = GuardMiddleware(make_app(), shield=TrafficShield(clock=clock), limit=False, clock=clock)
    person = [("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"), ("cookie", "s=1")]
    bot_codes, person_codes = [], []
    for i in range(30):
        clock.advance(0.05)  # a request every 50 ms, like clockwork, no user agent, no cookie
        bot_codes.append(run(request(mw, client=("203.0.113.9", 1))).status)
        if i % 7 == 3:  # a person browsing meanwhile, with a browser and a session
            page = f"/page/{i % 4}"
            person_codes.append(
                run(request(mw, path=page, headers=person, client=("198.51.100.4", 1))).status
            )
    assert bot_codes[:5] == [200] * 5  # innocent until its behaviour shows
    assert bot_codes[-5:] == [403] * 5
    assert set(bot_codes) <= {200, 429, 403}
    assert person_codes == [200] * len(person_codes)


def test_real_shield_client_id_keys_the_rate_limits_and_ignores_spoofed_forwarding() -> None:
    from brownout.asgi import TrafficShield

    rl = FakeRateLimit(allow=100)
    shield = TrafficShield(trusted_proxies=["10.0.0.0/8"])
    mw = GuardMiddleware(make_app(), shield=shield, rate_limits=[(rl, None)], limit=False)  # type: ignore[list-item]
    spoof = [("x-forwarded-for", "192.0.2.1")]
    run(request(mw, headers=spoof, client=("203.0.113.9", 1)))  # not a trusted proxy
    run(request(mw, headers=spoof, client=("10.1.1.1", 1)))  # our proxy: believed
    assert rl.keys == ["ip:203.0.113.9", "ip:192.0.2.1"]


def test_opentelemetry_sdk_collects_the_middlewares_metrics() -> None:
    sdk = pytest.importorskip(
        "opentelemetry.sdk.metrics", reason="opentelemetry-sdk is not installed (optional)"
    )
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = sdk.MeterProvider(metric_readers=[reader])
    otel = OpenTelemetryMetrics(provider.get_meter("test"))
    limit = FakeLimit(limit=1)
    mw = GuardMiddleware(make_app(), limit=limit, opentelemetry=otel)  # type: ignore[arg-type]
    run(request(mw))
    limit.limit = 0
    run(request(mw))
    data = reader.get_metrics_data()
    points: dict[str, list[Any]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points[metric.name] = list(metric.data.data_points)
    requests = {p.attributes["outcome"]: p.value for p in points["brownout.guard.requests"]}
    assert requests == {"admitted": 1, "rejected": 1}
    (rejected,) = points["brownout.guard.rejected"]
    assert (dict(rejected.attributes), rejected.value) == ({"reason": "queue_full"}, 1)
    (duration,) = points["brownout.guard.request.duration"]
    assert duration.count == 1
    assert list(duration.explicit_bounds) == list(LATENCY_BUCKETS_S)
    (gauge,) = points["brownout.guard.limit"]
    assert (dict(gauge.attributes), gauge.value) == ({"limit": "concurrency"}, 0)
