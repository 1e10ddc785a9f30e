"""The metastability sweep: a phase diagram of load x trigger size x trigger duration.

A system is *metastable* at a load when it serves that load well, but a temporary trigger
(a slow station, a lost server) pushes it into a bad state that sustains itself once the
trigger has ended, typically because retries keep the work above capacity (Bronson et
al., "Metastable Failures in Distributed Systems", HotOS 2021). :func:`phase_diagram`
maps where that happens: it runs the simulator once per cell of the grid ``loads x
trigger_factors x trigger_durations``, every run with the same seed (common random
numbers: two cells differ by their load and trigger only), in parallel across processes,
and classifies each cell from its timeline.

Classification. An interval of the timeline (``interval_s`` long) is *healthy* when
``goodput >= healthy_ratio * offered`` (an interval in which nothing arrived is healthy).
``goodput`` counts the requests that ended in the interval with a success within the
client timeout and ``offered`` those that arrived in it, so the ratio may exceed 1 while
a backlog drains. With ``K = healthy_intervals``:

- ``stable``: every interval of the run is healthy;
- ``recovers``: some interval is unhealthy, and the last ``K`` are all healthy.
  ``recovery_s = max(0, t_h - trigger_end_s)``, ``t_h`` being the start of the run of
  healthy intervals that lasts to the end (0 when the system was already healthy when the
  trigger ended);
- ``metastable``: one of the last ``K`` intervals is unhealthy, although the trigger
  ended at least ``max(10 s, 2 x trigger duration, K x interval_s)`` before the end of the
  run (:func:`phase_diagram` refuses a ``duration_s`` too short for that).

A load that is unhealthy even before the trigger (above the system's plain capacity) is
classified the same way, so it usually shows as ``metastable``; its
``PhaseCell.goodput_before`` tells it apart. Choose ``interval_s`` so that an interval
holds many requests: at 10 an interval, one response landing in the next interval is
already a 10% dip.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .. import _validate as v
from ..errors import InvalidConfig
from ._sim import Client, Fault, simulate
from ._sim_result import TimelineRow
from ._topology import Topology

__all__ = ["PhaseCell", "PhaseDiagram", "phase_diagram"]

REGIMES = ("stable", "recovers", "metastable")
TRIGGER_KINDS = ("latency", "capacity")
MIN_SETTLE_S = 10.0
_OWNER = "phase_diagram"
_LETTERS = {"stable": "S", "recovers": "R", "metastable": "M"}


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseCell:
    """One cell of a :class:`PhaseDiagram`: one run at ``load`` with a trigger of size
    ``factor`` lasting ``duration_s`` seconds.

    ``regime``: ``"stable"``, ``"recovers"`` or ``"metastable"`` (see the module's
    classification rule); ``recovery_s``: seconds from the trigger's end to the lasting
    return to health (0 when stable or healthy at the trigger's end, None when
    metastable). The ratios are ``goodput / offered`` summed over the intervals wholly
    before the trigger (``goodput_before``), over those that overlap it
    (``goodput_during``) and over the last ``K`` intervals (``goodput_end``); None when
    nothing arrived in them. ``amplification_end``: attempts sent per request offered over
    the last ``K`` intervals (1 without retries; 0 when nothing arrived).
    """

    load: float
    factor: float
    duration_s: float
    regime: str
    recovery_s: float | None
    goodput_before: float | None
    goodput_during: float | None
    goodput_end: float | None
    amplification_end: float

    @property
    def label(self) -> str:
        """The cell in a table: ``S``, ``R 3s`` (recovers in 3 s) or ``M``."""
        if self.regime == "recovers":
            return f"R {self.recovery_s:g}s"
        return _LETTERS[self.regime]

    def to_dict(self) -> dict[str, Any]:
        return {
            "load": self.load,
            "factor": self.factor,
            "duration_s": self.duration_s,
            "regime": self.regime,
            "recovery_s": self.recovery_s,
            "goodput_before": self.goodput_before,
            "goodput_during": self.goodput_during,
            "goodput_end": self.goodput_end,
            "amplification_end": self.amplification_end,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseDiagram:
    """What :func:`phase_diagram` returns: its settings, the axes (each ascending) and one
    :class:`PhaseCell` per ``(load, factor, duration)``, loads outermost, durations
    innermost."""

    trigger_station: str
    trigger_kind: str
    trigger_at_s: float
    loads: tuple[float, ...]
    factors: tuple[float, ...]
    durations_s: tuple[float, ...]
    duration_s: float
    seed: int
    interval_s: float
    healthy_ratio: float
    healthy_intervals: int
    cells: tuple[PhaseCell, ...] = field(repr=False)

    def cell(self, load: float, factor: float, duration: float) -> PhaseCell:
        """The cell at ``load``, trigger ``factor`` and trigger ``duration`` (seconds),
        each one of the axis values (compared to a relative 1e-9)."""
        owner = "PhaseDiagram.cell"
        i = _axis_index(owner, "load", load, self.loads)
        j = _axis_index(owner, "factor", factor, self.factors)
        k = _axis_index(owner, "duration", duration, self.durations_s)
        return self.cells[(i * len(self.factors) + j) * len(self.durations_s) + k]

    def boundary(self, factor: float, duration: float) -> float | None:
        """The smallest load whose cell at trigger ``factor`` and ``duration`` (seconds)
        is metastable; None if none is."""
        for load in self.loads:
            if self.cell(load, factor, duration).regime == "metastable":
                return load
        return None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (every number finite, absent figures None)."""
        return {
            "trigger": {
                "station": self.trigger_station,
                "kind": self.trigger_kind,
                "at_s": self.trigger_at_s,
                "factors": list(self.factors),
                "durations_s": list(self.durations_s),
            },
            "loads": list(self.loads),
            "duration_s": self.duration_s,
            "seed": self.seed,
            "interval_s": self.interval_s,
            "healthy_ratio": self.healthy_ratio,
            "healthy_intervals": self.healthy_intervals,
            "cells": [c.to_dict() for c in self.cells],
        }

    def format_table(self) -> str:
        """One grid per trigger duration: loads as rows, factors as columns, each entry
        ``S`` (stable), ``R 3s`` (recovers 3 s after the trigger ends) or ``M``
        (metastable); a header names the trigger and a legend line explains the entries."""
        size = "latency x factor" if self.trigger_kind == "latency" else "servers / factor"
        lines = [
            f"trigger: {size} at station {self.trigger_station!r} from {self.trigger_at_s:g} s",
            f"S stable, R <t>s recovers <t> s after the trigger ends, M metastable "
            f"(healthy: goodput >= {self.healthy_ratio:g} x offered per {self.interval_s:g} s)",
        ]
        corner = "load \\ factor"
        for duration in self.durations_s:
            header = [corner, *(f"{f:g}" for f in self.factors)]
            rows = [
                [f"{load:g}", *(self.cell(load, f, duration).label for f in self.factors)]
                for load in self.loads
            ]
            widths = [max(len(r[c]) for r in (header, *rows)) for c in range(len(header))]
            lines.append("")
            lines.append(f"trigger duration {duration:g} s")
            for row in (header, *rows):
                first = row[0].ljust(widths[0])
                rest = (text.rjust(width) for text, width in zip(row[1:], widths[1:], strict=True))
                lines.append("  ".join((first, *rest)))
        return "\n".join(lines)


