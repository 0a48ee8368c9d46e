"""The retrospective decomposition ``S = sum_t D_t = sum_t (L_t + M_t)`` of Kalman and saved models.

Writing the path law retrodictively, the EP of the whole sequence under time reversal splits into per-step
terms ``D_t`` (docs/mathematics.md §6, EP paper §7): a compression loss ``L_t`` (what the model's backward
summary ``g_{t+1}`` of the reversed future forgets) plus a model mismatch ``M_t``. :func:`decompose_kalman`
computes them exactly for Kalman innovation models (and, independently, the exact EP of eq. 71);
:func:`decompose_saved` enumerates all ``V**T`` paths of a small discrete model saved by
:func:`epjax.train.save`, and, with ``estimate=True``, also trains a reverse model and reports the estimate
that works at any size, with its (downward) bias. Both return a :class:`Decompositions` result that renders
itself (``epjax decompose`` renders it).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

import epjax
from epjax.experiments.kalman_comparison import StateSpaceSpec
from epjax.experiments.report import ExperimentError, Result, format_table, json_header, json_number
from epjax.experiments.saved_models import ContextLengthError

KALMAN_DEFAULT_STEPS = 20
MAX_SEQUENCES = 2**20
"""Default cap on the ``V**T`` paths enumerated for a saved model."""
ROWS_SHOWN = 40  # longer tables print their first and last ROWS_SHOWN // 2 steps (CSV and JSON have all)
TERMS = ("D", "L", "M", "forward_information", "backward_information")
Z_LIMIT = 4.0


class EnumerationTooLargeError(ExperimentError):
    """Exact enumeration of ``V**T`` paths exceeds the cap, and no estimate was asked for.

    Attributes:
        num_steps: the length ``T`` asked for.
        vocab_size: ``V``.
        max_sequences: the cap on ``V**T``.
        largest: the largest ``T`` whose enumeration fits.
    """

    def __init__(self, num_steps: int, vocab_size: int, max_sequences: int, largest: int):
        self.num_steps, self.vocab_size, self.max_sequences, self.largest = (
            num_steps,
            vocab_size,
            max_sequences,
            largest,
        )
        super().__init__(
            f"`num_steps` = {num_steps}: exact enumeration of {vocab_size}**{num_steps} sequences exceeds "
            f"`max_sequences` = {max_sequences} (at most T = {largest} for this vocabulary); give a smaller "
            "`num_steps`, or `estimate=True` for the reverse-model estimate."
        )


@dataclass
class DecomposedModel:
    """The decomposition of one model; the exact arrays are ``None`` where not computed.

    Attributes:
        name: the model's label.
        header: lines describing the model (printed above its table).
        num_steps: ``T``.
        terms: ``{D, L, M, forward_information, backward_information}`` arrays ``[T]`` (exact), or ``None``.
        ep: the exact EP computed independently (eq. 71, or enumeration of sigma), or ``None``.
        ep_method: how ``ep`` was computed.
        estimate: the reverse-model estimate (:class:`epjax.decomposition.EstimatedDecomposition`), or ``None``.
        reverse_loss: the reverse model's held-out cross-entropy per token, with the estimate.
        note: what the experiment chose for the user (e.g. a shorter ``T`` than the training length).
    """

    name: str
    header: list[str]
    num_steps: int
    terms: dict[str, np.ndarray] | None
    ep: float | None
    ep_method: str
    estimate: Any = None
    reverse_loss: float | None = None
    note: str | None = None

    @property
    def total(self) -> float | None:
        """``sum_t D_t``."""
        return None if self.terms is None else float(np.sum(self.terms["D"]))

    def _shown_rows(self) -> list[int | None]:
        T = self.num_steps
        if T <= ROWS_SHOWN:
            return list(range(T))
        half = ROWS_SHOWN // 2
        return [*range(half), None, *range(T - half, T)]

    def report(self) -> str:
        """The per-step table and the totals, with the identities they satisfy spelled out."""
        lines = list(self.header)
        T, terms, est = self.num_steps, self.terms, self.estimate
        headers = ["t"]
        if terms is not None:
            headers += ["D_t", "L_t", "M_t", "I(y_t; h_{t-1})", "I(y_t; g_{t+1})"]
        if est is not None:
            headers += ["D_t estimate ± SE"]
        rows = []
        for i in self._shown_rows():
            if i is None:
                rows.append(["..."] + [""] * (len(headers) - 1))
                continue
            row = [str(i + 1)]
            if terms is not None:
                row += [f"{terms[k][i]:.6f}" for k in TERMS]
            if est is not None:
                row += [f"{est.D[i]:.6f} ± {est.D_stderr[i]:.6f}"]
            rows.append(row)
        lines.append(format_table(headers, rows))
        if T > ROWS_SHOWN:
            lines.append(f"  ({T - ROWS_SHOWN} steps not shown; --csv and --json have all {T})")
        if terms is not None:
            lines += self._exact_lines()
        if est is not None:
            lines += self._estimate_lines()
        return "\n".join(lines)

    def _exact_lines(self) -> list[str]:
        terms, total, ep = self.terms, self.total, self.ep
        L, M = float(np.sum(terms["L"])), float(np.sum(terms["M"]))
        bound = float(np.sum(terms["forward_information"] - terms["backward_information"]))

        def share(x: float) -> str:
            return f" ({100 * x / total:.1f}% of the EP)" if total > 0 else ""

        return [
            f"  sum_t D_t = {total:.8f}   exact EP ({self.ep_method}) = {ep:.8f}   |difference| = "
            f"{abs(total - ep):.1e}",
            f"  sum_t L_t = {L:.8f}{share(L)}: compression loss, what the backward summary g_{{t+1}} forgets",
            f"  sum_t M_t = {M:.8f}{share(M)}: model mismatch, the model's prediction from g_{{t+1}} vs the truth",
            f"  refined second law (eq. 101): sum_t [I(y_t; h_{{t-1}}) - I(y_t; g_{{t+1}})] = {bound:.8f} <= EP "
            "(it equals sum_t L_t identically)",
        ]

    def _estimate_lines(self) -> list[str]:
        est = self.estimate
        se = math.hypot(est.total_stderr, est.bias_stderr)
        lines = [
            f"  reverse-model estimate (N = {est.num_samples}; reverse model's held-out loss "
            f"{self.reverse_loss:.4f} nats/token): sum_t D_t estimate = {est.total:.6f} ± {est.total_stderr:.6f}",
            f"  BIAS: each D_t estimate is biased DOWN by the reverse model's excess cross-entropy at step t, which "
            f"lies in [0, b]; the total b = KL(P || R) = {est.bias:.6f} ± {est.bias_stderr:.6f} is estimated "
            "exactly from the model's own likelihood,",
            f"  so sum_t D_t estimate + b = {est.total + est.bias:.6f} ± {se:.6f} estimates the EP itself",
        ]
        if self.ep is not None:
            z = (est.total + est.bias - self.ep) / se
            verdict = "consistent" if abs(z) < Z_LIMIT else "INCONSISTENT"
            relation = "<" if abs(z) < Z_LIMIT else ">="
            lines.append(
                f"  verdict: {verdict} with the exact EP {self.ep:.6f} (z = {z:+.2f}, |z| = {abs(z):.2f} {relation} "
                f"{Z_LIMIT:g})"
            )
        return lines

    def to_json(self) -> dict[str, Any]:
        """Every per-step term and the totals (strict JSON)."""
        entry: dict[str, Any] = {
            "name": self.name,
            "num_steps": self.num_steps,
            "ep": json_number(self.ep),
            "ep_method": self.ep_method,
        }
        if self.note:
            entry["note"] = self.note
        if self.terms is not None:
            t = self.terms
            entry |= {k: _json_list(v) for k, v in t.items()}
            entry |= {
                "total": json_number(self.total),
                "compression_loss": json_number(float(np.sum(t["L"]))),
                "mismatch": json_number(float(np.sum(t["M"]))),
                "second_law_bound": json_number(float(np.sum(t["forward_information"] - t["backward_information"]))),
            }
        if self.estimate is not None:
            e = self.estimate
            entry["estimate"] = {
                "D": _json_list(e.D),
                "D_stderr": _json_list(e.D_stderr),
                "total": json_number(e.total),
                "total_stderr": json_number(e.total_stderr),
                "bias": json_number(e.bias),
                "bias_stderr": json_number(e.bias_stderr),
                "num_samples": e.num_samples,
                "reverse_model_held_out_loss": json_number(self.reverse_loss),
                "bias_direction": "downward: each D_t estimate is low by the reverse model's excess cross-entropy "
                "at step t, in [0, bias]",
            }
        return entry

    def csv_rows(self):
        """One row per step: the exact terms and the estimate (empty where not computed)."""
        for i in range(self.num_steps):
            exact = [float(self.terms[k][i]) for k in TERMS] if self.terms is not None else [None] * len(TERMS)
            est = self.estimate
            estimated = [float(est.D[i]), float(est.D_stderr[i])] if est is not None else [None] * 2
            yield [self.name, i + 1, *exact, *estimated]

    def draw(self, ax: Any) -> None:
        """``D_t``, ``L_t`` and ``M_t`` against ``t`` (the estimate with ± SE bars), legend below the panel."""
        from matplotlib.ticker import MaxNLocator

        t = np.arange(1, self.num_steps + 1)
        if self.terms is not None:
            ax.plot(t, self.terms["D"], "-o", ms=3, color="C0", label="$D_t$ (sum over t = EP)")
            ax.plot(t, self.terms["M"], "--", color="C1", label="$M_t$ model mismatch")
            ax.plot(t, self.terms["L"], ":", color="C2", lw=2, label="$L_t$ compression loss")
        if self.estimate is not None:
            ax.errorbar(
                t, self.estimate.D, yerr=self.estimate.D_stderr, fmt="s", ms=3, color="C3", capsize=2,
                label="$D_t$ estimate ± SE (reverse model, biased down)",
            )  # fmt: skip
        ax.set_title(f"{self.name}, T = {self.num_steps}", fontsize=10)
        ax.set_xlabel("step t of the sequence")
        ax.set_ylabel("per-step contribution to EP (nats)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)


def _json_list(values: Any) -> list[float | None]:
    return [json_number(float(v)) for v in values]


_CSV_COLUMNS = ("model", "t", *TERMS, "D_estimate", "D_estimate_stderr")


@dataclass
class Decompositions(Result):
    """The retrospective decomposition of one or more models (what the ``decompose_*`` functions return).

    Attributes:
        models: one :class:`DecomposedModel` per model.
        method: the Kalman method (``"recursive"`` or ``"dense"``), recorded in the JSON.
        seed: the random seed (the reverse-model estimate's).
        files: the model files read.
    """

    models: list[DecomposedModel]
    method: str = "recursive"
    seed: int | None = 0
    files: tuple[Path, ...] = field(default_factory=tuple)
    title = "Retrospective decomposition of EP"

    @property
    def inputs(self) -> tuple[Path, ...]:
        """The model files read."""
        return self.files

    def table(self) -> str:
        """A heading, then each model's per-step table and totals."""
        heading = (
            "Retrospective decomposition of EP (docs/mathematics.md §6, EP paper §7), nats: S = sum_t D_t, "
            "D_t = L_t + M_t;\n  g_{t+1} is the model's summary of the reversed future y_T..y_{t+1}, h_{t-1} of "
            "the past."
        )
        return "\n\n".join([heading, *(m.report() for m in self.models)])

    def to_json(self) -> dict[str, Any]:
        """Machine-readable results (strict JSON)."""
        return {
            **json_header("decompose", "nats"),
            "seed": self.seed,
            "method": self.method,
            "models": [m.to_json() for m in self.models],
        }

    def csv_header(self) -> Sequence[str]:
        """The CSV columns: one row per ``(model, t)``."""
        return _CSV_COLUMNS

    def csv_rows(self):
        """One row per ``(model, t)``, numbers unformatted."""
        for m in self.models:
            yield from m.csv_rows()

    def draw(self, fig: Any, axes: Sequence[Any] | None) -> None:
        """One panel per model: ``D_t``, ``L_t``, ``M_t`` against ``t``."""
        if axes is None:
            fig.set_size_inches(4.8 * len(self.models), 4.6)
            axes = fig.subplots(1, len(self.models), squeeze=False)[0]
        for ax, m in zip(axes, self.models, strict=True):
            m.draw(ax)
        sep = "\n" if len(self.models) == 1 else " "
        fig.suptitle(f"Retrospective decomposition $D_t = L_t + M_t${sep}of the EP of $y_1..y_T$ under time reversal")


def _as_terms(decomposition: Any) -> dict[str, np.ndarray]:
    return {k: np.asarray(getattr(decomposition, k), dtype=np.float64) for k in TERMS}


def decompose_kalman(
    specs: Sequence[StateSpaceSpec], num_steps: int = KALMAN_DEFAULT_STEPS, *, method: str = "recursive", seed: int = 0
) -> Decompositions:
    """Exact decomposition of each state-space model (float64) and, independently, its exact EP (eq. 71).

    Args:
        specs: the models (:func:`epjax.experiments.kalman_comparison.select_models`).
        num_steps: ``T``.
        method: ``"recursive"`` or ``"dense"`` (:func:`epjax.kalman.decomposition`).
        seed: recorded in the result (nothing here is random).

    Returns:
        A :class:`Decompositions`.
    """
    models = []
    with jax.enable_x64(True):
        for spec in specs:
            params = spec.innovation_params()
            terms = _as_terms(epjax.kalman.decomposition(params, num_steps, method=method))
            ep = float(epjax.kalman.entropy_production(params, num_steps))
            header = spec.describe(params)
            models.append(DecomposedModel(spec.name, header, num_steps, terms, ep, "eq. 71, O(T) recursion"))
    files = tuple(spec.path for spec in specs if spec.path is not None)
    return Decompositions(models, method, seed, files)


def enumerable_steps(vocab_size: int, limit: int) -> int:
    """The largest ``T`` with ``V**T <= limit``."""
    return max(1, int(math.floor(math.log(limit) / math.log(vocab_size) + 1e-9)))


def decompose_saved(
    path: str | os.PathLike,
    *,
    num_steps: int | None = None,
    max_sequences: int = MAX_SEQUENCES,
    estimate: bool = False,
    reverse_steps: int = 1000,
    reverse_sequences: int = 4000,
    num_samples: int = 4000,
    seed: int = 0,
    method: str = "recursive",
    progress: bool = True,
) -> Decompositions:
    """Exact decomposition of a saved discrete model by enumeration, and its reverse-model estimate on request.

    Without ``num_steps``, ``T`` is the training length recorded in the file, capped at the largest ``T`` whose
    ``V**T`` paths fit ``max_sequences`` (the result's note says so) unless ``estimate`` is set.

    Args:
        path: a model saved by :func:`epjax.train.save`.
        num_steps: ``T``.
        max_sequences: enumerate at most this many ``V**T`` paths.
        estimate: also train a reverse model on reversed samples and estimate ``D_t`` with it
            (:func:`epjax.decomposition.train_reverse_model`, :func:`epjax.decomposition.estimate_decomposition`).
        reverse_steps: training steps of the reverse model.
        reverse_sequences: sampled training sequences of the reverse model.
        num_samples: Monte Carlo trajectories of the estimate.
        seed: the estimate's random seed.
        method: recorded in the result (the Kalman option; a saved model is always enumerated).
        progress: progress bars on stderr.

    Returns:
        A :class:`Decompositions` with one model.

    Raises:
        ContextLengthError: ``T`` exceeds the model's context (fields ``num_steps``, ``max_length``).
        EnumerationTooLargeError: ``V**T > max_sequences`` and no estimate asked for.
    """
    from epjax import decomposition as dec
    from epjax import train as train_lib

    path = Path(path)
    model, params, extra = train_lib.load(path)
    V = model.vocab_size
    length = extra.get("data", {}).get("length") if isinstance(extra, dict) else None
    enumerable = enumerable_steps(V, max_sequences)
    T = num_steps
    note = None
    if T is None:
        if estimate and isinstance(length, int):
            T = length
        else:
            T = min(enumerable, length) if isinstance(length, int) else enumerable
            if isinstance(length, int) and length > enumerable:
                # Never a silent change of the length a user would expect (the training length).
                note = (
                    f"T = {T}, not the training length {length}: exact enumeration of {V}**{length} paths exceeds "
                    f"--max-sequences {max_sequences} (T = {enumerable} is the largest that fits); pass "
                    f"--estimate for T = {length} (reverse-model estimate), or --steps / --max-sequences."
                )
    if model.max_length is not None and T > model.max_length:
        raise ContextLengthError("num_steps", T, model.max_length)
    exact = T <= enumerable
    if not exact and not estimate:
        raise EnumerationTooLargeError(T, V, max_sequences, enumerable)
    header = [f"{path.name}: {model!r}  [{path}]"] + ([f"  NOTE: {note}"] if note else [])
    terms = ep = None
    if exact:
        terms = _as_terms(
            dec.exact_decomposition(model, params, num_steps=T, max_sequences=max_sequences, progress=progress)
        )
        ep = float(
            epjax.exact_entropy_production(model, params, num_steps=T, max_sequences=max_sequences, progress=progress)
        )
    ep_method = f"enumeration of all {V}^{T} paths" if exact else "not computed"
    result = DecomposedModel(path.name, header, T, terms, ep, ep_method, note=note)
    if estimate:
        key = jax.random.key(seed)
        config = train_lib.TrainConfig(
            steps=reverse_steps, batch_size=64, learning_rate=3e-3, warmup_steps=min(100, reverse_steps // 10),
            eval_every=max(1, reverse_steps // 10),
        )  # fmt: skip
        reverse_params, history = dec.train_reverse_model(
            jax.random.fold_in(key, 0), model, params, num_steps=T, num_sequences=reverse_sequences,
            config=config, progress=progress,
        )  # fmt: skip
        result.estimate = dec.estimate_decomposition(
            jax.random.fold_in(key, 1), model, params, model, reverse_params, num_steps=T, num_samples=num_samples
        )
        result.reverse_loss = float(history.eval_loss[-1])
    return Decompositions([result], method, seed, (path,))


__all__ = [
    "Decompositions",
    "DecomposedModel",
    "EnumerationTooLargeError",
    "KALMAN_DEFAULT_STEPS",
    "MAX_SEQUENCES",
    "decompose_kalman",
    "decompose_saved",
    "enumerable_steps",
]
