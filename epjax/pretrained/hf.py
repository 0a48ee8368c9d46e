"""Hugging Face checkpoint folders (``config.json`` + safetensors + tokenizer) of the supported architectures."""

from __future__ import annotations

import os
from typing import Any

from epjax.pretrained import gpt2


def load_hf(
    folder: str | os.PathLike,
    *,
    context_length: int | None = None,
    dtype: str = "float32",
    temperature: float = 1.0,
) -> tuple[Any, Any, Any]:
    """A model, its parameters and its tokenizer from a Hugging Face checkpoint folder (GPT-2 for now)."""
    if context_length is not None:
        raise ValueError(
            f"`context_length` applies to a GGUF model (a GPT-2 folder keeps its n_positions), got {context_length!r}."
        )
    return gpt2.load_gpt2(folder, dtype=dtype, temperature=temperature)


__all__ = ["load_hf"]
