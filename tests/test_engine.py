"""The generic engine (sigma, Monte Carlo, exact enumeration) on small discrete models defined here.

The models below satisfy the epjax contract and nothing else (no epjax base class), which is the point:
any third-party model gets every EP tool. Oracles are plain Python loops over all sequences.
"""

import functools
import itertools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import epjax

V = 3


class ChainParams(NamedTuple):
    init: jax.Array  # [V] initial distribution
    trans: jax.Array  # [V, V] transition matrix, rows sum to 1


class MarkovChain:
    """First-order Markov chain over ``V`` tokens: ``p(x_1) = init``, ``p(x_t | x_t-1) = trans[x_t-1]``."""

    vocab_size = V

    def log_probs(self, params, x):
        first = jnp.log(params.init)[x[0]]
        rest = jnp.log(params.trans)[x[:-1], x[1:]]
        return jnp.concatenate([first[None], rest])

    def sample(self, key, params, num_steps):
        return self._sample(key, params, num_steps)[0]

    def _sample(self, key, params, num_steps):
        keys = jax.random.split(key, num_steps)
        log_init, log_trans = jnp.log(params.init), jnp.log(params.trans)
        x0 = jax.random.categorical(keys[0], log_init)

        def step(prev, k):
            nxt = jax.random.categorical(k, log_trans[prev])
            return nxt, (nxt, log_trans[prev, nxt])

        _, (rest, rest_logp) = jax.lax.scan(step, x0, keys[1:])
        x = jnp.concatenate([x0[None], rest])
        return x, jnp.concatenate([log_init[x0][None], rest_logp])


class MarkovChainWithScores(MarkovChain):
    """The same chain, with the optional ``sample_with_log_probs``; ``sample`` is deliberately unusable.

    ``traces`` counts how often the engine traced ``sample_with_log_probs`` (proof that it is used).
    """

    traces = 0

    def sample(self, key, params, num_steps):
        raise AssertionError("the engine must use sample_with_log_probs when it is present")

    def sample_with_log_probs(self, key, params, num_steps):
        type(self).traces += 1
        return self._sample(key, params, num_steps)


class SecondOrderParams(NamedTuple):
    init: jax.Array  # [V]
    trans1: jax.Array  # [V, V]: p(x_2 | x_1)
    trans2: jax.Array  # [V, V, V]: p(x_t | x_{t-2}, x_{t-1})


class SecondOrderChain:
    """Second-order Markov chain: the summary of the past is the last two tokens."""

    vocab_size = V

    def log_probs(self, params, x):
        parts = [jnp.log(params.init)[x[0]][None]]
        if x.shape[0] >= 2:
            parts.append(jnp.log(params.trans1)[x[0], x[1]][None])
        if x.shape[0] >= 3:
            parts.append(jnp.log(params.trans2)[x[:-2], x[1:-1], x[2:]])
        return jnp.concatenate(parts)

    def sample(self, key, params, num_steps):
        keys = jax.random.split(key, num_steps + 1)
        x0 = jax.random.categorical(keys[0], jnp.log(params.init))
        x1 = jax.random.categorical(keys[1], jnp.log(params.trans1)[x0])

        def step(carry, k):
            a, b = carry
            c = jax.random.categorical(k, jnp.log(params.trans2)[a, b])
            return (b, c), c

        _, rest = jax.lax.scan(step, (x0, x1), keys[2:num_steps])
        return jnp.concatenate([x0[None], x1[None], rest])[:num_steps]


CHAIN = MarkovChain()
CHAIN_WITH_SCORES = MarkovChainWithScores()
SECOND_ORDER = SecondOrderChain()


def _random_stochastic(rng, shape):
    w = rng.gamma(1.0, size=shape) + 0.05  # all entries positive: every reversal has positive probability
    return w / w.sum(axis=-1, keepdims=True)


# Parameters are numpy float64: the oracles use them as they are, and JAX converts them to its default
# float dtype (float32, or float64 under the x64 fixture) when a jitted function receives them.


def chain_params(seed: int) -> ChainParams:
    rng = np.random.default_rng(seed)
    return ChainParams(_random_stochastic(rng, V), _random_stochastic(rng, (V, V)))


