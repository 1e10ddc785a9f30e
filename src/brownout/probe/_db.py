"""Database hooks: every statement a request sends, recorded as a :class:`DbCall`.

Each ``install_*`` function instruments one library and returns ``(undo, state)``; the
probe's ``install()`` calls them through a reference count kept on the patched library, so
installing twice patches once and the last ``uninstall`` restores the originals. Every hook
records into :func:`~brownout.probe._cost.current_cost` and records nothing when there is no
current request (start-up, background jobs) or when the ORM layer above it already records
the statement (``cost.db_layer_depth > 0``). Hooks never change what the library returns
or raises: a failed statement is recorded with ``error`` set and the exception re-raised
unchanged.

Where each library is hooked:

- **SQLAlchemy** (sync and async engines): the dialect's ``do_execute``,
  ``do_executemany`` and ``do_execute_no_params`` are wrapped on ``DefaultDialect`` and on
  every dialect class loaded at ``install()`` that overrides them. Every engine is covered,
  including engines created before ``install()`` and an ``AsyncEngine`` (through its sync
  engine); statement, parameters, cursor and execution context are the ones
  ``before_cursor_execute``/``after_cursor_execute`` would see. Not the engine events
  themselves, on purpose: one class-level ``Engine`` listener, even a no-op, switches
  every connection to SQLAlchemy's event path, measured at +9-10 us per statement (a
  quarter of SQLAlchemy's own cost for a simple SQLite query), and SQLAlchemy never
  switches it back off (``Engine._has_events`` stays true after ``event.remove``), so the
  probe could not be uninstalled cleanly. Limit: a dialect module imported after
  ``install()`` that overrides ``do_executemany`` (mysqldb, pyodbc, cx_oracle, psycopg2)
  is not timed for ``executemany``. Pool hold time from class-level ``checkout``/``checkin``
  listeners on :class:`sqlalchemy.pool.Pool` (pool events cost only per checkout and
  leave no flag behind); pool wait time by wrapping ``Pool.connect`` (and
  ``SingletonThreadPool.connect``): it covers waiting for a free connection and opening a
  new one, so ``pool_wait_s`` is "time to get a connection". Each engine's pool settings
  (size, max_overflow, timeout) are noted for the ledger the first time a request uses
  it. The statement time runs from the driver's ``cursor.execute`` call to its return:
  rows fetched afterwards are not included, except on SQLite through the sqlite3 hook
  below.
- **sqlite3** used directly: ``sqlite3.connect`` (and ``sqlite3.dbapi2.connect``) is
  wrapped to pass a ``factory=`` :class:`sqlite3.Connection` subclass whose ``execute``,
  ``executemany``, ``executescript`` and ``cursor`` return a timed cursor subclass
  (``execute``/``executemany`` timed, ``fetchone``/``fetchmany``/``fetchall`` time added to
  the statement). Limits: the methods of ``sqlite3.Connection`` are C methods that cannot be
  patched, so only connections opened through the module attribute after ``install()``
  are seen (not ``from sqlite3 import connect`` bound earlier, not ``_sqlite3``); a
  user-supplied connection ``factory`` is subclassed, a user-supplied cursor ``factory``
  is not timed; rows read by iterating the cursor are not timed; the connection's type is
  a subclass (``isinstance`` still holds, ``type(conn) is sqlite3.Connection`` does not).
  Connections that aiosqlite opens are left as they are: it runs their statements in a
  thread that never carries a request's context, so there is nothing to book there
  (SQLAlchemy's layer times them; aiosqlite used without SQLAlchemy is not seen).
- **asyncpg**: ``Connection.execute``, ``executemany``, ``fetch``, ``fetchrow``,
  ``fetchval``, ``fetchmany`` (pool connections proxy to these), and ``Pool._acquire`` /
  ``Pool.release`` for pool wait and hold time and each pool's min/max size.
- **psycopg 3**: ``execute``/``executemany`` of ``Cursor``, ``AsyncCursor`` and the server
  cursors (class patching, so every connection and cursor factory is covered).

Call sites (``DbCall.site``) cost a stack walk, so they are captured only for a statement
at least ``site_capture_s`` slow and for the second call of a fingerprint in a request
(the example a repeated-query finding shows). In async SQLAlchemy the hook runs in a
greenlet; the site is then looked up in the awaiting greenlet's stack.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import weakref
from collections.abc import Callable
from time import perf_counter
from types import FrameType
from typing import Any

from ._cost import DbCall, RequestCost, _current, call_site
from ._sql import Fingerprinter, params_key

__all__ = [
    "DbState",
    "db_label",
    "install_asyncpg",
    "install_psycopg",
    "install_sqlalchemy",
    "install_sqlite3",
]

Undo = Callable[[], None]


class DbState:
    """What the hooks of one library share: whether they are active, the fingerprint cache,
    when to capture a call site, and the capacity settings seen (``{label: {...}}``)."""

    __slots__ = ("active", "capacity", "fingerprint", "fingerprints", "site_capture_s")

    def __init__(self, site_capture_s: float, fingerprinter: Fingerprinter | None = None) -> None:
        self.active = True
        self.fingerprint = fingerprinter if fingerprinter is not None else Fingerprinter()
        self.fingerprints = self.fingerprint.cache  # read directly on the hot path
        self.site_capture_s = site_capture_s
        self.capacity: dict[str, dict[str, object]] = {}


def db_label(backend: str, host: object, port: object, database: object) -> str:
    """``"postgresql:127.0.0.1:5432/shop"``, or ``"sqlite:shop.db"`` when there is no host."""
    if host:
        where = f"{host}:{port}" if port else str(host)
        return f"{backend}:{where}/{database or ''}"
    return f"{backend}:{database or ''}"


def _unique(taken: dict[str, Any], label: str) -> str:
    """``label``, or ``label#2``, ``label#3``... when another pool already has it."""
    key = label
    n = 2
    while key in taken:
        key = f"{label}#{n}"
        n += 1
    return key


