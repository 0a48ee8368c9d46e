"""The block-scale analysis: coarser reorderings as engine reversals, and the experiment over them.

Oracles: plain-Python reorderings and their inverses (lists of blocks); exhaustive enumeration of every sequence
(bijection, and the integral fluctuation theorem sum_x P(x) exp(-sigma(x)) = 1, which holds exactly when the
reordering is a bijection); the existing token and sentence reversals (l = 1, k = 1); score_texts; sigma.
"""

from __future__ import annotations

import functools
import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import epjax
from epjax import markov
from epjax._reversal import group_ends, reverse_prefix

pytest.importorskip("gguf")
pytest.importorskip("tokenizers")

from helpers import run_cli  # noqa: E402
from test_text import GROUPS, gguf_path  # noqa: E402, F401  (the tiny GGUF fixture)

from epjax import pretrained  # noqa: E402
from epjax import text as text_lib  # noqa: E402
from epjax.experiments import block_scale, texts  # noqa: E402

# --- plain-Python oracles -----------------------------------------------------------------------------------


def split_at(x, ends):
    """Blocks of ``x`` closed at each end (a trailing remainder is a block of its own)."""
    blocks, current = [], []
    for token, end in zip(x, ends, strict=True):
        current.append(token)
        if end:
            blocks.append(current)
            current = []
    return blocks + ([current] if current else [])


def python_ragged_blocks(x, size):
    return [t for b in reversed([list(x[i : i + size]) for i in range(0, len(x), size)]) for t in b]


def python_groups(x, ends, k):
    """Sentences (the last token closes the last one), grouped by k from the start, groups reversed."""
    sentences = split_at(list(x), list(ends[:-1]) + [True])
    groups = [sentences[i : i + k] for i in range(0, len(sentences), k)]
    return [t for g in reversed(groups) for s in g for t in s]


def python_inverse_groups(y, lengths):
    """Undo a group reversal: the output holds the groups last-to-first; cut it with the group lengths reversed."""
    out, start, pieces = [], 0, []
    for n in reversed(lengths):
        pieces.append(y[start : start + n])
        start += n
    for piece in reversed(pieces):
        out += list(piece)
    return out


# --- the engine reversals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_ragged_blocks_match_lists_and_invert(seed):
    rng = np.random.default_rng(seed)
    for T in (1, 5, 7, 12, 13):
        x = rng.integers(0, 9, T)
        for size in (1, 2, 3, 5, 12, 20):
            y = epjax.reverse_blocks(jnp.asarray(x), size, ragged=True).tolist()
            assert y == python_ragged_blocks(x, size), (T, size)
            # The inverse cuts the shorter block first: block lengths reversed.
            lengths = [len(x[i : i + size]) for i in range(0, T, size)]
            assert python_inverse_groups(y, lengths) == x.tolist()
    # l = 1 is token reversal; l >= T the identity; a multiple of l is the plain block reversal.
    x = jnp.arange(10)
    assert epjax.reverse_blocks(x, 1, ragged=True).tolist() == epjax.reverse_tokens(x).tolist()
    assert epjax.reverse_blocks(x, 10, ragged=True).tolist() == x.tolist()
    assert epjax.reverse_blocks(x, 5, ragged=True).tolist() == epjax.reverse_blocks(x, 5).tolist()


def test_reverse_blocks_refuses_ragged_without_the_option():
    with pytest.raises(ValueError, match=r"block_size=3 for a sequence of length 7 \(ragged=True allows"):
        epjax.reverse_blocks(jnp.arange(7), 3)
    with pytest.raises(ValueError, match="`ragged` must be True or False, got 1"):
        epjax.reverse_blocks(jnp.arange(7), 3, ragged=1)


