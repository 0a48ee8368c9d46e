"""Entropy production of text: scoring fixed texts and sampling from a language model (docs/mathematics.md §3, §7).

Token ids, not strings, are what the models score. A text is tokenized once (``tokenizer.encode``, no BOS:
the pretrained models prepend BOS themselves, in both directions, as the EP paper does) and then

    token level      sigma  = ln P(x) - ln P(reverse_tokens(x))                (eq. 18)
    sentence level   sigma' = ln P(x) - ln P(reverse_segments(x, ends))        (eqs. 28-36)

where ``ends = tokenizer.sentence_ends(x, rule=sentence_rule)`` marks the tokens that end a sentence --
decided on the ids (each id mapped once to its bytes), never by re-tokenising strings. Two rules
(``sentence_rule``):

- ``"reader"`` (default): sentence ends a reader would agree with. A '.', '!' or '?' ends a sentence only
  where white space or the end of the text follows it; closing quotes and brackets belong to the sentence
  they close (`."` ends at the quote); decimals ("3.5", "$7.99") end nothing; a '.' after a title or Latin
  abbreviation (``NEVER_END``: "Dr.", "Mr.", "e.g.", "vs." ...) never ends one, after an initial ("J.")
  only before a line break or at the end of the text, after ``END_BEFORE_CAPITAL`` ("etc.", "Inc.", ...) or
  a dotted initialism ("U.S.", "p.m.") and an ellipsis ("...", "…") only before a capitalised word or at the
  end of the text; '!' or '?' followed by a closer and a lower-case word ('"Why?" she asked') ends nothing;
  '。', '！', '？' end one with no white space after them. The decision depends on the next tokens, so it is
  made per sequence (:func:`epjax.pretrained.tokenizer.reader_sentence_ends` has the full statement).
- ``"paper"``: the EP paper's rule, a per-vocabulary mask: a token ends a sentence when its decoded text,
  trailing white space removed, ends in '.', '!' or '?' ("3.5" and "Dr." split sentences, `."` closes none).

Sentence reversal keeps each sentence's tokens in order and reverses the order of the sentences. It is a
bijection only on sequences whose last token ends a sentence, so a text that does not end with a sentence end
is refused, unless ``truncate=True`` drops the tail after its last sentence end (both rules keep every earlier
end when a sequence is truncated after one of its ends).

Under the paper rule the reversed sequence has the same sentences as the original, so block reversal is an
involution and the block-level identities (``S' >= 0``, ``E[exp(-sigma')] = 1``, eqs. 28-36) hold over the
sequences ending a sentence. Under the reader rule an end can depend on the sentence that follows it:
"Hello. World." reversed is " World.Hello.", where the first '.' no longer ends a sentence, so reversal is
not an involution (both texts map to " World.Hello.") and those identities are approximate -- fine for
scoring fixed texts, where sigma' is defined text by text; use ``sentence_rule="paper"`` where the exact
identities matter.

Rates are per token: ``sigma / T`` with ``T = len(x)``, and ``sigma' / T'`` with ``T'`` the length after any
truncation.

Batch scoring pads every sequence at the end to a length bucket and masks the padding out of the sums: the
models are causal, so ``log p(x_t | x_<t)`` does not depend on what follows ``x_t``, and one compiled function
per (batch, bucket) shape scores texts of any length up to the bucket.

Sampling (:func:`sample_entropy_production`) draws sequences from BOS at a temperature and measures both
rates; :func:`fluctuation_check` tests the integral fluctuation theorem ``E[exp(-sigma)] = 1`` (eq. 20) where
it is measurable: short sequences at a high temperature.

Truncation at a sample-dependent point. The block-level theorem ``E[exp(-sigma')] = 1`` holds for a
bijection on a fixed set of sequences. Truncating each sample after its *own* last sentence end mixes
sequences of different lengths chosen by the sample itself, and drops the samples with no sentence end, so
at block level the fluctuation theorem (and ``S' >= 0`` as an exact identity) is only approximate
(docs/mathematics.md §3).
The token-level quantities involve no truncation and are exact.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from epjax._batching import (
    device_batch_size,
    for_each_batch,
    progress_bar,
    replicate_over_devices,
    shard_over_devices,
    to_host,
)
from epjax._checks import check_key, check_num_steps, check_positive_int
from epjax._estimators import Estimate, estimate_from_samples
from epjax._reversal import reverse_prefix
from epjax._xla import jit_model
from epjax.stats import Interval, bootstrap_ci

LEVELS = ("token", "sentence")
SENTENCE_RULES = ("reader", "paper")  # epjax.pretrained.tokenizer.SENTENCE_RULES (not imported: no tokenizers)
DEFAULT_BUCKET = 16


class ContextLengthError(ValueError):
    """A sequence, or a trajectory length asked for, longer than the model's context.

    The one error for it in epjax: :func:`text_tokens` and :func:`score_texts` raise it for a text,
    :func:`epjax.experiments.saved_models.saved_model_ep` and
    :func:`epjax.experiments.decompositions.decompose_saved` for ``num_steps``.

    Attributes:
        name: what was too long (``"text"``, ``"sequences[3]"``, or ``"num_steps"`` for a length asked for).
        num_tokens: its number of tokens.
        max_length: the model's context (``model.max_length``).

    >>> str(ContextLengthError("text", 9, 8))
    "`text` has 9 tokens, more than the model's context of 8 tokens."
    >>> err = ContextLengthError("num_steps", 9, 8)
    >>> str(err), err.num_steps
    ("`num_steps` 9 exceeds the model's context of 8 tokens.", 9)
    """

    def __init__(self, name: str, num_tokens: int, max_length: int):
        what = (
            f"`{name}` {num_tokens} exceeds" if name == "num_steps" else f"`{name}` has {num_tokens} tokens, more than"
        )
        super().__init__(f"{what} the model's context of {max_length} tokens.")
        self.name, self.num_tokens, self.max_length = name, num_tokens, max_length

    @property
    def num_steps(self) -> int:
        """:attr:`num_tokens` (the name used for a trajectory length ``T``)."""
        return self.num_tokens


class TextError(ValueError):
    """A text of a list refused by :func:`score_texts`: the message is ``<where>: <error>``.

    Attributes:
        index: the text's position in the list.
        error: the exception that refused it (a :class:`ContextLengthError` for a text too long, else a
            ``ValueError``).
        where: how the message names the text (default ``texts[index]``).
    """

    def __init__(self, index: int, error: ValueError, where: str | None = None):
        self.index, self.error = index, error
        self.where = f"texts[{index}]" if where is None else where
        super().__init__(f"{self.where}: {error}")


# ------------------------------------------------------------------------------------------------------------
# Tokens and their sentence blocks
# ------------------------------------------------------------------------------------------------------------


def _check_sentence_rule(sentence_rule: Any) -> str:
    if not isinstance(sentence_rule, str) or sentence_rule not in SENTENCE_RULES:
        raise ValueError(
            f"`sentence_rule` must be one of {', '.join(map(repr, SENTENCE_RULES))}, got {sentence_rule!r}."
        )
    return sentence_rule


def sentence_ends(x: Any, tokenizer: Any, *, sentence_rule: str = "reader") -> np.ndarray:
    """Bool ``[T]``: True where token ``x_t`` ends a sentence, decided on the ids of this sequence.

    Args:
        x: int ``[T]`` token ids, one sequence.
        tokenizer: its tokenizer (an :class:`epjax.pretrained.Tokenizer`: ``sentence_ends(ids, rule=...)``).
        sentence_rule: ``"reader"`` (default) or ``"paper"`` (see the module docstring).

    Raises:
        ValueError: an unknown rule, a tokenizer without ``sentence_ends``, or ids that are not token ids.

    >>> from epjax.pretrained import load_gguf                                      # doctest: +SKIP
    >>> _, _, tok = load_gguf()                                                     # doctest: +SKIP
    >>> x = tok.encode('Dr. Li rose 3.5 percent. "Why?" she asked.')                # doctest: +SKIP
    >>> [tok.decode(x[: t + 1]) for t in np.flatnonzero(sentence_ends(x, tok))]     # doctest: +SKIP
    ['Dr. Li rose 3.5 percent.', 'Dr. Li rose 3.5 percent. "Why?" she asked.']
    """
    sentence_rule = _check_sentence_rule(sentence_rule)
    if not callable(getattr(tokenizer, "sentence_ends", None)):
        raise ValueError(
            "`tokenizer` must be an epjax.pretrained.Tokenizer (with a sentence_ends method), got "
            f"{type(tokenizer).__name__}; with a per-vocabulary bool mask the ends are mask[x] (and "
            "epjax.reverse_segments(x, mask[x]) reverses the sentences)."
        )
    return np.asarray(tokenizer.sentence_ends(x, rule=sentence_rule), dtype=bool)


def truncate_after_last_end(x: Any, ends: Any) -> np.ndarray | None:
    """``x`` up to and including its last sentence end, or ``None`` when it has none.

    >>> truncate_after_last_end(np.array([3, 4, 5, 6]), np.array([False, True, False, False])).tolist()
    [3, 4]
    """
    ends = np.asarray(ends, dtype=bool)
    where = np.flatnonzero(ends)
    if where.size == 0:
        return None
    return np.asarray(x)[: where[-1] + 1]


def reverse_sentences(x: Any, tokenizer: Any, *, sentence_rule: str = "reader") -> np.ndarray:
    """Sentence-block reversal of token ids: sentences in reverse order, each kept in order (docs/mathematics.md §3).

    Args:
        x: int ``[T]`` token ids whose last token ends a sentence.
        tokenizer: the tokenizer that decides the sentence ends (:func:`sentence_ends`).
        sentence_rule: ``"reader"`` (default) or ``"paper"``.

    Returns:
        int ``[T]``, the reversed sequence.

    Raises:
        ValueError: the last token does not end a sentence (the map would not be a bijection).

    >>> x = tok.encode("It rained. The street got wet.")                           # doctest: +SKIP
    >>> tok.decode(reverse_sentences(x, tok))                                        # doctest: +SKIP
    ' The street got wet.It rained.'
    """
    x = np.asarray(x)
    ends = sentence_ends(x, tokenizer, sentence_rule=sentence_rule)
    if x.size == 0 or not ends[-1]:
        raise ValueError(
            "the last token must end a sentence for sentence-block reversal (a bijection only on such "
            "sequences); truncate the sequence after its last sentence end."
        )
    # On the host, in NumPy: a jnp reversal here would compile one program per text length.
    sentences = np.split(x, np.flatnonzero(ends)[:-1] + 1)
    return np.concatenate(sentences[::-1])


def text_tokens(
    tokenizer: Any,
    text: str,
    *,
    max_length: int | None = None,
    sentences: bool = False,
    truncate: bool = False,
    sentence_rule: str = "reader",
) -> np.ndarray:
    """Token ids of ``text`` (no BOS), checked for use at token or sentence level.

    Args:
        tokenizer: an :class:`epjax.pretrained.Tokenizer`.
        text: the text.
        max_length: the model's context (``model.max_length``); longer texts are refused.
        sentences: the tokens are for sentence-block reversal: the last token must end a sentence.
        truncate: with ``sentences``, drop the tokens after the last sentence end instead of refusing.
        sentence_rule: with ``sentences``, ``"reader"`` (default) or ``"paper"`` (see the module docstring).

    Returns:
        int32 ``[T]``.

    Raises:
        ContextLengthError: a text with more than ``max_length`` tokens.
        ValueError: a text that is not a str, empty, not valid Unicode or not given back by
            ``tokenizer.decode(tokenizer.encode(text))`` (checked on every text before it is scored); for
            ``sentences``, a text whose last token does not end a sentence (without ``truncate``) or that holds no
            sentence end.
    """
    sentence_rule = _check_sentence_rule(sentence_rule)
    ids = np.asarray(tokenizer.encode(text), dtype=np.int32)
    _check_round_trip(tokenizer, text, ids)
    if max_length is not None and ids.size > max_length:
        raise ContextLengthError("text", int(ids.size), int(max_length))
    if not sentences:
        return ids
    return _sentence_tokens(tokenizer, text, ids, truncate=truncate, sentence_rule=sentence_rule)


def _check_round_trip(tokenizer: Any, text: str, ids: np.ndarray) -> None:
    """Refuse a text the tokenizer does not give back: the ids would stand for another text."""
    decode = getattr(tokenizer, "decode", None)
    if not callable(decode):
        return
    decoded = decode(ids)
    if decoded != text:
        at = len(os.path.commonprefix([decoded, text]))
        raise ValueError(
            f"`text` does not survive the tokenizer's round trip: decode(encode(text)) differs from it at character "
            f"{at} ({text[at : at + 12]!r} became {decoded[at : at + 12]!r}), so its ids stand for another text "
            "(a normalising tokenizer changes such characters); normalise the text first."
        )


def _sentence_tokens(tokenizer: Any, text: str, ids: np.ndarray, *, truncate: bool, sentence_rule: str) -> np.ndarray:
    """``ids`` of ``text`` checked (or, with ``truncate``, cut after the last end) for sentence reversal."""
    ends = sentence_ends(ids, tokenizer, sentence_rule=sentence_rule)
    if ends[-1]:
        return ids
    kept = truncate_after_last_end(ids, ends)
    if kept is None:
        raise ValueError(
            f"the text {_quote(text)} has no sentence end under the {sentence_rule!r} sentence rule "
            f"({_RULE_HINTS[sentence_rule]}), so it cannot be reversed sentence by sentence."
        )
    if not truncate:
        tail = tokenizer.decode(ids[kept.size :])
        raise ValueError(
            f"the text {_quote(text)} does not end a sentence (its last {ids.size - kept.size} token(s) "
            f"{_quote(tail)} follow the last sentence end); sentence-block reversal is a bijection only on "
            "texts ending a sentence. Pass truncate=True (CLI: --truncate) to drop the tail."
        )
    return kept


_RULE_HINTS = {
    "reader": "a '.', '!' or '?' followed by white space or the end of the text, not a decimal point or an "
    "abbreviation",
    "paper": "a token whose text ends in '.', '!' or '?'",
}


def _quote(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


# ------------------------------------------------------------------------------------------------------------
# Batched, padded scoring
# ------------------------------------------------------------------------------------------------------------


def _sums(model, params, x, lengths):
    """``[B]`` sums of ``log p(x_t | x_<t)`` over ``t < lengths[b]``; x ``[B, L]`` padded at the end."""
    log_p = jax.vmap(lambda row: model.log_probs(params, row))(x)  # [B, L]
    mask = jnp.arange(x.shape[1])[None, :] < lengths[:, None]
    return jnp.sum(jnp.where(mask, log_p, 0), axis=1)


def _sums_jit(model, params, x, lengths):
    return jit_model(model, _sums)(params, x, lengths)


def padded_length(length: int, bucket: int, max_length: int | None) -> int:
    """The length a sequence of ``length`` tokens is padded to for batch scoring.

    A multiple of ``bucket``, capped at the model's context ``max_length`` (never below ``length`` itself).

    >>> padded_length(17, 16, None), padded_length(17, 16, 20), padded_length(5, 16, 20)
    (32, 20, 16)
    """
    size = -(-length // bucket) * bucket
    return size if max_length is None else min(size, max(max_length, length))


def log_prob_sums(
    model: Any,
    params: Any,
    sequences: Sequence[Any],
    *,
    batch_size: int = 16,
    bucket: int = DEFAULT_BUCKET,
    progress: Any = None,
) -> np.ndarray:
    """``ln P(x)`` (the sum of the model's ``log_probs``) for each of many token sequences of any lengths.

    Sequences are padded at the end to a multiple of ``bucket`` (capped at ``model.max_length``) and scored
    ``batch_size`` at a time; padding is masked out of the sums (the models are causal). One compilation per
    bucket length. A batch's rows are split over all devices (``batch_size`` rounded up to a multiple of their
    number; under ``jax.distributed`` every process passes the same sequences and gets the same sums).

    Args:
        model: a discrete model (``log_probs``, ``vocab_size``; ``max_length`` when it has a context).
        params: its parameters.
        sequences: int ``[T_i]`` token ids, ``T_i >= 1``.
        batch_size: sequences per compiled call.
        bucket: padding granularity.
        progress: an optional tqdm-like bar, advanced by the number of sequences scored.

    Returns:
        float64 ``[len(sequences)]``.
    """
    batch_size = check_positive_int("batch_size", batch_size)
    bucket = check_positive_int("bucket", bucket)
    max_length = getattr(model, "max_length", None)
    seqs = [np.asarray(s, dtype=np.int32).reshape(-1) for s in sequences]
    for i, s in enumerate(seqs):
        if s.size == 0:
            raise ValueError(f"`sequences[{i}]` is empty: there are no tokens to score.")
        if max_length is not None and s.size > max_length:
            raise ContextLengthError(f"sequences[{i}]", int(s.size), int(max_length))
        if s.min() < 0 or s.max() >= model.vocab_size:
            raise ValueError(f"`sequences[{i}]` must hold token ids in [0, {model.vocab_size}).")
    out = np.zeros(len(seqs), np.float64)
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(seqs):
        groups.setdefault(padded_length(s.size, bucket, max_length), []).append(i)
    rows = device_batch_size(batch_size)  # the rows of a batch are split over all devices (of all processes)
    params = replicate_over_devices(params)
    for length, members in sorted(groups.items()):
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            # Always a full batch: one compiled shape per bucket (padding rows have length 0).
            x = np.zeros((rows, length), np.int32)
            lengths = np.zeros(rows, np.int32)
            for row, i in enumerate(chunk):
                x[row, : seqs[i].size] = seqs[i]
                lengths[row] = seqs[i].size
            sums = to_host(_sums_jit(model, params, *shard_over_devices((x, lengths))))
            out[chunk] = sums[: len(chunk)]
            if progress is not None:
                progress.update(len(chunk))
    return out


class TextSigma(NamedTuple):
    """Stochastic EP of one text at one level.

    Attributes:
        level: ``"token"`` or ``"sentence"``.
        sigma: ``ln P(x) - ln P(reversal(x))`` in nats.
        rate: ``sigma / T``, nats per token.
        num_tokens: ``T`` (for sentences: after any truncation).
        num_blocks: number of sentences after any truncation (1 at token level).
    """

    level: str
    sigma: float
    rate: float
    num_tokens: int
    num_blocks: int


class TextScore(NamedTuple):
    """Both levels for one text (see :func:`score_texts`).

    Attributes:
        num_tokens: ``T``.
        log_prob: ``ln P(x)``.
        token: :class:`TextSigma` at token level.
        sentence: :class:`TextSigma` at sentence level (``None`` when not asked for).
    """

    num_tokens: int
    log_prob: float
    token: TextSigma | None
    sentence: TextSigma | None


def _check_texts(texts: Any) -> list[str]:
    if texts is None or isinstance(texts, (str, bytes, Mapping)) or not isinstance(texts, Iterable):
        got = {type(None): "None", str: "a single str (wrap it in a list)"}.get(type(texts), type(texts).__name__)
        raise ValueError(f"`texts` must be a list of strings, got {got}.")
    return list(texts)


def _check_levels(levels: Sequence[str]) -> tuple[str, ...]:
    levels = (levels,) if isinstance(levels, str) else tuple(levels)
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad or not levels:
        raise ValueError(f"`level` must be one of {', '.join(map(repr, LEVELS))}, got {bad or levels!r}.")
    return levels


class _TextRows(NamedTuple):
    """Where one text's sequences sit among the rows scored together (``None``: not scored)."""

    num_tokens: int  # T
    forward: int  # x
    token: int | None  # x reversed
    sentence_tokens: int | None  # T' after any truncation (None: no sentence level)
    prefix: int | None  # x truncated after its last sentence end (the row of x when nothing was cut)
    sentence: int | None  # the truncated x, sentence-reversed (None with one sentence: sigma' = 0)
    num_blocks: int  # sentences after truncation


