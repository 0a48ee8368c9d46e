"""The ``epjax`` command line: a thin layer over the public API.

Usage::

    epjax demo                                   # built-in end-to-end check, well under a minute on a CPU
    epjax kalman --example 2d --plot fig5.png    # exact EP (eq. 71) vs Monte Carlo, the EP paper's Fig. 5
    epjax kalman --model my_model.json --json results.json --csv results.csv
    epjax --version

Each subcommand is one function registered with :func:`command` (its options come from a ``configure``
function); ``epjax demo`` runs every section registered with :func:`demo_section`. New subcommands and demo
sections are added by registering more functions, nothing else changes. Validation errors from the library
(``ValueError``) and from the command line's own input checks are reported at this boundary as
``epjax: error: <message>`` with exit status 2, without a traceback.

Exit status: 0 success; 1 a check run by the command failed (e.g. a demo verdict); 2 invalid input.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

import epjax

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2

PLOT_SUFFIXES = (".png", ".pdf", ".svg")

# ------------------------------------------------------------------------------------------------------------
# Subcommand and demo-section registries
# ------------------------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------------------------
# Shared helpers: argument types, output files, tables
# ------------------------------------------------------------------------------------------------------------


def _int_at_least(minimum: int) -> Callable[[str], int]:
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


def _check_output_path(option: str, path: Path | None, suffixes: Sequence[str] | None = None) -> None:
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


def _write_text(option: str, path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{option} {path}: cannot write the file ({exc.strerror or exc}).") from None


def _json_number(x: float | None) -> float | None:
    """``None`` for missing or non-finite values, so that the output is strict JSON."""
    if x is None or not math.isfinite(x):
        return None
    return float(x)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    """A plain-text table: right-aligned columns separated by two spaces, a rule under the header.

    Args:
        headers: column titles.
        rows: the cells, already formatted as strings.
        indent: prefix of every line.

    Returns:
        The table as one string (no trailing newline).
    """
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "  ".join(str(cell).rjust(width) for cell, width in zip(line, widths, strict=True))
        for line in [headers, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(indent + line for line in lines)


def _format_matrix(x: Any) -> str:
    rows = np.atleast_2d(np.asarray(x, dtype=np.float64))
    return "[" + ", ".join("[" + ", ".join(f"{v:.6g}" for v in row) + "]" for row in rows) + "]"


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="run", file=sys.stderr, disable=not enabled, leave=False)


# ------------------------------------------------------------------------------------------------------------
# Kalman innovation models: exact EP (eq. 71) vs Monte Carlo (SPEC §5)
# ------------------------------------------------------------------------------------------------------------

# The EP paper's numerical example (§6, Fig. 5), defined once in the library.
KALMAN_EXAMPLES = epjax.kalman.EXAMPLES
KALMAN_DEFAULT_STEPS = tuple(range(5, 51, 5))
_MODEL_KEYS = ("A", "C", "Q", "R")
_MODEL_OPTIONAL_KEYS = ("name", "description")


@dataclass(frozen=True)
class StateSpaceSpec:
    """A state-space model ``x_{t+1} = A x_t + w_t, y_t = C x_t + v_t`` as given by the user.

    Attributes:
        name: label used in tables, files and figures.
        source: where it came from (for error messages), e.g. ``"--model m.json"``.
        A: ``[n, n]`` state transition.
        C: ``[n_y, n]`` observation matrix.
        Q: ``[n, n]`` process-noise covariance.
        R: ``[n_y, n_y]`` observation-noise covariance.
    """

    name: str
    source: str
    A: np.ndarray
    C: np.ndarray
    Q: np.ndarray
    R: np.ndarray


@dataclass
class KalmanRow:
    """Exact and Monte Carlo EP of one model at one length ``T`` (nats)."""

    T: int
    exact: float
    mean: float
    stderr: float
    ci_low: float
    ci_high: float
    mean_exp_neg_sigma: float
    fraction_negative: float
    num_samples: int

    @property
    def z(self) -> float | None:
        """``(MC - exact) / SE``; ``None`` when the standard error is 0 (e.g. ``T = 1``, where sigma = 0)."""
        if self.stderr > 0:
            return (self.mean - self.exact) / self.stderr
        return None if self.mean != self.exact else 0.0


@dataclass
class KalmanResult:
    """Everything ``epjax kalman`` reports for one model."""

    spec: StateSpaceSpec
    params: Any
    rate: float | None
    rate_note: str
    rows: list[KalmanRow] = field(default_factory=list)
    curve: tuple[list[int], list[float]] | None = None


def _example_spec(name: str) -> StateSpaceSpec:
    m = KALMAN_EXAMPLES[name]
    matrices = (np.asarray(m[k], dtype=np.float64) for k in _MODEL_KEYS)
    return StateSpaceSpec(name, f"example {name!r}", *matrices)


def _json_matrix(where: str, key: str, value: Any) -> np.ndarray:
    """A matrix from JSON: a nested list of numbers with rows of equal length (a bare number means 1 x 1)."""
    expected = f'a matrix as a nested list of numbers, e.g. "{key}": [[0.9]] or [[1, 0], [0, 1]]'

    def is_number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if is_number(value):
        return np.array([[float(value)]])
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: key {key!r} must be {expected}; got {json.dumps(value)[:80]}.")
    if all(is_number(v) for v in value):
        raise ValueError(
            f"{where}: key {key!r} must be {expected}; got a flat list {json.dumps(value)[:80]} "
            "(write each row as its own list)."
        )
    for i, row in enumerate(value):
        if not isinstance(row, list) or not row or not all(is_number(v) for v in row):
            raise ValueError(f"{where}: key {key!r} must be {expected}; row {i} is {json.dumps(row)[:80]}.")
    lengths = sorted({len(row) for row in value})
    if len(lengths) > 1:
        raise ValueError(
            f"{where}: key {key!r} must be {expected}; its rows have different lengths {lengths}."
        )
    return np.array(value, dtype=np.float64)


def load_state_space(path: str | Path) -> StateSpaceSpec:
    """Read a state-space model from a JSON file with keys ``A``, ``C``, ``Q``, ``R`` (and optional ``name``).

    Args:
        path: the file, e.g. ``{"A": [[0.9]], "C": [[1]], "Q": [[1]], "R": [[1]]}``.

    Returns:
        The :class:`StateSpaceSpec`; shapes and values are checked later by
        :func:`epjax.kalman.from_state_space`.

    Raises:
        ValueError: the file cannot be read, is not valid JSON, lacks a key, has an unknown key, or a value is
            not a matrix; the message names the file and what is wrong.
    """
    path = Path(path)
    where = f"--model {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{where}: cannot read the file ({exc.strerror or exc}).") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{where}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}."
        ) from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{where}: expected a JSON object with keys {', '.join(_MODEL_KEYS)}, "
            f"got a JSON {type(data).__name__}."
        )
    missing = [k for k in _MODEL_KEYS if k not in data]
    if missing:
        raise ValueError(
            f"{where}: missing key{'s' if len(missing) > 1 else ''} {', '.join(repr(k) for k in missing)}; "
            f"a model needs {', '.join(_MODEL_KEYS)} as nested lists "
            "(x_{t+1} = A x_t + w_t, y_t = C x_t + v_t, w ~ N(0, Q), v ~ N(0, R))."
        )
    unknown = [k for k in data if k not in _MODEL_KEYS + _MODEL_OPTIONAL_KEYS]
    if unknown:
        raise ValueError(
            f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(repr(k) for k in unknown)}; "
            f"allowed keys are {', '.join(_MODEL_KEYS + _MODEL_OPTIONAL_KEYS)}."
        )
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: key 'name' must be a non-empty string, got {json.dumps(name)[:80]}.")
    matrices = [_json_matrix(where, k, data[k]) for k in _MODEL_KEYS]
    for key, matrix in zip(_MODEL_KEYS, matrices, strict=True):
        if key != "C" and matrix.shape[0] != matrix.shape[1]:
            raise ValueError(
                f"{where}: key {key!r} must be a square matrix, got {matrix.shape[0]} rows of length "
                f"{matrix.shape[1]}."
            )
    return StateSpaceSpec(name, where, *matrices)


def _innovation_params(spec: StateSpaceSpec):
    try:
        return epjax.kalman.from_state_space(spec.A, spec.C, spec.Q, spec.R)
    except ValueError as exc:
        raise ValueError(f"{spec.source}: {exc}") from None


def _rate(params) -> tuple[float | None, str]:
    try:
        rate = float(epjax.kalman.entropy_production_rate(params))
    except ValueError as exc:  # e.g. unstable A: the process has no stationary regime
        return None, f"undefined: {exc}"
    if params.obs_dim == 1:
        return rate, "n_y = 1: a stationary scalar Gaussian process is time-reversible, S_y(T) saturates"
    return rate, "S_y(T) grows linearly with this slope"


def run_kalman_comparison(
    specs: Sequence[StateSpaceSpec],
    steps: Sequence[int],
    *,
    num_samples: int,
    seed: int = 0,
    batch_size: int | None = None,
    method: str = "recursive",
    curve: bool = False,
    progress: bool = True,
) -> list[KalmanResult]:
    """Exact EP and its Monte Carlo estimate for each model and each ``T`` in ``steps``, in float64.

    Model ``i`` at length ``T`` uses the key ``fold_in(fold_in(key(seed), i), T)``.

    Args:
        specs: the state-space models.
        steps: trajectory lengths ``T``.
        num_samples: Monte Carlo trajectories per ``(model, T)``.
        seed: the random seed.
        batch_size: trajectories per compiled batch (``None``: the library's default).
        method: exact method of :func:`epjax.kalman.entropy_production`.
        curve: also compute the exact EP at every ``T = 1 .. max(steps)`` (for figures; one compilation per
            ``T``).
        progress: show progress bars on stderr.

    Returns:
        One :class:`KalmanResult` per model.
    """
    options = {} if batch_size is None else {"batch_size": batch_size}
    results = []
    with jax.enable_x64(True):
        key = jax.random.key(seed)
        with _progress(len(specs) * len(steps), "exact vs Monte Carlo", progress) as bar:
            for i, spec in enumerate(specs):
                params = _innovation_params(spec)
                rate, note = _rate(params)
                result = KalmanResult(spec, params, rate, note)
                for T in steps:
                    bar.set_postfix_str(f"{spec.name}, T={T}")
                    exact = float(epjax.kalman.entropy_production(params, T, method=method))
                    est = epjax.entropy_production(
                        jax.random.fold_in(jax.random.fold_in(key, i), T),
                        epjax.kalman.model,
                        params,
                        num_steps=T,
                        num_samples=num_samples,
                        **options,
                    )
                    result.rows.append(
                        KalmanRow(
                            T, exact, est.mean, est.stderr, est.ci_low, est.ci_high, est.mean_exp_neg_sigma,
                            est.fraction_negative, est.num_samples,
                        )
                    )
                    bar.update()
                results.append(result)
        if curve:
            # Exact EP for every T up to the largest horizon, from one pass of the recursion (one compile).
            horizon = max(steps)
            for result in results:
                values = np.asarray(epjax.kalman.entropy_production_curve(result.params, horizon))
                result.curve = (list(range(1, horizon + 1)), [float(v) for v in values])
    return results


def format_kalman_result(result: KalmanResult) -> str:
    """The readable report of one model: its matrices, the table of exact vs Monte Carlo EP, and the rate."""
    spec, params = result.spec, result.params
    n, n_y = params.state_dim, params.obs_dim
    lines = [
        f"{spec.name}: n = {n} state{'s' if n > 1 else ''}, n_y = {n_y} observation{'s' if n_y > 1 else ''}"
        f"  [{spec.source}]",
        "  " + "  ".join(f"{k} = {_format_matrix(getattr(spec, k))}" for k in _MODEL_KEYS),
    ]
    rows = []
    for row in result.rows:
        z = row.z
        rows.append(
            [
                str(row.T),
                f"{row.exact:.6f}",
                f"{row.mean:.6f} ± {row.stderr:.6f}",
                "n/a" if z is None else f"{z:+.2f}",
            ]
        )
    lines.append(format_table(["T", "exact S_y", "Monte Carlo mean ± SE", "z"], rows))
    rate = "n/a" if result.rate is None else f"{result.rate:.6f}"
    lines.append(f"  asymptotic rate lim S_y(T)/T = {rate} nats/step ({result.rate_note})")
    return "\n".join(lines)


def kalman_results_json(results: Sequence[KalmanResult], **settings: Any) -> dict[str, Any]:
    """Machine-readable results of ``epjax kalman`` (strict JSON: non-finite numbers become ``null``)."""
    models = []
    for result in results:
        p = result.params
        entry: dict[str, Any] = {
            "name": result.spec.name,
            "source": result.spec.source,
            **{k: np.asarray(getattr(result.spec, k)).tolist() for k in _MODEL_KEYS},
            "K": np.asarray(p.K).tolist(),
            "S": np.asarray(p.S).tolist(),
            "state_dim": p.state_dim,
            "obs_dim": p.obs_dim,
            "rate": _json_number(result.rate),
            "rate_note": result.rate_note,
            "results": [
                {
                    "T": row.T,
                    "exact": _json_number(row.exact),
                    "mc_mean": _json_number(row.mean),
                    "mc_stderr": _json_number(row.stderr),
                    "z": _json_number(row.z),
                    "ci95_low": _json_number(row.ci_low),
                    "ci95_high": _json_number(row.ci_high),
                    "mean_exp_neg_sigma": _json_number(row.mean_exp_neg_sigma),
                    "fraction_negative": _json_number(row.fraction_negative),
                    "num_samples": row.num_samples,
                }
                for row in result.rows
            ],
        }
        if result.curve is not None:
            entry["exact_curve"] = {"T": result.curve[0], "exact": [_json_number(v) for v in result.curve[1]]}
        models.append(entry)
    return {
        "command": "kalman",
        "epjax_version": epjax.__version__,
        "jax_version": jax.__version__,
        "units": "nats",
        **settings,
        "models": models,
    }


_CSV_COLUMNS = (
    "model", "T", "exact", "mc_mean", "mc_stderr", "z", "ci95_low", "ci95_high", "mean_exp_neg_sigma",
    "fraction_negative", "num_samples", "rate",
)


def _write_kalman_csv(path: Path, results: Sequence[KalmanResult]) -> None:
    try:
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(_CSV_COLUMNS)
            for result in results:
                for row in result.rows:
                    z = row.z
                    writer.writerow(
                        [
                            result.spec.name, row.T, repr(row.exact), repr(row.mean), repr(row.stderr),
                            "" if z is None else repr(z), repr(row.ci_low), repr(row.ci_high),
                            repr(row.mean_exp_neg_sigma), repr(row.fraction_negative), row.num_samples,
                            "" if result.rate is None else repr(result.rate),
                        ]
                    )
    except OSError as exc:
        raise ValueError(f"--csv {path}: cannot write the file ({exc.strerror or exc}).") from None


def plot_kalman(results: Sequence[KalmanResult], path: str | Path) -> None:
    """The EP paper's Fig. 5: exact EP vs ``T`` (line) and Monte Carlo ± SE (markers), one panel per model.

    Where the asymptotic rate is positive, the asymptote ``S_y(T_max) + rate (T - T_max)`` is drawn dashed.

    Args:
        results: from :func:`run_kalman_comparison` (with ``curve=True`` for a smooth exact curve).
        path: the figure file; its extension (.png, .pdf, .svg) sets the format.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.4 * len(results), 3.6), layout="constrained")
    axes = fig.subplots(1, len(results), squeeze=False)[0]
    for ax, result in zip(axes, results, strict=True):
        if result.curve is not None:
            T_curve, exact_curve = result.curve
        else:
            T_curve, exact_curve = [r.T for r in result.rows], [r.exact for r in result.rows]
        ax.plot(T_curve, exact_curve, "-", color="C0", lw=1.8, label="exact (eq. 71)")
        ax.errorbar(
            [r.T for r in result.rows], [r.mean for r in result.rows], yerr=[r.stderr for r in result.rows],
            fmt="o", color="C3", ms=4, capsize=3,
            label=f"Monte Carlo ± SE (N = {result.rows[0].num_samples:,})",
        )
        if result.rate is not None and result.rate > 1e-12:
            T_end, S_end = T_curve[-1], exact_curve[-1]
            T_line = np.array([T_curve[0], T_end])
            ax.plot(
                T_line, S_end + result.rate * (T_line - T_end), "--", color="0.5", lw=1,
                label=f"asymptotic slope {result.rate:.4f} nats/step",
            )
        ax.set_xlabel("T")
        ax.set_ylabel("entropy production $S_y$ (nats)")
        ax.set_title(result.spec.name)
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    try:
        fig.savefig(path, dpi=150)
    except OSError as exc:
        raise ValueError(f"--plot {path}: cannot write the file ({exc.strerror or exc}).") from None


