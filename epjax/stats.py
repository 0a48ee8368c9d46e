"""Statistics for EP estimates: bootstrap intervals and the Mann-Whitney U test (docs/mathematics.md §4, §7).

Thin typed wrappers over :mod:`scipy.stats` (the outer, friendly layer, host-side NumPy): they validate their
input with messages naming the argument, call :func:`scipy.stats.bootstrap` and
:func:`scipy.stats.mannwhitneyu`, and return small NamedTuples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import scipy.stats

from epjax._checks import as_real_array, check_positive_int, describe

#: the exact null distribution of U is used without ties up to this many pairs ``n1 n2`` (normal beyond)
EXACT_MAX_PAIRS = 250_000


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

    :func:`scipy.stats.bootstrap` with ``method="percentile"`` and a NumPy generator seeded with ``seed``;
    resamples are drawn in batches of about 4 M values to bound memory.

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
    result = scipy.stats.bootstrap(
        (v,),
        lambda sample, axis: statistic(np.moveaxis(sample, axis, -1)),
        vectorized=True,
        n_resamples=num_resamples,
        batch=max(1, 2**22 // v.size),  # bound the memory of the resample matrix
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
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


def mann_whitney_u(x: Any, y: Any) -> MannWhitney:
    """Two-sided Mann-Whitney U test with the rank-biserial correlation (EP paper §5, Fig. 4).

    :func:`scipy.stats.mannwhitneyu` with ``method="exact"`` (the exact null distribution of U) when there are
    no ties and ``n1 n2 <= EXACT_MAX_PAIRS``, otherwise ``method="asymptotic"`` (the normal approximation with
    tie and continuity corrections).

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
    exact = both.size == np.unique(both).size and n1 * n2 <= EXACT_MAX_PAIRS
    test = scipy.stats.mannwhitneyu(
        x, y, alternative="two-sided", method="exact" if exact else "asymptotic", use_continuity=True
    )
    u = float(test.statistic)
    return MannWhitney(
        u=u,
        p_value=float(min(1.0, test.pvalue)),
        rank_biserial=2 * u / (n1 * n2) - 1,
        method="exact" if exact else "normal",
        median_x=float(np.median(x)),
        median_y=float(np.median(y)),
    )


__all__ = ["EXACT_MAX_PAIRS", "Interval", "MannWhitney", "bootstrap_ci", "mann_whitney_u"]
