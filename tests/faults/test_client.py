"""ProxyClient: the requests it sends, how it reads answers and errors, keep-alive, and a
session against the real control API and hub."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from brownout import __version__
from brownout.errors import BrownoutError, ScenarioError
from brownout.faults import HttpFault, Toxic
from brownout.faults._client import ProxyApiError, ProxyClient

Answer = Callable[[str, str, bytes], bytes]


def reply(
    status: int, doc: object = None, *, raw: bytes | None = None, close: bool = False
) -> bytes:
    body = raw if raw is not None else (b"" if doc is None else json.dumps(doc).encode())
    reason = {200: "OK", 201: "Created", 204: "No Content"}.get(status, "Error")
    head = f"HTTP/1.1 {status} {reason}\r\n"
    if status != 204:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    if close:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + (b"" if status == 204 else body)


class Scripted:
    """A loopback HTTP server answering with ``answer(method, path, body)``; records every
    request and every connection. ``per_connection`` requests, then it closes the socket
    without a word (what an idle-timeout does to a keep-alive connection)."""

    def __init__(self, answer: Answer, *, per_connection: int = 1000) -> None:
        self.answer = answer
        self.per_connection = per_connection
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with conn, contextlib.suppress(OSError):
                self._talk(conn)

    def _talk(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        pending = b""
        for _ in range(self.per_connection):
            while b"\r\n\r\n" not in pending:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                pending += chunk
            head, pending = pending.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
            length = int(headers.get("content-length", "0"))
            while len(pending) < length:
                pending += conn.recv(65536)
            body, pending = pending[:length], pending[length:]
            self.requests.append((method, target, headers, json.loads(body) if body else None))
            conn.sendall(self.answer(method, target, body))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.listener.close()


@contextlib.contextmanager
def scripted(answer: Answer, **kwargs: Any) -> Iterator[Scripted]:
    server = Scripted(answer, **kwargs)
    try:
        yield server
    finally:
        server.close()


def ok(method: str, path: str, body: bytes) -> bytes:
    if method == "DELETE" or path == "/reset":
        return reply(204)
    if path == "/version":
        return reply(200, raw=b"1.2.3\n")
    if path == "/populate":
        return reply(201, {"proxies": json.loads(body)})
    return reply(201 if (method, path) == ("POST", "/proxies") else 200, {"echo": path})


# -- addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://127.0.0.1:8474", "127.0.0.1:8474", "http://localhost:1/"])
def test_loopback_urls_are_accepted(url: str) -> None:
    with ProxyClient(url) as client:
        assert client.api_url.startswith("http://")


def test_ipv6_loopback_is_accepted() -> None:
    assert ProxyClient("http://[::1]:8474").api_url == "http://[::1]:8474"


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:8474",
        "ftp://x",
        "http://127.0.0.1:99999",
        "http://:80",
        "http://127.0.0.1:1/api",
    ],
)
def test_bad_urls_raise_naming_api_url(url: str) -> None:
    with pytest.raises(ScenarioError) as info:
        ProxyClient(url)
    assert info.value.field == "api_url"


def test_a_remote_api_is_refused_unless_allowed() -> None:
    with pytest.raises(ScenarioError, match="not on loopback") as info:
        ProxyClient("http://10.1.2.3:8474")
    assert info.value.field == "api_url"
    assert ProxyClient("http://10.1.2.3:8474", allow_remote=True).host == "10.1.2.3"


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ScenarioError) as info:
        ProxyClient("http://127.0.0.1:1", timeout_s=0)
    assert info.value.field == "timeout_s"


# -- what it sends --------------------------------------------------------------------------


def test_every_method_sends_toxiproxys_request() -> None:
    toxic = Toxic(name="lag", type="latency", attributes={"latency": 100})
    fault = HttpFault.from_json({"name": "slow", "kind": "http_delay", "delay": "300ms"})
    with scripted(ok) as server, ProxyClient(server.url) as client:
        assert client.version() == "1.2.3"
        client.proxies()
        client.create("pay", "127.0.0.1:0", "127.0.0.1:9000")
        client.get("pay")
        client.update("pay", upstream="127.0.0.1:9001")
        client.set_enabled("pay", False)
        client.add_toxic("pay", toxic)
        client.add_toxic("pay", {"type": "timeout"})
        client.update_toxic("pay", "lag", {"attributes": {"jitter": 5}})
        client.toxics("pay")
        client.remove_toxic("pay", "lag")
        client.add_http_fault("pay", fault)
        client.http_faults("pay")
        client.remove_http_fault("pay", "slow")
        client.stats("pay")
        assert client.populate([{"name": "a", "upstream": "127.0.0.1:1"}]) == [
            {"name": "a", "upstream": "127.0.0.1:1"}
        ]
        client.reset()
        client.delete("pay")
    sent = [(m, p, b) for m, p, _, b in server.requests]
    assert sent == [
        ("GET", "/version", None),
        ("GET", "/proxies", None),
        (
            "POST",
            "/proxies",
            {"name": "pay", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:9000", "enabled": True},
        ),
        ("GET", "/proxies/pay", None),
        ("POST", "/proxies/pay", {"upstream": "127.0.0.1:9001"}),
        ("POST", "/proxies/pay", {"enabled": False}),
        ("POST", "/proxies/pay/toxics", toxic.to_json()),
        ("POST", "/proxies/pay/toxics", {"type": "timeout"}),
        ("POST", "/proxies/pay/toxics/lag", {"attributes": {"jitter": 5}}),
        ("GET", "/proxies/pay/toxics", None),
        ("DELETE", "/proxies/pay/toxics/lag", None),
        ("POST", "/proxies/pay/http_faults", fault.to_json()),
        ("GET", "/proxies/pay/http_faults", None),
        ("DELETE", "/proxies/pay/http_faults/slow", None),
        ("GET", "/proxies/pay/stats", None),
        ("POST", "/populate", [{"name": "a", "upstream": "127.0.0.1:1"}]),
        ("POST", "/reset", None),
        ("DELETE", "/proxies/pay", None),
    ]
    assert server.connections == 1  # one keep-alive connection for all of it
    headers = server.requests[2][2]
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == f"brownout/{__version__}"  # never a browser's


def test_names_are_quoted_in_paths() -> None:
    with scripted(ok) as server, ProxyClient(server.url) as client:
        client.get("a/b c")
    assert server.requests[0][1] == "/proxies/a%2Fb%20c"


def test_toxiproxy_2_json_version_is_read() -> None:
    def answer(method: str, path: str, body: bytes) -> bytes:
        return reply(200, {"version": "2.9.0"})

    with scripted(answer) as server, ProxyClient(server.url) as client:
        assert client.version() == "2.9.0"


# -- errors ---------------------------------------------------------------------------------


def test_an_error_answer_raises_with_status_message_and_field() -> None:
    def answer(method: str, path: str, body: bytes) -> bytes:
        doc = {"error": "upstream='x' is not allowed", "status": 400, "field": "upstream"}
        return reply(400, doc)

    with (
        scripted(answer) as server,
        ProxyClient(server.url) as client,
        pytest.raises(ProxyApiError) as info,
    ):
        client.create("a", "127.0.0.1:0", "x")
    err = info.value
    assert (err.status, err.field) == (400, "upstream")
    assert err.message == "upstream='x' is not allowed"
    assert isinstance(err, BrownoutError)
    assert "400" in str(err)


def test_toxiproxys_error_shape_and_plain_text_errors_are_read() -> None:
    answers = iter(
        [
            reply(409, {"error": "proxy already exists", "status": 409}),
            reply(502, raw=b"Bad gateway\nmore"),
        ]
    )
    with scripted(lambda m, p, b: next(answers)) as server, ProxyClient(server.url) as client:
        with pytest.raises(ProxyApiError) as first:
            client.create("a", "127.0.0.1:0", "127.0.0.1:1")
        with pytest.raises(ProxyApiError) as second:
            client.proxies()
    assert (first.value.status, first.value.message, first.value.field) == (
        409,
        "proxy already exists",
        None,
    )
    assert (second.value.status, second.value.message) == (502, "Bad gateway")


def test_a_refused_connection_raises_naming_the_address() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    client = ProxyClient(f"http://127.0.0.1:{port}")
    with pytest.raises(ProxyApiError) as info:
        client.proxies()
    assert info.value.status == 0
    assert f"127.0.0.1:{port}" in str(info.value)
    client.close()


def test_a_silent_server_times_out_within_timeout_s() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog), never answers
        client = ProxyClient(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout_s=0.3)
        started = time.monotonic()
        with pytest.raises(ProxyApiError, match=r"within 0\.3 s") as info:
            client.version()
        elapsed = time.monotonic() - started
        client.close()
    assert info.value.status == 0
    assert 0.25 <= elapsed < 3


def test_garbage_instead_of_http_raises() -> None:
    with (
        scripted(lambda m, p, b: b"SSH-2.0-OpenSSH\r\n\r\n") as server,
        ProxyClient(server.url) as client,
        pytest.raises(ProxyApiError) as info,
    ):
        client.version()
    assert info.value.status == 0


def test_a_keep_alive_connection_closed_while_idle_is_reopened_once() -> None:
    with scripted(ok, per_connection=1) as server, ProxyClient(server.url) as client:
        for _ in range(3):
            assert client.get("pay") == {"echo": "/proxies/pay"}
    assert server.connections == 3
    assert len(server.requests) == 3


def test_connection_close_answers_are_followed() -> None:
    def answer(method: str, path: str, body: bytes) -> bytes:
        return reply(200, {"ok": True}, close=True)

    with scripted(answer) as server, ProxyClient(server.url) as client:
        client.proxies()
        client.proxies()
    assert server.connections == 2


def test_the_client_is_safe_to_share_between_threads() -> None:
    with scripted(ok) as server, ProxyClient(server.url) as client:
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for _ in range(20):
                    assert client.get("x") == {"echo": "/proxies/x"}
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert errors == []
    assert len(server.requests) == 80


def test_the_error_pickles() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(ProxyApiError(404, "proxy not found: x", None)))
    assert (err.status, err.message, err.field) == (404, "proxy not found: x", None)


# -- against the real API and hub -----------------------------------------------------------


@pytest.fixture
def real_api() -> Iterator[str]:
    """``brownout proxy``'s API and hub on a loop in a thread; yields the API's URL."""
    proxy_module = pytest.importorskip("brownout.faults._proxy")
    from brownout.faults._api import serve_api

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[Any, Any]:
        hub = proxy_module.ProxyHub(seed=1)
        return await serve_api(hub, "127.0.0.1", 0), hub

    api, hub = asyncio.run_coroutine_threadsafe(start(), loop).result(10)

    async def stop() -> None:
        await api.close()
        await hub.close()

    try:
        yield api.url
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_a_fault_timeline_session_against_the_real_api(real_api: str) -> None:
    with ProxyClient(real_api) as client:
        assert client.version() == __version__
        created = client.create("payments", "127.0.0.1:0", "127.0.0.1:9")
        assert created["listen"] != "127.0.0.1:0"
        assert set(client.proxies()) == {"payments"}

        toxic = Toxic(name="lag", type="latency", attributes={"latency": 250})
        assert client.add_toxic("payments", toxic) == toxic.to_json()
        updated = client.update_toxic("payments", "lag", {"attributes": {"jitter": 10}})
        assert updated["attributes"] == {"latency": 250, "jitter": 10}
        assert client.toxics("payments") == [updated]
        client.remove_toxic("payments", "lag")
        assert client.toxics("payments") == []

        fault = HttpFault.from_json({"name": "pay-503", "kind": "http_abort", "status": 503})
        assert client.add_http_fault("payments", fault) == fault.to_json()
        assert client.http_faults("payments") == [fault.to_json()]
        client.remove_http_fault("payments", "pay-503")
        assert client.http_faults("payments") == []

        assert client.set_enabled("payments", False)["enabled"] is False
        assert client.get("payments")["enabled"] is False
        client.add_toxic("payments", {"type": "timeout"})
        client.reset()
        after = client.get("payments")
        assert (after["enabled"], after["toxics"]) == (True, [])

        with pytest.raises(ProxyApiError) as conflict:
            client.create("payments", "127.0.0.1:0", "127.0.0.1:9")
        assert conflict.value.status == 409
        with pytest.raises(ProxyApiError) as missing:
            client.remove_toxic("payments", "ghost")
        assert missing.value.status == 404
        with pytest.raises(ProxyApiError) as bad:
            client.add_toxic("payments", {"type": "latency", "attributes": {"latency": -5}})
        assert (bad.value.status, bad.value.field) == (400, "attributes.latency")

        client.delete("payments")
        assert client.proxies() == {}


def test_timeline_changes_through_the_client_are_fast(real_api: str) -> None:
    """The fault timeline must land changes within 50 ms of their plan: one change (a
    request on a kept-alive connection) costs far less."""
    with ProxyClient(real_api) as client:
        client.create("p", "127.0.0.1:0", "127.0.0.1:9")
        toxic = Toxic(name="lag", type="latency", attributes={"latency": 1})
        costs = []
        for _ in range(25):
            started = time.perf_counter()
            client.add_toxic("p", toxic)
            client.remove_toxic("p", "lag")
            costs.append((time.perf_counter() - started) / 2)
    costs.sort()
    assert costs[len(costs) // 2] < 0.01  # median per change, generous for a loaded CI VM
