"""Rate-limit stores: where :class:`~brownout.guard.RateLimit` keeps its per-key state.

- :class:`MemoryStore` (from :mod:`brownout.guard`): in the process, bounded, O(1).
- :class:`RedisStore`: shared by every replica, one Redis round trip per decision (one Lua
  script using the server's time); falls back to a local limit (or refuses) while Redis is
  away, with an event each way.
- :class:`LocalFirstStore`: for very high rates, decides locally and reconciles with Redis
  at an interval, with a documented bound on the overshoot across replicas.

redis-py is imported when a Redis store is created, not when this package is imported
(``pip install 'brownout[redis]'``).
"""

from ..guard._ratelimit import MemoryStore as MemoryStore
from ._cache import CacheLoadWaited as CacheLoadWaited
from ._cache import CacheNotShared as CacheNotShared
from ._cache import Codec as Codec
from ._cache import JsonCodec as JsonCodec
from ._cache import PickleCodec as PickleCodec
from ._cache import RedisCacheStore as RedisCacheStore
from ._local import LocalFirstStore as LocalFirstStore
from ._redis import RedisStore as RedisStore
from ._redis import StoreRecovered as StoreRecovered
from ._redis import StoreUnavailable as StoreUnavailable

__all__ = [
    "CacheLoadWaited",
    "CacheNotShared",
    "Codec",
    "JsonCodec",
    "LocalFirstStore",
    "MemoryStore",
    "PickleCodec",
    "RedisCacheStore",
    "RedisStore",
    "StoreRecovered",
    "StoreUnavailable",
]
