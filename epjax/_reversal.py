"""Time reversals: of tokens, of fixed-length blocks, and of delimiter-defined segments (docs/mathematics.md §2-3, §9).

Each is a bijection on sequences of a fixed length (for segments: on sequences whose last token ends a
block), so the fluctuation theorem E[exp(-sigma)] = 1 holds for the EP it defines. The coarser reorderings of
the block-scale analysis are options of the same functions: fixed blocks with a shorter tail
(``reverse_blocks(..., ragged=True)``) and groups of ``k`` consecutive segments (``reverse_segments(...,
group=k)``); :func:`segment_reversal` turns a per-vocabulary delimiter mask into a reversal that any estimator
accepts and that is a bijection on every sequence of a fixed length.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from epjax._checks import check_positive_int, describe, is_concrete

Array = jax.Array


def _check_sequence(name: str, x) -> None:
    if np.ndim(x) < 1:
        raise ValueError(f"`{name}` must have a leading time axis (shape [T] or [T, d]), got {describe(x)}.")
    if np.shape(x)[0] < 1:
        raise ValueError(f"`{name}` must hold at least one time step, got shape {np.shape(x)}.")


def reverse_tokens(x: Array) -> Array:
    """Reverse the order of time steps: ``x[::-1]`` along the leading (time) axis.

    Args:
        x: sequence of shape ``[T]`` (tokens) or ``[T, d]`` (vector outputs).

    Returns:
        ``x`` with its time axis reversed, same shape and dtype.

    >>> import jax.numpy as jnp
    >>> reverse_tokens(jnp.array([1, 2, 3])).tolist()
    [3, 2, 1]
    """
    _check_sequence("x", x)
    return jnp.flip(jnp.asarray(x), axis=0)


def reverse_blocks(x: Array, block_size: int, *, ragged: bool = False) -> Array:
    """Reverse the order of consecutive blocks of ``block_size`` steps, keeping the order inside each block.

    ``(a, b, c | d, e, f) -> (d, e, f | a, b, c)`` for ``block_size = 3`` (docs/mathematics.md §3, fixed-length blocks).
    With ``ragged=True`` the length need not be a multiple of ``l``: the blocks are ``[0, l), [l, 2l), ...`` and
    a shorter tail ``[m l, T)``, which comes first after the reversal (docs/mathematics.md §9). For a fixed ``T``
    this is a fixed permutation of positions, so a bijection of the sequences of length ``T``; its inverse cuts
    the shorter block first. ``l = 1`` is token reversal, ``l >= T`` the identity.

    Args:
        x: sequence of shape ``[T]`` or ``[T, d]``; ``T`` must be a multiple of ``block_size`` unless ``ragged``.
        block_size: the block length ``l >= 1``.
        ragged: allow a shorter last block.

    Returns:
        The block-reversed sequence, same shape and dtype.

    >>> import jax.numpy as jnp
    >>> reverse_blocks(jnp.arange(6), 3).tolist()
    [3, 4, 5, 0, 1, 2]
    >>> reverse_blocks(jnp.arange(7), 3, ragged=True).tolist()
    [6, 3, 4, 5, 0, 1, 2]
    """
    _check_sequence("x", x)
    block_size = check_positive_int("block_size", block_size)
    if not isinstance(ragged, bool):
        raise ValueError(f"`ragged` must be True or False, got {ragged!r}.")
    x = jnp.asarray(x)
    num_steps = x.shape[0]
    if num_steps % block_size:
        if not ragged:
            raise ValueError(
                f"`block_size` must divide the sequence length so that blocks tile it; got block_size={block_size} "
                f"for a sequence of length {num_steps} (ragged=True allows a shorter last block)."
            )
        return x[jnp.asarray(_ragged_block_order(num_steps, block_size))]
    blocks = x.reshape((num_steps // block_size, block_size) + x.shape[1:])  # [T/l, l, ...]
    return jnp.flip(blocks, axis=0).reshape(x.shape)


def _ragged_block_order(num_steps: int, block_size: int) -> np.ndarray:
    """The source index of each output position of the ragged block reversal (a permutation of ``range(T)``)."""
    starts = list(range(0, num_steps, block_size))
    return np.concatenate([np.arange(s, min(s + block_size, num_steps)) for s in reversed(starts)])


def group_ends(ends: Array, group: int) -> Array:
    """Traceable: the ends of groups of ``group`` consecutive segments, counted from the start.

    ``ends`` marks the last token of each segment; the result keeps every ``group``-th of them (the 1st group
    ends at the ``group``-th end, ...). The last token stays an end only if it was one: a last, shorter group is
    closed by the caller (:func:`reverse_segments` treats the final token as an end).

    >>> import jax.numpy as jnp
    >>> group_ends(jnp.array([1, 0, 1, 1, 0, 1], bool), 2).astype(int).tolist()
    [0, 0, 1, 0, 0, 1]
    """
    ends = jnp.asarray(ends, dtype=bool)
    return ends & (jnp.cumsum(ends) % group == 0)


def reverse_segments(x: Array, ends: Array, *, group: int = 1) -> Array:
    """Reverse the order of delimiter-defined segments (e.g. sentences), keeping each segment's inside order.

    With ``group = k`` the segments are first gathered into consecutive groups of ``k`` (counted from the start;
    the last group may be shorter) and the order of the groups is reversed (docs/mathematics.md §9); ``k = 1``
    is the plain segment reversal.

    Args:
        x: sequence of shape ``[T]`` or ``[T, d]``.
        ends: bool ``[T]``, True on the last token of each segment. ``ends[-1]`` must be True, otherwise the
            map is not a bijection (docs/mathematics.md §3).
        group: segments per reversed block, ``k >= 1``.

    Returns:
        The segment-reversed sequence, same shape and dtype.

    Under ``jit`` the values of ``ends`` cannot be checked; there a missing final end is treated as if the
    last token ended a segment. Callers that trace this function must guarantee ``ends[-1]`` themselves
    (the text tools truncate each sequence after its last delimiter for this reason).

    >>> import jax.numpy as jnp
    >>> reverse_segments(jnp.arange(5), jnp.array([False, True, False, False, True])).tolist()
    [2, 3, 4, 0, 1]
    >>> reverse_segments(jnp.arange(5), jnp.array([True, False, True, False, True]), group=2).tolist()
    [3, 4, 0, 1, 2]
    """
    _check_sequence("x", x)
    group = check_positive_int("group", group)
    x = jnp.asarray(x)
    num_steps = x.shape[0]
    if np.shape(ends) != (num_steps,):
        raise ValueError(f"`ends` must have shape ({num_steps},) to match `x`, got {describe(ends)}.")
    if is_concrete(ends):
        ends_np = np.asarray(ends)
        if ends_np.dtype != np.bool_:
            raise ValueError(f"`ends` must be a boolean array, got dtype {ends_np.dtype}.")
        if not ends_np[-1]:
            raise ValueError(
                "`ends` must mark the last token as a segment end (ends[-1] must be True) so that segment "
                f"reversal is a bijection; got ends[-1] = False (ends = {ends_np.astype(int).tolist()})."
            )
    ends = jnp.asarray(ends, dtype=bool)
    if group > 1:
        ends = group_ends(ends, group)
    ends = ends.at[-1].set(True)
    idx = jnp.arange(num_steps)
    # start[t]: first index of t's segment = 1 + the last end strictly before t (0 if none).
    prev_end = jnp.concatenate([jnp.array([-1]), jnp.where(ends[:-1], idx[:-1], -1)])
    start = jax.lax.cummax(prev_end) + 1
    # stop[t]: last index of t's segment = the first end at or after t.
    stop = jax.lax.cummin(jnp.where(ends, idx, num_steps - 1), reverse=True)
    # Segments after t's one (total length T - 1 - stop) come first, then t's offset inside its segment.
    new_pos = (num_steps - 1 - stop) + (idx - start)
    return jnp.zeros_like(x).at[new_pos].set(x, unique_indices=True)


def segment_reversal(delimiters: Any, *, group: int = 1) -> Callable[[Array], Array]:
    """The segment reversal of a per-vocabulary delimiter mask, as a reversal any estimator accepts.

    A token ``v`` ends a segment when ``delimiters[v]`` is True (for text: the tokens ending a sentence). The
    returned ``x -> x'`` reverses the order of the *complete* segments of ``x`` (in groups of ``group``) and keeps
    an incomplete tail (the tokens after the last delimiter) in place at the end. Because the delimiters are a
    property of the tokens, ``x'`` has the same complete segments and the same tail as ``x``, so the map is a
    bijection of the sequences of any fixed length ``T`` (its inverse regroups from the start with the shorter
    group first), and ``E[exp(-sigma)] = 1`` and ``S >= 0`` hold exactly, e.g. under
    :func:`epjax.exact_entropy_production`. This differs from the EP paper's text protocol, which truncates each
    sample after its own last sentence end (:mod:`epjax.text`); on sequences ending with a delimiter the two agree.

    Args:
        delimiters: bool ``[V]``, one entry per token id.
        group: segments per reversed block, ``k >= 1``.

    Returns:
        A traceable function ``x [T] -> x' [T]``.

    >>> import jax.numpy as jnp
    >>> reverse = segment_reversal(jnp.array([False, False, True]), group=1)   # token 2 ends a segment
    >>> reverse(jnp.array([0, 2, 1, 1, 2, 0])).tolist()                        # (0 2)(1 1 2) 0 -> (1 1 2)(0 2) 0
    [1, 1, 2, 0, 2, 0]
    """
    mask = np.asarray(delimiters)
    if mask.ndim != 1 or mask.dtype != np.bool_ or mask.size < 1:
        raise ValueError(f"`delimiters` must be a boolean mask [V] over the vocabulary, got {describe(delimiters)}.")
    group = check_positive_int("group", group)
    table = jnp.asarray(mask)

    def reverse(x: Array) -> Array:
        _check_sequence("x", x)
        x = jnp.asarray(x)
        if x.ndim != 1 or not jnp.issubdtype(x.dtype, jnp.integer):
            raise ValueError(f"`x` must be int token ids [T] for a delimiter mask, got {describe(x)}.")
        ends = table[x]
        kept = jnp.max(jnp.where(ends, jnp.arange(x.shape[0]) + 1, 0))  # tokens up to the last delimiter
        return reverse_prefix(x, kept, ends, group=group, pad=x)

    return reverse


def reverse_prefix(x: Array, kept: Array, ends: Array, *, group: int = 1, block_size: int | None = None, pad=None):
    """Traceable: the first ``kept`` steps of ``x`` reversed by segments (or fixed blocks), the rest from ``pad``.

    ``reverse_segments(x[:kept], ends[:kept] with its last set, group=group)`` -- or, with ``block_size = l``,
    ``reverse_blocks(x[:kept], l, ragged=True)`` -- at positions ``[0, kept)`` of a ``[T]`` result whose positions
    ``[kept, T)`` hold ``pad`` (zeros by default; ``pad=x`` keeps ``x``'s tail in place). One static shape serves
    every ``kept``, so a compiled batch handles sequences truncated at different points.

    Args:
        x: sequence ``[T]`` or ``[T, d]``.
        kept: int scalar in ``[0, T]``, the length of the prefix that is reordered.
        ends: bool ``[T]`` segment ends (ignored with ``block_size``).
        group: segments per reversed block.
        block_size: fixed blocks of this length instead of segments (a shorter last block allowed).
        pad: ``[T]`` values for positions ``[kept, T)``; default zeros.

    Returns:
        The reordered sequence ``[T]``.
    """
    x = jnp.asarray(x)
    num_steps = x.shape[0]
    idx = jnp.arange(num_steps)
    if block_size is not None:
        ends = idx % block_size == block_size - 1
    elif group > 1:
        ends = group_ends(ends, group)
    # The prefix's last token ends the last block; the tail after it becomes one more segment, which the reversal
    # puts first; rolling it back to the end leaves the reordered prefix at the front.
    ends = jnp.asarray(ends, dtype=bool) | (idx == kept - 1)
    y = jnp.roll(reverse_segments(x, ends.at[-1].set(True)), kept - num_steps, axis=0)
    inside = (idx < kept).reshape((num_steps,) + (1,) * (x.ndim - 1))
    return jnp.where(inside, y, jnp.zeros_like(x) if pad is None else pad)