def _site() -> str | None:
    site = call_site(sys._getframe(1))
    if site is None:
        # async SQLAlchemy runs the sync layer in a greenlet: the application is in the
        # stack of the greenlet that awaits it
        greenlet = sys.modules.get("greenlet")
        if greenlet is not None:
            parent = greenlet.getcurrent().parent
            frame = getattr(parent, "gr_frame", None)
            if frame is not None:
                site = call_site(frame)
    return site


def _record(  # noqa: PLR0917 - positional on purpose: once per statement
    state: DbState,
    cost: RequestCost,
    driver: str,
    sql: str,
    params: object,
    started_s: float,
    duration_s: float,
    rows: int | None,
    database: str,
    error: str | None,
    many: bool,
) -> DbCall:
    fp = state.fingerprints.get(sql)
    if fp is None:
        fp = state.fingerprint(sql)
    seen = cost.db_seen
    if seen is None:
        seen = cost.db_seen = {}
    n = seen.get(fp, 0) + 1
    seen[fp] = n
    site = _site() if (n == 2 or duration_s >= state.site_capture_s) else None
    if many:
        # a batch: hashed when small, else unique (two big batches are not "the same")
        small = isinstance(params, list | tuple) and len(params) <= 64
        pkey = params_key(params) if small else f"many:{started_s!r}"
    else:
        pkey = params_key(params)
    call = DbCall(
        driver,
        fp,
        pkey,
        duration_s,
        started_s,
        rows,
        site,
        database,
        error,
    )
    cost.db.append(call)
    return call


def _text(query: object, context: object = None) -> str:
    if isinstance(query, str):
        return query
    if isinstance(query, bytes | bytearray | memoryview):
        return bytes(query).decode("utf-8", "replace")
    as_string = getattr(query, "as_string", None)  # psycopg.sql.Composable
    if as_string is not None:
        try:
            return str(as_string(context))
        except Exception:
            pass
    return repr(query)


# -- SQLAlchemy -------------------------------------------------------------------------

_SA_KEY = "_brownout_probe"
_SA_METHODS = ("do_execute", "do_executemany", "do_execute_no_params")


def _subclasses(cls: type[Any]) -> list[type[Any]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_subclasses(sub))
    return found


