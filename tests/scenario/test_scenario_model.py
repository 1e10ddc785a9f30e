from __future__ import annotations

import json
import pickle
from dataclasses import replace

import pytest

import brownout.scenario as scenario_pkg
from brownout.errors import ScenarioError
from brownout.scenario import (
    CrawlSpec,
    FaultSpec,
    KeySpec,
    RequestSpec,
    RetrySpec,
    Scenario,
    SessionSpec,
    Spike,
    Stage,
    ThresholdSpec,
    TrafficClass,
    quick_scenario,
)


def klass(**kw: object) -> TrafficClass:
    args: dict[str, object] = {
        "name": "web",
        "stages": (Stage(duration_s=10, rate=100),),
        "requests": (RequestSpec(path="/"),),
    }
    args.update(kw)
    return TrafficClass(**args)  # type: ignore[arg-type]


def test_public_surface_is_sorted_and_complete() -> None:
    exported = list(scenario_pkg.__all__)
    assert exported == sorted(exported, key=lambda s: (not s.isupper(), s))  # ruff's RUF022 order
    for name in exported:
        assert hasattr(scenario_pkg, name)
    public = {
        n
        for n, v in vars(scenario_pkg).items()
        if not n.startswith("_") and str(getattr(v, "__module__", "")).startswith("brownout")
    }
    assert public <= set(exported)


def test_defaults_of_a_class() -> None:
    cls = klass()
    assert (cls.kind, cls.arrival, cls.timeout_s, cls.max_in_flight) == (
        "human",
        "constant",
        2.0,
        10_000,
    )
    assert cls.retry == RetrySpec()
    assert cls.retry.mode == "none"
    assert cls.retry.max_attempts == 1
    assert cls.retry.on_status == frozenset({502, 503, 504})
    assert cls.user_agent.startswith("brownout/")
    assert cls.end_s == 10.0
    assert cls.endpoints == ("/",)


def test_scenario_duration_defaults_to_the_longest_class_schedule() -> None:
    a = klass(name="a", stages=(Stage(duration_s=10, rate=1), Stage(duration_s=5, target=0)))
    b = klass(name="b", spikes=(Spike(at_s=8, duration_s=12, rate=5),))
    assert Scenario(classes=(a, b)).duration_s == 20.0
    assert Scenario(classes=(a, b), duration_s=9).duration_s == 9.0


