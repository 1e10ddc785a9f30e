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
from ._cache import BUSY as BUSY
from ._cache import Cache as Cache
from ._cache import CacheEntry as CacheEntry
from ._cache import CacheStore as CacheStore
from ._cache import Lease as Lease
from ._cache import MemoryCacheStore as MemoryCacheStore
from ._cache import SharedCacheStore as SharedCacheStore
from ._criticality import CRITICALITY_HEADER as CRITICALITY_HEADER
from ._criticality import Criticality as Criticality
from ._criticality import criticality as criticality
from ._criticality import criticality_from_headers as criticality_from_headers
from ._criticality import criticality_headers as criticality_headers
from ._criticality import current_criticality as current_criticality
from ._deadline import DEADLINE_HEADER as DEADLINE_HEADER
from ._deadline import Deadline as Deadline
from ._deadline import current_deadline as current_deadline
from ._deadline import deadline as deadline
from ._deadline import deadline_from_headers as deadline_from_headers
from ._deadline import deadline_headers as deadline_headers
from ._deadline import parse_grpc_timeout as parse_grpc_timeout
from ._deadline import remaining as remaining
from ._dimmer import Dimmer as Dimmer
from ._dimmer import DimmerChanged as DimmerChanged
from ._fallback import Fallback as Fallback
from ._hedge import Hedge as Hedge
from ._limit import AIMDLimit as AIMDLimit
from ._limit import ConcurrencyAdmitted as ConcurrencyAdmitted
from ._limit import ConcurrencyLimit as ConcurrencyLimit
from ._limit import ConcurrencyLimitChanged as ConcurrencyLimitChanged
from ._limit import ConcurrencyShed as ConcurrencyShed
from ._limit import FixedLimit as FixedLimit
from ._limit import Gradient2Limit as Gradient2Limit
from ._limit import LimitAlgorithm as LimitAlgorithm
from ._limit import LimitEstimator as LimitEstimator
from ._limit import Permit as Permit
from ._limit import VegasLimit as VegasLimit
from ._pipeline import RECOMMENDED_ORDER as RECOMMENDED_ORDER
from ._pipeline import Pipeline as Pipeline
from ._policy import Policy as Policy
from ._ratelimit import Decision as Decision
from ._ratelimit import MemoryStore as MemoryStore
from ._ratelimit import RateLimit as RateLimit
from ._ratelimit import RateLimitEnded as RateLimitEnded
from ._ratelimit import RateLimitStarted as RateLimitStarted
from ._ratelimit import RateStore as RateStore
from ._retry import Attempt as Attempt
from ._retry import Retry as Retry
from ._throttle import AdaptiveThrottle as AdaptiveThrottle
from ._timeout import Timeout as Timeout

__all__ = [
    "BUSY",
    "CRITICALITY_HEADER",
    "DEADLINE_HEADER",
    "RECOMMENDED_ORDER",
    "AIMDLimit",
    "AdaptiveThrottle",
    "Attempt",
    "BreakerMachine",
    "Bulkhead",
    "Cache",
    "CacheEntry",
    "CacheStore",
    "CircuitBreaker",
    "ConcurrencyAdmitted",
    "ConcurrencyLimit",
    "ConcurrencyLimitChanged",
    "ConcurrencyShed",
    "Criticality",
    "Deadline",
    "Decision",
    "Dimmer",
    "DimmerChanged",
    "Fallback",
    "FixedLimit",
    "Gradient2Limit",
    "Hedge",
    "Lease",
    "LimitAlgorithm",
    "LimitEstimator",
    "MemoryCacheStore",
    "MemoryStore",
    "Permit",
    "Pipeline",
    "Policy",
    "RateLimit",
    "RateLimitEnded",
    "RateLimitStarted",
    "RateStore",
    "RatioBudget",
    "Retry",
    "RetryBudget",
    "SharedCacheStore",
    "Timeout",
    "TokenBucketBudget",
    "VegasLimit",
    "criticality",
    "criticality_from_headers",
    "criticality_headers",
    "current_criticality",
    "current_deadline",
    "deadline",
    "deadline_from_headers",
    "deadline_headers",
    "parse_grpc_timeout",
    "remaining",
]
