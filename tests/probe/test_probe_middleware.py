"""ProbeMiddleware on purpose-built Starlette apps over a real SQLite file.

Each app has one inefficiency (or none); the apps run in process through
``httpx.ASGITransport``, so every test is fast and deterministic (no sleeps: the slow query
is a real recursive query SQLite takes tens of milliseconds to run).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from brownout.errors import InvalidConfig
from brownout.probe import (
    Finding,
    Probe,
    ProbeMiddleware,
    ProbeThresholds,
    RequestCost,
    install,
    path_template,
)

ONLY_DB = {"http": False, "loop": False, "threads": False, "asyncpg": False, "psycopg": False}


@pytest.fixture
def shop(tmp_path: Path) -> str:
    """A small shop database: 20 products, 200 reviews, users and settings."""
    path = str(tmp_path / "shop.db")
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        create table products(id integer primary key, name text);
        create table reviews(id integer primary key, product_id int, stars int);
        create table users(id integer primary key, name text);
        create table settings(key text primary key, value text);
        """
    )
    conn.executemany("insert into products values (?, ?)", [(i, f"p{i}") for i in range(20)])
    conn.executemany(
        "insert into reviews(product_id, stars) values (?, ?)",
        [(i % 20, i % 5) for i in range(200)],
    )
    conn.executemany("insert into users values (?, ?)", [(i, f"u{i}") for i in range(5)])
    conn.execute("insert into settings values ('theme', 'dark')")
    conn.commit()
    conn.close()
    return path


class Seen:
    """A detector that keeps every finished request's cost (and finds nothing)."""

    def __init__(self) -> None:
        self.costs: list[RequestCost] = []

    def __call__(self, cost: RequestCost) -> list[Finding]:
        self.costs.append(cost)
        return []


@pytest.fixture
def seen() -> Seen:
    return Seen()


def probe_for(seen: Seen | None = None, **thresholds: Any) -> Probe:
    return install(
        thresholds=ProbeThresholds(**thresholds) if thresholds else None,
        detectors=[seen] if seen is not None else [],
        **ONLY_DB,
    )


@pytest.fixture
def probes() -> Iterator[list[Probe]]:
    made: list[Probe] = []
    yield made
    for p in made:
        p.uninstall()


def drive(
    app: Any, *paths: str, client: tuple[str, int] = ("127.0.0.1", 5000)
) -> list[httpx.Response]:
    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as c:
            return [await c.get(p) for p in paths]

    return asyncio.run(main())


def kinds(probe: Probe) -> set[tuple[str, str]]:
    return {(f.endpoint, f.kind) for f in probe.findings()}


# -- one app per detector -----------------------------------------------------------------


def test_n_plus_one_app(shop: str, probes: list[Probe], seen: Seen) -> None:
    async def products(request: Request) -> JSONResponse:
        conn = sqlite3.connect(shop)
        out = []
        for pid, name in conn.execute("select id, name from products order by id").fetchall():
            stars = conn.execute(
                "SELECT stars FROM reviews WHERE product_id = ?", (pid,)
            ).fetchall()  # the N+1
            out.append({"id": pid, "name": name, "reviews": len(stars)})
        conn.close()
        return JSONResponse(out)

    probe = probe_for(seen, n_plus_one_min_total_s=0.0)
    probes.append(probe)
    app = ProbeMiddleware(Starlette(routes=[Route("/products", products)]), probe=probe)
    (r,) = drive(app, "/products")
    assert r.status_code == 200
    (cost,) = seen.costs
    assert len(cost.db) == 21
    assert all(c.driver == "sqlite3" for c in cost.db)
    assert cost.db[1].rows == 10  # fetchall counted the rows
    (finding,) = probe.findings()
    assert (finding.kind, finding.endpoint) == ("n_plus_one_db", "GET /products")
    assert finding.key == "select stars from reviews where product_id = ?"
    assert finding.evidence["calls"] == 20
    site = str(finding.evidence["site"])
    assert site.startswith("tests/probe/test_probe_middleware.py:")
    assert site.endswith("in products")


def test_duplicate_query_app(shop: str, probes: list[Probe]) -> None:
    def user(conn: sqlite3.Connection, uid: int) -> Any:
        return conn.execute("select * from users where id = ?", (uid,)).fetchone()

    async def me(request: Request) -> JSONResponse:
        conn = sqlite3.connect(shop)
        current = user(conn, 1)  # once for the auth check ...
        profile = user(conn, 1)  # ... and again for the page
        conn.close()
        return JSONResponse({"a": current[1], "b": profile[1]})

    probe = probe_for()
    probes.append(probe)
    drive(ProbeMiddleware(Starlette(routes=[Route("/me", me)]), probe=probe), "/me", "/me")
    (finding,) = probe.findings()
    assert finding.kind == "duplicate_query"
    assert finding.occurrences == 2
    assert finding.evidence["calls"] == 2
    assert "in user" in str(finding.evidence["site"])


