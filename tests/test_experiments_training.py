"""epjax.experiments.training and epjax.experiments.saved_models: the library behind `epjax train` and `epjax ep`.

Oracles: the chain's exact EP (marginals, enumeration), the split being a permutation of the data, the
provenance hash against hashlib, a figure's legend boxes against its axes' data area.
"""

import functools
import hashlib
import json

import jax
import numpy as np
import pytest
from helpers import run_cli

import epjax
from epjax import markov, train
from epjax.experiments import markov_training as mt
from epjax.experiments import saved_models, training
from epjax.experiments.report import ExperimentError, Result

LENGTH = 8
CHAIN = mt.make_chain()


def _save_chain(path, transition=None, length=LENGTH):
    """A chain saved as a model with the metadata of `epjax train --process markov` for the default chain.

    With ``transition`` the saved model is another chain, while the metadata still name the default one.
    """
    process = {"type": "markov", "initial": CHAIN.stationary.tolist(), "transition": CHAIN.transition.tolist()}
    chain = CHAIN if transition is None else mt.chain_from_transition(transition)
    train.save(path, chain.model, chain.params, extra={"data": {"length": length}, "process": process})
    return path


# --- training data -------------------------------------------------------------------------------------------


def test_training_data_from_the_chain_is_seeded_and_recorded():
    data = training.training_data(length=LENGTH, num_sequences=50, seed=4)
    assert data.vocab_size == 4 and data.length == LENGTH and data.path is None
    assert data.train.shape == (45, LENGTH) and data.held_out.shape == (5, LENGTH)
    np.testing.assert_array_equal(data.chain.transition, CHAIN.transition)
    expected = mt.sample_sequences(jax.random.key(4), CHAIN, 50, LENGTH)  # the same key: the same sequences
    merged = np.concatenate([data.train, data.held_out])
    assert sorted(map(tuple, merged)) == sorted(map(tuple, expected))
    assert data.info["process"]["ep_rate"] == CHAIN.ep_rate and data.info["chain_seed"] == mt.DEFAULT_CHAIN_SEED
    again = training.training_data(length=LENGTH, num_sequences=50, seed=4)
    np.testing.assert_array_equal(again.held_out, data.held_out)


def test_split_sequences_is_a_partition():
    data = np.arange(30).reshape(10, 3)
    train_part, held_out = training.split_sequences(data, 0.3, seed=1)
    assert train_part.shape == (7, 3) and held_out.shape == (3, 3)
    assert sorted(np.concatenate([train_part, held_out])[:, 0]) == list(range(0, 30, 3))
    # At least one sequence on each side, whatever the fraction.
    assert [len(p) for p in training.split_sequences(data[:2], 0.01, seed=0)] == [1, 1]
    with pytest.raises(ExperimentError, match="at least 2 sequences"):
        training.split_sequences(data[:1], 0.5, seed=0)
    with pytest.raises(ValueError, match=r"`eval_fraction` must be in \(0, 1\), got 1.0"):
        training.split_sequences(data, 1.0, seed=0)


def test_sequence_file_errors_carry_the_path_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("0 1 2\n\n1 2\n")
    with pytest.raises(training.SequenceFileError) as info:
        training.load_sequences(path)
    assert info.value.path == path and info.value.line == 3
    assert str(info.value).startswith(f"{path}: line 3 has 2 tokens but line 1 has 3")
    assert isinstance(info.value, ValueError)
    with pytest.raises(training.SequenceFileError) as info:
        training.load_sequences(tmp_path / "missing.npy")
    assert info.value.line is None and "cannot read the file" in info.value.problem


