"""The fault spec: Toxiproxy's toxic JSON, HTTP faults, and the sans-IO decisions of
:class:`HttpFaultSet` that the proxy and the in-process wrappers all apply."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from fault_stats import binomial_p_value
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from brownout.errors import ScenarioError
from brownout.faults import Action, HttpFault, HttpFaultSet, Toxic, fault_from_spec
from brownout.faults._spec import TOXIC_TYPES
from brownout.scenario import parse_scenario

T = TypeVar("T")


def field_of(call: Any) -> str:
    with pytest.raises(ScenarioError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(info.value.field)
    return info.value.field


# -- Toxic ---------------------------------------------------------------------------------


def test_toxic_defaults_follow_toxiproxy() -> None:
    toxic = Toxic.from_json({"type": "latency", "attributes": {"latency": 300}})
    assert toxic.name == "latency_downstream"
    assert toxic.stream == "downstream"
    assert toxic.toxicity == 1.0
    assert toxic.attributes == {"latency": 300, "jitter": 0}
    upstream = Toxic.from_json({"type": "bandwidth", "stream": "upstream"})
    assert upstream.name == "bandwidth_upstream"
    assert upstream.attributes == {"rate": 0}


def test_toxic_name_from_the_document_or_the_caller() -> None:
    assert Toxic.from_json({"type": "timeout", "name": "blackhole"}).name == "blackhole"
    assert Toxic.from_json({"type": "timeout"}, name="from-url").name == "from-url"


@pytest.mark.parametrize(
    "doc",
    [
        {"type": "latency", "attributes": {"latency": 250, "jitter": 20}},
        {"type": "bandwidth", "stream": "upstream", "attributes": {"rate": 12.5}},
        {"type": "slow_close", "toxicity": 0.25, "attributes": {"delay": 1000}},
        {"type": "timeout", "attributes": {"timeout": 0}},
        {"type": "reset_peer", "attributes": {"timeout": 100}},
        {"type": "slicer", "attributes": {"average_size": 64, "size_variation": 8, "delay": 50}},
        {"type": "limit_data", "name": "cap", "attributes": {"bytes": 4096}},
    ],
)
def test_toxic_json_round_trip(doc: dict[str, Any]) -> None:
    toxic = Toxic.from_json(doc)
    assert Toxic.from_json(toxic.to_json()) == toxic
    out = toxic.to_json()
    assert set(out) == {"name", "type", "stream", "toxicity", "attributes"}
    for key, value in doc.get("attributes", {}).items():
        assert out["attributes"][key] == value


def test_toxic_integers_stay_integers() -> None:
    toxic = Toxic.from_json({"type": "latency", "attributes": {"latency": 300.0}})
    assert toxic.attributes["latency"] == 300
    assert isinstance(toxic.attributes["latency"], int)
    assert isinstance(Toxic.from_json({"type": "bandwidth"}).attributes["rate"], int)


def test_toxic_seconds() -> None:
    assert Toxic.from_json({"type": "latency", "attributes": {"latency": 250}}).seconds(
        "latency"
    ) == pytest.approx(0.25)
    slicer = Toxic.from_json({"type": "slicer", "attributes": {"average_size": 1, "delay": 500}})
    assert slicer.seconds("delay") == pytest.approx(0.0005)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([1, 2], "toxic"),
        ({"attributes": {}}, "type"),
        ({"type": "down"}, "type"),
        ({"type": "no such"}, "type"),
        ({"type": ["latency"]}, "type"),
        ({"type": "latency", "stream": "sideways"}, "stream"),
        ({"type": "latency", "stream": ["x"]}, "stream"),
        ({"type": "latency", "name": "has space"}, "name"),
        ({"type": "latency", "name": 5}, "name"),
        ({"type": "latency", "toxicity": 1.5}, "toxicity"),
        ({"type": "latency", "toxicity": -0.1}, "toxicity"),
        ({"type": "latency", "toxicity": float("nan")}, "toxicity"),
        ({"type": "latency", "toxicity": True}, "toxicity"),
        ({"type": "latency", "toxicity": "1"}, "toxicity"),
        ({"type": "latency", "toxicity": 10**400}, "toxicity"),
        ({"type": "latency", "colour": "red"}, "colour"),
        ({"type": "latency", "attributes": "latency=3"}, "attributes"),
        ({"type": "latency", "attributes": {"rate": 3}}, "attributes.rate"),
        ({"type": "latency", "attributes": {"latency": -1}}, "attributes.latency"),
        ({"type": "latency", "attributes": {"latency": 1.5}}, "attributes.latency"),
        ({"type": "latency", "attributes": {"latency": "1s"}}, "attributes.latency"),
        ({"type": "latency", "attributes": {"latency": 10**400}}, "attributes.latency"),
        ({"type": "latency", "attributes": {"jitter": float("inf")}}, "attributes.jitter"),
        ({"type": "bandwidth", "attributes": {"rate": -5}}, "attributes.rate"),
        ({"type": "bandwidth", "attributes": {"rate": False}}, "attributes.rate"),
        ({"type": "slow_close", "attributes": {"delay": None}}, "attributes.delay"),
        ({"type": "timeout", "attributes": {"timeout": -1}}, "attributes.timeout"),
        ({"type": "reset_peer", "attributes": {"timeout": 0.5}}, "attributes.timeout"),
        ({"type": "slicer", "attributes": {"average_size": 0}}, "attributes.average_size"),
        (
            {"type": "slicer", "attributes": {"average_size": 8, "size_variation": 9}},
            "attributes.size_variation",
        ),
        ({"type": "limit_data", "attributes": {"bytes": 2.5}}, "attributes.bytes"),
    ],
)
def test_toxic_invalid_field_is_named(doc: object, field: str) -> None:
    assert field_of(lambda: Toxic.from_json(doc)) == field


def test_toxic_updated_merges_attributes() -> None:
    toxic = Toxic.from_json({"type": "latency", "attributes": {"latency": 300, "jitter": 10}})
    new = toxic.updated({"attributes": {"latency": 500}, "toxicity": 0.5})
    assert new.attributes == {"latency": 500, "jitter": 10}
    assert new.toxicity == 0.5
    assert new.name == toxic.name
    assert new.stream == "downstream"
    assert toxic.attributes["latency"] == 300  # the original is untouched
    assert toxic.updated({"stream": "upstream"}).stream == "upstream"
    assert toxic.updated({"name": toxic.name, "type": "latency"}) == toxic


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ("latency=5", "toxic"),
        ({"name": "other"}, "name"),
        ({"type": "bandwidth"}, "type"),
        ({"attributes": [1]}, "attributes"),
        ({"attributes": {"rate": 1}}, "attributes.rate"),
        ({"attributes": {"latency": -1}}, "attributes.latency"),
        ({"stream": "both"}, "stream"),
        ({"toxicity": 2}, "toxicity"),
    ],
)
def test_toxic_updated_invalid_field_is_named(doc: object, field: str) -> None:
    toxic = Toxic.from_json({"type": "latency", "attributes": {"latency": 300}})
    assert field_of(lambda: toxic.updated(doc)) == field


@pytest.mark.parametrize("toxic_type", TOXIC_TYPES)
def test_every_toxic_type_has_defaults_that_parse(toxic_type: str) -> None:
    attributes = {"average_size": 1} if toxic_type == "slicer" else {}
    toxic = Toxic.from_json({"type": toxic_type, "attributes": attributes})
    assert toxic.type == toxic_type


# -- fault_from_spec: scenario units to Toxiproxy units --------------------------------------

SCENARIO_HEAD = """
target = "http://127.0.0.1:8000"
duration = "1m"
[[classes]]
name = "shoppers"
kind = "human"
rate = 1
requests = [{ path = "/" }]
"""


def runtime_fault(fault: str, name: str = "f1") -> Toxic | HttpFault | None:
    scenario = parse_scenario(
        SCENARIO_HEAD + '[[faults]]\nat = "10s"\nduration = "20s"\ntarget = "payments"\n' + fault
    )
    (spec,) = scenario.faults
    return fault_from_spec(spec, name)


@pytest.mark.parametrize(
    ("fault", "toxic_type", "attributes"),
    [
        (
            'kind = "latency"\nlatency = "300ms"\njitter = "50ms"',
            "latency",
            {"latency": 300, "jitter": 50},
        ),
        ('kind = "latency"\nlatency = "2s"', "latency", {"latency": 2000, "jitter": 0}),
        ('kind = "bandwidth"\nrate = 100', "bandwidth", {"rate": 100}),
        ('kind = "bandwidth"\nrate = 2.5', "bandwidth", {"rate": 2.5}),
        ('kind = "slow_close"\ndelay = "1.5s"', "slow_close", {"delay": 1500}),
        ('kind = "timeout"', "timeout", {"timeout": 0}),
        ('kind = "timeout"\ntimeout = "2s"', "timeout", {"timeout": 2000}),
        ('kind = "reset_peer"\ntimeout = "250ms"', "reset_peer", {"timeout": 250}),
        (
            'kind = "slicer"\naverage_size = 64\nsize_variation = 16\ndelay = "2ms"',
            "slicer",
            {"average_size": 64, "size_variation": 16, "delay": 2000},
        ),
        (
            'kind = "slicer"\naverage_size = "1KB"',
            "slicer",
            {"average_size": 1000, "size_variation": 0, "delay": 0},
        ),
        ('kind = "limit_data"\nbytes = "4KB"', "limit_data", {"bytes": 4000}),
    ],
)
def test_fault_from_spec_converts_units(
    fault: str, toxic_type: str, attributes: dict[str, float]
) -> None:
    toxic = runtime_fault(fault)
    assert isinstance(toxic, Toxic)
    assert toxic.type == toxic_type
    assert toxic.name == "f1"
    assert toxic.stream == "downstream"
    assert toxic.toxicity == 1.0
    assert toxic.attributes == attributes
    for key, value in attributes.items():
        assert type(toxic.attributes[key]) is type(value)
    assert Toxic.from_json(toxic.to_json()) == toxic


def test_fault_from_spec_direction_and_probability() -> None:
    toxic = runtime_fault(
        'kind = "latency"\nlatency = "10ms"\ndirection = "upstream"\nprobability = "25%"'
    )
    assert isinstance(toxic, Toxic)
    assert toxic.stream == "upstream"
    assert toxic.toxicity == 0.25


def test_fault_from_spec_down_is_no_toxic() -> None:
    assert runtime_fault('kind = "down"') is None


def test_fault_from_spec_http_keeps_seconds_and_duration() -> None:
    fault = runtime_fault('kind = "http_delay"\ndelay = "100ms"\nramp_to = "1s"', "ramp")
    assert isinstance(fault, HttpFault)
    assert fault.name == "ramp"
    assert fault.kind == "http_delay"
    assert fault.duration_s == 20.0
    assert fault.params["delay_s"] == pytest.approx(0.1)
    assert fault.params["ramp_to_s"] == pytest.approx(1.0)
    abort = runtime_fault(
        'kind = "http_abort"\nstatus = 429\nretry_after = "2s"\nprobability = "50%"\n'
        'match = { method = "post", path = "/pay/*" }'
    )
    assert isinstance(abort, HttpFault)
    assert abort.params == {
        "status": 429,
        "retry_after_s": 2.0,
        "probability": 0.5,
        "match": {"method": "POST", "path": "/pay/*"},
    }


# -- HttpFault -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        {"name": "slow", "kind": "http_delay", "delay": "300ms", "jitter": "20ms"},
        {"kind": "http_delay", "delay": "100ms", "ramp_to": "1s", "duration": "30s"},
        {
            "name": "pay-503",
            "kind": "http_abort",
            "status": 503,
            "retry_after": "1s",
            "probability": "50%",
            "match": {"method": "post", "path": "/pay/*", "header": {"X-Canary": "1"}},
        },
        {"kind": "http_abort", "status": 500},
        {"kind": "http_reset", "probability": 0.1},
        {"kind": "http_slow_body", "rate": 2.5, "match": {"path": "*"}},
    ],
)
def test_http_fault_json_round_trip(doc: dict[str, Any]) -> None:
    fault = HttpFault.from_json(doc)
    assert fault.name == doc.get("name", doc["kind"])
    again = HttpFault.from_json(fault.to_json())
    assert again == fault
    assert again.to_json() == fault.to_json()


def test_http_fault_json_units() -> None:
    fault = HttpFault.from_json(
        {"kind": "http_delay", "delay": "300ms", "ramp_to": "1s", "duration": "1m"}
    )
    assert fault.params == {
        "delay_s": 0.3,
        "jitter_s": 0.0,
        "ramp_to_s": 1.0,
        "probability": 1.0,
    }
    assert fault.duration_s == 60.0
    assert fault.to_json() == {
        "name": "http_delay",
        "kind": "http_delay",
        "delay": 0.3,
        "jitter": 0.0,
        "ramp_to": 1.0,
        "probability": 1.0,
        "duration": 60.0,
    }
    slow = HttpFault.from_json({"kind": "http_slow_body", "rate": 4})
    assert slow.params["rate_kb_s"] == 4
    assert slow.to_json()["rate"] == 4


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ("http_delay", "fault"),
        ({"delay": "1s"}, "kind"),
        ({"kind": "latency", "latency": "1s"}, "kind"),
        ({"kind": ["http_delay"]}, "kind"),
        ({"kind": "http_delay"}, "delay"),
        ({"kind": "http_delay", "delay": "soon"}, "delay"),
        ({"kind": "http_delay", "delay": -1}, "delay"),
        ({"kind": "http_delay", "delay": 10**400}, "delay"),
        ({"kind": "http_delay", "delay": "1s", "jitter": "x"}, "jitter"),
        ({"kind": "http_delay", "delay": "1s", "ramp_to": "2s"}, "duration"),
        ({"kind": "http_delay", "delay": "1s", "duration": 0}, "duration"),
        ({"kind": "http_delay", "delay": "1s", "duration": True}, "duration"),
        ({"kind": "http_delay", "delay": "1s", "name": "no spaces"}, "name"),
        ({"kind": "http_delay", "delay": "1s", "name": 3}, "name"),
        ({"kind": "http_delay", "delay": "1s", "status": 503}, "status"),
        ({"kind": "http_abort", "status": 404}, "status"),
        ({"kind": "http_abort", "status": True}, "status"),
        ({"kind": "http_abort", "status": 500, "retry_after": "1s"}, "retry_after"),
        ({"kind": "http_abort", "probability": 1.5}, "probability"),
        ({"kind": "http_abort", "probability": "150%"}, "probability"),
        ({"kind": "http_abort", "match": "/pay"}, "match"),
        ({"kind": "http_abort", "match": {"verb": "GET"}}, "match.verb"),
        ({"kind": "http_abort", "match": {"method": 1}}, "match.method"),
        ({"kind": "http_abort", "match": {"path": "pay"}}, "match.path"),
        ({"kind": "http_abort", "match": {"header": {"X-A": 1}}}, "match.header.X-A"),
        ({"kind": "http_slow_body"}, "rate"),
        ({"kind": "http_slow_body", "rate": 0}, "rate"),
        ({"kind": "http_slow_body", "rate": "5"}, "rate"),
        ({"kind": "http_reset", "colour": "red"}, "colour"),
    ],
)
def test_http_fault_invalid_field_is_named(doc: object, field: str) -> None:
    assert field_of(lambda: HttpFault.from_json(doc)) == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "", "kind": "http_reset"}, "name"),
        ({"name": "x", "kind": "http_nope"}, "kind"),
        ({"name": "x", "kind": "http_delay", "params": {}}, "params.delay_s"),
        ({"name": "x", "kind": "http_delay", "params": {"delay": 1}}, "params.delay"),
        (
            {"name": "x", "kind": "http_delay", "params": {"delay_s": 1}, "duration_s": -1},
            "duration",
        ),
        (
            {"name": "x", "kind": "http_delay", "params": {"delay_s": 1}, "duration_s": math.nan},
            "duration",
        ),
        ({"name": "x", "kind": "http_delay", "params": {"delay_s": 1, "ramp_to_s": 2}}, "duration"),
    ],
)
def test_http_fault_constructor_invalid_field_is_named(kwargs: dict[str, Any], field: str) -> None:
    assert field_of(lambda: HttpFault(**kwargs)) == field


def abort(name: str = "abort", status: int = 503, **params: Any) -> HttpFault:
    return HttpFault(name=name, kind="http_abort", params={"status": status, **params})


def delay(name: str, delay_s: float, **params: Any) -> HttpFault:
    return HttpFault(name=name, kind="http_delay", params={"delay_s": delay_s, **params})


@pytest.mark.parametrize(
    ("match", "method", "path", "headers", "expected"),
    [
        ({}, "GET", "/", {}, True),
        ({"method": "POST"}, "POST", "/", {}, True),
        ({"method": "POST"}, "post", "/", {}, True),
        ({"method": "POST"}, "GET", "/", {}, False),
        ({"path": "/pay/*"}, "GET", "/pay/42", {}, True),
        ({"path": "/pay/*"}, "GET", "/pay/42?card=1", {}, True),
        ({"path": "/pay/*"}, "GET", "/payments", {}, False),
        ({"path": "/pay/*"}, "GET", "/api/pay/42", {}, False),
        ({"path": "/pay"}, "GET", "/pay?x=1", {}, True),
        ({"path": "*"}, "GET", "/anything/at/all", {}, True),
        ({"path": "/a/*/c"}, "GET", "/a/b/c", {}, True),
        ({"path": "/A/*"}, "GET", "/a/b", {}, False),
        ({"header": {"X-Canary": "1"}}, "GET", "/", {"x-canary": "1"}, True),
        ({"header": {"X-Canary": "1"}}, "GET", "/", {"x-canary": "2"}, False),
        ({"header": {"X-Canary": "1"}}, "GET", "/", {}, False),
        (
            {"method": "POST", "path": "/pay/*", "header": {"X-Canary": "1"}},
            "POST",
            "/pay/1",
            {"x-canary": "1"},
            True,
        ),
        (
            {"method": "POST", "path": "/pay/*", "header": {"X-Canary": "1"}},
            "GET",
            "/pay/1",
            {"x-canary": "1"},
            False,
        ),
    ],
)
def test_match_rules(
    match: dict[str, Any], method: str, path: str, headers: dict[str, str], expected: bool
) -> None:
    fault = abort(match=match) if match else abort()
    assert fault.matches(method, path, headers) is expected
    decided = HttpFaultSet([fault]).decide(method, path, headers, 0.0)
    assert (decided is not None) is expected


def test_ramp_delay_at_start_middle_and_end() -> None:
    fault = HttpFault(
        name="ramp",
        kind="http_delay",
        params={"delay_s": 0.1, "ramp_to_s": 1.1},
        duration_s=10.0,
    )
    rng = random.Random(1)
    assert fault.delay_at(0.0, rng) == pytest.approx(0.1)
    assert fault.delay_at(2.5, rng) == pytest.approx(0.35)
    assert fault.delay_at(5.0, rng) == pytest.approx(0.6)
    assert fault.delay_at(10.0, rng) == pytest.approx(1.1)
    assert fault.delay_at(60.0, rng) == pytest.approx(1.1)  # held after the end
    assert fault.delay_at(-1.0, rng) == pytest.approx(0.1)


def test_ramp_measured_from_when_the_fault_was_added() -> None:
    fault = HttpFault(
        name="ramp", kind="http_delay", params={"delay_s": 0.0, "ramp_to_s": 2.0}, duration_s=4.0
    )
    faults = HttpFaultSet()
    faults.add(fault, 100.0)
    at = {t: faults.decide("GET", "/", {}, t) for t in (100.0, 101.0, 104.0)}
    assert [a.delay_s if a else None for a in at.values()] == pytest.approx([0.0, 0.5, 2.0])


def test_ramp_down() -> None:
    fault = HttpFault(
        name="calm", kind="http_delay", params={"delay_s": 1.0, "ramp_to_s": 0.0}, duration_s=2.0
    )
    assert fault.delay_at(1.0, random.Random(0)) == pytest.approx(0.5)


def test_jitter_bounds() -> None:
    fault = delay("j", 0.2, jitter_s=0.05)
    rng = random.Random(7)
    draws = [fault.delay_at(0.0, rng) for _ in range(5000)]
    assert min(draws) >= 0.15
    assert max(draws) <= 0.25
    # spread over the whole range, not stuck at the base
    assert min(draws) < 0.152
    assert max(draws) > 0.248
    assert sum(draws) / len(draws) == pytest.approx(0.2, abs=0.002)


def test_jitter_never_makes_a_negative_delay() -> None:
    fault = delay("j", 0.01, jitter_s=0.05)
    rng = random.Random(3)
    draws = [fault.delay_at(0.0, rng) for _ in range(2000)]
    assert min(draws) == 0.0
    assert max(draws) <= 0.06


# -- HttpFaultSet --------------------------------------------------------------------------


def test_binomial_helper_has_power() -> None:
    """The test below could fail: the helper rejects a probability off by 5 points."""
    assert binomial_p_value(600, 2000, 0.3) > 0.5
    assert binomial_p_value(700, 2000, 0.3) < 0.001
    assert binomial_p_value(500, 2000, 0.3) < 0.001


@pytest.mark.parametrize("probability", [0.05, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("seed", [1, 2])
def test_probability_passes_a_binomial_test(probability: float, seed: int) -> None:
    n = 3000
    faults = HttpFaultSet([abort(probability=probability)], rng=random.Random(seed))
    fired = sum(faults.decide("GET", "/", {}, 0.0) is not None for _ in range(n))
    assert binomial_p_value(fired, n, probability) >= 0.001, (fired, n, probability)


def test_probability_zero_and_one() -> None:
    never = HttpFaultSet([abort(probability=0.0)], rng=random.Random(1))
    always = HttpFaultSet([abort(probability=1.0)], rng=random.Random(1))
    assert all(never.decide("GET", "/", {}, 0.0) is None for _ in range(500))
    assert all(always.decide("GET", "/", {}, 0.0) is not None for _ in range(500))


def test_each_fault_rolls_its_own_probability() -> None:
    n = 4000
    faults = HttpFaultSet(
        [delay("a", 0.1, probability=0.5), delay("b", 0.2, probability=0.5)],
        rng=random.Random(11),
    )
    both = 0
    for _ in range(n):
        action = faults.decide("GET", "/", {}, 0.0)
        both += action is not None and action.faults == ("a", "b")
    assert binomial_p_value(both, n, 0.25) >= 0.001


def test_a_seeded_rng_repeats_its_decisions() -> None:
    def run(seed: int) -> list[Action | None]:
        faults = HttpFaultSet(
            [delay("d", 0.1, jitter_s=0.05, probability=0.5), abort(probability=0.3)],
            rng=random.Random(seed),
        )
        return [faults.decide("GET", "/", {}, 0.0) for _ in range(200)]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_no_fault_no_action() -> None:
    assert HttpFaultSet().decide("GET", "/", {}, 0.0) is None
    only_posts = HttpFaultSet([abort(match={"method": "POST"})])
    assert only_posts.decide("GET", "/", {}, 0.0) is None


def test_delays_add_up() -> None:
    faults = HttpFaultSet([delay("a", 0.1), delay("b", 0.25)])
    action = faults.decide("GET", "/", {}, 0.0)
    assert action == Action("delay", delay_s=pytest.approx(0.35), faults=("a", "b"))


def test_delays_add_up_before_a_terminal_fault() -> None:
    faults = HttpFaultSet([delay("a", 0.1), abort(status=429, retry_after_s=2.0), delay("b", 0.2)])
    action = faults.decide("GET", "/", {}, 0.0)
    assert action is not None
    assert action.kind == "abort"
    assert action.status == 429
    assert action.retry_after_s == 2.0
    assert action.delay_s == pytest.approx(0.3)
    assert action.faults == ("a", "abort", "b")


@pytest.mark.parametrize(
    ("order", "kind"),
    [
        (("abort", "reset", "slow"), "abort"),
        (("reset", "abort", "slow"), "reset"),
        (("slow", "reset", "abort"), "slow_body"),
    ],
)
def test_the_first_terminal_fault_wins(order: tuple[str, ...], kind: str) -> None:
    made = {
        "abort": abort(status=500),
        "reset": HttpFault(name="reset", kind="http_reset"),
        "slow": HttpFault(name="slow", kind="http_slow_body", params={"rate_kb_s": 8}),
    }
    action = HttpFaultSet([made[name] for name in order]).decide("GET", "/", {}, 0.0)
    assert action is not None
    assert action.kind == kind
    assert action.faults == (order[0],)
    if kind == "slow_body":
        assert action.rate_kb_s == 8


def test_a_terminal_fault_that_does_not_fire_leaves_the_next_one() -> None:
    faults = HttpFaultSet(
        [abort(probability=0.0), HttpFault(name="reset", kind="http_reset")],
        rng=random.Random(1),
    )
    action = faults.decide("GET", "/", {}, 0.0)
    assert action is not None
    assert action.kind == "reset"


def test_set_add_replace_remove() -> None:
    faults = HttpFaultSet([abort()])
    assert len(faults) == 1
    faults.add(abort(status=500), 0.0)  # the same name replaces
    assert len(faults) == 1
    replaced = faults.get("abort")
    assert replaced is not None
    assert replaced.params["status"] == 500
    assert [f.name for f in faults] == ["abort"]
    assert faults.remove("abort") is True
    assert faults.remove("abort") is False
    assert faults.get("abort") is None
    faults.add(abort(), 0.0)
    faults.clear()
    assert len(faults) == 0


def test_abort_response_bytes() -> None:
    raw = Action("abort", status=429, retry_after_s=1.2).abort_response()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 429 Too Many Requests"
    assert b"Retry-After: 2" in lines
    assert f"Content-Length: {len(body)}".encode() in lines
    assert body == b'{"error": "injected by brownout", "status": 429}'
    plain = Action("abort", status=500).abort_response()
    assert b"Retry-After" not in plain


# -- fuzzing: only ScenarioError may escape -------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["300ms", "1s", "-1s", "50%", "4KB", "GET", "/a/*", "*", "upstream"])
)
JSON_LIKE = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.text(max_size=6) | st.sampled_from(["method", "path", "header", "X-A"]),
            inner,
            max_size=3,
        )
    ),
    max_leaves=8,
)
NUMBERS = (
    st.integers(min_value=-5, max_value=10**6)
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.booleans()
)


@st.composite
def toxic_docs(draw: st.DrawFn) -> dict[str, Any]:
    """Documents close to valid, so the fuzz reaches every attribute check."""
    toxic_type = draw(st.sampled_from([*TOXIC_TYPES, "down"]) | JSON_LIKE)
    names = ["latency", "jitter", "rate", "delay", "timeout", "average_size", "size_variation"]
    doc: dict[str, Any] = {
        "type": toxic_type,
        "attributes": draw(
            st.dictionaries(st.sampled_from([*names, "bytes", "x"]), NUMBERS | JSON_LIKE)
            | JSON_LIKE
        ),
    }
    for key, values in (
        ("name", st.sampled_from(["t1", ""]) | JSON_LIKE),
        ("stream", st.sampled_from(["upstream", "downstream"]) | JSON_LIKE),
        ("toxicity", NUMBERS | JSON_LIKE),
    ):
        if draw(st.booleans()):
            doc[key] = draw(values)
    return doc


@st.composite
def http_fault_docs(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(["http_delay", "http_abort", "http_reset", "http_slow_body"]) | JSON_LIKE
    )
    doc: dict[str, Any] = {"kind": kind}
    values = st.sampled_from(["300ms", "1s", 503, 429, "50%", 0.5, 2]) | NUMBERS | JSON_LIKE
    match = st.fixed_dictionaries(
        {},
        optional={
            "method": st.sampled_from(["get", "POST"]) | JSON_LIKE,
            "path": st.sampled_from(["/a/*", "x"]) | JSON_LIKE,
            "header": st.dictionaries(st.sampled_from(["X-A", "bad name"]), JSON_LIKE) | JSON_LIKE,
        },
    )
    keys = ["name", "duration", "delay", "jitter", "ramp_to", "status", "retry_after", "rate"]
    for key in [*keys, "probability", "match", "extra"]:
        if draw(st.booleans()):
            doc[key] = draw(match if key == "match" else values)
    return doc


def value_or_error_line(call: Callable[[], T]) -> T | None:
    """What ``call`` returns, or None when it raised a one-line ScenarioError; any other
    exception escapes and fails the test."""
    try:
        return call()
    except ScenarioError as exc:
        message = str(exc)
    assert "\n" not in message
    return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(toxic_docs() | JSON_LIKE)
@example({"type": "latency", "toxicity": 10**400})
@example({"type": "latency", "attributes": {"latency": 10**400}})
def test_fuzz_toxic_from_json_raises_only_scenario_error(doc: Any) -> None:
    toxic = value_or_error_line(lambda: Toxic.from_json(doc))
    if toxic is not None:
        assert Toxic.from_json(toxic.to_json()) == toxic


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(http_fault_docs() | JSON_LIKE)
@example({"kind": "http_delay", "delay": 10**400})
def test_fuzz_http_fault_from_json_raises_only_scenario_error(doc: Any) -> None:
    fault = value_or_error_line(lambda: HttpFault.from_json(doc))
    if fault is not None:
        assert HttpFault.from_json(fault.to_json()) == fault


@settings(max_examples=200, deadline=None)
@given(toxic_docs() | JSON_LIKE)
def test_fuzz_toxic_updated_raises_only_scenario_error(doc: Any) -> None:
    toxic = Toxic.from_json({"type": "slicer", "attributes": {"average_size": 10}})
    updated = value_or_error_line(lambda: toxic.updated(doc))
    if updated is not None:
        assert updated.name == toxic.name
