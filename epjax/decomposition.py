"""Exact retrospective decomposition of EP for small discrete models, by enumeration (docs/mathematics.md §6).

``S = sum_t D_t`` with ``D_t = E KL(P(x_t | x_{t+1:T}) || q(x_t | g_{t+1})) = L_t + M_t`` (compression loss plus
model mismatch), where ``q(. | g_{t+1})`` is the model's next-token law after reading the reversed future
``x_T, ..., x_{t+1}``. The retrodiction ``P(x_t | x_{t+1:T})`` marginalises the whole past, which enumeration of
all ``V**T`` paths makes exact.

The model must provide the *state extension* of the contract::

    model.next_token_log_probs(params, x) -> [T, V]     # row t: log q(. | x_<t), row 0 the initial law

(every :class:`epjax.discrete.DiscreteModel` family has it). The backward summary ``g_{t+1}`` enters only
through the law ``q(. | g_{t+1})`` it induces, so futures are grouped by that law: this is the model's state up
to states that predict identically (for a first-order chain, the last token), and ``D_t = L_t + M_t`` holds
exactly with it.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from epjax._batching import map_trajectories, progress_bar, run_trajectories, sample_trajectories
from epjax._checks import check_key, check_num_steps, check_positive_int, is_concrete
from epjax._contract import check_model, check_params
from epjax._exact import num_sequences
from epjax._xla import jit_model

Array = jax.Array


class Decomposition(NamedTuple):
    """Per-step terms of the retrospective decomposition, each ``[T]`` over ``t = 1..T`` (nats, JAX arrays).

    The result of every exact decomposition: :func:`exact_decomposition` (discrete models, by enumeration) and
    :func:`epjax.kalman.decomposition` (for which ``x_t`` is the observation ``y_t`` and ``sum_t D_t`` is eq. 71).

    Attributes:
        D: ``D_t = L_t + M_t >= 0``; they sum to the EP.
        L: compression loss ``I(x_t ; x_{t+1:T} | g_{t+1}) >= 0``.
        M: model mismatch ``E KL(P(x_t | g_{t+1}) || q(x_t | g_{t+1})) >= 0``.
        forward_information: ``I(x_t ; h_{t-1})``.
        backward_information: ``I(x_t ; g_{t+1})``.
    """

    D: Array
    L: Array
    M: Array
    forward_information: Array
    backward_information: Array

    @property
    def total(self) -> Array:
        """``sum_t D_t``, the entropy production."""
        return jnp.sum(self.D)

    @property
    def second_law_bound(self) -> Array:
        """``sum_t [I(x_t ; h_{t-1}) - I(x_t ; g_{t+1})]``, the refined second-law lower bound (eq. 101).

        It equals ``sum_t L_t`` identically: ``sum_t I(x_t ; h_{t-1}) = sum_t I(x_t ; x_{<t})`` and
        ``sum_t I(x_t ; x_{>t})`` are both the total correlation of the path, and
        ``L_t = I(x_t ; x_{>t}) - I(x_t ; g_{t+1})``. So ``EP - bound = sum_t M_t``: the bound is tight
        exactly when the model's backward summary predicts as well as the true retrodiction allows.
        """
        return jnp.sum(self.forward_information - self.backward_information)


# --- the model's law after every prefix ------------------------------------------------------------------------
#
# Everything the decomposition needs is the model's next-token law after each prefix of length k < T:
# ``tables[k][i] = log q(. | prefix i)`` (prefix i: the k digits of i in base V, most significant first). The path
# law P(x) is the product of table entries along x; the forward summary h_{t-1} of x_{<t} is tables[t] at that
# prefix, and the backward summary g_{t+1} -- the same model fed x_T, ..., x_{t+1} -- is tables[T-1-t] at the
# reversed future. There are (V**T - 1) / (V - 1) prefixes: fewer model calls than the V**T paths themselves.


def _prefix_rows(model, params, k, start, num_steps: int, chunk_size: int):
    """``log q(. | prefix)`` for prefixes ``start .. start + chunk_size - 1`` of length ``k`` (traced), ``[c, V]``.

    Each prefix is scored as a full-length sequence padded with token 0: row ``k`` of ``next_token_log_probs``
    depends only on the first ``k`` tokens (the model is causal), so the padding is never read.
    """
    V = model.vocab_size
    index = start + jnp.arange(chunk_size, dtype=jnp.int32)
    position = jnp.arange(num_steps, dtype=jnp.int32)
    exponent = jnp.clip(k - 1 - position, 0)
    digits = (index[:, None] // (V**exponent)[None, :]) % V
    x = jnp.where(position[None, :] < k, digits, 0)

    def row(s):
        table = model.next_token_log_probs(params, s)
        if jnp.shape(table) != (num_steps, V):
            raise ValueError(
                f"`model.next_token_log_probs(params, x)` must return shape [T, V] = [{num_steps}, {V}] for a "
                f"sequence of length {num_steps}, got {list(jnp.shape(table))}."
            )
        return table[k]

    return jax.vmap(row)(x)


def _prefix_tables(model, params, num_steps: int, chunk_size: int, progress: bool) -> list[Array]:
    """``[tables[0], ..., tables[T-1]]``, ``tables[k]`` of shape ``[V**k, V]``, computed in chunks."""
    V = model.vocab_size
    sizes = [V**k for k in range(num_steps)]
    if not is_concrete(params):  # inside a user's jit/grad: one lax.map per prefix length
        tables = []
        for k, size in enumerate(sizes):
            c = min(chunk_size, size)
            starts = jnp.arange(0, size, c, dtype=jnp.int32)
            rows = jax.lax.map(lambda st, k=k, c=c: _prefix_rows(model, params, k, st, num_steps, c), starts)
            tables.append(rows.reshape(-1, V)[:size])
        return tables
    c = min(chunk_size, sizes[-1])  # one compiled chunk shape for every k
    rows_of = jit_model(model, _prefix_rows, num_steps=num_steps, chunk_size=c)
    bar = progress_bar(sum(-(-size // c) for size in sizes), f"decomposition: {V}^{num_steps} paths", "chunk") \
        if progress else None
    tables = []
    try:
        for k, size in enumerate(sizes):
            chunks = []
            for st in range(0, size, c):
                chunks.append(rows_of(params, jnp.int32(k), jnp.int32(st)))
                if bar is not None:
                    bar.update(1)
            tables.append(jnp.concatenate(chunks)[:size])
    finally:
        if bar is not None:
            bar.close()
    return tables


def _digit_reversal(num_digits: int, base: int) -> np.ndarray:
    """``r[i]``: the index whose base-``base`` digits are those of ``i`` in reverse order."""
    if num_digits == 0:
        return np.zeros(1, np.int64)
    grid = np.arange(base**num_digits).reshape((base,) * num_digits)
    return grid.transpose(tuple(reversed(range(num_digits)))).reshape(-1)


def _group_ids(rows: Array) -> Array:
    """Integer label per row, equal for rows holding the same law (traceable; labels in ``[0, len(rows))``).

    Rows are compared after rounding to 10 decimals (float64) or 5 (float32), so that states predicting the
    same law through different arithmetic still share a label.
    """
    decimals = 10 if rows.dtype == jnp.float64 else 5
    r = jax.lax.stop_gradient(jnp.round(rows, decimals))
    order = jnp.lexsort([r[:, j] for j in reversed(range(r.shape[1]))])
    ranked = r[order]
    new = jnp.concatenate([jnp.ones(1, bool), jnp.any(ranked[1:] != ranked[:-1], axis=1)])
    return jnp.zeros(r.shape[0], jnp.int32).at[order].set(jnp.cumsum(new, dtype=jnp.int32) - 1)


def _weighted_log_ratio(weight: Array, log_a: Array, log_b: Array) -> Array:
    """``sum weight (log_a - log_b)`` with ``0 (log 0 - log 0) = 0``, and no NaN in the untaken branch's gradient."""
    positive = weight > 0
    diff = jnp.where(positive, log_a, 0.0) - jnp.where(positive, log_b, 0.0)
    return jnp.sum(jnp.where(positive, weight * diff, 0.0))


