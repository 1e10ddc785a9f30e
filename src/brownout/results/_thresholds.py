"""Thresholds in the syntax k6 users know, evaluated on a results document.

Grammar (spaces are free)::

    threshold := metric [scope] op value
    metric    := [family "."] ("p(" N ")" | "avg" | "min" | "max" | "med")
               | "rate(" name ")" | "goodput"
               | "throughput_rps" | "goodput_rps" | "offered_rps"
    family    := "latency" (default: response time from the intended start)
               | "service" | "send_lag"
    scope     := "{" ("class" | "endpoint") ":" name ["," ...] "}"   (names without , : { })
    op        := "<" | "<=" | ">" | ">=" | "==" | "!="

Values: latency metrics take a duration (``300ms``, ``1.5s``, ``500us``, ``2m``; a bare
number is milliseconds, as in k6); ``rate(...)`` and ``goodput`` take a ratio (``1%`` or
``0.01``, at most 1); the ``*_rps`` metrics take requests per second (``400`` or ``400rps``).

What is observed: ``p(N)`` the N-th percentile (HdrHistogram definition), ``avg`` the mean,
``med`` p(50), all in ms; ``rate(x) = x / offered`` for x in ok, errors, shed, timeouts,
dropped, and ``failed`` (errors + shed + timeouts + dropped); ``rate(retries) = retries /
sent``; ``goodput = goodput / offered`` (successes within the client timeout); the rates per
second as in the section. A threshold with nothing to observe (no requests in scope) fails.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

from ..errors import ThresholdError
from ._document import (
    COUNT_FIELDS,
    FAMILY_FIELDS,
    PERCENTILE_FIELDS,
    build_section,
    document_histograms,
    scope_histograms,
    split_endpoint_key,
)
from ._hdr import Histogram

__all__ = ["Threshold", "evaluate", "evaluate_all", "parse_threshold"]

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_OP_RE = re.compile(r"<=|>=|==|!=|<|>|=")
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_VALUE_RE = re.compile(rf"^({_NUMBER})\s*([a-zA-Zµ%/]*)$")
_LATENCY = ("avg", "min", "max", "med")
_PLAIN = ("goodput", "throughput_rps", "goodput_rps", "offered_rps")
_FAMILY_NAMES = {"latency": "response", "service": "service", "send_lag": "send_lag"}
_RATE_NAMES = ("ok", "errors", "shed", "timeouts", "dropped", "failed", "retries")
_DURATION_UNITS = {"": 1.0, "us": 0.001, "µs": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}

_ALLOWED = (
    "write '<metric> <op> <value>': metric p(N), avg, min, max, med (optionally prefixed "
    "service. or send_lag.), rate(errors|shed|timeouts|dropped|ok|failed|retries), goodput, "
    "throughput_rps, goodput_rps or offered_rps; op <, <=, >, >=, == or !=; "
    "e.g. 'p(99) < 300ms', 'rate(errors) < 1%', 'goodput > 95%', 'throughput_rps >= 400'"
)


@dataclass(frozen=True, slots=True)
class Threshold:
    """A parsed threshold.

    ``metric`` is ``p``, ``avg``, ``min``, ``max``, ``med``, ``rate``, ``goodput`` or a
    ``*_rps`` field; ``family`` the histogram family of latency metrics (``response``,
    ``service``, ``send_lag``; empty otherwise); ``arg`` the percentile or the rate's name;
    ``value`` is in the metric's unit (:attr:`unit`): ms, a ratio, or requests per second.
    ``class_name`` and ``endpoint`` scope it; ``abort_on_fail`` asks the runner to stop early.
    """

    expr: str
    metric: str
    op: str
    value: float
    family: str = ""
    arg: float | str | None = None
    class_name: str | None = None
    endpoint: str | None = None
    abort_on_fail: bool = False

    @property
    def unit(self) -> str:
        if self.family:
            return "ms"
        if self.metric in ("rate", "goodput"):
            return "ratio"
        return "rps"

    def canonical(self) -> str:
        """The threshold written back in canonical form; it parses to an equal threshold
        when the scope's names hold none of ``, : { }``."""
        if self.metric == "p":
            name = f"p({_plain(cast(float, self.arg))})"
        elif self.metric == "rate":
            name = f"rate({self.arg})"
        else:
            name = self.metric
        if self.family and self.family != "response":
            name = f"{self.family}.{name}"
        scope = [
            f"{k}:{v}" for k, v in (("class", self.class_name), ("endpoint", self.endpoint)) if v
        ]
        if scope:
            name += "{" + ",".join(scope) + "}"
        unit = "ms" if self.unit == "ms" else ""
        return f"{name} {self.op} {_plain(self.value)}{unit}"


