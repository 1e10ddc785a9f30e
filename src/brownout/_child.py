"""A child process that says when it is ready, for the length of a block.

brownout runs its servers (the fault proxy, the demo's shop and payments service) in
processes of their own: they cost CPU, and sharing an interpreter with the load generator
would show up as send lag. :class:`ChildProcess` starts a command, waits for the first
stdout line that begins with ``ready_prefix`` and returns the rest of that line (an address,
say), then drains its output so a full pipe never blocks it. It stops the process (SIGTERM,
then SIGKILL after ``stop_timeout_s``) on exit, on error and on Ctrl-C. A process that
exits or stays silent before it is ready raises :class:`~brownout.errors.BrownoutError`
with the last line it wrote to stderr.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType

from .errors import BrownoutError

__all__ = ["ChildProcess"]


class ChildProcess:
    """``with ChildProcess(cmd, ready_prefix="api on ", what="the proxy") as rest:``."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        ready_prefix: str,
        what: str,
        ready_timeout_s: float = 15.0,
        stop_timeout_s: float = 5.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.command = list(command)
        self.ready_prefix = ready_prefix
        self.what = what
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.env = dict(env) if env is not None else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = ""

    def start(self) -> str:
        """Start the process and wait until it is ready; returns the ready line's rest."""
        self.proc = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **(self.env or {}), "PYTHONUNBUFFERED": "1"},
        )
        try:
            self.ready = self._wait_ready()
        except BaseException:
            self.close()
            raise
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=_drain, args=(stream,), daemon=True).start()
        return self.ready

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
                    if line.startswith(self.ready_prefix):
                        return line[len(self.ready_prefix) :].strip()
        reason = ""
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)
        if proc.returncode is not None and proc.stderr is not None:
            text = proc.stderr.read().decode("utf-8", "replace")
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            reason = lines[-1] if lines else f"it exited with code {proc.returncode}"
        raise BrownoutError(
            f"{self.what} did not start: "
            + (reason or f"no ready line within {self.ready_timeout_s:g} s")
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        """Stop the process (idempotent)."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        self.proc = None

    def __enter__(self) -> str:
        return self.start()

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
