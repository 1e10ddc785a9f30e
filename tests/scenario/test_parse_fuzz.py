"""Fuzz the scenario parser: whatever the document, the answer is a Scenario or one
ScenarioError line naming a field; never another exception."""

from __future__ import annotations

import copy
import json
import math
import random
from itertools import islice
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brownout.errors import ScenarioError
from brownout.scenario import RequestPicker, Scenario, arrivals, parse_scenario
from brownout.scenario._parse import (
    CLASS_KEYS,
    CRAWL_KEYS,
    FAULT_KEYS,
    KEY_KEYS,
    REQUEST_KEYS,
    RETRY_KEYS,
    SESSION_KEYS,
    SPIKE_KEYS,
    STAGE_KEYS,
    THRESHOLD_KEYS,
    TOP_KEYS,
)


def toml_value(value: Any) -> str:
    """A TOML inline value (strings as JSON strings, which TOML reads the same way)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_string(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, but non-ASCII stays as is (JSON would
    write surrogate pairs, which TOML refuses) and DEL is escaped."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_document(doc: dict[str, Any]) -> str:
    return "\n".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in doc.items()) + "\n"


def check_error(err: ScenarioError) -> None:
    """One line, naming the field it is about."""
    message = str(err)
    assert message
    assert len(message.splitlines()) == 1, message
    assert err.field
    if err.field != "toml":
        first = err.field.split(".")[0].split("[")[0] or err.field
        assert first in message or repr(first)[1:-1] in message, (err.field, message)


def check_outcome(text: str) -> Scenario | None:
    """Parse; an error must be a one-line ScenarioError naming its field; a scenario must
    convert to JSON, schedule arrivals and pick requests."""
    try:
        scenario = parse_scenario(text)
    except ScenarioError as err:
        failure = err
    else:
        failure = None
    if failure is not None:
        check_error(failure)
        return None
    assert isinstance(scenario, Scenario)
    json.dumps(scenario.to_dict())
    for cls in scenario.classes:
        list(islice(arrivals(cls, seed=scenario.seed, duration_s=scenario.duration_s), 20))
        small_keys = all(k.n <= 10_000 for r in cls.requests for k in r.keys.values())
        if small_keys:
            picker = RequestPicker(cls, random.Random(0))
            for _ in range(5):
                picker.pick()
    return scenario


INTERESTING = [
    "30s",
    "-1s",
    "0",
    "0s",
    "1e400s",
    "500/s",
    "30/m",
    "3x",
    "1%",
    "150%",
    "1KB",
    "human",
    "bot",
    "poisson",
    "bursty",
    "constant",
    "zipf",
    "uniform",
    "values",
    "backoff",
    "none",
    "immediate",
    "latency",
    "http_abort",
    "http_delay",
    "slicer",
    "down",
    "upstream",
    "/",
    "/p/{id}",
    "/p/{",
    "{",
    "p(99) < 300ms",
    "http://127.0.0.1:8000",
    "web",
    "db",
    "GET",
    "post",
    "",
    " ",
    "a\nb",
    "\x00",
]
scalars = st.one_of(
    st.integers(-5, 10**6),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.text(max_size=8),
    st.sampled_from(INTERESTING),
)
ALL_KEYS = sorted(
    set(TOP_KEYS + CLASS_KEYS + STAGE_KEYS + REQUEST_KEYS + KEY_KEYS + RETRY_KEYS + SESSION_KEYS)
    | set(CRAWL_KEYS + THRESHOLD_KEYS + FAULT_KEYS + SPIKE_KEYS)
    | {"id", "latency", "status", "probability", "match", "method", "path", "header"}
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(ALL_KEYS) | st.text("abcxyz_", min_size=1, max_size=4),
            children,
            max_size=3,
        )
    ),
    max_leaves=8,
)

BASE: dict[str, Any] = {
    "name": "t",
    "duration": "10s",
    "classes": [
        {"name": "web", "rate": 10, "requests": [{"path": "/items/{id}", "keys": {"id": 100}}]}
    ],
    "thresholds": [{"expr": "p(99) < 1s", "class": "web"}],
    "faults": [
        {"at": "1s", "duration": "2s", "target": "db", "kind": "latency", "latency": "100ms"}
    ],
}


def _location(doc: dict[str, Any], where: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The table to edit and its known keys; the top level when an earlier edit replaced
    the way there."""

    def cls() -> Any:
        return doc["classes"][0]

    def request() -> Any:
        return cls()["requests"][0]

    def key() -> Any:
        request()["keys"]["id"] = {"kind": "zipf", "n": 50}
        return request()["keys"]["id"]

    def fault() -> Any:
        return doc["faults"][0]

    tables: dict[str, tuple[Any, tuple[str, ...]]] = {
        "top": (lambda: doc, TOP_KEYS),
        "defaults": (lambda: doc.setdefault("defaults", {}), CLASS_KEYS),
        "class": (cls, CLASS_KEYS),
        "stage": (
            lambda: cls().setdefault("stages", [{"duration": "5s", "rate": 5}])[0],
            STAGE_KEYS,
        ),
        "spike": (
            lambda: cls().setdefault("spikes", [{"at": "1s", "duration": "1s", "rate": 5}])[0],
            SPIKE_KEYS,
        ),
        "request": (request, REQUEST_KEYS),
        "key": (key, KEY_KEYS),
        "session": (lambda: cls().setdefault("session", {}), SESSION_KEYS),
        "crawl": (lambda: cls().setdefault("crawl", {}), CRAWL_KEYS),
        "retry": (lambda: cls().setdefault("retry", {"mode": "backoff"}), RETRY_KEYS),
        "threshold": (lambda: doc["thresholds"][0], THRESHOLD_KEYS),
        "fault": (
            fault,
            (*FAULT_KEYS, "latency", "jitter", "probability", "direction", "status", "match"),
        ),
        "match": (lambda: fault().setdefault("match", {}), ("method", "path", "header")),
    }
    get, keys = tables[where]
    try:
        table = get()
    except (KeyError, IndexError, TypeError, AttributeError):
        return doc, TOP_KEYS
    if not isinstance(table, dict):
        return doc, TOP_KEYS
    return table, keys


