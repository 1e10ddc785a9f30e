"""The Universal Scalability Law (Gunther): throughput as a function of concurrency.

::

    X(N) = gamma * N / (1 + alpha*(N - 1) + beta*N*(N - 1))

``N`` is the concurrency (users, workers, requests in flight), ``X`` the throughput in
requests per second, ``gamma`` the throughput of one unit of concurrency alone (req/s),
``alpha`` the contention (the serialized fraction, Amdahl's law when ``beta = 0``) and
``beta`` the coherency cost (crosstalk between every pair: past the peak, adding
concurrency *lowers* throughput). With ``beta > 0`` throughput peaks at
``N* = sqrt((1 - alpha) / beta)``.

:func:`fit_usl` fits the three parameters to measured ``(N, X)`` points by least squares on
``X`` with ``alpha, beta >= 0`` and ``gamma > 0``: a linearized start (``N/X`` is a
quadratic in ``N``), then projected Levenberg-Marquardt from a few starts, keeping the best.
For an open-model load test, take ``N`` as the mean number in flight (Little's law:
``throughput_rps * mean latency_s``) and ``X`` as the throughput at that step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import _validate as v
from ..errors import InvalidConfig
from ._queueing import _json_number

__all__ = ["UslFit", "fit_usl", "usl_throughput_rps"]

_OWNER = "fit_usl"


def usl_throughput_rps(concurrency: float, *, gamma_rps: float, alpha: float, beta: float) -> float:
    """``X(N) = gamma*N / (1 + alpha*(N-1) + beta*N*(N-1))`` in requests per second."""
    owner = "usl_throughput_rps"
    n = v.positive(owner, "concurrency", concurrency)
    g = v.non_negative(owner, "gamma_rps", gamma_rps)
    a = v.non_negative(owner, "alpha", alpha)
    b = v.non_negative(owner, "beta", beta)
    return _model(n, g, a, b)


def _model(n: float, g: float, a: float, b: float) -> float:
    return g * n / (1.0 + a * (n - 1.0) + b * n * (n - 1.0))


@dataclass(frozen=True, slots=True)
class UslFit:
    """The USL parameters fitted to ``points`` measured ``(N, X)`` pairs.

    ``gamma_rps``, ``alpha``, ``beta`` as in the module doc; ``r_squared`` is
    ``1 - SSE/SST`` of the throughput (1 is a perfect fit); ``rmse_rps`` the root mean
    squared error. ``peak_concurrency`` is ``N* = sqrt((1 - alpha)/beta)`` (at least 1;
    ``inf`` when ``beta = 0``: no retrograde region) and ``peak_throughput_rps`` the
    throughput there (with ``beta = 0``, the asymptote ``gamma/alpha``, or ``inf``).
    """

    gamma_rps: float
    alpha: float
    beta: float
    r_squared: float
    rmse_rps: float
    points: int
    peak_concurrency: float
    peak_throughput_rps: float

    def throughput_rps(self, concurrency: float) -> float:
        """The fitted model's throughput at ``concurrency``, in requests per second."""
        n = v.positive("UslFit.throughput_rps", "concurrency", concurrency)
        return _model(n, self.gamma_rps, self.alpha, self.beta)

    def to_dict(self) -> dict[str, Any]:
        return {
            "gamma_rps": self.gamma_rps,
            "alpha": self.alpha,
            "beta": self.beta,
            "r_squared": self.r_squared,
            "rmse_rps": self.rmse_rps,
            "points": self.points,
            "peak_concurrency": _json_number(self.peak_concurrency),
            "peak_throughput_rps": _json_number(self.peak_throughput_rps),
        }


def _checked_points(points: Iterable[tuple[float, float]]) -> tuple[list[float], list[float]]:
    try:
        items = list(points)
    except TypeError:
        raise InvalidConfig(
            _OWNER, "points", points, "an iterable of (concurrency, throughput_rps) pairs"
        ) from None
    ns: list[float] = []
    xs: list[float] = []
    for i, item in enumerate(items):
        if not isinstance(item, Sequence) or isinstance(item, str) or len(item) != 2:
            raise InvalidConfig(
                _OWNER, f"points[{i}]", item, "a (concurrency, throughput_rps) pair"
            )
        ns.append(v.positive(_OWNER, f"points[{i}].concurrency", item[0]))
        xs.append(v.positive(_OWNER, f"points[{i}].throughput_rps", item[1]))
    distinct = len(set(ns))
    if distinct < 3:
        raise InvalidConfig(
            _OWNER,
            "points",
            f"{len(items)} points at {distinct} distinct concurrency value(s)",
            "at least 3 points at 3 distinct concurrency values (the model has 3 parameters)",
        )
    return ns, xs


