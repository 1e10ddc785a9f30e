"""Criticality: how much a request matters, so overload sheds the least important first.

Google's production systems tag every request with one of four criticalities (SRE book,
"Handling Overload"): ``CRITICAL_PLUS`` (an error is user-visible and severe),
``CRITICAL`` (the default for interactive traffic), ``SHEDDABLE_PLUS`` (partial
unavailability is expected: batch work that retries) and ``SHEDDABLE`` (may be dropped
outright). The tag is set at the edge and travels with the request, so every server on the
path sheds the same requests first.

Here it lives in a context variable, so it follows the request through ``await`` and into
the tasks it spawns, exactly like the deadline (:mod:`brownout.guard._deadline`). Between
services it travels as the ``brownout-criticality`` request header, whose value is the
lower-case name (``critical_plus``). Only the edge should trust that header from outside;
the middleware decides that.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

from ..errors import InvalidConfig

__all__ = [
    "CRITICALITY_HEADER",
    "Criticality",
    "criticality",
    "criticality_from_headers",
    "criticality_headers",
    "current_criticality",
]

CRITICALITY_HEADER = "brownout-criticality"


class Criticality(enum.IntEnum):
    """How much a request matters; overload sheds the lowest value first.

    The integer order is the shedding order: ``SHEDDABLE < SHEDDABLE_PLUS < CRITICAL <
    CRITICAL_PLUS``. :attr:`header_value` is the lower-case name that the
    ``brownout-criticality`` header carries.
    """

    SHEDDABLE = 0
    SHEDDABLE_PLUS = 1
    CRITICAL = 2
    CRITICAL_PLUS = 3

    @classmethod
    def parse(cls, text: str) -> Criticality:
        """The criticality a name spells, in any case, with ``_``, ``-``, a space or nothing
        between the words: ``"critical_plus"``, ``"CRITICAL-PLUS"``, ``"Critical Plus"``,
        ``"criticalplus"``. Anything else raises ``InvalidConfig`` (a ``ValueError``)."""
        if isinstance(text, str):
            key = text.strip().lower().replace("-", "").replace("_", "").replace(" ", "")
            found = _BY_KEY.get(key)
            if found is not None:
                return found
        raise InvalidConfig("Criticality", "text", text, _ALLOWED)

    @property
    def header_value(self) -> str:
        """The lower-case name, as the ``brownout-criticality`` header carries it."""
        return self.name.lower()


# Built once at import from the enum itself: a read-only lookup table.
_BY_KEY: Mapping[str, Criticality] = MappingProxyType(
    {c.name.lower().replace("_", ""): c for c in Criticality}
)
_ALLOWED = "one of " + ", ".join(repr(c.header_value) for c in reversed(Criticality))

_current: ContextVar[Criticality] = ContextVar("brownout_criticality", default=Criticality.CRITICAL)


def current_criticality() -> Criticality:
    """The criticality in force here: set by :func:`criticality`, else ``CRITICAL``."""
    return _current.get()


@contextmanager
def criticality(c: Criticality) -> Iterator[None]:
    """Run the ``with`` block (and the tasks it starts) at criticality ``c``.

    Unlike a deadline, the innermost setting wins: a handler may raise or lower the
    criticality of the work it starts on purpose.
    """
    if not isinstance(c, Criticality):
        raise InvalidConfig("criticality", "c", c, "a Criticality (use Criticality.parse for text)")
    token = _current.set(c)
    try:
        yield
    finally:
        _current.reset(token)


def criticality_headers() -> dict[str, str]:
    """The header that passes the current criticality on to an outgoing call."""
    return {CRITICALITY_HEADER: _current.get().header_value}


def criticality_from_headers(
    headers: Mapping[str, str] | Iterable[tuple[bytes | str, bytes | str]],
) -> Criticality | None:
    """The criticality an incoming request declares, or None (absent or not a known name).

    Accepts a mapping or ASGI-style ``(name, value)`` pairs; names compare case-blind. A
    malformed value counts as absent: a client cannot make a request fail by mistyping it.
    Whether to believe the header at all is the caller's decision (trusted peers only).
    """
    items = headers.items() if isinstance(headers, Mapping) else headers
    for key, value in items:
        name = key.decode("latin-1") if isinstance(key, bytes) else key
        if name.lower() != CRITICALITY_HEADER:
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        try:
            return Criticality.parse(text)
        except InvalidConfig:
            return None
    return None