def score_texts(
    model: Any,
    params: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    levels: Sequence[str] = LEVELS,
    truncate: bool = False,
    batch_size: int = 16,
    bucket: int = DEFAULT_BUCKET,
    progress: bool = False,
    sentence_rule: str = "reader",
) -> list[TextScore]:
    """Token- and sentence-level stochastic EP of many texts, scored in padded batches.

    Per text: ``x = tokenizer.encode(text)`` (no BOS), forward ``ln P(x)``, the token reversal and the
    sentence-block reversal (ends found on the ids by ``sentence_rule``, see the module docstring). At
    sentence level with ``truncate=True`` the tail after the last sentence end is dropped first (the token
    level always uses the whole text). A text with one sentence has ``sigma' = 0`` exactly.

    Args:
        model: a pretrained model (``epjax.pretrained``) or any discrete model whose ``log_probs`` conditions
            on its own start state.
        params: its parameters.
        tokenizer: the model's tokenizer (``encode``, ``decode``, ``sentence_ends``).
        texts: the texts, a list (or other iterable) of str.
        levels: ``"token"``, ``"sentence"`` or both.
        truncate: at sentence level, drop the tail after the last sentence end instead of refusing the text.
        batch_size: sequences per compiled call.
        bucket: padding granularity of the lengths.
        progress: a progress bar on stderr.
        sentence_rule: ``"reader"`` (default) or ``"paper"``: which tokens end a sentence.

    Returns:
        One :class:`TextScore` per text.

    Raises:
        TextError: a text that is not a str, empty, not valid Unicode or too long (its ``error`` a
            :class:`ContextLengthError`), or (sentence level) that does not end a sentence; it names the text's
            index (``index``) and carries the refusal (``error``).
        ValueError: ``texts`` not a list of str, an unknown level or rule.
    """
    levels = _check_levels(levels)
    sentence_rule = _check_sentence_rule(sentence_rule)
    texts = _check_texts(texts)
    max_length = getattr(model, "max_length", None)
    rows: list[np.ndarray] = []

    def add(row: np.ndarray) -> int:
        rows.append(row)
        return len(rows) - 1

    plans: list[_TextRows] = []
    for i, text in enumerate(texts):
        try:
            x = text_tokens(tokenizer, text, max_length=max_length)  # encoded once for both levels
            xs = (
                _sentence_tokens(tokenizer, text, x, truncate=truncate, sentence_rule=sentence_rule)
                if "sentence" in levels
                else None
            )
        except ValueError as exc:
            raise TextError(i, exc) from None
        forward = add(x)
        token = add(x[::-1].copy()) if "token" in levels else None
        prefix = sentence = None
        num_blocks = 0
        if xs is not None:
            num_blocks = int(sentence_ends(xs, tokenizer, sentence_rule=sentence_rule).sum())
            prefix = add(xs) if xs.size != x.size else forward
            if num_blocks > 1:  # one sentence: sigma' = 0 exactly, nothing to score
                sentence = add(reverse_sentences(xs, tokenizer, sentence_rule=sentence_rule))
        plans.append(_TextRows(x.size, forward, token, None if xs is None else xs.size, prefix, sentence, num_blocks))
    bar = progress_bar(len(rows), f"scoring {len(texts)} texts ({len(rows)} sequences)", "seq") if progress else None
    try:
        sums = log_prob_sums(model, params, rows, batch_size=batch_size, bucket=bucket, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    out = []
    for plan in plans:
        T = plan.num_tokens
        token = sentence = None
        if plan.token is not None:
            s = float(sums[plan.forward] - sums[plan.token])
            token = TextSigma("token", s, s / T, T, 1)
        if plan.prefix is not None:
            Tp = plan.sentence_tokens
            s = float(sums[plan.prefix] - sums[plan.sentence]) if plan.sentence is not None else 0.0
            sentence = TextSigma("sentence", s, s / Tp, Tp, plan.num_blocks)
        out.append(TextScore(T, float(sums[plan.forward]), token, sentence))
    return out


def text_sigma(
    model: Any,
    params: Any,
    tokenizer: Any,
    text: str,
    *,
    level: str = "token",
    truncate: bool = False,
    sentence_rule: str = "reader",
) -> TextSigma:
    """Stochastic entropy production of one text, per token and in total (eq. 18; block level eq. 28).

    ``sigma = ln P(x) - ln P(reversal(x))`` with ``x = tokenizer.encode(text)`` (the model prepends BOS in
    both directions) and the reversal of tokens (``level="token"``) or of sentences (``level="sentence"``:
    sentence ends decided on the ids by ``sentence_rule``, see the module docstring).

    Args:
        model: the language model (e.g. from :func:`epjax.pretrained.load_gguf`).
        params: its parameters.
        tokenizer: its tokenizer.
        text: the text, non-empty, at most ``model.max_length`` tokens.
        level: ``"token"`` or ``"sentence"``.
        truncate: at sentence level, drop the tokens after the last sentence end rather than refuse a text
            that does not end a sentence (a text with no sentence end is refused either way).
        sentence_rule: at sentence level, ``"reader"`` (default) or ``"paper"``: which tokens end a sentence.

    Returns:
        :class:`TextSigma` (``sigma``, ``rate = sigma / T``, ``T``, number of sentences).

    Raises:
        ValueError: a text that is not a str, empty, not valid Unicode or too long; at sentence level a text
            not ending a sentence (without ``truncate``) or with no sentence end.

    >>> from epjax.pretrained import load_gguf                                   # doctest: +SKIP
    >>> model, params, tok = load_gguf()                                         # doctest: +SKIP
    >>> text_sigma(model, params, tok, "It rained. The street got wet.", level="sentence")  # doctest: +SKIP
    """
    (level,) = _check_levels(level)
    if not isinstance(text, str):
        raise ValueError(f"`text` must be a str, got {type(text).__name__}.")
    try:
        (score,) = score_texts(
            model,
            params,
            tokenizer,
            [text],
            levels=(level,),
            truncate=truncate,
            batch_size=1,
            sentence_rule=sentence_rule,
        )
    except TextError as exc:  # one text: no index to name
        raise exc.error from None
    return score.token if level == "token" else score.sentence


# ------------------------------------------------------------------------------------------------------------
# Sampling experiments
# ------------------------------------------------------------------------------------------------------------


def truncated_sentence_reversal(x: jax.Array, ends: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Traceable: ``x`` truncated after its last sentence end and sentence-reversed, padded with zeros to ``[T]``.

    The kept length is ``T' = 1 + (the last t with ends[t])`` (0 when there is none); positions ``[0, T')``
    hold ``reverse_segments(x[:T'], ends[:T'])`` and positions ``[T', T)`` hold 0, so one static shape serves
    every sample inside a compiled batch (docs/mathematics.md §3).

    Args:
        x: int ``[T]`` token ids.
        ends: bool ``[T]`` sentence ends.

    Returns:
        ``(y, kept)``: int ``[T]`` the reversed prefix, zero-padded, and ``T'`` (an int scalar).

    >>> y, kept = truncated_sentence_reversal(jnp.arange(1, 7), jnp.array([0, 1, 0, 1, 0, 0], bool))
    >>> y.tolist(), int(kept)
    ([3, 4, 1, 2, 0, 0], 4)
    """
    x, ends = jnp.asarray(x), jnp.asarray(ends, dtype=bool)
    kept = jnp.max(jnp.where(ends, jnp.arange(x.shape[0]) + 1, 0))
    return reverse_prefix(x, kept, ends), kept


def _masked_sum(model, params, row, length):
    return jnp.sum(jnp.where(jnp.arange(row.shape[0]) < length, model.log_probs(params, row), 0))


def _reversal_scores(model, params, x, ends):
    """Per sample: ``ln P`` of the token reversal and, given ``ends``, of the truncated sentence reversal.

    The sentence reversal's ``ln P`` is a masked sum over the kept length; the kept length and the number of
    sentences come with it.
    """
    out = {"token": _masked_sum(model, params, x[::-1], x.shape[0])}
    if ends is not None:
        y, kept = truncated_sentence_reversal(x, ends)
        out.update(block=_masked_sum(model, params, y, kept), kept=kept, num_blocks=jnp.sum(ends))
    return out


def _sample_and_score(model, params_and_mask, key, num_steps):
    """One sample: draw it, then score its reversals (ends from the per-vocabulary mask, or none)."""
    params, mask = params_and_mask
    x, forward = model.sample_with_log_probs(key, params, num_steps)
    return {"x": x, "forward": forward, **_reversal_scores(model, params, x, None if mask is None else mask[x])}


def _sample_with_log_probs(model, params, key, num_steps):
    x, forward = model.sample_with_log_probs(key, params, num_steps)
    return {"x": x, "forward": forward}


def _score_given_ends(model, params, key, data):
    x, ends = data
    return _reversal_scores(model, params, x, ends)


def _vocabulary_mask(tokenizer: Any, vocab_size: int) -> np.ndarray | None:
    """The paper rule's per-vocabulary sentence-end mask ``[V]``, or ``None`` when the tokenizer has none."""
    size = getattr(tokenizer, "vocab_size", None)
    if not isinstance(size, int) or size < 1:
        return None
    mask = np.zeros(vocab_size, bool)
    ids = np.arange(min(size, vocab_size))
    mask[ids] = np.asarray(tokenizer.sentence_ends(ids, rule="paper"), dtype=bool)
    return mask


def _run_batches(fn, model, params, key, num, *, static=(), data=None, batch_size, bar):
    """``fn`` over samples ``0 .. num - 1`` in compiled batches, as NumPy arrays; the bar counts samples."""
    out = []

    def keep(start: int, stop: int, batch: Any) -> None:
        out.append(batch)
        if bar is not None:
            bar.update(stop - start)

    for_each_batch(fn, model, params, key, num, keep, static=static, data=data, batch_size=batch_size)
    if bar is not None:
        bar.refresh()  # show the final count even when the last batch came within the bar's refresh interval
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs)[:num], *out)


