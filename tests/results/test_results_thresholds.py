from __future__ import annotations

import contextlib
import copy
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from results_streams import CLASSES, Req, feed, make_stream

from brownout.errors import ThresholdError
from brownout.results import (
    DROPPED,
    ERROR,
    OK,
    SHED,
    TIMEOUT,
    Histogram,
    RunRecorder,
    Threshold,
    evaluate,
    evaluate_all,
    parse_threshold,
)

# -- parsing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("p(99) < 300ms", ("p", "response", 99.0, "<", 300.0)),
        ("p(95)<=1s", ("p", "response", 95.0, "<=", 1000.0)),
        ("p(99.9) < 2.5s", ("p", "response", 99.9, "<", 2500.0)),
        ("p(99) < 300", ("p", "response", 99.0, "<", 300.0)),  # k6: a bare number is ms
        ("p( 50 ) > 500us", ("p", "response", 50.0, ">", 0.5)),
        ("avg < 200ms", ("avg", "response", None, "<", 200.0)),
        ("max < 2s", ("max", "response", None, "<", 2000.0)),
        ("min >= 1ms", ("min", "response", None, ">=", 1.0)),
        ("med < 1m", ("med", "response", None, "<", 60_000.0)),
        ("latency.p(90) < 80ms", ("p", "response", 90.0, "<", 80.0)),
        ("service.p(99) < 50ms", ("p", "service", 99.0, "<", 50.0)),
        ("send_lag.max < 10ms", ("max", "send_lag", None, "<", 10.0)),
        ("rate(errors) < 1%", ("rate", "", "errors", "<", 0.01)),
        ("rate(shed) <= 0.05", ("rate", "", "shed", "<=", 0.05)),
        ("rate(timeouts) < 1%", ("rate", "", "timeouts", "<", 0.01)),
        ("rate(dropped) == 0", ("rate", "", "dropped", "==", 0.0)),
        ("rate( failed ) != 100%", ("rate", "", "failed", "!=", 1.0)),
        ("rate(retries) < 5 %", ("rate", "", "retries", "<", 0.05)),
        ("goodput > 95%", ("goodput", "", None, ">", 0.95)),
        ("throughput_rps >= 400", ("throughput_rps", "", None, ">=", 400.0)),
        ("goodput_rps > 100rps", ("goodput_rps", "", None, ">", 100.0)),
        ("offered_rps >= 1000/s", ("offered_rps", "", None, ">=", 1000.0)),
    ],
)
def test_valid_thresholds_parse(text: str, expected: tuple[str, str, object, str, float]) -> None:
    metric, family, arg, op, value = expected
    t = parse_threshold(text)
    assert (t.metric, t.family, t.arg, t.op) == (metric, family, arg, op)
    assert t.value == pytest.approx(value)
    assert t.expr == text.strip()
    assert (t.class_name, t.endpoint, t.abort_on_fail) == (None, None, False)


def test_scope_in_the_text_or_as_arguments() -> None:
    named = parse_threshold("p(99) < 300ms", endpoint="GET /items/{id}")  # any name as argument
    assert named.endpoint == "GET /items/{id}"
    t = parse_threshold("p(99){class:human, endpoint:checkout} < 300ms")
    assert (t.class_name, t.endpoint) == ("human", "checkout")
    t = parse_threshold("rate(errors) < 1%", class_name="bot", endpoint="crawl", abort_on_fail=True)
    assert (t.class_name, t.endpoint, t.abort_on_fail) == ("bot", "crawl", True)
    t = parse_threshold("goodput{class:bot} > 90%", class_name="bot")
    assert t.class_name == "bot"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("p(99) 300ms", "no comparison"),
        ("p(99) < 300ms < 1s", "more than one comparison"),
        ("p(99) = 300ms", "write =="),
        ("p(99) => 300ms", "more than one comparison"),
        ("p(101) < 1s", "percentile '101'"),
        ("p(x) < 1s", "percentile 'x'"),
        ("pp(99) < 1s", "unknown metric 'pp(99)'"),
        ("latency < 300ms", "unknown metric 'latency'"),
        ("rate(oops) < 1%", "rate(oops) is unknown"),
        ("rate(errors) < 5", "above 1 (write 5% or 0.05)"),
        ("rate(errors) < 1ms", "'ms' is not a ratio unit"),
        ("goodput > 95", "above 1"),
        ("p(99) < 1%", "'%' is not a duration unit"),
        ("p(99) < 300 parsecs", "'parsecs' is not a duration unit"),
        ("p(99) < 3 0", "must be a number with an optional unit"),
        ("p(99) < -3ms", "must be a number"),
        ("throughput_rps > 5ms", "not a rate unit"),
        ("service.goodput > 1%", "applies to p(N)"),
        ("p(99){tier:gold} < 1s", "scope {tier:gold}"),
        ("p(99){class:a,class:b} < 1s", "names class twice"),
        ("p(99){class:a/b} < 1s", "cannot hold '/'"),
        ("p(99){class:human < 1s", "braces must close"),
    ],
)
def test_invalid_thresholds_name_the_text_and_what_is_allowed(text: str, why: str) -> None:
    with pytest.raises(ThresholdError) as info:
        parse_threshold(text)
    message = str(info.value)
    assert message.startswith(f"threshold {text!r}: ")
    assert why in message
    assert "e.g. 'p(99) < 300ms'" in message
    assert "\n" not in message
    assert info.value.text == text


