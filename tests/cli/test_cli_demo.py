"""``brownout demo``: bad flags and an unreachable database are one line and exit 2, with no
process left behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from brownout.cli import main


def _children() -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if "brownout.cli._serve" in line]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--db", "mysql://root@127.0.0.1/shop"], "--db"),
        (["--db", "postgresql://postgres@127.0.0.1:1/test"], "127.0.0.1:1"),
    ],
)
def test_a_bad_database_is_one_line(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _children()
    assert main(["demo", "--quick", "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error printed"
    assert message in err[-1]
    assert err[-1].startswith("brownout: error:")
    assert _children() == before


def test_out_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    assert main(["demo", "--out", str(f)]) == 2
    assert "--out" in capsys.readouterr().err
