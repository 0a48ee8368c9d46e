r"""The strict text protocol of the EP paper's follow-up: four plain sentences about one subject, on strings and ids.

The sentence-level EP of a text compares ``ln P(text)`` with ``ln P(the same sentences in reverse order)``
(:func:`epjax.text.reverse_sentences`). In the first text set (``epjax/data/texts.json``) part of the order
information sits in single words rather than in the events: a pronoun ("She swept the pieces") points back to
a sentence that must come earlier, and a connective ("then", "after", "finally", "because") states the order
outright. A model can then tell a reversed text from the words alone, whatever the events are. The stricter
protocol removes both, so that what is left to order the sentences is the content of the events: a causal text
is four events of one subject in temporal or causal order ("The baker mixed flour and water. The baker kneaded
the dough. The baker baked the loaf. The baker sold the loaf at the market."), a non-causal text four
independent facts about one subject ("The owl lived in an old oak. The owl had yellow eyes. ...").

Every text (:func:`check_protocol`; each rule's short name in brackets):

- [four_sentences] exactly four sentences, each starting with a capital letter and ending in ``"."`` (no ``"!"``
  or ``"?"``), one space between sentences and none at either end of the text;
- [no_inner_full_stop] no ``"."`` inside a sentence: no abbreviation ("Dr.", "St.", "a.m."), initial, decimal
  ("3.5") or ellipsis;
- [plain_words] words of letters, with apostrophes and hyphens inside them, one space apart: no digits, commas or
  other punctuation;
- [sentence_length] 4 to 10 words per sentence;
- [same_subject] every sentence starts with the same subject noun phrase ("The baker" four times, or "Mia"):
  the repeated noun phrase takes the place a pronoun would have;
- [simple_past] the word right after the subject is a simple-past verb: a regular "-ed" form (not one of
  :data:`ED_NOT_VERBS`) or an irregular past (:data:`IRREGULAR_PAST`); no auxiliary or modal
  (:data:`AUXILIARIES`: "will", "would", "did not", ...), no progressive, perfect or passive ("was walking",
  "had gone", "was eaten");
- [no_pronouns] no word of :data:`PRONOUNS` anywhere (also as "it's", "she'd");
- [no_connectives] no word of :data:`CONNECTIVES` anywhere (ordering and linking words: "then", "after",
  "finally", "because", "but", "also", ...);
- [four_blocks_on_ids] for each tokenizer given, its ids of the text have exactly four sentence ends under both
  sentence rules (``"reader"`` and ``"paper"``, :func:`epjax.text.sentence_ends`), the last token ending the
  fourth: sentence reversal then permutes exactly four blocks of ids, the four sentences a reader sees.

A set of texts (:func:`check_text_set`) adds: [duplicate_text] no text twice in the set; [subject_variety] no
subject starting more than :data:`MAX_SUBJECT_REPEATS` texts of one group; and, with tokenizers, [matched_lengths]
the groups' mean numbers of tokens per text within :data:`MAX_LENGTH_MISMATCH` (relative to the smaller mean).

The shipped set (:func:`load_strict_texts`, ``epjax/data/texts_strict.json``) is 100 causal and 100 non-causal
texts written for epjax under this protocol.

>>> check_protocol("The cat slept on the mat. The cat woke up. The cat ate fish. The cat left the house.")
>>> try:
...     check_protocol("The cat slept on the mat. Then the cat woke up. The cat ate fish. The cat left the house.")
... except ProtocolError as err:
...     print(err.rule, "|", err.word)
same_subject | Then the
>>> groups = load_strict_texts()
>>> sorted(groups), len(groups["causal"]), len(groups["non-causal"])
(['causal', 'non-causal'], 100, 100)
>>> check_text_set(groups)
[]
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "AUXILIARIES",
    "CONNECTIVES",
    "ED_NOT_VERBS",
    "GROUPS",
    "IRREGULAR_PAST",
    "MAX_LENGTH_MISMATCH",
    "MAX_SUBJECT_REPEATS",
    "PAST_PARTICIPLES",
    "PRONOUNS",
    "RULES",
    "SENTENCES",
    "SENTENCE_WORDS",
    "ProtocolError",
    "check_protocol",
    "check_text_set",
    "load_strict_texts",
    "mean_token_lengths",
    "protocol_violations",
    "split_sentences",
    "subject_of",
]

#: the number of sentences of every text
SENTENCES = 4
#: the allowed number of words per sentence (inclusive)
SENTENCE_WORDS = (4, 10)
#: the two groups of the shipped set, in this order
GROUPS = ("causal", "non-causal")
#: a subject may start at most this many texts of one group
MAX_SUBJECT_REPEATS = 2
#: the groups' mean token lengths may differ by at most this fraction of the smaller mean
MAX_LENGTH_MISMATCH = 0.10

#: the rules of one text, in the order :func:`check_protocol` checks them, then those of a set
RULES = (
    "four_sentences",
    "no_inner_full_stop",
    "plain_words",
    "sentence_length",
    "same_subject",
    "simple_past",
    "no_pronouns",
    "no_connectives",
    "four_blocks_on_ids",
    "duplicate_text",
    "subject_variety",
    "matched_lengths",
)

#: personal, possessive, reflexive, demonstrative, relative, interrogative and indefinite pronouns (and the
#: possessive determiners): each one points at something named elsewhere, so it carries order on its own
PRONOUNS = frozenset(
    """
    i me my mine myself we us our ours ourselves you your yours yourself yourselves
    he him his himself she her hers herself it its itself they them their theirs themselves
    this that these those who whom whose which what whoever whatever whichever
    someone somebody something anyone anybody anything everyone everybody everything
    noone nobody nothing none each_other one_another
    """.split()
)

#: connectives, ordering and time-sequence words: each one states an order (or a cause) by itself
CONNECTIVES = frozenset(
    """
    then after afterwards afterward before later earlier so because therefore thus hence consequently
    finally first firstly second secondly third thirdly next last lastly when whenever while whilst until till
    since once as but however also meanwhile soon eventually immediately suddenly already again still yet
    although though instead subsequently previously initially ultimately now furthermore moreover besides
    otherwise nevertheless nonetheless accordingly thereafter beforehand
    """.split()
)

#: auxiliaries and modals: refused as the verb after the subject ("was", "were" and "had" only when a participle
#: or an "-ing" word follows, see :data:`PAST_PARTICIPLES`)
AUXILIARIES = frozenset(
    """
    will would shall should can could may might must do does did done is are am be been being has have
    having ought won't wouldn't can't couldn't shouldn't didn't doesn't don't isn't aren't wasn't weren't
    hadn't hasn't haven't mustn't mightn't
    """.split()
)

#: irregular simple-past forms accepted as the verb after the subject ("was", "were", "had" as main verbs:
#: "The owl had yellow eyes.")
IRREGULAR_PAST = frozenset(
    """
    arose awoke was were bore beat became began bent bet bit bled blew broke bred brought built burnt burst
    bought cast caught chose clung came cost crept cut dealt dug dove drew dreamt drank drove dwelt ate fell fed felt
    fought found fled flung flew forbade forgot forgave froze got gave went ground grew hung had heard hid hit
    held hurt kept knelt knew laid led leant leapt learnt left lent let lay lit lost made meant met paid put quit
    read rode rang rose ran sawed said saw sought sold sent set sewed shook shed shone shot showed shrank shut
    sang sank sat slew slept slid slung smelt sowed spoke sped spelt spent spilt spun spat split spread sprang
    stood stole stuck stung stank strode struck strung strove swore swept swam swung took taught tore told thought
    threw thrust trod understood woke wore wove wept won wound wrung wrote overcame overtook undertook withdrew
    """.split()
)

#: past participles that differ from the simple past: "had gone", "was eaten" are refused after the subject
PAST_PARTICIPLES = frozenset(
    """
    arisen awoken borne born beaten become begun bitten blown broken chosen come done drawn drunk driven eaten
    fallen forbidden forgotten forgiven frozen gotten given gone grown hidden known lain ridden rung risen run
    seen sewn shaken shown shrunk sung sunk slain spoken sprung stolen stunk strewn striven sworn swum taken torn
    thrown trodden woken worn woven written been
    """.split()
)

#: words ending in "ed" that are not simple-past verbs (nouns, adjectives, present forms)
ED_NOT_VERBS = frozenset(
    """
    bed red shed sled seed need feed speed weed breed steed reed greed bleed creed deed heed hundred sacred naked
    wicked kindred rugged jagged ragged crooked beloved wretched bred fled led fed bled sped shred wed embed
    """.split()
) - IRREGULAR_PAST

_WORD = re.compile(r"[^\W\d_]+(?:['\-][^\W\d_]+)*")
_NEVER_BEFORE_FULL_STOP = frozenset(
    "mr mrs ms mx dr prof st mt rev gen col capt lt sgt gov sen rep hon fig eq vs cf viz etc jr sr inc ltd co "
    "corp no vol ave rd approx dept est".split()
)


class ProtocolError(ValueError):
    """A text (or a set) breaking one rule of the strict protocol.

    Attributes:
        rule: the rule's short name (one of :data:`RULES`).
        sentence: the 1-based index of the offending sentence, or ``None``.
        word: the offending word or fragment, or ``None``.
    """

    def __init__(self, rule: str, message: str, *, sentence: int | None = None, word: str | None = None):
        super().__init__(f"[{rule}] {message}")
        self.rule = rule
        self.sentence = sentence
        self.word = word


# ------------------------------------------------------------------------------------------------------------
# Words and sentences
# ------------------------------------------------------------------------------------------------------------


def _quote(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _base(word: str) -> str:
    """Lower case, a clitic ("it's", "she'd", "baker's") and a trailing possessive apostrophe removed."""
    return word.lower().split("'")[0]


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``: split after each ``"."``, ``"!"`` or ``"?"`` followed by white space or the end.

    A sentence keeps its terminator; white space between sentences is dropped. A text that does not end in a
    terminator gives a last piece without one.

    >>> split_sentences("The cat slept. The cat woke!")
    ['The cat slept.', 'The cat woke!']
    """
    pieces = re.split(r"(?<=[.!?])\s+", text.strip())
    return [p for p in pieces if p]


