"""The documented example parses to the model it describes; the parser's conveniences."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from brownout.scenario import (
    CrawlSpec,
    FaultSpec,
    KeySpec,
    ProxySpec,
    RetrySpec,
    SessionSpec,
    Spike,
    Stage,
    ThresholdSpec,
    cumulative,
    expected_count,
    load_scenario,
    parse_scenario,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "scenario.toml"
DOC = ROOT / "docs" / "scenario.md"


def test_the_docs_show_the_example_file_verbatim() -> None:
    blocks = re.findall(r"```toml\n(.*?)```", DOC.read_text(), flags=re.S)
    assert EXAMPLE.read_text() in blocks


def test_the_example_parses_to_the_expected_model() -> None:
    sc = load_scenario(EXAMPLE)
    assert sc.name == "evening-peak"
    assert sc.target == "http://127.0.0.1:8000"
    assert (sc.duration_s, sc.seed, sc.interval_s, sc.allow_hosts) == (180.0, 42, 1.0, ())
    shoppers, scraper = sc.classes

    assert (shoppers.name, shoppers.kind, shoppers.arrival) == ("shoppers", "human", "poisson")
    assert shoppers.stages == (
        Stage(duration_s=60, target=50),
        Stage(duration_s=60, rate=50),
        Stage(duration_s=30, rate=80),
        Stage(duration_s=30, target=0),
    )
    assert shoppers.spikes == (Spike(at_s=90, duration_s=20, rate=40),)
    assert shoppers.session == SessionSpec(
        think_time_s=3, min_requests=2, max_requests=8, cookies=True
    )
    assert shoppers.slo == ("p(99) < 400ms", "rate(errors) < 1%")
    # [defaults]
    assert shoppers.timeout_s == 2.0
    assert shoppers.max_in_flight == 5000
    assert shoppers.retry == RetrySpec(mode="backoff", attempts=3, base_s=0.1, cap_s=2.0)
    assert shoppers.headers == {"Accept": "text/html,application/json"}

    product, search, cart, checkout = shoppers.requests
    assert (product.name, product.path, product.weight, product.method) == (
        "product",
        "/products/{id}",
        8.0,
        "GET",
    )
    assert product.keys == {"id": KeySpec(kind="zipf", n=10_000, s=1.1)}
    assert search.keys == {
        "term": KeySpec(kind="values", values=("shoes", "red dress", "socks", "hat")),
        "page": KeySpec(kind="uniform", n=5),
    }
    assert (cart.method, cart.body, cart.headers) == (
        "POST",
        b'{"product":17,"quantity":1}',
        {"Content-Type": "application/json"},
    )
    assert (checkout.weight, checkout.body) == (0.5, b"pay=card")
    assert checkout.headers == {"Content-Type": "application/x-www-form-urlencoded"}

    assert (scraper.kind, scraper.arrival, scraper.burst_on_s, scraper.burst_off_s) == (
        "bot",
        "bursty",
        2.0,
        8.0,
    )
    assert scraper.stages == (Stage(duration_s=180, rate=20),)  # rate = 20 for the whole run
    assert scraper.retry == RetrySpec(mode="none")
    assert scraper.timeout_s == 5.0
    assert scraper.user_agent == "PriceBot/2.1 (+https://example.com/bot)"
    assert scraper.crawl == CrawlSpec(start=("/", "/sitemap"), max_depth=3, max_pages=500)
    assert scraper.endpoints == ("crawl",)

    assert sc.thresholds == (
        ThresholdSpec(expr="p(99) < 500ms"),
        ThresholdSpec(
            expr="rate(errors) < 2%", class_name="shoppers", endpoint="checkout", abort_on_fail=True
        ),
    )
    latency, abort, delay = sc.faults
    assert latency == FaultSpec(
        at_s=100,
        duration_s=30,
        target="payments",
        kind="latency",
        params={"latency_s": 0.3, "jitter_s": 0.05},
    )
    assert abort.params == {
        "status": 503,
        "retry_after_s": 1.0,
        "probability": 0.5,
        "match": {"method": "POST", "path": "/pay/*"},
    }
    assert (delay.at_s, delay.duration_s) == (150.0, 30.0)  # until the end of the run
    assert delay.params == {"delay_s": 0.1, "jitter_s": 0.0, "ramp_to_s": 1.0, "probability": 1.0}
    assert sc.proxies == (
        ProxySpec(name="payments", listen="127.0.0.1:9001", upstream="127.0.0.1:9000"),
    )
    assert sc.proxy_api is None


def test_the_example_schedules_hold_their_expected_counts() -> None:
    shoppers, scraper = load_scenario(EXAMPLE).classes
    # ramp 0->50 over 60 s (1500), 50 for 60 s (3000), 80 for 30 s (2400), ramp 80->0 over
    # 30 s (1200), spike 40/s for 20 s (800)
    assert cumulative(shoppers, 180) == pytest.approx(1500 + 3000 + 2400 + 1200 + 800)
    assert expected_count(scraper, 0, 180) == pytest.approx(20 * 180)


def test_the_example_converts_to_json() -> None:
    data = json.loads(json.dumps(load_scenario(EXAMPLE).to_dict()))
    assert data["name"] == "evening-peak"
    assert data["faults"][1]["params"]["match"] == {"method": "POST", "path": "/pay/*"}


def test_the_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace('name = "evening-peak"\n', "")
    path = tmp_path / "friday.toml"
    path.write_text(text)
    assert load_scenario(path).name == "friday"
    assert parse_scenario(text).name == "scenario"


SMALL = 'duration = "10s"\n[[classes]]\nname = "web"\nrate = 5\n'


def test_thresholds_may_be_plain_strings() -> None:
    sc = parse_scenario(
        'thresholds = ["p(99) < 300ms"]\n' + SMALL + '[[classes.requests]]\npath = "/"\n'
    )
    assert sc.thresholds == (ThresholdSpec(expr="p(99) < 300ms"),)


def test_class_headers_merge_over_defaults_and_other_keys_replace_them() -> None:
    text = (
        'duration = 5\n[defaults]\ntimeout = "3s"\nheaders = {A = "1", B = "1"}\n'
        + '[[classes]]\nname = "web"\nrate = 5\n'
        + 'timeout = "1s"\nheaders = {B = "2"}\n[[classes.requests]]\npath = "/"\n'
    )
    (cls,) = parse_scenario(text).classes
    assert cls.headers == {"A": "1", "B": "2"}
    assert cls.timeout_s == 1.0


@pytest.mark.parametrize(
    ("key", "spec"),
    [
        ("7", KeySpec(kind="uniform", n=7)),
        ('["a", "b"]', KeySpec(kind="values", values=("a", "b"))),
        ("{n = 9, s = 0.8}", KeySpec(kind="zipf", n=9, s=0.8)),
        ("{values = [1, 2]}", KeySpec(kind="values", values=("1", "2"))),
        ("{n = 9}", KeySpec(kind="uniform", n=9)),
    ],
)
def test_key_shorthands(key: str, spec: KeySpec) -> None:
    text = SMALL + f'[[classes.requests]]\npath = "/p/{{id}}"\nkeys.id = {key}\n'
    assert parse_scenario(text).classes[0].requests[0].keys["id"] == spec


def test_json_keeps_a_content_type_that_is_given() -> None:
    text = (
        SMALL
        + '[[classes.requests]]\npath = "/"\njson = [1, 2]\nheaders = {content-type = "application/vnd+json"}\n'
    )
    request = parse_scenario(text).classes[0].requests[0]
    assert request.body == b"[1,2]"
    assert request.headers == {"content-type": "application/vnd+json"}


def test_fault_units_and_defaults() -> None:
    text = (
        SMALL
        + '[[classes.requests]]\npath = "/"\n'
        + '[[faults]]\nat = 1\ntarget = "db"\nkind = "slicer"\naverage_size = "1KiB"\ndelay = "10us"\nprobability = "30%"\n'
        + '[[faults]]\nat = "2s"\nduration = "1s"\ntarget = "db"\nkind = "limit_data"\nbytes = "2KB"\ndirection = "upstream"\n'
    )
    slicer, limit = parse_scenario(text).faults
    assert (slicer.at_s, slicer.duration_s) == (1.0, 9.0)
    assert slicer.params == {
        "average_size": 1024,
        "size_variation": 0,
        "delay_s": pytest.approx(10e-6),
        "probability": pytest.approx(0.3),
        "direction": "downstream",
    }
    assert limit.params == {"bytes": 2000, "probability": 1.0, "direction": "upstream"}


def test_match_methods_are_uppercased() -> None:
    text = (
        SMALL
        + '[[classes.requests]]\npath = "/"\n[[faults]]\nat = 1\ntarget = "api"\nkind = "http_reset"\nmatch = {method = "post", header = {X-Canary = "1"}}\n'
    )
    (fault,) = parse_scenario(text).faults
    assert fault.params["match"] == {"method": "POST", "header": {"X-Canary": "1"}}


def test_duration_defaults_to_the_longest_stage_schedule() -> None:
    text = (
        '[[classes]]\nname = "a"\n[[classes.stages]]\nduration = "1m"\nrate = 1\n[[classes.requests]]\npath = "/"\n'
        '[[classes]]\nname = "b"\nrate = 3\n[[classes.requests]]\npath = "/"\n'
    )
    sc = parse_scenario(text)
    assert sc.duration_s == 60.0
    assert sc.classes[1].stages == (Stage(duration_s=60, rate=3),)


def test_slo_may_be_one_string() -> None:
    text = SMALL + 'slo = "p(99) < 1s"\n[[classes.requests]]\npath = "/"\n'
    assert parse_scenario(text).classes[0].slo == ("p(99) < 1s",)


def test_retry_shorthand_and_statuses() -> None:
    text = (
        SMALL
        + 'retry = {mode = "immediate", attempts = 2, on_status = [429], on_timeout = false}\n[[classes.requests]]\npath = "/"\n'
    )
    retry = parse_scenario(text).classes[0].retry
    assert retry == RetrySpec(
        mode="immediate", attempts=2, on_status=frozenset({429}), on_timeout=False
    )
