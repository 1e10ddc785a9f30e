"""In-process fault injection: the httpx transports and the ASGI middleware apply the same
HttpFault actions as the proxy, without a socket and without sleeping for real."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fault_stats import binomial_p_value

from brownout.faults import Action, HttpFault, HttpFaultSet
from brownout.faults._inprocess import AsyncFaultTransport, FaultMiddleware, FaultTransport
from brownout.testing import MockClock

BODY = bytes(range(256)) * 40  # 10240 bytes
ABORT_BODY = b'{"error": "injected by brownout", "status": %d}'


def faults_of(*faults: HttpFault, seed: int = 1) -> HttpFaultSet:
    return HttpFaultSet(faults, rng=random.Random(seed))


def delay(delay_s: float, **params: Any) -> HttpFault:
    return HttpFault(name="delay", kind="http_delay", params={"delay_s": delay_s, **params})


def abort(status: int = 503, **params: Any) -> HttpFault:
    return HttpFault(name="abort", kind="http_abort", params={"status": status, **params})


def reset(**params: Any) -> HttpFault:
    return HttpFault(name="reset", kind="http_reset", params=params)


def slow(rate_kb_s: float, **params: Any) -> HttpFault:
    return HttpFault(name="slow", kind="http_slow_body", params={"rate_kb_s": rate_kb_s, **params})


class Upstream:
    """An httpx.MockTransport handler that counts the requests it serves."""

    def __init__(self, body: bytes = BODY, headers: dict[str, str] | None = None) -> None:
        self.body = body
        self.headers = {"X-Upstream": "yes", **(headers or {})}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200, headers=self.headers, content=self.body)


class Recorder:
    """A sync sleep that records and never waits."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)


class AsyncRecorder(Recorder):
    async def __call__(self, seconds: float) -> None:  # type: ignore[override]
        self.slept.append(seconds)


def sync_client(
    faults: HttpFaultSet, upstream: Upstream, sleep: Callable[[float], object], **kw: Any
) -> httpx.Client:
    transport = FaultTransport(httpx.MockTransport(upstream), faults, sleep=sleep, **kw)
    return httpx.Client(transport=transport, base_url="http://upstream.test")


# -- FaultTransport (sync) -----------------------------------------------------------------


def test_no_fault_passes_through() -> None:
    upstream, sleep = Upstream(), Recorder()
    with sync_client(faults_of(), upstream, sleep) as client:
        response = client.get("/")
    assert response.status_code == 200
    assert response.content == BODY
    assert len(upstream.requests) == 1
    assert sleep.slept == []


def test_delay_sleeps_then_calls_inner() -> None:
    upstream, sleep = Upstream(), Recorder()
    with sync_client(faults_of(delay(0.25)), upstream, sleep) as client:
        response = client.get("/")
    assert sleep.slept == [0.25]
    assert response.content == BODY
    assert response.headers["x-upstream"] == "yes"
    assert len(upstream.requests) == 1


def test_no_real_sleeping_with_an_injected_sleep() -> None:
    upstream, sleep = Upstream(), Recorder()
    started = time.monotonic()
    with sync_client(faults_of(delay(30.0), slow(0.1)), upstream, sleep) as client:
        response = client.get("/")
    assert time.monotonic() - started < 5.0
    assert response.content == BODY
    assert sum(sleep.slept) == pytest.approx(30.0 + len(BODY) / 100)


@pytest.mark.parametrize(
    ("status", "retry_after_s", "retry_after"),
    [(503, 1.5, "2"), (429, 3.0, "3"), (500, None, None)],
)
def test_abort_answers_without_the_upstream(
    status: int, retry_after_s: float | None, retry_after: str | None
) -> None:
    params = {} if retry_after_s is None else {"retry_after_s": retry_after_s}
    upstream, sleep = Upstream(), Recorder()
    with sync_client(faults_of(abort(status, **params)), upstream, sleep) as client:
        response = client.post("/pay", content=b"card=1")
    assert upstream.requests == []
    assert response.status_code == status
    assert response.headers.get("retry-after") == retry_after
    assert response.headers["content-type"] == "application/json"
    assert response.content == ABORT_BODY % status
    assert json.loads(response.content) == {"error": "injected by brownout", "status": status}
    wire = Action("abort", status=status, retry_after_s=retry_after_s).abort_response()
    assert wire.endswith(b"\r\n\r\n" + response.content)  # the proxy's very bytes


