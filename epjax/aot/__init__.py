"""The arrow-of-time learnability gap: forward and backward twins of one architecture (docs/mathematics.md §8).

Train the same architecture twice on the same sequences, once as written (forward, FW) and once with the
positions reordered by a fixed permutation (backward, BW; token reversal by default). With ``ℓ`` the held-out
cross-entropy per token,

    ∂ = E[ℓ_BW − ℓ_FW] / (½ E[ℓ_BW + ℓ_FW])      (∂ > 0: the forward direction is easier to learn)

A perfect learner has ``∂ = 0`` on every data law (the chain rule holds in any order), so ``∂`` measures
learnability. It is not entropy production: EP is one model's irreversibility, ``∂`` compares two trained models
(§8.2). :func:`learnability_gap` returns ``∂`` with intervals over training seeds and over held-out sequences,
the twins' loss curves and their parameters.

The twins of one seed share everything but the order of positions: the initial parameters, the optimiser, the
budget, the training rows drawn at every step (the same key through :func:`epjax.train.train_many`) and the
held-out rows. Seeds differ in initialisation and batch order.

>>> reordering("reverse", 5).tolist(), reordering("middle-out", 5).tolist(), reordering("even-odd", 5).tolist()
([4, 3, 2, 1, 0], [2, 1, 3, 0, 4], [0, 2, 4, 1, 3])
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from epjax import Estimate, decomposition, entropy_production, reverse_tokens, train
from epjax._checks import check_key, check_positive_int, describe
from epjax.aot import datasets
from epjax.discrete import DiscreteModel

PyTree = Any

#: named reorderings of positions accepted by :func:`reordering` (``"chunks:L"`` takes a block length)
NAMED_REORDERINGS = ("reverse", "middle-out", "even-odd", "chunks:L", "identity")


def check_permutation(permutation: Any, length: int) -> np.ndarray:
    """``permutation`` as an int64 array if it is a permutation of ``0 .. length-1``, else a ``ValueError``.

    Position ``j`` of a reordered sequence holds token ``permutation[j]`` of the original (``x[:, permutation]``).

    >>> check_permutation([1, 0, 2], 3).tolist()
    [1, 0, 2]
    """
    length = check_positive_int("length", length)
    arr = np.asarray(permutation)
    if arr.ndim != 1 or arr.shape[0] != length:
        raise ValueError(f"`permutation` must be a 1-D array of {length} positions, got {describe(permutation)}.")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"`permutation` must hold integer positions, got dtype {arr.dtype}.")
    arr = arr.astype(np.int64)
    counts = np.bincount(arr[(arr >= 0) & (arr < length)], minlength=length)
    if np.any((arr < 0) | (arr >= length)) or np.any(counts != 1):
        missing = np.flatnonzero(counts == 0).tolist()
        repeated = np.flatnonzero(counts > 1).tolist()
        outside = arr[(arr < 0) | (arr >= length)].tolist()
        raise ValueError(
            f"`permutation` must hold each position 0..{length - 1} exactly once; missing {missing[:8]}, "
            f"repeated {repeated[:8]}, out of range {outside[:8]}."
        )
    return arr


def reordering(spec: Any, length: int, *, seed: int = 0) -> np.ndarray:
    """The permutation of ``length`` positions named by ``spec``, or ``spec`` itself checked as one.

    Names: ``"reverse"`` (token reversal), ``"middle-out"`` (from the centre outwards, left first),
    ``"even-odd"`` (even positions, then odd), ``"chunks:L"`` (blocks of ``L`` positions, the last one possibly
    shorter, in a random order drawn with ``seed``; inside a block the order is kept) and ``"identity"``.

    Raises:
        ValueError: an unknown name, or an array that is not a permutation of ``0 .. length-1``.
    """
    length = check_positive_int("length", length)
    if not isinstance(spec, str):
        return check_permutation(spec, length)
    positions = np.arange(length)
    if spec == "reverse":
        return positions[::-1].copy()
    if spec == "identity":
        return positions
    if spec == "even-odd":
        return np.concatenate([positions[0::2], positions[1::2]])
    if spec == "middle-out":
        centre = (length - 1) / 2
        return np.array(sorted(positions, key=lambda i: (abs(i - centre), i)), dtype=np.int64)
    if spec.startswith("chunks:"):
        size = spec.partition(":")[2]
        if not size.isdigit() or int(size) < 1:
            raise ValueError(f"a `chunks:L` reordering needs a block length L >= 1, got {spec!r}.")
        blocks = np.array_split(positions, range(int(size), length, int(size)))
        order = np.random.default_rng(seed).permutation(len(blocks))
        return np.concatenate([blocks[i] for i in order])
    raise ValueError(f"unknown reordering {spec!r}; use one of {NAMED_REORDERINGS} or an array of positions.")


def _held_out_split(key: jax.Array, data: np.ndarray, held_out: Any, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, held_out)`` rows: a given array, or a random share (a float in (0, 1)) or count of ``data``."""
    if isinstance(held_out, (float, int, np.integer, np.floating)) and not isinstance(held_out, bool):
        n = data.shape[0]
        count = round(held_out * n) if isinstance(held_out, (float, np.floating)) else int(held_out)
        if isinstance(held_out, (float, np.floating)) and not 0 < held_out < 1:
            raise ValueError(f"`held_out` as a fraction must be in (0, 1), got {held_out!r}.")
        if not 1 <= count < n:
            raise ValueError(
                f"`held_out` must leave at least one training and one held-out sequence of the {n}, got {held_out!r}."
            )
        order = np.asarray(jax.random.permutation(key, n))
        return data[order[count:]], data[order[:count]]
    held = np.asarray(train.check_sequences("held_out", held_out, vocab_size))
    if held.shape[1] != data.shape[1]:
        raise ValueError(
            f"`held_out` sequences must have the training length {data.shape[1]}, got length {held.shape[1]}."
        )
    return data, held


