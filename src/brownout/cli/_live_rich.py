"""The live view for terminals: one table redrawn in place as intervals close (rich)."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from ._live import LiveView

_TOTALS = ("offered", "ok", "errors", "shed", "dropped", "timeouts", "retries")


class RichLiveView(LiveView):
    """Like :class:`LiveView`, drawn as a table that updates in place; use as a context
    manager around the run so the terminal is restored even on errors."""

    def __init__(self, *, workers: int, duration_s: float, console: Any = None) -> None:
        super().__init__(workers=workers, duration_s=duration_s)
        from rich.console import Console
        from rich.live import Live

        self._totals = dict.fromkeys(_TOTALS, 0)
        self._live = Live(
            self._table(None, 0.0),
            console=console or Console(stderr=True),
            refresh_per_second=4,
            transient=False,
        )

    def __enter__(self) -> RichLiveView:
        self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._live.__exit__(exc_type, exc, tb)

    def _show(self, t_s: float, parts: list[dict[str, Any]]) -> None:
        for key in _TOTALS:
            self._totals[key] += sum(p.get(key, 0) or 0 for p in parts)
        self._live.update(self._table(parts, t_s))

    def _table(self, parts: list[dict[str, Any]] | None, t_s: float) -> Any:
        """A two-column table (fits narrow terminals): this interval, then run totals."""
        from rich.table import Table

        table = Table(title="brownout load", show_header=False)
        table.add_column("figure")
        table.add_column("value", justify="right")
        if not parts:
            table.add_row("elapsed", "starting")
            return table
        dt = parts[0].get("dt_s") or 1.0
        done = sum(
            (p.get("ok") or 0) + (p.get("errors") or 0) + (p.get("shed") or 0) for p in parts
        )
        offered = sum(p.get("offered") or 0 for p in parts)
        p50 = max((p.get("latency_p50_ms") or 0.0) for p in parts)
        p99 = max((p.get("latency_p99_ms") or 0.0) for p in parts)
        lag = max((p.get("send_lag_p99_ms") or 0.0) for p in parts)
        in_flight = sum(p.get("in_flight") or 0 for p in parts)
        table.add_row("elapsed", f"{t_s + dt:.0f}/{self.duration_s:.0f}s")
        table.add_row("offered / achieved", f"{offered / dt:.0f}/s / {done / dt:.0f}/s")
        table.add_row("latency p50 / p99 now", f"{p50:.1f} / {p99:.1f} ms")
        table.add_row("send lag p99 now", f"{lag:.2f} ms")
        table.add_row("in flight", str(in_flight))
        for key in _TOTALS:
            table.add_row(f"{key} (total)", str(self._totals[key]))
        return table
