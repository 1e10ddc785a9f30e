from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader
from results_streams import CLASSES, Req, feed, make_stream

from brownout.errors import ResultsError
from brownout.results import (
    HOUR_US,
    Histogram,
    RunRecorder,
    _document,
    load_results,
    merge_results,
    timeline_intervals,
    write_results,
    write_timeline_log,
)

DURATION_S = 14.5
THRESHOLDS = [
    "p(99) < 2s",
    "p(95) < 1500ms",
    {"expr": "rate(errors) < 10%", "class": "human"},
    {"expr": "goodput > 80%", "endpoint": "home"},
]
FAULTS = [{"kind": "latency", "target": "db", "start_s": 2.0, "end_s": 4.0}]


@pytest.fixture(scope="module")
def stream() -> list[Req]:
    return make_stream(seed=11, n=5000)


@pytest.fixture(scope="module")
def doc(stream: list[Req]) -> dict[str, Any]:
    return feed(stream, duration_s=DURATION_S, thresholds=THRESHOLDS, faults=FAULTS)


# -- merging ---------------------------------------------------------------------------------------


def test_merging_two_halves_equals_recording_everything_in_one(
    stream: list[Req], doc: dict[str, Any]
) -> None:
    """Two workers, each with every other request (as segments of one schedule split it)."""
    halves = [
        feed(stream[i::2], duration_s=DURATION_S, thresholds=THRESHOLDS, faults=FAULTS)
        for i in range(2)
    ]
    merged = merge_results(halves)
    assert merged == doc


def test_merging_in_any_order_and_grouping_gives_the_same_document(stream: list[Req]) -> None:
    parts = [feed(stream[i::3], duration_s=DURATION_S) for i in range(3)]
    a = merge_results([merge_results(parts[:2]), parts[2]])
    b = merge_results([parts[2], parts[1], parts[0]])
    assert a == b


def test_merged_percentiles_are_not_averages(stream: list[Req]) -> None:
    fast = [r for r in stream if r.response_us < 50_000]
    slow = [r for r in stream if r.response_us >= 50_000]
    docs = [feed(fast, duration_s=DURATION_S), feed(slow, duration_s=DURATION_S)]
    merged = merge_results(docs)
    whole = feed(fast + slow, duration_s=DURATION_S)
    assert merged["summary"]["latency_ms"] == whole["summary"]["latency_ms"]
    averaged = (
        docs[0]["summary"]["latency_ms"]["p50"] + docs[1]["summary"]["latency_ms"]["p50"]
    ) / 2
    assert merged["summary"]["latency_ms"]["p50"] != averaged


def test_merge_reads_files(tmp_path: Path, doc: dict[str, Any]) -> None:
    path = tmp_path / "a.json"
    write_results(path, doc)
    merged = merge_results([path, str(path)])
    assert merged["summary"]["ok"] == 2 * doc["summary"]["ok"]
    assert merged["summary"]["latency_ms"] == doc["summary"]["latency_ms"]


def test_merge_refuses_documents_of_different_kinds(stream: list[Req]) -> None:
    a = feed(stream[:50], duration_s=DURATION_S)
    b = feed(stream[50:100], duration_s=DURATION_S, kind="sim")
    with pytest.raises(ResultsError, match=r"documents\[1\]\.kind='sim'"):
        merge_results([a, b])


def test_merge_refuses_documents_of_different_intervals(stream: list[Req]) -> None:
    a = feed(stream[:50], duration_s=DURATION_S)
    b = feed(stream[50:100], duration_s=DURATION_S, interval_s=0.5)
    with pytest.raises(ResultsError, match=r"documents\[1\]\.interval_s=0\.5 .* must be 1\.0"):
        merge_results([a, b])


def test_merge_refuses_classes_with_different_timeouts(doc: dict[str, Any]) -> None:
    other = copy.deepcopy(doc)
    other["by_class"]["human"]["timeout_s"] = 9.0
    with pytest.raises(ResultsError, match="timeout_s"):
        merge_results([doc, other])


def test_merge_refuses_nothing() -> None:
    with pytest.raises(ResultsError, match="at least one"):
        merge_results([])


def test_merge_keeps_the_earliest_start_and_longest_duration(doc: dict[str, Any]) -> None:
    later = copy.deepcopy(doc)
    later["started_at"] = "2026-01-02T03:05:00+00:00"
    later["duration_s"] = 20.0
    merged = merge_results([later, doc])
    assert merged["started_at"] == doc["started_at"]
    assert merged["duration_s"] == 20.0
    assert merged["summary"]["offered_rps"] == pytest.approx(2 * doc["summary"]["offered"] / 20.0)


# -- validation ------------------------------------------------------------------------------------


