from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from results_streams import (
    CLASSES,
    ENDPOINTS,
    SCENARIO,
    STARTED_AT,
    Req,
    feed,
    in_flight_at,
    make_stream,
    row_of,
)

from brownout.errors import InvalidConfig
from brownout.results import (
    DROPPED,
    ERROR,
    OK,
    OUTCOMES,
    SHED,
    TIMEOUT,
    Histogram,
    RunRecorder,
    load_results,
)

DURATION_S = 14.5  # intended starts in [0, 10), responses up to ~4 s, a partial last interval
FIELDS = dict(zip([OK, ERROR, SHED, TIMEOUT, DROPPED], OUTCOMES, strict=True))


@pytest.fixture(scope="module")
def stream() -> list[Req]:
    return make_stream(seed=7, n=6000)


@pytest.fixture(scope="module")
def doc(stream: list[Req]) -> dict[str, Any]:
    return feed(stream, duration_s=DURATION_S)


def truth_counts(reqs: list[Req]) -> dict[str, int]:
    by_outcome = Counter(FIELDS[r.outcome] for r in reqs)
    return {
        "offered": len(reqs),
        "sent": sum(len(r.attempts) for r in reqs),
        "retries": sum(1 for r in reqs for a in r.attempts if a.retry),
        "goodput": sum(1 for r in reqs if r.goodput),
        **{name: by_outcome.get(name, 0) for name in OUTCOMES},
    }


def counts_of(section: dict[str, Any]) -> dict[str, int]:
    return {name: section[name] for name in truth_counts([])}


def reference(values: list[int], digits: int = 3) -> Histogram:
    hist = Histogram(significant_digits=digits)
    for value in values:
        hist.record(value)
    return hist