def test_token_range_and_option_errors(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("0 1 3\n2 1 0\n")
    with pytest.raises(training.TokenRangeError) as info:
        training.training_data(path, vocab_size=3)
    assert (info.value.path, info.value.token_id, info.value.vocab_size) == (path, 3, 3)
    with pytest.raises(ValueError, match="length, num_sequences describe the built-in chain"):
        training.training_data(path, length=4, num_sequences=10)
    with pytest.raises(ValueError, match="`vocab_size` must be an integer >= 2"):
        training.training_data(vocab_size=1)
    with pytest.raises(ValueError, match="must be a TrainingData"):
        training.train_model(np.zeros((4, 3), int))
    data = training.training_data(path)
    with pytest.raises(ValueError, match="do not apply to the 'markov' family"):
        training.train_model(data, "markov", width=8)


# --- training ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted_chain():
    """A first-order chain fitted to the built-in chain's sequences (cheap; well specified)."""
    data = training.training_data(length=LENGTH, num_sequences=400, seed=0)
    return training.train_model(data, "markov", steps=150, batch_size=64, learning_rate=5e-2, seed=0)


def test_train_model_result(fitted_chain, tmp_path):
    result = fitted_chain
    assert isinstance(result, Result) and result.seed == 0 and result.inputs == ()
    h = result.history
    assert h.train_loss.shape == (150,) and h.eval_steps[-1] == 150 and result.config.eval_every == 15
    assert result.held_out_loss == h.eval_loss[-1] < result.untrained_loss
    # The excess loss is the paired mean of per-sequence losses, recomputed here from the trained model.
    diff = train.sequence_losses(result.model, result.params, result.data.held_out) - train.sequence_losses(
        CHAIN.model, CHAIN.params, result.data.held_out
    )
    assert result.excess_loss == pytest.approx(np.mean(diff), rel=1e-12)
    assert result.excess_loss_stderr == pytest.approx(np.std(diff, ddof=1) / np.sqrt(diff.size), rel=1e-12)
    report = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert report["command"] == "train" and report["model"]["family"] == "markov"
    assert report["training"]["excess_loss"] == pytest.approx(
        report["training"]["held_out_loss"] - report["training"]["chain_held_out_loss"], abs=1e-6
    )
    assert report["num_parameters"] == 4 + 16 and report["process"]["transition"] == CHAIN.transition.tolist()
    assert "the chain itself scores" in result.table() and "held-out loss:" in result.table()
    path = tmp_path / "m.npz"
    result.save(path)
    model, params, extra = train.load(path)
    assert extra == json.loads(json.dumps(result.metadata()))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(result.params), strict=True):
        np.testing.assert_array_equal(a, b)
    fig = result.plot(tmp_path / "curve.png")
    ax = fig.axes[0]
    assert "nats/token" in ax.get_ylabel() and ax.get_xlabel() == "optimiser step"
    assert len(ax.get_legend().get_texts()) == 3  # mini-batch, held-out, the chain's optimum


def test_train_model_from_a_file_records_its_input(tmp_path):
    path = tmp_path / "s.npy"
    np.save(path, np.random.default_rng(0).integers(0, 3, size=(20, 5)))
    data = training.training_data(path, seed=2)
    result = training.train_model(data, "markov", steps=3, batch_size=4, seed=2)
    assert result.inputs == (path,) and result.chain_loss is None and "process" not in result.metadata()
    assert result.metadata()["data"] == {"source": "file", "path": str(path), "length": 5, "vocab_size": 3,
                                         "sequences": 20}  # fmt: skip


# --- EP of a saved model -------------------------------------------------------------------------------------


def test_chain_reference_is_exact(x64):
    extra = {"process": {"type": "markov", "initial": CHAIN.stationary.tolist(),
                         "transition": CHAIN.transition.tolist()}}  # fmt: skip
    ref = saved_models.chain_reference(extra, LENGTH)
    assert ref.value == pytest.approx(CHAIN.exact_entropy_production(LENGTH), rel=1e-12)
    assert ref.note == "exact, from the chain's marginals"
    params = markov.from_probabilities(CHAIN.stationary, CHAIN.transition)
    reversal = functools.partial(epjax.reverse_blocks, block_size=2)
    exact = epjax.exact_entropy_production(markov.MarkovChain(4), params, num_steps=6, reversal=reversal)
    ref = saved_models.chain_reference(extra, 6, block_size=2)
    assert ref.value == pytest.approx(exact, rel=1e-12) and "4^6" in ref.note
    assert saved_models.chain_reference(extra, 11, block_size=1) is None  # 4^11 > 2^20 sequences
    assert saved_models.chain_reference({}, LENGTH) is None
    assert saved_models.chain_reference({"process": {"type": "markov"}}, LENGTH) is None


def test_saved_chain_is_consistent_with_its_exact_ep(tmp_path):
    path = _save_chain(tmp_path / "chain.npz")
    result = saved_models.saved_model_ep(path, num_samples=2000)
    exact = CHAIN.exact_entropy_production(LENGTH)
    assert result.reference.value == pytest.approx(exact, rel=1e-12) and result.inputs == (path,)
    assert result.z == pytest.approx((result.estimate.mean - exact) / result.estimate.stderr)
    assert result.consistent and result.verdict.startswith("consistent with the chain's exact EP (|z| = ")
    assert f"|z| = {abs(result.z):.2f} < 4" in result.verdict
    assert f"verdict: {result.verdict}" in result.table()
    report = result.to_json()
    assert report["verdict"] == result.verdict and report["reference_z"] == pytest.approx(result.z)
    # The same numbers as the engine with the same key.
    est = epjax.entropy_production(jax.random.key(0), CHAIN.model, CHAIN.params, num_steps=LENGTH, num_samples=2000)
    np.testing.assert_allclose(result.estimate.sigmas, est.sigmas, rtol=1e-6, atol=1e-6)


