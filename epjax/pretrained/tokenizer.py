"""Byte-level BPE tokenizers for the pretrained models, built with the ``tokenizers`` library.

A GGUF file carries no ``tokenizer.json``: its vocabulary, merges, token types and pre-tokenizer name are
metadata (``tokenizer.ggml.*``). :meth:`Tokenizer.from_gguf` rebuilds the byte-level BPE the way transformers'
GGUF loader does (``GPT2Tokenizer`` from vocab + merges, control tokens added as special tokens), with the
pre-tokenizer the file names:

    gpt2, default         GPT-2's regex (``ByteLevel(use_regex=True)``)
    smollm                every digit its own piece, then GPT-2's regex (SmolLM's ``tokenizer.json`` and
                          llama.cpp; transformers' GGUF loader uses GPT-2's regex alone, which gives the same
                          ids because the SmolLM vocabulary has no multi-digit token)
    llama-bpe, llama3     Llama 3's regex

:meth:`Tokenizer.from_folder` reads a Hugging Face checkpoint folder (``tokenizer.json``, or ``vocab.json`` +
``merges.txt`` for GPT-2's byte-level BPE).

Token ids, not strings, are what the models score; :meth:`Tokenizer.sentence_end_mask` marks the ids that end
a sentence for the sentence-block reversal (SPEC §3), decided once on the vocabulary, never by re-tokenising
text.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

SENTENCE_ENDS = (".", "!", "?")

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_PRE_TOKENIZERS = ("default", "gpt2", "smollm", "llama-bpe", "llama3")
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


def _import_tokenizers():
    try:
        import tokenizers
    except ImportError:  # pragma: no cover - exercised only without the optional dependency
        raise ImportError(
            "epjax.pretrained needs the `tokenizers` package: pip install 'epjax[lm]'."
        ) from None
    return tokenizers


class Tokenizer:
    """A byte-level BPE tokenizer with a designated BOS token.

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
        """Rebuild the tokenizer of GGUF metadata ``tokenizer.ggml.*`` (see the module docstring)."""
        tokenizers = _import_tokenizers()
        kind = metadata.get("tokenizer.ggml.model")
        if kind != "gpt2":
            raise ValueError(
                f"{source}: tokenizer.ggml.model = {kind!r} is not supported; epjax reads byte-level BPE "
                f"tokenizers ('gpt2')."
            )
        for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"):
            if key not in metadata:
                raise ValueError(
                    f"{source}: the GGUF metadata has no {key!r} entry, needed for the tokenizer."
                )
        pre = metadata.get("tokenizer.ggml.pre", "default")
        if pre not in _PRE_TOKENIZERS:
            raise ValueError(
                f"{source}: tokenizer.ggml.pre = {pre!r} is not supported; "
                f"supported: {list(_PRE_TOKENIZERS)}."
            )
        tokens: list[str] = list(metadata["tokenizer.ggml.tokens"])
        types = metadata.get("tokenizer.ggml.token_type")
        types = np.zeros(len(tokens), np.int32) if types is None else np.asarray(types)
        if len(types) != len(tokens):
            raise ValueError(
                f"{source}: tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens."
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
    def from_folder(
        cls, folder: str | os.PathLike, *, bos_token: str = "<|endoftext|>", vocab_size: int | None = None
    ) -> Tokenizer:
        """The tokenizer of a Hugging Face folder: ``tokenizer.json``, or ``vocab.json`` + ``merges.txt``.

        Args:
            folder: the checkpoint folder.
            bos_token: the BOS token's text (GPT-2's ``<|endoftext|>``); it must be in the vocabulary.
            vocab_size: the model's vocabulary size.
        """
        tokenizers = _import_tokenizers()
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
        """Token ids of ``text`` (no BOS: the models prepend it).

        Raises:
            ValueError: ``text`` is not a string or is empty, or it has more than ``max_length`` tokens.
        """
        if not isinstance(text, str):
            raise ValueError(f"`text` must be a str, got {type(text).__name__}.")
        if not text.strip():
            raise ValueError(f"`text` is empty or only white space ({text!r}): there are no words to score.")
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

    def sentence_end_mask(self, ends: Sequence[str] = SENTENCE_ENDS) -> np.ndarray:
        r"""Bool ``[V]``: ``True`` for the tokens that end a sentence (SPEC §3).

        A token ends a sentence when its decoded text, with trailing whitespace removed, ends in one of
        ``ends`` (``'.'``, ``'!'``, ``'?'``). Stripping whitespace makes ``".\n"`` and ``"!\n\n"`` sentence
        ends, as in running text; a token that is only whitespace never is. Abbreviations (``"Mr."``) and
        decimal points count too: the rule is the EP paper's, decided on ids alone. Special tokens never end a
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

    def _token_texts(self) -> list[str]:
        if self._texts is None:
            size = min(self.vocab_size, self.backend.get_vocab_size(with_added_tokens=True))
            texts = self.backend.decode_batch([[i] for i in range(size)], skip_special_tokens=False)
            self._texts = texts + [""] * (self.vocab_size - size)  # ids the model has but the tokenizer lacks
        return self._texts

    def __repr__(self) -> str:
        bos = self.token_text(self.bos_id)
        return f"Tokenizer(vocab_size={self.vocab_size}, bos_id={self.bos_id} ({bos!r}))"


def _pre_tokenizer(tokenizers: Any, pre: str, add_prefix_space: bool) -> Any:
    byte_level = tokenizers.pre_tokenizers.ByteLevel
    if pre in ("default", "gpt2"):
        return byte_level(add_prefix_space=add_prefix_space, use_regex=True)
    if pre == "smollm":
        return tokenizers.pre_tokenizers.Sequence(
            [
                tokenizers.pre_tokenizers.Digits(individual_digits=True),
                byte_level(add_prefix_space=add_prefix_space, use_regex=True),
            ]
        )
    return tokenizers.pre_tokenizers.Sequence(
        [  # llama-bpe, llama3
            tokenizers.pre_tokenizers.Split(tokenizers.Regex(_LLAMA3_SPLIT), behavior="isolated"),
            byte_level(add_prefix_space=add_prefix_space, use_regex=False),
        ]
    )


__all__ = ["SENTENCE_ENDS", "Tokenizer", "bytes_to_unicode"]
