"""The probe end to end: purpose-built Starlette apps behind ProbeMiddleware, with every hook
that applies installed, over a real SQLite file and a real HTTP dependency on loopback.

The detectors not covered by ``test_probe_middleware.py`` get their own app here
(``n_plus_one_http``, ``no_timeout``, ``loop_blocking`` both CPU-bound and synchronous
I/O, with the stack pointing at the blocking line), plus a clean app that uses all of it
without a finding, two concurrent requests of different cost through the whole stack, and
the ORM over its drivers counted once. The apps run in process through
``httpx.ASGITransport``, each request in its own task as a server would run it, on asyncio
and on uvloop. Only the loop-blocking apps block for real (60 ms, the point of the test);
nothing else waits on a timer.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from brownout.errors import InvalidConfig
from brownout.probe import (
    Finding,
    Ledger,
    MergedFinding,
    Probe,
    ProbeMiddleware,
    RequestCost,
    install,
)
from brownout.probe import ProbeThresholds as Th

T = TypeVar("T")
Runner = Callable[[Coroutine[Any, Any, T]], T]

BLOCK_S = 0.06  # how long the loop-blocking apps hold the loop
# Catch the stack of a step once it is 20 ms old, well inside BLOCK_S (as test_loop.py).
LOOP_TH: dict[str, Any] = {"loop_stack_after_s": 0.02}
NO_PG = {"asyncpg": False, "psycopg": False}


class _Dependency(BaseHTTPRequestHandler):
    """The app's backend: ``GET /shipping/<id>`` answers a small JSON document."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = json.dumps({"path": self.path, "eta_days": 2}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def dependency() -> Iterator[str]:
    """The HTTP dependency on 127.0.0.1 (an ephemeral port); yields its base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Dependency)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def shop(tmp_path: Path) -> str:
    """Orders and their items, in a SQLite file."""
    path = str(tmp_path / "shop.db")
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        create table orders(id integer primary key, customer text);
        create table items(order_id int, product text, qty int);
        """
    )
    conn.executemany("insert into orders values (?, ?)", [(i, f"c{i % 7}") for i in range(50)])
    conn.executemany(
        "insert into items values (?, ?, ?)", [(i % 50, f"p{i}", 1 + i % 3) for i in range(150)]
    )
    conn.commit()
    conn.close()
    return path


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner[Any]:
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.run  # type: ignore[no-any-return]
    return asyncio.run


@pytest.fixture
def probes() -> Iterator[list[Probe]]:
    made: list[Probe] = []
    yield made
    for probe in made:
        probe.uninstall()


class Seen:
    """A detector that keeps each finished request's cost (and finds nothing)."""

    def __init__(self) -> None:
        self.costs: list[RequestCost] = []

    def __call__(self, cost: RequestCost) -> list[Finding]:
        self.costs.append(cost)
        return []


def make_probe(probes: list[Probe], seen: Seen | None = None, **thresholds: Any) -> Probe:
    probe = install(
        thresholds=Th(**thresholds), detectors=[seen] if seen is not None else [], **NO_PG
    )
    probes.append(probe)
    return probe


async def drive(app: Any, *paths: str, together: bool = False) -> list[httpx.Response]:
    """GET each path, each request in a task of its own (as a server runs it); one after
    the other, or all at once. A first request to ``/_warm`` attaches the loop monitor,
    as a server's first request would."""
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        await client.get("/_warm")
        loop = asyncio.get_running_loop()
        if together:
            tasks = [loop.create_task(client.get(p)) for p in paths]
            return list(await asyncio.gather(*tasks))
        return [await loop.create_task(client.get(p)) for p in paths]


