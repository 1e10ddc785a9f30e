"""The rate-store conformance suite: one set of checks every :class:`RateStore` must pass.

The checks drive a store through its one method and compare the decisions with what GCRA
prescribes (``brownout.guard._ratelimit``): exact ``allowed`` and ``remaining`` sequences,
and ``retry_after_s`` / ``reset_after_s`` within ``tolerance_s``. They are written so that a
store keeping its own time (Redis uses the server's ``TIME``) passes them as well as one
driven by the ``now`` it is given: decisions that must not depend on elapsed time use long
intervals (10 s), and the one check that needs time to pass waits ``wait(seconds)`` for well
under 0.3 s in total. For a store driven by a ``MockClock`` pass ``now=clock.now``,
``wait=clock.advance`` and a tiny tolerance; for a real-time store pass ``time.monotonic``,
``time.sleep`` and a tolerance covering a few round trips.

Each check uses its own keys, ``prefix + <check name> + ...``; use a fresh prefix per run
against a shared store (and delete the keys afterwards).

    from brownout.testing import RATE_STORE_CHECKS, check_rate_store
    check_rate_store(store, now=clock.now, wait=clock.advance)          # every check
    check_rate_store(store, now=..., wait=..., checks=("burst",))       # one of them
    await acheck_rate_store(store, now=..., wait=...)                   # through agcra
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Final

from ..guard._ratelimit import Decision, RateStore

__all__ = ["RATE_STORE_CHECKS", "acheck_rate_store", "check_rate_store"]

Decide = Callable[[str, float, float, int], Decision]


class _Run:
    """What a check gets: how to decide, the time, how to wait, and the keys' prefix."""

    __slots__ = ("decide", "now", "prefix", "tolerance_s", "wait")

    def __init__(
        self,
        decide: Decide,
        now: Callable[[], float],
        wait: Callable[[float], object],
        prefix: str,
        tolerance_s: float,
    ) -> None:
        self.decide = decide
        self.now = now
        self.wait = wait
        self.prefix = prefix
        self.tolerance_s = tolerance_s

    def near(self, what: str, got: float, want: float) -> None:
        if not abs(got - want) <= self.tolerance_s:
            raise AssertionError(f"{what}: got {got!r}, want {want!r} +- {self.tolerance_s!r}")


def _expect(what: str, decision: Decision, allowed: bool, remaining: int) -> None:
    if decision.allowed is not allowed or decision.remaining != remaining:
        raise AssertionError(
            f"{what}: got {decision!r}, want allowed={allowed}, remaining={remaining}"
        )
    if allowed and decision.retry_after_s != 0:
        raise AssertionError(f"{what}: allowed with retry_after_s={decision.retry_after_s!r}")
    if not allowed and not decision.retry_after_s > 0:
        raise AssertionError(f"{what}: refused with retry_after_s={decision.retry_after_s!r}")


# Emission interval of the time-independent checks: nothing becomes due during a check.
_T = 10.0


def _check_burst(run: _Run) -> None:
    """A fresh key admits ``burst`` at once, counting ``remaining`` down; then refuses with
    ``retry_after_s`` = one interval, and the key resets after ``burst`` intervals."""
    key = run.prefix + "burst"
    for i in range(5):
        d = run.decide(key, _T, 4 * _T, 1)
        _expect(f"burst request {i + 1} of 5", d, True, 4 - i)
        run.near(f"burst request {i + 1}: reset_after_s", d.reset_after_s, (i + 1) * _T)
    d = run.decide(key, _T, 4 * _T, 1)
    _expect("request 6 of burst 5", d, False, 0)
    run.near("request 6: retry_after_s", d.retry_after_s, _T)
    run.near("request 6: reset_after_s", d.reset_after_s, 5 * _T)


def _check_no_burst(run: _Run) -> None:
    """``tolerance_s=0`` (burst 1): one request, then a refusal for one interval."""
    key = run.prefix + "no_burst"
    _expect("first request", run.decide(key, _T, 0.0, 1), True, 0)
    d = run.decide(key, _T, 0.0, 1)
    _expect("second request", d, False, 0)
    run.near("second request: retry_after_s", d.retry_after_s, _T)


def _check_refusal_is_free(run: _Run) -> None:
    """A refused request changes nothing: the wait it is told does not grow."""
    key = run.prefix + "refusal_is_free"
    for _ in range(2):
        run.decide(key, _T, _T, 1)
    for i in range(3):
        d = run.decide(key, _T, _T, 1)
        _expect(f"refusal {i + 1}", d, False, 0)
        run.near(f"refusal {i + 1}: retry_after_s", d.retry_after_s, _T)
        run.near(f"refusal {i + 1}: reset_after_s", d.reset_after_s, 2 * _T)


def _check_keys_independent(run: _Run) -> None:
    """Exhausting one key leaves the others whole, whatever their characters."""
    base = run.prefix + "keys"
    _expect("key a", run.decide(base + ":a", _T, _T, 2), True, 0)
    _expect("key a again", run.decide(base + ":a", _T, _T, 1), False, 0)
    for suffix in (":b", ":A", ":a ", ":ü{ñ}*?[x]", ":" + "k" * 300):
        _expect(f"key {suffix[:12]!r}", run.decide(base + suffix, _T, _T, 1), True, 1)


