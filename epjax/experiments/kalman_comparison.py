"""Exact entropy production of Kalman innovation models against its Monte Carlo estimate (EP paper Fig. 5).

For a state-space model ``x_{t+1} = A x_t + w_t, y_t = C x_t + v_t`` (``w ~ N(0, Q)``, ``v ~ N(0, R)``) in
steady-state innovation form, the EP of the whole observed path ``y_1..y_T`` under time reversal has the
closed form of eq. 71 (docs/mathematics.md §5), and the Monte Carlo estimator ``S_hat(T) = mean(sigma)`` over
``N`` sampled paths (docs/mathematics.md §4) must agree with it within a few standard errors.
:func:`compare_kalman` runs that comparison for several models and lengths ``T`` and returns a
:class:`KalmanComparison` that renders itself (table with a verdict per model, JSON, CSV, the figure).
:func:`load_state_space` reads a model from a JSON file, :func:`example_spec` gives the paper's examples.

>>> spec = example_spec("scalar")
>>> spec.A.tolist(), spec.source
([[0.9]], "example 'scalar'")
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

import epjax
from epjax.experiments.report import ExperimentError, Result, format_table, json_header, json_number

#: the EP paper's numerical examples (§6, Fig. 5), defined once in :mod:`epjax.kalman`
EXAMPLES = epjax.kalman.EXAMPLES
MATRIX_KEYS = ("A", "C", "Q", "R")
OPTIONAL_KEYS = ("name", "description")
Z_LIMIT = 4.0
"""A Monte Carlo estimate is consistent with the exact value when ``|z| = |S_hat - S| / SE`` is below this."""


class StateSpaceError(ExperimentError):
    """A state-space model was refused; the message is ``"<source>: <reason>"``.

    Attributes:
        source: how the model is named to the user (``"--model m.json"``, a path, ``"example '2d'"``).
        reason: what is wrong.
    """

    def __init__(self, source: str, reason: str, where: str | None = None):
        self.source, self.reason = source, reason
        super().__init__(f"{where or source}: {reason}")


class StateSpaceFileError(StateSpaceError):
    """A state-space model file cannot be read or is not a model (see :class:`StateSpaceError`)."""


class KalmanModelError(StateSpaceError):
    """The library refused a model (invalid matrices, no DARE solution) or an exact computation on it.

    Besides ``source`` and ``reason`` (:class:`StateSpaceError`): ``method``, the exact method asked for when
    the refusal came from the exact EP, and ``num_steps``, the length ``T`` of that computation (else ``None``).
    """

    def __init__(self, source: str, reason: str, *, method: str | None = None, num_steps: int | None = None):
        self.method, self.num_steps = method, num_steps
        super().__init__(source, reason, None if method is None else f"{source}, method {method!r} at T = {num_steps}")


@dataclass(frozen=True)
class StateSpaceSpec:
    """A state-space model ``x_{t+1} = A x_t + w_t, y_t = C x_t + v_t`` as given by the user.

    Attributes:
        name: label used in tables, files and figures.
        source: where it came from (for messages), e.g. ``"--model m.json"``.
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
    path: Path | None = None  # the file it was read from (hashed into a result's provenance)

    def innovation_params(self) -> epjax.kalman.Params:
        """The steady-state innovation form (:func:`epjax.kalman.from_state_space`) in the current dtype."""
        try:
            return epjax.kalman.from_state_space(self.A, self.C, self.Q, self.R)
        except ValueError as exc:
            raise KalmanModelError(self.source, str(exc)) from None

    def describe(self, params: epjax.kalman.Params) -> list[str]:
        """Two lines naming the model, its dimensions and where it came from, then its matrices."""
        n, n_y = params.state_dim, params.obs_dim
        return [
            f"{self.name}: n = {n} state{'s' if n > 1 else ''}, n_y = {n_y} observation{'s' if n_y > 1 else ''}"
            f"  [{self.source}]",
            "  " + "  ".join(f"{k} = {format_matrix(getattr(self, k))}" for k in MATRIX_KEYS),
        ]


def format_matrix(x: Any) -> str:
    """A matrix as a nested list with 6 significant digits (``[[0.9, 0.1], [0, 1]]``)."""
    rows = np.atleast_2d(np.asarray(x, dtype=np.float64))
    return "[" + ", ".join("[" + ", ".join(f"{v:.6g}" for v in row) + "]" for row in rows) + "]"