def stationary(trans: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eig(np.asarray(trans, dtype=np.float64).T)
    pi = np.real(v[:, np.argmin(np.abs(w - 1))])
    return pi / pi.sum()


def second_order_params(seed: int) -> SecondOrderParams:
    rng = np.random.default_rng(seed)
    return SecondOrderParams(*(_random_stochastic(rng, shape) for shape in (V, (V, V), (V, V, V))))


# ---------------------------------------------------------------------------------------------------------
# Plain-Python oracles


def chain_prob(params: ChainParams, x) -> float:
    init, trans = np.asarray(params.init, np.float64), np.asarray(params.trans, np.float64)
    p = init[x[0]]
    for a, b in itertools.pairwise(x):
        p *= trans[a, b]
    return float(p)


def second_order_prob(params: SecondOrderParams, x) -> float:
    init, t1, t2 = (np.asarray(a, np.float64) for a in params)
    p = init[x[0]]
    if len(x) >= 2:
        p *= t1[x[0], x[1]]
    for a, b, c in zip(x[:-2], x[1:-1], x[2:], strict=True):
        p *= t2[a, b, c]
    return float(p)


def reverse_blocks_by_hand(x, block_size):
    blocks = [list(x[i : i + block_size]) for i in range(0, len(x), block_size)]
    return [t for block in blocks[::-1] for t in block]


def reverse_segments_by_hand(x, ends):
    segments, current = [], []
    for t, end in zip(x, ends, strict=True):
        current.append(t)
        if end:
            segments.append(current)
            current = []
    return [t for segment in segments[::-1] for t in segment]


def exact_by_hand(prob, params, num_steps: int, reverse) -> float:
    """``sum_x P(x) ln(P(x) / P(reverse x))`` by a loop over all ``V**T`` sequences (math.fsum)."""
    total_mass, terms = [], []
    for x in itertools.product(range(V), repeat=num_steps):
        p = prob(params, list(x))
        q = prob(params, list(reverse(list(x))))
        total_mass.append(p)
        terms.append(p * math.log(p / q))
    assert abs(math.fsum(total_mass) - 1.0) < 1e-12
    return math.fsum(terms)


SEGMENT_ENDS = np.array([False, True, False, False, False, True])  # segments of lengths 2 and 4

def _blocks(block_size):
    return (
        functools.partial(epjax.reverse_blocks, block_size=block_size),
        lambda x: reverse_blocks_by_hand(x, block_size),
    )


REVERSALS = {
    "tokens": (epjax.reverse_tokens, lambda x: x[::-1]),
    "blocks2": _blocks(2),
    "blocks3": _blocks(3),
    "segments": (
        functools.partial(epjax.reverse_segments, ends=jnp.asarray(SEGMENT_ENDS)),
        lambda x: reverse_segments_by_hand(x, SEGMENT_ENDS),
    ),
}


# ---------------------------------------------------------------------------------------------------------
# exact enumeration


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", list(REVERSALS))
def test_exact_matches_double_loop_first_order(x64, seed, name):
    reversal, by_hand = REVERSALS[name]
    params = chain_params(seed)
    oracle = exact_by_hand(chain_prob, params, 6, by_hand)
    got = epjax.exact_entropy_production(CHAIN, params, num_steps=6, reversal=reversal)
    assert isinstance(got, float)  # summed in float64 on the host (a traced call returns an array)
    assert oracle > 1e-3  # detailed balance is broken: a test that could fail
    np.testing.assert_allclose(got, oracle, rtol=1e-12)


@pytest.mark.parametrize("name", list(REVERSALS))
def test_exact_matches_double_loop_second_order(x64, name):
    reversal, by_hand = REVERSALS[name]
    params = second_order_params(3)
    oracle = exact_by_hand(second_order_prob, params, 6, by_hand)
    got = epjax.exact_entropy_production(SECOND_ORDER, params, num_steps=6, reversal=reversal)
    assert oracle > 1e-3
    np.testing.assert_allclose(got, oracle, rtol=1e-12)


def test_exact_short_sequences(x64):
    params = second_order_params(3)
    for num_steps in (1, 2, 3):
        oracle = exact_by_hand(second_order_prob, params, num_steps, lambda x: x[::-1])
        got = epjax.exact_entropy_production(SECOND_ORDER, params, num_steps=num_steps)
        np.testing.assert_allclose(got, oracle, rtol=1e-12, atol=1e-15)
    # One token: reversal is the identity.
    assert epjax.exact_entropy_production(SECOND_ORDER, params, num_steps=1) == 0.0


def test_exact_chunking_does_not_matter(x64):
    # 3**6 = 729 is not a multiple of 50: the last chunk is padded and masked.
    params = chain_params(0)
    whole = epjax.exact_entropy_production(CHAIN, params, num_steps=6)
    chunked = epjax.exact_entropy_production(CHAIN, params, num_steps=6, chunk_size=50)
    np.testing.assert_allclose(chunked, whole, rtol=1e-13)


@pytest.mark.parametrize("num_steps", [2, 5, 7])
def test_exact_stationary_chain_closed_form(x64, num_steps):
    # Stationary start: the boundary term E[ln pi(x_1) - ln pi(x_T)] vanishes, so
    # S(T) = (T - 1) sum_ij pi_i P_ij ln(P_ij / P_ji).
    trans = np.asarray(chain_params(5).trans, dtype=np.float64)
    pi = stationary(trans)
    params = ChainParams(pi, trans)
    rate = sum(pi[i] * trans[i, j] * math.log(trans[i, j] / trans[j, i]) for i in range(V) for j in range(V))
    assert rate > 1e-3
    got = epjax.exact_entropy_production(CHAIN, params, num_steps=num_steps)
    np.testing.assert_allclose(got, (num_steps - 1) * rate, rtol=1e-12)


def test_exact_detailed_balance_is_reversible(x64):
    # A symmetric transition matrix with uniform start satisfies detailed balance: EP = 0 at every T.
    rng = np.random.default_rng(0)
    w = rng.random((V, V)) + 0.1
    w = w + w.T
    # Make it doubly stochastic via Sinkhorn so that the uniform law is stationary and detailed balance holds.
    for _ in range(500):
        w = w / w.sum(axis=1, keepdims=True)
        w = w / w.sum(axis=0, keepdims=True)
    w = 0.5 * (w + w.T)
    params = ChainParams(jnp.full(V, 1.0 / V), jnp.asarray(w / w.sum(axis=1, keepdims=True)))
    assert abs(epjax.exact_entropy_production(CHAIN, params, num_steps=5)) < 1e-10


def test_exact_infinite_when_reversal_impossible(x64):
    # P(0 -> 1) > 0 but P(1 -> 0) = 0: some trajectories have impossible reversals, the KL is infinite.
    trans = jnp.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5]])
    params = ChainParams(jnp.full(V, 1.0 / V), trans)
    assert epjax.exact_entropy_production(CHAIN, params, num_steps=3) == math.inf