def test_slow_query_app(shop: str, probes: list[Probe]) -> None:
    async def report(request: Request) -> JSONResponse:
        conn = sqlite3.connect(shop)
        (n,) = conn.execute(
            "with recursive c(x) as (select 1 union all select x + 1 from c where x < ?) "
            "select count(*) from c",
            (50_000,),
        ).fetchone()
        conn.close()
        return JSONResponse({"n": n})

    probe = probe_for(slow_query_s=0.005, site_capture_s=0.005)
    probes.append(probe)
    drive(ProbeMiddleware(Starlette(routes=[Route("/report", report)]), probe=probe), "/report")
    (finding,) = probe.findings()
    assert finding.kind == "slow_query"
    assert float(finding.evidence["duration_ms"]) >= 5  # type: ignore[arg-type]
    assert "in report" in str(finding.evidence["site"])
    assert "index" in finding.fix


def test_cache_candidate_app(shop: str, probes: list[Probe]) -> None:
    async def home(request: Request) -> JSONResponse:
        conn = sqlite3.connect(shop)
        (theme,) = conn.execute("select value from settings where key = ?", ("theme",)).fetchone()
        conn.close()
        return JSONResponse({"theme": theme})

    probe = probe_for()
    probes.append(probe)
    app = ProbeMiddleware(Starlette(routes=[Route("/", home)]), probe=probe)
    drive(app, *["/"] * 9)
    assert probe.findings() == []  # not before cache_candidate_min_requests
    drive(app, "/")
    (finding,) = probe.findings()
    assert finding.kind == "cache_candidate"
    assert finding.evidence["share"] == 1.0
    assert "brownout.Cache" in finding.fix


def test_large_uncompressed_response_app(probes: list[Probe]) -> None:
    async def export(request: Request) -> JSONResponse:
        return JSONResponse([{"id": i, "name": "x" * 40} for i in range(3000)])

    probe = probe_for()
    probes.append(probe)
    routes = [Route("/export", export)]
    (r,) = drive(ProbeMiddleware(Starlette(routes=routes), probe=probe), "/export")
    (finding,) = probe.findings()
    assert (finding.kind, finding.key) == ("large_response", "uncompressed")
    assert finding.evidence["bytes"] == len(r.content)

    gzipped = probe_for()
    probes.append(gzipped)
    app = ProbeMiddleware(
        Starlette(routes=routes, middleware=[Middleware(GZipMiddleware)]), probe=gzipped
    )
    (r,) = drive(app, "/export")
    assert gzipped.findings() == []
    stats = gzipped.ledger.endpoints["GET /export"]
    assert 0 < stats.demand("response_bytes").total < len(r.content)  # compressed bytes


def test_clean_app_has_no_findings(shop: str, probes: list[Probe]) -> None:
    """Distinct queries, one IN query instead of a loop, small responses, SQLAlchemy in a
    sync endpoint (thread pool) and sqlite3 in an async one: nothing to report."""
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{shop}")

    def product_page(request: Request) -> JSONResponse:  # sync: runs in the thread pool
        pid = request.path_params["pid"]
        with engine.connect() as conn:
            product = conn.execute(text("select * from products where id = :id"), {"id": pid}).one()
            reviews = conn.execute(
                text("select * from reviews where product_id = :id"), {"id": pid}
            ).all()
        return JSONResponse({"name": product.name, "reviews": len(reviews)})

    async def listing(request: Request) -> JSONResponse:
        conn = sqlite3.connect(shop)
        ids = [row[0] for row in conn.execute("select id from products order by id limit 10")]
        marks = ",".join("?" * len(ids))
        counts = conn.execute(
            f"select product_id, count(*) from reviews where product_id in ({marks}) "
            "group by product_id",
            ids,
        ).fetchall()
        conn.close()
        return JSONResponse({"counts": counts})

    probe = probe_for()
    probes.append(probe)
    app = ProbeMiddleware(
        Starlette(routes=[Route("/p/{pid:int}", product_page), Route("/", listing)]), probe=probe
    )
    drive(app, *[f"/p/{i}" for i in range(15)], *["/"] * 3)  # no hot key
    engine.dispose()
    assert probe.findings() == []
    page = probe.ledger.endpoints["GET /p/{pid}"]
    assert page.requests == 15
    assert page.demand("db_calls").percentile(50) == 2  # SQLAlchemy only: no double count
    assert page.demand("pool_checkouts").total == 15
    assert page.demand("pool_hold_s").total > 0


def test_concurrent_requests_get_their_own_costs(
    shop: str, probes: list[Probe], seen: Seen
) -> None:
    async def queries(request: Request) -> PlainTextResponse:
        n = int(request.query_params["n"])
        conn = sqlite3.connect(shop)
        for i in range(n):
            conn.execute("select name from products where id = ?", (i,)).fetchone()
            await asyncio.sleep(0)  # let the other request run in between
        conn.close()
        return PlainTextResponse("x" * n)

    probe = probe_for(seen)
    probes.append(probe)
    app = ProbeMiddleware(Starlette(routes=[Route("/q", queries)]), probe=probe)

    async def main() -> None:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as c:
            await asyncio.gather(c.get("/q?n=3"), c.get("/q?n=7"))

    asyncio.run(main())
    by_size = {c.response_bytes: c for c in seen.costs}
    assert sorted(by_size) == [3, 7]
    assert len(by_size[3].db) == 3
    assert len(by_size[7].db) == 7
    first3, last3 = by_size[3].db[0].started_s, by_size[3].db[-1].started_s
    assert any(first3 < c.started_s < last3 for c in by_size[7].db)  # they did interleave
    demand = probe.ledger.endpoints["GET /q"].demand("db_calls")
    assert (demand.count, demand.total, demand.max) == (2, 10, 7)


