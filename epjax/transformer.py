"""A GPT-style Transformer decoder as an autoregressive model (docs/mathematics.md §1, the Transformer row).

The summary of the past is the whole context: ``p(x_{t+1} | x_1..x_t) = softmax(logits_t)``, where
``logits_t`` is read at position ``t`` of a causal pre-LayerNorm Transformer run over ``(BOS, x_1, .., x_t)``.
The layout is GPT-2's (nanoGPT's ``model.py``), written as pure functions over the flax NNX state:

    z_0     = b + P_0,  z_t = E[x_t] + P_t  (t >= 1)     b: a learned BOS vector, not a vocabulary token
    a       = z + Attn(LN_1(z))                           causal multi-head self-attention
    z'      = a + MLP(LN_2(a)),   MLP(u) = GELU(u W_fc + c_fc) W_proj + c_proj
    logits  = LN_f(z^L) E^T   (tied)   or   LN_f(z^L) W_head   (untied)

Row ``t`` of :meth:`Model.logits` is the output at position ``t``: the BOS position 0 gives the law of
``x_1``, position ``t`` the law of ``x_{t+1}``, and ``ln P(x) = sum_t log_softmax(logits)[t, x_{t+1}]``
(EP paper eq. 3). Scoring ``T <= context_length`` tokens uses positions ``0 .. T-1`` in one parallel causal
pass (``O(T^2)`` attention). Decoding (:meth:`Model.initial`, :meth:`Model.step`) keeps a fixed-size
key/value :class:`Cache` of ``context_length + 1`` positions, because the sampler's last step also consumes
``x_T`` at position ``T``; each new token costs one row of work per layer plus attention over the cache,
never a recomputation of the prefix. Sampling ``T`` tokens runs the decoder in up to four consecutive scans
(``epjax.discrete.decode_windows``), each over the cache cut to the positions it can reach
(:meth:`Model.fit_cache`): attention then reads on average 5/8 of ``T + 1`` slots per token instead of all
``context_length + 1`` (sampling 13.6 s -> 7.6 s at width 256, T = 256, B = 256 on a 2-core CPU).

With ``b`` set to GPT-2's ``<|endoftext|>`` embedding this is exactly GPT-2 scoring with BOS prepended.

>>> import jax
>>> model = Model(Config(vocab_size=5, context_length=8, num_layers=1, num_heads=2, embed_size=8))
>>> params = model.init(jax.random.key(0))
>>> model.log_probs(params, jax.numpy.array([1, 4, 2])).shape
(3,)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from epjax._xla import XLA_CPU_EMITTERS
from epjax.discrete import DiscreteModel, check_temperature, fit_slots

Array = jax.Array
State = Any  # an ``nnx.State``: the pure parameter pytree of :class:`GPT`

_LAYER_NORM_EPS = 1e-5  # GPT-2's (and PyTorch's) value
_DTYPES = ("float32", "float64")


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of a GPT-style decoder (frozen and hashable: a static ``jit`` argument, saved as JSON).

    Attributes:
        vocab_size: number of token ids ``V``.
        context_length: longest sequence the model scores or samples (``Model.max_length``).
        num_layers: number of Transformer blocks.
        num_heads: attention heads ``H`` per block.
        embed_size: model width ``D``, divisible by ``num_heads`` (head size ``D / H``).
        mlp_ratio: hidden width of the MLP is ``mlp_ratio * D``.
        tie_embeddings: read the logits with the token embedding ``E^T`` (GPT-2) instead of a separate head.
        dtype: parameter and computation dtype, ``"float32"`` or ``"float64"`` (needs ``jax.enable_x64``).
    """

    vocab_size: int
    context_length: int
    num_layers: int
    num_heads: int
    embed_size: int
    mlp_ratio: int = 4
    tie_embeddings: bool = True
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("vocab_size", "context_length", "num_layers", "num_heads", "embed_size", "mlp_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"Config.{name} must be an integer >= 1, got {value!r}.")
            object.__setattr__(self, name, int(value))  # numpy integers would hash and serialise differently
        if self.embed_size % self.num_heads:
            raise ValueError(
                f"Config.embed_size must be divisible by Config.num_heads, got embed_size = "
                f"{self.embed_size} and num_heads = {self.num_heads}."
            )
        if not isinstance(self.tie_embeddings, bool):
            raise ValueError(f"Config.tie_embeddings must be True or False, got {self.tie_embeddings!r}.")
        if self.dtype not in _DTYPES:
            raise ValueError(f"Config.dtype must be one of {_DTYPES}, got {self.dtype!r}.")

    @property
    def head_size(self) -> int:
        """Width of one attention head, ``embed_size // num_heads``."""
        return self.embed_size // self.num_heads

    def to_dict(self) -> dict:
        """The fields as a plain dict; ``Config(**config.to_dict()) == config``."""
        return dataclasses.asdict(self)


# --- the network: NNX modules hold the parameters and their initialisation --------------------------------
#
# The computations are pure functions over the split state (below), so that the same parameter pytree feeds
# the parallel pass and the cached decoder, and everything composes with jit/vmap/scan without NNX state.


def _normal(std: float):
    return nnx.initializers.normal(stddev=std)


class Attention(nnx.Module):
    """Causal multi-head self-attention: fused ``qkv`` projection ``[D, 3D]`` and output projection."""

    def __init__(self, config: Config, *, rngs: nnx.Rngs):
        D, dtype = config.embed_size, jnp.dtype(config.dtype)
        # nanoGPT/GPT-2 init: N(0, 0.02), residual projections scaled by 1/sqrt(2 * num_layers).
        self.qkv = nnx.Linear(D, 3 * D, kernel_init=_normal(0.02), param_dtype=dtype, rngs=rngs)
        residual_init = _normal(0.02 / math.sqrt(2 * config.num_layers))
        self.out = nnx.Linear(D, D, kernel_init=residual_init, param_dtype=dtype, rngs=rngs)


class MLP(nnx.Module):
    """Position-wise ``GELU(u W_fc + c_fc) W_proj + c_proj`` with hidden width ``mlp_ratio * D``."""

    def __init__(self, config: Config, *, rngs: nnx.Rngs):
        D, dtype = config.embed_size, jnp.dtype(config.dtype)
        hidden = config.mlp_ratio * D
        self.fc = nnx.Linear(D, hidden, kernel_init=_normal(0.02), param_dtype=dtype, rngs=rngs)
        residual_init = _normal(0.02 / math.sqrt(2 * config.num_layers))
        self.proj = nnx.Linear(hidden, D, kernel_init=residual_init, param_dtype=dtype, rngs=rngs)


class Block(nnx.Module):
    """Pre-LayerNorm block: ``a = z + Attn(LN_1(z))``, ``z' = a + MLP(LN_2(a))``."""

    def __init__(self, config: Config, *, rngs: nnx.Rngs):
        D, dtype = config.embed_size, jnp.dtype(config.dtype)
        self.ln_1 = nnx.LayerNorm(D, epsilon=_LAYER_NORM_EPS, param_dtype=dtype, rngs=rngs)
        self.attn = Attention(config, rngs=rngs)
        self.ln_2 = nnx.LayerNorm(D, epsilon=_LAYER_NORM_EPS, param_dtype=dtype, rngs=rngs)
        self.mlp = MLP(config, rngs=rngs)


class GPT(nnx.Module):
    """Token and position embeddings, a learned BOS vector, the blocks, a final LayerNorm and the head."""

    def __init__(self, config: Config, *, rngs: nnx.Rngs):
        D, dtype = config.embed_size, jnp.dtype(config.dtype)
        self.token_embed = nnx.Embed(
            config.vocab_size, D, embedding_init=_normal(0.02), param_dtype=dtype, rngs=rngs
        )
        self.bos = nnx.Param(_normal(0.02)(rngs.params(), (D,), dtype))
        # Position 0 is BOS; the decoder's last step may consume x_T at position T = context_length.
        self.position_embed = nnx.Param(_normal(0.02)(rngs.params(), (config.context_length + 1, D), dtype))
        self.blocks = nnx.List([Block(config, rngs=rngs) for _ in range(config.num_layers)])
        self.ln_f = nnx.LayerNorm(D, epsilon=_LAYER_NORM_EPS, param_dtype=dtype, rngs=rngs)
        if not config.tie_embeddings:
            self.head = nnx.Linear(
                D, config.vocab_size, use_bias=False, kernel_init=_normal(0.02), param_dtype=dtype, rngs=rngs
            )


# --- pure functions over the state ------------------------------------------------------------------------


def _linear(p: State, x: Array) -> Array:
    """``x W + c`` over the last axis: ``[..., in] -> [..., out]``."""
    y = jnp.einsum("...i,io->...o", x, p["kernel"][...])
    return y + p["bias"][...] if "bias" in p else y


def _layer_norm(p: State, x: Array) -> Array:
    """``(x - mean) / sqrt(var + eps) * scale + bias`` over the last axis."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + _LAYER_NORM_EPS) * p["scale"][...] + p["bias"][...]


def _mlp(p: State, x: Array) -> Array:
    # GPT-2's GELU is the tanh approximation.
    return _linear(p["proj"], jax.nn.gelu(_linear(p["fc"], x), approximate=True))


def _head(params: State, z: Array, config: Config) -> Array:
    """Logits ``LN_f(z) E^T`` (tied) or ``LN_f(z) W_head``: ``[..., D] -> [..., V]``."""
    u = _layer_norm(params["ln_f"], z)
    if config.tie_embeddings:
        return jnp.einsum("...d,vd->...v", u, params["token_embed"]["embedding"][...])
    return _linear(params["head"], u)


def _causal_attention(p: State, x: Array, config: Config) -> Array:
    """Parallel causal self-attention over all positions: ``[T, D] -> [T, D]``.

    ``softmax(q k^T / sqrt(K) + causal mask) v`` per head; position ``t`` attends to ``s <= t``.
    """
    T, H, K = x.shape[0], config.num_heads, config.head_size
    # Heads first, so both attention products are plain batched matrix products (no transposes inside).
    q, k, v = _linear(p["qkv"], x).reshape(T, 3, H, K).transpose(1, 2, 0, 3)  # [T, 3D] -> [3, H, T, K]
    scores = jnp.einsum("htk,hsk->hts", q / math.sqrt(K), k)  # [H, T, T]
    causal = jnp.tril(jnp.ones((T, T), dtype=bool))  # query t sees keys s <= t
    # Heads-first output, then one transpose: asking the product for [T, H, K] directly made XLA compute it
    # transposed and copy it back (scoring 8 % slower on CPU, 20 % with jaxlib's default YNNPACK fusions).
    y = _softmax_weighted_sum(jnp.where(causal, scores, -jnp.inf), v, "hts,hsk->htk")  # [H, T, K]
    return _linear(p["out"], y.transpose(1, 0, 2).reshape(T, H * K))  # [H, T, K] -> [T, H, K] -> [T, D]


def _softmax_weighted_sum(scores: Array, values: Array, spec: str) -> Array:
    """``einsum(spec, softmax(scores, -1), values)`` with the normalisation applied after the product.

    ``exp(scores - max)`` times the values, divided by the row sums: the division touches the ``[.., K]``
    output instead of the ``[.., S]`` weights, one pass fewer over the largest array (attention alone at
    B = 256, H = 4, T = 256 on CPU: 550 -> 315 ms; a few per cent of a whole 2-layer model, whose attention
    products are small batched matrix products that XLA's CPU backend runs far below its large-GEMM speed).
    Every row must have a finite score (the causal diagonal guarantees it);
    the maximum carries no gradient (softmax does not depend on it).
    """
    top = jax.lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True))
    e = jnp.exp(scores - top)
    y = jnp.einsum(spec, e, values)
    sums = jnp.sum(e, axis=-1)  # the rows' normalisers, laid out like the output without its last axis
    out_axes, row_axes = spec.split("->")[1], spec.split(",")[0][:-1]
    return y / jnp.einsum(f"{row_axes}->{out_axes[:-1]}", sums)[..., None]


def _forward(params: State, x: Array, config: Config) -> Array:
    """Logits ``[T, V]`` of ``x_t`` given ``x_<t``: one causal pass over ``(BOS, x_1, .., x_{T-1})``."""
    T = x.shape[0]
    bos = params["bos"][...][None]  # [1, D]
    tokens = params["token_embed"]["embedding"][...][x[:-1]]  # [T-1, D]
    z = jnp.concatenate([bos, tokens], axis=0) + params["position_embed"][...][:T]  # [T, D]
    for block in params["blocks"].values():
        z = z + _causal_attention(block["attn"], _layer_norm(block["ln_1"], z), config)
        z = z + _mlp(block["mlp"], _layer_norm(block["ln_2"], z))
    return _head(params, z, config)


class Cache(NamedTuple):
    """Fixed-size key/value cache of the decoder: one ``[H, S, K]`` array per layer.

    ``S = context_length + 1`` from :meth:`Model.initial`; the sampler cuts and grows the slot axis window by
    window (:meth:`Model.fit_cache`), and :meth:`Model.step` works with any ``S`` above its position.

    Slot ``s`` of layer ``l`` holds the key (value) of position ``s`` once written; later slots are zero and
    masked out. One array per layer, heads first: under the engine's ``vmap``, slicing a layer out of a
    stacked ``[num_layers, ...]`` array, or a slots-first layout, each cost a copy of the cache per token
    (about 2x slower decoding each on CPU); this way the write is in place and the reads are plain batched
    matrix-vector products.

    Attributes:
        keys: tuple of ``num_layers`` arrays ``[H, S, K]``.
        values: same, the values.
    """

    keys: tuple[Array, ...]
    values: tuple[Array, ...]


def _cached_attention(p: State, x: Array, keys: Array, values: Array, position: Array, config: Config):
    """Self-attention of the single position ``position`` over one layer's cache: ``[D] -> [D]``.

    Writes this position's key and value into slot ``position``, then attends to the slots ``<= position``
    (one row of the parallel pass's causal attention). Returns the output and the updated ``keys, values``.
    """
    H, K = config.num_heads, config.head_size
    q, k, v = _linear(p["qkv"], x).reshape(3, H, K)  # [3D] -> [3, H, K]
    start = (jnp.int32(0), position, jnp.int32(0))  # slot `position` of every head
    keys = jax.lax.dynamic_update_slice(keys, k[:, None], start)  # [H, S, K], S = context_length + 1
    values = jax.lax.dynamic_update_slice(values, v[:, None], start)
    scores = jnp.einsum("hk,hsk->hs", q / math.sqrt(K), keys)  # [H, S]
    visible = jnp.arange(keys.shape[1]) <= position
    y = _softmax_weighted_sum(jnp.where(visible, scores, -jnp.inf), values, "hs,hsk->hk").reshape(H * K)
    return _linear(p["out"], y), keys, values


def _decode(params: State, cache: Cache, z: Array, position: Array, config: Config) -> tuple[Cache, Array]:
    """Run the embedded input ``z`` ``[D]`` at ``position`` through the blocks: new cache, logits ``[V]``."""
    keys, values = list(cache.keys), list(cache.values)
    for layer, block in enumerate(params["blocks"].values()):
        u = _layer_norm(block["ln_1"], z)
        y, keys[layer], values[layer] = _cached_attention(
            block["attn"], u, keys[layer], values[layer], position, config
        )
        z = z + y
        z = z + _mlp(block["mlp"], _layer_norm(block["ln_2"], z))
    return Cache(tuple(keys), tuple(values)), _head(params, z, config)


# --- the model contract -----------------------------------------------------------------------------------


class Model(DiscreteModel):
    """A GPT-style decoder as a contract model (see the module docstring for the equations).

    Args:
        config: a :class:`Config` (or the dict of its fields, as saved by ``Config.to_dict``).
        temperature: divides the logits when sampling and scoring (``p_tau``).

    Attributes:
        config: the :class:`Config`.
        graphdef: the static NNX graph of :class:`GPT`; ``nnx.merge(model.graphdef, params)`` rebuilds the
            module from parameters (e.g. for NNX-style training).
        max_length: ``config.context_length``; longer sequences are refused.
    """

    family = "transformer"
    xla_cpu_options = XLA_CPU_EMITTERS  # measured faster than jaxlib's YNNPACK fusions (epjax._xla)
    windowed_cache = True

    def __init__(self, config: Config | Mapping[str, Any], *, temperature: float = 1.0):
        if isinstance(config, Mapping):
            config = Config(**config)
        if not isinstance(config, Config):
            raise ValueError(f"`config` must be a transformer.Config, got {type(config).__name__}.")
        self.config = config
        self.vocab_size = config.vocab_size
        self.max_length = config.context_length
        self.temperature = check_temperature(temperature)
        # The graph is static: build it once from abstract arrays (nothing is allocated; 64-bit enabled
        # locally so a float64 config can be declared outside `jax.enable_x64` without dtype warnings).
        with jax.enable_x64(config.dtype == "float64" or jax.config.jax_enable_x64):
            self.graphdef = nnx.split(nnx.eval_shape(lambda: GPT(config, rngs=nnx.Rngs(0))))[0]

    def init(self, key: Array) -> State:
        """Fresh GPT-2-style parameters from a ``jax.random`` key: the ``nnx.State`` of :class:`GPT`.

        Weights ``N(0, 0.02)``, residual projections ``N(0, 0.02 / sqrt(2 num_layers))``, biases 0,
        LayerNorm scales 1.
        """
        if jax.dtypes.canonicalize_dtype(jnp.dtype(self.config.dtype)) != jnp.dtype(self.config.dtype):
            raise ValueError(
                f"Config.dtype = {self.config.dtype!r} needs 64-bit JAX: use `with jax.enable_x64(True):`."
            )
        return nnx.split(GPT(self.config, rngs=nnx.Rngs(key)))[1]

    def logits(self, params: State, x: Array) -> Array:
        """``[T, V]`` logits of ``x_t`` given ``x_<t``: one parallel causal pass (``O(T^2)`` attention)."""
        if x.shape[0] > self.max_length:
            raise ValueError(
                f"`x` has {x.shape[0]} tokens, more than the model's context of {self.max_length} tokens."
            )
        self.check_params(params)
        return _forward(params, x, self.config)

    def initial(self, params: State) -> tuple[Cache, Array]:
        """An empty cache with BOS written at position 0, and the logits ``[V]`` of ``x_1``."""
        self.check_params(params)
        c = self.config
        dtype = params["bos"][...].dtype
        shape = (c.num_heads, c.context_length + 1, c.head_size)
        empty = tuple(jnp.zeros(shape, dtype) for _ in range(c.num_layers))
        cache = Cache(empty, empty)
        z = params["bos"][...] + params["position_embed"][...][0]
        return _decode(params, cache, z, jnp.zeros((), jnp.int32), c)

    def step(self, params: State, carry: Cache, token: Array, position: Array) -> tuple[Cache, Array]:
        """Consume token ``x_{position+1}`` (0-based ``position``) at model position ``position + 1``.

        ``position`` must be ``< context_length`` (it is a traced index and cannot be checked here).
        """
        position = jnp.asarray(position, jnp.int32) + 1  # BOS holds position 0
        z = params["token_embed"]["embedding"][...][token] + params["position_embed"][...][position]
        return _decode(params, carry, z, position, self.config)

    def fit_cache(self, carry: Cache, num_slots: int) -> Cache:
        """The cache cut or zero-padded to ``num_slots`` positions (the sampler grows it window by window)."""
        return Cache(*(tuple(fit_slots(a, 1, num_slots) for a in arrays) for arrays in carry))

    def module(self, params: State) -> GPT:
        """The NNX module holding ``params`` (``nnx.merge(graphdef, params)``)."""
        self.check_params(params)
        return nnx.merge(self.graphdef, params)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.config.to_dict().items())
        return f"transformer.Model({fields}, temperature={self.temperature})"


__all__ = ["Attention", "Block", "Cache", "Config", "GPT", "MLP", "Model"]
