"""First-order Markov chains: the discrete process with a known answer (issue: neural families, item 5).

A chain with transition matrix ``P`` and initial law ``p_1`` is an autoregressive model whose deterministic
summary is the last token. Its exact entropy production follows from its marginals, without sampling:

    S(T) = E[ln p_1(x_1)] - E[ln p_1(x_T)] + sum_{t=1}^{T-1} sum_ij mu_t(i) P_ij ln(P_ij / P_ji),

with ``mu_t = p_1 P^{t-1}``; started from the stationary law ``pi`` the boundary terms cancel and
``S(T) = (T - 1) sum_ij pi_i P_ij ln(P_ij / P_ji)``, zero exactly when ``P`` satisfies detailed balance.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from epjax._checks import as_real_array, check_finite, check_num_steps, check_positive_int, describe, is_concrete
from epjax.discrete import DiscreteModel, check_temperature

Array = jax.Array


class Params(NamedTuple):
    """Log-probabilities of a first-order chain (any logits: rows are normalised by a softmax, as in training).

    Attributes:
        log_initial: ``[V]`` log of the initial law ``p_1``.
        log_transition: ``[V, V]`` log of the transition matrix, row ``i`` the law of the next token after ``i``.
    """

    log_initial: Array
    log_transition: Array


def normalized(params: Params) -> tuple[Array, Array]:
    """``(log p_1, log P)`` normalised by log-softmax (trained parameters are unnormalised logits)."""
    return jax.nn.log_softmax(params.log_initial), jax.nn.log_softmax(params.log_transition, axis=-1)


def from_probabilities(initial: Any, transition: Any) -> Params:
    """Chain parameters from probabilities, validated (non-negative, rows summing to 1).

    Args:
        initial: ``[V]`` initial law.
        transition: ``[V, V]`` row-stochastic transition matrix.

    Returns:
        :class:`Params` holding the logs.
    """
    initial = jnp.asarray(as_real_array("initial", initial))
    transition = jnp.asarray(as_real_array("transition", transition))
    if not jnp.issubdtype(initial.dtype, jnp.floating):
        initial = initial.astype(float)
    transition = transition.astype(initial.dtype)
    if initial.ndim != 1:
        raise ValueError(f"`initial` must be a probability vector [V], got {describe(initial)}.")
    V = initial.shape[0]
    if transition.shape != (V, V):
        raise ValueError(f"`transition` must have shape ({V}, {V}) to match `initial`, got {transition.shape}.")
    check_finite("initial", initial)
    check_finite("transition", transition)
    if is_concrete(initial, transition):
        tol = 1e-6 if initial.dtype == jnp.float32 else 1e-12
        if np.min(initial) < 0 or abs(float(np.sum(initial)) - 1) > tol:
            raise ValueError(f"`initial` must be non-negative and sum to 1, got sum {float(np.sum(initial))!r}.")
        rows = np.sum(np.asarray(transition), axis=1)
        if np.min(transition) < 0 or np.max(np.abs(rows - 1)) > tol:
            raise ValueError(
                f"`transition` must be non-negative with rows summing to 1, got row sums {rows.tolist()}."
            )
    return Params(jnp.log(initial), jnp.log(transition))


def stationary_distribution(transition: Any) -> Array:
    """Stationary law ``pi = pi P`` of an irreducible chain (left eigenvector for eigenvalue 1).

    Computed by solving ``pi (P - I) = 0`` with ``sum pi = 1`` as a least-squares system.
    """
    P = jnp.asarray(transition)
    V = P.shape[0]
    lhs = jnp.concatenate([(P - jnp.eye(V, dtype=P.dtype)).T, jnp.ones((1, V), P.dtype)], axis=0)
    rhs = jnp.concatenate([jnp.zeros(V, P.dtype), jnp.ones(1, P.dtype)])
    return jnp.linalg.lstsq(lhs, rhs)[0]


def entropy_production(params: Params, num_steps: int) -> Array:
    """Exact EP of the chain over ``num_steps`` tokens from its marginals (module docstring formula).

    Uses the chain's own initial law in both directions. Infinite when some ``P_ij > 0`` has ``P_ji = 0``
    on a reachable pair.
    """
    num_steps = check_num_steps(num_steps)
    log_p1, log_P = normalized(params)
    p1, P = jnp.exp(log_p1), jnp.exp(log_P)
    # p ln(p/q) with 0 ln(0/q) = 0.
    flux = jnp.where(P > 0, P * (log_P - log_P.T), 0.0)
    per_state = jnp.sum(flux, axis=1)  # sum_j P_ij ln(P_ij / P_ji)

    def step(mu, _):
        return mu @ P, mu @ per_state

    mu_T, bulk = jax.lax.scan(step, p1, None, length=num_steps - 1)
    boundary = jnp.sum(jnp.where(p1 > 0, p1 * log_p1, 0.0)) - jnp.sum(jnp.where(mu_T > 0, mu_T * log_p1, 0.0))
    return boundary + jnp.sum(bulk)


def stationary_entropy_production_rate(transition: Any) -> Array:
    """``sum_ij pi_i P_ij ln(P_ij / P_ji)``: the EP per step of the chain started from ``pi``."""
    P = jnp.asarray(transition)
    pi = stationary_distribution(P)
    logP = jnp.log(P)
    return jnp.sum(jnp.where(P > 0, pi[:, None] * P * (logP - logP.T), 0.0))


def random_transition(key: Array, vocab_size: int, *, concentration: float = 1.0) -> Array:
    """A random row-stochastic matrix with strictly positive entries (Dirichlet rows).

    Such a matrix generically breaks detailed balance, so the chain has positive EP.
    """
    vocab_size = check_positive_int("vocab_size", vocab_size)
    alpha = jnp.full((vocab_size,), concentration)
    return jax.random.dirichlet(key, alpha, (vocab_size,))


@dataclasses.dataclass(frozen=True)
class Config:
    """A chain's static description: its alphabet size."""

    vocab_size: int

    def __post_init__(self):
        check_positive_int("vocab_size", self.vocab_size)


