"""The demo's scenario: one story, run against the naive shop and then the guarded one.

Phases, as shares of the run's length ``T`` (default 70 s, ``--quick`` 24 s), with the
people's rate scaled to the predicted knee ``K`` of the naive shop:

====================  ==========================================================
``0 .. 0.35 T``       people ramp from 0.3 K to 1.6 K: past the predicted capacity
``0.35 .. 0.5 T``     people at 0.6 K; a scraper burst from three addresses, with a
                      browser user agent and no cookies, on search, recommendations
                      and product pages (``scraper_rate``, 3 K by default)
``0.5 .. 0.6 T``      payments slows down: 1.5 s more per call (TCP latency)
``0.6 .. 0.7 T``      payments black-holes: requests go in, nothing comes back
``0.7 .. T``          recovery: payments is healthy again, people at 0.6 K
====================  ==========================================================

People come from 20,000 addresses (one per request, ``clients``), carry a session cookie
and retry once after a backoff, as a person pressing reload does; their client timeout is
2 s, so goodput is "answered, successfully, within 2 s".
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PEOPLE_REQUESTS", "DemoPlan", "demo_plan", "scenario_toml"]

BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
PEOPLE_TIMEOUT_S = 2.0
SLO_P99_MS = 1000.0  # the knee's latency bound: p99 within 1 s

#: The people's request mix (TOML), shared by the demo's runs and its profiling run.
PEOPLE_REQUESTS = """  [[classes.requests]]
  name = "list"
  path = "/products?page={page}"
  weight = 3
  keys.page = 50

  [[classes.requests]]
  name = "product"
  path = "/products/{id}"
  weight = 4
  keys.id = { kind = "zipf", n = 2000, s = 1.1 }

  [[classes.requests]]
  name = "recommendations"
  path = "/products/{id}/recommendations"
  weight = 2
  keys.id = { kind = "zipf", n = 2000, s = 1.1 }

  [[classes.requests]]
  name = "search"
  path = "/search?q={term}"
  weight = 1
  keys.term = ["kettle", "tent", "puzzle", "lamp", "gift", "quiet", "warm"]

  [[classes.requests]]
  name = "checkout"
  path = "/checkout"
  method = "POST"
  weight = 1
  json = { product_id = 17, quantity = 1 }
"""


@dataclass(frozen=True, slots=True)
class DemoPlan:
    """The phase boundaries (seconds from the start) and rates of one demo run."""

    duration_s: float
    knee_rps: float
    ramp_end_s: float
    scraper_start_s: float
    scraper_end_s: float
    slow_start_s: float
    hole_start_s: float
    fault_end_s: float
    ramp_from_rps: float
    ramp_to_rps: float
    steady_rps: float
    scraper_rps: float


def demo_plan(knee_rps: float, duration_s: float) -> DemoPlan:
    t = duration_s

    def at(share: float) -> float:
        return round(share * t, 1)

    return DemoPlan(
        duration_s=t,
        knee_rps=knee_rps,
        ramp_end_s=at(0.35),
        scraper_start_s=at(0.35),
        scraper_end_s=at(0.5),
        slow_start_s=at(0.5),
        hole_start_s=at(0.6),
        fault_end_s=at(0.7),
        ramp_from_rps=round(0.3 * knee_rps, 1),
        ramp_to_rps=round(1.6 * knee_rps, 1),
        steady_rps=round(0.6 * knee_rps, 1),
        scraper_rps=round(3.0 * knee_rps, 1),
    )


def scenario_toml(plan: DemoPlan, *, target: str, proxy_api: str, seed: int = 1) -> str:
    """The scenario file for one run against ``target``; faults go through ``proxy_api``
    to the proxy named ``payments``."""
    p = plan
    rest = p.duration_s - p.ramp_end_s
    return f"""
name = "demo-shop"
target = "{target}"
duration = "{p.duration_s:g}s"
seed = {seed}
interval = "1s"
proxy_api = "{proxy_api}"

[defaults]
timeout = "{PEOPLE_TIMEOUT_S:g}s"
max_in_flight = 4000

[[classes]]
name = "people"
kind = "human"
arrival = "poisson"
clients = 20000
user_agent = "{BROWSER_UA}"
headers = {{ Cookie = "session=demo" }}
retry = {{ mode = "backoff", attempts = 2, base = "250ms", cap = "1s" }}
slo = ["p(99) < {SLO_P99_MS:g}ms"]

  [[classes.stages]]
  duration = "1s"
  rate = {p.ramp_from_rps:g}

  [[classes.stages]]
  duration = "{p.ramp_end_s - 1:g}s"
  target = {p.ramp_to_rps:g}

  [[classes.stages]]
  duration = "{rest:g}s"
  rate = {p.steady_rps:g}

{PEOPLE_REQUESTS}
[[classes]]
name = "scraper"
kind = "bot"
clients = 3
user_agent = "{BROWSER_UA}"
timeout = "5s"
retry = "none"

  [[classes.stages]]
  duration = "{p.scraper_start_s:g}s"
  rate = 0

  [[classes.stages]]
  duration = "{p.scraper_end_s - p.scraper_start_s:g}s"
  rate = {p.scraper_rps:g}

  [[classes.stages]]
  duration = "{p.duration_s - p.scraper_end_s:g}s"
  rate = 0

  [[classes.requests]]
  name = "search"
  path = "/search?q={{term}}"
  weight = 2
  keys.term = ["a", "e", "o", "gift", "lamp", "tent", "warm", "quiet", "kit", "set"]

  [[classes.requests]]
  name = "recommendations"
  path = "/products/{{id}}/recommendations"
  weight = 3
  keys.id = 2000

  [[classes.requests]]
  name = "product"
  path = "/products/{{id}}"
  weight = 3
  keys.id = 2000

[[faults]]
at = "{p.slow_start_s:g}s"
duration = "{p.hole_start_s - p.slow_start_s:g}s"
target = "payments"
kind = "latency"
latency = "1500ms"

[[faults]]
at = "{p.hole_start_s:g}s"
duration = "{p.fault_end_s - p.hole_start_s:g}s"
target = "payments"
kind = "timeout"
timeout = "0s"
"""
