"""Maximum-likelihood training of a model of any trainable family on token sequences (``epjax train``).

The data are a file of token sequences (:func:`load_sequences`) or stationary sequences of a built-in Markov chain
that breaks detailed balance (:func:`epjax.experiments.markov_training.make_chain`). :func:`training_data` splits
them into training and held-out sequences; :func:`train_model` builds a model through the family registry
(:func:`epjax.families.new_model`), trains it with :func:`epjax.train.train` (AdamW, warm-up then cosine decay) and
returns a :class:`TrainingResult`: the trained model and parameters, the loss history, the data summary and, for
the built-in chain, the model's excess held-out loss over the chain's own, an estimate of ``KL(chain || model)``
per token (the module docstring of :mod:`epjax.experiments.markov_training`). The result renders itself (terminal
text, the JSON report, a learning-curve figure) and saves the model with its metadata (:meth:`TrainingResult.save`),
which :func:`epjax.experiments.saved_models.saved_model_ep` reads back to compare the model's EP with the chain's
exact value.

>>> data = training_data(num_sequences=40, length=6, seed=0)
>>> data.train.shape, data.held_out.shape, data.vocab_size, data.chain is not None
((36, 6), (4, 6), 4, True)
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from epjax import families, train
from epjax._checks import check_positive_int
from epjax.experiments import markov_training as mt
from epjax.experiments.report import ExperimentError, Result, json_header, json_number

SEQUENCE_FILE_SUFFIXES = (".npy",)
"""Sequence files read as NumPy arrays; any other file is read as text, one sequence of token ids per line."""


class SequenceFileError(ExperimentError):
    """A sequence file that cannot be read or does not hold equal-length sequences of non-negative token ids.

    Attributes:
        path: the file.
        problem: what is wrong (starts with ``line N`` when a line of a text file is at fault).
        line: the 1-based line of a text file at fault, or ``None``.
    """

    def __init__(self, path: str | os.PathLike, problem: str, line: int | None = None):
        self.path, self.problem, self.line = Path(path), problem, line
        super().__init__(f"{self.path}: {problem}")


class TokenRangeError(ExperimentError):
    """Sequences hold a token id outside the vocabulary asked for.

    Attributes:
        path: the file the sequences came from (``None`` for arrays).
        token_id: the largest id found.
        vocab_size: the vocabulary asked for.
    """

    def __init__(self, path: str | os.PathLike | None, token_id: int, vocab_size: int):
        self.path = None if path is None else Path(path)
        self.token_id, self.vocab_size = token_id, vocab_size
        where = "" if path is None else f"{self.path}: "
        super().__init__(f"{where}token id {token_id} is >= `vocab_size` {vocab_size}.")


def load_sequences(path: str | os.PathLike) -> np.ndarray:
    """Token sequences from a file: a ``.npy`` integer array ``[N, T]``, or text, one sequence per line.

    A text file holds whitespace-separated token ids, one sequence per line; blank lines are skipped and all
    sequences must have the same length.

    Args:
        path: the file.

    Returns:
        int64 ``[N, T]`` with non-negative ids.

    Raises:
        SequenceFileError: the file cannot be read or does not hold equal-length sequences of non-negative integer
            ids (a ``ValueError``; its ``path`` and ``line`` fields say where).
    """
    path = Path(path)
    if path.suffix.lower() in SEQUENCE_FILE_SUFFIXES:
        try:
            data = np.load(path, allow_pickle=False)
        except OSError as exc:
            raise SequenceFileError(path, f"cannot read the file ({exc.strerror or exc}).") from None
        except ValueError as exc:
            raise SequenceFileError(path, f"not a readable .npy array ({exc}).") from None
        if not isinstance(data, np.ndarray):
            raise SequenceFileError(path, f"expected one array in .npy format, got {type(data).__name__}.")
        if data.ndim != 2 or min(data.shape) < 1:
            raise SequenceFileError(path, f"expected an integer array of sequences [N, T], got shape {data.shape}.")
        if not np.issubdtype(data.dtype, np.integer):
            raise SequenceFileError(path, f"expected integer token ids, got dtype {data.dtype}.")
        data = data.astype(np.int64)
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SequenceFileError(path, f"cannot read the file ({exc.strerror or exc}).") from None
        except UnicodeDecodeError:
            raise SequenceFileError(
                path, "not a UTF-8 text file (give token ids as text, one sequence per line, or a .npy array)."
            ) from None
        rows, first_line = [], None
        for number, line in enumerate(text.splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            bad = next((f for f in fields if not (f.isascii() and f.isdigit())), None)
            if bad is not None:
                raise SequenceFileError(
                    path,
                    f"line {number}: {bad[:20]!r} is not a token id (expected whitespace-separated "
                    "non-negative integers, one sequence per line).",
                    line=number,
                )
            row = [int(field) for field in fields]
            if rows and len(row) != len(rows[0]):
                raise SequenceFileError(
                    path,
                    f"line {number} has {len(row)} tokens but line {first_line} has {len(rows[0])}; "
                    "all sequences must have the same length.",
                    line=number,
                )
            first_line = first_line or number
            rows.append(row)
        if not rows:
            raise SequenceFileError(path, "no sequences (the file is empty).")
        data = np.array(rows, dtype=np.int64)
    if data.min() < 0:
        raise SequenceFileError(path, f"token ids must be >= 0, got {int(data.min())}.")
    return data


@dataclass
class TrainingData:
    """Training and held-out sequences, with what is reported and saved about them.

    Attributes:
        train: training sequences ``[N, T]``.
        held_out: held-out sequences ``[M, T]``.
        vocab_size: the vocabulary ``V``.
        description: one line describing the data.
        info: the JSON-ready record saved with the model (``"source"``, ``"length"``, ``"vocab_size"``,
            ``"sequences"``, and ``"path"`` or the chain's settings and its ``"process"``).
        chain: the :class:`epjax.experiments.markov_training.Chain` when the data come from the built-in process.
        path: the sequence file, when the data come from one.
    """

    train: np.ndarray
    held_out: np.ndarray
    vocab_size: int
    description: str
    info: dict[str, Any]
    chain: Any = None
    path: Path | None = None

    @property
    def length(self) -> int:
        """Tokens per sequence ``T``."""
        return int(self.train.shape[1])


def split_sequences(data: np.ndarray, eval_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split into ``(train, held_out)``: ``round(eval_fraction * N)`` held out, at least 1 each.

    Args:
        data: sequences ``[N, T]`` with ``N >= 2``.
        eval_fraction: the fraction held out, in ``(0, 1)``.
        seed: seed of the NumPy permutation.
    """
    if data.shape[0] < 2:
        raise ExperimentError(
            f"training needs at least 2 sequences (some are held out for evaluation), got {data.shape[0]}."
        )
    if not 0 < eval_fraction < 1:
        raise ExperimentError(f"`eval_fraction` must be in (0, 1), got {eval_fraction!r}.")
    order = np.random.default_rng(seed).permutation(data.shape[0])
    num_eval = min(max(1, round(eval_fraction * data.shape[0])), data.shape[0] - 1)
    return data[order[num_eval:]], data[order[:num_eval]]


def training_data(
    path: str | os.PathLike | None = None,
    *,
    vocab_size: int | None = None,
    length: int | None = None,
    num_sequences: int | None = None,
    chain_seed: int | None = None,
    concentration: float | None = None,
    eval_fraction: float = 0.1,
    seed: int = 0,
) -> TrainingData:
    """The sequences a model learns from: a file (``path``) or the built-in Markov chain, split seeded.

    Args:
        path: a sequence file (:func:`load_sequences`); ``None`` samples the built-in chain.
        vocab_size: the vocabulary (default: the largest id + 1 for a file, 4 for the chain, which needs >= 2).
        length: the chain's tokens per sequence (default 32; only without ``path``).
        num_sequences: the chain's number of sequences (default 2000; only without ``path``).
        chain_seed: seed of the chain's transition matrix (default
            :data:`epjax.experiments.markov_training.DEFAULT_CHAIN_SEED`; only without ``path``).
        concentration: Dirichlet concentration of the chain's rows (default 1; only without ``path``).
        eval_fraction: the fraction of sequences held out, in ``(0, 1)``.
        seed: seeds the chain's sampling (``jax.random.key(seed)``) and the split.

    Returns:
        The :class:`TrainingData`.

    Raises:
        SequenceFileError: ``path`` cannot be read as sequences.
        TokenRangeError: the file holds an id >= ``vocab_size``.
        ValueError: the chain's settings were given with ``path``, or a setting is out of range.
    """
    seed = check_positive_int("seed", seed, minimum=0)
    if path is not None:
        given = {
            "length": length,
            "num_sequences": num_sequences,
            "chain_seed": chain_seed,
            "concentration": concentration,
        }
        given = [name for name, value in given.items() if value is not None]
        if given:
            raise ExperimentError(f"{', '.join(given)} describe the built-in chain; they cannot be used with `path`.")
        data = load_sequences(path)
        vocab = int(data.max()) + 1 if vocab_size is None else check_positive_int("vocab_size", vocab_size)
        if int(data.max()) >= vocab:
            raise TokenRangeError(path, int(data.max()), vocab)
        train_data, held_out = split_sequences(data, eval_fraction, seed)
        description = f"{path}: {data.shape[0]} sequences of {data.shape[1]} tokens, vocabulary {vocab}"
        info = {
            "source": "file",
            "path": str(path),
            "length": int(data.shape[1]),
            "vocab_size": vocab,
            "sequences": int(data.shape[0]),
        }
        return TrainingData(train_data, held_out, vocab, description, info, path=Path(path))
    vocab = 4 if vocab_size is None else check_positive_int("vocab_size", vocab_size, minimum=2)
    length = 32 if length is None else check_positive_int("length", length)
    num_sequences = 2000 if num_sequences is None else check_positive_int("num_sequences", num_sequences, minimum=2)
    chain_seed = mt.DEFAULT_CHAIN_SEED if chain_seed is None else chain_seed
    concentration = 1.0 if concentration is None else concentration
    chain = mt.make_chain(chain_seed, vocab_size=vocab, concentration=concentration)
    data = mt.sample_sequences(jax.random.key(seed), chain, num_sequences, length)
    train_data, held_out = split_sequences(data, eval_fraction, seed)
    description = (
        f"built-in Markov chain (vocabulary {vocab}, chain seed {chain_seed}, concentration {concentration:g}): "
        f"{num_sequences} stationary sequences of {length} tokens"
    )
    info = {
        "source": "markov",
        "length": length,
        "vocab_size": vocab,
        "sequences": num_sequences,
        "chain_seed": chain_seed,
        "concentration": concentration,
        "process": {
            "type": "markov",
            "initial": chain.stationary.tolist(),
            "transition": chain.transition.tolist(),
            "ep_rate": chain.ep_rate,
            "entropy_rate": chain.entropy_rate,
        },
    }
    return TrainingData(train_data, held_out, vocab, description, info, chain)


def num_parameters(params: Any) -> int:
    """The number of scalar parameters in a pytree."""
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


@dataclass
class TrainingResult(Result):
    """A model trained by :func:`train_model`, with what ``epjax train`` reports and saves.

    Losses are mean negative log-likelihoods per token (nats).

    Attributes:
        model: the trained model.
        params: its parameters.
        history: the :class:`epjax.train.History` (every step's mini-batch loss, the held-out checkpoints).
        data: the :class:`TrainingData` it learned from.
        config: the :class:`epjax.train.TrainConfig` used.
        eval_fraction: the fraction of sequences held out.
        untrained_loss: the held-out loss before training.
        seconds: wall time of the training loop.
        seed: the run's seed.
        chain_loss: the built-in chain's own loss on the held-out sequences (``None`` for file data).
        excess_loss: the model's loss minus the chain's on the same sequences (paired), an estimate of
            ``KL(chain || model)`` per token (``None`` for file data).
        excess_loss_stderr: its standard error over held-out sequences.
    """

    model: Any
    params: Any
    history: train.History
    data: TrainingData
    config: train.TrainConfig
    eval_fraction: float
    untrained_loss: float
    seconds: float
    seed: int | None = None
    chain_loss: float | None = None
    excess_loss: float | None = None
    excess_loss_stderr: float | None = None

    title = "training"

    @property
    def inputs(self) -> tuple[Path, ...]:  # type: ignore[override]
        """The sequence file read (hashed into the provenance), if any."""
        return () if self.data.path is None else (self.data.path,)

    @property
    def held_out_loss(self) -> float:
        """The held-out loss after the last step."""
        return float(self.history.eval_loss[-1])

    def summary(self) -> dict[str, Any]:
        """The training record saved with the model and reported in JSON (``"training"``)."""
        out: dict[str, Any] = {
            "steps": self.config.steps,
            "batch_size": self.config.batch_size,
            "learning_rate": self.config.learning_rate,
            "seed": self.seed,
            "eval_fraction": self.eval_fraction,
            "held_out_loss": self.held_out_loss,
            "held_out_loss_untrained": self.untrained_loss,
        }
        if self.chain_loss is not None:
            out |= {
                "chain_held_out_loss": self.chain_loss,
                "excess_loss": self.excess_loss,
                "excess_loss_stderr": json_number(self.excess_loss_stderr),
            }
        return out

    def metadata(self) -> dict[str, Any]:
        """What :meth:`save` stores beside the parameters: the data, the training record and the chain."""
        extra = {"data": {k: v for k, v in self.data.info.items() if k != "process"}, "training": self.summary()}
        if "process" in self.data.info:
            extra["process"] = self.data.info["process"]
        return extra

    def save(self, path: str | os.PathLike) -> None:
        """Save the model, its parameters and :meth:`metadata` to a ``.npz`` file (:func:`epjax.train.save`)."""
        train.save(path, self.model, self.params, extra=self.metadata())

    def table(self) -> str:
        """The data, the model and its held-out loss before and after (and against the chain's own)."""
        data, length = self.data, self.data.length
        lines = [f"data: {data.description}; {data.train.shape[0]} for training, {data.held_out.shape[0]} held out"]
        if data.chain is not None:
            c = data.chain
            lines.append(
                f"  the chain: EP rate r = {c.ep_rate:.4f} nats/step, entropy rate h = {c.entropy_rate:.4f} "
                f"nats/token, least expected held-out loss l*({length}) = {c.optimal_loss(length):.4f}"
            )
        lines.append(f"model: {self.model!r} ({num_parameters(self.params):,} parameters)")
        lines.append(
            f"held-out loss: {self.untrained_loss:.4f} (untrained) -> {self.held_out_loss:.4f} nats/token after "
            f"{self.config.steps} steps ({self.seconds:.1f} s)"
        )
        if self.chain_loss is not None:
            lines.append(
                f"  the chain itself scores {self.chain_loss:.4f} on the same sequences: excess "
                f"{self.excess_loss:.5f} ± {self.excess_loss_stderr:.5f} nats/token (an estimate of "
                "KL(chain || model) per token)"
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The report of ``epjax train --json``: model, data, training record, chain and loss history."""
        h = self.history
        return {
            **json_header("train", "nats per token"),
            "model": train.model_spec(self.model),
            "num_parameters": num_parameters(self.params),
            **self.metadata(),
            "history": {
                "steps": h.steps.tolist(),
                "train_loss": [json_number(v) for v in h.train_loss],
                "eval_steps": h.eval_steps.tolist(),
                "eval_loss": [json_number(v) for v in h.eval_loss],
            },
            "seconds": self.seconds,
        }

    def draw(self, fig: Any, axes: Any) -> None:
        """The learning curve: mini-batch and held-out loss against the step, with the chain's optimum if known."""
        if axes is None:
            fig.set_size_inches(7, 4.2)
            axes = [fig.subplots()]
        ax = axes[0]
        h = self.history
        ax.plot(h.steps, h.train_loss, color="C0", lw=0.8, alpha=0.6, label="mini-batch loss")
        ax.plot(h.eval_steps, h.eval_loss, "o-", color="C1", ms=4, label="held-out loss")
        if self.data.chain is not None:
            optimum = self.data.chain.optimal_loss(self.data.length)
            ax.axhline(optimum, color="k", ls="--", lw=1, label=f"chain's least expected loss l* = {optimum:.4f}")
        ax.set(
            xlabel="optimiser step",
            ylabel="cross-entropy (nats/token)",
            title=f"{self.model.family}: training on {self.data.train.shape[0]} sequences of {self.data.length} tokens",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")


def train_model(
    data: TrainingData,
    family: str = "rnn",
    *,
    steps: int = 1000,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    seed: int = 0,
    eval_fraction: float = 0.1,
    progress: bool = False,
    **model_options: Any,
) -> TrainingResult:
    """Train a fresh model of ``family`` by maximum likelihood on ``data`` (what ``epjax train`` runs).

    The model comes from :func:`epjax.families.new_model` (the Transformer's context is the sequence length); its
    parameters are initialised and its batches drawn from ``jax.random.split(jax.random.key(seed))``. AdamW with
    ``min(100, steps // 10)`` warm-up steps, then cosine decay; the held-out loss is recorded every
    ``max(1, min(100, steps // 10))`` steps and after the last.

    Args:
        data: from :func:`training_data`.
        family: a trainable family (:func:`epjax.families.trainable`).
        steps: optimiser steps.
        batch_size: sequences per step.
        learning_rate: peak learning rate.
        seed: seeds initialisation and batches.
        eval_fraction: the fraction of sequences held out in ``data`` (recorded only).
        progress: show a progress bar over the optimiser steps.
        **model_options: passed to :func:`epjax.families.new_model`, with its defaults: ``size`` (``"tiny"``,
            ``"small"``, ``"medium"``), ``width``, ``layers`` and ``num_heads`` (overrides, not for ``"markov"``),
            ``cell`` (the RNN cell) and ``ssm_kind`` (the SSM kind).

    Returns:
        The :class:`TrainingResult`.
    """
    if not isinstance(data, TrainingData):
        raise ExperimentError(f"`data` must be a TrainingData from training_data(), got {type(data).__name__}.")
    if family == "markov" and any(model_options.get(k) for k in ("width", "layers", "num_heads")):
        raise ExperimentError("`width`, `layers` and `num_heads` do not apply to the 'markov' family.")
    seed = check_positive_int("seed", seed, minimum=0)
    model = families.new_model(family, data.vocab_size, context_length=data.length, **model_options)
    config = train.TrainConfig(
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=min(100, steps // 10),
        eval_every=max(1, min(100, steps // 10)),
    )
    key_init, key_train = jax.random.split(jax.random.key(seed))
    params = model.init(key_init)
    untrained = float(np.mean(train.sequence_losses(model, params, data.held_out)))
    start = time.perf_counter()
    params, history = train.train(
        key_train, model, params, data.train, config=config, eval_data=data.held_out, progress=progress
    )
    seconds = time.perf_counter() - start
    result = TrainingResult(model, params, history, data, config, eval_fraction, untrained, seconds, seed=seed)
    if data.chain is not None:
        losses = train.sequence_losses(model, params, data.held_out)
        chain_losses = train.sequence_losses(data.chain.model, data.chain.params, data.held_out)
        diff = losses - chain_losses
        result.chain_loss = float(np.mean(chain_losses))
        result.excess_loss = float(np.mean(diff))
        result.excess_loss_stderr = float(np.std(diff, ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else math.nan
    return result


__all__ = [
    "SEQUENCE_FILE_SUFFIXES",
    "SequenceFileError",
    "TokenRangeError",
    "TrainingData",
    "TrainingResult",
    "load_sequences",
    "num_parameters",
    "split_sequences",
    "training_data",
    "train_model",
]
