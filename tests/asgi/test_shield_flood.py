"""A simulated flood on a MockClock: people keep their budget, scrapers are stopped early.

20 people (a session cookie, irregular think times, a handful of pages) share the site with
5 scrapers sending 10x their rate (a timer, no cookies, a breadth-first crawl of distinct
pages, 30% of them missing; three with bot user agents, two posing as browsers) and a
verified-looking good crawler. Every response is fed back with ``observe``, as the
middleware does.
"""

from __future__ import annotations

import heapq
import random
import tracemalloc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from brownout.asgi import TrafficShield
from brownout.asgi._identity import _CACHE_MAX
from brownout.guard._ratelimit import MemoryStore, RateLimit
from brownout.testing import MockClock

BROWSERS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Version/17.4 Safari",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile",
]
PAGES = ["/", "/catalog", "/product/17", "/product/42", "/cart", "/search?q=lamp", "/account"]
HUMAN_MEAN_GAP_S = 2.0  # 0.5 requests/s each
SCRAPER_GAP_S = HUMAN_MEAN_GAP_S / 10  # 10x the people's rate
DURATION_S = 300.0


@dataclass
class Agent:
    ip: str
    ua: str
    cookie: bool
    next_gap: Callable[[], float]
    next_path: Callable[[], str]
    status_of: Callable[[str], int]
    kind: str
    actions: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)


def person(i: int, rng: random.Random) -> Agent:
    def path() -> str:
        return PAGES[min(int(rng.expovariate(0.6)), len(PAGES) - 1)]

    return Agent(
        ip=f"198.51.100.{i + 1}",
        ua=BROWSERS[i % len(BROWSERS)],
        cookie=True,
        next_gap=lambda: rng.expovariate(1 / HUMAN_MEAN_GAP_S),
        next_path=path,
        status_of=lambda p: 404 if rng.random() < 0.02 else 200,
        kind="human",
    )


def crawler(ip: str, ua: str, gap_s: float, rng: random.Random, kind: str) -> Agent:
    counter = iter(range(10**9))

    def path() -> str:
        return f"/product/{next(counter)}"

    return Agent(
        ip=ip,
        ua=ua,
        cookie=False,
        next_gap=lambda: gap_s * rng.uniform(0.97, 1.03),
        next_path=path,
        status_of=lambda p: 404 if hash(p) % 10 < 3 else 200,
        kind=kind,
    )


def simulate(shield: TrafficShield, clock: MockClock, agents: list[Agent]) -> None:
    heap = [(agent.next_gap(), i) for i, agent in enumerate(agents)]
    heapq.heapify(heap)
    while heap:
        at, i = heapq.heappop(heap)
        if at > DURATION_S:
            continue
        clock.jump_to(at)
        agent = agents[i]
        path = agent.next_path()
        headers = [(b"host", b"shop.example"), (b"user-agent", agent.ua.encode())]
        if agent.cookie:
            headers.append((b"cookie", b"sid=" + agent.ip.encode()))
        scope: dict[str, Any] = {
            "type": "http",
            "method": "GET",
            "path": path,
            "client": (agent.ip, 40000 + i),
            "headers": headers,
        }
        decision = shield.decide(scope)
        agent.actions.append(decision.action)
        agent.classes.append(decision.traffic_class)
        if decision.action == "allow":
            shield.observe(decision.client_id, path, agent.status_of(path))
        elif decision.action == "limit":
            shield.observe(decision.client_id, path, 429)
        heapq.heappush(heap, (at + agent.next_gap(), i))


def make_shield(clock: MockClock, **kw: Any) -> TrafficShield:
    return TrafficShield(
        clock=clock,
        per_client=RateLimit(rate=5, burst=20, clock=clock, name="client"),
        per_class={
            "human": RateLimit(rate=30, burst=60, clock=clock, name="humans"),
            "bot": RateLimit(rate=3, burst=10, clock=clock, name="bots"),
        },
        expensive_paths=["/search*"],
        **kw,
    )


def cast(rng: random.Random) -> list[Agent]:
    agents = [person(i, rng) for i in range(20)]
    for n, ua in enumerate(
        [
            "python-requests/2.31.0",
            "Scrapy/2.11.0 (+https://scrapy.org)",
            "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/123.0 Safari/537.36",
            BROWSERS[0],
            BROWSERS[2],
        ]
    ):
        agents.append(crawler(f"203.0.113.{n + 1}", ua, SCRAPER_GAP_S, rng, "scraper"))
    googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    agents.append(crawler("66.249.66.1", googlebot, 1.0, rng, "good_bot"))
    return agents