def test_conflicting_scopes_are_refused() -> None:
    with pytest.raises(ThresholdError, match="'human' in the text but 'bot' was passed"):
        parse_threshold("p(99){class:human} < 1s", class_name="bot")
    with pytest.raises(ThresholdError, match="must be a non-empty name"):
        parse_threshold("p(99) < 1s", endpoint="")


def test_a_threshold_must_be_a_string() -> None:
    with pytest.raises(ThresholdError, match="a threshold is a string"):
        parse_threshold(99)  # type: ignore[arg-type]


@settings(max_examples=500)
@given(
    st.text(alphabet=st.sampled_from(list("pratemxvgdoucs_(){}:.,<>=!%0123456789 ")), max_size=30)
)
def test_any_text_parses_or_raises_a_threshold_error(text: str) -> None:
    try:
        t = parse_threshold(text)
    except ThresholdError as exc:
        message = str(exc)
        t = None
    if t is None:
        assert "\n" not in message
        return
    assert t.op in ("<", "<=", ">", ">=", "==", "!=")
    assert math.isfinite(t.value)


@settings(max_examples=300)
@given(st.text(max_size=40))
def test_arbitrary_unicode_never_crashes_the_parser(text: str) -> None:
    with contextlib.suppress(ThresholdError):
        parse_threshold(text)


_metrics = st.one_of(
    st.builds(lambda p: f"p({p})", st.sampled_from(["50", "90", "95", "99", "99.9", "100", "0"])),
    st.sampled_from(["avg", "min", "max", "med"]),
)
_families = st.sampled_from(["", "latency.", "service.", "send_lag."])
_ops = st.sampled_from(["<", "<=", ">", ">=", "==", "!="])
_spaces = st.sampled_from(["", " ", "  "])


@settings(max_examples=200)
@given(
    st.tuples(_families, _metrics, _spaces, _ops, _spaces),
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from(["us", "ms", "s", "m", ""]),
)
def test_generated_latency_thresholds_parse_and_round_trip(
    parts: tuple[str, str, str, str, str], number: int, unit: str
) -> None:
    family, metric, s1, op, s2 = parts
    text = f"{family}{metric}{s1}{op}{s2}{number}{unit}"
    t = parse_threshold(text)
    factor = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "": 1.0}[unit]
    assert t.value == pytest.approx(number * factor)
    assert t.op == op
    assert t.family == {"": "response", "latency.": "response"}.get(family, family.rstrip("."))
    again = parse_threshold(t.canonical())
    assert (again.metric, again.family, again.arg, again.op, again.value) == (
        t.metric,
        t.family,
        t.arg,
        t.op,
        t.value,
    )


@settings(max_examples=200)
@given(
    st.sampled_from(["errors", "shed", "timeouts", "dropped", "ok", "failed", "retries"]),
    _ops,
    st.integers(min_value=0, max_value=100),
    st.booleans(),
    st.sampled_from([None, "human"]),
)
def test_generated_rate_thresholds_parse_and_round_trip(
    name: str, op: str, percent: int, as_percent: bool, scope: str | None
) -> None:
    value = f"{percent}%" if as_percent else repr(percent / 100)
    t = parse_threshold(f"rate({name}) {op} {value}", class_name=scope)
    assert t.value == pytest.approx(percent / 100)
    again = parse_threshold(t.canonical())
    assert again.value == pytest.approx(t.value)
    assert (again.arg, again.op, again.class_name) == (name, op, scope)


