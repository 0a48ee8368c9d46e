"""``epjax kalman``: exact EP of Kalman models (eq. 71) vs Monte Carlo (docs/mathematics.md §5, EP paper Fig. 5).

Arguments → :func:`epjax.experiments.kalman_comparison.compare_kalman` → :func:`epjax.cli._base.emit`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from epjax.cli._base import add_output_options, check_outputs, command, emit, int_at_least
from epjax.experiments import kalman_comparison as kc

KALMAN_DEFAULT_STEPS = tuple(range(5, 51, 5))


def _configure_kalman(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--example", choices=[*kc.EXAMPLES, "both"], default=None,
        help="the EP paper's example(s): scalar (A=0.9, C=Q=R=1), 2d, or both (default)",
    )  # fmt: skip
    which.add_argument(
        "--model", metavar="FILE", type=Path, action="append",
        help='a JSON file {"A": [[...]], "C": [[...]], "Q": [[...]], "R": [[...]], "name": "..."} (repeatable)',
    )  # fmt: skip
    parser.add_argument(
        "--steps", metavar="T", type=int_at_least(1), nargs="+", default=list(KALMAN_DEFAULT_STEPS),
        help="trajectory lengths (default: 5 10 ... 50)",
    )  # fmt: skip
    parser.add_argument(
        "--samples", metavar="N", type=int_at_least(2), default=20_000,
        help="Monte Carlo trajectories per (model, T) (default: 20000)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--batch-size", metavar="B", type=int_at_least(1), default=None,
        help="trajectories per compiled batch (default: the library's)",
    )  # fmt: skip
    parser.add_argument(
        "--method", choices=("recursive", "dense"), default="recursive",
        help="exact method: O(T) recursion (default) or the dense reversal matrix of eq. 71",
    )  # fmt: skip
    add_output_options(
        parser,
        json="write machine-readable results (incl. the rate)",
        csv="write one CSV row per (model, T)",
        plot="write the figure (.png, .pdf or .svg): exact curve and Monte Carlo ± SE vs T, one panel per model",
    )


@command(
    "kalman",
    help="exact entropy production of Kalman innovation models (eq. 71) vs Monte Carlo",
    configure=_configure_kalman,
)
def kalman_command(args: argparse.Namespace) -> int:
    """``epjax kalman``: the table of exact vs Monte Carlo EP, and optional JSON, CSV and figure files."""
    check_outputs(args)
    specs = kc.select_models(args.example, args.model or (), source_prefix="--model")
    try:
        result = kc.compare_kalman(
            specs,
            sorted(set(args.steps)),
            num_samples=args.samples,
            seed=args.seed,
            batch_size=args.batch_size,
            method=args.method,
            curve=args.plot is not None,
            progress=not args.no_progress,
        )
    except kc.KalmanModelError as err:
        if err.method is None:
            raise
        hint = " On the command line: --method recursive." if err.method == "dense" else ""
        raise ValueError(f"{err.source}, --method {err.method} --steps {err.num_steps}: {err.reason}{hint}") from None
    return emit(result, args)