def _is_past(word: str) -> bool:
    w = word.lower()
    if w in IRREGULAR_PAST:
        return True
    return w.endswith("ed") and len(w) >= 4 and w not in ED_NOT_VERBS and "-" not in w and "'" not in w


def _verb_like(word: str) -> bool:
    """A word that may stand right after the subject: a past form, an auxiliary, or an "-ing" form."""
    w = word.lower()
    return _is_past(w) or w in AUXILIARIES or (w.endswith("ing") and len(w) >= 5)


def _common_prefix(lists: Sequence[Sequence[str]]) -> int:
    n = 0
    for column in zip(*lists, strict=False):
        if len(set(column)) != 1:
            break
        n += 1
    return n


def subject_of(sentences: Sequence[str]) -> str | None:
    """The subject shared by ``sentences``: the longest common leading words followed by a verb in every sentence.

    ``None`` when there is none (different subjects, or a sentence without a verb right after the subject).

    >>> subject_of(["The baker baked bread.", "The baker baked a cake.", "The baker sold rolls."])
    'The baker'
    """
    words = [_WORD.findall(s) for s in sentences]
    if not words or not all(words):
        return None
    k = min(_common_prefix(words), *(len(w) - 1 for w in words))
    for n in range(k, 0, -1):
        if all(_verb_like(w[n]) for w in words):
            return " ".join(words[0][:n])
    return None


