from __future__ import annotations

import inspect
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from .._clock import Clock, monotonic_clock
from ..errors import InvalidConfig
from ..events import Events, FallbackUsed
from ._outcome import Selector
from ._policy import AsyncNext, Call, Policy, SyncNext

__all__ = ["Fallback"]


class _Constant:
    """The handler of ``Fallback.value(v)``: returns ``v`` whatever it replaces."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __call__(self, _outcome: object, /, *_args: object, **_kwargs: object) -> object:
        return self.value

    def __repr__(self) -> str:
        return f"constant({self.value!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Fallback(Policy):
    """Replace chosen failures with a value computed by ``handler``.

    ``handler(outcome, *args, **kwargs)`` receives what it replaces (the exception, or the
    result for result-based selection) followed by the arguments of the original call, and
    returns the value to use; in async calls it may be an ``async def``. Selected: exceptions
    that are instances of ``fallback_on`` (default ``Exception``, which includes brownout's
    rejections such as ``CircuitOpen``: serving a fallback is the point of opening a breaker)
    and pass ``fallback_if``; results whose HTTP status is in ``fallback_statuses`` or that
    pass ``fallback_if_result``. Cancellation (and any other ``BaseException`` that is not an
    ``Exception``) is never replaced. An ``async def`` handler works only in async calls; a
    sync call whose handler returns a coroutine raises ``TypeError``.

    ``Fallback.value(v)`` is the common case of a constant.
    """

    handler: Callable[..., Any] = field(kw_only=False)
    fallback_on: type[BaseException] | tuple[type[BaseException], ...] = Exception
    fallback_if: Callable[[BaseException], bool] | None = None
    fallback_statuses: Collection[int] = frozenset()
    fallback_if_result: Callable[[Any], bool] | None = None
    name: str = "fallback"
    clock: Clock = field(default=monotonic_clock, repr=False, compare=False)
    events: Events = field(default_factory=Events, repr=False, compare=False)
    _select: Selector = field(init=False, repr=False, compare=False)

    kind = "fallback"

    def __post_init__(self) -> None:
        if not callable(self.handler):
            raise InvalidConfig("Fallback", "handler", self.handler, "a callable")
        select = Selector(
            "Fallback",
            "fallback",
            types=self.fallback_on,
            exc_pred=self.fallback_if,
            statuses=self.fallback_statuses,
            result_pred=self.fallback_if_result,
        )
        object.__setattr__(self, "_select", select)
        object.__setattr__(self, "fallback_statuses", select.statuses)

    @classmethod
    def value(cls, value: Any, **options: Any) -> Fallback:
        """A fallback that returns ``value``; ``options`` are the other fields of Fallback."""
        return cls(_Constant(value), **options)

    def _used(self, outcome: object) -> None:
        if self.events:
            self.events.emit(FallbackUsed(self.clock.now(), self.name, type(outcome).__name__))

    def _run(self, nxt: SyncNext, call: Call) -> Any:
        try:
            result = nxt(call)
        except Exception as exc:
            if not self._select.exception(exc):
                raise
            self._used(exc)
            return self._sync_handler(exc, call)
        if self._select.selects_results and self._select.result(result):
            self._used(result)
            return self._sync_handler(result, call)
        return result

    def _sync_handler(self, outcome: object, call: Call) -> Any:
        value = self.handler(outcome, *call.args, **call.kwargs)
        if inspect.iscoroutine(value):
            value.close()  # never awaited: close it so no "never awaited" warning leaks
            raise TypeError(
                f"Fallback {self.name!r}: the handler returned a coroutine in a sync call; "
                "use an async handler only with acall or on an async def"
            )
        return value

    async def _arun(self, nxt: AsyncNext, call: Call) -> Any:
        try:
            result = await nxt(call)
        except Exception as exc:
            if not self._select.exception(exc):
                raise
            self._used(exc)
            value = self.handler(exc, *call.args, **call.kwargs)
            return await value if inspect.isawaitable(value) else value
        if self._select.selects_results and self._select.result(result):
            self._used(result)
            value = self.handler(result, *call.args, **call.kwargs)
            return await value if inspect.isawaitable(value) else value
        return result
