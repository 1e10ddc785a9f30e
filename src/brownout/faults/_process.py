"""A ``brownout proxy`` process for the length of a run.

The proxy runs in its own process, never in the load generator's: relaying bytes costs CPU,
and sharing the generator's interpreter would show up as send lag and blur what is measured.
:class:`ProxyProcess` starts ``python -m brownout proxy`` with the scenario's proxies and a
control API on a free loopback port, waits for its ready lines, and stops it (SIGTERM, then
SIGKILL) on exit, on error and on Ctrl-C.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .._child import ChildProcess
from ..scenario import ProxySpec

__all__ = ["ProxyProcess"]

_READY_PREFIX = "api on "


class ProxyProcess(ChildProcess):
    """``with ProxyProcess(specs) as api_url:`` runs the proxies for the block."""

    def __init__(self, proxies: Sequence[ProxySpec], *, ready_timeout_s: float = 15.0) -> None:
        self.proxies = tuple(proxies)
        cmd = [sys.executable, "-m", "brownout", "proxy", "--api", "127.0.0.1:0"]
        for spec in self.proxies:
            cmd += ["--name", spec.name, "--listen", spec.listen, "--upstream", spec.upstream]
        super().__init__(
            cmd, ready_prefix=_READY_PREFIX, what="the fault proxy", ready_timeout_s=ready_timeout_s
        )

    @property
    def api_url(self) -> str:
        return self.ready
