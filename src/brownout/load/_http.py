"""A lean HTTP/1.1 client for the load generator: keep-alive pools over httptools.

Per request the hot path is: take an idle connection (or wait for one to free up or open), write
the prebuilt request bytes, let httptools parse the response, hand the outcome to a
callback. No task, future or timer is created per request: the caller's scheduler owns
timeouts (it scans its in-flight requests in deadline order) and calls
:meth:`Exchange.abort` for those that expire.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["Exchange", "HttpPool", "build_request"]

# What an exchange ended with. Status codes are filled in for RESPONSE.
RESPONSE = 0
CONNECT_ERROR = 1
IO_ERROR = 2
PROTOCOL_ERROR = 3
ABORTED = 4


def build_request(
    method: str, host_header: str, path: str, headers: dict[str, str], body: bytes | None
) -> bytes:
    """The bytes of one HTTP/1.1 request with keep-alive; ``Content-Length`` when there is a body."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host_header}"]
    lines.extend(f"{k}: {v}" for k, v in headers.items())
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if body else head


class Exchange:
    """One request/response on the wire. ``on_done(exchange)`` is called exactly once."""

    __slots__ = (
        "body",
        "body_bytes",
        "conn",
        "data",
        "done",
        "headers",
        "keep_body",
        "keep_headers",
        "on_done",
        "outcome",
        "sent_s",
        "status",
        "user",
    )

    def __init__(
        self,
        data: bytes,
        on_done: Callable[[Exchange], object],
        user: Any = None,
        *,
        keep_headers: bool = False,
        keep_body: bool = False,
    ) -> None:
        self.data = data
        self.on_done = on_done
        self.user = user
        self.keep_headers = keep_headers
        self.keep_body = keep_body
        self.conn: _Connection | None = None
        self.done = False
        self.outcome = -1
        self.status = 0
        self.sent_s = 0.0
        self.body_bytes = 0
        self.headers: list[tuple[bytes, bytes]] | None = [] if keep_headers else None
        self.body: list[bytes] | None = [] if keep_body else None

    def finish(self, outcome: int, status: int = 0) -> None:
        if self.done:
            return
        self.done = True
        self.outcome = outcome
        self.status = status
        self.conn = None
        self.on_done(self)

    def abort(self) -> None:
        """Give up on this exchange (client timeout): its connection is closed, not reused."""
        if self.done:
            return
        conn = self.conn
        self.finish(ABORTED)
        if conn is not None:
            conn.close()

    def header(self, name: bytes) -> bytes | None:
        """The first response header named ``name`` (lower case), when headers were kept."""
        for key, value in self.headers or ():
            if key.lower() == name:
                return value
        return None


class _Connection(asyncio.Protocol):
    __slots__ = ("closed", "current", "parser", "pool", "transport")

    def __init__(self, pool: HttpPool) -> None:
        import httptools

        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.current: Exchange | None = None
        self.closed = False

    # -- asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        pool = self.pool
        pool.connecting -= 1
        pool._idle_connection(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception:  # httptools.HttpParserError and friends
            current = self.current
            self.current = None
            if current is not None:
                current.finish(PROTOCOL_ERROR)
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._lost(self)
        current = self.current
        self.current = None
        if current is not None:
            current.finish(IO_ERROR)

    # -- httptools callbacks (httptools skips the ones a protocol does not define) -------
    def on_message_complete(self) -> None:
        current = self.current
        self.current = None
        status = self.parser.get_status_code()
        keep = self.parser.should_keep_alive()
        if not keep:
            self.close()
        else:
            self.pool._idle_connection(self)
        if current is not None:
            current.finish(RESPONSE, status)

    # -- ours --------------------------------------------------------------------------
    def _start(self, exchange: Exchange) -> None:
        self.current = exchange
        exchange.conn = self
        exchange.sent_s = self.pool.now()
        self.transport.write(exchange.data)  # type: ignore[union-attr]

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()


class _KeepingConnection(_Connection):
    """A connection that also collects response headers and bodies (cookies, crawling)."""

    __slots__ = ()

    def on_header(self, name: bytes, value: bytes) -> None:
        current = self.current
        if current is not None and current.headers is not None:
            current.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        current = self.current
        if current is not None:
            current.body_bytes += len(body)
            if current.body is not None:
                current.body.append(body)


class HttpPool:
    """Keep-alive connections to one ``host:port``, opened as concurrency requires.

    ``send(exchange)`` writes the request on an idle connection at once. Without one, the
    exchange waits (in order) for the first connection that frees up or opens, and a new
    connection is opened when fewer than ``max_connecting`` are being opened and fewer than
    ``max_connections`` exist. Capping connects in progress matters under overload: a burst
    of due requests would otherwise open a connection each (a task and a handshake apiece),
    the extra work makes the generator later still, and it collapses. Time spent waiting for
    a connection is the generator's own delay and shows as send lag, since ``sent_s`` is
    stamped when the request is written. ``now`` is the clock for that stamp. Headers and
    bodies are collected only with ``keep_responses=True`` (and then only for exchanges that
    ask for them).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        now: Callable[[], float],
        max_connections: int = 100_000,
        max_connecting: int = 64,
        connect_timeout_s: float = 5.0,
        keep_responses: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.now = now
        self.max_connections = max_connections
        self.max_connecting = max_connecting
        self.connect_timeout_s = connect_timeout_s
        # Parsing callbacks cost per header: only pools whose exchanges keep headers or
        # bodies use a protocol that defines them.
        self._protocol = _KeepingConnection if keep_responses else _Connection
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._waiting: deque[Exchange] = deque()
        self._closing = False
        self.opened = 0
        self.connecting = 0

    @property
    def connections(self) -> int:
        return len(self._all)

    def send(self, exchange: Exchange) -> None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn._start(exchange)
                return
        self._waiting.append(exchange)
        self._grow()

    def _grow(self) -> None:
        """Open connections for waiting exchanges, within both caps."""
        want = len(self._waiting) - self.connecting
        while (
            want > 0
            and self.connecting < self.max_connecting
            and len(self._all) < self.max_connections
            and not self._closing
        ):
            want -= 1
            conn = self._protocol(self)
            self._all.add(conn)
            self.opened += 1
            self.connecting += 1
            task = asyncio.get_running_loop().create_task(self._connect(conn))
            task.add_done_callback(_ignore_result)

    async def _connect(self, conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await loop.create_connection(lambda: conn, self.host, self.port)
        except (OSError, TimeoutError):
            self._all.discard(conn)
            self.connecting -= 1
            conn.closed = True
            # The oldest live waiting exchange takes the failure, so a dead target gives
            # each request its connect error instead of a wait until its timeout.
            waiting = self._waiting
            while waiting:
                exchange = waiting.popleft()
                if not exchange.done:
                    exchange.finish(CONNECT_ERROR)
                    break
            self._grow()

    def _idle_connection(self, conn: _Connection) -> None:
        waiting = self._waiting
        while waiting:
            exchange = waiting.popleft()
            if not exchange.done:  # one that timed out while waiting is skipped
                conn._start(exchange)
                return
        if self._closing:
            conn.close()
        else:
            self._idle.append(conn)

    def _lost(self, conn: _Connection) -> None:
        self._all.discard(conn)
        if self._waiting:
            self._grow()

    def close(self) -> None:
        """Close every connection; exchanges in flight or waiting end with ``IO_ERROR``."""
        self._closing = True
        for conn in list(self._all):
            conn.close()
        self._idle.clear()
        while self._waiting:
            self._waiting.popleft().finish(IO_ERROR)


def _ignore_result(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
