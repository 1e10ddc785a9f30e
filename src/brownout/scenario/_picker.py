"""Draw the next request of a traffic class: which entry of the mix, and its path.

An entry is chosen with probability ``weight / sum(weights)`` by bisecting the cumulative
weights with one uniform draw. Keys are drawn per request: ``uniform`` as
``1 + floor(U * n)``, ``zipf`` by bisecting a precomputed CDF
``F(k) = sum_{j<=k} j**-s / sum_{j<=n} j**-s`` with one uniform draw (inverse transform;
8 bytes per rank, built when the picker is made), ``values`` as ``values[floor(U * m)]``
(percent-encoded once, up front). All draws come from the ``random.Random`` given.
"""

from __future__ import annotations

import math
import random
from array import array
from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import accumulate
from urllib.parse import quote

from ._model import KeySpec, RequestSpec, TrafficClass

__all__ = ["RequestPicker", "zipf_cdf"]

_SAFE = "/:@!$&'()*+,;=-._~"
_LIST_LIMIT = 1 << 17  # left as is in key values; everything else is %-encoded

Picked = tuple[RequestSpec, str, str, dict[str, str], bytes | None]


def zipf_cdf(n: int, s: float) -> array[float]:
    """``F(k)`` for ``k = 1..n`` (index ``k - 1``) of the Zipf law ``P(k) ~ k**-s``; the last
    entry is exactly 1."""
    sums = array("d", accumulate(k**-s for k in range(1, n + 1)))
    total = sums[-1]
    cdf = array("d", (c / total for c in sums))
    cdf[-1] = 1.0
    return cdf


def _searchable(cdf: array[float]) -> Sequence[float]:
    """A list (bisect reads it without boxing floats, ~100 ns faster per draw) up to
    ``_LIST_LIMIT`` ranks; the 8-byte array beyond, where a list would cost 32 bytes each."""
    return list(cdf) if len(cdf) <= _LIST_LIMIT else cdf


def _sampler(spec: KeySpec, rand: Callable[[], float]) -> Callable[[], str]:
    if spec.kind == "uniform":
        n = spec.n

        def uniform() -> str:
            return str(int(rand() * n) + 1)

        return uniform
    if spec.kind == "zipf":
        cdf = _searchable(zipf_cdf(spec.n, spec.s))

        def zipf() -> str:
            return str(bisect_right(cdf, rand()) + 1)

        return zipf
    values = [quote(v, safe=_SAFE) for v in spec.values]
    m = len(values)

    def choose() -> str:
        return values[int(rand() * m)]

    return choose


def _renderer(spec: RequestSpec, rand: Callable[[], float]) -> Callable[[], str] | None:
    """A function drawing the keys and returning the path, or None for a fixed path."""
    parts = spec._template
    if len(parts) == 1:
        return None
    if len(parts) == 3:
        head, tail = parts[0], parts[2]
        key = spec.keys[parts[1]]
        if key.kind == "uniform":
            n = key.n

            def one_uniform() -> str:
                return f"{head}{int(rand() * n) + 1}{tail}"

            return one_uniform
        if key.kind == "zipf":
            cdf = _searchable(zipf_cdf(key.n, key.s))

            def one_zipf() -> str:
                return f"{head}{bisect_right(cdf, rand()) + 1}{tail}"

            return one_zipf

        draw = _sampler(key, rand)

        def one_key() -> str:
            return f"{head}{draw()}{tail}"

        return one_key
    literals, names = parts[0::2], parts[1::2]
    last = literals[-1]
    unique = list(dict.fromkeys(names))
    if len(unique) == len(names):
        steps = list(zip(literals[:-1], [_sampler(spec.keys[k], rand) for k in names], strict=True))

        def many_keys() -> str:
            return "".join([f"{lit}{draw()}" for lit, draw in steps]) + last

        return many_keys
    samplers = [_sampler(spec.keys[k], rand) for k in unique]  # a repeated key: one draw
    slots = list(zip(literals[:-1], [unique.index(k) for k in names], strict=True))

    def repeated_keys() -> str:
        drawn = [draw() for draw in samplers]
        return "".join([f"{lit}{drawn[i]}" for lit, i in slots]) + last

    return repeated_keys


class RequestPicker:
    """Picks requests for one class: ``pick()`` returns ``(spec, method, path, headers,
    body)`` with the path's keys drawn. ``headers`` is the spec's own dict: do not change it.

    One picker per class and worker; it draws from ``rng`` only, so a seeded ``rng`` gives
    a reproducible sequence."""

    __slots__ = ("_cum", "_entries", "_rand", "_total")

    def __init__(self, cls: TrafficClass, rng: random.Random) -> None:
        rand = rng.random
        self._rand = rand
        entries = []
        for spec in cls.requests:
            path = spec._template[0] if len(spec._template) == 1 else ""
            entries.append(
                (spec, spec.method, path, _renderer(spec, rand), spec.headers, spec.body)
            )
        self._entries = entries
        cum = list(accumulate(spec.weight for spec in cls.requests))
        self._total = cum[-1]
        cum[-1] = math.inf  # U * total can round up to total: never index past the end
        self._cum = cum

    def pick(self) -> Picked:
        """The next request: ``(spec, method, path, headers, body)``."""
        entries = self._entries
        if len(entries) == 1:
            spec, method, path, render, headers, body = entries[0]
        else:
            spec, method, path, render, headers, body = entries[
                bisect_right(self._cum, self._rand() * self._total)
            ]
        if render is not None:
            path = render()
        return spec, method, path, headers, body

    def weights(self) -> list[tuple[str, float]]:
        """``(endpoint name, probability)`` of each entry, in mix order."""
        total = self._total
        return [(e[0].name, e[0].weight / total) for e in self._entries]
