"""``brownout sim SCENARIO.toml --topology FILE``: the scenario against a modelled system.

Runs the same scenario file as ``brownout load`` (traffic classes, schedules, client
timeouts and retries, the fault timeline, thresholds) in the discrete-event simulator,
against the topology (stations, pools, dependencies, the real guard policies), in virtual
time: minutes of traffic in a second or two, the same result for the same seed. Prints the
summary table ``brownout load`` prints, and writes the same results JSON (``kind: sim``,
``--out``), which ``brownout report`` shows beside measured runs.

``--replications N`` runs N seeds and prints the 95% confidence interval of the headline
figures. ``--sweep-loads`` instead draws a phase diagram: for each load (a multiple of the
scenario's rates), trigger size and trigger duration (a slowdown, or a capacity drop, of
``--sweep-station`` at ``--sweep-at``), whether the system stays healthy, recovers (and
how fast) or stays stuck after the trigger ends (metastable), in parallel over the cores;
the scenario's own faults are left out of a sweep (the trigger replaces them).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import InvalidConfig
from ..units import parse_duration
from ._load import CommandError, _check_writable

DESCRIPTION = __doc__


def add_sim_command(sub: Any) -> None:
    p = sub.add_parser(
        "sim",
        help="simulate a scenario against a modelled topology (results JSON, phase diagram)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenario", metavar="SCENARIO.toml")
    p.add_argument("--topology", required=True, metavar="FILE", help="the modelled system (TOML)")
    p.add_argument("--seed", type=int, default=None, help="default: the scenario's seed")
    p.add_argument(
        "--duration",
        default=None,
        help="default: the scenario's; a shorter run must not cut a fault, spike or stage",
    )
    p.add_argument("--scale", type=float, default=1.0, help="multiply every rate (1)")
    p.add_argument("--replications", type=int, default=1, help="independent runs (1)")
    p.add_argument("--out", default=None, metavar="PATH", help="write the results JSON")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    g = p.add_argument_group("phase diagram (metastability sweep)")
    g.add_argument("--sweep-loads", default=None, help="rate multiples, e.g. 0.5,0.7,0.9")
    g.add_argument("--sweep-station", default=None, help="the station the trigger hits")
    g.add_argument("--sweep-factors", default="2,5,10", help="trigger sizes (2,5,10)")
    g.add_argument("--sweep-durations", default="2s,10s", help="trigger durations (2s,10s)")
    g.add_argument(
        "--sweep-kind",
        default="latency",
        choices=("latency", "capacity"),
        help="latency: work takes FACTOR x longer; capacity: servers / FACTOR (latency)",
    )
    g.add_argument("--sweep-at", default=None, help="trigger start (default: a quarter in)")
    g.add_argument("--workers", type=int, default=None, help="processes (default: cores)")
    p.set_defaults(handler=run_sim_command)


def _floats(flag: str, text: str) -> list[float]:
    out = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            value = -1.0
        if not value > 0 or value == float("inf"):
            raise CommandError(f"{flag}: {part!r} is not allowed; give numbers > 0 such as 0.5,1,2")
        out.append(value)
    return out


def _durations(flag: str, text: str) -> list[float]:
    out = []
    for part in text.split(","):
        value = parse_duration(part.strip(), field=flag)
        if value <= 0:
            raise CommandError(f"{flag}: {part!r} must be > 0, for example 2s,10s")
        out.append(value)
    return out


def _inputs(args: argparse.Namespace) -> tuple[Any, Any]:
    from ..model import load_topology
    from ..scenario import load_scenario

    scenario = load_scenario(args.scenario)
    topology = load_topology(args.topology)
    if args.duration is not None:
        duration = parse_duration(args.duration, field="--duration")
        if duration <= 0:
            raise CommandError(f"--duration={args.duration!r} must be > 0, for example 60s")
        import dataclasses

        scenario = dataclasses.replace(scenario, duration_s=duration)
    if not args.scale > 0 or args.scale == float("inf"):
        raise CommandError(f"--scale={args.scale} must be a number > 0, for example 1.5")
    if not 1 <= args.replications <= 1000:
        raise CommandError(f"--replications={args.replications} must be between 1 and 1000")
    return scenario, topology


def run_sim_command(args: argparse.Namespace) -> int:
    _check_writable("--out", args.out)
    scenario, topology = _inputs(args)
    if args.sweep_loads is not None:
        return _sweep(args, scenario, topology)
    from ..model._scenario_sim import simulate_scenario
    from ..results import write_results
    from ._live import summary_table

    doc = simulate_scenario(
        scenario,
        topology,
        seed=args.seed,
        scale=args.scale,
        replications=args.replications,
    )
    if not args.quiet:
        print(summary_table(doc))
        reps = doc["sim"].get("replications")
        if reps:
            print(replications_table(reps))
    if args.out:
        write_results(args.out, doc)
        if not args.quiet:
            print(f"results: {args.out}")
    failed = any(not v["passed"] for v in doc.get("thresholds", []))
    return 1 if failed else 0


HEADLINE = (
    ("overall.offered_rps", "offered/s", 1.0),
    ("overall.goodput_rps", "goodput/s", 1.0),
    ("overall.amplification", "attempts per request", 1.0),
    ("overall.p50_s", "p50 (ms)", 1e3),
    ("overall.p99_s", "p99 (ms)", 1e3),
    ("overall.timeouts_rps", "timeouts/s", 1.0),
    ("overall.rejected_rps", "shed/s", 1.0),
)


def replications_table(section: dict[str, Any]) -> str:
    """The headline figures of ``doc["sim"]["replications"]``: mean and 95% interval."""
    est = section["estimates"]
    lines = [f"{section['n']} replications, 95% confidence intervals:"]
    for key, label, k in HEADLINE:
        e = est.get(key)
        if e is not None:
            lines.append(
                f"  {label:<22} {e['mean'] * k:>12,.3f}  [{e['low'] * k:,.3f} .. {e['high'] * k:,.3f}]"
            )
    return "\n".join(lines)


#: phase_diagram's arguments and the flags that set them
_SWEEP_FLAGS = {
    "loads": "--sweep-loads",
    "trigger_station": "--sweep-station",
    "trigger_factors": "--sweep-factors",
    "trigger_durations": "--sweep-durations",
    "trigger_at_s": "--sweep-at",
    "trigger_kind": "--sweep-kind",
    "workers": "--workers",
    "seed": "--seed",
}


def _sweep(args: argparse.Namespace, scenario: Any, topology: Any) -> int:
    from functools import partial

    if args.sweep_station is None:
        raise CommandError("--sweep-station is required with --sweep-loads: name a station")
    if args.workers is not None and not 1 <= args.workers <= 64:
        raise CommandError(f"--workers={args.workers} must be between 1 and 64")
    loads = _floats("--sweep-loads", args.sweep_loads)
    factors = _floats("--sweep-factors", args.sweep_factors)
    durations = _durations("--sweep-durations", args.sweep_durations)
    at = (
        parse_duration(args.sweep_at, field="--sweep-at")
        if args.sweep_at is not None
        else scenario.duration_s / 4
    )
    from ..model import phase_diagram

    make = partial(_clients_only, scenario, topology)
    try:
        diagram = phase_diagram(
            topology,
            make,
            loads=loads,
            trigger_station=args.sweep_station,
            trigger_factors=factors,
            trigger_durations=durations,
            trigger_at_s=at,
            duration_s=scenario.duration_s,
            seed=scenario.seed if args.seed is None else args.seed,
            workers=args.workers,
            interval_s=scenario.interval_s,
            trigger_kind=args.sweep_kind,
        )
    except InvalidConfig as exc:
        # the library names its own arguments: say which flag the user gave
        if exc.name == "duration_s":
            needed = exc.allowed.split(":", 1)[0].removeprefix(">= ")
            raise CommandError(
                f"--duration={scenario.duration_s:g}s is too short for this sweep: it must be "
                f"at least {needed}s (--sweep-at + the longest of --sweep-durations + a "
                "settling time of max(10 s, twice that trigger, the healthy intervals)); "
                "give a longer --duration"
            ) from None
        flag = _SWEEP_FLAGS.get(exc.name)
        if flag is None:
            raise
        raise CommandError(
            f"{flag}={exc.value!r} is not allowed; {flag} must be {exc.allowed}"
        ) from None
    if not args.quiet:
        print(diagram.format_table())
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump({"kind": "sim_sweep", **diagram.to_dict()}, fh, indent=1)
            fh.write("\n")
        if not args.quiet:
            print(f"phase diagram: {args.out}")
    return 0


def _clients_only(scenario: Any, topology: Any, load: float) -> Any:
    from ..model._scenario_sim import sim_clients

    return sim_clients(scenario, topology, load)[0]
