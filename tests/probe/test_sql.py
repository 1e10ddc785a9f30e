"""SQL fingerprints and parameter keys (brownout.probe._sql)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brownout.probe import fingerprint, params_key
from brownout.probe._sql import Fingerprinter


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "SELECT * FROM reviews WHERE product_id = 42 AND note > 3.5  -- hot path",
            "select * from reviews where product_id = ? and note > ?",
        ),
        ("select 'it''s', E'a\\'b', N'x', X'ff', 0x1F, 1e-3", "select ?, ?, ?, ?, ?, ?"),
        ("select $$body$$, $tag$ a $ b $tag$, 1", "select ?, ?, ?"),
        ("select a from t where b = TRUE and c = false and d is NULL", None),
        ("SELECT a.id, count(*) FROM t AS a /* note */ GROUP BY a.id", None),
        ("select x::int from t", "select x::int from t"),
        ('SELECT "Name" FROM "Shop"."Orders"', 'select "Name" from "Shop"."Orders"'),
    ],
)
def test_literals_comments_and_case(sql: str, expected: str | None) -> None:
    got = fingerprint(sql)
    if expected is not None:
        assert got == expected
    assert "'" not in got.replace('"', "")
    assert "--" not in got
    assert "/*" not in got


def test_booleans_become_placeholders_and_null_is_kept() -> None:
    assert fingerprint("select a from t where b = TRUE and d is NULL") == (
        "select a from t where b = ? and d is null"
    )


def test_every_placeholder_style_is_one() -> None:
    shapes = {
        fingerprint(q)
        for q in (
            "select * from t where id = ?",
            "select * from t where id = $1",
            "select * from t where id = :id",
            "select * from t where id = %s",
            "select * from t where id = %(id)s",
            "select * from t where id = 17",
            "SELECT *\n  FROM t\n WHERE id = 'x'",
        )
    }
    assert shapes == {"select * from t where id = ?"}


def test_in_lists_of_any_length_collapse() -> None:
    a = fingerprint("select * from t where id in (1, 2, 3)")
    b = fingerprint("select * from t where id IN ($1,$2)")
    c = fingerprint("select * from t where id in (?)")
    assert a == b == c == "select * from t where id in (?...)"


def test_in_subquery_is_kept() -> None:
    assert fingerprint("select * from t where id in (select id from u where x = 3)") == (
        "select * from t where id in (select id from u where x = ?)"
    )


def test_values_rows_collapse() -> None:
    one = fingerprint("INSERT INTO t(a, b) VALUES (1, 'x')")
    many = fingerprint("insert into t (a,b) values (1, 'x'), (2, NULL), (3, 'z')")
    assert one == many == "insert into t(a, b) values (?...)"  # spacing is canonical too


def test_unterminated_input_does_not_raise() -> None:
    for sql in ("select 'open", "select /* open", 'select "open', "select $$ open", ""):
        assert isinstance(fingerprint(sql), str)


def test_fingerprinter_caches_and_stays_bounded() -> None:
    fp = Fingerprinter(max_entries=3)
    first = fp("select 1")
    assert fp("select 1") is first
    for i in range(10):
        fp(f"select {i} from t{i}")
    assert len(fp) <= 3
    assert fp("select 2 from t2") == "select ? from t2"


def test_params_key() -> None:
    assert params_key(None) is None
    assert params_key(()) is None
    assert params_key({}) is None
    assert params_key((1, "a")) == params_key((1, "a"))
    assert params_key((1, "a")) != params_key((2, "a"))
    assert len(params_key([1]) or "") == 16

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    assert params_key(Broken()) == params_key(Broken())


_PIECES = st.sampled_from(
    [
        *"ab1 ().,;:?$%'\"`-/*\\eExX_=<>!|#@\n\t[]",
        "in",
        "IN",
        "values",
        "select",
        "(?...)",
        "::",
        "--",
        "/*",
        "*/",
        "$$",
        "$1",
        "null",
        "true",
        "0x1",
        "İ",
        "é",
        "٣",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, max_size=40).map("".join))
def test_fingerprint_is_idempotent_on_sql_like_text(sql: str) -> None:
    once = fingerprint(sql)
    assert fingerprint(once) == once


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_fingerprint_never_raises_and_is_idempotent(sql: str) -> None:
    once = fingerprint(sql)
    assert fingerprint(once) == once
