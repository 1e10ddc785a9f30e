"""A ``brownout proxy`` process for the length of a run.

The proxy runs in its own process, never in the load generator's: relaying bytes costs CPU,
and sharing the generator's interpreter would show up as send lag and blur what is measured.
:class:`ProxyProcess` starts ``python -m brownout proxy`` with the scenario's proxies and a
control API on a free loopback port, waits for its ready lines, and stops it (SIGTERM, then
SIGKILL) on exit, on error and on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import TracebackType

from ..errors import BrownoutError
from ..scenario import ProxySpec

__all__ = ["ProxyProcess"]

_READY_PREFIX = "api on "


class ProxyProcess:
    """``with ProxyProcess(specs) as api_url:`` runs the proxies for the block."""

    def __init__(self, proxies: Sequence[ProxySpec], *, ready_timeout_s: float = 15.0) -> None:
        self.proxies = tuple(proxies)
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.api_url = ""

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "brownout", "proxy", "--api", "127.0.0.1:0"]
        for spec in self.proxies:
            cmd += ["--name", spec.name, "--listen", spec.listen, "--upstream", spec.upstream]
        return cmd

    def __enter__(self) -> str:
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            self.api_url = self._wait_ready()
        except BaseException:
            self.close()
            raise
        # Drain what the proxy writes from now on, so a full pipe never blocks it.
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=_drain, args=(stream,), daemon=True).start()
        return self.api_url

    def _wait_ready(self) -> str:
        proc = self.proc
        assert proc is not None
        assert proc.stdout is not None
        deadline = time.monotonic() + self.ready_timeout_s
        fd = proc.stdout.fileno()
        pending = b""
        with selectors.DefaultSelector() as sel:  # raw reads: no buffer hides a ready line
            sel.register(fd, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not sel.select(timeout=max(deadline - time.monotonic(), 0.0)):
                    break
                chunk = os.read(fd, 65536)
                if not chunk:  # the process ended before it was ready
                    break
                pending += chunk
                for line in pending.decode("utf-8", "replace").splitlines():
                    if line.startswith(_READY_PREFIX):
                        return line[len(_READY_PREFIX) :].strip()
        reason = ""
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)
        if proc.returncode is not None and proc.stderr is not None:
            text = proc.stderr.read().decode("utf-8", "replace")
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            reason = lines[-1] if lines else f"it exited with code {proc.returncode}"
        raise BrownoutError(
            "the fault proxy did not start: "
            + (reason or f"no ready line within {self.ready_timeout_s:g} s")
        )

    def close(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        self.proc = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _drain(stream: object) -> None:
    read = getattr(stream, "read", None)
    with contextlib.suppress(OSError, ValueError):
        while read is not None and read(65536):
            pass
