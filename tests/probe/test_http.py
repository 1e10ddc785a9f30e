"""HTTP client hooks against a real loopback dependency: httpx (sync and async), aiohttp and
requests are each recorded once, with the right effective timeout, bytes, path template
and call site; failures are recorded and re-raised unchanged; the N+1 and no-timeout
detectors."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brownout.probe._cost import (
    Finding,
    HttpCall,
    ProbeThresholds,
    RequestCost,
    activate,
    deactivate,
)
from brownout.probe._http import (
    detect_http,
    install_http,
    timeout_of_aiohttp,
    timeout_of_httpx,
    timeout_of_requests,
)

httpx = pytest.importorskip("httpx")
aiohttp = pytest.importorskip("aiohttp")
requests = pytest.importorskip("requests")

BODY_DELAY_S = 0.05
UUID = "0b5f2c1e-8d3a-4f6b-9c2d-1a2b3c4d5e6f"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed ACK

    def log_message(self, format: str, *args: Any) -> None:  # the tests' output stays clean
        pass

    def _reply(self, body: bytes, *, delay_body_s: float = 0.0) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if delay_body_s:
            self.wfile.flush()
            time.sleep(delay_body_s)
        self.wfile.write(body)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        if parts.path == "/big":
            self._reply(b"x" * int(query["bytes"][0]))
        elif parts.path == "/slow-body":
            self._reply(b'{"slow": true}', delay_body_s=BODY_DELAY_S)
        else:
            self._reply(json.dumps({"path": parts.path}).encode())

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        data = self.rfile.read(length)
        self._reply(json.dumps({"received": len(data)}).encode())


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A tiny HTTP/1.1 dependency on 127.0.0.1 (an ephemeral port); yields its base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def hooks() -> Iterator[None]:
    undo = install_http()
    try:
        yield
    finally:
        undo()


@pytest.fixture
def cost() -> Iterator[RequestCost]:
    """A request's cost made current, as ProbeMiddleware does."""
    c = RequestCost("GET", "/test", time.perf_counter())
    token = activate(c)
    try:
        yield c
    finally:
        deactivate(token)


def host_of(url: str) -> str:
    return url.removeprefix("http://")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def here() -> str:
    """``"test_http.py:<line of the caller's next line>"``."""
    return f"test_http.py:{sys._getframe(1).f_lineno + 1} in "


# -- httpx ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("hooks")
def test_httpx_sync_records_one_call_with_the_default_timeout_bounded(
    server: str, cost: RequestCost
) -> None:
    with httpx.Client() as client:
        response = client.get(f"{server}/users/17")
    assert response.json() == {"path": "/users/17"}
    [call] = cost.http
    assert (call.library, call.method, call.host) == ("httpx", "GET", host_of(server))
    assert call.path_template == "/users/{id}"
    assert call.status == 200
    assert call.timeout_s == 20.0  # httpx's default: 5 s for each of connect/read/write/pool
    assert call.bytes_received == len(response.content)
    assert 0 < call.duration_s < 5
    assert call.error is None
    assert call.site is None  # fast, bounded, first of its kind: no stack walk


@pytest.mark.usefixtures("hooks")
def test_httpx_timeout_none_is_unbounded_and_names_the_call_site(
    server: str, cost: RequestCost
) -> None:
    with httpx.Client(timeout=None) as client:
        site = here()
        client.get(f"{server}/items/{UUID}")
    [call] = cost.http
    assert call.timeout_s == math.inf
    assert call.path_template == "/items/{id}"
    assert call.site is not None
    assert site in call.site
    assert call.site.endswith("test_httpx_timeout_none_is_unbounded_and_names_the_call_site")
    [finding] = detect_http(cost, ProbeThresholds())
    assert finding.kind == "no_timeout"
    assert finding.key == f"GET {host_of(server)}/items/{{id}}"
    assert finding.evidence["site"] == call.site
    assert "timeout" in finding.fix


