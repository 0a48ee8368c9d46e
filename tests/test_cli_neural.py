"""``epjax train``, ``epjax ep`` and the ``neural`` demo section, run in-process through ``main([...])``.

One tiny GRU is trained once on the built-in chain (module fixture) and measured several ways; error paths use
the cheap ``markov`` family or fail before any computation.
"""

import functools
import json

import jax
import numpy as np
import pytest
from helpers import run_cli

import epjax
from epjax import cli, markov, train
from epjax.experiments import markov_training as mt

LENGTH = 8
CHAIN = mt.make_chain()  # the built-in process's default chain




@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("neural")
    path, report = tmp / "gru.npz", tmp / "train.json"
    code, out, err = run_cli(
        "train", "--family", "rnn", "--size", "tiny", "--hidden", 8, "--process", "markov", "--length", LENGTH,
        "--sequences", 300, "--steps", 40, "--batch-size", 16, "--lr", 1e-2, "--out", path, "--json", report,
        "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    return tmp, path, report, out


def test_train_on_the_builtin_process(trained):
    _, path, report_path, out = trained
    assert "built-in Markov chain (vocabulary 4, chain seed 20" in out
    assert f"EP rate r = {CHAIN.ep_rate:.4f}" in out
    assert "held-out loss:" in out and "after 40 steps" in out
    assert f"saved {path}" in out
    model, params, extra = train.load(path)
    assert model.family == "rnn" and model.config.hidden_size == 8 and model.vocab_size == 4
    assert extra["data"]["length"] == LENGTH and extra["data"]["source"] == "markov"
    np.testing.assert_allclose(extra["process"]["transition"], CHAIN.transition, rtol=1e-15)
    report = json.loads(report_path.read_text())
    assert report["command"] == "train" and report["model"]["family"] == "rnn"
    assert len(report["history"]["train_loss"]) == 40 and report["history"]["eval_steps"][-1] == 40
    assert report["training"]["held_out_loss"] == pytest.approx(report["history"]["eval_loss"][-1])
    assert report["training"]["held_out_loss"] < report["training"]["held_out_loss_untrained"]
    assert report["training"]["excess_loss"] == pytest.approx(
        report["training"]["held_out_loss"] - report["training"]["chain_held_out_loss"], abs=1e-6
    )


def test_ep_json_plot_and_library_agree(trained):
    tmp, path, _, _ = trained
    files = {"json": tmp / "ep.json", "plot": tmp / "ep.png"}
    code, out, err = run_cli(
        "ep", path, "--samples", 300, "--seed", 3, "--json", files["json"], "--plot", files["plot"], "--no-progress"
    )
    assert code == 0, err
    report = json.loads(files["json"].read_text())
    assert report["num_steps"] == LENGTH  # defaults to the training length
    assert report["block_size"] is None and report["temperature"] == 1.0
    sigmas = np.array(report["sigmas"])
    assert sigmas.shape == (300,)
    assert report["mean"] == pytest.approx(np.mean(sigmas), rel=1e-12)
    assert report["stderr"] == pytest.approx(np.std(sigmas, ddof=1) / np.sqrt(300), rel=1e-12)
    assert report["fraction_negative"] == pytest.approx(np.mean(sigmas < 0))
    assert report["mean_exp_neg_sigma"] == pytest.approx(np.mean(np.exp(-sigmas)), rel=1e-12)
    # The reference is the training chain's exact EP, (T - 1) r for its stationary start.
    assert report["reference"] == pytest.approx(CHAIN.exact_entropy_production(LENGTH), rel=1e-12)
    assert f"{report['mean']:.6f} ± {report['stderr']:.6f}" in out
    assert "⟨exp(−σ)⟩" in out and "fraction σ < 0" in out and "training process (exact" in out
    # A verdict, not a bare z: consistent iff |z| < 4.
    z = (report["mean"] - report["reference"]) / report["stderr"]
    assert report["reference_z"] == pytest.approx(z)
    word = "consistent with" if abs(z) < 4 else "differs from"
    assert f"verdict: {word} the chain's exact EP (|z| = {abs(z):.2f}" in out and report["verdict"] in out
    data = files["plot"].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


@pytest.fixture(scope="module")
def saved_chain(tmp_path_factory):
    """The built-in chain itself saved as a model, with the metadata `epjax train --process markov` writes."""
    path = tmp_path_factory.mktemp("chain") / "chain.npz"
    process = {"type": "markov", "initial": CHAIN.stationary.tolist(), "transition": CHAIN.transition.tolist()}
    train.save(path, CHAIN.model, CHAIN.params, extra={"data": {"length": LENGTH}, "process": process})
    return path


def test_ep_of_the_chain_itself_matches_its_exact_value(saved_chain, tmp_path):
    """End to end through the CLI: Monte Carlo on the true process within 4 SE of the exact value."""
    out_json = tmp_path / "chain.json"
    code, out, err = run_cli("ep", saved_chain, "--samples", 2000, "--json", out_json, "--no-progress")
    assert code == 0, err
    report = json.loads(out_json.read_text())
    assert report["reference"] == pytest.approx(CHAIN.exact_entropy_production(LENGTH), rel=1e-12)
    assert abs(report["mean"] - report["reference"]) < 4 * report["stderr"]
    # A thin layer: the same numbers as the library with the same key (seed 0).
    est = epjax.entropy_production(jax.random.key(0), CHAIN.model, CHAIN.params, num_steps=LENGTH, num_samples=2000)
    np.testing.assert_allclose(report["sigmas"], est.sigmas, rtol=1e-6, atol=1e-6)


def test_ep_blocks_reference_by_enumeration(saved_chain, tmp_path):
    out_json = tmp_path / "blocks.json"
    code, out, err = run_cli(
        "ep", saved_chain, "--block-size", 2, "--samples", 2000, "--json", out_json, "--no-progress"
    )
    assert code == 0, err
    report = json.loads(out_json.read_text())
    assert report["block_size"] == 2 and report["num_steps"] == LENGTH
    with jax.enable_x64(True):
        params = markov.from_probabilities(CHAIN.stationary, CHAIN.transition)
        reversal = functools.partial(epjax.reverse_blocks, block_size=2)
        exact = epjax.exact_entropy_production(markov.MarkovChain(4), params, num_steps=LENGTH, reversal=reversal)
    assert report["reference"] == pytest.approx(exact, rel=1e-12)
    assert abs(report["mean"] - exact) < 4 * report["stderr"]
    assert "blocks of 2 tokens" in out and "by enumerating all 4^8 sequences" in out
    assert "verdict: consistent with the chain's exact EP" in out


def test_ep_temperature_has_no_reference(saved_chain, tmp_path):
    out_json = tmp_path / "hot.json"
    code, out, err = run_cli(
        "ep", saved_chain, "--temperature", 2, "--steps", 4, "--samples", 100, "--json", out_json, "--no-progress"
    )
    assert code == 0, err
    report = json.loads(out_json.read_text())
    assert report["temperature"] == 2.0 and report["model"]["temperature"] == 2.0 and report["num_steps"] == 4
    assert report["reference"] is None and "training process" not in out
    assert report["verdict"] is None and "verdict:" not in out


def test_training_data_from_a_file(tmp_path):
    """What `epjax train --data` learns from: vocabulary, a seeded split, and the metadata it saves."""
    data = np.random.default_rng(0).integers(0, 5, size=(40, 6))
    text = tmp_path / "seqs.txt"
    text.write_text("\n".join(" ".join(map(str, row)) for row in data) + "\n\n")
    args = cli.build_parser().parse_args(["train", "--data", str(text), "--out", "m.npz", "--seed", "3"])
    prepared = cli.prepare_training_data(args)
    assert prepared.vocab_size == 5 and prepared.chain is None
    assert prepared.train.shape == (36, 6) and prepared.held_out.shape == (4, 6)
    merged = np.concatenate([prepared.train, prepared.held_out])
    assert sorted(map(tuple, merged)) == sorted(map(tuple, data))  # a split, nothing lost or repeated
    assert prepared.info == {"source": "file", "path": str(text), "length": 6, "vocab_size": 5, "sequences": 40}
    again = cli.prepare_training_data(args)
    np.testing.assert_array_equal(again.held_out, prepared.held_out)
    args = cli.build_parser().parse_args(["train", "--data", str(text), "--vocab", "7", "--out", "m.npz"])
    assert cli.prepare_training_data(args).vocab_size == 7


def test_load_sequences_text_and_npy_agree(tmp_path):
    data = np.random.default_rng(1).integers(0, 9, size=(5, 3))
    text, npy = tmp_path / "s.txt", tmp_path / "s.npy"
    text.write_text("\n" + "\n".join("  ".join(map(str, row)) + " " for row in data) + "\n")
    np.save(npy, data.astype(np.uint8))
    np.testing.assert_array_equal(cli.load_sequences(text), data)
    np.testing.assert_array_equal(cli.load_sequences(npy), data)
    assert cli.load_sequences(npy).dtype == np.int64


BAD_TEXT = {
    "word": ("0 1 2\n0 a 2\n", "line 2: 'a' is not a token id"),
    "negative": ("0 1 2\n0 -1 2\n", "line 2: '-1' is not a token id"),
    "ragged": ("0 1 2\n\n1 2\n", "line 3 has 2 tokens but line 1 has 3"),
    "empty": ("\n  \n", "no sequences"),
    "one": ("0 1 2\n", "at least 2 sequences"),
}


@pytest.mark.parametrize("case", list(BAD_TEXT))
def test_train_bad_text_data(tmp_path, case):
    text, message = BAD_TEXT[case]
    path = tmp_path / "bad.txt"
    path.write_text(text)
    code, out, err = run_cli("train", "--data", path, "--out", tmp_path / "m.npz", "--no-progress")
    assert code == 2
    assert err.startswith("epjax: error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "m.npz").exists()


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((3, 4)), "expected integer token ids, got dtype float64"),
        (np.zeros(4, np.int32), "expected an integer array of sequences [N, T], got shape (4,)"),
        (np.zeros((0, 4), np.int32), "expected an integer array of sequences [N, T]"),
        (np.full((3, 4), -2), "token ids must be >= 0, got -2"),
    ],
)
def test_train_bad_npy_data(tmp_path, array, message):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    code, _, err = run_cli("train", "--data", path, "--out", tmp_path / "m.npz")
    assert code == 2 and message in err and err.startswith(f"epjax: error: --data {path}: ")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data", "{tmp}/missing.txt"], "cannot read the file"),
        (["--data", "{tmp}/seqs.txt", "--vocab", 2], "token id 3 is >= --vocab 2"),
        (["--data", "{tmp}/seqs.txt", "--length", 8], "--length describe the built-in process"),
        (["--process", "markov", "--vocab", 1], "--vocab must be >= 2"),
        (["--family", "markov", "--hidden", 8], "do not apply to --family markov"),
        (["--out", "{tmp}/m.txt"], "the file extension must be one of .npz"),
        (["--out", "{tmp}/no/such/m.npz"], "does not exist"),
    ],
)
def test_train_errors(tmp_path, extra, message):
    (tmp_path / "seqs.txt").write_text("0 1 3\n2 1 0\n")
    argv = [str(a).format(tmp=tmp_path) for a in extra]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "m.npz")]
    code, out, err = run_cli("train", *argv, "--steps", 2, "--no-progress")
    assert code == 2, out
    assert err.startswith("epjax: error: ") and message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--out", "m.npz", "--lr", "0"],
        ["train", "--out", "m.npz", "--lr", "fast"],
        ["train", "--out", "m.npz", "--family", "lstm"],
        ["train", "--out", "m.npz", "--eval-fraction", "1.5"],
        ["train", "--out", "m.npz", "--data", "x.txt", "--process", "markov"],
        ["train", "--family", "rnn"],  # --out is required
        ["ep"],
        ["ep", "m.npz", "--samples", "1"],
        ["ep", "m.npz", "--temperature", "-1"],
    ],
)
def test_usage_errors(argv):
    code, _, err = run_cli(*argv)
    assert code == 2 and "usage: epjax" in err