def test_abort_after_a_delay() -> None:
    upstream, sleep = Upstream(), Recorder()
    with sync_client(faults_of(delay(0.1), abort()), upstream, sleep) as client:
        response = client.get("/")
    assert sleep.slept == [0.1]
    assert response.status_code == 503


def test_reset_raises_read_error_after_part_of_the_body() -> None:
    upstream, sleep = Upstream(), Recorder()
    with sync_client(faults_of(reset()), upstream, sleep) as client:
        with pytest.raises(httpx.ReadError, match="reset"):
            client.get("/")
        with client.stream("GET", "/") as response:
            assert response.status_code == 200
            assert response.headers["x-upstream"] == "yes"
            assert response.headers["content-length"] == str(len(BODY))
            received = bytearray()
            with pytest.raises(httpx.ReadError) as info:
                for chunk in response.iter_raw():
                    received += chunk
    assert bytes(received) == BODY[: len(BODY) // 2]
    assert info.value.request.url.path == "/"
    assert len(upstream.requests) == 2  # a reset lets the request through


@pytest.mark.parametrize("body", [b"", b"x"])
def test_reset_of_a_tiny_body_sends_none_of_it(body: bytes) -> None:
    upstream, sleep = Upstream(body=body), Recorder()
    with (
        sync_client(faults_of(reset()), upstream, sleep) as client,
        client.stream("GET", "/") as response,
        pytest.raises(httpx.ReadError),
    ):
        response.read()


def test_slow_body_trickles_at_the_rate() -> None:
    rate_kb_s = 20.0  # 20000 B/s: 400-byte slices of 20 ms
    upstream, sleep = Upstream(), Recorder()
    with (
        sync_client(faults_of(slow(rate_kb_s)), upstream, sleep) as client,
        client.stream("GET", "/") as response,
    ):
        assert sleep.slept == []  # the head arrives at once
        chunks = list(response.iter_raw())
    assert b"".join(chunks) == BODY
    assert sum(sleep.slept) == pytest.approx(len(BODY) / (rate_kb_s * 1000))
    assert max(len(c) for c in chunks) == 400
    assert len(chunks) == len(sleep.slept) == 26
    assert sleep.slept[0] == pytest.approx(0.02)


def test_slow_body_with_a_mock_clock() -> None:
    clock = MockClock()
    upstream = Upstream()
    transport = FaultTransport(
        httpx.MockTransport(upstream), faults_of(slow(1.0)), clock=clock.now, sleep=clock.sleep
    )
    with httpx.Client(transport=transport) as client:
        response = client.get("http://upstream.test/")
    assert response.content == BODY
    assert clock.now() == pytest.approx(len(BODY) / 1000)


def test_slow_body_keeps_the_content_encoding() -> None:
    upstream = Upstream(body=gzip.compress(b"hello " * 500), headers={"Content-Encoding": "gzip"})
    with sync_client(faults_of(slow(1.0)), upstream, Recorder()) as client:
        response = client.get("/")
    assert response.headers["content-encoding"] == "gzip"
    assert response.text == "hello " * 500


def test_streamed_upstream_body_without_length() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=httpx.ByteStream(b"abcdef"))

    transport = FaultTransport(httpx.MockTransport(handler), faults_of(slow(100)), sleep=Recorder())
    with httpx.Client(transport=transport) as client:
        response = client.get("http://upstream.test/")
    assert response.content == b"abcdef"
    assert "transfer-encoding" not in response.headers
    assert "content-length" not in response.headers


def test_streamed_upstream_body_with_chunks() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=iter([b"abc", b"def"]))

    sleep = Recorder()
    transport = FaultTransport(httpx.MockTransport(handler), faults_of(slow(0.002)), sleep=sleep)
    with httpx.Client(transport=transport) as client:
        response = client.get("http://upstream.test/")
    assert response.content == b"abcdef"
    assert response.headers["transfer-encoding"] == "chunked"
    assert sleep.slept == [0.5] * 6  # 2 B/s, one byte per slice