@pytest.mark.usefixtures("hooks")
def test_httpx_counts_the_body_and_times_it(server: str, cost: RequestCost) -> None:
    with httpx.Client(timeout=httpx.Timeout(2.0, connect=1.0)) as client:
        client.get(f"{server}/slow-body")
        big = client.get(f"{server}/big", params={"bytes": 70_000})
        posted = client.post(f"{server}/echo", content=b"y" * 1234)
    slow, large, post = cost.http
    assert slow.duration_s >= BODY_DELAY_S  # the body came 50 ms after the headers
    assert slow.timeout_s == pytest.approx(1.0 + 2.0 + 2.0 + 2.0)
    assert large.bytes_received == len(big.content) == 70_000
    assert post.bytes_sent == 1234
    assert post.method == "POST"
    assert posted.json() == {"received": 1234}


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.usefixtures("hooks")
def test_httpx_async_attributes_concurrent_requests_to_their_own_cost(
    server: str, loop: str
) -> None:
    async def request(n_calls: int, path: str) -> RequestCost:
        c = RequestCost("GET", path, time.perf_counter())
        token = activate(c)
        try:
            async with httpx.AsyncClient() as client:
                for i in range(n_calls):
                    await client.get(f"{server}{path}/{i}")
                    await asyncio.sleep(0)
        finally:
            deactivate(token)
        return c

    async def main() -> tuple[RequestCost, RequestCost]:
        a, b = await asyncio.gather(request(3, "/a"), request(1, "/b"))
        return a, b

    runner: Callable[[Any], Any] = asyncio.run
    if loop == "uvloop":
        runner = pytest.importorskip("uvloop").run
    a, b = runner(main())
    assert [c.path_template for c in a.http] == ["/a/{id}"] * 3
    assert [c.path_template for c in b.http] == ["/b/{id}"]
    assert all(c.timeout_s == 20.0 and c.status == 200 for c in a.http + b.http)
    assert a.http[1].site is not None  # the second call of a kind: an N+1's example


@pytest.mark.usefixtures("hooks")
def test_httpx_failure_is_recorded_and_reraised_unchanged(cost: RequestCost) -> None:
    port = closed_port()
    with httpx.Client(timeout=2.0) as client, pytest.raises(httpx.ConnectError):
        client.get(f"http://127.0.0.1:{port}/users/1")
    [call] = cost.http
    assert call.error == "ConnectError"
    assert call.status is None
    assert call.host == f"127.0.0.1:{port}"


# -- aiohttp --------------------------------------------------------------------------------


@pytest.mark.usefixtures("hooks")
def test_aiohttp_default_session_is_unbounded_and_the_body_is_timed(server: str) -> None:
    async def main() -> tuple[RequestCost, bytes, Any]:
        c = RequestCost("GET", "/x", time.perf_counter())
        token = activate(c)
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{server}/slow-body") as response:
                    body = await response.read()
                async with session.get(f"{server}/users/5") as response:
                    data = await response.json()
        finally:
            deactivate(token)
        return c, body, data

    c, body, data = asyncio.run(main())
    assert data == {"path": "/users/5"}
    slow, user = c.http
    assert (slow.library, slow.method, slow.status) == ("aiohttp", "GET", 200)
    assert slow.timeout_s == math.inf  # aiohttp's default ClientTimeout(total=300)
    assert slow.duration_s >= BODY_DELAY_S
    assert slow.bytes_received == len(body)
    assert slow.site is not None  # no timeout: the site is the evidence
    assert "test_http.py" in slow.site
    assert user.path_template == "/users/{id}"


@pytest.mark.usefixtures("hooks")
def test_aiohttp_timeouts_from_the_session_and_the_call(server: str) -> None:
    async def main() -> RequestCost:
        c = RequestCost("GET", "/x", time.perf_counter())
        token = activate(c)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
                async with session.get(f"{server}/a") as r:
                    await r.read()
                per_op = aiohttp.ClientTimeout(total=None, sock_connect=1, sock_read=2)
                async with session.get(f"{server}/b", timeout=per_op) as r:
                    await r.read()
                async with session.post(f"{server}/c", data=b"z" * 10) as r:
                    await r.read()
        finally:
            deactivate(token)
        return c

    a, b, post = asyncio.run(main()).http
    assert a.timeout_s == 5.0
    assert b.timeout_s == 3.0
    assert post.method == "POST"
    assert post.bytes_sent == 10


@pytest.mark.usefixtures("hooks")
def test_aiohttp_failure_is_recorded_and_reraised_unchanged() -> None:
    port = closed_port()

    async def main() -> RequestCost:
        c = RequestCost("GET", "/x", time.perf_counter())
        token = activate(c)
        try:
            async with aiohttp.ClientSession() as session:
                with pytest.raises(aiohttp.ClientConnectorError):
                    await session.get(f"http://127.0.0.1:{port}/x")
        finally:
            deactivate(token)
        return c

    [call] = asyncio.run(main()).http
    assert call.error == "ClientConnectorError"
    assert call.host == f"127.0.0.1:{port}"


# -- requests -------------------------------------------------------------------------------


