"""Exact entropy production of small discrete models by enumerating all ``V**T`` sequences (docs/mathematics.md §4)."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from epjax._batching import progress_bar
from epjax._checks import INT32_MAX, check_num_steps, check_positive_int, is_concrete
from epjax._contract import AutoregressiveModel, check_model, check_params
from epjax._estimators import Reversal, reversed_sequence, total_log_prob
from epjax._reversal import reverse_tokens
from epjax._xla import jit_model

Array = jax.Array


def num_sequences(vocab_size: int, num_steps: int, max_sequences: int, *, what: str, instead: str) -> int:
    """``V**T``, after checking that it is at most ``max_sequences`` (and int32-indexable) for enumeration.

    Args:
        vocab_size: ``V``.
        num_steps: ``T``.
        max_sequences: the caller's limit.
        what: what the enumeration is for, to start the message (e.g. ``"Exact enumeration"``).
        instead: what to do instead, ending the message.

    Returns:
        ``V**T`` as an int.
    """
    limit = min(max_sequences, INT32_MAX)
    # Compare exponents first: V**T itself can have more digits than Python will print.
    if num_steps * math.log(vocab_size) > math.log(limit) + 1.0:
        count = f"about 10^{num_steps * math.log10(vocab_size):.1f}"
    else:
        total = vocab_size**num_steps
        if total <= limit:
            return total
        count = str(total)
    raise ValueError(
        f"{what} needs vocab_size**num_steps = {vocab_size}**{num_steps} = {count} sequences, more than "
        f"max_sequences = {limit}; {instead}"
    )


def all_sequences(vocab_size: int, num_steps: int, start: int, count: int) -> Array:
    """Sequences number ``start .. start+count-1`` in lexicographic order of ``[V]**T``, as int32 ``[count, T]``.

    >>> all_sequences(2, 3, 0, 4).tolist()
    [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1]]
    """
    index = start + jnp.arange(count, dtype=jnp.int32)
    powers = vocab_size ** jnp.arange(num_steps - 1, -1, -1, dtype=jnp.int32)  # most significant digit first
    return (index[:, None] // powers[None, :]) % vocab_size


def _chunk_terms(model, params, start, num_steps: int, chunk_size: int, total: int, reversal, with_indices: bool):
    """``sum p (ln p - ln q)`` and ``sum p`` over sequences ``start .. start + chunk_size - 1`` (``q``: reversed).

    With ``with_indices``, also the index (in ``[V]**T``) of every sequence's reversal (``-1`` past ``total``),
    for the host's check that the reversal is a bijection.
    """
    x = all_sequences(model.vocab_size, num_steps, start, chunk_size)
    valid = start + jnp.arange(chunk_size) < total
    log_p = jax.vmap(lambda s: total_log_prob(model, params, s, "a sequence"))(x)
    rx = jax.vmap(lambda s: reversed_sequence(reversal, s))(x)
    log_q = jax.vmap(lambda s: total_log_prob(model, params, s, "the reversed sequence"))(rx)
    p = jnp.where(valid, jnp.exp(log_p), 0.0)
    # p ln(p/q) with the convention 0 ln(0/q) = 0; p > 0 with q = 0 gives +inf (the KL is infinite). The logs are
    # replaced where p = 0 so that the untaken branch cannot put a NaN into a gradient.
    positive = p > 0
    log_ratio = jnp.where(positive, log_p, 0.0) - jnp.where(positive, log_q, 0.0)
    out = (jnp.sum(jnp.where(positive, p * log_ratio, 0.0)), jnp.sum(p))
    if with_indices:
        powers = model.vocab_size ** jnp.arange(num_steps - 1, -1, -1, dtype=jnp.int32)
        out += (jnp.where(valid, jnp.sum(rx.astype(jnp.int32) * powers, axis=1), -1),)
    return out


def _check_bijection(seen: np.ndarray, indices: np.ndarray, vocab_size: int, num_steps: int) -> None:
    idx = indices[indices >= 0]
    if np.any(idx >= seen.size) or np.any(seen[idx]) or np.unique(idx).size != idx.size:
        raise ValueError(
            f"`reversal` must be a bijection on the {vocab_size}**{num_steps} sequences of length {num_steps} (for "
            "exact enumeration and for the fluctuation theorem): two sequences map to the same reversed sequence."
        )
    seen[idx] = True


def exact_entropy_production(
    model: AutoregressiveModel,
    params: Any,
    *,
    num_steps: int,
    reversal: Reversal = reverse_tokens,
    max_sequences: int = 2**24,
    chunk_size: int = 2**14,
    progress: bool = False,
) -> float | Array:
    """Exact entropy production of a discrete model by enumeration: ``S = sum_x P(x) [ln P(x) - ln P(rev x)]``.

    All ``V**T`` sequences are scored in chunks of ``chunk_size`` (memory stays bounded). Outside ``jit`` the
    chunks run as separate compiled calls (with an optional progress bar), the total probability is checked to
    be 1 (which catches a ``log_probs`` that is not normalised) and the reversal to be a bijection on
    ``[V]**T``. Inside a user's ``jit``, ``vmap`` or ``grad`` (traced parameters) the same sum runs as one
    ``jax.lax.map`` over the chunks; those value checks are then impossible, so run the function once outside
    first. The result is differentiable in ``params`` (reverse and forward mode).

    Args:
        model: a discrete model satisfying the contract (``vocab_size`` not None).
        params: the model's parameters.
        num_steps: sequence length ``T >= 1``.
        reversal: the time reversal defining sigma (a bijection on ``[V]**T``).
        max_sequences: refuse when ``V**T`` exceeds this (enumeration would take too long).
        chunk_size: sequences per compiled chunk.
        progress: show a progress bar over chunks (host path only).

    Returns:
        The exact EP in nats (``inf`` if a sequence with positive probability has a reversal of probability
        zero): a Python float summed in float64 on the host, or, with traced parameters, a scalar array in the
        dtype of the model's log-probabilities.

    >>> import jax.numpy as jnp
    >>> class Coin:  # i.i.d. tokens are reversible: EP = 0
    ...     vocab_size = 2
    ...     def log_probs(self, params, x):
    ...         return jnp.log(params)[x]
    ...     def sample(self, key, params, num_steps):
    ...         raise NotImplementedError
    >>> round(exact_entropy_production(Coin(), jnp.array([0.3, 0.7]), num_steps=4), 12)
    0.0
    """
    check_model(model)
    vocab_size = model.vocab_size
    if vocab_size is None or isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)):
        raise ValueError(
            "`model.vocab_size` must be a positive int for exact enumeration (a discrete model); "
            f"got {vocab_size!r}."
        )
    vocab_size = check_positive_int("model.vocab_size", vocab_size)
    num_steps = check_num_steps(num_steps)
    max_sequences = check_positive_int("max_sequences", max_sequences)
    chunk_size = check_positive_int("chunk_size", chunk_size)
    if not callable(reversal):
        raise ValueError(f"`reversal` must be a function x -> reversed x, got {type(reversal).__name__}.")
    total = num_sequences(
        vocab_size, num_steps, max_sequences, what="Exact enumeration",
        instead="use epjax.entropy_production (Monte Carlo) instead, or a smaller num_steps.",
    )
    chunk_size = min(chunk_size, total)
    starts = np.arange(0, total, chunk_size, dtype=np.int32)
    static = dict(num_steps=num_steps, chunk_size=chunk_size, total=total, reversal=reversal)
    if not is_concrete(params):
        terms = jax.lax.map(
            lambda start: _chunk_terms(model, params, start, with_indices=False, **static), jnp.asarray(starts)
        )
        return jnp.sum(terms[0])
    check_params(model, params)
    chunk_terms = jit_model(model, _chunk_terms, with_indices=True, **static)
    run = lambda start: chunk_terms(params, start)
    bar = progress_bar(len(starts), f"enumerating {vocab_size}^{num_steps} paths") if progress else None
    ep, mass, dtype = 0.0, 0.0, None
    seen = np.zeros(total, dtype=bool)
    try:
        for start in starts:
            term, p, indices = run(jnp.int32(start))
            _check_bijection(seen, np.asarray(indices), vocab_size, num_steps)
            ep += float(term)
            mass += float(p)
            dtype = p.dtype
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    tol = 1e-9 if dtype == jnp.float64 else 1e-4
    if not abs(mass - 1.0) <= tol:
        raise ValueError(
            f"`model.log_probs` does not define a normalised distribution over the {total} sequences of length "
            f"{num_steps}: total probability {mass!r} (expected 1 within {tol:g})."
        )
    return ep
