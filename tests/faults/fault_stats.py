"""Statistics shared by the fault tests."""

from __future__ import annotations

import math


def binomial_p_value(k: int, n: int, p: float) -> float:
    """Exact two-sided p-value of ``k`` successes in ``n`` trials at probability ``p``:
    the total probability of every outcome no more likely than ``k``."""

    def log_pmf(i: int) -> float:
        return (
            math.lgamma(n + 1)
            - math.lgamma(i + 1)
            - math.lgamma(n - i + 1)
            + i * math.log(p)
            + (n - i) * math.log1p(-p)
        )

    observed = log_pmf(k)
    return min(
        1.0, sum(math.exp(lp) for i in range(n + 1) if (lp := log_pmf(i)) <= observed + 1e-9)
    )
