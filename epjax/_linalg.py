"""Small dense linear algebra tuned for the bodies of ``lax.scan`` loops."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

# Below this size a product written as broadcast-multiply-sum lets XLA fuse a whole scan step into a few
# loop kernels; a dot per product costs a library call each, which dominates for the tiny matrices of a
# state-space model (measured: ~20x faster recursions for 4 x 4 on CPU, benchmarks/kalman.py).
_FUSE_MAX = 16


def mm(a: Array, b: Array) -> Array:
    """``a @ b`` for matrices ``[..., i, k] @ [..., k, j]``, fused elementwise when the matrices are small."""
    if max(a.shape[-2:] + b.shape[-1:]) <= _FUSE_MAX:
        return jnp.sum(a[..., :, :, None] * b[..., None, :, :], axis=-2)
    return a @ b


def mv(a: Array, x: Array) -> Array:
    """``a @ x`` for a matrix ``[i, k]`` and a vector ``[k]``, fused elementwise when small.

    Written as the sum of ``k`` scaled columns rather than a multiply-and-reduce: under ``jax.vmap`` (a batch
    of sequences) the reduction over a short minor axis vectorises poorly on CPU, while the column sum stays
    elementwise over the batch (measured for a 4 x 4 filter over 256 sequences: 4x faster than the
    reduction, 1.5x faster than a dot; as fast as either for one sequence).
    """
    if max(a.shape) <= _FUSE_MAX:
        out = a[:, 0] * x[0]
        for k in range(1, a.shape[1]):
            out = out + a[:, k] * x[k]
        return out
    return a @ x
