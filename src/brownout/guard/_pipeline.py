from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from ..errors import InvalidConfig
from ..events import Event
from ._policy import AsyncNext, Call, Policy, SyncNext, run_async_call, run_sync_call

__all__ = ["RECOMMENDED_ORDER", "Pipeline"]

P = ParamSpec("P")
T = TypeVar("T")

RECOMMENDED_ORDER = (
    "fallback",
    "cache",
    "total timeout",
    "retry or hedge",
    "circuit breaker or adaptive throttle",
    "bulkhead, concurrency or rate limit",
    "attempt timeout",
)
_RANK = {
    "fallback": 0,
    "cache": 1,
    "retry": 3,
    "hedge": 3,
    "circuit_breaker": 4,
    # Client-side throttling rejects attempts locally, as an open breaker does: inside the
    # retry (each attempt asks it, and a throttled attempt is not retried), outside the
    # bulkhead and the attempt timeout (a throttled call takes no slot).
    "adaptive_throttle": 4,
    "bulkhead": 5,
    "concurrency_limit": 5,
    "rate_limit": 5,
}
_ONCE = ("retry", "hedge", "circuit_breaker", "fallback", "cache")
_PLURAL = {
    "retry": "retries",
    "hedge": "hedges",
    "circuit_breaker": "circuit breakers",
    "fallback": "fallbacks",
    "cache": "caches",
}
_TOTAL_TIMEOUT, _ATTEMPT_TIMEOUT = 2, 6


def flatten(policies: Iterable[Policy]) -> list[Policy]:
    """The policies in wrapping order, with nested pipelines replaced by their policies."""
    flat: list[Policy] = []
    for policy in policies:
        if isinstance(policy, Pipeline):
            flat.extend(flatten(policy.policies))
        else:
            flat.append(policy)
    return flat


def _rank(policies: Iterable[Policy]) -> list[tuple[int, str]]:
    """Rank each policy in the recommended order. A Timeout is a *total* timeout while no
    retry, hedge, breaker or bulkhead wraps it, and an *attempt* timeout after one."""
    ranks: list[tuple[int, str]] = []
    highest = -1
    for policy in policies:
        kind = policy.kind
        if kind == "timeout":
            if highest > _TOTAL_TIMEOUT:
                ranks.append((_ATTEMPT_TIMEOUT, "attempt timeout"))
            else:
                ranks.append((_TOTAL_TIMEOUT, "total timeout"))
        else:
            ranks.append((_RANK.get(kind, -1), kind.replace("_", " ")))
        highest = max(highest, ranks[-1][0])
    return ranks


def order_problem(policies: Iterable[Policy]) -> str | None:
    """Why ``policies`` deviate from :data:`RECOMMENDED_ORDER`, or None when they follow it.

    Nested pipelines count as their policies in place."""
    flat = flatten(policies)
    seen: dict[str, int] = {}
    for policy in flat:
        seen[policy.kind] = seen.get(policy.kind, 0) + 1
    for kind in _ONCE:
        if seen.get(kind, 0) > 1:
            what = _PLURAL[kind]
            return f"{seen[kind]} {what} in one pipeline (layered {what} multiply load)"
    if seen.get("retry") and seen.get("hedge"):
        return "a retry and a hedge in one pipeline (they multiply attempts; use one)"
    best = (-1, "")
    for rank, label in _rank(flat):
        if rank < 0:
            continue
        if rank < best[0]:
            return f"{label} inside {best[1]}"
        best = (rank, label)
    return None


@dataclass(frozen=True, slots=True)
class Pipeline(Policy):
    """Policies applied in the order given: the first wraps all the others.

    The recommended order, outermost first, is: fallback, cache, total timeout, retry (or
    hedge), circuit breaker, bulkhead (or concurrency / rate limit), attempt timeout. A
    ``Timeout`` before the retry bounds the whole call including backoff; one after it bounds
    each attempt; a ``Timeout`` with no retry or hedge outside it is a total timeout until a
    breaker or bulkhead wraps it, and an attempt timeout after one. A pipeline out of that
    order, or with two retries, two hedges, a retry and a hedge, two breakers, two fallbacks
    or two caches, is refused with ``InvalidConfig`` unless ``check_order=False`` says the
    order is deliberate. Policies of other kinds are not ranked.

    A pipeline is itself a policy: use it with ``call``, ``acall``, as a decorator, or nest
    it. A nested pipeline counts as its policies in place, both for the order check (its own
    ``check_order=False`` does not exempt the outer pipeline) and when it runs (nesting adds
    no per-call cost).
    """

    policies: tuple[Policy, ...]
    check_order: bool = field(default=True, kw_only=True)
    name: str = field(default="pipeline", kw_only=True)
    _sync: SyncNext = field(init=False, repr=False, compare=False)
    _async: AsyncNext = field(init=False, repr=False, compare=False)

    kind = "pipeline"

    def __init__(
        self, policies: Iterable[Policy], *, check_order: bool = True, name: str = "pipeline"
    ) -> None:
        if isinstance(policies, Policy):
            raise InvalidConfig(
                "Pipeline", "policies", policies, "a sequence of brownout policies, not one policy"
            )
        items = tuple(policies)
        for p in items:
            if not isinstance(p, Policy):
                raise InvalidConfig(
                    "Pipeline", "policies", items, "a sequence of brownout policies"
                )
        object.__setattr__(self, "policies", items)
        object.__setattr__(self, "check_order", check_order)
        object.__setattr__(self, "name", name)
        if check_order:
            why = order_problem(items)
            if why is not None:
                raise InvalidConfig(
                    "Pipeline",
                    "policies",
                    [p.name for p in flatten(items)],
                    "in the recommended order, outermost first ("
                    + ", ".join(RECOMMENDED_ORDER)
                    + f") but has {why}; pass check_order=False if this order is deliberate",
                )
        object.__setattr__(self, "_sync", self._compose_sync(run_sync_call))
        object.__setattr__(self, "_async", self._compose_async(run_async_call))

    # Nested pipelines are inlined, so nesting costs nothing per call.

    def _compose_sync(self, last: SyncNext) -> SyncNext:
        nxt = last
        for policy in reversed(flatten(self.policies)):
            nxt = functools.partial(policy._run, nxt)
        return nxt

    def _compose_async(self, last: AsyncNext) -> AsyncNext:
        nxt = last
        for policy in reversed(flatten(self.policies)):
            nxt = functools.partial(policy._arun, nxt)
        return nxt

    def _run(self, nxt: SyncNext, call: Call) -> Any:
        chain = self._sync if nxt is run_sync_call else self._compose_sync(nxt)
        return chain(call)

    async def _arun(self, nxt: AsyncNext, call: Call) -> Any:
        chain = self._async if nxt is run_async_call else self._compose_async(nxt)
        return await chain(call)

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run the plain function ``fn(*args, **kwargs)`` through every policy."""
        return self._sync(Call(fn, args, kwargs))  # type: ignore[no-any-return]

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` through every policy."""
        return await self._async(Call(fn, args, kwargs))  # type: ignore[no-any-return]

    def _entries(self) -> tuple[SyncNext, AsyncNext]:
        return self._sync, self._async  # decorated calls go straight into the chain

    def subscribe(self, subscriber: Callable[[Event], object]) -> Callable[[], None]:
        """Subscribe to the events of every policy in the pipeline (nested ones included);
        returns a function that unsubscribes from all of them."""
        undo = [p.events.subscribe(subscriber) for p in flatten(self.policies)]

        def unsubscribe() -> None:
            for u in undo:
                u()

        return unsubscribe
