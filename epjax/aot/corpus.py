"""An English corpus available offline, tokenised by characters or by a small byte-level BPE, cut into windows.

The text is the help of Python's own ``pydoc_data`` package (the topics ``help()`` shows: prose about the
language with code examples), present in every CPython installation, so nothing is downloaded. It differs a
little between Python versions; :attr:`Corpus.sha256` identifies the text a run used.

Topics are split, not windows: every tenth topic (in sorted order) is held out, so held-out windows never overlap
training text. Windows are consecutive, non-overlapping slices of each part's token stream.

>>> c = pydoc_corpus("chars")
>>> c.kind, c.vocab_size > 50, c.train_ids.size > c.held_out_ids.size > 0
('chars', True, True)
>>> train_windows, held_windows = c.windows(32)
>>> train_windows.shape[1], held_windows.shape[1]
(32, 32)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from epjax._checks import check_positive_int

CORPUS_KINDS = ("chars", "bpe")


def pydoc_topics() -> list[tuple[str, str]]:
    """``(name, text)`` of every topic of ``pydoc_data.topics``, sorted by name."""
    from pydoc_data.topics import topics

    return sorted(topics.items())


@dataclass(frozen=True, eq=False)
class Corpus:
    """A tokenised corpus split into a training and a held-out token stream.

    Attributes:
        name: where the text comes from.
        kind: ``"chars"`` or ``"bpe"``.
        tokens: the bytes of each id (``vocab_size = len(tokens)``): a character's UTF-8 encoding, or a BPE
            piece (which may hold part of a character).
        train_ids: int32 ``[n]`` training token stream.
        held_out_ids: int32 ``[m]`` held-out token stream.
        sha256: SHA-256 of the UTF-8 text (all topics, in order).
        meta: how it was built (topics, held-out rule, BPE settings).
    """

    name: str
    kind: str
    tokens: tuple[bytes, ...]
    train_ids: np.ndarray
    held_out_ids: np.ndarray
    sha256: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        """Number of token ids."""
        return len(self.tokens)

    def windows(self, length: int, *, max_train: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(train [N, length], held_out [M, length])``: consecutive non-overlapping windows of each stream.

        Args:
            length: window length (the context length of the models trained on them).
            max_train: keep at most this many training windows (the first ones), e.g. for a fixed budget.
        """
        length = check_positive_int("length", length)
        out = []
        for name, ids in (("training", self.train_ids), ("held-out", self.held_out_ids)):
            count = ids.size // length
            if count < 2:
                raise ValueError(
                    f"`length` {length} leaves fewer than 2 {name} windows of the {ids.size}-token {name} stream."
                )
            out.append(ids[: count * length].reshape(count, length))
        if max_train is not None:
            out[0] = out[0][: check_positive_int("max_train", max_train)]
        return out[0], out[1]

    def decode(self, ids: Any) -> str:
        """The text of a sequence of ids (UTF-8; a character cut at either end shows as U+FFFD)."""
        return b"".join(self.tokens[int(i)] for i in np.asarray(ids).reshape(-1)).decode("utf-8", errors="replace")


def _split(topics: list[tuple[str, str]], held_out_every: int) -> tuple[list[str], list[str]]:
    held = [text for i, (_, text) in enumerate(topics) if i % held_out_every == 0]
    kept = [text for i, (_, text) in enumerate(topics) if i % held_out_every != 0]
    return kept, held


def pydoc_corpus(
    kind: str = "chars", *, bpe_vocab_size: int = 512, held_out_every: int = 10, topics: Any = None
) -> Corpus:
    """The ``pydoc_data`` topics as a :class:`Corpus` of characters or of byte-level BPE tokens.

    Args:
        kind: ``"chars"`` (one id per character that occurs in the text, in code-point order) or ``"bpe"``
            (a byte-level BPE with ``bpe_vocab_size`` ids trained on the training topics with the ``tokenizers``
            package, installed with the ``lm`` extra).
        bpe_vocab_size: size of the BPE vocabulary (at least 257: the 256 bytes and one merge).
        held_out_every: every this many topics (in sorted order) goes to the held-out part.
        topics: ``(name, text)`` pairs to use instead of ``pydoc_data`` (e.g. a corpus of your own).

    Raises:
        ValueError: an unknown ``kind``, bad sizes, or ``tokenizers`` missing for ``"bpe"``.
    """
    if kind not in CORPUS_KINDS:
        raise ValueError(f"`kind` must be one of {CORPUS_KINDS}, got {kind!r}.")
    held_out_every = check_positive_int("held_out_every", held_out_every, minimum=2)
    topics = pydoc_topics() if topics is None else [(str(n), str(t)) for n, t in topics]
    if len(topics) < held_out_every:
        raise ValueError(f"`topics` must hold at least {held_out_every} topics, got {len(topics)}.")
    digest = hashlib.sha256("".join(text for _, text in topics).encode("utf-8")).hexdigest()
    kept, held = _split(topics, held_out_every)
    meta = {"topics": len(topics), "held_out_every": held_out_every, "held_out_topics": len(held)}
    if kind == "chars":
        chars = sorted(set("".join(text for _, text in topics)))
        index = {ch: i for i, ch in enumerate(chars)}
        tokens = tuple(ch.encode("utf-8") for ch in chars)

        def encode(texts: list[str]) -> np.ndarray:
            return np.array([index[ch] for ch in "".join(texts)], dtype=np.int32)

        return Corpus("pydoc_data topics", kind, tokens, encode(kept), encode(held), digest, meta)
    bpe_vocab_size = check_positive_int("bpe_vocab_size", bpe_vocab_size, minimum=257)
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError:  # pragma: no cover - the lm and test extras install it
        raise ValueError("a BPE corpus needs the `tokenizers` package: pip install 'epjax[lm]'.") from None
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        special_tokens=[],
    )
    tok.train_from_iterator(kept, trainer=trainer)
    from epjax.pretrained.tokenizer import bytes_to_unicode

    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    pieces = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    tokens = tuple(bytes(byte_of[c] for c in piece) for piece, _ in pieces)

    def encode_bpe(texts: list[str]) -> np.ndarray:
        return np.concatenate([np.asarray(e.ids, dtype=np.int32) for e in tok.encode_batch(texts)])

    meta |= {"bpe_vocab_size": len(tokens), "tokenizers": "byte-level BPE trained on the training topics"}
    return Corpus("pydoc_data topics", kind, tokens, encode_bpe(kept), encode_bpe(held), digest, meta)


__all__ = ["CORPUS_KINDS", "Corpus", "pydoc_corpus", "pydoc_topics"]
