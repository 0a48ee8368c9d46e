"""``entropy_production(..., keep_samples=False)``: running summaries in memory independent of N.

The oracle is the full run (every sigma kept, then summarised at once), on the same key: the streamed estimate
must equal it to float64 round-off in every field it keeps, for any N and batch size, also when a reversal is
impossible (sigma = +inf) or e^-sigma overflows. The merge itself is checked against exact rational arithmetic.
"""

import math
import tracemalloc
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import OneWay

import epjax
from epjax._estimators import RUNNING_MEAN_POINTS, _running_mean_counts, _StreamingSummary

RTOL = 1e-12
BATCH = 512  # one compiled batch shape for the Kalman runs of this file
SUMMARY_FIELDS = ("mean", "stderr", "ci_low", "ci_high", "mean_exp_neg_sigma", "exp_neg_sigma_stderr")


def kalman_runs(num_samples, *, batch_size=BATCH, num_steps=5, seed=1):
    params = epjax.kalman.example("scalar")
    run = lambda keep: epjax.entropy_production(
        jax.random.key(seed), epjax.kalman.model, params, num_steps=num_steps, num_samples=num_samples,
        batch_size=batch_size, keep_samples=keep,
    )
    return run(True), run(False)


def assert_same_estimate(streamed, full, rtol=RTOL):
    """Every field the streamed estimate keeps equals the full run's (the running mean at its counts)."""
    n = full.num_samples
    assert streamed.num_samples == n and streamed.sigmas is None
    for field in SUMMARY_FIELDS:
        np.testing.assert_allclose(getattr(streamed, field), getattr(full, field), rtol=rtol, atol=0, err_msg=field)
    assert streamed.fraction_negative == full.fraction_negative
    np.testing.assert_array_equal(streamed.running_mean_at, _running_mean_counts(n))
    np.testing.assert_array_equal(full.running_mean_at, np.arange(1, n + 1))
    # Both sum the samples in order, so the running means agree to the last bit.
    np.testing.assert_array_equal(streamed.running_mean, full.running_mean[streamed.running_mean_at - 1])


@pytest.mark.parametrize("num_samples", [2, 300, BATCH, 3 * BATCH, 5000])
def test_streamed_equals_full_run(x64, num_samples):
    # N = 2 and 300: less than one batch; 512, 1536: whole batches; 5000: the last batch cut, running mean thinned.
    full, streamed = kalman_runs(num_samples)
    assert full.sigmas.shape == (num_samples,)
    assert_same_estimate(streamed, full)
    assert "Estimate(mean=" in repr(streamed)


def test_streamed_equals_full_run_float32():
    # The model computes in float32; both paths take sigma = forward - backward in float64 and summarise in float64.
    full, streamed = kalman_runs(1500)
    assert full.sigmas.dtype == np.float64
    assert_same_estimate(streamed, full)


def test_streamed_does_not_depend_on_batch_size(x64):
    _, a = kalman_runs(1000, batch_size=BATCH)
    _, b = kalman_runs(1000, batch_size=7)
    for field in SUMMARY_FIELDS:
        np.testing.assert_allclose(getattr(a, field), getattr(b, field), rtol=RTOL, atol=0, err_msg=field)
    np.testing.assert_array_equal(a.running_mean, b.running_mean)


def test_streamed_inside_jit_gives_the_same_fields(x64):
    # Traced: the same Estimate fields (sigmas None, thinned running mean); only the memory is not bounded there.
    params = epjax.kalman.example("scalar")
    _, host = kalman_runs(1500)
    traced = jax.jit(
        lambda k: epjax.entropy_production(
            k, epjax.kalman.model, params, num_steps=5, num_samples=1500, batch_size=BATCH, keep_samples=False
        )
    )(jax.random.key(1))
    assert traced.sigmas is None and traced.num_samples == 1500
    np.testing.assert_array_equal(traced.running_mean_at, host.running_mean_at)
    for field in (*SUMMARY_FIELDS, "fraction_negative"):
        np.testing.assert_allclose(float(getattr(traced, field)), getattr(host, field), rtol=RTOL, err_msg=field)
    np.testing.assert_allclose(traced.running_mean, host.running_mean, rtol=1e-10)  # XLA's cumsum order