LOCATIONS = [
    "top",
    "defaults",
    "class",
    "stage",
    "spike",
    "request",
    "key",
    "session",
    "crawl",
    "retry",
    "threshold",
    "fault",
    "match",
]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_values_for_known_keys_give_a_scenario_or_one_clear_line(
    data: st.DataObject,
) -> None:
    doc = copy.deepcopy(BASE)
    for _ in range(data.draw(st.integers(1, 4))):
        table, keys = _location(doc, data.draw(st.sampled_from(LOCATIONS)))
        unknown = data.draw(st.integers(0, 9)) == 0
        key = data.draw(
            st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
            if unknown
            else st.sampled_from(keys)
        )
        if data.draw(st.booleans()) and key in table:
            del table[key]
        else:
            table[key] = data.draw(values)
    check_outcome(toml_document(doc))


def test_the_fuzz_base_is_valid() -> None:
    assert check_outcome(toml_document(BASE)) is not None


TOKENS = [
    "[[classes]]",
    "[[classes.requests]]",
    "[[classes.stages]]",
    "[[faults]]",
    "[[thresholds]]",
    "[defaults]",
    "[classes.session]",
    "[classes.crawl]",
    "[",
    "]",
    "{",
    "}",
    "=",
    ",",
    ".",
    "\n",
    " ",
    '"',
    "'",
    "name",
    "duration",
    "rate",
    "target",
    "path",
    "kind",
    "at",
    "expr",
    "class",
    "keys.id",
    "weight",
    "retry",
    "mode",
    '"web"',
    '"/p/{id}"',
    '"30s"',
    '"500ms"',
    '"bot"',
    '"latency"',
    '"zipf"',
    "10",
    "-1",
    "0",
    "1.5",
    "true",
    "nan",
    "inf",
    "1979-05-27",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=40))
def test_random_toml_ish_text_never_escapes_as_another_exception(tokens: list[str]) -> None:
    check_outcome("".join(tokens))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_arbitrary_text_never_escapes_as_another_exception(text: str) -> None:
    check_outcome(text)
