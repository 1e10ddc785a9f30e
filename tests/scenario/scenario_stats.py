"""Goodness-of-fit tests written for the scenario tests (scipy is not a dependency).

- :func:`chi2_sf`: the chi-square survival function, ``Q(k/2, x/2)`` (the regularized upper
  incomplete gamma function), by its power series below ``a + 1`` and a Lentz continued
  fraction above;
- :func:`ks_test`: the one-sample Kolmogorov-Smirnov statistic against a continuous CDF,
  with its p-value from the Kolmogorov distribution (Stephens' small-sample correction).

``test_stats_helpers`` checks both against published critical values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence


def _log_prefactor(a: float, x: float) -> float:
    return -x + a * math.log(x) - math.lgamma(a)


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for X chi-square with ``df`` degrees of freedom."""
    if x <= 0:
        return 1.0
    a, z = df / 2.0, x / 2.0
    if z < a + 1:  # series for P(a, z), then Q = 1 - P
        term = total = 1.0 / a
        n = 0
        while abs(term) > abs(total) * 1e-16:
            n += 1
            term *= z / (a + n)
            total += term
        return max(0.0, 1.0 - total * math.exp(_log_prefactor(a, z)))
    tiny = 1e-300  # continued fraction for Q(a, z) (modified Lentz)
    b = z + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return min(1.0, math.exp(_log_prefactor(a, z)) * h)


def chi_square(observed: Sequence[float], expected: Sequence[float]) -> tuple[float, int, float]:
    """Pearson's statistic, its degrees of freedom (bins - 1) and p-value."""
    stat = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    df = len(observed) - 1
    return stat, df, chi2_sf(stat, df)


def kolmogorov_sf(lam: float) -> float:
    """P(K >= lam) for the Kolmogorov distribution."""
    if lam < 0.3:
        return 1.0
    total = sum((-1) ** (j - 1) * math.exp(-2.0 * j * j * lam * lam) for j in range(1, 101))
    return max(0.0, min(1.0, 2.0 * total))


def ks_test(samples: Sequence[float], cdf: Callable[[float], float]) -> tuple[float, float]:
    """(D, p-value) of ``samples`` against ``cdf``."""
    u = sorted(cdf(x) for x in samples)
    n = len(u)
    d = max(max((i + 1) / n - v, v - i / n) for i, v in enumerate(u))
    root = math.sqrt(n)
    return d, kolmogorov_sf((root + 0.12 + 0.11 / root) * d)