def _relative_gap(forward: Any, backward: Any) -> Any:
    """``(b − f) / (½ (b + f))`` elementwise."""
    return (backward - forward) / (0.5 * (backward + forward))


@dataclasses.dataclass(frozen=True, eq=False)
class LearnabilityGap:
    """The gap ``∂`` between forward and backward twins, with its intervals and everything behind it.

    Attributes:
        gap: ``∂`` from the held-out losses averaged over seeds and sequences.
        interval: ``(low, high)`` at ``confidence``, combining the spread over seeds and over held-out
            sequences: ``gap ± q sqrt(se_seeds² + se_held_out²)`` with ``q`` Student's quantile on
            ``num_seeds − 1`` degrees of freedom (the held-out interval alone with one seed, which then says
            nothing about training noise).
        seed_interval: Student-t interval of the per-seed gaps (``None`` with one seed).
        held_out_interval: paired percentile bootstrap over held-out sequences of the seed-averaged gap.
        stderr: ``sqrt(se_seeds² + se_held_out²)``.
        confidence: coverage of the intervals.
        seed_gaps: ``[S]`` the gap of each seed.
        forward_loss: ``[S]`` held-out cross-entropy per token of each forward model, nats.
        backward_loss: ``[S]`` the same for the backward models.
        forward_sequence_loss: ``[S, M]`` per held-out sequence (mean per token), forward models.
        backward_sequence_loss: ``[S, M]`` the same, backward models, on the same held-out rows.
        forward_history: :class:`epjax.train.History` of the forward models (loss arrays ``[S, ...]``).
        backward_history: the same for the backward models.
        permutation: ``[T]`` the reordering of the backward data (token reversal: ``T−1, ..., 0``).
        model: the architecture.
        forward_params: the forward models' parameters, stacked ``[S, ...]``.
        backward_params: the backward models' parameters, stacked ``[S, ...]``.
        held_out: ``[M, T]`` the held-out sequences in forward order (the backward twins score
            ``held_out[:, permutation]``).
        num_train: training sequences.
        num_held_out: held-out sequences ``M``.
        config: the training settings.
    """

    gap: float
    interval: tuple[float, float]
    seed_interval: tuple[float, float] | None
    held_out_interval: tuple[float, float]
    stderr: float
    confidence: float
    seed_gaps: np.ndarray
    forward_loss: np.ndarray
    backward_loss: np.ndarray
    forward_sequence_loss: np.ndarray
    backward_sequence_loss: np.ndarray
    forward_history: train.History
    backward_history: train.History
    permutation: np.ndarray
    model: DiscreteModel
    forward_params: PyTree
    backward_params: PyTree
    held_out: np.ndarray
    num_train: int
    num_held_out: int
    config: train.TrainConfig

    @property
    def num_seeds(self) -> int:
        """Training seeds ``S``."""
        return int(self.seed_gaps.shape[0])

    @property
    def is_reversal(self) -> bool:
        """Whether the backward data are the token-reversed data."""
        return bool(np.array_equal(self.permutation, np.arange(self.permutation.size)[::-1]))

    def twins(self, seed: int = 0) -> tuple[PyTree, PyTree]:
        """``(forward_params, backward_params)`` of training seed ``seed``."""
        seed = check_positive_int("seed", seed, minimum=0)
        if seed >= self.num_seeds:
            raise ValueError(f"`seed` must be below the {self.num_seeds} seeds trained, got {seed}.")
        pick = lambda tree: jax.tree_util.tree_map(lambda leaf: leaf[seed], tree)  # noqa: E731
        return pick(self.forward_params), pick(self.backward_params)

    def sign(self) -> int:
        """``+1`` when the interval lies above 0, ``−1`` below, ``0`` when it covers 0."""
        low, high = self.interval
        return 1 if low > 0 else (-1 if high < 0 else 0)