def phase_diagram(
    topology: Topology,
    make_clients: Callable[[float], Sequence[Client]],
    *,
    loads: Sequence[float],
    trigger_station: str,
    trigger_factors: Sequence[float],
    trigger_durations: Sequence[float],
    trigger_at_s: float,
    duration_s: float,
    seed: int = 0,
    workers: int | None = None,
    interval_s: float = 1.0,
    healthy_ratio: float = 0.9,
    healthy_intervals: int = 3,
    trigger_kind: str = "latency",
) -> PhaseDiagram:
    """Run ``topology`` once per ``(load, factor, duration)`` and classify every run.

    ``make_clients(load)`` returns the clients at load level ``load`` (the caller decides
    what a level means, for instance a multiplier of the scenario's rates); with more than
    one worker it must pickle (a module-level function or a ``functools.partial`` of one).
    The trigger is a :class:`Fault` at ``trigger_station`` from ``trigger_at_s`` for
    ``duration`` seconds: the station works ``factor`` times slower (``trigger_kind=
    "latency"``) or runs ``max(1, round(servers / factor))`` servers (``"capacity"``).
    Each run lasts ``duration_s`` seconds of virtual time, with ``seed`` and a timeline of
    ``interval_s`` intervals, classified as the module explains (``healthy_ratio``,
    ``healthy_intervals`` = K). ``workers``: processes to run the cells on (None: one per
    core; 1: in this process); the result does not depend on it. The workers are started
    with ``spawn``, so a script that asks for several needs the ``if __name__ ==
    "__main__":`` guard.
    """
    setup = _check(
        topology,
        make_clients,
        trigger_station=trigger_station,
        trigger_at_s=trigger_at_s,
        duration_s=duration_s,
        seed=seed,
        interval_s=interval_s,
        healthy_ratio=healthy_ratio,
        healthy_intervals=healthy_intervals,
        trigger_kind=trigger_kind,
    )
    load_axis = _axis("loads", loads)
    factor_axis = _axis("trigger_factors", trigger_factors)
    duration_axis = _axis("trigger_durations", trigger_durations)
    settle_s = max(MIN_SETTLE_S, 2 * duration_axis[-1], setup.healthy_intervals * setup.interval_s)
    needed_s = setup.trigger_at_s + duration_axis[-1] + settle_s
    if setup.duration_s < needed_s:
        raise InvalidConfig(
            _OWNER,
            "duration_s",
            duration_s,
            f">= {needed_s:g}: trigger_at_s + the longest trigger + max(10 s, 2 x that "
            f"trigger, healthy_intervals x interval_s), so that a run still unhealthy at "
            f"the end had time to recover",
        )
    if workers is None:
        workers = os.cpu_count() or 1
    else:
        v.int_at_least(_OWNER, "workers", workers, 1)
    jobs = [
        (load, factor, trigger_s, _trigger(setup, factor, trigger_s))
        for load in load_axis
        for factor in factor_axis
        for trigger_s in duration_axis
    ]
    workers = min(workers, len(jobs))
    if workers == 1:
        cells = [_run_cell(setup, *job) for job in jobs]
    else:
        cells = _run_parallel(setup, jobs, workers)
    return PhaseDiagram(
        trigger_station=trigger_station,
        trigger_kind=trigger_kind,
        trigger_at_s=setup.trigger_at_s,
        loads=load_axis,
        factors=factor_axis,
        durations_s=duration_axis,
        duration_s=setup.duration_s,
        seed=seed,
        interval_s=setup.interval_s,
        healthy_ratio=setup.healthy_ratio,
        healthy_intervals=healthy_intervals,
        cells=tuple(cells),
    )


