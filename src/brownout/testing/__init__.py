"""Helpers for testing code that uses brownout: a clock that moves only when told to."""

from ._mock_clock import MockClock as MockClock

__all__ = ["MockClock"]
