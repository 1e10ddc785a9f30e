"""One scenario model for ``brownout load`` (a live target) and ``brownout sim`` (a model).

- The model: :class:`Scenario` of :class:`TrafficClass` es (each with :class:`Stage` s,
  :class:`Spike` s, a mix of :class:`RequestSpec` s whose keys follow :class:`KeySpec`,
  a :class:`RetrySpec`, a :class:`SessionSpec` for humans or a :class:`CrawlSpec` for
  bots), :class:`ThresholdSpec` s and a fault timeline of :class:`FaultSpec` s.
- The file: :func:`load_scenario` and :func:`parse_scenario` read TOML (docs/scenario.md);
  :func:`quick_scenario` is the one-class scenario of ``brownout load URL --rate R``.
- The schedule: :func:`rate_at`, :func:`expected_count` and :func:`arrivals` (intended
  send times, split exactly across execution segments); :class:`RequestPicker` draws the
  request mix and path keys.

Every invalid value raises :class:`brownout.errors.ScenarioError` naming the field.
"""

from ._faults import FAULT_KINDS as FAULT_KINDS
from ._faults import HTTP_FAULTS as HTTP_FAULTS
from ._faults import TCP_FAULTS as TCP_FAULTS
from ._faults import normalize_params as normalize_params
from ._faults import params_from_file as params_from_file
from ._model import ARRIVALS as ARRIVALS
from ._model import KINDS as KINDS
from ._model import RETRY_MODES as RETRY_MODES
from ._model import CrawlSpec as CrawlSpec
from ._model import FaultSpec as FaultSpec
from ._model import KeySpec as KeySpec
from ._model import ProxySpec as ProxySpec
from ._model import RequestSpec as RequestSpec
from ._model import RetrySpec as RetrySpec
from ._model import Scenario as Scenario
from ._model import SessionSpec as SessionSpec
from ._model import Spike as Spike
from ._model import Stage as Stage
from ._model import ThresholdSpec as ThresholdSpec
from ._model import TrafficClass as TrafficClass
from ._model import quick_scenario as quick_scenario
from ._parse import load_scenario as load_scenario
from ._parse import parse_scenario as parse_scenario
from ._picker import RequestPicker as RequestPicker
from ._schedule import arrivals as arrivals
from ._schedule import cumulative as cumulative
from ._schedule import expected_count as expected_count
from ._schedule import rate_at as rate_at

__all__ = [
    "ARRIVALS",
    "FAULT_KINDS",
    "HTTP_FAULTS",
    "KINDS",
    "RETRY_MODES",
    "TCP_FAULTS",
    "CrawlSpec",
    "FaultSpec",
    "KeySpec",
    "ProxySpec",
    "RequestPicker",
    "RequestSpec",
    "RetrySpec",
    "Scenario",
    "SessionSpec",
    "Spike",
    "Stage",
    "ThresholdSpec",
    "TrafficClass",
    "arrivals",
    "cumulative",
    "expected_count",
    "load_scenario",
    "normalize_params",
    "params_from_file",
    "parse_scenario",
    "quick_scenario",
    "rate_at",
]
