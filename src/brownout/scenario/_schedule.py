"""Rate schedules and arrival times (REFERENCES.md section 6).

The rate of a traffic class, ``lambda(t)`` in requests (or session starts) per second at
``t`` seconds from the run start, is piecewise linear:

- stages follow each other from t = 0: a constant stage holds ``rate``; a ramp stage goes
  linearly from the previous stage's rate (0 before the first stage) to ``target``;
- spikes add their ``rate`` on ``[at_s, at_s + duration_s)``;
- after the last stage (and spike) the rate is 0;
- ``bursty`` arrival modulates it with a fixed on/off cycle starting "on" at t = 0: the rate
  is multiplied by ``(on + off) / on`` during on periods and is 0 during off periods, so the
  mean rate over whole cycles matches the schedule.

``Lambda(t) = integral of lambda over [0, t)`` is the expected number of arrivals before
``t``. Arrival ``i`` (0-based, in order) of the one global schedule is sent at:

- ``constant``: ``t_i = Lambda^-1(i + 1/2)`` (the midpoint rule: arrival ``i`` goes when half
  of its share of the schedule has accumulated, so a constant rate ``r`` sends at
  ``(i + 1/2) / r``, and the count in any interval ``[a, b)`` is within 1 of
  ``Lambda(b) - Lambda(a)``);
- ``poisson`` and ``bursty``: ``t_i = Lambda^-1(E_1 + ... + E_(i+1))`` with ``E_j``
  exponential(1) drawn from ``random.Random(seed)``: a unit-rate Poisson process put on the
  schedule's clock (a time-changed, non-homogeneous Poisson process).

``Lambda^-1`` is closed-form on each linear piece: with ``u = t - a`` seconds into a piece
starting at ``a`` with rate ``r0`` and slope ``k``, the ``d`` arrivals expected from the
piece start are reached at ``u = d / r0`` (``k = 0``), else at the root of
``r0*u + k*u**2/2 = d`` taken in the stable form ``u = 2d / (r0 + sqrt(r0**2 + 2*k*d))``.
No numerical integration happens.
"""

from __future__ import annotations

import itertools
import math
import random
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from ..errors import ScenarioError
from . import _check as check

if TYPE_CHECKING:
    from ._model import Spike, Stage, TrafficClass

__all__ = ["arrivals", "build_pieces", "cumulative", "expected_count", "rate_at"]

# A linear piece of a schedule: start_s, end_s, rate at start (1/s), slope (1/s^2),
# expected arrivals before start.
Piece = tuple[float, float, float, float, float]


def build_pieces(stages: Iterable[Stage], spikes: Iterable[Spike]) -> tuple[Piece, ...]:
    """The unmodulated rate function of ``stages`` and ``spikes`` as linear pieces covering
    ``[0, end)`` without gaps, each with ``Lambda`` at its start."""
    ramps: list[tuple[float, float, float, float]] = []  # start, end, rate at start, at end
    t, previous = 0.0, 0.0
    for stage in stages:
        end = t + stage.duration_s
        if stage.rate is not None:
            ramps.append((t, end, stage.rate, stage.rate))
            previous = stage.rate
        else:
            assert stage.target is not None  # the model guarantees one of the two
            ramps.append((t, end, previous, stage.target))
            previous = stage.target
        t = end
    bursts = [(s.at_s, s.at_s + s.duration_s, s.rate) for s in spikes]
    edges = {0.0}
    for start, end, _, _ in ramps:
        edges.update((start, end))
    for start, end, _ in bursts:
        edges.update((start, end))
    points = sorted(edges)
    pieces: list[Piece] = []
    cum = 0.0
    j = 0
    for a, b in itertools.pairwise(points):
        while j < len(ramps) and ramps[j][1] <= a:
            j += 1
        r0 = slope = 0.0
        if j < len(ramps) and ramps[j][0] <= a:
            start, end, first, last = ramps[j]
            slope = (last - first) / (end - start)
            r0 = first + (last - first) * ((a - start) / (end - start))
        r0 += sum(rate for start, end, rate in bursts if start <= a and b <= end)
        r0 = max(r0, 0.0)
        pieces.append((a, b, r0, slope, cum))
        du = b - a
        cum += max((r0 + 0.5 * slope * du) * du, 0.0)
    return tuple(pieces)


