"""Fault-injecting TCP proxies, many in one asyncio loop: Toxiproxy's toxics, plus faults
that act on HTTP/1.1 requests.

A :class:`ProxyHub` holds named :class:`Proxy` s (Toxiproxy's server). Each proxy listens
on one address and, for every client connection it accepts, opens a connection to its
upstream and relays bytes both ways.

How bytes move
--------------
Each connection has two directions, Toxiproxy's streams: ``upstream`` (client -> server)
and ``downstream`` (server -> client). A direction with nothing to do is a plain relay: the
protocol's ``data_received`` writes the bytes straight to the other transport, and flow
control is the transports' own (reading from one side pauses while the other side's write
buffer is above its high-water mark). An EOF is passed on with ``write_eof``, so half-closed
connections behave as without the proxy; the connection is closed once both directions
have passed their EOF, or at once when a peer vanishes.

A direction with toxics (or with HTTP work to do, see below) queues its chunks instead and a
pump task passes each one through the direction's toxics in the order they were added, the
way Toxiproxy chains them:

- ``latency``: each chunk leaves ``latency +- jitter`` ms (uniform) after it arrived; order
  is kept, so a chunk never overtakes the one before it.
- ``bandwidth``: at most ``rate`` KB/s (1 KB = 1000 bytes), in slices of 20 ms worth of
  bytes; a slice leaves when its transmission time has elapsed.
- ``slicer``: a chunk leaves as pieces of ``average_size +- size_variation`` bytes with
  ``delay`` microseconds between them.
- ``limit_data``: after ``bytes`` bytes have passed in that direction, the connection closes.
- ``timeout``: the direction's data is dropped; ``timeout`` ms after the toxic took effect
  on the connection, the connection closes (0: never, the data is dropped while the toxic
  exists: a black hole).
- ``reset_peer``: ``timeout`` ms after the toxic took effect (0: at once) both sides get a
  TCP RST (``SO_LINGER`` on with 0 s, then close).
- ``slow_close``: an EOF waits ``delay`` ms before it is passed on.

A toxic acts on a connection with probability ``toxicity``, rolled once per connection and
toxic when the toxic first applies to it (remembered until the toxic is removed, or its
toxicity changes). Adding, updating or removing a toxic applies to the open connections at
once (keep-alive connections are the norm); a removed toxic lets go of the chunk it was
holding, as in Toxiproxy. A direction whose queue empties with no toxic left goes back to
the plain relay. ``enabled = False`` is Toxiproxy's ``down``: the listener is closed and
every connection with it; enabling listens again on the same address.

HTTP-aware faults
-----------------
While a proxy has HTTP faults, each connection reads its client's bytes with httptools'
request parser to find requests, and its server's bytes with a response parser to find
where responses end. For each request :meth:`HttpFaultSet.decide` is called once, when its
headers are complete, and the :class:`Action` is applied: ``delay`` holds the request
``delay_s`` before forwarding it; ``abort`` never forwards it and answers the client
itself, ``delay_s`` after the headers arrived (the client connection stays usable, and the
upstream connection stays in step because it never saw that request); ``reset`` forwards
it, then passes on the response's headers and at most half of the body bytes of the chunk
that carries them, and resets the client connection; ``slow_body`` forwards it and
trickles the response body back at ``rate_kb_s``.

Costs and limits, by design:

- With no HTTP fault, connections are not parsed at all (the plain relay above). When the
  first fault is added, an open connection starts parsing at its next request boundary: the
  first client chunk after the server has sent something, when that chunk starts like a
  request line. When the last fault is removed, a connection stops parsing as soon as it
  has no request or response in progress.
- One request at a time per connection: a client that pipelines (sends a request before
  the previous response ended) turns its connection into plain TCP, as does anything the
  parser rejects (not HTTP, or garbage), an ``Upgrade`` or a ``CONNECT``: for good, and
  silently; bytes are never dropped or reordered because of it.
- A chunk read from a client holds bytes of one request at most (true of every client that
  does not pipeline), so requests are held, dropped or forwarded chunk by chunk.
- Responses to ``HEAD`` end with their headers; a response without a length ends when the
  server closes.

:meth:`Proxy.stats` counts connections, bytes relayed each way, HTTP requests seen and
faults applied (HTTP actions, plus toxics that won their toxicity roll on a connection).
A vanishing peer or garbage never raises out of the proxy; it is logged at debug level.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

from .._net import join_host_port, split_host_port
from ..errors import ScenarioError
from ..scenario._check import name as check_name
from ._spec import Action, HttpFault, HttpFaultSet, ProxyConflict, ProxyNotFound, Toxic

if TYPE_CHECKING:
    import httptools

__all__ = ["Proxy", "ProxyHub"]

_log = logging.getLogger("brownout.faults.proxy")

# A queued direction pauses its reader above this many queued bytes, resumes below the low.
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024
_SLICE_S = 0.02  # bandwidth and slow_body leave in slices of this many seconds' worth
_CLOSE_WAIT_S = 2.0  # how long closing a proxy waits for its sockets to be released
_RESET_FLUSH_S = 1.0  # how long an HTTP reset waits for the partial response to leave

# Queue item kinds.
_DATA = 0
_EOF = 1
_RESET = 2


class _Closed(Exception):
    """Raised inside a pump when its connection closed, to unwind it."""


def _rst(transport: asyncio.Transport | None) -> None:
    """Close ``transport`` with a TCP RST: linger on with a 0 s timeout, then abort."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        transport.abort()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _looks_like_request(data: bytes) -> bool:
    """Whether ``data`` starts like an HTTP request line (an upper-case method token)."""
    end = data.find(b" ", 0, 24)
    token = data[:end] if end >= 0 else data[:24]
    return token.isalpha() and token.isupper()