# ------------------------------------------------------------------------------------------------------------
# The rules of one text
# ------------------------------------------------------------------------------------------------------------


def _check_format(text: str) -> list[str]:
    """four_sentences and no_inner_full_stop; returns the four sentences."""
    if not text or text != text.strip():
        raise ProtocolError(
            "four_sentences",
            f"the text {_quote(text)} is empty or has white space at either end; expected four sentences "
            "with nothing before the first or after the last.",
        )
    for mark in "!?":
        if mark in text:
            at = text.index(mark)
            raise ProtocolError(
                "four_sentences",
                f"{mark!r} at character {at} ({_quote(text[max(0, at - 30) : at + 1])}); every sentence must end "
                "in '.' and no sentence may hold '!' or '?'.",
                word=mark,
            )
    if "\n" in text or "\t" in text or "  " in text:
        raise ProtocolError(
            "four_sentences",
            f"the text {_quote(text)} holds a line break, a tab or two spaces in a row; expected single spaces.",
        )
    for match in re.finditer(r"\.", text):
        at = match.start()
        before = text[:at]
        after = text[at + 1 :]
        word = re.search(r"(\S*)$", before).group(1)
        if after and not after.startswith(" "):
            what = "an ellipsis" if after.startswith(".") else "a '.' inside a word or number"
            fragment = word + "." + re.match(r"\S*", after).group(0)
        elif word.endswith("."):
            what, fragment = "an ellipsis", word + "."
        elif re.fullmatch(r"[^\W\d_]", word):
            what, fragment = "an initial", word + "."
        elif word[-1:].isdigit():
            what, fragment = "a '.' after a number", word + "."
        elif word.lower() in _NEVER_BEFORE_FULL_STOP or "." in word:
            what, fragment = "an abbreviation", word + "."
        elif after and not re.match(r" [^\W\d_]", after) or after[1:2].islower():
            what, fragment = "a '.' not followed by a capitalised sentence", word + "." + after[:12]
        else:
            continue
        raise ProtocolError(
            "no_inner_full_stop",
            f"{what} {_quote(fragment)} in {_quote(text)}; expected '.' only at the end of each sentence.",
            word=fragment,
        )
    sentences = split_sentences(text)
    if not text.endswith("."):
        raise ProtocolError(
            "four_sentences",
            f"the text ends in {_quote(text[-20:])}, not in '.'; expected four sentences each ending in '.'.",
            sentence=len(sentences),
        )
    if len(sentences) != SENTENCES:
        raise ProtocolError(
            "four_sentences",
            f"{len(sentences)} sentences ({', '.join(map(_quote, sentences))}); expected exactly {SENTENCES}, "
            "each ending in '.'.",
        )
    for i, sentence in enumerate(sentences, 1):
        if not sentence[0].isupper():
            raise ProtocolError(
                "four_sentences",
                f"sentence {i} {_quote(sentence)} does not start with a capital letter; expected one.",
                sentence=i,
            )
    return sentences