def test_running_mean_counts():
    np.testing.assert_array_equal(_running_mean_counts(7), np.arange(1, 8))
    np.testing.assert_array_equal(_running_mean_counts(RUNNING_MEAN_POINTS), np.arange(1, RUNNING_MEAN_POINTS + 1))
    at = _running_mean_counts(10**8)
    assert at[0] == 1 and at[-1] == 10**8 and at.size <= RUNNING_MEAN_POINTS and np.all(np.diff(at) > 0)
    assert np.array_equal(at[:50], np.arange(1, 51))  # every count while log steps are below 1
    # Past that, log-spaced: a constant ratio 10^(8 / 999) between neighbours (to the rounding of the counts).
    tail = at[at > 10**4]
    np.testing.assert_allclose(tail[1:] / tail[:-1], 10 ** (8 / (RUNNING_MEAN_POINTS - 1)), rtol=1e-3)


# ---------------------------------------------------------------------------------------------------------
# The merge, batch by batch, against exact arithmetic and the full summary


def stream(s, cuts):
    summary = _StreamingSummary(len(s))
    for part in np.split(np.asarray(s, np.float64), cuts):
        summary.add(part)
    return summary.estimate()


def test_merge_keeps_its_digits_when_the_mean_is_large():
    # sd 1 around 1e6: E[s^2] - E[s]^2 would lose ~12 digits; Chan's pairwise update must not.
    rng = np.random.default_rng(0)
    s = 1e6 + rng.normal(size=10_007)
    est = stream(s, np.sort(rng.choice(np.arange(1, s.size), size=40, replace=False)))
    exact = [Fraction(float(v)) for v in s]
    mean = sum(exact) / len(exact)
    variance = sum((v - mean) ** 2 for v in exact) / (len(exact) - 1)
    assert est.mean == pytest.approx(float(mean), rel=1e-15)
    # The differences of batch means (~0.05) carry the means' rounding (~1e-16 * 1e6): ~1e-12 is what is left.
    assert est.stderr == pytest.approx(math.sqrt(float(variance) / len(exact)), rel=1e-10)
    assert_same_estimate(est, epjax.estimate_from_samples(s), rtol=1e-10)


def test_exp_neg_sigma_does_not_overflow():
    # e^712 overflows float64, but <e^-sigma> = e^712 / N (plus terms e^-712 times smaller) does not. The largest
    # -sigma arrives in a later batch than the first, so the kept sums are rescaled on the way.
    rng = np.random.default_rng(1)
    n = 10_000
    s = rng.normal(0.5, 1.0, size=n)
    s[6000] = -712.0
    est = stream(s, [1000, 5000, 9000])
    expected = math.exp(712.0 - math.log(n))  # one value M = e^712: mean M / N, sd M / sqrt(N), stderr M / N
    assert est.mean_exp_neg_sigma == pytest.approx(expected, rel=1e-12)
    assert est.exp_neg_sigma_stderr == pytest.approx(expected, rel=1e-12)
    full = epjax.estimate_from_samples(s)  # the full path uses the same shift
    assert_same_estimate(est, full)
    # The traceable summary too (float64).
    with jax.enable_x64(True):
        traced = epjax.summarize(jnp.asarray(s))
    assert float(traced.mean_exp_neg_sigma) == pytest.approx(expected, rel=1e-12)
    # Beyond what float64 holds it is inf, as it should be, and the rest of the estimate is unaffected.
    s[7000] = -1e4
    huge = stream(s, [1000, 5000, 9000])
    assert huge.mean_exp_neg_sigma == np.inf and math.isfinite(huge.mean)


def test_infinite_sigma_merges_like_the_full_run():
    # sigma = +inf (a reversal of probability zero): mean inf, stderr 0; e^-sigma = 0 there. The first batch
    # is all +inf, so the shift is set only when the first finite sigma arrives.
    rng = np.random.default_rng(2)
    s = rng.normal(0.5, 1.0, size=3000)
    s[:100] = np.inf
    s[2500] = np.inf
    est = stream(s, [100, 1234, 2600])
    assert est.mean == est.ci_low == est.ci_high == np.inf and est.stderr == 0.0
    assert_same_estimate(est, epjax.estimate_from_samples(s))
    everything = stream(np.full(5, np.inf), [2])
    assert everything.mean == np.inf and everything.mean_exp_neg_sigma == 0.0


