"""Per-request detectors on hand-built request costs (brownout.probe._findings)."""

from __future__ import annotations

from brownout.probe import DbCall, ProbeThresholds, RequestCost
from brownout.probe._findings import compressible, detect_db, detect_response

TH = ProbeThresholds()


def request(*calls: DbCall) -> RequestCost:
    cost = RequestCost("GET", "/p", 0.0, route="/p")
    for call in calls:
        cost.db.append(call)
        seen = cost.db_seen if cost.db_seen is not None else {}
        seen[call.fingerprint] = seen.get(call.fingerprint, 0) + 1
        cost.db_seen = seen
    return cost


def call(fp: str, pk: str | None, d: float, site: str | None = None) -> DbCall:
    return DbCall("sqlite3", fp, pk, d, 0.0, site=site, database="sqlite:x")


def test_n_plus_one_needs_calls_params_and_time() -> None:
    q = "select * from reviews where product_id = ?"
    n_plus_one = request(
        *(call(q, f"p{i}", 0.012, "app.py:9 in view" if i == 1 else None) for i in range(5))
    )
    (finding,) = detect_db(n_plus_one, TH)
    assert finding.kind == "n_plus_one_db"
    assert finding.key == q
    assert finding.endpoint == "GET /p"
    assert finding.evidence["calls"] == 5
    assert finding.evidence["distinct_params"] == 5
    assert finding.evidence["site"] == "app.py:9 in view"
    assert "selectinload" in finding.fix
    assert finding.severity == "warning"
    # fewer than 5 calls, or too fast in total: nothing (Sentry's 5 / 50 ms)
    assert list(detect_db(request(*(call(q, f"p{i}", 0.02) for i in range(4))), TH)) == []
    assert list(detect_db(request(*(call(q, f"p{i}", 0.001) for i in range(9))), TH)) == []


def test_twenty_cheap_queries_with_twenty_parameter_sets_are_an_n_plus_one_anyway() -> None:
    q = "select * from reviews where product_id = ?"
    cheap = request(*(call(q, f"p{i}", 0.0001) for i in range(20)))  # 2 ms in all
    (finding,) = detect_db(cheap, TH)
    assert (finding.kind, finding.severity) == ("n_plus_one_db", "info")
    # 19 cheap ones, or 20 calls over few parameter sets, are not
    assert list(detect_db(request(*(call(q, f"p{i}", 0.0001) for i in range(19))), TH)) == []
    few = request(*(call(q, f"p{i % 5}", 0.0001) for i in range(20)))
    assert [f.kind for f in detect_db(few, TH)] == ["duplicate_query"] * 5


def test_n_plus_one_is_an_error_past_the_slow_query_time() -> None:
    q = "select * from reviews where product_id = ?"
    (finding,) = detect_db(request(*(call(q, f"p{i}", 0.11) for i in range(5))), TH)
    assert finding.severity == "error"


def test_duplicate_query_same_statement_same_parameters() -> None:
    q = "select * from users where id = ?"
    cost = request(call(q, "u1", 0.001), call("select 1", None, 0.001), call(q, "u1", 0.001))
    (finding,) = detect_db(cost, TH)
    assert finding.kind == "duplicate_query"
    assert finding.key == f"{q}|u1"
    assert finding.evidence["calls"] == 2
    assert finding.severity == "info"
    assert "brownout.Cache" in finding.fix


def test_different_parameters_are_not_duplicates() -> None:
    q = "select * from users where id = ?"
    assert list(detect_db(request(call(q, "u1", 0.001), call(q, "u2", 0.001)), TH)) == []


def test_n_plus_one_hides_its_own_duplicates() -> None:
    q = "select * from users where id = ?"
    calls = [call(q, f"u{i % 3}", 0.02) for i in range(6)]
    kinds = [f.kind for f in detect_db(request(*calls), TH)]
    assert kinds == ["n_plus_one_db"]


def test_transaction_control_is_never_a_repeat() -> None:
    statements = ["begin", "commit", "begin;", "rollback;", "set search_path to ?"] * 3
    cost = request(*(call(s, None, 0.02) for s in statements))
    assert list(detect_db(cost, TH)) == []


def test_slow_query_one_per_fingerprint_with_the_worst() -> None:
    q = "select * from big order by x"
    cost = request(call(q, None, 0.6, "a.py:1 in f"), call(q, "k", 0.9, "a.py:2 in g"))
    slow = [f for f in detect_db(cost, TH) if f.kind == "slow_query"]
    assert len(slow) == 1
    assert slow[0].evidence["duration_ms"] == 900.0
    assert slow[0].evidence["slow_calls"] == 2
    assert slow[0].evidence["site"] == "a.py:2 in g"
    assert slow[0].severity == "warning"
    (err,) = detect_db(request(call(q, None, 3.0)), TH)
    assert err.severity == "error"


def test_large_and_uncompressed_responses() -> None:
    cost = RequestCost("GET", "/dump", 0.0, route="/dump", status=200)
    cost.response_bytes = 2 << 20
    cost.content_type = "application/json"
    kinds = sorted((f.kind, f.key) for f in detect_response(cost, TH))
    assert kinds == [("large_response", "large"), ("large_response", "uncompressed")]
    cost.content_encoding = "gzip"
    assert [f.key for f in detect_response(cost, TH)] == ["large"]
    small = RequestCost("GET", "/x", 0.0, status=200)
    small.response_bytes = 200 << 10
    small.content_type = "image/png"
    assert list(detect_response(small, TH)) == []
    small.content_type = "text/html; charset=utf-8"
    (finding,) = detect_response(small, TH)
    assert finding.key == "uncompressed"
    assert "gzip" in finding.fix.lower()


def test_compressible_types() -> None:
    assert compressible("application/json")
    assert compressible("application/problem+json; charset=utf-8")
    assert compressible("text/csv")
    assert not compressible("image/jpeg")
    assert not compressible("")