# -- evaluation ------------------------------------------------------------------------------------


def section(**counts: int) -> dict[str, Any]:
    base = dict.fromkeys(
        ["offered", "sent", "ok", "errors", "shed", "dropped", "timeouts", "retries", "goodput"], 0
    )
    base.update(counts)
    figures = {"p50": 10.0, "p90": 40.0, "p99": 300.0, "p999": 900.0, "max": 1200.0, "mean": 25.0}
    empty = dict.fromkeys(figures)
    return {
        **base,
        "offered_rps": 400.0,
        "throughput_rps": 390.0,
        "goodput_rps": 350.0,
        "latency_ms": figures,
        "service_ms": {**figures, "p99": 50.0},
        "send_lag_ms": empty,
    }


@pytest.mark.parametrize(
    ("text", "observed", "passed"),
    [
        ("p(99) < 300ms", 300.0, False),
        ("p(99) <= 300ms", 300.0, True),
        ("p(99.9) < 1s", 900.0, True),
        ("avg < 20ms", 25.0, False),
        ("med == 10ms", 10.0, True),
        ("max < 1.2s", 1200.0, False),
        ("service.p(99) < 60ms", 50.0, True),
        ("rate(errors) < 1%", 0.01, False),
        ("rate(errors) <= 1%", 0.01, True),
        ("rate(shed) <= 0.05", 0.05, True),
        ("rate(timeouts) < 1%", 0.0, True),
        ("rate(dropped) == 0", 0.02, False),
        ("rate(failed) < 10%", 0.08, True),
        ("rate(retries) < 10%", 50 / 1050, True),
        ("goodput > 95%", 0.9, False),
        ("throughput_rps >= 390", 390.0, True),
        ("goodput_rps > 100", 350.0, True),
        ("offered_rps > 400", 400.0, False),
    ],
)
def test_evaluate_on_a_section(text: str, observed: float, passed: bool) -> None:
    sec = section(
        offered=1000, sent=1050, retries=50, ok=920, errors=10, shed=50, dropped=20, goodput=900
    )
    got, ok = evaluate(parse_threshold(text), sec)
    assert got == pytest.approx(observed)
    assert ok is passed


def test_nothing_to_observe_fails() -> None:
    sec = section()
    for text in ["rate(errors) < 1%", "goodput > 1%", "send_lag.p(99) < 1s", "rate(retries) < 1%"]:
        assert evaluate(parse_threshold(text), sec) == (None, False)


def test_figures_not_stored_need_the_histograms() -> None:
    hist = Histogram()
    for value in range(1, 101):
        hist.record(value * 1000)
    hists = {"response": hist, "service": Histogram(), "send_lag": Histogram()}
    sec = section(offered=100)
    # 95 ms sits in a 64 us wide bucket: its highest equivalent value is 95.039 ms
    assert evaluate(parse_threshold("p(95) < 96ms"), sec, hists) == (95.039, True)
    assert evaluate(parse_threshold("min > 1ms"), sec, hists) == (1.0, False)
    assert evaluate(parse_threshold("service.min > 1ms"), sec, hists) == (None, False)
    with pytest.raises(ThresholdError, match="evaluate_all"):
        evaluate(parse_threshold("p(95) < 96ms"), sec)


@pytest.fixture(scope="module")
def stream() -> list[Req]:
    return make_stream(seed=3, n=3000)


@pytest.fixture(scope="module")
def doc(stream: list[Req]) -> dict[str, Any]:
    return feed(stream, duration_s=14.5)


def _exact_percentile_ms(values: list[int], p: float) -> float:
    hist = Histogram()
    for v in values:
        hist.record(v)
    return hist.value_at_percentile(p) / 1000