def _check_cost(run: _Run) -> None:
    """A request of cost c takes c units; refused when fewer are left, and then told to
    retry when enough will be."""
    key = run.prefix + "cost"
    _expect("cost 3 of 5", run.decide(key, _T, 4 * _T, 3), True, 2)
    d = run.decide(key, _T, 4 * _T, 3)
    _expect("cost 3 with 2 left", d, False, 2)
    run.near("cost 3 with 2 left: retry_after_s", d.retry_after_s, _T)
    _expect("cost 2 with 2 left", run.decide(key, _T, 4 * _T, 2), True, 0)
    d = run.decide(key, _T, 4 * _T, 5)
    _expect("cost 5 with 0 left", d, False, 0)
    run.near("cost 5 with 0 left: retry_after_s", d.retry_after_s, 5 * _T)


def _check_cost_zero(run: _Run) -> None:
    """Cost 0 asks without consuming, on a fresh key and on a used one."""
    key = run.prefix + "cost_zero"
    d = run.decide(key, _T, 2 * _T, 0)
    _expect("cost 0 on a fresh key", d, True, 3)
    run.near("cost 0 on a fresh key: reset_after_s", d.reset_after_s, 0.0)
    _expect("cost 1", run.decide(key, _T, 2 * _T, 1), True, 2)
    for i in range(2):
        _expect(f"cost 0 after one request ({i + 1})", run.decide(key, _T, 2 * _T, 0), True, 2)


def _check_recovers(run: _Run) -> None:
    """After waiting the ``retry_after_s`` it was told, a refused request is admitted; then
    refused again (the wait bought one request, not a new burst)."""
    key = run.prefix + "recovers"
    interval = 0.05
    for i in range(2):
        _expect(f"burst request {i + 1}", run.decide(key, interval, interval, 1), True, 1 - i)
    d = run.decide(key, interval, interval, 1)
    _expect("over the burst", d, False, 0)
    if not d.retry_after_s <= interval + run.tolerance_s:
        raise AssertionError(f"retry_after_s={d.retry_after_s!r} > interval {interval}")
    run.wait(d.retry_after_s + interval / 5)
    _expect("after retry_after_s", run.decide(key, interval, interval, 1), True, 0)
    _expect("right after", run.decide(key, interval, interval, 1), False, 0)


def _check_atomic(run: _Run) -> None:
    """Concurrent decisions on one key from 8 threads admit exactly ``burst``: reading and
    writing the key is one atomic step."""
    key = run.prefix + "atomic"
    burst, threads, each = 50, 8, 25
    admitted = [0] * threads
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def worker(i: int) -> None:
        try:
            start.wait()
            for _ in range(each):
                if run.decide(key, 100.0, (burst - 1) * 100.0, 1).allowed:
                    admitted[i] += 1
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    if sum(admitted) != burst:
        raise AssertionError(f"{threads} threads admitted {sum(admitted)}, want {burst}")


RATE_STORE_CHECKS: Final = (
    "burst",
    "no_burst",
    "refusal_is_free",
    "keys_independent",
    "cost",
    "cost_zero",
    "recovers",
    "atomic",
)

_CHECKS: Final[Mapping[str, Callable[[_Run], None]]] = MappingProxyType(
    {
        "burst": _check_burst,
        "no_burst": _check_no_burst,
        "refusal_is_free": _check_refusal_is_free,
        "keys_independent": _check_keys_independent,
        "cost": _check_cost,
        "cost_zero": _check_cost_zero,
        "recovers": _check_recovers,
        "atomic": _check_atomic,
    }
)


def _selected(checks: Iterable[str]) -> list[Callable[[_Run], None]]:
    chosen: list[Callable[[_Run], None]] = []
    for name in checks:
        if name not in _CHECKS:
            raise ValueError(f"checks: {name!r} is not one of {', '.join(RATE_STORE_CHECKS)}")
        chosen.append(_CHECKS[name])
    return chosen


def check_rate_store(
    store: RateStore,
    *,
    now: Callable[[], float],
    wait: Callable[[float], object],
    prefix: str = "conformance:",
    tolerance_s: float = 1e-6,
    checks: Iterable[str] = RATE_STORE_CHECKS,
) -> None:
    """Run the named ``checks`` (default: all) against ``store.gcra``; raises
    ``AssertionError`` naming the check, the request and what differed.

    ``now()`` is the time passed to the store; ``wait(seconds)`` lets that much time pass
    (``MockClock.advance`` or ``time.sleep``); ``tolerance_s`` bounds the difference of the
    times a decision reports (``retry_after_s``, ``reset_after_s``) from the exact ones."""
    selected = _selected(checks)

    def decide(key: str, interval_s: float, tolerance: float, cost: int) -> Decision:
        return store.gcra(key, interval_s=interval_s, tolerance_s=tolerance, cost=cost, now=now())

    run = _Run(decide, now, wait, prefix, tolerance_s)
    for check in selected:
        check(run)


async def acheck_rate_store(
    store: RateStore,
    *,
    now: Callable[[], float],
    wait: Callable[[float], object],
    prefix: str = "conformance:",
    tolerance_s: float = 1e-6,
    checks: Iterable[str] = RATE_STORE_CHECKS,
) -> None:
    """:func:`check_rate_store` through ``store.agcra``, awaited on the running loop.

    The checks run in a worker thread that hands each decision to this loop, so a store
    bound to the loop (an asyncio Redis client) serves them. ``wait`` runs in that thread:
    ``time.sleep`` is fine."""
    selected = _selected(checks)
    loop = asyncio.get_running_loop()

    def decide(key: str, interval_s: float, tolerance: float, cost: int) -> Decision:
        coro = store.agcra(key, interval_s=interval_s, tolerance_s=tolerance, cost=cost, now=now())
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    run = _Run(decide, now, wait, prefix, tolerance_s)
    for check in selected:
        await asyncio.to_thread(check, run)
