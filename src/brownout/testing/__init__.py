"""Helpers for testing code that uses brownout: a clock that moves only when told to."""

from ._mock_clock import MockClock as MockClock
from ._stores import RATE_STORE_CHECKS as RATE_STORE_CHECKS
from ._stores import acheck_rate_store as acheck_rate_store
from ._stores import check_rate_store as check_rate_store

__all__ = [
    "RATE_STORE_CHECKS",
    "MockClock",
    "acheck_rate_store",
    "check_rate_store",
]