def learnability_gap(
    key: jax.Array,
    model: DiscreteModel,
    data: Any,
    *,
    permutation: Any = "reverse",
    num_seeds: int = 3,
    config: train.TrainConfig | None = None,
    held_out: Any = 0.1,
    confidence: float = 0.95,
    num_bootstrap: int = 2000,
    permutation_seed: int = 0,
    progress: bool = False,
    desc: str | None = None,
) -> LearnabilityGap:
    """Train forward and backward twins of ``model`` on ``data`` over ``num_seeds`` seeds and return ``∂``.

    All ``2 S`` models train in one vectorised loop (:func:`epjax.train.train_many`). Held-out losses are
    :func:`epjax.train.sequence_losses` of the final parameters on the same held-out rows, reordered for the
    backward models.

    Args:
        key: a ``jax.random`` key (held-out split, initialisation and batches of every seed).
        model: any trainable discrete family model (``epjax.families.new_model``); it must accept sequences
            of the data's length.
        data: token sequences ``[N, T]``, ids in ``[0, model.vocab_size)``.
        permutation: the backward reordering: ``"reverse"`` (default), another name of :func:`reordering`,
            or an array of ``T`` positions.
        num_seeds: training seeds ``S`` (at least 2 for an interval over seeds).
        config: training settings shared by every model (default :class:`epjax.train.TrainConfig`).
        held_out: a fraction in (0, 1) or a count of ``data`` held out at random, or held-out sequences
            ``[M, T]`` of their own (e.g. windows of a separate part of a corpus).
        confidence: coverage of the intervals, in (0, 1).
        num_bootstrap: bootstrap resamples of the held-out sequences.
        permutation_seed: seed of a random reordering (``"chunks:L"``).
        progress: show a progress bar over the training steps, with every model's held-out loss by name
            (``FW1 … FWS``, ``BW1 … BWS``: direction and seed).
        desc: the progress bar's label.

    Returns:
        :class:`LearnabilityGap`.

    Raises:
        ValueError: bad data, a permutation that is not one, a bad held-out share, or bad settings.
    """
    check_key(key)
    if not isinstance(model, DiscreteModel):
        raise ValueError(f"`model` must be an epjax discrete family model, got {type(model).__name__}.")
    data = np.asarray(train.check_sequences("data", data, model.vocab_size))
    length = data.shape[1]
    perm = reordering(permutation, length, seed=permutation_seed)
    num_seeds = check_positive_int("num_seeds", num_seeds)
    config = train.TrainConfig() if config is None else config
    if not isinstance(config, train.TrainConfig):
        raise ValueError(f"`config` must be an epjax.train.TrainConfig, got {type(config).__name__}.")
    if not 0 < confidence < 1:
        raise ValueError(f"`confidence` must be in (0, 1), got {confidence!r}.")
    num_bootstrap = check_positive_int("num_bootstrap", num_bootstrap)
    k_split, k_seeds = jax.random.split(key)
    train_rows, held_rows = _held_out_split(k_split, data, held_out, model.vocab_size)
    if held_rows.shape[0] < 2:
        raise ValueError(f"`held_out` must give at least 2 held-out sequences, got {held_rows.shape[0]}.")

    seed_keys = jax.random.split(k_seeds, num_seeds)
    init_keys, train_keys = (jnp.stack(k) for k in zip(*(jax.random.split(k) for k in seed_keys), strict=True))
    params = jax.vmap(model.init)(init_keys)
    both = jax.tree_util.tree_map(lambda leaf: jnp.concatenate([leaf, leaf]), params)
    stacked_train = np.stack([train_rows] * num_seeds + [train_rows[:, perm]] * num_seeds)
    stacked_held = np.stack([held_rows] * num_seeds + [held_rows[:, perm]] * num_seeds)
    trained, history = train.train_many(
        jnp.concatenate([train_keys, train_keys]),
        model,
        both,
        stacked_train,
        config=config,
        eval_data=stacked_held,
        progress=progress,
        desc=desc or f"train {num_seeds} FW + {num_seeds} BW {getattr(model, 'family', type(model).__name__)}",
        labels=[f"{d}{s + 1}" for d in ("FW", "BW") for s in range(num_seeds)],
    )
    per_sequence = np.stack(
        [
            train.sequence_losses(model, jax.tree_util.tree_map(lambda leaf, i=i: leaf[i], trained), stacked_held[i])
            for i in range(2 * num_seeds)
        ]
    )
    fw_seq, bw_seq = per_sequence[:num_seeds], per_sequence[num_seeds:]
    fw, bw = fw_seq.mean(axis=1), bw_seq.mean(axis=1)
    gap = float(_relative_gap(fw.mean(), bw.mean()))
    seed_gaps = _relative_gap(fw, bw)

    # Held-out sequences: a paired bootstrap of the seed-averaged per-sequence losses.
    fw_mean_seq, bw_mean_seq = fw_seq.mean(axis=0), bw_seq.mean(axis=0)
    boot = scipy.stats.bootstrap(
        (fw_mean_seq, bw_mean_seq),
        lambda f, b, axis: _relative_gap(f.mean(axis=axis), b.mean(axis=axis)),
        paired=True,
        vectorized=True,
        n_resamples=num_bootstrap,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(0),
    )
    held_interval = (float(boot.confidence_interval.low), float(boot.confidence_interval.high))
    se_held = float(boot.standard_error)
    if num_seeds >= 2:
        se_seeds = float(np.std(seed_gaps, ddof=1) / math.sqrt(num_seeds))
        q = float(scipy.stats.t.ppf(0.5 + confidence / 2, num_seeds - 1))
        seed_interval = (float(seed_gaps.mean() - q * se_seeds), float(seed_gaps.mean() + q * se_seeds))
        stderr = math.hypot(se_seeds, se_held)
        interval = (gap - q * stderr, gap + q * stderr)
    else:
        seed_interval, stderr, interval = None, se_held, held_interval

    def half(h: train.History, sl: slice) -> train.History:
        return train.History(h.steps, h.train_loss[sl], h.eval_steps, h.eval_loss[sl])

    fw_params = jax.tree_util.tree_map(lambda leaf: leaf[:num_seeds], trained)
    bw_params = jax.tree_util.tree_map(lambda leaf: leaf[num_seeds:], trained)
    return LearnabilityGap(
        gap=gap,
        interval=(float(interval[0]), float(interval[1])),
        seed_interval=seed_interval,
        held_out_interval=held_interval,
        stderr=float(stderr),
        confidence=float(confidence),
        seed_gaps=np.asarray(seed_gaps, dtype=np.float64),
        forward_loss=fw,
        backward_loss=bw,
        forward_sequence_loss=fw_seq,
        backward_sequence_loss=bw_seq,
        forward_history=half(history, slice(0, num_seeds)),
        backward_history=half(history, slice(num_seeds, None)),
        permutation=perm,
        model=model,
        forward_params=fw_params,
        backward_params=bw_params,
        held_out=held_rows,
        num_train=int(train_rows.shape[0]),
        num_held_out=int(held_rows.shape[0]),
        config=config,
    )


