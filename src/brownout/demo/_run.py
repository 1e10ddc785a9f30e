"""``brownout demo``: the seed's chain on real processes, then the same service guarded.

Steps (each prints one line as it goes, through ``say``):

1. start the payments service and a ``brownout proxy`` in front of it, on free loopback
   ports, and seed the shop's database (SQLite in the output directory, or ``--db``);
2. profile the naive shop: the probe on, light load over every endpoint; the findings;
3. predict its capacity from the ledger (the first resource to saturate, the knee) and
   simulate the scenario against a topology built from the same ledger;
4. run the scenario (``_scenario.py``) against the naive shop, then the guarded one, with
   the payments faults applied through the proxy on schedule;
5. write ``naive.json``, ``guarded.json``, ``sim.json``, ``ledger.json``,
   ``summary.json`` and ``report.html`` in the output directory.

Every process is stopped at the end, on failure and on Ctrl-C (an ``ExitStack`` of
:class:`~brownout._child.ChildProcess`).
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._child import ChildProcess
from ..errors import BrownoutError
from . import _figures as fig
from ._scenario import SLO_P99_MS, DemoPlan, demo_plan, scenario_toml
from ._shop import database_url

if TYPE_CHECKING:
    from ..model import LedgerModel

__all__ = ["DemoOptions", "DemoResult", "run_demo"]

READY = "serving on "
DEFAULT_KNEE_RPS = 100.0  # used only when the model cannot predict one (said in the output)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """``out_dir``: where everything is written. ``quick``: the short version (<= 60 s).
    ``db``: a PostgreSQL URL, or None for SQLite in ``out_dir``. ``seed``: the scenario's."""

    out_dir: Path
    quick: bool = False
    db: str | None = None
    seed: int = 1
    run_length_s: float | None = None  # tests shorten the runs further
    profile_length_s: float | None = None

    @property
    def run_s(self) -> float:
        if self.run_length_s is not None:
            return self.run_length_s
        return 20.0 if self.quick else 60.0

    @property
    def profile_s(self) -> float:
        if self.profile_length_s is not None:
            return self.profile_length_s
        return 3.0 if self.quick else 6.0


@dataclass(slots=True)
class DemoResult:
    summary: dict[str, Any] = field(default_factory=dict)
    findings: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(*args: str) -> ChildProcess:
    return ChildProcess(
        [sys.executable, "-m", "brownout.cli._serve", *args],
        ready_prefix=READY,
        what=f"the demo's {args[0]}",
        ready_timeout_s=90.0,
        stop_timeout_s=3.0,
    )


class _Stack:
    """The demo's processes: started in order, stopped in reverse, whatever happens."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self.stack = stack

    def start(self, child: ChildProcess) -> str:
        self.stack.callback(child.close)
        return child.start()


def _profile_scenario(target: str, rate: float, duration_s: float) -> str:
    """Light load over every endpoint of the shop, the people's mix, for the probe."""
    from ._scenario import BROWSER_UA, PEOPLE_REQUESTS

    return f"""
name = "demo-profile"
target = "{target}"
duration = "{duration_s:g}s"
seed = 7
[[classes]]
name = "people"
kind = "human"
rate = {rate:g}
clients = 20000
user_agent = "{BROWSER_UA}"
headers = {{ Cookie = "session=demo" }}
{PEOPLE_REQUESTS}
"""


def _write_json(path: Path, doc: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, allow_nan=False), encoding="utf-8")
    tmp.replace(path)


def _rate_at(plan: DemoPlan) -> Callable[[float], float]:
    def rate_at(t: float) -> float:
        if t <= 1.0:
            return plan.ramp_from_rps
        span = plan.ramp_end_s - 1.0
        share = min(max((t - 1.0) / span, 0.0), 1.0)
        return plan.ramp_from_rps + (plan.ramp_to_rps - plan.ramp_from_rps) * share

    return rate_at


def figures(doc: dict[str, Any], plan: DemoPlan) -> dict[str, Any]:
    """The summary figures of one run (see :mod:`._figures`)."""
    return {
        "people_goodput_ratio": fig.people_goodput_ratio(doc),
        "p99_ms": fig.people_p99_ms(doc),
        "recovery_s": fig.recovery_s(doc, plan.fault_end_s),
        "knee_rps": fig.knee_from_ramp(doc, _rate_at(plan), plan.ramp_end_s, slo_ms=SLO_P99_MS),
        "shed": sum(c.get("shed", 0) for c in doc.get("by_class", {}).values()),
        "scraper_goodput_ratio": fig.people_goodput_ratio(doc, "scraper"),
    }


