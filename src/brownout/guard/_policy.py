"""The shape every policy shares.

A policy is a frozen dataclass (its validated configuration, shown by ``repr``) holding one
mutable state object. Its decision logic lives in that state object and takes ``now`` as an
argument; the adapters here run it around plain functions and coroutines.

Composition: each policy implements ``_run(nxt, call)`` (sync) and ``_arun(nxt, call)``
(async), where ``call`` is the invocation (function and arguments) and ``nxt(call)`` runs
whatever the policy wraps: the next policy of a ``Pipeline`` or, last, the function itself.
A policy that retries or hedges simply calls ``nxt(call)`` again.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar, ParamSpec, TypeVar, overload

from .._clock import Clock
from ..events import Events

P = ParamSpec("P")
T = TypeVar("T")


class Call:
    """One invocation: the function and the arguments it will be called with."""

    __slots__ = ("args", "fn", "kwargs")

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs


SyncNext = Callable[[Call], Any]
AsyncNext = Callable[[Call], Awaitable[Any]]


def run_sync_call(call: Call) -> Any:
    return call.fn(*call.args, **call.kwargs)


def run_async_call(call: Call) -> Awaitable[Any]:
    # Returns the coroutine unawaited: the policy awaits it, so no extra frame is added.
    return call.fn(*call.args, **call.kwargs)  # type: ignore[no-any-return]


class Policy:
    """Base of the guard policies. Subclasses are frozen, keyword-only dataclasses."""

    __slots__ = ()
    kind: ClassVar[str] = "policy"
    name: str
    clock: Clock
    events: Events

    def _run(self, nxt: SyncNext, call: Call) -> Any:
        raise NotImplementedError

    async def _arun(self, nxt: AsyncNext, call: Call) -> Any:
        raise NotImplementedError

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run the plain function ``fn(*args, **kwargs)`` under this policy."""
        return self._run(run_sync_call, Call(fn, args, kwargs))  # type: ignore[no-any-return]

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` under this policy."""
        return await self._arun(run_async_call, Call(fn, args, kwargs))  # type: ignore[no-any-return]

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...

    @overload
    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Use the policy as a decorator, on an ``async def`` or a plain function."""
        return decorate(*self._entries(), fn)

    def _entries(self) -> tuple[Callable[[Call], Any], Callable[[Call], Awaitable[Any]]]:
        """The calls a decorated function goes through: ``run(call)`` and ``arun(call)``."""
        return (
            functools.partial(self._run, run_sync_call),
            functools.partial(self._arun, run_async_call),
        )


def decorate(
    run: Callable[[Call], Any],
    arun: Callable[[Call], Awaitable[Any]],
    fn: Callable[P, Any],
) -> Callable[P, Any]:
    """Wrap ``fn`` so each call goes through ``run(call)`` (or ``await arun(call)`` for an
    ``async def``), where ``call`` records the function and its arguments."""
    if not callable(fn):
        raise TypeError(f"a policy decorates a function, not {fn!r}")
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            return await arun(Call(fn, args, kwargs))

        return async_wrapper

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
        return run(Call(fn, args, kwargs))

    return wrapper
