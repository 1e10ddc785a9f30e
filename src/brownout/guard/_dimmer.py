"""Dimmer: the brownout controller for optional work (Klein et al., ICSE 2014).

A page has mandatory content (the product, the cart) and optional content (recommendations,
reviews) that is nice to have and costs capacity. Under load, serving less of the optional
part keeps response times bounded without refusing anybody. The dimmer value ``theta`` in
[0, 1] is the probability of serving optional content; a controller moves it so that the
response time stays near a setpoint.

Control law (the paper's adaptive controller, one step every ``interval_s``)::

    t_k     = percentile(latencies of the last window_s seconds)     (p95 by default)
    a_k     = t_k / max(theta_k, 0.1)                                (latency per unit of theta)
    alpha_k = alpha_{k-1} + 0.5 * (a_k - alpha_{k-1})                (smoothed; alpha_0 = a_0)
    e_k     = setpoint_s - t_k
    theta_{k+1} = clamp(theta_k + gain * e_k / alpha_k, 0, 1)

The paper models the response time as proportional to theta, ``t = alpha * theta``, with
alpha changing as load changes, estimates alpha online (a Kalman filter there, a smoothed
ratio here: the steady-state form of the same filter) and places the closed-loop pole at
``p = 1 - gain``: with a correct estimate the error shrinks by ``p`` per step. ``gain=0.1``
(pole 0.9) is conservative; larger gains converge faster and oscillate more on a noisy
percentile. Because the estimate is refreshed at every step, the effective gain falls as
latency climbs steeply near saturation, which keeps the loop stable where a fixed-gain PI
would overshoot. The floor 0.1 in ``a_k`` stops a near-zero theta from inflating alpha
(mandatory work keeps latency above zero when theta is 0), so theta climbs back within a
few steps once load drops. There is no integrator state to wind up: theta itself is the
integral, clamped to [0, 1].

Features: ``features={"recommendations": 0.5, "reviews": 0.2}`` gives each optional
feature a threshold ``t_f`` in [0, 1): the feature is served with probability::

    p_f = clamp((theta - t_f) / (1 - t_f), 0, 1)

At ``theta = 1`` everything is served. As theta falls, the feature with the highest
threshold fades first and is off once ``theta <= t_f``; features with lower thresholds
(cheaper or more valuable ones) are dimmed later and less. A name not listed (``"default"``)
has threshold 0 and is served with probability theta, the paper's dimmer. The ramps keep the
controlled system continuous: an on/off switch per feature would make the latency jump at
each threshold and the controller hunt between them.

Sans-IO: :meth:`Dimmer.observe` and :meth:`Dimmer.update` take ``now`` (default: the
dimmer's clock); a control step runs inside ``observe`` or ``update`` once ``interval_s`` has
passed since the previous one, so no timer or thread is needed. Steps need at least
``min_samples`` latencies in the window; with fewer, theta holds.
"""

from __future__ import annotations

import math
import random
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .. import _validate as v
from .._clock import Clock, monotonic_clock
from ..errors import InvalidConfig
from ..events import Event, Events

__all__ = ["Dimmer", "DimmerChanged"]

# Theta below which the latency-per-theta estimate stops growing (see the module docstring).
_THETA_FLOOR = 0.1
# Weight of the newest ratio in the smoothed alpha estimate.
_ALPHA_WEIGHT = 0.5
# A latency statistic is never taken as exactly zero (it divides).
_TINY_S = 1e-9
# DimmerChanged is emitted when theta has moved this much since the last event, or reached
# 0 or 1.
_EVENT_STEP = 0.05


@dataclass(frozen=True, slots=True)
class DimmerChanged(Event):
    """The dimmer moved from ``old`` (its value at the previous event) to ``new``.

    ``latency_s`` is the windowed latency statistic that drove the step, ``setpoint_s`` the
    target. Emitted when theta has moved by 0.05 or more since the last event, or has reached
    0 or 1.
    """

    old: float
    new: float
    latency_s: float
    setpoint_s: float


