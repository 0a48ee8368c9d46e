"""Statistics for EP estimates: bootstrap intervals, the Mann-Whitney U test, Holm's correction, Tukey's fences.

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


def holm(p_values: Any) -> np.ndarray:
    """Holm's step-down adjustment of ``m`` p-values for a family-wise error rate (Holm 1979).

    Sorted ascending, ``p_(1) <= ... <= p_(m)``, the ``k``-th is adjusted to
    ``max_{j <= k} min(1, (m - j + 1) p_(j))``: monotone in the order of the raw p-values and capped at 1. A
    hypothesis is rejected at level ``alpha`` exactly when its adjusted p-value is ``<= alpha``.

    Args:
        p_values: ``[m]`` p-values in [0, 1] (``m >= 0``).

    Returns:
        ``[m]`` adjusted p-values, in the order given.

    >>> holm([0.01, 0.04, 0.03, 0.2]).tolist()
    [0.04, 0.09, 0.09, 0.2]
    """
    p = np.asarray(as_real_array("p_values", p_values), dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"`p_values` must be a 1-D array of p-values, got {describe(p_values)}.")
    bad = ~(np.isfinite(p) & (p >= 0) & (p <= 1))
    if np.any(bad):
        raise ValueError(
            f"`p_values` must hold p-values in [0, 1], got {float(p[bad][0])!r} at index {int(np.flatnonzero(bad)[0])}."
        )
    m = p.size
    order = np.argsort(p, kind="stable")
    steps = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(steps) if m else steps
    return adjusted


def rank_biserial_statistic(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """The rank-biserial correlation ``r = 2U/(n1 n2) - 1`` of ``x`` against ``y`` along ``axis`` (vectorised).

    ``U`` is the Mann-Whitney statistic of ``x`` (pairs with ``x > y``, ties counting 1/2), from the mid-ranks of
    the pooled sample: ``U = R_x - n1 (n1 + 1) / 2``.
    """
    x, y = np.moveaxis(np.asarray(x, float), axis, -1), np.moveaxis(np.asarray(y, float), axis, -1)
    n1, n2 = x.shape[-1], y.shape[-1]
    ranks = scipy.stats.rankdata(np.concatenate([x, y], axis=-1), axis=-1)
    u = ranks[..., :n1].sum(axis=-1) - n1 * (n1 + 1) / 2
    return 2 * u / (n1 * n2) - 1


def rank_biserial_ci(
    x: Any,
    y: Any,
    *,
    confidence: float = 0.95,
    num_resamples: int = 10_000,
    seed: int = 0,
) -> Interval:
    """The rank-biserial correlation of two independent samples with a percentile bootstrap interval.

    :func:`scipy.stats.bootstrap` on ``(x, y)`` with ``paired=False`` (each sample resampled with replacement
    within itself), ``method="percentile"``, the statistic :func:`rank_biserial_statistic` and a NumPy generator
    seeded with ``seed``; every resample in one batch.

    Args:
        x: ``[n1]`` first sample (``n1 >= 2``); ``r > 0`` when it tends to be larger.
        y: ``[n2]`` second sample (``n2 >= 2``).
        confidence: coverage of the interval, in (0, 1).
        num_resamples: bootstrap resamples.
        seed: NumPy seed of the resampling.

    Returns:
        :class:`Interval`: ``r = 2U/(n1 n2) - 1`` on the data, and the interval's ends.

    >>> ci = rank_biserial_ci([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], num_resamples=200)
    >>> ci.estimate, ci.low, ci.high
    (-1.0, -1.0, -1.0)
    """
    x = _as_sample("x", x, 2)
    y = _as_sample("y", y, 2)
    num_resamples = check_positive_int("num_resamples", num_resamples)
    if not 0 < confidence < 1:
        raise ValueError(f"`confidence` must be in (0, 1), got {confidence!r}.")
    result = scipy.stats.bootstrap(
        (x, y),
        rank_biserial_statistic,
        paired=False,
        vectorized=True,
        n_resamples=num_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return Interval(float(rank_biserial_statistic(x, y)), float(low), float(high))


def tukey_inliers(values: Any, k: float = 1.5) -> np.ndarray:
    """Which values lie inside Tukey's fences ``[Q1 - k IQR, Q3 + k IQR]`` (quartiles by linear interpolation).

    Args:
        values: ``[n]`` values (``n >= 1``).
        k: the fences' multiple of the interquartile range ``IQR = Q3 - Q1``.

    Returns:
        ``[n]`` booleans, ``False`` for the outliers.

    >>> tukey_inliers([1.0, 2.0, 3.0, 4.0, 100.0]).tolist()
    [True, True, True, True, False]
    """
    v = _as_sample("values", values, 1)
    if not (np.isfinite(k) and k >= 0):
        raise ValueError(f"`k` must be a finite number >= 0, got {k!r}.")
    q1, q3 = np.percentile(v, [25, 75])
    iqr = q3 - q1
    return (v >= q1 - k * iqr) & (v <= q3 + k * iqr)


__all__ = [
    "EXACT_MAX_PAIRS",
    "Interval",
    "MannWhitney",
    "bootstrap_ci",
    "holm",
    "mann_whitney_u",
    "rank_biserial_ci",
    "rank_biserial_statistic",
    "tukey_inliers",
]
