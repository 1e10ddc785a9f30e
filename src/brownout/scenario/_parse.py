"""Read a scenario from TOML (the format is described in docs/scenario.md).

The parser turns unit-bearing values (durations, rates, sizes, percentages) into base
units, fills in ``[defaults]``, rejects unknown keys (suggesting the closest known one) and
builds the model, whose own checks do the rest. Every error is a one-line
:class:`~brownout.errors.ScenarioError` whose ``field`` is the path as the file spells it:
model attribute names lose their ``_s`` suffix (``timeout_s`` is ``timeout`` in the file)
and ``class_name`` is ``class``.
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .. import units
from ..errors import ScenarioError
from . import _check as check
from ._faults import FAULT_KINDS, params_from_file, params_of
from ._model import (
    CrawlSpec,
    FaultSpec,
    KeySpec,
    ProxySpec,
    RequestSpec,
    RetrySpec,
    Scenario,
    SessionSpec,
    Spike,
    Stage,
    ThresholdSpec,
    TrafficClass,
)

__all__ = ["load_scenario", "parse_scenario"]

T = TypeVar("T")

TOP_KEYS = (
    "name",
    "target",
    "duration",
    "seed",
    "interval",
    "allow_hosts",
    "defaults",
    "classes",
    "thresholds",
    "faults",
    "proxies",
    "proxy_api",
)
PROXY_KEYS = ("name", "listen", "upstream")
CLASS_KEYS = (
    "name",
    "kind",
    "arrival",
    "burst_on",
    "burst_off",
    "rate",
    "stages",
    "spikes",
    "requests",
    "timeout",
    "retry",
    "max_in_flight",
    "clients",
    "session",
    "crawl",
    "headers",
    "user_agent",
    "slo",
)
STAGE_KEYS = ("duration", "rate", "target")
SPIKE_KEYS = ("at", "duration", "rate")
REQUEST_KEYS = ("name", "path", "weight", "method", "keys", "headers", "body", "json")
KEY_KEYS = ("kind", "n", "s", "values")
RETRY_KEYS = ("mode", "attempts", "base", "cap", "on_status", "on_timeout", "on_error")
SESSION_KEYS = ("think_time", "min_requests", "max_requests", "cookies")
CRAWL_KEYS = ("start", "max_depth", "max_pages")
THRESHOLD_KEYS = ("expr", "class", "endpoint", "abort_on_fail")
FAULT_KEYS = ("at", "duration", "target", "kind")

_ALL_FAULT_PARAMS = {p.toml for kind in FAULT_KINDS for p in params_of(kind)}
_RENAMES = {"class_name": "class", "rate_kb_s": "rate"}
_LITERAL_AFTER = {"keys", "headers", "header"}  # the next path segment is a user's name


class _Table:
    """A TOML table being read: its values, its path, and per key the path of the table the
    value came from (a class key may come from ``[defaults]``)."""

    __slots__ = ("data", "origins", "path")

    def __init__(
        self, data: dict[str, Any], path: str, origins: dict[str, str] | None = None
    ) -> None:
        self.data = data
        self.path = path
        self.origins = origins or {}

    def where(self, key: str) -> str:
        base = self.origins.get(key, self.path)
        return f"{base}.{key}" if base else key

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def check_keys(self, known: Sequence[str]) -> None:
        for key, value in self.data.items():
            if key not in known:
                raise _unknown_key(self.origins.get(key, self.path), key, value, known)

    def kwargs(self, pairs: dict[str, str]) -> dict[str, Any]:
        """``{attribute: raw value}`` for the file keys present (``pairs`` maps key to
        attribute); the model checks these values itself."""
        return {attr: self.data[key] for key, attr in pairs.items() if key in self.data}


def _unknown_key(path: str, key: str, value: object, known: Sequence[str]) -> ScenarioError:
    where = path or "top level"
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.65)
    hint = f"did you mean {close[0]!r}?" if close else "allowed keys: " + ", ".join(known)
    shown = repr(key) if len(key) <= 40 else repr(key[:37] + "...")
    return ScenarioError(
        f"{path}.{key}" if path else key,
        value,
        "one of " + ", ".join(known),
        problem="is not a known key",
        message=f"{where}: unknown key {shown}; {hint}",
    )


def _toml_field(field: str) -> list[str]:
    """A model attribute path as the file spells it: ``stages[1].duration_s`` becomes
    ``stages[1].duration``, ``params.latency_s`` becomes ``latency``."""
    out: list[str] = []
    literal = False
    for segment in field.split("."):
        if literal:
            out.append(segment)
            literal = False
            continue
        name, bracket, rest = segment.partition("[")
        if name == "params" and not out:
            continue
        name = _RENAMES.get(name, name[:-2] if name.endswith("_s") else name)
        out.append(name + bracket + rest)
        literal = name in _LITERAL_AFTER
    return out or [field]


def _rebase(err: ScenarioError, table: _Table) -> ScenarioError:
    """``err`` from the model of ``table``, with its field as the file's full path."""
    segments = _toml_field(err.field)
    first = segments[0]
    key = first.partition("[")[0]
    path = ".".join([table.where(key) + first[len(key) :], *segments[1:]])
    if err.problem == "is missing":
        return check.missing(path, err.allowed)
    return ScenarioError(path, err.value, err.allowed, problem=err.problem)