def example_spec(name: str) -> StateSpaceSpec:
    """One of the EP paper's examples (``"scalar"`` or ``"2d"``) as a :class:`StateSpaceSpec`."""
    if name not in EXAMPLES:
        raise ValueError(f"`name` must be one of {', '.join(map(repr, EXAMPLES))}, got {name!r}.")
    m = EXAMPLES[name]
    matrices = (np.asarray(m[k], dtype=np.float64) for k in MATRIX_KEYS)
    return StateSpaceSpec(name, f"example {name!r}", *matrices)


def _json_matrix(where: str, key: str, value: Any) -> np.ndarray:
    """A matrix from JSON: a nested list of numbers with rows of equal length (a bare number means 1 x 1)."""
    expected = f'a matrix as a nested list of numbers, e.g. "{key}": [[0.9]] or [[1, 0], [0, 1]]'

    def is_number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if is_number(value):
        return np.array([[float(value)]])
    if not isinstance(value, list) or not value:
        raise StateSpaceFileError(where, f"key {key!r} must be {expected}; got {json.dumps(value)[:80]}.")
    if all(is_number(v) for v in value):
        raise StateSpaceFileError(
            where,
            f"key {key!r} must be {expected}; got a flat list {json.dumps(value)[:80]} (write each row as its own "
            "list).",
        )
    for i, row in enumerate(value):
        if not isinstance(row, list) or not row or not all(is_number(v) for v in row):
            raise StateSpaceFileError(where, f"key {key!r} must be {expected}; row {i} is {json.dumps(row)[:80]}.")
    lengths = sorted({len(row) for row in value})
    if len(lengths) > 1:
        raise StateSpaceFileError(where, f"key {key!r} must be {expected}; its rows have different lengths {lengths}.")
    return np.array(value, dtype=np.float64)


def load_state_space(path: str | os.PathLike, *, source: str | None = None) -> StateSpaceSpec:
    """Read a state-space model from a JSON file with keys ``A``, ``C``, ``Q``, ``R`` (and optional ``name``).

    Args:
        path: the file, e.g. ``{"A": [[0.9]], "C": [[1]], "Q": [[1]], "R": [[1]]}``.
        source: how messages and tables name the file (default: the path).

    Returns:
        The :class:`StateSpaceSpec`; shapes and values are checked later by
        :func:`epjax.kalman.from_state_space` (:meth:`StateSpaceSpec.innovation_params`).

    Raises:
        StateSpaceFileError: the file cannot be read, is not valid JSON, lacks a key, has an unknown key, or a
            value is not a matrix; the message names the file and what is wrong.
    """
    path = Path(path)
    where = os.fspath(path) if source is None else source
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StateSpaceFileError(where, f"cannot read the file ({exc.strerror or exc}).") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StateSpaceFileError(
            where, f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}."
        ) from None
    if not isinstance(data, dict):
        raise StateSpaceFileError(
            where, f"expected a JSON object with keys {', '.join(MATRIX_KEYS)}, got a JSON {type(data).__name__}."
        )
    missing = [k for k in MATRIX_KEYS if k not in data]
    if missing:
        raise StateSpaceFileError(
            where,
            f"missing key{'s' if len(missing) > 1 else ''} {', '.join(repr(k) for k in missing)}; a model needs "
            f"{', '.join(MATRIX_KEYS)} as nested lists (x_{{t+1}} = A x_t + w_t, y_t = C x_t + v_t, w ~ N(0, Q), "
            "v ~ N(0, R)).",
        )
    unknown = [k for k in data if k not in MATRIX_KEYS + OPTIONAL_KEYS]
    if unknown:
        raise StateSpaceFileError(
            where,
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(repr(k) for k in unknown)}; allowed keys are "
            f"{', '.join(MATRIX_KEYS + OPTIONAL_KEYS)}.",
        )
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise StateSpaceFileError(where, f"key 'name' must be a non-empty string, got {json.dumps(name)[:80]}.")
    matrices = [_json_matrix(where, k, data[k]) for k in MATRIX_KEYS]
    for key, matrix in zip(MATRIX_KEYS, matrices, strict=True):
        if key != "C" and matrix.shape[0] != matrix.shape[1]:
            raise StateSpaceFileError(
                where, f"key {key!r} must be a square matrix, got {matrix.shape[0]} rows of length {matrix.shape[1]}."
            )
    return StateSpaceSpec(name, where, *matrices, path=path)


