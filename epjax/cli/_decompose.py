"""``epjax decompose``: the retrospective decomposition ``S = sum_t D_t``, ``D_t = L_t + M_t`` (docs/mathematics.md §6).

Exact for Kalman innovation models (the EP paper's examples or user matrices, as in ``epjax kalman``) and, by
enumeration of all ``V**T`` paths, for a small discrete model saved by ``epjax train``; for a saved model,
``--estimate`` also trains a reverse model and reports the estimate that works at any size, with its bias.
Arguments → :mod:`epjax.experiments.decompositions` → :func:`epjax.cli._base.emit`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from epjax.cli import _base as base
from epjax.experiments import decompositions as dec
from epjax.experiments import kalman_comparison as kc
from epjax.experiments.saved_models import ContextLengthError

HELP = {
    "saved": "a discrete model saved by `epjax train` (exact by enumerating all V**T paths); default: the EP paper's "
    "Kalman examples",
    "example": "Kalman: the EP paper's example(s), scalar, 2d or both (the default)",
    "model": 'Kalman: a JSON file {"A": [[...]], "C": [[...]], "Q": [[...]], "R": [[...]]} (repeatable, as for '
    "`epjax kalman`)",
    "steps": f"sequence length (default: {dec.KALMAN_DEFAULT_STEPS} for Kalman; for a saved model its training "
    "length, capped where enumeration stops being possible unless --estimate)",
    "method": "Kalman: O(T) recursion (default) or the dense path-covariance reference",
    "max-sequences": f"saved model: enumerate at most N = V**T paths (default: {dec.MAX_SEQUENCES})",
    "estimate": "also train a reverse model on reversed samples and estimate D_t with it (biased down by its excess "
    "cross-entropy; works where enumeration cannot)",
}
# The reverse-model estimate's sizes: option, smallest value, default, what it counts.
ESTIMATE_SIZES = (
    ("--reverse-steps", 1, 1000, "training steps of the reverse model"),
    ("--reverse-sequences", 2, 4000, "sampled training sequences of the reverse model"),
    ("--samples", 2, 4000, "Monte Carlo trajectories of the estimate"),
)


def _configure_decompose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("saved", metavar="MODEL.npz", nargs="?", type=Path, default=None, help=HELP["saved"])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--example", choices=[*kc.EXAMPLES, "both"], default=None, help=HELP["example"])
    which.add_argument("--model", metavar="FILE", type=Path, action="append", help=HELP["model"])
    base.add_options(parser, ("--steps", "T", base.int_at_least(1), None, HELP["steps"]))
    base.add_choices(parser, ("--method", ("recursive", "dense"), "recursive", HELP["method"]))
    base.add_options(parser, ("--max-sequences", "N", base.int_at_least(1), dec.MAX_SEQUENCES, HELP["max-sequences"]))
    est = parser.add_argument_group("reverse-model estimate (saved model)")
    est.add_argument("--estimate", action="store_true", help=HELP["estimate"])
    for option, smallest, default, counts in ESTIMATE_SIZES:
        base.add_options(est, (option, "N", base.int_at_least(smallest), default, f"{counts} (default: {default})"))
    base.add_options(parser, base.SEED)
    base.add_output_options(
        parser,
        json="write every per-step term as JSON",
        csv="write one CSV row per (model, t)",
        plot="write D_t, L_t, M_t against t (.png, .pdf or .svg)",
    )


def _decompose_saved(args: argparse.Namespace) -> dec.Decompositions:
    try:
        options = dict(num_steps=args.steps, max_sequences=args.max_sequences, estimate=args.estimate, seed=args.seed)
        sizes = dict(
            reverse_steps=args.reverse_steps, reverse_sequences=args.reverse_sequences, num_samples=args.samples
        )
        return dec.decompose_saved(args.saved, **options, **sizes, method=args.method, progress=not args.no_progress)
    except ContextLengthError as err:
        raise base.steps_past_context(err) from None
    except dec.EnumerationTooLargeError as err:
        raise ValueError(
            f"--steps {err.num_steps}: exact enumeration of {err.vocab_size}**{err.num_steps} sequences exceeds "
            f"--max-sequences {err.max_sequences} (at most T = {err.largest} for this vocabulary); give a smaller "
            "--steps, or --estimate for the reverse-model estimate."
        ) from None


DECOMPOSE_HELP = "retrospective decomposition of EP: per-step D_t = compression loss + model mismatch"


@base.command("decompose", help=DECOMPOSE_HELP, configure=_configure_decompose)
def decompose_command(args: argparse.Namespace) -> int:
    """``epjax decompose``: the per-step table, totals, and optional JSON, CSV and figure files."""
    base.check_outputs(args)
    if args.saved is not None:
        if args.example or args.model:
            raise ValueError("give either MODEL.npz (a saved discrete model) or --example/--model (Kalman), not both.")
        result = _decompose_saved(args)
    else:
        kalman_only = (("--estimate", args.estimate), ("--max-sequences", args.max_sequences != dec.MAX_SEQUENCES))
        given = [option for option, used in kalman_only if used]
        if given:
            raise ValueError(f"{', '.join(given)} applies to a saved model (MODEL.npz), not to Kalman models.")
        specs = kc.select_models(args.example, args.model or (), source_prefix="--model")
        result = dec.decompose_kalman(specs, args.steps or dec.KALMAN_DEFAULT_STEPS, method=args.method, seed=args.seed)
    return base.emit(result, args)