# ---------------------------------------------------------------------------------------------------------
# Through the driver with models defined here


class Planted:
    """A continuous 'model' whose sigma is planted: x = [[v], [0]], log_probs = x[:, 0] * [1, 0], so sigma = v.

    ``v`` is a standard normal, except with probability ``params`` it is -712 (e^-sigma overflows float64) or
    NaN when ``params`` is negative. Not normalised; the driver checks only what it can (NaN, +inf, -inf).
    """

    vocab_size = None

    def log_probs(self, params, x):
        return x[:, 0] * jnp.array([1.0, 0.0], x.dtype)

    def sample(self, key, params, num_steps):
        k1, k2 = jax.random.split(key)
        rare = jax.random.uniform(k1) < jnp.abs(params)
        v = jnp.where(rare, jnp.where(params < 0, jnp.nan, -712.0), jax.random.normal(k2))
        return jnp.zeros((num_steps, 1)).at[0, 0].set(v)


ONE_WAY, PLANTED = OneWay(), Planted()


def test_infinite_entropy_production_streamed():
    runs = [
        epjax.entropy_production(jax.random.key(0), ONE_WAY, None, num_steps=4, num_samples=200, batch_size=64,
                                 keep_samples=keep)
        for keep in (True, False)
    ]
    full, streamed = runs
    assert np.any(full.sigmas == np.inf) and np.any(np.isfinite(full.sigmas))
    assert streamed.mean == np.inf and streamed.stderr == 0.0
    assert_same_estimate(streamed, full)


def test_overflowing_weights_streamed(x64):
    params = jnp.asarray(0.002)
    full, streamed = (
        epjax.entropy_production(jax.random.key(3), PLANTED, params, num_steps=2, num_samples=3000, batch_size=BATCH,
                                 keep_samples=keep)
        for keep in (True, False)
    )
    assert np.sum(full.sigmas == -712.0) >= 1
    assert 1e300 < streamed.mean_exp_neg_sigma < np.inf
    assert_same_estimate(streamed, full)


def test_streamed_memory_does_not_grow_with_num_samples(x64):
    # Host allocations (NumPy reports them to tracemalloc) during a run of N = 200k after a warm-up: the full run
    # holds the N sigma values (8N bytes, and more); the streamed one about a batch.
    n = 200_000
    params = epjax.kalman.example("scalar")
    run = lambda keep, n: epjax.entropy_production(
        jax.random.key(0), epjax.kalman.model, params, num_steps=2, num_samples=n, batch_size=1024,
        keep_samples=keep,
    )
    peaks = {}
    for keep in (False, True):
        run(keep, 2048)  # compile outside the measurement
        tracemalloc.start()
        run(keep, n)
        peaks[keep] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[True] > 8 * n
    assert peaks[False] < 8 * n / 4, peaks


# ---------------------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("bad", ["no", 0, None, np.array([True])])
def test_keep_samples_must_be_a_bool(bad):
    with pytest.raises(ValueError, match=r"`keep_samples` must be True or False, got"):
        epjax.entropy_production(jax.random.key(0), ONE_WAY, None, num_steps=4, num_samples=10, keep_samples=bad)


def test_streamed_refuses_nan_like_the_full_run(x64):
    params = jnp.asarray(-0.01)  # about 1% of the trajectories NaN
    messages = []
    for keep in (True, False):
        with pytest.raises(ValueError, match=r"`model.log_probs` returned NaN for \d+ of this batch's") as info:
            epjax.entropy_production(jax.random.key(3), PLANTED, params, num_steps=2, num_samples=3000,
                                     batch_size=BATCH, keep_samples=keep)
        messages.append(str(info.value))
    assert messages[0] == messages[1]  # the first batch, whole in both: the same count and first trajectory