@pytest.mark.parametrize(
    ("match", "method", "url", "headers", "fires"),
    [
        ({"method": "POST"}, "POST", "/pay", {}, True),
        ({"method": "POST"}, "GET", "/pay", {}, False),
        ({"path": "/pay/*"}, "GET", "/pay/42?card=1", {}, True),
        ({"path": "/pay/*"}, "GET", "/shop/pay/42", {}, False),
        ({"path": "/pay"}, "GET", "/pay?x=1", {}, True),
        ({"header": {"X-Canary": "1"}}, "GET", "/", {"x-canary": "1"}, True),
        ({"header": {"X-Canary": "1"}}, "GET", "/", {"X-CANARY": "1"}, True),
        ({"header": {"X-Canary": "1"}}, "GET", "/", {"X-Canary": "0"}, False),
        ({"header": {"X-Canary": "1"}}, "GET", "/", {}, False),
    ],
)
def test_transport_match_rules(
    match: dict[str, Any], method: str, url: str, headers: dict[str, str], fires: bool
) -> None:
    upstream = Upstream()
    with sync_client(faults_of(abort(match=match)), upstream, Recorder()) as client:
        response = client.request(method, url, headers=headers)
    assert (response.status_code == 503) is fires
    assert len(upstream.requests) == (0 if fires else 1)


def test_transport_sees_the_query_and_percent_encoding() -> None:
    seen: list[tuple[str, str]] = []

    class Spy(HttpFaultSet):
        def decide(self, method: str, path: str, headers: Any, now: float) -> Action | None:
            seen.append((method, path))
            return super().decide(method, path, headers, now)

    with sync_client(Spy(), Upstream(), Recorder()) as client:
        client.get("/a b/c", params={"q": "x y"})
    assert seen == [("GET", "/a%20b/c?q=x+y")]


def test_transport_probability_passes_a_binomial_test() -> None:
    n, p = 2000, 0.3
    upstream = Upstream(body=b"ok")
    with sync_client(faults_of(abort(probability=p), seed=42), upstream, Recorder()) as client:
        aborted = sum(client.get("/").status_code == 503 for _ in range(n))
    assert aborted + len(upstream.requests) == n
    assert binomial_p_value(aborted, n, p) >= 0.001, aborted
    assert binomial_p_value(aborted, n, p + 0.05) < 0.001  # the test has power


def test_faults_change_between_requests_and_ramp_on_the_clock() -> None:
    clock = MockClock(1000.0)
    faults = HttpFaultSet()
    sleep = Recorder()
    transport = FaultTransport(
        httpx.MockTransport(Upstream()), faults, clock=clock.now, sleep=sleep
    )
    with httpx.Client(transport=transport, base_url="http://upstream.test") as client:
        client.get("/")
        ramp = HttpFault(
            name="ramp",
            kind="http_delay",
            params={"delay_s": 0.1, "ramp_to_s": 1.1},
            duration_s=10.0,
        )
        faults.add(ramp, clock.now())
        client.get("/")
        clock.advance(5.0)
        client.get("/")
        clock.advance(20.0)
        client.get("/")
        faults.remove("ramp")
        client.get("/")
    assert sleep.slept == pytest.approx([0.1, 0.6, 1.1])


class ClosingTransport(httpx.BaseTransport):
    def __init__(self) -> None:
        self.events: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(204)

    def __enter__(self) -> ClosingTransport:
        self.events.append("enter")
        return self

    def __exit__(self, *args: object) -> None:
        self.events.append("exit")

    def close(self) -> None:
        self.events.append("close")


def test_transport_closes_and_enters_the_inner_one() -> None:
    inner = ClosingTransport()
    with httpx.Client(transport=FaultTransport(inner, faults_of())) as client:
        assert client.get("http://upstream.test/").status_code == 204
    assert inner.events == ["enter", "exit"]
    other = ClosingTransport()
    FaultTransport(other, faults_of()).close()
    assert other.events == ["close"]


def test_transport_repr_names_its_faults() -> None:
    transport = FaultTransport(ClosingTransport(), faults_of(abort(), delay(0.1)))
    assert "abort" in repr(transport)
    assert "delay" in repr(transport)


# -- AsyncFaultTransport --------------------------------------------------------------------