def test_people_are_served_scrapers_stopped_good_bot_never_blocked() -> None:
    clock = MockClock()
    shield = make_shield(clock)
    agents = cast(random.Random(7))
    simulate(shield, clock, agents)

    humans = [a for a in agents if a.kind == "human"]
    for a in humans:
        assert len(a.actions) > 100
        allowed = a.actions.count("allow") / len(a.actions)
        assert allowed >= 0.99, (a.ip, Counter(a.actions))
        assert set(a.classes) == {"human"}

    for a in (a for a in agents if a.kind == "scraper"):
        assert len(a.actions) > 1400
        first_refused = next(i for i, act in enumerate(a.actions) if act != "allow")
        assert first_refused <= 20, (a.ua, first_refused)
        # Once caught, never let through again: every request after its 30th is refused.
        assert all(act in ("limit", "block") for act in a.actions[30:]), (a.ua, Counter(a.actions))
        assert a.actions[-1] == "block" or a.ua in BROWSERS, a.ua
        assert a.actions.count("allow") <= 20
        assert a.classes[-1] == "bot"

    good = next(a for a in agents if a.kind == "good_bot")
    assert "block" not in good.actions
    assert "challenge" not in good.actions
    assert good.actions.count("allow") / len(good.actions) >= 0.99
    assert set(good.classes) == {"bot"}


def test_with_a_challenge_callback_suspects_are_challenged_instead_of_limited() -> None:
    clock = MockClock()
    shield = make_shield(clock, challenge=lambda scope, decision: (401, {}, b"prove it"))
    agents = cast(random.Random(11))
    simulate(shield, clock, agents)
    for a in (a for a in agents if a.kind == "scraper"):
        assert a.actions.count("allow") <= 20
        assert Counter(a.actions[30:]).keys() <= {"challenge", "block"}
        assert "challenge" in a.actions
    for a in (a for a in agents if a.kind == "human"):
        assert a.actions.count("allow") / len(a.actions) >= 0.99


def honest_bot_flood(shield: TrafficShield, clock: MockClock, rng: random.Random) -> list[Agent]:
    """50 declared bots (curl), each 2 requests/s but irregular, with cookies, few paths:
    nothing in their behaviour gets them limited by score; only their class budget."""
    agents = [person(i, rng) for i in range(20)]
    for n in range(50):
        bot = person(100 + n, rng)
        bot.ip = f"192.0.2.{n + 1}"
        bot.ua = "curl/8.5.0"
        bot.kind = "bot"
        bot.next_gap = lambda: rng.expovariate(2.0)
        agents.append(bot)
    simulate(shield, clock, agents)
    return agents


def test_a_bot_flood_exhausts_only_the_bot_class_budget() -> None:
    clock = MockClock()
    shield = make_shield(clock)
    agents = honest_bot_flood(shield, clock, random.Random(3))
    humans = [a for a in agents if a.kind == "human"]
    bots = [a for a in agents if a.kind == "bot"]
    for a in humans:
        assert a.actions.count("allow") / len(a.actions) >= 0.99
    bot_actions = Counter(act for a in bots for act in a.actions)
    assert bot_actions.keys() <= {"allow", "limit"}  # limited by budget, never blocked
    # The bot class admitted about its budget: burst + rate x time.
    assert bot_actions["allow"] <= 10 + 3 * DURATION_S + 1
    assert bot_actions["allow"] >= 3 * DURATION_S * 0.9
    assert bot_actions["limit"] > 20_000


def test_without_telling_bots_apart_the_same_flood_starves_people() -> None:
    # Control: the same flood with no declared-bot patterns lands in the human class and
    # takes the people's budget. This is what the previous test guards against.
    clock = MockClock()
    shield = make_shield(clock, bot_user_agents=())
    agents = honest_bot_flood(shield, clock, random.Random(3))
    humans = [a for a in agents if a.kind == "human"]
    served = sum(a.actions.count("allow") for a in humans) / sum(len(a.actions) for a in humans)
    assert served < 0.5


def test_memory_stays_bounded_with_100k_distinct_clients() -> None:
    clock = MockClock()
    per_client = RateLimit(rate=5, burst=20, clock=clock, store=MemoryStore(max_keys=5_000))
    shield = TrafficShield(clock=clock, per_client=per_client, max_clients=5_000)
    headers = [(b"user-agent", BROWSERS[0].encode()), (b"cookie", b"a=1")]

    def flood(start: int, stop: int) -> None:
        for i in range(start, stop):
            scope = {
                "type": "http",
                "path": f"/p/{i % 50}",
                "client": (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 1),
                "headers": headers,
            }
            d = shield.decide(scope)
            shield.observe(d.client_id, scope["path"], 200)
            clock.advance(0.0001)

    flood(0, 80_000)  # far past every bound already
    # Trace what the last 20k clients leave alive: with bounded state, the blocks of the
    # clients seen from 80k to 90k are all freed again by 100k (evicted), so live memory
    # stays level; unbounded state would double it.
    tracemalloc.start()
    try:
        flood(80_000, 90_000)
        at_90k = tracemalloc.get_traced_memory()[0]
        flood(90_000, 100_000)
        at_100k = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(shield) == 5_000
    assert len(per_client.store) <= 5_000  # type: ignore[arg-type]
    assert len(shield.identifier._cache) <= _CACHE_MAX
    assert at_100k < 1.15 * at_90k, (at_90k, at_100k)
    # About 520 bytes per remembered client (shield record, rate-limit key, caches); an
    # unbounded shield holds ~2.8 kB per client at this point.
    assert at_100k / 5_000 < 1_000, "bytes per remembered client"