class MarkovChain(DiscreteModel):
    """A first-order Markov chain as a contract model: its state is the last token.

    Args:
        vocab_size: alphabet size ``V``.
        temperature: divides the log-probabilities before renormalising (1 leaves the chain unchanged).
    """

    family = "markov"
    log_probability_params = True  # a zero transition probability is a -inf log-parameter

    def __init__(self, vocab_size: int, *, temperature: float = 1.0):
        self.vocab_size = check_positive_int("vocab_size", vocab_size)
        self.temperature = check_temperature(temperature)

    @property
    def config(self) -> Config:
        """The chain's :class:`Config` (used when saving)."""
        return Config(self.vocab_size)

    def init(self, key: Array) -> Params:
        """A random chain started from the uniform law."""
        V = self.vocab_size
        P = random_transition(key, V)
        # A strongly typed start (a weak-typed float would make jit recompile once training updates it).
        return from_probabilities(jnp.full((V,), 1.0 / V, dtype=P.dtype), P)

    def initial(self, params: Params):
        """No state before the first token; its law is the initial distribution."""
        return jnp.zeros((), jnp.int32), params.log_initial

    def step(self, params: Params, carry, token, position):
        """The state is the last token; the next law is its transition row."""
        return token, params.log_transition[token]

    def logits(self, params: Params, x: Array) -> Array:
        """All rows at once: the initial law, then the transition rows of ``x_1 .. x_{T-1}``."""
        return jnp.concatenate([params.log_initial[None], params.log_transition[x[:-1]]], axis=0)

    def __repr__(self) -> str:
        return f"MarkovChain(vocab_size={self.vocab_size}, temperature={self.temperature})"


def Model(config: Config, *, temperature: float = 1.0) -> MarkovChain:  # noqa: N802 - family constructor name
    """The family constructor used by :func:`epjax.train.load`: a :class:`MarkovChain` from its config."""
    return MarkovChain(config.vocab_size, temperature=temperature)
