"""``epjax kalman``: exact EP of Kalman models (eq. 71) vs Monte Carlo (docs/mathematics.md §5, EP paper Fig. 5).

Arguments → :func:`epjax.experiments.kalman_comparison.compare_kalman` → :func:`epjax.cli._base.emit`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from epjax.cli import _base as base
from epjax.experiments import kalman_comparison as kc

KALMAN_DEFAULT_STEPS = tuple(range(5, 51, 5))


HELP = {
    "kalman": "exact entropy production of Kalman innovation models (eq. 71) vs Monte Carlo",
    "example": "the EP paper's example(s): scalar (A=0.9, C=Q=R=1), 2d, or both (default)",
    "model": 'a JSON file {"A": [[...]], "C": [[...]], "Q": [[...]], "R": [[...]], "name": "..."} (repeatable)',
    "steps": "trajectory lengths (default: 5 10 ... 50)",
    "samples": "Monte Carlo trajectories per (model, T) (default: 20000)",
    "method": "exact method: O(T) recursion (default) or the dense reversal matrix of eq. 71",
}


def _configure_kalman(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--example", choices=[*kc.EXAMPLES, "both"], default=None, help=HELP["example"])
    which.add_argument("--model", metavar="FILE", type=Path, action="append", help=HELP["model"])
    steps = list(KALMAN_DEFAULT_STEPS)
    parser.add_argument("--steps", metavar="T", type=base.int_at_least(1), nargs="+", default=steps, help=HELP["steps"])
    base.add_options(
        parser, ("--samples", "N", base.int_at_least(2), 20_000, HELP["samples"]), base.SEED, base.LIBRARY_BATCH_SIZE
    )
    base.add_choices(parser, ("--method", ("recursive", "dense"), "recursive", HELP["method"]))
    base.add_output_options(
        parser,
        json="write machine-readable results (incl. the rate)",
        csv="write one CSV row per (model, T)",
        plot="write the figure (.png, .pdf or .svg): exact curve and Monte Carlo ± SE vs T, one panel per model",
    )


@base.command("kalman", help=HELP["kalman"], configure=_configure_kalman)
def kalman_command(args: argparse.Namespace) -> int:
    """``epjax kalman``: the table of exact vs Monte Carlo EP, and optional JSON, CSV and figure files."""
    base.check_outputs(args)
    specs = kc.select_models(args.example, args.model or (), source_prefix="--model")
    sizes = dict(num_samples=args.samples, batch_size=args.batch_size, curve=args.plot is not None)
    try:
        result = kc.compare_kalman(
            specs, sorted(set(args.steps)), **sizes, seed=args.seed, method=args.method, progress=not args.no_progress
        )
    except kc.KalmanModelError as err:
        if err.method is None:
            raise
        hint = " On the command line: --method recursive." if err.method == "dense" else ""
        raise ValueError(f"{err.source}, --method {err.method} --steps {err.num_steps}: {err.reason}{hint}") from None
    return base.emit(result, args)
