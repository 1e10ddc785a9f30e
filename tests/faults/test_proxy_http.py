"""HTTP-aware faults in the proxy, on loopback with http.client keep-alive connections."""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import time
from collections.abc import Iterator
from typing import Any

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

from brownout.faults import HttpFault, Toxic

pytest.importorskip("httptools")


@pytest.fixture
def rig() -> Iterator[ProxyRig]:
    with ProxyRig(seed=7) as r:
        yield r


def _fault(rig: ProxyRig, proxy: Any, **doc: Any) -> HttpFault:
    fault = HttpFault.from_json(doc)
    rig.call(proxy.add_http_fault, fault)
    return fault


def _get(
    conn: http.client.HTTPConnection,
    path: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


def _timed(conn: http.client.HTTPConnection, path: str, n: int = 20) -> list[float]:
    times = []
    for _ in range(n):
        start = time.monotonic()
        status, _, _ = _get(conn, path)
        times.append(time.monotonic() - start)
        assert status == 200
    return times


def test_abort_answers_503_with_retry_after_and_keeps_the_connection(rig: ProxyRig) -> None:
    proxy, port = rig.proxy("http")
    _fault(rig, proxy, name="pay", kind="http_abort", status=503, retry_after="2s",
           match={"path": "/pay/*"})  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        status, headers, body = _get(conn, "/pay/1")
        sock = conn.sock
        assert status == 503
        assert headers["retry-after"] == "2"
        assert json.loads(body)["status"] == 503
        # A request with a body is dropped whole: the upstream stays in step.
        status, _, _ = _get(conn, "/pay/2", "POST", body=os.urandom(50_000))
        assert status == 503
        status, _, body = _get(conn, "/echo", "POST", body=b"next one")
        assert (status, body) == (200, b"next one")
        assert conn.sock is sock  # the same keep-alive connection throughout
    finally:
        conn.close()
    assert rig.seen == ["POST /echo"]  # the aborted requests never reached the upstream
    stats = rig.call(proxy.stats)
    assert (stats["requests"], stats["faults_applied"]) == (3, 2)


def test_delay_is_added_to_an_open_keepalive_connection(rig: ProxyRig) -> None:
    proxy, port = rig.proxy("http")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        base = median(_timed(conn, "/"))
        _fault(rig, proxy, name="slow", kind="http_delay", delay="40ms")
        slowed = median(_timed(conn, "/"))
        rig.call(proxy.remove_http_fault, "slow")
        after = median(_timed(conn, "/"))
    finally:
        conn.close()
    assert 0.039 <= slowed - base <= 0.040 + 0.015, slowed - base
    assert after < base + 0.01
    assert rig.call(proxy.stats)["faults_applied"] == 20


def test_reset_mid_response_is_seen_by_the_client(rig: ProxyRig) -> None:
    proxy, port = rig.proxy("http")
    _fault(rig, proxy, name="rst", kind="http_reset")
    received = bytearray()
    with connect(port) as sock:
        sock.sendall(b"GET /bytes/20000 HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert b"Content-Length: 20000" in head
    assert len(body) < 20000
    assert body == pattern(len(body))


def test_slow_body_trickles_at_the_rate(rig: ProxyRig) -> None:
    proxy, port = rig.proxy("http")
    _fault(rig, proxy, name="trickle", kind="http_slow_body", rate=20)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        start = time.monotonic()
        status, _, body = _get(conn, "/bytes/10000")
        elapsed = time.monotonic() - start
        assert (status, body) == (200, pattern(10_000))
        assert 0.45 <= elapsed <= 0.5 * 1.3, elapsed  # 10 KB at 20 KB/s
        status, _, body = _get(conn, "/")  # the connection goes on
        assert (status, body) == (200, b"ok")
    finally:
        conn.close()


def test_match_rules_select_method_path_and_header(rig: ProxyRig) -> None:
    proxy, port = rig.proxy("http")
    _fault(rig, proxy, name="canary", kind="http_abort", status=429,
           match={"method": "POST", "path": "/api/*", "header": {"X-Canary": "1"}})  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    canary = {"X-Canary": "1"}
    try:
        assert _get(conn, "/api/x", "POST", b"{}", canary)[0] == 429
        assert _get(conn, "/api/x?q=1", "POST", b"{}", canary)[0] == 429  # query ignored
        assert _get(conn, "/api/x", "POST", b"{}", {"X-Canary": "0"})[0] == 200
        assert _get(conn, "/api/x", "POST", b"{}")[0] == 200
        assert _get(conn, "/api/x", "GET", None, canary)[0] == 200
        assert _get(conn, "/other", "POST", b"{}", canary)[0] == 200
    finally:
        conn.close()


def test_probability_passes_a_binomial_test(rig: ProxyRig) -> None:
    proxy, port = rig.proxy("http")
    _fault(rig, proxy, name="flaky", kind="http_abort", status=500, probability=0.3)
    n = 400
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        statuses = [_get(conn, f"/r/{i}")[0] for i in range(n)]
    finally:
        conn.close()
    aborted = statuses.count(500)
    assert aborted + statuses.count(200) == n
    assert binomial_p_value(aborted, n, 0.3) > 0.001, aborted
    assert len(rig.seen) == n - aborted


def test_head_responses_end_with_their_headers(rig: ProxyRig) -> None:
    proxy, port = rig.proxy("http")
    _fault(rig, proxy, name="slow", kind="http_delay", delay="1ms")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        status, headers, body = _get(conn, "/bytes/5000", "HEAD")
        assert (status, headers["content-length"], body) == (200, "5000", b"")
        status, _, body = _get(conn, "/bytes/300")
        assert (status, body) == (200, pattern(300))
    finally:
        conn.close()
    assert rig.call(proxy.stats)["faults_applied"] == 2


def test_non_http_traffic_passes_untouched_with_http_faults_set(rig: ProxyRig) -> None:
    proxy, port = rig.proxy("echo")
    _fault(rig, proxy, name="all", kind="http_abort", status=503)
    rng = random.Random(3)
    messages = [
        b"\x16\x03\x01" + rng.randbytes(2000),  # a TLS-like hello
        b"HELLO world\r\n\r\nmore",  # looks like a method, is not HTTP
        b"GET\x00/ HTTP/1.1\r\n\r\n",
        rng.randbytes(100_000),
    ]
    for message in messages:
        with connect(port) as sock:
            sock.sendall(message)
            sock.shutdown(socket.SHUT_WR)
            assert read_to_eof(sock) == message
    assert rig.call(proxy.stats)["faults_applied"] == 0


def test_malformed_requests_do_not_hurt_the_proxy(rig: ProxyRig) -> None:
    proxy, port = rig.proxy("http")
    _fault(rig, proxy, name="all", kind="http_abort", status=503)
    rng = random.Random(5)
    bad = [
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
        b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        *(b"GET /" + rng.randbytes(rng.randint(1, 300)) for _ in range(30)),
    ]
    for request in bad:
        with connect(port, timeout=2) as sock:
            try:
                sock.sendall(request)
                sock.shutdown(socket.SHUT_WR)
                read_to_eof(sock)  # whatever the upstream makes of it
            except (ConnectionResetError, BrokenPipeError):
                pass
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        assert _get(conn, "/")[0] == 503  # and faults still apply to good requests
    finally:
        conn.close()


def test_http_faults_and_toxics_combine(rig: ProxyRig) -> None:
    proxy, port = rig.proxy("http")
    rig.call(proxy.add_toxic, Toxic(name="lat", type="latency", attributes={"latency": 20}))
    _fault(rig, proxy, name="slow", kind="http_delay", delay="30ms")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        times = _timed(conn, "/", n=10)
        status, _, body = _get(conn, "/bytes/200000")
        assert (status, body) == (200, pattern(200_000))
    finally:
        conn.close()
    assert 0.049 <= median(times) <= 0.05 + 0.02


def test_requests_are_counted_only_while_faults_exist(rig: ProxyRig) -> None:
    proxy, port = rig.proxy("http")
    with connect(port) as sock:
        request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/octet-stream\r\n\r\nok"
        for _ in range(3):
            sock.sendall(request)
            assert read_exact(sock, len(answer)) == answer
        assert rig.call(proxy.stats)["requests"] == 0  # plain relay: nothing parsed
        _fault(rig, proxy, name="never", kind="http_abort", probability=0)
        for _ in range(3):
            sock.sendall(request)
            assert read_exact(sock, len(answer)) == answer
        assert rig.call(proxy.stats)["requests"] == 3
        rig.call(proxy.remove_http_fault, "never")
        for _ in range(3):
            sock.sendall(request)
            assert read_exact(sock, len(answer)) == answer
        assert rig.call(proxy.stats)["requests"] == 3  # back to the plain relay
