"""Addresses: ``host:port`` text and the loopback rule (core: no pillar imported).

brownout only loads loopback targets and binds control endpoints to loopback unless told
otherwise; every place that enforces it uses :func:`is_loopback`."""

from __future__ import annotations

import ipaddress

from .errors import ScenarioError

__all__ = ["is_loopback", "join_host_port", "split_host_port"]

_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback name or address (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_host_port(
    field: str,
    text: object,
    *,
    port_zero: bool = False,
    loopback: bool = False,
    example: str = "127.0.0.1:9001",
) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:port"`` for IPv6) as ``(host, port)``. Port 0 (pick a
    free port) only with ``port_zero``; a loopback host only with ``loopback``.

    Raises ScenarioError naming ``field``."""
    if loopback:
        allowed = f"a loopback host:port such as {example!r} (127.0.0.0/8, ::1, localhost)"
    else:
        allowed = f"a host:port address such as {example!r}"
    if port_zero:
        allowed += " (port 0 picks a free port)"
    if not isinstance(text, str) or not text.isprintable():
        raise ScenarioError(field, text, allowed)
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise ScenarioError(field, text, allowed)
    elif ":" in host:
        raise ScenarioError(field, text, allowed + "; an IPv6 host goes in brackets: [::1]:9001")
    if (
        not sep
        or not host
        or not port_text.isdigit()
        or len(port_text) > 5
        or any(c.isspace() or c in "/@[]" for c in host)
    ):
        raise ScenarioError(field, text, allowed)
    port = int(port_text)
    if port > 65535 or (port == 0 and not port_zero):
        raise ScenarioError(field, text, allowed)
    if loopback and not is_loopback(host):
        raise ScenarioError(field, text, allowed, problem="is not on loopback")
    return host, port


def join_host_port(host: str, port: int) -> str:
    """The inverse of :func:`split_host_port`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