def test_another_chain_differs_from_the_recorded_one(tmp_path):
    """A reversible chain (EP 0) saved with the default chain's metadata: the verdict must say it differs."""
    path = _save_chain(tmp_path / "other.npz", transition=np.full((4, 4), 0.25))
    result = saved_models.saved_model_ep(path, num_samples=200)
    assert np.all(np.abs(result.estimate.sigmas) < 1e-5)  # a uniform chain has sigma = 0 on every path
    assert result.consistent is False and result.verdict.startswith("differs from the chain's exact EP (|z| = ")
    assert "verdict: differs" in result.table()


def test_no_reference_no_verdict(tmp_path):
    path = _save_chain(tmp_path / "chain.npz")
    result = saved_models.saved_model_ep(path, num_steps=4, num_samples=50, temperature=2.0)
    assert result.reference is None and result.z is None and result.verdict is None
    assert "verdict:" not in result.table() and result.to_json()["verdict"] is None


def test_saved_model_ep_typed_errors(tmp_path):
    path = _save_chain(tmp_path / "chain.npz")
    with pytest.raises(saved_models.BlockSizeError) as info:
        saved_models.saved_model_ep(path, block_size=3)
    assert (info.value.block_size, info.value.num_steps) == (3, LENGTH)
    bare = tmp_path / "bare.npz"
    train.save(bare, CHAIN.model, CHAIN.params)
    with pytest.raises(saved_models.MissingLengthError) as info:
        saved_models.saved_model_ep(bare)
    assert info.value.path == bare
    transformer = pytest.importorskip("epjax.transformer")
    model = transformer.Model(transformer.Config(4, context_length=8, num_layers=1, num_heads=1, embed_size=4))
    zeros = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), jax.eval_shape(model.init, jax.random.key(0)))
    tf = tmp_path / "tf.npz"
    train.save(tf, model, zeros, extra={"data": {"length": 8}})
    with pytest.raises(saved_models.ContextLengthError) as info:
        saved_models.saved_model_ep(tf, num_steps=9)
    assert (info.value.num_steps, info.value.max_length) == (9, 8)
    with pytest.raises(ValueError, match="`num_samples` must be an integer >= 2, got 1"):
        saved_models.saved_model_ep(path, num_samples=1)


def _boxes_overlap(a, b):
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_block_plot_says_what_was_reversed_and_hides_no_data(tmp_path):
    path = _save_chain(tmp_path / "chain.npz")
    result = saved_models.saved_model_ep(path, block_size=2, num_samples=300)
    fig = result.plot(tmp_path / "ep.png")
    assert (tmp_path / "ep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    title = fig._suptitle.get_text()
    assert "reversal of the order of blocks of 2 tokens" in title and f"T = {LENGTH} tokens" in title
    assert "token reversal" not in title and "chain.npz (markov model, temperature 1)" in title
    left, right = fig.axes[:2]
    assert left.get_ylabel() == f"EP estimate S({LENGTH}) (nats)" and left.get_xlabel() == "number of trajectories n"
    assert right.get_xlabel().endswith("(nats)") and "order of its 2-token blocks reversed" in right.get_xlabel()
    assert right.get_ylabel() == "number of trajectories"
    assert left.get_title() == result.verdict
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    for ax, entries in ((left, 3), (right, 4)):
        legend = ax.get_legend()
        assert len(legend.get_texts()) == entries  # every drawn series is named
        for other in (left, right):  # a legend over no panel's data area
            assert not _boxes_overlap(legend.get_window_extent(renderer), other.get_window_extent(renderer))
    token = saved_models.saved_model_ep(path, num_samples=50).plot()
    assert "token reversal" in token._suptitle.get_text()


def test_cli_ep_prints_the_verdict_and_hashes_the_model(tmp_path):
    path = _save_chain(tmp_path / "chain.npz")
    out_json = tmp_path / "ep.json"
    code, out, err = run_cli("ep", path, "--samples", 500, "--json", out_json, "--no-progress")
    assert code == 0, err
    report = json.loads(out_json.read_text())
    assert report["verdict"] in out and "verdict: consistent with the chain's exact EP" in out
    inputs = report["provenance"]["inputs"]
    assert inputs == [{"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}]
    assert report["provenance"]["seed"] == 0 and report["provenance"]["command"][:2] == ["epjax", "ep"]


def test_cli_train_hashes_the_data_file(tmp_path):
    data = tmp_path / "s.txt"
    data.write_text("0 1 2 1\n2 1 0 0\n1 1 2 0\n")
    out_json = tmp_path / "t.json"
    code, out, err = run_cli(
        "train", "--family", "markov", "--data", data, "--steps", 3, "--out", tmp_path / "m.npz", "--json",
        out_json, "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out_json.read_text())
    assert report["provenance"]["inputs"] == [
        {"path": str(data), "sha256": hashlib.sha256(data.read_bytes()).hexdigest()}
    ]
    assert f"saved {tmp_path / 'm.npz'}" in out and report["data"]["source"] == "file"