def _safe_log(x: Array) -> Array:
    return jnp.log(jnp.where(x > 0, x, 1.0))


def _information(joint: Array, ids: Array) -> tuple[Array, Array]:
    """``I(x ; phi)`` and ``log P(x | phi)`` per row of ``joint [n, V]`` (mass of row n with x = v), labels ``ids``."""
    by_group = jax.ops.segment_sum(joint, ids, num_segments=joint.shape[0])
    p_group = jnp.sum(by_group, axis=1, keepdims=True)
    p_x = jnp.sum(by_group, axis=0, keepdims=True)
    info = _weighted_log_ratio(by_group, _safe_log(by_group), _safe_log(p_group) + _safe_log(p_x))
    return info, (_safe_log(by_group) - _safe_log(p_group))[ids]


def _decompose(tables: list[Array], vocab_size: int) -> tuple[Decomposition, Array]:
    """The decomposition from the prefix tables (pure), and the total probability (1 for a normalised model)."""
    V, T = vocab_size, len(tables)
    log_p = jnp.zeros(1, tables[0].dtype)
    for table in tables:  # ln P of every prefix, extended one token at a time
        log_p = (log_p[:, None] + table).reshape(-1)
    p = jnp.exp(log_p)
    mass = jnp.sum(p)
    p = p / mass
    terms = []
    for t in range(T):  # 0-based position of x_t; k tokens follow it
        k = T - 1 - t
        cube = p.reshape(V**t, V, V**k)  # (past, x_t, future)
        joint = jnp.sum(cube, axis=0).T  # [V**k, V]: P(future, x_t)
        log_retro = _safe_log(joint) - _safe_log(jnp.sum(joint, axis=1, keepdims=True))  # log P(x_t | future)
        log_q = tables[k][_digit_reversal(k, V)]  # log q(x_t | g_{t+1}): the model fed the reversed future
        backward, log_by_g = _information(joint, _group_ids(log_q))
        D = _weighted_log_ratio(joint, log_retro, log_q)
        M = _weighted_log_ratio(joint, log_by_g, log_q)
        L = _weighted_log_ratio(joint, log_retro, log_by_g)
        forward, _ = _information(jnp.sum(cube, axis=2), _group_ids(tables[t]))
        terms.append((D, L, M, forward, backward))
    return Decomposition(*(jnp.stack(column) for column in zip(*terms, strict=True))), mass


