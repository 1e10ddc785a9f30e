"""The ledger: per-endpoint demand distributions, merged findings, the JSON document."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

from brownout.errors import InvalidConfig, ResultsError
from brownout.probe import (
    DEMANDS,
    LEDGER_SCHEMA,
    DbCall,
    Finding,
    HttpCall,
    Ledger,
    ProbeThresholds,
    RequestCost,
)
from brownout.testing import MockClock


def cost(
    route: str = "/items/{id}",
    *,
    wall_s: float = 0.01,
    db: list[DbCall] | None = None,
    http: list[HttpCall] | None = None,
    response_bytes: int = 100,
    status: int = 200,
    method: str = "GET",
) -> RequestCost:
    c = RequestCost(method, route, 0.0, route=route, status=status, wall_s=wall_s)
    c.db = db or []
    c.http = http or []
    c.response_bytes = response_bytes
    return c


def dbcall(
    fp: str = "select * from t where id = ?", pk: str | None = "k1", d: float = 0.001
) -> DbCall:
    return DbCall("sqlite3", fp, pk, d, 0.0, database="sqlite:test.db")


def nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_match_sorted_data_within_the_histogram_precision(seed: int) -> None:
    rng = random.Random(seed)
    ledger = Ledger(clock=MockClock())
    walls = [rng.lognormvariate(-5, 1.0) for _ in range(2000)]
    sizes = [rng.randrange(0, 50_000) for _ in range(2000)]
    for w, size in zip(walls, sizes, strict=True):
        ledger.record(cost(wall_s=w, response_bytes=size))
    stats = ledger.endpoints["GET /items/{id}"]
    assert stats.requests == 2000
    wall = stats.demand("wall_s")
    assert wall.mean == pytest.approx(sum(walls) / len(walls), rel=1e-12)
    assert wall.max == max(walls)
    for p in (50, 95, 99):
        exact_us = round(nearest_rank(walls, p) * 1e6)
        got_us = round(wall.percentile(p) * 1e6)
        assert exact_us <= got_us <= exact_us * (1 + 2**-7) + 1, (p, exact_us, got_us)
        exact_b = nearest_rank([float(s) for s in sizes], p)
        got_b = stats.demand("response_bytes").percentile(p)
        assert exact_b <= got_b <= exact_b * (1 + 2**-7) + 1, (p, exact_b, got_b)


def test_zeros_count_in_the_distribution_before_the_first_non_zero() -> None:
    ledger = Ledger(clock=MockClock())
    for _ in range(9):
        ledger.record(cost())
    ledger.record(cost(db=[dbcall(d=0.004)]))
    db_s = ledger.endpoints["GET /items/{id}"].demand("db_s")
    assert db_s.count == 10
    assert db_s.percentile(50) == 0.0
    assert db_s.percentile(95) == pytest.approx(0.004, rel=0.01)
    assert db_s.mean == pytest.approx(0.0004)


def test_demands_never_seen_allocate_no_histogram() -> None:
    ledger = Ledger(clock=MockClock())
    ledger.record(cost())
    stats = ledger.endpoints["GET /items/{id}"]
    assert stats.demand("pool_wait_s").hist is None
    assert stats.demand("wall_s").hist is not None


def test_dependencies_and_databases_are_kept_per_host_and_label() -> None:
    ledger = Ledger(clock=MockClock())
    h = [
        HttpCall("httpx", "GET", "api:80", "/u/{id}", 200, 0.01, 0.0, 5.0),
        HttpCall("httpx", "GET", "api:80", "/u/{id}", 503, 0.03, 0.0, math.inf),
        HttpCall("httpx", "GET", "pay:443", "/charge", 200, 0.2, 0.0, 5.0),
    ]
    ledger.record(cost(http=h, db=[dbcall(), dbcall(pk="k2")]))
    ledger.record(cost())
    stats = ledger.endpoints["GET /items/{id}"]
    api = stats.dependencies["api:80"]
    assert api.requests == 1
    assert api.calls.total == 2
    assert api.time_s.total == pytest.approx(0.04)
    assert (api.errors, api.no_timeout_calls) == (1, 1)
    assert stats.demand("http_calls").total == 3
    assert stats.demand("http_calls").count == 2
    assert stats.databases["sqlite:test.db"]["calls"] == 2
    assert stats.databases["sqlite:test.db"]["requests"] == 1


def test_findings_merge_by_endpoint_kind_and_key_keeping_the_worst() -> None:
    clock = MockClock()
    ledger = Ledger(clock=clock)

    def finding(total_ms: float, severity: str = "warning") -> Finding:
        return Finding(
            kind="n_plus_one_db",
            key="select 1",
            endpoint="GET /items/{id}",
            severity=severity,
            title=f"{total_ms}",
            evidence={"total_ms": total_ms},
            fix="fix",
        )

    ledger.record(cost(), [finding(60)])
    clock.advance(5)
    ledger.record(cost(), [finding(90)])
    clock.advance(5)
    ledger.record(cost(), [finding(70)])
    (merged,) = ledger.findings()
    assert merged.occurrences == 3
    assert merged.evidence == {"total_ms": 90}
    assert (merged.first_s, merged.last_s) == (0.0, 10.0)
    ledger.record(cost(), [finding(10, severity="error")])
    (merged,) = ledger.findings()
    assert merged.severity == "error"
    assert merged.evidence == {"total_ms": 10}


def test_cache_candidate_across_requests_in_the_window() -> None:
    clock = MockClock()
    th = ProbeThresholds(cache_candidate_min_requests=10, cache_candidate_share=0.2)
    ledger = Ledger(th, clock=clock)
    read = "select name from settings where key = ?"
    found = []
    for i in range(20):
        calls = [dbcall("select * from items where id = ?", pk=f"item{i}")]
        if i % 4 == 0:  # 25% of requests read the same setting
            calls.append(dbcall(read, pk="theme"))
        found += ledger.record(cost(db=calls))
        clock.advance(0.1)
    kinds = [(f.kind, f.evidence["fingerprint"]) for f in found]
    assert kinds == [("cache_candidate", read)]
    (merged,) = [f for f in ledger.findings() if f.kind == "cache_candidate"]
    assert merged.evidence["share"] >= 0.2
    assert merged.key == f"{read}|theme"


def test_cache_candidate_needs_enough_requests_and_share() -> None:
    th = ProbeThresholds(cache_candidate_min_requests=10, cache_candidate_share=0.5)
    ledger = Ledger(th, clock=MockClock())
    for i in range(40):
        calls = [dbcall("select * from items where id = ?", pk=f"item{i}")]
        if i % 4 == 0:
            calls.append(dbcall("select * from settings", pk=None))
        assert list(ledger.record(cost(db=calls))) == []


def test_cache_window_rolls_over() -> None:
    clock = MockClock()
    th = ProbeThresholds(cache_candidate_min_requests=2, cache_candidate_window_s=10)
    ledger = Ledger(th, clock=clock)
    for _ in range(3):
        ledger.record(cost(db=[dbcall("select 1 from t", pk=None)]))
    clock.advance(11)
    for _ in range(3):
        ledger.record(cost(db=[dbcall("select 1 from t", pk=None)]))
    (merged,) = ledger.findings()
    assert merged.occurrences == 2  # once per window


def test_writes_are_not_reads_for_cache_candidates() -> None:
    th = ProbeThresholds(cache_candidate_min_requests=2)
    ledger = Ledger(th, clock=MockClock())
    for _ in range(5):
        assert list(ledger.record(cost(db=[dbcall("update t set n = n + ? where id = ?")]))) == []


def test_endpoints_are_bounded() -> None:
    ledger = Ledger(clock=MockClock(), max_endpoints=3)
    for i in range(10):
        ledger.record(cost(f"/r{i}"))
    assert set(ledger.endpoints) == {"GET /r0", "GET /r1", "GET /r2", "GET (other)"}
    assert ledger.endpoints["GET (other)"].requests == 7


def test_to_dict_is_json_and_round_trips_exactly(tmp_path: Path) -> None:
    clock = MockClock()
    ledger = Ledger(clock=clock, wall=lambda: 1_700_000_000.0)
    ledger.capacity["processes"] = 4
    rng = random.Random(7)
    for i in range(300):
        http = [HttpCall("httpx", "GET", "api:80", "/x", 200, rng.random() / 50, 0.0, 5.0)]
        calls = [dbcall(d=rng.random() / 100) for _ in range(i % 4)]
        ledger.record(
            cost(
                wall_s=rng.random() / 10,
                db=calls,
                http=http if i % 2 else None,
                status=200 + (i % 7 == 0) * 300,
            ),
            [
                Finding(
                    "slow_query", "q", "GET /items/{id}", "warning", "t", {"duration_ms": i}, "f"
                )
            ],
        )
        clock.advance(0.01)
    doc = ledger.to_dict()
    assert doc["schema"] == LEDGER_SCHEMA
    assert doc["version"] == 1
    assert doc["started_at"].startswith("2023-11-14T22:13:20")
    text = json.dumps(doc, allow_nan=False)
    endpoint = doc["endpoints"]["GET /items/{id}"]
    assert set(endpoint["demands"]) == {name for name, _ in DEMANDS}
    assert endpoint["errors"] == endpoint["statuses"]["500"]
    for figure in ("mean", "p50", "p95", "p99", "max", "total", "hist"):
        assert figure in endpoint["demands"]["wall_s"]

    again = Ledger.from_dict(json.loads(text))
    doc2 = again.to_dict()
    for key in ("endpoints", "findings", "capacity", "started_at", "dropped_findings"):
        assert doc2[key] == doc[key], key

    path = tmp_path / "ledger.json"
    ledger.write(path)
    assert json.loads(path.read_text())["endpoints"] == doc["endpoints"]
    assert [p.name for p in tmp_path.iterdir()] == ["ledger.json"]  # no temporary left


def test_merge_adds_counts_and_histograms_exactly() -> None:
    a, b, whole = (Ledger(clock=MockClock()) for _ in range(3))
    rng = random.Random(3)
    for i in range(400):
        c = cost(wall_s=rng.random() / 20, db=[dbcall()] * (i % 3))
        (a if i % 2 else b).record(c)
        whole.record(c)
    a.merge(b)
    mine = a.to_dict()["endpoints"]
    theirs = whole.to_dict()["endpoints"]
    for name in mine:
        for demand in mine[name]["demands"]:
            got, want = mine[name]["demands"][demand], theirs[name]["demands"][demand]
            assert got["hist"] == want["hist"], demand
            assert got["p95"] == want["p95"]
            assert got["total"] == pytest.approx(want["total"])
        assert mine[name]["requests"] == theirs[name]["requests"]


def test_merging_sampled_ledgers_keeps_the_measured_share() -> None:
    """A worker measuring half its 4 requests merged with one measuring all of its 2:
    4 measured of 6, so the merged ledger's sample is 4/6 and 2 are unsampled."""
    a, b = Ledger(clock=MockClock()), Ledger(clock=MockClock())
    a.sample = 0.5
    for _ in range(2):
        a.record(cost())
        a.skip()
    for _ in range(2):
        b.record(cost())
    a.merge(b)
    doc = a.to_dict()
    assert (doc["unsampled"], doc["endpoints"]["GET /items/{id}"]["requests"]) == (2, 4)
    assert doc["sample"] == pytest.approx(4 / 6)