class SampleResult(NamedTuple):
    """The EP paper's sampling experiment (docs/mathematics.md §7) at one temperature.

    Attributes:
        temperature: ``tau`` (sampling and scoring with logits / tau).
        num_steps: ``T``.
        token: :class:`~epjax.Estimate` of ``sigma / T`` over all ``N`` samples (its ``sigmas`` are the rates).
        block: :class:`~epjax.Estimate` of ``sigma' / T'`` over the samples kept at block level (``None`` when
            fewer than 2 have a sentence end).
        sigma: ``[N]`` token-level ``sigma`` (nats, not divided by ``T``).
        block_sigma: ``[N]`` ``sigma'`` (NaN for dropped samples).
        block_lengths: ``[N]`` ``T'`` (0 for dropped samples).
        num_blocks: ``[N]`` sentences per sample after truncation (0 for dropped samples).
        num_dropped: samples with no sentence end, left out at block level.
        tokens: int ``[N, T]`` the samples.
    """

    temperature: float
    num_steps: int
    token: Estimate
    block: Estimate | None
    sigma: np.ndarray
    block_sigma: np.ndarray
    block_lengths: np.ndarray
    num_blocks: np.ndarray
    num_dropped: int
    tokens: np.ndarray


def _check_sampling(key: Any, model: Any, num_samples: Any, num_steps: Any, batch_size: Any) -> tuple[int, int, int]:
    """The sampling drivers' arguments checked: ``(num_samples >= 2, num_steps within the context, batch_size)``."""
    check_key(key)
    num_samples = check_positive_int("num_samples", num_samples, minimum=2)
    num_steps = check_num_steps(num_steps)
    batch_size = check_positive_int("batch_size", batch_size)
    max_length = getattr(model, "max_length", None)
    if max_length is not None and num_steps > max_length:
        raise ValueError(f"`num_steps` = {num_steps} exceeds the model's context of {max_length} tokens.")
    return num_samples, num_steps, batch_size