def select_models(
    example: str | None = None, files: Sequence[str | os.PathLike] = (), *, source_prefix: str | None = None
) -> list[StateSpaceSpec]:
    """The models read from ``files`` if any are given, else the paper's example ``example`` (``None``: both).

    Args:
        example: ``"scalar"``, ``"2d"``, ``"both"`` or ``None`` (both).
        files: JSON model files (:func:`load_state_space`).
        source_prefix: put before each file's path where messages and tables name it (e.g. ``"--model"``).
    """
    if files:
        return [
            load_state_space(path, source=None if source_prefix is None else f"{source_prefix} {path}")
            for path in files
        ]
    example = example or "both"
    return [example_spec(name) for name in (EXAMPLES if example == "both" else [example])]


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
class KalmanModelComparison:
    """Exact vs Monte Carlo EP of one model at every ``T`` asked for.

    Attributes:
        spec: the model as given.
        params: its innovation form.
        rate: the asymptotic rate ``lim S_y(T) / T`` (nats/step), ``None`` when undefined (unstable ``A``).
        rate_note: what the rate means for this model.
        rows: one :class:`KalmanRow` per ``T``.
        curve: ``(T, exact EP)`` at every ``T = 1 .. max(steps)``, when asked for (figures).
    """

    spec: StateSpaceSpec
    params: Any
    rate: float | None
    rate_note: str
    rows: list[KalmanRow] = field(default_factory=list)
    curve: tuple[list[int], list[float]] | None = None

    def consistent(self, z_limit: float = Z_LIMIT) -> bool:
        """Whether every Monte Carlo estimate is within ``z_limit`` standard errors of the exact value."""
        return all(row.z is not None and abs(row.z) <= z_limit for row in self.rows)

    def verdict(self, z_limit: float = Z_LIMIT, *, check: bool = False) -> str:
        """One line: ``verdict NAME: consistent (max |z| = 1.32 < 4) ...``; PASS/FAIL when run as a check."""
        zs = [row.z for row in self.rows]
        worst = max((abs(z) for z in zs if z is not None), default=float("nan"))
        ok = self.consistent(z_limit)
        if check:
            word, relation = ("PASS", "within") if ok else ("FAIL", "NOT all within")
        else:
            word, relation = ("consistent", "within") if ok else ("INCONSISTENT", "NOT all within")
        sign = "<=" if ok else ">"
        return (
            f"  verdict {self.spec.name}: {word}: the {len(zs)} Monte Carlo estimates are {relation} {z_limit:g} SE "
            f"of the exact value (max |z| = {worst:.2f} {sign} {z_limit:g})"
        )

    def report(self, z_limit: float = Z_LIMIT, *, check: bool = False) -> str:
        """The model's matrices, its table of exact vs Monte Carlo EP, the rate and the verdict."""
        lines = self.spec.describe(self.params)
        cells = [
            [
                str(row.T),
                f"{row.exact:.6f}",
                f"{row.mean:.6f} ± {row.stderr:.6f}",
                "n/a" if row.z is None else f"{row.z:+.2f}",
            ]
            for row in self.rows
        ]
        lines.append(format_table(["T", "exact S_y", "Monte Carlo mean ± SE", "z"], cells))
        rate = "n/a" if self.rate is None else f"{self.rate:.6f}"
        lines.append(f"  asymptotic rate lim S_y(T)/T = {rate} nats/step ({self.rate_note})")
        lines.append(self.verdict(z_limit, check=check))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The model, its innovation form, its rate and every row (strict JSON)."""
        p = self.params
        entry: dict[str, Any] = {
            "name": self.spec.name,
            "source": self.spec.source,
            **{k: np.asarray(getattr(self.spec, k)).tolist() for k in MATRIX_KEYS},
            "K": np.asarray(p.K).tolist(),
            "S": np.asarray(p.S).tolist(),
            "state_dim": p.state_dim,
            "obs_dim": p.obs_dim,
            "rate": json_number(self.rate),
            "rate_note": self.rate_note,
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
                for row in self.rows
            ],
        }
        if self.curve is not None:
            entry["exact_curve"] = {"T": self.curve[0], "exact": [json_number(v) for v in self.curve[1]]}
        return entry


_CSV_COLUMNS = (
    "model", "T", "exact", "mc_mean", "mc_stderr", "z", "ci95_low", "ci95_high", "mean_exp_neg_sigma",
    "fraction_negative", "num_samples", "rate",
)  # fmt: skip


@dataclass
class KalmanComparison(Result):
    """Exact vs Monte Carlo EP of several Kalman models (what :func:`compare_kalman` returns).

    Attributes:
        models: one :class:`KalmanModelComparison` per model, in the order given.
        steps: the lengths ``T``.
        num_samples: Monte Carlo trajectories per ``(model, T)``.
        method: the exact method.
        seed: the random seed.
        z_limit: the ``|z|`` below which an estimate is consistent with the exact value.
        check: whether the comparison is a check (``passed`` set, verdicts PASS/FAIL) or a report (``passed``
            is ``None``, verdicts consistent/INCONSISTENT).
    """

    models: list[KalmanModelComparison]
    steps: list[int]
    num_samples: int
    method: str
    seed: int | None = None
    z_limit: float = Z_LIMIT
    check: bool = False
    title = "Entropy production of Kalman innovation models: exact (eq. 71) vs Monte Carlo"

    @property
    def inputs(self) -> tuple[Path, ...]:
        """The model files read."""
        return tuple(m.spec.path for m in self.models if m.spec.path is not None)

    @property
    def passed(self) -> bool | None:
        """As a check: whether every estimate of every model is consistent; else ``None``."""
        return all(m.consistent(self.z_limit) for m in self.models) if self.check else None

    def table(self) -> str:
        """A heading, then each model's matrices, table, rate and verdict."""
        heading = (
            f"Entropy production of Kalman innovation models (nats): exact ({self.method}, eq. 71) vs Monte Carlo "
            f"with N = {self.num_samples} trajectories per T, seed {self.seed}; z = (MC - exact) / SE."
        )
        return "\n\n".join([heading, *(m.report(self.z_limit, check=self.check) for m in self.models)])

    def rows(self) -> tuple[list[str], list[list[str]]]:
        """One row per ``(model, T)``: exact value, Monte Carlo mean ± SE, z."""
        cells = [
            [
                m.spec.name,
                str(r.T),
                f"{r.exact:.6f}",
                f"{r.mean:.6f} ± {r.stderr:.6f}",
                "n/a" if r.z is None else f"{r.z:+.2f}",
            ]
            for m in self.models
            for r in m.rows
        ]
        return ["model", "T", "exact S_y", "Monte Carlo mean ± SE", "z"], cells

    def to_json(self) -> dict[str, Any]:
        """Machine-readable results (strict JSON: non-finite numbers become ``null``)."""
        return {
            **json_header("kalman", "nats"),
            "seed": self.seed,
            "num_samples": self.num_samples,
            "method": self.method,
            "steps": list(self.steps),
            "models": [m.to_json() for m in self.models],
        }

    def csv_header(self) -> Sequence[str]:
        """The CSV columns: one row per ``(model, T)``."""
        return _CSV_COLUMNS

    def csv_rows(self):
        """One row per ``(model, T)``, numbers unformatted."""
        for m in self.models:
            for r in m.rows:
                yield [
                    m.spec.name, r.T, r.exact, r.mean, r.stderr, r.z, r.ci_low, r.ci_high, r.mean_exp_neg_sigma,
                    r.fraction_negative, r.num_samples, m.rate,
                ]  # fmt: skip

    def draw(self, fig: Any, axes: Sequence[Any] | None) -> None:
        """The EP paper's Fig. 5: exact EP vs ``T`` (line), Monte Carlo ± SE (markers), one panel per model.

        Where the asymptotic rate is positive, the asymptote ``S_y(T_max) + rate (T - T_max)`` is drawn dashed.
        Each panel's legend sits below it, so it hides no data.
        """
        if axes is None:
            fig.set_size_inches(4.6 * len(self.models), 4.4)
            axes = fig.subplots(1, len(self.models), squeeze=False)[0]
        from matplotlib.ticker import MaxNLocator

        T_max = max(self.steps)
        for ax, m in zip(axes, self.models, strict=True):
            if m.curve is not None:
                T_curve, exact_curve = m.curve
            else:
                T_curve, exact_curve = [r.T for r in m.rows], [r.exact for r in m.rows]
            ax.plot(T_curve, exact_curve, "-", color="C0", lw=1.8, label="exact (eq. 71)")
            ax.errorbar(
                [r.T for r in m.rows], [r.mean for r in m.rows], yerr=[r.stderr for r in m.rows],
                fmt="o", color="C3", ms=4, capsize=3, label=f"Monte Carlo mean ± SE (N = {self.num_samples:,})",
            )  # fmt: skip
            if m.rate is not None and m.rate > 1e-12:
                T_end, S_end = T_curve[-1], exact_curve[-1]
                T_line = np.array([T_curve[0], T_end])
                ax.plot(
                    T_line, S_end + m.rate * (T_line - T_end), "--", color="0.5", lw=1,
                    label=f"asymptote, slope {m.rate:.4f} nats/step",
                )  # fmt: skip
            n, n_y = m.params.state_dim, m.params.obs_dim
            ax.set_title(f"{m.spec.name} (n = {n}, n_y = {n_y})", fontsize=10)
            ax.set_xlabel("trajectory length T (steps)")
            ax.set_ylabel("entropy production $S_y(T)$ (nats)")
            ax.set_xlim(left=0)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=1, frameon=False)
        sep = "\n" if len(self.models) == 1 else " "
        fig.suptitle(f"EP of the observations $y_1..y_T${sep}under time reversal ($y_T..y_1$), T = 1..{T_max}")


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
    except ValueError as exc:  # e.g. a size the dense method refuses
        raise KalmanModelError(spec.source, str(exc), method=method, num_steps=num_steps) from None


