"""The live terminal view of a load run, and the final summary table."""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from typing import Any, TextIO

_COUNTS = ("offered", "sent", "ok", "errors", "shed", "dropped", "timeouts", "retries", "goodput")


class LiveView:
    """Aggregates timeline rows from every worker and shows one line per closed interval.

    Rows of one interval arrive once per worker; an interval is shown when all ``workers``
    have reported it (so its counts are complete). Percentiles shown live are the worst
    worker's (the final table uses exactly merged histograms).
    """

    def __init__(
        self, *, workers: int, duration_s: float, out: TextIO | None = None, quiet: bool = False
    ) -> None:
        self.workers = workers
        self.duration_s = duration_s
        self.out = out or sys.stderr
        self.quiet = quiet
        self._parts: dict[float, list[dict[str, Any]]] = defaultdict(list)
        self._started = time.monotonic()
        self._header_shown = False

    def __call__(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            parts = self._parts[row["t_s"]]
            parts.append(row)
            if len(parts) == self.workers:
                self._show(row["t_s"], parts)
                del self._parts[row["t_s"]]

    def _show(self, t_s: float, parts: list[dict[str, Any]]) -> None:
        if self.quiet:
            return
        total = {k: sum(p.get(k, 0) or 0 for p in parts) for k in _COUNTS}
        dt = parts[0].get("dt_s") or 1.0
        p50 = max((p.get("latency_p50_ms") or 0.0) for p in parts)
        p99 = max((p.get("latency_p99_ms") or 0.0) for p in parts)
        lag = max((p.get("send_lag_p99_ms") or 0.0) for p in parts)
        in_flight = sum(p.get("in_flight") or 0 for p in parts)
        if not self._header_shown:
            self.out.write(
                f"{'t':>6} {'offered/s':>10} {'done/s':>9} {'ok':>7} {'err':>6} {'shed':>6} "
                f"{'drop':>6} {'t/o':>6} {'retry':>6} {'p50 ms':>8} {'p99 ms':>8} {'lag p99':>8} {'inflight':>8}\n"
            )
            self._header_shown = True
        done = total["ok"] + total["errors"] + total["shed"]
        self.out.write(
            f"{t_s + dt:>5.0f}s {total['offered'] / dt:>10.0f} {done / dt:>9.0f} {total['ok']:>7} "
            f"{total['errors']:>6} {total['shed']:>6} {total['dropped']:>6} {total['timeouts']:>6} "
            f"{total['retries']:>6} {p50:>8.1f} {p99:>8.1f} {lag:>8.2f} {in_flight:>8}\n"
        )
        self.out.flush()


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def summary_table(doc: dict[str, Any]) -> str:
    """The final summary: one line for the whole run and one per class and endpoint."""
    lines = [
        f"{'scope':<28} {'offered':>8} {'ok':>8} {'err':>6} {'shed':>6} {'drop':>6} {'t/o':>6} "
        f"{'retry':>6} {'goodput/s':>9} {'p50':>7} {'p99':>7} {'p999':>7} {'max':>7}  (ms)"
    ]

    def line(name: str, sec: dict[str, Any]) -> None:
        lat = sec.get("latency_ms") or {}
        lines.append(
            f"{name[:28]:<28} {sec['offered']:>8} {sec['ok']:>8} {sec['errors']:>6} {sec['shed']:>6} "
            f"{sec['dropped']:>6} {sec['timeouts']:>6} {sec['retries']:>6} {sec.get('goodput_rps', 0):>9.1f} "
            f"{_ms(lat.get('p50')):>7} {_ms(lat.get('p99')):>7} {_ms(lat.get('p999')):>7} {_ms(lat.get('max')):>7}"
        )

    line("all", doc["summary"])
    for name, sec in doc.get("by_class", {}).items():
        line(f"class {name}", sec)
    for name, sec in doc.get("by_endpoint", {}).items():
        line(f"  {name}", sec)
    lag = doc["summary"].get("send_lag_ms") or {}
    if doc.get("kind") != "sim":  # a simulated client is never late
        lines.append(
            f"send lag p99 {_ms(lag.get('p99'))} ms, max {_ms(lag.get('max'))} ms "
            "(the generator's own delay; large values mean the generator, not the target, "
            "was behind)"
        )
    for t in doc.get("thresholds", []):
        scope = "".join(f" [{k}={t[k]}]" for k in ("class", "endpoint") if t.get(k))
        verdict = "PASS" if t.get("passed") else "FAIL"
        lines.append(f"{verdict} {t['expr']}{scope}: observed {t.get('observed')}")
    return "\n".join(lines)