def test_ep_errors(tmp_path, trained):
    _, path, _, _ = trained
    code, _, err = run_cli("ep", tmp_path / "missing.npz")
    assert code == 2 and "does not exist" in err
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"garbage")
    code, _, err = run_cli("ep", corrupt)
    assert code == 2 and "not a readable epjax model file" in err
    code, _, err = run_cli("ep", path, "--block-size", 3)
    assert code == 2 and "--block-size 3 must divide --steps 8" in err
    code, _, err = run_cli("ep", path, "--plot", tmp_path / "fig.jpg")
    assert code == 2 and "the file extension must be one of .png, .pdf, .svg" in err
    bare = tmp_path / "bare.npz"
    train.save(bare, CHAIN.model, CHAIN.params)  # no training metadata
    code, _, err = run_cli("ep", bare)
    assert code == 2 and "does not record its training length; give --steps T" in err
    for e in (err,):
        assert e.startswith("epjax: error: ") and "Traceback" not in e


def test_ep_beyond_the_transformer_context(tmp_path):
    transformer = pytest.importorskip("epjax.transformer")
    model = transformer.Model(transformer.Config(4, context_length=8, num_layers=1, num_heads=1, embed_size=4))
    zeros = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), jax.eval_shape(model.init, jax.random.key(0)))
    path = tmp_path / "tf.npz"
    train.save(path, model, zeros, extra={"data": {"length": 8}})
    code, _, err = run_cli("ep", path, "--steps", 9)
    assert code == 2 and "--steps 9 exceeds the model's context of 8 tokens" in err


def test_demo_neural_section(monkeypatch):
    """The demo's neural section end to end at small sizes (~15 s, mostly compiling)."""
    small = dict(length=6, sequences=400, held_out=200, steps=60, batch_size=32, learning_rate=2e-2, width=8)
    monkeypatch.setattr(cli._demo, "DEMO_NEURAL", small)  # the real demo: T = 16, 500 steps, ~30 s of CPU
    code, out, err = run_cli("demo", "--only", "neural", "--samples", 300, "--no-progress")
    assert code == 0, out + err
    assert "before training" in out and "after training" in out and "the chain (exact)" in out
    assert f"{CHAIN.exact_entropy_production(6):.4f}" in out
    assert "verdict neural: PASS" in out and "all 1 section(s) passed" in out