def _require_httptools() -> None:
    try:
        import httptools  # noqa: F401
    except ImportError:  # pragma: no cover - httptools ships with the load extra
        raise ModuleNotFoundError(
            "HTTP faults need httptools: pip install 'brownout[load]'", name="httptools"
        ) from None


# ---------------------------------------------------------------------------------------
# One direction of one connection
# ---------------------------------------------------------------------------------------


class _Link:
    """One direction of a connection: its toxics, its queue and the pump that drains it.

    ``src`` is the transport read from, ``dst`` the one written to. ``task`` is ``None``
    exactly when the queue is empty and no toxic is active, which is when the protocols may
    write straight through (the fast path)."""

    __slots__ = (
        "by_name",
        "chain",
        "closed",
        "conn",
        "done",
        "dst",
        "dst_paused",
        "nbytes",
        "pace_next",
        "queue",
        "queued",
        "src",
        "src_eof",
        "src_paused",
        "state",
        "stream",
        "task",
        "waiter",
        "waiting_data",
    )

    def __init__(self, conn: _Connection, stream: str) -> None:
        self.conn = conn
        self.stream = stream
        self.src: asyncio.Transport | None = None
        self.dst: asyncio.Transport | None = None
        self.dst_paused = False
        self.src_paused = False
        self.src_eof = False
        self.chain: tuple[Toxic, ...] = ()
        self.by_name: dict[str, Toxic] = {}
        self.state: dict[tuple[str, str], list[float]] = {}
        self.queue: deque[tuple[int, bytes, float, float, float]] = deque()
        self.queued = 0
        self.task: asyncio.Task[None] | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.waiting_data = False
        self.pace_next = 0.0
        self.nbytes = 0
        self.done = False
        self.closed = False

    # -- flow control --------------------------------------------------------------------

    def update_reading(self) -> None:
        """Pause the source while the destination cannot take more or too much is queued;
        resume once both are back under their low marks."""
        src = self.src
        if src is None or self.src_eof or src.is_closing():
            return
        if self.src_paused:
            if self.dst_paused or self.queued > _LOW_WATER:
                return
            self.src_paused = False
            with contextlib.suppress(RuntimeError, OSError):
                src.resume_reading()
        elif self.dst_paused or self.queued > _HIGH_WATER:
            self.src_paused = True
            with contextlib.suppress(RuntimeError, OSError):
                src.pause_reading()

    def set_dst_paused(self, paused: bool) -> None:
        self.dst_paused = paused
        self.update_reading()
        if not paused:
            self.wake()

    # -- input ---------------------------------------------------------------------------

    def send(self, data: bytes, hold_until: float = 0.0, pace: float = 0.0) -> None:
        """Pass ``data`` on: straight to the destination when nothing is queued and no toxic
        is active, else through the queue (``hold_until``: not before this loop time;
        ``pace``: trickle at this many bytes per second)."""
        if self.closed:
            return
        dst = self.dst
        if self.task is None and not hold_until and not pace and dst is not None:
            if not dst.is_closing():
                dst.write(data)
                self.nbytes += len(data)
            return
        self.push(_DATA, data, hold_until, pace)

    def push(
        self, kind: int, data: bytes = b"", hold_until: float = 0.0, pace: float = 0.0
    ) -> None:
        if self.closed:
            return
        self.queue.append((kind, data, self.conn.loop.time(), hold_until, pace))
        if data:
            self.queued += len(data)
            if self.queued > _HIGH_WATER and not self.src_paused:
                self.update_reading()
        self.kick()

    def eof(self) -> None:
        """The source sent EOF: pass it on after whatever is queued."""
        if self.src_eof:
            return
        self.src_eof = True
        if self.task is None and not self.chain and self.dst is not None:
            self.conn.pass_eof(self)
        else:
            self.push(_EOF)

    def kick(self) -> None:
        if self.task is None:
            self.task = self.conn.loop.create_task(self._run())
            self.conn.refresh_fast()
        elif self.waiting_data:
            self.wake()

    # -- toxics --------------------------------------------------------------------------

    def set_chain(self, chain: tuple[Toxic, ...]) -> None:
        if len(chain) == len(self.chain) and all(
            a is b for a, b in zip(chain, self.chain, strict=True)
        ):
            return
        self.chain = chain
        self.by_name = {t.name: t for t in chain}
        keep = {(t.name, t.type) for t in chain}
        for key in [k for k in self.state if k not in keep]:
            del self.state[key]
        if chain and self.task is None and not self.closed:
            self.task = self.conn.loop.create_task(self._run())
        self.wake()

    def alive(self, toxic: Toxic) -> bool:
        return self.by_name.get(toxic.name) is toxic

    # -- the pump ------------------------------------------------------------------------

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def shutdown(self) -> None:
        self.closed = True
        self.queue.clear()
        self.queued = 0
        self.wake()

    async def _wait(self, deadline: float | None) -> None:
        """Sleep until ``deadline`` (loop time) or until woken; raise _Closed once closed."""
        if self.closed:
            raise _Closed
        loop = self.conn.loop
        fut: asyncio.Future[None] = loop.create_future()
        self.waiter = fut
        handle = loop.call_at(deadline, _wake, fut) if deadline is not None else None
        try:
            await fut
        finally:
            self.waiter = None
            if handle is not None:
                handle.cancel()
        if self.closed:
            raise _Closed

    async def _hold(self, toxic: Toxic, deadline: float) -> None:
        """Wait until ``deadline`` unless ``toxic`` is removed or replaced meanwhile."""
        loop = self.conn.loop
        while loop.time() < deadline and self.alive(toxic):
            await self._wait(deadline)

    async def _run(self) -> None:
        loop = self.conn.loop
        queue = self.queue
        try:
            while not self.closed:
                if not queue:
                    if not self.chain:
                        break
                    self.waiting_data = True
                    try:
                        await self._wait(None)
                    finally:
                        self.waiting_data = False
                    continue
                kind, data, arrived, hold_until, pace = queue[0]
                if hold_until and hold_until > loop.time():
                    await self._wait(hold_until)
                    continue
                queue.popleft()
                if data:
                    self.queued -= len(data)
                    if self.src_paused:
                        self.update_reading()
                if kind == _DATA:
                    await self._through(self.chain, data, arrived, pace)
                elif kind == _EOF:
                    for toxic in self.chain:
                        if toxic.type == "slow_close":
                            await self._hold(toxic, loop.time() + toxic.seconds("delay"))
                    self.conn.pass_eof(self)
                else:
                    await self._flush_then_reset()
                    return
        except _Closed:
            return
        except Exception as exc:  # a bug must not take the proxy down: drop this connection
            _log.debug("proxy %s: %s pump failed: %r", self.conn.proxy.name, self.stream, exc)
            self.conn.close(force=True)
            return
        finally:
            self.task = None
        if not self.closed:
            self.conn.refresh_fast()

    async def _through(
        self, chain: tuple[Toxic, ...], data: bytes, arrived: float, pace: float
    ) -> None:
        """Pass one chunk through ``chain`` (a snapshot: toxics added meanwhile act from
        the next chunk on; removed ones let the chunk go)."""
        loop = self.conn.loop
        for i, toxic in enumerate(chain):
            if not self.alive(toxic):
                continue
            kind = toxic.type
            attrs = toxic.attributes
            if kind == "latency":
                delay = attrs["latency"] / 1e3
                jitter = attrs["jitter"] / 1e3
                if jitter:
                    delay += self.conn.proxy._rng.uniform(-jitter, jitter)
                deadline = arrived + max(delay, 0.0)
                await self._hold(toxic, deadline)
                arrived = max(arrived, deadline)
            elif kind == "bandwidth":
                rate = float(attrs["rate"]) * 1e3
                if rate <= 0:
                    continue
                state = self.state.setdefault((toxic.name, kind), [0.0])
                piece = max(int(rate * _SLICE_S), 1)
                rest = chain[i + 1 :]
                offset = 0
                while offset < len(data):
                    part = data[offset : offset + piece] if self.alive(toxic) else data[offset:]
                    state[0] = max(loop.time(), state[0]) + len(part) / rate
                    await self._hold(toxic, state[0])
                    await self._through(rest, part, arrived, pace)
                    offset += len(part)
                return
            elif kind == "slicer":
                average = int(attrs["average_size"])
                variation = int(attrs["size_variation"])
                gap = toxic.seconds("delay")
                rng = self.conn.proxy._rng
                rest = chain[i + 1 :]
                offset = 0
                while offset < len(data):
                    if self.alive(toxic):
                        size = average + (rng.randint(-variation, variation) if variation else 0)
                        part = data[offset : offset + max(size, 1)]
                    else:
                        part = data[offset:]
                    await self._through(rest, part, arrived, pace)
                    offset += len(part)
                    if offset < len(data) and gap > 0:
                        await self._hold(toxic, loop.time() + gap)
                return
            elif kind == "limit_data":
                state = self.state.setdefault((toxic.name, kind), [0.0])
                limit = int(attrs["bytes"])
                left = limit - int(state[0])
                if left > 0:
                    part = data if len(data) <= left else data[:left]
                    state[0] += len(part)
                    await self._through(chain[i + 1 :], part, arrived, pace)
                if state[0] >= limit:
                    self.conn.close()
                    raise _Closed
                return
            elif kind == "timeout":
                return  # dropped; the connection's timer closes it
            # slow_close acts on the EOF, reset_peer through its timer: data passes.
        await self._emit(data, pace)

    async def _emit(self, data: bytes, pace: float) -> None:
        if not pace:
            await self._write(data)
            return
        loop = self.conn.loop
        piece = max(int(pace * _SLICE_S), 1)
        for offset in range(0, len(data), piece):
            part = data[offset : offset + piece]
            self.pace_next = max(loop.time(), self.pace_next) + len(part) / pace
            while loop.time() < self.pace_next:
                await self._wait(self.pace_next)
            await self._write(part)

    async def _write(self, data: bytes) -> None:
        while self.dst is None or self.dst_paused:
            await self._wait(None)
        dst = self.dst
        if not dst.is_closing():
            dst.write(data)
            self.nbytes += len(data)

    async def _flush_then_reset(self) -> None:
        """Reset the connection once what was written to the destination has left (an
        abort would discard it)."""
        loop = self.conn.loop
        dst = self.dst
        end = loop.time() + _RESET_FLUSH_S
        while dst is not None and dst.get_write_buffer_size() and loop.time() < end:
            await self._wait(loop.time() + 0.002)
        self.conn.close(rst=True)


