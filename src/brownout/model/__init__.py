"""The model: capacity prediction from formulas, and (soon) a simulator of the real policies.

- Queueing formulas (:mod:`._queueing`): operational laws, M/M/c (Erlang C, waits and their
  tails), Kingman and Allen-Cunneen, exact MVA for closed networks.
- The Universal Scalability Law, fitted to load results (:func:`fit_usl`).
- A service's capacity (:class:`CapacityModel`, :func:`predict_capacity`): resources,
  per-endpoint demands and the mix -> utilization, the first resource to saturate, latency
  and timeout probability vs rate, knees, warnings; :func:`capacity_from_ledger` builds
  one from a probe ledger.
"""

from ._capacity import RESOURCE_KINDS as RESOURCE_KINDS
from ._capacity import CapacityModel as CapacityModel
from ._capacity import CapacityPrediction as CapacityPrediction
from ._capacity import EndpointLatency as EndpointLatency
from ._capacity import RatePrediction as RatePrediction
from ._capacity import Resource as Resource
from ._capacity import ResourceLoad as ResourceLoad
from ._capacity import predict_capacity as predict_capacity
from ._ledger import LedgerModel as LedgerModel
from ._ledger import capacity_from_ledger as capacity_from_ledger
from ._queueing import BottleneckBounds as BottleneckBounds
from ._queueing import MMcQueue as MMcQueue
from ._queueing import MvaPoint as MvaPoint
from ._queueing import MvaResult as MvaResult
from ._queueing import ServiceCenter as ServiceCenter
from ._queueing import allen_cunneen_wait_s as allen_cunneen_wait_s
from ._queueing import bottleneck_bounds as bottleneck_bounds
from ._queueing import erlang_b as erlang_b
from ._queueing import erlang_c as erlang_c
from ._queueing import forced_flow as forced_flow
from ._queueing import kingman_wait_s as kingman_wait_s
from ._queueing import littles_law as littles_law
from ._queueing import mva as mva
from ._queueing import mva_schweitzer as mva_schweitzer
from ._queueing import service_demand as service_demand
from ._queueing import utilization_law as utilization_law
from ._usl import UslFit as UslFit
from ._usl import fit_usl as fit_usl
from ._usl import usl_throughput_rps as usl_throughput_rps

__all__ = [
    "RESOURCE_KINDS",
    "BottleneckBounds",
    "CapacityModel",
    "CapacityPrediction",
    "EndpointLatency",
    "LedgerModel",
    "MMcQueue",
    "MvaPoint",
    "MvaResult",
    "RatePrediction",
    "Resource",
    "ResourceLoad",
    "ServiceCenter",
    "UslFit",
    "allen_cunneen_wait_s",
    "bottleneck_bounds",
    "capacity_from_ledger",
    "erlang_b",
    "erlang_c",
    "fit_usl",
    "forced_flow",
    "kingman_wait_s",
    "littles_law",
    "mva",
    "mva_schweitzer",
    "predict_capacity",
    "service_demand",
    "usl_throughput_rps",
    "utilization_law",
]