@pytest.mark.parametrize("sample", [0, -1, 1.5, "all", None])
def test_from_dict_rejects_a_sample_that_is_not_a_share(sample: object) -> None:
    doc = Ledger(clock=MockClock()).to_dict()
    with pytest.raises(ResultsError, match="sample"):
        Ledger.from_dict({**doc, "sample": sample})


def test_from_dict_names_the_bad_field() -> None:
    ledger = Ledger(clock=MockClock())
    ledger.record(cost())
    doc = ledger.to_dict()
    with pytest.raises(ResultsError, match="schema"):
        Ledger.from_dict({**doc, "schema": "other"})
    bad = json.loads(json.dumps(doc))
    bad["endpoints"]["GET /items/{id}"]["requests"] = -1
    with pytest.raises(ResultsError, match=r"endpoints\.GET /items/\{id\}\.requests"):
        Ledger.from_dict(bad, source="ledger.json")
    bad = json.loads(json.dumps(doc))
    bad["endpoints"]["GET /items/{id}"]["demands"]["wall_s"]["hist"] = "not a histogram"
    with pytest.raises(ResultsError, match=r"wall_s\.hist"):
        Ledger.from_dict(bad)
    with pytest.raises(ResultsError):
        Ledger.from_dict([])


def test_bad_arguments_are_named() -> None:
    with pytest.raises(InvalidConfig, match="max_endpoints"):
        Ledger(max_endpoints=0)
    with pytest.raises(InvalidConfig, match="capacity_source"):
        Ledger(capacity_source=3)  # type: ignore[arg-type]


