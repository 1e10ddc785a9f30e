"""The control API: Toxiproxy's routes, shapes and status codes; every error status; the
HTTP/1.1 server (keep-alive, pipelining, limits) and a fuzzed request parser.

Most tests drive an in-memory hub (``FakeHub``) so they check the API alone; the session at
the end runs against the real ``ProxyHub`` over loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brownout import __version__
from brownout.errors import ScenarioError
from brownout.faults import HttpFault, HttpFaultSet, ProxyConflict, ProxyNotFound, Toxic
from brownout.faults._api import ApiServer, Response, _Connection, serve_api
from brownout.scenario._check import name as check_name

httptools = pytest.importorskip("httptools")


# -- an in-memory hub with the agreed interface ---------------------------------------------


class FakeProxy:
    def __init__(self, name: str, listen: str, upstream: str, enabled: bool, port: int) -> None:
        self.name = name
        host, _, asked = listen.rpartition(":")
        self._listen = f"{host}:{port if asked == '0' else asked}"
        self.upstream = upstream
        self.enabled = enabled
        self._toxics: dict[str, Toxic] = {}
        self.http_faults = HttpFaultSet()
        self.updates: list[dict[str, Any]] = []

    @property
    def listen(self) -> str:
        return self._listen

    @property
    def toxics(self) -> Mapping[str, Toxic]:
        return self._toxics

    def add_toxic(self, toxic: Toxic) -> None:
        if toxic.name in self._toxics:
            raise ProxyConflict(f"toxic already exists: {toxic.name}")
        self._toxics[toxic.name] = toxic

    def update_toxic(self, toxic: Toxic) -> None:
        if toxic.name not in self._toxics:
            raise ProxyNotFound("toxic", toxic.name)
        self._toxics[toxic.name] = toxic

    def remove_toxic(self, name: str) -> None:
        if self._toxics.pop(name, None) is None:
            raise ProxyNotFound("toxic", name)

    def add_http_fault(self, fault: HttpFault) -> None:
        if self.http_faults.get(fault.name) is not None:
            raise ProxyConflict(f"HTTP fault already exists: {fault.name}")
        self.http_faults.add(fault, 0.0)

    def remove_http_fault(self, name: str) -> None:
        if not self.http_faults.remove(name):
            raise ProxyNotFound("HTTP fault", name)

    async def update(
        self, *, listen: str | None = None, upstream: str | None = None, enabled: bool | None = None
    ) -> None:
        self.updates.append({"listen": listen, "upstream": upstream, "enabled": enabled})
        if listen is not None:
            self._listen = listen
        if upstream is not None:
            self.upstream = upstream
        if enabled is not None:
            self.enabled = enabled

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": [t.to_json() for t in self._toxics.values()],
            "http_faults": [f.to_json() for f in self.http_faults],
        }

    def stats(self) -> dict[str, int]:
        return {"connections_total": 0, "requests": 0}


class FakeHub:
    """Proxies in a dict; ``taken`` addresses conflict; ``broken`` makes reset() a bug."""

    def __init__(self) -> None:
        self.proxies: dict[str, FakeProxy] = {}
        self.taken: set[str] = set()
        self.next_port = 40000
        self.broken = False

    async def create(
        self, name: str, listen: str, upstream: str, *, enabled: bool = True
    ) -> FakeProxy:
        check_name("name", name)
        for field, value in (("listen", listen), ("upstream", upstream)):
            if ":" not in value or not value.rpartition(":")[2].isdigit():
                raise ScenarioError(field, value, "a host:port address")
        if name in self.proxies:
            raise ProxyConflict(f"proxy already exists: {name}")
        if listen in self.taken:
            raise ProxyConflict(f"address already in use: {listen}")
        self.next_port += 1
        proxy = FakeProxy(name, listen, upstream, enabled, self.next_port)
        self.proxies[name] = proxy
        return proxy

    def get(self, name: str) -> FakeProxy:
        try:
            return self.proxies[name]
        except KeyError:
            raise ProxyNotFound("proxy", name) from None

    def __iter__(self) -> Iterator[FakeProxy]:
        return iter(list(self.proxies.values()))

    def __len__(self) -> int:
        return len(self.proxies)

    async def delete(self, name: str) -> None:
        self.get(name)
        del self.proxies[name]

    async def reset(self) -> None:
        if self.broken:
            raise RuntimeError("hub bug")
        for proxy in self.proxies.values():
            proxy.enabled = True
            proxy._toxics.clear()
            proxy.http_faults.clear()

    async def close(self) -> None:
        self.proxies.clear()


def call(
    api: ApiServer, method: str, target: str, doc: object = None, *, raw: bytes | None = None
) -> tuple[int, Any, Response]:
    """One request through ``handle`` (no sockets): status, decoded JSON, the response."""
    body = raw if raw is not None else (b"" if doc is None else json.dumps(doc).encode())
    response = asyncio.run(api.handle(method, target, body))
    is_json = response.content_type == "application/json" and response.body
    decoded = json.loads(response.body) if is_json else None
    return response.status, decoded, response


def _api() -> tuple[ApiServer, FakeHub]:
    hub = FakeHub()
    return ApiServer(hub), hub


PAYMENTS = {"name": "payments", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:9000"}


# -- routes and shapes ----------------------------------------------------------------------


def test_version_is_brownouts_as_text() -> None:
    api, _ = _api()
    status, _, response = call(api, "GET", "/version")
    assert status == 200
    assert response.content_type.startswith("text/plain")
    assert response.body.decode().strip() == __version__


def test_create_answers_201_with_the_proxy_and_enabled_defaults_to_true() -> None:
    api, _ = _api()
    status, doc, _ = call(api, "POST", "/proxies", PAYMENTS)
    assert status == 201
    assert doc["name"] == "payments"
    assert doc["enabled"] is True
    assert doc["listen"] == "127.0.0.1:40001"  # the bound port, not 0
    assert doc["toxics"] == []
    status, index, _ = call(api, "GET", "/proxies")
    assert status == 200
    assert list(index) == ["payments"]
    assert index["payments"] == doc


def test_create_without_listen_takes_a_free_loopback_port() -> None:
    api, _ = _api()
    status, doc, _ = call(api, "POST", "/proxies", {"name": "a", "upstream": "127.0.0.1:1"})
    assert status == 201
    assert doc["listen"].startswith("127.0.0.1:")


def test_update_changes_only_the_fields_given() -> None:
    api, hub = _api()
    call(api, "POST", "/proxies", PAYMENTS)
    status, doc, _ = call(api, "POST", "/proxies/payments", {"enabled": False})
    assert status == 200
    assert doc["enabled"] is False
    assert hub.proxies["payments"].updates == [{"listen": None, "upstream": None, "enabled": False}]
    status, doc, _ = call(api, "PATCH", "/proxies/payments", {"upstream": "127.0.0.1:9100"})
    assert status == 200
    assert (doc["upstream"], doc["enabled"]) == ("127.0.0.1:9100", False)


def test_delete_answers_204_without_a_body() -> None:
    api, hub = _api()
    call(api, "POST", "/proxies", PAYMENTS)
    status, _, response = call(api, "DELETE", "/proxies/payments")
    assert status == 204
    assert response.encode() == b"HTTP/1.1 204 No Content\r\n\r\n"
    assert not hub.proxies


def test_toxic_lifecycle_with_toxiproxys_codes_and_json() -> None:
    api, hub = _api()
    call(api, "POST", "/proxies", PAYMENTS)
    latency = {"type": "latency", "attributes": {"latency": 300}}
    status, doc, _ = call(api, "POST", "/proxies/payments/toxics", latency)
    assert status == 200  # Toxiproxy answers 200, not 201, for a toxic
    assert doc == {
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1.0,
        "attributes": {"latency": 300, "jitter": 0},
    }
    status, listed, _ = call(api, "GET", "/proxies/payments/toxics")
    assert (status, listed) == (200, [doc])
    status, shown, _ = call(api, "GET", "/proxies/payments/toxics/latency_downstream")
    assert (status, shown) == (200, doc)
    status, updated, _ = call(
        api, "POST", "/proxies/payments/toxics/latency_downstream", {"attributes": {"jitter": 50}}
    )
    assert status == 200
    assert updated["attributes"] == {"latency": 300, "jitter": 50}  # merged, as in Toxiproxy
    assert hub.proxies["payments"].toxics["latency_downstream"].attributes["jitter"] == 50
    status, _, _ = call(api, "DELETE", "/proxies/payments/toxics/latency_downstream")
    assert status == 204
    assert call(api, "GET", "/proxies/payments/toxics")[1] == []


def test_http_fault_lifecycle() -> None:
    api, hub = _api()
    call(api, "POST", "/proxies", PAYMENTS)
    fault = {"name": "pay-503", "kind": "http_abort", "status": 503, "probability": "50%"}
    status, doc, _ = call(api, "POST", "/proxies/payments/http_faults", fault)
    assert status == 200
    assert doc == HttpFault.from_json(fault).to_json()
    assert doc["probability"] == 0.5
    assert call(api, "GET", "/proxies/payments/http_faults")[1] == [doc]
    assert call(api, "GET", "/proxies/payments/http_faults/pay-503")[1] == doc
    assert call(api, "DELETE", "/proxies/payments/http_faults/pay-503")[0] == 204
    assert len(hub.proxies["payments"].http_faults) == 0


def test_reset_enables_every_proxy_and_removes_every_fault() -> None:
    api, hub = _api()
    call(api, "POST", "/proxies", PAYMENTS)
    call(api, "POST", "/proxies/payments", {"enabled": False})
    call(api, "POST", "/proxies/payments/toxics", {"type": "timeout"})
    call(api, "POST", "/proxies/payments/http_faults", {"kind": "http_reset"})
    status, _, _ = call(api, "POST", "/reset")
    assert status == 204
    proxy = hub.proxies["payments"]
    assert proxy.enabled
    assert not proxy.toxics
    assert len(proxy.http_faults) == 0


def test_populate_creates_then_updates_and_keeps_a_port_zero_listen() -> None:
    api, hub = _api()
    config = [PAYMENTS, {"name": "search", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:9001"}]
    status, doc, _ = call(api, "POST", "/populate", config)
    assert status == 201
    assert [p["name"] for p in doc["proxies"]] == ["payments", "search"]
    port = hub.proxies["payments"].listen
    again = [{**PAYMENTS, "upstream": "127.0.0.1:9999", "enabled": False}]
    status, doc, _ = call(api, "POST", "/populate", again)
    assert status == 201
    assert doc["proxies"][0]["upstream"] == "127.0.0.1:9999"
    assert doc["proxies"][0]["listen"] == port  # port 0 asked: the bound port is kept
    assert hub.proxies["payments"].updates[-1] == {
        "listen": None,
        "upstream": "127.0.0.1:9999",
        "enabled": False,
    }


def test_populate_checks_every_entry_before_changing_anything() -> None:
    api, hub = _api()
    config = [PAYMENTS, {"name": "search", "listen": "127.0.0.1:0"}]
    status, doc, _ = call(api, "POST", "/populate", config)
    assert status == 400
    assert doc["field"] == "proxies[1].upstream"
    assert not hub.proxies


def test_populate_reports_what_was_done_before_a_conflict() -> None:
    api, hub = _api()
    hub.taken.add("127.0.0.1:7000")
    config = [PAYMENTS, {"name": "b", "listen": "127.0.0.1:7000", "upstream": "127.0.0.1:1"}]
    status, doc, _ = call(api, "POST", "/populate", config)
    assert status == 409
    assert [p["name"] for p in doc["proxies"]] == ["payments"]
    assert "127.0.0.1:7000" in doc["error"]


def test_a_query_string_and_a_trailing_slash_are_forgiven() -> None:
    api, _ = _api()
    call(api, "POST", "/proxies", PAYMENTS)
    assert call(api, "GET", "/proxies/?pretty=1")[0] == 200
    assert call(api, "GET", "/proxies/payments/")[0] == 200


def test_names_in_the_path_are_percent_decoded() -> None:
    api, _ = _api()
    call(api, "POST", "/proxies", {**PAYMENTS, "name": "pay:v2"})
    assert call(api, "GET", "/proxies/pay%3Av2")[1]["name"] == "pay:v2"


# -- every error status ---------------------------------------------------------------------


def _error(doc: Any, status: int) -> None:
    """The error shape: error, status, field (and what /populate did); one line."""
    assert set(doc) - {"proxies"} == {"error", "status", "field"}
    assert doc["status"] == status
    assert isinstance(doc["error"], str)
    assert doc["error"]
    assert "\n" not in doc["error"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", None),
        (b"", None),
        (json.dumps([1, 2]).encode(), "proxy"),
        (json.dumps({"listen": "127.0.0.1:0", "upstream": "127.0.0.1:1"}).encode(), "name"),
        (json.dumps({"name": "a"}).encode(), "upstream"),
        (json.dumps({**PAYMENTS, "enabled": "yes"}).encode(), "enabled"),
        (json.dumps({**PAYMENTS, "listen": 9001}).encode(), "listen"),
        (json.dumps({**PAYMENTS, "colour": "red"}).encode(), "colour"),
        (json.dumps({**PAYMENTS, "name": "bad name!"}).encode(), "name"),
        (json.dumps({**PAYMENTS, "upstream": "nowhere"}).encode(), "upstream"),
    ],
)
def test_bad_proxy_bodies_get_400_naming_the_field(body: bytes, field: str | None) -> None:
    api, hub = _api()
    status, doc, _ = call(api, "POST", "/proxies", raw=body)
    assert status == 400
    _error(doc, 400)
    assert doc["field"] == field
    assert not hub.proxies


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "latency", "attributes": {"latency": -1}}, "attributes.latency"),
        ({"type": "laggy"}, "type"),
        ({"type": "latency", "stream": "sideways"}, "stream"),
        ({"type": "latency", "toxicity": 2}, "toxicity"),
        ({"attributes": {}}, "type"),
    ],
)
def test_bad_toxics_get_400_naming_the_field(body: object, field: str) -> None:
    api, _ = _api()
    call(api, "POST", "/proxies", PAYMENTS)
    status, doc, _ = call(api, "POST", "/proxies/payments/toxics", body)
    assert status == 400
    _error(doc, 400)
    assert doc["field"] == field


def test_bad_toxic_update_and_bad_http_fault_get_400_naming_the_field() -> None:
    api, _ = _api()
    call(api, "POST", "/proxies", PAYMENTS)
    call(api, "POST", "/proxies/payments/toxics", {"type": "latency"})
    status, doc, _ = call(
        api, "POST", "/proxies/payments/toxics/latency_downstream", {"type": "bandwidth"}
    )
    assert (status, doc["field"]) == (400, "type")
    status, doc, _ = call(
        api, "POST", "/proxies/payments/http_faults", {"kind": "http_delay", "delay": "soon"}
    )
    assert (status, doc["field"]) == (400, "delay")
    status, doc, _ = call(api, "POST", "/proxies/payments", {"name": "other"})
    assert (status, doc["field"]) == (400, "name")


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/proxies/ghost"),
        ("POST", "/proxies/ghost"),
        ("DELETE", "/proxies/ghost"),
        ("GET", "/proxies/ghost/toxics"),
        ("POST", "/proxies/ghost/toxics"),
        ("GET", "/proxies/payments/toxics/ghost"),
        ("POST", "/proxies/payments/toxics/ghost"),
        ("DELETE", "/proxies/payments/toxics/ghost"),
        ("GET", "/proxies/payments/http_faults/ghost"),
        ("DELETE", "/proxies/payments/http_faults/ghost"),
        ("GET", "/nowhere"),
        ("GET", "/proxies/payments/toxics/a/b"),
        ("GET", "/"),
    ],
)
def test_missing_things_get_404(method: str, target: str) -> None:
    api, _ = _api()
    call(api, "POST", "/proxies", PAYMENTS)
    status, doc, _ = call(api, method, target, {"attributes": {}})
    assert status == 404
    _error(doc, 404)


@pytest.mark.parametrize(
    ("method", "target", "allow"),
    [
        ("DELETE", "/proxies", "GET, POST"),
        ("GET", "/reset", "POST"),
        ("PUT", "/proxies/payments", "GET, POST, PATCH, DELETE"),
        ("POST", "/version", "GET"),
        ("POST", "/proxies/payments/http_faults/x", "GET, DELETE"),
    ],
)
def test_wrong_methods_get_405_with_allow(method: str, target: str, allow: str) -> None:
    api, _ = _api()
    call(api, "POST", "/proxies", PAYMENTS)
    status, doc, response = call(api, method, target)
    assert status == 405
    _error(doc, 405)
    assert ("Allow", allow) in response.headers


def test_taken_names_get_409() -> None:
    api, hub = _api()
    call(api, "POST", "/proxies", PAYMENTS)
    assert call(api, "POST", "/proxies", PAYMENTS)[0] == 409
    call(api, "POST", "/proxies/payments/toxics", {"type": "latency"})
    status, doc, _ = call(api, "POST", "/proxies/payments/toxics", {"type": "latency"})
    assert status == 409
    _error(doc, 409)
    fault = {"name": "f", "kind": "http_reset"}
    call(api, "POST", "/proxies/payments/http_faults", fault)
    assert call(api, "POST", "/proxies/payments/http_faults", fault)[0] == 409
    hub.taken.add("127.0.0.1:7000")
    status, doc, _ = call(
        api, "POST", "/proxies", {"name": "b", "listen": "127.0.0.1:7000", "upstream": "x:1"}
    )
    assert status == 409


def test_browsers_get_403() -> None:
    api, hub = _api()
    headers = {"user-agent": "Mozilla/5.0 (X11; Linux x86_64)"}
    body = json.dumps(PAYMENTS).encode()
    response = asyncio.run(api.handle("POST", "/proxies", body, headers))
    assert response.status == 403
    assert not hub.proxies


def test_a_bug_in_the_hub_is_a_500_not_a_crash() -> None:
    api, hub = _api()
    hub.broken = True
    status, doc, _ = call(api, "POST", "/reset")
    assert status == 500
    _error(doc, 500)
    assert "hub bug" in doc["error"]


def test_serve_api_refuses_a_non_loopback_host() -> None:
    with pytest.raises(ScenarioError) as info:
        asyncio.run(serve_api(FakeHub(), "0.0.0.0", 0))
    assert info.value.field == "host"


# -- the HTTP/1.1 server over real sockets --------------------------------------------------


@contextlib.asynccontextmanager
async def serving(hub: Any = None, **kwargs: Any) -> AsyncIterator[ApiServer]:
    api = await serve_api(hub if hub is not None else FakeHub(), "127.0.0.1", 0, **kwargs)
    try:
        yield api
    finally:
        await api.close()


async def exchange(port: int, data: bytes, *, timeout_s: float = 5.0) -> bytes:
    """Send ``data``, half-close, read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), timeout_s)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Parse the concatenated HTTP responses in ``data`` (strictly: it must all parse)."""
    out: list[tuple[int, dict[str, str], bytes]] = []

    class Sink:
        headers: dict[str, str]
        body: bytearray

        def on_message_begin(self) -> None:
            self.headers, self.body = {}, bytearray()

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers[name.decode().lower()] = value.decode()

        def on_body(self, body: bytes) -> None:
            self.body += body

        def on_message_complete(self) -> None:
            out.append((parser.get_status_code(), self.headers, bytes(self.body)))

    sink = Sink()
    parser = httptools.HttpResponseParser(sink)
    parser.feed_data(data)
    return out


def _uvloop_run() -> Callable[[Any], Any]:
    uvloop = pytest.importorskip("uvloop")
    return uvloop.run  # type: ignore[no-any-return]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Any], Any]:
    """Runs a coroutine on asyncio's loop, then on uvloop's (what ``brownout proxy`` uses)."""
    return asyncio.run if request.param == "asyncio" else _uvloop_run()


def request(method: str, target: str, doc: object = None, *, close: bool = False) -> bytes:
    body = b"" if doc is None else json.dumps(doc).encode()
    head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
    if close:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + body


def test_keep_alive_and_pipelined_requests_are_answered_in_order(run: Callable[[Any], Any]) -> None:
    async def main() -> list[tuple[int, dict[str, str], bytes]]:
        async with serving() as api:
            data = (
                request("POST", "/proxies", PAYMENTS)
                + request("GET", "/proxies/payments")
                + request("POST", "/proxies/payments/toxics", {"type": "latency"})
                + request("DELETE", "/proxies/payments/toxics/latency_downstream")
                + request("GET", "/version")
            )
            return responses(await exchange(api.port, data))

    got = run(main())
    assert [status for status, _, _ in got] == [201, 200, 200, 204, 200]
    assert all("connection" not in headers for _, headers, _ in got)
    assert got[0][1]["content-type"] == "application/json"
    assert json.loads(got[1][2])["name"] == "payments"


def test_one_connection_serves_many_requests_with_http_client() -> None:
    async def main() -> None:
        async with serving() as api:

            def talk() -> list[int]:
                conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
                statuses = []
                try:
                    for _ in range(20):
                        conn.request("GET", "/proxies")
                        response = conn.getresponse()
                        response.read()
                        statuses.append(response.status)
                    assert conn.sock is not None  # never reconnected
                finally:
                    conn.close()
                return statuses

            assert await asyncio.to_thread(talk) == [200] * 20
            assert len(api._connections) <= 1

    asyncio.run(main())


def test_connection_close_and_http_1_0_close_after_the_answer() -> None:
    async def main() -> tuple[bytes, bytes]:
        async with serving() as api:
            reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
            writer.write(request("GET", "/version", close=True))
            first = await asyncio.wait_for(reader.read(), 5)  # EOF: the server closed
            writer.close()
            await writer.wait_closed()
            reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
            writer.write(b"GET /version HTTP/1.0\r\n\r\n")
            second = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            await writer.wait_closed()
            return first, second

    first, second = asyncio.run(main())
    for data in (first, second):
        [(status, headers, _)] = responses(data)
        assert status == 200
        assert headers["connection"] == "close"


def test_a_body_over_1_mib_gets_413_and_close(run: Callable[[Any], Any]) -> None:
    big = b"x" * ((1 << 20) + 1)

    async def main() -> tuple[bytes, bytes]:
        async with serving() as api:
            head = b"POST /proxies HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(big)
            declared = await exchange(api.port, head)  # refused on the header alone
            chunked = b"POST /proxies HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            chunked += b"%x\r\n%s\r\n0\r\n\r\n" % (len(big), big)
            streamed = await exchange(api.port, chunked)
            return declared, streamed

    for data in run(main()):
        [(status, headers, body)] = responses(data)
        assert status == 413
        assert headers["connection"] == "close"
        _error(json.loads(body), 413)


def test_a_huge_request_head_gets_431() -> None:
    async def main() -> bytes:
        async with serving() as api:
            head = b"GET /version HTTP/1.1\r\nX-Big: " + b"a" * (70 << 10) + b"\r\n\r\n"
            return await exchange(api.port, head)

    [(status, headers, _)] = responses(asyncio.run(main()))
    assert status == 431
    assert headers["connection"] == "close"


def test_a_malformed_request_gets_400_and_close_after_the_good_ones(
    run: Callable[[Any], Any],
) -> None:
    async def main() -> bytes:
        async with serving() as api:
            return await exchange(api.port, request("GET", "/version") + b"NOT HTTP AT ALL\r\n\r\n")

    got = responses(run(main()))
    assert [status for status, _, _ in got] == [200, 400]
    assert got[1][1]["connection"] == "close"
    _error(json.loads(got[1][2]), 400)


def test_a_head_request_gets_the_head_without_the_body() -> None:
    async def main() -> bytes:
        async with serving() as api:
            return await exchange(api.port, b"HEAD /version HTTP/1.1\r\nHost: x\r\n\r\n")

    data = asyncio.run(main())
    assert data.startswith(b"HTTP/1.1 405 ")
    assert data.endswith(b"\r\n\r\n")  # the framing stays right for the next answer


def test_expect_100_continue_is_honoured() -> None:
    async def main() -> bytes:
        async with serving() as api:
            reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
            body = json.dumps(PAYMENTS).encode()
            writer.write(
                b"POST /proxies HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)
            )
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            writer.write(body)
            writer.write_eof()
            rest = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            await writer.wait_closed()
            return interim + rest

    data = asyncio.run(main())
    assert data.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert b"HTTP/1.1 201 Created" in data


def test_peers_that_vanish_mid_request_do_not_hurt_the_server(run: Callable[[Any], Any]) -> None:
    async def main() -> int:
        async with serving() as api:
            for partial in (b"POST /proxies HTTP/1.1\r\nContent-Length: 50\r\n\r\n{", b"GE"):
                _, writer = await asyncio.open_connection("127.0.0.1", api.port)
                writer.write(partial)
                await writer.drain()
                writer.transport.abort()  # gone, maybe with an RST
            raw = socket.create_connection(("127.0.0.1", api.port))
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            raw.sendall(request("GET", "/proxies"))
            raw.close()  # RST while the answer is being written
            await asyncio.sleep(0.05)
            [(status, _, _)] = responses(await exchange(api.port, request("GET", "/version")))
            return status

    assert run(main()) == 200


def test_close_stops_listening_and_drops_open_connections(run: Callable[[Any], Any]) -> None:
    async def main() -> None:
        api = await serve_api(FakeHub(), "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        await api.close()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", api.port)

    run(main())


def test_the_request_log_hook_sees_every_answer() -> None:
    seen: list[tuple[str, str, int]] = []

    async def main() -> None:
        async with serving(on_request=lambda m, t, s: seen.append((m, t, s))) as api:
            await exchange(api.port, request("GET", "/version") + request("GET", "/nope"))

    asyncio.run(main())
    assert seen == [("GET", "/version", 200), ("GET", "/nope", 404)]


# -- fuzzing the request parser -------------------------------------------------------------


class FakeTransport(asyncio.Transport):
    """Collects what the server writes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "wrote after close"
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Driver:
    """Feeds bytes to one ``_Connection`` on a private loop; records loop errors."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop_errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda _, ctx: self.loop_errors.append(ctx))

    def feed(self, chunks: list[bytes], *, eof: bool = True) -> tuple[bytes, bool]:
        async def run() -> tuple[bytes, bool]:
            hub = FakeHub()
            await hub.create("payments", "127.0.0.1:0", "127.0.0.1:9000")
            conn = _Connection(ApiServer(hub))
            transport = FakeTransport()
            conn.connection_made(transport)
            for chunk in chunks:
                conn.data_received(chunk)
            if eof and not transport.closed and not conn.eof_received():
                transport.close()
            for _ in range(100):
                if conn.worker is None:
                    break
                await asyncio.sleep(0)
            conn.connection_lost(None)
            return bytes(transport.written), transport.closed

        return self.loop.run_until_complete(run())

    def close(self) -> None:
        self.loop.close()


@pytest.fixture
def driver() -> Iterator[Driver]:
    d = Driver()
    yield d
    d.close()
    assert d.loop_errors == []


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in [*points, len(data)]:
        out.append(data[last:p])
        last = p
    return out


ALLOWED = {200, 201, 204, 400, 403, 404, 405, 409, 413, 431}


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600), max_size=4))
def test_fuzz_random_bytes_only_ever_get_400(driver: Driver, data: bytes, cuts: list[int]) -> None:
    written, _ = driver.feed(_split(data, cuts))
    got = responses(written)  # whatever was written parses as HTTP
    assert all(status == 400 for status, _, _ in got)
    for _, headers, body in got:
        assert headers["connection"] == "close"
        _error(json.loads(body), 400)
    assert len(got) <= 1


METHODS = st.sampled_from(["GET", "POST", "PATCH", "DELETE", "PUT", "OPTIONS", "G\x00T"])
TARGETS = st.one_of(
    st.sampled_from(
        [
            "/proxies",
            "/proxies/payments",
            "/proxies/payments/toxics",
            "/proxies/payments/toxics/latency_downstream",
            "/proxies/payments/http_faults",
            "/populate",
            "/reset",
            "/version",
            "/proxies/%ff%00",
            "*",
        ]
    ),
    st.text(alphabet="/%abc?#.:_-0123456789", max_size=40).map(lambda s: "/" + s),
)
BODIES = st.one_of(
    st.binary(max_size=200),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    ["name", "listen", "upstream", "enabled", "type", "attributes", "kind", "x"]
                ),
                inner,
                max_size=5,
            )
        ),
        max_leaves=10,
    ).map(lambda doc: json.dumps(doc).encode()),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    requests=st.lists(st.tuples(METHODS, TARGETS, BODIES), min_size=1, max_size=4),
    cuts=st.lists(st.integers(0, 2000), max_size=4),
)
def test_fuzz_well_framed_requests_never_get_a_500(
    driver: Driver, requests: list[tuple[str, str, bytes]], cuts: list[int]
) -> None:
    data = b"".join(
        f"{m} {t} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(b)}\r\n\r\n".encode("latin-1") + b
        for m, t, b in requests
    )
    written, _ = driver.feed(_split(data, cuts))
    got = responses(written)
    assert got, "no answer at all"
    for status, headers, body in got:
        assert status in ALLOWED
        if status >= 400:
            _error(json.loads(body), status)
        elif status != 204:
            assert headers["content-type"].split(";")[0] in ("application/json", "text/plain")


@settings(max_examples=40, deadline=None)
@given(data=st.binary(min_size=1, max_size=300))
def test_fuzz_over_a_real_socket(data: bytes) -> None:
    async def main() -> tuple[list[int], int]:
        async with serving() as api:
            got = responses(await exchange(api.port, data))
            after = responses(await exchange(api.port, request("GET", "/version")))
            return [s for s, _, _ in got], after[0][0]

    statuses, after = asyncio.run(main())
    assert set(statuses) <= {400}
    assert after == 200


# -- a Toxiproxy-style session against the real hub -----------------------------------------


@contextlib.contextmanager
def api_in_thread(make_hub: Callable[[], Any]) -> Iterator[tuple[str, Any]]:
    """The API and a hub on their own loop in a thread; yields (api url, hub)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[ApiServer, Any]:
        hub = make_hub()
        return await serve_api(hub, "127.0.0.1", 0), hub

    api, hub = asyncio.run_coroutine_threadsafe(start(), loop).result(10)

    async def stop() -> None:
        await api.close()
        await hub.close()

    try:
        yield api.url, hub
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def make_real_hub() -> Callable[[], Any]:
    """Builds the real ProxyHub (skips while it does not exist)."""
    module = pytest.importorskip("brownout.faults._proxy")
    return lambda: module.ProxyHub(seed=1)