def _base_cumulative(pieces: tuple[Piece, ...], starts: Sequence[float] | None, t: float) -> float:
    """Unmodulated ``Lambda(t)``."""
    if t <= 0 or not pieces:
        return 0.0
    last = pieces[-1]
    if t >= last[1]:
        du = last[1] - last[0]
        return last[4] + max((last[2] + 0.5 * last[3] * du) * du, 0.0)
    i = bisect_right(starts if starts is not None else [p[0] for p in pieces], t) - 1
    a, _, r0, slope, cum0 = pieces[i]
    u = t - a
    return cum0 + max((r0 + 0.5 * slope * u) * u, 0.0)


def _burst(cls: TrafficClass) -> tuple[float, float, float] | None:
    """(period_s, on_s, factor) when ``cls`` is bursty with a real off period."""
    if cls.arrival != "bursty" or cls.burst_off_s <= 0:
        return None
    on, off = cls.burst_on_s, cls.burst_off_s
    return on + off, on, (on + off) / on


def rate_at(cls: TrafficClass, t: float) -> float:
    """``lambda(t)``: the class's scheduled rate (per second) at ``t`` seconds from the
    start, on/off modulation included for ``bursty``; 0 outside ``[0, end_s)``."""
    pieces = cls._pieces  # computed once by the model
    if not pieces or t < 0 or t >= pieces[-1][1]:
        return 0.0
    a, _, r0, slope, _ = pieces[bisect_right(cls._starts, t) - 1]
    rate = max(r0 + slope * (t - a), 0.0)
    burst = _burst(cls)
    if burst is not None:
        period, on, factor = burst
        phase = t - math.floor(t / period) * period
        rate = rate * factor if phase < on else 0.0
    return rate


def cumulative(cls: TrafficClass, t: float) -> float:
    """``Lambda(t)``: arrivals expected in ``[0, t)`` (on/off modulation included).

    For ``bursty`` this sums whole on periods: ``factor * sum_k (Lambda0(min(t, kP + on))
    - Lambda0(kP))`` over cycles ``k`` with ``kP < t`` (``Lambda0`` unmodulated), which
    costs one step per cycle."""
    pieces, starts = cls._pieces, cls._starts
    burst = _burst(cls)
    if burst is None:
        return _base_cumulative(pieces, starts, t)
    period, on, factor = burst
    horizon = min(t, pieces[-1][1]) if pieces else 0.0
    total = 0.0
    k = 0
    while k * period < horizon:
        w0 = k * period
        w1 = min(w0 + on, horizon)
        total += _base_cumulative(pieces, starts, w1) - _base_cumulative(pieces, starts, w0)
        k += 1
    return factor * total


def expected_count(cls: TrafficClass, t0: float, t1: float) -> float:
    """Arrivals expected in ``[t0, t1)``: ``Lambda(t1) - Lambda(t0)``; 0 when ``t1 <= t0``."""
    if t1 <= t0:
        return 0.0
    return cumulative(cls, t1) - cumulative(cls, t0)


def _modulated(cls: TrafficClass, end_s: float) -> Iterator[tuple[float, float, float, float]]:
    """The rate function on ``[0, end_s)`` as linear pieces (start, end, rate, slope) with
    positive length; off periods of a bursty class are left out (they carry no arrivals)."""
    burst = _burst(cls)
    for a, b, r0, slope, _ in cls._pieces:
        if a >= end_s:
            return
        stop = b if b < end_s else end_s
        if burst is None:
            yield a, stop, r0, slope
            continue
        period, on, factor = burst
        k = math.floor(a / period)
        while k * period < stop:
            x = max(a, k * period)
            y = min(stop, k * period + on)
            if y > x:
                yield x, y, factor * (r0 + slope * (x - a)), factor * slope
            k += 1