async def warm(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def app_of(*routes: Route) -> Starlette:
    return Starlette(routes=[Route("/_warm", warm), *routes])


def only(probe: Probe, kind: str) -> MergedFinding:
    (finding,) = [f for f in probe.findings() if f.kind == kind]
    return finding


def here(offset: int = 1) -> str:
    """``"<this file>:<line>"`` of the caller's line plus ``offset``, as stacks show it."""
    return f"{os.path.relpath(__file__)}:{sys._getframe(1).f_lineno + offset}"


# -- one app per detector -------------------------------------------------------------------


def test_n_plus_one_http_app(dependency: str, run: Runner[Any], probes: list[Probe]) -> None:
    client = httpx.AsyncClient(base_url=dependency, timeout=5.0)
    lines: list[str] = []

    async def order(request: Request) -> JSONResponse:
        etas = []
        for item in range(6):  # one backend call per item: the N+1
            lines.append(here())
            etas.append((await client.get(f"/shipping/{item}")).json()["eta_days"])
        return JSONResponse({"etas": etas})

    probe = make_probe(probes, http_n_plus_one_min_total_s=0.0)
    app = ProbeMiddleware(app_of(Route("/orders/{id:int}", order)), probe=probe)

    async def main() -> list[httpx.Response]:
        try:
            return await drive(app, "/orders/1", "/orders/2")
        finally:
            await client.aclose()

    assert [r.status_code for r in run(main())] == [200, 200]
    finding = only(probe, "n_plus_one_http")
    assert finding.endpoint == "GET /orders/{id}"
    host = dependency.removeprefix("http://")
    assert finding.key == f"GET {host}/shipping/{{id}}"
    assert finding.occurrences == 2
    assert finding.evidence["calls"] == 6
    assert finding.evidence["library"] == "httpx"
    assert finding.evidence["site"] == f"{lines[0]} in order"
    assert "batch" in finding.fix
    assert "no_timeout" not in {f.kind for f in probe.findings()}  # all bounded
    dep = probe.ledger.endpoints["GET /orders/{id}"].dependencies[host]
    assert (dep.requests, dep.calls.total, dep.no_timeout_calls) == (2, 12, 0)


def test_no_timeout_app(dependency: str, probes: list[Probe]) -> None:
    """An async endpoint calling with httpx and ``timeout=None``, a sync one (thread pool)
    calling with requests and no timeout, and one calling with a timeout."""
    requests = pytest.importorskip("requests")
    unbounded = httpx.AsyncClient(base_url=dependency, timeout=None)
    bounded = httpx.AsyncClient(base_url=dependency, timeout=2.0)
    lines: dict[str, str] = {}

    async def quote(request: Request) -> JSONResponse:
        lines["quote"] = here()
        reply = await unbounded.get("/shipping/1")
        return JSONResponse(reply.json())

    def legacy(request: Request) -> JSONResponse:  # sync: Starlette runs it in a thread
        lines["legacy"] = here()
        reply = requests.get(f"{dependency}/shipping/2")
        return JSONResponse(reply.json())

    async def careful(request: Request) -> JSONResponse:
        reply = await bounded.get("/shipping/3")
        return JSONResponse(reply.json())

    probe = make_probe(probes)
    app = ProbeMiddleware(
        app_of(Route("/quote", quote), Route("/legacy", legacy), Route("/careful", careful)),
        probe=probe,
    )

    async def main() -> list[httpx.Response]:
        try:
            return await drive(app, "/quote", "/legacy", "/careful")
        finally:
            await unbounded.aclose()
            await bounded.aclose()

    assert [r.status_code for r in asyncio.run(main())] == [200, 200, 200]
    found = {f.endpoint: f for f in probe.findings()}
    assert sorted(found) == ["GET /legacy", "GET /quote"]
    assert all(f.kind == "no_timeout" for f in found.values())
    assert found["GET /quote"].evidence["library"] == "httpx"
    assert found["GET /quote"].evidence["site"] == f"{lines['quote']} in quote"
    assert found["GET /legacy"].evidence["library"] == "requests"
    assert found["GET /legacy"].evidence["site"] == f"{lines['legacy']} in legacy"
    assert "brownout.Timeout" in found["GET /quote"].fix
    legacy_stats = probe.ledger.endpoints["GET /legacy"]
    assert legacy_stats.demand("thread_run_s").total > 0  # the sync endpoint ran in a thread
    assert legacy_stats.demand("http_calls").total == 1


def crunch(seconds: float) -> int:
    """CPU-bound work on the loop thread for ``seconds`` of its CPU time."""
    end = time.thread_time() + seconds
    n = 0
    while time.thread_time() < end:
        n += 1
    return n


def test_loop_blocking_app_tells_cpu_bound_from_sync_io(
    run: Runner[Any], probes: list[Probe]
) -> None:
    lines: dict[str, str] = {}

    async def report(request: Request) -> PlainTextResponse:
        await asyncio.sleep(0)
        lines["report"] = here()
        n = crunch(BLOCK_S)
        return PlainTextResponse(str(n))

    async def legacy(request: Request) -> PlainTextResponse:
        await asyncio.sleep(0)
        lines["legacy"] = here()
        time.sleep(BLOCK_S)  # noqa: ASYNC251 - the blocking call under test
        return PlainTextResponse("done")

    # The ratios are lowered to what a crowded CI machine leaves: with two other busy
    # processes on two cores the CPU-bound step still gets ~40% of the CPU, the sleeping
    # one ~0%.
    probe = make_probe(probes, cpu_bound_ratio=0.25, io_ratio=0.1, **LOOP_TH)
    app = ProbeMiddleware(app_of(Route("/report", report), Route("/legacy", legacy)), probe=probe)
    assert [r.status_code for r in run(drive(app, "/report", "/legacy"))] == [200, 200]
    by_endpoint = {f.endpoint: f for f in probe.findings() if f.kind == "loop_blocking"}
    assert sorted(by_endpoint) == ["GET /legacy", "GET /report"]

    cpu = by_endpoint["GET /report"]
    assert cpu.evidence["blocking"] == "cpu_bound", cpu.evidence
    assert "process pool" in cpu.fix
    stack = cpu.evidence["stack"]
    assert isinstance(stack, list)
    assert stack[-1].endswith(" in crunch")  # innermost: the loop in crunch ...
    assert f"{lines['report']} in report" in stack  # ... called from this line
    assert float(cpu.evidence["step_ms"]) >= BLOCK_S * 1e3  # type: ignore[arg-type]

    io = by_endpoint["GET /legacy"]
    assert io.evidence["blocking"] == "sync_io"
    assert io.key == io.evidence["site"] == f"{lines['legacy']} in legacy"
    assert "anyio.to_thread.run_sync" in io.fix
    legacy_stats = probe.ledger.endpoints["GET /legacy"]
    assert legacy_stats.demand("longest_step_s").max >= BLOCK_S
    assert legacy_stats.demand("cpu_s").max < 0.5 * BLOCK_S  # it slept, on the loop


def test_clean_app_has_no_findings(
    dependency: str, shop: str, run: Runner[Any], probes: list[Probe]
) -> None:
    """SQLAlchemy async over aiosqlite (one join instead of a loop), one bounded backend
    call, a small response, a sync endpoint in the thread pool, every hook on and the loop
    monitored: nothing to report over a dozen requests for different orders."""
    pytest.importorskip("aiosqlite")
    from sqlalchemy import create_engine, text
    from sqlalchemy.ext.asyncio import create_async_engine

    client = httpx.AsyncClient(base_url=dependency, timeout=2.0)
    engine = create_async_engine(f"sqlite+aiosqlite:///{shop}")
    sync_engine = create_engine(f"sqlite:///{shop}")
    detail_sql = text(
        "select o.customer, i.product, i.qty from orders o join items i on i.order_id = o.id "
        "where o.id = :id"
    )

    async def order(request: Request) -> JSONResponse:
        oid = request.path_params["id"]
        async with engine.connect() as conn:
            rows = (await conn.execute(detail_sql, {"id": oid})).all()
        eta = (await client.get(f"/shipping/{oid}")).json()["eta_days"]
        return JSONResponse({"items": len(rows), "eta_days": eta})

    def count(request: Request) -> JSONResponse:  # sync: runs in the thread pool
        with sync_engine.connect() as conn:
            n = conn.execute(
                text("select count(*) from items where order_id = :id"),
                {"id": request.path_params["id"]},
            ).scalar_one()
        return JSONResponse({"items": n})

    # a step has to block 100 ms (the error threshold) to count here, not the default 20 ms:
    # a test on a shared CI machine must not fail because the machine paused the test
    probe = make_probe(probes, loop_warn_s=0.1)
    app = ProbeMiddleware(
        app_of(Route("/orders/{id:int}", order), Route("/orders/{id:int}/count", count)),
        probe=probe,
    )

    async def main() -> list[httpx.Response]:
        # the engines' first connections (and their set-up statements) outside a request
        async with engine.connect() as conn:
            await conn.execute(text("select 1"))
        try:
            paths = [f"/orders/{i}" for i in range(12)] + [f"/orders/{i}/count" for i in range(12)]
            return await drive(app, *paths)
        finally:
            await client.aclose()
            await engine.dispose()

    with sync_engine.connect() as conn:
        conn.execute(text("select 1"))
    responses = run(main())
    sync_engine.dispose()
    assert {r.status_code for r in responses} == {200}
    assert probe.findings() == []
    stats = probe.ledger.endpoints["GET /orders/{id}"]
    assert stats.requests == 12
    assert stats.demand("db_calls").max == 1  # one statement, counted once
    assert stats.demand("http_calls").max == 1
    assert stats.demand("loop_steps").percentile(50) > 0
    assert stats.demand("pool_checkouts").total == 12
    assert probe.ledger.endpoints["GET /orders/{id}/count"].demand("db_calls").max == 1


# -- attribution and counting through the whole stack ------------------------------------


def test_two_concurrent_requests_get_their_own_numbers(
    dependency: str, shop: str, run: Runner[Any], probes: list[Probe]
) -> None:
    """A costly request (5 queries, 3 backend calls, a 60 ms CPU step) and a cheap one
    (1 query) in flight at once, interleaving: each cost has its own work only.

    The CPU step is BLOCK_S long: the watchdog catches a step between
    ``loop_stack_after_s`` (20 ms) and that plus its 10 ms tick, plus up to a GIL switch
    interval (5 ms) to get the GIL; a 30 ms step left no margin on a loaded CI machine."""
    client = httpx.AsyncClient(base_url=dependency, timeout=5.0)

    async def costly(request: Request) -> PlainTextResponse:
        conn = sqlite3.connect(shop)
        for i in range(5):
            conn.execute("select customer from orders where id = ?", (i,)).fetchone()
            if i < 3:
                await client.get(f"/shipping/{i}")
            else:
                await asyncio.sleep(0)
        crunch(BLOCK_S)
        conn.close()
        return PlainTextResponse("costly")

    async def cheap(request: Request) -> PlainTextResponse:
        conn = sqlite3.connect(shop)
        conn.execute("select count(*) from items").fetchone()
        conn.close()
        await asyncio.sleep(0)
        return PlainTextResponse("cheap")

    seen = Seen()
    probe = make_probe(probes, seen, **LOOP_TH)
    app = ProbeMiddleware(app_of(Route("/costly", costly), Route("/cheap", cheap)), probe=probe)

    async def main() -> list[httpx.Response]:
        try:
            return await drive(app, "/costly", "/cheap", together=True)
        finally:
            await client.aclose()

    assert [r.text for r in run(main())] == ["costly", "cheap"]
    costs = {c.path: c for c in seen.costs if c.path != "/_warm"}
    a, b = costs["/costly"], costs["/cheap"]
    assert (len(a.db), len(a.http)) == (5, 3)
    assert (len(b.db), len(b.http)) == (1, 0)
    assert {c.driver for c in a.db + b.db} == {"sqlite3"}
    assert a.db[0].started_s < b.db[0].started_s < a.db[-1].started_s  # they interleaved
    assert a.cpu_s >= 0.95 * BLOCK_S  # its CPU step (CPU time is exact to a few us a step)
    assert a.longest_step_s >= BLOCK_S
    assert any(s.wall_s >= BLOCK_S and s.stack[-1].endswith(" in crunch") for s in a.blocking)
    # none of the costly request's CPU step is booked to the cheap one; checked on CPU time
    # and stacks, which a loaded machine descheduling the loop thread cannot inflate
    assert b.cpu_s < BLOCK_S / 2
    assert not any(s.stack and s.stack[-1].endswith(" in crunch") for s in b.blocking)
    assert b.loop_busy_s < a.loop_busy_s
    assert a.steps > b.steps > 0


def test_the_orm_over_its_drivers_counts_each_statement_once(
    shop: str, run: Runner[Any], probes: list[Probe]
) -> None:
    """SQLAlchemy async over aiosqlite, SQLAlchemy sync over sqlite3 in the thread pool and
    sqlite3 used directly, all hooks on: each statement is one DbCall, by the layer the
    application called."""
    pytest.importorskip("aiosqlite")
    from sqlalchemy import create_engine, text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(f"sqlite+aiosqlite:///{shop}")
    sync_engine = create_engine(f"sqlite:///{shop}")
    q = "select customer from orders where id = :id"

    async def orm_async(request: Request) -> PlainTextResponse:
        async with engine.connect() as conn:
            for i in range(3):
                await conn.execute(text(q), {"id": i})
        return PlainTextResponse("ok")

    def orm_sync(request: Request) -> PlainTextResponse:
        with sync_engine.connect() as conn:
            for i in range(2):
                conn.execute(text(q), {"id": i}).one()
        return PlainTextResponse("ok")

    async def driver(request: Request) -> PlainTextResponse:
        conn = sqlite3.connect(shop)
        conn.execute("select customer from orders where id = ?", (1,)).fetchone()
        conn.close()
        return PlainTextResponse("ok")

    seen = Seen()
    probe = make_probe(probes, seen)
    assert {"sqlalchemy", "sqlite3", "threads"} <= set(probe.installed)
    app = ProbeMiddleware(
        app_of(Route("/async", orm_async), Route("/sync", orm_sync), Route("/raw", driver)),
        probe=probe,
    )

    async def main() -> list[httpx.Response]:
        # the engines' first connections (and their set-up statements) outside a request
        async with engine.connect() as conn:
            await conn.execute(text("select 1"))
        try:
            return await drive(app, "/async", "/sync", "/raw")
        finally:
            await engine.dispose()

    with sync_engine.connect() as conn:
        conn.execute(text("select 1"))
    assert {r.status_code for r in run(main())} == {200}
    sync_engine.dispose()
    drivers = {c.path: [call.driver for call in c.db] for c in seen.costs}
    assert drivers["/async"] == ["sqlalchemy"] * 3
    assert drivers["/sync"] == ["sqlalchemy"] * 2
    assert drivers["/raw"] == ["sqlite3"]
    costs = {c.path: c for c in seen.costs}
    assert all(c.db_layer_depth == 0 for c in costs.values())
    assert costs["/async"].pool_checkouts == costs["/sync"].pool_checkouts == 1
    assert costs["/sync"].thread_run_s > 0


# -- sampling -------------------------------------------------------------------------------


def test_sampling_measures_a_share_of_requests_and_counts_the_rest(
    dependency: str, shop: str, run: Runner[Any], probes: list[Probe]
) -> None:
    """At ``sample=0.5`` with draws alternating under and over it, every other request is
    measured (its queries, backend call and loop steps); the others are only counted, and
    nothing of theirs is booked into any cost."""
    client = httpx.AsyncClient(base_url=dependency, timeout=5.0)

    async def order(request: Request) -> PlainTextResponse:
        conn = sqlite3.connect(shop)
        conn.execute("select customer from orders where id = ?", (1,)).fetchone()
        conn.close()
        await client.get("/shipping/1")
        await asyncio.sleep(0)
        return PlainTextResponse("ok")

    draws = iter([0.0, 0.9] * 10)
    seen = Seen()
    probe = install(detectors=[seen], sample=0.5, **NO_PG)
    probe._rng = lambda: next(draws)
    probes.append(probe)
    app = ProbeMiddleware(app_of(Route("/order", order)), probe=probe)

    async def main() -> list[httpx.Response]:
        try:
            return await drive(app, *["/order"] * 10)
        finally:
            await client.aclose()

    assert [r.text for r in run(main())] == ["ok"] * 10
    # /_warm drew 0.0 (measured); then the ten requests drew 0.9, 0.0, 0.9, ...
    measured = [c for c in seen.costs if c.path == "/order"]
    assert len(measured) == 5
    for cost in measured:
        assert (len(cost.db), len(cost.http)) == (1, 1)
        assert cost.steps >= 3
        assert cost.loop_busy_s > 0
    data = probe.to_dict()
    assert data["sample"] == 0.5
    assert data["unsampled"] == 5
    assert data["endpoints"]["GET /order"]["requests"] == 5
    # every request spent the process's CPU: the per-request CPU counts them all
    assert probe.ledger._cpu_booked == 10  # 11 requests, the first one starts the clock
    again = Ledger.from_dict(json.loads(json.dumps(data)))
    assert (again.sample, again.unsampled) == (0.5, 5)


def test_an_unsampled_request_runs_unwrapped_and_its_errors_and_cancellation_pass(
    run: Runner[Any], probes: list[Probe]
) -> None:
    """After its first step an unsampled request's task runs with no wrapper work (the
    monitor sees no running step) and the tasks it spawns are not wrapped, unlike a
    measured request's; what it raises, or a cancellation, reaches the caller as without
    the probe."""
    seen: list[tuple[bool, str]] = []  # (a timed step is running, the spawned task's code)
    hanging = asyncio.Event()
    probe = install(sample=0.5, **NO_PG)
    probes.append(probe)

    async def child() -> None:
        return None

    async def later(request: Request) -> PlainTextResponse:
        await asyncio.sleep(0)
        monitor = probe._monitor
        assert monitor is not None
        spawned = asyncio.get_running_loop().create_task(child())
        seen.append((monitor.step_t0 != 0.0, spawned.get_coro().cr_code.co_name))  # type: ignore[union-attr]
        await spawned
        if request.query_params.get("fail"):
            raise RuntimeError("boom")
        if request.query_params.get("hang"):
            hanging.set()
            await asyncio.sleep(3600)
        return PlainTextResponse("ok")

    app = ProbeMiddleware(app_of(Route("/later", later)), probe=probe)

    async def main() -> tuple[int, int, str, bool]:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            probe._rng = lambda: 0.0  # measured
            await client.get("/_warm")
            measured = await loop.create_task(client.get("/later"))
            probe._rng = lambda: 0.9  # left out from here on
            ok = await loop.create_task(client.get("/later"))
            try:
                await loop.create_task(client.get("/later?fail=1"))
                failed = ""
            except RuntimeError as exc:
                failed = str(exc)
            hung = loop.create_task(client.get("/later?hang=1"))
            await hanging.wait()
            hung.cancel()
            try:
                await hung
            except asyncio.CancelledError:
                return measured.status_code, ok.status_code, failed, True
            return measured.status_code, ok.status_code, failed, False

    assert run(main()) == (200, 200, "boom", True)
    assert seen == [(True, "_run"), (False, "child"), (False, "child"), (False, "child")]
    data = probe.to_dict()
    assert (data["unsampled"], data["endpoints"]["GET /later"]["requests"]) == (3, 1)


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, float("nan"), True, "0.5", None])
def test_sample_must_be_a_share_of_requests(bad: object) -> None:
    with pytest.raises(InvalidConfig, match="sample"):
        install(sample=bad, **NO_PG)  # type: ignore[arg-type]


def test_the_sampling_draw_must_be_callable() -> None:
    with pytest.raises(InvalidConfig, match="rng"):
        Probe(sample=0.5, rng=None)  # type: ignore[arg-type]
