"""Client identity: who sent this request, as far as it can be known without being fooled.

The identity of a request is, in order of preference:

1. a digest of the value of ``client_header`` (an API key or a user id header), when that
   header is configured and present: ``"key:<24 hex digits>"``. Only a short digest is
   kept (BLAKE2b, 96 bits), never the raw value, and the digest is the same in every process
   so limits shared through Redis agree across replicas. The client chooses what it sends:
   name a header your authentication validates (or your gateway sets after it), or keep a
   per-address limit as well, or a client can take a fresh identity with every request;
2. otherwise the client's address: ``"ip:203.0.113.7"``. IPv6 addresses are grouped by
   their ``/64`` network (``"ip:2001:db8:1:2::/64"``; ``ipv6_prefix`` changes it): one
   subscriber usually owns a whole ``/64`` and can pick any address in it at will.

The address is the peer of the connection (``scope["client"]``) unless that peer is one of
the ``trusted_proxies`` (networks in CIDR form); only then is the forwarding header read,
the one named by ``forwarded_header`` (the header *your* proxy sets: a header it does not
set passes through from the client untouched, so reading it would let any client choose its
address):

- ``"x-forwarded-for"`` (default) and ``"forwarded"`` (RFC 7239, its ``for=`` parameter)
  hold a chain of addresses, one appended by each proxy. The chain is walked from the right
  (the entry the nearest proxy wrote) skipping addresses inside ``trusted_proxies``; the
  first address outside them is the client (the rightmost-untrusted rule). Entries left of
  it were written by the client itself and are never read. When every entry is trusted,
  the leftmost one is the client. Several header lines are one chain, in order.
- ``"x-real-ip"``: a single address set by the proxy; more than one such header line is
  ambiguous and ignored.

A malformed entry (not an address, ``unknown``, an obfuscated ``_hidden`` name, a broken
quoted string) is never trusted: the walk stops there and the identity is the last
address that was vouched for (the peer itself when the very first entry is malformed).
Ports are dropped (``1.2.3.4:80``, ``"[::1]:80"``); IPv4-mapped IPv6 addresses become IPv4.
The walk stops after ``_MAX_HOPS`` entries.

Parsing an address costs about a microsecond, so results are memoized per string in a
bounded map (cleared when full) owned by the identifier: a known peer costs one lookup.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, TypeAlias

from .. import _validate as v
from ..errors import InvalidConfig

__all__ = ["FORWARDED_HEADERS", "Client", "ClientIdentifier"]

FORWARDED_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")

_MAX_HOPS = 32  # forwarding entries looked at, at most
_CACHE_MAX = 8192  # memoized address strings, at most (the map is cleared when full)
_MAX_ADDRESS_CHARS = 64  # "[" + 45-char IPv6 + zone + "]:65535" fits

_Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

# A parsed address: (its text, the identity it gives, whether it is a trusted proxy).
_Parsed: TypeAlias = tuple[str, str, bool]

_KIND_UA = 1
_KIND_COOKIE = 2
_KIND_AUTH = 3
_KIND_FORWARD = 4
_KIND_KEY = 5


class Client(NamedTuple):
    """Who sent a request (an immutable record; a named tuple because it is built on every
    request and a named tuple costs a third of a frozen dataclass to build).

    ``id`` is the identity used for limits and scoring (``"key:..."``, ``"ip:..."``, or
    ``"peer:<host>"`` when the peer is not an IP address, such as a Unix socket; ``"peer:"``
    when the server gave no peer at all). ``ip`` is the client address (``None`` when
    unknown), ``key`` the digest of the ``client_header`` value when present.
    ``user_agent`` is the ``User-Agent`` header ("" when absent); ``has_cookie`` and
    ``has_auth`` say whether a non-empty ``Cookie`` / ``Authorization`` header came with
    the request; ``via_proxy`` whether ``ip`` was read from a forwarding header.
    """

    id: str
    ip: str | None
    key: str | None
    user_agent: str
    has_cookie: bool
    has_auth: bool
    via_proxy: bool

    @property
    def has_session(self) -> bool:
        """A cookie, credentials or an API key came with the request."""
        return self.has_cookie or self.has_auth or self.key is not None


def key_digest(raw: bytes) -> str:
    """The short, stable digest kept in place of an API key (96-bit BLAKE2b, hex)."""
    return hashlib.blake2b(raw, digest_size=12, person=b"brownout.client").hexdigest()


def parse_address(text: str) -> _Address | None:
    """An IP address from a forwarding entry or a peer host, or ``None`` when malformed.

    Accepts ``1.2.3.4``, ``1.2.3.4:80``, ``2001:db8::1``, ``[2001:db8::1]`` and
    ``[2001:db8::1]:80``; drops an IPv6 zone (``%eth0``); IPv4-mapped IPv6 becomes IPv4.
    """
    t = text.strip()
    if not t or len(t) > _MAX_ADDRESS_CHARS:
        return None
    if t[0] == "[":
        end = t.find("]")
        if end < 0:
            return None
        host, rest = t[1:end], t[end + 1 :]
        if rest and not (rest[0] == ":" and _is_port(rest[1:])):
            return None
        if ":" not in host:  # brackets hold IPv6 only
            return None
    elif t.count(":") == 1:
        host, _, port = t.partition(":")
        if not _is_port(port):
            return None
    else:
        host = t
    host = host.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_port(text: str) -> bool:
    return 0 < len(text) <= 5 and text.isascii() and text.isdigit() and int(text) <= 65535


def parse_forwarded(value: str) -> list[str | None] | None:
    """The ``for=`` values of one ``Forwarded`` header line (RFC 7239), left to right.

    An element without ``for=`` gives ``None``. Returns ``None`` when the line is malformed
    (a pair without ``=``, an unterminated quoted string, a quote in a token, a parameter
    given twice in one element). Empty elements are skipped, as the list rule of RFC 9110
    asks.
    """
    out: list[str | None] = []
    found: str | None = None
    seen: set[str] = set()
    i, n = 0, len(value)
    pair_started = False
    while True:
        # One "name=value" pair, or an empty one.
        while i < n and value[i] in " \t":
            i += 1
        start = i
        while i < n and value[i] not in "=;,":
            i += 1
        name = value[start:i].strip().lower()
        if i < n and value[i] == "=":
            if not name or '"' in name:
                return None
            i += 1
            if i < n and value[i] == '"':
                i += 1
                chars: list[str] = []
                while i < n and value[i] != '"':
                    if value[i] == "\\" and i + 1 < n:
                        i += 1
                    chars.append(value[i])
                    i += 1
                if i >= n:
                    return None  # unterminated quoted string
                i += 1
                text = "".join(chars)
                while i < n and value[i] in " \t":
                    i += 1
                if i < n and value[i] not in ";,":
                    return None
            else:
                start = i
                while i < n and value[i] not in ";,":
                    i += 1
                text = value[start:i].strip()
                if '"' in text or not text:
                    return None
            if name in seen:
                return None
            seen.add(name)
            if name == "for":
                found = text
            pair_started = True
        elif name:
            return None  # a pair without "="
        # Now at ";", "," or the end.
        if i >= n or value[i] == ",":
            if pair_started:
                out.append(found)
            found = None
            seen = set()
            pair_started = False
            if i >= n:
                return out
        i += 1


class ClientIdentifier:
    """Tells who sent a request from its ASGI ``scope`` (see the module docstring).

    ``trusted_proxies``: networks (``"10.0.0.0/8"``, ``"127.0.0.1"``, ``"::1"``) whose
    forwarding header is believed. ``forwarded_header``: which header they set, one of
    ``"x-forwarded-for"``, ``"forwarded"``, ``"x-real-ip"``. ``client_header``: a header
    whose value, when present, is the identity (hashed). ``ipv6_prefix``: IPv6 clients are
    grouped by this prefix length (64; 128 keeps every address apart).
    """

    __slots__ = (
        "_cache",
        "_client_header",
        "_forward_name",
        "_kinds",
        "_networks",
        "_v6_prefix",
        "client_header",
        "forwarded_header",
        "ipv6_prefix",
        "trusted_proxies",
    )

    def __init__(
        self,
        *,
        trusted_proxies: Sequence[str] = (),
        forwarded_header: str = "x-forwarded-for",
        client_header: str | None = None,
        ipv6_prefix: int = 64,
        owner: str = "ClientIdentifier",
    ) -> None:
        if isinstance(trusted_proxies, str | bytes) or not isinstance(trusted_proxies, Sequence):
            raise InvalidConfig(
                owner, "trusted_proxies", trusted_proxies, "a sequence of networks (CIDR)"
            )
        networks: list[_Network] = []
        for item in trusted_proxies:
            try:
                if not isinstance(item, str):
                    raise TypeError
                networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except (TypeError, ValueError):
                raise InvalidConfig(
                    owner,
                    "trusted_proxies",
                    trusted_proxies,
                    "a sequence of networks such as '10.0.0.0/8', '127.0.0.1' or '::1'",
                ) from None
        header = v.one_of(
            owner,
            "forwarded_header",
            forwarded_header.lower() if isinstance(forwarded_header, str) else forwarded_header,
            FORWARDED_HEADERS,
        )
        if client_header is not None and (
            not isinstance(client_header, str)
            or not client_header.strip()
            or not client_header.isascii()
        ):
            raise InvalidConfig(
                owner, "client_header", client_header, "a header name such as 'x-api-key' or None"
            )
        if not isinstance(ipv6_prefix, int) or isinstance(ipv6_prefix, bool):
            raise InvalidConfig(owner, "ipv6_prefix", ipv6_prefix, "an integer from 1 to 128")
        if not 1 <= ipv6_prefix <= 128:
            raise InvalidConfig(owner, "ipv6_prefix", ipv6_prefix, "an integer from 1 to 128")
        self._networks = tuple(networks)
        self.trusted_proxies: tuple[str, ...] = tuple(str(n) for n in networks)
        self.forwarded_header = header
        self.client_header = None if client_header is None else client_header.strip().lower()
        self.ipv6_prefix = ipv6_prefix
        self._v6_prefix = ipv6_prefix
        self._forward_name = header.encode("ascii")
        self._client_header = None if self.client_header is None else self.client_header.encode()
        kinds: dict[bytes, int] = {
            b"user-agent": _KIND_UA,
            b"cookie": _KIND_COOKIE,
            b"authorization": _KIND_AUTH,
        }
        if self._networks:
            kinds[self._forward_name] = _KIND_FORWARD
        if self._client_header is not None:
            kinds[self._client_header] = _KIND_KEY  # wins over the names above if equal
        self._kinds = kinds
        self._cache: dict[str, _Parsed | None] = {}

    # -- addresses ---------------------------------------------------------------------

    def _lookup(self, text: str) -> _Parsed | None:
        """``(ip, identity, trusted)`` for an address string, or None; memoized."""
        cache = self._cache
        try:
            return cache[text]
        except KeyError:
            pass
        address = parse_address(text)
        parsed: _Parsed | None = None
        if address is not None:
            ip = str(address)
            if address.version == 6 and self._v6_prefix < 128:
                net = ipaddress.IPv6Network((address, self._v6_prefix), strict=False)
                ident = "ip:" + str(net)
            else:
                ident = "ip:" + ip
            parsed = (ip, ident, any(address in net for net in self._networks))
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[text] = parsed
        return parsed

    def is_trusted(self, host: str) -> bool:
        """Whether ``host`` (an address) is inside ``trusted_proxies``."""
        parsed = self._lookup(host)
        return parsed is not None and parsed[2]

    def _forwarded(self, peer: _Parsed, values: list[bytes]) -> _Parsed:
        """Walk the forwarding header lines from the right; see the module docstring."""
        header = self.forwarded_header
        if header == "x-real-ip":
            if len(values) != 1:
                return peer
            parsed = self._lookup(values[0].decode("latin-1"))
            return peer if parsed is None else parsed
        current = peer
        hops = 0
        for raw in reversed(values):
            line = raw.decode("latin-1")
            entries: list[str | None] | None
            if header == "forwarded":
                entries = parse_forwarded(line)
            else:
                entries = [e for e in (p.strip() for p in line.split(",")) if e]
            if entries is None:
                return current  # a malformed line: nothing left of it is believed
            for entry in reversed(entries):
                hops += 1
                if entry is None or hops > _MAX_HOPS:
                    return current
                parsed = self._lookup(entry)
                if parsed is None:
                    return current
                current = parsed
                if not parsed[2]:
                    return current
        return current

    # -- requests ----------------------------------------------------------------------

    def identify(self, scope: Mapping[str, Any]) -> Client:
        """Who sent the request described by ``scope`` (an ASGI HTTP scope)."""
        user_agent = b""
        has_cookie = has_auth = False
        key: bytes | None = None
        forwarded: list[bytes] | None = None
        kinds = self._kinds
        for name, value in scope.get("headers") or ():
            kind = kinds.get(name)
            if kind is None:
                continue
            if kind == _KIND_UA:
                user_agent = value
            elif kind == _KIND_COOKIE:
                has_cookie = has_cookie or bool(value.strip())
            elif kind == _KIND_AUTH:
                has_auth = has_auth or bool(value.strip())
            elif kind == _KIND_FORWARD:
                if forwarded is None:
                    forwarded = []
                forwarded.append(value)
            elif key is None and value.strip():
                key = value.strip()

        peer = scope.get("client")
        ip: str | None = None
        ident: str
        via_proxy = False
        if peer:
            host = str(peer[0])
            parsed = self._lookup(host)
            if parsed is None:
                ident = "peer:" + host[:_MAX_ADDRESS_CHARS]
            else:
                if parsed[2] and forwarded is not None:
                    found = self._forwarded(parsed, forwarded)
                    via_proxy = found is not parsed
                    parsed = found
                ip, ident = parsed[0], parsed[1]
        else:
            ident = "peer:"
        digest = None
        if key is not None:
            digest = key_digest(key)
            ident = "key:" + digest
        return Client(
            ident,
            ip,
            digest,
            user_agent.decode("latin-1"),
            has_cookie,
            has_auth,
            via_proxy,
        )

    def __repr__(self) -> str:
        return (
            f"ClientIdentifier(trusted_proxies={list(self.trusted_proxies)!r}, "
            f"forwarded_header={self.forwarded_header!r}, client_header={self.client_header!r}, "
            f"ipv6_prefix={self.ipv6_prefix})"
        )