def _constant_times(
    pieces: Iterator[tuple[float, float, float, float]], first: int, step: int
) -> Iterator[float]:
    """``t_i = Lambda^-1(i + 1/2)`` for ``i = first, first + step, ...``."""
    cum = 0.0
    y = first + 0.5  # the target Lambda of the next arrival to yield
    last = 0.0
    sqrt = math.sqrt
    for a, b, r0, slope in pieces:
        du = b - a
        mass = (r0 + 0.5 * slope * du) * du
        cum1 = cum + (mass if mass > 0.0 else 0.0)  # a ramp to 0 may round below 0
        if y < cum1:
            if slope == 0.0:
                inv = 1.0 / r0
                while y < cum1:
                    t = a + (y - cum) * inv
                    yield t if t < b else b
                    y += step
                last = b
            else:
                r0sq, two_k = r0 * r0, 2.0 * slope
                while y < cum1:
                    d = y - cum
                    disc = r0sq + two_k * d
                    root = r0 + (sqrt(disc) if disc > 0.0 else 0.0)
                    t = a + (2.0 * d / root if root > 0.0 else 0.0)
                    t = b if t > b else t  # rounding: stay inside the piece
                    t = last if t < last else t  # and never go backwards
                    last = t
                    yield t
                    y += step
        cum = cum1


def _poisson_times(
    pieces: Iterator[tuple[float, float, float, float]],
    rng: random.Random,
    first: int,
    step: int,
) -> Iterator[float]:
    """``t_i = Lambda^-1(E_1 + ... + E_(i+1))`` for ``i = first, first + step, ...``; every
    exponential is drawn (the same sequence in every segment), only kept ones inverted."""
    rand, log, sqrt = rng.random, math.log, math.sqrt
    s = -log(1.0 - rand())  # Lambda of global arrival 0
    skip = first  # arrivals to pass over before the next one this segment keeps
    keep_every = step - 1
    cum = 0.0
    last = 0.0
    for a, b, r0, slope in pieces:
        du = b - a
        mass = (r0 + 0.5 * slope * du) * du
        cum1 = cum + (mass if mass > 0.0 else 0.0)  # a ramp to 0 may round below 0
        if s < cum1:
            if slope == 0.0:
                inv = 1.0 / r0
                while s < cum1:
                    if skip:
                        skip -= 1
                    else:
                        t = a + (s - cum) * inv
                        yield t if t < b else b
                        skip = keep_every
                    s -= log(1.0 - rand())
                last = b
            else:
                r0sq, two_k = r0 * r0, 2.0 * slope
                while s < cum1:
                    if skip:
                        skip -= 1
                    else:
                        d = s - cum
                        disc = r0sq + two_k * d
                        root = r0 + (sqrt(disc) if disc > 0.0 else 0.0)
                        t = a + (2.0 * d / root if root > 0.0 else 0.0)
                        t = b if t > b else t
                        t = last if t < last else t
                        last = t
                        yield t
                        skip = keep_every
                    s -= log(1.0 - rand())
        cum = cum1


def check_segment(segment: object) -> tuple[int, int]:
    """``(k, n)`` with ``1 <= k <= n``: this process sends arrivals ``i % n == k - 1``."""
    allowed = "(k, n) with integers 1 <= k <= n, such as (2, 4) for --segment 2/4"
    if not isinstance(segment, tuple) or len(segment) != 2:
        raise ScenarioError("segment", segment, allowed)
    k, n = segment
    if (
        isinstance(k, bool)
        or isinstance(n, bool)
        or not isinstance(k, int)
        or not isinstance(n, int)
        or not 1 <= k <= n
    ):
        raise ScenarioError("segment", segment, allowed)
    return k, n


def arrivals(
    cls: TrafficClass,
    *,
    seed: int,
    duration_s: float,
    segment: tuple[int, int] = (1, 1),
) -> Iterator[float]:
    """The intended send times of ``cls`` (seconds from the run start, non-decreasing,
    all before ``duration_s`` or the end of the class's schedule) for this segment.

    ``segment=(k, n)`` yields exactly the arrivals whose global index ``i`` (0-based, in
    time order) has ``i % n == k - 1``: n processes given the same ``seed`` and segments
    1..n together send the one global schedule, each arrival once. Constant arrivals cost
    O(1) each and a segment computes only its own; Poisson segments draw every gap (the
    shared random sequence) but invert only their own arrivals. ``seed`` is unused for
    ``constant``. For a session class each arrival is a session start."""
    k, n = check_segment(segment)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ScenarioError("seed", seed, "an integer")
    end_s = check.duration("duration_s", duration_s)
    pieces = _modulated(cls, end_s)
    if cls.arrival == "constant":
        return _constant_times(pieces, k - 1, n)
    return _poisson_times(pieces, random.Random(seed), k - 1, n)
