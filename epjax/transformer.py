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
(EP paper eq. 3). Scoring and decoding (one parallel causal pass; a key/value cache of ``context_length + 1``
positions, grown window by window while sampling) are the shared cached decoder of :mod:`epjax._decoder`;
this module supplies GPT's embedding, block and read-out. The layers run as a Python loop over per-layer
parameters and caches (the faster decoder for a few layers).

With ``b`` set to GPT-2's ``<|endoftext|>`` embedding this is exactly GPT-2 scoring with BOS prepended
(:func:`epjax.pretrained.load_gpt2` reads a Hugging Face GPT-2 checkpoint into these parameters).

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
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from epjax._checks import check_dtype_available, check_positive_int
from epjax._decoder import Cache, CachedDecoder
from epjax._xla import XLA_CPU_EMITTERS

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
            # as a Python int: numpy integers would hash and serialise differently
            object.__setattr__(self, name, check_positive_int(f"Config.{name}", getattr(self, name)))
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

    @property
    def num_kv_heads(self) -> int:
        """Key/value heads of the cache: ``num_heads`` (plain multi-head attention)."""
        return self.num_heads

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


# --- the model contract -----------------------------------------------------------------------------------


class Model(CachedDecoder):
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
    config_class = Config
    xla_cpu_options = XLA_CPU_EMITTERS  # measured faster than jaxlib's YNNPACK fusions (epjax._xla)

    def __init__(self, config: Config | Mapping[str, Any], *, temperature: float = 1.0):
        super().__init__(config, temperature=temperature)
        # The graph is static: build it once from abstract arrays (nothing is allocated; 64-bit enabled
        # locally so a float64 config can be declared outside `jax.enable_x64` without dtype warnings).
        config = self.config
        with jax.enable_x64(config.dtype == "float64" or jax.config.jax_enable_x64):
            self.graphdef = nnx.split(nnx.eval_shape(lambda: GPT(config, rngs=nnx.Rngs(0))))[0]

    def init(self, key: Array) -> State:
        """Fresh GPT-2-style parameters from a ``jax.random`` key: the ``nnx.State`` of :class:`GPT`.

        Weights ``N(0, 0.02)``, residual projections ``N(0, 0.02 / sqrt(2 num_layers))``, biases 0,
        LayerNorm scales 1.
        """
        check_dtype_available(self.config.dtype, name="Config.dtype")
        return nnx.split(GPT(self.config, rngs=nnx.Rngs(key)))[1]

    def module(self, params: State) -> GPT:
        """The NNX module holding ``params`` (``nnx.merge(graphdef, params)``)."""
        self.check_params(params)
        return nnx.merge(self.graphdef, params)

    # --- the decoder's hooks (epjax._decoder) ------------------------------------------------------------
    def embed_bos(self, params: State) -> Array:
        """``b + P_0``: the learned BOS vector at position 0."""
        return params["bos"][...] + params["position_embed"][...][0]

    def embed(self, params: State, tokens: Array, positions: Array) -> Array:
        """``E[x] + P_t``."""
        return params["token_embed"]["embedding"][...][tokens] + params["position_embed"][...][positions]

    def layers(self, params: State) -> list[State]:
        """The blocks' states, in order."""
        return list(params["blocks"].values())

    def block(self, p: State, z: Array, data: None, attend) -> Array:
        """``a = z + Attn(LN_1(z))``, ``z' = a + MLP(LN_2(a))``."""
        H, K = self.config.num_heads, self.config.head_size
        qkv = _linear(p["attn"]["qkv"], _layer_norm(p["ln_1"], z))  # [..., 3D]
        # [..., 3, H, K] -> [3, H, ..., K]: heads first (one transpose of the fused projection)
        q, k, v = jnp.moveaxis(qkv.reshape(*z.shape[:-1], 3, H, K), (-3, -2), (0, 1))
        z = z + _linear(p["attn"]["out"], attend(q, k, v))
        return z + _mlp(p["mlp"], _layer_norm(p["ln_2"], z))

    def head(self, params: State, z: Array) -> Array:
        """Logits ``LN_f(z) E^T`` (tied) or ``LN_f(z) W_head``: ``[..., D] -> [..., V]``."""
        u = _layer_norm(params["ln_f"], z)
        if self.config.tie_embeddings:
            return jnp.einsum("...d,vd->...v", u, params["token_embed"]["embedding"][...])
        return _linear(params["head"], u)


__all__ = ["Attention", "Block", "Cache", "Config", "GPT", "MLP", "Model"]
