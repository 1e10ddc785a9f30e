"""brownout: keep a Python backend alive under real traffic.

Measure what every request costs, predict where the service saturates, prove it with
open-model load, and protect it with policies that make it fail in a controlled way.
This package re-exports the guard policies; errors live in :mod:`brownout.errors`,
events in :mod:`brownout.events`, test helpers in :mod:`brownout.testing`.
"""

from ._clock import Clock as Clock
from ._clock import MonotonicClock as MonotonicClock
from ._version import __version__ as __version__
from .guard import CRITICALITY_HEADER as CRITICALITY_HEADER
from .guard import AdaptiveThrottle as AdaptiveThrottle
from .guard import Attempt as Attempt
from .guard import Bulkhead as Bulkhead
from .guard import Cache as Cache
from .guard import CircuitBreaker as CircuitBreaker
from .guard import ConcurrencyLimit as ConcurrencyLimit
from .guard import Criticality as Criticality
from .guard import Deadline as Deadline
from .guard import Dimmer as Dimmer
from .guard import Fallback as Fallback
from .guard import Hedge as Hedge
from .guard import Pipeline as Pipeline
from .guard import Policy as Policy
from .guard import RateLimit as RateLimit
from .guard import Retry as Retry
from .guard import RetryBudget as RetryBudget
from .guard import Timeout as Timeout
from .guard import criticality as criticality
from .guard import current_criticality as current_criticality
from .guard import current_deadline as current_deadline
from .guard import deadline as deadline
from .guard import deadline_from_headers as deadline_from_headers
from .guard import deadline_headers as deadline_headers
from .guard import remaining as remaining

__all__ = [
    "CRITICALITY_HEADER",
    "AdaptiveThrottle",
    "Attempt",
    "Bulkhead",
    "Cache",
    "CircuitBreaker",
    "Clock",
    "ConcurrencyLimit",
    "Criticality",
    "Deadline",
    "Dimmer",
    "Fallback",
    "Hedge",
    "MonotonicClock",
    "Pipeline",
    "Policy",
    "RateLimit",
    "Retry",
    "RetryBudget",
    "Timeout",
    "__version__",
    "criticality",
    "current_criticality",
    "current_deadline",
    "deadline",
    "deadline_from_headers",
    "deadline_headers",
    "remaining",
]
