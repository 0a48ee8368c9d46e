"""Hugging Face checkpoint folders (``config.json`` + safetensors + ``tokenizer.json``) as epjax models.

:func:`load_hf` reads a folder written by ``save_pretrained`` (or downloaded from the Hub beforehand: nothing is
fetched here) and dispatches on ``config.json``'s ``model_type``:

    llama, mistral, qwen2, qwen3   -> :class:`epjax.llama.Model` (Llama 2/3, SmolLM, Mistral, Qwen2/2.5, Qwen3)
    gpt2                           -> :class:`epjax.transformer.Model` through :mod:`epjax.pretrained.gpt2`

Configuration (``config.json`` -> :class:`epjax.llama.Config`): ``vocab_size``, ``hidden_size`` (``D``),
``intermediate_size`` (``F``), ``num_hidden_layers``, ``num_attention_heads``, ``num_key_value_heads``
(default: the heads; fewer is GQA), ``head_dim`` (default ``D / H``; Qwen3's default 128), ``rms_norm_eps``,
``rope_theta`` (top level or inside ``rope_parameters``), ``tie_word_embeddings`` (default false),
``max_position_embeddings`` (the largest ``context_length``; default ``min(max_position_embeddings, 2048)``).
Qwen2 always has q/k/v biases (``attention_bias = True``); Qwen3 always has the per-head q/k RMSNorm
(``qk_norm = True``).

Tensors (safetensors, one ``model.safetensors`` or the shards named by ``model.safetensors.index.json``; all
weights ``[out, in]`` as stored, nothing transposed; layer ``N`` goes to index ``N`` of the stacked blocks):

    model.embed_tokens.weight                         embed
    model.norm.weight                                 norm
    lm_head.weight                                    head (untied only; a tied checkpoint may hold a copy of embed)
    model.layers.N.input_layernorm.weight             blocks.attn_norm[N]
    model.layers.N.self_attn.{q,k,v,o}_proj.weight    blocks.{q,k,v,o}[N]
    model.layers.N.self_attn.{q,k,v}_proj.bias        blocks.{q,k,v}_bias[N]   (qwen2)
    model.layers.N.self_attn.{q,k}_norm.weight        blocks.{q,k}_norm[N]     (qwen3)
    model.layers.N.post_attention_layernorm.weight    blocks.mlp_norm[N]
    model.layers.N.mlp.{gate,up,down}_proj.weight     blocks.{gate,up,down}[N]

``*.rotary_emb.inv_freq`` buffers of old checkpoints are ignored (RoPE is recomputed). BF16 and F16 weights are
widened, then cast to ``dtype``.

BOS: the model is conditioned on a BOS token that is not part of ``x``, in both scoring directions. Unless
``bos_id`` is given it is the tokenizer's ``bos_token`` (``tokenizer_config.json``) when the tokenizer adds it
(``add_bos_token``, or, when that key is absent, ``tokenizer.json``'s post-processor puts it first: Llama 2/3,
Mistral), else ``<|endoftext|>`` when the vocabulary has it (Qwen, which has no BOS; SmolLM, trained on documents
separated by it), else the folder is refused and ``bos_id`` must be passed.

Tokenizer: ``tokenizer.json``, run by the ``tokenizers`` library exactly as declared (normalizer, pre-tokenizer,
model, decoder), its post-processor dropped: :meth:`~epjax.pretrained.Tokenizer.encode` adds no special token.

Refused, with a ``ValueError`` naming the file, the key, what was expected and what was found:

    - a ``model_type`` other than the five above; a ``hidden_act`` other than ``silu``;
    - ``rope_scaling`` / ``rope_parameters`` of any type but ``default`` (linear, dynamic, YaRN, Llama 3's
      ``llama3``, ...), a ``partial_rotary_factor`` other than 1;
    - a sliding window in effect (Mistral's ``sliding_window``; Qwen's ``use_sliding_window`` with a
      ``sliding_attention`` layer) shorter than ``context_length`` (a window ``w`` changes nothing while
      ``context_length <= w``); ``layer_types`` other than full (or Qwen's sliding) attention;
    - ``mlp_bias``; ``attention_bias`` for llama, mistral or qwen3 (it adds an ``o_proj`` bias too);
    - a missing, unexpected, misshapen or non-float tensor; a tied checkpoint whose ``lm_head.weight`` differs
      from the embedding; a shard the index names that is missing or lacks a tensor the index puts in it;
    - a folder without safetensors weights (PyTorch ``.bin`` files are not read) or without ``tokenizer.json``
      (a SentencePiece ``tokenizer.model`` alone); a tokenizer with more tokens than ``vocab_size``; a
      ``bos_token`` that ``add_bos_token`` adds but the vocabulary lacks; no BOS to choose and no ``bos_id``;
    - a ``context_length`` outside ``[1, max_position_embeddings]``, a ``bos_id`` outside ``[0, vocab_size)``,
      a ``dtype`` other than float32 or float64.

GPT-2 folders go to :func:`epjax.pretrained.gpt2.load_gpt2` (its own checks), which keeps the first
``context_length + 1`` rows of ``wpe`` and takes ``bos_id`` (default ``<|endoftext|>``).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from epjax import llama
from epjax._checks import check_dtype_available
from epjax.discrete import check_temperature
from epjax.pretrained import gpt2
from epjax.pretrained.tokenizer import Tokenizer

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gpt2")
DEFAULT_CONTEXT = 2048
INDEX_FILE = "model.safetensors.index.json"
WEIGHTS_FILE = "model.safetensors"

_BLOCK_TENSORS = {  # our stacked block leaf -> the tensor name under model.layers.N.
    "attn_norm": "input_layernorm.weight",
    "q": "self_attn.q_proj.weight",
    "k": "self_attn.k_proj.weight",
    "v": "self_attn.v_proj.weight",
    "o": "self_attn.o_proj.weight",
    "q_bias": "self_attn.q_proj.bias",
    "k_bias": "self_attn.k_proj.bias",
    "v_bias": "self_attn.v_proj.bias",
    "q_norm": "self_attn.q_norm.weight",
    "k_norm": "self_attn.k_norm.weight",
    "mlp_norm": "post_attention_layernorm.weight",
    "gate": "mlp.gate_proj.weight",
    "up": "mlp.up_proj.weight",
    "down": "mlp.down_proj.weight",
}
_IGNORED = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")


# --- config.json --------------------------------------------------------------------------------------------


def read_config(folder: str | os.PathLike) -> dict:
    """``config.json`` of a checkpoint folder as a dict; ``ValueError`` if missing or not a JSON object."""
    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        raise ValueError(f"{folder}: no config.json; expected a Hugging Face checkpoint folder.")
    return gpt2.read_json_object(path)


def _require(hf: dict, key: str, source: Any) -> Any:
    if hf.get(key) is None:
        raise ValueError(f"{source}: no {key!r} (or it is null); expected a value, which the model needs.")
    return hf[key]


def _int(hf: dict, key: str, source: Any, default: Any = ...) -> int:
    value = _require(hf, key, source) if default is ... or hf.get(key) is not None else default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{source}: {key} = {value!r}; expected a positive integer.")
    return value


def _float(hf: dict, key: str, source: Any, default: Any = ...) -> float:
    value = _require(hf, key, source) if default is ... or hf.get(key) is not None else default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{source}: {key} = {value!r}; expected a positive number.")
    return float(value)


def _bool(hf: dict, key: str, source: Any, default: bool = False) -> bool:
    value = hf.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{source}: {key} = {value!r}; expected true or false.")
    return value


def _rope_base(hf: dict, source: Any) -> float:
    """``rope_theta``, refusing RoPE scaling of any kind (``rope_scaling`` or transformers 5's ``rope_parameters``)."""
    theta = hf.get("rope_theta")
    for key in ("rope_scaling", "rope_parameters"):
        spec = hf.get(key)
        if spec is None:
            continue
        if not isinstance(spec, dict):
            raise ValueError(f"{source}: {key} = {spec!r}; expected a JSON object or null.")
        kind = spec.get("rope_type", spec.get("type", "default"))
        if kind != "default":
            raise ValueError(
                f"{source}: {key} has rope_type = {kind!r}; only unscaled RoPE ('default') is supported."
            )
        factor = spec.get("partial_rotary_factor", 1.0)
        if factor != 1.0:
            raise ValueError(f"{source}: {key}.partial_rotary_factor = {factor!r}; only 1.0 is supported.")
        theta = spec.get("rope_theta", theta)
    if hf.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError(
            f"{source}: partial_rotary_factor = {hf['partial_rotary_factor']!r}; only 1.0 is supported."
        )
    return _float({"rope_theta": theta}, "rope_theta", source, 10000.0)


def _sliding_window(hf: dict, kind: str, num_layers: int) -> int | None:
    """The attention window some layer uses (transformers' rules for the model type), or ``None``."""
    window = hf.get("sliding_window")
    if kind == "mistral":
        return window
    if kind in ("qwen2", "qwen3"):
        if not hf.get("use_sliding_window", False) or window is None:
            return None
        types = hf.get("layer_types") or [
            "sliding_attention" if i >= hf.get("max_window_layers", 28) else "full_attention"
            for i in range(num_layers)
        ]
        return window if "sliding_attention" in types else None
    return None


def _check_layer_types(hf: dict, kind: str, source: Any) -> None:
    """Refuse layer kinds other than full attention (and Qwen's sliding attention, which the window decides)."""
    types = hf.get("layer_types")
    if types is None:
        return
    allowed = {"full_attention", "sliding_attention"} if kind in ("qwen2", "qwen3") else {"full_attention"}
    if not isinstance(types, list) or not set(types) <= allowed:
        raise ValueError(
            f"{source}: layer_types = {types!r}; expected a list of {', '.join(map(repr, sorted(allowed)))}."
        )


def config_from_hf(
    hf: dict,
    *,
    bos_id: int,
    context_length: int | None = None,
    dtype: str = "float32",
    source: Any = "config.json",
) -> llama.Config:
    """The :class:`epjax.llama.Config` of a llama/mistral/qwen2/qwen3 ``config.json`` (see the module docstring).

    Args:
        hf: the parsed ``config.json``.
        bos_id: the BOS token id.
        context_length: longest sequence scored or sampled; default ``min(max_position_embeddings, 2048)``.
        dtype: ``"float32"`` or ``"float64"``.
        source: what error messages name (the file).

    Raises:
        ValueError: an unsupported ``model_type`` or feature, a missing or invalid value, an invalid
            ``context_length`` or ``bos_id``.
    """
    fields = _llama_fields(hf, context_length=context_length, source=source)
    bos_id = _check_bos(bos_id, fields["vocab_size"])
    try:
        return llama.Config(**fields, bos_id=bos_id, dtype=dtype)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


def _llama_fields(hf: dict, *, context_length: int | None, source: Any) -> dict:
    """Every :class:`llama.Config` field but ``bos_id`` and ``dtype``, every refusal of ``config.json`` made."""
    kind = hf.get("model_type")
    if kind not in SUPPORTED_MODEL_TYPES or kind == "gpt2":
        raise ValueError(
            f"{source}: model_type = {kind!r} is not supported; expected one of "
            f"{', '.join(map(repr, SUPPORTED_MODEL_TYPES))}."
        )
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"{source}: hidden_act = {act!r} is not supported; expected 'silu' (SwiGLU).")
    if hf.get("mlp_bias", False):
        raise ValueError(f"{source}: mlp_bias = {hf['mlp_bias']!r}; MLP biases are not supported (expected false).")
    if kind != "qwen2" and hf.get("attention_bias", False):
        raise ValueError(
            f"{source}: attention_bias = {hf['attention_bias']!r} for model_type {kind!r} (biases on q, k, v and "
            "o_proj); only Qwen2's q/k/v biases are supported (expected false)."
        )
    embed = _int(hf, "hidden_size", source)
    heads = _int(hf, "num_attention_heads", source)
    layers = _int(hf, "num_hidden_layers", source)
    default_head = 128 if kind == "qwen3" else embed // heads
    trained = _int(hf, "max_position_embeddings", source)
    if context_length is None:
        context_length = min(trained, DEFAULT_CONTEXT)
    if isinstance(context_length, bool) or not isinstance(context_length, (int, np.integer)):
        raise ValueError(f"`context_length` must be an integer in [1, {trained}], got {context_length!r}.")
    if not 1 <= context_length <= trained:
        raise ValueError(
            f"`context_length` must be an integer in [1, {trained}] (config.json's max_position_embeddings), "
            f"got {context_length!r}."
        )
    _check_layer_types(hf, kind, source)
    window = _sliding_window(hf, kind, layers)
    if window is not None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"{source}: sliding_window = {window!r}; expected a positive integer or null.")
        if context_length > window:
            raise ValueError(
                f"{source}: sliding_window = {window} is in effect and shorter than context_length = "
                f"{context_length}; sliding-window attention is not supported: pass context_length <= {window}."
            )
    return dict(
        vocab_size=_int(hf, "vocab_size", source),
        context_length=int(context_length),
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=_int(hf, "num_key_value_heads", source, heads),
        embed_size=embed,
        mlp_size=_int(hf, "intermediate_size", source),
        head_size=_int(hf, "head_dim", source, default_head),
        rope_base=_rope_base(hf, source),
        rms_eps=_float(hf, "rms_norm_eps", source),
        tie_embeddings=_bool(hf, "tie_word_embeddings", source),
        attention_bias=kind == "qwen2",
        qk_norm=kind == "qwen3",
    )