@pytest.mark.parametrize("seed", range(4))
def test_sentence_groups_match_lists_and_invert(seed):
    rng = np.random.default_rng(seed)
    for T in [1, 6, 11, 15] * 5:  # four lengths: each (length, k) compiles once
        x = rng.integers(0, 50, T)
        ends = rng.random(T) < 0.35
        ends[-1] = True
        for k in (1, 2, 3, 4):
            y = epjax.reverse_segments(jnp.asarray(x), jnp.asarray(ends), group=k).tolist()
            assert y == python_groups(x, ends, k)
            sentences = split_at(list(x), list(ends))
            lengths = [sum(len(s) for s in sentences[i : i + k]) for i in range(0, len(sentences), k)]
            assert python_inverse_groups(y, lengths) == x.tolist()
        # k = 1 is the plain segment reversal.
        plain = epjax.reverse_segments(jnp.asarray(x), jnp.asarray(ends)).tolist()
        assert epjax.reverse_segments(jnp.asarray(x), jnp.asarray(ends), group=1).tolist() == plain
    assert group_ends(jnp.array([1, 1, 1, 1, 1], bool), 2).astype(int).tolist() == [0, 1, 0, 1, 0]
    with pytest.raises(ValueError, match="`group` must be"):
        epjax.reverse_segments(jnp.arange(3), jnp.array([0, 0, 1], bool), group=0)


def test_reverse_prefix_under_jit_and_vmap():
    """Truncated prefixes of different lengths in one compiled batch equal the lists, with the requested padding."""
    rng = np.random.default_rng(0)
    T = 11
    xs = rng.integers(1, 40, (16, T))
    ends = rng.random((16, T)) < 0.3
    kept = np.array([max([t + 1 for t in range(T) if ends[i, t]], default=0) for i in range(16)])
    for kwargs in ({"group": 1}, {"group": 2}, {"block_size": 3}):
        run = jax.jit(jax.vmap(functools.partial(reverse_prefix, **kwargs)))
        ys = run(jnp.asarray(xs), jnp.asarray(kept), jnp.asarray(ends))
        for i in range(16):
            n = kept[i]
            if "block_size" in kwargs:
                want = python_ragged_blocks(xs[i, :n], 3)
            else:
                want = python_groups(xs[i, :n], ends[i, :n], kwargs["group"]) if n else []
            assert ys[i].tolist() == want + [0] * (T - n), (kwargs, i)


def _all_sequences(V, T):
    return jnp.asarray(list(itertools.product(range(V), repeat=T)))


@pytest.mark.parametrize(
    "name, reversal",
    [
        ("ragged blocks of 2", functools.partial(epjax.reverse_blocks, block_size=2, ragged=True)),
        ("ragged blocks of 4", functools.partial(epjax.reverse_blocks, block_size=4, ragged=True)),
        ("sentences", epjax.segment_reversal(np.array([False, False, True]))),
        ("pairs of sentences", epjax.segment_reversal(np.array([False, False, True]), group=2)),
        ("triples of sentences", epjax.segment_reversal(np.array([False, True, True]), group=3)),
    ],
)
def test_reorderings_are_bijections_with_an_exact_fluctuation_theorem(x64, name, reversal):
    """Over all 3^5 sequences: the images are distinct, and sum_x P(x) exp(-sigma) = 1 to rounding in float64."""
    V, T = 3, 5
    xs = _all_sequences(V, T)
    ys = jax.vmap(reversal)(xs)
    assert len({tuple(y) for y in np.asarray(ys).tolist()}) == V**T, name
    model = markov.Model(markov.Config(vocab_size=V))
    transition = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.2, 0.2, 0.6]])
    params = markov.from_probabilities(np.array([0.5, 0.3, 0.2]), transition)
    log_p = jax.vmap(lambda x: model.log_probs(params, x).sum())
    forward, backward = log_p(xs), log_p(ys)
    assert abs(float(jnp.sum(jnp.exp(backward))) - 1) < 1e-12  # the images are all sequences, once each
    assert abs(float(jnp.sum(jnp.exp(forward) * jnp.exp(backward - forward))) - 1) < 1e-12
    exact = epjax.exact_entropy_production(model, params, num_steps=T, reversal=reversal)
    assert exact == pytest.approx(float(jnp.sum(jnp.exp(forward) * (forward - backward))), abs=1e-12)
    assert exact > 0


