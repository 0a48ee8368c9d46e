"""Retrospective decomposition (docs/mathematics.md §6): exact identities for Kalman and enumerated discrete models."""

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


@pytest.mark.parametrize("seed,n,ny,T", [(0, 1, 1, 8), (2, 3, 2, 12)])
def test_second_law_bound_is_the_total_compression_loss(x64, seed, n, ny, T):
    # sum_t I(y_t; h_{t-1}) = sum_t I(y_t; y_{<t}) = sum_t I(y_t; y_{>t}) (both are the total correlation of
    # the path), and L_t = I(y_t; y_{>t}) - I(y_t; g_{t+1}); so the refined bound is sum_t L_t exactly and
    # EP - bound = sum_t M_t. Computed here from different terms, which makes it a check of both.
    d = kalman.decomposition(make_params(seed, n, ny), T, method="dense")
    np.testing.assert_allclose(float(d.second_law_bound), float(jnp.sum(d.L)), rtol=1e-9, atol=1e-12)
    model = markov.MarkovChain(3)
    params = markov.from_probabilities([0.5, 0.3, 0.2], markov.random_transition(jax.random.key(seed), 3))
    e = exact_decomposition(model, params, num_steps=5)
    np.testing.assert_allclose(e.second_law_bound, np.sum(e.L), atol=1e-13)


def _brute_force_terms(init, P, T, summary):
    """D_t, L_t, M_t by definition, over dicts of sequences; ``summary(future)`` is the backward summary's value.

    The model's law after reading the reversed future x_T..x_{t+1} is row x_{t+1} of P (initial law if empty).
    """
    import itertools

    V = len(init)
    prob = {}
    for x in itertools.product(range(V), repeat=T):
        p = init[x[0]]
        for a, b in zip(x[:-1], x[1:], strict=True):
            p *= P[a, b]
        prob[x] = p
    D, L, M = np.zeros(T), np.zeros(T), np.zeros(T)
    for t in range(T):
        joint_future, joint_g = {}, {}
        for x, p in prob.items():
            f, g = x[t + 1 :], summary(x[t + 1 :])
            joint_future.setdefault(f, np.zeros(V))[x[t]] += p
            joint_g.setdefault(g, np.zeros(V))[x[t]] += p
        law = {f: (P[f[0]] if f else np.asarray(init)) for f in joint_future}
        for f, w in joint_future.items():
            retro, by_g = w / w.sum(), joint_g[summary(f)] / joint_g[summary(f)].sum()
            D[t] += w.sum() * np.sum(retro * np.log(retro / law[f]))
            L[t] += w.sum() * np.sum(np.where(retro > 0, retro * np.log(retro / by_g), 0.0))
        for g, w in joint_g.items():
            f = next(f for f in joint_future if summary(f) == g)
            by_g = w / w.sum()
            M[t] += w.sum() * np.sum(by_g * np.log(by_g / law[f]))
    return D, L, M


def test_discrete_compression_loss_when_the_summary_merges_futures(x64):
    # Rows 0 and 1 of P are equal, so after reading the future the model cannot tell x_{t+1} = 0 from 1: its
    # backward summary is coarser than the last token and the compression loss is positive.
    P = np.array([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    init = np.array([0.2, 0.5, 0.3])
    T = 5
    d = exact_decomposition(markov.MarkovChain(3), markov.from_probabilities(init, P), num_steps=T)
    merged = lambda future: int(future[0] == 2) if future else -1  # class of x_{t+1}: {0, 1} or {2}
    D, L, M = _brute_force_terms(init, P, T, merged)
    np.testing.assert_allclose(d.D, D, rtol=1e-11, atol=1e-15)
    np.testing.assert_allclose(d.L, L, rtol=1e-11, atol=1e-15)
    np.testing.assert_allclose(d.M, M, rtol=1e-11, atol=1e-15)
    assert np.all(d.L[:-1] > 0.01)  # a real compression loss at every step with a future
    np.testing.assert_allclose(d.total, float(markov.entropy_production(markov.from_probabilities(init, P), T)),
                               rtol=1e-12)


def test_neural_reverse_model_estimate_is_biased_downward(x64):
    from epjax import rnn, train
    from epjax.decomposition import estimate_decomposition, train_reverse_model

    V, T = 3, 5
    model = rnn.Model(rnn.Config(vocab_size=V, hidden_size=8, cell="gru", dtype="float64"))
    params = model.init(jax.random.key(3))
    exact = exact_decomposition(model, params, num_steps=T)
    assert exact.total > 0.05
    config = train.TrainConfig(steps=300, batch_size=128, learning_rate=0.02, warmup_steps=20)
    reverse_params, _ = train_reverse_model(jax.random.key(4), model, params, num_steps=T, num_sequences=4000,
                                            config=config)
    est = estimate_decomposition(jax.random.key(5), model, params, model, reverse_params, num_steps=T,
                                 num_samples=20000)
    slack = 4 * (est.D_stderr + est.bias_stderr)
    assert np.all(est.D <= exact.D + slack)  # never above the truth (beyond Monte Carlo error)
    assert np.all(est.D >= exact.D - est.bias - slack)  # and below it by at most the total bias
    combined_se = np.hypot(est.total_stderr, est.bias_stderr)
    assert abs(est.total + est.bias - exact.total) < 4 * combined_se


def test_decomposition_input_errors(x64):
    chain = markov.MarkovChain(3)
    params = chain.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"3\*\*1000000 = about 10\^477121\.3 sequences"):
        exact_decomposition(chain, params, num_steps=10**6)
    with pytest.raises(ValueError, match=r"about 10\^"):
        epjax.exact_entropy_production(chain, params, num_steps=10**6)

    class BadExtension(markov.MarkovChain):
        def next_token_log_probs(self, params, x):
            return super().next_token_log_probs(params, x)[:, :2]

    with pytest.raises(ValueError, match=r"must return shape \[T, V\] = \[4, 3\].*got \[4, 2\]"):
        exact_decomposition(BadExtension(3), params, num_steps=4)


@pytest.mark.parametrize("seed", [1, 7])
def test_kalman_decomposition_float32_is_right_or_refused(seed):
    # Random 3-state models with 2-D observations: formed in float32, the backward summary's covariance cannot
    # tell its genuinely small variances from the exact zeros of its rank-deficient steps (L_t, M_t were off by
    # up to 5 % of the EP). Concrete float32 parameters are computed in float64 and rounded back.
    A, C, Q, R = make_state_space(seed, 3, 2)
    p32 = kalman.from_state_space(*(np.asarray(x, np.float32) for x in (A, C, Q, R)))
    d32 = kalman.decomposition(p32, 5)
    assert d32.D.dtype == jnp.float32
    with jax.enable_x64(True):
        p64 = kalman.Params(*(jnp.asarray(np.asarray(x), jnp.float64) for x in p32))  # the same rounded model
        d64 = kalman.decomposition(p64, 5)
        scale = float(jnp.sum(d64.D))
    for field in ("D", "L", "M", "forward_information", "backward_information"):
        np.testing.assert_allclose(getattr(d32, field), np.asarray(getattr(d64, field)), rtol=1e-6, atol=1e-7 * scale)
    with pytest.raises(ValueError, match=r"`params` must be float64 for kalman.decomposition inside jit"):
        jax.jit(lambda p: kalman.decomposition(p, 5).D)(p32)