class _DimmerState:
    """What changes: theta, the alpha estimate, the latency window, the step schedule."""

    __slots__ = (
        "alpha",
        "latency_s",
        "lock",
        "next_step_at",
        "probabilities",
        "reported",
        "rng",
        "samples",
        "theta",
    )

    def __init__(self, rng: random.Random, max_samples: int) -> None:
        self.theta = 1.0
        self.alpha: float | None = None
        self.latency_s: float | None = None
        self.next_step_at: float | None = None
        self.reported = 1.0
        self.rng = rng
        # (time, latency) pairs, oldest first; appends and poplefts are atomic.
        self.samples: deque[tuple[float, float]] = deque(maxlen=max_samples)
        self.probabilities: dict[str, float] = {}
        self.lock = threading.Lock()


@dataclass(frozen=True, slots=True, kw_only=True)
class Dimmer:
    """Keep the response time near ``setpoint_s`` by serving less optional content.

    Configuration (durations in seconds):

    - ``setpoint_s``: the target for the latency statistic (default 0.2).
    - ``gain``: ``1 - pole`` of the control law in the module docstring (default 0.1, in
      (0, 1]).
    - ``window_s``: the statistic covers the latencies observed in the last ``window_s``.
    - ``interval_s``: time between control steps (default: ``window_s``, so each step sees
      only new samples).
    - ``percentile``: the statistic, in (0, 100] (default 95; 100 is the maximum, which the
      paper used; nearest-rank).
    - ``features``: feature name -> threshold in [0, 1) (see the module docstring).
    - ``min_samples``: fewer latencies than this in the window and theta holds (default 10).
    - ``max_samples``: the window keeps at most this many latencies, the newest (default
      10000), which bounds memory and the cost of a step at high request rates.
    - ``rng``: the random source for :meth:`serve_optional` (default an unseeded
      ``random.Random``; pass a seeded one for reproducible runs).

    Use: ``dimmer.observe(latency_s)`` for every response (or every sampled one), and
    ``if dimmer.serve_optional("recommendations"): ...`` where optional work is decided.
    ``value`` is theta; ``probability(feature)`` the chance that feature is served now.
    Thread-safe; a control step runs in whichever thread observes when one is due.
    """

    setpoint_s: float = 0.2
    gain: float = 0.1
    window_s: float = 1.0
    interval_s: float | None = None
    percentile: float = 95.0
    features: Mapping[str, float] = field(default_factory=dict)
    min_samples: int = 10
    max_samples: int = 10_000
    name: str = "dimmer"
    clock: Clock = field(default=monotonic_clock, repr=False, compare=False)
    events: Events = field(default_factory=Events, repr=False, compare=False)
    rng: random.Random | None = field(default=None, repr=False, compare=False)
    _state: _DimmerState = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        owner = "Dimmer"
        v.positive(owner, "setpoint_s", self.setpoint_s)
        v.positive(owner, "gain", self.gain)
        if self.gain > 1:
            raise InvalidConfig(owner, "gain", self.gain, "a number in (0, 1]")
        v.positive(owner, "window_s", self.window_s)
        if self.interval_s is not None:
            v.positive(owner, "interval_s", self.interval_s)
        v.positive(owner, "percentile", self.percentile)
        if self.percentile > 100:
            raise InvalidConfig(owner, "percentile", self.percentile, "a number in (0, 100]")
        if not isinstance(self.features, Mapping):
            raise InvalidConfig(owner, "features", self.features, "a mapping of name -> threshold")
        features: dict[str, float] = {}
        for feature, threshold in self.features.items():
            if not isinstance(feature, str) or not feature:
                raise InvalidConfig(owner, "features", self.features, "non-empty string names")
            v.ratio(owner, f"features[{feature!r}]", threshold)
            if threshold >= 1:
                raise InvalidConfig(owner, f"features[{feature!r}]", threshold, "in [0, 1)")
            features[feature] = float(threshold)
        v.int_at_least(owner, "min_samples", self.min_samples, 1)
        v.int_at_least(owner, "max_samples", self.max_samples, 1)
        if self.rng is not None and not isinstance(self.rng, random.Random):
            raise InvalidConfig(owner, "rng", self.rng, "a random.Random or None")
        if not isinstance(self.name, str) or not self.name:
            raise InvalidConfig(owner, "name", self.name, "a non-empty string")
        object.__setattr__(self, "features", MappingProxyType(features))
        state = _DimmerState(self.rng or random.Random(), self.max_samples)
        object.__setattr__(self, "_state", state)
        self._publish(1.0)

    # -- what it reads -------------------------------------------------------------------

    @property
    def value(self) -> float:
        """Theta: the probability of serving optional content, in [0, 1]."""
        return self._state.theta

    @property
    def latency_s(self) -> float | None:
        """The latency statistic of the last control step (seconds), None before one."""
        return self._state.latency_s

    def probability(self, feature: str = "default") -> float:
        """The probability that ``feature`` is served now (see the module docstring)."""
        state = self._state
        return state.probabilities.get(feature, state.theta)

    # -- the hot path --------------------------------------------------------------------

    def serve_optional(self, feature: str = "default") -> bool:
        """Should this request get the optional ``feature``? A draw with the feature's
        probability (no draw at 0 or 1). Never steps the controller."""
        state = self._state
        p = state.probabilities.get(feature, state.theta)
        if p >= 1.0:
            return True
        if p <= 0.0:
            return False
        return state.rng.random() < p

    def observe(self, latency_s: float, now: float | None = None) -> None:
        """Record one response time (seconds) at ``now`` (default: the clock), and run a
        control step when one is due."""
        if not latency_s >= 0.0:  # also refuses NaN, which would poison the percentile
            raise InvalidConfig("Dimmer.observe", "latency_s", latency_s, "a number >= 0")
        if now is None:
            now = self.clock.now()
        state = self._state
        state.samples.append((now, latency_s))
        due = state.next_step_at
        if due is None or now >= due:
            self._step(now)

    def update(self, now: float | None = None) -> float:
        """Run a control step if one is due at ``now`` (default: the clock); return theta."""
        if now is None:
            now = self.clock.now()
        due = self._state.next_step_at
        if due is None or now >= due:
            self._step(now)
        return self._state.theta

    # -- the controller ------------------------------------------------------------------

    def _step(self, now: float) -> None:
        state = self._state
        if not state.lock.acquire(blocking=False):
            return  # another thread is stepping right now
        try:
            due = state.next_step_at
            interval = self.window_s if self.interval_s is None else self.interval_s
            if due is None:  # the first observation starts the schedule
                state.next_step_at = now + interval
                return
            if now < due:
                return
            state.next_step_at = now + interval
            samples = state.samples
            cutoff = now - self.window_s
            while samples and samples[0][0] < cutoff:
                samples.popleft()
            window = sorted(latency for _, latency in list(samples))
            n = len(window)
            if n < self.min_samples:
                return
            rank = max(1, math.ceil(self.percentile / 100.0 * n))
            latency = window[rank - 1]
            theta = state.theta
            ratio = max(latency, _TINY_S) / max(theta, _THETA_FLOOR)
            alpha = state.alpha
            alpha = ratio if alpha is None else alpha + _ALPHA_WEIGHT * (ratio - alpha)
            state.alpha = alpha
            state.latency_s = latency
            new = theta + self.gain * (self.setpoint_s - latency) / alpha
            new = 0.0 if new < 0.0 else 1.0 if new > 1.0 else new
            if new != theta:
                self._publish(new)
            if self.events and (
                abs(new - state.reported) >= _EVENT_STEP
                or (new in (0.0, 1.0) and new != state.reported)
            ):
                self.events.emit(
                    DimmerChanged(now, self.name, state.reported, new, latency, self.setpoint_s)
                )
                state.reported = new
            elif not self.events:
                state.reported = new
        finally:
            state.lock.release()

    def _publish(self, theta: float) -> None:
        """Set theta and the per-feature probabilities (one dict swap: readers see either
        the old table or the new one)."""
        state = self._state
        table: dict[str, float] = {}
        for feature, threshold in self.features.items():
            p = (theta - threshold) / (1.0 - threshold)
            table[feature] = 0.0 if p < 0.0 else 1.0 if p > 1.0 else p
        state.theta = theta
        state.probabilities = table