# ---------------------------------------------------------------------------------------
# HTTP: where requests and responses begin and end
# ---------------------------------------------------------------------------------------


class _RequestSide:
    """httptools request-parser callbacks: the request being read and its boundaries."""

    __slots__ = (
        "abort_sent",
        "complete_in_feed",
        "decided",
        "decided_now",
        "dropping",
        "head",
        "headers",
        "http",
        "in_request",
        "parser",
        "pipelined",
        "url",
    )

    def __init__(self, http: _Http) -> None:
        self.http = http
        self.in_request = False
        self.decided = False
        self.decided_now = False
        self.dropping = False
        self.complete_in_feed = False
        self.pipelined = False
        self.abort_sent = False
        self.url: list[bytes] = []
        self.headers: dict[str, str] = {}
        self.head: list[bytes] = []
        self.parser: httptools.HttpRequestParser | None = None

    def on_message_begin(self) -> None:
        if self.complete_in_feed or self.http.pending:
            self.pipelined = True  # a request before the previous one was answered
        self.in_request = True
        self.decided = False
        self.url = []
        self.headers = {}

    def on_url(self, url: bytes) -> None:
        self.url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        old = self.headers.get(key)
        self.headers[key] = text if old is None else f"{old}, {text}"

    def on_headers_complete(self) -> None:
        self.decided = True
        self.decided_now = True

    def on_message_complete(self) -> None:
        self.in_request = False
        self.complete_in_feed = True


