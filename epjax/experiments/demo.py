"""The checks of ``epjax demo``: built-in end-to-end runs, each with a verdict (:attr:`Result.passed`).

- :func:`kalman_check`: the EP paper's Kalman examples, exact EP (eq. 71) against Monte Carlo
  (:func:`epjax.experiments.kalman_comparison.compare_kalman` as a check).
- :func:`neural_check`: a tiny GRU trained on the built-in irreversible Markov chain; its EP must approach the
  chain's exact EP within the tolerance of :meth:`epjax.experiments.markov_training.TrainingRun.tolerance`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax

from epjax import families
from epjax.experiments import markov_training as mt
from epjax.experiments.kalman_comparison import EXAMPLES, Z_LIMIT, KalmanComparison, compare_kalman, example_spec
from epjax.experiments.report import Result, format_table

KALMAN_STEPS = (5, 10, 20, 50)
NEURAL_SETTINGS = dict(length=16, sequences=4000, held_out=1000, steps=500, batch_size=64, learning_rate=1e-2, width=16)
"""The neural check's sizes: sequence length, sequences sampled (of which ``held_out`` held out), AdamW steps,
batch size, learning rate, GRU hidden size."""


def kalman_check(
    *,
    num_samples: int,
    seed: int = 0,
    steps: Sequence[int] = KALMAN_STEPS,
    z_limit: float = Z_LIMIT,
    progress: bool = True,
) -> KalmanComparison:
    """Both paper examples at every ``T`` in ``steps``: passes when every ``|z|`` is at most ``z_limit``."""
    specs = [example_spec(name) for name in EXAMPLES]
    return compare_kalman(
        specs, steps, num_samples=num_samples, seed=seed, progress=progress, z_limit=z_limit, check=True
    )


@dataclass
class NeuralCheck(Result):
    """A GRU trained on the built-in chain, its EP before and after training against the chain's exact EP.

    Attributes:
        chain: the Markov chain (:func:`epjax.experiments.markov_training.make_chain`).
        run: the training run (:func:`epjax.experiments.markov_training.train_on_chain`).
        settings: the sizes used (:data:`NEURAL_SETTINGS`).
        num_samples: Monte Carlo trajectories per EP estimate.
        seed: the random seed.
    """

    chain: Any
    run: Any
    settings: Mapping[str, Any]
    num_samples: int
    seed: int | None = None
    title = "A tiny GRU trained on an irreversible Markov chain: its EP approaches the chain's exact EP"

    @property
    def passed(self) -> bool:
        """Whether the trained model's EP is within tolerance of the chain's exact EP."""
        return bool(self.run.converged())

    def rows(self) -> tuple[list[str], list[list[str]]]:
        """Held-out loss and EP ± SE before and after training, and the chain's exact values."""
        run, L = self.run, self.settings["length"]
        cells = []
        for label, i in (("before training", 0), ("after training", -1)):
            error = run.ep_mean[i] - run.exact_ep
            cells.append([
                label, f"{run.eval_loss[i]:.4f}", f"{run.ep_mean[i]:.4f} ± {run.ep_stderr[i]:.4f}",
                f"{error:+.4f}", f"{error / run.ep_stderr[i]:+.2f}",
            ])  # fmt: skip
        cells.append(["the chain (exact)", f"{run.optimal_loss:.4f}", f"{run.exact_ep:.4f}", "", ""])
        return ["", "held-out loss", f"EP S({L}) ± SE", "error", "z"], cells

    def table(self) -> str:
        """The chain, the model, the table, the tolerance and the verdict."""
        chain, run, s = self.chain, self.run, self.settings
        L = s["length"]
        num_train = s["sequences"] - s["held_out"]
        passed = self.passed
        relation = "within" if passed else "NOT within"
        return "\n".join([
            f"chain: {chain.vocab_size} tokens, EP rate r = {chain.ep_rate:.4f} nats/step, entropy rate "
            f"h = {chain.entropy_rate:.4f} nats/token; exact S({L}) = (T - 1) r = "
            f"{chain.exact_entropy_production(L):.4f}",
            f"model: GRU, hidden size {s['width']}; {s['steps']} AdamW steps on {num_train} sequences of {L} "
            f"tokens ({s['held_out']} held out); EP from {self.num_samples} trajectories of T = {L}",
            format_table(*self.rows()),
            f"  tolerance: 4 SE + sqrt(2 eps_+) s = {run.tolerance():.4f}, with eps_+ = {run.excess_bound:.5f} "
            "nats/token (the trained model's excess held-out loss over the chain's, + 2 SE) and "
            f"s = {run.sensitivity:.2f} (the EP's first-order sensitivity to learning error)",
            f"  verdict neural: {'PASS' if passed else 'FAIL'}: the trained GRU's EP is {relation} tolerance of the "
            f"exact value (|error| = {abs(run.error):.4f} {'<=' if passed else '>'} {run.tolerance():.4f}) "
            f"({run.seconds:.0f} s)",
        ])  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """The settings, the chain's exact EP and the model's EP at every checkpoint."""
        run = self.run
        return {
            "settings": dict(self.settings),
            "num_samples": self.num_samples,
            "exact_ep": run.exact_ep,
            **run.checkpoints_json(),
            "tolerance": run.tolerance(),
            "passed": self.passed,
        }


def neural_check(
    *, num_samples: int, seed: int = 0, settings: Mapping[str, Any] = NEURAL_SETTINGS, progress: bool = True
) -> NeuralCheck:
    """Train a tiny GRU on the built-in chain and check that its EP approaches the chain's exact EP.

    Args:
        num_samples: Monte Carlo trajectories per EP estimate.
        seed: the random seed (data from ``key(seed)``, training and EP from ``fold_in(key(seed), 1)``).
        settings: the sizes (keys of :data:`NEURAL_SETTINGS`).
        progress: a progress bar on stderr.

    Returns:
        A :class:`NeuralCheck`; ``passed`` when the trained model's EP is within tolerance.
    """
    from epjax import train as train_lib

    L = settings["length"]
    chain = mt.make_chain()
    data = mt.sample_sequences(jax.random.key(seed), chain, settings["sequences"], L)
    num_train = settings["sequences"] - settings["held_out"]
    model = families.new_model("rnn", chain.vocab_size, size="tiny", width=settings["width"], cell="gru")
    config = train_lib.TrainConfig(
        steps=settings["steps"], batch_size=settings["batch_size"], learning_rate=settings["learning_rate"],
        warmup_steps=settings["steps"] // 10, eval_every=settings["steps"],
    )  # fmt: skip
    run = mt.train_on_chain(
        jax.random.fold_in(jax.random.key(seed), 1), model, chain, data[:num_train], data[num_train:],
        config=config, ep_num_steps=L, ep_num_samples=num_samples, progress=progress,
    )  # fmt: skip
    return NeuralCheck(chain, run, dict(settings), num_samples, seed)


__all__ = ["KALMAN_STEPS", "NEURAL_SETTINGS", "NeuralCheck", "kalman_check", "neural_check"]
