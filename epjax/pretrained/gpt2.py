"""GPT-2 from a local Hugging Face checkpoint folder, as an :class:`epjax.transformer.Model` (docs/mathematics.md §7).

GPT-2 is the GPT-style decoder of :mod:`epjax.transformer` -- learned positions, pre-LayerNorm blocks
(``eps = 1e-5``), tanh-GELU (``gelu_new``), a fused ``qkv`` projection, tied output embedding -- so loading it
is a renaming of tensors. Hugging Face's ``Conv1D`` stores weights ``[in, out]``, the layout of the family's
kernels, so nothing is transposed (except an untied ``lm_head``, stored ``[V, D]``). The family's learned BOS
vector ``b`` becomes the embedding of ``<|endoftext|>``, which puts BOS at position 0 and ``x_t`` at position
``t``: exactly GPT-2 run on ``(<|endoftext|>, x_1, .., x_T)``, the EP paper's setting. Its context is
therefore ``n_positions - 1`` tokens (1023 for GPT-2).

The folder holds ``config.json``, ``model.safetensors`` (read with the ``safetensors`` package, memory-mapped:
only the tensors the model needs are copied out, the BOS vector as one row of ``wte``) and ``tokenizer.json``
or ``vocab.json`` + ``merges.txt``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from epjax import transformer
from epjax.discrete import check_temperature
from epjax.pretrained.tokenizer import Tokenizer

_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")  # both are 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
_IGNORED = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers of old checkpoints, not parameters


def _import_safetensors():
    try:
        import ml_dtypes  # noqa: F401 - registers bfloat16 with NumPy, which safetensors' NumPy arrays need
        import safetensors
    except ImportError:  # pragma: no cover - exercised only without the optional dependency
        raise ImportError("load_gpt2 needs the `safetensors` package: pip install 'epjax[lm]'.") from None
    return safetensors


@contextlib.contextmanager
def _open_safetensors(path: Path) -> Iterator[Any]:
    """``safetensors.safe_open(path, framework="numpy")`` (memory-mapped), its errors as ``ValueError``."""
    safetensors = _import_safetensors()
    if not path.is_file():
        raise ValueError(f"safetensors file not found: {str(path)!r} does not exist or is not a file.")
    try:
        handle = safetensors.safe_open(str(path), framework="numpy")
    except (safetensors.SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a valid safetensors file ({err}).") from None
    with handle:
        yield handle


def _read_tensor(handle: Any, name: str, path: Path, row: int | slice | None = None) -> np.ndarray:
    """Tensor ``name`` (or a ``row`` or slice of rows) as NumPy, BF16 widened to float32; ``ValueError`` if bad."""
    try:
        array = handle.get_tensor(name) if row is None else handle.get_slice(name)[row]
    except Exception as err:  # noqa: BLE001 - SafetensorError, or a dtype NumPy does not know
        raise ValueError(f"{path}: cannot read tensor {name!r} ({type(err).__name__}: {err}).") from None
    return array.astype(np.float32) if array.dtype.name == "bfloat16" else array


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a ``.safetensors`` file as NumPy arrays (stored dtypes; BF16 widened to float32).

    Read with the ``safetensors`` package (memory-mapped: each tensor is copied out of the mapping once).

    Raises:
        ValueError: a missing, truncated or malformed file.
    """
    path = Path(path)
    with _open_safetensors(path) as handle:
        return {name: _read_tensor(handle, name, path) for name in handle.keys()}


