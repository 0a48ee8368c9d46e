"""Time reversals: of tokens, of fixed-length blocks, and of delimiter-defined segments (docs/mathematics.md §2-3).

Each is a bijection on sequences of a fixed length (for segments: on sequences whose last token ends a
block), so the fluctuation theorem E[exp(-sigma)] = 1 holds for the EP it defines.
"""

from __future__ import annotations

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


def reverse_blocks(x: Array, block_size: int) -> Array:
    """Reverse the order of consecutive blocks of ``block_size`` steps, keeping the order inside each block.

    ``(a, b, c | d, e, f) -> (d, e, f | a, b, c)`` for ``block_size = 3`` (docs/mathematics.md §3, fixed-length blocks).

    Args:
        x: sequence of shape ``[T]`` or ``[T, d]``; ``T`` must be a multiple of ``block_size``.
        block_size: the block length ``l >= 1``.

    Returns:
        The block-reversed sequence, same shape and dtype.

    >>> import jax.numpy as jnp
    >>> reverse_blocks(jnp.arange(6), 3).tolist()
    [3, 4, 5, 0, 1, 2]
    """
    _check_sequence("x", x)
    block_size = check_positive_int("block_size", block_size)
    x = jnp.asarray(x)
    num_steps = x.shape[0]
    if num_steps % block_size:
        raise ValueError(
            f"`block_size` must divide the sequence length so that blocks tile it; got block_size={block_size} "
            f"for a sequence of length {num_steps}."
        )
    blocks = x.reshape((num_steps // block_size, block_size) + x.shape[1:])  # [T/l, l, ...]
    return jnp.flip(blocks, axis=0).reshape(x.shape)


def reverse_segments(x: Array, ends: Array) -> Array:
    """Reverse the order of delimiter-defined segments (e.g. sentences), keeping each segment's inside order.

    Args:
        x: sequence of shape ``[T]`` or ``[T, d]``.
        ends: bool ``[T]``, True on the last token of each segment. ``ends[-1]`` must be True, otherwise the
            map is not a bijection (docs/mathematics.md §3).

    Returns:
        The segment-reversed sequence, same shape and dtype.

    Under ``jit`` the values of ``ends`` cannot be checked; there a missing final end is treated as if the
    last token ended a segment. Callers that trace this function must guarantee ``ends[-1]`` themselves
    (the text tools truncate each sequence after its last delimiter for this reason).

    >>> import jax.numpy as jnp
    >>> reverse_segments(jnp.arange(5), jnp.array([False, True, False, False, True])).tolist()
    [2, 3, 4, 0, 1]
    """
    _check_sequence("x", x)
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
    ends = jnp.asarray(ends, dtype=bool).at[-1].set(True)
    idx = jnp.arange(num_steps)
    # start[t]: first index of t's segment = 1 + the last end strictly before t (0 if none).
    prev_end = jnp.concatenate([jnp.array([-1]), jnp.where(ends[:-1], idx[:-1], -1)])
    start = jax.lax.cummax(prev_end) + 1
    # stop[t]: last index of t's segment = the first end at or after t.
    stop = jax.lax.cummin(jnp.where(ends, idx, num_steps - 1), reverse=True)
    # Segments after t's one (total length T - 1 - stop) come first, then t's offset inside its segment.
    new_pos = (num_steps - 1 - stop) + (idx - start)
    return jnp.zeros_like(x).at[new_pos].set(x, unique_indices=True)
