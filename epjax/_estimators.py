"""Stochastic entropy production, its Monte Carlo estimator and its gradient (docs/mathematics.md §2, §4, §10).

Two tiers (docs/architecture.md):

* pure, traceable cores that work inside a user's ``jit``, ``vmap`` and ``grad``: :func:`sigma`,
  :func:`sample_sigmas` (``sigma`` of ``N`` sampled trajectories), :func:`summarize` (mean, standard error and the
  diagnostics as arrays) and :func:`entropy_production_surrogate` (a scalar whose value is the Monte Carlo EP and
  whose gradient is an unbiased estimate of ``grad S``);
* host-side drivers over them: :func:`entropy_production` (batches of a fixed compiled shape, devices, a progress
  bar, the :class:`Estimate`) and :func:`entropy_production_gradient` (the gradient with its standard error).

Trajectory ``i`` always uses ``jax.random.fold_in(key, i)`` (epjax._batching), so every tier gives the same
``sigma`` values for the same key.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from epjax._batching import for_each_batch, map_trajectories, run_trajectories
from epjax._checks import as_real_array, check_key, check_num_steps, check_positive_int, describe, is_concrete
from epjax._contract import AutoregressiveModel, check_model, check_params
from epjax._reversal import reverse_tokens

Array = jax.Array
PyTree = Any
Reversal = Callable[[Array], Array]

_Z95 = 1.959963984540054  # two-sided 95% normal quantile
RUNNING_MEAN_POINTS = 1000  # sample counts at which a streamed estimate records its running mean
ESTIMATORS = ("auto", "score", "pathwise")


class Estimate(NamedTuple):
    """A Monte Carlo estimate of the entropy production ``S = E[sigma]`` with what is needed to judge it.

    From the host driver (:func:`entropy_production`, :func:`estimate_from_samples`) the fields are Python
    floats and float64 NumPy arrays; from :func:`summarize` (traceable) they are JAX arrays in the dtype of the
    samples.

    When a sampled trajectory's reversal has probability zero (``sigma = +inf``) the EP is infinite for
    certain: then ``mean`` and the interval are ``inf`` and ``stderr`` is 0.

    With ``entropy_production(..., keep_samples=False)`` (bounded memory for very large ``N``) ``sigmas`` is
    None and ``running_mean`` is thinned to the sample counts ``running_mean_at`` (at most
    ``RUNNING_MEAN_POINTS`` counts, roughly log-spaced from 1 to ``N``); every other field is the same as from
    the full run, to float64 round-off.

    Attributes:
        mean: the sample mean of sigma, in nats (eq. 25).
        stderr: its standard error ``sd(sigma) / sqrt(N)`` (eq. 27).
        num_samples: ``N``, the number of trajectories.
        ci_low: lower end of the 95% normal interval ``mean - 1.96 stderr``.
        ci_high: upper end of that interval.
        running_mean: ``[K]`` mean of the first ``n`` samples for each ``n`` in ``running_mean_at``, for
            convergence plots: ``K = N`` (every ``n``) from a full run.
        mean_exp_neg_sigma: ``<exp(-sigma)>``, equal to 1 in expectation by the integral fluctuation theorem
            (eq. 20); heavy-tailed, so only informative when sigma is small.
        exp_neg_sigma_stderr: the standard error of ``mean_exp_neg_sigma``.
        fraction_negative: fraction of trajectories with ``sigma < 0``.
        sigmas: ``[N]`` the per-trajectory stochastic EP values (eq. 18), in sample order; None when the
            samples were not kept.
        running_mean_at: ``[K]`` increasing sample counts ``n`` at which ``running_mean`` is given: ``1 .. N``
            from a full run, ``unique(round(geomspace(1, N, RUNNING_MEAN_POINTS)))`` from a streamed one (all counts
            when ``N <= RUNNING_MEAN_POINTS``).
    """

    mean: Any
    stderr: Any
    num_samples: int
    ci_low: Any
    ci_high: Any
    running_mean: Any
    mean_exp_neg_sigma: Any
    exp_neg_sigma_stderr: Any
    fraction_negative: Any
    sigmas: Any
    running_mean_at: Any = None

    def __repr__(self) -> str:
        if not is_concrete(self.mean):
            return f"Estimate(<traced>, num_samples={self.num_samples})"
        return (
            f"Estimate(mean={float(self.mean):.6g}, stderr={float(self.stderr):.3g}, "
            f"num_samples={self.num_samples}, ci95=({float(self.ci_low):.6g}, {float(self.ci_high):.6g}), "
            f"mean_exp_neg_sigma={float(self.mean_exp_neg_sigma):.4g})"
        )


def _summary(xp: Any, s: Any) -> dict[str, Any]:
    """The fields of an :class:`Estimate` from samples ``s`` ``[N]``, with the array module ``xp`` (np or jnp)."""
    n = s.shape[0]
    mean = xp.mean(s)
    infinite = xp.any(s == xp.inf)
    # With a sigma = +inf the EP is infinite for certain: no spread to report (and none to compute from infs).
    stderr = xp.where(infinite, 0.0, xp.std(xp.where(infinite, 0.0, s), ddof=1) / math.sqrt(n))
    shift = _exp_shift(xp, xp.max(-s))
    w = xp.exp(-s - shift)  # e^-sigma / e^shift, at most 1: no overflow however negative sigma is
    counts = xp.arange(1, n + 1)
    return dict(
        mean=mean,
        stderr=stderr,
        num_samples=n,
        ci_low=mean - _Z95 * stderr,
        ci_high=mean + _Z95 * stderr,
        running_mean=xp.cumsum(s) / counts,
        mean_exp_neg_sigma=_unshift(xp, shift, xp.mean(w)),
        exp_neg_sigma_stderr=_unshift(xp, shift, xp.std(w, ddof=1) / math.sqrt(n)),
        fraction_negative=xp.mean((s < 0).astype(s.dtype)),
        sigmas=s,
        running_mean_at=counts,
    )


def _exp_shift(xp: Any, largest: Any) -> Any:
    """The shift ``c = max(-sigma)`` under which ``e^(-sigma - c) <= 1``; 0 when it is not finite.

    ``-inf``: every sigma is ``+inf`` (every weight is 0); ``+inf``: a ``sigma = -inf``, which only the
    unchecked traceable path lets through (its weight stays ``inf``).
    """
    return xp.where(xp.isfinite(largest), largest, 0.0)


def _unshift(xp: Any, shift: Any, v: Any) -> Any:
    """``e^shift * v`` in two halves, so that it is finite whenever the product is representable.

    ``e^shift`` alone overflows beyond ``shift = 709`` (88 in float32) even when ``v`` is small; ``e^(shift/2)``
    overflows only where the product would.
    """
    half = xp.exp(shift / 2)
    return half * (v * half)


def _check_sample_count(s: Any, name: str) -> None:
    if np.ndim(s) != 1:
        raise ValueError(f"`{name}` must be a 1-D array of per-trajectory sigma values [N], got {describe(s)}.")
    if np.shape(s)[0] < 2:
        raise ValueError(f"`{name}` must hold at least 2 samples to estimate a standard error, got {np.shape(s)[0]}.")


def summarize(sigmas: Array) -> Estimate:
    """The :class:`Estimate` of ``S = E[sigma]`` from per-trajectory values, as JAX arrays (traceable).

    The pure twin of :func:`estimate_from_samples`: mean (eq. 25), standard error ``sd / sqrt(N)`` (eq. 27),
    95% normal interval, running mean, ``<exp(-sigma)>`` (eq. 20) with its standard error, fraction of
    negative samples. Values are not checked (inside ``jit`` they cannot be): NaN samples give NaN fields.

    Args:
        sigmas: ``[N]`` stochastic EP values, ``N >= 2`` (e.g. from :func:`sample_sigmas`).

    Returns:
        An :class:`Estimate` of arrays in the dtype of ``sigmas``.

    >>> import jax.numpy as jnp
    >>> est = summarize(jnp.array([0.0, 1.0, 2.0, 3.0]))
    >>> float(est.mean), round(float(est.stderr), 6)
    (1.5, 0.645497)
    """
    s = jnp.asarray(as_real_array("sigmas", sigmas))
    _check_sample_count(s, "sigmas")
    if not jnp.issubdtype(s.dtype, jnp.floating):
        s = s.astype(float)
    return Estimate(**_summary(jnp, s))


def estimate_from_samples(sigmas: Any) -> Estimate:
    """Summarise per-trajectory sigma values into an :class:`Estimate` (host-side, float64, values checked).

    Args:
        sigmas: ``[N]`` stochastic EP values, ``N >= 2``. ``+inf`` (a trajectory whose reversal has probability
            zero) makes the estimate ``inf``; NaN and ``-inf`` are refused.

    Returns:
        The :class:`Estimate` of their mean, with Python floats and float64 NumPy arrays.
    """
    s = np.asarray(as_real_array("sigmas", sigmas), dtype=np.float64)
    _check_sample_count(s, "sigmas")
    n = s.size
    if np.any(np.isnan(s)):
        raise ValueError(
            f"`sigmas` must not be NaN; got {int(np.sum(np.isnan(s)))} NaN values of {n} (first at index "
            f"{int(np.flatnonzero(np.isnan(s))[0])})."
        )
    if np.any(s == -np.inf):
        raise ValueError(
            f"`sigmas` must not be -inf; got {int(np.sum(s == -np.inf))} of {n}: sigma = -inf means ln P(x) = -inf, "
            "a trajectory the model gives probability zero, which cannot have been sampled from it."
        )
    with np.errstate(over="ignore", invalid="ignore"):
        fields = _summary(np, s)
    return Estimate(**{k: (float(v) if np.ndim(v) == 0 and k != "num_samples" else v) for k, v in fields.items()})


# ------------------------------------------------------------------------------------------------------------
# Streaming summaries: the Estimate of N samples in memory independent of N
# ------------------------------------------------------------------------------------------------------------


def _running_mean_counts(num_samples: int) -> np.ndarray:
    """The sample counts at which a streamed estimate records its running mean (int64, increasing, ending at N).

    ``unique(round(geomspace(1, N, RUNNING_MEAN_POINTS)))``: every count while they are closer than 1 apart,
    then steps of a constant ratio (about 1.9% for ``N = 10^8``), for convergence plots on a log axis.
    """
    if num_samples <= RUNNING_MEAN_POINTS:
        return np.arange(1, num_samples + 1, dtype=np.int64)
    return np.unique(np.round(np.geomspace(1, num_samples, RUNNING_MEAN_POINTS)).astype(np.int64))


def _merge(n_a: int, mean_a: float, m2_a: float, n_b: int, mean_b: float, m2_b: float) -> tuple[float, float]:
    """Mean and sum of squared deviations of two groups of ``n_a`` and ``n_b > 0`` samples (Chan et al. 1979)."""
    if n_a == 0:
        return mean_b, m2_b
    n = n_a + n_b
    delta = mean_b - mean_a
    return mean_a + delta * (n_b / n), m2_a + m2_b + delta * delta * (n_a * n_b / n)


class _StreamingSummary:
    """The fields of an :class:`Estimate` from samples seen a batch at a time, in memory independent of ``N``.

    Kept in float64: the count, mean and sum of squared deviations of the finite sigma (merged batch by batch
    with Chan et al.'s pairwise update, which loses no digits when the mean is large), the number of
    ``sigma = +inf`` and of ``sigma < 0``, the running sum (the same sequential sum as ``cumsum`` of all
    samples, so the running mean at the recorded counts is the full run's to the last bit), and for
    ``w = e^-sigma`` its mean and sum of squared deviations relative to ``e^c`` with ``c`` the largest
    ``-sigma`` so far (a running log-sum-exp shift: ``w / e^c <= 1`` never overflows; when ``c`` grows the
    kept mean is rescaled by ``e^(c_old - c)`` and the squared deviations by its square). ``e^c`` multiplies
    back only at the end, finite wherever ``<e^-sigma>`` and its standard error are representable; the full
    run (:func:`_summary`) uses the same shift.
    """

    def __init__(self, num_samples: int):
        self.num_samples = num_samples
        self.at = _running_mean_counts(num_samples)
        self.running_mean = np.empty(self.at.size)
        self.seen = self.infinite = self.negative = self.finite = 0
        self.mean = self.m2 = 0.0  # of the finite sigma
        self.total = 0.0  # sum of all sigma so far, added in sample order
        self.shift, self.w_mean, self.w_m2 = 0.0, 0.0, 0.0  # e^-sigma relative to e^shift (count: self.seen)

    def add(self, s: np.ndarray) -> None:
        """Take the next samples ``s`` ``[B]`` (float64, no NaN or -inf)."""
        seen, b = self.seen, s.shape[0]
        # cumsum of (sum so far, s...) repeats the full run's cumsum additions exactly.
        partial_sums = np.cumsum(np.concatenate([[self.total], s]))
        lo, hi = np.searchsorted(self.at, [seen, seen + b], side="right")
        self.running_mean[lo:hi] = partial_sums[self.at[lo:hi] - seen] / self.at[lo:hi]
        self.total = partial_sums[-1]

        infinite = s == np.inf
        finite = s[~infinite] if infinite.any() else s
        self.infinite += int(np.count_nonzero(infinite))
        self.negative += int(np.count_nonzero(s < 0))
        if finite.size:
            largest = float(np.max(-finite))
            if self.finite == 0:  # the first finite sigma: every weight so far is 0, nothing to rescale
                self.shift = largest
            elif largest > self.shift:
                scale = math.exp(self.shift - largest)
                self.shift, self.w_mean, self.w_m2 = largest, self.w_mean * scale, self.w_m2 * scale * scale
            mean_b = np.mean(finite)
            self.mean, self.m2 = _merge(self.finite, self.mean, self.m2, finite.size, mean_b,
                                        np.sum((finite - mean_b) ** 2))
            self.finite += finite.size
        w = np.exp(-s - self.shift)
        w_mean = np.mean(w)
        self.w_mean, self.w_m2 = _merge(seen, self.w_mean, self.w_m2, b, w_mean, np.sum((w - w_mean) ** 2))
        self.seen = seen + b

    def estimate(self) -> Estimate:
        """The :class:`Estimate` of all samples taken (``sigmas`` None, ``running_mean`` at ``at``)."""
        n = self.seen
        if n != self.num_samples:
            raise AssertionError(f"streamed {n} samples of {self.num_samples}")
        if self.infinite:
            mean, stderr = math.inf, 0.0
        else:
            mean, stderr = float(self.mean), math.sqrt(self.m2 / (n - 1)) / math.sqrt(n)
        with np.errstate(over="ignore", invalid="ignore"):
            w_mean = float(_unshift(np, self.shift, self.w_mean))
            w_stderr = float(_unshift(np, self.shift, math.sqrt(self.w_m2 / (n - 1)) / math.sqrt(n)))
        return Estimate(
            mean=mean, stderr=stderr, num_samples=n, ci_low=mean - _Z95 * stderr, ci_high=mean + _Z95 * stderr,
            running_mean=self.running_mean, mean_exp_neg_sigma=w_mean, exp_neg_sigma_stderr=w_stderr,
            fraction_negative=self.negative / n, sigmas=None, running_mean_at=self.at,
        )


# ------------------------------------------------------------------------------------------------------------
# sigma of one trajectory, and of N sampled ones (pure)
# ------------------------------------------------------------------------------------------------------------


def total_log_prob(model: Any, params: PyTree, x: Array, what: str) -> Array:
    """``sum_t log p(x_t | x_<t)``, after checking (by shape, also under tracing) that ``log_probs`` gave ``[T]``."""
    log_p = model.log_probs(params, x)
    if jnp.shape(log_p) != (x.shape[0],):
        raise ValueError(
            f"`model.log_probs(params, x)` must return the per-step log-probabilities [T] = [{x.shape[0]}] of "
            f"{what} of length {x.shape[0]}; got shape {tuple(jnp.shape(log_p))}."
        )
    return jnp.sum(log_p)


def reversed_sequence(reversal: Reversal, x: Array) -> Array:
    """``reversal(x)``, checked (by shape and dtype, also under tracing) to be a sequence like ``x``."""
    rx = reversal(x)
    if jnp.shape(rx) != x.shape or jnp.result_type(rx) != x.dtype:
        raise ValueError(
            "`reversal` must return a sequence of the same shape and dtype as its input (a reordering of time "
            f"steps); for x of shape {x.shape} and dtype {x.dtype} it returned shape {tuple(jnp.shape(rx))} and "
            f"dtype {jnp.result_type(rx)}."
        )
    return rx


def sigma(model: AutoregressiveModel, params: Any, x: Array, reversal: Reversal = reverse_tokens) -> Array:
    """Stochastic entropy production of one trajectory (EP paper eq. 18).

    ``sigma(x) = ln P(x) - ln P(reversal(x))``: the same model scores the sequence and its reversal, with the
    same initial distribution. Pure and jit-able; differentiable in ``params``.

    Args:
        model: any object satisfying the model contract (``log_probs``, ``sample``, ``vocab_size``).
        params: the model's parameters.
        x: one trajectory, int ``[T]`` or float ``[T, d]``.
        reversal: the time reversal, e.g. :func:`epjax.reverse_tokens` (default) or
            ``functools.partial(epjax.reverse_blocks, block_size=l)``.

    Returns:
        Scalar ``sigma(x)`` in nats.
    """
    x = jnp.asarray(as_real_array("x", x))
    return total_log_prob(model, params, x, "a sequence") - total_log_prob(
        model, params, reversed_sequence(reversal, x), "the reversed sequence"
    )


def _sampled(model: Any, params: PyTree, key: Array, num_steps: int) -> tuple[Array, Array | None]:
    """One trajectory and (when the model gives it) its per-step log-probabilities, checked by shape."""
    if hasattr(model, "sample_with_log_probs"):
        x, log_p = model.sample_with_log_probs(key, params, num_steps)
    else:
        x, log_p = model.sample(key, params, num_steps), None
    discrete = model.vocab_size is not None
    shape_ok = jnp.ndim(x) >= 1 and jnp.shape(x)[0] == num_steps and (jnp.ndim(x) == 1 or not discrete)
    if not shape_ok or (discrete and not jnp.issubdtype(jnp.result_type(x), jnp.integer)):
        want = f"int [{num_steps}]" if discrete else f"[{num_steps}, ...]"
        raise ValueError(
            f"`model.sample(key, params, num_steps={num_steps})` must return one trajectory of {num_steps} steps "
            f"({want}); got shape {tuple(jnp.shape(x))} and dtype {jnp.result_type(x)}."
        )
    if log_p is not None and jnp.shape(log_p) != (num_steps,):
        raise ValueError(
            f"`model.sample_with_log_probs` must return per-step log-probabilities [{num_steps}], got shape "
            f"{tuple(jnp.shape(log_p))}."
        )
    return x, log_p


def _is_permutation(x: Array, rx: Array) -> Array:
    """Whether ``rx`` holds the same tokens as ``x`` (a reordering of positions), for discrete sequences."""
    return jnp.all(jnp.sort(x) == jnp.sort(rx))


def trajectory_log_probs(model, params, key, num_steps: int, reversal: Reversal):
    """``(ln P(x), ln P(reversal(x)), reversal permutes x)`` of the trajectory ``x`` drawn with ``key``."""
    x, log_p = _sampled(model, params, key, num_steps)
    forward = jnp.sum(log_p) if log_p is not None else total_log_prob(model, params, x, "a sampled trajectory")
    rx = reversed_sequence(reversal, x)
    backward = total_log_prob(model, params, rx, "the reversed trajectory")
    permutes = _is_permutation(x, rx) if model.vocab_size is not None else jnp.array(True)
    return forward, backward, permutes


def _check_arguments(model, key, num_steps, num_samples, reversal, *, minimum_samples: int = 2):
    check_model(model)
    check_key(key)
    num_steps = check_num_steps(num_steps)
    num_samples = check_positive_int("num_samples", num_samples, minimum=minimum_samples)
    if not callable(reversal):
        raise ValueError(f"`reversal` must be a function x -> reversed x, got {type(reversal).__name__}.")
    return num_steps, num_samples


def _check_batch_size(batch_size: int | None) -> int | None:
    return None if batch_size is None else check_positive_int("batch_size", batch_size)


def sample_sigmas(
    key: Array,
    model: AutoregressiveModel,
    params: Any,
    *,
    num_steps: int,
    num_samples: int,
    reversal: Reversal = reverse_tokens,
    batch_size: int | None = None,
) -> Array:
    """``sigma`` of ``num_samples`` trajectories drawn from the model (eq. 18), as one array. Pure and traceable.

    The functional core of :func:`entropy_production`: trajectory ``i`` uses ``jax.random.fold_in(key, i)`` (the
    same values the host driver computes), and nothing leaves the device, so it composes with a user's ``jit``,
    ``vmap`` (e.g. over parameters) and ``grad``.

    Gradients: ``jax.grad`` of a function of these values differentiates ``sigma_theta(x)`` at the sampled
    trajectories. For a continuous model that samples by reparameterisation (``y = g_theta(eps)``, as
    :mod:`epjax.kalman`) the gradient of their mean is an unbiased estimate of ``grad S``; for a discrete model
    the sampled tokens do not move with ``theta`` and it misses the score-function term ``E[sigma grad ln P]``
    (docs/mathematics.md §10). To train on EP use :func:`entropy_production_surrogate`, whose gradient is
    unbiased for both.

    Args:
        key: a ``jax.random`` key.
        model: any object satisfying the model contract.
        params: the model's parameters (values are checked when concrete, i.e. outside ``jit``).
        num_steps: trajectory length ``T >= 1``.
        num_samples: number of trajectories ``N >= 1``.
        reversal: the time reversal defining sigma (default: token reversal).
        batch_size: run this many trajectories at a time (``jax.lax.map``: memory bounded by one batch);
            default: all at once (``jax.vmap``).

    Returns:
        ``[N]`` values of sigma, in nats, in the dtype of the model's log-probabilities.

    >>> import jax, epjax
    >>> p = epjax.kalman.example("scalar")
    >>> s = jax.jit(lambda k: epjax.sample_sigmas(k, epjax.kalman.model, p, num_steps=5, num_samples=4000))
    >>> est = epjax.summarize(s(jax.random.key(0)))
    >>> abs(float(est.mean) - 0.25442) < 4 * float(est.stderr)
    True
    """
    num_steps, num_samples = _check_arguments(model, key, num_steps, num_samples, reversal, minimum_samples=1)
    batch_size = _check_batch_size(batch_size)
    if is_concrete(params):
        check_params(model, params)
    forward, backward, _ = map_trajectories(
        trajectory_log_probs, model, params, key, num_samples, static=(num_steps, reversal), batch_size=batch_size
    )
    return forward - backward


# ------------------------------------------------------------------------------------------------------------
# The host driver
# ------------------------------------------------------------------------------------------------------------


def _check_terms(start: int, batch: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    """Refuse NaN, impossible forward paths and reversals that are not reorderings, naming the trajectories."""
    forward, backward, permutes = batch

    def where(mask):
        idx = np.flatnonzero(mask)
        return f"{idx.size} of this batch's {mask.size} (first: trajectory {start + int(idx[0])})"

    if not np.all(permutes):
        raise ValueError(
            "`reversal` must reorder the positions of a discrete sequence (a bijection on sequences of length T): "
            f"reversal(x) held other tokens than x for {where(~permutes)}."
        )
    for values, what in ((forward, "sampled trajectories"), (backward, "reversed trajectories")):
        if np.any(np.isnan(values)):
            raise ValueError(
                f"`model.log_probs` returned NaN for {where(np.isnan(values))} {what}; check the parameters "
                "(and, for a model of your own, its log_probs)."
            )
        if np.any(values == np.inf):
            raise ValueError(
                f"`model.log_probs` returned +inf for {where(values == np.inf)} {what}: not a normalised model."
            )
    if np.any(forward == -np.inf):
        raise ValueError(
            f"`model.sample` drew paths that `model.log_probs` gives probability zero (ln P = -inf) for "
            f"{where(forward == -np.inf)} sampled trajectories: the model's sample and log_probs disagree."
        )


def _reject_traced_driver(name: str, pure: str, *args: Any) -> None:
    if not is_concrete(*args):
        raise ValueError(
            f"`epjax.{name}` is a host-side driver (batches, progress bar, NumPy results) and cannot run inside "
            f"jit, vmap or grad; use `epjax.{pure}` there (pure and traceable)."
        )


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
    keep_samples: bool = True,
) -> Estimate:
    """Monte Carlo entropy production ``S = E_{x ~ P}[sigma(x)]`` with honest error bars (EP paper eqs. 25-27).

    Draws ``num_samples`` trajectories of length ``num_steps`` from the model, scores each forward and
    reversed, and summarises the per-trajectory ``sigma``. Work runs in compiled batches of exactly
    ``batch_size`` trajectories whatever ``num_samples`` is (no recompilation for a new sample count; memory
    does not grow with ``num_samples``), sharded over all visible devices; trajectory ``i`` uses
    ``jax.random.fold_in(key, i)``, so the result is the same for any batch size or device count, and equal to
    :func:`summarize` of :func:`sample_sigmas` (the traceable core to use inside ``jit``/``grad``).

    Checks on what the model returns: ``sample`` must give ``T`` steps and ``log_probs`` ``[T]`` values, the
    reversal a sequence of the same shape (for a discrete model: the same tokens reordered); NaN, and sampled
    paths the model gives probability zero, are refused with the trajectories' indices. A reversal of
    probability zero makes the EP infinite: the estimate is then ``inf``.

    Args:
        key: a ``jax.random`` key.
        model: any object satisfying the model contract.
        params: the model's parameters.
        num_steps: trajectory length ``T >= 1``.
        num_samples: number of trajectories ``N >= 2``.
        reversal: the time reversal defining sigma (default: token reversal).
        batch_size: trajectories per compiled batch (rounded up to a multiple of the device count); the last
            batch is computed whole and cut, so for a handful of samples of a large model pass a smaller one.
        progress: show a progress bar over batches.
        keep_samples: keep the ``N`` values of sigma (default). ``False`` keeps running summaries only (memory
            independent of ``N``, e.g. for ``N = 10^8``): each batch is checked and merged into float64 sums as
            it arrives, and the :class:`Estimate` has ``sigmas=None`` and its running mean at the roughly
            log-spaced counts ``running_mean_at``; every other field equals the full run's to float64
            round-off.

    Returns:
        An :class:`Estimate` (mean, stderr, 95% interval, running mean, ``<exp(-sigma)>``, the samples).
        Inside a user's ``jit``/``vmap`` (traced key or parameters) it returns :func:`summarize` of
        :func:`sample_sigmas`, an :class:`Estimate` of arrays (values unchecked); under ``grad`` see
        :func:`sample_sigmas` for what its gradient is, and :func:`entropy_production_surrogate` for training.
        There ``keep_samples=False`` gives the same fields as outside (no ``sigmas``, the thinned running
        mean), but a traced computation cannot stream its batches through the host: the ``N`` values of sigma
        are still held on the device while it runs (4 or 8 bytes each; ``batch_size`` bounds the rest).

    >>> import jax, epjax
    >>> p = epjax.kalman.from_state_space([[0.9]], [[1.0]], [[1.0]], [[1.0]])
    >>> est = epjax.entropy_production(jax.random.key(0), epjax.kalman.model, p, num_steps=5, num_samples=4000)
    >>> abs(est.mean - 0.25442) < 4 * est.stderr
    True
    """
    num_steps, num_samples = _check_arguments(model, key, num_steps, num_samples, reversal)
    batch_size = check_positive_int("batch_size", batch_size)
    if not isinstance(keep_samples, (bool, np.bool_)):
        raise ValueError(f"`keep_samples` must be True or False, got {keep_samples!r}.")
    if not is_concrete(key, params):
        # Inside a user's jit/vmap/grad: the traceable core (same values; no progress bar, values unchecked).
        est = summarize(sample_sigmas(key, model, params, num_steps=num_steps, num_samples=num_samples,
                                      reversal=reversal, batch_size=batch_size))
        if keep_samples:
            return est
        at = _running_mean_counts(num_samples)
        return est._replace(running_mean=est.running_mean[at - 1], running_mean_at=jnp.asarray(at), sigmas=None)
    check_params(model, params)
    if not keep_samples:
        summary = _StreamingSummary(num_samples)

        def merge(start: int, stop: int, batch: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
            # Only the rows that count: the last batch runs whole, its trajectories past N are not in the sample.
            forward, backward, permutes = (a[: stop - start] for a in batch)
            _check_terms(start, (forward, backward, permutes))
            with np.errstate(invalid="ignore"):
                summary.add(forward.astype(np.float64) - backward.astype(np.float64))

        for_each_batch(
            trajectory_log_probs, model, params, key, num_samples, merge, static=(num_steps, reversal),
            batch_size=batch_size, progress=progress, desc=f"EP, T={num_steps}",
        )
        return summary.estimate()
    forward, backward, _ = run_trajectories(
        trajectory_log_probs, model, params, key, num_samples, static=(num_steps, reversal),
        batch_size=batch_size, progress=progress, desc=f"EP, T={num_steps}", check=_check_terms,
    )
    with np.errstate(invalid="ignore"):
        sigmas = forward.astype(np.float64) - backward.astype(np.float64)
    return estimate_from_samples(sigmas)


# ------------------------------------------------------------------------------------------------------------
# Gradients of the Monte Carlo EP (docs/mathematics.md §10)
# ------------------------------------------------------------------------------------------------------------


def _estimator(model: Any, estimator: str) -> str:
    if estimator not in ESTIMATORS:
        raise ValueError(f"`estimator` must be one of {ESTIMATORS}, got {estimator!r}.")
    if estimator == "auto":
        return "score" if model.vocab_size is not None else "pathwise"
    if estimator == "pathwise" and model.vocab_size is not None:
        raise ValueError(
            "`estimator='pathwise'` needs trajectories that move with the parameters (a continuous, "
            "reparameterised model); discrete tokens do not, so the pathwise gradient would miss the "
            "score-function term. Use estimator='score' (or 'auto')."
        )
    return estimator


def _scored(model, params, key, num_steps: int, reversal: Reversal, estimator: str):
    """``(ln P(x), ln P(reversal(x)))`` as functions of ``params``; ``x`` is data for the score estimator."""
    x, _ = _sampled(model, params, key, num_steps)
    if estimator == "score":
        x = jax.lax.stop_gradient(x)
    forward = total_log_prob(model, params, x, "a sampled trajectory")
    backward = total_log_prob(model, params, reversed_sequence(reversal, x), "the reversed trajectory")
    return forward, backward


def entropy_production_surrogate(
    key: Array,
    model: AutoregressiveModel,
    params: Any,
    *,
    num_steps: int,
    num_samples: int,
    reversal: Reversal = reverse_tokens,
    estimator: str = "auto",
    batch_size: int | None = None,
) -> Array:
    """A scalar whose value is the Monte Carlo EP and whose gradient is an unbiased estimate of ``grad S``.

    For training on EP inside a user's ``jit``/``grad`` (e.g. a loss ``nll + lam * EP``). With ``sigma_i`` and
    ``ln P_i`` of ``N`` sampled trajectories (docs/mathematics.md §10):

    * ``"score"`` (default for discrete models): ``grad S = E[sigma grad ln P] + E[grad sigma]``, estimated by
      ``1/N sum_i [(sigma_i - b_i) grad ln P_i + grad sigma_i]`` with the leave-one-out baseline
      ``b_i = mean_{j != i} sigma_j`` (independent of trajectory ``i``, so the estimate stays unbiased, with far
      less variance than ``b = 0``). Needs ``N >= 2``.
    * ``"pathwise"`` (default for continuous models): ``grad`` of ``1/N sum_i sigma_theta(g_theta(eps_i))``,
      for models that sample by reparameterisation (``epjax.kalman``: ``y = H e``, ``e = L z``).

    The surrogate is ``1/N sum_i [sigma_i + stop_gradient(sigma_i - b_i) (ln P_i - stop_gradient(ln P_i))]``:
    its value is the plain Monte Carlo mean. Only its gradient with respect to ``params`` is meaningful, and only
    as the gradient of a function that is linear in it (any loss ``f(surrogate)`` gets ``f'`` times the
    unbiased ``grad S`` estimate, computed from the same samples).

    Args:
        key: a ``jax.random`` key.
        model: any object satisfying the model contract.
        params: the model's parameters.
        num_steps: trajectory length ``T >= 1``.
        num_samples: number of trajectories ``N >= 2``.
        reversal: the time reversal defining sigma.
        estimator: ``"auto"``, ``"score"`` or ``"pathwise"`` (continuous models only).
        batch_size: trajectories at a time (``jax.lax.map``), default all at once.

    Returns:
        A scalar array.
    """
    num_steps, num_samples = _check_arguments(model, key, num_steps, num_samples, reversal)
    estimator = _estimator(model, estimator)
    batch_size = _check_batch_size(batch_size)
    if is_concrete(params):
        check_params(model, params)
    forward, backward = map_trajectories(
        _scored, model, params, key, num_samples, static=(num_steps, reversal, estimator), batch_size=batch_size
    )
    sigmas = forward - backward
    if estimator == "pathwise":
        return jnp.mean(sigmas)
    s = jax.lax.stop_gradient(sigmas)
    baseline = (jnp.sum(s) - s) / (num_samples - 1)
    return jnp.mean(sigmas + (s - baseline) * (forward - jax.lax.stop_gradient(forward)))


class GradientEstimate(NamedTuple):
    """A Monte Carlo estimate of ``grad_theta S(theta)`` with its standard error (docs/mathematics.md §10).

    Attributes:
        grad: pytree like ``params``: the mean of the per-trajectory gradient estimates.
        stderr: pytree like ``params``: their standard deviation over ``sqrt(N)``, elementwise.
        num_samples: ``N``.
        estimator: ``"score"`` or ``"pathwise"``.
        estimate: the :class:`Estimate` of ``S`` itself from the same trajectories.
    """

    grad: PyTree
    stderr: PyTree
    num_samples: int
    estimator: str
    estimate: Estimate


def _trajectory_gradient(model, params, key, data, num_steps: int, reversal: Reversal, estimator: str):
    """``grad_theta [w ln P(x) + sigma(x)]`` for the trajectory drawn with ``key``; ``data = (w, valid)``.

    ``w`` is the score-function weight ``sigma_i - b_i`` (0 for the pathwise estimator).
    """
    weight, _ = data

    def objective(p):
        forward, backward = _scored(model, p, key, num_steps, reversal, estimator)
        return weight.astype(forward.dtype) * forward + (forward - backward)

    return jax.grad(objective)(params)


def _gradient_moments(grads: PyTree, data) -> tuple[PyTree, PyTree]:
    """Mean and sum of squared deviations over a batch's valid trajectories (padding excluded), on the device."""
    valid = data[1]
    count = jnp.sum(valid)
    mask = lambda g: valid.reshape((-1,) + (1,) * (g.ndim - 1)).astype(g.dtype)
    mean = jax.tree_util.tree_map(lambda g: jnp.sum(mask(g) * g, axis=0) / count, grads)
    m2 = jax.tree_util.tree_map(lambda g, m: jnp.sum(mask(g) * (g - m) ** 2, axis=0), grads, mean)
    return mean, m2


def _combine_moments(n_a: int, mean_a: PyTree, m2_a: PyTree, n_b: int, mean_b: PyTree, m2_b: PyTree):
    """Count, mean and sum of squared deviations of two batches together (Chan et al.'s pairwise update).

    No large sums of squares are subtracted, so the variance keeps its digits when the mean is large.
    """
    n = n_a + n_b
    delta = jax.tree_util.tree_map(lambda a, b: b - a, mean_a, mean_b)
    mean = jax.tree_util.tree_map(lambda a, d: a + d * (n_b / n), mean_a, delta)
    m2 = jax.tree_util.tree_map(lambda a, b, d: a + b + d**2 * (n_a * n_b / n), m2_a, m2_b, delta)
    return n, mean, m2


def entropy_production_gradient(
    key: Array,
    model: AutoregressiveModel,
    params: Any,
    *,
    num_steps: int,
    num_samples: int,
    reversal: Reversal = reverse_tokens,
    estimator: str = "auto",
    batch_size: int = 64,
    progress: bool = False,
) -> GradientEstimate:
    """Unbiased Monte Carlo estimate of ``grad_theta S(theta)`` with its standard error (docs/mathematics.md §10).

    Host driver. The trajectories are those of :func:`entropy_production` with the same key (trajectory ``i``
    uses ``fold_in(key, i)``). For the score-function estimator (discrete models) the per-trajectory gradient is
    ``g_i = (sigma_i - b_i) grad ln P(x_i) + grad sigma(x_i)`` with the leave-one-out baseline
    ``b_i = mean_{j != i} sigma_j``; for the pathwise estimator (reparameterised continuous models)
    ``g_i = grad sigma_theta(g_theta(eps_i))``. Returns their mean and ``sd(g) / sqrt(N)`` elementwise (the
    leave-one-out baselines make the ``g_i`` very slightly dependent; the standard error ignores that, an
    ``O(1/N)`` effect). Cost: one pass for the ``sigma_i``, then one gradient per trajectory, ``batch_size`` at a
    time (memory: ``batch_size`` copies of the parameters' gradient).

    Args:
        key: a ``jax.random`` key.
        model: any object satisfying the model contract.
        params: the model's parameters.
        num_steps: trajectory length ``T >= 1``.
        num_samples: number of trajectories ``N >= 2``.
        reversal: the time reversal defining sigma.
        estimator: ``"auto"`` (score for discrete models, pathwise for continuous ones), ``"score"`` or
            ``"pathwise"``.
        batch_size: trajectories per compiled gradient batch.
        progress: show a progress bar.

    Returns:
        :class:`GradientEstimate` (``grad`` and ``stderr`` shaped like ``params``, float64 NumPy leaves).
    """
    num_steps, num_samples = _check_arguments(model, key, num_steps, num_samples, reversal)
    estimator = _estimator(model, estimator)
    batch_size = check_positive_int("batch_size", batch_size)
    _reject_traced_driver("entropy_production_gradient", "entropy_production_surrogate", key, params)
    estimate = entropy_production(
        key, model, params, num_steps=num_steps, num_samples=num_samples, reversal=reversal, progress=progress
    )
    if not math.isfinite(estimate.mean):
        raise ValueError(
            "the entropy production is infinite (a sampled trajectory's reversal has probability zero), so it "
            "has no gradient."
        )
    s = estimate.sigmas
    weights = np.zeros(num_samples) if estimator == "pathwise" else s - (s.sum() - s) / (num_samples - 1)
    moments: list = []  # [count, mean, m2], combined batch by batch in float64

    def combine(start: int, stop: int, batch) -> None:
        b_mean, b_m2 = (jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), x) for x in batch)
        if not moments:
            moments.extend((stop - start, b_mean, b_m2))
        else:
            moments[:] = _combine_moments(*moments, stop - start, b_mean, b_m2)

    for_each_batch(
        _trajectory_gradient, model, params, key, num_samples, combine, static=(num_steps, reversal, estimator),
        data=(weights, np.ones(num_samples, bool)), reduce=_gradient_moments, batch_size=batch_size,
        progress=progress, desc=f"EP gradient, T={num_steps}",
    )
    count, mean, m2 = moments
    stderr = jax.tree_util.tree_map(lambda v: np.sqrt(v / (count - 1) / count), m2)
    return GradientEstimate(mean, stderr, num_samples, estimator, estimate)
