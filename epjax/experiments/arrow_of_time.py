"""The arrow-of-time learnability gap as a study: datasets × architectures × sweeps, with EP beside it (``epjax aot``).

:func:`gap_study` builds the data of each setting (a synthetic language of :mod:`epjax.aot.datasets`, the offline
corpus of :mod:`epjax.aot.corpus`, or a file of sequences), trains forward and backward twins with
:func:`epjax.aot.learnability_gap`, and optionally estimates the forward model's entropy production under the same
reordering, so the two numbers sit side by side (docs/mathematics.md §8.4: they answer different questions). The
result, a :class:`GapStudy`, renders a table, JSON, CSV and a figure: the twins' held-out loss curves and ``∂`` with
its interval against the swept setting.

>>> data, held, info = make_data("products", digits=2, num_sequences=50)
>>> data.shape, held, info["expected_sign"]
((50, 10), None, 1)
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

import epjax
from epjax import aot, families, train
from epjax.aot import corpus as corpus_lib
from epjax.aot import datasets
from epjax.experiments.report import ExperimentError, Result, json_header, json_number

#: data sources of :func:`make_data`
DATASETS = ("products", "linear", "linear-swapped", "exchangeable", "palindromes", "pydoc-chars", "pydoc-bpe", "file")
#: architectures by name: (family, options of :func:`epjax.families.new_model`)
ARCHITECTURES = {
    "gru": ("rnn", {"cell": "gru"}),
    "lstm": ("rnn", {"cell": "lstm"}),
    "elman": ("rnn", {"cell": "elman"}),
    "transformer": ("transformer", {}),
    "mamba": ("ssm", {"ssm_kind": "mamba"}),
    "s4d": ("ssm", {"ssm_kind": "s4d"}),
    "markov": ("markov", {}),
}
#: what a sweep varies, and the :class:`Setting` field it sets
SWEEPS = {
    "context": "context_length",
    "sparsity": "sparsity",
    "size": "size",
    "architecture": "architecture",
    "permutation": "permutation",
    "digits": "digits",
}


class AotDataError(ExperimentError):
    """A setting whose data cannot be built (e.g. a file with too few sequences, a context too long)."""


@dataclasses.dataclass(frozen=True)
class Setting:
    """One point of a study: the data, the architecture and the reordering.

    Attributes:
        dataset: one of :data:`DATASETS`.
        architecture: one of :data:`ARCHITECTURES`.
        size: a size preset (``"tiny"``, ``"small"``, ``"medium"``) or a width as text (``"48"``).
        context_length: window length of corpus data and sequence length of the exchangeable and palindromic
            controls (``None``: their defaults, 64 and 16).
        sparsity: off-diagonal non-zeros of ``A`` for the linear languages.
        digits: factor width of the prime products.
        dim: length of ``x`` in the linear languages.
        permutation: the backward reordering (a name of :func:`epjax.aot.reordering`).
    """

    dataset: str = "products"
    architecture: str = "gru"
    size: str = "small"
    context_length: int | None = None
    sparsity: int = 10
    digits: int = 3
    dim: int = 10
    permutation: str = "reverse"

    def label(self, sweep: str | None) -> str:
        """What distinguishes this setting in a sweep (or the architecture and data without one)."""
        if sweep is not None:
            value = getattr(self, SWEEPS[sweep])
            return f"{sweep} {value}"
        return f"{self.architecture} {self.size} on {self.dataset}"

    def sweep_value(self, sweep: str | None) -> Any:
        """The swept field's value."""
        return None if sweep is None else getattr(self, SWEEPS[sweep])