def _configure_kalman(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--example", choices=[*KALMAN_EXAMPLES, "both"], default=None,
        help="the EP paper's example(s): scalar (A=0.9, C=Q=R=1), 2d, or both (default)",
    )
    which.add_argument(
        "--model", metavar="FILE", type=Path, action="append",
        help='a JSON file {"A": [[...]], "C": [[...]], "Q": [[...]], "R": [[...]], "name": "..."} '
        "(repeatable)",
    )
    parser.add_argument(
        "--steps", metavar="T", type=_int_at_least(1), nargs="+", default=list(KALMAN_DEFAULT_STEPS),
        help="trajectory lengths (default: 5 10 ... 50)",
    )
    parser.add_argument(
        "--samples", metavar="N", type=_int_at_least(2), default=20_000,
        help="Monte Carlo trajectories per (model, T) (default: 20000)",
    )
    parser.add_argument("--seed", type=_int_at_least(0), default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--batch-size", metavar="B", type=_int_at_least(1), default=None,
        help="trajectories per compiled batch (default: the library's)",
    )
    parser.add_argument(
        "--method", choices=("recursive", "dense"), default="recursive",
        help="exact method: O(T) recursion (default) or the dense reversal matrix of eq. 71",
    )
    parser.add_argument(
        "--json", metavar="FILE", type=Path, help="write machine-readable results (incl. the rate)"
    )
    parser.add_argument("--csv", metavar="FILE", type=Path, help="write one CSV row per (model, T)")
    parser.add_argument(
        "--plot", metavar="FILE", type=Path,
        help="write the figure (.png, .pdf or .svg): exact curve and Monte Carlo ± SE vs T, one panel per "
        "model",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


@command(
    "kalman",
    help="exact entropy production of Kalman innovation models (eq. 71) vs Monte Carlo",
    configure=_configure_kalman,
)
def kalman_command(args: argparse.Namespace) -> int:
    """``epjax kalman``: the table of exact vs Monte Carlo EP, and optional JSON, CSV and figure files."""
    _check_output_path("--json", args.json)
    _check_output_path("--csv", args.csv)
    _check_output_path("--plot", args.plot, PLOT_SUFFIXES)
    if args.model:
        specs = [load_state_space(path) for path in args.model]
    else:
        example = args.example or "both"
        specs = [_example_spec(name) for name in (KALMAN_EXAMPLES if example == "both" else [example])]
    steps = sorted(set(args.steps))
    results = run_kalman_comparison(
        specs,
        steps,
        num_samples=args.samples,
        seed=args.seed,
        batch_size=args.batch_size,
        method=args.method,
        curve=args.plot is not None,
        progress=not args.no_progress,
    )
    print(
        f"Entropy production of Kalman innovation models (nats): exact ({args.method}, eq. 71) vs "
        f"Monte Carlo with N = {args.samples} trajectories per T, seed {args.seed}; z = (MC - exact) / SE."
    )
    for result in results:
        print()
        print(format_kalman_result(result))
    if args.json is not None:
        settings = dict(seed=args.seed, num_samples=args.samples, method=args.method, steps=steps)
        report = kalman_results_json(results, **settings)
        _write_text("--json", args.json, json.dumps(report, indent=2, allow_nan=False) + "\n")
    if args.csv is not None:
        _write_kalman_csv(args.csv, results)
    if args.plot is not None:
        plot_kalman(results, args.plot)
    written = [f"{opt} {p}" for opt, p in (("json", args.json), ("csv", args.csv), ("plot", args.plot)) if p]
    if written:
        print("\nwrote " + ", ".join(written))
    return EXIT_OK


# ------------------------------------------------------------------------------------------------------------
# epjax demo
# ------------------------------------------------------------------------------------------------------------

DEMO_KALMAN_STEPS = (5, 10, 20, 50)
DEMO_Z_LIMIT = 4.0


@demo_section("kalman", "Kalman innovation models: exact EP (eq. 71) vs Monte Carlo (EP paper Fig. 5)")
def _demo_kalman(args: argparse.Namespace) -> bool:
    specs = [_example_spec(name) for name in KALMAN_EXAMPLES]
    results = run_kalman_comparison(
        specs, DEMO_KALMAN_STEPS, num_samples=args.samples, seed=args.seed, progress=not args.no_progress
    )
    ok = True
    for result in results:
        print(format_kalman_result(result))
        zs = [row.z for row in result.rows]
        passed = all(z is not None and abs(z) <= DEMO_Z_LIMIT for z in zs)
        worst = max((abs(z) for z in zs if z is not None), default=float("nan"))
        verdict = "PASS" if passed else "FAIL"
        relation = "within" if passed else "NOT all within"
        print(
            f"  verdict {result.spec.name}: {verdict}: the {len(zs)} Monte Carlo estimates are {relation} "
            f"{DEMO_Z_LIMIT:g} SE of the exact value (max |z| = {worst:.2f})\n"
        )
        ok &= passed
    return ok


def _configure_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--samples", metavar="N", type=_int_at_least(2), default=4000,
        help="Monte Carlo trajectories per estimate (default: 4000)",
    )
    parser.add_argument("--seed", type=_int_at_least(0), default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--only", metavar="SECTION", action="append", choices=[s.name for s in DEMO_SECTIONS],
        help=f"run only this section (repeatable; sections: {', '.join(s.name for s in DEMO_SECTIONS)})",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


@command("demo", help="a quick end-to-end check on built-in examples (exit status 1 if a check fails)",
         configure=_configure_demo)
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
        return EXIT_CHECK_FAILED
    print(f"demo finished in {elapsed:.1f} s: all {len(sections)} section(s) passed")
    return EXIT_OK


# ------------------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``epjax`` argument parser with one subparser per registered :class:`Command`."""
    parser = argparse.ArgumentParser(
        prog="epjax",
        description="Entropy production (the arrow of time) of autoregressive generative models, in JAX.",
    )
    parser.add_argument(
        "--version", action="version", version=f"epjax {epjax.__version__} (jax {jax.__version__})"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS.values():
        sub = subparsers.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(sub)
    return parser


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
    try:
        return COMMANDS[args.command].run(args)
    except ValueError as exc:
        print(f"epjax: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("epjax: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
