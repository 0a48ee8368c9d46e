"""The Kalman innovation model as a generator: per-step log-likelihoods and sampling (docs/mathematics.md §5)."""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from epjax._checks import as_real_array, check_finite, check_num_steps, describe
from epjax._linalg import mv
from epjax.kalman._params import Params, as_params

Array = jax.Array


def _predict(params: Params, xhat: Array, e: Array) -> Array:
    """One-step prediction ``xhat_{t+1|t} = A (xhat_{t|t-1} + K e_t)``."""
    return mv(params.A, xhat + mv(params.K, e))


def _gaussian_log_density(params: Params, e: Array) -> Array:
    """``ln N(e_t; 0, S)`` for every row of ``e`` ``[T, n_y]``, via the Cholesky factor of ``S``."""
    chol = jnp.linalg.cholesky(params.S)
    # One n_y x n_y triangular solve, then a matmul: much faster than a triangular solve with T right-hand
    # sides for long or batched sequences (benchmarks/kalman.py).
    chol_inv = jsl.solve_triangular(chol, jnp.eye(chol.shape[0], dtype=chol.dtype), lower=True)
    white = e @ chol_inv.T  # [T, n_y], rows L^{-1} e_t
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    n_y = e.shape[-1]
    return -0.5 * (jnp.sum(white**2, axis=-1) + log_det + n_y * math.log(2.0 * math.pi))


def innovations(params: Params, y: Array) -> Array:
    """Innovations ``e_t = y_t - C xhat_{t|t-1}`` of the steady-state filter started at ``xhat_{1|0} = 0``.

    Args:
        params: the innovation model.
        y: observations ``[T, n_y]``.

    Returns:
        ``[T, n_y]`` innovations (the whitening filter ``H^{-1} y``).
    """
    params = as_params(params)
    return _innovations(params, _check_observations(params, y))


def _innovations(params: Params, y: Array) -> Array:
    def step(xhat, y_t):
        e = y_t - mv(params.C, xhat)
        return _predict(params, xhat, e), e

    xhat0 = jnp.zeros(params.A.shape[0], dtype=y.dtype)
    _, e = jax.lax.scan(step, xhat0, y)
    return e


def _check_observations(params: Params, y) -> Array:
    n_y = params.C.shape[0]
    y = as_real_array("y", y)  # None, strings, ragged lists, booleans and complex values are refused by name
    if np.ndim(y) != 2 or np.shape(y)[1] != n_y:
        raise ValueError(f"`y` must have shape [T, {n_y}] (T steps of {n_y} observations), got {describe(y)}.")
    if np.shape(y)[0] < 1:
        raise ValueError(f"`y` must hold at least one time step, got shape {np.shape(y)}.")
    if not jnp.issubdtype(y.dtype, jnp.floating):
        raise ValueError(f"`y` must be a float array, got dtype {y.dtype}.")
    check_finite("y", y)  # concrete observations only; under jit the caller guarantees finite data
    return jnp.asarray(y, dtype=params.A.dtype)


def log_probs(params: Params, y: Array) -> Array:
    """Per-step log-likelihoods ``ln p(y_t | y_<t) = ln N(e_t; 0, S)`` (docs/mathematics.md §5).

    The steady-state filter runs as one ``lax.scan`` from ``xhat_{1|0} = 0``; the Gaussian densities use the
    Cholesky factor of ``S`` (no inverse). Pure and jit-able.

    Args:
        params: the innovation model.
        y: observations ``[T, n_y]``.

    Returns:
        ``[T]`` per-step log-densities, in the dtype of ``params``.

    >>> import jax.numpy as jnp
    >>> p = Params(A=jnp.eye(1) * 0.5, C=jnp.eye(1), K=jnp.eye(1), S=jnp.eye(1))
    >>> [round(v, 4) for v in log_probs(p, jnp.zeros((3, 1))).tolist()]
    [-0.9189, -0.9189, -0.9189]
    """
    params = as_params(params)
    y = _check_observations(params, y)
    return _log_probs(params, y)


@jax.jit
def _log_probs(params: Params, y: Array) -> Array:
    return _gaussian_log_density(params, _innovations(params, y))


def sample_with_log_probs(key: Array, params: Params, num_steps: int) -> tuple[Array, Array]:
    """One trajectory ``y`` ``[T, n_y]`` from the innovation model, with its per-step log-likelihoods ``[T]``.

    ``e_t = L z_t`` with ``S = L L^T`` and ``z_t ~ N(0, I)``; ``y_t = C xhat_t + e_t``;
    ``xhat_{t+1} = A (xhat_t + K e_t)``, ``xhat_1 = 0``.
    """
    params = as_params(params)
    num_steps = check_num_steps(num_steps)
    return _sample(key, params, num_steps)


def sample(key: Array, params: Params, num_steps: int) -> Array:
    """One trajectory ``y`` ``[T, n_y]`` from the innovation model (ancestral sampling, docs/mathematics.md §5).

    Args:
        key: a ``jax.random`` key.
        params: the innovation model.
        num_steps: ``T >= 1``.

    Returns:
        ``[T, n_y]`` observations in the dtype of ``params``.
    """
    return sample_with_log_probs(key, params, num_steps)[0]


@partial(jax.jit, static_argnames="num_steps")
def _sample(key: Array, params: Params, num_steps: int) -> tuple[Array, Array]:
    chol = jnp.linalg.cholesky(params.S)
    z = jax.random.normal(key, (num_steps, params.C.shape[0]), dtype=params.A.dtype)
    e = z @ chol.T

    def step(xhat, e_t):
        y_t = mv(params.C, xhat) + e_t
        return _predict(params, xhat, e_t), y_t

    _, y = jax.lax.scan(step, jnp.zeros(params.A.shape[0], dtype=params.A.dtype), e)
    return y, _gaussian_log_density(params, e)


class KalmanModel:
    """The Kalman innovation family as an epjax contract object (continuous outputs, ``vocab_size = None``).

    Use the module-level instance :data:`epjax.kalman.model`.
    """

    vocab_size = None

    def log_probs(self, params: Params, y: Array) -> Array:
        """See :func:`epjax.kalman.log_probs`."""
        return log_probs(params, y)

    def sample(self, key: Array, params: Params, num_steps: int) -> Array:
        """See :func:`epjax.kalman.sample`."""
        return sample(key, params, num_steps)

    def sample_with_log_probs(self, key: Array, params: Params, num_steps: int) -> tuple[Array, Array]:
        """See :func:`epjax.kalman.sample_with_log_probs`."""
        return sample_with_log_probs(key, params, num_steps)

    def check_params(self, params: Params) -> None:
        """Raise ``ValueError`` unless ``params`` is a valid innovation model (see :func:`as_params`)."""
        as_params(params)

    # The family has no configuration: every instance is the same value (equal, one hash, one jit cache entry).
    def __eq__(self, other: object) -> bool:
        return isinstance(other, KalmanModel)

    def __hash__(self) -> int:
        return hash(KalmanModel)

    def __repr__(self) -> str:
        return "epjax.kalman.model"


model = KalmanModel()