def check_figures(figures: dict[str, Any], values: list[int]) -> None:
    """Percentiles within 0.1% above the exact order statistics; max and mean likewise."""
    assert values, "test data must not be empty"
    ordered = sorted(values)
    n = len(ordered)
    for name, p in [("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9)]:
        truth_ms = ordered[max(1, math.ceil(p * n / 100 - 1e-9)) - 1] / 1000
        assert truth_ms <= figures[name] <= truth_ms * 1.001 + 0.001, (
            name,
            figures[name],
            truth_ms,
        )
    assert ordered[-1] / 1000 <= figures["max"] <= ordered[-1] / 1000 * 1.001 + 0.001
    assert figures["mean"] == pytest.approx(sum(ordered) / n / 1000, rel=1e-3)
    ref = reference(values)
    assert figures["p99"] == ref.value_at_percentile(99) / 1000
    assert figures["max"] == ref.max / 1000


# -- the summary -----------------------------------------------------------------------------------


def test_summary_counts_equal_the_truth(stream: list[Req], doc: dict[str, Any]) -> None:
    assert counts_of(doc["summary"]) == truth_counts(stream)


def test_rates_are_counts_over_the_duration(stream: list[Req], doc: dict[str, Any]) -> None:
    truth = truth_counts(stream)
    s = doc["summary"]
    assert s["offered_rps"] == pytest.approx(truth["offered"] / DURATION_S)
    assert s["throughput_rps"] == pytest.approx(
        (truth["ok"] + truth["errors"] + truth["shed"]) / DURATION_S
    )
    assert s["goodput_rps"] == pytest.approx(truth["goodput"] / DURATION_S)


def test_goodput_excludes_successes_beyond_the_class_timeout(stream: list[Req]) -> None:
    slow_ok = [r for r in stream if r.outcome == OK and not r.goodput]
    assert slow_ok, "the stream must hold successes slower than their class timeout"
    doc = feed(slow_ok, duration_s=DURATION_S)
    assert doc["summary"]["ok"] == len(slow_ok)
    assert doc["summary"]["goodput"] == 0


def test_latency_is_the_response_time_of_every_sent_request(
    stream: list[Req], doc: dict[str, Any]
) -> None:
    check_figures(
        doc["summary"]["latency_ms"], [r.response_us for r in stream if r.outcome != DROPPED]
    )


def test_service_time_and_send_lag_come_from_attempts(
    stream: list[Req], doc: dict[str, Any]
) -> None:
    check_figures(doc["summary"]["service_ms"], [a.service_us for r in stream for a in r.attempts])
    check_figures(doc["summary"]["send_lag_ms"], [a.lag_us for r in stream for a in r.attempts])


def test_dropped_requests_are_counted_but_not_timed() -> None:
    reqs = [Req(0, "home", 0.1 * i, DROPPED, 0, ()) for i in range(5)]
    doc = feed(reqs, duration_s=2.0)
    assert doc["summary"]["dropped"] == 5
    assert doc["summary"]["sent"] == 0
    assert doc["summary"]["latency_ms"]["p99"] is None


# -- classes and endpoints ---------------------------------------------------------------------------


@pytest.mark.parametrize("ci", [0, 1])
def test_class_sections_equal_the_truth(stream: list[Req], doc: dict[str, Any], ci: int) -> None:
    name, timeout_s = CLASSES[ci]
    mine = [r for r in stream if r.ci == ci]
    section = doc["by_class"][name]
    assert counts_of(section) == truth_counts(mine)
    assert section["timeout_s"] == timeout_s
    check_figures(section["latency_ms"], [r.response_us for r in mine if r.outcome != DROPPED])


@pytest.mark.parametrize(
    ("ci", "endpoint"), [(ci, ep) for ci, eps in ENDPOINTS.items() for ep in eps]
)
def test_endpoint_sections_equal_the_truth(
    stream: list[Req], doc: dict[str, Any], ci: int, endpoint: str
) -> None:
    mine = [r for r in stream if r.ci == ci and r.endpoint == endpoint]
    section = doc["by_endpoint"][f"{CLASSES[ci][0]}/{endpoint}"]
    assert counts_of(section) == truth_counts(mine)
    check_figures(section["service_ms"], [a.service_us for r in mine for a in r.attempts])


def test_class_histograms_are_exact_merges_of_endpoint_histograms(doc: dict[str, Any]) -> None:
    merged = Histogram()
    for key, text in doc["histograms"].items():
        if key.startswith("response/human/"):
            merged.merge(Histogram.decode(text))
    human = doc["by_class"]["human"]["latency_ms"]
    assert human["p99"] == merged.value_at_percentile(99) / 1000
    assert human["p999"] == merged.value_at_percentile(99.9) / 1000


def test_histograms_are_stored_per_family_and_endpoint(doc: dict[str, Any]) -> None:
    expected = {
        f"{family}/{CLASSES[ci][0]}/{ep}"
        for family in ("response", "service", "send_lag")
        for ci, eps in ENDPOINTS.items()
        for ep in eps
    }
    assert set(doc["histograms"]) == expected
    assert all(text.startswith("HISTFAAA") for text in doc["histograms"].values())


# -- the timeline ------------------------------------------------------------------------------------


def test_timeline_sums_equal_the_summary(doc: dict[str, Any]) -> None:
    for name in truth_counts([]):
        assert sum(row[name] for row in doc["timeline"]) == doc["summary"][name], name


def test_timeline_rows_cover_the_run_at_the_interval(doc: dict[str, Any]) -> None:
    rows = doc["timeline"]
    assert [row["t_s"] for row in rows] == [float(k) for k in range(15)]
    assert [row["dt_s"] for row in rows] == [1.0] * 14 + [0.5]


def test_timeline_rows_place_each_event_in_its_interval(
    stream: list[Req], doc: dict[str, Any]
) -> None:
    rows = doc["timeline"]
    for k, row in enumerate(rows):
        done_here = [r for r in stream if row_of(r.done_s, 1.0) == k]
        assert row["offered"] == sum(1 for r in stream if math.floor(r.intended_s) == k)
        assert row["sent"] == sum(
            1 for r in stream for a in r.attempts if math.floor(a.done_s) == k
        )
        assert row["retries"] == sum(
            1 for r in stream for a in r.attempts if a.retry and math.floor(a.done_s) == k
        )
        for code, name in FIELDS.items():
            assert row[name] == sum(1 for r in done_here if r.outcome == code), (k, name)
        assert row["goodput"] == sum(1 for r in done_here if r.goodput)


def test_timeline_latency_is_read_from_a_two_digit_histogram_per_row(
    stream: list[Req], doc: dict[str, Any]
) -> None:
    for k, row in enumerate(doc["timeline"]):
        values = [
            r.response_us for r in stream if r.outcome != DROPPED and row_of(r.done_s, 1.0) == k
        ]
        if not values:
            assert row["latency_p99_ms"] is None
            continue
        ref = reference(values, digits=2)
        assert row["latency_p50_ms"] == ref.value_at_percentile(50) / 1000
        assert row["latency_p99_ms"] == ref.value_at_percentile(99) / 1000
        assert row["latency_max_ms"] == ref.max / 1000
        assert Histogram.decode(row["histograms"]["response"]) == ref


def test_timeline_send_lag_p99_per_row(stream: list[Req], doc: dict[str, Any]) -> None:
    for k, row in enumerate(doc["timeline"]):
        lags = [a.lag_us for r in stream for a in r.attempts if math.floor(a.done_s) == k]
        expected = reference(lags, digits=2).value_at_percentile(99) / 1000 if lags else None
        assert row["send_lag_p99_ms"] == expected


def test_in_flight_is_the_sample_taken_at_each_flush(
    stream: list[Req], doc: dict[str, Any]
) -> None:
    rows = doc["timeline"]
    for k, row in enumerate(rows[:-1]):
        assert row["in_flight"] == in_flight_at(stream, k + 1.0)
    assert rows[-1]["in_flight"] is None  # closed by finish, nobody sampled it


def test_flush_returns_the_rows_it_closes() -> None:
    rec = RunRecorder([("human", 1.0)])
    ei = rec.endpoint(0, "home")
    rec.offered(0)
    rec.attempt(0, ei, 1000, 10, False)
    rec.request(0, ei, OK, 1200, 0.2)
    assert rec.flush(0.5) == []  # no boundary passed
    (row,) = rec.flush(1.0, in_flight=3)
    assert (row["t_s"], row["offered"], row["ok"], row["in_flight"]) == (0.0, 1, 1, 3)
    rows = rec.flush(3.0)  # a late flush closes every interval that ended
    assert [r["t_s"] for r in rows] == [1.0, 2.0]


def test_a_request_completing_after_the_boundary_waits_for_its_interval() -> None:
    """The engine flushes a little late: a request recorded before flush(1.0) but completing
    at 1.004 s belongs to the second interval."""
    rec = RunRecorder([("human", 1.0)])
    ei = rec.endpoint(0, "home")
    rec.request(0, ei, OK, 5000, 0.999)  # completes at 1.004
    rec.request(0, ei, OK, 1000, 0.5)
    (first,) = rec.flush(1.0)
    (second,) = rec.flush(2.0)
    assert (first["ok"], second["ok"]) == (1, 1)


def test_a_request_of_a_closed_interval_goes_to_the_first_open_one() -> None:
    rec = RunRecorder([("human", 1.0)])
    ei = rec.endpoint(0, "home")
    rec.flush(2.0)
    rec.request(0, ei, OK, 1000, 0.3)  # completed at 0.301, reported after the rows closed
    doc = rec.finish(duration_s=3.0)
    assert [row["ok"] for row in doc["timeline"]] == [0, 0, 1]


def test_finish_without_flushes_closes_every_interval_holding_data() -> None:
    rec = RunRecorder([("human", 5.0)], interval_s=0.5)
    ei = rec.endpoint(0, "home")
    rec.request(0, ei, OK, 2_000_000, 0.1)  # completes at 2.1 s
    doc = rec.finish(duration_s=1.2)
    rows = doc["timeline"]
    assert [row["t_s"] for row in rows] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert rows[-1]["ok"] == 1
    assert rows[2]["dt_s"] == pytest.approx(0.2)  # the run's last partial interval


@settings(max_examples=25, deadline=None)
@given(
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=0, max_value=300),
    st.sampled_from([0.25, 0.5, 1.0, 2.0]),
)
def test_conservation_on_any_stream(seed: int, n: int, interval_s: float) -> None:
    """Whatever the stream and interval: timeline sums equal the summary, classes add up to
    it, and offered equals the outcomes once every request resolved."""
    reqs = make_stream(seed, n)
    doc = feed(reqs, duration_s=DURATION_S, interval_s=interval_s)
    s = doc["summary"]
    for name in truth_counts([]):
        assert sum(row[name] for row in doc["timeline"]) == s[name]
        assert sum(sec[name] for sec in doc["by_class"].values()) == s[name]
        assert sum(sec[name] for sec in doc["by_endpoint"].values()) == s[name]
    assert s["offered"] == sum(s[name] for name in OUTCOMES) == n


# -- the document ----------------------------------------------------------------------------------


def test_the_document_carries_the_run(doc: dict[str, Any]) -> None:
    assert doc["schema_version"] == 1
    assert doc["kind"] == "load"
    assert doc["scenario"] == {"name": "synthetic", "spec": SCENARIO}
    assert doc["started_at"] == STARTED_AT
    assert (doc["duration_s"], doc["interval_s"]) == (DURATION_S, 1.0)
    assert (doc["thresholds"], doc["faults"], doc["server"]) == ([], [], {})
    assert load_results(doc) == doc  # it validates


def test_finish_evaluates_thresholds_and_stores_faults(stream: list[Req]) -> None:
    faults = [{"kind": "latency", "target": "db", "start_s": 2.0, "end_s": 4.0}]
    doc = feed(
        stream,
        duration_s=DURATION_S,
        thresholds=["rate(dropped) == 0", {"expr": "p(99) < 10s", "class": "bot"}],
        faults=faults,
    )
    assert doc["faults"] == faults
    assert [(t["expr"], t["class"], t["passed"]) for t in doc["thresholds"]] == [
        ("rate(dropped) == 0", None, False),
        ("p(99) < 10s", "bot", True),
    ]


def test_snapshot_shows_the_run_so_far_without_ending_it() -> None:
    rec = RunRecorder([("human", 1.0)])
    ei = rec.endpoint(0, "home")
    rec.offered(0, 2)
    rec.request(0, ei, OK, 1000, 0.1)
    rec.flush(1.0)
    snap = rec.snapshot(1.0)
    assert (snap["summary"]["offered"], snap["summary"]["ok"], len(snap["timeline"])) == (2, 1, 1)
    rec.request(0, ei, ERROR, 1000, 1.1)
    doc = rec.finish(duration_s=2.0)
    assert (doc["summary"]["ok"], doc["summary"]["errors"]) == (1, 1)


def test_durations_are_clipped_never_raised() -> None:
    rec = RunRecorder([("human", 1.0)], highest_trackable_value=1_000_000)
    ei = rec.endpoint(0, "home")
    rec.attempt(0, ei, -5, 2_000_000, False)
    rec.request(0, ei, TIMEOUT, 5_000_000, 0.0)
    doc = rec.finish(duration_s=6.0)
    assert rec.overflow == 2
    assert doc["summary"]["service_ms"]["max"] == 0.0
    assert doc["summary"]["latency_ms"]["max"] == pytest.approx(1000.0, rel=1e-3)


def test_many_endpoints_grow_the_tables() -> None:
    rec = RunRecorder([("human", 1.0)])
    ids = [rec.endpoint(0, f"e{i}") for i in range(11)]
    assert ids == list(range(11))
    assert rec.endpoint(0, "e3") == 3
    for i, ei in enumerate(ids):
        rec.request(0, ei, OK, 100 * (i + 1), 0.0)  # below 2048 us: recorded exactly
    doc = rec.finish(duration_s=1.0)
    assert [doc["by_endpoint"][f"human/e{i}"]["latency_ms"]["max"] for i in range(11)] == [
        100 * (i + 1) / 1000 for i in range(11)
    ]


def test_classes_can_be_added_after_construction() -> None:
    rec = RunRecorder(interval_s=0.5, kind="sim")
    assert rec.add_class("human", 2.0) == 0
    assert rec.add_class("bot", 1.0) == 1
    ei = rec.endpoint(1, "crawl")
    rec.request(1, ei, SHED, 100, 0.0)
    doc = rec.finish(duration_s=0.5)
    assert doc["kind"] == "sim"
    assert doc["by_class"]["bot"]["shed"] == 1
    assert doc["by_endpoint"]["bot/crawl"]["shed"] == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"interval_s": 0}, "interval_s"),
        ({"kind": "real"}, "kind"),
        ({"significant_digits": 6}, "significant_digits"),
        ({"timeline_digits": 0}, "significant_digits"),
        ({"classes": [("a/b", 1.0)]}, "class name"),
        ({"classes": [("a", 0)]}, "timeout_s"),
        ({"classes": [("a", 1.0), ("a", 2.0)]}, "class name"),
        ({"classes": ["a"]}, "classes"),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidConfig, match=match):
        RunRecorder(**kwargs)


