from __future__ import annotations

import asyncio
import threading

import pytest

from brownout.errors import InvalidConfig
from brownout.guard._ratelimit import Decision, MemoryStore, RateStore
from brownout.stores import MemoryStore as ExportedMemoryStore
from brownout.testing import MockClock
from brownout.testing._stores import RATE_STORE_CHECKS, acheck_rate_store, check_rate_store


def _gcra(store: MemoryStore, key: str, now: float, *, interval: float = 1.0) -> Decision:
    return store.gcra(key, interval_s=interval, tolerance_s=0.0, cost=1, now=now)


def test_stores_reexports_the_guard_memory_store() -> None:
    assert ExportedMemoryStore is MemoryStore
    assert isinstance(MemoryStore(), RateStore)


@pytest.mark.parametrize("check", RATE_STORE_CHECKS)
def test_conformance(check: str) -> None:
    clock = MockClock(1000.0)
    check_rate_store(MemoryStore(), now=clock.now, wait=clock.advance, checks=(check,))


@pytest.mark.parametrize("check", RATE_STORE_CHECKS)
def test_conformance_async(check: str) -> None:
    clock = MockClock(1000.0)

    async def main() -> None:
        await acheck_rate_store(MemoryStore(), now=clock.now, wait=clock.advance, checks=(check,))

    asyncio.run(main())


def test_the_suite_catches_a_store_that_does_not_conform() -> None:
    """A store that forgets every key (always a full burst) fails the suite."""

    class Forgetful(MemoryStore):
        def gcra(
            self, key: str, *, interval_s: float, tolerance_s: float, cost: int, now: float
        ) -> Decision:
            self.clear()
            return super().gcra(
                key, interval_s=interval_s, tolerance_s=tolerance_s, cost=cost, now=now
            )

    clock = MockClock()
    with pytest.raises(AssertionError, match="burst request 2 of 5"):
        check_rate_store(Forgetful(), now=clock.now, wait=clock.advance, checks=("burst",))


def test_the_suite_catches_a_store_that_is_not_atomic() -> None:
    """Reading and writing in two steps lets concurrent threads admit more than the burst."""

    class Racy(MemoryStore):
        def gcra(
            self, key: str, *, interval_s: float, tolerance_s: float, cost: int, now: float
        ) -> Decision:
            before = dict(self._tats)
            threading.Event().wait(0.0005)  # let the others read the same state
            decision = super().gcra(
                key, interval_s=interval_s, tolerance_s=tolerance_s, cost=cost, now=now
            )
            if decision.allowed and key in before:
                self._tats[key] = before[key] + interval_s  # last writer wins
            return decision

    clock = MockClock()
    with pytest.raises(AssertionError, match="threads admitted"):
        check_rate_store(Racy(), now=clock.now, wait=clock.advance, checks=("atomic",))


def test_unknown_check_names_are_refused() -> None:
    with pytest.raises(ValueError, match="'nope' is not one of"):
        check_rate_store(MemoryStore(), now=lambda: 0.0, wait=lambda _: None, checks=("nope",))


@pytest.mark.parametrize("bad", [0, -1, 1.5, "10"])
def test_max_keys_is_validated(bad: object) -> None:
    with pytest.raises(InvalidConfig) as info:
        MemoryStore(bad)  # type: ignore[arg-type]
    assert info.value.name == "max_keys"


def test_holds_at_most_max_keys_dropping_the_least_recently_used() -> None:
    store = MemoryStore(max_keys=3)
    for key in "abc":
        _gcra(store, key, 0.0, interval=100.0)
    _gcra(store, "a", 0.0, interval=100.0)  # refused, but a use: "b" is now the oldest
    _gcra(store, "d", 0.0, interval=100.0)
    assert len(store) == 3
    assert set(store._tats) == {"a", "c", "d"}
    assert not _gcra(store, "c", 0.0, interval=100.0).allowed  # still remembered
    assert _gcra(store, "b", 0.0, interval=100.0).allowed  # forgotten: a fresh burst


def test_an_expired_oldest_key_is_dropped_when_a_key_is_added() -> None:
    store = MemoryStore(max_keys=100)
    _gcra(store, "old", 0.0, interval=1.0)
    _gcra(store, "young", 0.5, interval=10.0)
    _gcra(store, "new", 2.0, interval=1.0)  # "old" is back to a full burst at t=1
    assert set(store._tats) == {"young", "new"}


def test_a_refusal_or_a_zero_cost_stores_nothing() -> None:
    store = MemoryStore()
    store.gcra("k", interval_s=1.0, tolerance_s=0.0, cost=0, now=0.0)
    assert len(store) == 0
    _gcra(store, "k", 0.0)
    before = dict(store._tats)
    assert not _gcra(store, "k", 0.1).allowed
    assert store._tats == before


def test_clear_and_repr() -> None:
    store = MemoryStore(max_keys=10)
    _gcra(store, "k", 0.0)
    assert repr(store) == "MemoryStore(max_keys=10, keys=1)"
    store.clear()
    assert len(store) == 0
    assert _gcra(store, "k", 0.0).allowed


def test_agcra_is_gcra() -> None:
    store = MemoryStore()

    async def main() -> list[bool]:
        return [
            (await store.agcra("k", interval_s=1.0, tolerance_s=1.0, cost=1, now=0.0)).allowed
            for _ in range(3)
        ]

    assert asyncio.run(main()) == [True, True, False]
