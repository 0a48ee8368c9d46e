"""Llama-family decoders (SmolLM2, Llama, ...) read from GGUF files as autoregressive models (docs/mathematics.md §7).

The summary of the past is the whole context, prefixed by a BOS token ``b`` that is *not* part of ``x``:
``p(x_{t+1} | x_1..x_t)`` is read at position ``t`` of a causal pass over ``(b, x_1, .., x_t)``, in both
scoring directions (docs/mathematics.md §7: BOS prepended in both directions). One block, pre-norm, with the weights
stored
as PyTorch does, ``[out, in]`` (``u W^T``):

    RMS(u)   = u / sqrt(mean(u^2) + eps) * g
    q, k, v  = RoPE(RMS_1(z) W_q^T), RoPE(RMS_1(z) W_k^T), RMS_1(z) W_v^T      H query heads, G <= H kv heads
    a        = z + Attn(q, k, v) W_o^T        causal; query head h reads kv head floor(h / (H / G))  (GQA)
    z'       = a + (SiLU(RMS_2(a) W_gate^T) * RMS_2(a) W_up^T) W_down^T         (SwiGLU)
    logits   = RMS_f(z^L) E^T   (tied)   or   RMS_f(z^L) W_out^T

RoPE rotates the two halves of each head, ``(u_1, u_2) -> (u_1 cos - u_2 sin, u_2 cos + u_1 sin)`` with angles
``p * base^(-2i/K)`` at position ``p`` (transformers' ``rotate_half`` layout). llama.cpp stores ``W_q`` and
``W_k`` with the rows of each head interleaved for its own rotation layout; :func:`from_gguf` undoes that
permutation exactly as transformers' GGUF loader does, so the parameters equal transformers'
``LlamaForCausalLM`` loaded from the same file.

The layers are stacked (leading axis ``num_layers``) and run with one ``lax.scan``, which keeps compilation
short for deep models. Scoring ``T <= context_length`` tokens is one parallel causal pass. Decoding
(:meth:`Model.initial`, :meth:`Model.step`) keeps a fixed-size key/value cache of ``context_length + 1``
positions (BOS plus every token the sampler may consume); sampling ``T`` tokens cuts it to the ``T + 1``
positions it can reach and grows it in up to four windows (``epjax.discrete.decode_windows``), as
:mod:`epjax.transformer` does.

>>> import jax
>>> config = Config(vocab_size=11, context_length=8, num_layers=2, num_heads=4, num_kv_heads=2, embed_size=16,
...                 mlp_size=24, bos_id=0)
>>> model = Model(config)
>>> model.log_probs(model.init(jax.random.key(0)), jax.numpy.array([3, 1, 4])).shape
(3,)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from epjax.discrete import DiscreteModel, check_temperature, fit_slots
from epjax.pretrained._gguf import GGUFFile, metadata_value

Array = jax.Array
Params = dict  # {"embed", "blocks": {...stacked...}, "norm", ["head"]}: plain jnp arrays
_DTYPES = ("float32", "float64")
SUPPORTED_ARCHITECTURES = ("llama",)


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes and constants of a Llama-family decoder (frozen and hashable: a static ``jit`` argument).

    Attributes:
        vocab_size: number of token ids ``V``.
        context_length: longest sequence the model scores or samples (``Model.max_length``), BOS excluded.
        num_layers: number of blocks ``L``.
        num_heads: query heads ``H``.
        num_kv_heads: key/value heads ``G`` (``H`` a multiple of ``G``; ``G < H`` is grouped-query attention).
        embed_size: model width ``D``.
        mlp_size: SwiGLU hidden width ``F``.
        head_size: width ``K`` of one head (default ``D / H``).
        rope_base: RoPE frequency base.
        rms_eps: the ``eps`` of RMSNorm.
        tie_embeddings: read the logits with the token embedding ``E^T`` instead of a separate output matrix.
        bos_id: the token the model is conditioned on at position 0 (not part of ``x``).
        dtype: parameter and computation dtype, ``"float32"`` or ``"float64"`` (needs ``jax.enable_x64``).
    """

    vocab_size: int
    context_length: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    embed_size: int
    mlp_size: int
    bos_id: int
    head_size: int | None = None
    rope_base: float = 10000.0
    rms_eps: float = 1e-5
    tie_embeddings: bool = True
    dtype: str = "float32"

    def __post_init__(self):
        if self.head_size is None:
            object.__setattr__(self, "head_size", self.embed_size // self.num_heads)
        for name in (
            "vocab_size",
            "context_length",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "embed_size",
            "mlp_size",
            "head_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"llama.Config.{name} must be an integer >= 1, got {value!r}.")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"llama.Config.num_heads must be a multiple of num_kv_heads, got num_heads = "
                f"{self.num_heads} and num_kv_heads = {self.num_kv_heads}."
            )
        if self.head_size % 2:
            raise ValueError(
                f"llama.Config.head_size must be even (RoPE rotates pairs), got {self.head_size}."
            )
        if (
            isinstance(self.bos_id, bool)
            or not isinstance(self.bos_id, int)
            or not 0 <= self.bos_id < self.vocab_size
        ):
            raise ValueError(
                f"llama.Config.bos_id must be a token id in [0, {self.vocab_size}), got {self.bos_id!r}."
            )
        for name in ("rope_base", "rms_eps"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
                raise ValueError(f"llama.Config.{name} must be a finite number > 0, got {value!r}.")
        if not isinstance(self.tie_embeddings, bool):
            raise ValueError(
                f"llama.Config.tie_embeddings must be True or False, got {self.tie_embeddings!r}."
            )
        if self.dtype not in _DTYPES:
            raise ValueError(f"llama.Config.dtype must be one of {_DTYPES}, got {self.dtype!r}.")

    def to_dict(self) -> dict:
        """The fields as a plain dict; ``Config(**config.to_dict()) == config``."""
        return dataclasses.asdict(self)


def param_shapes(config: Config) -> Params:
    """The parameter tree's shapes (weights ``[out, in]``; block leaves stacked over ``L`` layers)."""
    c = config
    L, D, F, V = c.num_layers, c.embed_size, c.mlp_size, c.vocab_size
    HK, GK = c.num_heads * c.head_size, c.num_kv_heads * c.head_size
    shapes = {
        "embed": (V, D),
        "blocks": {
            "attn_norm": (L, D),
            "q": (L, HK, D),
            "k": (L, GK, D),
            "v": (L, GK, D),
            "o": (L, D, HK),
            "mlp_norm": (L, D),
            "gate": (L, F, D),
            "up": (L, F, D),
            "down": (L, D, F),
        },
        "norm": (D,),
    }
    if not c.tie_embeddings:
        shapes["head"] = (V, D)
    return shapes


# --- the network, as pure functions over the parameter tree -----------------------------------------------


def _rms_norm(g: Array, u: Array, eps: float) -> Array:
    """``u / sqrt(mean(u^2) + eps) * g`` over the last axis."""
    return u * jax.lax.rsqrt(jnp.mean(jnp.square(u), axis=-1, keepdims=True) + eps) * g


def _dense(w: Array, u: Array) -> Array:
    """``u W^T`` with ``W`` stored ``[out, in]``: ``[..., in] -> [..., out]``."""
    return jnp.einsum("...i,oi->...o", u, w)


@functools.lru_cache(maxsize=8)
def _rope_table(config: Config) -> tuple[np.ndarray, np.ndarray]:
    """``cos``, ``sin`` of the RoPE angles ``p * base^(-2i/K)``, float64 ``[context_length + 1, K]``.

    One table serves the parallel pass and the decoder, so both rotate by bit-identical values. The angles are
    transformers' (float32 ``inv_freq``, one float32 product per angle); their cosines and sines are then
    taken in float64 and rounded once to the working dtype.
    """
    K = config.head_size
    inv_freq = np.float32(1.0) / (
        np.float32(config.rope_base) ** (np.arange(0, K, 2, dtype=np.float32) / np.float32(K))
    )
    angles = np.arange(config.context_length + 1, dtype=np.float32)[:, None] * inv_freq  # [S, K/2], float32
    angles = np.concatenate([angles, angles], axis=-1).astype(np.float64)  # both halves, [S, K]
    return np.cos(angles), np.sin(angles)


def _rope(u: Array, cos: Array, sin: Array) -> Array:
    """Rotate ``u`` ``[..., heads, K]`` by the angles ``[..., K]`` (``rotate_half`` layout)."""
    half = u.shape[-1] // 2
    rotated = jnp.concatenate([-u[..., half:], u[..., :half]], axis=-1)
    return u * cos[..., None, :] + rotated * sin[..., None, :]


def _mlp(p: Params, u: Array) -> Array:
    """SwiGLU: ``(SiLU(u W_gate^T) * u W_up^T) W_down^T``."""
    return _dense(p["down"], jax.nn.silu(_dense(p["gate"], u)) * _dense(p["up"], u))


def _head(params: Params, z: Array, config: Config) -> Array:
    """Logits ``RMS_f(z) E^T`` or ``RMS_f(z) W_out^T``: ``[..., D] -> [..., V]``."""
    u = _rms_norm(params["norm"], z, config.rms_eps)
    return _dense(params["embed"] if config.tie_embeddings else params["head"], u)


def _causal_attention(q: Array, k: Array, v: Array) -> Array:
    """Grouped-query causal attention ``softmax(q k^T / sqrt(K)) v``: q ``[T, H, K]``, k, v ``[T, G, K]``.

    Query head ``h = g (H / G) + r`` reads kv head ``g`` (transformers' ``repeat_kv``). Written out rather
    than ``jax.nn.dot_product_attention``, which computes in float32 whatever the input dtype, so that float64
    runs stay float64.
    """
    T, H, K = q.shape
    G = k.shape[1]
    q = q.reshape(T, G, H // G, K)
    scores = jnp.einsum("tgrk,sgk->grts", q, k) / math.sqrt(K)  # [G, H/G, T, T]
    causal = jnp.arange(T)[:, None] >= jnp.arange(T)[None, :]
    weights = jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1)
    return jnp.einsum("grts,sgk->tgrk", weights, v).reshape(T, H, K)


def _forward(params: Params, x: Array, config: Config) -> Array:
    """Logits ``[T, V]`` of ``x_t`` given ``x_<t``: one causal pass over ``(BOS, x_1, .., x_{T-1})``."""
    c = config
    T, H, G, K = x.shape[0], c.num_heads, c.num_kv_heads, c.head_size
    inputs = jnp.concatenate([jnp.full((1,), c.bos_id, x.dtype), x[:-1]])  # [T]
    z = params["embed"][inputs]  # [T, D]
    cos, sin = (jnp.asarray(table[:T], z.dtype) for table in _rope_table(c))  # [T, K]

    def block(z, p):
        u = _rms_norm(p["attn_norm"], z, c.rms_eps)
        q = _rope(_dense(p["q"], u).reshape(T, H, K), cos, sin)  # [T, H*K] -> [T, H, K]
        k = _rope(_dense(p["k"], u).reshape(T, G, K), cos, sin)  # [T, G*K] -> [T, G, K]
        v = _dense(p["v"], u).reshape(T, G, K)
        y = _causal_attention(q, k, v)  # [T, H, K]
        z = z + _dense(p["o"], y.reshape(T, H * K))
        return z + _mlp(p, _rms_norm(p["mlp_norm"], z, c.rms_eps)), None

    z, _ = jax.lax.scan(block, z, params["blocks"])
    return _head(params, z, c)


class Cache(NamedTuple):
    """Fixed-size key/value cache of the decoder.

    Attributes:
        keys: ``[num_layers, context_length + 1, num_kv_heads, head_size]``; slot ``s`` holds the (rotated)
            key of position ``s`` once written (later slots are zero and masked out).
        values: same shape, the values.
    """

    keys: Array
    values: Array


def _decode(params: Params, cache: Cache, z: Array, position: Array, config: Config) -> tuple[Cache, Array]:
    """Run the embedded input ``z`` ``[D]`` at ``position`` through the blocks: new cache, logits ``[V]``.

    Each layer writes its key and value into slot ``position`` and attends to the slots ``<= position``: the
    causal mask of the parallel pass, one row at a time. The cache rides in the scan's carry so that the
    writes are in place.
    """
    c = config
    H, G, K = c.num_heads, c.num_kv_heads, c.head_size
    cos, sin = (jnp.asarray(table, z.dtype)[position] for table in _rope_table(c))  # [K]
    visible = jnp.arange(cache.keys.shape[1]) <= position  # [S]

    def block(carry, inputs):
        z, keys, values = carry
        p, layer = inputs
        u = _rms_norm(p["attn_norm"], z, c.rms_eps)
        q = _rope(_dense(p["q"], u).reshape(H, K), cos, sin)  # [H, K]
        k = _rope(_dense(p["k"], u).reshape(G, K), cos, sin)  # [G, K]
        v = _dense(p["v"], u).reshape(G, K)
        start = (layer, position, jnp.int32(0), jnp.int32(0))
        keys = jax.lax.dynamic_update_slice(keys, k[None, None], start)
        values = jax.lax.dynamic_update_slice(values, v[None, None], start)
        q = q.reshape(G, H // G, K)  # query head h = g * (H / G) + r reads kv head g
        scores = jnp.einsum("grk,sgk->grs", q, keys[layer]) / math.sqrt(K)  # [G, H/G, S]
        weights = jax.nn.softmax(jnp.where(visible, scores, -jnp.inf), axis=-1)
        y = jnp.einsum("grs,sgk->grk", weights, values[layer]).reshape(H * K)
        z = z + _dense(p["o"], y)
        z = z + _mlp(p, _rms_norm(p["mlp_norm"], z, c.rms_eps))
        return (z, keys, values), None

    layers = jnp.arange(c.num_layers, dtype=jnp.int32)
    (z, keys, values), _ = jax.lax.scan(block, (z, cache.keys, cache.values), (params["blocks"], layers))
    return Cache(keys, values), _head(params, z, c)


@functools.partial(jax.jit, static_argnums=0)
def _init(config: Config, key: Array) -> Params:
    """Random parameters (one compiled program per config): ``N(0, 0.02)`` weights, unit RMSNorm gains."""
    dtype = jnp.dtype(config.dtype)
    shapes = param_shapes(config)
    is_shape = lambda s: isinstance(s, tuple)
    sizes = [math.prod(s) for s in jax.tree_util.tree_leaves(shapes, is_leaf=is_shape)]
    # One draw sliced into the leaves: a single random-bits kernel compiles far faster than one per shape.
    draws = iter(jnp.split(0.02 * jax.random.normal(key, (sum(sizes),), dtype), np.cumsum(sizes)[:-1]))

    def leaf(path, shape):
        draw = next(draws).reshape(shape)
        return jnp.ones(shape, dtype) if "norm" in jax.tree_util.keystr(path) else draw

    return jax.tree_util.tree_map_with_path(leaf, shapes, is_leaf=is_shape)


# --- the model contract -----------------------------------------------------------------------------------


class Model(DiscreteModel):
    """A Llama-family decoder as a contract model (equations in the module docstring).

    Args:
        config: a :class:`Config` (or the dict of its fields).
        temperature: divides the logits when sampling and scoring (``p_tau``).

    Attributes:
        config: the :class:`Config`.
        max_length: ``config.context_length``; longer sequences are refused.
        bos_id: ``config.bos_id``.
    """

    family = "llama"
    windowed_cache = True

    def __init__(self, config: Config | Mapping[str, Any], *, temperature: float = 1.0):
        if isinstance(config, Mapping):
            config = Config(**config)
        if not isinstance(config, Config):
            raise ValueError(f"`config` must be a llama.Config, got {type(config).__name__}.")
        self.config = config
        self.vocab_size = config.vocab_size
        self.max_length = config.context_length
        self.bos_id = config.bos_id
        self.temperature = check_temperature(temperature)

    def init(self, key: Array) -> Params:
        """Random parameters of the config's shapes: ``N(0, 0.02)`` weights, unit norm gains (for tests)."""
        dtype = jnp.dtype(self.config.dtype)
        if jax.dtypes.canonicalize_dtype(dtype) != dtype:
            raise ValueError(
                f"llama.Config.dtype = {self.config.dtype!r} needs 64-bit JAX: "
                "use `with jax.enable_x64(True):`."
            )
        return _init(self.config, key)

    def logits(self, params: Params, x: Array) -> Array:
        """``[T, V]`` logits of ``x_t`` given ``x_<t`` (BOS prepended): one parallel causal pass."""
        if x.shape[0] > self.max_length:
            raise ValueError(
                f"`x` has {x.shape[0]} tokens, more than the model's context of {self.max_length} tokens."
            )
        self.check_params(params)
        return _forward(params, x, self.config)

    def initial(self, params: Params) -> tuple[Cache, Array]:
        """An empty cache with BOS written at position 0, and the logits ``[V]`` of ``x_1``."""
        self.check_params(params)
        c = self.config
        dtype = params["embed"].dtype
        shape = (c.num_layers, c.context_length + 1, c.num_kv_heads, c.head_size)
        cache = Cache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))
        return _decode(params, cache, params["embed"][c.bos_id], jnp.zeros((), jnp.int32), c)

    def step(self, params: Params, carry: Cache, token: Array, position: Array) -> tuple[Cache, Array]:
        """Consume token ``x_{position+1}`` (0-based ``position``) at model position ``position + 1``.

        ``position`` must be ``< context_length`` (it is a traced index and cannot be checked here).
        """
        position = jnp.asarray(position, jnp.int32) + 1  # BOS holds position 0
        return _decode(params, carry, params["embed"][token], position, self.config)

    def fit_cache(self, carry: Cache, num_slots: int) -> Cache:
        """The cache cut or zero-padded to ``num_slots`` positions (the sampler grows it window by window)."""
        return Cache(fit_slots(carry.keys, 1, num_slots), fit_slots(carry.values, 1, num_slots))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.config.to_dict().items())
        return f"llama.Model({fields}, temperature={self.temperature})"


# --- reading a GGUF file ----------------------------------------------------------------------------------

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
) -> Config:
    """The :class:`Config` of a Llama-family GGUF file (metadata ``<arch>.*``; see :func:`from_gguf`)."""
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
    return Config(
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
) -> tuple[Model, Params]:
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
    model = Model(config, temperature=temperature)
    if jax.dtypes.canonicalize_dtype(jnp.dtype(dtype)) != jnp.dtype(dtype):
        raise ValueError(f"`dtype` = {dtype!r} needs 64-bit JAX: use `with jax.enable_x64(True):`.")
    shapes = param_shapes(config)
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


__all__ = [
    "Cache",
    "Config",
    "DEFAULT_CONTEXT",
    "Model",
    "SUPPORTED_ARCHITECTURES",
    "config_from_gguf",
    "default_bos_id",
    "from_gguf",
    "param_shapes",
]
