"""``epjax decompose``, run in-process through ``main([...])``: Kalman examples and saved discrete models."""

import csv
import json

import jax
import numpy as np
import pytest
from helpers import run_cli

from epjax import kalman, train
from epjax.decomposition import exact_decomposition


@pytest.fixture(scope="module")
def saved_chain(tmp_path_factory):
    """A first-order chain fitted to the built-in process (the cheapest trainable family), saved to disk."""
    path = tmp_path_factory.mktemp("decompose") / "chain.npz"
    code, _, err = run_cli(
        "train", "--family", "markov", "--process", "markov", "--vocab", 3, "--length", 6, "--sequences", 400,
        "--steps", 300, "--batch-size", 32, "--lr", 0.05, "--out", path, "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    return path


def test_kalman_examples_match_the_library(tmp_path):
    json_path, csv_path, plot = tmp_path / "d.json", tmp_path / "d.csv", tmp_path / "d.png"
    code, out, err = run_cli("decompose", "--steps", 10, "--json", json_path, "--csv", csv_path, "--plot", plot)
    assert code == 0, err
    report = json.loads(json_path.read_text())
    assert [m["name"] for m in report["models"]] == ["scalar", "2d"]
    with jax.enable_x64(True):
        for entry in report["models"]:
            d = kalman.decomposition(kalman.example(entry["name"]), 10)
            for key in ("D", "L", "M", "forward_information", "backward_information"):
                np.testing.assert_allclose(entry[key], np.asarray(getattr(d, key)), rtol=1e-12, atol=1e-15)
            assert entry["total"] == pytest.approx(entry["ep"], rel=1e-10)
            assert entry["second_law_bound"] == pytest.approx(entry["compression_loss"], rel=1e-8)
    assert round(report["models"][0]["ep"], 5) == 0.45098 and round(report["models"][1]["ep"], 5) == 0.75829
    assert "sum_t D_t = 0.75829" in out and "refined second law (eq. 101)" in out
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 20 and rows[0]["model"] == "scalar" and rows[-1]["t"] == "10"
    assert float(rows[-1]["D"]) == pytest.approx(report["models"][1]["D"][-1], rel=1e-15)
    assert plot.stat().st_size > 10_000


def test_user_matrices_and_long_tables(tmp_path):
    model = tmp_path / "m.json"
    model.write_text(json.dumps({"A": [[0.5, 0.2], [0.0, 0.3]], "C": [[1.0, 0.0], [0.3, 1.0]],
                                 "Q": [[1.0, 0.0], [0.0, 1.0]], "R": [[0.5, 0.0], [0.0, 0.5]], "name": "mine"}))
    code, out, err = run_cli("decompose", "--model", model, "--steps", 60, "--method", "dense")
    assert code == 0, err
    assert out.count("\n  ...") == 1 and "20 steps not shown" in out
    with jax.enable_x64(True):
        spec = json.loads(model.read_text())
        ep = float(kalman.entropy_production(kalman.from_state_space(*(spec[k] for k in "ACQR")), 60))
    assert f"exact EP (eq. 71, O(T) recursion) = {ep:.8f}" in out


def test_saved_model_exact_by_enumeration(saved_chain, tmp_path):
    json_path = tmp_path / "d.json"
    code, out, err = run_cli("decompose", saved_chain, "--steps", 5, "--json", json_path)
    assert code == 0, err
    entry = json.loads(json_path.read_text())["models"][0]
    model, params, _ = train.load(saved_chain)
    d = exact_decomposition(model, params, num_steps=5)
    np.testing.assert_allclose(entry["D"], d.D, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(entry["L"], 0.0, atol=1e-6)  # the chain's state is its last token
    assert entry["ep"] > 0.1  # the fitted chain is clearly irreversible
    assert entry["total"] == pytest.approx(entry["ep"], abs=1e-6)  # float32 parameters and log-probabilities
    assert "enumeration of all 3^5 paths" in out


def test_saved_model_reverse_model_estimate(saved_chain, tmp_path):
    json_path = tmp_path / "d.json"
    code, out, err = run_cli(
        "decompose", saved_chain, "--steps", 5, "--estimate", "--reverse-steps", 150, "--reverse-sequences", 2000,
        "--samples", 4000, "--json", json_path, "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert "BIAS: each D_t estimate is biased DOWN" in out
    entry = json.loads(json_path.read_text())["models"][0]
    est = entry["estimate"]
    assert est["bias_direction"].startswith("downward")
    se = np.hypot(est["total_stderr"], est["bias_stderr"])
    assert abs(est["total"] + est["bias"] - entry["ep"]) < 4 * se
    assert len(est["D"]) == 5


def test_decompose_errors(saved_chain, tmp_path):
    code, _, err = run_cli("decompose", saved_chain, "--example", "2d")
    assert code == 2 and "not both" in err
    code, _, err = run_cli("decompose", "--estimate")
    assert code == 2 and "--estimate applies to a saved model" in err
    code, _, err = run_cli("decompose", saved_chain, "--steps", 30)
    assert code == 2 and "3**30" in err and "--estimate" in err
    code, _, err = run_cli("decompose", "--plot", tmp_path / "x.txt")
    assert code == 2 and "--plot" in err
    code, _, err = run_cli("decompose", tmp_path / "missing.npz")
    assert code == 2 and "missing.npz" in err


def test_saved_model_never_shortens_t_silently(saved_chain, tmp_path):
    # Trained on length 6; at most 3**4 = 81 <= 100 paths fit: the command says it chose T = 4, and why.
    json_path = tmp_path / "d.json"
    code, out, err = run_cli("decompose", saved_chain, "--max-sequences", 100, "--json", json_path, "--no-progress")
    assert code == 0, err
    assert "NOTE: T = 4, not the training length 6" in out and "--estimate for T = 6" in out
    entry = json.loads(json_path.read_text())["models"][0]
    assert entry["num_steps"] == 4 and entry["note"].startswith("T = 4, not the training length 6")
    # Within the limit, the training length is used and nothing is said.
    code, out, err = run_cli("decompose", saved_chain, "--no-progress")
    assert code == 0, err
    assert "NOTE" not in out and "enumeration of all 3^6 paths" in out