def _plain(x: float) -> str:
    """``x`` in positional notation (no exponent), as short as its repr: parses back to x."""
    return format(Decimal(repr(float(x))), "f")


def _bad(text: str, reason: str) -> ThresholdError:
    return ThresholdError(text, f"{reason}; {_ALLOWED}")


def _parse_metric(text: str, left: str) -> tuple[str, str, float | str | None]:
    """(metric, family, arg) from the left-hand side without its scope."""
    family = ""
    name = left
    head, dot, rest = left.partition(".")
    if dot and head.strip() in _FAMILY_NAMES:
        family = _FAMILY_NAMES[head.strip()]
        name = rest.strip()
    compact = re.sub(r"\s+", "", name)
    if compact.startswith("p(") and compact.endswith(")"):
        inner = compact[2:-1]
        if not re.fullmatch(_NUMBER, inner) or not 0 <= float(inner) <= 100:
            raise _bad(text, f"percentile {inner!r} must be a number in 0..100")
        return "p", family or "response", float(inner)
    if compact in _LATENCY:
        return compact, family or "response", None
    if family:
        raise _bad(text, f"{head.strip()}. applies to p(N), avg, min, max and med, not {name!r}")
    if compact.startswith("rate(") and compact.endswith(")"):
        inner = compact[5:-1]
        if inner not in _RATE_NAMES:
            raise _bad(text, f"rate({inner}) is unknown; rate of one of {', '.join(_RATE_NAMES)}")
        return "rate", "", inner
    if compact in _PLAIN:
        return compact, "", None
    raise _bad(text, f"unknown metric {left!r}")


def _parse_scope(text: str, body: str) -> dict[str, str]:
    scope: dict[str, str] = {}
    for part in body.split(","):
        key, colon, value = part.partition(":")
        key, value = key.strip(), value.strip()
        if not colon or key not in ("class", "endpoint") or not value:
            raise _bad(text, f"scope {{{body}}} must be {{class:NAME}}, {{endpoint:NAME}} or both")
        if key in scope:
            raise _bad(text, f"scope names {key} twice")
        if key == "class" and "/" in value:
            raise _bad(text, f"class name {value!r} cannot hold '/'")
        scope[key] = value
    return scope


def _parse_value(text: str, right: str, metric: str, family: str) -> float:
    m = _VALUE_RE.match(right.strip())
    if not m:
        raise _bad(text, f"value {right.strip()!r} must be a number with an optional unit")
    number, unit = float(m.group(1)), m.group(2)
    if not math.isfinite(number):
        raise _bad(text, f"value {right.strip()!r} must be finite")
    if family:
        if unit not in _DURATION_UNITS:
            raise _bad(text, f"{unit!r} is not a duration unit (us, ms, s, m; bare number = ms)")
        return number * _DURATION_UNITS[unit]
    if metric in ("rate", "goodput"):
        if unit == "%":
            number /= 100
        elif unit:
            raise _bad(text, f"{unit!r} is not a ratio unit (write 1% or 0.01)")
        if number > 1:
            raise _bad(text, f"ratio {right.strip()!r} is above 1 (write 5% or 0.05)")
        return number
    if unit not in ("", "rps", "/s"):
        raise _bad(text, f"{unit!r} is not a rate unit (requests per second: 400 or 400rps)")
    return number


