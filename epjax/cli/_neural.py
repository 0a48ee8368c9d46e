"""``epjax train`` (maximum likelihood on token sequences) and ``epjax ep`` (EP of a saved model).

Both are argparse → experiment → :func:`epjax.cli._base.emit`: the computations are
:func:`epjax.experiments.training.train_model` and :func:`epjax.experiments.saved_models.saved_model_ep`. This module
only names the options, checks their combinations and words the library's typed errors with the option names.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import epjax
from epjax.cli._base import (
    add_output_options,
    check_output_path,
    check_outputs,
    command,
    emit,
    int_at_least,
    open_fraction,
    positive_float,
)
from epjax.experiments import saved_models, training
from epjax.experiments.training import TrainingData, load_sequences

NEURAL_FAMILIES = tuple(f.name for f in epjax.families.trainable())


def prepare_training_data(args: argparse.Namespace) -> TrainingData:
    """The sequences ``epjax train`` learns from (``--data FILE`` or the built-in chain), from its parsed options.

    The command-line face of :func:`epjax.experiments.training.training_data`: it refuses the built-in process's
    options with ``--data`` and words the library's errors with the option names.
    """
    process_options = {
        "--length": args.length,
        "--sequences": args.sequences,
        "--chain-seed": args.chain_seed,
        "--concentration": args.concentration,
    }
    if args.data is not None:
        given = [option for option, value in process_options.items() if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} describe the built-in process; they cannot be used with --data.")
    elif args.vocab is not None and args.vocab < 2:
        raise ValueError(f"--vocab must be >= 2 for the built-in process, got {args.vocab}.")
    try:
        return training.training_data(
            args.data,
            vocab_size=args.vocab,
            length=args.length,
            num_sequences=args.sequences,
            chain_seed=args.chain_seed,
            concentration=args.concentration,
            eval_fraction=args.eval_fraction,
            seed=args.seed,
        )
    except training.SequenceFileError as err:
        raise ValueError(f"--data {err}") from None
    except training.TokenRangeError as err:
        raise ValueError(f"--data {err.path}: token id {err.token_id} is >= --vocab {err.vocab_size}.") from None


def _configure_train(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model")
    model.add_argument(
        "--family",
        choices=NEURAL_FAMILIES,
        default="rnn",
        help="model family (default: rnn; markov fits a first-order chain, the exact reference)",
    )
    model.add_argument("--cell", choices=("gru", "lstm", "elman"), default="gru", help="RNN cell (default: gru)")
    model.add_argument(
        "--ssm-kind",
        choices=("mamba", "s4d"),
        default="mamba",
        help="SSM kind: selective (mamba, default) or linear time-invariant (s4d)",
    )
    model.add_argument(
        "--size",
        choices=("tiny", "small", "medium"),
        default="small",
        help="preset width and depth (default: small: width 32, 1 layer)",
    )
    model.add_argument(
        "--hidden",
        metavar="N",
        type=int_at_least(1),
        default=None,
        help="width: RNN hidden size, Transformer embedding size, SSM d_model (overrides --size)",
    )
    model.add_argument(
        "--layers", metavar="N", type=int_at_least(1), default=None, help="number of layers (overrides --size)"
    )
    model.add_argument(
        "--heads",
        metavar="N",
        type=int_at_least(1),
        default=None,
        help="Transformer attention heads (default: 2, or 4 from width 64)",
    )
    data = parser.add_argument_group("data")
    source = data.add_mutually_exclusive_group()
    source.add_argument(
        "--data",
        metavar="FILE",
        type=Path,
        default=None,
        help="token sequences: a .npy integer array [N, T], or a text file with one sequence of "
        "whitespace-separated token ids per line",
    )
    source.add_argument(
        "--process",
        choices=("markov",),
        default=None,
        help="sample the data from a built-in process (default when --data is not given): a "
        "random Markov chain that breaks detailed balance",
    )
    data.add_argument(
        "--vocab",
        metavar="V",
        type=int_at_least(1),
        default=None,
        help="vocabulary size (default: 4 for --process, max id + 1 for --data)",
    )
    data.add_argument(
        "--length", metavar="T", type=int_at_least(1), default=None, help="--process: tokens per sequence (default: 32)"
    )
    data.add_argument(
        "--sequences",
        metavar="N",
        type=int_at_least(2),
        default=None,
        help="--process: number of sequences (default: 2000)",
    )
    data.add_argument(
        "--chain-seed",
        metavar="S",
        type=int_at_least(0),
        default=None,
        help="--process: seed of the chain's transition matrix (default: 20, a clearly irreversible 4-token chain)",
    )
    data.add_argument(
        "--concentration",
        metavar="C",
        type=positive_float,
        default=None,
        help="--process: Dirichlet concentration of the chain's rows (default: 1)",
    )
    data.add_argument(
        "--eval-fraction",
        metavar="F",
        type=open_fraction,
        default=0.1,
        help="fraction of sequences held out for evaluation (default: 0.1)",
    )
    opt = parser.add_argument_group("training")
    opt.add_argument("--steps", metavar="N", type=int_at_least(1), default=1000, help="optimiser steps (default: 1000)")
    opt.add_argument(
        "--batch-size", metavar="B", type=int_at_least(1), default=64, help="sequences per step (default: 64)"
    )
    opt.add_argument(
        "--lr",
        metavar="LR",
        type=positive_float,
        default=3e-3,
        help="peak learning rate of AdamW (default: 0.003; warm-up then cosine decay)",
    )
    opt.add_argument(
        "--seed",
        type=int_at_least(0),
        default=0,
        help="random seed: data sampling, split, initialisation, batches (default: 0)",
    )
    parser.add_argument(
        "--out",
        metavar="MODEL.npz",
        type=Path,
        required=True,
        help="where to save the trained model (read back by `epjax ep`)",
    )
    add_output_options(parser, json="write the training history as JSON")


@command(
    "train",
    help="train a neural model (RNN, Transformer, SSM) on token sequences and save it",
    configure=_configure_train,
)
def train_command(args: argparse.Namespace) -> int:
    """``epjax train``: maximum likelihood on a file of sequences or the built-in chain; saves ``--out``."""
    check_output_path("--out", args.out, (".npz",))
    check_outputs(args)
    if args.family == "markov" and (args.hidden or args.layers or args.heads):
        raise ValueError("--hidden, --layers and --heads do not apply to --family markov.")
    data = prepare_training_data(args)
    result = training.train_model(
        data,
        args.family,
        size=args.size,
        width=args.hidden,
        layers=args.layers,
        cell=args.cell,
        ssm_kind=args.ssm_kind,
        num_heads=args.heads,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        seed=args.seed,
        eval_fraction=args.eval_fraction,
        progress=not args.no_progress,
    )
    result.save(args.out)
    status = emit(result, args, outputs=("json",))
    print(f"saved {args.out}")
    return status


def _configure_ep(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL.npz", type=Path, help="a model saved by `epjax train`")
    parser.add_argument(
        "--steps",
        metavar="T",
        type=int_at_least(1),
        default=None,
        help="trajectory length (default: the length of the sequences the model was trained on)",
    )
    parser.add_argument(
        "--block-size",
        metavar="L",
        type=int_at_least(1),
        default=None,
        help="coarse-grained EP: reverse the order of blocks of L tokens (T must be a multiple of L); "
        "default: token-level reversal",
    )
    parser.add_argument(
        "--samples", metavar="N", type=int_at_least(2), default=2000, help="Monte Carlo trajectories (default: 2000)"
    )
    parser.add_argument(
        "--batch-size",
        metavar="B",
        type=int_at_least(1),
        default=None,
        help="trajectories per compiled batch (default: the library's)",
    )
    parser.add_argument(
        "--temperature",
        metavar="TAU",
        type=positive_float,
        default=None,
        help="sample and score with logits / TAU (default: the saved model's, normally 1)",
    )
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="random seed (default: 0)")
    add_output_options(
        parser,
        json="write the estimate and every σ as JSON",
        plot="write the figure (.png, .pdf or .svg): running mean ± SE and the histogram of σ",
    )


@command("ep", help="Monte Carlo entropy production of a model saved by `epjax train`", configure=_configure_ep)
def ep_command(args: argparse.Namespace) -> int:
    """``epjax ep``: EP of a saved model at token level or over blocks, with a verdict, JSON and a figure."""
    check_outputs(args)
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
        raise ValueError(f"--steps {err.num_steps} exceeds the model's context of {err.max_length} tokens.") from None
    except saved_models.BlockSizeError as err:
        raise ValueError(
            f"--block-size {err.block_size} must divide --steps {err.num_steps} (block reversal needs whole blocks)."
        ) from None
    return emit(result, args, outputs=("json", "plot"))


__all__ = ["NEURAL_FAMILIES", "ep_command", "load_sequences", "prepare_training_data", "train_command"]
