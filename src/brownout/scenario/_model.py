"""The scenario model: one description of traffic, client behaviour, faults and thresholds,
run for real by ``brownout load`` and in virtual time by ``brownout sim``.

Every object is a frozen, slotted, keyword-only dataclass that checks itself when built and
raises :class:`~brownout.errors.ScenarioError` naming the attribute, the value and what is
allowed. Durations are seconds (``*_s``), rates are per second. Dict-valued fields
(``headers``, ``keys``, ``params``) are copied on construction and must be treated as
read-only. Objects pickle, so worker processes can receive a whole :class:`Scenario`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any
from urllib.parse import urlsplit

from .._net import split_host_port
from .._version import __version__
from ..errors import ScenarioError
from . import _check as check
from ._faults import FAULT_KINDS, HTTP_FAULTS, normalize_params
from ._schedule import Piece, build_pieces

__all__ = [
    "ARRIVALS",
    "DEFAULT_USER_AGENT",
    "KINDS",
    "RETRY_MODES",
    "CrawlSpec",
    "FaultSpec",
    "KeySpec",
    "ProxySpec",
    "RequestSpec",
    "RetrySpec",
    "Scenario",
    "SessionSpec",
    "Spike",
    "Stage",
    "ThresholdSpec",
    "TrafficClass",
    "quick_scenario",
]

KINDS = ("human", "bot")
MAX_CLIENTS = 65_536  # simulated client addresses per class: 10.<class>.<hi>.<lo>
ARRIVALS = ("constant", "poisson", "bursty")
RETRY_MODES = ("none", "immediate", "backoff")
KEY_KINDS = ("uniform", "zipf", "values")
DEFAULT_USER_AGENT = f"brownout/{__version__}"
MAX_UNIFORM_N = 2**53
MAX_ZIPF_N = 10_000_000  # the picker keeps an 8-byte CDF entry per rank
MAX_EXPECTED = 1e12  # arrivals per class: beyond this float indices stop being exact
MIN_PERIOD_S = 0.001
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def parse_template(field_name: str, path: str) -> tuple[str, ...]:
    """Split a path template into ``(literal, key, literal, key, ..., literal)``.

    ``{name}`` is a key drawn per request; ``{{`` and ``}}`` are literal braces."""
    parts: list[str] = []
    literal: list[str] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(path):
        literal.append(path[pos : match.start()])
        token = match.group(0)
        if token == "{{":
            literal.append("{")
        elif token == "}}":
            literal.append("}")
        elif match.group(1):
            parts.extend(("".join(literal), match.group(1)))
            literal = []
        else:
            raise ScenarioError(
                field_name,
                path,
                "{name} for a key drawn per request and {{ or }} for a literal brace",
                problem="has a stray brace",
            )
        pos = match.end()
    literal.append(path[pos:])
    parts.append("".join(literal))
    return tuple(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class Stage:
    """``duration_s`` seconds of a class's rate schedule: a constant ``rate`` (per second),
    or a linear ramp from the previous stage's rate (0 before the first) to ``target`` (per
    second). Exactly one of the two is set; steps are consecutive constant stages."""

    duration_s: float
    rate: float | None = None
    target: float | None = None

    def __post_init__(self) -> None:
        _set(self, "duration_s", check.duration("duration_s", self.duration_s, positive=True))
        if self.rate is None and self.target is None:
            raise check.missing("rate", "rate (a constant rate) or target (a ramp to that rate)")
        if self.rate is not None and self.target is not None:
            raise ScenarioError(
                "target",
                self.target,
                "either rate (constant) or target (a ramp), not both",
                problem="is not allowed with rate",
            )
        if self.rate is not None:
            _set(self, "rate", check.rate("rate", self.rate))
        else:
            _set(self, "target", check.rate("target", self.target))


@dataclass(frozen=True, slots=True, kw_only=True)
class Spike:
    """``rate`` more per second on top of the schedule during ``[at_s, at_s + duration_s)``."""

    at_s: float
    duration_s: float
    rate: float

    def __post_init__(self) -> None:
        _set(self, "at_s", check.duration("at_s", self.at_s))
        _set(self, "duration_s", check.duration("duration_s", self.duration_s, positive=True))
        _set(self, "rate", check.rate("rate", self.rate, positive=True))


@dataclass(frozen=True, slots=True, kw_only=True)
class KeySpec:
    """How a path key (``{id}``) is drawn for each request.

    - ``uniform``: an integer in ``1..n``, each with probability ``1/n``;
    - ``zipf``: an integer ``k`` in ``1..n`` with probability ``k**-s / sum_j j**-s``
      (rank 1 the most popular; ``s`` > 0, around 1 for web popularity);
    - ``values``: one of ``values``, uniformly (``n`` is set to their number).
    """

    kind: str = "uniform"
    n: int = 0
    s: float = 1.0
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check.choice("kind", self.kind, KEY_KINDS)
        _set(
            self,
            "s",
            check.number(
                "s", self.s, minimum=1e-9, maximum=100.0, allowed="a number > 0 (at most 100)"
            ),
        )
        if self.kind == "values":
            if not isinstance(self.values, tuple | list) or not self.values:
                raise ScenarioError("values", self.values, "a non-empty list of strings or numbers")
            rendered: list[str] = []
            given: tuple[object, ...] = tuple(self.values)
            for i, value in enumerate(given):
                if isinstance(value, str):
                    rendered.append(
                        check.text(f"values[{i}]", value, allowed="a one-line string or a number")
                    )
                elif check.is_number(value):
                    rendered.append(str(value))
                else:
                    raise ScenarioError(f"values[{i}]", value, "a one-line string or a number")
            _set(self, "values", tuple(rendered))
            _set(self, "n", len(rendered))
            return
        if self.values:
            raise ScenarioError(
                "values",
                self.values,
                "values only with kind = 'values'",
                problem=f"is not allowed with kind {self.kind!r}",
            )
        top = MAX_ZIPF_N if self.kind == "zipf" else MAX_UNIFORM_N
        check.integer("n", self.n, minimum=1, maximum=top)


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestSpec:
    """One entry of a class's request mix.

    ``path`` is a template (``"/products/{id}"``; query strings allowed) whose keys are
    drawn per request from ``keys``; ``name`` labels the endpoint in results (default: the
    template); ``weight`` is its share of the mix (relative, > 0); ``body`` is sent as is.
    Every placeholder needs a key and every key a placeholder; a key named twice in one
    path takes one value per request."""

    path: str
    name: str = ""
    weight: float = 1.0
    method: str = "GET"
    keys: dict[str, KeySpec] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    _template: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check.path("path", self.path)
        template = parse_template("path", self.path)
        _set(self, "_template", template)
        _set(self, "name", check.text("name", self.name) if self.name != "" else self.path)
        _set(
            self,
            "weight",
            check.number(
                "weight",
                self.weight,
                minimum=1e-12,
                maximum=1e12,
                allowed="a number > 0 (a share of the mix)",
            ),
        )
        _set(self, "method", check.http_token("method", self.method).upper())
        if not isinstance(self.keys, dict):
            raise ScenarioError("keys", self.keys, "a dict of key names to KeySpec")
        for key, spec in self.keys.items():
            if not isinstance(key, str) or not _IDENTIFIER.fullmatch(key):
                raise ScenarioError("keys", key, "key names that are identifiers such as 'id'")
            if not isinstance(spec, KeySpec):
                raise ScenarioError(f"keys.{key}", spec, "a KeySpec")
        _set(self, "keys", dict(self.keys))
        used = template[1::2]
        for key in used:
            if key not in self.keys:
                raise check.missing(
                    f"keys.{key}",
                    f"a key for {{{key}}} in the path, such as keys.{key} = {{kind = 'uniform', n = 1000}}",
                )
        for key in self.keys:
            if key not in used:
                raise ScenarioError(
                    f"keys.{key}",
                    self.keys[key],
                    f"keys named in the path {self.path!r}",
                    problem="is not used",
                )
        _set(self, "headers", check.headers("headers", self.headers))
        if self.body is not None and not isinstance(self.body, bytes):
            raise ScenarioError("body", self.body, "bytes or None")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetrySpec:
    """How the client retries a failed request (each retry is a real extra request).

    ``attempts`` counts every attempt, the first included. A failure is retried when it is
    a response with a status in ``on_status``, a client timeout (``on_timeout``) or a
    connection error (``on_error``). Before retry ``k`` (1-based): ``immediate`` waits 0;
    ``backoff`` waits ``U(0, min(cap_s, base_s * 2**(k-1)))`` (full jitter). ``none``
    never retries, whatever ``attempts`` says."""

    mode: str = "none"
    attempts: int = 3
    base_s: float = 0.1
    cap_s: float = 2.0
    on_status: frozenset[int] = frozenset({502, 503, 504})
    on_timeout: bool = True
    on_error: bool = True

    def __post_init__(self) -> None:
        check.choice("mode", self.mode, RETRY_MODES)
        check.integer("attempts", self.attempts, minimum=1, maximum=100)
        _set(self, "base_s", check.duration("base_s", self.base_s))
        _set(self, "cap_s", check.duration("cap_s", self.cap_s))
        if self.cap_s < self.base_s:
            raise ScenarioError("cap_s", self.cap_s, f"a duration >= base ({self.base_s:g} s)")
        _set(self, "on_status", check.statuses("on_status", self.on_status))
        check.boolean("on_timeout", self.on_timeout)
        check.boolean("on_error", self.on_error)

    @property
    def max_attempts(self) -> int:
        """Attempts a request may take: ``attempts``, or 1 when ``mode`` is ``none``."""
        return 1 if self.mode == "none" else self.attempts

    def delay_s(self, retry: int, u: float) -> float:
        """The wait before retry number ``retry`` (1-based), given ``u`` uniform in [0, 1)."""
        if self.mode != "backoff":
            return 0.0
        return u * min(self.cap_s, self.base_s * 2.0 ** min(retry - 1, 1024))


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionSpec:
    """A human session: each arrival starts a session that issues between
    ``min_requests`` and ``max_requests`` requests (uniform) from the class's mix, waiting
    an exponential think time of mean ``think_time_s`` between a response and the next
    request, and keeping cookies when ``cookies``."""

    think_time_s: float = 1.0
    min_requests: int = 1
    max_requests: int = 10
    cookies: bool = True

    def __post_init__(self) -> None:
        _set(self, "think_time_s", check.duration("think_time_s", self.think_time_s))
        check.integer("min_requests", self.min_requests, minimum=1, maximum=1_000_000)
        check.integer("max_requests", self.max_requests, minimum=1, maximum=1_000_000)
        if self.max_requests < self.min_requests:
            raise ScenarioError(
                "max_requests",
                self.max_requests,
                f"an integer >= min_requests ({self.min_requests})",
            )
        check.boolean("cookies", self.cookies)


@dataclass(frozen=True, slots=True, kw_only=True)
class CrawlSpec:
    """A scraper: each arrival fetches the next page of a breadth-first crawl over links
    found in HTML responses, starting at ``start``, same host only, without cookies, down to
    ``max_depth`` links from a start page and at most ``max_pages`` pages per crawl (then it
    starts over)."""

    start: tuple[str, ...] = ("/",)
    max_depth: int = 3
    max_pages: int = 1000

    def __post_init__(self) -> None:
        if not isinstance(self.start, tuple | list) or not self.start:
            raise ScenarioError("start", self.start, "a non-empty list of paths such as ['/']")
        _set(self, "start", tuple(check.path(f"start[{i}]", p) for i, p in enumerate(self.start)))
        check.integer("max_depth", self.max_depth, minimum=0, maximum=1000)
        check.integer("max_pages", self.max_pages, minimum=1, maximum=10_000_000)


@dataclass(frozen=True, slots=True, kw_only=True)
class ThresholdSpec:
    """A pass/fail rule on the results, in k6's syntax (``"p(99) < 300ms"``), kept as text
    (``brownout.results`` parses it), scoped to a class and/or an endpoint when named;
    ``abort_on_fail`` stops the run as soon as it fails."""

    expr: str
    class_name: str | None = None
    endpoint: str | None = None
    abort_on_fail: bool = False

    def __post_init__(self) -> None:
        check.text("expr", self.expr, allowed="a threshold expression such as 'p(99) < 300ms'")
        if self.class_name is not None:
            check.name("class_name", self.class_name)
        if self.endpoint is not None:
            check.text("endpoint", self.endpoint)
        check.boolean("abort_on_fail", self.abort_on_fail)


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultSpec:
    """A fault injected into proxy ``target`` during ``[at_s, at_s + duration_s)``.

    ``kind`` and ``params`` follow :mod:`brownout.scenario._faults` (Toxiproxy's toxics and
    HTTP faults); ``params`` is normalized: durations in seconds under ``*_s`` keys,
    defaults filled in."""

    at_s: float
    duration_s: float
    target: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _set(self, "at_s", check.duration("at_s", self.at_s))
        _set(self, "duration_s", check.duration("duration_s", self.duration_s, positive=True))
        check.name("target", self.target, example="payments")
        check.choice("kind", self.kind, FAULT_KINDS)
        _set(self, "params", normalize_params(self.kind, self.params))

    @property
    def end_s(self) -> float:
        return self.at_s + self.duration_s

    @property
    def layer(self) -> str:
        """``"http"`` for HTTP faults, ``"tcp"`` for Toxiproxy's."""
        return "http" if self.kind in HTTP_FAULTS else "tcp"

    def record(self, index: int) -> dict[str, Any]:
        """The results document's record of this fault, number ``index`` of the timeline
        (``started_s`` / ``ended_s`` None until the run fills them in)."""
        return {
            "index": index,
            "name": f"brownout-{index}-{self.kind}",
            "target": self.target,
            "kind": self.kind,
            "layer": self.layer,
            "params": dict(self.params),
            "at_s": self.at_s,
            "duration_s": self.duration_s,
            "started_s": None,
            "ended_s": None,
            "errors": [],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class TrafficClass:
    """A population of clients: humans or bots, their schedule, mix and behaviour.

    The arrival process (``constant``, ``poisson`` or ``bursty`` with ``burst_on_s`` /
    ``burst_off_s``) turns the schedule (``stages`` and ``spikes``) into send times; see
    :func:`brownout.scenario.arrivals`. Each arrival is one request picked from
    ``requests`` by weight, a session start when ``session`` is set (humans only), or the
    next page of a crawl when ``crawl`` is set (bots only; a crawl class needs no requests).
    ``timeout_s`` is the client timeout of each attempt, ``max_in_flight`` the cap on
    outstanding requests (beyond it arrivals are counted as dropped), ``slo`` threshold
    expressions scoped to this class. ``clients`` > 0 sends each session (each request, in a
    class without sessions) from one of that many simulated client addresses,
    ``10.<class number>.<hi>.<lo>``, in an ``X-Forwarded-For`` header: a target that trusts
    the generator as a proxy then sees a crowd rather than one address (0: no header)."""

    name: str
    stages: tuple[Stage, ...]
    kind: str = "human"
    arrival: str = "constant"
    burst_on_s: float = 1.0
    burst_off_s: float = 1.0
    spikes: tuple[Spike, ...] = ()
    requests: tuple[RequestSpec, ...] = ()
    timeout_s: float = 2.0
    retry: RetrySpec = field(default_factory=RetrySpec)
    max_in_flight: int = 10_000
    clients: int = 0
    session: SessionSpec | None = None
    crawl: CrawlSpec | None = None
    headers: dict[str, str] = field(default_factory=dict)
    user_agent: str = DEFAULT_USER_AGENT
    slo: tuple[str, ...] = ()
    _pieces: tuple[Piece, ...] = field(init=False, repr=False, compare=False)
    _starts: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check.name("name", self.name)
        check.choice("kind", self.kind, KINDS)
        check.choice("arrival", self.arrival, ARRIVALS)
        _set(self, "burst_on_s", check.duration("burst_on_s", self.burst_on_s, positive=True))
        if self.burst_on_s < MIN_PERIOD_S:
            raise ScenarioError("burst_on_s", self.burst_on_s, "a duration >= 1ms")
        _set(self, "burst_off_s", check.duration("burst_off_s", self.burst_off_s))
        stages = check.sequence("stages", self.stages, Stage)
        if not stages:
            raise ScenarioError("stages", self.stages, "at least one stage")
        _set(self, "stages", stages)
        _set(self, "spikes", check.sequence("spikes", self.spikes, Spike))
        _set(self, "timeout_s", check.duration("timeout_s", self.timeout_s, positive=True))
        if not isinstance(self.retry, RetrySpec):
            raise ScenarioError("retry", self.retry, "a RetrySpec")
        check.integer("max_in_flight", self.max_in_flight, minimum=1, maximum=10_000_000)
        check.integer("clients", self.clients, minimum=0, maximum=MAX_CLIENTS)
        if self.session is not None and not isinstance(self.session, SessionSpec):
            raise ScenarioError("session", self.session, "a SessionSpec or None")
        if self.crawl is not None and not isinstance(self.crawl, CrawlSpec):
            raise ScenarioError("crawl", self.crawl, "a CrawlSpec or None")
        if self.session is not None and self.kind != "human":
            raise ScenarioError(
                "session",
                self.session,
                "sessions in human classes (kind = 'human')",
                problem=f"is not allowed for kind {self.kind!r}",
            )
        if self.crawl is not None and self.kind != "bot":
            raise ScenarioError(
                "crawl",
                self.crawl,
                "crawls in bot classes (kind = 'bot')",
                problem=f"is not allowed for kind {self.kind!r}",
            )
        requests = check.sequence("requests", self.requests, RequestSpec)
        if not requests:
            if self.crawl is None:
                raise ScenarioError(
                    "requests", self.requests, "at least one request (or a crawl for a bot)"
                )
            first = self.crawl.start[0].replace("{", "{{").replace("}", "}}")
            requests = (RequestSpec(path=first, name="crawl"),)
        _set(self, "requests", requests)
        _set(self, "headers", check.headers("headers", self.headers))
        if not isinstance(self.user_agent, str) or any(c in self.user_agent for c in "\r\n\0"):
            raise ScenarioError("user_agent", self.user_agent, "a one-line string ('' sends none)")
        _set(
            self,
            "slo",
            check.strings("slo", self.slo, each="a threshold expression such as 'p(99) < 300ms'"),
        )
        pieces = build_pieces(stages, self.spikes)
        _set(self, "_pieces", pieces)
        _set(self, "_starts", tuple(p[0] for p in pieces))
        last = pieces[-1]
        du = last[1] - last[0]
        total = last[4] + (last[2] + 0.5 * last[3] * du) * du
        if not total <= MAX_EXPECTED:
            raise ScenarioError(
                "stages",
                f"{total:.3g} arrivals",
                "a schedule of at most 1e12 arrivals",
                problem="is too large",
            )

    @property
    def end_s(self) -> float:
        """When the schedule ends (last stage or spike), in seconds from the start."""
        return self._pieces[-1][1]

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The endpoint names this class reports (``"crawl"`` for a crawl class)."""
        if self.crawl is not None:
            return ("crawl",)
        return tuple(dict.fromkeys(r.name for r in self.requests))


def _url(field_name: str, value: object) -> str:
    allowed = "an http:// or https:// URL with a host, such as 'http://127.0.0.1:8000'"
    url = check.text(field_name, value, allowed=allowed)
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        raise ScenarioError(field_name, value, allowed) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or " " in url:
        raise ScenarioError(field_name, value, allowed)
    return url


def host_port(field_name: str, value: object, *, loopback: bool = False) -> str:
    """A ``host:port`` address (``[::1]:port`` for IPv6); loopback only when asked."""
    split_host_port(field_name, value, loopback=loopback)
    assert isinstance(value, str)
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxySpec:
    """A fault proxy for the run: it listens on ``listen`` (loopback) and forwards to
    ``upstream``. The service under test is configured to reach its dependency through
    ``listen``; the fault timeline names the proxy by ``name``."""

    name: str
    listen: str
    upstream: str

    def __post_init__(self) -> None:
        check.name("name", self.name, example="payments")
        host_port("listen", self.listen, loopback=True)
        host_port("upstream", self.upstream)


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """A whole run: traffic classes, fault timeline and thresholds.

    ``target`` is the base URL for ``brownout load`` (None for the simulator, or when given
    on the command line); ``duration_s`` is the run's length (0 means: the end of the
    longest class schedule, which is what it holds once built); ``seed`` seeds every random
    draw (Poisson gaps, the mix, keys); ``interval_s`` is the timeline's resolution;
    ``allow_hosts`` names the non-loopback hosts the load generator may target.

    The fault timeline acts on proxies: ``proxies`` are started for the run (or, with
    ``proxy_api``, created on that running ``brownout proxy``/Toxiproxy control API);
    ``proxy_api`` alone uses the proxies that API already has. Every fault's ``target``
    must name one of ``proxies`` when they are given."""

    classes: tuple[TrafficClass, ...]
    name: str = "scenario"
    target: str | None = None
    duration_s: float = 0.0
    seed: int = 0
    interval_s: float = 1.0
    thresholds: tuple[ThresholdSpec, ...] = ()
    faults: tuple[FaultSpec, ...] = ()
    allow_hosts: tuple[str, ...] = ()
    proxies: tuple[ProxySpec, ...] = ()
    proxy_api: str | None = None

    def __post_init__(self) -> None:
        check.text("name", self.name)
        if self.target is not None:
            _url("target", self.target)
        check.integer("seed", self.seed, minimum=0, maximum=2**63 - 1)
        _set(self, "interval_s", check.duration("interval_s", self.interval_s, positive=True))
        if self.interval_s < MIN_PERIOD_S:
            raise ScenarioError("interval_s", self.interval_s, "a duration >= 1ms")
        classes = check.sequence("classes", self.classes, TrafficClass)
        if not classes:
            raise ScenarioError("classes", self.classes, "at least one traffic class")
        _set(self, "classes", classes)
        seen: set[str] = set()
        for i, cls in enumerate(classes):
            if cls.name in seen:
                raise ScenarioError(f"classes[{i}].name", cls.name, "a name no other class has")
            seen.add(cls.name)
        duration = check.duration("duration_s", self.duration_s)
        if duration == 0:
            duration = max(c.end_s for c in classes)
        _set(self, "duration_s", duration)
        for i, cls in enumerate(classes):
            for j, spike in enumerate(cls.spikes):
                if spike.at_s >= duration:
                    raise ScenarioError(
                        f"classes[{i}].spikes[{j}].at_s",
                        spike.at_s,
                        f"a time before the end of the run ({duration:g} s)",
                    )
        thresholds = check.sequence("thresholds", self.thresholds, ThresholdSpec)
        _set(self, "thresholds", thresholds)
        by_name = {c.name: c for c in classes}
        for i, spec in enumerate(thresholds):
            self._check_scope(i, spec, by_name)
        faults = check.sequence("faults", self.faults, FaultSpec)
        _set(self, "faults", faults)
        for i, fault in enumerate(faults):
            if fault.at_s >= duration:
                raise ScenarioError(
                    f"faults[{i}].at_s",
                    fault.at_s,
                    f"a time before the end of the run ({duration:g} s)",
                )
            if fault.end_s > duration * (1 + 1e-12):
                raise ScenarioError(
                    f"faults[{i}].duration_s",
                    fault.duration_s,
                    f"a duration that ends the fault by the end of the run (at most {duration - fault.at_s:g} s)",
                )
        hosts = check.strings(
            "allow_hosts",
            self.allow_hosts,
            each="a host name or address such as 'staging.internal'",
        )
        for i, host in enumerate(hosts):
            if any(c in host for c in " /\t"):
                raise ScenarioError(
                    f"allow_hosts[{i}]", host, "a host name or address such as 'staging.internal'"
                )
        _set(self, "allow_hosts", hosts)
        self._check_proxies()

    def _check_proxies(self) -> None:
        proxies = check.sequence("proxies", self.proxies, ProxySpec)
        _set(self, "proxies", proxies)
        if self.proxy_api is not None:
            _url("proxy_api", self.proxy_api)
        names: set[str] = set()
        listens: set[str] = set()
        for i, proxy in enumerate(proxies):
            if proxy.name in names:
                raise ScenarioError(f"proxies[{i}].name", proxy.name, "a name no other proxy has")
            if proxy.listen in listens:
                raise ScenarioError(
                    f"proxies[{i}].listen", proxy.listen, "an address no other proxy listens on"
                )
            names.add(proxy.name)
            listens.add(proxy.listen)
        if proxies:
            for i, fault in enumerate(self.faults):
                if fault.target not in names:
                    raise ScenarioError(
                        f"faults[{i}].target",
                        fault.target,
                        "the name of a proxy: " + ", ".join(repr(n) for n in sorted(names)),
                    )

    @staticmethod
    def _check_scope(i: int, spec: ThresholdSpec, by_name: dict[str, TrafficClass]) -> None:
        if spec.class_name is not None and spec.class_name not in by_name:
            raise ScenarioError(
                f"thresholds[{i}].class_name",
                spec.class_name,
                "the name of a class: " + ", ".join(repr(n) for n in by_name),
            )
        if spec.endpoint is not None:
            scope = (
                [by_name[spec.class_name]]
                if spec.class_name is not None
                else list(by_name.values())
            )
            names = list(dict.fromkeys(e for c in scope for e in c.endpoints))
            if spec.endpoint not in names:
                shown = ", ".join(repr(n) for n in names[:8]) + (", ..." if len(names) > 8 else "")
                raise ScenarioError(
                    f"thresholds[{i}].endpoint", spec.endpoint, f"an endpoint of the scope: {shown}"
                )

    def class_named(self, name: str) -> TrafficClass:
        """The class called ``name``."""
        for cls in self.classes:
            if cls.name == name:
                return cls
        raise ScenarioError(
            "class", name, "the name of a class: " + ", ".join(repr(c.name) for c in self.classes)
        )

    def all_thresholds(self) -> tuple[ThresholdSpec, ...]:
        """``thresholds`` followed by every class's ``slo``, scoped to that class."""
        scoped = tuple(
            ThresholdSpec(expr=e, class_name=c.name) for c in self.classes for e in c.slo
        )
        return self.thresholds + scoped

    def to_dict(self) -> dict[str, Any]:
        """The scenario as plain JSON-ready data (for results documents): tuples become
        lists, status sets sorted lists, bodies text (undecodable bytes escaped)."""
        out = _plain(self)
        assert isinstance(out, dict)
        return out


