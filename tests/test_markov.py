"""epjax.markov: the chain's exact EP against enumeration, the stationary closed form, Monte Carlo, detailed balance.

Oracles: ``epjax.exact_entropy_production`` enumerates all V**T sequences scored by the chain's own ``log_probs``
(initial law included in both directions); the stationary law and the rate are recomputed here with numpy.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import epjax
from epjax import markov

SEEDS = (0, 1, 2)
# One model object per alphabet size: jit caches key on it, so every seed reuses the compiled enumeration.
CHAIN3, CHAIN4 = markov.MarkovChain(3), markov.MarkovChain(4)


def make_chain(seed: int, vocab_size: int = 3, *, stationary: bool):
    """(initial, P) in float64: Dirichlet rows, a stationary or a random initial law."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(vocab_size, 0.8), size=vocab_size)
    initial = numpy_stationary(P) if stationary else rng.dirichlet(np.ones(vocab_size))
    return initial, P


def numpy_stationary(P):
    w, v = np.linalg.eig(P.T)
    pi = np.real(v[:, np.argmin(np.abs(w - 1))])
    return pi / pi.sum()


def numpy_rate(P):
    pi = numpy_stationary(P)
    return float(np.sum(pi[:, None] * P * np.log(P / P.T)))


def python_log_probs(initial, P, x):
    """Plain loop: log p_1(x_1), then log P[x_{t-1}, x_t]."""
    out = [np.log(initial[x[0]])]
    for prev, cur in zip(x[:-1], x[1:], strict=True):
        out.append(np.log(P[prev, cur]))
    return np.array(out)


@pytest.mark.parametrize("stationary", [True, False], ids=["stationary", "nonstationary"])
def test_exact_ep_matches_enumeration(x64, stationary):
    for seed in SEEDS:
        initial, P = make_chain(seed, stationary=stationary)
        params = markov.from_probabilities(initial, P)
        for T in (1, 2, 6):
            enum = epjax.exact_entropy_production(CHAIN3, params, num_steps=T)
            formula = float(markov.entropy_production(params, T))
            assert formula == pytest.approx(enum, rel=1e-12, abs=1e-13), (seed, T, formula, enum)
        assert float(markov.entropy_production(params, 1)) == 0.0  # one token: sigma = 0


def test_stationary_closed_form(x64):
    for seed in SEEDS:
        initial, P = make_chain(seed, stationary=True)
        params = markov.from_probabilities(initial, P)
        rate = float(markov.stationary_entropy_production_rate(P))
        assert rate == pytest.approx(numpy_rate(P), rel=1e-12)
        assert rate > 0.01  # Dirichlet rows break detailed balance
        for T in (2, 30):
            assert float(markov.entropy_production(params, T)) == pytest.approx((T - 1) * rate, rel=1e-12)


def test_nonstationary_start_differs_from_closed_form(x64):
    initial, P = make_chain(0, stationary=False)
    S = float(markov.entropy_production(markov.from_probabilities(initial, P), 6))
    assert abs(S - 5 * numpy_rate(P)) > 1e-3  # boundary terms matter when the start is not stationary


def test_stationary_distribution(x64):
    _, P = make_chain(1, vocab_size=5, stationary=True)
    pi = np.asarray(markov.stationary_distribution(P))
    np.testing.assert_allclose(pi @ P, pi, atol=1e-14)
    np.testing.assert_allclose(pi, numpy_stationary(P), atol=1e-13)
    assert pi.sum() == pytest.approx(1.0, abs=1e-14)


def test_log_probs_match_python_loop(x64):
    initial, P = make_chain(2, vocab_size=4, stationary=False)
    params = markov.from_probabilities(initial, P)
    model = CHAIN4
    x = np.random.default_rng(0).integers(0, 4, size=11)
    np.testing.assert_allclose(model.log_probs(params, x), python_log_probs(initial, P, x), rtol=1e-13)
    assert model.log_probs(params, x).dtype == jnp.float64


def test_monte_carlo_within_four_stderr():
    """float32 chain, N = 4000 trajectories of T = 8, stationary and not: the estimate covers the exact value."""
    _, P = make_chain(0, vocab_size=4, stationary=True)
    for stationary in (True, False):
        initial, _ = make_chain(0 if stationary else 1, vocab_size=4, stationary=stationary)
        if stationary:
            initial = numpy_stationary(P)
        params = markov.from_probabilities(initial.astype(np.float32), P.astype(np.float32))
        exact = float(markov.entropy_production(params, 8))
        est = epjax.entropy_production(jax.random.key(int(stationary)), CHAIN4, params, num_steps=8, num_samples=4000)
        assert abs(est.mean - exact) < 4 * est.stderr, (stationary, est, exact)


