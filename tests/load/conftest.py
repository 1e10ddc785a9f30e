from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SERVERS = Path(__file__).with_name("servers.py")


@pytest.fixture
def server() -> Iterator[Callable[..., str]]:
    """Start a purpose-built loopback server (see servers.py); returns its base URL."""
    procs: list[subprocess.Popen[str]] = []

    def start(kind: str, *args: str) -> str:
        proc = subprocess.Popen(
            [sys.executable, str(SERVERS), kind, "--max-seconds", "60", *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("PORT "), line
        return f"http://127.0.0.1:{int(line.split()[1])}"

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
