"""The open-model load generator: ``brownout load``, ``brownout knee``.

Arrivals never wait for responses; every request is measured from its intended start
(coordinated omission corrected), with its service time and the generator's send lag.
Needs ``pip install 'brownout[load]'`` (httptools, numpy; uvloop is used when installed).
"""

from ._engine import Target as Target
from ._engine import Worker as Worker
from ._engine import parse_target as parse_target
from ._knee import KneeResult as KneeResult
from ._knee import KneeSearch as KneeSearch
from ._knee import KneeStep as KneeStep
from ._runner import run_load as run_load
from ._runner import worker_segment as worker_segment

__all__ = [
    "KneeResult",
    "KneeSearch",
    "KneeStep",
    "Target",
    "Worker",
    "parse_target",
    "run_load",
    "worker_segment",
]
