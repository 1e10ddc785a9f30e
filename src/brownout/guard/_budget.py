"""Retry budgets: cap the extra load that retries and hedges add to one dependency.

Backoff only defers work; under sustained failure every caller still retries, and a
three-attempt policy triples the load on a dependency that is already failing. A budget,
shared by every call to one dependency, bounds that amplification.

Two kinds, both made from ``RetryBudget``:

- ``RetryBudget.ratio(ratio=0.1, min_per_s=10, window_s=10)`` (Google SRE, Finagle): over
  the last ``window_s`` seconds, retries may not exceed ``ratio * requests + min_per_s *
  window_s``. Under 100% failure the load on the dependency is therefore at most
  ``(1 + ratio) * requests + min_per_s * window_s`` attempts per window.
- ``RetryBudget.token_bucket(max_tokens=10, token_ratio=0.1)`` (gRPC retry throttling, A6):
  a bucket starts full; each retryable failure takes 1 token, each success gives back
  ``token_ratio``; a retry may start only while ``tokens > max_tokens / 2``. Under 100%
  failure at most ``ceil(max_tokens / 2)`` retries ever start before successes refill it.

A budget is used through four calls that take ``now`` (sans-IO): ``on_request`` once per
original call, ``on_success`` / ``on_failure`` for every attempt's outcome, and
``try_spend`` before a retry or hedge, which takes the retry from the budget when allowed.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

from .. import _validate as v

__all__ = ["RatioBudget", "RetryBudget", "TokenBucketBudget"]


class RetryBudget:
    """Base of the retry budgets; make one with :meth:`ratio` or :meth:`token_bucket`."""

    __slots__ = ()
    name: str

    @staticmethod
    def ratio(
        ratio: float = 0.1, *, min_per_s: float = 10.0, window_s: float = 10.0, name: str = "budget"
    ) -> RatioBudget:
        """Retries <= ``ratio`` x requests over ``window_s`` seconds, + ``min_per_s`` per second."""
        return RatioBudget(retry_ratio=ratio, min_per_s=min_per_s, window_s=window_s, name=name)

    @staticmethod
    def token_bucket(
        max_tokens: float = 10.0, *, token_ratio: float = 0.1, name: str = "budget"
    ) -> TokenBucketBudget:
        """gRPC-style throttling: failures take a token, successes give back ``token_ratio``."""
        return TokenBucketBudget(max_tokens=max_tokens, token_ratio=token_ratio, name=name)

    def on_request(self, now: float) -> None:
        raise NotImplementedError

    def on_success(self, now: float) -> None:
        raise NotImplementedError

    def on_failure(self, now: float) -> None:
        raise NotImplementedError

    def try_spend(self, now: float) -> bool:
        raise NotImplementedError


_BUCKETS = 10


class _RatioState:
    __slots__ = ("lock", "requests", "retries", "slot", "total_requests", "total_retries")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = [0] * _BUCKETS
        self.retries = [0] * _BUCKETS
        self.slot = 0  # absolute index of the newest bucket
        self.total_requests = 0
        self.total_retries = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class RatioBudget(RetryBudget):
    """Retries over the sliding window <= ``retry_ratio * requests + min_per_s * window_s``.

    The window is kept as 10 buckets of ``window_s / 10`` seconds with running totals, so a
    decision is O(1); the window therefore spans between 0.9 and 1.0 x ``window_s``.
    """

    retry_ratio: float = 0.1
    min_per_s: float = 10.0
    window_s: float = 10.0
    name: str = "budget"
    _state: _RatioState = field(default_factory=_RatioState, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        v.ratio("RetryBudget", "retry_ratio", self.retry_ratio)
        v.non_negative("RetryBudget", "min_per_s", self.min_per_s)
        v.positive("RetryBudget", "window_s", self.window_s)

    def _roll(self, now: float) -> _RatioState:
        st = self._state
        slot = math.floor(now * _BUCKETS / self.window_s)
        if slot != st.slot:
            if slot - st.slot >= _BUCKETS or slot < st.slot:
                st.requests = [0] * _BUCKETS
                st.retries = [0] * _BUCKETS
                st.total_requests = st.total_retries = 0
            else:
                for s in range(st.slot + 1, slot + 1):
                    i = s % _BUCKETS
                    st.total_requests -= st.requests[i]
                    st.total_retries -= st.retries[i]
                    st.requests[i] = st.retries[i] = 0
            st.slot = slot
        return st

    def on_request(self, now: float) -> None:
        with self._state.lock:
            st = self._roll(now)
            st.requests[st.slot % _BUCKETS] += 1
            st.total_requests += 1

    def on_success(self, now: float) -> None:
        pass

    def on_failure(self, now: float) -> None:
        pass

    def allowance(self, now: float) -> float:
        """Retries the window allows in all: ``retry_ratio * requests + min_per_s * window_s``."""
        with self._state.lock:
            st = self._roll(now)
            return self.retry_ratio * st.total_requests + self.min_per_s * self.window_s

    def try_spend(self, now: float) -> bool:
        with self._state.lock:
            st = self._roll(now)
            allowed = self.retry_ratio * st.total_requests + self.min_per_s * self.window_s
            if st.total_retries + 1 > allowed:
                return False
            st.retries[st.slot % _BUCKETS] += 1
            st.total_retries += 1
            return True


class _TokenState:
    __slots__ = ("lock", "tokens")

    def __init__(self, tokens: float) -> None:
        self.lock = threading.Lock()
        self.tokens = tokens


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenBucketBudget(RetryBudget):
    """gRPC retry throttling: ``tokens`` start at ``max_tokens``; failure -1, success
    +``token_ratio`` (capped at ``max_tokens``); a retry may start while ``tokens > max/2``."""

    max_tokens: float = 10.0
    token_ratio: float = 0.1
    name: str = "budget"
    _state: _TokenState = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        v.at_least("RetryBudget", "max_tokens", self.max_tokens, 1)
        v.ratio("RetryBudget", "token_ratio", self.token_ratio)
        object.__setattr__(self, "_state", _TokenState(float(self.max_tokens)))

    @property
    def tokens(self) -> float:
        return self._state.tokens

    def on_request(self, now: float) -> None:
        pass

    def on_success(self, now: float) -> None:
        st = self._state
        with st.lock:
            st.tokens = min(self.max_tokens, st.tokens + self.token_ratio)

    def on_failure(self, now: float) -> None:
        st = self._state
        with st.lock:
            st.tokens = max(0.0, st.tokens - 1.0)

    def try_spend(self, now: float) -> bool:
        return self._state.tokens > self.max_tokens / 2
