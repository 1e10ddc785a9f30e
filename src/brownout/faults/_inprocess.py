"""HTTP faults in-process, for a test suite: an httpx transport wrapper and an ASGI wrapper.

Both apply the :class:`~brownout.faults.HttpFault` s of an :class:`HttpFaultSet` exactly as
the proxy does, without a socket: per request they ask :meth:`HttpFaultSet.decide` for an
:class:`Action` (method, path with its query, headers keyed by lower-case names, the time
from ``clock``), then

- wait ``delay_s`` (every action may carry one), through the injected ``sleep``;
- ``abort``: answer the status of :meth:`Action.abort_response` (its JSON body and
  ``Retry-After``) without reaching the wrapped transport or app;
- ``reset``: let the request through, pass on the response head and the first half of its
  body, then fail the way a peer that resets the connection mid-response fails;
- ``slow_body``: let the request through and trickle the response body at ``rate_kb_s``
  (1 KB = 1000 bytes, as in Toxiproxy) in slices of at most 20 ms worth of bytes (as the
  proxy does), each sent after a sleep of ``len(slice) / (rate_kb_s * 1000)`` seconds, so
  the sleeps add up to ``len(body) / (rate_kb_s * 1000)``.

Two transports, as httpx has (``HTTPTransport`` and ``AsyncHTTPTransport``):
:class:`FaultTransport` blocks in ``sleep``, :class:`AsyncFaultTransport` awaits it. For a
reset or a slow body they read the wrapped response's body whole first (it is a test's
response, held in memory), then serve it from memory.

Time and sleeping are injected so tests never wait for real: pass ``clock=mock.now`` and
``sleep=mock.sleep`` (``mock.asleep`` for the async wrappers) of a
:class:`brownout.testing.MockClock`, or a ``sleep`` that records what it was asked.
A ramping ``http_delay`` measures its ramp from the time its fault was added to the set
(``faults.add(fault, clock())``), in ``clock``'s time.

httpx is imported only when a request goes through, so importing :mod:`brownout.faults`
needs no httpx and stays cheap. For that reason the transports do not inherit from httpx's
base classes at run time (httpx never checks a transport's type); type checkers see them as
``httpx.BaseTransport`` and ``httpx.AsyncBaseTransport`` subclasses, and they implement
every method of those.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from ._spec import Action, HttpFaultSet

if TYPE_CHECKING:
    from types import TracebackType

    import httpx

    _SyncTransportBase = httpx.BaseTransport
    _AsyncTransportBase = httpx.AsyncBaseTransport
else:
    _SyncTransportBase = object
    _AsyncTransportBase = object

__all__ = ["AsyncFaultTransport", "FaultMiddleware", "FaultTransport"]

# ASGI, as starlette.types spells it.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_SLICE_S = 0.02  # a slow body leaves in slices of this many seconds' worth, as in the proxy
_RESET_MESSAGE = "connection reset by brownout (http_reset fault)"


# -- shared by the three wrappers ----------------------------------------------------------


def _header_map(pairs: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Headers keyed by lower-case name, as :meth:`HttpFaultSet.decide` wants them; repeated
    headers are joined with ``", "`` (RFC 9110 section 5.3)."""
    out: dict[str, str] = {}
    for raw_name, raw_value in pairs:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def _abort_parts(action: Action) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers (lower-case names) and body of :meth:`Action.abort_response`: the
    very bytes the proxy sends, so the three ways of injecting a fault answer alike."""
    head, _, body = action.abort_response().partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    headers = []
    for line in lines:
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower(), value.strip()))
    return int(status_line.split()[1]), headers, body


def _slices(body: bytes, rate_kb_s: float) -> Iterator[tuple[bytes, float]]:
    """``body`` cut for a link of ``rate_kb_s``: each slice with the seconds it takes."""
    rate_b_s = rate_kb_s * 1000.0
    size = max(1, int(rate_b_s * _SLICE_S))
    for start in range(0, len(body), size):
        piece = body[start : start + size]
        yield piece, len(piece) / rate_b_s


def _request_target(request: httpx.Request) -> tuple[str, str, dict[str, str]]:
    """Method, path with its query (as sent on the wire) and headers of an httpx request."""
    return (
        request.method,
        request.url.raw_path.decode("latin-1"),
        _header_map(request.headers.raw),
    )


def _response_meta(response: httpx.Response) -> dict[str, Any]:
    """What the rebuilt response keeps of the wrapped one besides its body."""
    extensions = {k: v for k, v in response.extensions.items() if k in _KEPT_EXTENSIONS}
    return {
        "status_code": response.status_code,
        "headers": response.headers.raw,
        "extensions": extensions,
    }


_KEPT_EXTENSIONS = ("http_version", "reason_phrase")


def _rebuilt(
    request: httpx.Request, meta: dict[str, Any], content: Iterator[bytes] | AsyncIterator[bytes]
) -> httpx.Response:
    """A response with the head of the wrapped one and a new body stream. httpx would add
    ``Transfer-Encoding: chunked`` to a streamed body without ``Content-Length``; the head
    is kept exactly as the wrapped transport gave it."""
    import httpx

    had_encoding = any(k.lower() == b"transfer-encoding" for k, _ in meta["headers"])
    response = httpx.Response(
        meta["status_code"],
        headers=meta["headers"],
        content=content,
        request=request,
        extensions=meta["extensions"],
    )
    if not had_encoding and "transfer-encoding" in response.headers:
        del response.headers["transfer-encoding"]
    return response


def _raw_body(response: httpx.Response) -> bytes:
    """The body of ``response`` as it came (still content-encoded). Its stream is read
    directly: ``iter_raw`` refuses a response built with ``content=`` (already read),
    which ``httpx.MockTransport`` handlers return."""
    import httpx

    stream = response.stream
    if not isinstance(stream, httpx.SyncByteStream):
        raise TypeError("FaultTransport wraps a sync transport; use AsyncFaultTransport")
    return b"".join(stream)


async def _araw_body(response: httpx.Response) -> bytes:
    """:func:`_raw_body` for an async transport."""
    import httpx

    stream = response.stream
    if not isinstance(stream, httpx.AsyncByteStream):
        raise TypeError("AsyncFaultTransport wraps an async transport; use FaultTransport")
    return b"".join([chunk async for chunk in stream])


def _abort_response(request: httpx.Request, action: Action) -> httpx.Response:
    import httpx

    status, headers, body = _abort_parts(action)
    return httpx.Response(status, headers=headers, content=body, request=request)


def _read_error(request: httpx.Request) -> Exception:
    import httpx

    return httpx.ReadError(_RESET_MESSAGE, request=request)


# -- httpx ---------------------------------------------------------------------------------


class FaultTransport(_SyncTransportBase):
    """An httpx transport that injects ``faults`` into the requests going through ``inner``
    (any ``httpx.BaseTransport``: ``httpx.HTTPTransport``, ``httpx.MockTransport``,
    ``httpx.WSGITransport``)::

        faults = HttpFaultSet([HttpFault(name="pay-503", kind="http_abort",
                                         params={"match": {"path": "/pay/*"}})])
        client = httpx.Client(transport=FaultTransport(httpx.HTTPTransport(), faults))

    ``faults`` stays live: add and remove faults on it between requests. ``clock()`` gives
    the time in seconds that :meth:`HttpFaultSet.decide` and ramps use; ``sleep(seconds)``
    waits (default ``time.sleep``). A reset answers the response head, then raises
    ``httpx.ReadError`` once the first half of the body has been read. For
    ``httpx.AsyncClient`` use :class:`AsyncFaultTransport`.
    """

    def __init__(
        self,
        inner: httpx.BaseTransport,
        faults: HttpFaultSet,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        self.inner = inner
        self.faults = faults
        self.clock = clock
        self.sleep: Callable[[float], object] = time.sleep if sleep is None else sleep

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        action = self.faults.decide(*_request_target(request), self.clock())
        if action is None:
            return self.inner.handle_request(request)
        if action.delay_s > 0:
            self.sleep(action.delay_s)
        if action.kind == "abort":
            return _abort_response(request, action)
        if action.kind == "delay":
            return self.inner.handle_request(request)
        response = self.inner.handle_request(request)
        try:
            meta = _response_meta(response)
            body = _raw_body(response)
        finally:
            response.close()
        if action.kind == "reset":
            return _rebuilt(request, meta, self._reset_body(request, body))
        return _rebuilt(request, meta, self._slow_body(body, action.rate_kb_s))

    def _reset_body(self, request: httpx.Request, body: bytes) -> Iterator[bytes]:
        if len(body) >= 2:
            yield body[: len(body) // 2]
        raise _read_error(request)

    def _slow_body(self, body: bytes, rate_kb_s: float) -> Iterator[bytes]:
        for piece, seconds in _slices(body, rate_kb_s):
            self.sleep(seconds)
            yield piece

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> FaultTransport:
        self.inner.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self.inner.__exit__(exc_type, exc_value, traceback)

    def __repr__(self) -> str:
        return f"FaultTransport({self.inner!r}, faults={[f.name for f in self.faults]})"


class AsyncFaultTransport(_AsyncTransportBase):
    """:class:`FaultTransport` for ``httpx.AsyncClient``: wraps an
    ``httpx.AsyncBaseTransport`` (``httpx.AsyncHTTPTransport``, ``httpx.MockTransport``,
    ``httpx.ASGITransport``); ``sleep(seconds)`` is awaited (default ``asyncio.sleep``;
    ``MockClock.asleep`` in tests)."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        faults: HttpFaultSet,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] | None = None,
    ) -> None:
        self.inner = inner
        self.faults = faults
        self.clock = clock
        self.sleep: Callable[[float], Awaitable[object]] = asyncio.sleep if sleep is None else sleep

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        action = self.faults.decide(*_request_target(request), self.clock())
        if action is None:
            return await self.inner.handle_async_request(request)
        if action.delay_s > 0:
            await self.sleep(action.delay_s)
        if action.kind == "abort":
            return _abort_response(request, action)
        if action.kind == "delay":
            return await self.inner.handle_async_request(request)
        response = await self.inner.handle_async_request(request)
        try:
            meta = _response_meta(response)
            body = await _araw_body(response)
        finally:
            await response.aclose()
        if action.kind == "reset":
            return _rebuilt(request, meta, self._reset_body(request, body))
        return _rebuilt(request, meta, self._slow_body(body, action.rate_kb_s))

    async def _reset_body(self, request: httpx.Request, body: bytes) -> AsyncIterator[bytes]:
        if len(body) >= 2:
            yield body[: len(body) // 2]
        raise _read_error(request)

    async def _slow_body(self, body: bytes, rate_kb_s: float) -> AsyncIterator[bytes]:
        for piece, seconds in _slices(body, rate_kb_s):
            await self.sleep(seconds)
            yield piece

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def __aenter__(self) -> AsyncFaultTransport:
        await self.inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.inner.__aexit__(exc_type, exc_value, traceback)

    def __repr__(self) -> str:
        return f"AsyncFaultTransport({self.inner!r}, faults={[f.name for f in self.faults]})"


# -- ASGI ----------------------------------------------------------------------------------


class FaultMiddleware:
    """A pure ASGI wrapper that injects ``faults`` into the HTTP requests ``app`` serves;
    lifespan and websocket scopes pass through untouched::

        app = FaultMiddleware(app, HttpFaultSet([HttpFault(name="slow", kind="http_delay",
                                                           params={"delay_s": 0.2})]))

    ``sleep(seconds)`` is awaited (default ``asyncio.sleep``). The path a fault matches is
    the raw path (``scope["raw_path"]``, else ``scope["path"]``) with the query string.

    A reset passes on the response start and the first half of the body (by its
    ``Content-Length`` when the app declares one, else of the whole body, which is then held
    back until the app has sent all of it), then raises ``ConnectionResetError``. A server
    drops the connection when an app raises after the response started: uvicorn and
    hypercorn log the error and close the connection, so the client reads a truncated body
    and fails (httpx: ``RemoteProtocolError``, "peer closed connection without sending
    complete message body"). ``httpx.ASGITransport`` and starlette's ``TestClient`` re-raise
    the app's exception in the test instead, unless told not to (``raise_app_exceptions``,
    ``raise_server_exceptions``), in which case the client gets the truncated body.
    """

    def __init__(
        self,
        app: ASGIApp,
        faults: HttpFaultSet,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] | None = None,
    ) -> None:
        self.app = app
        self.faults = faults
        self.clock = clock
        self.sleep: Callable[[float], Awaitable[object]] = asyncio.sleep if sleep is None else sleep

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else scope.get("path", "/")
        query = scope.get("query_string", b"")
        if query:
            path = f"{path}?{query.decode('latin-1')}"
        headers = _header_map(scope.get("headers", ()))
        action = self.faults.decide(scope.get("method", "GET"), path, headers, self.clock())
        if action is None:
            await self.app(scope, receive, send)
            return
        if action.delay_s > 0:
            await self.sleep(action.delay_s)
        if action.kind == "abort":
            status, abort_headers, body = _abort_parts(action)
            await send({"type": "http.response.start", "status": status, "headers": abort_headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})
        elif action.kind == "reset":
            await self._reset(scope, receive, send)
        elif action.kind == "slow_body":
            await self.app(scope, receive, _SlowSend(send, action.rate_kb_s, self.sleep))
        else:
            await self.app(scope, receive, send)

    async def _reset(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, _ResetSend(send))
        # The app finished (or swallowed the error raised at the cut): the connection goes
        # down all the same.
        raise ConnectionResetError(_RESET_MESSAGE)

    def __repr__(self) -> str:
        return f"FaultMiddleware({self.app!r}, faults={[f.name for f in self.faults]})"


