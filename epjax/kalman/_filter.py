"""The Kalman innovation model as a generator: per-step log-likelihoods and sampling (docs/mathematics.md §5).

Two ways through time, equal to round-off (docs/mathematics.md §12):

* ``method="sequential"`` (default): one ``lax.scan``, ``T`` dependent steps of ``O(n^2)``.
* ``method="associative"``: the filter is the time-invariant affine recurrence
  ``xhat_{t+1} = F xhat_t + G y_t`` (``F = A (I - K C)``, ``G = A K``), and sampling is
  ``xhat_{t+1} = A xhat_t + G e_t`` with ``e`` drawn up front: a parallel prefix scan of the affine maps
  ``x -> M x + b_t`` (:func:`affine_prefix`), ``ceil(log2 T)`` rounds of one ``[T, n] x [n, n]`` product each.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from epjax._checks import as_real_array, check_finite, check_num_steps, describe
from epjax._linalg import mm, mv
from epjax.kalman._params import Params, as_params

Array = jax.Array

METHODS = ("sequential", "associative")


def check_method(method: str) -> str:
    """``method`` if it is one of :data:`METHODS`, else a ``ValueError`` naming the argument and the choices."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
    return method


def affine_prefix(M: Array, b: Array) -> Array:
    """All states of ``x_t = M x_{t-1} + b_t``, ``t = 0..T-1``, from ``x_{-1} = 0``, by a parallel prefix scan.

    ``x_t = sum_{s <= t} M^{t-s} b_s``. A non-zero initial state ``x_0`` is passed as ``b_0 = x_0`` (the map of
    step 0 acts on ``x_{-1} = 0``, so only its offset survives): the term an associative scan that starts from
    step 1 would drop. The maps ``x -> M x + b_t`` compose associatively, and with one ``M`` for every step a
    composition of ``k`` of them has linear part ``M^k``: round ``j`` (Hillis-Steele) sets
    ``b_t <- b_t + M^{2^j} b_{t - 2^j}`` for ``t >= 2^j`` and squares the power, so after ``ceil(log2 T)`` rounds
    ``b_t`` holds ``x_t``. Work ``O(T n^2 log T)``, depth ``O(log T)``, memory ``O(T n)``: no per-step
    matrices (a generic ``lax.associative_scan`` of ``(M_t, b_t)`` pairs stores ``T`` of them and multiplies
    ``n x n`` matrices, ``O(T n^3)``). Products at ``Precision.HIGHEST`` (no reduced-precision passes on
    accelerators).

    Args:
        M: ``[n, n]`` transition, the same at every step.
        b: ``[T, n]`` offsets (row 0 includes the initial state).

    Returns:
        ``[T, n]``, row ``t`` the state ``x_t``.

    >>> import jax.numpy as jnp
    >>> affine_prefix(jnp.eye(1) * 0.5, jnp.ones((4, 1)))[:, 0].tolist()
    [1.0, 1.5, 1.75, 1.875]
    """
    T = b.shape[0]
    power = M
    shift = 1
    while shift < T:
        # Rows t >= shift add M^shift x (partial sum ending at t - shift); the first `shift` rows are final.
        moved = jnp.matmul(b[:-shift], power.T, precision=jax.lax.Precision.HIGHEST)
        b = jnp.concatenate([b[:shift], b[shift:] + moved])
        shift *= 2
        if shift < T:
            power = jnp.matmul(power, power, precision=jax.lax.Precision.HIGHEST)
    return b


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


def innovations(params: Params, y: Array, *, method: str = "sequential") -> Array:
    """Innovations ``e_t = y_t - C xhat_{t|t-1}`` of the steady-state filter started at ``xhat_{1|0} = 0``.

    Args:
        params: the innovation model.
        y: observations ``[T, n_y]``.
        method: ``"sequential"`` (one ``lax.scan``) or ``"associative"`` (a parallel prefix scan of
            ``xhat_{t+1} = A (I - K C) xhat_t + A K y_t``, depth ``O(log T)``); equal to round-off.

    Returns:
        ``[T, n_y]`` innovations (the whitening filter ``H^{-1} y``).

    Raises:
        ValueError: on invalid ``params``, ``y`` or ``method``.
    """
    params = as_params(params)
    method = check_method(method)
    return _innovations(params, _check_observations(params, y), method)