def _check_words(sentences: Sequence[str]) -> list[list[str]]:
    """plain_words and sentence_length; returns the words of each sentence."""
    all_words = []
    for i, sentence in enumerate(sentences, 1):
        body = sentence[:-1]
        words = body.split(" ")
        for word in words:
            if not _WORD.fullmatch(word):
                raise ProtocolError(
                    "plain_words",
                    f"sentence {i} {_quote(sentence)} holds {_quote(word)}; expected words of letters (apostrophes "
                    "and hyphens inside a word allowed) separated by single spaces, no digits or other punctuation.",
                    sentence=i,
                    word=word,
                )
        low, high = SENTENCE_WORDS
        if not low <= len(words) <= high:
            raise ProtocolError(
                "sentence_length",
                f"sentence {i} {_quote(sentence)} has {len(words)} words; expected {low} to {high} words per "
                "sentence.",
                sentence=i,
            )
        all_words.append(words)
    return all_words


def _check_subject_and_verb(sentences: Sequence[str], words: Sequence[Sequence[str]]) -> str:
    """same_subject and simple_past; returns the subject."""
    subject = subject_of(sentences)
    if subject is None:
        # the subject of sentence 1: its words before the first verb-like word (at most three words), else its
        # first word (two after an article)
        first = words[0]
        n = next((j for j in range(1, min(len(first), 4)) if _verb_like(first[j])), None)
        guessed = n is None
        if guessed:
            n = 2 if first[0].lower() in ("the", "a", "an") and len(first) > 2 else 1
        candidate = first[:n]
        for i, w in enumerate(words[1:], 2):
            if w[:n] != candidate:
                raise ProtocolError(
                    "same_subject",
                    f"sentence {i} {_quote(sentences[i - 1])} does not start with the subject "
                    f"{' '.join(candidate)!r} of sentence 1; expected every sentence to start with the same "
                    "subject noun phrase.",
                    sentence=i,
                    word=" ".join(w[:n]),
                )
        if guessed:
            raise ProtocolError(
                "simple_past",
                f"sentence 1 {_quote(sentences[0])} has no simple-past verb after its subject; expected the subject "
                "then a simple-past verb (a regular '-ed' form or an irregular past).",
                sentence=1,
                word=first[n] if len(first) > n else None,
            )
        bad = next(i for i, w in enumerate(words, 1) if len(w) <= n or not _verb_like(w[n]))
        verb = words[bad - 1][n] if len(words[bad - 1]) > n else ""
        raise ProtocolError(
            "simple_past",
            f"sentence {bad} {_quote(sentences[bad - 1])}: {verb!r} after the subject {' '.join(candidate)!r} is not "
            "a simple-past verb; expected a regular '-ed' form or an irregular past.",
            sentence=bad,
            word=verb,
        )
    n = len(subject.split(" "))
    for i, w in enumerate(words, 1):
        verb, following = w[n], (w[n + 1] if len(w) > n + 1 else "")
        low, nxt = verb.lower(), following.lower()
        problem = None
        if low in AUXILIARIES:
            problem = "an auxiliary or modal"
        elif not _is_past(low):
            problem = "not a simple-past form"
        elif low in ("was", "were", "had") and (
            nxt in PAST_PARTICIPLES or nxt in ("not", "never") or (nxt.endswith("ing") and len(nxt) >= 5)
            or (low == "had" and _is_past(nxt)) or (low != "had" and _is_past(nxt) and nxt not in IRREGULAR_PAST)
        ):
            problem = f"an auxiliary here (followed by {following!r}: a progressive, perfect, passive or negation)"
        if problem:
            raise ProtocolError(
                "simple_past",
                f"sentence {i} {_quote(sentences[i - 1])}: {verb!r} after the subject {subject!r} is {problem}; "
                "expected a simple-past verb (a regular '-ed' form or an irregular past).",
                sentence=i,
                word=verb,
            )
    return subject