def read_json_object(path: Path) -> dict:
    """A JSON file holding one object (a checkpoint's ``config.json``, a shard index, ...), or a ValueError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}).") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}.")
    return data


def _read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise ValueError(f"{folder}: no config.json; expected a Hugging Face GPT-2 checkpoint folder.")
    return read_json_object(path)


def config_from_hf(hf: dict, *, dtype: str = "float32", source: Any = "config.json") -> transformer.Config:
    """The :class:`epjax.transformer.Config` of a GPT-2 ``config.json``, refusing what it cannot run."""
    if hf.get("model_type") != "gpt2":
        raise ValueError(
            f"{source}: model_type = {hf.get('model_type')!r}; only 'gpt2' checkpoints are supported."
        )
    checks = {
        "activation_function": (hf.get("activation_function", "gelu_new") in _ACTIVATIONS, _ACTIVATIONS),
        "layer_norm_epsilon": (float(hf.get("layer_norm_epsilon", 1e-5)) == 1e-5, 1e-5),
        "scale_attn_weights": (hf.get("scale_attn_weights", True) is True, True),
        "scale_attn_by_inverse_layer_idx": (hf.get("scale_attn_by_inverse_layer_idx", False) is False, False),
        "add_cross_attention": (hf.get("add_cross_attention", False) is False, False),
    }
    for key, (ok, want) in checks.items():
        if not ok:
            raise ValueError(f"{source}: {key} = {hf.get(key)!r} is not supported (expected {want!r}).")
    embed = int(hf["n_embd"])
    inner = hf.get("n_inner") or 4 * embed
    if inner % embed:
        raise ValueError(f"{source}: n_inner = {inner} must be a multiple of n_embd = {embed}.")
    positions = int(hf.get("n_positions", hf.get("n_ctx", 1024)))
    if positions < 2:
        raise ValueError(f"{source}: n_positions = {positions}; BOS and one token need at least 2.")
    return transformer.Config(
        vocab_size=int(hf["vocab_size"]),
        context_length=positions - 1,  # position 0 holds BOS
        num_layers=int(hf["n_layer"]),
        num_heads=int(hf["n_head"]),
        embed_size=embed,
        mlp_ratio=inner // embed,
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        dtype=dtype,
    )


def hf_param_names(config: transformer.Config) -> dict[tuple, tuple[str, bool]]:
    """Our parameter path -> (Hugging Face tensor name, transpose?); the GGUF loader renames these for GPT-2 files."""
    names: dict[tuple, tuple[str, bool]] = {
        ("token_embed", "embedding"): ("wte.weight", False),
        ("position_embed",): ("wpe.weight", False),
        ("ln_f", "scale"): ("ln_f.weight", False),
        ("ln_f", "bias"): ("ln_f.bias", False),
    }
    pairs = {
        ("ln_1",): "ln_1",
        ("ln_2",): "ln_2",
        ("attn", "qkv"): "attn.c_attn",
        ("attn", "out"): "attn.c_proj",
        ("mlp", "fc"): "mlp.c_fc",
        ("mlp", "proj"): "mlp.c_proj",
    }
    for i in range(config.num_layers):
        for ours, theirs in pairs.items():
            weight = "scale" if ours[0].startswith("ln") else "kernel"
            names[("blocks", i, *ours, weight)] = (f"h.{i}.{theirs}.weight", False)
            names[("blocks", i, *ours, "bias")] = (f"h.{i}.{theirs}.bias", False)
    if not config.tie_embeddings:
        names[("head", "kernel")] = ("lm_head.weight", True)
    return names


def param_path_key(path: tuple) -> tuple:
    """A ``tree_map_with_path`` path as the plain tuple of names :func:`hf_param_names` is keyed by."""
    out = []
    for entry in path:
        if isinstance(entry, jax.tree_util.DictKey):
            out.append(entry.key)
        elif isinstance(entry, jax.tree_util.SequenceKey):
            out.append(entry.idx)
    return tuple(out)  # attribute entries (a Variable's ``.value``) dropped


def from_checkpoint(
    folder: str | os.PathLike,
    *,
    context_length: int | None = None,
    bos_id: int | None = None,
    dtype: str = "float32",
    temperature: float = 1.0,
) -> tuple[transformer.Model, Any, Tokenizer]:
    """See :func:`load_gpt2`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"GPT-2 checkpoint folder not found: {str(folder)!r} is not a directory.")
    config = config_from_hf(_read_config(folder), dtype=dtype, source=folder / "config.json")
    if context_length is not None:
        trained = config.context_length
        if isinstance(context_length, bool) or not isinstance(context_length, int) or not 0 < context_length <= trained:
            raise ValueError(
                f"`context_length` must be an integer in [1, {trained}] (config.json's n_positions - 1: position 0 "
                f"holds BOS), got {context_length!r}."
            )
        config = dataclasses.replace(config, context_length=context_length)
    check_temperature(temperature)
    weights_path = folder / "model.safetensors"
    if not weights_path.is_file():
        raise ValueError(f"{folder}: no model.safetensors (PyTorch .bin checkpoints are not read).")
    model = transformer.Model(config, temperature=temperature)
    names = hf_param_names(config)
    known = {name for name, _ in names.values()} | ({"lm_head.weight"} if config.tie_embeddings else set())
    np_dtype = np.dtype(dtype)

    with _open_safetensors(weights_path) as weights:
        stored = list(weights.keys())  # a safe_open handle is not a Mapping
        prefix = "transformer." if any(k.startswith("transformer.") for k in stored) else ""
        stored = {k[len(prefix) :] if k.startswith(prefix) else k: k for k in stored}  # our name -> stored name
        unexpected = sorted(k for k in stored if k not in known and not k.endswith(_IGNORED))
        if unexpected:
            raise ValueError(f"{weights_path}: unexpected tensors for GPT-2: {unexpected[:5]}.")
        tokenizer = Tokenizer.from_folder(folder, vocab_size=config.vocab_size)
        if bos_id is not None:
            if isinstance(bos_id, bool) or not isinstance(bos_id, (int, np.integer)):
                raise ValueError(f"`bos_id` must be a token id in [0, {config.vocab_size}), got {bos_id!r}.")
            tokenizer = Tokenizer(tokenizer.backend, bos_id=int(bos_id), vocab_size=config.vocab_size)

        def fill(path, leaf):
            key = param_path_key(path)
            if key == ("bos",):  # the BOS vector is the embedding of <|endoftext|> (or of `bos_id`)
                name, transpose, row = "wte.weight", False, tokenizer.bos_id
            elif key == ("position_embed",):  # positions 0 (BOS) .. context_length
                name, transpose, row = "wpe.weight", False, slice(0, config.context_length + 1)
            else:
                (name, transpose), row = names[key], None
            if name not in stored:
                raise ValueError(f"{weights_path}: missing tensor {name!r}.")
            full = tuple(weights.get_slice(stored[name]).get_shape())  # from the header: nothing read yet
            if isinstance(row, slice):
                shape = (min(full[0], row.stop), *full[1:]) if full else full
            else:
                shape = full[::-1] if transpose else full[1:] if row is not None else full
            if shape != leaf.shape:
                raise ValueError(
                    f"{weights_path}: tensor {name!r} has shape {shape}, config.json implies {leaf.shape}."
                )
            array = _read_tensor(weights, stored[name], weights_path, row)
            return jnp.asarray((array.T if transpose else array).astype(np_dtype))

        params = jax.tree_util.tree_map_with_path(fill, jax.eval_shape(model.init, jax.random.key(0)))
    return model, params, tokenizer