def test_segment_reversal_monte_carlo_within_error_bars_of_exact(x64):
    model = markov.Model(markov.Config(vocab_size=3))
    params = markov.from_probabilities(
        np.array([0.5, 0.3, 0.2]), np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.2, 0.2, 0.6]])
    )
    reversal = epjax.segment_reversal(np.array([False, False, True]), group=2)
    exact = epjax.exact_entropy_production(model, params, num_steps=7, reversal=reversal)
    est = epjax.entropy_production(jax.random.key(1), model, params, num_steps=7, num_samples=20_000, reversal=reversal)
    assert abs(est.mean - exact) < 4 * est.stderr, (est.mean, est.stderr, exact)


def test_segment_reversal_keeps_the_tail_and_refuses_bad_masks():
    reverse = epjax.segment_reversal(np.array([False, True]))
    # (0 1)(0 0 1) 0 0 -> (0 0 1)(0 1) 0 0 ; a sequence without a delimiter is left as it is.
    assert reverse(jnp.array([0, 1, 0, 0, 1, 0, 0])).tolist() == [0, 0, 1, 0, 1, 0, 0]
    assert reverse(jnp.array([0, 0, 0])).tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="`delimiters` must be a boolean mask"):
        epjax.segment_reversal(np.array([0, 1]))
    with pytest.raises(ValueError, match="`x` must be int token ids"):
        reverse(jnp.ones(3))


# --- the text layer --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(gguf_path):  # noqa: F811
    model, params, tok = pretrained.load_gguf(gguf_path)
    return texts.LanguageModel(model, params, tok, "tiny", (gguf_path,))


def test_reorderings_validation():
    assert [r.label for r in text_lib.reorderings((2,), (1, 5))] == ["2 sentences", "1 token", "5 tokens"]
    with pytest.raises(ValueError, match="`block_sizes` must not repeat a scale"):
        text_lib.reorderings((1,), (10, 10))
    with pytest.raises(ValueError, match="`sentence_groups` must be"):
        text_lib.reorderings((0,), ())
    with pytest.raises(ValueError, match="at least one reordering"):
        text_lib.reorderings((), ())


