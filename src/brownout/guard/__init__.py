"""The guard core: sans-IO resilience policies with an injected clock.

Every policy is an immutable, validated configuration holding a separate state object
whose decisions take ``now`` from the policy's clock. The same objects run in asyncio, in
threads, in the ASGI middleware and, in virtual time, in the simulator.
"""

from ._breaker import BreakerMachine as BreakerMachine
from ._breaker import CircuitBreaker as CircuitBreaker
from ._budget import RatioBudget as RatioBudget
from ._budget import RetryBudget as RetryBudget
from ._budget import TokenBucketBudget as TokenBucketBudget
from ._bulkhead import Bulkhead as Bulkhead
from ._cache import Cache as Cache
from ._cache import CacheEntry as CacheEntry
from ._cache import CacheStore as CacheStore
from ._cache import MemoryCacheStore as MemoryCacheStore
from ._deadline import DEADLINE_HEADER as DEADLINE_HEADER
from ._deadline import Deadline as Deadline
from ._deadline import current_deadline as current_deadline
from ._deadline import deadline as deadline
from ._deadline import deadline_from_headers as deadline_from_headers
from ._deadline import deadline_headers as deadline_headers
from ._deadline import parse_grpc_timeout as parse_grpc_timeout
from ._deadline import remaining as remaining
from ._fallback import Fallback as Fallback
from ._hedge import Hedge as Hedge
from ._pipeline import RECOMMENDED_ORDER as RECOMMENDED_ORDER
from ._pipeline import Pipeline as Pipeline
from ._policy import Policy as Policy
from ._retry import Attempt as Attempt
from ._retry import Retry as Retry
from ._timeout import Timeout as Timeout

__all__ = [
    "DEADLINE_HEADER",
    "RECOMMENDED_ORDER",
    "Attempt",
    "BreakerMachine",
    "Bulkhead",
    "Cache",
    "CacheEntry",
    "CacheStore",
    "CircuitBreaker",
    "Deadline",
    "Fallback",
    "Hedge",
    "MemoryCacheStore",
    "Pipeline",
    "Policy",
    "RatioBudget",
    "Retry",
    "RetryBudget",
    "Timeout",
    "TokenBucketBudget",
    "current_deadline",
    "deadline",
    "deadline_from_headers",
    "deadline_headers",
    "parse_grpc_timeout",
    "remaining",
]