def _check_lists(sentences: Sequence[str], words: Sequence[Sequence[str]]) -> None:
    """no_pronouns, then no_connectives."""
    for rule, listed, what in (("no_pronouns", PRONOUNS, "pronoun"), ("no_connectives", CONNECTIVES, "connective")):
        for i, ws in enumerate(words, 1):
            for word in ws:
                if _base(word) in listed or word.lower() in listed:
                    raise ProtocolError(
                        rule,
                        f"sentence {i} {_quote(sentences[i - 1])} holds the {what} {word!r}; expected no "
                        f"{what}s ({'repeat the subject noun phrase instead' if rule == 'no_pronouns' else 'the order must come from the events alone'}).",  # noqa: E501
                        sentence=i,
                        word=word,
                    )


def _check_ids(text: str, tokenizers: Iterable[Any]) -> None:
    """four_blocks_on_ids."""
    from epjax import text as text_lib

    for tokenizer in tokenizers:
        ids = np.asarray(tokenizer.encode(text))
        for rule in ("reader", "paper"):
            ends = text_lib.sentence_ends(ids, tokenizer, sentence_rule=rule)
            where = np.flatnonzero(ends)
            if where.size != SENTENCES or where[-1] != ids.size - 1:
                pieces = [tokenizer.decode(ids[a + 1 : b + 1]) for a, b in zip([-1, *where[:-1]], where, strict=True)]
                tail = " and the last token ends no sentence" if not ends[-1] else ""
                raise ProtocolError(
                    "four_blocks_on_ids",
                    f"{tokenizer!r} gives {where.size} sentence end(s) under the {rule!r} rule{tail} "
                    f"(blocks {pieces}) for {_quote(text)}; expected exactly {SENTENCES}, the last token ending the "
                    "fourth.",
                    word=rule,
                )


