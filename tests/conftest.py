"""Shared test fixtures.

Tests that need Redis or PostgreSQL ask for the ``redis_url`` / ``postgres_url`` fixtures.
When the ``CI`` environment variable is set the service must be there and the test fails
otherwise; on a laptop without it the test is skipped with a message saying what is missing.
"""

from __future__ import annotations

import os
import socket

import pytest

REDIS = ("127.0.0.1", 6379)
POSTGRES = ("127.0.0.1", 5432)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if os.environ.get("CI"):
        pytest.fail(f"{message}, and CI is set: the service must run in CI")
    pytest.skip(f"{message}; start it to run this test")


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", *REDIS)
    return f"redis://{REDIS[0]}:{REDIS[1]}/0"


@pytest.fixture
def postgres_url() -> str:
    require_service("PostgreSQL", *POSTGRES)
    return f"postgresql://postgres@{POSTGRES[0]}:{POSTGRES[1]}/test"
