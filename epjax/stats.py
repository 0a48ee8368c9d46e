"""Statistics for EP estimates: bootstrap intervals and the exact Mann-Whitney U test (docs/mathematics.md §4, §7).

Host-side NumPy code (the outer, friendly layer): inputs are small arrays of per-sample or per-text values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from epjax._checks import as_real_array, check_positive_int, describe


def _as_sample(name: str, x: Any, minimum: int) -> np.ndarray:
    arr = np.asarray(as_real_array(name, x), dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be a 1-D array of values, got {describe(x)}.")
    if arr.size < minimum:
        raise ValueError(f"`{name}` must hold at least {minimum} values, got {arr.size}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` must hold finite values, got {int(np.sum(~np.isfinite(arr)))} non-finite.")
    return arr


class Interval(NamedTuple):
    """A point estimate with a confidence interval."""

    estimate: float
    low: float
    high: float


def bootstrap_ci(
    values: Any,
    *,
    statistic: Callable[[np.ndarray], np.ndarray] = lambda v: np.mean(v, axis=-1),
    confidence: float = 0.95,
    num_resamples: int = 10_000,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of ``statistic`` (default: the mean) over i.i.d. ``values``.

    Args:
        values: ``[N]`` sample values, ``N >= 2``.
        statistic: maps ``[..., N]`` resamples to ``[...]`` (vectorised over leading axes).
        confidence: coverage of the interval, in (0, 1).
        num_resamples: bootstrap resamples.
        seed: NumPy seed of the resampling.

    Returns:
        :class:`Interval` (statistic on the data, lower and upper percentile).

    >>> round(bootstrap_ci([1.0, 2.0, 3.0, 4.0], num_resamples=2000).estimate, 3)
    2.5
    """
    v = _as_sample("values", values, 2)
    num_resamples = check_positive_int("num_resamples", num_resamples)
    if not 0 < confidence < 1:
        raise ValueError(f"`confidence` must be in (0, 1), got {confidence!r}.")
    rng = np.random.default_rng(seed)
    stats = []
    chunk = max(1, 2**22 // v.size)  # bound memory of the resample matrix
    for start in range(0, num_resamples, chunk):
        size = min(chunk, num_resamples - start)
        idx = rng.integers(0, v.size, size=(size, v.size))
        stats.append(np.asarray(statistic(v[idx])))
    stats = np.concatenate(stats)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return Interval(float(statistic(v)), float(low), float(high))


class MannWhitney(NamedTuple):
    """Two-sided Mann-Whitney U test of two independent samples.

    Attributes:
        u: ``U`` of the first sample (number of pairs with ``x > y``, ties counting 1/2).
        p_value: two-sided p-value.
        rank_biserial: effect size ``r = 2U / (n1 n2) - 1`` in [-1, 1]; positive when ``x`` tends to be larger.
        method: ``"exact"`` (no ties: the exact null distribution of U) or ``"normal"`` (ties present:
            normal approximation with tie correction and continuity correction).
        median_x: median of the first sample.
        median_y: median of the second sample.
    """

    u: float
    p_value: float
    rank_biserial: float
    method: str
    median_x: float
    median_y: float


@lru_cache(maxsize=64)
def _u_null_counts(n1: int, n2: int) -> tuple[int, ...]:
    """Number of orderings of ``n1 + n2`` distinct values giving each ``U = 0..n1 n2`` (exact integers).

    Recursion on the largest value: it belongs to the first sample (adding ``n2`` to U) or to the second.
    """
    # counts[m][u] for the current n, built up over n = 0..n2.
    prev = [[1] for _ in range(n1 + 1)]  # n = 0: U = 0 only
    for n in range(1, n2 + 1):
        cur = [[1]]  # m = 0: U = 0 only
        for m in range(1, n1 + 1):
            size = m * n + 1
            row = [0] * size
            a = cur[m - 1]  # largest in x: f(m-1, n, u - n)
            for u, c in enumerate(a):
                row[u + n] += c
            b = prev[m]  # largest in y: f(m, n-1, u)
            for u, c in enumerate(b):
                row[u] += c
            cur.append(row)
        prev = cur
    return tuple(prev[n1])


def mann_whitney_u(x: Any, y: Any) -> MannWhitney:
    """Two-sided Mann-Whitney U test with the rank-biserial correlation (EP paper §5, Fig. 4).

    Exact (the null distribution of U by counting orderings) when there are no ties, otherwise the normal
    approximation with tie and continuity corrections; matches ``scipy.stats.mannwhitneyu`` in both cases.

    Args:
        x: ``[n1]`` first sample (``n1 >= 2``).
        y: ``[n2]`` second sample (``n2 >= 2``).

    Returns:
        :class:`MannWhitney`.

    >>> r = mann_whitney_u([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    >>> r.u, round(r.p_value, 4), r.rank_biserial
    (0.0, 0.1, -1.0)
    """
    x = _as_sample("x", x, 2)
    y = _as_sample("y", y, 2)
    n1, n2 = x.size, y.size
    both = np.concatenate([x, y])
    ranks = _average_ranks(both)
    u = float(np.sum(ranks[:n1]) - n1 * (n1 + 1) / 2)
    ties = both.size != np.unique(both).size
    if not ties and n1 * n2 <= 250_000:
        counts = _u_null_counts(n1, n2)
        total = math.comb(n1 + n2, n1)
        k = int(round(u))
        cdf = sum(counts[: k + 1]) / total
        sf = sum(counts[k:]) / total
        p = min(1.0, 2 * min(cdf, sf))
        method = "exact"
    else:
        _, tie_counts = np.unique(both, return_counts=True)
        n = n1 + n2
        mean = n1 * n2 / 2
        var = n1 * n2 / 12 * ((n + 1) - np.sum(tie_counts**3 - tie_counts) / (n * (n - 1)))
        z = (abs(u - mean) - 0.5) / math.sqrt(var) if var > 0 else 0.0
        p = min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2)))
        method = "normal"
    return MannWhitney(
        u=u,
        p_value=float(p),
        rank_biserial=2 * u / (n1 * n2) - 1,
        method=method,
        median_x=float(np.median(x)),
        median_y=float(np.median(y)),
    )


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    ranks = np.empty(values.size, dtype=np.float64)
    start = 0
    while start < values.size:
        stop = start
        while stop + 1 < values.size and sorted_vals[stop + 1] == sorted_vals[start]:
            stop += 1
        ranks[order[start : stop + 1]] = 0.5 * (start + stop) + 1
        start = stop + 1
    return ranks