def _set(doc: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    bad = copy.deepcopy(doc)
    target = bad
    for key in path[:-1]:
        target = target[key]
    if value is _document:  # sentinel: delete
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return bad


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["schema_version"], 2, "schema_version=2 is not allowed"),
        (["kind"], "real", "kind='real' is not allowed; kind must be one of 'load', 'sim'"),
        (["summary", "ok"], -1, "summary.ok=-1 is not allowed; summary.ok must be an integer >= 0"),
        (["summary", "ok"], 1.5, "summary.ok=1.5"),
        (["summary", "ok"], _document, "summary.ok='<missing>' is not allowed"),
        (["summary", "latency_ms", "p99"], "fast", "summary.latency_ms.p99='fast'"),
        (["by_class", "human", "timeout_s"], None, "by_class.human.timeout_s=None"),
        (["by_endpoint", "human/home", "shed"], True, "by_endpoint.human/home.shed=True"),
        (["timeline", 3, "t_s"], 1.0, r"timeline\[3\].t_s=1.0 .* greater than the previous"),
        (["timeline", 2, "in_flight"], -4, r"timeline\[2\].in_flight=-4"),
        (["timeline", 2, "histograms", "response"], "nope", r"timeline\[2\].histograms.response"),
        (
            ["histograms", "response/human/home"],
            "HISTFAAAxx",
            "histograms\\['response/human/home'\\]",
        ),
        (["histograms", "response/human/home"], _document, "present for every endpoint"),
        (["started_at"], "yesterday", "started_at='yesterday'"),
        (["interval_s"], 0, "interval_s=0 .* a number > 0"),
        (["thresholds", 0, "passed"], "yes", r"thresholds\[0\].passed='yes'"),
        (["faults"], {}, "faults={} is not allowed; faults must be a list"),
        (["server"], [], "server=\\[\\] is not allowed"),
        (["scenario", "spec"], "x", "scenario.spec='x'"),
    ],
)
def test_load_results_names_the_bad_field(
    doc: dict[str, Any], path: list[Any], value: Any, message: str
) -> None:
    with pytest.raises(ResultsError, match=message) as info:
        load_results(_set(doc, path, value))
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("results: ")


def test_load_results_refuses_an_endpoint_of_an_unknown_class(doc: dict[str, Any]) -> None:
    bad = copy.deepcopy(doc)
    bad["by_endpoint"]["ghost/home"] = bad["by_endpoint"]["human/home"]
    with pytest.raises(ResultsError, match=r"by_endpoint\['ghost/home'\]"):
        load_results(bad)


def test_load_results_refuses_a_stray_histogram(doc: dict[str, Any]) -> None:
    bad = copy.deepcopy(doc)
    bad["histograms"]["latency/human/home"] = bad["histograms"]["response/human/home"]
    with pytest.raises(ResultsError, match="latency/human/home"):
        load_results(bad)


def test_load_results_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"schema_version": 1,\n "kind": ')
    with pytest.raises(ResultsError, match=r"results .*broken.json: document='line 2 column 10'"):
        load_results(path)
    with pytest.raises(ResultsError, match="readable file"):
        load_results(tmp_path / "missing.json")
    path.write_text("[]")
    with pytest.raises(
        ResultsError, match="document=\\[\\] is not allowed; document must be an object"
    ):
        load_results(path)


def test_load_results_accepts_extra_fields(doc: dict[str, Any]) -> None:
    extra = copy.deepcopy(doc)
    extra["notes"] = "from the future"
    assert load_results(extra)["notes"] == "from the future"


# -- writing ---------------------------------------------------------------------------------------


def test_write_then_load_round_trips(tmp_path: Path, doc: dict[str, Any]) -> None:
    path = tmp_path / "out" / "results.json"
    path.parent.mkdir()
    write_results(path, doc)
    assert load_results(path) == doc
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]


def test_write_is_atomic_when_it_fails_half_way(
    tmp_path: Path, doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "results.json"
    write_results(path, doc)
    before = path.read_bytes()

    def broken_dump(obj: Any, fh: Any, **kwargs: Any) -> None:
        fh.write('{"schema_version": 1, "ki')
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        write_results(path, doc)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_write_refuses_an_invalid_document(tmp_path: Path, doc: dict[str, Any]) -> None:
    with pytest.raises(ResultsError, match="kind"):
        write_results(tmp_path / "x.json", {**doc, "kind": "nope"})
    assert not (tmp_path / "x.json").exists()


# -- interval log ----------------------------------------------------------------------------------


def test_timeline_log_is_read_by_the_hdrhistogram_package(
    tmp_path: Path, doc: dict[str, Any]
) -> None:
    buffer = io.StringIO()
    lines = write_timeline_log(buffer, doc)
    assert lines == 2 * len(doc["timeline"])
    path = tmp_path / "run.hlog"
    path.write_text(buffer.getvalue())
    reader = HistogramLogReader(str(path), HdrHistogram(1, HOUR_US, 2))
    read = []
    while (hist := reader.get_next_interval_histogram()) is not None:
        read.append(hist)
    reader.close()
    responses = [h for h in read if h.get_tag() == "response"]
    assert len(responses) == len(doc["timeline"])
    for hist, row in zip(responses, doc["timeline"], strict=True):
        sent = row["ok"] + row["errors"] + row["shed"] + row["timeouts"]
        assert hist.get_total_count() == sent
        if sent:
            assert hist.get_value_at_percentile(50) / 1000 == row["latency_p50_ms"]
    assert reader.start_time_sec == pytest.approx(1767323045.0)  # doc["started_at"]


def test_timeline_intervals_refuse_an_unknown_family(doc: dict[str, Any]) -> None:
    with pytest.raises(ResultsError, match="family"):
        timeline_intervals(doc, family="service")
    first = timeline_intervals(doc)[0]
    assert (first.start_s, first.length_s, first.tag) == (0.0, 1.0, "response")
    assert isinstance(first.histogram, Histogram)


def test_an_empty_run_still_gives_a_valid_document() -> None:
    rec = RunRecorder([(name, t) for name, t in CLASSES])
    doc = rec.finish(duration_s=0.0)
    assert load_results(doc) == doc
    assert doc["summary"]["latency_ms"]["p50"] is None
    assert doc["timeline"] == []
    assert merge_results([doc, doc])["summary"]["offered"] == 0


def test_a_document_survives_json(doc: dict[str, Any]) -> None:
    text = json.dumps(doc, allow_nan=False)
    assert load_results(json.loads(text)) == doc
