"""``python -m brownout.cli._serve shop|payments ...``: one demo server in its own process.

Used by ``brownout demo``, which starts each server as a child process and waits for the
ready line ``serving on http://HOST:PORT``. It binds the socket itself (port 0 picks a free
one), runs uvicorn (uvloop and httptools when installed, no access log), and stops cleanly
on SIGTERM or Ctrl-C. Bad arguments print one line and exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
from collections.abc import Sequence
from typing import Any

from .._net import join_host_port, split_host_port
from ..errors import BrownoutError

READY = "serving on "


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2
        print(f"brownout serve: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m brownout.cli._serve")
    sub = p.add_subparsers(dest="what", required=True)
    shop = sub.add_parser("shop")
    shop.add_argument("--variant", choices=("naive", "guarded"), required=True)
    shop.add_argument("--db", required=True, help="SQLAlchemy async URL")
    shop.add_argument("--payments", required=True, help="payments base URL")
    shop.add_argument("--products", type=int, default=2000)
    shop.add_argument("--pool-size", type=int, default=5)
    shop.add_argument("--max-overflow", type=int, default=5)
    shop.add_argument("--ledger", default=None, help="probe the shop; write its ledger here")
    shop.add_argument("--listen", default="127.0.0.1:0")
    app = sub.add_parser("app")
    app.add_argument("import_string", help="module:attribute of an ASGI app")
    app.add_argument("--ledger", default=None, help="probe the app; write its ledger here")
    app.add_argument("--listen", default="127.0.0.1:0")
    pay = sub.add_parser("payments")
    pay.add_argument("--latency-ms", type=float, default=20.0)
    pay.add_argument("--listen", default="127.0.0.1:0")
    return p


def build_app(args: argparse.Namespace) -> tuple[Any, Any]:
    """The ASGI app and a finisher called at shutdown (writes the probe's ledger)."""
    if args.what == "payments":
        from ..demo import create_payments

        return create_payments(latency_s=args.latency_ms / 1000.0), None

    probe: Any = None
    wrap = None
    if args.ledger:
        from ..probe import ProbeMiddleware, install

        probe = install()

        def wrap(app: Any) -> Any:
            return ProbeMiddleware(app, probe=probe)

    def finish() -> None:
        if probe is not None:
            probe.write(args.ledger)
            probe.uninstall()

    if args.what == "app":
        app = import_app(args.import_string)
        return (wrap(app) if wrap is not None else app), finish

    from ..demo import create_shop

    app = create_shop(
        args.variant,
        db_url=args.db,
        payments_url=args.payments,
        n_products=args.products,
        pool_size=args.pool_size,
        max_overflow=args.max_overflow,
        wrap=wrap,
    )
    return app, finish


def import_app(import_string: str) -> Any:
    """The object named by ``"module:attribute"`` (the working directory is importable),
    or a BrownoutError saying what is wrong."""
    import importlib

    module_name, sep, attr = import_string.partition(":")
    if not sep or not module_name or not attr:
        raise BrownoutError(
            f"app={import_string!r} is not allowed; use module:attribute, such as main:app"
        )
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BrownoutError(
            f"app={import_string!r}: cannot import {module_name!r}: {exc}"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise BrownoutError(f"app={import_string!r}: {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise BrownoutError(f"app={import_string!r} is not an ASGI app (not callable)")
    return obj


def _on_shutdown(app: Any, finish: Any) -> Any:
    """``app``, calling ``finish()`` when the server shuts down (at ``lifespan.shutdown``:
    uvicorn re-raises SIGTERM once it has stopped, so code after ``serve()`` never runs)."""
    if finish is None:
        return app

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def watched() -> Any:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                finish()
            return message

        await app(scope, watched, send)

    return wrapped


async def _serve(app: Any, sock: socket.socket) -> None:
    import uvicorn

    config = uvicorn.Config(
        app,
        http="auto",
        access_log=False,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=2,  # requests hung on a dead dependency do not hold it
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task
            raise BrownoutError("the server stopped while starting")
        await asyncio.sleep(0.01)
    host, port = sock.getsockname()[:2]
    print(f"{READY}http://{join_host_port(host, port)}", flush=True)
    await task


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        host, port = split_host_port("--listen", args.listen, port_zero=True, loopback=True)
    except ValueError as exc:
        print(f"brownout serve: {exc}", file=sys.stderr)
        return 2
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        print(f"brownout serve: --listen {args.listen}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        app, finish = build_app(args)
    except (BrownoutError, ValueError) as exc:
        print(f"brownout serve: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:
        runner: Any = asyncio.run
    else:
        runner = uvloop.run
    try:
        with contextlib.suppress(KeyboardInterrupt):
            runner(_serve(_on_shutdown(app, finish), sock))
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
