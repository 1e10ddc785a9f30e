"""The model: capacity prediction from formulas, and a simulator that runs the real policies.

- Queueing formulas (:mod:`._queueing`): operational laws, M/M/c (Erlang C, waits and their
  tails), Kingman and Allen-Cunneen, exact MVA for closed networks.
- The Universal Scalability Law, fitted to load results (:func:`fit_usl`).
- A service's capacity (:class:`CapacityModel`, :func:`predict_capacity`): resources,
  per-endpoint demands and the mix -> utilization, the first resource to saturate, latency
  and timeout probability vs rate, knees, warnings; :func:`capacity_from_ledger` builds
  one from a probe ledger.
- The simulator (:func:`simulate`, :func:`replicate`, :class:`Simulation`): a topology
  (:func:`load_topology`) of stations, pools and dependencies, open-model clients with
  timeouts and retries, scheduled faults, and the real guard policies driven in virtual
  time (:class:`VirtualClock`).
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
from ._sim import ARRIVAL_PROCESSES as ARRIVAL_PROCESSES
from ._sim import Client as Client
from ._sim import Fault as Fault
from ._sim import Simulation as Simulation
from ._sim import replicate as replicate
from ._sim import simulate as simulate
from ._sim_engine import OUTCOME_NAMES as OUTCOME_NAMES
from ._sim_engine import VirtualClock as VirtualClock
from ._sim_result import CallStats as CallStats
from ._sim_result import ClassStats as ClassStats
from ._sim_result import Estimate as Estimate
from ._sim_result import LatencySummary as LatencySummary
from ._sim_result import Replications as Replications
from ._sim_result import SimResult as SimResult
from ._sim_result import StationStats as StationStats
from ._sim_result import TimelineRow as TimelineRow
from ._sweep import PhaseCell as PhaseCell
from ._sweep import PhaseDiagram as PhaseDiagram
from ._sweep import phase_diagram as phase_diagram
from ._topology import DISCIPLINES as DISCIPLINES
from ._topology import DISTRIBUTIONS as DISTRIBUTIONS
from ._topology import POLICY_KINDS as POLICY_KINDS
from ._topology import Call as Call
from ._topology import Endpoint as Endpoint
from ._topology import PolicySpec as PolicySpec
from ._topology import ServiceTime as ServiceTime
from ._topology import Station as Station
from ._topology import Topology as Topology
from ._topology import Work as Work
from ._topology import load_topology as load_topology
from ._topology import parse_topology as parse_topology
from ._usl import UslFit as UslFit
from ._usl import fit_usl as fit_usl
from ._usl import usl_throughput_rps as usl_throughput_rps

__all__ = [
    "ARRIVAL_PROCESSES",
    "DISCIPLINES",
    "DISTRIBUTIONS",
    "OUTCOME_NAMES",
    "POLICY_KINDS",
    "RESOURCE_KINDS",
    "BottleneckBounds",
    "Call",
    "CallStats",
    "CapacityModel",
    "CapacityPrediction",
    "ClassStats",
    "Client",
    "Endpoint",
    "EndpointLatency",
    "Estimate",
    "Fault",
    "LatencySummary",
    "LedgerModel",
    "MMcQueue",
    "MvaPoint",
    "MvaResult",
    "PhaseCell",
    "PhaseDiagram",
    "PolicySpec",
    "RatePrediction",
    "Replications",
    "Resource",
    "ResourceLoad",
    "ServiceCenter",
    "ServiceTime",
    "SimResult",
    "Simulation",
    "Station",
    "StationStats",
    "TimelineRow",
    "Topology",
    "UslFit",
    "VirtualClock",
    "Work",
    "allen_cunneen_wait_s",
    "bottleneck_bounds",
    "capacity_from_ledger",
    "erlang_b",
    "erlang_c",
    "fit_usl",
    "forced_flow",
    "kingman_wait_s",
    "littles_law",
    "load_topology",
    "mva",
    "mva_schweitzer",
    "parse_topology",
    "phase_diagram",
    "predict_capacity",
    "replicate",
    "service_demand",
    "simulate",
    "usl_throughput_rps",
    "utilization_law",
]
