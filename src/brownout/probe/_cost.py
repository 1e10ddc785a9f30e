"""What one request cost: the record every probe hook writes into.

A :class:`RequestCost` is created by ``ProbeMiddleware`` when a request starts and set in a
context variable for the request's task (and every task and thread-pool call it spawns,
since they copy the context). Hooks read it with :func:`current_cost` and append what they
saw; a hook that finds no current cost (work outside any request: start-up, background
jobs) records nothing. Costs are plain mutable records on purpose: one request is served by
one task at a time, so appends need no lock; the loop monitor and thread-pool hooks add to
their own fields.

Units: every duration is in seconds (``*_s``), every size in bytes.

No double counting: an ORM layer (SQLAlchemy) that reports a statement increments
``db_layer_depth`` around the driver call, and driver-level hooks (sqlite3, asyncpg,
psycopg) record nothing while it is above zero.
"""

from __future__ import annotations

import contextvars
import os
import sys
import sysconfig
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import FrameType

__all__ = [
    "DbCall",
    "Detector",
    "Finding",
    "HttpCall",
    "LoopStep",
    "ProbeThresholds",
    "RequestCost",
    "activate",
    "call_site",
    "current_cost",
    "deactivate",
    "shown_path",
]


@dataclass(slots=True)
class DbCall:
    """One statement sent to a database.

    ``fingerprint``: the normalized statement (literals replaced by ``?``, ``IN (...)``
    lists collapsed, whitespace squeezed, lower-case keywords), the key detectors group
    by. ``params_key``: a short hash of the parameters (``None`` when there were none), so
    "same statement, same parameters" is detectable without keeping values. ``site``: the
    application call site (``"path/to/file.py:42 in func"``), captured only when the call
    was slow or is needed as evidence, else ``None``.
    """

    driver: str  # "sqlalchemy", "sqlite3", "asyncpg", "psycopg"
    fingerprint: str
    params_key: str | None
    duration_s: float
    started_s: float  # perf_counter() at the start
    rows: int | None = None
    site: str | None = None
    database: str = ""  # what the statement went to, e.g. "sqlite:shop.db"
    error: str | None = None  # the exception type's name when the statement failed


@dataclass(slots=True)
class HttpCall:
    """One outgoing HTTP request (to a dependency).

    ``path_template``: the path with ids (numbers, UUIDs, hex strings) replaced by ``{id}``,
    so ``/users/17`` and ``/users/18`` group together. ``timeout_s``: the effective total
    timeout of the call, ``math.inf`` when unbounded. ``error``: the exception type's name
    when the call failed without a response.
    """

    library: str  # "httpx", "aiohttp", "requests"
    method: str
    host: str  # "host:port"
    path_template: str
    status: int | None
    duration_s: float
    started_s: float
    timeout_s: float
    bytes_sent: int = 0
    bytes_received: int = 0
    error: str | None = None
    site: str | None = None


@dataclass(slots=True)
class LoopStep:
    """One event-loop step that blocked the loop: ``wall_s`` long, ``cpu_s`` of it on
    CPU, and the loop thread's stack when the watchdog caught it (innermost frame last,
    each ``"file.py:42 in func"``)."""

    wall_s: float
    cpu_s: float
    stack: tuple[str, ...] = ()


@dataclass(slots=True)
class RequestCost:
    """Everything one request cost. ``route`` is the route template (``/products/{id}``)
    when the framework exposes one, else the raw path; ``endpoint`` is ``"METHOD route"``."""

    method: str
    path: str
    started_s: float  # perf_counter() when the request arrived
    route: str = ""
    status: int = 0
    wall_s: float = 0.0
    # event loop (filled by the loop monitor when installed)
    loop_busy_s: float = 0.0  # sum of this request's task steps
    cpu_s: float = 0.0  # thread CPU time of those steps (and of its thread-pool calls)
    steps: int = 0
    longest_step_s: float = 0.0
    blocking: list[LoopStep] = field(default_factory=list)
    # thread pool for sync endpoints / to_thread
    thread_wait_s: float = 0.0
    thread_run_s: float = 0.0
    # database
    db: list[DbCall] = field(default_factory=list)
    db_layer_depth: int = 0
    # fingerprint -> calls so far in this request, kept by the DB hooks (created on the
    # first call): a hook captures the call site when a fingerprint repeats
    db_seen: dict[str, int] | None = None
    pool_wait_s: float = 0.0
    pool_hold_s: float = 0.0
    pool_checkouts: int = 0
    # dependencies
    http: list[HttpCall] = field(default_factory=list)
    # response
    response_bytes: int = 0
    content_type: str = ""
    content_encoding: str = ""

    @property
    def endpoint(self) -> str:
        return f"{self.method} {self.route or self.path}"

    @property
    def db_s(self) -> float:
        return sum(c.duration_s for c in self.db)