class _SlowSend:
    """``send`` for a slow body: each ``http.response.body`` goes out in slices, each after
    the time it takes at ``rate_kb_s``."""

    __slots__ = ("rate_kb_s", "send", "sleep")

    def __init__(
        self, send: Send, rate_kb_s: float, sleep: Callable[[float], Awaitable[object]]
    ) -> None:
        self.send = send
        self.rate_kb_s = rate_kb_s
        self.sleep = sleep

    async def __call__(self, message: Message) -> None:
        body = message.get("body", b"") if message["type"] == "http.response.body" else b""
        if not body:
            await self.send(message)
            return
        more_body = message.get("more_body", False)
        pieces = list(_slices(body, self.rate_kb_s))
        for index, (piece, seconds) in enumerate(pieces):
            await self.sleep(seconds)
            last = index == len(pieces) - 1
            await self.send(
                {
                    "type": "http.response.body",
                    "body": piece,
                    "more_body": more_body if last else True,
                }
            )


class _ResetSend:
    """``send`` for a reset: passes the response start and the first half of the body, then
    raises ``ConnectionResetError`` (and again on every later call)."""

    __slots__ = ("buffer", "cut", "done", "send", "sent")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.cut: int | None = None  # half the declared Content-Length
        self.sent = 0
        self.buffer = bytearray()  # the body so far, when no length is declared
        self.done = False

    async def __call__(self, message: Message) -> None:
        if self.done:
            raise ConnectionResetError(_RESET_MESSAGE)
        kind = message["type"]
        if kind == "http.response.start":
            for name, value in message.get("headers", ()):
                if name.lower() == b"content-length" and value.strip().isdigit():
                    self.cut = int(value) // 2
            await self.send(message)
            return
        if kind != "http.response.body":
            await self.send(message)
            return
        body = bytes(message.get("body", b""))
        more_body = message.get("more_body", False)
        if self.cut is None:
            self.buffer += body
            if more_body:
                return
            part = bytes(self.buffer[: len(self.buffer) // 2])
        else:
            room = self.cut - self.sent
            if len(body) < room and more_body:
                await self.send({"type": "http.response.body", "body": body, "more_body": True})
                self.sent += len(body)
                return
            part = body[: max(room, 0)]
        self.done = True
        if part:
            await self.send({"type": "http.response.body", "body": part, "more_body": True})
        raise ConnectionResetError(_RESET_MESSAGE)
