"""epjax.experiments.markov_training: the chain's reference values, the sensitivity bound, the training run."""

import itertools

import jax
import numpy as np
import pytest

from epjax import families, markov, rnn, train
from epjax.experiments import markov_training as mt

CHAIN = mt.make_chain()


def test_default_chain_is_fixed_and_irreversible():
    # The seed names one chain whatever JAX's default precision (drawn in float64).
    with jax.enable_x64(True):
        again = mt.make_chain()
    np.testing.assert_array_equal(again.transition, CHAIN.transition)
    assert CHAIN.ep_rate == pytest.approx(0.385026213, abs=1e-8)
    assert CHAIN.entropy_rate == pytest.approx(1.206410113, abs=1e-8)
    assert CHAIN.transition.min() > 0.05
    np.testing.assert_allclose(CHAIN.stationary @ CHAIN.transition, CHAIN.stationary, atol=1e-15)


def test_reference_values_against_enumeration(x64):
    """exact EP = (T - 1) r = markov.entropy_production; l*(L) = E[-ln P(x)] / L over all 4^L sequences."""
    params = markov.from_probabilities(CHAIN.stationary, CHAIN.transition)
    pi, P = CHAIN.stationary, CHAIN.transition
    for T in (1, 3, 9):
        exact = float(markov.entropy_production(params, T))
        assert CHAIN.exact_entropy_production(T) == pytest.approx(exact, rel=1e-12)
    L = 4
    expected = 0.0
    for x in itertools.product(range(4), repeat=L):
        log_p = np.log(pi[x[0]]) + sum(np.log(P[a, b]) for a, b in itertools.pairwise(x))
        expected -= np.exp(log_p) * log_p
    assert CHAIN.optimal_loss(L) == pytest.approx(expected / L, rel=1e-12)


