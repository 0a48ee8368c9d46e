"""Exact retrospective decomposition of EP for small discrete models, by enumeration (SPEC §6).

``S = sum_t D_t`` with ``D_t = E KL(P(x_t | x_{t+1:T}) || q(x_t | g_{t+1})) = L_t + M_t`` (compression loss plus
model mismatch), where ``q(. | g_{t+1})`` is the model's next-token law after reading the reversed future
``x_T, ..., x_{t+1}``. The retrodiction ``P(x_t | x_{t+1:T})`` marginalises the whole past, which enumeration of
all ``V**T`` paths makes exact.

The model must provide the *state extension* of the contract::

    model.next_token_log_probs(params, x) -> [T, V]     # row t: log q(. | x_<t), row 0 the initial law

(every :class:`epjax._discrete.DiscreteModel` family has it). The backward summary ``g_{t+1}`` enters only
through the law ``q(. | g_{t+1})`` it induces, so futures are grouped by that law: this is the model's state up
to states that predict identically (for a first-order chain, the last token), and ``D_t = L_t + M_t`` holds
exactly with it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from epjax._checks import check_positive_int
from epjax._contract import check_model, check_params
from epjax._exact import all_sequences, num_sequences

Array = jax.Array


class Decomposition(NamedTuple):
    """Per-step terms of the retrospective decomposition, each ``[T]`` over ``t = 1..T`` (nats).

    Attributes:
        D: ``D_t = L_t + M_t >= 0``; they sum to the EP.
        L: compression loss ``I(x_t ; x_{t+1:T} | g_{t+1}) >= 0``.
        M: model mismatch ``E KL(P(x_t | g_{t+1}) || q(x_t | g_{t+1})) >= 0``.
        forward_information: ``I(x_t ; h_{t-1})``.
        backward_information: ``I(x_t ; g_{t+1})``.
    """

    D: np.ndarray
    L: np.ndarray
    M: np.ndarray
    forward_information: np.ndarray
    backward_information: np.ndarray

    @property
    def total(self) -> float:
        """``sum_t D_t``, the entropy production."""
        return float(np.sum(self.D))

    @property
    def second_law_bound(self) -> float:
        """``sum_t [I(x_t ; h_{t-1}) - I(x_t ; g_{t+1})]``, the refined second-law lower bound (eq. 101).

        It equals ``sum_t L_t`` identically: ``sum_t I(x_t ; h_{t-1}) = sum_t I(x_t ; x_{<t})`` and
        ``sum_t I(x_t ; x_{>t})`` are both the total correlation of the path, and
        ``L_t = I(x_t ; x_{>t}) - I(x_t ; g_{t+1})``. So ``EP - bound = sum_t M_t``: the bound is tight
        exactly when the model's backward summary predicts as well as the true retrodiction allows.
        """
        return float(np.sum(self.forward_information - self.backward_information))


def _xlogy_ratio(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``p ln(p / q)`` elementwise with ``0 ln(0/q) = 0``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0)


def _group_ids(rows: np.ndarray) -> np.ndarray:
    """Integer label per row, equal for rows holding the same law (log-probabilities equal to 1e-10)."""
    rounded = np.round(rows, 10)
    _, ids = np.unique(rounded, axis=0, return_inverse=True)
    return ids.reshape(-1)


def _information(joint: np.ndarray, ids: np.ndarray) -> tuple[float, np.ndarray]:
    """``I(x ; phi)`` and ``P(x | phi)`` from ``joint[n, V]`` (mass of sequence n with x = v) and labels ``ids``."""
    num = int(ids.max()) + 1
    by_group = np.zeros((num, joint.shape[1]))
    np.add.at(by_group, ids, joint)
    p_group = by_group.sum(axis=1, keepdims=True)
    p_x = by_group.sum(axis=0, keepdims=True)
    conditional = np.divide(by_group, p_group, out=np.zeros_like(by_group), where=p_group > 0)
    info = float(np.sum(_xlogy_ratio(by_group, p_group * p_x)))
    return info, conditional


def exact_decomposition(model: Any, params: Any, *, num_steps: int, max_sequences: int = 2**20) -> Decomposition:
    """Exact retrospective decomposition ``S = sum_t (L_t + M_t)`` of a small discrete model by enumeration.

    Args:
        model: a discrete contract model with the state extension ``next_token_log_probs``.
        params: its parameters.
        num_steps: ``T >= 1``.
        max_sequences: refuse when ``V**T`` exceeds this.

    Returns:
        :class:`Decomposition` of per-step arrays ``[T]`` (float64 NumPy).
    """
    check_model(model)
    check_params(model, params)
    if not callable(getattr(model, "next_token_log_probs", None)):
        raise ValueError(
            "`model` must provide the state extension `next_token_log_probs(params, x) -> [T, V]` for the "
            f"retrospective decomposition; {type(model).__name__} does not."
        )
    V = model.vocab_size
    if V is None or isinstance(V, bool) or not isinstance(V, (int, np.integer)):
        raise ValueError(f"`model.vocab_size` must be a positive int (a discrete model), got {V!r}.")
    T = check_positive_int("num_steps", num_steps)
    total = num_sequences(
        V, T, check_positive_int("max_sequences", max_sequences), what="Exact decomposition",
        instead="use estimate_decomposition with a trained reverse model, or a smaller num_steps.",
    )
    x = all_sequences(V, T, 0, total)  # [N, T]

    @jax.jit
    def tables(x):
        forward = jax.vmap(lambda s: model.next_token_log_probs(params, s))(x)  # [N, T, V]
        backward = jax.vmap(lambda s: model.next_token_log_probs(params, jnp.flip(s)))(x)
        return forward, backward

    log_fwd, log_bwd = (np.asarray(a, dtype=np.float64) for a in tables(x))
    if log_fwd.shape != (total, T, V):
        raise ValueError(
            f"`model.next_token_log_probs(params, x)` must return shape [T, V] = [{T}, {V}] for a sequence of "
            f"length {T}, got {list(log_fwd.shape[1:])}."
        )
    xs = np.asarray(x)
    rows = np.arange(total)[:, None]
    log_p = np.sum(log_fwd[rows, np.arange(T)[None, :], xs], axis=1)
    p = np.exp(log_p)
    mass = p.sum()
    if not abs(mass - 1.0) <= 1e-6:
        raise ValueError(f"`model` does not define a normalised law over the {total} sequences: total {mass!r}.")
    p = p / mass

    D, L, M, fwd_info, bwd_info = (np.zeros(T) for _ in range(5))
    for t in range(T):  # 0-based position of x_t
        # Future x_{t+1:T} as an integer label; joint[n, v]: mass of the sequence n at x_t = v.
        future = xs[:, t + 1 :] @ (V ** np.arange(T - t - 2, -1, -1)) if t < T - 1 else np.zeros(total, int)
        joint = np.zeros((total, V))
        joint[rows[:, 0], xs[:, t]] = p
        # Retrodiction P(x_t | x_{t+1:T}).
        _, retro = _information(joint, future)
        # Model law q(. | g_{t+1}) = row T-1-t of the reversed sequence's next-token table.
        q_rows = np.exp(log_bwd[:, T - 1 - t, :])
        g_ids = _group_ids(log_bwd[:, T - 1 - t, :])
        bwd_info[t], by_g = _information(joint, g_ids)
        p_future = np.zeros(int(future.max()) + 1)
        np.add.at(p_future, future, p)
        # Per-sequence weights: each sequence carries mass p; E over futures of a KL = sum_n p_n KL(row of n).
        kl_retro = np.sum(_xlogy_ratio(retro[future], q_rows), axis=1)
        kl_group = np.sum(_xlogy_ratio(by_g[g_ids], q_rows), axis=1)
        D[t] = float(np.sum(p * kl_retro))
        M[t] = float(np.sum(p * kl_group))
        L[t] = float(np.sum(p * np.sum(_xlogy_ratio(retro[future], by_g[g_ids]), axis=1)))
        h_ids = _group_ids(log_fwd[:, t, :])
        fwd_info[t], _ = _information(joint, h_ids)
    return Decomposition(D, L, M, fwd_info, bwd_info)


class EstimatedDecomposition(NamedTuple):
    """Monte Carlo estimate of the per-step terms ``D_t`` from a trained reverse model.

    Attributes:
        D: ``[T]`` estimates ``E[ln r(x_t | x_{t+1:T}) - ln q(x_t | g_{t+1})]``.
        D_stderr: ``[T]`` their standard errors.
        total: ``sum_t D_t`` (an estimate of ``S - bias``).
        total_stderr: its standard error.
        bias: estimate of the total downward bias ``KL(P || R) = E[ln P(x) - ln R(x)]`` (``R`` the reverse
            model's path law), which is exactly the reverse model's excess cross-entropy summed over steps.
        bias_stderr: its standard error.
        num_samples: trajectories used.
    """

    D: np.ndarray
    D_stderr: np.ndarray
    total: float
    total_stderr: float
    bias: float
    bias_stderr: float
    num_samples: int


def estimate_decomposition(
    key: Array,
    model: Any,
    params: Any,
    reverse_model: Any,
    reverse_params: Any,
    *,
    num_steps: int,
    num_samples: int,
) -> EstimatedDecomposition:
    """Estimate the per-step ``D_t`` of a model whose retrodiction is intractable, with a reverse model.

    ``r(x_t | x_{t+1:T})``, a model trained on token-reversed samples (see :func:`train_reverse_model`),
    stands in for the retrodiction ``P(x_t | x_{t+1:T})``:

        D_t_hat = E[ ln r(x_t | x_{t+1:T}) - ln q(x_t | g_{t+1}) ] = D_t - E KL(P(x_t | x_{t+1:T}) || r(x_t | .))

    **Bias: downward, by the reverse model's excess cross-entropy at step t** (never negative). The steps'
    biases sum to ``KL(P || R)``, which *is* estimable because ``ln P(x)`` is exact; it is reported as
    ``bias``, so ``total + bias`` estimates the EP itself. Each per-step bias lies in ``[0, bias]``.

    Args:
        key: a ``jax.random`` key.
        model: the (forward) contract model (discrete, or continuous with densities); ``q(. | g)`` is its law
            after reading the reversed future.
        params: its parameters.
        reverse_model: a model over the same vocabulary scoring reversed sequences.
        reverse_params: its parameters.
        num_steps: ``T``.
        num_samples: trajectories ``N >= 2``.

    Returns:
        :class:`EstimatedDecomposition`.
    """
    check_model(model)
    check_model(reverse_model)
    check_params(model, params)
    check_params(reverse_model, reverse_params)
    if model.vocab_size != reverse_model.vocab_size:
        raise ValueError(
            f"`reverse_model` must share the vocabulary of `model` ({model.vocab_size}), got "
            f"{reverse_model.vocab_size}."
        )
    T = check_positive_int("num_steps", num_steps)
    N = check_positive_int("num_samples", num_samples, minimum=2)

    @jax.jit
    def per_sample(key):
        x = model.sample(key, params, T)
        rev = jnp.flip(x)
        log_q = jnp.flip(model.log_probs(params, rev))  # ln q(x_t | g_{t+1}), original time order
        log_r = jnp.flip(reverse_model.log_probs(reverse_params, rev))  # ln r(x_t | x_{t+1:T})
        log_p = model.log_probs(params, x)
        return log_r - log_q, jnp.sum(log_p) - jnp.sum(log_r)

    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(N, dtype=jnp.uint32))
    d, b = (np.asarray(a, dtype=np.float64) for a in jax.lax.map(per_sample, keys, batch_size=min(N, 1024)))
    sqrt_n = np.sqrt(N)
    totals = d.sum(axis=1)
    return EstimatedDecomposition(
        D=d.mean(axis=0),
        D_stderr=d.std(axis=0, ddof=1) / sqrt_n,
        total=float(totals.mean()),
        total_stderr=float(totals.std(ddof=1) / sqrt_n),
        bias=float(b.mean()),
        bias_stderr=float(b.std(ddof=1) / sqrt_n),
        num_samples=N,
    )


def train_reverse_model(
    key: Array,
    model: Any,
    params: Any,
    *,
    num_steps: int,
    num_sequences: int,
    config: Any = None,
    init_params: Any = None,
    progress: bool = False,
):
    """Train a reverse model of the same family on token-reversed samples of ``model`` (epjax.train loop).

    Args:
        key: a ``jax.random`` key.
        model: a trainable discrete family model (``epjax.train`` compatible).
        params: its parameters (the samples' law).
        num_steps: length ``T`` of the training sequences.
        num_sequences: number of sampled training sequences (a tenth more are drawn as held-out data).
        config: an ``epjax.train.TrainConfig`` (default settings if None).
        init_params: starting parameters of the reverse model (default: ``model.init``).
        progress: show a progress bar.

    Returns:
        ``(reverse_params, history)``; the reverse model is ``model`` itself, with new parameters.
    """
    from epjax import train as _train  # the training layer sits above the engine

    T = check_positive_int("num_steps", num_steps)
    n = check_positive_int("num_sequences", num_sequences)
    k_data, k_init, k_train = jax.random.split(key, 3)
    held_out = max(2, n // 10)
    keys = jax.random.split(k_data, n + held_out)
    samples = jax.vmap(lambda k: model.sample(k, params, T))(keys)
    reversed_samples = jnp.flip(samples, axis=1)
    start = model.init(k_init) if init_params is None else init_params
    return _train.train(
        k_train,
        model,
        start,
        reversed_samples[:n],
        config=config if config is not None else _train.TrainConfig(),
        eval_data=reversed_samples[n:],
        progress=progress,
    )