# ---------------------------------------------------------------------------------------------------------
# sigma and Monte Carlo


def test_sigma_on_one_hand_computed_sequence(x64):
    params = chain_params(1)
    init, trans = np.asarray(params.init), np.asarray(params.trans)
    x = [0, 1, 2, 2, 0]
    forward = math.log(init[0]) + math.log(trans[0, 1]) + math.log(trans[1, 2]) + math.log(trans[2, 2])
    forward += math.log(trans[2, 0])
    backward = math.log(init[0]) + math.log(trans[0, 2]) + math.log(trans[2, 2]) + math.log(trans[2, 1])
    backward += math.log(trans[1, 0])
    got = epjax.sigma(CHAIN, params, jnp.array(x))
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(float(got), forward - backward, rtol=1e-13)
    jitted = jax.jit(epjax.sigma, static_argnums=(0, 3))(CHAIN, params, jnp.array(x), epjax.reverse_tokens)
    np.testing.assert_allclose(float(jitted), forward - backward, rtol=1e-13)
    # One block of 5 tokens: the block reversal is the identity, sigma = 0 exactly.
    one_block = functools.partial(epjax.reverse_blocks, block_size=5)
    assert float(epjax.sigma(CHAIN, params, jnp.array(x), one_block)) == 0.0


# The Monte Carlo tests share one batch shape (64, float32) so that jit compiles each (model, reversal) once;
# compilation, not sampling, dominates their cost.
BATCH = 64


@pytest.mark.parametrize("name", ["tokens", "blocks2"])
def test_monte_carlo_within_error_bars(name):
    reversal, by_hand = REVERSALS[name]
    params = chain_params(0)
    exact = exact_by_hand(chain_prob, params, 6, by_hand)
    est = epjax.entropy_production(
        jax.random.key(11), CHAIN, params, num_steps=6, num_samples=4000, reversal=reversal, batch_size=BATCH
    )
    assert est.sigmas.shape == (4000,)
    assert abs(est.mean - exact) < 4 * est.stderr, (est, exact)
    # Fluctuation theorem (eq. 20) holds for every bijective reversal.
    assert abs(est.mean_exp_neg_sigma - 1.0) < 4 * est.exp_neg_sigma_stderr, est
    assert 0.0 < est.fraction_negative < 1.0


def test_sample_with_log_probs_is_used_and_agrees():
    params = chain_params(2)
    key = jax.random.key(5)
    before = MarkovChainWithScores.traces
    with_scores = epjax.entropy_production(
        key, CHAIN_WITH_SCORES, params, num_steps=6, num_samples=BATCH, batch_size=BATCH
    )
    assert MarkovChainWithScores.traces > before
    plain = epjax.entropy_production(key, CHAIN, params, num_steps=6, num_samples=BATCH, batch_size=BATCH)
    # Same keys, same trajectories; only the forward score is computed differently (a sum of the same
    # float32 terms in another order).
    np.testing.assert_allclose(with_scores.sigmas, plain.sigmas, rtol=1e-5, atol=1e-5)
    assert np.any(plain.sigmas != 0)