def sample_entropy_production(
    key: jax.Array,
    model: Any,
    params: Any,
    tokenizer: Any,
    *,
    num_samples: int,
    num_steps: int,
    temperature: float = 1.0,
    batch_size: int = 16,
    blocks: bool = True,
    progress: bool = False,
    sentence_rule: str = "reader",
) -> SampleResult:
    """Token- and sentence-level EP rates of sequences sampled from BOS (EP paper §5; docs/mathematics.md §7).

    Draws ``num_samples`` sequences of ``num_steps`` tokens from ``model.with_temperature(temperature)``
    (sampling *and* scoring with logits / tau; sample ``i`` uses ``fold_in(key, i)``) and computes

    - ``sigma / T`` (token reversal of the whole sequence, exact fluctuation theorem), and
    - ``sigma' / T'`` after truncating each sequence after its last sentence end (sentence ends decided on the
      ids by ``sentence_rule``; the last token counts as the end of the text); sequences with no sentence end
      are dropped and counted; a sequence with one sentence has ``sigma' = 0``. Because the truncation point
      depends on the sample (and, under the reader rule, reversal is not an involution), the block-level
      fluctuation theorem is only approximate (see the module docstring).

    The forward ``ln P`` comes from sampling (KV cache), the reversed ones from parallel passes in the same
    compiled batches: truncation and sentence reversal run on the device (:func:`truncated_sentence_reversal`,
    masked sums), with the ends from the per-vocabulary mask under the paper rule; under the reader rule the
    tokenizer decides the ends of each sample on the host (the rule reads characters) between sampling and
    scoring.
    For a Transformer, load the model with ``context_length = num_steps``: the KV cache has that size.

    Args:
        key: a ``jax.random`` key.
        model: a discrete model with ``sample_with_log_probs`` and ``with_temperature``.
        params: its parameters.
        tokenizer: its tokenizer (for the sentence ends; unused when ``blocks=False``).
        num_samples: ``N >= 2``.
        num_steps: ``T >= 1``.
        temperature: ``tau > 0``.
        batch_size: sequences per compiled call.
        blocks: also compute the block level.
        progress: a progress bar on stderr.
        sentence_rule: ``"reader"`` (default) or ``"paper"``: which tokens end a sentence.

    Returns:
        :class:`SampleResult`.

    Raises:
        ValueError: bad counts or temperature, ``num_steps`` beyond the model's context, an unknown
            ``sentence_rule``, or ``blocks=True`` without a tokenizer.
    """
    sentence_rule = _check_sentence_rule(sentence_rule)
    if blocks and not callable(getattr(tokenizer, "sentence_ends", None)):
        raise ValueError(
            "`tokenizer` must be the model's epjax.pretrained.Tokenizer for the block level (blocks=True), got "
            f"{type(tokenizer).__name__}; pass blocks=False for the token level alone."
        )
    num_samples, num_steps, batch_size = _check_sampling(key, model, num_samples, num_steps, batch_size)
    tempered = model.with_temperature(temperature)
    # The paper rule's ends are a per-vocabulary mask: sampling, both reversals and the masked sums run in one
    # compiled batch. The reader rule reads the characters around each end (the tokenizer decides them on the
    # host), so its samples come back once for their ends before the reversals are scored on the device.
    mask = None
    if blocks and sentence_rule == "paper":
        mask = _vocabulary_mask(tokenizer, model.vocab_size)
    fused = not blocks or mask is not None
    label = f"sample T={num_steps}, tau={temperature:g}"
    bar = progress_bar(num_samples, label if fused else label + " (1/2 sampling)", "seq") if progress else None
    try:
        if fused:
            out = _run_batches(
                _sample_and_score,
                tempered,
                (params, None if mask is None else jnp.asarray(mask)),
                key,
                num_samples,
                static=(num_steps,),
                batch_size=batch_size,
                bar=bar,
            )
        else:
            out = _run_batches(
                _sample_with_log_probs,
                tempered,
                params,
                key,
                num_samples,
                static=(num_steps,),
                batch_size=batch_size,
                bar=bar,
            )
            ends = np.stack([sentence_ends(x, tokenizer, sentence_rule=sentence_rule) for x in out["x"]])
            if bar is not None:
                bar.reset()
                bar.set_description(label + " (2/2 scoring)")
            out.update(
                _run_batches(
                    _score_given_ends,
                    tempered,
                    params,
                    key,
                    num_samples,
                    data=(out["x"], ends),
                    batch_size=batch_size,
                    bar=bar,
                )
            )
    finally:
        if bar is not None:
            bar.close()
    tokens = out["x"]
    forward = out["forward"].astype(np.float64)  # [N, T] per-step log p
    sigma = forward.sum(axis=1) - out["token"].astype(np.float64)
    token = estimate_from_samples(sigma / num_steps)
    block_sigma = np.full(num_samples, np.nan)
    block_lengths = np.zeros(num_samples, np.int64)
    num_blocks = np.zeros(num_samples, np.int64)
    block = None
    if blocks:
        block_lengths = out["kept"].astype(np.int64)
        num_blocks = out["num_blocks"].astype(np.int64)
        # ln P of the truncated prefix is the prefix sum of the per-step log-probabilities (causal model).
        prefix = np.where(np.arange(num_steps) < block_lengths[:, None], forward, 0.0).sum(axis=1)
        reversed_ = prefix - out["block"].astype(np.float64)
        # One sentence: the reversal is the identity, sigma' = 0 exactly (not a difference of two passes).
        block_sigma = np.where(block_lengths == 0, np.nan, np.where(num_blocks > 1, reversed_, 0.0))
        kept_mask = block_lengths > 0
        if kept_mask.sum() >= 2:
            block = estimate_from_samples(block_sigma[kept_mask] / block_lengths[kept_mask])
    num_dropped = int(np.sum(block_lengths == 0)) if blocks else 0
    # Each local is named after its field of SampleResult, in the field order.
    return SampleResult(
        float(temperature), num_steps, token, block, sigma, block_sigma, block_lengths, num_blocks, num_dropped, tokens
    )


