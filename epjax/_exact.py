"""Exact entropy production of small discrete models by enumerating all ``V**T`` sequences (SPEC §4)."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from epjax._checks import check_positive_int
from epjax._contract import AutoregressiveModel, check_model, check_params
from epjax._estimators import Reversal
from epjax._reversal import reverse_tokens
from epjax._xla import compiler_options, jit_for

Array = jax.Array

_INT32_MAX = 2**31 - 1


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
    limit = min(max_sequences, _INT32_MAX)
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


def _chunk_sums(model, params, start, num_steps: int, chunk_size: int, total: int, reversal):
    x = all_sequences(model.vocab_size, num_steps, start, chunk_size)
    valid = start + jnp.arange(chunk_size) < total
    log_p = jax.vmap(lambda s: jnp.sum(model.log_probs(params, s)))(x)
    log_p_rev = jax.vmap(lambda s: jnp.sum(model.log_probs(params, reversal(s))))(x)
    p = jnp.where(valid, jnp.exp(log_p), 0.0)
    # p ln(p/q) with the convention 0 ln(0/q) = 0; p > 0 with q = 0 gives +inf (the KL is infinite).
    term = jnp.where(p > 0, p * (log_p - log_p_rev), 0.0)
    return jnp.sum(term), jnp.sum(p)


def exact_entropy_production(
    model: AutoregressiveModel,
    params: Any,
    *,
    num_steps: int,
    reversal: Reversal = reverse_tokens,
    max_sequences: int = 2**24,
    chunk_size: int = 2**14,
) -> float:
    """Exact entropy production of a discrete model by enumeration: ``S = sum_x P(x) [ln P(x) - ln P(rev x)]``.

    All ``V**T`` sequences are scored in jitted chunks of ``chunk_size`` (memory stays bounded), and the
    total probability is checked to be 1, which catches a ``log_probs`` that is not normalised.

    Args:
        model: a discrete model satisfying the contract (``vocab_size`` not None).
        params: the model's parameters.
        num_steps: sequence length ``T >= 1``.
        reversal: the time reversal defining sigma (a bijection on ``[V]**T``).
        max_sequences: refuse when ``V**T`` exceeds this (enumeration would take too long).
        chunk_size: sequences per compiled chunk.

    Returns:
        The exact EP in nats, as a Python float (``inf`` if a sequence with positive probability has a
        reversal of probability zero).

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
    check_params(model, params)
    vocab_size = model.vocab_size
    if vocab_size is None or isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)):
        raise ValueError(
            "`model.vocab_size` must be a positive int for exact enumeration (a discrete model); "
            f"got {vocab_size!r}."
        )
    vocab_size = check_positive_int("model.vocab_size", vocab_size)
    num_steps = check_positive_int("num_steps", num_steps)
    max_sequences = check_positive_int("max_sequences", max_sequences)
    chunk_size = check_positive_int("chunk_size", chunk_size)
    total = num_sequences(
        vocab_size, num_steps, max_sequences, what="Exact enumeration",
        instead="use epjax.entropy_production (Monte Carlo) instead, or a smaller num_steps.",
    )
    chunk_size = min(chunk_size, total)
    try:
        hash(model)
        hash(reversal)
        chunk_sums = jit_for(
            model, _chunk_sums, static_argnames=("model", "num_steps", "chunk_size", "total", "reversal")
        )
        run = lambda start: chunk_sums(model, params, start, num_steps, chunk_size, total, reversal)
    except TypeError:
        run = jax.jit(
            lambda start: _chunk_sums(model, params, start, num_steps, chunk_size, total, reversal),
            compiler_options=compiler_options(model) or None,
        )

    ep, mass, dtype = 0.0, 0.0, None
    for start in range(0, total, chunk_size):
        term, p = run(jnp.int32(start))
        ep += float(term)
        mass += float(p)
        dtype = p.dtype
    tol = 1e-9 if dtype == jnp.float64 else 1e-4
    if not abs(mass - 1.0) <= tol:
        raise ValueError(
            f"`model.log_probs` does not define a normalised distribution over the {total} sequences of length "
            f"{num_steps}: total probability {mass!r} (expected 1 within {tol:g})."
        )
    return ep