def test_numbers_are_stored_as_floats() -> None:
    stage = Stage(duration_s=10, rate=100)
    assert isinstance(stage.duration_s, float)
    assert isinstance(stage.rate, float)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Stage(duration_s=0, rate=1), "duration_s"),
        (lambda: Stage(duration_s=1), "rate"),
        (lambda: Stage(duration_s=1, rate=1, target=2), "target"),
        (lambda: Stage(duration_s=1, rate=-1), "rate"),
        (lambda: Spike(at_s=-1, duration_s=1, rate=1), "at_s"),
        (lambda: Spike(at_s=1, duration_s=1, rate=0), "rate"),
        (lambda: KeySpec(kind="zipf", n=0), "n"),
        (lambda: KeySpec(kind="zipf", n=10, s=0), "s"),
        (lambda: KeySpec(kind="values"), "values"),
        (lambda: KeySpec(kind="uniform", n=3, values=("a",)), "values"),
        (lambda: KeySpec(kind="normal", n=3), "kind"),
        (lambda: RequestSpec(path="products"), "path"),
        (lambda: RequestSpec(path="/a b"), "path"),
        (lambda: RequestSpec(path="/p/{id}"), "keys.id"),
        (lambda: RequestSpec(path="/p", keys={"id": KeySpec(n=3)}), "keys.id"),
        (lambda: RequestSpec(path="/p/{id"), "path"),
        (lambda: RequestSpec(path="/", weight=0), "weight"),
        (lambda: RequestSpec(path="/", method="GE T"), "method"),
        (lambda: RequestSpec(path="/", headers={"X-A": "1\r\nEvil: 1"}), "headers.X-A"),
        (lambda: RequestSpec(path="/", headers={"Bad Name": "1"}), "headers.Bad Name"),
        (lambda: RetrySpec(mode="sometimes"), "mode"),
        (lambda: RetrySpec(attempts=0), "attempts"),
        (lambda: RetrySpec(base_s=2, cap_s=1), "cap_s"),
        (lambda: RetrySpec(on_status=[200, 999]), "on_status[1]"),
        (lambda: SessionSpec(min_requests=5, max_requests=2), "max_requests"),
        (lambda: SessionSpec(think_time_s=-1), "think_time_s"),
        (lambda: CrawlSpec(start=()), "start"),
        (lambda: CrawlSpec(start=("x",)), "start[0]"),
        (lambda: CrawlSpec(max_pages=0), "max_pages"),
        (lambda: ThresholdSpec(expr=""), "expr"),
        (lambda: ThresholdSpec(expr="p(99)<1s\nx"), "expr"),
        (lambda: FaultSpec(at_s=0, duration_s=1, target="db", kind="explode"), "kind"),
        (lambda: FaultSpec(at_s=0, duration_s=1, target="db", kind="latency"), "params.latency_s"),
        (
            lambda: FaultSpec(
                at_s=0,
                duration_s=1,
                target="db",
                kind="latency",
                params={"latency_s": 1, "rate": 3},
            ),
            "params.rate",
        ),
        (lambda: FaultSpec(at_s=0, duration_s=0, target="db", kind="down"), "duration_s"),
        (lambda: klass(name=""), "name"),
        (lambda: klass(name="has space"), "name"),
        (lambda: klass(kind="robot"), "kind"),
        (lambda: klass(arrival="sometimes"), "arrival"),
        (lambda: klass(stages=()), "stages"),
        (lambda: klass(stages=[1]), "stages[0]"),
        (lambda: klass(requests=()), "requests"),
        (lambda: klass(timeout_s=0), "timeout_s"),
        (lambda: klass(max_in_flight=0), "max_in_flight"),
        (lambda: klass(session=SessionSpec(), kind="bot"), "session"),
        (lambda: klass(crawl=CrawlSpec()), "crawl"),
        (lambda: klass(arrival="bursty", burst_on_s=0), "burst_on_s"),
        (lambda: klass(stages=(Stage(duration_s=1e9, rate=1e9),) * 2), "stages"),
        (lambda: Scenario(classes=()), "classes"),
        (lambda: Scenario(classes=(klass(), klass())), "classes[1].name"),
        (lambda: Scenario(classes=(klass(),), target="ftp://x"), "target"),
        (lambda: Scenario(classes=(klass(),), target="http://"), "target"),
        (lambda: Scenario(classes=(klass(),), seed=-1), "seed"),
        (lambda: Scenario(classes=(klass(),), interval_s=0), "interval_s"),
        (
            lambda: Scenario(
                classes=(klass(),), thresholds=(ThresholdSpec(expr="p(99)<1s", class_name="api"),)
            ),
            "thresholds[0].class_name",
        ),
        (
            lambda: Scenario(
                classes=(klass(),), thresholds=(ThresholdSpec(expr="p(99)<1s", endpoint="/x"),)
            ),
            "thresholds[0].endpoint",
        ),
        (
            lambda: Scenario(
                classes=(klass(),),
                faults=(FaultSpec(at_s=8, duration_s=5, target="db", kind="down"),),
            ),
            "faults[0].duration_s",
        ),
        (
            lambda: Scenario(
                classes=(klass(),),
                faults=(FaultSpec(at_s=10, duration_s=5, target="db", kind="down"),),
            ),
            "faults[0].at_s",
        ),
        (
            lambda: Scenario(
                classes=(klass(spikes=(Spike(at_s=11, duration_s=1, rate=1),)),), duration_s=10
            ),
            "classes[0].spikes[0].at_s",
        ),
        (lambda: Scenario(classes=(klass(),), allow_hosts=("a b",)), "allow_hosts[0]"),
    ],
)
def test_the_model_checks_itself_and_names_the_attribute(make: object, field: str) -> None:
    with pytest.raises(ScenarioError) as info:
        make()  # type: ignore[operator]
    assert info.value.field == field
    assert field in str(info.value) or str(info.value).startswith(field.split(".", maxsplit=1)[0])
    assert len(str(info.value).splitlines()) == 1


def test_request_defaults_name_to_the_template_and_uppercases_the_method() -> None:
    spec = RequestSpec(path="/products/{id}", method="post", keys={"id": KeySpec(n=10)})
    assert spec.name == "/products/{id}"
    assert spec.method == "POST"


def test_key_values_are_rendered_as_text_and_counted() -> None:
    key = KeySpec(kind="values", values=("a", 2, 1.5))  # type: ignore[arg-type]
    assert key.values == ("a", "2", "1.5")
    assert key.n == 3


def test_a_crawl_class_needs_no_requests() -> None:
    cls = klass(kind="bot", crawl=CrawlSpec(start=("/shop", "/")), requests=())
    assert [r.path for r in cls.requests] == ["/shop"]
    assert cls.endpoints == ("crawl",)


def test_fault_params_are_normalized_with_defaults() -> None:
    fault = FaultSpec(
        at_s=1, duration_s=2, target="payments", kind="latency", params={"latency_s": 0.3}
    )
    assert fault.params == {
        "latency_s": 0.3,
        "jitter_s": 0.0,
        "probability": 1.0,
        "direction": "downstream",
    }
    assert fault.layer == "tcp"
    assert fault.end_s == 3.0
    abort = FaultSpec(
        at_s=0,
        duration_s=1,
        target="api",
        kind="http_abort",
        params={"status": 429, "retry_after_s": 2.0},
    )
    assert abort.params == {"status": 429, "retry_after_s": 2.0, "probability": 1.0}
    assert abort.layer == "http"