def reversible_chain(seed: int, vocab_size: int = 4):
    """P from symmetric weights W: pi_i P_ij = W_ij / sum(W) = pi_j P_ji (detailed balance)."""
    rng = np.random.default_rng(seed)
    W = rng.uniform(0.1, 1.0, size=(vocab_size, vocab_size))
    W = W + W.T
    return W.sum(axis=1) / W.sum(), W / W.sum(axis=1, keepdims=True)


def test_reversible_chain_has_zero_ep(x64):
    for seed in SEEDS:
        pi, P = reversible_chain(seed)
        np.testing.assert_allclose(pi @ P, pi, atol=1e-14)
        params = markov.from_probabilities(pi, P)
        assert abs(float(markov.stationary_entropy_production_rate(P))) < 1e-14
        for T in (2, 6):
            assert abs(float(markov.entropy_production(params, T))) < 1e-13
            assert abs(epjax.exact_entropy_production(CHAIN4, params, num_steps=T)) < 1e-13


def test_reversible_chain_from_a_nonstationary_start_has_only_boundary_ep(x64):
    """Detailed balance telescopes the bulk: S = KL(p_1 || pi) - E_{mu_T}[ln(p_1 / pi)] (boundary only)."""
    pi, P = reversible_chain(5)
    p1 = np.random.default_rng(5).dirichlet(np.ones(4))
    params = markov.from_probabilities(p1, P)
    for T in (2, 6, 40):
        mu_T = p1 @ np.linalg.matrix_power(P, T - 1)
        expected = np.sum(p1 * np.log(p1 / pi)) - np.sum(mu_T * np.log(p1 / pi))
        assert float(markov.entropy_production(params, T)) == pytest.approx(expected, rel=1e-11)


def test_random_transition():
    P = np.asarray(markov.random_transition(jax.random.key(0), 4, concentration=0.7))
    assert P.shape == (4, 4) and np.all(P > 0)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-6)
    assert float(markov.stationary_entropy_production_rate(P)) > 0


def test_chain_is_a_contract_model():
    model = markov.MarkovChain(4)  # init draws like test_random_transition: the same compiled sampler
    params = model.init(jax.random.key(0))
    x = model.sample(jax.random.key(1), params, 7)
    assert x.shape == (7,) and x.dtype == jnp.int32
    assert model.log_probs(params, x).shape == (7,)
    np.testing.assert_allclose(np.exp(params.log_initial), 1 / 4, rtol=1e-6)  # init: uniform start
    assert isinstance(model, epjax.AutoregressiveModel)


@pytest.mark.parametrize(
    ("initial", "transition", "message"),
    [
        ([[0.5, 0.5]], np.eye(2), "`initial` must be a probability vector"),
        ([0.5, 0.5], np.eye(3), "`transition` must have shape (2, 2)"),
        ([0.7, 0.7], np.eye(2), "`initial` must be non-negative and sum to 1"),
        ([1.2, -0.2], np.eye(2), "`initial` must be non-negative and sum to 1"),
        ([0.5, 0.5], [[0.5, 0.6], [0.5, 0.5]], "rows summing to 1"),
        ([0.5, 0.5], [[1.5, -0.5], [0.5, 0.5]], "non-negative with rows summing to 1"),
        ([0.5, np.nan], np.eye(2), "`initial` must have finite entries"),
        ([0.5, 0.5], [[np.inf, 0.5], [0.5, 0.5]], "`transition` must have finite entries"),
    ],
)
def test_from_probabilities_errors(initial, transition, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        markov.from_probabilities(initial, transition)


def test_config_and_arguments_are_validated():
    with pytest.raises(ValueError, match="vocab_size"):
        markov.MarkovChain(0)
    with pytest.raises(ValueError, match="temperature"):
        markov.MarkovChain(3, temperature=0.0)
    params = markov.from_probabilities(np.full(3, 1 / 3), np.full((3, 3), 1 / 3))
    with pytest.raises(ValueError, match="num_steps"):
        markov.entropy_production(params, 0)