def test_process_cpu_is_read_at_most_every_50_ms_and_counts_the_requests_in_between() -> None:
    clock = MockClock()
    readings: list[float] = []

    def cpu_clock() -> float:
        readings.append(0.25 * (len(readings) + 1))  # 0.25 s more CPU at each reading
        return readings[-1]

    ledger = Ledger(clock=clock, cpu_clock=cpu_clock)
    assert "process_cpu" not in ledger.to_dict()["capacity"]
    for _ in range(10):  # the first request reads the clock; the next 9 within 50 ms do not
        ledger.record(cost())
        clock.advance(0.004)
    assert len(readings) == 1
    assert "process_cpu" not in ledger.to_dict()["capacity"]  # nothing to divide yet
    clock.advance(0.02)  # 0.06 s since the first reading
    ledger.record(cost())
    assert len(readings) == 2
    assert ledger.to_dict()["capacity"]["process_cpu"] == {"cpu_s": 0.25, "requests": 10}
    ledger.record(cost())  # too soon to read again: not counted yet
    assert ledger.to_dict()["capacity"]["process_cpu"] == {"cpu_s": 0.25, "requests": 10}
    clock.advance(0.05)
    ledger.record(cost())
    assert ledger.to_dict()["capacity"]["process_cpu"] == {"cpu_s": 0.5, "requests": 12}


def test_a_new_ledger_imports_numpy_before_the_first_batch() -> None:
    """numpy's import takes about 0.1 s: done when the ledger is made, it does not stall
    the event loop in the request that fills the first batch of distributions."""
    code = (
        "import sys\n"
        "from brownout.probe._ledger import Ledger\n"
        "before = 'numpy' in sys.modules\n"
        "Ledger()\n"
        "print(before, 'numpy' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False", "True"]
