"""The front door: pure ASGI middleware that keeps an app up under overload and abuse.

:class:`GuardMiddleware` puts the guard policies in front of any ASGI 3 app (Starlette,
FastAPI, ...): the :class:`TrafficShield` and rate limits, criticality, an adaptive
concurrency limit with its queue, and the request's deadline. Metrics come from its event
stream: :class:`PrometheusMetrics` (text format, served by the middleware at
``metrics_path``) and :class:`OpenTelemetryMetrics` (when ``opentelemetry-api`` is
installed).
"""

from ._identity import FORWARDED_HEADERS as FORWARDED_HEADERS
from ._identity import Client as Client
from ._identity import ClientIdentifier as ClientIdentifier
from ._metrics import LATENCY_BUCKETS_S as LATENCY_BUCKETS_S
from ._metrics import Gauge as Gauge
from ._metrics import OpenTelemetryMetrics as OpenTelemetryMetrics
from ._metrics import PrometheusMetrics as PrometheusMetrics
from ._metrics import RequestCompleted as RequestCompleted
from ._metrics import RequestRejected as RequestRejected
from ._middleware import GuardMiddleware as GuardMiddleware
from ._middleware import RouteConfig as RouteConfig
from ._middleware import client_key as client_key
from ._middleware import header_key as header_key
from ._shield import BOT_USER_AGENTS as BOT_USER_AGENTS
from ._shield import GOOD_BOT_USER_AGENTS as GOOD_BOT_USER_AGENTS
from ._shield import BotScoring as BotScoring
from ._shield import ClientActionChanged as ClientActionChanged
from ._shield import Reason as Reason
from ._shield import ShieldDecision as ShieldDecision
from ._shield import TrafficShield as TrafficShield

__all__ = [
    "BOT_USER_AGENTS",
    "FORWARDED_HEADERS",
    "GOOD_BOT_USER_AGENTS",
    "LATENCY_BUCKETS_S",
    "BotScoring",
    "Client",
    "ClientActionChanged",
    "ClientIdentifier",
    "Gauge",
    "GuardMiddleware",
    "OpenTelemetryMetrics",
    "PrometheusMetrics",
    "Reason",
    "RequestCompleted",
    "RequestRejected",
    "RouteConfig",
    "ShieldDecision",
    "TrafficShield",
    "client_key",
    "header_key",
]