def _build(table: _Table, make: Callable[..., T], **kwargs: Any) -> T:
    try:
        return make(**kwargs)
    except ScenarioError as err:
        raise _rebase(err, table) from None


def _as_table(value: object, path: str, example: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ScenarioError(path, value, f"a table, such as {example}")
    return value


def _tables(table: _Table, key: str, example: str) -> list[_Table]:
    """The array of tables ``key`` (``[[key]]``), each with its path ``key[i]``."""
    value = table.get(key, [])
    path = table.where(key)
    if not isinstance(value, list):
        raise ScenarioError(path, value, f"an array of tables: {example}")
    out = []
    for i, item in enumerate(value):
        out.append(_Table(_as_table(item, f"{path}[{i}]", example), f"{path}[{i}]"))
    return out


def _sub(table: _Table, key: str, known: Sequence[str], example: str) -> _Table:
    sub = _Table(_as_table(table.get(key), table.where(key), example), table.where(key))
    sub.check_keys(known)
    return sub


def _duration(table: _Table, key: str) -> float:
    return units.parse_duration(table.get(key), field=table.where(key))


def _required(table: _Table, key: str, allowed: str) -> Any:
    if key not in table:
        raise check.missing(table.where(key), allowed)
    return table.get(key)


# -- classes -------------------------------------------------------------------------------


def _stages(cls: _Table) -> tuple[Stage, ...]:
    stages = []
    for st in _tables(cls, "stages", '[[classes.stages]] with duration = "30s" and rate = 100'):
        st.check_keys(STAGE_KEYS)
        kwargs: dict[str, Any] = {"duration_s": 0.0}
        _required(st, "duration", 'a duration such as "30s"')
        kwargs["duration_s"] = _duration(st, "duration")
        for key in ("rate", "target"):
            if key in st:
                kwargs[key] = units.parse_rate(st.get(key), field=st.where(key))
        stages.append(_build(st, Stage, **kwargs))
    return tuple(stages)


def _spikes(cls: _Table) -> tuple[Spike, ...]:
    spikes = []
    for sp in _tables(
        cls, "spikes", '[[classes.spikes]] with at = "1m", duration = "10s", rate = 500'
    ):
        sp.check_keys(SPIKE_KEYS)
        _required(sp, "at", 'a time from the start such as "1m"')
        _required(sp, "duration", 'a duration such as "10s"')
        _required(sp, "rate", "a rate added on top, such as 500")
        spikes.append(
            _build(
                sp,
                Spike,
                at_s=_duration(sp, "at"),
                duration_s=_duration(sp, "duration"),
                rate=units.parse_rate(sp.get("rate"), field=sp.where("rate")),
            )
        )
    return tuple(spikes)


def _key(table: _Table, name: str) -> KeySpec:
    value = table.get(name)
    path = table.where(name)
    if check.is_number(value) and not isinstance(value, float):
        return _build(_Table({}, path), KeySpec, kind="uniform", n=value)
    if isinstance(value, list):
        return _build(_Table({}, path), KeySpec, kind="values", values=tuple(value))
    example = '{kind = "zipf", n = 10000, s = 1.1}'
    spec = _Table(_as_table(value, path, example + ", an integer n (uniform 1..n) or a list"), path)
    spec.check_keys(KEY_KEYS)
    kind = spec.get("kind")
    if kind is None:
        kind = "values" if "values" in spec else "zipf" if "s" in spec else "uniform"
    for key, only in (("s", "zipf"), ("values", "values")):
        if key in spec and kind != only:
            raise ScenarioError(
                spec.where(key),
                spec.get(key),
                f"{key} only with kind = {only!r}",
                problem=f"is not allowed with kind {kind!r}",
            )
    if "n" in spec and kind == "values":
        raise ScenarioError(
            spec.where("n"),
            spec.get("n"),
            "n only with kind 'uniform' or 'zipf' (values sets it)",
            problem="is not allowed with kind 'values'",
        )
    kwargs = spec.kwargs({"n": "n", "s": "s"})
    if "values" in spec:
        values = spec.get("values")
        kwargs["values"] = tuple(values) if isinstance(values, list) else values
    return _build(spec, KeySpec, kind=kind, **kwargs)


def _requests(cls: _Table) -> tuple[RequestSpec, ...]:
    requests = []
    for rq in _tables(cls, "requests", '[[classes.requests]] with path = "/products/{id}"'):
        rq.check_keys(REQUEST_KEYS)
        _required(rq, "path", 'a path template such as "/products/{id}"')
        kwargs = rq.kwargs(
            {
                "path": "path",
                "name": "name",
                "weight": "weight",
                "method": "method",
                "headers": "headers",
            }
        )
        if "keys" in rq:
            keys = _Table(
                _as_table(rq.get("keys"), rq.where("keys"), "{id = {kind = 'zipf', n = 1000}}"),
                rq.where("keys"),
            )
            kwargs["keys"] = {name: _key(keys, name) for name in keys.data}
        if "body" in rq and "json" in rq:
            raise ScenarioError(
                rq.where("json"),
                rq.get("json"),
                "either body (text) or json (a value sent as JSON), not both",
                problem="is not allowed with body",
            )
        if "body" in rq:
            body = rq.get("body")
            if not isinstance(body, str):
                raise ScenarioError(
                    rq.where("body"), body, "a string (sent as UTF-8), or use json for a table"
                )
            kwargs["body"] = body.encode("utf-8", "surrogatepass")
        if "json" in rq:
            try:
                text = json.dumps(
                    rq.get("json"),
                    separators=(",", ":"),
                    ensure_ascii=False,
                    allow_nan=False,
                    default=str,
                )
            except ValueError:
                raise ScenarioError(
                    rq.where("json"), rq.get("json"), "a value JSON can hold (no nan or inf)"
                ) from None
            kwargs["body"] = text.encode("utf-8", "surrogatepass")
            headers = kwargs.get("headers", {})
            if isinstance(headers, dict) and not any(
                str(h).lower() == "content-type" for h in headers
            ):
                kwargs["headers"] = {**headers, "Content-Type": "application/json"}
        requests.append(_build(rq, RequestSpec, **kwargs))
    return tuple(requests)


def _retry(cls: _Table) -> RetrySpec:
    value = cls.get("retry")
    if isinstance(value, str):
        return _build(_Table({"mode": value}, cls.where("retry")), RetrySpec, mode=value)
    rt = _sub(
        cls, "retry", RETRY_KEYS, '{mode = "backoff", attempts = 3, base = "100ms", cap = "2s"}'
    )
    _required(rt, "mode", "'none', 'immediate' or 'backoff'")
    kwargs = rt.kwargs(
        {"mode": "mode", "attempts": "attempts", "on_timeout": "on_timeout", "on_error": "on_error"}
    )
    for key in ("base", "cap"):
        if key in rt:
            kwargs[f"{key}_s"] = _duration(rt, key)
    if "on_status" in rt:
        statuses = rt.get("on_status")
        if not isinstance(statuses, list):
            raise ScenarioError(
                rt.where("on_status"),
                statuses,
                "a list of HTTP status codes such as [502, 503, 504]",
            )
        kwargs["on_status"] = statuses
    return _build(rt, RetrySpec, **kwargs)


def _session(cls: _Table) -> SessionSpec:
    ss = _sub(
        cls, "session", SESSION_KEYS, '{think_time = "2s", min_requests = 3, max_requests = 10}'
    )
    kwargs = ss.kwargs(
        {"min_requests": "min_requests", "max_requests": "max_requests", "cookies": "cookies"}
    )
    if "think_time" in ss:
        kwargs["think_time_s"] = _duration(ss, "think_time")
    return _build(ss, SessionSpec, **kwargs)


def _crawl(cls: _Table) -> CrawlSpec:
    cr = _sub(cls, "crawl", CRAWL_KEYS, '{start = ["/"], max_depth = 3, max_pages = 1000}')
    kwargs = cr.kwargs({"start": "start", "max_depth": "max_depth", "max_pages": "max_pages"})
    return _build(cr, CrawlSpec, **kwargs)


def _class_table(raw: _Table, defaults: dict[str, Any]) -> _Table:
    """The class's keys over ``[defaults]`` (a class key replaces the default; ``headers``
    tables merge, the class's entries winning)."""
    merged = dict(defaults)
    origins = dict.fromkeys(defaults, "defaults")
    for key, value in raw.data.items():
        inherited = merged.get(key)
        if key == "headers" and isinstance(value, dict) and isinstance(inherited, dict):
            merged[key] = {**inherited, **value}
        else:
            merged[key] = value
        origins[key] = raw.path
    return _Table(merged, raw.path, origins)


def _class_kwargs(cls: _Table) -> dict[str, Any]:
    """Everything of a class but the rate shorthand, checked and in base units."""
    _required(cls, "name", "a name such as 'shoppers'")
    kwargs = cls.kwargs(
        {
            "name": "name",
            "kind": "kind",
            "arrival": "arrival",
            "max_in_flight": "max_in_flight",
            "clients": "clients",
            "headers": "headers",
            "user_agent": "user_agent",
        }
    )
    arrival = cls.get("arrival", "constant")
    for key in ("burst_on", "burst_off"):
        if key in cls:
            if arrival != "bursty":
                raise ScenarioError(
                    cls.where(key),
                    cls.get(key),
                    "burst_on and burst_off only with arrival = 'bursty'",
                    problem=f"is not allowed with arrival {arrival!r}",
                )
            kwargs[f"{key}_s"] = _duration(cls, key)
    if "rate" in cls and "stages" in cls:
        raise ScenarioError(
            cls.where("rate"),
            cls.get("rate"),
            "either rate (constant for the whole run) or [[classes.stages]], not both",
            problem="is not allowed with stages",
        )
    if "stages" in cls:
        kwargs["stages"] = _stages(cls)
        if not kwargs["stages"]:
            raise ScenarioError(cls.where("stages"), [], "at least one [[classes.stages]] table")
    elif "rate" not in cls:
        raise check.missing(
            cls.where("stages"), "[[classes.stages]] tables, or rate = 100 for the whole run"
        )
    kwargs["spikes"] = _spikes(cls)
    kwargs["requests"] = _requests(cls)
    if "timeout" in cls:
        kwargs["timeout_s"] = _duration(cls, "timeout")
    if "retry" in cls:
        kwargs["retry"] = _retry(cls)
    if "session" in cls:
        kwargs["session"] = _session(cls)
    if "crawl" in cls:
        kwargs["crawl"] = _crawl(cls)
    if "slo" in cls:
        slo = cls.get("slo")
        kwargs["slo"] = (slo,) if isinstance(slo, str) else slo
    return kwargs


def _schedule_end(kwargs: dict[str, Any]) -> float:
    stages: tuple[Stage, ...] = kwargs.get("stages", ())
    spikes: tuple[Spike, ...] = kwargs.get("spikes", ())
    end = sum(s.duration_s for s in stages)
    return max([end, *(s.at_s + s.duration_s for s in spikes)])


# -- thresholds and faults -----------------------------------------------------------------


def _thresholds(top: _Table) -> tuple[ThresholdSpec, ...]:
    value = top.get("thresholds", [])
    if not isinstance(value, list):
        raise ScenarioError(
            "thresholds",
            value,
            'an array: [[thresholds]] tables with expr = "p(99) < 300ms", or strings',
        )
    specs = []
    for i, item in enumerate(value):
        path = f"thresholds[{i}]"
        if isinstance(item, str):
            specs.append(_build(_Table({"expr": item}, path), ThresholdSpec, expr=item))
            continue
        th = _Table(_as_table(item, path, '{expr = "p(99) < 300ms", class = "shoppers"}'), path)
        th.check_keys(THRESHOLD_KEYS)
        _required(th, "expr", "a threshold expression such as 'p(99) < 300ms'")
        kwargs = th.kwargs(
            {
                "expr": "expr",
                "class": "class_name",
                "endpoint": "endpoint",
                "abort_on_fail": "abort_on_fail",
            }
        )
        specs.append(_build(th, ThresholdSpec, **kwargs))
    return tuple(specs)


def _faults(top: _Table, run_s: float) -> tuple[FaultSpec, ...]:
    faults = []
    for ft in _tables(
        top, "faults", '[[faults]] with at = "1m", target = "payments", kind = "latency"'
    ):
        kind = check.choice(
            ft.where("kind"), _required(ft, "kind", "a fault kind such as 'latency'"), FAULT_KINDS
        )
        params = dict.fromkeys(p.toml for p in params_of(kind))
        for key, value in ft.data.items():
            if key not in params and key not in FAULT_KEYS and key in _ALL_FAULT_PARAMS:
                raise ScenarioError(
                    ft.where(key),
                    value,
                    f"the parameters of a {kind} fault: " + ", ".join(params),
                    problem=f"is not a parameter of a {kind} fault",
                )
        ft.check_keys(FAULT_KEYS + tuple(params))
        _required(ft, "at", 'a time from the start such as "1m"')
        _required(ft, "target", "the name of the proxy the fault acts on, such as 'payments'")
        at_s = _duration(ft, "at")
        if at_s >= run_s:
            raise ScenarioError(
                ft.where("at"),
                ft.get("at"),
                f"a time before the end of the run ({units.format_duration(run_s)})",
            )
        duration_s = _duration(ft, "duration") if "duration" in ft else run_s - at_s
        values = params_from_file(
            kind, {name: ft.get(name) for name in params if name in ft}, where=ft.where
        )
        faults.append(
            _build(
                ft,
                FaultSpec,
                at_s=at_s,
                duration_s=duration_s,
                target=ft.get("target"),
                kind=kind,
                params=values,
            )
        )
    return tuple(faults)


# -- the document --------------------------------------------------------------------------


def _scenario(doc: dict[str, Any], default_name: str) -> Scenario:
    top = _Table(doc, "")
    top.check_keys(TOP_KEYS)
    defaults: dict[str, Any] = {}
    if "defaults" in top:
        defaults = _as_table(top.get("defaults"), "defaults", '[defaults] with timeout = "2s"')
        _Table(defaults, "defaults").check_keys([k for k in CLASS_KEYS if k != "name"])
    if "classes" not in top:
        raise check.missing("classes", "at least one [[classes]] table")
    tables = [
        _class_table(raw, defaults)
        for raw in _tables(top, "classes", '[[classes]] with name = "shoppers"')
    ]
    if not tables:
        raise ScenarioError("classes", [], "at least one [[classes]] table")
    for cls in tables:
        cls.check_keys(CLASS_KEYS)
    parts = [_class_kwargs(cls) for cls in tables]
    run_s = _duration(top, "duration") if "duration" in top else 0.0
    if run_s == 0:
        ends = [_schedule_end(kw) for kw in parts if "stages" in kw]
        if not ends:
            raise check.missing(
                "duration", 'a run length such as duration = "30s" (or give a class stages)'
            )
        run_s = max(ends)
    classes = []
    for cls, kwargs in zip(tables, parts, strict=True):
        if "stages" not in kwargs:
            rate = units.parse_rate(cls.get("rate"), field=cls.where("rate"))
            kwargs["stages"] = (Stage(duration_s=run_s, rate=rate),)
        classes.append(_build(cls, TrafficClass, **kwargs))
    kwargs = top.kwargs(
        {
            "name": "name",
            "target": "target",
            "seed": "seed",
            "allow_hosts": "allow_hosts",
            "proxy_api": "proxy_api",
        }
    )
    kwargs.setdefault("name", default_name)
    if isinstance(kwargs.get("allow_hosts"), list):
        kwargs["allow_hosts"] = tuple(kwargs["allow_hosts"])
    if "interval" in top:
        kwargs["interval_s"] = _duration(top, "interval")
    return _build(
        top,
        Scenario,
        duration_s=run_s,
        classes=tuple(classes),
        thresholds=_thresholds(top),
        faults=_faults(top, run_s),
        proxies=_proxies(top),
        **kwargs,
    )


def _proxies(top: _Table) -> tuple[ProxySpec, ...]:
    example = (
        '[[proxies]] with name = "payments", listen = "127.0.0.1:9001", upstream = "127.0.0.1:9000"'
    )
    out = []
    for pt in _tables(top, "proxies", example):
        pt.check_keys(PROXY_KEYS)
        for key in PROXY_KEYS:
            _required(pt, key, example)
        out.append(_build(pt, ProxySpec, **pt.kwargs({k: k for k in PROXY_KEYS})))
    return tuple(out)


def _parse(text: object, source: str | None, default_name: str) -> Scenario:
    return parse_toml_document(text, source, lambda doc: _scenario(doc, default_name))


def parse_toml_document(
    text: object, source: str | None, build: Callable[[dict[str, Any]], T]
) -> T:
    """``build`` applied to the TOML document in ``text``; every :class:`ScenarioError`
    (bad TOML, or from ``build``) names ``source`` (a file) when it is given."""
    try:
        if not isinstance(text, str):
            raise ScenarioError("text", type(text).__name__, "a str holding TOML")
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError(
                "toml", None, "valid TOML", problem="is not valid", message=f"not valid TOML: {exc}"
            ) from None
        except RecursionError:
            raise ScenarioError(
                "toml", None, "valid TOML", message="not valid TOML: nested too deeply"
            ) from None
        return build(doc)
    except ScenarioError as err:
        if source is None:
            raise
        raise ScenarioError(
            err.field,
            err.value,
            err.allowed,
            problem=err.problem,
            message=err.detail,
            source=source,
        ) from None


def parse_scenario(text: str, *, source: str = "<string>") -> Scenario:
    """Parse a scenario from TOML text. ``source`` names it in error messages (a file
    name); the default ``"<string>"`` is left out of them."""
    return _parse(text, None if source == "<string>" else source, "scenario")


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read and parse the scenario file at ``path`` (UTF-8 TOML); its name defaults to
    the file's stem."""
    where = os.fspath(path)
    return _parse(read_text_file(where, "scenario"), where, Path(where).stem or "scenario")


def read_text_file(where: str, what: str) -> str:
    """The UTF-8 text of the file at ``where``; a :class:`ScenarioError` naming the file
    when it cannot be read or is not UTF-8 (``what`` names the kind of file expected)."""
    try:
        data = Path(where).read_bytes()
    except OSError as exc:
        raise ScenarioError(
            "file",
            where,
            f"a readable {what} file",
            problem=f"cannot be read ({exc.strerror or exc})",
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(
            "file", where, "a UTF-8 text file", problem=f"is not UTF-8 (byte {exc.start})"
        ) from None
