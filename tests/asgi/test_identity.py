"""Client identity: forwarding headers believed only from trusted proxies, never spoofable."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brownout.asgi import Client, ClientIdentifier
from brownout.asgi._identity import _CACHE_MAX, key_digest, parse_address, parse_forwarded
from brownout.errors import InvalidConfig

PEER = "203.0.113.7"
PROXY = "10.0.0.1"


def scope(
    peer: str | None = PEER, headers: list[tuple[bytes, bytes]] | None = None
) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": "/",
        "client": None if peer is None else (peer, 51000),
        "headers": headers or [],
    }


SPOOFS: list[list[tuple[bytes, bytes]]] = [
    [(b"x-forwarded-for", b"1.2.3.4")],
    [(b"x-forwarded-for", b"1.2.3.4, 5.6.7.8")],
    [(b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-for", b"5.6.7.8")],
    [(b"x-forwarded-for", b"garbage, ;;; \xff\xfe")],
    [(b"x-forwarded-for", b"2001:db8::1")],
    [(b"x-forwarded-for", b"[2001:db8::1]:443")],
    [(b"x-forwarded-for", b"1.2.3.4:8080")],
    [(b"forwarded", b'for="[::1]:80"')],
    [(b"forwarded", b"for=1.2.3.4;proto=https, for=5.6.7.8")],
    [(b"x-real-ip", b"1.2.3.4")],
    [(b"true-client-ip", b"1.2.3.4"), (b"x-client-ip", b"1.2.3.4")],
]


# -- untrusted peers: nothing in the headers changes who they are ----------------------------


@pytest.mark.parametrize("header", ["x-forwarded-for", "forwarded", "x-real-ip"])
@pytest.mark.parametrize("headers", SPOOFS)
def test_forwarding_headers_from_an_untrusted_peer_never_change_the_identity(
    header: str, headers: list[tuple[bytes, bytes]]
) -> None:
    ident = ClientIdentifier(trusted_proxies=["10.0.0.0/8"], forwarded_header=header)
    client = ident.identify(scope(PEER, headers))
    assert client.id == f"ip:{PEER}"
    assert client.ip == PEER
    assert client.via_proxy is False


@pytest.mark.parametrize("headers", SPOOFS)
def test_without_trusted_proxies_forwarding_headers_are_not_even_read(
    headers: list[tuple[bytes, bytes]],
) -> None:
    # Loopback is not trusted unless configured, even though it is "local".
    client = ClientIdentifier().identify(scope("127.0.0.1", headers))
    assert client.id == "ip:127.0.0.1"


address_text = st.one_of(
    st.ip_addresses().map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]:{443}"),
    st.text(alphabet="0123456789abcdef:.[]\"',; =for_-", max_size=40),
)
header_value = st.lists(address_text, max_size=5).map(", ".join)
forwarded_value = st.lists(
    st.one_of(
        address_text.map(lambda a: f'for="{a}"'),
        address_text.map(lambda a: f"for={a};proto=https"),
        st.text(max_size=30),
    ),
    max_size=4,
).map(", ".join)


@settings(max_examples=300, deadline=None)
@given(
    header=st.sampled_from(["x-forwarded-for", "forwarded", "x-real-ip"]),
    values=st.lists(st.one_of(header_value, forwarded_value), max_size=4),
    names=st.lists(st.sampled_from([b"x-forwarded-for", b"forwarded", b"x-real-ip"]), max_size=4),
    peer=st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str)),
)
def test_spoofing_property_untrusted_peer_is_always_its_own_identity(
    header: str, values: list[str], names: list[bytes], peer: str
) -> None:
    ident = ClientIdentifier(trusted_proxies=["10.0.0.0/8", "fd00::/8"], forwarded_header=header)
    if ident.is_trusted(peer):
        return
    headers = [(n, v.encode("utf-8")) for n, v in zip(names, values, strict=False)]
    client = ident.identify(scope(peer, headers))
    assert client.id == ClientIdentifier(ipv6_prefix=64).identify(scope(peer)).id
    assert client.via_proxy is False


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(header_value, min_size=1, max_size=3),
)
def test_from_a_trusted_proxy_the_identity_is_the_peer_or_an_address_the_chain_holds(
    values: list[str],
) -> None:
    ident = ClientIdentifier(trusted_proxies=["10.0.0.0/8"], ipv6_prefix=128)
    headers = [(b"x-forwarded-for", v.encode()) for v in values]
    client = ident.identify(scope(PROXY, headers))
    assert client.ip is not None
    if client.via_proxy:
        candidates = {str(a) for v in values for part in v.split(",") if (a := parse_address(part))}
        assert client.ip in candidates
    else:
        assert client.ip == PROXY


# -- trusted proxies: the rightmost untrusted address -----------------------------------------


def xff(*values: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-forwarded-for", v.encode()) for v in values]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (xff("198.51.100.9"), "198.51.100.9"),
        # The client wrote the left part; the proxy appended the real address.
        (xff("1.2.3.4, 198.51.100.9"), "198.51.100.9"),
        # Trusted hops are skipped from the right.
        (xff("1.2.3.4, 198.51.100.9, 10.0.0.3, 10.0.0.2"), "198.51.100.9"),
        # Several header lines are one chain, in order.
        (xff("1.2.3.4", "198.51.100.9", "10.0.0.2"), "198.51.100.9"),
        # Every entry trusted: the leftmost.
        (xff("10.0.0.5, 10.0.0.3"), "10.0.0.5"),
        # Ports and brackets.
        (xff("198.51.100.9:4711"), "198.51.100.9"),
        (xff("[2001:db8::1]:443"), "2001:db8::1"),
        (xff("2001:db8::1"), "2001:db8::1"),
        (xff("::ffff:198.51.100.9"), "198.51.100.9"),
        # Garbage on the right is never believed: back to the last vouched-for address.
        (xff("198.51.100.9, garbage"), PROXY),
        (xff("198.51.100.9, unknown"), PROXY),
        (xff("198.51.100.9, 10.0.0.3, 999.1.1.1"), PROXY),
        (xff("198.51.100.9, garbage, 10.0.0.3"), "10.0.0.3"),
        # Garbage on the left is never reached.
        (xff("garbage, 198.51.100.9"), "198.51.100.9"),
        (xff(""), PROXY),
        (xff(" , ,198.51.100.9 , "), "198.51.100.9"),
        (xff("198.51.100.9:99999"), PROXY),
        (xff("198.51.100.9:"), PROXY),
        (xff("[2001:db8::1"), PROXY),
        (xff("[198.51.100.9]"), PROXY),
        (xff("fe80::1%eth0"), "fe80::1"),
    ],
)
def test_x_forwarded_for_from_a_trusted_proxy(
    headers: list[tuple[bytes, bytes]], expected: str
) -> None:
    ident = ClientIdentifier(trusted_proxies=["10.0.0.0/8"], ipv6_prefix=128)
    client = ident.identify(scope(PROXY, headers))
    assert client.ip == expected
    assert client.via_proxy is (expected != PROXY)


def test_ipv4_mapped_peer_is_matched_against_ipv4_proxies() -> None:
    ident = ClientIdentifier(trusted_proxies=["10.0.0.0/8"])
    client = ident.identify(scope("::ffff:10.0.0.1", xff("198.51.100.9")))
    assert client.ip == "198.51.100.9"


def test_ipv6_proxies() -> None:
    ident = ClientIdentifier(trusted_proxies=["fd00::/8"], ipv6_prefix=128)
    client = ident.identify(scope("fd00::1", xff("2001:db8::5, fd00::2")))
    assert client.ip == "2001:db8::5"


def fwd(*values: str) -> list[tuple[bytes, bytes]]:
    return [(b"forwarded", v.encode()) for v in values]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (fwd("for=198.51.100.9"), "198.51.100.9"),
        (fwd('for="[::1]:80"'), "::1"),
        (fwd('For="[2001:db8:cafe::17]:4711";proto=https'), "2001:db8:cafe::17"),
        (fwd("for=1.2.3.4, for=198.51.100.9;proto=https;by=10.0.0.1"), "198.51.100.9"),
        (fwd("for=1.2.3.4", "for=198.51.100.9", "for=10.0.0.2"), "198.51.100.9"),
        (fwd('for="198.51.100.9:8080"'), "198.51.100.9"),
        # Unknown and obfuscated identifiers stop the walk.
        (fwd("for=198.51.100.9, for=unknown"), PROXY),
        (fwd("for=198.51.100.9, for=_hidden"), PROXY),
        (fwd("for=198.51.100.9, proto=https"), PROXY),
        # Malformed lines are never believed; lines to their right still are.
        (fwd('for="198.51.100.9'), PROXY),
        (fwd("for"), PROXY),
        (fwd("for=198.51.100.9;for=1.2.3.4"), PROXY),
        (fwd('for=1.2"3'), PROXY),
        (fwd('for="1.2.3.4" x'), PROXY),
        (fwd('for="1.2.3.4, 5.6.7.8"'), PROXY),
        (fwd('for="', "for=198.51.100.9"), "198.51.100.9"),
        (fwd("for=198.51.100.9", 'for="'), PROXY),
    ],
)
def test_forwarded_from_a_trusted_proxy(headers: list[tuple[bytes, bytes]], expected: str) -> None:
    ident = ClientIdentifier(
        trusted_proxies=["10.0.0.0/8"], forwarded_header="forwarded", ipv6_prefix=128
    )
    assert ident.identify(scope(PROXY, headers)).ip == expected


def test_only_the_configured_header_is_read() -> None:
    ident = ClientIdentifier(trusted_proxies=["10.0.0.0/8"], forwarded_header="Forwarded")
    headers = [(b"x-forwarded-for", b"1.2.3.4"), (b"x-real-ip", b"5.6.7.8")]
    assert ident.identify(scope(PROXY, headers)).ip == PROXY
    ident = ClientIdentifier(trusted_proxies=["10.0.0.0/8"])
    assert ident.identify(scope(PROXY, fwd("for=1.2.3.4"))).ip == PROXY


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"x-real-ip", b"198.51.100.9")], "198.51.100.9"),
        ([(b"x-real-ip", b" [2001:db8::1]:80 ")], "2001:db8::1"),
        ([(b"x-real-ip", b"nope")], PROXY),
        ([(b"x-real-ip", b"1.2.3.4"), (b"x-real-ip", b"5.6.7.8")], PROXY),
        ([(b"x-real-ip", b"1.2.3.4, 5.6.7.8")], PROXY),
    ],
)
def test_x_real_ip_from_a_trusted_proxy(headers: list[tuple[bytes, bytes]], expected: str) -> None:
    ident = ClientIdentifier(
        trusted_proxies=["10.0.0.0/8"], forwarded_header="x-real-ip", ipv6_prefix=128
    )
    assert ident.identify(scope(PROXY, headers)).ip == expected


def test_a_long_chain_of_trusted_hops_is_cut() -> None:
    ident = ClientIdentifier(trusted_proxies=["10.0.0.0/8"])
    chain = ", ".join(["198.51.100.9"] + [f"10.0.0.{i}" for i in range(1, 60)])
    client = ident.identify(scope(PROXY, xff(chain)))
    assert client.ip is not None
    assert client.ip.startswith("10.0.0.")  # never the far-left entry


# -- identities --------------------------------------------------------------------------------


def test_ipv6_clients_are_grouped_by_their_64() -> None:
    ident = ClientIdentifier()
    a = ident.identify(scope("2001:db8:1:2::1"))
    b = ident.identify(scope("2001:db8:1:2:ffff::9"))
    c = ident.identify(scope("2001:db8:1:3::1"))
    assert a.id == b.id == "ip:2001:db8:1:2::/64"
    assert c.id != a.id
    assert a.ip == "2001:db8:1:2::1"
    apart = ClientIdentifier(ipv6_prefix=128)
    assert apart.identify(scope("2001:db8:1:2::1")).id == "ip:2001:db8:1:2::1"


def test_no_peer_and_non_ip_peers() -> None:
    ident = ClientIdentifier(trusted_proxies=["10.0.0.0/8"])
    assert ident.identify(scope(None)).id == "peer:"
    assert ident.identify(scope(None)).ip is None
    client = ident.identify(scope("testclient", xff("1.2.3.4")))
    assert client.id == "peer:testclient"
    assert client.ip is None


def test_api_key_is_the_identity_and_only_its_digest_is_kept() -> None:
    ident = ClientIdentifier(client_header="X-Api-Key")
    raw = b"sk_live_51HnQ3EXAMPLEsecret"
    a = ident.identify(scope("198.51.100.1", [(b"x-api-key", raw)]))
    b = ident.identify(scope("198.51.100.2", [(b"x-api-key", raw)]))
    c = ident.identify(scope("198.51.100.1", [(b"x-api-key", b"another")]))
    assert a.id == b.id == "key:" + key_digest(raw)
    assert len(a.id) == len("key:") + 24
    assert c.id != a.id
    assert a.ip == "198.51.100.1"
    assert a.has_session
    assert "secret" not in repr(a)
    assert "sk_live" not in repr(a)
    # An empty value is no key: the address is the identity.
    assert ident.identify(scope(PEER, [(b"x-api-key", b"  ")])).id == f"ip:{PEER}"
    # The digest is the same in every process (no per-process salt): replicas agree.
    assert key_digest(b"k") == "0e9509e7bb37ad93c73c6b07"


def test_user_agent_cookie_and_auth() -> None:
    ident = ClientIdentifier()
    client = ident.identify(
        scope(
            PEER,
            [
                (b"user-agent", b"Mozilla/5.0"),
                (b"cookie", b"a=1"),
                (b"authorization", b"Bearer x"),
            ],
        )
    )
    assert client == Client(f"ip:{PEER}", PEER, None, "Mozilla/5.0", True, True, False)
    bare = ident.identify(scope(PEER, [(b"cookie", b"")]))
    assert bare.user_agent == ""
    assert not bare.has_cookie
    assert not bare.has_session


def test_the_address_cache_is_bounded() -> None:
    ident = ClientIdentifier(trusted_proxies=["10.0.0.0/8"])
    for i in range(_CACHE_MAX + 500):
        ident.identify(scope(PROXY, xff(f"198.51.{i // 256 % 256}.{i % 256}:{i % 60000 + 1}")))
    assert len(ident._cache) <= _CACHE_MAX


def test_parse_forwarded() -> None:
    assert parse_forwarded("for=1.2.3.4;proto=http;by=5.6.7.8") == ["1.2.3.4"]
    assert parse_forwarded('for="[::1]:80", for=5.6.7.8') == ["[::1]:80", "5.6.7.8"]
    assert parse_forwarded('for="a\\"b"') == ['a"b']
    assert parse_forwarded("proto=https") == [None]
    assert parse_forwarded("") == []
    assert parse_forwarded(", ,for=1.2.3.4,") == ["1.2.3.4"]
    assert parse_forwarded("for=1.2.3.4;") == ["1.2.3.4"]
    for bad in ('for="', "for", "for=", "=x", 'f"or=1', "for=1;for=2", 'for="x" y'):
        assert parse_forwarded(bad) is None, bad


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        (" 1.2.3.4 ", "1.2.3.4"),
        ("1.2.3.4:80", "1.2.3.4"),
        ("[::1]", "::1"),
        ("[::1]:80", "::1"),
        ("::1", "::1"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("01.2.3.4", None),
        ("1.2.3.4:http", None),
        ("1.2.3.4:\uff11\uff12", None),  # fullwidth digits are digits to str.isdigit
        ("[::1]x", None),
        ("[::1]:", None),
        ("", None),
        ("unknown", None),
        ("1" * 100, None),
    ],
)
def test_parse_address(text: str, expected: str | None) -> None:
    parsed = parse_address(text)
    assert (None if parsed is None else str(parsed)) == expected


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"trusted_proxies": "10.0.0.0/8"}, "trusted_proxies"),
        ({"trusted_proxies": ["10.0.0.0/33"]}, "trusted_proxies"),
        ({"trusted_proxies": ["nope"]}, "trusted_proxies"),
        ({"trusted_proxies": [10]}, "trusted_proxies"),
        ({"forwarded_header": "x-client-ip"}, "forwarded_header"),
        ({"forwarded_header": 1}, "forwarded_header"),
        ({"client_header": ""}, "client_header"),
        ({"client_header": "clé"}, "client_header"),
        ({"ipv6_prefix": 0}, "ipv6_prefix"),
        ({"ipv6_prefix": 129}, "ipv6_prefix"),
        ({"ipv6_prefix": True}, "ipv6_prefix"),
    ],
)
def test_bad_configuration_names_the_field(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        ClientIdentifier(**kwargs)
    assert info.value.name == name


def test_trusted_proxies_are_normalized_and_shown() -> None:
    ident = ClientIdentifier(trusted_proxies=["10.1.2.3/8", "::1"], client_header="X-User")
    assert ident.trusted_proxies == ("10.0.0.0/8", "::1/128")
    assert "10.0.0.0/8" in repr(ident)
    assert "x-user" in repr(ident)
    assert ident.is_trusted("10.9.9.9")
    assert not ident.is_trusted("11.0.0.1")
    assert not ident.is_trusted("garbage")
