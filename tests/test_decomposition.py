"""Retrospective decomposition (SPEC §6): exact identities for Kalman models and enumerated discrete models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import make_params, make_state_space

import epjax
from epjax import kalman, markov
from epjax.decomposition import exact_decomposition


def _dense_oracle(params, T):
    """Independent numpy reference: path covariance from impulse responses, conditionals by lstsq/pinv."""
    A, C, K, S = (np.asarray(x) for x in params)
    n, ny = A.shape[0], C.shape[0]
    H = np.zeros((T * ny, T * ny))
    for s in range(T):
        for j in range(ny):
            x, col = np.zeros(n), []
            for t in range(T):
                e = np.eye(ny)[j] if t == s else np.zeros(ny)
                col.append(C @ x + e)
                x = A @ (x + K @ e)
            H[:, s * ny + j] = np.concatenate(col)
    Sig = H @ np.kron(np.eye(T), S) @ H.T
    F = A @ (np.eye(n) - K @ C)
    Sinv = np.linalg.inv(S)
    D, L = [], []
    for t in range(T):
        it, iF = np.arange(t * ny, (t + 1) * ny), np.arange((t + 1) * ny, T * ny)
        G = np.zeros((n, T * ny))
        for s in range(t + 1, T):
            G[:, s * ny : (s + 1) * ny] = np.linalg.matrix_power(F, s - t - 1) @ A @ K
        Stt = Sig[np.ix_(it, it)]
        if iF.size:
            Mr = np.linalg.solve(Sig[np.ix_(iF, iF)], Sig[np.ix_(iF, it)]).T
            Mr_full = np.zeros((ny, T * ny))
            Mr_full[:, iF] = Mr
        else:
            Mr_full = np.zeros((ny, T * ny))
        V = Stt - Mr_full @ Sig[:, it]
        cg = Sig[it] @ G.T
        Vg = Stt - cg @ np.linalg.pinv(G @ Sig @ G.T, rcond=1e-12) @ cg.T
        B = Mr_full - C @ G
        d = 0.5 * (np.trace(Sinv @ V) - ny + np.linalg.slogdet(S)[1] - np.linalg.slogdet(V)[1]
                   + np.trace(Sinv @ B @ Sig @ B.T))
        D.append(d)
        L.append(0.5 * (np.linalg.slogdet(Vg)[1] - np.linalg.slogdet(V)[1]))
    return np.array(D), np.array(L)


@pytest.mark.parametrize("seed,n,ny,T", [(0, 1, 1, 8), (1, 2, 2, 10), (2, 3, 2, 12), (3, 4, 3, 9)])
def test_kalman_decomposition_identities_and_oracle(x64, seed, n, ny, T):
    params = make_params(seed, n, ny)
    d = kalman.decomposition(params, T)
    ep = float(kalman.entropy_production(params, T, method="dense"))
    np.testing.assert_allclose(float(d.total), ep, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(d.D, d.L + d.M, rtol=1e-10, atol=1e-13)
    # L_t is a difference of log-determinants of O(1) matrices; near the end of the sequence the backward
    # summary is rank-deficient (fewer future observations than states) and its pseudo-inverse carries
    # round-off of about eps * cond (seen: -1.3e-12), so non-negativity is checked to 1e-10.
    tol = 1e-10
    assert np.all(np.asarray(d.D) >= -tol) and np.all(np.asarray(d.L) >= -tol) and np.all(np.asarray(d.M) >= -tol)
    bound = float(d.second_law_bound)
    assert -tol <= bound <= ep + tol
    D_ref, L_ref = _dense_oracle(params, T)
    np.testing.assert_allclose(d.D, D_ref, rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(d.L, L_ref, rtol=1e-7, atol=1e-10)
    # The boundary term: D_T = KL(law of y_T || the model's initial law N(0, S)), and L_T = 0.
    assert abs(float(d.L[-1])) < 1e-12


def test_kalman_decomposition_paper_examples(x64):
    for name, value in (("scalar", 0.45098), ("2d", 0.75829)):
        d = kalman.decomposition(kalman.example(name), 10)
        assert round(float(d.total), 5) == value


@pytest.mark.parametrize("stationary", [True, False])
def test_markov_chain_compression_loss_is_zero_and_mismatch_is_reversed_kernel_kl(x64, stationary):
    V, T = 3, 5
    P = np.asarray(markov.random_transition(jax.random.key(4), V))
    init = np.asarray(markov.stationary_distribution(P)) if stationary else np.array([0.6, 0.3, 0.1])
    params = markov.from_probabilities(init, P)
    d = exact_decomposition(markov.MarkovChain(V), params, num_steps=T)
    np.testing.assert_allclose(d.total, float(markov.entropy_production(params, T)), rtol=1e-12)
    np.testing.assert_allclose(d.L, 0.0, atol=1e-14)  # the last token is a sufficient backward summary
    mu = [init]
    for _ in range(T):
        mu.append(mu[-1] @ P)
    for t in range(T - 1):
        rev = mu[t][:, None] * P / mu[t + 1][None, :]  # rev[i, j] = P(x_t = i | x_{t+1} = j)
        expected = sum(mu[t + 1][j] * np.sum(rev[:, j] * np.log(rev[:, j] / P[j, :])) for j in range(V))
        np.testing.assert_allclose(d.M[t], expected, rtol=1e-12)
    # Boundary: D_T = KL(law of x_T || initial law).
    np.testing.assert_allclose(d.D[-1], np.sum(mu[T - 1] * np.log(mu[T - 1] / init)), rtol=1e-10, atol=1e-15)


def test_discrete_decomposition_on_a_neural_model(x64):
    from epjax import rnn

    model = rnn.Model(rnn.Config(vocab_size=3, hidden_size=4, cell="gru", dtype="float64"))
    params = model.init(jax.random.key(0))
    d = exact_decomposition(model, params, num_steps=5)
    ep = epjax.exact_entropy_production(model, params, num_steps=5)
    np.testing.assert_allclose(d.total, ep, rtol=1e-10)
    np.testing.assert_allclose(d.D, d.L + d.M, atol=1e-13)
    assert np.all(d.D >= -1e-13) and np.all(d.M >= -1e-13) and np.all(d.L >= -1e-13)
    assert -1e-12 <= d.second_law_bound <= ep + 1e-12


def test_decomposition_errors(x64):
    class NoState:
        vocab_size = 2

        def log_probs(self, params, x):
            return jnp.full(x.shape, jnp.log(0.5))

        def sample(self, key, params, num_steps):
            return jnp.zeros(num_steps, jnp.int32)

    with pytest.raises(ValueError, match="next_token_log_probs"):
        exact_decomposition(NoState(), None, num_steps=3)
    with pytest.raises(ValueError, match="max_sequences"):
        exact_decomposition(markov.MarkovChain(3), markov.MarkovChain(3).init(jax.random.key(0)), num_steps=20)
    with pytest.raises(ValueError, match="num_steps"):
        kalman.decomposition(kalman.example("scalar"), 0)
    A, C, Q, R = make_state_space(0, 2, 2)
    with pytest.raises(ValueError, match="params"):
        kalman.decomposition(kalman.Params(np.asarray(A), np.asarray(C), np.zeros((3, 2)), np.asarray(R)), 4)


@pytest.mark.parametrize("seed,n,ny,T", [(1, 2, 2, 10), (2, 3, 2, 12), (3, 4, 3, 9), (5, 1, 3, 7)])
def test_kalman_decomposition_recursive_equals_dense(x64, seed, n, ny, T):
    params = make_params(seed, n, ny)
    dense = kalman.decomposition(params, T, method="dense")
    rec = kalman.decomposition(params, T, method="recursive")
    # Differences come from the pseudo-inverse of the rank-deficient backward summary at the last steps
    # (seen: up to 6e-12 on terms of size 0.01-1), elsewhere they are at 1e-15.
    for a, b in zip(dense, rec, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-9, atol=1e-10)


def test_kalman_recursive_decomposition_long_horizon(x64):
    params = make_params(0, 2, 2)
    T = 300
    d = kalman.decomposition(params, T)
    np.testing.assert_allclose(float(d.total), float(kalman.entropy_production(params, T)), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(d.D), np.asarray(d.L) + np.asarray(d.M), atol=1e-11)
    assert float(d.second_law_bound) <= float(d.total)
    with pytest.raises(ValueError, match="method"):
        kalman.decomposition(params, 4, method="smoother")


def test_reverse_model_estimate_brackets_the_exact_terms(x64):
    from epjax import train
    from epjax.decomposition import estimate_decomposition, train_reverse_model

    V, T = 3, 5
    model = markov.MarkovChain(V)
    P = markov.random_transition(jax.random.key(7), V, concentration=0.3)
    params = markov.from_probabilities(markov.stationary_distribution(P), P)
    exact = exact_decomposition(model, params, num_steps=T)
    assert exact.total > 0.1  # a clearly irreversible chain
    config = train.TrainConfig(steps=300, batch_size=128, learning_rate=0.05, warmup_steps=20)
    reverse_params, _ = train_reverse_model(jax.random.key(1), model, params, num_steps=T, num_sequences=4000,
                                            config=config)
    est = estimate_decomposition(jax.random.key(2), model, params, model, reverse_params, num_steps=T,
                                 num_samples=20000)
    # Each step's estimate is biased downward by the reverse model's excess cross-entropy at that step, which
    # lies in [0, bias]; so D_t - bias - 4 se <= D_t_hat <= D_t + 4 se.
    slack = 4 * (est.D_stderr + est.bias_stderr)
    assert np.all(est.D <= exact.D + slack)
    assert np.all(est.D >= exact.D - est.bias - slack)
    assert est.bias > -4 * est.bias_stderr  # KL(P || R) >= 0
    # total + bias estimates the EP itself.
    combined_se = np.hypot(est.total_stderr, est.bias_stderr)
    assert abs(est.total + est.bias - exact.total) < 4 * combined_se + 1e-9
