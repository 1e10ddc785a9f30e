"""Per-use state for policies used as context managers.

A policy object is shared by every concurrent caller, but ``with policy:`` calls
``__enter__`` and ``__exit__`` on that one shared object. What one use must remember between
the two (a timer entry, a breaker permit) is kept on a context variable, so each task and
each thread sees only its own.
"""

from __future__ import annotations

from contextvars import ContextVar

_scopes: ContextVar[tuple[tuple[object, object], ...]] = ContextVar("brownout_scopes", default=())


def push(owner: object, record: object) -> None:
    _scopes.set((*_scopes.get(), (owner, record)))


def pop(owner: object) -> object:
    stack = _scopes.get()
    for i in range(len(stack) - 1, -1, -1):
        if stack[i][0] is owner:
            _scopes.set(stack[:i] + stack[i + 1 :])
            return stack[i][1]
    raise RuntimeError(f"{owner!r} exited a scope it never entered")
