"""ProbeMiddleware: measure what every request of an ASGI app costs.

Pure ASGI (Starlette's ``GZipMiddleware`` pattern): lifespan and WebSocket scopes pass
straight through. For each HTTP request it

1. creates a :class:`RequestCost` and makes it the current one for the request's task
   (and every task and thread-pool call the app spawns from it, which copy the context),
   so the database, HTTP, thread-pool and loop hooks book their work into it;
2. wraps ``send`` to read the status, the ``content-type`` and ``content-encoding``
   headers and count the body bytes;
3. when the app returns (or raises: status 500, or 499 when the request was cancelled
   before a response started), takes the wall time from arrival to the end of the last
   ``send``, names the endpoint and hands the cost to the probe, which runs the detectors
   and books it in the ledger.

The endpoint is ``"METHOD route"``: the route template from ``scope["route"].path``
(Starlette and FastAPI set it; a route inside ``Mount`` gets the mount's prefix in front,
with ids collapsed), else the raw path with ids collapsed (:func:`path_template`:
numeric, UUID and long hex segments become ``{id}``). A 404 that no route matched is
booked as ``"METHOD (unmatched)"`` so that scanners cannot grow the ledger.

With ``ledger_path="/_brownout/ledger"`` the middleware answers ``GET`` on that path with
the ledger as JSON, to loopback clients only (403 for anyone else); the path is not
passed to the app and not measured.

Overhead per request: one :class:`RequestCost` and its lists, one closure for ``send``,
a context-variable set/reset, the detectors' fast paths and about 16 histogram records.
With ``install(sample=s)`` a request left out by sampling costs a counter and a random
draw here, and no hook books anything for it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from time import perf_counter
from typing import Any, TypeAlias

from ..errors import InvalidConfig
from ._cost import RequestCost, _current, _unsampled
from ._install import Probe, install

__all__ = ["ProbeMiddleware", "path_template"]

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]

_ID_SEGMENTS = re.compile(
    r"(?<=/)(?:[0-9]+"
    r"|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|[0-9a-fA-F]{16,})(?=/|$)"
)
UNMATCHED = "(unmatched)"


def path_template(path: str) -> str:
    """``path`` with every id segment replaced by ``{id}``: all digits (``17``), a UUID, or
    16 or more hex digits (``/orders/5f2b.../items/3`` -> ``/orders/{id}/items/{id}``)."""
    return _ID_SEGMENTS.sub("{id}", path)


_CONVERTOR = re.compile(r"\{([^{}:]+):[^{}]*\}")


def route_template(path: str) -> str:
    """A framework's route path without its parameter convertors:
    ``/items/{id:int}`` -> ``/items/{id}``."""
    return _CONVERTOR.sub(r"{\1}", path) if ":" in path else path


def _route(
    scope: Scope, root_before: str, path: str, status: int, templates: dict[str, str]
) -> str:
    route = scope.get("route")
    template = getattr(route, "path", None)
    if isinstance(template, str) and template and not hasattr(route, "routes"):
        clean = templates.get(template)
        if clean is None:
            clean = route_template(template)
            if len(templates) < 1024:
                templates[template] = clean
        template = clean
        root_after = scope.get("root_path", "")
        if root_after != root_before and root_after.startswith(root_before):
            return path_template(root_after[len(root_before) :]) + template
        return template
    if route is None and status == 404:
        return UNMATCHED
    return path_template(path)


def _loopback(scope: Scope) -> bool:
    client = scope.get("client")
    if not client:
        return False
    try:
        return ipaddress.ip_address(str(client[0])).is_loopback
    except ValueError:
        return False


class ProbeMiddleware:
    """Measure each HTTP request of ``app`` into ``probe``'s ledger (see the module
    docstring). ``probe=None`` calls :func:`install` with its defaults.
    ``ledger_path``: serve the ledger as JSON on this path, to loopback clients only."""

    def __init__(
        self, app: ASGIApp, *, probe: Probe | None = None, ledger_path: str | None = None
    ) -> None:
        if probe is not None and not isinstance(probe, Probe):
            raise InvalidConfig("ProbeMiddleware", "probe", probe, "a Probe or None")
        if ledger_path is not None and (
            not isinstance(ledger_path, str) or not ledger_path.startswith("/")
        ):
            raise InvalidConfig(
                "ProbeMiddleware", "ledger_path", ledger_path, "a path starting with / or None"
            )
        self.app = app
        self.probe = probe if probe is not None else install()
        self.ledger_path = ledger_path
        self._requests = 0
        self._templates: dict[str, str] = {}  # route path -> without convertors

    def __repr__(self) -> str:
        return f"ProbeMiddleware(probe={self.probe!r}, ledger_path={self.ledger_path!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == self.ledger_path:
            await self._serve_ledger(scope, send)
            return
        probe = self.probe
        if probe._monitor is not None:
            loop = asyncio.get_running_loop()
            if loop is not probe._loop:
                probe.attach_loop(loop)
        self._requests += 1
        if self._requests & 1023 == 1:
            probe.note_runtime()
        if not probe.sampled():  # counted, not measured
            probe.skip()
            skipped = _unsampled.set(True)  # the tasks it spawns are not timed either
            try:
                await self.app(scope, receive, send)
            finally:
                _unsampled.reset(skipped)
            return
        cost = RequestCost(scope["method"], path, perf_counter())
        root_before: str = scope.get("root_path", "")
        token = _current.set(cost)

        def observed_send(message: Message) -> Awaitable[None]:
            # a plain function handing back send's awaitable: no coroutine per message
            kind = message["type"]
            if kind == "http.response.body":
                cost.response_bytes += len(message.get("body", b""))
            elif kind == "http.response.start":
                cost.status = message["status"]
                for name, value in message.get("headers", ()):
                    if name == b"content-type":
                        cost.content_type = value.decode("latin-1")
                    elif name == b"content-encoding":
                        cost.content_encoding = value.decode("latin-1")
            return send(message)

        try:
            await self.app(scope, receive, observed_send)
        except asyncio.CancelledError:
            if not cost.status:
                cost.status = 499
            raise
        except BaseException:
            if not cost.status:
                cost.status = 500
            raise
        finally:
            cost.wall_s = perf_counter() - cost.started_s
            _current.reset(token)
            try:
                cost.route = _route(scope, root_before, path, cost.status, self._templates)
                probe.observe(cost)
            except Exception:  # the probe never fails a request
                probe.detector_errors += 1

    async def _serve_ledger(self, scope: Scope, send: Send) -> None:
        if not _loopback(scope):
            status, body = 403, b'{"error": "the ledger is served to loopback clients only"}'
        elif scope["method"] not in ("GET", "HEAD"):
            status, body = 405, b'{"error": "use GET"}'
        else:
            status = 200
            body = json.dumps(self.probe.to_dict(), allow_nan=False).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )
