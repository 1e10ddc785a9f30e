"""The probe: what each request of a Python backend costs, and what it wastes.

::

    from brownout.probe import ProbeMiddleware, install

    probe = install()                      # SQLAlchemy, sqlite3, asyncpg, psycopg, HTTP
    app = ProbeMiddleware(app, probe=probe, ledger_path="/_brownout/ledger")
    ...
    probe.write("ledger.json")             # per-endpoint demands, capacity, findings

- :func:`install` instruments whatever is importable and returns a :class:`Probe`
  (``probe.uninstall()`` undoes it); :class:`ProbeMiddleware` measures each request into
  the probe's :class:`Ledger`.
- Every hook writes into the current request's :class:`RequestCost`
  (:func:`current_cost`); a request's findings (:class:`Finding`: ``n_plus_one_db``,
  ``duplicate_query``, ``cache_candidate``, ``slow_query``, ``n_plus_one_http``,
  ``no_timeout``, ``loop_blocking``, ``large_response``) are merged in the ledger
  (:class:`MergedFinding`), with thresholds from :class:`ProbeThresholds`.
- The ledger's JSON format is described in ``docs/ledger.md``.
"""

from ._cost import DbCall as DbCall
from ._cost import Detector as Detector
from ._cost import Finding as Finding
from ._cost import HttpCall as HttpCall
from ._cost import LoopStep as LoopStep
from ._cost import ProbeThresholds as ProbeThresholds
from ._cost import RequestCost as RequestCost
from ._cost import activate as activate
from ._cost import current_cost as current_cost
from ._cost import deactivate as deactivate
from ._findings import MergedFinding as MergedFinding
from ._install import HOOKS as HOOKS
from ._install import Probe as Probe
from ._install import install as install
from ._ledger import DEMANDS as DEMANDS
from ._ledger import LEDGER_SCHEMA as LEDGER_SCHEMA
from ._ledger import LEDGER_VERSION as LEDGER_VERSION
from ._ledger import Demand as Demand
from ._ledger import DependencyStats as DependencyStats
from ._ledger import EndpointStats as EndpointStats
from ._ledger import Ledger as Ledger
from ._middleware import ProbeMiddleware as ProbeMiddleware
from ._middleware import path_template as path_template
from ._sql import fingerprint as fingerprint
from ._sql import params_key as params_key

__all__ = [
    "DEMANDS",
    "HOOKS",
    "LEDGER_SCHEMA",
    "LEDGER_VERSION",
    "DbCall",
    "Demand",
    "DependencyStats",
    "Detector",
    "EndpointStats",
    "Finding",
    "HttpCall",
    "Ledger",
    "LoopStep",
    "MergedFinding",
    "Probe",
    "ProbeMiddleware",
    "ProbeThresholds",
    "RequestCost",
    "activate",
    "current_cost",
    "deactivate",
    "fingerprint",
    "install",
    "params_key",
    "path_template",
]