def test_independent_of_batch_size_and_sampled_from_the_model():
    params = chain_params(0)
    key = jax.random.key(3)
    runs = [
        epjax.entropy_production(key, CHAIN, params, num_steps=6, num_samples=100, batch_size=b)
        for b in (7, BATCH)
    ]
    np.testing.assert_array_equal(runs[1].sigmas, runs[0].sigmas)
    other_key = epjax.entropy_production(
        jax.random.key(4), CHAIN, params, num_steps=6, num_samples=100, batch_size=BATCH
    )
    assert not np.array_equal(other_key.sigmas, runs[0].sigmas)
    # Trajectory i is CHAIN.sample(fold_in(key, i)); its sigma recomputed by hand from the probabilities.
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(100, dtype=jnp.uint32))
    xs = np.asarray(jax.jit(jax.vmap(lambda k: CHAIN.sample(k, params, 6)))(keys))
    oracle = [math.log(chain_prob(params, list(x)) / chain_prob(params, list(x[::-1]))) for x in xs]
    np.testing.assert_allclose(runs[0].sigmas, oracle, rtol=1e-5, atol=1e-5)  # float32 log-probabilities


def test_estimate_fields():
    rng = np.random.default_rng(0)
    s = rng.normal(0.3, 1.0, size=257)
    est = epjax.estimate_from_samples(s)
    assert est.num_samples == 257
    np.testing.assert_allclose(est.mean, np.mean(s), rtol=1e-14)
    np.testing.assert_allclose(est.stderr, np.std(s, ddof=1) / np.sqrt(257), rtol=1e-14)
    np.testing.assert_allclose(est.ci_low, est.mean - 1.959963984540054 * est.stderr, rtol=1e-14)
    np.testing.assert_allclose(est.ci_high, est.mean + 1.959963984540054 * est.stderr, rtol=1e-14)
    np.testing.assert_allclose(est.running_mean, np.cumsum(s) / np.arange(1, 258), rtol=1e-13)
    assert est.running_mean[-1] == pytest.approx(est.mean, rel=1e-14)
    np.testing.assert_allclose(est.mean_exp_neg_sigma, np.mean(np.exp(-s)), rtol=1e-14)
    exp_stderr = np.std(np.exp(-s), ddof=1) / np.sqrt(257)
    np.testing.assert_allclose(est.exp_neg_sigma_stderr, exp_stderr, rtol=1e-13)
    assert est.fraction_negative == np.mean(s < 0)
    np.testing.assert_array_equal(est.sigmas, s)
    assert "Estimate(mean=" in repr(est)


def test_estimate_from_engine_is_consistent():
    params = chain_params(1)
    est = epjax.entropy_production(
        jax.random.key(0), CHAIN, params, num_steps=6, num_samples=100, batch_size=BATCH
    )
    assert est.num_samples == 100 and est.sigmas.shape == (100,) and est.running_mean.shape == (100,)
    np.testing.assert_allclose(est.running_mean[-1], est.mean, rtol=1e-12)
    np.testing.assert_allclose(est.stderr, np.std(est.sigmas, ddof=1) / 10.0, rtol=1e-12)
    assert est.ci_low < est.mean < est.ci_high
    again = epjax.estimate_from_samples(est.sigmas)
    assert again.mean == est.mean and again.stderr == est.stderr


class NaNOnAllOnes(MarkovChain):
    """The chain, with ``log_probs`` NaN on the one path ``1, 1, ..., 1`` (a model bug that only some draws meet)."""

    def log_probs(self, params, x):
        lp = super().log_probs(params, x)
        return jnp.where(jnp.all(x == 1), jnp.nan, lp)


def test_a_bad_trajectory_past_the_draw_in_the_last_batch_is_neither_checked_nor_kept():
    model = NaNOnAllOnes()
    params = ChainParams(jnp.full(V, 1 / V), jnp.full((V, V), 1 / V))
    T, batch = 2, 64
    for seed in range(100):  # a key whose first bad path (probability 1/9 each) is not among the first two
        key = jax.random.key(seed)
        draws = jax.vmap(lambda i, k=key: model.sample(jax.random.fold_in(k, i), params, T))(jnp.arange(batch))
        bad = np.flatnonzero(np.all(np.asarray(draws) == 1, axis=1))
        if bad.size and 2 <= bad[0] < batch - 1:
            break
    n = int(bad[0])  # trajectories 0 .. n - 1 are clean; n .. batch - 1 are computed (padding) but not drawn
    est = epjax.entropy_production(key, model, params, num_steps=T, num_samples=n, batch_size=batch)
    assert est.sigmas.shape == (n,) and np.all(np.isfinite(est.sigmas))
    with pytest.raises(ValueError, match=rf"returned NaN for 1 of this batch's {n + 1} \(first: trajectory {n}\)"):
        epjax.entropy_production(key, model, params, num_steps=T, num_samples=n + 1, batch_size=batch)