def _plain(value: object) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, frozenset):
        return sorted(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _plain(getattr(value, f.name))
            for f in fields(value)
            if not f.name.startswith("_")
        }
    return value


def quick_scenario(
    url: str,
    rate: float,
    duration_s: float,
    timeout_s: float = 2.0,
    *,
    arrival: str = "constant",
    seed: int = 0,
    allow_hosts: tuple[str, ...] = (),
) -> Scenario:
    """The one-class scenario of ``brownout load URL --rate R --duration D``: ``rate``
    requests per second to ``url`` (its path and query) for ``duration_s`` seconds, each
    with a client timeout of ``timeout_s`` and no retries."""
    _url("url", url)
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    path = path.replace("{", "{{").replace("}", "}}")
    duration = check.duration("duration_s", duration_s, positive=True)
    request = RequestSpec(path=path, name=parts.path or "/")
    cls = TrafficClass(
        name="load",
        stages=(Stage(duration_s=duration, rate=check.rate("rate", rate)),),
        arrival=arrival,
        requests=(request,),
        timeout_s=timeout_s,
    )
    return Scenario(
        name=url,
        target=f"{parts.scheme}://{parts.netloc}",
        duration_s=duration,
        seed=seed,
        classes=(cls,),
        allow_hosts=allow_hosts,
    )
