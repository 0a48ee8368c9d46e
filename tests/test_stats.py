import numpy as np
import pytest
import scipy.stats as st

from epjax import stats


@pytest.mark.parametrize("n1,n2,shift,seed", [(3, 3, 0.0, 0), (5, 8, 0.7, 1), (30, 30, 0.5, 2), (12, 9, -1.0, 3)])
def test_mann_whitney_exact_matches_scipy(n1, n2, shift, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=n1) + shift, rng.normal(size=n2)
    ours = stats.mann_whitney_u(x, y)
    ref = st.mannwhitneyu(x, y, alternative="two-sided", method="exact")
    assert ours.method == "exact"
    assert ours.u == ref.statistic
    np.testing.assert_allclose(ours.p_value, ref.pvalue, rtol=1e-12)
    assert ours.rank_biserial == pytest.approx(2 * ref.statistic / (n1 * n2) - 1)
    assert ours.median_x == np.median(x) and ours.median_y == np.median(y)


def test_mann_whitney_null_counts_sum_to_binomial():
    """The exact null distribution of U, enumerated over every split of 10 ranks into 6 + 4, gives the p-values."""
    import itertools
    import math

    n1, n2 = 6, 4
    counts = [0] * (n1 * n2 + 1)
    for first in itertools.combinations(range(n1 + n2), n1):
        counts[sum(r for r in first) - n1 * (n1 - 1) // 2] += 1  # U = rank sum of x - n1 (n1 + 1) / 2, 0-based
    assert sum(counts) == math.comb(10, 4)
    assert counts == counts[::-1]  # U is symmetric about n1 n2 / 2 under the null
    total = math.comb(n1 + n2, n1)
    for u in range(n1 * n2 + 1):
        # data with that U: x takes the ranks of the lexicographically first split with this U
        first = next(c for c in itertools.combinations(range(n1 + n2), n1) if sum(c) - n1 * (n1 - 1) // 2 == u)
        x = np.array(first, dtype=float)
        y = np.array(sorted(set(range(n1 + n2)) - set(first)), dtype=float)
        want = min(1.0, 2 * min(sum(counts[: u + 1]), sum(counts[u:])) / total)
        got = stats.mann_whitney_u(x, y)
        assert got.method == "exact" and got.u == u
        np.testing.assert_allclose(got.p_value, want, rtol=1e-12)


def test_mann_whitney_ties_use_normal_approximation_like_scipy():
    rng = np.random.default_rng(5)
    x, y = np.round(rng.normal(size=20), 1), np.round(rng.normal(size=25), 1)
    ours = stats.mann_whitney_u(x, y)
    ref = st.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic", use_continuity=True)
    assert ours.method == "normal"
    np.testing.assert_allclose(ours.p_value, ref.pvalue, rtol=1e-12)


def test_mann_whitney_rejects_bad_groups():
    with pytest.raises(ValueError, match="`x` must hold at least 2"):
        stats.mann_whitney_u([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="`y` must hold finite"):
        stats.mann_whitney_u([1.0, 2.0], [1.0, np.nan])


def test_bootstrap_covers_the_mean_of_a_known_sample():
    rng = np.random.default_rng(0)
    v = rng.normal(loc=1.0, size=400)
    ci = stats.bootstrap_ci(v, num_resamples=4000, seed=1)
    se = np.std(v, ddof=1) / np.sqrt(v.size)
    assert ci.estimate == pytest.approx(np.mean(v))
    # The percentile interval of a mean is close to the normal one (+-1.96 se) for n = 400.
    assert ci.low == pytest.approx(np.mean(v) - 1.96 * se, abs=0.25 * se)
    assert ci.high == pytest.approx(np.mean(v) + 1.96 * se, abs=0.25 * se)


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="`confidence`"):
        stats.bootstrap_ci([1.0, 2.0], confidence=1.5)
    with pytest.raises(ValueError, match="`values` must hold at least 2"):
        stats.bootstrap_ci([1.0])
