"""``brownout proxy``: fault proxies and their control API in one process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import ScenarioError
from ._load import CommandError

DESCRIPTION = """\
Run TCP proxies that inject faults, and the control API that sets them, in one process
(Toxiproxy's server, with HTTP-aware faults on top).

Each proxy listens on --listen and forwards to --upstream; give one --name, --listen and
--upstream per proxy (repeat the three), or a --config file with Toxiproxy's JSON list
[{"name": "payments", "listen": "127.0.0.1:9001", "upstream": "127.0.0.1:9000"}].
Without any proxy it only serves the API and waits for proxies to be created there.
Port 0 picks a free port. When ready it prints one line per proxy,
`proxy NAME on HOST:PORT -> UPSTREAM`, then `api on http://HOST:PORT`.

The control API speaks Toxiproxy's HTTP API (/proxies, /proxies/NAME/toxics, /reset,
/version), so Toxiproxy's clients work, plus /proxies/NAME/http_faults. Ctrl-C or SIGTERM
stops it.
"""


def add_proxy_command(sub: Any) -> None:
    proxy = sub.add_parser(
        "proxy",
        help="fault-injecting proxies with a Toxiproxy-compatible control API",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    proxy.add_argument(
        "--name", action="append", default=[], help="a proxy's name, e.g. payments (repeatable)"
    )
    proxy.add_argument(
        "--listen",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="where a proxy listens, e.g. 127.0.0.1:9001 (repeatable)",
    )
    proxy.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="where a proxy forwards to, e.g. 127.0.0.1:9000 (repeatable)",
    )
    proxy.add_argument("--config", metavar="PATH", help="proxies from a Toxiproxy-style JSON list")
    proxy.add_argument(
        "--api",
        default="127.0.0.1:8474",
        metavar="HOST:PORT",
        help="where the control API listens (default 127.0.0.1:8474); it must be a loopback "
        "address unless --allow-remote-api is given",
    )
    proxy.add_argument(
        "--allow-remote-api",
        action="store_true",
        help="allow --api on a non-loopback address; whoever reaches the API can point "
        "the proxies at any host and break them at will, so only on a trusted network",
    )
    proxy.add_argument("--seed", type=int, help="seed the fault dice (reproducible runs)")
    proxy.add_argument(
        "--quiet", "-q", action="store_true", help="print only the ready lines, no request log"
    )
    proxy.set_defaults(handler=cmd_proxy)


def _address(flag: str, text: str, *, port_zero: bool = True) -> tuple[str, int]:
    from .._net import split_host_port

    example = {"--api": "127.0.0.1:8474", "--upstream": "127.0.0.1:9000"}.get(
        flag, "127.0.0.1:9001"
    )
    try:
        host, port = split_host_port(flag, text, port_zero=True, example="127.0.0.1:8474")
    except ScenarioError:
        raise CommandError(f"{flag}={text!r} must be HOST:PORT, for example {example}") from None
    if port == 0 and not port_zero:
        raise CommandError(f"{flag}={text!r} needs a real port, not 0")
    return host, port


def _proxies_from_flags(args: argparse.Namespace) -> list[dict[str, Any]]:
    names, listens, upstreams = args.name, args.listen, args.upstream
    if not names and len(listens) == 1 and len(upstreams) == 1:
        names = ["proxy"]
    counts = {"--name": len(names), "--listen": len(listens), "--upstream": len(upstreams)}
    if len(set(counts.values())) != 1:
        given = ", ".join(f"{flag} {n} time{'s' if n != 1 else ''}" for flag, n in counts.items())
        raise CommandError(f"each proxy needs one --name, --listen and --upstream (given: {given})")
    for text in listens:
        _address("--listen", text)
    for text in upstreams:
        _address("--upstream", text, port_zero=False)
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise CommandError(f"--name={name!r} is given twice; each proxy needs its own name")
        seen.add(name)
    return [
        {"name": n, "listen": ln, "upstream": u, "enabled": True}
        for n, ln, u in zip(names, listens, upstreams, strict=True)
    ]


def _proxies_from_config(path: str) -> list[Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise CommandError(f"--config={path!r} cannot be read: {reason}") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise CommandError(f"--config={path!r} is not JSON: {exc}") from None
    if not isinstance(doc, list):
        raise CommandError(
            f"--config={path!r} must hold a JSON list of proxies such as "
            '[{"name": "payments", "listen": "127.0.0.1:9001", "upstream": "127.0.0.1:9000"}]'
        )
    return doc


def cmd_proxy(args: argparse.Namespace) -> int:
    """Start the proxies and the API, print the ready lines, serve until a signal."""
    api_host, api_port = _address("--api", args.api)
    from .._net import is_loopback

    if not is_loopback(api_host) and not args.allow_remote_api:
        raise CommandError(
            f"--api={args.api!r} is not a loopback address; add --allow-remote-api to serve "
            "the control API there (anyone who reaches it controls the proxies)"
        )
    flagged = _proxies_from_flags(args)
    configured = _proxies_from_config(args.config) if args.config else []
    names = {p["name"] for p in flagged}
    for i, item in enumerate(configured):
        if isinstance(item, dict) and item.get("name") in names:
            raise CommandError(
                f"--config={args.config!r}: proxies[{i}].name={item['name']!r} is also given "
                "with --name"
            )
    log: Callable[[str], None] | None = None if args.quiet else _log
    return int(
        _event_loop_runner()(
            _serve(
                args,
                api_host=api_host,
                api_port=api_port,
                flagged=flagged,
                configured=configured,
                log=log,
            )
        )
    )


def _event_loop_runner() -> Callable[[Any], Any]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def _log(line: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # a closed stderr must not stop the proxy
        print(line, file=sys.stderr, flush=True)


def _say(line: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(line, flush=True)


async def _serve(
    args: argparse.Namespace,
    *,
    api_host: str,
    api_port: int,
    flagged: list[dict[str, Any]],
    configured: list[Any],
    log: Callable[[str], None] | None,
) -> int:
    from ..faults._api import ApiServer, ProxyLike, populate
    from ..faults._proxy import ProxyHub
    from ..faults._spec import ProxyConflict

    hub = ProxyHub(seed=args.seed)
    api: ApiServer | None = None
    try:
        with _stop_on_signals() as stop:
            proxies: list[ProxyLike] = []
            for doc in flagged:
                try:
                    proxies.append(
                        await hub.create(doc["name"], doc["listen"], doc["upstream"], enabled=True)
                    )
                except ScenarioError as exc:
                    known = exc.field in ("name", "listen", "upstream")
                    flag = f"--{exc.field}" if known else "--name"
                    raise CommandError(f"{flag}={exc.value!r}: {exc.detail}") from None
                except (ProxyConflict, OSError) as exc:
                    raise CommandError(f"--listen={doc['listen']!r}: {_reason(exc)}") from None
            if configured:
                try:
                    proxies.extend(await populate(hub, configured))
                except (ScenarioError, ProxyConflict, OSError) as exc:
                    detail = exc.detail if isinstance(exc, ScenarioError) else _reason(exc)
                    raise CommandError(f"--config={args.config!r}: {detail}") from None
            api = ApiServer(hub, on_request=_request_logger(log) if log else None)
            try:
                await api.start(api_host, api_port)
            except OSError as exc:
                raise CommandError(f"--api={args.api!r}: {_reason(exc)}") from None
            for proxy in proxies:
                _say(f"proxy {proxy.name} on {proxy.listen} -> {proxy.upstream}")
            _say(f"api on {api.url}")
            if log:
                log("brownout proxy: ready; Ctrl-C to stop")
            await stop.wait()
            if log:
                log("brownout proxy: stopping")
            return 0
    finally:
        if api is not None:
            await api.close()
        await hub.close()


def _reason(exc: BaseException) -> str:
    """One line for a bind failure or a conflict."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return " ".join(str(exc).split()) or type(exc).__name__


def _request_logger(log: Callable[[str], None]) -> Callable[[str, str, int], None]:
    def on_request(method: str, target: str, status: int) -> None:
        log(f"api {method} {target} {status}")

    return on_request


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM, from now on (before the ready lines are printed,
    so a reader that signals as soon as it sees them always gets a clean stop)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass
    try:
        yield stop
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
