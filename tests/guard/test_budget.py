from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brownout import Retry, RetryBudget
from brownout.errors import InvalidConfig
from brownout.guard import RatioBudget, TokenBucketBudget
from brownout.testing import MockClock


def test_ratio_budget_allows_ratio_of_requests_plus_floor() -> None:
    budget = RetryBudget.ratio(0.1, min_per_s=0.5, window_s=10)
    for _ in range(100):
        budget.on_request(0.0)
    # 0.1 * 100 + 0.5 * 10 = 15 retries
    granted = sum(budget.try_spend(0.0) for _ in range(50))
    assert granted == 15


def test_ratio_budget_window_forgets_old_requests_and_retries() -> None:
    budget = RetryBudget.ratio(0.5, min_per_s=0, window_s=10)
    for _ in range(10):
        budget.on_request(0.0)
    assert sum(budget.try_spend(0.0) for _ in range(10)) == 5
    assert not budget.try_spend(5.0)
    # 10 s later the old requests and retries have left the window.
    assert not budget.try_spend(10.5)
    budget.on_request(10.5)
    budget.on_request(10.5)
    assert budget.try_spend(10.5)
    assert not budget.try_spend(10.5)


def test_token_bucket_follows_grpc_throttling() -> None:
    budget = RetryBudget.token_bucket(10, token_ratio=0.5)
    assert budget.try_spend(0)
    for _ in range(5):
        budget.on_failure(0)
    assert budget.tokens == 5
    assert not budget.try_spend(0)  # retries only while tokens > 5
    budget.on_success(0)
    assert budget.tokens == 5.5
    assert budget.try_spend(0)
    for _ in range(100):
        budget.on_success(0)
    assert budget.tokens == 10


def _amplification(budget: RetryBudget, requests: int, rate: float, attempts: int) -> float:
    """Attempts per request when every attempt fails, at ``rate`` requests per second."""
    clock = MockClock()
    retry = Retry(attempts=attempts, base_s=0.0, budget=budget, clock=clock)
    sent = 0

    def always_fails() -> None:
        nonlocal sent
        sent += 1
        raise ConnectionError

    for _ in range(requests):
        with pytest.raises(ConnectionError):
            retry.call(always_fails)
        clock.advance(1.0 / rate)
    return sent / requests


def test_ratio_budget_bounds_amplification_under_total_failure() -> None:
    # 3 attempts would triple the load; the 10% budget with a floor of 1/s over 10 s windows
    # allows at most 0.1 + 1*10/(100*10) = 0.11 retries per request at 100 req/s.
    amp = _amplification(RetryBudget.ratio(0.1, min_per_s=1, window_s=10), 5000, 100.0, 3)
    assert amp <= 1.11 + 1e-9
    assert amp >= 1.09  # and the budget is actually used


def test_token_bucket_bounds_retries_under_total_failure() -> None:
    budget = RetryBudget.token_bucket(10, token_ratio=0.1)
    amp = _amplification(budget, 1000, 100.0, 3)
    # At most ceil(10/2) = 5 retries ever start before a success refills the bucket.
    assert amp * 1000 - 1000 <= 5


@settings(max_examples=60, deadline=None)
@given(
    ratio=st.floats(0, 1),
    floor=st.floats(0, 5),
    window=st.floats(0.5, 30),
    steps=st.lists(st.tuples(st.floats(0, 2), st.integers(0, 5), st.integers(0, 5)), max_size=60),
)
def test_ratio_budget_never_grants_more_than_its_bound(
    ratio: float, floor: float, window: float, steps: list[tuple[float, int, int]]
) -> None:
    budget = RatioBudget(retry_ratio=ratio, min_per_s=floor, window_s=window)
    now = 0.0
    requests_at: list[float] = []
    retries_at: list[float] = []
    for dt, requests, tries in steps:
        now += dt
        for _ in range(requests):
            budget.on_request(now)
            requests_at.append(now)
        for _ in range(tries):
            if not budget.try_spend(now):
                continue
            retries_at.append(now)
            # The budget tracks 10 buckets spanning between 0.9 and 1.0 window: every retry
            # of the last 0.9 window is counted, and no request older than one window.
            recent_retries = sum(1 for t in retries_at if t > now - 0.9 * window + 1e-9)
            window_requests = sum(1 for t in requests_at if t >= now - window - 1e-9)
            assert recent_retries <= ratio * window_requests + floor * window + 1e-9


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["ok", "fail", "try"]), max_size=200), st.floats(1, 50))
def test_token_bucket_tokens_stay_within_bounds(ops: list[str], max_tokens: float) -> None:
    budget = TokenBucketBudget(max_tokens=max_tokens, token_ratio=0.3)
    granted_while_low = 0
    for op in ops:
        if op == "ok":
            budget.on_success(0)
        elif op == "fail":
            budget.on_failure(0)
        elif budget.try_spend(0) and budget.tokens <= max_tokens / 2:
            granted_while_low += 1
        assert 0 <= budget.tokens <= max_tokens
    assert granted_while_low == 0


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: RetryBudget.ratio(1.5), "retry_ratio=1.5.*\\[0, 1\\]"),
        (lambda: RetryBudget.ratio(0.1, min_per_s=-1), "min_per_s=-1"),
        (lambda: RetryBudget.ratio(0.1, window_s=0), "window_s=0"),
        (lambda: RetryBudget.token_bucket(0.5), "max_tokens=0.5"),
        (lambda: RetryBudget.token_bucket(10, token_ratio=2), "token_ratio=2"),
    ],
)
def test_invalid_budgets_name_the_argument(make: object, match: str) -> None:
    with pytest.raises(InvalidConfig, match=match):
        make()  # type: ignore[operator]