def load_gpt2(
    folder: str | os.PathLike,
    *,
    context_length: int | None = None,
    bos_id: int | None = None,
    dtype: str = "float32",
    temperature: float = 1.0,
) -> tuple[transformer.Model, Any, Tokenizer]:
    """GPT-2 from a local Hugging Face checkpoint folder, as an :class:`epjax.transformer.Model`.

    Args:
        folder: holds ``config.json``, ``model.safetensors`` and ``tokenizer.json`` (or ``vocab.json`` +
            ``merges.txt``).
        context_length: longest sequence scored or sampled, at most (and by default) ``n_positions - 1``; the
            first ``context_length + 1`` rows of ``wpe`` are kept.
        bos_id: the BOS token id (default: ``<|endoftext|>``); its ``wte`` row is the BOS vector.
        dtype: parameter dtype, ``"float32"`` (default) or ``"float64"`` (needs ``jax.enable_x64``).
        temperature: the model's temperature.

    Returns:
        ``(model, params, tokenizer)``: ``model.max_length = context_length``, ``params`` the NNX state of
        :class:`epjax.transformer.GPT` with ``bos`` = the embedding of the BOS token (``<|endoftext|>`` by
        default), whose id is ``tokenizer.bos_id``.

    Raises:
        ValueError: a missing folder or file, a malformed file, a checkpoint that is not plain GPT-2.
    """
    return from_checkpoint(
        folder, context_length=context_length, bos_id=bos_id, dtype=dtype, temperature=temperature
    )


__all__ = ["config_from_hf", "from_checkpoint", "load_gpt2", "read_safetensors"]
