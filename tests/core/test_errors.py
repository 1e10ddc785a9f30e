from __future__ import annotations

from brownout import errors


def test_every_error_derives_from_the_root() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.BrownoutError)


def test_tree_matches_the_docstring() -> None:
    assert issubclass(errors.InvalidConfig, ValueError)
    assert issubclass(errors.DeadlineExceeded, TimeoutError)
    assert issubclass(errors.CircuitOpen, errors.Rejected)
    assert issubclass(errors.BulkheadFull, errors.Overloaded)
    assert issubclass(errors.RateLimited, errors.Overloaded)
    assert issubclass(errors.Overloaded, errors.Rejected)
    for name in errors.__all__:
        assert name in (errors.__doc__ or "")


def test_errors_carry_their_data() -> None:
    err = errors.CircuitOpen(policy="payments", until=12.5, state="open")
    assert err.until == 12.5
    assert "payments" in str(err)
    assert errors.RateLimited(policy="api", retry_after_s=0.25).retry_after_s == 0.25
    full = errors.BulkheadFull(policy="db", max_concurrent=4, max_queue=2, waited_s=0.0)
    assert (full.max_concurrent, full.max_queue) == (4, 2)
    bad = errors.InvalidConfig("Retry", "attempts", 0, "an integer >= 1")
    assert str(bad) == "Retry: attempts=0 is not allowed; attempts must be an integer >= 1"
