"""Test ASGI apps with known behaviour, and a launcher that serves one with uvicorn.

    python tests/asgi/asgi_apps.py capacity --slots C --service S [--guard] [--max-seconds N]

binds 127.0.0.1 on a free port, prints ``PORT <n>`` once listening, then serves until
killed or until ``--max-seconds`` pass (a test never leaves one behind). Kinds:

- ``capacity``: a Starlette app with ``C`` worker slots (an ``asyncio.Semaphore``); each
  request holds a slot for ``S`` seconds (``await asyncio.sleep(S)``), so the capacity is
  ``C / S`` requests per second. Past it requests wait for a slot in FIFO order, however
  long, and nobody cancels them when their client gives up: the queue of a plain server.
- ``hello``: answers ``hello`` at once.

``--guard`` wraps the app in ``GuardMiddleware(app)`` with its defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route


def capacity_app(slots: int, service_s: float) -> Starlette:
    """``slots`` workers, each request occupying one for ``service_s`` seconds."""
    gate = asyncio.Semaphore(slots)

    async def work(request: Request) -> PlainTextResponse:
        async with gate:
            await asyncio.sleep(service_s)
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/", work)])


def hello_app() -> Starlette:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    return Starlette(routes=[Route("/", hello)])


def build(args: argparse.Namespace) -> Any:
    app: Any = capacity_app(args.slots, args.service) if args.kind == "capacity" else hello_app()
    if args.guard:
        from brownout.asgi import GuardMiddleware

        app = GuardMiddleware(app)
    return app


async def serve(args: argparse.Namespace) -> None:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        build(args),
        log_level="warning",
        access_log=False,
        lifespan="off",
        backlog=4096,
        timeout_keep_alive=30,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            return
        await asyncio.sleep(0.01)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    try:
        await asyncio.wait_for(asyncio.shield(task), args.max_seconds)
    except TimeoutError:
        server.should_exit = True
        await task


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["capacity", "hello"])
    parser.add_argument("--slots", type=int, default=10)
    parser.add_argument("--service", type=float, default=0.04)
    parser.add_argument("--guard", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(serve(args))
    except ImportError:
        asyncio.run(serve(args))
    sys.exit(0)


if __name__ == "__main__":
    main()