def test_unknown_class_or_bad_ids_are_refused() -> None:
    rec = RunRecorder([("human", 1.0)])
    with pytest.raises(InvalidConfig, match="ci"):
        rec.endpoint(3, "home")
    with pytest.raises(InvalidConfig, match="endpoint name"):
        rec.endpoint(0, "")
    rec.request(0, 9, OK, 10, 0.0)  # the hot path does not check; the fold does
    with pytest.raises(InvalidConfig, match="endpoint"):
        rec.flush(1.0)
    rec.endpoint(0, "home")
    rec.request(0, 0, 7, 10, 0.0)
    with pytest.raises(InvalidConfig, match="outcome"):
        rec.flush(2.0)


def test_large_batches_fold_in_blocks() -> None:
    """More events than one fold block between two flushes."""
    rec = RunRecorder([("human", 10.0)])
    ei = rec.endpoint(0, "home")
    values = np.random.default_rng(1).integers(0, 3_000_000, 30_000).tolist()
    for v in values:
        rec.attempt(0, ei, v, 5, False)
        rec.request(0, ei, OK, v, 0.0)
    doc = rec.finish(duration_s=10.0)
    assert doc["summary"]["ok"] == doc["summary"]["sent"] == 30_000
    assert Histogram.decode(doc["histograms"]["response/human/home"]) == reference(values)