def protocol_violations(text: str, *, tokenizers: Iterable[Any] = ()) -> list[ProtocolError]:
    """Every rule ``text`` breaks, one :class:`ProtocolError` per rule, in the order of :data:`RULES`.

    Rules that need the sentences or the words (all after ``four_sentences``/``plain_words``) are only checked
    when those could be read; ``four_blocks_on_ids`` is checked whatever the string rules say.

    Raises:
        ValueError: ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise ValueError(f"`text` must be a str, got {type(text).__name__}.")
    found: list[ProtocolError] = []

    def attempt(check, *args):
        try:
            return check(*args)
        except ProtocolError as err:
            found.append(err)
            return None

    sentences = attempt(_check_format, text)
    if sentences is None:  # try the rest on what split_sentences gives, when it gives four pieces
        pieces = split_sentences(text)
        sentences = pieces if len(pieces) == SENTENCES else None
    if sentences is not None:
        words = attempt(_check_words, sentences)
        if words is None:
            words = [_WORD.findall(s) for s in sentences]
        if all(words):
            attempt(_check_subject_and_verb, sentences, words)
        attempt(_check_lists, sentences, words)
    attempt(_check_ids, text, tuple(tokenizers))
    return found


def check_protocol(text: str, *, tokenizers: Iterable[Any] = ()) -> None:
    """Raise :class:`ProtocolError` for the first rule (in the order of :data:`RULES`) that ``text`` breaks.

    Args:
        text: one text.
        tokenizers: :class:`epjax.pretrained.Tokenizer` objects for the rule ``four_blocks_on_ids`` (none: the
            rule is not checked).

    Raises:
        ProtocolError: the rule broken (``.rule``), with a message naming the rule, the sentence or word at fault
            and what was expected.
        ValueError: ``text`` is not a string.
    """
    errors = protocol_violations(text)  # the string rules first: the ids are only read when those pass
    if errors:
        raise errors[0]
    _check_ids(text, tuple(tokenizers))


# ------------------------------------------------------------------------------------------------------------
# Sets of texts
# ------------------------------------------------------------------------------------------------------------


def _check_groups(groups: Any) -> dict[str, list[str]]:
    if not isinstance(groups, Mapping) or not groups:
        raise ValueError(f"`groups` must be a non-empty mapping {{name: [texts]}}, got {type(groups).__name__}.")
    out = {}
    for name, texts in groups.items():
        if isinstance(texts, str) or not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"group {name!r} must be a list of strings, got {type(texts).__name__}.")
        out[str(name)] = list(texts)
    return out


def mean_token_lengths(groups: Mapping[str, Sequence[str]], tokenizer: Any) -> dict[str, float]:
    """The mean number of tokens per text of each group under ``tokenizer`` (no BOS).

    Raises:
        ValueError: ``groups`` is not a mapping of lists of strings, or a group is empty.
    """
    groups = _check_groups(groups)
    for name, texts in groups.items():
        if not texts:
            raise ValueError(f"group {name!r} is empty; a mean length needs at least one text.")
    out = {}
    for name, texts in groups.items():
        out[name] = float(np.mean([len(tokenizer.encode(t)) for t in texts]))
    return out


def check_text_set(
    groups: Mapping[str, Sequence[str]], *, tokenizers: Iterable[Any] = ()
) -> list[tuple[str, int | None, ProtocolError]]:
    """Every violation of the protocol in a set of texts: ``[(group, index, error), ...]``, empty when none.

    Each text is checked by :func:`protocol_violations` (all the rules it breaks), then the set: a text seen
    before (``duplicate_text``, at the later copy), a subject starting more than :data:`MAX_SUBJECT_REPEATS`
    texts of one group (``subject_variety``, at each text after the allowed ones) and, per tokenizer, the
    groups' mean token lengths more than :data:`MAX_LENGTH_MISMATCH` apart (``matched_lengths``, index
    ``None``).

    Args:
        groups: ``{name: [texts]}``.
        tokenizers: :class:`epjax.pretrained.Tokenizer` objects for ``four_blocks_on_ids`` and
            ``matched_lengths``.

    Raises:
        ValueError: ``groups`` is not a mapping of lists of strings.
    """
    groups = _check_groups(groups)
    tokenizers = tuple(tokenizers)
    found: list[tuple[str, int | None, ProtocolError]] = []
    seen: dict[str, tuple[str, int]] = {}
    for name, texts in groups.items():
        subjects: Counter[str] = Counter()
        for index, text in enumerate(texts):
            errors = protocol_violations(text, tokenizers=tokenizers)
            found.extend((name, index, err) for err in errors)
            if text in seen:
                first = seen[text]
                found.append((name, index, ProtocolError(
                    "duplicate_text",
                    f"group {name!r}, text {index} repeats group {first[0]!r}, text {first[1]} ({_quote(text)}); "
                    "expected every text once.",
                )))
            else:
                seen[text] = (name, index)
            subject = subject_of(split_sentences(text))
            if subject is not None:
                subjects[subject] += 1
                if subjects[subject] > MAX_SUBJECT_REPEATS:
                    found.append((name, index, ProtocolError(
                        "subject_variety",
                        f"group {name!r}, text {index}: the subject {subject!r} starts {subjects[subject]} texts of "
                        f"the group so far; expected at most {MAX_SUBJECT_REPEATS}.",
                        word=subject,
                    )))
    if len(groups) >= 2 and all(groups.values()):
        for tokenizer in tokenizers:
            means = mean_token_lengths(groups, tokenizer)
            low, high = min(means.values()), max(means.values())
            if high > (1 + MAX_LENGTH_MISMATCH) * low:
                found.append((min(means, key=means.get), None, ProtocolError(
                    "matched_lengths",
                    f"{tokenizer!r}: mean tokens per text {', '.join(f'{k!r} {v:.2f}' for k, v in means.items())} "
                    f"differ by {high / low - 1:.1%}; expected at most {MAX_LENGTH_MISMATCH:.0%}.",
                )))
    return found


def load_strict_texts() -> dict[str, list[str]]:
    """The shipped strict set: ``{"causal": [100 texts], "non-causal": [100 texts]}``.

    Read from ``epjax/data/texts_strict.json`` (layout ``{"description": ..., "groups": {...}}``, as
    ``epjax/data/texts.json``); :func:`epjax.experiments.texts.load_text_groups` reads the same file, and
    ``epjax texts`` scores it given its path as FILE.

    Raises:
        ValueError: the file is missing its groups (a broken installation).
    """
    from importlib.resources import files

    data = json.loads(files("epjax").joinpath("data/texts_strict.json").read_text(encoding="utf-8"))
    groups = data.get("groups") if isinstance(data, dict) else None
    if not isinstance(groups, dict) or tuple(groups) != GROUPS:
        raise ValueError(
            f"epjax/data/texts_strict.json: expected {{'description': ..., 'groups': {{'causal': [...], "
            f"'non-causal': [...]}}}}, got groups {list(groups) if isinstance(groups, dict) else groups!r}."
        )
    return {name: list(texts) for name, texts in groups.items()}