def _check_bos(bos_id: Any, vocab_size: int) -> int:
    if isinstance(bos_id, bool) or not isinstance(bos_id, (int, np.integer)) or not 0 <= bos_id < vocab_size:
        raise ValueError(f"`bos_id` must be a token id in [0, {vocab_size}), got {bos_id!r}.")
    return int(bos_id)


# --- tokenizer and BOS --------------------------------------------------------------------------------------


def _token_text(value: Any) -> str | None:
    """A special token of ``tokenizer_config.json``: a string or ``{"content": ...}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _load_tokenizer(folder: Path, *, vocab_size: int, bos_id: int | None) -> Tokenizer:
    """``tokenizer.json`` as a :class:`Tokenizer` (post-processor dropped), with the BOS chosen as documented."""
    from epjax.pretrained.tokenizer import import_tokenizers

    tokenizers = import_tokenizers()
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise ValueError(
            f"{folder}: no tokenizer.json (a SentencePiece tokenizer.model alone is not read); "
            "expected the tokenizer.json that save_pretrained writes."
        )
    try:
        backend = tokenizers.Tokenizer.from_file(str(path))
    except Exception as err:  # noqa: BLE001 - the library raises plain Exceptions on bad files
        raise ValueError(f"{path}: not a valid tokenizer.json ({err}).") from None
    size = backend.get_vocab_size(with_added_tokens=True)
    if size > vocab_size:
        raise ValueError(
            f"{path}: the tokenizer has {size} tokens, more than config.json's vocab_size = {vocab_size}; "
            "its extra ids have no embedding."
        )
    if bos_id is None:
        bos_id = _default_bos_id(folder, backend)
    backend.post_processor = None  # encode() adds no special token: the model prepends BOS itself
    return Tokenizer(backend, bos_id=bos_id, vocab_size=vocab_size)


def _default_bos_id(folder: Path, backend: Any) -> int:
    """The tokenizer's BOS if it adds one, else ``<|endoftext|>`` (see the module docstring)."""
    config_path = folder / "tokenizer_config.json"
    config = gpt2.read_json_object(config_path) if config_path.is_file() else {}
    bos_token = _token_text(config.get("bos_token"))
    bos = backend.token_to_id(bos_token) if bos_token is not None else None
    if bos is None and bos_token is not None and config.get("add_bos_token") is True:
        raise ValueError(
            f"{config_path}: bos_token {bos_token!r} (add_bos_token = true) is not in tokenizer.json's vocabulary; "
            "expected a token of the vocabulary, or pass `bos_id`."
        )
    if bos is not None:
        adds = config.get("add_bos_token")
        if adds is None:  # what tokenizer.json's post-processor does
            adds = (backend.encode("a", add_special_tokens=True).ids or [None])[0] == bos
        if adds:
            return bos
    end = backend.token_to_id("<|endoftext|>")
    if end is not None:
        return end
    why = (
        f"its bos_token {bos_token!r} is not added to the text" if bos is not None
        else f"it names no bos_token in the vocabulary (bos_token = {bos_token!r})"
    )
    raise ValueError(
        f"{folder}: cannot choose the BOS token: {why} and the vocabulary has no '<|endoftext|>'; pass `bos_id`."
    )


