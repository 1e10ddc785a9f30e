"""Human sessions keep cookies; scrapers crawl breadth-first without them."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

import pytest

from brownout.load import run_load
from brownout.scenario import parse_scenario

pytestmark = pytest.mark.slow

Server = Callable[..., str]


def _stats(url: str) -> tuple[int, int, list[str]]:
    with urllib.request.urlopen(f"{url}/stats", timeout=5) as response:
        first, *paths = response.read().decode().split("\n")
    requests, with_cookie = (int(x) for x in first.split())
    return requests, with_cookie, paths


def test_sessions_send_back_the_cookie_they_were_given(server: Server) -> None:
    url = server("site")
    scenario = parse_scenario(
        f"""
        target = "{url}"
        duration = "3s"
        [[classes]]
        name = "people"
        kind = "human"
          [[classes.stages]]
          duration = "1s"
          rate = 10
          [[classes.stages]]
          duration = "2s"
          rate = 0
          [classes.session]
          think_time = "10ms"
          min_requests = 3
          max_requests = 3
          cookies = true
          [[classes.requests]]
          path = "/"
        """
    )
    doc = run_load(scenario)
    requests, with_cookie, _ = _stats(url)
    # Sessions start in the first second; the quiet two seconds after it let every session
    # finish however slow the machine (a session's next request due after the run's end is
    # not sent).
    assert doc["summary"]["ok"] == requests == 30  # 10 sessions x 3 requests
    assert with_cookie == 20  # every request but each session's first carries sid


def test_scraper_crawls_breadth_first_from_its_start_page(server: Server) -> None:
    url = server("site")
    scenario = parse_scenario(
        f"""
        target = "{url}"
        duration = "1s"
        [[classes]]
        name = "scraper"
        kind = "bot"
        rate = 20
          [classes.crawl]
          start = ["/"]
          max_depth = 3
          max_pages = 100
        """
    )
    doc = run_load(scenario)
    _, with_cookie, paths = _stats(url)
    # The site is a binary tree: breadth-first order is numeric order, depth 3 ends at /p/14,
    # then the crawl starts over.
    expected = ["/"] + [f"/p/{k}" for k in range(1, 15)] + ["/", "/p/1"]
    assert paths[:17] == expected
    assert with_cookie == 0
    assert "scraper/crawl" in doc["by_endpoint"]


def _forwarded(url: str) -> list[str]:
    with urllib.request.urlopen(f"{url}/clients", timeout=5) as response:
        return response.read().decode().split("\n")


def test_simulated_clients_send_each_session_from_one_forwarded_address(server: Server) -> None:
    url = server("site")
    scenario = parse_scenario(
        f"""
        target = "{url}"
        duration = "3s"
        seed = 3
        [[classes]]
        name = "people"
        kind = "human"
        clients = 1000
          [[classes.stages]]
          duration = "1s"
          rate = 10
          [[classes.stages]]
          duration = "2s"
          rate = 0
          [classes.session]
          think_time = "10ms"
          min_requests = 3
          max_requests = 3
          [[classes.requests]]
          path = "/"
        """
    )
    run_load(scenario)
    seen = _forwarded(url)
    assert len(seen) == 30
    assert all(a.startswith("10.0.") for a in seen)
    # Three requests per session, one address each: 10 sessions, (almost surely) 10
    # distinct addresses among 1000, each seen exactly three times.
    counts = {a: seen.count(a) for a in seen}
    assert len(counts) == 10
    assert set(counts.values()) == {3}


def test_without_clients_no_forwarding_header_is_sent(server: Server) -> None:
    url = server("site")
    scenario = parse_scenario(
        f"""
        target = "{url}"
        duration = "1s"
        [[classes]]
        name = "bots"
        kind = "bot"
        rate = 5
          [[classes.requests]]
          path = "/"
        """
    )
    run_load(scenario)
    assert set(_forwarded(url)) == {"-"}
