"""The README's Python examples run as written (a stale example is a bug users hit first)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


async def _app(scope: Any, receive: Any, send: Any) -> None:  # what the examples wrap
    return None


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(
    index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # examples may write files (a ledger)
    namespace: dict[str, Any] = {"app": _app, "__name__": "readme_example"}
    try:
        exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), namespace)
    finally:  # what an example installs (the probe's hooks) must not leak into other tests
        for value in namespace.values():
            if type(value).__name__ == "Probe":
                value.uninstall()


def test_the_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 2