# --- weights ------------------------------------------------------------------------------------------------


class _Weights:
    """The tensors of a folder's safetensors file or shards: names, shapes from the headers, reads on demand."""

    def __init__(self, folder: Path, stack: contextlib.ExitStack):
        index = folder / INDEX_FILE
        if index.is_file():
            weight_map = gpt2.read_json_object(index).get("weight_map")
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise ValueError(f"{index}: expected a 'weight_map' object of tensor name -> file name.")
            files = sorted(set(weight_map.values()))
        elif (folder / WEIGHTS_FILE).is_file():
            index, weight_map, files = folder / WEIGHTS_FILE, None, [WEIGHTS_FILE]
        else:
            raise ValueError(
                f"{folder}: no {WEIGHTS_FILE} or {INDEX_FILE} (PyTorch .bin checkpoints are not read)."
            )
        self.source = index
        self.where: dict[str, tuple[Any, Path]] = {}
        for name in files:
            path = folder / name
            if Path(name).name != name:
                raise ValueError(f"{index}: shard {name!r} is not a file name in the folder.")
            handle = stack.enter_context(gpt2._open_safetensors(path))
            for key in handle.keys():
                self.where[key] = (handle, path)
        for key, name in (weight_map or {}).items():
            if key not in self.where or self.where[key][1].name != name:
                raise ValueError(f"{index}: lists tensor {key!r} in {name!r}, which does not hold it.")

    def names(self) -> set[str]:
        return set(self.where)

    def read(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        if name not in self.where:
            raise ValueError(f"{self.source}: missing tensor {name!r} (expected shape {shape}).")
        handle, path = self.where[name]
        got = tuple(handle.get_slice(name).get_shape())  # from the header: nothing read yet
        if got != tuple(shape):
            raise ValueError(f"{path}: tensor {name!r} has shape {got}, config.json implies {tuple(shape)}.")
        array = gpt2._read_tensor(handle, name, path)
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"{path}: tensor {name!r} has dtype {array.dtype}; expected floating point weights.")
        return array.astype(dtype)


