"""``install()`` and :class:`Probe`: what is instrumented, and the ledger it feeds.

The hooks are process-wide (they patch libraries), the ledger is per :class:`Probe`:
hooks write into the current request's :class:`RequestCost` whatever probe serves it, and
``ProbeMiddleware`` hands each finished request to its own probe. Each library is patched
once however many probes install it: the patch keeps a reference count in a marker
attribute on the patched object (``sqlite3`` module, SQLAlchemy's ``Engine`` class,
asyncpg's ``Connection`` class, psycopg's ``Cursor`` class, the probe's HTTP and thread
hook modules), and the last :meth:`Probe.uninstall` restores the originals. So
``install()`` is idempotent: a second call instruments nothing more, and uninstalling one
probe leaves the hooks of another in place. The loop monitor belongs to its probe and is
attached by the middleware to the loop serving the first request: use one probe (one
``ProbeMiddleware``) per app.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType, TracebackType
from typing import Any

from .. import _validate as v
from .._clock import Clock, monotonic_clock, wall_time
from ..errors import InvalidConfig
from ._cost import Detector, Finding, ProbeThresholds, RequestCost
from ._db import DbState
from ._findings import MergedFinding, detect_db, detect_response
from ._ledger import Ledger

__all__ = ["HOOKS", "Probe", "install"]

#: What ``install()`` can instrument, in the order it does.
HOOKS = ("sqlalchemy", "sqlite3", "asyncpg", "psycopg", "http", "threads", "loop")

Undo = Callable[[], None]
_MARK = "__brownout_probe_{}__"


class _Shared:
    """The marker a patched object carries: how many probes use the patch, how to undo it,
    and the hook's shared state."""

    __slots__ = ("refs", "state", "undo")

    def __init__(self, undo: Undo, state: object) -> None:
        self.refs = 1
        self.undo = undo
        self.state = state


def _acquire(
    target: object, name: str, installer: Callable[[], tuple[Undo, object]]
) -> tuple[Undo, object]:
    """Install a hook once per process (reference-counted on ``target``); returns a
    one-shot release function and the hook's state."""
    attr = _MARK.format(name)
    found = getattr(target, attr, None)
    if isinstance(found, _Shared):
        shared = found
        shared.refs += 1
    else:
        undo, state = installer()
        shared = _Shared(undo, state)
        setattr(target, attr, shared)
    done = False

    def release() -> None:
        nonlocal done
        if done:
            return
        done = True
        shared.refs -= 1
        if shared.refs <= 0:
            if getattr(target, attr, None) is shared:
                delattr(target, attr)
            shared.undo()

    return release, shared.state


def _call_hook(hook: Callable[..., Undo], site_capture_s: float) -> tuple[Undo, object]:
    """Run a stateless hook installer (``install_http``, ``install_threads``), passing the
    probe's ``site_capture_s`` when it takes that argument."""
    try:
        takes_site = "site_capture_s" in inspect.signature(hook).parameters
    except (TypeError, ValueError):
        takes_site = False
    return (hook(site_capture_s=site_capture_s) if takes_site else hook()), None


