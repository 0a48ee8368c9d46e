"""``epjax aot``: the arrow-of-time learnability gap of forward and backward twins, with EP beside it.

argparse → :func:`epjax.experiments.arrow_of_time.gap_study` → :func:`epjax.cli._base.emit`. This module names the
options, turns a sweep into settings and words the library's errors with the option names.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import epjax
from epjax.cli import _base as base

study = epjax.experiments.arrow_of_time

HELP = {
    "dataset": "built-in data (default: products): prime products p1×p2=n (FW multiplies, BW factors); linear "
    "x:Ax over F2 with sparse A (linear-swapped: x:A⁻¹x, the sign flips); exchangeable and palindromes "
    "(controls); pydoc-chars / pydoc-bpe (Python's own help text, characters or a 512-token BPE)",
    "data": "your own token sequences instead: a .npy integer array [N, T] or a text file, one sequence of "
    "whitespace-separated ids per line",
    "architecture": "architecture of both twins (default: gru)",
    "size": "preset width and depth (tiny, small, medium) or a width such as 48 (default: small)",
    "permutation": "the backward reordering: reverse (default), middle-out, even-odd, chunks:L (random order of "
    "L-token blocks, drawn with --seed) or identity",
    "sweep": "vary one setting over --values, one row each (e.g. --sweep context --values 16,32,64)",
    "ep": "also estimate the forward model's EP under the same reordering with N trajectories (0: no)",
}
DATA_OPTIONS = (
    ("--sequences", "N", base.int_at_least(4), 4000, "sequences (training windows for pydoc-*) (default: 4000)"),
    ("--digits", "D", base.int_at_least(1), 3, "products: digits of each factor (default: 3)"),
    ("--dim", "D", base.int_at_least(1), 10, "linear: length of x and y (default: 10)"),
    ("--sparsity", "K", base.int_at_least(0), 10, "linear: off-diagonal non-zeros of A (default: 10)"),
    ("--context", "T", base.int_at_least(2), None, "pydoc-*: window length (default: 64); controls: length (16)"),
    ("--held-out", "F", base.open_fraction, 0.1, "share of built-in data held out (default: 0.1)"),
)
TRAINING_OPTIONS = (
    ("--seeds", "S", base.int_at_least(1), 3, "training seeds per direction (default: 3)"),
    ("--steps", "N", base.int_at_least(1), 1500, "optimiser steps (default: 1500)"),
    base.batch_size(128, "sequences per step (default: 128)"),
    ("--lr", "LR", base.positive_float, 0.01, "peak learning rate of AdamW (default: 0.01)"),
    ("--eval-every", "N", base.int_at_least(1), 100, "steps between held-out evaluations (default: 100)"),
    ("--ep", "N", base.int_at_least(0), 0, HELP["ep"]),
    base.seed("random seed: data, split, initialisation, batches (default: 0)"),
)


def _configure(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    source = data.add_mutually_exclusive_group()
    base.add_choices(source, ("--dataset", study.DATASETS[:-1], None, HELP["dataset"]))
    source.add_argument("--data", metavar="FILE", type=Path, default=None, help=HELP["data"])
    base.add_options(data, *DATA_OPTIONS)
    model = parser.add_argument_group("model")
    base.add_choices(model, ("--architecture", tuple(study.ARCHITECTURES), "gru", HELP["architecture"]))
    base.add_options(
        model,
        ("--size", "SIZE", str, "small", HELP["size"]),
        ("--permutation", "NAME", str, "reverse", HELP["permutation"]),
    )
    sweep = parser.add_argument_group("sweep")
    base.add_choices(sweep, ("--sweep", tuple(study.SWEEPS), None, HELP["sweep"]))
    sweep.add_argument("--values", metavar="V,V,...", default=None, help="the swept values, comma-separated")
    base.add_options(parser.add_argument_group("training"), *TRAINING_OPTIONS)
    base.add_output_options(
        parser,
        json="write every setting's gap, intervals, per-seed values, loss curves and EP as JSON",
        csv="write one CSV row per setting",
        plot="write the figure (.png, .pdf or .svg): FW and BW held-out loss curves; ∂ with its interval",
    )


@base.command("aot", help="arrow-of-time learnability gap: train forward and backward twins", configure=_configure)
def aot_command(args: argparse.Namespace) -> int:
    """``epjax aot``: ∂ with intervals over seeds and held-out sequences, for one setting or a sweep."""
    base.check_outputs(args)
    base.refuse(
        (args.sweep is None and args.values is not None, "--values needs --sweep."),
        (args.sweep is not None and not args.values, f"--sweep {args.sweep} needs --values."),
        (args.size not in ("tiny", "small", "medium") and not args.size.isdigit(), f"--size {args.size!r} is not "
         "tiny, small, medium or a width."),
    )  # fmt: skip
    dataset = "file" if args.data is not None else (args.dataset or "products")
    sequences = None
    if args.data is not None:
        try:
            sequences = epjax.experiments.training.load_sequences(args.data)
        except epjax.experiments.training.SequenceFileError as err:
            raise ValueError(f"--data {err}") from None
    setting = study.Setting(
        dataset=dataset,
        architecture=args.architecture,
        size=args.size,
        context_length=args.context,
        sparsity=args.sparsity,
        digits=args.digits,
        dim=args.dim,
        permutation=args.permutation,
    )
    values = [] if args.values is None else [v.strip() for v in args.values.split(",") if v.strip()]
    config = epjax.train.TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_steps=min(100, args.steps // 10),
        eval_every=min(args.eval_every, args.steps),
    )
    try:
        settings = study.sweep_settings(setting, args.sweep, values)
        for s in settings:  # refuse an unknown reordering before any training (any length checks the name)
            epjax.aot.reordering(s.permutation, 8, seed=args.seed)
        result = study.gap_study(
            settings,
            sweep=args.sweep,
            num_sequences=args.sequences,
            num_seeds=args.seeds,
            config=config,
            held_out=args.held_out,
            ep_samples=args.ep,
            sequences=sequences,
            sequences_path=args.data,
            seed=args.seed,
            progress=not args.no_progress,
        )
    except study.AotDataError as err:
        raise ValueError(str(err)) from None
    except ValueError as err:
        if "permutation" in str(err) or "reordering" in str(err):
            raise ValueError(f"--permutation: {err}") from None
        raise
    return base.emit(result, args)


__all__ = ["aot_command"]
