"""The text experiments (epjax.experiments.texts, epjax.experiments.sampled_text) and the device-side reversal.

Oracles: the sentence reversal of a truncated sequence built by plain Python lists; the experiments' numbers
against the library functions they wrap; the per-text JSON against the CSV; errors carrying their fields.
"""

from __future__ import annotations

import csv
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("gguf")
pytest.importorskip("tokenizers")

from test_text import GROUPS, gguf_path  # noqa: E402, F401  (the tiny GGUF fixture)

from epjax import pretrained, stats  # noqa: E402
from epjax import text as text_lib  # noqa: E402
from epjax.experiments import sampled_text, texts  # noqa: E402


def python_truncated_reversal(x, ends):
    """Plain lists: cut after the last end, split into sentences, reverse their order, pad with zeros."""
    x, ends = list(x), list(ends)
    last = max((t for t, e in enumerate(ends) if e), default=-1)
    blocks, current = [], []
    for token, end in zip(x[: last + 1], ends[: last + 1], strict=True):
        current.append(token)
        if end:
            blocks.append(current)
            current = []
    flat = [t for block in reversed(blocks) for t in block]
    return flat + [0] * (len(x) - len(flat)), last + 1


@pytest.mark.parametrize("seed", range(6))
def test_truncated_sentence_reversal_matches_lists(seed):
    rng = np.random.default_rng(seed)
    T = 12
    reverse = jax.jit(text_lib.truncated_sentence_reversal)
    for p in (0.0, 0.15, 0.5, 1.0):
        x = rng.integers(1, 50, size=T)
        ends = rng.random(T) < p
        y, kept = reverse(jnp.asarray(x), jnp.asarray(ends))
        want, want_kept = python_truncated_reversal(x, ends)
        assert y.tolist() == want and int(kept) == want_kept, (x, ends)
    # Batched (what the sampling batch does) equals one at a time.
    xs = rng.integers(1, 50, size=(5, T))
    ends = rng.random((5, T)) < 0.3
    ys, kept = jax.vmap(text_lib.truncated_sentence_reversal)(jnp.asarray(xs), jnp.asarray(ends))
    for i in range(5):
        want, want_kept = python_truncated_reversal(xs[i], ends[i])
        assert ys[i].tolist() == want and int(kept[i]) == want_kept


def test_padded_length():
    assert text_lib.padded_length(1, 16, None) == 16
    assert text_lib.padded_length(16, 16, None) == 16
    assert text_lib.padded_length(17, 16, None) == 32
    assert text_lib.padded_length(17, 16, 20) == 20  # capped at the context
    assert text_lib.padded_length(25, 16, 20) == 25  # never below the length itself


def test_errors_carry_their_fields(gguf_path):  # noqa: F811
    model, params, tok = pretrained.load_gguf(gguf_path, context_length=8)
    long = "The cat sat on the mat. It was happy."
    n = len(tok.encode(long))
    with pytest.raises(text_lib.ContextLengthError) as info:
        text_lib.text_tokens(tok, long, max_length=8)
    assert n > 8 and (info.value.num_tokens, info.value.max_length) == (n, 8)
    assert str(info.value) == f"`text` has {n} tokens, more than the model's context of 8 tokens."
    with pytest.raises(text_lib.TextError) as info:
        text_lib.score_texts(model, params, tok, ["The mat.", long])
    assert info.value.index == 1 and isinstance(info.value.error, text_lib.ContextLengthError)
    assert str(info.value).startswith("texts[1]: `text` has")
    lm = texts.LanguageModel(model, params, tok, "tiny")
    with pytest.raises(texts.TextsError) as info:
        texts.compare_texts(lm, {"a": ["The mat.", "The cat."], "b": ["It was.", long]})
    assert (info.value.group, info.value.index) == ("b", 1)
    assert isinstance(info.value.error, text_lib.ContextLengthError) and info.value.error.num_tokens == n
    with pytest.raises(texts.TextsError, match=r"group 'a', text 0: the text 'the cat' has no sentence end"):
        texts.compare_texts(lm, {"a": ["the cat", "The cat."], "b": ["It was.", "It is."]})
    with pytest.raises(ValueError, match="exactly two groups"):
        texts.compare_texts(lm, {"a": ["The mat.", "The cat."]})


