"""Llama-family decoders (SmolLM2, Llama, ...) as autoregressive models (docs/mathematics.md §7).

The summary of the past is the whole context, prefixed by a BOS token ``b`` that is *not* part of ``x``:
``p(x_{t+1} | x_1..x_t)`` is read at position ``t`` of a causal pass over ``(b, x_1, .., x_t)``, in both
scoring directions (docs/mathematics.md §7: BOS prepended in both directions). One block, pre-norm, with the
weights stored as PyTorch does, ``[out, in]`` (``u W^T``):

    RMS(u)   = u / sqrt(mean(u^2) + eps) * g
    q, k, v  = RoPE(RMS_1(z) W_q^T), RoPE(RMS_1(z) W_k^T), RMS_1(z) W_v^T      H query heads, G <= H kv heads
    a        = z + Attn(q, k, v) W_o^T        causal; query head h reads kv head floor(h / (H / G))  (GQA)
    z'       = a + (SiLU(RMS_2(a) W_gate^T) * RMS_2(a) W_up^T) W_down^T         (SwiGLU)
    logits   = RMS_f(z^L) E^T   (tied)   or   RMS_f(z^L) W_out^T

RoPE rotates the two halves of each head, ``(u_1, u_2) -> (u_1 cos - u_2 sin, u_2 cos + u_1 sin)`` with angles
``p * base^(-2i/K)`` at position ``p`` (transformers' ``rotate_half`` layout).

Scoring (one parallel causal pass) and decoding (a key/value cache of ``context_length + 1`` positions, BOS
plus every token the sampler may consume, grown window by window while sampling) are the shared cached
decoder of :mod:`epjax._decoder`; this module supplies the embedding, RoPE, the block and the read-out. The
layers are stacked (leading axis ``num_layers``) and run with one ``lax.scan``, which keeps compilation short
for deep models.

Pretrained weights come from GGUF files: :func:`epjax.pretrained.load_gguf` (the mapping from GGUF tensors to
these parameters, which undoes llama.cpp's Q/K row permutation as transformers' GGUF loader does, is in
``epjax/pretrained/gguf.py``). A model saved with :func:`epjax.train.save` is read back by
:func:`epjax.train.load` like any family's.

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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from epjax._checks import check_dtype_available, check_positive_float, check_positive_int
from epjax._decoder import Attend, Cache, CachedDecoder, heads_first

Array = jax.Array
Params = dict  # {"embed", "blocks": {...stacked...}, "norm", ["head"]}: plain jnp arrays
_DTYPES = ("float32", "float64")


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
        attention_bias: the q, k and v projections carry biases (Qwen2/Qwen2.5): ``u W^T + b``.
        qk_norm: RMSNorm (gain ``[K]``, shared by the heads, ``rms_eps``) on every query and key head before RoPE
            (Qwen3).
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
    attention_bias: bool = False
    qk_norm: bool = False

    def __post_init__(self):
        sizes = ("vocab_size", "context_length", "num_layers", "num_heads", "num_kv_heads", "embed_size", "mlp_size")
        for name in sizes:
            object.__setattr__(self, name, check_positive_int(f"llama.Config.{name}", getattr(self, name)))
        head_size = self.embed_size // self.num_heads if self.head_size is None else self.head_size
        object.__setattr__(self, "head_size", check_positive_int("llama.Config.head_size", head_size))
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
            or not isinstance(self.bos_id, (int, np.integer))
            or not 0 <= self.bos_id < self.vocab_size
        ):
            raise ValueError(
                f"llama.Config.bos_id must be a token id in [0, {self.vocab_size}), got {self.bos_id!r}."
            )
        object.__setattr__(self, "bos_id", int(self.bos_id))
        for name in ("rope_base", "rms_eps"):
            object.__setattr__(self, name, check_positive_float(f"llama.Config.{name}", getattr(self, name)))
        for name in ("tie_embeddings", "attention_bias", "qk_norm"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"llama.Config.{name} must be True or False, got {getattr(self, name)!r}.")
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
    if c.attention_bias:
        shapes["blocks"].update(q_bias=(L, HK), k_bias=(L, GK), v_bias=(L, GK))
    if c.qk_norm:
        shapes["blocks"].update(q_norm=(L, c.head_size), k_norm=(L, c.head_size))
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


class Model(CachedDecoder):
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
    config_class = Config
    scan_layers = True

    def __init__(self, config: Config | Mapping[str, Any], *, temperature: float = 1.0):
        super().__init__(config, temperature=temperature)
        self.bos_id = self.config.bos_id

    def init(self, key: Array) -> Params:
        """Random parameters of the config's shapes: ``N(0, 0.02)`` weights, unit norm gains (for tests)."""
        check_dtype_available(self.config.dtype, name="llama.Config.dtype")
        return _init(self.config, key)

    # --- the decoder's hooks (epjax._decoder) ------------------------------------------------------------
    def embed_bos(self, params: Params) -> Array:
        """``E[b]``: the BOS token's embedding (no position embedding: RoPE rotates inside attention)."""
        return params["embed"][self.config.bos_id]

    def embed(self, params: Params, tokens: Array, positions: Array) -> Array:
        """``E[x]``."""
        return params["embed"][tokens]

    def position_data(self, positions: Array, dtype: Any) -> tuple[Array, Array]:
        """RoPE's ``cos``, ``sin`` at ``positions``: ``[..., K]`` in ``dtype``."""
        return tuple(jnp.asarray(table, dtype)[positions] for table in _rope_table(self.config))

    def layers(self, params: Params) -> Params:
        """The blocks' parameters, stacked over layers."""
        return params["blocks"]

    def block(self, p: Params, z: Array, data: tuple[Array, Array], attend: Attend) -> Array:
        """``a = z + Attn(RoPE(q), RoPE(k), v) W_o^T``, ``z' = a + SwiGLU(RMS_2(a))``."""
        c, (cos, sin) = self.config, data
        H, G, K = c.num_heads, c.num_kv_heads, c.head_size
        lead = z.shape[:-1]
        u = _rms_norm(p["attn_norm"], z, c.rms_eps)

        def project(name: str, heads: int) -> Array:  # [..., D] -> [..., heads, K], with Qwen's bias and norm
            out = _dense(p[name], u)
            out = (out + p[name + "_bias"] if c.attention_bias else out).reshape(*lead, heads, K)
            return _rms_norm(p[name + "_norm"], out, c.rms_eps) if c.qk_norm and name != "v" else out

        q = _rope(project("q", H), cos, sin)  # [..., H*K] -> [..., H, K]
        k = _rope(project("k", G), cos, sin)  # [..., G*K] -> [..., G, K]
        v = project("v", G)
        z = z + _dense(p["o"], attend(heads_first(q), heads_first(k), heads_first(v)))
        return z + _mlp(p, _rms_norm(p["mlp_norm"], z, c.rms_eps))

    def head(self, params: Params, z: Array) -> Array:
        """Logits ``RMS_f(z) E^T`` or ``RMS_f(z) W_out^T``: ``[..., D] -> [..., V]``."""
        u = _rms_norm(params["norm"], z, self.config.rms_eps)
        return _dense(params["embed"] if self.config.tie_embeddings else params["head"], u)


__all__ = ["Cache", "Config", "Model", "param_shapes"]