def make_data(
    dataset: str,
    *,
    num_sequences: int = 4000,
    digits: int = 3,
    dim: int = 10,
    sparsity: int = 10,
    context_length: int | None = None,
    vocab_size: int = 8,
    sequences: Any = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """``(data, held_out or None, info)`` for one dataset; ``info`` has ``vocab_size``, ``expected_sign``, ...

    Corpus data come with their own held-out windows (held-out topics); the others are split at random by
    :func:`epjax.aot.learnability_gap`.
    """
    if dataset not in DATASETS:
        raise AotDataError(f"`dataset` must be one of {DATASETS}, got {dataset!r}.")
    if dataset == "products":
        primes = len(datasets.primes_below(10**digits))
        num = min(num_sequences, primes * (primes - 1) // 2)
        d = datasets.prime_products(num, digits=digits, seed=seed)
    elif dataset in ("linear", "linear-swapped"):
        d = datasets.linear_language(
            min(num_sequences, 2**dim), dim=dim, nonzeros=sparsity, swap=dataset == "linear-swapped", seed=seed
        )
    elif dataset == "exchangeable":
        d = datasets.exchangeable(num_sequences, length=context_length or 16, vocab_size=vocab_size, seed=seed)
    elif dataset == "palindromes":
        d = datasets.palindromes(num_sequences, length=context_length or 16, vocab_size=vocab_size, seed=seed)
    elif dataset == "file":
        if sequences is None:
            raise AotDataError("the `file` dataset needs `sequences` (an array [N, T] of token ids).")
        arr = np.asarray(sequences)
        info = {"vocab_size": int(arr.max()) + 1, "expected_sign": None, "description": "sequences from a file"}
        return arr, None, info
    else:
        kind = dataset.partition("-")[2]
        c = corpus_lib.pydoc_corpus(kind)
        length = context_length or 64
        try:
            train_windows, held = c.windows(length, max_train=num_sequences)
        except ValueError as err:
            raise AotDataError(str(err)) from None
        info = {
            "vocab_size": c.vocab_size,
            "expected_sign": None,
            "description": f"Python's pydoc topics, {kind}, windows of {length}",
            "corpus_sha256": c.sha256,
            "held_out_topics": c.meta["held_out_topics"],
        }
        return train_windows, held, info
    info = {"vocab_size": d.vocab_size, "expected_sign": d.expected_sign, "description": d.description}
    if "A" in d.meta:
        info |= {k: d.meta[k] for k in ("nonzeros_forward", "nonzeros_backward")}
    return d.sequences, None, info


def _model(setting: Setting, vocab_size: int, length: int) -> Any:
    if setting.architecture not in ARCHITECTURES:
        raise AotDataError(f"`architecture` must be one of {tuple(ARCHITECTURES)}, got {setting.architecture!r}.")
    family, options = ARCHITECTURES[setting.architecture]
    if family == "markov":
        return families.new_model(family, vocab_size)
    size, width = (setting.size, None) if not setting.size.isdigit() else ("small", int(setting.size))
    return families.new_model(family, vocab_size, context_length=length, size=size, width=width, **options)


@dataclasses.dataclass(frozen=True, eq=False)
class GapRow:
    """One setting's outcome.

    Attributes:
        setting: the :class:`Setting`.
        gap: the :class:`epjax.aot.LearnabilityGap`.
        info: the data's description, vocabulary, expected sign and hashes.
        num_parameters: parameters of one model.
        ep: the forward model's (seed 0) Monte Carlo EP under the same reordering, or ``None``.
        seconds: wall time of the setting.
    """

    setting: Setting
    gap: aot.LearnabilityGap
    info: dict[str, Any]
    num_parameters: int
    ep: epjax.Estimate | None
    seconds: float

    @property
    def length(self) -> int:
        """Sequence length ``T``."""
        return int(self.gap.permutation.size)

    def verdict(self) -> str:
        """How the interval compares with the sign the data predict."""
        sign = self.gap.sign()
        said = {1: "FW easier", -1: "BW easier", 0: "no gap resolved"}[sign]
        expected = self.info.get("expected_sign")
        if expected is None:
            return said
        if sign == 0:
            return f"{said} (expected {['no gap', 'FW easier', 'BW easier'][expected]})"
        return f"{said} ({'as expected' if sign == expected else 'against the expected sign'})"


CSV_COLUMNS = (
    "dataset",
    "architecture",
    "size",
    "context_length",
    "sparsity",
    "permutation",
    "T",
    "seeds",
    "gap",
    "gap_low",
    "gap_high",
    "seed_low",
    "seed_high",
    "held_out_low",
    "held_out_high",
    "loss_fw",
    "loss_bw",
    "ep_per_token",
    "ep_per_token_stderr",
    "expected_sign",
)


@dataclasses.dataclass(frozen=True, eq=False)
class GapStudy(Result):
    """Learnability gaps of one or more settings (what :func:`gap_study` returns).

    Attributes:
        rows_: one :class:`GapRow` per setting (``rows()`` is the table, as for every result).
        sweep: the swept field (a key of :data:`SWEEPS`) or ``None``.
        config: the training settings shared by every setting.
        seed: the study's seed.
        files: files read (a sequence file).
    """

    rows_: list[GapRow]
    sweep: str | None
    config: train.TrainConfig
    seed: int | None = 0
    files: tuple[Path, ...] = ()
    title = "Arrow-of-time learnability gap"

    @property
    def inputs(self) -> tuple[Path, ...]:
        """The files read."""
        return self.files

    def rows(self) -> tuple[list[str], list[list[str]]]:
        """One line per setting: ∂ in per cent with its intervals, the losses, the EP beside it."""
        conf = f"{round(100 * self.rows_[0].gap.confidence)}%" if self.rows_ else "95%"
        headers = ["setting", "T", "∂ %", f"{conf} interval", "seeds interval", "ℓ_FW", "ℓ_BW", "EP/token (FW)"]
        cells = []
        for row in self.rows_:
            g = row.gap
            seeds = (
                "-"
                if g.seed_interval is None
                else f"[{100 * g.seed_interval[0]:+.2f}, {100 * g.seed_interval[1]:+.2f}]"
            )
            ep = "-" if row.ep is None else f"{row.ep.mean / row.length:.4f} ± {row.ep.stderr / row.length:.4f}"
            cells.append(
                [
                    row.setting.label(self.sweep),
                    str(row.length),
                    f"{100 * g.gap:+.2f}",
                    f"[{100 * g.interval[0]:+.2f}, {100 * g.interval[1]:+.2f}]",
                    seeds,
                    f"{g.forward_loss.mean():.4f}",
                    f"{g.backward_loss.mean():.4f}",
                    ep,
                ]
            )
        return headers, cells

    def table(self) -> str:
        """A heading, the table, and one verdict line per setting."""
        c = self.config
        heading = (
            "Arrow-of-time learnability gap (docs/mathematics.md §8): ∂ = E[ℓ_BW − ℓ_FW] / (½ E[ℓ_BW + ℓ_FW]),\n"
            "  ℓ = held-out cross-entropy per token (nats); ∂ > 0: forward is easier to learn. Not EP: EP is one\n"
            f"  model's irreversibility. Training: {c.steps} steps, batch {c.batch_size}, peak lr {c.learning_rate:g}."
        )
        lines = [f"  {row.setting.label(self.sweep)}: {row.info['description']}; {row.verdict()}" for row in self.rows_]
        return "\n".join([heading, "", super().table(), "", *lines])

    def to_json(self) -> dict[str, Any]:
        """Every setting with ∂, its three intervals, per-seed values, losses, curves and the EP."""
        out = []
        for row in self.rows_:
            g = row.gap
            out.append(
                {
                    "setting": dataclasses.asdict(row.setting),
                    "data": {k: v for k, v in row.info.items()},
                    "T": row.length,
                    "num_parameters": row.num_parameters,
                    "num_train": g.num_train,
                    "num_held_out": g.num_held_out,
                    "permutation": g.permutation.tolist(),
                    "gap": json_number(g.gap),
                    "interval": [json_number(v) for v in g.interval],
                    "seed_interval": None if g.seed_interval is None else [json_number(v) for v in g.seed_interval],
                    "held_out_interval": [json_number(v) for v in g.held_out_interval],
                    "stderr": json_number(g.stderr),
                    "seed_gaps": [json_number(v) for v in g.seed_gaps],
                    "loss_fw": [json_number(v) for v in g.forward_loss],
                    "loss_bw": [json_number(v) for v in g.backward_loss],
                    "eval_steps": g.forward_history.eval_steps.tolist(),
                    "curve_fw": [[json_number(v) for v in s] for s in g.forward_history.eval_loss],
                    "curve_bw": [[json_number(v) for v in s] for s in g.backward_history.eval_loss],
                    "ep": None
                    if row.ep is None
                    else {
                        "mean": json_number(row.ep.mean),
                        "stderr": json_number(row.ep.stderr),
                        "per_token": json_number(row.ep.mean / row.length),
                        "num_samples": row.ep.num_samples,
                    },
                    "verdict": row.verdict(),
                    "seconds": round(row.seconds, 3),
                }
            )
        return {
            **json_header("aot", "nats per token; gap relative"),
            "seed": self.seed,
            "sweep": self.sweep,
            "confidence": self.rows_[0].gap.confidence if self.rows_ else None,
            "training": dataclasses.asdict(self.config),
            "settings": out,
        }

    def csv_header(self) -> Sequence[str]:
        """The CSV columns, one row per setting."""
        return CSV_COLUMNS

    def csv_rows(self):
        """One row per setting, numbers unformatted."""
        for row in self.rows_:
            g, s = row.gap, row.setting
            seed_iv = g.seed_interval or (None, None)
            ep = (None, None) if row.ep is None else (row.ep.mean / row.length, row.ep.stderr / row.length)
            yield (
                s.dataset, s.architecture, s.size, s.context_length, s.sparsity, s.permutation, row.length,
                g.num_seeds, g.gap, *g.interval, *seed_iv, *g.held_out_interval, float(g.forward_loss.mean()),
                float(g.backward_loss.mean()), *ep, row.info.get("expected_sign"),
            )  # fmt: skip

    def draw(self, fig: Any, axes: Sequence[Any] | None) -> None:
        """Left: FW and BW held-out loss curves (mean over seeds, band min–max); right: ∂ with its interval."""
        if axes is None:
            fig.set_size_inches(11, 4.4)
            axes = fig.subplots(1, 2)
        curves, gaps = axes[0], axes[1]
        colours = [f"C{i % 10}" for i in range(len(self.rows_))]
        for row, colour in zip(self.rows_, colours, strict=True):
            g = row.gap
            steps = g.forward_history.eval_steps
            for hist, style, name in ((g.forward_history, "-o", "FW"), (g.backward_history, "--s", "BW")):
                loss = hist.eval_loss
                curves.plot(
                    steps, loss.mean(axis=0), style, ms=3, color=colour, label=f"{row.setting.label(self.sweep)} {name}"
                )
                curves.fill_between(steps, loss.min(axis=0), loss.max(axis=0), color=colour, alpha=0.15, lw=0)
        curves.set_xlabel("training step")
        curves.set_ylabel("held-out cross-entropy (nats/token)")
        curves.set_title("FW (solid) and BW (dashed) twins, mean over seeds")
        curves.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        values = [row.setting.sweep_value(self.sweep) for row in self.rows_]
        numeric = self.sweep is not None and all(isinstance(v, (int, float)) for v in values)
        xs = values if numeric else list(range(len(self.rows_)))
        mid = [100 * row.gap.gap for row in self.rows_]
        low = [100 * (row.gap.gap - row.gap.interval[0]) for row in self.rows_]
        high = [100 * (row.gap.interval[1] - row.gap.gap) for row in self.rows_]
        gaps.errorbar(xs, mid, yerr=[low, high], fmt="o", capsize=4, color="k")
        gaps.axhline(0.0, color="grey", lw=0.8)
        if not numeric:
            gaps.set_xticks(xs, [row.setting.label(self.sweep) for row in self.rows_], rotation=20, ha="right")
        gaps.set_xlabel(self.sweep or "setting")
        conf = round(100 * self.rows_[0].gap.confidence) if self.rows_ else 95
        gaps.set_ylabel(f"∂ (%) with {conf}% interval")
        gaps.set_title("learnability gap ∂ = (ℓ_BW − ℓ_FW) / mean ℓ")


def gap_study(
    settings: Sequence[Setting],
    *,
    sweep: str | None = None,
    num_sequences: int = 4000,
    num_seeds: int = 3,
    config: train.TrainConfig | None = None,
    held_out: float = 0.1,
    ep_samples: int = 0,
    sequences: Any = None,
    sequences_path: str | os.PathLike | None = None,
    seed: int = 0,
    progress: bool = False,
) -> GapStudy:
    """Learnability gaps of ``settings`` (one row each), with the forward model's EP beside when asked.

    Args:
        settings: the points of the study (e.g. one :class:`Setting` per value of the swept field).
        sweep: the field the settings vary (a key of :data:`SWEEPS`), for labels and the figure's axis.
        num_sequences: sequences (training windows for corpus data) per setting.
        num_seeds: training seeds per direction.
        config: training settings (default: 1500 steps, batch 128, peak lr 0.01, evaluation every 100 steps).
        held_out: share of synthetic data held out (corpus data hold out their own topics).
        ep_samples: trajectories of the forward model's Monte Carlo EP (0: not estimated).
        sequences: token ids ``[N, T]`` for the ``file`` dataset.
        sequences_path: the file they came from (hashed into the provenance).
        seed: seeds the data and the training.
        progress: progress bars (one per setting over its twins' training, showing held-out losses).
    """
    if sweep is not None and sweep not in SWEEPS:
        raise AotDataError(f"`sweep` must be one of {tuple(SWEEPS)}, got {sweep!r}.")
    if not settings:
        raise AotDataError("`settings` must hold at least one setting.")
    config = config or train.TrainConfig(steps=1500, batch_size=128, learning_rate=0.01, eval_every=100)
    rows = []
    key = jax.random.key(seed)
    for index, setting in enumerate(settings):
        start = time.perf_counter()
        data, held, info = make_data(
            setting.dataset,
            num_sequences=num_sequences,
            digits=setting.digits,
            dim=setting.dim,
            sparsity=setting.sparsity,
            context_length=setting.context_length,
            sequences=sequences,
            seed=seed,
        )
        model = _model(setting, info["vocab_size"], data.shape[1])
        k_gap, k_ep = jax.random.split(jax.random.fold_in(key, index))
        gap = aot.learnability_gap(
            k_gap,
            model,
            data,
            permutation=setting.permutation,
            num_seeds=num_seeds,
            config=config,
            held_out=held_out if held is None else held,
            permutation_seed=seed,
            progress=progress,
            desc=f"[{index + 1}/{len(settings)}] {setting.label(sweep)}",
        )
        ep = None
        if ep_samples:
            ep = aot.forward_entropy_production(k_ep, gap, num_samples=ep_samples, progress=progress)
        num_params = sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(gap.twins(0)[0]))
        rows.append(GapRow(setting, gap, info, num_params, ep, time.perf_counter() - start))
    files = () if sequences_path is None else (Path(sequences_path),)
    return GapStudy(rows, sweep, config, seed, files)


def sweep_settings(base: Setting, sweep: str | None, values: Sequence[str]) -> list[Setting]:
    """``base`` with the swept field set to each of ``values`` (text, converted to the field's type)."""
    if sweep is None:
        if values:
            raise AotDataError("values to sweep need a `sweep` field.")
        return [base]
    if sweep not in SWEEPS:
        raise AotDataError(f"`sweep` must be one of {tuple(SWEEPS)}, got {sweep!r}.")
    if not values:
        raise AotDataError(f"a sweep over {sweep} needs at least one value.")
    field = SWEEPS[sweep]
    out = []
    for value in values:
        if field in ("context_length", "sparsity", "digits"):
            if not str(value).isdigit() or int(value) < (0 if field == "sparsity" else 1):
                raise AotDataError(f"{sweep} values must be non-negative integers, got {value!r}.")
            value = int(value)
        out.append(dataclasses.replace(base, **{field: value}))
    return out


__all__ = [
    "ARCHITECTURES",
    "DATASETS",
    "SWEEPS",
    "AotDataError",
    "GapRow",
    "GapStudy",
    "Setting",
    "gap_study",
    "make_data",
    "sweep_settings",
]