def permutation_reversal(permutation: Any) -> Any:
    """The engine reversal ``x -> x[permutation]`` of a fixed permutation of positions (any estimator accepts it).

    ``σ_π(x) = ln P(x) − ln P(x[π])`` has the properties of the EP for every permutation π (a bijection of the
    sequences of length ``T``; docs/mathematics.md §9). The result only accepts sequences of ``len(permutation)``.

    >>> import jax.numpy as jnp
    >>> permutation_reversal([2, 0, 1])(jnp.array([7, 8, 9])).tolist()
    [9, 7, 8]
    """
    perm = check_permutation(permutation, np.size(permutation) if np.ndim(permutation) == 1 else 1)
    index = jnp.asarray(perm)

    def reorder(x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[0] != index.shape[0]:
            raise ValueError(f"this reordering applies to sequences of {index.shape[0]} steps, got {describe(x)}.")
        return x[index]

    return reorder


def forward_entropy_production(
    key: jax.Array,
    gap: LearnabilityGap,
    *,
    num_samples: int = 1000,
    seed: int = 0,
    batch_size: int = 1024,
    progress: bool = False,
) -> Estimate:
    """Monte Carlo EP of the forward model of ``seed`` under the gap's reordering, beside ``∂``.

    This is :func:`epjax.entropy_production` of one trained model on its own samples of the data's length, with
    the reordering the backward twin was trained on (token reversal by default). It is the model's
    irreversibility, not a comparison of two models: a reversible data law can give a trained model a large EP
    and no gap, and a large gap can come with a modest EP (docs/mathematics.md §8.4).
    """
    forward, _ = gap.twins(seed)
    reversal = reverse_tokens if gap.is_reversal else permutation_reversal(gap.permutation)
    return entropy_production(
        key,
        gap.model,
        forward,
        num_steps=int(gap.permutation.size),
        num_samples=num_samples,
        reversal=reversal,
        batch_size=batch_size,
        progress=progress,
    )


def retrodiction_estimate(
    key: jax.Array, gap: LearnabilityGap, *, num_samples: int = 1000, seed: int = 0, progress: bool = False
) -> decomposition.EstimatedDecomposition:
    """The retrospective decomposition's estimate with the backward twin as the retrodiction.

    A backward model trained on token-reversed data approximates ``P(y_t | y_{t+1:T})`` of the *data*, and so of
    the forward model insofar as it fits them: it is the reverse model that
    :func:`epjax.decomposition.estimate_decomposition` needs (docs/mathematics.md §6, §8.4). Its bias is reported
    there (the backward twin's excess cross-entropy on the forward model's samples). Token reversal only.
    """
    if not gap.is_reversal:
        raise ValueError("the retrodiction estimate needs backward twins trained on token-reversed data.")
    forward, backward = gap.twins(seed)
    return decomposition.estimate_decomposition(
        key,
        gap.model,
        forward,
        gap.model,
        backward,
        num_steps=int(gap.permutation.size),
        num_samples=num_samples,
        progress=progress,
    )


__all__ = [
    "NAMED_REORDERINGS",
    "LearnabilityGap",
    "check_permutation",
    "datasets",
    "forward_entropy_production",
    "learnability_gap",
    "permutation_reversal",
    "reordering",
    "retrodiction_estimate",
]
