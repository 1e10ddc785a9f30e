"""A ProxyHub and loopback upstreams running in a background event loop, for the proxy tests.

The tests talk to the proxies with ordinary blocking sockets and ``http.client`` from the
test thread, as an application would; everything asyncio lives in the rig's loop thread.
Upstreams (all on 127.0.0.1, port 0):

- ``echo``: sends back what it reads; on EOF it closes after flushing, so a half-closed
  client gets the whole echo and then EOF.
- ``source``: reads a line ``N`` and answers with N bytes of :func:`pattern`, then closes.
- ``http``: a keep-alive HTTP/1.1 server: ``/bytes/N`` answers N bytes of :func:`pattern`,
  ``/echo`` the request body, anything else ``ok``; ``HEAD`` gets the headers only; a
  request it cannot read gets a 400 and the connection closes. ``rig.seen`` lists
  ``"METHOD /path"`` of every request it answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar, cast

from brownout.faults._proxy import Proxy, ProxyHub

T = TypeVar("T")
_BLOCK = bytes(range(251)) * 64


def pattern(n: int) -> bytes:
    """``n`` bytes of a fixed, non-repeating-per-251 pattern."""
    out = _BLOCK * (n // len(_BLOCK) + 1)
    return out[:n]


class _Tracked(asyncio.Protocol):
    def __init__(self, rig: ProxyRig) -> None:
        self.rig = rig
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's quack the same
        self.rig.transports.add(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.rig.transports.discard(self.transport)


class _Echo(_Tracked):
    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False  # close once the echo is flushed


class _Source(_Tracked):
    def __init__(self, rig: ProxyRig) -> None:
        super().__init__(rig)
        self.line = b""

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.line += data
        if b"\n" in self.line:
            n = int(self.line.split(b"\n", 1)[0])
            self.transport.write(pattern(n))
            self.transport.close()


class ProxyRig:
    """``with ProxyRig() as rig:`` a hub (seeded) and the upstreams in a loop thread."""

    def __init__(
        self,
        *,
        seed: int | None = 1,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    ) -> None:
        self.seed = seed
        self.loop_factory = loop_factory or asyncio.new_event_loop
        self.transports: set[asyncio.Transport] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.seen: list[str] = []
        self.ports: dict[str, int] = {}
        self.servers: list[asyncio.AbstractServer] = []

    def __enter__(self) -> ProxyRig:
        self.loop = self.loop_factory()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        try:
            self.run(self._start())
        except BaseException:
            self._end_loop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.run(self._stop())
        finally:
            self._end_loop()

    def _end_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self.hub = ProxyHub(seed=self.seed)
        for name, factory in (("echo", _Echo), ("source", _Source)):
            server = await loop.create_server(lambda f=factory: f(self), "127.0.0.1", 0)  # type: ignore[misc]
            self.servers.append(server)
            self.ports[name] = server.sockets[0].getsockname()[1]
        server = await asyncio.start_server(self._http, "127.0.0.1", 0)
        self.servers.append(server)
        self.ports["http"] = server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        await self.hub.close()
        for server in self.servers:
            server.close()
        for transport in list(self.transports):
            transport.abort()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for server in self.servers:
            await server.wait_closed()
        await asyncio.sleep(0.05)  # let the closing transports release their sockets

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                try:
                    lines = head.decode("latin-1").split("\r\n")
                    method, target, version = lines[0].split(" ")
                    if not version.startswith("HTTP/1."):
                        raise ValueError(version)
                    headers = {}
                    for line in lines[1:]:
                        if line:
                            key, value = line.split(":", 1)
                            headers[key.strip().lower()] = value.strip()
                    length = int(headers.get("content-length", "0"))
                except ValueError:
                    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    await writer.drain()
                    return
                body = await reader.readexactly(length) if length else b""
                self.seen.append(f"{method} {target}")
                if target.startswith("/bytes/"):
                    payload = pattern(int(target.rsplit("/", 1)[1]))
                elif target == "/echo":
                    payload = body
                else:
                    payload = b"ok"
                head_out = (
                    f"HTTP/1.1 200 OK\r\nContent-Length: {len(payload)}\r\n"
                    "Content-Type: application/octet-stream\r\n\r\n"
                ).encode()
                writer.write(head_out if method == "HEAD" else head_out + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self.tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # -- driving the loop from the test thread -----------------------------------------

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` in the loop thread (the proxy is not thread-safe) and return its result."""

        async def go() -> T:
            return fn(*args, **kwargs)

        return self.run(go())

    def proxy(self, upstream: str = "echo", name: str = "p") -> tuple[Proxy, int]:
        """A new proxy to one of the upstreams; returns it and its port."""
        target = f"127.0.0.1:{self.ports[upstream]}"
        proxy = self.run(self.hub.create(name, "127.0.0.1:0", target))
        return proxy, int(proxy.listen.rsplit(":", 1)[1])


# -- blocking clients --------------------------------------------------------------------


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_exact(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def read_to_eof(sock: socket.socket) -> bytes:
    out = bytearray()
    while chunk := sock.recv(65536):
        out += chunk
    return bytes(out)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
