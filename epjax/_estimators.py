"""Stochastic entropy production and its Monte Carlo estimator (SPEC §2 and §4, EP paper eqs. 14-27)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from epjax._checks import check_positive_int
from epjax._contract import AutoregressiveModel, check_model, check_params
from epjax._reversal import reverse_tokens
from epjax._xla import compiler_options, jit_for

Array = jax.Array
Reversal = Callable[[Array], Array]

_Z95 = 1.959963984540054  # two-sided 95% normal quantile


class Estimate(NamedTuple):
    """A Monte Carlo estimate of the entropy production ``S = E[sigma]`` with what is needed to judge it.

    Attributes:
        mean: the sample mean of sigma, in nats (eq. 25).
        stderr: its standard error ``sd(sigma) / sqrt(N)`` (eq. 27).
        num_samples: ``N``, the number of trajectories.
        ci_low: lower end of the 95% normal interval ``mean - 1.96 stderr``.
        ci_high: upper end of that interval.
        running_mean: ``[N]`` mean of the first n samples, for convergence plots.
        mean_exp_neg_sigma: ``<exp(-sigma)>``, equal to 1 in expectation by the integral fluctuation theorem
            (eq. 20); heavy-tailed, so only informative when sigma is small.
        exp_neg_sigma_stderr: the standard error of ``mean_exp_neg_sigma``.
        fraction_negative: fraction of trajectories with ``sigma < 0``.
        sigmas: ``[N]`` the per-trajectory stochastic EP values (eq. 18), in sample order.
    """

    mean: float
    stderr: float
    num_samples: int
    ci_low: float
    ci_high: float
    running_mean: np.ndarray
    mean_exp_neg_sigma: float
    exp_neg_sigma_stderr: float
    fraction_negative: float
    sigmas: np.ndarray

    def __repr__(self) -> str:
        return (
            f"Estimate(mean={self.mean:.6g}, stderr={self.stderr:.3g}, num_samples={self.num_samples}, "
            f"ci95=({self.ci_low:.6g}, {self.ci_high:.6g}), mean_exp_neg_sigma={self.mean_exp_neg_sigma:.4g})"
        )


def estimate_from_samples(sigmas: Any) -> Estimate:
    """Summarise per-trajectory sigma values into an :class:`Estimate` (host-side, float64).

    Args:
        sigmas: ``[N]`` stochastic EP values, ``N >= 2``.

    Returns:
        The :class:`Estimate` of their mean.
    """
    s = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    n = s.size
    if n < 2:
        raise ValueError(f"`sigmas` must hold at least 2 samples to estimate a standard error, got {n}.")
    if np.any(np.isnan(s)):
        raise ValueError(
            f"`sigmas` must be finite; got {int(np.sum(np.isnan(s)))} NaN values of {n}: the model's log_probs "
            "returned NaN (check the parameters)."
        )
    if not np.all(np.isfinite(s)):
        bad = int(n - np.count_nonzero(np.isfinite(s)))
        raise ValueError(
            f"`sigmas` must be finite; got {bad} infinite values of {n} (a trajectory with zero probability "
            "under the reversed path measure makes the EP infinite)."
        )
    mean = float(np.mean(s))
    stderr = float(np.std(s, ddof=1) / math.sqrt(n))
    with np.errstate(over="ignore"):
        w = np.exp(-s)
    return Estimate(
        mean=mean,
        stderr=stderr,
        num_samples=int(n),
        ci_low=mean - _Z95 * stderr,
        ci_high=mean + _Z95 * stderr,
        running_mean=np.cumsum(s) / np.arange(1, n + 1),
        mean_exp_neg_sigma=float(np.mean(w)),
        exp_neg_sigma_stderr=float(np.std(w, ddof=1) / math.sqrt(n)),
        fraction_negative=float(np.mean(s < 0)),
        sigmas=s,
    )


def sigma(
    model: AutoregressiveModel, params: Any, x: Array, reversal: Reversal = reverse_tokens
) -> Array:
    """Stochastic entropy production of one trajectory (EP paper eq. 18).

    ``sigma(x) = ln P(x) - ln P(reversal(x))``: the same model scores the sequence and its reversal, with the
    same initial distribution. Pure and jit-able.

    Args:
        model: any object satisfying the model contract (``log_probs``, ``sample``, ``vocab_size``).
        params: the model's parameters.
        x: one trajectory, int ``[T]`` or float ``[T, d]``.
        reversal: the time reversal, e.g. :func:`epjax.reverse_tokens` (default) or
            ``functools.partial(epjax.reverse_blocks, block_size=l)``.

    Returns:
        Scalar ``sigma(x)`` in nats.
    """
    forward = jnp.sum(model.log_probs(params, x))
    backward = jnp.sum(model.log_probs(params, reversal(x)))
    return forward - backward


def _sample_sigma(model, params, key, num_steps: int, reversal: Reversal) -> Array:
    if hasattr(model, "sample_with_log_probs"):
        x, log_probs = model.sample_with_log_probs(key, params, num_steps)
        forward = jnp.sum(log_probs)
    else:
        x = model.sample(key, params, num_steps)
        forward = jnp.sum(model.log_probs(params, x))
    return forward - jnp.sum(model.log_probs(params, reversal(x)))


def _batch_sigmas(model, params, key, indices, num_steps, reversal):
    # Trajectory i always uses fold_in(key, i): results do not depend on batch size or device count.
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, indices)
    return jax.vmap(lambda k: _sample_sigma(model, params, k, num_steps, reversal))(keys)


def _batch_function(model, num_steps, reversal):
    try:
        hash(model)
        hash(reversal)
    except TypeError:
        # Unhashable models cannot be static jit arguments: close over them instead (compiles per call).
        return jax.jit(
            lambda params, key, idx: _batch_sigmas(model, params, key, idx, num_steps, reversal),
            compiler_options=compiler_options(model) or None,
        )
    run = jit_for(model, _batch_sigmas, static_argnames=("model", "num_steps", "reversal"))
    return lambda params, key, idx: run(model, params, key, idx, num_steps, reversal)


def _shard_over_devices(indices: Array) -> Array:
    devices = jax.devices()
    if len(devices) == 1:
        return indices
    mesh = jax.sharding.Mesh(np.array(devices), ("batch",))
    return jax.device_put(indices, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch")))


def entropy_production(
    key: Array,
    model: AutoregressiveModel,
    params: Any,
    *,
    num_steps: int,
    num_samples: int,
    reversal: Reversal = reverse_tokens,
    batch_size: int = 1024,
    progress: bool = False,
) -> Estimate:
    """Monte Carlo entropy production ``S = E_{x ~ P}[sigma(x)]`` with honest error bars (EP paper eqs. 25-27).

    Draws ``num_samples`` trajectories of length ``num_steps`` from the model, scores each forward and
    reversed, and summarises the per-trajectory ``sigma``. Work runs in jitted, vmapped batches of
    ``batch_size`` (memory does not grow with ``num_samples``), sharded over all visible devices; trajectory
    ``i`` uses ``jax.random.fold_in(key, i)``, so the result is the same for any batch size or device count.

    Args:
        key: a ``jax.random`` key.
        model: any object satisfying the model contract.
        params: the model's parameters.
        num_steps: trajectory length ``T >= 1``.
        num_samples: number of trajectories ``N >= 2``.
        reversal: the time reversal defining sigma (default: token reversal).
        batch_size: trajectories per compiled batch (rounded up to a multiple of the device count).
        progress: show a progress bar over batches.

    Returns:
        An :class:`Estimate` (mean, stderr, 95% interval, running mean, ``<exp(-sigma)>``, the samples).

    >>> import jax, epjax
    >>> p = epjax.kalman.from_state_space([[0.9]], [[1.0]], [[1.0]], [[1.0]])
    >>> est = epjax.entropy_production(jax.random.key(0), epjax.kalman.model, p, num_steps=5, num_samples=4000)
    >>> abs(est.mean - 0.25442) < 4 * est.stderr
    True
    """
    check_model(model)
    check_params(model, params)
    num_steps = check_positive_int("num_steps", num_steps)
    num_samples = check_positive_int("num_samples", num_samples, minimum=2)
    batch_size = check_positive_int("batch_size", batch_size)
    if not callable(reversal):
        raise ValueError(f"`reversal` must be a function x -> reversed x, got {type(reversal).__name__}.")
    num_devices = len(jax.devices())
    batch_size = min(batch_size, num_samples)
    batch_size = -(-batch_size // num_devices) * num_devices
    run_batch = _batch_function(model, num_steps, reversal)

    batches = range(0, num_samples, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=f"EP, T={num_steps}", unit="batch", leave=False)
    out = []
    for start in batches:
        indices = _shard_over_devices(jnp.arange(start, start + batch_size, dtype=jnp.uint32))
        out.append(np.asarray(run_batch(params, key, indices)))
    sigmas = np.concatenate(out)[:num_samples]
    return estimate_from_samples(sigmas)