@pytest.mark.parametrize(
    ("kind", "params", "field"),
    [
        ("http_abort", {"status": 500, "retry_after_s": 1.0}, "params.retry_after_s"),
        ("http_abort", {"status": 404}, "params.status"),
        ("http_delay", {"delay_s": 0.1, "direction": "upstream"}, "params.direction"),
        ("latency", {"latency_s": 0.1, "match": {"path": "/x"}}, "params.match"),
        ("latency", {"latency_s": 0.1, "direction": "sideways"}, "params.direction"),
        ("latency", {"latency_s": 0.1, "probability": 1.5}, "params.probability"),
        ("slicer", {"average_size": 10, "size_variation": 20}, "params.size_variation"),
        ("slicer", {"average_size": 0}, "params.average_size"),
        ("http_slow_body", {"rate_kb_s": 0}, "params.rate_kb_s"),
        ("http_delay", {"delay_s": 0.1, "match": {"verb": "GET"}}, "params.match.verb"),
        ("limit_data", {}, "params.bytes"),
    ],
)
def test_fault_params_are_checked_per_kind(
    kind: str, params: dict[str, object], field: str
) -> None:
    with pytest.raises(ScenarioError) as info:
        FaultSpec(at_s=0, duration_s=1, target="db", kind=kind, params=params)
    assert info.value.field == field


def test_retry_backoff_is_full_jitter_capped() -> None:
    retry = RetrySpec(mode="backoff", base_s=0.1, cap_s=1.0)
    assert retry.delay_s(1, 0.5) == pytest.approx(0.05)
    assert retry.delay_s(3, 0.5) == pytest.approx(0.2)
    assert retry.delay_s(10, 0.999) == pytest.approx(0.999)
    assert RetrySpec(mode="immediate").delay_s(3, 0.9) == 0.0


def test_all_thresholds_adds_class_slos_scoped_to_their_class() -> None:
    sc = Scenario(
        classes=(klass(slo=("p(99) < 300ms",)),),
        thresholds=(ThresholdSpec(expr="rate(errors) < 1%"),),
    )
    assert sc.all_thresholds() == (
        ThresholdSpec(expr="rate(errors) < 1%"),
        ThresholdSpec(expr="p(99) < 300ms", class_name="web"),
    )


def test_class_named() -> None:
    sc = Scenario(classes=(klass(name="a"), klass(name="b")))
    assert sc.class_named("b").name == "b"
    with pytest.raises(ScenarioError, match="'a', 'b'"):
        sc.class_named("c")


def test_scenario_pickles_and_converts_to_json() -> None:
    sc = Scenario(
        classes=(
            klass(
                requests=(
                    RequestSpec(
                        path="/p/{id}", keys={"id": KeySpec(kind="zipf", n=50)}, body=b"\xff"
                    ),
                ),
                retry=RetrySpec(mode="backoff"),
            ),
        ),
        faults=(FaultSpec(at_s=1, duration_s=2, target="db", kind="down"),),
    )
    again = pickle.loads(pickle.dumps(sc))
    assert again == sc
    assert again.classes[0]._pieces == sc.classes[0]._pieces
    data = json.loads(json.dumps(sc.to_dict()))
    assert data["classes"][0]["retry"]["on_status"] == [502, 503, 504]
    assert data["classes"][0]["requests"][0]["body"] == "\\xff"
    assert "_pieces" not in data["classes"][0]


def test_replace_recomputes_the_schedule() -> None:
    cls = klass()
    longer = replace(cls, stages=(Stage(duration_s=30, rate=1),))
    assert longer.end_s == 30.0


def test_scenario_error_pickles() -> None:
    err = ScenarioError("classes[0].rate", -1, "a rate >= 0", source="s.toml")
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err)
    assert (back.field, back.value, back.source) == ("classes[0].rate", -1, "s.toml")


def test_quick_scenario_splits_the_url_into_target_and_path() -> None:
    sc = quick_scenario("http://127.0.0.1:8000/api/items?page=2", 500, 30, 1.5)
    assert sc.target == "http://127.0.0.1:8000"
    assert sc.duration_s == 30.0
    (cls,) = sc.classes
    assert cls.stages == (Stage(duration_s=30, rate=500),)
    assert cls.timeout_s == 1.5
    assert cls.arrival == "constant"
    assert cls.retry.mode == "none"
    (request,) = cls.requests
    assert (request.path, request.name, request.method) == (
        "/api/items?page=2",
        "/api/items",
        "GET",
    )


def test_quick_scenario_keeps_braces_literal_and_accepts_poisson() -> None:
    sc = quick_scenario("http://localhost/{x}", 10, 5, arrival="poisson")
    assert sc.classes[0].arrival == "poisson"
    assert sc.classes[0].requests[0]._template == ("/{x}",)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("ftp://x/", 10, 5), "url"),
        (("http://127.0.0.1/", -1, 5), "rate"),
        (("http://127.0.0.1/", 10, 0), "duration_s"),
        (("http://127.0.0.1/", 10, 5, 0), "timeout_s"),
    ],
)
def test_quick_scenario_rejects_bad_arguments(args: tuple[object, ...], field: str) -> None:
    with pytest.raises(ScenarioError) as info:
        quick_scenario(*args)  # type: ignore[arg-type]
    assert info.value.field == field
