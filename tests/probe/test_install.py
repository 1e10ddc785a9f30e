"""install() / uninstall(): idempotent, reference-counted, leaves the drivers as they were."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from brownout.errors import InvalidConfig
from brownout.probe import HOOKS, Probe, ProbeThresholds, install


def originals() -> dict[str, Any]:
    """The library attributes the probe patches, as they are now."""
    import sqlite3.dbapi2

    import asyncpg.connection
    import asyncpg.pool
    import psycopg
    from sqlalchemy import pool as sa_pool
    from sqlalchemy.engine.default import DefaultDialect

    found: dict[str, Any] = {
        "DefaultDialect.do_execute": DefaultDialect.__dict__["do_execute"],
        "DefaultDialect.do_executemany": DefaultDialect.__dict__["do_executemany"],
        "DefaultDialect.do_execute_no_params": DefaultDialect.__dict__["do_execute_no_params"],
        "sqlite3.connect": sqlite3.connect,
        "sqlite3.dbapi2.connect": sqlite3.dbapi2.connect,
        "Pool.connect": sa_pool.Pool.__dict__["connect"],
        "SingletonThreadPool.connect": sa_pool.SingletonThreadPool.__dict__["connect"],
        "asyncpg.Pool._acquire": asyncpg.pool.Pool.__dict__["_acquire"],
        "asyncpg.Pool.release": asyncpg.pool.Pool.__dict__["release"],
    }
    for name in ("execute", "executemany", "fetch", "fetchrow", "fetchval", "fetchmany"):
        found[f"asyncpg.{name}"] = asyncpg.connection.Connection.__dict__[name]
    for cls in (psycopg.Cursor, psycopg.AsyncCursor, psycopg.ServerCursor):
        for name in ("execute", "executemany"):
            if name in cls.__dict__:
                found[f"{cls.__name__}.{name}"] = cls.__dict__[name]
    return found


def pool_listeners() -> int:
    """How many listeners a pool has on the events the probe uses."""
    from sqlalchemy import create_engine

    engine = create_engine("sqlite://")
    try:
        return len(engine.pool.dispatch.checkout) + len(engine.pool.dispatch.checkin)
    finally:
        engine.dispose()


def engine_events() -> bool:
    """Whether SQLAlchemy's engines run their (slower) event path: the probe must not
    switch it on, since SQLAlchemy never switches it off again."""
    from sqlalchemy.engine import Engine

    return bool(Engine._has_events)


def test_uninstall_restores_every_driver() -> None:
    before = originals()
    listeners = pool_listeners()
    events = engine_events()
    probe = install(http=False, loop=False, threads=False)
    assert set(probe.installed) == {"sqlalchemy", "sqlite3", "asyncpg", "psycopg"}
    during = originals()
    assert all(during[k] is not before[k] for k in before), [
        k for k in before if during[k] is before[k]
    ]
    assert pool_listeners() == listeners + 2
    assert engine_events() is events
    probe.uninstall()
    assert originals() == before
    assert pool_listeners() == listeners
    probe.uninstall()  # idempotent
    assert originals() == before


def test_install_is_idempotent_and_reference_counted(tmp_path: Any) -> None:
    before = originals()
    first = install(http=False, loop=False, threads=False)
    patched = originals()
    second = install(http=False, loop=False, threads=False)
    assert originals() == patched  # nothing patched twice
    first.uninstall()
    assert originals() == patched  # the second probe still holds the hooks
    conn = sqlite3.connect(str(tmp_path / "x.db"))
    assert type(conn) is not sqlite3.Connection
    conn.close()
    second.uninstall()
    assert originals() == before


def test_choosing_hooks() -> None:
    before = originals()
    with install(
        sqlalchemy=False, asyncpg=False, psycopg=False, http=False, loop=False, threads=False
    ) as probe:
        assert probe.installed == ("sqlite3",)
        now = originals()
        assert now["sqlite3.connect"] is not before["sqlite3.connect"]
        assert now["asyncpg.fetch"] is before["asyncpg.fetch"]
    assert originals() == before


def test_hooks_of_modules_not_written_yet_are_reported_not_fatal() -> None:
    with install() as probe:
        for name in HOOKS:
            assert name in probe.installed or name in probe.skipped


def test_a_bare_probe_installs_nothing() -> None:
    before = originals()
    probe = Probe()
    assert probe.installed == ()
    assert originals() == before
    assert "Probe(installed=()" in repr(probe)


def test_probe_arguments_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidConfig, match="thresholds"):
        Probe(thresholds={"slow_query_s": 1})  # type: ignore[arg-type]
    with pytest.raises(InvalidConfig, match="processes"):
        Probe(processes=0)
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    assert Probe().to_dict()["capacity"]["processes"] == 4
    assert Probe(processes=2, thresholds=ProbeThresholds()).processes == 2
