"""The control API of ``brownout proxy``: Toxiproxy's HTTP API over a proxy hub, plus
brownout's HTTP faults.

Endpoints (JSON in and out; Toxiproxy's status codes)::

    GET    /version                                  200 text: brownout's version
    GET    /proxies                                  200 {name: proxy}
    POST   /proxies                                  201 proxy          (409 if it exists)
    POST   /populate                                 201 {"proxies": [proxy, ...]}
    GET    /proxies/{proxy}                          200 proxy
    POST   /proxies/{proxy}   (or PATCH)             200 proxy          (listen, upstream, enabled)
    DELETE /proxies/{proxy}                          204
    GET    /proxies/{proxy}/toxics                   200 [toxic, ...]
    POST   /proxies/{proxy}/toxics                   200 toxic          (409 if it exists)
    GET    /proxies/{proxy}/toxics/{toxic}           200 toxic
    POST   /proxies/{proxy}/toxics/{toxic} (PATCH)   200 toxic          (attributes merge)
    DELETE /proxies/{proxy}/toxics/{toxic}           204
    GET    /proxies/{proxy}/http_faults              200 [fault, ...]
    POST   /proxies/{proxy}/http_faults              200 fault          (409 if it exists)
    GET    /proxies/{proxy}/http_faults/{fault}      200 fault
    DELETE /proxies/{proxy}/http_faults/{fault}      204
    GET    /proxies/{proxy}/stats                    200 counters (brownout only)
    POST   /reset                                    204 every proxy enabled, no faults

An error is ``{"error": "<one line>", "status": N, "field": "<field>" | null}`` (Toxiproxy's
shape plus ``field``): 400 bad JSON or a bad value (the field is named), 403 a browser,
404 no such proxy, toxic, fault or route, 405 wrong method (with ``Allow``), 409 a name or
address already taken, 413 a body over 1 MiB, 431 a request head over 64 KiB.

The HTTP/1.1 server is our own, small and strict, on asyncio with httptools: keep-alive,
pipelined requests answered in order, ``Content-Length`` and chunked bodies. A malformed
request gets a 400 with ``Connection: close``; nothing a peer sends can stop the server.
Like Toxiproxy, requests from browsers (``User-Agent: Mozilla/...``) are refused, so a web
page cannot drive the API on loopback behind the user's back.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote

from .._net import is_loopback
from .._version import __version__
from ..errors import ScenarioError
from ._spec import HttpFault, HttpFaultSet, ProxyConflict, ProxyNotFound, Toxic

__all__ = [
    "MAX_BODY_BYTES",
    "ApiServer",
    "HubLike",
    "ProxyLike",
    "Response",
    "populate",
    "serve_api",
]

MAX_BODY_BYTES = 1 << 20
MAX_HEAD_BYTES = 64 << 10
_PIPELINE_PAUSE = 16  # stop reading a connection with this many requests waiting
_PROXY_FIELDS = ("name", "listen", "upstream", "enabled")
_IGNORED_FIELDS = ("toxics", "http_faults")  # sent back by clients that echo a proxy
_REASONS = {
    100: "Continue",
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


class ProxyLike(Protocol):
    """What the API needs of one proxy (:class:`~brownout.faults.Proxy` has it)."""

    @property
    def name(self) -> str: ...
    @property
    def listen(self) -> str: ...
    @property
    def upstream(self) -> str: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def toxics(self) -> Mapping[str, Toxic]: ...
    @property
    def http_faults(self) -> HttpFaultSet: ...
    def add_toxic(self, toxic: Toxic) -> None: ...
    def update_toxic(self, toxic: Toxic) -> None: ...
    def remove_toxic(self, name: str) -> None: ...
    def add_http_fault(self, fault: HttpFault) -> None: ...
    def remove_http_fault(self, name: str) -> None: ...
    async def update(
        self,
        *,
        listen: str | None = None,
        upstream: str | None = None,
        enabled: bool | None = None,
    ) -> None: ...
    def to_json(self) -> dict[str, Any]: ...
    def stats(self) -> dict[str, int]: ...


class HubLike(Protocol):
    """What the API needs of the hub (:class:`~brownout.faults.ProxyHub` has it)."""

    async def create(
        self, name: str, listen: str, upstream: str, *, enabled: bool = True
    ) -> ProxyLike: ...
    def get(self, name: str) -> ProxyLike: ...
    def __iter__(self) -> Iterator[ProxyLike]: ...
    async def delete(self, name: str) -> None: ...
    async def reset(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Response:
    """One answer of the API: ``status``, ``body`` bytes, their content type, extra headers."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, status: int, doc: object) -> Response:
        return cls(status, json.dumps(doc).encode())

    @classmethod
    def error(
        cls,
        status: int,
        message: str,
        field: str | None = None,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> Response:
        """``{"error", "status", "field"}``; ``message`` is cut to one line."""
        line = " ".join(str(message).split()) or _REASONS.get(status, "error")
        doc = {"error": line, "status": status, "field": field, **(extra or {})}
        return cls(status, json.dumps(doc).encode(), headers=headers)

    def encode(self, *, close: bool = False, head: bool = False) -> bytes:
        """The bytes of this answer on the wire (HTTP/1.1); ``head``: without the body, as
        the answer to a HEAD request."""
        lines = [f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Unknown')}"]
        if self.status != 204:
            lines.append(f"Content-Type: {self.content_type}")
            lines.append(f"Content-Length: {len(self.body)}")
        lines.extend(f"{k}: {v}" for k, v in self.headers)
        if close:
            lines.append("Connection: close")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return data if head or self.status == 204 else data + self.body


class _BadRequest(Exception):
    """A request the API refuses before acting: answered with ``status`` and ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_Handler = Callable[["ApiServer", list[str], bytes], Awaitable[Response]]


class ApiServer:
    """The control API over ``hub``. :meth:`handle` answers one request (no sockets: the
    unit the tests drive); :meth:`start` serves it over HTTP/1.1; :meth:`close` stops.
    ``on_request(method, target, status)`` is told of every answer sent (a request log);
    ``max_body_bytes`` bounds request bodies (413 above it).

    Use :func:`serve_api` to build and start one."""

    def __init__(
        self,
        hub: HubLike,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
        on_request: Callable[[str, str, int], object] | None = None,
    ) -> None:
        self.hub = hub
        self.max_body_bytes = max_body_bytes
        self.on_request = on_request
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self.host = ""
        self.port = 0

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "not serving"
        return f"<ApiServer {where}>"

    @property
    def url(self) -> str:
        """``http://host:port`` of the bound socket."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 8474) -> None:
        """Listen on ``host:port`` (0 picks a free port; :attr:`port` tells which)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port)
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = str(sockname[0]), int(sockname[1])

    async def close(self) -> None:
        """Stop listening and close every connection (requests in progress are cancelled)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        connections = list(self._connections)
        for conn in connections:
            conn.abort()
        workers = [c.worker for c in connections if c.worker is not None]
        for task in workers:
            task.cancel()
        if workers:
            await asyncio.gather(*workers, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    # -- one request ----------------------------------------------------------------------

    async def handle(
        self, method: str, target: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Response:
        """The answer to one request. ``target`` is the request target (a query is ignored),
        ``headers`` keyed by lower-case names. Never raises (except on cancellation)."""
        if (headers or {}).get("user-agent", "").startswith("Mozilla/"):
            return Response.error(403, "browsers may not use the control API")
        path = target.split("?", 1)[0].split("#", 1)[0]
        try:
            handler, params, allow = _route(method, path)
            if handler is None:
                if allow:
                    return Response.error(
                        405,
                        f"method {method} is not allowed on {path}; use {', '.join(allow)}",
                        headers=(("Allow", ", ".join(allow)),),
                    )
                return Response.error(404, f"no such endpoint: {path}")
            return await handler(self, params, body)
        except Exception as exc:  # a bug must not take the API down either: it is a 500
            status, message, field = _describe(exc)
            return Response.error(status, message, field)

    # -- handlers -------------------------------------------------------------------------

    async def _version(self, params: list[str], body: bytes) -> Response:
        return Response(200, f"{__version__}\n".encode(), "text/plain; charset=utf-8")

    async def _proxy_index(self, params: list[str], body: bytes) -> Response:
        return Response.json(200, {p.name: p.to_json() for p in self.hub})

    async def _proxy_create(self, params: list[str], body: bytes) -> Response:
        doc = _proxy_fields(_object(_json(body), "proxy"), "")
        proxy = await self.hub.create(
            doc["name"], doc["listen"], doc["upstream"], enabled=doc["enabled"]
        )
        return Response.json(201, proxy.to_json())

    async def _populate(self, params: list[str], body: bytes) -> Response:
        done: list[ProxyLike] = []
        try:
            await populate(self.hub, _json(body), done=done)
        except _BadRequest:
            raise
        except Exception as exc:  # answered with what was done, like Toxiproxy
            status, message, field = _describe(exc)
            extra = {"proxies": [p.to_json() for p in done]}
            return Response.error(status, message, field, extra=extra)
        return Response.json(201, {"proxies": [p.to_json() for p in done]})

    async def _proxy_show(self, params: list[str], body: bytes) -> Response:
        return Response.json(200, self.hub.get(params[0]).to_json())

    async def _proxy_update(self, params: list[str], body: bytes) -> Response:
        proxy = self.hub.get(params[0])
        doc = _object(_json(body), "proxy")
        for key, value in doc.items():
            if key not in _PROXY_FIELDS and key not in _IGNORED_FIELDS:
                raise _unknown(key, value, "listen, upstream, enabled")
        if "name" in doc and doc["name"] != proxy.name:
            raise ScenarioError("name", doc["name"], f"{proxy.name!r} (a proxy cannot be renamed)")
        listen = _address("listen", doc["listen"]) if "listen" in doc else None
        upstream = _address("upstream", doc["upstream"]) if "upstream" in doc else None
        enabled = _boolean("enabled", doc["enabled"]) if "enabled" in doc else None
        await proxy.update(listen=listen, upstream=upstream, enabled=enabled)
        return Response.json(200, proxy.to_json())

    async def _proxy_delete(self, params: list[str], body: bytes) -> Response:
        await self.hub.delete(params[0])
        return Response(204)

    async def _proxy_stats(self, params: list[str], body: bytes) -> Response:
        return Response.json(200, self.hub.get(params[0]).stats())

    async def _reset(self, params: list[str], body: bytes) -> Response:
        await self.hub.reset()
        return Response(204)

    async def _toxic_index(self, params: list[str], body: bytes) -> Response:
        proxy = self.hub.get(params[0])
        return Response.json(200, [t.to_json() for t in proxy.toxics.values()])

    async def _toxic_create(self, params: list[str], body: bytes) -> Response:
        proxy = self.hub.get(params[0])
        toxic = Toxic.from_json(_json(body))
        proxy.add_toxic(toxic)
        return Response.json(200, toxic.to_json())

    def _toxic(self, params: list[str]) -> tuple[ProxyLike, Toxic]:
        proxy = self.hub.get(params[0])
        toxic = proxy.toxics.get(params[1])
        if toxic is None:
            raise ProxyNotFound("toxic", params[1])
        return proxy, toxic

    async def _toxic_show(self, params: list[str], body: bytes) -> Response:
        return Response.json(200, self._toxic(params)[1].to_json())

    async def _toxic_update(self, params: list[str], body: bytes) -> Response:
        proxy, toxic = self._toxic(params)
        updated = toxic.updated(_json(body))
        proxy.update_toxic(updated)
        return Response.json(200, updated.to_json())

    async def _toxic_delete(self, params: list[str], body: bytes) -> Response:
        self.hub.get(params[0]).remove_toxic(params[1])
        return Response(204)

    async def _fault_index(self, params: list[str], body: bytes) -> Response:
        proxy = self.hub.get(params[0])
        return Response.json(200, [f.to_json() for f in proxy.http_faults])

    async def _fault_create(self, params: list[str], body: bytes) -> Response:
        proxy = self.hub.get(params[0])
        fault = HttpFault.from_json(_json(body))
        proxy.add_http_fault(fault)
        return Response.json(200, fault.to_json())

    async def _fault_show(self, params: list[str], body: bytes) -> Response:
        fault = self.hub.get(params[0]).http_faults.get(params[1])
        if fault is None:
            raise ProxyNotFound("HTTP fault", params[1])
        return Response.json(200, fault.to_json())

    async def _fault_delete(self, params: list[str], body: bytes) -> Response:
        self.hub.get(params[0]).remove_http_fault(params[1])
        return Response(204)


# Routes: path shape (a "*" segment is a name) -> {method: handler}.
_ROUTES: tuple[tuple[tuple[str, ...], dict[str, _Handler]], ...] = (
    (("version",), {"GET": ApiServer._version}),
    (("reset",), {"POST": ApiServer._reset}),
    (("populate",), {"POST": ApiServer._populate}),
    (("proxies",), {"GET": ApiServer._proxy_index, "POST": ApiServer._proxy_create}),
    (
        ("proxies", "*"),
        {
            "GET": ApiServer._proxy_show,
            "POST": ApiServer._proxy_update,
            "PATCH": ApiServer._proxy_update,
            "DELETE": ApiServer._proxy_delete,
        },
    ),
    (("proxies", "*", "stats"), {"GET": ApiServer._proxy_stats}),
    (("proxies", "*", "toxics"), {"GET": ApiServer._toxic_index, "POST": ApiServer._toxic_create}),
    (
        ("proxies", "*", "toxics", "*"),
        {
            "GET": ApiServer._toxic_show,
            "POST": ApiServer._toxic_update,
            "PATCH": ApiServer._toxic_update,
            "DELETE": ApiServer._toxic_delete,
        },
    ),
    (
        ("proxies", "*", "http_faults"),
        {"GET": ApiServer._fault_index, "POST": ApiServer._fault_create},
    ),
    (
        ("proxies", "*", "http_faults", "*"),
        {"GET": ApiServer._fault_show, "DELETE": ApiServer._fault_delete},
    ),
)


def _route(method: str, path: str) -> tuple[_Handler | None, list[str], tuple[str, ...]]:
    """The handler of ``method path``, the names in the path, and the allowed methods when
    the path exists but the method does not (handler ``None``, empty: no such path)."""
    if not path.startswith("/"):
        return None, [], ()
    segments = path[1:].split("/")
    if len(segments) > 1 and segments[-1] == "":
        segments.pop()  # one trailing slash is forgiven
    for shape, methods in _ROUTES:
        if len(shape) != len(segments):
            continue
        params: list[str] = []
        for want, got in zip(shape, segments, strict=True):
            if want == "*":
                name = unquote(got)
                if not name:
                    break
                params.append(name)
            elif want != got:
                break
        else:
            handler = methods.get(method)
            if handler is None:
                return None, params, tuple(methods)
            return handler, params, ()
    return None, [], ()


def _describe(exc: Exception) -> tuple[int, str, str | None]:
    """The status, one-line message and field of the error answer for ``exc``."""
    if isinstance(exc, _BadRequest):
        return exc.status, exc.message, None
    if isinstance(exc, ScenarioError):
        return 400, exc.detail, exc.field
    if isinstance(exc, ProxyNotFound):
        return 404, str(exc), None
    if isinstance(exc, ProxyConflict):
        return 409, str(exc), None
    if isinstance(exc, OSError):  # the hub could not bind or connect
        if exc.errno == errno.EADDRINUSE:
            return 409, f"address already in use: {exc.strerror or exc}", None
        return 400, str(exc.strerror or exc), None
    return 500, f"internal error: {type(exc).__name__}: {exc}", None


async def populate(
    hub: HubLike, items: object, *, done: list[ProxyLike] | None = None
) -> list[ProxyLike]:
    """Create each proxy of ``items`` (Toxiproxy's config: a list of ``{name, listen,
    upstream, enabled}``), or update the proxy of that name when it exists (a ``listen``
    with port 0 keeps the port it has). Every entry is checked before anything changes;
    ``done`` collects the proxies made so far, for the error answer.

    Raises ScenarioError naming ``proxies[i].<field>``, ProxyConflict for a taken address."""
    if not isinstance(items, list):
        raise ScenarioError(
            "proxies",
            items,
            'a JSON list such as [{"name": "payments", "listen": "127.0.0.1:9001", '
            '"upstream": "127.0.0.1:9000"}]',
        )
    docs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        doc = _proxy_fields(_object(item, f"proxies[{i}]"), f"proxies[{i}].")
        if doc["name"] in seen:
            raise ScenarioError(f"proxies[{i}].name", doc["name"], "a name no other entry has")
        seen.add(doc["name"])
        docs.append(doc)
    out = done if done is not None else []
    for i, doc in enumerate(docs):
        try:
            out.append(await _create_or_update(hub, doc))
        except ScenarioError as exc:
            raise ScenarioError(
                f"proxies[{i}].{exc.field}", exc.value, exc.allowed, problem=exc.problem
            ) from None
    return out


async def _create_or_update(hub: HubLike, doc: dict[str, Any]) -> ProxyLike:
    try:
        proxy = hub.get(doc["name"])
    except ProxyNotFound:
        return await hub.create(doc["name"], doc["listen"], doc["upstream"], enabled=doc["enabled"])
    listen = None if _same_address(doc["listen"], proxy.listen) else doc["listen"]
    upstream = None if doc["upstream"] == proxy.upstream else doc["upstream"]
    await proxy.update(listen=listen, upstream=upstream, enabled=doc["enabled"])
    return proxy


# -- request bodies -------------------------------------------------------------------------


def _json(body: bytes) -> Any:
    """The JSON document of a request body; 400 when it is not JSON."""
    if not body.strip():
        raise _BadRequest(400, "bad request body: empty; send a JSON document")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise _BadRequest(400, f"bad request body: not JSON: {exc}") from None


def _object(doc: object, what: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        example = '{"name": "payments", "listen": "127.0.0.1:9001", "upstream": "127.0.0.1:9000"}'
        raise ScenarioError(what, doc, f"a JSON object such as {example}")
    return doc


def _unknown(key: str, value: object, allowed: str) -> ScenarioError:
    return ScenarioError(key, value, allowed, problem="is not a proxy field")


def _address(field: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ScenarioError(field, value, "a host:port address such as '127.0.0.1:9001'")
    return value


def _boolean(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ScenarioError(field, value, "true or false")
    return value


def _proxy_fields(doc: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``name``, ``listen``, ``upstream``, ``enabled`` of a new proxy (Toxiproxy's
    defaults: enabled; ``listen`` missing means a free loopback port)."""
    for key, value in doc.items():
        if key not in _PROXY_FIELDS and key not in _IGNORED_FIELDS:
            raise _unknown(prefix + key, value, "name, listen, upstream, enabled")
    for key in ("name", "upstream"):
        if not doc.get(key):
            example = "payments" if key == "name" else "127.0.0.1:9000"
            raise ScenarioError(
                prefix + key, doc.get(key), f"a {key} such as {example!r}", problem="is missing"
            )
    if not isinstance(doc["name"], str):
        raise ScenarioError(prefix + "name", doc["name"], "a name such as 'payments'")
    return {
        "name": doc["name"],
        "listen": _address(prefix + "listen", doc.get("listen") or "127.0.0.1:0"),
        "upstream": _address(prefix + "upstream", doc["upstream"]),
        "enabled": _boolean(prefix + "enabled", doc.get("enabled", True)),
    }


def _same_address(asked: str, bound: str) -> bool:
    """Whether asking for ``asked`` is satisfied by ``bound`` (port 0 means any port)."""
    if asked == bound:
        return True
    host, _, port = asked.rpartition(":")
    return port == "0" and bound.rpartition(":")[0] == host


# -- the HTTP/1.1 connection ---------------------------------------------------------------


@dataclass(slots=True)
class _Request:
    method: str
    target: str
    body: bytes
    headers: dict[str, str]
    keep_alive: bool


@dataclass(slots=True)
class _Reply:
    """An answer decided while parsing (a malformed request): sent in order, then close."""

    response: Response


class _Connection(asyncio.Protocol):
    """One client connection: httptools parses, a worker task answers in order."""

    def __init__(self, api: ApiServer) -> None:
        import httptools

        self.api = api
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.pending: deque[_Request | _Reply] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.broken = False  # no more parsing: an error answer is on its way, or EOF
        self.ended = False  # the peer half-closed: close once the answers are out
        self.paused = False
        self._url = bytearray()
        self._headers: dict[str, str] = {}
        self._body = bytearray()
        self._head_bytes = 0
        self._reject: Response | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.api._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.api._connections.discard(self)
        self.pending.clear()
        self.broken = True

    def eof_received(self) -> bool:
        """The peer is done sending: answer what it asked, then close."""
        self.broken = True
        self.ended = True
        return self.worker is not None  # keep the socket open for the answers

    def data_received(self, data: bytes) -> None:
        if self.broken:
            return
        import httptools

        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(Response.error(400, "protocol upgrades are not supported"))
        except Exception as exc:  # HttpParserError, or one of our callbacks refused
            reject = self._reject or Response.error(400, f"malformed HTTP request: {exc}")
            self._fail(reject)

    # -- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url.clear()
        self._headers = {}
        self._body.clear()
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value))
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers[key] = text
        if (
            key == "content-length"
            and text.strip().isdigit()
            and int(text) > self.api.max_body_bytes
        ):
            self._refuse(413, f"request body over {self.api.max_body_bytes} bytes")

    def on_headers_complete(self) -> None:
        expect = self._headers.get("expect", "").lower()
        if expect == "100-continue" and not self.pending and self.worker is None:
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if len(self._body) + len(body) > self.api.max_body_bytes:
            self._refuse(413, f"request body over {self.api.max_body_bytes} bytes")
        self._body += body

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode("latin-1")
        request = _Request(
            method=method,
            target=self._url.decode("latin-1"),
            body=bytes(self._body),
            headers=self._headers,
            keep_alive=self.parser.should_keep_alive(),
        )
        self._enqueue(request)

    # -- ours ---------------------------------------------------------------------------

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(431, f"request head over {MAX_HEAD_BYTES} bytes")

    def _refuse(self, status: int, message: str) -> None:
        self._reject = Response.error(status, message)
        raise _BadRequest(status, message)

    def _fail(self, response: Response) -> None:
        self.broken = True
        self._enqueue(_Reply(response))

    def _enqueue(self, item: _Request | _Reply) -> None:
        self.pending.append(item)
        if len(self.pending) >= _PIPELINE_PAUSE and not self.paused and self.transport:
            self.paused = True
            self.transport.pause_reading()
        if self.worker is None:
            self.worker = asyncio.get_running_loop().create_task(self._work())

    async def _work(self) -> None:
        """Answer the queued requests in order; close after an error or ``close``."""
        try:
            while self.pending:
                item = self.pending.popleft()
                if isinstance(item, _Reply):
                    self._write(item.response.encode(close=True))
                    self._tell("-", "-", item.response.status)
                    self.close()
                    return
                response = await self.api.handle(item.method, item.target, item.body, item.headers)
                self._write(response.encode(close=not item.keep_alive, head=item.method == "HEAD"))
                self._tell(item.method, item.target, response.status)
                if not item.keep_alive:
                    self.close()
                    return
                if self.paused and len(self.pending) < _PIPELINE_PAUSE // 2 and self.transport:
                    self.paused = False
                    self.transport.resume_reading()
            if self.ended:
                self.close()
        finally:
            self.worker = None

    def _tell(self, method: str, target: str, status: int) -> None:
        hook = self.api.on_request
        if hook is not None:
            with contextlib.suppress(Exception):  # a broken log must not break the API
                hook(method, target[:200], status)

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def close(self) -> None:
        self.broken = True
        self.pending.clear()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.broken = True
        self.pending.clear()
        if self.transport is not None:
            self.transport.abort()


async def serve_api(
    hub: HubLike,
    host: str = "127.0.0.1",
    port: int = 8474,
    *,
    allow_remote: bool = False,
    max_body_bytes: int = MAX_BODY_BYTES,
    on_request: Callable[[str, str, int], object] | None = None,
) -> ApiServer:
    """Start the control API over ``hub`` on ``host:port`` and return it (``close()`` it).

    ``host`` must be a loopback address unless ``allow_remote=True``: whoever reaches the
    API can point the proxies anywhere. Raises ScenarioError for a refused host and
    OSError when the address cannot be bound."""
    if not is_loopback(host) and not allow_remote:
        raise ScenarioError(
            "host",
            host,
            "a loopback address such as 127.0.0.1 or ::1 (allow_remote=True to bind another)",
            problem="is not on loopback",
        )
    api = ApiServer(hub, max_body_bytes=max_body_bytes, on_request=on_request)
    await api.start(host, port)
    return api