class FluctuationCheck(NamedTuple):
    """The integral fluctuation theorem ``E[exp(-sigma)] = 1`` (eq. 20) on sampled sequences.

    Attributes:
        temperature: ``tau``.
        num_steps: ``T``.
        mean_exp_neg_sigma: ``<exp(-sigma)>``.
        interval: percentile bootstrap :class:`~epjax.stats.Interval` of it.
        covers_one: whether the interval contains 1.
        estimate: the :class:`~epjax.Estimate` of ``sigma`` (nats, not per token).
    """

    temperature: float
    num_steps: int
    mean_exp_neg_sigma: float
    interval: Interval
    covers_one: bool
    estimate: Estimate


def fluctuation_check(
    key: jax.Array,
    model: Any,
    params: Any,
    *,
    num_samples: int = 2000,
    num_steps: int = 5,
    temperature: float = 3.5,
    confidence: float = 0.95,
    batch_size: int = 64,
    progress: bool = False,
) -> FluctuationCheck:
    """Check ``<exp(-sigma)> = 1`` (token level, eq. 20) with a bootstrap interval (EP paper §5).

    ``exp(-sigma)`` is heavy-tailed, so the average only converges when sigma is small: short sequences
    (``T`` about 5) at a high temperature (3-4), sampling and scoring with logits / tau. The token reversal
    is a bijection on sequences of length ``T``, so the theorem is exact here (unlike the truncated block
    level).

    Args:
        key: a ``jax.random`` key.
        model: a discrete model with ``sample_with_log_probs`` and ``with_temperature``.
        params: its parameters.
        num_samples: ``N >= 2``.
        num_steps: ``T``.
        temperature: ``tau``.
        confidence: coverage of the bootstrap interval.
        batch_size: sequences per compiled call.
        progress: a progress bar on stderr.

    Returns:
        :class:`FluctuationCheck`.
    """
    result = sample_entropy_production(
        key,
        model,
        params,
        None,
        num_samples=num_samples,
        num_steps=num_steps,
        temperature=temperature,
        batch_size=batch_size,
        blocks=False,
        progress=progress,
    )
    weights = np.exp(-result.sigma)
    interval = bootstrap_ci(weights, confidence=confidence)
    estimate = estimate_from_samples(result.sigma)
    return FluctuationCheck(
        temperature=float(temperature),
        num_steps=num_steps,
        mean_exp_neg_sigma=float(np.mean(weights)),
        interval=interval,
        covers_one=bool(interval.low <= 1.0 <= interval.high),
        estimate=estimate,
    )