def _innovations(params: Params, y: Array, method: str = "sequential", xhat0: Array | None = None) -> Array:
    """Innovations from the predicted state ``xhat0`` (``xhat_{1|0}``; ``None`` is the model's ``0``)."""
    if xhat0 is None:
        xhat0 = jnp.zeros(params.A.shape[0], dtype=y.dtype)
    if method == "associative":
        F = params.A - mm(params.A, mm(params.K, params.C))
        G = mm(params.A, params.K)
        # b_0 = xhat_{1|0}, b_t = G y_t for the step into t + 1: the prefix scan gives every xhat_{t|t-1}.
        b = jnp.concatenate([xhat0[None], jnp.matmul(y[:-1], G.T, precision=jax.lax.Precision.HIGHEST)])
        xhat = affine_prefix(F, b)
        return y - jnp.matmul(xhat, params.C.T, precision=jax.lax.Precision.HIGHEST)

    def step(xhat, y_t):
        e = y_t - mv(params.C, xhat)
        return _predict(params, xhat, e), e

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


def log_probs(params: Params, y: Array, *, method: str = "sequential") -> Array:
    """Per-step log-likelihoods ``ln p(y_t | y_<t) = ln N(e_t; 0, S)`` (docs/mathematics.md §5).

    The steady-state filter runs from ``xhat_{1|0} = 0``; the Gaussian densities use the Cholesky factor of
    ``S`` (no inverse). Pure, jit-able and differentiable by either method.

    Methods (equal to round-off; docs/mathematics.md §12):

    * ``"sequential"`` (default): one ``lax.scan``, ``T`` dependent steps of ``O(n^2)`` work.
    * ``"associative"``: the innovations of the time-invariant affine recurrence
      ``xhat_{t+1} = A (I - K C) xhat_t + A K y_t`` by a parallel prefix scan (:func:`affine_prefix`):
      ``O(T n^2 log T)`` work in ``ceil(log2 T)`` rounds, ``O(T n)`` memory. Pays off where the ``T`` steps
      would otherwise run one after another on a parallel device (long ``T``, few sequences); on a CPU the
      sequential scan is usually faster (benchmarks/scan.py).

    Args:
        params: the innovation model.
        y: observations ``[T, n_y]``.
        method: ``"sequential"`` or ``"associative"``.

    Returns:
        ``[T]`` per-step log-densities, in the dtype of ``params``.

    Raises:
        ValueError: on invalid ``params``, ``y`` or ``method``.

    >>> import jax.numpy as jnp
    >>> p = Params(A=jnp.eye(1) * 0.5, C=jnp.eye(1), K=jnp.eye(1), S=jnp.eye(1))
    >>> [round(v, 4) for v in log_probs(p, jnp.zeros((3, 1))).tolist()]
    [-0.9189, -0.9189, -0.9189]
    """
    params = as_params(params)
    method = check_method(method)
    y = _check_observations(params, y)
    return _log_probs(params, y, method)


@partial(jax.jit, static_argnames="method")
def _log_probs(params: Params, y: Array, method: str = "sequential") -> Array:
    return _gaussian_log_density(params, _innovations(params, y, method))


def sample_with_log_probs(
    key: Array, params: Params, num_steps: int, *, method: str = "sequential"
) -> tuple[Array, Array]:
    """One trajectory ``y`` ``[T, n_y]`` from the innovation model, with its per-step log-likelihoods ``[T]``.

    ``e_t = L z_t`` with ``S = L L^T`` and ``z_t ~ N(0, I)``; ``y_t = C xhat_t + e_t``;
    ``xhat_{t+1} = A (xhat_t + K e_t)``, ``xhat_1 = 0``. ``method="associative"`` computes the states by a
    parallel prefix scan of ``xhat_{t+1} = A xhat_t + A K e_t`` (:func:`affine_prefix`); the same draw as
    ``"sequential"`` to round-off.
    """
    params = as_params(params)
    num_steps = check_num_steps(num_steps)
    return _sample(key, params, num_steps, check_method(method))


