"""One causal decoder with a key/value cache: what the Transformer families share (docs/mathematics.md §1, §7).

:class:`CachedDecoder` is the model contract of a decoder-only Transformer conditioned on a BOS input at
position 0, written once for :mod:`epjax.transformer` (GPT-style) and :mod:`epjax.llama` (Llama-family). Row
``t`` of :meth:`~CachedDecoder.logits` is the output at position ``t`` of a causal pass over
``(BOS, x_1, .., x_{T-1})``: the BOS position gives the law of ``x_1``, position ``t`` the law of ``x_{t+1}``.
A family supplies the few pieces that differ, as methods over its parameter tree:

    embed_bos(params)                    -> [D]       the input at position 0
    embed(params, tokens, positions)     -> [..., D]  the inputs of tokens at positions >= 1
    position_data(positions, dtype)      -> any       per-pass constants every block reads (RoPE's cos, sin)
    layers(params)                       -> a sequence of per-layer trees, or one tree stacked over layers
    block(p, z, data, attend)            -> [..., D]  one residual block; ``attend(q, k, v)`` is attention
    head(params, z)                      -> [..., V]  the read-out

and ``config`` with ``context_length``, ``num_layers``, ``num_kv_heads`` and ``head_size``. The base class runs
them in the two ways the contract needs, with one attention for both (grouped-query attention, ``H`` query
heads reading ``G`` key/value heads, query head ``h`` reading kv head ``floor(h / (H / G))``; a GPT has
``G = H``):

- scoring (:meth:`~CachedDecoder.logits`): one parallel pass over all ``T`` positions, ``attend`` being causal
  self-attention (``O(T^2)``);
- decoding (:meth:`~CachedDecoder.initial`, :meth:`~CachedDecoder.step`): one position at a time over a
  fixed-size key/value :class:`Cache` of ``context_length + 1`` slots (the sampler's last step consumes
  ``x_T`` at position ``T``); ``attend`` writes the position's key and value into its slot and attends to the
  slots at or before it, one row of the causal mask. Sampling ``T`` tokens runs the decoder in up to four
  consecutive scans (:func:`epjax.discrete.decode_windows`), each over the cache cut to the positions it can
  reach (:meth:`~CachedDecoder.fit_cache`).

``q``, ``k`` and ``v`` reach ``attend`` heads first (``[H, ..., K]``, ``[G, ..., K]``): both attention products
are then plain batched matrix products, with no transpose inside. Layers run as a Python loop over per-layer
parameters and a tuple of per-layer caches (``scan_layers = False``: every layer's cache is written in place
and read without a copy, the faster decoder for a few layers), or as one ``lax.scan`` over parameters and a
cache stacked on a leading layer axis (``scan_layers = True``: compilation does not grow with depth, for
pretrained models of 30 layers and more).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from epjax.discrete import DiscreteModel, fit_slots

Array = jax.Array
PyTree = Any
Attend = Callable[[Array, Array, Array], Array]


class Cache(NamedTuple):
    """Fixed-size key/value cache of a decoder, slot ``s`` of a layer holding position ``s``'s key (value).

    A layer's keys are ``[G, S, K]`` (kv heads, slots, head size), ``S = context_length + 1`` from
    :meth:`CachedDecoder.initial`; the sampler cuts and grows the slot axis window by window
    (:meth:`CachedDecoder.fit_cache`), and :meth:`CachedDecoder.step` works with any ``S`` above its position.
    Slots not yet written are zero and masked out.

    Attributes:
        keys: a tuple of ``num_layers`` arrays ``[G, S, K]``, or one ``[num_layers, G, S, K]`` array for a
            decoder that scans its layers.
        values: the same, the values.
    """

    keys: Any
    values: Any


def softmax_weighted_sum(scores: Array, values: Array, spec: str) -> Array:
    """``einsum(spec, softmax(scores, -1), values)`` with the normalisation applied after the product.

    ``exp(scores - max)`` times the values, divided by the row sums: the division touches the ``[.., K]``
    output instead of the ``[.., S]`` weights, one pass fewer over the largest array. Every row must have a
    finite score (the causal diagonal guarantees it); the maximum carries no gradient (softmax does not
    depend on it).
    """
    top = jax.lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True))
    e = jnp.exp(scores - top)
    y = jnp.einsum(spec, e, values)
    sums = jnp.sum(e, axis=-1)  # the rows' normalisers, laid out like the output without its last axis
    out_axes, row_axes = spec.split("->")[1], spec.split(",")[0][:-1]
    return y / jnp.einsum(f"{row_axes}->{out_axes[:-1]}", sums)[..., None]


def causal_attention(q: Array, k: Array, v: Array) -> Array:
    """Causal self-attention ``softmax(q k^T / sqrt(K) + mask) v`` over all positions: ``[T, H K]``.

    Args:
        q: ``[H, T, K]``, the queries, heads first.
        k: ``[G, T, K]``, the keys, ``G`` dividing ``H``: query head ``h = g (H / G) + r`` reads kv head ``g``
            (transformers' ``repeat_kv``), position ``t`` the positions ``s <= t``.
        v: ``[G, T, K]``, the values.

    Written out rather than ``jax.nn.dot_product_attention``, which computes in float32 whatever the input
    dtype, so that float64 runs stay float64.
    """
    H, T, K = q.shape
    G = k.shape[0]
    causal = jnp.tril(jnp.ones((T, T), dtype=bool))  # query t sees keys s <= t
    if G != H:  # the H / G query heads of a kv head as one block of rows: [G, (H / G) T, K], no copy
        q = q.reshape(G, (H // G) * T, K)
        causal = jnp.tile(causal, (H // G, 1))
    scores = jnp.einsum("gtk,gsk->gts", q / math.sqrt(K), k)
    y = softmax_weighted_sum(jnp.where(causal, scores, -jnp.inf), v, "gts,gsk->gtk")
    # Heads-first output, then one transpose: asking the product for [T, H, K] directly makes XLA compute it
    # transposed and copy it back.
    return y.reshape(H, T, K).transpose(1, 0, 2).reshape(T, H * K)


def cached_attention(
    q: Array, k: Array, v: Array, keys: Array, values: Array, position: Array, layer: Array | None = None
) -> tuple[Array, Array, Array]:
    """Attention of the single position ``position`` over a key/value cache: ``[H K]`` and the new cache.

    Writes this position's key and value into slot ``position``, then attends to the slots ``<= position``:
    one row of :func:`causal_attention`.

    Args:
        q: ``[H, K]``, the query.
        k: ``[G, K]``, this position's key.
        v: ``[G, K]``, this position's value.
        keys: one layer's cached keys ``[G, S, K]``, or with ``layer`` every layer's ``[L, G, S, K]``.
        values: the cached values, shaped as ``keys``.
        position: the slot to write (int32 scalar).
        layer: the layer (int32 scalar) of a stacked cache; ``None`` for a layer's own arrays.

    Returns:
        The attention output ``[H K]`` and the updated ``keys, values`` (shaped as given).
    """
    H, K = q.shape
    G = k.shape[0]
    zero = jnp.int32(0)
    if layer is None:
        start, k, v = (zero, position, zero), k[:, None], v[:, None]
    else:
        start, k, v = (layer, zero, position, zero), k[None, :, None], v[None, :, None]
    keys = jax.lax.dynamic_update_slice(keys, k, start)
    values = jax.lax.dynamic_update_slice(values, v, start)
    layer_keys, layer_values = (keys, values) if layer is None else (keys[layer], values[layer])  # [G, S, K]
    # The H / G query heads of a kv head as one row block; a plain batched matrix-vector product when G = H.
    r = "r" if G != H else ""
    q = q.reshape(G, H // G, K) if G != H else q
    scores = jnp.einsum(f"g{r}k,gsk->g{r}s", q / math.sqrt(K), layer_keys)  # [G, (H / G,) S]
    visible = jnp.arange(layer_keys.shape[1]) <= position
    y = softmax_weighted_sum(jnp.where(visible, scores, -jnp.inf), layer_values, f"g{r}s,gsk->g{r}k")
    return y.reshape(H * K), keys, values


def heads_first(u: Array) -> Array:
    """``[..., heads, K] -> [heads, ..., K]``: the layout :func:`causal_attention` and the cache use."""
    return jnp.moveaxis(u, -2, 0)


class CachedDecoder(DiscreteModel):
    """Base class of the cached causal decoders (the module docstring lists what a family supplies).

    A subclass sets ``family`` and ``config_class`` and implements the hooks; it inherits the constructor,
    :meth:`logits`, :meth:`initial`, :meth:`step`, :meth:`fit_cache` and ``repr``.

    Args:
        config: a ``config_class`` instance, or the dict of its fields (as saved by ``Config.to_dict``).
        temperature: divides the logits when sampling and scoring (``p_tau``).

    Attributes:
        config: the configuration.
        max_length: ``config.context_length``; longer sequences are refused.
    """

    family: str
    config_class: type
    windowed_cache = True
    scan_layers = False  # True: layers stacked on a leading axis, run with one lax.scan (see the module docstring)

    def __init__(self, config: Any, *, temperature: float = 1.0):
        if isinstance(config, Mapping):
            config = self.config_class(**config)
        self.init_config(config, self.config_class, temperature=temperature)
        self.max_length = config.context_length

    # --- the family's hooks -----------------------------------------------------------------------------------
    def embed_bos(self, params: PyTree) -> Array:
        """The input ``[D]`` at position 0 (BOS); its dtype is the cache's."""
        raise NotImplementedError

    def embed(self, params: PyTree, tokens: Array, positions: Array) -> Array:
        """The inputs ``[..., D]`` of ``tokens`` (int ``[...]``) at ``positions`` (``>= 1``, same shape)."""
        raise NotImplementedError

    def position_data(self, positions: Array, dtype: Any) -> Any:
        """What every block of a pass reads about its positions (``[T]`` or a scalar); default ``None``."""
        return None

    def layers(self, params: PyTree) -> Any:
        """The per-layer parameters: a sequence of trees, or (``scan_layers``) one tree stacked over layers."""
        raise NotImplementedError

    def block(self, p: PyTree, z: Array, data: Any, attend: Attend) -> Array:
        """One block on ``z`` ``[..., D]`` (``[T, D]`` scoring, ``[D]`` decoding): the new residual stream.

        ``attend(q, k, v)`` takes heads-first ``q`` ``[H, ..., K]`` and ``k``, ``v`` ``[G, ..., K]`` and returns
        the attention output ``[..., H K]`` (causal over the pass, or over the cache when decoding).
        """
        raise NotImplementedError

    def head(self, params: PyTree, z: Array) -> Array:
        """The logits ``[..., V]`` of the last residual stream ``z`` ``[..., D]``."""
        raise NotImplementedError

    # --- the two passes -----------------------------------------------------------------------------------
    def _parallel(self, params: PyTree, z: Array) -> Array:
        """Logits ``[T, V]`` of the inputs ``z`` ``[T, D]`` at positions ``0 .. T-1``: one causal pass."""
        data = self.position_data(jnp.arange(z.shape[0]), z.dtype)
        if self.scan_layers:
            z, _ = jax.lax.scan(lambda z, p: (self.block(p, z, data, causal_attention), None), z, self.layers(params))
        else:
            for p in self.layers(params):
                z = self.block(p, z, data, causal_attention)
        return self.head(params, z)

    def _decode(self, params: PyTree, cache: Cache, z: Array, position: Array) -> tuple[Cache, Array]:
        """Run the input ``z`` ``[D]`` at ``position`` through the layers: the new cache and logits ``[V]``."""
        data = self.position_data(position, z.dtype)

        def run_block(p, z, keys, values, layer):
            written = []

            def attend(q, k, v):
                y, *cache = cached_attention(q, k, v, keys, values, position, layer)
                written.extend(cache)
                return y

            z = self.block(p, z, data, attend)
            return z, *written

        if self.scan_layers:
            # The cache rides in the scan's carry so that the writes are in place.
            def body(carry, inputs):
                (z, keys, values), (p, layer) = carry, inputs
                return run_block(p, z, keys, values, layer), None

            layers = jnp.arange(self.config.num_layers, dtype=jnp.int32)
            (z, keys, values), _ = jax.lax.scan(body, (z, cache.keys, cache.values), (self.layers(params), layers))
        else:
            keys, values = list(cache.keys), list(cache.values)
            for i, p in enumerate(self.layers(params)):
                z, keys[i], values[i] = run_block(p, z, keys[i], values[i], None)
            keys, values = tuple(keys), tuple(values)
        return Cache(keys, values), self.head(params, z)

    # --- the model contract -----------------------------------------------------------------------------------
    def logits(self, params: PyTree, x: Array) -> Array:
        """``[T, V]`` logits of ``x_t`` given ``x_<t`` (BOS at position 0): one parallel causal pass."""
        if x.shape[0] > self.max_length:
            raise ValueError(
                f"`x` has {x.shape[0]} tokens, more than the model's context of {self.max_length} tokens."
            )
        self.check_params(params)
        T = x.shape[0]
        bos = self.embed_bos(params)[None]
        z = jnp.concatenate([bos, self.embed(params, x[:-1], jnp.arange(1, T))], axis=0)  # [T, D]
        return self._parallel(params, z)

    def initial(self, params: PyTree) -> tuple[Cache, Array]:
        """An empty cache with BOS written at position 0, and the logits ``[V]`` of ``x_1``."""
        self.check_params(params)
        c = self.config
        z = self.embed_bos(params)
        shape = (c.num_kv_heads, c.context_length + 1, c.head_size)
        if self.scan_layers:
            empty = jnp.zeros((c.num_layers, *shape), z.dtype)
        else:
            empty = tuple(jnp.zeros(shape, z.dtype) for _ in range(c.num_layers))
        return self._decode(params, Cache(empty, empty), z, jnp.zeros((), jnp.int32))

    def step(self, params: PyTree, carry: Cache, token: Array, position: Array) -> tuple[Cache, Array]:
        """Consume token ``x_{position+1}`` (0-based ``position``) at model position ``position + 1``.

        ``position`` must be ``< context_length`` (it is a traced index and cannot be checked here).
        """
        position = jnp.asarray(position, jnp.int32) + 1  # BOS holds position 0
        return self._decode(params, carry, self.embed(params, token, position), position)

    def fit_cache(self, carry: Cache, num_slots: int) -> Cache:
        """The cache cut or zero-padded to ``num_slots`` positions (the sampler grows it window by window)."""
        return jax.tree.map(lambda a: fit_slots(a, a.ndim - 2, num_slots), carry)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.config.to_dict().items())
        return f"{self.family}.Model({fields}, temperature={self.temperature})"


__all__ = ["Cache", "CachedDecoder", "cached_attention", "causal_attention", "heads_first", "softmax_weighted_sum"]
