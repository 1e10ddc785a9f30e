"""Thread-pool hooks: wait and run time and worker CPU of anyio.to_thread.run_sync (what
Starlette and FastAPI use for sync endpoints) and loop.run_in_executor, booked to the
request that sent the work; results, exceptions and cancellation unchanged."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from brownout.probe._cost import RequestCost, activate, current_cost, deactivate
from brownout.probe._threads import install_threads

anyio = pytest.importorskip("anyio")
T = TypeVar("T")
Runner = Callable[[Coroutine[Any, Any, T]], T]


@pytest.fixture
def hooks() -> Iterator[None]:
    undo = install_threads()
    try:
        yield
    finally:
        undo()


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner[Any]:
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.run  # type: ignore[no-any-return]
    return asyncio.run


def burn_cpu(seconds: float) -> str:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass
    return threading.current_thread().name


async def as_request(body: Callable[[], Coroutine[Any, Any, T]]) -> tuple[RequestCost, T]:
    cost = RequestCost("GET", "/t", time.perf_counter())
    token = activate(cost)
    try:
        return cost, await body()
    finally:
        deactivate(token)


@pytest.mark.usefixtures("hooks")
def test_anyio_run_sync_books_run_time_and_worker_cpu(run: Runner[Any]) -> None:
    async def body() -> str:
        return await anyio.to_thread.run_sync(burn_cpu, 0.03)

    cost, worker = run(as_request(body))
    assert worker != threading.current_thread().name  # it did run in a worker
    assert cost.thread_run_s >= 0.03
    assert cost.cpu_s >= 0.03
    assert 0 <= cost.thread_wait_s < cost.thread_run_s


@pytest.mark.usefixtures("hooks")
def test_waiting_for_a_limiter_token_is_wait_time() -> None:
    async def main() -> list[RequestCost]:
        limiter = anyio.CapacityLimiter(1)

        async def body() -> None:
            await anyio.to_thread.run_sync(time.sleep, 0.04, limiter=limiter)

        results = await asyncio.gather(as_request(body), as_request(body))
        return [cost for cost, _ in results]

    a, b = sorted(asyncio.run(main()), key=lambda c: c.thread_wait_s)
    assert a.thread_wait_s < 0.03
    assert b.thread_wait_s >= 0.035  # queued behind the other call
    assert a.thread_run_s >= 0.04
    assert b.thread_run_s >= 0.04
    assert a.cpu_s < 0.02  # sleeping is not CPU


@pytest.mark.usefixtures("hooks")
def test_starlette_run_in_threadpool_is_covered_and_sees_the_request() -> None:
    concurrency = pytest.importorskip("starlette.concurrency")

    async def body() -> RequestCost | None:
        return await concurrency.run_in_threadpool(current_cost)

    cost, seen = asyncio.run(as_request(body))
    assert seen is cost  # anyio copies the context into the worker
    assert cost.thread_run_s > 0


@pytest.mark.usefixtures("hooks")
def test_run_in_executor_is_booked_and_the_worker_sees_the_request(run: Runner[Any]) -> None:
    async def body() -> tuple[RequestCost | None, str]:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1) as pool:
            seen = await loop.run_in_executor(pool, current_cost)
            name = await loop.run_in_executor(pool, burn_cpu, 0.02)
        return seen, name

    cost, (seen, _) = run(as_request(body))
    assert seen is cost
    assert cost.thread_run_s >= 0.02
    assert cost.cpu_s >= 0.02
    assert current_cost() is None  # nothing leaks into this thread


@pytest.mark.usefixtures("hooks")
def test_asyncio_to_thread_is_booked_once() -> None:
    async def body() -> None:
        await asyncio.to_thread(time.sleep, 0.03)

    cost, _ = asyncio.run(as_request(body))
    assert 0.03 <= cost.thread_run_s < 0.055


@pytest.mark.usefixtures("hooks")
def test_exceptions_and_results_pass_through(run: Runner[Any]) -> None:
    def fails() -> None:
        raise KeyError("k")

    async def body() -> int:
        with pytest.raises(KeyError):
            await anyio.to_thread.run_sync(fails)
        with pytest.raises(KeyError):
            await asyncio.get_running_loop().run_in_executor(None, fails)
        return await anyio.to_thread.run_sync(sum, [1, 2, 3])

    cost, total = run(as_request(body))
    assert total == 6
    assert cost.thread_run_s >= 0


@pytest.mark.usefixtures("hooks")
def test_a_cancelled_wait_is_booked_and_the_cancellation_propagates() -> None:
    async def main() -> RequestCost:
        release = threading.Event()
        cost = RequestCost("GET", "/t", time.perf_counter())

        async def serve() -> None:
            token = activate(cost)
            try:
                await anyio.to_thread.run_sync(release.wait, 2.0, abandon_on_cancel=True)
            finally:
                deactivate(token)

        task = asyncio.get_running_loop().create_task(serve())
        await asyncio.sleep(0.03)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        return cost

    cost = asyncio.run(main())
    assert cost.thread_run_s >= 0.02  # running when it was abandoned


def test_nothing_is_booked_outside_a_request_and_uninstall_restores() -> None:
    import anyio.to_thread

    original_run_sync = anyio.to_thread.run_sync
    original_executor = asyncio.BaseEventLoop.__dict__["run_in_executor"]
    undo = install_threads()
    assert anyio.to_thread.run_sync is not original_run_sync
    assert asyncio.BaseEventLoop.__dict__["run_in_executor"] is not original_executor
    again = install_threads()
    again()  # nothing of its own to undo
    assert anyio.to_thread.run_sync is not original_run_sync

    async def main() -> RequestCost | None:
        await anyio.to_thread.run_sync(time.sleep, 0)
        return await asyncio.get_running_loop().run_in_executor(None, current_cost)

    assert asyncio.run(main()) is None
    undo()
    undo()
    assert anyio.to_thread.run_sync is original_run_sync
    assert asyncio.BaseEventLoop.__dict__["run_in_executor"] is original_executor
    uvloop = pytest.importorskip("uvloop")
    assert "run_in_executor" not in uvloop.Loop.__dict__