class Probe:
    """The probe of one app: thresholds, the :class:`Ledger`, the detectors and the hooks
    it installed.

    Usually made by :func:`install`; a bare ``Probe()`` instruments nothing (the middleware
    still measures wall time, status and response size). ``detectors``: extra per-request
    detectors (``Callable[[RequestCost], Iterable[Finding]]``) run after the built-in ones
    (DB, response, and the HTTP and loop detectors when those modules are present).
    ``processes``: how many worker processes serve the app, for the ledger's capacity
    section (default: ``$WEB_CONCURRENCY`` when set). ``clock``/``wall``: the ledger's
    clocks; ``cpu_clock`` the process CPU clock behind the ledger's ``process_cpu`` (None:
    not measured). ``sample``: the share of requests measured, in (0, 1] (default 1: every
    request); the others are only counted (the ledger's ``unsampled``), run with no hook
    booking anything and their task steps untimed after the first, which is what makes a
    probe cheap enough to leave on in production (see ``docs/ledger.md``). ``rng`` draws
    the sampling decision (uniform in [0, 1)). Usable as a context manager that uninstalls
    on exit.
    """

    def __init__(
        self,
        thresholds: ProbeThresholds | None = None,
        *,
        detectors: Sequence[Detector] = (),
        processes: int | None = None,
        max_endpoints: int = 200,
        clock: Clock = monotonic_clock,
        wall: Callable[[], float] = wall_time,
        cpu_clock: Callable[[], float] | None = time.process_time,
        sample: float = 1.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if thresholds is not None and not isinstance(thresholds, ProbeThresholds):
            raise InvalidConfig("Probe", "thresholds", thresholds, "a ProbeThresholds or None")
        self.thresholds = thresholds if thresholds is not None else ProbeThresholds()
        for i, det in enumerate(detectors):
            v.callable_or_none("Probe", f"detectors[{i}]", det)
        if processes is None:
            env = os.environ.get("WEB_CONCURRENCY", "")
            processes = int(env) if env.isdigit() and int(env) > 0 else None
        else:
            v.int_at_least("Probe", "processes", processes, 1)
        self.processes = processes
        if (
            isinstance(sample, bool)
            or not isinstance(sample, int | float)
            or not 0.0 < sample <= 1.0  # also rejects NaN
        ):
            raise InvalidConfig("Probe", "sample", sample, "a share of requests in (0, 1]")
        if not callable(rng):
            raise InvalidConfig("Probe", "rng", rng, "a callable returning a float in [0, 1)")
        self.sample = float(sample)
        self._rng = rng
        self.ledger = Ledger(
            self.thresholds,
            clock=clock,
            wall=wall,
            max_endpoints=max_endpoints,
            capacity_source=self._capacity,
            cpu_clock=cpu_clock,
        )
        self.ledger.sample = self.sample
        self._extra: tuple[Detector, ...] = tuple(detectors)
        self._builtin: list[Callable[[RequestCost, ProbeThresholds], Iterable[Finding]]] = [
            detect_db,
            detect_response,
        ]
        for module, name in (("_http", "detect_http"), ("_loop", "detect_loop")):
            detector = _optional(module, name)
            if detector is not None:
                self._builtin.append(detector)
        self._releases: list[tuple[str, Undo]] = []
        self._states: dict[str, DbState] = {}
        self._monitor: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_tokens: float | None = None
        self.detector_errors = 0
        self.skipped: dict[str, str] = {}  # hook -> why it was not installed

    def __repr__(self) -> str:
        return f"Probe(installed={self.installed!r}, ledger={self.ledger!r})"

    # -- hooks ---------------------------------------------------------------------------

    @property
    def installed(self) -> tuple[str, ...]:
        """The hooks this probe holds, in :data:`HOOKS` order."""
        names = {name for name, _ in self._releases}
        if self._monitor is not None:
            names.add("loop")
        return tuple(h for h in HOOKS if h in names)

    def _install(self, wanted: dict[str, bool]) -> None:
        from . import _db

        site_s = self.thresholds.site_capture_s
        db_hooks: list[tuple[str, str, Callable[[float], tuple[Undo, DbState]]]] = [
            ("sqlalchemy", "sqlalchemy.engine", _db.install_sqlalchemy),
            ("sqlite3", "sqlite3", _db.install_sqlite3),
            ("asyncpg", "asyncpg.connection", _db.install_asyncpg),
            ("psycopg", "psycopg", _db.install_psycopg),
        ]
        for name, module_name, installer in db_hooks:
            if not wanted.get(name) or name in self.installed:
                continue
            try:
                module = _import(module_name)
                target: object = module
                if name == "sqlalchemy":
                    target = module.Engine
                elif name == "asyncpg":
                    target = module.Connection
                elif name == "psycopg":
                    target = module.Cursor
                release, state = _acquire(target, name, functools.partial(installer, site_s))
            except ImportError as exc:
                self.skipped[name] = f"not importable: {exc}"
                continue
            self._releases.append((name, release))
            if isinstance(state, DbState):
                self._states[name] = state
        for name, module_name, function in (
            ("http", "_http", "install_http"),
            ("threads", "_threads", "install_threads"),
        ):
            if not wanted.get(name) or name in self.installed:
                continue
            sibling = _optional_module(module_name)
            hook = getattr(sibling, function, None) if sibling is not None else None
            if sibling is None or hook is None:
                self.skipped[name] = f"brownout.probe.{module_name}.{function} is not available"
                continue
            try:
                release, _ = _acquire(sibling, name, functools.partial(_call_hook, hook, site_s))
            except ImportError as exc:
                self.skipped[name] = f"not importable: {exc}"
                continue
            self._releases.append((name, release))
        if wanted.get("loop") and self._monitor is None:
            loop_module = _optional_module("_loop")
            monitor_cls = getattr(loop_module, "LoopMonitor", None) if loop_module else None
            if monitor_cls is None:
                self.skipped["loop"] = "brownout.probe._loop.LoopMonitor is not available"
            else:
                self._monitor = monitor_cls(self.thresholds)

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Put the loop monitor on ``loop`` (the middleware calls this on each request; it
        costs one comparison once attached). A probe follows the app to a new loop."""
        if loop is self._loop or self._monitor is None:
            return
        if self._loop is not None:
            self._monitor.uninstall()
        self._loop = loop
        self._monitor.install(loop)

    def note_runtime(self) -> None:
        """Read the capacity settings only visible from inside the running app (anyio's
        default thread limiter, when anyio is in use). Called by the middleware."""
        anyio = sys.modules.get("anyio.to_thread")
        if anyio is None:
            return
        try:
            self._thread_tokens = float(anyio.current_default_thread_limiter().total_tokens)
        except Exception:  # no anyio-compatible loop here
            return

    def uninstall(self) -> None:
        """Undo every hook this probe installed (the last probe holding a patch restores
        the original). Idempotent. The ledger is kept."""
        if self._monitor is not None:
            if self._loop is not None:
                self._monitor.uninstall()
            self._monitor = None
            self._loop = None
        while self._releases:
            _, release = self._releases.pop()
            release()
        self._states.clear()

    def __enter__(self) -> Probe:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.uninstall()

    # -- requests ------------------------------------------------------------------------

    def sampled(self) -> bool:
        """Whether to measure the request arriving now (always, at ``sample=1``)."""
        return self.sample >= 1.0 or self._rng() < self.sample

    def skip(self) -> None:
        """Count a request left unmeasured by sampling (call it from the request's task,
        as the middleware does): the ledger counts it, and the loop monitor stops timing
        the task after its current step."""
        self.ledger.skip()
        monitor = self._monitor
        if monitor is not None:
            monitor.release_step()

    def observe(self, cost: RequestCost) -> list[Finding]:
        """Run the detectors on a finished request and book it in the ledger; returns the
        findings of this request (including cross-request ones it completed). A detector
        that raises is skipped and counted in ``detector_errors``: the probe never fails a
        request."""
        th = self.thresholds
        found: list[Finding] | None = None
        for detector in self._builtin:
            try:
                result = detector(cost, th)
            except Exception:
                self.detector_errors += 1
                continue
            if result:
                if found is None:
                    found = []
                found.extend(result)
        for extra in self._extra:
            try:
                result2 = list(extra(cost))
            except Exception:
                self.detector_errors += 1
                continue
            if result2:
                if found is None:
                    found = []
                found.extend(result2)
        cross = self.ledger.record(cost, found or ())
        if cross:
            return [*(found or ()), *cross]
        return found or []

    # -- reading -------------------------------------------------------------------------

    def findings(self) -> list[MergedFinding]:
        return self.ledger.findings()

    def to_dict(self) -> dict[str, Any]:
        return self.ledger.to_dict()

    def write(self, path: str | os.PathLike[str]) -> None:
        self.ledger.write(path)

    def _capacity(self) -> dict[str, object]:
        pools: dict[str, object] = {
            name: dict(state.capacity) for name, state in self._states.items() if state.capacity
        }
        capacity: dict[str, object] = {}
        if pools:
            capacity["pools"] = pools
        if self._thread_tokens is not None:
            capacity["thread_limiter"] = {"library": "anyio", "total_tokens": self._thread_tokens}
        if self.processes is not None:
            capacity["processes"] = self.processes
        return capacity


def _import(name: str) -> ModuleType:
    import importlib

    return importlib.import_module(name)


def _optional_module(name: str) -> ModuleType | None:
    """A sibling hook module (``_http``, ``_loop``, ``_threads``) when it exists."""
    try:
        return _import(f"{__package__}.{name}")
    except ImportError:
        return None


def _optional(module: str, name: str) -> Any:
    mod = _optional_module(module)
    return getattr(mod, name, None) if mod is not None else None


def install(
    *,
    sqlalchemy: bool = True,
    sqlite3: bool = True,
    asyncpg: bool = True,
    psycopg: bool = True,
    http: bool = True,
    loop: bool = True,
    threads: bool = True,
    thresholds: ProbeThresholds | None = None,
    detectors: Sequence[Detector] = (),
    processes: int | None = None,
    max_endpoints: int = 200,
    clock: Clock = monotonic_clock,
    sample: float = 1.0,
) -> Probe:
    """Instrument whatever of these is importable and return the :class:`Probe` holding the
    hooks and the ledger; ``probe.uninstall()`` undoes it. Patching never changes what the
    libraries return or raise. What was not installed, and why, is in ``probe.skipped``.

    Hook points and limits: ``brownout.probe._db`` (databases), ``_http`` (httpx, aiohttp,
    requests), ``_loop`` (event-loop monitor, attached by the middleware), ``_threads``
    (thread-pool wait and run time). Idempotent: installing again patches nothing twice.
    ``sample``: the share of requests measured (:class:`Probe`).
    """
    probe = Probe(
        thresholds,
        detectors=detectors,
        processes=processes,
        max_endpoints=max_endpoints,
        clock=clock,
        sample=sample,
    )
    probe._install(
        {
            "sqlalchemy": sqlalchemy,
            "sqlite3": sqlite3,
            "asyncpg": asyncpg,
            "psycopg": psycopg,
            "http": http,
            "threads": threads,
            "loop": loop,
        }
    )
    return probe