@pytest.mark.usefixtures("hooks")
def test_requests_without_timeout_is_unbounded_and_times_the_body(
    server: str, cost: RequestCost
) -> None:
    response = requests.get(f"{server}/slow-body")
    assert response.json() == {"slow": True}
    [call] = cost.http
    assert (call.library, call.method, call.status) == ("requests", "GET", 200)
    assert call.timeout_s == math.inf
    assert call.duration_s >= BODY_DELAY_S  # extended to the end of the body
    assert call.bytes_received == len(response.content)
    assert call.site is not None


@pytest.mark.usefixtures("hooks")
def test_requests_timeouts_are_bounded(server: str, cost: RequestCost) -> None:
    with requests.Session() as session:
        session.get(f"{server}/a", timeout=2)
        session.get(f"{server}/b", timeout=(1, 3))
        session.get(f"{server}/c", timeout=(1, None))
        session.post(f"{server}/d", data=b"q" * 99, timeout=1)
    a, b, c, d = cost.http
    assert a.timeout_s == 4.0  # connect and each read: 2 s each
    assert b.timeout_s == 4.0
    assert c.timeout_s == math.inf
    assert d.bytes_sent == 99


@pytest.mark.usefixtures("hooks")
def test_requests_failure_is_recorded_and_reraised_unchanged(cost: RequestCost) -> None:
    port = closed_port()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/users/3", timeout=2)
    [call] = cost.http
    assert call.error == "ConnectionError"
    assert call.path_template == "/users/{id}"


# -- install, undo, no request ----------------------------------------------------------------


@pytest.mark.usefixtures("hooks")
def test_nothing_is_recorded_outside_a_request(server: str) -> None:
    with httpx.Client() as client:
        assert client.get(f"{server}/users/1").status_code == 200
    assert requests.get(f"{server}/users/1", timeout=2).status_code == 200
    c = RequestCost("GET", "/after", time.perf_counter())
    assert c.http == []


def test_uninstall_restores_the_originals_and_install_is_idempotent(server: str) -> None:
    from requests.adapters import HTTPAdapter

    targets = [
        (httpx.HTTPTransport, "handle_request"),
        (httpx.AsyncHTTPTransport, "handle_async_request"),
        (aiohttp.ClientSession, "_request"),
        (aiohttp.ClientResponse, "read"),
        (HTTPAdapter, "send"),
    ]
    originals = [cls.__dict__[name] for cls, name in targets]
    undo = install_http()
    patched = [cls.__dict__[name] for cls, name in targets]
    assert all(p is not o for p, o in zip(patched, originals, strict=True))
    again = install_http()
    assert [cls.__dict__[name] for cls, name in targets] == patched  # nothing patched twice
    again()
    assert [cls.__dict__[name] for cls, name in targets] == patched
    undo()
    assert [cls.__dict__[name] for cls, name in targets] == originals
    undo()  # idempotent
    c = RequestCost("GET", "/x", time.perf_counter())
    token = activate(c)
    try:
        with httpx.Client() as client:
            client.get(f"{server}/users/1")
    finally:
        deactivate(token)
    assert c.http == []


# -- detection ------------------------------------------------------------------------------


@pytest.mark.usefixtures("hooks")
def test_n_plus_one_http_is_found_on_real_calls(server: str, cost: RequestCost) -> None:
    th = ProbeThresholds(http_n_plus_one_min_total_s=0.0)
    with httpx.Client() as client:
        for i in range(6):
            client.get(f"{server}/users/{i}")
        client.get(f"{server}/other")
    [finding] = detect_http(cost, th)
    assert finding.kind == "n_plus_one_http"
    assert finding.key == f"GET {host_of(server)}/users/{{id}}"
    assert finding.endpoint == "GET /test"
    assert finding.evidence["calls"] == 6
    assert finding.evidence["library"] == "httpx"
    site = finding.evidence["site"]
    assert isinstance(site, str)
    assert "test_http.py" in site
    assert "batch" in finding.fix


def call(
    path: str = "/users/{id}",
    *,
    duration_s: float = 0.07,
    started_s: float = 0.0,
    timeout_s: float = 5.0,
    method: str = "GET",
    host: str = "api:80",
) -> HttpCall:
    return HttpCall("httpx", method, host, path, 200, duration_s, started_s, timeout_s)


def findings(calls: list[HttpCall], th: ProbeThresholds | None = None) -> list[Finding]:
    c = RequestCost("GET", "/orders", 0.0, route="/orders")
    c.http = calls
    return detect_http(c, th or ProbeThresholds())


