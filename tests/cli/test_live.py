from __future__ import annotations

import io

from rich.console import Console

from brownout.cli._live import LiveView
from brownout.cli._live_rich import RichLiveView


def _row(t: float, ok: int, p99: float) -> dict[str, object]:
    return {
        "t_s": t,
        "dt_s": 1.0,
        "offered": ok,
        "ok": ok,
        "errors": 1,
        "shed": 0,
        "dropped": 0,
        "timeouts": 0,
        "retries": 0,
        "goodput": ok,
        "latency_p50_ms": 1.0,
        "latency_p99_ms": p99,
        "send_lag_p99_ms": 0.1,
        "in_flight": 3,
    }


def test_an_interval_is_shown_once_every_worker_reported_it() -> None:
    out = io.StringIO()
    view = LiveView(workers=2, duration_s=10, out=out)
    view([_row(0.0, 100, 5.0)])
    assert out.getvalue() == ""
    view([_row(0.0, 50, 9.0)])
    line = out.getvalue().splitlines()[-1].split()
    assert line[0] == "1s"
    assert line[1] == "150"  # offered/s summed over workers
    assert line[3] == "150"  # ok
    assert float(line[10]) == 9.0  # worst worker's p99


def test_rich_view_keeps_running_totals() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, force_terminal=False)
    with RichLiveView(workers=1, duration_s=5, console=console) as view:
        view([_row(0.0, 100, 5.0)])
        view([_row(1.0, 40, 7.0)])
    text = buffer.getvalue()
    assert "2/5s" in text
    assert "140" in text  # ok so far