def test_evaluate_all_scopes_to_classes_and_endpoints(
    stream: list[Req], doc: dict[str, Any]
) -> None:
    working = copy.deepcopy(doc)
    results = evaluate_all(
        [
            "p(95) < 100s",
            {"expr": "rate(errors) < 50%", "class": "bot"},
            "p(97){class:human,endpoint:search} < 100s",
            {"expr": "p(95) < 100s", "endpoint": "home"},
            parse_threshold("goodput > 0%", endpoint="home"),
        ],
        working,
    )
    assert working["thresholds"] == results
    sent = [r for r in stream if r.outcome != DROPPED]
    assert results[0]["observed"] == _exact_percentile_ms([r.response_us for r in sent], 95)
    bot = [r for r in stream if r.ci == 1]
    assert results[1]["observed"] == pytest.approx(sum(r.outcome == ERROR for r in bot) / len(bot))
    assert results[1]["class"] == "bot"
    search = [r.response_us for r in sent if r.ci == 0 and r.endpoint == "search"]
    assert results[2]["observed"] == _exact_percentile_ms(search, 97)
    assert (results[2]["class"], results[2]["endpoint"]) == ("human", "search")
    # "home" exists in both classes: merged exactly across them
    home = [r for r in stream if r.endpoint == "home"]
    assert results[3]["observed"] == _exact_percentile_ms(
        [r.response_us for r in home if r.outcome != DROPPED], 95
    )
    assert results[4]["observed"] == pytest.approx(sum(r.goodput for r in home) / len(home))
    assert all(r["passed"] for r in results)
    assert set(results[0]) == {"expr", "class", "endpoint", "observed", "passed"}


def test_evaluate_all_refuses_unknown_scopes(doc: dict[str, Any]) -> None:
    with pytest.raises(ThresholdError, match=r"class 'admin' is not in the results \(bot, human\)"):
        evaluate_all([{"expr": "p(99) < 1s", "class": "admin"}], copy.deepcopy(doc))
    with pytest.raises(ThresholdError, match="endpoint 'cart' is not in the results"):
        evaluate_all(["p(99){endpoint:cart} < 1s"], copy.deepcopy(doc))
    with pytest.raises(ThresholdError, match="endpoint 'crawl'"):
        evaluate_all(
            [{"expr": "p(99) < 1s", "class": "human", "endpoint": "crawl"}], copy.deepcopy(doc)
        )
    with pytest.raises(ThresholdError, match="'expr' string"):
        evaluate_all([{"class": "human"}], copy.deepcopy(doc))
    with pytest.raises(ThresholdError, match="a threshold is a string"):
        evaluate_all([42], copy.deepcopy(doc))  # type: ignore[list-item]


def test_thresholds_on_a_recorded_run_with_known_rates() -> None:
    rec = RunRecorder([(CLASSES[0][0], 1.0)])
    ei = rec.endpoint(0, "home")
    outcomes = [OK] * 90 + [ERROR] * 4 + [SHED] * 3 + [TIMEOUT] * 2 + [DROPPED] * 1
    for i, outcome in enumerate(outcomes):
        rec.offered(0)
        if outcome != DROPPED:
            rec.attempt(0, ei, 1000, 10, False)
        rec.request(0, ei, outcome, 1000 if outcome != TIMEOUT else 1_000_000, i / 100)
    doc = rec.finish(
        duration_s=1.0,
        thresholds=[
            "rate(errors) < 5%",
            "rate(shed) <= 3%",
            "rate(timeouts) < 2%",
            "rate(dropped) == 0",
            "goodput >= 90%",
            "throughput_rps >= 97",
        ],
    )
    assert [(t["observed"], t["passed"]) for t in doc["thresholds"]] == [
        (0.04, True),
        (0.03, True),
        (0.02, False),
        (0.01, False),
        (0.9, True),
        (97.0, True),
    ]


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("p(99.999)<300ms", "p(99.999) < 300.0ms"),
        ("rate(errors) < 0.001%", "rate(errors) < 0.00001"),
        ("service.p(99){class:bot} >= 2m", "service.p(99.0){class:bot} >= 120000.0ms"),
        ("goodput_rps > 100rps", "goodput_rps > 100.0"),
    ],
)
def test_canonical_form(text: str, canonical: str) -> None:
    t = parse_threshold(text)
    assert t.canonical() == canonical
    again = parse_threshold(canonical)
    assert (again.metric, again.arg, again.value, again.class_name) == (
        t.metric,
        t.arg,
        t.value,
        t.class_name,
    )


def test_threshold_is_immutable_and_shows_its_fields() -> None:
    t = parse_threshold("p(99) < 300ms", class_name="human")
    with pytest.raises(AttributeError):
        t.value = 1.0  # type: ignore[misc]
    assert "class_name='human'" in repr(t)
    assert isinstance(t, Threshold)
    assert t.unit == "ms"
    assert parse_threshold("goodput > 1%").unit == "ratio"
    assert parse_threshold("goodput_rps > 1").unit == "rps"