def run(coro: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coro

    return asyncio.run(main())


def async_client(
    faults: HttpFaultSet,
    inner: httpx.AsyncBaseTransport,
    sleep: Callable[[float], Awaitable[object]],
    **kw: Any,
) -> httpx.AsyncClient:
    transport = AsyncFaultTransport(inner, faults, sleep=sleep, **kw)
    return httpx.AsyncClient(transport=transport, base_url="http://upstream.test")


def test_async_delay_abort_and_pass_through() -> None:
    upstream, sleep = Upstream(), AsyncRecorder()
    faults = faults_of(delay(0.2), abort(match={"path": "/pay"}))

    async def main() -> list[httpx.Response]:
        async with async_client(faults, httpx.MockTransport(upstream), sleep) as client:
            return [await client.get("/pay"), await client.get("/shop")]

    paid, shopped = run(main())
    assert paid.status_code == 503
    assert paid.content == ABORT_BODY % 503
    assert shopped.content == BODY
    assert sleep.slept == [0.2, 0.2]
    assert [r.url.path for r in upstream.requests] == ["/shop"]


def test_async_reset() -> None:
    upstream = Upstream()

    async def main() -> bytes:
        async with async_client(
            faults_of(reset()), httpx.MockTransport(upstream), AsyncRecorder()
        ) as client:
            with pytest.raises(httpx.ReadError):
                await client.get("/")
            received = bytearray()
            async with client.stream("GET", "/") as response:
                with pytest.raises(httpx.ReadError):
                    async for chunk in response.aiter_raw():
                        received += chunk
            return bytes(received)

    assert run(main()) == BODY[: len(BODY) // 2]
    assert len(upstream.requests) == 2


def test_async_slow_body_on_a_mock_clock() -> None:
    clock = MockClock(autojump=True)

    async def main() -> httpx.Response:
        async with async_client(
            faults_of(slow(2.0)),
            httpx.MockTransport(Upstream()),
            clock.asleep,
            clock=clock.now,
        ) as client:
            return await client.get("/")

    started = time.monotonic()
    response = run(main())
    assert time.monotonic() - started < 5.0
    assert response.content == BODY
    assert clock.now() == pytest.approx(len(BODY) / 2000)


async def plain_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(BODY)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


def test_async_transport_over_an_asgi_app() -> None:
    sleep = AsyncRecorder()

    async def main() -> httpx.Response:
        inner = httpx.ASGITransport(plain_app)  # type: ignore[arg-type]
        async with async_client(faults_of(slow(10.0)), inner, sleep) as client:
            return await client.get("/")

    response = run(main())
    assert response.content == BODY
    assert sum(sleep.slept) == pytest.approx(len(BODY) / 10_000)


def test_async_transport_closes_the_inner_one() -> None:
    events: list[str] = []

    class Inner(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(204)

        async def aclose(self) -> None:
            events.append("aclose")

    async def main() -> None:
        async with httpx.AsyncClient(transport=AsyncFaultTransport(Inner(), faults_of())) as client:
            assert (await client.get("http://upstream.test/")).status_code == 204
        await AsyncFaultTransport(Inner(), faults_of()).aclose()

    run(main())
    assert events == ["aclose", "aclose"]


# -- FaultMiddleware (ASGI) -----------------------------------------------------------------


class App:
    """An ASGI app that records what it was called with and answers ``body`` in ``parts``
    (with a Content-Length unless ``length`` is False)."""

    def __init__(self, body: bytes = BODY, *, parts: int = 1, length: bool = True) -> None:
        self.body = body
        self.parts = parts
        self.length = length
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls.append(scope)
        if scope["type"] != "http":
            return
        headers = [(b"content-type", b"application/octet-stream")]
        if self.length:
            headers.append((b"content-length", str(len(self.body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        size = max(1, math.ceil(len(self.body) / self.parts))
        pieces = [self.body[i : i + size] for i in range(0, len(self.body), size)] or [b""]
        for index, piece in enumerate(pieces):
            more = index < len(pieces) - 1
            await send({"type": "http.response.body", "body": piece, "more_body": more})


def http_scope(
    path: str = "/",
    *,
    method: str = "GET",
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": headers or [],
    }


async def no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def call(middleware: FaultMiddleware, scope: dict[str, Any]) -> list[dict[str, Any]]:
    """Run one request through ``middleware``; the messages it sent."""
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(dict(message))

    run(middleware(scope, no_body, send))
    return sent


def asgi_get(middleware: FaultMiddleware, path: str = "/", **kw: Any) -> httpx.Response:
    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(middleware, **kw)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as client:
            return await client.get(path)

    return run(main())


def test_middleware_no_fault_passes_through() -> None:
    app, sleep = App(), AsyncRecorder()
    response = asgi_get(FaultMiddleware(app, faults_of(), sleep=sleep))
    assert response.content == BODY
    assert len(app.calls) == 1
    assert sleep.slept == []


def test_middleware_delay_sleeps_before_the_app() -> None:
    order: list[str] = []
    app = App()

    async def sleep(seconds: float) -> None:
        order.append(f"sleep {seconds}")

    async def traced(scope: dict[str, Any], receive: Any, send: Any) -> None:
        order.append("app")
        await app(scope, receive, send)

    response = asgi_get(FaultMiddleware(traced, faults_of(delay(0.3)), sleep=sleep))
    assert order == ["sleep 0.3", "app"]
    assert response.content == BODY


@pytest.mark.parametrize(("status", "retry_after_s"), [(503, 0.4), (429, 2.0), (502, None)])
def test_middleware_abort_answers_without_the_app(status: int, retry_after_s: float | None) -> None:
    params = {} if retry_after_s is None else {"retry_after_s": retry_after_s}
    app = App()
    response = asgi_get(FaultMiddleware(app, faults_of(abort(status, **params))))
    assert app.calls == []
    assert response.status_code == status
    assert response.content == ABORT_BODY % status
    assert response.headers["content-length"] == str(len(response.content))
    expected = None if retry_after_s is None else str(math.ceil(retry_after_s))
    assert response.headers.get("retry-after") == expected


def test_middleware_reset_sends_half_then_raises() -> None:
    app = App(parts=4)
    sent = []

    async def send(message: Any) -> None:
        sent.append(dict(message))

    middleware = FaultMiddleware(app, faults_of(reset()))
    with pytest.raises(ConnectionResetError):
        run(middleware(http_scope(), no_body, send))
    assert sent[0]["type"] == "http.response.start"
    assert all(m["more_body"] for m in sent[1:])
    assert b"".join(m["body"] for m in sent[1:]) == BODY[: len(BODY) // 2]
    assert len(app.calls) == 1


def test_middleware_reset_without_a_length_holds_the_body_back() -> None:
    app = App(parts=3, length=False)
    sent = []

    async def send(message: Any) -> None:
        sent.append(dict(message))

    with pytest.raises(ConnectionResetError):
        run(FaultMiddleware(app, faults_of(reset()))(http_scope(), no_body, send))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[1] == {
        "type": "http.response.body",
        "body": BODY[: len(BODY) // 2],
        "more_body": True,
    }


def test_middleware_reset_even_when_the_app_swallows_the_error() -> None:
    sent = []

    async def stubborn(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"8")]}
        )
        for _ in range(3):
            with contextlib.suppress(ConnectionResetError):
                await send({"type": "http.response.body", "body": b"abcd", "more_body": True})

    async def send(message: Any) -> None:
        sent.append(dict(message))

    with pytest.raises(ConnectionResetError):
        run(FaultMiddleware(stubborn, faults_of(reset()))(http_scope(), no_body, send))
    assert b"".join(m.get("body", b"") for m in sent) == b"abcd"


def test_middleware_reset_through_httpx() -> None:
    middleware = FaultMiddleware(App(parts=2), faults_of(reset()))
    with pytest.raises(ConnectionResetError):
        asgi_get(middleware)
    truncated = asgi_get(middleware, raise_app_exceptions=False)
    assert truncated.status_code == 200
    assert truncated.content == BODY[: len(BODY) // 2]


def test_middleware_slow_body_trickles_every_body_message() -> None:
    app = App(parts=3)
    sleep = AsyncRecorder()
    sent = call(FaultMiddleware(app, faults_of(slow(4.0)), sleep=sleep), http_scope())
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert b"".join(m["body"] for m in bodies) == BODY
    assert max(len(m["body"]) for m in bodies) == 80  # 20 ms at 4000 B/s
    assert [m["more_body"] for m in bodies] == [True] * (len(bodies) - 1) + [False]
    assert len(sleep.slept) == len(bodies)
    assert sum(sleep.slept) == pytest.approx(len(BODY) / 4000)


def test_middleware_slow_body_on_a_mock_clock_through_httpx() -> None:
    clock = MockClock(autojump=True)
    middleware = FaultMiddleware(App(), faults_of(slow(8.0)), clock=clock.now, sleep=clock.asleep)
    response = asgi_get(middleware)
    assert response.content == BODY
    assert clock.now() == pytest.approx(len(BODY) / 8000)


def test_middleware_slow_empty_body_does_not_sleep() -> None:
    sleep = AsyncRecorder()
    sent = call(FaultMiddleware(App(body=b""), faults_of(slow(1.0)), sleep=sleep), http_scope())
    assert sleep.slept == []
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


@pytest.mark.parametrize(
    ("match", "scope", "fires"),
    [
        ({"method": "POST"}, http_scope(method="POST"), True),
        ({"method": "POST"}, http_scope(method="GET"), False),
        ({"path": "/pay/*"}, http_scope("/pay/1", query=b"card=2"), True),
        ({"path": "/pay/*"}, http_scope("/shop/pay/1"), False),
        ({"header": {"X-Canary": "1"}}, http_scope(headers=[(b"x-canary", b"1")]), True),
        ({"header": {"X-Canary": "1"}}, http_scope(headers=[(b"X-Canary", b"1")]), True),
        ({"header": {"X-Canary": "1"}}, http_scope(headers=[(b"x-canary", b"2")]), False),
    ],
)
def test_middleware_match_rules(match: dict[str, Any], scope: dict[str, Any], fires: bool) -> None:
    app = App(body=b"ok")
    sent = call(FaultMiddleware(app, faults_of(abort(match=match))), scope)
    assert (sent[0]["status"] == 503) is fires
    assert len(app.calls) == (0 if fires else 1)


def test_middleware_sees_raw_path_query_and_joined_headers() -> None:
    seen: list[tuple[str, str, dict[str, str]]] = []

    class Spy(HttpFaultSet):
        def decide(self, method: str, path: str, headers: Any, now: float) -> Action | None:
            seen.append((method, path, dict(headers)))
            return None

    scope = http_scope("/a b", query=b"q=1", headers=[(b"Accept", b"a"), (b"accept", b"b")])
    scope["raw_path"] = b"/a%20b"
    call(FaultMiddleware(App(), Spy()), scope)
    del scope["raw_path"]
    call(FaultMiddleware(App(), Spy()), scope)
    assert seen == [
        ("GET", "/a%20b?q=1", {"accept": "a, b"}),
        ("GET", "/a b?q=1", {"accept": "a, b"}),
    ]


def test_middleware_probability_passes_a_binomial_test() -> None:
    n, p = 2000, 0.2
    app = App(body=b"ok")
    middleware = FaultMiddleware(app, faults_of(abort(status=500, probability=p), seed=7))

    async def main() -> int:
        statuses = []
        for _ in range(n):
            sent: list[Any] = []

            async def send(message: Any, sent: list[Any] = sent) -> None:
                sent.append(message)

            await middleware(http_scope(), no_body, send)
            statuses.append(sent[0]["status"])
        return statuses.count(500)

    aborted = run(main())
    assert aborted + len(app.calls) == n
    assert binomial_p_value(aborted, n, p) >= 0.001, aborted


@pytest.mark.parametrize("scope_type", ["lifespan", "websocket"])
def test_middleware_passes_other_scopes_through_untouched(scope_type: str) -> None:
    got: list[tuple[Any, Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        got.append((scope, receive, send))

    class Refuse(HttpFaultSet):
        def decide(self, *args: Any) -> Action | None:
            raise AssertionError("decide() called for a non-HTTP scope")

    async def receive() -> dict[str, Any]:
        return {"type": f"{scope_type}.startup"}

    async def send(message: Any) -> None:
        raise AssertionError("the middleware sent something itself")

    scope = {"type": scope_type, "asgi": {"version": "3.0"}, "path": "/"}
    run(FaultMiddleware(app, Refuse([abort()]))(scope, receive, send))
    assert got == [(scope, receive, send)]
    assert got[0][0] is scope


def test_middleware_lifespan_round_trip_with_starlette() -> None:
    """A real framework behind the middleware: its lifespan runs and its routes answer."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        events.append("startup")
        yield
        events.append("shutdown")

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    starlette_app = Starlette(routes=[Route("/hello", hello)], lifespan=lifespan)
    starlette_app.add_middleware(FaultMiddleware, faults=faults_of(abort(match={"path": "/x"})))

    async def lifespan_messages() -> list[str]:
        queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        for kind in ("lifespan.startup", "lifespan.shutdown"):
            queue.put_nowait({"type": kind})
        answers: list[str] = []

        async def send(message: Any) -> None:
            answers.append(message["type"])

        await starlette_app({"type": "lifespan", "asgi": {"version": "3.0"}}, queue.get, send)
        return answers

    answers = run(lifespan_messages())
    assert answers == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert events == ["startup", "shutdown"]

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(starlette_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as client:
            return [await client.get("/hello"), await client.get("/x")]

    hello_response, aborted = run(main())
    assert hello_response.text == "hello"
    assert aborted.status_code == 503


def test_middleware_repr_names_its_faults() -> None:
    assert "slow" in repr(FaultMiddleware(App(), faults_of(slow(1.0))))