# -- endpoint naming ----------------------------------------------------------------------


def test_route_templates_mounts_and_unmatched(probes: list[Probe]) -> None:
    async def item(request: Request) -> PlainTextResponse:
        return PlainTextResponse("item")

    inner = Starlette(routes=[Route("/items/{item_id:int}", item)])
    app = Starlette(routes=[Route("/items/{item_id:int}", item), Mount("/v1/{tenant}", app=inner)])
    probe = probe_for()
    probes.append(probe)
    drive(
        ProbeMiddleware(app, probe=probe),
        "/items/3",
        "/v1/acme/items/4",
        "/v1/42/items/5",
        "/nope/7",
    )
    assert sorted(probe.ledger.endpoints) == [
        "GET (unmatched)",
        "GET /items/{item_id}",
        "GET /v1/acme/items/{item_id}",
        "GET /v1/{id}/items/{item_id}",
    ]


def test_raw_asgi_apps_get_ids_collapsed(probes: list[Probe]) -> None:
    async def raw(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    probe = probe_for()
    probes.append(probe)
    uid = "6f1c2a4e-8b7d-4c3e-9a2b-1d2e3f4a5b6c"
    drive(ProbeMiddleware(raw, probe=probe), "/users/17", f"/users/{uid}/orders/deadbeefdeadbeef00")
    assert sorted(probe.ledger.endpoints) == ["GET /users/{id}", "GET /users/{id}/orders/{id}"]


def test_path_template() -> None:
    assert path_template("/users/17/posts") == "/users/{id}/posts"
    assert path_template("/v2/items") == "/v2/items"
    assert path_template("/a/0123456789abcdef") == "/a/{id}"
    assert path_template("/a/cafe") == "/a/cafe"
    assert path_template("/") == "/"


# -- behaviour ----------------------------------------------------------------------------


def test_errors_are_recorded_and_re_raised(probes: list[Probe]) -> None:
    async def boom(request: Request) -> Response:
        raise RuntimeError("boom")

    probe = probe_for()
    probes.append(probe)
    app = ProbeMiddleware(Starlette(routes=[Route("/boom", boom)]), probe=probe)
    with pytest.raises(RuntimeError, match="boom"):
        drive(app, "/boom")
    stats = probe.ledger.endpoints["GET /boom"]
    assert stats.statuses == {500: 1}
    assert stats.errors == 1


def test_lifespan_and_websocket_scopes_pass_through(probes: list[Probe]) -> None:
    calls: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["type"])

    probe = probe_for()
    probes.append(probe)
    mw = ProbeMiddleware(app, probe=probe)
    asyncio.run(mw({"type": "lifespan"}, None, None))  # type: ignore[arg-type]
    asyncio.run(mw({"type": "websocket", "path": "/ws"}, None, None))  # type: ignore[arg-type]
    assert calls == ["lifespan", "websocket"]
    assert probe.ledger.endpoints == {}


def test_ledger_is_served_to_loopback_only(probes: list[Probe]) -> None:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hi")

    probe = probe_for()
    probes.append(probe)
    app = ProbeMiddleware(
        Starlette(routes=[Route("/", hello)]), probe=probe, ledger_path="/_brownout/ledger"
    )
    _, r = drive(app, "/", "/_brownout/ledger")
    assert r.status_code == 200
    doc = r.json()
    assert doc["schema"] == "brownout.ledger"
    assert list(doc["endpoints"]) == ["GET /"]  # the ledger path itself is not measured
    (denied,) = drive(app, "/_brownout/ledger", client=("10.1.2.3", 4000))
    assert denied.status_code == 403
    assert "loopback" in json.loads(denied.content)["error"]


def test_a_failing_detector_never_fails_the_request(probes: list[Probe]) -> None:
    def broken(cost: RequestCost) -> list[Finding]:
        raise ValueError("bug in a detector")

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hi")

    probe = install(detectors=[broken], **ONLY_DB)
    probes.append(probe)
    (r,) = drive(ProbeMiddleware(Starlette(routes=[Route("/", hello)]), probe=probe), "/")
    assert r.status_code == 200
    assert probe.detector_errors == 1
    assert probe.ledger.endpoints["GET /"].requests == 1


def test_bad_arguments() -> None:
    with pytest.raises(InvalidConfig, match="ledger_path"):
        ProbeMiddleware(lambda *a: None, probe=Probe(), ledger_path="ledger")  # type: ignore[arg-type]
    with pytest.raises(InvalidConfig, match="probe"):
        ProbeMiddleware(lambda *a: None, probe="yes")  # type: ignore[arg-type]