_decompose_jit = jax.jit(_decompose, static_argnums=1)


def exact_decomposition(
    model: Any,
    params: Any,
    *,
    num_steps: int,
    max_sequences: int = 2**22,
    chunk_size: int = 2**12,
    progress: bool = False,
) -> Decomposition:
    """Exact retrospective decomposition ``S = sum_t (L_t + M_t)`` of a small discrete model by enumeration.

    The model is evaluated on every prefix of length ``< T`` (``(V**T - 1) / (V - 1)`` sequences, in compiled
    chunks of ``chunk_size``, with an optional progress bar); the path law of all ``V**T`` paths and every
    conditional the decomposition needs follow from those tables by reshapes and sums, so memory is ``O(V**T)``
    numbers, never ``V**T`` copies of ``[T, V]`` tables. Traceable: inside a user's ``jit`` or ``grad`` (traced
    parameters) the chunks run under ``jax.lax.map`` and the result is differentiable in ``params`` (the grouping
    of states by the law they predict is piecewise constant and carries no gradient).

    Args:
        model: a discrete contract model with the state extension ``next_token_log_probs``.
        params: its parameters.
        num_steps: ``T >= 1``.
        max_sequences: refuse when ``V**T`` exceeds this.
        chunk_size: prefixes per compiled chunk.
        progress: show a progress bar (host path only).

    Returns:
        :class:`Decomposition` of per-step arrays ``[T]`` in the dtype of the model's log-probabilities.
    """
    check_model(model)
    if not callable(getattr(model, "next_token_log_probs", None)):
        raise ValueError(
            "`model` must provide the state extension `next_token_log_probs(params, x) -> [T, V]` for the "
            f"retrospective decomposition; {type(model).__name__} does not."
        )
    V = model.vocab_size
    if V is None or isinstance(V, bool) or not isinstance(V, (int, np.integer)):
        raise ValueError(f"`model.vocab_size` must be a positive int (a discrete model), got {V!r}.")
    T = check_num_steps(num_steps)
    chunk_size = check_positive_int("chunk_size", chunk_size)
    num_sequences(
        V, T, check_positive_int("max_sequences", max_sequences), what="Exact decomposition",
        instead="use estimate_decomposition with a trained reverse model, or a smaller num_steps.",
    )
    if is_concrete(params):
        check_params(model, params)
    tables = _prefix_tables(model, params, T, chunk_size, progress)
    # Compiled even on the host path: op by op, the reshapes and sums of T steps dispatch hundreds of tiny ops.
    decomposition, mass = _decompose_jit(tables, V)
    if is_concrete(mass):
        tol = 1e-9 if mass.dtype == jnp.float64 else 1e-4
        if not abs(float(mass) - 1.0) <= tol:
            raise ValueError(
                f"`model` does not define a normalised law over the {V**T} sequences of length {T}: total "
                f"probability {float(mass)!r} (expected 1 within {tol:g})."
            )
    return decomposition


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
    progress: bool = False,
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
        num_samples: trajectories ``N >= 2`` (trajectory ``i`` uses ``fold_in(key, i)``).
        progress: show a progress bar (host path only).

    Returns:
        :class:`EstimatedDecomposition` (NumPy and Python floats; JAX arrays when called inside a user's
        ``jit``, where it runs as the traceable core).
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
    check_key(key)
    T = check_num_steps(num_steps)
    N = check_positive_int("num_samples", num_samples, minimum=2)
    static = (T, reverse_model)
    both = (params, reverse_params)
    if is_concrete(key, params, reverse_params):
        d, b = run_trajectories(
            _retrodiction_terms, model, both, key, N, static=static, batch_size=min(N, 1024), progress=progress,
            desc=f"decomposition estimate, T={T}",
        )
        return _estimated(np, d.astype(np.float64), b.astype(np.float64))
    d, b = map_trajectories(_retrodiction_terms, model, both, key, N, static=static, batch_size=min(N, 1024))
    return _estimated(jnp, d, b)