def test_text_reorderings_agree_with_score_texts(tiny):
    """k = 1 is the sentence level of score_texts and l = 1 its token level, text by text."""
    all_texts = [t for group in GROUPS.values() for t in group]
    chosen = text_lib.reorderings((1, 2, 3), (1, 4, 200))
    scores = text_lib.text_reorderings(tiny.model, tiny.params, tiny.tokenizer, all_texts, reorderings=chosen)
    reference = text_lib.score_texts(tiny.model, tiny.params, tiny.tokenizer, all_texts, sentence_rule="paper")
    for i, ref in enumerate(reference):
        assert scores.lengths[i] == ref.num_tokens == ref.sentence.num_tokens
        assert scores.num_sentences[i] == ref.sentence.num_blocks
        assert scores.sigma[0, i] == pytest.approx(ref.sentence.sigma, abs=2e-4)
        assert scores.sigma[3, i] == pytest.approx(ref.token.sigma, abs=2e-4)
        # Blocks of 200 tokens hold the whole text: the identity, sigma = 0 exactly.
        assert scores.identity[5, i] and scores.sigma[5, i] == 0.0
        # k >= the number of sentences is the identity too, decided on the ids.
        for row, k in ((1, 2), (2, 3)):
            assert scores.identity[row, i] == (ref.sentence.num_blocks <= k)
        assert scores.num_blocks[4, i] == -(-ref.num_tokens // 4)


def test_sample_reorderings_equal_sigma_of_each_prefix(tiny, x64):
    """Each sampled prefix's sigma equals epjax.sigma with the corresponding reversal of that prefix (float64)."""
    model, params = pretrained.load_gguf(tiny.files[0], dtype="float64")[:2]
    chosen = text_lib.reorderings((1, 2), (1, 3))
    scores = text_lib.sample_reorderings(
        jax.random.key(4), model, params, tiny.tokenizer, num_samples=12, num_steps=24, reorderings=chosen
    )
    mask = text_lib._vocabulary_mask(tiny.tokenizer, model.vocab_size)
    assert np.all(np.isnan(scores.sigma[:, scores.lengths == 0]))
    kept = np.flatnonzero(scores.lengths)
    assert kept.size >= 3  # enough samples ended a sentence for the comparison to mean something
    for i in kept[:3]:  # each prefix length compiles its own sigma: three samples keep the test short
        n = int(scores.lengths[i])
        x = jnp.asarray(scores.tokens[i, :n])
        ends = mask[np.asarray(x)]
        assert ends[-1] and scores.num_sentences[i] == ends.sum()
        for row, reversal in enumerate(
            [
                functools.partial(epjax.reverse_segments, ends=ends),
                functools.partial(epjax.reverse_segments, ends=ends, group=2),
                epjax.reverse_tokens,
                functools.partial(epjax.reverse_blocks, block_size=3, ragged=True),
            ]
        ):
            want = float(epjax.sigma(model, params, x, reversal))
            assert scores.sigma[row, i] == pytest.approx(want, abs=1e-9)


def test_summary_rows_by_hand():
    scores = text_lib.ReorderingScores(
        reorderings=text_lib.reorderings((1, 2), (4,)),
        sigma=np.array([[2.0, 0.0, 6.0, np.nan], [1.0, 0.0, 0.0, np.nan], [4.0, 3.0, 0.0, np.nan]]),
        lengths=np.array([10, 4, 6, 0]),
        num_sentences=np.array([3, 1, 1, 0]),
        num_blocks=np.array([[3, 1, 1, 0], [2, 1, 1, 0], [3, 1, 2, 0]]),
        identity=np.array([[False, True, False, False], [False, True, True, False], [False, False, True, False]]),
        tokens=np.zeros((4, 10), np.int32),
        sentence_rule="paper",
    )
    rows = block_scale.summarize_reorderings(scores, num_bootstrap=200)
    assert [r["n"] for r in rows] == [3, 3, 3]
    assert rows[0]["block_length"] == pytest.approx(20 / 5) and rows[1]["block_length"] == pytest.approx(2 * 20 / 5)
    assert rows[2]["block_length"] == 4.0 and rows[2]["tokens_per_block"] == pytest.approx(20 / 6)
    rates = np.array([0.2, 0.0, 1.0])
    assert rows[0]["mean"] == pytest.approx(rates.mean()) and rows[0]["median"] == pytest.approx(0.2)
    assert rows[0]["stderr"] == pytest.approx(rates.std(ddof=1) / np.sqrt(3))
    assert [r["identity_fraction"] for r in rows] == pytest.approx([1 / 3, 2 / 3, 1 / 3])
    one = scores._replace(lengths=np.array([10, 0, 0, 0]))
    with pytest.raises(ValueError, match="at least 2 sequences with a sentence end, got 1 of 4"):
        block_scale.summarize_reorderings(one)


def test_block_scale_cli_on_texts_and_samples(tmp_path, gguf_path):  # noqa: F811
    data = tmp_path / "texts.json"
    data.write_text(json.dumps({"groups": GROUPS}))
    out = tmp_path / "bs.json"
    code, stdout, _ = run_cli(
        "block-scale", str(data), "--model", str(gguf_path), "--groups", "1,2", "--blocks", "1,5",
        "--bootstrap", "200", "--json", str(out), "--csv", str(tmp_path / "bs.csv"), "--plot", str(tmp_path / "bs.png"),
        "--no-progress",
    )  # fmt: skip
    assert code == 0, stdout
    report = json.loads(out.read_text())
    assert [r["scale"] for r in report["rows"]] == [1, 2, 1, 5]
    assert report["provenance"]["inputs"][0]["path"].endswith("tiny.gguf")
    assert any(i["path"].endswith("texts.json") for i in report["provenance"]["inputs"])
    assert (tmp_path / "bs.png").stat().st_size > 0
    assert (tmp_path / "bs.csv").read_text().splitlines()[0].startswith("scheme,scale,n,block_length")
    sampling = ["--samples", "6", "--steps", "48", "--groups", "1", "--blocks", "8", "--bootstrap", "100"]
    code, stdout, _ = run_cli("block-scale", "--model", str(gguf_path), *sampling, "--no-progress")
    assert code == 0 and "6 sequences of T = 48 tokens" in stdout
    # The random tiny model rarely ends a sentence under the reader rule: refused with the count, not a NaN table.
    code, _, stderr = run_cli("block-scale", "--model", str(gguf_path), *sampling, "--sentence-rule", "reader")
    assert code == 2 and "needs at least 2 sequences with a sentence end, got" in stderr
    for argv, message in [
        (["--groups", "", "--blocks", ""], "nothing to reorder"),
        (["--truncate"], "--truncate applies to fixed texts"),
        ([str(data), "--builtin"], "either FILE or --builtin"),
    ]:
        code, _, stderr = run_cli("block-scale", "--model", str(gguf_path), *argv)
        assert code == 2 and message in stderr, stderr
    # The shipped strict set is read (and would be hashed); its texts are longer than the tiny model's context.
    code, _, stderr = run_cli("block-scale", "--builtin", "strict", "--model", str(gguf_path))
    assert code == 2 and "texts[0]: `text` has" in stderr and "context of 64 tokens" in stderr, stderr
    code, _, stderr = run_cli("block-scale", "--groups", "1,1")
    assert code == 2 and "distinct positive integers" in stderr


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_coarser_reversals_inside_a_users_jit_vmap_and_grad(dtype):
    """sigma under the new reversals: jit(vmap) equals one-at-a-time, and its gradient in the chain's logits
    equals a central finite difference (float64) or the float64 gradient to float32 precision."""
    with jax.enable_x64(dtype == "float64"):
        model = markov.Model(markov.Config(vocab_size=3))
        params = markov.from_probabilities(
            np.array([0.5, 0.3, 0.2]), np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.2, 0.2, 0.6]])
        )
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), params)
        xs = jnp.asarray(np.random.default_rng(0).integers(0, 3, (32, 9)))
        for reversal in (
            functools.partial(epjax.reverse_blocks, block_size=4, ragged=True),
            epjax.segment_reversal(np.array([False, False, True]), group=2),
        ):
            mean_sigma = lambda p, r=reversal: jnp.mean(jax.vmap(lambda seq: epjax.sigma(model, p, seq, r))(xs))
            one_at_a_time = np.mean([float(epjax.sigma(model, params, x, reversal)) for x in xs])
            value = jax.jit(mean_sigma)(params)
            assert value.dtype == jnp.dtype(dtype)
            assert float(value) == pytest.approx(one_at_a_time, rel=1e-5 if dtype == "float32" else 1e-12)
            grad = jax.jit(jax.grad(mean_sigma))(params).log_transition
            assert grad.dtype == jnp.dtype(dtype) and bool(jnp.all(jnp.isfinite(grad)))
            if dtype == "float64":
                h = 1e-6
                bump = np.zeros((3, 3))
                bump[0, 1] = h
                up = params._replace(log_transition=params.log_transition + bump)
                down = params._replace(log_transition=params.log_transition - bump)
                fd = (float(mean_sigma(up)) - float(mean_sigma(down))) / (2 * h)
                assert float(grad[0, 1]) == pytest.approx(fd, rel=1e-6, abs=1e-9)
