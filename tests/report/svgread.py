"""Read the report's SVG charts back: each chart is well-formed XML that carries its scales."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

NS = "{http://www.w3.org/2000/svg}"
_SVG = re.compile(r"<svg\b.*?</svg>", re.S)
_POINT = re.compile(r"([ML])(-?[\d.]+),(-?[\d.]+)")


@dataclass(frozen=True)
class Scale:
    lo: float
    hi: float
    px0: float
    px1: float
    log: bool

    @classmethod
    def of(cls, svg: ET.Element, name: str) -> Scale:
        lo, hi = (float(v) for v in svg.attrib[f"data-{name}-domain"].split())
        px0, px1 = (float(v) for v in svg.attrib[f"data-{name}-range"].split())
        return cls(lo, hi, px0, px1, svg.attrib[f"data-{name}-log"] == "1")

    def value(self, px: float) -> float:
        """The value drawn at pixel ``px`` (the inverse of the chart's mapping)."""
        t = (px - self.px0) / (self.px1 - self.px0)
        if self.log:
            a, b = math.log10(self.lo), math.log10(self.hi)
            return float(10 ** (a + t * (b - a)))
        return self.lo + t * (self.hi - self.lo)

    def pixel(self, v: float) -> float:
        if self.log:
            a, b = math.log10(self.lo), math.log10(self.hi)
            t = (math.log10(max(v, self.lo)) - a) / (b - a)
        else:
            t = (v - self.lo) / (self.hi - self.lo)
        return self.px0 + min(max(t, 0.0), 1.0) * (self.px1 - self.px0)

    @property
    def units_per_px(self) -> float:
        return abs(self.hi - self.lo) / abs(self.px1 - self.px0)


def charts(page: str) -> list[ET.Element]:
    """Every ``<svg class="chart">`` of the page, parsed."""
    return [ET.fromstring(m.group(0)) for m in _SVG.finditer(page)]


def charts_of(page: str, chart: str) -> list[ET.Element]:
    return [c for c in charts(page) if c.attrib.get("data-chart") == chart]


def elements(svg: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in svg.iter(NS + tag) if cls in e.attrib.get("class", "").split()]


def series(svg: ET.Element) -> dict[str, list[tuple[float, float]]]:
    """``data-key`` -> the pixel points of that series' path."""
    out = {}
    for path in elements(svg, "path", "series"):
        out[path.attrib["data-key"]] = [
            (float(x), float(y)) for _, x, y in _POINT.findall(path.attrib["d"])
        ]
    return out