def test_chain_from_transition_errors():
    with pytest.raises(ValueError, match="square matrix"):
        mt.chain_from_transition(np.ones((2, 3)) / 3)
    with pytest.raises(ValueError, match="rows summing to 1"):
        mt.chain_from_transition([[0.5, 0.6], [0.5, 0.5]])
    with pytest.raises(ValueError, match="rows summing to 1"):
        mt.chain_from_transition([[1.5, -0.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match="concentration"):
        mt.make_chain(vocab_size=3, concentration=0.0)
    with pytest.raises(ValueError, match="vocab_size"):
        mt.make_chain(vocab_size=1)


def test_sensitivity_is_the_first_order_worst_case(x64):
    """Along d = F^+ g the change of S(T) equals sqrt(2 eps) s to first order; other directions stay below it."""
    pi, P = CHAIN.stationary, CHAIN.transition
    T, L = 6, 6
    s = mt.ep_sensitivity(CHAIN, T, L)
    base = markov.from_probabilities(pi, P)
    grad = jax.grad(lambda p: markov.entropy_production(p, T))(base)
    worst = (np.asarray(grad.log_initial) / pi, np.asarray(grad.log_transition) / (pi[:, None] * P) / (L - 1))

    def kl_per_token(params):
        log_p1, log_P = (np.asarray(a) for a in markov.normalized(params))
        return (np.sum(pi * (np.log(pi) - log_p1)) + (L - 1) * np.sum(pi[:, None] * P * (np.log(P) - log_P))) / L

    ep = jax.jit(lambda p: markov.entropy_production(p, T))

    def change(direction, a):
        params = markov.Params(base.log_initial + a * direction[0], base.log_transition + a * direction[1])
        dS = float(ep(params) - ep(base))
        return dS, np.sqrt(2 * kl_per_token(params)) * s

    dS, bound = change(worst, 1e-4)
    assert dS == pytest.approx(bound, rel=1e-3)
    rng = np.random.default_rng(0)
    for _ in range(5):
        direction = (rng.standard_normal(4), rng.standard_normal((4, 4)))
        dS, bound = change(direction, 1e-4)
        assert abs(dS) <= bound * (1 + 1e-3)


def test_sensitivity_edge_cases():
    assert mt.ep_sensitivity(CHAIN, 1, 8) == 0.0  # one token: no EP to move
    assert mt.ep_sensitivity(CHAIN, 8, 1) == np.inf  # one-token data say nothing about the transitions
    assert mt.ep_sensitivity(CHAIN, 16, 16) > mt.ep_sensitivity(CHAIN, 8, 16) > 0


def test_sequence_losses_match_log_probs():
    data = mt.sample_sequences(jax.random.key(0), CHAIN, 7, 5)
    assert data.shape == (7, 5) and data.dtype == np.int32
    losses = train.sequence_losses(CHAIN.model, CHAIN.params, data, chunk=3)  # chunks 3 + 3 + 1 (padded)
    expected = [-np.mean(CHAIN.model.log_probs(CHAIN.params, x)) for x in data]
    np.testing.assert_allclose(losses, expected, rtol=1e-6)


def test_family_model():
    assert isinstance(families.new_model("markov", 4), markov.MarkovChain)
    gru = families.new_model("rnn", 4, size="tiny")
    assert isinstance(gru, rnn.Model) and gru.config.hidden_size == 16 and gru.config.cell == "gru"
    lstm = families.new_model("rnn", 4, width=12, layers=2, cell="lstm")
    assert (lstm.config.hidden_size, lstm.config.num_layers, lstm.config.cell) == (12, 2, "lstm")
    with pytest.raises(ValueError, match="`family` must be one of"):
        families.new_model("gpt", 4)
    with pytest.raises(ValueError, match="`size` must be one of"):
        families.new_model("rnn", 4, size="huge")


def test_family_model_transformer_and_ssm():
    transformer = pytest.importorskip("epjax.transformer")
    ssm = pytest.importorskip("epjax.ssm")
    tf = families.new_model("transformer", 4, context_length=12, width=16)
    assert isinstance(tf, transformer.Model) and tf.max_length == 12 and tf.config.num_heads == 2
    mamba = families.new_model("ssm", 4, size="tiny")
    assert isinstance(mamba, ssm.Model) and mamba.config.kind == "mamba" and mamba.config.d_model == 16
    assert families.new_model("ssm", 4, ssm_kind="s4d").config.kind == "s4d"
    with pytest.raises(ValueError, match="`context_length` is required"):
        families.new_model("transformer", 4)
    with pytest.raises(ValueError, match="divisible by its number of heads"):
        families.new_model("transformer", 4, context_length=8, width=10, num_heads=4)


def test_train_on_chain_records_and_judges():
    """A chain fitted to its own data: checkpoints, reference values and the tolerance as documented."""
    data = mt.sample_sequences(jax.random.key(1), CHAIN, 600, 8)
    config = train.TrainConfig(steps=200, batch_size=32, learning_rate=5e-2, warmup_steps=10, eval_every=100)
    run = mt.train_on_chain(
        jax.random.key(2), markov.MarkovChain(4), CHAIN, data[:400], data[400:], config=config,
        ep_num_steps=8, ep_num_samples=1000, label="fitted chain",
    )  # fmt: skip
    assert run.label == "fitted chain"
    assert run.steps.tolist() == [0, 100, 200]
    assert run.ep_mean.shape == run.ep_stderr.shape == run.eval_loss.shape == (3,)
    assert run.exact_ep == pytest.approx(7 * CHAIN.ep_rate)
    assert run.sensitivity == pytest.approx(mt.ep_sensitivity(CHAIN, 8, 8))
    assert run.optimal_loss == pytest.approx(CHAIN.optimal_loss(8))
    assert run.eval_loss[-1] < run.eval_loss[0]
    assert run.final.mean == run.ep_mean[-1] and run.final.num_samples == 1000
    eps_plus = max(run.excess_loss, 0) + 2 * run.excess_loss_stderr
    expected = 4 * run.ep_stderr[-1] + np.sqrt(2 * eps_plus) * run.sensitivity
    assert run.tolerance() == pytest.approx(expected)
    assert run.converged() == (abs(run.error) <= run.tolerance())
    assert run.converged()
    assert run.learning_band().shape == (3,)
    assert run.excess_loss < 0.01


def test_training_run_renders_itself(tmp_path):
    """The run's table, JSON, CSV and figure hold its checkpoints; the verdict follows `converged`."""
    data = mt.sample_sequences(jax.random.key(3), CHAIN, 300, 6)
    config = train.TrainConfig(steps=40, batch_size=32, learning_rate=5e-2, warmup_steps=4, eval_every=20)
    run = mt.train_on_chain(
        jax.random.key(4), markov.MarkovChain(4), CHAIN, data[:200], data[200:], config=config,
        ep_num_steps=6, ep_num_samples=300, label="fitted chain",
    )  # fmt: skip
    assert run.passed == run.converged()
    headers, cells = run.rows()
    assert headers[2] == "EP S(6)" and [c[0] for c in cells] == ["0", "20", "40", "chain (exact)"]
    assert cells[-1][2] == f"{5 * CHAIN.ep_rate:.4f}"
    assert cells[1][2] == f"{run.ep_mean[1]:.4f} ± {run.ep_stderr[1]:.4f}"
    assert cells[1][4] == f"{(run.ep_mean[1] - run.exact_ep) / run.ep_stderr[1]:+.2f}"
    word = "within" if run.converged() else "outside"
    table = run.table()
    assert f"verdict: fitted chain: EP {run.ep_mean[-1]:.4f}" in table and f"is {word} the tolerance" in table
    report = run.to_json()
    assert report["steps"] == [0, 20, 40] and report["converged"] == run.converged()
    assert report["tolerance"] == pytest.approx(run.tolerance()) and report["model"]["family"] == "markov"
    rows = run.csv_rows()
    assert len(rows) == 3 and len(rows[0]) == len(run.csv_header())
    np.testing.assert_allclose([r[5] for r in rows], run.learning_band())
    fig = run.plot(tmp_path / "run.png")
    ep_ax, loss_ax = fig.axes[:2]
    assert ep_ax.get_ylabel() == "EP S(6) (nats)" and loss_ax.get_ylabel() == "held-out cross-entropy (nats/token)"
    assert "T = 6 tokens (token reversal)" in fig._suptitle.get_text()
    assert len(ep_ax.get_legend().get_texts()) == 3 and len(loss_ax.get_legend().get_texts()) == 3
