"""Shared machinery of the ``epjax`` command line: the subcommand registry, argument types, output files.

Each subcommand is one function registered with :func:`command` (its options come from a ``configure``
function) in a module of its own (``_kalman``, ``_neural``, ``_lm``, ``_decompose``, ``_demo``) that imports only
this module. Options are rows of tables added by :func:`add_options` and :func:`add_choices`; the rows several
commands share (:func:`seed`, :func:`batch_size`) are made here. Validation errors from the library
(``ValueError``) and from the command line's own input checks are reported by :func:`main` as
``epjax: error: <message>`` with exit status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax

import epjax
from epjax.cli import _cache
from epjax.experiments.report import (
    Provenance,
    Result,
    save_figure,
)

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2

PLOT_SUFFIXES = (".png", ".pdf", ".svg")


@dataclass(frozen=True)
class Command:
    """One ``epjax`` subcommand.

    Attributes:
        name: the subcommand's name on the command line.
        help: one line shown by ``epjax --help``.
        configure: adds the subcommand's options to its ``argparse`` parser.
        run: executes the parsed arguments and returns the exit status.
    """

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None]):
    """Register the decorated function ``run(args) -> int`` as the subcommand ``epjax <name>``.

    Args:
        name: the subcommand's name.
        help: one line for ``epjax --help``.
        configure: a function adding the subcommand's options to its parser.

    Returns:
        A decorator that registers ``run`` and returns it unchanged.
    """

    def register(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        if name in COMMANDS:
            raise RuntimeError(f"The epjax subcommand {name!r} is registered twice.")
        COMMANDS[name] = Command(name, help, configure, run)
        return run

    return register


def int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def check_output_path(option: str, path: Path | None, suffixes: Sequence[str] | None = None) -> None:
    """Fail before any computation when an output file cannot be written where asked."""
    if path is None:
        return
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise ValueError(
            f"{option} {path}: the file extension must be one of {', '.join(suffixes)} (it sets the format), "
            f"got {path.suffix or 'none'!r}."
        )
    parent = path.resolve().parent
    if not parent.is_dir():
        raise ValueError(f"{option} {path}: the folder {parent} does not exist.")


def write_text(option: str, path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{option} {path}: cannot write the file ({exc.strerror or exc}).") from None


def write_json(path: Path, report: dict[str, Any]) -> None:
    """Write ``report`` as strict JSON (non-finite numbers must already be ``None``) for ``--json``."""
    write_text("--json", path, json.dumps(report, indent=2, allow_nan=False) + "\n")


def csv_cell(value: Any) -> Any:
    """A CSV cell: floats at full precision (``repr``), ``None`` as empty, anything else as is."""
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else value


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write one header line and the rows (cells through :func:`csv_cell`) for ``--csv``."""
    try:
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows([csv_cell(v) for v in row] for row in rows)
    except OSError as exc:
        raise ValueError(f"--csv {path}: cannot write the file ({exc.strerror or exc}).") from None


def print_written(args: argparse.Namespace, *options: str) -> None:
    """One line naming the output files written, e.g. ``wrote json r.json, plot r.png``."""
    written = [f"{opt} {getattr(args, opt)}" for opt in options if getattr(args, opt, None) is not None]
    if written:
        print("\nwrote " + ", ".join(written))


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


positive_float.__name__ = "number > 0"


def open_fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


open_fraction.__name__ = "fraction"


ValueOption = tuple[str, str | None, Callable[[str], Any], Any, str]
"""One row of an option table for :func:`add_options`: option, metavar, type, default, help."""

ChoiceOption = tuple[str, Sequence[str], str | None, str]
"""One row of an option table for :func:`add_choices`: option, choices, default, help."""


def seed(help_text: str = "random seed (default: 0)") -> ValueOption:
    """The ``--seed`` row (an integer >= 0, default 0; metavar SEED), by default worded as most commands word it."""
    return ("--seed", None, int_at_least(0), 0, help_text)


SEED = seed()
"""``--seed``, as most commands word it."""


def batch_size(default: int | None, help_text: str) -> ValueOption:
    """The ``--batch-size B`` row (an integer >= 1) with a command's default and help."""
    return ("--batch-size", "B", int_at_least(1), default, help_text)


LIBRARY_BATCH_SIZE = batch_size(None, "trajectories per compiled batch (default: the library's)")
"""``--batch-size`` of the Monte Carlo commands (``ep``, ``kalman``)."""

SEQUENCE_BATCH_SIZE = batch_size(16, "sequences per compiled batch (default: 16)")
"""``--batch-size`` of the language-model commands (``texts``, ``sample-lm``)."""


def add_options(parser: argparse._ActionsContainer, *options: ValueOption) -> None:
    """Add options that take one value, from rows ``(option, metavar, type, default, help)``, in order."""
    for option, metavar, kind, default, help_text in options:
        parser.add_argument(option, metavar=metavar, type=kind, default=default, help=help_text)


def add_choices(parser: argparse._ActionsContainer, *options: ChoiceOption) -> None:
    """Add options that take one of a few values, from rows ``(option, choices, default, help)``, in order."""
    for option, choices, default, help_text in options:
        parser.add_argument(option, choices=choices, default=default, help=help_text)