# ------------------------------------------------------------------------------------------------------------
# Block-scale analysis: coarser reorderings (docs/mathematics.md §9)
# ------------------------------------------------------------------------------------------------------------

SCHEMES = ("sentences", "tokens")


class Reordering(NamedTuple):
    """One reordering of the block-scale analysis (docs/mathematics.md §9).

    Attributes:
        scheme: ``"sentences"`` (groups of ``scale`` consecutive sentences, the last group may be shorter) or
            ``"tokens"`` (fixed blocks of ``scale`` tokens with a shorter tail block).
        scale: ``k`` sentences or ``l`` tokens per block, ``>= 1``; ``("sentences", 1)`` is sentence reversal and
            ``("tokens", 1)`` token reversal.
    """

    scheme: str
    scale: int

    @property
    def label(self) -> str:
        """``"2 sentences"``, ``"1 token"``, ..."""
        unit = self.scheme[:-1] if self.scale == 1 else self.scheme
        return f"{self.scale} {unit}"


def reorderings(
    sentence_groups: Sequence[int] = (1, 2, 3), block_sizes: Sequence[int] = (1, 10, 20, 40, 60)
) -> tuple[Reordering, ...]:
    """The reorderings of a block-scale analysis: groups of ``k`` sentences, then fixed blocks of ``l`` tokens.

    The defaults are the EP paper authors' (k = 1, 2, 3; l = 1, 10, 20, 40, 60).

    Raises:
        ValueError: a scale that is not a positive integer, a repeated one, or no reordering at all.

    >>> [r.label for r in reorderings((1, 2), (1, 10))]
    ['1 sentence', '2 sentences', '1 token', '10 tokens']
    """
    out = []
    for scheme, name, scales in (
        ("sentences", "sentence_groups", sentence_groups),
        ("tokens", "block_sizes", block_sizes),
    ):
        scales = [check_positive_int(name, k) for k in scales]
        if len(set(scales)) != len(scales):
            raise ValueError(f"`{name}` must not repeat a scale, got {list(scales)}.")
        out += [Reordering(scheme, k) for k in scales]
    if not out:
        raise ValueError("give at least one reordering (`sentence_groups` or `block_sizes`).")
    return tuple(out)