def _solve(matrix: list[list[float]], rhs: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting on a small dense system; None if singular."""
    size = len(rhs)
    a = [[*row, rhs[i]] for i, row in enumerate(matrix)]
    for col in range(size):
        pivot = max(range(col, size), key=lambda r: abs(a[r][col]))
        if abs(a[pivot][col]) < 1e-300:
            return None
        a[col], a[pivot] = a[pivot], a[col]
        for r in range(col + 1, size):
            f = a[r][col] / a[col][col]
            if f:
                for k in range(col, size + 1):
                    a[r][k] -= f * a[col][k]
    out = [0.0] * size
    for r in range(size - 1, -1, -1):
        out[r] = (a[r][size] - math.fsum(a[r][k] * out[k] for k in range(r + 1, size))) / a[r][r]
    if not all(math.isfinite(x) for x in out):
        return None
    return out


def _sse(ns: list[float], xs: list[float], g: float, a: float, b: float) -> float:
    return math.fsum((x - _model(n, g, a, b)) ** 2 for n, x in zip(ns, xs, strict=True))


def _best_gamma(ns: list[float], xs: list[float], a: float, b: float) -> float:
    """The least-squares ``gamma`` for fixed ``alpha, beta`` (the model is linear in it)."""
    shape = [n / (1.0 + a * (n - 1.0) + b * n * (n - 1.0)) for n in ns]
    num = math.fsum(x * f for x, f in zip(xs, shape, strict=True))
    den = math.fsum(f * f for f in shape)
    return num / den if den > 0 else 0.0


def _linearized_start(ns: list[float], xs: list[float]) -> tuple[float, float]:
    """``(alpha, beta)`` from the least-squares quadratic ``N/X = c0 + c1*N + c2*N^2``:
    ``1/gamma = c0 + c1 + c2``, ``alpha = (c1 + c2)*gamma``, ``beta = c2*gamma``."""
    scale = max(ns)
    us = [n / scale for n in ns]
    ys = [n / x for n, x in zip(ns, xs, strict=True)]
    matrix = [[math.fsum(u ** (i + j) for u in us) for j in range(3)] for i in range(3)]
    rhs = [math.fsum(y * u**i for u, y in zip(us, ys, strict=True)) for i in range(3)]
    coef = _solve(matrix, rhs)
    if coef is None:
        return 0.0, 0.0
    c0, c1, c2 = coef[0], coef[1] / scale, coef[2] / scale**2
    inv_gamma = c0 + c1 + c2
    if not inv_gamma > 0:
        return 0.0, 0.0
    gamma = 1.0 / inv_gamma
    return max(0.0, (c1 + c2) * gamma), max(0.0, c2 * gamma)


def _refine(
    ns: list[float], xs: list[float], a: float, b: float
) -> tuple[float, float, float, float]:
    """Projected Levenberg-Marquardt on ``(gamma, alpha, beta)`` from ``(alpha, beta)``;
    returns ``(gamma, alpha, beta, sse)``. A parameter held at its bound whose gradient
    pushes it out is frozen for that step (a simple active set)."""
    p = [_best_gamma(ns, xs, a, b), a, b]
    if not p[0] > 0:
        p[0] = max(xs) / max(ns)
    sse = _sse(ns, xs, *p)
    damping = 1e-3
    for _ in range(500):
        g, a, b = p
        rows: list[tuple[float, float, float]] = []
        resid: list[float] = []
        for n, x in zip(ns, xs, strict=True):
            d = 1.0 + a * (n - 1.0) + b * n * (n - 1.0)
            m = g * n / d
            common = -g * n * (n - 1.0) / (d * d)
            rows.append((n / d, common, common * n))
            resid.append(x - m)
        jtj = [[math.fsum(r[i] * r[j] for r in rows) for j in range(3)] for i in range(3)]
        jtr = [math.fsum(r[i] * e for r, e in zip(rows, resid, strict=True)) for i in range(3)]
        free = [j for j in range(3) if not (j > 0 and p[j] <= 0.0 and jtr[j] <= 0.0)]
        improved = False
        while damping < 1e16:
            matrix = [
                [jtj[i][j] + (damping * max(jtj[i][i], 1e-300) if i == j else 0.0) for j in free]
                for i in free
            ]
            step = _solve(matrix, [jtr[i] for i in free])
            if step is not None:
                trial = p[:]
                for j, s in zip(free, step, strict=True):
                    trial[j] = p[j] + s
                trial[0] = trial[0] if trial[0] > 0 else p[0] * 0.5
                trial[1] = max(0.0, trial[1])
                trial[2] = max(0.0, trial[2])
                new_sse = _sse(ns, xs, *trial)
                if new_sse < sse:
                    gain = sse - new_sse
                    p, sse = trial, new_sse
                    damping = max(damping / 3.0, 1e-12)
                    improved = gain > 1e-15 * sse
                    break
            damping *= 8.0
        if not improved:
            break
    return p[0], p[1], p[2], sse


def fit_usl(points: Iterable[tuple[float, float]]) -> UslFit:
    """Fit the Universal Scalability Law to ``(concurrency, throughput_rps)`` points.

    Least squares on throughput, ``alpha >= 0``, ``beta >= 0``, ``gamma > 0`` fitted too
    (not pinned to the measurement at N = 1, which may be missing or noisy). Needs at
    least 3 points at 3 distinct concurrency values; every value must be finite and > 0.
    """
    ns, xs = _checked_points(points)
    n_max = max(ns)
    starts = [_linearized_start(ns, xs), (0.0, 0.0)]
    grid = [(a, k / n_max**2) for a in (0.0, 0.05, 0.3) for k in (0.01, 0.1, 1.0, 10.0)]
    starts.append(min(grid, key=lambda ab: _sse(ns, xs, _best_gamma(ns, xs, *ab), *ab)))
    best = min((_refine(ns, xs, a, b) for a, b in starts), key=lambda r: r[3])
    gamma, alpha, beta, sse = best
    mean_x = math.fsum(xs) / len(xs)
    sst = math.fsum((x - mean_x) ** 2 for x in xs)
    if sst > 0:
        r_squared = 1.0 - sse / sst
    else:
        r_squared = 1.0 if sse <= 1e-24 * math.fsum(x * x for x in xs) else 0.0
    if beta > 0:
        peak = max(1.0, math.sqrt(max(0.0, 1.0 - alpha) / beta))
        peak_x = _model(peak, gamma, alpha, beta)
    else:
        peak = math.inf
        peak_x = gamma / alpha if alpha > 0 else math.inf
    return UslFit(
        gamma_rps=gamma,
        alpha=alpha,
        beta=beta,
        r_squared=r_squared,
        rmse_rps=math.sqrt(sse / len(xs)),
        points=len(xs),
        peak_concurrency=peak,
        peak_throughput_rps=peak_x,
    )
