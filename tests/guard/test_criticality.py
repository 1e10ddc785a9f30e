from __future__ import annotations

import asyncio
import re

import pytest

from brownout.errors import InvalidConfig
from brownout.guard._criticality import (
    CRITICALITY_HEADER,
    Criticality,
    criticality,
    criticality_from_headers,
    criticality_headers,
    current_criticality,
)


def test_the_order_is_the_shedding_order() -> None:
    assert (
        Criticality.SHEDDABLE
        < Criticality.SHEDDABLE_PLUS
        < Criticality.CRITICAL
        < Criticality.CRITICAL_PLUS
    )
    assert sorted(Criticality, reverse=True)[0] is Criticality.CRITICAL_PLUS
    assert [int(c) for c in Criticality] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("critical_plus", Criticality.CRITICAL_PLUS),
        ("CRITICAL-PLUS", Criticality.CRITICAL_PLUS),
        ("Critical Plus", Criticality.CRITICAL_PLUS),
        ("criticalplus", Criticality.CRITICAL_PLUS),
        ("  critical  ", Criticality.CRITICAL),
        ("SHEDDABLE_PLUS", Criticality.SHEDDABLE_PLUS),
        ("sheddable-plus", Criticality.SHEDDABLE_PLUS),
        ("sheddable", Criticality.SHEDDABLE),
    ],
)
def test_parse_accepts_the_usual_spellings(text: str, expected: Criticality) -> None:
    assert Criticality.parse(text) is expected


@pytest.mark.parametrize("text", ["", "critical+", "urgent", "critical_plus_plus", "2", None, 2])
def test_parse_refuses_anything_else_naming_the_allowed_values(text: object) -> None:
    message = (
        f"Criticality: text={text!r} is not allowed; text must be one of 'critical_plus', "
        "'critical', 'sheddable_plus', 'sheddable'"
    )
    with pytest.raises(InvalidConfig, match=f"^{re.escape(message)}$") as info:
        Criticality.parse(text)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


def test_header_value_is_the_lower_case_name_and_parses_back() -> None:
    for c in Criticality:
        assert c.header_value == c.name.lower()
        assert Criticality.parse(c.header_value) is c


def test_default_is_critical() -> None:
    assert current_criticality() is Criticality.CRITICAL


def test_the_innermost_setting_wins_and_is_undone_on_exit() -> None:
    with criticality(Criticality.SHEDDABLE):
        assert current_criticality() is Criticality.SHEDDABLE
        with criticality(Criticality.CRITICAL_PLUS):
            assert current_criticality() is Criticality.CRITICAL_PLUS
        assert current_criticality() is Criticality.SHEDDABLE
    assert current_criticality() is Criticality.CRITICAL


def test_reset_even_when_the_block_raises() -> None:
    with pytest.raises(KeyError), criticality(Criticality.SHEDDABLE):
        raise KeyError
    assert current_criticality() is Criticality.CRITICAL


def test_it_follows_the_request_into_tasks_it_starts() -> None:
    async def child() -> Criticality:
        await asyncio.sleep(0)
        return current_criticality()

    async def main() -> tuple[Criticality, Criticality]:
        with criticality(Criticality.SHEDDABLE_PLUS):
            inside = asyncio.create_task(child())
        outside = asyncio.create_task(child())
        return await inside, await outside

    assert asyncio.run(main()) == (Criticality.SHEDDABLE_PLUS, Criticality.CRITICAL)


@pytest.mark.parametrize("value", ["critical", 2, None])
def test_criticality_takes_only_a_criticality(value: object) -> None:
    with pytest.raises(InvalidConfig, match="c=") as info, criticality(value):  # type: ignore[arg-type]
        pass
    assert info.value.name == "c"


def test_headers_carry_the_current_criticality() -> None:
    assert criticality_headers() == {CRITICALITY_HEADER: "critical"}
    with criticality(Criticality.SHEDDABLE):
        assert criticality_headers() == {"brownout-criticality": "sheddable"}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"brownout-criticality": "critical_plus"}, Criticality.CRITICAL_PLUS),
        ({"Brownout-Criticality": "SHEDDABLE"}, Criticality.SHEDDABLE),
        ([(b"brownout-criticality", b"sheddable-plus")], Criticality.SHEDDABLE_PLUS),
        ([(b"x-other", b"1"), ("brownout-criticality", "critical")], Criticality.CRITICAL),
        ({"brownout-criticality": "urgent"}, None),  # malformed counts as absent
        ({"x-other": "critical"}, None),
        ([], None),
    ],
)
def test_from_headers(headers: object, expected: Criticality | None) -> None:
    assert criticality_from_headers(headers) is expected  # type: ignore[arg-type]


def test_round_trip_through_headers() -> None:
    with criticality(Criticality.SHEDDABLE_PLUS):
        sent = criticality_headers()
    assert criticality_from_headers(sent) is Criticality.SHEDDABLE_PLUS
