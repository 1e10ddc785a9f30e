"""The topology model and its TOML form: what parses, what each error says, and a fuzz of
the parser (anything either parses or raises a one-line ScenarioError)."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import brownout.model._topology as topology_module
from brownout.errors import InvalidConfig, ScenarioError
from brownout.model import (
    Call,
    Client,
    Endpoint,
    PolicySpec,
    ServiceTime,
    Station,
    Topology,
    Work,
    load_topology,
    parse_topology,
    simulate,
)


def docstring_example() -> str:
    doc = topology_module.__doc__ or ""
    text = doc[doc.index("    [stations.web]") : doc.index("Every error")]
    return "\n".join(line[4:] for line in text.splitlines())


# -- the model -------------------------------------------------------------------------


def test_service_times_have_the_mean_and_variability_asked_for() -> None:
    rng = random.Random(1)
    for service, cv in (
        (ServiceTime.exponential(0.004), 1.0),
        (ServiceTime.lognormal(0.004, 1.5), 1.5),
        (ServiceTime.deterministic(0.004), 0.0),
    ):
        draw = service.sampler(rng)
        xs = [draw() for _ in range(100_000)]
        mean = sum(xs) / len(xs)
        sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))
        assert mean == pytest.approx(0.004, rel=0.03)
        assert sd / mean == pytest.approx(cv, abs=0.06)
        assert service.cv == cv
    empirical = ServiceTime.empirical([0.001, 0.002, 0.006])
    assert empirical.mean_s == pytest.approx(0.003)
    draw = empirical.sampler(rng)
    assert {draw() for _ in range(200)} == {0.001, 0.002, 0.006}


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: ServiceTime(kind="uniform", mean_s=1.0), "kind"),
        (lambda: ServiceTime.exponential(-1.0), "mean_s"),
        (lambda: ServiceTime.empirical([]), "values_s"),
        (lambda: Call(target="db", timeout_s=0.0), "timeout_s"),
        (lambda: Call(target="db", retry_on=frozenset({"slow"})), "retry_on"),
        (lambda: Call(target="db", on_failure="ignore"), "on_failure"),
        (
            lambda: Endpoint(steps=(Work(ServiceTime.exponential(1.0)),), error_rate=1.5),
            "error_rate",
        ),
        (lambda: Station(name="a.b"), "name"),
        (lambda: Station(name="s", servers=0), "servers"),
        (lambda: Station(name="s", discipline="random"), "discipline"),
        (lambda: Station(name="s", codel=True, queue_timeout_s=1.0), "queue_timeout_s"),
        (lambda: Station(name="s", codel_target_s=1.0), "codel_target_s"),
        (lambda: Station(name="s", abandoned="cancel"), "abandoned"),
    ],
)
def test_bad_model_values_raise_invalid_config(make: Any, match: str) -> None:
    with pytest.raises(InvalidConfig, match=match):
        make()


def test_the_topology_checks_its_references() -> None:
    s = Station.simple("s", 1, ServiceTime.exponential(0.01))

    def calling(**call: Any) -> Station:
        return Station(name="w", endpoints={"e": Endpoint(steps=(Call(**call),))})

    with pytest.raises(InvalidConfig, match="distinct names"):
        Topology(stations=(s, s))
    with pytest.raises(InvalidConfig, match="known station"):
        Topology(stations=(calling(target="nowhere"),))
    with pytest.raises(InvalidConfig, match="known endpoint"):
        Topology(stations=(s, calling(target="s.missing")))
    with pytest.raises(InvalidConfig, match="other than the target"):
        Topology(stations=(s, calling(target="s", pool="s")))
    with pytest.raises(InvalidConfig, match="retry policy"):
        Topology(stations=(s, calling(target="s", retry="r")))
    with pytest.raises(InvalidConfig, match="at most one circuit_breaker"):
        Topology(
            stations=(s, calling(target="s", policies=("a", "b"))),
            policies={"a": PolicySpec("circuit_breaker"), "b": PolicySpec("circuit_breaker")},
        )
    loop = Station(
        name="a",
        endpoints={
            "x": Endpoint(steps=(Call(target="b.y"),)),
        },
    )
    back = Station(name="b", endpoints={"y": Endpoint(steps=(Call(target="a.x"),))})
    with pytest.raises(InvalidConfig, match=r"a\.x -> b\.y -> a\.x"):
        Topology(stations=(loop, back))
    with pytest.raises(InvalidConfig, match="routes"):
        Topology(stations=(s,), routes={"shoppers": "t"})


# -- the TOML form ---------------------------------------------------------------------


def test_the_documented_example_parses_and_runs() -> None:
    topology = parse_topology(docstring_example())
    web = topology.station("web")
    assert web.servers == 8
    assert web.codel
    assert web.discipline == "adaptive_lifo"
    assert web.abandoned == "drop"
    assert web.max_queue == 500
    steps = web.endpoints["products"].steps
    assert isinstance(steps[1], Call)
    assert steps[1].pool == "db_pool"
    assert steps[1].timeout_s == 0.5
    assert steps[1].policies == ("db_breaker",)
    assert steps[2] == Work(ServiceTime.deterministic(0.001))
    assert topology.station("db_pool").servers == 10
    assert topology.station("db_pool").queue_timeout_s == 0.2
    assert topology.station("payments").servers is None
    assert topology.station("payments").endpoints["default"].error_rate == 0.01
    assert topology.policies["db_budget"].params == {"retry_ratio": 0.1}
    assert topology.policies["db_breaker"].params == {"minimum_calls": 20, "open_s": 5.0}
    result = simulate(topology, Client(name="shoppers", rate=100.0, timeout_s=2.0), 5.0)
    assert result.overall.ok > 400


def test_a_topology_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "shop.toml"
    path.write_text(docstring_example(), encoding="utf-8")
    assert load_topology(path) == parse_topology(docstring_example())
    with pytest.raises(ScenarioError, match="cannot be read"):
        load_topology(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ScenarioError, match="not UTF-8"):
        load_topology(bad)
    bad.write_text("[stations.web]\nservers = -1\nservice = '1ms'\n")
    with pytest.raises(ScenarioError) as err:
        load_topology(bad)
    assert str(err.value).startswith(f"{bad}: stations.web.servers=-1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[stations.web]\nserver = 3",
            "stations.web: unknown key 'server'; did you mean 'servers'?",
        ),
        ("[stations.web]\nservers = 0\nservice = '1ms'", "stations.web.servers=0 is not allowed"),
        (
            "[stations.web]\nservice = {dist = 'weird', mean = '1ms'}",
            "stations.web.service.dist='weird' is not allowed; use one of 'deterministic'",
        ),
        (
            "[stations.web]\nservice = {dist = 'exponential'}",
            "stations.web.service.mean is missing",
        ),
        (
            "[stations.web]\nservice = '3 parsecs'",
            "stations.web.service='3 parsecs' is not a duration",
        ),
        (
            "[stations.web]\nservice = '1ms'\nqueue_timeout = 'soon'",
            "stations.web.queue_timeout='soon'",
        ),
        ("[stations.web]\nservers = 2", "stations.web='web' has no endpoint"),
        (
            "[stations.web.endpoints.a]\nsteps = [{call = 'db'}]",
            "stations.web.endpoints.a.steps[0].call='db' is not allowed; use an endpoint of a known",
        ),
        (
            "[stations.web.endpoints.a]\nsteps = [{work = '1ms', call = 'db'}]",
            "stations.web.endpoints.a.steps[0]=",
        ),
        (
            "[stations.web.endpoints.a]\nsteps = [{call = 'web.b', timeout = 0}]\n"
            "[stations.web.endpoints.b]\nsteps = [{work = '1ms'}]",
            "stations.web.endpoints.a.steps[0].timeout=0 is not allowed",
        ),
        (
            "[stations.s]\nservice = '1ms'\n[stations.web.endpoints.a]\n"
            "steps = [{call = 's', retry = 'r'}]",
            "stations.web.endpoints.a.steps[0].retry='r' is not allowed; use the name of a retry",
        ),
        (
            "[stations.web]\nservice = '1ms'\n[policies.b]\nkind = 'circuit_breaker'\nfailure_rate = 2",
            "policies.b.failure_rate=2.0 is not allowed",
        ),
        (
            "[stations.web]\nservice = '1ms'\n[policies.r]\nkind = 'retry'\nbase = 'soon'",
            "policies.r.base='soon' is not a duration",
        ),
        (
            "[stations.web]\nservice = '1ms'\n[policies.r]\nkind = 'retry'\nbudget = 'nope'",
            "policies.r.budget='nope' is not allowed; use a retry_budget policy (none defined)",
        ),
        (
            "[stations.web]\nservice = '1ms'\n[policies.x]\nkind = 'hedge'",
            "policies.x.kind='hedge'",
        ),
        (
            "[stations.web]\nservice = '1ms'\n[routes]\nx = 'nope.y'",
            "routes.x='nope.y' is not allowed",
        ),
        (
            "[stations.web]\nservice = '1ms'\n[pools.web]\nsize = 2",
            "pools.web='web' is a duplicate",
        ),
        ("[pools.p]\ntimeout = '1s'", "pools.p.size is missing"),
        ("x = 1", "top level: unknown key 'x'"),
        ("[policies]", "stations is missing"),
        ("stations = [", "not valid TOML"),
    ],
)
def test_errors_name_the_field_and_what_is_allowed(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as err:
        parse_topology(text)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_codel_and_pools_and_dependencies_parse() -> None:
    topology = parse_topology(
        """
        [stations.api]
        servers = "inf"
        queue_timeout = "codel"
        codel_target = "10ms"
        codel_interval = "200ms"
        discipline = "lifo"
        service = {dist = "exponential", mean = "1ms"}
        [pools.conns]
        size = 4
        max_queue = 10
        timeout = "50ms"
        abandoned = "drop"
        [dependencies.pay]
        servers = 16
        latency = "100ms"
        error_rate = "2%"
        """
    )
    api = topology.station("api")
    assert api.servers is None
    assert api.codel
    assert api.codel_target_s == 0.01
    conns = topology.station("conns")
    assert (conns.servers, conns.max_queue, conns.queue_timeout_s) == (4, 10, 0.05)
    assert conns.endpoints == {}
    pay = topology.station("pay")
    assert pay.servers == 16
    assert pay.endpoints["default"].error_rate == 0.02


# -- fuzzing ---------------------------------------------------------------------------

KEYS = sorted(
    {
        *topology_module.TOP_KEYS,
        *topology_module.STATION_KEYS,
        *topology_module.DEPENDENCY_KEYS,
        *topology_module.POOL_KEYS,
        *topology_module.ENDPOINT_KEYS,
        *topology_module.CALL_KEYS,
        *topology_module.SERVICE_KEYS,
        "work",
        "kind",
        *(k for keys in topology_module.POLICY_KEYS.values() for k in keys),
        "web",
        "db",
        "db.default",
        "default",
        "x",
    }
)
WORDS = [
    "web",
    "db",
    "db.default",
    "web.default",
    "inf",
    "codel",
    "none",
    "fifo",
    "lifo",
    "adaptive_lifo",
    "keep",
    "drop",
    "exponential",
    "lognormal",
    "empirical",
    "deterministic",
    "retry",
    "retry_budget",
    "circuit_breaker",
    "adaptive_throttle",
    "bulkhead",
    "concurrency_limit",
    "rate_limit",
    "cache",
    "timeout",
    "error",
    "rejected",
    "fail",
    "continue",
    "5ms",
    "2s",
    "-1s",
    "1%",
    "50/s",
    "",
]

scalars = st.one_of(
    st.sampled_from(WORDS),
    st.text(max_size=8),
    st.integers(min_value=-3, max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    ),
    max_leaves=25,
)
documents = st.dictionaries(
    st.sampled_from(["stations", "pools", "dependencies", "policies", "routes", "name"]),
    st.dictionaries(st.sampled_from(["web", "db", "p", "x.y", ""]), values, max_size=3),
    max_size=5,
)


def toml_value(value: Any) -> str:
    """``value`` as TOML (inline tables and arrays: any nesting fits on one line)."""
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


def check_parse(text: str) -> Topology | None:
    """The topology in ``text``, or None when it raised a one-line ScenarioError naming a
    field (anything else escapes and fails the test)."""
    error: ScenarioError | None = None
    try:
        return parse_topology(text)
    except ScenarioError as err:
        error = err
    assert "\n" not in str(error)
    assert error.field
    return None


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_document(doc: dict[str, Any]) -> str:
    return "\n".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in doc.items())


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_fuzzed_documents_parse_or_raise_one_line_scenario_errors(doc: dict[str, Any]) -> None:
    check_parse(toml_document(doc))


def mutate(doc: Any, data: st.DataObject, depth: int = 0) -> Any:
    """``doc`` with one value somewhere replaced, removed, or joined by a new key."""
    if isinstance(doc, dict) and doc and depth < 6:
        key = data.draw(st.sampled_from(sorted(doc)))
        action = data.draw(st.sampled_from(["descend", "replace", "remove", "add"]))
        out = dict(doc)
        if action == "descend":
            out[key] = mutate(doc[key], data, depth + 1)
        elif action == "replace":
            out[key] = data.draw(values)
        elif action == "remove":
            del out[key]
        else:
            out[data.draw(st.sampled_from(KEYS))] = data.draw(values)
        return out
    if isinstance(doc, list) and doc and depth < 6:
        i = data.draw(st.integers(0, len(doc) - 1))
        out_list = list(doc)
        out_list[i] = mutate(doc[i], data, depth + 1)
        return out_list
    return data.draw(values)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_examples_parse_or_raise_one_line_scenario_errors(data: st.DataObject) -> None:
    """Start from the documented example (valid) and change one to three things in it."""
    import tomllib

    doc = tomllib.loads(docstring_example())
    for _ in range(data.draw(st.integers(1, 3))):
        doc = mutate(doc, data)
    topology = check_parse(toml_document(doc))
    if topology is not None:  # whatever parses also runs
        for name in topology.routes:
            result = simulate(topology, Client(name=name, rate=50.0, timeout_s=1.0), 0.5)
            assert result.overall.offered == result.overall.completed + result.overall.in_flight_end


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_fuzzed_text_parses_or_raises_scenario_errors(text: str) -> None:
    check_parse(text)
