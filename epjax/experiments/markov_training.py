"""Neural models trained on an irreversible Markov chain: their EP converges to the chain's exact EP.

A first-order chain with transition matrix ``P`` and stationary law ``pi`` has, started from ``pi``, the exact
entropy production (docs/mathematics.md §2; :mod:`epjax.markov`)

    S_chain(T) = (T - 1) r,        r = sum_ij pi_i P_ij ln(P_ij / P_ji)    (0 iff detailed balance holds),

and no model scores its stationary sequences of length ``L`` better, in expectation, than the cross-entropy
per token

    l*(L) = [H(pi) + (L - 1) h] / L,       h = -sum_ij pi_i P_ij ln P_ij    (the entropy rate).

EP is a property of one model's path law (docs/mathematics.md §2), so a model trained by maximum likelihood on such
sequences
must have ``S_model(T) -> S_chain(T)`` as its held-out loss approaches ``l*``. This module runs that
experiment: build the chain (:func:`make_chain`), sample data (:func:`sample_sequences`), build a model of
any family (:func:`epjax.families.new_model`) and train it while measuring its Monte Carlo EP at checkpoints
(:func:`train_on_chain`).

How close is close enough. Let ``eps`` be the model's excess held-out loss per token over the chain's,
i.e. ``KL(chain || model) / L`` on length-``L`` sequences. For a first-order chain ``theta`` (logits of the
initial law and of the transitions) near the true one, ``KL ~= 1/2 d^T F d`` with ``F`` the Fisher
information of the length-``L`` path law, and ``S(T)`` moves by ``g . d`` with ``g = grad S(T)``; the largest
move with ``KL = L eps`` is ``sqrt(2 eps) s``, ``s = sqrt(L g^T F^+ g)`` (:func:`ep_sensitivity`, exact
through :func:`epjax.markov.entropy_production`). So a learned model is accepted when

    |S_model(T) - S_chain(T)| <= k SE + sqrt(2 eps_+) s,     eps_+ = max(eps, 0) + 2 SE(eps)

(:meth:`TrainingRun.tolerance`, ``k = 4``). This is a first-order (delta-method) band over models that are
first-order chains; a neural model can also err through longer contexts, which the held-out KL charges for
but the band does not model. The band is a tolerance, not a theorem; it shrinks to the Monte Carlo error as
``eps -> 0``, which is what makes "EP converges as the model learns" a testable statement. (The same
perturbation argument over arbitrary path laws gives ``|dS| <= sqrt(chi2) sd(sigma - e^{-sigma})``, useless
here: ``E[e^{-2 sigma}]`` grows exponentially with ``T``.)

Data flows one way: this module imports the families and the engine; they never import it.

>>> chain = make_chain()  # the default chain: 4 tokens, seed 20
>>> round(chain.ep_rate, 4), round(chain.entropy_rate, 4)
(0.385, 1.2064)
>>> round(chain.exact_entropy_production(32), 4), round(chain.optimal_loss(32), 4)
(11.9358, 1.2113)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from epjax import Estimate, entropy_production, markov, train
from epjax._batching import sample_trajectories
from epjax._checks import check_positive_int
from epjax.discrete import DiscreteModel
from epjax.experiments.report import Result, json_number

Array = jax.Array
PyTree = Any

DEFAULT_CHAIN_SEED = 20
"""Seed of the default chain: with 4 tokens and concentration 1 it is clearly irreversible (r = 0.385
nats/step, entropy rate h = 1.206 nats) and every transition has probability >= 0.068, so all of them are seen
often in a few thousand training sequences."""


class Chain(NamedTuple):
    """A stationary first-order Markov chain with its exact reference values (float64 numbers).

    Attributes:
        params: :class:`epjax.markov.Params` of the chain started from its stationary law (a contract model's
            parameters, in JAX's default float dtype).
        transition: ``[V, V]`` row-stochastic ``P`` (float64).
        stationary: ``[V]`` its stationary law ``pi`` (float64).
        ep_rate: ``r = sum_ij pi_i P_ij ln(P_ij / P_ji)``, the exact EP per step (nats).
        entropy_rate: ``h = -sum_ij pi_i P_ij ln P_ij`` (nats per token).
        initial_entropy: ``H(pi)``, the cross-entropy floor of the first token.
    """

    params: markov.Params
    transition: np.ndarray
    stationary: np.ndarray
    ep_rate: float
    entropy_rate: float
    initial_entropy: float

    @property
    def vocab_size(self) -> int:
        """Alphabet size ``V``."""
        return int(self.transition.shape[0])

    @property
    def model(self) -> markov.MarkovChain:
        """The chain as a contract model (use with :attr:`params`); one object per ``V``, so jit caches hit."""
        return _chain_model(self.vocab_size)

    def exact_entropy_production(self, num_steps: int) -> float:
        """``S_chain(T) = (T - 1) r``: the exact EP of ``T`` stationary tokens."""
        return (check_positive_int("num_steps", num_steps) - 1) * self.ep_rate

    def optimal_loss(self, length: int) -> float:
        """``l*(L) = [H(pi) + (L - 1) h] / L``: the least expected held-out loss per token on length-``L`` data."""
        length = check_positive_int("length", length)
        return (self.initial_entropy + (length - 1) * self.entropy_rate) / length


@jax.jit
def _stationary_values(P: Array) -> tuple[Array, Array]:
    # One compiled program instead of many eager float64 ops.
    return markov.stationary_distribution(P), markov.stationary_entropy_production_rate(P)


@functools.cache
def _chain_model(vocab_size: int) -> markov.MarkovChain:
    return markov.MarkovChain(vocab_size)


def chain_from_transition(transition: Any) -> Chain:
    """The stationary :class:`Chain` of a row-stochastic matrix, its exact values computed in float64.

    Args:
        transition: ``[V, V]`` with non-negative entries and rows summing to 1 (validated).

    Returns:
        The :class:`Chain` started from its stationary law.
    """
    P = np.asarray(transition, dtype=np.float64)
    if P.ndim != 2 or P.shape[0] != P.shape[1] or P.shape[0] < 1:
        raise ValueError(f"`transition` must be a square matrix [V, V], got shape {P.shape}.")
    if not np.all(np.isfinite(P)) or P.min() < 0 or np.max(np.abs(P.sum(axis=1) - 1)) > 1e-6:
        raise ValueError("`transition` must have finite non-negative entries with rows summing to 1.")
    P = P / P.sum(axis=1, keepdims=True)
    with jax.enable_x64(True):
        pi, rate = _stationary_values(jnp.asarray(P))
        pi, rate = np.clip(np.asarray(pi), 0.0, None), float(rate)
    pi = pi / pi.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy_rate = float(-np.sum(np.where(P > 0, pi[:, None] * P * np.log(P), 0.0)))
        initial_entropy = float(-np.sum(np.where(pi > 0, pi * np.log(pi), 0.0)))
    params = markov.from_probabilities(jnp.asarray(pi), jnp.asarray(P))  # JAX's default float dtype
    return Chain(params, P, pi, rate, entropy_rate, initial_entropy)


def make_chain(seed: int = DEFAULT_CHAIN_SEED, *, vocab_size: int = 4, concentration: float = 1.0) -> Chain:
    """A random chain (Dirichlet rows, :func:`epjax.markov.random_transition`) that breaks detailed balance.

    Args:
        seed: seed of the transition matrix (the default gives the chain described at
            :data:`DEFAULT_CHAIN_SEED`).
        vocab_size: alphabet size ``V``.
        concentration: Dirichlet concentration of each row (smaller: peakier rows, larger EP, rarer
            transitions).

    Returns:
        The stationary :class:`Chain`.
    """
    check_positive_int("seed", seed, minimum=0)
    vocab_size = check_positive_int("vocab_size", vocab_size, minimum=2)
    if not (isinstance(concentration, (int, float)) and math.isfinite(concentration) and concentration > 0):
        raise ValueError(f"`concentration` must be a finite number > 0, got {concentration!r}.")
    # Drawn in float64 whatever JAX's default precision, so that a seed names one chain.
    with jax.enable_x64(True):
        P = np.asarray(markov.random_transition(jax.random.key(seed), vocab_size, concentration=concentration))
    return chain_from_transition(P)


def sample_sequences(key: Array, chain: Chain, num_sequences: int, length: int) -> np.ndarray:
    """``num_sequences`` independent stationary sequences of ``length`` tokens, int32 ``[N, L]``."""
    num_sequences = check_positive_int("num_sequences", num_sequences)
    length = check_positive_int("length", length)
    data = sample_trajectories(key, chain.model, chain.params, num_steps=length, num=num_sequences)
    return np.asarray(data, dtype=np.int32)


@functools.partial(jax.jit, static_argnums=1)
def _ep_gradient(params: markov.Params, num_steps: int) -> markov.Params:
    return jax.grad(markov.entropy_production)(params, num_steps)


def ep_sensitivity(chain: Chain, num_steps: int, length: int) -> float:
    """First-order sensitivity ``s`` of the EP to learning error (module docstring), in float64.

    Among first-order chains whose path law over ``length`` tokens is within ``KL = length * eps`` of
    ``chain``, the largest first-order change of ``S(num_steps)`` is ``sqrt(2 eps) s`` with
    ``s = sqrt(L g^T F^+ g)``. ``g`` is the gradient of :func:`epjax.markov.entropy_production` in the logits
    ``(log p_1, log P)``; the Fisher information is ``diag(pi) - pi pi^T`` for the first token and
    ``(L - 1) pi_i (diag(P_i) - P_i P_i^T)`` for row ``i`` of the transitions. ``g`` sums to zero over each
    row (softmax gauge), so ``g^T F^+ g = sum_j g_j^2 / pi_j + sum_ij g_ij^2 / ((L - 1) pi_i P_ij)``.

    Args:
        chain: the reference chain (strictly positive ``pi`` and ``P`` where ``g`` is non-zero).
        num_steps: EP horizon ``T``.
        length: sequence length ``L`` at which the excess loss is measured.

    Returns:
        ``s`` in nats per ``sqrt(nat)``.
    """
    num_steps = check_positive_int("num_steps", num_steps)
    length = check_positive_int("length", length)
    pi, P = chain.stationary, chain.transition
    with jax.enable_x64(True):
        params = markov.Params(jnp.log(jnp.asarray(pi)), jnp.log(jnp.asarray(P)))
        grad = _ep_gradient(params, num_steps)
        g_init, g_trans = np.asarray(grad.log_initial), np.asarray(grad.log_transition)
    with np.errstate(divide="ignore", invalid="ignore"):
        quad = np.sum(np.where(g_init != 0, g_init**2 / pi, 0.0))
        if length > 1:
            quad += np.sum(np.where(g_trans != 0, g_trans**2 / (pi[:, None] * P), 0.0)) / (length - 1)
        elif np.any(g_trans != 0):
            quad = math.inf  # one-token data says nothing about the transitions
    return float(math.sqrt(length * quad))


@dataclasses.dataclass(frozen=True, eq=False)
class TrainingRun(Result):
    """A model trained on a chain's sequences, with its EP and held-out loss recorded at checkpoints.

    Checkpoint 0 is the untrained model. Losses are nats per token, EP in nats. The run renders itself: a table
    and CSV rows per checkpoint, a JSON record, and a figure of the EP and the held-out loss during training
    (:meth:`draw`); it passes when the final model :meth:`converged`.

    Attributes:
        label: a name for tables and legends.
        model: the trained model.
        params: its final parameters.
        steps: ``[K]`` training steps of the checkpoints (the first is 0).
        ep_mean: ``[K]`` Monte Carlo EP of the model at ``num_steps`` tokens at each checkpoint.
        ep_stderr: ``[K]`` its standard error.
        eval_loss: ``[K]`` held-out loss at each checkpoint.
        num_steps: the EP horizon ``T``.
        num_samples: Monte Carlo trajectories per checkpoint.
        exact_ep: the chain's exact ``S_chain(T) = (T - 1) r``.
        sensitivity: :func:`ep_sensitivity` of the chain at ``T`` for the held-out length.
        entropy_rate: the chain's entropy rate ``h``.
        optimal_loss: ``l*(L)`` for the held-out length ``L`` (the expected loss of the chain itself).
        chain_eval_loss: the chain's own loss on the same held-out sequences (``l*`` plus sampling noise).
        excess_loss: final ``eps`` = model minus chain loss on the held-out sequences (paired), an estimate of
            ``KL(chain || model)`` per token.
        excess_loss_stderr: standard error of ``excess_loss`` over held-out sequences.
        final: the last checkpoint's :class:`epjax.Estimate` (samples, running mean, diagnostics).
        history: the :class:`epjax.train.History` of the training loop.
        seconds: wall time of training and measuring.
    """

    label: str
    model: DiscreteModel
    params: PyTree
    steps: np.ndarray
    ep_mean: np.ndarray
    ep_stderr: np.ndarray
    eval_loss: np.ndarray
    num_steps: int
    num_samples: int
    exact_ep: float
    sensitivity: float
    entropy_rate: float
    optimal_loss: float
    chain_eval_loss: float
    excess_loss: float
    excess_loss_stderr: float
    final: Estimate
    history: train.History
    seconds: float

    @property
    def error(self) -> float:
        """Final ``S_model(T) - S_chain(T)``."""
        return float(self.ep_mean[-1] - self.exact_ep)

    @property
    def excess_bound(self) -> float:
        """``eps_+ = max(eps, 0) + 2 SE(eps)``: an upper estimate of the final ``KL(chain || model)`` per token."""
        return max(self.excess_loss, 0.0) + 2 * self.excess_loss_stderr

    def tolerance(self, num_stderr: float = 4.0) -> float:
        """``k SE + sqrt(2 eps_+) s``: the accepted ``|error|`` of the final model (module docstring)."""
        return num_stderr * float(self.ep_stderr[-1]) + math.sqrt(2 * self.excess_bound) * self.sensitivity

    def converged(self, num_stderr: float = 4.0) -> bool:
        """Whether the final EP is within :meth:`tolerance` of the chain's exact EP."""
        return abs(self.error) <= self.tolerance(num_stderr)

    def learning_band(self) -> np.ndarray:
        """``[K]`` ``sqrt(2 eps_k) s`` at each checkpoint, ``eps_k`` the held-out excess there (no SE term)."""
        eps = np.maximum(self.eval_loss - self.chain_eval_loss, 0.0)
        return np.sqrt(2 * eps) * self.sensitivity

    @property
    def passed(self) -> bool:  # type: ignore[override]
        """:meth:`converged` at the default ``k = 4``."""
        return self.converged()

    @property
    def verdict(self) -> str:
        """The final comparison with the chain's exact EP, in words."""
        word = "within" if self.converged() else "outside"
        return (
            f"{self.label}: EP {self.ep_mean[-1]:.4f} ± {self.ep_stderr[-1]:.4f} is {word} the tolerance of the "
            f"chain's exact {self.exact_ep:.4f} (|error| = {abs(self.error):.4f}, tolerance 4 SE + sqrt(2 eps_+) s "
            f"= {self.tolerance():.4f})"
        )

    def rows(self) -> tuple[list[str], list[list[str]]]:
        """One row per checkpoint: step, held-out loss, EP ± SE, error and z against the exact EP."""
        cells = []
        for step, loss, mean, se in zip(self.steps, self.eval_loss, self.ep_mean, self.ep_stderr, strict=True):
            error = mean - self.exact_ep
            z = f"{error / se:+.2f}" if se > 0 else ""
            cells.append([str(int(step)), f"{loss:.4f}", f"{mean:.4f} ± {se:.4f}", f"{error:+.4f}", z])
        cells.append(["chain (exact)", f"{self.optimal_loss:.4f}", f"{self.exact_ep:.4f}", "", ""])
        return ["step", "held-out loss", f"EP S({self.num_steps})", "error", "z"], cells

    def table(self) -> str:
        """The checkpoint table and the verdict."""
        return super().table() + f"\n  verdict: {self.verdict}"

    def checkpoints_json(self) -> dict[str, list]:
        """The checkpoints as JSON: ``steps``, ``ep_mean``, ``ep_stderr`` and ``eval_loss`` lists."""
        return {
            "steps": [int(s) for s in self.steps],
            "ep_mean": [json_number(v) for v in self.ep_mean],
            "ep_stderr": [json_number(v) for v in self.ep_stderr],
            "eval_loss": [json_number(v) for v in self.eval_loss],
        }

    def to_json(self) -> dict[str, Any]:
        """The checkpoints, the chain's reference values and the verdict (losses nats/token, EP nats)."""
        return {
            "label": self.label,
            "model": train.model_spec(self.model) if hasattr(self.model, "config") else repr(self.model),
            "num_steps": self.num_steps,
            "num_samples": self.num_samples,
            **self.checkpoints_json(),
            "exact_ep": self.exact_ep,
            "entropy_rate": self.entropy_rate,
            "optimal_loss": self.optimal_loss,
            "chain_eval_loss": self.chain_eval_loss,
            "excess_loss": json_number(self.excess_loss),
            "excess_loss_stderr": json_number(self.excess_loss_stderr),
            "sensitivity": json_number(self.sensitivity),
            "tolerance": json_number(self.tolerance()),
            "converged": self.converged(),
            "verdict": self.verdict,
        }

    def csv_header(self) -> list[str]:
        """The CSV columns: one row per checkpoint."""
        return ["step", "eval_loss", "ep_mean", "ep_stderr", "exact_ep", "learning_band"]

    def csv_rows(self) -> list[list[Any]]:
        """One row per checkpoint (numbers unformatted)."""
        band = self.learning_band()
        return [
            [int(s), float(loss), float(m), float(se), self.exact_ep, float(b)]
            for s, loss, m, se, b in zip(self.steps, self.eval_loss, self.ep_mean, self.ep_stderr, band, strict=True)
        ]

    def draw(self, fig: Any, axes: Any) -> None:
        """Left: EP ± SE at each checkpoint against the exact EP and its learning band. Right: held-out loss.

        Given one axes, only the EP panel is drawn; legends sit below the panels, outside the data.
        """
        if axes is None:
            fig.set_size_inches(10, 4.6)
            axes = fig.subplots(1, 2)
            fig.suptitle(
                f"{self.label} trained on the chain's sequences: EP at T = {self.num_steps} tokens (token "
                f"reversal), {self.num_samples} trajectories per checkpoint",
                fontsize=9,
            )
        ax = axes[0]
        band = self.learning_band()
        ax.fill_between(
            self.steps,
            self.exact_ep - band,
            self.exact_ep + band,
            color="0.85",
            label="exact ± sqrt(2 eps_k) s (learning band)",
        )
        ax.axhline(self.exact_ep, color="k", lw=1.2, label=f"chain, exact (T - 1) r = {self.exact_ep:.4g}")
        ax.errorbar(
            self.steps,
            self.ep_mean,
            yerr=self.ep_stderr,
            fmt="o-",
            ms=4,
            capsize=3,
            color="C0",
            label=f"{self.label}, Monte Carlo ± SE",
        )
        ax.set(xlabel="training step", ylabel=f"EP S({self.num_steps}) (nats)")
        inside = self.converged()
        ax.set_title(
            f"final |error| = {abs(self.error):.3g} {'<=' if inside else '>'} tolerance {self.tolerance():.3g}: "
            f"{'within' if inside else 'outside'}",
            fontsize=8,
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
        if len(axes) < 2:
            return
        ax = axes[1]
        ax.plot(self.steps, self.eval_loss, "o-", ms=4, color="C0", label=f"{self.label}, held-out loss")
        ax.axhline(self.optimal_loss, color="k", lw=1.2, label=f"least expected loss l* = {self.optimal_loss:.4f}")
        ax.axhline(self.chain_eval_loss, color="0.5", lw=1, ls=":", label="the chain on the held-out set")
        ax.set(xlabel="training step", ylabel="held-out cross-entropy (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)


def train_on_chain(
    key: Array,
    model: DiscreteModel,
    chain: Chain,
    train_data: Any,
    eval_data: Any,
    *,
    config: train.TrainConfig,
    ep_num_steps: int,
    ep_num_samples: int,
    ep_batch_size: int = 1024,
    label: str | None = None,
    progress: bool = False,
) -> TrainingRun:
    """Train ``model`` on ``train_data`` with :func:`epjax.train.train`, measuring its EP at checkpoints.

    Every ``config.eval_every`` steps (and before the first, and after the last) the held-out loss is
    recorded and ``epjax.entropy_production`` estimates the model's EP at ``ep_num_steps`` tokens with
    ``ep_num_samples`` fresh trajectories (checkpoint ``k`` uses ``fold_in(key_ep, step)``: independent
    estimates).

    Args:
        key: a ``jax.random`` key (initialisation, batches, EP sampling).
        model: a discrete family model (e.g. from :func:`epjax.families.new_model`).
        chain: the chain that generated the data.
        train_data: training sequences ``[N, L]``.
        eval_data: held-out sequences ``[M, L']``.
        config: optimiser settings; ``config.eval_every`` sets the checkpoint period.
        ep_num_steps: EP horizon ``T`` (at most the Transformer's context).
        ep_num_samples: Monte Carlo trajectories per checkpoint.
        ep_batch_size: trajectories per compiled batch.
        label: name of the run (default: the model's family).
        progress: show the training progress bar.

    Returns:
        The :class:`TrainingRun`.
    """
    import time

    start = time.perf_counter()
    ep_num_steps = check_positive_int("ep_num_steps", ep_num_steps)
    ep_num_samples = check_positive_int("ep_num_samples", ep_num_samples, minimum=2)
    eval_data = train.check_sequences("eval_data", eval_data, model.vocab_size)
    if model.vocab_size != chain.vocab_size:
        raise ValueError(f"the model's vocab_size {model.vocab_size} differs from the chain's {chain.vocab_size}.")
    init_key, train_key, ep_key = jax.random.split(key, 3)
    params = model.init(init_key)
    estimates: dict[int, Estimate] = {}

    def measure(step: int, p: PyTree) -> None:
        estimates[step] = entropy_production(
            jax.random.fold_in(ep_key, step),
            model,
            p,
            num_steps=ep_num_steps,
            num_samples=ep_num_samples,
            batch_size=ep_batch_size,
        )

    measure(0, params)
    initial_loss = float(np.mean(train.sequence_losses(model, params, eval_data)))
    # train() evaluates the held-out loss at the same steps as it calls back (every eval_every, and the last).
    params, history = train.train(
        train_key,
        model,
        params,
        train_data,
        config=config,
        eval_data=eval_data,
        callback=measure,
        callback_every=config.eval_every,
        progress=progress,
    )
    steps = [0, *(int(s) for s in history.eval_steps)]
    losses = [initial_loss, *(float(v) for v in history.eval_loss)]
    model_losses = train.sequence_losses(model, params, eval_data)
    chain_losses = train.sequence_losses(chain.model, chain.params, eval_data)
    diff = model_losses - chain_losses
    return TrainingRun(
        label=label or getattr(model, "family", type(model).__name__),
        model=model,
        params=params,
        steps=np.asarray(steps, dtype=np.int64),
        ep_mean=np.asarray([estimates[s].mean for s in steps], dtype=np.float64),
        ep_stderr=np.asarray([estimates[s].stderr for s in steps], dtype=np.float64),
        eval_loss=np.asarray(losses, dtype=np.float64),
        num_steps=ep_num_steps,
        num_samples=ep_num_samples,
        exact_ep=chain.exact_entropy_production(ep_num_steps),
        sensitivity=ep_sensitivity(chain, ep_num_steps, int(eval_data.shape[1])),
        entropy_rate=chain.entropy_rate,
        optimal_loss=chain.optimal_loss(int(eval_data.shape[1])),
        chain_eval_loss=float(np.mean(chain_losses)),
        excess_loss=float(np.mean(diff)),
        excess_loss_stderr=float(np.std(diff, ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else math.nan,
        final=estimates[steps[-1]],
        history=history,
        seconds=time.perf_counter() - start,
    )
