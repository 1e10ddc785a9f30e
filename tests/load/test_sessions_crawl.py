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