def sample(key: Array, params: Params, num_steps: int, *, method: str = "sequential") -> Array:
    """One trajectory ``y`` ``[T, n_y]`` from the innovation model (ancestral sampling, docs/mathematics.md §5).

    Args:
        key: a ``jax.random`` key.
        params: the innovation model.
        num_steps: ``T >= 1``.
        method: ``"sequential"`` (one ``lax.scan``) or ``"associative"`` (parallel prefix scan); the same
            trajectory to round-off.

    Returns:
        ``[T, n_y]`` observations in the dtype of ``params``.
    """
    return sample_with_log_probs(key, params, num_steps, method=method)[0]


@partial(jax.jit, static_argnames=("num_steps", "method"))
def _sample(key: Array, params: Params, num_steps: int, method: str = "sequential") -> tuple[Array, Array]:
    chol = jnp.linalg.cholesky(params.S)
    z = jax.random.normal(key, (num_steps, params.C.shape[0]), dtype=params.A.dtype)
    e = z @ chol.T
    return _outputs(params, e, method), _gaussian_log_density(params, e)


def _outputs(params: Params, e: Array, method: str = "sequential", xhat0: Array | None = None) -> Array:
    """Observations ``y_t = C xhat_t + e_t`` driven by innovations ``e`` from ``xhat_1 = xhat0`` (``None``: 0)."""
    if xhat0 is None:
        xhat0 = jnp.zeros(params.A.shape[0], dtype=e.dtype)
    if method == "associative":
        b = jnp.concatenate(
            [xhat0[None], jnp.matmul(e[:-1], mm(params.A, params.K).T, precision=jax.lax.Precision.HIGHEST)]
        )
        xhat = affine_prefix(params.A, b)
        return jnp.matmul(xhat, params.C.T, precision=jax.lax.Precision.HIGHEST) + e

    def step(xhat, e_t):
        y_t = mv(params.C, xhat) + e_t
        return _predict(params, xhat, e_t), y_t

    _, y = jax.lax.scan(step, xhat0, e)
    return y


class KalmanModel:
    """The Kalman innovation family as an epjax contract object (continuous outputs, ``vocab_size = None``).

    Use the module-level instance :data:`epjax.kalman.model` (sequential scans), or
    ``KalmanModel(method="associative")`` to have every estimator sample and score through parallel prefix
    scans (same numbers to round-off; see :func:`epjax.kalman.log_probs`).

    Args:
        method: ``"sequential"`` (default) or ``"associative"``.
    """

    vocab_size = None

    def __init__(self, method: str = "sequential"):
        self.method = check_method(method)

    def log_probs(self, params: Params, y: Array) -> Array:
        """See :func:`epjax.kalman.log_probs`."""
        return log_probs(params, y, method=self.method)

    def sample(self, key: Array, params: Params, num_steps: int) -> Array:
        """See :func:`epjax.kalman.sample`."""
        return sample(key, params, num_steps, method=self.method)

    def sample_with_log_probs(self, key: Array, params: Params, num_steps: int) -> tuple[Array, Array]:
        """See :func:`epjax.kalman.sample_with_log_probs`."""
        return sample_with_log_probs(key, params, num_steps, method=self.method)

    def check_params(self, params: Params) -> None:
        """Raise ``ValueError`` unless ``params`` is a valid innovation model (see :func:`as_params`)."""
        as_params(params)

    # The method is the only configuration: instances with the same method are the same value (equal, one hash,
    # one jit cache entry when passed as a static argument), and differ otherwise.
    def __eq__(self, other: object) -> bool:
        return isinstance(other, KalmanModel) and other.method == self.method

    def __hash__(self) -> int:
        return hash((KalmanModel, self.method))

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({"method": "sequential", **state})  # pickles from before the method existed

    def __repr__(self) -> str:
        if self.method == "sequential":
            return "epjax.kalman.model"
        return f"epjax.kalman.KalmanModel(method={self.method!r})"


model = KalmanModel()