@dataclass(frozen=True, slots=True)
class Finding:
    """One inefficiency, as detected on one request (the ledger merges repeats).

    ``kind``: stable, one of ``n_plus_one_db``, ``duplicate_query``, ``cache_candidate``,
    ``slow_query``, ``n_plus_one_http``, ``no_timeout``, ``loop_blocking``,
    ``large_response``. ``key``: what makes two findings of a kind the same problem (a
    fingerprint, a host and path template, a call site); the ledger merges findings with the
    same (endpoint, kind, key). ``severity``: ``"info"``, ``"warning"`` or ``"error"``.
    ``evidence``: JSON-ready numbers and strings (counts, times in ms, an example call site).
    ``fix``: the code change or brownout policy that removes it, in one or two sentences.
    """

    kind: str
    key: str
    endpoint: str
    severity: str
    title: str
    evidence: dict[str, object]
    fix: str


#: A per-request detector: looks at one finished request's cost, returns what it found.
Detector = Callable[[RequestCost], Iterable[Finding]]

_current: contextvars.ContextVar[RequestCost | None] = contextvars.ContextVar(
    "brownout_probe_cost", default=None
)
#: True inside a request that sampling left unmeasured: the loop monitor does not wrap the
#: tasks it spawns.
_unsampled: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "brownout_probe_unsampled", default=False
)


def current_cost() -> RequestCost | None:
    """The cost record of the request being served in this context, or None."""
    return _current.get()


def activate(cost: RequestCost) -> contextvars.Token[RequestCost | None]:
    """Make ``cost`` the current request's record (``ProbeMiddleware`` does this); pass the
    token to :func:`deactivate` when the request ends."""
    return _current.set(cost)


def deactivate(token: contextvars.Token[RequestCost | None]) -> None:
    _current.reset(token)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeThresholds:
    """When a pattern becomes a finding (defaults from Sentry, Scout and the asyncio
    practice collected in REFERENCES section 7). Durations in seconds, sizes in bytes."""

    n_plus_one_min_calls: int = 5  # same fingerprint this often in one request ...
    n_plus_one_min_params: int = 2  # ... with at least this many parameter sets ...
    n_plus_one_min_total_s: float = 0.05  # ... taking at least this long in total,
    n_plus_one_always_calls: int = 20  # ... or this often with as many parameter sets
    duplicate_min_calls: int = 2  # same statement and parameters in one request
    cache_candidate_share: float = 0.2  # same key in this share of an endpoint's requests
    cache_candidate_window_s: float = 60.0  # ... within this window
    cache_candidate_min_requests: int = 10  # ... once the endpoint has this many requests
    slow_query_s: float = 0.5
    site_capture_s: float = 0.1  # capture a call site only for calls at least this slow
    http_n_plus_one_min_calls: int = 5  # same (method, host, path template) in one request
    http_n_plus_one_min_total_s: float = 0.3
    loop_warn_s: float = 0.02  # a loop step this long is a warning ...
    loop_error_s: float = 0.1  # ... and this long an error
    loop_stack_after_s: float = 0.05  # the watchdog snapshots the stack past this
    cpu_bound_ratio: float = 0.8  # cpu/wall >= this: CPU-bound; <= io_ratio: sync I/O
    io_ratio: float = 0.2
    large_response_bytes: int = 1 << 20
    uncompressed_min_bytes: int = 100 << 10  # compressible and not compressed above this


_STDLIB = sysconfig.get_paths()["stdlib"]
_PURELIB = sysconfig.get_paths()["purelib"]
_OURS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../brownout


_FOREIGN: dict[str, bool] = {}  # file name -> not the application's (bounded below)
_SHOWN: dict[str, str] = {}  # file name -> as a call site shows it
_CACHED_FILES = 4096


def _foreign(filename: str) -> bool:
    """A frame of the standard library, an installed package or brownout: not the app.
    Cached per file name (a stack walk asks for the same few dozen files again and
    again)."""
    known = _FOREIGN.get(filename)
    if known is None:
        known = (
            filename.startswith((_STDLIB, _PURELIB, _OURS, "<"))
            or "site-packages" in filename
            or "dist-packages" in filename
        )
        if len(_FOREIGN) >= _CACHED_FILES:
            _FOREIGN.clear()
        _FOREIGN[filename] = known
    return known


def shown_path(filename: str) -> str:
    """``filename`` as call sites and stacks show it: relative to the working directory
    when below it, else as it is. Cached per file name (the working directory of a
    server does not change while it serves)."""
    shown = _SHOWN.get(filename)
    if shown is None:
        try:
            rel = os.path.relpath(filename)
        except ValueError:
            rel = filename
        shown = rel if not rel.startswith("..") else filename
        if len(_SHOWN) >= _CACHED_FILES:
            _SHOWN.clear()
        _SHOWN[filename] = shown
    return shown


def call_site(frame: FrameType | None = None) -> str | None:
    """The innermost application frame calling us, as ``"path/file.py:42 in func"``
    (paths relative to the working directory when below it), or None when every frame is
    library code. Costs a microsecond or two per frame walked: hooks call it only for
    slow calls or as the example of a finding."""
    f: FrameType | None = frame if frame is not None else sys._getframe(1)
    while f is not None:
        code = f.f_code
        if not _foreign(code.co_filename):
            return f"{shown_path(code.co_filename)}:{f.f_lineno} in {code.co_name}"
        f = f.f_back
    return None