def test_n_plus_one_needs_both_the_count_and_the_total() -> None:
    assert findings([call() for _ in range(4)]) == []  # 4 calls < 5
    assert findings([call(duration_s=0.05) for _ in range(5)]) == []  # 250 ms < 300 ms
    [f] = findings([call(started_s=i * 0.07) for i in range(5)])  # 5 calls, 350 ms
    assert (f.kind, f.severity, f.endpoint) == ("n_plus_one_http", "warning", "GET /orders")
    assert f.evidence["calls"] == 5
    assert f.evidence["total_ms"] == pytest.approx(350.0)
    assert f.evidence["span_ms"] == pytest.approx(350.0)  # sequential


def test_n_plus_one_is_an_error_at_five_times_the_total_and_shows_overlap() -> None:
    [f] = findings([call(duration_s=0.3) for _ in range(5)])  # concurrent, 1.5 s in total
    assert f.severity == "error"
    assert f.evidence["span_ms"] == pytest.approx(300.0)


def test_one_finding_per_key_and_kind() -> None:
    calls = [call(timeout_s=math.inf) for _ in range(6)]
    calls += [call("/health", timeout_s=math.inf), call("/users/{id}", method="POST")]
    found = findings(calls)
    assert sorted((f.kind, f.key) for f in found) == [
        ("n_plus_one_http", "GET api:80/users/{id}"),
        ("no_timeout", "GET api:80/health"),
        ("no_timeout", "GET api:80/users/{id}"),
    ]
    no_timeout = next(
        f for f in found if f.key == "GET api:80/users/{id}" and f.kind == "no_timeout"
    )
    assert no_timeout.evidence["calls"] == 6


def test_bounded_calls_and_empty_requests_find_nothing() -> None:
    assert findings([]) == []
    assert findings([call(timeout_s=120.0)]) == []


# -- timeouts -------------------------------------------------------------------------------


def test_httpx_timeout_bound() -> None:
    assert timeout_of_httpx({"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}) == 20.0
    assert timeout_of_httpx({"connect": 1.0, "read": 2.0, "write": None, "pool": None}) == 3.0
    assert timeout_of_httpx({"connect": 1.0, "read": None, "write": 1.0, "pool": 1.0}) == math.inf
    assert timeout_of_httpx({"connect": None, "read": 1.0}) == math.inf
    assert timeout_of_httpx(None) == math.inf


def test_aiohttp_and_requests_timeout_bounds() -> None:
    assert timeout_of_aiohttp(aiohttp.ClientTimeout()) == math.inf  # total=300, the default
    assert timeout_of_aiohttp(aiohttp.ClientTimeout(total=None)) == math.inf
    assert timeout_of_aiohttp(aiohttp.ClientTimeout(total=10)) == 10.0
    assert timeout_of_aiohttp(aiohttp.ClientTimeout(total=None, connect=1, sock_read=4)) == 5.0
    assert timeout_of_aiohttp(7) == 7.0
    assert timeout_of_requests(None) == math.inf
    assert timeout_of_requests(3) == 6.0
    assert timeout_of_requests((None, 3)) == math.inf
    urllib3 = pytest.importorskip("urllib3")
    assert timeout_of_requests(urllib3.Timeout(total=4.5)) == 4.5
    assert timeout_of_requests(urllib3.Timeout(connect=1, read=2)) == 3.0
    assert timeout_of_requests(urllib3.Timeout(connect=1)) == math.inf


_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.sampled_from(["connect", "read", "write", "pool"]), inner, max_size=4)
    ),
    max_leaves=8,
)


@given(_junk)
def test_timeout_readers_never_raise(value: object) -> None:
    for reader in (timeout_of_httpx, timeout_of_aiohttp, timeout_of_requests):
        result = reader(value)
        assert isinstance(result, float)


@given(
    st.one_of(st.none(), st.floats(0, 1e6)),
    st.one_of(st.none(), st.floats(0, 1e6)),
    st.one_of(st.none(), st.floats(0, 1e6)),
    st.one_of(st.none(), st.floats(0, 1e6)),
)
def test_httpx_bound_is_finite_exactly_when_connect_and_read_are_set(
    connect: float | None, read: float | None, write: float | None, pool: float | None
) -> None:
    bound = timeout_of_httpx({"connect": connect, "read": read, "write": write, "pool": pool})
    if connect is None or read is None:
        assert bound == math.inf
    else:
        assert bound == pytest.approx(connect + read + (write or 0.0) + (pool or 0.0))
