from __future__ import annotations

import subprocess
import sys

import pytest

from brownout import __version__
from brownout.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"brownout {__version__}"


def test_help_lists_what_brownout_is(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "brownout" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--bogus"], ["nonsense-command"], ["--version", "extra"]])
def test_usage_errors_print_one_line_and_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code: object
    try:
        code = main(argv)
    except SystemExit as exc:  # --version exits before the extra argument is seen
        code = exc.code
        if code == 0:
            return
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("brownout: error: ")


def test_console_entry_point_runs_as_a_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "brownout", "--bogus"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr
