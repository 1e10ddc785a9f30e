"""Every way a scenario file can be wrong gets one line naming the field in the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from brownout.errors import ScenarioError
from brownout.scenario import KeySpec, load_scenario, parse_scenario


def doc(
    *,
    top: str = "",
    cls: str = "",
    cls_tables: str = "",
    req: str = "",
    tail: str = "",
    rate: str = "rate = 10",
    requests: bool = True,
) -> str:
    """A small valid scenario with lines added to its sections."""
    request = (
        f'[[classes.requests]]\npath = "/items/{{id}}"\nkeys.id = 100\n{req}\n' if requests else ""
    )
    return (
        f'name = "t"\nduration = "10s"\n{top}\n'
        f'[[classes]]\nname = "web"\n{rate}\n{cls}\n{cls_tables}\n'
        f"{request}{tail}\n"
    )


def parse_error(text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text)
    err = info.value
    assert len(str(err).splitlines()) == 1, str(err)
    return err


def test_the_small_document_is_valid() -> None:
    sc = parse_scenario(doc())
    assert sc.classes[0].stages[0].rate == 10.0
    assert sc.classes[0].requests[0].keys == {"id": KeySpec(n=100)}


FAULT = '[[faults]]\nat = "2s"\nduration = "3s"\ntarget = "db"\n'

PROXY = '[[proxies]]\nname = "db"\nlisten = "127.0.0.1:9001"\nupstream = "127.0.0.1:9000"\n'

CASES = [
    # durations and rates
    (
        doc(top='interval = "3x"'),
        "interval",
        "is not a duration; use a number with a unit such as 500ms",
    ),
    (
        doc(rate="", cls_tables='[[classes.stages]]\nduration = "3x"\nrate = 5\n'),
        "classes[0].stages[0].duration",
        "is not a duration",
    ),
    (
        doc(rate="", cls_tables="[[classes.stages]]\nduration = 0\nrate = 5\n"),
        "classes[0].stages[0].duration",
        "a duration > 0",
    ),
    (doc(cls='timeout = "-1s"'), "classes[0].timeout", "a duration >= 0"),
    (doc(cls="timeout = 0"), "classes[0].timeout", "a duration > 0"),
    (doc(rate="rate = -5"), "classes[0].rate", "a rate >= 0"),
    (doc(rate='rate = "5/fortnight"'), "classes[0].rate", "is not a rate"),
    (
        doc(rate="", cls_tables='[[classes.stages]]\nduration = "1s"\ntarget = -3\n'),
        "classes[0].stages[0].target",
        "a rate >= 0",
    ),
    (
        doc(rate="", cls_tables='[[classes.stages]]\nduration = "1s"\nrate = 1\ntarget = 3\n'),
        "classes[0].stages[0].target",
        "not both",
    ),
    (
        doc(rate="", cls_tables='[[classes.stages]]\nduration = "1s"\n'),
        "classes[0].stages[0].rate",
        "is missing",
    ),
    (
        doc(rate="", cls_tables="[[classes.stages]]\nrate = 1\n"),
        "classes[0].stages[0].duration",
        "is missing",
    ),
    (doc(rate="", cls="stages = []"), "classes[0].stages", "at least one"),
    (doc(rate=""), "classes[0].stages", "is missing; use [[classes.stages]] tables, or rate = 100"),
    (
        doc(cls_tables='[[classes.stages]]\nduration = "1s"\nrate = 1\n'),
        "classes[0].rate",
        "not both",
    ),
    (doc(top="", cls="").replace('duration = "10s"\n', ""), "duration", "duration is missing"),
    # unknown keys, with and without a suggestion
    (doc(cls="rat = 5"), "classes[0].rat", "classes[0]: unknown key 'rat'; did you mean 'rate'?"),
    (doc(top="sed = 3"), "sed", "top level: unknown key 'sed'; did you mean 'seed'?"),
    (doc(req="wieght = 2"), "classes[0].requests[0].wieght", "did you mean 'weight'?"),
    (doc(req="zzz = 1"), "classes[0].requests[0].zzz", "allowed keys: name, path, weight"),
    (
        doc(cls_tables="[classes.sesion]\nthink_time = 1\n"),
        "classes[0].sesion",
        "did you mean 'session'?",
    ),
    (
        doc(cls='retry = {mode = "backoff", atempts = 2}'),
        "classes[0].retry.atempts",
        "did you mean 'attempts'?",
    ),
    (
        doc(tail='[[thresholds]]\nexpr = "p(99)<1s"\nclas = "web"\n'),
        "thresholds[0].clas",
        "did you mean 'class'?",
    ),
    (
        doc(top='[defaults]\ntimout = "1s"'),
        "defaults.timout",
        "defaults: unknown key 'timout'; did you mean 'timeout'?",
    ),
    (doc(top='[defaults]\nname = "x"'), "defaults.name", "defaults: unknown key 'name'"),
    # the request mix
    (doc(req="weight = 0"), "classes[0].requests[0].weight", "a number > 0"),
    (doc(req="weight = -2"), "classes[0].requests[0].weight", "a number > 0"),
    (doc(req='weight = "heavy"'), "classes[0].requests[0].weight", "a number > 0"),
    (doc(requests=False), "classes[0].requests", "at least one request"),
    (
        doc(requests=False, tail='[[classes.requests]]\nname = "x"\n'),
        "classes[0].requests[0].path",
        "is missing",
    ),
    (
        doc(requests=False, tail='[[classes.requests]]\npath = "items"\n'),
        "classes[0].requests[0].path",
        "a path starting with '/'",
    ),
    (
        doc(requests=False, tail='[[classes.requests]]\npath = "/p/{id}"\n'),
        "classes[0].requests[0].keys.id",
        "keys.id is missing",
    ),
    (doc(req="keys.other = 5"), "classes[0].requests[0].keys.other", "is not used"),
    (doc(req='method = "GE T"'), "classes[0].requests[0].method", "an HTTP token"),
    (doc(req='body = "x"\njson = {a = 1}'), "classes[0].requests[0].json", "not both"),
    (doc(req="body = 5"), "classes[0].requests[0].body", "a string"),
    (doc(req="json = nan"), "classes[0].requests[0].json", "no nan"),
    (
        doc(req='headers = {X-A = "a\\nb"}'),
        "classes[0].requests[0].headers.X-A",
        "without line breaks",
    ),
    (
        doc(cls='headers = {"Bad Name" = "1"}'),
        "classes[0].headers.Bad Name",
        "a header name (an HTTP token)",
    ),
    (
        doc(
            requests=False,
            tail='[[classes.requests]]\npath = "/p/{id}"\nkeys.id = {kind = "uniform", n = 5, s = 1.1}\n',
        ),
        "classes[0].requests[0].keys.id.s",
        "only with kind = 'zipf'",
    ),
    (
        doc(
            requests=False,
            tail='[[classes.requests]]\npath = "/p/{id}"\nkeys.id = {kind = "zipf", n = 0}\n',
        ),
        "classes[0].requests[0].keys.id.n",
        "an integer in 1..10000000",
    ),
    (
        doc(
            requests=False,
            tail='[[classes.requests]]\npath = "/p/{id}"\nkeys.id = {kind = "zipf", n = 100000000}\n',
        ),
        "classes[0].requests[0].keys.id.n",
        "an integer in 1..10000000",
    ),
    (
        doc(
            requests=False,
            tail='[[classes.requests]]\npath = "/p/{id}"\nkeys.id = {n = 10, s = -1}\n',
        ),
        "classes[0].requests[0].keys.id.s",
        "a number > 0",
    ),
    (
        doc(requests=False, tail='[[classes.requests]]\npath = "/p/{id}"\nkeys.id = []\n'),
        "classes[0].requests[0].keys.id.values",
        "a non-empty list",
    ),
    (
        doc(
            requests=False,
            tail='[[classes.requests]]\npath = "/p/{id}"\nkeys.id = {kind = "values", values = ["a"], n = 3}\n',
        ),
        "classes[0].requests[0].keys.id.n",
        "not allowed with kind 'values'",
    ),
    (
        doc(requests=False, tail='[[classes.requests]]\npath = "/p/{id}"\nkeys.id = 1.5\n'),
        "classes[0].requests[0].keys.id",
        "a table",
    ),
    (
        doc(requests=False, tail='[[classes.requests]]\npath = "/p/{id"\n'),
        "classes[0].requests[0].path",
        "has a stray brace",
    ),
    # class behaviour
    (doc(cls='kind = "robot"'), "classes[0].kind", "one of 'human', 'bot'"),
    (
        doc(cls='arrival = "sometimes"'),
        "classes[0].arrival",
        "one of 'constant', 'poisson', 'bursty'",
    ),
    (doc(cls='burst_on = "1s"'), "classes[0].burst_on", "only with arrival = 'bursty'"),
    (doc(cls='arrival = "bursty"\nburst_on = "100us"'), "classes[0].burst_on", ">= 1ms"),
    (doc(cls="max_in_flight = 0"), "classes[0].max_in_flight", "an integer in 1..10000000"),
    (doc(cls="clients = -1"), "classes[0].clients", "an integer in 0..65536"),
    (doc(cls="clients = 70000"), "classes[0].clients", "an integer in 0..65536"),
    (doc(cls='clients = "many"'), "classes[0].clients", "an integer in 0..65536"),
    (
        doc(cls='kind = "bot"', cls_tables="[classes.session]\nthink_time = 1\n"),
        "classes[0].session",
        "sessions in human classes",
    ),
    (
        doc(cls_tables='[classes.crawl]\nstart = ["/"]\n'),
        "classes[0].crawl",
        "crawls in bot classes",
    ),
    (
        doc(cls_tables="[classes.session]\nmin_requests = 5\nmax_requests = 2\n"),
        "classes[0].session.max_requests",
        ">= min_requests (5)",
    ),
    (
        doc(cls_tables='[classes.session]\nthink_time = "soon"\n'),
        "classes[0].session.think_time",
        "is not a duration",
    ),
    (
        doc(cls='kind = "bot"', cls_tables='[classes.crawl]\nstart = ["shop"]\n'),
        "classes[0].crawl.start[0]",
        "a path starting with '/'",
    ),
    (doc(cls="session = 5"), "classes[0].session", "a table"),
    (doc(cls="retry = {attempts = 2}"), "classes[0].retry.mode", "is missing"),
    (
        doc(cls='retry = "sometimes"'),
        "classes[0].retry.mode",
        "one of 'none', 'immediate', 'backoff'",
    ),
    (
        doc(cls='retry = {mode = "backoff", attempts = 0}'),
        "classes[0].retry.attempts",
        "an integer in 1..100",
    ),
    (
        doc(cls='retry = {mode = "backoff", base = "2s", cap = "1s"}'),
        "classes[0].retry.cap",
        "a duration >= base",
    ),
    (
        doc(cls='retry = {mode = "backoff", on_status = [503, 700]}'),
        "classes[0].retry.on_status[1]",
        "status codes in 100..599",
    ),
    (doc(cls="slo = [5]"), "classes[0].slo[0]", "a threshold expression"),
    (doc(cls='user_agent = "a\\nb"'), "classes[0].user_agent", "a one-line string"),
    # classes as a whole
    (
        doc().replace('[[classes]]\nname = "web"', '[[classes]]\nname = "web two"'),
        "classes[0].name",
        "a name of 1-64 letters",
    ),
    (
        doc(tail='[[classes]]\nname = "web"\nrate = 1\n[[classes.requests]]\npath = "/"\n'),
        "classes[1].name",
        "a name no other class has",
    ),
    ('name = "t"\nduration = 5\n', "classes", "classes is missing"),
    ('name = "t"\nduration = 5\nclasses = []\n', "classes", "at least one [[classes]] table"),
    ('name = "t"\nduration = 5\n[classes]\nname = "x"\n', "classes", "an array of tables"),
    (
        doc().replace('[[classes]]\nname = "web"\n', "[[classes]]\n"),
        "classes[0].name",
        "is missing",
    ),
    (
        doc(
            rate="",
            cls_tables='[[classes.stages]]\nduration = "1s"\nrate = 1\n',
            tail='[[classes.spikes]]\nat = "20s"\nduration = "1s"\nrate = 5\n',
        ),
        "classes[0].spikes[0].at",
        "before the end of the run",
    ),
    (
        doc(tail='[[classes.spikes]]\nat = "1s"\nduration = "1s"\nrate = 0\n'),
        "classes[0].spikes[0].rate",
        "a rate > 0",
    ),
    (
        doc(tail='[[classes.spikes]]\nat = "1s"\nrate = 5\n'),
        "classes[0].spikes[0].duration",
        "is missing",
    ),
    # the top level
    (doc(top='target = "ftp://example.com"'), "target", "an http:// or https:// URL"),
    (doc(top='target = "http://127.0.0.1:99999"'), "target", "an http:// or https:// URL"),
    (doc(top="seed = -1"), "seed", "an integer in 0.."),
    (doc(top="seed = 1.5"), "seed", "an integer in 0.."),
    (doc(top="interval = 0"), "interval", "a duration > 0"),
    (doc(top='allow_hosts = "example.com"'), "allow_hosts", "a list of strings"),
    (doc(top='allow_hosts = ["a b"]'), "allow_hosts[0]", "a host name"),
    (
        doc(top='name = "x"').replace('name = "t"\n', "", 1).replace('name = "x"', "name = 5"),
        "name",
        "a non-empty one-line string",
    ),
    (doc(top='[defaults]\ntimeout = "soon"'), "defaults.timeout", "is not a duration"),
    (
        doc(top="[defaults]\nmax_in_flight = -1"),
        "defaults.max_in_flight",
        "an integer in 1..10000000",
    ),
    (doc(top="defaults = 5"), "defaults", "a table"),
    ("name = \nduration = 1", "toml", "not valid TOML"),
    ('name = "a"\nname = "b"', "toml", "not valid TOML"),
    # thresholds
    (
        doc(tail='[[thresholds]]\nexpr = "p(99) < 1s"\nclass = "api"\n'),
        "thresholds[0].class",
        "the name of a class: 'web'",
    ),
    (
        doc(tail='[[thresholds]]\nexpr = "p(99) < 1s"\nendpoint = "/nope"\n'),
        "thresholds[0].endpoint",
        "an endpoint of the scope: '/items/{id}'",
    ),
    (doc(tail='[[thresholds]]\nclass = "web"\n'), "thresholds[0].expr", "is missing"),
    (
        doc(tail='[[thresholds]]\nexpr = "p(99) < 1s"\nabort_on_fail = "yes"\n'),
        "thresholds[0].abort_on_fail",
        "true or false",
    ),
    (doc(top="thresholds = [5]"), "thresholds[0]", "a table"),
    (doc(top='thresholds = ""'), "thresholds", "an array"),
    # proxies
    (
        doc(tail=PROXY.replace("127.0.0.1:9001", "10.1.2.3:9001")),
        "proxies[0].listen",
        "a loopback host:port",
    ),
    (doc(tail=PROXY.replace("127.0.0.1:9000", "db:http")), "proxies[0].upstream", "host:port"),
    (doc(tail=PROXY.replace('name = "db"', 'name = "d b"')), "proxies[0].name", "is not"),
    (
        doc(tail=PROXY.replace('upstream = "127.0.0.1:9000"\n', "")),
        "proxies[0].upstream",
        "is missing",
    ),
    (doc(tail=PROXY + "tls = true\n"), "proxies[0].tls", "unknown key"),
    (doc(tail=PROXY + PROXY), "proxies[1].name", "a name no other proxy has"),
    (
        doc(tail=PROXY + FAULT.replace('"db"', '"cache"') + 'kind = "down"\n'),
        "faults[0].target",
        "the name of a proxy: 'db'",
    ),
    (doc(top='proxy_api = "ftp://x"'), "proxy_api", "an http:// or https:// URL"),
    (doc(top='proxies = "db"'), "proxies", "an array of tables"),
    # faults
    (doc(tail=FAULT + 'kind = "explode"\n'), "faults[0].kind", "one of 'latency', 'bandwidth'"),
    (doc(tail=FAULT), "faults[0].kind", "is missing"),
    (
        doc(tail=FAULT + 'kind = "latency"\nlatncy = "1s"\n'),
        "faults[0].latncy",
        "did you mean 'latency'?",
    ),
    (
        doc(tail=FAULT + 'kind = "latency"\n'),
        "faults[0].latency",
        "faults[0].latency is missing; use a duration such as 200ms",
    ),
    (
        doc(tail=FAULT + 'kind = "latency"\nlatency = "fast"\n'),
        "faults[0].latency",
        "is not a duration",
    ),
    (
        doc(tail=FAULT + 'kind = "latency"\nlatency = "1s"\nprobability = 1.5\n'),
        "faults[0].probability",
        "is outside [0, 1]",
    ),
    (
        doc(tail=FAULT + 'kind = "latency"\nlatency = "1s"\ndirection = "sideways"\n'),
        "faults[0].direction",
        "one of 'downstream', 'upstream'",
    ),
    (
        doc(tail=FAULT + 'kind = "http_delay"\ndelay = "1s"\ndirection = "upstream"\n'),
        "faults[0].direction",
        "is not a parameter of a http_delay fault; use the parameters of a http_delay fault: delay, jitter, ramp_to, probability, match",
    ),
    (
        doc(tail=FAULT + 'kind = "latency"\nlatency = "1s"\nmatch = {path = "/x"}\n'),
        "faults[0].match",
        "is not a parameter of a latency fault",
    ),
    (
        doc(tail=FAULT + 'kind = "http_abort"\nstatus = 404\n'),
        "faults[0].status",
        "one of 500, 502, 503, 504, 429",
    ),
    (
        doc(tail=FAULT + 'kind = "http_abort"\nstatus = 500\nretry_after = "1s"\n'),
        "faults[0].retry_after",
        "only with status 429 or 503",
    ),
    (
        doc(tail=FAULT + 'kind = "http_delay"\ndelay = "1s"\nmatch = {verb = "GET"}\n'),
        "faults[0].match.verb",
        "is not a match key",
    ),
    (
        doc(tail=FAULT + 'kind = "slicer"\naverage_size = "1KB"\nsize_variation = "2KB"\n'),
        "faults[0].size_variation",
        "a size <= average_size",
    ),
    (doc(tail=FAULT + 'kind = "limit_data"\nbytes = "lots"\n'), "faults[0].bytes", "is not a size"),
    (
        doc(tail=FAULT + 'kind = "bandwidth"\nrate = -1\n'),
        "faults[0].rate",
        "a number >= 0 of KB/s",
    ),
    (
        doc(tail=FAULT.replace('"db"', '"my db"') + 'kind = "down"\n'),
        "faults[0].target",
        "such as 'payments'",
    ),
    (
        doc(tail=FAULT.replace('target = "db"\n', "") + 'kind = "down"\n'),
        "faults[0].target",
        "is missing",
    ),
    (
        doc(tail=FAULT.replace('at = "2s"', 'at = "10s"') + 'kind = "down"\n'),
        "faults[0].at",
        "a time before the end of the run (10s)",
    ),
    (
        doc(tail=FAULT.replace('duration = "3s"', 'duration = "9s"') + 'kind = "down"\n'),
        "faults[0].duration",
        "at most 8 s",
    ),
    (
        doc(tail=FAULT.replace('duration = "3s"', "duration = 0") + 'kind = "down"\n'),
        "faults[0].duration",
        "a duration > 0",
    ),
    (doc(top="faults = 3"), "faults", "an array of tables"),
]


@pytest.mark.parametrize(("text", "field", "fragment"), CASES)
def test_parse_errors_name_the_field_in_the_file(text: str, field: str, fragment: str) -> None:
    err = parse_error(text)
    assert err.field == field, str(err)
    assert fragment in str(err)
    if field != "toml":
        assert field.split(".", maxsplit=1)[0].split("[", maxsplit=1)[0] in str(err)


def test_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        parse_scenario(doc(rate="rate = -1"))


def test_the_source_prefixes_the_message() -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(doc(cls="rat = 5"), source="shop.toml")
    assert str(info.value) == "shop.toml: classes[0]: unknown key 'rat'; did you mean 'rate'?"
    assert info.value.source == "shop.toml"
    assert info.value.detail == "classes[0]: unknown key 'rat'; did you mean 'rate'?"


def test_a_value_from_defaults_is_reported_where_it_was_written() -> None:
    err = parse_error(doc(top='[defaults]\nretry = {mode = "backoff", attempts = 500}'))
    assert err.field == "defaults.retry.attempts"


def test_parse_scenario_refuses_bytes() -> None:
    with pytest.raises(ScenarioError, match="a str holding TOML"):
        parse_scenario(b"name = 'x'")  # type: ignore[arg-type]


def test_load_scenario_reports_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ScenarioError) as info:
        load_scenario(missing)
    assert info.value.field == "file"
    assert "cannot be read" in str(info.value)


def test_load_scenario_reports_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b'name = "\xff"\n')
    with pytest.raises(ScenarioError, match="is not UTF-8"):
        load_scenario(path)


def test_load_scenario_names_the_file_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "shop.toml"
    path.write_text(doc(rate="rate = -1"))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value).startswith(f"{path}: classes[0].rate=-1 ")
