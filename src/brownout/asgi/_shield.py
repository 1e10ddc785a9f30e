"""TrafficShield: who is asking, are they a person, and may they go on.

For each request the shield (sans-IO: it reads an ASGI ``scope`` and a clock, nothing else)

1. identifies the client (:class:`~brownout.asgi.ClientIdentifier`: the peer address,
   forwarding headers only from trusted proxies, or a digest of an API key header);
2. updates that client's behaviour record and scores it: a bot score in ``[0, 1]`` with
   the reasons behind it;
3. picks a traffic class, ``"human"`` or ``"bot"``, and an action:

   - ``"block"`` when ``score >= block_score``;
   - ``"challenge"`` when ``score >= limit_score`` and a ``challenge`` callback is set (the
     middleware sends what ``challenge(scope, decision)`` returns), ``"limit"`` without one;
   - otherwise the rate limits decide: ``per_client`` (keyed by the client id), then
     ``per_class[traffic_class]`` (keyed by the class name); a refusal is ``"limit"`` with
     the limit's ``retry_after_s``;
   - else ``"allow"``.

   A request blocked or refused by its score consumes no rate-limit budget. A client on the
   good-bot allow-list is never blocked nor challenged (its class is ``"bot"`` and the rate
   limits still apply), and neither is a client :meth:`TrafficShield.mark_human` vouched
   for (class ``"human"``), for as long as that lasts.

People keep their budget: give ``per_class`` a ``"human"`` and a ``"bot"`` limit and a bot
flood exhausts only the bot class budget, while scrapers that hide behind browser user
agents are scored into the bot class, then limited and blocked, within a few dozen requests.

Scoring (weights and thresholds in :class:`BotScoring`)
-------------------------------------------------------
Each signal ``i`` gives a strength ``s_i`` in ``[0, 1]`` and contributes ``c_i = w_i * s_i``;
contributions combine as independent evidence (a noisy OR)::

    score = 1 - prod_i (1 - c_i)

so one signal alone never scores above its weight, and several weak ones add up. ``ramp(x,
lo, hi)`` is 0 at ``lo``, 1 at ``hi``, linear between. Defaults:

=================  ======  ======================================================  ==========
code               weight  strength                                                evidence
=================  ======  ======================================================  ==========
declared_bot       0.50    1 when the User-Agent names a bot, a crawler or an      1 request
                           HTTP library (:data:`BOT_USER_AGENTS`)
no_user_agent      0.50    1 when there is no User-Agent                           1 request
fake_good_bot      0.80    1 when ``verify_bot`` said a good-bot UA is a fake      1 request
high_rate          0.40    ramp(rate, 2/s, 10/s), rate = 1 / mean gap              10 gaps
regular_timing     0.50    ramp(-CV, -0.5, -0.15): CV of inter-arrival gaps, 0.5   10 gaps
                           (people) -> 0, 0.15 or less (a timer) -> 1
no_session         0.35    ramp(share of requests without cookie, credentials or   10 requests
                           API key, 0.5, 0.95)
path_breadth       0.50    ramp(distinct paths / requests, 0.5, 0.9)               20 requests
error_ratio        0.40    ramp(4xx responses / responses, 0.1, 0.5); a 429 is     10 responses
                           not counted (it is the shield's own refusal)
expensive_paths    0.30    ramp(share of requests on ``expensive_paths``, 0.3,     10 requests
                           0.8)
=================  ======  ======================================================  ==========

With ``limit_score = 0.6``, ``block_score = 0.9`` and ``bot_score = 0.5``: a declared bot is
in the bot class from its first request and is limited only by its behaviour; a timer-driven
client without cookies (0.675) is limited or challenged after 10 requests; add a crawl's
breadth (0.84), then a bot user agent (0.92) or many 404s (0.90), and it is blocked. A person
with a cookie, irregular think times and a handful of pages scores 0; without cookies, and
with many errors, still under 0.6.

Bounded state, O(1) per request
-------------------------------
One small record per client in an LRU map of at most ``max_clients`` (the least recently
seen client is forgotten first). Counts live in two windows of ``window_s`` seconds, the
current and the previous one, and every signal reads their sum (so evidence older than two
windows is gone); the gap statistics are exponentially weighted (``ewma_alpha``) and restart
after ``idle_reset_s`` of silence. Distinct paths are counted approximately with a 128-bit
linear-counting sketch per window (``D = -m ln(zeros / m)``, ``m = 128``; breadth compares
``D`` with ``min(requests, 2 m)``, past which the sketch saturates). User agents are
classified once and memoized (bounded). A lock makes each update atomic across threads.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import re
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .. import _validate as v
from .._clock import Clock, monotonic_clock
from ..errors import InvalidConfig
from ..events import Event, Events
from ..guard._ratelimit import RateLimit
from ._identity import Client, ClientIdentifier

__all__ = [
    "BOT_USER_AGENTS",
    "GOOD_BOT_USER_AGENTS",
    "BotScoring",
    "ClientActionChanged",
    "Reason",
    "ShieldDecision",
    "TrafficShield",
]

_log = logging.getLogger("brownout.asgi")

#: Substrings (case-insensitive) of user agents that declare a bot, a crawler, a scraper or
#: an HTTP library. A match alone puts the client in the ``"bot"`` class (weight 0.5).
BOT_USER_AGENTS: tuple[str, ...] = (
    "bot/",
    "bot;",
    "bot)",
    "bot-",
    "+http",
    "crawl",
    "spider",
    "scrape",
    "slurp",
    "python-requests",
    "python-urllib",
    "python-httpx",
    "aiohttp",
    "httpx/",
    "curl/",
    "wget",
    "go-http-client",
    "okhttp",
    "java/",
    "apache-httpclient",
    "libwww-perl",
    "lwp-",
    "scrapy",
    "headlesschrome",
    "phantomjs",
    "puppeteer",
    "playwright",
    "selenium",
    "node-fetch",
    "axios/",
    "undici",
    "got (",
    "ruby",
    "guzzlehttp",
    "http.rb",
    "colly",
    "mechanize",
    "nutch",
    "httrack",
    "zgrab",
    "masscan",
    "nikto",
    "sqlmap",
    "nmap",
    "postmanruntime",
    "insomnia",
)

#: Substrings (case-insensitive) of the user agents of well-behaved crawlers: search
#: engines and link previews. A user agent is trivially forged: pass ``verify_bot`` (a
#: reverse-then-forward DNS check, say) to believe them only when verified.
GOOD_BOT_USER_AGENTS: tuple[str, ...] = (
    "googlebot",
    "adsbot-google",
    "mediapartners-google",
    "google-inspectiontool",
    "bingbot",
    "duckduckbot",
    "applebot",
    "yandexbot",
    "baiduspider",
    "slurp",
    "facebookexternalhit",
    "twitterbot",
    "linkedinbot",
)

ALLOW = "allow"
LIMIT = "limit"
CHALLENGE = "challenge"
BLOCK = "block"
HUMAN = "human"
BOT = "bot"

# What a user agent declares.
_UA_BROWSER = 0  # nothing: a browser or unknown software
_UA_BOT = 1  # a bot, a crawler or an HTTP library
_UA_GOOD = 2  # on the good-bot allow-list
_UA_NONE = 3  # no User-Agent at all
_UA_FAKE = 4  # on the allow-list, but verify_bot said it is not who it claims to be

_UA_CACHE_MAX = 2048
_SKETCH_BITS = 128
_SKETCH_MASK = _SKETCH_BITS - 1
_LEVELS = {ALLOW: 0, LIMIT: 1, CHALLENGE: 1, BLOCK: 2}


@dataclass(frozen=True, slots=True)
class Reason:
    """One piece of evidence behind a score.

    ``code`` is short and stable (``"regular_timing"``), ``detail`` says what was seen
    (``"cv=0.03 over 24 gaps"``), ``weight`` is the signal's contribution ``c_i`` to the
    score (0 for reasons that explain an action rather than a score, such as
    ``"client_limit"``).
    """

    code: str
    detail: str
    weight: float


# Evidence as the hot path records it: (code, weight, a, b), turned into a Reason (with its
# detail text) only when someone reads ShieldDecision.reasons. Formatting the details of
# three or four signals on every request cost more than the scoring itself.
_Evidence = tuple[str, float, Any, Any]
_DETAILS: dict[str, Callable[[Any, Any], str]] = {
    "declared_bot": lambda a, b: f"user agent matches {a!r}",
    "no_user_agent": lambda a, b: "no User-Agent header",
    "fake_good_bot": lambda a, b: f"claims {a!r}; not verified",
    "high_rate": lambda a, b: f"{a:.3g} requests/s",
    "regular_timing": lambda a, b: f"cv={a:.3f} over {b} gaps",
    "no_session": lambda a, b: f"{a:.0%} of {b} requests without session",
    "expensive_paths": lambda a, b: f"{a:.0%} of {b} requests on expensive paths",
    "path_breadth": lambda a, b: f"~{a:.0f} distinct paths in {b} requests",
    "error_ratio": lambda a, b: f"{a:.0%} of {b} responses were 4xx",
    "good_bot": lambda a, b: f"{a!r} ({b})",
    "marked_human": lambda a, b: "vouched for by mark_human()",
    "client_limit": lambda a, b: f"{a!r} refused {b!r}",
    "class_limit": lambda a, b: f"{a!r} refused {b!r}",
}


def _evidence_weight(item: _Evidence) -> float:
    return -item[1]


def _explain(evidence: list[_Evidence]) -> tuple[Reason, ...]:
    """Reasons from evidence, strongest first (a stable sort: reasons of weight 0, which
    explain an action rather than the score, keep their order at the end)."""
    ordered = sorted(evidence, key=_evidence_weight)
    return tuple(Reason(code, _DETAILS[code](a, b), c) for code, c, a, b in ordered)


class ShieldDecision:
    """What the shield decided for one request (a read-only record).

    ``action``: ``"allow"``, ``"limit"`` (answer 429 with ``Retry-After``),
    ``"challenge"`` (answer what the shield's ``challenge`` callback returns) or
    ``"block"`` (403). ``client_id``: the client's identity (the key of its limits and the
    argument of :meth:`TrafficShield.observe`). ``traffic_class``: ``"human"`` or
    ``"bot"``. ``score``: the bot score in ``[0, 1]``. ``reasons``: the evidence, strongest
    first (worded when first read, from numbers captured at decision time).
    ``retry_after_s``: when refused, seconds before trying again makes sense. ``client``:
    the identified :class:`~brownout.asgi.Client`.
    """

    __slots__ = (
        "_evidence",
        "_reasons",
        "action",
        "client",
        "client_id",
        "retry_after_s",
        "score",
        "traffic_class",
    )

    def __init__(
        self,
        action: str,
        client_id: str,
        traffic_class: str,
        score: float,
        *,
        reasons: Sequence[Reason] = (),
        retry_after_s: float = 0.0,
        client: Client | None = None,
    ) -> None:
        self.action = action
        self.client_id = client_id
        self.traffic_class = traffic_class
        self.score = score
        self._reasons: tuple[Reason, ...] | None = tuple(reasons)
        self._evidence: list[_Evidence] | None = None
        self.retry_after_s = retry_after_s
        self.client = (
            client if client is not None else Client(client_id, None, None, "", False, False, False)
        )

    @classmethod
    def _of(  # noqa: PLR0917 (positional: built on every request)
        cls,
        action: str,
        client: Client,
        traffic_class: str,
        score: float,
        evidence: list[_Evidence] | None,
        retry_after_s: float,
    ) -> ShieldDecision:
        d = cls.__new__(cls)
        d.action = action
        d.client_id = client.id
        d.traffic_class = traffic_class
        d.score = score
        d._reasons = None if evidence else ()
        d._evidence = evidence
        d.retry_after_s = retry_after_s
        d.client = client
        return d

    @property
    def reasons(self) -> tuple[Reason, ...]:
        reasons = self._reasons
        if reasons is None:
            reasons = self._reasons = _explain(self._evidence or [])
        return reasons

    @property
    def allowed(self) -> bool:
        return self.action == ALLOW

    def _fields(self) -> tuple[object, ...]:
        return (
            self.action,
            self.client_id,
            self.traffic_class,
            self.score,
            self.reasons,
            self.retry_after_s,
            self.client,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ShieldDecision):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (
            f"ShieldDecision(action={self.action!r}, client_id={self.client_id!r}, "
            f"traffic_class={self.traffic_class!r}, score={self.score!r}, "
            f"reasons={self.reasons!r}, retry_after_s={self.retry_after_s!r}, "
            f"client={self.client!r})"
        )


@dataclass(frozen=True, slots=True)
class ClientActionChanged(Event):
    """A client's score moved it to another action: ``old`` -> ``new``, among ``"allow"``,
    ``"limit"`` / ``"challenge"`` (same level) and ``"block"``. Emitted on the change only,
    not for every request; rate-limit refusals are not score actions and emit nothing here.
    ``reasons`` are the codes behind ``score``."""

    client_id: str
    old: str
    new: str
    score: float
    reasons: tuple[str, ...]


def _ramp(x: float, lo: float, hi: float) -> float:
    if x <= lo:
        return 0.0
    if x >= hi:
        return 1.0
    return (x - lo) / (hi - lo)


@dataclass(frozen=True, slots=True, kw_only=True)
class BotScoring:
    """Weights, thresholds and windows of the bot score (see the module docstring).

    Weights are in ``[0, 1]``; each ``*_low`` / ``*_high`` pair bounds a ramp (for
    ``regular_cv_*`` the strength is 1 at or below ``regular_cv_low`` and 0 at or above
    ``regular_cv_high``). ``min_gaps``, ``min_requests``, ``breadth_min_requests`` and
    ``min_responses`` are the evidence a signal needs before it counts. ``window_s`` is the
    length of a counting window (two are kept), ``idle_reset_s`` the silence after which gap
    statistics restart, ``ewma_alpha`` the weight of the newest gap.
    """

    window_s: float = 60.0
    idle_reset_s: float = 300.0
    ewma_alpha: float = 0.1
    declared_bot: float = 0.5
    no_user_agent: float = 0.5
    fake_good_bot: float = 0.8
    rate: float = 0.4
    rate_low_rps: float = 2.0
    rate_high_rps: float = 10.0
    regular: float = 0.5
    regular_cv_high: float = 0.5
    regular_cv_low: float = 0.15
    min_gaps: int = 10
    no_session: float = 0.35
    no_session_low: float = 0.5
    no_session_high: float = 0.95
    min_requests: int = 10
    breadth: float = 0.5
    breadth_low: float = 0.5
    breadth_high: float = 0.9
    breadth_min_requests: int = 20
    errors: float = 0.4
    errors_low: float = 0.1
    errors_high: float = 0.5
    min_responses: int = 10
    expensive: float = 0.3
    expensive_low: float = 0.3
    expensive_high: float = 0.8

    def __post_init__(self) -> None:
        owner = "BotScoring"
        v.positive(owner, "window_s", self.window_s)
        v.positive(owner, "idle_reset_s", self.idle_reset_s)
        if not v.ratio(owner, "ewma_alpha", self.ewma_alpha) > 0:
            raise InvalidConfig(owner, "ewma_alpha", self.ewma_alpha, "a number in (0, 1]")
        for name in (
            "declared_bot",
            "no_user_agent",
            "fake_good_bot",
            "rate",
            "regular",
            "no_session",
            "breadth",
            "errors",
            "expensive",
        ):
            v.ratio(owner, name, getattr(self, name))
        for name in ("min_gaps", "min_requests", "breadth_min_requests", "min_responses"):
            v.int_at_least(owner, name, getattr(self, name), 1)
        for lo, hi, ratios in (
            ("rate_low_rps", "rate_high_rps", False),
            ("regular_cv_low", "regular_cv_high", False),
            ("no_session_low", "no_session_high", True),
            ("breadth_low", "breadth_high", True),
            ("errors_low", "errors_high", True),
            ("expensive_low", "expensive_high", True),
        ):
            check = v.ratio if ratios else v.non_negative
            low = check(owner, lo, getattr(self, lo))
            if not check(owner, hi, getattr(self, hi)) > low:
                raise InvalidConfig(owner, hi, getattr(self, hi), f"a number > {lo} ({low:g})")


class _ClientState:
    """What the shield remembers of one client. Counts are (current, previous) windows."""

    __slots__ = (
        "errors",
        "errors_prev",
        "expensive",
        "expensive_prev",
        "gap_mean",
        "gap_var",
        "gaps",
        "human_until",
        "last_at",
        "level",
        "no_session",
        "no_session_prev",
        "paths",
        "paths_prev",
        "requests",
        "requests_prev",
        "responses",
        "responses_prev",
        "verified",
        "window_at",
    )

    def __init__(self, now: float) -> None:
        self.window_at = now
        self.last_at = now
        self.gaps = 0
        self.gap_mean = 0.0
        self.gap_var = 0.0
        self.requests = self.requests_prev = 0
        self.no_session = self.no_session_prev = 0
        self.expensive = self.expensive_prev = 0
        self.responses = self.responses_prev = 0
        self.errors = self.errors_prev = 0
        self.paths = self.paths_prev = 0  # linear-counting sketches (128-bit ints)
        self.verified: bool | None = None  # verify_bot's answer, once it gave one
        self.human_until = -math.inf
        self.level = ALLOW

    def roll(self, now: float, window_s: float) -> None:
        """Move to the window holding ``now``: the current one becomes the previous one,
        or both are emptied when more than one window went by."""
        elapsed = now - self.window_at
        if elapsed < window_s:
            return
        if elapsed < 2 * window_s:
            self.requests_prev, self.requests = self.requests, 0
            self.no_session_prev, self.no_session = self.no_session, 0
            self.expensive_prev, self.expensive = self.expensive, 0
            self.responses_prev, self.responses = self.responses, 0
            self.errors_prev, self.errors = self.errors, 0
            self.paths_prev, self.paths = self.paths, 0
        else:
            self.requests = self.requests_prev = 0
            self.no_session = self.no_session_prev = 0
            self.expensive = self.expensive_prev = 0
            self.responses = self.responses_prev = 0
            self.errors = self.errors_prev = 0
            self.paths = self.paths_prev = 0
        self.window_at = now


def _patterns(owner: str, name: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidConfig(owner, name, value, "a sequence of strings")
    for item in value:
        if not isinstance(item, str) or not item:
            raise InvalidConfig(owner, name, value, "a sequence of non-empty strings")
    return tuple(value)


def _substring_regex(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(re.escape(p.lower()) for p in patterns))


_decision = ShieldDecision._of


class TrafficShield:
    """Identify clients, score how bot-like they behave, and allow, limit, challenge or
    block each request (the module docstring has the rules and the scoring table).

    Identity: ``trusted_proxies``, ``forwarded_header``, ``client_header`` and
    ``ipv6_prefix`` configure a :class:`~brownout.asgi.ClientIdentifier`.

    Limits: ``per_client`` (a :class:`~brownout.guard.RateLimit` keyed by client id) and
    ``per_class`` (``{"human": RateLimit(...), "bot": RateLimit(...)}``, each keyed by the
    class name). Give the limits the shield's clock.

    Score: ``limit_score`` (0.6) and ``block_score`` (0.9) pick the action; ``bot_score``
    (0.5) the class (a declared or allow-listed bot is in the bot class whatever its score);
    ``0 <= bot_score <= limit_score <= block_score <= 1``. ``scoring`` holds the weights.
    ``bot_user_agents`` and ``allow_bots`` are case-insensitive substrings of user agents:
    declared bots and good bots. ``verify_bot(client)`` is asked once per client whose user
    agent is on the allow-list: ``True`` (verified), ``False`` (a fake: scored as
    ``fake_good_bot``) or ``None`` (not known yet: asked again next time, treated as a
    declared bot meanwhile). It must be quick (do DNS elsewhere and cache it).
    ``expensive_paths``: globs (``fnmatch``, ``*`` crosses ``/``) of costly endpoints.

    ``challenge(scope, decision)``: called by the middleware for ``"challenge"``; without
    it a challenge degrades to ``"limit"``. Its answer should eventually lead the app to
    call :meth:`mark_human` for clients that pass.

    ``max_clients`` bounds the clients remembered. ``clock`` is read once per decision.
    ``events`` receives :class:`ClientActionChanged`.
    """

    def __init__(
        self,
        *,
        trusted_proxies: Sequence[str] = (),
        forwarded_header: str = "x-forwarded-for",
        client_header: str | None = None,
        ipv6_prefix: int = 64,
        per_client: RateLimit | None = None,
        per_class: Mapping[str, RateLimit] | None = None,
        block_score: float = 0.9,
        limit_score: float = 0.6,
        bot_score: float = 0.5,
        challenge: Callable[[Mapping[str, Any], ShieldDecision], Any] | None = None,
        allow_bots: Sequence[str] = GOOD_BOT_USER_AGENTS,
        verify_bot: Callable[[Client], bool | None] | None = None,
        bot_user_agents: Sequence[str] = BOT_USER_AGENTS,
        expensive_paths: Sequence[str] = (),
        scoring: BotScoring | None = None,
        max_clients: int = 50_000,
        name: str = "shield",
        clock: Clock = monotonic_clock,
        events: Events | None = None,
    ) -> None:
        owner = "TrafficShield"
        self.identifier = ClientIdentifier(
            trusted_proxies=trusted_proxies,
            forwarded_header=forwarded_header,
            client_header=client_header,
            ipv6_prefix=ipv6_prefix,
            owner=owner,
        )
        if per_client is not None and not isinstance(per_client, RateLimit):
            raise InvalidConfig(owner, "per_client", per_client, "a RateLimit or None")
        classes: dict[str, RateLimit] = {}
        if per_class is not None:
            if not isinstance(per_class, Mapping):
                raise InvalidConfig(
                    owner, "per_class", per_class, "a mapping of class to RateLimit"
                )
            for cls, limit in per_class.items():
                if cls not in (HUMAN, BOT) or not isinstance(limit, RateLimit):
                    raise InvalidConfig(
                        owner,
                        "per_class",
                        per_class,
                        "a mapping with keys 'human' and/or 'bot' and RateLimit values",
                    )
                classes[cls] = limit
        bot = v.ratio(owner, "bot_score", bot_score)
        lim = v.ratio(owner, "limit_score", limit_score)
        blk = v.ratio(owner, "block_score", block_score)
        if lim < bot:
            raise InvalidConfig(owner, "limit_score", limit_score, f">= bot_score ({bot:g})")
        if blk < lim:
            raise InvalidConfig(owner, "block_score", block_score, f">= limit_score ({lim:g})")
        v.callable_or_none(owner, "challenge", challenge)
        v.callable_or_none(owner, "verify_bot", verify_bot)
        if scoring is None:
            scoring = BotScoring()
        elif not isinstance(scoring, BotScoring):
            raise InvalidConfig(owner, "scoring", scoring, "a BotScoring or None")
        if not isinstance(name, str) or not name:
            raise InvalidConfig(owner, "name", name, "a non-empty string")
        self.per_client = per_client
        self.per_class: Mapping[str, RateLimit] = MappingProxyType(classes)
        self.block_score = blk
        self.limit_score = lim
        self.bot_score = bot
        self.challenge = challenge
        self.verify_bot = verify_bot
        self.allow_bots = _patterns(owner, "allow_bots", allow_bots)
        self.bot_user_agents = _patterns(owner, "bot_user_agents", bot_user_agents)
        self.expensive_paths = _patterns(owner, "expensive_paths", expensive_paths)
        self.scoring = scoring
        self.max_clients = v.int_at_least(owner, "max_clients", max_clients, 1)
        self.name = name
        self.clock = clock
        self.events = Events() if events is None else events
        self._good_re = _substring_regex(self.allow_bots)
        self._bot_re = _substring_regex(self.bot_user_agents)
        self._expensive_re = (
            re.compile("|".join(fnmatch.translate(p) for p in self.expensive_paths))
            if self.expensive_paths
            else None
        )
        self._ua_cache: dict[str, tuple[int, str]] = {}
        self._clients: OrderedDict[str, _ClientState] = OrderedDict()
        self._lock = threading.Lock()
        self._human_limit = classes.get(HUMAN)
        self._bot_limit = classes.get(BOT)

    # -- what it reads -----------------------------------------------------------------

    @property
    def trusted_proxies(self) -> tuple[str, ...]:
        """The trusted proxy networks, normalized (``"10.0.0.0/8"``)."""
        return self.identifier.trusted_proxies

    def identify(self, scope: Mapping[str, Any]) -> Client:
        """Who sent the request (see :class:`~brownout.asgi.ClientIdentifier`)."""
        return self.identifier.identify(scope)

    def __len__(self) -> int:
        """How many clients are remembered."""
        return len(self._clients)

    # -- user agents -------------------------------------------------------------------

    def _classify(self, user_agent: str) -> tuple[int, str]:
        """What ``user_agent`` declares, and the pattern that matched; memoized."""
        cache = self._ua_cache
        hit = cache.get(user_agent)
        if hit is not None:
            return hit
        if not user_agent.strip():
            result = (_UA_NONE, "")
        else:
            lowered = user_agent.lower()
            good = self._good_re.search(lowered) if self._good_re is not None else None
            if good is not None:
                result = (_UA_GOOD, good.group())
            else:
                bot = self._bot_re.search(lowered) if self._bot_re is not None else None
                result = (_UA_BROWSER, "") if bot is None else (_UA_BOT, bot.group())
        if len(cache) >= _UA_CACHE_MAX:
            cache.clear()
        cache[user_agent] = result
        return result

    # -- scoring -----------------------------------------------------------------------

    def _record(self, client: Client, path: str, now: float) -> _ClientState:
        """Count this request in the client's record (created when new). Under the lock."""
        clients = self._clients
        st = clients.get(client.id)
        if st is None:
            st = _ClientState(now)
            clients[client.id] = st
            if len(clients) > self.max_clients:
                clients.popitem(last=False)
        else:
            clients.move_to_end(client.id)
            sc = self.scoring
            st.roll(now, sc.window_s)
            gap = now - st.last_at
            if gap > sc.idle_reset_s:
                st.gaps = 0
            elif st.gaps == 0:
                st.gaps = 1
                st.gap_mean = gap
                st.gap_var = 0.0
            else:
                # Exponentially weighted mean and variance (West's incremental form).
                diff = gap - st.gap_mean
                incr = sc.ewma_alpha * diff
                st.gap_mean += incr
                st.gap_var = (1.0 - sc.ewma_alpha) * (st.gap_var + diff * incr)
                st.gaps += 1
        st.last_at = now
        st.requests += 1
        if not (client.has_cookie or client.has_auth or client.key is not None):
            st.no_session += 1
        if self._expensive_re is not None and self._expensive_re.match(path) is not None:
            st.expensive += 1
        st.paths |= 1 << (zlib.crc32(path.encode("utf-8", "surrogateescape")) & _SKETCH_MASK)
        return st

    def _score(
        self, st: _ClientState, ua_kind: int, ua_match: str
    ) -> tuple[float, list[_Evidence] | None]:
        """The bot score of a client record and its evidence (None when there is none).

        The hot path: numbers only; :func:`_explain` words the evidence when it is read."""
        sc = self.scoring
        keep = 1.0  # prod (1 - c_i)
        evidence: list[_Evidence] = []

        if ua_kind not in (_UA_BROWSER, _UA_GOOD):
            if ua_kind == _UA_BOT:
                code, c = "declared_bot", sc.declared_bot
            elif ua_kind == _UA_NONE:
                code, c = "no_user_agent", sc.no_user_agent
            else:
                code, c = "fake_good_bot", sc.fake_good_bot
            if c > 0:
                keep = 1.0 - c
                evidence.append((code, c, ua_match, None))

        gaps = st.gaps
        if gaps >= sc.min_gaps:
            mean = st.gap_mean
            if mean > 0:
                rate = 1.0 / mean
                if rate > sc.rate_low_rps and sc.rate > 0:
                    c = sc.rate * _ramp(rate, sc.rate_low_rps, sc.rate_high_rps)
                    keep *= 1.0 - c
                    evidence.append(("high_rate", c, rate, None))
                high = sc.regular_cv_high * mean
                if st.gap_var < high * high and sc.regular > 0:  # cv < regular_cv_high
                    cv = math.sqrt(st.gap_var) / mean
                    c = sc.regular * _ramp(-cv, -sc.regular_cv_high, -sc.regular_cv_low)
                    keep *= 1.0 - c
                    evidence.append(("regular_timing", c, cv, gaps))
            elif sc.rate > 0:  # every gap was 0: an unbounded rate (no cv to speak of)
                c = sc.rate
                keep *= 1.0 - c
                evidence.append(("high_rate", c, math.inf, None))

        requests = st.requests + st.requests_prev
        if requests >= sc.min_requests:
            share = (st.no_session + st.no_session_prev) / requests
            if share > sc.no_session_low and sc.no_session > 0:
                c = sc.no_session * _ramp(share, sc.no_session_low, sc.no_session_high)
                keep *= 1.0 - c
                evidence.append(("no_session", c, share, requests))
            if self._expensive_re is not None:
                share = (st.expensive + st.expensive_prev) / requests
                if share > sc.expensive_low and sc.expensive > 0:
                    c = sc.expensive * _ramp(share, sc.expensive_low, sc.expensive_high)
                    keep *= 1.0 - c
                    evidence.append(("expensive_paths", c, share, requests))
            if requests >= sc.breadth_min_requests:
                zeros = _SKETCH_BITS - (st.paths | st.paths_prev).bit_count()
                distinct = _SKETCH_BITS * math.log(_SKETCH_BITS / zeros if zeros else _SKETCH_BITS)
                breadth = distinct / (requests if requests < 2 * _SKETCH_BITS else 2 * _SKETCH_BITS)
                if breadth > sc.breadth_low and sc.breadth > 0:
                    c = sc.breadth * _ramp(breadth, sc.breadth_low, sc.breadth_high)
                    keep *= 1.0 - c
                    evidence.append(("path_breadth", c, distinct, requests))

        responses = st.responses + st.responses_prev
        if responses >= sc.min_responses:
            share = (st.errors + st.errors_prev) / responses
            if share > sc.errors_low and sc.errors > 0:
                c = sc.errors * _ramp(share, sc.errors_low, sc.errors_high)
                keep *= 1.0 - c
                evidence.append(("error_ratio", c, share, responses))

        if not evidence:
            return 0.0, None
        score = 1.0 - keep
        return (0.0 if score < 0.0 else 1.0 if score > 1.0 else score), evidence

    # -- deciding ----------------------------------------------------------------------

    def _assess(
        self, scope: Mapping[str, Any], now: float
    ) -> tuple[Client, str, float, list[_Evidence] | None, str | None]:
        """Identify, record and score: the client, its class, score and evidence, and any
        action the score forces (``"block"``, ``"challenge"`` or ``"limit"``; None leaves
        it to the rate limits)."""
        client = self.identifier.identify(scope)
        ua_kind, ua_match = self._classify(client.user_agent)
        path = scope.get("path") or "/"
        event: ClientActionChanged | None = None
        with self._lock:
            st = self._record(client, path, now)
            if ua_kind == _UA_GOOD and self.verify_bot is not None:
                if st.verified is None:
                    try:
                        st.verified = self.verify_bot(client)
                    except Exception:
                        _log.exception("%s: verify_bot failed for %s", self.name, client.id)
                if st.verified is None:
                    ua_kind = _UA_BOT  # not known yet: a declared bot meanwhile
                elif not st.verified:
                    ua_kind = _UA_FAKE
            score, evidence = self._score(st, ua_kind, ua_match)
            good = ua_kind == _UA_GOOD
            human = st.human_until > now
            action: str | None = None
            if good:
                how = "verified" if self.verify_bot is not None else "user agent only"
                evidence = evidence or []
                evidence.append(("good_bot", 0.0, ua_match, how))
            elif human:
                evidence = evidence or []
                evidence.append(("marked_human", 0.0, None, None))
            elif score >= self.block_score:
                action = BLOCK
            elif score >= self.limit_score:
                action = CHALLENGE if self.challenge is not None else LIMIT
            level = action or ALLOW
            old = st.level
            if old is not level and _LEVELS[level] != _LEVELS[old]:
                if self.events:
                    codes = tuple(e[0] for e in evidence or ())
                    event = ClientActionChanged(now, self.name, client.id, old, level, score, codes)
                st.level = level
        if event is not None:
            self.events.emit(event)
        if good:
            traffic_class = BOT
        elif human:
            traffic_class = HUMAN
        elif ua_kind in (_UA_BOT, _UA_FAKE):
            traffic_class = BOT
        else:
            traffic_class = BOT if score >= self.bot_score else HUMAN
        return client, traffic_class, score, evidence, action

    def _limits(self, client_id: str, traffic_class: str) -> list[tuple[RateLimit, str, str]]:
        """The rate limits a request goes through: (limit, key, reason code)."""
        limits: list[tuple[RateLimit, str, str]] = []
        if self.per_client is not None:
            limits.append((self.per_client, client_id, "client_limit"))
        class_limit = self._human_limit if traffic_class == HUMAN else self._bot_limit
        if class_limit is not None:
            limits.append((class_limit, traffic_class, "class_limit"))
        return limits

    def decide(self, scope: Mapping[str, Any]) -> ShieldDecision:
        """Identify, score and decide one request (an ASGI HTTP ``scope``).

        Rate limits are asked with their sync ``check``; use :meth:`adecide` in asyncio
        with a store that does I/O. A rate limit that raises is logged and skipped (fail
        open): a store failure never refuses a request nor reaches the caller.
        """
        client, traffic_class, score, evidence, action = self._assess(scope, self.clock.now())
        if action is not None:
            # Evidence lives for two windows: retrying much sooner cannot change the answer.
            return _decision(action, client, traffic_class, score, evidence, self.scoring.window_s)
        if self.per_client is not None or self._human_limit is not None or self._bot_limit:
            for limit, key, code in self._limits(client.id, traffic_class):
                try:
                    verdict = limit.check(key)
                except Exception:
                    _log.exception("%s: rate limit %r failed; allowed", self.name, limit.name)
                    continue
                if not verdict.allowed:
                    evidence = evidence or []
                    evidence.append((code, 0.0, limit.name, key))
                    return _decision(
                        LIMIT, client, traffic_class, score, evidence, verdict.retry_after_s
                    )
        return _decision(ALLOW, client, traffic_class, score, evidence, 0.0)

    async def adecide(self, scope: Mapping[str, Any]) -> ShieldDecision:
        """:meth:`decide` for asyncio: awaits the rate limits (``acheck``)."""
        client, traffic_class, score, evidence, action = self._assess(scope, self.clock.now())
        if action is not None:
            return _decision(action, client, traffic_class, score, evidence, self.scoring.window_s)
        if self.per_client is not None or self._human_limit is not None or self._bot_limit:
            for limit, key, code in self._limits(client.id, traffic_class):
                try:
                    verdict = await limit.acheck(key)
                except Exception:
                    _log.exception("%s: rate limit %r failed; allowed", self.name, limit.name)
                    continue
                if not verdict.allowed:
                    evidence = evidence or []
                    evidence.append((code, 0.0, limit.name, key))
                    return _decision(
                        LIMIT, client, traffic_class, score, evidence, verdict.retry_after_s
                    )
        return _decision(ALLOW, client, traffic_class, score, evidence, 0.0)

    # -- feedback ----------------------------------------------------------------------

    def observe(self, client_id: str, path: str, status: int) -> None:
        """Count the response to a request of ``client_id`` (from its decision): 4xx
        statuses count as errors for ``error_ratio``. A 429 is not counted at all: it is
        our refusal, not a page the client got wrong, and counting it would dilute the
        errors of a client that keeps being refused. ``path`` is the request path (the
        request itself, its path breadth and whether it was expensive, was counted by
        :meth:`decide`). A client no longer remembered is ignored."""
        if status == 429:
            return
        with self._lock:
            st = self._clients.get(client_id)
            if st is None:
                return
            st.roll(self.clock.now(), self.scoring.window_s)
            st.responses += 1
            if 400 <= status < 500:
                st.errors += 1

    def mark_human(self, client_id: str, *, for_s: float = 3600.0) -> None:
        """Vouch for ``client_id`` (it passed a challenge, or logged in): for ``for_s``
        seconds its score never limits, challenges nor blocks it and its class is
        ``"human"``; the rate limits still apply. A client not yet seen is remembered."""
        v.non_negative("TrafficShield.mark_human", "for_s", for_s)
        now = self.clock.now()
        with self._lock:
            clients = self._clients
            st = clients.get(client_id)
            if st is None:
                st = clients[client_id] = _ClientState(now)
                st.last_at = -math.inf  # no request yet: the first one measures no gap
                if len(clients) > self.max_clients:
                    clients.popitem(last=False)
            st.human_until = now + for_s

    def forget(self, client_id: str) -> None:
        """Drop everything remembered about ``client_id``."""
        with self._lock:
            self._clients.pop(client_id, None)

    def __repr__(self) -> str:
        parts = [
            f"trusted_proxies={list(self.trusted_proxies)!r}",
            f"limit_score={self.limit_score:g}",
            f"block_score={self.block_score:g}",
        ]
        if self.identifier.client_header is not None:
            parts.append(f"client_header={self.identifier.client_header!r}")
        if self.per_client is not None:
            parts.append(f"per_client={self.per_client!r}")
        if self.per_class:
            parts.append(f"per_class={dict(self.per_class)!r}")
        if self.expensive_paths:
            parts.append(f"expensive_paths={list(self.expensive_paths)!r}")
        return f"TrafficShield({', '.join(parts)}, clients={len(self._clients)})"
