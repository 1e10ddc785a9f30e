"""Database hooks against the real drivers: sqlite3, SQLAlchemy (sync, async), asyncpg,
psycopg. Each test activates a RequestCost by hand, as the middleware would."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from time import perf_counter

import pytest

from brownout.probe import Probe, RequestCost, activate, current_cost, deactivate, install

HERE = "tests/probe/test_db.py:"


@pytest.fixture
def probe() -> Iterator[Probe]:
    p = install(http=False, loop=False, threads=False)
    yield p
    p.uninstall()


def new_cost() -> RequestCost:
    return RequestCost("GET", "/t", perf_counter(), route="/t")


@pytest.fixture
def db_file(tmp_path: Path) -> str:
    path = str(tmp_path / "t.db")
    conn = sqlite3.connect(path)
    conn.execute("create table t(id integer primary key, name text)")
    conn.executemany("insert into t values (?, ?)", [(i, f"n{i}") for i in range(50)])
    conn.commit()
    conn.close()
    return path


# -- sqlite3 ------------------------------------------------------------------------------


def test_sqlite3_direct_records_every_statement_without_changing_results(
    probe: Probe, db_file: str
) -> None:
    conn = sqlite3.connect(db_file)
    conn.row_factory = sqlite3.Row
    cost = new_cost()
    token = activate(cost)
    try:
        rows = conn.execute("select * from t where id < ?", (5,)).fetchall()
        cur = conn.cursor()
        assert cur.execute("select name from t where id = ?", (3,)) is cur
        assert cur.fetchone()["name"] == "n3"
        conn.executemany("insert into t(name) values (?)", [("a",), ("b",)])
        conn.executescript("create table u(x); drop table u;")
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            conn.execute("select * from missing")
    finally:
        deactivate(token)
        conn.close()
    assert [r["id"] for r in rows] == [0, 1, 2, 3, 4]
    assert isinstance(conn, sqlite3.Connection)
    drivers = {c.driver for c in cost.db}
    assert drivers == {"sqlite3"}
    fps = [c.fingerprint for c in cost.db]
    assert fps == [
        "select * from t where id < ?",
        "select name from t where id = ?",
        "insert into t(name) values (?...)",
        "create table u(x); drop table u;",
        "select * from missing",
    ]
    assert cost.db[0].rows == 5
    assert cost.db[2].rows == 2
    assert cost.db[4].error == "OperationalError"
    assert cost.db[0].database == f"sqlite:{db_file}"
    assert cost.db[0].params_key != cost.db[1].params_key


def test_nothing_is_recorded_outside_a_request(probe: Probe, db_file: str) -> None:
    assert current_cost() is None
    conn = sqlite3.connect(db_file)
    assert conn.execute("select count(*) from t").fetchone() == (50,)
    conn.close()


def test_sqlite3_custom_connection_factory_is_kept(probe: Probe, db_file: str) -> None:
    class Mine(sqlite3.Connection):
        mine = True

    conn = sqlite3.connect(db_file, factory=Mine)
    cost = new_cost()
    token = activate(cost)
    try:
        conn.execute("select 1").fetchall()
    finally:
        deactivate(token)
        conn.close()
    assert isinstance(conn, Mine)
    assert len(cost.db) == 1


def test_site_is_captured_on_the_first_repeat(probe: Probe, db_file: str) -> None:
    conn = sqlite3.connect(db_file)
    cost = new_cost()
    token = activate(cost)
    try:
        for i in range(3):
            conn.execute("select name from t where id = ?", (i,)).fetchone()
    finally:
        deactivate(token)
        conn.close()
    sites = [c.site for c in cost.db]
    assert sites[0] is None
    assert sites[2] is None
    assert sites[1] is not None
    assert sites[1].startswith(HERE)
    assert cost.db_seen == {"select name from t where id = ?": 3}


# -- SQLAlchemy ---------------------------------------------------------------------------


def test_sqlalchemy_sync_records_once_with_pool_figures(probe: Probe, db_file: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    engine = create_engine(f"sqlite:///{db_file}", pool_size=2, max_overflow=1)
    with engine.connect() as conn:  # the dialect's first-connect queries, outside a request
        conn.execute(text("select 1"))
    cost = new_cost()
    token = activate(cost)
    try:
        with engine.connect() as conn:
            names = conn.execute(text("select name from t where id in (1, 2)")).scalars().all()
            conn.execute(text("select name from t where id = :id"), {"id": 7}).one()
            with pytest.raises(OperationalError):
                conn.execute(text("select * from missing"))
    finally:
        deactivate(token)
        engine.dispose()
    assert names == ["n1", "n2"]
    assert [c.driver for c in cost.db] == ["sqlalchemy"] * 3  # the sqlite3 hook stayed quiet
    assert cost.db[0].fingerprint == "select name from t where id in (?...)"
    assert cost.db[0].rows == 2  # rows fetched after execute were added by the sqlite3 hook
    assert cost.db[2].error == "OperationalError"
    assert cost.db_layer_depth == 0
    assert cost.pool_checkouts == 1
    assert cost.pool_hold_s > 0
    assert cost.pool_wait_s > 0
    pools = probe.to_dict()["capacity"]["pools"]["sqlalchemy"]
    assert pools[f"sqlite:{db_file}"] == {
        "pool": "QueuePool",
        "pool_size": 2,
        "max_overflow": 1,
        "pool_timeout_s": 30.0,
    }


def test_sqlalchemy_async_site_and_pool_wait(probe: Probe, db_file: str) -> None:
    pytest.importorskip("aiosqlite")
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    async def main() -> tuple[RequestCost, RequestCost, float]:
        engine = create_async_engine(f"sqlite+aiosqlite:///{db_file}", pool_size=1, max_overflow=0)
        async with engine.connect() as conn:
            await conn.execute(text("select 1"))
        holding = asyncio.Event()
        waiting = asyncio.Event()
        waiting_since: list[float] = []

        async def holder() -> RequestCost:
            cost = new_cost()
            activate(cost)
            async with engine.connect() as conn:
                for i in range(2):
                    await conn.execute(text("select name from t where id = :id"), {"id": i})
                holding.set()
                await waiting.wait()
                for _ in range(300):  # let the waiter block on the pool for a while
                    await asyncio.sleep(0)
                released_at.append(perf_counter())
            return cost

        async def waiter() -> RequestCost:
            cost = new_cost()
            activate(cost)
            await holding.wait()
            waiting_since.append(perf_counter())
            waiting.set()
            async with engine.connect() as conn:
                await conn.execute(text("select 2"))
            return cost

        released_at: list[float] = []
        a, b = await asyncio.gather(holder(), waiter())
        await engine.dispose()
        return a, b, released_at[0] - waiting_since[0]

    a, b, blocked_s = asyncio.run(main())
    assert [c.driver for c in a.db] == ["sqlalchemy", "sqlalchemy"]
    site = a.db[1].site
    assert site is not None
    assert site.startswith(HERE)
    assert site.endswith("in holder")
    assert len(b.db) == 1
    assert b.pool_wait_s >= blocked_s * 0.5
    assert a.pool_hold_s > 0


# -- PostgreSQL ---------------------------------------------------------------------------


@pytest.mark.postgres
def test_asyncpg_connection_and_pool(probe: Probe, postgres_url: str) -> None:
    asyncpg = pytest.importorskip("asyncpg")

    async def main() -> RequestCost:
        cost = new_cost()
        activate(cost)
        conn = await asyncpg.connect(postgres_url)
        try:
            assert await conn.fetchval("select $1::int + 1", 1) == 2
            rows = await conn.fetch("select generate_series(1, $1::int)", 3)
            assert len(rows) == 3
            assert await conn.execute("select 1") == "SELECT 1"
            with pytest.raises(asyncpg.UndefinedTableError):
                await conn.fetch("select * from brownout_missing_table")
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(postgres_url, min_size=1, max_size=3)
        try:
            async with pool.acquire() as pc:
                await pc.fetchrow("select 1")
            await pool.fetchval("select 2")
        finally:
            await pool.close()
        return cost

    cost = asyncio.run(main())
    assert [c.driver for c in cost.db] == ["asyncpg"] * 6  # pool reset statements not counted
    assert cost.db[0].fingerprint == "select ?::int + ?"
    assert cost.db[1].rows == 3
    assert cost.db[3].error == "UndefinedTableError"
    assert cost.db[0].database.startswith("postgresql:127.0.0.1:5432/")
    assert cost.pool_checkouts == 2
    assert cost.pool_hold_s > 0
    assert probe.to_dict()["capacity"]["pools"]["asyncpg"]
    caps = next(iter(probe.to_dict()["capacity"]["pools"]["asyncpg"].values()))
    assert (caps["min_size"], caps["max_size"]) == (1, 3)


@pytest.mark.postgres
def test_psycopg_sync_and_async(probe: Probe, postgres_url: str) -> None:
    psycopg = pytest.importorskip("psycopg")
    from psycopg import sql

    cost = new_cost()
    token = activate(cost)
    try:
        with psycopg.connect(postgres_url) as conn:
            assert conn.execute("select %s::int * 2", (21,)).fetchone() == (42,)
            with conn.cursor() as cur:
                cur.execute(sql.SQL("select {}").format(sql.Literal(5)))
                cur.executemany("select %s", [(1,), (2,)])
    finally:
        deactivate(token)

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(postgres_url) as aconn:
            cur = await aconn.execute("select %(x)s::text", {"x": "a"})
            assert await cur.fetchone() == ("a",)

    token = activate(cost)
    try:
        asyncio.run(main())
    finally:
        deactivate(token)
    fps = [(c.driver, c.fingerprint) for c in cost.db]
    assert fps == [
        ("psycopg", "select ?::int * ?"),
        ("psycopg", "select ?"),
        ("psycopg", "select ?"),
        ("psycopg", "select ?::text"),
    ]


@pytest.mark.postgres
def test_sqlalchemy_over_asyncpg_never_double_counts(probe: Probe, postgres_url: str) -> None:
    pytest.importorskip("asyncpg")
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    url = postgres_url.replace("postgresql://", "postgresql+asyncpg://")

    async def main() -> RequestCost:
        engine = create_async_engine(url)
        async with engine.connect() as conn:
            await conn.execute(text("select 1"))
        cost = new_cost()
        activate(cost)
        async with engine.connect() as conn:
            for i in range(3):
                await conn.execute(text("select cast(:x as int)"), {"x": i})
        await engine.dispose()
        return cost

    cost = asyncio.run(main())
    statements = [c for c in cost.db if c.fingerprint.startswith("select")]
    assert [c.driver for c in statements] == ["sqlalchemy"] * 3
    others = {c.fingerprint for c in cost.db if c.driver == "asyncpg"}
    assert others <= {"begin;", "rollback;", "commit;"}  # transaction control, once each
    assert cost.db_layer_depth == 0


def test_aiosqlite_connections_keep_plain_cursors(probe: Probe, db_file: str) -> None:
    """aiosqlite runs statements in a thread with no request context, where the sqlite3
    hook could book nothing: its connections are left unwrapped, while a connection
    opened directly in the same process is timed."""
    aiosqlite = pytest.importorskip("aiosqlite")

    async def main() -> tuple[type, type]:
        async with aiosqlite.connect(db_file) as conn, conn.execute("select 1") as cur:
            await cur.fetchall()
            return type(conn._conn), type(cur._cursor)

    conn_type, cursor_type = asyncio.run(main())
    assert conn_type is sqlite3.Connection
    assert cursor_type is sqlite3.Cursor
    direct = sqlite3.connect(db_file)
    try:
        assert type(direct) is not sqlite3.Connection
        assert type(direct.cursor()) is not sqlite3.Cursor
    finally:
        direct.close()


def test_connect_from_code_without_a_module_name_is_timed(probe: Probe, db_file: str) -> None:
    """``exec`` with bare globals has no ``__name__``: the hook still wraps the connection
    (and never fails the call)."""
    scope: dict[str, object] = {"sqlite3": sqlite3, "path": db_file}
    exec("conn = sqlite3.connect(path)", scope)
    conn = scope["conn"]
    assert isinstance(conn, sqlite3.Connection)
    try:
        assert type(conn) is not sqlite3.Connection
    finally:
        conn.close()
