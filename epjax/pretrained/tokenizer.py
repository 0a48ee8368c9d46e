"""Tokenizers for the pretrained models, built with the ``tokenizers`` library.

A GGUF file carries no ``tokenizer.json``: its vocabulary, merges or scores, token types and pre-tokenizer name
are metadata (``tokenizer.ggml.*``). :meth:`Tokenizer.from_gguf` rebuilds the tokenizer the way transformers'
GGUF loader does, for the two kinds ``tokenizer.ggml.model`` names:

``gpt2``, byte-level BPE (GPT-2, Llama 3, SmolLM, Qwen2/2.5/3): vocab + merges, control tokens added as special
tokens, user-defined ones as added tokens, with the pre-tokenizer ``tokenizer.ggml.pre`` names:

    gpt2, gpt-2, default  GPT-2's regex (``ByteLevel(use_regex=True)``)
    smollm                every digit its own piece, then GPT-2's regex (SmolLM's ``tokenizer.json`` and
                          llama.cpp; transformers' GGUF loader uses GPT-2's regex alone, which gives the same
                          ids because the SmolLM vocabulary has no multi-digit token)
    llama-bpe, llama3,    Llama 3's regex (at most three digits a piece)
    llama-v3
    qwen2,                Qwen2's regex (Qwen2, Qwen2.5, Qwen3; DeepSeek-R1's Qwen distillations): Llama 3's
    deepseek-r1-qwen      with every digit its own piece
    qwen35                Qwen3.5's regex (Qwen2's, with combining marks inside words)
    tekken                Mistral's Tekken regex (case-aware words, every digit its own piece)
    gpt-4o                GPT-4o's regex (case-aware words with contractions, at most three digits a piece)

each regex split ``isolated`` and followed by ``ByteLevel(use_regex=False)``, as transformers builds them (its
``GGUF_PRE_TOKENIZER_SPLITS`` table is the oracle of tests/test_gguf_models.py). No Unicode normalizer is applied
(Qwen's own ``tokenizer.json`` has NFC; transformers' GGUF loader has none). Any other name is refused.

``llama``, SentencePiece (Llama 1/2, Mistral 7B, TinyLlama, ...): a BPE over the vocabulary with byte fallback
(``<0x00>`` .. ``<0xFF>`` tokens), its merges those of the file or, as SentencePiece files have none, derived
from the scores (every split of a token into two tokens, best-scored result first); ``▁`` stands for a space,
and a ``▁`` is put before the text when ``tokenizer.ggml.add_space_prefix`` is true (the default), and removed
again by the decoder (normalizers ``Prepend("▁")``, ``Replace(" ", "▁")``; decoders ``Replace("▁", " ")``,
``ByteFallback``, ``Fuse``, ``Strip(left=1)``). The ids equal those of transformers' GGUF tokenizer
(``LlamaTokenizer``) except for a text starting with a space or holding a special token: transformers'
``Metaspace(prepend_scheme="first")`` puts no ``▁`` before a text that already starts with one, nor after a
special token, while SentencePiece's dummy prefix, Llama 2's own ``tokenizer.json`` and llama.cpp do -- as here,
so ``" x"`` round-trips. Architectures whose SentencePiece files transformers treats specially (Gemma, Phi-3)
are refused.

:meth:`Tokenizer.from_folder` reads a Hugging Face checkpoint folder (``tokenizer.json``, or ``vocab.json`` +
``merges.txt`` for GPT-2's byte-level BPE).

Token ids, not strings, are what the models score. :meth:`Tokenizer.sentence_ends` marks the tokens of one
sequence that end a sentence for the sentence-block reversal (docs/mathematics.md §3), decided on the ids --
each id mapped once to the bytes it stands for -- never by re-tokenising text. Two rules:

    "reader"  (default) :func:`reader_sentence_ends`: sentence ends a reader would agree with; whether a '.'
              ends a sentence depends on what follows it, so the decision is made per sequence
    "paper"   the EP paper's rule, a per-vocabulary mask (:meth:`Tokenizer.sentence_end_mask`): a token ends a
              sentence when its text, trailing white space removed, ends in '.', '!' or '?'
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

SENTENCE_ENDS = (".", "!", "?")
SENTENCE_RULES = ("reader", "paper")

# The reader rule (reader_sentence_ends). Characters, not bytes: a multi-byte character split across tokens
# belongs to the token holding its last byte.
_TERMINATORS = ".!?…。｡！？"
_FULL_STOPS = "。｡！？"  # CJK text puts no space after them
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # those of str.splitlines
_CLOSERS = "\"')]}»›”’」』）］｝〉》】〕〗〙〛｣"
_OPENERS = "\"'([{«‹“‘„「『（［｛〈《【〔〖〘〚｢¿¡"
# A '.' after these never ends a sentence: they stand before what they qualify ("Dr. Smith", "e.g. this").
NEVER_END = ("Mr", "Mrs", "Ms", "Mx", "Dr", "Prof", "St", "Mt", "Rev", "Gen", "Col", "Capt", "Lt", "Sgt", "Gov",
             "Sen", "Rep", "Hon", "Fig", "Eq", "vs", "cf", "viz", "e.g", "i.e")
# A '.' after these ends a sentence only before a capitalised word or at the end of the text ("5 p.m. The
# bus" ends, "the U.S. economy" does not); so do dotted initialisms (U.S, a.m, p.m) of any letters.
END_BEFORE_CAPITAL = ("etc", "Jr", "Sr", "Inc", "Ltd", "Co", "Corp", "Ph.D")
_NEVER_END = frozenset(NEVER_END)
_NEVER_END_ANY_CASE = frozenset(("vs", "cf", "viz", "e.g", "i.e"))  # also "E.g.", "Vs."
_END_BEFORE_CAPITAL = frozenset(END_BEFORE_CAPITAL)
_CLUSTER = re.compile(f"[{re.escape(_TERMINATORS)}]+")
_INITIALISM = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN35_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
    r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_UPPER = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]"  # Tekken's and GPT-4o's "upper or caseless" letters
_LOWER = r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"  # and "lower or caseless" ones
_TEKKEN_SPLIT = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_CONTRACTION = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
_GPT4O_SPLIT = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+{_CONTRACTION}"
    rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*{_CONTRACTION}"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# tokenizer.ggml.pre -> the regex split before ByteLevel(use_regex=False); None: ByteLevel's own (GPT-2's) regex.
_SPLITS: dict[str, str | None] = {
    "default": None,
    "gpt2": None,
    "gpt-2": None,
    "smollm": None,  # digits split first (_pre_tokenizer)
    "llama-bpe": _LLAMA3_SPLIT,
    "llama3": _LLAMA3_SPLIT,
    "llama-v3": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT,
    "deepseek-r1-qwen": _QWEN2_SPLIT,
    "qwen35": _QWEN35_SPLIT,
    "tekken": _TEKKEN_SPLIT,
    "gpt-4o": _GPT4O_SPLIT,
}
_PRE_TOKENIZERS = tuple(_SPLITS)
_TOKENIZER_MODELS = ("gpt2", "llama")
# Architectures whose SentencePiece GGUF tokenizer transformers builds differently (respelled tokens, no
# Metaspace): not reproduced here.
_SPM_REFUSED_ARCHITECTURES = ("gemma", "gemma2", "gemma3", "gemma4", "phi3")
_SPACE = "\u2581"  # SentencePiece's "▁"
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character (the alphabet of byte-level BPE tokens)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def reader_sentence_ends(pieces: Sequence[bytes | None]) -> np.ndarray:
    r"""Bool ``[T]``: the tokens that end a sentence under the reader rule, from the bytes of each token.

    The text is the UTF-8 decoding of the concatenated pieces (``None`` marks a special token, which never ends
    a sentence and acts like the end of the text for what precedes it). A run of terminators ('.', '!', '?',
    '…', and the full stops '。', '｡', '！', '？') ends a sentence when:

    1. '。', '｡', '！' or '？' is in the run: always (no white space is needed after them);
    2. otherwise the run, with the closing quotes and brackets right after it, must be followed by white space
       or the end of the text ("3.5", "e.g", "$7.99", "example.com" end nothing), and then
    3. '!' or '?' in the run: it ends, unless a closer follows it and the next word starts in lower case
       ('"Why?" she asked.' is one sentence);
    4. an ellipsis ('...', '..', '…'): only before a capitalised word or at the end of the text;
    5. a single '.': never after the abbreviations :data:`NEVER_END` (titles, "vs", "cf", "e.g", "i.e");
       after an initial -- a single capital letter that starts the text or a sentence or follows a
       capitalised word or another initial ("J. K. Rowling", "John F. Kennedy"; not "vitamin C.") -- only
       before a line break or at the end of the text; after :data:`END_BEFORE_CAPITAL` ("etc", "Jr", "Inc",
       ...) and dotted initialisms ("U.S", "a.m", "p.m") only before a capitalised word or at the end of the
       text; after any other word, always.

    "The next word" skips white space and opening quotes and brackets; "the end of the text" allows trailing
    white space. The token that ends the sentence is the one holding the last character of the run and its
    closers (the closing quote of `."` belongs to the sentence it closes); a character split across tokens
    belongs to the token holding its last byte. White space at the very end of the sequence belongs to the last
    sentence: when only white-space tokens follow the last end, the last token becomes the end instead, so a
    text ending in ".\n" still ends a sentence.

    Every decision looks only at characters up to the first character of the next run of terminators, so
    truncating a sequence after one of its sentence ends keeps every earlier decision: ``ends(x[: k + 1]) ==
    ends(x)[: k + 1]`` for each end ``k``.

    Args:
        pieces: per token, the UTF-8 bytes it stands for, or ``None`` for a special token.

    Returns:
        bool ``[T]``.

    >>> reader_sentence_ends([b"Dr", b".", b" Li", b" rose", b" 3", b".", b"5", b"%.", b" Then", b"?"]).tolist()
    [False, False, False, False, False, False, False, True, False, True]
    """
    num_tokens = len(pieces)
    ends = np.zeros(num_tokens, bool)
    token_chars = [""] * num_tokens
    chars: list[str] = []
    owners: list[int] = []
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    last = -1  # the last token that contributed bytes to the current segment

    def close_segment() -> None:
        tail = decoder.decode(b"", final=True)  # an incomplete character at the end: U+FFFD
        if tail:
            chars.append(tail)
            owners.extend([last] * len(tail))
            token_chars[last] += tail
        _mark_reader_ends("".join(chars), owners, ends)
        chars.clear()
        owners.clear()
        decoder.reset()

    for t, piece in enumerate(pieces):
        if piece is None:
            close_segment()
            continue
        text = decoder.decode(bytes(piece))
        chars.append(text)
        owners.extend([t] * len(text))
        token_chars[t] = text
        if piece:
            last = t
    close_segment()
    marked = np.flatnonzero(ends)
    if marked.size and marked[-1] < num_tokens - 1:
        tail = range(marked[-1] + 1, num_tokens)
        if all(pieces[t] is not None and (token_chars[t] == "" or token_chars[t].isspace()) for t in tail):
            ends[marked[-1]] = False
            ends[-1] = True
    return ends


def _mark_reader_ends(text: str, owners: list[int], ends: np.ndarray) -> None:
    """Set ``ends[owners[i]]`` for the last character ``i`` of each sentence end in one segment of text."""
    size = len(text)
    for run in _CLUSTER.finditer(text):
        start, stop = run.span()
        after = stop
        while after < size and text[after] in _CLOSERS:
            after += 1
        if _reader_end(text, start, stop, after):
            ends[owners[after - 1]] = True


def _reader_end(text: str, start: int, stop: int, after: int) -> bool:
    """Whether the terminators ``text[start:stop]``, closers up to ``after``, end a sentence (reader rule)."""
    run = text[start:stop]
    if any(c in _FULL_STOPS for c in run):
        return True
    if after < len(text) and not text[after].isspace():
        return False
    following, line_break = _next_word_start(text, after)  # following is None: the text ends
    capital = following is None or following.isupper() or following.istitle()
    if "!" in run or "?" in run:
        return not (after > stop and following is not None and following.islower())
    if len(run) > 1 or "…" in run:
        return capital
    begin = start
    while begin > 0 and not text[begin - 1].isspace():
        begin -= 1
    word = text[begin:start].lstrip(_OPENERS)
    if word in _NEVER_END or word.lower() in _NEVER_END_ANY_CASE:
        return False
    if len(word) == 1 and word.isupper() and _starts_name(text, begin):
        # "J. K. Rowling", "John F. Kennedy": the next word is capitalised after an initial as after a sentence
        return following is None or line_break
    if word in _END_BEFORE_CAPITAL or _INITIALISM.fullmatch(word):
        return capital
    return True


def _starts_name(text: str, index: int) -> bool:
    """Whether the word at ``index`` may be an initial: it starts the text or a sentence, or follows a name.

    A name here is a capitalised word or another initial ("J. K.", "John F."); after a lower-case word
    ("vitamin C.") a capital letter is a word of its own.
    """
    stop = index
    while stop > 0 and text[stop - 1].isspace():
        stop -= 1
    begin = stop
    while begin > 0 and not text[begin - 1].isspace():
        begin -= 1
    previous = text[begin:stop].lstrip(_OPENERS)
    return not previous or previous[0].isupper() or previous[-1] in _TERMINATORS


def _next_word_start(text: str, index: int) -> tuple[str | None, bool]:
    """The next word's first character (``None`` if none) and whether a line break comes before it.

    The next word starts after white space and opening quotes or brackets from ``index``.
    """
    size, start = len(text), index
    while index < size and text[index].isspace():
        index += 1
    line_break = any(c in _LINE_BREAKS for c in text[start:index])
    while index < size and text[index] in _OPENERS:
        index += 1
    return (text[index] if index < size else None), line_break


def import_tokenizers():
    """The ``tokenizers`` package, or an ImportError saying which extra installs it."""
    try:
        import tokenizers
    except ImportError:  # pragma: no cover - exercised only without the optional dependency
        raise ImportError(
            "epjax.pretrained needs the `tokenizers` package: pip install 'epjax[lm]'."
        ) from None
    return tokenizers


class Tokenizer:
    """A tokenizer (byte-level BPE, or SentencePiece-style BPE with byte fallback) with a designated BOS token.

    Args:
        backend: a ``tokenizers.Tokenizer``. ``encode`` never adds special tokens: the models prepend BOS
            themselves.
        bos_id: the id the models are conditioned on before the first token.
        vocab_size: the model's vocabulary size ``V`` (defaults to the tokenizer's); masks have this length.

    Attributes:
        backend: the ``tokenizers.Tokenizer``.
        bos_id: the BOS id.
        vocab_size: ``V``.
    """

    def __init__(self, backend: Any, *, bos_id: int, vocab_size: int | None = None):
        self.backend = backend
        size = backend.get_vocab_size(with_added_tokens=True)
        self.vocab_size = int(size if vocab_size is None else vocab_size)
        if not 0 <= int(bos_id) < self.vocab_size:
            raise ValueError(f"`bos_id` must be a token id in [0, {self.vocab_size}), got {bos_id!r}.")
        self.bos_id = int(bos_id)
        self._texts: list[str] | None = None
        self._pieces: list[bytes | None] | None = None
        self._paper_mask: np.ndarray | None = None
        self._sentencepiece = False  # set by from_gguf: pieces spelled with "▁" and <0xNN>, not byte-level

    # --- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_gguf(
        cls,
        metadata: Mapping[str, Any],
        *,
        bos_id: int,
        vocab_size: int | None = None,
        source: Any = "GGUF file",
    ) -> Tokenizer:
        """Rebuild the tokenizer of GGUF metadata ``tokenizer.ggml.*`` (see the module docstring).

        Raises:
            ValueError: a tokenizer model or pre-tokenizer not supported (named), a missing or inconsistent
                ``tokenizer.ggml.*`` entry.
        """
        tokenizers = import_tokenizers()
        kind = metadata.get("tokenizer.ggml.model")
        if kind not in _TOKENIZER_MODELS:
            raise ValueError(
                f"{source}: tokenizer.ggml.model = {kind!r} is not supported; epjax reads byte-level BPE "
                f"('gpt2') and SentencePiece ('llama') tokenizers."
            )
        if "tokenizer.ggml.tokens" not in metadata:
            raise ValueError(
                f"{source}: the GGUF metadata has no 'tokenizer.ggml.tokens' entry, needed for the tokenizer."
            )
        tokens: list[str] = list(metadata["tokenizer.ggml.tokens"])
        types = metadata.get("tokenizer.ggml.token_type")
        types = np.zeros(len(tokens), np.int32) if types is None else np.asarray(types)
        if len(types) != len(tokens):
            raise ValueError(
                f"{source}: tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens."
            )
        if kind == "llama":
            return cls._from_gguf_sentencepiece(
                tokenizers, metadata, tokens, types, bos_id=bos_id, vocab_size=vocab_size, source=source
            )
        if "tokenizer.ggml.merges" not in metadata:
            raise ValueError(
                f"{source}: the GGUF metadata has no 'tokenizer.ggml.merges' entry, needed for the tokenizer."
            )
        pre = metadata.get("tokenizer.ggml.pre", "default")
        if pre not in _PRE_TOKENIZERS:
            raise ValueError(
                f"{source}: tokenizer.ggml.pre = {pre!r} is not supported; "
                f"supported: {list(_PRE_TOKENIZERS)}."
            )
        # Every real byte-level token is spelled in the byte alphabet; respell the rare one that is not (as
        # transformers does) so that the BPE model accepts it.
        spelling = bytes_to_unicode()
        alphabet = set(spelling.values())
        vocab = {}
        for index, token in enumerate(tokens):
            if not set(token) <= alphabet:
                token = "".join(spelling[b] for b in token.encode("utf-8"))
            vocab.setdefault(token, index)
        merges = [tuple(m.split(" ", 1)) for m in metadata["tokenizer.ggml.merges"]]
        backend = tokenizers.Tokenizer(
            tokenizers.models.BPE(
                vocab=vocab,
                merges=merges,
                fuse_unk=False,
                continuing_subword_prefix="",
                end_of_word_suffix="",
            )
        )
        prefix = bool(metadata.get("tokenizer.ggml.add_space_prefix", False))
        backend.pre_tokenizer = _pre_tokenizer(tokenizers, pre, prefix)
        backend.decoder = tokenizers.decoders.ByteLevel()
        backend.add_special_tokens(
            [
                tokenizers.AddedToken(t, normalized=False, special=True)
                for t, k in zip(tokens, types, strict=True)
                if k == _CONTROL and set(t) <= alphabet
            ]
        )
        backend.add_tokens(
            [
                tokenizers.AddedToken(t, normalized=False, special=False)
                for t, k in zip(tokens, types, strict=True)
                if k == _USER_DEFINED and t in vocab
            ]
        )
        return cls(backend, bos_id=bos_id, vocab_size=vocab_size)

    @classmethod
    def _from_gguf_sentencepiece(
        cls,
        tokenizers: Any,
        metadata: Mapping[str, Any],
        tokens: list[str],
        types: np.ndarray,
        *,
        bos_id: int,
        vocab_size: int | None,
        source: Any,
    ) -> Tokenizer:
        """A SentencePiece GGUF tokenizer (``tokenizer.ggml.model = "llama"``) as a byte-fallback BPE."""
        arch = metadata.get("general.architecture")
        if arch in _SPM_REFUSED_ARCHITECTURES:
            raise ValueError(
                f"{source}: a SentencePiece tokenizer of architecture {arch!r} is not supported (its vocabulary "
                f"is respelled or its prefix space handled differently); refused: {list(_SPM_REFUSED_ARCHITECTURES)}."
            )
        vocab = {token: index for index, token in enumerate(tokens)}  # a repeated token: its last id
        if "tokenizer.ggml.merges" in metadata:
            merges = [tuple(m.split(" ", 1)) for m in metadata["tokenizer.ggml.merges"]]
        else:
            if "tokenizer.ggml.scores" not in metadata:
                raise ValueError(
                    f"{source}: a SentencePiece tokenizer needs 'tokenizer.ggml.scores' (or "
                    f"'tokenizer.ggml.merges'); the GGUF metadata has neither."
                )
            scores = np.asarray(metadata["tokenizer.ggml.scores"], np.float64)
            if scores.shape != (len(tokens),):
                raise ValueError(
                    f"{source}: tokenizer.ggml.scores has {scores.size} entries for {len(tokens)} tokens."
                )
            merges = _merges_from_scores(tokens, scores, vocab)
        unk = metadata.get("tokenizer.ggml.unknown_token_id")
        unk_token = tokens[int(unk)] if unk is not None and 0 <= int(unk) < len(tokens) else None
        backend = tokenizers.Tokenizer(
            tokenizers.models.BPE(
                vocab=vocab, merges=merges, unk_token=unk_token, fuse_unk=True, byte_fallback=True
            )
        )
        # SentencePiece's dummy prefix: a "▁" before the text, whatever it starts with (so " x" is "▁▁x" and
        # decodes back to " x"), then every space a "▁". transformers' GGUF loader uses Metaspace(prepend_scheme=
        # "first"), which adds no "▁" before a text that starts with a space; Llama 2's own tokenizer.json and
        # llama.cpp add it, as here.
        prefix = bool(metadata.get("tokenizer.ggml.add_space_prefix", True))
        normalizers = tokenizers.normalizers
        spaces = normalizers.Replace(" ", _SPACE)
        backend.normalizer = normalizers.Sequence([normalizers.Prepend(_SPACE), spaces]) if prefix else spaces
        decoders = tokenizers.decoders
        steps = [decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
        if prefix:
            steps.append(decoders.Strip(content=" ", left=1, right=0))
        backend.decoder = decoders.Sequence(steps)
        backend.add_special_tokens(
            [
                tokenizers.AddedToken(t, normalized=False, special=True)
                for t, k in zip(tokens, types, strict=True)
                if k == _CONTROL
            ]
        )
        backend.add_tokens(
            [
                tokenizers.AddedToken(t, normalized=False, special=False)
                for t, k in zip(tokens, types, strict=True)
                if k == _USER_DEFINED
            ]
        )
        tokenizer = cls(backend, bos_id=bos_id, vocab_size=vocab_size)
        tokenizer._sentencepiece = True
        return tokenizer

    @classmethod
    def from_folder(
        cls, folder: str | os.PathLike, *, bos_token: str = "<|endoftext|>", vocab_size: int | None = None
    ) -> Tokenizer:
        """The tokenizer of a Hugging Face folder: ``tokenizer.json``, or ``vocab.json`` + ``merges.txt``.

        Args:
            folder: the checkpoint folder.
            bos_token: the BOS token's text (GPT-2's ``<|endoftext|>``); it must be in the vocabulary.
            vocab_size: the model's vocabulary size.
        """
        tokenizers = import_tokenizers()
        folder = Path(folder)
        if (folder / "tokenizer.json").is_file():
            try:
                backend = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
            except Exception as err:  # noqa: BLE001 - the library raises plain Exceptions on bad files
                raise ValueError(
                    f"{folder / 'tokenizer.json'}: not a valid tokenizer.json ({err})."
                ) from None
            backend.post_processor = None
        elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            try:
                model = tokenizers.models.BPE.from_file(
                    str(folder / "vocab.json"), str(folder / "merges.txt")
                )
            except Exception as err:  # noqa: BLE001
                raise ValueError(f"{folder}: cannot read vocab.json + merges.txt ({err}).") from None
            backend = tokenizers.Tokenizer(model)
            backend.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
            backend.decoder = tokenizers.decoders.ByteLevel()
            if backend.token_to_id(bos_token) is not None:
                backend.add_special_tokens([tokenizers.AddedToken(bos_token, normalized=False, special=True)])
        else:
            raise ValueError(
                f"{folder}: no tokenizer found; expected tokenizer.json, or vocab.json and merges.txt."
            )
        bos_id = backend.token_to_id(bos_token)
        if bos_id is None:
            raise ValueError(f"{folder}: the tokenizer has no BOS token {bos_token!r}.")
        return cls(backend, bos_id=bos_id, vocab_size=vocab_size)

    # --- use ----------------------------------------------------------------------------------------------
    def encode(self, text: str, *, max_length: int | None = None) -> list[int]:
        r"""Token ids of ``text`` (no BOS: the models prepend it).

        Raises:
            ValueError: ``text`` is not a string, is empty, is not valid Unicode (a lone surrogate such as
                ``"\ud800"``, which has no UTF-8 bytes), or has more than ``max_length`` tokens.
        """
        if not isinstance(text, str):
            raise ValueError(f"`text` must be a str, got {type(text).__name__}.")
        if not text.strip():
            raise ValueError(f"`text` is empty or only white space ({text!r}): there are no words to score.")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(
                f"`text` must be valid Unicode, but it holds the lone surrogate U+{ord(text[err.start]):04X} at "
                f"character {err.start} ({_quote(text)}), which has no UTF-8 encoding."
            ) from None
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if max_length is not None and len(ids) > max_length:
            raise ValueError(
                f"`text` has {len(ids)} tokens, more than the model's context of {max_length} tokens."
            )
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """The text of a sequence of ids (special tokens kept)."""
        return self.backend.decode([int(i) for i in np.asarray(ids).reshape(-1)], skip_special_tokens=False)

    def token_text(self, token_id: int) -> str:
        """The decoded text of one token (U+FFFD for a token holding part of a UTF-8 character)."""
        token_id = int(token_id)
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"`token_id` must be in [0, {self.vocab_size}), got {token_id}.")
        return self._token_texts()[token_id]

    def token_bytes(self, token_id: int) -> bytes | None:
        """The UTF-8 bytes token ``token_id`` stands for in the text (part of a character, possibly).

        ``None`` for a special token (``<|endoftext|>``: not text); ``b""`` for an id the model has but the
        tokenizer lacks. Concatenating the pieces of a sequence without special tokens gives the bytes of its
        decoded text -- for a SentencePiece tokenizer after the space its dummy prefix puts before the text (a
        ``▁`` is a space, a ``<0xNN>`` token the byte ``0xNN``).

        Raises:
            ValueError: ``token_id`` out of range, or a tokenizer that is neither byte-level nor a SentencePiece
                GGUF tokenizer (its tokens' bytes are not known one by one).
        """
        token_id = int(token_id)
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"`token_id` must be in [0, {self.vocab_size}), got {token_id}.")
        return self._token_pieces()[token_id]

    def sentence_ends(self, ids: Any, *, rule: str = "reader") -> np.ndarray:
        """Bool ``[T]``: the tokens of one sequence that end a sentence, decided on the ids.

        Args:
            ids: int ``[T]`` token ids, one sequence.
            rule: ``"reader"`` (default), sentence ends a reader would agree with (:func:`reader_sentence_ends`:
                decimals, abbreviations, initials and ellipses before a lower-case word end nothing; closing
                quotes and brackets belong to the sentence they close; '。' ends without white space), or
                ``"paper"``, the EP paper's per-vocabulary rule (:meth:`sentence_end_mask`).

        Returns:
            bool ``[T]``.

        Raises:
            ValueError: an unknown rule, ids that are not a 1-D sequence of token ids in ``[0, V)``, or (reader
                rule) a tokenizer that is not byte-level.
        """
        if rule not in SENTENCE_RULES:
            raise ValueError(f"`rule` must be one of {', '.join(map(repr, SENTENCE_RULES))}, got {rule!r}.")
        ids = _check_ids(ids, self.vocab_size)
        if rule == "paper":
            if self._paper_mask is None:
                self._paper_mask = self.sentence_end_mask()
            return self._paper_mask[ids]
        pieces = self._token_pieces()
        return reader_sentence_ends([pieces[i] for i in ids.tolist()])

    def sentence_end_mask(self, ends: Sequence[str] = SENTENCE_ENDS) -> np.ndarray:
        r"""Bool ``[V]``: ``True`` for the tokens ending a sentence under the EP paper's rule (docs/mathematics.md §3).

        A token ends a sentence when its decoded text, with trailing whitespace removed, ends in one of
        ``ends`` (``'.'``, ``'!'``, ``'?'``). Stripping whitespace makes ``".\n"`` and ``"!\n\n"`` sentence
        ends, as in running text; a token that is only whitespace never is. Abbreviations (``"Mr."``) and
        decimal points count too, and a closing quote after the '.' (a ``'"'`` token) ends nothing: the rule is
        the EP paper's, decided on ids alone (``sentence_ends(ids, rule="paper")``). Special tokens never end a
        sentence.
        """
        ends = tuple(ends)
        if not ends or not all(isinstance(e, str) and e for e in ends):
            raise ValueError(f"`ends` must be a non-empty sequence of non-empty strings, got {ends!r}.")
        special = {t.content for t in self.backend.get_added_tokens_decoder().values() if t.special}
        mask = np.zeros(self.vocab_size, bool)
        for i, text in enumerate(self._token_texts()):
            mask[i] = text.rstrip().endswith(ends) and self.backend.id_to_token(i) not in special
        return mask

    def _token_pieces(self) -> list[bytes | None]:
        # Each id's bytes, once per tokenizer: a byte-level token is spelled in the byte alphabet, one
        # character per byte, so a character split across tokens is reassembled from the bytes of the sequence.
        if self._pieces is None and self._sentencepiece:
            self._pieces = self._sentencepiece_pieces()
        if self._pieces is None:
            tokenizers = import_tokenizers()
            if not isinstance(self.backend.decoder, tokenizers.decoders.ByteLevel):
                raise ValueError(
                    f"the reader sentence rule needs the bytes of each token, but this tokenizer's decoder is "
                    f"{type(self.backend.decoder).__name__}, not byte-level; use the per-vocabulary rule "
                    "(sentence_rule='paper')."
                )
            byte_of = {c: b for b, c in bytes_to_unicode().items()}

            def spell(token: str) -> bytes:
                if all(c in byte_of for c in token):
                    return bytes(byte_of[c] for c in token)
                return token.encode("utf-8")  # an added token outside the byte alphabet decodes to itself

            self._pieces = self._pieces_from(spell)
        return self._pieces

    def _pieces_from(self, spell: Any) -> list[bytes | None]:
        """Each id's bytes, ``spell(token)`` of its spelling; ``None`` if special, ``b""`` if the tokenizer lacks it."""
        added = self.backend.get_added_tokens_decoder()
        size = min(self.vocab_size, self.backend.get_vocab_size(with_added_tokens=True))
        pieces: list[bytes | None] = []
        for i in range(size):
            token = added.get(i)
            if token is not None and token.special:
                pieces.append(None)
                continue
            spelled = token.content if token is not None else self.backend.id_to_token(i)
            pieces.append(b"" if spelled is None else spell(spelled))
        return pieces + [b""] * (self.vocab_size - size)

    def _sentencepiece_pieces(self) -> list[bytes | None]:
        # A SentencePiece token spells a space "▁" and a fallback byte "<0xNN>". The first token of a text
        # keeps the space the tokenizer put before it (the decoder strips it from the decoded text).
        def spell(token: str) -> bytes:
            byte = _BYTE_TOKEN.fullmatch(token)
            return bytes([int(byte.group(1), 16)]) if byte else token.replace(_SPACE, " ").encode("utf-8")

        return self._pieces_from(spell)

    def _token_texts(self) -> list[str]:
        if self._texts is None:
            size = min(self.vocab_size, self.backend.get_vocab_size(with_added_tokens=True))
            texts = self.backend.decode_batch([[i] for i in range(size)], skip_special_tokens=False)
            self._texts = texts + [""] * (self.vocab_size - size)  # ids the model has but the tokenizer lacks
        return self._texts

    def __repr__(self) -> str:
        bos = self.token_text(self.bos_id)
        return f"Tokenizer(vocab_size={self.vocab_size}, bos_id={self.bos_id} ({bos!r}))"


def _check_ids(ids: Any, vocab_size: int) -> np.ndarray:
    expected = "`ids` must be a 1-D sequence of integer token ids"
    if ids is None or isinstance(ids, (str, bytes)):
        raise ValueError(f"{expected}, got {type(ids).__name__}.")
    try:
        array = np.asarray(ids)
    except ValueError:  # ragged
        raise ValueError(f"{expected}, got a ragged {type(ids).__name__}.") from None
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{expected}, got an array of shape {array.shape} and dtype {array.dtype}.")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= vocab_size):
        raise ValueError(
            f"`ids` must hold token ids in [0, {vocab_size}), got ids from {array.min()} to {array.max()}."
        )
    return array


def _quote(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _pre_tokenizer(tokenizers: Any, pre: str, add_prefix_space: bool) -> Any:
    byte_level = tokenizers.pre_tokenizers.ByteLevel
    split = _SPLITS[pre]
    if split is None:
        gpt2 = byte_level(add_prefix_space=add_prefix_space, use_regex=True)
        if pre != "smollm":
            return gpt2
        return tokenizers.pre_tokenizers.Sequence([tokenizers.pre_tokenizers.Digits(individual_digits=True), gpt2])
    return tokenizers.pre_tokenizers.Sequence(
        [
            tokenizers.pre_tokenizers.Split(tokenizers.Regex(split), behavior="isolated"),
            byte_level(add_prefix_space=add_prefix_space, use_regex=False),
        ]
    )


def _merges_from_scores(tokens: Sequence[str], scores: np.ndarray, vocab: Mapping[str, int]) -> list[tuple[str, str]]:
    """BPE merges of a SentencePiece vocabulary, from its scores (SentencePiece files list no merges).

    Every way of cutting a token into two vocabulary tokens is a merge; merges are ranked by the score of the
    token they make, best first, ties broken by the longer left then the longer right part, and then by the
    ids of the parts (transformers' ``generate_merges`` order, which its GGUF loader uses).
    """
    score_of: dict[str, float] = {}
    for token, score in zip(tokens, scores, strict=True):
        score_of[token] = float(score)  # a repeated token: its last score, first position
    ranked = []
    for token, score in score_of.items():
        cuts = [(token[:k], token[k:]) for k in range(1, len(token)) if token[:k] in vocab and token[k:] in vocab]
        cuts.sort(key=lambda cut: (vocab[cut[0]], vocab[cut[1]]))
        ranked.extend((score, len(left), len(right), left, right) for left, right in cuts)
    # A stable sort on (score, |left|, |right|), best first, keeps the id order among equals.
    order = sorted(range(len(ranked)), key=lambda i: ranked[i][:3], reverse=True)
    return [(ranked[i][3], ranked[i][4]) for i in order]


__all__ = [
    "END_BEFORE_CAPITAL",
    "NEVER_END",
    "SENTENCE_ENDS",
    "SENTENCE_RULES",
    "Tokenizer",
    "bytes_to_unicode",
    "reader_sentence_ends",
]
