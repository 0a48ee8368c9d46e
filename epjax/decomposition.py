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
from epjax._exact import _INT32_MAX, all_sequences

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
        """``sum_t [I(x_t ; h_{t-1}) - I(x_t ; g_{t+1})]``, the refined second-law lower bound (eq. 101)."""
        return float(np.sum(self.forward_information - self.backward_information))


def _xlogy_ratio(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``p ln(p / q)`` elementwise with ``0 ln(0/q) = 0``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0)


def _group_ids(rows: np.ndarray) -> np.ndarray:
    """Integer label per row, equal for rows holding the same law (to 10 significant digits)."""
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
    total = V**T
    limit = min(check_positive_int("max_sequences", max_sequences), _INT32_MAX)
    if total > limit:
        raise ValueError(
            f"Exact decomposition enumerates vocab_size**num_steps = {V}**{T} = {total} sequences, more than "
            f"max_sequences = {limit}."
        )
    x = all_sequences(V, T, 0, total)  # [N, T]

    @jax.jit
    def tables(x):
        forward = jax.vmap(lambda s: model.next_token_log_probs(params, s))(x)  # [N, T, V]
        backward = jax.vmap(lambda s: model.next_token_log_probs(params, jnp.flip(s)))(x)
        return forward, backward

    log_fwd, log_bwd = (np.asarray(a, dtype=np.float64) for a in tables(x))
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
