"""Proxies and the fault timeline for one load run.

``with fault_session(scenario) as timeline:`` makes the scenario's proxies exist and
returns the :class:`FaultTimeline` the load runner drives (None when the scenario has
neither faults nor proxies):

- ``[[proxies]]`` without a control API: a ``brownout proxy`` process runs them for the
  block (:class:`ProxyProcess`);
- a control API (``proxy_api`` in the file, or ``--proxy-api``): the proxies are created
  there (updated when they exist), and faults may also name proxies that API already has.
  Toxiproxy's own server works too for TCP faults.

Before anything is sent, every fault's target is checked against the API's proxies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from urllib.parse import urlsplit

from ..errors import ScenarioError
from ..scenario import Scenario
from ._timeline import FaultTimeline

__all__ = ["fault_session"]


@contextlib.contextmanager
def fault_session(
    scenario: Scenario, *, proxy_api: str | None = None
) -> Iterator[FaultTimeline | None]:
    from ._client import ProxyApiError, ProxyClient
    from ._process import ProxyProcess

    api = proxy_api or scenario.proxy_api
    if not scenario.faults and not scenario.proxies:
        yield None
        return
    with contextlib.ExitStack() as stack:
        if api is None:
            if not scenario.proxies:
                raise ScenarioError(
                    "faults",
                    f"{len(scenario.faults)} fault(s)",
                    "[[proxies]] to start, or proxy_api (--proxy-api) naming a running "
                    "brownout proxy or Toxiproxy",
                    problem="have no proxy to act on",
                )
            api = stack.enter_context(ProxyProcess(scenario.proxies))
            client = ProxyClient(api)
        else:
            # Like the load target: loopback, unless the scenario allows the host.
            host = urlsplit(api if "://" in api else "http://" + api).hostname
            client = ProxyClient(api, allow_remote=host in scenario.allow_hosts)
            for spec in scenario.proxies:
                try:
                    client.create(spec.name, spec.listen, spec.upstream)
                except ProxyApiError as exc:
                    if exc.status != 409:
                        raise
                    client.update(
                        spec.name, listen=spec.listen, upstream=spec.upstream, enabled=True
                    )
        stack.callback(client.close)
        timeline = FaultTimeline(scenario.faults, client)
        timeline.check()
        yield timeline
