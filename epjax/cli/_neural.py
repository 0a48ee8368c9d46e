"""``epjax train`` (maximum likelihood on token sequences) and ``epjax ep`` (EP of a saved model).

Both are argparse → experiment → :func:`epjax.cli._base.emit`: the computations are
:func:`epjax.experiments.training.train_model` and :func:`epjax.experiments.saved_models.saved_model_ep`. This module
only names the options, checks their combinations and words the library's typed errors with the option names.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import epjax
from epjax.cli import _base as base
from epjax.experiments import saved_models, training
from epjax.experiments.training import TrainingData, load_sequences

NEURAL_FAMILIES = tuple(f.name for f in epjax.families.trainable())
# The options that describe the built-in process (refused with --data) and the training_data parameters they set.
PROCESS = {
    "--length": "length",
    "--sequences": "num_sequences",
    "--chain-seed": "chain_seed",
    "--concentration": "concentration",
}


def prepare_training_data(args: argparse.Namespace) -> TrainingData:
    """The sequences ``epjax train`` learns from (``--data FILE`` or the built-in chain), from its parsed options.

    The command-line face of :func:`epjax.experiments.training.training_data`: it refuses the built-in process's
    options with ``--data`` and words the library's errors with the option names.
    """
    process = {parameter: getattr(args, option[2:].replace("-", "_")) for option, parameter in PROCESS.items()}
    if args.data is not None:
        given = [option for option, parameter in PROCESS.items() if process[parameter] is not None]
        if given:
            raise ValueError(f"{', '.join(given)} describe the built-in process; they cannot be used with --data.")
    elif args.vocab is not None and args.vocab < 2:
        raise ValueError(f"--vocab must be >= 2 for the built-in process, got {args.vocab}.")
    try:
        return training.training_data(
            args.data, vocab_size=args.vocab, **process, eval_fraction=args.eval_fraction, seed=args.seed
        )
    except training.SequenceFileError as err:
        raise ValueError(f"--data {err}") from None
    except training.TokenRangeError as err:
        raise ValueError(f"--data {err.path}: token id {err.token_id} is >= --vocab {err.vocab_size}.") from None


HELP = {
    "family": "model family (default: rnn; markov fits a first-order chain, the exact reference)",
    "ssm-kind": "SSM kind: selective (mamba, default) or linear time-invariant (s4d)",
    "size": "preset width and depth (default: small: width 32, 1 layer)",
    "hidden": "width: RNN hidden size, Transformer embedding size, SSM d_model (overrides --size)",
    "heads": "Transformer attention heads (default: 2, or 4 from width 64)",
    "data": "token sequences: a .npy integer array [N, T], or a text file with one sequence of whitespace-separated "
    "token ids per line",
    "process": "sample the data from a built-in process (default when --data is not given): a random Markov chain "
    "that breaks detailed balance",
    "vocab": "vocabulary size (default: 4 for --process, max id + 1 for --data)",
    "chain-seed": "--process: seed of the chain's transition matrix (default: 20, a clearly irreversible 4-token "
    "chain)",
    "concentration": "--process: Dirichlet concentration of the chain's rows (default: 1)",
    "eval-fraction": "fraction of sequences held out for evaluation (default: 0.1)",
    "lr": "peak learning rate of AdamW (default: 0.003; warm-up then cosine decay)",
    "train-seed": "random seed: data sampling, split, initialisation, batches (default: 0)",
    "out": "where to save the trained model (read back by `epjax ep`)",
    "ep-steps": "trajectory length (default: the length of the sequences the model was trained on)",
    "block-size": "coarse-grained EP: reverse the order of blocks of L tokens (T must be a multiple of L); "
    "default: token-level reversal",
    "temperature": "sample and score with logits / TAU (default: the saved model's, normally 1)",
}
MODEL_CHOICES = (
    ("--family", NEURAL_FAMILIES, "rnn", HELP["family"]),
    ("--cell", ("gru", "lstm", "elman"), "gru", "RNN cell (default: gru)"),
    ("--ssm-kind", ("mamba", "s4d"), "mamba", HELP["ssm-kind"]),
    ("--size", ("tiny", "small", "medium"), "small", HELP["size"]),
)
# Width, depth and heads override the --size preset (default None: the preset's).
MODEL_SIZES = (
    ("--hidden", "N", base.int_at_least(1), None, HELP["hidden"]),
    ("--layers", "N", base.int_at_least(1), None, "number of layers (overrides --size)"),
    ("--heads", "N", base.int_at_least(1), None, HELP["heads"]),
)
# The built-in process (default None: its own defaults; refused with --data), then the held-out fraction.
DATA_OPTIONS = (
    ("--vocab", "V", base.int_at_least(1), None, HELP["vocab"]),
    ("--length", "T", base.int_at_least(1), None, "--process: tokens per sequence (default: 32)"),
    ("--sequences", "N", base.int_at_least(2), None, "--process: number of sequences (default: 2000)"),
    ("--chain-seed", "S", base.int_at_least(0), None, HELP["chain-seed"]),
    ("--concentration", "C", base.positive_float, None, HELP["concentration"]),
    ("--eval-fraction", "F", base.open_fraction, 0.1, HELP["eval-fraction"]),
)
TRAINING_OPTIONS = (
    ("--steps", "N", base.int_at_least(1), 1000, "optimiser steps (default: 1000)"),
    base.batch_size(64, "sequences per step (default: 64)"),
    ("--lr", "LR", base.positive_float, 3e-3, HELP["lr"]),
    base.seed(HELP["train-seed"]),
)


def _configure_train(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model")
    base.add_choices(model, *MODEL_CHOICES)
    base.add_options(model, *MODEL_SIZES)
    data = parser.add_argument_group("data")
    source = data.add_mutually_exclusive_group()
    source.add_argument("--data", metavar="FILE", type=Path, default=None, help=HELP["data"])
    base.add_choices(source, ("--process", ("markov",), None, HELP["process"]))
    base.add_options(data, *DATA_OPTIONS)
    base.add_options(parser.add_argument_group("training"), *TRAINING_OPTIONS)
    parser.add_argument("--out", metavar="MODEL.npz", type=Path, required=True, help=HELP["out"])
    base.add_output_options(parser, json="write the training history as JSON")


@base.command(
    "train",
    help="train a neural model (RNN, Transformer, SSM) on token sequences and save it",
    configure=_configure_train,
)
def train_command(args: argparse.Namespace) -> int:
    """``epjax train``: maximum likelihood on a file of sequences or the built-in chain; saves ``--out``."""
    base.check_output_path("--out", args.out, (".npz",))
    base.check_outputs(args)
    sized = args.hidden or args.layers or args.heads
    base.refuse((args.family == "markov" and sized, "--hidden, --layers and --heads do not apply to --family markov."))
    data = prepare_training_data(args)
    shape = dict(size=args.size, width=args.hidden, layers=args.layers, cell=args.cell, ssm_kind=args.ssm_kind)
    schedule = dict(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed)
    result = training.train_model(
        data,
        args.family,
        **shape,
        num_heads=args.heads,
        **schedule,
        eval_fraction=args.eval_fraction,
        progress=not args.no_progress,
    )
    result.save(args.out)
    status = base.emit(result, args, outputs=("json",))
    print(f"saved {args.out}")
    return status


def _configure_ep(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL.npz", type=Path, help="a model saved by `epjax train`")
    base.add_options(
        parser,
        ("--steps", "T", base.int_at_least(1), None, HELP["ep-steps"]),
        ("--block-size", "L", base.int_at_least(1), None, HELP["block-size"]),
        ("--samples", "N", base.int_at_least(2), 2000, "Monte Carlo trajectories (default: 2000)"),
        base.LIBRARY_BATCH_SIZE,
        ("--temperature", "TAU", base.positive_float, None, HELP["temperature"]),
        base.SEED,
    )
    base.add_output_options(
        parser,
        json="write the estimate and every σ as JSON",
        plot="write the figure (.png, .pdf or .svg): running mean ± SE and the histogram of σ",
    )


@base.command("ep", help="Monte Carlo entropy production of a model saved by `epjax train`", configure=_configure_ep)
def ep_command(args: argparse.Namespace) -> int:
    """``epjax ep``: EP of a saved model at token level or over blocks, with a verdict, JSON and a figure."""
    base.check_outputs(args)
    try:
        result = saved_models.saved_model_ep(
            args.model,
            num_steps=args.steps,
            block_size=args.block_size,
            num_samples=args.samples,
            batch_size=args.batch_size,
            temperature=args.temperature,
            seed=args.seed,
            progress=not args.no_progress,
        )
    except saved_models.MissingLengthError as err:
        raise ValueError(f"{err.path} does not record its training length; give --steps T.") from None
    except saved_models.ContextLengthError as err:
        raise base.steps_past_context(err) from None
    except saved_models.BlockSizeError as err:
        raise ValueError(
            f"--block-size {err.block_size} must divide --steps {err.num_steps} (block reversal needs whole blocks)."
        ) from None
    return base.emit(result, args, outputs=("json", "plot"))


__all__ = ["NEURAL_FAMILIES", "ep_command", "load_sequences", "prepare_training_data", "train_command"]
