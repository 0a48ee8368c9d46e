"""Private linear algebra shared by the exact Kalman modules (:mod:`._exact`, :mod:`._decomposition`).

Whitening of the observations, the Markov parameters ``H_l = C A^l K`` and their block Toeplitz matrix ``H``
(docs/mathematics.md §5), and the size checks every dense ``[T n_y, T n_y]`` computation runs before it
allocates anything.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from epjax.kalman._params import Params

Array = jax.Array

DENSE_MAX_BYTES = 2**31
"""Default memory budget of the dense methods (``max_bytes``): 2 GiB."""


def whiten(params: Params) -> Params:
    """Innovation form of ``L^{-1} y``: ``C <- L^{-1} C``, ``K <- K L``, ``S <- I``."""
    chol = jnp.linalg.cholesky(params.S)
    C = jsl.solve_triangular(chol, params.C, lower=True)
    K = params.K @ chol
    return Params(params.A, C, K, jnp.eye(params.S.shape[0], dtype=params.S.dtype))


def markov_parameters(params: Params, num_steps: int) -> Array:
    """``H_l`` for ``l = 0..T-1``: ``H_0 = I``, ``H_l = C A^l K``; shape ``[T, n_y, n_y]``."""
    n_y = params.C.shape[0]

    def step(CA, _):
        return CA @ params.A, CA @ params.K

    _, CAK = jax.lax.scan(step, params.C @ params.A, None, length=num_steps - 1)  # C A^l K, l = 1..T-1
    return jnp.concatenate([jnp.eye(n_y, dtype=params.A.dtype)[None], CAK], axis=0)


def block_toeplitz(blocks: Array) -> Array:
    """Block lower-triangular Toeplitz ``[T n, T n]`` with block ``(t, s) = blocks[t - s]`` for ``t >= s``."""
    num_steps, n, _ = blocks.shape
    lag = jnp.arange(num_steps)[:, None] - jnp.arange(num_steps)[None, :]
    full = jnp.where((lag >= 0)[:, :, None, None], blocks[jnp.clip(lag, 0)], 0.0)  # [T, T, n, n]
    return full.transpose(0, 2, 1, 3).reshape(num_steps * n, num_steps * n)


def format_bytes(num_bytes: float) -> str:
    """A byte count in the largest binary unit that keeps it at least 1 (``"97.7 KiB"``)."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if num_bytes >= size:
            return f"{num_bytes / size:.3g} {unit}"
    return f"{num_bytes:.0f} bytes"


def check_budget(name: str, value) -> float:
    """``value`` as a float when it is a positive number; a ``ValueError`` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not value > 0:
        raise ValueError(f"`{name}` must be a positive number, got {value!r}.")
    return float(value)


def check_dense_size(
    what: str, num_steps: int, obs_dim: int, dtype, copies: int, max_bytes: int, alternative: str
) -> None:
    """Refuse a dense computation whose ``copies`` arrays of ``[T n_y, T n_y]`` entries exceed ``max_bytes``.

    Called before anything is allocated or compiled. ``copies`` is the number of such arrays alive at the peak,
    from XLA's memory analysis of the compiled function (``jit(...).lower(...).compile().memory_analysis()``).
    """
    max_bytes = check_budget("max_bytes", max_bytes)
    size = num_steps * obs_dim
    need = copies * size**2 * np.dtype(dtype).itemsize
    if need > max_bytes:
        raise ValueError(
            f"`num_steps` = {num_steps} is too large for {what}: with n_y = {obs_dim} it needs {copies} dense "
            f"[T n_y, T n_y] = [{size}, {size}] {np.dtype(dtype).name} arrays, about {format_bytes(need)}, over "
            f"the memory budget max_bytes = {format_bytes(max_bytes)}. {alternative}"
        )
