"""The keep-alive pool: connections opened within their caps, every exchange ends once."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

from brownout.load._http import ABORTED, CONNECT_ERROR, RESPONSE, Exchange, HttpPool, build_request

Server = Callable[..., str]


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def _burst(pool: HttpPool, count: int, timeout_s: float = 10.0) -> list[Exchange]:
    """Send ``count`` exchanges at once; wait until every one has ended."""
    ended: list[Exchange] = []
    data = build_request("GET", "127.0.0.1", "/", {}, None)
    peak_connecting = 0
    for _ in range(count):
        pool.send(Exchange(data, ended.append))
        peak_connecting = max(peak_connecting, pool.connecting)
    deadline = time.monotonic() + timeout_s
    while len(ended) < count and time.monotonic() < deadline:
        peak_connecting = max(peak_connecting, pool.connecting)
        await asyncio.sleep(0.001)
    pool.peak_connecting = peak_connecting  # type: ignore[attr-defined]
    return ended


def test_a_burst_opens_at_most_max_connecting_at_once(server: Server) -> None:
    port = _port(server("delay", "--delay", "0.02"))

    async def main() -> tuple[list[Exchange], HttpPool]:
        pool = HttpPool("127.0.0.1", port, now=time.monotonic, max_connecting=4)
        try:
            return await _burst(pool, 200), pool
        finally:
            pool.close()

    ended, pool = asyncio.run(main())
    assert len(ended) == 200
    assert all(e.outcome == RESPONSE and e.status == 200 for e in ended)
    assert pool.peak_connecting <= 4  # type: ignore[attr-defined]
    # Waiting exchanges reuse connections as they free up instead of each opening one.
    assert 4 <= pool.opened < 200


def test_a_dead_target_fails_every_exchange_with_a_connect_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

        async def main() -> list[Exchange]:
            pool = HttpPool("127.0.0.1", port, now=time.monotonic, max_connecting=3)
            try:
                return await _burst(pool, 50)
            finally:
                pool.close()

        ended = asyncio.run(main())
    assert len(ended) == 50
    assert {e.outcome for e in ended} == {CONNECT_ERROR}
    assert len({id(e) for e in ended}) == 50  # each ended exactly once


def test_an_exchange_given_up_while_waiting_is_never_sent(server: Server) -> None:
    port = _port(server("delay", "--delay", "0.05"))

    async def main() -> tuple[list[Exchange], int]:
        pool = HttpPool("127.0.0.1", port, now=time.monotonic, max_connections=1)
        ended: list[Exchange] = []
        answered = asyncio.Event()

        def on_done(exchange: Exchange) -> None:
            ended.append(exchange)
            if exchange.outcome == RESPONSE:
                answered.set()

        data = build_request("GET", "127.0.0.1", "/", {}, None)
        first, second = Exchange(data, on_done), Exchange(data, on_done)
        pool.send(first)
        pool.send(second)  # waits: the only connection is busy
        second.abort()
        await asyncio.wait_for(answered.wait(), 10)
        await asyncio.sleep(0.02)  # time for a wrongly queued second send to show
        pool.close()
        return ended, pool.opened

    ended, opened = asyncio.run(main())
    assert [e.outcome for e in ended] == [ABORTED, RESPONSE]
    assert ended[0].sent_s == 0.0  # the given-up exchange was never written
    assert opened == 1
