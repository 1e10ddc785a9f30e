"""The TCP proxy on loopback: relaying, Toxiproxy's toxics, down/up, and the hub's API."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from fault_stats import binomial_p_value
from proxy_servers import (
    ProxyRig,
    connect,
    median,
    pattern,
    read_exact,
    read_to_eof,
)

from brownout.errors import ScenarioError
from brownout.faults import HttpFault, ProxyConflict, ProxyNotFound, Toxic


@pytest.fixture
def rig() -> Iterator[ProxyRig]:
    with ProxyRig() as r:
        yield r


def _uvloop_factory() -> object:
    uvloop = pytest.importorskip("uvloop")
    return uvloop.new_event_loop


def _round_trips(sock: socket.socket, n: int = 20, size: int = 16) -> list[float]:
    times = []
    for i in range(n):
        message = bytes([65 + i % 26]) * size
        start = time.monotonic()
        sock.sendall(message)
        assert read_exact(sock, size) == message
        times.append(time.monotonic() - start)
    return times


def _closed(sock: socket.socket) -> bool:
    """Whether the peer closed ``sock`` (EOF or reset) with nothing more to read."""
    try:
        return sock.recv(10) == b""
    except ConnectionResetError:
        return True


# -- relaying ------------------------------------------------------------------------------


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_relays_random_bytes_both_ways_and_passes_the_half_close_on(loop: str) -> None:
    factory = _uvloop_factory() if loop == "uvloop" else None
    with ProxyRig(loop_factory=factory) as rig:  # type: ignore[arg-type]
        proxy, port = rig.proxy("echo")
        payload = os.urandom(3 * 1024 * 1024)
        with connect(port) as sock:

            def send() -> None:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)  # half-close: the echo still comes back

            sender = threading.Thread(target=send)
            sender.start()
            received = read_to_eof(sock)  # EOF only arrives if the proxy passed ours on
            sender.join(10)
        assert received == payload
        deadline = time.monotonic() + 5
        while rig.call(proxy.stats)["connections_active"] and time.monotonic() < deadline:
            time.sleep(0.01)
        stats = rig.call(proxy.stats)
        assert stats["bytes_up"] == stats["bytes_down"] == len(payload)
        assert stats["connections_total"] == 1
        assert stats["connections_active"] == 0


def test_server_close_reaches_the_client_after_all_data(rig: ProxyRig) -> None:
    _, port = rig.proxy("source")
    with connect(port) as sock:
        sock.sendall(b"1000000\n")
        assert read_to_eof(sock) == pattern(1_000_000)


def test_unreachable_upstream_closes_the_client(rig: ProxyRig) -> None:
    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    dead_port = spare.getsockname()[1]
    spare.close()
    proxy = rig.run(rig.hub.create("dead", "127.0.0.1:0", f"127.0.0.1:{dead_port}"))
    with connect(int(proxy.listen.rsplit(":", 1)[1])) as sock:
        sock.sendall(b"hello")
        assert _closed(sock)


def test_vanishing_clients_leave_the_proxy_working(rig: ProxyRig) -> None:
    proxy, port = rig.proxy("source")
    rig.call(proxy.add_toxic, Toxic(name="lat", type="latency", attributes={"latency": 5}))
    for _ in range(20):
        sock = connect(port)
        sock.sendall(b"500000\n")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # RST while the proxy relays to us
    with connect(port) as sock:
        sock.sendall(b"100\n")
        assert read_to_eof(sock) == pattern(100)
    deadline = time.monotonic() + 5
    while rig.call(proxy.stats)["connections_active"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rig.call(proxy.stats)["connections_active"] == 0


# -- toxics -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", ["downstream", "upstream"])
def test_latency_added_to_an_open_keepalive_connection(rig: ProxyRig, stream: str) -> None:
    proxy, port = rig.proxy("echo")
    with connect(port) as sock:
        base = median(_round_trips(sock))
        toxic = Toxic(name="lat", type="latency", stream=stream, attributes={"latency": 40})
        rig.call(proxy.add_toxic, toxic)
        slowed = median(_round_trips(sock))
        rig.call(proxy.remove_toxic, "lat")
        after = median(_round_trips(sock))
    added = slowed - base
    assert 0.039 <= added <= 0.040 + 0.015, added
    assert after < base + 0.01


def test_latency_with_jitter_keeps_the_byte_order(rig: ProxyRig) -> None:
    proxy, port = rig.proxy("echo")
    toxic = Toxic(name="j", type="latency", attributes={"latency": 10, "jitter": 10})
    rig.call(proxy.add_toxic, toxic)
    sent = bytearray()
    with connect(port) as sock:
        for i in range(60):
            chunk = f"<{i}>".encode() * 3
            sock.sendall(chunk)
            sent += chunk
            time.sleep(0.001)
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == bytes(sent)


def test_removing_a_toxic_lets_go_of_the_chunk_it_holds(rig: ProxyRig) -> None:
    proxy, port = rig.proxy("echo")
    rig.call(proxy.add_toxic, Toxic(name="lat", type="latency", attributes={"latency": 10_000}))
    with connect(port) as sock:
        sock.sendall(b"held")
        time.sleep(0.1)
        start = time.monotonic()
        rig.call(proxy.remove_toxic, "lat")
        assert read_exact(sock, 4) == b"held"
        assert time.monotonic() - start < 1.0


def test_toxicity_is_rolled_once_per_connection(rig: ProxyRig) -> None:
    proxy, port = rig.proxy("echo")
    toxic = Toxic(name="cut", type="limit_data", toxicity=0.3, attributes={"bytes": 0})
    rig.call(proxy.add_toxic, toxic)
    n, hit = 300, 0
    for _ in range(n):
        with connect(port) as sock:
            replies = set()
            for _ in range(3):  # the same fate for every message of one connection
                try:
                    sock.sendall(b"x")
                    replies.add(sock.recv(1))
                except (ConnectionResetError, BrokenPipeError):
                    replies.add(b"")
            assert len(replies) == 1, replies
            hit += replies == {b""}
    assert binomial_p_value(hit, n, 0.3) > 0.001, hit
    assert rig.call(proxy.stats)["faults_applied"] == hit


def test_reset_peer_is_a_connection_reset(rig: ProxyRig) -> None:
    proxy, port = rig.proxy("echo")
    rig.call(proxy.add_toxic, Toxic(name="rst", type="reset_peer", attributes={"timeout": 0}))
    # The reset shows at connect, at send or at the first read, whichever comes first.
    with pytest.raises(ConnectionResetError), connect(port) as sock:
        time.sleep(0.05)
        sock.sendall(b"ping")
        sock.recv(10)


def test_reset_peer_after_timeout_on_an_open_connection(rig: ProxyRig) -> None:
    proxy, port = rig.proxy("echo")
    with connect(port) as sock:
        sock.sendall(b"ping")
        assert read_exact(sock, 4) == b"ping"
        start = time.monotonic()
        rig.call(proxy.add_toxic, Toxic(name="rst", type="reset_peer", attributes={"timeout": 200}))
        sock.sendall(b"pong")
        assert read_exact(sock, 4) == b"pong"  # data passes until the timeout
        with pytest.raises(ConnectionResetError):
            sock.recv(10)
        assert 0.19 <= time.monotonic() - start <= 0.6


def test_black_hole_ends_in_the_clients_own_timeout(rig: ProxyRig) -> None:
    proxy, port = rig.proxy("echo")
    rig.call(proxy.add_toxic, Toxic(name="hole", type="timeout", attributes={"timeout": 0}))
    with connect(port, timeout=0.3) as sock:
        sock.sendall(b"lost")
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            sock.recv(10)
        assert time.monotonic() - start >= 0.28
        rig.call(proxy.remove_toxic, "hole")  # the hole exists only while the toxic does
        sock.sendall(b"back")
        assert read_exact(sock, 4) == b"back"


def test_timeout_closes_the_connection_after_its_time(rig: ProxyRig) -> None:
    proxy, port = rig.proxy("echo")
    rig.call(proxy.add_toxic, Toxic(name="to", type="timeout", attributes={"timeout": 200}))
    with connect(port) as sock:
        start = time.monotonic()
        sock.sendall(b"dropped")
        assert sock.recv(10) == b""
        assert 0.19 <= time.monotonic() - start <= 0.6


def test_bandwidth_within_ten_percent(rig: ProxyRig) -> None:
    proxy, port = rig.proxy("source")
    rig.call(proxy.add_toxic, Toxic(name="bw", type="bandwidth", attributes={"rate": 200}))
    size = 200_000
    with connect(port) as sock:
        start = time.monotonic()
        sock.sendall(f"{size}\n".encode())
        data = read_to_eof(sock)
        elapsed = time.monotonic() - start
    assert data == pattern(size)
    rate_kb_s = size / elapsed / 1000
    assert 180 <= rate_kb_s <= 220, rate_kb_s


def test_limit_data_closes_after_n_bytes(rig: ProxyRig) -> None:
    proxy, port = rig.proxy("source")
    rig.call(proxy.add_toxic, Toxic(name="lim", type="limit_data", attributes={"bytes": 1234}))
    with connect(port) as sock:
        sock.sendall(b"100000\n")
        assert read_to_eof(sock) == pattern(1234)


def test_limit_data_upstream_counts_client_bytes(rig: ProxyRig) -> None:
    proxy, port = rig.proxy("echo")
    toxic = Toxic(name="lim", type="limit_data", stream="upstream", attributes={"bytes": 10})
    rig.call(proxy.add_toxic, toxic)
    with connect(port) as sock:
        sock.sendall(b"0123456")
        assert read_exact(sock, 7) == b"0123456"
        sock.sendall(b"789abcdef")
        assert read_to_eof(sock) == b""  # closed once 10 bytes went up
    assert rig.call(proxy.stats)["bytes_up"] == 10


def test_slicer_delivers_the_same_bytes_in_several_reads(rig: ProxyRig) -> None:
    proxy, port = rig.proxy("source")
    toxic = Toxic(
        name="sl",
        type="slicer",
        attributes={"average_size": 1000, "size_variation": 200, "delay": 10_000},
    )
    rig.call(proxy.add_toxic, toxic)
    reads: list[bytes] = []
    with connect(port) as sock:
        start = time.monotonic()
        sock.sendall(b"10000\n")
        while chunk := sock.recv(65536):
            reads.append(chunk)
        elapsed = time.monotonic() - start
    assert b"".join(reads) == pattern(10_000)
    assert len(reads) >= 5
    assert elapsed >= 0.07  # at least 8 gaps of 10 ms between 9+ slices


def test_slow_close_delays_the_close(rig: ProxyRig) -> None:
    proxy, port = rig.proxy("source")
    rig.call(proxy.add_toxic, Toxic(name="sc", type="slow_close", attributes={"delay": 300}))
    with connect(port) as sock:
        sock.sendall(b"100\n")
        assert read_exact(sock, 100) == pattern(100)
        got_data = time.monotonic()
        assert sock.recv(10) == b""
        assert time.monotonic() - got_data >= 0.27
    rig.call(proxy.remove_toxic, "sc")
    with connect(port) as sock:
        sock.sendall(b"100\n")
        start = time.monotonic()
        assert read_to_eof(sock) == pattern(100)
        assert time.monotonic() - start < 0.2


def test_down_refuses_connections_and_up_accepts_again(rig: ProxyRig) -> None:
    proxy, port = rig.proxy("echo")
    with connect(port) as sock:
        sock.sendall(b"a")
        assert sock.recv(1) == b"a"
        rig.run(proxy.update(enabled=False))
        assert _closed(sock)  # the open connection was closed
    with pytest.raises(ConnectionRefusedError):
        connect(port)
    assert rig.call(proxy.to_json)["enabled"] is False
    rig.run(proxy.update(enabled=True))
    assert proxy.listen == f"127.0.0.1:{port}"
    with connect(port) as sock:
        sock.sendall(b"b")
        assert sock.recv(1) == b"b"


# -- the hub -------------------------------------------------------------------------------


def test_hub_names_addresses_and_conflicts(rig: ProxyRig) -> None:
    hub = rig.hub
    proxy, port = rig.proxy("echo", name="payments")
    assert rig.call(hub.get, "payments") is proxy
    assert len(hub) == 1
    assert [p.name for p in hub] == ["payments"]
    with pytest.raises(ProxyConflict):
        rig.run(hub.create("payments", "127.0.0.1:0", "127.0.0.1:1"))
    with pytest.raises(ProxyConflict):
        rig.run(hub.create("other", f"127.0.0.1:{port}", "127.0.0.1:1"))
    for field, args in (
        ("name", ("bad name", "127.0.0.1:0", "127.0.0.1:1")),
        ("listen", ("x", "127.0.0.1", "127.0.0.1:1")),
        ("listen", ("x", "127.0.0.1:70000", "127.0.0.1:1")),
        ("upstream", ("x", "127.0.0.1:0", "127.0.0.1:0")),
        ("upstream", ("x", "127.0.0.1:0", "::1:80")),
    ):
        with pytest.raises(ScenarioError) as info:
            rig.run(hub.create(*args))
        assert info.value.field == field
    with pytest.raises(ProxyNotFound):
        rig.call(hub.get, "nope")
    with pytest.raises(ProxyNotFound):
        rig.run(hub.delete("nope"))
    assert len(hub) == 1
    rig.run(hub.delete("payments"))
    assert len(hub) == 0
    with pytest.raises(ConnectionRefusedError):
        connect(port)


def test_toxic_and_http_fault_bookkeeping(rig: ProxyRig) -> None:
    proxy, _ = rig.proxy("echo")
    lat = Toxic(name="lat", type="latency", attributes={"latency": 100})
    rig.call(proxy.add_toxic, lat)
    with pytest.raises(ProxyConflict):
        rig.call(proxy.add_toxic, lat)
    rig.call(proxy.update_toxic, Toxic(name="lat", type="latency", attributes={"latency": 5}))
    assert proxy.toxics["lat"].attributes["latency"] == 5
    with pytest.raises(ProxyNotFound):
        rig.call(proxy.update_toxic, Toxic(name="nope", type="latency"))
    with pytest.raises(ProxyNotFound):
        rig.call(proxy.remove_toxic, "nope")
    fault = HttpFault.from_json({"name": "slow", "kind": "http_delay", "delay": "10ms"})
    rig.call(proxy.add_http_fault, fault)
    with pytest.raises(ProxyConflict):
        rig.call(proxy.add_http_fault, fault)
    with pytest.raises(ProxyNotFound):
        rig.call(proxy.remove_http_fault, "nope")
    doc = rig.call(proxy.to_json)
    assert doc["name"] == "p"
    assert doc["listen"] == proxy.listen
    assert doc["enabled"] is True
    assert doc["toxics"] == [proxy.toxics["lat"].to_json()]
    assert doc["http_faults"] == [fault.to_json()]
    rig.run(proxy.update(enabled=False))
    rig.run(rig.hub.reset())
    doc = rig.call(proxy.to_json)
    assert (doc["enabled"], doc["toxics"], doc["http_faults"]) == (True, [], [])


def test_update_moves_the_listener_and_the_upstream(rig: ProxyRig) -> None:
    proxy, old_port = rig.proxy("echo")
    rig.run(proxy.update(listen="127.0.0.1:0", upstream=f"127.0.0.1:{rig.ports['source']}"))
    new_port = int(proxy.listen.rsplit(":", 1)[1])
    assert new_port != old_port
    with pytest.raises(ConnectionRefusedError):
        connect(old_port)
    with connect(new_port) as sock:
        sock.sendall(b"5\n")
        assert read_to_eof(sock) == pattern(5)
    _, taken_port = rig.proxy("echo", name="q")
    with pytest.raises(ProxyConflict):
        rig.run(proxy.update(listen=f"127.0.0.1:{taken_port}"))
    assert proxy.listen == f"127.0.0.1:{new_port}"  # nothing changed