def parse_threshold(
    text: str,
    *,
    class_name: str | None = None,
    endpoint: str | None = None,
    abort_on_fail: bool = False,
) -> Threshold:
    """Parse a k6-style threshold (see the module docstring for the grammar).

    ``class_name`` and ``endpoint`` scope it (or ``{class:NAME,endpoint:NAME}`` written after
    the metric). Raises :class:`~brownout.errors.ThresholdError` naming the text and what is
    allowed.
    """
    if not isinstance(text, str):
        raise ThresholdError(repr(text), f"a threshold is a string; {_ALLOWED}")
    expr = text.strip()
    if not expr:
        raise _bad(text, "it is empty")
    ops = list(_OP_RE.finditer(expr))
    if not ops:
        raise _bad(text, "it has no comparison")
    if len(ops) > 1:
        raise _bad(text, "it has more than one comparison")
    op = ops[0].group(0)
    if op == "=":
        raise _bad(text, "'=' is not a comparison (write ==)")
    left, right = expr[: ops[0].start()].strip(), expr[ops[0].end() :]
    scope: dict[str, str] = {}
    if "{" in left or "}" in left:
        m = re.fullmatch(r"(.*?)\{([^{}]*)\}", left)
        if not m:
            raise _bad(text, "braces must close one scope written right after the metric")
        left = m.group(1).strip()
        scope = _parse_scope(text, m.group(2))
    metric, family, arg = _parse_metric(text, left)
    value = _parse_value(text, right, metric, family)
    for key, given in (("class", class_name), ("endpoint", endpoint)):
        if given is None:
            continue
        if not isinstance(given, str) or not given.strip():
            raise _bad(text, f"{key} {given!r} must be a non-empty name")
        if key == "class" and "/" in given:
            raise _bad(text, f"class name {given!r} cannot hold '/'")
        if key in scope and scope[key] != given:
            raise _bad(text, f"{key} is {scope[key]!r} in the text but {given!r} was passed")
        scope[key] = given
    return Threshold(
        expr=expr,
        metric=metric,
        op=op,
        value=value,
        family=family,
        arg=arg,
        class_name=scope.get("class"),
        endpoint=scope.get("endpoint"),
        abort_on_fail=bool(abort_on_fail),
    )


def evaluate(
    threshold: Threshold,
    section: Mapping[str, Any],
    histograms: Mapping[str, Histogram] | None = None,
) -> tuple[float | None, bool]:
    """``(observed, passed)`` of ``threshold`` on one document section (``doc["summary"]``, a
    ``by_class`` or ``by_endpoint`` entry). Percentiles other than 50, 90, 99 and 99.9, and
    ``min``, are read from ``histograms`` (family -> histogram of the same scope), which
    :func:`evaluate_all` passes. Nothing to observe gives ``(None, False)``."""
    observed = _observe(threshold, section, histograms)
    if observed is None:
        return None, False
    return observed, _OPS[threshold.op](observed, threshold.value)


def _observe(
    t: Threshold, section: Mapping[str, Any], histograms: Mapping[str, Histogram] | None
) -> float | None:
    if t.family:
        figures = section[FAMILY_FIELDS[t.family]]
        stored = None
        if t.metric == "p":
            stored = next((k for k, p in PERCENTILE_FIELDS if p == t.arg), None)
        elif t.metric in ("avg", "max", "med"):
            stored = {"avg": "mean", "max": "max", "med": "p50"}[t.metric]
        if stored is not None:
            value = figures[stored]
            return None if value is None else float(value)
        if histograms is None or t.family not in histograms:
            raise ThresholdError(
                t.expr, "this figure is read from the histograms: evaluate it with evaluate_all"
            )
        hist = histograms[t.family]
        if hist.count == 0:
            return None
        if t.metric == "min":
            return hist.min / 1000
        return hist.value_at_percentile(cast(float, t.arg)) / 1000
    if t.metric == "rate":
        if t.arg == "retries":
            return _ratio(section["retries"], section["sent"])
        if t.arg == "failed":
            failed = sum(section[k] for k in ("errors", "shed", "timeouts", "dropped"))
            return _ratio(failed, section["offered"])
        return _ratio(section[str(t.arg)], section["offered"])
    if t.metric == "goodput":
        return _ratio(section["goodput"], section["offered"])
    return float(section[t.metric])


