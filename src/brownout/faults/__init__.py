"""Faults on a schedule: a Toxiproxy-compatible proxy with HTTP-aware faults, its control
API, in-process wrappers for tests, and the runner of a scenario's fault timeline.

- What a fault is: :class:`Toxic` (TCP, Toxiproxy's semantics), :class:`HttpFault` and the
  sans-IO :class:`HttpFaultSet` that decides the :class:`Action` for each request.
- The proxy: :class:`ProxyHub` runs many :class:`Proxy` s in one event loop;
  :func:`serve_api` serves Toxiproxy's control API over it and :class:`ProxyClient` talks
  to it (or to Toxiproxy); ``brownout proxy`` is the command.
- In-process, no sockets: :class:`FaultTransport` / :class:`AsyncFaultTransport` wrap an
  httpx transport and :class:`FaultMiddleware` wraps an ASGI app.
- The timeline: :class:`FaultTimeline` applies a scenario's faults at their times through a
  control API and records when each change took effect; :func:`fault_session` provides the
  proxies for a load run (:class:`ProxyProcess` starts ``brownout proxy`` when needed).
"""

from ._api import ApiServer as ApiServer
from ._api import serve_api as serve_api
from ._client import ProxyApiError as ProxyApiError
from ._client import ProxyClient as ProxyClient
from ._inprocess import AsyncFaultTransport as AsyncFaultTransport
from ._inprocess import FaultMiddleware as FaultMiddleware
from ._inprocess import FaultTransport as FaultTransport
from ._process import ProxyProcess as ProxyProcess
from ._proxy import Proxy as Proxy
from ._proxy import ProxyHub as ProxyHub
from ._session import fault_session as fault_session
from ._spec import TOXIC_TYPES as TOXIC_TYPES
from ._spec import Action as Action
from ._spec import HttpFault as HttpFault
from ._spec import HttpFaultSet as HttpFaultSet
from ._spec import ProxyConflict as ProxyConflict
from ._spec import ProxyNotFound as ProxyNotFound
from ._spec import Toxic as Toxic
from ._spec import fault_from_spec as fault_from_spec
from ._timeline import FaultControl as FaultControl
from ._timeline import FaultTimeline as FaultTimeline

__all__ = [
    "TOXIC_TYPES",
    "Action",
    "ApiServer",
    "AsyncFaultTransport",
    "FaultControl",
    "FaultMiddleware",
    "FaultTimeline",
    "FaultTransport",
    "HttpFault",
    "HttpFaultSet",
    "Proxy",
    "ProxyApiError",
    "ProxyClient",
    "ProxyConflict",
    "ProxyHub",
    "ProxyNotFound",
    "ProxyProcess",
    "Toxic",
    "fault_from_spec",
    "fault_session",
    "serve_api",
]
