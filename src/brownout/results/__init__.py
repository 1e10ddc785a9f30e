"""One results format for ``brownout load``, ``brownout sim`` and the demo.

- :class:`Histogram`: HdrHistogram-compatible histograms (V2 encoding, interval logs).
- :class:`RunRecorder`: what the load engine and the simulator record into, cheaply, and
  the results document it produces (schema 1, described in ``docs/results.md``).
- :func:`load_results`, :func:`write_results`, :func:`merge_results`: read, write and
  combine documents exactly (histograms merge; percentiles are never averaged).
- :func:`parse_threshold`, :func:`evaluate_all`: thresholds in k6's syntax.

Needs numpy for :class:`RunRecorder` and :meth:`Histogram.record_array`
(``pip install 'brownout[load]'``); the rest runs without it, faster with it.
"""

from ._document import SCHEMA_VERSION as SCHEMA_VERSION
from ._document import latency_figures as latency_figures
from ._document import load_results as load_results
from ._document import timeline_intervals as timeline_intervals
from ._document import validate_results as validate_results
from ._document import write_results as write_results
from ._document import write_timeline_log as write_timeline_log
from ._hdr import HOUR_US as HOUR_US
from ._hdr import Histogram as Histogram
from ._hdr import LogInterval as LogInterval
from ._hdr import write_interval_log as write_interval_log
from ._merge import merge_results as merge_results
from ._recorder import DROPPED as DROPPED
from ._recorder import ERROR as ERROR
from ._recorder import OK as OK
from ._recorder import OUTCOMES as OUTCOMES
from ._recorder import SHED as SHED
from ._recorder import TIMEOUT as TIMEOUT
from ._recorder import RunRecorder as RunRecorder
from ._thresholds import Threshold as Threshold
from ._thresholds import evaluate as evaluate
from ._thresholds import evaluate_all as evaluate_all
from ._thresholds import parse_threshold as parse_threshold

__all__ = [
    "DROPPED",
    "ERROR",
    "HOUR_US",
    "OK",
    "OUTCOMES",
    "SCHEMA_VERSION",
    "SHED",
    "TIMEOUT",
    "Histogram",
    "LogInterval",
    "RunRecorder",
    "Threshold",
    "evaluate",
    "evaluate_all",
    "latency_figures",
    "load_results",
    "merge_results",
    "parse_threshold",
    "timeline_intervals",
    "validate_results",
    "write_interval_log",
    "write_results",
    "write_timeline_log",
]