def _ratio(n: int, d: int) -> float | None:
    return n / d if d else None


def _as_threshold(spec: object) -> Threshold:
    if isinstance(spec, Threshold):
        return spec
    if isinstance(spec, str):
        return parse_threshold(spec)
    if isinstance(spec, Mapping):
        expr = spec.get("expr")
        if not isinstance(expr, str):
            raise ThresholdError(
                repr(spec), f"a threshold object needs an 'expr' string; {_ALLOWED}"
            )
        return parse_threshold(
            expr,
            class_name=spec.get("class"),
            endpoint=spec.get("endpoint"),
            abort_on_fail=bool(spec.get("abort_on_fail", False)),
        )
    raise ThresholdError(
        repr(spec), f"a threshold is a string, a mapping or a Threshold; {_ALLOWED}"
    )


def evaluate_all(
    specs: Iterable[str | Threshold | Mapping[str, Any]], doc: MutableMapping[str, Any]
) -> list[dict[str, Any]]:
    """Evaluate every threshold on ``doc``; store and return ``[{expr, class, endpoint,
    observed, passed}, ...]`` as ``doc["thresholds"]``.

    A spec is a string, a :class:`Threshold` or ``{"expr": ..., "class": ..., "endpoint":
    ...}``. An endpoint scope without a class merges that endpoint across classes (counts
    add, histograms merge exactly). A class or endpoint the document lacks raises
    :class:`~brownout.errors.ThresholdError` naming the ones it has.
    """
    thresholds = [_as_threshold(s) for s in specs]
    decoded: dict[str, Histogram] | None = None
    results: list[dict[str, Any]] = []
    for t in thresholds:
        if decoded is None:
            decoded = document_histograms(doc)
        section = _section(t, doc, decoded)
        hists = scope_histograms(decoded, class_name=t.class_name, endpoint=t.endpoint)
        observed, passed = evaluate(t, section, hists)
        results.append(
            {
                "expr": t.expr,
                "class": t.class_name,
                "endpoint": t.endpoint,
                "observed": observed,
                "passed": passed,
            }
        )
    doc["thresholds"] = results
    return results


def _section(t: Threshold, doc: Mapping[str, Any], decoded: Mapping[str, Histogram]) -> Any:
    if t.class_name is None and t.endpoint is None:
        return doc["summary"]
    if t.class_name is not None and t.class_name not in doc["by_class"]:
        known = ", ".join(sorted(doc["by_class"])) or "none"
        raise ThresholdError(t.expr, f"class {t.class_name!r} is not in the results ({known})")
    if t.endpoint is None:
        return doc["by_class"][t.class_name]
    keys = [
        k
        for k in doc["by_endpoint"]
        if split_endpoint_key(k)[1] == t.endpoint
        and (t.class_name is None or split_endpoint_key(k)[0] == t.class_name)
    ]
    if not keys:
        known = ", ".join(sorted(doc["by_endpoint"])) or "none"
        raise ThresholdError(t.expr, f"endpoint {t.endpoint!r} is not in the results ({known})")
    if len(keys) == 1:
        return doc["by_endpoint"][keys[0]]
    counts = {f: sum(doc["by_endpoint"][k][f] for k in keys) for f in COUNT_FIELDS}
    hists = scope_histograms(decoded, endpoint=t.endpoint)
    return build_section(counts, hists, float(doc["duration_s"]))
