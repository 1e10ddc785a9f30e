from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brownout import current_deadline, deadline, deadline_from_headers, deadline_headers, remaining
from brownout.errors import InvalidConfig
from brownout.guard import parse_grpc_timeout
from brownout.testing import MockClock


def test_no_deadline_by_default() -> None:
    assert remaining() is None
    assert current_deadline() is None
    assert deadline_headers() == {}


def test_nested_deadlines_take_the_earliest() -> None:
    clock = MockClock()
    with deadline(5.0, clock=clock):
        with deadline(10.0, clock=clock):
            assert remaining() == 5.0
        with deadline(2.0, clock=clock):
            clock.advance(0.5)
            assert remaining() == 1.5
        assert remaining() == 4.5
    assert remaining() is None


def test_deadline_follows_into_tasks() -> None:
    async def main() -> float | None:
        clock = MockClock()
        with deadline(3.0, clock=clock):
            return await asyncio.create_task(_read())

    async def _read() -> float | None:
        return remaining()

    assert asyncio.run(main()) == 3.0


def test_headers_round_trip_the_remaining_budget() -> None:
    clock = MockClock()
    with deadline(1.2345, clock=clock):
        headers = deadline_headers(grpc=True)
    assert headers == {"brownout-timeout-ms": "1234", "grpc-timeout": "1234m"}
    assert deadline_from_headers(headers) == pytest.approx(1.234)


def test_spent_budget_is_written_as_zero() -> None:
    clock = MockClock()
    with deadline(1.0, clock=clock):
        clock.advance(2.0)
        assert deadline_headers() == {"brownout-timeout-ms": "0"}


def test_reading_headers_takes_the_smallest_budget_from_any_source() -> None:
    asgi = [
        (b"x-envoy-expected-rq-timeout-ms", b"800"),
        (b"grpc-timeout", b"2S"),
        (b"Brownout-Timeout-Ms", b"1500"),
    ]
    assert deadline_from_headers(asgi) == pytest.approx(0.8)
    assert deadline_from_headers({"grpc-timeout": "250m"}) == pytest.approx(0.25)
    assert deadline_from_headers({"content-type": "text/html"}) is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1H", 3600), ("2M", 120), ("3S", 3), ("4m", 0.004), ("5u", 5e-6), ("6n", 6e-9)],
)
def test_grpc_timeout_units(value: str, seconds: float) -> None:
    assert parse_grpc_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "S", "123456789S", "10x", "-1S", "1.5S", "\uff11S"])
def test_malformed_grpc_timeout_is_refused_with_the_value(value: str) -> None:
    with pytest.raises(ValueError, match="grpc-timeout="):
        parse_grpc_timeout(value)


def test_malformed_header_is_ignored_unless_strict() -> None:
    headers = {"brownout-timeout-ms": "soon", "x-envoy-expected-rq-timeout-ms": "900"}
    assert deadline_from_headers(headers) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="brownout-timeout-ms='soon'"):
        deadline_from_headers(headers, strict=True)


@given(
    st.dictionaries(
        st.sampled_from(
            ["brownout-timeout-ms", "grpc-timeout", "x-envoy-expected-rq-timeout-ms", "other"]
        ),
        st.text(max_size=12),
    )
)
def test_header_parser_never_crashes_and_never_returns_a_negative_budget(
    headers: dict[str, str],
) -> None:
    budget = deadline_from_headers(headers)
    assert budget is None or budget >= 0


def test_negative_deadline_is_invalid() -> None:
    with pytest.raises(InvalidConfig, match="deadline: seconds=-1"), deadline(-1):
        pass