def _expected_names(config: llama.Config) -> dict[tuple[str, ...], str]:
    """Our parameter path (``("blocks", leaf, str(N))`` for a block) -> the Hugging Face tensor name."""
    shapes = llama.param_shapes(config)
    names = {("embed",): "model.embed_tokens.weight", ("norm",): "model.norm.weight"}
    if not config.tie_embeddings:
        names[("head",)] = "lm_head.weight"
    for leaf in shapes["blocks"]:
        for i in range(config.num_layers):
            names[("blocks", leaf, str(i))] = f"model.layers.{i}.{_BLOCK_TENSORS[leaf]}"
    return names


def _read_params(folder: Path, config: llama.Config) -> llama.Params:
    shapes = llama.param_shapes(config)
    names = _expected_names(config)
    np_dtype = np.dtype(config.dtype)
    with contextlib.ExitStack() as stack:
        weights = _Weights(folder, stack)
        known = set(names.values()) | ({"lm_head.weight"} if config.tie_embeddings else set())
        unexpected = sorted(n for n in weights.names() - known if not _IGNORED.fullmatch(n))
        if unexpected:
            raise ValueError(
                f"{weights.source}: unexpected tensors for this config.json: {unexpected[:5]}"
                f"{' ...' if len(unexpected) > 5 else ''} (biases, extra norms or layers are not supported)."
            )
        params: llama.Params = {
            key: jnp.asarray(weights.read(names[(key,)], shapes[key], np_dtype))
            for key in ("embed", "norm", "head")
            if (key,) in names
        }
        if config.tie_embeddings and "lm_head.weight" in weights.names():
            head = weights.read("lm_head.weight", shapes["embed"], np_dtype)
            if not np.array_equal(head, np.asarray(params["embed"])):
                raise ValueError(
                    f"{weights.source}: tie_word_embeddings is true but lm_head.weight differs from "
                    "model.embed_tokens.weight; expected a copy of the embedding or no lm_head.weight."
                )
        blocks = {}
        for leaf, shape in shapes["blocks"].items():
            stacked = np.empty(shape, np_dtype)
            for i in range(config.num_layers):
                stacked[i] = weights.read(names[("blocks", leaf, str(i))], shape[1:], np_dtype)
            blocks[leaf] = jnp.asarray(stacked)
        params["blocks"] = blocks
    return params