def install_sqlalchemy(site_capture_s: float) -> tuple[Undo, DbState]:
    """Wrap the dialects' ``do_execute*`` methods and listen on every pool (rules in the
    module docstring). Raises ImportError when SQLAlchemy is not installed."""
    from sqlalchemy import event
    from sqlalchemy import pool as sa_pool
    from sqlalchemy.engine.default import DefaultDialect

    state = DbState(site_capture_s)
    pools: set[int] = set()  # pools whose settings are noted

    def engine_label(engine: Any) -> str:
        url = engine.url
        label = db_label(url.get_backend_name(), url.host, url.port, url.database)
        pool = engine.pool
        if id(pool) not in pools:
            pools.add(id(pool))
            settings: dict[str, object] = {"pool": type(pool).__name__}
            size = getattr(pool, "size", None)
            if callable(size):
                settings["pool_size"] = size()
                settings["max_overflow"] = getattr(pool, "_max_overflow", None)
                settings["pool_timeout_s"] = getattr(pool, "_timeout", None)
            elif isinstance(size, int):
                settings["pool_size"] = size
            state.capacity[_unique(state.capacity, label)] = settings
        return label

    def label_of(context: Any) -> str:
        try:
            engine = context.root_connection.engine
        except AttributeError:
            return ""
        label = engine.__dict__.get(_SA_KEY)
        if label is None:
            label = engine_label(engine)
            engine.__dict__[_SA_KEY] = label  # cached on the engine: one dict read per call
        return str(label)

    def finish(  # noqa: PLR0917 - internal, once per statement
        cost: RequestCost,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        t0: float,
        error: BaseException | None,
        many: bool,
    ) -> None:
        duration_s = perf_counter() - t0
        rows: int | None = None
        if error is None:
            rowcount = getattr(cursor, "rowcount", -1)
            if isinstance(rowcount, int) and rowcount >= 0:
                rows = rowcount
        call = _record(
            state,
            cost,
            "sqlalchemy",
            statement,
            parameters,
            t0,
            duration_s,
            rows,
            label_of(context),
            None if error is None else type(error).__name__,
            many,
        )
        if error is None and getattr(type(cursor), "_brownout_probe_cursor", False):
            cursor._bo_call = call  # the sqlite3 hook adds the fetch time

    def wrap(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        many = name == "do_executemany"
        if name == "do_execute_no_params":

            @functools.wraps(original)
            def no_params(self: Any, cursor: Any, statement: str, context: Any = None) -> Any:
                cost = _current.get()
                if cost is None or not state.active:
                    return original(self, cursor, statement, context)
                cost.db_layer_depth += 1
                t0 = perf_counter()
                try:
                    result = original(self, cursor, statement, context)
                except BaseException as exc:
                    cost.db_layer_depth -= 1
                    finish(cost, cursor, statement, None, context, t0, exc, False)
                    raise
                cost.db_layer_depth -= 1
                finish(cost, cursor, statement, None, context, t0, None, False)
                return result

            return no_params

        @functools.wraps(original)
        def method(
            self: Any, cursor: Any, statement: str, parameters: Any, context: Any = None
        ) -> Any:
            cost = _current.get()
            if cost is None or not state.active:
                return original(self, cursor, statement, parameters, context)
            cost.db_layer_depth += 1
            t0 = perf_counter()
            try:
                result = original(self, cursor, statement, parameters, context)
            except BaseException as exc:
                cost.db_layer_depth -= 1
                finish(cost, cursor, statement, parameters, context, t0, exc, many)
                raise
            cost.db_layer_depth -= 1
            finish(cost, cursor, statement, parameters, context, t0, None, many)
            return result

        return method

    patched: list[tuple[type[Any], str, Any]] = []
    for cls in _subclasses(DefaultDialect):
        for name in _SA_METHODS:
            original = cls.__dict__.get(name)
            if original is not None:
                patched.append((cls, name, original))
                setattr(cls, name, wrap(name, original))

    def checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        cost = _current.get()
        if cost is None or not state.active:
            return
        cost.pool_checkouts += 1
        record.info[_SA_KEY] = (cost, perf_counter())

    def checkin(dbapi_conn: Any, record: Any) -> None:
        if record is None:
            return
        entry = record.info.pop(_SA_KEY, None)
        if entry is not None:
            entry[0].pool_hold_s += perf_counter() - entry[1]

    listeners: list[tuple[Any, str, Callable[..., Any]]] = [
        (sa_pool.Pool, "checkout", checkout),
        (sa_pool.Pool, "checkin", checkin),
    ]
    for target, name, fn in listeners:
        event.listen(target, name, fn)

    def timed_connect(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
        @functools.wraps(original)
        def connect(self: Any) -> Any:
            cost = _current.get()
            if cost is None or not state.active:
                return original(self)
            t0 = perf_counter()
            try:
                return original(self)
            finally:
                cost.pool_wait_s += perf_counter() - t0

        return connect

    pool_classes = [cls for cls in _subclasses(sa_pool.Pool) if "connect" in cls.__dict__]
    for cls in pool_classes:
        original = cls.__dict__["connect"]
        patched.append((cls, "connect", original))
        setattr(cls, "connect", timed_connect(original))  # noqa: B010 - mypy: no method-assign

    def undo() -> None:
        state.active = False
        for target, name, fn in listeners:
            if event.contains(target, name, fn):
                event.remove(target, name, fn)
        for cls, name, original in patched:
            setattr(cls, name, original)

    return undo, state


# -- sqlite3 ------------------------------------------------------------------------------


def _opened_by_aiosqlite(frame: FrameType) -> bool:
    """Whether ``frame`` (the caller of ``sqlite3.connect``) is aiosqlite's code. A frame
    whose globals have no ``__name__`` (code run by ``exec``) is not."""
    name = str(frame.f_globals.get("__name__", ""))
    return name == "aiosqlite" or name.startswith("aiosqlite.")


def install_sqlite3(site_capture_s: float) -> tuple[Undo, DbState]:
    """Wrap ``sqlite3.connect`` to hand out timed connections (limits in the module
    docstring)."""
    import sqlite3
    import sqlite3.dbapi2

    state = DbState(site_capture_s)

    base_execute = sqlite3.Cursor.execute
    base_fetchone = sqlite3.Cursor.fetchone
    base_fetchmany = sqlite3.Cursor.fetchmany
    base_fetchall = sqlite3.Cursor.fetchall
    new_cursor = sqlite3.Connection.cursor

    class ProbeCursor(sqlite3.Cursor):
        """Times ``execute`` (the hot path, written out), ``executemany``,
        ``executescript``; the ``fetch*`` methods add their time to the statement."""

        __slots__ = ("_bo_call",)
        _brownout_probe_cursor = True

        def execute(self, sql: str, parameters: Any = (), /) -> Any:
            cost = _current.get()
            if cost is None or cost.db_layer_depth or not state.active:
                self._bo_call = None
                return base_execute(self, sql, parameters)
            t0 = perf_counter()
            try:
                result = base_execute(self, sql, parameters)
            except BaseException as exc:
                self._bo_call = None
                _record(
                    state, cost, "sqlite3", sql, parameters, t0, perf_counter() - t0,
                    None, _label(self), type(exc).__name__, False,
                )  # fmt: skip
                raise
            t1 = perf_counter()
            rowcount = self.rowcount
            self._bo_call = _record(
                state, cost, "sqlite3", sql, parameters, t0, t1 - t0,
                rowcount if rowcount >= 0 else None, _label(self), None, False,
            )  # fmt: skip
            return result

        def _timed(self, method: Callable[..., Any], sql: str, params: object, *args: Any) -> Any:
            cost = _current.get()
            self._bo_call = None
            if cost is None or cost.db_layer_depth or not state.active:
                return method(self, *args)
            t0 = perf_counter()
            try:
                result = method(self, *args)
            except BaseException as exc:
                _record(
                    state, cost, "sqlite3", sql, params, t0, perf_counter() - t0,
                    None, _label(self), type(exc).__name__, True,
                )  # fmt: skip
                raise
            t1 = perf_counter()
            rowcount = self.rowcount
            self._bo_call = _record(
                state, cost, "sqlite3", sql, params, t0, t1 - t0,
                rowcount if rowcount >= 0 else None, _label(self), None, True,
            )  # fmt: skip
            return result

        def executemany(self, sql: str, seq_of_parameters: Any, /) -> Any:
            return self._timed(
                sqlite3.Cursor.executemany, sql, seq_of_parameters, sql, seq_of_parameters
            )

        def executescript(self, sql_script: str, /) -> Any:
            return self._timed(sqlite3.Cursor.executescript, sql_script, (), sql_script)

        def fetchone(self) -> Any:
            call: DbCall | None = getattr(self, "_bo_call", None)
            if call is None:
                return base_fetchone(self)
            t0 = perf_counter()
            row = base_fetchone(self)
            call.duration_s += perf_counter() - t0
            if row is not None:
                call.rows = (call.rows or 0) + 1
            return row

        def fetchmany(self, size: int | None = None) -> list[Any]:
            call: DbCall | None = getattr(self, "_bo_call", None)
            if call is None:
                return base_fetchmany(self) if size is None else base_fetchmany(self, size)
            t0 = perf_counter()
            rows = base_fetchmany(self) if size is None else base_fetchmany(self, size)
            call.duration_s += perf_counter() - t0
            call.rows = (call.rows or 0) + len(rows)
            return rows

        def fetchall(self) -> list[Any]:
            call: DbCall | None = getattr(self, "_bo_call", None)
            if call is None:
                return base_fetchall(self)
            t0 = perf_counter()
            rows = base_fetchall(self)
            call.duration_s += perf_counter() - t0
            call.rows = (call.rows or 0) + len(rows)
            return rows

    def _label(cursor: sqlite3.Cursor) -> str:
        return getattr(cursor.connection, "_bo_db", "sqlite:")

    class ProbeConnectionMixin:
        """Hands out :class:`ProbeCursor` s; ``execute`` & co go through one, as the C
        methods do through a plain cursor."""

        def cursor(self, factory: Any = None) -> Any:
            return new_cursor(self, ProbeCursor if factory is None else factory)  # type: ignore[call-overload]

        def execute(self, sql: str, parameters: Any = (), /) -> Any:
            return new_cursor(self, ProbeCursor).execute(sql, parameters)  # type: ignore[call-overload]

        def executemany(self, sql: str, parameters: Any, /) -> Any:
            return new_cursor(self, ProbeCursor).executemany(sql, parameters)  # type: ignore[call-overload]

        def executescript(self, sql_script: str, /) -> Any:
            return new_cursor(self, ProbeCursor).executescript(sql_script)  # type: ignore[call-overload]

    classes: dict[type[Any], type[Any]] = {}

    def probe_class(factory: type[Any]) -> type[Any]:
        cls = classes.get(factory)
        if cls is None:
            cls = type(
                f"Probe{factory.__name__}",
                (ProbeConnectionMixin, factory),
                {"__module__": __name__},
            )
            classes[factory] = cls
        return cls

    def wrap_connect(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def connect(*args: Any, **kwargs: Any) -> Any:
            if not state.active or _opened_by_aiosqlite(sys._getframe(1)):
                # aiosqlite runs every statement in a thread of its own that never carries
                # a request's context: nothing could be booked there, so its connection
                # keeps C cursors (a Python cursor would only cost that thread, and the
                # loop waiting for it, a method call per statement and per fetch)
                return original(*args, **kwargs)
            positional = len(args) > 5
            factory = args[5] if positional else kwargs.get("factory", sqlite3.Connection)
            if not (isinstance(factory, type) and issubclass(factory, sqlite3.Connection)):
                return original(*args, **kwargs)
            cls = factory if issubclass(factory, ProbeConnectionMixin) else probe_class(factory)
            if positional:
                args = (*args[:5], cls, *args[6:])
            else:
                kwargs["factory"] = cls
            conn = original(*args, **kwargs)
            database = args[0] if args else kwargs.get("database", "")
            with contextlib.suppress(AttributeError):  # a factory with __slots__
                conn._bo_db = f"sqlite:{os.fspath(database) if database else ''}"
            return conn

        connect._brownout_probe_original = original  # type: ignore[attr-defined]
        return connect

    targets = [sqlite3, sqlite3.dbapi2]
    originals = [(mod, mod.connect) for mod in targets]
    for mod, original in originals:
        setattr(mod, "connect", wrap_connect(original))  # noqa: B010

    def undo() -> None:
        state.active = False
        for mod, original in originals:
            setattr(mod, "connect", original)  # noqa: B010

    return undo, state


# -- asyncpg ------------------------------------------------------------------------------

_ASYNCPG_METHODS = ("execute", "executemany", "fetch", "fetchrow", "fetchval", "fetchmany")


def _asyncpg_label(conn: Any) -> str:
    addr = getattr(conn, "_addr", None)
    params = getattr(conn, "_params", None)
    database = getattr(params, "database", "")
    if isinstance(addr, tuple) and len(addr) >= 2:
        return db_label("postgresql", addr[0], addr[1], database)
    return db_label("postgresql", addr, None, database)


def _asyncpg_rows(name: str, result: object) -> int | None:
    if name in ("fetch", "fetchmany"):
        return len(result) if isinstance(result, list) else None
    if name == "fetchrow":
        return 0 if result is None else 1
    if name == "execute" and isinstance(result, str):
        last = result.rpartition(" ")[2]
        return int(last) if last.isdigit() else None
    return None


def install_asyncpg(site_capture_s: float) -> tuple[Undo, DbState]:
    """Patch ``asyncpg.connection.Connection``'s query methods and the pool's acquire and
    release. Raises ImportError when asyncpg is not installed."""
    import asyncpg.connection  # type: ignore[import-untyped]
    import asyncpg.pool  # type: ignore[import-untyped]

    state = DbState(site_capture_s)
    conn_cls = asyncpg.connection.Connection
    pool_cls = asyncpg.pool.Pool

    def wrap(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        many = name in ("executemany", "fetchmany")

        @functools.wraps(original)
        async def method(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            cost = _current.get()
            if cost is None or cost.db_layer_depth or not state.active:
                return await original(self, query, *args, **kwargs)
            params: object = (args[0] if args else kwargs.get("args")) if many else args
            t0 = perf_counter()
            try:
                result = await original(self, query, *args, **kwargs)
            except BaseException as exc:
                _record(
                    state, cost, "asyncpg", _text(query), params, t0, perf_counter() - t0,
                    None, _asyncpg_label(self), type(exc).__name__, many,
                )  # fmt: skip
                raise
            _record(
                state, cost, "asyncpg", _text(query), params, t0, perf_counter() - t0,
                _asyncpg_rows(name, result), _asyncpg_label(self), None, many,
            )  # fmt: skip
            return result

        return method

    held: dict[int, tuple[RequestCost, float]] = {}
    seen_pools: set[int] = set()

    def note_pool(pool: Any, proxy: Any) -> None:
        seen_pools.add(id(pool))
        key = _unique(state.capacity, _asyncpg_label(getattr(proxy, "_con", proxy)))
        state.capacity[key] = {
            "pool": "asyncpg.Pool",
            "min_size": getattr(pool, "_minsize", None),
            "max_size": getattr(pool, "_maxsize", None),
        }

    original_acquire = pool_cls.__dict__["_acquire"]
    original_release = pool_cls.__dict__["release"]

    @functools.wraps(original_acquire)
    async def _acquire(self: Any, timeout: Any) -> Any:  # noqa: ASYNC109 - asyncpg's signature
        cost = _current.get()
        if cost is None or not state.active:
            return await original_acquire(self, timeout)
        t0 = perf_counter()
        try:
            proxy = await original_acquire(self, timeout)
        finally:
            cost.pool_wait_s += perf_counter() - t0
        cost.pool_checkouts += 1
        held[id(proxy)] = (cost, perf_counter())
        if id(self) not in seen_pools:
            note_pool(self, proxy)
        return proxy

    @functools.wraps(original_release)
    async def release(self: Any, connection: Any, *args: Any, **kwargs: Any) -> Any:
        entry = held.pop(id(connection), None)
        if entry is None:
            return await original_release(self, connection, *args, **kwargs)
        cost = entry[0]
        cost.pool_hold_s += perf_counter() - entry[1]
        # the pool's reset statements are housekeeping, not the request's queries
        cost.db_layer_depth += 1
        try:
            return await original_release(self, connection, *args, **kwargs)
        finally:
            cost.db_layer_depth -= 1

    originals = [(name, conn_cls.__dict__[name]) for name in _ASYNCPG_METHODS]
    for name, original in originals:
        setattr(conn_cls, name, wrap(name, original))
    pool_cls._acquire = _acquire
    pool_cls.release = release

    def undo() -> None:
        state.active = False
        for name, original in originals:
            setattr(conn_cls, name, original)
        pool_cls._acquire = original_acquire
        pool_cls.release = original_release
        held.clear()

    return undo, state


# -- psycopg 3 ----------------------------------------------------------------------------


def install_psycopg(site_capture_s: float) -> tuple[Undo, DbState]:
    """Patch ``execute``/``executemany`` of psycopg's cursor classes. Raises ImportError
    when psycopg (or its libpq) is not available."""
    import psycopg

    state = DbState(site_capture_s)
    labels: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()

    def label(cursor: Any) -> str:
        conn = cursor.connection
        try:
            return labels[conn]
        except (KeyError, TypeError):
            pass
        try:
            info = conn.info
            text = db_label("postgresql", info.host, info.port, info.dbname)
        except Exception:
            text = "postgresql:"
        with contextlib.suppress(TypeError):
            labels[conn] = text
        return text

    def rows(cursor: Any) -> int | None:
        n = getattr(cursor, "rowcount", -1)
        return n if isinstance(n, int) and n >= 0 else None

    def wrap_sync(original: Callable[..., Any], many: bool) -> Callable[..., Any]:
        @functools.wraps(original)
        def method(self: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
            cost = _current.get()
            if cost is None or cost.db_layer_depth or not state.active:
                return original(self, query, params, **kwargs)
            t0 = perf_counter()
            try:
                result = original(self, query, params, **kwargs)
            except BaseException as exc:
                _record(
                    state, cost, "psycopg", _text(query, self), params, t0,
                    perf_counter() - t0, None, label(self), type(exc).__name__, many,
                )  # fmt: skip
                raise
            _record(
                state, cost, "psycopg", _text(query, self), params, t0,
                perf_counter() - t0, rows(self), label(self), None, many,
            )  # fmt: skip
            return result

        return method

    def wrap_async(original: Callable[..., Any], many: bool) -> Callable[..., Any]:
        @functools.wraps(original)
        async def method(self: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
            cost = _current.get()
            if cost is None or cost.db_layer_depth or not state.active:
                return await original(self, query, params, **kwargs)
            t0 = perf_counter()
            try:
                result = await original(self, query, params, **kwargs)
            except BaseException as exc:
                _record(
                    state, cost, "psycopg", _text(query, self), params, t0,
                    perf_counter() - t0, None, label(self), type(exc).__name__, many,
                )  # fmt: skip
                raise
            _record(
                state, cost, "psycopg", _text(query, self), params, t0,
                perf_counter() - t0, rows(self), label(self), None, many,
            )  # fmt: skip
            return result

        return method

    classes = [
        getattr(psycopg, name, None)
        for name in ("Cursor", "AsyncCursor", "ServerCursor", "AsyncServerCursor")
    ]
    patched: list[tuple[type[Any], str, Any]] = []
    for cls in classes:
        if not isinstance(cls, type):
            continue
        is_async = cls.__name__.startswith("Async")
        for name in ("execute", "executemany"):
            original = cls.__dict__.get(name)
            if original is None:
                continue
            wrapper = (wrap_async if is_async else wrap_sync)(original, name == "executemany")
            patched.append((cls, name, original))
            setattr(cls, name, wrapper)

    def undo() -> None:
        state.active = False
        for cls, name, original in patched:
            setattr(cls, name, original)

    return undo, state