def _retrodiction_terms(model, params, key, num_steps: int, reverse_model):
    """Per trajectory: ``ln r(x_t | x_{t+1:T}) - ln q(x_t | g_{t+1})`` ``[T]`` and ``ln P(x) - ln R(x)``."""
    params, reverse_params = params
    x = model.sample(key, params, num_steps)
    rev = jnp.flip(x)
    log_q = jnp.flip(model.log_probs(params, rev))  # ln q(x_t | g_{t+1}), original time order
    log_r = jnp.flip(reverse_model.log_probs(reverse_params, rev))  # ln r(x_t | x_{t+1:T})
    log_p = model.log_probs(params, x)
    return log_r - log_q, jnp.sum(log_p) - jnp.sum(log_r)


def _estimated(xp: Any, d: Any, b: Any) -> EstimatedDecomposition:
    """Means and standard errors of the per-trajectory terms, with the array module ``xp`` (np or jnp)."""
    n = d.shape[0]
    sqrt_n = math.sqrt(n)
    totals = d.sum(axis=1)
    scalar = float if xp is np else (lambda v: v)
    return EstimatedDecomposition(
        D=d.mean(axis=0),
        D_stderr=d.std(axis=0, ddof=1) / sqrt_n,
        total=scalar(totals.mean()),
        total_stderr=scalar(totals.std(ddof=1) / sqrt_n),
        bias=scalar(b.mean()),
        bias_stderr=scalar(b.std(ddof=1) / sqrt_n),
        num_samples=n,
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

    check_key(key)
    T = check_num_steps(num_steps)
    n = check_positive_int("num_sequences", num_sequences)
    k_data, k_init, k_train = jax.random.split(key, 3)
    held_out = max(2, n // 10)
    samples = sample_trajectories(k_data, model, params, num_steps=T, num=n + held_out)
    reversed_samples = jnp.asarray(np.flip(samples, axis=1))
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
