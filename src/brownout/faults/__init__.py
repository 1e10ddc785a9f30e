"""Faults on a schedule: a Toxiproxy-compatible proxy with HTTP-aware faults, its control
API, in-process wrappers for tests, and the runner of a scenario's fault timeline.

- What a fault is: :class:`Toxic` (TCP, Toxiproxy's semantics), :class:`HttpFault` and the
  sans-IO :class:`HttpFaultSet` that decides the :class:`Action` for each request.
"""

from ._spec import TOXIC_TYPES as TOXIC_TYPES
from ._spec import Action as Action
from ._spec import HttpFault as HttpFault
from ._spec import HttpFaultSet as HttpFaultSet
from ._spec import ProxyConflict as ProxyConflict
from ._spec import ProxyNotFound as ProxyNotFound
from ._spec import Toxic as Toxic
from ._spec import fault_from_spec as fault_from_spec

__all__ = [
    "TOXIC_TYPES",
    "Action",
    "HttpFault",
    "HttpFaultSet",
    "ProxyConflict",
    "ProxyNotFound",
    "Toxic",
    "fault_from_spec",
]
