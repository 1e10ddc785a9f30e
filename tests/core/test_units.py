from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brownout.errors import ScenarioError
from brownout.units import (
    format_duration,
    parse_duration,
    parse_percent,
    parse_rate,
    parse_size,
)


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        ("500ms", 0.5),
        ("2s", 2.0),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("250us", 250e-6),
        ("250µs", 250e-6),
        ("1m30s", 90.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("2", 2.0),
        (" 2 s ", 2.0),
        ("2sec", 2.0),
        ("2min", 120.0),
        ("1e3ms", 1.0),
        ("2S", 2.0),
        ("0", 0.0),
        (3, 3.0),
        (1.5, 1.5),
        (0, 0.0),
    ],
)
def test_parse_duration_reads_units(given: object, seconds: float) -> None:
    assert parse_duration(given) == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize(
    "given",
    [
        "3x",
        "",
        "ms",
        "s2",
        "1 m 3",
        "2ss",
        "1m-30s",
        "1e400s",
        "nan",
        True,
        None,
        [],
        {},
        math.nan,
        math.inf,
        10**400,
    ],
)
def test_parse_duration_rejects_what_is_not_a_duration(given: object) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_duration(given, field="classes[0].stages[1].duration")
    err = info.value
    assert err.field == "classes[0].stages[1].duration"
    assert err.value is given or err.value == given
    assert str(err).startswith("classes[0].stages[1].duration=")
    assert "\n" not in str(err)


def test_duration_error_message_names_field_value_and_units() -> None:
    with pytest.raises(
        ScenarioError,
        match=r"^d='3x' is not a duration; use a number with a unit such as 500ms, 2s, 1m",
    ):
        parse_duration("3x", field="d")


@pytest.mark.parametrize("given", ["-1s", -0.5, "-2"])
def test_parse_duration_rejects_negative(given: object) -> None:
    with pytest.raises(ScenarioError, match=">= 0"):
        parse_duration(given)


def test_errors_are_value_errors_with_data() -> None:
    with pytest.raises(ValueError) as info:
        parse_rate("fast", field="rate")
    assert isinstance(info.value, ScenarioError)
    assert info.value.allowed.startswith("a number per second")


@pytest.mark.parametrize(
    ("given", "per_s"),
    [
        (500, 500.0),
        (2.5, 2.5),
        ("500", 500.0),
        ("500/s", 500.0),
        ("30/m", 0.5),
        ("60/min", 1.0),
        ("7200/h", 2.0),
        ("10/100ms", 100.0),
        ("1/2s", 0.5),
        (" 5 / s ", 5.0),
        (0, 0.0),
    ],
)
def test_parse_rate(given: object, per_s: float) -> None:
    assert parse_rate(given) == pytest.approx(per_s, rel=1e-12)


@pytest.mark.parametrize(
    "given", ["fast", "5/x", "5/0s", "5 rps", "/s", True, None, math.inf, "1e999"]
)
def test_parse_rate_rejects_garbage(given: object) -> None:
    with pytest.raises(ScenarioError, match="is not a rate"):
        parse_rate(given, field="classes[0].rate")


@pytest.mark.parametrize("given", [-1, "-5/s"])
def test_parse_rate_rejects_negative(given: object) -> None:
    with pytest.raises(ScenarioError, match="rate >= 0"):
        parse_rate(given)


@pytest.mark.parametrize(
    ("given", "size"),
    [
        ("10KB", 10_000),
        ("1MiB", 1_048_576),
        ("2GiB", 2 * 1024**3),
        ("3MB", 3_000_000),
        ("1.5KB", 1500),
        ("512B", 512),
        ("512", 512),
        ("4kib", 4096),
        (1024, 1024),
        (0, 0),
    ],
)
def test_parse_size(given: object, size: int) -> None:
    assert parse_size(given) == size
    assert isinstance(parse_size(given), int)


@pytest.mark.parametrize("given", ["10XB", "KB", "-1KB", -3, True, "1e400KB"])
def test_parse_size_rejects(given: object) -> None:
    with pytest.raises(ScenarioError):
        parse_size(given, field="faults[0].bytes")


@pytest.mark.parametrize(
    ("given", "fraction"),
    [
        ("1%", 0.01),
        ("0.5%", 0.005),
        ("100%", 1.0),
        (0.01, 0.01),
        ("0.25", 0.25),
        (1, 1.0),
        (0, 0.0),
    ],
)
def test_parse_percent(given: object, fraction: float) -> None:
    assert parse_percent(given) == pytest.approx(fraction, rel=1e-12)


@pytest.mark.parametrize("given", ["101%", 2, -0.1, "x%", "%", True, math.nan])
def test_parse_percent_rejects(given: object) -> None:
    with pytest.raises(ScenarioError):
        parse_percent(given, field="faults[0].probability")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (250e-6, "250us"),
        (0.0125, "12.5ms"),
        (0.5, "500ms"),
        (2, "2s"),
        (1.5, "1.5s"),
        (60, "1m"),
        (90.5, "1m30.5s"),
        (5400, "1h30m"),
        (7205, "2h5s"),
        (-2, "-2s"),
        (math.inf, "inf"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.floats(min_value=1e-6, max_value=1e7))
def test_format_duration_reads_back(seconds: float) -> None:
    back = parse_duration(format_duration(seconds))
    if seconds < 60:
        assert back == pytest.approx(seconds, rel=6e-4)  # 4 significant digits
    else:
        assert back == pytest.approx(seconds, abs=5e-4)  # whole milliseconds


@given(st.one_of(st.text(max_size=20), st.integers(), st.floats(), st.booleans(), st.none()))
def test_parsers_raise_only_scenario_errors(value: object) -> None:
    for parse in (parse_duration, parse_rate, parse_size, parse_percent):
        failure: ScenarioError | None = None
        try:
            parse(value, field="x")
        except ScenarioError as err:
            failure = err
        if failure is not None:
            assert failure.field == "x"
            assert len(str(failure).splitlines()) == 1
