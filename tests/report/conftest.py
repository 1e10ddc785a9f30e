"""Documents shared by the report tests: built once per session (about 0.5 s for the three runs)."""

from __future__ import annotations

from typing import Any

import pytest
from report_docs import ledger, make_run, summary


@pytest.fixture(scope="session")
def runs() -> list[dict[str, Any]]:
    """naive (load), guarded (load) and predicted (sim) runs of one scenario."""
    return [
        make_run("naive", seed=1),
        make_run("guarded", seed=2),
        make_run("guarded", kind="sim", seed=3),
    ]


@pytest.fixture(scope="session")
def ledger_doc() -> dict[str, Any]:
    return ledger()


@pytest.fixture(scope="session")
def summary_doc() -> dict[str, Any]:
    return summary()
