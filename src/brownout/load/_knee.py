"""The knee search: the highest open-model rate the target sustains within its SLO.

The rate rises geometrically (x ``growth``) until a step fails, then the bracket between
the last passing and the first failing rate is bisected until it is narrower than
``precision`` (relative). Each step runs ``warmup_s + step_s`` seconds; only timeline rows
that start after the warm-up are judged. A step passes when all hold:

- achieved / offered >= ``min_achieved`` (0.98): completions keep up with arrivals
  (both counted over the whole rows inside ``[warmup_s, warmup_s + step_s)``; the run's
  last row also holds the drain after the schedule, which would hide an overload);
- the SLO (a latency threshold such as ``p(99) < 300ms``) holds on the CO-corrected
  response times of the measured rows (their histograms merged exactly);
- (errors + shed + timeouts + dropped) / offered <= ``error_budget``;
- in-flight is not growing: its least-squares slope over the measured rows (with the
  sample at the end of the warm-up first), times the intervals they span, stays under
  ``max(10, 25% of its mean)``;
- the generator kept up: send lag p99 <= ``max_lag_ms`` (default: the larger of 5 ms and
  10% of the SLO). A step that fails *only* on send lag stops the search: beyond that rate
  the generator, not the target, is the bottleneck.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ThresholdError
from ..results import Histogram, Threshold, evaluate, latency_figures

__all__ = ["KneeResult", "KneeSearch", "KneeStep"]


@dataclass(frozen=True, slots=True)
class KneeStep:
    rate: float
    passed: bool
    reasons: tuple[str, ...]
    achieved_ratio: float
    slo_observed_ms: float | None
    error_ratio: float
    send_lag_p99_ms: float | None
    in_flight_growth: float
    doc: dict[str, Any] = field(repr=False, compare=False)

    def describe(self) -> str:
        verdict = "pass" if self.passed else "FAIL (" + "; ".join(self.reasons) + ")"
        slo = "-" if self.slo_observed_ms is None else f"{self.slo_observed_ms:.1f} ms"
        lag = "-" if self.send_lag_p99_ms is None else f"{self.send_lag_p99_ms:.2f} ms"
        return (
            f"step {self.rate:9.1f}/s: achieved {self.achieved_ratio:6.1%}, slo metric {slo}, "
            f"errors {self.error_ratio:6.2%}, send lag p99 {lag}, in-flight growth "
            f"{self.in_flight_growth:+.0f} -> {verdict}"
        )


@dataclass(frozen=True, slots=True)
class KneeResult:
    knee_rps: float | None
    limited_by: str  # "target", "generator", "max_rate" or "interrupted"
    slo: str
    steps: tuple[KneeStep, ...]

    def describe(self) -> str:
        if self.knee_rps is None:
            return f"knee: not found (no step passed {self.slo}; limited by {self.limited_by})"
        return f"knee: {self.knee_rps:.1f} req/s within {self.slo} (limited by {self.limited_by})"

    def to_document(self) -> dict[str, Any]:
        """The passing step with the highest rate, as a results document with a ``knee`` section."""
        best = max((s for s in self.steps if s.passed), key=lambda s: s.rate, default=None)
        doc = dict(best.doc) if best is not None else dict(self.steps[-1].doc) if self.steps else {}
        doc["knee"] = {
            "knee_rps": self.knee_rps,
            "limited_by": self.limited_by,
            "slo": self.slo,
            "steps": [
                {
                    "rate": s.rate,
                    "passed": s.passed,
                    "reasons": list(s.reasons),
                    "achieved_ratio": s.achieved_ratio,
                    "slo_observed_ms": s.slo_observed_ms,
                    "error_ratio": s.error_ratio,
                    "send_lag_p99_ms": s.send_lag_p99_ms,
                    "in_flight_growth": s.in_flight_growth,
                }
                for s in self.steps
            ],
        }
        return doc


class KneeSearch:
    """Configuration and logic of the knee search; ``run`` drives it with a step runner."""

    def __init__(
        self,
        *,
        slo: Threshold,
        start_rate: float,
        max_rate: float,
        step_s: float,
        warmup_s: float,
        error_budget: float = 0.01,
        precision: float = 0.05,
        growth: float = 2.0,
        min_achieved: float = 0.98,
        max_lag_ms: float | None = None,
    ) -> None:
        if slo.family != "response":
            raise ThresholdError(
                slo.expr, "the knee SLO must be a response-time threshold, e.g. 'p(99) < 300ms'"
            )
        if not (0 < start_rate <= max_rate):
            raise ValueError(
                f"--start-rate={start_rate:g} must be > 0 and <= --max-rate={max_rate:g}"
            )
        if step_s <= 0:
            raise ValueError(f"--step={step_s:g} must be > 0")
        self.slo = slo
        self.start_rate = start_rate
        self.max_rate = max_rate
        self.step_s = step_s
        self.warmup_s = warmup_s
        self.error_budget = error_budget
        self.precision = precision
        self.growth = growth
        self.min_achieved = min_achieved
        self.max_lag_ms = max_lag_ms if max_lag_ms is not None else max(5.0, 0.1 * slo.value)

    def judge(self, rate: float, doc: dict[str, Any]) -> KneeStep:
        """Judge one step's results document (rows after the warm-up only)."""
        timeline = doc.get("timeline", [])
        after = [r for r in timeline if r["t_s"] >= self.warmup_s - 1e-9]
        # The last row of a run also holds the drain after the schedule ended (or rows of
        # their own follow it): its completions and its in-flight of 0 would hide an
        # overload. Rates and in-flight use only whole rows inside the schedule,
        # [warmup_s, warmup_s + step_s); errors and latencies use every row after the
        # warm-up (late completions are the slow requests).
        end_s = self.warmup_s + self.step_s
        interval_s = float(doc.get("interval_s") or 1.0)
        rows = [r for r in after if r["t_s"] + interval_s <= end_s + 1e-9] or after
        before = [r for r in timeline if r["t_s"] < self.warmup_s - 1e-9]
        offered = sum(r["offered"] for r in rows)
        done = sum(r["ok"] + r["errors"] + r["shed"] for r in rows)
        offered_after = sum(r["offered"] for r in after)
        bad = sum(r["errors"] + r["shed"] + r["timeouts"] + r["dropped"] for r in after)
        response: Histogram | None = None
        lag: Histogram | None = None
        for r in after:
            hists = r.get("histograms") or {}
            if "response" in hists:
                response = _merged(response, hists["response"])
            if "send_lag" in hists:
                lag = _merged(lag, hists["send_lag"])
        achieved = done / offered if offered else 0.0
        errors = bad / offered_after if offered_after else 1.0
        observed, slo_ok = (None, False)
        if response is not None and response.count:
            section = {"latency_ms": latency_figures(response)}
            observed, slo_ok = evaluate(self.slo, section, {"response": response})
        lag_p99 = lag.value_at_percentile(99) / 1000 if lag is not None and lag.count else None
        # In-flight at the window's start (the end of the last warm-up row), then per row.
        samples = [float(r.get("in_flight") or 0) for r in (before[-1:] + rows)]
        growth = _growth(samples, self.step_s)
        mean_in_flight = sum(float(r.get("in_flight") or 0) for r in rows) / max(len(rows), 1)
        reasons = []
        if achieved < self.min_achieved:
            reasons.append(f"achieved {achieved:.1%} < {self.min_achieved:.0%}")
        if not slo_ok:
            reasons.append(f"SLO {self.slo.expr} not met")
        if errors > self.error_budget:
            reasons.append(f"errors {errors:.2%} > {self.error_budget:.2%}")
        if growth > max(10.0, 0.25 * mean_in_flight):
            reasons.append(f"in-flight growing (+{growth:.0f})")
        if lag_p99 is not None and lag_p99 > self.max_lag_ms:
            reasons.append(f"generator behind (send lag p99 {lag_p99:.1f} ms)")
        return KneeStep(
            rate=rate,
            passed=not reasons,
            reasons=tuple(reasons),
            achieved_ratio=achieved,
            slo_observed_ms=observed,
            error_ratio=errors,
            send_lag_p99_ms=lag_p99,
            in_flight_growth=growth,
            doc=doc,
        )

    def run(
        self,
        run_step: Callable[[float, float], dict[str, Any]],
        *,
        should_stop: Callable[[], bool] = lambda: False,
        on_step: Callable[[KneeStep], object] = lambda step: None,
    ) -> KneeResult:
        """Search; ``run_step(rate, duration_s)`` runs one step and returns its document."""
        steps: list[KneeStep] = []

        def step(rate: float) -> KneeStep:
            result = self.judge(rate, run_step(rate, self.warmup_s + self.step_s))
            steps.append(result)
            on_step(result)
            return result

        good: float | None = None
        bad: float | None = None
        rate = self.start_rate
        limited_by = "max_rate"
        while True:
            if should_stop():
                return KneeResult(good, "interrupted", self.slo.expr, tuple(steps))
            s = step(rate)
            if not s.passed:
                if _only_generator(s):
                    return KneeResult(good, "generator", self.slo.expr, tuple(steps))
                bad, limited_by = rate, "target"
                break
            good = rate
            if rate >= self.max_rate:
                return KneeResult(good, "max_rate", self.slo.expr, tuple(steps))
            rate = min(rate * self.growth, self.max_rate)
        low = good if good is not None else 0.0
        while bad - low > self.precision * max(low, 1e-9) and not should_stop():
            if low == 0.0 and bad <= self.start_rate / 64:
                break
            mid = (low + bad) / 2 if low > 0 else bad / 2
            s = step(mid)
            if s.passed:
                low = good = mid
            elif _only_generator(s):
                return KneeResult(good, "generator", self.slo.expr, tuple(steps))
            else:
                bad = mid
        return KneeResult(good, limited_by, self.slo.expr, tuple(steps))


def _only_generator(step: KneeStep) -> bool:
    return bool(step.reasons) and all(r.startswith("generator behind") for r in step.reasons)


def _growth(values: list[float], span_s: float) -> float:
    """The rise of ``values`` (samples one interval apart) over their span: the
    least-squares slope per interval times ``len(values) - 1`` intervals."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x = (n - 1) / 2
    mean_y = sum(values) / n
    num = sum((i - mean_x) * (y - mean_y) for i, y in enumerate(values))
    den = sum((i - mean_x) ** 2 for i in range(n))
    return num / den * (n - 1) if den else 0.0


def _merged(into: Histogram | None, encoded: str) -> Histogram:
    hist = Histogram.decode(encoded)
    if into is None:
        return hist
    into.merge(hist)
    return into