class ReorderingScores(NamedTuple):
    """Per-sequence EP under each reordering of a block-scale analysis.

    Every reordering acts on the same prefix of each sequence: the tokens up to its last sentence end (``T'``
    tokens; the whole text for a fixed text ending a sentence). Sequences with no sentence end are dropped.

    Attributes:
        reorderings: the :class:`Reordering` of each row.
        sigma: ``[R, N]`` ``ln P(x') - ln P(pi(x'))`` of the prefix ``x'`` (NaN for dropped sequences; exactly 0
            where ``pi`` leaves the prefix unchanged).
        lengths: ``[N]`` ``T'`` (0 for dropped sequences).
        num_sentences: ``[N]`` sentences in the prefix.
        num_blocks: ``[R, N]`` blocks the reordering permutes.
        identity: ``[R, N]`` whether the reordering leaves the prefix unchanged (compared on the ids).
        tokens: int ``[N, T]`` the sequences (zero-padded for texts).
        sentence_rule: which tokens end a sentence.
    """

    reorderings: tuple[Reordering, ...]
    sigma: np.ndarray
    lengths: np.ndarray
    num_sentences: np.ndarray
    num_blocks: np.ndarray
    identity: np.ndarray
    tokens: np.ndarray
    sentence_rule: str

    @property
    def kept(self) -> np.ndarray:
        """``[N]`` bool: the sequences with a sentence end (those that count)."""
        return self.lengths > 0

    def rates(self, index: int) -> np.ndarray:
        """``sigma / T'`` of reordering ``index`` over the kept sequences."""
        kept = self.kept
        return self.sigma[index, kept] / self.lengths[kept]


def _reordered(x: jax.Array, kept: jax.Array, ends: jax.Array, reordering: Reordering) -> jax.Array:
    if reordering.scheme == "tokens":
        return reverse_prefix(x, kept, ends, block_size=reordering.scale)
    return reverse_prefix(x, kept, ends, group=reordering.scale)


