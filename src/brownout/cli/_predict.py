"""``brownout predict LEDGER.json``: where the service saturates, before it does.

Reads a probe ledger (``brownout profile`` writes one), builds the capacity model
(``brownout.model``: resources, per-endpoint demands, the mix) and prints every resource's
capacity, the first to saturate and at what rate, the knees, then utilization, latency
and timeout probability at a few rates (``--rate``, repeatable; by default 25 %, 50 %,
75 %, 90 % and 100 % of the saturation rate) and plain-language warnings.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..units import parse_duration
from ._load import CommandError

DESCRIPTION = __doc__


def add_predict_command(sub: Any) -> None:
    p = sub.add_parser(
        "predict",
        help="capacity prediction from a probe ledger: first resource to saturate, knee",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("ledger", metavar="LEDGER.json")
    p.add_argument("--rate", type=float, action="append", default=[], help="req/s (repeatable)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (1)")
    p.add_argument("--slo", default="1s", help="the p99 bound of the SLO knee (1s)")
    p.add_argument("--timeout", default="2s", help="the client timeout (2s)")
    p.add_argument(
        "--mix", default=None, help="'GET /a=3,POST /b=1' (default: the ledger's request counts)"
    )
    p.add_argument(
        "--topology",
        default=None,
        metavar="FILE",
        help="capacity settings (workers, pool sizes...) in place of the probe's: stations "
        "and pools named loop, db-pool, threads, <host>-pool",
    )
    p.add_argument("--json", default=None, metavar="PATH", help="also write the prediction")
    p.set_defaults(handler=run_predict_command)


def _parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, sep, weight = part.rpartition("=")
        try:
            value = float(weight)
        except ValueError:
            value = -1.0
        if not sep or not name.strip() or not value > 0:
            raise CommandError(
                f"--mix: {part!r} is not allowed; use ENDPOINT=WEIGHT pairs such as 'GET /a=3'"
            )
        mix[name.strip()] = value
    return mix


def _rate(value: float) -> str:
    return "unbounded" if value == float("inf") else f"{value:,.1f} req/s"


def run_predict_command(args: argparse.Namespace) -> int:
    from ..errors import InvalidConfig
    from ..model._capacity import predict_capacity
    from ..model._ledger import capacity_from_ledger

    path = Path(args.ledger)
    try:
        ledger = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CommandError(f"{args.ledger}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CommandError(f"{args.ledger}: not JSON ({exc})") from None
    slo_s = parse_duration(args.slo, field="--slo")
    timeout_s = parse_duration(args.timeout, field="--timeout")
    if not slo_s > 0 or not timeout_s > 0:
        raise CommandError("--slo and --timeout must be durations > 0")
    bad = [r for r in args.rate if not r > 0]
    if bad:
        raise CommandError(f"--rate={bad[0]!r} is not allowed; use a rate > 0")
    mix = _parse_mix(args.mix) if args.mix else None
    try:
        lm = capacity_from_ledger(ledger, mix=mix, workers=args.workers)
        changed: dict[str, int] = {}
        if args.topology is not None:
            from ..model import load_topology

            lm, changed = lm.with_capacity(load_topology(args.topology))
        model = lm.model()
        sat = model.saturation_rps
        rates = (
            args.rate or [f * sat for f in (0.25, 0.5, 0.75, 0.9, 1.0)]
            if sat < float("inf")
            else args.rate or [10.0]
        )
        prediction = predict_capacity(
            lm.resources,
            lm.demands_s,
            lm.mix,
            rates,
            visits=lm.visits,
            timeout_s=timeout_s,
            slo_s=slo_s,
        )
    except InvalidConfig as exc:
        raise CommandError(f"{args.ledger}: {exc}") from None
    for name, servers in changed.items():
        print(f"capacity from {args.topology}: {name} has {servers} servers")
    if changed:
        print()
    print(f"{'resource':40s}{'kind':>12s}{'servers':>9s}{'demand/req':>12s}{'saturates at':>18s}")
    for r in lm.resources:
        per = model.demand_per_request_s(r.name)
        print(
            f"{r.name[:39]:40s}{r.kind:>12s}{r.servers:>9d}{1000 * per:>10.2f}ms"
            f"{_rate(model.saturation_by_resource_rps[r.name]):>18s}"
        )
    print()
    print(f"first to saturate: {prediction.bottleneck} at {_rate(prediction.saturation_rps)}")
    print(
        f"knee (utilization {prediction.knee_utilization:.0%}): {_rate(prediction.utilization_knee_rps)}"
    )
    if prediction.slo_knee_rps is not None:
        print(f"knee (p99 <= {1000 * slo_s:g} ms): {_rate(prediction.slo_knee_rps)}")
    print()
    names = [r.name for r in lm.resources]
    header = f"{'rate':>12s}" + "".join(f"{n[:14]:>16s}" for n in names)
    print(header + f"{'mean':>10s}{'p99':>10s}{'P(timeout)':>12s}")
    for point in prediction.points:
        cells = "".join(f"{point.resource(n).utilization:>15.0%} " for n in names)
        p_to = point.timeout_probability
        print(
            f"{point.rate_rps:>12.1f}{cells}{1000 * point.latency_mean_s:>8.1f}ms"
            f"{1000 * point.latency_p99_s:>8.1f}ms{'-' if p_to is None else f'{p_to:.2%}':>12s}"
        )
    print("(utilization per resource; latency from M/M/c stations in tandem)")
    warnings = list(prediction.warnings) + list(lm.notes)
    for point in prediction.points:
        warnings.extend(w for w in point.warnings if w not in warnings)
    if warnings:
        print()
        for w in warnings:
            print(f"warning: {w}")
    if args.json:
        out = {"prediction": prediction.to_dict(), "notes": list(lm.notes)}
        Path(args.json).write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0
