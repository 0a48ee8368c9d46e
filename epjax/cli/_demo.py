"""``epjax demo``: built-in end-to-end checks, one registered section each.

Each built-in section calls a check of :mod:`epjax.experiments.demo` and prints its result (with its verdict)
through :func:`epjax.cli._base.emit`; the command exits with status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

from epjax.cli import _base as base
from epjax.experiments import demo
from epjax.experiments.report import Result


@dataclass(frozen=True)
class DemoSection:
    """One section of ``epjax demo``.

    Attributes:
        name: short name, selectable with ``epjax demo --only NAME``.
        title: heading printed above the section.
        run: prints the section's results (from the parsed ``demo`` arguments) and returns True when every
            check it makes passes.
    """

    name: str
    title: str
    run: Callable[[argparse.Namespace], bool]


DEMO_SECTIONS: list[DemoSection] = []


def demo_section(name: str, title: str):
    """Append the decorated function ``run(args) -> bool`` to the sections of ``epjax demo``.

    Args:
        name: short name of the section.
        title: heading printed above it.

    Returns:
        A decorator that registers ``run`` and returns it unchanged.
    """

    def register(run: Callable[[argparse.Namespace], bool]) -> Callable[[argparse.Namespace], bool]:
        if any(section.name == name for section in DEMO_SECTIONS):
            raise RuntimeError(f"The demo section {name!r} is registered twice.")
        DEMO_SECTIONS.append(DemoSection(name, title, run))
        return run

    return register


DEMO_KALMAN_STEPS = demo.KALMAN_STEPS
DEMO_Z_LIMIT = demo.Z_LIMIT
DEMO_NEURAL = demo.NEURAL_SETTINGS


def _show(result: Result, args: argparse.Namespace) -> bool:
    """Print a check's result (with its verdict) and say whether it passed."""
    status = base.emit(result, args, outputs=())
    print()
    return status == base.EXIT_OK


@demo_section("kalman", "Kalman innovation models: exact EP (eq. 71) vs Monte Carlo (EP paper Fig. 5)")
def _demo_kalman(args: argparse.Namespace) -> bool:
    result = demo.kalman_check(
        num_samples=args.samples, seed=args.seed, steps=DEMO_KALMAN_STEPS, z_limit=DEMO_Z_LIMIT,
        progress=not args.no_progress,
    )  # fmt: skip
    return _show(result, args)


@demo_section("neural", "A tiny GRU trained on an irreversible Markov chain: its EP approaches the chain's exact EP")
def _demo_neural(args: argparse.Namespace) -> bool:
    result = demo.neural_check(
        num_samples=args.samples, seed=args.seed, settings=DEMO_NEURAL, progress=not args.no_progress
    )
    return _show(result, args)


def _configure_demo(parser: argparse.ArgumentParser) -> None:
    samples_help = "Monte Carlo trajectories per estimate (default: 4000)"
    base.add_options(parser, ("--samples", "N", base.int_at_least(2), 4000, samples_help), base.SEED)
    names = [s.name for s in DEMO_SECTIONS]
    only_help = f"run only this section (repeatable; sections: {', '.join(names)})"
    parser.add_argument("--only", metavar="SECTION", action="append", choices=names, help=only_help)
    base.add_output_options(parser)  # only --no-progress: the demo writes no files


DEMO_HELP = "a quick end-to-end check on built-in examples (exit status 1 if a check fails)"


@base.command("demo", help=DEMO_HELP, configure=_configure_demo)
def demo_command(args: argparse.Namespace) -> int:
    """``epjax demo``: run every registered demo section, print each verdict, fail if any check fails."""
    sections = [s for s in DEMO_SECTIONS if not args.only or s.name in args.only]
    start = time.perf_counter()
    failed = []
    for section in sections:
        print(f"== {section.title} ==\n")
        if not section.run(args):
            failed.append(section.name)
    elapsed = time.perf_counter() - start
    if failed:
        print(f"demo finished in {elapsed:.1f} s: FAILED sections: {', '.join(failed)}")
        return base.EXIT_CHECK_FAILED
    print(f"demo finished in {elapsed:.1f} s: all {len(sections)} section(s) passed")
    return base.EXIT_OK