def refuse(*conflicts: tuple[Any, str]) -> None:
    """Raise ``ValueError`` with the message of the first ``(condition, message)`` whose condition holds.

    The command line's checks of options that cannot be combined, made before any computation.
    """
    for condition, message in conflicts:
        if condition:
            raise ValueError(message)


def steps_past_context(err: Any) -> ValueError:
    """The wording of a saved model's ``ContextLengthError`` (``num_steps``, ``max_length``) on the command line."""
    return ValueError(f"--steps {err.num_steps} exceeds the model's context of {err.max_length} tokens.")


def add_output_options(
    parser: argparse.ArgumentParser, *, json: str | None = None, csv: str | None = None, plot: str | None = None
) -> None:
    """Add ``--json``, ``--csv`` and ``--plot`` (each only when its help text is given) and ``--no-progress``."""
    for option, help_text in (("--json", json), ("--csv", csv), ("--plot", plot)):
        if help_text is not None:
            parser.add_argument(option, metavar="FILE", type=Path, help=help_text)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


def check_outputs(args: argparse.Namespace) -> None:
    """Fail before any computation when ``--json``, ``--csv`` or ``--plot`` cannot be written where asked."""
    check_output_path("--json", getattr(args, "json", None))
    check_output_path("--csv", getattr(args, "csv", None))
    check_output_path("--plot", getattr(args, "plot", None), PLOT_SUFFIXES)


def emit(result: Result, args: argparse.Namespace, *, outputs: Sequence[str] = ("json", "csv", "plot")) -> int:
    """Render an experiment's result for a command: the terminal text and the files the user asked for.

    Prints :meth:`Result.table`; writes ``--json`` (the result's dictionary under a ``provenance`` header: the
    command line, versions, device, seed and the SHA-256 of every file the experiment read), ``--csv`` (a plain
    CSV table, its header the first line) and ``--plot`` (the figure, with the provenance in its metadata); then
    one "wrote" line.

    Args:
        result: what the experiment returned.
        args: the parsed command line (``json``, ``csv``, ``plot``, ``seed`` attributes where the command has
            them).
        outputs: which of the output options this command offers.

    Returns:
        The exit status: :data:`EXIT_CHECK_FAILED` when the result's checks failed (``result.passed is False``),
        else :data:`EXIT_OK`.
    """
    provenance = Provenance.collect(
        seed=getattr(args, "seed", None), inputs=result.inputs, command=getattr(args, "command_line", None)
    )
    print(result.table())
    if "json" in outputs and getattr(args, "json", None) is not None:
        write_json(args.json, {"provenance": provenance.to_json(), **result.to_json()})
    if "csv" in outputs and getattr(args, "csv", None) is not None:
        write_csv(args.csv, result.csv_header(), result.csv_rows())
    if "plot" in outputs and getattr(args, "plot", None) is not None:
        figure = result.plot()
        try:
            save_figure(figure, args.plot, provenance)
        except ValueError as err:
            raise ValueError(f"--plot {err}") from None
    print_written(args, *outputs)
    return EXIT_CHECK_FAILED if result.passed is False else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The ``epjax`` argument parser with one subparser per registered :class:`Command`."""
    parser = argparse.ArgumentParser(
        prog="epjax",
        description="Entropy production (the arrow of time) of autoregressive generative models, in JAX.",
    )
    parser.add_argument("--version", action="version", version=f"epjax {epjax.__version__} (jax {jax.__version__})")
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument(
        "--compile-cache", metavar="DIR", default=None,
        help="keep compiled XLA programs in DIR for later runs (default: on, in the user cache folder, "
        f"{_cache.default_dir()}; the environment variable {_cache.ENV}=off|DIR sets the default)",
    )
    cache.add_argument("--no-compile-cache", action="store_true", help="compile everything afresh, keep nothing")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS.values():
        sub = subparsers.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(sub)
    return parser


def _use_compile_cache(args: argparse.Namespace) -> None:
    """Turn on JAX's persistent compilation cache as the options and environment say (:mod:`._cache`)."""
    folder = _cache.resolve(args.compile_cache, args.no_compile_cache)
    if folder is None:
        return
    if args.compile_cache is not None or os.environ.get(_cache.ENV, "").strip():
        _cache.enable(folder, "--compile-cache" if args.compile_cache is not None else _cache.ENV)
        return
    try:  # the default folder: a read-only home must not stop the command, only its cache
        _cache.enable(folder, "the default compile cache")
    except ValueError as err:
        print(f"epjax: warning: running without a compile cache: {err} (--no-compile-cache silences this)",
              file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``epjax`` with the command-line arguments ``argv`` (default: ``sys.argv[1:]``).

    Args:
        argv: the arguments after the program name.

    Returns:
        The exit status: 0 success, 1 a check failed, 2 invalid input (message on stderr).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and argparse's own usage errors
        if exc.code is None:
            return EXIT_OK
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    args.command_line = ["epjax", *(sys.argv[1:] if argv is None else [str(a) for a in argv])]
    try:
        _use_compile_cache(args)
        return COMMANDS[args.command].run(args)
    except ValueError as exc:
        print(f"epjax: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("epjax: interrupted", file=sys.stderr)
        return 130