class _ResponseSide:
    """httptools response-parser callbacks: the response being relayed and its action."""

    __slots__ = (
        "action",
        "active",
        "body_in_feed",
        "feed_action",
        "headers_done",
        "headers_done_now",
        "http",
        "interim",
        "is_head",
        "parser",
        "reset_sent",
        "swap",
    )

    def __init__(self, http: _Http) -> None:
        self.http = http
        self.active = False
        self.action: Action | None = None
        self.feed_action: Action | None = None
        self.is_head = False
        self.headers_done = False
        self.headers_done_now = False
        self.interim = False
        self.body_in_feed = 0
        self.swap = False
        self.reset_sent = False
        self.parser: httptools.HttpResponseParser | None = None

    def on_message_begin(self) -> None:
        pending = self.http.pending
        self.active = True
        self.headers_done = False
        self.interim = False
        self.is_head, self.action = pending[0] if pending else (False, None)
        self.feed_action = self.action

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.headers_done_now = True
        assert self.parser is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.interim = True  # 100 Continue and friends: the real response follows
        elif self.is_head:  # no body follows, whatever the headers say
            self.swap = True
            self.finish()

    def on_body(self, body: bytes) -> None:
        self.body_in_feed += len(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
        elif self.active:
            self.finish()

    def finish(self) -> None:
        self.active = False
        self.action = None
        if self.http.pending:
            self.http.pending.popleft()


class _Http:
    """The HTTP view of one connection: parsers on both directions, the requests waiting
    for their responses, and the actions applied to them."""

    __slots__ = ("conn", "pending", "req", "resp")

    def __init__(self, conn: _Connection) -> None:
        import httptools

        self.conn = conn
        # Requests forwarded and not yet answered: (is HEAD, action for the response).
        self.pending: deque[tuple[bool, Action | None]] = deque()
        self.req = _RequestSide(self)
        self.req.parser = httptools.HttpRequestParser(self.req)
        self.resp = _ResponseSide(self)
        self.resp.parser = httptools.HttpResponseParser(self.resp)

    def idle(self) -> bool:
        req = self.req
        return not (req.in_request or req.dropping or req.head or self.pending or self.resp.active)

    def take_head(self) -> bytes:
        head = b"".join(self.req.head)
        self.req.head.clear()
        return head

    def up(self, data: bytes) -> None:
        """A chunk from the client."""
        import httptools

        conn = self.conn
        req = self.req
        req.complete_in_feed = False
        req.decided_now = False
        req.pipelined = False
        assert req.parser is not None
        try:
            req.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # Upgrade or CONNECT: not HTTP from here on
            conn.give_up_http(data, "upgrade")
            return
        except httptools.HttpParserError as exc:
            conn.give_up_http(data, f"not HTTP ({exc})")
            return
        if req.pipelined:
            conn.give_up_http(data, "pipelined requests")
            return
        proxy = conn.proxy
        if req.decided_now:
            data = self.take_head() + data if req.head else data
            method = req.parser.get_method().decode("latin-1")
            path = b"".join(req.url).decode("latin-1")
            proxy._requests += 1
            action = proxy.http_faults.decide(method, path, req.headers, proxy._clock())
            is_head = method == "HEAD"
            if action is None:
                self.pending.append((is_head, None))
                conn.up.send(data)
            else:
                proxy._faults_applied += 1
                now = conn.loop.time()
                hold = now + action.delay_s if action.delay_s > 0 else 0.0
                if action.kind == "abort":
                    req.dropping = True
                    answer = action.abort_response()
                    if is_head:
                        answer = answer[: answer.index(b"\r\n\r\n") + 4]
                    conn.down.push(_DATA, answer, hold_until=hold)
                else:
                    keep = action if action.kind in ("reset", "slow_body") else None
                    self.pending.append((is_head, keep))
                    conn.up.send(data, hold_until=hold)
        elif req.in_request and not req.decided:
            req.head.append(data)  # the head is incomplete: nothing is decided yet
        elif not req.dropping:
            conn.up.send(data)
        if req.complete_in_feed and not req.in_request:
            req.dropping = False

    def down(self, data: bytes) -> None:
        """A chunk from the server."""
        import httptools

        conn = self.conn
        resp = self.resp
        resp.body_in_feed = 0
        resp.headers_done_now = False
        resp.feed_action = resp.action if resp.active else None
        assert resp.parser is not None
        try:
            resp.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # 101 Switching Protocols
            conn.down.send(data)
            conn.give_up_http(b"", "upgrade")
            return
        except httptools.HttpParserError as exc:
            conn.down.send(data)
            conn.give_up_http(b"", f"response not HTTP ({exc})")
            return
        if resp.swap:  # a HEAD response ended with its headers: start afresh
            resp.swap = False
            resp.parser = httptools.HttpResponseParser(resp)
        action = resp.feed_action
        if action is None:
            conn.down.send(data)
            return
        headers_part = max(len(data) - resp.body_in_feed, 0) if resp.headers_done_now else 0
        if action.kind == "slow_body":
            pace = action.rate_kb_s * 1e3
            if resp.headers_done_now:
                conn.down.send(data[:headers_part])
                if headers_part < len(data):
                    conn.down.send(data[headers_part:], pace=pace)
            elif resp.headers_done or not resp.active:
                conn.down.send(data, pace=pace)
            else:
                conn.down.send(data)
            return
        # reset: headers, then at most half of the body bytes of this chunk, then RST.
        if resp.reset_sent:
            return
        body = resp.body_in_feed
        if not resp.headers_done_now and resp.active and not resp.headers_done:
            conn.down.send(data)  # headers still incomplete
            return
        if body == 0 and resp.active:
            conn.down.send(data)  # headers only so far: cut in the body to come
            return
        conn.down.send(data[: headers_part + body // 2])
        resp.reset_sent = True
        conn.down.push(_RESET)


# ---------------------------------------------------------------------------------------
# A connection: client side, upstream side, two links
# ---------------------------------------------------------------------------------------


class _ClientSide(asyncio.Protocol):
    """The accepted client connection. ``fast`` is the upstream transport while bytes may
    go straight through, else ``None``."""

    __slots__ = ("conn", "fast", "nbytes", "proxy")
    conn: _Connection  # set by connection_made, which asyncio calls first

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.fast: asyncio.Transport | None = None
        self.nbytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but quack the same.
        self.conn = _Connection(self.proxy, self, cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        dst = self.fast
        if dst is not None:
            dst.write(data)
            self.nbytes += len(data)
            self.conn.last_down = False
        else:
            self.conn.from_client(data)

    def eof_received(self) -> bool:
        self.conn.eof_from_client()
        return True

    def pause_writing(self) -> None:
        self.conn.down.set_dst_paused(True)

    def resume_writing(self) -> None:
        self.conn.down.set_dst_paused(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.lost("client", exc)


class _UpstreamSide(asyncio.Protocol):
    """The connection to the upstream. ``fast`` is the client transport while bytes may go
    straight through, else ``None``."""

    __slots__ = ("conn", "fast", "nbytes")

    def __init__(self, conn: _Connection) -> None:
        self.conn = conn
        self.fast: asyncio.Transport | None = None
        self.nbytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.conn.upstream_made(self, cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        dst = self.fast
        if dst is not None:
            dst.write(data)
            self.nbytes += len(data)
            self.conn.last_down = True
        else:
            self.conn.from_upstream(data)

    def eof_received(self) -> bool:
        self.conn.eof_from_upstream()
        return True

    def pause_writing(self) -> None:
        self.conn.up.set_dst_paused(True)

    def resume_writing(self) -> None:
        self.conn.up.set_dst_paused(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.lost("upstream", exc)


class _Connection:
    """One client connection and its upstream connection."""

    __slots__ = (
        "client",
        "client_side",
        "closed",
        "connect_task",
        "down",
        "finished",
        "http",
        "http_ok",
        "last_down",
        "loop",
        "open_transports",
        "proxy",
        "rolls",
        "timers",
        "up",
        "upstream",
        "upstream_side",
    )

    def __init__(self, proxy: Proxy, side: _ClientSide, transport: asyncio.Transport) -> None:
        self.proxy = proxy
        self.loop = asyncio.get_running_loop()
        self.client_side = side
        self.client = transport
        self.upstream: asyncio.Transport | None = None
        self.upstream_side: _UpstreamSide | None = None
        self.up = _Link(self, "upstream")
        self.down = _Link(self, "downstream")
        self.up.src = transport
        self.down.dst = transport
        self.up.dst_paused = True  # until the upstream connection is made
        self.closed = False
        self.open_transports = 1
        self.finished: asyncio.Future[None] = self.loop.create_future()
        self.rolls: dict[str, bool] = {}
        self.timers: dict[str, tuple[Toxic, asyncio.TimerHandle]] = {}
        self.http: _Http | None = None
        self.http_ok = True  # False once the connection turned out not to be HTTP
        self.last_down = True  # the last bytes relayed went server -> client (or none yet)
        self.connect_task: asyncio.Task[None] | None = None
        proxy._conns.add(self)
        proxy._connections_total += 1
        self.up.update_reading()  # no reading until the upstream is there
        # uvloop starts reading after connection_made returns, undoing that pause: repeat
        # it on the next turn (bytes read meanwhile wait in the queue).
        self.loop.call_soon(self._repause)
        self.apply_toxics()
        if not self.closed:
            self.connect_task = self.loop.create_task(self._connect())

    # -- setup ---------------------------------------------------------------------------

    def _repause(self) -> None:
        src = self.client
        if self.up.src_paused and not self.closed and not src.is_closing():
            with contextlib.suppress(RuntimeError, OSError):
                src.pause_reading()

    async def _connect(self) -> None:
        host, port = self.proxy._upstream_addr
        try:
            await self.loop.create_connection(lambda: _UpstreamSide(self), host, port)
        except OSError as exc:
            _log.debug("proxy %s: upstream %s:%s: %r", self.proxy.name, host, port, exc)
            self.close()
        finally:
            self.connect_task = None

    def upstream_made(self, side: _UpstreamSide, transport: asyncio.Transport) -> None:
        self.open_transports += 1
        if self.closed:
            transport.abort()
            return
        self.upstream_side = side
        self.upstream = transport
        self.up.dst = transport
        self.down.src = transport
        self.up.set_dst_paused(False)
        self.refresh_fast()

    def refresh_fast(self) -> None:
        """Let the protocols write straight through where nothing else has to happen."""
        side = self.upstream_side
        if self.closed:
            self.client_side.fast = None
            if side is not None:
                side.fast = None
            return
        up, down = self.up, self.down
        plain = self.http is None
        watch = plain and self.http_ok and self.proxy._http_active
        self.client_side.fast = (
            up.dst if plain and not watch and up.task is None and not up.chain else None
        )
        if side is not None:
            side.fast = down.dst if plain and down.task is None and not down.chain else None

    # -- toxics --------------------------------------------------------------------------

    def apply_toxics(self) -> None:
        """Give each direction the toxics that act on this connection (rolling toxicity
        for the ones it has not met yet) and start or stop their timers."""
        if self.closed:
            return
        proxy = self.proxy
        rolls = self.rolls
        up: list[Toxic] = []
        down: list[Toxic] = []
        for toxic in proxy._toxics.values():
            hit = rolls.get(toxic.name)
            if hit is None:
                toxicity = toxic.toxicity
                hit = toxicity >= 1.0 or (toxicity > 0.0 and proxy._rng.random() < toxicity)
                rolls[toxic.name] = hit
                if hit:
                    proxy._faults_applied += 1
            if hit:
                (up if toxic.stream == "upstream" else down).append(toxic)
        self.up.set_chain(tuple(up))
        self.down.set_chain(tuple(down))
        timed = {t.name: t for t in (*up, *down) if t.type in ("timeout", "reset_peer")}
        for name, (toxic, handle) in list(self.timers.items()):
            if timed.get(name) is not toxic:
                handle.cancel()
                del self.timers[name]
        for name, toxic in timed.items():
            if name in self.timers:
                continue
            after_s = toxic.seconds("timeout")
            if toxic.type == "timeout" and after_s <= 0:
                continue  # a black hole: no end while the toxic exists
            handle = self.loop.call_later(after_s, self._timer_fired, toxic)
            self.timers[name] = (toxic, handle)
        self.refresh_fast()

    def _timer_fired(self, toxic: Toxic) -> None:
        self.timers.pop(toxic.name, None)
        if self.closed or not (self.up.alive(toxic) or self.down.alive(toxic)):
            return
        self.close(rst=toxic.type == "reset_peer")

    # -- data ----------------------------------------------------------------------------

    def from_client(self, data: bytes) -> None:
        after_response = self.last_down
        self.last_down = False
        if self.closed:
            return
        http = self.http
        if http is not None and not self.proxy._http_active and http.idle():
            self.http = http = None  # no HTTP fault left: back to the plain relay
            self.refresh_fast()
        if http is None and self.http_ok and self.proxy._http_active:
            if after_response and _looks_like_request(data):
                self.http = http = _Http(self)
                self.refresh_fast()
            elif self.up.nbytes + self.client_side.nbytes == 0 and not self.up.queue:
                self.give_up_http(b"", "not HTTP")  # the first bytes are no request line
        if http is not None:
            http.up(data)
        else:
            self.up.send(data)

    def from_upstream(self, data: bytes) -> None:
        self.last_down = True
        if self.closed:
            return
        if self.http is not None:
            self.http.down(data)
        else:
            self.down.send(data)

    def give_up_http(self, data: bytes, why: str) -> None:
        """This connection is plain TCP from now on: forward what was held back, and
        ``data``, as they are."""
        http = self.http
        held = http.take_head() if http is not None else b""
        _log.debug("proxy %s: connection relayed as plain TCP: %s", self.proxy.name, why)
        self.http = None
        self.http_ok = False
        if held or data:
            self.up.send(held + data)
        self.refresh_fast()

    def eof_from_client(self) -> None:
        if self.closed:
            return
        if self.http is not None and self.http.req.head:
            self.up.send(self.http.take_head())
        self.up.eof()

    def eof_from_upstream(self) -> None:
        if not self.closed:
            self.down.eof()

    def pass_eof(self, link: _Link) -> None:
        """``link``'s source ended: shut the destination's write side; close the connection
        once both directions ended."""
        link.done = True
        dst = link.dst
        if dst is not None and not dst.is_closing():
            try:
                if dst.can_write_eof():
                    dst.write_eof()
            except (OSError, RuntimeError) as exc:
                _log.debug("proxy %s: write_eof: %r", self.proxy.name, exc)
        if self.up.done and self.down.done:
            self.close()

    # -- the end -------------------------------------------------------------------------

    def lost(self, which: str, exc: Exception | None) -> None:
        self.open_transports -= 1
        if not self.closed:
            if exc is not None:
                _log.debug("proxy %s: %s connection lost: %r", self.proxy.name, which, exc)
            self.close()
        if self.open_transports <= 0 and not self.finished.done():
            self.finished.set_result(None)

    def close(self, *, rst: bool = False, force: bool = False) -> None:
        """Close both sides: gracefully (what was written still leaves), with ``force``
        at once, with ``rst`` by a TCP reset."""
        if self.closed:
            return
        self.closed = True
        for _, handle in self.timers.values():
            handle.cancel()
        self.timers.clear()
        self.up.shutdown()
        self.down.shutdown()
        self.refresh_fast()
        if self.connect_task is not None:
            self.connect_task.cancel()
        for transport in (self.client, self.upstream):
            if transport is None:
                continue
            try:
                if rst:
                    _rst(transport)
                elif force:
                    transport.abort()
                else:
                    transport.close()
            except Exception as exc:
                _log.debug("proxy %s: close: %r", self.proxy.name, exc)
        self.proxy._forget(self)
        if self.open_transports <= 0 and not self.finished.done():
            self.finished.set_result(None)

    def bytes_up(self) -> int:
        return self.client_side.nbytes + self.up.nbytes

    def bytes_down(self) -> int:
        side = self.upstream_side
        return (side.nbytes if side is not None else 0) + self.down.nbytes


# ---------------------------------------------------------------------------------------
# Proxy and hub
# ---------------------------------------------------------------------------------------


class Proxy:
    """One listening address relaying to one upstream, with its toxics and HTTP faults.

    Create proxies with :meth:`ProxyHub.create`; change them only from the hub's event
    loop. ``http_faults`` is the :class:`HttpFaultSet` that decides each request's action;
    change it through :meth:`add_http_fault` and :meth:`remove_http_fault` so that open
    connections notice."""

    def __init__(
        self,
        hub: ProxyHub,
        name: str,
        listen: tuple[str, int],
        upstream: str,
        *,
        rng: random.Random,
    ) -> None:
        self.name = name
        self.upstream = upstream
        self.enabled = False
        self.http_faults = HttpFaultSet(rng=rng)
        self._hub = hub
        self._clock = hub._clock
        self._rng = rng
        self._host, self._port = listen
        self._upstream_addr = split_host_port("upstream", upstream, port_zero=False)
        self._server: asyncio.AbstractServer | None = None
        self._toxics: dict[str, Toxic] = {}
        self._conns: set[_Connection] = set()
        self._http_active = False
        self._connections_total = 0
        self._bytes_up = 0
        self._bytes_down = 0
        self._requests = 0
        self._faults_applied = 0

    def __repr__(self) -> str:
        state = "enabled" if self.enabled else "disabled"
        return f"<Proxy {self.name} {self.listen} -> {self.upstream} {state}>"

    @property
    def listen(self) -> str:
        """The listening address as ``host:port``, with the real port once bound."""
        return join_host_port(self._host, self._port)

    @property
    def toxics(self) -> Mapping[str, Toxic]:
        """The toxics, by name, in the order they were added (the order they act in)."""
        return dict(self._toxics)

    # -- toxics --------------------------------------------------------------------------

    def add_toxic(self, toxic: Toxic) -> None:
        """Add ``toxic``; it acts on open connections at once. ProxyConflict if a toxic of
        that name exists."""
        if toxic.name in self._toxics:
            raise ProxyConflict(f"toxic already exists: {toxic.name}")
        self._toxics[toxic.name] = toxic
        self._toxics_changed(toxic.name, reroll=True)

    def update_toxic(self, toxic: Toxic) -> None:
        """Replace the toxic of the same name (its place in the order is kept; a new
        toxicity is rolled again). ProxyNotFound when there is none."""
        old = self._toxics.get(toxic.name)
        if old is None:
            raise ProxyNotFound("toxic", toxic.name)
        self._toxics[toxic.name] = toxic
        self._toxics_changed(toxic.name, reroll=old.toxicity != toxic.toxicity)

    def remove_toxic(self, name: str) -> None:
        """Remove a toxic; chunks it holds go on at once. ProxyNotFound when missing."""
        if self._toxics.pop(name, None) is None:
            raise ProxyNotFound("toxic", name)
        self._toxics_changed(name, reroll=True)

    def _toxics_changed(self, name: str, *, reroll: bool) -> None:
        for conn in list(self._conns):
            if reroll:
                conn.rolls.pop(name, None)
            conn.apply_toxics()

    # -- HTTP faults ---------------------------------------------------------------------

    def add_http_fault(self, fault: HttpFault) -> None:
        """Activate ``fault`` (its ramp starts now). ProxyConflict if one of that name
        exists."""
        _require_httptools()
        if self.http_faults.get(fault.name) is not None:
            raise ProxyConflict(f"http fault already exists: {fault.name}")
        self.http_faults.add(fault, self._clock())
        self._http_changed()

    def remove_http_fault(self, name: str) -> None:
        """Deactivate an HTTP fault. ProxyNotFound when missing."""
        if not self.http_faults.remove(name):
            raise ProxyNotFound("http fault", name)
        self._http_changed()

    def _http_changed(self) -> None:
        active = len(self.http_faults) > 0
        if active != self._http_active:
            self._http_active = active
            for conn in list(self._conns):
                conn.refresh_fast()

    # -- listening -----------------------------------------------------------------------

    async def update(
        self,
        *,
        listen: str | None = None,
        upstream: str | None = None,
        enabled: bool | None = None,
    ) -> None:
        """Change the listen address, the upstream or ``enabled``.

        ``enabled=False`` is Toxiproxy's ``down``: the listener and every connection are
        closed; ``True`` listens again on the same address. A new listen address closes
        the open connections and listens there (ProxyConflict if it is taken, and nothing
        changes); a new upstream closes the open connections, and new ones go there."""
        host, port = self._host, self._port
        if listen is not None:
            host, port = split_host_port("listen", listen, port_zero=True)
        target = self._upstream_addr
        if upstream is not None:
            target = split_host_port("upstream", upstream, port_zero=False)
        want = self.enabled if enabled is None else bool(enabled)
        moved = (host, port) != (self._host, self._port)
        new_server: asyncio.AbstractServer | None = None
        if moved and want:
            try:
                new_server = await self._serve(host, port)
            except ProxyConflict:
                if port != self._port or self._server is None:
                    raise
                await self._stop()  # the same port on another host: free it first
                try:
                    new_server = await self._serve(host, port)
                except BaseException:
                    if self.enabled:
                        self._server = await self._serve(self._host, self._port)
                    raise
        if moved or not want:
            await self._stop()
        elif target != self._upstream_addr:
            await self._close_connections()
        self._upstream_addr = target
        if upstream is not None:
            self.upstream = upstream
        if moved:
            self._host, self._port = host, port
        if new_server is not None:
            self._server = new_server
            self._port = _bound_port(new_server, self._port)
        elif want and self._server is None:
            self._server = await self._serve(self._host, self._port)
            self._port = _bound_port(self._server, self._port)
        self.enabled = want

    async def _serve(self, host: str, port: int) -> asyncio.AbstractServer:
        """Listen on ``host:port`` (one socket, the first address ``host`` resolves to)."""
        loop = asyncio.get_running_loop()
        shown = join_host_port(host, port)
        try:
            infos = await loop.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        except OSError as exc:
            raise ScenarioError(
                "listen", shown, "an address of this machine", problem=f"cannot be resolved ({exc})"
            ) from None
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(1024)
            sock.setblocking(False)
            return await loop.create_server(lambda: _ClientSide(self), sock=sock)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise ProxyConflict(f"listen address taken: {shown}") from None
            reason = (exc.strerror or str(exc)).lower()
            raise ScenarioError(
                "listen",
                shown,
                "a free address of this machine such as 127.0.0.1:0",
                problem=f"cannot be listened on ({reason})",
            ) from None
        except BaseException:
            sock.close()
            raise

    async def _close_connections(self) -> None:
        conns = list(self._conns)
        for conn in conns:
            conn.close(force=True)
        waiting = [c.finished for c in conns if not c.finished.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=_CLOSE_WAIT_S)

    async def _stop(self) -> None:
        """Close the listener and every connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self._close_connections()
        if server is not None:
            waiter = asyncio.ensure_future(server.wait_closed())
            _, pending = await asyncio.wait([waiter], timeout=_CLOSE_WAIT_S)
            for task in pending:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _forget(self, conn: _Connection) -> None:
        if conn in self._conns:
            self._conns.discard(conn)
            self._bytes_up += conn.bytes_up()
            self._bytes_down += conn.bytes_down()

    # -- reading -------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Toxiproxy's proxy JSON, plus ``http_faults``."""
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": [t.to_json() for t in self._toxics.values()],
            "http_faults": [f.to_json() for f in self.http_faults],
        }

    def stats(self) -> dict[str, int]:
        """Counters since the proxy was created: connections accepted and open, bytes
        relayed client -> server (``bytes_up``) and server -> client (``bytes_down``),
        HTTP requests seen, and faults applied (HTTP actions taken, plus toxics that won
        their toxicity roll on a connection)."""
        conns = list(self._conns)
        return {
            "connections_total": self._connections_total,
            "connections_active": len(conns),
            "bytes_up": self._bytes_up + sum(c.bytes_up() for c in conns),
            "bytes_down": self._bytes_down + sum(c.bytes_down() for c in conns),
            "requests": self._requests,
            "faults_applied": self._faults_applied,
        }


def _bound_port(server: asyncio.AbstractServer, default: int) -> int:
    sockets = getattr(server, "sockets", None) or ()
    for sock in sockets:
        return int(sock.getsockname()[1])
    return default


class ProxyHub:
    """Many proxies in one asyncio loop (Toxiproxy's server).

    ``clock`` times HTTP fault ramps; ``seed`` makes every roll reproducible (toxicity,
    jitter, slicer sizes, HTTP fault probabilities): each proxy draws from its own
    generator, seeded from the hub's in creation order. Use a hub from one event loop."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, seed: int | None = None
    ) -> None:
        self._clock = clock
        self._rng = random.Random(seed)
        self._proxies: dict[str, Proxy] = {}

    def __repr__(self) -> str:
        return f"<ProxyHub {len(self._proxies)} proxies>"

    def __iter__(self) -> Iterator[Proxy]:
        return iter(list(self._proxies.values()))

    def __len__(self) -> int:
        return len(self._proxies)

    async def create(self, name: str, listen: str, upstream: str, *, enabled: bool = True) -> Proxy:
        """A new proxy from ``listen`` to ``upstream`` (``"host:port"``; port 0 picks a free
        port), listening at once when ``enabled``. ScenarioError for a bad name or address,
        ProxyConflict for a name in use or an address taken."""
        check_name("name", name, example="payments")
        host, port = split_host_port("listen", listen, port_zero=True)
        split_host_port("upstream", upstream, port_zero=False)
        if name in self._proxies:
            raise ProxyConflict(f"proxy already exists: {name}")
        proxy = Proxy(
            self, name, (host, port), upstream, rng=random.Random(self._rng.getrandbits(64))
        )
        if enabled:
            await proxy.update(enabled=True)
        if name in self._proxies:  # created meanwhile
            await proxy._stop()
            raise ProxyConflict(f"proxy already exists: {name}")
        self._proxies[name] = proxy
        return proxy

    def get(self, name: str) -> Proxy:
        """The proxy called ``name``; ProxyNotFound when there is none."""
        proxy = self._proxies.get(name)
        if proxy is None:
            raise ProxyNotFound("proxy", name)
        return proxy

    async def delete(self, name: str) -> None:
        """Remove a proxy, closing its listener and connections; ProxyNotFound when
        missing."""
        proxy = self._proxies.pop(name, None)
        if proxy is None:
            raise ProxyNotFound("proxy", name)
        await proxy._stop()
        proxy.enabled = False

    async def reset(self) -> None:
        """Toxiproxy's ``/reset``: every proxy enabled, every toxic and HTTP fault removed.
        Raises the first error of a proxy that cannot listen again, after trying all."""
        failure: BaseException | None = None
        for proxy in list(self._proxies.values()):
            for name in list(proxy._toxics):
                proxy.remove_toxic(name)
            for fault in list(proxy.http_faults):
                proxy.remove_http_fault(fault.name)
            if not proxy.enabled:
                try:
                    await proxy.update(enabled=True)
                except (ProxyConflict, ScenarioError) as exc:
                    failure = failure or exc
        if failure is not None:
            raise failure

    async def close(self) -> None:
        """Close every proxy, its listener and its connections."""
        proxies = list(self._proxies.values())
        self._proxies.clear()
        for proxy in proxies:
            await proxy._stop()
            proxy.enabled = False
