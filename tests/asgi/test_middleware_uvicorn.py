"""GuardMiddleware under a real uvicorn on loopback, in Starlette and FastAPI apps.

uvicorn serves in the test's own event loop on a socket bound to 127.0.0.1:0; httpx
talks to it over real TCP. Each test starts and stops its server within a few hundred
milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from brownout.asgi import GuardMiddleware, RouteConfig
from brownout.guard import deadline_headers
from brownout.guard._criticality import Criticality, current_criticality
from brownout.guard._limit import ConcurrencyLimit
from brownout.guard._ratelimit import RateLimit

uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is a dev dependency of the asgi tests")

pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def serving(app: Any, *, lifespan: str = "off") -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port) until the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan=lifespan)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(main())  # type: ignore[arg-type]


def starlette_app(**guard: Any) -> Any:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    state: dict[str, bool] = {"started": False}

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        state["started"] = True
        yield

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    async def context(request: Request) -> JSONResponse:
        return JSONResponse(
            {"criticality": current_criticality().name, "outgoing": deadline_headers()}
        )

    async def slow(request: Request) -> PlainTextResponse:
        await asyncio.sleep(float(request.query_params.get("s", "0.3")))
        return PlainTextResponse("slow")

    async def started(request: Request) -> JSONResponse:
        return JSONResponse(state)

    return Starlette(
        routes=[
            Route("/", hello),
            Route("/context", context),
            Route("/slow", slow),
            Route("/started", started),
            Route("/healthz", hello),
        ],
        middleware=[Middleware(GuardMiddleware, **guard)],
        lifespan=lifespan,
    )


def test_starlette_app_under_uvicorn_passes_through_and_keeps_lifespan() -> None:
    async def main() -> None:
        async with serving(starlette_app(), lifespan="on") as url, httpx.AsyncClient() as client:
            r = await client.get(url + "/")
            assert (r.status_code, r.text) == (200, "hello")
            assert "brownout-rejected" not in r.headers
            r = await client.get(url + "/started")
            assert r.json() == {"started": True}  # the lifespan scope reached the app

    run(main)


def test_deadline_and_criticality_headers_reach_the_app_over_http() -> None:
    async def main() -> None:
        async with serving(starlette_app()) as url, httpx.AsyncClient() as client:
            r = await client.get(
                url + "/context",
                headers={"brownout-timeout-ms": "5000", "brownout-criticality": "sheddable"},
            )
            body = r.json()
            assert body["criticality"] == "SHEDDABLE"  # the peer is on loopback: trusted
            left_ms = int(body["outgoing"]["brownout-timeout-ms"])
            assert 4000 < left_ms <= 5000  # propagated on, minus the time spent
            r = await client.get(url + "/context")
            assert r.json() == {"criticality": "CRITICAL", "outgoing": {}}

    run(main)


def test_rejections_over_http_rate_limit_and_shedding() -> None:
    limit = ConcurrencyLimit(algorithm="fixed", initial_limit=1, max_queue=0)
    app = starlette_app(
        limit=limit,
        routes={
            "/healthz": RouteConfig(bypass=True),
            "/": RouteConfig(rate_limits=[(RateLimit(rate="1/m", burst=2), None)], limit=False),
        },
    )

    async def main() -> None:
        async with serving(app) as url, httpx.AsyncClient() as client:
            codes = [(await client.get(url + "/")).status_code for _ in range(3)]
            assert codes == [200, 200, 429]
            r = await client.get(url + "/")
            assert r.headers["brownout-rejected"] == "rate_limit"
            assert 1 <= int(r.headers["retry-after"]) <= 60
            assert r.json() == {"error": "rate_limited", "reason": "rate_limit"}
            # One slot, no queue: a second request while the first runs is shed.
            first = asyncio.create_task(client.get(url + "/slow", params={"s": "0.3"}))
            await asyncio.sleep(0.1)
            r = await client.get(url + "/slow", params={"s": "0"})
            assert r.status_code == 503
            assert r.headers["brownout-rejected"] in ("limit", "queue_full")
            assert int(r.headers["retry-after"]) >= 1
            assert (await client.get(url + "/healthz")).status_code == 200  # bypassed
            assert (await first).status_code == 200
            assert limit.in_flight == 0

    run(main)


def test_metrics_endpoint_over_http() -> None:
    async def main() -> None:
        app = starlette_app(metrics_path="/metrics")
        async with serving(app) as url, httpx.AsyncClient() as client:
            for _ in range(3):
                await client.get(url + "/")
            r = await client.get(url + "/metrics")
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
            assert 'brownout_guard_requests_total{outcome="admitted"} 3' in r.text
            assert "brownout_guard_request_duration_seconds_count 3" in r.text

    run(main)


def test_fastapi_app_under_uvicorn() -> None:
    fastapi = pytest.importorskip(
        "fastapi", reason="FastAPI is not installed (optional: pip install fastapi)"
    )
    app = fastapi.FastAPI()

    @app.get("/")
    async def root() -> dict[str, str]:
        return {"criticality": current_criticality().name}

    app.add_middleware(
        GuardMiddleware, criticality={"/": Criticality.SHEDDABLE_PLUS}, metrics_path="/metrics"
    )

    async def main() -> None:
        async with serving(app) as url, httpx.AsyncClient() as client:
            r = await client.get(url + "/")
            assert r.json() == {"criticality": "SHEDDABLE_PLUS"}
            r = await client.get(url + "/metrics")
            assert 'brownout_guard_requests_total{outcome="admitted"} 1' in r.text

    run(main)
