"""Addresses and the loopback rule shared by the load target, the proxy and its API."""

from __future__ import annotations

import pytest

from brownout._net import is_loopback, join_host_port, split_host_port
from brownout.errors import ScenarioError


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.5", "::1", "[::1]", "LOCALHOST"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "10.0.0.1", "example.com", "::", "", "127.0.0.1.nip.io"]
)
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_split_host_port_reads_ipv4_ipv6_and_names() -> None:
    assert split_host_port("f", "127.0.0.1:9001") == ("127.0.0.1", 9001)
    assert split_host_port("f", "[::1]:0", port_zero=True) == ("::1", 0)
    assert split_host_port("f", "localhost:8474") == ("localhost", 8474)
    assert join_host_port("::1", 80) == "[::1]:80"
    assert join_host_port("127.0.0.1", 80) == "127.0.0.1:80"


@pytest.mark.parametrize(
    "text", ["8474", "host:", ":80", "h:70000", "a b:1", "::1:80", "[x]:1", "h:-1", "h:0", 5, None]
)
def test_split_host_port_names_the_field_for_bad_text(text: object) -> None:
    with pytest.raises(ScenarioError) as info:
        split_host_port("--listen", text)
    assert info.value.field == "--listen"
    assert "host:port" in str(info.value)


def test_port_zero_and_loopback_only_when_asked() -> None:
    with pytest.raises(ScenarioError, match="port 0 picks"):
        split_host_port("listen", "127.0.0.1:99999", port_zero=True)
    with pytest.raises(ScenarioError, match="is not on loopback"):
        split_host_port("listen", "10.1.2.3:9001", loopback=True)
    assert split_host_port("listen", "10.1.2.3:9001") == ("10.1.2.3", 9001)
