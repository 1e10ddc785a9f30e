"""Charts as inline SVG, written in Python: axes, line charts with shaded bands, stacked bars.

Every chart is an ``<svg class="chart">`` with a fixed ``viewBox`` (it scales with the page)
and carries its own scale as data attributes, so a reader (the tests, a script) can turn a
pixel back into a value::

    data-x-domain="lo hi"  data-x-range="px0 px1"  data-x-log="0|1"   (same for y)

A linear axis maps ``v`` to ``px0 + (v - lo) / (hi - lo) * (px1 - px0)``; a log axis does the
same with ``log10`` of each value (values at or below ``lo`` are drawn at ``lo``). Drawn data
has the class ``mark`` (the page's script checks that each chart drew some), a series path
also ``series`` and ``data-key`` (its legend key), a band ``fault``.

Every string that reaches the SVG goes through :func:`esc`; colours and dash patterns come
from this package's palettes, never from the documents.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "Axis",
    "Band",
    "Bar",
    "Marker",
    "Segment",
    "Series",
    "esc",
    "legend",
    "line_chart",
    "nice_linear",
    "nice_log",
    "stacked_bars",
]

WIDTH = 720.0
HEIGHT = 300.0
MARGIN_LEFT = 66.0
MARGIN_RIGHT = 26.0
MARGIN_TOP = 30.0
MARGIN_BOTTOM = 44.0
_BAND_FILL = "#d55e00"


def esc(value: object) -> str:
    """``value`` as text safe inside HTML or SVG content and quoted attributes."""
    return html.escape(str(value), quote=True)


def _num(v: float) -> str:
    """A coordinate with 0.1 px resolution, without a trailing ``.0``."""
    text = f"{v:.1f}"
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True, slots=True)
class Axis:
    """Maps values in ``[lo, hi]`` to pixels in ``[px0, px1]``, linearly or on a log10 scale.

    ``ticks`` are the values to mark and ``fmt`` turns a tick into its label.
    """

    lo: float
    hi: float
    px0: float
    px1: float
    log: bool = False
    ticks: tuple[float, ...] = ()
    fmt: Callable[[float], str] = field(default=lambda v: f"{v:g}")

    def map(self, value: float) -> float:
        """The pixel of ``value``: ``px0 + t * (px1 - px0)`` with ``t = (v - lo) / (hi - lo)``
        (of ``log10`` values on a log axis); values outside the domain are clamped to it."""
        if self.log:
            lo, hi = math.log10(self.lo), math.log10(self.hi)
            v = math.log10(max(value, self.lo))
        else:
            lo, hi, v = self.lo, self.hi, value
        t = (v - lo) / (hi - lo) if hi > lo else 0.0
        t = min(max(t, 0.0), 1.0)
        return self.px0 + t * (self.px1 - self.px0)

    def attrs(self, name: str) -> str:
        return (
            f' data-{name}-domain="{self.lo!r} {self.hi!r}"'
            f' data-{name}-range="{self.px0!r} {self.px1!r}"'
            f' data-{name}-log="{int(self.log)}"'
        )


def _step(span: float, target: int) -> float:
    """A step of 1, 2 or 5 times a power of ten giving about ``target`` steps over ``span``."""
    raw = span / max(target, 1)
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * power >= raw:
            return float(m * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def nice_linear(hi: float, *, target: int = 5) -> tuple[float, tuple[float, ...]]:
    """``(top, ticks)``: a round upper bound ``>= hi`` (at least 1) and ticks from 0 to it."""
    hi = max(hi, 1.0)
    step = _step(hi, target)
    top = math.ceil(hi / step - 1e-9) * step
    n = round(top / step)
    return top, tuple(round(k * step, 10) for k in range(n + 1))


def nice_log(lo: float, hi: float) -> tuple[float, float, tuple[float, ...]]:
    """``(lo, hi, ticks)`` for a log axis covering ``[lo, hi]``: whole decades, with ticks at
    each decade (and at 2 and 5 times it when the axis spans at most two decades)."""
    lo = max(lo, 1e-9)
    hi = max(hi, lo * 1.0001)
    d0 = math.floor(math.log10(lo) + 1e-9)
    d1 = math.ceil(math.log10(hi) - 1e-9)
    if d1 <= d0:
        d1 = d0 + 1
    ticks: list[float] = []
    for d in range(d0, d1 + 1):
        base = 10.0**d
        ticks.append(base)
        if d1 - d0 <= 2 and d < d1:
            ticks.extend((2 * base, 5 * base))
    return 10.0**d0, 10.0**d1, tuple(ticks)


@dataclass(frozen=True, slots=True)
class Series:
    """One line: ``points`` are ``(x, y)``; a ``None`` y breaks the line (no data there)."""

    key: str
    label: str
    colour: str
    points: Sequence[tuple[float, float | None]]
    dash: str | None = None
    width: float = 1.8


@dataclass(frozen=True, slots=True)
class Band:
    """A shaded x range (a fault window) with a label drawn at its top."""

    x0: float
    x1: float
    label: str
    title: str


@dataclass(frozen=True, slots=True)
class Marker:
    """A dot on a series with a tooltip; ``data`` become ``data-*`` attributes."""

    x: float
    y: float
    colour: str
    title: str
    data: tuple[tuple[str, str], ...] = ()


def _frame(
    *,
    chart: str,
    title: str,
    x: Axis,
    y: Axis,
    x_label: str,
    y_label: str,
    extra_attrs: str,
    height: float,
) -> list[str]:
    out = [
        f'<svg class="chart" data-chart="{esc(chart)}" viewBox="0 0 {_num(WIDTH)} {_num(height)}"'
        f' role="img" aria-label="{esc(title)}"'
        f"{x.attrs('x')}{y.attrs('y')}{extra_attrs}"
        ' xmlns="http://www.w3.org/2000/svg">',
        f"<title>{esc(title)}</title>",
    ]
    top, bottom = min(y.px0, y.px1), max(y.px0, y.px1)
    left, right = min(x.px0, x.px1), max(x.px0, x.px1)
    grid = []
    for t in y.ticks:
        py = _num(y.map(t))
        grid.append(
            f'<line class="grid" x1="{_num(left)}" x2="{_num(right)}" y1="{py}" y2="{py}"/>'
        )
        grid.append(
            f'<text class="tick" x="{_num(left - 6)}" y="{py}" text-anchor="end"'
            f' dominant-baseline="middle">{esc(y.fmt(t))}</text>'
        )
    for t in x.ticks:
        px = _num(x.map(t))
        grid.append(
            f'<line class="grid" x1="{px}" x2="{px}" y1="{_num(top)}" y2="{_num(bottom)}"/>'
        )
        grid.append(
            f'<text class="tick" x="{px}" y="{_num(bottom + 16)}" text-anchor="middle">'
            f"{esc(x.fmt(t))}</text>"
        )
    out.extend(grid)
    out.append(f'<path class="axis" d="M{_num(left)},{_num(top)} V{_num(bottom)} H{_num(right)}"/>')
    out.append(
        f'<text class="axis-label" x="{_num((left + right) / 2)}" y="{_num(height - 6)}"'
        f' text-anchor="middle">{esc(x_label)}</text>'
    )
    out.append(
        f'<text class="axis-label" transform="translate(14 {_num((top + bottom) / 2)}) rotate(-90)"'
        f' text-anchor="middle">{esc(y_label)}</text>'
    )
    return out


def _path(series: Series, x: Axis, y: Axis) -> str:
    parts: list[str] = []
    pen_down = False
    for px, py in series.points:
        if py is None or not math.isfinite(py) or not math.isfinite(px):
            pen_down = False
            continue
        cmd = "L" if pen_down else "M"
        parts.append(f"{cmd}{_num(x.map(px))},{_num(y.map(py))}")
        pen_down = True
    return " ".join(parts)


def line_chart(
    *,
    chart: str,
    title: str,
    series: Sequence[Series],
    x: Axis,
    y: Axis,
    x_label: str,
    y_label: str,
    bands: Sequence[Band] = (),
    markers: Sequence[Marker] = (),
    run: str | None = None,
) -> str:
    """An SVG line chart: grid, axes, shaded ``bands`` below the lines, then ``series`` and
    ``markers``. A series with a single point is drawn as a dot so it stays visible."""
    extra = f' data-run="{esc(run)}"' if run is not None else ""
    out = _frame(
        chart=chart,
        title=title,
        x=x,
        y=y,
        x_label=x_label,
        y_label=y_label,
        extra_attrs=extra,
        height=HEIGHT,
    )
    top, bottom = min(y.px0, y.px1), max(y.px0, y.px1)
    for i, band in enumerate(bands):
        b0, b1 = sorted((x.map(band.x0), x.map(band.x1)))
        width = max(b1 - b0, 1.0)
        label_y = top - 16 + 9 * (i % 2)
        out.append(
            f'<g class="fault-window"><rect class="fault mark" x="{_num(b0)}" y="{_num(top)}"'
            f' width="{_num(width)}" height="{_num(bottom - top)}" fill="{_BAND_FILL}"'
            f' data-x0="{band.x0!r}" data-x1="{band.x1!r}" data-label="{esc(band.label)}">'
            f"<title>{esc(band.title)}</title></rect>"
            f'<text class="fault-label" x="{_num(b0 + 2)}" y="{_num(label_y)}">'
            f"{esc(_clip(band.label, 28))}</text></g>"
        )
    for s in series:
        d = _path(s, x, y)
        if not d:
            continue
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        out.append(
            f'<path class="series mark" data-key="{esc(s.key)}" d="{d}" fill="none"'
            f' stroke="{s.colour}" stroke-width="{s.width:g}"{dash}'
            f' stroke-linejoin="round"><title>{esc(s.label)}</title></path>'
        )
        if d.count("M") == 1 and "L" not in d:
            cx, cy = d[1:].split(",")
            out.append(
                f'<circle class="dot mark" data-key="{esc(s.key)}" cx="{cx}" cy="{cy}" r="3"'
                f' fill="{s.colour}"><title>{esc(s.label)}</title></circle>'
            )
    for m in markers:
        data = "".join(f' data-{k}="{esc(v)}"' for k, v in m.data)
        out.append(
            f'<circle class="marker mark" cx="{_num(x.map(m.x))}" cy="{_num(y.map(m.y))}" r="3.2"'
            f' fill="{m.colour}"{data}><title>{esc(m.title)}</title></circle>'
        )
    out.append("</svg>")
    return "\n".join(out)


@dataclass(frozen=True, slots=True)
class Segment:
    """One part of a stacked bar: ``share`` of the whole in [0, 1]."""

    key: str
    share: float
    colour: str
    title: str


@dataclass(frozen=True, slots=True)
class Bar:
    """One stacked horizontal bar, its label on the left and a colour swatch for its run."""

    label: str
    colour: str
    segments: Sequence[Segment]


def stacked_bars(*, chart: str, title: str, bars: Sequence[Bar], x_label: str) -> str:
    """Horizontal bars stacked to 100%: each segment's width is its share of the bar."""
    row_h, gap = 22.0, 10.0
    left = 230.0
    height = MARGIN_TOP + len(bars) * (row_h + gap) + MARGIN_BOTTOM
    top = MARGIN_TOP
    bottom = height - MARGIN_BOTTOM
    x = Axis(
        0.0,
        1.0,
        left,
        WIDTH - MARGIN_RIGHT,
        ticks=(0.0, 0.25, 0.5, 0.75, 1.0),
        fmt=lambda v: f"{v * 100:g}%",
    )
    y = Axis(0.0, 1.0, bottom, top)
    out = _frame(
        chart=chart,
        title=title,
        x=x,
        y=y,
        x_label=x_label,
        y_label="",
        extra_attrs="",
        height=height,
    )
    for i, bar in enumerate(bars):
        y0 = top + gap / 2 + i * (row_h + gap)
        out.append(
            f'<rect class="swatch" x="6" y="{_num(y0 + 6)}" width="10" height="10"'
            f' fill="{bar.colour}"/>'
            f'<text class="bar-label" x="22" y="{_num(y0 + row_h / 2)}"'
            f' dominant-baseline="middle">{esc(_clip(bar.label, 34))}<title>{esc(bar.label)}'
            "</title></text>"
        )
        acc = 0.0
        for seg in bar.segments:
            if seg.share <= 0:
                continue
            x0 = x.map(acc)
            acc += seg.share
            x1 = x.map(min(acc, 1.0))
            out.append(
                f'<rect class="bar mark" data-key="{esc(seg.key)}" data-bar="{esc(bar.label)}"'
                f' data-share="{seg.share!r}" x="{_num(x0)}" y="{_num(y0)}"'
                f' width="{_num(max(x1 - x0, 0.5))}" height="{_num(row_h)}" fill="{seg.colour}">'
                f"<title>{esc(seg.title)}</title></rect>"
            )
    out.append("</svg>")
    return "\n".join(out)


def legend(items: Sequence[tuple[str, str, str, str | None]]) -> str:
    """An HTML legend of ``(key, label, colour, dash)``; each entry is a button that hides or
    shows the series with that key in the same figure (the page's script does it)."""
    out = ['<ul class="legend">']
    for key, label, colour, dash in items:
        style = "dashed" if dash else "solid"
        out.append(
            f'<li><button type="button" class="legend-item" data-key="{esc(key)}"'
            f' aria-pressed="true"><span class="swatch {style}" style="border-color:{colour}">'
            f"</span>{esc(label)}</button></li>"
        )
    out.append("</ul>")
    return "".join(out)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"