# -- checking --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Setup:
    """What every cell shares: the model, the run and the classification settings."""

    topology: Topology
    make_clients: Callable[[float], Sequence[Client]]
    trigger_station: str
    trigger_kind: str
    trigger_at_s: float
    duration_s: float
    seed: int
    interval_s: float
    healthy_ratio: float
    healthy_intervals: int


def _check(
    topology: object,
    make_clients: object,
    *,
    trigger_station: object,
    trigger_at_s: object,
    duration_s: object,
    seed: object,
    interval_s: object,
    healthy_ratio: object,
    healthy_intervals: object,
    trigger_kind: object,
) -> _Setup:
    if not isinstance(topology, Topology):
        raise InvalidConfig(_OWNER, "topology", topology, "a Topology")
    if not callable(make_clients):
        raise InvalidConfig(
            _OWNER, "make_clients", make_clients, "a function of a load returning the clients"
        )
    names = [st.name for st in topology.stations]
    if not isinstance(trigger_station, str) or trigger_station not in names:
        raise InvalidConfig(
            _OWNER,
            "trigger_station",
            trigger_station,
            "a station of the topology: " + ", ".join(repr(n) for n in names),
        )
    kind = v.one_of(_OWNER, "trigger_kind", trigger_kind, TRIGGER_KINDS)
    if kind == "capacity" and topology.station(trigger_station).servers is None:
        raise InvalidConfig(
            _OWNER,
            "trigger_station",
            trigger_station,
            "a station with a finite number of servers when trigger_kind='capacity'",
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidConfig(_OWNER, "seed", seed, "an integer")
    ratio = v.ratio(_OWNER, "healthy_ratio", healthy_ratio)
    if ratio == 0:
        raise InvalidConfig(_OWNER, "healthy_ratio", healthy_ratio, "a number in (0, 1]")
    return _Setup(
        topology=topology,
        make_clients=make_clients,
        trigger_station=trigger_station,
        trigger_kind=kind,
        trigger_at_s=v.non_negative(_OWNER, "trigger_at_s", trigger_at_s),
        duration_s=v.positive(_OWNER, "duration_s", duration_s),
        seed=seed,
        interval_s=v.positive(_OWNER, "interval_s", interval_s),
        healthy_ratio=ratio,
        healthy_intervals=v.int_at_least(_OWNER, "healthy_intervals", healthy_intervals, 1),
    )


def _axis(name: str, values: object) -> tuple[float, ...]:
    """A non-empty sequence of distinct finite numbers > 0, in ascending order."""
    allowed = "a non-empty sequence of distinct finite numbers > 0"
    if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
        raise InvalidConfig(_OWNER, name, values, allowed)
    axis = []
    for i, value in enumerate(values):
        axis.append(v.positive(_OWNER, f"{name}[{i}]", value))
    if len(set(axis)) != len(axis):
        raise InvalidConfig(_OWNER, name, values, allowed)
    return tuple(sorted(axis))


def _axis_index(owner: str, name: str, value: object, axis: tuple[float, ...]) -> int:
    if isinstance(value, int | float) and not isinstance(value, bool):
        for i, x in enumerate(axis):
            if math.isclose(value, x, rel_tol=1e-9):
                return i
    raise InvalidConfig(owner, name, value, "one of " + ", ".join(f"{x:g}" for x in axis))


def _trigger(setup: _Setup, factor: float, duration_s: float) -> Fault:
    station, at_s = setup.trigger_station, setup.trigger_at_s
    if setup.trigger_kind == "latency":
        return Fault(station=station, at_s=at_s, duration_s=duration_s, latency_factor=factor)
    servers = setup.topology.station(station).servers
    assert servers is not None  # _check refuses a capacity trigger on an unlimited station
    return Fault(
        station=station, at_s=at_s, duration_s=duration_s, servers=max(1, round(servers / factor))
    )


# -- running ---------------------------------------------------------------------------


def _run_cell(
    setup: _Setup, load: float, factor: float, trigger_s: float, fault: Fault
) -> PhaseCell:
    """Simulate one cell and classify its timeline."""
    result = simulate(
        setup.topology,
        setup.make_clients(load),
        setup.duration_s,
        setup.seed,
        interval_s=setup.interval_s,
        faults=(fault,),
    )
    return _classify(result.timeline, setup, load=load, factor=factor, trigger_s=trigger_s)


def _run_pickled(
    setup: bytes, load: float, factor: float, trigger_s: float, fault: Fault
) -> PhaseCell:
    """:func:`_run_cell` in a worker process, the setup pickled by :func:`_dumps`."""
    return _run_cell(pickle.loads(setup), load, factor, trigger_s, fault)


def _run_parallel(
    setup: _Setup, jobs: Sequence[tuple[float, float, float, Fault]], workers: int
) -> list[PhaseCell]:
    try:
        payload = _dumps(setup)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise InvalidConfig(
            _OWNER,
            "make_clients",
            setup.make_clients,
            f"a picklable callable (a module-level function or a functools.partial of one) "
            f"when workers > 1 ({exc})",
        ) from exc
    # spawn: a fresh interpreter per worker, the same on every platform and safe whatever
    # threads the caller runs (fork would copy their locks mid-flight).
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures: list[Future[PhaseCell]] = []
        try:
            futures.extend(pool.submit(_run_pickled, payload, *job) for job in jobs)
            return [f.result() for f in futures]
        finally:
            for f in futures:
                f.cancel()


def _mapping_proxy(items: dict[Any, Any]) -> Mapping[Any, Any]:
    return MappingProxyType(items)


def _reduce_mapping_proxy(proxy: Mapping[Any, Any]) -> tuple[Any, tuple[dict[Any, Any]]]:
    return _mapping_proxy, (dict(proxy),)


def _dumps(obj: object) -> bytes:
    """``pickle.dumps``, with the read-only mappings of the topology (``MappingProxyType``,
    which pickle refuses) sent as dicts and wrapped again on loading."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = {MappingProxyType: _reduce_mapping_proxy}
    pickler.dump(obj)
    return buffer.getvalue()


# -- classifying -----------------------------------------------------------------------


def _ratio(rows: Sequence[TimelineRow]) -> float | None:
    offered = sum(r.offered for r in rows)
    return sum(r.goodput for r in rows) / offered if offered else None


def _classify(
    rows: Sequence[TimelineRow], setup: _Setup, *, load: float, factor: float, trigger_s: float
) -> PhaseCell:
    """The regime of one run from its timeline (see the module docstring)."""
    k = setup.healthy_intervals
    start_s = setup.trigger_at_s
    end_s = start_s + trigger_s
    slack_s = 1e-9 * max(1.0, setup.duration_s)  # interval ends are multiples of interval_s
    ratio = setup.healthy_ratio
    unhealthy = [i for i, r in enumerate(rows) if r.offered and r.goodput < ratio * r.offered]
    tail = rows[-k:]
    if not unhealthy:
        regime, recovery_s = "stable", 0.0
    elif unhealthy[-1] < len(rows) - k:
        # The healthy run to the end starts where the last unhealthy interval ends.
        regime, recovery_s = "recovers", round(max(0.0, rows[unhealthy[-1]].t_s - end_s), 9)
    else:
        regime, recovery_s = "metastable", None
    offered_end = sum(r.offered for r in tail)
    return PhaseCell(
        load=load,
        factor=factor,
        duration_s=trigger_s,
        regime=regime,
        recovery_s=recovery_s,
        goodput_before=_ratio([r for r in rows if r.t_s <= start_s + slack_s]),
        goodput_during=_ratio(
            [
                r
                for r in rows
                if r.t_s > start_s + slack_s and r.t_s - setup.interval_s < end_s - slack_s
            ]
        ),
        goodput_end=_ratio(tail),
        amplification_end=sum(r.attempts for r in tail) / offered_end if offered_end else 0.0,
    )