def compare_kalman(
    specs: Sequence[StateSpaceSpec],
    steps: Sequence[int],
    *,
    num_samples: int,
    seed: int = 0,
    batch_size: int | None = None,
    method: str = "recursive",
    curve: bool = False,
    progress: bool = True,
    z_limit: float = Z_LIMIT,
    check: bool = False,
) -> KalmanComparison:
    """Exact EP and its Monte Carlo estimate for each model and each ``T`` in ``steps``, in float64.

    Model ``i`` at length ``T`` uses the key ``fold_in(fold_in(key(seed), i), T)``. Every exact value is
    computed first, the longest ``T`` first, so a size the dense method refuses is reported before any Monte
    Carlo work.

    Args:
        specs: the state-space models.
        steps: trajectory lengths ``T``.
        num_samples: Monte Carlo trajectories per ``(model, T)``.
        seed: the random seed.
        batch_size: trajectories per compiled batch (``None``: the library's default).
        method: exact method of :func:`epjax.kalman.entropy_production`.
        curve: also compute the exact EP at every ``T = 1 .. max(steps)`` (for figures; one recursion).
        progress: show a progress bar on stderr, counting ``(model, T)`` comparisons.
        z_limit: the ``|z|`` below which an estimate is consistent with the exact value.
        check: report PASS/FAIL verdicts and set ``passed`` (for ``epjax demo``).

    Returns:
        A :class:`KalmanComparison`.

    Raises:
        KalmanModelError: the library refused a model or an exact computation on it (fields: ``source``,
            ``reason``, ``method``, ``num_steps``).
    """
    from tqdm.auto import tqdm

    options = {} if batch_size is None else {"batch_size": batch_size}
    steps = list(steps)
    models = []
    with jax.enable_x64(True):
        key = jax.random.key(seed)
        params_of = [spec.innovation_params() for spec in specs]
        exact_of: list[dict[int, float]] = [{} for _ in specs]
        for T in sorted(steps, reverse=True):
            for i, spec in enumerate(specs):
                exact_of[i][T] = _exact(spec, params_of[i], T, method)
        total = len(specs) * len(steps)
        with tqdm(total=total, desc="exact vs Monte Carlo", unit="run", disable=not progress, leave=False) as bar:
            for i, spec in enumerate(specs):
                params = params_of[i]
                result = KalmanModelComparison(spec, params, *_rate(params))
                for T in steps:
                    bar.set_postfix_str(f"{spec.name}, T={T}")
                    est = epjax.entropy_production(
                        jax.random.fold_in(jax.random.fold_in(key, i), T),
                        epjax.kalman.model,
                        params,
                        num_steps=T,
                        num_samples=num_samples,
                        keep_samples=False,  # only summaries are reported: memory independent of num_samples
                        **options,
                    )
                    result.rows.append(
                        KalmanRow(
                            T, exact_of[i][T], est.mean, est.stderr, est.ci_low, est.ci_high, est.mean_exp_neg_sigma,
                            est.fraction_negative, est.num_samples,
                        )
                    )  # fmt: skip
                    bar.update()
                models.append(result)
        if curve:
            horizon = max(steps)
            for result in models:
                values = np.asarray(epjax.kalman.entropy_production_curve(result.params, horizon))
                result.curve = (list(range(1, horizon + 1)), [float(v) for v in values])
    return KalmanComparison(models, steps, num_samples, method, seed=seed, z_limit=z_limit, check=check)


__all__ = [
    "EXAMPLES",
    "KalmanComparison",
    "KalmanModelComparison",
    "KalmanModelError",
    "KalmanRow",
    "StateSpaceError",
    "StateSpaceFileError",
    "StateSpaceSpec",
    "compare_kalman",
    "example_spec",
    "format_matrix",
    "load_state_space",
    "select_models",
]