def _reordering_scores(model, params, key, data, reorderings_):
    """One sequence: ``ln P`` of its prefix and, per reordering, of the reordered prefix, with block counts."""
    x, kept, ends = data
    idx = jnp.arange(x.shape[0])
    inside = idx < kept
    sentences = jnp.sum(ends & inside)
    out = {"forward": _masked_sum(model, params, x, kept), "sentences": sentences}
    for i, r in enumerate(reorderings_):
        y = _reordered(x, kept, ends, r)
        blocks = -(-sentences // r.scale) if r.scheme == "sentences" else -(-kept // r.scale)
        out[f"r{i}"] = {
            "log_p": _masked_sum(model, params, y, kept),
            "identity": jnp.all(jnp.where(inside, y == x, True)),
            "blocks": blocks,
        }
    return out


def _score_reorderings(model, params, x, kept, ends, reorderings_, *, batch_size, bar, sentence_rule):
    """Score prefixes ``x[:kept]`` under every reordering in compiled batches (one compile per batch shape)."""
    out = _run_batches(
        _reordering_scores,
        model,
        params,
        jax.random.key(0),  # unused: scoring draws nothing
        x.shape[0],
        static=(reorderings_,),
        data=(np.asarray(x, np.int32), np.asarray(kept, np.int32), np.asarray(ends, bool)),
        batch_size=batch_size,
        bar=bar,
    )
    kept = np.asarray(kept, np.int64)
    dropped = kept == 0
    forward = out["forward"].astype(np.float64)
    rows = [out[f"r{i}"] for i in range(len(reorderings_))]
    identity = np.stack([r["identity"] for r in rows]) & ~dropped
    # An unchanged prefix has sigma = 0 exactly, not the difference of two passes.
    sigma = np.stack(
        [np.where(ident, 0.0, forward - r["log_p"].astype(np.float64)) for r, ident in zip(rows, identity, strict=True)]
    )
    sigma[:, dropped] = np.nan
    blocks = np.stack([np.where(dropped, 0, r["blocks"]) for r in rows]).astype(np.int64)
    sentences = np.where(dropped, 0, out["sentences"]).astype(np.int64)
    return ReorderingScores(tuple(reorderings_), sigma, kept, sentences, blocks, identity, np.asarray(x), sentence_rule)


def sample_reorderings(
    key: jax.Array,
    model: Any,
    params: Any,
    tokenizer: Any,
    *,
    num_samples: int,
    num_steps: int,
    temperature: float = 1.0,
    reorderings: Sequence[Reordering] | None = None,
    sentence_rule: str = "paper",
    batch_size: int = 16,
    progress: bool = False,
) -> ReorderingScores:
    """Block-scale analysis of sampled text: EP under coarser reorderings (docs/mathematics.md §9).

    Draws ``num_samples`` sequences of ``num_steps`` tokens from BOS at ``temperature`` (sample ``i`` from
    ``fold_in(key, i)``, as :func:`sample_entropy_production`), truncates each after its last sentence end
    (``T'`` tokens; sequences with none are dropped) and scores the prefix and its reordering under each of
    ``reorderings`` (default :func:`reorderings`), all in parallel causal passes on the device. ``ln P`` of
    the prefix and of every reordering come from the same parallel pass, so a reordering that leaves a prefix
    unchanged gives ``sigma = 0`` exactly.

    Args:
        key: a ``jax.random`` key.
        model: a discrete model with ``sample_with_log_probs`` and ``with_temperature``.
        params: its parameters.
        tokenizer: its tokenizer (decides the sentence ends on the ids).
        num_samples: ``N >= 2``.
        num_steps: ``T >= 1``.
        temperature: ``tau > 0`` (sampling and scoring with logits / tau).
        reorderings: the reorderings; default :func:`reorderings` ``()``.
        sentence_rule: ``"paper"`` (default here: the rule of the EP paper's reference figures) or ``"reader"``.
        batch_size: sequences per compiled call.
        progress: a progress bar on stderr.

    Returns:
        :class:`ReorderingScores`.
    """
    sentence_rule = _check_sentence_rule(sentence_rule)
    reorderings_ = _check_reorderings(reorderings)
    num_samples, num_steps, batch_size = _check_sampling(key, model, num_samples, num_steps, batch_size)
    sentence_ends(np.zeros(1, np.int32), tokenizer, sentence_rule=sentence_rule)  # refuses a tokenizer early
    tempered = model.with_temperature(temperature)
    label = f"sample T={num_steps}, tau={temperature:g}"
    bar = progress_bar(num_samples, label + " (1/2 sampling)", "seq") if progress else None
    try:
        x = _run_batches(
            _sample_with_log_probs,
            tempered,
            params,
            key,
            num_samples,
            static=(num_steps,),
            batch_size=batch_size,
            bar=bar,
        )["x"]
        ends = np.stack([sentence_ends(row, tokenizer, sentence_rule=sentence_rule) for row in x])
        kept = np.max(np.where(ends, np.arange(num_steps) + 1, 0), axis=1)
        if bar is not None:
            bar.reset()
            bar.set_description(label + f" (2/2 scoring {len(reorderings_)} reorderings)")
        return _score_reorderings(
            tempered, params, x, kept, ends, reorderings_, batch_size=batch_size, bar=bar, sentence_rule=sentence_rule
        )
    finally:
        if bar is not None:
            bar.close()


def text_reorderings(
    model: Any,
    params: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    reorderings: Sequence[Reordering] | None = None,
    truncate: bool = False,
    sentence_rule: str = "paper",
    batch_size: int = 16,
    bucket: int = DEFAULT_BUCKET,
    progress: bool = False,
) -> ReorderingScores:
    """Block-scale analysis of fixed texts: each text's EP under coarser reorderings (docs/mathematics.md §9).

    Each text is tokenized once (no BOS), checked to end a sentence (or, with ``truncate``, cut after its last
    sentence end) and scored with every reordering of ``reorderings``. Texts of different lengths are padded to a
    common bucketed length, so one compiled function scores them all.

    Args:
        model: a pretrained model (``epjax.pretrained``) or any discrete model.
        params: its parameters.
        tokenizer: its tokenizer.
        texts: the texts.
        reorderings: the reorderings; default :func:`reorderings` ``()``.
        truncate: drop a text's tail after its last sentence end instead of refusing it.
        sentence_rule: ``"paper"`` (default) or ``"reader"``.
        batch_size: sequences per compiled call.
        bucket: padding granularity of the common length.
        progress: a progress bar on stderr.

    Returns:
        :class:`ReorderingScores` (``tokens`` zero-padded to the common length).

    Raises:
        TextError: a text that is refused (too long, not ending a sentence, ...), with its index.
    """
    sentence_rule = _check_sentence_rule(sentence_rule)
    reorderings_ = _check_reorderings(reorderings)
    texts = _check_texts(texts)
    if not texts:
        raise ValueError("`texts` must hold at least one text, got an empty list.")
    max_length = getattr(model, "max_length", None)
    ids = []
    for i, text in enumerate(texts):
        try:
            x = text_tokens(tokenizer, text, max_length=max_length)
            ids.append(_sentence_tokens(tokenizer, text, x, truncate=truncate, sentence_rule=sentence_rule))
        except ValueError as exc:
            raise TextError(i, exc) from None
    width = padded_length(max(x.size for x in ids), check_positive_int("bucket", bucket), max_length)
    x = np.zeros((len(ids), width), np.int32)
    ends = np.zeros((len(ids), width), bool)
    for i, row in enumerate(ids):
        x[i, : row.size] = row
        ends[i, : row.size] = sentence_ends(row, tokenizer, sentence_rule=sentence_rule)
    kept = np.array([row.size for row in ids])
    bar = (
        progress_bar(len(ids), f"scoring {len(ids)} texts x {len(reorderings_)} reorderings", "text")
        if progress
        else None
    )
    try:
        return _score_reorderings(
            model,
            params,
            x,
            kept,
            ends,
            reorderings_,
            batch_size=check_positive_int("batch_size", batch_size),
            bar=bar,
            sentence_rule=sentence_rule,
        )
    finally:
        if bar is not None:
            bar.close()


def _check_reorderings(value: Any) -> tuple[Reordering, ...]:
    if value is None:
        return reorderings()
    items = tuple(value)
    bad = [r for r in items if not isinstance(r, Reordering) or r.scheme not in SCHEMES]
    if bad or not items:
        raise ValueError(
            f"`reorderings` must be a non-empty sequence of epjax.text.Reordering (scheme in {SCHEMES}), "
            f"got {bad[:3] or items!r}."
        )
    return reorderings(
        [r.scale for r in items if r.scheme == "sentences"], [r.scale for r in items if r.scheme == "tokens"]
    )


__all__ = [
    "SCHEMES",
    "ContextLengthError",
    "DEFAULT_BUCKET",
    "FluctuationCheck",
    "LEVELS",
    "Reordering",
    "ReorderingScores",
    "SENTENCE_RULES",
    "SampleResult",
    "TextError",
    "TextScore",
    "TextSigma",
    "fluctuation_check",
    "log_prob_sums",
    "padded_length",
    "reorderings",
    "reverse_sentences",
    "sample_reorderings",
    "sample_entropy_production",
    "score_texts",
    "sentence_ends",
    "text_reorderings",
    "text_sigma",
    "text_tokens",
    "truncate_after_last_end",
    "truncated_sentence_reversal",
]
