"""``epjax kalman``: exact EP of Kalman models (eq. 71) vs Monte Carlo (docs/mathematics.md §5, EP paper Fig. 5)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

import epjax
from epjax.cli._base import (
    EXIT_OK,
    PLOT_SUFFIXES,
    check_output_path,
    command,
    format_matrix,
    format_table,
    int_at_least,
    json_number,
    print_written,
    progress_bar,
    save_figure,
    write_csv,
    write_json,
)

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


def example_spec(name: str) -> StateSpaceSpec:
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


def innovation_params(spec: StateSpaceSpec):
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


def _exact(spec: StateSpaceSpec, params, num_steps: int, method: str) -> float:
    try:
        return float(epjax.kalman.entropy_production(params, num_steps, method=method))
    except ValueError as exc:  # e.g. a size the dense method refuses: name the options that asked for it
        hint = " On the command line: --method recursive." if method == "dense" else ""
        raise ValueError(f"{spec.source}, --method {method} --steps {num_steps}: {exc}{hint}") from None


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
        # Every exact value first, the longest T first: a size the dense method refuses (ValueError, exit
        # status 2) is reported at once, before any Monte Carlo work.
        params_of = [innovation_params(spec) for spec in specs]
        exact_of: list[dict[int, float]] = [{} for _ in specs]
        for T in sorted(steps, reverse=True):
            for i, spec in enumerate(specs):
                exact_of[i][T] = _exact(spec, params_of[i], T, method)
        with progress_bar(len(specs) * len(steps), "exact vs Monte Carlo", progress) as bar:
            for i, spec in enumerate(specs):
                params = params_of[i]
                rate, note = _rate(params)
                result = KalmanResult(spec, params, rate, note)
                for T in steps:
                    bar.set_postfix_str(f"{spec.name}, T={T}")
                    exact = exact_of[i][T]
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


def format_spec(spec: StateSpaceSpec, params: Any) -> list[str]:
    """Two lines naming a model, its dimensions and where it came from, then its matrices."""
    n, n_y = params.state_dim, params.obs_dim
    return [
        f"{spec.name}: n = {n} state{'s' if n > 1 else ''}, n_y = {n_y} observation{'s' if n_y > 1 else ''}"
        f"  [{spec.source}]",
        "  " + "  ".join(f"{k} = {format_matrix(getattr(spec, k))}" for k in _MODEL_KEYS),
    ]


def format_kalman_result(result: KalmanResult) -> str:
    """The readable report of one model: its matrices, the table of exact vs Monte Carlo EP, and the rate."""
    lines = format_spec(result.spec, result.params)
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
            "rate": json_number(result.rate),
            "rate_note": result.rate_note,
            "results": [
                {
                    "T": row.T,
                    "exact": json_number(row.exact),
                    "mc_mean": json_number(row.mean),
                    "mc_stderr": json_number(row.stderr),
                    "z": json_number(row.z),
                    "ci95_low": json_number(row.ci_low),
                    "ci95_high": json_number(row.ci_high),
                    "mean_exp_neg_sigma": json_number(row.mean_exp_neg_sigma),
                    "fraction_negative": json_number(row.fraction_negative),
                    "num_samples": row.num_samples,
                }
                for row in result.rows
            ],
        }
        if result.curve is not None:
            entry["exact_curve"] = {"T": result.curve[0], "exact": [json_number(v) for v in result.curve[1]]}
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
    rows = (
        [result.spec.name, row.T, row.exact, row.mean, row.stderr, row.z, row.ci_low, row.ci_high,
         row.mean_exp_neg_sigma, row.fraction_negative, row.num_samples, result.rate]
        for result in results
        for row in result.rows
    )
    write_csv(path, _CSV_COLUMNS, rows)


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
    save_figure(fig, path)


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
        "--steps", metavar="T", type=int_at_least(1), nargs="+", default=list(KALMAN_DEFAULT_STEPS),
        help="trajectory lengths (default: 5 10 ... 50)",
    )
    parser.add_argument(
        "--samples", metavar="N", type=int_at_least(2), default=20_000,
        help="Monte Carlo trajectories per (model, T) (default: 20000)",
    )
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--batch-size", metavar="B", type=int_at_least(1), default=None,
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
    check_output_path("--json", args.json)
    check_output_path("--csv", args.csv)
    check_output_path("--plot", args.plot, PLOT_SUFFIXES)
    if args.model:
        specs = [load_state_space(path) for path in args.model]
    else:
        example = args.example or "both"
        specs = [example_spec(name) for name in (KALMAN_EXAMPLES if example == "both" else [example])]
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
        write_json(args.json, report)
    if args.csv is not None:
        _write_kalman_csv(args.csv, results)
    if args.plot is not None:
        plot_kalman(results, args.plot)
    print_written(args, "json", "csv", "plot")
    return EXIT_OK
