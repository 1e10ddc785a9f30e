"""Purpose-built loopback HTTP servers with known behaviour, run in their own process.

    python tests/load/servers.py KIND [--delay S] [--stall S --period P] [--service S]

prints ``PORT <n>`` once listening on 127.0.0.1, then serves until killed or until
``--max-seconds`` pass (tests never leave one behind). Kinds:

- ``fast``: answers at once.
- ``delay``: answers each request after ``--delay`` seconds (concurrently).
- ``stall``: answers at once, except that during ``[k*P, k*P + S)`` after start it holds
  every response until the stall ends (a GC pause, a lock, a failover).
- ``serial``: one request at a time, each taking ``--service`` seconds: capacity is exactly
  ``1 / service`` requests per second.
- ``status``: answers with ``--status`` (and ``Retry-After: 1`` for 429/503).
- ``site``: HTML pages ``/`` and ``/p/N`` (N < 30), each linking to ``/p/2N+1`` and
  ``/p/2N+2`` (a binary tree, so breadth-first order is known); it sets a ``sid`` cookie
  and counts requests that sent one back; ``/stats`` answers ``<requests> <with-cookie>``
  and the paths seen in order.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

RESPONSE = b"HTTP/1.1 %d X\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n%s\r\nok"


class Server:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.start = time.monotonic()
        self.requests = 0
        self.free_at = 0.0
        self.with_cookie = 0
        self.paths: list[str] = []
        self.forwarded: list[str] = []  # X-Forwarded-For of each request ("-": none)

    def site(self, head: bytes) -> bytes:
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        path = line.split(" ")[1]
        if path == "/clients":
            body = "\n".join(self.forwarded)
            return (
                f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n{body}"
            ).encode()
        if path == "/stats":
            body = f"{self.requests} {self.with_cookie}\n" + "\n".join(self.paths)
            return (
                f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n{body}"
            ).encode()
        self.paths.append(path)
        lowered = head.lower()
        xff = lowered.split(b"\r\nx-forwarded-for: ", 1)
        self.forwarded.append(xff[1].split(b"\r\n", 1)[0].decode() if len(xff) == 2 else "-")
        if b"\r\ncookie: sid=" in lowered:
            self.with_cookie += 1
        n = 0 if path == "/" else int(path.rsplit("/", 1)[1])
        links = "".join(f'<a href="/p/{k}">{k}</a>' for k in (2 * n + 1, 2 * n + 2) if k < 30)
        body = f"<html><body>{links}</body></html>"
        return (
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nSet-Cookie: sid=abc; Path=/\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        ).encode()

    async def respond_after(self) -> None:
        a = self.args
        if a.kind == "delay":
            await asyncio.sleep(a.delay)
        elif a.kind == "stall":
            phase = (time.monotonic() - self.start) % a.period
            if phase < a.stall:
                await asyncio.sleep(a.stall - phase)
        elif a.kind == "serial":
            # A virtual single server: each request occupies it for exactly ``service``
            # seconds after the previous one, so sleep overshoot never accumulates and the
            # capacity is exactly 1 / service.
            now = time.monotonic()
            self.free_at = max(now, self.free_at) + a.service
            await asyncio.sleep(self.free_at - now)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        status = self.args.status
        extra = b"Retry-After: 1\r\n" if status in (429, 503) else b""
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                if self.args.kind == "site":
                    writer.write(self.site(head))
                    if b"/stats" not in head.split(b"\r\n", 1)[0]:
                        self.requests += 1
                    continue
                self.requests += 1
                await self.respond_after()
                writer.write(RESPONSE % (status, extra))
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["fast", "delay", "stall", "serial", "status", "site"])
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--stall", type=float, default=0.5)
    parser.add_argument("--period", type=float, default=2.0)
    parser.add_argument("--service", type=float, default=0.002)
    parser.add_argument("--status", type=int, default=200)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args(argv)
    server = Server(args)
    srv = await asyncio.start_server(server.handle, "127.0.0.1", 0, backlog=4096)
    port = srv.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    async with srv:
        await asyncio.sleep(args.max_seconds)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