@contextlib.contextmanager
def _environment(
    options: DemoOptions, say: Callable[[str], None]
) -> Iterator[tuple[_Stack, str, str, str]]:
    """Payments, the proxy in front of it, the database URL: (stack, db_url, payments via
    the proxy, proxy API)."""
    from ..faults import ProxyProcess
    from ..scenario import ProxySpec

    with contextlib.ExitStack() as exit_stack:
        stack = _Stack(exit_stack)
        payments = stack.start(_serve("payments", "--latency-ms", "20"))
        listen = f"127.0.0.1:{_free_port()}"
        spec = ProxySpec(name="payments", listen=listen, upstream=payments.split("//", 1)[1])
        api = stack.start(ProxyProcess([spec]))
        say(f"payments on {payments}, through brownout proxy on {listen} (API {api})")
        db_url = database_url(options.db, str(options.out_dir / "shop.db"))
        if options.db is not None:
            _check_database(db_url, options.db)
        yield stack, db_url, f"http://{listen}", api


def _check_database(url: str, given: str) -> None:
    """Connect once, so an unreachable database is one clear line, not a shop that exits."""
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    async def probe() -> None:
        engine = create_async_engine(url)
        try:
            async with asyncio.timeout(5.0), engine.connect():
                pass
        finally:
            await engine.dispose()

    try:
        asyncio.run(probe())
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BrownoutError(f"--db={given!r}: cannot connect to the database ({reason})") from None


def _shop(stack: _Stack, variant: str, db_url: str, payments: str, *extra: str) -> ChildProcess:
    child = _serve("shop", "--variant", variant, "--db", db_url, "--payments", payments, *extra)
    stack.start(child)
    return child