# --- entry point --------------------------------------------------------------------------------------------


def load_hf(
    folder: str | os.PathLike,
    *,
    context_length: int | None = None,
    bos_id: int | None = None,
    dtype: str = "float32",
    temperature: float = 1.0,
) -> tuple[Any, Any, Tokenizer]:
    """A model, its parameters and its tokenizer from a local Hugging Face checkpoint folder.

    Args:
        folder: holds ``config.json``, ``model.safetensors`` (or ``model.safetensors.index.json`` and its
            shards) and ``tokenizer.json`` (optionally ``tokenizer_config.json``). GPT-2 folders may hold
            ``vocab.json`` + ``merges.txt`` instead.
        context_length: longest sequence scored or sampled (the decoder's cache size), at most
            ``max_position_embeddings``; default ``min(max_position_embeddings, 2048)``. GPT-2: at most
            ``n_positions - 1`` (default), position 0 holding BOS.
        bos_id: the BOS token id; default as in the module docstring (GPT-2: ``<|endoftext|>``).
        dtype: parameter dtype, ``"float32"`` (default) or ``"float64"`` (needs ``jax.enable_x64``).
        temperature: the model's temperature.

    Returns:
        ``(model, params, tokenizer)``: an :class:`epjax.llama.Model` and its parameter dict (llama, mistral,
        qwen2, qwen3) or an :class:`epjax.transformer.Model` and its state (gpt2); ``tokenizer.bos_id ==
        model.bos_id``.

    Raises:
        ValueError: a missing folder or file, a malformed file, or anything the module docstring lists as
            refused; the message names the file, the key, what was expected and what was found.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"checkpoint folder not found: {str(folder)!r} is not a directory.")
    source = folder / "config.json"
    hf = read_config(folder)
    check_temperature(temperature)
    if dtype not in ("float32", "float64"):
        raise ValueError(f"`dtype` must be 'float32' or 'float64', got {dtype!r}.")
    if hf.get("model_type") == "gpt2":
        return gpt2.load_gpt2(
            folder, context_length=context_length, bos_id=bos_id, dtype=dtype, temperature=temperature
        )
    fields = _llama_fields(hf, context_length=context_length, source=source)  # config refusals first
    check_dtype_available(dtype)
    if bos_id is not None:
        _check_bos(bos_id, fields["vocab_size"])
    tokenizer = _load_tokenizer(folder, vocab_size=fields["vocab_size"], bos_id=bos_id)
    config = config_from_hf(hf, bos_id=tokenizer.bos_id, context_length=context_length, dtype=dtype, source=source)
    params = _read_params(folder, config)
    return llama.Model(config, temperature=temperature), params, tokenizer


__all__ = ["DEFAULT_CONTEXT", "SUPPORTED_MODEL_TYPES", "config_from_hf", "load_hf", "read_config"]