def test_compare_texts_renders_itself(gguf_path, tmp_path):  # noqa: F811
    lm = texts.load_language_model(gguf_path)
    assert lm.files == (gguf_path,) and lm.name == gguf_path.name
    file = tmp_path / "groups.json"
    file.write_text(__import__("json").dumps({"groups": GROUPS}))
    groups = texts.load_text_groups(file)
    result = texts.compare_texts(lm, groups, batch_size=4)
    assert result.inputs == (gguf_path, file)
    # The records are the library's scores, in group order.
    flat = [t for g in GROUPS for t in GROUPS[g]]
    scores = text_lib.score_texts(lm.model, lm.params, lm.tokenizer, flat, batch_size=4)
    assert [r["text"] for r in result.texts] == flat
    np.testing.assert_allclose([r["sigma_token"] for r in result.texts], [s.token.sigma for s in scores])
    np.testing.assert_allclose([r["rate_sentence"] for r in result.texts], [s.sentence.rate for s in scores])
    report = result.to_json()
    for level in ("token", "sentence"):
        rates = [r[f"rate_{level}"] for r in result.texts]
        mw = stats.mann_whitney_u(rates[:3], rates[3:])
        assert report["tests"][level]["U"] == mw.u and report["tests"][level]["p_value"] == mw.p_value
    assert list(report) == ["command", "epjax_version", "jax_version", "units", "source", "model", "truncate",
                            "sentence_rule", "groups", "texts", "tests"]  # fmt: skip
    # CSV: the header, then one row per text holding the JSON's values.
    buffer = io.StringIO()
    csv.writer(buffer).writerows([result.csv_header(), *result.csv_rows()])
    rows = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    assert [float(r["rate_token"]) for r in rows] == [r["rate_token"] for r in result.texts]
    # The figure: both panels with labelled axes, a legend, a title naming the reversal.
    fig = result.plot()
    axes = fig.axes
    assert len(axes) == 2 and all("nats per token" in ax.get_ylabel() for ax in axes)
    assert "token reversal" in axes[0].get_title() and "sentence-block reversal" in axes[1].get_title()
    assert fig.legends and fig.get_suptitle()
    assert "T = " in fig.get_suptitle()


def test_sampled_text_ep_renders_itself(gguf_path, capsys):  # noqa: F811
    lm = texts.load_language_model(gguf_path, context_length=10)
    result = sampled_text.sampled_text_ep(lm, num_samples=6, num_steps=10, batch_size=4, progress=True)
    err = capsys.readouterr().err
    # The progress bar counts the sequences asked for (6), batches of 4 included.
    assert "6/6" in err and "/8" not in err and "/12" not in err
    direct = text_lib.sample_entropy_production(
        jax.random.key(0), lm.model, lm.params, lm.tokenizer, num_samples=6, num_steps=10, batch_size=4
    )
    report = result.to_json()
    assert report["rate_token"] == [float(v) for v in direct.token.sigmas]
    assert report["num_dropped"] == direct.num_dropped and report["mode"] == "sample"
    assert result.inputs == (gguf_path,)
    fig = result.plot()
    labelled = [ax for ax in fig.axes if ax.get_ylabel()]
    assert len(labelled) == len(fig.axes) and all(ax.get_legend() is not None for ax in fig.axes)
    assert "T = 10" in fig.get_suptitle() and "reversal" in fig.get_suptitle()
    assert any("nats per token" in ax.get_xlabel() or "nats per token" in ax.get_ylabel() for ax in fig.axes)


def test_fluctuation_test_result(gguf_path):  # noqa: F811
    lm = texts.load_language_model(gguf_path, context_length=3)
    result = sampled_text.fluctuation_test(lm, num_samples=40, num_steps=3, temperature=3.0, batch_size=20)
    direct = text_lib.fluctuation_check(
        jax.random.key(0), lm.model, lm.params, num_samples=40, num_steps=3, temperature=3.0, batch_size=20
    )
    report = result.to_json()
    assert report["mean_exp_neg_sigma"] == direct.mean_exp_neg_sigma
    assert (report["ci95_low"], report["ci95_high"]) == (direct.interval.low, direct.interval.high)
    assert "bootstrap 95% CI" in result.table() and result.passed is None
