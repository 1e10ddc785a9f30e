"""The fault timeline of a scenario, run against proxies during a load run.

Each :class:`~brownout.scenario.FaultSpec` becomes two changes on its proxy, through the
control API: the fault is added at ``at_s`` and removed at ``at_s + duration_s`` (``down``
disables the proxy, then enables it again). Every change is recorded with the time it
actually took effect, relative to the run's start, next to the planned time, so the report
can shade the exact window and a late change is visible. Whatever is still active when the
run stops is removed, so proxies are left clean.

The decisions are sans-IO: :meth:`FaultTimeline.poll` applies the changes due at a given
run time and returns when the next one is due; :meth:`FaultTimeline.start` runs that in a
thread against the real clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from ..errors import BrownoutError, ScenarioError
from ..scenario import FaultSpec
from ._spec import HttpFault, Toxic, fault_from_spec

__all__ = ["FaultControl", "FaultTimeline"]


class FaultControl(Protocol):
    """What the timeline needs from a proxy control API (``ProxyClient`` has it)."""

    def proxies(self) -> Mapping[str, Any]: ...
    def add_toxic(self, proxy: str, toxic: Toxic) -> object: ...
    def remove_toxic(self, proxy: str, name: str) -> object: ...
    def add_http_fault(self, proxy: str, fault: HttpFault) -> object: ...
    def remove_http_fault(self, proxy: str, name: str) -> object: ...
    def set_enabled(self, proxy: str, enabled: bool) -> object: ...


class _Entry:
    __slots__ = ("index", "record", "runtime", "spec", "state")

    def __init__(self, index: int, spec: FaultSpec) -> None:
        self.index = index
        self.spec = spec
        name = f"brownout-{index}-{spec.kind}"
        self.runtime = fault_from_spec(spec, name)
        self.state = 0  # 0 planned, 1 active, 2 over
        self.record: dict[str, Any] = spec.record(index)


class FaultTimeline:
    """Runs ``faults`` through ``control``. ``clock`` is the time source of the thread."""

    def __init__(
        self,
        faults: Sequence[FaultSpec],
        control: FaultControl,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.control = control
        self.clock = clock
        self._entries = [_Entry(i, spec) for i, spec in enumerate(faults)]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def check(self) -> None:
        """Before the run: every fault's target must be a proxy the API knows.

        Raises ScenarioError naming ``faults[i].target``, or BrownoutError when the API
        cannot be reached."""
        if not self._entries:
            return
        known = set(self.control.proxies())
        for entry in self._entries:
            if entry.spec.target not in known:
                shown = ", ".join(repr(n) for n in sorted(known)) or "none yet"
                raise ScenarioError(
                    f"faults[{entry.index}].target",
                    entry.spec.target,
                    f"the name of a proxy the control API has ({shown})",
                )

    # -- sans-IO stepping ----------------------------------------------------------------

    def poll(self, now_s: float) -> float | None:
        """Apply every change due at run time ``now_s``; the run time of the next change,
        or None when none is left."""
        with self._lock:
            upcoming: float | None = None
            for entry in self._entries:
                spec = entry.spec
                if entry.state == 0:
                    if spec.at_s <= now_s:
                        self._begin(entry)
                    else:
                        upcoming = spec.at_s if upcoming is None else min(upcoming, spec.at_s)
                        continue
                if entry.state == 1:
                    if spec.end_s <= now_s:
                        self._end(entry)
                    else:
                        upcoming = spec.end_s if upcoming is None else min(upcoming, spec.end_s)
            return upcoming

    def records(self) -> list[dict[str, Any]]:
        """What was injected, where, planned and actual times (results ``faults``)."""
        with self._lock:
            return [dict(e.record, errors=list(e.record["errors"])) for e in self._entries]

    def finish(self) -> list[dict[str, Any]]:
        """End every active fault now (the run is over); returns :meth:`records`."""
        with self._lock:
            for entry in self._entries:
                if entry.state == 1:
                    self._end(entry)
                entry.state = 2
        return self.records()

    def _now(self) -> float:
        return self.clock() - self._t0

    def _apply(self, entry: _Entry, change: Callable[[], object]) -> bool:
        try:
            change()
        except BrownoutError as exc:  # recorded, the run goes on
            entry.record["errors"].append(str(exc))
            return False
        return True

    def _begin(self, entry: _Entry) -> None:
        control, target, runtime = self.control, entry.spec.target, entry.runtime
        entry.state = 1
        if isinstance(runtime, Toxic):
            ok = self._apply(entry, lambda: control.add_toxic(target, runtime))
        elif isinstance(runtime, HttpFault):
            ok = self._apply(entry, lambda: control.add_http_fault(target, runtime))
        else:
            ok = self._apply(entry, lambda: control.set_enabled(target, False))
        if ok:
            entry.record["started_s"] = round(self._now(), 6)

    def _end(self, entry: _Entry) -> None:
        control, target, runtime = self.control, entry.spec.target, entry.runtime
        entry.state = 2
        if entry.record["started_s"] is None:
            return  # it never took effect
        name = entry.record["name"]
        if isinstance(runtime, Toxic):
            ok = self._apply(entry, lambda: control.remove_toxic(target, name))
        elif isinstance(runtime, HttpFault):
            ok = self._apply(entry, lambda: control.remove_http_fault(target, name))
        else:
            ok = self._apply(entry, lambda: control.set_enabled(target, True))
        if ok:
            entry.record["ended_s"] = round(self._now(), 6)

    # -- the thread ----------------------------------------------------------------------

    def start(self, t0: float) -> None:
        """Run the timeline in a thread; ``t0`` is the run's start on ``clock``."""
        self._t0 = t0
        if not self._entries:
            return
        self._thread = threading.Thread(target=self._loop, name="brownout-faults", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            upcoming = self.poll(self._now())
            if upcoming is None:
                return
            self._stop.wait(max(upcoming - self._now(), 0.0))

    def stop(self) -> list[dict[str, Any]]:
        """Stop the thread and end what is still active; returns the records."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        return self.finish()