@contextlib.contextmanager
def upstream_echo() -> Iterator[str]:
    """A loopback server that echoes each connection's bytes (the dependency); yields
    its ``host:port``."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    while chunk := conn.recv(65536):
                        conn.sendall(chunk)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


class Toxiproxyish:
    """Speaks to the API the way Toxiproxy's own clients do: plain JSON over HTTP."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=5)

    def __call__(self, method: str, path: str, doc: object = None) -> tuple[int, Any]:
        body = None if doc is None else json.dumps(doc)
        self.conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = self.conn.getresponse()
        data = response.read()
        if response.status == 204:
            assert data == b""
            return 204, None
        assert response.getheader("Content-Type", "").startswith(("application/json", "text/plain"))
        return response.status, json.loads(data) if data.startswith((b"{", b"[")) else data


def test_toxiproxy_style_session_against_the_real_hub(make_real_hub: Callable[[], Any]) -> None:
    with upstream_echo() as upstream, api_in_thread(make_real_hub) as (url, _):
        api = Toxiproxyish(url)
        try:
            status, version = api("GET", "/version")
            assert (status, version.decode().strip()) == (200, __version__)
            status, created = api(
                "POST",
                "/proxies",
                {"name": "redis", "listen": "127.0.0.1:0", "upstream": upstream},
            )
            assert status == 201
            assert {"name", "listen", "upstream", "enabled", "toxics"} <= set(created)
            assert created["enabled"] is True
            assert created["toxics"] == []
            listen_port = int(created["listen"].rsplit(":", 1)[1])
            assert listen_port != 0

            with socket.create_connection(("127.0.0.1", listen_port), timeout=5) as s:
                s.sendall(b"ping")
                assert s.recv(4) == b"ping"  # the proxy works

            status, index = api("GET", "/proxies")
            assert status == 200
            assert index["redis"]["upstream"] == upstream

            toxic = {
                "name": "latency_down",
                "type": "latency",
                "stream": "downstream",
                "toxicity": 1.0,
                "attributes": {"latency": 1000},
            }
            status, added = api("POST", "/proxies/redis/toxics", toxic)
            assert status == 200
            assert added == {**toxic, "attributes": {"latency": 1000, "jitter": 0}}
            status, updated = api(
                "POST", "/proxies/redis/toxics/latency_down", {"attributes": {"jitter": 100}}
            )
            assert status == 200
            assert updated["attributes"] == {"latency": 1000, "jitter": 100}
            assert api("GET", "/proxies/redis")[1]["toxics"] == [updated]
            assert api("DELETE", "/proxies/redis/toxics/latency_down")[0] == 204
            assert api("GET", "/proxies/redis/toxics") == (200, [])

            fault = {"name": "slow", "kind": "http_delay", "delay": "200ms"}
            status, added_fault = api("POST", "/proxies/redis/http_faults", fault)
            assert status == 200
            assert added_fault["delay"] == 0.2
            assert api("GET", "/proxies/redis")[1]["http_faults"] == [added_fault]
            assert api("DELETE", "/proxies/redis/http_faults/slow")[0] == 204

            assert api("POST", "/proxies/redis", {"enabled": False})[1]["enabled"] is False
            assert api("POST", "/proxies/redis/toxics", {"type": "timeout"})[0] == 200
            assert api("POST", "/proxies/redis/http_faults", {"kind": "http_reset"})[0] == 200
            assert api("POST", "/reset")[0] == 204
            after = api("GET", "/proxies/redis")[1]
            assert after["enabled"] is True
            assert after["toxics"] == []
            assert after["http_faults"] == []

            status, conflict = api("POST", "/proxies", {"name": "redis", "upstream": upstream})
            assert (status, conflict["status"]) == (409, 409)
            assert api("DELETE", "/proxies/redis")[0] == 204
            assert api("GET", "/proxies/redis")[0] == 404
            assert api("GET", "/proxies") == (200, {})
        finally:
            api.conn.close()


def test_a_taken_listen_address_is_409_with_the_real_hub(
    make_real_hub: Callable[[], Any],
) -> None:
    blocker = socket.create_server(("127.0.0.1", 0))
    try:
        taken = f"127.0.0.1:{blocker.getsockname()[1]}"
        with api_in_thread(make_real_hub) as (url, _):
            api = Toxiproxyish(url)
            try:
                status, doc = api(
                    "POST", "/proxies", {"name": "a", "listen": taken, "upstream": "127.0.0.1:1"}
                )
                assert status == 409
                _error(doc, 409)
                status, doc = api("POST", "/proxies", {"name": "a b", "upstream": "127.0.0.1:1"})
                assert (status, doc["field"]) == (400, "name")
            finally:
                api.conn.close()
    finally:
        blocker.close()
