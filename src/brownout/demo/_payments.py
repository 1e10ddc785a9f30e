"""The payments service the demo shop calls: its own process, behind ``brownout proxy``.

``POST /charge`` with ``{"order_id": int, "amount_cents": int}`` answers
``{"status": "charged", ...}`` after ``latency_s`` (default 20 ms: a card network is not
instant). Slowdowns and failures are not its business: the proxy in front of it injects
them on the demo's schedule, the way a real dependency degrades.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["create_payments"]


def create_payments(*, latency_s: float = 0.02) -> Any:
    """The payments service as an ASGI app."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from .. import _validate as v

    v.non_negative("create_payments", "latency_s", latency_s)

    async def charge(request: Request) -> Response:
        try:
            body = await request.json()
            order_id = int(body["order_id"])
            amount = int(body["amount_cents"])
        except (ValueError, TypeError, KeyError):
            return JSONResponse(
                {"error": "body: JSON with order_id and amount_cents (integers)"}, status_code=400
            )
        await asyncio.sleep(latency_s)
        return JSONResponse({"status": "charged", "order_id": order_id, "amount_cents": amount})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[Route("/charge", charge, methods=["POST"]), Route("/healthz", healthz)]
    )