def run_demo(options: DemoOptions, say: Callable[[str], None]) -> DemoResult:
    """Run the whole demo; returns the summary and where everything was written."""
    from ..faults import fault_session
    from ..load import run_load
    from ..scenario import parse_scenario

    out = options.out_dir
    out.mkdir(parents=True, exist_ok=True)
    result = DemoResult()
    started = time.monotonic()
    with _environment(options, say) as (stack, db_url, payments, api):
        # 1. Profile the naive shop.
        ledger_path = out / "ledger.json"
        shop = _shop(stack, "naive", db_url, payments, "--ledger", str(ledger_path))
        target = shop.ready
        say(f"profiling the naive shop on {target} for {options.profile_s:g} s")
        run_load(parse_scenario(_profile_scenario(target, 20.0, options.profile_s)))
        shop.close()  # writes the ledger
        if not ledger_path.exists():
            raise BrownoutError(f"the probe wrote no ledger at {ledger_path}")
        ledger = json.loads(ledger_path.read_text(encoding="utf-8"))
        result.findings = list(ledger.get("findings", []))
        result.files["ledger"] = ledger_path

        # 2. Predict (and simulate) from the ledger.
        knee, prediction, lm = _predict(ledger, result)
        plan = demo_plan(knee, options.run_s)
        sim_doc: dict[str, Any] | None = None
        if lm is not None:
            say("simulating the scenario against a model of the naive shop built from the ledger")
            sim_doc = _simulate(lm, plan, payments, api, options.seed, result)
        if sim_doc is not None:
            predicted = figures(sim_doc, plan)
            predicted["sim_knee_rps"] = predicted.pop("knee_rps")
            prediction.update(predicted)
            path = out / "sim.json"
            _write_json(path, sim_doc)
            result.files["sim"] = path

        # 3. The scenario against each build.
        docs: dict[str, dict[str, Any]] = {}
        for variant in ("naive", "guarded"):
            shop = _shop(stack, variant, db_url, payments)
            scenario = parse_scenario(
                scenario_toml(plan, target=shop.ready, proxy_api=api, seed=options.seed)
            )
            say(f"running the scenario against the {variant} shop ({plan.duration_s:g} s)")
            with fault_session(scenario) as timeline:
                doc = run_load(scenario, faults=timeline)
            shop.close()
            docs[variant] = doc
            path = out / f"{variant}.json"
            _write_json(path, doc)
            result.files[variant] = path

    summary: dict[str, Any] = {
        "schema_version": 1,
        "plan": {k: getattr(plan, k) for k in plan.__dataclass_fields__},
        "naive": figures(docs["naive"], plan),
        "guarded": figures(docs["guarded"], plan),
        "predicted": prediction,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    result.summary = summary
    path = out / "summary.json"
    _write_json(path, _finite(summary))
    result.files["summary"] = path

    # 4. The report.
    from ..report import render_report

    runs = [docs["naive"], docs["guarded"]]
    labels = ["naive", "guarded"]
    if sim_doc is not None:
        runs.append(sim_doc)
        labels.append("predicted")
    html = render_report(
        runs,
        labels=labels,
        ledgers=[ledger],
        ledger_labels=["naive shop"],
        summary=_finite(summary),
        title="brownout demo: the naive shop and the guarded one",
    )
    path = out / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    result.files["report"] = path
    return result


#: The demo scenario's people mix, by the probe's endpoint names (``_scenario.py``).
DEMO_MIX = {
    "GET /products": 3.0,
    "GET /products/{product_id}": 4.0,
    "GET /products/{product_id}/recommendations": 2.0,
    "GET /search": 1.0,
    "POST /checkout": 1.0,
}


#: The scenario's request names -> the probe's endpoint names.
REQUEST_ENDPOINTS = {
    "list": "GET /products",
    "product": "GET /products/{product_id}",
    "recommendations": "GET /products/{product_id}/recommendations",
    "search": "GET /search",
    "checkout": "POST /checkout",
}


def _predict(
    ledger: dict[str, Any], result: DemoResult
) -> tuple[float, dict[str, Any], LedgerModel | None]:
    """The predicted knee and capacity figures from the ledger, and the ledger's model; the
    default knee (and a note) when the model cannot give one."""
    from ..errors import InvalidConfig
    from ..model import capacity_from_ledger

    prediction: dict[str, Any] = {
        "knee_rps": None,
        "people_goodput_ratio": None,
        "p99_ms": None,
        "recovery_s": None,
    }
    try:
        mix = {e: w for e, w in DEMO_MIX.items() if e in ledger.get("endpoints", {})}
        lm = capacity_from_ledger(ledger, mix=mix or None)
        model = lm.model()
        knee = model.slo_knee_rps(SLO_P99_MS / 1000.0)
    except InvalidConfig as exc:
        result.notes.append(
            f"no capacity prediction ({exc}); the scenario assumes {DEFAULT_KNEE_RPS:g} req/s"
        )
        return DEFAULT_KNEE_RPS, prediction, None
    result.notes.extend(lm.notes)
    prediction.update(
        knee_rps=knee,
        bottleneck=model.bottleneck,
        saturation_rps=model.saturation_rps,
        resources=[r.to_dict() for r in lm.resources],
    )
    if knee is None or not math.isfinite(knee) or knee <= 0:
        result.notes.append(
            f"the model predicts no knee; the scenario assumes {DEFAULT_KNEE_RPS:g} req/s"
        )
        return DEFAULT_KNEE_RPS, prediction, lm
    return knee, prediction, lm


def _simulate(  # noqa: PLR0917 - internal
    lm: LedgerModel,
    plan: DemoPlan,
    payments: str,
    api: str,
    seed: int,
    result: DemoResult,
) -> dict[str, Any] | None:
    """The scenario in the simulator, against the topology the ledger gives (the payments
    host named ``payments`` so the scenario's faults reach it); None, with a note, when the
    ledger cannot give one."""
    from ..errors import InvalidConfig, ScenarioError
    from ..model._scenario_sim import simulate_scenario
    from ..scenario import parse_scenario

    listen = payments.split("//", 1)[1]
    hosts = {r.name for r in lm.resources if r.kind == "client_pool"}
    names = {h: "payments" for h in hosts if listen in h}
    routes = {k: e for k, e in REQUEST_ENDPOINTS.items() if e in lm.demands_s}
    try:
        topology = lm.topology(routes, names=names)
        scenario = parse_scenario(
            scenario_toml(plan, target="http://127.0.0.1:1", proxy_api=api, seed=seed)
        )
        if not names:  # the ledger saw no payments call: no station for the faults
            import dataclasses

            scenario = dataclasses.replace(scenario, faults=())
            result.notes.append("the ledger has no payments calls: the simulation has no faults")
        return simulate_scenario(scenario, topology, seed=seed)
    except (InvalidConfig, ScenarioError) as exc:
        result.notes.append(f"no simulation ({exc})")
        return None


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
