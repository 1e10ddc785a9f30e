#!/usr/bin/env python3
"""Set up and run brownout from a fresh clone, with nothing but Python 3.11+.

    python3 dev.py demo     the main job: brownout demo (extra arguments are passed on)
    python3 dev.py test     format check, lint, type check and the whole test suite
                            (as root with apt-get, it installs chromium for the report's
                            browser test when it is missing)
    python3 dev.py bench    the guard benchmarks (full length)

Each command creates ./.venv when it is missing and installs the project with what the
command needs; it reinstalls only when pyproject.toml changed since the last install.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")


def ensure_env() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py must explain itself on old Pythons
        sys.exit("dev.py: Python 3.11 or newer is required, this is " + sys.version.split()[0])
    if not PY.exists():
        print("dev.py: creating .venv", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    stamp = VENV / ".brownout-installed"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    print("dev.py: installing brownout with its test and benchmark tools", flush=True)
    pip = [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "-U", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[all,dev]"], check=True)
    stamp.write_text(digest)


def ensure_chromium() -> None:
    """The report's browser test needs Debian's chromium: install it with apt-get when it is
    missing, apt-get is there and we are root. Otherwise say so; the test then skips (or
    fails when CI is set)."""
    if shutil.which("chromium") or shutil.which("chromium-browser"):
        return
    apt = shutil.which("apt-get")
    if apt is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        print("dev.py: chromium is missing; the report's browser test will not run", flush=True)
        return
    print("dev.py: installing chromium for the report's browser test", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "-q", "chromium"]
    if subprocess.run(install, env=env, check=False).returncode:
        # A fresh container has no package lists yet: fetch them once and try again.
        subprocess.run([apt, "update", "-q"], env=env, check=False)
        if subprocess.run(install, env=env, check=False).returncode:
            print("dev.py: could not install chromium; the browser test will not run", flush=True)


def run(*cmd: str) -> None:
    print("dev.py: " + " ".join(cmd), flush=True)
    done = subprocess.run(cmd, cwd=ROOT, check=False)
    if done.returncode:
        sys.exit(done.returncode)


def tool(name: str) -> str:
    return str(BIN / name)


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in ("demo", "test", "bench"):
        sys.exit("usage: python3 dev.py demo | test | bench")
    ensure_env()
    command, rest = argv[0], argv[1:]
    if command == "test":
        run(tool("ruff"), "format", "--check", "src", "tests", "benchmarks", "dev.py")
        run(tool("ruff"), "check", "src", "tests", "benchmarks", "dev.py")
        run(tool("mypy"))
        ensure_chromium()
        run(str(PY), "-m", "pytest", "-q", *rest)
    elif command == "demo":
        run(str(PY), "-m", "brownout", "demo", *rest)
    else:
        run(str(PY), "benchmarks/bench_guard.py", *rest)


if __name__ == "__main__":
    main(sys.argv[1:])
